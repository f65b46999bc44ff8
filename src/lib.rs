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
pub mod dhcp;
pub mod discover;
pub mod http;
pub mod inventory;
pub mod lab;
pub mod mem;
pub mod metadata;
pub mod metrics;
pub mod power;
pub mod redfish;
