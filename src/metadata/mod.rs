//! cloud-init metadata: documents rendered purely from the snapshot, callers
//! identified by their TCP peer so one node cannot read another's data.
