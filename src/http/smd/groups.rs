//! `groups`, `partitions`, `memberships` and `Defaults/NodeMaps`.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{created, deleted, deleted_all, found, message};
use crate::http::AppState;
use crate::http::json::{ApiJson, QueryPairs};
use crate::http::problem::ApiError;
use crate::http::routes::{Access, Listeners, Route, route};
use crate::inventory::components::{Matcher, parse_xname};
use crate::inventory::groups::{self, GroupIn, MemberIn, MemberSetIn, NodeMapArrayIn, NodeMapIn};
use crate::inventory::model::{Group, Membership};
use crate::inventory::{DomainError, Model};

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::GET,
            "/hsm/v2/groups",
            "smd",
            Token,
            Api,
            "List groups (group, tag filters)",
            list,
        ),
        route(
            Method::POST,
            "/hsm/v2/groups",
            "smd",
            Token,
            Api,
            "Create a group",
            create,
        ),
        route(
            Method::GET,
            "/hsm/v2/groups/labels",
            "smd",
            Token,
            Api,
            "Group labels",
            labels,
        ),
        route(
            Method::GET,
            "/hsm/v2/groups/{label}",
            "smd",
            Token,
            Api,
            "One group",
            get_one,
        ),
        route(
            Method::PATCH,
            "/hsm/v2/groups/{label}",
            "smd",
            Token,
            Api,
            "Change description and tags",
            patch,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/groups/{label}",
            "smd",
            Token,
            Api,
            "Delete a group",
            delete,
        ),
        route(
            Method::GET,
            "/hsm/v2/groups/{label}/members",
            "smd",
            Token,
            Api,
            "Group members",
            members,
        ),
        route(
            Method::POST,
            "/hsm/v2/groups/{label}/members",
            "smd",
            Token,
            Api,
            "Add a member",
            add_member,
        ),
        route(
            Method::PUT,
            "/hsm/v2/groups/{label}/members",
            "smd",
            Token,
            Api,
            "Replace the member set",
            set_members,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/groups/{label}/members/{xname}",
            "smd",
            Token,
            Api,
            "Remove a member",
            remove_member,
        ),
        route(
            Method::GET,
            "/hsm/v2/partitions",
            "smd",
            Token,
            Api,
            "List partitions",
            list_partitions,
        ),
        route(
            Method::POST,
            "/hsm/v2/partitions",
            "smd",
            Token,
            Api,
            "Create a partition",
            create_partition,
        ),
        route(
            Method::GET,
            "/hsm/v2/partitions/names",
            "smd",
            Token,
            Api,
            "Partition names",
            partition_names,
        ),
        route(
            Method::GET,
            "/hsm/v2/partitions/{name}",
            "smd",
            Token,
            Api,
            "One partition",
            get_partition,
        ),
        route(
            Method::PATCH,
            "/hsm/v2/partitions/{name}",
            "smd",
            Token,
            Api,
            "Change description and tags",
            patch_partition,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/partitions/{name}",
            "smd",
            Token,
            Api,
            "Delete a partition",
            delete_partition,
        ),
        route(
            Method::GET,
            "/hsm/v2/partitions/{name}/members",
            "smd",
            Token,
            Api,
            "Partition members",
            partition_members,
        ),
        route(
            Method::POST,
            "/hsm/v2/partitions/{name}/members",
            "smd",
            Token,
            Api,
            "Add a partition member",
            add_partition_member,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/partitions/{name}/members/{xname}",
            "smd",
            Token,
            Api,
            "Remove a partition member",
            remove_partition_member,
        ),
        route(
            Method::GET,
            "/hsm/v2/memberships",
            "smd",
            Token,
            Api,
            "Every component's groups and partition",
            memberships,
        ),
        route(
            Method::GET,
            "/hsm/v2/memberships/{xname}",
            "smd",
            Token,
            Api,
            "One component's groups and partition",
            membership,
        ),
        route(
            Method::GET,
            "/hsm/v2/Defaults/NodeMaps",
            "smd",
            Token,
            Api,
            "NID and role defaults for new nodes",
            node_maps,
        ),
        route(
            Method::POST,
            "/hsm/v2/Defaults/NodeMaps",
            "smd",
            Token,
            Api,
            "Add node maps",
            post_node_maps,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/Defaults/NodeMaps",
            "smd",
            Token,
            Api,
            "Delete all node maps",
            delete_node_maps,
        ),
        route(
            Method::GET,
            "/hsm/v2/Defaults/NodeMaps/{xname}",
            "smd",
            Token,
            Api,
            "One node map",
            node_map,
        ),
        route(
            Method::PUT,
            "/hsm/v2/Defaults/NodeMaps/{xname}",
            "smd",
            Token,
            Api,
            "Create or replace a node map",
            put_node_map,
        ),
        route(
            Method::DELETE,
            "/hsm/v2/Defaults/NodeMaps/{xname}",
            "smd",
            Token,
            Api,
            "Delete a node map",
            delete_node_map,
        ),
    ]
}

fn group_json(g: &Group) -> serde_json::Value {
    serde_json::to_value(g).unwrap_or_default()
}

async fn list(State(st): State<AppState>, q: QueryPairs) -> Response {
    let label = Matcher::new(q.all("group"));
    let tag = Matcher::new(q.all("tag"));
    let snap = st.store.snapshot();
    let out: Vec<_> = snap
        .groups
        .values()
        .filter(|g| label.matches(Some(&g.label)))
        .filter(|g| tag.is_empty() || g.tags.iter().any(|t| tag.matches(Some(t))))
        .map(group_json)
        .collect();
    axum::Json(out).into_response()
}

async fn create(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<GroupIn>,
) -> Result<Response, ApiError> {
    let label = st
        .store
        .write(move |t| groups::create_group(t, &body))
        .await?;
    Ok(created(
        &[format!("/hsm/v2/groups/{label}")],
        "/hsm/v2/groups",
    ))
}

async fn labels(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    axum::Json(snap.groups.keys().cloned().collect::<Vec<_>>()).into_response()
}

async fn get_one(
    State(st): State<AppState>,
    Path(label): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let mut g = groups::get_group(&snap, &label)?.clone();
    // `partition=` narrows the members to one partition, as upstream.
    if let Some(p) = q.first("partition") {
        let p = groups::get_partition(&snap, p)?;
        g.members.ids.retain(|m| p.members.ids.contains(m));
    }
    Ok(axum::Json(group_json(&g)).into_response())
}

async fn patch(
    State(st): State<AppState>,
    Path(label): Path<String>,
    ApiJson(body): ApiJson<GroupIn>,
) -> Result<axum::http::StatusCode, ApiError> {
    st.store
        .write(move |t| groups::patch_group(t, &label, &body))
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn delete(
    State(st): State<AppState>,
    Path(label): Path<String>,
) -> Result<Response, ApiError> {
    st.store
        .write(move |t| groups::delete_group(t, &label))
        .await?;
    Ok(deleted(1))
}

async fn members(
    State(st): State<AppState>,
    Path(label): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let mut m = groups::get_group(&snap, &label)?.members.clone();
    // `partition=` narrows the members to one partition, as upstream.
    if let Some(p) = q.first("partition") {
        let p = groups::get_partition(&snap, p)?;
        m.ids.retain(|id| p.members.ids.contains(id));
    }
    Ok(axum::Json(m).into_response())
}

async fn add_member(
    State(st): State<AppState>,
    Path(label): Path<String>,
    ApiJson(body): ApiJson<MemberIn>,
) -> Result<Response, ApiError> {
    let l = groups::parse_label(&label)?;
    let id = st
        .store
        .write(move |t| groups::add_member(t, &label, &body))
        .await?;
    Ok(created(
        &[format!("/hsm/v2/groups/{l}/members/{id}")],
        &format!("/hsm/v2/groups/{l}/members"),
    ))
}

async fn set_members(
    State(st): State<AppState>,
    Path(label): Path<String>,
    ApiJson(body): ApiJson<MemberSetIn>,
) -> Result<Response, ApiError> {
    let l = groups::parse_label(&label)?;
    st.store
        .write(move |t| groups::set_members(t, &label, &body))
        .await?;
    Ok(created(
        &[format!("/hsm/v2/groups/{l}/members")],
        &format!("/hsm/v2/groups/{l}/members"),
    ))
}

async fn remove_member(
    State(st): State<AppState>,
    Path((label, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.store
        .write(move |t| groups::remove_member(t, &label, &id))
        .await?;
    Ok(deleted(1))
}

async fn list_partitions(State(st): State<AppState>, q: QueryPairs) -> Response {
    let name = Matcher::new(q.all("partition"));
    let tag = Matcher::new(q.all("tag"));
    let snap = st.store.snapshot();
    let out: Vec<_> = snap
        .partitions
        .values()
        .filter(|p| name.matches(Some(&p.name)))
        .filter(|p| tag.is_empty() || p.tags.iter().any(|t| tag.matches(Some(t))))
        .cloned()
        .collect();
    axum::Json(out).into_response()
}

async fn create_partition(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<GroupIn>,
) -> Result<Response, ApiError> {
    let name = st
        .store
        .write(move |t| groups::create_partition(t, &body))
        .await?;
    Ok(created(
        &[format!("/hsm/v2/partitions/{name}")],
        "/hsm/v2/partitions",
    ))
}

async fn partition_names(State(st): State<AppState>) -> Response {
    axum::Json(
        st.store
            .snapshot()
            .partitions
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn get_partition(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    Ok(axum::Json(groups::get_partition(&snap, &name)?).into_response())
}

async fn patch_partition(
    State(st): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<GroupIn>,
) -> Result<axum::http::StatusCode, ApiError> {
    st.store
        .write(move |t| groups::patch_partition(t, &name, &body))
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn delete_partition(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    st.store
        .write(move |t| groups::delete_partition(t, &name))
        .await?;
    Ok(deleted(1))
}

async fn partition_members(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    Ok(axum::Json(&groups::get_partition(&snap, &name)?.members).into_response())
}

async fn add_partition_member(
    State(st): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<MemberIn>,
) -> Result<Response, ApiError> {
    let n = groups::parse_partition_name(&name)?;
    let missing = format!("No such partition: {n}");
    let id = st
        .store
        .write(move |t| groups::add_partition_member(t, &name, &body))
        .await
        .map_err(|e| match ApiError::from(e) {
            // Upstream's words here, which its tests compare.
            a if a.status == axum::http::StatusCode::NOT_FOUND
                && a.detail == "no such partition." =>
            {
                ApiError::not_found(missing)
            }
            a => a,
        })?;
    Ok(created(
        &[format!("/hsm/v2/partitions/{n}/members/{id}")],
        &format!("/hsm/v2/partitions/{n}/members"),
    ))
}

async fn remove_partition_member(
    State(st): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.store
        .write(move |t| groups::remove_partition_member(t, &name, &id))
        .await?;
    Ok(deleted(1))
}

fn membership_of(m: &Model, id: &str) -> Membership {
    Membership {
        id: id.to_string(),
        group_labels: m.groups_of(id).iter().map(|g| g.label.clone()).collect(),
        partition_name: m
            .partition_of(id)
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    }
}

async fn memberships(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    let out: Vec<Membership> = snap
        .components
        .keys()
        .map(|id| membership_of(&snap, id))
        .collect();
    axum::Json(out).into_response()
}

async fn membership(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id)?;
    let snap = st.store.snapshot();
    if !snap.components.contains_key(&id) {
        return Err(ApiError::not_found(format!("no component {id}")));
    }
    Ok(axum::Json(membership_of(&snap, &id)).into_response())
}

async fn node_maps(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    axum::Json(json!({"NodeMaps": snap.node_maps.values().collect::<Vec<_>>()})).into_response()
}

async fn post_node_maps(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<NodeMapArrayIn>,
) -> Result<Response, ApiError> {
    let maps = body
        .nodemaps
        .iter()
        .enumerate()
        .map(|(i, m)| {
            groups::validate_node_map(m, None).map_err(|e| match e {
                // Upstream's prefix, which its tests compare.
                DomainError::Invalid(m) => {
                    DomainError::Invalid(format!("couldn't validate map data at idx {i}: {m}"))
                }
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = maps.len();
    st.store
        .write(move |t| groups::put_node_maps(t, maps))
        .await?;
    Ok(message(format!("Created or modified {n} entries")))
}

async fn delete_node_maps(State(st): State<AppState>) -> Result<Response, ApiError> {
    let n = st
        .store
        .write(|t| {
            let ids: Vec<String> = t.model().node_maps.keys().cloned().collect();
            for id in &ids {
                t.delete_node_map(id);
            }
            Ok(ids.len())
        })
        .await?;
    deleted_all(n)
}

async fn node_map(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id)?;
    found(st.store.snapshot().node_maps.get(&id), || {
        "no such xname.".into()
    })
}

async fn put_node_map(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NodeMapIn>,
) -> Result<Response, ApiError> {
    // Upstream's prefix (sic), which its tests compare.
    let m = groups::validate_node_map(&body, Some(&id)).map_err(|e| match e {
        DomainError::Invalid(m) => {
            DomainError::Invalid(format!("couldn't validate endpoint data: {m}"))
        }
        other => other,
    })?;
    let out = m.clone();
    st.store
        .write(move |t| groups::put_node_maps(t, vec![m]))
        .await?;
    Ok(axum::Json(out).into_response())
}

async fn delete_node_map(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, _) = parse_xname(&id)?;
    st.store
        .write(move |t| {
            t.delete_node_map(&id)
                .map(|_| ())
                .ok_or_else(|| DomainError::NotFound("no such xname.".into()))
        })
        .await?;
    Ok(deleted(1))
}
