//! A real head node, set up the way the README says, boots real nodes.
//!
//! No lab code runs the network or the appliance here: two network
//! namespaces stand in for the head node and the cluster network, joined by
//! a veth pair (the node side bridged to a tap, as a hypervisor host does);
//! the appliance binary starts in the head namespace with the README's
//! minimal DHCP configuration, read out of README.md itself (and
//! `examples/config-dhcp.toml`, which must match it), and nothing else. One
//! node is enrolled with `openchami node add` and given boot parameters with
//! `openchami boot params set`, as an operator would. Then one qemu node
//! boots twice: OVMF's own UEFI PXE (TFTP, then iPXE), then SeaBIOS with its
//! iPXE ROM; each must print the marker on its serial console, and the
//! appliance's boot-step records must show the second boot as a new one
//! (start time moved, no step counted twice).
//!
//! The kernel and initramfs (the lab's image builder, used as a library for
//! the boot image only) are served from the TFTP root, which the minimal
//! config serves because DHCP hands out TFTP boot files.
//!
//! Needs root and qemu; without either it is skipped, saying why. Everything
//! else it needs (`.ci/run` installs it) is a failure when missing.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_openchami");
const HEAD_IP: &str = "172.16.0.254";
const NODE: &str = "x1000c0s0b0n0";
const NODE_MAC: &str = "52:54:00:0c:00:01";
const NODE_IP: &str = "172.16.0.10";
/// One boot under TCG on a busy 2-core machine: normally well under a
/// minute (iPXE waits ~13 s for IPv6 with no router advertisement).
const BOOT_LIMIT: Duration = Duration::from_secs(300);
const MARKER: &str = openchami::lab::image::MARKER;
const PHONED_HOME: &str = openchami::lab::image::PHONED_HOME;
const FAILED: &str = openchami::lab::image::FAILED;

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (network namespaces, taps)".into());
    }
    if !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        return Some("needs qemu-system-x86_64 (Debian qemu-system-x86)".into());
    }
    None
}

/// The README's minimal DHCP configuration: the one TOML block of its DHCP
/// section, which must be `examples/config-dhcp.toml` verbatim.
fn readme_minimal_config() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("\n## DHCP\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a DHCP section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the DHCP section has a toml block");
    let example = std::fs::read_to_string(root.join("examples/config-dhcp.toml"))
        .expect("examples/config-dhcp.toml");
    assert_eq!(
        block, example,
        "README's minimal DHCP config and examples/config-dhcp.toml differ"
    );
    block.to_string()
}

/// Runs a command to completion within `limit`, killing it after.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let t = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} took longer than {limit:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    ok(Command::new("ip").args(args));
}

/// The two namespaces, the appliance and any qemu: all removed on drop,
/// whatever happened.
struct HeadNode {
    head: String,
    net: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl HeadNode {
    fn new() -> HeadNode {
        let pid = std::process::id();
        let h = HeadNode {
            head: format!("ochn-head-{pid}"),
            net: format!("ochn-net-{pid}"),
            dir: std::env::temp_dir().join(format!("openchami-headnode-{pid}")),
            children: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&h.dir);
        std::fs::create_dir_all(&h.dir).expect("test dir");
        ip(&["netns", "add", &h.head]);
        ip(&["netns", "add", &h.net]);
        // The head's node-facing interface, and the cluster network: a
        // bridge with the head's cable and the node's tap on it.
        ip(&[
            "-n", &h.head, "link", "add", "eth1", "type", "veth", "peer", "name", "uplink",
            "netns", &h.net,
        ]);
        ip(&[
            "-n",
            &h.head,
            "addr",
            "add",
            &format!("{HEAD_IP}/24"),
            "dev",
            "eth1",
        ]);
        ip(&["-n", &h.head, "link", "set", "lo", "up"]);
        ip(&["-n", &h.head, "link", "set", "eth1", "up"]);
        ip(&["-n", &h.net, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &h.net, "link", "set", "uplink", "master", "br0"]);
        ip(&["-n", &h.net, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ip(&["-n", &h.net, "link", "set", "tap0", "master", "br0"]);
        for l in ["lo", "uplink", "tap0", "br0"] {
            ip(&["-n", &h.net, "link", "set", l, "up"]);
        }
        h
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("appliance.log")).unwrap_or_default()
    }

    /// Starts a process in a namespace, under `timeout` so it cannot
    /// outlive a killed test by long.
    fn spawn(&mut self, ns: &str, secs: u64, args: &[&str], log: &Path) {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "timeout", &secs.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        self.children.push(child);
    }

    /// The CLI in the head namespace, against the appliance's API, as the
    /// README's tour runs it (state dir: CA and a token minted as root).
    fn cli(&self, args: &[&str]) -> String {
        let state = self.state().display().to_string();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.head, BIN, "--state-dir", &state])
            .args(args);
        let out = run(&mut c, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "openchami {}: {}{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn boot_steps(&self) -> Value {
        let token = self.cli(&["token", "issue"]);
        let ca = self.state().join("ca/root.crt").display().to_string();
        let out = ok(Command::new("ip").args([
            "netns",
            "exec",
            &self.head,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
            &ca,
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("https://localhost:8443/boot/v1/boot-steps?name={NODE}"),
        ]));
        let v: Value = serde_json::from_str(&out).expect("boot-steps JSON");
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("no boot-step record for {NODE}: {out}"))
    }

    /// Boots the node once and waits for its console to show the marker
    /// and the phone-home; returns the marker line.
    fn boot(&mut self, uefi: bool) -> String {
        let name = if uefi { "uefi" } else { "bios" };
        let serial = self.dir.join(format!("{name}.serial"));
        let mut args: Vec<String> = [
            "qemu-system-x86_64",
            // TCG: the same everywhere (nested KVM can fail in firmware).
            "-accel",
            "tcg",
            "-m",
            "512",
            "-smp",
            "1",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-serial",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("file:{}", serial.display()));
        args.push("-netdev".into());
        args.push("tap,id=n0,ifname=tap0,script=no,downscript=no".into());
        let mut nic = format!("virtio-net-pci,netdev=n0,mac={NODE_MAC},bootindex=1");
        if uefi {
            let vars = self.dir.join("ovmf_vars.fd");
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF vars (ovmf)");
            args.push("-drive".into());
            args.push(
                "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            );
            args.push("-drive".into());
            args.push(format!("if=pflash,format=raw,file={}", vars.display()));
            // No iPXE option ROM: OVMF's own UEFI PXE, as on real hardware.
            nic.push_str(",romfile=");
        }
        args.extend(["-device".into(), nic, "-boot".into(), "n".into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let net = self.net.clone();
        self.spawn(
            &net,
            BOOT_LIMIT.as_secs() + 30,
            &refs,
            &self.dir.join(format!("{name}.qemu.log")),
        );
        let t = Instant::now();
        loop {
            let console = read_lossy(&serial);
            if let Some(l) = console.lines().find(|l| l.contains(FAILED)) {
                panic!("{name} boot failed: {l}\n{}", self.report(&console));
            }
            if console.contains(PHONED_HOME)
                && let Some(l) = console.lines().find(|l| l.contains(MARKER))
            {
                let line = l.trim().to_string();
                // Let qemu power off before the next boot uses the tap.
                if let Some(mut c) = self.children.pop() {
                    let t = Instant::now();
                    while c.try_wait().ok().flatten().is_none()
                        && t.elapsed() < Duration::from_secs(30)
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return line;
            }
            assert!(
                t.elapsed() < BOOT_LIMIT,
                "{name} boot: no marker within {BOOT_LIMIT:?}\n{}",
                self.report(&console)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn report(&self, console: &str) -> String {
        let lines: Vec<&str> = console.lines().filter(|l| !l.trim().is_empty()).collect();
        let log = self.log();
        let log: Vec<&str> = log.lines().collect();
        let mut qemu = String::new();
        for name in ["uefi", "bios"] {
            qemu.push_str(&read_lossy(&self.dir.join(format!("{name}.qemu.log"))));
        }
        format!(
            "===== serial console (last 60 lines) =====\n{}\n===== qemu =====\n{}\n===== appliance log (last 80 lines) =====\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n"),
            qemu.trim(),
            log[log.len().saturating_sub(80)..].join("\n")
        )
    }
}

impl Drop for HeadNode {
    fn drop(&mut self) {
        for c in &mut self.children {
            // `timeout` passes the signal on to the appliance or qemu.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let t = Instant::now();
        for c in &mut self.children {
            while c.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.net, &self.head] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A file's text without ANSI escapes and carriage returns.
fn read_lossy(path: &Path) -> String {
    let mut raw = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut raw);
    }
    let s = String::from_utf8_lossy(&raw);
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn count(record: &Value, step: &str) -> u64 {
    record["steps"][step]["count"].as_u64().unwrap_or(0)
}

#[test]
fn the_readme_dhcp_config_boots_uefi_and_bios_nodes() {
    let config = readme_minimal_config();
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    for (path, pkg) in [
        ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
        ("/usr/lib/ipxe/ipxe.efi", "ipxe"),
        ("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"),
    ] {
        assert!(Path::new(path).exists(), "{path} missing: install {pkg}");
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-cache");
    let image = openchami::lab::image::ensure(&cache).expect("the boot image (kernel + busybox)");

    let mut h = HeadNode::new();
    // The operator's files: the README's config, and the boot image in the
    // TFTP root (default: <state dir>/tftp).
    let cfg = h.dir.join("config.toml");
    std::fs::write(&cfg, &config).expect("config");
    let tftp = h.state().join("tftp");
    std::fs::create_dir_all(&tftp).expect("tftp root");
    std::fs::copy(&image.kernel, tftp.join("vmlinuz")).expect("kernel");
    std::fs::copy(&image.initrd, tftp.join("initrd.img")).expect("initrd");

    // Checked where it runs: in the head namespace, with its state dir.
    let out = ok(Command::new("ip")
        .args([
            "netns",
            "exec",
            &h.head,
            BIN,
            "serve",
            "--check-config",
            "--config",
        ])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(h.state()));
    assert!(out.contains("configuration is valid"), "{out}");

    let (cfg_s, state_s) = (cfg.display().to_string(), h.state().display().to_string());
    let head = h.head.clone();
    let log = h.dir.join("appliance.log");
    h.spawn(
        &head,
        900,
        &[BIN, "serve", "--config", &cfg_s, "--state-dir", &state_s],
        &log,
    );
    let t = Instant::now();
    while !h.log().contains("appliance ready") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the appliance did not start:\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = h.log();
    for want in [
        "listening for dhcp on eth1",
        "listening for tftp on 0.0.0.0:69 on eth1",
        &format!("nodes on eth1 ({HEAD_IP}) are sent http://{HEAD_IP}:27778"),
    ] {
        assert!(log.contains(want), "no {want:?} in the log:\n{log}");
    }

    h.cli(&[
        "node", "add", NODE, "--nid", "1", "--mac", NODE_MAC, "--ip", NODE_IP,
    ]);
    h.cli(&[
        "boot",
        "params",
        "set",
        "--xname",
        NODE,
        "--kernel",
        &format!("tftp://{HEAD_IP}/vmlinuz"),
        "--initrd",
        &format!("tftp://{HEAD_IP}/initrd.img"),
        "--params",
        "console=ttyS0,115200 panic=-1",
    ]);

    let first = h.boot(true);
    assert_eq!(field(&first, "xname"), Some(NODE), "{first}");
    assert_eq!(field(&first, "ip"), Some(NODE_IP), "{first}");
    let one = h.boot_steps();
    for step in ["dhcp", "tftp", "script", "meta-data", "phone-home"] {
        assert!(count(&one, step) > 0, "UEFI boot: no {step} step: {one:#}");
    }
    assert_eq!(count(&one, "phone-home"), 1, "{one:#}");

    let second = h.boot(false);
    assert_eq!(field(&second, "xname"), Some(NODE), "{second}");
    let two = h.boot_steps();
    let started = |r: &Value| r["boot_started_ms"].as_i64().unwrap_or(0);
    assert!(
        started(&two) > one["last_seen_ms"].as_i64().unwrap_or(i64::MAX),
        "the iPXE-ROM boot is a new boot: {one:#}\n{two:#}"
    );
    for step in ["script", "meta-data", "phone-home"] {
        assert!(
            count(&two, step) <= count(&one, step),
            "{step} counted across boots: {one:#}\n{two:#}"
        );
    }
    assert_eq!(count(&two, "phone-home"), 1, "{two:#}");
    assert_eq!(two["last_step"], "phone-home", "{two:#}");
}
