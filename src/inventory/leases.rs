//! Leases on work that must happen once among the heads sharing a store.
//!
//! A power transition, the power sampler, a discovery job or a BMC's
//! console session must be driven by one head at a time, and by another
//! when that head dies. Each is named (`power-transition/<id>`,
//! `power-sampler`, `discovery/<id>`, `console/<bmc>`) and claimed by a
//! head ID for a time to live; the holder renews at a third of the TTL and
//! releases when the work ends. A lease whose holder stopped renewing
//! expires and can be claimed by any head.
//!
//! Fencing: a holder trusts its lease only until the start of its last
//! successful claim or renewal plus the TTL, measured on its own monotonic
//! clock. The database computes the expiry from its own clock when it
//! handles the request, which is later, so the holder's [`Held::lost`]
//! fires before any other head can claim the name (for clocks that run at
//! the same rate; no wall-clock agreement is needed). Work stops there.
//!
//! Why leases do not go through the writer thread: a renewal must not wait
//! behind a batch of writes (a large import would make every holder miss
//! its deadline and drop its work), and a lease changes every few seconds,
//! which would otherwise be a generation, a change-log row and a snapshot
//! for every head each time. So they are rows of their own beside the
//! model, reached through a small pool of their own (`postgres.rs`). With
//! one head (SQLite) that head holds every lease: [`Local`] grants in
//! memory, nothing is stored and nothing is fenced.
//!
//! Why claims and renewals are batched: a head with a console lease per BMC
//! holds thousands of leases, and one statement per lease per renewal was
//! hundreds of statements a second on every head with no work to do. Claims
//! and renewals asked within a short window (a tenth of the renewal
//! period, at most 100 ms) go to the database as one statement each way,
//! in name order, so two heads claiming overlapping sets lock rows in the
//! same order.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::store::StoreError;

/// A lease as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct LeaseRow {
    /// What the lease is on, e.g. `power-transition/<id>`.
    pub name: String,
    /// The head ID holding it.
    pub holder: String,
    /// Milliseconds until it expires (negative: expired, claimable).
    pub expires_in_ms: i64,
}

pub type LeaseFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where leases are kept. Every call is one round trip.
pub trait LeaseDb: Send + Sync + 'static {
    /// True where several heads may compete (a shared database).
    fn shared(&self) -> bool;
    /// Takes `name` for `holder` if it is free, expired or already
    /// `holder`'s; true if taken.
    fn claim<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> LeaseFuture<'a, bool>;
    /// Extends `holder`'s lease on `name`; false if it is not `holder`'s.
    fn renew<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> LeaseFuture<'a, bool>;
    /// [`LeaseDb::claim`] for several names in one round trip; the names
    /// taken.
    fn claim_many<'a>(
        &'a self,
        names: &'a [String],
        holder: &'a str,
        ttl: Duration,
    ) -> LeaseFuture<'a, Vec<String>> {
        Box::pin(each(names, move |n| self.claim(n, holder, ttl)))
    }
    /// [`LeaseDb::renew`] for several names in one round trip; the names
    /// renewed.
    fn renew_many<'a>(
        &'a self,
        names: &'a [String],
        holder: &'a str,
        ttl: Duration,
    ) -> LeaseFuture<'a, Vec<String>> {
        Box::pin(each(names, move |n| self.renew(n, holder, ttl)))
    }
    /// Gives `name` up if `holder` has it.
    fn release<'a>(&'a self, name: &'a str, holder: &'a str) -> LeaseFuture<'a, ()>;
    /// Every lease, expired ones included, by name.
    fn list(&self) -> LeaseFuture<'_, Vec<LeaseRow>>;
    /// The unexpired leases whose names start with `prefix`, by name.
    fn live<'a>(&'a self, prefix: &'a str) -> LeaseFuture<'a, Vec<LeaseRow>> {
        Box::pin(async move {
            let mut rows = self.list().await?;
            rows.retain(|r| r.name.starts_with(prefix) && r.expires_in_ms > 0);
            Ok(rows)
        })
    }
}

/// The names `ask` grants, one at a time (where a store has no statement
/// for several).
async fn each<'a, F>(names: &'a [String], ask: F) -> Result<Vec<String>, StoreError>
where
    F: Fn(&'a str) -> LeaseFuture<'a, bool>,
{
    let mut granted = Vec::new();
    for n in names {
        if ask(n).await? {
            granted.push(n.clone());
        }
    }
    Ok(granted)
}

/// The one head's leases, in memory: it holds whatever it claims.
#[derive(Default)]
pub struct Local {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

impl LeaseDb for Local {
    fn shared(&self) -> bool {
        false
    }

    fn claim<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> LeaseFuture<'a, bool> {
        Box::pin(async move {
            let mut held = self.held.lock().map_err(|_| StoreError::Panicked)?;
            let now = Instant::now();
            let free = held
                .get(name)
                .is_none_or(|(h, until)| h == holder || *until < now);
            if free {
                held.insert(name.to_string(), (holder.to_string(), now + ttl));
            }
            Ok(free)
        })
    }

    fn renew<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> LeaseFuture<'a, bool> {
        Box::pin(async move {
            let mut held = self.held.lock().map_err(|_| StoreError::Panicked)?;
            match held.get_mut(name) {
                Some((h, until)) if h == holder => {
                    *until = Instant::now() + ttl;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn release<'a>(&'a self, name: &'a str, holder: &'a str) -> LeaseFuture<'a, ()> {
        Box::pin(async move {
            let mut held = self.held.lock().map_err(|_| StoreError::Panicked)?;
            if held.get(name).is_some_and(|(h, _)| h == holder) {
                held.remove(name);
            }
            Ok(())
        })
    }

    fn list(&self) -> LeaseFuture<'_, Vec<LeaseRow>> {
        Box::pin(async move {
            let held = self.held.lock().map_err(|_| StoreError::Panicked)?;
            let now = Instant::now();
            let mut out: Vec<LeaseRow> = held
                .iter()
                .map(|(name, (holder, until))| LeaseRow {
                    name: name.clone(),
                    holder: holder.clone(),
                    expires_in_ms: if *until >= now {
                        until.duration_since(now).as_millis() as i64
                    } else {
                        -(now.duration_since(*until).as_millis() as i64)
                    },
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }
}

/// The default time to live of a lease.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// One head's view of the leases: who it is and how long its leases live.
#[derive(Clone)]
pub struct Leases {
    db: Arc<dyn LeaseDb>,
    holder: Arc<str>,
    ttl: Duration,
    batches: Arc<Batches>,
}

/// Claims and renewals waiting for their next statement, one queue per
/// kind; shared by every [`Leases`] of one store, so that all of a head's
/// work is batched together.
#[derive(Default)]
pub struct Batches([Batch; 2]);

/// A name asked for, by whom, and where its answer goes.
type Ask = (String, Arc<str>, oneshot::Sender<Result<bool, StoreError>>);

/// Requests waiting for the next statement of one kind.
#[derive(Default)]
struct Batch {
    queue: Mutex<Vec<Ask>>,
}

#[derive(Clone, Copy)]
enum Op {
    Claim = 0,
    Renew = 1,
}

impl Leases {
    pub fn new(db: Arc<dyn LeaseDb>, holder: &str, ttl: Duration) -> Leases {
        Leases::batched_with(db, holder, ttl, Arc::default())
    }

    /// Like [`Leases::new`], batching with every other `Leases` given the
    /// same `batches`.
    pub fn batched_with(
        db: Arc<dyn LeaseDb>,
        holder: &str,
        ttl: Duration,
        batches: Arc<Batches>,
    ) -> Leases {
        Leases {
            db,
            holder: holder.into(),
            // Renewal every third of it must stay a sensible timer.
            ttl: ttl.max(Duration::from_millis(300)),
            batches,
        }
    }

    /// Claims or renews `name` in the next batch of its kind (see the
    /// module docs); with one head, at once.
    async fn ask(&self, op: Op, name: &str) -> Result<bool, StoreError> {
        if !self.shared() {
            return match op {
                Op::Claim => self.db.claim(name, &self.holder, self.ttl).await,
                Op::Renew => self.db.renew(name, &self.holder, self.ttl).await,
            };
        }
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut q = self.batches.0[op as usize]
                .queue
                .lock()
                .map_err(|_| StoreError::Panicked)?;
            q.push((name.to_string(), self.holder.clone(), tx));
            q.len() == 1
        };
        if first {
            let me = self.clone();
            tokio::spawn(async move { me.flush(op).await });
        }
        rx.await
            .map_err(|_| StoreError::Sql(format!("lease request for {name} dropped")))?
    }

    /// Sends one batch after the window.
    async fn flush(&self, op: Op) {
        let window = (self.renew_every() / 10).min(Duration::from_millis(100));
        tokio::time::sleep(window).await;
        let items = match self.batches.0[op as usize].queue.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return,
        };
        // One statement per holder (only a head starting up has two).
        let mut by_holder: HashMap<Arc<str>, Vec<(String, oneshot::Sender<_>)>> = HashMap::new();
        for (name, holder, tx) in items {
            by_holder.entry(holder).or_default().push((name, tx));
        }
        for (holder, items) in by_holder {
            let mut names: Vec<String> = items.iter().map(|(n, _)| n.clone()).collect();
            names.sort();
            names.dedup();
            let r = match op {
                Op::Claim => self.db.claim_many(&names, &holder, self.ttl).await,
                Op::Renew => self.db.renew_many(&names, &holder, self.ttl).await,
            };
            match r {
                Ok(granted) => {
                    let granted: std::collections::HashSet<String> = granted.into_iter().collect();
                    for (n, tx) in items {
                        let _ = tx.send(Ok(granted.contains(&n)));
                    }
                }
                Err(e) => {
                    for (_, tx) in items {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// True where other heads compete for the same work.
    pub fn shared(&self) -> bool {
        self.db.shared()
    }

    /// This head's ID.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often holders renew, and how often heads look for work whose
    /// holder is gone.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Claims `name` for this head; `None` if another head holds it. The
    /// lease is renewed until [`Held::release`] or drop.
    pub async fn claim(&self, name: &str) -> Result<Option<Held>, StoreError> {
        let started = Instant::now();
        let ok = tokio::time::timeout(self.renew_every(), self.ask(Op::Claim, name))
            .await
            .map_err(|_| StoreError::Sql(format!("claiming the lease {name} timed out")))??;
        if !ok {
            return Ok(None);
        }
        let held = Held {
            name: name.to_string(),
            leases: self.clone(),
            lost: CancellationToken::new(),
            stop: CancellationToken::new(),
            released: false,
        };
        if self.shared() {
            tokio::spawn(renew(
                self.clone(),
                name.to_string(),
                started + self.ttl,
                held.lost.clone(),
                held.stop.clone(),
            ));
        } else {
            // The only head: nobody can take the work over, so nothing is
            // fenced (a busy runtime must not stop work); the expiry only
            // keeps the status honest.
            tokio::spawn(keep_local(
                self.clone(),
                name.to_string(),
                held.stop.clone(),
            ));
        }
        Ok(Some(held))
    }

    /// Every lease, for the status.
    pub async fn list(&self) -> Result<Vec<LeaseRow>, StoreError> {
        self.db.list().await
    }

    /// The unexpired leases named `prefix…`.
    pub async fn live(&self, prefix: &str) -> Result<Vec<LeaseRow>, StoreError> {
        self.db.live(prefix).await
    }
}

/// A claimed lease. Dropping it releases it (in the background).
pub struct Held {
    name: String,
    leases: Leases,
    lost: CancellationToken,
    stop: CancellationToken,
    released: bool,
}

impl Held {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cancelled when the lease can no longer be trusted (a renewal was
    /// refused, or none succeeded in time): the work must stop, since
    /// another head may take it over from then on.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and gives the lease up, so another head need not
    /// wait for it to expire.
    pub async fn release(mut self) {
        self.released = true;
        self.stop.cancel();
        let l = &self.leases;
        let r = tokio::time::timeout(l.renew_every(), l.db.release(&self.name, &l.holder)).await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::debug!(lease = %self.name, "lease not released; it will expire");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (l, name) = (self.leases.clone(), std::mem::take(&mut self.name));
            rt.spawn(async move {
                let _ = tokio::time::timeout(l.renew_every(), l.db.release(&name, &l.holder)).await;
            });
        }
    }
}

/// Renews a lease of the only head until `stop`, never fencing.
async fn keep_local(leases: Leases, name: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(leases.renew_every()) => {}
        }
        let _ = leases.db.renew(&name, &leases.holder, leases.ttl).await;
    }
}

/// Renews `name` every third of the TTL until `stop`; cancels `lost` as
/// soon as the lease may have expired without a renewal.
async fn renew(
    leases: Leases,
    name: String,
    mut valid_until: Instant,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let every = leases.renew_every();
    // Work stops a little before the lease ends, not at the last instant.
    let margin = leases.ttl / 10;
    let mut next = Instant::now() + every;
    loop {
        let fence = valid_until.checked_sub(margin).unwrap_or(valid_until);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(fence.into()) => {
                tracing::warn!(lease = %name, "lease not renewed in time; stopping its work");
                lost.cancel();
                return;
            }
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        let started = Instant::now();
        let left = fence.saturating_duration_since(started);
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(left, leases.ask(Op::Renew, &name)) => r,
        };
        match r {
            Ok(Ok(true)) => {
                valid_until = started + leases.ttl;
                next = started + every;
            }
            Ok(Ok(false)) => {
                tracing::warn!(lease = %name, "lease taken by another head; stopping its work");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %name, error = %e, "cannot renew a lease; retrying");
                next = Instant::now() + every / 4;
            }
            Err(_) => next = Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_head_holds_what_it_claims() {
        let db: Arc<dyn LeaseDb> = Arc::new(Local::default());
        let a = Leases::new(db.clone(), "a", Duration::from_secs(5));
        let held = a.claim("power-sampler").await.unwrap().unwrap();
        assert!(!a.shared());
        let b = Leases::new(db.clone(), "b", Duration::from_secs(5));
        assert!(b.claim("power-sampler").await.unwrap().is_none());
        let rows = a.list().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].holder, "a");
        held.release().await;
        assert!(b.claim("power-sampler").await.unwrap().is_some());
    }

    /// Leases in a fresh database of the test cluster.
    async fn pg() -> Arc<dyn LeaseDb> {
        let url = super::super::store::pg_cluster::shared().database();
        tokio::task::spawn_blocking(move || {
            use super::super::backend::Backend;
            // The backend (and its runtime) is dropped here, off the runtime.
            super::super::postgres::Pg::connect(&url, None).map(|p| p.leases())
        })
        .await
        .unwrap()
        .unwrap()
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claim_renew_expiry_and_release_on_postgres() {
        let db = pg().await;
        assert!(db.shared());
        let ttl = 300 * MS;
        // (step, call, expected)
        assert!(db.claim("w", "a", ttl).await.unwrap(), "free: a takes it");
        assert!(!db.claim("w", "b", ttl).await.unwrap(), "held: b cannot");
        assert!(db.claim("w", "a", ttl).await.unwrap(), "a again: its own");
        assert!(db.renew("w", "a", ttl).await.unwrap(), "a renews");
        assert!(
            !db.renew("w", "b", ttl).await.unwrap(),
            "b cannot renew a's"
        );
        db.release("w", "b").await.unwrap();
        let rows = db.list().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].holder, "a", "b's release left a's lease");
        assert!(rows[0].expires_in_ms > 0 && rows[0].expires_in_ms <= 300);
        // Let it expire: then anyone takes it, and a can no longer renew.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !db.claim("w", "b", ttl).await.unwrap() {
            assert!(Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(50 * MS).await;
        }
        assert!(!db.renew("w", "a", ttl).await.unwrap());
        db.release("w", "a").await.unwrap();
        assert_eq!(db.list().await.unwrap()[0].holder, "b");
        db.release("w", "b").await.unwrap();
        assert!(db.list().await.unwrap().is_empty());
        assert!(
            !db.renew("w", "b", ttl).await.unwrap(),
            "released: nothing to renew"
        );
    }

    /// The batched statements grant what the one-name ones would, on
    /// both kinds of store, and a head's batch of claims is one answer per
    /// name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_claims_and_renewals_grant_per_name() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ttl = Duration::from_secs(30);
        for db in [pg().await, Arc::new(Local::default()) as Arc<dyn LeaseDb>] {
            assert_eq!(
                db.claim_many(&names(&["a", "b"]), "h1", ttl).await.unwrap(),
                names(&["a", "b"])
            );
            assert_eq!(
                db.claim_many(&names(&["b", "c"]), "h2", ttl).await.unwrap(),
                names(&["c"])
            );
            let mut kept = db
                .renew_many(&names(&["a", "b", "c"]), "h1", ttl)
                .await
                .unwrap();
            kept.sort();
            assert_eq!(kept, names(&["a", "b"]));
        }
        // Many claims from one head in one window: each gets its own answer.
        let db = pg().await;
        let (a, b) = (Leases::new(db.clone(), "a", ttl), Leases::new(db, "b", ttl));
        let first = a.claim("console/x0").await.unwrap().expect("free");
        let asks = (0..50).map(|i| {
            let b = b.clone();
            async move { b.claim(&format!("console/x{i}")).await.unwrap().is_some() }
        });
        let got = futures_util::future::join_all(asks).await;
        assert!(!got[0], "held by a");
        assert!(got[1..].iter().all(|g| *g));
        first.release().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heads_claiming_at_once_one_wins() {
        let db = pg().await;
        for round in 0..5 {
            let name = format!("discovery/{round}");
            let claims = (0..8).map(|h| {
                let (db, name) = (db.clone(), name.clone());
                tokio::spawn(async move {
                    db.claim(&name, &format!("head{h}"), Duration::from_secs(30))
                        .await
                        .unwrap()
                })
            });
            let won = futures_util::future::join_all(claims)
                .await
                .into_iter()
                .filter(|w| *w.as_ref().unwrap())
                .count();
            assert_eq!(won, 1, "round {round}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_holder_renews_and_stops_when_its_lease_is_taken() {
        let db = pg().await;
        let a = Leases::new(db.clone(), "a", Duration::from_millis(600));
        let held = a.claim("power-sampler").await.unwrap().unwrap();
        let b = Leases::new(db.clone(), "b", Duration::from_millis(600));
        // Renewed: after several TTLs b still cannot take it.
        for _ in 0..6 {
            tokio::time::sleep(200 * MS).await;
            assert!(b.claim("power-sampler").await.unwrap().is_none());
        }
        assert!(!held.lost().is_cancelled());
        // Taken behind a's back (as by an operator): a's next renewal is
        // refused and its work told to stop.
        db.release("power-sampler", "a").await.unwrap();
        let taken = b.claim("power-sampler").await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(10), held.lost().cancelled())
            .await
            .expect("a learns it lost the lease");
        drop(held);
        tokio::time::sleep(100 * MS).await;
        assert_eq!(
            db.list().await.unwrap()[0].holder,
            "b",
            "a's drop released nothing of b's"
        );
        taken.release().await;
        assert!(db.list().await.unwrap().is_empty());
    }

    /// A database that grants a claim and then cannot be reached.
    struct Unreachable;

    impl LeaseDb for Unreachable {
        fn shared(&self) -> bool {
            true
        }
        fn claim<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> LeaseFuture<'a, bool> {
            Box::pin(async { Ok(true) })
        }
        fn renew<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> LeaseFuture<'a, bool> {
            Box::pin(async { Err(StoreError::Sql("connection refused".into())) })
        }
        fn release<'a>(&'a self, _: &'a str, _: &'a str) -> LeaseFuture<'a, ()> {
            Box::pin(async { Err(StoreError::Sql("connection refused".into())) })
        }
        fn list(&self) -> LeaseFuture<'_, Vec<LeaseRow>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    #[tokio::test]
    async fn a_holder_that_cannot_renew_stops_its_work() {
        let a = Leases::new(Arc::new(Unreachable), "a", Duration::from_millis(600));
        let held = a.claim("console/x0c0s0b0").await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(30), held.lost().cancelled())
            .await
            .expect("told to stop without a renewal");
    }
}
