//! DNS with real resolvers and clients. One network per test run: a server
//! namespace running the appliance binary (DNS on the node-facing veth, its
//! API on that namespace's loopback), a node namespace that knows the head
//! only through DNS (its own `resolv.conf`, which `ip netns exec` mounts
//! over `/etc/resolv.conf`), and an upstream namespace running `unbound`
//! with a zone of its own. Clients are `dig`, glibc (`getent`), `curl` in
//! the founding documents' kexec helper, and raw sockets for the flood and
//! the fuzzing. Namespaces, their files under `/etc/netns` and every
//! process in them are removed when the test ends, however it ends.
//!
//! Needs root, `ip`, `dig` (dnsutils), `unbound`, `curl` and `jq`; `.ci/run`
//! installs them. Without them the test fails when `CI` is set, and is
//! skipped with a message otherwise.

mod common;

use common::host::run;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_openchami");
const HEAD: &str = "10.66.0.1";
const NODE: &str = "10.66.0.2";
const HEAD6: &str = "fd00:66::1";
const NODE6: &str = "fd00:66::2";
/// An address routed to the node namespace but outside the served networks.
const OUTSIDE: &str = "10.99.0.5";
const UP_SIDE: &str = "10.88.0.1";
const UPSTREAM: &str = "10.88.0.2";
const API: &str = "https://127.0.0.1:18453";

fn prerequisites() -> bool {
    common::host::prerequisites(
        "DNS tests need",
        &[
            ("ip", "iproute2"),
            ("dig", "dnsutils"),
            ("unbound", "unbound"),
            ("curl", "curl"),
            ("jq", "jq"),
            ("getent", "libc-bin"),
        ],
    )
}

struct Lab {
    srv: String,
    node: String,
    up: String,
    srv_if: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Lab {
    fn new() -> Lab {
        let id = std::process::id() % 100_000;
        let lab = Lab {
            srv: format!("ocdns-{id}-s"),
            node: format!("ocdns-{id}-n"),
            up: format!("ocdns-{id}-u"),
            srv_if: format!("ons{id}"),
            dir: tempfile::Builder::new()
                .prefix("openchami-dns-")
                .tempdir()
                .expect("temp dir"),
            children: Vec::new(),
        };
        for ns in [&lab.srv, &lab.node, &lab.up] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (s, n, u) = (lab.srv.as_str(), lab.node.as_str(), lab.up.as_str());
        let node_if = format!("onn{id}");
        let (su, us) = (format!("osu{id}"), format!("ous{id}"));
        for (a, a_ns, b, b_ns) in [(&lab.srv_if, s, &node_if, n), (&su, s, &us, u)] {
            run(&[
                "ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns",
                b_ns,
            ]);
        }
        for (ns, dev, addr) in [
            (s, lab.srv_if.as_str(), format!("{HEAD}/24")),
            (n, node_if.as_str(), format!("{NODE}/24")),
            (s, su.as_str(), format!("{UP_SIDE}/24")),
            (u, us.as_str(), format!("{UPSTREAM}/24")),
        ] {
            run(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("{OUTSIDE}/32"),
            "dev",
            "lo",
        ]);
        run(&["ip", "-n", s, "route", "add", "10.99.0.0/24", "via", NODE]);
        for (ns, dev, addr) in [
            (s, lab.srv_if.as_str(), HEAD6),
            (n, node_if.as_str(), NODE6),
        ] {
            let cidr = format!("{addr}/64");
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev, "nodad"]);
        }
        // The node resolves through the appliance, and only through it.
        let etc = PathBuf::from("/etc/netns").join(&lab.node);
        std::fs::create_dir_all(&etc).expect("/etc/netns");
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {HEAD}\nsearch cluster\noptions timeout:2 attempts:2\n"),
        )
        .expect("resolv.conf");
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self, ns: &str, args: &[&str], log: &str) {
        let log = std::fs::File::create(self.path(log)).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        self.children.push(child);
    }

    /// The upstream: unbound serving `example.test` from local data.
    fn start_unbound(&mut self) {
        let conf = self.path("unbound.conf");
        std::fs::write(
            &conf,
            format!(
                r#"server:
  interface: {UPSTREAM}
  port: 53
  access-control: 10.88.0.0/24 allow
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  module-config: "iterator"
  do-ip6: no
  local-zone: "example.test." static
  local-data: "example.test. 300 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 300"
  local-data: "www.example.test. 300 IN A 192.0.2.80"
  local-data: "mail.example.test. 300 IN AAAA 2001:db8::25"
remote-control:
  control-enable: no
"#,
                dir = self.dir.path().display()
            ),
        )
        .expect("unbound.conf");
        let up = self.up.clone();
        self.spawn(
            &up,
            &["unbound", "-d", "-c", conf.to_str().expect("path")],
            "unbound.log",
        );
        self.wait_for(
            || {
                dig_in(
                    &self.up,
                    &[&format!("@{UPSTREAM}"), "www.example.test", "+short"],
                )
                .contains("192.0.2.80")
            },
            "unbound",
        );
    }

    fn config(&self) -> String {
        let artifacts = self.path("artifacts");
        std::fs::create_dir_all(&artifacts).expect("artifacts");
        std::fs::write(artifacts.join("vmlinuz"), b"kernel bytes").expect("kernel");
        std::fs::write(artifacts.join("initrd.img"), b"initrd bytes").expect("initrd");
        let big: String = (1..=40)
            .map(|i| {
                format!("[[dns.records]]\nname = \"big.cluster\"\ntype = \"A\"\nvalue = \"10.66.1.{i}\"\n")
            })
            .collect();
        format!(
            r#"state_dir = "{state}"
cluster_name = "demo"
[api]
listen = "127.0.0.1:18453"
[node]
listen = "0.0.0.0:27778"
[boot]
artifacts_dir = "{artifacts}"
[dhcp]
rules = ["type:NodeBMC,hostname:bmc-{{id}}"]
[dns]
enabled = true
interfaces = ["{iface}"]
networks = ["10.66.0.0/24", "fd00:66::/64"]
upstreams = ["{UPSTREAM}"]
upstream_timeout_ms = 1000
rrl_per_sec = 50
rrl_slip = 2
[[dns.records]]
name = "s3.cluster"
type = "CNAME"
value = "openchami.cluster"
[[dns.records]]
name = "motd.cluster"
type = "TXT"
value = "hello from the head"
{big}"#,
            state = self.path("state").display(),
            artifacts = artifacts.display(),
            iface = self.srv_if,
        )
    }

    fn start_appliance(&mut self) {
        std::fs::write(self.path("config.toml"), self.config()).expect("config");
        let srv = self.srv.clone();
        let cfg = self.path("config.toml");
        self.spawn(
            &srv,
            &[BIN, "serve", "--config", cfg.to_str().expect("path")],
            "appliance.log",
        );
        self.wait_for(
            || self.cli(&["node", "list"]).status.success(),
            "the appliance",
        );
    }

    fn wait_for(&self, mut ok: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "{what} did not come up:\n{}\n{}",
                self.log("appliance.log"),
                self.log("unbound.log")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.srv, BIN, "--url", API, "--state-dir"])
            .arg(self.path("state"))
            .arg("--config")
            .arg(self.path("config.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the CLI")
    }

    #[track_caller]
    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "openchami {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn api_post(&self, path: &str, body: &str) {
        let token = self.cli_ok(&["token", "issue"]);
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.srv, "curl", "-sSfk", "-X", "POST", "-H",
            ])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .args(["-H", "Content-Type: application/json", "--data", body])
            .arg(format!("{API}{path}"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "POST {path}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn api_get(&self, path: &str) -> String {
        let token = self.cli_ok(&["token", "issue"]);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.srv, "curl", "-sSfk", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{API}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `dig @HEAD args` from the node namespace.
    fn dig(&self, args: &[&str]) -> String {
        let mut a = vec![format!("@{HEAD}")];
        a.extend(args.iter().map(|s| s.to_string()));
        a.extend(["+time=2".to_string(), "+tries=2".to_string()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        dig_in(&self.node, &a)
    }

    fn short(&self, args: &[&str]) -> Vec<String> {
        let mut a = args.to_vec();
        a.push("+short");
        let mut v: Vec<String> = self.dig(&a).lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// Runs `f` on a thread inside the node namespace (raw sockets).
    fn in_node<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(Path::new("/run/netns").join(&self.node)).expect("netns");
        std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.node, &self.up, &self.srv] {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.node));
    }
}

fn dig_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "dig"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `status: NOERROR` and friends from dig's header line.
fn status(dig: &str) -> &str {
    dig.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
}

/// A DNS query for `name` (type A) with ID `id`, hand-encoded.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

#[test]
fn dns_from_the_inventory_with_real_clients() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new();
    lab.start_unbound();
    lab.start_appliance();
    // The node namespace's own address is a node (the kexec helper asks as
    // it); another node and a BMC, known by rule name and xname.
    lab.cli_ok(&[
        "node",
        "add",
        "x1000c0s0b0n0",
        "--nid",
        "1",
        "--mac",
        "52:54:00:00:00:01",
        "--ip",
        NODE,
    ]);
    lab.cli_ok(&[
        "node",
        "add",
        "x1000c0s1b0n0",
        "--nid",
        "2",
        "--mac",
        "52:54:00:00:00:02",
        "--ip",
        "10.66.0.12",
    ]);
    lab.api_post(
        "/hsm/v2/Inventory/RedfishEndpoints",
        r#"{"RedfishEndpoints":[{"ID":"x1000c0s0b0","FQDN":"10.66.0.101","IPAddress":"10.66.0.101"}]}"#,
    );

    // Every record kind, over UDP, as dig asks.
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (args, want) in [
        (vec!["de0001.cluster"], v(&[NODE])),
        (vec!["x1000c0s1b0n0.cluster"], v(&["10.66.0.12"])),
        (vec!["x1000c0s0b0.cluster"], v(&["10.66.0.101"])),
        (vec!["bmc-x1000c0s0b0.cluster"], v(&["10.66.0.101"])),
        (vec!["openchami.cluster"], v(&[HEAD])),
        (vec!["s3.cluster"], v(&[HEAD, "openchami.cluster."])),
        (vec!["motd.cluster", "TXT"], v(&["\"hello from the head\""])),
        (vec!["cluster", "NS"], v(&["openchami.cluster."])),
        (vec!["-x", "10.66.0.12"], v(&["de0002.cluster."])),
        (vec!["-x", "10.66.0.101"], v(&["bmc-x1000c0s0b0.cluster."])),
        // Forwarded to unbound, for a client in a served network.
        (vec!["www.example.test"], v(&["192.0.2.80"])),
        (vec!["mail.example.test", "AAAA"], v(&["2001:db8::25"])),
    ] {
        assert_eq!(lab.short(&args), want, "dig {args:?}");
    }
    // The head over IPv6: each family's address of the interface asked.
    for (server, t, want) in [
        (HEAD6, "AAAA", HEAD6),
        (HEAD6, "A", HEAD),
        (HEAD, "AAAA", HEAD6),
    ] {
        let at = format!("@{server}");
        let got = dig_in(
            &lab.node,
            &[&at, "openchami.cluster", t, "+short", "+time=2"],
        );
        assert_eq!(got.trim(), want, "{t} asked at {server}");
    }
    let at6 = format!("@{HEAD6}");
    let via6 = dig_in(&lab.node, &[&at6, "www.example.test", "+short", "+time=2"]);
    assert_eq!(via6.trim(), "192.0.2.80", "forwarded for an IPv6 client");

    // NXDOMAIN with the zone's SOA, whose serial is the store's generation.
    let nx = lab.dig(&["nid0099.cluster"]);
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(nx.contains("flags: qr aa rd"), "authoritative: {nx}");
    assert!(
        nx.contains("SOA\topenchami.cluster. hostmaster.cluster."),
        "{nx}"
    );
    let nx_up = lab.dig(&["nope.example.test"]);
    assert_eq!(status(&nx_up), "NXDOMAIN", "{nx_up}");
    assert!(nx_up.contains("ra;") || nx_up.contains(" ra "), "{nx_up}");
    let nx_ptr = lab.dig(&["-x", "10.66.0.77"]);
    assert_eq!(status(&nx_ptr), "NXDOMAIN", "{nx_ptr}");
    // TCP, and the UDP truncation → TCP fallback resolvers rely on.
    assert_eq!(lab.short(&["+tcp", "de0002.cluster"]), v(&["10.66.0.12"]));
    let tc = lab.dig(&["+noedns", "+ignore", "big.cluster"]);
    assert!(
        tc.contains(" tc"),
        "40 addresses do not fit 512 bytes: {tc}"
    );
    assert_eq!(
        lab.short(&["+noedns", "big.cluster"]).len(),
        40,
        "dig retried over TCP"
    );
    assert_eq!(lab.short(&["+bufsize=1232", "big.cluster"]).len(), 40);

    // glibc's resolver, through the namespace's resolv.conf.
    let out = run(&[
        "ip", "netns", "exec", &lab.node, "getent", "hosts", "de0002",
    ]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        vec!["10.66.0.12", "de0002.cluster"],
        "{line}"
    );
    // `hosts` asks for IPv6 first; `ahostsv4` for IPv4 only.
    for (db, want) in [("hosts", HEAD6), ("ahostsv4", HEAD)] {
        let out = run(&[
            "ip",
            "netns",
            "exec",
            &lab.node,
            "getent",
            db,
            "openchami.cluster",
        ]);
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            got.split_whitespace().next(),
            Some(want),
            "getent {db}: {got}"
        );
    }

    // The kexec helper, verbatim, from a node that knows the head by name.
    lab.cli_ok(&[
        "boot",
        "params",
        "set",
        "-x",
        "x1000c0s0b0n0",
        "--kernel",
        "http://openchami.cluster:27778/artifacts/vmlinuz",
        "--initrd",
        "http://openchami.cluster:27778/artifacts/initrd.img",
        "--params",
        "console=ttyS0 quiet",
    ]);
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kexec/bss-kexec-load.sh");
    let kdir = lab.path("kexec");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.node, "sh"])
        .arg(&helper)
        .args(["--dry-run", "openchami.cluster"])
        .env("KEXEC_DIR", &kdir)
        .env("CURL_OPTS", "--max-time 10")
        .stdin(Stdio::null())
        .output()
        .expect("kexec helper");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kexec helper: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("--command-line='console=ttyS0 quiet"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(kdir.join("kernel")).expect("kernel"),
        b"kernel bytes"
    );

    // Live update: a new address through the API is the next answer.
    lab.cli_ok(&["node", "set", "x1000c0s1b0n0", "--ip", "10.66.0.42"]);
    assert_eq!(lab.short(&["de0002.cluster"]), v(&["10.66.0.42"]));
    assert_eq!(lab.short(&["-x", "10.66.0.42"]), v(&["de0002.cluster."]));
    let soa = lab.short(&["cluster", "SOA"]);
    let serial_before: u64 = soa[0]
        .split_whitespace()
        .nth(2)
        .expect("serial")
        .parse()
        .expect("n");
    lab.cli_ok(&["node", "set", "x1000c0s1b0n0", "--nid", "3"]);
    assert_eq!(
        lab.short(&["de0003.cluster"]),
        v(&["10.66.0.42"]),
        "renamed"
    );
    let soa = lab.short(&["cluster", "SOA"]);
    let serial_after: u64 = soa[0]
        .split_whitespace()
        .nth(2)
        .expect("serial")
        .parse()
        .expect("n");
    assert!(
        serial_after > serial_before,
        "{serial_before} → {serial_after}"
    );

    // An address the interface gains is served too, as the head's address.
    run(&[
        "ip",
        "-n",
        &lab.srv,
        "addr",
        "add",
        "10.66.0.3/24",
        "dev",
        &lab.srv_if,
    ]);
    lab.wait_for(
        || {
            dig_in(
                &lab.node,
                &[
                    "@10.66.0.3",
                    "openchami.cluster",
                    "+short",
                    "+time=1",
                    "+tries=1",
                ],
            )
            .trim()
                == "10.66.0.3"
        },
        "DNS on a new address",
    );

    // Outside the served networks: the zone is answered, recursion refused.
    let refused = lab.dig(&["-b", OUTSIDE, "www.example.test"]);
    assert_eq!(status(&refused), "REFUSED", "{refused}");
    assert_eq!(lab.short(&["-b", OUTSIDE, "de0001.cluster"]), v(&[NODE]));

    // Operators see what is served.
    let looked = lab.cli_ok(&["dns", "lookup", "de0003.cluster"]);
    assert!(looked.contains("10.66.0.42"), "{looked}");
    let looked = lab.cli_ok(&["dns", "lookup", "10.66.0.101"]);
    assert!(looked.contains("bmc-x1000c0s0b0.cluster"), "{looked}");
    for (args, says) in [
        (vec!["dns", "lookup", "not a name"], "not a domain name"),
        (
            vec!["dns", "lookup", "de0001.cluster", "-t", "MX"],
            "is not one of",
        ),
    ] {
        let out = lab.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let zone = lab.cli_ok(&["dns", "zone"]);
    for want in [
        "de0001.cluster",
        "x1000c0s0b0.cluster",
        "101.0.66.10.in-addr.arpa",
        "SOA",
    ] {
        assert!(zone.contains(want), "{want} in:\n{zone}");
    }

    // A flood from one address is rate limited (answers bounded, some
    // truncated so real clients retry on TCP); garbage crashes nothing.
    let server: SocketAddr = format!("{HEAD}:53").parse().expect("addr");
    let (full, truncated, secs) = lab.in_node(move || {
        let s = UdpSocket::bind("10.66.0.2:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let started = Instant::now();
        for i in 0..1000u16 {
            let _ = s.send_to(&query(i, "de0001.cluster"), server);
        }
        let (mut full, mut truncated) = (0u32, 0u32);
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            if n > 3 && buf[2] & 0x02 != 0 {
                truncated += 1;
            } else {
                full += 1;
            }
        }
        (full, truncated, started.elapsed().as_secs_f64())
    });
    eprintln!("flood: {full} full and {truncated} truncated answers to 1000 queries in {secs:.2}s");
    let bound = 50.0 + 50.0 * secs.ceil();
    assert!(
        f64::from(full) <= bound,
        "{full} full answers in {secs:.1}s, rate 50/s"
    );
    assert!(truncated > 0, "slipped answers are truncated ({full} full)");
    lab.in_node(move || {
        let s = UdpSocket::bind("10.66.0.2:0").expect("bind");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..3000u32 {
            // xorshift: random lengths and bytes, and valid headers with
            // garbage after them.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 300) as usize;
            let mut p: Vec<u8> = (0..len).map(|k| (x >> (k % 56)) as u8).collect();
            if i % 3 == 0 {
                let mut q = query(i as u16, "de0001.cluster");
                let at = (x as usize) % q.len();
                q[at] ^= (x >> 8) as u8;
                p = q;
            }
            let _ = s.send_to(&p, server);
        }
    });
    // Still serving: TCP (not limited) and another client address.
    assert_eq!(lab.short(&["+tcp", "de0001.cluster"]), v(&[NODE]));
    assert_eq!(lab.short(&["-b", OUTSIDE, "openchami.cluster"]), v(&[HEAD]));
    let log = lab.log("appliance.log");
    assert!(!log.contains("panicked"), "{log}");
    // The outcomes are counted (published every 2 s).
    lab.wait_for(
        || {
            let m = lab.api_get("/metrics");
            [
                "answered",
                "forwarded",
                "refused",
                "rate_limited",
                "error",
                "dropped",
            ]
            .iter()
            .all(|o| m.contains(&format!("openchami_dns_queries_total{{outcome=\"{o}\"}}")))
        },
        "the DNS counters",
    );
}
