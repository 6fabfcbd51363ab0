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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::ir::{
    Chain, ChainKind, Element, KeyValue, Map, MapValue, Rule, Ruleset, Set, Table, TableFamily,
};
use crate::model::NamespacedName;
use crate::names::ChainName;
use crate::owners::Owners;

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
pub struct RulesetDiff {
    /// Tables with a difference, in the new ruleset's order (removed tables last).
    pub tables: Vec<TableDiff>,
}

/// The difference within one table.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    let ob = Owners::of(before);
    let oa = Owners::of(after);
    let mut tables = Vec::new();
    for ta in &after.tables {
        let d = match before.table(&ta.name) {
            Some(tb) => table_diff(Some(tb), Some(ta), &ob, &oa),
            None => table_diff(None, Some(ta), &ob, &oa),
        };
        tables.extend(d);
    }
    for tb in before
        .tables
        .iter()
        .filter(|t| after.table(&t.name).is_none())
    {
        tables.extend(table_diff(Some(tb), None, &ob, &oa));
    }
    RulesetDiff { tables }
}

fn empty_like(t: &Table) -> Table {
    Table::new(t.name.clone(), t.family)
}

/// A set or a map, seen as a container of elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRef<'a> {
    /// A set.
    Set(&'a Set),
    /// A map.
    Map(&'a Map),
}

impl<'a> ContainerRef<'a> {
    /// Its name.
    pub fn name(self) -> &'a str {
        match self {
            ContainerRef::Set(s) => &s.name,
            ContainerRef::Map(m) => &m.name,
        }
    }
    /// Set or map.
    pub fn kind(self) -> ContainerKind {
        match self {
            ContainerRef::Set(_) => ContainerKind::Set,
            ContainerRef::Map(_) => ContainerKind::Map,
        }
    }
    /// Its elements with their values (maps), in order.
    pub fn elements(self) -> Box<dyn Iterator<Item = (&'a Element, Option<&'a MapValue>)> + 'a> {
        match self {
            ContainerRef::Set(s) => Box::new(s.elements.iter().map(|e| (e, None))),
            ContainerRef::Map(m) => Box::new(m.elements.iter().map(|(e, v)| (e, Some(v)))),
        }
    }
    /// Whether `other` declares the same container (type, flags, timeout,
    /// comment; elements aside).
    fn same_declaration(self, other: ContainerRef<'_>) -> bool {
        match (self, other) {
            (ContainerRef::Set(a), ContainerRef::Set(b)) => {
                a.type_spec == b.type_spec
                    && a.flags == b.flags
                    && a.timeout == b.timeout
                    && a.comment == b.comment
            }
            (ContainerRef::Map(a), ContainerRef::Map(b)) => {
                a.type_spec == b.type_spec
                    && a.value_type == b.value_type
                    && a.flags == b.flags
                    && a.comment == b.comment
            }
            _ => false,
        }
    }
}

/// A chain that differs between two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainChange<'a> {
    /// The chain in the old table (`None`: added).
    pub before: Option<&'a Chain>,
    /// The chain in the new table (`None`: removed).
    pub after: Option<&'a Chain>,
}

impl<'a> ChainChange<'a> {
    /// In both tables with a different declaration (kind or comment): it
    /// has to be removed and added again.
    pub fn redeclared(&self) -> bool {
        matches!((self.before, self.after), (Some(b), Some(a)) if b.kind != a.kind || b.comment != a.comment)
    }
    /// The chain's name.
    pub fn name(&self) -> &'a ChainName {
        match (self.after, self.before) {
            (Some(c), _) | (None, Some(c)) => &c.name,
            (None, None) => unreachable!("a change has a side"),
        }
    }
}

/// One element that differs between two versions of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementChange<'a> {
    /// The element and value before (`None`: added).
    pub before: Option<(&'a Element, Option<&'a MapValue>)>,
    /// The element and value after (`None`: removed).
    pub after: Option<(&'a Element, Option<&'a MapValue>)>,
}

/// A set or map that differs between two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerChange<'a> {
    /// The container in the old table (`None`: added).
    pub before: Option<ContainerRef<'a>>,
    /// The container in the new table (`None`: removed).
    pub after: Option<ContainerRef<'a>>,
    /// The elements that differ, when the container is in both with the
    /// same declaration: removals first in the old order, then additions
    /// and changes (same key, other value or comment) in the new order.
    pub elements: Vec<ElementChange<'a>>,
}

impl<'a> ContainerChange<'a> {
    /// In both tables with a different declaration.
    pub fn redeclared(&self) -> bool {
        matches!((self.before, self.after), (Some(b), Some(a)) if !b.same_declaration(a))
    }
    /// The container (the new one, else the old one).
    pub fn container(&self) -> ContainerRef<'a> {
        match (self.after, self.before) {
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => unreachable!("a change has a side"),
        }
    }
}

/// What differs between two versions of a table, borrowed from them: the
/// one comparison both [`diff`] (with edit scripts and owners on top) and
/// a node agent's partial syncs are built on. One pass of equality checks
/// through hash indexes; unchanged chains cost one comparison each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableChanges<'a> {
    /// Chains that differ: the new table's order, then removed chains in
    /// the old table's order.
    pub chains: Vec<ChainChange<'a>>,
    /// Sets, then maps, that differ: in the new table's order, then
    /// removed ones in the old table's order.
    pub containers: Vec<ContainerChange<'a>>,
    /// Named counters only in the new table.
    pub counters_added: Vec<&'a str>,
    /// Named counters only in the old table.
    pub counters_removed: Vec<&'a str>,
}

impl TableChanges<'_> {
    /// Whether the two tables hold the same chains, sets, maps and counters.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
            && self.containers.is_empty()
            && self.counters_added.is_empty()
            && self.counters_removed.is_empty()
    }
    /// Whether a chain, set or map keeps its name but changes its declaration.
    pub fn redeclares(&self) -> bool {
        self.redeclares_chains() || self.containers.iter().any(ContainerChange::redeclared)
    }
    /// Whether a chain keeps its name but changes its declaration.
    pub fn redeclares_chains(&self) -> bool {
        self.chains.iter().any(ChainChange::redeclared)
    }
}

impl<'a> TableChanges<'a> {
    /// The chains of the new table that differ (added or changed), in its
    /// order: what a sync writes.
    pub fn written_chains(&self) -> impl Iterator<Item = &'a Chain> + '_ {
        self.chains.iter().filter_map(|c| c.after)
    }
    /// The chains only in the old table, in its order.
    pub fn removed_chains(&self) -> impl Iterator<Item = &'a Chain> + '_ {
        self.chains
            .iter()
            .filter(|c| c.after.is_none())
            .filter_map(|c| c.before)
    }
    /// The chains only in the new table.
    pub fn added_chains(&self) -> impl Iterator<Item = &'a Chain> + '_ {
        self.chains
            .iter()
            .filter(|c| c.before.is_none())
            .filter_map(|c| c.after)
    }
}

/// Compares two versions of a table (their names and families aside).
///
/// ```
/// use kproxy_core::diff::changes;
/// use kproxy_core::ir::*;
/// use kproxy_core::model::IpFamily;
///
/// let mut last = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
/// last.chains.push(Chain::new("KUBE-SERVICES"));
/// last.chains.push(Chain::new("KUBE-SVC-A"));
/// let mut next = last.clone();
/// next.chains[0].push(Rule::new().verdict(Verdict::Jump("KUBE-SVC-B".into())));
/// next.chains.remove(1);
/// next.chains.push(Chain::new("KUBE-SVC-B"));
/// let c = changes(&last, &next);
/// let names: Vec<&str> = c.chains.iter().map(|c| c.name().as_str()).collect();
/// assert_eq!(names, ["KUBE-SERVICES", "KUBE-SVC-B", "KUBE-SVC-A"]);
/// assert!(c.chains[1].before.is_none() && c.chains[2].after.is_none());
/// assert!(changes(&last, &last).is_empty());
/// ```
pub fn changes<'a>(last: &'a Table, next: &'a Table) -> TableChanges<'a> {
    let mut out = TableChanges::default();
    let old: HashMap<&str, &Chain> = last.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &next.chains {
        match old.get(c.name.as_str()) {
            Some(o) if o.kind == c.kind && o.comment == c.comment && o.rules == c.rules => {}
            o => out.chains.push(ChainChange {
                before: o.copied(),
                after: Some(c),
            }),
        }
    }
    if next.chains.len() != last.chains.len() || out.chains.iter().any(|c| c.before.is_none()) {
        let new: HashSet<&str> = next.chains.iter().map(|c| c.name.as_str()).collect();
        out.chains.extend(
            last.chains
                .iter()
                .filter(|c| !new.contains(c.name.as_str()))
                .map(|c| ChainChange {
                    before: Some(c),
                    after: None,
                }),
        );
    }
    let containers = |t: &'a Table| -> Vec<ContainerRef<'a>> {
        t.sets
            .iter()
            .map(ContainerRef::Set)
            .chain(t.maps.iter().map(ContainerRef::Map))
            .collect()
    };
    let (cl, cn) = (containers(last), containers(next));
    let index = |v: &[ContainerRef<'a>]| -> HashMap<(ContainerKind, &'a str), ContainerRef<'a>> {
        v.iter().map(|c| ((c.kind(), c.name()), *c)).collect()
    };
    let (il, inx) = (index(&cl), index(&cn));
    for c in &cn {
        let change = match il.get(&(c.kind(), c.name())) {
            None => ContainerChange {
                before: None,
                after: Some(*c),
                elements: Vec::new(),
            },
            Some(o) if !o.same_declaration(*c) => ContainerChange {
                before: Some(*o),
                after: Some(*c),
                elements: Vec::new(),
            },
            Some(o) => {
                let elements = element_changes(*o, *c);
                if elements.is_empty() {
                    continue;
                }
                ContainerChange {
                    before: Some(*o),
                    after: Some(*c),
                    elements,
                }
            }
        };
        out.containers.push(change);
    }
    out.containers.extend(
        cl.iter()
            .filter(|c| !inx.contains_key(&(c.kind(), c.name())))
            .map(|c| ContainerChange {
                before: Some(*c),
                after: None,
                elements: Vec::new(),
            }),
    );
    let names =
        |t: &'a Table| -> HashSet<&'a str> { t.counters.iter().map(|c| c.name.as_str()).collect() };
    let (kl, kn) = (names(last), names(next));
    out.counters_added = next
        .counters
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !kl.contains(c))
        .collect();
    out.counters_removed = last
        .counters
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !kn.contains(c))
        .collect();
    out
}

fn element_changes<'a>(
    before: ContainerRef<'a>,
    after: ContainerRef<'a>,
) -> Vec<ElementChange<'a>> {
    type Entry<'a> = (&'a Element, Option<&'a MapValue>);
    let old: HashMap<&Vec<KeyValue>, Entry<'a>> =
        before.elements().map(|(e, v)| (&e.key, (e, v))).collect();
    let new: HashSet<&Vec<KeyValue>> = after.elements().map(|(e, _)| &e.key).collect();
    let mut out: Vec<ElementChange<'a>> = before
        .elements()
        .filter(|(e, _)| !new.contains(&e.key))
        .map(|b| ElementChange {
            before: Some(b),
            after: None,
        })
        .collect();
    for (e, v) in after.elements() {
        match old.get(&e.key) {
            Some((be, bv)) if *be == e && *bv == v => {}
            b => out.push(ElementChange {
                before: b.copied(),
                after: Some((e, v)),
            }),
        }
    }
    out
}

fn table_diff(
    before: Option<&Table>,
    after: Option<&Table>,
    ob: &Owners,
    oa: &Owners,
) -> Option<TableDiff> {
    let empty;
    let (status, tb, ta) = match (before, after) {
        (Some(b), Some(a)) => (Status::Changed, b, a),
        (None, Some(a)) => {
            empty = empty_like(a);
            (Status::Added, &empty, a)
        }
        (Some(b), None) => {
            empty = empty_like(b);
            (Status::Removed, b, &empty)
        }
        (None, None) => return None,
    };
    let name = ta.name.clone();
    let found = changes(tb, ta);
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
    ob: &Owners,
    oa: &Owners,
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

fn whole_chain(table: &str, c: &Chain, status: Status, owners: &Owners) -> ChainDiff {
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

fn rule_edits(table: &str, cb: &Chain, ca: &Chain, ob: &Owners, oa: &Owners) -> Vec<RuleEdit> {
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
    owners: &Owners,
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

/// One step of an edit script (positions in the old and new sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Delete(usize),
    Insert(usize),
}

/// Past this many differences, the middle of two sequences is replaced
/// wholesale instead of searched for a shortest script.
const MAX_EDIT_DISTANCE: usize = 1000;

/// A shortest edit script from `a` to `b` (Myers), after trimming the
/// common prefix and suffix. Deletes and inserts come in sequence order.
fn edit_script<T: PartialEq>(a: &[T], b: &[T]) -> Vec<Step> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a1, b1) = (&a[prefix..], &b[prefix..]);
    let suffix = a1
        .iter()
        .rev()
        .zip(b1.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a2, b2) = (&a1[..a1.len() - suffix], &b1[..b1.len() - suffix]);
    let steps = myers(a2, b2, MAX_EDIT_DISTANCE).unwrap_or_else(|| {
        (0..a2.len())
            .map(Step::Delete)
            .chain((0..b2.len()).map(Step::Insert))
            .collect()
    });
    steps
        .into_iter()
        .map(|s| match s {
            Step::Delete(i) => Step::Delete(i + prefix),
            Step::Insert(j) => Step::Insert(j + prefix),
        })
        .collect()
}

/// Myers' O((N+M)·D) shortest edit script, or `None` past `limit` differences.
fn myers<T: PartialEq>(a: &[T], b: &[T], limit: usize) -> Option<Vec<Step>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = n + m;
    if max == 0 {
        return Some(Vec::new());
    }
    let off = max + 1;
    let mut v = vec![0isize; (2 * max + 3) as usize];
    // trace[d]: v over k in -(d+1)..=d+1 before round d.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let at = |k: isize| (k + off) as usize;
    let max_d = max.min(limit as isize);
    for d in 0..=max_d {
        trace.push(v[at(-d - 1)..=at(d + 1)].to_vec());
        let mut k = -d;
        while k <= d {
            let mut x = if k == -d || (k != d && v[at(k - 1)] < v[at(k + 1)]) {
                v[at(k + 1)]
            } else {
                v[at(k - 1)] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[at(k)] = x;
            if x >= n && y >= m {
                return Some(backtrack(&trace, n, m));
            }
            k += 2;
        }
    }
    None
}

fn backtrack(trace: &[Vec<isize>], n: isize, m: isize) -> Vec<Step> {
    let mut steps = Vec::new();
    let (mut x, mut y) = (n, m);
    for (d, snap) in trace.iter().enumerate().rev() {
        let d = d as isize;
        if d == 0 {
            break;
        }
        let get = |k: isize| snap[(k + d + 1) as usize];
        let k = x - y;
        let prev_k = if k == -d || (k != d && get(k - 1) < get(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = get(prev_k);
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
        }
        if x == prev_x {
            steps.push(Step::Insert((y - 1) as usize));
        } else {
            steps.push(Step::Delete((x - 1) as usize));
        }
        x = prev_x;
        y = prev_y;
    }
    steps.reverse();
    steps
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

    /// The minimal update that turns the old ruleset into the new one.
    pub fn update(&self) -> Update {
        Update {
            tables: self.tables.iter().map(TableDiff::update).collect(),
        }
    }
}

impl TableDiff {
    fn update(&self) -> TableUpdate {
        let mut u = TableUpdate {
            table: self.table.clone(),
            family: self.family,
            create_table: self.status == Status::Added,
            delete_table: self.status == Status::Removed,
            ..TableUpdate::default_for(self)
        };
        for c in &self.chains {
            match c.status {
                Status::Added => {
                    u.create_chains.push(c.chain.clone());
                    u.rewrite_chains.push(c.chain.clone());
                }
                Status::Changed => u.rewrite_chains.push(c.chain.clone()),
                Status::Removed => u.delete_chains.push(c.chain.clone()),
            }
        }
        for c in &self.containers {
            match c.status {
                Status::Added => u.create_containers.push((c.kind, c.name.clone())),
                Status::Removed => u.delete_containers.push((c.kind, c.name.clone())),
                Status::Changed => {}
            }
            // Elements of a deleted container go with it.
            if c.status == Status::Removed {
                continue;
            }
            for e in &c.elements {
                match e.op {
                    ElementOp::Add => u.add_elements.push(ElementUpdate {
                        container: c.name.clone(),
                        element: e.element.clone(),
                        value: e.after.clone(),
                    }),
                    ElementOp::Remove => u.remove_elements.push(ElementUpdate {
                        container: c.name.clone(),
                        element: e.element.clone(),
                        value: e.before.clone(),
                    }),
                    ElementOp::Change => {
                        u.remove_elements.push(ElementUpdate {
                            container: c.name.clone(),
                            element: e.element.clone(),
                            value: e.before.clone(),
                        });
                        u.add_elements.push(ElementUpdate {
                            container: c.name.clone(),
                            element: e.element.clone(),
                            value: e.after.clone(),
                        });
                    }
                }
            }
        }
        u.create_counters = self.counters_added.clone();
        u.delete_counters = self.counters_removed.clone();
        u
    }
}

/// The operations of a partial sync, per table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// One entry per table with a difference.
    pub tables: Vec<TableUpdate>,
}

/// The operations of a partial sync on one table. Apply them in field
/// order: create the table, chains, sets, maps and counters; remove
/// elements, then add elements; rewrite chains (flush, then write the new
/// rules, which the new ruleset holds); delete the chains, containers and
/// counters nothing refers to any more; delete the table.
///
/// A chain whose declaration changed is both in `delete_chains` and in
/// `create_chains`: delete it first (after flushing what jumps to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUpdate {
    /// The table.
    pub table: String,
    /// Its family.
    pub family: TableFamily,
    /// The table is new.
    pub create_table: bool,
    /// The table goes away.
    pub delete_table: bool,
    /// Chains to create.
    pub create_chains: Vec<ChainName>,
    /// Sets and maps to create.
    pub create_containers: Vec<(ContainerKind, String)>,
    /// Named counters to create.
    pub create_counters: Vec<String>,
    /// Elements to remove (before adding, so a changed value is replaced).
    pub remove_elements: Vec<ElementUpdate>,
    /// Elements to add.
    pub add_elements: Vec<ElementUpdate>,
    /// Chains whose rules to rewrite from the new ruleset (flush + add;
    /// `iptables-restore` writes them whole).
    pub rewrite_chains: Vec<ChainName>,
    /// Chains to delete.
    pub delete_chains: Vec<ChainName>,
    /// Sets and maps to delete.
    pub delete_containers: Vec<(ContainerKind, String)>,
    /// Named counters to delete.
    pub delete_counters: Vec<String>,
}

impl TableUpdate {
    fn default_for(t: &TableDiff) -> Self {
        Self {
            table: t.table.clone(),
            family: t.family,
            create_table: false,
            delete_table: false,
            create_chains: Vec::new(),
            create_containers: Vec::new(),
            create_counters: Vec::new(),
            remove_elements: Vec::new(),
            add_elements: Vec::new(),
            rewrite_chains: Vec::new(),
            delete_chains: Vec::new(),
            delete_containers: Vec::new(),
            delete_counters: Vec::new(),
        }
    }
}

/// An element to add or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementUpdate {
    /// The set or map.
    pub container: String,
    /// The element.
    pub element: Element,
    /// Its value (maps).
    pub value: Option<MapValue>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Match, Set, Verdict};
    use crate::model::IpFamily;

    fn apply(a: &[char], b: &[char], steps: &[Step]) -> Vec<char> {
        // Replays a script: deletes by old index, inserts by new index.
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        let mut it = steps.iter().peekable();
        while i < a.len() || j < b.len() {
            match it.peek() {
                Some(Step::Delete(d)) if *d == i => {
                    i += 1;
                    it.next();
                }
                Some(Step::Insert(n)) if *n == j => {
                    out.push(b[j]);
                    j += 1;
                    it.next();
                }
                _ => {
                    assert_eq!(a[i], b[j], "kept elements must agree");
                    out.push(a[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        out
    }

    #[test]
    fn myers_finds_shortest_scripts() {
        let cases = [
            ("", "", 0),
            ("abc", "abc", 0),
            ("", "abc", 3),
            ("abc", "", 3),
            ("abcabba", "cbabac", 5),
            ("kitten", "sitting", 5),
            ("a1b2c3", "abc", 3),
            ("xaaaay", "aaaa", 2),
        ];
        for (a, b, d) in cases {
            let a: Vec<char> = a.chars().collect();
            let b: Vec<char> = b.chars().collect();
            let s = edit_script(&a, &b);
            assert_eq!(s.len(), d, "{a:?} -> {b:?}: {s:?}");
            assert_eq!(apply(&a, &b, &s), b);
        }
    }

    /// Length of a longest common subsequence (quadratic DP, for checking).
    fn lcs(a: &[char], b: &[char]) -> usize {
        let mut dp = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                dp[i][j] = if a[i] == b[j] {
                    dp[i + 1][j + 1] + 1
                } else {
                    dp[i + 1][j].max(dp[i][j + 1])
                };
            }
        }
        dp[0][0]
    }

    #[test]
    fn myers_scripts_are_valid_and_shortest_on_random_input() {
        // A small LCG: deterministic, no dependency.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..500 {
            let la = next(20) as usize;
            let lb = next(20) as usize;
            let a: Vec<char> = (0..la).map(|_| (b'a' + next(4) as u8) as char).collect();
            let b: Vec<char> = (0..lb).map(|_| (b'a' + next(4) as u8) as char).collect();
            let s = edit_script(&a, &b);
            assert_eq!(apply(&a, &b, &s), b, "{a:?} -> {b:?}");
            assert_eq!(s.len(), la + lb - 2 * lcs(&a, &b), "{a:?} -> {b:?}");
        }
    }

    #[test]
    fn myers_falls_back_past_the_limit() {
        let a: Vec<u32> = (0..10).collect();
        let b: Vec<u32> = (100..110).collect();
        assert!(myers(&a, &b, 3).is_none());
        assert!(myers(&a, &b, 20).is_some());
    }

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
