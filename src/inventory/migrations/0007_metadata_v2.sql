-- metadata-service resources with no cloud-init counterpart: WireGuardPeer and
-- Profile (see model.rs MetadataRecord), keyed by uid.
CREATE TABLE metadata_resources (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
