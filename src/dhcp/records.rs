//! Lease records in the store, and several head nodes sharing one pool.
//!
//! Every head serves the whole pool; no addresses are split between heads,
//! so a head that dies takes no addresses with it. (The clients are split,
//! to save work: see `balance`.) What keeps one address from going to two
//! MACs is the store, not the heads' memory:
//!
//! - A pool binding becomes durable only through [`write`], which the store
//!   runs under its cluster-wide commit lock against the latest state every
//!   head has committed. It refuses a pool binding whose address another MAC
//!   holds live; the waiting ACK is then not sent, the table is corrected
//!   from the store, and the request is decided again (a NAK). Deletes are
//!   conditional too: a head removes a record only while it still names the
//!   MAC the head saw (and, when sweeping, only once it has ended), so a
//!   head with a stale view never removes another head's fresh binding.
//! - One pool address per MAC: a MAC's new pool binding replaces the one
//!   it held (a client asking for another address has given up the old
//!   one, RFC 2131 §3.2; the single head has always done this in memory).
//!   With several heads, [`write`] also removes a MAC's other pool records
//!   this head did not know of.
//! - Each head's lease table follows the records other heads commit
//!   ([`follow`], on every generation the store publishes), so offers avoid
//!   addresses another head has bound; and the pool search starts at a
//!   point derived from the MAC (`policy::pick`, in the spirit of RFC 3074's
//!   hash), so heads offer a client the same address and concurrent clients
//!   seldom meet on one. With several heads every pool ACK is committed
//!   (no lease caching): a binding this head remembers may have been
//!   released through another.
//!
//! Reservations (inventory addresses) are unique by the inventory's own
//! rules; their records are written as they are.
//!
//! With one head (SQLite) the table is the authority, the refusal never
//! fires and nothing is followed: the commit path costs one map lookup per
//! record more than before.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use super::leases::{Change, Leases, Mac, State};
use crate::inventory::model::Lease;
use crate::inventory::{Model, Txn, mac};

/// What a batch asks the store to do with one address's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Store the record; a pool one is refused while another MAC holds the
    /// address live.
    Put { lease: Lease, pool: bool },
    /// Delete the record if it still names `mac` and, with `ended_by`, has
    /// ended by then (Unix seconds).
    Delete { mac: Mac, ended_by: Option<i64> },
}

/// When a stored record ends (Unix seconds; never: `i64::MAX`).
pub fn ends(l: &Lease) -> i64 {
    l.expires.map_or(i64::MAX, |e| e.timestamp())
}

/// Is `ip` a pool address for `m`, rather than its inventory reservation?
pub fn is_pool(model: &Model, ip: Ipv4Addr, m: &Mac) -> bool {
    !model.interfaces.get(&mac::to_id(m)).is_some_and(|i| {
        i.ip_addresses
            .iter()
            .any(|a| a.ip_address.parse::<Ipv4Addr>() == Ok(ip))
    })
}

/// Applies `intents` in `t` (a store write, so against the latest state of
/// every head) and returns the pool bindings refused, as (address, MAC).
/// `several_heads`: also remove a newly bound MAC's other pool records.
pub fn write(
    t: &mut Txn<'_>,
    intents: impl IntoIterator<Item = (Ipv4Addr, Intent)>,
    several_heads: bool,
) -> Vec<(Ipv4Addr, Mac)> {
    let now = t.now().timestamp();
    let mut refused = Vec::new();
    let mut bound: HashMap<Mac, Ipv4Addr> = HashMap::new();
    for (ip, intent) in intents {
        let key = IpAddr::V4(ip);
        let row = t.model().leases.get(&key);
        let row_mac = row.and_then(|r| mac::parse(&r.mac).ok());
        match intent {
            Intent::Put { lease, pool } => {
                if pool {
                    let Ok(m) = mac::parse(&lease.mac) else {
                        continue;
                    };
                    let taken = row.is_some_and(|r| ends(r) > now) && row_mac != Some(m);
                    if taken {
                        refused.push((ip, m));
                        continue;
                    }
                    bound.insert(m, ip);
                }
                t.put_lease(lease);
            }
            Intent::Delete { mac: m, ended_by } => {
                let gone = row
                    .is_some_and(|r| row_mac == Some(m) && ended_by.is_none_or(|e| ends(r) <= e));
                if gone {
                    t.delete_lease(key);
                }
            }
        }
    }
    if several_heads && !bound.is_empty() {
        let model = t.model();
        let stale: Vec<IpAddr> = model
            .leases
            .iter()
            .filter_map(|(ip, r)| {
                let IpAddr::V4(v4) = *ip else { return None };
                let m = mac::parse(&r.mac).ok()?;
                let now_at = *bound.get(&m)?;
                (now_at != v4 && is_pool(model, v4, &m)).then_some(*ip)
            })
            .collect();
        for ip in stale {
            t.delete_lease(ip);
        }
    }
    refused
}

/// Brings the table's view of `ip` to the stored record in `model`: a
/// record is a durable binding; no record frees a durable binding (offers
/// and declines live in memory only and stay).
pub fn sync(leases: &mut Leases, model: &Model, ip: Ipv4Addr) {
    match model.leases.get(&IpAddr::V4(ip)) {
        Some(row) => {
            let Ok(m) = mac::parse(&row.mac) else {
                return;
            };
            let expires = ends(row);
            let same = leases
                .get(ip)
                .is_some_and(|b| b.mac == m && b.expires == expires && b.state == State::Bound);
            if !same {
                leases.apply(&Change::Bind {
                    ip,
                    mac: m,
                    expires,
                    pool: is_pool(model, ip, &m),
                });
            }
            leases.mark_durable(ip, &m, expires);
        }
        None => {
            if leases
                .get(ip)
                .is_some_and(|b| b.state == State::Bound && b.durable)
            {
                leases.apply(&Change::Free { ip });
            }
        }
    }
}

/// Follows the records committed since `before` (by any head) into the
/// table, except for addresses this head has a write pending for: those
/// are synced when that write has committed.
pub fn follow(
    leases: &mut Leases,
    before: &imbl::OrdMap<IpAddr, Lease>,
    model: &Model,
    pending: impl Fn(Ipv4Addr) -> bool,
) {
    use imbl::ordmap::DiffItem;
    for d in before.diff(&model.leases) {
        let (DiffItem::Add(ip, _)
        | DiffItem::Update { new: (ip, _), .. }
        | DiffItem::Remove(ip, _)) = d;
        if let IpAddr::V4(ip) = *ip
            && !pending(ip)
        {
            sync(leases, model, ip);
        }
    }
}

/// Where a MAC's pool search starts, the same on every head: FNV-1a of the
/// hardware address, reduced to the pool's size.
pub fn pool_start(m: &Mac, size: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in m {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % size.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    fn lease(n: u8, m: &Mac, ends: i64) -> Lease {
        Lease {
            ip: IpAddr::V4(ip(n)),
            mac: mac::to_colon(m),
            expires: chrono::DateTime::from_timestamp(ends, 0),
        }
    }

    fn put(n: u8, m: &Mac, ends: i64) -> (Ipv4Addr, Intent) {
        (
            ip(n),
            Intent::Put {
                lease: lease(n, m, ends),
                pool: true,
            },
        )
    }

    async fn run(
        store: &Store,
        intents: Vec<(Ipv4Addr, Intent)>,
        several: bool,
    ) -> Vec<(Ipv4Addr, Mac)> {
        store
            .write(move |t| Ok(write(t, intents, several)))
            .await
            .unwrap()
    }

    fn rows(store: &Store) -> Vec<(Ipv4Addr, String)> {
        store
            .snapshot()
            .leases
            .values()
            .filter_map(|l| match l.ip {
                IpAddr::V4(v) => Some((v, l.mac.clone())),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// The rules a commit checks against the latest stored records, as a
    /// table: (stored before, intents, several heads, refused, stored after).
    #[tokio::test]
    async fn commits_refuse_taken_addresses_and_delete_only_what_they_saw() {
        let now = chrono::Utc::now().timestamp();
        let (live, ended) = (now + 300, now - 5);
        type Case = (
            &'static str,
            Vec<Lease>,
            Vec<(Ipv4Addr, Intent)>,
            bool,
            Vec<(Ipv4Addr, Mac)>,
            Vec<(u8, Mac)>,
        );
        let cases: Vec<Case> = vec![
            (
                "free address",
                vec![],
                vec![put(5, &A, live)],
                false,
                vec![],
                vec![(5, A)],
            ),
            (
                "taken live by another MAC",
                vec![lease(5, &B, live)],
                vec![put(5, &A, live)],
                false,
                vec![(ip(5), A)],
                vec![(5, B)],
            ),
            (
                "another MAC's record has ended",
                vec![lease(5, &B, ended)],
                vec![put(5, &A, live)],
                false,
                vec![],
                vec![(5, A)],
            ),
            (
                "renewal of one's own",
                vec![lease(5, &A, now + 10)],
                vec![put(5, &A, live)],
                false,
                vec![],
                vec![(5, A)],
            ),
            (
                "delete names another MAC: kept",
                vec![lease(5, &B, live)],
                vec![(
                    ip(5),
                    Intent::Delete {
                        mac: A,
                        ended_by: None,
                    },
                )],
                false,
                vec![],
                vec![(5, B)],
            ),
            (
                "sweep of a record renewed meanwhile: kept",
                vec![lease(5, &A, live)],
                vec![(
                    ip(5),
                    Intent::Delete {
                        mac: A,
                        ended_by: Some(now),
                    },
                )],
                false,
                vec![],
                vec![(5, A)],
            ),
            (
                "sweep of an ended record",
                vec![lease(5, &A, ended)],
                vec![(
                    ip(5),
                    Intent::Delete {
                        mac: A,
                        ended_by: Some(now),
                    },
                )],
                false,
                vec![],
                vec![],
            ),
            (
                "several heads: the MAC's other pool record goes",
                vec![lease(5, &A, live), lease(6, &B, live)],
                vec![put(7, &A, live)],
                true,
                vec![],
                vec![(6, B), (7, A)],
            ),
            (
                "one head: the table says what moves",
                vec![lease(5, &A, live)],
                vec![put(7, &A, live)],
                false,
                vec![],
                vec![(5, A), (7, A)],
            ),
        ];
        for (name, before, intents, several, refused, after) in cases {
            let store = Store::open_in_memory().unwrap();
            store
                .write(move |t| {
                    for l in before {
                        t.put_lease(l);
                    }
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(run(&store, intents, several).await, refused, "{name}");
            let want: Vec<(Ipv4Addr, String)> = after
                .iter()
                .map(|(n, m)| (ip(*n), mac::to_colon(m)))
                .collect();
            assert_eq!(rows(&store), want, "{name}");
        }
    }

    #[test]
    fn the_table_follows_the_records() {
        let mut model = Model::default();
        let before = model.leases.clone();
        let mut leases = Leases::default();
        // Ours, pending: left alone. An offer of ours on another head's
        // new binding: replaced. A durable binding whose record went: freed.
        leases.apply(&Change::Hold {
            ip: ip(5),
            mac: A,
            until: 100,
        });
        leases.apply(&Change::Bind {
            ip: ip(6),
            mac: A,
            expires: 100,
            pool: true,
        });
        leases.apply(&Change::Bind {
            ip: ip(7),
            mac: B,
            expires: 100,
            pool: true,
        });
        leases.mark_durable(ip(7), &B, 100);
        let mut with7 = model.leases.clone();
        with7.insert(IpAddr::V4(ip(7)), lease(7, &B, 100));
        model.leases.insert(IpAddr::V4(ip(5)), lease(5, &B, 200));
        model.leases.insert(IpAddr::V4(ip(6)), lease(6, &B, 200));
        follow(&mut leases, &with7, &model, |i| i == ip(6));
        let b5 = leases.get(ip(5)).unwrap();
        assert_eq!((b5.mac, b5.state, b5.durable), (B, State::Bound, true));
        assert_eq!(leases.get(ip(6)).unwrap().mac, A, "pending: untouched");
        assert!(leases.get(ip(7)).is_none(), "record gone: freed");
        // Nothing changed since: nothing to do.
        follow(&mut leases, &model.leases.clone(), &model, |_| false);
        assert_eq!(leases.get(ip(6)).unwrap().mac, A);
        let _ = before;
    }

    #[test]
    fn pool_start_is_spread_and_stable() {
        let starts: std::collections::HashSet<u32> = (0..64u8)
            .map(|i| pool_start(&[2, 0, 0, 0, 1, i], 1000))
            .collect();
        assert!(starts.len() > 56, "{}", starts.len());
        assert_eq!(pool_start(&A, 50), pool_start(&A, 50));
        assert_eq!(pool_start(&A, 0), 0);
    }
}
