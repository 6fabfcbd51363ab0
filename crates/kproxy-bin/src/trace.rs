//! `kproxy trace`: follows one packet through the rules kube-proxy would
//! write, and prints every possible outcome with its probability, whether
//! it is masqueraded, and the rules it matched.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use kproxy_core::convert::Inventory;
use kproxy_core::ir::{Chain, Rule, Table, TableFamily};
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::trace::{Outcome, OutcomeKind, Packet, PacketOrigin, Trace, TraceEnv, Tracer};
use serde_json::json;

use crate::compile::{Backend, Layout, Output, ir_rulesets};
use crate::settings::NodeArgs;

/// Arguments of `kproxy trace`.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Node-level configuration (as for `kproxy compile`).
    #[command(flatten)]
    pub node: NodeArgs,
    /// Whose rules to trace: iptables or nftables. Default: the proxy mode.
    #[arg(help_heading = "Output", long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Where the packet comes from: pod (a pod on this node), node (the
    /// node itself) or external (from outside the node).
    #[arg(help_heading = "Packet", long, value_name = "ORIGIN")]
    pub from: String,
    /// The packet's source address.
    #[arg(help_heading = "Packet", long, value_name = "IP")]
    pub src: String,
    /// The packet's destination (`IP:PORT`, `[IPv6]:PORT`).
    #[arg(help_heading = "Packet", long, value_name = "IP:PORT")]
    pub dst: String,
    /// tcp, udp or sctp.
    #[arg(
        help_heading = "Packet",
        long,
        value_name = "PROTO",
        default_value = "tcp"
    )]
    pub proto: String,
    /// The interface pod traffic arrives on. Default: the local detector's
    /// bridge (or `<prefix>0`), else cni0.
    #[arg(help_heading = "Packet", long, value_name = "NAME")]
    pub pod_interface: Option<String>,
    /// The interface external traffic arrives on. Default: eth0.
    #[arg(help_heading = "Packet", long, value_name = "NAME")]
    pub external_interface: Option<String>,
    /// text (for people) or json (for programs).
    #[arg(
        help_heading = "Output",
        long,
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: String,
    /// Trace a node's rules instead of compiled ones: `iptables-save` or
    /// `nft -j list ruleset` output (detected; repeatable). The node options
    /// still describe the node (its addresses, interfaces).
    #[arg(help_heading = "Input", long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Manifests: files, directories or `-` for stdin (as for `kproxy compile`).
    #[arg(help_heading = "Input", required_unless_present_any = ["rules", "kubeconfig", "context"], value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The live cluster as input (--kubeconfig, --context).
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
    /// --color auto|always|never.
    #[command(flatten)]
    pub color: crate::color::ColorArgs,
}

/// A trace and what it was traced against.
#[derive(Debug, Clone)]
pub struct TraceReport {
    /// The backend whose rules were traced.
    pub backend: Backend,
    /// The family of the packet (and the rules traced).
    pub family: IpFamily,
    /// The node environment (local addresses, interfaces).
    pub env: TraceEnv,
    /// The trace.
    pub trace: Trace,
    /// Notes for stderr (input and configuration warnings).
    pub warnings: Vec<String>,
}

fn parse_origin(s: &str) -> Result<PacketOrigin> {
    match s.to_ascii_lowercase().as_str() {
        "pod" => Ok(PacketOrigin::Pod),
        "node" | "host" => Ok(PacketOrigin::Node),
        "external" | "outside" => Ok(PacketOrigin::External),
        _ => bail!("--from: {s:?} is not pod, node or external"),
    }
}

fn parse_proto(s: &str) -> Result<Protocol> {
    Protocol::from_k8s(&s.to_ascii_uppercase())
        .with_context(|| format!("--proto: {s:?} is not tcp, udp or sctp"))
}

/// The packet the arguments describe.
pub fn packet(args: &TraceArgs) -> Result<Packet> {
    let origin = parse_origin(&args.from)?;
    let src: IpAddr = args
        .src
        .trim()
        .parse()
        .with_context(|| format!("--src: {:?} is not an IP address", args.src))?;
    let dst: SocketAddr = args
        .dst
        .trim()
        .parse()
        .with_context(|| format!("--dst: {:?} is not IP:PORT (or [IPv6]:PORT)", args.dst))?;
    let protocol = parse_proto(&args.proto)?;
    if IpFamily::of(&src) != IpFamily::of(&dst.ip()) {
        bail!(
            "--src {src} and --dst {} are of different IP families",
            dst.ip()
        );
    }
    Ok(Packet::new(origin, src, dst.ip(), protocol, dst.port()))
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Iptables => "iptables",
        Backend::Nftables | Backend::NftablesJson => "nftables",
    }
}

/// The backend's own spelling of a rule, prefixed with its chain.
fn print_rule(
    backend: Backend,
    layout: Layout,
    table: &Table,
    chain: &Chain,
    rule: &Rule,
) -> String {
    match (backend, table.family) {
        (Backend::Iptables, _) => {
            let mut out = format!("-A {}", chain.name);
            let opts = kproxy_iptables::PrintOptions {
                profile: layout.iptables(),
                ..Default::default()
            };
            match kproxy_iptables::print::print_rule(&mut out, chain.name.as_str(), rule, opts) {
                Ok(()) => out,
                Err(_) => kproxy_core::trace::describe_rule(rule),
            }
        }
        (_, TableFamily::Nft(f) | TableFamily::Iptables(f)) => {
            match kproxy_nft::print::print_rule(f, rule, kproxy_nft::PrintOptions::default()) {
                Ok(text) => text,
                Err(_) => kproxy_core::trace::describe_rule(rule),
            }
        }
    }
}

/// Traces the packet of `args` through the rules of an already loaded
/// inventory.
pub fn trace_inventory(args: &TraceArgs, inv: &Inventory) -> Result<TraceReport> {
    let packet = packet(args)?;
    let family = IpFamily::of(&packet.dst);
    let (backend, families, warnings) =
        ir_rulesets(&args.node, args.backend.as_deref(), true, inv)?;
    let Some(rules) = families.iter().find(|f| f.node.family == family) else {
        bail!(
            "no {family} rules were compiled (the node's families: {}); try --ip-family {}",
            families
                .iter()
                .map(|f| f.node.family.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            match family {
                IpFamily::V4 => "ipv4",
                IpFamily::V6 => "ipv6",
            }
        );
    };
    let mut env = TraceEnv::from_node(&rules.node);
    if let Some(i) = &args.pod_interface {
        env.pod_interface = i.clone();
    }
    if let Some(i) = &args.external_interface {
        env.external_interface = i.clone();
    }
    let layout = rules.layout;
    let (backend, dumped) = if args.rules.is_empty() {
        (backend, None)
    } else {
        let d = crate::check::read_dumps(&args.rules)?;
        let b = if d.iptables {
            Backend::Iptables
        } else {
            Backend::Nftables
        };
        (b, Some(d.family(family)))
    };
    let ruleset = dumped.as_ref().unwrap_or(&rules.ruleset);
    let printer = move |t: &Table, c: &Chain, r: &Rule| print_rule(backend, layout, t, c, r);
    let trace = Tracer::new(ruleset, &env)
        .with_printer(&printer)
        .trace(&packet)?;
    let mut all_warnings = inv.warnings.clone();
    all_warnings.extend(warnings);
    Ok(TraceReport {
        backend,
        family,
        env,
        trace,
        warnings: all_warnings,
    })
}

fn describe_kind(o: &Outcome) -> String {
    match o.kind {
        OutcomeKind::Endpoint(a) => format!("to endpoint {a}"),
        OutcomeKind::Unchanged => "not a service: passes unchanged".into(),
        OutcomeKind::Drop => "DROP".into(),
        OutcomeKind::Reject => "REJECT".into(),
        OutcomeKind::Unknown { .. } => o.kind.to_string(),
    }
}

fn arrives(report: &TraceReport) -> String {
    match report.trace.packet.origin {
        PacketOrigin::Pod => format!("from a pod (in on {})", report.env.pod_interface),
        PacketOrigin::Node => "from the node itself".into(),
        PacketOrigin::External => format!(
            "from outside the node (in on {})",
            report.env.external_interface
        ),
    }
}

/// The readable text of a report.
pub fn render_text(report: &TraceReport) -> String {
    let t = &report.trace;
    let p = &t.packet;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} -> {} {}, through the {} rules ({})",
        p.protocol,
        p.src,
        SocketAddr::new(p.dst, p.dst_port),
        arrives(report),
        backend_name(report.backend),
        report.family
    );
    for (i, o) in t.outcomes.iter().enumerate() {
        let exact = o
            .probability
            .exact
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let masq = match o.kind {
            OutcomeKind::Endpoint(_) | OutcomeKind::Unchanged => {
                if o.masqueraded {
                    ", masqueraded"
                } else {
                    ", not masqueraded"
                }
            }
            OutcomeKind::Drop | OutcomeKind::Reject | OutcomeKind::Unknown { .. } => "",
        };
        let _ = writeln!(
            out,
            "\n{}. {:.2}%{exact} {}{masq}",
            i + 1,
            o.probability.percent(),
            describe_kind(o)
        );
        if o.branches > 1 {
            let _ = writeln!(
                out,
                "   ({} paths lead here; the first one is shown)",
                o.branches
            );
        }
        // Rules are numbered from 1, as `iptables -L --line-numbers` and
        // `kproxy diff` number them (the JSON index counts from 0).
        for s in &o.path {
            let _ = writeln!(
                out,
                "   {:<11} {} {} #{}: {}",
                s.hook.as_nft(),
                s.table,
                s.chain,
                s.rule_index + 1,
                s.rule_text
            );
        }
    }
    if !t.notes.is_empty() {
        out.push('\n');
    }
    for n in &t.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

/// The JSON document of a report.
pub fn render_json(report: &TraceReport) -> serde_json::Value {
    let t = &report.trace;
    let p = &t.packet;
    let outcomes: Vec<serde_json::Value> = t
        .outcomes
        .iter()
        .map(|o| {
            let (kind, endpoint) = match o.kind {
                OutcomeKind::Endpoint(a) => ("endpoint", Some(a.to_string())),
                OutcomeKind::Unchanged => ("unchanged", None),
                OutcomeKind::Drop => ("drop", None),
                OutcomeKind::Reject => ("reject", None),
                OutcomeKind::Unknown { .. } => ("unknown", None),
            };
            json!({
                "kind": kind,
                "endpoint": endpoint,
                "probability": o.probability.value,
                "probability_exact": o.probability.exact.map(|r| r.to_string()),
                "masqueraded": o.masqueraded,
                "branches": o.branches,
                "path": o.path.iter().map(|s| json!({
                    "hook": s.hook.as_nft(),
                    "table": s.table,
                    "chain": s.chain,
                    "rule_index": s.rule_index,
                    "rule": s.rule_text,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "backend": backend_name(report.backend),
        "family": report.family.as_k8s(),
        "packet": {
            "from": p.origin.as_str(),
            "src": p.src.to_string(),
            "dst": SocketAddr::new(p.dst, p.dst_port).to_string(),
            "protocol": p.protocol.as_lower(),
            "in_interface": match p.origin {
                PacketOrigin::Pod => Some(report.env.pod_interface.clone()),
                PacketOrigin::External => Some(report.env.external_interface.clone()),
                PacketOrigin::Node => None,
            },
        },
        "to_local_address": t.to_local,
        "outcomes": outcomes,
        "notes": t.notes,
    })
}

/// Runs `kproxy trace` on an already loaded inventory.
pub fn trace(args: &TraceArgs, inv: &Inventory) -> Result<Output> {
    let json_out = match args.output.as_str() {
        "text" => false,
        "json" => true,
        other => bail!("--output: {other:?} is not text or json"),
    };
    let report = trace_inventory(args, inv)?;
    let stdout = if json_out {
        let mut s = serde_json::to_string_pretty(&render_json(&report))
            .context("cannot serialise the trace")?;
        s.push('\n');
        s
    } else {
        crate::color::paint(render_text(&report), args.color.when)
    };
    Ok(Output {
        stdout,
        warnings: report.warnings,
    })
}

/// Runs `kproxy trace` from its arguments.
pub fn run(args: &TraceArgs) -> Result<Output> {
    // Bad packet arguments are reported before the inputs are read.
    packet(args)?;
    let inv = crate::live::load_input(&args.live, &args.node, &args.paths)?;
    trace(args, &inv)
}
