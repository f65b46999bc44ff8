//! The lab network: a namespace holding a bridge, the appliance's and the
//! BMCs' addresses on it, and one tap per node. Made with iproute2, which is
//! on every machine that can run the lab; nothing is created outside the
//! namespace, so deleting it removes everything.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::plan::{self, BRIDGE, Lab, PREFIX};

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether the namespace exists.
pub fn exists(netns: &str) -> bool {
    Path::new("/run/netns").join(netns).exists()
}

/// Where each lab namespace's owning directory is recorded: two labs may
/// be given the same `--name`, and one must never delete the other's.
const OWNERS: &str = "/run/openchami-lab";

/// The lab directory that created `netns`, if recorded.
pub fn owner(netns: &str) -> Option<std::path::PathBuf> {
    std::fs::read_to_string(Path::new(OWNERS).join(netns))
        .ok()
        .map(|s| s.trim().into())
}

/// How many processes run inside `netns`.
pub fn processes_in(netns: &str) -> usize {
    Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}

/// Deletes the namespace (and with it the bridge and taps), if it exists.
pub fn delete(netns: &str) -> anyhow::Result<()> {
    if exists(netns) {
        ip(&["netns", "del", netns])?;
    }
    let _ = std::fs::remove_file(Path::new(OWNERS).join(netns));
    Ok(())
}

/// Creates the namespace with the bridge, addresses and taps.
pub fn create(lab: &Lab) -> anyhow::Result<()> {
    let ns = lab.netns.as_str();
    ip(&["netns", "add", ns])?;
    std::fs::create_dir_all(OWNERS)
        .and_then(|()| std::fs::write(Path::new(OWNERS).join(ns), lab.dir.display().to_string()))
        .with_context(|| format!("cannot record the owner of namespace {ns} in {OWNERS}"))?;
    let r = (|| {
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "add", BRIDGE, "type", "bridge"])?;
        // No STP: ports forward at once, as on an access switch with portfast.
        ip(&[
            "-n",
            ns,
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        let server = format!("{}/{PREFIX}", plan::server_ip());
        ip(&["-n", ns, "addr", "add", &server, "dev", BRIDGE])?;
        for n in &lab.nodes {
            let bmc = format!("{}/{PREFIX}", n.bmc_ip);
            ip(&["-n", ns, "addr", "add", &bmc, "dev", BRIDGE])?;
            ip(&["-n", ns, "tuntap", "add", "dev", &n.tap, "mode", "tap"])?;
            ip(&["-n", ns, "link", "set", &n.tap, "master", BRIDGE])?;
            ip(&["-n", ns, "link", "set", &n.tap, "up"])?;
        }
        ip(&["-n", ns, "link", "set", BRIDGE, "up"])
    })();
    if r.is_err() {
        let _ = delete(ns);
    }
    r
}
