//! Drift: whether the node still holds what kproxy last wrote, and the
//! smallest sync that repairs it (pure: the embedder reads the node's
//! chains and hands over what it saw as [`ChainSeen`]s).
//!
//! What is checked, per family, at every periodic sync: every node-level
//! chain kproxy wrote (iptables: `KUBE-SERVICES`, `KUBE-NODEPORTS`, ...,
//! and the `KUBE-PROXY-CANARY` of every table; nftables: every chain of the
//! `kube-proxy` table that is not a Service's) still exists and holds at
//! least the rules written, and (iptables) every built-in chain still jumps
//! to the chains it jumped to. Per-service chains are not read (a
//! thousand-fold more of them; kube-proxy does not either): a flushed table
//! shows in its node-level chains.
//!
//! What it means ([`decide`]):
//! * a chain gone (a table flushed and its chains deleted, the nftables
//!   table deleted), or every node-level chain of a table with rules short
//!   of them (the whole table flushed: its Services' chains too): a full
//!   sync;
//! * else some node-level chains short of rules (flushed one by one):
//!   those chains written again, whole;
//! * a built-in chain missing some of kproxy's jumps: those jumps ensured
//!   again (as kube-proxy ensures them: inserted at the top).

use std::collections::BTreeMap;

use crate::ir::{Chain, ChainKind, Ruleset, Verdict};

/// What a chain holds, as far as the drift check needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainSeen {
    /// Its rules.
    pub rules: usize,
    /// The chains its rules jump or go to (one entry per rule that does).
    pub targets: Vec<String>,
    /// The rules' handles, in order (when the chain was dumped).
    pub handles: Vec<u64>,
}

/// A chain: (table, chain).
pub type ChainRef = (String, String);

/// What kproxy last wrote of one family that the check reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The node-level chains with the number of rules written.
    pub chains: BTreeMap<ChainRef, usize>,
    /// The built-in chains with the chains their kproxy rules jump to.
    pub jumps: BTreeMap<ChainRef, Vec<String>>,
}

impl Written {
    /// From the node-level chains written (`fixed`) and the built-in
    /// chains' rules (`builtin`: their kproxy rules, as written).
    pub fn new<'a>(
        fixed: impl IntoIterator<Item = (&'a ChainRef, &'a Chain)>,
        builtin: impl IntoIterator<Item = (ChainRef, Vec<String>)>,
    ) -> Self {
        Self {
            chains: fixed
                .into_iter()
                .map(|(k, c)| (k.clone(), c.rules.len()))
                .collect(),
            jumps: builtin.into_iter().collect(),
        }
    }

    /// Every chain to read, in order: the node-level chains, then the
    /// built-in ones (whose jump targets are wanted).
    pub fn to_read(&self) -> Vec<ChainRef> {
        self.chains
            .keys()
            .chain(self.jumps.keys())
            .cloned()
            .collect()
    }
}

/// The node-level chains of `rs` (every chain but the Services' ones, as
/// `service_chain` tells; nftables base chains included) and, per iptables
/// built-in chain, the chains its rules jump to: what the drift check reads
/// back after `rs` was written.
pub fn node_level(
    rs: &Ruleset,
    service_chain: impl Fn(&str) -> bool,
) -> (BTreeMap<ChainRef, Chain>, BTreeMap<ChainRef, Vec<String>>) {
    let mut fixed = BTreeMap::new();
    let mut jumps = BTreeMap::new();
    for t in &rs.tables {
        for c in &t.chains {
            let key = (t.name.clone(), c.name.to_string());
            if matches!(c.kind, ChainKind::Builtin(_)) {
                let targets: Vec<String> = c
                    .rules
                    .iter()
                    .filter_map(|r| match &r.verdict {
                        Some(Verdict::Jump(n) | Verdict::Goto(n)) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect();
                jumps.insert(key, targets);
            } else if !service_chain(c.name.as_str()) {
                fixed.insert(key, c.clone());
            }
        }
    }
    (fixed, jumps)
}

/// The repair the check calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// The node holds what was written.
    Nothing,
    /// Write these node-level chains again (whole), and ensure the jumps
    /// of these built-in chains.
    Rewrite {
        /// Node-level chains short of rules.
        chains: Vec<ChainRef>,
        /// Built-in chains missing some of kproxy's jumps.
        jumps: Vec<ChainRef>,
    },
    /// A full sync, for this reason.
    Full(String),
}

/// What the node holds (`seen`: for each chain of [`Written::to_read`], in
/// that order; `None`: the chain does not exist) against what was
/// `written`: the repair.
pub fn decide(written: &Written, seen: &[Option<ChainSeen>]) -> Repair {
    let to_read = written.to_read();
    let seen: BTreeMap<&ChainRef, Option<&ChainSeen>> = to_read
        .iter()
        .zip(
            seen.iter()
                .map(Option::as_ref)
                .chain(std::iter::repeat(None)),
        )
        .collect();
    let mut short = Vec::new();
    for (key, want) in &written.chains {
        match seen.get(key).copied().flatten() {
            None => return Full(format!("chain {} of table {} is gone", key.1, key.0)),
            Some(s) if s.rules < *want => short.push(key.clone()),
            Some(_) => {}
        }
    }
    // A table whose node-level chains with rules are all short was flushed
    // whole: its Services' chains too.
    let mut with_rules: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (key, want) in &written.chains {
        if *want > 0 {
            let e = with_rules.entry(key.0.as_str()).or_default();
            e.0 += 1;
            e.1 += usize::from(short.contains(key));
        }
    }
    if let Some((table, _)) = with_rules.iter().find(|(_, (n, s))| *s > 0 && s == n) {
        return Full(format!("table {table} was flushed"));
    }
    let jumps: Vec<ChainRef> = written
        .jumps
        .iter()
        .filter(|(key, targets)| {
            let have: Vec<&String> = seen
                .get(key)
                .copied()
                .flatten()
                .map(|s| s.targets.iter().collect())
                .unwrap_or_default();
            !contains_all(&have, targets)
        })
        .map(|(k, _)| k.clone())
        .collect();
    if short.is_empty() && jumps.is_empty() {
        Repair::Nothing
    } else {
        Repair::Rewrite {
            chains: short,
            jumps,
        }
    }
}

use Repair::Full;

/// Chains with at least this many rules are read back by a sample of
/// their rules ([`sample`]) while kproxy has not written them since (see
/// the embedder's sampling threshold).
pub const SAMPLED_CHAIN_RULES: usize = 1024;

/// The rules (handles, in chain order) whose presence stands for a long
/// chain's: the first, the last and seven between, evenly spread. A
/// flushed chain, or one written again, has none of them.
pub fn sample(handles: &[u64]) -> Vec<u64> {
    let n = handles.len();
    if n == 0 {
        return Vec::new();
    }
    let mut out: Vec<u64> = (0..=8).map(|i| handles[i * (n - 1) / 8]).collect();
    out.dedup();
    out
}

/// Whether `have` holds every entry of `want`, with multiplicity.
fn contains_all(have: &[&String], want: &[String]) -> bool {
    let mut count: BTreeMap<&str, isize> = BTreeMap::new();
    for h in have {
        *count.entry(h.as_str()).or_default() += 1;
    }
    want.iter().all(|w| {
        let c = count.entry(w.as_str()).or_default();
        *c -= 1;
        *c >= 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, c: &str) -> ChainRef {
        (t.to_string(), c.to_string())
    }

    fn written() -> Written {
        Written {
            chains: BTreeMap::from([
                (key("nat", "KUBE-SERVICES"), 10_001),
                (key("nat", "KUBE-POSTROUTING"), 3),
                (key("nat", "KUBE-MARK-MASQ"), 1),
                (key("nat", "KUBE-PROXY-CANARY"), 0),
                (key("mangle", "KUBE-PROXY-CANARY"), 0),
            ]),
            jumps: BTreeMap::from([
                (key("nat", "PREROUTING"), vec!["KUBE-SERVICES".to_string()]),
                (
                    key("nat", "POSTROUTING"),
                    vec!["KUBE-POSTROUTING".to_string()],
                ),
            ]),
        }
    }

    fn seen(rules: usize, targets: &[&str]) -> Option<ChainSeen> {
        Some(ChainSeen {
            rules,
            targets: targets.iter().map(|s| s.to_string()).collect(),
            handles: Vec::new(),
        })
    }

    /// In [`Written::to_read`] order: mangle canary, nat KUBE-MARK-MASQ,
    /// KUBE-POSTROUTING, canary, KUBE-SERVICES; then POSTROUTING,
    /// PREROUTING.
    fn intact() -> Vec<Option<ChainSeen>> {
        vec![
            seen(0, &[]),
            seen(1, &[]),
            seen(3, &[]),
            seen(0, &[]),
            seen(10_001, &[]),
            seen(2, &["MY-CHAIN", "KUBE-POSTROUTING"]),
            seen(1, &["KUBE-SERVICES"]),
        ]
    }

    #[test]
    fn reads_in_a_fixed_order() {
        let order = written().to_read();
        assert_eq!(order[0], key("mangle", "KUBE-PROXY-CANARY"));
        assert_eq!(order[4], key("nat", "KUBE-SERVICES"));
        assert_eq!(order[6], key("nat", "PREROUTING"));
    }

    #[test]
    fn intact_node_needs_nothing() {
        assert_eq!(decide(&written(), &intact()), Repair::Nothing);
        // Rules added by someone else are not drift.
        let mut s = intact();
        s[4] = seen(10_005, &[]);
        assert_eq!(decide(&written(), &s), Repair::Nothing);
    }

    #[test]
    fn a_flushed_chain_and_a_deleted_jump_are_rewritten() {
        let mut s = intact();
        s[4] = seen(0, &[]);
        s[6] = seen(0, &[]);
        assert_eq!(
            decide(&written(), &s),
            Repair::Rewrite {
                chains: vec![key("nat", "KUBE-SERVICES")],
                jumps: vec![key("nat", "PREROUTING")],
            }
        );
        // A rule short is short too; a jump alone.
        let mut s = intact();
        s[2] = seen(2, &[]);
        s[5] = seen(1, &["MY-CHAIN"]);
        assert_eq!(
            decide(&written(), &s),
            Repair::Rewrite {
                chains: vec![key("nat", "KUBE-POSTROUTING")],
                jumps: vec![key("nat", "POSTROUTING")],
            }
        );
    }

    #[test]
    fn a_flushed_table_or_a_gone_chain_takes_a_full_sync() {
        let mut s = intact();
        for i in [1, 2, 4] {
            s[i] = seen(0, &[]);
        }
        assert!(matches!(decide(&written(), &s), Repair::Full(r) if r.contains("table nat")));
        let mut s = intact();
        s[0] = None;
        assert!(matches!(
            decide(&written(), &s),
            Repair::Full(r) if r.contains("KUBE-PROXY-CANARY of table mangle")
        ));
        // Fewer answers than chains: what is missing is gone.
        assert!(matches!(
            decide(&written(), &intact()[..3]),
            Repair::Full(_)
        ));
        // A built-in chain gone: its jumps are ensured again.
        let mut s = intact();
        s[6] = None;
        assert_eq!(
            decide(&written(), &s),
            Repair::Rewrite {
                chains: vec![],
                jumps: vec![key("nat", "PREROUTING")],
            }
        );
    }

    #[test]
    fn samples_spread_over_the_chain() {
        let h: Vec<u64> = (100..110).collect();
        assert_eq!(sample(&h), [100, 101, 102, 103, 104, 105, 106, 107, 109]);
        assert_eq!(sample(&[7]), [7]);
        assert!(sample(&[]).is_empty());
        let long: Vec<u64> = (0..10_001).collect();
        let s = sample(&long);
        assert_eq!((s.len(), s[0], s[8]), (9, 0, 10_000));
    }

    #[test]
    fn jumps_count_with_multiplicity() {
        let a = "A".to_string();
        assert!(contains_all(&[&a, &a], &[a.clone(), a.clone()]));
        assert!(!contains_all(&[&a], &[a.clone(), a.clone()]));
        assert!(contains_all(&[], &[]));
    }
}
