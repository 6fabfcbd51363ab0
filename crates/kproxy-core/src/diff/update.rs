//! The update planner: a [`RulesetDiff`] as the operations of a partial
//! sync.

use crate::ir::{Element, MapValue, TableFamily};
use crate::names::ChainName;

use super::{ContainerKind, ElementOp, RulesetDiff, Status, TableDiff};

impl RulesetDiff {
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
pub struct ElementUpdate {
    /// The set or map.
    pub container: String,
    /// The element.
    pub element: Element,
    /// Its value (maps).
    pub value: Option<MapValue>,
}
