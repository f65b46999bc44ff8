//! What a power operation means for one node: the Redfish resets to send,
//! the state to wait for, and what to do at the deadline. Pure, so every
//! combination of operation, BMC capabilities and power state is tested
//! without a BMC.

use serde_json::{Value, json};

/// PCS operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    On,
    Off,
    SoftOff,
    SoftRestart,
    HardRestart,
    Init,
    ForceOff,
}

impl Operation {
    /// Any case, as PCS accepts them.
    pub fn parse(s: &str) -> Option<Operation> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "on" => Operation::On,
            "off" => Operation::Off,
            "soft-off" => Operation::SoftOff,
            "soft-restart" => Operation::SoftRestart,
            "hard-restart" => Operation::HardRestart,
            "init" => Operation::Init,
            "force-off" => Operation::ForceOff,
            _ => return None,
        })
    }

    /// As PCS echoes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::On => "On",
            Operation::Off => "Off",
            Operation::SoftOff => "Soft-Off",
            Operation::SoftRestart => "Soft-Restart",
            Operation::HardRestart => "Hard-Restart",
            Operation::Init => "Init",
            Operation::ForceOff => "Force-Off",
        }
    }
}

/// The ResetTypes assumed when a BMC lists none (Deliberate difference:
/// upstream PCS reports the node `unsupported`; trying lets the BMC decide).
pub const STANDARD: [&str; 5] = [
    "On",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
];

/// One step: send `reset`, then wait until the power is on (`want_on`) or
/// off. At the deadline, send `escalate` if set and wait a little more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub reset: String,
    pub want_on: bool,
    pub escalate: Option<String>,
}

/// `On`/`PoweringOn` → on, `Off`/`PoweringOff` → off, else unknown.
pub fn is_on(power_state: &str) -> Option<bool> {
    match power_state.to_ascii_lowercase().as_str() {
        "on" | "poweringon" => Some(true),
        "off" | "poweringoff" => Some(false),
        _ => None,
    }
}

/// The first of `prefs` the BMC allows, in the BMC's spelling.
fn pick(allowed: &[String], prefs: &[&str]) -> Option<String> {
    prefs
        .iter()
        .find_map(|p| allowed.iter().find(|a| a.eq_ignore_ascii_case(p)).cloned())
}

fn effective(allowed: &[String]) -> Vec<String> {
    if allowed.is_empty() {
        STANDARD.iter().map(|s| s.to_string()).collect()
    } else {
        allowed.to_vec()
    }
}

fn on_phase(allowed: &[String]) -> Result<Phase, String> {
    let reset =
        pick(allowed, &["On", "ForceOn"]).ok_or("the BMC offers no On reset for this node")?;
    Ok(Phase {
        reset,
        want_on: true,
        escalate: None,
    })
}

/// Graceful if possible; `ForceOff` at the deadline when `escalate`.
fn off_phase(allowed: &[String], escalate: bool) -> Result<Phase, String> {
    let graceful = pick(allowed, &["GracefulShutdown", "Off"]);
    let force = pick(allowed, &["ForceOff"]);
    match (graceful, force) {
        (Some(reset), force) => Ok(Phase {
            reset,
            want_on: false,
            escalate: if escalate { force } else { None },
        }),
        (None, Some(reset)) if escalate => Ok(Phase {
            reset,
            want_on: false,
            escalate: None,
        }),
        _ => Err("the BMC offers no graceful shutdown for this node".into()),
    }
}

/// The phases of `op` for a node whose power is `on` (None: unknown), given
/// the ResetTypes its BMC allows. No phases: already done. An error: the
/// node cannot do this (`unsupported`).
pub fn plan(op: Operation, allowed: &[String], on: Option<bool>) -> Result<Vec<Phase>, String> {
    let allowed = effective(allowed);
    let allowed = allowed.as_slice();
    Ok(match op {
        Operation::On if on == Some(true) => vec![],
        Operation::On => vec![on_phase(allowed)?],
        Operation::Off | Operation::SoftOff | Operation::ForceOff if on == Some(false) => vec![],
        Operation::Off => vec![off_phase(allowed, true)?],
        Operation::SoftOff => vec![off_phase(allowed, false)?],
        Operation::ForceOff => vec![Phase {
            reset: pick(allowed, &["ForceOff"]).ok_or("the BMC offers no ForceOff")?,
            want_on: false,
            escalate: None,
        }],
        Operation::SoftRestart if on == Some(false) => vec![on_phase(allowed)?],
        Operation::SoftRestart => match pick(allowed, &["GracefulRestart", "ForceRestart"]) {
            Some(reset) => vec![Phase {
                reset,
                want_on: true,
                escalate: None,
            }],
            None => vec![off_phase(allowed, true)?, on_phase(allowed)?],
        },
        Operation::HardRestart | Operation::Init if on == Some(false) => vec![on_phase(allowed)?],
        Operation::HardRestart | Operation::Init => {
            vec![off_phase(allowed, true)?, on_phase(allowed)?]
        }
    })
}

/// PCS's `supportedPowerTransitions` for a node whose BMC allows these.
pub fn supported(allowed: &[String]) -> Vec<&'static str> {
    let allowed = effective(allowed);
    [
        Operation::On,
        Operation::ForceOff,
        Operation::SoftOff,
        Operation::Off,
        Operation::SoftRestart,
        Operation::Init,
        Operation::HardRestart,
    ]
    .into_iter()
    .filter(|op| plan(*op, &allowed, None).is_ok())
    .map(Operation::as_str)
    .collect()
}

/// The Component State the sampler writes for a node whose power is `on`,
/// if it should change. A booted node (`Ready`, `Standby`, `Halt`) that is
/// on keeps its state; `Empty` and `Populated` describe presence, not power.
pub fn component_state(current: &str, on: bool) -> Option<&'static str> {
    match (current, on) {
        ("Empty" | "Populated", _) => None,
        ("Off", false) => None,
        (_, false) => Some("Off"),
        ("Off" | "Unknown", true) => Some("On"),
        _ => None,
    }
}

/// Transition statuses.
pub const NEW: &str = "new";
pub const IN_PROGRESS: &str = "in-progress";
pub const COMPLETED: &str = "completed";
pub const ABORTED: &str = "aborted";
pub const ABORT_SIGNALED: &str = "abort-signaled";
/// Task statuses.
pub const FAILED: &str = "failed";
pub const SUCCEEDED: &str = "succeeded";
pub const UNSUPPORTED: &str = "unsupported";

/// PCS `taskCounts` (the key for `unsupported` is `un-supported`).
pub fn task_counts<'a>(statuses: impl Iterator<Item = &'a str>) -> Value {
    let (mut total, mut new, mut running, mut failed, mut ok, mut unsup) = (0, 0, 0, 0, 0, 0);
    for s in statuses {
        total += 1;
        match s {
            NEW => new += 1,
            IN_PROGRESS => running += 1,
            FAILED => failed += 1,
            SUCCEEDED => ok += 1,
            UNSUPPORTED => unsup += 1,
            _ => {}
        }
    }
    json!({"total": total, "new": new, "in-progress": running, "failed": failed,
           "succeeded": ok, "un-supported": unsup})
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn resets(p: &[Phase]) -> Vec<&str> {
        p.iter().map(|x| x.reset.as_str()).collect()
    }

    #[test]
    fn operations_parse_in_any_case_and_echo() {
        assert_eq!(Operation::parse("SOFT-off"), Some(Operation::SoftOff));
        assert_eq!(Operation::parse("force-off").unwrap().as_str(), "Force-Off");
        assert_eq!(Operation::parse("reboot"), None);
    }

    #[test]
    fn resets_follow_the_fallbacks() {
        let all = v(&STANDARD);
        assert_eq!(
            resets(&plan(Operation::On, &all, Some(false)).unwrap()),
            ["On"]
        );
        assert!(plan(Operation::On, &all, Some(true)).unwrap().is_empty());
        let off = plan(Operation::Off, &all, Some(true)).unwrap();
        assert_eq!(resets(&off), ["GracefulShutdown"]);
        assert_eq!(off[0].escalate.as_deref(), Some("ForceOff"));
        let soft = plan(Operation::SoftOff, &all, Some(true)).unwrap();
        assert_eq!(soft[0].escalate, None);
        // Only ForceOff: off uses it; soft-off cannot.
        let force = v(&["On", "ForceOff"]);
        assert_eq!(
            resets(&plan(Operation::Off, &force, Some(true)).unwrap()),
            ["ForceOff"]
        );
        assert!(plan(Operation::SoftOff, &force, Some(true)).is_err());
        // soft-restart: GracefulRestart, else ForceRestart, else off + on.
        assert_eq!(
            resets(&plan(Operation::SoftRestart, &all, Some(true)).unwrap()),
            ["GracefulRestart"]
        );
        assert_eq!(
            resets(
                &plan(
                    Operation::SoftRestart,
                    &v(&["On", "ForceRestart", "ForceOff"]),
                    Some(true)
                )
                .unwrap()
            ),
            ["ForceRestart"]
        );
        assert_eq!(
            resets(&plan(Operation::SoftRestart, &force, Some(true)).unwrap()),
            ["ForceOff", "On"]
        );
        assert_eq!(
            resets(&plan(Operation::HardRestart, &all, Some(true)).unwrap()),
            ["GracefulShutdown", "On"]
        );
        assert_eq!(
            resets(&plan(Operation::Init, &all, Some(false)).unwrap()),
            ["On"]
        );
        // The BMC's spelling is kept; no list means the standard five.
        assert_eq!(
            resets(&plan(Operation::On, &v(&["on"]), None).unwrap()),
            ["on"]
        );
        assert_eq!(
            resets(&plan(Operation::ForceOff, &[], None).unwrap()),
            ["ForceOff"]
        );
    }

    #[test]
    fn supported_transitions() {
        assert_eq!(
            supported(&v(&STANDARD)),
            [
                "On",
                "Force-Off",
                "Soft-Off",
                "Off",
                "Soft-Restart",
                "Init",
                "Hard-Restart"
            ]
        );
        assert_eq!(supported(&v(&["On"])), ["On"]);
    }

    #[test]
    fn sampled_power_becomes_component_state() {
        assert_eq!(component_state("Ready", true), None);
        assert_eq!(component_state("Ready", false), Some("Off"));
        assert_eq!(component_state("Off", true), Some("On"));
        assert_eq!(component_state("Unknown", true), Some("On"));
        assert_eq!(component_state("Empty", false), None);
        assert_eq!(component_state("Off", false), None);
    }

    #[test]
    fn counts() {
        let c = task_counts(["new", "failed", "succeeded", "succeeded", "unsupported"].into_iter());
        assert_eq!(c["total"], 5);
        assert_eq!(c["succeeded"], 2);
        assert_eq!(c["un-supported"], 1);
    }

    proptest! {
        /// Every phase sends a ResetType the BMC allows (or, with no list, a
        /// standard one), and every plan ends in the operation's power state.
        #[test]
        fn plans_use_allowed_resets_and_end_right(
            mask in 0u8..32, on in proptest::option::of(any::<bool>()), op in 0usize..7
        ) {
            let allowed: Vec<String> = STANDARD.iter().enumerate()
                .filter(|(k, _)| mask & (1 << k) != 0).map(|(_, s)| s.to_string()).collect();
            let ops = [Operation::On, Operation::Off, Operation::SoftOff, Operation::SoftRestart,
                       Operation::HardRestart, Operation::Init, Operation::ForceOff];
            let op = ops[op];
            if let Ok(phases) = plan(op, &allowed, on) {
                let eff = effective(&allowed);
                for p in &phases {
                    prop_assert!(eff.contains(&p.reset));
                    if let Some(e) = &p.escalate { prop_assert!(eff.contains(e)); }
                }
                let want_on = !matches!(op, Operation::Off | Operation::SoftOff | Operation::ForceOff);
                match phases.last() {
                    Some(p) => prop_assert_eq!(p.want_on, want_on),
                    None => prop_assert_eq!(on, Some(want_on)),
                }
            }
        }
    }
}
