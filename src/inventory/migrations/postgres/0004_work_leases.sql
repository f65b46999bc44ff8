-- Work that must happen once among the heads (a power transition, the power
-- sampler, a discovery job, a console session) is leased by name to one
-- head ID until `expires`, by the database's clock. Not part of the model:
-- no generation, no change log (see leases.rs).
CREATE TABLE work_leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);
-- What a discovery job needs to run again on another head (model.rs
-- StoredDiscoveryJob): a model table like the others, written when a job starts.
CREATE TABLE discovery_jobs (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
