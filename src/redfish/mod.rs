//! A small Redfish client, tolerant of what real BMCs send, and a simulated
//! BMC for scale work.
//!
//! A leaf of the crate, like `inventory`: it knows HTTP and Redfish, nothing
//! about the inventory, so discovery and power share one client and the
//! simulator can be reused by anything that needs a BMC to talk to.
//!
//! Why not a Redfish crate: vendors' JSON departs from the schema (missing
//! `Links`, `null` where an object belongs, no SessionService), and the strict
//! decoders tried fail on the emulator used in our tests. Everything here
//! reads JSON as a [`serde_json::Value`] and takes what is there.
//!
//! BMCs are fragile: a few requests in flight can saturate one, and a session
//! left open counts against a small per-BMC limit until it times out (often
//! 30 minutes), locking operators out. So every [`Bmc`] caps its requests in
//! flight, and every session it opens is deleted when the work ends, fails or
//! is dropped.

mod client;
pub mod console;
pub mod crawl;
mod error;
pub mod firmware;
pub mod hardware;
pub mod json;
pub mod powercap;
pub mod sim;
pub mod sim_hardware;
pub mod simssh;

pub use client::{
    Bmc, ClientOptions, Credentials, ProbeError, RootInfo, Transport, base_url, probe,
};
pub use crawl::{
    ChassisInfo, Crawl, ManagerInfo, Nic, ResetInfo, ServiceLink, SystemInfo, SystemState, crawl,
    system_state,
};
pub use error::{Error, ErrorKind};

/// The innermost cause of an error: what an HTTP client's error chain ends
/// in ("connection refused", "certificate not valid"), which is the part an
/// operator can act on. The CLI's REST client and the Redfish client both
/// report it.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut last = e.to_string();
    while let Some(next) = cur.source() {
        last = next.to_string();
        cur = next;
    }
    last
}
