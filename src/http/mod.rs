//! The HTTPS API listener and the plain-HTTP node listener.
//!
//! Adapters only: handlers decode a request, ask the domain (inventory, boot,
//! metadata, power) and encode the answer. Which routes exist, which listener
//! serves them and whether they need a token is decided in one table
//! ([`routes`]), from which the routers and the OpenAPI document are built, so
//! an anonymous route is a visible decision rather than an accident.

pub mod access;
pub mod auth;
pub mod boot;
pub mod boot_service;
pub mod cloud_init;
pub mod common;
pub mod console;
pub mod deadline;
pub mod dhcp;
pub mod discover;
pub mod dns;
pub mod firmware;
pub mod json;
pub mod metadata_service;
pub mod oauth;
pub mod openapi;
pub mod peer;
pub mod power;
pub mod problem;
pub mod routes;
pub mod schema;
pub mod server;
mod share_filter;
pub mod smd;
pub mod state;
pub mod store;
pub mod ui;
pub mod ui_session;

pub use routes::{Listener, router};
pub use server::{Limits, Shed, serve};
pub use state::{AppState, Shared};
