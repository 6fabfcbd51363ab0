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
use kproxy_core::plan::plan_node;
use tracing::{error, info, warn};

use super::apply::{
    self, iptables_full, iptables_partial, iptables_rule_counts, nft_delete_stale, nft_full,
    nft_partial,
};
use super::conntrack::{UdpState, cleanup_commands, nothing_deleted};
use super::exec::{self, ToolError, error_line, payload_line, saved_chains};
use super::metrics::Metrics;

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

#[derive(Debug, Default)]
struct FamilyState {
    last: Option<Arc<Ruleset>>,
    /// nftables chains flushed by an earlier sync, to delete.
    stale: BTreeMap<String, Instant>,
    /// The UDP service ports last applied.
    udp: UdpState,
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
    /// iptables partial syncs write only the chains that changed (see
    /// [`iptables_partial`]); default: kube-proxy's partial syncs.
    pub minimal_partial_syncs: bool,
    /// nfacct counters known to exist.
    nfacct: std::collections::BTreeSet<String>,
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
            nfacct: Default::default(),
            minimal_partial_syncs: false,
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
            let state = self.families.entry(d.node.family).or_default();
            state.last = Some(Arc::clone(&d.ruleset));
            state.udp = d.udp.clone();
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

    /// Applies `desired` (one entry per family).
    pub fn sync(&mut self, desired: &[Desired], metrics: &Metrics) -> SyncReport {
        let start = Instant::now();
        let full = self.next_is_full();
        let mut report = SyncReport {
            full,
            ..Default::default()
        };
        for d in desired {
            let res = match self.mode {
                Mode::Iptables => self.sync_iptables(d, full, metrics),
                Mode::Nftables => self.sync_nft(d, full, metrics),
            };
            match res {
                Ok(()) => self.conntrack_cleanup(d, metrics),
                Err(e) => {
                    error!(family = %d.node.family, full, "sync failed: {e}");
                    report.errors.push(e);
                }
            }
        }
        report.duration = start.elapsed();
        metrics.observe_sync(report.duration, full);
        if report.errors.is_empty() {
            if full {
                self.last_full = Some(Instant::now());
            }
            self.force_full = false;
            let fams: Vec<IpFamily> = desired.iter().map(|d| d.node.family).collect();
            metrics.synced(&fams);
        } else {
            self.force_full = true;
        }
        report
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
        let plan = match partial_base {
            Some(last) => iptables_partial(last, &d.ruleset, opts, self.minimal_partial_syncs),
            None => {
                let existing = exec::run(save, &["-t", "nat"], None)
                    .map(|s| saved_chains(&s))
                    .unwrap_or_else(|e| {
                        warn!("cannot list the nat table: {e}");
                        Vec::new()
                    });
                iptables_full(&d.ruleset, &existing, opts)
            }
        }
        .map_err(|e| e.to_string())?;
        if full {
            self.nfacct.clear();
        }
        ensure_nfacct(&plan.restore, &mut self.nfacct)?;
        if let Err(e) = exec::run(
            restore,
            &["--noflush", "--counters", "-w", "5"],
            Some(&plan.restore),
        ) {
            metrics.iptables_restore_failed(!full);
            return Err(describe_failure(&e, &plan.restore));
        }
        if full {
            for r in &plan.ensure {
                let mut check = vec!["-w", "5", "-t", r.table.as_str(), "-C", r.chain.as_str()];
                check.extend(r.args.iter().map(String::as_str));
                if exec::run(iptables, &check, None).is_ok() {
                    continue;
                }
                let mut insert = vec!["-w", "5", "-t", r.table.as_str(), "-I", r.chain.as_str()];
                insert.extend(r.args.iter().map(String::as_str));
                exec::run(iptables, &insert, None).map_err(|e| e.to_string())?;
            }
        }
        info!(
            %family,
            full,
            deleted = plan.deleted_chains.len(),
            bytes = plan.restore.len(),
            "iptables rules applied"
        );
        metrics.iptables_rules(iptables_rule_counts(&d.ruleset), plan.rules_written);
        self.families.entry(family).or_default().last = Some(Arc::clone(&d.ruleset));
        Ok(())
    }

    fn sync_nft(&mut self, d: &Desired, full: bool, metrics: &Metrics) -> Result<(), String> {
        let family = d.node.family;
        let opts = nft_print_opts(&d.node);
        let Some(next) = d.ruleset.tables.first() else {
            return Err("nftables: no table to write".into());
        };
        let delay = self.stale_chain_delay;
        let mut cleanup_failed = false;
        let state = self.families.entry(family).or_default();
        // Stale chains flushed long enough ago: deleted in a transaction of
        // their own, before the main one.
        if !full {
            let due: Vec<String> = state
                .stale
                .iter()
                .filter(|(_, t)| t.elapsed() >= delay)
                .map(|(c, _)| c.clone())
                .collect();
            if !due.is_empty() {
                let tx = nft_delete_stale(family, &next.name, &due);
                match exec::run("nft", &["-f", "-"], Some(&tx)) {
                    Ok(_) => {
                        for c in &due {
                            state.stale.remove(c);
                        }
                    }
                    Err(e) => {
                        metrics.nftables_failed(true);
                        warn!(
                            "deleting stale chains failed: {}",
                            describe_failure(&e, &tx)
                        );
                        state.stale.clear();
                        cleanup_failed = true;
                    }
                }
            }
        }
        let last_table = if full || cleanup_failed {
            None
        } else {
            state.last.as_ref().and_then(|l| l.tables.first())
        };
        let partial = match last_table {
            Some(last) => nft_partial(last, next, opts).map_err(|e| e.to_string())?,
            None => None,
        };
        let (tx, is_full) = match &partial {
            Some(p) => (p.transaction.clone(), false),
            None => (nft_full(next, opts).map_err(|e| e.to_string())?, true),
        };
        if !tx.is_empty()
            && let Err(e) = exec::run("nft", &["-f", "-"], Some(&tx))
        {
            metrics.nftables_failed(false);
            state.stale.clear();
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
        metrics.nftables_objects(
            apply::nft_object_counts(next)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        state.last = Some(Arc::clone(&d.ruleset));
        Ok(())
    }

    /// Deletes the conntrack entries the rule change left stale (UDP).
    fn conntrack_cleanup(&mut self, d: &Desired, metrics: &Metrics) {
        let state = self.families.entry(d.node.family).or_default();
        for args in cleanup_commands(d.node.family, &state.udp, &d.udp) {
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
        state.udp = d.udp.clone();
    }

    /// The nftables stale chains waiting for deletion (family, chain).
    pub fn stale_chains(&self) -> Vec<(IpFamily, String)> {
        self.families
            .iter()
            .flat_map(|(f, s)| s.stale.keys().map(move |c| (*f, c.clone())))
            .collect()
    }
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
