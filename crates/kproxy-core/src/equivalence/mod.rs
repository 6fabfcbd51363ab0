//! Behavioural equivalence of two rulesets: do they do the same thing to
//! every packet?
//!
//! Two rulesets are equivalent when every packet gets the same outcomes
//! (endpoint, unchanged, drop, reject), with the same probabilities and
//! masquerade decisions, through [`crate::trace`]. The rules only tell
//! packets apart by what they ask about them: the protocol, the source,
//! the destination and port (before DNAT), the node's local addresses, and
//! where packets come from (a pod, the node itself, outside the node).
//!
//! [`compare`] explores those questions instead of a product of candidate
//! values: it traces one packet through both rulesets, recording every
//! question asked and its answer; packets that answer the same way take
//! the same paths, so they form one class. Then, for each question in
//! turn, it looks for a packet that answers the same up to it and
//! differently there, and traces that one; and so on until every
//! combination of answers the rules can tell apart has been traced. Each
//! Service front end (its address, protocol and port) is a family of
//! classes of its own, explored depth first: memory holds one path of
//! questions, not the product of addresses and ports. A packet that
//! reaches a rule the tracer cannot evaluate (an opaque match of a dumped
//! ruleset) makes its class a difference: equivalence cannot be shown.
//!
//! The exhaustive product of candidate values ([`packet_classes`],
//! [`compare_exhaustive`]) is kept as the reference for small rulesets.
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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ir::{Ruleset, TableFamily};
use crate::model::IpFamily;
use crate::trace::atoms::Recorder;
use crate::trace::{OutcomeKind, Packet, Probability, Trace, TraceEnv, TraceError, Tracer};

mod oracle;
mod same;
mod search;

pub use oracle::{compare_exhaustive, compare_exhaustive_with, packet_classes};

/// Options of [`compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The most classes traced; beyond, the rest is not explored and
    /// [`Equivalence::complete`] is false. ([`compare_exhaustive`]: an
    /// evenly spread subset is traced.)
    pub max_classes: usize,
    /// The threads that trace classes (at least one). The verdict, the
    /// classes and the differences do not depend on it; the work done
    /// (see [`Equivalence::work`]) may, since each thread remembers what
    /// it found on its own.
    pub threads: usize,
}

impl Options {
    /// These options, tracing on `threads` threads.
    ///
    /// ```
    /// use kproxy_core::equivalence::Options;
    /// assert_eq!(Options::default().with_threads(2).threads, 2);
    /// ```
    pub fn with_threads(self, threads: usize) -> Self {
        Self { threads, ..self }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_classes: 5_000_000,
            threads: 1,
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
    /// The work the comparison took: rules evaluated and questions
    /// gathered and asked (bounded, see [`WORK_PER_RULE`]).
    pub work: u64,
}

impl Equivalence {
    /// No class is treated differently.
    pub fn is_equivalent(&self) -> bool {
        self.differences.is_empty()
    }
}

/// The address no rule names, used as the first source and destination.
fn outside(family: IpFamily) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x77)),
    }
}

/// The work [`compare`] may do per rule and set element of the two
/// rulesets, beyond [`WORK_FLOOR`]: rules evaluated, earlier questions
/// gathered and re-asked while looking for a packet of the next class,
/// counted together. kube-proxy's layouts need a few hundred per rule
/// (150 for an `iptables-save` dump of the synthetic cluster, 310 for its
/// `nft -j` dump, at 1k and 10k Services alike: each class reaches a few
/// dozen rules per ruleset, a Service front end has a few dozen classes);
/// rules that tell packets apart combinatorially need far more, and stop
/// with [`TraceError::TooMuchWork`] (about a second of work per 10k rules
/// on a 2-core machine).
pub const WORK_PER_RULE: u64 = 1_000;

/// The work [`compare`] may always do, however small the rulesets.
pub const WORK_FLOOR: u64 = 5_000_000;

/// The rules and set and map elements of a ruleset.
fn size(rs: &Ruleset) -> u64 {
    rs.tables
        .iter()
        .map(|t| {
            t.chains.iter().map(|c| c.rules.len()).sum::<usize>()
                + t.sets.iter().map(|s| s.elements.len()).sum::<usize>()
                + t.maps.iter().map(|m| m.elements.len()).sum::<usize>()
        })
        .sum::<usize>() as u64
}

/// Traces `packet` through both tracers, recording the questions. With
/// `watched` (`tl` watches the chains `tr`'s ruleset does not hold the
/// same, and both enter their rulesets alike), a packet whose trace
/// through `tl` enters none of them takes the same path through `tr` (the
/// same rules, in the same order, on the same packet): its first trace
/// stands for both.
fn trace_pair<'a>(
    tl: &'a Tracer<'a>,
    tr: &'a Tracer<'a>,
    packet: &Packet,
    watched: bool,
) -> Result<(Trace, Trace, Recorder<'a>), TraceError> {
    let mut rec = Recorder::default();
    let a = tl.trace_recorded(packet, &mut rec)?;
    let b = if watched && !rec.touched {
        a.clone()
    } else {
        tr.trace_recorded(packet, &mut rec)?
    };
    Ok((a, b, rec))
}

/// The classes of packets in the comparison of two rulesets: a packet's
/// class is a fingerprint of where it comes from, the questions the two rulesets ask about it
/// and its answers. Packets of one class get the same fates; [`compare`]
/// traces one packet per class and reports one [`Difference`] per class
/// that differs.
///
/// ```
/// use kproxy_core::equivalence::Classifier;
/// use kproxy_core::ir::Ruleset;
/// use kproxy_core::model::Protocol;
/// use kproxy_core::trace::{Packet, PacketOrigin, TraceEnv};
/// let (rs, env) = (Ruleset::default(), TraceEnv::default());
/// let c = Classifier::new(&rs, &rs, &env);
/// let p = |port| Packet::new(PacketOrigin::Pod, "10.0.0.1".parse().unwrap(),
///     "10.0.0.2".parse().unwrap(), Protocol::Tcp, port);
/// // No rule asks anything: every packet is in one class.
/// assert_eq!(c.class_of(&p(80)).unwrap(), c.class_of(&p(443)).unwrap());
/// ```
pub struct Classifier<'a> {
    left: Tracer<'a>,
    right: Tracer<'a>,
}

impl std::fmt::Debug for Classifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").finish_non_exhaustive()
    }
}

impl<'a> Classifier<'a> {
    /// The classifier of `left` against `right` on the node of `env`.
    pub fn new(left: &'a Ruleset, right: &'a Ruleset, env: &'a TraceEnv) -> Self {
        Self {
            left: Tracer::new(left, env).without_paths(),
            right: Tracer::new(right, env).without_paths(),
        }
    }

    /// The class of `packet`.
    pub fn class_of(&self, packet: &Packet) -> Result<u64, TraceError> {
        use std::hash::{Hash, Hasher};
        let (_, _, rec) = trace_pair(&self.left, &self.right, packet, false)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (packet.origin.as_str(), rec.class()).hash(&mut h);
        Ok(h.finish())
    }
}

/// The tables of `rs` of `family` (borrowed when that is all of them).
pub(crate) fn of_family(rs: &Ruleset, family: IpFamily) -> std::borrow::Cow<'_, Ruleset> {
    let ours = |t: &&crate::ir::Table| matches!(t.family, TableFamily::Iptables(f) | TableFamily::Nft(f) if f == family);
    if rs.tables.iter().all(|t| ours(&t)) {
        return std::borrow::Cow::Borrowed(rs);
    }
    std::borrow::Cow::Owned(Ruleset {
        tables: rs.tables.iter().filter(ours).cloned().collect(),
    })
}

/// Traces every packet class of `left` and `right` (their tables of
/// `family`) on the node of `env`, and lists the classes they treat
/// differently (one packet each).
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
    known: impl Fn(&Packet, &Trace, &Trace) -> bool + Sync,
) -> Result<Equivalence, TraceError> {
    let (left, right) = (of_family(left, family), of_family(right, family));
    let rules = size(&left) + size(&right);
    let limit = rules
        .saturating_mul(WORK_PER_RULE)
        .saturating_add(WORK_FLOOR);
    search::explore(&left, &right, env, family, opts, &known, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{AddrMatch, Direction, Rule, Table, Verdict};
    use crate::ir::{Chain, Hook, Match};
    use std::collections::BTreeSet;
    use std::net::IpAddr;

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
        let few = compare(
            &rs,
            &other,
            &env,
            IpFamily::V4,
            Options {
                max_classes: 10,
                ..Options::default()
            },
        )
        .unwrap();
        assert!(!few.complete);
        assert!(few.classes <= 10);
        // Several threads find the same classes and differences, cut at
        // the same place.
        for max_classes in [1, 2, 3, 5, 10, 1000] {
            let opts = Options {
                max_classes,
                ..Options::default()
            };
            let one = compare(&rs, &other, &env, IpFamily::V4, opts).unwrap();
            let three = compare(&rs, &other, &env, IpFamily::V4, opts.with_threads(3)).unwrap();
            assert_eq!(one.classes, three.classes, "{max_classes}");
            assert_eq!(one.complete, three.complete, "{max_classes}");
            assert_eq!(one.differences, three.differences, "{max_classes}");
        }
    }

    #[test]
    fn work_is_bounded() {
        // 200 source addresses, each its own class, each class traced
        // through all 200 rules: quadratic.
        let mut pre = Chain::builtin(Hook::Prerouting);
        for i in 0..200u32 {
            pre.push(
                Rule::new()
                    .with(Match::Addr {
                        dir: Direction::Src,
                        addr: AddrMatch::Ip(IpAddr::from((0x0a00_0000 + i).to_be_bytes())),
                        negate: false,
                    })
                    .verdict(Verdict::Dnat("10.244.0.5:8080".parse().unwrap())),
            );
        }
        let mut t = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
        t.chains.push(pre);
        let rs = Ruleset { tables: vec![t] };
        let env = TraceEnv::default();
        let opts = Options::default();
        let done = compare(&rs, &rs, &env, IpFamily::V4, opts).unwrap();
        assert!(done.is_equivalent() && done.complete);
        assert!(done.classes > 200, "{}", done.classes);
        assert!(done.work > 200 * 200, "{}", done.work);
        let no = |_: &Packet, _: &Trace, _: &Trace| false;
        let err =
            search::explore(&rs, &rs, &env, IpFamily::V4, opts, &no, done.work / 2).unwrap_err();
        assert!(
            matches!(err, TraceError::TooMuchWork { rules: 400, .. }),
            "{err}"
        );
        let line = err.to_string();
        assert!(line.starts_with("too much work: more than "), "{line}");
        assert!(!line.contains('\n'));
        // Within its bound, the same comparison finishes.
        let again = search::explore(&rs, &rs, &env, IpFamily::V4, opts, &no, done.work).unwrap();
        assert_eq!(again.classes, done.classes);
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
