-- Each BMC's firmware inventory as last collected (see model.rs BmcFirmware).
CREATE TABLE bmc_firmware (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
