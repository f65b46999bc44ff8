//! Firmware updates as pure rules: which BMCs a request names, how each
//! takes its image, and what a task monitor's state means for the BMC's
//! result.

use crate::inventory::Snapshot;
use crate::inventory::components::parse_xname;
use crate::inventory::enums::HmsType;
use crate::redfish::firmware::Firmware;

/// A BMC's result, once it has one.
pub const PENDING: &str = "Pending";
pub const UPDATING: &str = "Updating";
pub const COMPLETED: &str = "Completed";
/// The BMC took the update but offers nothing to follow it by: no task
/// and no FirmwareInventory.
pub const ACCEPTED: &str = "Accepted";
pub const EXCEPTION: &str = "Exception";
pub const TIMED_OUT: &str = "TimedOut";
pub const FAILED: &str = "Failed";

/// The BMCs named by xnames (a node's or the BMC's own) and a group's
/// members, each once, in order; or the names that are not BMCs of the
/// inventory.
pub fn targets(snap: &Snapshot, names: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    for n in names {
        let bmc = match parse_xname(n.trim()) {
            Ok((x, HmsType::NodeBMC)) => Some(x),
            Ok((x, HmsType::Node)) => x.rfind('n').map(|k| x[..k].to_string()),
            _ => None,
        };
        match bmc.filter(|b| snap.redfish_endpoints.contains_key(b)) {
            Some(b) if !out.contains(&b) => out.push(b),
            Some(_) => {}
            None => bad.push(n.clone()),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "not a node or BMC with a Redfish endpoint: {}",
            bad.join(", ")
        ))
    }
}

/// An artifact name that stays inside the artifacts directory.
pub fn check_image(image: &str) -> Result<&str, String> {
    let i = image
        .trim()
        .trim_start_matches("/artifacts/")
        .trim_start_matches('/');
    if i.is_empty()
        || i.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        || i.contains('\\')
    {
        return Err(format!(
            "image {image:?} is not a path under the artifacts directory"
        ));
    }
    Ok(i)
}

/// How an update is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// POST the action with an `ImageURI` the BMC fetches.
    Simple(String),
    /// Push the image to this URI.
    Multipart(String),
}

/// SimpleUpdate where the BMC has it, else a multipart push.
pub fn delivery(simple: Option<String>, multipart: Option<String>) -> Option<Delivery> {
    simple
        .map(Delivery::Simple)
        .or(multipart.map(Delivery::Multipart))
}

/// What a task state means: `None` while it runs, else the result.
pub fn outcome(state: &str) -> Option<&'static str> {
    match state.to_ascii_lowercase().as_str() {
        "completed" => Some(COMPLETED),
        "exception" | "killed" | "cancelled" | "interrupted" => Some(EXCEPTION),
        _ => None,
    }
}

/// With no task to follow, what shows an update landed: a watched
/// FirmwareInventory member whose Version differs from before the update.
/// Watched are the members the update targeted (by path or Id), else the
/// updateable ones, else all.
pub fn version_change(before: &[Firmware], now: &[Firmware], targets: &[String]) -> Option<String> {
    let named = |f: &Firmware| targets.iter().any(|t| *t == f.path || *t == f.id);
    let watched: Vec<&Firmware> = if before.iter().any(named) {
        before.iter().filter(|f| named(f)).collect()
    } else if before.iter().any(|f| f.updateable) {
        before.iter().filter(|f| f.updateable).collect()
    } else {
        before.iter().collect()
    };
    watched.into_iter().find_map(|old| {
        let new = now.iter().find(|n| n.path == old.path)?;
        (new.version != old.version).then(|| {
            let name = if old.name.is_empty() {
                &old.id
            } else {
                &old.name
            };
            format!(
                "no task to follow; {name} is now {} (was {})",
                new.version, old.version
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_and_images() {
        for (state, want) in [
            ("Completed", Some(COMPLETED)),
            ("Exception", Some(EXCEPTION)),
            ("Killed", Some(EXCEPTION)),
            ("Cancelled", Some(EXCEPTION)),
            ("Running", None),
            ("New", None),
            ("Pending", None),
            ("", None),
        ] {
            assert_eq!(outcome(state), want, "{state}");
        }
        assert_eq!(check_image("bmc/2.0.bin"), Ok("bmc/2.0.bin"));
        assert_eq!(check_image("/artifacts/bmc.bin"), Ok("bmc.bin"));
        for bad in ["", "../etc/passwd", "a/../../b", "a//b", "a\\b"] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
        assert_eq!(
            delivery(Some("/s".into()), Some("/m".into())),
            Some(Delivery::Simple("/s".into()))
        );
        assert_eq!(
            delivery(None, Some("/m".into())),
            Some(Delivery::Multipart("/m".into()))
        );
        assert_eq!(delivery(None, None), None);
    }

    #[test]
    fn version_changes_of_the_watched_members() {
        let fw = |id: &str, version: &str, updateable: bool| Firmware {
            path: format!("/redfish/v1/UpdateService/FirmwareInventory/{id}"),
            id: id.into(),
            name: format!("{id} Firmware"),
            version: version.into(),
            updateable,
            ..Default::default()
        };
        let before = [
            fw("BMC", "1.0", true),
            fw("BIOS", "2.0", true),
            fw("NIC", "3", false),
        ];
        let bios_done = [
            fw("BMC", "1.0", true),
            fw("BIOS", "2.1", true),
            fw("NIC", "3", false),
        ];
        let nic_changed = [
            fw("BMC", "1.0", true),
            fw("BIOS", "2.0", true),
            fw("NIC", "4", false),
        ];
        let none: [String; 0] = [];
        let bmc = ["BMC".to_string()];
        let bios_path = ["/redfish/v1/UpdateService/FirmwareInventory/BIOS".to_string()];
        for (now, targets, want) in [
            (
                &bios_done,
                &none[..],
                Some("BIOS Firmware is now 2.1 (was 2.0)"),
            ),
            (
                &bios_done,
                &bios_path[..],
                Some("BIOS Firmware is now 2.1 (was 2.0)"),
            ),
            // Only the member the update was for counts.
            (&bios_done, &bmc[..], None),
            // A member that cannot be updated is not watched.
            (&nic_changed, &none[..], None),
            (&before, &none[..], None),
        ] {
            let got = version_change(&before, now, targets);
            assert_eq!(
                got.as_deref()
                    .map(|m| m.trim_start_matches("no task to follow; ")),
                want,
                "{targets:?}"
            );
        }
        assert_eq!(version_change(&[], &bios_done, &none), None);
    }
}
