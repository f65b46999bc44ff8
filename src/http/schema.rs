//! What each operation takes and returns, as JSON Schema for the OpenAPI
//! document.
//!
//! Schemas come from the Rust types the handlers decode into and encode
//! from (`schemars` reads the same `serde` attributes, so a rename cannot
//! drift from the wire). Several SMD, BSS and PCS replies are built as
//! envelopes around model records; the envelope types below describe those
//! shapes and exist for the document only.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::inventory::enums;
use crate::inventory::model::{
    Component, ComponentEndpoint, EthernetInterface, NodeMap, PowerTask, PowerTransition,
    RedfishEndpoint,
};

/// Builds the schema of one body or reply.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One body or reply: its media type and schema.
#[derive(Clone, Copy)]
pub struct Media {
    pub content_type: &'static str,
    pub schema: SchemaFn,
}

/// What an operation takes and returns.
#[derive(Clone, Copy)]
pub struct Io {
    pub body: Option<Media>,
    /// `None`: the success reply has no body (204, or a status only).
    pub reply: Option<Media>,
    /// Parameters the handler reads, as [`param`] specs: query parameters,
    /// and the types of path parameters (a spec named like a `{segment}`
    /// of the path types that segment; path segments are strings
    /// otherwise).
    pub query: &'static [&'static str],
    /// The success reply may also be a bare 204 (a write that created
    /// nothing, as upstream answers an empty list).
    pub or_empty: bool,
    /// Another media type the success reply may come in (a script's JSON
    /// form, chosen by a query parameter).
    pub also: Option<Media>,
}

impl Io {
    /// The same, possibly answered in `reply` instead.
    pub fn or(self, reply: Media) -> Io {
        Io {
            also: Some(reply),
            ..self
        }
    }

    /// The same, possibly answered with a bare 204.
    pub fn or_empty(self) -> Io {
        Io {
            or_empty: true,
            ..self
        }
    }

    /// The same, reading these parameters ([`param`] specs).
    pub fn query(self, names: &'static [&'static str]) -> Io {
        Io {
            query: names,
            ..self
        }
    }
}

/// A JSON body or reply of type `T`.
pub fn json<T: JsonSchema>() -> Media {
    Media {
        content_type: "application/json",
        schema: |g| g.subschema_for::<T>(),
    }
}

/// An opaque body or reply (iPXE scripts, YAML, PEM, metrics, files):
/// documented as a `text/plain` string.
pub fn text() -> Media {
    Media {
        content_type: "text/plain",
        schema: |_| json_schema!({"type": "string"}),
    }
}

/// Like [`text`], with another media type.
pub fn opaque(content_type: &'static str) -> Media {
    Media {
        content_type,
        schema: |_| json_schema!({"type": "string"}),
    }
}

/// Replies `reply`, takes no body.
pub fn out(reply: Media) -> Io {
    Io {
        body: None,
        reply: Some(reply),
        query: &[],
        or_empty: false,
        also: None,
    }
}

/// Takes `body`, replies `reply`.
pub fn inout(body: Media, reply: Media) -> Io {
    Io {
        body: Some(body),
        reply: Some(reply),
        query: &[],
        or_empty: false,
        also: None,
    }
}

/// Takes `body`, replies with a status only.
pub fn takes(body: Media) -> Io {
    Io {
        body: Some(body),
        reply: None,
        query: &[],
        or_empty: false,
        also: None,
    }
}

/// Takes nothing, replies with a status only (204 and friends).
pub fn status() -> Io {
    Io {
        body: None,
        reply: None,
        query: &[],
        or_empty: false,
        also: None,
    }
}

/// One parameter, written `name`, `name[]` (repeatable: every value is
/// read) or either followed by `:type`, where type is `integer`,
/// `number`, `boolean`, `uuid`, `xname`, `a|b|c` (one of these) or `@set` (one of
/// an inventory enumeration: `@type`, `@state`, `@flag`, `@role`,
/// `@subrole`, `@arch`, `@class`, `@nettype`); a string otherwise.
/// Returns the name and the parameter's schema.
pub fn param(spec: &str) -> (&str, Value) {
    let (head, ty) = spec.split_once(':').unwrap_or((spec, "string"));
    let (name, many) = match head.strip_suffix("[]") {
        Some(n) => (n, true),
        None => (head, false),
    };
    let one = match ty {
        "integer" | "number" | "boolean" | "string" => json!({"type": ty}),
        "uuid" => json!({"type": "string", "format": "uuid"}),
        "xname" => json!({"type": "string", "pattern": crate::inventory::xname::pattern()}),
        _ => {
            let values: Vec<String> = match ty.strip_prefix('@') {
                Some(set) => enumeration(set).iter().map(|s| s.to_string()).collect(),
                None => ty.split('|').map(str::to_string).collect(),
            };
            json!({"type": "string", "enum": values})
        }
    };
    let schema = if many {
        json!({"type": "array", "items": one})
    } else {
        one
    };
    (name, schema)
}

/// The values of an inventory enumeration, by its `@name` in a [`param`].
fn enumeration(set: &str) -> Vec<&'static str> {
    match set {
        "type" => enums::HmsType::all().iter().map(|t| t.as_str()).collect(),
        "state" => enums::STATES.to_vec(),
        "flag" => enums::FLAGS.to_vec(),
        "role" => enums::ROLES.to_vec(),
        "subrole" => enums::SUB_ROLES.to_vec(),
        "arch" => enums::ARCHES.to_vec(),
        "class" => enums::CLASSES.to_vec(),
        "nettype" => enums::NET_TYPES.to_vec(),
        _ => Vec::new(),
    }
}

/// A JSON object whose members are the caller's data, not the API's (the
/// only open objects in the document; each use says so in its own
/// description).
pub type AnyObject = serde_json::Map<String, Value>;

// ---- Appliance (health, keys, the document itself) ----------------------

/// `GET /readyz`: ready when the store answers.
#[derive(JsonSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: String,
    pub checks: ReadinessChecks,
}

/// What `/readyz` checked.
#[derive(JsonSchema)]
pub struct ReadinessChecks {
    /// `ok`, or why the store does not answer.
    pub db: String,
}

/// `GET /.well-known/jwks.json`: the keys tokens are signed with.
#[derive(JsonSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One P-256 signing key (RFC 7517).
#[derive(JsonSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub usage: String,
    pub alg: String,
    pub x: String,
    pub y: String,
}

/// `GET /.well-known/openid-configuration`.
#[derive(JsonSchema)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    pub id_token_signing_alg_values_supported: Vec<String>,
}

/// This OpenAPI 3.1 document. Its `info`, `components` and `paths` follow
/// the OpenAPI specification rather than this document.
#[derive(JsonSchema)]
pub struct OpenApiDocument {
    pub openapi: String,
    /// Free-form: OpenAPI's Info object.
    pub info: AnyObject,
    /// Free-form: OpenAPI's Components object.
    pub components: AnyObject,
    /// Free-form: OpenAPI's Paths object.
    pub paths: AnyObject,
}

// ---- SMD (/hsm/v2) -----------------------------------------------------

/// SMD's `{"code": 0, "message": …}`.
#[derive(JsonSchema)]
pub struct Message {
    pub code: i64,
    pub message: String,
}

/// SMD's `{"URI": …}` for a created record.
#[derive(JsonSchema)]
pub struct Uri {
    #[serde(rename = "URI")]
    pub uri: String,
}

/// `GET State/Components` and the component queries. With `stateonly`,
/// `flagonly`, `roleonly` or `nidonly` each component carries `ID`, `Type`
/// and the named fields only.
#[derive(JsonSchema)]
pub struct ComponentArray {
    #[serde(rename = "Components")]
    pub components: Vec<ComponentOut>,
}

/// A component, whole or restricted to some fields by the query.
#[derive(JsonSchema)]
#[serde(untagged)]
pub enum ComponentOut {
    Whole(Component),
    Fields(ComponentFields),
}

/// A component restricted by `stateonly`, `flagonly`, `roleonly` or
/// `nidonly`.
#[derive(JsonSchema)]
pub struct ComponentFields {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "State", default)]
    pub state: String,
    #[serde(rename = "Flag", default)]
    pub flag: String,
    #[serde(rename = "Role", default)]
    pub role: String,
    #[serde(rename = "SubRole", default)]
    pub sub_role: String,
    #[serde(rename = "NID", default)]
    pub nid: i64,
}

/// `POST State/Components/Query`.
#[derive(JsonSchema)]
pub struct ComponentIdQuery {
    #[serde(rename = "ComponentIDs", default)]
    pub component_ids: Vec<String>,
}

/// `POST State/Components/ByNID/Query`: NIDs and `a-b` ranges.
#[derive(JsonSchema)]
pub struct NidRangeQuery {
    #[serde(rename = "NIDRanges", default)]
    pub nid_ranges: Vec<String>,
}

/// `GET Inventory/RedfishEndpoints`.
#[derive(JsonSchema)]
pub struct RedfishEndpointArray {
    #[serde(rename = "RedfishEndpoints")]
    pub redfish_endpoints: Vec<RedfishEndpoint>,
}

/// A RedfishEndpoint as written (POST, PUT, PATCH). Keys match
/// case-insensitively. With `SchemaVersion` 1 or more the body is
/// magellan's V2 payload and carries the endpoint's `Systems` and
/// `Managers`.
#[derive(JsonSchema)]
pub struct RedfishEndpointIn {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Type", default)]
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
    /// V2 payloads: 1 or more.
    #[serde(rename = "SchemaVersion", default)]
    pub schema_version: f64,
    /// V2 payloads: the endpoint's ComputerSystems as magellan reports
    /// them (Redfish data).
    #[serde(rename = "Systems", default)]
    pub systems: Vec<RedfishResourceIn>,
    /// V2 payloads: the endpoint's Managers (Redfish data).
    #[serde(rename = "Managers", default)]
    pub managers: Vec<RedfishResourceIn>,
}

/// A System or Manager of a V2 RedfishEndpoint payload. Free-form:
/// Redfish data as magellan collected it (`URI`, `UUID`, `Name`,
/// `EthernetInterfaces`, …).
#[derive(JsonSchema)]
pub struct RedfishResourceIn(pub AnyObject);

/// `POST Inventory/RedfishEndpoints`: one endpoint, or several.
#[derive(JsonSchema)]
#[serde(untagged)]
pub enum RedfishEndpointPost {
    Many(RedfishEndpointArrayIn),
    One(RedfishEndpointIn),
}

/// Several endpoints to create.
#[derive(JsonSchema)]
pub struct RedfishEndpointArrayIn {
    #[serde(rename = "RedfishEndpoints")]
    pub redfish_endpoints: Vec<RedfishEndpointIn>,
}

/// `GET Inventory/ComponentEndpoints`.
#[derive(JsonSchema)]
pub struct ComponentEndpointArray {
    #[serde(rename = "ComponentEndpoints")]
    pub component_endpoints: Vec<ComponentEndpoint>,
}

/// One ServiceEndpoint as SMD serves it: the stored service plus the
/// endpoint's ID, FQDN and URL.
#[derive(JsonSchema)]
pub struct ServiceEndpointOut {
    #[serde(rename = "RedfishEndpointID")]
    pub redfish_endpoint_id: String,
    #[serde(rename = "RedfishType")]
    pub redfish_type: String,
    #[serde(rename = "UUID")]
    pub uuid: String,
    #[serde(rename = "OdataID")]
    pub odata_id: String,
    #[serde(rename = "RedfishEndpointFQDN")]
    pub redfish_endpoint_fqdn: String,
    #[serde(rename = "RedfishURL")]
    pub redfish_url: String,
    /// Free-form: the service's own Redfish document as collected; left
    /// out when unknown.
    #[serde(rename = "ServiceInfo", default)]
    pub service_info: Option<AnyObject>,
}

/// `GET Inventory/ServiceEndpoints` and its per-service form.
#[derive(JsonSchema)]
pub struct ServiceEndpointArray {
    #[serde(rename = "ServiceEndpoints")]
    pub service_endpoints: Vec<ServiceEndpointOut>,
}

/// `GET Defaults/NodeMaps`.
#[derive(JsonSchema)]
pub struct NodeMapArray {
    #[serde(rename = "NodeMaps")]
    pub node_maps: Vec<NodeMap>,
}

/// `GET service/values`: enumeration name → its values.
pub type Values = BTreeMap<String, Vec<String>>;

/// `PATCH /inventory/v1/nodes/{xname}`: the node's interfaces, boot MAC
/// first.
pub type NodeInterfaces = Vec<EthernetInterface>;

/// One hardware inventory location and the FRU in it. Besides the members
/// below it carries exactly one `<Type>LocationInfo` object (for example
/// `ProcessorLocationInfo`, `MemoryLocationInfo`, `NodeLocationInfo`): the
/// location's details as the BMC reported them.
#[derive(JsonSchema)]
pub struct HwInvByLoc {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Ordinal")]
    pub ordinal: i64,
    /// `Populated` or `Empty`.
    #[serde(rename = "Status")]
    pub status: String,
    /// `HWInvByLoc<Type>`: names the `<Type>LocationInfo` member.
    #[serde(rename = "HWInventoryByLocationType")]
    pub location_type: String,
    #[serde(rename = "PopulatedFRU")]
    pub populated_fru: Option<HwInvByFru>,
    /// `<Type>LocationInfo` and, with `Query/{xname}`'s nesting, the node's
    /// `Processors`, `Memory`, `NodeAccels`, `Drives` arrays.
    #[serde(flatten)]
    pub info: AnyObject,
}

/// One field-replaceable unit. Besides the members below it carries exactly
/// one `<Type>FRUInfo` object (Manufacturer, Model, PartNumber,
/// SerialNumber and the type's other durable properties).
#[derive(JsonSchema)]
pub struct HwInvByFru {
    /// `<Type>.<Manufacturer>.<PartNumber>.<SerialNumber>`, or
    /// `FRUIDfor<xname>` for a unit that cannot be told apart.
    #[serde(rename = "FRUID")]
    pub fru_id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Subtype")]
    pub subtype: String,
    /// `HWInvByFRU<Type>`: names the `<Type>FRUInfo` member.
    #[serde(rename = "HWInventoryByFRUType")]
    pub fru_type: String,
    #[serde(flatten)]
    pub info: AnyObject,
}

/// `POST /Inventory/Hardware`: locations with their `<Type>LocationInfo`
/// and a `PopulatedFRU` with its `<Type>FRUInfo`. Type, Ordinal, Status,
/// the discriminators and FRUID are derived from the ID and FRU info.
#[derive(JsonSchema)]
pub struct HwInvIn {
    #[serde(rename = "Hardware")]
    pub hardware: Vec<HwInvByLoc>,
}

/// `GET /Inventory/Hardware/Query/{xname}`: the locations found, one array
/// per type (`Nodes`, `Processors`, `Memory`, `NodeAccels`, `Drives`,
/// `NodeEnclosures`, `NodeEnclosurePowerSupplies`, `Chassis`, ...). With
/// `NestNodesOnly` a node's subcomponents sit in arrays of the same names
/// inside its entry.
#[derive(JsonSchema)]
pub struct SystemHwInventory {
    #[serde(rename = "XName")]
    pub xname: String,
    /// `NestNodesOnly` or `FullyFlat`.
    #[serde(rename = "Format")]
    pub format: String,
    #[serde(flatten)]
    pub arrays: std::collections::BTreeMap<String, Vec<HwInvByLoc>>,
}

/// One hardware history event.
#[derive(JsonSchema)]
pub struct HwInvHist {
    /// The location.
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "FRUID")]
    pub fru_id: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    /// `Added`, `Removed`, `Scanned` or `Detected`.
    #[serde(rename = "EventType")]
    pub event_type: String,
}

/// The events of one location or FRU (`ID`), oldest first.
#[derive(JsonSchema)]
pub struct HwInvHistArray {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "History")]
    pub history: Vec<HwInvHist>,
}

/// History grouped by location (`Hardware/History`) or FRU
/// (`HardwareByFRU/History`).
#[derive(JsonSchema)]
pub struct HwInvHistResp {
    #[serde(rename = "Components")]
    pub components: Vec<HwInvHistArray>,
}

// ---- BSS (/boot/v1) ----------------------------------------------------

/// A boot configuration as BSS shows it (`GET bootparameters`). Empty
/// members are left out; an image entry carries `kernel` or `initrd` and
/// `params` only.
#[derive(JsonSchema)]
pub struct BootParams {
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
    #[serde(rename = "cloud-init", default)]
    pub cloud_init: Option<CloudInitOut>,
}

/// A configuration's `cloud-init` member. Free-form: as written; through
/// `/boot/v1` it has upstream's `CloudInit` shape (`meta-data`,
/// `user-data`, `phone-home`), through `/boot-service/bootparameters` any
/// object.
#[derive(JsonSchema, Default)]
pub struct CloudInitOut(pub AnyObject);

/// What a kexec helper loads next (`GET bootparams`).
#[derive(JsonSchema)]
pub struct KexecParams {
    pub kernel: KexecKernel,
    pub initrd: Vec<String>,
    pub params: String,
}

/// `GET bootscript?json=1`: the script's kernel, initrd and parameters.
#[derive(JsonSchema)]
pub struct ScriptJson {
    pub kernel: KexecKernel,
    #[serde(default)]
    pub initrd: Option<KexecKernel>,
    pub params: String,
}

/// The kernel (or initrd) of [`KexecParams`] and [`ScriptJson`].
#[derive(JsonSchema)]
pub struct KexecKernel {
    pub path: String,
}

/// A node as BSS's `hosts` and `dumpstate` show it: the component plus its
/// endpoint's FQDN, its MACs and whether its endpoint is enabled.
#[derive(JsonSchema)]
pub struct HostInfo {
    #[serde(flatten)]
    pub component: Component,
    #[serde(rename = "FQDN")]
    pub fqdn: String,
    #[serde(rename = "MAC")]
    pub mac: Vec<String>,
    #[serde(rename = "EndpointEnabled")]
    pub endpoint_enabled: bool,
}

/// `GET dumpstate`.
#[derive(JsonSchema)]
pub struct BssState {
    #[serde(rename = "Components")]
    pub components: Vec<HostInfo>,
    #[serde(rename = "Params")]
    pub params: Vec<BootParams>,
}

/// `GET service/status`.
#[derive(JsonSchema)]
pub struct BssStatus {
    #[serde(rename = "bss-status")]
    pub status: String,
}

/// `GET service/version`.
#[derive(JsonSchema)]
pub struct BssVersion {
    #[serde(rename = "bss-version")]
    pub version: String,
}

/// `GET service/hsm`.
#[derive(JsonSchema)]
pub struct BssHsm {
    #[serde(rename = "bss-status-hsm")]
    pub hsm: String,
}

/// `GET service/storage/status`.
#[derive(JsonSchema)]
pub struct BssStorage {
    #[serde(rename = "bss-storage-backend")]
    pub storage: StorageStatus,
}

/// The store: its kind and whether it answers.
#[derive(JsonSchema)]
pub struct StorageStatus {
    pub name: String,
    /// `connected` or `error`.
    pub status: String,
}

/// `GET service/status/all`.
#[derive(JsonSchema)]
pub struct BssStatusAll {
    #[serde(rename = "bss-status")]
    pub status: String,
    #[serde(rename = "bss-version")]
    pub version: String,
    #[serde(rename = "bss-status-hsm")]
    pub hsm: String,
    #[serde(rename = "bss-storage-backend")]
    pub storage: StorageStatus,
}

// ---- boot-service (/boot-service, v0.2) --------------------------------

/// The `metadata` member of a boot-service or metadata-service resource.
#[derive(JsonSchema)]
pub struct ResourceMeta {
    pub name: String,
    pub uid: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

/// The `metadata` member of a written resource: `uid` and timestamps are
/// the server's and ignored.
#[derive(JsonSchema)]
pub struct ResourceMetaIn {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A resource's `status`. Free-form: whatever the resource's controller
/// (or a client's PUT/PATCH of `/status`) wrote.
#[derive(JsonSchema, Default)]
pub struct ResourceStatus(pub AnyObject);

/// `GET /boot-service/health` and `/metadata-service/health`.
#[derive(JsonSchema)]
pub struct ServiceHealth {
    pub status: String,
    pub service: String,
}

/// `GET /boot-service/service/status`.
#[derive(JsonSchema)]
pub struct BootServiceStatus {
    pub service_name: String,
    pub service_version: String,
    pub service_status: String,
    pub details: BootServiceDetails,
}

/// The parts `/boot-service/service/status` reports on.
#[derive(JsonSchema)]
pub struct BootServiceDetails {
    pub storage: StorageStatus,
    pub inventory: String,
}

/// `GET /boot-service/service/version`.
#[derive(JsonSchema)]
pub struct BootServiceVersion {
    pub service_name: String,
    pub service_version: String,
    pub build_date: String,
    pub git_commit: String,
}

/// A resource's deletion (boot-service and metadata-service).
#[derive(JsonSchema)]
pub struct ResourceDeleted {
    pub message: String,
    pub uid: String,
}

/// A BootConfiguration's spec: which nodes it selects and what they boot.
/// Empty members are left out, `kernel` excepted.
#[derive(JsonSchema)]
pub struct BootConfigurationSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub macs: Vec<String>,
    #[serde(default)]
    pub nids: Vec<i64>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub profile: String,
    pub kernel: String,
    #[serde(default)]
    pub initrd: String,
    #[serde(default)]
    pub params: String,
    /// 0 to 100; the highest-priority match wins.
    #[serde(default)]
    pub priority: i64,
}

/// A boot-service spec as written, or an RFC 7386 merge patch of one: the
/// schema of `T` with every member optional (what `T` requires is required
/// of the result, not of the body). One type for every spec, so a member
/// added to a spec is in its patch too.
pub struct SpecIn<T>(std::marker::PhantomData<T>);

impl<T: JsonSchema> JsonSchema for SpecIn<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("{}In", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = T::json_schema(generator);
        if let Some(o) = schema.as_object_mut() {
            let required = o.remove("required");
            let note = match required.as_ref().and_then(Value::as_array) {
                Some(r) if !r.is_empty() => {
                    let names: Vec<&str> = r.iter().filter_map(Value::as_str).collect();
                    format!(" (`{}` required of the result)", names.join("`, `"))
                }
                _ => String::new(),
            };
            o.insert(
                "description".into(),
                format!(
                    "{} as written, or an RFC 7386 merge patch of one: every member optional{note}.",
                    T::schema_name()
                )
                .into(),
            );
        }
        schema
    }
}

/// A boot-service `BootConfiguration`.
#[derive(JsonSchema)]
pub struct BootConfigurationResource {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMeta,
    pub spec: BootConfigurationSpec,
    pub status: ResourceStatus,
}

/// A BootConfiguration as written (POST needs `spec`; PUT replaces it).
/// Top-level `labels` and `annotations` merge over `metadata`'s;
/// `apiVersion`, `kind` and `status` are ignored.
#[derive(JsonSchema)]
pub struct BootConfigurationIn {
    #[serde(default)]
    pub metadata: Option<ResourceMetaIn>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub spec: Option<SpecIn<BootConfigurationSpec>>,
}

/// A network interface of a boot-service Node or BMC.
#[derive(JsonSchema)]
pub struct BootInterface {
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub ip: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// A Node's spec. Empty members are left out.
#[derive(JsonSchema)]
pub struct NodeSpec {
    pub xname: String,
    #[serde(default)]
    pub nid: i64,
    #[serde(rename = "bootMac", default)]
    pub boot_mac: String,
    #[serde(default)]
    pub role: String,
    #[serde(rename = "subRole", default)]
    pub sub_role: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub interfaces: Vec<BootInterface>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A boot-service `Node` (inventory nodes are shown as Nodes too).
#[derive(JsonSchema)]
pub struct NodeResource {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMeta,
    pub spec: NodeSpec,
    pub status: ResourceStatus,
}

/// A Node as written.
#[derive(JsonSchema)]
pub struct NodeIn {
    #[serde(default)]
    pub metadata: Option<ResourceMetaIn>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub spec: Option<SpecIn<NodeSpec>>,
}

/// A BMC's spec. Empty members are left out, `interface` excepted.
#[derive(JsonSchema)]
pub struct BmcSpec {
    #[serde(default)]
    pub xname: String,
    /// At most 200 characters.
    #[serde(default)]
    pub description: String,
    pub interface: BootInterface,
}

/// A boot-service `BMC`.
#[derive(JsonSchema)]
pub struct BmcResource {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMeta,
    pub spec: BmcSpec,
    pub status: ResourceStatus,
}

/// A BMC as written.
#[derive(JsonSchema)]
pub struct BmcIn {
    #[serde(default)]
    pub metadata: Option<ResourceMetaIn>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub spec: Option<SpecIn<BmcSpec>>,
}

/// A configuration as `/boot-service/bootparameters` shows it: BSS's
/// members, NIDs as strings, and a `meta` note.
#[derive(JsonSchema)]
pub struct LegacyBootParams {
    pub hosts: Vec<String>,
    pub macs: Vec<String>,
    pub nids: Vec<String>,
    pub params: String,
    pub kernel: String,
    pub initrd: String,
    #[serde(rename = "cloud-init")]
    pub cloud_init: CloudInitOut,
    pub meta: LegacyMeta,
}

/// The `meta` note of a [`LegacyBootParams`].
#[derive(JsonSchema)]
pub struct LegacyMeta {
    pub comment: String,
    #[serde(rename = "created-at")]
    pub created_at: String,
    #[serde(rename = "modified-at")]
    pub modified_at: String,
}

/// `/boot-service/bootparameters` replies.
#[derive(JsonSchema)]
pub struct BootParamsEnvelope {
    #[serde(rename = "boot-parameters")]
    pub boot_parameters: Vec<LegacyBootParams>,
}

// ---- cloud-init (/cloud-init) and metadata-service ---------------------

/// `GET /cloud-init/version`.
#[derive(JsonSchema)]
pub struct CloudInitVersion {
    pub process_name: String,
    pub build_info: String,
    pub uptime: String,
    pub runtime_host: String,
}

/// A metadata-service resource of one kind and its written form: fabrica's
/// envelope around the kind's spec.
macro_rules! metadata_resource {
    ($(#[$doc:meta])* $out:ident, $in:ident, $spec:ty) => {
        $(#[$doc])*
        #[derive(JsonSchema)]
        pub struct $out {
            #[serde(rename = "apiVersion")]
            pub api_version: String,
            pub kind: String,
            pub metadata: ResourceMeta,
            pub spec: $spec,
            pub status: ResourceStatus,
        }

        /// As written: an envelope (top-level `labels` and `annotations`
        /// merge over `metadata`'s; `apiVersion`, `kind`, `status` are
        /// ignored) whose keys match case-insensitively.
        #[derive(JsonSchema)]
        pub struct $in {
            #[serde(default)]
            pub metadata: Option<ResourceMetaIn>,
            #[serde(default)]
            pub labels: BTreeMap<String, String>,
            #[serde(default)]
            pub annotations: BTreeMap<String, String>,
            #[serde(default)]
            pub spec: Option<$spec>,
        }
    };
}

metadata_resource!(
    /// A metadata-service `ClusterDefaults` (one per cluster).
    ClusterDefaultsResource,
    ClusterDefaultsResourceIn,
    ClusterDefaultsSpec
);
metadata_resource!(
    /// A metadata-service `Group`: a cloud-init group's file and meta-data.
    GroupResource,
    GroupResourceIn,
    GroupSpec
);
metadata_resource!(
    /// A metadata-service `InstanceInfo`: one node's instance data.
    InstanceInfoResource,
    InstanceInfoResourceIn,
    InstanceInfoSpec
);

/// A metadata-service resource of any kind; the per-kind types above
/// detail its spec.
#[derive(JsonSchema)]
pub struct MetadataResource {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMeta,
    /// The kind's spec; free-form here, detailed by the kind's own type.
    pub spec: AnyObject,
    pub status: ResourceStatus,
}

/// A `ClusterDefaults` spec.
#[derive(JsonSchema)]
pub struct ClusterDefaultsSpec {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub cloud_provider: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub availability_zone: String,
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub short_name: String,
    #[serde(default)]
    pub nid_length: i64,
    #[serde(default)]
    pub public_keys: Vec<String>,
}

/// A `Group` spec.
#[derive(JsonSchema)]
pub struct GroupSpec {
    #[serde(default)]
    pub description: String,
    /// The group's cloud-config file, as text.
    #[serde(default)]
    pub template: String,
    /// Free-form: the group's meta-data, the operator's own keys.
    #[serde(rename = "metaData", default)]
    pub meta_data: AnyObject,
    #[serde(rename = "osVersion", default)]
    pub os_version: String,
}

/// An `InstanceInfo` spec.
#[derive(JsonSchema)]
pub struct InstanceInfoSpec {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub local_hostname: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub cloud_init_base_url: String,
    #[serde(default)]
    pub public_keys: Vec<String>,
    #[serde(default)]
    pub default_profile: String,
}

// ---- Firmware (/firmware/v1) --------------------------------------------

/// `GET /firmware/v1/inventory`.
#[derive(JsonSchema)]
pub struct FirmwareInventories {
    pub bmcs: Vec<crate::inventory::model::BmcFirmware>,
}

/// `GET /firmware/v1/updates`.
#[derive(JsonSchema)]
pub struct FirmwareJobs {
    pub jobs: Vec<crate::firmware::UpdateJob>,
}

// ---- PCS (/power-control/v1) -------------------------------------------

/// PCS's counts of a transition's tasks by status.
#[derive(JsonSchema)]
pub struct TaskCounts {
    pub total: i64,
    pub new: i64,
    #[serde(rename = "in-progress")]
    pub in_progress: i64,
    pub failed: i64,
    pub succeeded: i64,
    #[serde(rename = "un-supported")]
    pub unsupported: i64,
}

/// `POST power-cap/snapshot` and `PATCH power-cap` reply.
#[derive(JsonSchema)]
pub struct PowerCapTaskCreated {
    #[serde(rename = "taskID")]
    pub task_id: String,
}

/// A power-capping task; `components` only when read by ID.
#[derive(JsonSchema)]
pub struct PowerCapTask {
    #[serde(rename = "taskID")]
    pub task_id: String,
    /// `snapshot` or `patch`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "taskCreateTime")]
    pub create_time: String,
    #[serde(rename = "automaticExpirationTime")]
    pub expiration_time: String,
    /// `new`, `in-progress`, `completed`.
    #[serde(rename = "taskStatus")]
    pub status: String,
    #[serde(rename = "taskCounts")]
    pub task_counts: TaskCounts,
    pub components: Option<Vec<crate::power::cap::CapComponent>>,
}

/// `GET power-cap`.
#[derive(JsonSchema)]
pub struct PowerCapTaskArray {
    pub tasks: Vec<PowerCapTask>,
}

/// `POST transitions` reply.
#[derive(JsonSchema)]
pub struct TransitionCreated {
    #[serde(rename = "transitionID")]
    pub id: String,
    pub operation: String,
}

/// A transition as PCS shows it: the stored record and its task counts.
#[derive(JsonSchema)]
pub struct Transition {
    #[serde(flatten)]
    pub record: PowerTransition,
    #[serde(rename = "taskCounts")]
    pub task_counts: TaskCounts,
}

/// `GET transitions`.
#[derive(JsonSchema)]
pub struct TransitionArray {
    pub transitions: Vec<Transition>,
}

/// `DELETE transitions/{id}`.
#[derive(JsonSchema)]
pub struct AbortStatus {
    #[serde(rename = "abortStatus")]
    pub abort_status: String,
}

/// Kept so the task record is part of the document's vocabulary.
pub type Task = PowerTask;

/// `power-status` replies.
#[derive(JsonSchema)]
pub struct PowerStatusArray {
    pub status: Vec<PowerStatus>,
}

/// One node's power state as PCS reports it.
#[derive(JsonSchema)]
pub struct PowerStatus {
    pub xname: String,
    /// `on`, `off` or `undefined`; empty for a component the inventory
    /// lacks.
    #[serde(rename = "powerState")]
    pub power_state: String,
    /// `available` or `unavailable`; empty for a component the inventory
    /// lacks.
    #[serde(rename = "managementState")]
    pub management_state: String,
    pub error: String,
    #[serde(rename = "supportedPowerTransitions")]
    pub supported_power_transitions: Vec<String>,
    #[serde(rename = "lastUpdated")]
    pub last_updated: String,
}

/// `POST power-status`: the nodes (all with an endpoint when empty) and
/// the filters, as in the query of `GET power-status`.
#[derive(JsonSchema)]
pub struct PowerStatusQuery {
    #[serde(default)]
    pub xname: Vec<String>,
    #[serde(rename = "powerStateFilter", default)]
    pub power_state_filter: Option<PowerStateFilter>,
    #[serde(rename = "managementStateFilter", default)]
    pub management_state_filter: Option<ManagementStateFilter>,
}

/// A `powerStateFilter`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerStateFilter {
    On,
    Off,
    Undefined,
}

/// A `managementStateFilter`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ManagementStateFilter {
    Available,
    Unavailable,
}

/// `GET health`.
#[derive(JsonSchema)]
pub struct PcsHealth {
    #[serde(rename = "KvStore")]
    pub kv_store: String,
    #[serde(rename = "DistLocking")]
    pub dist_locking: String,
    #[serde(rename = "StateManager")]
    pub state_manager: String,
    #[serde(rename = "Vault")]
    pub vault: String,
    #[serde(rename = "TaskRunner")]
    pub task_runner: String,
}

// ---- Discovery (/discovery/v1) -----------------------------------------

/// A discovery job: its progress counts and, unless `bmcs=false`, its BMCs.
#[derive(JsonSchema)]
pub struct DiscoveryJob {
    pub id: String,
    /// `scan` or `collect`.
    pub kind: String,
    /// `running`, `done` or `cancelled`.
    pub status: String,
    pub phase: String,
    pub started: String,
    pub finished: String,
    pub addresses: u64,
    pub scanned: u64,
    pub total: u64,
    pub done: u64,
    pub found: u64,
    pub collected: u64,
    pub failed: u64,
    pub skipped: u64,
    #[serde(default)]
    pub bmcs: Vec<crate::discover::BmcReport>,
}

/// `GET jobs`.
#[derive(JsonSchema)]
pub struct DiscoveryJobs {
    pub jobs: Vec<DiscoveryJob>,
}

/// A stored BMC credential as shown: never its password.
#[derive(JsonSchema)]
pub struct CredentialOut {
    pub key: String,
    pub username: String,
}

/// `GET credentials`.
#[derive(JsonSchema)]
pub struct Credentials {
    pub credentials: Vec<CredentialOut>,
}

/// `PUT credentials/{key}`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialIn {
    pub username: String,
    pub password: String,
}

// ---- /oauth/token (TokenSmith's token endpoint) ----

/// A form-encoded (`application/x-www-form-urlencoded`) body of type `T`:
/// one field per member.
pub fn form<T: JsonSchema>() -> Media {
    Media {
        content_type: "application/x-www-form-urlencoded",
        schema: |g| g.subschema_for::<T>(),
    }
}

/// The `/oauth/token` request: a bootstrap-token exchange
/// (`grant_type=urn:ietf:params:oauth:grant-type:token-exchange` with
/// `subject_token` and `subject_token_type`) or a refresh
/// (`grant_type=refresh_token` with `refresh_token`).
#[derive(JsonSchema)]
pub struct TokenRequest {
    pub grant_type: String,
    #[serde(default)]
    pub subject_token: String,
    /// `urn:openchami:params:oauth:token-type:bootstrap-token`.
    #[serde(default)]
    pub subject_token_type: String,
    #[serde(default)]
    pub refresh_token: String,
}

/// The `/oauth/token` reply (RFC 8693 §2.2, RFC 6749 §5.1). `scope` is
/// space-separated and left out when empty.
#[derive(JsonSchema)]
pub struct TokenReply {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    /// Opaque; good for one `grant_type=refresh_token` request.
    pub refresh_token: String,
    /// Seconds left of the refresh-token family (rotation does not extend it).
    pub refresh_expires_in: i64,
    #[serde(default)]
    pub scope: String,
    pub issued_token_type: String,
}

// ---- metadata-service WireGuardPeer and Profile resources ----
//
// Typed member by member (unlike `MetadataResource`, whose spec is free-form):
// these kinds have no legacy record, so their spec is exactly what is stored.

/// The `metadata` a create or replace body may carry (client uids and
/// timestamps are ignored).
#[derive(JsonSchema)]
pub struct RequestMeta {
    pub name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A WireGuardPeer's `spec`.
#[derive(JsonSchema)]
pub struct WireGuardPeerSpec {
    /// At most 200 characters.
    pub description: Option<String>,
    /// Base64 of a 32-byte WireGuard public key.
    pub public_key: String,
    /// A network in CIDR notation (`10.42.1.1/32`).
    pub allowed_ip: String,
}

/// A WireGuardPeer's `status`: never applied, as no WireGuard device runs.
#[derive(JsonSchema)]
pub struct WireGuardPeerStatus {
    pub phase: String,
    pub message: String,
    pub ready: bool,
    /// Writes of the spec so far.
    pub version: String,
}

/// `GET /metadata-service/wireguardpeers/{uid}` and the write replies.
#[derive(JsonSchema)]
pub struct WireGuardPeerResource {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMeta,
    pub spec: WireGuardPeerSpec,
    pub status: WireGuardPeerStatus,
}

/// A WireGuardPeer create or replace body (the flat form,
/// `{"name":…,<spec>}`, is accepted too).
#[derive(JsonSchema)]
pub struct WireGuardPeerRequest {
    pub metadata: Option<RequestMeta>,
    pub spec: Option<WireGuardPeerSpec>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A Profile's `spec`.
#[derive(JsonSchema)]
pub struct ProfileSpec {
    /// The Group (by name) whose template and metaData the profile changes.
    #[serde(rename = "groupRef")]
    pub group_ref: String,
    /// A Profile (by name) whose template and metaData this one inherits.
    #[serde(rename = "parentProfile")]
    pub parent_profile: Option<String>,
    /// Replaces the group's template for the profile's nodes; stored plain.
    pub template: Option<String>,
    /// `plain` (default) or `base64`; only on input.
    #[serde(rename = "templateEncoding")]
    pub template_encoding: Option<String>,
    /// Added to (and over) the group's metaData.
    #[serde(rename = "metaData")]
    pub meta_data: Option<BTreeMap<String, String>>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// Sets `expires_at` from the time of the write when none is given.
    pub ttl_seconds: Option<i64>,
}

/// A Profile's `status`, computed when read.
#[derive(JsonSchema)]
pub struct ProfileStatus {
    pub expired: bool,
    pub expired_at: Option<String>,
    pub expires_at: Option<String>,
}

/// `GET /metadata-service/profiles/{uid}` and the write replies.
#[derive(JsonSchema)]
pub struct ProfileResource {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMeta,
    pub spec: ProfileSpec,
    pub status: ProfileStatus,
}

/// A Profile create or replace body (the flat form is accepted too).
#[derive(JsonSchema)]
pub struct ProfileRequest {
    pub metadata: Option<RequestMeta>,
    pub spec: Option<ProfileSpec>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}
