-- Power transitions (see model.rs PowerTransition), kept at least 24 h, and
-- BMC credentials for discovery and power (BmcCredential; passwords sealed).
CREATE TABLE power_transitions (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE bmc_credentials   (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
