-- Inventory records, one JSON document per row (see sqlite.rs for why).
CREATE TABLE components          (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE ethernet_interfaces (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE redfish_endpoints   (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE component_endpoints (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE groups              (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE partitions          (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE node_maps           (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
