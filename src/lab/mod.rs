//! `openchami lab`: a cluster of virtual nodes on one machine, booted by the
//! appliance alone.
//!
//! The lab is the project's end-to-end test and its quick start: a private
//! network namespace with a bridge, the appliance serving DHCP, TFTP, boot
//! scripts, artifacts and cloud-init on it, one qemu per node PXE-booting
//! through real firmware (SeaBIOS + iPXE ROM, or OVMF's own UEFI PXE), and a
//! virtual BMC per node so discovery and power work as on hardware. Nothing
//! touches the host's network: the only host-side socket is a loopback port
//! forwarded to the appliance's API inside the namespace.
//!
//! Pieces: [`plan`] (addresses and names, pure), [`image`] (kernel + busybox
//! initramfs, cached), [`net`] (namespace, bridge, taps through iproute2),
//! [`supervise`] (the one long-lived lab process: owns the appliance, the
//! qemus and the forwarder, and tears everything down at its deadline).
//! The CLI side is `cli/lab.rs`.

pub mod image;
pub mod net;
pub mod plan;
pub mod supervise;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use plan::{Firmware, Lab, LabNode};

/// Files in the lab directory.
pub const LAB_FILE: &str = "lab.json";
pub const SUPERVISOR_FILE: &str = "supervisor.json";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const APPLIANCE_CONFIG: &str = "appliance.toml";
pub const APPLIANCE_LOG: &str = "appliance.log";
pub const SUPERVISOR_LOG: &str = "supervisor.log";

/// What the running supervisor publishes once the lab is serving.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorInfo {
    pub pid: u32,
    /// Loopback port on the host forwarded to the appliance API.
    pub api_port: u16,
    pub appliance_pid: u32,
    /// Unix seconds after which the supervisor tears the lab down.
    pub deadline: i64,
}

impl Lab {
    pub fn load(dir: &Path) -> anyhow::Result<Lab> {
        let p = dir.join(LAB_FILE);
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("no lab in {} (run `openchami lab up`)", dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("cannot parse {}", p.display()))
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let p = self.dir.join(LAB_FILE);
        std::fs::write(&p, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", p.display()))
    }

    pub fn node_dir(&self, xname: &str) -> PathBuf {
        self.dir.join("nodes").join(xname)
    }

    pub fn serial_log(&self, xname: &str) -> PathBuf {
        self.node_dir(xname).join("serial.log")
    }

    /// The VM's serial port (qemu's chardev socket; the BMC's SSH console
    /// is its one client).
    pub fn serial_socket(&self, xname: &str) -> PathBuf {
        self.node_dir(xname).join("serial.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
}

impl SupervisorInfo {
    pub fn load(dir: &Path) -> Option<SupervisorInfo> {
        let text = std::fs::read_to_string(dir.join(SUPERVISOR_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Whether a process exists (signal 0).
pub fn alive(pid: u32) -> bool {
    rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// Sends `sig` to a process; a process already gone is not an error.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Sends `sig` to a process group.
pub fn signal_group(pgid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

/// Processes whose command line mentions `needle` (the lab directory: every
/// lab process names a file in it), except this one.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}
