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

use crate::inventory::model::{
    Component, ComponentEndpoint, NodeMap, PowerTask, PowerTransition, RedfishEndpoint,
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
    /// Query parameters the handler reads: optional strings, repeatable
    /// where the handler reads every value.
    pub query: &'static [&'static str],
}

impl Io {
    /// The same, reading these query parameters.
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
    }
}

/// Takes `body`, replies `reply`.
pub fn inout(body: Media, reply: Media) -> Io {
    Io {
        body: Some(body),
        reply: Some(reply),
        query: &[],
    }
}

/// Takes `body`, replies with a status only.
pub fn takes(body: Media) -> Io {
    Io {
        body: Some(body),
        reply: None,
        query: &[],
    }
}

/// Takes nothing, replies with a status only (204 and friends).
pub fn status() -> Io {
    Io {
        body: None,
        reply: None,
        query: &[],
    }
}

/// A JSON object the document does not describe member by member (free-form
/// maps such as boot-service specs, cloud-init meta-data or import files).
pub type AnyObject = serde_json::Map<String, serde_json::Value>;

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

/// `GET State/Components` and the component queries.
#[derive(JsonSchema)]
pub struct ComponentArray {
    #[serde(rename = "Components")]
    pub components: Vec<Component>,
}

/// `GET Inventory/RedfishEndpoints`.
#[derive(JsonSchema)]
pub struct RedfishEndpointArray {
    #[serde(rename = "RedfishEndpoints")]
    pub redfish_endpoints: Vec<RedfishEndpoint>,
}

/// `GET Inventory/ComponentEndpoints`.
#[derive(JsonSchema)]
pub struct ComponentEndpointArray {
    #[serde(rename = "ComponentEndpoints")]
    pub component_endpoints: Vec<ComponentEndpoint>,
}

/// `GET Defaults/NodeMaps`.
#[derive(JsonSchema)]
pub struct NodeMapArray {
    #[serde(rename = "NodeMaps")]
    pub node_maps: Vec<NodeMap>,
}

/// `GET service/values`: enumeration name → its values.
pub type Values = BTreeMap<String, Vec<String>>;

/// A boot configuration as BSS shows it (`GET bootparameters`).
#[derive(JsonSchema)]
pub struct BootParams {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub macs: Vec<String>,
    #[serde(default)]
    pub nids: Vec<i64>,
    pub kernel: String,
    #[serde(default)]
    pub initrd: String,
    pub params: String,
    #[serde(rename = "cloud-init", default)]
    pub cloud_init: Option<AnyObject>,
}

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
    pub cloud_init: AnyObject,
    pub meta: AnyObject,
}

/// `GET /boot-service/bootparameters`.
#[derive(JsonSchema)]
pub struct BootParamsEnvelope {
    #[serde(rename = "boot-parameters")]
    pub boot_parameters: Vec<LegacyBootParams>,
}

/// A metadata-service resource (`ClusterDefaults`, `Group`, `InstanceInfo`):
/// fabrica's envelope around the record's spec.
#[derive(JsonSchema)]
pub struct MetadataResource {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMeta,
    pub spec: AnyObject,
    pub status: AnyObject,
}

/// The `metadata` member of a [`MetadataResource`].
#[derive(JsonSchema)]
pub struct ResourceMeta {
    pub name: String,
    pub uid: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

/// `GET /metadata-service/health`.
#[derive(JsonSchema)]
pub struct ServiceHealth {
    pub status: String,
    pub service: String,
}

/// A metadata-service resource's deletion.
#[derive(JsonSchema)]
pub struct ResourceDeleted {
    pub message: String,
    pub uid: String,
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
    #[serde(rename = "ServiceInfo")]
    pub service_info: Option<serde_json::Value>,
}

/// `GET Inventory/ServiceEndpoints` and its per-service form.
#[derive(JsonSchema)]
pub struct ServiceEndpointArray {
    #[serde(rename = "ServiceEndpoints")]
    pub service_endpoints: Vec<ServiceEndpointOut>,
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

/// A spec patch: an RFC 7386 merge patch (object) or an RFC 6902 JSON
/// Patch (array of operations), by `Content-Type`.
pub type SpecPatch = serde_json::Value;
