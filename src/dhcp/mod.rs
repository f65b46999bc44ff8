//! DHCPv4 built from the inventory (contract §7): replaces CoreDHCP,
//! coresmd and bootloop.
//!
//! The policy that decides a reply is a pure function of the inventory
//! snapshot, the settings, the lease table, the packet and the time
//! ([`policy::decide`]), so it can be property-tested; [`handle`] is the
//! whole decode → decide → encode path as one function of bytes (the fuzz
//! target calls it), and the server around it only moves bytes, applies
//! lease changes and persists them.

pub mod balance;
pub mod leases;
pub mod packet;
pub mod policy;
pub mod records;
pub mod rules;
pub mod server;
pub mod settings;

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::inventory::Model;
use leases::{Change, Leases};
use settings::Settings;

/// A reply to send and the lease changes that go with it.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The decoded request (for the boot-step records).
    pub query: policy::Query,
    pub reply: Option<(Vec<u8>, SocketAddrV4)>,
    pub outcome: policy::Outcome,
    pub kind: Option<policy::ReplyKind>,
}

/// Decodes `bytes`, asks the policy and encodes the reply. `Err` is the
/// reason a packet is dropped without an answer; the lease table is not
/// touched (apply `outcome.changes` with [`commit`]).
pub fn handle(
    bytes: &[u8],
    model: &Model,
    settings: &Settings,
    leases: &Leases,
    local: &[Ipv4Addr],
    now: i64,
) -> Result<Handled, packet::Drop> {
    let req = packet::decode(bytes)?;
    let ctx = policy::Context {
        model,
        settings,
        leases,
        local,
        now,
    };
    let outcome = policy::decide(&ctx, &req.query);
    let reply = match &outcome.reply {
        Some(r) => Some((packet::encode(&req, r)?, packet::destination(&req, r))),
        None => None,
    };
    let kind = outcome.reply.as_ref().map(|r| r.kind);
    Ok(Handled {
        query: req.query,
        reply,
        outcome,
        kind,
    })
}

/// Applies a decision's changes to the table, moving the pool search
/// cursor past an address just offered so the next client gets the next one.
pub fn commit(leases: &mut Leases, settings: &Settings, changes: &[Change]) {
    for c in changes {
        leases.apply(c);
        if let Change::Hold { ip, .. } = c
            && let Some(sub) = settings.subnet_of(*ip)
            && let Some((first, _)) = sub.pool
        {
            leases.set_cursor(first, u32::from(*ip) - u32::from(first) + 1);
        }
    }
}

#[cfg(test)]
mod tests;
