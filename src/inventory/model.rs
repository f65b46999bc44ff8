//! The inventory's records, serialised exactly as upstream SMD emits them.
//!
//! One representation serves both the wire and the store: the JSON a client
//! reads is the JSON kept in SQLite, so there is no second mapping to drift.
//! The single exception is the BMC password, which is stored encrypted and
//! blanked by [`RedfishEndpoint::public`] before it leaves the appliance.

use serde::{Deserialize, Serialize};

/// An HMS component (`State/Components`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Component {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "State")]
    pub state: String,
    #[serde(rename = "Flag")]
    pub flag: String,
    #[serde(rename = "Enabled", default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        rename = "SoftwareStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub software_status: Option<String>,
    #[serde(rename = "Role", default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(rename = "SubRole", default, skip_serializing_if = "Option::is_none")]
    pub sub_role: Option<String>,
    #[serde(rename = "NID", default, skip_serializing_if = "Option::is_none")]
    pub nid: Option<i64>,
    #[serde(rename = "Subtype", default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    #[serde(rename = "NetType", default, skip_serializing_if = "Option::is_none")]
    pub net_type: Option<String>,
    #[serde(rename = "Arch", default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(rename = "Class", default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(
        rename = "ReservationDisabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reservation_disabled: Option<bool>,
    #[serde(rename = "Locked", default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
}

impl Component {
    /// A component with upstream's defaults for a new row.
    pub fn new(id: String, kind: String) -> Self {
        Component {
            id,
            kind,
            state: "Unknown".into(),
            flag: "OK".into(),
            enabled: Some(true),
            software_status: None,
            role: None,
            sub_role: None,
            nid: None,
            subtype: None,
            net_type: None,
            arch: None,
            class: None,
            reservation_disabled: None,
            locked: None,
        }
    }

    pub fn is_node(&self) -> bool {
        self.kind == "Node" || self.kind == "VirtualNode"
    }
}

/// One IP address bound to an Ethernet interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IpAddressMapping {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "Network", default, skip_serializing_if = "String::is_empty")]
    pub network: String,
}

/// `Inventory/EthernetInterfaces`: a MAC, what it belongs to and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EthernetInterface {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Description", default)]
    pub description: String,
    #[serde(rename = "MACAddress")]
    pub mac_address: String,
    #[serde(rename = "LastUpdate", default)]
    pub last_update: String,
    #[serde(rename = "ComponentID", default)]
    pub component_id: String,
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(rename = "IPAddresses", default)]
    pub ip_addresses: Vec<IpAddressMapping>,
}

/// Discovery bookkeeping kept on a RedfishEndpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DiscoveryInfo {
    #[serde(
        rename = "LastDiscoveryAttempt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_discovery_attempt: String,
    #[serde(
        rename = "LastDiscoveryStatus",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_discovery_status: String,
    #[serde(
        rename = "RedfishVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub redfish_version: String,
}

/// `Inventory/RedfishEndpoints`: a BMC or other Redfish controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RedfishEndpoint {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Hostname", default)]
    pub hostname: String,
    #[serde(rename = "Domain", default)]
    pub domain: String,
    #[serde(rename = "FQDN", default)]
    pub fqdn: String,
    #[serde(rename = "Enabled", default)]
    pub enabled: bool,
    #[serde(rename = "UUID", default)]
    pub uuid: String,
    #[serde(rename = "User", default)]
    pub user: String,
    /// Encrypted at rest; [`RedfishEndpoint::public`] blanks it.
    #[serde(rename = "Password", default)]
    pub password: String,
    #[serde(rename = "UseSSDP", default)]
    pub use_ssdp: bool,
    #[serde(rename = "MACRequired", default)]
    pub mac_required: bool,
    #[serde(rename = "MACAddr", default)]
    pub mac_addr: String,
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
    #[serde(rename = "RediscoverOnUpdate", default)]
    pub rediscover_on_update: bool,
    #[serde(rename = "TemplateID", default)]
    pub template_id: String,
    #[serde(rename = "DiscoveryInfo", default)]
    pub discovery_info: DiscoveryInfo,
    /// Free-form: inventory details a V2 payload carried beyond the
    /// standard fields (manufacturer, model, serial, firmware, ...), kept
    /// for operators.
    #[serde(
        rename = "Details",
        default,
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The BMC's Redfish services (AccountService, SessionService, ...) its
    /// last crawl found: SMD's ServiceEndpoints.
    #[serde(
        rename = "ServiceEndpoints",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(skip)]
    pub services: Vec<ServiceEndpoint>,
}

/// One Redfish service of a RedfishEndpoint, as SMD's ServiceEndpoint
/// describes it (the endpoint's ID, FQDN and URL are derived when served).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceEndpoint {
    /// `AccountService`, `SessionService`, `EventService`, `TaskService`,
    /// `UpdateService`.
    #[serde(rename = "RedfishType")]
    pub redfish_type: String,
    /// The service root's UUID.
    #[serde(rename = "UUID", default)]
    pub uuid: String,
    /// The service's path, e.g. `/redfish/v1/AccountService`.
    #[serde(rename = "OdataID")]
    pub odata_id: String,
    /// What the service's own document said (`null` if unknown).
    #[serde(
        rename = "ServiceInfo",
        default,
        skip_serializing_if = "serde_json::Value::is_null"
    )]
    pub info: serde_json::Value,
}

impl RedfishEndpoint {
    /// The record as clients may see it: the password never leaves.
    pub fn public(&self) -> RedfishEndpoint {
        RedfishEndpoint {
            password: String::new(),
            ..self.clone()
        }
    }

    /// Where power and crawl connect: the IP address if set, else the FQDN.
    pub fn address(&self) -> &str {
        if self.ip_address.is_empty() {
            &self.fqdn
        } else {
            &self.ip_address
        }
    }
}

/// The `#ComputerSystem.Reset` / `#Manager.Reset` / `#Chassis.Reset` action
/// of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResetAction {
    #[serde(rename = "target")]
    pub target: String,
    #[serde(
        rename = "ResetType@Redfish.AllowableValues",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowable_values: Vec<String>,
}

/// Actions as Redfish names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Actions {
    #[serde(
        rename = "#ComputerSystem.Reset",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub computer_system_reset: Option<ResetAction>,
    #[serde(
        rename = "#Manager.Reset",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub manager_reset: Option<ResetAction>,
    #[serde(
        rename = "#Chassis.Reset",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub chassis_reset: Option<ResetAction>,
}

/// A NIC as the Redfish crawl saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EthernetNicInfo {
    #[serde(
        rename = "RedfishId",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub redfish_id: String,
    #[serde(
        rename = "@odata.id",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub odata_id: String,
    #[serde(
        rename = "Description",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    #[serde(rename = "MACAddress", default)]
    pub mac_address: String,
}

/// Facts about the Redfish resource behind a ComponentEndpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RedfishResourceInfo {
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "Actions", default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Actions>,
    #[serde(
        rename = "EthernetNICInfo",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ethernet_nic_info: Vec<EthernetNicInfo>,
    #[serde(rename = "PowerURL", default, skip_serializing_if = "String::is_empty")]
    pub power_url: String,
}

/// `Inventory/ComponentEndpoints`: how to reach a component through its BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ComponentEndpoint {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Domain", default)]
    pub domain: String,
    #[serde(rename = "FQDN", default)]
    pub fqdn: String,
    #[serde(rename = "RedfishType")]
    pub redfish_type: String,
    #[serde(rename = "RedfishSubtype", default)]
    pub redfish_subtype: String,
    #[serde(rename = "UUID", default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    #[serde(rename = "OdataID")]
    pub odata_id: String,
    #[serde(rename = "RedfishEndpointID")]
    pub redfish_endpoint_id: String,
    #[serde(rename = "RedfishEndpointFQDN", default)]
    pub redfish_endpoint_fqdn: String,
    #[serde(rename = "RedfishURL")]
    pub redfish_url: String,
    #[serde(rename = "Enabled")]
    pub enabled: bool,
    #[serde(rename = "ComponentEndpointType")]
    pub component_endpoint_type: String,
    #[serde(
        rename = "RedfishSystemInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub redfish_system_info: Option<RedfishResourceInfo>,
    #[serde(
        rename = "RedfishManagerInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub redfish_manager_info: Option<RedfishResourceInfo>,
    #[serde(
        rename = "RedfishChassisInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub redfish_chassis_info: Option<RedfishResourceInfo>,
}

/// Group or partition membership list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Members {
    pub ids: Vec<String>,
}

/// `groups/{label}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Group {
    pub label: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(
        rename = "exclusiveGroup",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub exclusive_group: String,
    #[serde(default)]
    pub members: Members,
}

/// `partitions/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Partition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub members: Members,
}

/// `Defaults/NodeMaps/{xname}`: the NID and role a node gets when created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeMap {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "NID")]
    pub nid: i64,
    #[serde(rename = "Role", default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    #[serde(rename = "SubRole", default, skip_serializing_if = "String::is_empty")]
    pub sub_role: String,
}

/// `memberships/{xname}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Membership {
    pub id: String,
    #[serde(rename = "groupLabels")]
    pub group_labels: Vec<String>,
    #[serde(rename = "partitionName")]
    pub partition_name: String,
}

/// A boot configuration: one record behind both boot APIs.
///
/// BSS (`/boot/v1`) binds a configuration to targets (xname or tag, MAC,
/// NID), each target to at most one configuration (`bound`). boot-service
/// (`/boot-service`) writes configurations that *select* nodes (MACs, NIDs,
/// xname globs, inventory groups) and compete by score and priority
/// (`bound` false). Both views list, change and serve every record; the
/// rules live in `boot::params` (binding) and `boot::select` (selection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BootConfig {
    /// Internal key, and the boot-service `uid`; not part of the BSS wire shape.
    pub id: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub macs: Vec<String>,
    #[serde(default)]
    pub nids: Vec<i64>,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub initrd: String,
    #[serde(default)]
    pub params: String,
    /// Stored and returned, never served to nodes (BSS keeps it likewise).
    #[serde(rename = "cloud-init", default)]
    pub cloud_init: serde_json::Value,
    /// True when `hosts`, `macs` and `nids` are BSS bindings (records
    /// written before boot-service existed are all bound).
    #[serde(default = "yes")]
    pub bound: bool,
    /// Inventory group labels this configuration selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
    /// 0–100; breaks ties between equal scores.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "ResourceMeta::is_empty")]
    pub meta: ResourceMeta,
    /// boot-service `status`, stored as given.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub status: serde_json::Value,
}

fn yes() -> bool {
    true
}

/// The metadata of a boot-service resource (name, labels, timestamps).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ResourceMeta {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// RFC 3339 with nanoseconds, set by the server.
    #[serde(rename = "createdAt", skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    #[serde(rename = "updatedAt", skip_serializing_if = "String::is_empty")]
    pub updated_at: String,
}

impl ResourceMeta {
    pub fn is_empty(&self) -> bool {
        *self == ResourceMeta::default()
    }
}

/// A boot-service `Node` or `BMC` resource written through `/boot-service`
/// (inventory nodes are shown there too, as views, without a record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BootResource {
    pub uid: String,
    /// `Node` or `BMC`.
    pub kind: String,
    #[serde(default)]
    pub meta: ResourceMeta,
    #[serde(default)]
    pub spec: serde_json::Value,
    #[serde(default)]
    pub status: serde_json::Value,
}

/// A metadata-service resource that no cloud-init record holds: a
/// `WireGuardPeer` or a `Profile` written through `/metadata-service`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MetadataRecord {
    pub uid: String,
    /// `WireGuardPeer` or `Profile`.
    pub kind: String,
    /// Name, timestamps, labels and annotations.
    #[serde(default)]
    pub meta: CloudInitResource,
    /// The spec as checked and normalised on write (templates decoded).
    #[serde(default)]
    pub spec: serde_json::Value,
    /// Profile: when it stops applying (RFC 3339), fixed when written from
    /// `expires_at` or `ttl_seconds`; empty for never.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expires_at: String,
    /// Writes of the spec so far (a peer's `status.version`).
    #[serde(default)]
    pub generation: u64,
}

/// Something a boot configuration can be bound to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BootTarget {
    /// A node xname or a tag (`Default`, a Role, `Unknown-<arch>`, `Global`).
    Host(String),
    /// Lower-case, colon-separated.
    Mac(String),
    Nid(i64),
}

impl BootConfig {
    /// The BSS bindings this configuration holds (none unless `bound`).
    pub fn targets(&self) -> Vec<BootTarget> {
        if !self.bound {
            return Vec::new();
        }
        self.hosts
            .iter()
            .cloned()
            .map(BootTarget::Host)
            .chain(self.macs.iter().cloned().map(BootTarget::Mac))
            .chain(self.nids.iter().copied().map(BootTarget::Nid))
            .collect()
    }

    /// The keys under which selection (`boot::select`) finds this record:
    /// an unbound record under each MAC, NID, exact xname and group it
    /// names, and under `Wild` for globs, `*` or no selector at all; a
    /// bound one under its groups only (its hosts, MACs and NIDs are
    /// bindings).
    pub fn selectors(&self) -> Vec<BootSelector> {
        let mut out: Vec<BootSelector> = self
            .groups
            .iter()
            .cloned()
            .map(BootSelector::Group)
            .collect();
        if self.bound {
            return out;
        }
        if self.hosts.is_empty() && self.macs.is_empty() && self.nids.is_empty() && out.is_empty() {
            return vec![BootSelector::Wild];
        }
        for h in &self.hosts {
            if h.starts_with('x') && !h.ends_with('*') {
                out.push(BootSelector::Host(h.to_ascii_lowercase()));
            } else {
                out.push(BootSelector::Wild);
            }
        }
        out.extend(
            self.macs
                .iter()
                .map(|m| BootSelector::Mac(m.to_ascii_lowercase())),
        );
        out.extend(self.nids.iter().copied().map(BootSelector::Nid));
        out.sort();
        out.dedup();
        out
    }
}

/// A key of the selection index: what a node must have for a selecting
/// configuration to be worth scoring.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BootSelector {
    Group(String),
    /// Lower-case node xname.
    Host(String),
    /// Lower-case, colon-separated.
    Mac(String),
    Nid(i64),
    /// Scored for every node: globs, `*`, host names, no selector.
    Wild,
}

/// cloud-init `admin/cluster-defaults`: values every node's meta-data falls
/// back to. Key names are upstream's, hyphens and one underscore included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ClusterDefaults {
    #[serde(
        rename = "cloud_provider",
        alias = "cloud-provider",
        skip_serializing_if = "String::is_empty"
    )]
    pub cloud_provider: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(rename = "availability-zone", skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    #[serde(rename = "cluster-name", skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    #[serde(rename = "public-keys", skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// No trailing `/`.
    #[serde(rename = "base-url", skip_serializing_if = "String::is_empty")]
    pub base_url: String,
    #[serde(rename = "boot-subnet", skip_serializing_if = "String::is_empty")]
    pub boot_subnet: String,
    #[serde(rename = "wg-subnet", skip_serializing_if = "String::is_empty")]
    pub wg_subnet: String,
    #[serde(rename = "short-name", skip_serializing_if = "String::is_empty")]
    pub short_name: String,
    /// 0 = unset (the rule's default applies).
    #[serde(rename = "nid-length", skip_serializing_if = "is_zero")]
    pub nid_length: i64,
    /// The metadata-service view's envelope; absent until an admin write.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub resource: Option<CloudInitResource>,
}

/// What the metadata-service view (`/metadata-service`) shows around a
/// cloud-init record that the legacy shape has no place for: the envelope's
/// timestamps, labels and annotations, the resource name where the record
/// has none (cluster defaults), and spec fields without a legacy
/// counterpart (`description`, `osVersion`, `default_profile`). Kept inside
/// the record so both APIs read and write one row; the legacy API never
/// shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct CloudInitResource {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The cloud-config file of a cloud-init group, kept in the encoding it was
/// given in (`content` is base64 text when `encoding` is `base64`), so it
/// reads back as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CloudInitFile {
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub filename: String,
    /// `plain` or `base64`.
    #[serde(default)]
    pub encoding: String,
}

/// A cloud-init group (`admin/groups/{name}`): meta-data merged into its
/// members' `vendor_data.groups.<name>` and the file served as
/// `<name>.yaml`. Membership is the SMD group of the same label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CloudInitGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Free-form; key order is kept as given.
    #[serde(
        rename = "meta-data",
        default,
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub meta_data: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<CloudInitFile>,
    /// The metadata-service view's envelope (see [`CloudInitResource`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub resource: Option<CloudInitResource>,
}

/// cloud-init `admin/instance-info/{id}`: per-node overrides, and the node's
/// stable instance ID (assigned once, never changed by an override).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct InstanceInfo {
    /// The node xname.
    pub id: String,
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    #[serde(rename = "local-hostname", skip_serializing_if = "String::is_empty")]
    pub local_hostname: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(rename = "cluster-name", skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(rename = "availability-zone", skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    #[serde(rename = "cloud-provider", skip_serializing_if = "String::is_empty")]
    pub cloud_provider: String,
    #[serde(rename = "instance-type", skip_serializing_if = "String::is_empty")]
    pub instance_type: String,
    #[serde(
        rename = "cloud-init-base-url",
        skip_serializing_if = "String::is_empty"
    )]
    pub cloud_init_base_url: String,
    #[serde(rename = "public-keys", skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// The metadata-service view's envelope (see [`CloudInitResource`]); absent
    /// for a record that only holds an assigned instance ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub resource: Option<CloudInitResource>,
}

/// The last cloud-init phone-home of a node (`POST phone-home/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct PhoneHome {
    /// The node xname, as identified by the caller's address.
    pub node: String,
    /// The `{id}` of the request path (cloud-init sends its instance ID).
    pub id: String,
    /// The caller's address.
    pub address: String,
    /// RFC 3339, UTC.
    pub received: String,
    pub instance_id: String,
    pub hostname: String,
    pub fqdn: String,
    pub pub_key_rsa: String,
    pub pub_key_ecdsa: String,
    pub pub_key_ed25519: String,
}

/// A DHCP lease: which MAC holds an address. The DHCP service writes these;
/// cloud-init identifies callers whose address is not in the inventory by
/// them (address → MAC → interface → node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Lease {
    pub ip: std::net::IpAddr,
    /// Lower-case, colon-separated.
    pub mac: String,
    /// When the lease ends (RFC 3339); absent = until replaced or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

/// A BMC credential (`discover credentials`): the `default` one, or one for a
/// BMC named by xname, IP address or MAC. The password is sealed by the
/// caller before it is stored; it never leaves the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BmcCredential {
    /// `default`, an xname, an IP address or a MAC (lower-case, colons).
    pub key: String,
    pub username: String,
    /// Sealed.
    #[serde(default)]
    pub password: String,
}

/// A BMC console's SSH host key, pinned the first time the appliance
/// connected: a later connection presenting another key is refused until an
/// operator deletes the pin (the BMC was replaced or re-keyed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConsoleHostKey {
    /// The BMC's xname.
    pub bmc: String,
    /// The key in OpenSSH's one-line form (`ssh-ed25519 AAAA…`).
    pub key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// Where the BMC was reached when the key was pinned.
    pub address: String,
    pub pinned_at: chrono::DateTime<chrono::Utc>,
}

/// A discovery job where several heads share the store: what another head
/// needs to run it again when the head running it is gone (re-running is
/// idempotent). Written when the job starts, deleted when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDiscoveryJob {
    pub id: String,
    /// `scan` or `collect`.
    pub kind: String,
    /// RFC 3339.
    pub started: String,
    /// CIDRs, addresses, `address:port` (a collect of the last scan's BMCs
    /// names them here).
    pub targets: Vec<String>,
    pub port: Option<u16>,
    pub include_leases: bool,
    pub bmc_id_map: Option<serde_json::Value>,
    pub username: Option<String>,
    /// The run's password, sealed with the sealing key.
    pub password_sealed: Option<String>,
}

/// One of the key bundles head nodes sharing a store have in common (the
/// root CA, the token keys, the BMC-credential sealing key), sealed with a
/// key-encryption key that only the heads hold. Opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedSecret {
    /// `ca`, `token` or `sealing`.
    pub purpose: String,
    /// The sealed bundle (`v1:` + base64).
    pub sealed: String,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A BMC's firmware inventory (`UpdateService/FirmwareInventory`), as the
/// last discovery or firmware update read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BmcFirmware {
    /// The BMC's xname.
    pub bmc: String,
    pub collected: chrono::DateTime<chrono::Utc>,
    pub items: Vec<FirmwareItem>,
}

/// One member of a FirmwareInventory, named as Redfish names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct FirmwareItem {
    pub id: String,
    pub name: String,
    pub version: String,
    pub updateable: bool,
    #[serde(default)]
    pub software_id: String,
    /// Its Redfish path (an update's `Targets` member).
    #[serde(rename = "@odata.id", default)]
    pub odata_id: String,
}

/// One node's part of a power transition (PCS task).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PowerTask {
    pub xname: String,
    #[serde(rename = "taskStatus")]
    pub status: String,
    #[serde(rename = "taskStatusDescription", default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// A PCS power transition, stored as PCS shows it (`taskCounts` is derived
/// from the tasks when served).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PowerTransition {
    #[serde(rename = "transitionID")]
    pub id: String,
    /// As echoed: `On`, `Off`, `Soft-Off`, ...
    pub operation: String,
    /// Minutes; 0 = do not wait, negative = no deadline.
    /// Kept for the run; PCS does not show it.
    #[serde(rename = "taskDeadlineMinutes")]
    #[schemars(skip)]
    pub deadline_minutes: f64,
    #[serde(rename = "createTime")]
    pub create_time: String,
    #[serde(rename = "automaticExpirationTime")]
    pub expiration_time: String,
    #[serde(rename = "transitionStatus")]
    pub status: String,
    #[serde(default)]
    pub tasks: Vec<PowerTask>,
}
