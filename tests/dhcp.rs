//! DHCP with real clients. Each test builds its own network: two namespaces
//! joined by a veth pair, the appliance binary serving DHCP on one end
//! (inside the server namespace, its API on that namespace's loopback), and
//! ISC `dhclient`, busybox `udhcpc` or a dhcproto relay on the other. Nothing
//! touches this machine's own interfaces; namespaces and every process in
//! them are removed when a test ends, however it ends.
//!
//! Needs root and `ip` (iproute2), `dhclient` (isc-dhcp-client), `busybox`
//! and `curl`; `.ci/run` installs them. Without them the tests fail when `CI`
//! is set, and are skipped with a message otherwise.

mod common;

use common::host::run;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

const BIN: &str = env!("CARGO_BIN_EXE_openchami");
const SERVER: &str = "10.66.0.1";
const CLIENT: &str = "10.66.0.2";
const RELAY: &str = "10.77.1.1";
const API: &str = "https://127.0.0.1:18443";

fn prerequisites() -> bool {
    common::host::prerequisites(
        "DHCP client tests need",
        &[
            ("ip", "iproute2"),
            ("dhclient", "isc-dhcp-client"),
            ("busybox", "busybox"),
            ("curl", "curl"),
        ],
    )
}

/// Two namespaces joined by a veth pair, removed on drop with every
/// process inside them.
struct Lab {
    srv: String,
    cli: String,
    srv_if: String,
    cli_if: String,
    dir: tempfile::TempDir,
    appliance: Option<Child>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    fn new() -> Lab {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let lab = Lab {
            srv: format!("ocdhcp-{id}-s"),
            cli: format!("ocdhcp-{id}-c"),
            srv_if: format!("ods{id}"),
            cli_if: format!("odc{id}"),
            dir: tempfile::Builder::new()
                .prefix("openchami-dhcp-")
                .tempdir()
                .expect("temp dir"),
            appliance: None,
        };
        let (s, c) = (lab.srv.as_str(), lab.cli.as_str());
        run(&["ip", "netns", "add", s]);
        run(&["ip", "netns", "add", c]);
        run(&[
            "ip",
            "link",
            "add",
            &lab.srv_if,
            "netns",
            s,
            "type",
            "veth",
            "peer",
            "name",
            &lab.cli_if,
            "netns",
            c,
        ]);
        for (ns, dev, addr) in [
            (s, lab.srv_if.as_str(), format!("{SERVER}/24")),
            (c, lab.cli_if.as_str(), format!("{CLIENT}/24")),
        ] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // The relay's own subnet lives behind the client end.
        run(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            &format!("{RELAY}/32"),
            "dev",
            "lo",
        ]);
        run(&["ip", "-n", s, "route", "add", "10.77.1.0/24", "via", CLIENT]);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// Writes the config and starts the appliance in the server namespace;
    /// returns once its API answers.
    fn start(&mut self, named_interface: bool) {
        let interfaces = if named_interface {
            format!("interfaces = [\"{}\"]\n", self.srv_if)
        } else {
            String::new()
        };
        let config = format!(
            r#"state_dir = "{state}"
cluster_name = "demo"
[api]
listen = "127.0.0.1:18443"
[node]
listen = "{SERVER}:27778"
[dhcp]
enabled = true
{interfaces}
[[dhcp.subnets]]
cidr = "10.66.0.0/24"
pool = "10.66.0.100-10.66.0.149"
routers = ["{SERVER}"]
dns = ["{SERVER}"]
domain = "lab.test"
[[dhcp.subnets]]
cidr = "10.77.1.0/24"
pool = "10.77.1.50-10.77.1.99"
routers = ["{RELAY}"]
"#,
            state = self.state_dir().display()
        );
        std::fs::write(self.path("config.toml"), config).expect("write config");
        let log = std::fs::File::create(self.path("appliance.log")).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.srv, BIN, "serve", "--config"])
            .arg(self.path("config.toml"))
            .env("RUST_LOG", "openchami=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the appliance");
        self.appliance = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.cli_cmd(&["node", "list"]).status.success() {
                break;
            }
            if let Some(c) = self.appliance.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("the appliance exited ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the appliance did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.appliance.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            // `ip netns exec` execs the appliance, so the PID is its own.
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("appliance.log")).unwrap_or_default()
    }

    /// The CLI, run as root inside the server namespace (it mints its own
    /// token from the state directory).
    fn cli_cmd(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.srv, BIN, "--url", API, "--state-dir"])
            .arg(self.state_dir())
            .arg("--config")
            .arg(self.path("config.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the CLI")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli_cmd(args);
        assert!(
            out.status.success(),
            "openchami {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `GET {API}{path}` with a token, from inside the server namespace.
    fn api_get(&self, path: &str) -> String {
        let token = self.cli_ok(&["token", "issue"]);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.srv, "curl", "-sk", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{API}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn set_client_mac(&self, mac: &str) {
        let (c, dev) = (self.cli.as_str(), self.cli_if.as_str());
        run(&["ip", "-n", c, "link", "set", dev, "down"]);
        run(&["ip", "-n", c, "link", "set", dev, "address", mac]);
        run(&["ip", "-n", c, "link", "set", dev, "up"]);
    }

    /// Runs busybox udhcpc once with extra `-x` options; the variables its
    /// script saw on `bound`.
    fn udhcpc(&self, mac: &str, extra: &[&str]) -> Vars {
        self.set_client_mac(mac);
        let out = self.path(&format!("udhcpc-{}.env", mac.replace(':', "")));
        let _ = std::fs::remove_file(&out);
        let script = self.path("udhcpc.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = bound ] && env | sort > {}\nexit 0\n",
                out.display()
            ),
        )
        .expect("script");
        make_executable(&script);
        let mut args = vec![
            "netns",
            "exec",
            &self.cli,
            "busybox",
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "2",
            "-i",
            &self.cli_if,
            "-s",
        ];
        let s = script.display().to_string();
        args.push(&s);
        for x in extra {
            args.push("-x");
            args.push(x);
        }
        let o = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run udhcpc");
        assert!(
            o.status.success(),
            "udhcpc {extra:?} got no lease: {}{}\nappliance log:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        Vars::read(&out)
    }

    /// Runs ISC dhclient once with `conf` (dhclient.conf lines) and a lease
    /// file per `name` (kept between runs, so a second run INIT-REBOOTs);
    /// the variables of the last `BOUND`/`REBOOT` and dhclient's log.
    fn dhclient(&self, mac: &str, name: &str, conf: &str) -> (Vars, String) {
        self.set_client_mac(mac);
        let out = self.path(&format!("dhclient-{name}.env"));
        let _ = std::fs::remove_file(&out);
        let script = self.path("dhclient.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncase \"$reason\" in BOUND|REBOOT|RENEW) env | sort > {} ;; esac\nexit 0\n",
                out.display()
            ),
        )
        .expect("script");
        make_executable(&script);
        let cf = self.path(&format!("dhclient-{name}.conf"));
        std::fs::write(&cf, format!("timeout 30;\nretry 1;\n{conf}\n")).expect("conf");
        let pf = self.path(&format!("dhclient-{name}.pid"));
        let o = Command::new("ip")
            .args(["netns", "exec", &self.cli, "dhclient", "-1", "-v", "-sf"])
            .arg(&script)
            .arg("-cf")
            .arg(&cf)
            .arg("-lf")
            .arg(self.path(&format!("dhclient-{name}.leases")))
            .arg("-pf")
            .arg(&pf)
            .arg(&self.cli_if)
            .stdin(Stdio::null())
            .output()
            .expect("run dhclient");
        // dhclient went to the background after binding: stop it.
        if let Ok(pid) = std::fs::read_to_string(&pf)
            && !pid.trim().is_empty()
        {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success() && out.exists(),
            "dhclient got no lease: {log}\nappliance log:\n{}",
            self.log()
        );
        (Vars::read(&out), log)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
        for ns in [&self.cli, &self.srv] {
            // Whatever still runs inside (dhclient daemons) is ours.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// `NAME=value` lines.
struct Vars(Vec<(String, String)>);

impl Vars {
    fn read(p: &Path) -> Vars {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        Vars(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[track_caller]
    fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{k} not set; got {:?}", self.0))
    }

    fn opt(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

fn add_node(lab: &Lab, xname: &str, nid: &str, mac: &str, ip: &str) {
    lab.cli_ok(&["node", "add", xname, "--nid", nid, "--mac", mac, "--ip", ip]);
}

#[test]
fn known_nodes_get_address_hostname_lease_and_boot_files() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new();
    lab.start(true);
    add_node(
        &lab,
        "x1000c0s0b0n0",
        "1",
        "02:aa:00:00:00:01",
        "10.66.0.11",
    );
    add_node(
        &lab,
        "x1000c0s1b0n0",
        "2",
        "02:aa:00:00:00:02",
        "10.66.0.12",
    );
    add_node(
        &lab,
        "x1000c0s2b0n0",
        "3",
        "02:aa:00:00:00:03",
        "10.66.0.13",
    );

    // An x86-64 UEFI client (option 93 = 7), with ISC dhclient.
    let (v, _) = lab.dhclient(
        "02:aa:00:00:00:01",
        "uefi",
        "option pxe-arch code 93 = unsigned integer 16;\nsend pxe-arch 7;\n\
         request subnet-mask, routers, domain-name-servers, domain-name, host-name;",
    );
    assert_eq!(v.get("new_ip_address"), "10.66.0.11");
    assert_eq!(
        v.get("new_host_name"),
        "de0001",
        "the cloud-init host name rule"
    );
    assert_eq!(v.get("new_dhcp_lease_time"), "3600");
    assert_eq!(v.get("new_subnet_mask"), "255.255.255.0");
    assert_eq!(v.get("new_routers"), SERVER);
    assert_eq!(v.get("new_domain_name"), "lab.test");
    assert_eq!(v.get("new_filename"), "ipxe-x86_64.efi");
    assert_eq!(v.get("new_dhcp_server_identifier"), SERVER);

    // The same hostname is what cloud-init reads for that node.
    let md = lab.api_get("/cloud-init/admin/impersonation/x1000c0s0b0n0/meta-data");
    assert!(md.contains("hostname: de0001"), "{md}");

    // A BIOS client (option 93 = 0), with busybox udhcpc.
    let v = lab.udhcpc("02:aa:00:00:00:02", &["0x5d:0000"]);
    assert_eq!(v.get("ip"), "10.66.0.12");
    assert_eq!(v.get("hostname"), "de0002");
    assert_eq!(v.get("lease"), "3600");
    assert_eq!(v.get("boot_file"), "undionly.kpxe");
    assert_eq!(v.get("siaddr"), SERVER);

    // iPXE (user class "iPXE"): the boot script URL on the node listener.
    let v = lab.udhcpc("02:aa:00:00:00:03", &["0x5d:0007", "0x4d:69505845"]);
    assert_eq!(v.get("ip"), "10.66.0.13");
    assert_eq!(
        v.get("boot_file"),
        "http://10.66.0.1:27778/boot/v1/bootscript?mac=02:aa:00:00:00:03"
    );

    // No option 93 and no user class: an OS client gets no boot file.
    let v = lab.udhcpc("02:aa:00:00:00:01", &[]);
    assert_eq!(v.get("ip"), "10.66.0.11");
    assert_eq!(v.opt("boot_file"), None);

    let leases = lab.cli_ok(&["-o", "json", "dhcp", "leases"]);
    for ip in ["10.66.0.11", "10.66.0.12", "10.66.0.13"] {
        assert!(leases.contains(ip), "{ip} listed: {leases}");
    }
    assert!(leases.contains("\"reserved\""), "{leases}");
}

#[test]
fn unknown_mac_keeps_its_pool_address_across_restart_and_is_naked_once_enrolled() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new();
    // No interface named: the one with an address in a subnet is served.
    lab.start(false);
    let mac = "02:cc:00:00:00:07";
    let (v, _) = lab.dhclient(mac, "pool", "request subnet-mask, routers, host-name;");
    let pool_ip = v.get("new_ip_address").to_string();
    let n: u32 = pool_ip
        .strip_prefix("10.66.0.")
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    assert!((100..=149).contains(&n), "pool address, got {pool_ip}");
    assert_eq!(v.get("new_dhcp_lease_time"), "300");
    assert_eq!(
        v.opt("new_host_name"),
        None,
        "pool leases have no host name"
    );
    let leases = lab.cli_ok(&["dhcp", "leases", "--kind", "pool"]);
    assert!(
        leases.contains(&pool_ip) && leases.contains(mac),
        "{leases}"
    );

    lab.stop();
    lab.start(false);
    // A fresh DISCOVER (udhcpc keeps no state) gets the same address back…
    let v = lab.udhcpc(mac, &[]);
    assert_eq!(v.get("ip"), pool_ip, "the pool lease survived the restart");
    // …and so does dhclient's INIT-REBOOT REQUEST for it.
    let (v, _) = lab.dhclient(mac, "pool", "request subnet-mask, routers, host-name;");
    assert_eq!(v.get("new_ip_address"), pool_ip);

    // Enrolled: the next REQUEST for the pool address is NAKed and the
    // client comes back for its inventory address.
    add_node(&lab, "x1000c0s7b0n0", "7", mac, "10.66.0.17");
    let (v, log) = lab.dhclient(mac, "pool", "request subnet-mask, routers, host-name;");
    assert!(log.contains("DHCPNAK"), "dhclient saw a NAK: {log}");
    assert_eq!(v.get("new_ip_address"), "10.66.0.17");
    assert_eq!(v.get("new_host_name"), "de0007");
    let leases = lab.cli_ok(&["-o", "json", "dhcp", "leases"]);
    assert!(
        !leases.contains(&format!("\"{pool_ip}\"")),
        "pool lease freed: {leases}"
    );

    // Counters are published every couple of seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = lab.api_get("/metrics");
        if m.contains("openchami_dhcp_replies_total{type=\"nak\"}") {
            assert!(
                m.contains("openchami_dhcp_replies_total{type=\"ack\"}"),
                "{m}"
            );
            assert!(
                m.contains("openchami_dhcp_replies_total{type=\"offer\"}"),
                "{m}"
            );
            assert!(
                m.contains("# TYPE openchami_dhcp_decision_duration_seconds histogram"),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no DHCP counters: {m}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn relayed_request_gets_an_address_from_the_relay_subnet() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new();
    lab.start(true);
    let exe = std::env::current_exe().expect("test binary");
    let o = Command::new("ip")
        .args(["netns", "exec", &lab.cli])
        .arg(exe)
        .args([
            "relay_probe",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("OPENCHAMI_RELAY_PROBE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the relay probe");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = text
        .lines()
        .find_map(|l| l.find("RELAY ").map(|at| &l[at..]))
        .unwrap_or_else(|| {
            panic!(
                "relay probe failed: {text}{}\nappliance log:\n{}",
                String::from_utf8_lossy(&o.stderr),
                lab.log()
            )
        });
    let got: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(got[1], "ACK", "{line}");
    let yiaddr: Ipv4Addr = got[2].parse().expect("address");
    let o = yiaddr.octets();
    assert!(
        o[..3] == [10, 77, 1] && (50..=99).contains(&o[3]),
        "an address from the relay's pool: {line}"
    );
    assert_eq!(got[3], RELAY, "the relay subnet's router: {line}");
    assert_eq!(got[4], SERVER, "server id faces the relay: {line}");
}

/// Not a test on its own: the relay end of the test above, run by it inside
/// the client namespace (a process cannot change its own namespace without
/// `setns`). Does nothing unless `OPENCHAMI_RELAY_PROBE` is set.
#[test]
fn relay_probe() {
    if std::env::var_os("OPENCHAMI_RELAY_PROBE").is_none() {
        return;
    }
    let sock = UdpSocket::bind((RELAY, 67)).expect("bind the relay port");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let server: SocketAddr = format!("{SERVER}:67").parse().expect("addr");
    let chaddr = [2, 0xbb, 0, 0, 0, 1];
    let relay: Ipv4Addr = RELAY.parse().expect("relay");
    let exchange = |kind: MessageType, extra: Vec<DhcpOption>| -> Message {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            relay,
            &chaddr,
        );
        m.set_hops(1).set_flags(Flags::default());
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in extra {
            m.opts_mut().insert(o);
        }
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).expect("encode");
        for _ in 0..3 {
            sock.send_to(&b, server).expect("send");
            let mut buf = [0u8; 1500];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let r = Message::decode(&mut Decoder::new(&buf[..n])).expect("decode");
                assert_eq!(r.opcode(), Opcode::BootReply);
                assert_eq!(r.xid(), m.xid());
                assert_eq!(r.giaddr(), relay);
                return r;
            }
        }
        panic!("no answer to {kind:?}");
    };
    let offer = exchange(MessageType::Discover, Vec::new());
    let sid = match offer.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => panic!("offer without a server id"),
    };
    let ack = exchange(
        MessageType::Request,
        vec![
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
            DhcpOption::ServerIdentifier(sid),
        ],
    );
    let kind = match ack.opts().msg_type() {
        Some(MessageType::Ack) => "ACK",
        Some(MessageType::Nak) => "NAK",
        _ => "OTHER",
    };
    let router = match ack.opts().get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().map(|r| r.to_string()).unwrap_or_default(),
        _ => String::new(),
    };
    println!("RELAY {kind} {} {router} {sid}", ack.yiaddr());
}
