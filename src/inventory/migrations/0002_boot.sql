-- BSS boot configurations (see model.rs BootConfig).
CREATE TABLE boot_configs (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
