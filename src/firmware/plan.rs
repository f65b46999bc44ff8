//! Firmware updates as pure rules: which BMCs a request names, how each
//! takes its image, and what a task monitor's state means for the BMC's
//! result.

use crate::inventory::Snapshot;
use crate::inventory::components::parse_xname;
use crate::inventory::enums::HmsType;

/// A BMC's result, once it has one.
pub const PENDING: &str = "Pending";
pub const UPDATING: &str = "Updating";
pub const COMPLETED: &str = "Completed";
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
}
