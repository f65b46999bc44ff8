//! What the namespace tests (DHCP, DNS, the README tour) need from the host:
//! root, the real programs they run, and a way to run them that fails loudly.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// True when the test may run: root and every `(program, Debian package)`
/// (`what` names the test and its verb: "DNS tests need")
/// present. Outside CI a missing one skips the test, saying what to
/// install; in CI it fails it, because `.ci/run` installs them.
pub fn prerequisites(what: &str, tools: &[(&str, &str)]) -> bool {
    let mut missing: Vec<String> = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root (network namespaces)".into());
    }
    for (bin, pkg) in tools {
        if which(bin).is_none() {
            missing.push(format!("`{bin}` (apt-get install {pkg})"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{what} {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; .ci/run installs them");
    }
    eprintln!("skipped: {msg}");
    false
}

/// A program on `PATH` or in the sbin directories (root's tools).
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Runs a set-up command; its failure fails the test with its output.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
