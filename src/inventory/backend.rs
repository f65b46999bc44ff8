//! The seam between the in-memory store and what makes it durable.
//!
//! The store decides everything in memory; a backend only has to give every
//! row back at start, commit a write's rows atomically as the next
//! generation, and tell what other writers committed since a generation.
//! SQLite has one writer, so it never has anything to tell; PostgreSQL is
//! shared by several head nodes, so its `begin` takes a cluster-wide lock
//! and returns what the other heads committed, and the store runs the write
//! against that before committing. Only backend modules contain SQL.

use super::store::{Change, StoreError, Table};

/// What other writers committed after a given generation.
#[derive(Debug)]
pub enum Feed {
    /// Nothing new.
    UpToDate,
    /// Rows in commit order, bringing the caller to `generation`.
    Changes { generation: u64, rows: Vec<Change> },
    /// The change log no longer reaches back that far (or the database
    /// went backwards): load everything again.
    Reload,
}

/// Called with each table's rows (key, document) in turn while loading.
pub type LoadSink<'a> = &'a mut dyn FnMut(Table, Vec<(String, String)>) -> Result<(), StoreError>;

/// Wakes the writer to catch up; returns false once nobody listens.
pub type Wake = Box<dyn Fn() -> bool + Send + Sync>;

/// A place that keeps the model's rows. Used from the writer thread only.
pub trait Backend: Send + 'static {
    /// Short name for status and logs: `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Hands every stored row to `sink`, table by table, from one
    /// consistent view, and returns the generation that view stands at.
    fn load(&mut self, sink: LoadSink<'_>) -> Result<u64, StoreError>;

    /// Starts a commit after `generation`: from here until `commit` or
    /// `abort` no other writer commits, and what others committed in
    /// between is returned so the write can run against it.
    fn begin(&mut self, generation: u64) -> Result<Feed, StoreError>;

    /// Writes `changes` (a row may appear more than once; the last one
    /// counts) as one atomic step and returns the new generation. On error
    /// nothing was written and the lock is released.
    fn commit(&mut self, changes: &[Change]) -> Result<u64, StoreError>;

    /// Ends a `begin` that has nothing to commit.
    fn abort(&mut self);

    /// What other writers committed after `generation`, without locking.
    fn changes_since(&mut self, generation: u64) -> Result<Feed, StoreError>;

    /// A cheap round trip, for readiness checks.
    fn ping(&mut self) -> Result<(), StoreError>;

    /// The latest generation any writer committed, where other writers
    /// exist (`None` where this writer is the only one).
    fn latest(&mut self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Arranges for `wake` to be called whenever another writer may have
    /// committed. A backend with one writer never calls it.
    fn follow(&mut self, _wake: Wake) {}

    /// Where this store's work leases are kept: in memory where this
    /// writer is the only one (it holds them all).
    fn leases(&self) -> std::sync::Arc<dyn super::leases::LeaseDb> {
        std::sync::Arc::new(super::leases::Local::default())
    }
}

/// The rows of one change-log entry, as stored: `[table, key, doc|null]`.
pub fn encode_rows(rows: &[Change]) -> String {
    let v: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|c| (c.table.name(), c.key.as_str(), c.doc.as_deref()))
        .collect();
    serde_json::to_string(&v).unwrap_or_default()
}

/// The inverse of [`encode_rows`].
pub fn decode_rows(generation: u64, text: &str) -> Result<Vec<Change>, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt("changes", generation.to_string(), why);
    let v: Vec<(String, String, Option<String>)> =
        serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    v.into_iter()
        .map(|(table, key, doc)| {
            let table = Table::from_name(&table)
                .ok_or_else(|| corrupt(format!("unknown table {table}")))?;
            Ok(Change { table, key, doc })
        })
        .collect()
}

/// The last change of each row, in the order of those last changes: one
/// statement may not write a row twice.
pub fn last_per_row(changes: &[Change]) -> Vec<&Change> {
    let mut last = std::collections::HashMap::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        last.insert((c.table, c.key.as_str()), i);
    }
    changes
        .iter()
        .enumerate()
        .filter(|(i, c)| last.get(&(c.table, c.key.as_str())) == Some(i))
        .map(|(_, c)| c)
        .collect()
}

/// Rows per table, in [`Table::ALL`] order.
pub type Counts = Vec<(Table, usize)>;

/// Rows per table and the generation of what `db` holds.
pub fn count(db: &mut dyn Backend) -> Result<(u64, Counts), StoreError> {
    let mut counts = Vec::new();
    let generation = db.load(&mut |table, rows| {
        counts.push((table, rows.len()));
        Ok(())
    })?;
    Ok((generation, counts))
}

/// Copies every row of `from` into `to`, which must be empty, as one
/// commit, then checks that `to` holds as many rows of each table.
pub fn copy_all(from: &mut dyn Backend, to: &mut dyn Backend) -> Result<Counts, StoreError> {
    let (generation, there) = count(to)?;
    if generation != 0 || there.iter().any(|(_, n)| *n > 0) {
        return Err(StoreError::Schema(format!(
            "the target {} store is not empty (generation {generation}); copy only into a new database",
            to.kind()
        )));
    }
    let mut rows = Vec::new();
    let mut counts = Vec::new();
    from.load(&mut |table, docs| {
        counts.push((table, docs.len()));
        rows.extend(docs.into_iter().map(|(key, doc)| Change {
            table,
            key,
            doc: Some(doc),
        }));
        Ok(())
    })?;
    match to.begin(0)? {
        Feed::UpToDate => {}
        _ => {
            to.abort();
            return Err(StoreError::Schema(
                "another writer committed to the target while copying".into(),
            ));
        }
    }
    if !rows.is_empty() {
        to.commit(&rows)?;
    } else {
        to.abort();
    }
    let (_, copied) = count(to)?;
    if copied != counts {
        return Err(StoreError::Schema(format!(
            "the copy does not match: {} rows read, {} found in the target",
            counts.iter().map(|(_, n)| n).sum::<usize>(),
            copied.iter().map(|(_, n)| n).sum::<usize>()
        )));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_duplicates_collapse() {
        let c = |k: &str, d: Option<&str>| Change {
            table: Table::Components,
            key: k.into(),
            doc: d.map(str::to_string),
        };
        let rows = vec![c("a", Some("{}")), c("b", None), c("a", None)];
        let back = decode_rows(1, &encode_rows(&rows)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[1].key, "b");
        let last: Vec<_> = last_per_row(&rows)
            .iter()
            .map(|c| (c.key.clone(), c.doc.clone()))
            .collect();
        assert_eq!(last, vec![("b".into(), None), ("a".into(), None)]);
        assert!(decode_rows(2, r#"[["nope","k",null]]"#).is_err());
    }
}
