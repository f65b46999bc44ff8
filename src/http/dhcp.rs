//! `GET /dhcp/v1/leases`: what DHCP has handed out, from the stored lease
//! records, each classified against the live inventory (a reservation when
//! the MAC's interface carries the address, else a pool lease).

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use serde::Serialize;

use super::routes::{Access, Listeners, Route, route};
use super::state::AppState;
use crate::inventory::mac;

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::GET,
        "/dhcp/v1/leases",
        "dhcp",
        Access::Token,
        Listeners::Api,
        "DHCP leases, pool and reserved, in address order",
        leases,
    )]
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct LeaseView {
    pub ip: String,
    pub mac: String,
    /// `reserved` (inventory address) or `pool`.
    pub kind: &'static str,
    /// The component the MAC belongs to, if any.
    pub xname: String,
    /// RFC 3339; empty when the lease does not end.
    pub expires: String,
    pub expired: bool,
}

async fn leases(State(st): State<AppState>) -> Json<Vec<LeaseView>> {
    Json(lease_views(&st))
}

/// Every stored lease, classified.
pub fn lease_views(st: &AppState) -> Vec<LeaseView> {
    let snap = st.store.snapshot();
    let now = chrono::Utc::now();
    snap.leases
        .values()
        .map(|l| {
            let iface = mac::id_of(&l.mac)
                .ok()
                .and_then(|id| snap.interfaces.get(&id));
            let ip = l.ip.to_string();
            let reserved = iface.is_some_and(|i| i.ip_addresses.iter().any(|a| a.ip_address == ip));
            LeaseView {
                ip,
                mac: l.mac.clone(),
                kind: if reserved { "reserved" } else { "pool" },
                xname: iface.map(|i| i.component_id.clone()).unwrap_or_default(),
                expires: l
                    .expires
                    .map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                expired: l.expires.is_some_and(|e| e <= now),
            }
        })
        .collect()
}
