use std::path::PathBuf;

/// Why the appliance's key material could not be made, loaded or used.
///
/// File problems carry the path so an operator can go straight to the file
/// that needs fixing or removing, instead of guessing which of the several
/// files under `ca/` is at fault.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading, writing or creating a file or directory failed.
    #[error("cannot {op} {}: {error}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file exists but cannot be used, and replacing it automatically
    /// would silently change what clients or stored data depend on.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// A configured host name cannot appear in a certificate.
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// Input that should hold a PEM certificate does not.
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// A bearer token could not be issued.
    #[error("cannot issue token: {0}")]
    Token(String),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A secret could not be sealed.
    #[error("cannot seal secret")]
    Seal,
    /// A sealed secret is malformed, was tampered with, or was sealed with
    /// another key.
    #[error("cannot open sealed secret: {0}")]
    Unseal(&'static str),
}

impl CaError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        CaError::Io {
            op,
            path: path.into(),
            error,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        CaError::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
