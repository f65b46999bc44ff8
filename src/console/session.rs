//! What a console session is doing and when it tries again: a pure state
//! machine the session task drives with events, so the back-off and the
//! states the API reports are tested without a BMC.

use std::time::Duration;

use serde::Serialize;

/// Why a connection attempt or a connected session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// TCP, the SSH handshake, or a session that dropped: try again soon.
    Transport(String),
    /// The BMC refused the credentials (or there are none).
    Credentials(String),
    /// The BMC presented a host key other than the pinned one.
    HostKeyChanged(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Transport(m) | Failure::Credentials(m) | Failure::HostKeyChanged(m) => m,
        }
    }

    /// Failures an operator must fix wait the longest back-off at once
    /// rather than knocking on the BMC again (some lock accounts out).
    fn needs_operator(&self) -> bool {
        !matches!(self, Failure::Transport(_))
    }
}

/// The state the API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Connecting,
    Connected,
    /// Waiting to reconnect after a failure.
    Waiting,
    Stopped,
    /// Another head sharing the store holds this BMC's console session.
    Elsewhere,
}

/// One console's session state.
#[derive(Debug, Clone)]
pub struct Session {
    pub phase: Phase,
    /// Failed attempts since the last successful connection.
    pub attempts: u32,
    pub last_error: Option<Failure>,
    min: Duration,
    max: Duration,
}

impl Session {
    pub fn new(min: Duration, max: Duration) -> Session {
        Session {
            phase: Phase::Connecting,
            attempts: 0,
            last_error: None,
            min,
            max: max.max(min),
        }
    }

    pub fn connected(&mut self) {
        self.phase = Phase::Connected;
        self.attempts = 0;
        self.last_error = None;
    }

    /// A failure: returns how long to wait before the next attempt. A
    /// session that was connected retries after the shortest wait; repeated
    /// failures double it up to the longest.
    pub fn failed(&mut self, why: Failure) -> Duration {
        let wait = if why.needs_operator() {
            self.max
        } else {
            let doubled = self
                .min
                .checked_mul(1u32 << self.attempts.min(20))
                .unwrap_or(self.max);
            doubled.min(self.max)
        };
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = Some(why);
        self.phase = Phase::Waiting;
        wait
    }

    pub fn connecting(&mut self) {
        self.phase = Phase::Connecting;
    }

    pub fn stopped(&mut self) {
        self.phase = Phase::Stopped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_on_success() {
        let mut s = Session::new(Duration::from_secs(1), Duration::from_secs(10));
        let t = || Failure::Transport("refused".into());
        let waits: Vec<u64> = (0..6).map(|_| s.failed(t()).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(s.phase, Phase::Waiting);
        s.connected();
        assert_eq!((s.phase, s.attempts), (Phase::Connected, 0));
        assert_eq!(s.failed(t()).as_secs(), 1);
    }

    #[test]
    fn operator_failures_wait_longest() {
        let table = [
            Failure::Credentials("denied".into()),
            Failure::HostKeyChanged("changed".into()),
        ];
        for f in table {
            let mut s = Session::new(Duration::from_secs(1), Duration::from_secs(300));
            assert_eq!(s.failed(f.clone()).as_secs(), 300, "{f:?}");
            assert_eq!(
                s.last_error.as_ref().map(Failure::message),
                Some(f.message())
            );
        }
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut s = Session::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..100 {
            assert!(s.failed(Failure::Transport("x".into())) <= Duration::from_secs(300));
        }
    }
}
