//! The proxier: keeps the rules last applied per family and applies the
//! next ones (full or partial, see [`super::apply`]) with the node's tools.
//!
//! A failed apply leaves the previous rules in place (`iptables-restore`
//! and `nft -f` commit atomically), is logged with the offending line,
//! counted, and makes the next sync full.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kproxy_core::ir::Ruleset;
use kproxy_core::model::{IpFamily, NodeConfig};
use kproxy_core::plan::plan_node;
use tracing::{error, info, warn};

use super::apply::{
    self, iptables_full, iptables_partial, iptables_rule_counts, nft_delete_stale, nft_full,
    nft_partial,
};
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
    /// The ruleset (iptables: standalone; nftables: the table state).
    pub ruleset: Ruleset,
}

#[derive(Debug, Default)]
struct FamilyState {
    last: Option<Ruleset>,
    /// nftables chains flushed by an earlier sync, to delete.
    stale: BTreeMap<String, Instant>,
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
        }
    }

    /// The rules last applied for `family`.
    pub fn last(&self, family: IpFamily) -> Option<&Ruleset> {
        self.families.get(&family).and_then(|f| f.last.as_ref())
    }

    /// Whether the next sync is full.
    pub fn next_is_full(&self) -> bool {
        self.force_full || self.last_full.is_none_or(|t| t.elapsed() >= FULL_SYNC_PERIOD)
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
            if let Err(e) = res {
                error!(family = %d.node.family, full, "sync failed: {e}");
                report.errors.push(e);
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
        let state = self.families.entry(family).or_default();
        let partial_base = if full { None } else { state.last.as_ref() };
        let plan = match partial_base {
            Some(last) => iptables_partial(last, &d.ruleset, opts),
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
            ensure_nfacct(&plan.restore)?;
        }
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
        state.last = Some(d.ruleset.clone());
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
                        warn!("deleting stale chains failed: {}", describe_failure(&e, &tx));
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
        if !tx.is_empty() {
            if let Err(e) = exec::run("nft", &["-f", "-"], Some(&tx)) {
                metrics.nftables_failed(false);
                state.stale.clear();
                return Err(describe_failure(&e, &tx));
            }
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
        state.last = Some(d.ruleset.clone());
        Ok(())
    }

    /// The nftables stale chains waiting for deletion (family, chain).
    pub fn stale_chains(&self) -> Vec<(IpFamily, String)> {
        self.families
            .iter()
            .flat_map(|(f, s)| s.stale.keys().map(move |c| (*f, c.clone())))
            .collect()
    }
}

/// Creates the nfacct counters `restore` names, as kube-proxy does before
/// its first restore.
fn ensure_nfacct(restore: &str) -> Result<(), String> {
    let mut names: Vec<&str> = restore
        .split("--nfacct-name ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Ok(());
    }
    let existing = exec::run("nfacct", &["list"], None).map_err(|e| e.to_string())?;
    for name in names {
        if !existing.contains(&format!("= {name};")) {
            exec::run("nfacct", &["add", name], None).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
