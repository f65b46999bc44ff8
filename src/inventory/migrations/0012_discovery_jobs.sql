-- Discovery jobs running where several heads share a store (model.rs
-- StoredDiscoveryJob); a single head keeps its jobs in memory and leaves this empty.
CREATE TABLE discovery_jobs (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
