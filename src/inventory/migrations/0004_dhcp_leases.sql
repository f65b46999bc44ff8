-- DHCP leases by address (see model.rs Lease). Written by the DHCP service;
-- read by cloud-init to identify callers whose address is only leased.
CREATE TABLE dhcp_leases (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
