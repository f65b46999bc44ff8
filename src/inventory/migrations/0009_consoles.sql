-- SSH host keys of BMC consoles, pinned on first use (see model.rs ConsoleHostKey).
CREATE TABLE console_host_keys (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
