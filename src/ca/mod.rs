//! The appliance's own trust root.
//!
//! A cluster manager is often the first thing installed on a site, before any
//! enterprise PKI or identity provider is reachable from the management
//! network, so the appliance cannot depend on one to be usable. It therefore
//! carries a small certificate authority of its own: clients pin one root
//! (checked by its fingerprint) and from then on can trust the API
//! listener, whatever names or addresses the head node is reached by. API
//! callers are authenticated with short-lived bearer tokens signed by a key
//! that never leaves the head nodes (a shared store holds it only sealed),
//! and BMC passwords are kept sealed so a copied database alone does not
//! hand over every node's out-of-band controller.
//!
//! Node firmware (PXE/iPXE, UEFI HTTP boot) cannot be given this root in
//! advance and cannot verify anything it is served, which is why the boot
//! path stays on a separate plain-HTTP listener and only the API listener
//! uses the certificates made here.
//!
//! Everything lives under `<state dir>/ca/`: removing `root.crt` (and
//! `root.key`) is the way to start over with a new root, everything else is
//! regenerated on demand. Head nodes sharing a store share these keys too
//! (`bundle`): the database holds them sealed with a key-encryption key
//! file, and each head writes them into its own `ca/`.

pub mod authority;
pub mod bundle;
mod error;
mod files;
pub mod secret;
pub mod token;

pub use authority::{Authority, CertNames, fingerprint_pem};
pub use error::CaError;
pub use secret::SecretBox;
pub use token::{Claims, TokenError, TokenKeys};
