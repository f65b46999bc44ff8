//! The closed vocabularies of the SMD inventory: component types, states,
//! flags, roles and the other enumerations of `service/values`.
//!
//! Clients send these in whatever case they like (upstream's Go decoders
//! lower-case before looking them up), but every value is stored and emitted
//! in exactly one spelling. Canonicalising at the edge means filters,
//! comparisons and the state-transition table never have to think about
//! case again, and what a client reads back is byte-for-byte what upstream
//! would have returned.
//!
//! The HMS type list mirrors upstream's `hms-xname` recognition table (the
//! version OpenCHAMI SMD builds against), minus its query wildcards (`all`,
//! `all_comp`, `all_svc`), which name sets of components rather than a
//! component.

use std::fmt;

/// The HMS component type, derived from (and always consistent with) an
/// xname. See [`crate::inventory::xname`] for the grammar of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HmsType {
    /// `s0`
    System,
    /// `p#` or `p#.#`
    Partition,
    /// `sms#`
    SMSBox,
    /// `d#`
    CDU,
    /// `d#w#`
    CDUMgmtSwitch,
    /// `x#`
    Cabinet,
    /// `x#d#`
    CabinetCDU,
    /// `x#b0`
    CabinetBMC,
    /// `x#e#`
    CEC,
    /// `x#m#`
    CabinetPDUController,
    /// `x#m#p#`
    CabinetPDU,
    /// `x#m#i#`
    CabinetPDUNic,
    /// `x#m#p#j#` (deprecated upstream in favour of the power connector)
    CabinetPDUOutlet,
    /// `x#m#p#v#`
    CabinetPDUPowerConnector,
    /// `x#c#`
    Chassis,
    /// `x#c#b0`
    ChassisBMC,
    /// `x#c#b0i#`
    ChassisBMCNic,
    /// `x#c#t#`
    CMMRectifier,
    /// `x#c#f0`
    CMMFpga,
    /// `x#c#s#`
    ComputeModule,
    /// `x#c#s#e#`
    NodeEnclosure,
    /// `x#c#s#e#t#`
    NodeEnclosurePowerSupply,
    /// `x#c#s#v#` (or the deprecated `x#c#s#j#`)
    NodePowerConnector,
    /// `x#c#s#b#`
    NodeBMC,
    /// `x#c#s#b#i#`
    NodeBMCNic,
    /// `x#c#s#b#f0`
    NodeFpga,
    /// `x#c#s#b#n#`
    Node,
    /// `x#c#s#b#n#v#`
    VirtualNode,
    /// `x#c#s#b#n#i#`
    NodeNic,
    /// `x#c#s#b#n#h#`
    NodeHsnNic,
    /// `x#c#s#b#n#p#`
    Processor,
    /// `x#c#s#b#n#d#`
    Memory,
    /// `x#c#s#b#n#a#`
    NodeAccel,
    /// `x#c#s#b#n#r#`
    NodeAccelRiser,
    /// `x#c#s#b#n#g#`
    StorageGroup,
    /// `x#c#s#b#n#g#k#`
    Drive,
    /// `x#c#r#`
    RouterModule,
    /// `x#c#r#b#`
    RouterBMC,
    /// `x#c#r#b#i#`
    RouterBMCNic,
    /// `x#c#r#f#`
    RouterFpga,
    /// `x#c#r#t#`
    RouterTOR,
    /// `x#c#r#t#f#`
    RouterTORFpga,
    /// `x#c#r#v#`
    RouterPowerConnector,
    /// `x#c#r#e#`
    HSNBoard,
    /// `x#c#r#a#`
    HSNAsic,
    /// `x#c#r#a#l#`
    HSNLink,
    /// `x#c#r#j#`
    HSNConnector,
    /// `x#c#r#j#p#`
    HSNConnectorPort,
    /// `x#c#w#`
    MgmtSwitch,
    /// `x#c#w#j#`
    MgmtSwitchConnector,
    /// `x#c#h#`
    MgmtHLSwitchEnclosure,
    /// `x#c#h#s#`
    MgmtHLSwitch,
}

const ALL_TYPES: &[HmsType] = &[
    HmsType::System,
    HmsType::Partition,
    HmsType::SMSBox,
    HmsType::CDU,
    HmsType::CDUMgmtSwitch,
    HmsType::Cabinet,
    HmsType::CabinetCDU,
    HmsType::CabinetBMC,
    HmsType::CEC,
    HmsType::CabinetPDUController,
    HmsType::CabinetPDU,
    HmsType::CabinetPDUNic,
    HmsType::CabinetPDUOutlet,
    HmsType::CabinetPDUPowerConnector,
    HmsType::Chassis,
    HmsType::ChassisBMC,
    HmsType::ChassisBMCNic,
    HmsType::CMMRectifier,
    HmsType::CMMFpga,
    HmsType::ComputeModule,
    HmsType::NodeEnclosure,
    HmsType::NodeEnclosurePowerSupply,
    HmsType::NodePowerConnector,
    HmsType::NodeBMC,
    HmsType::NodeBMCNic,
    HmsType::NodeFpga,
    HmsType::Node,
    HmsType::VirtualNode,
    HmsType::NodeNic,
    HmsType::NodeHsnNic,
    HmsType::Processor,
    HmsType::Memory,
    HmsType::NodeAccel,
    HmsType::NodeAccelRiser,
    HmsType::StorageGroup,
    HmsType::Drive,
    HmsType::RouterModule,
    HmsType::RouterBMC,
    HmsType::RouterBMCNic,
    HmsType::RouterFpga,
    HmsType::RouterTOR,
    HmsType::RouterTORFpga,
    HmsType::RouterPowerConnector,
    HmsType::HSNBoard,
    HmsType::HSNAsic,
    HmsType::HSNLink,
    HmsType::HSNConnector,
    HmsType::HSNConnectorPort,
    HmsType::MgmtSwitch,
    HmsType::MgmtSwitchConnector,
    HmsType::MgmtHLSwitchEnclosure,
    HmsType::MgmtHLSwitch,
];

impl HmsType {
    /// The exact spelling used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HmsType::System => "System",
            HmsType::Partition => "Partition",
            HmsType::SMSBox => "SMSBox",
            HmsType::CDU => "CDU",
            HmsType::CDUMgmtSwitch => "CDUMgmtSwitch",
            HmsType::Cabinet => "Cabinet",
            HmsType::CabinetCDU => "CabinetCDU",
            HmsType::CabinetBMC => "CabinetBMC",
            HmsType::CEC => "CEC",
            HmsType::CabinetPDUController => "CabinetPDUController",
            HmsType::CabinetPDU => "CabinetPDU",
            HmsType::CabinetPDUNic => "CabinetPDUNic",
            HmsType::CabinetPDUOutlet => "CabinetPDUOutlet",
            HmsType::CabinetPDUPowerConnector => "CabinetPDUPowerConnector",
            HmsType::Chassis => "Chassis",
            HmsType::ChassisBMC => "ChassisBMC",
            HmsType::ChassisBMCNic => "ChassisBMCNic",
            HmsType::CMMRectifier => "CMMRectifier",
            HmsType::CMMFpga => "CMMFpga",
            HmsType::ComputeModule => "ComputeModule",
            HmsType::NodeEnclosure => "NodeEnclosure",
            HmsType::NodeEnclosurePowerSupply => "NodeEnclosurePowerSupply",
            HmsType::NodePowerConnector => "NodePowerConnector",
            HmsType::NodeBMC => "NodeBMC",
            HmsType::NodeBMCNic => "NodeBMCNic",
            HmsType::NodeFpga => "NodeFpga",
            HmsType::Node => "Node",
            HmsType::VirtualNode => "VirtualNode",
            HmsType::NodeNic => "NodeNic",
            HmsType::NodeHsnNic => "NodeHsnNic",
            HmsType::Processor => "Processor",
            HmsType::Memory => "Memory",
            HmsType::NodeAccel => "NodeAccel",
            HmsType::NodeAccelRiser => "NodeAccelRiser",
            HmsType::StorageGroup => "StorageGroup",
            HmsType::Drive => "Drive",
            HmsType::RouterModule => "RouterModule",
            HmsType::RouterBMC => "RouterBMC",
            HmsType::RouterBMCNic => "RouterBMCNic",
            HmsType::RouterFpga => "RouterFpga",
            HmsType::RouterTOR => "RouterTOR",
            HmsType::RouterTORFpga => "RouterTORFpga",
            HmsType::RouterPowerConnector => "RouterPowerConnector",
            HmsType::HSNBoard => "HSNBoard",
            HmsType::HSNAsic => "HSNAsic",
            HmsType::HSNLink => "HSNLink",
            HmsType::HSNConnector => "HSNConnector",
            HmsType::HSNConnectorPort => "HSNConnectorPort",
            HmsType::MgmtSwitch => "MgmtSwitch",
            HmsType::MgmtSwitchConnector => "MgmtSwitchConnector",
            HmsType::MgmtHLSwitchEnclosure => "MgmtHLSwitchEnclosure",
            HmsType::MgmtHLSwitch => "MgmtHLSwitch",
        }
    }

    /// Looks a type name up case-insensitively (`nodebmc` → `NodeBMC`).
    pub fn parse(s: &str) -> Option<HmsType> {
        ALL_TYPES
            .iter()
            .copied()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// Every component type, in a stable order (for `service/values`).
    pub fn all() -> &'static [HmsType] {
        ALL_TYPES
    }

    /// Whether a component of this type can be a RedfishEndpoint.
    ///
    /// Upstream SMD accepts its four controller types (NodeBMC, ChassisBMC,
    /// RouterBMC, CabinetPDUController) plus the three management switch
    /// types when it builds an endpoint from an ID; everything else is
    /// refused.
    pub fn is_controller(self) -> bool {
        matches!(
            self,
            HmsType::NodeBMC
                | HmsType::ChassisBMC
                | HmsType::RouterBMC
                | HmsType::CabinetPDUController
                | HmsType::MgmtSwitch
                | HmsType::MgmtHLSwitch
                | HmsType::CDUMgmtSwitch
        )
    }

    /// Whether this type carries a NID and boots (Node or VirtualNode).
    pub fn is_node(self) -> bool {
        matches!(self, HmsType::Node | HmsType::VirtualNode)
    }
}

impl fmt::Display for HmsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HmsType {
    type Err = UnknownHmsType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HmsType::parse(s).ok_or_else(|| UnknownHmsType(s.to_string()))
    }
}

/// A string that names no HMS component type.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unknown HMS type {0:?}")]
pub struct UnknownHmsType(pub String);

impl serde::Serialize for HmsType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for HmsType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        HmsType::parse(&s).ok_or_else(|| serde::de::Error::custom(UnknownHmsType(s.into_owned())))
    }
}

/// Component states, in upstream's order.
pub const STATES: &[&str] = &[
    "Unknown",
    "Empty",
    "Populated",
    "Off",
    "On",
    "Standby",
    "Halt",
    "Ready",
];

/// Component flags, in upstream's order.
pub const FLAGS: &[&str] = &["Unknown", "OK", "Warning", "Alert", "Locked"];

/// The built-in roles; others are accepted as given (see [`canonical_role`]).
pub const ROLES: &[&str] = &[
    "Compute",
    "Service",
    "System",
    "Application",
    "Storage",
    "Management",
];

/// The built-in sub-roles; others are accepted as given (see [`canonical_sub_role`]).
pub const SUB_ROLES: &[&str] = &["Master", "Worker", "Storage"];

/// Processor architectures.
pub const ARCHES: &[&str] = &["X86", "ARM", "Other", "UNKNOWN"];

/// Hardware classes.
pub const CLASSES: &[&str] = &["River", "Mountain", "Hill"];

/// High-speed network types.
pub const NET_TYPES: &[&str] = &["Sling", "Infiniband", "Ethernet", "OEM", "None"];

fn lookup(values: &'static [&'static str], s: &str) -> Option<&'static str> {
    values.iter().copied().find(|v| v.eq_ignore_ascii_case(s))
}

/// The canonical spelling of a component state, if `s` names one.
pub fn canonical_state(s: &str) -> Option<&'static str> {
    lookup(STATES, s)
}

/// The canonical spelling of a flag; `warn` means `Warning` and an empty
/// string means `OK`, as upstream.
pub fn canonical_flag(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("OK");
    }
    if s.eq_ignore_ascii_case("warn") {
        return Some("Warning");
    }
    lookup(FLAGS, s)
}

/// The canonical spelling of an architecture.
pub fn canonical_arch(s: &str) -> Option<&'static str> {
    lookup(ARCHES, s)
}

/// The canonical spelling of a hardware class.
pub fn canonical_class(s: &str) -> Option<&'static str> {
    lookup(CLASSES, s)
}

/// The canonical spelling of a network type.
pub fn canonical_net_type(s: &str) -> Option<&'static str> {
    lookup(NET_TYPES, s)
}

/// Site-defined roles and sub-roles must still be safe as filter values and
/// group-like labels, so they are limited to a plain identifier alphabet.
fn is_extension_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn canonical_extendable(known: &'static [&'static str], s: &str) -> Option<String> {
    if let Some(k) = lookup(known, s) {
        return Some(k.to_string());
    }
    is_extension_name(s).then(|| s.to_string())
}

/// A built-in role in its canonical spelling, or a site-defined role (such
/// as `UAN`) exactly as given if it is a plain identifier.
pub fn canonical_role(s: &str) -> Option<String> {
    canonical_extendable(ROLES, s)
}

/// A built-in sub-role in its canonical spelling, or a site-defined one
/// exactly as given if it is a plain identifier.
pub fn canonical_sub_role(s: &str) -> Option<String> {
    canonical_extendable(SUB_ROLES, s)
}

/// Whether a component in state `current` may move to state `new` without
/// `Force` (both canonical names). Unknown, Empty and Populated are never
/// reachable without `Force`; an unrecognised name is never allowed.
pub fn transition_allowed(new: &str, current: &str) -> bool {
    let allowed_from: &[&str] = match new {
        "Off" => &["Off", "On", "Standby", "Halt", "Ready"],
        "On" => &["On", "Off", "Standby", "Halt"],
        "Standby" => &["Standby", "Ready"],
        "Halt" => &["Halt", "Ready"],
        "Ready" => &["Ready", "On", "Off", "Standby", "Halt"],
        _ => &[],
    };
    allowed_from.contains(&current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn type_names_round_trip() {
        for &t in HmsType::all() {
            assert_eq!(HmsType::parse(t.as_str()), Some(t));
            assert_eq!(HmsType::parse(&t.as_str().to_lowercase()), Some(t));
            assert_eq!(HmsType::parse(&t.as_str().to_uppercase()), Some(t));
            assert_eq!(t.to_string(), t.as_str());
            assert_eq!(t.as_str().parse::<HmsType>(), Ok(t));
        }
    }

    #[test]
    fn type_list_is_complete_and_unique() {
        let all = HmsType::all();
        assert_eq!(all.len(), 52);
        let mut names: Vec<&str> = all.iter().map(|t| t.as_str()).collect();
        names.sort_unstable_by_key(|n| n.to_ascii_lowercase());
        names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        assert_eq!(names.len(), all.len());
        // `all()` lists the variants in declaration order, so it is sorted
        // and free of duplicates under the derived `Ord`.
        let mut sorted = all.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, all);
    }

    #[test]
    fn type_parse_rejects_unknown() {
        assert_eq!(HmsType::parse(""), None);
        assert_eq!(HmsType::parse("All"), None);
        assert_eq!(HmsType::parse("INVALID"), None);
        assert_eq!(HmsType::parse("Nodes"), None);
        assert_eq!(HmsType::parse(" Node"), None);
        assert_eq!(
            "bogus".parse::<HmsType>(),
            Err(UnknownHmsType("bogus".into()))
        );
    }

    #[test]
    fn type_serde() {
        let json = serde_json::to_string(&HmsType::NodeBMC).unwrap();
        assert_eq!(json, "\"NodeBMC\"");
        let t: HmsType = serde_json::from_str("\"nodebmc\"").unwrap();
        assert_eq!(t, HmsType::NodeBMC);
        assert!(serde_json::from_str::<HmsType>("\"nope\"").is_err());
        assert!(serde_json::from_str::<HmsType>("3").is_err());
    }

    #[test]
    fn controllers() {
        let controllers: Vec<HmsType> = HmsType::all()
            .iter()
            .copied()
            .filter(|t| t.is_controller())
            .collect();
        assert_eq!(
            controllers,
            vec![
                HmsType::CDUMgmtSwitch,
                HmsType::CabinetPDUController,
                HmsType::ChassisBMC,
                HmsType::NodeBMC,
                HmsType::RouterBMC,
                HmsType::MgmtSwitch,
                HmsType::MgmtHLSwitch,
            ]
        );
        assert!(!HmsType::CabinetBMC.is_controller());
        assert!(!HmsType::Node.is_controller());
    }

    #[test]
    fn nodes() {
        let nodes: Vec<HmsType> = HmsType::all()
            .iter()
            .copied()
            .filter(|t| t.is_node())
            .collect();
        assert_eq!(nodes, vec![HmsType::Node, HmsType::VirtualNode]);
    }

    #[test]
    fn states() {
        assert_eq!(canonical_state("ready"), Some("Ready"));
        assert_eq!(canonical_state("STANDBY"), Some("Standby"));
        assert_eq!(canonical_state("populated"), Some("Populated"));
        assert_eq!(canonical_state(""), None);
        assert_eq!(canonical_state("Running"), None);
        for s in STATES {
            assert_eq!(canonical_state(s), Some(*s));
        }
    }

    #[test]
    fn flags() {
        assert_eq!(canonical_flag(""), Some("OK"));
        assert_eq!(canonical_flag("ok"), Some("OK"));
        assert_eq!(canonical_flag("warn"), Some("Warning"));
        assert_eq!(canonical_flag("WARN"), Some("Warning"));
        assert_eq!(canonical_flag("warning"), Some("Warning"));
        assert_eq!(canonical_flag("alert"), Some("Alert"));
        assert_eq!(canonical_flag("LOCKED"), Some("Locked"));
        assert_eq!(canonical_flag("unknown"), Some("Unknown"));
        assert_eq!(canonical_flag("fine"), None);
        assert_eq!(canonical_flag(" "), None);
        for s in FLAGS {
            assert_eq!(canonical_flag(s), Some(*s));
        }
    }

    #[test]
    fn arch_class_net_type() {
        assert_eq!(canonical_arch("x86"), Some("X86"));
        assert_eq!(canonical_arch("arm"), Some("ARM"));
        assert_eq!(canonical_arch("other"), Some("Other"));
        assert_eq!(canonical_arch("unknown"), Some("UNKNOWN"));
        assert_eq!(canonical_arch("aarch64"), None);
        assert_eq!(canonical_class("river"), Some("River"));
        assert_eq!(canonical_class("MOUNTAIN"), Some("Mountain"));
        assert_eq!(canonical_class("hill"), Some("Hill"));
        assert_eq!(canonical_class("lake"), None);
        assert_eq!(canonical_net_type("sling"), Some("Sling"));
        assert_eq!(canonical_net_type("infiniband"), Some("Infiniband"));
        assert_eq!(canonical_net_type("ETHERNET"), Some("Ethernet"));
        assert_eq!(canonical_net_type("oem"), Some("OEM"));
        assert_eq!(canonical_net_type("none"), Some("None"));
        assert_eq!(canonical_net_type(""), None);
    }

    #[test]
    fn roles() {
        assert_eq!(canonical_role("compute").as_deref(), Some("Compute"));
        assert_eq!(canonical_role("MANAGEMENT").as_deref(), Some("Management"));
        assert_eq!(canonical_role("UAN").as_deref(), Some("UAN"));
        assert_eq!(
            canonical_role("login_node-2").as_deref(),
            Some("login_node-2")
        );
        assert_eq!(canonical_role(""), None);
        assert_eq!(canonical_role("has space"), None);
        assert_eq!(canonical_role("ünïcode"), None);
        assert_eq!(canonical_role("a/b"), None);
        assert_eq!(canonical_sub_role("worker").as_deref(), Some("Worker"));
        assert_eq!(canonical_sub_role("MASTER").as_deref(), Some("Master"));
        assert_eq!(canonical_sub_role("storage").as_deref(), Some("Storage"));
        assert_eq!(canonical_sub_role("Gateway").as_deref(), Some("Gateway"));
        assert_eq!(canonical_sub_role(""), None);
        assert_eq!(canonical_sub_role("x\n"), None);
    }

    #[test]
    fn transition_table() {
        let table: &[(&str, &[&str])] = &[
            ("Off", &["Off", "On", "Standby", "Halt", "Ready"]),
            ("On", &["On", "Off", "Standby", "Halt"]),
            ("Standby", &["Standby", "Ready"]),
            ("Halt", &["Halt", "Ready"]),
            ("Ready", &["Ready", "On", "Off", "Standby", "Halt"]),
            ("Unknown", &[]),
            ("Empty", &[]),
            ("Populated", &[]),
        ];
        for (new, allowed) in table {
            for current in STATES {
                assert_eq!(
                    transition_allowed(new, current),
                    allowed.contains(current),
                    "{current} -> {new}"
                );
            }
        }
        assert!(!transition_allowed("Ready", "Populated"));
        assert!(!transition_allowed("On", "Ready"));
        assert!(!transition_allowed("ready", "Ready"));
        assert!(!transition_allowed("Bogus", "Bogus"));
        assert!(!transition_allowed("Ready", ""));
    }

    proptest! {
        #[test]
        fn canonicalisers_never_panic_and_are_idempotent(s in any::<String>()) {
            for f in [canonical_state, canonical_flag, canonical_arch, canonical_class,
                      canonical_net_type] {
                if let Some(c) = f(&s) {
                    prop_assert_eq!(f(c), Some(c));
                }
            }
            for f in [canonical_role, canonical_sub_role] {
                if let Some(c) = f(&s) {
                    prop_assert_eq!(f(&c), Some(c.clone()));
                }
            }
            let _ = HmsType::parse(&s);
            let _ = transition_allowed(&s, &s);
        }
    }
}
