//! A throwaway PostgreSQL cluster for the tests that need one.
//!
//! `initdb` in a temporary directory, listening only on a Unix socket in
//! that directory, trust authentication. A shell supervises it: it holds
//! the read end of a pipe whose write end only this process holds, so when
//! the test process ends, however it ends, the shell sees end-of-file,
//! stops the server and removes the directory.
//!
//! One cluster is shared by a test process ([`shared`]); each test takes a
//! fresh database in it ([`Cluster::database`]). A test that restarts the
//! server starts its own ([`Cluster::start`]).
//!
//! Also compiled into the library's unit tests (by `#[path]`), so it uses
//! only the standard library and the crate's own dependencies.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Cluster {
    /// Holds the socket, the data directory and the log.
    pub dir: PathBuf,
    bin: PathBuf,
    /// Who runs the server (initdb refuses root).
    user: Option<String>,
    supervisor: Option<(Child, ChildStdin)>,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The cluster shared by this test process, started on first use.
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(Cluster::start)
}

/// Where `initdb` and friends are: on `PATH`, or Debian's versioned directory.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Some(dir) = p.parent() {
            return dir.to_path_buf();
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL's server programs (initdb, pg_ctl) are needed: install Debian's postgresql",
    )
}

impl Cluster {
    /// Starts a cluster of its own, stopped when dropped (or when the
    /// process ends).
    pub fn start() -> Cluster {
        let bin = bin_dir();
        let root = is_root();
        let user = root.then(|| {
            if Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                "postgres".to_string()
            } else {
                "nobody".to_string()
            }
        });
        let dir = tempfile::Builder::new()
            .prefix("openchami-pg-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        if let Some(u) = &user {
            // Theirs, so that they can remove it too (/tmp is sticky).
            let uid = Command::new("id").args(["-u", u]).output().unwrap();
            let gid = Command::new("id").args(["-g", u]).output().unwrap();
            let id =
                |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).trim().parse().ok();
            std::os::unix::fs::chown(&dir, id(&uid), id(&gid)).unwrap();
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let script = r#"
            set -e
            d="$1"; bin="$2"
            "$bin/initdb" -D "$d/data" -U openchami --auth=trust -E UTF8 --no-sync >"$d/initdb.log" 2>&1
            "$bin/pg_ctl" -D "$d/data" -l "$d/log" -w -o "-k $d -c listen_addresses= -c fsync=off -c max_connections=200" start >/dev/null
            echo ready
            cat >/dev/null || true
            "$bin/pg_ctl" -D "$d/data" -m immediate -w stop >/dev/null 2>&1 || true
            rm -rf "$d"
        "#;
        let mut cmd = match &user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", "sh", "-c", script, "sh"]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", script, "sh"]);
                c
            }
        };
        let mut child = cmd
            .arg(&dir)
            .arg(&bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the PostgreSQL supervisor");
        let stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut ready = [0u8; 6];
        if out.read_exact(&mut ready).is_err() {
            let log = std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default()
                + &std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            panic!("PostgreSQL did not start:\n{log}");
        }
        Cluster {
            dir,
            bin,
            user,
            supervisor: Some((child, stdin)),
        }
    }

    /// A `postgres://` URL for the database `name` over the Unix socket.
    pub fn url(&self, name: &str) -> String {
        let host: String = self
            .dir
            .to_string_lossy()
            .bytes()
            .map(|b| match b {
                b'/' => "%2F".to_string(),
                b => (b as char).to_string(),
            })
            .collect();
        format!("postgres://openchami@{host}/{name}")
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        self.sql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Where the heads of database `name` keep their key-encryption key.
    pub fn kek(&self, name: &str) -> PathBuf {
        self.dir.join(format!("kek-{name}.key"))
    }

    /// Runs `sql` in the `postgres` database, on a thread of its own (the
    /// caller may be inside a runtime already).
    pub fn sql(&self, sql: &str) {
        let (url, sql) = (self.url("postgres"), sql.to_string());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test cluster");
                let driver = tokio::spawn(conn);
                client
                    .batch_execute(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                drop(client);
                let _ = driver.await;
            })
        })
        .join()
        .expect("the SQL ran");
    }

    /// Runs `pg_ctl` with `args` as the server's user.
    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&pg_ctl);
                c
            }
            None => Command::new(&pg_ctl),
        };
        let ok = cmd
            .arg("-D")
            .arg(&data)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(ok.success(), "pg_ctl {args:?} failed");
    }

    /// Stops the server (fast: clients are cut off) and starts it again.
    pub fn restart(&self) {
        let opts = format!(
            "-k {} -c listen_addresses= -c fsync=off -c max_connections=200",
            self.dir.display()
        );
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
        self.pg_ctl(&[
            "-l",
            &self.dir.join("log").to_string_lossy(),
            "-w",
            "-o",
            &opts,
            "start",
        ]);
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.supervisor.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// True when running as root, read from /proc (no libc call needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The key-encryption key file for the test database `url` names: in its
/// cluster's directory (removed with the cluster), one per database.
pub fn kek_for(url: &str) -> PathBuf {
    let rest = url.split_once('@').map_or(url, |(_, r)| r);
    let (host, db) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let db = db.split('?').next().unwrap_or(db);
    PathBuf::from(host.replace("%2F", "/")).join(format!("kek-{db}.key"))
}
