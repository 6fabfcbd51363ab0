//! nf_tables netlink dump -> IR: the inverse of [`crate::netlink`]. Pure:
//! the caller dumps one table (`NFT_MSG_GETTABLE`, then `GETCHAIN`,
//! `GETSET`, `GETSETELEM` per set, `GETOBJ` and `GETRULE` dumps) and hands
//! each answer's attributes to a [`TableDecoder`], in that order (a rule's
//! anonymous sets must be known before the rule). A decoder made
//! [`knowing`](TableDecoder::knowing) the anonymous sets the caller would
//! write takes those carrying a known digest ([`crate::anon`]) without
//! their elements' dumps.
//!
//! The result is the [`Table`] that [`crate::parse::parse_json`] gives for
//! `nft -j list table` of the same kernel state: rules' expressions are
//! read back as `nft` prints them (an anonymous set of addresses as its
//! merged prefixes, a byte-aligned prefix as a prefix, a numgen map by
//! index), anonymous sets and maps are resolved into the rules that use
//! them and not listed, named sets' and maps' elements are sorted as nft
//! sorts them, a base chain whose policy is `drop` gets a last
//! rule `drop comment "policy drop"`, handles and counters' values are
//! left out. Unlike nft 1.0.6's JSON, the table's and chains' comments and
//! the sets' `dynamic` flag are read too (set flags are spelled in
//! alphabetical order, as kproxy's layouts write them).
//!
//! An expression sequence the decoder does not know is an error naming
//! the chain and the rule's handle (the caller then reads the table with
//! `nft -j`); the decoder never panics on what the kernel sent, and its
//! work is linear in the dump's size.
//!
//! ```
//! use kproxy_core::ir::{Chain, Rule, Verdict};
//! use kproxy_core::model::IpFamily;
//! use kproxy_nfnl::consts::msg;
//! use kproxy_nft::decode::TableDecoder;
//! use kproxy_nft::netlink::Encoder;
//! use kproxy_nft::tx::{Op, Transaction};
//! use kproxy_nft::SingleDnat;
//!
//! let mut tx = Transaction::new(IpFamily::V4, "kube-proxy");
//! tx.push(Op::AddTable { comment: Some("rules for kube-proxy".into()) });
//! tx.push(Op::AddChain(Chain::new("services")));
//! tx.push(Op::AddRule("services".into(), Rule::new().verdict(Verdict::Drop)));
//! let enc = Encoder::new(SingleDnat::Concat).encode(&tx).unwrap();
//! // The kernel dumps the same attributes it was sent (and a few more).
//! let mut d = TableDecoder::new(IpFamily::V4);
//! for m in &enc.messages {
//!     d.message(m.nft_kind(), &m.attrs).unwrap();
//! }
//! assert_eq!(d.finish().unwrap(), tx.apply().unwrap());
//! ```

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use kproxy_core::ir::{
    AddrMatch, BaseChainType, Chain, ChainKind, Counter, CtState, Direction, Element, Hook, Key,
    KeyValue, Map, MapValue, MarkOp, Match, Rule, Set, Table, TableFamily, Verdict,
};
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::names::ChainName;
use kproxy_nfnl::NfnlError;
use kproxy_nfnl::attr::{Attr, find};
use kproxy_nfnl::consts::{attr as a, expr as e, msg as m, val as v};
use kproxy_nfnl::udata::{self, Udata};

use crate::anon::{AnonDigests, digest_in};
use crate::netlink::{
    CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, Data, Expr, ICMP_PORT_UNREACH,
    ICMPV6_PORT_UNREACH, IPS_DST_NAT, RTN_LOCAL, Reg, TYPE_BITS, TYPE_INET_PROTOCOL,
    TYPE_INET_SERVICE, TYPE_IP6ADDR, TYPE_IPADDR, VerdictData, addr_len, addr_offset,
};

/// `NFT_REJECT_ICMPX_PORT_UNREACH`.
const ICMPX_PORT_UNREACH: u32 = 1;
/// `NFT_SET_ELEM_CATCHALL`.
const ELEM_CATCHALL: u32 = 2;
/// `NFT_CHAIN_BINDING`.
const CHAIN_BINDING: u32 = 4;
/// The most elements an anonymous set may hold (nft writes one per
/// endpoint or address range).
const MAX_ANON_ELEMENTS: usize = 1 << 20;
/// The most anonymous sets taken by their digest: each holds a copy of
/// its elements, so a dump of more sets than that reads the rest.
const MAX_TAKEN: usize = 1 << 22;

/// Why a dump could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Attributes that are not well formed.
    #[error("{object}: {source}")]
    Malformed {
        /// What was being read (`set kube-proxy cluster-ips`).
        object: String,
        /// The parser's error.
        source: NfnlError,
    },
    /// A table, chain, set, element or object the decoder cannot express.
    #[error("{object}: {what}")]
    Object {
        /// What was being read.
        object: String,
        /// What is wrong.
        what: String,
    },
    /// A rule whose expressions the decoder does not recognise.
    #[error("rule {handle} of chain {chain}: {what}")]
    Rule {
        /// The chain.
        chain: String,
        /// The rule's handle (0 when the kernel gave none).
        handle: u64,
        /// What is not recognised.
        what: String,
    },
    /// No table (`NFT_MSG_NEWTABLE`) came before the other objects.
    #[error("no table in the dump")]
    NoTable,
}

/// A set as the kernel declared it, anonymous ones included.
#[derive(Debug)]
struct SetInfo {
    flags: u32,
    /// The key's fields (nft type numbers), first first.
    key_types: Vec<u32>,
    key_len: u32,
    /// `Some` for maps: the data type.
    data_type: Option<u32>,
    /// Where it went: an index into the table's sets or maps, or the
    /// anonymous sets' elements.
    place: Place,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Set(usize),
    Map(usize),
    Anon(usize),
}

/// An anonymous set's element: key bytes, value, interval end.
type RawElement = (Vec<u8>, Option<Data>, bool);

/// Decodes one table's dump (see the [module documentation](self)).
#[derive(Debug)]
pub struct TableDecoder {
    family: IpFamily,
    table: Option<Table>,
    chains: HashMap<String, usize>,
    drop_policy: Vec<usize>,
    sets: HashMap<String, SetInfo>,
    anon: Vec<Vec<RawElement>>,
    /// The key bytes of each named set's and map's elements, in order
    /// (nft lists elements sorted by them).
    set_keys: Vec<Vec<Vec<u8>>>,
    map_keys: Vec<Vec<Vec<u8>>>,
    /// Anonymous sets the reader may take by their digest.
    known: Option<Arc<AnonDigests>>,
    /// Anonymous sets taken by their digest (their elements, if dumped
    /// too, are not read again).
    taken: HashSet<String>,
}

fn malformed(object: &str) -> impl Fn(NfnlError) -> DecodeError + '_ {
    move |source| DecodeError::Malformed {
        object: object.to_string(),
        source,
    }
}

fn object(object: &str, what: impl Into<String>) -> DecodeError {
    DecodeError::Object {
        object: object.to_string(),
        what: what.into(),
    }
}

/// The string attribute `kind` of `body`, if any.
fn opt_str(body: &[u8], kind: u16) -> Result<Option<&str>, NfnlError> {
    find(body, kind)?.map(|x| x.str()).transpose()
}

fn opt_u32(body: &[u8], kind: u16) -> Result<Option<u32>, NfnlError> {
    find(body, kind)?.map(|x| x.u32_be()).transpose()
}

/// A NUL-terminated string record of user data.
fn udata_str(body: &[u8], attr: u16, kind: u8) -> Result<Option<String>, NfnlError> {
    let Some(u) = find(body, attr)? else {
        return Ok(None);
    };
    let Some(value) = Udata::get(u.payload(), kind) else {
        return Ok(None);
    };
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    std::str::from_utf8(&value[..end])
        .map(|s| Some(s.to_string()))
        .map_err(|_| NfnlError::Malformed("comment is not UTF-8"))
}

/// The nft type numbers of a (concatenated) key type.
fn type_fields(mut t: u32) -> Vec<u32> {
    let mut out = Vec::new();
    while t != 0 {
        out.push(t & ((1 << TYPE_BITS) - 1));
        t >>= TYPE_BITS;
    }
    out.reverse();
    out
}

fn type_name(t: u32) -> Option<&'static str> {
    Some(match t {
        TYPE_IPADDR => "ipv4_addr",
        TYPE_IP6ADDR => "ipv6_addr",
        TYPE_INET_PROTOCOL => "inet_proto",
        TYPE_INET_SERVICE => "inet_service",
        _ => return None,
    })
}

fn type_len(t: u32) -> Option<usize> {
    Some(match t {
        TYPE_IPADDR => 4,
        TYPE_IP6ADDR => 16,
        TYPE_INET_PROTOCOL => 1,
        TYPE_INET_SERVICE => 2,
        _ => return None,
    })
}

fn protocol(b: u8) -> Option<Protocol> {
    match b {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(b)));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
}

/// An element's key as nft prints it: one value per field (each field of a
/// concatenation padded to 4 bytes).
fn key_values(types: &[u32], key: &[u8]) -> Option<Vec<KeyValue>> {
    let concat = types.len() > 1;
    let mut out = Vec::with_capacity(types.len());
    let mut rest = key;
    for t in types {
        let len = type_len(*t)?;
        let field = rest.get(..len)?;
        let step = if concat { len.div_ceil(4) * 4 } else { len };
        rest = rest.get(step..)?;
        out.push(match *t {
            TYPE_IPADDR | TYPE_IP6ADDR => KeyValue::Ip(ip_of(field)?),
            TYPE_INET_PROTOCOL => KeyValue::Proto(protocol(field[0])?),
            _ => KeyValue::Port(u16::from_be_bytes([field[0], field[1]])),
        });
    }
    rest.is_empty().then_some(out)
}

fn verdict_of(d: &VerdictData) -> Option<Verdict> {
    Some(match d {
        VerdictData::Code(v::NF_ACCEPT) => Verdict::Accept,
        VerdictData::Code(v::NF_DROP) => Verdict::Drop,
        VerdictData::Code(v::NFT_RETURN) => Verdict::Return,
        VerdictData::Chain(v::NFT_JUMP, c) => Verdict::Jump(ChainName::new(c.as_str())),
        VerdictData::Chain(v::NFT_GOTO, c) => Verdict::Goto(ChainName::new(c.as_str())),
        _ => return None,
    })
}

/// `NFTA_DATA_VALUE` or `NFTA_DATA_VERDICT` inside `x`.
fn data(x: &Attr<'_>) -> Result<Data, NfnlError> {
    if let Some(val) = x.attr(a::NFTA_DATA_VALUE)? {
        return Ok(Data::Value(val.payload().to_vec()));
    }
    let vd = x
        .attr(a::NFTA_DATA_VERDICT)?
        .ok_or(NfnlError::Malformed("data without value or verdict"))?;
    let code = vd
        .attr(a::NFTA_VERDICT_CODE)?
        .ok_or(NfnlError::Malformed("verdict without code"))?
        .u32_be()? as i32;
    Ok(Data::Verdict(match vd.attr(a::NFTA_VERDICT_CHAIN)? {
        Some(c) => VerdictData::Chain(code, c.str()?.to_string()),
        None => VerdictData::Code(code),
    }))
}

impl TableDecoder {
    /// A decoder of a table of `family`.
    pub fn new(family: IpFamily) -> Self {
        Self {
            family,
            table: None,
            chains: HashMap::new(),
            drop_policy: Vec::new(),
            sets: HashMap::new(),
            anon: Vec::new(),
            set_keys: Vec::new(),
            map_keys: Vec::new(),
            known: None,
            taken: HashSet::new(),
        }
    }

    /// A decoder that takes an anonymous set carrying one of `known`'s
    /// digests (see [`crate::anon`]) as that digest's elements: the caller
    /// need not dump its elements ([`Self::elements_known`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kproxy_core::ir::{AddrMatch, Chain, Direction, Match, Rule, Table, Verdict};
    /// use kproxy_core::model::IpFamily;
    /// use kproxy_nfnl::consts::msg;
    /// use kproxy_nft::anon::AnonDigests;
    /// use kproxy_nft::decode::TableDecoder;
    /// use kproxy_nft::netlink::Encoder;
    /// use kproxy_nft::tx::{Op, Transaction};
    /// use kproxy_nft::SingleDnat;
    ///
    /// let rule = Rule::new()
    ///     .with(Match::AddrSet {
    ///         dir: Direction::Src,
    ///         addrs: vec![
    ///             AddrMatch::Net("10.1.0.0/16".parse().unwrap()),
    ///             AddrMatch::Net("10.3.0.0/16".parse().unwrap()),
    ///         ],
    ///         negate: false,
    ///     })
    ///     .verdict(Verdict::Drop);
    /// let mut tx = Transaction::new(IpFamily::V4, "kube-proxy");
    /// tx.push(Op::AddTable { comment: None });
    /// tx.push(Op::AddChain(Chain::new("filter")));
    /// tx.push(Op::AddRule("filter".into(), rule));
    /// let written = tx.apply().unwrap();
    /// let known = AnonDigests::of_table(IpFamily::V4, &written, SingleDnat::Concat);
    /// let enc = Encoder::new(SingleDnat::Concat).encode(&tx).unwrap();
    /// // A dump without the anonymous set's elements.
    /// let mut d = TableDecoder::new(IpFamily::V4).knowing(Arc::new(known));
    /// for m in enc.messages.iter().filter(|m| m.nft_kind() != msg::NFT_MSG_NEWSETELEM) {
    ///     d.message(m.nft_kind(), &m.attrs).unwrap();
    /// }
    /// assert!(d.elements_known("__set%d"));
    /// assert_eq!(d.finish().unwrap(), written);
    /// ```
    pub fn knowing(mut self, known: Arc<AnonDigests>) -> Self {
        self.known = Some(known);
        self
    }

    /// Whether the elements of set `set`, declared earlier in the dump,
    /// were taken by its digest ([`Self::knowing`]): its elements need not
    /// be dumped.
    pub fn elements_known(&self, set: &str) -> bool {
        self.taken.contains(set)
    }

    /// One answer of the dump: its nf_tables message type (`NFT_MSG_NEW*`)
    /// and attributes. Other types are ignored.
    pub fn message(&mut self, kind: u16, attrs: &[u8]) -> Result<(), DecodeError> {
        match kind {
            m::NFT_MSG_NEWTABLE => self.table(attrs),
            m::NFT_MSG_NEWCHAIN => self.chain(attrs),
            m::NFT_MSG_NEWSET => self.set(attrs),
            m::NFT_MSG_NEWSETELEM => self.elements(attrs),
            m::NFT_MSG_NEWOBJ => self.object(attrs),
            m::NFT_MSG_NEWRULE => self.rule(attrs),
            _ => Ok(()),
        }
    }

    fn table_mut(&mut self) -> Result<&mut Table, DecodeError> {
        self.table.as_mut().ok_or(DecodeError::NoTable)
    }

    /// The table (`NFT_MSG_NEWTABLE`).
    pub fn table(&mut self, attrs: &[u8]) -> Result<(), DecodeError> {
        let bad = malformed("table");
        let name = opt_str(attrs, a::NFTA_TABLE_NAME)
            .map_err(&bad)?
            .ok_or_else(|| object("table", "no name"))?;
        let mut t = Table::new(name, TableFamily::Nft(self.family));
        t.comment = udata_str(attrs, a::NFTA_TABLE_USERDATA, udata::TABLE_COMMENT)
            .map_err(malformed(&format!("table {name}")))?;
        self.table = Some(t);
        Ok(())
    }

    /// A chain of the table (`NFT_MSG_NEWCHAIN`).
    pub fn chain(&mut self, attrs: &[u8]) -> Result<(), DecodeError> {
        let name = opt_str(attrs, a::NFTA_CHAIN_NAME)
            .map_err(malformed("chain"))?
            .ok_or_else(|| object("chain", "no name"))?;
        let what = format!("chain {name}");
        let bad = malformed(&what);
        if opt_u32(attrs, a::NFTA_CHAIN_FLAGS)
            .map_err(&bad)?
            .unwrap_or(0)
            & CHAIN_BINDING
            != 0
        {
            return Err(object(&what, "a chain bound to a rule"));
        }
        let mut c = Chain::new(name);
        c.comment = udata_str(attrs, a::NFTA_CHAIN_USERDATA, udata::CHAIN_COMMENT).map_err(&bad)?;
        let mut drop = false;
        if let Some(hook) = find(attrs, a::NFTA_CHAIN_HOOK).map_err(&bad)? {
            let num = hook
                .attr(a::NFTA_HOOK_HOOKNUM)
                .map_err(&bad)?
                .ok_or_else(|| object(&what, "a hook without number"))?
                .u32_be()
                .map_err(&bad)?;
            let hook_of = match num {
                0 => Hook::Prerouting,
                1 => Hook::Input,
                2 => Hook::Forward,
                3 => Hook::Output,
                4 => Hook::Postrouting,
                n => return Err(object(&what, format!("hook {n}"))),
            };
            let priority = hook
                .attr(a::NFTA_HOOK_PRIORITY)
                .map_err(&bad)?
                .ok_or_else(|| object(&what, "a hook without priority"))?
                .u32_be()
                .map_err(&bad)? as i32;
            let chain_type = match opt_str(attrs, a::NFTA_CHAIN_TYPE).map_err(&bad)? {
                Some("nat") => BaseChainType::Nat,
                _ => BaseChainType::Filter,
            };
            c.kind = ChainKind::Base {
                chain_type,
                hook: hook_of,
                priority,
            };
            let policy = opt_u32(attrs, a::NFTA_CHAIN_POLICY).map_err(&bad)?;
            drop = policy.is_some_and(|p| p != v::NF_ACCEPT as u32);
        }
        let table = self.table_mut()?;
        let i = table.chains.len();
        table.chains.push(c);
        self.chains.insert(name.to_string(), i);
        if drop {
            self.drop_policy.push(i);
        }
        Ok(())
    }

    /// A set or map of the table, anonymous ones included
    /// (`NFT_MSG_NEWSET`).
    pub fn set(&mut self, attrs: &[u8]) -> Result<(), DecodeError> {
        let name = opt_str(attrs, a::NFTA_SET_NAME)
            .map_err(malformed("set"))?
            .ok_or_else(|| object("set", "no name"))?;
        let what = format!("set {name}");
        let bad = malformed(&what);
        let flags = opt_u32(attrs, a::NFTA_SET_FLAGS)
            .map_err(&bad)?
            .unwrap_or(0);
        let key_type = opt_u32(attrs, a::NFTA_SET_KEY_TYPE)
            .map_err(&bad)?
            .unwrap_or(0);
        let key_len = opt_u32(attrs, a::NFTA_SET_KEY_LEN)
            .map_err(&bad)?
            .unwrap_or(0);
        let data_type = if flags & v::NFT_SET_MAP != 0 {
            Some(
                opt_u32(attrs, a::NFTA_SET_DATA_TYPE)
                    .map_err(&bad)?
                    .unwrap_or(0),
            )
        } else {
            None
        };
        if flags & v::NFT_SET_OBJECT != 0 {
            return Err(object(&what, "an object map"));
        }
        let key_types = type_fields(key_type);
        let place = if flags & v::NFT_SET_ANONYMOUS != 0 {
            let known = self.known.as_ref().and_then(|k| {
                let udata = find(attrs, a::NFTA_SET_USERDATA).ok().flatten()?;
                k.get(&digest_in(udata.payload())?)
            });
            if let Some(elements) = known
                && self.taken.len() < MAX_TAKEN
            {
                self.anon.push(elements.to_vec());
                self.taken.insert(name.to_string());
            } else {
                self.anon.push(Vec::new());
            }
            Place::Anon(self.anon.len() - 1)
        } else {
            let names: Option<Vec<&str>> = key_types.iter().map(|t| type_name(*t)).collect();
            let type_spec = names
                .filter(|n| !n.is_empty())
                .ok_or_else(|| object(&what, format!("key type {key_type:#x}")))?
                .join(" . ");
            if flags & v::NFT_SET_INTERVAL != 0 {
                return Err(object(&what, "a named interval set"));
            }
            let words = [
                (v::NFT_SET_CONSTANT, "constant"),
                (v::NFT_SET_EVAL, "dynamic"),
                (v::NFT_SET_INTERVAL, "interval"),
                (v::NFT_SET_TIMEOUT, "timeout"),
            ];
            let flag_words: Vec<String> = words
                .iter()
                .filter(|(bit, _)| flags & bit != 0)
                .map(|(_, w)| w.to_string())
                .collect();
            let comment =
                udata_str(attrs, a::NFTA_SET_USERDATA, udata::SET_COMMENT).map_err(&bad)?;
            let table = self.table.as_mut().ok_or(DecodeError::NoTable)?;
            match data_type {
                None => {
                    let timeout = find(attrs, a::NFTA_SET_TIMEOUT)
                        .map_err(&bad)?
                        .map(|t| t.u64_be())
                        .transpose()
                        .map_err(&bad)?
                        .and_then(|ms| u32::try_from(ms / 1000).ok());
                    table.sets.push(Set {
                        name: name.to_string(),
                        type_spec,
                        flags: flag_words,
                        timeout,
                        comment,
                        elements: Vec::new(),
                    });
                    self.set_keys.push(Vec::new());
                    Place::Set(table.sets.len() - 1)
                }
                Some(v::NFT_DATA_VERDICT) => {
                    table.maps.push(Map {
                        name: name.to_string(),
                        type_spec,
                        value_type: "verdict".into(),
                        flags: flag_words,
                        comment,
                        elements: Vec::new(),
                    });
                    self.map_keys.push(Vec::new());
                    Place::Map(table.maps.len() - 1)
                }
                Some(t) => return Err(object(&what, format!("map value type {t:#x}"))),
            }
        };
        self.sets.insert(
            name.to_string(),
            SetInfo {
                flags,
                key_types,
                key_len,
                data_type,
                place,
            },
        );
        Ok(())
    }

    /// Elements of one set (`NFT_MSG_NEWSETELEM`).
    pub fn elements(&mut self, attrs: &[u8]) -> Result<(), DecodeError> {
        let set = opt_str(attrs, a::NFTA_SET_ELEM_LIST_SET)
            .map_err(malformed("elements"))?
            .ok_or_else(|| object("elements", "no set name"))?;
        let what = format!("elements of set {set}");
        let bad = malformed(&what);
        let info = self
            .sets
            .get(set)
            .ok_or_else(|| object(&what, "the set is not in the dump"))?;
        if self.taken.contains(set) {
            return Ok(());
        }
        let Some(list) = find(attrs, a::NFTA_SET_ELEM_LIST_ELEMENTS).map_err(&bad)? else {
            return Ok(());
        };
        let table = self.table.as_mut().ok_or(DecodeError::NoTable)?;
        for el in list.attrs() {
            let el = el.map_err(&bad)?;
            if el.kind() != a::NFTA_LIST_ELEM {
                continue;
            }
            let flags = el
                .attr(a::NFTA_SET_ELEM_FLAGS)
                .map_err(&bad)?
                .map(|f| f.u32_be())
                .transpose()
                .map_err(&bad)?
                .unwrap_or(0);
            if flags & ELEM_CATCHALL != 0 {
                return Err(object(&what, "a catch-all element"));
            }
            if el.attr(a::NFTA_SET_ELEM_KEY_END).map_err(&bad)?.is_some() {
                return Err(object(&what, "a range element"));
            }
            let key = el
                .attr(a::NFTA_SET_ELEM_KEY)
                .map_err(&bad)?
                .ok_or_else(|| object(&what, "an element without key"))?;
            let key = key
                .attr(a::NFTA_DATA_VALUE)
                .map_err(&bad)?
                .ok_or_else(|| object(&what, "an element key without value"))?
                .payload();
            let value = el
                .attr(a::NFTA_SET_ELEM_DATA)
                .map_err(&bad)?
                .map(|d| data(&d))
                .transpose()
                .map_err(&bad)?;
            let end = flags & v::NFT_SET_ELEM_INTERVAL_END != 0;
            match info.place {
                Place::Anon(i) => {
                    let list = &mut self.anon[i];
                    if list.len() >= MAX_ANON_ELEMENTS {
                        return Err(object(&what, "too many elements"));
                    }
                    list.push((key.to_vec(), value, end));
                }
                Place::Set(_) | Place::Map(_) => {
                    let raw = sort_key(&info.key_types, key);
                    let key = key_values(&info.key_types, key)
                        .ok_or_else(|| object(&what, format!("element key {key:02x?}")))?;
                    let comment = el
                        .attr(a::NFTA_SET_ELEM_USERDATA)
                        .map_err(&bad)?
                        .and_then(|u| Udata::get(u.payload(), udata::SET_ELEM_COMMENT))
                        .map(|c| {
                            let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
                            String::from_utf8_lossy(&c[..end]).into_owned()
                        });
                    let element = Element { key, comment };
                    match (info.place, value) {
                        (Place::Set(i), None) => {
                            table.sets[i].elements.push(element);
                            self.set_keys[i].push(raw);
                        }
                        (Place::Map(i), Some(Data::Verdict(vd))) => {
                            let verdict = verdict_of(&vd)
                                .ok_or_else(|| object(&what, format!("map value {vd:?}")))?;
                            table.maps[i]
                                .elements
                                .push((element, MapValue::Verdict(verdict)));
                            self.map_keys[i].push(raw);
                        }
                        _ => return Err(object(&what, "an element without its map value")),
                    }
                }
            }
        }
        Ok(())
    }

    /// A stateful object (`NFT_MSG_NEWOBJ`): named counters are kept,
    /// other objects ignored (as `parse_json` does).
    pub fn object(&mut self, attrs: &[u8]) -> Result<(), DecodeError> {
        let bad = malformed("object");
        if opt_u32(attrs, a::NFTA_OBJ_TYPE).map_err(&bad)? != Some(v::NFT_OBJECT_COUNTER) {
            return Ok(());
        }
        let name = opt_str(attrs, a::NFTA_OBJ_NAME)
            .map_err(&bad)?
            .ok_or_else(|| object("object", "no name"))?;
        self.table_mut()?.counters.push(Counter {
            name: name.to_string(),
        });
        Ok(())
    }

    /// A rule (`NFT_MSG_NEWRULE`).
    pub fn rule(&mut self, attrs: &[u8]) -> Result<(), DecodeError> {
        let chain = opt_str(attrs, a::NFTA_RULE_CHAIN)
            .map_err(malformed("rule"))?
            .ok_or_else(|| object("rule", "no chain"))?;
        let handle = find(attrs, a::NFTA_RULE_HANDLE)
            .ok()
            .flatten()
            .and_then(|h| h.u64_be().ok())
            .unwrap_or(0);
        let fail = |what: String| DecodeError::Rule {
            chain: chain.to_string(),
            handle,
            what,
        };
        let exprs = match find(attrs, a::NFTA_RULE_EXPRESSIONS) {
            Ok(Some(list)) => decode_exprs(&list).map_err(&fail)?,
            Ok(None) => Vec::new(),
            Err(e) => return Err(fail(e.to_string())),
        };
        let mut rule = RuleReader {
            family: self.family,
            sets: &self.sets,
            anon: &self.anon,
            exprs: &exprs,
            at: 0,
        }
        .read()
        .map_err(&fail)?;
        if let Some(c) = udata_str(attrs, a::NFTA_RULE_USERDATA, udata::RULE_COMMENT)
            .map_err(|e| fail(e.to_string()))?
        {
            rule.matches.push(Match::Comment(c));
        }
        let i = *self
            .chains
            .get(chain)
            .ok_or_else(|| fail("its chain is not in the dump".into()))?;
        let table = self.table.as_mut().ok_or(DecodeError::NoTable)?;
        table.chains[i].rules.push(rule);
        Ok(())
    }

    /// The table read (base chains with a `drop` policy end with the rule
    /// `drop comment "policy drop"`, as `parse_json` gives them).
    pub fn finish(self) -> Result<Table, DecodeError> {
        let mut table = self.table.ok_or(DecodeError::NoTable)?;
        for (set, keys) in table.sets.iter_mut().zip(self.set_keys) {
            set.elements = sorted(std::mem::take(&mut set.elements), keys);
        }
        for (map, keys) in table.maps.iter_mut().zip(self.map_keys) {
            map.elements = sorted(std::mem::take(&mut map.elements), keys);
        }
        for i in self.drop_policy {
            if let Some(c) = table.chains.get_mut(i) {
                c.push(
                    Rule::new()
                        .with(Match::Comment("policy drop".into()))
                        .verdict(Verdict::Drop),
                );
            }
        }
        Ok(table)
    }
}

/// What nft sorts a named set's elements by (`list_expr_sort`): a
/// concatenation's bytes as one host-order (little-endian) number, a
/// single value as its number (big-endian).
fn sort_key(types: &[u32], key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    if types.len() > 1 && cfg!(target_endian = "little") {
        k.reverse();
    }
    k
}

/// `items` in the order of their `keys` (stable).
fn sorted<T>(items: Vec<T>, keys: Vec<Vec<u8>>) -> Vec<T> {
    if items.len() != keys.len() {
        return items;
    }
    let mut pairs: Vec<(Vec<u8>, T)> = keys.into_iter().zip(items).collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.into_iter().map(|(_, t)| t).collect()
}

/// One expression as the kernel dumps it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dumped {
    /// One the encoder writes.
    Expr(Expr),
    /// An anonymous `counter` (a no-op for the IR).
    Counter,
}

fn reg(d: &[u8], kind: u16) -> Result<Option<Reg>, String> {
    let Some(x) = find(d, kind).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let n = x.u32_be().map_err(|e| e.to_string())?;
    Reg::from_kernel(n)
        .map(Some)
        .ok_or_else(|| format!("register {n}"))
}

fn need<T>(x: Option<T>, what: &str, name: &str) -> Result<T, String> {
    x.ok_or_else(|| format!("{name} without {what}"))
}

fn u32_attr(d: &[u8], kind: u16) -> Result<Option<u32>, String> {
    find(d, kind)
        .and_then(|x| x.map(|x| x.u32_be()).transpose())
        .map_err(|e| e.to_string())
}

fn value_attr(d: &[u8], kind: u16) -> Result<Option<Vec<u8>>, String> {
    let Some(x) = find(d, kind).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    match data(&x).map_err(|e| e.to_string())? {
        Data::Value(b) => Ok(Some(b)),
        Data::Verdict(_) => Err("a verdict where a value was expected".into()),
    }
}

/// The expressions of `NFTA_RULE_EXPRESSIONS`.
fn decode_exprs(list: &Attr<'_>) -> Result<Vec<Dumped>, String> {
    let mut out = Vec::new();
    for el in list.attrs() {
        let el = el.map_err(|e| e.to_string())?;
        if el.kind() != a::NFTA_LIST_ELEM {
            continue;
        }
        let name = el
            .attr(a::NFTA_EXPR_NAME)
            .and_then(|n| n.map(|n| n.str()).transpose())
            .map_err(|e| e.to_string())?
            .ok_or("an expression without name")?;
        let d = el.attr(a::NFTA_EXPR_DATA).map_err(|e| e.to_string())?;
        out.push(decode_expr(
            name,
            d.map(|d| d.payload()).unwrap_or_default(),
        )?);
    }
    Ok(out)
}

fn decode_expr(name: &str, d: &[u8]) -> Result<Dumped, String> {
    let x = match name {
        "payload" => {
            if find(d, e::NFTA_PAYLOAD_DREG)
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err("a payload write".into());
            }
            Expr::Payload {
                base: need(u32_attr(d, e::NFTA_PAYLOAD_BASE)?, "base", name)?,
                offset: need(u32_attr(d, e::NFTA_PAYLOAD_OFFSET)?, "offset", name)?,
                len: need(u32_attr(d, e::NFTA_PAYLOAD_LEN)?, "length", name)?,
                dreg: need(reg(d, e::NFTA_PAYLOAD_DREG)?, "register", name)?,
            }
        }
        "meta" => {
            let key = need(u32_attr(d, e::NFTA_META_KEY)?, "key", name)?;
            match (reg(d, e::NFTA_META_DREG)?, reg(d, e::NFTA_META_SREG)?) {
                (Some(dreg), None) => Expr::Meta { key, dreg },
                (None, Some(sreg)) => Expr::MetaSet { key, sreg },
                _ => return Err("meta without one register".into()),
            }
        }
        "cmp" => Expr::Cmp {
            sreg: need(reg(d, e::NFTA_CMP_SREG)?, "register", name)?,
            op: need(u32_attr(d, e::NFTA_CMP_OP)?, "operator", name)?,
            data: need(value_attr(d, e::NFTA_CMP_DATA)?, "data", name)?,
        },
        "bitwise" => {
            // NFTA_BITWISE_OP (6): only the mask-and-xor form.
            if u32_attr(d, 6)?.unwrap_or(0) != 0 {
                return Err("a bitwise shift".into());
            }
            Expr::Bitwise {
                sreg: need(reg(d, e::NFTA_BITWISE_SREG)?, "source register", name)?,
                dreg: need(reg(d, e::NFTA_BITWISE_DREG)?, "register", name)?,
                mask: need(value_attr(d, e::NFTA_BITWISE_MASK)?, "mask", name)?,
                xor: need(value_attr(d, e::NFTA_BITWISE_XOR)?, "xor", name)?,
            }
        }
        "lookup" => {
            let set = find(d, e::NFTA_LOOKUP_SET)
                .and_then(|s| s.map(|s| s.str().map(str::to_string)).transpose())
                .map_err(|e| e.to_string())?;
            let flags = u32_attr(d, e::NFTA_LOOKUP_FLAGS)?.unwrap_or(0);
            if flags & !v::NFT_LOOKUP_F_INV != 0 {
                return Err(format!("lookup flags {flags:#x}"));
            }
            Expr::Lookup {
                set: need(set, "set", name)?,
                set_id: None,
                sreg: need(reg(d, e::NFTA_LOOKUP_SREG)?, "register", name)?,
                dreg: reg(d, e::NFTA_LOOKUP_DREG)?,
                invert: flags & v::NFT_LOOKUP_F_INV != 0,
            }
        }
        "immediate" => {
            let x = find(d, e::NFTA_IMMEDIATE_DATA)
                .map_err(|e| e.to_string())?
                .ok_or("immediate without data")?;
            Expr::Immediate {
                dreg: need(reg(d, e::NFTA_IMMEDIATE_DREG)?, "register", name)?,
                data: data(&x).map_err(|e| e.to_string())?,
            }
        }
        "numgen" => {
            if u32_attr(d, e::NFTA_NG_TYPE)? != Some(v::NFT_NG_RANDOM)
                || u32_attr(d, e::NFTA_NG_OFFSET)?.unwrap_or(0) != 0
            {
                return Err("numgen other than random from 0".into());
            }
            Expr::Numgen {
                dreg: need(reg(d, e::NFTA_NG_DREG)?, "register", name)?,
                modulus: need(u32_attr(d, e::NFTA_NG_MODULUS)?, "modulus", name)?,
            }
        }
        "nat" => {
            if u32_attr(d, e::NFTA_NAT_TYPE)? != Some(v::NFT_NAT_DNAT) {
                return Err("nat other than dnat".into());
            }
            let family = match u32_attr(d, e::NFTA_NAT_FAMILY)? {
                Some(2) => IpFamily::V4,
                Some(10) => IpFamily::V6,
                f => return Err(format!("nat family {f:?}")),
            };
            let addr = need(reg(d, e::NFTA_NAT_REG_ADDR_MIN)?, "address register", name)?;
            let proto = need(reg(d, e::NFTA_NAT_REG_PROTO_MIN)?, "port register", name)?;
            if reg(d, e::NFTA_NAT_REG_ADDR_MAX)?.is_some_and(|r| r != addr)
                || reg(d, e::NFTA_NAT_REG_PROTO_MAX)?.is_some_and(|r| r != proto)
            {
                return Err("a nat range".into());
            }
            Expr::Dnat {
                family,
                addr,
                proto,
                flags: u32_attr(d, e::NFTA_NAT_FLAGS)?.unwrap_or(0),
            }
        }
        "masq" => {
            if find(d, e::NFTA_NAT_REG_ADDR_MIN)
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err("masquerade to ports".into());
            }
            Expr::Masq {
                flags: u32_attr(d, e::NFTA_MASQ_FLAGS)?.unwrap_or(0),
            }
        }
        "dynset" => {
            if u32_attr(d, e::NFTA_DYNSET_OP)? != Some(v::NFT_DYNSET_OP_UPDATE)
                || find(d, e::NFTA_DYNSET_SREG_DATA)
                    .map_err(|e| e.to_string())?
                    .is_some()
            {
                return Err("dynset other than update".into());
            }
            let set = find(d, e::NFTA_DYNSET_SET_NAME)
                .and_then(|s| s.map(|s| s.str().map(str::to_string)).transpose())
                .map_err(|e| e.to_string())?;
            Expr::DynsetUpdate {
                set: need(set, "set", name)?,
                set_id: None,
                sreg: need(reg(d, e::NFTA_DYNSET_SREG_KEY)?, "register", name)?,
            }
        }
        "objref" => {
            if u32_attr(d, e::NFTA_OBJREF_IMM_TYPE)? != Some(v::NFT_OBJECT_COUNTER) {
                return Err("objref other than a counter".into());
            }
            let n = find(d, e::NFTA_OBJREF_IMM_NAME)
                .and_then(|s| s.map(|s| s.str().map(str::to_string)).transpose())
                .map_err(|e| e.to_string())?;
            Expr::CounterRef {
                name: need(n, "name", name)?,
            }
        }
        "fib" => {
            if u32_attr(d, e::NFTA_FIB_RESULT)? != Some(v::NFT_FIB_RESULT_ADDRTYPE) {
                return Err("fib other than type".into());
            }
            Expr::Fib {
                flags: need(u32_attr(d, e::NFTA_FIB_FLAGS)?, "flags", name)?,
                dreg: need(reg(d, e::NFTA_FIB_DREG)?, "register", name)?,
            }
        }
        "ct" => {
            if find(d, e::NFTA_CT_DIRECTION)
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err("ct with a direction".into());
            }
            let dreg = reg(d, e::NFTA_CT_DREG)?.ok_or("ct set")?;
            Expr::Ct {
                key: need(u32_attr(d, e::NFTA_CT_KEY)?, "key", name)?,
                dreg,
            }
        }
        "reject" => {
            let code = find(d, e::NFTA_REJECT_ICMP_CODE)
                .map_err(|e| e.to_string())?
                .and_then(|c| c.payload().first().copied())
                .unwrap_or(0);
            Expr::Reject {
                kind: need(u32_attr(d, e::NFTA_REJECT_TYPE)?, "type", name)?,
                code: u32::from(code),
            }
        }
        "counter" => return Ok(Dumped::Counter),
        other => return Err(format!("expression {other}")),
    };
    Ok(Dumped::Expr(x))
}

/// A statement read back, as `parse_json` sorts them.
enum Stmt {
    Match(Match),
    Verdict(Verdict),
    Mark(MarkOp, u32),
    Skip,
}

/// Reads a rule's expressions into statements.
struct RuleReader<'a> {
    family: IpFamily,
    sets: &'a HashMap<String, SetInfo>,
    anon: &'a [Vec<RawElement>],
    exprs: &'a [Dumped],
    at: usize,
}

/// A key loaded into a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// `ip saddr` / `ip daddr`, `len` bytes of it.
    Addr(Direction, u32),
    L4Proto,
    DstPort,
}

impl RuleReader<'_> {
    fn peek(&self, k: usize) -> Option<&Expr> {
        match self.exprs.get(self.at + k)? {
            Dumped::Expr(x) => Some(x),
            Dumped::Counter => None,
        }
    }

    fn load_of(&self, x: &Expr) -> Option<(Load, Reg)> {
        match x {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let f = self.family;
                let alen = addr_len(f);
                if *base == v::NFT_PAYLOAD_NETWORK_HEADER && *len >= 1 && *len <= alen {
                    for dir in [Direction::Src, Direction::Dst] {
                        if *offset == addr_offset(f, dir) {
                            return Some((Load::Addr(dir, *len), *dreg));
                        }
                    }
                    None
                } else if *base == v::NFT_PAYLOAD_TRANSPORT_HEADER && *offset == 2 && *len == 2 {
                    Some((Load::DstPort, *dreg))
                } else {
                    None
                }
            }
            Expr::Meta {
                key: v::NFT_META_L4PROTO,
                dreg,
            } => Some((Load::L4Proto, *dreg)),
            _ => None,
        }
    }

    fn read(mut self) -> Result<Rule, String> {
        let mut stmts = Vec::new();
        while self.at < self.exprs.len() {
            stmts.push(self.stmt()?);
        }
        // As parse_json: the last statement is the verdict if it is one.
        let mut rule = Rule::new();
        let n = stmts.len();
        for (i, s) in stmts.into_iter().enumerate() {
            let last = i + 1 == n;
            match s {
                Stmt::Match(m) => rule.matches.push(m),
                Stmt::Skip => {}
                Stmt::Mark(op, value) if last => {
                    rule.verdict = Some(Verdict::SetMark { op, value })
                }
                Stmt::Mark(op, value) => rule.matches.push(Match::SetMark { op, value }),
                Stmt::Verdict(v) if last => rule.verdict = Some(v),
                Stmt::Verdict(v) => return Err(format!("verdict {v:?} before the last statement")),
            }
        }
        Ok(rule)
    }

    fn unknown(&self) -> String {
        match self.exprs.get(self.at) {
            Some(Dumped::Expr(x)) => format!("expressions from {x}"),
            Some(Dumped::Counter) => "a counter".into(),
            None => "a cut expression sequence".into(),
        }
    }

    fn stmt(&mut self) -> Result<Stmt, String> {
        let r1 = Reg::FIRST;
        let Some(first) = self.peek(0).cloned() else {
            self.at += 1;
            return Ok(Stmt::Skip);
        };
        // Loads of keys (one or a concatenation) and what uses them.
        if let Some((load, r)) = self.load_of(&first)
            && r == r1
        {
            return self.after_loads(load);
        }
        let cmp = |x: Option<&Expr>| match x {
            Some(Expr::Cmp { sreg, op, data }) if *sreg == r1 => Some((*op, data.clone())),
            _ => None,
        };
        let neg = |op: u32| -> Result<bool, String> {
            match op {
                v::NFT_CMP_EQ => Ok(false),
                v::NFT_CMP_NEQ => Ok(true),
                o => Err(format!("comparison {o}")),
            }
        };
        let stmt = match &first {
            Expr::Meta {
                key: v::NFT_META_MARK,
                dreg,
            } if *dreg == r1 => {
                let Some(Expr::Bitwise {
                    sreg,
                    dreg,
                    mask,
                    xor,
                }) = self.peek(1)
                else {
                    return Err(self.unknown());
                };
                if *sreg != r1 || *dreg != r1 {
                    return Err(self.unknown());
                }
                let word = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(u32::from_ne_bytes);
                let (Some(mask), Some(xor)) = (word(mask), word(xor)) else {
                    return Err(self.unknown());
                };
                match self.peek(2) {
                    Some(Expr::MetaSet {
                        key: v::NFT_META_MARK,
                        sreg,
                    }) if *sreg == r1 => {
                        self.at += 3;
                        if mask == u32::MAX {
                            return Ok(Stmt::Mark(MarkOp::Xor, xor));
                        }
                        if mask == !xor {
                            return Ok(Stmt::Mark(MarkOp::Or, xor));
                        }
                        return Err(format!("mark set with mask {mask:#x} xor {xor:#x}"));
                    }
                    _ => {}
                }
                let Some((op, data)) = cmp(self.peek(2)) else {
                    return Err(self.unknown());
                };
                let value = word(&data).ok_or_else(|| self.unknown())?;
                if xor != 0 {
                    return Err(self.unknown());
                }
                self.at += 3;
                return Ok(Stmt::Match(Match::Mark {
                    value,
                    mask,
                    negate: neg(op)?,
                }));
            }
            Expr::Meta {
                key: v::NFT_META_IIFNAME,
                dreg,
            } if *dreg == r1 => {
                let (op, data) = cmp(self.peek(1)).ok_or_else(|| self.unknown())?;
                let (name, prefix) = if data.len() == 16 {
                    let end = data.iter().position(|b| *b == 0).unwrap_or(16);
                    if data[end..].iter().any(|b| *b != 0) {
                        return Err("an interface name with bytes after its end".into());
                    }
                    (&data[..end], false)
                } else {
                    if data.contains(&0) {
                        return Err("an interface prefix with a NUL".into());
                    }
                    (&data[..], true)
                };
                let name = std::str::from_utf8(name)
                    .map_err(|_| "an interface name that is not UTF-8".to_string())?;
                self.at += 2;
                Stmt::Match(Match::InInterface {
                    name: name.to_string(),
                    prefix,
                    negate: neg(op)?,
                })
            }
            Expr::Fib { flags, dreg } if *dreg == r1 => {
                let dir = match *flags {
                    v::NFTA_FIB_F_SADDR => Direction::Src,
                    v::NFTA_FIB_F_DADDR => Direction::Dst,
                    f => return Err(format!("fib flags {f:#x}")),
                };
                let (op, data) = cmp(self.peek(1)).ok_or_else(|| self.unknown())?;
                if data != RTN_LOCAL.to_ne_bytes() {
                    return Err("fib type other than local".into());
                }
                self.at += 2;
                Stmt::Match(Match::AddrTypeLocal {
                    dir,
                    negate: neg(op)?,
                })
            }
            Expr::Ct { key, dreg } if *dreg == r1 => {
                let Some(Expr::Bitwise {
                    sreg,
                    dreg,
                    mask,
                    xor,
                }) = self.peek(1)
                else {
                    return Err(self.unknown());
                };
                let (op, data) = cmp(self.peek(2)).ok_or_else(|| self.unknown())?;
                if *sreg != r1
                    || *dreg != r1
                    || xor.iter().any(|b| *b != 0)
                    || data.iter().any(|b| *b != 0)
                {
                    return Err(self.unknown());
                }
                let bits = <[u8; 4]>::try_from(mask.as_slice())
                    .map(u32::from_ne_bytes)
                    .map_err(|_| self.unknown())?;
                let states = match *key {
                    v::NFT_CT_STATUS if bits == IPS_DST_NAT => vec![CtState::Dnat],
                    v::NFT_CT_STATE => {
                        let all = [
                            (CT_INVALID, CtState::Invalid),
                            (CT_ESTABLISHED, CtState::Established),
                            (CT_RELATED, CtState::Related),
                            (CT_NEW, CtState::New),
                        ];
                        let known = all.iter().fold(0, |acc, (b, _)| acc | b);
                        if bits == 0 || bits & !known != 0 {
                            return Err(format!("ct state bits {bits:#x}"));
                        }
                        all.iter()
                            .filter(|(b, _)| bits & b != 0)
                            .map(|(_, s)| *s)
                            .collect()
                    }
                    _ => return Err(self.unknown()),
                };
                // `!= 0`: one of the bits; `== 0`: none of them.
                let negate = match op {
                    v::NFT_CMP_NEQ => false,
                    v::NFT_CMP_EQ => true,
                    o => return Err(format!("comparison {o}")),
                };
                self.at += 3;
                Stmt::Match(Match::CtState { states, negate })
            }
            Expr::CounterRef { name } => {
                self.at += 1;
                Stmt::Match(Match::Nfacct(name.clone()))
            }
            Expr::Immediate {
                dreg: Reg::VERDICT,
                data: Data::Verdict(vd),
            } => {
                self.at += 1;
                Stmt::Verdict(verdict_of(vd).ok_or_else(|| format!("verdict {vd:?}"))?)
            }
            Expr::Immediate {
                dreg,
                data: Data::Value(addr),
            } if *dreg == r1 => {
                let Some(Expr::Immediate {
                    dreg: preg,
                    data: Data::Value(port),
                }) = self.peek(1)
                else {
                    return Err(self.unknown());
                };
                let Some(Expr::Dnat {
                    family,
                    addr: areg,
                    proto,
                    flags,
                }) = self.peek(2)
                else {
                    return Err(self.unknown());
                };
                let allowed = v::NF_NAT_RANGE_MAP_IPS | v::NF_NAT_RANGE_PROTO_SPECIFIED;
                if *family != self.family
                    || *areg != r1
                    || proto != preg
                    || flags & !allowed != 0
                    || addr.len() != addr_len(self.family) as usize
                {
                    return Err(self.unknown());
                }
                let ip = ip_of(addr).ok_or_else(|| self.unknown())?;
                let port = match port.as_slice() {
                    [a, b] => u16::from_be_bytes([*a, *b]),
                    _ => return Err(self.unknown()),
                };
                self.at += 3;
                Stmt::Verdict(Verdict::Dnat(SocketAddr::new(ip, port)))
            }
            Expr::Numgen { dreg, modulus } if *dreg == r1 => return self.numgen(*modulus),
            Expr::Masq { flags } => {
                let random_fully = match *flags {
                    0 => false,
                    v::NF_NAT_RANGE_PROTO_RANDOM_FULLY => true,
                    f => return Err(format!("masquerade flags {f:#x}")),
                };
                self.at += 1;
                Stmt::Verdict(Verdict::Masquerade { random_fully })
            }
            Expr::Reject { kind, code } => {
                let port_unreachable = match (*kind, self.family) {
                    (v::NFT_REJECT_ICMP_UNREACH, IpFamily::V4) => *code == ICMP_PORT_UNREACH,
                    (v::NFT_REJECT_ICMP_UNREACH, IpFamily::V6) => *code == ICMPV6_PORT_UNREACH,
                    (v::NFT_REJECT_ICMPX_UNREACH, _) => *code == ICMPX_PORT_UNREACH,
                    _ => false,
                };
                if !port_unreachable {
                    return Err(format!("reject type {kind} code {code}"));
                }
                self.at += 1;
                Stmt::Verdict(Verdict::Reject)
            }
            _ => return Err(self.unknown()),
        };
        Ok(stmt)
    }

    /// Keys loaded from register 1 on, then a comparison, a lookup or a
    /// set update.
    fn after_loads(&mut self, first: Load) -> Result<Stmt, String> {
        let start = self.at;
        let mut loads = vec![first];
        let mut next = Reg::FIRST.after(self.load_words(first));
        let mut k = 1;
        while let Some(x) = self.peek(k) {
            match self.load_of(x) {
                Some((l, r)) if r == next => {
                    loads.push(l);
                    next = next.after(self.load_words(l));
                    k += 1;
                }
                _ => break,
            }
        }
        let then = self.peek(k).cloned();
        let alen = addr_len(self.family);
        match then {
            Some(Expr::Cmp { sreg, op, data }) if sreg == Reg::FIRST && loads.len() == 1 => {
                let negate = match op {
                    v::NFT_CMP_EQ => false,
                    v::NFT_CMP_NEQ => true,
                    o => return Err(format!("comparison {o}")),
                };
                let m = match first {
                    Load::L4Proto if !negate => match data.as_slice() {
                        [p] => Match::Protocol(
                            protocol(*p).ok_or_else(|| format!("meta l4proto {p}"))?,
                        ),
                        _ => return Err(self.unknown()),
                    },
                    Load::DstPort if !negate => match data.as_slice() {
                        [a, b] => Match::DstPort(u16::from_be_bytes([*a, *b])),
                        _ => return Err(self.unknown()),
                    },
                    Load::Addr(dir, len) if data.len() == len as usize => {
                        let addr = if len == alen {
                            AddrMatch::Ip(ip_of(&data).ok_or_else(|| self.unknown())?)
                        } else {
                            self.prefix(&data, len * 8)?
                        };
                        Match::Addr { dir, addr, negate }
                    }
                    _ => return Err(self.unknown()),
                };
                self.at = start + k + 1;
                Ok(Stmt::Match(m))
            }
            Some(Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            }) if sreg == Reg::FIRST && dreg == Reg::FIRST && loads.len() == 1 => {
                let Load::Addr(dir, len) = first else {
                    return Err(self.unknown());
                };
                let Some(Expr::Cmp { sreg, op, data }) = self.peek(k + 1).cloned() else {
                    return Err(self.unknown());
                };
                if sreg != Reg::FIRST
                    || mask.len() != len as usize
                    || data.len() != len as usize
                    || xor.iter().any(|b| *b != 0)
                {
                    return Err(self.unknown());
                }
                let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
                let is_prefix = mask
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == prefix_byte(ones, i));
                if !is_prefix || ones == 0 {
                    return Err(format!("address mask {mask:02x?}"));
                }
                let negate = match op {
                    v::NFT_CMP_EQ => false,
                    v::NFT_CMP_NEQ => true,
                    o => return Err(format!("comparison {o}")),
                };
                let addr = self.prefix(&data, ones)?;
                self.at = start + k + 2;
                Ok(Stmt::Match(Match::Addr { dir, addr, negate }))
            }
            Some(Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
                ..
            }) if sreg == Reg::FIRST => {
                let info = self
                    .sets
                    .get(&set)
                    .ok_or_else(|| format!("a lookup in set {set}, not in the dump"))?;
                let stmt = if let Place::Anon(i) = info.place {
                    let [Load::Addr(dir, len)] = loads.as_slice() else {
                        return Err(self.unknown());
                    };
                    if dreg.is_some()
                        || *len != alen
                        || info.flags & v::NFT_SET_INTERVAL == 0
                        || info.data_type.is_some()
                    {
                        return Err(self.unknown());
                    }
                    let addrs = self.intervals(&self.anon[i], &set)?;
                    Stmt::Match(Match::AddrSet {
                        dir: *dir,
                        addrs,
                        negate: invert,
                    })
                } else {
                    let keys = self.keys(&loads)?;
                    match dreg {
                        None => Stmt::Match(Match::InSet {
                            keys,
                            set,
                            negate: invert,
                        }),
                        Some(Reg::VERDICT) if !invert => {
                            Stmt::Verdict(Verdict::VerdictMap { keys, map: set })
                        }
                        Some(_) => return Err(self.unknown()),
                    }
                };
                self.at = start + k + 1;
                Ok(stmt)
            }
            Some(Expr::DynsetUpdate { set, sreg, .. }) if sreg == Reg::FIRST => {
                let keys = self.keys(&loads)?;
                self.at = start + k + 1;
                Ok(Stmt::Match(Match::UpdateSet { keys, set }))
            }
            _ => Err(self.unknown()),
        }
    }

    fn load_words(&self, l: Load) -> u32 {
        match l {
            Load::Addr(_, len) => len.div_ceil(4),
            Load::L4Proto | Load::DstPort => 1,
        }
    }

    fn keys(&self, loads: &[Load]) -> Result<Vec<Key>, String> {
        let alen = addr_len(self.family);
        loads
            .iter()
            .map(|l| match l {
                Load::Addr(Direction::Src, len) if *len == alen => Ok(Key::SrcAddr),
                Load::Addr(Direction::Dst, len) if *len == alen => Ok(Key::DstAddr),
                Load::L4Proto => Ok(Key::L4Proto),
                Load::DstPort => Ok(Key::DstPort),
                Load::Addr(..) => Err("a part of an address as a key".to_string()),
            })
            .collect()
    }

    /// `bytes` (the prefix's first bytes) and zeros, as a prefix.
    fn prefix(&self, bytes: &[u8], plen: u32) -> Result<AddrMatch, String> {
        let mut full = bytes.to_vec();
        full.resize(addr_len(self.family) as usize, 0);
        let ip = ip_of(&full).ok_or("an address of the wrong length")?;
        IpNet::new(ip, u8::try_from(plen).map_err(|_| "prefix length")?)
            .map(AddrMatch::Net)
            .map_err(|e| e.to_string())
    }

    /// The ranges of an anonymous interval set, as nft prints them: sorted,
    /// each an address or a prefix.
    fn intervals(&self, elements: &[RawElement], set: &str) -> Result<Vec<AddrMatch>, String> {
        let alen = addr_len(self.family) as usize;
        let bits = alen as u32 * 8;
        let top: u128 = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let mut points: Vec<(u128, bool)> = Vec::with_capacity(elements.len());
        for (key, _, end) in elements {
            if key.len() != alen {
                return Err(format!("set {set}: a key of {} bytes", key.len()));
            }
            let mut b = [0u8; 16];
            b[16 - alen..].copy_from_slice(key);
            points.push((u128::from_be_bytes(b), *end));
        }
        // Ends sort before starts at the same point (a range ending where
        // the next starts).
        points.sort_by_key(|(x, end)| (*x, !*end));
        let mut out = Vec::new();
        let mut open: Option<u128> = None;
        for (x, end) in points {
            match (open, end) {
                (None, false) => open = Some(x),
                (None, true) => {}
                (Some(s), true) => {
                    if x == 0 {
                        return Err(format!("set {set}: an empty range"));
                    }
                    out.push(self.range(s, x - 1)?);
                    open = None;
                }
                (Some(s), false) => {
                    // Adjacent ranges nft merged, or a range without its
                    // end: the start of another range ends this one.
                    if x == 0 {
                        return Err(format!("set {set}: an empty range"));
                    }
                    out.push(self.range(s, x - 1)?);
                    open = Some(x);
                }
            }
        }
        if let Some(s) = open {
            out.push(self.range(s, top)?);
        }
        if out.is_empty() {
            return Err(format!("set {set}: no address"));
        }
        Ok(out)
    }

    /// A range as nft prints it: an address, a prefix, or an error.
    fn range(&self, start: u128, end: u128) -> Result<AddrMatch, String> {
        let alen = addr_len(self.family) as usize;
        let bits = alen as u32 * 8;
        let ip = |x: u128| ip_of(&x.to_be_bytes()[16 - alen..]);
        let size_minus_one = end.wrapping_sub(start);
        let host_bits = 128 - size_minus_one.leading_zeros();
        let aligned = size_minus_one
            .checked_add(1)
            .is_none_or(|n| n.is_power_of_two())
            && (host_bits == 128 || start & ((1u128 << host_bits) - 1) == 0);
        if end < start || !aligned || host_bits > bits {
            return Err("an address range that is not a prefix".into());
        }
        let a = ip(start).ok_or("an address")?;
        if host_bits == 0 {
            return Ok(AddrMatch::Ip(a));
        }
        IpNet::new(a, (bits - host_bits) as u8)
            .map(AddrMatch::Net)
            .map_err(|e| e.to_string())
    }

    /// `numgen random mod N` and the anonymous map it indexes: a verdict
    /// map of `goto`s, or DNAT destinations.
    fn numgen(&mut self, modulus: u32) -> Result<Stmt, String> {
        let Some(Expr::Lookup {
            set,
            sreg,
            dreg: Some(dreg),
            invert: false,
            ..
        }) = self.peek(1).cloned()
        else {
            return Err(self.unknown());
        };
        let info = self
            .sets
            .get(&set)
            .ok_or_else(|| format!("a lookup in set {set}, not in the dump"))?;
        let Place::Anon(i) = info.place else {
            return Err(self.unknown());
        };
        if sreg != Reg::FIRST || info.key_len != 4 {
            return Err(self.unknown());
        }
        let n = modulus as usize;
        if n == 0 || n > MAX_ANON_ELEMENTS {
            return Err(format!("numgen modulus {modulus}"));
        }
        let mut slots: Vec<Option<&Data>> = vec![None; n];
        for (key, value, _) in &self.anon[i] {
            let idx = <[u8; 4]>::try_from(key.as_slice())
                .map(u32::from_ne_bytes)
                .map_err(|_| format!("set {set}: a key that is not a number"))?;
            // parse_json reads indexes below the modulus only.
            let Some(slot) = slots.get_mut(idx as usize) else {
                return Err(format!("set {set}: index {idx} of {modulus}"));
            };
            *slot = value.as_ref();
        }
        let values: Vec<&Data> = slots
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| format!("set {set}: an index without value"))?;
        if dreg == Reg::VERDICT {
            let to = values
                .iter()
                .map(|d| match d {
                    Data::Verdict(VerdictData::Chain(v::NFT_GOTO, c)) => {
                        Ok(ChainName::new(c.as_str()))
                    }
                    other => Err(format!("set {set}: value {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.at += 2;
            return Ok(Stmt::Verdict(Verdict::RandomVerdictMap { to }));
        }
        let alen = addr_len(self.family);
        let Some(Expr::Dnat {
            family,
            addr,
            proto,
            flags,
        }) = self.peek(2)
        else {
            return Err(self.unknown());
        };
        let allowed = v::NF_NAT_RANGE_MAP_IPS | v::NF_NAT_RANGE_PROTO_SPECIFIED;
        if dreg != Reg::FIRST
            || *family != self.family
            || *addr != Reg::FIRST
            || *proto != Reg::FIRST.after(alen / 4)
            || flags & !allowed != 0
        {
            return Err(self.unknown());
        }
        let a = alen as usize;
        let to = values
            .iter()
            .map(|d| match d {
                Data::Value(b) if b.len() == a + 4 => {
                    let ip = ip_of(&b[..a]).ok_or("an address")?;
                    Ok(SocketAddr::new(ip, u16::from_be_bytes([b[a], b[a + 1]])))
                }
                other => Err(format!("set {set}: value {other:?}")),
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.at += 3;
        Ok(Stmt::Verdict(Verdict::DnatRandom { to }))
    }
}

/// Byte `i` of a `plen`-bit prefix mask.
fn prefix_byte(plen: u32, i: usize) -> u8 {
    let bits = plen.saturating_sub(i as u32 * 8).min(8);
    if bits == 0 { 0 } else { 0xffu8 << (8 - bits) }
}

#[cfg(test)]
mod tests;
