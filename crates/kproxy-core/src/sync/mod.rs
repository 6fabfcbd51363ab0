//! What both backends' sync engines share (pure: no I/O, no clocks).
//!
//! kproxy's node agent is sans-I/O, in quinn-proto's shape: each backend
//! owns an engine (`kproxy_iptables::sync::Engine`,
//! `kproxy_nft::sync::Engine`) that the embedder feeds with what it compiled
//! ([`compiler::Compiled`]), the time (`Instant`s passed in) and the results
//! of the commands it asked for ([`Outcome`]); the engine answers with
//! commands as values and says when the next sync is due ([`Timers`]). This
//! module holds the parts both engines share:
//!
//! * [`compiler`]: the incremental compiler: per family a plan cache that
//!   re-plans only the changed Services, and the layout of only those,
//!   before and after, the fixed chains kept by owner;
//! * [`conntrack`]: the UDP conntrack entries a rule change leaves stale;
//! * [`drift`]: whether the node still holds what was written;
//! * [`isolate`]: a Service whose rules the tool rejects is left out, so
//!   that the others keep syncing; [`tool`] reads the tools' errors;
//! * [`latency`]: network programming latency (from the EndpointSlices'
//!   trigger times, passed in) and kube-proxy's change counts;
//! * [`Timers`]: kube-proxy's BoundedFrequencyRunner (minSyncPeriod,
//!   syncPeriod) and the hourly full sync;
//! * [`SyncReport`]: what one sync did, per family, for the embedder's logs
//!   and metrics.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kproxy_core::sync::Timers;
//!
//! let start = Instant::now();
//! let mut t = Timers::new(Duration::from_secs(1), Duration::from_secs(30));
//! assert_eq!(t.poll_timeout(), None, "never synced: due at once");
//! assert!(t.due(start));
//! t.sync_started(start);
//! t.changed();
//! assert_eq!(t.poll_timeout(), Some(start + Duration::from_secs(1)));
//! assert!(!t.due(start + Duration::from_millis(500)));
//! assert!(t.due(start + Duration::from_secs(1)));
//! // A sync with changes checks for drift once a syncPeriod passed.
//! assert!(!t.drift_check_due(start + Duration::from_secs(1), start));
//! assert!(t.drift_check_due(start + Duration::from_secs(30), start));
//! ```

pub mod compiler;
pub mod conntrack;
pub mod drift;
pub mod isolate;
pub mod latency;
pub mod tool;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::model::IpFamily;

pub use compiler::{Compiled, Compiler, Desired, FixedChange, Layouter, Partial};

/// kube-proxy's `proxyutil.FullSyncPeriod`: a full sync at least this often.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// What a command the engine asked for did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded, printing this.
    Done(String),
    /// It failed, with this message (the tool's standard error).
    Failed(String),
}

impl Outcome {
    /// Whether the command succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }
}

/// When a sync must be full: the first one, the one after a failed sync
/// (or a lost canary, a failed drift repair), and one at least every
/// [`FULL_SYNC_PERIOD`].
///
/// ```
/// use std::time::Instant;
/// use kproxy_core::sync::{FULL_SYNC_PERIOD, FullSyncs, SyncReport};
///
/// let now = Instant::now();
/// let mut f = FullSyncs::new();
/// assert!(f.next_is_full(now));
/// f.synced(&SyncReport { full: true, ..Default::default() }, now);
/// assert!(!f.next_is_full(now));
/// assert!(f.next_is_full(now + FULL_SYNC_PERIOD));
/// f.force();
/// assert!(f.next_is_full(now));
/// ```
#[derive(Debug, Clone)]
pub struct FullSyncs {
    forced: bool,
    last_full: Option<Instant>,
}

impl Default for FullSyncs {
    fn default() -> Self {
        Self::new()
    }
}

impl FullSyncs {
    /// Nothing synced yet: the next sync is full.
    pub fn new() -> Self {
        Self {
            forced: true,
            last_full: None,
        }
    }

    /// Whether the sync at `now` is full.
    pub fn next_is_full(&self, now: Instant) -> bool {
        self.forced
            || self
                .last_full
                .is_none_or(|t| now.saturating_duration_since(t) >= FULL_SYNC_PERIOD)
    }

    /// Makes the next sync full.
    pub fn force(&mut self) {
        self.forced = true;
    }

    /// The node holds the whole rules as of `now` (written by other means).
    pub fn assume_full(&mut self, now: Instant) {
        self.forced = false;
        self.last_full = Some(now);
    }

    /// A sync ended at `now`: a failure makes the next one full.
    pub fn synced(&mut self, report: &SyncReport, now: Instant) {
        if report.ok() {
            if report.full {
                self.last_full = Some(now);
            }
            self.forced = false;
        } else {
            self.forced = true;
        }
    }
}

/// When syncs are due: kube-proxy's BoundedFrequencyRunner (a change is
/// applied at most `min_sync_period` after the previous sync started, and
/// a sync runs at least every `sync_period`).
#[derive(Debug, Clone)]
pub struct Timers {
    /// minSyncPeriod.
    pub min_sync_period: Duration,
    /// syncPeriod.
    pub sync_period: Duration,
    last_sync: Option<Instant>,
    dirty: bool,
    last_drift_check: Option<Instant>,
}

impl Timers {
    /// Nothing synced yet: the first sync is due at once.
    pub fn new(min_sync_period: Duration, sync_period: Duration) -> Self {
        Self {
            min_sync_period,
            sync_period,
            last_sync: None,
            dirty: true,
            last_drift_check: None,
        }
    }

    /// Something changed: a sync is due `min_sync_period` after the last.
    pub fn changed(&mut self) {
        self.dirty = true;
    }

    /// Whether changes wait for a sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// When the next sync is due (`None`: now, nothing was synced yet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let last = self.last_sync?;
        let period = if self.dirty {
            self.min_sync_period.min(self.sync_period)
        } else {
            self.sync_period
        };
        Some(last + period)
    }

    /// Whether a sync is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.poll_timeout().is_none_or(|t| now >= t)
    }

    /// A sync starts at `now` and takes every change seen so far.
    pub fn sync_started(&mut self, now: Instant) {
        self.last_sync = Some(now);
        self.dirty = false;
    }

    /// When the last sync started.
    pub fn last_sync(&self) -> Option<Instant> {
        self.last_sync
    }

    /// Whether the sync due at `now` checks the node for drift first: a
    /// periodic one (nothing changed), or one after changes kept every sync
    /// busy for a `sync_period` since the last check (the first check is
    /// due a `sync_period` after `start`, the first sync being no periodic
    /// one).
    pub fn drift_check_due(&self, now: Instant, start: Instant) -> bool {
        let last = self.last_drift_check.unwrap_or(start);
        !self.dirty || now.saturating_duration_since(last) >= self.sync_period
    }

    /// The drift check ran at `now`.
    pub fn drift_checked(&mut self, now: Instant) {
        self.last_drift_check = Some(now);
    }
}

/// What kind of write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The rules' write of a sync (`partial`: of a partial sync).
    Write {
        /// The sync (or repair) was partial.
        partial: bool,
    },
    /// The deletion of nftables stale chains.
    StaleCleanup,
    /// A drift repair's write.
    Repair,
    /// Another step (nfacct counters, a built-in chain's jump).
    Other,
}

/// A command that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which write it was.
    pub kind: FailureKind,
    /// The tool's message.
    pub message: String,
    /// The input it was given, if any.
    pub input: Option<String>,
}

/// One family's part of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyReport {
    /// The family.
    pub family: IpFamily,
    /// It was a full sync.
    pub full: bool,
    /// From its first command to its end.
    pub duration: Duration,
    /// Why it failed (`None`: applied).
    pub error: Option<Failure>,
    /// Other failures that did not fail it (stale chains kept, ...).
    pub warnings: Vec<Failure>,
    /// Objects of the rules now on the node, by kind (iptables: rules per
    /// table; nftables: chains, rules, sets, maps, elements).
    pub counts: BTreeMap<String, usize>,
    /// Rules written, per table (iptables).
    pub rules_written: BTreeMap<String, usize>,
    /// Bytes of the rules' input written.
    pub bytes: usize,
    /// Services changed (a partial sync).
    pub services: usize,
    /// Conntrack deletions that failed (their messages).
    pub conntrack_failures: Vec<String>,
    /// The node-level chains were all written as the rules say (a whole
    /// ruleset applied).
    pub rewrote_node_level: bool,
    /// Node-level chains edited in place by a partial sync, with their
    /// rule count now.
    pub edited: Vec<(drift::ChainRef, usize)>,
}

impl FamilyReport {
    /// A report for `family` that did nothing yet.
    pub fn new(family: IpFamily, full: bool) -> Self {
        Self {
            family,
            full,
            duration: Duration::ZERO,
            error: None,
            warnings: Vec::new(),
            counts: BTreeMap::new(),
            rules_written: BTreeMap::new(),
            bytes: 0,
            services: 0,
            conntrack_failures: Vec::new(),
            rewrote_node_level: false,
            edited: Vec::new(),
        }
    }

    /// Whether the family's rules were applied.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// It was a full sync (for some family).
    pub full: bool,
    /// Each family's part, in the order given.
    pub families: Vec<FamilyReport>,
    /// From the first command to the last.
    pub duration: Duration,
}

impl SyncReport {
    /// Whether every family applied.
    pub fn ok(&self) -> bool {
        self.families.iter().all(FamilyReport::ok)
    }
}

/// `counts` minus `before` plus `after` (what a partial sync changed).
pub fn adjust_counts(
    counts: &mut BTreeMap<String, usize>,
    before: &BTreeMap<String, usize>,
    after: &BTreeMap<String, usize>,
) {
    for (k, v) in before {
        let c = counts.entry(k.clone()).or_default();
        *c = c.saturating_sub(*v);
    }
    for (k, v) in after {
        *counts.entry(k.clone()).or_default() += v;
    }
}
