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

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ir::{Match, Ruleset, TableFamily};
use crate::model::{IpFamily, Protocol};
use crate::trace::atoms::{Asked, Atom, Field, FieldValue, Fields, Recorder, Value};
use crate::trace::{
    OutcomeKind, Packet, PacketOrigin, Probability, Trace, TraceEnv, TraceError, Tracer,
};

mod oracle;

pub use oracle::{compare_exhaustive, compare_exhaustive_with, packet_classes};

/// Options of [`compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The most classes traced; beyond, the rest is not explored and
    /// [`Equivalence::complete`] is false. ([`compare_exhaustive`]: an
    /// evenly spread subset is traced.)
    pub max_classes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_classes: 5_000_000,
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

/// Values tried for every field, whatever the question.
struct Generic {
    family: IpFamily,
    addrs: Vec<IpAddr>,
    other_port: u16,
}

impl Generic {
    fn new(rulesets: &[&Ruleset], env: &TraceEnv, family: IpFamily) -> Self {
        let mut ports = BTreeSet::new();
        let note = |ports: &mut BTreeSet<u16>, k: &crate::ir::KeyValue| {
            if let crate::ir::KeyValue::Port(p) = k {
                ports.insert(*p);
            }
        };
        for rs in rulesets {
            for t in &rs.tables {
                for c in &t.chains {
                    for r in &c.rules {
                        for m in &r.matches {
                            if let Match::DstPort(p) = m {
                                ports.insert(*p);
                            }
                        }
                        match &r.verdict {
                            Some(crate::ir::Verdict::Dnat(sa)) => {
                                ports.insert(sa.port());
                            }
                            Some(crate::ir::Verdict::DnatRandom { to }) => {
                                ports.extend(to.iter().map(|sa| sa.port()));
                            }
                            _ => {}
                        }
                    }
                }
                for s in &t.sets {
                    s.elements
                        .iter()
                        .flat_map(|e| &e.key)
                        .for_each(|k| note(&mut ports, k));
                }
                for m in &t.maps {
                    m.elements
                        .iter()
                        .flat_map(|(e, _)| &e.key)
                        .for_each(|k| note(&mut ports, k));
                }
            }
        }
        let other_port = (1..=u16::MAX).find(|p| !ports.contains(p)).unwrap_or(1);
        let mut addrs = vec![outside(family)];
        for n in env.local.iter().filter(|n| family.contains(&n.addr())) {
            addrs.push(n.addr());
            addrs.push(n.network());
        }
        Self {
            family,
            addrs,
            other_port,
        }
    }

    fn values(&self, f: Field, out: &mut Vec<FieldValue>) {
        match f {
            Field::Proto => {
                out.extend([Protocol::Tcp, Protocol::Udp, Protocol::Sctp].map(FieldValue::Proto))
            }
            Field::Src | Field::Dst => out.extend(self.addrs.iter().map(|a| FieldValue::Addr(*a))),
            Field::Port => out.push(FieldValue::Port(self.other_port)),
        }
    }

    fn fits(&self, v: &FieldValue) -> bool {
        match v {
            FieldValue::Addr(a) => self.family.contains(a),
            _ => true,
        }
    }
}

/// A class still to trace: a packet that answers the questions as the
/// class does; questions from `at` on are new to it.
struct Pending {
    at: usize,
    fields: Fields,
}

/// What the questions before a point fix: per field, a value a true
/// answer pinned it to, and the questions that read it.
#[derive(Default)]
struct Prefix {
    pinned: [Option<FieldValue>; 4],
    reads: [Vec<usize>; 4],
}

impl Prefix {
    fn add(&mut self, i: usize, a: &Asked<'_>) {
        for (f, v) in a.atom.pins(a.value) {
            self.pinned[f.slot()].get_or_insert(v);
        }
        for f in a.atom.fields() {
            self.reads[f.slot()].push(i);
        }
    }
}

/// What a question about one field that only questions about the same
/// field came before: the question, the packet's value of the field, and
/// the earlier questions about it with their answers. The packets that
/// answer such a question otherwise (its witnesses) depend on nothing
/// else, so classes that meet it again reuse them.
#[derive(PartialEq, Eq, Hash)]
struct OneField {
    print: u64,
    field: Field,
    cur: FieldValue,
    before: Vec<(u64, Value)>,
}

impl OneField {
    /// The key of `atom` (asked at `prefix`'s end) when its witnesses
    /// depend on one field only and it has many answers (a chain index's
    /// buckets, a set's elements): a yes-or-no question has one other
    /// answer, cheaper to look for again than to remember.
    fn of(
        atom: &Atom<'_>,
        print: u64,
        asked: &[Asked<'_>],
        prefix: &Prefix,
        cur: &Fields,
    ) -> Option<Self> {
        if !matches!(atom, Atom::Dispatch(_) | Atom::Lookup { .. }) {
            return None;
        }
        let [f] = atom.fields()[..] else {
            return None;
        };
        let reads = &prefix.reads[f.slot()];
        let mut before = Vec::with_capacity(reads.len());
        for &i in reads {
            let a = &asked[i];
            if a.atom.fields() != [f] {
                return None;
            }
            before.push((a.print, a.value));
        }
        Some(Self {
            print,
            field: f,
            cur: cur.get(f),
            before,
        })
    }
}

/// The witnesses found for [`OneField`] questions: the field's value of
/// each, in the order of the question's alternatives.
type OneFieldMemo =
    std::collections::HashMap<OneField, Vec<FieldValue>, foldhash::fast::FixedState>;

/// The most value combinations tried for one question.
const MAX_TRIES: usize = 4096;

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

/// What every alternative answer of one question tries: per field, the
/// values the packet and the earlier questions suggest, and the earlier
/// questions a packet must still answer as recorded. Gathered once per
/// question (on first use), not once per alternative.
#[derive(Default)]
struct Tries {
    tails: [Option<Vec<FieldValue>>; 4],
    checks: Option<Vec<usize>>,
}

impl Tries {
    /// The values of `f` worth trying whatever the answer wanted: the
    /// packet's own, the generic ones, and the witnesses of the earlier
    /// questions about `f` (each once, in that order).
    #[allow(clippy::too_many_arguments)]
    fn tail(
        &mut self,
        f: Field,
        asked: &[Asked<'_>],
        prefix: &Prefix,
        cur: &Fields,
        generic: &Generic,
        env: &TraceEnv,
        work: &mut u64,
    ) -> &[FieldValue] {
        self.tails[f.slot()].get_or_insert_with(|| {
            let mut vals = vec![cur.get(f)];
            generic.values(f, &mut vals);
            *work = work.saturating_add(prefix.reads[f.slot()].len() as u64);
            for &i in &prefix.reads[f.slot()] {
                let a = &asked[i];
                vals.extend(a.atom.witnesses(a.value, f, env));
                if let Atom::Addr { .. } | Atom::Port(_) | Atom::Proto(_) | Atom::Local(_) = a.atom
                {
                    for alt in a.atom.alternatives(a.value, &prefix.pinned) {
                        vals.extend(a.atom.witnesses(alt, f, env));
                    }
                }
            }
            let mut seen: std::collections::HashSet<FieldValue, foldhash::fast::FixedState> =
                std::collections::HashSet::default();
            vals.retain(|v| generic.fits(v) && seen.insert(*v));
            vals
        })
    }

    /// The earlier questions about any of `fields`, in order.
    fn checks(&mut self, fields: &[Field], prefix: &Prefix) -> &[usize] {
        self.checks.get_or_insert_with(|| {
            let mut checks: Vec<usize> = fields
                .iter()
                .flat_map(|f| prefix.reads[f.slot()].iter().copied())
                .collect();
            checks.sort_unstable();
            checks.dedup();
            checks
        })
    }
}

/// A packet that answers `asked[..at]` as recorded and `atom` with `want`,
/// changing only the fields `atom` reads (from `cur`, which answers the
/// prefix). The values tried for a field are, in order: the one a pinned
/// field or the answer wanted allows (nothing else can give it), else the
/// question's own witnesses for `want` and then `tries`' tail.
#[allow(clippy::too_many_arguments)]
fn witness(
    asked: &[Asked<'_>],
    prefix: &Prefix,
    atom: &Atom<'_>,
    want: Value,
    cur: Fields,
    generic: &Generic,
    env: &TraceEnv,
    tries: &mut Tries,
    work: &mut u64,
) -> Option<Fields> {
    let fields = atom.fields();
    let pins = atom.pins(want);
    let mut lists: Vec<(Field, Vec<FieldValue>)> = Vec::with_capacity(fields.len());
    for f in &fields {
        if let Some(v) = prefix.pinned[f.slot()] {
            lists.push((*f, vec![v]));
            continue;
        }
        let mut head: Vec<FieldValue> = pins
            .iter()
            .filter(|(pf, _)| pf == f)
            .map(|(_, v)| *v)
            .collect();
        let pinned = !head.is_empty();
        if !pinned {
            head = atom.witnesses(want, *f, env);
        }
        let mut vals: Vec<FieldValue> = Vec::with_capacity(head.len());
        for v in head {
            if generic.fits(&v) && !vals.contains(&v) {
                vals.push(v);
            }
        }
        if !pinned {
            let own = vals.len();
            let tail = tries.tail(*f, asked, prefix, &cur, generic, env, work);
            for v in tail {
                if !vals[..own].contains(v) {
                    vals.push(*v);
                }
            }
        }
        lists.push((*f, vals));
    }
    if lists
        .iter()
        .all(|(f, l)| l.len() == 1 && l[0] == cur.get(*f))
    {
        // Only the packet itself: it answers the question as before.
        return None;
    }
    let checks = tries.checks(&fields, prefix);
    let total: usize = lists.iter().map(|(_, l)| l.len().max(1)).product();
    for n in 0..total.min(MAX_TRIES) {
        *work += 1;
        let mut q = cur;
        let mut k = n;
        for (f, l) in &lists {
            if l.is_empty() {
                continue;
            }
            q.set(*f, l[k % l.len()]);
            k /= l.len();
        }
        if atom.eval(&q, env) != want {
            continue;
        }
        if checks.iter().all(|&i| {
            *work += 1;
            asked[i].atom.eval(&q, env) == asked[i].value
        }) {
            return Some(q);
        }
    }
    None
}

/// Traces `packet` through both tracers, recording the questions.
fn trace_pair<'a>(
    tl: &'a Tracer<'a>,
    tr: &'a Tracer<'a>,
    packet: &Packet,
) -> Result<(Trace, Trace, Recorder<'a>), TraceError> {
    let mut rec = Recorder::default();
    let a = tl.trace_recorded(packet, &mut rec)?;
    let b = tr.trace_recorded(packet, &mut rec)?;
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
        let (_, _, rec) = trace_pair(&self.left, &self.right, packet)?;
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
    known: impl Fn(&Packet, &Trace, &Trace) -> bool,
) -> Result<Equivalence, TraceError> {
    let (left, right) = (of_family(left, family), of_family(right, family));
    let rules = size(&left) + size(&right);
    let limit = rules
        .saturating_mul(WORK_PER_RULE)
        .saturating_add(WORK_FLOOR);
    explore(&left, &right, env, family, opts, &known, limit)
}

/// [`compare_with`] of rulesets of `family` only, within `limit` work.
fn explore(
    left: &Ruleset,
    right: &Ruleset,
    env: &TraceEnv,
    family: IpFamily,
    opts: Options,
    known: &dyn Fn(&Packet, &Trace, &Trace) -> bool,
    limit: u64,
) -> Result<Equivalence, TraceError> {
    let (tl, tr) = (
        Tracer::new(left, env).without_paths(),
        Tracer::new(right, env).without_paths(),
    );
    let generic = Generic::new(&[left, right], env, family);
    let rules = size(left) + size(right);
    let mut work = 0u64;
    let mut memo = OneFieldMemo::default();
    let mut out = Equivalence {
        classes: 0,
        complete: true,
        differences: Vec::new(),
        work: 0,
    };
    for origin in [
        PacketOrigin::Pod,
        PacketOrigin::Node,
        PacketOrigin::External,
    ] {
        let root = Fields {
            proto: Protocol::Tcp,
            src: outside(family),
            dst: outside(family),
            port: generic.other_port,
        };
        let mut stack = vec![Pending {
            at: 0,
            fields: root,
        }];
        while let Some(p) = stack.pop() {
            if out.classes >= opts.max_classes {
                out.complete = false;
                out.work = work;
                return Ok(out);
            }
            out.classes += 1;
            let f = p.fields;
            let packet = Packet::new(origin, f.src, f.dst, f.proto, f.port);
            let (a, b, rec) = trace_pair(&tl, &tr, &packet)?;
            work = work.saturating_add(rec.work);
            if work > limit {
                return Err(TraceError::TooMuchWork { limit, rules });
            }
            let (fa, fb) = (fates(&a), fates(&b));
            if !same_fates(&fa, &fb) && !known(&packet, &a, &b) {
                out.differences.push(Difference {
                    packet,
                    left: fa,
                    right: fb,
                });
            }
            let asked = rec.asked;
            let mut prefix = Prefix::default();
            let mut found = Vec::new();
            for (j, a) in asked.iter().enumerate() {
                let free = a
                    .atom
                    .fields()
                    .iter()
                    .any(|f| prefix.pinned[f.slot()].is_none());
                if j >= p.at && free {
                    let key = OneField::of(&a.atom, a.print, &asked[..j], &prefix, &f);
                    let known = key.as_ref().and_then(|k| memo.get(k));
                    if let (Some(known), Some(k)) = (known, &key) {
                        work = work.saturating_add(known.len() as u64 + 1);
                        found.extend(known.iter().map(|&v| {
                            let mut q = f;
                            q.set(k.field, v);
                            Pending {
                                at: j + 1,
                                fields: q,
                            }
                        }));
                    } else {
                        let from = found.len();
                        let mut tries = Tries::default();
                        for want in a.atom.alternatives(a.value, &prefix.pinned) {
                            if let Some(q) = witness(
                                &asked[..j],
                                &prefix,
                                &a.atom,
                                want,
                                f,
                                &generic,
                                env,
                                &mut tries,
                                &mut work,
                            ) {
                                found.push(Pending {
                                    at: j + 1,
                                    fields: q,
                                });
                            }
                            if work > limit {
                                return Err(TraceError::TooMuchWork { limit, rules });
                            }
                        }
                        if let Some(k) = key {
                            let field = k.field;
                            let vals = found[from..].iter().map(|p| p.fields.get(field));
                            memo.insert(k, vals.collect());
                        }
                    }
                }
                prefix.add(j, a);
            }
            // The first questions' alternatives are traced first.
            stack.extend(found.into_iter().rev());
        }
    }
    out.work = work;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{AddrMatch, Direction, Rule, Table, Verdict};
    use crate::ir::{Chain, Hook};
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
        let few = compare(&rs, &other, &env, IpFamily::V4, Options { max_classes: 10 }).unwrap();
        assert!(!few.complete);
        assert!(few.classes <= 10);
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
        let err = explore(&rs, &rs, &env, IpFamily::V4, opts, &no, done.work / 2).unwrap_err();
        assert!(
            matches!(err, TraceError::TooMuchWork { rules: 400, .. }),
            "{err}"
        );
        let line = err.to_string();
        assert!(line.starts_with("too much work: more than "), "{line}");
        assert!(!line.contains('\n'));
        // Within its bound, the same comparison finishes.
        let again = explore(&rs, &rs, &env, IpFamily::V4, opts, &no, done.work).unwrap();
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
