//! Reads from memory, writes through SQLite.
//!
//! Every hot path (DHCP, TFTP, boot scripts, metadata, anonymous SMD reads)
//! reads an immutable [`Snapshot`] without taking a lock. Writes are closures
//! run one at a time on a dedicated writer thread against a copy of the model
//! (persistent maps make that copy O(1)); the changes they record are committed
//! to SQLite in one transaction, and only then is the new snapshot published.
//! A write that fails, in the domain or in SQLite, leaves memory untouched.
//!
//! Writes queued while a commit is in progress are committed together (group
//! commit), so a burst of small writes costs one fsync, not one each; each
//! write still sees the effects of the ones before it and fails on its own.

use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use compact_str::CompactString;
use imbl::OrdMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};

use super::DomainError;
use super::backend::{Backend, Feed};
use super::hwinv::{HwFru, HwHist, HwLoc};
use super::model::{
    BmcCredential, BmcFirmware, BootConfig, BootResource, BootSelector, BootTarget, CloudInitGroup,
    ClusterDefaults, Component, ComponentEndpoint, ConsoleHostKey, EthernetInterface, Group,
    InstanceInfo, Lease, MetadataRecord, NodeMap, Partition, PhoneHome, PowerTransition,
    RedfishEndpoint, SharedSecret, StoredDiscoveryJob,
};
use super::sqlite::Db;
use super::tokens::{RefreshFamily, UsedBootstrap};

/// The kinds of record the store persists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Components,
    EthernetInterfaces,
    RedfishEndpoints,
    ComponentEndpoints,
    Groups,
    Partitions,
    NodeMaps,
    BootConfigs,
    CloudInitDefaults,
    CloudInitGroups,
    InstanceInfo,
    PhoneHome,
    Leases,
    PowerTransitions,
    BmcCredentials,
    BootResources,
    UsedBootstrap,
    RefreshFamilies,
    MetadataResources,
    ConsoleHostKeys,
    BmcFirmware,
    HwLocations,
    HwFrus,
    HwHistory,
    DiscoveryJobs,
    SharedSecrets,
}

impl Table {
    /// Every table, in the order a model is loaded.
    pub const ALL: [Table; 26] = [
        Table::Components,
        Table::EthernetInterfaces,
        Table::RedfishEndpoints,
        Table::ComponentEndpoints,
        Table::Groups,
        Table::Partitions,
        Table::NodeMaps,
        Table::BootConfigs,
        Table::CloudInitDefaults,
        Table::CloudInitGroups,
        Table::InstanceInfo,
        Table::PhoneHome,
        Table::Leases,
        Table::PowerTransitions,
        Table::BmcCredentials,
        Table::BootResources,
        Table::UsedBootstrap,
        Table::RefreshFamilies,
        Table::MetadataResources,
        Table::ConsoleHostKeys,
        Table::BmcFirmware,
        Table::HwLocations,
        Table::HwFrus,
        Table::HwHistory,
        Table::DiscoveryJobs,
        Table::SharedSecrets,
    ];

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Components => "components",
            Table::EthernetInterfaces => "ethernet_interfaces",
            Table::RedfishEndpoints => "redfish_endpoints",
            Table::ComponentEndpoints => "component_endpoints",
            Table::Groups => "groups",
            Table::Partitions => "partitions",
            Table::NodeMaps => "node_maps",
            Table::BootConfigs => "boot_configs",
            Table::CloudInitDefaults => "cloud_init_defaults",
            Table::CloudInitGroups => "cloud_init_groups",
            Table::InstanceInfo => "cloud_init_instances",
            Table::PhoneHome => "cloud_init_phone_home",
            Table::Leases => "dhcp_leases",
            Table::PowerTransitions => "power_transitions",
            Table::BmcCredentials => "bmc_credentials",
            Table::BootResources => "boot_resources",
            Table::UsedBootstrap => "oauth_used_bootstrap",
            Table::RefreshFamilies => "oauth_refresh_families",
            Table::MetadataResources => "metadata_resources",
            Table::ConsoleHostKeys => "console_host_keys",
            Table::BmcFirmware => "bmc_firmware",
            Table::HwLocations => "hw_locations",
            Table::HwFrus => "hw_frus",
            Table::HwHistory => "hw_history",
            Table::DiscoveryJobs => "discovery_jobs",
            Table::SharedSecrets => "shared_secrets",
        }
    }
}

/// One row to write (`doc: Some`) or delete (`doc: None`).
#[derive(Debug, Clone)]
pub struct Change {
    pub table: Table,
    pub key: String,
    pub doc: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {0}: {1}")]
    Open(String, String),
    #[error("database schema: {0}")]
    Schema(String),
    #[error("database error: {0}")]
    Sql(String),
    #[error("stored record {0}/{1} is unreadable: {2}")]
    Corrupt(&'static str, String, String),
    #[error("the store is not accepting writes (shut down or failed)")]
    Closed,
    /// SQLITE_FULL: the file system (or a page cap) has no room left.
    #[error("the disk holding the database is full: {0}")]
    Full(String),
    /// The file is not a database or its pages are damaged.
    #[error(
        "database {0} is damaged ({1}); restore it from a backup, or move it aside to start with an empty inventory"
    )]
    Damaged(String, String),
    #[error("internal error while applying a write")]
    Panicked,
}

/// Why a write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// IDs under one index key: almost always one, so a sorted vector rather
/// than a tree set (whose smallest node is ~1.6 KB), holding its first ID
/// inline, and IDs (xnames, MAC-based IDs, short labels) inline too: an
/// index entry of a 10,000-node inventory then costs no allocation at all.
pub type IdList = SmallVec<[CompactString; 1]>;

fn add_id(list: &mut IdList, id: &str) {
    if let Err(pos) = list.binary_search_by(|x| x.as_str().cmp(id)) {
        list.insert(pos, CompactString::from(id));
    }
}

fn remove_id(list: &mut IdList, id: &str) {
    if let Ok(pos) = list.binary_search_by(|x| x.as_str().cmp(id)) {
        list.remove(pos);
    }
}

/// Everything the appliance knows, as persistent maps plus derived indexes.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub components: OrdMap<String, Arc<Component>>,
    pub interfaces: OrdMap<String, Arc<EthernetInterface>>,
    pub redfish_endpoints: OrdMap<String, Arc<RedfishEndpoint>>,
    pub component_endpoints: OrdMap<String, Arc<ComponentEndpoint>>,
    pub groups: OrdMap<String, Group>,
    pub partitions: OrdMap<String, Partition>,
    pub node_maps: OrdMap<String, NodeMap>,
    pub boot_configs: OrdMap<String, BootConfig>,
    /// Boot target → the configuration bound to it.
    pub boot_targets: OrdMap<BootTarget, String>,
    /// Selection index ([`BootConfig::selectors`]): a node's lookup scores
    /// only the configurations filed under its groups, MACs, NID, xname or
    /// `Wild`, not every configuration.
    pub boot_selectors: OrdMap<BootSelector, IdList>,
    /// boot-service `Node` and `BMC` resources by uid.
    pub boot_resources: OrdMap<String, BootResource>,
    /// metadata-service WireGuardPeer and Profile resources by uid.
    pub metadata_resources: OrdMap<String, MetadataRecord>,
    /// NID → node xname (NIDs are unique).
    pub nids: OrdMap<i64, String>,
    /// IP address → interface IDs bound to it.
    pub interfaces_by_ip: OrdMap<IpAddr, IdList>,
    /// Component xname → interface IDs bound to it.
    pub interfaces_by_component: OrdMap<CompactString, IdList>,
    /// Component xname → labels of the groups it is a member of (sorted; a
    /// node is in a handful of groups, so a small vector, not a tree set).
    pub groups_by_member: OrdMap<CompactString, IdList>,
    /// cloud-init cluster defaults (one record).
    pub cloud_init_defaults: Arc<ClusterDefaults>,
    /// cloud-init groups by name.
    pub cloud_init_groups: OrdMap<String, CloudInitGroup>,
    /// cloud-init instance info (overrides and instance ID) by node xname.
    pub instance_info: OrdMap<String, InstanceInfo>,
    /// Instance ID → node xname.
    pub instance_ids: OrdMap<String, String>,
    /// Last cloud-init phone-home by node xname.
    pub phone_home: OrdMap<String, PhoneHome>,
    /// DHCP leases by address.
    pub leases: OrdMap<IpAddr, Lease>,
    /// PCS power transitions by ID.
    pub power_transitions: OrdMap<String, PowerTransition>,
    /// BMC credentials by key (`default`, xname, IP or MAC).
    pub bmc_credentials: OrdMap<String, BmcCredential>,
    /// Bootstrap tokens already exchanged, by `jti`.
    pub used_bootstrap: OrdMap<String, UsedBootstrap>,
    /// Refresh-token families by id.
    pub refresh_families: OrdMap<String, RefreshFamily>,
    /// Pinned console SSH host keys by BMC xname.
    pub console_host_keys: OrdMap<String, ConsoleHostKey>,
    /// Firmware inventories by BMC xname.
    pub bmc_firmware: OrdMap<String, BmcFirmware>,
    /// Hardware inventory locations by xname.
    pub hw_locs: OrdMap<String, Arc<HwLoc>>,
    /// Hardware inventory FRUs by FRU ID.
    pub hw_frus: OrdMap<String, Arc<HwFru>>,
    /// Hardware inventory history events in order.
    pub hw_history: OrdMap<u64, HwHist>,
    /// Discovery jobs running where several heads share the store, by id.
    pub discovery_jobs: OrdMap<String, StoredDiscoveryJob>,
    /// FRU ID → how many history events name it (is a FRU known?).
    pub hw_hist_frus: OrdMap<String, usize>,
    /// Sealed key bundles shared by the heads of a shared store, by purpose.
    pub shared_secrets: OrdMap<String, SharedSecret>,
}

impl Model {
    /// The component `id`, borrowed from the shared record.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.get(id).map(Arc::as_ref)
    }

    pub fn interface(&self, id: &str) -> Option<&EthernetInterface> {
        self.interfaces.get(id).map(Arc::as_ref)
    }

    pub fn redfish_endpoint(&self, id: &str) -> Option<&RedfishEndpoint> {
        self.redfish_endpoints.get(id).map(Arc::as_ref)
    }

    pub fn component_endpoint(&self, id: &str) -> Option<&ComponentEndpoint> {
        self.component_endpoints.get(id).map(Arc::as_ref)
    }

    pub fn component_by_nid(&self, nid: i64) -> Option<&Component> {
        self.nids.get(&nid).and_then(|id| self.component(id))
    }

    /// Groups the component belongs to, in label order.
    pub fn groups_of(&self, xname: &str) -> Vec<&Group> {
        self.groups_by_member
            .get(xname)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|l| self.groups.get(l.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Labels of the groups the component belongs to, in order.
    pub fn group_labels_of(&self, xname: &str) -> Option<&IdList> {
        self.groups_by_member.get(xname)
    }

    pub fn partition_of(&self, xname: &str) -> Option<&Partition> {
        self.partitions
            .values()
            .find(|p| p.members.ids.iter().any(|m| m == xname))
    }

    /// Interfaces bound to a component, in ID order.
    pub fn interfaces_of(&self, xname: &str) -> Vec<&EthernetInterface> {
        self.interfaces_by_component
            .get(xname)
            .map(|ids| ids.iter().filter_map(|id| self.interface(id)).collect())
            .unwrap_or_default()
    }

    /// Interfaces carrying an IP address.
    pub fn interfaces_with_ip(&self, ip: IpAddr) -> Vec<&EthernetInterface> {
        self.interfaces_by_ip
            .get(&ip)
            .map(|ids| ids.iter().filter_map(|id| self.interface(id)).collect())
            .unwrap_or_default()
    }

    fn index_interface(&mut self, i: &EthernetInterface) {
        for ip in i
            .ip_addresses
            .iter()
            .filter_map(|a| a.ip_address.parse().ok())
        {
            add_id(self.interfaces_by_ip.entry(ip).or_default(), &i.id);
        }
        if !i.component_id.is_empty() {
            add_id(
                self.interfaces_by_component
                    .entry(CompactString::from(i.component_id.as_str()))
                    .or_default(),
                &i.id,
            );
        }
    }

    fn unindex_interface(&mut self, i: &EthernetInterface) {
        for ip in i
            .ip_addresses
            .iter()
            .filter_map(|a| a.ip_address.parse::<IpAddr>().ok())
        {
            if let Some(set) = self.interfaces_by_ip.get_mut(&ip) {
                set.retain(|x| x.as_str() != i.id);
                if set.is_empty() {
                    self.interfaces_by_ip.remove(&ip);
                }
            }
        }
        if let Some(set) = self
            .interfaces_by_component
            .get_mut(i.component_id.as_str())
        {
            set.retain(|x| x.as_str() != i.id);
            if set.is_empty() {
                self.interfaces_by_component.remove(i.component_id.as_str());
            }
        }
    }
}

/// Moves the membership index from `old`'s members to `new`'s (same
/// label), touching only members that changed: imports add members one
/// at a time to groups of thousands.
fn reindex_group(
    index: &mut OrdMap<CompactString, IdList>,
    label: &str,
    old: &[String],
    new: &[String],
) {
    let (removed, added) = member_diff(old, new);
    for m in removed {
        if let Some(list) = index.get_mut(m.as_str()) {
            remove_id(list, label);
            if list.is_empty() {
                index.remove(m.as_str());
            }
        }
    }
    for m in added {
        add_id(
            index.entry(CompactString::from(m.as_str())).or_default(),
            label,
        );
    }
}

/// Members in `old` but not `new`, and in `new` but not `old`: a merge when
/// both lists are sorted (as SMD keeps them), else through a hash set.
fn member_diff<'a>(old: &'a [String], new: &'a [String]) -> (Vec<&'a String>, Vec<&'a String>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    if old.is_sorted() && new.is_sorted() {
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            match (old.get(i), new.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a < b => {
                    removed.push(a);
                    i += 1;
                }
                (Some(_), Some(b)) | (None, Some(b)) => {
                    added.push(b);
                    j += 1;
                }
                (Some(a), None) => {
                    removed.push(a);
                    i += 1;
                }
                (None, None) => break,
            }
        }
    } else {
        let o: std::collections::HashSet<&String> = old.iter().collect();
        let n: std::collections::HashSet<&String> = new.iter().collect();
        removed = old.iter().filter(|m| !n.contains(m)).collect();
        added = new.iter().filter(|m| !o.contains(m)).collect();
    }
    (removed, added)
}

/// An immutable, numbered view of the model.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases by one with every committed write batch.
    pub generation: u64,
    pub model: Model,
}

impl std::ops::Deref for Snapshot {
    type Target = Model;
    fn deref(&self) -> &Model {
        &self.model
    }
}

/// A write in progress: changes the model copy and records which rows it
/// touched. Rows are serialised once, from their final state, when the write
/// ends, so a record changed many times in one write costs one document.
pub struct Txn<'a> {
    model: &'a mut Model,
    /// Keys inline (`CompactString`): an import touches 50,000 rows, and
    /// 100,000 short-lived key copies interleaved with the new records
    /// would leave the heap too fragmented to give back afterwards.
    touched: Vec<(Table, CompactString)>,
    seen: std::collections::HashSet<(Table, CompactString)>,
    now: chrono::DateTime<chrono::Utc>,
    /// False while the model is loaded from the database at start: the rows
    /// are already stored, and remembering 50,000 keys only raises the peak.
    recording: bool,
}

impl<'a> Txn<'a> {
    pub fn model(&self) -> &Model {
        self.model
    }

    /// The time the write started; domain code reads the clock only here.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.now
    }

    fn new(model: &'a mut Model, now: chrono::DateTime<chrono::Utc>) -> Txn<'a> {
        Txn {
            model,
            touched: Vec::new(),
            seen: Default::default(),
            now,
            recording: true,
        }
    }

    /// True if anything has been changed so far.
    pub fn is_dirty(&self) -> bool {
        !self.touched.is_empty()
    }

    fn record<T>(&mut self, table: Table, key: &str, _value: Option<&T>) {
        if !self.recording {
            return;
        }
        let k = (table, CompactString::from(key));
        if self.seen.insert(k.clone()) {
            self.touched.push(k);
        }
    }

    /// The rows to write: each touched row as it stands now, or a delete.
    fn take_changes(&mut self) -> Vec<Change> {
        let touched = std::mem::take(&mut self.touched);
        self.seen.clear();
        touched
            .into_iter()
            .map(|(table, key)| {
                let doc = doc_of(self.model, table, &key);
                Change {
                    table,
                    key: key.into_string(),
                    doc,
                }
            })
            .collect()
    }

    /// Takes a new record or a shared one (`Arc`), so a caller that
    /// changed nothing can put the very record it read.
    pub fn put_component(&mut self, c: impl Into<Arc<Component>>) {
        let c = c.into();
        if let Some(old) = self.model.components.get(&c.id)
            && let Some(nid) = old.nid
            && self.model.nids.get(&nid) == Some(&c.id)
        {
            self.model.nids.remove(&nid);
        }
        if let Some(nid) = c.nid {
            self.model.nids.insert(nid, c.id.clone());
        }
        self.record(Table::Components, &c.id, Some(&c));
        self.model.components.insert(c.id.clone(), c);
    }

    pub fn delete_component(&mut self, id: &str) -> Option<Arc<Component>> {
        let old = self.model.components.remove(id)?;
        if let Some(nid) = old.nid
            && self.model.nids.get(&nid).map(String::as_str) == Some(id)
        {
            self.model.nids.remove(&nid);
        }
        self.record::<Component>(Table::Components, id, None);
        Some(old)
    }

    pub fn put_interface(&mut self, i: impl Into<Arc<EthernetInterface>>) {
        let i = i.into();
        if let Some(old) = self.model.interfaces.get(&i.id).cloned() {
            self.model.unindex_interface(&old);
        }
        self.model.index_interface(&i);
        self.record(Table::EthernetInterfaces, &i.id, Some(&i));
        self.model.interfaces.insert(i.id.clone(), i);
    }

    pub fn delete_interface(&mut self, id: &str) -> Option<Arc<EthernetInterface>> {
        let old = self.model.interfaces.remove(id)?;
        self.model.unindex_interface(&old);
        self.record::<EthernetInterface>(Table::EthernetInterfaces, id, None);
        Some(old)
    }

    pub fn put_redfish_endpoint(&mut self, e: impl Into<Arc<RedfishEndpoint>>) {
        let e = e.into();
        self.record(Table::RedfishEndpoints, &e.id, Some(&e));
        self.model.redfish_endpoints.insert(e.id.clone(), e);
    }

    pub fn delete_redfish_endpoint(&mut self, id: &str) -> Option<Arc<RedfishEndpoint>> {
        let old = self.model.redfish_endpoints.remove(id)?;
        self.record::<RedfishEndpoint>(Table::RedfishEndpoints, id, None);
        Some(old)
    }

    pub fn put_component_endpoint(&mut self, e: impl Into<Arc<ComponentEndpoint>>) {
        let e = e.into();
        self.record(Table::ComponentEndpoints, &e.id, Some(&e));
        self.model.component_endpoints.insert(e.id.clone(), e);
    }

    pub fn delete_component_endpoint(&mut self, id: &str) -> Option<Arc<ComponentEndpoint>> {
        let old = self.model.component_endpoints.remove(id)?;
        self.record::<ComponentEndpoint>(Table::ComponentEndpoints, id, None);
        Some(old)
    }

    pub fn put_group(&mut self, g: Group) {
        let old = self
            .model
            .groups
            .get(&g.label)
            .map(|o| o.members.ids.as_slice())
            .unwrap_or(&[]);
        reindex_group(
            &mut self.model.groups_by_member,
            &g.label,
            old,
            &g.members.ids,
        );
        self.record(Table::Groups, &g.label, Some(&g));
        self.model.groups.insert(g.label.clone(), g);
    }

    pub fn delete_group(&mut self, label: &str) -> Option<Group> {
        let old = self.model.groups.remove(label)?;
        reindex_group(
            &mut self.model.groups_by_member,
            label,
            &old.members.ids,
            &[],
        );
        self.record::<Group>(Table::Groups, label, None);
        Some(old)
    }

    pub fn put_partition(&mut self, p: Partition) {
        self.record(Table::Partitions, &p.name, Some(&p));
        self.model.partitions.insert(p.name.clone(), p);
    }

    pub fn delete_partition(&mut self, name: &str) -> Option<Partition> {
        let old = self.model.partitions.remove(name)?;
        self.record::<Partition>(Table::Partitions, name, None);
        Some(old)
    }

    pub fn put_node_map(&mut self, m: NodeMap) {
        self.record(Table::NodeMaps, &m.id, Some(&m));
        self.model.node_maps.insert(m.id.clone(), m);
    }

    pub fn put_boot_config(&mut self, b: BootConfig) {
        if let Some(old) = self.model.boot_configs.get(&b.id).cloned() {
            for t in old.targets() {
                if self.model.boot_targets.get(&t) == Some(&old.id) {
                    self.model.boot_targets.remove(&t);
                }
            }
            self.unfile_selectors(&old);
        }
        for t in b.targets() {
            self.model.boot_targets.insert(t, b.id.clone());
        }
        for k in b.selectors() {
            add_id(self.model.boot_selectors.entry(k).or_default(), &b.id);
        }
        self.record(Table::BootConfigs, &b.id, Some(&b));
        self.model.boot_configs.insert(b.id.clone(), b);
    }

    pub fn delete_boot_config(&mut self, id: &str) -> Option<BootConfig> {
        let old = self.model.boot_configs.remove(id)?;
        self.unfile_selectors(&old);
        for t in old.targets() {
            if self.model.boot_targets.get(&t).map(String::as_str) == Some(id) {
                self.model.boot_targets.remove(&t);
            }
        }
        self.record::<BootConfig>(Table::BootConfigs, id, None);
        Some(old)
    }

    fn unfile_selectors(&mut self, old: &BootConfig) {
        for k in old.selectors() {
            if let Some(list) = self.model.boot_selectors.get_mut(&k) {
                remove_id(list, &old.id);
                if list.is_empty() {
                    self.model.boot_selectors.remove(&k);
                }
            }
        }
    }

    pub fn put_boot_resource(&mut self, r: BootResource) {
        self.record(Table::BootResources, &r.uid, Some(&r));
        self.model.boot_resources.insert(r.uid.clone(), r);
    }

    pub fn delete_boot_resource(&mut self, uid: &str) -> Option<BootResource> {
        let old = self.model.boot_resources.remove(uid)?;
        self.record::<BootResource>(Table::BootResources, uid, None);
        Some(old)
    }

    pub fn put_metadata_record(&mut self, r: MetadataRecord) {
        self.record(Table::MetadataResources, &r.uid, Some(&r));
        self.model.metadata_resources.insert(r.uid.clone(), r);
    }

    pub fn delete_metadata_record(&mut self, uid: &str) -> Option<MetadataRecord> {
        let old = self.model.metadata_resources.remove(uid)?;
        self.record::<MetadataRecord>(Table::MetadataResources, uid, None);
        Some(old)
    }

    pub fn delete_node_map(&mut self, id: &str) -> Option<NodeMap> {
        let old = self.model.node_maps.remove(id)?;
        self.record::<NodeMap>(Table::NodeMaps, id, None);
        Some(old)
    }

    /// The one cluster-defaults record.
    pub fn put_cloud_init_defaults(&mut self, d: ClusterDefaults) {
        self.record(Table::CloudInitDefaults, CLUSTER_DEFAULTS_KEY, Some(&d));
        self.model.cloud_init_defaults = Arc::new(d);
    }

    pub fn put_cloud_init_group(&mut self, g: CloudInitGroup) {
        self.record(Table::CloudInitGroups, &g.name, Some(&g));
        self.model.cloud_init_groups.insert(g.name.clone(), g);
    }

    pub fn delete_cloud_init_group(&mut self, name: &str) -> Option<CloudInitGroup> {
        let old = self.model.cloud_init_groups.remove(name)?;
        self.record::<CloudInitGroup>(Table::CloudInitGroups, name, None);
        Some(old)
    }

    pub fn put_instance_info(&mut self, i: InstanceInfo) {
        if let Some(old) = self.model.instance_info.get(&i.id)
            && self.model.instance_ids.get(&old.instance_id) == Some(&i.id)
        {
            let old_iid = old.instance_id.clone();
            self.model.instance_ids.remove(&old_iid);
        }
        if !i.instance_id.is_empty() {
            self.model
                .instance_ids
                .insert(i.instance_id.clone(), i.id.clone());
        }
        self.record(Table::InstanceInfo, &i.id, Some(&i));
        self.model.instance_info.insert(i.id.clone(), i);
    }

    pub fn delete_instance_info(&mut self, id: &str) -> Option<InstanceInfo> {
        let old = self.model.instance_info.remove(id)?;
        if self
            .model
            .instance_ids
            .get(&old.instance_id)
            .map(String::as_str)
            == Some(id)
        {
            self.model.instance_ids.remove(&old.instance_id);
        }
        self.record::<InstanceInfo>(Table::InstanceInfo, id, None);
        Some(old)
    }

    pub fn put_phone_home(&mut self, p: PhoneHome) {
        self.record(Table::PhoneHome, &p.node, Some(&p));
        self.model.phone_home.insert(p.node.clone(), p);
    }

    pub fn put_lease(&mut self, l: Lease) {
        self.record(Table::Leases, &l.ip.to_string(), Some(&l));
        self.model.leases.insert(l.ip, l);
    }

    pub fn delete_lease(&mut self, ip: IpAddr) -> Option<Lease> {
        let old = self.model.leases.remove(&ip)?;
        self.record::<Lease>(Table::Leases, &ip.to_string(), None);
        Some(old)
    }

    pub fn put_power_transition(&mut self, t: PowerTransition) {
        self.record(Table::PowerTransitions, &t.id, Some(&t));
        self.model.power_transitions.insert(t.id.clone(), t);
    }

    pub fn delete_power_transition(&mut self, id: &str) -> Option<PowerTransition> {
        let old = self.model.power_transitions.remove(id)?;
        self.record::<PowerTransition>(Table::PowerTransitions, id, None);
        Some(old)
    }

    pub fn put_bmc_credential(&mut self, c: BmcCredential) {
        self.record(Table::BmcCredentials, &c.key, Some(&c));
        self.model.bmc_credentials.insert(c.key.clone(), c);
    }

    pub fn delete_bmc_credential(&mut self, key: &str) -> Option<BmcCredential> {
        let old = self.model.bmc_credentials.remove(key)?;
        self.record::<BmcCredential>(Table::BmcCredentials, key, None);
        Some(old)
    }

    pub fn put_used_bootstrap(&mut self, u: UsedBootstrap) {
        self.record(Table::UsedBootstrap, &u.jti, Some(&u));
        self.model.used_bootstrap.insert(u.jti.clone(), u);
    }

    pub fn delete_used_bootstrap(&mut self, jti: &str) -> Option<UsedBootstrap> {
        let old = self.model.used_bootstrap.remove(jti)?;
        self.record::<UsedBootstrap>(Table::UsedBootstrap, jti, None);
        Some(old)
    }

    pub fn put_refresh_family(&mut self, f: RefreshFamily) {
        self.record(Table::RefreshFamilies, &f.id, Some(&f));
        self.model.refresh_families.insert(f.id.clone(), f);
    }

    pub fn delete_refresh_family(&mut self, id: &str) -> Option<RefreshFamily> {
        let old = self.model.refresh_families.remove(id)?;
        self.record::<RefreshFamily>(Table::RefreshFamilies, id, None);
        Some(old)
    }

    pub fn put_console_host_key(&mut self, k: ConsoleHostKey) {
        self.record(Table::ConsoleHostKeys, &k.bmc, Some(&k));
        self.model.console_host_keys.insert(k.bmc.clone(), k);
    }

    pub fn delete_console_host_key(&mut self, bmc: &str) -> Option<ConsoleHostKey> {
        let old = self.model.console_host_keys.remove(bmc)?;
        self.record::<ConsoleHostKey>(Table::ConsoleHostKeys, bmc, None);
        Some(old)
    }

    pub fn put_bmc_firmware(&mut self, f: BmcFirmware) {
        self.record(Table::BmcFirmware, &f.bmc, Some(&f));
        self.model.bmc_firmware.insert(f.bmc.clone(), f);
    }

    pub fn put_discovery_job(&mut self, j: StoredDiscoveryJob) {
        self.record(Table::DiscoveryJobs, &j.id, Some(&j));
        self.model.discovery_jobs.insert(j.id.clone(), j);
    }

    pub fn delete_discovery_job(&mut self, id: &str) -> Option<StoredDiscoveryJob> {
        let old = self.model.discovery_jobs.remove(id)?;
        self.record::<StoredDiscoveryJob>(Table::DiscoveryJobs, id, None);
        Some(old)
    }

    pub fn put_hw_loc(&mut self, l: impl Into<Arc<HwLoc>>) {
        let l = l.into();
        self.record(Table::HwLocations, &l.id, Some(&l));
        self.model.hw_locs.insert(l.id.clone(), l);
    }

    pub fn delete_hw_loc(&mut self, id: &str) -> Option<Arc<HwLoc>> {
        let old = self.model.hw_locs.remove(id)?;
        self.record::<HwLoc>(Table::HwLocations, id, None);
        Some(old)
    }

    pub fn put_hw_fru(&mut self, f: impl Into<Arc<HwFru>>) {
        let f = f.into();
        self.record(Table::HwFrus, &f.fru_id, Some(&f));
        self.model.hw_frus.insert(f.fru_id.clone(), f);
    }

    pub fn delete_hw_fru(&mut self, id: &str) -> Option<Arc<HwFru>> {
        let old = self.model.hw_frus.remove(id)?;
        self.record::<HwFru>(Table::HwFrus, id, None);
        Some(old)
    }

    pub fn put_hw_hist(&mut self, h: HwHist) {
        self.record(Table::HwHistory, &hist_key(h.seq), Some(&h));
        *self.model.hw_hist_frus.entry(h.fru_id.clone()).or_default() += 1;
        if let Some(old) = self.model.hw_history.insert(h.seq, h) {
            self.unindex_hist(&old);
        }
    }

    fn unindex_hist(&mut self, h: &HwHist) {
        if let Some(n) = self.model.hw_hist_frus.get_mut(&h.fru_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.model.hw_hist_frus.remove(&h.fru_id);
            }
        }
    }

    pub fn put_shared_secret(&mut self, s: SharedSecret) {
        self.record(Table::SharedSecrets, &s.purpose, Some(&s));
        self.model.shared_secrets.insert(s.purpose.clone(), s);
    }

    pub fn delete_hw_hist(&mut self, seq: u64) -> Option<HwHist> {
        let old = self.model.hw_history.remove(&seq)?;
        self.unindex_hist(&old);
        self.record::<HwHist>(Table::HwHistory, &hist_key(seq), None);
        Some(old)
    }
}

/// The stored document of a row, if the row exists. Serialising our own
/// model types cannot fail (string keys, no non-finite floats); an empty
/// document would be caught on load.
fn doc_of(m: &Model, table: Table, key: &str) -> Option<String> {
    fn ser<T: Serialize>(v: Option<&T>) -> Option<String> {
        v.map(|v| serde_json::to_string(v).unwrap_or_default())
    }
    match table {
        Table::Components => ser(m.components.get(key)),
        Table::EthernetInterfaces => ser(m.interfaces.get(key)),
        Table::RedfishEndpoints => ser(m.redfish_endpoints.get(key)),
        Table::ComponentEndpoints => ser(m.component_endpoints.get(key)),
        Table::Groups => ser(m.groups.get(key)),
        Table::Partitions => ser(m.partitions.get(key)),
        Table::NodeMaps => ser(m.node_maps.get(key)),
        Table::BootConfigs => ser(m.boot_configs.get(key)),
        Table::CloudInitDefaults => ser(Some(&*m.cloud_init_defaults)),
        Table::CloudInitGroups => ser(m.cloud_init_groups.get(key)),
        Table::InstanceInfo => ser(m.instance_info.get(key)),
        Table::PhoneHome => ser(m.phone_home.get(key)),
        Table::Leases => key
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| ser(m.leases.get(&ip))),
        Table::PowerTransitions => ser(m.power_transitions.get(key)),
        Table::BmcCredentials => ser(m.bmc_credentials.get(key)),
        Table::BootResources => ser(m.boot_resources.get(key)),
        Table::UsedBootstrap => ser(m.used_bootstrap.get(key)),
        Table::RefreshFamilies => ser(m.refresh_families.get(key)),
        Table::MetadataResources => ser(m.metadata_resources.get(key)),
        Table::ConsoleHostKeys => ser(m.console_host_keys.get(key)),
        Table::BmcFirmware => ser(m.bmc_firmware.get(key)),
        Table::HwLocations => ser(m.hw_locs.get(key)),
        Table::HwFrus => ser(m.hw_frus.get(key)),
        Table::HwHistory => key
            .parse::<u64>()
            .ok()
            .and_then(|k| ser(m.hw_history.get(&k))),
        Table::DiscoveryJobs => ser(m.discovery_jobs.get(key)),
        Table::SharedSecrets => ser(m.shared_secrets.get(key)),
    }
}

/// A history event's row key: zero-padded, so rows load in event order.
fn hist_key(seq: u64) -> String {
    format!("{seq:020}")
}

/// The key of the single cluster-defaults row.
const CLUSTER_DEFAULTS_KEY: &str = "cluster";

type Job = Box<dyn FnOnce(&mut Model, chrono::DateTime<chrono::Utc>) -> Pending + Send>;

/// A write whose domain part has run; it is answered after the commit.
struct Pending {
    changes: Vec<Change>,
    reply: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

enum Request {
    Write(Job),
    Ping(oneshot::Sender<Result<(), StoreError>>),
    /// Another writer may have committed: read the change feed.
    CatchUp,
    /// The latest generation any writer committed, if others exist.
    Latest(oneshot::Sender<Result<Option<u64>, StoreError>>),
}

struct Inner {
    current: ArcSwap<Snapshot>,
    /// The backend's name (`sqlite`, `postgres`).
    kind: &'static str,
    /// Becomes true when the writer thread has ended, for whatever reason.
    stopped: tokio::sync::watch::Sender<bool>,
    /// The generation of the latest published snapshot, for readers that
    /// follow changes (the status page's event stream) without polling.
    published: tokio::sync::watch::Sender<u64>,
    /// Told the row count of each committed batch (see `observe_commits`).
    commit_observer: std::sync::OnceLock<fn(usize)>,
    /// Where work leases are kept, and as whom this head claims them.
    lease_db: Arc<dyn super::leases::LeaseDb>,
    lease_as: std::sync::OnceLock<(String, std::time::Duration)>,
    lease_batches: Arc<super::leases::Batches>,
}

/// Handle to the inventory store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    requests: mpsc::Sender<Request>,
}

/// Writes that may be waiting for the writer at once; more wait for room.
const QUEUE_DEPTH: usize = 1024;
/// At most this many queued writes share one commit.
const GROUP_COMMIT_MAX: usize = 256;

impl Store {
    /// Opens the database at `path`, loads the model and starts the writer.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_backend(Box::new(Db::open(path)?))
    }

    /// A store that lives only in memory, for tests and benchmarks.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::open_backend(Box::new(Db::open_in_memory()?))
    }

    /// Loads the model from `db` and starts the writer (and, on a shared
    /// backend, following the other writers).
    pub fn open_backend(mut db: Box<dyn Backend>) -> Result<Store, StoreError> {
        let (generation, model) = load_model(&mut *db)?;
        let lease_db = db.leases();
        let inner = Arc::new(Inner {
            lease_db,
            lease_as: std::sync::OnceLock::new(),
            lease_batches: Arc::default(),
            current: ArcSwap::from_pointee(Snapshot { generation, model }),
            kind: db.kind(),
            commit_observer: std::sync::OnceLock::new(),
            stopped: tokio::sync::watch::Sender::new(false),
            published: tokio::sync::watch::Sender::new(generation),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        // Weak: a follower must not keep the writer alive once every
        // handle is gone.
        let wake = tx.downgrade();
        db.follow(Box::new(move || match wake.upgrade() {
            Some(tx) => {
                // A full queue means the writer is busy, and every commit
                // catches up first anyway.
                let _ = tx.try_send(Request::CatchUp);
                true
            }
            None => false,
        }));
        let writer_inner = inner.clone();
        std::thread::Builder::new()
            .name("inventory-writer".into())
            .spawn(move || {
                // A panic outside a write closure (in the backend, a commit
                // observer, logging) leaves memory and disk possibly apart:
                // the writer ends rather than go on, and says so.
                let inner = writer_inner.clone();
                let ended = std::panic::catch_unwind(AssertUnwindSafe(move || {
                    writer_loop(db, writer_inner, rx)
                }));
                if ended.is_err() {
                    tracing::error!(
                        "the inventory writer panicked; no further writes are possible"
                    );
                }
                inner.stopped.send_replace(true);
            })
            .map_err(|e| StoreError::Open("writer thread".into(), e.to_string()))?;
        Ok(Store {
            inner,
            requests: tx,
        })
    }

    /// The backend's name: `sqlite` or `postgres`.
    pub fn backend_kind(&self) -> &'static str {
        self.inner.kind
    }

    /// Names the head that claims work leases through this store, and their
    /// time to live. Once; later calls are ignored.
    pub fn set_lease_holder(&self, head: &str, ttl: std::time::Duration) {
        let _ = self.inner.lease_as.set((head.to_string(), ttl));
    }

    /// Work leases, claimed as the head named by `set_lease_holder`
    /// (`local` until then).
    pub fn leases(&self) -> super::leases::Leases {
        let (head, ttl) = self
            .inner
            .lease_as
            .get()
            .cloned()
            .unwrap_or_else(|| ("local".into(), super::leases::DEFAULT_TTL));
        super::leases::Leases::batched_with(
            self.inner.lease_db.clone(),
            &head,
            ttl,
            self.inner.lease_batches.clone(),
        )
    }

    /// Has `f` called, on the writer thread, with the number of rows of
    /// every committed batch once the new snapshot is published and the
    /// writer has let go of the old one (the server trims the heap after
    /// large ones). One observer; later calls are ignored. `f` must be
    /// quick: the batch's callers are answered after it returns.
    pub fn observe_commits(&self, f: fn(usize)) {
        let _ = self.inner.commit_observer.set(f);
    }

    /// The current snapshot. Holding it keeps that view alive, nothing more.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Runs `f` as one atomic write. `f` sees the model as left by every
    /// earlier write; what it changes is durable once this returns `Ok`.
    pub async fn write<T, F>(&self, f: F) -> Result<T, WriteError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, DomainError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, WriteError>>();
        let job: Job = Box::new(move |model: &mut Model, now| {
            let mut copy = model.clone();
            let mut txn = Txn::new(&mut copy, now);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut txn)));
            let changes = match outcome {
                Ok(Ok(_)) => txn.take_changes(),
                _ => Vec::new(),
            };
            match outcome {
                Ok(Ok(value)) => {
                    *model = copy;
                    Pending {
                        changes,
                        reply: Box::new(move |r| {
                            let _ = tx.send(r.map(|()| value).map_err(WriteError::Store));
                        }),
                    }
                }
                Ok(Err(e)) => Pending {
                    changes: Vec::new(),
                    reply: Box::new(move |_| {
                        let _ = tx.send(Err(WriteError::Domain(e)));
                    }),
                },
                Err(_) => Pending {
                    changes: Vec::new(),
                    reply: Box::new(move |_| {
                        let _ = tx.send(Err(WriteError::Store(StoreError::Panicked)));
                    }),
                },
            }
        });
        self.requests
            .send(Request::Write(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Follows the published generation: the receiver wakes after each
    /// commit (several commits in between wake it once).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.published.subscribe()
    }

    /// Resolves once the writer thread has ended (it only does while
    /// handles exist if it failed); never resolves while it runs.
    pub async fn writer_stopped(&self) {
        let mut rx = self.inner.stopped.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// True once the writer thread has ended.
    pub fn writer_is_stopped(&self) -> bool {
        *self.inner.stopped.borrow()
    }

    /// The latest generation committed by any writer sharing the backend
    /// (`None` when this store is its only writer): the snapshot's
    /// generation trails it by the head's lag.
    pub async fn latest_generation(&self) -> Result<Option<u64>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Latest(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Round trip through the writer and SQLite: is the store usable?
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Ping(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn parse<T: DeserializeOwned>(table: Table, key: &str, doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc)
        .map_err(|e| StoreError::Corrupt(table.name(), key.into(), e.to_string()))
}

/// Puts a stored row into the model (`doc: None` deletes it), as loading
/// and following another writer's commits do.
fn apply_row(
    txn: &mut Txn<'_>,
    table: Table,
    key: &str,
    doc: Option<&str>,
) -> Result<(), StoreError> {
    let Some(doc) = doc else {
        match table {
            Table::Components => drop(txn.delete_component(key)),
            Table::EthernetInterfaces => drop(txn.delete_interface(key)),
            Table::RedfishEndpoints => drop(txn.delete_redfish_endpoint(key)),
            Table::ComponentEndpoints => drop(txn.delete_component_endpoint(key)),
            Table::Groups => drop(txn.delete_group(key)),
            Table::Partitions => drop(txn.delete_partition(key)),
            Table::NodeMaps => drop(txn.delete_node_map(key)),
            Table::BootConfigs => drop(txn.delete_boot_config(key)),
            Table::CloudInitDefaults => txn.put_cloud_init_defaults(ClusterDefaults::default()),
            Table::CloudInitGroups => drop(txn.delete_cloud_init_group(key)),
            Table::InstanceInfo => drop(txn.delete_instance_info(key)),
            Table::PhoneHome => drop(txn.model.phone_home.remove(key)),
            Table::Leases => {
                if let Ok(ip) = key.parse() {
                    txn.delete_lease(ip);
                }
            }
            Table::PowerTransitions => drop(txn.delete_power_transition(key)),
            Table::BmcCredentials => drop(txn.delete_bmc_credential(key)),
            Table::BootResources => drop(txn.delete_boot_resource(key)),
            Table::UsedBootstrap => drop(txn.delete_used_bootstrap(key)),
            Table::RefreshFamilies => drop(txn.delete_refresh_family(key)),
            Table::MetadataResources => drop(txn.delete_metadata_record(key)),
            Table::ConsoleHostKeys => drop(txn.delete_console_host_key(key)),
            Table::BmcFirmware => drop(txn.model.bmc_firmware.remove(key)),
            Table::HwLocations => drop(txn.delete_hw_loc(key)),
            Table::HwFrus => drop(txn.delete_hw_fru(key)),
            Table::HwHistory => {
                if let Ok(seq) = key.parse() {
                    txn.delete_hw_hist(seq);
                }
            }
            Table::DiscoveryJobs => drop(txn.delete_discovery_job(key)),
            Table::SharedSecrets => {
                if txn.model.shared_secrets.remove(key).is_some() {
                    txn.record::<SharedSecret>(Table::SharedSecrets, key, None);
                }
            }
        }
        return Ok(());
    };
    match table {
        Table::Components => txn.put_component(parse::<Component>(table, key, doc)?),
        Table::EthernetInterfaces => {
            txn.put_interface(parse::<EthernetInterface>(table, key, doc)?)
        }
        Table::RedfishEndpoints => {
            txn.put_redfish_endpoint(parse::<RedfishEndpoint>(table, key, doc)?)
        }
        Table::ComponentEndpoints => {
            txn.put_component_endpoint(parse::<ComponentEndpoint>(table, key, doc)?)
        }
        Table::Groups => txn.put_group(parse(table, key, doc)?),
        Table::Partitions => txn.put_partition(parse(table, key, doc)?),
        Table::NodeMaps => txn.put_node_map(parse(table, key, doc)?),
        Table::BootConfigs => txn.put_boot_config(parse(table, key, doc)?),
        Table::CloudInitDefaults => txn.put_cloud_init_defaults(parse(table, key, doc)?),
        Table::CloudInitGroups => txn.put_cloud_init_group(parse(table, key, doc)?),
        Table::InstanceInfo => txn.put_instance_info(parse(table, key, doc)?),
        Table::PhoneHome => txn.put_phone_home(parse(table, key, doc)?),
        Table::Leases => txn.put_lease(parse(table, key, doc)?),
        Table::PowerTransitions => txn.put_power_transition(parse(table, key, doc)?),
        Table::BmcCredentials => txn.put_bmc_credential(parse(table, key, doc)?),
        Table::BootResources => txn.put_boot_resource(parse(table, key, doc)?),
        Table::UsedBootstrap => txn.put_used_bootstrap(parse(table, key, doc)?),
        Table::RefreshFamilies => txn.put_refresh_family(parse(table, key, doc)?),
        Table::MetadataResources => txn.put_metadata_record(parse(table, key, doc)?),
        Table::ConsoleHostKeys => txn.put_console_host_key(parse(table, key, doc)?),
        Table::BmcFirmware => txn.put_bmc_firmware(parse(table, key, doc)?),
        Table::HwLocations => txn.put_hw_loc(parse::<HwLoc>(table, key, doc)?),
        Table::HwFrus => txn.put_hw_fru(parse::<HwFru>(table, key, doc)?),
        Table::HwHistory => txn.put_hw_hist(parse(table, key, doc)?),
        Table::DiscoveryJobs => txn.put_discovery_job(parse(table, key, doc)?),
        Table::SharedSecrets => txn.put_shared_secret(parse(table, key, doc)?),
    }
    Ok(())
}

/// The whole model from the backend, and the generation it stands at.
fn load_model(db: &mut dyn Backend) -> Result<(u64, Model), StoreError> {
    let mut model = Model::default();
    let mut txn = Txn::new(&mut model, chrono::Utc::now());
    txn.recording = false;
    let generation = db.load(&mut |table, rows| {
        for (key, doc) in rows {
            apply_row(&mut txn, table, &key, Some(&doc))?;
        }
        Ok(())
    })?;
    Ok((generation, model))
}

/// Applies what other writers committed to `model`, unrecorded.
fn apply_feed(model: &mut Model, rows: &[Change]) -> Result<(), StoreError> {
    let mut txn = Txn::new(model, chrono::Utc::now());
    txn.recording = false;
    for c in rows {
        apply_row(&mut txn, c.table, &c.key, c.doc.as_deref())?;
    }
    Ok(())
}

fn writer_loop(mut db: Box<dyn Backend>, inner: Arc<Inner>, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut jobs = Vec::new();
        let mut catch_up = false;
        for req in batch {
            match req {
                Request::Ping(tx) => {
                    let _ = tx.send(db.ping());
                }
                Request::CatchUp => catch_up = true,
                Request::Latest(tx) => {
                    let _ = tx.send(db.latest());
                }
                Request::Write(job) => jobs.push(job),
            }
        }
        if jobs.is_empty() {
            if catch_up {
                let generation = inner.current.load().generation;
                if let Err(e) = db
                    .changes_since(generation)
                    .and_then(|f| follow(&mut *db, &inner, f))
                {
                    tracing::warn!(error = %e, "could not catch up with the shared store");
                }
            }
            continue;
        }
        commit_batch(&mut *db, &inner, jobs);
    }
}

/// Publishes what another writer committed (or everything, reloaded).
fn follow(db: &mut dyn Backend, inner: &Inner, feed: Feed) -> Result<(), StoreError> {
    let (generation, model, rows) = match feed {
        Feed::UpToDate => return Ok(()),
        Feed::Changes { generation, rows } => {
            let mut model = inner.current.load().model.clone();
            apply_feed(&mut model, &rows)?;
            (generation, model, rows.len())
        }
        Feed::Reload => {
            let (generation, model) = load_model(db)?;
            tracing::info!(generation, "reloaded the model from the shared store");
            let rows = model_rows(&model);
            (generation, model, rows)
        }
    };
    inner
        .current
        .store(Arc::new(Snapshot { generation, model }));
    inner.published.send_replace(generation);
    if let Some(observe) = inner.commit_observer.get() {
        observe(rows);
    }
    Ok(())
}

/// Rough row count of a model, for the commit observer after a reload.
fn model_rows(m: &Model) -> usize {
    m.components.len() + m.interfaces.len() + m.groups.len() + m.boot_configs.len() + m.leases.len()
}

/// Runs a batch of writes against the latest generation and commits them.
fn commit_batch(db: &mut dyn Backend, inner: &Inner, jobs: Vec<Job>) {
    let now = chrono::Utc::now();
    // Under the backend's lock from here to the commit: catch up first, so
    // every rule is checked against what every writer has committed.
    let begun = db
        .begin(inner.current.load().generation)
        .and_then(|feed| match feed {
            Feed::Reload => {
                db.abort();
                follow(db, inner, Feed::Reload)?;
                match db.begin(inner.current.load().generation)? {
                    Feed::Reload => {
                        db.abort();
                        Err(StoreError::Schema(
                            "the change log moved while reloading".into(),
                        ))
                    }
                    feed => follow(db, inner, feed).inspect_err(|_| db.abort()),
                }
            }
            feed => follow(db, inner, feed).inspect_err(|_| db.abort()),
        });
    let current = inner.current.load_full();
    let mut model = current.model.clone();
    let mut changes = Vec::new();
    let mut replies = Vec::new();
    for job in jobs {
        let pending = job(&mut model, now);
        changes.extend(pending.changes);
        replies.push(pending.reply);
    }
    let result = match begun {
        Err(e) => {
            tracing::error!(error = %e, "inventory write failed; nothing was changed");
            Err(e)
        }
        Ok(()) if changes.is_empty() => {
            db.abort();
            Ok(())
        }
        Ok(()) => match db.commit(&changes) {
            Ok(generation) => {
                inner
                    .current
                    .store(Arc::new(Snapshot { generation, model }));
                inner.published.send_replace(generation);
                // The old model's replaced nodes go now, not after the
                // replies, so what the observer triggers sees them gone.
                drop(current);
                if let Some(observe) = inner.commit_observer.get() {
                    observe(changes.len());
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "inventory write failed; nothing was changed");
                Err(e)
            }
        },
    };
    for reply in replies {
        reply(result.clone());
    }
}

#[cfg(test)]
#[path = "../../tests/common/postgres.rs"]
pub(crate) mod pg_cluster;

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a store keeps its rows; every store test runs on each.
    enum Place {
        Sqlite(tempfile::TempDir),
        Postgres(String),
    }

    impl Place {
        fn name(&self) -> &'static str {
            match self {
                Place::Sqlite(_) => "sqlite",
                Place::Postgres(_) => "postgres",
            }
        }

        /// A store on this place (again, after a reopen).
        async fn open(&self) -> Store {
            let place = match self {
                Place::Sqlite(dir) => Ok(dir.path().join("inv.db")),
                Place::Postgres(url) => Err(url.clone()),
            };
            tokio::task::spawn_blocking(move || match place {
                Ok(path) => Store::open(&path),
                Err(url) => {
                    Store::open_backend(Box::new(super::super::postgres::Pg::connect(&url, None)?))
                }
            })
            .await
            .unwrap()
            .unwrap()
        }
    }

    /// A fresh place of each kind.
    fn places() -> Vec<Place> {
        vec![
            Place::Sqlite(tempfile::tempdir().unwrap()),
            Place::Postgres(super::pg_cluster::shared().database()),
        ]
    }

    /// A fresh store of each kind, with its place (kept while it is used).
    async fn stores() -> Vec<(Place, Store)> {
        let mut out = Vec::new();
        for p in places() {
            let store = p.open().await;
            out.push((p, store));
        }
        out
    }

    fn node(id: &str, nid: i64) -> Component {
        let mut c = Component::new(id.into(), "Node".into());
        c.nid = Some(nid);
        c
    }

    #[tokio::test]
    async fn write_publishes_a_new_snapshot() {
        for (place, store) in stores().await {
            let before = store.snapshot();
            store
                .write(|t| {
                    t.put_component(node("x0c0s0b0n0", 1));
                    Ok(())
                })
                .await
                .unwrap();
            let after = store.snapshot();
            let name = place.name();
            assert_eq!(
                before.components.len(),
                0,
                "{name}: old snapshots never change"
            );
            assert_eq!(after.generation, before.generation + 1, "{name}");
            assert_eq!(
                after.component_by_nid(1).unwrap().id,
                "x0c0s0b0n0",
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn failed_write_changes_nothing() {
        for (place, store) in stores().await {
            let r = store
                .write(|t| {
                    t.put_component(node("x0c0s0b0n0", 1));
                    Err::<(), _>(DomainError::Conflict("no".into()))
                })
                .await;
            assert!(matches!(r, Err(WriteError::Domain(_))), "{}", place.name());
            let s = store.snapshot();
            assert_eq!(s.generation, 0, "{}", place.name());
            assert!(s.components.is_empty(), "{}", place.name());
            drop(store);
            let s = place.open().await.snapshot();
            assert!(s.components.is_empty(), "{}: nothing stored", place.name());
        }
    }

    #[tokio::test]
    async fn concurrent_writes_each_see_the_previous() {
        for (place, store) in stores().await {
            let mut handles = Vec::new();
            for i in 0..200 {
                let s = store.clone();
                handles.push(tokio::spawn(async move {
                    s.write(move |t| {
                        let next = t.model().components.len() as i64 + 1;
                        t.put_component(node(&format!("x0c0s{i}b0n0"), next));
                        Ok(())
                    })
                    .await
                }));
            }
            for h in handles {
                h.await.unwrap().unwrap();
            }
            let s = store.snapshot();
            assert_eq!(s.components.len(), 200, "{}", place.name());
            assert_eq!(
                s.nids.len(),
                200,
                "{}: every write saw the ones before it",
                place.name()
            );
        }
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        for place in places() {
            {
                let store = place.open().await;
                store
                    .write(|t| {
                        t.put_component(node("x0c0s0b0n0", 7));
                        t.put_component(node("x0c0s1b0n0", 8));
                        Ok(())
                    })
                    .await
                    .unwrap();
                store
                    .write(|t| {
                        t.delete_component("x0c0s1b0n0");
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
            let store = place.open().await;
            let s = store.snapshot();
            assert_eq!(
                s.component_by_nid(7).unwrap().id,
                "x0c0s0b0n0",
                "{}",
                place.name()
            );
            assert!(s.component_by_nid(8).is_none(), "{}", place.name());
        }
    }

    #[test]
    fn member_diffs() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (a, b) = (v(&["a", "c", "d"]), v(&["b", "c", "e"]));
        let (r, ad) = member_diff(&a, &b);
        assert_eq!((r, ad), (vec![&a[0], &a[2]], vec![&b[0], &b[2]]));
        let (a, b) = (v(&["d", "a"]), v(&["a", "e"]));
        let (r, ad) = member_diff(&a, &b);
        assert_eq!((r, ad), (vec![&a[0]], vec![&b[1]]));
    }

    #[tokio::test]
    async fn group_membership_index_follows_writes() {
        for (_place, store) in stores().await {
            group_membership_index_follows_writes_on(store).await;
        }
    }

    async fn group_membership_index_follows_writes_on(store: Store) {
        let group = |label: &str, ids: &[&str]| Group {
            label: label.into(),
            description: String::new(),
            tags: Vec::new(),
            exclusive_group: String::new(),
            members: super::super::model::Members {
                ids: ids.iter().map(|s| s.to_string()).collect(),
            },
        };
        let (g1, g2, g3) = (
            group("a", &["x1", "x2"]),
            group("b", &["x2"]),
            group("a", &["x3", "x2"]),
        );
        store
            .write(move |t| {
                t.put_group(g1);
                t.put_group(g2);
                t.put_group(g3);
                Ok(())
            })
            .await
            .unwrap();
        let s = store.snapshot();
        let labels =
            |x: &str| -> Vec<String> { s.groups_of(x).iter().map(|g| g.label.clone()).collect() };
        assert_eq!(labels("x1"), Vec::<String>::new());
        assert_eq!(labels("x2"), vec!["a", "b"]);
        assert_eq!(labels("x3"), vec!["a"]);
        store
            .write(|t| {
                t.delete_group("a");
                Ok(())
            })
            .await
            .unwrap();
        let s = store.snapshot();
        assert_eq!(s.groups_of("x2").len(), 1);
        assert!(s.groups_of("x3").is_empty());
    }

    #[tokio::test]
    async fn a_writer_that_dies_says_so() {
        for (_place, store) in stores().await {
            a_writer_that_dies_says_so_on(store).await;
        }
    }

    async fn a_writer_that_dies_says_so_on(store: Store) {
        assert!(!store.writer_is_stopped());
        store.observe_commits(|_| panic!("observer failed"));
        let r = store
            .write(|t| {
                t.put_component(node("x0c0s0b0n0", 1));
                Ok(())
            })
            .await;
        assert!(
            matches!(r, Err(WriteError::Store(StoreError::Closed))),
            "{r:?}"
        );
        tokio::time::timeout(std::time::Duration::from_secs(10), store.writer_stopped())
            .await
            .expect("the stop is reported");
        assert!(store.writer_is_stopped());
        assert!(matches!(store.ping().await, Err(StoreError::Closed)));
    }

    #[tokio::test]
    async fn a_panicking_write_is_contained() {
        for (place, store) in stores().await {
            let r: Result<(), _> = store.write(|_| panic!("boom")).await;
            assert!(
                matches!(r, Err(WriteError::Store(StoreError::Panicked))),
                "{}",
                place.name()
            );
            store.ping().await.unwrap();
        }
    }
}
