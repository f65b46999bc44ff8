//! Who holds which address, in memory.
//!
//! The policy reads this table and says what should change; only
//! [`Leases::apply`] changes it, so a decision and its effect can be tested
//! apart. The table starts from the store's lease records and the server
//! writes bindings back through the store (see `server`); offers are held
//! here only, as RFC 2131 allows (a lost offer costs the client a retry).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::inventory::model::Lease;

pub type Mac = [u8; 6];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Offered and not yet requested; not persisted.
    Offered,
    /// Acknowledged.
    Bound,
    /// A client said the address is in use by someone else (DHCPDECLINE).
    Declined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub mac: Mac,
    /// Unix seconds; from then on the address is free again.
    pub expires: i64,
    pub state: State,
    /// A pool address (else an inventory reservation).
    pub pool: bool,
    /// The binding is on disk as it stands (a fresh pool binding is not
    /// until its batch has committed).
    pub durable: bool,
}

/// A change the policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Hold a pool address for an offer.
    Hold { ip: Ipv4Addr, mac: Mac, until: i64 },
    /// Bind an address (pool or reserved) after a REQUEST.
    Bind {
        ip: Ipv4Addr,
        mac: Mac,
        expires: i64,
        pool: bool,
    },
    /// Forget the binding of `ip`.
    Free { ip: Ipv4Addr },
    /// Keep `ip` out of the pool until `until`.
    Decline { ip: Ipv4Addr, until: i64 },
}

impl Change {
    /// Does the change have to be durable before the reply goes out?
    pub fn must_persist(&self) -> bool {
        matches!(self, Change::Bind { pool: true, .. })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Leases {
    by_ip: HashMap<Ipv4Addr, Binding>,
    /// The pool address a MAC holds or last held (the last one wins).
    by_mac: HashMap<Mac, Ipv4Addr>,
    /// Where the next free-address search starts, per pool start.
    cursor: HashMap<Ipv4Addr, u32>,
}

impl Leases {
    /// The table as the store left it; `pool` tells a pool address from a
    /// reservation (which the inventory knows, not the record).
    pub fn load<'a>(
        records: impl IntoIterator<Item = &'a Lease>,
        pool: impl Fn(Ipv4Addr, &Mac) -> bool,
    ) -> Leases {
        let mut t = Leases::default();
        for r in records {
            let std::net::IpAddr::V4(ip) = r.ip else {
                continue;
            };
            let Ok(mac) = crate::inventory::mac::parse(&r.mac) else {
                continue;
            };
            let expires = r.expires.map_or(i64::MAX, |e| e.timestamp());
            t.apply(&Change::Bind {
                ip,
                mac,
                expires,
                pool: pool(ip, &mac),
            });
            t.mark_durable(ip, &mac, expires);
        }
        t
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Binding> {
        self.by_ip.get(&ip)
    }

    /// The binding of `ip` unless it has expired at `now`.
    pub fn live(&self, ip: Ipv4Addr, now: i64) -> Option<&Binding> {
        self.by_ip.get(&ip).filter(|b| b.expires > now)
    }

    /// The pool address `mac` holds or last held.
    pub fn pool_address_of(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.by_mac
            .get(mac)
            .copied()
            .filter(|ip| self.by_ip.get(ip).is_some_and(|b| b.mac == *mac))
    }

    pub fn cursor(&self, pool_start: Ipv4Addr) -> u32 {
        self.cursor.get(&pool_start).copied().unwrap_or(0)
    }

    pub fn set_cursor(&mut self, pool_start: Ipv4Addr, offset: u32) {
        self.cursor.insert(pool_start, offset);
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Ipv4Addr, &Binding)> {
        self.by_ip.iter()
    }

    pub fn apply(&mut self, c: &Change) {
        match *c {
            Change::Hold { ip, mac, until } => {
                self.put(
                    ip,
                    Binding {
                        mac,
                        expires: until,
                        state: State::Offered,
                        pool: true,
                        durable: false,
                    },
                );
            }
            Change::Bind {
                ip,
                mac,
                expires,
                pool,
            } => {
                self.put(
                    ip,
                    Binding {
                        mac,
                        expires,
                        state: State::Bound,
                        pool,
                        durable: !pool,
                    },
                );
            }
            Change::Free { ip } => {
                if let Some(old) = self.by_ip.remove(&ip)
                    && self.by_mac.get(&old.mac) == Some(&ip)
                {
                    self.by_mac.remove(&old.mac);
                }
            }
            Change::Decline { ip, until } => {
                self.apply(&Change::Free { ip });
                self.by_ip.insert(
                    ip,
                    Binding {
                        mac: [0; 6],
                        expires: until,
                        state: State::Declined,
                        pool: true,
                        durable: false,
                    },
                );
            }
        }
    }

    fn put(&mut self, ip: Ipv4Addr, b: Binding) {
        if let Some(old) = self.by_ip.insert(ip, b)
            && old.mac != b.mac
            && self.by_mac.get(&old.mac) == Some(&ip)
        {
            self.by_mac.remove(&old.mac);
        }
        if b.pool {
            // A MAC holds one pool address: moving it frees the old one.
            if let Some(prev) = self.by_mac.insert(b.mac, ip)
                && prev != ip
                && self.by_ip.get(&prev).is_some_and(|x| x.mac == b.mac)
            {
                self.by_ip.remove(&prev);
            }
        }
    }

    /// Records that the binding of `ip` to `mac` until `expires` is on disk.
    pub fn mark_durable(&mut self, ip: Ipv4Addr, mac: &Mac, expires: i64) {
        if let Some(b) = self.by_ip.get_mut(&ip)
            && b.mac == *mac
            && b.expires == expires
        {
            b.durable = true;
        }
    }

    /// Addresses whose binding ended before `now`.
    pub fn expired(&self, now: i64) -> Vec<Ipv4Addr> {
        self.by_ip
            .iter()
            .filter(|(_, b)| b.expires <= now)
            .map(|(ip, _)| *ip)
            .collect()
    }
}
