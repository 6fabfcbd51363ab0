//! The proxier: keeps the rules last applied per family and applies the
//! next ones (full or partial, see [`super::apply`]) with the node's tools.
//!
//! A failed apply leaves the previous rules in place (`iptables-restore`
//! and `nft -f` commit atomically), is logged with the offending line,
//! counted, and makes the next sync full.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_core::ir::Ruleset;
use kproxy_core::model::{IpFamily, NodeConfig};
use kproxy_core::plan::{plan_node, plan_release};
use tracing::{error, info, warn};

use kproxy_core::diff::changes;

use super::apply::{
    self, EnsureRule, iptables_full, iptables_full_against, iptables_incremental, iptables_partial,
    iptables_rewrite, iptables_rule_counts, is_nft_service_chain, nft_changes, nft_delete_stale,
    nft_delete_stale_tx, nft_full, nft_full_tx, nft_partial, nft_rewrite, nft_rewrite_tx,
    split_restore,
};
use super::conntrack::{UdpState, cleanup_commands, nothing_deleted, udp_state};
use super::drift::{self, ChainRef, Repair, Written};
use super::exec::{self, ToolError, error_line, payload_line, saved_chains};
use super::incremental::{Compiled, Partial};
use super::isolate::{Rejected, rejected};
use super::metrics::Metrics;
use super::nfnl::{self, ChainSeen};
use crate::compile::{Layout, layout_plan};
use kproxy_core::ir::Chain;
use kproxy_core::owners::is_iptables_service_chain;
use kproxy_nft::{PrintOptions, Transaction};

/// kube-proxy's `proxyutil.FullSyncPeriod`: a full sync at least this often.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

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

/// The rules of one family for one sync.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The node configuration.
    pub node: NodeConfig,
    /// The ruleset (iptables: standalone; nftables: the table state);
    /// shared, so that keeping it as the last applied one costs no copy.
    pub ruleset: Arc<Ruleset>,
    /// The UDP service ports (for conntrack cleanup).
    pub udp: UdpState,
}

impl Desired {
    /// Every rule of `state` for `node` in `layout` (iptables: standalone),
    /// as a full sync applies them.
    pub fn compile(
        state: &kproxy_core::model::ClusterState,
        node: &NodeConfig,
        layout: Layout,
    ) -> anyhow::Result<Self> {
        let plan = plan_release(state, node, layout.release());
        Ok(Self {
            node: node.clone(),
            ruleset: Arc::new(layout_plan(&plan, layout, true)?),
            udp: udp_state(&plan),
        })
    }
}

#[derive(Debug, Default)]
struct FamilyState {
    last: Option<Arc<Ruleset>>,
    /// nftables chains flushed by an earlier sync, to delete.
    stale: BTreeMap<String, Instant>,
    /// The UDP service ports last applied.
    udp: UdpState,
    /// Rules per table (iptables) or objects per kind (nftables) in the
    /// rules last applied, for the metrics.
    counts: BTreeMap<String, usize>,
    /// The node-level chains as last written (the drift check reads them
    /// back and writes them again when they are short).
    fixed: BTreeMap<ChainRef, Chain>,
    /// The built-in chains' jump targets last ensured (iptables).
    jumps: BTreeMap<ChainRef, Vec<String>>,
    /// The built-in chains' jumps as the last full sync ensured them.
    ensure: Vec<EnsureRule>,
    /// Long node-level chains as last read back, not written since: a
    /// sample of their rules' handles and their rule count.
    samples: BTreeMap<ChainRef, (Vec<u64>, usize)>,
}

impl FamilyState {
    /// Records that the node holds `rs` (whole; `service_chain` tells the
    /// Services' chains) for the drift check.
    fn record_written(&mut self, rs: &Ruleset, service_chain: impl Fn(&str) -> bool) {
        (self.fixed, self.jumps) = drift::node_level(rs, service_chain);
        self.samples.clear();
    }
}

/// One family's part of a sync.
#[derive(Debug, Clone, Copy)]
struct FamilySync {
    family: IpFamily,
    duration: Duration,
    full: bool,
    ok: bool,
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

/// The stateful applier.
#[derive(Debug)]
pub struct Proxier {
    mode: Mode,
    families: BTreeMap<IpFamily, FamilyState>,
    force_full: bool,
    last_full: Option<Instant>,
    /// How long an nftables stale chain waits before it is deleted
    /// (kube-proxy: 1 s).
    pub stale_chain_delay: Duration,
    /// nftables transactions go as one netlink batch (`nft -f` only when
    /// the encoder or the kernel cannot); false: `nft -f` for everything.
    pub nft_netlink: bool,
    /// iptables partial syncs write only the chains that changed (see
    /// [`iptables_partial`]); default: kube-proxy's partial syncs.
    pub minimal_partial_syncs: bool,
    /// nfacct counters known to exist.
    nfacct: std::collections::BTreeSet<String>,
    /// iptables: a full sync on a node without kproxy's chains is written
    /// in `iptables-restore` inputs of at most this many rules (see
    /// [`split_restore`]); 0: in one.
    pub fresh_batch_rules: usize,
    /// The drift check reads node-level chains of at least this many rules
    /// by a sample of their rules while kproxy has not written them since
    /// it last dumped them (default [`drift::SAMPLED_CHAIN_RULES`]).
    pub sampled_chain_rules: usize,
    /// Whether `iptables` is iptables-nft (its tables are read over
    /// netlink by the drift check), once known.
    iptables_nft: Option<bool>,
    /// The node configuration of each family's last sync (the printers'
    /// options of a drift repair).
    last_node: BTreeMap<IpFamily, NodeConfig>,
    /// The nf_tables ruleset generation at which the drift check last
    /// found the node holding what kproxy wrote: while it stays, the check
    /// reads nothing more ([`nfnl::generation`]).
    verified: Option<u32>,
    /// The input lines the tools rejected in this sync.
    rejected: Vec<Rejected>,
}

fn iptables_print_opts(node: &NodeConfig) -> kproxy_iptables::PrintOptions {
    kproxy_iptables::PrintOptions {
        mark_style: plan_node(node).mark.style,
        ..Default::default()
    }
}

/// The nft printer options for `node`.
pub fn nft_print_opts(node: &NodeConfig) -> kproxy_nft::PrintOptions {
    kproxy_nft::PrintOptions {
        mark_style: plan_node(node).mark.style,
        ..Default::default()
    }
}

/// Whether two matches are the same in the kernel: equal, or a one-member
/// anonymous address set and the plain address match nft compiles it to
/// (and lists it as).
fn same_match(a: &kproxy_core::ir::Match, b: &kproxy_core::ir::Match) -> bool {
    use kproxy_core::ir::Match;
    let one = |m: &Match| match m {
        Match::AddrSet { dir, addrs, negate } if addrs.len() == 1 => Some(Match::Addr {
            dir: *dir,
            addr: addrs[0],
            negate: *negate,
        }),
        _ => None,
    };
    let norm = |m: &Match| -> Match {
        let m = one(m).unwrap_or_else(|| m.clone());
        match m {
            Match::Addr {
                dir,
                addr: kproxy_core::ir::AddrMatch::Net(n),
                negate,
            } if n.prefix_len() == n.max_prefix_len() => Match::Addr {
                dir,
                addr: kproxy_core::ir::AddrMatch::Ip(n.addr()),
                negate,
            },
            m => m,
        }
    };
    a == b || norm(a) == norm(b)
}

/// Takes the rules of `written` for the chains of `held` (read from the
/// node) whose rules are the same in the kernel, so that the diff between
/// them sees no change where only the spelling differs.
fn same_rules_as_written(held: &mut kproxy_core::ir::Table, written: &kproxy_core::ir::Table) {
    for c in &mut held.chains {
        let Some(w) = written.chain(c.name.as_str()) else {
            continue;
        };
        let same = c.rules.len() == w.rules.len()
            && c.rules.iter().zip(&w.rules).all(|(a, b)| {
                a.verdict == b.verdict
                    && a.matches.len() == b.matches.len()
                    && a.matches
                        .iter()
                        .zip(&b.matches)
                        .all(|(x, y)| same_match(x, y))
            });
        if same {
            c.rules = w.rules.clone();
        }
    }
}

/// The node's nftables table `table` of `family` (`nft -j list table`),
/// as IR; `None` when it does not exist or cannot be read.
fn read_nft_table(family: IpFamily, table: &str) -> Option<kproxy_core::ir::Table> {
    let fam = match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    };
    let text = exec::run("nft", &["-j", "list", "table", fam, table], None).ok()?;
    let dump = kproxy_nft::parse::parse_json(&text)
        .inspect_err(|e| warn!("cannot read the node's table {fam} {table}: {e}"))
        .ok()?;
    let mut held = dump.ruleset.tables.into_iter().find(|t| t.name == table)?;
    // nft -j (1.0.x) leaves comments out: read them by netlink.
    let comments = nfnl::read_comments(family, table)
        .inspect_err(|e| warn!("cannot read the comments of {fam} {table}: {e}"))
        .ok()??;
    held.comment = comments.table;
    for c in &mut held.chains {
        c.comment = comments.chains.get(c.name.as_str()).cloned();
    }
    for s in &mut held.sets {
        s.comment = comments.sets.get(&s.name).cloned();
        // nft -j (1.0.6) leaves `dynamic` out of the flags.
        if let Some(f) = comments.set_flags.get(&s.name) {
            s.flags = nfnl::set_flag_words(*f);
        }
    }
    for m in &mut held.maps {
        m.comment = comments.sets.get(&m.name).cloned();
    }
    Some(held)
}

/// Applies an nftables transaction (`text` is `ops` printed, one line per
/// command): as one netlink batch when `netlink`, falling back to `nft -f`
/// (counted, logged) when the encoder cannot express a command or the
/// kernel answers EOPNOTSUPP; else with `nft -f`. A refused batch is
/// reported like `nft -f` reports a failed line (`netlink:N:`: line N of
/// `text`), so that the caller's error handling is the same.
fn apply_nft(
    netlink: bool,
    text: &str,
    ops: &Transaction,
    opts: PrintOptions,
    metrics: &Metrics,
) -> Result<(), ToolError> {
    if netlink {
        let failed = |message: String| ToolError {
            command: "nf_tables batch".into(),
            message,
        };
        match super::netlink::apply(std::slice::from_ref(ops), opts) {
            Ok(_) => return Ok(()),
            Err(e) if e.wants_fallback() => {
                warn!(family = %ops.family, "nftables by netlink: {e}; applying with nft -f");
                metrics.nftables_netlink_fallback(ops.family);
            }
            Err(super::netlink::ApplyError::Refused {
                op: Some((_, i)),
                err,
                ..
            }) => return Err(failed(format!("netlink:{}:1: Error: {err}", i + 1))),
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    exec::run("nft", &["-f", "-"], Some(text)).map(|_| ())
}

fn describe_failure(e: &ToolError, payload: &str) -> String {
    match error_line(&e.message).and_then(|n| payload_line(payload, n).map(|l| (n, l))) {
        Some((n, line)) => format!("{e} (input line {n}: {line})"),
        None => e.to_string(),
    }
}

impl Proxier {
    /// A proxier that has applied nothing yet (its first sync is full).
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            families: BTreeMap::new(),
            force_full: true,
            last_full: None,
            stale_chain_delay: Duration::from_secs(1),
            nft_netlink: true,
            nfacct: Default::default(),
            minimal_partial_syncs: false,
            fresh_batch_rules: 5000,
            sampled_chain_rules: drift::SAMPLED_CHAIN_RULES,
            iptables_nft: None,
            last_node: BTreeMap::new(),
            verified: None,
            rejected: Vec::new(),
        }
    }

    /// The rules last applied for `family`.
    pub fn last(&self, family: IpFamily) -> Option<&Ruleset> {
        self.families.get(&family).and_then(|f| f.last.as_deref())
    }

    /// Records that the node already holds `desired` (loaded by other
    /// means, e.g. a benchmark's first load into an empty namespace): the
    /// next sync is partial.
    pub fn assume_applied(&mut self, desired: &[Desired]) {
        for d in desired {
            self.last_node.insert(d.node.family, d.node.clone());
            let state = self.families.entry(d.node.family).or_default();
            state.last = Some(Arc::clone(&d.ruleset));
            state.udp = d.udp.clone();
            match self.mode {
                Mode::Iptables => {
                    state.record_written(&d.ruleset, is_iptables_service_chain);
                    state.ensure = apply::ensure_rules(&d.ruleset, iptables_print_opts(&d.node))
                        .unwrap_or_default();
                }
                Mode::Nftables => state.record_written(&d.ruleset, is_nft_service_chain),
            }
        }
        self.force_full = false;
        self.last_full = Some(Instant::now());
    }

    /// kube-proxy's canary: whether what the last syncs wrote is still on
    /// the node (iptables: the mangle `KUBE-PROXY-CANARY` chain of every
    /// family; nftables: the `kube-proxy` table of every family). When it is
    /// gone (someone flushed the tables), the next sync is full.
    pub fn check_canary(&mut self) -> bool {
        let mut present = true;
        for family in self.families.keys() {
            present &= match (self.mode, family) {
                (Mode::Iptables, f) => {
                    let tool = match f {
                        IpFamily::V4 => "iptables",
                        IpFamily::V6 => "ip6tables",
                    };
                    exec::run(
                        tool,
                        &["-w", "5", "-t", "mangle", "-S", apply::CANARY],
                        None,
                    )
                    .is_ok()
                }
                (Mode::Nftables, f) => {
                    let fam = match f {
                        IpFamily::V4 => "ip",
                        IpFamily::V6 => "ip6",
                    };
                    exec::run("nft", &["list", "tables", fam], None).is_ok_and(|out| {
                        out.lines()
                            .any(|l| l.trim() == format!("table {fam} kube-proxy"))
                    })
                }
            };
        }
        if !present {
            warn!("kproxy's rules are gone from the node: the next sync is full");
            self.force_full = true;
        }
        present
    }

    /// The drift check of every family (see [`drift`]): reads back what
    /// the last syncs wrote and repairs what is missing, by writing the
    /// node-level chains short of rules and ensuring the missing jumps
    /// again, or by making the next sync full. Returns the repairs decided
    /// (one per family checked; none when the next sync is full anyway).
    pub fn repair_drift(&mut self, metrics: &Metrics) -> Vec<Repair> {
        if self.next_is_full() {
            return Vec::new();
        }
        let families: Vec<IpFamily> = self.families.keys().copied().collect();
        // Nothing committed since the last check found all in place.
        let generation = self.generation();
        if generation.is_some() && generation == self.verified {
            return families.iter().map(|_| Repair::Nothing).collect();
        }
        let mut out = Vec::new();
        for family in families {
            let Some(state) = self.families.get(&family) else {
                continue;
            };
            let written = Written::new(&state.fixed, state.jumps.clone());
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
                    self.force_full = true;
                }
                Repair::Rewrite { chains, jumps } => {
                    warn!(%family, ?chains, ?jumps, "kproxy's rules changed behind its back: writing them again");
                    if let Err(e) = self.rewrite(family, chains, jumps, metrics) {
                        error!(%family, "drift repair failed: {e}");
                        self.force_full = true;
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
            Mode::Iptables => *self.iptables_nft.get_or_insert_with(|| {
                exec::run("iptables", &["--version"], None).is_ok_and(|v| v.contains("nf_tables"))
            }),
        }
    }

    /// Keeps a sample of the long chains just dumped whole and found as
    /// written (a chain read by its sample keeps it).
    fn resample(&mut self, family: IpFamily, written: &Written, seen: &[Option<ChainSeen>]) {
        let min = self.sampled_chain_rules.max(1);
        let Some(state) = self.families.get_mut(&family) else {
            return;
        };
        for (key, s) in written.to_read().into_iter().zip(seen) {
            let Some(s) = s else { continue };
            let want = written.chains.get(&key).copied();
            if s.handles.len() >= min && want == Some(s.rules) {
                state
                    .samples
                    .insert(key, (drift::sample(&s.handles), s.rules));
            } else if !s.handles.is_empty() || want != Some(s.rules) {
                state.samples.remove(&key);
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
            let samples = self.families.get(&family).map(|s| &s.samples);
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

    /// Writes `chains` again and ensures the jumps of the built-in `jumps`.
    fn rewrite(
        &mut self,
        family: IpFamily,
        chains: &[ChainRef],
        jumps: &[ChainRef],
        metrics: &Metrics,
    ) -> Result<(), String> {
        let mode = self.mode;
        let Some(state) = self.families.get(&family) else {
            return Ok(());
        };
        let node = self
            .last_node
            .get(&family)
            .cloned()
            .unwrap_or_else(|| NodeConfig::new(family, ""));
        let write: Vec<(&str, &Chain)> = chains
            .iter()
            .filter_map(|k| state.fixed.get(k).map(|c| (k.0.as_str(), c)))
            .collect();
        match mode {
            Mode::Iptables => {
                let (restore, iptables) = match family {
                    IpFamily::V4 => ("iptables-restore", "iptables"),
                    IpFamily::V6 => ("ip6tables-restore", "ip6tables"),
                };
                if !write.is_empty() {
                    let input = iptables_rewrite(&write, iptables_print_opts(&node))
                        .map_err(|e| e.to_string())?;
                    if let Err(e) = exec::run(
                        restore,
                        &["--noflush", "--counters", "-w", "5"],
                        Some(&input),
                    ) {
                        metrics.iptables_restore_failed(family, true);
                        return Err(describe_failure(&e, &input));
                    }
                }
                let ensure: Vec<&EnsureRule> = state
                    .ensure
                    .iter()
                    .filter(|r| jumps.iter().any(|(t, c)| *t == r.table && *c == r.chain))
                    .collect();
                ensure_jumps(iptables, &ensure)
            }
            Mode::Nftables => {
                let Some(table) = write.first().map(|(t, _)| t.to_string()) else {
                    return Ok(());
                };
                let chains: Vec<&Chain> = write.iter().map(|(_, c)| *c).collect();
                let opts = nft_print_opts(&node);
                let tx = nft_rewrite(family, &table, &chains, opts).map_err(|e| e.to_string())?;
                let ops = nft_rewrite_tx(family, &table, &chains);
                apply_nft(self.nft_netlink, &tx, &ops, opts, metrics).map_err(|e| {
                    metrics.nftables_failed(family, true);
                    describe_failure(&e, &tx)
                })
            }
        }
    }

    /// Whether the next sync is full.
    pub fn next_is_full(&self) -> bool {
        self.force_full
            || self
                .last_full
                .is_none_or(|t| t.elapsed() >= FULL_SYNC_PERIOD)
    }

    /// Forces the next sync to be full.
    pub fn force_full_sync(&mut self) {
        self.force_full = true;
    }

    /// Applies `desired` (one entry per family): a full sync, or a partial
    /// one against the rules last applied by this method.
    pub fn sync(&mut self, desired: &[Desired], metrics: &Metrics) -> SyncReport {
        let start = Instant::now();
        let generation = self.generation();
        let full = self.next_is_full();
        let mut errors = Vec::new();
        let mut timed = Vec::new();
        for d in desired {
            let family_start = Instant::now();
            let res = match self.mode {
                Mode::Iptables => self.sync_iptables(d, full, metrics),
                Mode::Nftables => self.sync_nft(d, full, metrics),
            };
            let ok = res.is_ok();
            match res {
                Ok(()) => {
                    let state = self.families.entry(d.node.family).or_default();
                    let last_udp = std::mem::take(&mut state.udp);
                    self.conntrack_cleanup(d.node.family, &last_udp, &d.udp, metrics);
                    self.families.entry(d.node.family).or_default().udp = d.udp.clone();
                }
                Err(e) => {
                    error!(family = %d.node.family, full, "sync failed: {e}");
                    errors.push(e);
                }
            }
            timed.push(FamilySync {
                family: d.node.family,
                duration: family_start.elapsed(),
                full,
                ok,
            });
        }
        self.finish(start, full, errors, &timed, metrics, generation)
    }

    /// Applies what the incremental [`Compiler`](super::incremental::Compiler)
    /// compiled (one entry per family; ask it for full results when
    /// [`Self::next_is_full`]): full results as [`Self::sync`] applies
    /// them, partial ones by writing only what the changed Services'
    /// rules show changed.
    pub fn sync_compiled(&mut self, compiled: &[Compiled], metrics: &Metrics) -> SyncReport {
        let start = Instant::now();
        let generation = self.generation();
        let full = compiled.iter().any(|c| matches!(c, Compiled::Full(_)));
        let mut errors = Vec::new();
        let mut timed = Vec::new();
        for c in compiled {
            let family = c.node().family;
            let family_start = Instant::now();
            let res = match (c, self.mode) {
                (Compiled::Full(d), Mode::Iptables) => self.sync_iptables(d, true, metrics),
                (Compiled::Full(d), Mode::Nftables) => self.sync_nft(d, true, metrics),
                (Compiled::Partial(p), Mode::Iptables) => self.sync_iptables_partial(p, metrics),
                (Compiled::Partial(p), Mode::Nftables) => self.sync_nft_partial(p, metrics),
            };
            let ok = res.is_ok();
            match res {
                Ok(()) => match c {
                    Compiled::Full(d) => {
                        let state = self.families.entry(family).or_default();
                        let last_udp = std::mem::take(&mut state.udp);
                        self.conntrack_cleanup(family, &last_udp, &d.udp, metrics);
                        self.families.entry(family).or_default().udp = d.udp.clone();
                    }
                    Compiled::Partial(p) => {
                        self.conntrack_cleanup(family, &p.udp_before, &p.udp_after, metrics);
                        let state = self.families.entry(family).or_default();
                        for name in p.udp_before.keys() {
                            state.udp.remove(name);
                        }
                        state
                            .udp
                            .extend(p.udp_after.iter().map(|(k, v)| (k.clone(), v.clone())));
                        // The full ruleset is no longer what the node holds.
                        state.last = None;
                    }
                },
                Err(e) => {
                    error!(%family, full = matches!(c, Compiled::Full(_)), "sync failed: {e}");
                    errors.push(e);
                }
            }
            timed.push(FamilySync {
                family,
                duration: family_start.elapsed(),
                full: matches!(c, Compiled::Full(_)),
                ok,
            });
        }
        self.finish(start, full, errors, &timed, metrics, generation)
    }

    /// Ends a sync: `timed` has each family's time and success.
    fn finish(
        &mut self,
        start: Instant,
        full: bool,
        errors: Vec<String>,
        timed: &[FamilySync],
        metrics: &Metrics,
        generation: Option<u32>,
    ) -> SyncReport {
        // Something was committed: the next drift check reads the node.
        if generation.is_none() || self.generation() != generation {
            self.verified = None;
        }
        let report = SyncReport {
            full,
            errors,
            duration: start.elapsed(),
            rejected: std::mem::take(&mut self.rejected),
        };
        for t in timed {
            metrics.observe_sync(t.family, t.duration, t.full);
        }
        // Each family's proxier is healthy once its own rules are applied.
        let synced: Vec<IpFamily> = timed.iter().filter(|t| t.ok).map(|t| t.family).collect();
        metrics.synced(&synced);
        if report.errors.is_empty() {
            if full {
                self.last_full = Some(Instant::now());
            }
            self.force_full = false;
        } else {
            self.force_full = true;
        }
        report
    }

    fn sync_iptables_partial(&mut self, p: &Partial, metrics: &Metrics) -> Result<(), String> {
        let family = p.node.family;
        let restore = match family {
            IpFamily::V4 => "iptables-restore",
            IpFamily::V6 => "ip6tables-restore",
        };
        let plan = iptables_incremental(
            &p.before,
            &p.after,
            &p.fixed_changes,
            |t, c| p.is_fixed(t, c),
            iptables_print_opts(&p.node),
        )
        .map_err(|e| e.to_string())?;
        ensure_nfacct(&plan.restore, &mut self.nfacct)?;
        if !plan.restore.is_empty()
            && let Err(e) = exec::run(
                restore,
                &["--noflush", "--counters", "-w", "5"],
                Some(&plan.restore),
            )
        {
            metrics.iptables_restore_failed(family, true);
            self.rejected.extend(rejected(&e.message, &plan.restore));
            return Err(describe_failure(&e, &plan.restore));
        }
        info!(
            %family,
            services = p.services,
            deleted = plan.deleted_chains.len(),
            bytes = plan.restore.len(),
            "iptables rules applied (partial)"
        );
        let state = self.families.entry(family).or_default();
        adjust_counts(
            &mut state.counts,
            &iptables_rule_counts(&p.before),
            &iptables_rule_counts(&p.after),
        );
        metrics.iptables_rules(family, &state.counts, &plan.rules_written);
        for f in &p.fixed_changes {
            let key = (f.table.clone(), f.after.name.to_string());
            // Edited in place, the sampled rules that stay keep their
            // handles (a sampled rule deleted, or the chain written whole,
            // makes the next check dump it again).
            if let Some(sample) = state.samples.get_mut(&key) {
                sample.1 = f.after.rules.len();
            }
            state.fixed.insert(key, f.after.clone());
        }
        Ok(())
    }

    fn sync_nft_partial(&mut self, p: &Partial, metrics: &Metrics) -> Result<(), String> {
        let family = p.node.family;
        let opts = nft_print_opts(&p.node);
        let (Some(before), Some(after)) = (p.before.tables.first(), p.after.tables.first()) else {
            return Err("nftables: no table to write".into());
        };
        if self.delete_stale_chains(family, &after.name, metrics) {
            return Err("deleting stale chains failed: the next sync is full".into());
        }
        let sync =
            nft_changes(&changes(before, after), before, after, opts).map_err(|e| e.to_string())?;
        let ops = Transaction {
            family,
            table: after.name.clone(),
            ops: sync.ops.clone(),
        };
        let state = self.families.entry(family).or_default();
        if !sync.transaction.is_empty()
            && let Err(e) = apply_nft(self.nft_netlink, &sync.transaction, &ops, opts, metrics)
        {
            metrics.nftables_failed(family, false);
            state.stale.clear();
            self.rejected
                .extend(rejected(&e.message, &sync.transaction));
            return Err(describe_failure(&e, &sync.transaction));
        }
        let now = Instant::now();
        for c in &sync.revived_chains {
            state.stale.remove(c);
        }
        for c in &sync.stale_chains {
            state.stale.insert(c.clone(), now);
        }
        info!(
            %family,
            services = p.services,
            bytes = sync.transaction.len(),
            "nftables rules applied (partial)"
        );
        adjust_counts(
            &mut state.counts,
            &object_counts(before),
            &object_counts(after),
        );
        metrics.nftables_objects(family, &state.counts);
        Ok(())
    }

    /// Deletes the nftables stale chains flushed long enough ago, in a
    /// transaction of its own; true when that failed (the stale list is
    /// dropped and the caller should not sync incrementally).
    fn delete_stale_chains(&mut self, family: IpFamily, table: &str, metrics: &Metrics) -> bool {
        let delay = self.stale_chain_delay;
        let state = self.families.entry(family).or_default();
        let due: Vec<String> = state
            .stale
            .iter()
            .filter(|(_, t)| t.elapsed() >= delay)
            .map(|(c, _)| c.clone())
            .collect();
        if due.is_empty() {
            return false;
        }
        let tx = nft_delete_stale(family, table, &due);
        let ops = nft_delete_stale_tx(family, table, &due);
        let opts = PrintOptions::default();
        match apply_nft(self.nft_netlink, &tx, &ops, opts, metrics) {
            Ok(_) => {
                for c in &due {
                    state.stale.remove(c);
                }
                false
            }
            Err(e) => {
                metrics.nftables_failed(family, true);
                warn!(
                    "deleting stale chains failed: {}",
                    describe_failure(&e, &tx)
                );
                state.stale.clear();
                true
            }
        }
    }

    fn sync_iptables(&mut self, d: &Desired, full: bool, metrics: &Metrics) -> Result<(), String> {
        let family = d.node.family;
        let (restore, save, iptables) = match family {
            IpFamily::V4 => ("iptables-restore", "iptables-save", "iptables"),
            IpFamily::V6 => ("ip6tables-restore", "ip6tables-save", "ip6tables"),
        };
        let opts = iptables_print_opts(&d.node);
        let partial_base = if full {
            None
        } else {
            self.families.get(&family).and_then(|s| s.last.as_ref())
        };
        let mut fresh = false;
        let plan = match partial_base {
            Some(last) => iptables_partial(last, &d.ruleset, opts, self.minimal_partial_syncs),
            None => {
                // One dump of every table: the chains the node holds, and
                // their rules when it holds kproxy's already.
                let saved = exec::run(save, &[], None).unwrap_or_else(|e| {
                    warn!("cannot list the node's rules: {e}");
                    String::new()
                });
                let existing = saved_chains(&saved);
                fresh = !saved.is_empty()
                    && !existing
                        .iter()
                        .any(|c| c == "KUBE-SERVICES" || c == apply::CANARY);
                // After a restart the node holds most rules already: write
                // only the chains that differ.
                let held = if fresh || saved.is_empty() {
                    None
                } else {
                    kproxy_iptables::parse::parse(&saved, Some(family))
                        .inspect_err(|e| warn!("cannot read the node's rules: {e}"))
                        .ok()
                };
                match held {
                    Some(node) => iptables_full_against(&d.ruleset, &node, opts),
                    None => iptables_full(&d.ruleset, &existing, opts),
                }
            }
        }
        .map_err(|e| e.to_string())?;
        if full {
            self.nfacct.clear();
        }
        ensure_nfacct(&plan.restore, &mut self.nfacct)?;
        let total: usize = plan.rules_written.values().sum();
        let inputs = if fresh && self.fresh_batch_rules > 0 && total > self.fresh_batch_rules {
            info!(%family, rules = total, "first sync on a fresh node: written in parts");
            split_restore(&plan.restore, self.fresh_batch_rules)
        } else {
            vec![plan.restore.clone()]
        };
        for input in &inputs {
            if let Err(e) = exec::run(
                restore,
                &["--noflush", "--counters", "-w", "5"],
                Some(input),
            ) {
                metrics.iptables_restore_failed(family, !full);
                self.rejected.extend(rejected(&e.message, input));
                return Err(describe_failure(&e, input));
            }
        }
        if full {
            ensure_jumps(iptables, &plan.ensure.iter().collect::<Vec<_>>())?;
        }
        info!(
            %family,
            full,
            deleted = plan.deleted_chains.len(),
            bytes = plan.restore.len(),
            "iptables rules applied"
        );
        self.last_node.insert(family, d.node.clone());
        let state = self.families.entry(family).or_default();
        state.counts = iptables_rule_counts(&d.ruleset);
        metrics.iptables_rules(family, &state.counts, &plan.rules_written);
        state.last = Some(Arc::clone(&d.ruleset));
        state.record_written(&d.ruleset, is_iptables_service_chain);
        if full {
            state.ensure = plan.ensure;
        }
        Ok(())
    }

    fn sync_nft(&mut self, d: &Desired, full: bool, metrics: &Metrics) -> Result<(), String> {
        let family = d.node.family;
        let opts = nft_print_opts(&d.node);
        let Some(next) = d.ruleset.tables.first() else {
            return Err("nftables: no table to write".into());
        };
        // Stale chains flushed long enough ago: deleted in a transaction of
        // their own, before the main one.
        let cleanup_failed = !full && self.delete_stale_chains(family, &next.name, metrics);
        let state = self.families.entry(family).or_default();
        let last_table = if full || cleanup_failed {
            None
        } else {
            state.last.as_ref().and_then(|l| l.tables.first())
        };
        let never_synced = state.last.is_none();
        let mut partial = match last_table {
            Some(last) => nft_partial(last, next, opts).map_err(|e| e.to_string())?,
            None => None,
        };
        if partial.is_none() && never_synced {
            // After a restart the node holds the table already: write only
            // what differs from it.
            if let Some(mut held) = read_nft_table(family, &next.name) {
                same_rules_as_written(&mut held, next);
                partial = nft_partial(&held, next, opts).map_err(|e| e.to_string())?;
                if partial.is_some() {
                    info!(%family, "nftables: the node holds the table: writing what differs");
                }
            }
        }
        let (tx, ops, is_full) = match &partial {
            Some(p) => (
                p.transaction.clone(),
                Transaction {
                    family,
                    table: next.name.clone(),
                    ops: p.ops.clone(),
                },
                false,
            ),
            None => (
                nft_full(next, opts).map_err(|e| e.to_string())?,
                nft_full_tx(next),
                true,
            ),
        };
        if !tx.is_empty()
            && let Err(e) = apply_nft(self.nft_netlink, &tx, &ops, opts, metrics)
        {
            metrics.nftables_failed(family, false);
            state.stale.clear();
            self.rejected.extend(rejected(&e.message, &tx));
            return Err(describe_failure(&e, &tx));
        }
        let now = Instant::now();
        match &partial {
            Some(p) => {
                for c in &p.revived_chains {
                    state.stale.remove(c);
                }
                for c in &p.stale_chains {
                    state.stale.insert(c.clone(), now);
                }
            }
            None => state.stale.clear(),
        }
        info!(%family, full = is_full, bytes = tx.len(), "nftables rules applied");
        state.counts = object_counts(next);
        metrics.nftables_objects(family, &state.counts);
        state.last = Some(Arc::clone(&d.ruleset));
        state.record_written(&d.ruleset, is_nft_service_chain);
        self.last_node.insert(family, d.node.clone());
        Ok(())
    }

    /// Deletes the conntrack entries the rule change from `last` to `next`
    /// left stale (UDP).
    fn conntrack_cleanup(
        &mut self,
        family: IpFamily,
        last: &UdpState,
        next: &UdpState,
        metrics: &Metrics,
    ) {
        for args in cleanup_commands(family, last, next) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match exec::run("conntrack", &args, None) {
                Ok(_) => {}
                Err(e) if nothing_deleted(&e.message) => {}
                Err(e) => {
                    metrics.conntrack_cleanup_failed();
                    warn!("conntrack cleanup: {e}");
                }
            }
        }
    }

    /// The nftables stale chains waiting for deletion (family, chain).
    pub fn stale_chains(&self) -> Vec<(IpFamily, String)> {
        self.families
            .iter()
            .flat_map(|(f, s)| s.stale.keys().map(move |c| (*f, c.clone())))
            .collect()
    }
}

/// `counts` minus `before` plus `after` (what a partial sync changed).
fn adjust_counts(
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

fn object_counts(t: &kproxy_core::ir::Table) -> BTreeMap<String, usize> {
    apply::nft_object_counts(t)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Creates the nfacct counters `restore` names that are not in `known`, as
/// kube-proxy does before its first restore.
fn ensure_nfacct(
    restore: &str,
    known: &mut std::collections::BTreeSet<String>,
) -> Result<(), String> {
    let mut names: Vec<&str> = restore
        .split("--nfacct-name ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.retain(|n| !known.contains(*n));
    if names.is_empty() {
        return Ok(());
    }
    let existing = exec::run("nfacct", &["list"], None).map_err(|e| e.to_string())?;
    for name in names {
        if !existing.contains(&format!("= {name};")) {
            exec::run("nfacct", &["add", name], None).map_err(|e| e.to_string())?;
        }
        known.insert(name.to_string());
    }
    Ok(())
}

/// Ensures the built-in chains' jumps `rules` (in the order to insert
/// them): each checked (`-C`), and inserted at the top when missing, as
/// kube-proxy ensures them.
fn ensure_jumps(iptables: &str, rules: &[&EnsureRule]) -> Result<(), String> {
    for r in rules {
        let mut check = vec!["-w", "5", "-t", r.table.as_str(), "-C", r.chain.as_str()];
        check.extend(r.args.iter().map(String::as_str));
        if exec::run(iptables, &check, None).is_ok() {
            continue;
        }
        let mut insert = vec!["-w", "5", "-t", r.table.as_str(), "-I", r.chain.as_str()];
        insert.extend(r.args.iter().map(String::as_str));
        exec::run(iptables, &insert, None).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A chain as `iptables -S CHAIN` lists it: its rules and their jump
/// targets.
fn listed_chain(text: &str) -> ChainSeen {
    let mut seen = ChainSeen::default();
    for line in text.lines().filter(|l| l.starts_with("-A ")) {
        seen.rules += 1;
        let args = apply::split_args(line);
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
