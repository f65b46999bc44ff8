//! The inventory: model types, the store and SMD's rules over them.
//!
//! A leaf of the crate: it imports nothing else from it, so every other
//! module can depend on it and it can be tested on its own.

pub mod backend;
pub mod components;
pub mod enclosures;
pub mod endpoints;
pub mod enums;
pub mod groups;
pub mod hwinv;
pub mod identity;
pub mod import;
pub mod interfaces;
pub mod leases;
pub mod mac;
pub mod model;
pub mod nodes;
pub mod postgres;
pub mod sqlite;
pub mod store;
pub mod tokens;
pub mod xname;

pub use store::{Model, Snapshot, Store, StoreError, Txn, WriteError};

/// Why the inventory refused a request; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// 400: the input is malformed or breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// 404: something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the write would duplicate an ID, MAC, NID, label or FQDN.
    #[error("{0}")]
    Conflict(String),
    /// 413: a document inside the request is over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// 422: a patch that cannot be applied to the record as it stands.
    #[error("{0}")]
    Unprocessable(String),
}
