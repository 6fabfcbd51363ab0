//! IR -> `iptables-restore` text. Nothing but syntax lives here.

use std::fmt::Write as _;
use std::net::IpAddr;

use kproxy_core::ir::{
    AddrMatch, ChainKind, Direction, Hook, MarkOp, Match, RecentOp, Rule, Ruleset, Table, Verdict,
};
use kproxy_core::model::MarkStyle;
use kproxy_core::plan::{Plan, ServicePortPlan};
use kproxy_core::profile::IptablesProfile;

use crate::IptablesError;
use crate::layout::{LayoutOptions, Part, Sink, TableId, VerdictRef, emit_part};

/// Printer options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrintOptions {
    /// How mark values are spelled (`0x00004000` or `0x4000`).
    pub mark_style: MarkStyle,
    /// The release's spelling: 1.5 wrote `-j MARK --set-xmark V/V` for
    /// [`Verdict::SetMark`] with [`MarkOp::Or`] (the same effect when the
    /// mask is the value) and probabilities with 5 decimals.
    pub profile: IptablesProfile,
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

/// `1/n` as `profile`'s kube-proxy printed it (1.5: `%0.5f`).
///
/// ```
/// use kproxy_core::profile::IptablesProfile;
/// use kproxy_iptables::print::format_probability_for;
/// assert_eq!(format_probability_for(2, IptablesProfile::V1_5), "0.50000");
/// assert_eq!(format_probability_for(3, IptablesProfile::Current), "0.3333333333");
/// ```
pub fn format_probability_for(one_in: u32, profile: IptablesProfile) -> String {
    match profile {
        IptablesProfile::V1_5 => format!("{:.5}", 1.0 / f64::from(one_in.max(1))),
        IptablesProfile::Current => format_probability(one_in),
    }
}

/// The probabilities already spelled, by N (a cluster's Services have few
/// distinct endpoint counts, and formatting a float exactly is slow).
#[derive(Debug, Default)]
struct Probabilities {
    text: Vec<String>,
}

impl Probabilities {
    /// Larger N are spelled each time (and never held).
    const CACHED: u32 = 4096;

    fn push(&mut self, out: &mut String, one_in: u32, profile: IptablesProfile) {
        if one_in >= Self::CACHED {
            out.push_str(&format_probability_for(one_in, profile));
            return;
        }
        let i = one_in as usize;
        if self.text.len() <= i {
            self.text.resize(i + 1, String::new());
        }
        if self.text[i].is_empty() {
            self.text[i] = format_probability_for(one_in, profile);
        }
        out.push_str(&self.text[i]);
    }
}

/// Prints the layout as it is emitted, the way kube-proxy writes its
/// buffers: per table the chain declarations, then the rules in emission
/// order (rules of different chains interleave, as in kube-proxy's payload).
/// Never materialises the whole IR.
///
/// With `threads` above 1, the service ports are split in that many runs
/// of about the same number of endpoints, laid out and printed at once on
/// as many threads, and the texts joined: the output is the same.
pub fn stream(
    plan: &Plan,
    layout: LayoutOptions,
    opts: PrintOptions,
    threads: usize,
) -> Result<String, IptablesError> {
    let parts = parts(plan, threads);
    let total = Estimate::of(&plan.service_ports);
    let sinks: Vec<TextSink> = match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() => std::thread::scope(|s| {
            let others: Vec<_> = rest
                .iter()
                .map(|part| s.spawn(move || print_part(plan, layout, opts, part, None)))
                .collect();
            let mut sinks = vec![print_part(plan, layout, opts, first, Some(total))];
            for other in others {
                match other.join() {
                    Ok(sink) => sinks.push(sink),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            sinks
        }),
        _ => vec![print_part(
            plan,
            layout,
            opts,
            &Part::whole(plan),
            Some(total),
        )],
    };
    join(sinks)
}

/// The pieces [`stream`] prints on `threads` threads: runs of service
/// ports of about the same number of endpoints, the node's first rules
/// with the first and its last rules with the last.
fn parts(plan: &Plan, threads: usize) -> Vec<Part> {
    let ports = &plan.service_ports;
    let threads = threads.clamp(1, ports.len().max(1));
    let weight = |sp: &ServicePortPlan| Estimate::of(std::slice::from_ref(sp)).work();
    let total: usize = ports.iter().map(weight).sum();
    let mut parts = Vec::with_capacity(threads);
    let (mut start, mut done) = (0, 0);
    for (i, sp) in ports.iter().enumerate() {
        done += weight(sp);
        // The end of the run that takes the work up to its share.
        if parts.len() + 1 < threads && done * threads >= total * (parts.len() + 1) {
            parts.push(start..i + 1);
            start = i + 1;
        }
    }
    parts.push(start..ports.len());
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, ports)| Part {
            head: i == 0,
            ports,
            tail: i == last,
        })
        .collect()
}

/// Roughly what the rules of some service ports take, so that the
/// buffers of a large cluster do not grow by copying.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    endpoints: usize,
    ports: usize,
}

impl Estimate {
    fn of(service_ports: &[ServicePortPlan]) -> Self {
        let endpoints = service_ports
            .iter()
            .map(|s| {
                2 * s.reachable_endpoints.len()
                    + s.cluster_endpoints.len()
                    + s.local_endpoints.len()
            })
            .sum();
        Self {
            endpoints,
            ports: service_ports.len(),
        }
    }
    /// The bytes of filter's rules.
    fn filter_rules(self) -> usize {
        self.ports * 60 + 1024
    }
    /// The bytes of nat's declarations.
    fn nat_decls(self) -> usize {
        (self.endpoints / 2 + self.ports * 3) * 32
    }
    /// The bytes of nat's rules.
    fn nat_rules(self) -> usize {
        self.endpoints * 110 + self.ports * 400
    }
    /// The work of laying out and printing them, in bytes of text (the
    /// filter table's constant part left out).
    fn work(self) -> usize {
        self.ports * 60 + self.nat_decls() + self.nat_rules()
    }
}

/// Lays out and prints one piece. `whole`: the estimate of the whole
/// output, when this piece's nat rules are to become it (the first piece).
fn print_part(
    plan: &Plan,
    layout: LayoutOptions,
    opts: PrintOptions,
    part: &Part,
    whole: Option<Estimate>,
) -> TextSink {
    let mut sink = TextSink {
        opts,
        tables: Default::default(),
        error: None,
        probabilities: Probabilities::default(),
    };
    let own = Estimate::of(part.service_ports(plan));
    // nat's rules, the largest part, become the output: room for what goes
    // in front of them (the filter table, nat's declarations) and after
    // them (the other pieces' rules) is reserved too, so that they are
    // moved in place, not copied to a new buffer.
    let nat_rules = match whole {
        Some(w) => w.nat_rules() + w.filter_rules() + w.nat_decls(),
        None => own.nat_rules(),
    };
    let [filter, nat, _] = &mut sink.tables;
    nat.rules.reserve(nat_rules);
    nat.decls.reserve(own.nat_decls());
    filter.rules.reserve(own.filter_rules());
    emit_part(plan, layout, part, &mut sink);
    sink
}

/// The text of the pieces' sinks, in order: per table, every piece's
/// declarations, then every piece's rules.
fn join(sinks: Vec<TextSink>) -> Result<String, IptablesError> {
    let mut tables: [Vec<TextTable>; 3] = Default::default();
    for sink in sinks {
        if let Some(e) = sink.error {
            return Err(e);
        }
        for (all, t) in tables.iter_mut().zip(sink.tables) {
            all.push(t);
        }
    }
    let [filter, nat, mangle] = tables;
    let mut head = String::new();
    let mut tail = String::new();
    table_text(&mut head, "filter", &filter);
    drop(filter);
    let nat_used = nat.iter().any(|t| t.used);
    if nat_used {
        head.push_str("*nat\n");
        for t in &nat {
            head.push_str(&t.decls);
        }
    }
    let mut rules = nat.into_iter().map(|t| t.rules);
    let mut out = rules.next().unwrap_or_default();
    let rest: Vec<String> = rules.collect();
    if nat_used {
        tail.push_str("COMMIT\n");
    }
    table_text(&mut tail, "mangle", &mangle);
    out.reserve(head.len() + rest.iter().map(String::len).sum::<usize>() + tail.len());
    out.insert_str(0, &head);
    for r in rest {
        out.push_str(&r);
    }
    out.push_str(&tail);
    Ok(out)
}

/// Appends table `name` (its pieces' declarations, then their rules)
/// whole, if it was used.
fn table_text(out: &mut String, name: &str, pieces: &[TextTable]) {
    if pieces.iter().any(|t| t.used) {
        out.push('*');
        out.push_str(name);
        out.push('\n');
        for t in pieces {
            out.push_str(&t.decls);
        }
        for t in pieces {
            out.push_str(&t.rules);
        }
        out.push_str("COMMIT\n");
    }
}

#[derive(Default)]
struct TextTable {
    used: bool,
    decls: String,
    rules: String,
}

struct TextSink {
    opts: PrintOptions,
    tables: [TextTable; 3],
    error: Option<IptablesError>,
    probabilities: Probabilities,
}

impl TextSink {
    fn table(&mut self, t: TableId) -> &mut TextTable {
        let t = &mut self.tables[t as usize];
        t.used = true;
        t
    }
    fn rule(&mut self, table: TableId, chain: &str, rule: &Rule) {
        let verdict = rule.verdict.as_ref().map(VerdictRef::Verdict);
        self.rule_of(table, chain, &rule.matches, verdict);
    }
    fn rule_of(
        &mut self,
        table: TableId,
        chain: &str,
        matches: &[Match],
        verdict: Option<VerdictRef<'_>>,
    ) {
        let opts = self.opts;
        let t = &mut self.tables[table as usize];
        t.used = true;
        t.rules.push_str("-A ");
        t.rules.push_str(chain);
        let res = words(
            &mut t.rules,
            matches,
            verdict,
            opts,
            &mut self.probabilities,
        );
        t.rules.push('\n');
        if let (Err(what), None) = (res, &self.error) {
            self.error = Some(IptablesError::Unsupported {
                chain: chain.to_string(),
                what,
            });
        }
    }
}

impl Sink for TextSink {
    fn declare(&mut self, table: TableId, chain: &str) {
        let t = self.table(table);
        t.decls.push(':');
        t.decls.push_str(chain);
        t.decls.push_str(" - [0:0]\n");
    }
    fn push(&mut self, table: TableId, chain: &str, rule: Rule) {
        self.rule(table, chain, &rule);
    }
    fn push_builtin(&mut self, table: TableId, hook: Hook, rule: Rule) {
        self.rule(table, hook.as_iptables(), &rule);
    }
    fn push_parts(
        &mut self,
        table: TableId,
        chain: &str,
        matches: &[Match],
        verdict: VerdictRef<'_>,
    ) {
        self.rule_of(table, chain, matches, Some(verdict));
    }
}

/// Prints `ruleset` as `iptables-restore` input: per table `*name`, the
/// chain declarations, the rules chain by chain, `COMMIT`.
pub fn print(ruleset: &Ruleset, opts: PrintOptions) -> Result<String, IptablesError> {
    let mut out = String::new();
    let mut probabilities = Probabilities::default();
    for table in &ruleset.tables {
        print_table(&mut out, table, opts, &mut probabilities)?;
    }
    Ok(out)
}

fn print_table(
    out: &mut String,
    table: &Table,
    opts: PrintOptions,
    probabilities: &mut Probabilities,
) -> Result<(), IptablesError> {
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
            rule_words(out, rule, opts, probabilities).map_err(|what| {
                IptablesError::Unsupported {
                    chain: chain.name.to_string(),
                    what,
                }
            })?;
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    Ok(())
}

/// Longest comment the `comment` match takes (`XT_MAX_COMMENT_LEN`, 256
/// with its NUL): iptables-legacy rejects longer ones, iptables-nft cuts them.
pub const COMMENT_LENGTH_MAX: usize = 255;

/// Appends a comment text, quoted when it has more than one word (as
/// kube-proxy writes it) or holds a quote or backslash, which are then
/// escaped with a backslash (iptables-restore reads `\"` and `\\` inside
/// quotes). A comment iptables-restore cannot take (a control character:
/// it reads lines; more than [`COMMENT_LENGTH_MAX`] bytes) is an error.
/// kube-proxy's comments never are: they are built from API-validated names.
fn push_comment(out: &mut String, text: &str) -> Result<(), String> {
    if text.len() > COMMENT_LENGTH_MAX {
        return Err(format!(
            "a comment of {} bytes (at most {COMMENT_LENGTH_MAX}): {}",
            text.len(),
            kproxy_core::convert::validate::show(text)
        ));
    }
    if text.contains(char::is_control) {
        return Err(format!(
            "a comment with a control character: {}",
            kproxy_core::convert::validate::show(text)
        ));
    }
    if !text.is_empty() && !text.contains(|c: char| c.is_whitespace() || "\"\\'".contains(c)) {
        out.push_str(text);
        return Ok(());
    }
    out.push('"');
    if text.contains(['"', '\\']) {
        for c in text.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    } else {
        out.push_str(text);
    }
    out.push('"');
    Ok(())
}

/// Appends a decimal number without going through `fmt`.
fn push_u32(out: &mut String, n: u32) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends an address (IPv4 without `fmt`, the hot path; IPv6 canonical).
fn push_ip(out: &mut String, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            let [a, b, c, d] = v4.octets();
            out.push_str(digits.format(a));
            for o in [b, c, d] {
                out.push('.');
                out.push_str(digits.format(o));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn push_addr(out: &mut String, a: &AddrMatch) {
    match a {
        AddrMatch::Ip(ip) => push_ip(out, ip),
        AddrMatch::Net(n) => {
            push_ip(out, &n.addr());
            out.push('/');
            push_u32(out, u32::from(n.prefix_len()));
        }
    }
}

fn neg(negate: bool) -> &'static str {
    if negate { " !" } else { "" }
}

/// Appends ` <rule words>` for one rule of `chain` (the chain names the
/// rule in the error when iptables cannot express it).
///
/// ```
/// use kproxy_core::ir::{Rule, Verdict};
/// use kproxy_iptables::{PrintOptions, print::print_rule};
///
/// let mut out = String::from("-A KUBE-SERVICES");
/// let rule = Rule::new().verdict(Verdict::Jump("KUBE-NODEPORTS".into()));
/// print_rule(&mut out, "KUBE-SERVICES", &rule, PrintOptions::default()).unwrap();
/// assert_eq!(out, "-A KUBE-SERVICES -j KUBE-NODEPORTS");
/// ```
pub fn print_rule(
    out: &mut String,
    chain: &str,
    rule: &Rule,
    opts: PrintOptions,
) -> Result<(), IptablesError> {
    rule_words(out, rule, opts, &mut Probabilities::default()).map_err(|what| {
        IptablesError::Unsupported {
            chain: chain.to_string(),
            what,
        }
    })
}

/// [`print_rule`], its error saying what cannot be expressed.
fn rule_words(
    out: &mut String,
    rule: &Rule,
    opts: PrintOptions,
    probabilities: &mut Probabilities,
) -> Result<(), String> {
    let verdict = rule.verdict.as_ref().map(VerdictRef::Verdict);
    words(out, &rule.matches, verdict, opts, probabilities)
}

/// [`rule_words`] of a rule's parts.
fn words(
    out: &mut String,
    matches: &[Match],
    verdict: Option<VerdictRef<'_>>,
    opts: PrintOptions,
    probabilities: &mut Probabilities,
) -> Result<(), String> {
    for m in matches {
        print_match(out, m, opts, probabilities)?;
    }
    match verdict {
        Some(VerdictRef::Jump(chain)) => push_jump(out, chain),
        Some(VerdictRef::Verdict(v)) => print_verdict(out, v, opts)?,
        None => {}
    }
    Ok(())
}

/// ` -j CHAIN`.
fn push_jump(out: &mut String, chain: &str) {
    out.push_str(" -j ");
    out.push_str(chain);
}

fn print_match(
    out: &mut String,
    m: &Match,
    opts: PrintOptions,
    probabilities: &mut Probabilities,
) -> Result<(), String> {
    match m {
        Match::Comment(c) => {
            out.push_str(" -m comment --comment ");
            push_comment(out, c)?;
        }
        Match::Protocol(p) => {
            out.push_str(" -m ");
            out.push_str(p.as_lower());
            out.push_str(" -p ");
            out.push_str(p.as_lower());
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
            out.push_str(neg(*negate));
            out.push(' ');
            out.push_str(flag);
            out.push(' ');
            push_addr(out, a);
        }
        Match::DstPort(p) => {
            out.push_str(" --dport ");
            push_u32(out, u32::from(*p));
        }
        Match::InInterface {
            name,
            prefix,
            negate,
        } => {
            let plus = if *prefix { "+" } else { "" };
            let _ = write!(out, "{} -i {name}{plus}", neg(*negate));
        }
        Match::PhysDevIsIn { negate } => {
            let _ = write!(out, " -m physdev{} --physdev-is-in", neg(*negate));
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
            out.push_str(" -m statistic --mode random --probability ");
            probabilities.push(out, *one_in, opts.profile);
        }
        Match::Recent { name, op } => {
            out.push_str(" -m recent --name ");
            out.push_str(name);
            match op {
                RecentOp::Set => out.push_str(" --set"),
                RecentOp::Check { seconds, reap } => {
                    out.push_str(" --rcheck --seconds ");
                    push_u32(out, *seconds);
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
        // Words of a dumped rule that kproxy does not model: as they were.
        Match::Opaque(text) => {
            out.push(' ');
            out.push_str(text);
        }
    }
    Ok(())
}

fn print_verdict(out: &mut String, v: &Verdict, opts: PrintOptions) -> Result<(), String> {
    match v {
        Verdict::Jump(c) => push_jump(out, c.as_str()),
        Verdict::Goto(c) => {
            let _ = write!(out, " -g {c}");
        }
        Verdict::Return => out.push_str(" -j RETURN"),
        Verdict::Accept => out.push_str(" -j ACCEPT"),
        Verdict::Drop => out.push_str(" -j DROP"),
        Verdict::Reject => out.push_str(" -j REJECT"),
        Verdict::Dnat(to) => {
            out.push_str(" -j DNAT --to-destination ");
            match to.ip() {
                IpAddr::V4(_) => push_ip(out, &to.ip()),
                IpAddr::V6(v6) => {
                    let _ = write!(out, "[{v6}]");
                }
            }
            out.push(':');
            push_u32(out, u32::from(to.port()));
        }
        Verdict::Masquerade { random_fully } => {
            out.push_str(" -j MASQUERADE");
            if *random_fully {
                out.push_str(" --random-fully");
            }
        }
        Verdict::SetMark {
            op: MarkOp::Or,
            value,
        } if opts.profile == IptablesProfile::V1_5 => {
            let v = format_mark(*value, opts.mark_style);
            let _ = write!(out, " -j MARK --set-xmark {v}/{v}");
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
        Verdict::Opaque(text) => {
            out.push(' ');
            out.push_str(text);
        }
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
    fn fast_number_and_address_printing_matches_display() {
        for n in [0u32, 7, 10, 255, 65535, 4_294_967_295] {
            let mut s = String::new();
            push_u32(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        for a in ["0.0.0.0", "10.180.0.1", "255.255.255.255", "fd00:10:180::1"] {
            let ip: IpAddr = a.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, &ip);
            assert_eq!(s, a);
        }
    }

    #[test]
    fn multi_word_comments_are_quoted() {
        let quote = |t: &str| {
            let mut s = String::new();
            push_comment(&mut s, t).map(|()| s)
        };
        assert_eq!(quote("ns1/svc1:p80").unwrap(), "ns1/svc1:p80");
        assert_eq!(
            quote("ns1/svc1:p80 cluster IP").unwrap(),
            "\"ns1/svc1:p80 cluster IP\""
        );
        assert_eq!(quote("").unwrap(), "\"\"");
    }

    #[test]
    fn comments_are_escaped_or_rejected() {
        let quote = |t: &str| {
            let mut s = String::new();
            push_comment(&mut s, t).map(|()| s)
        };
        // What iptables-restore reads back as the same text.
        assert_eq!(quote(r#"a"b"#).unwrap(), r#""a\"b""#);
        assert_eq!(quote(r"a\b c").unwrap(), r#""a\\b c""#);
        assert_eq!(quote("it's").unwrap(), r#""it's""#);
        assert_eq!(quote("$x").unwrap(), "$x");
        let parsed = crate::parse::parse(
            &format!(
                "*nat\n:C - [0:0]\n-A C -m comment --comment {} -j RETURN\nCOMMIT\n",
                quote(r#"q"uote \ back"#).unwrap()
            ),
            None,
        )
        .unwrap();
        assert!(
            format!("{parsed:?}").contains(r#"q\"uote \\ back"#),
            "{parsed:?}"
        );
        // What it cannot take.
        assert!(quote("a\nb").unwrap_err().contains("a\\nb"));
        assert!(quote("a\0b").is_err());
        assert!(quote(&"x".repeat(255)).is_ok());
        assert!(
            quote(&"x".repeat(256))
                .unwrap_err()
                .starts_with("a comment of 256 bytes")
        );
    }
}
