-- boot-service Node and BMC resources (see model.rs BootResource). Boot
-- configurations of both boot APIs stay in boot_configs.
CREATE TABLE boot_resources (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
