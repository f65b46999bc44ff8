//! PCS power capping as pure rules: the shapes of upstream's `power-cap`
//! tasks, which components can be capped, a patch checked against the
//! limits a BMC advertises (upstream's wording, which its tests compare),
//! and a BMC's limits as a snapshot reports them. The Redfish side is
//! `redfish::powercap`; the running of tasks is `caps.rs`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::redfish::powercap::PowerLimit;

/// Task statuses.
pub const TASK_NEW: &str = "new";
pub const TASK_IN_PROGRESS: &str = "in-progress";
pub const TASK_COMPLETED: &str = "completed";

/// Operation statuses, spelt as upstream spells them (two capitalised).
pub const OP_NEW: &str = "new";
pub const OP_IN_PROGRESS: &str = "in-progress";
pub const OP_FAILED: &str = "failed";
pub const OP_SUCCEEDED: &str = "Succeeded";
pub const OP_UNSUPPORTED: &str = "Unsupported";

/// `POST power-cap/snapshot`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SnapshotRequest {
    #[serde(default)]
    pub xnames: Vec<String>,
}

/// `PATCH power-cap`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PatchRequest {
    #[serde(default)]
    pub components: Vec<PatchComponent>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PatchComponent {
    #[serde(default)]
    pub xname: String,
    #[serde(default)]
    pub controls: Vec<PatchControl>,
}

/// A control and its new value in watts; 0 removes the limit.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PatchControl {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: i64,
}

/// One control as a task reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapControl {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_value: Option<i64>,
}

/// The node's overall range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_limit_max: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_limit_min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub powerup_power: Option<i64>,
}

/// One component of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapComponent {
    pub xname: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<CapLimits>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub power_cap_limits: Vec<CapControl>,
}

/// One operation: a component's part of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapOp {
    pub status: &'static str,
    pub component: CapComponent,
}

impl CapOp {
    pub fn failed(xname: &str, error: impl Into<String>) -> CapOp {
        CapOp {
            status: OP_FAILED,
            component: CapComponent {
                xname: xname.into(),
                error: error.into(),
                ..CapComponent::default()
            },
        }
    }
    pub fn unsupported(xname: &str, error: impl Into<String>) -> CapOp {
        CapOp {
            status: OP_UNSUPPORTED,
            ..CapOp::failed(xname, error)
        }
    }
}

/// A power-capping task.
#[derive(Debug, Clone)]
pub struct CapTask {
    pub id: String,
    /// `snapshot` or `patch`.
    pub kind: &'static str,
    pub create_time: String,
    pub expiration_time: String,
    pub status: &'static str,
    pub ops: Vec<CapOp>,
}

/// Upstream's check of a patch body before a task is made: a control
/// without a name or with a negative value names its component.
pub fn check_patch(req: &PatchRequest) -> Result<(), String> {
    let bad: Vec<&str> = req
        .components
        .iter()
        .filter(|c| c.controls.iter().any(|k| k.name.is_empty() || k.value < 0))
        .map(|c| c.xname.as_str())
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let mut msg = "Invalid control parameters for xnames detected ".to_string();
    for x in bad {
        msg.push_str(x);
        msg.push(' ');
    }
    Err(msg)
}

/// What the inventory says about a component, as far as capping cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Not in the inventory.
    Missing,
    /// Not a node (its HMS type).
    NotNode(String),
    Management,
    /// A node without a Redfish system to talk to.
    NoEndpoint,
    Node,
}

/// A component that cannot be capped, or `None` to go ask its BMC. A patch
/// on a component that offers no controls reports each asked control as
/// undefined (upstream reads controls from the inventory, which has none
/// for anything but a discovered node).
pub fn screen(xname: &str, target: &Target, patch: Option<&[PatchControl]>) -> Option<Vec<CapOp>> {
    let one = |op| Some(vec![op]);
    match (target, patch) {
        (Target::Missing, _) => one(CapOp::failed(xname, "Xname not found in HSM")),
        (Target::NotNode(_) | Target::NoEndpoint, Some(ctls)) => Some(undefined(xname, ctls)),
        (Target::NotNode(t), None) => one(CapOp::unsupported(
            xname,
            format!("Type, {t} unsupported for power capping"),
        )),
        (Target::NoEndpoint, None) => one(CapOp::failed(xname, "Missing RfFQDN")),
        (Target::Management, _) => one(CapOp::unsupported(
            xname,
            "Power capping Management nodes is not supported",
        )),
        (Target::Node, _) => None,
    }
}

fn undefined(xname: &str, ctls: &[PatchControl]) -> Vec<CapOp> {
    let mut names: Vec<&str> = Vec::new();
    for c in ctls {
        if !names.contains(&c.name.as_str()) {
            names.push(&c.name);
        }
    }
    names
        .into_iter()
        .map(|n| CapOp::failed(xname, format!("Skipping undefined control '{n}'")))
        .collect()
}

/// A snapshot of a node's limits.
pub fn snapshot(xname: &str, limits: &[PowerLimit]) -> CapOp {
    if limits.is_empty() {
        return CapOp::failed(xname, "Missing Power Cap URI");
    }
    let controls = limits
        .iter()
        .map(|l| CapControl {
            name: l.name.clone(),
            current_value: Some(l.current.unwrap_or(0)),
            maximum_value: l.max,
            minimum_value: l.min,
        })
        .collect();
    let node = limits
        .iter()
        .find(|l| l.physical_context.eq_ignore_ascii_case("chassis"))
        .or(limits.first());
    CapOp {
        status: OP_SUCCEEDED,
        component: CapComponent {
            xname: xname.into(),
            error: String::new(),
            limits: node.map(|l| CapLimits {
                host_limit_max: l.max,
                host_limit_min: l.min,
                powerup_power: None,
            }),
            power_cap_limits: controls,
        },
    }
}

/// A patch planned against the advertised limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPlan {
    /// Operations that end here: undefined controls.
    pub refused: Vec<CapOp>,
    /// Writes to make: index into the limits, and watts (`None`: remove).
    pub writes: Vec<(usize, Option<i64>)>,
    /// The operation for the writes, `in-progress` until they are made
    /// (`failed` with the errors when no value was in range).
    pub op: Option<CapOp>,
}

/// Checks each asked control against the limit the BMC advertises:
/// unknown names are refused one by one, values outside the range are
/// errors of the operation, the rest are written. 0 removes a limit and is
/// never below the minimum.
pub fn plan_patch(xname: &str, limits: &[PowerLimit], ctls: &[PatchControl]) -> PatchPlan {
    let mut plan = PatchPlan {
        refused: Vec::new(),
        writes: Vec::new(),
        op: None,
    };
    let mut known: Vec<&PatchControl> = Vec::new();
    for c in ctls {
        if limits.iter().any(|l| l.name == c.name) {
            known.push(c);
        } else if !plan
            .refused
            .iter()
            .any(|o| o.component.error.ends_with(&format!("'{}'", c.name)))
        {
            plan.refused.push(CapOp::failed(
                xname,
                format!("Skipping undefined control '{}'", c.name),
            ));
        }
    }
    if known.is_empty() {
        return plan;
    }
    let mut comp = CapComponent {
        xname: xname.into(),
        ..CapComponent::default()
    };
    for c in known {
        let Some((k, l)) = limits.iter().enumerate().find(|(_, l)| l.name == c.name) else {
            continue;
        };
        let v = c.value;
        let err = match (l.min, l.max) {
            (Some(min), _) if v != 0 && v < min => Some(format!(
                "Control ({}) value ({v}) is less than minimum ({min})",
                c.name
            )),
            (_, Some(max)) if v > max => Some(format!(
                "Control ({}) value ({v}) is more than maximum ({max})",
                c.name
            )),
            _ => None,
        };
        match err {
            Some(e) => {
                if !comp.error.is_empty() {
                    comp.error.push_str("; ");
                }
                comp.error.push_str(&e);
            }
            None => {
                plan.writes.push((k, (v != 0).then_some(v)));
                comp.power_cap_limits.push(CapControl {
                    name: c.name.clone(),
                    current_value: Some(v),
                    maximum_value: l.max,
                    minimum_value: l.min,
                });
            }
        }
    }
    plan.op = Some(CapOp {
        status: if plan.writes.is_empty() {
            OP_FAILED
        } else {
            OP_IN_PROGRESS
        },
        component: comp,
    });
    plan
}

/// `taskCounts`.
pub fn counts(ops: &[CapOp]) -> Value {
    let n = |s: &str| ops.iter().filter(|o| o.status == s).count();
    json!({
        "total": ops.len(),
        "new": n(OP_NEW),
        "in-progress": n(OP_IN_PROGRESS),
        "failed": n(OP_FAILED),
        "succeeded": n(OP_SUCCEEDED),
        "un-supported": n(OP_UNSUPPORTED),
    })
}

/// Operations merged per component, as upstream reports them: errors
/// joined with `; `, controls appended; in order of first appearance.
pub fn components(ops: &[CapOp]) -> Vec<CapComponent> {
    let mut out: Vec<CapComponent> = Vec::new();
    for op in ops {
        let c = &op.component;
        match out.iter_mut().find(|o| o.xname == c.xname) {
            None => out.push(c.clone()),
            Some(o) => {
                if !c.error.is_empty() {
                    if !o.error.is_empty() {
                        o.error.push_str("; ");
                    }
                    o.error.push_str(&c.error);
                } else {
                    if c.limits.is_some() && o.limits.is_some() {
                        o.limits = c.limits.clone();
                    }
                    o.power_cap_limits
                        .extend(c.power_cap_limits.iter().cloned());
                }
            }
        }
    }
    out
}

/// A task as PCS shows it; with its components when `full`.
pub fn task_json(t: &CapTask, full: bool) -> Value {
    let mut v = json!({
        "taskID": t.id,
        "type": t.kind,
        "taskCreateTime": t.create_time,
        "automaticExpirationTime": t.expiration_time,
        "taskStatus": t.status,
        "taskCounts": counts(&t.ops),
    });
    if full {
        let comps = components(&t.ops);
        if !comps.is_empty() {
            v["components"] = serde_json::to_value(comps).unwrap_or(Value::Null);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redfish::powercap::LimitAt;

    fn limit(name: &str, min: Option<i64>, max: Option<i64>) -> PowerLimit {
        PowerLimit {
            name: name.into(),
            at: LimitAt::Control(format!("/c/{name}")),
            current: Some(500),
            min,
            max,
            physical_context: "Chassis".into(),
        }
    }

    fn ctl(name: &str, value: i64) -> PatchControl {
        PatchControl {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn patches_are_checked_against_the_advertised_range() {
        let limits = [limit("Node Power Limit", Some(350), Some(850))];
        let x = "x1000c0s0b0n0";
        // (value, writes, error)
        type Writes = Vec<(usize, Option<i64>)>;
        let cases: [(i64, Writes, &str); 6] = [
            (500, vec![(0, Some(500))], ""),
            (350, vec![(0, Some(350))], ""),
            (850, vec![(0, Some(850))], ""),
            (0, vec![(0, None)], ""),
            (
                1,
                vec![],
                "Control (Node Power Limit) value (1) is less than minimum (350)",
            ),
            (
                1234567,
                vec![],
                "Control (Node Power Limit) value (1234567) is more than maximum (850)",
            ),
        ];
        for (value, writes, error) in cases {
            let p = plan_patch(x, &limits, &[ctl("Node Power Limit", value)]);
            assert_eq!(p.writes, writes, "{value}");
            let op = p.op.unwrap();
            assert_eq!(op.component.error, error, "{value}");
            assert_eq!(
                op.status,
                if error.is_empty() {
                    OP_IN_PROGRESS
                } else {
                    OP_FAILED
                }
            );
        }
        // No range advertised: anything non-negative goes.
        let open = [limit("Node Power Limit", None, None)];
        assert_eq!(
            plan_patch(x, &open, &[ctl("Node Power Limit", 99999)]).writes,
            vec![(0, Some(99999))]
        );
        // Unknown names are refused one by one (once each).
        let p = plan_patch(x, &limits, &[ctl("GPU", 5), ctl("GPU", 6)]);
        assert!(p.op.is_none());
        assert_eq!(p.refused.len(), 1);
        assert_eq!(
            p.refused[0].component.error,
            "Skipping undefined control 'GPU'"
        );
    }

    #[test]
    fn screening_follows_upstream() {
        let x = "x1";
        let cases = [
            (Target::Missing, None, OP_FAILED, "Xname not found in HSM"),
            (
                Target::NotNode("NodeBMC".into()),
                None,
                OP_UNSUPPORTED,
                "Type, NodeBMC unsupported for power capping",
            ),
            (
                Target::NotNode("NodeBMC".into()),
                Some(vec![ctl("Node Power Limit", 0)]),
                OP_FAILED,
                "Skipping undefined control 'Node Power Limit'",
            ),
            (
                Target::Management,
                None,
                OP_UNSUPPORTED,
                "Power capping Management nodes is not supported",
            ),
            (Target::NoEndpoint, None, OP_FAILED, "Missing RfFQDN"),
        ];
        for (t, patch, status, error) in cases {
            let ops = screen(x, &t, patch.as_deref()).unwrap();
            assert_eq!(ops[0].status, status);
            assert_eq!(ops[0].component.error, error);
        }
        assert!(screen(x, &Target::Node, None).is_none());
    }

    #[test]
    fn bodies_with_bad_controls_are_refused_naming_components() {
        let req = PatchRequest {
            components: vec![
                PatchComponent {
                    xname: "x1".into(),
                    controls: vec![ctl("", 5)],
                },
                PatchComponent {
                    xname: "x2".into(),
                    controls: vec![ctl("a", 5)],
                },
                PatchComponent {
                    xname: "x3".into(),
                    controls: vec![ctl("a", -1)],
                },
            ],
        };
        assert_eq!(
            check_patch(&req).unwrap_err(),
            "Invalid control parameters for xnames detected x1 x3 "
        );
    }

    #[test]
    fn components_merge_errors_and_controls() {
        let ops = vec![
            CapOp::failed("x1", "Skipping undefined control 'a'"),
            CapOp::failed("x1", "Skipping undefined control 'b'"),
            snapshot("x2", &[limit("N", Some(1), Some(2))]),
        ];
        let c = components(&ops);
        assert_eq!(
            c[0].error,
            "Skipping undefined control 'a'; Skipping undefined control 'b'"
        );
        assert_eq!(c[1].power_cap_limits[0].current_value, Some(500));
        assert_eq!(
            counts(&ops),
            json!({"total": 3, "new": 0, "in-progress": 0, "failed": 2, "succeeded": 1, "un-supported": 0})
        );
    }
}
