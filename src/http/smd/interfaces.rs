//! `Inventory/EthernetInterfaces` and their IP address mappings.
//!
//! The collection GET is anonymous because DHCP and DNS plugins poll it
//! without a token, as they do against upstream; it is answered from the
//! in-memory snapshot so that polling costs no database work.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::{created_one, deleted, deleted_all, found};
use crate::http::AppState;
use crate::http::json::{ApiJson, QueryPairs};
use crate::http::problem::ApiError;
use crate::http::routes::{Access, Listeners, Route, route};
use crate::inventory::interfaces::{
    self, BASE, InterfaceFilter, InterfaceIn, InterfacePatchIn, IpIn, IpPatchIn,
};

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    const ONE: &str = "/hsm/v2/Inventory/EthernetInterfaces/{id}";
    const IPS: &str = "/hsm/v2/Inventory/EthernetInterfaces/{id}/IPAddresses";
    const IP: &str = "/hsm/v2/Inventory/EthernetInterfaces/{id}/IPAddresses/{ip}";
    vec![
        route(
            Method::GET,
            BASE,
            "smd",
            Anonymous,
            Api,
            "List Ethernet interfaces (filters)",
            list,
        ),
        route(
            Method::POST,
            BASE,
            "smd",
            Token,
            Api,
            "Create an Ethernet interface",
            create,
        ),
        route(
            Method::DELETE,
            BASE,
            "smd",
            Token,
            Api,
            "Delete all Ethernet interfaces",
            delete_all,
        ),
        route(
            Method::GET,
            ONE,
            "smd",
            Token,
            Api,
            "One Ethernet interface",
            get_one,
        ),
        route(
            Method::PATCH,
            ONE,
            "smd",
            Token,
            Api,
            "Change description, component and IP addresses",
            patch,
        ),
        route(
            Method::DELETE,
            ONE,
            "smd",
            Token,
            Api,
            "Delete an Ethernet interface",
            delete,
        ),
        route(
            Method::GET,
            IPS,
            "smd",
            Token,
            Api,
            "IP addresses of an Ethernet interface",
            list_ips,
        ),
        route(
            Method::POST,
            IPS,
            "smd",
            Token,
            Api,
            "Add an IP address to an Ethernet interface",
            add_ip,
        ),
        route(
            Method::PATCH,
            IP,
            "smd",
            Token,
            Api,
            "Change the network of an IP address",
            patch_ip,
        ),
        route(
            Method::DELETE,
            IP,
            "smd",
            Token,
            Api,
            "Remove an IP address from an Ethernet interface",
            delete_ip,
        ),
    ]
}

async fn list(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let filter = InterfaceFilter::from_query(|k| q.all(k))?;
    let snap = st.store.snapshot();
    Ok(axum::Json(filter.select(&snap)).into_response())
}

async fn create(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<InterfaceIn>,
) -> Result<Response, ApiError> {
    let id = st
        .store
        .write(move |t| interfaces::create(t, &body))
        .await?;
    Ok(created_one(&format!("{BASE}/{id}")))
}

async fn delete_all(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st.store.write(|t| Ok(interfaces::delete_all(t))).await?;
    deleted_all(n)
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = interfaces::parse_id(&id)?;
    // Upstream's words, which its tests compare.
    found(st.store.snapshot().interfaces.get(&id), || {
        format!("No such component ethernet interface: {id}")
    })
}

async fn patch(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: QueryPairs,
    ApiJson(body): ApiJson<InterfacePatchIn>,
) -> Result<Response, ApiError> {
    let move_ips = q.flag("move_macs");
    let i = st
        .store
        .write(move |t| interfaces::patch(t, &id, &body, move_ips))
        .await?;
    Ok(axum::Json(i).into_response())
}

async fn delete(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    st.store.write(move |t| interfaces::delete(t, &id)).await?;
    Ok(deleted(1))
}

async fn list_ips(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = interfaces::parse_id(&id)?;
    let snap = st.store.snapshot();
    let i = snap
        .interfaces
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no Ethernet interface {id}")))?;
    Ok(axum::Json(&i.ip_addresses).into_response())
}

async fn add_ip(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<IpIn>,
) -> Result<Response, ApiError> {
    let (id, ip) = st
        .store
        .write(move |t| {
            let ip = interfaces::add_ip(t, &id, &body)?;
            Ok((interfaces::parse_id(&id)?, ip))
        })
        .await?;
    Ok(created_one(&format!("{BASE}/{id}/IPAddresses/{ip}")))
}

async fn patch_ip(
    State(st): State<AppState>,
    Path((id, ip)): Path<(String, String)>,
    ApiJson(body): ApiJson<IpPatchIn>,
) -> Result<Response, ApiError> {
    let m = st
        .store
        .write(move |t| interfaces::patch_ip(t, &id, &ip, &body))
        .await?;
    Ok(axum::Json(m).into_response())
}

async fn delete_ip(
    State(st): State<AppState>,
    Path((id, ip)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.store
        .write(move |t| interfaces::delete_ip(t, &id, &ip))
        .await?;
    Ok(deleted(1))
}

#[cfg(test)]
mod tests {
    use axum::http::{StatusCode, header};
    use serde_json::json;

    use super::super::endpoints::tests::Harness;

    #[tokio::test]
    async fn interface_lifecycle_over_http() {
        let h = Harness::new().await;
        let base = "/hsm/v2/Inventory/EthernetInterfaces";
        let body = json!({"MACAddress": "52:54:00:BE:EF:01", "Description": "eth0",
            "ComponentID": "x1000c0s0b0n0", "IPAddresses": [{"IPAddress": "172.16.0.1"}]});

        let (s, _, _) = h.call("POST", base, Some(body.clone()), false).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, hd, b) = h.call("POST", base, Some(body.clone()), true).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b, json!({"URI": format!("{base}/525400beef01")}));
        assert_eq!(
            hd[header::LOCATION],
            format!("{base}/525400beef01").as_str()
        );
        let (s, _, _) = h.call("POST", base, Some(body), true).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let (s, _, _) = h
            .call("POST", base, Some(json!({"MACAddress": "zz"})), true)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        let (s, _, b) = h.call("GET", base, None, false).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b.as_array().unwrap().len(), 1);
        assert_eq!(b[0]["Type"], "Node");

        let one = format!("{base}/52-54-00-be-ef-01");
        let (s, _, b) = h.call("GET", &one, None, true).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["MACAddress"], "52:54:00:be:ef:01");
        let (s, _, _) = h.call("GET", &format!("{base}/nope"), None, true).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        let (s, _, b) = h
            .call(
                "PATCH",
                &one,
                Some(json!({"Description": "mgmt", "MACAddress": "ignored"})),
                true,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["Description"], "mgmt");

        let ips = format!("{one}/IPAddresses");
        let (s, _, b) = h
            .call(
                "POST",
                &ips,
                Some(json!({"IPAddress": "10.1.0.1", "Network": "hsn"})),
                true,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(
            b,
            json!({"URI": format!("{base}/525400beef01/IPAddresses/10.1.0.1")})
        );
        let (s, _, b) = h.call("GET", &ips, None, true).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            b,
            json!([{"IPAddress": "172.16.0.1"}, {"IPAddress": "10.1.0.1", "Network": "hsn"}])
        );
        let (s, _, b) = h
            .call(
                "PATCH",
                &format!("{ips}/172.16.0.1"),
                Some(json!({"Network": "mgmt"})),
                true,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, json!({"IPAddress": "172.16.0.1", "Network": "mgmt"}));
        let (s, _, _) = h
            .call(
                "GET",
                &format!("{base}?Network=MGMT&network=nothing"),
                None,
                false,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, b) = h
            .call("DELETE", &format!("{ips}/10.1.0.1"), None, true)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["message"], "deleted 1 entry");
        let (s, _, _) = h
            .call("DELETE", &format!("{ips}/10.1.0.1"), None, true)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        let (s, _, b) = h.call("DELETE", base, None, true).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["message"], "deleted 1 entries", "upstream's wording");
        let (s, _, b) = h.call("GET", base, None, false).await;
        assert_eq!((s, b), (StatusCode::OK, json!([])));
    }
}
