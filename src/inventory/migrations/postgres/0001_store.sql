-- The shared store: the same tables as SQLite (one JSON document per row,
-- kept as text so every head reads back exactly what was written), plus the
-- generation row every commit locks and the change log followers read.
CREATE TABLE components             (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE ethernet_interfaces    (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE redfish_endpoints      (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE component_endpoints    (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE groups                 (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE partitions             (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE node_maps              (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE boot_configs           (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE cloud_init_defaults    (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE cloud_init_groups      (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE cloud_init_instances   (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE cloud_init_phone_home  (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE dhcp_leases            (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE power_transitions      (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE bmc_credentials        (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE boot_resources         (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE metadata_resources     (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE oauth_used_bootstrap   (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE oauth_refresh_families (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE console_host_keys      (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
-- One row; every commit takes it FOR UPDATE, which serialises commits from
-- every head, and advances it by one.
CREATE TABLE store_generation (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    generation BIGINT NOT NULL
);
INSERT INTO store_generation (generation) VALUES (0);
-- What each generation changed, as [[table, key, doc|null], ...]; followers
-- apply these to their snapshot. Old entries are pruned; a follower that
-- fell further behind reloads everything.
CREATE TABLE store_changes (generation BIGINT PRIMARY KEY, rows TEXT NOT NULL);
