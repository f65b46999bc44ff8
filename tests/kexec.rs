//! The node-side kexec helper (`examples/kexec/bss-kexec-load.sh`) against a
//! whole appliance: it reads `GET /boot/v1/bootparams` from the node
//! listener as the node it runs on (the test's own address, 127.0.0.1, is
//! given to a node), downloads kernel and initrd from `/artifacts/`, and
//! loads exactly the command line of contract §4.6.
//!
//! The helper needs `curl` and `jq`; without them this test fails (install
//! the Debian packages `curl jq`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::Harness;
use serde_json::json;

const HELPER: &str = "examples/kexec/bss-kexec-load.sh";
const PARAMS: &str = "console=ttyS0,115200 ip=dhcp root=live:http://h/initrd-images/a.img msg=it's";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Fails, naming the Debian packages, when a tool the helper needs is missing.
fn require_tools() {
    let missing: Vec<&str> = ["curl", "jq"]
        .into_iter()
        .filter(|tool| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the kexec helper test needs {missing:?}: install the Debian packages with `apt-get install curl jq`"
    );
}

/// Runs the helper with `args` and `env`, without proxies; `path_first`
/// is put in front of `PATH` (for a stand-in `kexec`).
async fn helper(args: &[&str], env: &[(&str, &str)], path_first: Option<&Path>) -> Output {
    let mut c = tokio::process::Command::new("sh");
    c.arg(manifest_dir().join(HELPER)).args(args);
    for var in [
        "BSS_URL",
        "KEXEC_DIR",
        "CURL_OPTS",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        c.env_remove(var);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(dir) = path_first {
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", dir.display()));
    }
    c.kill_on_drop(true);
    tokio::time::timeout(common::TIMEOUT, c.output())
        .await
        .expect("the helper finishes in time")
        .expect("run the helper")
}

#[track_caller]
fn succeeded(o: &Output) -> String {
    assert!(
        o.status.success(),
        "helper failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8")
}

/// The helper must fail with one line on stderr containing `want`.
#[track_caller]
fn failed(o: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "helper succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "one line on stderr:\n{stderr}");
    assert!(
        stderr.starts_with("bss-kexec-load.sh: ") && stderr.contains(want),
        "stderr {stderr:?} should mention {want:?}"
    );
}

/// `s` quoted for the shell the way the helper prints it.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

struct Setup {
    h: Harness,
    _root: tempfile::TempDir,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    /// The node listener's base URL, as the node uses it.
    base: String,
}

async fn setup() -> Setup {
    require_tools();
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("artifacts");
    std::fs::create_dir_all(dir.join("images")).expect("write the artifacts");
    let kernel: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let initrd: Vec<u8> = (0..10000u32).map(|i| (i % 7) as u8 + b'0').collect();
    std::fs::write(dir.join("vmlinuz"), &kernel).expect("write the artifacts");
    std::fs::write(dir.join("images/initrd.img"), &initrd).expect("write the artifacts");
    let h = Harness::start_with(move |c| c.boot.artifacts_dir = dir).await;
    let base = format!("http://{}", h.node_addr());
    h.api
        .post(
            "/hsm/v2/State/Components",
            &json!({"Components": [{"ID": "x1000c0s0b0n0", "State": "Ready", "Role": "Compute", "NID": 1}]}),
        )
        .await
        .status(204);
    // The node's address is the test's own, so the helper's requests are it.
    h.api
        .post(
            "/hsm/v2/Inventory/EthernetInterfaces",
            &json!({"MACAddress": "52:54:00:00:00:01", "ComponentID": "x1000c0s0b0n0",
                    "IPAddresses": [{"IPAddress": "127.0.0.1"}]}),
        )
        .await
        .status(201);
    h.api
        .put(
            "/boot/v1/bootparameters",
            &json!({"hosts": ["x1000c0s0b0n0"],
                    "kernel": format!("{base}/artifacts/vmlinuz"),
                    "initrd": format!("{base}/artifacts/images/initrd.img"),
                    "params": PARAMS}),
        )
        .await
        .ok();
    Setup {
        h,
        _root: root,
        kernel,
        initrd,
        base,
    }
}

impl Setup {
    /// The command line of §4.6: stored params, then xname, nid, BOOTIF and
    /// the datasource; no `initrd=` token.
    fn cmdline(&self) -> String {
        format!(
            "{PARAMS} xname=x1000c0s0b0n0 nid=1 BOOTIF=01-52-54-00-00-00-01 ds=nocloud-net;s={}/cloud-init/",
            self.base
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_kexec_command_of_the_nodes_parameters() {
    let s = setup().await;
    // What the appliance says, for reference: the helper must use it verbatim.
    let v = s.h.node.get_json("/boot/v1/bootparams").await;
    assert_eq!(v[0]["params"], s.cmdline());
    assert!(!s.cmdline().contains("initrd="));

    let dl = s.h.state_dir().join("kexec-dl");
    let dl_s = dl.to_str().unwrap();
    let out = helper(
        &["--dry-run"],
        &[("BSS_URL", &s.base), ("KEXEC_DIR", dl_s)],
        None,
    )
    .await;
    let printed = succeeded(&out);
    assert_eq!(
        printed,
        format!(
            "kexec --load {} --initrd={} --command-line={}\n",
            quoted(&format!("{dl_s}/kernel")),
            quoted(&format!("{dl_s}/initrd")),
            quoted(&s.cmdline())
        )
    );
    assert!(!printed.contains("reuse-cmdline"));
    assert_eq!(std::fs::read(dl.join("kernel")).unwrap(), s.kernel);
    assert_eq!(std::fs::read(dl.join("initrd")).unwrap(), s.initrd);
    // The printed command is valid shell: evaluated, it gives the same words.
    let words = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "kexec() {{ for a; do printf '%s\\n' \"$a\"; done; }}; {}",
            printed.trim_end()
        ))
        .output()
        .await
        .expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&words.stdout),
        format!(
            "--load\n{dl_s}/kernel\n--initrd={dl_s}/initrd\n--command-line={}\n",
            s.cmdline()
        )
    );

    // The head as the argument instead of BSS_URL; a temporary directory
    // that is gone afterwards.
    let out = helper(&["--dry-run", &s.base], &[], None).await;
    let printed = succeeded(&out);
    let kernel_path = printed
        .strip_prefix("kexec --load '")
        .and_then(|r| r.split('\'').next())
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(kernel_path.ends_with("/kernel"), "{printed}");
    assert!(
        !Path::new(kernel_path).exists(),
        "the temporary download is removed"
    );
    assert!(printed.ends_with(&format!("--command-line={}\n", quoted(&s.cmdline()))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_runs_kexec_with_exact_arguments() {
    let s = setup().await;
    // A stand-in kexec that records its arguments, one per line.
    let bin: PathBuf = s.h.state_dir().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = s.h.state_dir().join("kexec.log");
    let fake = bin.join("kexec");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a; do printf '%s\\n' \"$a\"; done > {}\n",
            log.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dl = s.h.state_dir().join("dl");
    let dl_s = dl.to_str().unwrap();
    let out = helper(
        &[],
        &[("BSS_URL", &format!("{}/", s.base)), ("KEXEC_DIR", dl_s)],
        Some(&bin),
    )
    .await;
    let stdout = succeeded(&out);
    assert!(stdout.contains("systemctl kexec"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "--load\n{dl_s}/kernel\n--initrd={dl_s}/initrd\n--command-line={}\n",
            s.cmdline()
        )
    );

    // Without an initrd, no --initrd at all.
    s.h.api
        .put(
            "/boot/v1/bootparameters",
            &json!({"hosts": ["x1000c0s0b0n0"],
                    "kernel": format!("{}/artifacts/vmlinuz", s.base), "params": "quiet"}),
        )
        .await
        .ok();
    let out = helper(
        &[],
        &[("BSS_URL", &s.base), ("KEXEC_DIR", dl_s)],
        Some(&bin),
    )
    .await;
    succeeded(&out);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "--load\n{dl_s}/kernel\n--command-line=quiet xname=x1000c0s0b0n0 nid=1 BOOTIF=01-52-54-00-00-00-01 ds=nocloud-net;s={}/cloud-init/\n",
            s.base
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_fails_clearly() {
    let s = setup().await;
    // No head node: no default host is guessed.
    failed(&helper(&["--dry-run"], &[], None).await, "BSS_URL");
    failed(
        &helper(&["--dry-run"], &[("BSS_URL", "ftp://head")], None).await,
        "http://",
    );
    failed(&helper(&["--bogus"], &[], None).await, "unknown option");
    // Nothing listening.
    failed(
        &helper(&["--dry-run"], &[("BSS_URL", "http://127.0.0.1:9")], None).await,
        "/boot/v1/bootparams",
    );
    // Without --dry-run and without kexec on PATH.
    let empty = s.h.state_dir().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let mut no_kexec = tokio::process::Command::new("sh");
    no_kexec
        .arg(manifest_dir().join(HELPER))
        .env("BSS_URL", &s.base)
        .env("PATH", format!("{}:/usr/bin:/bin", empty.display()));
    if std::process::Command::new("sh")
        .arg("-c")
        .arg("PATH=/usr/bin:/bin command -v kexec")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let o = no_kexec.output().await.expect("run");
        failed(&o, "kexec-tools");
    }
    // A kernel that cannot be downloaded.
    s.h.api
        .put(
            "/boot/v1/bootparameters",
            &json!({"hosts": ["x1000c0s0b0n0"],
                    "kernel": format!("{}/artifacts/missing", s.base), "params": "quiet"}),
        )
        .await
        .ok();
    failed(
        &helper(&["--dry-run"], &[("BSS_URL", &s.base)], None).await,
        "cannot download the kernel",
    );
    // A node without boot parameters: the appliance answers 404.
    s.h.api
        .call(
            reqwest::Method::DELETE,
            "/boot/v1/bootparameters",
            Some(&json!({"hosts": ["x1000c0s0b0n0"]})),
        )
        .await
        .ok();
    failed(
        &helper(&["--dry-run"], &[("BSS_URL", &s.base)], None).await,
        "cannot get",
    );
}
