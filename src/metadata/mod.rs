//! cloud-init metadata: documents rendered purely from the snapshot, callers
//! identified by their TCP peer so one node cannot read another's data.
//!
//! - [`document`]: meta-data, vendor-data, user-data and group files as pure
//!   functions of facts gathered from one snapshot (golden-tested), and the
//!   host name rule DHCP option 12 shares;
//! - [`identify`]: caller address → node (inventory interface, else DHCP
//!   lease → MAC → interface);
//! - [`rules`]: what the admin routes accept and how they change the store
//!   (cluster defaults, groups, instance info, stable instance IDs,
//!   phone-home records);
//! - [`cache`]: rendered meta-data per caller address, valid for one
//!   snapshot generation (memoisation of the pure render);
//! - [`template`]: local Jinja rendering for previews (`group render`);
//! - [`yaml`]: the YAML writer, safe for cloud-init's YAML 1.1 reader;
//! - [`v2`]: the metadata-service (v0.2) view of the same records: envelopes,
//!   spec ↔ legacy record, group template checks and rendering, patches,
//!   network-config v2;
//! - [`peer`], [`profile`]: the metadata-service resources with no legacy
//!   record (WireGuard peers, stored only; profiles, a node's expiring
//!   variant of a group's template and metaData).

pub mod cache;
pub mod document;
pub mod identify;
pub mod peer;
pub mod profile;
pub mod rules;
pub mod template;
pub mod v2;
pub mod yaml;

pub use document::{default_hostname, hostname};
