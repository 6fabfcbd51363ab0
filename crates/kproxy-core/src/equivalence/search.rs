//! The search behind [`super::compare`]: one class traced at a time,
//! each question's other answers looked for (a witness packet per
//! answer), depth first per Service front end, on one thread or several.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Difference, Equivalence, Options, fates, outside, same_fates, trace_pair};
use crate::ir::{Match, Ruleset};
use crate::model::{IpFamily, Protocol};
use crate::trace::atoms::{Asked, Atom, Field, FieldValue, Fields, Value};
use crate::trace::{Packet, PacketOrigin, Trace, TraceEnv, TraceError, Tracer};

/// Values tried for every field, whatever the question.
pub(super) struct Generic {
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

/// The callback of [`super::compare_with`]: an expected difference.
pub(super) type Known<'k> = dyn Fn(&Packet, &Trace, &Trace) -> bool + Sync + 'k;

/// The work all workers did, against the bound.
struct Budget {
    spent: AtomicU64,
    limit: u64,
    rules: u64,
    /// Set when a worker found the bound passed: the others stop.
    over: AtomicBool,
}

impl Budget {
    fn exceeded(&self) -> TraceError {
        self.over.store(true, Ordering::Relaxed);
        TraceError::TooMuchWork {
            limit: self.limit,
            rules: self.rules,
        }
    }
}

/// One worker: the two tracers, what it remembers, the work it did.
struct Explorer<'t, 'a> {
    tl: &'t Tracer<'a>,
    tr: &'t Tracer<'a>,
    generic: &'t Generic,
    env: &'a TraceEnv,
    known: &'t Known<'t>,
    budget: &'t Budget,
    memo: OneFieldMemo,
    /// Work done since it was last added to the budget.
    work: u64,
    /// Classes traced in the current share of subtrees.
    traced: usize,
    /// `tl` watches the chains that differ: see [`trace_pair`].
    watched: bool,
}

/// The classes of one subtree, depth first.
#[derive(Default)]
struct Part {
    classes: usize,
    /// Each difference with its class's place in the subtree.
    differences: Vec<(usize, Difference)>,
    /// Classes were left untraced (the cap was reached).
    capped: bool,
}

impl<'t, 'a> Explorer<'t, 'a> {
    fn over(&self) -> bool {
        self.budget
            .spent
            .load(Ordering::Relaxed)
            .saturating_add(self.work)
            > self.budget.limit
    }

    /// Adds the work done to the budget; an error past the bound.
    fn flush(&mut self) -> Result<(), TraceError> {
        let total = self.budget.spent.fetch_add(self.work, Ordering::Relaxed) + self.work;
        self.work = 0;
        if total > self.budget.limit || self.budget.over.load(Ordering::Relaxed) {
            return Err(self.budget.exceeded());
        }
        Ok(())
    }

    /// Traces the class of `p`: its difference, if the rulesets treat it
    /// differently, and the classes its new questions' other answers
    /// lead to (first questions first).
    fn visit(
        &mut self,
        origin: PacketOrigin,
        p: &Pending,
    ) -> Result<(Option<Difference>, Vec<Pending>), TraceError> {
        let f = p.fields;
        let packet = Packet::new(origin, f.src, f.dst, f.proto, f.port);
        let (a, b, rec) = trace_pair(self.tl, self.tr, &packet, self.watched)?;
        self.work = self.work.saturating_add(rec.work);
        if self.over() {
            return Err(self.budget.exceeded());
        }
        let (fa, fb) = (fates(&a), fates(&b));
        let differs = !same_fates(&fa, &fb) && !(self.known)(&packet, &a, &b);
        let difference = differs.then_some(Difference {
            packet,
            left: fa,
            right: fb,
        });
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
                self.alternatives(&asked, j, &prefix, f, &mut found)?;
            }
            prefix.add(j, a);
        }
        self.flush()?;
        Ok((difference, found))
    }

    /// Appends a packet for each other answer of question `j` that a
    /// packet answering the questions before it as recorded can give.
    fn alternatives(
        &mut self,
        asked: &[Asked<'_>],
        j: usize,
        prefix: &Prefix,
        f: Fields,
        found: &mut Vec<Pending>,
    ) -> Result<(), TraceError> {
        let a = &asked[j];
        let key = OneField::of(&a.atom, a.print, &asked[..j], prefix, &f);
        if let Some((known, k)) = key.as_ref().and_then(|k| Some((self.memo.get(k)?, k))) {
            self.work = self.work.saturating_add(known.len() as u64 + 1);
            found.extend(known.iter().map(|&v| {
                let mut q = f;
                q.set(k.field, v);
                Pending {
                    at: j + 1,
                    fields: q,
                }
            }));
            return Ok(());
        }
        let from = found.len();
        let mut tries = Tries::default();
        for want in a.atom.alternatives(a.value, &prefix.pinned) {
            if let Some(q) = witness(
                &asked[..j],
                prefix,
                &a.atom,
                want,
                f,
                self.generic,
                self.env,
                &mut tries,
                &mut self.work,
            ) {
                found.push(Pending {
                    at: j + 1,
                    fields: q,
                });
            }
            if self.over() {
                return Err(self.budget.exceeded());
            }
        }
        if let Some(k) = key {
            let field = k.field;
            let vals = found[from..].iter().map(|p| p.fields.get(field));
            self.memo.insert(k, vals.collect());
        }
        Ok(())
    }

    /// The classes of `p`'s subtree, depth first, at most `cap`.
    fn subtree(
        &mut self,
        origin: PacketOrigin,
        p: Pending,
        cap: usize,
    ) -> Result<Part, TraceError> {
        let mut part = Part::default();
        let mut stack = vec![p];
        while let Some(p) = stack.pop() {
            if part.classes >= cap {
                part.capped = true;
                break;
            }
            let (difference, found) = self.visit(origin, &p)?;
            if let Some(d) = difference {
                part.differences.push((part.classes, d));
            }
            part.classes += 1;
            // The first questions' alternatives are traced first.
            stack.extend(found.into_iter().rev());
        }
        Ok(part)
    }
}

/// Runs `jobs` on the workers, job `i` by worker `i % workers.len()`,
/// each worker in order (what it remembers, and so the work, does not
/// depend on timing) until a job says stop; the results in job order,
/// `None` for the jobs not run.
fn share<R: Send>(
    workers: &mut [Explorer<'_, '_>],
    jobs: Vec<Pending>,
    run: impl Fn(&mut Explorer<'_, '_>, Pending) -> (R, bool) + Sync,
) -> Vec<Option<R>> {
    let n = jobs.len();
    let k = workers.len().max(1);
    let mut shares: Vec<Vec<(usize, Pending)>> = (0..k).map(|_| Vec::new()).collect();
    for (i, c) in jobs.into_iter().enumerate() {
        shares[i % k].push((i, c));
    }
    let each = |w: &mut Explorer<'_, '_>, mine: Vec<(usize, Pending)>| {
        let mut out = Vec::with_capacity(mine.len());
        for (i, c) in mine {
            let (r, stop) = run(w, c);
            out.push((i, r));
            if stop {
                break;
            }
        }
        out
    };
    let results: Vec<Vec<(usize, R)>> = if k == 1 || n < 2 {
        workers
            .iter_mut()
            .zip(shares)
            .map(|(w, mine)| each(w, mine))
            .collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter_mut()
                .zip(shares)
                .map(|(w, mine)| s.spawn(|| each(w, mine)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut ordered: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for (i, r) in results.into_iter().flatten() {
        if let Some(slot) = ordered.get_mut(i) {
            *slot = Some(r);
        }
    }
    ordered
}

/// The first error of `results` in order, the bound's first: a worker
/// that stopped because another passed the bound reports the bound too.
fn first_error<'r, T: 'r>(
    results: impl IntoIterator<Item = &'r Option<Result<T, TraceError>>>,
) -> Option<TraceError> {
    let mut first = None;
    for r in results.into_iter().flatten() {
        match r {
            Err(e @ TraceError::TooMuchWork { .. }) => return Some(e.clone()),
            Err(e) => {
                first.get_or_insert_with(|| e.clone());
            }
            Ok(_) => {}
        }
    }
    first
}

/// A subtree's classes added to `out` in order, up to `max` classes;
/// false when classes were left out.
fn merge(out: &mut Equivalence, part: Part, max: usize) -> bool {
    let take = part.classes.min(max.saturating_sub(out.classes));
    out.differences.extend(
        part.differences
            .into_iter()
            .filter(|(at, _)| *at < take)
            .map(|(_, d)| d),
    );
    out.classes += take;
    take == part.classes && !part.capped
}

/// The classes under the root's `children`, in the order one worker
/// would trace them depth first, added to `out`; false when classes were
/// left out. One worker traces them in that order. Several first trace
/// the children themselves, then share their children's subtrees: a
/// child's subtree can hold most classes (every node port is under the
/// class of the node's own addresses).
fn below(
    workers: &mut [Explorer<'_, '_>],
    origin: PacketOrigin,
    children: Vec<Pending>,
    max: usize,
    out: &mut Equivalence,
) -> Result<bool, TraceError> {
    if workers.len() <= 1 {
        let Some(w) = workers.first_mut() else {
            return Ok(children.is_empty());
        };
        for c in children {
            let cap = max.saturating_sub(out.classes);
            if cap == 0 {
                return Ok(false);
            }
            if !merge(out, w.subtree(origin, c, cap)?, max) {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let cap = max.saturating_sub(out.classes);
    let firsts = share(workers, children, |w, c| {
        let r = w.visit(origin, &c);
        let stop = r.is_err();
        (r, stop)
    });
    if let Some(e) = first_error(&firsts) {
        return Err(e);
    }
    let mut parents = Vec::with_capacity(firsts.len());
    let mut jobs = Vec::new();
    for r in firsts {
        let Some(Ok((difference, kids))) = r else {
            break;
        };
        parents.push((difference, kids.len()));
        jobs.extend(kids);
    }
    for w in workers.iter_mut() {
        w.traced = 0;
    }
    // Each worker stops once it alone traced `cap` classes: the merge
    // cannot take more.
    let parts = share(workers, jobs, |w, c| {
        let r = w.subtree(origin, c, cap.saturating_sub(w.traced));
        let stop = match &r {
            Ok(p) => {
                w.traced += p.classes;
                p.capped || w.traced >= cap
            }
            Err(_) => true,
        };
        (r, stop)
    });
    if let Some(e) = first_error(&parts) {
        return Err(e);
    }
    let mut parts = parts.into_iter();
    for (difference, kids) in parents {
        if out.classes >= max {
            return Ok(false);
        }
        out.classes += 1;
        out.differences.extend(difference);
        for _ in 0..kids {
            let Some(Some(Ok(part))) = parts.next() else {
                return Ok(false);
            };
            if !merge(out, part, max) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// [`super::compare_with`] of rulesets of `family` only, within `limit`
/// work.
pub(super) fn explore(
    left: &Ruleset,
    right: &Ruleset,
    env: &TraceEnv,
    family: IpFamily,
    opts: Options,
    known: &Known<'_>,
    limit: u64,
) -> Result<Equivalence, TraceError> {
    let (mut tl, tr) = (
        Tracer::new(left, env).without_paths(),
        Tracer::new(right, env).without_paths(),
    );
    // Classes that only enter chains both hold the same are traced once.
    let watched = match super::same::differing(left, right) {
        Some(chains) if tl.same_entries(&tr) => {
            tl = tl.watching(chains);
            true
        }
        _ => false,
    };
    let generic = Generic::new(&[left, right], env, family);
    let budget = Budget {
        spent: AtomicU64::new(0),
        limit,
        rules: super::size(left) + super::size(right),
        over: AtomicBool::new(false),
    };
    let mut workers: Vec<Explorer<'_, '_>> = (0..opts.threads.max(1))
        .map(|_| Explorer {
            tl: &tl,
            tr: &tr,
            generic: &generic,
            env,
            known,
            budget: &budget,
            memo: OneFieldMemo::default(),
            work: 0,
            traced: 0,
            watched,
        })
        .collect();
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
        if out.classes >= opts.max_classes {
            out.complete = false;
            break;
        }
        let root = Pending {
            at: 0,
            fields: Fields {
                proto: Protocol::Tcp,
                src: outside(family),
                dst: outside(family),
                port: generic.other_port,
            },
        };
        let Some(first) = workers.first_mut() else {
            break;
        };
        let (difference, children) = first.visit(origin, &root)?;
        out.classes += 1;
        out.differences.extend(difference);
        if !below(&mut workers, origin, children, opts.max_classes, &mut out)? {
            out.complete = false;
            break;
        }
    }
    out.work = budget.spent.load(Ordering::Relaxed);
    Ok(out)
}
