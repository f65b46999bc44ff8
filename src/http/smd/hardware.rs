//! `Inventory/Hardware`, `Inventory/HardwareByFRU` and their history:
//! decode, ask `inventory::hwinv`, encode as upstream.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use super::{deleted, deleted_all, message};
use crate::http::AppState;
use crate::http::json::{QueryPairs, decode_exact};
use crate::http::problem::ApiError;
use crate::http::routes::{Access, Listeners, Route, route};
use crate::inventory::hwinv::{self, Filter, HistFilter, Query};
use crate::inventory::xname;

const LOC: &str = "/hsm/v2/Inventory/Hardware";
const FRU: &str = "/hsm/v2/Inventory/HardwareByFRU";

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::GET,
            LOC,
            "smd",
            Token,
            Api,
            "List hardware inventory locations (filters)",
            list,
        ),
        route(
            Method::POST,
            LOC,
            "smd",
            Token,
            Api,
            "Create or update hardware inventory locations and their FRUs",
            post,
        ),
        route(
            Method::DELETE,
            LOC,
            "smd",
            Token,
            Api,
            "Delete every hardware inventory location",
            delete_all,
        ),
        route(
            Method::GET,
            "/hsm/v2/Inventory/Hardware/{xname}",
            "smd",
            Token,
            Api,
            "One hardware inventory location",
            get_one,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/Inventory/Hardware/{xname}",
            "smd",
            Token,
            Api,
            "Delete one hardware inventory location (its FRU stays)",
            delete_one,
        ),
        route(
            Method::GET,
            "/hsm/v2/Inventory/Hardware/Query/{xname}",
            "smd",
            Token,
            Api,
            "Hardware inventory under (or above) an xname, by type, nested or flat",
            query,
        ),
        route(
            Method::GET,
            "/hsm/v2/Inventory/Hardware/History",
            "smd",
            Token,
            Api,
            "Hardware history of every location",
            hist_all_by_loc,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/Inventory/Hardware/History",
            "smd",
            Token,
            Api,
            "Delete all hardware history",
            hist_delete_all,
        ),
        route(
            Method::GET,
            "/hsm/v2/Inventory/Hardware/History/{xname}",
            "smd",
            Token,
            Api,
            "Hardware history of one location",
            hist_by_loc,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/Inventory/Hardware/History/{xname}",
            "smd",
            Token,
            Api,
            "Delete one location's hardware history",
            hist_delete_loc,
        ),
        route(
            Method::GET,
            FRU,
            "smd",
            Token,
            Api,
            "List FRUs (filters)",
            fru_list,
        ),
        route(
            Method::DELETE,
            FRU,
            "smd",
            Token,
            Api,
            "Delete every FRU",
            fru_delete_all,
        ),
        route(
            Method::GET,
            "/hsm/v2/Inventory/HardwareByFRU/{fruid}",
            "smd",
            Token,
            Api,
            "One FRU",
            fru_get,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/Inventory/HardwareByFRU/{fruid}",
            "smd",
            Token,
            Api,
            "Delete one FRU",
            fru_delete,
        ),
        route(
            Method::GET,
            "/hsm/v2/Inventory/HardwareByFRU/History",
            "smd",
            Token,
            Api,
            "Hardware history of every FRU",
            hist_all_by_fru,
        ),
        route(
            Method::GET,
            "/hsm/v2/Inventory/HardwareByFRU/History/{fruid}",
            "smd",
            Token,
            Api,
            "Hardware history of one FRU",
            hist_by_fru,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/Inventory/HardwareByFRU/History/{fruid}",
            "smd",
            Token,
            Api,
            "Delete one FRU's hardware history",
            hist_delete_fru,
        ),
    ]
}

fn pairs(q: &QueryPairs) -> impl Fn(&str) -> Vec<String> + '_ {
    |k: &str| {
        let mut v = q.all(k);
        v.extend(q.all(&format!("{k}[]")));
        v
    }
}

async fn list(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let f = Filter::from_query(pairs(&q))?;
    let snap = st.store.snapshot();
    let out: Vec<hwinv::LocView> = snap
        .hw_locs
        .values()
        .map(Arc::as_ref)
        .filter(|l| f.matches_loc(&snap, l))
        .map(|l| hwinv::LocView(&snap, l))
        .collect();
    Ok(axum::Json(out).into_response())
}

async fn post(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let v: Value = decode_exact(&body)?;
    let locs = hwinv::decode_post(&v)?;
    let n = st.store.write(move |t| Ok(hwinv::post(t, &locs))).await?;
    Ok(message(format!("Created {n} entries")))
}

async fn delete_all(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st.store.write(|t| Ok(hwinv::delete_all_locs(t))).await?;
    deleted_all(n)
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = xname::normalize(&id).map_err(|_| ApiError::bad_request("Invalid xname"))?;
    let snap = st.store.snapshot();
    let l = snap
        .hw_locs
        .get(&id)
        .ok_or_else(|| ApiError::not_found("no such xname."))?;
    Ok(axum::Json(hwinv::loc_json(&snap, l)).into_response())
}

async fn delete_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.store.write(move |t| hwinv::delete_loc(t, &id)).await?;
    Ok(deleted(1))
}

async fn query(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let query = Query::parse(&raw, pairs(&q))?;
    let snap = st.store.snapshot();
    Ok(axum::Json(query.run(&snap, &raw)).into_response())
}

async fn fru_list(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let f = Filter::from_query(pairs(&q))?;
    let snap = st.store.snapshot();
    let out: Vec<hwinv::FruView> = snap
        .hw_frus
        .values()
        .filter(|x| f.matches_fru(x))
        .map(|x| hwinv::FruView(x))
        .collect();
    Ok(axum::Json(out).into_response())
}

async fn fru_get(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let f = snap
        .hw_frus
        .get(&id)
        .ok_or_else(|| ApiError::not_found("no such FRU ID."))?;
    Ok(axum::Json(hwinv::fru_json(f)).into_response())
}

async fn fru_delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.store.write(move |t| hwinv::delete_fru(t, &id)).await?;
    Ok(deleted(1))
}

async fn fru_delete_all(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st.store.write(|t| Ok(hwinv::delete_all_frus(t))).await?;
    deleted_all(n)
}

fn history(
    st: &AppState,
    q: &QueryPairs,
    by_fru: bool,
    one: Option<(String, String)>,
) -> Result<Response, ApiError> {
    let mut f = HistFilter::from_query(pairs(q))?;
    let snap = st.store.snapshot();
    match one {
        None => {
            let events = snap.hw_history.values().filter(|h| f.matches(h));
            Ok(axum::Json(hwinv::history_json(events, by_fru)).into_response())
        }
        Some((raw, id)) => {
            if by_fru {
                f.fru_ids = vec![id];
            } else {
                f.ids = vec![id];
            }
            let events: Vec<Value> = snap
                .hw_history
                .values()
                .filter(|h| f.matches(h))
                .map(|h| h.to_json())
                .collect();
            Ok(axum::Json(serde_json::json!({"ID": raw, "History": events})).into_response())
        }
    }
}

async fn hist_all_by_loc(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    history(&st, &q, false, None)
}

async fn hist_all_by_fru(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    history(&st, &q, true, None)
}

async fn hist_by_loc(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let id = xname::normalize(&raw).map_err(|_| ApiError::bad_request("Invalid xname"))?;
    history(&st, &q, false, Some((raw, id)))
}

async fn hist_by_fru(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    if raw.trim().is_empty() {
        return Err(ApiError::bad_request("Invalid FRU ID"));
    }
    history(&st, &q, true, Some((raw.clone(), raw)))
}

async fn hist_delete_all(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st
        .store
        .write(|t| Ok(hwinv::delete_history(t, |_| true)))
        .await?;
    deleted_all(n)
}

async fn hist_delete_loc(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = xname::normalize(&raw).map_err(|_| ApiError::bad_request("Invalid xname"))?;
    let n = st
        .store
        .write(move |t| Ok(hwinv::delete_history(t, |h| h.id == id)))
        .await?;
    deleted_all(n)
}

async fn hist_delete_fru(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let n = st
        .store
        .write(move |t| Ok(hwinv::delete_history(t, |h| h.fru_id == id)))
        .await?;
    deleted_all(n)
}
