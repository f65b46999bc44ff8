//! The client commands of the built binary against an in-process appliance,
//! their output compared with golden files in `tests/golden/`.
//!
//! After an intended change of output, regenerate the files with
//! `UPDATE_GOLDEN=1 cargo test --test cli` and review the diff.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::Harness;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_openchami");

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn golden_dir() -> PathBuf {
    manifest_dir().join("tests/golden")
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Compares `actual` with `tests/golden/<name>`, or rewrites the file when
/// `UPDATE_GOLDEN=1`.
#[track_caller]
fn golden(name: &str, actual: &str) {
    let masked = mask_times(actual);
    let actual = masked.as_str();
    let path = golden_dir().join(name);
    if update() {
        std::fs::create_dir_all(golden_dir()).expect("create tests/golden");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `UPDATE_GOLDEN=1 cargo test --test cli` to create it.\nactual:\n{actual}",
            path.display()
        )
    });
    assert!(
        want == actual,
        "{} differs (UPDATE_GOLDEN=1 rewrites it after an intended change)\n--- want\n{want}\n--- actual\n{actual}",
        path.display()
    );
}

/// Replaces RFC 3339 timestamps (e.g. `LastUpdate`) with a fixed marker so
/// golden files do not depend on when the test ran.
fn mask_times(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let is_date = bytes.len() >= i + 20
            && bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && bytes[i + 4] == b'-'
            && bytes[i + 7] == b'-'
            && bytes[i + 10] == b'T'
            && bytes[i + 13] == b':';
        if is_date {
            let end = text[i..].find(['Z', '"']).map_or(text.len(), |e| i + e + 1);
            out.push_str("<TIME>");
            i = end;
            if text.as_bytes().get(end - 1) == Some(&b'"') {
                out.push('"');
            }
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Runs the CLI as a client of `h`.
struct Cli<'a> {
    h: &'a Harness,
    token: String,
    empty_config: PathBuf,
}

impl<'a> Cli<'a> {
    fn new(h: &'a Harness) -> Cli<'a> {
        let empty_config = h.state_dir().join("client.toml");
        std::fs::write(&empty_config, "").expect("write client config");
        Cli {
            h,
            token: h.token.clone(),
            empty_config,
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut c = tokio::process::Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("OPENCHAMI_") || k.ends_with("_ACCESS_TOKEN") {
                c.env_remove(&k);
            }
        }
        c.current_dir(manifest_dir())
            .arg("--url")
            .arg(self.h.api_base())
            .arg("--cacert")
            .arg(self.h.state_dir().join("ca/root.crt"))
            .arg("--token")
            .arg(&self.token)
            .arg("--config")
            .arg(&self.empty_config)
            .args(args)
            .kill_on_drop(true);
        tokio::time::timeout(common::TIMEOUT * 2, c.output())
            .await
            .unwrap_or_else(|_| panic!("openchami {args:?} timed out"))
            .unwrap_or_else(|e| panic!("openchami {args:?}: {e}"))
    }

    /// Runs a command that must succeed with nothing on stderr; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "openchami {args:?} failed: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.is_empty(),
            "openchami {args:?} wrote to stderr: {stderr}"
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs a command that must fail with one line on stderr; that line.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stderr = String::from_utf8(out.stderr).expect("UTF-8 output");
        assert!(
            !out.status.success(),
            "openchami {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "openchami {args:?}: one line on stderr, got:\n{stderr}"
        );
        assert!(stderr.starts_with("openchami: "), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "openchami {args:?}: output on failure"
        );
        stderr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_match_golden_output() {
    let h = Harness::start().await;
    let cli = Cli::new(&h);

    let first = cli.ok(&["import", "-f", "examples/cluster.yaml"]).await;
    golden("import-first.txt", &first);
    let generation = h.generation();
    let second = cli.ok(&["import", "-f", "examples/cluster.yaml"]).await;
    golden("import-second.txt", &second);
    assert!(second.starts_with("nothing to change"), "{second}");
    assert_eq!(
        h.generation(),
        generation,
        "the second import wrote nothing"
    );
    let json = cli
        .ok(&["import", "-f", "examples/cluster.yaml", "-o", "json"])
        .await;
    let summary: Value = serde_json::from_str(&json).expect("-o json is JSON");
    assert_eq!(summary["changed"], 0);
    assert_eq!(summary["nodes"], 4);

    golden("node-list.txt", &cli.ok(&["node", "list"]).await);
    golden(
        "node-list-io.txt",
        &cli.ok(&["node", "list", "--group", "io"]).await,
    );
    let json = cli.ok(&["-o", "json", "node", "list"]).await;
    let rows: Value = serde_json::from_str(&json).expect("-o json is JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(4));
    golden("node-list.json", &json);

    golden(
        "node-show.txt",
        &cli.ok(&["node", "show", "x1000c1s7b3n0"]).await,
    );
    golden(
        "node-show.json",
        &cli.ok(&["node", "show", "X1000C1S7B3N0", "-o", "json"])
            .await,
    );
    golden("group-list.txt", &cli.ok(&["group", "list"]).await);
    golden(
        "group-show.txt",
        &cli.ok(&["group", "show", "compute"]).await,
    );
    golden(
        "group-show.yaml",
        &cli.ok(&["group", "show", "compute", "-o", "yaml"]).await,
    );

    // A bad MAC is refused before anything is written.
    let before = h.generation();
    let err = cli
        .fails(&[
            "node",
            "add",
            "x1000c2s0b0n0",
            "--nid",
            "10",
            "--mac",
            "nonsense",
        ])
        .await;
    golden("node-add-bad-mac.stderr", &err);
    assert_eq!(h.generation(), before, "nothing was written");
    h.api
        .get("/hsm/v2/State/Components/x1000c2s0b0n0")
        .await
        .problem(404);

    // Adding and changing nodes and groups.
    golden(
        "node-add.txt",
        &cli.ok(&[
            "node",
            "add",
            "x1000c2s0b0n0",
            "--nid",
            "10",
            "--role",
            "service",
            "--group",
            "io",
        ])
        .await,
    );
    let err = cli.fails(&["node", "add", "x1000c2s0b0n0"]).await;
    assert!(err.contains("already exists"), "{err}");
    cli.ok(&[
        "node",
        "set",
        "x1000c2s0b0n0",
        "--state",
        "off",
        "--enabled",
        "false",
    ])
    .await;
    cli.ok(&[
        "group",
        "add",
        "login",
        "--description",
        "login nodes",
        "--member",
        "x1000c2s0b0n0",
    ])
    .await;
    cli.ok(&["group", "add-member", "login", "x1000c1s7b0n0"])
        .await;
    golden("node-list-after.txt", &cli.ok(&["node", "list"]).await);
    golden("group-list-after.txt", &cli.ok(&["group", "list"]).await);
    let err = cli
        .fails(&["group", "add", "login", "--description", "again"])
        .await;
    golden("group-add-duplicate.stderr", &err);
    let err = cli.fails(&["node", "show", "x1000c1s0b0n9"]).await;
    golden("node-show-missing.stderr", &err);
    let err = cli.fails(&["node", "show", "x1000c9s0b0n0"]).await;
    golden("node-show-invalid.stderr", &err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_one_line() {
    let h = Harness::start().await;
    let mut cli = Cli::new(&h);
    cli.token = "not-a-token".into();
    let err = cli.fails(&["node", "list"]).await;
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("OPENCHAMI_ACCESS_TOKEN"), "{err}");

    let cli = Cli::new(&h);
    let missing = h.state_dir().join("missing.yaml");
    let err = cli
        .fails(&["import", "-f", missing.to_str().unwrap()])
        .await;
    assert!(err.contains("cannot read"), "{err}");
    let bad = h.state_dir().join("bad.yaml");
    std::fs::write(&bad, "nodes: [\n").unwrap();
    let err = cli.fails(&["import", "-f", bad.to_str().unwrap()]).await;
    assert!(err.contains("not valid YAML"), "{err}");
    std::fs::write(&bad, "nodes:\n  - xname: x1000c0s0b0\n").unwrap();
    let err = cli.fails(&["import", "-f", bad.to_str().unwrap()]).await;
    assert!(err.contains("400") && err.contains("not a node"), "{err}");
}

/// ochami's deprecated static-discovery format (each node with its BMC's
/// keys) still imports, to the same records as the current example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deprecated_cluster_format_still_imports() {
    let h = Harness::start().await;
    let cli = Cli::new(&h);
    let old = "tests/fixtures/cluster-deprecated.yaml";
    golden(
        "import-deprecated.txt",
        &cli.ok(&["import", "-f", old]).await,
    );
    golden(
        "import-deprecated-then-current.txt",
        &cli.ok(&["import", "-f", "examples/cluster.yaml"]).await,
    );
    golden("node-list.txt", &cli.ok(&["node", "list"]).await);
}

/// Identity rules through the CLI: each refusal is one line naming the node
/// that holds the MAC or address, and changes nothing; the explicit flag moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_conflicts_name_the_holder() {
    let h = Harness::start().await;
    let cli = Cli::new(&h);
    cli.ok(&["import", "-f", "examples/cluster.yaml"]).await;
    let dir = h.state_dir();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let moved_mac = file(
        "moved-mac.yaml",
        "nodes:\n  - xname: x1000c1s7b1n0\n    interfaces:\n      - mac_addr: de:ad:be:ee:ee:f1\n",
    );
    let misspelt = file(
        "misspelt.yaml",
        "nodes:\n  - xname: x1000c1s7b0n0\n  - xname: x1000c1s7b1n0\n    bmc_macc: de:ca:fc:0f:ee:e2\n",
    );
    let no_xname = file("no-xname.yaml", "nodes:\n  - name: node09\n    nid: 9\n");
    let mixed = file(
        "mixed.yaml",
        "bmcs:\n  - xname: x1000c1s7b0\nnodes:\n  - xname: x1000c1s7b0n0\n    bmc: x1000c1s7b0\n    bmc_mac: de:ca:fc:0f:ee:e1\n",
    );
    let bad_ref = file(
        "bad-ref.yaml",
        "bmcs:\n  - name: bmc02\n    xname: x1000c1s7b1\nnodes:\n  - xname: x1000c1s7b0n0\n    bmc: bmc02\n",
    );
    // (golden file, arguments, whether it succeeds)
    let table: &[(&str, &[&str], bool)] = &[
        (
            "import-moved-mac.stderr",
            &["import", "-f", &moved_mac],
            false,
        ),
        (
            "import-misspelt-key.stderr",
            &["import", "-f", &misspelt],
            false,
        ),
        (
            "import-no-xname.stderr",
            &["import", "-f", &no_xname],
            false,
        ),
        (
            "import-mixed-formats.stderr",
            &["import", "-f", &mixed],
            false,
        ),
        (
            "import-wrong-bmc.stderr",
            &["import", "-f", &bad_ref],
            false,
        ),
        (
            "node-add-taken-mac.stderr",
            &[
                "node",
                "add",
                "x1000c2s0b0n0",
                "--nid",
                "10",
                "--mac",
                "DE-AD-BE-EE-EE-F2",
                "--group",
                "io",
            ],
            false,
        ),
        (
            "node-add-taken-ip.stderr",
            &[
                "node",
                "add",
                "x1000c2s0b0n0",
                "--nid",
                "10",
                "--mac",
                "02:00:00:00:00:10",
                "--ip",
                "172.16.0.2",
            ],
            false,
        ),
        (
            "node-add-taken-bmc-ip.stderr",
            &[
                "node",
                "add",
                "x1000c2s0b0n0",
                "--mac",
                "02:00:00:00:00:10",
                "--ip",
                "172.16.0.104",
            ],
            false,
        ),
        (
            "node-set-taken-mac.stderr",
            &["node", "set", "x1000c1s7b0n0", "--mac", "de:ad:be:ee:ee:f3"],
            false,
        ),
        (
            "node-set-taken-ip.stderr",
            &["node", "set", "x1000c1s7b0n0", "--ip", "172.16.0.3"],
            false,
        ),
        (
            "node-set-ambiguous-ip.stderr",
            &["node", "set", "x1000c1s7b3n0", "--ip", "172.16.0.44"],
            false,
        ),
        (
            "node-set-ip.txt",
            &["node", "set", "x1000c1s7b0n0", "--ip", "172.16.0.11"],
            true,
        ),
        (
            "node-set-mac.txt",
            &[
                "node",
                "set",
                "x1000c1s7b1n0",
                "--mac",
                "02:00:00:00:00:12",
                "--ip",
                "172.16.0.12",
            ],
            true,
        ),
        (
            "import-move-macs.txt",
            &["import", "-f", &moved_mac, "--move-macs"],
            true,
        ),
    ];
    for (name, args, succeeds) in table {
        let before = h.generation();
        if *succeeds {
            golden(name, &cli.ok(args).await);
            assert_ne!(h.generation(), before, "{name}: written");
        } else {
            golden(name, &cli.fails(args).await);
            assert_eq!(h.generation(), before, "{name}: nothing written");
        }
    }
    // What the successful steps left: one holder per MAC and address.
    let ifaces = h
        .api
        .get("/hsm/v2/Inventory/EthernetInterfaces")
        .await
        .json();
    let holder = |mac: &str| {
        ifaces
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["MACAddress"] == mac)
            .map(|i| i["ComponentID"].as_str().unwrap().to_string())
    };
    assert_eq!(
        holder("de:ad:be:ee:ee:f1").as_deref(),
        Some("x1000c1s7b1n0")
    );
    assert_eq!(
        holder("02:00:00:00:00:12").as_deref(),
        Some("x1000c1s7b1n0")
    );
    assert_eq!(holder("de:ad:be:ee:ee:f2"), None, "replaced by --mac");
    h.api
        .get("/hsm/v2/State/Components/x1000c2s0b0n0")
        .await
        .problem(404);
}

/// Discovery mistakes a new user makes say what happened and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_mistakes_fail_loudly() {
    let h = Harness::start().await;
    let cli = Cli::new(&h);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    // (arguments, words of the one-line error)
    let table: &[(&[&str], &[&str])] = &[
        (
            &["discover", "scan", "127.0.0.1/32", "--port", &closed],
            &["no BMC answered", "1 addresses", "--port"],
        ),
        (
            &["discover", "collect"],
            &["no scan has found BMCs", "openchami discover scan"],
        ),
    ];
    for (args, words) in table {
        let out = cli.run(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        let last = stderr.lines().last().unwrap_or("");
        assert!(last.starts_with("openchami: "), "{args:?}: {stderr}");
        for w in *words {
            assert!(last.contains(w), "{args:?}: {last:?} lacks {w:?}");
        }
    }
    // A simulator that cannot listen exits at once, saying why.
    let port = h.api_addr().port().to_string();
    let out = tokio::time::timeout(
        common::TIMEOUT,
        tokio::process::Command::new(BIN)
            .args(["sim-bmc", "--first-ip", "127.0.0.1", "--port", &port])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("sim-bmc exits")
    .expect("run sim-bmc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Address already in use") && stderr.contains("pick another with --port"),
        "{stderr}"
    );
}

/// Pointing the CLI at the wrong listener or CA gives one line saying what
/// the peer is and which flag to change, and a closed pipe ends it quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_say_what_to_do() {
    let h = Harness::start().await;
    // Another appliance's CA: same name, another key.
    let other = Harness::start().await;
    let api = h.api_addr();
    let node = h.node_addr();
    let own_ca = h.state_dir().join("ca/root.crt");
    let other_ca = other.state_dir().join("ca/root.crt");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let https_api = format!("--url https://{api}");
    // (case, --url, --cacert, words of the one-line error)
    let table: Vec<(&str, String, &Path, Vec<&str>)> = vec![
        (
            "http:// against the API",
            format!("http://{api}"),
            &own_ca,
            vec!["answers in TLS", &https_api],
        ),
        (
            "https:// against the node listener",
            format!("https://{node}"),
            &own_ca,
            vec!["answers plain HTTP", "node listener", "port 8443"],
        ),
        (
            "another appliance's CA",
            format!("https://{api}"),
            &other_ca,
            vec!["not signed by", "--cacert", "ca fingerprint"],
        ),
        (
            "nothing listening",
            format!("https://{closed}"),
            &own_ca,
            vec!["nothing listens there", "openchami serve"],
        ),
    ];
    for (case, url, ca, words) in table {
        let out = tokio::process::Command::new(BIN)
            .args(["--url", &url, "--cacert"])
            .arg(ca)
            .args(["--token", &h.token, "node", "list"])
            .env_remove("OPENCHAMI_CONFIG")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{case}: {stderr}");
        for w in &words {
            assert!(stderr.contains(w), "{case}: {stderr:?} lacks {w:?}");
        }
    }

    // `openchami … | head` where head has gone: no panic, no message.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = tokio::process::Command::new(BIN)
        .args(["--url", &h.api_base(), "--cacert"])
        .arg(&own_ca)
        .args(["--token", &h.token, "-o", "json", "node", "list"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// The script with its jittered `sleep` value masked.
fn mask_sleep(script: &str) -> String {
    script
        .lines()
        .map(|l| {
            if l.starts_with("sleep ") {
                "sleep <DELAY>"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_commands_match_golden_output() {
    const BASE: &str = "http://172.16.0.254:27778";
    let h = Harness::start_with(|c| c.node.advertise = BASE.into()).await;
    let cli = Cli::new(&h);
    cli.ok(&["import", "-f", "examples/cluster.yaml"]).await;
    let kernel = format!("{BASE}/artifacts/vmlinuz");
    let initrd = format!("{BASE}/artifacts/initrd.img");

    golden(
        "boot-params-set.txt",
        &cli.ok(&[
            "boot",
            "params",
            "set",
            "-x",
            "x1000c1s7b3n0",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--params",
            "console=ttyS0,115200 ip=dhcp",
        ])
        .await,
    );
    cli.ok(&[
        "boot",
        "params",
        "set",
        "--group",
        "compute",
        "--kernel",
        &format!("{BASE}/artifacts/compute/vmlinuz"),
        "--initrd",
        &format!("{BASE}/artifacts/compute/initrd.img"),
        "--params",
        "console=ttyS0,115200 ip=dhcp quiet",
    ])
    .await;
    cli.ok(&[
        "boot",
        "params",
        "set",
        "--tag",
        "Default",
        "--kernel",
        &kernel,
        "--params",
        "-- single",
    ])
    .await;
    golden(
        "boot-params-show.txt",
        &cli.ok(&["boot", "params", "show"]).await,
    );
    let json = cli
        .ok(&["boot", "params", "show", "--group", "compute", "-o", "json"])
        .await;
    let rows: Value = serde_json::from_str(&json).expect("-o json is JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    golden("boot-params-show-compute.json", &json);

    // `boot script` prints exactly what the node gets (the API listener's
    // body; the node listener's is the same), sleep jitter aside.
    let script = cli.ok(&["boot", "script", "x1000c1s7b3n0"]).await;
    let served = h
        .node
        .get("/boot/v1/bootscript?name=x1000c1s7b3n0")
        .await
        .ok()
        .text();
    assert_eq!(mask_sleep(&script), mask_sleep(&served));
    assert!(
        script.ends_with('\n') && !script.ends_with("\n\n"),
        "{script:?}"
    );
    golden("boot-script.ipxe", &mask_sleep(&script));
    let json = cli
        .ok(&["boot", "script", "de:ad:be:ee:ee:f1", "--json"])
        .await;
    let served = h
        .node
        .get_json("/boot/v1/bootscript?mac=de:ad:be:ee:ee:f1&json=1")
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&json).expect("--json is JSON"),
        served
    );
    golden("boot-script-mac.json", &json);

    golden(
        "boot-params-delete.txt",
        &cli.ok(&["boot", "params", "delete", "-x", "x1000c1s7b3n0"])
            .await,
    );
    let err = cli
        .fails(&["boot", "params", "show", "-x", "x1000c1s7b3n0"])
        .await;
    assert!(err.contains("404"), "{err}");
    // x1000c1s7b3n0 falls back to Default.
    let script = cli.ok(&["boot", "script", "x1000c1s7b3n0"]).await;
    assert!(script.contains(" -- single "), "{script}");

    // No targets: refused before anything is sent.
    let before = h.generation();
    let err = cli
        .fails(&["boot", "params", "set", "--kernel", &kernel])
        .await;
    golden("boot-params-set-no-targets.stderr", &err);
    let err = cli.fails(&["boot", "params", "delete"]).await;
    assert!(err.contains("name targets"), "{err}");
    let err = cli
        .fails(&[
            "boot",
            "params",
            "set",
            "-x",
            "x1000c1s7b0",
            "--kernel",
            &kernel,
        ])
        .await;
    assert!(err.contains("400") && err.contains("not a node"), "{err}");
    assert_eq!(h.generation(), before, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhcp_leases_match_golden_output() {
    use openchami::inventory::model::Lease;
    let h = Harness::start().await;
    let cli = Cli::new(&h);
    cli.ok(&["import", "-f", "examples/cluster.yaml"]).await;
    let at = |s: i64| chrono::DateTime::from_timestamp(s, 0);
    h.app()
        .state
        .store
        .write(move |t| {
            t.put_lease(Lease {
                ip: "172.16.0.1".parse().expect("ip"),
                mac: "de:ad:be:ee:ee:f1".into(),
                expires: at(4_102_444_800),
            });
            t.put_lease(Lease {
                ip: "172.16.0.200".parse().expect("ip"),
                mac: "02:00:00:00:00:99".into(),
                expires: at(4_102_444_800),
            });
            t.put_lease(Lease {
                ip: "172.16.0.201".parse().expect("ip"),
                mac: "02:00:00:00:00:98".into(),
                expires: at(1_000),
            });
            Ok(())
        })
        .await
        .expect("write leases");
    golden("dhcp-leases.txt", &cli.ok(&["dhcp", "leases"]).await);
    golden(
        "dhcp-leases-pool.txt",
        &cli.ok(&["dhcp", "leases", "--kind", "pool"]).await,
    );
    golden(
        "dhcp-leases-all.json",
        &cli.ok(&["-o", "json", "dhcp", "leases", "--all"]).await,
    );
    let no_token = cli.run(&["--token", "x", "dhcp", "leases"]).await;
    assert!(!no_token.status.success(), "a bad token is refused");
}

/// `bootconfiguration-` uids are random: masked for golden files.
fn mask_uids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("bootconfiguration-") {
        let end = i + "bootconfiguration-".len();
        out.push_str(&rest[..end]);
        let tail = &rest[end..];
        let n = tail.chars().take_while(char::is_ascii_hexdigit).count();
        out.push_str(if n == 8 { "<UID>" } else { &tail[..n] });
        rest = &tail[n..];
    }
    out.push_str(rest);
    mask_times(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_config_commands_target_groups() {
    const BASE: &str = "http://172.16.0.254:27778";
    let h = Harness::start_with(|c| c.node.advertise = BASE.into()).await;
    let cli = Cli::new(&h);
    cli.ok(&["import", "-f", "examples/cluster.yaml"]).await;
    let kernel = format!("{BASE}/artifacts/compute/vmlinuz");
    let initrd = format!("{BASE}/artifacts/compute/initrd.img");
    // One request sets the kernel for every member of group compute.
    let added = cli
        .ok(&[
            "boot",
            "config",
            "add",
            "compute",
            "--group",
            "compute",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--params",
            "console=ttyS0,115200 ip=dhcp",
            "--priority",
            "10",
            "-o",
            "json",
        ])
        .await;
    golden("boot-config-add.json", &mask_uids(&added));
    let v: Value = serde_json::from_str(&added).expect("-o json is JSON");
    assert_eq!(v["kind"], "BootConfiguration");
    assert_eq!(v["spec"]["groups"], serde_json::json!(["compute"]));
    let uid = v["metadata"]["uid"].as_str().expect("uid").to_string();
    cli.ok(&[
        "boot",
        "config",
        "add",
        "io",
        "--group",
        "io",
        "--kernel",
        "/vmlinuz-io",
    ])
    .await;
    golden(
        "boot-config-list.txt",
        &mask_uids(&cli.ok(&["boot", "config", "list"]).await),
    );
    golden(
        "boot-config-show.yaml",
        &mask_uids(
            &cli.ok(&["boot", "config", "show", "compute", "-o", "yaml"])
                .await,
        ),
    );
    // Every compute node boots it, through the legacy script too.
    let script = cli.ok(&["boot", "script", "x1000c1s7b0n0"]).await;
    assert!(script.contains(&kernel), "{script}");
    cli.ok(&[
        "boot",
        "config",
        "set",
        &uid,
        "--group",
        "compute",
        "--kernel",
        "/vmlinuz-2",
    ])
    .await;
    let script = cli.ok(&["boot", "script", "x1000c1s7b0n0"]).await;
    assert!(
        script.contains("kernel --name kernel /vmlinuz-2"),
        "{script}"
    );
    let err = cli.fails(&["boot", "config", "show", "nothing"]).await;
    golden("boot-config-show-missing.stderr", &err);
    golden(
        "boot-config-delete.txt",
        &mask_uids(&cli.ok(&["boot", "config", "delete", "compute", "io"]).await),
    );
    assert_eq!(
        cli.ok(&["boot", "config", "list", "-o", "json"]).await,
        "[]\n"
    );
}
