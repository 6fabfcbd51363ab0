//! `nft -j list ruleset` output (nft 1.0.x's JSON schema) -> IR.
//!
//! Every `ip` and `ip6` table of the dump is read (kube-proxy's
//! `kube-proxy` tables, and any other table whose base chains see the same
//! packets); tables of other families (`inet`, `bridge`, ...) are listed in
//! [`NftDump::skipped`]. The dump is read as plain JSON rather than through
//! the `nftables` crate's schema types, so that a statement the schema (or
//! kproxy) does not know is kept rather than failing the whole dump: it
//! becomes [`Match::Opaque`] (or [`Verdict::Opaque`] as a rule's last
//! statement) holding the statement's JSON text, which the tracer reports
//! as "cannot evaluate".
//!
//! The result is in the dump's order; compare it with what kproxy builds
//! through [`kproxy_core::canon::canonical`] (nft lists objects in its own
//! order, and keeps a rule's comment apart from its statements, so the
//! parser appends it as the rule's last match). Handles, counters' values
//! and set elements' `expires` are ignored. A base chain whose policy is
//! `drop` gets a last rule `drop comment "policy drop"`.
//!
//! ```
//! use kproxy_core::ir::{Match, Verdict};
//! use kproxy_core::model::Protocol;
//! let dump = r#"{"nftables": [
//!   {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
//!   {"table": {"family": "ip", "name": "kube-proxy", "handle": 1}},
//!   {"chain": {"family": "ip", "table": "kube-proxy", "name": "svc", "handle": 2}},
//!   {"rule": {"family": "ip", "table": "kube-proxy", "chain": "svc", "handle": 3,
//!     "comment": "hello",
//!     "expr": [
//!       {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
//!       {"log": null},
//!       {"dnat": {"addr": "10.0.0.1", "port": 80}}]}}
//! ]}"#;
//! let d = kproxy_nft::parse::parse_json(dump).unwrap();
//! let rule = &d.ruleset.tables[0].chain("svc").unwrap().rules[0];
//! assert_eq!(rule.matches[0], Match::Protocol(Protocol::Tcp));
//! assert_eq!(rule.matches[1], Match::Opaque(r#"{"log":null}"#.into()));
//! assert_eq!(rule.comment(), Some("hello"));
//! assert_eq!(rule.verdict, Some(Verdict::Dnat("10.0.0.1:80".parse().unwrap())));
//! ```

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kproxy_core::ir::{
    AddrMatch, BaseChainType, Chain, ChainKind, Counter, CtState, Direction, Element, Hook, Key,
    KeyValue, Map, MapValue, MarkOp, Match, Rule, Ruleset, Set, Table, TableFamily, Verdict,
};
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::names::ChainName;
use serde_json::Value;

/// Why a dump could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON, or not `{"nftables": [...]}`.
    #[error("not an `nft -j list ruleset` dump: {0}")]
    Format(String),
    /// An object of the dump is malformed or refers to a missing table or
    /// chain.
    #[error("{object}: {message}")]
    Object {
        /// The object (`chain ip kube-proxy services`).
        object: String,
        /// What is wrong.
        message: String,
    },
}

/// What was read from a dump.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftDump {
    /// The `ip` and `ip6` tables, in the dump's order.
    pub ruleset: Ruleset,
    /// Tables of other families, not read (`inet filter`).
    pub skipped: Vec<String>,
    /// The `ip` and `ip6` tables listed with flags (`dormant`: e.g. a
    /// first sync written in several transactions that did not finish),
    /// by name. kube-proxy's tables have none.
    pub flagged: Vec<String>,
}

/// Whether `text` looks like an `nft -j` dump.
///
/// ```
/// assert!(kproxy_nft::parse::looks_like_json(" {\"nftables\": []}"));
/// assert!(!kproxy_nft::parse::looks_like_json("*filter\nCOMMIT\n"));
/// ```
pub fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

fn family_of(v: &Value) -> Option<IpFamily> {
    match v.get("family")?.as_str()? {
        "ip" => Some(IpFamily::V4),
        "ip6" => Some(IpFamily::V6),
        _ => None,
    }
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k)?.as_str()
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Parses `nft -j list ruleset` output.
///
/// The document is read twice: once to find a syntax error (as a whole,
/// without keeping it), then item by item, each `nftables` item read into a
/// value, turned into tables, chains, rules, sets and maps, and dropped, so
/// the memory needed is the result's, not the document tree's (a 10k
/// Services dump is 40 MB of JSON, about 1 GB as a tree).
pub fn parse_json(text: &str) -> Result<NftDump, ParseError> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| ParseError::Format(e.to_string()))?;
    let mut b = Builder::default();
    let mut de = serde_json::Deserializer::from_str(text);
    // A data error is a document of another shape; the nesting limit,
    // counted on the items as on a tree, is the tree's error.
    let found = match serde::de::DeserializeSeed::deserialize(Document(&mut b), &mut de) {
        Ok(found) => found,
        Err(e) if e.classify() == serde_json::error::Category::Data => false,
        Err(e) => return Err(ParseError::Format(e.to_string())),
    };
    if !found {
        return Err(ParseError::Format("no \"nftables\" array".into()));
    }
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.finish())
}

/// The top-level object: whether it has an `nftables` array, whose items
/// go to the builder (the last such key counts, as in a parsed tree).
/// Anything but an object is an error.
struct Document<'b>(&'b mut Builder);

impl<'de> serde::de::DeserializeSeed<'de> for Document<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Document<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an nft -j document")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "nftables" {
                // A later key replaces an earlier one.
                *self.0 = Builder::default();
                found = map.next_value_seed(Items(&mut *self.0))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The `nftables` value: each item of an array to the builder; anything
/// else is no array.
struct Items<'b>(&'b mut Builder);

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the nftables array")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            if self.0.error.is_none()
                && let Err(e) = self.0.item(&item)
            {
                self.0.error = Some(e);
            }
        }
        Ok(true)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// The dump being read, item by item.
#[derive(Default)]
struct Builder {
    out: NftDump,
    /// Base chains whose policy is not accept.
    drop_policy: Vec<(usize, String)>,
    /// Each table's chains by name: a large cluster's table has 100k.
    chain_index: std::collections::HashMap<(usize, String), usize>,
    /// The first item that could not be read (the rest are not).
    error: Option<ParseError>,
}

impl Builder {
    /// Adds one item of the `nftables` array.
    fn item(&mut self, item: &Value) -> Result<(), ParseError> {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            return Ok(());
        };
        if kind == "metainfo" {
            return Ok(());
        }
        let name = str_field(body, "name").unwrap_or_default();
        let table_name = if kind == "table" {
            name
        } else {
            str_field(body, "table").unwrap_or_default()
        };
        let fam_word = str_field(body, "family").unwrap_or_default();
        let Some(family) = family_of(body) else {
            let t = format!("{fam_word} {table_name}");
            if !self.out.skipped.contains(&t) {
                self.out.skipped.push(t);
            }
            return Ok(());
        };
        let object = |what: &str| format!("{kind} {fam_word} {table_name} {what}");
        let bad = |what: &str, message: &str| ParseError::Object {
            object: object(what),
            message: message.to_string(),
        };
        if kind == "table" {
            let mut t = Table::new(name, TableFamily::Nft(family));
            t.comment = str_field(body, "comment").map(str::to_string);
            if body.get("flags").is_some_and(|f| !f.is_null()) {
                self.out.flagged.push(name.to_string());
            }
            self.out.ruleset.tables.push(t);
            return Ok(());
        }
        let ti = self
            .out
            .ruleset
            .tables
            .iter()
            .position(|t| t.name == table_name && t.family == TableFamily::Nft(family))
            .ok_or_else(|| bad(name, "its table is not in the dump"))?;
        let table = &mut self.out.ruleset.tables[ti];
        match kind.as_str() {
            "chain" => {
                let mut c = Chain::new(name);
                c.comment = str_field(body, "comment").map(str::to_string);
                if let Some(h) = str_field(body, "hook") {
                    let hook = parse_hook(h).ok_or_else(|| bad(name, "unknown hook"))?;
                    let chain_type = match str_field(body, "type") {
                        Some("nat") => BaseChainType::Nat,
                        _ => BaseChainType::Filter,
                    };
                    let priority = body
                        .get("prio")
                        .and_then(priority)
                        .ok_or_else(|| bad(name, "unknown priority"))?;
                    c.kind = ChainKind::Base {
                        chain_type,
                        hook,
                        priority,
                    };
                    if str_field(body, "policy").is_some_and(|p| p != "accept") {
                        self.drop_policy.push((ti, name.to_string()));
                    }
                }
                self.chain_index
                    .insert((ti, c.name.to_string()), table.chains.len());
                table.chains.push(c);
            }
            "rule" => {
                let chain = str_field(body, "chain").unwrap_or_default();
                let exprs = body
                    .get("expr")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad(chain, "a rule without statements"))?;
                let mut rule = parse_rule(family, exprs);
                if let Some(c) = str_field(body, "comment") {
                    rule.matches.push(Match::Comment(c.to_string()));
                }
                // The index, not a search by name: a large cluster's table
                // has 100k chains.
                self.chain_index
                    .get(&(ti, chain.to_string()))
                    .and_then(|&i| table.chains.get_mut(i))
                    .ok_or_else(|| bad(chain, "a rule of a chain that is not in the dump"))?
                    .push(rule);
            }
            "set" | "map" => {
                let type_spec = body
                    .get("type")
                    .and_then(type_spec)
                    .ok_or_else(|| bad(name, "no element type"))?;
                let types: Vec<String> = type_spec.split(" . ").map(str::to_string).collect();
                let flags: Vec<String> = match body.get("flags") {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                let comment = str_field(body, "comment").map(str::to_string);
                let elems = body.get("elem").and_then(Value::as_array);
                if kind == "set" {
                    let mut elements = Vec::new();
                    for e in elems.into_iter().flatten() {
                        elements.push(
                            element(e, &types)
                                .ok_or_else(|| bad(name, &format!("element {}", compact(e))))?,
                        );
                    }
                    table.sets.push(Set {
                        name: name.to_string(),
                        type_spec,
                        flags,
                        timeout: body
                            .get("timeout")
                            .and_then(Value::as_u64)
                            .and_then(|t| u32::try_from(t).ok()),
                        comment,
                        elements,
                    });
                } else {
                    let value_type = str_field(body, "map").unwrap_or_default().to_string();
                    let mut elements = Vec::new();
                    for e in elems.into_iter().flatten() {
                        let parsed = e.as_array().and_then(|pair| match pair.as_slice() {
                            [k, v] => Some((element(k, &types)?, verdict_value(v)?)),
                            _ => None,
                        });
                        elements.push(
                            parsed.ok_or_else(|| bad(name, &format!("element {}", compact(e))))?,
                        );
                    }
                    table.maps.push(Map {
                        name: name.to_string(),
                        type_spec,
                        value_type,
                        flags,
                        comment,
                        elements: elements
                            .into_iter()
                            .map(|(e, v)| (e, MapValue::Verdict(v)))
                            .collect(),
                    });
                }
            }
            "counter" => table.counters.push(Counter {
                name: name.to_string(),
            }),
            _ => {}
        }
        Ok(())
    }

    /// The dump, with the policies of the base chains as rules.
    fn finish(mut self) -> NftDump {
        for (ti, chain) in std::mem::take(&mut self.drop_policy) {
            if let Some(c) = self
                .out
                .ruleset
                .tables
                .get_mut(ti)
                .and_then(|t| t.chain_mut(&chain))
            {
                c.push(
                    Rule::new()
                        .with(Match::Comment("policy drop".into()))
                        .verdict(Verdict::Drop),
                );
            }
        }
        self.out
    }
}

fn parse_hook(s: &str) -> Option<Hook> {
    Some(match s {
        "prerouting" => Hook::Prerouting,
        "input" => Hook::Input,
        "forward" => Hook::Forward,
        "output" => Hook::Output,
        "postrouting" => Hook::Postrouting,
        _ => return None,
    })
}

fn priority(v: &Value) -> Option<i32> {
    if let Some(n) = v.as_i64() {
        return i32::try_from(n).ok();
    }
    Some(match v.as_str()? {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        _ => return None,
    })
}

fn type_spec(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(" . ")),
        _ => None,
    }
}

fn parse_proto(v: &Value) -> Option<Protocol> {
    match v {
        Value::String(s) => match s.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        },
        Value::Number(n) => match n.as_u64()? {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        },
        _ => None,
    }
}

/// `"10.0.0.1"`, `{"prefix": {"addr": "10.0.0.0", "len": 8}}`, or a
/// `{"range": [a, b]}` that is exactly a prefix.
fn parse_addr(v: &Value) -> Option<AddrMatch> {
    if let Some(s) = v.as_str() {
        return s.parse().ok().map(AddrMatch::Ip);
    }
    if let Some(p) = v.get("prefix") {
        let addr: IpAddr = str_field(p, "addr")?.parse().ok()?;
        let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
        return IpNet::new(addr, len).ok().map(AddrMatch::Net);
    }
    if let Some(Value::Array(r)) = v.get("range") {
        let [a, b] = r.as_slice() else { return None };
        let a: IpAddr = a.as_str()?.parse().ok()?;
        let b: IpAddr = b.as_str()?.parse().ok()?;
        let max = match a {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        return (0..=max).rev().find_map(|len| {
            let n = IpNet::new(a, len).ok()?;
            (n.network() == a && n.broadcast() == b).then_some(AddrMatch::Net(n))
        });
    }
    None
}

fn key_value(v: &Value, ty: &str) -> Option<KeyValue> {
    match ty {
        "ipv4_addr" | "ipv6_addr" => match parse_addr(v)? {
            AddrMatch::Ip(ip) => Some(KeyValue::Ip(ip)),
            AddrMatch::Net(n) => Some(KeyValue::Net(n)),
        },
        "inet_proto" => parse_proto(v).map(KeyValue::Proto),
        "inet_service" => u16::try_from(v.as_u64()?).ok().map(KeyValue::Port),
        _ => None,
    }
}

/// A set or map key: `X`, `{"concat": [..]}` or `{"elem": {"val": X,
/// "comment": ..}}`.
fn element(v: &Value, types: &[String]) -> Option<Element> {
    let (val, comment) = match v.get("elem") {
        Some(e) => (e.get("val")?, str_field(e, "comment").map(str::to_string)),
        None => (v, None),
    };
    let parts: Vec<&Value> = match val.get("concat").and_then(Value::as_array) {
        Some(a) => a.iter().collect(),
        None => vec![val],
    };
    if parts.len() != types.len() {
        return None;
    }
    let key = parts
        .iter()
        .zip(types)
        .map(|(p, t)| key_value(p, t))
        .collect::<Option<Vec<_>>>()?;
    Some(Element { key, comment })
}

fn target(v: &Value) -> Option<ChainName> {
    str_field(v, "target").map(ChainName::new)
}

/// A verdict as a map value or a statement.
fn verdict_value(v: &Value) -> Option<Verdict> {
    let (k, body) = v.as_object()?.iter().next()?;
    Some(match k.as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "return" => Verdict::Return,
        "jump" => Verdict::Jump(target(body)?),
        "goto" => Verdict::Goto(target(body)?),
        _ => return None,
    })
}

/// A key expression of a lookup (`ip daddr`, `meta l4proto`, `th dport`).
fn key(v: &Value) -> Option<Key> {
    if let Some(p) = v.get("payload") {
        return match (str_field(p, "protocol")?, str_field(p, "field")?) {
            ("ip" | "ip6", "saddr") => Some(Key::SrcAddr),
            ("ip" | "ip6", "daddr") => Some(Key::DstAddr),
            ("th", "dport") => Some(Key::DstPort),
            _ => None,
        };
    }
    match str_field(v.get("meta")?, "key")? {
        "l4proto" => Some(Key::L4Proto),
        _ => None,
    }
}

fn keys(v: &Value) -> Option<Vec<Key>> {
    match v.get("concat").and_then(Value::as_array) {
        Some(a) => a.iter().map(key).collect(),
        None => key(v).map(|k| vec![k]),
    }
}

fn set_ref(v: &Value) -> Option<String> {
    v.as_str()?.strip_prefix('@').map(str::to_string)
}

fn is_mark(v: &Value) -> bool {
    v.get("meta")
        .and_then(|m| str_field(m, "key"))
        .is_some_and(|k| k == "mark")
}

/// A `match` statement.
fn parse_match(op: &str, left: &Value, right: &Value) -> Option<Match> {
    let negate = match op {
        "==" | "in" => false,
        "!=" => true,
        _ => return None,
    };
    if let Some(set) = set_ref(right) {
        return Some(Match::InSet {
            keys: keys(left)?,
            set,
            negate,
        });
    }
    if let Some(m) = left.get("meta") {
        return match str_field(m, "key")? {
            "l4proto" if !negate => parse_proto(right).map(Match::Protocol),
            "iifname" => {
                let s = right.as_str()?;
                let (name, prefix) = match s.strip_suffix('*') {
                    Some(n) => (n.to_string(), true),
                    None => (s.to_string(), false),
                };
                Some(Match::InInterface {
                    name,
                    prefix,
                    negate,
                })
            }
            _ => None,
        };
    }
    if let Some(f) = left.get("fib") {
        if str_field(f, "result")? != "type" || right.as_str()? != "local" {
            return None;
        }
        let dir = match f.get("flags")?.as_array()?.as_slice() {
            [one] if one.as_str() == Some("daddr") => Direction::Dst,
            [one] if one.as_str() == Some("saddr") => Direction::Src,
            _ => return None,
        };
        return Some(Match::AddrTypeLocal { dir, negate });
    }
    if let Some(ct) = left.get("ct") {
        let words: Vec<&str> = match right {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(Value::as_str).collect::<Option<_>>()?,
            _ => right
                .get("set")?
                .as_array()?
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()?,
        };
        let states = match str_field(ct, "key")? {
            "state" => words
                .iter()
                .map(|w| {
                    Some(match *w {
                        "new" => CtState::New,
                        "established" => CtState::Established,
                        "related" => CtState::Related,
                        "invalid" => CtState::Invalid,
                        _ => return None,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
            "status" if words == ["dnat"] => vec![CtState::Dnat],
            _ => return None,
        };
        return Some(Match::CtState { states, negate });
    }
    if let Some(Value::Array(and)) = left.get("&") {
        let [m, mask] = and.as_slice() else {
            return None;
        };
        if !is_mark(m) {
            return None;
        }
        return Some(Match::Mark {
            value: u32::try_from(right.as_u64()?).ok()?,
            mask: u32::try_from(mask.as_u64()?).ok()?,
            negate,
        });
    }
    match keys(left)?.as_slice() {
        [Key::DstPort] if !negate => u16::try_from(right.as_u64()?).ok().map(Match::DstPort),
        [k @ (Key::SrcAddr | Key::DstAddr)] => {
            let dir = if *k == Key::SrcAddr {
                Direction::Src
            } else {
                Direction::Dst
            };
            if let Some(members) = right.get("set").and_then(Value::as_array) {
                let addrs = members.iter().map(parse_addr).collect::<Option<Vec<_>>>()?;
                return Some(Match::AddrSet { dir, addrs, negate });
            }
            Some(Match::Addr {
                dir,
                addr: parse_addr(right)?,
                negate,
            })
        }
        _ => None,
    }
}

/// A parsed statement.
enum Stmt {
    Match(Match),
    Verdict(Verdict),
    /// `mark set mark or|xor V`: a verdict when it ends the rule.
    Mark(MarkOp, u32),
    /// A no-op (an anonymous counter).
    Skip,
}

fn numgen_mod(v: &Value) -> Option<usize> {
    let n = v.get("numgen")?;
    if str_field(n, "mode")? != "random"
        || n.get("offset").and_then(Value::as_u64).unwrap_or(0) != 0
    {
        return None;
    }
    usize::try_from(n.get("mod")?.as_u64()?).ok()
}

/// The `[[0, X0], [1, X1], ...]` of a numgen map, in index order.
fn numgen_items(data: &Value, n: usize) -> Option<Vec<&Value>> {
    let items = data.get("set")?.as_array()?;
    let mut out: Vec<Option<&Value>> = vec![None; n];
    for it in items {
        let [i, x] = it.as_array()?.as_slice() else {
            return None;
        };
        let slot = out.get_mut(usize::try_from(i.as_u64()?).ok()?)?;
        *slot = Some(x);
    }
    out.into_iter().collect()
}

fn socket(addr: &Value, port: &Value) -> Option<SocketAddr> {
    let ip: IpAddr = addr.as_str()?.parse().ok()?;
    Some(SocketAddr::new(ip, u16::try_from(port.as_u64()?).ok()?))
}

fn parse_stmt(s: &Value) -> Option<Stmt> {
    let (k, body) = s.as_object()?.iter().next()?;
    Some(match k.as_str() {
        "match" => Stmt::Match(parse_match(
            str_field(body, "op")?,
            body.get("left")?,
            body.get("right")?,
        )?),
        "counter" => match body {
            Value::String(name) => Stmt::Match(Match::Nfacct(name.clone())),
            Value::Object(_) if body.get("packets").is_some() => Stmt::Skip,
            _ => return None,
        },
        "mangle" => {
            if !is_mark(body.get("key")?) {
                return None;
            }
            let value = body.get("value")?;
            let (op, args) = if let Some(a) = value.get("|") {
                (MarkOp::Or, a)
            } else {
                (MarkOp::Xor, value.get("^")?)
            };
            let [m, v] = args.as_array()?.as_slice() else {
                return None;
            };
            if !is_mark(m) {
                return None;
            }
            Stmt::Mark(op, u32::try_from(v.as_u64()?).ok()?)
        }
        "set" => {
            if str_field(body, "op")? != "update" {
                return None;
            }
            Stmt::Match(Match::UpdateSet {
                keys: keys(body.get("elem")?)?,
                set: set_ref(body.get("set")?)?,
            })
        }
        "accept" | "drop" | "return" | "jump" | "goto" => Stmt::Verdict(verdict_value(s)?),
        "reject" => {
            let plain = body.is_null()
                || (body.get("expr").and_then(Value::as_str) == Some("port-unreachable")
                    && matches!(str_field(body, "type"), Some("icmp" | "icmpv6" | "icmpx")));
            if !plain {
                return None;
            }
            Stmt::Verdict(Verdict::Reject)
        }
        "masquerade" => {
            let random_fully = match body.get("flags") {
                None => false,
                Some(Value::String(f)) if f == "fully-random" => true,
                Some(Value::Array(a)) if a.len() == 1 && a[0].as_str() == Some("fully-random") => {
                    true
                }
                _ => return None,
            };
            if body.get("addr").is_some() || body.get("port").is_some() {
                return None;
            }
            Stmt::Verdict(Verdict::Masquerade { random_fully })
        }
        "dnat" => {
            if body.get("flags").is_some() {
                return None;
            }
            let addr = body.get("addr")?;
            if let Some(port) = body.get("port") {
                return Some(Stmt::Verdict(Verdict::Dnat(socket(addr, port)?)));
            }
            let map = addr.get("map")?;
            let n = numgen_mod(map.get("key")?)?;
            let to = numgen_items(map.get("data")?, n)?
                .into_iter()
                .map(|x| match x.get("concat")?.as_array()?.as_slice() {
                    [a, p] => socket(a, p),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Stmt::Verdict(Verdict::DnatRandom { to })
        }
        "vmap" => {
            let key = body.get("key")?;
            let data = body.get("data")?;
            if let Some(map) = set_ref(data) {
                return Some(Stmt::Verdict(Verdict::VerdictMap {
                    keys: keys(key)?,
                    map,
                }));
            }
            let n = numgen_mod(key)?;
            let to = numgen_items(data, n)?
                .into_iter()
                .map(|x| match verdict_value(x)? {
                    Verdict::Goto(c) => Some(c),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Stmt::Verdict(Verdict::RandomVerdictMap { to })
        }
        _ => return None,
    })
}

/// The statements of a rule: the last one is the verdict if it is one.
fn parse_rule(_family: IpFamily, exprs: &[Value]) -> Rule {
    let mut rule = Rule::new();
    let n = exprs.len();
    for (i, s) in exprs.iter().enumerate() {
        let last = i + 1 == n;
        match parse_stmt(s) {
            Some(Stmt::Match(m)) => rule.matches.push(m),
            Some(Stmt::Skip) => {}
            Some(Stmt::Mark(op, value)) if last => {
                rule.verdict = Some(Verdict::SetMark { op, value });
            }
            Some(Stmt::Mark(op, value)) => rule.matches.push(Match::SetMark { op, value }),
            Some(Stmt::Verdict(v)) if last => rule.verdict = Some(v),
            Some(Stmt::Verdict(_)) => rule.matches.push(Match::Opaque(compact(s))),
            None if last => rule.verdict = Some(Verdict::Opaque(compact(s))),
            None => rule.matches.push(Match::Opaque(compact(s))),
        }
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(json: &str) -> Option<Stmt> {
        parse_stmt(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn the_document_is_read_item_by_item_as_a_tree_would_be() {
        let table = r#"{"table": {"family": "ip", "name": "kube-proxy", "handle": 1}}"#;
        let chain =
            r#"{"chain": {"family": "ip", "table": "kube-proxy", "name": "c", "handle": 2}}"#;
        let names = |text: &str| {
            parse_json(text).map(|d| {
                d.ruleset
                    .tables
                    .iter()
                    .map(|t| format!("{} {}", t.name, t.chains.len()))
                    .collect::<Vec<_>>()
            })
        };
        let doc = format!(r#"{{"nftables": [{table}, {chain}]}}"#);
        assert_eq!(names(&doc).unwrap(), vec!["kube-proxy 1"]);
        // The last "nftables" key counts.
        let twice = format!(r#"{{"nftables": [{table}], "x": 1, "nftables": [{table}, {chain}]}}"#);
        assert_eq!(names(&twice).unwrap(), vec!["kube-proxy 1"]);
        let no = Err(ParseError::Format("no \"nftables\" array".into()));
        assert_eq!(names(r#"{"nftables": {"a": 1}}"#), no);
        assert_eq!(names(r#"[1, 2]"#), no);
        assert_eq!(names(r#"{"other": []}"#), no);
        // A syntax error anywhere comes first, as when parsing a tree.
        let broken = format!(r#"{{"nftables": [{chain}, {table}] x"#);
        let want = serde_json::from_str::<Value>(&broken)
            .unwrap_err()
            .to_string();
        assert_eq!(names(&broken), Err(ParseError::Format(want)));
        // Otherwise the first item that cannot be read.
        let deep = format!(r#"{{"nftables": {}{}}}"#, "[".repeat(500), "]".repeat(500));
        let want = serde_json::from_str::<Value>(&deep)
            .unwrap_err()
            .to_string();
        assert_eq!(names(&deep), Err(ParseError::Format(want)));
        let orphan = format!(r#"{{"nftables": [{chain}, {table}]}}"#);
        assert!(matches!(names(&orphan), Err(ParseError::Object { .. })));
    }

    #[test]
    fn matches_of_kube_proxys_rules() {
        let m = |json: &str| match stmt(json) {
            Some(Stmt::Match(m)) => m,
            _ => panic!("not a match: {json}"),
        };
        assert_eq!(
            m(
                r#"{"match": {"op": "!=", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 0}}"#
            ),
            Match::Mark {
                value: 0,
                mask: 0x4000,
                negate: true
            }
        );
        assert_eq!(
            m(r#"{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}"#),
            Match::CtState {
                states: vec![CtState::New],
                negate: false
            }
        );
        assert_eq!(
            m(
                r#"{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"meta": {"key": "l4proto"}}]}, "right": "@s"}}"#
            ),
            Match::InSet {
                keys: vec![Key::SrcAddr, Key::L4Proto],
                set: "s".into(),
                negate: false
            }
        );
        assert_eq!(
            m(
                r#"{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"set": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "1.2.3.4"]}}}"#
            ),
            Match::AddrSet {
                dir: Direction::Src,
                addrs: vec![
                    AddrMatch::Net("10.0.0.0/8".parse().unwrap()),
                    AddrMatch::Ip("1.2.3.4".parse().unwrap())
                ],
                negate: true
            }
        );
        assert_eq!(
            m(r#"{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth*"}}"#),
            Match::InInterface {
                name: "veth".into(),
                prefix: true,
                negate: false
            }
        );
        assert!(
            stmt(r#"{"match": {"op": "<", "left": {"meta": {"key": "mark"}}, "right": 1}}"#)
                .is_none()
        );
    }

    #[test]
    fn random_dnat_and_vmap() {
        let Some(Stmt::Verdict(v)) = stmt(
            r#"{"dnat": {"family": "ip", "addr": {"map": {"key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}}, "data": {"set": [[1, {"concat": ["10.0.0.2", 80]}], [0, {"concat": ["10.0.0.1", 80]}]]}}}}}"#,
        ) else {
            panic!("not a verdict")
        };
        assert_eq!(
            v,
            Verdict::DnatRandom {
                to: vec![
                    "10.0.0.1:80".parse().unwrap(),
                    "10.0.0.2:80".parse().unwrap()
                ]
            }
        );
        let Some(Stmt::Verdict(v)) = stmt(
            r#"{"vmap": {"key": {"numgen": {"mode": "random", "mod": 1, "offset": 0}}, "data": {"set": [[0, {"goto": {"target": "a"}}]]}}}"#,
        ) else {
            panic!("not a verdict")
        };
        assert_eq!(
            v,
            Verdict::RandomVerdictMap {
                to: vec![ChainName::new("a")]
            }
        );
    }

    #[test]
    fn tables_sets_maps_and_policies() {
        let dump = r#"{"nftables": [
          {"table": {"family": "inet", "name": "fw", "handle": 1}},
          {"table": {"family": "ip6", "name": "kube-proxy", "handle": 2}},
          {"chain": {"family": "ip6", "table": "kube-proxy", "name": "in", "handle": 3, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
          {"set": {"family": "ip6", "name": "s", "table": "kube-proxy", "type": ["ipv6_addr", "inet_proto", "inet_service"], "handle": 4, "flags": ["timeout"], "timeout": 10800,
                   "elem": [{"elem": {"val": {"concat": ["fd00::1", "udp", 53]}, "comment": "ns/x", "expires": 5}}]}},
          {"map": {"family": "ip6", "name": "m", "table": "kube-proxy", "type": "inet_service", "handle": 5, "map": "verdict",
                   "elem": [[80, {"goto": {"target": "in"}}], [81, {"drop": null}]]}},
          {"counter": {"family": "ip6", "name": "c", "table": "kube-proxy", "handle": 6, "packets": 3, "bytes": 4}},
          {"rule": {"family": "ip6", "table": "kube-proxy", "chain": "in", "handle": 7, "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"^": [{"meta": {"key": "mark"}}, 16384]}}}, {"masquerade": null}]}}
        ]}"#;
        let d = parse_json(dump).unwrap();
        assert_eq!(d.skipped, vec!["inet fw".to_string()]);
        let t = &d.ruleset.tables[0];
        assert_eq!(t.family, TableFamily::Nft(IpFamily::V6));
        let chain = t.chain("in").unwrap();
        assert_eq!(
            chain.rules[0].matches,
            vec![Match::SetMark {
                op: MarkOp::Xor,
                value: 0x4000
            }]
        );
        assert_eq!(chain.rules[1].verdict, Some(Verdict::Drop));
        let s = t.set("s").unwrap();
        assert_eq!(s.type_spec, "ipv6_addr . inet_proto . inet_service");
        assert_eq!(s.timeout, Some(10800));
        assert_eq!(s.elements[0].comment.as_deref(), Some("ns/x"));
        assert_eq!(s.elements[0].key[2], KeyValue::Port(53));
        let m = t.map("m").unwrap();
        assert_eq!(m.elements[1].1, MapValue::Verdict(Verdict::Drop));
        assert_eq!(t.counters[0].name, "c");
        assert!(matches!(parse_json("[]"), Err(ParseError::Format(_))));
        assert!(matches!(
            parse_json(r#"{"nftables": [{"chain": {"family": "ip", "table": "x", "name": "c"}}]}"#),
            Err(ParseError::Object { .. })
        ));
    }
}
