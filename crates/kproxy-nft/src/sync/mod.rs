//! The nftables sync engine: what `kproxy run --proxy-mode nftables` does
//! to keep a node's `kube-proxy` tables as kube-proxy keeps them, as a
//! sans-I/O state machine (see [`kproxy_core::sync`]).
//!
//! Driven as `kproxy_iptables::sync::Engine` is: hand it what the
//! incremental compiler compiled ([`Engine::sync_compiled`], with this
//! backend's [`Layout`]), run the commands it asks for
//! ([`Engine::poll_command`]) and answer each ([`Engine::handle_outcome`]).
//! Every transaction carries its operations (for a netlink
//! executor) and their `nft -f` text ([`crate::Op`]). The engine decides full and partial
//! transactions, the stale chains (flushed by a sync, deleted by a later
//! one once [`Engine::stale_chain_delay`] passed), conntrack cleanup, the
//! canary and drift repairs.
//!
//! ```
//! use std::time::Instant;
//! use kproxy_core::model::{ClusterState, IpFamily, NodeConfig};
//! use kproxy_core::profile::NftablesProfile;
//! use kproxy_core::sync::{Compiler, Outcome};
//! use kproxy_nft::sync::{Command, Engine, Layout};
//!
//! let node = NodeConfig::new(IpFamily::V4, "node-1");
//! let mut compiler = Compiler::new();
//! let mut engine = Engine::new();
//! let now = Instant::now();
//! let targets = [(node, Layout(NftablesProfile::Current))];
//! let compiled = compiler
//!     .compile(&ClusterState::default(), &targets, engine.next_is_full(now))
//!     .unwrap();
//! engine.sync_compiled(now, &compiled);
//! // A new engine reads the node's table first: there is none.
//! let cmd = engine.poll_command(now).unwrap();
//! assert_eq!(cmd.args(), ["-j", "list", "table", "ip", "kube-proxy"]);
//! engine.handle_outcome(now, Outcome::Failed("No such file or directory".into()));
//! let cmd = engine.poll_command(now).unwrap();
//! assert_eq!(cmd.program(), "nft");
//! assert_eq!(cmd.args(), ["-f", "-"]);
//! assert!(cmd.stdin().unwrap().starts_with(
//!     "add table ip kube-proxy\ndelete table ip kube-proxy\nadd table ip kube-proxy"
//! ));
//! engine.handle_outcome(now, Outcome::Done(String::new()));
//! assert_eq!(engine.poll_command(now), None);
//! assert!(engine.poll_report().unwrap().sync().unwrap().ok());
//! ```

pub mod payload;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_core::diff::changes;
use kproxy_core::ir::{Chain, Ruleset, Table};
use kproxy_core::model::{IpFamily, NodeConfig};
use kproxy_core::plan::{Plan, Release, plan_node};
use kproxy_core::profile::NftablesProfile;
use kproxy_core::sync::conntrack::{
    UdpState, cleanup_commands, listing_args, needed, nothing_deleted, worth_listing,
};
use kproxy_core::sync::drift::{self, ChainRef};
use kproxy_core::sync::{
    Compiled, Desired, Failure, FailureKind, FamilyReport, FullSyncs, Layouter, Outcome, Partial,
    SyncReport, adjust_counts,
};

use crate::NftError;
use crate::anon::AnonDigests;
use crate::names::TABLE;
use crate::names::is_service_chain;
pub use payload::{NftSync, Printed};
use payload::{
    as_written, nft_changes, nft_delete_stale, nft_first, nft_full, nft_object_counts, nft_partial,
    nft_rewrite,
};

/// The default [`Engine::first_sync_chunk`]: operations per transaction
/// of a first sync into a node without a table.
pub const FIRST_SYNC_CHUNK: usize = 20_000;

/// This backend's layout of a release, for the incremental compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout(pub NftablesProfile);

impl Layouter for Layout {
    type Error = NftError;

    fn release(&self) -> Release {
        self.0.release()
    }

    fn layout(&self, plan: &Plan) -> Result<Ruleset, NftError> {
        crate::ruleset_profile(plan, self.0)
    }
}

/// A command the engine asks the embedder to run, as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Run a transaction: `nft -f -` with its text on standard input (or
    /// its operations sent over netlink, in one batch).
    Transaction {
        /// The family.
        family: IpFamily,
        /// What it is for.
        purpose: Purpose,
        /// The operations and their text (shared: the engine keeps them to
        /// report the line a failure names).
        transaction: Arc<Printed>,
    },
    /// Read the node's table before the first sync of this engine (a
    /// restarted agent): `nft -j list table ip|ip6 TABLE`. Answer with its
    /// JSON; a failure makes the sync write the whole table (when it says
    /// `No such file or directory`, no such table: in several transactions
    /// when big, see [`Engine::first_sync_chunk`]). The sync then writes
    /// only what differs from what the node holds (a dormant table, an
    /// unfinished first sync, is written whole). (nft before 1.0.7 leaves the table's and chains' comments and
    /// the sets' `dynamic` flag out of its JSON: where they are missing,
    /// the engine takes what it would write.)
    ReadTable {
        /// The family.
        family: IpFamily,
        /// The table.
        table: String,
        /// The anonymous sets the sync would write, by digest: a netlink
        /// reader ([`crate::decode::TableDecoder::knowing`]) need not dump
        /// the elements of a set kproxy wrote with one of these.
        known: Arc<AnonDigests>,
    },
    /// The tables of a family: `nft list tables ip|ip6`.
    ListTables {
        /// The family.
        family: IpFamily,
    },
    /// Delete conntrack entries: `conntrack ARGS` (a failure that deleted
    /// nothing is no failure).
    Conntrack {
        /// The arguments (`-D -p udp -f ipv4 ...`).
        args: Vec<String>,
    },
    /// List the family's UDP conntrack entries: `conntrack -L -p udp -f
    /// FAMILY`; answer with its standard output. Asked before several
    /// deletions, so that only those that match an entry run (each
    /// `conntrack -D` reads the whole conntrack table). A failure runs them
    /// all.
    ListConntrack {
        /// The family.
        family: IpFamily,
    },
}

/// What a transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// A sync's rules.
    Sync,
    /// Deleting stale chains.
    StaleCleanup,
    /// A drift repair.
    Repair,
}

fn family_word(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

impl Command {
    /// The program to run.
    pub fn program(&self) -> &'static str {
        match self {
            Command::Transaction { .. }
            | Command::ListTables { .. }
            | Command::ReadTable { .. } => "nft",
            Command::Conntrack { .. } | Command::ListConntrack { .. } => "conntrack",
        }
    }

    /// Its arguments.
    pub fn args(&self) -> Vec<String> {
        match self {
            Command::Transaction { .. } => vec!["-f".into(), "-".into()],
            Command::ReadTable { family, table, .. } => vec![
                "-j".into(),
                "list".into(),
                "table".into(),
                family_word(*family).into(),
                table.clone(),
            ],
            Command::ListTables { family } => {
                vec!["list".into(), "tables".into(), family_word(*family).into()]
            }
            Command::Conntrack { args } => args.clone(),
            Command::ListConntrack { family } => listing_args(*family),
        }
    }

    /// Its standard input.
    pub fn stdin(&self) -> Option<&str> {
        match self {
            Command::Transaction { transaction, .. } => Some(&transaction.text),
            _ => None,
        }
    }
}

/// What the engine finished.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Report {
    /// A sync.
    Sync(SyncReport),
    /// A canary check: whether every family's `kube-proxy` table was still
    /// there (when not, the next sync is full).
    Canary {
        /// The tables were all there.
        present: bool,
    },
    /// A drift repair of one family (when it failed, the next sync is
    /// full).
    Repair(FamilyReport),
}

impl Report {
    /// The sync's report, if this is one.
    pub fn sync(&self) -> Option<&SyncReport> {
        match self {
            Report::Sync(r) => Some(r),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct FamilyState {
    last: Option<Arc<Ruleset>>,
    node: Option<NodeConfig>,
    /// Chains flushed by an earlier sync, to delete, and when.
    stale: BTreeMap<String, Instant>,
    udp: UdpState,
    counts: BTreeMap<String, usize>,
    fixed: BTreeMap<ChainRef, Chain>,
    jumps: BTreeMap<ChainRef, Vec<String>>,
    /// A first sync written in several transactions failed: the node
    /// holds a dormant, unfinished table, which the next write replaces
    /// whole ([`nft_full`]).
    unfinished: bool,
}

impl FamilyState {
    fn record_written(&mut self, rs: &Ruleset) {
        (self.fixed, self.jumps) = drift::node_level(rs, is_service_chain);
    }
}

#[derive(Debug)]
enum Work {
    Write { desired: Desired, full: bool },
    Partial(Partial),
    Repair { chains: Vec<ChainRef> },
    Canary,
}

#[derive(Debug)]
enum Step {
    Stale(Vec<String>, Arc<Printed>),
    Write(Arc<Printed>, Purpose),
    ListTables,
    ReadTable(String, Arc<AnonDigests>),
    Conntrack(Vec<String>),
    ListConntrack(Vec<Vec<String>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Plan,
    Written,
    Finish,
}

#[derive(Debug)]
struct Job {
    family: IpFamily,
    work: Work,
    phase: Phase,
    steps: VecDeque<Step>,
    started: Option<Instant>,
    report: FamilyReport,
    /// The stale chains' deletion failed (the write is full).
    cleanup_failed: bool,
    /// The write planned: partial (stale and revived chains) or full.
    planned: Option<Option<NftSync>>,
    found: bool,
    /// The node's table as read before a restarted agent's first sync.
    held: Option<Table>,
    /// The read found no table: a first sync may be written in several
    /// transactions ([`Engine::first_sync_chunk`]).
    absent: bool,
    /// The write is several transactions ([`nft_first`]).
    chunked: bool,
}

#[derive(Debug)]
enum BatchKind {
    Sync { full: bool },
    Canary,
    Repair,
}

#[derive(Debug)]
struct Batch {
    kind: BatchKind,
    jobs: VecDeque<Job>,
    done: Vec<FamilyReport>,
    started: Option<Instant>,
    present: bool,
}

/// The nftables sync engine (see the [module documentation](self)).
#[derive(Debug)]
pub struct Engine {
    families: BTreeMap<IpFamily, FamilyState>,
    full_syncs: FullSyncs,
    /// How long a stale chain stays (flushed) before a sync deletes it
    /// (kube-proxy: 1 s).
    pub stale_chain_delay: Duration,
    /// A first sync into a node that holds no table of the family (its
    /// read found none) is written as several transactions of at most
    /// this many operations ([`nft_first`]: the table dormant until the
    /// last wakes it, so that packets see it whole or not at all), when
    /// the table has more; 0: always one transaction ([`nft_full`]). A
    /// node that holds a table is always written in one transaction.
    /// Default [`FIRST_SYNC_CHUNK`].
    pub first_sync_chunk: usize,
    batches: VecDeque<Batch>,
    waiting: Option<Step>,
    reports: VecDeque<Report>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// The printer options for `node`.
pub fn print_options(node: &NodeConfig) -> crate::PrintOptions {
    crate::PrintOptions {
        mark_style: plan_node(node).mark.style,
        ..Default::default()
    }
}

fn object_counts(t: &Table) -> BTreeMap<String, usize> {
    nft_object_counts(t)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

impl Engine {
    /// An engine that has applied nothing yet (its first sync is full).
    pub fn new() -> Self {
        Self {
            families: BTreeMap::new(),
            full_syncs: FullSyncs::new(),
            stale_chain_delay: Duration::from_secs(1),
            first_sync_chunk: FIRST_SYNC_CHUNK,
            batches: VecDeque::new(),
            waiting: None,
            reports: VecDeque::new(),
        }
    }

    /// Whether the next sync at `now` is full.
    pub fn next_is_full(&self, now: Instant) -> bool {
        self.full_syncs.next_is_full(now)
    }

    /// Makes the next sync full.
    pub fn force_full_sync(&mut self) {
        self.full_syncs.force();
    }

    /// The whole rules last applied for `family`.
    pub fn last(&self, family: IpFamily) -> Option<&Ruleset> {
        self.families.get(&family).and_then(|f| f.last.as_deref())
    }

    /// What the last syncs wrote of `family` that the drift check reads back.
    pub fn written(&self, family: IpFamily) -> Option<drift::Written> {
        let s = self.families.get(&family)?;
        Some(drift::Written::new(&s.fixed, s.jumps.clone()))
    }

    /// The families synced.
    pub fn families(&self) -> impl Iterator<Item = IpFamily> + '_ {
        self.families.keys().copied()
    }

    /// The stale chains waiting for deletion (family, chain).
    pub fn stale_chains(&self) -> Vec<(IpFamily, String)> {
        self.families
            .iter()
            .flat_map(|(f, s)| s.stale.keys().map(move |c| (*f, c.clone())))
            .collect()
    }

    /// When the oldest stale chain may be deleted (by the next sync).
    pub fn stale_timeout(&self) -> Option<Instant> {
        self.families
            .values()
            .flat_map(|s| s.stale.values())
            .min()
            .map(|t| *t + self.stale_chain_delay)
    }

    /// Records that the node already holds `desired`: the next sync is
    /// partial.
    pub fn assume_applied(&mut self, now: Instant, desired: &[Desired]) {
        for d in desired {
            let state = self.families.entry(d.node.family).or_default();
            state.node = Some(d.node.clone());
            state.last = Some(Arc::clone(&d.ruleset));
            state.udp = d.udp.clone();
            state.record_written(&d.ruleset);
        }
        self.full_syncs.assume_full(now);
    }

    /// Starts a sync of whole rulesets (one per family).
    pub fn sync(&mut self, now: Instant, desired: &[Desired]) {
        let full = self.next_is_full(now);
        let jobs = desired
            .iter()
            .map(|d| {
                let work = Work::Write {
                    desired: d.clone(),
                    full,
                };
                job(d.node.family, work, full)
            })
            .collect();
        self.push_batch(BatchKind::Sync { full }, jobs);
    }

    /// Starts a sync of what the incremental compiler compiled.
    pub fn sync_compiled(&mut self, _now: Instant, compiled: &[Compiled]) {
        let full = compiled.iter().any(|c| matches!(c, Compiled::Full(_)));
        let jobs = compiled
            .iter()
            .map(|c| match c {
                Compiled::Full(d) => {
                    let work = Work::Write {
                        desired: d.clone(),
                        full: true,
                    };
                    job(d.node.family, work, true)
                }
                Compiled::Partial(p) => {
                    let mut j = job(p.node.family, Work::Partial(p.clone()), false);
                    j.report.services = p.services;
                    j
                }
            })
            .collect();
        self.push_batch(BatchKind::Sync { full }, jobs);
    }

    /// Starts kube-proxy's canary check: every family's `kube-proxy`
    /// table still there.
    pub fn check_canary(&mut self) {
        let jobs = self
            .families
            .keys()
            .map(|f| job(*f, Work::Canary, false))
            .collect();
        self.push_batch(BatchKind::Canary, jobs);
    }

    /// Starts a drift repair of `family`: `chains` written again whole.
    pub fn repair(&mut self, family: IpFamily, chains: &[ChainRef]) {
        let work = Work::Repair {
            chains: chains.to_vec(),
        };
        self.push_batch(
            BatchKind::Repair,
            VecDeque::from([job(family, work, false)]),
        );
    }

    fn push_batch(&mut self, kind: BatchKind, jobs: VecDeque<Job>) {
        self.batches.push_back(Batch {
            kind,
            jobs,
            done: Vec::new(),
            started: None,
            present: true,
        });
    }

    /// Whether commands are pending.
    pub fn is_busy(&self) -> bool {
        !self.batches.is_empty()
    }

    /// The next command to run (`None`: nothing until the last one's
    /// outcome is handed over, or at all).
    pub fn poll_command(&mut self, now: Instant) -> Option<Command> {
        loop {
            if self.waiting.is_some() {
                return None;
            }
            let batch = self.batches.front_mut()?;
            batch.started.get_or_insert(now);
            let Some(job) = batch.jobs.front_mut() else {
                self.finish_batch(now);
                continue;
            };
            job.started.get_or_insert(now);
            if let Some(step) = job.steps.pop_front() {
                let cmd = command(job.family, &step);
                self.waiting = Some(step);
                return Some(cmd);
            }
            self.advance(now);
        }
    }

    /// The outcome of the command [`Self::poll_command`] last returned.
    pub fn handle_outcome(&mut self, _now: Instant, outcome: Outcome) {
        let Some(step) = self.waiting.take() else {
            return;
        };
        let Some(job) = self.batches.front_mut().and_then(|b| b.jobs.front_mut()) else {
            return;
        };
        let state = self.families.entry(job.family).or_default();
        let failure = |kind, message, input: &Printed| Failure {
            kind,
            message,
            input: Some(input.text.clone()),
        };
        match (step, outcome) {
            (Step::Stale(chains, _), Outcome::Done(_)) => {
                for c in &chains {
                    state.stale.remove(c);
                }
            }
            (Step::Stale(_, tx), Outcome::Failed(m)) => {
                state.stale.clear();
                let f = failure(FailureKind::StaleCleanup, m, &tx);
                if matches!(job.work, Work::Partial(_)) {
                    job.report.error = Some(Failure {
                        message: format!(
                            "deleting stale chains failed: the next sync is full ({})",
                            f.message
                        ),
                        ..f
                    });
                    job.steps.clear();
                    job.phase = Phase::Finish;
                } else {
                    job.report.warnings.push(f);
                    job.cleanup_failed = true;
                }
            }
            (Step::Write(tx, _), Outcome::Failed(m)) => {
                let kind = match job.work {
                    Work::Repair { .. } => FailureKind::Repair,
                    _ => FailureKind::Write {
                        partial: !job.report.full,
                    },
                };
                if !matches!(job.work, Work::Repair { .. }) {
                    state.stale.clear();
                }
                if job.chunked {
                    state.unfinished = true;
                }
                job.report.error = Some(failure(kind, m, &tx));
                job.steps.clear();
                job.phase = Phase::Finish;
            }
            (Step::ListTables, Outcome::Done(out)) => {
                let fam = family_word(job.family);
                let want = format!("table {fam} {TABLE}");
                job.found = out.lines().any(|l| l.trim() == want);
            }
            (Step::ListTables, Outcome::Failed(_)) => job.found = false,
            (Step::ReadTable(..), Outcome::Failed(m)) => job.absent = no_such_table(&m),
            (Step::ReadTable(name, _), Outcome::Done(json)) => {
                match crate::parse::parse_json(&json) {
                    Ok(dump) => {
                        job.held = dump.ruleset.tables.into_iter().find(|t| t.name == name);
                        job.absent = job.held.is_none();
                        // Dormant: an earlier agent's first sync that did not
                        // finish. Replaced whole.
                        if dump.flagged.contains(&name) {
                            job.held = None;
                            state.unfinished = true;
                        }
                    }
                    Err(e) => job.report.warnings.push(Failure {
                        kind: FailureKind::Other,
                        message: format!("cannot read the node's table {name}: {e}"),
                        input: None,
                    }),
                }
            }
            (Step::ListConntrack(commands), outcome) => {
                let commands = match outcome {
                    Outcome::Done(listing) => needed(commands, &listing),
                    Outcome::Failed(_) => commands,
                };
                job.steps.extend(commands.into_iter().map(Step::Conntrack));
            }
            (Step::Conntrack(_), Outcome::Failed(m)) if !nothing_deleted(&m) => {
                job.report.conntrack_failures.push(m)
            }
            _ => {}
        }
    }

    /// Answers the [`Command::ReadTable`] that [`Self::poll_command`] last
    /// returned with the table already read (by netlink and
    /// [`crate::decode::TableDecoder`], say) instead of `nft -j` output:
    /// `None` when the node holds no such table (a first sync into it may
    /// then go in chunks, see [`Self::first_sync_chunk`]). A table with
    /// flags (dormant: an unfinished chunked first sync) must not be
    /// answered this way: answer with `nft -j` output, which says so, and
    /// the engine replaces it whole. Any other command waiting is left
    /// waiting.
    ///
    /// ```
    /// use std::time::Instant;
    /// use kproxy_core::model::{ClusterState, IpFamily, NodeConfig};
    /// use kproxy_core::profile::NftablesProfile;
    /// use kproxy_core::sync::{Compiled, Compiler};
    /// use kproxy_nft::sync::{Command, Engine, Layout};
    ///
    /// let node = NodeConfig::new(IpFamily::V4, "node-1");
    /// let targets = [(node, Layout(NftablesProfile::Current))];
    /// let now = Instant::now();
    /// let compiled = Compiler::new()
    ///     .compile(&ClusterState::default(), &targets, true)
    ///     .unwrap();
    /// let Compiled::Full(desired) = &compiled[0] else { unreachable!() };
    /// // The node already holds what the engine would write (a restarted
    /// // agent): read, nothing written.
    /// let held = desired.ruleset.tables[0].clone();
    /// let mut engine = Engine::new();
    /// engine.sync_compiled(now, &compiled);
    /// let cmd = engine.poll_command(now).unwrap();
    /// assert!(matches!(cmd, Command::ReadTable { .. }));
    /// engine.handle_table(now, Some(held));
    /// assert_eq!(engine.poll_command(now), None);
    /// assert!(engine.poll_report().unwrap().sync().unwrap().ok());
    /// ```
    pub fn handle_table(&mut self, _now: Instant, table: Option<Table>) {
        match self.waiting.take() {
            Some(Step::ReadTable(name, _)) => self.read_table(name, table),
            other => self.waiting = other,
        }
    }

    fn read_table(&mut self, name: String, table: Option<Table>) {
        let Some(job) = self.batches.front_mut().and_then(|b| b.jobs.front_mut()) else {
            return;
        };
        job.held = table.filter(|t| t.name == name);
        job.absent = job.held.is_none();
    }

    /// What the engine finished, in order.
    pub fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    fn advance(&mut self, now: Instant) {
        let delay = self.stale_chain_delay;
        let chunk = self.first_sync_chunk;
        let Some(job) = self.batches.front_mut().and_then(|b| b.jobs.front_mut()) else {
            return;
        };
        let state = self.families.entry(job.family).or_default();
        match job.phase {
            Phase::Start => {
                job.phase = Phase::Plan;
                // Stale chains flushed long enough ago: deleted in a
                // transaction of their own, before the main one.
                let cleans = match &job.work {
                    Work::Write { full, .. } => !*full,
                    Work::Partial(_) => true,
                    _ => false,
                };
                let due: Vec<String> = state
                    .stale
                    .iter()
                    .filter(|(_, t)| now.saturating_duration_since(**t) >= delay)
                    .map(|(c, _)| c.clone())
                    .collect();
                if cleans && !due.is_empty() {
                    let tx = stale_transaction(job.family, &due, state.node.as_ref());
                    job.steps.push_back(Step::Stale(due, Arc::new(tx)));
                }
                // A restarted agent: the node may hold the table already.
                if let Work::Write { desired, .. } = &job.work
                    && state.last.is_none()
                    && !state.unfinished
                    && let Some(t) = desired.ruleset.tables.first()
                {
                    let single = print_options(&desired.node).single_dnat;
                    let known = AnonDigests::of_table(job.family, t, single);
                    job.steps
                        .push_back(Step::ReadTable(t.name.clone(), Arc::new(known)));
                }
            }
            Phase::Plan => {
                job.phase = Phase::Written;
                if let Err(e) = plan_job(job, state, chunk) {
                    job.report.error = Some(Failure {
                        kind: FailureKind::Other,
                        message: e.to_string(),
                        input: None,
                    });
                    job.steps.clear();
                    job.phase = Phase::Finish;
                }
            }
            Phase::Written => {
                job.phase = Phase::Finish;
                written(job, state, now);
            }
            Phase::Finish => {
                job.report.duration = now.saturating_duration_since(job.started.unwrap_or(now));
                let Some(batch) = self.batches.front_mut() else {
                    return;
                };
                let Some(job) = batch.jobs.pop_front() else {
                    return;
                };
                match &batch.kind {
                    BatchKind::Canary => batch.present &= job.found,
                    BatchKind::Repair if !job.report.ok() => self.full_syncs.force(),
                    _ => {}
                }
                batch.done.push(job.report);
            }
        }
    }

    fn finish_batch(&mut self, now: Instant) {
        let Some(batch) = self.batches.pop_front() else {
            return;
        };
        let report = match batch.kind {
            BatchKind::Sync { full } => {
                let report = SyncReport {
                    full,
                    duration: now.saturating_duration_since(batch.started.unwrap_or(now)),
                    families: batch.done,
                };
                self.full_syncs.synced(&report, now);
                Report::Sync(report)
            }
            BatchKind::Canary => {
                if !batch.present {
                    self.full_syncs.force();
                }
                Report::Canary {
                    present: batch.present,
                }
            }
            BatchKind::Repair => match batch.done.into_iter().next() {
                Some(r) => Report::Repair(r),
                None => return,
            },
        };
        self.reports.push_back(report);
    }
}

fn job(family: IpFamily, work: Work, full: bool) -> Job {
    Job {
        family,
        work,
        phase: Phase::Start,
        steps: VecDeque::new(),
        started: None,
        report: FamilyReport::new(family, full),
        cleanup_failed: false,
        planned: None,
        found: false,
        held: None,
        absent: false,
        chunked: false,
    }
}

fn command(family: IpFamily, step: &Step) -> Command {
    match step {
        Step::Stale(_, tx) => Command::Transaction {
            family,
            purpose: Purpose::StaleCleanup,
            transaction: Arc::clone(tx),
        },
        Step::Write(tx, purpose) => Command::Transaction {
            family,
            purpose: *purpose,
            transaction: Arc::clone(tx),
        },
        Step::ListTables => Command::ListTables { family },
        Step::ReadTable(table, known) => Command::ReadTable {
            family,
            table: table.clone(),
            known: Arc::clone(known),
        },
        Step::Conntrack(args) => Command::Conntrack { args: args.clone() },
        Step::ListConntrack(_) => Command::ListConntrack { family },
    }
}

/// Whether a failed read of the table says there is none (nft's and the
/// kernel's ENOENT).
fn no_such_table(message: &str) -> bool {
    message.contains("No such file or directory")
}

/// Plans the job's transactions and queues them (`chunk`: see
/// [`Engine::first_sync_chunk`]).
fn plan_job(job: &mut Job, state: &mut FamilyState, chunk: usize) -> Result<(), NftError> {
    let family = job.family;
    match &job.work {
        Work::Write { desired, full } => {
            let opts = print_options(&desired.node);
            let Some(next) = desired.ruleset.tables.first() else {
                return Err(NftError::Unsupported {
                    what: "a ruleset without a table".into(),
                });
            };
            let last_table = if *full || job.cleanup_failed {
                None
            } else {
                state.last.as_ref().and_then(|l| l.tables.first())
            };
            let mut partial = match (last_table, job.held.as_mut()) {
                (Some(last), _) => nft_partial(last, next, opts)?,
                // After a restart: only what differs from the node's table.
                (None, Some(held)) => {
                    as_written(held, next);
                    nft_partial(held, next, opts)?
                }
                (None, None) => None,
            };
            // A node without a table (and no unfinished one of ours): in
            // several transactions when big.
            let fresh = job.absent && last_table.is_none() && !state.unfinished;
            let txs = match partial.as_mut() {
                Some(p) => vec![std::mem::replace(&mut p.transaction, empty(family))],
                None if fresh => nft_first(next, opts, chunk)?,
                None => vec![nft_full(next, opts)?],
            };
            job.chunked = txs.len() > 1;
            for tx in txs.into_iter().filter(|t| !t.is_empty()) {
                job.report.bytes += tx.text.len();
                job.steps
                    .push_back(Step::Write(Arc::new(tx), Purpose::Sync));
            }
            job.planned = Some(partial);
        }
        Work::Partial(p) => {
            let opts = print_options(&p.node);
            let (Some(before), Some(after)) = (p.before.tables.first(), p.after.tables.first())
            else {
                return Err(NftError::Unsupported {
                    what: "a ruleset without a table".into(),
                });
            };
            let mut sync = nft_changes(&changes(before, after), before, after, opts)?;
            let tx = std::mem::replace(&mut sync.transaction, empty(family));
            if !tx.is_empty() {
                job.report.bytes = tx.text.len();
                job.steps
                    .push_back(Step::Write(Arc::new(tx), Purpose::Sync));
            }
            job.planned = Some(Some(sync));
        }
        Work::Repair { chains } => {
            let node = state
                .node
                .clone()
                .unwrap_or_else(|| NodeConfig::new(family, ""));
            let write: Vec<(&str, &Chain)> = chains
                .iter()
                .filter_map(|k| state.fixed.get(k).map(|c| (k.0.as_str(), c)))
                .collect();
            if let Some((table, _)) = write.first() {
                let chains: Vec<&Chain> = write.iter().map(|(_, c)| *c).collect();
                let tx = nft_rewrite(family, table, &chains, print_options(&node))?;
                job.steps
                    .push_back(Step::Write(Arc::new(tx), Purpose::Repair));
            }
        }
        Work::Canary => job.steps.push_back(Step::ListTables),
    }
    Ok(())
}

/// The job's transaction succeeded: the state follows, conntrack is
/// cleaned up.
fn written(job: &mut Job, state: &mut FamilyState, now: Instant) {
    let family = job.family;
    let planned = job.planned.take();
    let conntrack = match &job.work {
        Work::Write { desired, .. } => {
            match planned.flatten() {
                Some(p) => {
                    for c in &p.revived_chains {
                        state.stale.remove(c);
                    }
                    for c in p.stale_chains {
                        state.stale.insert(c, now);
                    }
                }
                None => state.stale.clear(),
            }
            if let Some(next) = desired.ruleset.tables.first() {
                state.counts = object_counts(next);
            }
            state.last = Some(Arc::clone(&desired.ruleset));
            state.unfinished = false;
            state.record_written(&desired.ruleset);
            state.node = Some(desired.node.clone());
            job.report.rewrote_node_level = true;
            let conntrack = cleanup_commands(family, &state.udp, &desired.udp);
            state.udp = desired.udp.clone();
            conntrack
        }
        Work::Partial(p) => {
            if let Some(sync) = planned.flatten() {
                for c in &sync.revived_chains {
                    state.stale.remove(c);
                }
                for c in sync.stale_chains {
                    state.stale.insert(c, now);
                }
            }
            if let (Some(b), Some(a)) = (p.before.tables.first(), p.after.tables.first()) {
                adjust_counts(&mut state.counts, &object_counts(b), &object_counts(a));
            }
            let conntrack = cleanup_commands(family, &p.udp_before, &p.udp_after);
            for name in p.udp_before.keys() {
                state.udp.remove(name);
            }
            state
                .udp
                .extend(p.udp_after.iter().map(|(k, v)| (k.clone(), v.clone())));
            state.last = None;
            conntrack
        }
        Work::Repair { .. } | Work::Canary => return,
    };
    job.report.counts = state.counts.clone();
    if worth_listing(&conntrack) {
        job.steps.push_back(Step::ListConntrack(conntrack));
    } else {
        job.steps.extend(conntrack.into_iter().map(Step::Conntrack));
    }
}

/// The stale chains' deletion, printed (a name the printer refuses, which
/// kproxy's layouts never make, leaves the transaction empty: nothing
/// deleted, the chain stays flushed).
fn stale_transaction(family: IpFamily, chains: &[String], node: Option<&NodeConfig>) -> Printed {
    let opts = node.map(print_options).unwrap_or_default();
    nft_delete_stale(family, TABLE, chains, opts).unwrap_or_else(|_| empty(family))
}

/// No operation on kube-proxy's table.
fn empty(family: IpFamily) -> Printed {
    Printed {
        transaction: crate::Transaction::new(family, TABLE),
        text: String::new(),
        options: crate::PrintOptions::default(),
    }
}

#[cfg(test)]
mod tests;
