//! The only code that speaks SQL.
//!
//! Every record is kept as one JSON document in a table of its kind, keyed by
//! its ID: the in-memory model is the source of every decision, so SQLite only
//! has to make the model durable and give it back at start-up. Schema changes
//! ride on embedded, numbered migrations tracked with `PRAGMA user_version`.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use super::backend::{Backend, Feed, LoadSink};
use super::store::{Change, StoreError, Table};

/// Embedded migrations; entry `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_inventory.sql"),
    include_str!("migrations/0002_boot.sql"),
    include_str!("migrations/0003_cloud_init.sql"),
    include_str!("migrations/0004_dhcp_leases.sql"),
    include_str!("migrations/0005_power.sql"),
    include_str!("migrations/0006_boot_service.sql"),
    include_str!("migrations/0007_metadata_v2.sql"),
    include_str!("migrations/0008_tokens.sql"),
    include_str!("migrations/0009_consoles.sql"),
    include_str!("migrations/0010_firmware.sql"),
    include_str!("migrations/0011_hardware_inventory.sql"),
    include_str!("migrations/0012_discovery_jobs.sql"),
    include_str!("migrations/0013_shared_secrets.sql"),
];

pub struct Db {
    conn: Connection,
    /// Commits since open: SQLite has one writer, so the generation only
    /// has to be local.
    generation: u64,
}

/// How long the start-up integrity check may take. `quick_check` reads
/// every page, about a second per few hundred MB; on a database too large
/// to finish in time the check is skipped with a warning rather than
/// holding start-up hostage.
pub const QUICK_CHECK_LIMIT: Duration = Duration::from_secs(30);

impl Db {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Open(path.display().to_string(), e.to_string()))?;
        let name = path.display().to_string();
        // SQLite falls back to read-only on a file it may not write (a
        // backup restored as another user); every write would then fail.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(sql)? {
            return Err(StoreError::Open(
                name,
                "the file is read-only for this process; give it to the service user (chown) or fix its mode"
                    .into(),
            ));
        }
        quick_check(&conn, QUICK_CHECK_LIMIT)
            .and_then(|()| Self::init(conn))
            .map_err(|e| damaged(&name, e))
    }

    pub fn open_in_memory() -> Result<Db, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| StoreError::Open(":memory:".into(), e.to_string()))?;
        Self::init(conn)
    }

    fn init(conn: Connection) -> Result<Db, StoreError> {
        // WAL lets readers of the file (sqlite3 on the head node, backups) run
        // beside the writer; synchronous=FULL makes an acknowledged commit
        // survive power loss, not only a process crash.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        // Reads are served from memory; SQLite's cache only helps writes and
        // the one load at start, and its 2 MiB default stays resident.
        conn.pragma_update(None, "cache_size", -512).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        let mut db = Db {
            conn,
            generation: 0,
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::Schema(format!(
                "database schema version {version} is newer than this binary knows ({known}); refusing to run an older binary on it"
            )));
        }
        if version == known {
            return Ok(());
        }
        // All pending migrations in one transaction: an interrupted upgrade
        // leaves the old schema, never a half-migrated one, and a fresh
        // database costs one commit (one fsync) instead of one per migration.
        let tx = self.conn.transaction().map_err(sql)?;
        for script in MIGRATIONS.iter().skip(version as usize) {
            tx.execute_batch(script).map_err(sql)?;
        }
        tx.pragma_update(None, "user_version", known).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(())
    }

    /// All documents of one kind, in key order.
    pub fn load(&self, table: Table) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT id, doc FROM {} ORDER BY id", table.name()))
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// Applies a batch of changes in one transaction: all of them or none.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql)?;
        for c in changes {
            match &c.doc {
                Some(doc) => {
                    let mut stmt = tx
                        .prepare_cached(&format!(
                            "INSERT INTO {} (id, doc) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                            c.table.name()
                        ))
                        .map_err(sql)?;
                    stmt.execute(params![c.key, doc]).map_err(sql)?;
                }
                None => {
                    let mut stmt = tx
                        .prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", c.table.name()))
                        .map_err(sql)?;
                    stmt.execute(params![c.key]).map_err(sql)?;
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// Caps the database at `pages` pages, as a full disk would: tests use
    /// it to reach SQLITE_FULL without filling a file system.
    pub fn limit_pages(&self, pages: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "max_page_count", pages)
            .map_err(sql)
    }

    /// A cheap round trip through SQLite, for readiness checks.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(sql)
    }
}

impl Backend for Db {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn load(&mut self, sink: LoadSink<'_>) -> Result<u64, StoreError> {
        for table in Table::ALL {
            sink(table, Db::load(self, table)?)?;
        }
        Ok(self.generation)
    }

    fn begin(&mut self, _generation: u64) -> Result<Feed, StoreError> {
        Ok(Feed::UpToDate)
    }

    fn commit(&mut self, changes: &[Change]) -> Result<u64, StoreError> {
        self.apply(changes)?;
        self.generation += 1;
        Ok(self.generation)
    }

    fn abort(&mut self) {}

    fn changes_since(&mut self, _generation: u64) -> Result<Feed, StoreError> {
        Ok(Feed::UpToDate)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        Db::ping(self)
    }
}

fn sql(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Damaged(String::new(), e.to_string())
        }
        _ => StoreError::Sql(e.to_string()),
    }
}

/// Names the file in a damage report made before the path was known.
fn damaged(path: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Damaged(_, why) => StoreError::Damaged(path.to_string(), why),
        other => other,
    }
}

/// `PRAGMA quick_check`, interrupted after `limit` (then only a warning:
/// a slow check proves nothing either way).
fn quick_check(conn: &Connection, limit: Duration) -> Result<(), StoreError> {
    let deadline = Instant::now() + limit;
    conn.progress_handler(10_000, Some(move || Instant::now() > deadline));
    let rows = (|| {
        let mut stmt = conn.prepare("PRAGMA quick_check(8)")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()
    })();
    conn.progress_handler(0, None::<fn() -> bool>);
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
        Ok(rows) => Err(StoreError::Damaged(String::new(), rows.join("; "))),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {
            tracing::warn!(
                limit_secs = limit.as_secs(),
                "database integrity check did not finish in time; skipped"
            );
            Ok(())
        }
        Err(e) => Err(sql(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::store::Table;

    fn row(i: usize) -> Change {
        Change {
            table: Table::Components,
            key: format!("x{i}"),
            doc: Some("x".repeat(2000)),
        }
    }

    #[test]
    fn a_full_disk_is_its_own_error() {
        let mut db = Db::open_in_memory().unwrap();
        let pages: u32 = db
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        db.limit_pages(pages + 4).unwrap();
        let err = (0..100)
            .find_map(|i| db.apply(&[row(i)]).err())
            .expect("the cap is reached");
        assert!(matches!(err, StoreError::Full(_)), "{err:?}");
        // What failed changed nothing, and the database still answers.
        db.ping().unwrap();
    }

    /// A real database file with its pages overwritten: refused at open,
    /// naming the file. Table-driven over where the damage lands.
    #[test]
    fn damaged_files_are_refused_at_open() {
        use std::io::{Seek, SeekFrom, Write};
        // (what, offset of the overwrite in page units, pages overwritten)
        let cases: &[(&str, u64, u64)] = &[("header", 0, 1), ("table pages", 2, 6)];
        for (what, from, count) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            {
                let mut db = Db::open(&path).unwrap();
                for i in 0..200 {
                    db.apply(&[row(i)]).unwrap();
                }
                db.conn
                    .pragma_update(None, "wal_checkpoint", "TRUNCATE")
                    .unwrap();
            }
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.seek(SeekFrom::Start(from * 4096)).unwrap();
            f.write_all(&vec![0x5a; (count * 4096) as usize]).unwrap();
            f.sync_all().unwrap();
            drop(f);
            match Db::open(&path) {
                Err(StoreError::Damaged(p, why)) => {
                    assert_eq!(p, path.display().to_string(), "{what}: {why}");
                    let msg = StoreError::Damaged(p, why).to_string();
                    assert!(msg.contains("backup"), "{what}: {msg}");
                }
                Err(e) => panic!("{what}: not reported as damage: {e:?}"),
                Ok(_) => panic!("{what}: a damaged database was opened"),
            }
        }
    }
}
