//! `openchami lab up|status|console|down|env`: the one-machine lab.
//!
//! `up` does what an operator does on a new cluster, through the same API:
//! it starts an appliance (inside the lab namespace, see `lab::supervise`),
//! enrolls the nodes, sets their boot parameters and powers them on; the
//! nodes then boot through the appliance alone. `status` reads the
//! appliance's boot-step records, the same ones a real cluster has.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, table};
use super::{Global, NodeAddArgs};
use crate::config::Config;
use crate::lab::plan::{self, Firmware, FirmwareMix, Lab};
use crate::lab::supervise::{
    API_PORT, BMC_PORT, BMC_SSH_PORT, BMC_USER, NODE_PORT, OVMF_CODE, OVMF_VARS,
};
use crate::lab::{self, SupervisorInfo, image, net};

/// Where labs live unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "/var/tmp/openchami-lab";

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Create the lab and boot its nodes (root)
    Up(UpArgs),
    /// Nodes, power and the last boot step each reached
    Status(DirArg),
    /// Print a node's serial console (and follow it) from the appliance's
    /// console log, as `openchami console <xname> --tail --follow` does
    Console {
        xname: String,
        /// Print what is there and exit
        #[arg(long)]
        no_follow: bool,
        /// Attach to the console and type (Ctrl-] leaves)
        #[arg(long, conflicts_with = "no_follow")]
        interactive: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Remove the lab: processes, namespace, state (the image cache stays)
    Down(DirArg),
    /// Print shell exports that point the CLI at the lab's appliance
    Env(DirArg),
    /// Run the lab's processes (started by `up`)
    #[command(hide = true)]
    Supervise(DirArg),
}

#[derive(Args, Debug, Clone)]
pub struct DirArg {
    /// Lab directory (state, logs, serial consoles)
    #[arg(long, env = "OPENCHAMI_LAB_DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Number of virtual nodes
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Every node boots with UEFI (OVMF's own PXE)
    #[arg(long, conflicts_with_all = ["bios", "mixed"])]
    pub uefi: bool,
    /// Every node boots with SeaBIOS and the iPXE option ROM (the default)
    #[arg(long, conflicts_with = "mixed")]
    pub bios: bool,
    /// BIOS and UEFI nodes alternately
    #[arg(long)]
    pub mixed: bool,
    #[command(flatten)]
    pub dir: DirArg,
    /// Network namespace name
    #[arg(long, default_value = "openchami-lab")]
    pub name: String,
    /// Boot image cache [default: <dir>/../openchami-lab-cache]
    #[arg(long, env = "OPENCHAMI_LAB_CACHE")]
    pub cache: Option<PathBuf>,
    /// The lab removes itself after this long (e.g. 90m, 4h)
    #[arg(long, default_value = "4h")]
    pub ttl: String,
    /// A node's qemu is stopped after this long per power-on
    #[arg(long, default_value = "15m")]
    pub node_timeout: String,
    /// Memory per node, MiB
    #[arg(long, default_value_t = 384)]
    pub memory: u32,
    /// Enroll and configure, but leave the nodes off
    #[arg(long)]
    pub no_power_on: bool,
    /// Wait until every node printed its marker (or failed), up to this long
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "10m")]
    pub wait: Option<String>,
}

pub fn run(global: &Global, cmd: LabCmd) -> anyhow::Result<()> {
    match cmd {
        LabCmd::Up(a) => {
            need_root("lab up")?;
            up(global, &a)
        }
        LabCmd::Status(d) => status(global, &d.dir),
        LabCmd::Console {
            xname,
            no_follow,
            interactive,
            dir,
        } => {
            let mode = if interactive {
                ConsoleMode::Interactive
            } else if no_follow {
                ConsoleMode::Print
            } else {
                ConsoleMode::Follow
            };
            console(global, &dir.dir, &xname, mode)
        }
        LabCmd::Down(d) => {
            need_root("lab down")?;
            down(&d.dir)
        }
        LabCmd::Env(d) => {
            print!("{}", env_lines(&d.dir)?);
            Ok(())
        }
        LabCmd::Supervise(d) => {
            init_logging();
            lab::supervise::run(&d.dir)
        }
    }
}

fn need_root(what: &str) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "{what} needs root (it creates a network namespace, taps and virtual machines): run it with sudo"
        );
    }
    Ok(())
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Tools the lab runs, and the Debian package each comes from.
fn check_tools(lab: &Lab) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("timeout", "coreutils"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ] {
        if which(tool).is_none() {
            missing.push(pkg);
        }
    }
    let uefi = lab.nodes.iter().any(|n| n.firmware == Firmware::Uefi);
    if uefi && !(Path::new(OVMF_CODE).exists() && Path::new(OVMF_VARS).exists()) {
        missing.push("ovmf");
    }
    if !Path::new("/usr/lib/ipxe/undionly.kpxe").exists() && uefi {
        missing.push("ipxe");
    }
    let bios = lab.nodes.iter().any(|n| n.firmware == Firmware::Bios);
    if bios && !Path::new("/usr/lib/ipxe/qemu/efi-virtio.rom").exists() {
        missing.push("ipxe-qemu");
    }
    if !missing.is_empty() {
        missing.dedup();
        bail!("the lab needs: apt-get install {}", missing.join(" "));
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The appliance's configuration inside the lab.
fn appliance_config(lab: &Lab) -> String {
    let server = plan::server_ip();
    let dir = lab.dir.display();
    format!(
        r#"# Written by `openchami lab up`.
state_dir = "{dir}/state"
cluster_name = "lab"

[api]
listen = "{server}:{API_PORT}"
names = ["127.0.0.1", "localhost", "{server}"]

[node]
listen = "{server}:{NODE_PORT}"
advertise = "http://{server}:{NODE_PORT}"

[boot]
artifacts_dir = "{dir}/artifacts"
ipv6_ra_interfaces = ["{br}"]

[tftp]
enabled = true
listen = "{server}:69"
root = "{dir}/tftp"

[dhcp]
enabled = true
interfaces = ["{br}"]

[[dhcp.subnets]]
cidr = "{net}/{prefix}"
pool = "{lo}-{hi}"

# The virtual BMCs' SSH consoles: found soon after discovery, retried soon.
[console]
ssh_port = {ssh}
refresh_secs = 2
backoff_max_secs = 10
"#,
        ssh = BMC_SSH_PORT,
        br = plan::BRIDGE,
        net = plan::addr(0),
        prefix = plan::PREFIX,
        lo = plan::addr(plan::POOL.0),
        hi = plan::addr(plan::POOL.1),
    )
}

/// Stops whatever a previous lab in `dir` (or namespace `netns`) left.
/// `wipe` also removes the previous lab's logs and consoles (`up` does;
/// `down` keeps them for a post-mortem).
fn clean_leftovers(dir: &Path, netns: Option<&str>, wipe: bool) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let old = Lab::load(dir).ok();
    if let Some(info) = SupervisorInfo::load(dir)
        && lab::alive(info.pid)
    {
        lab::signal(info.pid, rustix::process::Signal::TERM);
        let t = Instant::now();
        while lab::alive(info.pid) && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if lab::alive(info.pid) {
            lab::signal_group(info.pid, rustix::process::Signal::KILL);
        }
        done.push(format!("stopped supervisor {}", info.pid));
    }
    let needle = format!("{}/", dir.display());
    for round in 0..2 {
        let pids = lab::processes_mentioning(&needle);
        for pid in &pids {
            let sig = if round == 0 {
                rustix::process::Signal::TERM
            } else {
                rustix::process::Signal::KILL
            };
            lab::signal(*pid, sig);
        }
        if pids.is_empty() {
            break;
        }
        done.push(format!("stopped {} leftover process(es)", pids.len()));
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut names: Vec<String> = old.map(|l| vec![l.netns]).unwrap_or_default();
    names.extend(netns.map(str::to_string));
    names.dedup();
    for ns in names {
        if net::exists(&ns) {
            net::delete(&ns)?;
            done.push(format!("deleted namespace {ns}"));
        }
    }
    for f in [lab::SUPERVISOR_FILE, lab::CONTROL_SOCKET, lab::LAB_FILE] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    for d in ["state", "artifacts", "tftp"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    if wipe {
        let _ = std::fs::remove_dir_all(dir.join("nodes"));
        for f in [lab::APPLIANCE_LOG, lab::SUPERVISOR_LOG] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    Ok(done)
}

fn up(global: &Global, a: &UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if a.nodes == 0 || a.nodes > plan::MAX_NODES {
        bail!("--nodes must be between 1 and {}", plan::MAX_NODES);
    }
    if !plan::valid_netns_name(&a.name) {
        bail!("--name must be at most 32 letters, digits, - or _");
    }
    let mix = if a.uefi {
        FirmwareMix::Uefi
    } else if a.mixed {
        FirmwareMix::Mixed
    } else {
        FirmwareMix::Bios
    };
    let dir = absolute(&a.dir.dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let qemu = which("qemu-system-x86_64").unwrap_or_else(|| "qemu-system-x86_64".into());
    let lab = Lab {
        netns: a.name.clone(),
        dir: dir.clone(),
        nodes: plan::nodes(a.nodes, mix),
        ttl_secs: super::commands::parse_duration(&a.ttl)?.as_secs().max(60),
        node_timeout_secs: super::commands::parse_duration(&a.node_timeout)?
            .as_secs()
            .max(30),
        memory_mb: a.memory.clamp(128, 4096),
        qemu,
        kvm: kvm_usable(),
        bmc_password: uuid::Uuid::new_v4().simple().to_string(),
    };
    check_tools(&lab)?;
    let recorded_here = Lab::load(&dir).is_ok_and(|l| l.netns == lab.netns);
    let owner = net::owner(&lab.netns);
    let owner_running = owner
        .as_deref()
        .and_then(SupervisorInfo::load)
        .is_some_and(|i| lab::alive(i.pid));
    let inside = if net::exists(&lab.netns) {
        net::processes_in(&lab.netns)
    } else {
        0
    };
    if let NetnsUse::Taken(why) = netns_use(
        &lab.netns,
        &dir,
        recorded_here,
        owner.as_deref(),
        owner_running,
        inside,
    ) {
        bail!(why);
    }
    for line in clean_leftovers(&dir, Some(&lab.netns), true)? {
        println!("cleaned up: {line}");
    }

    let cache = match &a.cache {
        Some(c) => absolute(c)?,
        None => dir
            .parent()
            .unwrap_or(Path::new("/var/tmp"))
            .join("openchami-lab-cache"),
    };
    std::fs::create_dir_all(&cache)?;
    let img = image::ensure(&cache).context("cannot build the boot image")?;
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    std::fs::copy(&img.kernel, artifacts.join("vmlinuz"))?;
    std::fs::copy(&img.initrd, artifacts.join("initrd.img"))?;
    std::fs::create_dir_all(dir.join("tftp"))?;
    std::fs::create_dir_all(dir.join("nodes"))?;
    std::fs::write(dir.join(lab::APPLIANCE_CONFIG), appliance_config(&lab))?;
    lab.save()?;
    println!(
        "boot image: Linux {} + busybox initramfs ({})",
        img.kernel_version,
        cache.display()
    );

    net::create(&lab)?;
    let result = start_and_enroll(global, &lab, a, started);
    if let Err(e) = &result
        && !keeps_lab(e)
    {
        let _ = clean_up_after_failure(&lab);
    }
    result
}

/// Whether a namespace name may be (re)used by the lab in `dir`.
#[derive(Debug, PartialEq, Eq)]
enum NetnsUse {
    /// This directory's lab (or nobody's leftover): deleted and made anew.
    Free,
    /// Another lab's, or holds processes that are not this lab's.
    Taken(String),
}

fn netns_use(
    netns: &str,
    dir: &Path,
    recorded_here: bool,
    owner: Option<&Path>,
    owner_running: bool,
    processes_inside: usize,
) -> NetnsUse {
    if recorded_here || owner == Some(dir) {
        return NetnsUse::Free;
    }
    if let Some(other) = owner
        && owner_running
    {
        return NetnsUse::Taken(format!(
            "namespace {netns} belongs to the running lab in {}: give this lab another --name, or remove that one with `openchami lab down --dir {}`",
            other.display(),
            other.display()
        ));
    }
    if processes_inside > 0 {
        return NetnsUse::Taken(format!(
            "namespace {netns} exists with {processes_inside} process(es) in it that are not this lab's: give this lab another --name"
        ));
    }
    NetnsUse::Free
}

/// The nodes' boot did not finish in time or failed: the lab itself is up
/// and is what one looks at next (status, consoles), so it stays.
#[derive(Debug)]
struct BootWait(String);

impl std::fmt::Display for BootWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BootWait {}

/// Whether `up` keeps the lab after this error (only boot outcomes).
fn keeps_lab(e: &anyhow::Error) -> bool {
    e.is::<BootWait>()
}

fn clean_up_after_failure(lab: &Lab) -> anyhow::Result<()> {
    eprintln!(
        "lab up failed; removing the lab (logs stay in {})",
        lab.dir.display()
    );
    down_inner(&lab.dir, false)
}

fn kvm_usable() -> bool {
    std::env::var_os("OPENCHAMI_LAB_KVM").is_some_and(|v| v == "1")
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Starts the supervisor and waits for it to publish the API port.
fn start_supervisor(lab: &Lab) -> anyhow::Result<SupervisorInfo> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.dir.join(lab::SUPERVISOR_LOG))?;
    let mut child = std::process::Command::new(exe)
        .args(["lab", "supervise", "--dir"])
        .arg(&lab.dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the lab supervisor")?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(90) {
        if let Some(info) = SupervisorInfo::load(&lab.dir) {
            return Ok(info);
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!(
                "the lab supervisor exited ({st}):\n{}\n{}",
                tail(&lab.dir.join(lab::SUPERVISOR_LOG), 20),
                tail(&lab.dir.join(lab::APPLIANCE_LOG), 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the lab did not come up within 90 s:\n{}",
        tail(&lab.dir.join(lab::APPLIANCE_LOG), 20)
    )
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!("--- {} ---\n{}", path.display(), lines[from..].join("\n"))
}

/// The appliance configuration and a client for the lab's API.
fn lab_client(global: &Global, dir: &Path) -> anyhow::Result<(Client, Config)> {
    let info = SupervisorInfo::load(dir)
        .with_context(|| format!("no running lab in {}", dir.display()))?;
    if !lab::alive(info.pid) {
        bail!(
            "the lab in {} is not running (run `openchami lab up`)",
            dir.display()
        );
    }
    let config = Config::load(Some(&dir.join(lab::APPLIANCE_CONFIG)))?;
    let g = Global {
        url: Some(format!("https://127.0.0.1:{}", info.api_port)),
        cacert: Some(config.state_dir.join("ca").join("root.crt")),
        token: global.token.clone(),
        config: None,
        state_dir: None,
        output: global.output,
    };
    Ok((Client::from_global(&g, &config)?, config))
}

fn start_and_enroll(
    global: &Global,
    lab: &Lab,
    a: &UpArgs,
    started: Instant,
) -> anyhow::Result<()> {
    let info = start_supervisor(lab)?;
    println!(
        "appliance up in namespace {} ({}), API forwarded to https://127.0.0.1:{}",
        lab.netns,
        plan::server_ip(),
        info.api_port
    );
    let (client, _) = lab_client(global, &lab.dir)?;
    let rt = runtime()?;
    rt.block_on(async {
        let t = Instant::now();
        loop {
            match client.get("/readyz").await {
                Ok(_) => return Ok(()),
                Err(e) if t.elapsed() > Duration::from_secs(60) => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })?;
    rt.block_on(enroll(&client, lab))?;
    println!(
        "enrolled {} node(s) in group compute; boot configuration set for group compute",
        lab.nodes.len()
    );
    let found = rt.block_on(discover_bmcs(&client, lab))?;
    print!("discovered the virtual BMCs:\n{found}");
    if !a.no_power_on {
        let out = rt.block_on(power_on(&client, lab))?;
        print!("{out}");
        println!("powered on through the appliance: {}", names(lab));
    }
    println!(
        "watch:   openchami lab status --dir {d}\n         openchami lab console {x} --dir {d}\n\
         use the CLI: eval \"$(openchami lab env --dir {d})\"\nremove:  openchami lab down --dir {d}",
        d = lab.dir.display(),
        x = lab.nodes[0].xname
    );
    if let Some(w) = &a.wait {
        let limit = super::commands::parse_duration(w)?;
        wait_for_markers(lab, limit, started)?;
    }
    Ok(())
}

fn names(lab: &Lab) -> String {
    lab.nodes
        .iter()
        .map(|n| format!("{} ({})", n.xname, n.firmware.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inventory, cloud-init defaults and the group's boot configuration,
/// through the API.
async fn enroll(client: &Client, lab: &Lab) -> anyhow::Result<()> {
    for n in &lab.nodes {
        let args = NodeAddArgs {
            xname: n.xname.clone(),
            nid: Some(n.nid),
            macs: vec![n.mac.clone()],
            ip: Some(n.ip.to_string()),
            role: Some("Compute".into()),
            subrole: None,
            groups: vec!["compute".into()],
            state: "Ready".into(),
            move_macs: false,
        };
        super::commands::node_add(client, &args).await?;
    }
    client
        .send(
            Method::POST,
            "/cloud-init/admin/cluster-defaults",
            Some(&json!({"cluster-name": "lab", "short-name": "node", "nid-length": 2})),
        )
        .await?;
    let base = format!("http://{}:{NODE_PORT}/artifacts", plan::server_ip());
    // One boot-service configuration for the whole group.
    client
        .send(
            Method::POST,
            "/boot-service/bootconfigurations",
            Some(&json!({
                "metadata": {"name": "compute"},
                "spec": {
                    "groups": ["compute"],
                    "kernel": format!("{base}/vmlinuz"),
                    "initrd": format!("{base}/initrd.img"),
                    "params": "console=ttyS0 quiet panic=-1",
                },
            })),
        )
        .await?;
    Ok(())
}

/// Discovery of the virtual BMCs, as on a new cluster: the BMC credential,
/// then a Redfish crawl of their addresses with magellan's BMC ID map (so the
/// BMCs get the xnames the nodes were enrolled under).
async fn discover_bmcs(client: &Client, lab: &Lab) -> anyhow::Result<String> {
    client
        .send(
            Method::PUT,
            "/discovery/v1/credentials/default",
            Some(&json!({"username": BMC_USER, "password": lab.bmc_password})),
        )
        .await?;
    let map: serde_json::Map<String, Value> = lab
        .nodes
        .iter()
        .map(|n| (n.bmc_ip.to_string(), json!(n.bmc)))
        .collect();
    let map_path = lab.dir.join("bmc-id-map.json");
    std::fs::write(
        &map_path,
        serde_json::to_vec_pretty(&json!({"map_key": "bmc-ip-addr", "id_map": map}))?,
    )?;
    super::discover::run(
        client,
        Format::Table,
        super::discover::DiscoverCmd::Collect {
            targets: lab
                .nodes
                .iter()
                .map(|n| format!("{}:{BMC_PORT}", n.bmc_ip))
                .collect(),
            opts: Default::default(),
            bmc_id_map: Some(map_path),
            username: None,
            password_env: None,
        },
    )
    .await
}

/// Power on through the appliance (PCS → Redfish → the virtual BMCs).
async fn power_on(client: &Client, lab: &Lab) -> anyhow::Result<String> {
    super::power::run(
        client,
        Format::Table,
        super::power::PowerCmd::On(super::power::Transition {
            nodes: super::power::Nodes {
                xnames: lab.nodes.iter().map(|n| n.xname.clone()).collect(),
                group: None,
            },
            force: false,
            no_wait: false,
            deadline: 5.0,
        }),
    )
    .await
}

/// One request to the supervisor's control socket.
pub fn control(dir: &Path, req: &str) -> anyhow::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(dir.join(lab::CONTROL_SOCKET))
        .with_context(|| format!("the lab in {} is not running", dir.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    writeln!(s, "{req}")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let out = out.trim().to_string();
    if let Some(e) = out.strip_prefix("error: ") {
        bail!("{e}");
    }
    Ok(out)
}

/// What a node's serial console says about its boot so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    Booting,
    /// The marker line, with its `key=value` fields.
    Marker(String),
    Failed(String),
}

/// Reads a serial log: the last marker or failure line after the last
/// power-on.
pub fn read_console(text: &str) -> Console {
    let boot = text
        .rfind("=== openchami lab: power on")
        .map_or(text, |i| &text[i..]);
    for line in boot.lines().rev() {
        let line = line.trim_matches(|c: char| c == '\r' || c.is_whitespace());
        if let Some(i) = line.find(image::FAILED) {
            return Console::Failed(line[i..].to_string());
        }
        if let Some(i) = line.find(image::MARKER) {
            return Console::Marker(line[i..].to_string());
        }
    }
    Console::Booting
}

fn wait_for_markers(lab: &Lab, limit: Duration, started: Instant) -> anyhow::Result<()> {
    let mut pending: Vec<&plan::LabNode> = lab.nodes.iter().collect();
    let t = Instant::now();
    while !pending.is_empty() {
        let d = lab.dir.display();
        if t.elapsed() > limit {
            let x: Vec<&str> = pending.iter().map(|n| n.xname.as_str()).collect();
            return Err(BootWait(format!(
                "{} did not boot within {limit:?}; the lab keeps running: `openchami lab status --dir {d}`, `openchami lab console {} --dir {d}`; remove it with `openchami lab down --dir {d}`",
                x.join(", "),
                x.first().copied().unwrap_or_default(),
            ))
            .into());
        }
        let mut still = Vec::new();
        for n in pending {
            let text = std::fs::read(lab.serial_log(&n.xname))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            match read_console(&text) {
                Console::Marker(m) => println!(
                    "{:>6.1}s  {} booted: {}",
                    started.elapsed().as_secs_f64(),
                    n.xname,
                    m
                ),
                Console::Failed(m) => {
                    return Err(BootWait(format!(
                        "{} failed to boot: {m}; the lab keeps running: `openchami lab console {} --dir {d}`; remove it with `openchami lab down --dir {d}`",
                        n.xname, n.xname
                    ))
                    .into());
                }
                Console::Booting => still.push(n),
            }
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn status(global: &Global, dir: &Path) -> anyhow::Result<()> {
    let dir = absolute(dir)?;
    let lab = Lab::load(&dir)?;
    let (client, _) = lab_client(global, &dir)?;
    let rt = runtime()?;
    let steps = rt.block_on(client.get("/boot/v1/boot-steps"))?;
    let power: Value = control(&dir, "state")
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut rows = Vec::new();
    for n in &lab.nodes {
        let rec = steps
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == n.xname.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        let text = std::fs::read(lab.serial_log(&n.xname))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let console = match read_console(&text) {
            Console::Booting => String::new(),
            Console::Marker(_) => "marker".into(),
            Console::Failed(m) => m,
        };
        rows.push(json!({
            "xname": n.xname,
            "firmware": n.firmware.name(),
            "mac": n.mac,
            "ip": n.ip.to_string(),
            "power": power.get(&n.xname).cloned().unwrap_or(json!("?")),
            "last_step": rec["last_step"],
            "ago": rec["last_seen_ms"].as_i64().map(|t| format!("{:.1}s", (now_ms - t) as f64 / 1000.0)),
            "steps": step_summary(&rec),
            "console": console,
            // The appliance's pointer for a boot that has not phoned home.
            "console_log": rec["console"]["log"],
            "console_tail": rec["console"]["tail"],
            "record": rec,
        }));
    }
    let out = match global.output {
        Format::Table => table(
            &[
                ("XNAME", "/xname"),
                ("FW", "/firmware"),
                ("IP", "/ip"),
                ("POWER", "/power"),
                ("LAST STEP", "/last_step"),
                ("AGO", "/ago"),
                ("STEPS (s after the first)", "/steps"),
                ("CONSOLE", "/console"),
                ("CONSOLE LOG", "/console_log"),
            ],
            &rows,
        ),
        f => super::output::render(f, &[], &rows, &Value::Array(rows.clone())),
    };
    print!("{out}");
    Ok(())
}

/// `dhcp 0.0 tftp 1.2 script 3.4 …`: each step's first time in this boot,
/// relative to the boot's start.
pub fn step_summary(rec: &Value) -> String {
    let start = rec["boot_started_ms"].as_i64().unwrap_or(0);
    crate::boot::steps::Step::ALL
        .iter()
        .filter_map(|s| {
            let seen = rec["steps"].get(s.name())?;
            let t = seen["first_ms"].as_i64()?;
            Some(format!("{} {:.1}", s.name(), (t - start) as f64 / 1000.0))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Nodes whose console a lab directory keeps (after `down` too).
fn kept_consoles(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("nodes"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("serial.log").is_file())
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// How `lab console` shows a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsoleMode {
    Print,
    Follow,
    Interactive,
}

/// A running lab's console goes through the appliance (the BMC's SSH
/// console, the console log, `/remote-console`), as on hardware; after
/// `down` the serial file the lab kept is shown.
fn console(global: &Global, dir: &Path, xname: &str, mode: ConsoleMode) -> anyhow::Result<()> {
    let dir = absolute(dir)?;
    let running = SupervisorInfo::load(&dir).is_some_and(|i| lab::alive(i.pid));
    match Lab::load(&dir) {
        Ok(lab) if !lab.nodes.iter().any(|n| n.xname == xname) => {
            bail!("{xname} is not a node of the lab in {}", dir.display())
        }
        Ok(_) if running => {
            let (client, _) = lab_client(global, &dir)?;
            let args = super::console::ConsoleArgs {
                target: xname.to_string(),
                forget_host_key: false,
                tail: mode != ConsoleMode::Interactive,
                follow: mode == ConsoleMode::Follow,
                lines: None,
            };
            let out = runtime()?.block_on(super::console::run(&client, global.output, args))?;
            super::write_stdout(out.as_bytes());
            Ok(())
        }
        _ => kept_console(&dir, xname),
    }
}

/// The serial file a lab that is down kept.
fn kept_console(dir: &Path, xname: &str) -> anyhow::Result<()> {
    let kept = kept_consoles(dir);
    if !kept.iter().any(|k| k == xname) {
        bail!(
            "no running lab in {} and no kept console of {xname} (kept: {})",
            dir.display(),
            if kept.is_empty() {
                "none".to_string()
            } else {
                kept.join(", ")
            }
        );
    }
    let text = std::fs::read(dir.join("nodes").join(xname).join("serial.log"))?;
    super::write_stdout(&text);
    Ok(())
}

fn env_lines(dir: &Path) -> anyhow::Result<String> {
    let dir = absolute(dir)?;
    let info =
        SupervisorInfo::load(&dir).ok_or_else(|| anyhow!("no running lab in {}", dir.display()))?;
    let cfg = dir.join(lab::APPLIANCE_CONFIG);
    Ok(format!(
        "export OPENCHAMI_URL=https://127.0.0.1:{}\nexport OPENCHAMI_CONFIG={}\nexport OPENCHAMI_CACERT={}\n",
        info.api_port,
        cfg.display(),
        dir.join("state/ca/root.crt").display()
    ))
}

fn down(dir: &Path) -> anyhow::Result<()> {
    down_inner(&absolute(dir)?, true)
}

fn down_inner(dir: &Path, say: bool) -> anyhow::Result<()> {
    if !dir.join(lab::LAB_FILE).exists() && SupervisorInfo::load(dir).is_none() {
        if say {
            println!("no lab in {}", dir.display());
        }
        return Ok(());
    }
    let done = clean_leftovers(dir, None, false)?;
    if say {
        for line in &done {
            println!("{line}");
        }
        println!("lab in {} removed (logs kept)", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_reused_only_by_its_own_lab() {
        let here = Path::new("/var/tmp/lab-a");
        let other = Path::new("/var/tmp/lab-b");
        // (case, recorded here, owner, owner running, processes inside, free?)
        #[allow(clippy::type_complexity)]
        let table: &[(&str, bool, Option<&Path>, bool, usize, bool)] = &[
            ("new name", false, None, false, 0, true),
            ("this directory's lab", true, Some(here), true, 5, true),
            ("owned by this directory", false, Some(here), true, 5, true),
            ("another running lab", false, Some(other), true, 5, false),
            ("another lab, crashed", false, Some(other), false, 0, true),
            ("unrecorded, busy", false, None, false, 2, false),
        ];
        for (case, recorded, owner, running, inside, free) in table {
            let got = netns_use("oclab", here, *recorded, *owner, *running, *inside);
            match (free, &got) {
                (true, NetnsUse::Free) => {}
                (false, NetnsUse::Taken(why)) => {
                    assert!(why.contains("--name"), "{case}: {why}");
                    if owner.is_some() {
                        assert!(
                            why.contains("lab down --dir /var/tmp/lab-b"),
                            "{case}: {why}"
                        );
                    }
                }
                _ => panic!("{case}: {got:?}"),
            }
        }
    }

    #[test]
    fn only_boot_outcomes_keep_the_lab() {
        let boot: anyhow::Error = BootWait("x did not boot".into()).into();
        assert!(keeps_lab(&boot));
        assert!(keeps_lab(&boot.context("lab up")));
        assert!(!keeps_lab(&anyhow::anyhow!("cannot start qemu")));
    }

    #[test]
    fn consoles_are_shown_after_down() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("nodes/x1000c0s0b0n0");
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(node.join("serial.log"), "booted\n").unwrap();
        assert_eq!(kept_consoles(dir.path()), vec!["x1000c0s0b0n0"]);
        kept_console(dir.path(), "x1000c0s0b0n0").unwrap();
        let e = kept_console(dir.path(), "x1000c0s9b0n0").unwrap_err();
        assert!(e.to_string().contains("kept: x1000c0s0b0n0"), "{e}");
    }

    #[test]
    fn console_reading_looks_at_the_last_boot() {
        assert_eq!(read_console(""), Console::Booting);
        let one = "=== openchami lab: power on x at t ===\r\niPXE...\r\nOPENCHAMI-LAB-MARKER xname=x1000c0s0b0n0 hostname=node01 ip=10.77.0.11\r\n";
        assert_eq!(
            read_console(one),
            Console::Marker(
                "OPENCHAMI-LAB-MARKER xname=x1000c0s0b0n0 hostname=node01 ip=10.77.0.11".into()
            )
        );
        let two = format!("{one}=== openchami lab: power on x at u ===\r\nbooting\r\n");
        assert_eq!(read_console(&two), Console::Booting);
        let failed = "=== openchami lab: power on x at t ===\nOPENCHAMI-LAB-FAILED step=dhcp\n";
        assert_eq!(
            read_console(failed),
            Console::Failed("OPENCHAMI-LAB-FAILED step=dhcp".into())
        );
    }

    #[test]
    fn step_summary_is_relative_to_the_boot() {
        let rec = json!({"boot_started_ms": 1000, "steps": {
            "dhcp": {"first_ms": 1000}, "script": {"first_ms": 3500}, "phone-home": {"first_ms": 20000}}});
        assert_eq!(step_summary(&rec), "dhcp 0.0 script 2.5 phone-home 19.0");
        assert_eq!(step_summary(&Value::Null), "");
    }

    #[test]
    fn appliance_config_parses_and_serves_the_lab_bridge() {
        let lab = Lab {
            netns: "t".into(),
            dir: "/lab".into(),
            nodes: plan::nodes(1, FirmwareMix::Bios),
            ttl_secs: 60,
            node_timeout_secs: 60,
            memory_mb: 384,
            qemu: "q".into(),
            kvm: false,
            bmc_password: "p".into(),
        };
        let c = Config::parse(&appliance_config(&lab), "lab").unwrap();
        assert!(c.tftp.enabled == Some(true) && c.dhcp.enabled);
        assert_eq!(c.dhcp.interfaces, vec!["br0".to_string()]);
        assert_eq!(c.node.advertise, "http://10.77.0.1:27778");
        assert_eq!(c.boot.ipv6_ra_interfaces, vec!["br0".to_string()]);
        assert_eq!(c.state_dir, PathBuf::from("/lab/state"));
    }
}
