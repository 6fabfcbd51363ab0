//! The difference between the table the node holds and the next one, at
//! the granularity a sync writes: whole chains (a changed chain is
//! rewritten whole, as `iptables-restore` and kube-proxy's nftables syncs
//! do) and single set/map elements.
//!
//! This is [`kproxy_core::diff`]'s [`update`](kproxy_core::diff::RulesetDiff::update)
//! without what a sync does not need (rule edit scripts, owners, copies of
//! the tables): one pass of equality checks through hash indexes, so that
//! a one-Service change in a 10k-Service table is planned in milliseconds.
//! The kernel tests check that both agree with a fresh full sync.

use std::collections::{HashMap, HashSet};

use kproxy_core::diff::ContainerKind;
use kproxy_core::ir::{Chain, Element, KeyValue, MapValue, Table};

/// What changes in one table.
#[derive(Debug, Default)]
pub struct TableDelta<'a> {
    /// Chains only in the next table.
    pub create_chains: Vec<&'a Chain>,
    /// Chains to write whole (new ones included), in the next table's order.
    pub rewrite_chains: Vec<&'a Chain>,
    /// Chains only in the last table, in its order.
    pub delete_chains: Vec<&'a Chain>,
    /// A chain, set or map keeps its name but changes its declaration.
    pub redeclared: bool,
    /// Sets and maps to create.
    pub create_containers: Vec<(ContainerKind, &'a str)>,
    /// Sets and maps to delete.
    pub delete_containers: Vec<(ContainerKind, &'a str)>,
    /// Elements to remove (container, element): before the adds.
    pub remove_elements: Vec<(&'a str, &'a Element)>,
    /// Elements to add (container, element, value for maps).
    pub add_elements: Vec<(&'a str, &'a Element, Option<&'a MapValue>)>,
    /// Named counters to create.
    pub create_counters: Vec<&'a str>,
    /// Named counters to delete.
    pub delete_counters: Vec<&'a str>,
}

impl TableDelta<'_> {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.rewrite_chains.is_empty()
            && self.delete_chains.is_empty()
            && !self.redeclared
            && self.create_containers.is_empty()
            && self.delete_containers.is_empty()
            && self.remove_elements.is_empty()
            && self.add_elements.is_empty()
            && self.create_counters.is_empty()
            && self.delete_counters.is_empty()
    }
}

/// Compares the table the node holds (`last`) with the next one.
pub fn delta<'a>(last: &'a Table, next: &'a Table) -> TableDelta<'a> {
    let mut d = TableDelta::default();
    let old: HashMap<&str, &Chain> = last.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &next.chains {
        match old.get(c.name.as_str()) {
            None => {
                d.create_chains.push(c);
                d.rewrite_chains.push(c);
            }
            Some(o) if o.kind != c.kind || o.comment != c.comment => d.redeclared = true,
            Some(o) if o.rules != c.rules => d.rewrite_chains.push(c),
            Some(_) => {}
        }
    }
    let new: HashSet<&str> = next.chains.iter().map(|c| c.name.as_str()).collect();
    d.delete_chains = last
        .chains
        .iter()
        .filter(|c| !new.contains(c.name.as_str()))
        .collect();

    // Sets.
    let old_sets: HashMap<&str, &kproxy_core::ir::Set> =
        last.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_sets: HashSet<&str> = next.sets.iter().map(|s| s.name.as_str()).collect();
    for s in &next.sets {
        match old_sets.get(s.name.as_str()) {
            None => {
                d.create_containers.push((ContainerKind::Set, &s.name));
                d.add_elements
                    .extend(s.elements.iter().map(|e| (s.name.as_str(), e, None)));
            }
            Some(o)
                if o.type_spec != s.type_spec
                    || o.flags != s.flags
                    || o.timeout != s.timeout
                    || o.comment != s.comment =>
            {
                d.redeclared = true;
            }
            Some(o) => {
                let before: HashMap<&Vec<KeyValue>, &Element> =
                    o.elements.iter().map(|e| (&e.key, e)).collect();
                let after: HashSet<&Vec<KeyValue>> = s.elements.iter().map(|e| &e.key).collect();
                for e in &o.elements {
                    if !after.contains(&e.key) {
                        d.remove_elements.push((&s.name, e));
                    }
                }
                for e in &s.elements {
                    match before.get(&e.key) {
                        Some(b) if *b == e => {}
                        Some(b) => {
                            d.remove_elements.push((&s.name, b));
                            d.add_elements.push((&s.name, e, None));
                        }
                        None => d.add_elements.push((&s.name, e, None)),
                    }
                }
            }
        }
    }
    for s in &last.sets {
        if !new_sets.contains(s.name.as_str()) {
            d.delete_containers.push((ContainerKind::Set, &s.name));
        }
    }
    // Maps.
    let old_maps: HashMap<&str, &kproxy_core::ir::Map> =
        last.maps.iter().map(|m| (m.name.as_str(), m)).collect();
    let new_maps: HashSet<&str> = next.maps.iter().map(|m| m.name.as_str()).collect();
    for m in &next.maps {
        match old_maps.get(m.name.as_str()) {
            None => {
                d.create_containers.push((ContainerKind::Map, &m.name));
                d.add_elements.extend(
                    m.elements
                        .iter()
                        .map(|(e, v)| (m.name.as_str(), e, Some(v))),
                );
            }
            Some(o)
                if o.type_spec != m.type_spec
                    || o.value_type != m.value_type
                    || o.flags != m.flags
                    || o.comment != m.comment =>
            {
                d.redeclared = true;
            }
            Some(o) => {
                let before: HashMap<&Vec<KeyValue>, (&Element, &MapValue)> =
                    o.elements.iter().map(|(e, v)| (&e.key, (e, v))).collect();
                let after: HashSet<&Vec<KeyValue>> =
                    m.elements.iter().map(|(e, _)| &e.key).collect();
                for (e, _) in &o.elements {
                    if !after.contains(&e.key) {
                        d.remove_elements.push((&m.name, e));
                    }
                }
                for (e, v) in &m.elements {
                    match before.get(&e.key) {
                        Some((be, bv)) if *be == e && *bv == v => {}
                        Some((be, _)) => {
                            d.remove_elements.push((&m.name, be));
                            d.add_elements.push((&m.name, e, Some(v)));
                        }
                        None => d.add_elements.push((&m.name, e, Some(v))),
                    }
                }
            }
        }
    }
    for m in &last.maps {
        if !new_maps.contains(m.name.as_str()) {
            d.delete_containers.push((ContainerKind::Map, &m.name));
        }
    }
    // Counters.
    let old_counters: HashSet<&str> = last.counters.iter().map(|c| c.name.as_str()).collect();
    let new_counters: HashSet<&str> = next.counters.iter().map(|c| c.name.as_str()).collect();
    d.create_counters = next
        .counters
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !old_counters.contains(c))
        .collect();
    d.delete_counters = last
        .counters
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !new_counters.contains(c))
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use kproxy_core::ir::{Rule, TableFamily, Verdict};
    use kproxy_core::model::IpFamily;

    use super::*;

    #[test]
    fn chains_by_content() {
        let mut a = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
        a.chains.push(Chain::new("KUBE-SERVICES"));
        a.chains.push(Chain::new("KUBE-SVC-A"));
        let mut b = a.clone();
        b.chains[0].push(Rule::new().verdict(Verdict::Jump("KUBE-SVC-B".into())));
        b.chains.remove(1);
        b.chains.push(Chain::new("KUBE-SVC-B"));
        let d = delta(&a, &b);
        let names = |v: &[&Chain]| v.iter().map(|c| c.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&d.rewrite_chains), ["KUBE-SERVICES", "KUBE-SVC-B"]);
        assert_eq!(names(&d.create_chains), ["KUBE-SVC-B"]);
        assert_eq!(names(&d.delete_chains), ["KUBE-SVC-A"]);
        assert!(delta(&a, &a).is_empty());
    }
}
