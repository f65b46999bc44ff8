//! `GET /dns/v1/lookup` and `/dns/v1/zone`: what the DNS server answers,
//! from the same pure zone over the live snapshot (whether or not DNS is
//! switched on, so a configuration can be checked before it serves). The
//! head's names are answered with every address DNS serves.

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use serde::Serialize;

use super::json::QueryPairs;
use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::server::Local;
use super::state::AppState;
use crate::dns::settings::Settings;
use crate::dns::zone::{self, Answer, Arrival, QType, Question, Rr, Zone};

pub fn routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/dns/v1/lookup",
            "dns",
            Access::Token,
            Listeners::Api,
            "What the DNS server answers for a name or an address (PTR)",
            lookup,
        ),
        route(
            Method::GET,
            "/dns/v1/zone",
            "dns",
            Access::Token,
            Listeners::Api,
            "Every record the DNS server answers from the inventory and configuration",
            zone_view,
        ),
    ]
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct LookupView {
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    /// `NOERROR`, `NXDOMAIN`, or `FORWARDED` for a name outside the zones
    /// (sent to `dns.upstreams`, or refused when there are none).
    pub rcode: String,
    pub answers: Vec<Rr>,
    pub authority: Vec<Rr>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ZoneView {
    pub enabled: bool,
    pub zone: String,
    pub serial: u32,
    pub records: Vec<Rr>,
}

fn zone_and_arrival(
    st: &AppState,
    local: &Option<axum::Extension<Local>>,
) -> Result<(Zone, Arrival), ApiError> {
    let s = Settings::from_config(&st.config).map_err(ApiError::internal)?;
    let snap = st.store.snapshot();
    let z = Zone::build(&snap.model, snap.generation, &s);
    // A query reaches DNS on one of its interfaces; this request came in
    // elsewhere, so the head's names list every address DNS serves (or,
    // with DNS off, this request's own).
    let addrs = crate::dns::server::interface_addresses();
    let interface: Vec<std::net::IpAddr> = crate::dns::server::choose_interfaces(&s, &addrs)
        .iter()
        .flat_map(|n| addrs.get(n).into_iter().flatten().map(|net| net.addr))
        .collect();
    let at = if st.config.dns.enabled && !interface.is_empty() {
        Arrival {
            local: None,
            interface,
        }
    } else {
        Arrival {
            local: local.as_ref().map(|l| l.0.0.ip()),
            interface: Vec::new(),
        }
    };
    Ok((z, at))
}

async fn lookup(
    State(st): State<AppState>,
    local: Option<axum::Extension<Local>>,
    q: QueryPairs,
) -> Result<Json<LookupView>, ApiError> {
    let raw = q
        .first("name")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name is required (a name or an address)"))?;
    let (name, default) = match raw.parse::<std::net::IpAddr>() {
        Ok(ip) => (zone::reverse_name(ip), "PTR"),
        Err(_) => (
            crate::dns::settings::normalize(raw).map_err(ApiError::bad_request)?,
            "A",
        ),
    };
    let t = q.first("type").unwrap_or(default).to_ascii_uppercase();
    let qtype = QType::parse(&t).ok_or_else(|| {
        ApiError::bad_request(format!(
            "type {t:?} is not one of A, AAAA, CNAME, PTR, NS, SOA, TXT, ANY"
        ))
    })?;
    let (z, at) = zone_and_arrival(&st, &local)?;
    let (rcode, answers, authority) = match z.answer(
        &Question {
            name: name.clone(),
            qtype,
        },
        &at,
    ) {
        Answer::Zone {
            rcode,
            answers,
            authority,
        } => (
            match rcode {
                zone::Rcode::NoError => "NOERROR",
                zone::Rcode::NxDomain => "NXDOMAIN",
            },
            answers,
            authority,
        ),
        Answer::Elsewhere => ("FORWARDED", Vec::new(), Vec::new()),
    };
    Ok(Json(LookupView {
        name,
        qtype: t,
        rcode: rcode.into(),
        answers,
        authority,
    }))
}

async fn zone_view(
    State(st): State<AppState>,
    local: Option<axum::Extension<Local>>,
) -> Result<Json<ZoneView>, ApiError> {
    let (z, at) = zone_and_arrival(&st, &local)?;
    Ok(Json(ZoneView {
        enabled: st.config.dns.enabled,
        zone: z.apex().to_string(),
        serial: z.generation as u32,
        records: z.records(&at),
    }))
}
