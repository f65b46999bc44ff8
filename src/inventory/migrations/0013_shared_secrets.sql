-- Key bundles shared by the head nodes of a shared store (see model.rs
-- SharedSecret). A single head on SQLite keeps its keys in files and leaves
-- this table empty; it exists so both backends hold the same tables.
CREATE TABLE shared_secrets (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
