-- SMD hardware inventory (see hwinv.rs): locations by xname, FRUs by FRU ID,
-- and history events by sequence number.
CREATE TABLE hw_locations (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE hw_frus      (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE hw_history   (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
