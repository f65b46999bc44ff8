//! Groups, partitions and node maps: SMD's rules for labels and membership.
//!
//! Membership is the one relation DHCP, boot and cloud-init all read (boot
//! parameters by group, `vendor_data.groups`, `dhcp-ignore`), so the rules
//! that keep it consistent live here once: members exist, a component sits
//! in at most one group per exclusive set and in at most one partition.

use serde::Deserialize;

use super::components::parse_xname;
use super::model::{Group, Members, NodeMap, Partition};
use super::store::{Model, Txn};
use super::{DomainError, enums};

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct MembersIn {
    pub ids: Vec<String>,
}

/// A group or partition as a client sends it.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct GroupIn {
    pub label: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    #[schemars(rename = "exclusiveGroup")]
    pub exclusivegroup: Option<String>,
    pub members: Option<MembersIn>,
}

/// `POST groups/{label}/members`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct MemberIn {
    pub id: Option<String>,
}

/// `PUT groups/{label}/members`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct MemberSetIn {
    pub group: Option<String>,
    pub ids: Vec<String>,
}

/// Lower-cases and checks a label against `^[-a-z0-9:._]+$`.
pub fn parse_label(s: &str) -> Result<String, DomainError> {
    let l = s.trim().to_lowercase();
    if l.is_empty()
        || !l
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-:._".contains(c))
    {
        return Err(DomainError::Invalid(format!(
            "invalid label {s:?}: use letters, digits and - : . _"
        )));
    }
    Ok(l)
}

/// Normalises member xnames, requires that they exist, drops repeats.
fn members(model: &Model, ids: &[String]) -> Result<Vec<String>, DomainError> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for raw in ids {
        let (id, _) = parse_xname(raw)?;
        if !model.components.contains_key(&id) {
            return Err(DomainError::Invalid(format!(
                "member {id} is not a component"
            )));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out.sort();
    Ok(out)
}

/// A component may sit in one group per non-empty exclusive set.
fn check_exclusive(model: &Model, group: &Group) -> Result<(), DomainError> {
    if group.exclusive_group.is_empty() {
        return Ok(());
    }
    for other in model.groups.values() {
        if other.label == group.label || other.exclusive_group != group.exclusive_group {
            continue;
        }
        if let Some(m) = group
            .members
            .ids
            .iter()
            .find(|m| other.members.ids.contains(m))
        {
            // Upstream's words, which its tests compare exactly.
            tracing::debug!(member = %m, group = %other.label, set = %group.exclusive_group,
                "exclusive group conflict");
            return Err(DomainError::Conflict(
                "operation would conflict with an existing member in another exclusive group."
                    .into(),
            ));
        }
    }
    Ok(())
}

fn tags(t: Option<&Vec<String>>) -> Vec<String> {
    t.map(|v| {
        v.iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// `POST groups`: 409 if the label exists; `members.ids` honoured.
pub fn create_group(txn: &mut Txn<'_>, input: &GroupIn) -> Result<String, DomainError> {
    let label = parse_label(input.label.as_deref().unwrap_or(""))?;
    if txn.model().groups.contains_key(&label) {
        return Err(DomainError::Conflict(format!(
            "group {label} already exists"
        )));
    }
    let g = Group {
        label: label.clone(),
        description: input.description.clone().unwrap_or_default(),
        tags: tags(input.tags.as_ref()),
        exclusive_group: match input.exclusivegroup.as_deref().map(str::trim) {
            Some(e) if !e.is_empty() => parse_label(e)?,
            _ => String::new(),
        },
        members: Members {
            ids: members(txn.model(), &input.members.clone().unwrap_or_default().ids)?,
        },
    };
    check_exclusive(txn.model(), &g)?;
    txn.put_group(g);
    Ok(label)
}

/// `PATCH groups/{label}`: description and tags; other fields are ignored.
pub fn patch_group(txn: &mut Txn<'_>, label: &str, input: &GroupIn) -> Result<(), DomainError> {
    let mut g = get_group(txn.model(), label)?.clone();
    if let Some(d) = &input.description {
        g.description = d.clone();
    }
    if input.tags.is_some() {
        g.tags = tags(input.tags.as_ref());
    }
    txn.put_group(g);
    Ok(())
}

pub fn get_group<'m>(model: &'m Model, label: &str) -> Result<&'m Group, DomainError> {
    let l = parse_label(label)?;
    model
        .groups
        .get(&l)
        .ok_or_else(|| DomainError::NotFound(format!("no group {l}")))
}

pub fn delete_group(txn: &mut Txn<'_>, label: &str) -> Result<(), DomainError> {
    let l = get_group(txn.model(), label)?.label.clone();
    txn.delete_group(&l);
    Ok(())
}

/// `POST groups/{label}/members`: 409 if already a member.
pub fn add_member(txn: &mut Txn<'_>, label: &str, input: &MemberIn) -> Result<String, DomainError> {
    let mut g = get_group(txn.model(), label)?.clone();
    let id = members(txn.model(), &[input.id.clone().unwrap_or_default()])?
        .pop()
        .ok_or_else(|| DomainError::Invalid("member id is required".into()))?;
    if g.members.ids.contains(&id) {
        return Err(DomainError::Conflict(format!(
            "{id} is already a member of {}",
            g.label
        )));
    }
    g.members.ids.push(id.clone());
    g.members.ids.sort();
    check_exclusive(txn.model(), &g)?;
    txn.put_group(g);
    Ok(id)
}

/// `PUT groups/{label}/members`: replaces the member set.
pub fn set_members(txn: &mut Txn<'_>, label: &str, input: &MemberSetIn) -> Result<(), DomainError> {
    let mut g = get_group(txn.model(), label)?.clone();
    if let Some(named) = input.group.as_deref().filter(|s| !s.is_empty())
        && parse_label(named)? != g.label
    {
        return Err(DomainError::Invalid(format!(
            "body names group {named}, path names {}",
            g.label
        )));
    }
    g.members.ids = members(txn.model(), &input.ids)?;
    check_exclusive(txn.model(), &g)?;
    txn.put_group(g);
    Ok(())
}

pub fn remove_member(txn: &mut Txn<'_>, label: &str, member: &str) -> Result<(), DomainError> {
    let mut g = get_group(txn.model(), label)?.clone();
    let (id, _) = parse_xname(member)?;
    let before = g.members.ids.len();
    g.members.ids.retain(|m| *m != id);
    if g.members.ids.len() == before {
        return Err(DomainError::NotFound(format!(
            "{id} is not a member of {}",
            g.label
        )));
    }
    txn.put_group(g);
    Ok(())
}

/// A component may sit in at most one partition.
fn check_partition(model: &Model, p: &Partition) -> Result<(), DomainError> {
    for m in &p.members.ids {
        if let Some(other) = model.partition_of(m).filter(|o| o.name != p.name) {
            return Err(DomainError::Conflict(format!(
                "{m} is already in partition {}",
                other.name
            )));
        }
    }
    Ok(())
}

/// Partition names are `p#` or `p#.#`.
pub fn parse_partition_name(s: &str) -> Result<String, DomainError> {
    let (name, kind) = parse_xname(s)?;
    if kind != enums::HmsType::Partition {
        return Err(DomainError::Invalid(format!(
            "{s:?} is not a partition name (p#)"
        )));
    }
    Ok(name)
}

pub fn create_partition(txn: &mut Txn<'_>, input: &GroupIn) -> Result<String, DomainError> {
    let name = parse_partition_name(input.name.as_deref().unwrap_or(""))?;
    if txn.model().partitions.contains_key(&name) {
        return Err(DomainError::Conflict(format!(
            "partition {name} already exists"
        )));
    }
    let p = Partition {
        name: name.clone(),
        description: input.description.clone().unwrap_or_default(),
        tags: tags(input.tags.as_ref()),
        members: Members {
            ids: members(txn.model(), &input.members.clone().unwrap_or_default().ids)?,
        },
    };
    check_partition(txn.model(), &p)?;
    txn.put_partition(p);
    Ok(name)
}

pub fn get_partition<'m>(model: &'m Model, name: &str) -> Result<&'m Partition, DomainError> {
    // A name no partition can have names no partition: 404, as upstream.
    let n = parse_partition_name(name)
        .map_err(|_| DomainError::NotFound("no such partition.".into()))?;
    model
        .partitions
        .get(&n)
        .ok_or_else(|| DomainError::NotFound("no such partition.".into()))
}

pub fn patch_partition(txn: &mut Txn<'_>, name: &str, input: &GroupIn) -> Result<(), DomainError> {
    let mut p = get_partition(txn.model(), name)?.clone();
    if let Some(d) = &input.description {
        p.description = d.clone();
    }
    if input.tags.is_some() {
        p.tags = tags(input.tags.as_ref());
    }
    txn.put_partition(p);
    Ok(())
}

pub fn delete_partition(txn: &mut Txn<'_>, name: &str) -> Result<(), DomainError> {
    let n = get_partition(txn.model(), name)?.name.clone();
    txn.delete_partition(&n);
    Ok(())
}

pub fn add_partition_member(
    txn: &mut Txn<'_>,
    name: &str,
    input: &MemberIn,
) -> Result<String, DomainError> {
    let mut p = get_partition(txn.model(), name)?.clone();
    let id = members(txn.model(), &[input.id.clone().unwrap_or_default()])?
        .pop()
        .ok_or_else(|| DomainError::Invalid("member id is required".into()))?;
    if p.members.ids.contains(&id) {
        return Err(DomainError::Conflict(format!(
            "{id} is already a member of {}",
            p.name
        )));
    }
    p.members.ids.push(id.clone());
    p.members.ids.sort();
    check_partition(txn.model(), &p)?;
    txn.put_partition(p);
    Ok(id)
}

pub fn remove_partition_member(
    txn: &mut Txn<'_>,
    name: &str,
    member: &str,
) -> Result<(), DomainError> {
    let mut p = get_partition(txn.model(), name)?.clone();
    let (id, _) =
        parse_xname(member).map_err(|_| DomainError::Invalid("invalid xname ID".into()))?;
    let before = p.members.ids.len();
    p.members.ids.retain(|m| *m != id);
    if p.members.ids.len() == before {
        return Err(DomainError::NotFound(format!(
            "{id} is not a member of {}",
            p.name
        )));
    }
    txn.put_partition(p);
    Ok(())
}

/// `Defaults/NodeMaps` entries as clients send them.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct NodeMapIn {
    #[schemars(rename = "ID")]
    pub id: Option<String>,
    #[schemars(rename = "NID")]
    pub nid: Option<i64>,
    #[schemars(rename = "Role")]
    pub role: Option<String>,
    #[schemars(rename = "SubRole")]
    pub subrole: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct NodeMapArrayIn {
    #[schemars(rename = "NodeMaps")]
    pub nodemaps: Vec<NodeMapIn>,
}

pub fn validate_node_map(input: &NodeMapIn, path_id: Option<&str>) -> Result<NodeMap, DomainError> {
    let raw = path_id.or(input.id.as_deref()).unwrap_or("");
    // Upstream's wording.
    let (id, kind) = parse_xname(raw)
        .ok()
        .filter(|(_, k)| k.is_node())
        .ok_or_else(|| {
            DomainError::Invalid(format!("xname ID '{raw}' is invalid or not a node"))
        })?;
    let _ = kind;
    let nid = input
        .nid
        .filter(|n| *n >= 0)
        .ok_or_else(|| DomainError::Invalid(format!("{id}: a non-negative NID is required")))?;
    let role = match input.role.as_deref().filter(|s| !s.is_empty()) {
        Some(r) => enums::canonical_role(r)
            .ok_or_else(|| DomainError::Invalid(format!("invalid Role {r:?}")))?,
        None => String::new(),
    };
    let sub_role = match input.subrole.as_deref().filter(|s| !s.is_empty()) {
        Some(r) => enums::canonical_sub_role(r)
            .ok_or_else(|| DomainError::Invalid(format!("invalid SubRole {r:?}")))?,
        None => String::new(),
    };
    Ok(NodeMap {
        id,
        nid,
        role,
        sub_role,
    })
}

/// Writes node maps; their NIDs must be unique among node maps.
pub fn put_node_maps(txn: &mut Txn<'_>, maps: Vec<NodeMap>) -> Result<(), DomainError> {
    let replaced: std::collections::HashSet<&str> = maps.iter().map(|m| m.id.as_str()).collect();
    let mut used: std::collections::HashMap<i64, String> = txn
        .model()
        .node_maps
        .values()
        .filter(|m| !replaced.contains(m.id.as_str()))
        .map(|m| (m.nid, m.id.clone()))
        .collect();
    for m in &maps {
        if let Some(other) = used.insert(m.nid, m.id.clone()) {
            return Err(DomainError::Conflict(format!(
                "NID {} is already mapped to {other}",
                m.nid
            )));
        }
    }
    for m in maps {
        txn.put_node_map(m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;
    use crate::inventory::components::{ComponentArrayIn, ComponentIn, post};

    async fn with_nodes(ids: &[&str]) -> Store {
        let store = Store::open_in_memory().unwrap();
        let comps: Vec<ComponentIn> = ids
            .iter()
            .map(|i| ComponentIn {
                id: Some(i.to_string()),
                state: Some("Ready".into()),
                ..Default::default()
            })
            .collect();
        store
            .write(move |t| {
                post(
                    t,
                    &ComponentArrayIn {
                        components: comps,
                        force: false,
                    },
                )
            })
            .await
            .unwrap();
        store
    }

    fn group(label: &str, excl: &str, ids: &[&str]) -> GroupIn {
        GroupIn {
            label: Some(label.into()),
            exclusivegroup: Some(excl.into()),
            members: Some(MembersIn {
                ids: ids.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exclusive_sets_hold_a_member_once() {
        let store = with_nodes(&["x0c0s0b0n0", "x0c0s1b0n0"]).await;
        store
            .write(|t| create_group(t, &group("Blue", "colour", &["x0c0s0b0n0"])))
            .await
            .unwrap();
        assert!(
            store.snapshot().groups.contains_key("blue"),
            "labels are lower-cased"
        );
        let err = store
            .write(|t| create_group(t, &group("red", "colour", &["x0c0s0b0n0"])))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            crate::inventory::WriteError::Domain(DomainError::Conflict(_))
        ));
        store
            .write(|t| create_group(t, &group("red", "colour", &["x0c0s1b0n0"])))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn members_must_exist() {
        let store = with_nodes(&["x0c0s0b0n0"]).await;
        let err = store
            .write(|t| create_group(t, &group("g", "", &["x0c0s9b0n0"])))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            crate::inventory::WriteError::Domain(DomainError::Invalid(_))
        ));
        assert!(store.snapshot().groups.is_empty());
    }

    #[test]
    fn labels() {
        assert_eq!(parse_label("Compute").unwrap(), "compute");
        assert!(parse_label("a b").is_err());
        assert!(parse_label("").is_err());
    }
}
