//! `Inventory/RedfishEndpoints` (plain and V2) and `Inventory/ComponentEndpoints`.
//!
//! Bodies are read as free JSON and decoded by the inventory, because the V2
//! payload must be decoded leniently (see [`crate::inventory::endpoints`]).
//! The handler's own job beyond decoding is the BMC password: it is sealed
//! here, before the write, so the inventory only ever stores and compares
//! ciphertext, and it is blanked in every reply.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{created, deleted, deleted_all};
use crate::http::AppState;
use crate::http::json::{ExactJson, QueryPairs};
use crate::http::problem::ApiError;
use crate::http::routes::{Access, Listeners, Route, route};
use crate::inventory::Model;
use crate::inventory::components::{Matcher, normalize_each, parse_xname};
use crate::inventory::endpoints::{
    self, BASE, ComponentEndpointFilter, EndpointFilter, EndpointIn,
};
use crate::inventory::model::{ComponentEndpoint, RedfishEndpoint, ServiceEndpoint};

const CE_BASE: &str = "/hsm/v2/Inventory/ComponentEndpoints";
const SE_BASE: &str = "/hsm/v2/Inventory/ServiceEndpoints";

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    const ONE: &str = "/hsm/v2/Inventory/RedfishEndpoints/{xname}";
    const CE_ONE: &str = "/hsm/v2/Inventory/ComponentEndpoints/{xname}";
    const SE_BY: &str = "/hsm/v2/Inventory/ServiceEndpoints/{service}";
    const SE_ONE: &str = "/hsm/v2/Inventory/ServiceEndpoints/{service}/RedfishEndpoints/{xname}";
    vec![
        route(
            Method::GET,
            BASE,
            "smd",
            Token,
            Api,
            "List RedfishEndpoints (filters)",
            list,
        ),
        route(
            Method::POST,
            BASE,
            "smd",
            Token,
            Api,
            "Create RedfishEndpoints (plain or OpenCHAMI V2 discovery payload)",
            post,
        ),
        route(
            Method::DELETE,
            BASE,
            "smd",
            Token,
            Api,
            "Delete all RedfishEndpoints",
            delete_all,
        ),
        route(
            Method::GET,
            ONE,
            "smd",
            Token,
            Api,
            "One RedfishEndpoint",
            get_one,
        ),
        route(
            Method::PUT,
            ONE,
            "smd",
            Token,
            Api,
            "Create or replace a RedfishEndpoint, reapplying a V2 payload",
            put,
        ),
        route(
            Method::PATCH,
            ONE,
            "smd",
            Token,
            Api,
            "Change fields of a RedfishEndpoint",
            patch,
        ),
        route(
            Method::DELETE,
            ONE,
            "smd",
            Token,
            Api,
            "Delete a RedfishEndpoint and its ComponentEndpoints",
            delete,
        ),
        route(
            Method::GET,
            CE_BASE,
            "smd",
            Token,
            Api,
            "List ComponentEndpoints (filters)",
            list_ces,
        ),
        route(
            Method::DELETE,
            CE_BASE,
            "smd",
            Token,
            Api,
            "Delete all ComponentEndpoints",
            delete_all_ces,
        ),
        route(
            Method::GET,
            CE_ONE,
            "smd",
            Token,
            Api,
            "One ComponentEndpoint",
            get_ce,
        ),
        route(
            Method::DELETE,
            CE_ONE,
            "smd",
            Token,
            Api,
            "Delete a ComponentEndpoint",
            delete_ce,
        ),
        route(
            Method::GET,
            "/hsm/v2/Inventory/RedfishEndpoints/Query/{xname}",
            "smd",
            Token,
            Api,
            "Not implemented upstream either (400)",
            query_not_implemented,
        ),
        route(
            Method::GET,
            SE_BASE,
            "smd",
            Token,
            Api,
            "List ServiceEndpoints (filters redfish_ep, service)",
            list_ses,
        ),
        route(
            Method::DELETE,
            SE_BASE,
            "smd",
            Token,
            Api,
            "Forget all ServiceEndpoints",
            delete_all_ses,
        ),
        route(
            Method::GET,
            SE_BY,
            "smd",
            Token,
            Api,
            "One service on every RedfishEndpoint",
            list_service,
        ),
        route(
            Method::GET,
            SE_ONE,
            "smd",
            Token,
            Api,
            "One service of one RedfishEndpoint",
            get_se,
        ),
        route(
            Method::DELETE,
            SE_ONE,
            "smd",
            Token,
            Api,
            "Forget one service of one RedfishEndpoint",
            delete_se,
        ),
    ]
}

/// Replaces a clear-text password with its sealed form; an empty one stays
/// empty, which the inventory reads as "keep the stored password".
fn seal(st: &AppState, e: &mut EndpointIn) -> Result<(), ApiError> {
    if let Some(p) = e.password.as_deref().filter(|p| !p.is_empty()) {
        let sealed = st.secrets.seal(p).map_err(|err| {
            tracing::error!(error = %err, "cannot seal a BMC password");
            ApiError::internal("the BMC password could not be stored securely")
        })?;
        e.password = Some(sealed);
    }
    Ok(())
}

fn one(e: &RedfishEndpoint) -> Response {
    axum::Json(ep_wire(e)).into_response()
}

/// Removes the members upstream's Go structs tag `omitempty` when they hold
/// their zero value.
fn omit_empty(v: &mut Value, members: &[&str]) {
    if let Some(o) = v.as_object_mut() {
        for m in members {
            let empty = match o.get(*m) {
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Bool(b)) => !b,
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                o.remove(*m);
            }
        }
    }
}

/// A RedfishEndpoint as upstream SMD emits it: its `omitempty` members
/// left out when unset, the password blank, no appliance-only members
/// (the inventory details a V2 payload carried stay in the store).
pub fn ep_wire(e: &RedfishEndpoint) -> Value {
    let mut v = serde_json::to_value(e.public()).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("Details");
        o.remove("ServiceEndpoints");
    }
    omit_empty(
        &mut v,
        &[
            "Name",
            "UUID",
            "UseSSDP",
            "MACRequired",
            "MACAddr",
            "IPAddress",
            "TemplateID",
        ],
    );
    v
}

/// A ComponentEndpoint as upstream SMD emits it: `Domain` and `FQDN` are
/// not part of it (upstream leaves them unset), `MACAddr` and `UUID` only
/// when known.
pub fn ce_wire(c: &ComponentEndpoint) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("Domain");
        o.remove("FQDN");
    }
    omit_empty(&mut v, &["MACAddr", "UUID"]);
    v
}

async fn list(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let filter = EndpointFilter::from_query(|k| q.all(k))?;
    let snap = st.store.snapshot();
    let items: Vec<Value> = snap
        .redfish_endpoints
        .values()
        .filter(|e| filter.matches(e))
        .map(|e| ep_wire(e))
        .collect();
    Ok(axum::Json(json!({ "RedfishEndpoints": items })).into_response())
}

async fn post(
    State(st): State<AppState>,
    ExactJson(body): ExactJson<Value>,
) -> Result<Response, ApiError> {
    let mut eps = endpoints::decode_post(&body)?;
    for e in &mut eps {
        seal(&st, e)?;
    }
    let ids = st.store.write(move |t| endpoints::post(t, &eps)).await?;
    let uris: Vec<String> = ids.iter().map(|id| format!("{BASE}/{id}")).collect();
    Ok(created(&uris, BASE))
}

async fn delete_all(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st.store.write(|t| Ok(endpoints::delete_all(t))).await?;
    deleted_all(n)
}

/// Upstream's words for an absent endpoint, which its tests compare.
fn no_such_xname() -> ApiError {
    ApiError::not_found("no such xname.")
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id)?;
    let snap = st.store.snapshot();
    let e = snap.redfish_endpoints.get(&id).ok_or_else(no_such_xname)?;
    Ok(one(e))
}

async fn put(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ExactJson(body): ExactJson<Value>,
) -> Result<Response, ApiError> {
    let mut e = endpoints::decode(&body)?;
    seal(&st, &mut e)?;
    let ep = st.store.write(move |t| endpoints::put(t, &id, &e)).await?;
    Ok(one(&ep))
}

async fn patch(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ExactJson(body): ExactJson<Value>,
) -> Result<Response, ApiError> {
    let mut e = endpoints::decode_patch(&body)?;
    seal(&st, &mut e)?;
    let ep = st
        .store
        .write(move |t| endpoints::patch(t, &id, &e))
        .await?;
    Ok(one(&ep))
}

async fn delete(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    st.store.write(move |t| endpoints::delete(t, &id)).await?;
    Ok(deleted(1))
}

async fn list_ces(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let filter = ComponentEndpointFilter::from_query(|k| q.all(k))?;
    let snap = st.store.snapshot();
    let items: Vec<Value> = snap
        .component_endpoints
        .values()
        .filter(|c| filter.matches(c))
        .map(|c| ce_wire(c))
        .collect();
    Ok(axum::Json(json!({ "ComponentEndpoints": items })).into_response())
}

async fn delete_all_ces(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st
        .store
        .write(|t| Ok(endpoints::delete_all_component_endpoints(t)))
        .await?;
    deleted_all(n)
}

async fn get_ce(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id)?;
    let snap = st.store.snapshot();
    let c = snap
        .component_endpoints
        .get(&id)
        .ok_or_else(no_such_xname)?;
    Ok(axum::Json(ce_wire(c)).into_response())
}

async fn delete_ce(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.store
        .write(move |t| endpoints::delete_component_endpoint(t, &id))
        .await?;
    Ok(deleted(1))
}

async fn query_not_implemented() -> ApiError {
    // Upstream's exact answer, which its tests compare.
    ApiError::bad_request("not yet implemented")
}

/// A ServiceEndpoint as upstream SMD emits it.
fn se_wire(e: &RedfishEndpoint, s: &ServiceEndpoint) -> Value {
    let mut v = json!({
        "RedfishEndpointID": e.id,
        "RedfishType": s.redfish_type,
        "UUID": s.uuid,
        "OdataID": s.odata_id,
        "RedfishEndpointFQDN": e.fqdn,
        "RedfishURL": format!("{}{}", e.fqdn, s.odata_id),
    });
    if !s.info.is_null() {
        v["ServiceInfo"] = s.info.clone();
    }
    v
}

/// Every ServiceEndpoint whose endpoint and service pass the filters
/// (case-insensitive, repeatable, `!` negates).
fn services(snap: &Model, endpoints: &Matcher, service: &Matcher) -> Value {
    let items: Vec<Value> = snap
        .redfish_endpoints
        .values()
        .filter(|e| endpoints.matches(Some(&e.id)))
        .flat_map(|e| {
            e.services
                .iter()
                .filter(|s| service.matches(Some(&s.redfish_type)))
                .map(|s| se_wire(e, s))
                .collect::<Vec<_>>()
        })
        .collect();
    json!({ "ServiceEndpoints": items })
}

fn ep_matcher(q: &QueryPairs) -> Result<Matcher, ApiError> {
    let ids = normalize_each(q.all("redfish_ep"), |v| parse_xname(v).map(|(x, _)| x))?;
    Ok(Matcher::new(ids))
}

async fn list_ses(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let out = services(&snap, &ep_matcher(&q)?, &Matcher::new(q.all("service")));
    Ok(axum::Json(out).into_response())
}

async fn list_service(
    State(st): State<AppState>,
    Path(service): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let out = services(&snap, &ep_matcher(&q)?, &Matcher::new(vec![service]));
    Ok(axum::Json(out).into_response())
}

async fn get_se(
    State(st): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id)?;
    let snap = st.store.snapshot();
    snap.redfish_endpoints
        .get(&id)
        .and_then(|e| {
            e.services
                .iter()
                .find(|s| s.redfish_type.eq_ignore_ascii_case(&service))
                .map(|s| se_wire(e, s))
        })
        .map(|v| axum::Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("no such service under redfish endpoint."))
}

async fn delete_se(
    State(st): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.store
        .write(move |t| endpoints::delete_service(t, &service, &id))
        .await
        .map_err(|e| match ApiError::from(e) {
            // Upstream answers 404 for any xname here, valid or not.
            a if a.status == axum::http::StatusCode::BAD_REQUEST => {
                ApiError::not_found("no such service under redfish endpoint.")
            }
            a => a,
        })?;
    Ok(deleted(1))
}

async fn delete_all_ses(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st
        .store
        .write(|t| Ok(endpoints::delete_all_services(t)))
        .await?;
    deleted_all(n)
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use crate::ca::secret::SecretBox;
    use crate::ca::token::TokenKeys;
    use crate::config::Config;
    use crate::http::{AppState, Listener, Shared, router};
    use crate::inventory::Store;

    /// An API router over an in-memory store, and a token it accepts.
    pub struct Harness {
        pub app: Router,
        pub state: AppState,
        pub token: String,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        pub async fn new() -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let config = Config::default();
            let issuer = "https://test.invalid:8443".to_string();
            let tokens = TokenKeys::load_or_create(dir.path()).unwrap();
            let now = chrono::Utc::now().timestamp();
            let token = tokens
                .issue(
                    "tester",
                    &issuer,
                    &config.auth.audience,
                    Duration::from_secs(3600),
                    &[],
                    now,
                )
                .unwrap();
            let store = Store::open_in_memory().unwrap();
            let secrets = Arc::new(SecretBox::load_or_create(dir.path()).unwrap());
            let (discovery, power) = crate::app::redfish_services(
                &store,
                &secrets,
                &config,
                &Default::default(),
                &Default::default(),
            )
            .unwrap();
            let consoles = crate::console::Consoles::new(
                store.clone(),
                secrets.clone(),
                config.console.clone(),
                dir.path(),
                Default::default(),
                Default::default(),
            );
            let firmware = Arc::new(crate::firmware::Firmware::new(
                store.clone(),
                secrets.clone(),
                power.redfish_transport(),
                crate::boot::base::NodeBase::new(
                    "http://127.0.0.1:27778",
                    ([0, 0, 0, 0], 1).into(),
                ),
                config.boot.artifacts_dir.clone(),
                Default::default(),
                Default::default(),
            ));
            let state = AppState(Arc::new(Shared {
                consoles,
                firmware,
                ui: Default::default(),
                store,
                root_pem: String::new(),
                root_fingerprint: String::new(),
                tokens,
                secrets,
                discovery,
                power,
                issuer,
                node_base: crate::boot::base::NodeBase::new(
                    "http://127.0.0.1:27778",
                    ([0, 0, 0, 0], 1).into(),
                ),
                metrics: Default::default(),
                boot_history: Default::default(),
                boot_steps: Default::default(),
                meta_cache: Default::default(),
                started: Instant::now(),
                trusted: Default::default(),
                config,
            }));
            Harness {
                app: router(state.clone(), Listener::Api),
                state,
                token,
                _dir: dir,
            }
        }

        /// Sends a request (with the token if `auth`); returns status,
        /// headers and the JSON body (`Null` if empty).
        pub async fn call(
            &self,
            method: &str,
            uri: &str,
            body: Option<Value>,
            auth: bool,
        ) -> (StatusCode, axum::http::HeaderMap, Value) {
            let mut b = Request::builder().method(method).uri(uri);
            if auth {
                b = b.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
            }
            let req = match body {
                Some(v) => b
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(v.to_string()))
                    .unwrap(),
                None => b.body(Body::empty()).unwrap(),
            };
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let v = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            (status, headers, v)
        }
    }

    fn v2() -> Value {
        json!({"ID":"x1000c0s0b0","Type":"","Name":"","FQDN":"172.16.0.101","User":"admin",
            "Password":"hunter2","MACRequired":true,"MACAddr":"52:54:00:be:ee:01","SchemaVersion":1,
            "Managers":[{"uri":"https://172.16.0.101:443/redfish/v1/Managers/bmc","type":"BMC",
                "serial_console":null,"command_shell":null,
                "ethernet_interfaces":[{"mac":"52:54:00:be:ee:01","ip":"172.16.0.101"}]}],
            "Systems":[{"uri":"https://172.16.0.101:443/redfish/v1/Systems/1","uuid":"u-1","name":"node1",
                "actions":["On","ForceOff","GracefulShutdown"],
                "ethernet_interfaces":[{"mac":"52:54:00:be:ef:01","ip":"172.16.0.1"}]}]})
    }

    #[tokio::test]
    async fn v2_round_trip_over_http() {
        let h = Harness::new().await;
        let base = "/hsm/v2/Inventory/RedfishEndpoints";

        let (s, _, _) = h.call("POST", base, Some(v2()), false).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        let (s, hd, body) = h.call("POST", base, Some(v2()), true).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        assert_eq!(body, json!([{"URI": format!("{base}/x1000c0s0b0")}]));
        assert_eq!(hd[header::LOCATION], format!("{base}/x1000c0s0b0").as_str());

        let (s, _, body) = h.call("POST", base, Some(v2()), true).await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(body["status"], 409);

        // The password is sealed at rest and never read back.
        let stored = h.state.store.snapshot().redfish_endpoints["x1000c0s0b0"]
            .password
            .clone();
        assert!(stored.starts_with("v1:"));
        assert_eq!(h.state.secrets.open(&stored).unwrap(), "hunter2");
        let (s, _, body) = h
            .call("GET", &format!("{base}/X1000C0S0B0"), None, true)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body["Password"], "");
        assert_eq!(body["Type"], "NodeBMC");
        assert_eq!(body["IPAddress"], "172.16.0.101");

        let (s, _, body) = h
            .call("GET", &format!("{base}?macaddr=525400beee01"), None, true)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body["RedfishEndpoints"].as_array().unwrap().len(), 1);
        assert_eq!(body["RedfishEndpoints"][0]["Password"], "");

        // PUT without a password keeps the sealed one and answers the endpoint.
        let mut again = v2();
        again.as_object_mut().unwrap().remove("Password");
        let (s, _, body) = h
            .call("PUT", &format!("{base}/x1000c0s0b0"), Some(again), true)
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["ID"], "x1000c0s0b0");
        assert_eq!(
            h.state.store.snapshot().redfish_endpoints["x1000c0s0b0"].password,
            stored
        );

        let (s, _, body) = h
            .call(
                "PATCH",
                &format!("{base}/x1000c0s0b0"),
                Some(json!({"Name": "bmc0", "Members": 3, "ID": 5})),
                true,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["Name"], "bmc0");

        // The anonymous interface list is a bare array.
        let (s, _, body) = h
            .call(
                "GET",
                "/hsm/v2/Inventory/EthernetInterfaces?ComponentID=x1000c0s0b0n0",
                None,
                false,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            body,
            json!([{"ID":"525400beef01","Description":"","MACAddress":"52:54:00:be:ef:01",
                "LastUpdate": body[0]["LastUpdate"],"ComponentID":"x1000c0s0b0n0","Type":"Node",
                "IPAddresses":[{"IPAddress":"172.16.0.1"}]}])
        );

        let ce = "/hsm/v2/Inventory/ComponentEndpoints";
        let (s, _, body) = h
            .call("GET", &format!("{ce}?redfish_ep=x1000c0s0b0"), None, true)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body["ComponentEndpoints"].as_array().unwrap().len(), 2);
        let (s, _, body) = h
            .call("GET", &format!("{ce}/x1000c0s0b0n0"), None, true)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            body["RedfishSystemInfo"]["Actions"]["#ComputerSystem.Reset"]["target"],
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
        );

        let (s, _, body) = h
            .call("DELETE", &format!("{base}/x1000c0s0b0"), None, true)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, json!({"code": 0, "message": "deleted 1 entry"}));
        let (s, _, _) = h
            .call("GET", &format!("{ce}/x1000c0s0b0n0"), None, true)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        let (s, _, _) = h
            .call("POST", base, Some(json!({"ID": "x1000c0s0b0n0"})), true)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _, _) = h.call("POST", base, Some(json!([1])), true).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}
