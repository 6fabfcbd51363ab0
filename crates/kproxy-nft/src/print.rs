//! Transaction -> `nft -f` text, as knftables writes it. Nothing but syntax
//! lives here.

use std::fmt::Write as _;

use kproxy_core::ir::{
    AddrMatch, BaseChainType, Chain, ChainKind, CtState, Direction, Element, Key, KeyValue, Map,
    MapValue, MarkOp, Match, Rule, Set, Verdict,
};
use kproxy_core::model::{IpFamily, MarkStyle};

use crate::NftError;
use crate::tx::{Op, Transaction};

/// How a DNAT to the only endpoint of a service is spelled. nft compiles
/// both to the same kernel expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SingleDnat {
    /// `dnat ip addr . port to 10.180.0.1 . 80`, as upstream's test goldens
    /// (`proxier_test.go` at 26c03096) spell it. IPv4 only: an IPv6
    /// endpoint is spelled as in [`SingleDnat::AddrPort`], which nft 1.0.6
    /// loads (it aborts on `dnat ip6 addr . port to fd00::1 . 80`).
    #[default]
    Concat,
    /// `dnat to 10.180.0.1:80`, as `proxier.go` at 736e3b68 writes it.
    AddrPort,
}

/// Printer options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrintOptions {
    /// How mark values are spelled (`0x00004000` or `0x4000`).
    pub mark_style: MarkStyle,
    /// How a single-endpoint DNAT is spelled.
    pub single_dnat: SingleDnat,
}

/// Go's `%q` for the strings kube-proxy writes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// [`quote`], or why nft cannot read the string back: its quoted strings
/// end at the next `"`, with no escape (nft 1.0.6's `quotedstring`).
fn quoted(s: &str) -> Result<String, String> {
    if s.contains('"') {
        return Err(format!(
            "the string {}: nft has no way to write '\"' inside a quoted string",
            shown(s)
        ));
    }
    Ok(quote(s))
}

/// A name as nft's parser reads it unquoted (its `string` token: a letter,
/// `_` or `.`, then letters, digits, `/`, `-`, `_` or `.`), at most 255
/// bytes (the kernel's `NFT_NAME_MAXLEN` with its NUL); else why not.
/// kube-proxy's names always are: they are built from API-validated
/// names and fixed prefixes.
///
/// ```
/// use kproxy_nft::print::name;
/// assert!(name("service-ULMVA6XW-ns1/svc1/tcp/p80").is_ok());
/// assert!(name("service-X-ns/a$b/tcp/").is_err());
/// ```
pub fn name(s: &str) -> Result<&str, NftError> {
    checked_name(s).map_err(|what| NftError::Unsupported { what })
}

/// [`name`], with the reason as text.
fn checked_name(s: &str) -> Result<&str, String> {
    let b = s.as_bytes();
    let ok = b.len() < 256
        && b.first()
            .is_some_and(|c| c.is_ascii_alphabetic() || b"_.".contains(c))
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"/-_.".contains(c));
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "the name {}: nft reads a letter, '_' or '.', then letters, digits, '/', '-', '_' or '.' (at most 255 bytes)",
            shown(s)
        ))
    }
}

/// Input text in an error: escaped, and cut if long.
fn shown(s: &str) -> String {
    kproxy_core::convert::validate::show(s)
}

fn ip_word(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

fn family_word(f: IpFamily) -> &'static str {
    ip_word(f)
}

fn mark(value: u32, style: MarkStyle) -> String {
    match style {
        MarkStyle::Production => format!("{value:#010x}"),
        MarkStyle::Short => format!("{value:#x}"),
    }
}

fn addr(a: &AddrMatch) -> String {
    match a {
        AddrMatch::Ip(ip) => ip.to_string(),
        AddrMatch::Net(n) => n.to_string(),
    }
}

fn key(f: IpFamily, k: Key) -> String {
    match k {
        Key::SrcAddr => format!("{} saddr", ip_word(f)),
        Key::DstAddr => format!("{} daddr", ip_word(f)),
        Key::L4Proto => "meta l4proto".into(),
        Key::DstPort => "th dport".into(),
    }
}

fn keys(f: IpFamily, ks: &[Key]) -> String {
    ks.iter()
        .map(|k| key(f, *k))
        .collect::<Vec<_>>()
        .join(" . ")
}

fn key_value(v: &KeyValue) -> String {
    match v {
        KeyValue::Ip(ip) => ip.to_string(),
        KeyValue::Net(n) => n.to_string(),
        KeyValue::Proto(p) => p.as_lower().to_string(),
        KeyValue::Port(p) => p.to_string(),
    }
}

/// The key of an element: `172.30.0.41 . tcp . 80`.
pub fn element_key(e: &Element) -> String {
    e.key.iter().map(key_value).collect::<Vec<_>>().join(" . ")
}

fn neq(negate: bool) -> &'static str {
    if negate { "!= " } else { "" }
}

fn dir_word(d: Direction) -> &'static str {
    match d {
        Direction::Src => "saddr",
        Direction::Dst => "daddr",
    }
}

fn print_match(f: IpFamily, m: &Match, opts: PrintOptions) -> Result<Option<String>, String> {
    Ok(Some(match m {
        Match::Comment(_) => return Ok(None),
        Match::Protocol(p) => format!("meta l4proto {}", p.as_lower()),
        Match::Addr {
            dir,
            addr: a,
            negate,
        } => format!(
            "{} {} {}{}",
            ip_word(f),
            dir_word(*dir),
            neq(*negate),
            addr(a)
        ),
        Match::DstPort(p) => format!("th dport {p}"),
        Match::InInterface {
            name,
            prefix,
            negate,
        } => {
            // `iifname`, as upstream's local-traffic detectors write it
            // (`pkg/proxy/util/localdetector.go`): `iif` takes an interface
            // index, which nft resolves at load time (and cannot wildcard).
            let star = if *prefix { "*" } else { "" };
            format!("iifname {}{name}{star}", neq(*negate))
        }
        Match::AddrTypeLocal { dir, negate } => {
            format!("fib {} type {}local", dir_word(*dir), neq(*negate))
        }
        Match::CtState { states, negate } => {
            if states.as_slice() == [CtState::Dnat] {
                format!("ct status {}dnat", neq(*negate))
            } else {
                let mut words = Vec::new();
                for s in states {
                    words.push(match s {
                        CtState::New => "new",
                        CtState::Established => "established",
                        CtState::Related => "related",
                        CtState::Invalid => "invalid",
                        CtState::Dnat => return Err("ct status dnat mixed with ct states".into()),
                    });
                }
                format!("ct state {}{}", neq(*negate), words.join(","))
            }
        }
        Match::Mark {
            value,
            mask,
            negate,
        } => {
            let v = if *value == 0 {
                "0".to_string()
            } else {
                mark(*value, opts.mark_style)
            };
            let op = if *negate { "!=" } else { "==" };
            format!("mark and {} {op} {v}", mark(*mask, opts.mark_style))
        }
        Match::Probability { .. } => return Err("statistic probability".into()),
        Match::Recent { .. } => return Err("recent list".into()),
        Match::PhysDevIsIn { .. } => return Err("physdev match".into()),
        Match::Nfacct(n) => format!("counter name {}", quoted(n)?),
        Match::InSet {
            keys: k,
            set,
            negate,
        } => {
            format!("{} {}@{}", keys(f, k), neq(*negate), checked_name(set)?)
        }
        Match::AddrSet { dir, addrs, negate } => {
            // kube-proxy's spellings: Service CIDRs are one comma-joined token,
            // source ranges are separate tokens.
            let sep = match dir {
                Direction::Dst => ",",
                Direction::Src => " , ",
            };
            let list: Vec<String> = addrs.iter().map(addr).collect();
            format!(
                "{} {} {}{{ {} }}",
                ip_word(f),
                dir_word(*dir),
                neq(*negate),
                list.join(sep)
            )
        }
        Match::SetMark { op, value } => set_mark(*op, *value, opts),
        Match::UpdateSet { keys: k, set } => {
            format!("update @{} {{ {} }}", checked_name(set)?, keys(f, k))
        }
        Match::Opaque(text) => return Err(format!("opaque statement {text}")),
    }))
}

fn set_mark(op: MarkOp, value: u32, opts: PrintOptions) -> String {
    let op = match op {
        MarkOp::Or => "or",
        MarkOp::Xor => "xor",
    };
    format!("mark set mark {op} {}", mark(value, opts.mark_style))
}

/// A verdict as nft spells it.
///
/// ```
/// use kproxy_core::ir::Verdict;
/// use kproxy_core::model::IpFamily;
/// use kproxy_nft::print::print_verdict;
/// let v = Verdict::Goto("service-ULMVA6XW-ns1/svc1/tcp/p80".into());
/// assert_eq!(
///     print_verdict(IpFamily::V4, &v, Default::default()).unwrap(),
///     "goto service-ULMVA6XW-ns1/svc1/tcp/p80"
/// );
/// ```
pub fn print_verdict(f: IpFamily, v: &Verdict, opts: PrintOptions) -> Result<String, NftError> {
    verdict_text(f, v, opts).map_err(|what| NftError::Unsupported { what })
}

fn verdict_text(f: IpFamily, v: &Verdict, opts: PrintOptions) -> Result<String, String> {
    Ok(match v {
        Verdict::Jump(c) => format!("jump {}", checked_name(c.as_str())?),
        Verdict::Goto(c) => format!("goto {}", checked_name(c.as_str())?),
        Verdict::Return => "return".into(),
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Reject => "reject".into(),
        Verdict::Dnat(to) => format!("dnat to {to}"),
        Verdict::Masquerade { random_fully } => {
            if *random_fully {
                "masquerade fully-random".into()
            } else {
                "masquerade".into()
            }
        }
        Verdict::SetMark { op, value } => set_mark(*op, *value, opts),
        Verdict::VerdictMap { keys: k, map } => {
            format!("{} vmap @{}", keys(f, k), checked_name(map)?)
        }
        Verdict::DnatRandom { to } => match to.as_slice() {
            [] => return Err("DNAT to no destination".into()),
            // IPv6 is always spelled as `proxier.go` writes it (`dnat to
            // [fd00::1]:80`): nft 1.0.6 aborts on `dnat ip6 addr . port to
            // fd00::1 . 80` (netlink_linearize.c assertion), and upstream's
            // goldens with the concatenated spelling are IPv4 only.
            [one] => match opts.single_dnat {
                SingleDnat::AddrPort => format!("dnat to {one}"),
                SingleDnat::Concat if one.is_ipv6() => format!("dnat to {one}"),
                SingleDnat::Concat => format!(
                    "dnat {} addr . port to {} . {}",
                    ip_word(f),
                    one.ip(),
                    one.port()
                ),
            },
            many => {
                let items: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, sa)| format!("{i} : {} . {}", sa.ip(), sa.port()))
                    .collect();
                format!(
                    "dnat {} addr . port to numgen random mod {} map {{ {} }}",
                    ip_word(f),
                    many.len(),
                    items.join(" , ")
                )
            }
        },
        Verdict::RandomVerdictMap { to } => {
            if to.is_empty() {
                return Err("numgen verdict map without targets".into());
            }
            let items = to
                .iter()
                .enumerate()
                .map(|(i, c)| Ok(format!("{i} : goto {}", checked_name(c.as_str())?)))
                .collect::<Result<Vec<String>, String>>()?;
            format!(
                "numgen random mod {} vmap {{ {} }}",
                to.len(),
                items.join(" , ")
            )
        }
        Verdict::Opaque(text) => return Err(format!("opaque statement {text}")),
    })
}

/// The body of a rule (what follows `add rule FAMILY TABLE CHAIN`).
pub fn print_rule(f: IpFamily, rule: &Rule, opts: PrintOptions) -> Result<String, NftError> {
    rule_text(f, rule, opts).map_err(|what| NftError::Unsupported { what })
}

fn rule_text(f: IpFamily, rule: &Rule, opts: PrintOptions) -> Result<String, String> {
    let mut words = Vec::new();
    for m in &rule.matches {
        if let Some(w) = print_match(f, m, opts)? {
            words.push(w);
        }
    }
    if let Some(v) = &rule.verdict {
        words.push(verdict_text(f, v, opts)?);
    }
    if words.is_empty() {
        return Err("empty rule".into());
    }
    let mut out = words.join(" ");
    if let Some(c) = rule.comment() {
        let _ = write!(out, " comment {}", quoted(c)?);
    }
    Ok(out)
}

fn chain_def(c: &Chain) -> Result<String, String> {
    let mut body = String::new();
    if let ChainKind::Base {
        chain_type,
        hook,
        priority,
    } = &c.kind
    {
        let t = match chain_type {
            BaseChainType::Filter => "filter",
            BaseChainType::Nat => "nat",
        };
        let _ = write!(
            body,
            " type {t} hook {} priority {priority} ;",
            hook.as_nft()
        );
    }
    if let Some(cm) = &c.comment {
        let _ = write!(body, " comment {} ;", quoted(cm)?);
    }
    Ok(if body.is_empty() {
        String::new()
    } else {
        format!(" {{{body} }}")
    })
}

fn set_def(s: &Set) -> Result<String, String> {
    let mut out = format!(" {{ type {} ;", s.type_spec);
    if !s.flags.is_empty() {
        let _ = write!(out, " flags {} ;", s.flags.join(","));
    }
    if let Some(t) = s.timeout {
        let _ = write!(out, " timeout {t}s ;");
    }
    if let Some(c) = &s.comment {
        let _ = write!(out, " comment {} ;", quoted(c)?);
    }
    out.push_str(" }");
    Ok(out)
}

fn map_def(m: &Map) -> Result<String, String> {
    let mut out = format!(" {{ type {} : {} ;", m.type_spec, m.value_type);
    if !m.flags.is_empty() {
        let _ = write!(out, " flags {} ;", m.flags.join(","));
    }
    if let Some(c) = &m.comment {
        let _ = write!(out, " comment {} ;", quoted(c)?);
    }
    out.push_str(" }");
    Ok(out)
}

fn element_text(
    f: IpFamily,
    e: &Element,
    value: Option<&MapValue>,
    opts: PrintOptions,
) -> Result<String, String> {
    let mut out = format!("{{ {}", element_key(e));
    if let Some(c) = &e.comment {
        let _ = write!(out, " comment {}", quoted(c)?);
    }
    if let Some(MapValue::Verdict(v)) = value {
        let _ = write!(out, " : {}", verdict_text(f, v, opts)?);
    }
    out.push_str(" }");
    Ok(out)
}

/// One command as a line of `nft -f` input (without the newline).
pub fn print_op(tx: &Transaction, op: &Op, opts: PrintOptions) -> Result<String, NftError> {
    print_op_text(tx, op, opts).map_err(|what| NftError::Unsupported { what })
}

fn print_op_text(tx: &Transaction, op: &Op, opts: PrintOptions) -> Result<String, String> {
    let f = tx.family;
    let fam = family_word(f);
    let t = checked_name(&tx.table)?;
    Ok(match op {
        Op::AddTable { comment } => match comment {
            Some(c) => format!("add table {fam} {t} {{ comment {} ; }}", quoted(c)?),
            None => format!("add table {fam} {t}"),
        },
        Op::AddDormantTable { comment } => match comment {
            Some(c) => format!(
                "add table {fam} {t} {{ comment {} ; flags dormant ; }}",
                quoted(c)?
            ),
            None => format!("add table {fam} {t} {{ flags dormant ; }}"),
        },
        Op::AddChain(c) => format!(
            "add chain {fam} {t} {}{}",
            checked_name(c.name.as_str())?,
            chain_def(c)?
        ),
        Op::DeleteTable => format!("delete table {fam} {t}"),
        Op::FlushChain(c) => format!("flush chain {fam} {t} {}", checked_name(c.as_str())?),
        Op::DeleteChain(c) => format!("delete chain {fam} {t} {}", checked_name(c.as_str())?),
        Op::AddRule(c, r) => format!(
            "add rule {fam} {t} {} {}",
            checked_name(c.as_str())?,
            rule_text(f, r, opts).map_err(|w| format!("chain {}: {w}", shown(c.as_str())))?
        ),
        Op::AddSet(s) => format!(
            "add set {fam} {t} {}{}",
            checked_name(&s.name)?,
            set_def(s)?
        ),
        Op::FlushSet(s) => format!("flush set {fam} {t} {}", checked_name(s)?),
        Op::DeleteSet(s) => format!("delete set {fam} {t} {}", checked_name(s)?),
        Op::AddMap(m) => format!(
            "add map {fam} {t} {}{}",
            checked_name(&m.name)?,
            map_def(m)?
        ),
        Op::DeleteMap(m) => format!("delete map {fam} {t} {}", checked_name(m)?),
        Op::AddSetElement(s, e) => format!(
            "add element {fam} {t} {} {}",
            checked_name(s)?,
            element_text(f, e, None, opts)?
        ),
        Op::AddMapElement(m, e, v) => format!(
            "add element {fam} {t} {} {}",
            checked_name(m)?,
            element_text(f, e, Some(v), opts)?
        ),
        Op::DeleteElement(s, e) => format!(
            "delete element {fam} {t} {} {{ {} }}",
            checked_name(s)?,
            element_key(e)
        ),
        Op::AddCounter(c) => format!("add counter {fam} {t} {}", checked_name(&c.name)?),
        Op::DeleteCounter(c) => format!("delete counter {fam} {t} {}", checked_name(c)?),
    })
}

/// The whole transaction, one command per line.
pub fn print(tx: &Transaction, opts: PrintOptions) -> Result<String, NftError> {
    let mut out = String::new();
    for op in &tx.ops {
        out.push_str(&print_op(tx, op, opts)?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quoting() {
        assert_eq!(quote("a \"b\" \\"), "\"a \\\"b\\\" \\\\\"");
    }
}
