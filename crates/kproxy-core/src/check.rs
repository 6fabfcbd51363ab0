//! Does a node hold the rules kube-proxy should have written? [`check`]
//! compares a dump of the node's rules (parsed into IR by a backend's
//! `parse` module) with what kproxy compiles for the cluster state and
//! node, one family at a time, and reports:
//!
//! * per Service, kube-proxy's chains, rules, sets and elements that are
//!   missing, extra or different ([`crate::diff`] over the
//!   [canonical](crate::canon) forms, grouped by [`crate::owners`]);
//! * stale objects: kube-proxy chains (and nftables sets and maps) the
//!   compile does not produce (`KUBE-SVC-…` of a deleted Service), and
//!   leftovers of the other proxy mode (a `kube-proxy` nftables table next
//!   to iptables mode, `KUBE-*` iptables chains next to nftables mode);
//! * foreign rules in kube-proxy's path: rules that are not kube-proxy's
//!   before its jumps in the built-in chains, inside its chains, or base
//!   chains of other nftables tables that run before kube-proxy's at the
//!   same hook;
//! * whether the two rulesets behave the same for every packet
//!   ([`crate::equivalence`]).
//!
//! A node with textual differences that behave the same is "equivalent,
//! with textual differences"; [`CheckReport::drift`] is true when the
//! behaviour differs or stale objects, other-mode leftovers or foreign rules
//! in kube-proxy's path are there.
//!
//! ```
//! use kproxy_core::check::{check, Mode};
//! use kproxy_core::equivalence::Options;
//! use kproxy_core::ir::*;
//! use kproxy_core::model::IpFamily;
//! use kproxy_core::trace::TraceEnv;
//!
//! let mut nat = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
//! let mut pre = Chain::builtin(Hook::Prerouting);
//! pre.push(Rule::new().verdict(Verdict::Jump("KUBE-SERVICES".into())));
//! nat.chains = vec![pre, Chain::new("KUBE-SERVICES")];
//! let compiled = Ruleset { tables: vec![nat] };
//! let env = TraceEnv::default();
//!
//! let same = check(&compiled, &compiled, Mode::Iptables, &env, IpFamily::V4, Options::default()).unwrap();
//! assert!(!same.drift() && same.is_clean());
//!
//! let mut node = compiled.clone();
//! let t = node.table_mut("nat").unwrap();
//! t.chains.push(Chain::new("KUBE-SVC-OLD"));
//! t.chain_mut("PREROUTING").unwrap().rules.insert(0, Rule::new().verdict(Verdict::Drop));
//! let r = check(&compiled, &node, Mode::Iptables, &env, IpFamily::V4, Options::default()).unwrap();
//! assert!(r.drift());
//! assert_eq!(r.stale[0].name, "KUBE-SVC-OLD");
//! assert_eq!(r.foreign_in_path[0].chain, "PREROUTING");
//! assert!(!r.equivalence.is_equivalent());
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::canon::canonical;
use crate::diff::{RulesetDiff, diff};
use crate::equivalence::{Equivalence, Options, compare, of_family};
use crate::ir::{ChainKind, Rule, Ruleset, Table, TableFamily};
use crate::model::{IpFamily, NamespacedName};
use crate::trace::{TraceEnv, TraceError};

/// The proxy mode whose rules are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// iptables tables `filter`, `nat`, `mangle`.
    Iptables,
    /// nftables table `kube-proxy`.
    Nftables,
}

/// Why an object is reported on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StaleKind {
    /// A kube-proxy object of this mode that the compile does not produce.
    Stale,
    /// A kube-proxy object of the other proxy mode.
    OtherMode,
}

/// A stale chain, set or map, or a table of the other mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleObject {
    /// Stale or other mode.
    pub kind: StaleKind,
    /// The table.
    pub table: String,
    /// What it is: `chain`, `set`, `map` or `table`.
    pub what: &'static str,
    /// Its name.
    pub name: String,
    /// The Service it belonged to, when its name or rules tell.
    pub service: Option<NamespacedName>,
}

/// A rule that is not kube-proxy's, where kube-proxy's packets pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRule {
    /// The table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// Its position in the chain (0-based), or `None` for a base chain of
    /// another table.
    pub index: Option<usize>,
    /// The rule (for a base chain, its first rule if any).
    pub rule: Option<Rule>,
    /// Why it is in the path.
    pub reason: String,
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct CheckReport {
    /// Differences of kube-proxy's own objects, compile ("before") to node
    /// ("after").
    pub diff: RulesetDiff,
    /// Differences of kube-proxy's own objects (the compile is the "before"
    /// side, the node the "after" side: an added rule is extra on the node),
    /// by Service (`None`: node-level objects).
    pub by_service: BTreeMap<Option<NamespacedName>, RulesetDiff>,
    /// Stale objects and leftovers of the other mode.
    pub stale: Vec<StaleObject>,
    /// Foreign rules in kube-proxy's path.
    pub foreign_in_path: Vec<ForeignRule>,
    /// Tables of the dump outside kube-proxy's (informational).
    pub other_tables: Vec<String>,
    /// The behavioural comparison (compile left, node right).
    pub equivalence: Equivalence,
}

impl CheckReport {
    /// Whether the node drifted: the behaviour differs, or stale objects,
    /// other-mode leftovers or foreign rules in kube-proxy's path are there.
    pub fn drift(&self) -> bool {
        !self.equivalence.is_equivalent()
            || !self.stale.is_empty()
            || !self.foreign_in_path.is_empty()
    }
    /// Whether the texts differ (kube-proxy's objects).
    pub fn textual_differences(&self) -> bool {
        !self.diff.is_empty()
    }
    /// Nothing to report at all.
    pub fn is_clean(&self) -> bool {
        !self.drift() && !self.textual_differences()
    }
}

/// Whether an iptables chain name is kube-proxy's (fixed or per service).
pub use crate::names::iptables::is_kube_proxy_chain as is_kube_proxy_iptables_chain;

/// The nftables table kube-proxy owns.
pub use crate::names::nft::TABLE as NFT_TABLE;

fn is_iptables(t: &Table) -> bool {
    matches!(t.family, TableFamily::Iptables(_))
}

/// Compares `node` (a parsed dump, possibly of several tools and both
/// families) with `compiled` (what kproxy builds for `mode`, standalone
/// for iptables) for `family`, on the node of `env`.
pub fn check(
    compiled: &Ruleset,
    node: &Ruleset,
    mode: Mode,
    env: &TraceEnv,
    family: IpFamily,
    opts: Options,
) -> Result<CheckReport, TraceError> {
    // Both sides at once: each is a copy of a whole ruleset.
    let (compiled, node) = std::thread::scope(|s| {
        let c = s.spawn(|| canonical(&of_family(compiled, family)));
        let n = canonical(&of_family(node, family));
        (c.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), n)
    });
    let mut report = CheckReport::default();
    let owners = crate::owners::Owners::of(&node);

    // kube-proxy's part of the node, as comparable with the compile.
    let mut scoped = Ruleset::default();
    for t in &node.tables {
        let ours = match mode {
            Mode::Iptables => is_iptables(t),
            Mode::Nftables => !is_iptables(t) && t.name == NFT_TABLE,
        };
        let other_mode_table = match mode {
            Mode::Iptables => !is_iptables(t) && t.name == NFT_TABLE,
            Mode::Nftables => false,
        };
        if other_mode_table {
            report.stale.push(StaleObject {
                kind: StaleKind::OtherMode,
                table: t.name.clone(),
                what: "table",
                name: t.name.clone(),
                service: None,
            });
            continue;
        }
        if !ours {
            // nftables mode: iptables(-nft) chains of kube-proxy are leftovers.
            let kube: Vec<_> = t
                .chains
                .iter()
                .filter(|c| is_kube_proxy_iptables_chain(c.name.as_str()))
                .collect();
            if mode == Mode::Nftables && !kube.is_empty() {
                for c in kube {
                    report.stale.push(StaleObject {
                        kind: StaleKind::OtherMode,
                        table: t.name.clone(),
                        what: "chain",
                        name: c.name.to_string(),
                        service: owners.chain(&t.name, c.name.as_str()).cloned(),
                    });
                }
            } else {
                report.other_tables.push(t.name.clone());
            }
            foreign_base_chains(&compiled, t, &mut report);
            continue;
        }
        let expected = compiled.table(&t.name).filter(|e| e.family == t.family);
        // By name: a node holds a chain per Service and endpoint.
        let expected_chains: HashMap<&str, &crate::ir::Chain> = expected
            .iter()
            .flat_map(|e| &e.chains)
            .map(|c| (c.name.as_str(), c))
            .collect();
        let expected_sets: HashSet<&str> = expected
            .iter()
            .flat_map(|e| &e.sets)
            .map(|s| s.name.as_str())
            .collect();
        let expected_maps: HashSet<&str> = expected
            .iter()
            .flat_map(|e| &e.maps)
            .map(|m| m.name.as_str())
            .collect();
        let mut keep = t.clone();
        keep.chains.clear();
        keep.sets.clear();
        keep.maps.clear();
        for c in &t.chains {
            let want = expected_chains.get(c.name.as_str()).copied();
            match (&c.kind, want) {
                (ChainKind::Builtin(_), want) => {
                    let want_rules: &[Rule] = want.map(|w| w.rules.as_slice()).unwrap_or(&[]);
                    let mut kept = c.clone();
                    kept.rules.clear();
                    let last_ours = c.rules.iter().rposition(|r| want_rules.contains(r));
                    for (i, r) in c.rules.iter().enumerate() {
                        if want_rules.contains(r) {
                            kept.rules.push(r.clone());
                        } else if last_ours.is_some_and(|l| i < l) {
                            report.foreign_in_path.push(ForeignRule {
                                table: t.name.clone(),
                                chain: c.name.to_string(),
                                index: Some(i),
                                rule: Some(r.clone()),
                                reason: "before kube-proxy's jump".into(),
                            });
                        }
                    }
                    if want.is_some() {
                        keep.chains.push(kept);
                    }
                }
                (_, Some(w)) => {
                    // Hashed: kube-proxy's chains hold up to a rule per Service.
                    let wanted: HashSet<&Rule> = w.rules.iter().collect();
                    for (i, r) in c.rules.iter().enumerate() {
                        let known = wanted.contains(r)
                            || owners.rule(&t.name, c.name.as_str(), r).is_some();
                        if !known {
                            report.foreign_in_path.push(ForeignRule {
                                table: t.name.clone(),
                                chain: c.name.to_string(),
                                index: Some(i),
                                rule: Some(r.clone()),
                                reason: "inside a kube-proxy chain".into(),
                            });
                        }
                    }
                    keep.chains.push(c.clone());
                }
                (_, None) => {
                    let kube = match mode {
                        Mode::Iptables => is_kube_proxy_iptables_chain(c.name.as_str()),
                        Mode::Nftables => true,
                    };
                    if kube {
                        report.stale.push(StaleObject {
                            kind: StaleKind::Stale,
                            table: t.name.clone(),
                            what: "chain",
                            name: c.name.to_string(),
                            service: owners.chain(&t.name, c.name.as_str()).cloned(),
                        });
                    }
                }
            }
        }
        for s in &t.sets {
            if expected_sets.contains(s.name.as_str()) {
                keep.sets.push(s.clone());
            } else {
                report.stale.push(StaleObject {
                    kind: StaleKind::Stale,
                    table: t.name.clone(),
                    what: "set",
                    name: s.name.clone(),
                    service: owners.set(&t.name, &s.name).cloned(),
                });
            }
        }
        for m in &t.maps {
            if expected_maps.contains(m.name.as_str()) {
                keep.maps.push(m.clone());
            } else {
                report.stale.push(StaleObject {
                    kind: StaleKind::Stale,
                    table: t.name.clone(),
                    what: "map",
                    name: m.name.clone(),
                    service: None,
                });
            }
        }
        if !keep.chains.is_empty() || !keep.sets.is_empty() || !keep.maps.is_empty() {
            scoped.tables.push(keep);
        }
    }
    // Tables the mode needs that are missing entirely show up in the diff.
    // `scoped` is part of the canonical `node`, so canonical itself.
    let d = diff(&compiled, &scoped);
    report.by_service = d.by_service();
    report.diff = d;
    // Freed before the comparison, whose memory can reuse them.
    drop(scoped);
    drop(owners);

    // Chains of other tables cannot be in kube-proxy's path in iptables
    // mode (the tracer still sees them); record names only.
    let mut seen = HashSet::new();
    report.other_tables.retain(|t| seen.insert(t.clone()));
    report.equivalence = compare(&compiled, &node, env, family, opts)?;
    Ok(report)
}

/// Base chains of another nftables table that run before kube-proxy's at
/// the same hook.
fn foreign_base_chains(compiled: &Ruleset, t: &Table, report: &mut CheckReport) {
    if is_iptables(t) {
        return;
    }
    for c in &t.chains {
        let ChainKind::Base { hook, priority, .. } = c.kind else {
            continue;
        };
        let ours = compiled
            .tables
            .iter()
            .flat_map(|ct| &ct.chains)
            .find_map(|cc| match cc.kind {
                ChainKind::Base {
                    hook: h,
                    priority: p,
                    ..
                } if h == hook && p >= priority => Some(cc.name.to_string()),
                _ => None,
            });
        if let (Some(ours), false) = (ours, c.rules.is_empty()) {
            report.foreign_in_path.push(ForeignRule {
                table: t.name.clone(),
                chain: c.name.to_string(),
                index: None,
                rule: c.rules.first().cloned(),
                reason: format!(
                    "base chain at {} priority {priority}, before kube-proxy's {ours}",
                    hook.as_nft()
                ),
            });
        }
    }
}
