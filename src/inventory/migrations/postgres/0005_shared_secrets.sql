-- Key bundles every head shares (the root CA, the token keys, the
-- BMC-credential sealing key), each sealed with a key-encryption key that
-- only the heads hold (see model.rs SharedSecret).
CREATE TABLE shared_secrets (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
