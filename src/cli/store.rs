//! `openchami store`: the inventory store's status, and moving it between
//! backends.
//!
//! `status` asks the running appliance (`GET /store/v1/status`). `migrate` works on the state directory of a stopped appliance, like `ca`
//! and `token issue`, not through the API: it reads the SQLite file
//! directly, and the state-directory lock makes sure no appliance is
//! writing it meanwhile (a copy taken under a running server could miss
//! writes acknowledged after it was read).

use anyhow::{Context, bail};
use clap::Subcommand;

use super::client::Client;
use super::output::{Format, render};
use crate::ca::bundle::Purpose;
use crate::config::Config;
use crate::inventory::backend::{Backend, Feed, copy_all};
use crate::inventory::model::SharedSecret;
use crate::inventory::postgres::Pg;
use crate::inventory::sqlite::Db;
use crate::inventory::store::{Change, Table};

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Backend, generation served, lag behind the shared database, and
    /// which head holds each piece of once-only work
    Status,
    /// Copy the SQLite inventory of a stopped appliance into an empty
    /// PostgreSQL database and check the row counts
    Migrate {
        /// postgres://user:password@host/db (libpq's URL form)
        #[arg(long)]
        to: String,
    },
}

const COLUMNS: &[(&str, &str)] = &[
    ("BACKEND", "/backend"),
    ("GENERATION", "/generation"),
    ("LATEST", "/latest_generation"),
    ("LAG", "/lag"),
    ("HEAD", "/head"),
];

const LEASE_COLUMNS: &[(&str, &str)] = &[
    ("LEASE", "/name"),
    ("HOLDER", "/holder"),
    ("EXPIRES IN", "/expires_in"),
];

/// `store status`, through the API.
pub async fn status(client: &Client, format: Format) -> anyhow::Result<String> {
    let v = client.get("/store/v1/status").await?;
    let mut out = render(format, COLUMNS, std::slice::from_ref(&v), &v);
    if format == Format::Table {
        let leases: Vec<serde_json::Value> = v["leases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                let ms = l["expires_in_ms"].as_i64().unwrap_or(0);
                let left = if ms < 0 {
                    "expired".to_string()
                } else {
                    format!("{:.1}s", ms as f64 / 1000.0)
                };
                serde_json::json!({"name": l["name"], "holder": l["holder"], "expires_in": left})
            })
            .collect();
        if !leases.is_empty() {
            out.push_str(&super::output::table(LEASE_COLUMNS, &leases));
        }
    }
    Ok(out)
}

/// `store migrate`, on the state directory.
pub fn run(config: &Config, cmd: StoreCmd) -> anyhow::Result<()> {
    match cmd {
        StoreCmd::Status => bail!("store status is a client command"),
        StoreCmd::Migrate { to } => {
            if !to.starts_with("postgres://") && !to.starts_with("postgresql://") {
                bail!("--to must be a postgres:// URL");
            }
            let dir = &config.state_dir;
            let _lock = crate::statedir::lock(dir)
                .context("stop the appliance first: the state directory is in use")?;
            let path = dir.join(crate::app::DB_FILE);
            if !path.exists() {
                bail!("no inventory at {}", path.display());
            }
            let mut from = Db::open(&path)?;
            let ca = (!config.store.ca_file.is_empty())
                .then(|| std::path::Path::new(&config.store.ca_file));
            let mut target = Pg::connect(&to, ca)?;
            let counts = copy_all(&mut from, &mut target)?;
            for (table, n) in &counts {
                if *n > 0 {
                    println!("{:<24} {n}", table.name());
                }
            }
            println!(
                "copied {} rows from {}",
                counts.iter().map(|(_, n)| n).sum::<usize>(),
                path.display()
            );
            let kek = upload_keys(config, &mut target)?;
            println!(
                "uploaded the root CA, token keys and sealing key, sealed with {}: copy that file \
                 (mode 0600) to every head, then set [store] url to use the database",
                kek.display()
            );
            Ok(())
        }
    }
}

/// Seals this state directory's keys with the KEK (created unless it
/// exists) and commits them to `target`, so every head started on the
/// database shares them. Returns where the KEK is.
fn upload_keys(config: &Config, target: &mut dyn Backend) -> anyhow::Result<std::path::PathBuf> {
    let dir = &config.state_dir;
    let kek_path = config.store.kek_path(dir);
    let kek = crate::shared_keys::load_kek(&kek_path, true)?;
    let now = chrono::Utc::now();
    let rows = crate::shared_keys::seal_own(dir, &kek, &Purpose::ALL)?
        .into_iter()
        .map(|(purpose, sealed)| {
            let doc = serde_json::to_string(&SharedSecret {
                purpose: purpose.name().to_string(),
                sealed,
                updated_at: now,
            })?;
            Ok(Change {
                table: Table::SharedSecrets,
                key: purpose.name().to_string(),
                doc: Some(doc),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let latest = target.latest()?.unwrap_or(0);
    match target.begin(latest)? {
        Feed::UpToDate => {
            target.commit(&rows)?;
        }
        _ => {
            target.abort();
            bail!("another writer committed to the target while copying");
        }
    }
    Ok(kek_path)
}
