//! SMD's rules for components: validation, defaults, NIDs, state changes,
//! filters.
//!
//! Pure functions over the model; the HTTP layer decodes and encodes around
//! them, and the CLI import reuses them, so every path that creates a
//! component applies the same rules.

use std::sync::Arc;

use serde::Deserialize;

use super::enums::{self, HmsType};
use super::model::Component;
use super::store::{Model, Txn};
use super::{DomainError, xname};

/// A component as a client sends it; keys are matched case-insensitively.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ComponentIn {
    #[schemars(rename = "ID")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    #[schemars(rename = "Type")]
    pub kind: Option<String>,
    #[schemars(rename = "State")]
    pub state: Option<String>,
    #[schemars(rename = "Flag")]
    pub flag: Option<String>,
    #[schemars(rename = "Enabled")]
    pub enabled: Option<bool>,
    #[schemars(rename = "SoftwareStatus")]
    pub softwarestatus: Option<String>,
    #[schemars(rename = "Role")]
    pub role: Option<String>,
    #[schemars(rename = "SubRole")]
    pub subrole: Option<String>,
    #[schemars(rename = "NID")]
    pub nid: Option<i64>,
    #[schemars(rename = "Subtype")]
    pub subtype: Option<String>,
    #[schemars(rename = "NetType")]
    pub nettype: Option<String>,
    #[schemars(rename = "Arch")]
    pub arch: Option<String>,
    #[schemars(rename = "Class")]
    pub class: Option<String>,
    #[schemars(rename = "ReservationDisabled")]
    pub reservationdisabled: Option<bool>,
    #[schemars(rename = "Locked")]
    pub locked: Option<bool>,
}

/// `POST State/Components` and `DELETE`-by-list bodies.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ComponentArrayIn {
    #[schemars(rename = "Components")]
    pub components: Vec<ComponentIn>,
    #[schemars(rename = "Force")]
    pub force: bool,
}

/// `PUT State/Components/{xname}` body.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ComponentPutIn {
    #[schemars(rename = "Component")]
    pub component: Option<ComponentIn>,
    #[schemars(rename = "Force")]
    pub force: bool,
}

/// Normalises an xname or says why not (400).
pub fn parse_xname(s: &str) -> Result<(String, HmsType), DomainError> {
    xname::parse(s).map_err(|e| DomainError::Invalid(e.to_string()))
}

fn canon(
    value: Option<&str>,
    what: &str,
    f: impl Fn(&str) -> Option<&'static str>,
) -> Result<Option<String>, DomainError> {
    match value {
        None => Ok(None),
        Some(v) => f(v)
            .map(|c| Some(c.to_string()))
            // Upstream's wording.
            .ok_or_else(|| DomainError::Invalid(format!("{what} '{v}' is invalid"))),
    }
}

fn canon_role(
    value: Option<&str>,
    what: &str,
    f: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, DomainError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => f(v)
            .map(Some)
            .ok_or_else(|| DomainError::Invalid(format!("invalid {what} {v:?}"))),
    }
}

/// Checked, canonical values of an input component.
#[derive(Debug, Clone)]
pub struct ValidComponent {
    pub id: String,
    pub kind: HmsType,
    pub state: Option<String>,
    pub flag: Option<String>,
    pub enabled: Option<bool>,
    pub software_status: Option<String>,
    pub role: Option<String>,
    pub sub_role: Option<String>,
    pub nid: Option<i64>,
    pub subtype: Option<String>,
    pub net_type: Option<String>,
    pub arch: Option<String>,
    pub class: Option<String>,
    pub reservation_disabled: Option<bool>,
    pub locked: Option<bool>,
}

/// Validates every field: xname and its type, enumerations, NID range.
pub fn validate(input: &ComponentIn, require_state: bool) -> Result<ValidComponent, DomainError> {
    let raw_id = input
        .id
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| DomainError::Invalid("component ID is required".into()))?;
    let (id, derived) = parse_xname(raw_id)?;
    let kind = match input
        .kind
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => derived,
        Some(t) => {
            let given = HmsType::parse(t)
                .ok_or_else(|| DomainError::Invalid(format!("invalid component Type {t:?}")))?;
            if given != derived {
                return Err(DomainError::Invalid(format!(
                    "Type {} does not fit xname {id} (a {})",
                    given.as_str(),
                    derived.as_str()
                )));
            }
            given
        }
    };
    let state = canon(input.state.as_deref(), "state", enums::canonical_state)?;
    if require_state && state.is_none() {
        return Err(DomainError::Invalid(format!(
            "component {id}: State is required"
        )));
    }
    if let Some(nid) = input.nid
        && nid < 0
    {
        return Err(DomainError::Invalid(format!(
            "component {id}: NID {nid} is negative"
        )));
    }
    Ok(ValidComponent {
        kind,
        state,
        flag: canon(input.flag.as_deref(), "flag", enums::canonical_flag)?,
        enabled: input.enabled,
        software_status: input.softwarestatus.clone(),
        role: canon_role(input.role.as_deref(), "Role", enums::canonical_role)?,
        sub_role: canon_role(
            input.subrole.as_deref(),
            "SubRole",
            enums::canonical_sub_role,
        )?,
        nid: input.nid,
        subtype: input.subtype.clone().filter(|s| !s.is_empty()),
        net_type: canon(
            input.nettype.as_deref(),
            "netType",
            enums::canonical_net_type,
        )?,
        arch: canon(input.arch.as_deref(), "arch", enums::canonical_arch)?,
        class: canon(input.class.as_deref(), "class", enums::canonical_class)?,
        reservation_disabled: input.reservationdisabled,
        locked: input.locked,
        id,
    })
}

/// A new component from validated input, with upstream's defaults.
fn create(v: &ValidComponent, model: &Model) -> Component {
    let mut c = Component::new(v.id.clone(), v.kind.as_str().to_string());
    c.state = v.state.clone().unwrap_or_else(|| "Unknown".into());
    c.flag = v.flag.clone().unwrap_or_else(|| "OK".into());
    c.enabled = Some(v.enabled.unwrap_or(true));
    c.software_status = v.software_status.clone();
    // Nodes take their NodeMap's role, else Compute as upstream's discovery
    // does, so Role tags in boot parameters apply to them.
    let mapped_role = model
        .node_maps
        .get(&v.id)
        .map(|m| m.role.clone())
        .filter(|r| !r.is_empty());
    c.role = v
        .role
        .clone()
        .or(mapped_role)
        .or_else(|| (v.kind == HmsType::Node).then(|| "Compute".to_string()));
    c.sub_role = v.sub_role.clone();
    c.nid = v.nid;
    c.subtype = v.subtype.clone();
    c.net_type = Some(v.net_type.clone().unwrap_or_else(|| "Sling".into()));
    c.arch = Some(v.arch.clone().unwrap_or_else(|| "X86".into()));
    c.class = Some(v.class.clone().unwrap_or_else(|| "River".into()));
    c.reservation_disabled = v.reservation_disabled;
    c.locked = v.locked;
    c
}

/// Applies validated input to an existing component. State, Flag, Subtype,
/// NetType, Arch and Class change only with `force`, as upstream.
fn merge(old: &Component, v: &ValidComponent, force: bool, keep_nid: bool) -> Component {
    let mut c = old.clone();
    if force {
        if let Some(s) = &v.state {
            c.state = s.clone();
        }
        if let Some(f) = &v.flag {
            c.flag = f.clone();
        }
        if v.subtype.is_some() {
            c.subtype = v.subtype.clone();
        }
        if v.net_type.is_some() {
            c.net_type = v.net_type.clone();
        }
        if v.arch.is_some() {
            c.arch = v.arch.clone();
        }
        if v.class.is_some() {
            c.class = v.class.clone();
        }
    }
    if v.enabled.is_some() {
        c.enabled = v.enabled;
    }
    if v.software_status.is_some() {
        c.software_status = v.software_status.clone();
    }
    if v.role.is_some() {
        c.role = v.role.clone();
    }
    if v.sub_role.is_some() {
        c.sub_role = v.sub_role.clone();
    }
    if v.nid.is_some() && !(keep_nid && old.nid.is_some()) {
        c.nid = v.nid;
    }
    if v.reservation_disabled.is_some() {
        c.reservation_disabled = v.reservation_disabled;
    }
    if v.locked.is_some() {
        c.locked = v.locked;
    }
    c
}

/// One entry per ID, in first-seen order: the last one wins, as if the batch
/// were applied in order.
fn last_per_id(batch: Vec<Component>) -> Vec<Component> {
    let mut order = Vec::new();
    let mut by_id = std::collections::HashMap::new();
    for c in batch {
        if !by_id.contains_key(&c.id) {
            order.push(c.id.clone());
        }
        by_id.insert(c.id.clone(), c);
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

/// Writes a batch of components whose NIDs must be unique over the final
/// state (so swaps inside one batch succeed). Nodes without a NID get their
/// NodeMap entry, else the next free number. Returns the IDs written.
pub fn put_all(txn: &mut Txn<'_>, batch: Vec<Component>) -> Result<Vec<String>, DomainError> {
    let mut batch = last_per_id(batch);

    // NIDs are checked against the inventory's NID index one lookup at a
    // time (a discovery writes a node or two per BMC into inventories of
    // thousands; copying the index would make each write O(inventory)).
    // A NID counts as taken when a component outside the batch holds it, or
    // when a batch member has claimed it.
    let in_batch: std::collections::HashSet<String> = batch.iter().map(|c| c.id.clone()).collect();
    let nids = &txn.model().nids;
    let held_outside = |nid: i64| nids.get(&nid).filter(|id| !in_batch.contains(*id));
    let mut claimed: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    for c in &batch {
        if let Some(nid) = c.nid {
            let other = claimed.get(&nid).or_else(|| held_outside(nid)).cloned();
            if let Some(other) = other {
                return Err(DomainError::Conflict(format!(
                    "NID {nid} is already used by {other}; cannot give it to {}",
                    c.id
                )));
            }
            claimed.insert(nid, c.id.clone());
        }
    }
    // One past the highest NID taken: scanning down from the top skips at
    // most the batch's own old NIDs.
    let top_outside = nids
        .iter()
        .rev()
        .find(|(_, id)| !in_batch.contains(*id))
        .map(|(n, _)| *n);
    let mut next = top_outside
        .into_iter()
        .chain(claimed.keys().copied())
        .max()
        .unwrap_or(0)
        + 1;
    let taken = |n: i64, claimed: &std::collections::HashMap<i64, String>| {
        claimed.contains_key(&n) || held_outside(n).is_some()
    };
    let node_maps = &txn.model().node_maps;
    for c in batch.iter_mut() {
        if c.nid.is_none() && c.is_node() {
            match node_maps.get(&c.id).filter(|m| !taken(m.nid, &claimed)) {
                Some(m) => {
                    c.nid = Some(m.nid);
                    if c.role.is_none() && !m.role.is_empty() {
                        c.role = Some(m.role.clone());
                    }
                    if c.sub_role.is_none() && !m.sub_role.is_empty() {
                        c.sub_role = Some(m.sub_role.clone());
                    }
                }
                None => {
                    while taken(next, &claimed) {
                        next += 1;
                    }
                    c.nid = Some(next);
                }
            }
            if let Some(nid) = c.nid {
                claimed.insert(nid, c.id.clone());
            }
        }
    }
    let ids = batch.iter().map(|c| c.id.clone()).collect();
    for c in batch {
        txn.put_component(c);
    }
    Ok(ids)
}

/// `POST State/Components`: upsert with defaults for new rows.
pub fn post(txn: &mut Txn<'_>, input: &ComponentArrayIn) -> Result<Vec<String>, DomainError> {
    let mut batch = Vec::with_capacity(input.components.len());
    for ci in &input.components {
        let v = validate(ci, true)?;
        let c = match txn.model().components.get(&v.id) {
            Some(old) => merge(old, &v, input.force, false),
            None => create(&v, txn.model()),
        };
        batch.push(c);
    }
    put_all(txn, batch)
}

/// `PUT State/Components/{xname}`: create if absent, keep an existing NID.
pub fn put_one(
    txn: &mut Txn<'_>,
    path_id: &str,
    input: &ComponentPutIn,
) -> Result<(), DomainError> {
    let (id, _) = parse_xname(path_id)?;
    let mut ci = input
        .component
        .clone()
        .ok_or_else(|| DomainError::Invalid("body must carry a Component".into()))?;
    if let Some(body_id) = ci.id.as_deref().filter(|s| !s.is_empty()) {
        let (body_id, _) = parse_xname(body_id)?;
        if body_id != id {
            return Err(DomainError::Invalid(format!(
                "body ID {body_id} does not match path {id}"
            )));
        }
    }
    ci.id = Some(id.clone());
    let c = match txn.model().components.get(&id) {
        Some(old) => {
            let v = validate(&ci, false)?;
            merge(old, &v, input.force, true)
        }
        None => create(&validate(&ci, true)?, txn.model()),
    };
    put_all(txn, vec![c]).map(|_| ())
}

/// Removes a component and its group and partition memberships.
pub fn delete(txn: &mut Txn<'_>, id: &str) -> Option<Arc<Component>> {
    let old = txn.delete_component(id)?;
    for mut g in txn
        .model()
        .groups_of(id)
        .into_iter()
        .cloned()
        .collect::<Vec<_>>()
    {
        g.members.ids.retain(|m| m != id);
        txn.put_group(g);
    }
    if let Some(mut p) = txn.model().partition_of(id).cloned() {
        p.members.ids.retain(|m| m != id);
        txn.put_partition(p);
    }
    Some(old)
}

/// The kinds of single-field PATCH upstream offers.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct PatchIn {
    #[schemars(rename = "State")]
    pub state: Option<String>,
    #[schemars(rename = "Flag")]
    pub flag: Option<String>,
    #[schemars(rename = "Force")]
    pub force: bool,
    #[schemars(rename = "Enabled")]
    pub enabled: Option<bool>,
    #[schemars(rename = "SoftwareStatus")]
    pub softwarestatus: Option<String>,
    #[schemars(rename = "Role")]
    pub role: Option<String>,
    #[schemars(rename = "SubRole")]
    pub subrole: Option<String>,
    #[schemars(rename = "NID")]
    pub nid: Option<i64>,
    #[schemars(rename = "ComponentIDs")]
    pub componentids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    StateData,
    FlagOnly,
    Enabled,
    SoftwareStatus,
    Role,
    Nid,
}

impl PatchKind {
    pub fn from_segment(s: &str) -> Option<PatchKind> {
        Some(match s {
            "StateData" => PatchKind::StateData,
            "FlagOnly" => PatchKind::FlagOnly,
            "Enabled" => PatchKind::Enabled,
            "SoftwareStatus" => PatchKind::SoftwareStatus,
            "Role" => PatchKind::Role,
            "NID" => PatchKind::Nid,
            _ => return None,
        })
    }
}

/// Applies one PATCH to one component. `Ok(None)` means a state change the
/// transition table refuses (a bulk PATCH skips those).
fn patched(
    old: &Component,
    kind: PatchKind,
    p: &PatchIn,
) -> Result<Option<Component>, DomainError> {
    let mut c = old.clone();
    match kind {
        PatchKind::StateData => {
            let s = p
                .state
                .as_deref()
                .ok_or_else(|| DomainError::Invalid("State is required".into()))?;
            let s = enums::canonical_state(s)
                .ok_or_else(|| DomainError::Invalid("Argument was not a valid HMS State".into()))?;
            if !p.force && !enums::transition_allowed(s, &old.state) {
                return Ok(None);
            }
            c.state = s.to_string();
            if let Some(f) = p.flag.as_deref() {
                c.flag = enums::canonical_flag(f)
                    .ok_or_else(|| {
                        DomainError::Invalid(
                            "a required argument did not match any valid input".into(),
                        )
                    })?
                    .to_string();
            }
        }
        PatchKind::FlagOnly => {
            let f = p
                .flag
                .as_deref()
                .ok_or_else(|| DomainError::Invalid("Flag is required".into()))?;
            c.flag = enums::canonical_flag(f)
                .ok_or_else(|| {
                    DomainError::Invalid("a required argument did not match any valid input".into())
                })?
                .to_string();
        }
        PatchKind::Enabled => {
            c.enabled = Some(
                p.enabled
                    .ok_or_else(|| DomainError::Invalid("Enabled is required".into()))?,
            );
        }
        PatchKind::SoftwareStatus => {
            c.software_status = Some(
                p.softwarestatus
                    .clone()
                    .ok_or_else(|| DomainError::Invalid("SoftwareStatus is required".into()))?,
            );
        }
        PatchKind::Role => {
            let r = p
                .role
                .as_deref()
                .ok_or_else(|| DomainError::Invalid("Role is required".into()))?;
            c.role = Some(
                enums::canonical_role(r)
                    .ok_or_else(|| DomainError::Invalid(format!("invalid Role {r:?}")))?,
            );
            c.sub_role = canon_role(p.subrole.as_deref(), "SubRole", enums::canonical_sub_role)?;
        }
        PatchKind::Nid => {
            let n = p
                .nid
                .ok_or_else(|| DomainError::Invalid("NID is required".into()))?;
            if n < 0 {
                return Err(DomainError::Invalid(format!("NID {n} is negative")));
            }
            c.nid = Some(n);
        }
    }
    Ok(Some(c))
}

/// `PATCH State/Components/{xname}/{kind}`.
pub fn patch_one(
    txn: &mut Txn<'_>,
    path_id: &str,
    kind: PatchKind,
    p: &PatchIn,
) -> Result<(), DomainError> {
    let (id, _) = parse_xname(path_id)?;
    let old = txn
        .model()
        .components
        .get(&id)
        .cloned()
        .ok_or_else(|| DomainError::NotFound(format!("no component {id}")))?;
    match patched(&old, kind, p)? {
        Some(c) => put_all(txn, vec![c]).map(|_| ()),
        None => Err(DomainError::Invalid(format!(
            "{id}: State {} cannot follow {} without Force",
            p.state.as_deref().unwrap_or(""),
            old.state
        ))),
    }
}

/// `PATCH State/Components/Bulk{kind}`: refused transitions are skipped.
pub fn patch_bulk(txn: &mut Txn<'_>, kind: PatchKind, p: &PatchIn) -> Result<(), DomainError> {
    let mut batch = Vec::new();
    for raw in &p.componentids {
        let (id, _) = parse_xname(raw)?;
        let old = txn
            .model()
            .components
            .get(&id)
            .cloned()
            .ok_or_else(|| DomainError::NotFound(format!("no component {id}")))?;
        if let Some(c) = patched(&old, kind, p)? {
            batch.push(c);
        }
    }
    put_all(txn, batch).map(|_| ())
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct BulkNidIn {
    #[schemars(rename = "Components")]
    pub components: Vec<ComponentIn>,
}

/// `PATCH State/Components/BulkNID`: NIDs unique over the final state.
pub fn bulk_nid(txn: &mut Txn<'_>, input: &BulkNidIn) -> Result<(), DomainError> {
    let mut batch = Vec::new();
    for ci in &input.components {
        let raw = ci.id.as_deref().unwrap_or("");
        let (id, _) = parse_xname(raw)?;
        let nid = ci
            .nid
            .ok_or_else(|| DomainError::Invalid(format!("{id}: NID is required")))?;
        if nid < 0 {
            return Err(DomainError::Invalid(format!("{id}: NID {nid} is negative")));
        }
        let mut c = txn
            .model()
            .component(&id)
            .cloned()
            .ok_or_else(|| DomainError::NotFound(format!("no component {id}")))?;
        c.nid = Some(nid);
        batch.push(c);
    }
    put_all(txn, batch).map(|_| ())
}

/// One filter key: values OR-ed, each may be negated with `!`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Matcher {
    pub fn new(values: Vec<String>) -> Matcher {
        let mut m = Matcher::default();
        for v in values {
            match v.strip_prefix('!') {
                Some(n) => m.exclude.push(n.to_lowercase()),
                None => m.include.push(v.to_lowercase()),
            }
        }
        m
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Case-insensitive; an absent value matches only an empty include list.
    pub fn matches(&self, value: Option<&str>) -> bool {
        if self.is_empty() {
            return true;
        }
        let v = value.unwrap_or("");
        (self.include.is_empty() || self.include.iter().any(|i| i.eq_ignore_ascii_case(v)))
            && !self.exclude.iter().any(|e| e.eq_ignore_ascii_case(v))
    }
}

/// Applies `f` (a normaliser) to filter values, keeping a leading `!`.
pub fn normalize_each(
    values: Vec<String>,
    f: impl Fn(&str) -> Result<String, DomainError>,
) -> Result<Vec<String>, DomainError> {
    values
        .into_iter()
        .map(|v| match v.strip_prefix('!') {
            Some(n) => f(n).map(|x| format!("!{x}")),
            None => f(&v),
        })
        .collect()
}

/// Filters of `GET State/Components`.
#[derive(Debug, Clone, Default)]
pub struct ComponentFilter {
    pub id: Matcher,
    pub kind: Matcher,
    pub state: Matcher,
    pub flag: Matcher,
    pub role: Matcher,
    pub sub_role: Matcher,
    pub enabled: Matcher,
    pub software_status: Matcher,
    pub subtype: Matcher,
    pub arch: Matcher,
    pub class: Matcher,
    pub nid: Matcher,
    pub nid_start: Option<i64>,
    pub nid_end: Option<i64>,
    pub partition: Matcher,
    pub group: Matcher,
}

impl ComponentFilter {
    /// Builds the filter; IDs are normalised so `X1000C0...` finds `x1000c0...`.
    pub fn from_query(get: impl Fn(&str) -> Vec<String>) -> Result<ComponentFilter, DomainError> {
        Self::build(get).map_err(|e| match e {
            // Upstream's prefix, which its tests and scripts match.
            DomainError::Invalid(m) => DomainError::Invalid(format!("bad query param: {m}")),
            other => other,
        })
    }

    fn build(get: impl Fn(&str) -> Vec<String>) -> Result<ComponentFilter, DomainError> {
        // Upstream's messages (its tests and scripts match them).
        let bad = |what: &str| DomainError::Invalid(format!("Argument was not a valid {what}"));
        let not_int = || DomainError::Invalid("a required argument was not an integer".into());
        let ids = normalize_each(get("id"), |v| parse_xname(v).map(|(x, _)| x))
            .map_err(|_| bad("xname ID"))?;
        let num = |k: &str| -> Result<Option<i64>, DomainError> {
            match get(k).first() {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| not_int()),
            }
        };
        // Values an enumerated field can never hold are refused, as
        // upstream does, rather than matching nothing.
        let check = |k: &str, ok: &dyn Fn(&str) -> bool, err: DomainError| {
            if get(k).iter().all(|v| ok(v.strip_prefix('!').unwrap_or(v))) {
                Ok(())
            } else {
                Err(err)
            }
        };
        check("type", &|v| HmsType::parse(v).is_some(), bad("HMS Type"))?;
        check(
            "state",
            &|v| enums::canonical_state(v).is_some(),
            bad("HMS State"),
        )?;
        check(
            "flag",
            &|v| enums::canonical_flag(v).is_some(),
            bad("HMS Flag"),
        )?;
        check(
            "role",
            &|v| enums::canonical_role(v).is_some(),
            bad("HMS Role"),
        )?;
        check(
            "subrole",
            &|v| enums::canonical_sub_role(v).is_some(),
            bad("HMS SubRole"),
        )?;
        check("enabled", &|v| parse_bool(v).is_some(), bad("boolean"))?;
        check(
            "arch",
            &|v| enums::canonical_arch(v).is_some(),
            bad("HMS Arch"),
        )?;
        check(
            "class",
            &|v| enums::canonical_class(v).is_some(),
            bad("HMS Class"),
        )?;
        check("nid", &|v| v.parse::<i64>().is_ok(), not_int())?;
        let enabled: Vec<String> = get("enabled")
            .into_iter()
            .map(|v| match v.strip_prefix('!') {
                Some(n) => format!("!{}", parse_bool(n).unwrap_or_default()),
                None => parse_bool(&v).unwrap_or_default().to_string(),
            })
            .collect();
        Ok(ComponentFilter {
            id: Matcher::new(ids),
            kind: Matcher::new(get("type")),
            state: Matcher::new(get("state")),
            flag: Matcher::new(get("flag")),
            role: Matcher::new(get("role")),
            sub_role: Matcher::new(get("subrole")),
            enabled: Matcher::new(enabled),
            software_status: Matcher::new(get("softwarestatus")),
            subtype: Matcher::new(get("subtype")),
            arch: Matcher::new(get("arch")),
            class: Matcher::new(get("class")),
            nid: Matcher::new(get("nid")),
            nid_start: num("nid_start")?,
            nid_end: num("nid_end")?,
            partition: Matcher::new(get("partition")),
            group: Matcher::new(get("group")),
        })
    }

    /// Refuses a role or sub-role no component carries and no built-in
    /// names: upstream accepts only its configured roles, and a typo should
    /// not read as "no such nodes".
    pub fn check_roles(&self, m: &Model) -> Result<(), DomainError> {
        fn role(c: &Component) -> Option<&str> {
            c.role.as_deref()
        }
        fn sub_role(c: &Component) -> Option<&str> {
            c.sub_role.as_deref()
        }
        type Of = fn(&Component) -> Option<&str>;
        let checks: [(&str, &Matcher, &[&str], Of); 2] = [
            ("HMS Role", &self.role, enums::ROLES, role),
            ("HMS SubRole", &self.sub_role, enums::SUB_ROLES, sub_role),
        ];
        for (what, matcher, builtin, of) in checks {
            for v in matcher.include.iter().chain(&matcher.exclude) {
                let known = builtin.iter().any(|b| b.eq_ignore_ascii_case(v))
                    || m.components
                        .values()
                        .any(|c| of(c).is_some_and(|r| r.eq_ignore_ascii_case(v)));
                if !known {
                    return Err(DomainError::Invalid(format!(
                        "bad query param: Argument was not a valid {what}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// True when no filter is set: everything matches.
    pub fn is_empty(&self) -> bool {
        [
            &self.id,
            &self.kind,
            &self.state,
            &self.flag,
            &self.role,
            &self.sub_role,
            &self.enabled,
            &self.software_status,
            &self.subtype,
            &self.arch,
            &self.class,
            &self.nid,
            &self.partition,
            &self.group,
        ]
        .iter()
        .all(|m| m.is_empty())
            && self.nid_start.is_none()
            && self.nid_end.is_none()
    }

    pub fn matches(&self, m: &Model, c: &Component) -> bool {
        let nid = (!self.nid.is_empty())
            .then(|| c.nid.map(|n| n.to_string()))
            .flatten();
        let enabled = (!self.enabled.is_empty())
            .then(|| c.enabled.map(|e| e.to_string()))
            .flatten();
        self.id.matches(Some(&c.id))
            && self.kind.matches(Some(&c.kind))
            && self.state.matches(Some(&c.state))
            && self.flag.matches(Some(&c.flag))
            && self.role.matches(c.role.as_deref())
            && self.sub_role.matches(c.sub_role.as_deref())
            && self.enabled.matches(enabled.as_deref())
            && self.software_status.matches(c.software_status.as_deref())
            && self.subtype.matches(c.subtype.as_deref())
            && self.arch.matches(c.arch.as_deref())
            && self.class.matches(c.class.as_deref())
            && self.nid.matches(nid.as_deref())
            && self.nid_start.is_none_or(|s| c.nid.is_some_and(|n| n >= s))
            && self.nid_end.is_none_or(|e| c.nid.is_some_and(|n| n <= e))
            && (self.partition.is_empty()
                || self
                    .partition
                    .matches(m.partition_of(&c.id).map(|p| p.name.as_str())))
            && (self.group.is_empty() || {
                let groups = m.groups_of(&c.id);
                if groups.is_empty() {
                    self.group.matches(None)
                } else {
                    groups.iter().any(|g| {
                        self.group.include.is_empty() || self.group.include.contains(&g.label)
                    }) && !groups.iter().any(|g| self.group.exclude.contains(&g.label))
                }
            })
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it (upstream's filters).
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses `1-10` / `12` NID ranges (`ByNID/Query`).
pub fn parse_nid_ranges(ranges: &[String]) -> Result<Vec<(i64, i64)>, DomainError> {
    ranges
        .iter()
        .map(|r| {
            let bad = || DomainError::Invalid(format!("invalid NID range {r:?}"));
            let (a, b) = match r.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                ),
                None => {
                    let n = r.trim().parse().map_err(|_| bad())?;
                    (n, n)
                }
            };
            if a > b { Err(bad()) } else { Ok((a, b)) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;

    /// `put_all`'s NID rules as first written, over a copy of the whole NID
    /// index: what the indexed version must still decide.
    fn put_all_by_copy(
        m: &crate::inventory::Model,
        batch: Vec<Component>,
    ) -> Result<Vec<Component>, String> {
        let mut batch = last_per_id(batch);
        let in_batch: std::collections::HashSet<String> =
            batch.iter().map(|c| c.id.clone()).collect();
        let mut taken: std::collections::HashMap<i64, String> = m
            .nids
            .iter()
            .filter(|(_, id)| !in_batch.contains(*id))
            .map(|(n, id)| (*n, id.clone()))
            .collect();
        for c in &batch {
            if let Some(nid) = c.nid
                && let Some(other) = taken.insert(nid, c.id.clone())
            {
                return Err(format!(
                    "NID {nid} is already used by {other}; cannot give it to {}",
                    c.id
                ));
            }
        }
        let mut next = taken.keys().copied().max().unwrap_or(0) + 1;
        for c in batch.iter_mut() {
            if c.nid.is_none() && c.is_node() {
                match m
                    .node_maps
                    .get(&c.id)
                    .filter(|x| !taken.contains_key(&x.nid))
                {
                    Some(x) => {
                        c.nid = Some(x.nid);
                        if c.role.is_none() && !x.role.is_empty() {
                            c.role = Some(x.role.clone());
                        }
                    }
                    None => {
                        while taken.contains_key(&next) {
                            next += 1;
                        }
                        c.nid = Some(next);
                    }
                }
                if let Some(nid) = c.nid {
                    taken.insert(nid, c.id.clone());
                }
            }
        }
        Ok(batch)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn nid_rules_match_the_copying_version(
            existing in proptest::collection::vec((0usize..10, proptest::option::of(1i64..12)), 0..8),
            maps in proptest::collection::vec((0usize..10, 1i64..12), 0..4),
            batch in proptest::collection::vec(
                (0usize..10, proptest::option::of(1i64..12), proptest::bool::ANY), 0..6),
        ) {
            let node = |k: usize, nid: Option<i64>, bmc: bool| {
                let (id, kind) = if bmc {
                    (format!("x0c0s{k}b0"), "NodeBMC")
                } else {
                    (format!("x0c0s{k}b0n0"), "Node")
                };
                let mut c = Component::new(id, kind.into());
                c.nid = if bmc { None } else { nid };
                c
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let store = Store::open_in_memory().unwrap();
                store
                    .write(move |t| {
                        for (k, nid) in existing {
                            // NIDs stay unique in a valid inventory.
                            let nid = nid.filter(|n| !t.model().nids.contains_key(n));
                            t.put_component(node(k, nid, false));
                        }
                        for (k, nid) in maps {
                            t.put_node_map(crate::inventory::model::NodeMap {
                                id: format!("x0c0s{k}b0n0"),
                                nid,
                                role: "Service".into(),
                                sub_role: String::new(),
                            });
                        }
                        Ok(())
                    })
                    .await
                    .unwrap();
                let batch: Vec<Component> =
                    batch.into_iter().map(|(k, nid, bmc)| node(k, nid, bmc)).collect();
                let want = put_all_by_copy(&store.snapshot(), batch.clone());
                let got = store
                    .write(move |t| {
                        let ids = put_all(t, batch)?;
                        Ok(ids
                            .iter()
                            .filter_map(|id| t.model().component(id).cloned())
                            .collect::<Vec<_>>())
                    })
                    .await
                    .map_err(|e| e.to_string());
                assert_eq!(got, want);
            });
        }
    }

    fn comp(id: &str, nid: Option<i64>) -> ComponentIn {
        ComponentIn {
            id: Some(id.into()),
            state: Some("Ready".into()),
            nid,
            ..Default::default()
        }
    }

    async fn post_ok(
        store: &Store,
        comps: Vec<ComponentIn>,
    ) -> Result<Vec<String>, crate::inventory::WriteError> {
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
    }

    #[tokio::test]
    async fn new_nodes_get_defaults_and_next_nid() {
        let store = Store::open_in_memory().unwrap();
        post_ok(
            &store,
            vec![comp("X1000C0S01B0N0", Some(5)), comp("x1000c0s2b0n0", None)],
        )
        .await
        .unwrap();
        let s = store.snapshot();
        let a = &s.components["x1000c0s1b0n0"];
        assert_eq!(
            (a.kind.as_str(), a.flag.as_str(), a.enabled),
            ("Node", "OK", Some(true))
        );
        assert_eq!(a.arch.as_deref(), Some("X86"));
        assert_eq!(s.components["x1000c0s2b0n0"].nid, Some(6));
    }

    #[tokio::test]
    async fn duplicate_nid_is_a_conflict_and_changes_nothing() {
        let store = Store::open_in_memory().unwrap();
        post_ok(&store, vec![comp("x0c0s0b0n0", Some(1))])
            .await
            .unwrap();
        let err = post_ok(&store, vec![comp("x0c0s1b0n0", Some(1))])
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            crate::inventory::WriteError::Domain(DomainError::Conflict(_))
        ));
        assert_eq!(store.snapshot().components.len(), 1);
    }

    #[tokio::test]
    async fn nid_swap_in_one_batch_succeeds() {
        let store = Store::open_in_memory().unwrap();
        post_ok(
            &store,
            vec![comp("x0c0s0b0n0", Some(1)), comp("x0c0s1b0n0", Some(2))],
        )
        .await
        .unwrap();
        store
            .write(|t| {
                bulk_nid(
                    t,
                    &BulkNidIn {
                        components: vec![comp("x0c0s0b0n0", Some(2)), comp("x0c0s1b0n0", Some(1))],
                    },
                )
            })
            .await
            .unwrap();
        let s = store.snapshot();
        assert_eq!(s.component_by_nid(1).unwrap().id, "x0c0s1b0n0");
        assert_eq!(s.component_by_nid(2).unwrap().id, "x0c0s0b0n0");
    }

    #[tokio::test]
    async fn state_needs_force_for_existing_rows() {
        let store = Store::open_in_memory().unwrap();
        post_ok(&store, vec![comp("x0c0s0b0n0", Some(1))])
            .await
            .unwrap();
        let mut c = comp("x0c0s0b0n0", None);
        c.state = Some("Off".into());
        c.role = Some("service".into());
        post_ok(&store, vec![c]).await.unwrap();
        let s = store.snapshot();
        let got = &s.components["x0c0s0b0n0"];
        assert_eq!(got.state, "Ready", "State changes only with Force");
        assert_eq!(got.role.as_deref(), Some("Service"));
        assert_eq!(got.nid, Some(1));
    }

    #[test]
    fn type_must_fit_xname() {
        let mut c = comp("x0c0s0b0n0", None);
        c.kind = Some("NodeBMC".into());
        assert!(validate(&c, true).is_err());
        c.kind = Some("node".into());
        assert_eq!(validate(&c, true).unwrap().kind, HmsType::Node);
        assert!(validate(&comp("nonsense", None), true).is_err());
    }

    #[test]
    fn matcher_negation_and_case() {
        let m = Matcher::new(vec!["Node".into(), "!nodebmc".into()]);
        assert!(m.matches(Some("node")));
        assert!(!m.matches(Some("NodeBMC")));
        let m = Matcher::new(vec!["!Off".into()]);
        assert!(m.matches(Some("On")) && !m.matches(Some("off")));
    }

    #[test]
    fn nid_ranges() {
        assert_eq!(
            parse_nid_ranges(&["1-3".into(), "7".into()]).unwrap(),
            vec![(1, 3), (7, 7)]
        );
        assert!(parse_nid_ranges(&["3-1".into()]).is_err());
    }
}
