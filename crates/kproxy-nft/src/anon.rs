//! What kproxy writes into each anonymous set and map it sends by netlink
//! so that a restarted agent need not read their elements back.
//!
//! Reading a table's anonymous sets' elements takes one dump per set, and
//! the kernel finds each set by name over the table's whole set list: at
//! 10,000 Services (one anonymous map each) that is quadratic, tens of
//! seconds. But an anonymous set in the kernel is bound to the rule that
//! uses it and can no longer change (the kernel refuses new elements in a
//! bound constant set, and refuses a transaction that leaves an anonymous
//! set unbound). So the [encoder](crate::netlink::Encoder) adds one record
//! of its own to each anonymous set's user data: an [`AnonDigest`] of
//! everything it declared and every element it sent. A reader that knows
//! which sets it would write ([`AnonDigests::of_table`]) takes a set whose
//! digest it knows as those elements, without dumping them
//! ([`crate::decode::TableDecoder::knowing`]).
//!
//! The record's type ([`ANON_DIGEST_UDATA`]) is one libnftnl does not
//! define: `nft` skips records of types it does not know, so `nft list
//! ruleset` and `nft -j list ruleset` print the same as after `nft -f` of
//! the same text. Sets written by `nft` (kube-proxy, or kproxy's `nft -f`
//! fallback) have no digest and are dumped as before.
//!
//! ```
//! use kproxy_core::ir::{AddrMatch, Chain, Direction, Match, Rule, Table, TableFamily, Verdict};
//! use kproxy_core::model::IpFamily;
//! use kproxy_nft::SingleDnat;
//! use kproxy_nft::anon::AnonDigests;
//! use kproxy_nft::netlink::rule_exprs;
//!
//! let rule = Rule::new()
//!     .with(Match::AddrSet {
//!         dir: Direction::Src,
//!         addrs: vec![
//!             AddrMatch::Net("10.1.0.0/16".parse().unwrap()),
//!             AddrMatch::Net("10.3.0.0/16".parse().unwrap()),
//!         ],
//!         negate: false,
//!     })
//!     .verdict(Verdict::Drop);
//! let mut chain = Chain::new("filter");
//! chain.push(rule.clone());
//! let mut table = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
//! table.chains.push(chain);
//! let known = AnonDigests::of_table(IpFamily::V4, &table, SingleDnat::Concat);
//! let (anon, _) = rule_exprs(IpFamily::V4, &rule, SingleDnat::Concat).unwrap();
//! assert_eq!(known.len(), 1);
//! assert_eq!(known.get(&anon[0].digest()), Some(&anon[0].elements[..]));
//! ```

use foldhash::{HashMap, HashMapExt};

use kproxy_core::ir::{Match, Rule, Table, Verdict};
use kproxy_core::model::IpFamily;
use sha2::{Digest, Sha256};

use crate::netlink::{AnonElement, AnonSet, Data, VerdictData, rule_exprs};
use crate::print::SingleDnat;

/// The user data record type of kproxy's digest in an anonymous set's
/// user data (`NFTA_SET_USERDATA`). libnftnl's set record types end at 7
/// (`NFTNL_UDATA_SET_COMMENT`); this one is far from them.
pub const ANON_DIGEST_UDATA: u8 = 0xc5;

/// The first 16 bytes of a SHA-256 of an anonymous set's declaration and
/// elements (see [`AnonSet::digest`]).
pub type AnonDigest = [u8; 16];

/// A length-prefixed field of the digest's input.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

impl AnonSet {
    /// The digest the encoder writes into this set's user data: of its
    /// flags, key and value types, nft's user data records, and every
    /// element (key, value, interval end) in the order sent. The name and
    /// the batch's set id are left out: the kernel may choose the name.
    pub fn digest(&self) -> AnonDigest {
        let mut h = Sha256::new();
        h.update(b"kproxy anonymous set 1\0");
        h.update(self.flags.to_be_bytes());
        h.update(self.key.0.to_be_bytes());
        h.update(self.key.1.to_be_bytes());
        match self.data {
            None => h.update([0]),
            Some((t, l)) => {
                h.update([1]);
                h.update(t.to_be_bytes());
                h.update(l.to_be_bytes());
            }
        }
        field(&mut h, self.udata.as_bytes());
        h.update((self.elements.len() as u64).to_be_bytes());
        for (key, value, end) in &self.elements {
            field(&mut h, key);
            match value {
                None => h.update([0]),
                Some(Data::Value(v)) => {
                    h.update([1]);
                    field(&mut h, v);
                }
                Some(Data::Verdict(VerdictData::Code(c))) => {
                    h.update([2]);
                    h.update(c.to_be_bytes());
                }
                Some(Data::Verdict(VerdictData::Chain(c, chain))) => {
                    h.update([3]);
                    h.update(c.to_be_bytes());
                    field(&mut h, chain.as_bytes());
                }
            }
            h.update([u8::from(*end)]);
        }
        let full = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

/// Whether [`rule_exprs`] may make an anonymous set for `rule`: a match
/// on several addresses, a random DNAT to several endpoints, a numgen
/// verdict map. (Lowering only these rules keeps [`AnonDigests::of_table`]
/// cheap; a set missed here would only be dumped.)
fn makes_anonymous(rule: &Rule) -> bool {
    rule.matches
        .iter()
        .any(|m| matches!(m, Match::AddrSet { addrs, .. } if addrs.len() > 1))
        || match &rule.verdict {
            Some(Verdict::DnatRandom { to }) => to.len() > 1,
            Some(Verdict::RandomVerdictMap { .. }) => true,
            _ => false,
        }
}

/// The digest record in an anonymous set's user data, if it has one.
pub fn digest_in(udata: &[u8]) -> Option<AnonDigest> {
    kproxy_nfnl::udata::Udata::get(udata, ANON_DIGEST_UDATA)?
        .try_into()
        .ok()
}

/// The anonymous sets and maps a table's rules make, by digest, with their
/// elements: what a reader of the node's table may take instead of
/// dumping a set that carries one of these digests.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AnonDigests {
    sets: HashMap<AnonDigest, Vec<AnonElement>>,
}

impl std::fmt::Debug for AnonDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnonDigests")
            .field("sets", &self.sets.len())
            .finish()
    }
}

impl AnonDigests {
    /// The anonymous sets of every rule of `table` (of `family`), as the
    /// encoder makes them with `single` (the printer's spelling). Rules the
    /// encoder cannot express are left out (they go by `nft -f`, which
    /// writes no digest).
    pub fn of_table(family: IpFamily, table: &Table, single: SingleDnat) -> Self {
        let mut sets = HashMap::new();
        let rules = table.chains.iter().flat_map(|c| &c.rules);
        for rule in rules.filter(|r| makes_anonymous(r)) {
            let Ok((anon, _)) = rule_exprs(family, rule, single) else {
                continue;
            };
            for s in anon {
                let d = s.digest();
                sets.entry(d).or_insert(s.elements);
            }
        }
        Self { sets }
    }

    /// The elements of the set with digest `d`, if one of the table's rules
    /// makes it.
    pub fn get(&self, d: &AnonDigest) -> Option<&[AnonElement]> {
        self.sets.get(d).map(Vec::as_slice)
    }

    /// How many different anonymous sets.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether the table makes none.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_core::model::NodeConfig;
    use kproxy_core::profile::NftablesProfile;
    use kproxy_core::sync::{Compiled, Compiler};

    /// Every rule of the synthetic cluster's tables (both layouts, both
    /// families) that the encoder gives an anonymous set is one
    /// `makes_anonymous` picks, and the digests are those of the sets.
    #[test]
    fn the_filter_misses_no_anonymous_set() {
        let state = kproxy_core::synthetic::cluster(60, 4);
        let mut anonymous = 0;
        for family in [IpFamily::V4, IpFamily::V6] {
            for profile in [NftablesProfile::Current, NftablesProfile::Pre1_36] {
                let targets = [(
                    NodeConfig::new(family, "node-3"),
                    crate::sync::Layout(profile),
                )];
                let compiled = Compiler::new().compile(&state, &targets, true).unwrap();
                let Compiled::Full(desired) = &compiled[0] else {
                    panic!("a first compile is full");
                };
                let table = &desired.ruleset.tables[0];
                let known = AnonDigests::of_table(family, table, SingleDnat::Concat);
                for rule in table.chains.iter().flat_map(|c| &c.rules) {
                    let (anon, _) = rule_exprs(family, rule, SingleDnat::Concat).unwrap();
                    assert!(anon.is_empty() || makes_anonymous(rule), "{rule:?}");
                    for s in anon {
                        assert_eq!(known.get(&s.digest()), Some(&s.elements[..]));
                        anonymous += 1;
                    }
                }
            }
        }
        assert!(anonymous > 100, "{anonymous}");
    }
}
