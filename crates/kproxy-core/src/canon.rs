//! A canonical form of a [`Ruleset`], so that what a backend builds and
//! what is read back from a node's dump compare equal when they hold the
//! same rules.
//!
//! The kernel does not keep everything kproxy's IR records, and the dump
//! tools print what they keep in their own order. [`canonical`] applies
//! this normalisation, to both sides of a comparison:
//!
//! Every table:
//! * tables in order of family, then name;
//! * table and chain comments dropped (nft 1.0.x's JSON has no field for
//!   them; iptables has none);
//! * a network of one address (`/32`, `/128`) is that address, in
//!   matches, anonymous sets and set elements (iptables-save prints
//!   `-d 10.0.0.1/32` for `-d 10.0.0.1`);
//! * a random DNAT with one destination is a plain DNAT, and an anonymous
//!   address set with one member a plain address match (the same kernel
//!   expressions; nft lists them that way).
//!
//! iptables tables (`iptables-save` lists every built-in chain and sorts
//! the rest; it prints `-s`/`-d`/`-i`/`-p` before the `-m` matches):
//! * built-in chains without rules are dropped, and tables left empty;
//! * built-in chains first, in hook order, then the others by name;
//! * the matches of a rule are sorted by kind (a rule's matches are a
//!   conjunction: the order does not change what it does), opaque matches
//!   last.
//!
//! nftables tables (`nft list ruleset` lists objects in its own order and
//! keeps a rule's comment apart from its statements):
//! * chains, sets, maps and counters by name; set and map elements sorted;
//! * a rule's comment moved after its other matches;
//! * set and map comments dropped (nft 1.0.x's JSON parser ignores them, so
//!   a ruleset loaded with `nft -j -f` has none);
//! * set flags sorted, without `dynamic` (nft 1.0.x's JSON cannot create
//!   it; a set with `timeout` and an `update` rule is dynamic anyway), and
//!   the elements of sets with a `timeout` (ClientIP affinity: run-time
//!   state, filled by traffic) dropped.
//!
//! ```
//! use kproxy_core::canon::canonical;
//! use kproxy_core::ir::*;
//! use kproxy_core::model::{IpFamily, Protocol};
//!
//! let ip = |s: &str| AddrMatch::Net(s.parse().unwrap());
//! let mut built = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
//! let mut c = Chain::new("KUBE-SERVICES");
//! c.push(Rule::new()
//!     .with(Match::Comment("ns/svc cluster IP".into()))
//!     .with(Match::Protocol(Protocol::Tcp))
//!     .with(Match::Addr { dir: Direction::Dst, addr: AddrMatch::Ip("10.0.0.1".parse().unwrap()), negate: false })
//!     .verdict(Verdict::Accept));
//! built.chains.push(c);
//! // As iptables-save prints it: `-d 10.0.0.1/32 -p tcp -m comment ...`,
//! // with an empty built-in chain listed too.
//! let mut dumped = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
//! dumped.chains.push(Chain::builtin(Hook::Prerouting));
//! let mut c = Chain::new("KUBE-SERVICES");
//! c.push(Rule::new()
//!     .with(Match::Addr { dir: Direction::Dst, addr: ip("10.0.0.1/32"), negate: false })
//!     .with(Match::Protocol(Protocol::Tcp))
//!     .with(Match::Comment("ns/svc cluster IP".into()))
//!     .verdict(Verdict::Accept));
//! dumped.chains.push(c);
//! assert_ne!(built, dumped);
//! assert_eq!(
//!     canonical(&Ruleset { tables: vec![built] }),
//!     canonical(&Ruleset { tables: vec![dumped] }),
//! );
//! ```

use ipnet::IpNet;

use crate::ir::{
    AddrMatch, Chain, ChainKind, Direction, Element, KeyValue, MapValue, Match, Rule, Ruleset,
    Table, TableFamily, Verdict,
};
use crate::model::IpFamily;

/// The canonical form of `rs` (see the [module docs](self)).
pub fn canonical(rs: &Ruleset) -> Ruleset {
    let mut tables: Vec<Table> = rs.tables.iter().filter_map(canonical_table).collect();
    tables.sort_by_key(|t| (family_key(t.family), t.name.clone()));
    Ruleset { tables }
}

fn family_key(f: TableFamily) -> (u8, u8) {
    let fam = |f: IpFamily| match f {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    };
    match f {
        TableFamily::Iptables(f) => (0, fam(f)),
        TableFamily::Nft(f) => (1, fam(f)),
    }
}

/// The canonical form of one table; `None` for an iptables table with
/// nothing in it.
pub fn canonical_table(t: &Table) -> Option<Table> {
    let mut t = t.clone();
    t.comment = None;
    for c in &mut t.chains {
        c.comment = None;
        for r in &mut c.rules {
            canonical_rule(r);
        }
    }
    for s in &mut t.sets {
        for e in &mut s.elements {
            canonical_element(e);
        }
    }
    for m in &mut t.maps {
        for (e, v) in &mut m.elements {
            canonical_element(e);
            let MapValue::Verdict(v) = v;
            canonical_verdict(v);
        }
    }
    match t.family {
        TableFamily::Iptables(_) => {
            t.chains
                .retain(|c| !(matches!(c.kind, ChainKind::Builtin(_)) && c.rules.is_empty()));
            if t.chains.is_empty() && t.sets.is_empty() && t.maps.is_empty() {
                return None;
            }
            t.chains.sort_by_key(chain_key);
            for c in &mut t.chains {
                for r in &mut c.rules {
                    r.matches.sort_by_key(match_rank);
                }
            }
        }
        TableFamily::Nft(_) => {
            t.chains.sort_by(|a, b| a.name.cmp(&b.name));
            for c in &mut t.chains {
                for r in &mut c.rules {
                    // Stable: the comment goes last, the rest keeps its order.
                    r.matches.sort_by_key(|m| matches!(m, Match::Comment(_)));
                }
            }
            t.sets.sort_by(|a, b| a.name.cmp(&b.name));
            for s in &mut t.sets {
                s.comment = None;
                s.flags.retain(|f| f != "dynamic");
                s.flags.sort();
                if s.flags.iter().any(|f| f == "timeout") {
                    s.elements.clear();
                }
                s.elements.sort();
            }
            t.maps.sort_by(|a, b| a.name.cmp(&b.name));
            for m in &mut t.maps {
                m.comment = None;
                m.flags.sort();
                m.elements.sort_by(|a, b| a.0.cmp(&b.0));
            }
            t.counters.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    Some(t)
}

fn chain_key(c: &Chain) -> (u8, Option<crate::ir::Hook>, String) {
    match c.kind {
        ChainKind::Builtin(h) => (0, Some(h), String::new()),
        _ => (1, None, c.name.as_str().to_string()),
    }
}

/// The place of a match in a canonical iptables rule: iptables-save's own
/// order where it has one.
fn match_rank(m: &Match) -> u8 {
    match m {
        Match::Addr {
            dir: Direction::Src,
            ..
        } => 0,
        Match::Addr {
            dir: Direction::Dst,
            ..
        } => 1,
        Match::InInterface { .. } => 2,
        Match::Protocol(_) => 3,
        Match::Comment(_) => 4,
        Match::DstPort(_) => 5,
        Match::PhysDevIsIn { .. } => 6,
        Match::AddrTypeLocal { .. } => 7,
        Match::CtState { .. } => 8,
        Match::Mark { .. } => 9,
        Match::Recent { .. } => 10,
        Match::Probability { .. } => 11,
        Match::Nfacct(_) => 12,
        Match::InSet { .. } => 13,
        Match::AddrSet { .. } => 14,
        Match::SetMark { .. } => 15,
        Match::UpdateSet { .. } => 16,
        Match::Opaque(_) => 17,
    }
}

fn host(n: &IpNet) -> bool {
    n.prefix_len() == n.max_prefix_len()
}

fn canonical_addr(a: &mut AddrMatch) {
    if let AddrMatch::Net(n) = a
        && host(n)
    {
        *a = AddrMatch::Ip(n.addr());
    }
}

fn canonical_rule(r: &mut Rule) {
    for m in &mut r.matches {
        match m {
            Match::Addr { addr, .. } => canonical_addr(addr),
            Match::AddrSet { addrs, .. } => addrs.iter_mut().for_each(canonical_addr),
            _ => {}
        }
        if let Match::AddrSet { dir, addrs, negate } = m
            && let [one] = addrs.as_slice()
        {
            *m = Match::Addr {
                dir: *dir,
                addr: *one,
                negate: *negate,
            };
        }
    }
    if let Some(v) = &mut r.verdict {
        canonical_verdict(v);
    }
}

fn canonical_verdict(v: &mut Verdict) {
    if let Verdict::DnatRandom { to } = v
        && let [one] = to.as_slice()
    {
        *v = Verdict::Dnat(*one);
    }
}

fn canonical_element(e: &mut Element) {
    for k in &mut e.key {
        if let KeyValue::Net(n) = k
            && host(n)
        {
            *k = KeyValue::Ip(n.addr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BaseChainType, Hook, Set};
    use crate::model::Protocol;

    #[test]
    fn nft_tables_sort_objects_and_drop_run_time_state() {
        let mut t = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
        t.comment = Some("rules for kube-proxy".into());
        let mut base = Chain::new("nat-prerouting");
        base.kind = ChainKind::Base {
            chain_type: BaseChainType::Nat,
            hook: Hook::Prerouting,
            priority: -100,
        };
        base.push(
            Rule::new()
                .with(Match::Comment("c".into()))
                .with(Match::Protocol(Protocol::Tcp))
                .verdict(Verdict::DnatRandom {
                    to: vec!["10.0.0.1:80".parse().unwrap()],
                }),
        );
        t.chains = vec![Chain::new("services"), base];
        let set = |name: &str, flags: &[&str], elements: Vec<Element>| Set {
            name: name.into(),
            type_spec: "ipv4_addr".into(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            timeout: None,
            comment: None,
            elements,
        };
        let el = |k: KeyValue| Element {
            key: vec![k],
            comment: None,
        };
        t.sets = vec![
            set(
                "z",
                &["interval"],
                vec![
                    el(KeyValue::Net("10.0.0.2/32".parse().unwrap())),
                    el(KeyValue::Ip("10.0.0.1".parse().unwrap())),
                ],
            ),
            set(
                "affinity-x",
                &["timeout", "dynamic"],
                vec![el(KeyValue::Ip("10.0.0.9".parse().unwrap()))],
            ),
        ];
        let c = canonical_table(&t).unwrap();
        assert_eq!(c.comment, None);
        assert_eq!(c.chains[0].name.as_str(), "nat-prerouting");
        let r = &c.chains[0].rules[0];
        assert_eq!(r.matches.last(), Some(&Match::Comment("c".into())));
        assert_eq!(
            r.verdict,
            Some(Verdict::Dnat("10.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(c.sets[0].name, "affinity-x");
        assert_eq!(c.sets[0].flags, vec!["timeout".to_string()]);
        assert!(c.sets[0].elements.is_empty());
        assert_eq!(
            c.sets[1].elements,
            vec![
                el(KeyValue::Ip("10.0.0.1".parse().unwrap())),
                el(KeyValue::Ip("10.0.0.2".parse().unwrap()))
            ]
        );
    }

    #[test]
    fn empty_iptables_tables_vanish() {
        let mut t = Table::new("raw", TableFamily::Iptables(IpFamily::V4));
        t.chains.push(Chain::builtin(Hook::Prerouting));
        assert!(canonical_table(&t).is_none());
        let rs = Ruleset { tables: vec![t] };
        assert!(canonical(&rs).tables.is_empty());
    }
}
