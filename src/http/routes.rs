//! The route table: every route, its listener(s) and whether it needs a token.
//!
//! Both routers and the OpenAPI document are built from this one list, so a
//! route cannot be served without being documented, and cannot become
//! anonymous without a line here saying so.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use tower::ServiceBuilder;
use tower_http::normalize_path::NormalizePathLayer;

use super::deadline::DeadlineLayer;
use super::problem::{self, ApiError};
use super::schema::Io;
use super::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Served to anyone. On the node listener this is the only kind.
    Anonymous,
    /// Needs a valid bearer token.
    Token,
    /// The status page's routes (`/ui/api`): a bearer token, or the page's
    /// session cookie with its CSRF token on state-changing requests. No
    /// other route accepts that cookie (see `ui_session`).
    Session,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listeners {
    /// The HTTPS API listener only.
    Api,
    /// Both listeners: the read-only routes firmware and nodes use.
    Both,
}

/// The summary of an upstream route answered with 501; the document gives
/// such operations no request or reply schema.
pub const NOT_IMPLEMENTED: &str = "Not implemented (501)";

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// Which service the route belongs to (OpenAPI tag).
    pub service: &'static str,
    pub access: Access,
    pub listeners: Listeners,
    pub summary: &'static str,
    pub handler: MethodRouter<AppState>,
}

/// Builds a table entry; the method filter is derived from `method` so the
/// served method and the documented one cannot differ.
pub fn route<H, T>(
    method: Method,
    path: &'static str,
    service: &'static str,
    access: Access,
    listeners: Listeners,
    summary: &'static str,
    handler: H,
) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = if method == Method::GET {
        // GET routes answer HEAD too, as HTTP requires.
        MethodFilter::GET
    } else if method == Method::POST {
        MethodFilter::POST
    } else if method == Method::PUT {
        MethodFilter::PUT
    } else if method == Method::PATCH {
        MethodFilter::PATCH
    } else if method == Method::DELETE {
        MethodFilter::DELETE
    } else {
        MethodFilter::HEAD
    };
    Route {
        method,
        path,
        service,
        access,
        listeners,
        summary,
        handler: axum::routing::on(filter, handler),
    }
}

/// Every route the appliance serves.
pub fn table() -> Vec<Route> {
    let mut t = Vec::new();
    t.extend(super::common::routes());
    t.extend(super::oauth::routes());
    t.extend(super::smd::routes());
    t.extend(super::boot::routes());
    t.extend(super::boot_service::routes());
    t.extend(super::cloud_init::routes());
    t.extend(super::metadata_service::routes());
    t.extend(super::dhcp::routes());
    t.extend(super::dns::routes());
    t.extend(super::power::routes());
    t.extend(super::discover::routes());
    t.extend(super::firmware::routes());
    t.extend(super::console::routes());
    t.extend(super::store::routes());
    t.extend(super::ui::routes());
    t
}

/// `"METHOD path" => Io,` lines, one per operation (a macro, so each stays
/// one line).
macro_rules! io_table {
    ($($key:literal => $io:expr,)*) => {
        vec![$(($key, $io)),*]
    };
}

/// What each operation takes and returns, keyed `"METHOD path"`: the
/// OpenAPI document's request and response schemas. A route without a line
/// here fails `tests/openapi.rs`. `json::<T>()` documents `T`'s serde shape,
/// `text()`/`opaque(..)` an opaque body, `status()` a reply without a body,
/// `.query(&[..])` the query parameters the handler reads.
pub fn io() -> Vec<(&'static str, Io)> {
    use super::schema::*;
    use crate::boot::params::BootParamsIn;
    use crate::inventory::model::*;
    use crate::inventory::{components, groups, interfaces, nodes};
    use crate::metadata::rules;
    use crate::power::TransitionRequest;
    use std::collections::BTreeMap;
    io_table! {
        "GET /healthz" => out(text()),
        "GET /readyz" => out(json::<Readiness>()),
        "GET /ca/root.pem" => out(opaque("application/x-pem-file")),
        "GET /roots.pem" => out(opaque("application/x-pem-file")),
        "GET /.well-known/jwks.json" => out(json::<Jwks>()),
        "GET /.well-known/openid-configuration" => out(json::<OpenIdConfiguration>()),
        "GET /openapi.json" => out(json::<OpenApiDocument>()),
        "GET /metrics" => out(text()),
        "POST /oauth/token" => inout(form::<TokenRequest>(), json::<TokenReply>()),
        "POST /token" => inout(form::<TokenRequest>(), json::<TokenReply>()),
        "POST /tokensmith/oauth/token" => inout(form::<TokenRequest>(), json::<TokenReply>()),
        "GET /hsm/v2/service/ready" => out(json::<Message>()),
        "GET /hsm/v2/service/liveness" => status(),
        "GET /hsm/v2/service/values" => out(json::<Values>()),
        "GET /hsm/v2/service/values/{key}" => out(json::<Values>()),
        "GET /hsm/v2/Inventory/Hardware" => out(json::<Vec<HwInvByLoc>>()).query(&["id[]:xname", "type[]:@type", "manufacturer[]", "partnumber[]", "serialnumber[]", "fruid[]", "partition[]"]),
        "POST /hsm/v2/Inventory/Hardware" => inout(json::<HwInvIn>(), json::<Message>()),
        "DELETE /hsm/v2/Inventory/Hardware" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/Hardware/{xname}" => out(json::<HwInvByLoc>()),
        "DELETE /hsm/v2/Inventory/Hardware/{xname}" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/Hardware/Query/{xname}" => out(json::<SystemHwInventory>()).query(&["type[]:@type", "partition[]", "parents:boolean", "children:boolean", "format:FullyFlat|NestNodesOnly"]),
        "GET /hsm/v2/Inventory/Hardware/History" => out(json::<HwInvHistResp>()).query(&["id[]:xname", "eventtype[]:Added|Removed|Scanned|Detected", "starttime", "endtime"]),
        "DELETE /hsm/v2/Inventory/Hardware/History" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/Hardware/History/{xname}" => out(json::<HwInvHistArray>()).query(&["eventtype[]:Added|Removed|Scanned|Detected", "starttime", "endtime"]),
        "DELETE /hsm/v2/Inventory/Hardware/History/{xname}" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/HardwareByFRU" => out(json::<Vec<HwInvByFru>>()).query(&["fruid[]", "type[]:@type", "manufacturer[]", "partnumber[]", "serialnumber[]"]),
        "DELETE /hsm/v2/Inventory/HardwareByFRU" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/HardwareByFRU/{fruid}" => out(json::<HwInvByFru>()),
        "DELETE /hsm/v2/Inventory/HardwareByFRU/{fruid}" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/HardwareByFRU/History" => out(json::<HwInvHistResp>()).query(&["fruid[]", "eventtype[]:Added|Removed|Scanned|Detected", "starttime", "endtime"]),
        "GET /hsm/v2/Inventory/HardwareByFRU/History/{fruid}" => out(json::<HwInvHistArray>()).query(&["eventtype[]:Added|Removed|Scanned|Detected", "starttime", "endtime"]),
        "DELETE /hsm/v2/Inventory/HardwareByFRU/History/{fruid}" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/Discover" => status(),
        "GET /hsm/v2/Inventory/DiscoveryStatus" => status(),
        "GET /hsm/v2/Subscriptions/SCN" => status(),
        "GET /hsm/v2/locks/status" => status(),
        "GET /hsm/v2/sysinfo/powermaps" => status(),
        "GET /hsm/v2/State/Components" => out(json::<ComponentArray>()).query(&["id[]:xname", "type[]:@type", "state[]:@state", "flag[]:@flag", "role[]:@role", "subrole[]:@subrole", "enabled[]:boolean", "softwarestatus[]", "subtype[]", "arch[]:@arch", "class[]:@class", "nid[]:integer", "nid_start:integer", "nid_end:integer", "partition[]", "group[]", "stateonly:boolean", "flagonly:boolean", "roleonly:boolean", "nidonly:boolean"]),
        "POST /hsm/v2/State/Components" => takes(json::<components::ComponentArrayIn>()),
        "DELETE /hsm/v2/State/Components" => out(json::<Message>()),
        "PATCH /hsm/v2/State/Components/BulkNID" => takes(json::<components::BulkNidIn>()),
        "GET /hsm/v2/State/Components/ByNID/{nid}" => out(json::<Component>()).query(&["nid:integer"]),
        "POST /hsm/v2/State/Components/ByNID/Query" => inout(json::<NidRangeQuery>(), json::<ComponentArray>()).query(&["stateonly:boolean", "flagonly:boolean", "roleonly:boolean", "nidonly:boolean"]),
        "POST /hsm/v2/State/Components/Query" => inout(json::<ComponentIdQuery>(), json::<ComponentArray>()).query(&["stateonly:boolean", "flagonly:boolean", "roleonly:boolean", "nidonly:boolean"]),
        "GET /hsm/v2/State/Components/Query/{xname}" => out(json::<ComponentArray>()).query(&["type[]:@type", "state[]:@state", "flag[]:@flag", "role[]:@role", "subrole[]:@subrole", "enabled[]:boolean", "softwarestatus[]", "subtype[]", "arch[]:@arch", "class[]:@class", "nid[]:integer", "nid_start:integer", "nid_end:integer", "partition[]", "group[]", "stateonly:boolean", "flagonly:boolean", "roleonly:boolean", "nidonly:boolean"]),
        "GET /hsm/v2/State/Components/{xname}" => out(json::<Component>()),
        "PUT /hsm/v2/State/Components/{xname}" => takes(json::<components::ComponentPutIn>()),
        "DELETE /hsm/v2/State/Components/{xname}" => out(json::<Message>()),
        "PATCH /hsm/v2/State/Components/BulkStateData" => takes(json::<components::PatchIn>()),
        "PATCH /hsm/v2/State/Components/BulkFlagOnly" => takes(json::<components::PatchIn>()),
        "PATCH /hsm/v2/State/Components/BulkEnabled" => takes(json::<components::PatchIn>()),
        "PATCH /hsm/v2/State/Components/BulkSoftwareStatus" => takes(json::<components::PatchIn>()),
        "PATCH /hsm/v2/State/Components/BulkRole" => takes(json::<components::PatchIn>()),
        "PATCH /hsm/v2/State/Components/{xname}/{field}" => takes(json::<components::PatchIn>()).query(&["field:StateData|FlagOnly|Enabled|SoftwareStatus|Role|NID"]),
        "GET /hsm/v2/Inventory/EthernetInterfaces" => out(json::<Vec<EthernetInterface>>()).query(&["MACAddress[]", "IPAddress[]", "Network[]", "ComponentID[]", "Type[]:@type", "OlderThan", "NewerThan"]),
        "POST /hsm/v2/Inventory/EthernetInterfaces" => inout(json::<interfaces::InterfaceIn>(), json::<Uri>()),
        "DELETE /hsm/v2/Inventory/EthernetInterfaces" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/EthernetInterfaces/{id}" => out(json::<EthernetInterface>()),
        "PATCH /hsm/v2/Inventory/EthernetInterfaces/{id}" => inout(json::<interfaces::InterfacePatchIn>(), json::<EthernetInterface>()).query(&["move_macs:boolean"]),
        "DELETE /hsm/v2/Inventory/EthernetInterfaces/{id}" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/EthernetInterfaces/{id}/IPAddresses" => out(json::<Vec<IpAddressMapping>>()),
        "POST /hsm/v2/Inventory/EthernetInterfaces/{id}/IPAddresses" => inout(json::<interfaces::IpIn>(), json::<Uri>()),
        "PATCH /hsm/v2/Inventory/EthernetInterfaces/{id}/IPAddresses/{ip}" => inout(json::<interfaces::IpPatchIn>(), json::<IpAddressMapping>()),
        "DELETE /hsm/v2/Inventory/EthernetInterfaces/{id}/IPAddresses/{ip}" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/RedfishEndpoints" => out(json::<RedfishEndpointArray>()).query(&["id[]:xname", "fqdn[]", "type[]:@type", "uuid[]", "macaddr[]", "ipaddress[]", "laststatus[]"]),
        "POST /hsm/v2/Inventory/RedfishEndpoints" => inout(json::<RedfishEndpointPost>(), json::<Vec<Uri>>()).or_empty(),
        "DELETE /hsm/v2/Inventory/RedfishEndpoints" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/RedfishEndpoints/{xname}" => out(json::<RedfishEndpoint>()),
        "PUT /hsm/v2/Inventory/RedfishEndpoints/{xname}" => inout(json::<RedfishEndpointIn>(), json::<RedfishEndpoint>()),
        "PATCH /hsm/v2/Inventory/RedfishEndpoints/{xname}" => inout(json::<RedfishEndpointIn>(), json::<RedfishEndpoint>()),
        "DELETE /hsm/v2/Inventory/RedfishEndpoints/{xname}" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/RedfishEndpoints/Query/{xname}" => status(),
        "GET /hsm/v2/Inventory/ServiceEndpoints" => out(json::<ServiceEndpointArray>()).query(&["redfish_ep[]:xname", "service[]"]),
        "DELETE /hsm/v2/Inventory/ServiceEndpoints" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/ServiceEndpoints/{service}" => out(json::<ServiceEndpointArray>()).query(&["redfish_ep[]:xname"]),
        "GET /hsm/v2/Inventory/ServiceEndpoints/{service}/RedfishEndpoints/{xname}" => out(json::<ServiceEndpointOut>()),
        "DELETE /hsm/v2/Inventory/ServiceEndpoints/{service}/RedfishEndpoints/{xname}" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/ComponentEndpoints" => out(json::<ComponentEndpointArray>()).query(&["id[]:xname", "redfish_ep[]:xname", "type[]:@type", "redfish_type[]"]),
        "DELETE /hsm/v2/Inventory/ComponentEndpoints" => out(json::<Message>()),
        "GET /hsm/v2/Inventory/ComponentEndpoints/{xname}" => out(json::<ComponentEndpoint>()),
        "DELETE /hsm/v2/Inventory/ComponentEndpoints/{xname}" => out(json::<Message>()),
        "GET /hsm/v2/groups" => out(json::<Vec<Group>>()).query(&["group[]", "tag[]"]),
        "POST /hsm/v2/groups" => inout(json::<groups::GroupIn>(), json::<Vec<Uri>>()),
        "GET /hsm/v2/groups/labels" => out(json::<Vec<String>>()),
        "GET /hsm/v2/groups/{label}" => out(json::<Group>()).query(&["partition"]),
        "PATCH /hsm/v2/groups/{label}" => takes(json::<groups::GroupIn>()),
        "DELETE /hsm/v2/groups/{label}" => out(json::<Message>()),
        "GET /hsm/v2/groups/{label}/members" => out(json::<Members>()).query(&["partition"]),
        "POST /hsm/v2/groups/{label}/members" => inout(json::<groups::MemberIn>(), json::<Vec<Uri>>()),
        "PUT /hsm/v2/groups/{label}/members" => inout(json::<groups::MemberSetIn>(), json::<Vec<Uri>>()),
        "DELETE /hsm/v2/groups/{label}/members/{xname}" => out(json::<Message>()),
        "GET /hsm/v2/partitions" => out(json::<Vec<Partition>>()).query(&["partition[]", "tag[]"]),
        "POST /hsm/v2/partitions" => inout(json::<groups::GroupIn>(), json::<Vec<Uri>>()),
        "GET /hsm/v2/partitions/names" => out(json::<Vec<String>>()),
        "GET /hsm/v2/partitions/{name}" => out(json::<Partition>()),
        "PATCH /hsm/v2/partitions/{name}" => takes(json::<groups::GroupIn>()),
        "DELETE /hsm/v2/partitions/{name}" => out(json::<Message>()),
        "GET /hsm/v2/partitions/{name}/members" => out(json::<Members>()),
        "POST /hsm/v2/partitions/{name}/members" => inout(json::<groups::MemberIn>(), json::<Vec<Uri>>()),
        "DELETE /hsm/v2/partitions/{name}/members/{xname}" => out(json::<Message>()),
        "GET /hsm/v2/memberships" => out(json::<Vec<Membership>>()),
        "GET /hsm/v2/memberships/{xname}" => out(json::<Membership>()),
        "GET /hsm/v2/Defaults/NodeMaps" => out(json::<NodeMapArray>()),
        "POST /hsm/v2/Defaults/NodeMaps" => inout(json::<groups::NodeMapArrayIn>(), json::<Message>()),
        "DELETE /hsm/v2/Defaults/NodeMaps" => out(json::<Message>()),
        "GET /hsm/v2/Defaults/NodeMaps/{xname}" => out(json::<NodeMap>()),
        "PUT /hsm/v2/Defaults/NodeMaps/{xname}" => inout(json::<groups::NodeMapIn>(), json::<NodeMap>()),
        "DELETE /hsm/v2/Defaults/NodeMaps/{xname}" => out(json::<Message>()),
        "POST /inventory/v1/import" => inout(json::<crate::inventory::import::ClusterIn>(), json::<crate::inventory::import::Summary>()).query(&["move_macs:boolean"]),
        "POST /inventory/v1/nodes" => inout(json::<nodes::NodeAddIn>(), json::<Component>()),
        "PATCH /inventory/v1/nodes/{xname}" => inout(json::<nodes::NodeSetIn>(), json::<NodeInterfaces>()),
        "GET /boot/v1/bootparameters" => out(json::<Vec<BootParams>>()).query(&["mac[]", "name[]", "nid[]:integer"]),
        "POST /boot/v1/bootparameters" => takes(json::<BootParamsIn>()),
        "PUT /boot/v1/bootparameters" => takes(json::<BootParamsIn>()),
        "PATCH /boot/v1/bootparameters" => takes(json::<BootParamsIn>()),
        "DELETE /boot/v1/bootparameters" => takes(json::<BootParamsIn>()),
        "GET /boot/v1/bootscript" => out(text()).or(json::<ScriptJson>()).query(&["mac", "name", "nid:integer", "arch", "retry:integer", "json:boolean"]),
        "GET /boot/v1/bootparams" => out(json::<Vec<KexecParams>>()).query(&["mac", "name"]),
        "GET /boot/v1/hosts" => out(json::<Vec<HostInfo>>()).query(&["mac[]", "name[]", "nid[]:integer"]),
        "POST /boot/v1/hosts" => status(),
        "GET /boot/v1/dumpstate" => out(json::<BssState>()),
        "GET /boot/v1/endpoint-history" => out(json::<Vec<crate::boot::history::Entry>>()).query(&["name", "endpoint"]),
        "GET /boot/v1/boot-steps" => out(json::<Vec<crate::boot::steps::NodeSteps>>()).query(&["name"]),
        "GET /boot/v1/service/status" => out(json::<BssStatus>()),
        "GET /boot/v1/service/version" => out(json::<BssVersion>()),
        "GET /boot/v1/service/hsm" => out(json::<BssHsm>()),
        "GET /boot/v1/service/storage/status" => out(json::<BssStorage>()),
        "GET /boot/v1/service/status/all" => out(json::<BssStatusAll>()),
        "GET /artifacts/{*path}" => out(opaque("application/octet-stream")),
        "GET /boot-service/health" => out(json::<ServiceHealth>()),
        "GET /boot-service/bootscript" => out(text()).query(&["host", "mac", "nid:integer", "profile", "retry:integer"]),
        "GET /boot-service/bootparameters" => out(json::<BootParamsEnvelope>()).query(&["host[]", "mac[]", "nid[]:integer", "name[]"]),
        "POST /boot-service/bootparameters" => inout(json::<crate::boot::service::LegacyParamsIn>(), json::<BootParamsEnvelope>()),
        "PUT /boot-service/bootparameters" => inout(json::<crate::boot::service::LegacyParamsIn>(), json::<BootParamsEnvelope>()),
        "DELETE /boot-service/bootparameters" => out(json::<BootParamsEnvelope>()).query(&["host[]", "mac[]", "nid[]:integer", "name[]"]),
        "GET /boot-service/service/status" => out(json::<BootServiceStatus>()),
        "GET /boot-service/service/version" => out(json::<BootServiceVersion>()),
        "GET /boot-service/bootconfigurations" => out(json::<Vec<BootConfigurationResource>>()),
        "POST /boot-service/bootconfigurations" => inout(json::<BootConfigurationIn>(), json::<BootConfigurationResource>()),
        "GET /boot-service/bootconfigurations/{uid}" => out(json::<BootConfigurationResource>()),
        "PUT /boot-service/bootconfigurations/{uid}" => inout(json::<BootConfigurationIn>(), json::<BootConfigurationResource>()),
        "PATCH /boot-service/bootconfigurations/{uid}" => inout(json::<SpecIn<BootConfigurationSpec>>(), json::<BootConfigurationResource>()),
        "DELETE /boot-service/bootconfigurations/{uid}" => out(json::<ResourceDeleted>()),
        "PUT /boot-service/bootconfigurations/{uid}/status" => inout(json::<ResourceStatus>(), json::<BootConfigurationResource>()),
        "PATCH /boot-service/bootconfigurations/{uid}/status" => inout(json::<ResourceStatus>(), json::<BootConfigurationResource>()),
        "GET /boot-service/nodes" => out(json::<Vec<NodeResource>>()),
        "POST /boot-service/nodes" => inout(json::<NodeIn>(), json::<NodeResource>()),
        "GET /boot-service/nodes/{uid}" => out(json::<NodeResource>()),
        "PUT /boot-service/nodes/{uid}" => inout(json::<NodeIn>(), json::<NodeResource>()),
        "PATCH /boot-service/nodes/{uid}" => inout(json::<SpecIn<NodeSpec>>(), json::<NodeResource>()),
        "DELETE /boot-service/nodes/{uid}" => out(json::<ResourceDeleted>()),
        "PUT /boot-service/nodes/{uid}/status" => inout(json::<ResourceStatus>(), json::<NodeResource>()),
        "PATCH /boot-service/nodes/{uid}/status" => inout(json::<ResourceStatus>(), json::<NodeResource>()),
        "GET /boot-service/bmcs" => out(json::<Vec<BmcResource>>()),
        "POST /boot-service/bmcs" => inout(json::<BmcIn>(), json::<BmcResource>()),
        "GET /boot-service/bmcs/{uid}" => out(json::<BmcResource>()),
        "PUT /boot-service/bmcs/{uid}" => inout(json::<BmcIn>(), json::<BmcResource>()),
        "PATCH /boot-service/bmcs/{uid}" => inout(json::<SpecIn<BmcSpec>>(), json::<BmcResource>()),
        "DELETE /boot-service/bmcs/{uid}" => out(json::<ResourceDeleted>()),
        "PUT /boot-service/bmcs/{uid}/status" => inout(json::<ResourceStatus>(), json::<BmcResource>()),
        "PATCH /boot-service/bmcs/{uid}/status" => inout(json::<ResourceStatus>(), json::<BmcResource>()),
        "GET /cloud-init/meta-data" => out(text()),
        "GET /cloud-init/user-data" => out(text()),
        "GET /cloud-init/vendor-data" => out(text()),
        "GET /cloud-init/{group}" => out(text()),
        "POST /cloud-init/phone-home/{id}" => takes(opaque("application/x-www-form-urlencoded")),
        "GET /cloud-init/version" => out(json::<CloudInitVersion>()),
        "GET /cloud-init/openapi.json" => out(json::<OpenApiDocument>()),
        "GET /cloud-init/admin/cluster-defaults" => out(json::<ClusterDefaults>()),
        "POST /cloud-init/admin/cluster-defaults" => takes(json::<ClusterDefaults>()),
        "GET /cloud-init/admin/groups" => out(json::<BTreeMap<String, CloudInitGroup>>()),
        "POST /cloud-init/admin/groups" => takes(json::<rules::GroupIn>()),
        "GET /cloud-init/admin/groups/{name}" => out(json::<CloudInitGroup>()),
        "PUT /cloud-init/admin/groups/{name}" => takes(json::<rules::GroupIn>()),
        "DELETE /cloud-init/admin/groups/{name}" => status(),
        "GET /cloud-init/admin/instance-info/{id}" => out(json::<InstanceInfo>()),
        "PUT /cloud-init/admin/instance-info/{id}" => inout(json::<InstanceInfo>(), json::<InstanceInfo>()),
        "GET /cloud-init/admin/impersonation/{id}/meta-data" => out(text()),
        "GET /cloud-init/admin/impersonation/{id}/user-data" => out(text()),
        "GET /cloud-init/admin/impersonation/{id}/vendor-data" => out(text()),
        "GET /cloud-init/admin/impersonation/{id}/{group}" => out(text()),
        "GET /cloud-init/admin/phone-home" => out(json::<Vec<PhoneHome>>()),
        "GET /cloud-init/admin/phone-home/{id}" => out(json::<PhoneHome>()),
        "GET /metadata-service/health" => out(json::<ServiceHealth>()),
        "GET /metadata-service/meta-data" => out(opaque("application/x-yaml")),
        "GET /metadata-service/user-data" => out(opaque("text/cloud-config")),
        "GET /metadata-service/vendor-data" => out(text()),
        "GET /metadata-service/network-config" => out(opaque("text/cloud-config")),
        "GET /metadata-service/{group}" => out(opaque("text/cloud-config")),
        "POST /metadata-service/phone-home/{id}" => takes(opaque("application/x-www-form-urlencoded")),
        "GET /metadata-service/clusterdefaultss" => out(json::<Vec<ClusterDefaultsResource>>()),
        "POST /metadata-service/clusterdefaultss" => inout(json::<ClusterDefaultsResourceIn>(), json::<ClusterDefaultsResource>()),
        "GET /metadata-service/clusterdefaultss/{uid}" => out(json::<ClusterDefaultsResource>()),
        "PUT /metadata-service/clusterdefaultss/{uid}" => inout(json::<ClusterDefaultsResourceIn>(), json::<ClusterDefaultsResource>()),
        "PATCH /metadata-service/clusterdefaultss/{uid}" => inout(json::<ClusterDefaultsSpec>(), json::<ClusterDefaultsResource>()),
        "DELETE /metadata-service/clusterdefaultss/{uid}" => out(json::<ResourceDeleted>()),
        "GET /metadata-service/groups" => out(json::<Vec<GroupResource>>()),
        "POST /metadata-service/groups" => inout(json::<GroupResourceIn>(), json::<GroupResource>()),
        "GET /metadata-service/groups/{uid}" => out(json::<GroupResource>()),
        "PUT /metadata-service/groups/{uid}" => inout(json::<GroupResourceIn>(), json::<GroupResource>()),
        "PATCH /metadata-service/groups/{uid}" => inout(json::<GroupSpec>(), json::<GroupResource>()),
        "DELETE /metadata-service/groups/{uid}" => out(json::<ResourceDeleted>()),
        "GET /metadata-service/instanceinfos" => out(json::<Vec<InstanceInfoResource>>()),
        "POST /metadata-service/instanceinfos" => inout(json::<InstanceInfoResourceIn>(), json::<InstanceInfoResource>()),
        "GET /metadata-service/instanceinfos/{uid}" => out(json::<InstanceInfoResource>()),
        "PUT /metadata-service/instanceinfos/{uid}" => inout(json::<InstanceInfoResourceIn>(), json::<InstanceInfoResource>()),
        "PATCH /metadata-service/instanceinfos/{uid}" => inout(json::<InstanceInfoSpec>(), json::<InstanceInfoResource>()),
        "DELETE /metadata-service/instanceinfos/{uid}" => out(json::<ResourceDeleted>()),
        "GET /metadata-service/wireguardpeers" => out(json::<Vec<WireGuardPeerResource>>()),
        "POST /metadata-service/wireguardpeers" => inout(json::<WireGuardPeerRequest>(), json::<WireGuardPeerResource>()),
        "GET /metadata-service/wireguardpeers/{uid}" => out(json::<WireGuardPeerResource>()),
        "PUT /metadata-service/wireguardpeers/{uid}" => inout(json::<WireGuardPeerRequest>(), json::<WireGuardPeerResource>()),
        "PATCH /metadata-service/wireguardpeers/{uid}" => inout(json::<WireGuardPeerSpec>(), json::<WireGuardPeerResource>()),
        "DELETE /metadata-service/wireguardpeers/{uid}" => out(json::<ResourceDeleted>()),
        "GET /metadata-service/profiles" => out(json::<Vec<ProfileResource>>()),
        "POST /metadata-service/profiles" => inout(json::<ProfileRequest>(), json::<ProfileResource>()),
        "GET /metadata-service/profiles/{uid}" => out(json::<ProfileResource>()),
        "PUT /metadata-service/profiles/{uid}" => inout(json::<ProfileRequest>(), json::<ProfileResource>()),
        "PATCH /metadata-service/profiles/{uid}" => inout(json::<ProfileSpec>(), json::<ProfileResource>()),
        "DELETE /metadata-service/profiles/{uid}" => out(json::<ResourceDeleted>()),
        "GET /dhcp/v1/leases" => out(json::<Vec<super::dhcp::LeaseView>>()),
        "GET /dns/v1/lookup" => out(json::<super::dns::LookupView>()).query(&["name", "type"]),
        "GET /dns/v1/zone" => out(json::<super::dns::ZoneView>()),
        "GET /store/v1/status" => out(json::<super::store::StoreStatus>()),
        "POST /power-control/v1/transitions" => inout(json::<TransitionRequest>(), json::<TransitionCreated>()),
        "GET /power-control/v1/transitions" => out(json::<TransitionArray>()),
        "POST /transitions" => inout(json::<TransitionRequest>(), json::<TransitionCreated>()),
        "GET /transitions" => out(json::<TransitionArray>()),
        "GET /power-control/v1/transitions/{id}" => out(json::<Transition>()).query(&["id:uuid"]),
        "DELETE /power-control/v1/transitions/{id}" => out(json::<AbortStatus>()).query(&["id:uuid"]),
        "GET /transitions/{id}" => out(json::<Transition>()).query(&["id:uuid"]),
        "DELETE /transitions/{id}" => out(json::<AbortStatus>()).query(&["id:uuid"]),
        "GET /power-control/v1/power-status" => out(json::<PowerStatusArray>()).query(&["xname[]", "powerStateFilter:on|off|undefined", "managementStateFilter:available|unavailable"]),
        "POST /power-control/v1/power-status" => inout(json::<PowerStatusQuery>(), json::<PowerStatusArray>()),
        "GET /power-status" => out(json::<PowerStatusArray>()).query(&["xname[]", "powerStateFilter:on|off|undefined", "managementStateFilter:available|unavailable"]),
        "POST /power-status" => inout(json::<PowerStatusQuery>(), json::<PowerStatusArray>()),
        "GET /power-control/v1/liveness" => status(),
        "GET /liveness" => status(),
        "GET /power-control/v1/readiness" => status(),
        "GET /readiness" => status(),
        "GET /power-control/v1/health" => out(json::<PcsHealth>()),
        "GET /health" => out(json::<PcsHealth>()),
        "GET /power-control/v1/power-cap" => out(json::<PowerCapTaskArray>()),
        "PATCH /power-control/v1/power-cap" => inout(json::<crate::power::cap::PatchRequest>(), json::<PowerCapTaskCreated>()),
        "GET /power-cap" => out(json::<PowerCapTaskArray>()),
        "PATCH /power-cap" => inout(json::<crate::power::cap::PatchRequest>(), json::<PowerCapTaskCreated>()),
        "POST /power-control/v1/power-cap/snapshot" => inout(json::<crate::power::cap::SnapshotRequest>(), json::<PowerCapTaskCreated>()),
        "POST /power-cap/snapshot" => inout(json::<crate::power::cap::SnapshotRequest>(), json::<PowerCapTaskCreated>()),
        "GET /power-control/v1/power-cap/{id}" => out(json::<PowerCapTask>()).query(&["id:uuid"]),
        "GET /power-cap/{id}" => out(json::<PowerCapTask>()).query(&["id:uuid"]),
        "POST /discovery/v1/scan" => inout(json::<crate::discover::ScanRequest>(), json::<DiscoveryJob>()),
        "POST /discovery/v1/collect" => inout(json::<crate::discover::CollectRequest>(), json::<DiscoveryJob>()),
        "GET /discovery/v1/jobs" => out(json::<DiscoveryJobs>()),
        "GET /discovery/v1/jobs/{id}" => out(json::<DiscoveryJob>()).query(&["bmcs:boolean"]),
        "DELETE /discovery/v1/jobs/{id}" => out(json::<DiscoveryJob>()),
        "GET /discovery/v1/credentials" => out(json::<Credentials>()),
        "PUT /discovery/v1/credentials/{key}" => inout(json::<CredentialIn>(), json::<CredentialOut>()),
        "DELETE /discovery/v1/credentials/{key}" => out(json::<Message>()),
        "GET /firmware/v1/inventory" => out(json::<FirmwareInventories>()),
        "GET /firmware/v1/inventory/{xname}" => out(json::<crate::inventory::model::BmcFirmware>()),
        "POST /firmware/v1/updates" => inout(json::<crate::firmware::UpdateRequest>(), json::<crate::firmware::UpdateJob>()),
        "GET /firmware/v1/updates" => out(json::<FirmwareJobs>()),
        "GET /firmware/v1/updates/{id}" => out(json::<crate::firmware::UpdateJob>()),
        "GET /remote-console/liveness" => status(),
        "GET /remote-console/readiness" => status(),
        "GET /remote-console/health" => out(json::<super::console::ConsoleHealth>()),
        "GET /remote-console/consoles" => out(json::<super::console::ConsoleList>()),
        "GET /remote-console/consoles/{xname}" => status().query(&["mode", "follow", "lines"]),
        "GET /remote-console/hostkeys" => out(json::<super::console::HostKeyList>()),
        "DELETE /remote-console/hostkeys/{bmc}" => out(json::<ConsoleHostKey>()),
        "GET /ui" => out(opaque("text/html")),
        "GET /ui/static/{file}" => out(opaque("text/javascript")).or(opaque("text/css")),
        "POST /ui/api/session" => inout(json::<super::ui_session::SignIn>(), json::<super::ui_session::SessionInfo>()),
        "GET /ui/api/session" => out(json::<super::ui_session::SessionInfo>()),
        "DELETE /ui/api/session" => status(),
        "GET /ui/api/cluster" => out(json::<super::ui::ClusterView>()),
        "GET /ui/api/events" => out(opaque("text/event-stream")),
        "GET /ui/api/nodes/{xname}" => out(json::<super::ui::NodeView>()),
        "GET /ui/api/nodes/{xname}/console" => out(text()).query(&["lines:integer"]),
        "GET /ui/api/discovery" => out(json::<DiscoveryJobs>()),
        "GET /ui/api/dhcp" => out(json::<super::ui::DhcpView>()),
        "POST /ui/api/power" => inout(json::<super::ui::PowerIn>(), json::<TransitionCreated>()),
    }
}

/// Path prefixes that upstream's gateway used, served as aliases.
const ALIASES: &[(&str, &str)] = &[
    ("/apis/smd/hsm/v2", "/hsm/v2"),
    ("/apis/bss/boot/v1", "/boot/v1"),
];

/// Rewrites alias prefixes to the canonical ones before routing.
async fn rewrite_aliases(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if let Some((from, to)) = ALIASES.iter().find(|(from, _)| {
        path.starts_with(from) && matches!(path.as_bytes().get(from.len()), None | Some(b'/'))
    }) {
        let rest = &path[from.len()..];
        let pq = match req.uri().query() {
            Some(q) => format!("{to}{rest}?{q}"),
            None => format!("{to}{rest}"),
        };
        if let Ok(pq) = pq.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

/// Checks the bearer token (or upstream SMD's `jwt` cookie) and, when the
/// token carries roles, that they allow the method.
async fn require_token(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(&req).ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
    let now = chrono::Utc::now().timestamp();
    let caller = super::auth::verify(&st, &token, now).await?;
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    if !read_only && !super::auth::may_write(&caller) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token for {} has no role or scope that may change state",
                caller.claims.sub
            ),
        ));
    }
    Ok(next.run(req).await)
}

fn bearer(req: &Request) -> Option<String> {
    bearer_in(req.headers())
}

/// The bearer token of a request's headers (or its `jwt` cookie).
pub(super) fn bearer_in(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut it = v.splitn(2, ' ');
        let scheme = it.next().unwrap_or("");
        let token = it.next().unwrap_or("").trim();
        if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
            return Some(token.to_string());
        }
        return None;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("jwt="))
        .map(str::to_string)
        .next()
}

/// A large body leaves large free blocks behind once sent: ask for a trim.
async fn note_large_body(resp: Response) -> Response {
    use axum::body::HttpBody;
    crate::mem::large_body_sent(resp.body().size_hint().lower());
    resp
}

/// Which listener a router is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Api,
    Node,
}

/// The router for one listener, with the layers every request passes.
pub fn router(state: AppState, listener: Listener) -> Router {
    let max_body = state.config.http.max_body_bytes;
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs);
    let in_flight = state.config.http.max_in_flight;
    let mut r: Router<AppState> = Router::new();
    for route in table() {
        if listener == Listener::Node && route.listeners != Listeners::Both {
            continue;
        }
        let mut handler = route.handler;
        let anonymous_metrics = route.path == "/metrics" && state.config.metrics.anonymous;
        if route.access == Access::Token && !anonymous_metrics {
            handler =
                handler.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
        }
        if route.access == Access::Session {
            handler = handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                super::ui_session::require_session,
            ));
        }
        r = r.route(route.path, handler);
    }
    let r = r
        .fallback(problem::not_found)
        .route_layer(middleware::from_fn(super::access::note_route))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state.clone());
    let r = Router::new().fallback_service(
        ServiceBuilder::new()
            .layer(NormalizePathLayer::trim_trailing_slash())
            .service(r),
    );
    r.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn_with_state(
                (state, listener),
                super::access::access,
            ))
            .layer(middleware::map_response(note_large_body))
            .layer(middleware::from_fn(problem::render_problems))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(in_flight))
            .layer(DeadlineLayer::new(timeout))
            .layer(middleware::from_fn(rewrite_aliases)),
    )
}
