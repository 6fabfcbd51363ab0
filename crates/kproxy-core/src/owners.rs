//! Which Service each chain, rule, set and element of a ruleset belongs to.
//!
//! The graph (`--service`) and the diff (grouping by Service) both need to
//! know what a piece of a [`Ruleset`] is for. [`Owners::of`] reads it from
//! the ruleset alone, so it works on any two rulesets, including ones not
//! built by kproxy's layouts:
//!
//! * iptables: a rule whose comment names a service (`"ns/name[:port] …"`)
//!   belongs to it; a per-service chain (`KUBE-SVC-`, `KUBE-SVL-`,
//!   `KUBE-EXT-`, `KUBE-FW-`, `KUBE-SEP-`) jumped to from a rule of a service
//!   belongs to that service, as do the per-service chains it jumps to in
//!   turn (the endpoint chains of large-cluster mode carry no comment).
//! * nftables: per-service chains and sets carry `ns/name/proto/port` in
//!   their names; a map element belongs to the owner of the chain it jumps
//!   to, or to the service its comment names; a set element whose key holds
//!   a front end (`cluster-ips`) or an endpoint (`hairpin-connections`) of
//!   exactly one service belongs to it.
//!
//! Everything else (`KUBE-MARK-MASQ`, `masquerading`, ...) is node-level:
//! no owner.
//!
//! ```
//! use kproxy_core::ir::*;
//! use kproxy_core::model::{IpFamily, NamespacedName, Protocol};
//! use kproxy_core::owners::Owners;
//!
//! let mut t = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
//! let mut services = Chain::new("KUBE-SERVICES");
//! services.push(Rule::new()
//!     .with(Match::Comment("default/web cluster IP".into()))
//!     .with(Match::Protocol(Protocol::Tcp))
//!     .verdict(Verdict::Jump("KUBE-SVC-ABC".into())));
//! t.chains.push(services);
//! t.chains.push(Chain::new("KUBE-SVC-ABC"));
//! let rs = Ruleset { tables: vec![t] };
//! let owners = Owners::of(&rs);
//! assert_eq!(owners.chain("nat", "KUBE-SVC-ABC"), Some(&NamespacedName::new("default", "web")));
//! assert_eq!(owners.chain("nat", "KUBE-SERVICES"), None);
//! ```

use std::collections::HashMap;

/// Hash maps with a fast, fixed (deterministic) hasher: ownership is
/// computed for every object of 10k-Service rulesets.
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
use std::net::IpAddr;

use crate::ir::{Element, KeyValue, MapValue, Rule, Ruleset, Table, TableFamily, Verdict};
use crate::model::NamespacedName;

/// The owners of a ruleset's objects (see the [module docs](self)),
/// borrowing the names and keys of the ruleset they were read from.
///
/// Every Service is held once; the maps point to it by index, so that a
/// 10k-Service ruleset's hundreds of thousands of objects cost no
/// allocation each.
#[derive(Debug, Clone, Default)]
pub struct Owners<'a> {
    /// The Services named, each once, in the order they were met.
    services: Vec<NamespacedName>,
    tables: Map<&'a str, TableOwners<'a>>,
}

/// An index into [`Owners::services`].
type Svc = u32;

/// The owners within one table, by name (and element key).
#[derive(Debug, Clone, Default)]
struct TableOwners<'a> {
    /// Per chain name: the owner, and (iptables) the chain itself, so
    /// that following a jump costs one lookup.
    chains: Map<&'a str, ChainSlot<'a>>,
    sets: Map<&'a str, Svc>,
    elements: Map<&'a str, Map<&'a [KeyValue], Svc>>,
}

/// A chain's entry in [`TableOwners::chains`].
#[derive(Debug, Clone, Copy)]
struct ChainSlot<'a> {
    /// The chain of that name (iptables; the last one of the name).
    chain: Option<&'a crate::ir::Chain>,
    /// Its owner.
    svc: Option<Svc>,
}

impl ChainSlot<'_> {
    fn owner(&self) -> Option<Svc> {
        self.svc
    }
}

/// The Services seen with a key: none yet, exactly one, or several.
#[derive(Debug, Clone, Copy)]
enum Seen {
    One(Svc),
    Several,
}

impl Seen {
    /// Records `svc` in `slot`.
    fn add(slot: &mut Option<Seen>, svc: Svc) {
        *slot = match *slot {
            None => Some(Seen::One(svc)),
            Some(Seen::One(s)) if s == svc => Some(Seen::One(s)),
            Some(_) => Some(Seen::Several),
        };
    }

    /// The Service, when exactly one was seen.
    fn only(s: Option<&Option<Seen>>) -> Option<Svc> {
        match s {
            Some(Some(Seen::One(svc))) => Some(*svc),
            _ => None,
        }
    }
}

/// Interns Services while [`Owners`] is built.
#[derive(Default)]
struct Interner<'a> {
    ids: Map<(&'a str, &'a str), Svc>,
    services: Vec<NamespacedName>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, (ns, name): (&'a str, &'a str)) -> Svc {
        let next = self.services.len();
        *self.ids.entry((ns, name)).or_insert_with(|| {
            self.services.push(NamespacedName::new(ns, name));
            // More Services than a u32 counts cannot be in memory.
            Svc::try_from(next).unwrap_or(Svc::MAX)
        })
    }
}

impl PartialEq for Owners<'_> {
    /// The same owner for the same objects (however the Services were
    /// numbered).
    fn eq(&self, other: &Self) -> bool {
        fn same<K: Eq + std::hash::Hash>(
            a: &Map<K, Svc>,
            sa: &[NamespacedName],
            b: &Map<K, Svc>,
            sb: &[NamespacedName],
        ) -> bool {
            a.len() == b.len()
                && a.iter().all(|(k, i)| {
                    b.get(k)
                        .is_some_and(|j| sa.get(*i as usize) == sb.get(*j as usize))
                })
        }
        fn owned<'m>(m: &'m Map<&str, ChainSlot<'_>>) -> impl Iterator<Item = (&'m str, Svc)> + 'm {
            m.iter().filter_map(|(k, c)| Some((*k, c.owner()?)))
        }
        let (sa, sb) = (&self.services, &other.services);
        let same_chains = |a: &Map<&str, ChainSlot<'_>>, b: &Map<&str, ChainSlot<'_>>| {
            owned(a).count() == owned(b).count()
                && owned(a).all(|(k, i)| {
                    b.get(k)
                        .and_then(ChainSlot::owner)
                        .is_some_and(|j| sa.get(i as usize) == sb.get(j as usize))
                })
        };
        self.tables.len() == other.tables.len()
            && self.tables.iter().all(|(name, a)| {
                other.tables.get(name).is_some_and(|b| {
                    same_chains(&a.chains, &b.chains)
                        && same(&a.sets, sa, &b.sets, sb)
                        && a.elements.len() == b.elements.len()
                        && a.elements
                            .iter()
                            .all(|(c, ea)| b.elements.get(c).is_some_and(|eb| same(ea, sa, eb, sb)))
                })
            })
    }
}

impl Eq for Owners<'_> {}

pub use crate::names::iptables::{
    SERVICE_PREFIXES as IPTABLES_SERVICE_PREFIXES, is_service_chain as is_iptables_service_chain,
};

impl<'a> Owners<'a> {
    /// Works out the owners of everything in `rs`.
    pub fn of(rs: &'a Ruleset) -> Self {
        let mut o = Owners::default();
        let mut interner = Interner::default();
        for t in &rs.tables {
            let own = o.tables.entry(t.name.as_str()).or_default();
            match t.family {
                TableFamily::Iptables(_) => iptables_table(own, &mut interner, t),
                TableFamily::Nft(_) => nft_table(own, &mut interner, t),
            }
        }
        o.services = interner.services;
        o
    }

    fn service(&self, svc: Svc) -> Option<&NamespacedName> {
        self.services.get(svc as usize)
    }

    /// The Service a chain belongs to.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&NamespacedName> {
        let svc = self.tables.get(table)?.chains.get(chain)?.owner()?;
        self.service(svc)
    }

    /// The Service a set or map belongs to (nftables `affinity-` sets).
    pub fn set(&self, table: &str, set: &str) -> Option<&NamespacedName> {
        let svc = *self.tables.get(table)?.sets.get(set)?;
        self.service(svc)
    }

    /// The Service a rule of `chain` belongs to: the chain's owner, else the
    /// service its comment names.
    pub fn rule(&self, table: &str, chain: &str, rule: &Rule) -> Option<NamespacedName> {
        self.chain(table, chain)
            .cloned()
            .or_else(|| rule.comment().and_then(service_in_comment))
    }

    /// The Service an element of set or map `container` belongs to.
    pub fn element(
        &self,
        table: &str,
        container: &str,
        key: &[KeyValue],
    ) -> Option<&NamespacedName> {
        let t = self.tables.get(table)?;
        let svc = t
            .elements
            .get(container)
            .and_then(|m| m.get(key))
            .or_else(|| t.sets.get(container))?;
        self.service(*svc)
    }
}

fn iptables_table<'a>(own: &mut TableOwners<'a>, interner: &mut Interner<'a>, t: &'a Table) {
    // Every chain of this table by name, its owner to be found (the
    // owners found in an earlier table of the same name stay).
    for slot in own.chains.values_mut() {
        slot.chain = None;
    }
    own.chains.reserve(t.chains.len());
    for c in &t.chains {
        own.chains
            .entry(c.name.as_str())
            .and_modify(|slot| slot.chain = Some(c))
            .or_insert(ChainSlot {
                chain: Some(c),
                svc: None,
            });
    }
    let per_service = is_iptables_service_chain;
    let mut queue: Vec<(&'a str, Svc)> = Vec::new();
    for chain in &t.chains {
        if per_service(chain.name.as_str()) {
            continue;
        }
        for rule in &chain.rules {
            let Some(target) = rule.jump_target() else {
                continue;
            };
            if !per_service(target.as_str()) {
                continue;
            }
            if let Some(svc) = rule.comment().and_then(service_words_in_comment) {
                queue.push((target.as_str(), interner.id(svc)));
            }
        }
    }
    // Propagate through per-service chains (first owner wins).
    while let Some((name, svc)) = queue.pop() {
        let chain = match own.chains.entry(name) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let slot = o.get_mut();
                if slot.svc.is_some() {
                    continue;
                }
                slot.svc = Some(svc);
                slot.chain
            }
            // A jump to a chain the table lacks: owned all the same.
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(ChainSlot {
                    chain: None,
                    svc: Some(svc),
                });
                None
            }
        };
        if let Some(chain) = chain {
            for target in chain.rules.iter().filter_map(Rule::jump_target) {
                if per_service(target.as_str()) {
                    queue.push((target.as_str(), svc));
                }
            }
        }
    }
}

fn nft_table<'a>(own: &mut TableOwners<'a>, interner: &mut Interner<'a>, t: &'a Table) {
    // Nearly every chain of a big table is a Service's.
    own.chains.reserve(t.chains.len());
    for chain in &t.chains {
        if let Some(svc) = service_words_in_nft_name(chain.name.as_str()) {
            let svc = Some(interner.id(svc));
            own.chains
                .insert(chain.name.as_str(), ChainSlot { chain: None, svc });
        }
    }
    for set in &t.sets {
        if let Some(svc) = service_words_in_nft_name(&set.name) {
            own.sets.insert(set.name.as_str(), interner.id(svc));
        }
    }
    // What each service's own objects say about it: the keys of its map
    // elements and the destinations it DNATs to.
    let mut front_ends: Map<IpAddr, Option<Seen>> = Map::default();
    let mut keys: Map<&'a [KeyValue], Option<Seen>> = Map::default();
    let mut endpoints: Map<(IpAddr, u16), Option<Seen>> = Map::default();
    for map in &t.maps {
        for (e, v) in &map.elements {
            let MapValue::Verdict(v) = v;
            let owner = verdict_chain(v)
                .and_then(|c| own.chains.get(c).and_then(ChainSlot::owner))
                .or_else(|| comment_owner(e).map(|s| interner.id(s)));
            if let Some(svc) = owner {
                if let Some(KeyValue::Ip(ip)) = e.key.first() {
                    Seen::add(front_ends.entry(*ip).or_default(), svc);
                }
                Seen::add(keys.entry(e.key.as_slice()).or_default(), svc);
                own.elements
                    .entry(map.name.as_str())
                    .or_default()
                    .insert(e.key.as_slice(), svc);
            }
        }
    }
    for chain in &t.chains {
        let Some(svc) = own
            .chains
            .get(chain.name.as_str())
            .and_then(ChainSlot::owner)
        else {
            continue;
        };
        for rule in &chain.rules {
            let to: &[std::net::SocketAddr] = match &rule.verdict {
                Some(Verdict::Dnat(sa)) => std::slice::from_ref(sa),
                Some(Verdict::DnatRandom { to }) => to,
                _ => &[],
            };
            for sa in to {
                Seen::add(endpoints.entry((sa.ip(), sa.port())).or_default(), svc);
            }
        }
    }
    let mut found = Vec::new();
    let maps = t
        .maps
        .iter()
        .map(|m| (m.name.as_str(), m.elements.iter().map(|(e, _)| e)));
    let sets = t.sets.iter().map(|s| (s.name.as_str(), s.elements.iter()));
    let mut consider = |container: &'a str, e: &'a Element| {
        if own
            .elements
            .get(container)
            .is_some_and(|m| m.contains_key(e.key.as_slice()))
        {
            return;
        }
        let owner = comment_owner(e)
            .map(|s| interner.id(s))
            .or_else(|| Seen::only(keys.get(e.key.as_slice())))
            .or_else(|| match e.key.as_slice() {
                [KeyValue::Ip(ip)] => Seen::only(front_ends.get(ip)),
                [KeyValue::Ip(_), KeyValue::Ip(ip), _, KeyValue::Port(port)] => {
                    Seen::only(endpoints.get(&(*ip, *port)))
                }
                _ => None,
            });
        if let Some(svc) = owner {
            found.push((container, e.key.as_slice(), svc));
        }
    };
    for (name, elements) in maps {
        for e in elements {
            consider(name, e);
        }
    }
    for (name, elements) in sets {
        for e in elements {
            consider(name, e);
        }
    }
    for (container, key, svc) in found {
        own.elements.entry(container).or_default().insert(key, svc);
    }
}

fn verdict_chain(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Jump(c) | Verdict::Goto(c) => Some(c.as_str()),
        _ => None,
    }
}

/// The Service (`namespace`, `name`) an element's comment names.
fn comment_owner(e: &Element) -> Option<(&str, &str)> {
    e.comment.as_deref().and_then(service_words_in_comment)
}

/// A DNS label as namespaces and Service names are: `[a-z0-9-]+`.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The Service a word `ns/name` or `ns/name:port` names.
pub fn parse_service(word: &str) -> Option<NamespacedName> {
    service_words(word).map(|(ns, name)| NamespacedName::new(ns, name))
}

/// [`parse_service`], borrowed: (`namespace`, `name`).
fn service_words(word: &str) -> Option<(&str, &str)> {
    let (ns, rest) = word.split_once('/')?;
    let name = rest.split_once(':').map_or(rest, |(n, _)| n);
    (is_label(ns) && is_label(name)).then_some((ns, name))
}

/// [`service_in_comment`], borrowed: (`namespace`, `name`).
fn service_words_in_comment(comment: &str) -> Option<(&str, &str)> {
    comment.split_whitespace().find_map(service_words)
}

/// The first word of `comment` that names a Service (`ns/name[:port]`).
///
/// ```
/// use kproxy_core::owners::service_in_comment;
/// let s = service_in_comment("other traffic to kube-system/dns:udp-53 will be dropped").unwrap();
/// assert_eq!(s.to_string(), "kube-system/dns");
/// assert!(service_in_comment("kubernetes service portals").is_none());
/// assert!(service_in_comment("10.0.0.0/8").is_none());
/// ```
pub fn service_in_comment(comment: &str) -> Option<NamespacedName> {
    service_words_in_comment(comment).map(|(ns, name)| NamespacedName::new(ns, name))
}

/// The Service an nftables per-service object name carries:
/// `PREFIX-HASH-ns/name/proto/port[__ip/port]`.
///
/// ```
/// use kproxy_core::owners::service_in_nft_name;
/// let s = service_in_nft_name("service-EJAJPSCL-default/hostnames/tcp/").unwrap();
/// assert_eq!(s.to_string(), "default/hostnames");
/// assert!(service_in_nft_name("services").is_none());
/// ```
pub fn service_in_nft_name(name: &str) -> Option<NamespacedName> {
    service_words_in_nft_name(name).map(|(ns, svc)| NamespacedName::new(ns, svc))
}

/// [`service_in_nft_name`], borrowed: (`namespace`, `name`).
fn service_words_in_nft_name(name: &str) -> Option<(&str, &str)> {
    let rest = crate::names::nft::service_object_base(name)?;
    let (_hash, readable) = rest.split_once('-')?;
    let mut parts = readable.splitn(3, '/');
    let ns = parts.next()?;
    let svc = parts.next()?;
    parts.next()?;
    (is_label(ns) && is_label(svc)).then_some((ns, svc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Chain, Map, Match, Set};
    use crate::model::{IpFamily, Protocol};

    fn nn(s: &str) -> NamespacedName {
        parse_service(s).unwrap()
    }

    #[test]
    fn iptables_propagates_through_per_service_chains_only() {
        let mut t = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
        let mut services = Chain::new("KUBE-SERVICES");
        services.push(
            Rule::new()
                .with(Match::Comment("ns/a:http cluster IP".into()))
                .verdict(Verdict::Jump("KUBE-SVC-A".into())),
        );
        services.push(
            Rule::new()
                .with(Match::Comment("kubernetes service nodeports".into()))
                .verdict(Verdict::Jump("KUBE-NODEPORTS".into())),
        );
        let mut svc = Chain::new("KUBE-SVC-A");
        svc.push(
            Rule::new()
                .with(Match::Comment("ns/a:http cluster IP".into()))
                .verdict(Verdict::Jump("KUBE-MARK-MASQ".into())),
        );
        svc.push(Rule::new().verdict(Verdict::Jump("KUBE-SEP-X".into())));
        t.chains = vec![
            services,
            svc,
            Chain::new("KUBE-SEP-X"),
            Chain::new("KUBE-MARK-MASQ"),
        ];
        let rs = Ruleset { tables: vec![t] };
        let o = Owners::of(&rs);
        assert_eq!(o.chain("nat", "KUBE-SVC-A"), Some(&nn("ns/a")));
        assert_eq!(o.chain("nat", "KUBE-SEP-X"), Some(&nn("ns/a")));
        assert_eq!(o.chain("nat", "KUBE-MARK-MASQ"), None);
        assert_eq!(o.chain("nat", "KUBE-NODEPORTS"), None);
    }

    #[test]
    fn nft_elements_follow_their_chains_keys_and_endpoints() {
        let mut t = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
        let chain = "service-AAAAAAAA-ns/a/tcp/http";
        let mut c = Chain::new(chain);
        c.push(Rule::new().verdict(Verdict::DnatRandom {
            to: vec!["10.0.0.5:8080".parse().unwrap()],
        }));
        t.chains.push(c);
        let ip: IpAddr = "10.96.0.1".parse().unwrap();
        let ep: IpAddr = "10.0.0.5".parse().unwrap();
        let key = vec![
            KeyValue::Ip(ip),
            KeyValue::Proto(Protocol::Tcp),
            KeyValue::Port(80),
        ];
        t.maps.push(Map {
            name: "service-ips".into(),
            type_spec: String::new(),
            value_type: "verdict".into(),
            flags: vec![],
            comment: None,
            elements: vec![(
                Element {
                    key: key.clone(),
                    comment: None,
                },
                MapValue::Verdict(Verdict::Goto(chain.into())),
            )],
        });
        let set = |name: &str, key: Vec<KeyValue>| Set {
            name: name.into(),
            type_spec: String::new(),
            flags: vec![],
            timeout: None,
            comment: None,
            elements: vec![Element { key, comment: None }],
        };
        t.sets.push(set("cluster-ips", vec![KeyValue::Ip(ip)]));
        t.sets.push(set(
            "hairpin-connections",
            vec![
                KeyValue::Ip(ep),
                KeyValue::Ip(ep),
                KeyValue::Proto(Protocol::Tcp),
                KeyValue::Port(8080),
            ],
        ));
        t.sets.push(set(
            "nodeport-ips",
            vec![KeyValue::Ip("192.0.2.1".parse().unwrap())],
        ));
        let rs = Ruleset { tables: vec![t] };
        let o = Owners::of(&rs);
        let a = nn("ns/a");
        assert_eq!(o.chain("kube-proxy", chain), Some(&a));
        assert_eq!(o.element("kube-proxy", "service-ips", &key), Some(&a));
        assert_eq!(
            o.element("kube-proxy", "cluster-ips", &[KeyValue::Ip(ip)]),
            Some(&a)
        );
        assert_eq!(
            o.element(
                "kube-proxy",
                "hairpin-connections",
                &[
                    KeyValue::Ip(ep),
                    KeyValue::Ip(ep),
                    KeyValue::Proto(Protocol::Tcp),
                    KeyValue::Port(8080)
                ]
            ),
            Some(&a)
        );
        assert_eq!(
            o.element(
                "kube-proxy",
                "nodeport-ips",
                &[KeyValue::Ip("192.0.2.1".parse().unwrap())]
            ),
            None
        );
    }

    #[test]
    fn service_words() {
        assert_eq!(parse_service("ns/name:port"), Some(nn("ns/name")));
        assert_eq!(parse_service("ns/Name"), None);
        assert_eq!(parse_service("a/b/c"), None);
        assert_eq!(
            service_in_nft_name("endpoint-ABCDEFGH-ns/a/udp/dns__10.0.0.1/53"),
            Some(nn("ns/a"))
        );
        assert_eq!(service_in_nft_name("reject-chain"), None);
    }
}
