//! Discovery and power against a real Redfish emulator nobody here wrote:
//! sushy-tools' `sushy-emulator` with its fake driver (no libvirt), over TLS
//! with Basic auth from an htpasswd file. It has no SessionService, so the
//! client's Basic fallback is what talks to it.
//!
//! Each test starts its own emulator on a free loopback port and kills it
//! when done, even on failure. The emulator is found through
//! `$SUSHY_EMULATOR`, `PATH`, or the venv `.ci/run` creates; when it is
//! missing the tests fail under CI (env `CI` set) and are skipped otherwise.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Harness;
use serde_json::{Value, json};

const USER: &str = "admin";
const PASSWORD: &str = "sushy-secret";

/// Two fake systems: node001 off, node002 on.
const SYSTEMS: [(&str, &str, &str, &str); 2] = [
    (
        "27946b59-9e44-4fa7-8e91-f3527a1ef094",
        "node001",
        "Off",
        "52:54:00:12:34:56",
    ),
    (
        "37946b59-9e44-4fa7-8e91-f3527a1ef095",
        "node002",
        "On",
        "52:54:00:12:34:57",
    ),
];

fn emulator_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SUSHY_EMULATOR") {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("sushy-emulator");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let p = home.join(".cache/openchami-ci/venv/bin/sushy-emulator");
    p.is_file().then_some(p)
}

/// The emulator, or `None` (test skipped) outside CI when it is missing.
fn emulator_or_skip() -> Option<PathBuf> {
    match emulator_binary() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("sushy-emulator is missing: .ci/run installs sushy-tools (pip) into a venv")
        }
        None => {
            eprintln!("skipped: sushy-emulator not installed (pip install sushy-tools)");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A running sushy-emulator; killed on drop.
struct Emulator {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Emulator {
    async fn start(bin: &Path) -> Emulator {
        let dir = tempfile::Builder::new()
            .prefix("openchami-sushy-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        // TLS: a throwaway self-signed certificate.
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        std::fs::write(d.join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(d.join("key.pem"), key.serialize_pem()).expect("write key");
        // htpasswd with bcrypt, from the emulator's own Python (bcrypt is a
        // dependency of its Basic-auth middleware).
        let python = bin.with_file_name("python3");
        let python = if python.is_file() {
            python
        } else {
            PathBuf::from("python3")
        };
        let out = Command::new(&python)
            .args([
                "-c",
                "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())",
                PASSWORD,
            ])
            .output()
            .expect("run python for bcrypt");
        assert!(
            out.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = String::from_utf8(out.stdout)
            .expect("hash")
            .trim()
            .to_string();
        std::fs::write(d.join("htpasswd"), format!("{USER}:{hash}\n")).expect("htpasswd");
        let port = free_port();
        let systems: Vec<String> = SYSTEMS
            .iter()
            .map(|(uuid, name, power, mac)| {
                format!("{{'uuid': '{uuid}', 'name': '{name}', 'power_state': '{power}', 'nics': [{{'mac': '{mac}', 'ip': '10.0.1.50'}}]}}")
            })
            .collect();
        let conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_SSL_CERT = '{d}/cert.pem'\n\
             SUSHY_EMULATOR_SSL_KEY = '{d}/key.pem'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{d}/htpasswd'\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = '{d}/state'\n\
             SUSHY_EMULATOR_FEATURE_SET = 'full'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n\
             SUSHY_EMULATOR_STORAGE = {{'{s0}': [{{'Id': '1', 'Name': 'Local Storage Controller', \
               'StorageControllers': [{{'MemberId': '0', 'Name': 'Contoso Integrated RAID', 'SpeedGbps': 12}}], \
               'Drives': ['32ADF365C6C1B7BD']}}]}}\n\
             SUSHY_EMULATOR_DRIVES = {{('{s0}', '1'): [{{'Id': '32ADF365C6C1B7BD', 'Name': 'Drive Sample', \
               'CapacityBytes': 899527000000, 'Protocol': 'SAS'}}]}}\n",
            systems.join(", "),
            s0 = SYSTEMS[0].0,
            d = d.display()
        );
        std::fs::write(d.join("emu.conf"), conf).expect("write config");
        let log = std::fs::File::create(d.join("emu.log")).expect("log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(d.join("emu.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sushy-emulator");
        let emu = Emulator {
            child,
            port,
            _dir: dir,
        };
        emu.wait_ready().await;
        emu
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = self.client();
        loop {
            let ok = client
                .get(format!("https://{}/redfish/v1/", self.addr()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not come up: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("emu.log")).unwrap_or_default()
    }

    fn client(&self) -> reqwest::Client {
        common::init_crypto();
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// The emulator's own idea of a system's power state.
    async fn power(&self, uuid: &str) -> String {
        let v: Value = self
            .client()
            .get(format!("https://{}/redfish/v1/Systems/{uuid}", self.addr()))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .expect("emulator answers")
            .json()
            .await
            .expect("JSON");
        v["PowerState"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The xname the stable rule gives 127.0.0.1.
const BMC: &str = "x4064c0s0b1";

async fn harness() -> Harness {
    Harness::start_with(|c| {
        c.power.poll_interval_secs = 1;
        c.power.sample_interval_secs = 0;
    })
    .await
}

async fn set_default_credentials(h: &Harness, password: &str) {
    h.api
        .put(
            "/discovery/v1/credentials/default",
            &json!({"username": USER, "password": password}),
        )
        .await
        .ok();
}

/// Polls a discovery job until it ends.
async fn wait_job(h: &Harness, job: &Value) -> Value {
    h.wait_job(job, Duration::from_secs(180)).await
}

/// An emulator crawled into a fresh appliance with the right credentials
/// (None when the emulator is missing outside CI): the emulator, the
/// appliance and the finished collect job.
async fn collected_emulator() -> Option<(Emulator, Harness, Value)> {
    let bin = emulator_or_skip()?;
    let emu = Emulator::start(&bin).await;
    let h = harness().await;
    set_default_credentials(&h, PASSWORD).await;
    let done = collect(&h, &[emu.addr()]).await;
    assert_eq!(done["collected"], 1, "{done}");
    Some((emu, h, done))
}

async fn collect(h: &Harness, targets: &[String]) -> Value {
    let job = h
        .api
        .post("/discovery/v1/collect", &json!({"targets": targets}))
        .await
        .status(202)
        .json();
    wait_job(h, &job).await
}

/// Starts a transition and waits for it to end.
async fn transition(h: &Harness, op: &str, xnames: &[&str]) -> Value {
    let loc: Vec<Value> = xnames.iter().map(|x| json!({"xname": x})).collect();
    let r = h
        .api
        .post(
            "/power-control/v1/transitions",
            &json!({"operation": op, "taskDeadlineMinutes": 2, "location": loc}),
        )
        .await
        .ok()
        .json();
    let id = r["transitionID"]
        .as_str()
        .expect("transitionID")
        .to_string();
    h.wait_transition(&id, Duration::from_secs(240)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_the_emulator_and_nothing_else() {
    let Some(bin) = emulator_or_skip() else {
        return;
    };
    let emu = Emulator::start(&bin).await;
    let h = harness().await;
    let closed = format!("127.0.0.1:{}", free_port());
    // The appliance's own API listener: HTTPS, but /redfish/v1/ is a 404.
    let plain_https = h.api_addr().to_string();
    let job = h
        .api
        .post(
            "/discovery/v1/scan",
            &json!({"targets": [emu.addr(), plain_https, closed]}),
        )
        .await
        .status(202)
        .json();
    let done = wait_job(&h, &job).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["scanned"], 3, "{done}");
    let found: Vec<&str> = done["bmcs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap())
        .collect();
    assert_eq!(found, vec![emu.addr().as_str()], "{done}");
    assert_eq!(done["bmcs"][0]["redfish_version"], "1.5.0");
    assert_eq!(
        h.app().state.store.snapshot().redfish_endpoints.len(),
        0,
        "scan writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_writes_components_nids_macs_and_endpoints() {
    let Some((emu, h, done)) = collected_emulator().await else {
        return;
    };
    let bmc = &done["bmcs"][0];
    assert_eq!(bmc["xname"], BMC, "{done}");
    assert_eq!(bmc["systems"], 2, "{done}");

    let ep = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/RedfishEndpoints/{BMC}"))
        .await;
    assert_eq!(ep["FQDN"], emu.addr());
    assert_eq!(ep["User"], USER);
    assert_eq!(ep["Password"], "", "the password never leaves");
    assert_eq!(ep["DiscoveryInfo"]["LastDiscoveryStatus"], "DiscoverOK");
    let stored = h.app().state.store.snapshot().redfish_endpoints[BMC]
        .password
        .clone();
    assert!(stored.starts_with("v1:"), "sealed at rest: {stored}");
    assert_eq!(h.app().state.secrets.open(&stored).unwrap(), PASSWORD);

    // One node per emulated system, NIDs 1 and 2, MACs bound to them.
    let comps = h.api.get_json("/hsm/v2/State/Components?type=Node").await;
    let mut nodes: Vec<(String, i64)> = comps["Components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["ID"].as_str().unwrap().to_string(),
                c["NID"].as_i64().unwrap(),
            )
        })
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        vec![(format!("{BMC}n0"), 1), (format!("{BMC}n1"), 2)],
        "{comps}"
    );
    let bmc_comp = h
        .api
        .get_json(&format!("/hsm/v2/State/Components/{BMC}"))
        .await;
    assert_eq!(bmc_comp["Type"], "NodeBMC");
    let ifaces = h.api.get_json("/hsm/v2/Inventory/EthernetInterfaces").await;
    let mut macs: Vec<(String, String)> = ifaces
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["MACAddress"].as_str().unwrap().to_string(),
                i["ComponentID"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    macs.sort();
    assert_eq!(
        macs,
        vec![
            (SYSTEMS[0].3.to_string(), format!("{BMC}n0")),
            (SYSTEMS[1].3.to_string(), format!("{BMC}n1")),
        ]
    );
    // ComponentEndpoints carry the reset targets and allowable values.
    let ce = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/ComponentEndpoints/{BMC}n0"))
        .await;
    let reset = &ce["RedfishSystemInfo"]["Actions"]["#ComputerSystem.Reset"];
    assert_eq!(
        reset["target"],
        format!(
            "/redfish/v1/Systems/{}/Actions/ComputerSystem.Reset",
            SYSTEMS[0].0
        )
    );
    assert!(
        reset["ResetType@Redfish.AllowableValues"]
            .as_array()
            .unwrap()
            .contains(&json!("GracefulShutdown"))
    );
    assert_eq!(ce["RedfishEndpointID"], BMC);

    // The emulator's Enclosure chassis is the node enclosure upstream's
    // discovery records next to the BMC and the nodes.
    let enc = format!("{}e1", &BMC[..BMC.len() - 2]);
    let ces = h.api.get_json("/hsm/v2/Inventory/ComponentEndpoints").await;
    let mut ids: Vec<&str> = ces["ComponentEndpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ID"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![
        BMC.to_string(),
        format!("{BMC}n0"),
        format!("{BMC}n1"),
        enc.clone(),
    ];
    want.sort();
    assert_eq!(ids, want, "{ces}");
    let ce = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/ComponentEndpoints/{enc}"))
        .await;
    assert_eq!(ce["Type"], "NodeEnclosure", "{ce}");
    assert_eq!(ce["RedfishType"], "Chassis");
    assert_eq!(ce["RedfishSubtype"], "Enclosure");
    assert_eq!(ce["ComponentEndpointType"], "ComponentEndpointChassis");
    assert_eq!(ce["RedfishEndpointID"], BMC);
    let odata = ce["OdataID"].as_str().unwrap().to_string();
    assert!(odata.starts_with("/redfish/v1/Chassis/"), "{ce}");
    assert_eq!(ce["RedfishURL"], format!("{}{odata}", emu.addr()));
    assert!(ce["RedfishChassisInfo"]["Name"].is_string(), "{ce}");
    assert!(ce.get("UUID").is_none(), "upstream leaves it unset: {ce}");
    let comp = h
        .api
        .get_json(&format!("/hsm/v2/State/Components/{enc}"))
        .await;
    assert_eq!(
        (&comp["Type"], &comp["State"], &comp["Flag"]),
        (&json!("NodeEnclosure"), &json!("On"), &json!("OK")),
        "{comp}"
    );

    // Re-running changes nothing that matters: same xnames and NIDs.
    let again = collect(&h, &[emu.addr()]).await;
    assert_eq!(again["collected"], 1, "{again}");
    assert_eq!(again["bmcs"][0]["xname"], BMC);
    let snap = h.app().state.store.snapshot();
    assert_eq!(snap.redfish_endpoints.len(), 1);
    assert_eq!(snap.components[&format!("{BMC}n1")].nid, Some(2));
    assert_eq!(snap.interfaces.len(), 2);
    assert_eq!(snap.component_endpoints.len(), 4);
    let ce_again = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/ComponentEndpoints/{enc}"))
        .await;
    assert_eq!(ce_again, ce, "the enclosure is rewritten as it was");
}

/// What sushy-tools serves of a System's units (Storage and Drives from
/// its static storage driver, for the first System only) lands in the
/// hardware inventory; what it links but does not serve (Memory: 404; the
/// second System's Storage: 500) is reported, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulators_units_fill_the_hardware_inventory() {
    let Some((_emu, h, done)) = collected_emulator().await else {
        return;
    };
    let notes = done["bmcs"][0]["notes"].to_string();
    assert!(notes.contains("/Memory: HTTP 404"), "{done}");
    assert!(
        notes.contains(&format!("{}/Storage: HTTP 500", SYSTEMS[1].0)),
        "{done}"
    );
    // Two nodes, the drive, the enclosure chassis.
    assert_eq!(done["bmcs"][0]["fru_locations"], 4, "{done}");
    let nodes = h.api.get_json("/hsm/v2/Inventory/Hardware?type=Node").await;
    let mut uuids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["PopulatedFRU"]["NodeFRUInfo"]["UUID"].as_str().unwrap())
        .collect();
    uuids.sort();
    assert_eq!(uuids, vec![SYSTEMS[0].0, SYSTEMS[1].0]);
    let drives = h
        .api
        .get_json("/hsm/v2/Inventory/Hardware?type=Drive")
        .await;
    assert_eq!(drives.as_array().unwrap().len(), 1, "{drives}");
    let d = &drives[0];
    assert_eq!(d["ID"], format!("{BMC}n0g0k0"));
    assert_eq!(d["DriveLocationInfo"]["Id"], "32ADF365C6C1B7BD");
    assert_eq!(d["PopulatedFRU"]["FRUID"], "Drive.Contoso.C1231111.1234570");
    assert_eq!(
        d["PopulatedFRU"]["DriveFRUInfo"]["CapacityBytes"],
        899527000000_u64
    );
    let node = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/Hardware/{BMC}n0"))
        .await;
    assert_eq!(
        node["NodeLocationInfo"]["StorageControllers"][0]["Manufacturer"],
        "Contoso"
    );
    let hist = h
        .api
        .get_json("/hsm/v2/Inventory/HardwareByFRU/History/Drive.Contoso.C1231111.1234570")
        .await;
    assert_eq!(hist["History"][0]["EventType"], "Added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_on_off_and_reset_change_the_emulator() {
    let Some((emu, h, _)) = collected_emulator().await else {
        return;
    };
    let (n0, n1) = (format!("{BMC}n0"), format!("{BMC}n1"));
    let (off_uuid, on_uuid) = (SYSTEMS[0].0, SYSTEMS[1].0);

    let t = transition(&h, "on", &[&n0, &n1]).await;
    assert_eq!(t["transitionStatus"], "completed", "{t}");
    assert_eq!(t["taskCounts"]["succeeded"], 2, "{t}");
    assert_eq!(emu.power(off_uuid).await, "On");
    let already = t["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["xname"] == n1.as_str())
        .unwrap();
    assert_eq!(
        already["taskStatusDescription"],
        "Component already in desired state"
    );

    let t = transition(&h, "off", &[&n1]).await;
    assert_eq!(t["tasks"][0]["taskStatus"], "succeeded", "{t}");
    assert_eq!(emu.power(on_uuid).await, "Off");

    // ochami's default: PCS at the root.
    let st = h.api.get_json(&format!("/power-status?xname={n1}")).await;
    assert_eq!(st["status"][0]["powerState"], "off", "{st}");
    assert_eq!(st["status"][0]["managementState"], "available");

    let t = transition(&h, "hard-restart", &[&n1]).await;
    assert_eq!(t["tasks"][0]["taskStatus"], "succeeded", "{t}");
    assert_eq!(emu.power(on_uuid).await, "On");
    let t = transition(&h, "soft-restart", &[&n0]).await;
    assert_eq!(t["tasks"][0]["taskStatus"], "succeeded", "{t}");

    let list = h.api.get_json("/transitions").await;
    assert_eq!(list["transitions"].as_array().unwrap().len(), 4);
    assert!(list["transitions"][0].get("tasks").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_clearly_and_quickly() {
    let Some(bin) = emulator_or_skip() else {
        return;
    };
    let emu = Emulator::start(&bin).await;
    let h = harness().await;
    set_default_credentials(&h, "not-the-password").await;
    let started = Instant::now();
    let done = collect(&h, &[emu.addr()]).await;
    assert_eq!(done["failed"], 1, "{done}");
    let reason = done["bmcs"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("credentials rejected (401"), "{reason}");
    assert!(reason.contains("retrying will not help"), "{reason}");
    // No retries, no request timeouts: refused logins are never retried.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert!(h.app().state.store.snapshot().redfish_endpoints.is_empty());

    // Power with a per-BMC credential that is wrong: the task fails, clearly.
    set_default_credentials(&h, PASSWORD).await;
    assert_eq!(collect(&h, &[emu.addr()]).await["collected"], 1);
    h.api
        .put(
            &format!("/discovery/v1/credentials/{BMC}"),
            &json!({"username": USER, "password": "wrong"}),
        )
        .await
        .ok();
    let t = transition(&h, "on", &[&format!("{BMC}n0")]).await;
    assert_eq!(t["tasks"][0]["taskStatus"], "failed", "{t}");
    assert_eq!(
        t["tasks"][0]["taskStatusDescription"],
        "Failed to achieve transition"
    );
    let d = t["tasks"][0]["error"].as_str().unwrap();
    assert!(d.contains("credentials rejected"), "{d}");
}

/// Forwards TCP to `to`, until `limit` bytes came back from it (over all
/// connections); then it keeps connections open and silent, like a BMC
/// that hung.
struct CutProxy {
    addr: std::net::SocketAddr,
    from_server: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
}

impl CutProxy {
    async fn start(to: String, limit: usize) -> CutProxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let from_server = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let (count, s) = (from_server.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut c, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    a = l.accept() => match a { Ok(x) => x, Err(_) => return },
                };
                let (to, count, s) = (to.clone(), count.clone(), s.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut up) = tokio::net::TcpStream::connect(&to).await else {
                        return;
                    };
                    let (mut cr, mut cw) = c.split();
                    let (mut ur, mut uw) = up.split();
                    let upstream = async {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        // Pass the close on: the emulator serves one
                        // connection at a time and would wait on this one.
                        let _ = uw.shutdown().await;
                    };
                    let downstream = async {
                        let mut buf = [0u8; 4096];
                        loop {
                            let n = match ur.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let before = count.fetch_add(n, Ordering::SeqCst);
                            if before + n > limit {
                                let keep = limit.saturating_sub(before);
                                let _ = cw.write_all(&buf[..keep]).await;
                                // Hang: hold the connection, answer nothing.
                                s.cancelled().await;
                                break;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = cw.shutdown().await;
                    };
                    tokio::select! {
                        _ = async { tokio::join!(upstream, downstream) } => {}
                        _ = s.cancelled() => {}
                    }
                });
            }
        });
        CutProxy {
            addr,
            from_server,
            stop,
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_that_stops_answering_fails_and_leaves_nothing() {
    let Some(bin) = emulator_or_skip() else {
        return;
    };
    let emu = Emulator::start(&bin).await;
    // First a scan and a whole crawl through the proxy, to learn how much
    // each reads. How many connections (and so TLS handshakes) a crawl opens
    // depends on timing, so the cut is placed a third of the way into the
    // crawl, well past the scan and well before the end.
    let (scan, full) = {
        let h = harness().await;
        set_default_credentials(&h, PASSWORD).await;
        let proxy = CutProxy::start(emu.addr(), usize::MAX).await;
        let job = h
            .api
            .post(
                "/discovery/v1/scan",
                &json!({"targets": [proxy.addr.to_string()]}),
            )
            .await
            .status(202)
            .json();
        let done = wait_job(&h, &job).await;
        assert_eq!(done["found"], 1, "{done}");
        let scan = proxy.from_server.load(Ordering::SeqCst);
        let proxy = CutProxy::start(emu.addr(), usize::MAX).await;
        let done = collect(&h, &[proxy.addr.to_string()]).await;
        assert_eq!(done["collected"], 1, "{done}");
        (scan, proxy.from_server.load(Ordering::SeqCst))
    };
    assert!(full > 2 * scan, "scan {scan} bytes, crawl {full} bytes");
    // Then the same crawl, cut off half-way.
    let h = Harness::start_with(|c| {
        c.redfish.request_timeout_secs = 2;
        c.power.sample_interval_secs = 0;
    })
    .await;
    set_default_credentials(&h, PASSWORD).await;
    let proxy = CutProxy::start(emu.addr(), scan + (full - scan) / 3).await;
    let done = collect(&h, &[proxy.addr.to_string()]).await;
    assert_eq!(done["found"], 1, "the scan got through: {done}");
    assert_eq!(done["failed"], 1, "{done}");
    let reason = done["bmcs"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no answer within 2 s"), "{reason}");
    let snap = h.app().state.store.snapshot();
    assert!(snap.redfish_endpoints.is_empty(), "no partial inventory");
    assert!(snap.components.is_empty(), "no partial inventory");
    assert!(snap.interfaces.is_empty(), "no partial inventory");
    assert!(snap.component_endpoints.is_empty(), "no partial inventory");
}

/// sushy-tools' UpdateService: `SimpleUpdate` wants `Targets`, refuses
/// Manager targets, and for a System bumps its BiosVersion, which its fake
/// driver cannot do (it keeps no firmware versions: HTTP 500). Each of its
/// answers reaches the BMC's result as it gave it; it serves no
/// FirmwareInventory, so discovery records none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_updates_report_what_the_emulator_answers() {
    let Some(bin) = emulator_or_skip() else {
        return;
    };
    let emu = Emulator::start(&bin).await;
    let artifacts = tempfile::tempdir().expect("tempdir");
    std::fs::write(artifacts.path().join("bios-1.1.bin"), b"image").expect("image");
    let dir = artifacts.path().to_path_buf();
    let h = Harness::start_with(move |c| {
        c.power.sample_interval_secs = 0;
        c.boot.artifacts_dir = dir;
    })
    .await;
    set_default_credentials(&h, PASSWORD).await;
    let done = collect(&h, &[emu.addr()]).await;
    assert_eq!(done["collected"], 1, "{done}");
    assert!(
        !h.app()
            .state
            .store
            .snapshot()
            .bmc_firmware
            .contains_key(BMC),
        "no FirmwareInventory to record"
    );

    let system = format!("/redfish/v1/Systems/{}", SYSTEMS[0].0);
    let table = [
        (json!([]), "Missing ImageURI and/or Targets"),
        (
            json!(["/redfish/v1/Managers/BMC"]),
            "Manager is not currently a supported Target",
        ),
        (json!([system]), "Failed fetching BIOS information"),
    ];
    for (components, message) in table {
        let r = h
            .api
            .post(
                "/firmware/v1/updates",
                &json!({"image": "bios-1.1.bin", "targets": [BMC], "components": components,
                        "timeoutSecs": 30}),
            )
            .await
            .status(202);
        let path = format!("/firmware/v1/updates/{}", r.json()["id"].as_str().unwrap());
        let deadline = Instant::now() + Duration::from_secs(120);
        let j = loop {
            let j = h.api.get_json(&path).await;
            if j["state"] == "completed" {
                break j;
            }
            assert!(Instant::now() < deadline, "update never ended: {j}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let b = &j["bmcs"][0];
        assert_eq!(b["status"], "Failed", "{components}: {j}");
        assert_eq!(b["method"], "SimpleUpdate", "{j}");
        assert!(
            b["message"].as_str().unwrap_or("").contains(message),
            "{components}: {j}"
        );
    }
    // A refused update is not sent again: the BMC may have begun it.
    let posts = emu
        .log()
        .lines()
        .filter(|l| l.contains("POST /redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate"))
        .count();
    assert_eq!(posts, 3, "{}", emu.log());
}
