//! `GET /store/v1/status`: which backend keeps the inventory, the
//! generation this head serves, and how far it trails the latest commit of
//! any head sharing the database; who holds which once-only work.

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use serde::Serialize;

use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::state::AppState;

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::GET,
        "/store/v1/status",
        "store",
        Access::Token,
        Listeners::Api,
        "The inventory store: backend, generation served, lag behind the shared database, and work lease holders",
        status,
    )]
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StoreStatus {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The generation of the snapshot this head serves.
    pub generation: u64,
    /// The latest generation committed by any head (shared store only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_generation: Option<u64>,
    /// Generations this head has yet to apply (0 on a single head).
    pub lag: u64,
    /// This head's ID (the holder its leases name).
    pub head: String,
    /// Leases on once-only work, by name: which head drives it and for how
    /// long without a renewal (on a single head, all its own).
    pub leases: Vec<crate::inventory::leases::LeaseRow>,
}

async fn status(State(st): State<AppState>) -> Result<Json<StoreStatus>, ApiError> {
    let latest = st.store.latest_generation().await?;
    let leases = st.store.leases();
    let held = leases.list().await?;
    // Read after the database, so a commit in between shows no false lag.
    let generation = st.store.snapshot().generation;
    Ok(Json(StoreStatus {
        backend: st.store.backend_kind(),
        generation,
        latest_generation: latest,
        lag: latest.map_or(0, |l| l.saturating_sub(generation)),
        head: leases.holder().to_string(),
        leases: held,
    }))
}
