//! The exhaustive comparison kept as the reference of [`super::compare`]:
//! every combination of the candidate sources, destinations and ports the
//! rules name, traced one by one. Its size is the product of those sets, so
//! it is for small rulesets (tests) only.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::{Difference, Equivalence, Options, fates, same_fates};
use crate::ir::{
    AddrMatch, Direction, Key, KeyValue, MapValue, Match, Rule, Ruleset, Table, TableFamily,
    Verdict,
};
use crate::model::{IpFamily, Protocol};
use crate::trace::{Packet, PacketOrigin, Trace, TraceEnv, TraceError, Tracer};

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
pub fn compare_exhaustive(
    left: &Ruleset,
    right: &Ruleset,
    env: &TraceEnv,
    family: IpFamily,
    opts: Options,
) -> Result<Equivalence, TraceError> {
    compare_exhaustive_with(left, right, env, family, opts, |_, _, _| false)
}

/// [`compare_exhaustive`], with `known`: a difference for which `known(packet, left,
/// right)` is true is expected and not listed.
pub fn compare_exhaustive_with(
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
        work: 0,
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
