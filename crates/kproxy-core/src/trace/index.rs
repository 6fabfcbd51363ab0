//! Indexes that let the tracer skip what a packet cannot match: the rules
//! of a long chain that name another destination address (or port), and
//! the elements of a large set or map that hold another key. Both give the
//! same answers as scanning in order; they only skip work.

use std::net::IpAddr;

use crate::ir::{AddrMatch, Chain, Direction, KeyValue, Match, Rule};

/// What a chain's rules are indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IndexBy {
    /// The destination address of an `Addr { Dst, Ip(..) }` match.
    Dst,
    /// The port of a `DstPort` match.
    Port,
}

/// A bucket of a [`ChainIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IndexKey {
    /// A destination address.
    Ip(IpAddr),
    /// A destination port.
    Port(u16),
}

/// The rules of a chain by the one destination address (or port) each can
/// match; rules without one are in `rest`.
#[derive(Debug)]
pub(crate) struct ChainIndex {
    pub(crate) by: IndexBy,
    pub(crate) buckets: super::FastMap<IndexKey, Vec<u32>>,
    /// The buckets' keys, addresses first, each in ascending order.
    pub(crate) sorted: Vec<IndexKey>,
    rest: Vec<u32>,
}

/// Chains shorter than this are scanned.
const MIN_INDEXED: usize = 16;

/// Matches whose evaluation has no effect but its answer: the rule can be
/// skipped when a later match of it fails.
fn pure(m: &Match) -> bool {
    matches!(
        m,
        Match::Comment(_)
            | Match::Nfacct(_)
            | Match::Protocol(_)
            | Match::Addr { .. }
            | Match::DstPort(_)
            | Match::InInterface { .. }
            | Match::AddrTypeLocal { .. }
            | Match::PhysDevIsIn { .. }
            | Match::CtState { .. }
            | Match::Mark { .. }
            | Match::AddrSet { .. }
    )
}

/// The key a rule can only match with, if only pure matches come before it.
fn rule_key(r: &Rule, by: IndexBy) -> Option<IndexKey> {
    for m in &r.matches {
        match (by, m) {
            (
                IndexBy::Dst,
                Match::Addr {
                    dir: Direction::Dst,
                    addr: AddrMatch::Ip(ip),
                    negate: false,
                },
            ) => return Some(IndexKey::Ip(*ip)),
            (IndexBy::Port, Match::DstPort(p)) => return Some(IndexKey::Port(*p)),
            (_, m) if pure(m) => {}
            _ => return None,
        }
    }
    None
}

impl ChainIndex {
    /// The index of a long chain whose rules mostly name one destination
    /// address (or port) each; `None` for a short or mixed chain.
    pub(crate) fn of(chain: &Chain) -> Option<Self> {
        if chain.rules.len() < MIN_INDEXED || u32::try_from(chain.rules.len()).is_err() {
            return None;
        }
        let count = |by| {
            chain
                .rules
                .iter()
                .filter(|r| rule_key(r, by).is_some())
                .count()
        };
        let (dst, port) = (count(IndexBy::Dst), count(IndexBy::Port));
        if dst.max(port) < MIN_INDEXED {
            return None;
        }
        let by = if dst >= port {
            IndexBy::Dst
        } else {
            IndexBy::Port
        };
        let mut buckets: super::FastMap<IndexKey, Vec<u32>> = Default::default();
        let mut rest = Vec::new();
        for (i, r) in chain.rules.iter().enumerate() {
            let i = i as u32;
            match rule_key(r, by) {
                Some(k) => buckets.entry(k).or_default().push(i),
                None => rest.push(i),
            }
        }
        let mut sorted: Vec<IndexKey> = buckets.keys().copied().collect();
        sorted.sort_by_key(|k| match k {
            IndexKey::Ip(ip) => (0, Some(*ip), 0),
            IndexKey::Port(p) => (1, None, *p),
        });
        Some(Self {
            by,
            buckets,
            sorted,
            rest,
        })
    }

    /// The first rule at or after `from` that a packet with `key` may match.
    pub(crate) fn next(&self, key: IndexKey, from: usize) -> Option<usize> {
        let first = |v: &[u32]| {
            let at = v.partition_point(|&i| (i as usize) < from);
            v.get(at).map(|&i| i as usize)
        };
        let a = self.buckets.get(&key).and_then(|v| first(v));
        let b = first(&self.rest);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The bucket `key` falls in: itself, or none.
    pub(crate) fn bucket(&self, key: IndexKey) -> Option<IndexKey> {
        self.buckets.contains_key(&key).then_some(key)
    }
}

/// Whether a packet value matches an element value.
pub(crate) fn key_matches(packet: &KeyValue, element: &KeyValue) -> bool {
    match (packet, element) {
        (KeyValue::Ip(ip), KeyValue::Net(n)) => n.contains(ip),
        (a, b) => a == b,
    }
}

/// Whether packet values match an element's key.
pub(crate) fn element_matches(values: &[KeyValue], key: &[KeyValue]) -> bool {
    values.len() == key.len() && values.iter().zip(key).all(|(v, k)| key_matches(v, k))
}

/// The elements of a set or map: exact keys hashed, keys with a network
/// scanned.
#[derive(Debug)]
pub(crate) struct ElemIndex<'a> {
    /// Every element's key, in order.
    pub(crate) keys: Vec<&'a [KeyValue]>,
    exact: super::FastMap<&'a [KeyValue], u32>,
    rest: Vec<u32>,
    /// Per key position: the elements holding each exact value there.
    by_value: Vec<super::FastMap<&'a KeyValue, Vec<u32>>>,
    /// Per key position: the elements holding a network there.
    nets: Vec<Vec<u32>>,
}

impl<'a> ElemIndex<'a> {
    /// The index of `keys` (in element order).
    pub(crate) fn new(keys: Vec<&'a [KeyValue]>) -> Self {
        let mut exact = super::FastMap::default();
        let mut rest = Vec::new();
        let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
        let mut by_value: Vec<super::FastMap<&'a KeyValue, Vec<u32>>> =
            (0..width).map(|_| Default::default()).collect();
        let mut nets = vec![Vec::new(); width];
        for (i, k) in keys.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            if k.iter().any(|v| matches!(v, KeyValue::Net(_))) {
                rest.push(i);
            } else {
                exact.entry(*k).or_insert(i);
            }
            for (p, v) in k.iter().enumerate() {
                match v {
                    KeyValue::Net(_) => nets[p].push(i),
                    v => by_value[p].entry(v).or_default().push(i),
                }
            }
        }
        Self {
            keys,
            exact,
            rest,
            by_value,
            nets,
        }
    }

    /// The elements (in order) that may match a packet whose values at
    /// some key positions are fixed (`fixed[p]`, a packet value: never a
    /// network): a superset of the matching ones, from the most selective
    /// fixed position; `None` when no position is fixed.
    pub(crate) fn candidates(&self, fixed: &[Option<KeyValue>]) -> Option<Vec<u32>> {
        let (p, v) = fixed
            .iter()
            .enumerate()
            .filter_map(|(p, v)| Some((p, v.as_ref()?)))
            .filter(|(p, _)| *p < self.by_value.len())
            .min_by_key(|(p, v)| {
                self.by_value[*p].get(v).map_or(0, Vec::len)
                    + if matches!(v, KeyValue::Ip(_)) {
                        self.nets[*p].len()
                    } else {
                        0
                    }
            })?;
        let exact = self.by_value[p].get(v).map_or(&[][..], Vec::as_slice);
        if !matches!(v, KeyValue::Ip(_)) || self.nets[p].is_empty() {
            return Some(exact.to_vec());
        }
        let mut out: Vec<u32> = exact.iter().chain(&self.nets[p]).copied().collect();
        out.sort_unstable();
        Some(out)
    }

    /// The first element that packet `values` match.
    pub(crate) fn first_match(&self, values: &[KeyValue]) -> Option<usize> {
        let a = self.exact.get(values).map(|&i| i as usize);
        let b = self
            .rest
            .iter()
            .map(|&i| i as usize)
            .take_while(|&i| a.is_none_or(|a| i < a))
            .find(|&i| element_matches(values, self.keys[i]));
        b.or(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Verdict;

    #[test]
    fn chain_index_skips_only_rules_that_cannot_match() {
        let mut c = Chain::new("S");
        for i in 0..20u8 {
            c.push(
                Rule::new()
                    .with(Match::Addr {
                        dir: Direction::Dst,
                        addr: AddrMatch::Ip(IpAddr::from([10, 0, 0, i])),
                        negate: false,
                    })
                    .verdict(Verdict::Accept),
            );
        }
        c.rules.insert(3, Rule::new().verdict(Verdict::Drop));
        let idx = ChainIndex::of(&c).unwrap();
        assert_eq!(idx.by, IndexBy::Dst);
        let k = IndexKey::Ip(IpAddr::from([10, 0, 0, 5]));
        assert_eq!(idx.next(k, 0), Some(3));
        assert_eq!(idx.next(k, 4), Some(6));
        assert_eq!(idx.next(k, 7), None);
        assert_eq!(idx.bucket(IndexKey::Ip(IpAddr::from([1, 1, 1, 1]))), None);
        // Too short: scanned.
        c.rules.truncate(10);
        assert!(ChainIndex::of(&c).is_none());
    }

    #[test]
    fn element_index_finds_the_first_match() {
        let net = [KeyValue::Net("10.0.0.0/8".parse().unwrap())];
        let a = [KeyValue::Ip("10.0.0.1".parse().unwrap())];
        let b = [KeyValue::Ip("10.0.0.2".parse().unwrap())];
        let idx = ElemIndex::new(vec![&b, &net, &a]);
        assert_eq!(idx.first_match(&b), Some(0));
        assert_eq!(idx.first_match(&a), Some(1));
        assert_eq!(
            idx.first_match(&[KeyValue::Ip("11.0.0.1".parse().unwrap())]),
            None
        );
    }
}
