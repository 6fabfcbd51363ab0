//! A transaction: the ordered commands kube-proxy sends to `nft -f -` in one
//! sync, and the table state they leave behind.
//!
//! ```
//! use kproxy_core::ir::{Chain, Rule, Verdict};
//! use kproxy_core::model::IpFamily;
//! use kproxy_nft::tx::{Op, Transaction};
//!
//! let mut tx = Transaction::new(IpFamily::V4, "kube-proxy");
//! tx.push(Op::AddTable { comment: None });
//! tx.push(Op::AddChain(Chain::new("reject-chain")));
//! tx.push(Op::AddRule("reject-chain".into(), Rule::new().verdict(Verdict::Reject)));
//! tx.push(Op::FlushChain("reject-chain".into()));
//! let table = tx.apply().unwrap();
//! assert!(table.chain("reject-chain").unwrap().rules.is_empty());
//! ```

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use kproxy_core::ir::{Chain, Counter, Element, KeyValue, Map, MapValue, Set, Table, TableFamily};
use kproxy_core::model::IpFamily;
use kproxy_core::names::ChainName;

use crate::NftError;

/// One command of a transaction (knftables verbs `add`, `flush`, `delete`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add table FAMILY NAME [{ comment "…" ; }]` (on a dormant table,
    /// wakes it: its base chains' hooks are registered).
    AddTable {
        /// The table comment.
        comment: Option<String>,
    },
    /// `add table FAMILY NAME { [comment "…" ;] flags dormant ; }`: a table
    /// whose base chains see no packet until an [`Op::AddTable`] wakes it
    /// (a first sync written in several transactions).
    AddDormantTable {
        /// The table comment.
        comment: Option<String>,
    },
    /// `add chain …` (the chain's rules are ignored; see [`Op::AddRule`]).
    AddChain(Chain),
    /// `delete table …` (with everything in it).
    DeleteTable,
    /// `flush chain …`
    FlushChain(ChainName),
    /// `delete chain …`
    DeleteChain(ChainName),
    /// `add rule … CHAIN RULE`
    AddRule(ChainName, kproxy_core::ir::Rule),
    /// `add set …` (elements are ignored; see [`Op::AddSetElement`]).
    AddSet(Set),
    /// `flush set …`
    FlushSet(String),
    /// `delete set …`
    DeleteSet(String),
    /// `add map …` (elements are ignored; see [`Op::AddMapElement`]).
    AddMap(Map),
    /// `delete map …`
    DeleteMap(String),
    /// `add element … SET { KEY }`
    AddSetElement(String, Element),
    /// `add element … MAP { KEY : VALUE }`
    AddMapElement(String, Element, MapValue),
    /// `delete element … SET_OR_MAP { KEY }`
    DeleteElement(String, Element),
    /// `add counter …`
    AddCounter(Counter),
    /// `delete counter …`
    DeleteCounter(String),
}

/// An ordered list of commands on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The family (`ip` / `ip6`).
    pub family: IpFamily,
    /// The table name.
    pub table: String,
    /// The commands, in order.
    pub ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction on table `table` of `family`.
    pub fn new(family: IpFamily, table: impl Into<String>) -> Self {
        Self {
            family,
            table: table.into(),
            ops: Vec::new(),
        }
    }

    /// Appends a command.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// The state of the table after running the transaction on an empty
    /// ruleset, as knftables' fake (and the kernel) would hold it: objects
    /// in creation order, rules in order, elements in order.
    ///
    /// Fails like `nft` would on a command that names a missing object.
    /// Linear in the number of commands: objects and element keys are
    /// looked up through indexes, not by scanning the table.
    pub fn apply(&self) -> Result<Table, NftError> {
        Self::fold(self.family, &self.table, self.ops.iter().cloned())
    }

    /// [`Transaction::apply`], consuming the transaction: its rules and
    /// elements move into the table instead of being copied (half the
    /// memory for a whole table's transaction).
    pub fn into_table(self) -> Result<Table, NftError> {
        Self::fold(self.family, &self.table, self.ops.into_iter())
    }

    fn fold(
        family: IpFamily,
        table: &str,
        ops: impl Iterator<Item = Op>,
    ) -> Result<Table, NftError> {
        let mut state: Option<State> = None;
        for op in ops {
            if let Op::DeleteTable = op {
                if state.take().is_none() {
                    return Err(missing("table", table));
                }
                continue;
            }
            if let Op::AddTable { comment } | Op::AddDormantTable { comment } = op {
                if state.is_none() {
                    let mut t = Table::new(table.to_string(), TableFamily::Nft(family));
                    t.comment = comment;
                    state = Some(State::new(t));
                }
                continue;
            }
            state
                .as_mut()
                .ok_or_else(|| missing("table", table))?
                .apply(op)?;
        }
        state
            .map(|s| s.table)
            .ok_or_else(|| missing("table", table))
    }
}

/// A table being built, with indexes by name and by element key.
struct State {
    table: Table,
    chains: HashMap<String, usize>,
    sets: HashMap<String, usize>,
    maps: HashMap<String, usize>,
    /// Element keys per set / map name.
    set_keys: HashMap<String, HashSet<Vec<KeyValue>>>,
    map_keys: HashMap<String, HashSet<Vec<KeyValue>>>,
}

impl State {
    fn new(table: Table) -> Self {
        let mut s = Self {
            table,
            chains: HashMap::new(),
            sets: HashMap::new(),
            maps: HashMap::new(),
            set_keys: HashMap::new(),
            map_keys: HashMap::new(),
        };
        s.reindex();
        s
    }

    /// Rebuilds the name indexes (after a delete shifted positions).
    fn reindex(&mut self) {
        self.chains = index(self.table.chains.iter().map(|c| c.name.as_str()));
        self.sets = index(self.table.sets.iter().map(|s| s.name.as_str()));
        self.maps = index(self.table.maps.iter().map(|m| m.name.as_str()));
    }

    fn chain_mut(&mut self, name: &str) -> Result<&mut Chain, NftError> {
        let i = *self
            .chains
            .get(name)
            .ok_or_else(|| missing("chain", name))?;
        Ok(&mut self.table.chains[i])
    }

    fn set_index(&self, name: &str) -> Result<usize, NftError> {
        self.sets
            .get(name)
            .copied()
            .ok_or_else(|| missing("set", name))
    }

    fn map_index(&self, name: &str) -> Result<usize, NftError> {
        self.maps
            .get(name)
            .copied()
            .ok_or_else(|| missing("map", name))
    }

    fn apply(&mut self, op: Op) -> Result<(), NftError> {
        let t = &mut self.table;
        match op {
            Op::AddTable { .. } | Op::AddDormantTable { .. } | Op::DeleteTable => {}
            Op::AddChain(c) => {
                if !self.chains.contains_key(c.name.as_str()) {
                    let mut c = c;
                    c.rules.clear();
                    self.chains.insert(c.name.to_string(), t.chains.len());
                    t.chains.push(c);
                }
            }
            Op::FlushChain(name) => self.chain_mut(name.as_str())?.rules.clear(),
            Op::DeleteChain(name) => {
                let i = *self
                    .chains
                    .get(name.as_str())
                    .ok_or_else(|| missing("chain", name.as_str()))?;
                t.chains.remove(i);
                self.reindex();
            }
            Op::AddRule(chain, rule) => self.chain_mut(chain.as_str())?.rules.push(rule),
            Op::AddSet(s) => {
                if !self.sets.contains_key(&s.name) {
                    let mut s = s;
                    s.elements.clear();
                    self.sets.insert(s.name.clone(), t.sets.len());
                    self.set_keys.insert(s.name.clone(), HashSet::new());
                    t.sets.push(s);
                }
            }
            Op::FlushSet(name) => {
                let i = self.set_index(&name)?;
                self.table.sets[i].elements.clear();
                self.set_keys.insert(name, HashSet::new());
            }
            Op::DeleteSet(name) => {
                let i = self.set_index(&name)?;
                self.table.sets.remove(i);
                self.set_keys.remove(&name);
                self.reindex();
            }
            Op::AddMap(m) => {
                if !self.maps.contains_key(&m.name) {
                    let mut m = m;
                    m.elements.clear();
                    self.maps.insert(m.name.clone(), t.maps.len());
                    self.map_keys.insert(m.name.clone(), HashSet::new());
                    t.maps.push(m);
                }
            }
            Op::DeleteMap(name) => {
                let i = self.map_index(&name)?;
                self.table.maps.remove(i);
                self.map_keys.remove(&name);
                self.reindex();
            }
            Op::AddSetElement(name, e) => {
                let i = self.set_index(&name)?;
                if self.set_keys.entry(name).or_default().insert(e.key.clone()) {
                    self.table.sets[i].elements.push(e);
                }
            }
            Op::AddMapElement(name, e, v) => {
                let i = self.map_index(&name)?;
                if self.map_keys.entry(name).or_default().insert(e.key.clone()) {
                    self.table.maps[i].elements.push((e, v));
                }
            }
            Op::DeleteElement(name, e) => {
                let found = if let Some(&i) = self.sets.get(&name) {
                    let keys = self.set_keys.entry(name.clone()).or_default();
                    keys.remove(&e.key) && {
                        self.table.sets[i].elements.retain(|x| x.key != e.key);
                        true
                    }
                } else {
                    let i = self.map_index(&name)?;
                    let keys = self.map_keys.entry(name.clone()).or_default();
                    keys.remove(&e.key) && {
                        self.table.maps[i].elements.retain(|(x, _)| x.key != e.key);
                        true
                    }
                };
                if !found {
                    return Err(missing("element", &name));
                }
            }
            Op::AddCounter(c) => {
                if !t.counters.iter().any(|x| x.name == c.name) {
                    t.counters.push(c);
                }
            }
            Op::DeleteCounter(name) => {
                let before = t.counters.len();
                t.counters.retain(|c| c.name != name);
                if t.counters.len() == before {
                    return Err(missing("counter", &name));
                }
            }
        }
        Ok(())
    }
}

fn index<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    names.enumerate().map(|(i, n)| (n.to_string(), i)).collect()
}

fn missing(kind: &str, name: &str) -> NftError {
    NftError::Transaction(format!("{kind} {name} does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_core::ir::KeyValue;

    fn set() -> Set {
        Set {
            name: "cluster-ips".into(),
            type_spec: "ipv4_addr".into(),
            flags: Vec::new(),
            timeout: None,
            comment: None,
            elements: Vec::new(),
        }
    }

    fn element(ip: &str) -> Element {
        Element {
            key: vec![KeyValue::Ip(ip.parse().expect("ip"))],
            comment: None,
        }
    }

    #[test]
    fn delete_element_and_table() {
        let mut tx = Transaction::new(IpFamily::V4, "kube-proxy");
        tx.push(Op::AddTable { comment: None });
        tx.push(Op::AddSet(set()));
        tx.push(Op::AddSetElement("cluster-ips".into(), element("10.0.0.1")));
        tx.push(Op::AddSetElement("cluster-ips".into(), element("10.0.0.2")));
        tx.push(Op::DeleteElement("cluster-ips".into(), element("10.0.0.1")));
        let t = tx.apply().expect("applies");
        assert_eq!(t.sets[0].elements, [element("10.0.0.2")]);
        assert_eq!(
            crate::print::print(&tx, Default::default())
                .expect("print")
                .lines()
                .nth(4),
            Some("delete element ip kube-proxy cluster-ips { 10.0.0.1 }")
        );
        // Deleting what is not there fails, as nft does.
        tx.push(Op::DeleteElement("cluster-ips".into(), element("10.0.0.1")));
        assert!(tx.apply().is_err());
        // A table deleted and added again is empty.
        let mut tx = Transaction::new(IpFamily::V4, "kube-proxy");
        tx.push(Op::AddTable { comment: None });
        tx.push(Op::AddSet(set()));
        tx.push(Op::DeleteTable);
        tx.push(Op::AddTable { comment: None });
        assert!(tx.apply().expect("applies").sets.is_empty());
        assert_eq!(
            crate::print::print(&tx, Default::default())
                .expect("print")
                .lines()
                .nth(2),
            Some("delete table ip kube-proxy")
        );
    }
}
