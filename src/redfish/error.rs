//! What went wrong talking to a BMC, where, and whether trying again helps.

use std::fmt;

/// A failed Redfish request: which BMC, which request, what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The BMC address as given (`10.0.0.1`, `10.0.0.1:8443`).
    pub bmc: String,
    /// `GET /redfish/v1/Systems`, `login`, ...
    pub request: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect failed or the connection broke.
    Connect(String),
    /// No answer in time.
    Timeout(u64),
    /// The BMC refused the credentials (401/403).
    Auth(u16, String),
    /// Any other non-2xx answer.
    Status(u16, String),
    /// The answer is not the JSON expected.
    Decode(String),
    /// The BMC does not offer what was asked (no reset action, say).
    Unsupported(String),
    /// The work was cancelled before it finished.
    Cancelled,
}

impl Error {
    pub fn new(bmc: &str, request: impl Into<String>, kind: ErrorKind) -> Error {
        Error {
            bmc: bmc.to_string(),
            request: request.into(),
            kind,
        }
    }

    /// True when the same request may succeed later: timeouts, broken
    /// connections and 5xx. Credentials and 4xx answers do not change by
    /// themselves, and retrying a refused login can lock the account.
    pub fn retryable(&self) -> bool {
        match &self.kind {
            ErrorKind::Connect(_) | ErrorKind::Timeout(_) => true,
            ErrorKind::Status(code, _) => *code >= 500,
            _ => false,
        }
    }

    pub fn is_auth(&self) -> bool {
        matches!(self.kind, ErrorKind::Auth(..))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Connect(m) => write!(f, "cannot connect: {m}"),
            ErrorKind::Timeout(s) => write!(f, "no answer within {s} s"),
            ErrorKind::Auth(code, m) if m.is_empty() => {
                write!(f, "credentials rejected ({code})")
            }
            ErrorKind::Auth(code, m) => write!(f, "credentials rejected ({code}: {m})"),
            ErrorKind::Status(code, m) if m.is_empty() => write!(f, "HTTP {code}"),
            ErrorKind::Status(code, m) => write!(f, "HTTP {code}: {m}"),
            ErrorKind::Decode(m) => write!(f, "unexpected answer: {m}"),
            ErrorKind::Unsupported(m) => write!(f, "not supported: {m}"),
            ErrorKind::Cancelled => write!(f, "cancelled"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = if self.retryable() {
            "transient"
        } else {
            "retrying will not help"
        };
        write!(
            f,
            "BMC {}: {}: {} ({hint})",
            self.bmc, self.request, self.kind
        )
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_where_and_whether_to_retry() {
        let e = Error::new(
            "10.0.0.1",
            "GET /redfish/v1/Systems",
            ErrorKind::Timeout(30),
        );
        assert!(e.retryable());
        assert_eq!(
            e.to_string(),
            "BMC 10.0.0.1: GET /redfish/v1/Systems: no answer within 30 s (transient)"
        );
        let e = Error::new("10.0.0.1", "login", ErrorKind::Auth(401, String::new()));
        assert!(!e.retryable() && e.is_auth());
        assert!(e.to_string().contains("retrying will not help"), "{e}");
        assert!(Error::new("b", "r", ErrorKind::Status(503, String::new())).retryable());
        assert!(!Error::new("b", "r", ErrorKind::Status(404, String::new())).retryable());
    }
}
