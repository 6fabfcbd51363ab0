//! IR -> `iptables-restore` text. Nothing but syntax lives here.

use std::fmt::Write as _;

use kproxy_core::ir::{
    AddrMatch, ChainKind, Direction, MarkOp, Match, RecentOp, Rule, Ruleset, Table, Verdict,
};
use kproxy_core::model::MarkStyle;

use crate::IptablesError;

/// Printer options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrintOptions {
    /// How mark values are spelled (`0x00004000` or `0x4000`).
    pub mark_style: MarkStyle,
}

/// Formats a mark value as kube-proxy does.
pub fn format_mark(value: u32, style: MarkStyle) -> String {
    match style {
        MarkStyle::Production => format!("{value:#010x}"),
        MarkStyle::Short => format!("{value:#x}"),
    }
}

/// `1/n` with ten decimals, as kube-proxy prints statistic probabilities.
pub fn format_probability(one_in: u32) -> String {
    format!("{:.10}", 1.0 / f64::from(one_in.max(1)))
}

/// Prints `ruleset` as `iptables-restore` input: per table `*name`, the
/// chain declarations, the rules chain by chain, `COMMIT`.
pub fn print(ruleset: &Ruleset, opts: PrintOptions) -> Result<String, IptablesError> {
    let mut out = String::new();
    for table in &ruleset.tables {
        print_table(&mut out, table, opts)?;
    }
    Ok(out)
}

fn print_table(out: &mut String, table: &Table, opts: PrintOptions) -> Result<(), IptablesError> {
    let _ = writeln!(out, "*{}", table.name);
    for chain in &table.chains {
        if chain.kind == ChainKind::Regular {
            let _ = writeln!(out, ":{} - [0:0]", chain.name);
        }
    }
    for chain in &table.chains {
        for rule in &chain.rules {
            out.push_str("-A ");
            out.push_str(chain.name.as_str());
            print_rule(out, rule, opts).map_err(|what| IptablesError::Unsupported {
                chain: chain.name.to_string(),
                what,
            })?;
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    Ok(())
}

fn quote(text: &str) -> String {
    if text.is_empty() || text.contains(char::is_whitespace) {
        format!("\"{text}\"")
    } else {
        text.to_string()
    }
}

fn addr(a: &AddrMatch) -> String {
    match a {
        AddrMatch::Ip(ip) => ip.to_string(),
        AddrMatch::Net(n) => n.to_string(),
    }
}

fn neg(negate: bool) -> &'static str {
    if negate { " !" } else { "" }
}

/// Appends ` <rule words>` for one rule.
pub fn print_rule(out: &mut String, rule: &Rule, opts: PrintOptions) -> Result<(), String> {
    for m in &rule.matches {
        print_match(out, m, opts)?;
    }
    if let Some(v) = &rule.verdict {
        print_verdict(out, v, opts)?;
    }
    Ok(())
}

fn print_match(out: &mut String, m: &Match, opts: PrintOptions) -> Result<(), String> {
    match m {
        Match::Comment(c) => {
            let _ = write!(out, " -m comment --comment {}", quote(c));
        }
        Match::Protocol(p) => {
            let _ = write!(out, " -m {p} -p {p}");
        }
        Match::Addr {
            dir,
            addr: a,
            negate,
        } => {
            let flag = match dir {
                Direction::Src => "-s",
                Direction::Dst => "-d",
            };
            let _ = write!(out, "{} {flag} {}", neg(*negate), addr(a));
        }
        Match::DstPort(p) => {
            let _ = write!(out, " --dport {p}");
        }
        Match::InInterface {
            name,
            prefix,
            negate,
        } => {
            let plus = if *prefix { "+" } else { "" };
            let _ = write!(out, "{} -i {name}{plus}", neg(*negate));
        }
        Match::AddrTypeLocal { dir, negate } => {
            let flag = match dir {
                Direction::Src => "--src-type",
                Direction::Dst => "--dst-type",
            };
            let _ = write!(out, " -m addrtype{} {flag} LOCAL", neg(*negate));
        }
        Match::CtState { states, negate } => {
            let list: Vec<&str> = states.iter().map(|s| s.as_iptables()).collect();
            let _ = write!(
                out,
                " -m conntrack{} --ctstate {}",
                neg(*negate),
                list.join(",")
            );
        }
        Match::Mark {
            value,
            mask,
            negate,
        } => {
            let _ = write!(
                out,
                " -m mark{} --mark {}/{}",
                neg(*negate),
                format_mark(*value, opts.mark_style),
                format_mark(*mask, opts.mark_style)
            );
        }
        Match::Probability { one_in } => {
            let _ = write!(
                out,
                " -m statistic --mode random --probability {}",
                format_probability(*one_in)
            );
        }
        Match::Recent { name, op } => {
            let _ = write!(out, " -m recent --name {name}");
            match op {
                RecentOp::Set => out.push_str(" --set"),
                RecentOp::Check { seconds, reap } => {
                    let _ = write!(out, " --rcheck --seconds {seconds}");
                    if *reap {
                        out.push_str(" --reap");
                    }
                }
            }
        }
        Match::Nfacct(name) => {
            let _ = write!(out, " -m nfacct --nfacct-name {name}");
        }
        Match::InSet { set, .. } => return Err(format!("set lookup @{set}")),
        Match::AddrSet { .. } => return Err("anonymous address set".into()),
        Match::SetMark { .. } => return Err("mark statement inside a rule".into()),
        Match::UpdateSet { set, .. } => return Err(format!("set update @{set}")),
    }
    Ok(())
}

fn print_verdict(out: &mut String, v: &Verdict, opts: PrintOptions) -> Result<(), String> {
    match v {
        Verdict::Jump(c) => {
            let _ = write!(out, " -j {c}");
        }
        Verdict::Goto(c) => {
            let _ = write!(out, " -g {c}");
        }
        Verdict::Return => out.push_str(" -j RETURN"),
        Verdict::Accept => out.push_str(" -j ACCEPT"),
        Verdict::Drop => out.push_str(" -j DROP"),
        Verdict::Reject => out.push_str(" -j REJECT"),
        Verdict::Dnat(to) => {
            let _ = write!(out, " -j DNAT --to-destination {to}");
        }
        Verdict::Masquerade { random_fully } => {
            out.push_str(" -j MASQUERADE");
            if *random_fully {
                out.push_str(" --random-fully");
            }
        }
        Verdict::SetMark { op, value } => {
            let flag = match op {
                MarkOp::Or => "--or-mark",
                MarkOp::Xor => "--xor-mark",
            };
            let _ = write!(
                out,
                " -j MARK {flag} {}",
                format_mark(*value, opts.mark_style)
            );
        }
        Verdict::VerdictMap { map, .. } => return Err(format!("verdict map @{map}")),
        Verdict::DnatRandom { .. } => return Err("numgen dnat map".into()),
        Verdict::RandomVerdictMap { .. } => return Err("numgen verdict map".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_have_ten_decimals_like_go() {
        assert_eq!(format_probability(2), "0.5000000000");
        assert_eq!(format_probability(3), "0.3333333333");
        assert_eq!(format_probability(10), "0.1000000000");
        assert_eq!(format_probability(1000), "0.0010000000");
        assert_eq!(format_probability(100_000), "0.0000100000");
        assert_eq!(format_probability(100_001), "0.0000099999");
    }

    #[test]
    fn marks_print_in_both_styles() {
        assert_eq!(format_mark(0x4000, MarkStyle::Production), "0x00004000");
        assert_eq!(format_mark(0x4000, MarkStyle::Short), "0x4000");
        assert_eq!(format_mark(1 << 31, MarkStyle::Production), "0x80000000");
    }

    #[test]
    fn multi_word_comments_are_quoted() {
        assert_eq!(quote("ns1/svc1:p80"), "ns1/svc1:p80");
        assert_eq!(
            quote("ns1/svc1:p80 cluster IP"),
            "\"ns1/svc1:p80 cluster IP\""
        );
    }
}
