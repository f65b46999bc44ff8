//! README.md's five-minute tour, run as written.
//!
//! The shell blocks of the tour section are read from README.md at test time
//! (so the two cannot drift), run in order by one bash against a freshly
//! started appliance, and every command must succeed. The only change made
//! to the text is the binary's path. Everything runs in a network namespace
//! of this test with nothing but loopback: the README's fixed ports are free
//! there whatever else runs on the machine, and a command that tried to
//! reach an address outside loopback (an imported cluster file's BMCs) would
//! fail instead of probing a real network. The namespace and every process
//! are removed however the test ends.
//!
//! Needs root, `ip` (iproute2), `bash` and `curl`; without them the test
//! fails when `CI` is set and is skipped with a message otherwise.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_openchami");
/// The whole tour, appliance start-up included, on a busy machine.
const BOUND: Duration = Duration::from_secs(300);

fn prerequisites() -> bool {
    common::host::prerequisites(
        "the tour test needs",
        &[("ip", "iproute2"), ("bash", "bash"), ("curl", "curl")],
    )
}

/// The `sh` blocks of the section headed `## Five-minute tour`, in order
/// (a `## ` line inside a block, such as a Jinja header, is the block's).
fn tour_blocks(readme: &str) -> Vec<String> {
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim_end() != "## Five-minute tour");
    assert!(
        lines.next().is_some(),
        "README.md has a `## Five-minute tour` section"
    );
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in lines {
        match (&mut current, line.trim_end()) {
            (None, l) if l.starts_with("## ") => break,
            (None, "```sh") => current = Some(String::new()),
            (None, _) => {}
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
        }
    }
    blocks
}

/// Removes the namespace and kills every process of the test, however it ends.
struct Cleanup {
    netns: String,
    appliance: Option<Child>,
    tour_group: Option<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pgid) = self.tour_group.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut c) = self.appliance.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stderr(Stdio::null())
            .status();
    }
}

fn in_netns(netns: &str, dir: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("OPENCHAMI_") || k.ends_with("_ACCESS_TOKEN") || k == "NOTIFY_SOCKET" {
            c.env_remove(&k);
        }
    }
    c
}

#[test]
fn the_readme_tour_runs_as_written() {
    if !prerequisites() {
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(manifest.join("README.md")).expect("read README.md");
    let blocks = tour_blocks(&readme);
    assert!(
        blocks.len() >= 3,
        "the tour has its shell blocks: {blocks:?}"
    );
    let tour: String = blocks.concat().replace("./target/release/openchami", BIN);

    let dir = tempfile::tempdir().expect("temp dir");
    // The tour runs from a checkout: its relative paths name the repository.
    std::os::unix::fs::symlink(manifest.join("examples"), dir.path().join("examples"))
        .expect("link examples/");
    let netns = format!("oc-tour-{}", std::process::id());
    let mut cleanup = Cleanup {
        netns: netns.clone(),
        appliance: None,
        tour_group: None,
    };
    for args in [
        vec!["netns", "add", netns.as_str()],
        vec!["-n", netns.as_str(), "link", "set", "lo", "up"],
    ] {
        let ok = Command::new("ip").args(&args).status().expect("run ip");
        assert!(ok.success(), "ip {args:?}");
    }

    // "With the appliance running as above": the README's own command line.
    let log = std::fs::File::create(dir.path().join("appliance.log")).expect("log file");
    let appliance = in_netns(&netns, dir.path())
        .args([BIN, "serve", "--state-dir", "./openchami-state"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start the appliance");
    cleanup.appliance = Some(appliance);

    let script = format!(
        "set -e\nshopt -s expand_aliases\n\
         trap 'echo \"tour: exit $? from: $BASH_COMMAND\" >&2' ERR\n\
         for i in $(seq 600); do\n\
           curl -skf https://localhost:8443/hsm/v2/service/ready >/dev/null && break\n\
           sleep 0.1\n\
         done\n\
         {tour}\necho TOUR-DONE\n"
    );
    std::fs::write(dir.path().join("tour.sh"), &script).expect("write tour.sh");
    let mut cmd = in_netns(&netns, dir.path());
    cmd.args(["bash", "tour.sh"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("run bash");
    cleanup.tour_group = Some(child.id());

    // Output is read on threads so a full pipe never stalls the tour.
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for bash") {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    // The background simulator keeps the pipes open: end the group first.
    drop(cleanup.tour_group.take().map(|pgid| {
        Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status()
    }));
    let _ = child.wait();
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let log = std::fs::read_to_string(dir.path().join("appliance.log")).unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    // Shown with --nocapture, and by the harness when the test fails.
    println!("--- tour stdout\n{out}\n--- tour stderr\n{err}");
    let status = status.unwrap_or_else(|| {
        panic!("the tour took longer than {BOUND:?}\n--- stdout\n{out}\n--- stderr\n{err}\n--- appliance\n{tail}")
    });
    assert!(
        status.success() && out.contains("TOUR-DONE"),
        "a tour command failed ({status})\n--- stdout\n{out}\n--- stderr\n{err}\n--- appliance\n{tail}"
    );
}
