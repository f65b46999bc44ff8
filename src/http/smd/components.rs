//! `State/Components`, NIDs and the SMD query routes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{deleted, deleted_all, found};
use crate::http::AppState;
use crate::http::json::{ApiJson, QueryPairs};
use crate::http::problem::ApiError;
use crate::http::routes::{Access, Listeners, Route, route};
use crate::inventory::components::{
    self, BulkNidIn, ComponentArrayIn, ComponentFilter, ComponentPutIn, PatchIn, PatchKind,
    parse_xname,
};
use crate::inventory::model::Component;
use crate::inventory::{DomainError, xname};

const BASE: &str = "/hsm/v2/State/Components";

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    let mut t = vec![
        route(
            Method::GET,
            BASE,
            "smd",
            Anonymous,
            Api,
            "List components (filters)",
            list,
        ),
        route(
            Method::POST,
            BASE,
            "smd",
            Token,
            Api,
            "Create or update components",
            post,
        ),
        route(
            Method::DELETE,
            BASE,
            "smd",
            Token,
            Api,
            "Delete all components",
            delete_all,
        ),
        route(
            Method::PATCH,
            "/hsm/v2/State/Components/BulkNID",
            "smd",
            Token,
            Api,
            "Set NIDs of many components",
            bulk_nid,
        ),
        route(
            Method::GET,
            "/hsm/v2/State/Components/ByNID/{nid}",
            "smd",
            Token,
            Api,
            "Component by NID",
            by_nid,
        ),
        route(
            Method::POST,
            "/hsm/v2/State/Components/ByNID/Query",
            "smd",
            Token,
            Api,
            "Components in NID ranges",
            by_nid_query,
        ),
        route(
            Method::POST,
            "/hsm/v2/State/Components/Query",
            "smd",
            Token,
            Api,
            "Components by ID list",
            query_post,
        ),
        route(
            Method::GET,
            "/hsm/v2/State/Components/Query/{xname}",
            "smd",
            Token,
            Api,
            "A component and its descendants",
            query_get,
        ),
        route(
            Method::GET,
            "/hsm/v2/State/Components/{xname}",
            "smd",
            Token,
            Api,
            "One component",
            get_one,
        ),
        route(
            Method::PUT,
            "/hsm/v2/State/Components/{xname}",
            "smd",
            Token,
            Api,
            "Create or replace one component",
            put_one,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/State/Components/{xname}",
            "smd",
            Token,
            Api,
            "Delete one component",
            delete_one,
        ),
    ];
    t.push(route(
        Method::PATCH,
        "/hsm/v2/State/Components/BulkStateData",
        "smd",
        Token,
        Api,
        "Patch StateData of many components",
        patch_bulk,
    ));
    t.push(route(
        Method::PATCH,
        "/hsm/v2/State/Components/BulkFlagOnly",
        "smd",
        Token,
        Api,
        "Patch FlagOnly of many components",
        patch_bulk,
    ));
    t.push(route(
        Method::PATCH,
        "/hsm/v2/State/Components/BulkEnabled",
        "smd",
        Token,
        Api,
        "Patch Enabled of many components",
        patch_bulk,
    ));
    t.push(route(
        Method::PATCH,
        "/hsm/v2/State/Components/BulkSoftwareStatus",
        "smd",
        Token,
        Api,
        "Patch SoftwareStatus of many components",
        patch_bulk,
    ));
    t.push(route(
        Method::PATCH,
        "/hsm/v2/State/Components/BulkRole",
        "smd",
        Token,
        Api,
        "Patch Role of many components",
        patch_bulk,
    ));
    t.push(route(
        Method::PATCH,
        "/hsm/v2/State/Components/{xname}/{field}",
        "smd",
        Token,
        Api,
        "Patch one field (StateData, FlagOnly, Enabled, SoftwareStatus, Role, NID)",
        patch_one,
    ));
    t
}

/// `stateonly` and friends restrict the fields returned.
fn shape(c: &Component, q: &QueryPairs) -> Value {
    let pick = |fields: &[(&str, Value)]| {
        let mut m = serde_json::Map::new();
        m.insert("ID".into(), json!(c.id));
        m.insert("Type".into(), json!(c.kind));
        for (k, v) in fields {
            if !v.is_null() {
                m.insert((*k).into(), v.clone());
            }
        }
        Value::Object(m)
    };
    if q.flag("stateonly") {
        pick(&[("State", json!(c.state)), ("Flag", json!(c.flag))])
    } else if q.flag("flagonly") {
        pick(&[("Flag", json!(c.flag))])
    } else if q.flag("roleonly") {
        pick(&[("Role", json!(c.role)), ("SubRole", json!(c.sub_role))])
    } else if q.flag("nidonly") {
        pick(&[("NID", json!(c.nid))])
    } else {
        serde_json::to_value(c).unwrap_or(Value::Null)
    }
}

fn wrap<'a>(items: impl Iterator<Item = &'a Component>, q: &QueryPairs) -> Response {
    let restricted = ["stateonly", "flagonly", "roleonly", "nidonly"]
        .iter()
        .any(|k| q.flag(k));
    if restricted {
        let list: Vec<Value> = items.map(|c| shape(c, q)).collect();
        return axum::Json(json!({ "Components": list })).into_response();
    }
    // Whole records serialise straight from the snapshot, with no
    // intermediate JSON tree: this list is what DHCP/DNS plugins poll.
    #[derive(serde::Serialize)]
    struct Out<'a> {
        #[serde(rename = "Components")]
        components: Vec<&'a Component>,
    }
    axum::Json(Out {
        components: items.collect(),
    })
    .into_response()
}

async fn list(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let filter = ComponentFilter::from_query(|k| q.all(k))?;
    let snap = st.store.snapshot();
    filter.check_roles(&snap)?;
    if filter.is_empty() {
        return Ok(wrap(snap.components.values().map(Arc::as_ref), &q));
    }
    Ok(wrap(
        snap.components
            .values()
            .map(Arc::as_ref)
            .filter(|c| filter.matches(&snap, c)),
        &q,
    ))
}

async fn post(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<ComponentArrayIn>,
) -> Result<StatusCode, ApiError> {
    st.store
        .write(move |t| {
            components::post(t, &body).map_err(|e| match e {
                // Upstream's prefix, which its tests compare.
                DomainError::Invalid(m) => {
                    DomainError::Invalid(format!("couldn't validate components: {m}"))
                }
                other => other,
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_all(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st
        .store
        .write(|t| {
            let ids: Vec<String> = t.model().components.keys().cloned().collect();
            for id in &ids {
                components::delete(t, id);
            }
            Ok(ids.len())
        })
        .await?;
    deleted_all(n)
}

// Upstream's words for an absent xname, which its tests compare. (A
// malformed one stays a 400 on GET, where upstream answers 404.)
const NO_SUCH_XNAME: &str = "no such xname.";

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id)?;
    found(st.store.snapshot().components.get(&id), || {
        NO_SUCH_XNAME.into()
    })
}

async fn put_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ComponentPutIn>,
) -> Result<StatusCode, ApiError> {
    st.store
        .write(move |t| components::put_one(t, &id, &body))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id).map_err(|_| ApiError::bad_request("invalid xname"))?;
    st.store
        .write(move |t| {
            components::delete(t, &id)
                .map(|_| ())
                .ok_or_else(|| DomainError::NotFound(NO_SUCH_XNAME.into()))
        })
        .await?;
    Ok(deleted(1))
}

async fn patch_one(
    State(st): State<AppState>,
    Path((id, field)): Path<(String, String)>,
    ApiJson(body): ApiJson<PatchIn>,
) -> Result<StatusCode, ApiError> {
    let kind = PatchKind::from_segment(&field)
        .ok_or_else(|| ApiError::not_found(format!("no route for {BASE}/{id}/{field}")))?;
    parse_xname(&id).map_err(|_| ApiError::bad_request("invalid xname ID"))?;
    st.store
        .write(move |t| components::patch_one(t, &id, kind, &body))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn patch_bulk(
    State(st): State<AppState>,
    uri: axum::http::Uri,
    ApiJson(body): ApiJson<PatchIn>,
) -> Result<StatusCode, ApiError> {
    let field = uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_start_matches("Bulk");
    let kind = PatchKind::from_segment(field)
        .ok_or_else(|| ApiError::not_found(format!("no route for {}", uri.path())))?;
    st.store
        .write(move |t| components::patch_bulk(t, kind, &body))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn bulk_nid(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<BulkNidIn>,
) -> Result<StatusCode, ApiError> {
    st.store
        .write(move |t| components::bulk_nid(t, &body))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn by_nid(State(st): State<AppState>, Path(nid): Path<String>) -> Result<Response, ApiError> {
    let nid: i64 = nid
        .parse()
        .map_err(|_| ApiError::bad_request("a required argument was not an integer"))?;
    let snap = st.store.snapshot();
    let c = snap
        .component_by_nid(nid)
        .ok_or_else(|| ApiError::not_found("no such NID."))?;
    Ok(axum::Json(c).into_response())
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(default)]
struct NidQueryIn {
    nidranges: Vec<String>,
}

async fn by_nid_query(
    State(st): State<AppState>,
    q: QueryPairs,
    ApiJson(body): ApiJson<NidQueryIn>,
) -> Result<Response, ApiError> {
    let ranges = components::parse_nid_ranges(&body.nidranges)?;
    let snap = st.store.snapshot();
    let items = ranges
        .iter()
        .flat_map(|(a, b)| {
            snap.nids
                .range(*a..=*b)
                .map(|(_, id)| id.clone())
                .collect::<Vec<_>>()
        })
        .filter_map(|id| snap.components.get(&id).cloned())
        .collect::<Vec<_>>();
    Ok(wrap(items.iter().map(Arc::as_ref), &q))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(default)]
struct IdQueryIn {
    componentids: Vec<String>,
}

async fn query_post(
    State(st): State<AppState>,
    q: QueryPairs,
    ApiJson(body): ApiJson<IdQueryIn>,
) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let mut items = Vec::new();
    for raw in &body.componentids {
        let (id, _) = parse_xname(raw)?;
        if let Some(c) = snap.component(&id) {
            items.push(c);
        }
    }
    Ok(wrap(items.into_iter(), &q))
}

async fn query_get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id)?;
    let filter = ComponentFilter::from_query(|k| if k == "id" { Vec::new() } else { q.all(k) })?;
    let snap = st.store.snapshot();
    filter.check_roles(&snap)?;
    // As upstream: the component itself, and its descendants only when a
    // `type` says which kind of descendant is wanted.
    let descend = !filter.kind.is_empty();
    let items: Vec<&Component> = snap
        .components
        .values()
        .map(Arc::as_ref)
        .filter(|c| {
            (c.id == id || (descend && xname::is_descendant_or_self(&c.id, &id)))
                && filter.matches(&snap, c)
        })
        .collect();
    if items.is_empty() && !snap.components.contains_key(&id) {
        return Err(ApiError::not_found(format!("no component {id}")));
    }
    Ok(wrap(items.into_iter(), &q))
}
