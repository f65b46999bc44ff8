//! SMD's hardware inventory: what sits in each location (HWInvByLoc), the
//! field-replaceable units themselves (HWInvByFRU), and the history of
//! FRUs appearing at and leaving locations (HWInvHist).
//!
//! Locations and FRUs are kept apart, as upstream keeps them, so a FRU
//! keeps its identity when it moves: its ID is built from what is printed
//! on it (type, manufacturer, part and serial number, upstream's FRUID
//! rule), not from where it sits. Location and FRU details are kept as the
//! JSON objects upstream stores (`<Type>LocationInfo`, `<Type>FRUInfo`),
//! so a client's POST comes back as it sent it.
//!
//! History: a collect (one BMC's crawl) compares what it found with what
//! that BMC reported before. A FRU never seen anywhere is `Added`; one seen
//! before that now sits somewhere new is `Detected` there; a FRU no longer
//! at a location is `Removed` from it. A DIMM swapped between two nodes
//! therefore reads, by FRU: Added at A, Removed from A, Detected at B.
//! A POST follows upstream's rule instead: `Detected` for every location,
//! unless the location's last event already says the same.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::DomainError;
use super::enums::HmsType;
use super::store::{Model, Txn};
use super::xname;

pub const ADDED: &str = "Added";
pub const REMOVED: &str = "Removed";
pub const SCANNED: &str = "Scanned";
pub const DETECTED: &str = "Detected";
pub const EVENT_TYPES: [&str; 4] = [ADDED, REMOVED, SCANNED, DETECTED];

/// A location and what (if anything) is in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HwLoc {
    pub id: String,
    /// The HMS type of `id`.
    pub kind: String,
    pub ordinal: i64,
    pub status: String,
    /// `<Type>LocationInfo`.
    #[serde(default)]
    pub location_info: Map<String, Value>,
    /// `""`: nothing is known to be in the location.
    #[serde(default)]
    pub fru_id: String,
    /// The BMC whose collect wrote it; `""` when posted through the API.
    #[serde(default)]
    pub source: String,
}

/// A field-replaceable unit, wherever it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HwFru {
    pub fru_id: String,
    pub kind: String,
    #[serde(default)]
    pub subtype: String,
    /// `<Type>FRUInfo`.
    #[serde(default)]
    pub fru_info: Map<String, Value>,
}

/// One history event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HwHist {
    /// Order of the event among all events (the store key).
    pub seq: u64,
    pub id: String,
    pub fru_id: String,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub event_type: String,
}

impl HwHist {
    /// Upstream's wire shape.
    pub fn to_json(&self) -> Value {
        json!({
            "ID": self.id,
            "FRUID": self.fru_id,
            "Timestamp": self.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "EventType": self.event_type,
        })
    }
}

/// The name a type's location and FRU details and discriminators carry
/// (`Processor` → `ProcessorLocationInfo`, `HWInvByLocProcessor`); `None`
/// for types the hardware inventory does not track.
pub fn prefix(kind: HmsType) -> Option<&'static str> {
    use HmsType::*;
    Some(match kind {
        Cabinet => "Cabinet",
        Chassis => "Chassis",
        ComputeModule => "ComputeModule",
        RouterModule => "RouterModule",
        NodeEnclosure => "NodeEnclosure",
        HSNBoard => "HSNBoard",
        MgmtSwitch => "MgmtSwitch",
        MgmtHLSwitch => "MgmtHLSwitch",
        CDUMgmtSwitch => "CDUMgmtSwitch",
        Node => "Node",
        Processor => "Processor",
        NodeAccel => "NodeAccel",
        Memory => "Memory",
        Drive => "Drive",
        NodeHsnNic => "NodeHsnNic",
        CabinetPDU => "PDU",
        CabinetPDUOutlet | CabinetPDUPowerConnector => "Outlet",
        CMMRectifier => "CMMRectifier",
        NodeEnclosurePowerSupply => "NodeEnclosurePowerSupply",
        NodeBMC => "NodeBMC",
        RouterBMC => "RouterBMC",
        NodeAccelRiser => "NodeAccelRiser",
        _ => return None,
    })
}

/// The array a type is listed in by `Query/{xname}`.
fn array_name(kind: HmsType) -> Option<&'static str> {
    use HmsType::*;
    Some(match kind {
        Cabinet => "Cabinets",
        Chassis => "Chassis",
        ComputeModule => "ComputeModules",
        RouterModule => "RouterModules",
        NodeEnclosure => "NodeEnclosures",
        HSNBoard => "HSNBoards",
        MgmtSwitch => "MgmtSwitches",
        MgmtHLSwitch => "MgmtHLSwitches",
        CDUMgmtSwitch => "CDUMgmtSwitches",
        Node => "Nodes",
        Processor => "Processors",
        NodeAccel => "NodeAccels",
        Memory => "Memory",
        Drive => "Drives",
        NodeHsnNic => "NodeHsnNics",
        CabinetPDU => "CabinetPDUs",
        CabinetPDUOutlet | CabinetPDUPowerConnector => "CabinetPDUPowerConnectors",
        CMMRectifier => "CMMRectifiers",
        NodeEnclosurePowerSupply => "NodeEnclosurePowerSupplies",
        NodeBMC => "NodeBMCs",
        RouterBMC => "RouterBMCs",
        NodeAccelRiser => "NodeAccelRisers",
        _ => return None,
    })
}

/// Types nested under their node by the `NestNodesOnly` format.
fn nests_under_node(kind: HmsType) -> bool {
    use HmsType::*;
    matches!(
        kind,
        Processor | NodeAccel | Memory | Drive | NodeHsnNic | NodeAccelRiser
    )
}

/// Upstream's FRU ID: `<Type>.<Manufacturer>.<PartNumber>.<SerialNumber>`
/// with everything but ASCII letters and digits dropped from the three
/// fields and empty ones skipped. Without a manufacturer or part number, or
/// without a serial number, the unit cannot be told from its siblings and
/// gets the untrackable `FRUIDfor<xname>`.
pub fn fru_id(kind: &str, id: &str, manufacturer: &str, part: &str, serial: &str) -> String {
    let clean = |s: &str| -> String { s.chars().filter(char::is_ascii_alphanumeric).collect() };
    let (m, p, s) = (clean(manufacturer), clean(part), clean(serial));
    if (m.is_empty() && p.is_empty()) || s.is_empty() {
        return format!("FRUIDfor{id}");
    }
    let parts: Vec<&str> = [kind, &m, &p, &s]
        .into_iter()
        .filter(|x| !x.is_empty())
        .collect();
    let out = parts.join(".");
    if out.len() > 255 {
        return format!("FRUIDfor{id}");
    }
    out
}

/// The FRU ID of a FRU's details, by upstream's per-type rule (power
/// supplies leave the part number out, risers name their `Producer`).
pub fn fru_id_of(kind: HmsType, id: &str, info: &Map<String, Value>) -> String {
    let s = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or("");
    let manufacturer = if kind == HmsType::NodeAccelRiser {
        s("Producer")
    } else {
        s("Manufacturer")
    };
    let part = match kind {
        HmsType::CMMRectifier | HmsType::NodeEnclosurePowerSupply => "",
        _ => s("PartNumber"),
    };
    fru_id(kind.as_str(), id, manufacturer, part, s("SerialNumber"))
}

/// One location as a collect or a POST hands it in: where, its details,
/// and the FRU in it (`None`: the location is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct LocIn {
    pub id: String,
    pub kind: HmsType,
    pub location_info: Map<String, Value>,
    pub fru: Option<FruIn>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FruIn {
    pub subtype: String,
    pub fru_info: Map<String, Value>,
}

fn ordinal(id: &str) -> i64 {
    let digits: String = id
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or(0)
}

impl LocIn {
    /// A location of a type the inventory tracks.
    pub fn new(
        raw_id: &str,
        location_info: Map<String, Value>,
        fru: Option<FruIn>,
    ) -> Option<LocIn> {
        let (id, kind) = xname::parse(raw_id).ok()?;
        prefix(kind)?;
        Some(LocIn {
            id,
            kind,
            location_info,
            fru,
        })
    }

    fn fru_id(&self) -> Option<String> {
        self.fru
            .as_ref()
            .map(|f| fru_id_of(self.kind, &self.id, &f.fru_info))
    }
}

/// Decodes `POST /Inventory/Hardware`'s `Hardware` array with upstream's
/// checks: a valid xname of a tracked type, its `<Type>LocationInfo`, a
/// `PopulatedFRU` with its `<Type>FRUInfo`. `Type`, `Ordinal`, `Status`,
/// the discriminators and `FRUID` are derived, whatever was sent.
pub fn decode_post(body: &Value) -> Result<Vec<LocIn>, DomainError> {
    let bad = |m: String| DomainError::Invalid(m);
    let list = match body.get("Hardware") {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => return Ok(Vec::new()),
        Some(_) => return Err(bad("Hardware must be an array".into())),
    };
    let mut out = Vec::with_capacity(list.len());
    for (k, item) in list.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(bad(format!("Hardware[{k}] is not an object")));
        };
        let raw = obj.get("ID").and_then(Value::as_str).unwrap_or("");
        let (id, kind) =
            xname::parse(raw).map_err(|_| bad(format!("Hardware[{k}]: invalid xname {raw:?}")))?;
        let p = prefix(kind).ok_or_else(|| {
            bad(format!(
                "Hardware[{k}]: {id} is a {}, which the hardware inventory does not track",
                kind.as_str()
            ))
        })?;
        let loc = match obj.get(&format!("{p}LocationInfo")) {
            Some(Value::Object(m)) => m.clone(),
            _ => {
                return Err(bad(format!(
                    "Hardware[{k}] ({id}): Component location info is empty ({p}LocationInfo)"
                )));
            }
        };
        let fru = match obj.get("PopulatedFRU") {
            Some(Value::Object(f)) => f,
            _ => {
                return Err(bad(format!(
                    "Hardware[{k}] ({id}): PopulatedFRU is missing"
                )));
            }
        };
        let info = match fru.get(&format!("{p}FRUInfo")) {
            Some(Value::Object(m)) => m.clone(),
            _ => {
                return Err(bad(format!(
                    "Hardware[{k}] ({id}): FRU info is empty ({p}FRUInfo)"
                )));
            }
        };
        let subtype = fru
            .get("Subtype")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        out.push(LocIn {
            id,
            kind,
            location_info: loc,
            fru: Some(FruIn {
                subtype,
                fru_info: info,
            }),
        });
    }
    Ok(out)
}

fn next_seq(m: &Model) -> u64 {
    m.hw_history.keys().next_back().map_or(1, |k| k + 1)
}

fn event(t: &mut Txn<'_>, id: &str, fru: &str, kind: &str) {
    let seq = next_seq(t.model());
    t.put_hw_hist(HwHist {
        seq,
        id: id.to_string(),
        fru_id: fru.to_string(),
        timestamp: t.now(),
        event_type: kind.to_string(),
    });
}

fn put_loc(t: &mut Txn<'_>, l: &LocIn, source: &str) -> String {
    let fru_id = l.fru_id().unwrap_or_default();
    if let Some(f) = &l.fru {
        let new = HwFru {
            fru_id: fru_id.clone(),
            kind: l.kind.as_str().to_string(),
            subtype: f.subtype.clone(),
            fru_info: f.fru_info.clone(),
        };
        if t.model().hw_frus.get(&fru_id).map(Arc::as_ref) != Some(&new) {
            t.put_hw_fru(new);
        }
    }
    let new = HwLoc {
        id: l.id.clone(),
        kind: l.kind.as_str().to_string(),
        ordinal: ordinal(&l.id),
        status: if l.fru.is_some() {
            "Populated"
        } else {
            "Empty"
        }
        .into(),
        location_info: l.location_info.clone(),
        fru_id: fru_id.clone(),
        source: source.to_string(),
    };
    if t.model().hw_locs.get(&l.id).map(Arc::as_ref) != Some(&new) {
        t.put_hw_loc(new);
    }
    fru_id
}

/// `POST /Inventory/Hardware`: creates or replaces each location and its
/// FRU, with upstream's history rule. Returns how many were written.
pub fn post(t: &mut Txn<'_>, locs: &[LocIn]) -> usize {
    for l in locs {
        let fru = put_loc(t, l, "");
        if fru.is_empty() {
            continue;
        }
        let last = t
            .model()
            .hw_history
            .values()
            .rev()
            .find(|h| h.id == l.id)
            .cloned();
        if last.is_none_or(|h| h.fru_id != fru || h.event_type != DETECTED) {
            event(t, &l.id, &fru, DETECTED);
        }
    }
    locs.len()
}

/// What a collect changed, for the BMC's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub locations: usize,
    pub added: usize,
    pub removed: usize,
    pub moved: usize,
}

/// Replaces what BMC `source` reported before with `locs` (one whole
/// crawl), recording Added/Removed/Detected events for the differences.
pub fn collect(t: &mut Txn<'_>, source: &str, locs: &[LocIn]) -> Collected {
    let mut out = Collected {
        locations: locs.len(),
        ..Default::default()
    };
    let before: BTreeMap<String, String> = t
        .model()
        .hw_locs
        .values()
        .filter(|l| l.source == source)
        .map(|l| (l.id.clone(), l.fru_id.clone()))
        .collect();
    let now: HashSet<&str> = locs.iter().map(|l| l.id.as_str()).collect();
    for (id, fru) in &before {
        if !now.contains(id.as_str()) {
            t.delete_hw_loc(id);
            if !fru.is_empty() {
                event(t, id, fru, REMOVED);
                out.removed += 1;
            }
        }
    }
    for l in locs {
        // What the location held, whoever wrote it.
        let old = t
            .model()
            .hw_locs
            .get(&l.id)
            .map(|o| o.fru_id.clone())
            .unwrap_or_default();
        let fru = put_loc(t, l, source);
        if fru == old {
            continue;
        }
        if !old.is_empty() {
            event(t, &l.id, &old, REMOVED);
            out.removed += 1;
        }
        if !fru.is_empty() {
            let known = t.model().hw_hist_frus.contains_key(&fru);
            if known {
                event(t, &l.id, &fru, DETECTED);
                out.moved += 1;
            } else {
                event(t, &l.id, &fru, ADDED);
                out.added += 1;
            }
        }
    }
    out
}

/// `DELETE /Inventory/Hardware/{xname}`: the location only; its FRU stays.
pub fn delete_loc(t: &mut Txn<'_>, raw: &str) -> Result<(), DomainError> {
    let id = xname::normalize(raw).map_err(|e| DomainError::Invalid(e.to_string()))?;
    t.delete_hw_loc(&id)
        .map(|_| ())
        .ok_or_else(|| DomainError::NotFound("no such xname.".into()))
}

pub fn delete_all_locs(t: &mut Txn<'_>) -> usize {
    let ids: Vec<String> = t.model().hw_locs.keys().cloned().collect();
    for id in &ids {
        t.delete_hw_loc(id);
    }
    ids.len()
}

/// `DELETE /Inventory/HardwareByFRU/{fruid}`: locations holding it are
/// left empty-handed.
pub fn delete_fru(t: &mut Txn<'_>, fru: &str) -> Result<(), DomainError> {
    if t.delete_hw_fru(fru).is_none() {
        return Err(DomainError::NotFound("no such FRU ID.".into()));
    }
    detach(t, &[fru.to_string()]);
    Ok(())
}

pub fn delete_all_frus(t: &mut Txn<'_>) -> usize {
    let ids: Vec<String> = t.model().hw_frus.keys().cloned().collect();
    for id in &ids {
        t.delete_hw_fru(id);
    }
    detach(t, &ids);
    ids.len()
}

fn detach(t: &mut Txn<'_>, frus: &[String]) {
    let gone: HashSet<&str> = frus.iter().map(String::as_str).collect();
    let holders: Vec<HwLoc> = t
        .model()
        .hw_locs
        .values()
        .filter(|l| gone.contains(l.fru_id.as_str()))
        .map(|l| (**l).clone())
        .collect();
    for mut l in holders {
        l.fru_id.clear();
        t.put_hw_loc(l);
    }
}

/// Deletes the history events `keep` refuses; returns how many.
pub fn delete_history(t: &mut Txn<'_>, doomed: impl Fn(&HwHist) -> bool) -> usize {
    let seqs: Vec<u64> = t
        .model()
        .hw_history
        .values()
        .filter(|h| doomed(h))
        .map(|h| h.seq)
        .collect();
    for s in &seqs {
        t.delete_hw_hist(*s);
    }
    seqs.len()
}

/// A location with its FRU in upstream's shape, serialised straight from
/// the snapshot (a list of 30,000 copies no record).
pub struct LocView<'a>(pub &'a Model, pub &'a HwLoc);

/// A FRU in upstream's shape, serialised from the snapshot.
pub struct FruView<'a>(pub &'a HwFru);

impl Serialize for LocView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (m, l) = (self.0, self.1);
        let p = HmsType::parse(&l.kind).and_then(prefix).unwrap_or("");
        let fru = m.hw_frus.get(&l.fru_id);
        let mut o = s.serialize_map(Some(6 + usize::from(fru.is_some())))?;
        o.serialize_entry("ID", &l.id)?;
        o.serialize_entry("Type", &l.kind)?;
        o.serialize_entry("Ordinal", &l.ordinal)?;
        o.serialize_entry("Status", &l.status)?;
        o.serialize_entry("HWInventoryByLocationType", &format!("HWInvByLoc{p}"))?;
        o.serialize_entry(&format!("{p}LocationInfo"), &l.location_info)?;
        if let Some(f) = fru {
            o.serialize_entry("PopulatedFRU", &FruView(f))?;
        }
        o.end()
    }
}

impl Serialize for FruView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let f = self.0;
        let p = HmsType::parse(&f.kind).and_then(prefix).unwrap_or("");
        let mut o = s.serialize_map(Some(5))?;
        o.serialize_entry("FRUID", &f.fru_id)?;
        o.serialize_entry("Type", &f.kind)?;
        o.serialize_entry("Subtype", &f.subtype)?;
        o.serialize_entry("HWInventoryByFRUType", &format!("HWInvByFRU{p}"))?;
        o.serialize_entry(&format!("{p}FRUInfo"), &f.fru_info)?;
        o.end()
    }
}

/// A location with its FRU, in upstream's shape.
pub fn loc_json(m: &Model, l: &HwLoc) -> Value {
    let kind = HmsType::parse(&l.kind);
    let p = kind.and_then(prefix).unwrap_or("");
    let mut o = Map::new();
    o.insert("ID".into(), json!(l.id));
    o.insert("Type".into(), json!(l.kind));
    o.insert("Ordinal".into(), json!(l.ordinal));
    o.insert("Status".into(), json!(l.status));
    o.insert(
        "HWInventoryByLocationType".into(),
        json!(format!("HWInvByLoc{p}")),
    );
    o.insert(
        format!("{p}LocationInfo"),
        Value::Object(l.location_info.clone()),
    );
    if let Some(f) = m.hw_frus.get(&l.fru_id) {
        o.insert("PopulatedFRU".into(), fru_json(f));
    }
    Value::Object(o)
}

/// A FRU in upstream's shape.
pub fn fru_json(f: &HwFru) -> Value {
    let p = HmsType::parse(&f.kind).and_then(prefix).unwrap_or("");
    let mut o = Map::new();
    o.insert("FRUID".into(), json!(f.fru_id));
    o.insert("Type".into(), json!(f.kind));
    o.insert("Subtype".into(), json!(f.subtype));
    o.insert(
        "HWInventoryByFRUType".into(),
        json!(format!("HWInvByFRU{p}")),
    );
    o.insert(format!("{p}FRUInfo"), Value::Object(f.fru_info.clone()));
    Value::Object(o)
}

/// The filters of `GET /Inventory/Hardware` and `HardwareByFRU`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub ids: Vec<String>,
    pub types: Vec<String>,
    pub manufacturers: Vec<String>,
    pub part_numbers: Vec<String>,
    pub serial_numbers: Vec<String>,
    pub fru_ids: Vec<String>,
    /// Members of these partitions only.
    pub partitions: Vec<String>,
}

impl Filter {
    /// From query pairs (`get(name)`: every value of a name, any case).
    pub fn from_query(get: impl Fn(&str) -> Vec<String>) -> Result<Filter, DomainError> {
        let mut f = Filter::default();
        for id in get("id") {
            f.ids.push(
                xname::normalize(&id).map_err(|_| DomainError::Invalid("Invalid xname".into()))?,
            );
        }
        for ty in get("type") {
            let t = HmsType::parse(&ty)
                .ok_or_else(|| DomainError::Invalid("Invalid HMS type".into()))?;
            f.types.push(t.as_str().to_string());
        }
        f.manufacturers = get("manufacturer");
        f.part_numbers = get("partnumber");
        f.serial_numbers = get("serialnumber");
        f.fru_ids = get("fruid");
        f.partitions = get("partition");
        Ok(f)
    }

    fn fru_matches(&self, f: Option<&HwFru>) -> bool {
        let field = |k: &str| -> &str {
            f.and_then(|f| f.fru_info.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let any = |wanted: &[String], have: &str| {
            wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(have))
        };
        any(&self.manufacturers, field("Manufacturer"))
            && any(&self.part_numbers, field("PartNumber"))
            && any(&self.serial_numbers, field("SerialNumber"))
            && (self.fru_ids.is_empty() || f.is_some_and(|f| self.fru_ids.contains(&f.fru_id)))
    }

    pub fn matches_loc(&self, m: &Model, l: &HwLoc) -> bool {
        (self.ids.is_empty() || self.ids.contains(&l.id))
            && (self.types.is_empty() || self.types.contains(&l.kind))
            && self.fru_matches(m.hw_frus.get(&l.fru_id).map(Arc::as_ref))
            && in_partitions(m, &self.partitions, &l.id)
    }

    pub fn matches_fru(&self, f: &HwFru) -> bool {
        (self.types.is_empty() || self.types.contains(&f.kind)) && self.fru_matches(Some(f))
    }
}

/// True if `id` or one of its ancestors is a member of every partition.
fn in_partitions(m: &Model, parts: &[String], id: &str) -> bool {
    parts.iter().all(|p| {
        m.partitions.get(p).is_some_and(|p| {
            p.members
                .ids
                .iter()
                .any(|member| xname::is_descendant_or_self(id, member))
        })
    })
}

/// `GET /Inventory/Hardware/Query/{xname}`'s options.
#[derive(Debug, Clone)]
pub struct Query {
    /// `None`: everything (`s0`, `all`).
    pub root: Option<String>,
    pub types: Vec<String>,
    pub partitions: Vec<String>,
    pub parents: bool,
    pub children: bool,
    /// `FullyFlat` or `NestNodesOnly`.
    pub format: &'static str,
}

impl Query {
    pub fn parse(raw: &str, get: impl Fn(&str) -> Vec<String>) -> Result<Query, DomainError> {
        let bad = |m: &str| DomainError::Invalid(m.to_string());
        let root = if raw.is_empty() || raw.eq_ignore_ascii_case("all") {
            None
        } else {
            let (id, kind) = xname::parse(raw).map_err(|_| bad("Invalid xname"))?;
            match kind {
                HmsType::System => None,
                _ => Some(id),
            }
        };
        let mut partitions = get("partition");
        if let Some(r) = &root
            && xname::type_of(r) == Some(HmsType::Partition)
        {
            partitions.push(r.clone());
        }
        let root = root.filter(|r| xname::type_of(r) != Some(HmsType::Partition));
        let mut types = Vec::new();
        for ty in get("type") {
            let t = HmsType::parse(&ty).ok_or_else(|| bad("Invalid HMS type"))?;
            types.push(t.as_str().to_string());
        }
        let boolean = |name: &str, what: &str| -> Result<Option<bool>, DomainError> {
            match get(name).first() {
                None => Ok(None),
                Some(v) => parse_bool(v).map(Some).ok_or_else(|| bad(what)),
            }
        };
        let parents = boolean("parents", "Invalid boolean for parents")?.unwrap_or(false);
        let children = boolean("children", "Invalid boolean for children")?.unwrap_or(!parents);
        let format = match get("format").first().map(|s| s.to_ascii_lowercase()) {
            None => "NestNodesOnly",
            Some(f) if f == "fullyflat" => "FullyFlat",
            Some(f) if f == "nestnodesonly" => "NestNodesOnly",
            // Hierarchical is not implemented upstream either.
            Some(_) => return Err(bad("Invalid format")),
        };
        Ok(Query {
            root,
            types,
            partitions,
            parents,
            children,
            format,
        })
    }

    fn selects(&self, m: &Model, l: &HwLoc) -> bool {
        let place = match &self.root {
            None => true,
            Some(r) => {
                l.id == *r
                    || (self.children && xname::is_descendant_or_self(&l.id, r))
                    || (self.parents && xname::is_descendant_or_self(r, &l.id))
            }
        };
        place
            && (self.types.is_empty() || self.types.contains(&l.kind))
            && in_partitions(m, &self.partitions, &l.id)
    }

    /// The SystemHWInventory document.
    pub fn run(&self, m: &Model, raw: &str) -> Value {
        let locs: Vec<&HwLoc> = m
            .hw_locs
            .values()
            .map(Arc::as_ref)
            .filter(|l| self.selects(m, l))
            .collect();
        let nest = self.format == "NestNodesOnly";
        let nodes: HashSet<&str> = locs
            .iter()
            .filter(|l| l.kind == HmsType::Node.as_str())
            .map(|l| l.id.as_str())
            .collect();
        // Node → array → children, for nesting.
        let mut nested: BTreeMap<String, BTreeMap<&'static str, Vec<Value>>> = BTreeMap::new();
        let mut top: BTreeMap<&'static str, Vec<(String, Value)>> = BTreeMap::new();
        for l in &locs {
            let Some(kind) = HmsType::parse(&l.kind) else {
                continue;
            };
            let Some(array) = array_name(kind) else {
                continue;
            };
            if nest
                && nests_under_node(kind)
                && let Some(node) = node_of(&l.id)
                && nodes.contains(node.as_str())
            {
                nested
                    .entry(node)
                    .or_default()
                    .entry(array)
                    .or_default()
                    .push(loc_json(m, l));
                continue;
            }
            top.entry(array)
                .or_default()
                .push((l.id.clone(), loc_json(m, l)));
        }
        let mut o = Map::new();
        o.insert("XName".into(), json!(raw));
        o.insert("Format".into(), json!(self.format));
        for (array, items) in top {
            let list: Vec<Value> = items
                .into_iter()
                .map(|(id, mut v)| {
                    if let (Some(children), Some(obj)) = (nested.remove(&id), v.as_object_mut()) {
                        for (k, c) in children {
                            obj.insert(k.into(), Value::Array(c));
                        }
                    }
                    v
                })
                .collect();
            o.insert(array.into(), Value::Array(list));
        }
        Value::Object(o)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

/// The node a node subcomponent belongs to.
fn node_of(id: &str) -> Option<String> {
    let mut cur = id.to_string();
    loop {
        let up = xname::parent(&cur)?;
        if xname::type_of(&up) == Some(HmsType::Node) {
            return Some(up);
        }
        cur = up;
    }
}

/// History filters (`eventtype`, `starttime`, `endtime`).
#[derive(Debug, Clone, Default)]
pub struct HistFilter {
    pub ids: Vec<String>,
    pub fru_ids: Vec<String>,
    pub event_types: Vec<String>,
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    pub end: Option<chrono::DateTime<chrono::Utc>>,
}

impl HistFilter {
    pub fn from_query(get: impl Fn(&str) -> Vec<String>) -> Result<HistFilter, DomainError> {
        let mut f = HistFilter::default();
        for e in get("eventtype") {
            let t = EVENT_TYPES
                .iter()
                .find(|t| t.eq_ignore_ascii_case(&e))
                .ok_or_else(|| DomainError::Invalid("Invalid HWInvHist event type".into()))?;
            f.event_types.push((*t).to_string());
        }
        let time = |name: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, DomainError> {
            match get(name).first() {
                None => Ok(None),
                Some(v) => chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| Some(t.with_timezone(&chrono::Utc)))
                    .map_err(|_| DomainError::Invalid(format!("Invalid {name}"))),
            }
        };
        f.start = time("starttime")?;
        f.end = time("endtime")?;
        for id in get("id") {
            f.ids.push(
                xname::normalize(&id).map_err(|_| DomainError::Invalid("Invalid xname".into()))?,
            );
        }
        f.fru_ids = get("fruid");
        Ok(f)
    }

    pub fn matches(&self, h: &HwHist) -> bool {
        (self.ids.is_empty() || self.ids.contains(&h.id))
            && (self.fru_ids.is_empty() || self.fru_ids.contains(&h.fru_id))
            && (self.event_types.is_empty() || self.event_types.contains(&h.event_type))
            && self.start.is_none_or(|s| h.timestamp >= s)
            && self.end.is_none_or(|e| h.timestamp <= e)
    }
}

/// Upstream's `{"Components":[{"ID":…,"History":[…]}]}`, grouped by
/// location (`by_fru` false) or by FRU, groups in order of first event.
pub fn history_json<'a>(events: impl Iterator<Item = &'a HwHist>, by_fru: bool) -> Value {
    let mut order: Vec<String> = Vec::new();
    let mut groups: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for h in events {
        let key = if by_fru { &h.fru_id } else { &h.id };
        let g = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Vec::new()
        });
        g.push(h.to_json());
    }
    let list: Vec<Value> = order
        .into_iter()
        .map(|k| {
            let h = groups.remove(&k).unwrap_or_default();
            json!({"ID": k, "History": h})
        })
        .collect();
    json!({ "Components": list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;

    fn dimm(node: &str, slot: u32, serial: &str) -> LocIn {
        let mut info = Map::new();
        info.insert("Manufacturer".into(), json!("Hynix"));
        info.insert("PartNumber".into(), json!("HMA84GR7-AFR4N"));
        info.insert("SerialNumber".into(), json!(serial));
        let mut loc = Map::new();
        loc.insert("Id".into(), json!(format!("DIMM{slot}")));
        LocIn::new(
            &format!("{node}d{slot}"),
            loc,
            Some(FruIn {
                subtype: String::new(),
                fru_info: info,
            }),
        )
        .unwrap()
    }

    #[test]
    fn fru_ids_follow_upstreams_rule() {
        let cases = [
            (
                ("Chassis", "x1c7", "HPE", "101426404.D", "IMZ2409069079"),
                "Chassis.HPE.101426404D.IMZ2409069079",
            ),
            (
                ("Memory", "x1c0s0b0n0d0", "Hynix", "", "S/N 1"),
                "Memory.Hynix.SN1",
            ),
            (
                ("Memory", "x1c0s0b0n0d0", "", "", "123"),
                "FRUIDforx1c0s0b0n0d0",
            ),
            (
                ("Memory", "x1c0s0b0n0d0", "Hynix", "P1", ""),
                "FRUIDforx1c0s0b0n0d0",
            ),
            (
                ("Processor", "x1c0s0b0n0p0", "", "P-1", "9"),
                "Processor.P1.9",
            ),
        ];
        for ((k, id, m, p, s), want) in cases {
            assert_eq!(fru_id(k, id, m, p, s), want);
        }
        let mut ps = Map::new();
        ps.insert("Manufacturer".into(), json!("ABB"));
        ps.insert("PartNumber".into(), json!("ignored"));
        ps.insert("SerialNumber".into(), json!("LBGEPE20KZ46051725"));
        assert_eq!(
            fru_id_of(HmsType::CMMRectifier, "x1c7t9", &ps),
            "CMMRectifier.ABB.LBGEPE20KZ46051725"
        );
    }

    #[tokio::test]
    async fn a_swap_between_nodes_reads_as_a_move() {
        let store = Store::open_in_memory().unwrap();
        let a = "x1c0s0b0n0";
        let b = "x1c0s1b0n0";
        store
            .write(move |t| {
                collect(t, "x1c0s0b0", &[dimm(a, 0, "A0"), dimm(a, 1, "A1")]);
                collect(t, "x1c0s1b0", &[dimm(b, 0, "B0")]);
                Ok(())
            })
            .await
            .unwrap();
        // A's DIMM 1 goes to B's slot 0; B0 goes to A's slot 1.
        let (ra, rb) = store
            .write(move |t| {
                let ra = collect(t, "x1c0s0b0", &[dimm(a, 0, "A0"), dimm(a, 1, "B0")]);
                let rb = collect(t, "x1c0s1b0", &[dimm(b, 0, "A1")]);
                Ok((ra, rb))
            })
            .await
            .unwrap();
        assert_eq!((ra.removed, ra.moved, ra.added), (1, 1, 0));
        assert_eq!((rb.removed, rb.moved, rb.added), (1, 1, 0));
        let s = store.snapshot();
        let fru = "Memory.Hynix.HMA84GR7AFR4N.A1";
        let events: Vec<(String, String)> = s
            .hw_history
            .values()
            .filter(|h| h.fru_id == fru)
            .map(|h| (h.id.clone(), h.event_type.clone()))
            .collect();
        assert_eq!(
            events,
            vec![
                (format!("{a}d1"), ADDED.into()),
                (format!("{a}d1"), REMOVED.into()),
                (format!("{b}d0"), DETECTED.into()),
            ]
        );
        assert_eq!(s.hw_locs[&format!("{b}d0")].fru_id, fru);
        // A collect that finds the same again records nothing.
        let n = s.hw_history.len();
        store
            .write(move |t| {
                collect(t, "x1c0s1b0", &[dimm(b, 0, "A1")]);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(store.snapshot().hw_history.len(), n);
        // A location the BMC no longer reports is removed.
        store
            .write(move |t| {
                collect(t, "x1c0s1b0", &[]);
                Ok(())
            })
            .await
            .unwrap();
        let s = store.snapshot();
        assert!(!s.hw_locs.contains_key(&format!("{b}d0")));
        assert_eq!(
            s.hw_history.values().next_back().unwrap().event_type,
            REMOVED
        );
    }

    #[tokio::test]
    async fn the_hardware_inventory_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|t| {
                    collect(t, "x1c0s0b0", &[dimm("x1c0s0b0n0", 0, "A0")]);
                    Ok(())
                })
                .await
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let s = store.snapshot();
        let fru = "Memory.Hynix.HMA84GR7AFR4N.A0";
        assert_eq!(s.hw_locs["x1c0s0b0n0d0"].fru_id, fru);
        assert_eq!(s.hw_locs["x1c0s0b0n0d0"].source, "x1c0s0b0");
        assert!(s.hw_frus.contains_key(fru));
        assert_eq!(s.hw_history.len(), 1);
        assert_eq!(s.hw_hist_frus.get(fru), Some(&1));
    }

    #[test]
    fn post_bodies_are_checked_as_upstream() {
        let ok = json!({"Hardware": [{"ID": "x9999c7t9", "CMMRectifierLocationInfo": {"Name": "R9"},
            "PopulatedFRU": {"CMMRectifierFRUInfo": {"Manufacturer": "ABB", "SerialNumber": "S1"}}}]});
        let l = decode_post(&ok).unwrap();
        assert_eq!(l[0].kind, HmsType::CMMRectifier);
        let bad = [
            json!({"Hardware": [{"CMMRectifierLocationInfo": {}, "PopulatedFRU": {"CMMRectifierFRUInfo": {}}}]}),
            json!({"Hardware": [{"ID": "", "ChassisLocationInfo": {}, "PopulatedFRU": {"ChassisFRUInfo": {}}}]}),
            json!({"Hardware": [{"ID": "x1c0s0b0n0d0", "MemoryLocationInfo": {}}]}),
            json!({"Hardware": [{"ID": "x1c0s0b0", "PopulatedFRU": {"NodeBMCFRUInfo": {}}}]}),
            json!({"Hardware": [{"ID": "x1c0s0e0", "NodeEnclosureLocationInfo": {}, "PopulatedFRU": {}}]}),
            json!({"Hardware": [{"ID": "x1c0s0b0n0h", "NodeHsnNicLocationInfo": {}, "PopulatedFRU": {"NodeHsnNicFRUInfo": {}}}]}),
            json!({"Hardware": {}}),
        ];
        for b in bad {
            assert!(decode_post(&b).is_err(), "{b}");
        }
    }

    #[test]
    fn query_options() {
        let q = |raw: &str, pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Query::parse(raw, |k| {
                pairs
                    .iter()
                    .filter(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
        };
        assert!(q("s0", &[]).unwrap().root.is_none());
        assert!(q("x1c0s0b0n0", &[]).unwrap().children);
        assert!(!q("x1c0s0b0n0", &[("parents", "true")]).unwrap().children);
        assert_eq!(
            q("x1", &[("format", "fullyflat")]).unwrap().format,
            "FullyFlat"
        );
        for bad in [
            ("xyz", vec![]),
            ("x1", vec![("format", "Hierarchical")]),
            ("x1", vec![("type", "nonsense")]),
            ("x1", vec![("children", "maybe")]),
        ] {
            assert!(q(bad.0, &bad.1).is_err(), "{bad:?}");
        }
    }
}
