//! Rendered meta-data, remembered per caller address for one snapshot.
//!
//! A document is a pure function of the snapshot and the caller's address
//! (when the address is an inventory interface's: lease identification
//! depends on the clock and is never cached). So an entry is valid exactly
//! as long as the snapshot it was rendered from is the current one: every
//! lookup names the current generation, and the first lookup or insert of a
//! newer generation drops everything older. Nothing is ever served from a
//! snapshot other than the one the request read; this is memoisation, not a
//! time-to-live cache.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use bytes::Bytes;

/// Entries kept per generation at most (about one per inventory address).
pub const MAX_ENTRIES: usize = 1 << 17;

#[derive(Default)]
struct Generation {
    generation: u64,
    docs: RwLock<HashMap<IpAddr, Bytes>>,
}

/// Documents by caller address, for the current snapshot generation.
#[derive(Default)]
pub struct DocCache {
    current: ArcSwap<Generation>,
}

impl DocCache {
    /// The document rendered for `ip` from snapshot `generation`, if any.
    pub fn get(&self, generation: u64, ip: IpAddr) -> Option<Bytes> {
        let g = self.current.load();
        if g.generation != generation {
            return None;
        }
        g.docs.read().ok()?.get(&ip).cloned()
    }

    /// Remembers `doc`, rendered for `ip` from snapshot `generation`.
    pub fn put(&self, generation: u64, ip: IpAddr, doc: Bytes) {
        let mut g = self.current.load_full();
        if g.generation < generation {
            let fresh = Arc::new(Generation {
                generation,
                docs: RwLock::default(),
            });
            let prev = self.current.compare_and_swap(&g, fresh.clone());
            g = if Arc::ptr_eq(&prev, &g) {
                fresh
            } else {
                self.current.load_full()
            };
        }
        if g.generation != generation {
            return;
        }
        if let Ok(mut docs) = g.docs.write()
            && docs.len() < MAX_ENTRIES
        {
            docs.insert(ip, doc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_for_one_generation() {
        let c = DocCache::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        c.put(3, ip, Bytes::from_static(b"a"));
        assert_eq!(c.get(3, ip).as_deref(), Some(&b"a"[..]));
        assert_eq!(c.get(4, ip), None, "a newer snapshot never sees it");
        c.put(2, ip, Bytes::from_static(b"old"));
        assert_eq!(
            c.get(3, ip).as_deref(),
            Some(&b"a"[..]),
            "older renders are dropped"
        );
        c.put(5, ip, Bytes::from_static(b"b"));
        assert_eq!(c.get(3, ip), None);
        assert_eq!(c.get(5, ip).as_deref(), Some(&b"b"[..]));
    }
}
