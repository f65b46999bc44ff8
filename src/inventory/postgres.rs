//! The shared store on PostgreSQL, for several head nodes on one database.
//!
//! Each head keeps the whole model in memory, as with SQLite; the database
//! holds the same documents by key, one generation row and a log of what
//! each generation changed. A commit locks the generation row, so commits
//! from every head happen one at a time; under that lock the head first
//! applies what the others committed since its own generation and only then
//! runs its writes, so each rule is checked against the latest state. Heads
//! that are not writing are woken by `LISTEN/NOTIFY` and read the log from
//! their generation on; a timer does the same in case a notification was
//! lost (they are not delivered while a listener reconnects).
//!
//! The writer thread is synchronous; this backend owns a small runtime of
//! its own for the driver, the pool and the listener.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, NoTls, Socket};

use super::backend::{Backend, Feed, LoadSink, Wake, decode_rows, encode_rows, last_per_row};
use super::leases::{LeaseDb, LeaseFuture, LeaseRow};
use super::store::{Change, StoreError, Table};

/// Embedded migrations; entry `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_store.sql"),
    include_str!("migrations/postgres/0002_firmware.sql"),
    include_str!("migrations/postgres/0003_hardware_inventory.sql"),
    include_str!("migrations/postgres/0004_work_leases.sql"),
    include_str!("migrations/postgres/0005_shared_secrets.sql"),
];

/// The notification channel commits announce their generation on.
const CHANNEL: &str = "openchami_store";
/// Change-log entries kept; a follower further behind reloads everything.
const KEEP_CHANGES: i64 = 10_000;
/// Key of the advisory lock that lets one head at a time migrate.
const SCHEMA_LOCK: i64 = 0x6f63_6861_6d69;
/// How often a follower looks for changes without being woken.
const POLL: Duration = Duration::from_secs(1);
/// Connections a head holds at most: the writer, a follower read, a ping.
const POOL_SIZE: usize = 4;
/// Connections for work leases, apart from the writer's (see leases.rs).
const LEASE_POOL_SIZE: usize = 2;

#[derive(Clone)]
enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

pub struct Pg {
    rt: tokio::runtime::Runtime,
    pool: Pool,
    config: tokio_postgres::Config,
    tls: Tls,
    /// The connection holding the generation lock between `begin` and
    /// `commit`, and the generation it read.
    open: Option<(Object, i64)>,
    /// The database named without its password, for messages.
    name: String,
}

impl Pg {
    /// Connects to `url`, bringing the schema up to date. `ca_file`, if
    /// given, holds the certificates trusted for a TLS connection (else the
    /// system's); Unix sockets and `sslmode=disable` go without TLS.
    pub fn connect(url: &str, ca_file: Option<&Path>) -> Result<Pg, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Open("the postgres URL".into(), format!("{e}")))?;
        let name = describe(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let tls = tls_for(&config, ca_file).map_err(|e| StoreError::Open(name.clone(), e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open(name.clone(), e.to_string()))?;
        let pool = make_pool(&config, &tls, POOL_SIZE, &name)?;
        let pg = Pg {
            rt,
            pool,
            config,
            tls,
            open: None,
            name,
        };
        pg.migrate()
            .map_err(|e| StoreError::Open(pg.name.clone(), e.to_string()))?;
        Ok(pg)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Sql(format!("{}: {e}", self.name)))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.rt.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            // Heads starting together: one migrates, the others wait and
            // then find nothing to do.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS store_schema (version INT NOT NULL)")
                .await
                .map_err(pg)?;
            let version: i32 = match tx
                .query_opt("SELECT version FROM store_schema", &[])
                .await
                .map_err(pg)?
            {
                Some(r) => r.get(0),
                None => {
                    tx.execute("INSERT INTO store_schema VALUES (0)", &[])
                        .await
                        .map_err(pg)?;
                    0
                }
            };
            let known = MIGRATIONS.len() as i32;
            if version > known {
                return Err(StoreError::Schema(format!(
                    "database schema version {version} is newer than this binary knows ({known}); refusing to run an older binary on it"
                )));
            }
            for script in MIGRATIONS.iter().skip(version as usize) {
                tx.batch_execute(script).await.map_err(pg)?;
            }
            tx.execute("UPDATE store_schema SET version = $1", &[&known])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
    }

    async fn feed_after(client: &Object, generation: u64, latest: i64) -> Result<Feed, StoreError> {
        let since = generation as i64;
        if latest == since {
            return Ok(Feed::UpToDate);
        }
        if latest < since {
            return Ok(Feed::Reload);
        }
        let entries = client
            .query(
                "SELECT generation, rows FROM store_changes WHERE generation > $1 AND generation <= $2 ORDER BY generation",
                &[&since, &latest],
            )
            .await
            .map_err(pg)?;
        // A gap means the log was pruned past us.
        if entries.len() as i64 != latest - since {
            return Ok(Feed::Reload);
        }
        let mut rows = Vec::new();
        for e in entries {
            let g: i64 = e.get(0);
            rows.extend(decode_rows(g as u64, e.get(1))?);
        }
        Ok(Feed::Changes {
            generation: latest as u64,
            rows,
        })
    }
}

impl Backend for Pg {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn load(&mut self, sink: LoadSink<'_>) -> Result<u64, StoreError> {
        self.rt.block_on(async {
            let mut client = self.client().await?;
            // One snapshot of every table and the generation it is at.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let generation: i64 = tx
                .query_one("SELECT generation FROM store_generation", &[])
                .await
                .map_err(pg)?
                .get(0);
            for table in Table::ALL {
                let rows = tx
                    .query(
                        &format!("SELECT id, doc FROM {} ORDER BY id", table.name()),
                        &[],
                    )
                    .await
                    .map_err(pg)?;
                sink(
                    table,
                    rows.into_iter().map(|r| (r.get(0), r.get(1))).collect(),
                )?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(generation as u64)
        })
    }

    fn begin(&mut self, generation: u64) -> Result<Feed, StoreError> {
        self.abort();
        let (client, latest, feed) = self.rt.block_on(async {
            let client = self.client().await?;
            let locked = async {
                client.batch_execute("BEGIN").await.map_err(pg)?;
                let latest: i64 = client
                    .query_one("SELECT generation FROM store_generation FOR UPDATE", &[])
                    .await
                    .map_err(pg)?
                    .get(0);
                let feed = Self::feed_after(&client, generation, latest).await?;
                Ok::<_, StoreError>((latest, feed))
            }
            .await;
            match locked {
                Ok((latest, feed)) => Ok((client, latest, feed)),
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    Err(e)
                }
            }
        })?;
        self.open = Some((client, latest));
        Ok(feed)
    }

    fn commit(&mut self, changes: &[Change]) -> Result<u64, StoreError> {
        let Some((client, latest)) = self.open.take() else {
            return Err(StoreError::Sql("commit without a begin".into()));
        };
        let next = latest + 1;
        let rows: Vec<Change> = last_per_row(changes).into_iter().cloned().collect();
        self.rt.block_on(async {
            let written = async {
                for table in Table::ALL {
                    let (mut keys, mut docs, mut gone) = (Vec::new(), Vec::new(), Vec::new());
                    for c in rows.iter().filter(|c| c.table == table) {
                        match &c.doc {
                            Some(d) => {
                                keys.push(c.key.as_str());
                                docs.push(d.as_str());
                            }
                            None => gone.push(c.key.as_str()),
                        }
                    }
                    if !keys.is_empty() {
                        client
                            .execute(
                                &format!(
                                    "INSERT INTO {} (id, doc) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                                    table.name()
                                ),
                                &[&keys, &docs],
                            )
                            .await
                            .map_err(pg)?;
                    }
                    if !gone.is_empty() {
                        client
                            .execute(
                                &format!("DELETE FROM {} WHERE id = ANY($1)", table.name()),
                                &[&gone],
                            )
                            .await
                            .map_err(pg)?;
                    }
                }
                client
                    .execute(
                        "INSERT INTO store_changes (generation, rows) VALUES ($1, $2)",
                        &[&next, &encode_rows(&rows)],
                    )
                    .await
                    .map_err(pg)?;
                client
                    .execute("UPDATE store_generation SET generation = $1", &[&next])
                    .await
                    .map_err(pg)?;
                if next % 256 == 0 {
                    client
                        .execute(
                            "DELETE FROM store_changes WHERE generation <= $1",
                            &[&(next - KEEP_CHANGES)],
                        )
                        .await
                        .map_err(pg)?;
                }
                // Delivered when (and only if) the commit succeeds.
                client
                    .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &next.to_string()])
                    .await
                    .map_err(pg)?;
                client.batch_execute("COMMIT").await.map_err(pg)
            }
            .await;
            if written.is_err() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            written
        })?;
        Ok(next as u64)
    }

    fn abort(&mut self) {
        if let Some((client, _)) = self.open.take() {
            let _ = self.rt.block_on(client.batch_execute("ROLLBACK"));
        }
    }

    fn changes_since(&mut self, generation: u64) -> Result<Feed, StoreError> {
        self.rt.block_on(async {
            let client = self.client().await?;
            let latest: i64 = client
                .query_one("SELECT generation FROM store_generation", &[])
                .await
                .map_err(pg)?
                .get(0);
            Self::feed_after(&client, generation, latest).await
        })
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.rt.block_on(async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(pg)?;
            Ok(())
        })
    }

    fn latest(&mut self) -> Result<Option<u64>, StoreError> {
        self.rt.block_on(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT generation FROM store_generation", &[])
                .await
                .map_err(pg)?;
            Ok(Some(row.get::<_, i64>(0) as u64))
        })
    }

    fn leases(&self) -> Arc<dyn LeaseDb> {
        match make_pool(&self.config, &self.tls, LEASE_POOL_SIZE, &self.name) {
            Ok(pool) => Arc::new(PgLeases {
                pool,
                name: self.name.clone(),
            }),
            // Not reached (building a pool connects nothing); a head that
            // cannot lease claims nothing rather than everything.
            Err(e) => Arc::new(NoLeases(e.to_string())),
        }
    }

    fn follow(&mut self, wake: Wake) {
        let wake: Arc<dyn Fn() -> bool + Send + Sync> = Arc::from(wake);
        let (config, tls, w) = (self.config.clone(), self.tls.clone(), wake.clone());
        self.rt.spawn(async move {
            loop {
                let ended = match &tls {
                    Tls::None => listen(&config, NoTls, &w).await,
                    Tls::Rustls(t) => listen(&config, t.clone(), &w).await,
                };
                if let Err(e) = ended {
                    tracing::warn!(error = %pg(e), "lost the store's change notifications; reconnecting");
                }
                // Whatever was committed while not listening is read now.
                if !w() {
                    return;
                }
                tokio::time::sleep(POLL).await;
            }
        });
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                if !wake() {
                    return;
                }
            }
        });
    }
}

fn make_pool(
    config: &tokio_postgres::Config,
    tls: &Tls,
    size: usize,
    name: &str,
) -> Result<Pool, StoreError> {
    let mc = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Tls::None => Manager::from_config(config.clone(), NoTls, mc),
        Tls::Rustls(t) => Manager::from_config(config.clone(), t.clone(), mc),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| StoreError::Open(name.to_string(), e.to_string()))
}

/// Work leases in `work_leases`, on a pool of their own used from the
/// appliance's runtime: a renewal never queues behind the writer. Expiry is
/// the database's clock, so heads need not agree on the time; a claim is
/// one `INSERT … ON CONFLICT DO UPDATE … WHERE` (expired, or already the
/// claimant's), which PostgreSQL evaluates against the latest committed
/// row, so two heads claiming at once cannot both win.
struct PgLeases {
    pool: Pool,
    name: String,
}

impl PgLeases {
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Sql(format!("{}: {e}", self.name)))
    }
}

impl LeaseDb for PgLeases {
    fn shared(&self) -> bool {
        true
    }

    fn claim<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> LeaseFuture<'a, bool> {
        Box::pin(async move {
            let n = self
                .client()
                .await?
                .execute(
                    "INSERT INTO work_leases AS l (name, holder, expires) \
                     VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires \
                     WHERE l.expires < clock_timestamp() OR l.holder = excluded.holder",
                    &[&name, &holder, &ttl.as_secs_f64()],
                )
                .await
                .map_err(pg)?;
            Ok(n == 1)
        })
    }

    fn renew<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> LeaseFuture<'a, bool> {
        Box::pin(async move {
            let n = self
                .client()
                .await?
                .execute(
                    "UPDATE work_leases SET expires = clock_timestamp() + make_interval(secs => $3) \
                     WHERE name = $1 AND holder = $2",
                    &[&name, &holder, &ttl.as_secs_f64()],
                )
                .await
                .map_err(pg)?;
            Ok(n == 1)
        })
    }

    fn claim_many<'a>(
        &'a self,
        names: &'a [String],
        holder: &'a str,
        ttl: Duration,
    ) -> LeaseFuture<'a, Vec<String>> {
        Box::pin(async move {
            let rows = self
                .client()
                .await?
                .query(
                    "INSERT INTO work_leases AS l (name, holder, expires) \
                     SELECT n, $2, clock_timestamp() + make_interval(secs => $3) \
                     FROM unnest($1::text[]) AS n ORDER BY n \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires \
                     WHERE l.expires < clock_timestamp() OR l.holder = excluded.holder \
                     RETURNING l.name",
                    &[&names, &holder, &ttl.as_secs_f64()],
                )
                .await
                .map_err(pg)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    fn renew_many<'a>(
        &'a self,
        names: &'a [String],
        holder: &'a str,
        ttl: Duration,
    ) -> LeaseFuture<'a, Vec<String>> {
        Box::pin(async move {
            let rows = self
                .client()
                .await?
                .query(
                    "UPDATE work_leases SET expires = clock_timestamp() + make_interval(secs => $3) \
                     WHERE name = ANY($1) AND holder = $2 RETURNING name",
                    &[&names, &holder, &ttl.as_secs_f64()],
                )
                .await
                .map_err(pg)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    fn release<'a>(&'a self, name: &'a str, holder: &'a str) -> LeaseFuture<'a, ()> {
        Box::pin(async move {
            self.client()
                .await?
                .execute(
                    "DELETE FROM work_leases WHERE name = $1 AND holder = $2",
                    &[&name, &holder],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn list(&self) -> LeaseFuture<'_, Vec<LeaseRow>> {
        Box::pin(self.leases_named("", false))
    }

    fn live<'a>(&'a self, prefix: &'a str) -> LeaseFuture<'a, Vec<LeaseRow>> {
        Box::pin(self.leases_named(prefix, true))
    }
}

impl PgLeases {
    /// The leases named `prefix…` (only unexpired ones with `live`), by
    /// name.
    async fn leases_named(&self, prefix: &str, live: bool) -> Result<Vec<LeaseRow>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name, holder, \
                 (extract(epoch FROM expires - clock_timestamp()) * 1000)::BIGINT \
                 FROM work_leases \
                 WHERE starts_with(name, $1) AND (NOT $2 OR expires > clock_timestamp()) \
                 ORDER BY name",
                &[&prefix, &live],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(lease_row).collect())
    }
}

fn lease_row(r: &tokio_postgres::Row) -> LeaseRow {
    LeaseRow {
        name: r.get(0),
        holder: r.get(1),
        expires_in_ms: r.get(2),
    }
}

/// Leases that cannot be reached: nothing is ever claimed.
struct NoLeases(String);

impl LeaseDb for NoLeases {
    fn shared(&self) -> bool {
        true
    }
    fn claim<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> LeaseFuture<'a, bool> {
        Box::pin(async move { Err(StoreError::Sql(self.0.clone())) })
    }
    fn renew<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> LeaseFuture<'a, bool> {
        Box::pin(async move { Err(StoreError::Sql(self.0.clone())) })
    }
    fn release<'a>(&'a self, _: &'a str, _: &'a str) -> LeaseFuture<'a, ()> {
        Box::pin(async move { Ok(()) })
    }
    fn list(&self) -> LeaseFuture<'_, Vec<LeaseRow>> {
        Box::pin(async move { Err(StoreError::Sql(self.0.clone())) })
    }
}

/// Listens for commit notifications on one connection until it is lost
/// (or nobody listens any more), waking the writer for each.
async fn listen<T>(
    config: &tokio_postgres::Config,
    tls: T,
    wake: &Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<(), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut conn) = config.connect(tls).await?;
    let w = wake.clone();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if !w() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // What was committed before the LISTEN took effect is read now.
    wake();
    let ended = driver.await;
    drop(client);
    match ended {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    };
    StoreError::Sql(detail)
}

/// `dbname on host:port` with no credentials.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "postgres database {} on {}",
        config.get_dbname().unwrap_or("(default)"),
        if hosts.is_empty() {
            "localhost".into()
        } else {
            hosts.join(",")
        }
    )
}

/// TLS for network hosts unless `sslmode=disable`; none over Unix sockets.
fn tls_for(config: &tokio_postgres::Config, ca_file: Option<&Path>) -> Result<Tls, String> {
    let unix_only = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)));
    if unix_only || config.get_ssl_mode() == SslMode::Disable {
        return Ok(Tls::None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls_pki_types::CertificateDer<'static> =
                    cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
        tls,
    )))
}
