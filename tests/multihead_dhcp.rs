//! Three head nodes serving one DHCP pool from one PostgreSQL database, as
//! separate `openchami serve` processes on one L2 segment: a write on one
//! head is read on the others; a storm of real clients (busybox udhcpc, one
//! per interface, all at once) never gets one address for two MACs, as the
//! clients' ACKs and every head's lease list (`GET /dhcp/v1/leases`) show;
//! the heads split the clients (each offers to some, and a client is
//! offered an address by one head, not all); and when one head is killed
//! (SIGKILL) the others take its clients over: every client gets its
//! address again.
//!
//! Network: a bridge in a namespace of its own; each head in its own
//! namespace on a veth into the bridge; the clients in a third namespace,
//! each on its own veth (its own MAC) into the same bridge. The database is
//! the throwaway cluster of tests/common/postgres.rs, reached by both heads
//! over its Unix socket (namespaces share the file system). The pool is a
//! little larger than the number of clients, so the heads' offers meet.
//! Then a probe makes the heads disagree on purpose: for each of several
//! free addresses, two MACs REQUEST it at once, one naming head A as its
//! server and the other head B, so each head binds it to a different MAC
//! and the store must refuse one: exactly one MAC gets an ACK, the other a
//! NAK.
//!
//! Needs root, `ip` (iproute2), `busybox`, `curl` and PostgreSQL's server
//! programs; without them the test is skipped with a message (and fails
//! under `CI`). Namespaces and every process in them are removed when the
//! test ends, however it ends.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::host::run;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_openchami");
const API: &str = "https://127.0.0.1:18443";
const HEADS: [&str; 3] = ["10.88.0.1", "10.88.0.2", "10.88.0.3"];
const POOL: (u8, u8) = (100, 139);
const CLIENTS: usize = 24;
/// MAC pairs the probe sends conflicting REQUESTs for.
const PAIRS: usize = 8;

fn prerequisites() -> bool {
    let postgres = common::host::which("initdb").is_some()
        || std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("bin/initdb").exists());
    if !postgres {
        let msg = "the multi-head DHCP test needs PostgreSQL's server programs (apt-get install postgresql)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; .ci/run installs them");
        }
        eprintln!("skipped: {msg}");
        return false;
    }
    common::host::prerequisites(
        "the multi-head DHCP test needs",
        &[("ip", "iproute2"), ("busybox", "busybox"), ("curl", "curl")],
    )
}

/// The namespaces, links and processes of one run; all removed on drop.
struct Net {
    id: String,
    bridge: String,
    clients: String,
    heads: Vec<Head>,
    dir: tempfile::TempDir,
}

struct Head {
    ns: String,
    ifname: String,
    ip: &'static str,
    process: Option<Child>,
}

impl Net {
    fn new() -> Net {
        let id = format!("{}", std::process::id() % 100_000);
        let dir = tempfile::Builder::new()
            .prefix("openchami-mhdhcp-")
            .tempdir()
            .expect("temp dir");
        let mut net = Net {
            bridge: format!("ocmh-{id}-br"),
            clients: format!("ocmh-{id}-c"),
            heads: Vec::new(),
            id,
            dir,
        };
        // Registered before anything is created, so drop removes it all.
        for (k, ip) in HEADS.iter().enumerate() {
            net.heads.push(Head {
                ns: format!("ocmh-{}-h{k}", net.id),
                ifname: format!("mh{}h{k}", net.id),
                ip,
                process: None,
            });
        }
        let br = net.bridge.clone();
        run(&["ip", "netns", "add", &br]);
        run(&["ip", "netns", "add", &net.clients]);
        for h in &net.heads {
            run(&["ip", "netns", "add", &h.ns]);
        }
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        for h in &net.heads {
            net.port(&h.ns, &h.ifname, None);
            run(&["ip", "-n", &h.ns, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "-n",
                &h.ns,
                "addr",
                "add",
                &format!("{}/24", h.ip),
                "dev",
                &h.ifname,
            ]);
        }
        run(&["ip", "-n", &net.clients, "link", "set", "lo", "up"]);
        for k in 0..CLIENTS {
            let (name, mac) = (net.client_if(k), client_mac(k));
            let ns = net.clients.clone();
            net.port(&ns, &name, Some(&mac));
        }
        net
    }

    fn client_if(&self, k: usize) -> String {
        format!("mh{}c{k}", self.id)
    }

    /// A veth from `ns` (named `name`, with `mac`) into the bridge.
    fn port(&self, ns: &str, name: &str, mac: Option<&str>) {
        let peer = format!("{name}p");
        run(&[
            "ip",
            "link",
            "add",
            name,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &self.bridge,
        ]);
        if let Some(mac) = mac {
            run(&["ip", "-n", ns, "link", "set", name, "address", mac]);
        }
        run(&["ip", "-n", ns, "link", "set", name, "up"]);
        run(&[
            "ip",
            "-n",
            &self.bridge,
            "link",
            "set",
            &peer,
            "master",
            "br0",
        ]);
        run(&["ip", "-n", &self.bridge, "link", "set", &peer, "up"]);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, k: usize) -> PathBuf {
        self.path(&format!("head{k}.toml"))
    }

    fn state_dir(&self, k: usize) -> PathBuf {
        self.path(&format!("state{k}"))
    }

    fn log(&self, k: usize) -> String {
        std::fs::read_to_string(self.path(&format!("head{k}.log"))).unwrap_or_default()
    }

    /// Waits until the logs of `heads` all contain `needle`; fails with
    /// `what` and the logs after 30 s.
    fn wait_for_logs(&self, heads: std::ops::Range<usize>, needle: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !heads.clone().all(|k| self.log(k).contains(needle)) {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        (0..self.heads.len())
            .map(|k| format!("--- head {k}:\n{}", self.log(k)))
            .collect()
    }

    /// Starts every head on the database `url`; returns once each API answers.
    fn start(&mut self, url: &str) {
        let (p0, p1) = POOL;
        for k in 0..self.heads.len() {
            let h = &self.heads[k];
            let config = format!(
                r#"state_dir = "{state}"
cluster_name = "demo"
[api]
listen = "127.0.0.1:18443"
[node]
listen = "{ip}:27778"
[store]
url = "{url}"
kek_file = "{kek}"
lease_ttl_secs = 3
[dhcp]
enabled = true
interfaces = ["{ifname}"]
[[dhcp.subnets]]
cidr = "10.88.0.0/24"
pool = "10.88.0.{p0}-10.88.0.{p1}"
routers = ["10.88.0.1"]
"#,
                state = self.state_dir(k).display(),
                // Every head of one database opens its keys with one KEK.
                kek = self.path("kek.key").display(),
                ip = h.ip,
                ifname = h.ifname,
            );
            std::fs::write(self.config(k), config).expect("write config");
            let log = std::fs::File::create(self.path(&format!("head{k}.log"))).expect("log");
            let child = Command::new("ip")
                .args(["netns", "exec", &h.ns, BIN, "serve", "--config"])
                .arg(self.config(k))
                .env("RUST_LOG", "openchami=info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start a head");
            self.heads[k].process = Some(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for k in 0..self.heads.len() {
            while !self.cli(k, &["node", "list"]).status.success() {
                if let Some(Ok(Some(st))) = self.heads[k].process.as_mut().map(|c| c.try_wait()) {
                    panic!("head {k} exited ({st}):\n{}", self.logs());
                }
                assert!(
                    Instant::now() < deadline,
                    "head {k} did not come up:\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// The CLI inside head `k`'s namespace (it mints a token from its
    /// state directory).
    fn cli(&self, k: usize, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.heads[k].ns, BIN, "--url", API])
            .arg("--state-dir")
            .arg(self.state_dir(k))
            .arg("--config")
            .arg(self.config(k))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the CLI")
    }

    /// Runs every client at once (each writes what its ACK said); returns
    /// address → MAC as the clients were told, checking no address went to
    /// two MACs and every address is in the pool.
    fn storm(&self, wave: &str) -> BTreeMap<Ipv4Addr, String> {
        let script = self.path(&format!("udhcpc-{wave}.sh"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = bound ] && env | sort > {}/{wave}-\"$interface\".env\nexit 0\n",
                self.dir.path().display()
            ),
        )
        .expect("script");
        make_executable(&script);
        let mut clients: Vec<Child> = (0..CLIENTS)
            .map(|k| {
                Command::new("ip")
                    .args(["netns", "exec", &self.clients, "busybox", "udhcpc"])
                    .args(["-f", "-q", "-n", "-t", "8", "-T", "1", "-A", "1", "-i"])
                    .arg(self.client_if(k))
                    .arg("-s")
                    .arg(&script)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start udhcpc")
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        for c in &mut clients {
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        // What the clients were told.
        let mut acked: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        for k in 0..CLIENTS {
            let env =
                std::fs::read_to_string(self.path(&format!("{wave}-{}.env", self.client_if(k))))
                    .unwrap_or_else(|_| {
                        panic!("{wave}: client {k} got no lease:\n{}", self.logs())
                    });
            let ip: Ipv4Addr = env
                .lines()
                .find_map(|l| l.strip_prefix("ip="))
                .expect("ip= in the client's environment")
                .parse()
                .expect("an address");
            let o = ip.octets();
            assert!(
                o[..3] == [10, 88, 0] && (POOL.0..=POOL.1).contains(&o[3]),
                "client {k} got {ip}, outside the pool"
            );
            if let Some(other) = acked.insert(ip, client_mac(k)) {
                panic!(
                    "{ip} was acknowledged to {other} and {}:\n{}",
                    client_mac(k),
                    self.logs()
                );
            }
        }
        acked
    }

    /// One API request through curl inside head `k`'s namespace, with a
    /// token of its own: (status, body).
    fn api(&self, k: usize, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let token = self.cli(k, &["token", "issue"]);
        assert!(token.status.success(), "token issue on head {k}");
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.heads[k].ns,
            "curl",
            "-sk",
            "-X",
            method,
        ])
        .args(["-w", "\n%{http_code}", "-H"])
        .arg(format!(
            "Authorization: Bearer {}",
            String::from_utf8_lossy(&token.stdout).trim()
        ));
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data", b]);
        }
        let out = c.arg(format!("{API}{path}")).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Head `k`'s stored leases: address → MAC, pool leases only.
    fn leases(&self, k: usize) -> BTreeMap<Ipv4Addr, String> {
        let (_, body) = self.api(k, "GET", "/dhcp/v1/leases", None);
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("head {k}: leases are not JSON ({e}): {body}"));
        let mut macs = BTreeSet::new();
        let mut by_ip = BTreeMap::new();
        for l in v.as_array().expect("a list") {
            if l["kind"] != "pool" || l["expired"] == true {
                continue;
            }
            let mac = l["mac"].as_str().expect("mac").to_string();
            assert!(
                macs.insert(mac.clone()),
                "head {k}: {mac} holds two pool addresses: {v}"
            );
            let ip: Ipv4Addr = l["ip"].as_str().expect("ip").parse().expect("an address");
            by_ip.insert(ip, mac);
        }
        by_ip
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &mut self.heads {
            if let Some(mut c) = h.process.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let mut all: Vec<String> = self.heads.iter().map(|h| h.ns.clone()).collect();
        all.push(self.clients.clone());
        all.push(self.bridge.clone());
        for ns in all {
            // Whatever still runs inside (clients) was started here.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

fn client_mac(k: usize) -> String {
    format!("02:cc:00:00:{:02x}:{:02x}", k / 256, k % 256)
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn three_heads_share_writes_split_clients_and_take_over_a_killed_one() {
    if !prerequisites() {
        return;
    }
    let cluster = common::postgres::shared();
    let url = cluster.database();
    let mut net = Net::new();
    net.start(&url);

    // A write on one head is read on the others.
    let component = r#"{"Components":[{"ID":"x3000c0s1b0n0","State":"Ready","Role":"Compute"}]}"#;
    let (status, _) = net.api(0, "POST", "/hsm/v2/State/Components", Some(component));
    assert_eq!(status, 204, "write on head 0:\n{}", net.logs());
    for k in 1..net.heads.len() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while net
            .api(k, "GET", "/hsm/v2/State/Components/x3000c0s1b0n0", None)
            .0
            != 200
        {
            assert!(Instant::now() < deadline, "head {k} never read the write");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Each head has found the others (its share is a third).
    net.wait_for_logs(
        0..net.heads.len(),
        "of: 3",
        "the heads never split the clients",
    );
    let acked = net.storm("first");

    // What each head has stored: the same, and what the clients were told.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let all: Vec<_> = (0..net.heads.len()).map(|k| net.leases(k)).collect();
        if all.iter().all(|t| *t == all[0]) || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let a = all[0].clone();
    for (k, t) in all.iter().enumerate() {
        assert_eq!(*t, a, "head {k} lists the same leases as head 0");
    }
    for (ip, mac) in &acked {
        assert_eq!(
            a.get(ip),
            Some(mac),
            "{ip} was acknowledged to {mac}; the heads store {a:?}"
        );
    }

    // Conflicting REQUESTs: each pair's two MACs ask for one free address,
    // through different heads.
    let free: Vec<Ipv4Addr> = (POOL.0..=POOL.1)
        .map(|o| Ipv4Addr::new(10, 88, 0, o))
        .filter(|ip| !a.contains_key(ip))
        .take(PAIRS)
        .collect();
    assert_eq!(free.len(), PAIRS, "free addresses left for the probe");
    let exe = std::env::current_exe().expect("test binary");
    let list: Vec<String> = free.iter().map(Ipv4Addr::to_string).collect();
    let o = Command::new("ip")
        .args(["netns", "exec", &net.clients])
        .arg(exe)
        .args([
            "conflict_probe",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("OPENCHAMI_MH_PROBE", list.join(","))
        .env("OPENCHAMI_MH_PROBE_IF", net.client_if(0))
        .stdin(Stdio::null())
        .output()
        .expect("run the probe");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && text.contains("PROBE DONE"),
        "probe failed: {text}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        net.logs()
    );
    // address → (MACs acknowledged, MACs refused)
    let mut seen: BTreeMap<Ipv4Addr, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for l in text
        .lines()
        .filter_map(|l| l.find("PROBE ").map(|at| &l[at + 6..]))
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let ip: Ipv4Addr = f[1].parse().expect("address");
        let e = seen.entry(ip).or_default();
        match f[0] {
            "ACK" => e.0.insert(f[2].to_string()),
            "NAK" => e.1.insert(f[2].to_string()),
            _ => false,
        };
    }
    let stored = net.leases(0);
    for ip in &free {
        let (acks, naks) = seen.get(ip).cloned().unwrap_or_default();
        assert_eq!(
            acks.len(),
            1,
            "{ip}: exactly one MAC acknowledged, got {acks:?} (NAKed {naks:?}):\n{text}\n{}",
            net.logs()
        );
        let winner = acks.iter().next().expect("one");
        assert!(
            !naks.is_empty() && !naks.contains(winner),
            "{ip}: the other MAC is NAKed, got {naks:?}:\n{text}"
        );
        assert_eq!(
            stored.get(ip),
            Some(winner),
            "{ip}: the store names the winner"
        );
    }
    let refused: usize = (0..net.heads.len())
        .map(|k| net.log(k).matches("pool bindings refused").count())
        .sum();
    let count = |what: &str| -> Vec<usize> {
        (0..net.heads.len())
            .map(|k| net.log(k).matches(what).count())
            .collect()
    };
    let offers = count("reply=Offer");
    println!(
        "{} clients bound, {} distinct addresses; offers per head {offers:?}, ACKs {:?}, NAKs {:?}; batches with refusals: {refused}",
        CLIENTS,
        acked.len(),
        count("reply=Ack"),
        count("reply=Nak"),
    );
    // The heads split the clients: every head offers to some, and a client
    // is offered by one head (all three offering would be 3 per DISCOVER).
    assert!(
        offers.iter().all(|&n| n > 0),
        "every head answers its share: offers {offers:?}"
    );
    let total: usize = offers.iter().sum();
    assert!(
        total < 2 * (CLIENTS + PAIRS),
        "{total} offers for {CLIENTS} clients: the heads did not split them"
    );

    // Head 2 is killed; once its lease on itself has expired the others
    // share its clients, and every client gets its address again.
    let last = net.heads.len() - 1;
    if let Some(mut c) = net.heads[last].process.take() {
        c.kill().expect("SIGKILL head");
        c.wait().expect("reap head");
    }
    net.wait_for_logs(
        0..last,
        "of: 2",
        "the others never took the killed head's share",
    );
    let again = net.storm("second");
    assert_eq!(
        again, acked,
        "every client keeps its address across the takeover"
    );
}

/// Not a test on its own: the conflicting clients of the test above, run
/// by it inside the clients' namespace. Does nothing unless
/// `OPENCHAMI_MH_PROBE` lists the addresses to fight over.
#[test]
fn conflict_probe() {
    let Some(list) = std::env::var_os("OPENCHAMI_MH_PROBE") else {
        return;
    };
    let ifname = std::env::var("OPENCHAMI_MH_PROBE_IF").expect("the probe's interface");
    let addrs: Vec<Ipv4Addr> = list
        .to_string_lossy()
        .split(',')
        .map(|a| a.parse().expect("an address"))
        .collect();
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    sock.set_reuse_address(true).expect("reuse");
    sock.set_broadcast(true).expect("broadcast");
    sock.bind_device(Some(ifname.as_bytes()))
        .expect("bind to the interface");
    sock.bind(&std::net::SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
        .expect("bind port 68");
    let sock: std::net::UdpSocket = sock.into();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let to: std::net::SocketAddr = "255.255.255.255:67".parse().expect("addr");
    let heads: Vec<Ipv4Addr> = HEADS.iter().map(|h| h.parse().expect("head")).collect();
    for (p, ip) in addrs.iter().enumerate() {
        for (side, head) in heads.iter().enumerate() {
            let chaddr = [2, 0xdd, 0, 0, p as u8, side as u8];
            let mut m = Message::new(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                &chaddr,
            );
            m.set_flags(Flags::default().set_broadcast());
            m.opts_mut()
                .insert(DhcpOption::MessageType(MessageType::Request));
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(*ip));
            m.opts_mut().insert(DhcpOption::ServerIdentifier(*head));
            let mut b = Vec::new();
            m.encode(&mut Encoder::new(&mut b)).expect("encode");
            sock.send_to(&b, to).expect("send");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(r) = Message::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        let c = r.chaddr();
        if c.len() < 6 || c[..2] != [2, 0xdd] {
            continue;
        }
        let mac = c[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let kind = match r.opts().msg_type() {
            Some(MessageType::Ack) => "ACK",
            Some(MessageType::Nak) => "NAK",
            _ => continue,
        };
        // A NAK carries no address: the pair's address, by its index.
        let ip = match kind {
            "ACK" => r.yiaddr(),
            _ => addrs[usize::from(c[4])],
        };
        let sid = match r.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => s.to_string(),
            _ => String::new(),
        };
        println!("PROBE {kind} {ip} {mac} {sid}");
    }
    println!("PROBE DONE");
}
