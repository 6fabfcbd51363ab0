//! What changes on a node between two rulesets.
//!
//! [`diff`] compares two [`Ruleset`]s of one family (what kube-proxy wrote
//! for one cluster state, and for the next) table by table:
//!
//! * chains added, removed, or changed: a changed chain carries an ordered
//!   edit script of its rules (a shortest one, by Myers' algorithm), with
//!   the positions of deleted rules in the old chain and of inserted rules
//!   in the new one;
//! * sets and maps added or removed, and their elements added, removed or
//!   changed (a map element whose key stays but whose verdict changes);
//! * named counters added or removed.
//!
//! A chain or set whose declaration changes (kind, hook, type, flags) is
//! reported as removed and added again, since that is how it is updated.
//! Every change names the Service it belongs to (see [`crate::owners`]), so
//! [`RulesetDiff::for_service`] can split the diff by Service, and
//! [`RulesetDiff::update`] turns it into the minimal set of operations a
//! partial sync needs.
//!
//! By job: this module holds the change model ([`RulesetDiff`] and its
//! parts); [`changes()`] is the borrowed table comparison everything is built
//! on; the edit scripts are Myers' (a private module); [`Update`] is the
//! update planner's output.
//!
//! ```
//! use kproxy_core::diff::{diff, Status};
//! use kproxy_core::ir::*;
//! use kproxy_core::model::IpFamily;
//!
//! let mut before = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
//! let mut svc = Chain::new("KUBE-SVC-A");
//! svc.push(Rule::new().verdict(Verdict::Jump("KUBE-SEP-1".into())));
//! before.chains.push(svc);
//! before.chains.push(Chain::new("KUBE-SEP-1"));
//! let mut after = before.clone();
//! after.chains[0].rules.insert(0, Rule::new()
//!     .with(Match::Probability { one_in: 2 })
//!     .verdict(Verdict::Jump("KUBE-SEP-2".into())));
//! after.chains.push(Chain::new("KUBE-SEP-2"));
//!
//! let d = diff(&Ruleset { tables: vec![before] }, &Ruleset { tables: vec![after] });
//! let nat = &d.tables[0];
//! assert_eq!(nat.chains.len(), 2);
//! assert_eq!(nat.chains[0].status, Status::Changed);
//! assert_eq!(nat.chains[0].edits.len(), 1);
//! assert_eq!(nat.chains[1].status, Status::Added);
//! let up = d.update();
//! assert_eq!(up.tables[0].rewrite_chains.len(), 2);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{Chain, ChainKind, Element, MapValue, Rule, Ruleset, Table, TableFamily};
use crate::model::NamespacedName;
use crate::names::ChainName;
use crate::owners::Owners;

mod changes;
mod myers;
mod update;

pub use changes::{
    ChainChange, ContainerChange, ContainerRef, ElementChange, TableChanges, changes,
};
use myers::{Step, edit_script};
pub use update::{ElementUpdate, TableUpdate, Update};

/// Whether an object was added, removed or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Only in the new ruleset.
    Added,
    /// Only in the old ruleset.
    Removed,
    /// In both, with different contents.
    Changed,
}

/// The difference between two rulesets of one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RulesetDiff {
    /// Tables with a difference, in the new ruleset's order (removed tables last).
    pub tables: Vec<TableDiff>,
}

/// The difference within one table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableDiff {
    /// The table's name.
    pub table: String,
    /// Its family.
    pub family: TableFamily,
    /// Added, removed, or changed (present in both).
    pub status: Status,
    /// Chains with a difference: the new table's order, then removed chains
    /// in the old table's order.
    pub chains: Vec<ChainDiff>,
    /// Sets and maps with a difference, in the same order.
    pub containers: Vec<ContainerDiff>,
    /// Named counters added.
    pub counters_added: Vec<String>,
    /// Named counters removed.
    pub counters_removed: Vec<String>,
}

/// The difference of one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainDiff {
    /// The chain.
    pub chain: ChainName,
    /// Its kind (in the new ruleset, or the old one if removed).
    pub kind: ChainKind,
    /// The Service the chain belongs to.
    pub service: Option<NamespacedName>,
    /// Added (all edits are inserts), removed (all deletes) or changed.
    pub status: Status,
    /// The ordered edit script: deletes and inserts in the order they apply.
    pub edits: Vec<RuleEdit>,
}

/// Whether a rule is deleted or inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EditOp {
    /// The rule is only in the old chain.
    Delete,
    /// The rule is only in the new chain.
    Insert,
}

/// One step of a chain's edit script.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleEdit {
    /// Delete or insert.
    pub op: EditOp,
    /// The rule's position: in the old chain for a delete, in the new chain
    /// for an insert (0-based).
    pub index: usize,
    /// The rule.
    pub rule: Rule,
    /// The Service the rule belongs to (the chain's, or the one its comment names).
    pub service: Option<NamespacedName>,
}

/// Set or map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContainerKind {
    /// An nftables set.
    Set,
    /// An nftables map.
    Map,
}

/// The difference of one set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerDiff {
    /// Its name.
    pub name: String,
    /// Set or map.
    pub kind: ContainerKind,
    /// The Service the whole container belongs to (`affinity-` sets).
    pub service: Option<NamespacedName>,
    /// Added (elements are all adds), removed (all removes) or changed.
    pub status: Status,
    /// Element changes, removals first, each in container order.
    pub elements: Vec<ElementEdit>,
}

/// What happens to an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ElementOp {
    /// Only in the new container.
    Add,
    /// Only in the old container.
    Remove,
    /// Same key, different value or comment.
    Change,
}

/// One element change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElementEdit {
    /// Add, remove or change.
    pub op: ElementOp,
    /// The element (the new one for an add or change).
    pub element: Element,
    /// The old value (maps; removes and changes).
    pub before: Option<MapValue>,
    /// The new value (maps; adds and changes).
    pub after: Option<MapValue>,
    /// The Service the element belongs to.
    pub service: Option<NamespacedName>,
}

/// Compares two rulesets of one family.
pub fn diff(before: &Ruleset, after: &Ruleset) -> RulesetDiff {
    let tables = Tables::of(before, after);
    let pairs = tables.pairs();
    // Each side's owners walk a whole ruleset: on other threads, while
    // this one compares the tables.
    let (ob, oa, found) = std::thread::scope(|s| {
        let ob = s.spawn(|| Owners::of(before));
        let oa = s.spawn(|| Owners::of(after));
        let found = table_changes(&pairs);
        let ob = ob.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let oa = oa.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (ob, oa, found)
    });
    assemble(&pairs, &found, &ob, &oa)
}

/// [`diff`] with the owners of both rulesets already worked out
/// ([`Owners::of`] `before` and `after`): for a caller that works them out
/// while it still builds the other ruleset.
///
/// ```
/// use kproxy_core::diff::{diff, diff_with_owners};
/// use kproxy_core::ir::*;
/// use kproxy_core::model::IpFamily;
/// use kproxy_core::owners::Owners;
///
/// let before = Ruleset { tables: vec![Table::new("nat", TableFamily::Iptables(IpFamily::V4))] };
/// let mut after = before.clone();
/// after.tables[0].chains.push(Chain::new("KUBE-SERVICES"));
/// let (ob, oa) = (Owners::of(&before), Owners::of(&after));
/// assert_eq!(diff_with_owners(&before, &after, &ob, &oa), diff(&before, &after));
/// ```
pub fn diff_with_owners(
    before: &Ruleset,
    after: &Ruleset,
    ob: &Owners<'_>,
    oa: &Owners<'_>,
) -> RulesetDiff {
    let tables = Tables::of(before, after);
    let pairs = tables.pairs();
    let found = table_changes(&pairs);
    assemble(&pairs, &found, ob, oa)
}

/// The tables of two rulesets paired by name: the new ruleset's order,
/// then the removed tables; an added or removed table is paired with an
/// empty one.
struct Tables<'r> {
    sides: Vec<(Option<&'r Table>, Option<&'r Table>)>,
    empties: Vec<Option<Table>>,
}

impl<'r> Tables<'r> {
    fn of(before: &'r Ruleset, after: &'r Ruleset) -> Self {
        let mut sides: Vec<(Option<&Table>, Option<&Table>)> = after
            .tables
            .iter()
            .map(|ta| (before.table(&ta.name), Some(ta)))
            .collect();
        sides.extend(
            before
                .tables
                .iter()
                .filter(|t| after.table(&t.name).is_none())
                .map(|tb| (Some(tb), None)),
        );
        let empties = sides
            .iter()
            .map(|side| match *side {
                (None, Some(t)) | (Some(t), None) => Some(empty_like(t)),
                _ => None,
            })
            .collect();
        Tables { sides, empties }
    }

    /// Each pair's status, old table and new table.
    fn pairs(&self) -> Vec<(Status, &Table, &Table)> {
        self.sides
            .iter()
            .zip(&self.empties)
            .filter_map(|(side, empty)| match (*side, empty) {
                ((Some(b), Some(a)), _) => Some((Status::Changed, b, a)),
                ((None, Some(a)), Some(e)) => Some((Status::Added, e, a)),
                ((Some(b), None), Some(e)) => Some((Status::Removed, b, e)),
                _ => None,
            })
            .collect()
    }
}

/// The changes of each pair of tables.
fn table_changes<'p>(pairs: &[(Status, &'p Table, &'p Table)]) -> Vec<TableChanges<'p>> {
    pairs.iter().map(|(_, b, a)| changes(b, a)).collect()
}

/// The diff of the pairs of tables from their changes and owners.
fn assemble(
    pairs: &[(Status, &Table, &Table)],
    found: &[TableChanges<'_>],
    ob: &Owners<'_>,
    oa: &Owners<'_>,
) -> RulesetDiff {
    let tables = pairs
        .iter()
        .zip(found)
        .filter_map(|(&(status, tb, ta), found)| table_diff(status, tb, ta, found, ob, oa))
        .collect();
    RulesetDiff { tables }
}

fn empty_like(t: &Table) -> Table {
    Table::new(t.name.clone(), t.family)
}

/// The diff of one table (`before` and `after`: an empty table for an
/// added or removed one) from the changes `found`.
fn table_diff(
    status: Status,
    tb: &Table,
    ta: &Table,
    found: &TableChanges<'_>,
    ob: &Owners<'_>,
    oa: &Owners<'_>,
) -> Option<TableDiff> {
    let name = ta.name.clone();
    let mut chains = Vec::new();
    for c in &found.chains {
        match (c.before, c.after) {
            (Some(cb), Some(ca)) if !c.redeclared() => chains.push(ChainDiff {
                chain: ca.name.clone(),
                kind: ca.kind.clone(),
                service: oa.chain(&name, ca.name.as_str()).cloned(),
                status: Status::Changed,
                edits: rule_edits(&name, cb, ca, ob, oa),
            }),
            (Some(cb), Some(ca)) => {
                // Redeclared: removed and added again.
                chains.push(whole_chain(&name, cb, Status::Removed, ob));
                chains.push(whole_chain(&name, ca, Status::Added, oa));
            }
            (None, Some(ca)) => chains.push(whole_chain(&name, ca, Status::Added, oa)),
            (Some(cb), None) => chains.push(whole_chain(&name, cb, Status::Removed, ob)),
            (None, None) => {}
        }
    }
    let mut containers = Vec::new();
    for c in &found.containers {
        match (c.before, c.after) {
            (Some(_), Some(ca)) if !c.redeclared() => containers.push(ContainerDiff {
                name: ca.name().to_string(),
                kind: ca.kind(),
                service: oa.set(&name, ca.name()).cloned(),
                status: Status::Changed,
                elements: c
                    .elements
                    .iter()
                    .map(|e| element_edit(&name, ca.name(), e, ob, oa))
                    .collect(),
            }),
            (Some(cb), Some(ca)) => {
                containers.push(whole_container(&name, cb, Status::Removed, ob));
                containers.push(whole_container(&name, ca, Status::Added, oa));
            }
            (None, Some(ca)) => containers.push(whole_container(&name, ca, Status::Added, oa)),
            (Some(cb), None) => containers.push(whole_container(&name, cb, Status::Removed, ob)),
            (None, None) => {}
        }
    }
    let counters_added: Vec<String> = found.counters_added.iter().map(|c| c.to_string()).collect();
    let counters_removed: Vec<String> = found
        .counters_removed
        .iter()
        .map(|c| c.to_string())
        .collect();
    if status == Status::Changed && found.is_empty() && tb.comment == ta.comment {
        return None;
    }
    Some(TableDiff {
        table: name,
        family: ta.family,
        status,
        chains,
        containers,
        counters_added,
        counters_removed,
    })
}

fn element_edit(
    table: &str,
    container: &str,
    e: &ElementChange<'_>,
    ob: &Owners<'_>,
    oa: &Owners<'_>,
) -> ElementEdit {
    match (e.before, e.after) {
        (Some((eb, vb)), None) => ElementEdit {
            op: ElementOp::Remove,
            element: eb.clone(),
            before: vb.cloned(),
            after: None,
            service: ob.element(table, container, &eb.key).cloned(),
        },
        (None, Some((ea, va))) => ElementEdit {
            op: ElementOp::Add,
            element: ea.clone(),
            before: None,
            after: va.cloned(),
            service: oa.element(table, container, &ea.key).cloned(),
        },
        (Some((eb, vb)), Some((ea, va))) => ElementEdit {
            op: ElementOp::Change,
            element: ea.clone(),
            before: vb.cloned(),
            after: va.cloned(),
            service: oa
                .element(table, container, &ea.key)
                .or_else(|| ob.element(table, container, &eb.key))
                .cloned(),
        },
        (None, None) => unreachable!("an element change has a side"),
    }
}

fn whole_chain(table: &str, c: &Chain, status: Status, owners: &Owners<'_>) -> ChainDiff {
    let op = if status == Status::Removed {
        EditOp::Delete
    } else {
        EditOp::Insert
    };
    ChainDiff {
        chain: c.name.clone(),
        kind: c.kind.clone(),
        service: owners.chain(table, c.name.as_str()).cloned(),
        status,
        edits: c
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| RuleEdit {
                op,
                index,
                rule: rule.clone(),
                service: owners.rule(table, c.name.as_str(), rule),
            })
            .collect(),
    }
}

/// A shortest edit script turning the rules `before` into `after` (Myers,
/// after the common prefix and suffix; past 1000 differences the middle is
/// replaced wholesale): `(Delete, i)` with `i` a position in `before`,
/// `(Insert, j)` with `j` a position in `after`. Applied as deletes from the
/// highest position down, then inserts from the lowest up, it gives
/// `after`.
///
/// ```
/// use kproxy_core::diff::{EditOp, rule_edit_script};
/// use kproxy_core::ir::{Rule, Verdict};
/// let r = |v| Rule::new().verdict(v);
/// let before = [r(Verdict::Accept), r(Verdict::Drop)];
/// let after = [r(Verdict::Accept), r(Verdict::Return), r(Verdict::Drop)];
/// assert_eq!(rule_edit_script(&before, &after), [(EditOp::Insert, 1)]);
/// ```
pub fn rule_edit_script(before: &[Rule], after: &[Rule]) -> Vec<(EditOp, usize)> {
    edit_script(before, after)
        .into_iter()
        .map(|s| match s {
            Step::Delete(i) => (EditOp::Delete, i),
            Step::Insert(j) => (EditOp::Insert, j),
        })
        .collect()
}

fn rule_edits(
    table: &str,
    cb: &Chain,
    ca: &Chain,
    ob: &Owners<'_>,
    oa: &Owners<'_>,
) -> Vec<RuleEdit> {
    let chain = ca.name.as_str();
    edit_script(&cb.rules, &ca.rules)
        .into_iter()
        .map(|e| match e {
            Step::Delete(i) => RuleEdit {
                op: EditOp::Delete,
                index: i,
                rule: cb.rules[i].clone(),
                service: ob.rule(table, chain, &cb.rules[i]),
            },
            Step::Insert(j) => RuleEdit {
                op: EditOp::Insert,
                index: j,
                rule: ca.rules[j].clone(),
                service: oa.rule(table, chain, &ca.rules[j]),
            },
        })
        .collect()
}

fn whole_container(
    table: &str,
    c: ContainerRef<'_>,
    status: Status,
    owners: &Owners<'_>,
) -> ContainerDiff {
    let removed = status == Status::Removed;
    ContainerDiff {
        name: c.name().to_string(),
        kind: c.kind(),
        service: owners.set(table, c.name()).cloned(),
        status,
        elements: c
            .elements()
            .map(|(e, v)| ElementEdit {
                op: if removed {
                    ElementOp::Remove
                } else {
                    ElementOp::Add
                },
                element: e.clone(),
                before: if removed { v.cloned() } else { None },
                after: if removed { None } else { v.cloned() },
                service: owners.element(table, c.name(), &e.key).cloned(),
            })
            .collect(),
    }
}

impl RulesetDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The Services that have changes (`None`: node-level changes).
    pub fn services(&self) -> BTreeSet<Option<NamespacedName>> {
        let mut out = BTreeSet::new();
        for t in &self.tables {
            for c in &t.chains {
                out.extend(c.edits.iter().map(|e| e.service.clone()));
                if c.edits.is_empty() {
                    out.insert(c.service.clone());
                }
            }
            for c in &t.containers {
                out.extend(c.elements.iter().map(|e| e.service.clone()));
                if c.elements.is_empty() {
                    out.insert(c.service.clone());
                }
            }
            if !t.counters_added.is_empty() || !t.counters_removed.is_empty() {
                out.insert(None);
            }
        }
        out
    }

    /// The part of the diff that belongs to `service` (`None`: the
    /// node-level part): chains and containers it owns whole, and its rule
    /// and element edits in shared ones.
    ///
    /// ```
    /// use kproxy_core::diff::diff;
    /// use kproxy_core::ir::*;
    /// use kproxy_core::model::{IpFamily, NamespacedName};
    ///
    /// let before = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
    /// let mut after = before.clone();
    /// let mut services = Chain::new("KUBE-SERVICES");
    /// services.push(Rule::new()
    ///     .with(Match::Comment("ns/a cluster IP".into()))
    ///     .verdict(Verdict::Jump("KUBE-SVC-A".into())));
    /// after.chains.push(services);
    /// let d = diff(&Ruleset { tables: vec![before] }, &Ruleset { tables: vec![after] });
    /// let a = d.for_service(Some(&NamespacedName::new("ns", "a")));
    /// assert_eq!(a.tables[0].chains[0].edits.len(), 1);
    /// // The node-level part: KUBE-SERVICES itself is new, its rule is ns/a's.
    /// let node = d.for_service(None);
    /// assert!(node.tables[0].chains[0].edits.is_empty());
    /// ```
    pub fn for_service(&self, service: Option<&NamespacedName>) -> RulesetDiff {
        self.by_service()
            .remove(&service.cloned())
            .unwrap_or_default()
    }

    /// The diff split by Service in one pass ([`Self::for_service`] for
    /// each of [`Self::services`]); node-level changes under `None`.
    pub fn by_service(&self) -> BTreeMap<Option<NamespacedName>, RulesetDiff> {
        let mut groups: BTreeMap<Option<NamespacedName>, RulesetDiff> = BTreeMap::new();
        // The group's diff of table `t`, created on first use.
        fn table<'a>(
            groups: &'a mut BTreeMap<Option<NamespacedName>, RulesetDiff>,
            service: &Option<NamespacedName>,
            t: &TableDiff,
        ) -> &'a mut TableDiff {
            let d = groups.entry(service.clone()).or_default();
            let fresh = d
                .tables
                .last()
                .is_none_or(|l| l.table != t.table || l.family != t.family);
            if fresh {
                d.tables.push(TableDiff {
                    table: t.table.clone(),
                    family: t.family,
                    status: t.status,
                    chains: Vec::new(),
                    containers: Vec::new(),
                    counters_added: Vec::new(),
                    counters_removed: Vec::new(),
                });
            }
            let n = d.tables.len() - 1;
            &mut d.tables[n]
        }
        for t in &self.tables {
            if t.status != Status::Changed
                || !t.counters_added.is_empty()
                || !t.counters_removed.is_empty()
            {
                let node = table(&mut groups, &None, t);
                node.counters_added = t.counters_added.clone();
                node.counters_removed = t.counters_removed.clone();
            }
            for c in &t.chains {
                if c.service.is_some() {
                    table(&mut groups, &c.service, t).chains.push(c.clone());
                    continue;
                }
                let mut split: BTreeMap<&Option<NamespacedName>, Vec<RuleEdit>> = BTreeMap::new();
                for e in &c.edits {
                    split.entry(&e.service).or_default().push(e.clone());
                }
                if c.status != Status::Changed {
                    split.entry(&None).or_default();
                }
                for (service, edits) in split {
                    table(&mut groups, service, t).chains.push(ChainDiff {
                        chain: c.chain.clone(),
                        kind: c.kind.clone(),
                        service: None,
                        status: c.status,
                        edits,
                    });
                }
            }
            for c in &t.containers {
                if c.service.is_some() {
                    table(&mut groups, &c.service, t).containers.push(c.clone());
                    continue;
                }
                let mut split: BTreeMap<&Option<NamespacedName>, Vec<ElementEdit>> =
                    BTreeMap::new();
                for e in &c.elements {
                    split.entry(&e.service).or_default().push(e.clone());
                }
                if c.status != Status::Changed {
                    split.entry(&None).or_default();
                }
                for (service, elements) in split {
                    table(&mut groups, service, t)
                        .containers
                        .push(ContainerDiff {
                            name: c.name.clone(),
                            kind: c.kind,
                            service: None,
                            status: c.status,
                            elements,
                        });
                }
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{KeyValue, Match, Set, Verdict};
    use crate::model::IpFamily;

    fn nft_table() -> Table {
        Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4))
    }

    fn set(name: &str, keys: &[&str]) -> Set {
        Set {
            name: name.into(),
            type_spec: "ipv4_addr".into(),
            flags: vec![],
            timeout: None,
            comment: None,
            elements: keys
                .iter()
                .map(|k| Element {
                    key: vec![KeyValue::Ip(k.parse().unwrap())],
                    comment: None,
                })
                .collect(),
        }
    }

    #[test]
    fn elements_are_diffed_by_key() {
        let mut b = nft_table();
        b.sets.push(set("cluster-ips", &["10.0.0.1", "10.0.0.2"]));
        let mut a = nft_table();
        a.sets.push(set("cluster-ips", &["10.0.0.2", "10.0.0.3"]));
        let d = diff(&Ruleset { tables: vec![b] }, &Ruleset { tables: vec![a] });
        let c = &d.tables[0].containers[0];
        let ops: Vec<_> = c.elements.iter().map(|e| e.op).collect();
        assert_eq!(ops, [ElementOp::Remove, ElementOp::Add]);
        let u = d.update();
        assert_eq!(u.tables[0].add_elements.len(), 1);
        assert_eq!(u.tables[0].remove_elements.len(), 1);
        assert!(u.tables[0].rewrite_chains.is_empty());
    }

    #[test]
    fn redeclared_set_is_removed_and_added() {
        let mut b = nft_table();
        b.sets.push(set("s", &["10.0.0.1"]));
        let mut a = b.clone();
        a.sets[0].flags = vec!["interval".into()];
        let d = diff(&Ruleset { tables: vec![b] }, &Ruleset { tables: vec![a] });
        let st: Vec<_> = d.tables[0].containers.iter().map(|c| c.status).collect();
        assert_eq!(st, [Status::Removed, Status::Added]);
    }

    #[test]
    fn identical_rulesets_have_no_diff() {
        let mut t = nft_table();
        let mut c = Chain::new("services");
        c.push(Rule::new().verdict(Verdict::Accept));
        t.chains.push(c);
        let rs = Ruleset { tables: vec![t] };
        assert!(diff(&rs, &rs).is_empty());
        assert!(diff(&rs, &rs).update().tables.is_empty());
    }

    #[test]
    fn shared_chain_edits_are_split_by_service() {
        let mut b = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
        b.chains.push(Chain::new("KUBE-SERVICES"));
        let mut a = b.clone();
        for s in ["ns/a", "ns/b"] {
            a.chains[0].push(
                Rule::new()
                    .with(Match::Comment(format!("{s} cluster IP")))
                    .verdict(Verdict::Accept),
            );
        }
        let d = diff(&Ruleset { tables: vec![b] }, &Ruleset { tables: vec![a] });
        let svcs: Vec<String> = d
            .services()
            .into_iter()
            .map(|s| s.map(|s| s.to_string()).unwrap_or_default())
            .collect();
        assert_eq!(svcs, ["ns/a", "ns/b"]);
        let a = NamespacedName::new("ns", "a");
        let only_a = d.for_service(Some(&a));
        assert_eq!(only_a.tables[0].chains[0].edits.len(), 1);
        assert!(d.for_service(None).is_empty());
    }
}
