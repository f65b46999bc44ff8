//! openchami: one process that turns a head node into a cluster manager.
//!
//! The library exists so that integration tests and benchmarks can start the
//! whole appliance in-process; the binary in `main.rs` is a thin shell over
//! [`cli::main`].

pub mod app;
pub mod boot;
pub mod ca;
pub mod cli;
pub mod config;
pub mod console;
pub mod dhcp;
pub mod discover;
pub mod dns;
pub mod firmware;
pub mod http;
pub mod inventory;
pub mod lab;
pub mod logging;
pub mod mem;
pub mod metadata;
pub mod metrics;
pub mod power;
pub mod redfish;
pub mod statedir;

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
