//! Response-rate limiting: a token bucket per client address for answers
//! over UDP, so the server cannot be used to flood a spoofed source.
//!
//! Over the limit, every `slip`-th answer goes out truncated (TC, no
//! records: a real client retries over TCP, which is never limited) and
//! the others are dropped. The table is bounded: when full, addresses idle
//! for a second are forgotten, and if that frees nothing the table starts
//! again, which at worst lets a burst through.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Client addresses remembered at most.
pub const MAX_CLIENTS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send a truncated answer instead.
    Slip,
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    over: u32,
}

#[derive(Debug)]
pub struct Rrl {
    per_sec: f64,
    slip: u32,
    clients: HashMap<IpAddr, Bucket>,
}

impl Rrl {
    /// `per_sec` 0 lets everything through.
    pub fn new(per_sec: u32, slip: u32) -> Rrl {
        Rrl {
            per_sec: f64::from(per_sec),
            slip,
            clients: HashMap::new(),
        }
    }

    /// May an answer to `ip` go out at `now`?
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if self.per_sec <= 0.0 {
            return Verdict::Send;
        }
        if self.clients.len() >= MAX_CLIENTS && !self.clients.contains_key(&ip) {
            self.clients
                .retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < 1.0);
            if self.clients.len() >= MAX_CLIENTS {
                self.clients.clear();
            }
        }
        let rate = self.per_sec;
        let b = self.clients.entry(ip).or_insert(Bucket {
            tokens: rate,
            last: now,
            over: 0,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.over = 0;
            return Verdict::Send;
        }
        b.over = b.over.wrapping_add(1);
        if self.slip > 0 && b.over.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_limited_then_refilled() {
        let mut r = Rrl::new(10, 2);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..20).map(|_| r.check(a, t0)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Send));
        assert_eq!(
            &verdicts[10..14],
            &[Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
        );
        // Another client has its own bucket.
        assert_eq!(r.check(b, t0), Verdict::Send);
        // Half a second later, five more.
        let t1 = t0 + Duration::from_millis(500);
        let sent = (0..10).filter(|_| r.check(a, t1) == Verdict::Send).count();
        assert_eq!(sent, 5);
        assert_eq!(Rrl::new(0, 2).check(a, t0), Verdict::Send);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut r = Rrl::new(5, 0);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            r.check(IpAddr::from(std::net::Ipv4Addr::from(i)), t0);
        }
        assert!(r.clients() <= MAX_CLIENTS);
    }
}
