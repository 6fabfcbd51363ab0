//! IR -> one `nft -j -f -` batch, built with the `nftables` crate's schema
//! types.
//!
//! The batch creates each table's objects before anything refers to them:
//! table, chains, counters, sets, maps, rules, then elements.
//!
//! Where the crate's schema has gaps, small typed wrappers here serialise to
//! the documented libnftables JSON:
//! * [`VerdictMapDef`]: a named map whose values are verdicts
//!   (`"map": "verdict"`; the crate's `SetType` has no `verdict`);
//! * [`VerdictValue`]: a verdict as a map element value (`{"goto": {...}}`,
//!   `{"drop": null}`);
//! * [`ElemWithComment`]: a keyed element with a comment and nothing else.
//!
//! nft 1.0.x quirks: its JSON parser rejects the `dynamic` set flag (a set
//! created with `timeout` in the same batch as its `update` rule becomes
//! dynamic by itself, so the flag is left out), and table and chain comments
//! have no JSON field (they are dropped).
//!
//! ```
//! use kproxy_core::model::*;
//! use kproxy_core::plan::plan;
//!
//! let svc = Service::cluster_ip("ns1", "svc1", "172.30.0.41".parse().unwrap())
//!     .with_port(ServicePort::new("p80", Protocol::Tcp, 80));
//! let state = ClusterState { services: vec![svc], endpoint_slices: vec![] };
//! let p = plan(&state, &NodeConfig::new(IpFamily::V4, "node-1"));
//! let json = kproxy_nft::render_json(&[p]).unwrap();
//! let v: serde_json::Value = serde_json::from_str(&json).unwrap();
//! assert!(v["nftables"].as_array().unwrap().len() > 10);
//! assert!(json.contains(r#""map":"verdict""#));
//! ```

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use kproxy_core::ir::{
    AddrMatch, BaseChainType, ChainKind, CtState, Direction, Element, Hook, Key, KeyValue,
    MapValue, MarkOp, Match, Rule, Table, TableFamily, Verdict,
};
use kproxy_core::model::IpFamily;
use nftables::expr::{
    self, BinaryOperation, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression,
    NgMode, Numgen, Payload, PayloadField, Prefix, SetItem,
};
use nftables::schema::{self, NfCmd, NfListObject, NfObject, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{self, JumpTarget, Mangle, NAT, NATFamily, NATFlag, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};
use serde::Serialize;

use crate::NftError;
use crate::tx::{Op, Transaction};

/// A named verdict map (`add map … { type K : verdict ; }`).
#[derive(Debug, Clone, Serialize)]
pub struct VerdictMapDef<'a> {
    /// The table's family.
    pub family: NfFamily,
    /// The table's name.
    pub table: Cow<'a, str>,
    /// The map's name.
    pub name: Cow<'a, str>,
    /// The key type.
    #[serde(rename = "type")]
    pub key_type: SetTypeValue<'a>,
    /// The value type: always `verdict`.
    pub map: VerdictType,
    /// The comment (ignored by nft 1.0.x).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<Cow<'a, str>>,
}

/// The data type `verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictType;

impl Serialize for VerdictType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("verdict")
    }
}

/// A verdict used as a value (map element data): `{"goto": {"target": C}}`,
/// `{"jump": …}`, `{"drop": null}`, `{"accept": null}`, `{"return": null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictValue<'a> {
    /// `accept`
    Accept(()),
    /// `drop`
    Drop(()),
    /// `return`
    Return(()),
    /// `jump C`
    Jump(JumpTarget<'a>),
    /// `goto C`
    Goto(JumpTarget<'a>),
}

/// `{"elem": {"val": KEY, "comment": "…"}}`: a keyed element with a comment.
#[derive(Debug, Clone, Serialize)]
pub struct ElemWithComment<'a> {
    /// The element.
    pub elem: ElemBody<'a>,
}

/// The body of [`ElemWithComment`].
#[derive(Debug, Clone, Serialize)]
pub struct ElemBody<'a> {
    /// The key.
    pub val: Expression<'a>,
    /// The comment.
    pub comment: Cow<'a, str>,
}

/// One element of an `add element` command: a key, or a key and a verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ElementItem<'a> {
    /// A set element.
    Key(KeyExpr<'a>),
    /// A map element: `[KEY, VERDICT]`.
    Mapping(KeyExpr<'a>, VerdictValue<'a>),
}

/// An element key, with or without comment.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum KeyExpr<'a> {
    /// A bare key.
    Plain(Expression<'a>),
    /// A key with a comment.
    Commented(ElemWithComment<'a>),
}

/// `add element` with elements the crate's `Element` cannot hold.
#[derive(Debug, Clone, Serialize)]
pub struct ElementDef<'a> {
    /// The table's family.
    pub family: NfFamily,
    /// The table's name.
    pub table: Cow<'a, str>,
    /// The set or map.
    pub name: Cow<'a, str>,
    /// The elements.
    pub elem: Vec<ElementItem<'a>>,
}

/// The objects this module adds next to the crate's.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtObject<'a> {
    /// A verdict map.
    Map(VerdictMapDef<'a>),
    /// Elements.
    Element(ElementDef<'a>),
}

/// A batch command: the crate's, or one of [`ExtObject`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Command<'a> {
    /// A command of the `nftables` crate.
    Std(NfObject<'a>),
    /// `{"add": EXT}`
    Ext(ExtAdd<'a>),
}

/// `{"add": EXT}`
#[derive(Debug, Clone, Serialize)]
pub struct ExtAdd<'a> {
    /// The object.
    pub add: ExtObject<'a>,
}

/// The whole batch: `{"nftables": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Batch<'a> {
    /// The commands.
    pub nftables: Vec<Command<'a>>,
}

fn nf_family(t: &Table) -> (NfFamily, IpFamily) {
    match t.family {
        TableFamily::Nft(IpFamily::V6) | TableFamily::Iptables(IpFamily::V6) => {
            (NfFamily::IP6, IpFamily::V6)
        }
        _ => (NfFamily::IP, IpFamily::V4),
    }
}

fn set_type(spec: &str) -> Result<SetTypeValue<'static>, NftError> {
    let mut types = Vec::new();
    for part in spec.split(" . ") {
        types.push(match part.trim() {
            "ipv4_addr" => SetType::Ipv4Addr,
            "ipv6_addr" => SetType::Ipv6Addr,
            "inet_proto" => SetType::InetProto,
            "inet_service" => SetType::InetService,
            "ether_addr" => SetType::EtherAddr,
            "mark" => SetType::Mark,
            "ifname" => SetType::Ifname,
            other => {
                return Err(NftError::Unsupported {
                    what: format!("set type {other}"),
                });
            }
        });
    }
    Ok(match types.as_slice() {
        [one] => SetTypeValue::Single(*one),
        _ => SetTypeValue::Concatenated(types.into()),
    })
}

fn hook(h: Hook) -> NfHook {
    match h {
        Hook::Prerouting => NfHook::Prerouting,
        Hook::Input => NfHook::Input,
        Hook::Forward => NfHook::Forward,
        Hook::Output => NfHook::Output,
        Hook::Postrouting => NfHook::Postrouting,
    }
}

fn ip_proto(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn key_expr(f: IpFamily, k: Key) -> Expression<'static> {
    match k {
        Key::SrcAddr => payload(ip_proto(f), "saddr"),
        Key::DstAddr => payload(ip_proto(f), "daddr"),
        Key::L4Proto => meta(MetaKey::L4proto),
        Key::DstPort => payload("th", "dport"),
    }
}

fn keys_expr(f: IpFamily, ks: &[Key]) -> Expression<'static> {
    match ks {
        [one] => key_expr(f, *one),
        _ => Expression::Named(NamedExpression::Concat(
            ks.iter().map(|k| key_expr(f, *k)).collect(),
        )),
    }
}

fn addr_expr(a: &AddrMatch) -> Expression<'static> {
    match a {
        AddrMatch::Ip(ip) => Expression::String(ip.to_string().into()),
        AddrMatch::Net(n) => Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(n.addr().to_string().into())),
            len: u32::from(n.prefix_len()),
        })),
    }
}

fn ip_str(ip: IpAddr) -> Expression<'static> {
    Expression::String(ip.to_string().into())
}

fn matches(
    left: Expression<'static>,
    right: Expression<'static>,
    negate: bool,
) -> Statement<'static> {
    Statement::Match(stmt::Match {
        left,
        right,
        op: if negate { Operator::NEQ } else { Operator::EQ },
    })
}

fn mark_expr() -> Expression<'static> {
    meta(MetaKey::Mark)
}

fn set_mark(op: MarkOp, value: u32) -> Statement<'static> {
    let v = match op {
        MarkOp::Or => BinaryOperation::OR(vec![mark_expr(), Expression::Number(value)]),
        MarkOp::Xor => BinaryOperation::XOR(mark_expr(), Expression::Number(value)),
    };
    Statement::Mangle(Mangle {
        key: mark_expr(),
        value: Expression::BinaryOperation(Box::new(v)),
    })
}

fn unsupported(what: impl Into<String>) -> NftError {
    NftError::Unsupported { what: what.into() }
}

fn match_stmt(f: IpFamily, m: &Match) -> Result<Option<Statement<'static>>, NftError> {
    Ok(Some(match m {
        Match::Comment(_) => return Ok(None),
        Match::Protocol(p) => matches(
            meta(MetaKey::L4proto),
            Expression::String(p.as_lower().into()),
            false,
        ),
        Match::Addr { dir, addr, negate } => {
            let k = match dir {
                Direction::Src => Key::SrcAddr,
                Direction::Dst => Key::DstAddr,
            };
            matches(key_expr(f, k), addr_expr(addr), *negate)
        }
        Match::DstPort(p) => matches(
            payload("th", "dport"),
            Expression::Number(u32::from(*p)),
            false,
        ),
        Match::InInterface {
            name,
            prefix,
            negate,
        } => {
            let star = if *prefix { "*" } else { "" };
            matches(
                meta(MetaKey::Iifname),
                Expression::String(format!("{name}{star}").into()),
                *negate,
            )
        }
        Match::AddrTypeLocal { dir, negate } => {
            let mut flags = HashSet::new();
            flags.insert(match dir {
                Direction::Src => FibFlag::Saddr,
                Direction::Dst => FibFlag::Daddr,
            });
            matches(
                Expression::Named(NamedExpression::Fib(Fib {
                    result: FibResult::Type,
                    flags,
                })),
                Expression::String("local".into()),
                *negate,
            )
        }
        Match::CtState { states, negate } => {
            let (key, words): (&str, Vec<&str>) = if states.as_slice() == [CtState::Dnat] {
                ("status", vec!["dnat"])
            } else {
                let mut w = Vec::new();
                for s in states {
                    w.push(match s {
                        CtState::New => "new",
                        CtState::Established => "established",
                        CtState::Related => "related",
                        CtState::Invalid => "invalid",
                        CtState::Dnat => return Err(unsupported("ct status mixed with ct state")),
                    });
                }
                ("state", w)
            };
            let right = match words.as_slice() {
                [one] => Expression::String((*one).into()),
                _ => Expression::List(
                    words
                        .iter()
                        .map(|w| Expression::String((*w).into()))
                        .collect(),
                ),
            };
            Statement::Match(stmt::Match {
                left: Expression::Named(NamedExpression::CT(expr::CT {
                    key: key.into(),
                    family: None,
                    dir: None,
                })),
                right,
                op: if *negate { Operator::NEQ } else { Operator::IN },
            })
        }
        Match::Mark {
            value,
            mask,
            negate,
        } => matches(
            Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                mark_expr(),
                Expression::Number(*mask),
            ))),
            Expression::Number(*value),
            *negate,
        ),
        Match::Probability { .. } => return Err(unsupported("statistic probability")),
        Match::Recent { .. } => return Err(unsupported("recent list")),
        Match::PhysDevIsIn { .. } => return Err(unsupported("physdev match")),
        Match::Nfacct(name) => Statement::Counter(stmt::Counter::Named(name.clone().into())),
        Match::InSet { keys, set, negate } => matches(
            keys_expr(f, keys),
            Expression::String(format!("@{set}").into()),
            *negate,
        ),
        Match::AddrSet { dir, addrs, negate } => {
            let k = match dir {
                Direction::Src => Key::SrcAddr,
                Direction::Dst => Key::DstAddr,
            };
            matches(
                key_expr(f, k),
                Expression::Named(NamedExpression::Set(
                    addrs
                        .iter()
                        .map(|a| SetItem::Element(addr_expr(a)))
                        .collect(),
                )),
                *negate,
            )
        }
        Match::SetMark { op, value } => set_mark(*op, *value),
        Match::UpdateSet { keys, set } => Statement::Set(stmt::Set {
            op: stmt::SetOp::Update,
            elem: keys_expr(f, keys),
            set: format!("@{set}").into(),
        }),
        Match::Opaque(text) => return Err(unsupported(format!("opaque statement {text}"))),
    }))
}

fn numgen(n: usize) -> Result<Expression<'static>, NftError> {
    Ok(Expression::Named(NamedExpression::Numgen(Numgen {
        mode: NgMode::Random,
        ng_mod: u32::try_from(n).map_err(|_| unsupported("numgen modulus"))?,
        offset: Some(0),
    })))
}

fn nat_family(f: IpFamily) -> NATFamily {
    match f {
        IpFamily::V4 => NATFamily::IP,
        IpFamily::V6 => NATFamily::IP6,
    }
}

fn verdict_stmt(f: IpFamily, v: &Verdict) -> Result<Statement<'static>, NftError> {
    let target = |c: &kproxy_core::names::ChainName| JumpTarget {
        target: c.to_string().into(),
    };
    Ok(match v {
        Verdict::Jump(c) => Statement::Jump(target(c)),
        Verdict::Goto(c) => Statement::Goto(target(c)),
        Verdict::Return => Statement::Return(None),
        Verdict::Accept => Statement::Accept(None),
        Verdict::Drop => Statement::Drop(None),
        Verdict::Reject => Statement::Reject(None),
        Verdict::Dnat(to) => Statement::DNAT(Some(NAT {
            addr: Some(ip_str(to.ip())),
            family: None,
            port: Some(Expression::Number(u32::from(to.port()))),
            flags: None,
        })),
        Verdict::Masquerade { random_fully } => Statement::Masquerade(if *random_fully {
            let mut flags = HashSet::new();
            flags.insert(NATFlag::FullyRandom);
            Some(NAT {
                addr: None,
                family: None,
                port: None,
                flags: Some(flags),
            })
        } else {
            None
        }),
        Verdict::SetMark { op, value } => set_mark(*op, *value),
        Verdict::VerdictMap { keys, map } => Statement::VerdictMap(stmt::VerdictMap {
            key: keys_expr(f, keys),
            data: Expression::String(format!("@{map}").into()),
        }),
        Verdict::DnatRandom { to } => match to.as_slice() {
            [] => return Err(unsupported("DNAT to no destination")),
            [one] => Statement::DNAT(Some(NAT {
                addr: Some(ip_str(one.ip())),
                family: None,
                port: Some(Expression::Number(u32::from(one.port()))),
                flags: None,
            })),
            many => {
                let mut items = Vec::new();
                for (i, sa) in many.iter().enumerate() {
                    let i = u32::try_from(i).map_err(|_| unsupported("numgen index"))?;
                    items.push(SetItem::Mapping(
                        Expression::Number(i),
                        Expression::Named(NamedExpression::Concat(vec![
                            ip_str(sa.ip()),
                            Expression::Number(u32::from(sa.port())),
                        ])),
                    ));
                }
                Statement::DNAT(Some(NAT {
                    addr: Some(Expression::Named(NamedExpression::Map(Box::new(
                        expr::Map {
                            key: numgen(many.len())?,
                            data: Expression::Named(NamedExpression::Set(items)),
                        },
                    )))),
                    family: Some(nat_family(f)),
                    port: None,
                    flags: None,
                }))
            }
        },
        Verdict::RandomVerdictMap { to } => {
            let mut items = Vec::new();
            for (i, c) in to.iter().enumerate() {
                let i = u32::try_from(i).map_err(|_| unsupported("numgen index"))?;
                items.push(SetItem::Mapping(
                    Expression::Number(i),
                    Expression::Verdict(expr::Verdict::Goto(target(c))),
                ));
            }
            Statement::VerdictMap(stmt::VerdictMap {
                key: numgen(to.len())?,
                data: Expression::Named(NamedExpression::Set(items)),
            })
        }
        Verdict::Opaque(text) => return Err(unsupported(format!("opaque statement {text}"))),
    })
}

fn rule_stmts(f: IpFamily, rule: &Rule) -> Result<Vec<Statement<'static>>, NftError> {
    let mut out = Vec::new();
    for m in &rule.matches {
        if let Some(s) = match_stmt(f, m)? {
            out.push(s);
        }
    }
    if let Some(v) = &rule.verdict {
        out.push(verdict_stmt(f, v)?);
    }
    Ok(out)
}

fn key_value(v: &KeyValue) -> Expression<'static> {
    match v {
        KeyValue::Ip(ip) => ip_str(*ip),
        KeyValue::Net(n) => addr_expr(&AddrMatch::Net(*n)),
        KeyValue::Proto(p) => Expression::String(p.as_lower().into()),
        KeyValue::Port(p) => Expression::Number(u32::from(*p)),
    }
}

fn element_key(e: &Element) -> KeyExpr<'static> {
    let val = match e.key.as_slice() {
        [one] => key_value(one),
        many => Expression::Named(NamedExpression::Concat(
            many.iter().map(key_value).collect(),
        )),
    };
    match &e.comment {
        None => KeyExpr::Plain(val),
        Some(c) => KeyExpr::Commented(ElemWithComment {
            elem: ElemBody {
                val,
                comment: c.clone().into(),
            },
        }),
    }
}

fn verdict_value(v: &MapValue) -> Result<VerdictValue<'static>, NftError> {
    let MapValue::Verdict(v) = v;
    let target = |c: &kproxy_core::names::ChainName| JumpTarget {
        target: c.to_string().into(),
    };
    Ok(match v {
        Verdict::Accept => VerdictValue::Accept(()),
        Verdict::Drop => VerdictValue::Drop(()),
        Verdict::Return => VerdictValue::Return(()),
        Verdict::Jump(c) => VerdictValue::Jump(target(c)),
        Verdict::Goto(c) => VerdictValue::Goto(target(c)),
        other => return Err(unsupported(format!("map value {other:?}"))),
    })
}

/// Where the commands of a table go, one by one.
type Emit<'a> = dyn FnMut(Command<'static>) -> Result<(), NftError> + 'a;

fn add(o: NfListObject<'static>) -> Command<'static> {
    Command::Std(NfObject::CmdObject(NfCmd::Add(o)))
}

fn set_command(
    family: NfFamily,
    tname: &str,
    s: &kproxy_core::ir::Set,
    out: &mut Emit<'_>,
) -> Result<(), NftError> {
    let flags: HashSet<SetFlag> = s
        .flags
        .iter()
        .filter_map(|f| match f.as_str() {
            "timeout" => Some(SetFlag::Timeout),
            "interval" => Some(SetFlag::Interval),
            "constant" => Some(SetFlag::Constant),
            // nft 1.0.x rejects `dynamic` in JSON; see the module docs.
            _ => None,
        })
        .collect();
    out(add(NfListObject::Set(Box::new(schema::Set {
        family,
        table: tname.to_string().into(),
        name: s.name.clone().into(),
        handle: None,
        set_type: set_type(&s.type_spec)?,
        policy: None,
        flags: (!flags.is_empty()).then_some(flags),
        elem: None,
        timeout: s.timeout,
        gc_interval: None,
        size: None,
        comment: s.comment.clone().map(Into::into),
    }))))?;
    Ok(())
}

fn map_command(
    family: NfFamily,
    tname: &str,
    m: &kproxy_core::ir::Map,
    out: &mut Emit<'_>,
) -> Result<(), NftError> {
    if m.value_type != "verdict" {
        return Err(unsupported(format!("map {} of {}", m.name, m.value_type)));
    }
    out(Command::Ext(ExtAdd {
        add: ExtObject::Map(VerdictMapDef {
            family,
            table: tname.to_string().into(),
            name: m.name.clone().into(),
            key_type: set_type(&m.type_spec)?,
            map: VerdictType,
            comment: m.comment.clone().map(Into::into),
        }),
    }))?;
    Ok(())
}

/// Appends the commands that create `table` (on an empty ruleset). Sets and
/// maps are created in the order of `order` (names; others follow), so that
/// nft lists them as after the native transaction.
pub fn table_commands(
    table: &Table,
    order: &[String],
    out: &mut Vec<Command<'static>>,
) -> Result<(), NftError> {
    emit_table(table, order, &mut |c| {
        out.push(c);
        Ok(())
    })
}

/// [`table_commands`], each command handed to `out` as it is made.
fn emit_table(table: &Table, order: &[String], out: &mut Emit<'_>) -> Result<(), NftError> {
    let (family, ipf) = nf_family(table);
    let tname: Cow<'static, str> = table.name.clone().into();
    out(add(NfListObject::Table(schema::Table {
        family,
        name: tname.clone(),
        handle: None,
    })))?;
    for c in &table.chains {
        let mut chain = schema::Chain {
            family,
            table: tname.clone(),
            name: c.name.to_string().into(),
            ..schema::Chain::default()
        };
        if let ChainKind::Base {
            chain_type,
            hook: h,
            priority,
        } = &c.kind
        {
            chain._type = Some(match chain_type {
                BaseChainType::Filter => NfChainType::Filter,
                BaseChainType::Nat => NfChainType::NAT,
            });
            chain.hook = Some(hook(*h));
            chain.prio = Some(*priority);
        }
        out(add(NfListObject::Chain(chain)))?;
    }
    for c in &table.counters {
        out(add(NfListObject::Counter(schema::Counter {
            family,
            table: tname.clone(),
            name: c.name.clone().into(),
            handle: None,
            packets: Some(0),
            bytes: Some(0),
        })))?;
    }
    // Indexes by name: a table can hold tens of thousands of affinity sets.
    let sets: HashMap<&str, &kproxy_core::ir::Set> =
        table.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let maps: HashMap<&str, &kproxy_core::ir::Map> =
        table.maps.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let named = order.iter().map(String::as_str).chain(
        table
            .sets
            .iter()
            .map(|s| s.name.as_str())
            .chain(table.maps.iter().map(|m| m.name.as_str())),
    );
    for name in named {
        if !seen.insert(name) {
            continue;
        }
        if let Some(s) = sets.get(name) {
            set_command(family, &tname, s, out)?;
        } else if let Some(m) = maps.get(name) {
            map_command(family, &tname, m, out)?;
        }
    }
    for c in &table.chains {
        for r in &c.rules {
            out(add(NfListObject::Rule(schema::Rule {
                family,
                table: tname.clone(),
                chain: c.name.to_string().into(),
                expr: rule_stmts(ipf, r)?.into(),
                handle: None,
                index: None,
                comment: r.comment().map(|c| c.to_string().into()),
            })))?;
        }
    }
    for s in &table.sets {
        if !s.elements.is_empty() {
            out(Command::Ext(ExtAdd {
                add: ExtObject::Element(ElementDef {
                    family,
                    table: tname.clone(),
                    name: s.name.clone().into(),
                    elem: s
                        .elements
                        .iter()
                        .map(|e| ElementItem::Key(element_key(e)))
                        .collect(),
                }),
            }))?;
        }
    }
    for m in &table.maps {
        if !m.elements.is_empty() {
            let mut elem = Vec::new();
            for (e, v) in &m.elements {
                elem.push(ElementItem::Mapping(element_key(e), verdict_value(v)?));
            }
            out(Command::Ext(ExtAdd {
                add: ExtObject::Element(ElementDef {
                    family,
                    table: tname.clone(),
                    name: m.name.clone().into(),
                    elem,
                }),
            }))?;
        }
    }
    Ok(())
}

/// The batch that creates the state `txs` (one transaction per family)
/// leave on an empty ruleset.
///
/// The commands are written as they are made (the text of [`Batch`]
/// without holding every command: a 10k-Service batch's commands took
/// several times the memory of its text).
pub fn batch(txs: &[Transaction]) -> Result<String, NftError> {
    let mut text = Vec::new();
    let mut out = BatchWriter::new(&mut text)?;
    for tx in txs {
        out.push(tx.clone())?;
    }
    out.finish()?;
    String::from_utf8(text).map_err(|e| NftError::Json(e.to_string()))
}

fn write_error(e: std::io::Error) -> NftError {
    NftError::Json(format!("writing the batch: {e}"))
}

/// A [`batch`] written to `out` one transaction at a time, each consumed
/// (its rules move into the table it describes; one family's table is held
/// at a time, and no text is held at all).
pub(crate) struct BatchWriter<'w> {
    out: &'w mut dyn std::io::Write,
    first: bool,
}

impl<'w> BatchWriter<'w> {
    pub(crate) fn new(out: &'w mut dyn std::io::Write) -> Result<Self, NftError> {
        out.write_all(b"{\"nftables\":[").map_err(write_error)?;
        Ok(Self { out, first: true })
    }

    /// Writes the commands that create the state `tx` leaves.
    pub(crate) fn push(&mut self, tx: Transaction) -> Result<(), NftError> {
        let order: Vec<String> = tx
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::AddSet(s) => Some(s.name.clone()),
                Op::AddMap(m) => Some(m.name.clone()),
                _ => None,
            })
            .collect();
        let table = tx.into_table()?;
        let (out, first) = (&mut *self.out, &mut self.first);
        emit_table(&table, &order, &mut |c| {
            if !*first {
                out.write_all(b",").map_err(write_error)?;
            }
            *first = false;
            serde_json::to_writer(&mut *out, &c).map_err(|e| NftError::Json(e.to_string()))
        })
    }

    pub(crate) fn finish(self) -> Result<(), NftError> {
        self.out.write_all(b"]}").map_err(write_error)
    }
}
