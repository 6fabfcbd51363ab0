//! `kproxy diff`: what changes on the node between two cluster states.
//!
//! Both states are compiled with the same options; the rule IR of each
//! family is compared ([`kproxy_core::diff`]) and the changes are printed
//! grouped by Service, node-level changes last, with rules spelled in the
//! backend's syntax. `--output json` gives the same, plus the minimal update
//! (chains to create, rewrite and delete; elements to add and remove).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Result;
use clap::{Args, ValueEnum};
use kproxy_core::convert::Inventory;
use kproxy_core::diff::{
    ChainDiff, ContainerDiff, ContainerKind, EditOp, ElementOp, ElementUpdate, RulesetDiff, Status,
    TableDiff, Update, diff, diff_with_owners,
};
use kproxy_core::ir::{Element, MapValue, Rule, Ruleset, TableFamily};
use kproxy_core::model::{IpFamily, MarkStyle, NamespacedName};
use kproxy_core::owners::Owners;
use serde_json::{Value, json};

use crate::compile::{Backend, FamilyRules, Layout, Output, ir_rulesets, ir_rulesets_owned};
use crate::settings::NodeArgs;

/// Output formats of `kproxy diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DiffFormat {
    /// Human-readable text, grouped by Service.
    #[default]
    Text,
    /// JSON: the changes grouped by Service, and the minimal update.
    Json,
}

/// Arguments of `kproxy diff`.
#[derive(Args, Debug, Clone)]
pub struct DiffArgs {
    /// Node-level configuration (applies to both states; a state's own
    /// Node and --config file are read from its manifests as usual).
    #[command(flatten)]
    pub node: NodeArgs,
    /// The backend: iptables or nftables. Default: the proxy mode.
    #[arg(help_heading = "Output", long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Include the built-in chains' jump rules (iptables).
    #[arg(help_heading = "Output", long)]
    pub standalone: bool,
    /// Output format.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = DiffFormat::Text)]
    pub output: DiffFormat,
    /// The old cluster state: files, directories or `-`; `kube:` (or
    /// `kube:CONTEXT`) for the live cluster.
    #[arg(help_heading = "Input", long, required = true, num_args = 1.., value_name = "PATH")]
    pub before: Vec<PathBuf>,
    /// The new cluster state: files, directories or `-`; `kube:` (or
    /// `kube:CONTEXT`) for the live cluster.
    #[arg(help_heading = "Input", long, required = true, num_args = 1.., value_name = "PATH")]
    pub after: Vec<PathBuf>,
    /// The kube-proxy release of the old state (default:
    /// --kube-proxy-version): what changes when kube-proxy is upgraded.
    #[arg(help_heading = "Output", long, value_name = "X.Y")]
    pub before_version: Option<String>,
    /// The kube-proxy release of the new state (default: --kube-proxy-version).
    #[arg(help_heading = "Output", long, value_name = "X.Y")]
    pub after_version: Option<String>,
    /// The backend of the old state (default: --backend): what changes
    /// when kube-proxy switches from iptables to nftables.
    #[arg(help_heading = "Output", long, value_name = "BACKEND")]
    pub before_backend: Option<String>,
    /// The backend of the new state (default: --backend).
    #[arg(help_heading = "Output", long, value_name = "BACKEND")]
    pub after_backend: Option<String>,
    /// The live cluster as input (--kubeconfig, --context).
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
    /// --color auto|always|never.
    #[command(flatten)]
    pub color: crate::color::ColorArgs,
}

/// The diff of one family.
#[derive(Debug, Clone)]
pub struct FamilyDiff {
    /// The family.
    pub family: IpFamily,
    /// How marks are spelled (for printing rules).
    pub mark_style: MarkStyle,
    /// The layout of the old state.
    pub before: Layout,
    /// The layout of the new state.
    pub after: Layout,
    /// The difference.
    pub diff: RulesetDiff,
}

/// Compiles both states and compares them family by family.
pub fn family_diffs(
    args: &DiffArgs,
    before: &Inventory,
    after: &Inventory,
) -> Result<(Backend, Vec<FamilyDiff>, Vec<String>)> {
    compare(
        || compile_side(args, Side::Before, Cow::Borrowed(before)),
        || compile_side(args, Side::After, Cow::Borrowed(after)),
    )
}

/// Which state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

/// One state compiled: its backend, its rules per family, and its
/// warnings (the inventory's, then the resolver's; labelled).
#[derive(Debug)]
struct Compiled {
    backend: Backend,
    families: Vec<FamilyRules>,
    warnings: Vec<String>,
}

/// Compiles one state with its side's options (an owned inventory is freed
/// as soon as it is planned).
fn compile_side(args: &DiffArgs, side: Side, inv: Cow<'_, Inventory>) -> Result<Compiled> {
    let (version, backend, label) = match side {
        Side::Before => (&args.before_version, &args.before_backend, "before"),
        Side::After => (&args.after_version, &args.after_backend, "after"),
    };
    let mut node = args.node.clone();
    if version.is_some() {
        node.kube_proxy_version.clone_from(version);
    }
    let backend = backend.as_deref().or(args.backend.as_deref());
    let label = |w: &String| format!("{label}: {w}");
    let (mut labelled, (backend, families, warnings)) = match inv {
        Cow::Borrowed(inv) => (
            inv.warnings.iter().map(label).collect::<Vec<_>>(),
            ir_rulesets(&node, backend, args.standalone, inv)?,
        ),
        Cow::Owned(mut inv) => (
            std::mem::take(&mut inv.warnings)
                .iter()
                .map(label)
                .collect(),
            ir_rulesets_owned(&node, backend, args.standalone, inv)?,
        ),
    };
    labelled.extend(warnings.iter().map(label));
    let warnings = labelled;
    Ok(Compiled {
        backend,
        families,
        warnings,
    })
}

/// Compiles the two states (`before` and `after` each give one) and
/// compares them family by family.
fn compare(
    before: impl FnOnce() -> Result<Compiled> + Send,
    after: impl FnOnce() -> Result<Compiled>,
) -> Result<(Backend, Vec<FamilyDiff>, Vec<String>)> {
    // The two sides compile at the same time (the machine's second core).
    let (b, a) = std::thread::scope(|s| {
        let b = s.spawn(before);
        let a = after();
        let b = b.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (b, a)
    });
    let (b, a) = (b?, a?);
    let out = compare_compiled(&b, &a, None);
    let mut warnings = b.warnings;
    warnings.extend(a.warnings);
    // Freeing the two rulesets (millions of objects) takes both cores too.
    let (fb, fa) = (b.families, a.families);
    std::thread::scope(|s| {
        s.spawn(move || drop(fb));
        drop(fa);
    });
    Ok((a.backend, out, warnings))
}

/// Compares two compiled states family by family; `owners`: those of
/// each side's families, when already worked out.
fn compare_compiled(
    b: &Compiled,
    a: &Compiled,
    owners: Option<(&[Owners<'_>], &[Owners<'_>])>,
) -> Vec<FamilyDiff> {
    let (fb, fa) = (&b.families, &a.families);
    let default_layout = |v: &[FamilyRules], other: &[FamilyRules]| {
        v.first()
            .or(other.first())
            .map_or(Layout::Iptables(Default::default()), |r| r.layout)
    };
    let (layout_b, layout_a) = (default_layout(fb, fa), default_layout(fa, fb));
    // By reference: a 10k-Service ruleset is hundreds of MB to copy.
    fn find(v: &[FamilyRules], f: IpFamily) -> Option<(usize, &FamilyRules)> {
        v.iter().enumerate().find(|(_, r)| r.node.family == f)
    }
    let mut families: Vec<IpFamily> = fa.iter().map(|r| r.node.family).collect();
    for r in fb {
        if !families.contains(&r.node.family) {
            families.push(r.node.family);
        }
    }
    let empty = Ruleset::default();
    let nobody = Owners::default();
    families
        .into_iter()
        .map(|f| {
            let b = find(fb, f);
            let a = find(fa, f);
            let (rb, ra) = (b.map(|(_, r)| r), a.map(|(_, r)| r));
            let mark_style = ra.or(rb).map(|r| r.node.mark_style).unwrap_or_default();
            let (sb, sa) = (
                rb.map_or(&empty, |r| &r.ruleset),
                ra.map_or(&empty, |r| &r.ruleset),
            );
            let diff = match owners {
                Some((ob, oa)) => {
                    let ob = b.and_then(|(i, _)| ob.get(i)).unwrap_or(&nobody);
                    let oa = a.and_then(|(i, _)| oa.get(i)).unwrap_or(&nobody);
                    diff_with_owners(sb, sa, ob, oa)
                }
                None => diff(sb, sa),
            };
            FamilyDiff {
                family: f,
                mark_style,
                before: rb.map_or(layout_b, |r| r.layout),
                after: ra.map_or(layout_a, |r| r.layout),
                diff,
            }
        })
        .collect()
}

/// Runs `kproxy diff` on two already loaded inventories.
pub fn diff_states(args: &DiffArgs, before: &Inventory, after: &Inventory) -> Result<Output> {
    let _stage = spinner(before, after);
    let (backend, families, warnings) = family_diffs(args, before, after)?;
    report(args, backend, &families, warnings)
}

/// The progress spinner of the compile and compare stage.
fn spinner(before: &Inventory, after: &Inventory) -> crate::progress::Stage {
    crate::progress::Stage::spinner(&format!(
        "compiling and comparing {} and {} Services",
        before.state.services.len(),
        after.state.services.len()
    ))
}

/// The output of `kproxy diff` in the chosen format.
fn report(
    args: &DiffArgs,
    backend: Backend,
    families: &[FamilyDiff],
    warnings: Vec<String>,
) -> Result<Output> {
    let stdout = match args.output {
        DiffFormat::Text => crate::color::paint(text(backend, families), args.color.when),
        DiffFormat::Json => {
            let mut s = serde_json::to_string_pretty(&to_json(backend, families))?;
            s.push('\n');
            s
        }
    };
    Ok(Output { stdout, warnings })
}

/// Runs `kproxy diff` from its arguments.
pub fn run(args: &DiffArgs) -> Result<Output> {
    // Each side is compiled on the thread that loaded it, as soon as it is
    // loaded (its inventory, as big as its rules, freed once planned), and
    // the owners of its rules are worked out there too. The owners borrow
    // the rules, so these live here, out of the threads: set once each.
    let storage: [OnceLock<Compiled>; 2] = Default::default();
    let slots = &storage;
    let ((b, ob), (a, oa)) = crate::live::load_sides_then(
        &args.live,
        &args.node,
        &args.before,
        &args.after,
        move |old, inv| {
            let _stage = crate::progress::Stage::spinner(&format!(
                "compiling {} Services",
                inv.state.services.len()
            ));
            let side = if old { Side::Before } else { Side::After };
            let compiled = compile_side(args, side, Cow::Owned(inv))?;
            let compiled = slots[usize::from(!old)].get_or_init(move || compiled);
            let owners: Vec<Owners<'_>> = compiled
                .families
                .iter()
                .map(|f| Owners::of(&f.ruleset))
                .collect();
            Ok((compiled, owners))
        },
    )?;
    let _stage = crate::progress::Stage::spinner("comparing");
    let families = compare_compiled(b, a, Some((&ob, &oa)));
    let mut warnings = b.warnings.clone();
    warnings.extend(a.warnings.iter().cloned());
    let backend = a.backend;
    drop((ob, oa));
    crate::oneshot::dispose(storage);
    report(args, backend, &families, warnings)
}

/// Spells rules and elements in the syntax of the table they belong to
/// (the two states may come from different backends and releases).
struct Printer {
    family: IpFamily,
    mark_style: MarkStyle,
    before: Layout,
    after: Layout,
}

impl Printer {
    fn new(f: &FamilyDiff) -> Self {
        Self {
            family: f.family,
            mark_style: f.mark_style,
            before: f.before,
            after: f.after,
        }
    }

    /// A rule of `table`'s kind, from the old (`old`) or the new state.
    fn rule(&self, table: TableFamily, chain: &str, rule: &Rule, old: bool) -> String {
        let layout = if old { self.before } else { self.after };
        match table {
            TableFamily::Iptables(_) => {
                let mut s = format!("-A {chain}");
                let opts = kproxy_iptables::PrintOptions {
                    mark_style: self.mark_style,
                    profile: layout.iptables(),
                };
                match kproxy_iptables::print::print_rule(&mut s, chain, rule, opts) {
                    Ok(()) => s,
                    Err(kproxy_iptables::IptablesError::Unsupported { what, .. }) => {
                        format!("{rule:?} ({what})")
                    }
                    Err(e) => format!("{rule:?} ({e})"),
                }
            }
            TableFamily::Nft(_) => {
                let opts = kproxy_nft::PrintOptions {
                    mark_style: self.mark_style,
                    ..Default::default()
                };
                kproxy_nft::print::print_rule(self.family, rule, opts)
                    .unwrap_or_else(|e| format!("{rule:?} ({e})"))
            }
        }
    }

    fn element(&self, e: &Element, value: Option<&MapValue>) -> String {
        let mut s = kproxy_nft::print::element_key(e);
        if let Some(MapValue::Verdict(v)) = value {
            let opts = kproxy_nft::PrintOptions {
                mark_style: self.mark_style,
                ..Default::default()
            };
            let v = kproxy_nft::print::print_verdict(self.family, v, opts)
                .unwrap_or_else(|e| format!("{v:?} ({e})"));
            let _ = write!(s, " : {v}");
        }
        if let Some(c) = &e.comment {
            let _ = write!(s, " comment {}", kproxy_nft::print::quote(c));
        }
        s
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Added => "added",
        Status::Removed => "removed",
        Status::Changed => "changed",
    }
}

fn kind_word(k: ContainerKind) -> &'static str {
    match k {
        ContainerKind::Set => "set",
        ContainerKind::Map => "map",
    }
}

fn group_name(s: &Option<NamespacedName>) -> String {
    match s {
        Some(s) => format!("service {s}"),
        None => "node".into(),
    }
}

/// The diff split by Service: Services first (sorted), node-level changes last.
fn groups(d: &RulesetDiff) -> Vec<(Option<NamespacedName>, RulesetDiff)> {
    let mut map = d.by_service();
    let node = map.remove(&None);
    let mut g: Vec<_> = map.into_iter().collect();
    g.extend(node.map(|n| (None, n)));
    g
}

/// The human-readable report.
pub fn text(backend: Backend, families: &[FamilyDiff]) -> String {
    let _ = backend;
    let mut out = String::new();
    let several = families.len() > 1;
    for f in families {
        let p = Printer::new(f);
        if several {
            let _ = writeln!(out, "# {}", f.family);
        }
        if f.before != f.after {
            let _ = writeln!(
                out,
                "# kube-proxy {} -> {}",
                f.before.describe(),
                f.after.describe()
            );
        }
        if f.diff.is_empty() {
            out.push_str("no changes\n");
            continue;
        }
        for (g, part) in groups(&f.diff) {
            let _ = writeln!(out, "{}:", group_name(&g));
            for t in &part.tables {
                table_text(&mut out, &p, t, g.is_none());
            }
        }
        let _ = writeln!(out, "summary: {}", summary(&f.diff));
    }
    out
}

fn table_text(out: &mut String, p: &Printer, t: &TableDiff, node: bool) {
    if node && t.status != Status::Changed {
        let _ = writeln!(out, "  table {}: {}", t.table, status_word(t.status));
    }
    for c in &t.chains {
        chain_text(out, p, t, c);
    }
    for c in &t.containers {
        container_text(out, p, &t.table, c);
    }
    for (names, word) in [
        (&t.counters_added, "added"),
        (&t.counters_removed, "removed"),
    ] {
        for n in names {
            let _ = writeln!(out, "  {} counter {n}: {word}", t.table);
        }
    }
}

fn chain_text(out: &mut String, p: &Printer, t: &TableDiff, c: &ChainDiff) {
    let _ = writeln!(
        out,
        "  {} chain {}: {}",
        t.table,
        c.chain,
        status_word(c.status)
    );
    for e in &c.edits {
        let sign = match e.op {
            EditOp::Delete => '-',
            EditOp::Insert => '+',
        };
        let _ = writeln!(
            out,
            "    {sign} #{} {}",
            e.index + 1,
            p.rule(t.family, c.chain.as_str(), &e.rule, e.op == EditOp::Delete)
        );
    }
}

fn container_text(out: &mut String, p: &Printer, table: &str, c: &ContainerDiff) {
    let _ = writeln!(
        out,
        "  {table} {} {}: {}",
        kind_word(c.kind),
        c.name,
        status_word(c.status)
    );
    for e in &c.elements {
        let line = match e.op {
            ElementOp::Add => format!("+ {}", p.element(&e.element, e.after.as_ref())),
            ElementOp::Remove => format!("- {}", p.element(&e.element, e.before.as_ref())),
            ElementOp::Change => format!(
                "~ {} (was {})",
                p.element(&e.element, e.after.as_ref()),
                p.element(&e.element, e.before.as_ref())
            ),
        };
        let _ = writeln!(out, "    {line}");
    }
}

/// `2 chains added, 1 changed; 3 elements added`.
fn summary(d: &RulesetDiff) -> String {
    let mut chains = [0usize; 3];
    let mut elements = [0usize; 3];
    let idx = |s: Status| match s {
        Status::Added => 0,
        Status::Removed => 1,
        Status::Changed => 2,
    };
    for t in &d.tables {
        for c in &t.chains {
            chains[idx(c.status)] += 1;
        }
        for c in &t.containers {
            for e in &c.elements {
                elements[match e.op {
                    ElementOp::Add => 0,
                    ElementOp::Remove => 1,
                    ElementOp::Change => 2,
                }] += 1;
            }
        }
    }
    let part = |what: &str, n: [usize; 3]| {
        let words: Vec<String> = ["added", "removed", "changed"]
            .iter()
            .zip(n)
            .filter(|(_, n)| *n > 0)
            .map(|(w, n)| format!("{n} {w}"))
            .collect();
        (!words.is_empty()).then(|| format!("{what}: {}", words.join(", ")))
    };
    let parts: Vec<String> = [part("chains", chains), part("elements", elements)]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        "tables only".into()
    } else {
        parts.join("; ")
    }
}

fn backend_word(b: Backend) -> &'static str {
    match b {
        Backend::Iptables => "iptables",
        Backend::Nftables | Backend::NftablesJson => "nftables",
    }
}

fn family_json(f: TableFamily) -> Value {
    match f {
        TableFamily::Iptables(f) | TableFamily::Nft(f) => json!(f.to_string()),
    }
}

/// The JSON report.
pub fn to_json(backend: Backend, families: &[FamilyDiff]) -> Value {
    let fams: Vec<Value> = families
        .iter()
        .map(|f| {
            let p = Printer::new(f);
            let services: Vec<Value> = groups(&f.diff)
                .into_iter()
                .map(|(g, part)| {
                    json!({
                        "service": g.map(|s| s.to_string()),
                        "tables": part.tables.iter().map(|t| table_json(&p, t)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut v = json!({
                "family": f.family.to_string(),
                "changed": !f.diff.is_empty(),
                "services": services,
                "update": update_json(&p, &f.diff.update()),
            });
            // Comparing two layouts (an upgrade, a backend switch): name them.
            if let (true, Some(o)) = (f.before != f.after, v.as_object_mut()) {
                o.insert("before_layout".into(), json!(f.before.describe()));
                o.insert("after_layout".into(), json!(f.after.describe()));
            }
            v
        })
        .collect();
    json!({ "backend": backend_word(backend), "families": fams })
}

fn table_json(p: &Printer, t: &TableDiff) -> Value {
    json!({
        "table": t.table,
        "family": family_json(t.family),
        "status": status_word(t.status),
        "chains": t.chains.iter().map(|c| json!({
            "chain": c.chain.as_str(),
            "service": c.service.as_ref().map(|s| s.to_string()),
            "status": status_word(c.status),
            "edits": c.edits.iter().map(|e| json!({
                "op": match e.op { EditOp::Delete => "delete", EditOp::Insert => "insert" },
                "index": e.index,
                "rule": p.rule(t.family, c.chain.as_str(), &e.rule, e.op == EditOp::Delete),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "containers": t.containers.iter().map(|c| json!({
            "name": c.name,
            "kind": kind_word(c.kind),
            "status": status_word(c.status),
            "elements": c.elements.iter().map(|e| json!({
                "op": match e.op { ElementOp::Add => "add", ElementOp::Remove => "remove", ElementOp::Change => "change" },
                "element": p.element(&e.element, e.after.as_ref().or(e.before.as_ref())),
                "before": e.before.as_ref().map(|v| p.element(&e.element, Some(v))),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "counters_added": t.counters_added,
        "counters_removed": t.counters_removed,
    })
}

fn update_json(p: &Printer, u: &Update) -> Value {
    let elems = |v: &[ElementUpdate]| -> Vec<Value> {
        v.iter()
            .map(|e| json!({ "container": e.container, "element": p.element(&e.element, e.value.as_ref()) }))
            .collect()
    };
    let names = |v: &[kproxy_core::names::ChainName]| -> Vec<String> {
        v.iter().map(|c| c.as_str().to_string()).collect()
    };
    let containers = |v: &[(ContainerKind, String)]| -> Vec<Value> {
        v.iter()
            .map(|(k, n)| json!({ "kind": kind_word(*k), "name": n }))
            .collect()
    };
    Value::Array(
        u.tables
            .iter()
            .map(|t| {
                json!({
                    "table": t.table,
                    "family": family_json(t.family),
                    "create_table": t.create_table,
                    "delete_table": t.delete_table,
                    "create_chains": names(&t.create_chains),
                    "create_containers": containers(&t.create_containers),
                    "create_counters": t.create_counters,
                    "remove_elements": elems(&t.remove_elements),
                    "add_elements": elems(&t.add_elements),
                    "rewrite_chains": names(&t.rewrite_chains),
                    "delete_chains": names(&t.delete_chains),
                    "delete_containers": containers(&t.delete_containers),
                    "delete_counters": t.delete_counters,
                })
            })
            .collect(),
    )
}
