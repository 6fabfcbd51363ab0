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

use kproxy_core::ir::{Chain, Counter, Element, Map, MapValue, Set, Table, TableFamily};
use kproxy_core::model::IpFamily;
use kproxy_core::names::ChainName;

use crate::NftError;

/// One command of a transaction (knftables verbs `add`, `flush`, `delete`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add table FAMILY NAME [{ comment "…" ; }]`
    AddTable {
        /// The table comment.
        comment: Option<String>,
    },
    /// `add chain …` (the chain's rules are ignored; see [`Op::AddRule`]).
    AddChain(Chain),
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
    pub fn apply(&self) -> Result<Table, NftError> {
        let mut table: Option<Table> = None;
        for op in &self.ops {
            if let Op::AddTable { comment } = op {
                if table.is_none() {
                    let mut t = Table::new(self.table.clone(), TableFamily::Nft(self.family));
                    t.comment = comment.clone();
                    table = Some(t);
                }
                continue;
            }
            let t = table
                .as_mut()
                .ok_or_else(|| missing("table", &self.table))?;
            apply_op(t, op)?;
        }
        table.ok_or_else(|| missing("table", &self.table))
    }
}

fn missing(kind: &str, name: &str) -> NftError {
    NftError::Transaction(format!("{kind} {name} does not exist"))
}

fn apply_op(t: &mut Table, op: &Op) -> Result<(), NftError> {
    match op {
        Op::AddTable { .. } => {}
        Op::AddChain(c) => {
            if t.chain(c.name.as_str()).is_none() {
                let mut c = c.clone();
                c.rules.clear();
                t.chains.push(c);
            }
        }
        Op::FlushChain(name) => {
            t.chain_mut(name.as_str())
                .ok_or_else(|| missing("chain", name.as_str()))?
                .rules
                .clear();
        }
        Op::DeleteChain(name) => {
            let before = t.chains.len();
            t.chains.retain(|c| &c.name != name);
            if t.chains.len() == before {
                return Err(missing("chain", name.as_str()));
            }
        }
        Op::AddRule(chain, rule) => {
            t.chain_mut(chain.as_str())
                .ok_or_else(|| missing("chain", chain.as_str()))?
                .rules
                .push(rule.clone());
        }
        Op::AddSet(s) => {
            if t.set(&s.name).is_none() {
                let mut s = s.clone();
                s.elements.clear();
                t.sets.push(s);
            }
        }
        Op::FlushSet(name) => {
            t.sets
                .iter_mut()
                .find(|s| &s.name == name)
                .ok_or_else(|| missing("set", name))?
                .elements
                .clear();
        }
        Op::DeleteSet(name) => {
            let before = t.sets.len();
            t.sets.retain(|s| &s.name != name);
            if t.sets.len() == before {
                return Err(missing("set", name));
            }
        }
        Op::AddMap(m) => {
            if t.map(&m.name).is_none() {
                let mut m = m.clone();
                m.elements.clear();
                t.maps.push(m);
            }
        }
        Op::DeleteMap(name) => {
            let before = t.maps.len();
            t.maps.retain(|m| &m.name != name);
            if t.maps.len() == before {
                return Err(missing("map", name));
            }
        }
        Op::AddSetElement(name, e) => {
            let set = t
                .sets
                .iter_mut()
                .find(|s| &s.name == name)
                .ok_or_else(|| missing("set", name))?;
            if !set.elements.iter().any(|x| x.key == e.key) {
                set.elements.push(e.clone());
            }
        }
        Op::AddMapElement(name, e, v) => {
            let map = t
                .maps
                .iter_mut()
                .find(|m| &m.name == name)
                .ok_or_else(|| missing("map", name))?;
            if !map.elements.iter().any(|(x, _)| x.key == e.key) {
                map.elements.push((e.clone(), v.clone()));
            }
        }
        Op::AddCounter(c) => {
            if !t.counters.iter().any(|x| x.name == c.name) {
                t.counters.push(c.clone());
            }
        }
        Op::DeleteCounter(name) => {
            let before = t.counters.len();
            t.counters.retain(|c| &c.name != name);
            if t.counters.len() == before {
                return Err(missing("counter", name));
            }
        }
    }
    Ok(())
}
