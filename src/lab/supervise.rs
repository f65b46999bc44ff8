//! The lab's one long-lived process.
//!
//! `lab up` returns once nodes are booting, so something must own what keeps
//! running: the appliance, each node's qemu, the virtual BMCs and the API
//! forwarder. This process does, in its own process group, and tears it all
//! down — processes, then the namespace — on SIGTERM (`lab down`), when the
//! appliance dies, or at the lab's deadline, so an abandoned lab cannot
//! outlive its TTL. Every child is additionally wrapped in `timeout`, so
//! even a supervisor killed with SIGKILL leaves nothing running for long.
//!
//! It binds its loopback forwarder in the host namespace first and then moves
//! into the lab namespace (setns, before any thread exists), so everything it
//! starts or connects to afterwards is inside the lab.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::process::{Child, Command};

use super::plan::{self, Firmware, Lab, LabNode};
use super::{APPLIANCE_CONFIG, APPLIANCE_LOG, CONTROL_SOCKET, SUPERVISOR_FILE, SupervisorInfo};
use crate::redfish::sim::{PowerHook, SimBmcs, SimConfig};
use crate::redfish::simssh::{self, ConsoleFeed, SshConsoles, SshSimConfig};

/// API port of the appliance inside the lab.
pub const API_PORT: u16 = 8443;
pub const NODE_PORT: u16 = 27778;
/// The virtual BMCs: Redfish over HTTPS, as real ones.
pub const BMC_PORT: u16 = 443;
pub const BMC_USER: &str = "admin";
/// The virtual BMCs' serial console over SSH (Redfish `SerialConsole.SSH`):
/// port 22 of the BMC's address, where the appliance's console service
/// looks by default.
pub const BMC_SSH_PORT: u16 = 22;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Entry point of `openchami lab supervise --dir DIR`.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    let lab = Lab::load(dir)?;
    let fwd =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the API forwarder")?;
    fwd.set_nonblocking(true)?;
    let ns_path = Path::new("/run/netns").join(&lab.netns);
    let ns = std::fs::File::open(&ns_path)
        .with_context(|| format!("cannot open {}", ns_path.display()))?;
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .context("cannot enter the lab namespace")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(supervise(lab.clone(), fwd));
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = super::net::delete(&lab.netns) {
        tracing::warn!(error = %e, "cannot delete the lab namespace");
    }
    let _ = std::fs::remove_file(dir.join(SUPERVISOR_FILE));
    let _ = std::fs::remove_file(dir.join(CONTROL_SOCKET));
    tracing::info!("lab down");
    r
}

/// Why the lab ends.
#[derive(Debug)]
enum End {
    Signal,
    Deadline,
    ApplianceExited(String),
}

async fn supervise(lab: Lab, fwd: std::net::TcpListener) -> anyhow::Result<()> {
    let fwd = TcpListener::from_std(fwd)?;
    let api_port = fwd.local_addr()?.port();
    let deadline = chrono::Utc::now().timestamp() + lab.ttl_secs as i64;
    let mut appliance = start_appliance(&lab)?;
    let appliance_pid = appliance.id().unwrap_or(0);

    let api = std::net::SocketAddr::from((plan::server_ip(), API_PORT));
    wait_port(api, &mut appliance).await?;
    // Listeners are bound before the CA exists on a first start.
    let root = lab.state_dir().join("ca").join("root.crt");
    for _ in 0..600 {
        if root.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let power = Arc::new(Power::new(lab.clone()));
    let bmcs = start_bmcs(&lab, power.clone()).await?;
    let consoles = start_consoles(&lab, &power).await?;
    let control = UnixListener::bind(lab.dir.join(CONTROL_SOCKET))?;
    let info = SupervisorInfo {
        pid: std::process::id(),
        api_port,
        appliance_pid,
        deadline,
    };
    std::fs::write(
        lab.dir.join(SUPERVISOR_FILE),
        serde_json::to_vec_pretty(&info)?,
    )?;
    tracing::info!(api_port, "lab up: API forwarded from 127.0.0.1:{api_port}");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let ttl = tokio::time::sleep(Duration::from_secs(lab.ttl_secs));
    tokio::pin!(ttl);
    let end = loop {
        tokio::select! {
            _ = term.recv() => break End::Signal,
            _ = int.recv() => break End::Signal,
            _ = &mut ttl => break End::Deadline,
            st = appliance.wait() => break End::ApplianceExited(format!("{st:?}")),
            c = fwd.accept() => if let Ok((conn, _)) = c {
                tokio::spawn(forward(conn, api));
            },
            c = control.accept() => if let Ok((conn, _)) = c {
                tokio::spawn(serve_control(conn, power.clone()));
            },
        }
    };
    tracing::info!(reason = ?end, "tearing the lab down");
    bmcs.shutdown().await;
    consoles.shutdown().await;
    power.all_off().await;
    stop(&mut appliance, Duration::from_secs(10)).await;
    match end {
        End::ApplianceExited(s) => bail!("the appliance exited ({s}); see {APPLIANCE_LOG}"),
        _ => Ok(()),
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop(c: &mut Child, grace: Duration) {
    if let Some(pid) = c.id() {
        super::signal(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(grace, c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

fn log_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The appliance, under `ip netns exec` (which also gives it the lab's own
/// /sys) and `timeout` (the lab's deadline, even if this process dies).
fn start_appliance(lab: &Lab) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let log = log_file(&lab.dir.join(APPLIANCE_LOG))?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.netns, "timeout", "-k", "5"])
        .arg((lab.ttl_secs + 30).to_string())
        .arg(exe)
        .arg("--config")
        .arg(lab.dir.join(APPLIANCE_CONFIG))
        .arg("serve")
        .env("RUST_LOG", "info,openchami=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    c.spawn().context("cannot start the appliance")
}

/// Waits until the appliance accepts connections on `addr`.
async fn wait_port(addr: std::net::SocketAddr, appliance: &mut Child) -> anyhow::Result<()> {
    for _ in 0..600 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = appliance.try_wait() {
            bail!("the appliance exited during start-up ({st}); see {APPLIANCE_LOG}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the appliance did not listen on {addr} within 60 s; see {APPLIANCE_LOG}")
}

async fn forward(mut conn: TcpStream, to: std::net::SocketAddr) {
    if let Ok(mut up) = TcpStream::connect(to).await {
        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
    }
}

/// One line per request: `on <xname>`, `off <xname>`, `state`.
async fn serve_control(conn: tokio::net::UnixStream, power: Arc<Power>) {
    let (r, mut w) = conn.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut it = line.split_whitespace();
        let answer = match (it.next(), it.next()) {
            (Some("on"), Some(x)) => power.on(x).map(|_| "ok".to_string()),
            (Some("off"), Some(x)) => power.off(x).await.map(|_| "ok".to_string()),
            (Some("state"), None) => {
                serde_json::to_string(&power.states()).map_err(anyhow::Error::from)
            }
            _ => Err(anyhow::anyhow!("unknown request {line:?}")),
        };
        let out = match answer {
            Ok(s) => format!("{s}\n"),
            Err(e) => format!("error: {e:#}\n"),
        };
        if w.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Each node's qemu: started on power-on, killed on power-off; its exit (the
/// node powered itself off, or its time ran out) is power-off too.
pub struct Power {
    lab: Lab,
    running: Mutex<HashMap<String, u32>>,
    /// Each node's serial port as its BMC's SSH console serves it.
    feeds: HashMap<String, ConsoleFeed>,
    /// Keystrokes typed on each console, taken by its serial bridge.
    keys: Mutex<HashMap<String, tokio::sync::mpsc::Receiver<bytes::Bytes>>>,
}

impl Power {
    pub fn new(lab: Lab) -> Power {
        let mut feeds = HashMap::new();
        let mut keys = HashMap::new();
        for n in &lab.nodes {
            let (f, k) = ConsoleFeed::new();
            feeds.insert(n.xname.clone(), f);
            keys.insert(n.xname.clone(), k);
        }
        Power {
            lab,
            running: Mutex::new(HashMap::new()),
            feeds,
            keys: Mutex::new(keys),
        }
    }

    fn node(&self, xname: &str) -> anyhow::Result<&LabNode> {
        self.lab
            .nodes
            .iter()
            .find(|n| n.xname == xname)
            .with_context(|| format!("{xname} is not a node of this lab"))
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_on(&self, xname: &str) -> bool {
        self.running().contains_key(xname)
    }

    pub fn states(&self) -> HashMap<String, &'static str> {
        let r = self.running();
        self.lab
            .nodes
            .iter()
            .map(|n| {
                let s = if r.contains_key(&n.xname) {
                    "On"
                } else {
                    "Off"
                };
                (n.xname.clone(), s)
            })
            .collect()
    }

    /// Starts the node's qemu unless it runs.
    pub fn on(self: &Arc<Self>, xname: &str) -> anyhow::Result<()> {
        let node = self.node(xname)?.clone();
        if self.is_on(xname) {
            return Ok(());
        }
        let dir = self.lab.node_dir(xname);
        std::fs::create_dir_all(&dir)?;
        if node.firmware == Firmware::Uefi {
            // Fresh NVRAM per power-on: boot order as the firmware decides.
            std::fs::copy(OVMF_VARS, dir.join("ovmf_vars.fd"))
                .with_context(|| format!("cannot copy {OVMF_VARS} (install ovmf)"))?;
        }
        let serial = self.lab.serial_log(xname);
        let socket = self.lab.serial_socket(xname);
        let _ = std::fs::remove_file(&socket);
        let log = log_file(&dir.join("qemu.log"))?;
        {
            use std::io::Write as _;
            let banner = format!(
                "\r\n=== openchami lab: power on {} at {} ===\r\n",
                xname,
                chrono::Utc::now().to_rfc3339()
            );
            let mut s = log_file(&serial)?;
            let _ = s.write_all(banner.as_bytes());
            if let Some(f) = self.feeds.get(xname) {
                let _ = f.output.send(bytes::Bytes::from(banner));
            }
        }
        let args = qemu_args(&self.lab, &node, &dir, &serial, &socket);
        let mut child = Command::new("timeout")
            .args(["-k", "5"])
            .arg(self.lab.node_timeout_secs.to_string())
            .arg(&self.lab.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start qemu")?;
        let pid = child.id().unwrap_or(0);
        self.running().insert(xname.to_string(), pid);
        tracing::info!(xname, pid, firmware = node.firmware.name(), "power on");
        let me = self.clone();
        let x = xname.to_string();
        tokio::spawn(async move {
            let st = child.wait().await;
            tracing::info!(xname = %x, status = ?st, "node powered off");
            let mut r = me.running();
            if r.get(&x) == Some(&pid) {
                r.remove(&x);
            }
        });
        Ok(())
    }

    /// Asks the node's qemu to stop; returns at once.
    pub fn stop(&self, xname: &str) -> anyhow::Result<()> {
        self.node(xname)?;
        if let Some(pid) = self.running().get(xname).copied() {
            super::signal(pid, rustix::process::Signal::TERM);
        }
        Ok(())
    }

    /// Stops the node's qemu (a forced power-off) and waits for it.
    pub async fn off(&self, xname: &str) -> anyhow::Result<()> {
        self.node(xname)?;
        let pid = self.running().get(xname).copied();
        if let Some(pid) = pid {
            super::signal(pid, rustix::process::Signal::TERM);
            for _ in 0..50 {
                if !self.is_on(xname) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    pub async fn all_off(&self) {
        let xs: Vec<String> = self.running().keys().cloned().collect();
        for x in xs {
            let _ = self.off(&x).await;
        }
    }
}

/// What a virtual BMC's `ComputerSystem.Reset` does: BMC `i` is node `i`'s.
struct LabHook {
    power: Arc<Power>,
}

impl LabHook {
    fn xname(&self, bmc: usize) -> Result<String, String> {
        self.power
            .lab
            .nodes
            .get(bmc)
            .map(|n| n.xname.clone())
            .ok_or_else(|| format!("no node behind BMC {bmc}"))
    }
}

impl PowerHook for LabHook {
    fn reset(&self, bmc: usize, _system: usize, reset_type: &str) -> Result<(), String> {
        let x = self.xname(bmc)?;
        let p = &self.power;
        match reset_type {
            "On" => p.on(&x).map_err(|e| format!("{e:#}")),
            "ForceOff" | "GracefulShutdown" => p.stop(&x).map_err(|e| format!("{e:#}")),
            _ => {
                // A restart: off, then on once the VM has gone.
                p.stop(&x).map_err(|e| format!("{e:#}"))?;
                let p = p.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        if !p.is_on(&x) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if let Err(e) = p.on(&x) {
                        tracing::warn!(xname = %x, error = %e, "restart: cannot power on");
                    }
                });
                Ok(())
            }
        }
    }

    /// The VM is the truth: a node that powered itself off is off.
    fn power_state(&self, bmc: usize, _system: usize) -> Option<bool> {
        self.xname(bmc).ok().map(|x| self.power.is_on(&x))
    }
}

/// One simulated BMC per node on its BMC address (port 443, TLS, sessions),
/// its Reset wired to the node's qemu.
async fn start_bmcs(lab: &Lab, power: Arc<Power>) -> anyhow::Result<SimBmcs> {
    let mut cfg = SimConfig::loopback(0);
    cfg.ssh_console_port = Some(BMC_SSH_PORT);
    cfg.addrs = lab
        .nodes
        .iter()
        .map(|n| std::net::SocketAddr::from((n.bmc_ip, BMC_PORT)))
        .collect();
    cfg.username = BMC_USER.into();
    cfg.password = lab.bmc_password.clone();
    let hook: Arc<dyn PowerHook> = Arc::new(LabHook { power });
    SimBmcs::start(cfg, Some(hook))
        .await
        .context("cannot start the virtual BMCs")
}

/// Each BMC's SSH console on its address, port 22 (host key made now,
/// the BMC's credentials), and a bridge per node between its console and
/// its VM's serial socket, reconnecting as the VM comes and goes.
async fn start_consoles(lab: &Lab, power: &Arc<Power>) -> anyhow::Result<SshConsoles> {
    let cfg = SshSimConfig {
        addrs: lab
            .nodes
            .iter()
            .map(|n| std::net::SocketAddr::from((n.bmc_ip, BMC_SSH_PORT)))
            .collect(),
        username: BMC_USER.into(),
        password: lab.bmc_password.clone(),
        host_key: simssh::host_key()?,
    };
    let feeds: Vec<ConsoleFeed> = lab
        .nodes
        .iter()
        .filter_map(|n| power.feeds.get(&n.xname).cloned())
        .collect();
    let consoles = SshConsoles::start(cfg, feeds)
        .await
        .context("cannot start the virtual BMCs' SSH consoles")?;
    let mut keys = power.keys.lock().unwrap_or_else(|p| p.into_inner());
    for n in &lab.nodes {
        if let (Some(feed), Some(k)) = (power.feeds.get(&n.xname), keys.remove(&n.xname)) {
            tokio::spawn(serial_bridge(lab.serial_socket(&n.xname), feed.clone(), k));
        }
    }
    Ok(consoles)
}

/// Copies a VM's serial output to its console feed and keystrokes back,
/// for each VM that comes up on the socket; keystrokes while no VM runs
/// are dropped, as a real serial line drops them.
async fn serial_bridge(
    socket: PathBuf,
    feed: ConsoleFeed,
    mut keys: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok(conn) = tokio::net::UnixStream::connect(&socket).await else {
            while keys.try_recv().is_ok() {}
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut r, mut w) = conn.into_split();
        loop {
            tokio::select! {
                n = r.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = feed.output.send(bytes::Bytes::copy_from_slice(&buf[..n]));
                    }
                },
                Some(k) = keys.recv() => {
                    if w.write_all(&k).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// The qemu command line of a node: no disks, PXE from a virtio NIC on its
/// tap, serial port on a socket (its BMC's console connects there) and
/// appended to its log, and no reboot (a node that powers off stays off, as
/// the BMC then reports).
pub fn qemu_args(
    lab: &Lab,
    node: &LabNode,
    dir: &Path,
    serial: &Path,
    socket: &Path,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &str| a.push(s.to_string());
    push("-name");
    push(&node.xname);
    push("-accel");
    push(if lab.kvm { "kvm" } else { "tcg" });
    push("-m");
    push(&lab.memory_mb.to_string());
    push("-smp");
    push("1");
    push("-display");
    push("none");
    push("-monitor");
    push("none");
    push("-no-reboot");
    push("-chardev");
    push(&format!(
        "socket,id=ser0,path={},server=on,wait=off,logfile={},logappend=on",
        socket.display(),
        serial.display()
    ));
    push("-serial");
    push("chardev:ser0");
    push("-netdev");
    push(&format!(
        "tap,id=n0,ifname={},script=no,downscript=no",
        node.tap
    ));
    let mut nic = format!("virtio-net-pci,netdev=n0,mac={},bootindex=1", node.mac);
    if node.firmware == Firmware::Uefi {
        let vars: PathBuf = dir.join("ovmf_vars.fd");
        push("-drive");
        push(&format!(
            "if=pflash,format=raw,readonly=on,file={OVMF_CODE}"
        ));
        push("-drive");
        push(&format!("if=pflash,format=raw,file={}", vars.display()));
        // No iPXE option ROM: OVMF's own UEFI PXE runs, as on real hardware.
        nic.push_str(",romfile=");
    }
    push("-device");
    push(&nic);
    push("-boot");
    push("n");
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::plan::{FirmwareMix, nodes};

    #[test]
    fn qemu_boots_from_the_network_without_disks() {
        let ns = nodes(2, FirmwareMix::Mixed);
        let lab = Lab {
            netns: "t".into(),
            dir: "/lab".into(),
            nodes: ns.clone(),
            ttl_secs: 60,
            node_timeout_secs: 60,
            memory_mb: 384,
            qemu: "qemu-system-x86_64".into(),
            kvm: false,
            bmc_password: "p".into(),
        };
        let bios = qemu_args(
            &lab,
            &ns[0],
            Path::new("/lab/n0"),
            Path::new("/lab/n0/serial.log"),
            Path::new("/lab/n0/serial.sock"),
        )
        .join(" ");
        assert!(bios.contains("-accel tcg"));
        assert!(bios.contains("ifname=tap0"));
        assert!(bios.contains("mac=02:00:00:00:00:00,bootindex=1 "));
        assert!(!bios.contains("pflash") && !bios.contains("romfile"));
        assert!(!bios.contains("-hda") && !bios.contains("if=virtio"));
        let uefi = qemu_args(
            &lab,
            &ns[1],
            Path::new("/lab/n1"),
            Path::new("/lab/n1/serial.log"),
            Path::new("/lab/n1/serial.sock"),
        )
        .join(" ");
        assert!(uefi.contains(OVMF_CODE));
        assert!(uefi.contains("file=/lab/n1/ovmf_vars.fd"));
        assert!(uefi.contains("romfile="));
        assert!(uefi.contains(
            "socket,id=ser0,path=/lab/n1/serial.sock,server=on,wait=off,logfile=/lab/n1/serial.log,logappend=on"
        ));
    }
}
