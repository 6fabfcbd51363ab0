//! What one iptables sync writes, as pure functions of the rules last
//! applied and the rules wanted now.
//!
//! [`iptables_full`] is the whole payload for `iptables-restore --noflush`
//! (every kproxy chain declared and written, leftover service chains found
//! on the node declared and deleted) plus the jumps from the built-in
//! chains, which are ensured one by one (check, then insert at the top).
//! [`iptables_partial`] writes what kube-proxy's partial sync writes: the
//! filter chains and the nat top-level chains whole, the chains that
//! changed since the last sync (from [`changes`]), and the chains that went
//! away (`:CHAIN` then `-X CHAIN`). [`iptables_incremental`] writes the same
//! from the incremental compiler's before/after layouts of the changed
//! Services.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kproxy_core::diff::{EditOp, changes, rule_edit_script};
use kproxy_core::ir::{Chain, ChainKind, Ruleset, Table};
use kproxy_core::names::ChainName;
use kproxy_core::owners::is_iptables_service_chain;
use kproxy_core::sync::FixedChange;
use kproxy_core::sync::tool::split_args;

use crate::IptablesError;
use crate::names::{
    KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_PROXY_CANARY, KUBE_SERVICES,
};
use crate::print::PrintOptions;

/// The iptables chains kube-proxy rewrites on every sync in `nat`.
pub const NAT_TOP_LEVEL: [&str; 4] = [
    KUBE_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
];

/// The canary chain (ensured on full syncs, never rewritten).
pub const CANARY: &str = KUBE_PROXY_CANARY;

/// A rule kube-proxy ensures in a built-in chain: `iptables -t TABLE -C
/// CHAIN ARGS`, and when that fails `iptables -t TABLE -I CHAIN ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsureRule {
    /// The table.
    pub table: String,
    /// The built-in chain.
    pub chain: String,
    /// The rule's arguments (`-m conntrack --ctstate NEW ... -j KUBE-SERVICES`).
    pub args: Vec<String>,
}

/// What one iptables sync writes for one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IptablesSync {
    /// The `iptables-restore --noflush` input.
    pub restore: String,
    /// Built-in chain jumps to ensure after the restore (full syncs only),
    /// in the order to insert them (each at the top).
    pub ensure: Vec<EnsureRule>,
    /// Rules written per table (`kubeproxy_sync_proxy_rules_iptables_last`).
    pub rules_written: BTreeMap<String, usize>,
    /// Chains declared and deleted (stale).
    pub deleted_chains: Vec<String>,
}

fn push_chain_rules(
    out: &mut String,
    chain: &Chain,
    opts: PrintOptions,
) -> Result<usize, IptablesError> {
    for rule in &chain.rules {
        out.push_str("-A ");
        out.push_str(chain.name.as_str());
        crate::print::print_rule(out, chain.name.as_str(), rule, opts)?;
        out.push('\n');
    }
    Ok(chain.rules.len())
}

/// The names of `table`'s chains (a lookup per chain of a large table
/// must not search them one by one).
fn chain_names(table: &Table) -> std::collections::HashSet<&str> {
    table.chains.iter().map(|c| c.name.as_str()).collect()
}

fn is_regular(c: &Chain) -> bool {
    c.kind == ChainKind::Regular
}

/// The full sync of one family: every regular chain of `next` declared and
/// written (the canary chains included, in `mangle` too), the service
/// chains among `existing_nat_chains` (the node's `iptables-save -t nat`
/// chain names) that `next` does not have declared and deleted, and the
/// built-in jumps to ensure. `next` is the standalone ruleset.
pub fn iptables_full(
    next: &Ruleset,
    existing_nat_chains: &[String],
    opts: PrintOptions,
) -> Result<IptablesSync, IptablesError> {
    let mut sync = IptablesSync::default();
    for table in &next.tables {
        let write: Vec<&Chain> = table.chains.iter().filter(|c| is_regular(c)).collect();
        let mut stale: Vec<&str> = Vec::new();
        if table.name == "nat" {
            let wanted = chain_names(table);
            stale = existing_nat_chains
                .iter()
                .map(String::as_str)
                .filter(|n| is_iptables_service_chain(n))
                .filter(|n| !wanted.contains(n))
                .collect();
        }
        push_table_section(&mut sync, &table.name, &write, &[], &stale, opts)?;
    }
    sync.ensure = ensure_rules(next, opts)?;
    Ok(sync)
}

/// The jumps from the built-in chains of `next`, in the order to insert
/// them (each at the top).
pub fn ensure_rules(next: &Ruleset, opts: PrintOptions) -> Result<Vec<EnsureRule>, IptablesError> {
    let mut out = Vec::new();
    for table in &next.tables {
        for c in table
            .chains
            .iter()
            .filter(|c| matches!(c.kind, ChainKind::Builtin(_)))
        {
            for rule in c.rules.iter().rev() {
                let mut text = String::new();
                crate::print::print_rule(&mut text, c.name.as_str(), rule, opts)?;
                out.push(EnsureRule {
                    table: table.name.clone(),
                    chain: c.name.to_string(),
                    args: split_args(&text),
                });
            }
        }
    }
    Ok(out)
}

/// The full sync of one family against what the node already holds
/// (`node`: its `iptables-save`, parsed): what [`iptables_full`] writes,
/// without the chains the node holds with the same rules (compared in
/// [`kproxy_core::canon`] form, as `kproxy check` compares). After a
/// restart the node mostly holds the rules already, so the input is small
/// (and quicker to apply). The resulting rules are the same.
pub fn iptables_full_against(
    next: &Ruleset,
    node: &Ruleset,
    opts: PrintOptions,
) -> Result<IptablesSync, IptablesError> {
    let mut sync = IptablesSync {
        ensure: ensure_rules(next, opts)?,
        ..IptablesSync::default()
    };
    for table in &next.tables {
        let held: BTreeMap<&str, &Chain> = node
            .table(&table.name)
            .map(|t| t.chains.iter().map(|c| (c.name.as_str(), c)).collect())
            .unwrap_or_default();
        let Some(wanted) = kproxy_core::canon::canonical_table(table) else {
            continue;
        };
        let held_canon = node
            .table(&table.name)
            .and_then(kproxy_core::canon::canonical_table);
        let held_canon: BTreeMap<&str, &Chain> = held_canon
            .as_ref()
            .map(|t| t.chains.iter().map(|c| (c.name.as_str(), c)).collect())
            .unwrap_or_default();
        let same: BTreeSet<&str> = wanted
            .chains
            .iter()
            .filter(|c| is_regular(c))
            .filter(|c| {
                held_canon
                    .get(c.name.as_str())
                    .is_some_and(|h| h.rules == c.rules)
            })
            .map(|c| c.name.as_str())
            .collect();
        let write: Vec<&Chain> = table
            .chains
            .iter()
            .filter(|c| is_regular(c) && !same.contains(c.name.as_str()))
            .collect();
        let stale: Vec<&str> = if table.name == "nat" {
            let wanted = chain_names(table);
            held.keys()
                .copied()
                .filter(|n| is_iptables_service_chain(n))
                .filter(|n| !wanted.contains(n))
                .collect()
        } else {
            Vec::new()
        };
        if !write.is_empty() || !stale.is_empty() {
            push_table_section(&mut sync, &table.name, &write, &[], &stale, opts)?;
        }
    }
    Ok(sync)
}

/// Adds one table's section of an `iptables-restore --noflush` input to
/// `sync`: the chains of `write` declared (which flushes them) and written
/// whole, the fixed chains of `edits` edited in place, the chains of
/// `deleted` declared and deleted.
fn push_table_section(
    sync: &mut IptablesSync,
    table: &str,
    write: &[&Chain],
    edits: &[&FixedChange],
    deleted: &[&str],
    opts: PrintOptions,
) -> Result<(), IptablesError> {
    let mut out = String::new();
    let _ = writeln!(out, "*{table}");
    for c in write {
        let _ = writeln!(out, ":{} - [0:0]", c.name);
    }
    for name in deleted {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    let mut n = 0;
    for c in write {
        n += push_chain_rules(&mut out, c, opts)?;
    }
    for f in edits {
        n += push_chain_edits(&mut out, &f.before, &f.after, opts)?;
    }
    for name in deleted {
        let _ = writeln!(out, "-X {name}");
    }
    out.push_str("COMMIT\n");
    sync.restore.push_str(&out);
    sync.rules_written.insert(table.to_string(), n);
    sync.deleted_chains
        .extend(deleted.iter().map(|n| n.to_string()));
    Ok(())
}

/// The partial sync of one family from `last` (what the node holds) to
/// `next`: the filter table's chains and nat's top-level chains whole, the
/// chains [`changes`] finds added or changed, and the chains gone from `next`
/// declared (which flushes them) and deleted. Built-in chains and the
/// canaries are left alone (full syncs ensure them).
///
/// With `minimal`, only the chains that changed are written (the filter
/// and nat top-level chains too only when they changed): not what
/// kube-proxy writes, but the same result when the node holds `last`, and
/// much smaller with many Services.
pub fn iptables_partial(
    last: &Ruleset,
    next: &Ruleset,
    opts: PrintOptions,
    minimal: bool,
) -> Result<IptablesSync, IptablesError> {
    let mut sync = IptablesSync::default();
    for table in &next.tables {
        if table.name != "filter" && table.name != "nat" {
            continue;
        }
        let empty = Table::new(table.name.clone(), table.family);
        let d = changes(last.table(&table.name).unwrap_or(&empty), table);
        let changed: BTreeSet<&str> = d.written_chains().map(|c| c.name.as_str()).collect();
        let deleted: Vec<&ChainName> = d
            .removed_chains()
            .filter(|c| is_regular(c))
            .map(|c| &c.name)
            .collect();
        let write: Vec<&Chain> = table
            .chains
            .iter()
            .filter(|c| is_regular(c) && c.name.as_str() != CANARY)
            .filter(|c| {
                changed.contains(c.name.as_str())
                    || (!minimal
                        && (table.name == "filter" || NAT_TOP_LEVEL.contains(&c.name.as_str())))
            })
            .collect();
        let deleted: Vec<&str> = deleted.iter().map(|c| c.as_str()).collect();
        push_table_section(&mut sync, &table.name, &write, &[], &deleted, opts)?;
    }
    Ok(sync)
}

/// The partial sync of one family from the changed Services' rules
/// before and after (see [`kproxy_core::sync::compiler`]): their own chains that
/// changed written whole, the ones that went away declared (which flushes
/// them) and deleted, and the layout's fixed chains whose content changes
/// (`fixed_changes`) edited in place by position, or written whole when
/// that is shorter. Built-in chains and the canaries are left alone (full
/// syncs ensure them).
pub fn iptables_incremental(
    before: &Ruleset,
    after: &Ruleset,
    fixed_changes: &[FixedChange],
    is_fixed: impl Fn(&str, &str) -> bool,
    opts: PrintOptions,
) -> Result<IptablesSync, IptablesError> {
    let mut sync = IptablesSync::default();
    for table in &after.tables {
        if table.name != "filter" && table.name != "nat" {
            continue;
        }
        let empty = Table::new(table.name.clone(), table.family);
        let d = changes(before.table(&table.name).unwrap_or(&empty), table);
        let write: Vec<&Chain> = d
            .written_chains()
            .filter(|c| is_regular(c) && c.name.as_str() != CANARY)
            .filter(|c| !is_fixed(&table.name, c.name.as_str()))
            .collect();
        let deleted: Vec<&ChainName> = d
            .removed_chains()
            .filter(|c| is_regular(c) && !is_fixed(&table.name, c.name.as_str()))
            .map(|c| &c.name)
            .collect();
        let fixed: Vec<&FixedChange> = fixed_changes
            .iter()
            .filter(|f| f.table == table.name)
            .collect();
        // A fixed chain is edited in place (`-D`/`-I` by position) when
        // that is much less than writing it whole: `iptables-restore` of
        // 10k rules in one chain takes a second, an edit a tenth of it.
        let (edit, rewrite): (Vec<&FixedChange>, Vec<&FixedChange>) =
            fixed.into_iter().partition(|f| {
                let edits = rule_edit_script(&f.before.rules, &f.after.rules).len();
                edits <= 16.max(f.after.rules.len() / 8)
            });
        if write.is_empty() && deleted.is_empty() && edit.is_empty() && rewrite.is_empty() {
            continue;
        }
        let write: Vec<&Chain> = write
            .into_iter()
            .chain(rewrite.iter().map(|f| &f.after))
            .collect();
        let deleted: Vec<&str> = deleted.iter().map(|c| c.as_str()).collect();
        push_table_section(&mut sync, &table.name, &write, &edit, &deleted, opts)?;
    }
    Ok(sync)
}

/// `iptables-restore` lines turning chain `before` into `after` in place:
/// deletes by position from the end, then inserts by position from the
/// start (see [`rule_edit_script`]). Returns the rules inserted.
fn push_chain_edits(
    out: &mut String,
    before: &Chain,
    after: &Chain,
    opts: PrintOptions,
) -> Result<usize, IptablesError> {
    let script = rule_edit_script(&before.rules, &after.rules);
    let name = after.name.as_str();
    let mut deletes: Vec<usize> = script
        .iter()
        .filter(|(op, _)| *op == EditOp::Delete)
        .map(|(_, i)| *i)
        .collect();
    deletes.sort_unstable_by(|a, b| b.cmp(a));
    for i in deletes {
        let _ = writeln!(out, "-D {name} {}", i + 1);
    }
    let mut inserts: Vec<usize> = script
        .iter()
        .filter(|(op, _)| *op == EditOp::Insert)
        .map(|(_, j)| *j)
        .collect();
    inserts.sort_unstable();
    for &j in &inserts {
        let Some(rule) = after.rules.get(j) else {
            continue;
        };
        let _ = write!(out, "-I {name} {}", j + 1);
        crate::print::print_rule(out, name, rule, opts)?;
        out.push('\n');
    }
    Ok(inserts.len())
}

/// Rules per table in kproxy's own chains (`kubeproxy_sync_proxy_rules_iptables_total`).
pub fn iptables_rule_counts(rs: &Ruleset) -> BTreeMap<String, usize> {
    rs.tables
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.chains
                    .iter()
                    .filter(|c| is_regular(c))
                    .map(|c| c.rules.len())
                    .sum(),
            )
        })
        .collect()
}

/// The `iptables-restore --noflush` input that writes `chains` (table,
/// chain) again, whole (declared, which creates or flushes them, then
/// their rules): the drift repair of node-level chains.
pub fn iptables_rewrite(
    chains: &[(&str, &Chain)],
    opts: PrintOptions,
) -> Result<String, IptablesError> {
    let mut sync = IptablesSync::default();
    let mut tables: Vec<&str> = chains.iter().map(|(t, _)| *t).collect();
    tables.dedup();
    for table in tables {
        let write: Vec<&Chain> = chains
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, c)| *c)
            .collect();
        push_table_section(&mut sync, table, &write, &[], &[], opts)?;
    }
    Ok(sync.restore)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_a_chain_in_place_by_position() {
        let jump = |c: &str| {
            kproxy_core::ir::Rule::new().verdict(kproxy_core::ir::Verdict::Jump(c.into()))
        };
        let mut before = Chain::new("KUBE-SERVICES");
        for c in ["A", "B", "C", "D"] {
            before.push(jump(c));
        }
        let mut after = Chain::new("KUBE-SERVICES");
        for c in ["A", "X", "C", "D", "Y"] {
            after.push(jump(c));
        }
        let mut out = String::new();
        let n = push_chain_edits(&mut out, &before, &after, Default::default()).expect("print");
        assert_eq!(n, 2);
        assert_eq!(
            out,
            "-D KUBE-SERVICES 2\n-I KUBE-SERVICES 2 -j X\n-I KUBE-SERVICES 5 -j Y\n"
        );
    }
}
