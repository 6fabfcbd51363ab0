//! The iptables sync engine: what `kproxy run --proxy-mode iptables` does
//! to keep a node's rules as kube-proxy keeps them, as a sans-I/O state
//! machine (quinn-proto's shape; see [`kproxy_core::sync`]).
//!
//! The embedder compiles the rules ([`kproxy_core::sync::Compiler`] with
//! this backend's [`Layout`]) and hands them to [`Engine::sync_compiled`]
//! (or whole rulesets to [`Engine::sync`]), then runs the commands the
//! engine asks for ([`Engine::poll_command`]) one at a time, answering each
//! with its [`Outcome`] ([`Engine::handle_outcome`]), until none is left;
//! [`Engine::poll_report`] then says what the sync did. The engine decides
//! everything else: full, partial and after-failure syncs (a failure makes
//! the next sync full), restarts (a full sync reads the node's tables and
//! writes only the chains that differ), the built-in chains' jumps (checked,
//! inserted when missing), nfacct counters, the fixed chains kept by owner
//! and edited in place, stale service chains, conntrack cleanup, the
//! canary and drift repairs.
//!
//! ```
//! use std::time::Instant;
//! use kproxy_core::model::{ClusterState, IpFamily, NodeConfig};
//! use kproxy_core::profile::IptablesProfile;
//! use kproxy_core::sync::{Compiler, Outcome};
//! use kproxy_iptables::sync::{Command, Engine, Layout};
//!
//! let node = NodeConfig::new(IpFamily::V4, "node-1");
//! let mut compiler = Compiler::new();
//! let mut engine = Engine::new();
//! let now = Instant::now();
//! let targets = [(node, Layout(IptablesProfile::Current))];
//! let compiled = compiler
//!     .compile(&ClusterState::default(), &targets, engine.next_is_full(now))
//!     .unwrap();
//! engine.sync_compiled(now, &compiled);
//! let mut programs = Vec::new();
//! while let Some(cmd) = engine.poll_command(now) {
//!     programs.push(cmd.program());
//!     // A node without rules: iptables-save prints nothing, -C fails.
//!     let outcome = match cmd {
//!         Command::Check { .. } => Outcome::Failed("Bad rule".into()),
//!         _ => Outcome::Done(String::new()),
//!     };
//!     engine.handle_outcome(now, outcome);
//! }
//! assert_eq!(&programs[..2], ["iptables-save", "iptables-restore"]);
//! assert!(programs[2..].iter().all(|p| *p == "iptables"));
//! let report = engine.poll_report().unwrap();
//! assert!(report.sync().unwrap().ok());
//! assert!(!engine.next_is_full(now));
//! ```

pub mod payload;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use kproxy_core::ir::{Chain, Hook, Rule, Ruleset};
use kproxy_core::model::{IpFamily, NodeConfig};
use kproxy_core::names::ServicePortName;
use kproxy_core::owners::is_iptables_service_chain;
use kproxy_core::plan::{Plan, Release, plan_node};
use kproxy_core::profile::IptablesProfile;
use kproxy_core::sync::compiler::{FixedChains, Shares, SharesByChain, is_fixed};
use kproxy_core::sync::conntrack::{UdpState, cleanup_commands, nothing_deleted};
use kproxy_core::sync::drift::{self, ChainRef};
use kproxy_core::sync::{
    Compiled, Desired, FailureKind, FamilyReport, FullSyncs, Layouter, Outcome, Partial,
    SyncReport, adjust_counts,
};

use crate::layout::{LayoutOptions, RulesetSink, Sink, TableId, emit};
pub use payload::{CANARY, EnsureRule, IptablesSync, NAT_TOP_LEVEL};
use payload::{
    ensure_rules, iptables_full, iptables_full_against, iptables_incremental, iptables_partial,
    iptables_rewrite, iptables_rule_counts, split_restore,
};

/// This backend's layout of a release, for the incremental compiler: the
/// rules standalone (with the built-in chains' jumps), the fixed chains
/// kept by owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout(pub IptablesProfile);

impl Layouter for Layout {
    type Error = std::convert::Infallible;

    fn release(&self) -> Release {
        self.0.release()
    }

    fn layout(&self, plan: &Plan) -> Result<Ruleset, Self::Error> {
        Ok(crate::build(plan, self.options()))
    }

    fn layout_by_owner(
        &self,
        plan: &Plan,
        fixed: &FixedChains,
    ) -> Result<(Ruleset, Option<SharesByChain>), Self::Error> {
        let mut sink = SharesSink {
            rules: RulesetSink::new(plan.node.family),
            fixed,
            owner: Owner::Head,
            shares: BTreeMap::new(),
        };
        emit(plan, self.options(), &mut sink);
        Ok((sink.rules.finish(), Some(sink.shares)))
    }

    fn replaces_containers(&self) -> bool {
        false
    }
}

impl Layout {
    fn options(self) -> LayoutOptions {
        LayoutOptions {
            standalone: true,
            profile: self.0,
        }
    }
}

/// Whose rules the layout is writing.
#[derive(Debug, Clone)]
enum Owner {
    Head,
    Port(ServicePortName),
    Tail,
}

/// Collects the whole ruleset and, by owner, the rules of the fixed chains.
struct SharesSink<'a> {
    rules: RulesetSink,
    fixed: &'a FixedChains,
    owner: Owner,
    shares: SharesByChain,
}

impl SharesSink<'_> {
    fn shares(
        &mut self,
        table: &str,
        chain: &str,
        make: impl FnOnce() -> Chain,
    ) -> Option<&mut Shares> {
        if !is_fixed(self.fixed, table, chain) {
            return None;
        }
        Some(
            self.shares
                .entry((table.to_string(), chain.to_string()))
                .or_insert_with(|| Shares::new(make())),
        )
    }

    fn record(&mut self, table: &str, chain: &str, rule: &Rule, make: impl FnOnce() -> Chain) {
        let owner = self.owner.clone();
        let Some(shares) = self.shares(table, chain, make) else {
            return;
        };
        let rule = rule.clone();
        match owner {
            Owner::Head => shares.head.push(rule),
            Owner::Port(name) => shares.ports.entry(name).or_default().push(rule),
            Owner::Tail => shares.tail.push(rule),
        }
    }
}

impl Sink for SharesSink<'_> {
    fn declare(&mut self, table: TableId, chain: &str) {
        // A fixed chain without rules yet has its (empty) shares too.
        self.shares(table.name(), chain, || Chain::new(chain));
        self.rules.declare(table, chain);
    }
    fn push(&mut self, table: TableId, chain: &str, rule: Rule) {
        self.record(table.name(), chain, &rule, || Chain::new(chain));
        self.rules.push(table, chain, rule);
    }
    fn push_builtin(&mut self, table: TableId, hook: Hook, rule: Rule) {
        self.record(table.name(), hook.as_iptables(), &rule, || {
            Chain::builtin(hook)
        });
        self.rules.push_builtin(table, hook, rule);
    }
    fn owner(&mut self, owner: Option<&ServicePortName>) {
        self.owner = match owner {
            Some(name) => Owner::Port(name.clone()),
            None => Owner::Tail,
        };
    }
}

/// A command the engine asks the embedder to run, as a value: the
/// program, its arguments and its standard input ([`Command::program`],
/// [`Command::args`], [`Command::stdin`]), or any other means to the same
/// end (a netlink executor may write [`Command::Restore`]'s rules itself).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Read the node's tables: `iptables-save`. Answer with its output.
    Save {
        /// The family.
        family: IpFamily,
    },
    /// Write rules: `iptables-restore --noflush --counters -w 5` with
    /// `input` on standard input.
    Restore {
        /// The family.
        family: IpFamily,
        /// The `iptables-restore` input (shared: the engine keeps it to
        /// report the line a failure names).
        input: Arc<str>,
    },
    /// Whether a built-in chain holds a jump: `iptables -w 5 -t TABLE -C
    /// CHAIN ARGS` (a failure means it does not).
    Check {
        /// The family.
        family: IpFamily,
        /// The rule.
        rule: EnsureRule,
    },
    /// Insert a built-in chain's jump at the top: `iptables -w 5 -t TABLE
    /// -I CHAIN ARGS`.
    Insert {
        /// The family.
        family: IpFamily,
        /// The rule.
        rule: EnsureRule,
    },
    /// Whether a chain exists: `iptables -w 5 -t TABLE -S CHAIN`.
    ListChain {
        /// The family.
        family: IpFamily,
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// The nfacct counters: `nfacct list`.
    ListCounters,
    /// Create an nfacct counter: `nfacct add NAME`.
    AddCounter {
        /// The counter.
        name: String,
    },
    /// Delete conntrack entries: `conntrack ARGS` (a failure that deleted
    /// nothing is no failure).
    Conntrack {
        /// The arguments (`-D -p udp -f ipv4 ...`).
        args: Vec<String>,
    },
}

fn tool(family: IpFamily, v4: &'static str, v6: &'static str) -> &'static str {
    match family {
        IpFamily::V4 => v4,
        IpFamily::V6 => v6,
    }
}

impl Command {
    /// The program to run.
    pub fn program(&self) -> &'static str {
        match self {
            Command::Save { family } => tool(*family, "iptables-save", "ip6tables-save"),
            Command::Restore { family, .. } => {
                tool(*family, "iptables-restore", "ip6tables-restore")
            }
            Command::Check { family, .. }
            | Command::Insert { family, .. }
            | Command::ListChain { family, .. } => tool(*family, "iptables", "ip6tables"),
            Command::ListCounters | Command::AddCounter { .. } => "nfacct",
            Command::Conntrack { .. } => "conntrack",
        }
    }

    /// Its arguments.
    pub fn args(&self) -> Vec<String> {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Command::Save { .. } => Vec::new(),
            Command::Restore { .. } => words(&["--noflush", "--counters", "-w", "5"]),
            Command::Check { rule, .. } | Command::Insert { rule, .. } => {
                let op = if matches!(self, Command::Check { .. }) {
                    "-C"
                } else {
                    "-I"
                };
                let mut out = words(&["-w", "5", "-t", &rule.table, op, &rule.chain]);
                out.extend(rule.args.iter().cloned());
                out
            }
            Command::ListChain { table, chain, .. } => {
                words(&["-w", "5", "-t", table, "-S", chain])
            }
            Command::ListCounters => words(&["list"]),
            Command::AddCounter { name } => words(&["add", name]),
            Command::Conntrack { args } => args.clone(),
        }
    }

    /// Its standard input.
    pub fn stdin(&self) -> Option<&str> {
        match self {
            Command::Restore { input, .. } => Some(input.as_ref()),
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
    /// A canary check: whether kproxy's rules were still on the node (when
    /// not, the next sync is full).
    Canary {
        /// The canaries were all there.
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

/// What the engine keeps of one family.
#[derive(Debug, Default)]
struct FamilyState {
    /// The whole ruleset last applied (none after a partial sync).
    last: Option<Arc<Ruleset>>,
    /// The node configuration last synced (the printers' options).
    node: Option<NodeConfig>,
    /// The UDP service ports last applied.
    udp: UdpState,
    /// Rules per table in kproxy's chains, as last applied.
    counts: BTreeMap<String, usize>,
    /// The node-level chains as last written.
    fixed: BTreeMap<ChainRef, Chain>,
    /// The built-in chains' jump targets last ensured.
    jumps: BTreeMap<ChainRef, Vec<String>>,
    /// The built-in chains' jumps as the last full sync ensured them.
    ensure: Vec<EnsureRule>,
}

impl FamilyState {
    fn record_written(&mut self, rs: &Ruleset) {
        (self.fixed, self.jumps) = drift::node_level(rs, is_iptables_service_chain);
    }
}

/// What a family's job writes.
#[derive(Debug)]
enum Work {
    /// Whole rules; `full`: a full sync (else partial against the last
    /// whole rules, when known).
    Write { desired: Desired, full: bool },
    /// The incremental compiler's changed Services.
    Partial(Partial),
    /// A drift repair: these chains written again, these jumps ensured.
    Repair {
        chains: Vec<ChainRef>,
        jumps: Vec<ChainRef>,
    },
    /// The canary's existence.
    Canary,
}

/// One step waiting for its command's outcome.
#[derive(Debug)]
enum Step {
    Save,
    ListCounters(Vec<String>),
    AddCounter(String),
    Restore(Arc<str>),
    Check(EnsureRule),
    Insert(EnsureRule),
    ListCanary,
    Conntrack(Vec<String>),
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
    saved: Option<String>,
    plan: Option<IptablesSync>,
    /// The canary was found (canary jobs).
    found: bool,
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

/// The iptables sync engine (see the [module documentation](self)).
#[derive(Debug)]
pub struct Engine {
    families: BTreeMap<IpFamily, FamilyState>,
    full_syncs: FullSyncs,
    /// Partial syncs write only the chains that changed (see
    /// [`payload::iptables_partial`]); default: kube-proxy's partial syncs.
    pub minimal_partial_syncs: bool,
    /// A full sync on a node without kproxy's chains is written in
    /// `iptables-restore` inputs of at most this many rules (see
    /// [`payload::split_restore`]); 0: in one.
    pub fresh_batch_rules: usize,
    /// nfacct counters known to exist.
    nfacct: BTreeSet<String>,
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

/// Creates the nfacct counters `restore` names (`--nfacct-name`).
fn nfacct_names(restore: &str) -> Vec<String> {
    let mut names: Vec<String> = restore
        .split("--nfacct-name ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

impl Engine {
    /// An engine that has applied nothing yet (its first sync is full).
    pub fn new() -> Self {
        Self {
            families: BTreeMap::new(),
            full_syncs: FullSyncs::new(),
            minimal_partial_syncs: false,
            fresh_batch_rules: 5000,
            nfacct: BTreeSet::new(),
            batches: VecDeque::new(),
            waiting: None,
            reports: VecDeque::new(),
        }
    }

    /// Whether the next sync at `now` is full (the first one, one after a
    /// failure or a lost canary, or an hour after the last full one).
    pub fn next_is_full(&self, now: Instant) -> bool {
        self.full_syncs.next_is_full(now)
    }

    /// Makes the next sync full.
    pub fn force_full_sync(&mut self) {
        self.full_syncs.force();
    }

    /// The whole rules last applied for `family` (none after a partial
    /// sync).
    pub fn last(&self, family: IpFamily) -> Option<&Ruleset> {
        self.families.get(&family).and_then(|f| f.last.as_deref())
    }

    /// What the last syncs wrote of `family` that the drift check reads
    /// back: the node-level chains and the built-in chains' jump targets.
    pub fn written(&self, family: IpFamily) -> Option<drift::Written> {
        let s = self.families.get(&family)?;
        Some(drift::Written::new(&s.fixed, s.jumps.clone()))
    }

    /// The families synced.
    pub fn families(&self) -> impl Iterator<Item = IpFamily> + '_ {
        self.families.keys().copied()
    }

    /// Records that the node already holds `desired` (loaded by other
    /// means): the next sync is partial.
    pub fn assume_applied(&mut self, now: Instant, desired: &[Desired]) {
        for d in desired {
            let state = self.families.entry(d.node.family).or_default();
            state.node = Some(d.node.clone());
            state.last = Some(Arc::clone(&d.ruleset));
            state.udp = d.udp.clone();
            state.record_written(&d.ruleset);
            state.ensure = ensure_rules(&d.ruleset, print_options(&d.node)).unwrap_or_default();
        }
        self.full_syncs.assume_full(now);
    }

    /// Starts a sync of whole rulesets (one per family): full when
    /// [`Self::next_is_full`], else partial against the rules last applied.
    pub fn sync(&mut self, now: Instant, desired: &[Desired]) {
        let full = self.next_is_full(now);
        let jobs = desired
            .iter()
            .map(|d| {
                job(
                    d.node.family,
                    Work::Write {
                        desired: d.clone(),
                        full,
                    },
                    full,
                )
            })
            .collect();
        self.push_batch(BatchKind::Sync { full }, jobs);
    }

    /// Starts a sync of what the incremental compiler compiled (one entry
    /// per family; ask it for full results when [`Self::next_is_full`]).
    pub fn sync_compiled(&mut self, _now: Instant, compiled: &[Compiled]) {
        let full = compiled.iter().any(|c| matches!(c, Compiled::Full(_)));
        let jobs = compiled
            .iter()
            .map(|c| match c {
                Compiled::Full(d) => job(
                    d.node.family,
                    Work::Write {
                        desired: d.clone(),
                        full: true,
                    },
                    true,
                ),
                Compiled::Partial(p) => {
                    let mut j = job(p.node.family, Work::Partial(p.clone()), false);
                    j.report.services = p.services;
                    j
                }
            })
            .collect();
        self.push_batch(BatchKind::Sync { full }, jobs);
    }

    /// Starts kube-proxy's canary check: whether every family's mangle
    /// `KUBE-PROXY-CANARY` chain is still there (when not, someone flushed
    /// the tables: the next sync is full).
    pub fn check_canary(&mut self) {
        let jobs = self
            .families
            .keys()
            .map(|f| job(*f, Work::Canary, false))
            .collect();
        self.push_batch(BatchKind::Canary, jobs);
    }

    /// Starts a drift repair of `family`: `chains` (node-level, as last
    /// written) written again whole, the jumps of the built-in `jumps`
    /// ensured again. A failure makes the next sync full.
    pub fn repair(&mut self, family: IpFamily, chains: &[ChainRef], jumps: &[ChainRef]) {
        let work = Work::Repair {
            chains: chains.to_vec(),
            jumps: jumps.to_vec(),
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

    /// The next command to run (`None`: nothing to do until the outcome of
    /// the last one is handed over, or at all).
    pub fn poll_command(&mut self, now: Instant) -> Option<Command> {
        // Bounded: every round pops a step, advances a job's phase or ends
        // a job or batch.
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
        let fail = |job: &mut Job, kind: FailureKind, message: String, input: Option<String>| {
            job.report.error = Some(kproxy_core::sync::Failure {
                kind,
                message,
                input,
            });
            job.steps.clear();
            job.phase = Phase::Finish;
        };
        let partial = !job.report.full;
        match (step, outcome) {
            (Step::Save, Outcome::Done(text)) => job.saved = Some(text),
            (Step::Save, Outcome::Failed(m)) => {
                // Written as on a node without kproxy's rules.
                job.report.warnings.push(kproxy_core::sync::Failure {
                    kind: FailureKind::Other,
                    message: format!("cannot list the node's rules: {m}"),
                    input: None,
                });
                job.saved = Some(String::new());
            }
            (Step::ListCounters(names), Outcome::Done(list)) => {
                let mut adds: Vec<Step> = Vec::new();
                for name in names {
                    if !list.contains(&format!("= {name};")) {
                        adds.push(Step::AddCounter(name.clone()));
                    }
                    self.nfacct.insert(name);
                }
                for s in adds.into_iter().rev() {
                    job.steps.push_front(s);
                }
            }
            (Step::ListCounters(_) | Step::AddCounter(_), Outcome::Failed(m)) => {
                fail(job, FailureKind::Other, m, None)
            }
            (Step::Restore(input), Outcome::Failed(m)) => {
                let kind = match job.work {
                    Work::Repair { .. } => FailureKind::Repair,
                    Work::Partial(_) => FailureKind::Write { partial: true },
                    _ => FailureKind::Write { partial },
                };
                fail(job, kind, m, Some(input.to_string()))
            }
            (Step::Check(rule), Outcome::Failed(_)) => job.steps.push_front(Step::Insert(rule)),
            (Step::Insert(_), Outcome::Failed(m)) => fail(job, FailureKind::Other, m, None),
            (Step::ListCanary, o) => job.found = o.is_ok(),
            (Step::Conntrack(_), Outcome::Failed(m)) if !nothing_deleted(&m) => {
                job.report.conntrack_failures.push(m)
            }
            _ => {}
        }
    }

    /// What the engine finished, in order.
    pub fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    /// Whether commands are pending (a sync, check or repair not finished).
    pub fn is_busy(&self) -> bool {
        !self.batches.is_empty()
    }

    /// Advances the front job past its phase (its steps are done).
    fn advance(&mut self, now: Instant) {
        let Some(job) = self.batches.front_mut().and_then(|b| b.jobs.front_mut()) else {
            return;
        };
        match job.phase {
            Phase::Start => {
                job.phase = Phase::Plan;
                let reads = match &job.work {
                    Work::Write { full, .. } => {
                        *full
                            || self
                                .families
                                .get(&job.family)
                                .is_none_or(|s| s.last.is_none())
                    }
                    _ => false,
                };
                if reads {
                    job.steps.push_back(Step::Save);
                }
            }
            Phase::Plan => {
                job.phase = Phase::Written;
                plan_job(
                    job,
                    self.families.entry(job.family).or_default(),
                    &mut self.nfacct,
                    self.minimal_partial_syncs,
                    self.fresh_batch_rules,
                );
            }
            Phase::Written => {
                job.phase = Phase::Finish;
                let state = self.families.entry(job.family).or_default();
                written(job, state);
            }
            Phase::Finish => {
                job.report.duration = now.saturating_duration_since(job.started.unwrap_or(now));
                let Some(batch) = self.batches.front_mut() else {
                    return;
                };
                let Some(job) = batch.jobs.pop_front() else {
                    return;
                };
                match (&batch.kind, &job.work) {
                    (BatchKind::Canary, _) => batch.present &= job.found,
                    (BatchKind::Repair, _) if !job.report.ok() => self.full_syncs.force(),
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
        saved: None,
        plan: None,
        found: false,
    }
}

fn command(family: IpFamily, step: &Step) -> Command {
    match step {
        Step::Save => Command::Save { family },
        Step::ListCounters(_) => Command::ListCounters,
        Step::AddCounter(name) => Command::AddCounter { name: name.clone() },
        Step::Restore(input) => Command::Restore {
            family,
            input: Arc::clone(input),
        },
        Step::Check(rule) => Command::Check {
            family,
            rule: rule.clone(),
        },
        Step::Insert(rule) => Command::Insert {
            family,
            rule: rule.clone(),
        },
        Step::ListCanary => Command::ListChain {
            family,
            table: "mangle".into(),
            chain: CANARY.into(),
        },
        Step::Conntrack(args) => Command::Conntrack { args: args.clone() },
    }
}

/// Plans the job's writes (its reads done) and queues their steps.
fn plan_job(
    job: &mut Job,
    state: &mut FamilyState,
    nfacct: &mut BTreeSet<String>,
    minimal: bool,
    fresh_batch_rules: usize,
) {
    let planned = match &job.work {
        Work::Write { desired, full } => {
            let opts = print_options(&desired.node);
            let base = if *full { None } else { state.last.as_ref() };
            let mut fresh = false;
            let plan = match (base, &job.saved) {
                (Some(last), _) => iptables_partial(last, &desired.ruleset, opts, minimal),
                (None, saved) => {
                    let saved = saved.as_deref().unwrap_or("");
                    let existing = crate::parse::saved_chain_names(saved);
                    fresh = !saved.is_empty()
                        && !existing
                            .iter()
                            .any(|c| *c == crate::names::KUBE_SERVICES || *c == CANARY);
                    // After a restart the node holds most rules already:
                    // write only the chains that differ.
                    let held = if fresh || saved.is_empty() {
                        None
                    } else {
                        crate::parse::parse(saved, Some(job.family))
                            .map_err(|e| {
                                job.report.warnings.push(kproxy_core::sync::Failure {
                                    kind: FailureKind::Other,
                                    message: format!("cannot read the node's rules: {e}"),
                                    input: None,
                                })
                            })
                            .ok()
                    };
                    match held {
                        Some(node) => iptables_full_against(&desired.ruleset, &node, opts),
                        None => {
                            let existing: Vec<String> =
                                existing.iter().map(|c| c.to_string()).collect();
                            iptables_full(&desired.ruleset, &existing, opts)
                        }
                    }
                }
            };
            if *full {
                nfacct.clear();
            }
            plan.map(|p| (p, fresh))
        }
        Work::Partial(p) => iptables_incremental(
            &p.before,
            &p.after,
            &p.fixed_changes,
            |t, c| p.is_fixed(t, c),
            print_options(&p.node),
        )
        .map(|p| (p, false)),
        Work::Repair { chains, jumps } => {
            let node = state
                .node
                .clone()
                .unwrap_or_else(|| NodeConfig::new(job.family, ""));
            let write: Vec<(&str, &Chain)> = chains
                .iter()
                .filter_map(|k| state.fixed.get(k).map(|c| (k.0.as_str(), c)))
                .collect();
            let restore = if write.is_empty() {
                Ok(String::new())
            } else {
                iptables_rewrite(&write, print_options(&node))
            };
            let ensure = state
                .ensure
                .iter()
                .filter(|r| jumps.iter().any(|(t, c)| *t == r.table && *c == r.chain))
                .cloned()
                .collect();
            restore.map(|restore| {
                (
                    IptablesSync {
                        restore,
                        ensure,
                        ..Default::default()
                    },
                    false,
                )
            })
        }
        Work::Canary => {
            job.steps.push_back(Step::ListCanary);
            return;
        }
    };
    let (mut plan, fresh) = match planned {
        Ok(p) => p,
        Err(e) => {
            job.report.error = Some(kproxy_core::sync::Failure {
                kind: FailureKind::Other,
                message: e.to_string(),
                input: None,
            });
            job.phase = Phase::Finish;
            return;
        }
    };
    let unknown: Vec<String> = nfacct_names(&plan.restore)
        .into_iter()
        .filter(|n| !nfacct.contains(n))
        .collect();
    if !unknown.is_empty() {
        job.steps.push_back(Step::ListCounters(unknown));
    }
    let total: usize = plan.rules_written.values().sum();
    job.report.bytes = plan.restore.len();
    let restore = std::mem::take(&mut plan.restore);
    if fresh && fresh_batch_rules > 0 && total > fresh_batch_rules {
        for input in split_restore(&restore, fresh_batch_rules) {
            job.steps.push_back(Step::Restore(input.into()));
        }
    } else if !restore.is_empty() || matches!(job.work, Work::Write { .. }) {
        job.steps.push_back(Step::Restore(restore.into()));
    }
    let ensure = match &job.work {
        Work::Write { full: true, .. } | Work::Repair { .. } => plan.ensure.clone(),
        _ => Vec::new(),
    };
    for rule in ensure {
        job.steps.push_back(Step::Check(rule));
    }
    job.report.rules_written = plan.rules_written.clone();
    job.plan = Some(plan);
}

/// The job's writes succeeded: the state follows, conntrack is cleaned up.
fn written(job: &mut Job, state: &mut FamilyState) {
    let family = job.family;
    let conntrack = match &job.work {
        Work::Write { desired, full } => {
            state.node = Some(desired.node.clone());
            state.counts = iptables_rule_counts(&desired.ruleset);
            state.last = Some(Arc::clone(&desired.ruleset));
            state.record_written(&desired.ruleset);
            if *full && let Some(plan) = &job.plan {
                state.ensure = plan.ensure.clone();
            }
            job.report.rewrote_node_level = true;
            let conntrack = cleanup_commands(family, &state.udp, &desired.udp);
            state.udp = desired.udp.clone();
            conntrack
        }
        Work::Partial(p) => {
            adjust_counts(
                &mut state.counts,
                &iptables_rule_counts(&p.before),
                &iptables_rule_counts(&p.after),
            );
            for f in &p.fixed_changes {
                let key = (f.table.clone(), f.after.name.to_string());
                job.report.edited.push((key.clone(), f.after.rules.len()));
                state.fixed.insert(key, f.after.clone());
            }
            let conntrack = cleanup_commands(family, &p.udp_before, &p.udp_after);
            for name in p.udp_before.keys() {
                state.udp.remove(name);
            }
            state
                .udp
                .extend(p.udp_after.iter().map(|(k, v)| (k.clone(), v.clone())));
            // The whole ruleset is no longer what the node holds.
            state.last = None;
            conntrack
        }
        Work::Repair { .. } | Work::Canary => return,
    };
    job.report.counts = state.counts.clone();
    job.steps.extend(conntrack.into_iter().map(Step::Conntrack));
}

#[cfg(test)]
mod tests;
