//! The only code that speaks SQL.
//!
//! Every record is kept as one JSON document in a table of its kind, keyed by
//! its ID: the in-memory model is the source of every decision, so SQLite only
//! has to make the model durable and give it back at start-up. Schema changes
//! ride on embedded, numbered migrations tracked with `PRAGMA user_version`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use super::store::{Change, StoreError, Table};

/// Embedded migrations; entry `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_inventory.sql"),
    include_str!("migrations/0002_boot.sql"),
    include_str!("migrations/0003_cloud_init.sql"),
    include_str!("migrations/0004_dhcp_leases.sql"),
    include_str!("migrations/0005_power.sql"),
    include_str!("migrations/0006_boot_service.sql"),
];

pub struct Db {
    conn: Connection,
}

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
        Self::init(conn)
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
        let mut db = Db { conn };
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

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Sql(e.to_string())
}
