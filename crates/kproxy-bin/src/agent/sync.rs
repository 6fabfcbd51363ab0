//! The shell around the backends' sync engines
//! ([`kproxy_iptables::sync::Engine`], [`kproxy_nft::sync::Engine`]): the
//! [`Proxier`] hands them the rules, runs the commands they ask for with
//! the node's tools, and turns their reports into logs and metrics. Every
//! sync decision (full or partial, what to write, stale chains, conntrack,
//! the canary, drift repairs) is the engines'.
//!
//! A failed apply leaves the previous rules in place (`iptables-restore`
//! and `nft -f` commit atomically), is logged with the offending line,
//! counted, and makes the next sync full.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_core::ir::Ruleset;
use kproxy_core::model::IpFamily;
use kproxy_core::sync::drift::{self, ChainRef, ChainSeen, Repair, Written};
use kproxy_core::sync::{Compiled, FailureKind, FamilyReport, Outcome};
use tracing::{error, info, warn};

pub use kproxy_core::sync::{Desired, FULL_SYNC_PERIOD};

use super::exec;
use super::isolate::{Rejected, rejected};
use super::metrics::Metrics;
use super::nfnl;
use kproxy_core::sync::tool::{error_line, payload_line, split_args};
use kproxy_iptables::sync as ipt;
use kproxy_nft::anon::AnonDigests;
use kproxy_nft::sync as nft;

/// Which backend applies the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// iptables-restore.
    Iptables,
    /// nft -f.
    Nftables,
}

impl Mode {
    /// `iptables` / `nftables`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// It was a full sync (for some family).
    pub full: bool,
    /// Errors (empty: every family applied).
    pub errors: Vec<String>,
    /// How long it took.
    pub duration: Duration,
    /// The input lines the tools rejected (see [`super::isolate`]).
    pub rejected: Vec<Rejected>,
}

#[derive(Debug)]
enum Engine {
    Iptables(Box<ipt::Engine>),
    Nftables(Box<nft::Engine>),
}

/// What an engine finished, either backend.
enum Finished {
    Sync(kproxy_core::sync::SyncReport),
    Canary(bool),
    Repair(FamilyReport),
}

/// The node's tools running what the engine asks for.
#[derive(Debug)]
pub struct Proxier {
    mode: Mode,
    engine: Engine,
    /// How long an nftables stale chain waits before it is deleted
    /// (kube-proxy: 1 s).
    pub stale_chain_delay: Duration,
    /// nftables transactions go as one netlink batch (`nft -f` only when
    /// the encoder or the kernel cannot); false: `nft -f` for everything.
    pub nft_netlink: bool,
    /// The nftables first sync into a node without a table goes as
    /// transactions of at most this many commands (0: one); see
    /// [`nft::Engine::first_sync_chunk`].
    pub nft_first_sync_chunk: usize,
    /// With [`Self::nft_netlink`]: a restarted agent reads the node's
    /// nftables table by netlink ([`nfnl::read_table`]; `nft -j list table`
    /// when it cannot); false: `nft -j` always.
    pub nft_netlink_read: bool,
    /// iptables partial syncs write only the chains that changed; default:
    /// kube-proxy's partial syncs.
    pub minimal_partial_syncs: bool,
    /// The drift check reads node-level chains of at least this many rules
    /// by a sample of their rules while kproxy has not written them since
    /// it last dumped them (default [`drift::SAMPLED_CHAIN_RULES`]).
    pub sampled_chain_rules: usize,
    /// Whether `iptables` is iptables-nft, once known.
    iptables_nft: Option<bool>,
    /// The nf_tables ruleset generation at which the drift check last
    /// found the node holding what kproxy wrote.
    verified: Option<u32>,
    /// Long node-level chains as last read back, not written since: a
    /// sample of their rules' handles and their rule count, per family.
    samples: BTreeMap<IpFamily, BTreeMap<ChainRef, (Vec<u64>, usize)>>,
}

/// The outcome of running `program args` with `stdin`.
fn run(program: &str, args: &[String], stdin: Option<&str>) -> Outcome {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match exec::run(program, &args, stdin) {
        Ok(out) => Outcome::Done(out),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Applies an nftables transaction as one netlink batch (see
/// [`super::netlink`]), falling back to `nft -f` (counted, logged) when the
/// encoder cannot express a command or the kernel answers EOPNOTSUPP. A
/// refused batch fails like `nft -f` fails on a line (`netlink:N:`, line N
/// of the transaction's text), so that the engine names the command.
fn apply_netlink(family: IpFamily, tx: &nft::Printed, metrics: Option<&Metrics>) -> Outcome {
    use super::netlink::{ApplyError, apply};
    match apply(std::slice::from_ref(&tx.transaction), tx.options) {
        Ok(_) => Outcome::Done(String::new()),
        Err(e) if e.wants_fallback() => {
            warn!(%family, "nftables by netlink: {e}; applying with nft -f");
            if let Some(m) = metrics {
                m.nftables_netlink_fallback(family);
            }
            run("nft", &["-f".into(), "-".into()], Some(&tx.text))
        }
        Err(ApplyError::Refused {
            op: Some((_, i)),
            err,
            ..
        }) => Outcome::Failed(format!("netlink:{}:1: Error: {err}", i + 1)),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Reads the node's nftables table by netlink (see [`nfnl::read_table`]);
/// `Err` (logged, counted as a netlink fallback) when it cannot, and the
/// caller reads it with `nft -j` instead.
fn read_table_netlink(
    family: IpFamily,
    table: &str,
    known: &Arc<AnonDigests>,
    metrics: Option<&Metrics>,
) -> Result<Option<kproxy_core::ir::Table>, ()> {
    let started = Instant::now();
    match nfnl::read_table(family, table, nfnl::RuleDump::default(), Some(known)) {
        Ok(held) => {
            info!(
                %family,
                table,
                elapsed = ?started.elapsed(),
                found = held.is_some(),
                sets_taken_by_digest = held.as_ref().map_or(0, |r| r.taken),
                sets_dumped = held.as_ref().map_or(0, |r| r.dumped),
                "read the node's nftables table by netlink"
            );
            Ok(held.map(|r| r.table))
        }
        Err(e) => {
            warn!(%family, table, "reading the node's nftables table by netlink: {e}; reading it with nft -j");
            if let Some(m) = metrics {
                m.nftables_netlink_fallback(family);
            }
            Err(())
        }
    }
}

/// `message`, with the input line it names.
fn describe_failure(message: &str, input: Option<&str>) -> String {
    let line =
        input.and_then(|p| error_line(message).and_then(|n| payload_line(p, n).map(|l| (n, l))));
    match line {
        Some((n, line)) => format!("{message} (input line {n}: {line})"),
        None => message.to_string(),
    }
}

impl Proxier {
    /// A proxier that has applied nothing yet (its first sync is full).
    pub fn new(mode: Mode) -> Self {
        let engine = match mode {
            Mode::Iptables => Engine::Iptables(Box::default()),
            Mode::Nftables => Engine::Nftables(Box::default()),
        };
        Self {
            mode,
            engine,
            stale_chain_delay: Duration::from_secs(1),
            nft_netlink: true,
            nft_first_sync_chunk: nft::FIRST_SYNC_CHUNK,
            nft_netlink_read: true,
            minimal_partial_syncs: false,
            sampled_chain_rules: drift::SAMPLED_CHAIN_RULES,
            iptables_nft: None,
            verified: None,
            samples: BTreeMap::new(),
        }
    }

    /// Hands the settings to the engine and runs what it asks for until
    /// it is idle; returns what it finished.
    fn drive(&mut self, metrics: Option<&Metrics>) -> Vec<Finished> {
        let mut out = Vec::new();
        let iptables_nft = self.mode == Mode::Iptables && self.uses_nf_tables();
        match &mut self.engine {
            Engine::Iptables(e) => {
                e.minimal_partial_syncs = self.minimal_partial_syncs;
                e.iptables_nft = iptables_nft;
                while let Some(cmd) = e.poll_command(Instant::now()) {
                    let outcome = run(cmd.program(), &cmd.args(), cmd.stdin());
                    e.handle_outcome(Instant::now(), outcome);
                }
                while let Some(r) = e.poll_report() {
                    out.push(match r {
                        ipt::Report::Sync(s) => Finished::Sync(s),
                        ipt::Report::Canary { present } => Finished::Canary(present),
                        ipt::Report::Repair(f) => Finished::Repair(f),
                        _ => continue,
                    });
                }
            }
            Engine::Nftables(e) => {
                e.stale_chain_delay = self.stale_chain_delay;
                e.first_sync_chunk = self.nft_first_sync_chunk;
                while let Some(cmd) = e.poll_command(Instant::now()) {
                    let outcome = match &cmd {
                        nft::Command::Transaction {
                            family,
                            transaction,
                            ..
                        } if self.nft_netlink => apply_netlink(*family, transaction, metrics),
                        nft::Command::ReadTable {
                            family,
                            table,
                            known,
                            ..
                        } if self.nft_netlink && self.nft_netlink_read => {
                            match read_table_netlink(*family, table, known, metrics) {
                                Ok(held) => {
                                    e.handle_table(Instant::now(), held);
                                    continue;
                                }
                                Err(()) => run(cmd.program(), &cmd.args(), cmd.stdin()),
                            }
                        }
                        _ => run(cmd.program(), &cmd.args(), cmd.stdin()),
                    };
                    e.handle_outcome(Instant::now(), outcome);
                }
                while let Some(r) = e.poll_report() {
                    out.push(match r {
                        nft::Report::Sync(s) => Finished::Sync(s),
                        nft::Report::Canary { present } => Finished::Canary(present),
                        nft::Report::Repair(f) => Finished::Repair(f),
                        _ => continue,
                    });
                }
            }
        }
        out
    }

    /// The rules last applied for `family`.
    pub fn last(&self, family: IpFamily) -> Option<&Ruleset> {
        match &self.engine {
            Engine::Iptables(e) => e.last(family),
            Engine::Nftables(e) => e.last(family),
        }
    }

    fn written(&self, family: IpFamily) -> Option<Written> {
        match &self.engine {
            Engine::Iptables(e) => e.written(family),
            Engine::Nftables(e) => e.written(family),
        }
    }

    fn families(&self) -> Vec<IpFamily> {
        match &self.engine {
            Engine::Iptables(e) => e.families().collect(),
            Engine::Nftables(e) => e.families().collect(),
        }
    }

    /// Records that the node already holds `desired` (loaded by other
    /// means, e.g. a benchmark's first load into an empty namespace): the
    /// next sync is partial.
    pub fn assume_applied(&mut self, desired: &[Desired]) {
        let now = Instant::now();
        match &mut self.engine {
            Engine::Iptables(e) => e.assume_applied(now, desired),
            Engine::Nftables(e) => e.assume_applied(now, desired),
        }
        for d in desired {
            self.samples.remove(&d.node.family);
        }
    }

    /// kube-proxy's canary: whether what the last syncs wrote is still on
    /// the node (iptables: the mangle `KUBE-PROXY-CANARY` chain of every
    /// family; nftables: the `kube-proxy` table of every family). When it is
    /// gone (someone flushed the tables), the next sync is full.
    pub fn check_canary(&mut self) -> bool {
        match &mut self.engine {
            Engine::Iptables(e) => e.check_canary(),
            Engine::Nftables(e) => e.check_canary(),
        }
        let mut present = true;
        for f in self.drive(None) {
            if let Finished::Canary(p) = f {
                present &= p;
            }
        }
        if !present {
            warn!("kproxy's rules are gone from the node: the next sync is full");
        }
        present
    }

    /// The drift check of every family (see [`drift`]): reads back what
    /// the last syncs wrote and has the engine repair what is missing, by
    /// writing the node-level chains short of rules and ensuring the
    /// missing jumps again, or by making the next sync full. Returns the
    /// repairs decided (one per family checked; none when the next sync is
    /// full anyway).
    pub fn repair_drift(&mut self, metrics: &Metrics) -> Vec<Repair> {
        if self.next_is_full() {
            return Vec::new();
        }
        let families = self.families();
        // Nothing committed since the last check found all in place.
        let generation = self.generation();
        if generation.is_some() && generation == self.verified {
            return families.iter().map(|_| Repair::Nothing).collect();
        }
        let mut out = Vec::new();
        for family in families {
            let Some(written) = self.written(family) else {
                continue;
            };
            if written.chains.is_empty() {
                continue;
            }
            let seen = match self.read_back(family, &written) {
                Ok(seen) => {
                    self.resample(family, &written, &seen);
                    seen
                }
                Err(e) => {
                    warn!(%family, "drift check: cannot read the node's rules: {e}");
                    continue;
                }
            };
            let repair = drift::decide(&written, &seen);
            match &repair {
                Repair::Nothing => {}
                Repair::Full(reason) => {
                    warn!(%family, "kproxy's rules changed behind its back ({reason}): the next sync is full");
                    self.force_full_sync();
                }
                Repair::Rewrite { chains, jumps } => {
                    warn!(%family, ?chains, ?jumps, "kproxy's rules changed behind its back: writing them again");
                    match &mut self.engine {
                        Engine::Iptables(e) => e.repair(family, chains, jumps),
                        Engine::Nftables(e) => e.repair(family, chains),
                    }
                    for f in self.drive(Some(metrics)) {
                        if let Finished::Repair(r) = f {
                            self.record_failures(&r, metrics);
                            if let Some(err) = &r.error {
                                let text = describe_failure(&err.message, err.input.as_deref());
                                error!(%family, "drift repair failed: {text}");
                            }
                        }
                    }
                }
            }
            out.push(repair);
        }
        if out.iter().all(|r| *r == Repair::Nothing) {
            self.verified = generation;
        }
        out
    }

    /// The nf_tables ruleset generation, when kproxy's tables are nf_tables
    /// ones (nftables mode, iptables-nft).
    fn generation(&mut self) -> Option<u32> {
        if !self.uses_nf_tables() {
            return None;
        }
        nfnl::generation().ok()
    }

    /// Whether kproxy's rules are in nf_tables (nftables mode, or iptables
    /// being iptables-nft).
    fn uses_nf_tables(&mut self) -> bool {
        match self.mode {
            Mode::Nftables => true,
            Mode::Iptables => *self.iptables_nft.get_or_insert_with(exec::iptables_is_nft),
        }
    }

    /// Keeps a sample of the long chains just dumped whole and found as
    /// written (a chain read by its sample keeps it).
    fn resample(&mut self, family: IpFamily, written: &Written, seen: &[Option<ChainSeen>]) {
        let min = self.sampled_chain_rules.max(1);
        let samples = self.samples.entry(family).or_default();
        for (key, s) in written.to_read().into_iter().zip(seen) {
            let Some(s) = s else { continue };
            let want = written.chains.get(&key).copied();
            if s.handles.len() >= min && want == Some(s.rules) {
                samples.insert(key, (drift::sample(&s.handles), s.rules));
            } else if !s.handles.is_empty() || want != Some(s.rules) {
                samples.remove(&key);
            }
        }
    }

    /// What the node holds of `written`'s chains.
    fn read_back(
        &mut self,
        family: IpFamily,
        written: &Written,
    ) -> Result<Vec<Option<ChainSeen>>, String> {
        let chains = written.to_read();
        let builtin =
            |t: &str, c: &str| written.jumps.contains_key(&(t.to_string(), c.to_string()));
        if self.uses_nf_tables() {
            let samples = self.samples.get(&family);
            let reads: Vec<nfnl::ChainRead> = chains
                .iter()
                .map(|(t, c)| nfnl::ChainRead {
                    table: t.clone(),
                    chain: c.clone(),
                    targets: builtin(t, c),
                    sample: samples
                        .and_then(|s| s.get(&(t.clone(), c.clone())))
                        .cloned(),
                })
                .collect();
            return nfnl::read_chains(family, &reads).map_err(|e| e.to_string());
        }
        // iptables-legacy: list each chain.
        let iptables = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        Ok(chains
            .iter()
            .map(|(t, c)| {
                exec::run(iptables, &["-w", "5", "-t", t, "-S", c], None)
                    .ok()
                    .map(|text| listed_chain(&text))
            })
            .collect())
    }

    /// Whether the next sync is full.
    pub fn next_is_full(&self) -> bool {
        match &self.engine {
            Engine::Iptables(e) => e.next_is_full(Instant::now()),
            Engine::Nftables(e) => e.next_is_full(Instant::now()),
        }
    }

    /// Forces the next sync to be full.
    pub fn force_full_sync(&mut self) {
        match &mut self.engine {
            Engine::Iptables(e) => e.force_full_sync(),
            Engine::Nftables(e) => e.force_full_sync(),
        }
    }

    /// Applies `desired` (one entry per family): a full sync, or a partial
    /// one against the rules last applied by this method.
    pub fn sync(&mut self, desired: &[Desired], metrics: &Metrics) -> SyncReport {
        let now = Instant::now();
        match &mut self.engine {
            Engine::Iptables(e) => e.sync(now, desired),
            Engine::Nftables(e) => e.sync(now, desired),
        }
        self.finish(metrics)
    }

    /// Applies what the incremental [`Compiler`](super::incremental::Compiler)
    /// compiled (one entry per family; ask it for full results when
    /// [`Self::next_is_full`]).
    pub fn sync_compiled(&mut self, compiled: &[Compiled], metrics: &Metrics) -> SyncReport {
        let now = Instant::now();
        match &mut self.engine {
            Engine::Iptables(e) => e.sync_compiled(now, compiled),
            Engine::Nftables(e) => e.sync_compiled(now, compiled),
        }
        self.finish(metrics)
    }

    /// Counts `report`'s failures in the metrics.
    fn record_failures(&self, report: &FamilyReport, metrics: &Metrics) {
        let family = report.family;
        let failures = report.error.iter().chain(&report.warnings);
        for f in failures {
            match (self.mode, f.kind) {
                (Mode::Iptables, FailureKind::Write { partial }) => {
                    metrics.iptables_restore_failed(family, partial)
                }
                (Mode::Iptables, FailureKind::Repair) => {
                    metrics.iptables_restore_failed(family, true)
                }
                (Mode::Nftables, FailureKind::Write { .. }) => {
                    metrics.nftables_failed(family, false)
                }
                (Mode::Nftables, FailureKind::StaleCleanup | FailureKind::Repair) => {
                    metrics.nftables_failed(family, true)
                }
                _ => {}
            }
        }
        for w in &report.warnings {
            warn!(%family, "{}", describe_failure(&w.message, w.input.as_deref()));
        }
        for m in &report.conntrack_failures {
            metrics.conntrack_cleanup_failed();
            warn!("conntrack cleanup: {m}");
        }
    }

    /// Runs the sync the engine was handed; logs and counts what it did.
    fn finish(&mut self, metrics: &Metrics) -> SyncReport {
        let generation = self.generation();
        let mut out = SyncReport::default();
        for f in self.drive(Some(metrics)) {
            let Finished::Sync(report) = f else { continue };
            out.full = report.full;
            out.duration = report.duration;
            for fam in &report.families {
                self.record_failures(fam, metrics);
                self.family_synced(fam, metrics);
                if let Some(err) = &fam.error {
                    let text = describe_failure(&err.message, err.input.as_deref());
                    error!(family = %fam.family, full = fam.full, "sync failed: {text}");
                    if let Some(input) = &err.input {
                        out.rejected.extend(rejected(&err.message, input));
                    }
                    out.errors.push(text);
                }
                metrics.observe_sync(fam.family, fam.duration, fam.full);
            }
            // Each family's proxier is healthy once its own rules are applied.
            let synced: Vec<IpFamily> = report
                .families
                .iter()
                .filter(|f| f.ok())
                .map(|f| f.family)
                .collect();
            metrics.synced(&synced);
        }
        // Something was committed: the next drift check reads the node.
        if generation.is_none() || self.generation() != generation {
            self.verified = None;
        }
        out
    }

    /// The metrics, samples and log of one family's applied rules.
    fn family_synced(&mut self, r: &FamilyReport, metrics: &Metrics) {
        if !r.ok() {
            return;
        }
        let family = r.family;
        let samples = self.samples.entry(family).or_default();
        if r.rewrote_node_level {
            samples.clear();
        }
        for (key, rules) in &r.edited {
            // Edited in place, the sampled rules that stay keep their
            // handles (a sampled rule deleted, or the chain written whole,
            // makes the next check dump it again).
            if let Some(sample) = samples.get_mut(key) {
                sample.1 = *rules;
            }
        }
        let applied = if r.full {
            "applied"
        } else {
            "applied (partial)"
        };
        match self.mode {
            Mode::Iptables => {
                metrics.iptables_rules(family, &r.counts, &r.rules_written);
                info!(%family, services = r.services, bytes = r.bytes, "iptables rules {applied}");
            }
            Mode::Nftables => {
                metrics.nftables_objects(family, &r.counts);
                info!(%family, services = r.services, bytes = r.bytes, "nftables rules {applied}");
            }
        }
    }

    /// The nftables stale chains waiting for deletion (family, chain).
    pub fn stale_chains(&self) -> Vec<(IpFamily, String)> {
        match &self.engine {
            Engine::Iptables(_) => Vec::new(),
            Engine::Nftables(e) => e.stale_chains(),
        }
    }
}

/// A chain as `iptables -S CHAIN` lists it: its rules and their jump
/// targets.
fn listed_chain(text: &str) -> ChainSeen {
    let mut seen = ChainSeen::default();
    for line in text.lines().filter(|l| l.starts_with("-A ")) {
        seen.rules += 1;
        let args = split_args(line);
        if let Some(t) = args
            .iter()
            .position(|a| a == "-j" || a == "-g")
            .and_then(|i| args.get(i + 1))
        {
            seen.targets.push(t.clone());
        }
    }
    seen
}
