//! openchami: one process that turns a head node into a cluster manager.
//!
//! The library exists so that integration tests and benchmarks can start the
//! whole appliance in-process; the binary in `main.rs` is a thin shell over
//! [`cli::main`].

pub mod app;
pub mod boot;
pub mod bpf;
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
pub mod shared_keys;
pub mod statedir;

/// The innermost cause of an error (kept in the Redfish client, a leaf
/// module, which reports it too).
pub use redfish::root_cause;
