-- cloud-init metadata (see model.rs ClusterDefaults, CloudInitGroup,
-- InstanceInfo, PhoneHome). Upstream keeps these in memory; here they persist.
CREATE TABLE cloud_init_defaults   (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE cloud_init_groups     (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE cloud_init_instances  (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE cloud_init_phone_home (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
