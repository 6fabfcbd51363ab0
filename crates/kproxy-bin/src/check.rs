//! `kproxy check`: compares a node's rules (`iptables-save`, `nft -j list
//! ruleset` dumps) with what kube-proxy should have written for the given
//! cluster state, and reports drift. Also reads dumps for `kproxy trace
//! --rules` and `kproxy graph --rules`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use kproxy_core::check::{CheckReport, Mode, StaleKind, check};
use kproxy_core::convert::Inventory;
use kproxy_core::equivalence::{Fate, Options};
use kproxy_core::ir::{Ruleset, TableFamily};
use kproxy_core::model::IpFamily;
use kproxy_core::trace::TraceEnv;
use serde_json::json;

use crate::compile::{Backend, Output, ir_rulesets};
use crate::diff::FamilyDiff;
use crate::settings::NodeArgs;

/// Arguments of `kproxy check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Node-level configuration (as for `kproxy compile`).
    #[command(flatten)]
    pub node: NodeArgs,
    /// The node's rules: `iptables-save` / `ip6tables-save` output or `nft
    /// -j list ruleset` output (the format is detected). Repeatable: give
    /// both to find leftovers of the other proxy mode.
    #[arg(
        help_heading = "Input",
        long = "rules",
        value_name = "FILE",
        required = true
    )]
    pub rules: Vec<PathBuf>,
    /// Whose rules to expect: iptables or nftables. Default: nftables when
    /// only nft dumps are given, else the proxy mode.
    #[arg(help_heading = "Output", long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// text or json.
    #[arg(
        help_heading = "Output",
        long,
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: String,
    /// Manifests: files, directories or `-` for stdin (as for `kproxy compile`).
    #[arg(help_heading = "Input", required_unless_present_any = ["kubeconfig", "context"], value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The live cluster as input (--kubeconfig, --context).
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
    /// --color auto|always|never.
    #[command(flatten)]
    pub color: crate::color::ColorArgs,
}

/// The rules read from dumps.
#[derive(Debug, Clone, Default)]
pub struct Dumps {
    /// Every table read, both families.
    pub ruleset: Ruleset,
    /// Whether an `iptables-save` dump was among them.
    pub iptables: bool,
    /// Whether an nft dump was among them.
    pub nft: bool,
    /// Notes (tables not read).
    pub notes: Vec<String>,
}

impl Dumps {
    /// The tables of one family.
    pub fn family(&self, f: IpFamily) -> Ruleset {
        Ruleset {
            tables: self
                .ruleset
                .tables
                .iter()
                .filter(|t| matches!(t.family, TableFamily::Iptables(x) | TableFamily::Nft(x) if x == f))
                .cloned()
                .collect(),
        }
    }
    /// The families present.
    pub fn families(&self) -> Vec<IpFamily> {
        let mut out = Vec::new();
        for t in &self.ruleset.tables {
            let (TableFamily::Iptables(f) | TableFamily::Nft(f)) = t.family;
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }
}

/// Reads dumps: `iptables-save` / `ip6tables-save` text or `nft -j list
/// ruleset` JSON, detected per file. An nft table that an iptables-save
/// dump also showed (`ip nat` of iptables-nft) is left out: it is the same
/// table, seen through nft.
pub fn read_dumps(files: &[PathBuf]) -> Result<Dumps> {
    let mut d = Dumps::default();
    let mut nft_tables = Vec::new();
    for f in files {
        let text = read(f)?;
        let name = f.display();
        if kproxy_nft::parse::looks_like_json(&text) {
            let dump = kproxy_nft::parse::parse_json(&text).with_context(|| format!("{name}"))?;
            d.nft = true;
            d.notes.extend(
                dump.skipped
                    .into_iter()
                    .map(|t| format!("{name}: table {t} not read (only ip and ip6 tables are)")),
            );
            nft_tables.extend(dump.ruleset.tables);
        } else if kproxy_iptables::parse::looks_like_save(&text) {
            let rs =
                kproxy_iptables::parse::parse(&text, None).with_context(|| format!("{name}"))?;
            d.iptables = true;
            d.ruleset.tables.extend(rs.tables);
        } else {
            bail!("{name}: neither iptables-save output nor `nft -j list ruleset` output");
        }
    }
    for t in nft_tables {
        let (TableFamily::Iptables(f) | TableFamily::Nft(f)) = t.family;
        let seen = d
            .ruleset
            .tables
            .iter()
            .any(|o| o.name == t.name && o.family == TableFamily::Iptables(f));
        if !seen {
            d.ruleset.tables.push(t);
        }
    }
    Ok(d)
}

fn read(f: &Path) -> Result<String> {
    if f.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(f).with_context(|| format!("{}: cannot read file", f.display()))
}

/// One family's check.
#[derive(Debug, Clone)]
pub struct FamilyCheck {
    /// The family.
    pub family: IpFamily,
    /// The report.
    pub report: CheckReport,
    /// For printing the differences.
    pub diff: FamilyDiff,
}

/// Checks already read dumps against an already loaded inventory.
pub fn check_dumps(
    args: &CheckArgs,
    dumps: &Dumps,
    inv: &Inventory,
) -> Result<(Backend, Vec<FamilyCheck>, Vec<String>)> {
    let backend = match (&args.backend, dumps.iptables, dumps.nft) {
        (None, false, true) => Some("nftables"),
        (b, _, _) => b.as_deref(),
    };
    let (backend, families, mut warnings) = ir_rulesets(&args.node, backend, true, inv)?;
    let mode = match backend {
        Backend::Iptables => Mode::Iptables,
        Backend::Nftables | Backend::NftablesJson => Mode::Nftables,
    };
    warnings.extend(inv.warnings.iter().cloned());
    warnings.extend(dumps.notes.iter().cloned());
    for f in dumps.families() {
        if !families.iter().any(|r| r.node.family == f) {
            warnings.push(format!(
                "the dump holds {f} rules, but only {} was compiled (--ip-family dual checks both)",
                families
                    .iter()
                    .map(|r| r.node.family.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let mut out = Vec::new();
    for r in &families {
        let env = TraceEnv::from_node(&r.node);
        // `check` takes the family's tables itself (without a copy when the
        // dump holds no other family).
        let report = check(
            &r.ruleset,
            &dumps.ruleset,
            mode,
            &env,
            r.node.family,
            Options::default().with_threads(crate::cpus()),
        )?;
        out.push(FamilyCheck {
            family: r.node.family,
            diff: FamilyDiff {
                family: r.node.family,
                mark_style: r.node.mark_style,
                before: r.layout,
                after: r.layout,
                diff: report.diff.clone(),
            },
            report,
        });
    }
    Ok((backend, out, warnings))
}

fn verdict_word(r: &CheckReport) -> &'static str {
    if r.drift() {
        "DRIFT"
    } else if r.textual_differences() {
        "equivalent, with textual differences"
    } else {
        "in sync"
    }
}

fn fates(f: &[Fate]) -> String {
    f.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_rule(
    table: TableFamily,
    family: IpFamily,
    chain: &str,
    r: &kproxy_core::ir::Rule,
) -> String {
    match table {
        TableFamily::Iptables(_) => {
            let mut s = format!("-A {chain}");
            match kproxy_iptables::print::print_rule(&mut s, chain, r, Default::default()) {
                Ok(()) => s,
                Err(_) => kproxy_core::trace::describe_rule(r),
            }
        }
        TableFamily::Nft(_) => kproxy_nft::print::print_rule(family, r, Default::default())
            .unwrap_or_else(|_| kproxy_core::trace::describe_rule(r)),
    }
}

/// The readable report.
pub fn text(backend: Backend, checks: &[FamilyCheck], dumps: &Dumps) -> String {
    let mut out = String::new();
    let mode = match backend {
        Backend::Iptables => "iptables",
        Backend::Nftables | Backend::NftablesJson => "nftables",
    };
    for c in checks {
        let r = &c.report;
        let _ = writeln!(out, "{} rules ({mode} mode): {}", c.family, verdict_word(r));
        if r.textual_differences() {
            out.push_str("\nkube-proxy's rules (+ on the node only, - missing on the node):\n");
            out.push_str(&crate::diff::text(backend, std::slice::from_ref(&c.diff)));
        }
        if !r.stale.is_empty() {
            out.push_str("\nstale objects:\n");
            for s in &r.stale {
                let why = match s.kind {
                    StaleKind::Stale => "not produced by the compile".to_string(),
                    StaleKind::OtherMode => {
                        let other = if mode == "iptables" {
                            "nftables"
                        } else {
                            "iptables"
                        };
                        format!("left over from {other} mode")
                    }
                };
                let svc = s
                    .service
                    .as_ref()
                    .map(|s| format!(" (service {s})"))
                    .unwrap_or_default();
                if s.what == "table" {
                    let _ = writeln!(out, "  nft table {}: {why}", s.name);
                } else {
                    let _ = writeln!(out, "  {} {} {}{svc}: {why}", s.table, s.what, s.name);
                }
            }
        }
        if !r.foreign_in_path.is_empty() {
            out.push_str("\nforeign rules in kube-proxy's path:\n");
            let family_of = |table: &str| {
                dumps
                    .family(c.family)
                    .table(table)
                    .map(|t| t.family)
                    .unwrap_or(TableFamily::Iptables(c.family))
            };
            for f in &r.foreign_in_path {
                let at = f.index.map(|i| format!(" #{}", i + 1)).unwrap_or_default();
                let rule = f
                    .rule
                    .as_ref()
                    .map(|x| {
                        format!(
                            ": {}",
                            print_rule(family_of(&f.table), c.family, &f.chain, x)
                        )
                    })
                    .unwrap_or_default();
                let _ = writeln!(out, "  {} {}{at}{rule} ({})", f.table, f.chain, f.reason);
            }
        }
        let e = &r.equivalence;
        let _ = write!(
            out,
            "\nbehaviour: {} packet classes traced{}: ",
            e.classes,
            if e.complete { "" } else { " (a spread subset)" }
        );
        if e.differences.is_empty() {
            out.push_str("every packet gets the same outcome\n");
        } else {
            let _ = writeln!(out, "{} treated differently, e.g.:", e.differences.len());
            for d in e.differences.iter().take(5) {
                let p = &d.packet;
                let _ = writeln!(
                    out,
                    "  {} {} -> {}:{} from {}\n    compiled: {}\n    node:     {}",
                    p.protocol,
                    p.src,
                    p.dst,
                    p.dst_port,
                    p.origin,
                    fates(&d.left),
                    fates(&d.right)
                );
            }
        }
        if !r.other_tables.is_empty() {
            let _ = writeln!(
                out,
                "\nother tables (not kube-proxy's): {}",
                r.other_tables.join(", ")
            );
        }
    }
    out
}

/// The JSON document.
pub fn to_json(backend: Backend, checks: &[FamilyCheck]) -> serde_json::Value {
    let families: Vec<serde_json::Value> = checks
        .iter()
        .map(|c| {
            let r = &c.report;
            json!({
                "family": c.family.as_k8s(),
                "status": verdict_word(r),
                "drift": r.drift(),
                "textual_differences": r.textual_differences(),
                "differences": crate::diff::to_json(backend, std::slice::from_ref(&c.diff)),
                "stale": r.stale.iter().map(|s| json!({
                    "kind": match s.kind { StaleKind::Stale => "stale", StaleKind::OtherMode => "other-mode" },
                    "table": s.table, "what": s.what, "name": s.name,
                    "service": s.service.as_ref().map(|s| s.to_string()),
                })).collect::<Vec<_>>(),
                "foreign_in_path": r.foreign_in_path.iter().map(|f| json!({
                    "table": f.table, "chain": f.chain, "index": f.index,
                    "rule": f.rule.as_ref().map(kproxy_core::trace::describe_rule),
                    "reason": f.reason,
                })).collect::<Vec<_>>(),
                "behaviour": {
                    "classes": r.equivalence.classes,
                    "complete": r.equivalence.complete,
                    "differences": r.equivalence.differences.iter().map(|d| json!({
                        "packet": {
                            "from": d.packet.origin.as_str(),
                            "src": d.packet.src.to_string(),
                            "dst": std::net::SocketAddr::new(d.packet.dst, d.packet.dst_port).to_string(),
                            "protocol": d.packet.protocol.as_lower(),
                        },
                        "compiled": fates(&d.left),
                        "node": fates(&d.right),
                    })).collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    json!({ "families": families })
}

/// The result of `kproxy check`: the output, and whether drift was found
/// (exit status 1).
#[derive(Debug, Clone, Default)]
pub struct CheckOutput {
    /// What to print.
    pub output: Output,
    /// Drift was found.
    pub drift: bool,
}

/// Runs `kproxy check` from its arguments.
pub fn run(args: &CheckArgs) -> Result<CheckOutput> {
    let json_out = match args.output.as_str() {
        "text" => false,
        "json" => true,
        other => bail!("--output: {other:?} is not text or json"),
    };
    // The dumps are parsed while the cluster state is read.
    let (dumps, inv) = std::thread::scope(|s| {
        let dumps = s.spawn(|| read_dumps(&args.rules));
        let inv = crate::live::load_input(&args.live, &args.node, &args.paths);
        let dumps = dumps
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        Ok::<_, anyhow::Error>((dumps?, inv?))
    })?;
    let (backend, checks, warnings) = check_dumps(args, &dumps, &inv)?;
    let stdout = if json_out {
        let mut s = serde_json::to_string_pretty(&to_json(backend, &checks))?;
        s.push('\n');
        s
    } else {
        crate::color::paint(text(backend, &checks, &dumps), args.color.when)
    };
    Ok(CheckOutput {
        drift: checks.iter().any(|c| c.report.drift()),
        output: Output { stdout, warnings },
    })
}
