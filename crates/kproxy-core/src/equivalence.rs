//! Behavioural equivalence of two rulesets: do they do the same thing to
//! every packet?
//!
//! Two rulesets are equivalent when every packet gets the same outcomes
//! (endpoint, unchanged, drop, reject), with the same probabilities and
//! masquerade decisions, through [`crate::trace`]. The rules only tell
//! packets apart by the addresses, networks, ports and protocols they
//! name, by where packets come from, and by the node's local addresses, so
//! a finite set of packet classes covers them all ([`packet_classes`]):
//!
//! * sources and destinations: every address the rules match as source
//!   (destination) or hold in a set or map looked up by source
//!   (destination) address, the first and last address of every network
//!   they name and the addresses just outside it, the node's local
//!   addresses, and one address none of them names;
//! * destination ports: every port the rules name, and one they do not;
//! * protocols: TCP, UDP and SCTP;
//! * origins: a pod, the node itself, outside the node.
//!
//! [`compare`] traces every class through both rulesets. A packet that
//! reaches a rule the tracer cannot evaluate (an opaque match of a dumped
//! ruleset) makes its class a difference: equivalence cannot be shown.
//!
//! ```
//! use kproxy_core::equivalence::{compare, Options};
//! use kproxy_core::ir::*;
//! use kproxy_core::model::{IpFamily, Protocol};
//! use kproxy_core::trace::TraceEnv;
//!
//! // DNAT 10.96.0.10:80/tcp in nat PREROUTING, written two ways.
//! let dnat = Verdict::Dnat("10.244.0.5:8080".parse().unwrap());
//! let dst = Match::Addr {
//!     dir: Direction::Dst,
//!     addr: AddrMatch::Ip("10.96.0.10".parse().unwrap()),
//!     negate: false,
//! };
//! let ruleset = |matches: Vec<Match>| {
//!     let mut pre = Chain::builtin(Hook::Prerouting);
//!     pre.push(Rule::new().with_all(matches).verdict(dnat.clone()));
//!     let mut nat = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
//!     nat.chains.push(pre);
//!     Ruleset { tables: vec![nat] }
//! };
//! let a = ruleset(vec![Match::Protocol(Protocol::Tcp), dst.clone(), Match::DstPort(80)]);
//! let b = ruleset(vec![Match::DstPort(80), dst.clone(), Match::Protocol(Protocol::Tcp)]);
//! let c = ruleset(vec![dst, Match::DstPort(80)]); // every protocol
//! let env = TraceEnv::default();
//! let opts = Options::default();
//! assert!(compare(&a, &b, &env, IpFamily::V4, opts).unwrap().is_equivalent());
//! let diff = compare(&a, &c, &env, IpFamily::V4, opts).unwrap();
//! assert!(!diff.is_equivalent());
//! assert!(diff.differences.iter().all(|d| d.packet.protocol != Protocol::Tcp));
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::ir::{
    AddrMatch, Direction, Key, KeyValue, MapValue, Match, Rule, Ruleset, Table, TableFamily,
    Verdict,
};
use crate::model::{IpFamily, Protocol};
use crate::trace::{
    OutcomeKind, Packet, PacketOrigin, Probability, Trace, TraceEnv, TraceError, Tracer,
};

/// Options of [`compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The most classes traced; beyond, an evenly spread subset is traced
    /// and [`Equivalence::complete`] is false.
    pub max_classes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_classes: 500_000,
        }
    }
}

/// One outcome, as compared: what happens, how likely, masqueraded.
#[derive(Debug, Clone, PartialEq)]
pub struct Fate {
    /// What happens.
    pub kind: OutcomeKind,
    /// How likely.
    pub probability: Probability,
    /// Masqueraded.
    pub masqueraded: bool,
}

impl std::fmt::Display for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} p={}", self.kind, self.probability)?;
        if self.masqueraded {
            f.write_str(" masqueraded")?;
        }
        Ok(())
    }
}

/// The fates of a trace.
pub fn fates(t: &Trace) -> Vec<Fate> {
    t.outcomes
        .iter()
        .map(|o| Fate {
            kind: o.kind.clone(),
            probability: o.probability,
            masqueraded: o.masqueraded,
        })
        .collect()
}

fn same_probability(a: &Probability, b: &Probability) -> bool {
    match (a.exact, b.exact) {
        (Some(x), Some(y)) => x == y,
        _ => (a.value - b.value).abs() < 1e-9,
    }
}

/// Whether two lists of fates are the same behaviour (no unknown outcome).
pub fn same_fates(a: &[Fate], b: &[Fate]) -> bool {
    let unknown = |f: &Fate| matches!(f.kind, OutcomeKind::Unknown { .. });
    a.len() == b.len()
        && !a.iter().chain(b).any(unknown)
        && a.iter().zip(b).all(|(x, y)| {
            x.kind == y.kind
                && x.masqueraded == y.masqueraded
                && same_probability(&x.probability, &y.probability)
        })
}

/// A packet class the two rulesets treat differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// A packet of the class.
    pub packet: Packet,
    /// Its fates in the first ruleset.
    pub left: Vec<Fate>,
    /// Its fates in the second ruleset.
    pub right: Vec<Fate>,
}

impl Difference {
    /// Whether a rule neither ruleset can evaluate decided it (rather than
    /// a real difference).
    pub fn undecided(&self) -> bool {
        self.left
            .iter()
            .chain(&self.right)
            .any(|f| matches!(f.kind, OutcomeKind::Unknown { .. }))
    }
}

/// The result of [`compare`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Equivalence {
    /// The packet classes traced.
    pub classes: usize,
    /// Whether every class was traced (see [`Options::max_classes`]).
    pub complete: bool,
    /// The classes treated differently, in enumeration order.
    pub differences: Vec<Difference>,
}

impl Equivalence {
    /// No class is treated differently.
    pub fn is_equivalent(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Candidate values the rules distinguish.
#[derive(Debug, Default)]
struct Candidates {
    src: BTreeSet<IpAddr>,
    dst: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
}

impl Candidates {
    fn addr(&mut self, dir: Direction, a: &AddrMatch, family: IpFamily) {
        let set = match dir {
            Direction::Src => &mut self.src,
            Direction::Dst => &mut self.dst,
        };
        match a {
            AddrMatch::Ip(ip) => {
                set.insert(*ip);
            }
            AddrMatch::Net(n) => add_net(set, n),
        }
        set.retain(|ip| family.contains(ip));
    }
    fn key_value(&mut self, k: Key, v: &KeyValue) {
        match (k, v) {
            (Key::SrcAddr, KeyValue::Ip(ip)) => {
                self.src.insert(*ip);
            }
            (Key::DstAddr, KeyValue::Ip(ip)) => {
                self.dst.insert(*ip);
            }
            (Key::SrcAddr, KeyValue::Net(n)) => add_net(&mut self.src, n),
            (Key::DstAddr, KeyValue::Net(n)) => add_net(&mut self.dst, n),
            (Key::DstPort, KeyValue::Port(p)) => {
                self.ports.insert(*p);
            }
            _ => {}
        }
    }
}

fn add_net(set: &mut BTreeSet<IpAddr>, n: &IpNet) {
    let (first, last) = (n.network(), n.broadcast());
    set.insert(first);
    set.insert(last);
    if let Some(before) = step(first, -1) {
        set.insert(before);
    }
    if let Some(after) = step(last, 1) {
        set.insert(after);
    }
}

fn step(ip: IpAddr, by: i8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v) => {
            let n = u32::from(v);
            let n = if by < 0 {
                n.checked_sub(1)?
            } else {
                n.checked_add(1)?
            };
            Some(IpAddr::V4(Ipv4Addr::from(n)))
        }
        IpAddr::V6(v) => {
            let n = u128::from(v);
            let n = if by < 0 {
                n.checked_sub(1)?
            } else {
                n.checked_add(1)?
            };
            Some(IpAddr::V6(Ipv6Addr::from(n)))
        }
    }
}

fn table_family(t: &Table) -> IpFamily {
    match t.family {
        TableFamily::Iptables(f) | TableFamily::Nft(f) => f,
    }
}

fn collect(c: &mut Candidates, t: &Table, r: &Rule, family: IpFamily) {
    let lookup =
        |c: &mut Candidates, keys: &[Key], elements: &mut dyn Iterator<Item = &[KeyValue]>| {
            for key in elements {
                for (k, v) in keys.iter().zip(key) {
                    c.key_value(*k, v);
                }
            }
        };
    for m in &r.matches {
        match m {
            Match::Addr { dir, addr, .. } => c.addr(*dir, addr, family),
            Match::AddrSet { dir, addrs, .. } => {
                for a in addrs {
                    c.addr(*dir, a, family);
                }
            }
            Match::DstPort(p) => {
                c.ports.insert(*p);
            }
            Match::InSet { keys, set, .. } => {
                if let Some(s) = t.set(set) {
                    lookup(c, keys, &mut s.elements.iter().map(|e| e.key.as_slice()));
                }
            }
            _ => {}
        }
    }
    if let Some(Verdict::VerdictMap { keys, map }) = &r.verdict
        && let Some(m) = t.map(map)
    {
        lookup(
            c,
            keys,
            &mut m.elements.iter().map(|(e, _)| e.key.as_slice()),
        );
    }
    // The ports of endpoints matter to later lookups (hairpin sets key on
    // the DNATed port): DNAT destinations are candidates too.
    let mut dnat = |sa: &std::net::SocketAddr| {
        c.dst.insert(sa.ip());
        c.src.insert(sa.ip());
        c.ports.insert(sa.port());
    };
    match &r.verdict {
        Some(Verdict::Dnat(sa)) => dnat(sa),
        Some(Verdict::DnatRandom { to }) => to.iter().for_each(dnat),
        _ => {}
    }
    for (_, MapValue::Verdict(v)) in t.maps.iter().flat_map(|m| m.elements.iter()) {
        if let Verdict::Dnat(sa) = v {
            c.ports.insert(sa.port());
        }
    }
}

/// The packet classes that tell `rulesets` (of `family`) apart on the
/// node of `env`: one packet per class, in a fixed order (see the [module
/// docs](self)).
pub fn packet_classes(rulesets: &[&Ruleset], env: &TraceEnv, family: IpFamily) -> Vec<Packet> {
    let mut c = Candidates::default();
    for rs in rulesets {
        for t in rs.tables.iter().filter(|t| table_family(t) == family) {
            for ch in &t.chains {
                for r in &ch.rules {
                    collect(&mut c, t, r, family);
                }
            }
        }
    }
    for n in env.local.iter().filter(|n| family.contains(&n.addr())) {
        if n.prefix_len() == n.max_prefix_len() {
            c.src.insert(n.addr());
            c.dst.insert(n.addr());
        } else {
            add_net(&mut c.src, n);
            add_net(&mut c.dst, n);
        }
    }
    let outside: IpAddr = match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x77)),
    };
    c.src.insert(outside);
    c.dst.insert(outside);
    c.src.retain(|ip| family.contains(ip));
    c.dst.retain(|ip| family.contains(ip));
    let other_port = (1..=u16::MAX).find(|p| !c.ports.contains(p)).unwrap_or(1);
    c.ports.insert(other_port);
    let mut out = Vec::new();
    for origin in [
        PacketOrigin::Pod,
        PacketOrigin::Node,
        PacketOrigin::External,
    ] {
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            for src in &c.src {
                for dst in &c.dst {
                    for port in &c.ports {
                        out.push(Packet::new(origin, *src, *dst, protocol, *port));
                    }
                }
            }
        }
    }
    out
}

/// Traces every packet class of `left` and `right` (their tables of
/// `family`) on the node of `env`, and lists the classes they treat
/// differently.
pub fn compare(
    left: &Ruleset,
    right: &Ruleset,
    env: &TraceEnv,
    family: IpFamily,
    opts: Options,
) -> Result<Equivalence, TraceError> {
    compare_with(left, right, env, family, opts, |_, _, _| false)
}

/// [`compare`], with `known`: a difference for which `known(packet, left,
/// right)` is true is expected and not listed.
pub fn compare_with(
    left: &Ruleset,
    right: &Ruleset,
    env: &TraceEnv,
    family: IpFamily,
    opts: Options,
    known: impl Fn(&Packet, &Trace, &Trace) -> bool,
) -> Result<Equivalence, TraceError> {
    let classes = packet_classes(&[left, right], env, family);
    let total = classes.len();
    let stride = total.div_ceil(opts.max_classes.max(1)).max(1);
    let (tl, tr) = (Tracer::new(left, env), Tracer::new(right, env));
    let mut out = Equivalence {
        classes: 0,
        complete: stride == 1,
        differences: Vec::new(),
    };
    for p in classes.into_iter().step_by(stride) {
        out.classes += 1;
        let (a, b) = (tl.trace(&p)?, tr.trace(&p)?);
        let (fa, fb) = (fates(&a), fates(&b));
        if !same_fates(&fa, &fb) && !known(&p, &a, &b) {
            out.differences.push(Difference {
                packet: p,
                left: fa,
                right: fb,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Chain, Hook};

    #[test]
    fn classes_cover_boundaries_and_outsiders() {
        let mut pre = Chain::builtin(Hook::Prerouting);
        pre.push(
            Rule::new()
                .with(Match::Addr {
                    dir: Direction::Src,
                    addr: AddrMatch::Net("10.0.0.0/30".parse().unwrap()),
                    negate: true,
                })
                .with(Match::DstPort(80))
                .verdict(Verdict::Drop),
        );
        let mut t = Table::new("filter", TableFamily::Iptables(IpFamily::V4));
        t.chains.push(pre);
        let rs = Ruleset { tables: vec![t] };
        let env = TraceEnv::default();
        let classes = packet_classes(&[&rs], &env, IpFamily::V4);
        let srcs: BTreeSet<IpAddr> = classes.iter().map(|p| p.src).collect();
        for a in [
            "10.0.0.0",
            "10.0.0.3",
            "9.255.255.255",
            "10.0.0.4",
            "198.51.100.77",
        ] {
            assert!(srcs.contains(&a.parse().unwrap()), "{a}");
        }
        let ports: BTreeSet<u16> = classes.iter().map(|p| p.dst_port).collect();
        assert_eq!(ports, [1, 80].into_iter().collect());
        // The same rule with a different source range differs exactly there.
        let mut other = rs.clone();
        if let Some(Match::Addr { addr, .. }) =
            other.tables[0].chains[0].rules[0].matches.first_mut()
        {
            *addr = AddrMatch::Net("10.0.0.0/31".parse().unwrap());
        }
        let eq = compare(&rs, &other, &env, IpFamily::V4, Options::default()).unwrap();
        assert!(eq.complete);
        assert!(!eq.differences.is_empty());
        assert!(eq.differences.iter().all(|d| {
            let s = d.packet.src.to_string();
            d.packet.dst_port == 80 && (s == "10.0.0.2" || s == "10.0.0.3")
        }));
        let few = compare(&rs, &other, &env, IpFamily::V4, Options { max_classes: 10 }).unwrap();
        assert!(!few.complete);
        assert!(few.classes <= 10);
    }

    #[test]
    fn opaque_rules_are_undecided() {
        let mut pre = Chain::builtin(Hook::Prerouting);
        pre.push(
            Rule::new()
                .with(Match::Opaque("-m foo".into()))
                .verdict(Verdict::Drop),
        );
        let mut t = Table::new("filter", TableFamily::Iptables(IpFamily::V4));
        t.chains.push(pre);
        let rs = Ruleset { tables: vec![t] };
        let env = TraceEnv::default();
        let eq = compare(
            &Ruleset::default(),
            &rs,
            &env,
            IpFamily::V4,
            Options::default(),
        )
        .unwrap();
        assert!(!eq.is_equivalent());
        assert!(eq.differences.iter().all(Difference::undecided));
    }
}
