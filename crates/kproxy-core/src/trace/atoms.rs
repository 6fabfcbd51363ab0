//! What a trace asked about its packet: every test of an input field
//! (protocol, source, original destination and port) the rules made, in
//! order, with its answer. Two packets that get the same answers to the
//! same questions take the same paths, so a recorded sequence of answers
//! is a packet class (see [`crate::equivalence`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use crate::ir::{AddrMatch, Direction, Key, KeyValue};
use crate::model::Protocol;

use super::TraceEnv;
use super::index::{ChainIndex, ElemIndex, IndexBy, IndexKey};

/// An input field of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    Proto,
    Src,
    Dst,
    Port,
}

impl Field {
    pub(crate) fn slot(self) -> usize {
        self as usize
    }
    pub(crate) fn of_dir(d: Direction) -> Field {
        match d {
            Direction::Src => Field::Src,
            Direction::Dst => Field::Dst,
        }
    }
    fn of_key(k: Key) -> Field {
        match k {
            Key::SrcAddr => Field::Src,
            Key::DstAddr => Field::Dst,
            Key::L4Proto => Field::Proto,
            Key::DstPort => Field::Port,
        }
    }
}

/// The input fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) proto: Protocol,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) port: u16,
}

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FieldValue {
    Proto(Protocol),
    Addr(IpAddr),
    Port(u16),
}

impl Fields {
    pub(crate) fn get(&self, f: Field) -> FieldValue {
        match f {
            Field::Proto => FieldValue::Proto(self.proto),
            Field::Src => FieldValue::Addr(self.src),
            Field::Dst => FieldValue::Addr(self.dst),
            Field::Port => FieldValue::Port(self.port),
        }
    }
    pub(crate) fn set(&mut self, f: Field, v: FieldValue) {
        match (f, v) {
            (Field::Proto, FieldValue::Proto(p)) => self.proto = p,
            (Field::Src, FieldValue::Addr(a)) => self.src = a,
            (Field::Dst, FieldValue::Addr(a)) => self.dst = a,
            (Field::Port, FieldValue::Port(p)) => self.port = p,
            _ => {}
        }
    }
    fn key(&self, k: Key) -> KeyValue {
        match k {
            Key::SrcAddr => KeyValue::Ip(self.src),
            Key::DstAddr => KeyValue::Ip(self.dst),
            Key::L4Proto => KeyValue::Proto(self.proto),
            Key::DstPort => KeyValue::Port(self.port),
        }
    }
}

/// The answer to an [`Atom`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Value {
    Bool(bool),
    /// The bucket of a chain index.
    Key(Option<IndexKey>),
    /// The first element matched.
    Elem(Option<u32>),
}

/// A question about the input fields.
#[derive(Debug, Clone)]
pub(crate) enum Atom<'a> {
    /// `protocol == p`.
    Proto(Protocol),
    /// `port == p`.
    Port(u16),
    /// The address is in one of `addrs`.
    Addr {
        dir: Direction,
        addrs: &'a [AddrMatch],
    },
    /// The address is local to the node.
    Local(Direction),
    /// The bucket of a chain index.
    Dispatch(&'a ChainIndex),
    /// The first element of a set or map matched; keys of fields the
    /// packet no longer has (rewritten by DNAT) are the constants given.
    Lookup {
        index: &'a ElemIndex<'a>,
        keys: &'a [Key],
        consts: Vec<Option<KeyValue>>,
    },
}

impl<'a> Atom<'a> {
    /// The input fields the answer depends on.
    pub(crate) fn fields(&self) -> Vec<Field> {
        match self {
            Atom::Proto(_) => vec![Field::Proto],
            Atom::Port(_) => vec![Field::Port],
            Atom::Addr { dir, .. } | Atom::Local(dir) => vec![Field::of_dir(*dir)],
            Atom::Dispatch(i) => vec![match i.by {
                IndexBy::Dst => Field::Dst,
                IndexBy::Port => Field::Port,
            }],
            Atom::Lookup { keys, consts, .. } => {
                let mut out = Vec::new();
                for (k, c) in keys.iter().zip(consts) {
                    let f = Field::of_key(*k);
                    if c.is_none() && !out.contains(&f) {
                        out.push(f);
                    }
                }
                out
            }
        }
    }

    /// The answer for `f`.
    pub(crate) fn eval(&self, f: &Fields, env: &TraceEnv) -> Value {
        let addr = |d: &Direction| match d {
            Direction::Src => f.src,
            Direction::Dst => f.dst,
        };
        match self {
            Atom::Proto(p) => Value::Bool(f.proto == *p),
            Atom::Port(p) => Value::Bool(f.port == *p),
            Atom::Addr { dir, addrs } => {
                let a = addr(dir);
                Value::Bool(addrs.iter().any(|m| m.contains(&a)))
            }
            Atom::Local(d) => Value::Bool(env.is_local(&addr(d))),
            Atom::Dispatch(i) => Value::Key(i.bucket(match i.by {
                IndexBy::Dst => IndexKey::Ip(f.dst),
                IndexBy::Port => IndexKey::Port(f.port),
            })),
            Atom::Lookup {
                index,
                keys,
                consts,
            } => {
                let values: Vec<KeyValue> = keys
                    .iter()
                    .zip(consts)
                    .map(|(k, c)| c.clone().unwrap_or_else(|| f.key(*k)))
                    .collect();
                Value::Elem(index.first_match(&values).map(|i| i as u32))
            }
        }
    }

    /// A fingerprint of the question (equal questions, equal prints).
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut h = foldhash::quality::FixedState::default().build_hasher();
        match self {
            Atom::Proto(p) => (0u8, p).hash(&mut h),
            Atom::Port(p) => (1u8, p).hash(&mut h),
            Atom::Addr { dir, addrs } => (2u8, dir, addrs).hash(&mut h),
            Atom::Local(d) => (3u8, d).hash(&mut h),
            Atom::Dispatch(i) => (4u8, std::ptr::from_ref(*i) as usize).hash(&mut h),
            Atom::Lookup {
                index,
                keys,
                consts,
            } => (5u8, std::ptr::from_ref(*index) as usize, keys, consts).hash(&mut h),
        }
        h.finish()
    }

    /// Every other answer the question can have (for a lookup, only the
    /// elements whose constant parts the packet can still match).
    pub(crate) fn alternatives(&self, v: Value, pinned: &[Option<FieldValue>; 4]) -> Vec<Value> {
        match (self, v) {
            (_, Value::Bool(b)) => vec![Value::Bool(!b)],
            (Atom::Dispatch(i), Value::Key(k)) => {
                let mut out: Vec<Value> = i
                    .sorted
                    .iter()
                    .copied()
                    .filter(|x| Some(*x) != k)
                    .map(|x| Value::Key(Some(x)))
                    .collect();
                if k.is_some() {
                    out.push(Value::Key(None));
                }
                out
            }
            (
                Atom::Lookup {
                    index,
                    consts,
                    keys,
                },
                Value::Elem(e),
            ) => {
                // The values the packet can no longer change.
                let fixed: Vec<Option<KeyValue>> = consts
                    .iter()
                    .zip(keys.iter())
                    .map(|(c, k)| {
                        c.clone().or_else(|| {
                            pinned[Field::of_key(*k).slot()].map(|p| match p {
                                FieldValue::Addr(a) => KeyValue::Ip(a),
                                FieldValue::Proto(x) => KeyValue::Proto(x),
                                FieldValue::Port(x) => KeyValue::Port(x),
                            })
                        })
                    })
                    .collect();
                let fits = |i: usize| {
                    let Some(key) = index.keys.get(i) else {
                        return false;
                    };
                    Some(i as u32) != e
                        && key.len() == fixed.len()
                        && key.iter().zip(&fixed).all(|(kv, c)| {
                            c.as_ref().is_none_or(|c| super::index::key_matches(c, kv))
                        })
                };
                let mut out: Vec<Value> = match index.candidates(&fixed) {
                    Some(c) => c
                        .into_iter()
                        .map(|i| i as usize)
                        .filter(|&i| fits(i))
                        .map(|i| Value::Elem(Some(i as u32)))
                        .collect(),
                    None => (0..index.keys.len())
                        .filter(|&i| fits(i))
                        .map(|i| Value::Elem(Some(i as u32)))
                        .collect(),
                };
                if e.is_some() {
                    out.push(Value::Elem(None));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// Values of `field` likely to give the answer `v`.
    pub(crate) fn witnesses(&self, v: Value, field: Field, env: &TraceEnv) -> Vec<FieldValue> {
        let mut out = Vec::new();
        match (self, v) {
            (Atom::Proto(p), Value::Bool(true)) => out.push(FieldValue::Proto(*p)),
            (Atom::Proto(p), Value::Bool(false)) => {
                for q in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                    if q != *p {
                        out.push(FieldValue::Proto(q));
                    }
                }
            }
            (Atom::Port(p), Value::Bool(true)) => out.push(FieldValue::Port(*p)),
            (Atom::Port(p), Value::Bool(false)) => {
                out.extend(p.checked_add(1).map(FieldValue::Port));
                out.extend(p.checked_sub(1).map(FieldValue::Port));
            }
            (Atom::Addr { addrs, .. }, Value::Bool(inside)) => {
                for a in addrs.iter().take(16) {
                    out.extend(addr_points(a, inside).into_iter().map(FieldValue::Addr));
                }
            }
            (Atom::Local(_), Value::Bool(true)) => {
                for n in env.local.iter().take(16) {
                    out.push(FieldValue::Addr(n.network()));
                    out.push(FieldValue::Addr(n.addr()));
                }
            }
            (Atom::Dispatch(_), Value::Key(Some(IndexKey::Ip(ip)))) => {
                out.push(FieldValue::Addr(ip));
            }
            (Atom::Dispatch(_), Value::Key(Some(IndexKey::Port(p)))) => {
                out.push(FieldValue::Port(p));
            }
            (Atom::Lookup { index, keys, .. }, Value::Elem(Some(e))) => {
                if let Some(key) = index.keys.get(e as usize) {
                    for (k, kv) in keys.iter().zip(key.iter()) {
                        if Field::of_key(*k) != field {
                            continue;
                        }
                        match kv {
                            KeyValue::Ip(ip) => out.push(FieldValue::Addr(*ip)),
                            KeyValue::Net(n) => {
                                out.push(FieldValue::Addr(n.network()));
                                out.push(FieldValue::Addr(n.broadcast()));
                            }
                            KeyValue::Proto(p) => out.push(FieldValue::Proto(*p)),
                            KeyValue::Port(p) => out.push(FieldValue::Port(*p)),
                        }
                    }
                }
            }
            _ => {}
        }
        out.retain(|w| {
            matches!(
                (field, w),
                (Field::Proto, FieldValue::Proto(_))
                    | (Field::Src | Field::Dst, FieldValue::Addr(_))
                    | (Field::Port, FieldValue::Port(_))
            )
        });
        out
    }

    /// The value a true answer pins its field to, if it is one value.
    pub(crate) fn pins(&self, v: Value) -> Vec<(Field, FieldValue)> {
        match (self, v) {
            (Atom::Proto(p), Value::Bool(true)) => vec![(Field::Proto, FieldValue::Proto(*p))],
            (Atom::Port(p), Value::Bool(true)) => vec![(Field::Port, FieldValue::Port(*p))],
            (
                Atom::Addr {
                    dir,
                    addrs: [AddrMatch::Ip(ip)],
                },
                Value::Bool(true),
            ) => vec![(Field::of_dir(*dir), FieldValue::Addr(*ip))],
            (Atom::Dispatch(_), Value::Key(Some(IndexKey::Ip(ip)))) => {
                vec![(Field::Dst, FieldValue::Addr(ip))]
            }
            (Atom::Dispatch(_), Value::Key(Some(IndexKey::Port(p)))) => {
                vec![(Field::Port, FieldValue::Port(p))]
            }
            (
                Atom::Lookup {
                    index,
                    keys,
                    consts,
                },
                Value::Elem(Some(e)),
            ) => {
                let Some(key) = index.keys.get(e as usize) else {
                    return Vec::new();
                };
                keys.iter()
                    .zip(key.iter())
                    .zip(consts)
                    .filter(|(_, c)| c.is_none())
                    .filter_map(|((k, kv), _)| {
                        let f = Field::of_key(*k);
                        match kv {
                            KeyValue::Ip(ip) => Some((f, FieldValue::Addr(*ip))),
                            KeyValue::Proto(p) => Some((f, FieldValue::Proto(*p))),
                            KeyValue::Port(p) => Some((f, FieldValue::Port(*p))),
                            KeyValue::Net(_) => None,
                        }
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Addresses inside (or just outside) an address match.
fn addr_points(a: &AddrMatch, inside: bool) -> Vec<IpAddr> {
    match (a, inside) {
        (AddrMatch::Ip(ip), true) => vec![*ip],
        (AddrMatch::Ip(ip), false) => [step(*ip, false), step(*ip, true)]
            .into_iter()
            .flatten()
            .collect(),
        (AddrMatch::Net(n), true) => vec![n.network(), n.broadcast()],
        (AddrMatch::Net(n), false) => [step(n.network(), false), step(n.broadcast(), true)]
            .into_iter()
            .flatten()
            .collect(),
    }
}

/// The address just before (or after) `ip`.
pub(crate) fn step(ip: IpAddr, up: bool) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v) => {
            let n = u32::from(v);
            let n = if up {
                n.checked_add(1)?
            } else {
                n.checked_sub(1)?
            };
            Some(IpAddr::V4(n.into()))
        }
        IpAddr::V6(v) => {
            let n = u128::from(v);
            let n = if up {
                n.checked_add(1)?
            } else {
                n.checked_sub(1)?
            };
            Some(IpAddr::V6(n.into()))
        }
    }
}

/// One recorded question and its answer.
#[derive(Debug, Clone)]
pub(crate) struct Asked<'a> {
    pub(crate) atom: Atom<'a>,
    pub(crate) value: Value,
    pub(crate) print: u64,
}

/// The questions of one or more traces, each recorded once (a question
/// asked again gets the same answer).
#[derive(Debug, Default)]
pub(crate) struct Recorder<'a> {
    pub(crate) asked: Vec<Asked<'a>>,
    /// The fingerprints asked, once there are too many to scan.
    seen: std::collections::HashSet<u64, foldhash::fast::FixedState>,
    /// The rules evaluated by the traces recorded.
    pub(crate) work: u64,
    /// A trace entered a chain its tracer watches
    /// ([`super::Tracer::watching`]).
    pub(crate) touched: bool,
}

impl<'a> Recorder<'a> {
    /// Records `atom`'s answer `value` unless it was asked before.
    pub(crate) fn record(&mut self, atom: Atom<'a>, value: Value) {
        // A trace asks a few dozen questions: scanning them is cheaper
        // than hashing, until there are many.
        const SCAN: usize = 48;
        let print = atom.fingerprint();
        let new = if self.asked.len() < SCAN {
            self.asked.iter().all(|a| a.print != print)
        } else {
            if self.seen.is_empty() {
                self.seen.extend(self.asked.iter().map(|a| a.print));
            }
            self.seen.insert(print)
        };
        if new {
            if self.asked.capacity() == 0 {
                self.asked.reserve(SCAN);
            }
            self.asked.push(Asked { atom, value, print });
        }
    }
    /// A fingerprint of the questions and answers: the class.
    pub(crate) fn class(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for a in &self.asked {
            (a.print, a.value).hash(&mut h);
        }
        h.finish()
    }
}
