//! What differs between two versions of a table, borrowed from them: the
//! one comparison [`super::diff`] and a node agent's partial syncs are
//! built on.

/// Looked up only (the order never shows): a fixed-seed foldhash, as the
/// rest of the core hashes.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

use crate::ir::{Chain, Element, KeyValue, Map, MapValue, Set, Table};
use crate::names::ChainName;

use super::ContainerKind;

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
/// one comparison both [`diff`](super::diff()) (with edit scripts and owners on top) and
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

/// From how many chains [`changes`] compares a table's chains on two
/// threads.
const PARALLEL_CHAINS: usize = 4096;

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
    // The chains of `next` that differ, in its order.
    let differing = |chains: &'a [Chain]| -> Vec<ChainChange<'a>> {
        chains
            .iter()
            .filter_map(|c| match old.get(c.name.as_str()) {
                Some(o) if o.kind == c.kind && o.comment == c.comment && o.rules == c.rules => None,
                o => Some(ChainChange {
                    before: o.copied(),
                    after: Some(c),
                }),
            })
            .collect()
    };
    out.chains = if next.chains.len() >= PARALLEL_CHAINS {
        // Comparing every rule of a big table: half of it on another core.
        let (first, second) = next.chains.split_at(next.chains.len() / 2);
        std::thread::scope(|s| {
            let first = s.spawn(|| differing(first));
            let second = differing(second);
            let mut first = first
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            first.extend(second);
            first
        })
    } else {
        differing(&next.chains)
    };
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
