//! `kproxy compile`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use kproxy_core::config::ProxyMode;
use kproxy_core::convert::{Inventory, inventory};
use kproxy_core::model::IpFamily;
use kproxy_core::plan::plan_release;
use kproxy_core::profile::{KubeProxyVersion, NftablesProfile};

use crate::progress::Stage;
use crate::settings::{NodeArgs, resolve};
use crate::sources::parse_sources;

/// Arguments of `kproxy compile`.
#[derive(Args, Debug, Clone)]
pub struct CompileArgs {
    /// Node-level configuration.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Also print what kube-proxy sets up outside its restore payload (the
    /// jumps from the built-in chains, the canary chains), so that the output
    /// loads into an empty network namespace with plain `iptables-restore`.
    #[arg(help_heading = "Output", long)]
    pub standalone: bool,
    /// The backend: iptables, nftables (`nft -f` text) or nftables-json
    /// (`nft -j -f` batch). Default: the proxy mode.
    #[arg(help_heading = "Output", long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Manifests: files, directories (*.yaml, *.yml, *.json, recursively) or
    /// `-` for stdin. Multi-document YAML, JSON and `kind: List` are read.
    #[arg(help_heading = "Input", required_unless_present_any = ["kubeconfig", "context"], value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The live cluster as input (--kubeconfig, --context).
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
}

/// What a command produced: its output and the notes for stderr.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Warnings and notes, one line each.
    pub warnings: Vec<String>,
}

/// Reads and converts every PATH. Unparsable documents are errors; invalid
/// objects are skipped with a warning, as kube-proxy skips them.
pub fn load(paths: &[PathBuf]) -> Result<Inventory> {
    let objects = parse_sources(paths)?;
    let _stage = Stage::spinner("converting");
    Ok(inventory(objects))
}

/// The backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables-restore input.
    Iptables,
    /// `nft -f` input (the transaction of kube-proxy's first full sync).
    Nftables,
    /// One `nft -j -f` batch.
    NftablesJson,
}

fn backend(args: &CompileArgs, mode: &ProxyMode) -> Result<Backend> {
    backend_named(args.backend.as_deref(), mode)
}

/// The backend `--backend NAME` selects, else the one of the proxy mode.
pub fn backend_named(name: Option<&str>, mode: &ProxyMode) -> Result<Backend> {
    match name {
        Some("iptables") => Ok(Backend::Iptables),
        Some("nftables") => Ok(Backend::Nftables),
        Some("nftables-json") => Ok(Backend::NftablesJson),
        Some(other) => {
            bail!("--backend: unknown backend {other:?} (iptables, nftables, nftables-json)")
        }
        None => match mode {
            ProxyMode::Iptables => Ok(Backend::Iptables),
            ProxyMode::Nftables => Ok(Backend::Nftables),
            ProxyMode::Ipvs => bail!("proxy mode ipvs is not supported (iptables, nftables)"),
            ProxyMode::Other(m) => {
                bail!("proxy mode {m:?} is not supported (iptables, nftables)")
            }
        },
    }
}

/// A backend's rule layout: which release's rules it writes (core owns it,
/// with the node configuration each mode reads).
pub use kproxy_core::profile::Layout;

/// A [`Layout`] as the agent's incremental compiler lays it out, by the
/// backend's own layouter (either backend, as `--proxy-mode` and
/// `--kube-proxy-version` choose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLayout(pub Layout);

impl kproxy_core::sync::Layouter for AgentLayout {
    type Error = kproxy_nft::NftError;

    fn release(&self) -> kproxy_core::plan::Release {
        self.0.release()
    }

    fn layout(
        &self,
        plan: &kproxy_core::plan::Plan,
    ) -> Result<kproxy_core::ir::Ruleset, Self::Error> {
        match self.0 {
            Layout::Iptables(p) => kproxy_iptables::sync::Layout(p)
                .layout(plan)
                .map_err(|e| match e {}),
            Layout::Nftables(p) => kproxy_nft::sync::Layout(p).layout(plan),
        }
    }

    fn layout_by_owner(
        &self,
        plan: &kproxy_core::plan::Plan,
        fixed: &kproxy_core::sync::compiler::FixedChains,
    ) -> Result<
        (
            kproxy_core::ir::Ruleset,
            Option<kproxy_core::sync::compiler::SharesByChain>,
        ),
        Self::Error,
    > {
        match self.0 {
            Layout::Iptables(p) => kproxy_iptables::sync::Layout(p)
                .layout_by_owner(plan, fixed)
                .map_err(|e| match e {}),
            Layout::Nftables(p) => kproxy_nft::sync::Layout(p).layout_by_owner(plan, fixed),
        }
    }

    fn replaces_containers(&self) -> bool {
        match self.0 {
            Layout::Iptables(p) => kproxy_iptables::sync::Layout(p).replaces_containers(),
            Layout::Nftables(p) => kproxy_nft::sync::Layout(p).replaces_containers(),
        }
    }
}

/// The layout `--kube-proxy-version` selects for `backend`, and notes for
/// stderr. Errors name the supported releases.
pub fn layout(node_args: &NodeArgs, backend: Backend) -> Result<(Layout, Vec<String>)> {
    let version: KubeProxyVersion = match node_args.kube_proxy_version.as_deref() {
        Some(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("--kube-proxy-version: {e}"))?,
        None => KubeProxyVersion::Current,
    };
    let mut notes = Vec::new();
    let layout = match backend {
        Backend::Iptables => Layout::Iptables(
            version
                .iptables_profile()
                .map_err(|e| anyhow::anyhow!("--kube-proxy-version: {e}"))?,
        ),
        Backend::Nftables | Backend::NftablesJson => {
            let p = version
                .nftables_profile()
                .map_err(|e| anyhow::anyhow!("--kube-proxy-version: {e}"))?;
            if version.minor().is_some_and(|m| (29..=32).contains(&m)) {
                notes.push(format!(
                    "kube-proxy {version}: the pre-1.36 nftables layout is modelled on 1.33-1.35; \
                     1.29-1.32 differ in details (base chain priorities, dport in the masquerade rule, cluster-ips-check)"
                ));
            }
            Layout::Nftables(p)
        }
    };
    Ok((layout, notes))
}

/// The rule IR of one family, as a backend builds it.
#[derive(Debug, Clone)]
pub struct FamilyRules {
    /// The node configuration the backend compiled for.
    pub node: kproxy_core::model::NodeConfig,
    /// The tables.
    pub ruleset: kproxy_core::ir::Ruleset,
    /// The layout the rules follow.
    pub layout: Layout,
}

/// The IR rulesets the chosen backend writes, one per family (primary
/// first), for the tracer and other analyses of the rules. `backend` is a
/// `--backend` value (`nftables-json` is the same IR as `nftables`);
/// `standalone` adds iptables' built-in chains and their jumps (the tracer
/// needs them). Returns the backend and the resolver's warnings too.
pub fn ir_rulesets(
    node_args: &NodeArgs,
    backend: Option<&str>,
    standalone: bool,
    inv: &Inventory,
) -> Result<(Backend, Vec<FamilyRules>, Vec<String>)> {
    let (backend, targets, warnings) = family_targets(node_args, backend, inv)?;
    let mut out = Vec::new();
    for target in targets {
        out.push(lay_out(plan_target(inv, target), standalone)?);
    }
    Ok((backend, out, warnings))
}

/// [`ir_rulesets`] of an inventory needed no more: it is freed as soon as
/// every family is planned, before the rules are laid out (a 10k-Service
/// inventory takes about as much memory as its rules).
pub fn ir_rulesets_owned(
    node_args: &NodeArgs,
    backend: Option<&str>,
    standalone: bool,
    inv: Inventory,
) -> Result<(Backend, Vec<FamilyRules>, Vec<String>)> {
    let (backend, targets, warnings) = family_targets(node_args, backend, &inv)?;
    let plans: Vec<_> = targets.into_iter().map(|t| plan_target(&inv, t)).collect();
    drop(inv);
    let out = plans
        .into_iter()
        .map(|p| lay_out(p, standalone))
        .collect::<Result<Vec<_>>>()?;
    Ok((backend, out, warnings))
}

/// A family's plan, with its target.
type Planned = (kproxy_core::plan::Plan, Target);

fn plan_target(inv: &Inventory, (node, layout): Target) -> Planned {
    (
        plan_release(&inv.state, &node, layout.release()),
        (node, layout),
    )
}

fn lay_out((plan, (node, layout)): Planned, standalone: bool) -> Result<FamilyRules> {
    Ok(FamilyRules {
        ruleset: layout_plan(&plan, layout, standalone)?,
        node,
        layout,
    })
}

/// What to compile for one family: the node configuration as the backend
/// reads it, and the layout it writes.
pub type Target = (kproxy_core::model::NodeConfig, Layout);

/// The [`Target`] of every family (primary first); the backend and the
/// resolver's warnings too.
pub fn family_targets(
    node_args: &NodeArgs,
    backend: Option<&str>,
    inv: &Inventory,
) -> Result<(Backend, Vec<Target>, Vec<String>)> {
    let resolved = resolve(node_args, inv)?;
    let backend = backend_named(backend, &resolved.mode)?;
    let (layout, notes) = layout(node_args, backend)?;
    let targets = resolved
        .nodes
        .iter()
        .map(|node| (layout.node_config(node).into_owned(), layout))
        .collect();
    let mut warnings = resolved.warnings;
    warnings.extend(notes);
    Ok((backend, targets, warnings))
}

/// Lays out `plan` (planned with [`Layout::release`]) in `layout`;
/// `standalone` adds iptables' built-in chains and their jumps.
pub fn layout_plan(
    plan: &kproxy_core::plan::Plan,
    layout: Layout,
    standalone: bool,
) -> Result<kproxy_core::ir::Ruleset> {
    Ok(match layout {
        Layout::Iptables(profile) => kproxy_iptables::build(
            plan,
            kproxy_iptables::LayoutOptions {
                standalone,
                profile,
            },
        ),
        Layout::Nftables(profile) => kproxy_nft::ruleset_profile(plan, profile)?,
    })
}

/// Runs `kproxy compile` on an already loaded inventory.
pub fn compile(args: &CompileArgs, inv: &Inventory) -> Result<Output> {
    let mut warnings = Vec::new();
    let mut stdout = String::new();
    compile_into(
        args,
        inv,
        &mut |w| warnings.push(w.to_string()),
        &mut TextOut::Text(&mut stdout),
    )?;
    Ok(Output { stdout, warnings })
}

/// Where [`compile_into`] puts the rules: a writer, or a string that takes
/// a family's text as it is (one family: no copy of tens of MB).
enum TextOut<'a> {
    Writer(&'a mut dyn Write),
    Text(&'a mut String),
}

impl TextOut<'_> {
    fn text(&mut self, text: String) -> Result<()> {
        match self {
            TextOut::Writer(w) => w.write_all(text.as_bytes())?,
            TextOut::Text(s) if s.is_empty() => **s = text,
            TextOut::Text(s) => s.push_str(&text),
        }
        Ok(())
    }

    fn line(&mut self, line: std::fmt::Arguments<'_>) -> Result<()> {
        match self {
            TextOut::Writer(w) => writeln!(w, "{line}")?,
            TextOut::Text(s) => {
                use std::fmt::Write as _;
                writeln!(s, "{line}")?;
            }
        }
        Ok(())
    }

    /// Runs `write` on a writer (text written to a string is UTF-8 checked).
    fn with_writer(&mut self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        match self {
            TextOut::Writer(w) => write(&mut **w),
            TextOut::Text(s) => {
                let mut bytes = Vec::new();
                write(&mut bytes)?;
                if s.is_empty() {
                    **s = String::from_utf8(bytes)?;
                } else {
                    s.push_str(std::str::from_utf8(&bytes)?);
                }
                Ok(())
            }
        }
    }
}

/// [`compile`], handing each warning to `warn` before any rule is written
/// and writing the rules to `stdout` as they are made (the nftables JSON
/// batch of 10k Services, tens of MB, is never held whole).
pub fn compile_to(
    args: &CompileArgs,
    inv: &Inventory,
    warn: &mut dyn FnMut(&str),
    stdout: &mut dyn Write,
) -> Result<()> {
    compile_into(args, inv, warn, &mut TextOut::Writer(stdout))
}

fn compile_into(
    args: &CompileArgs,
    inv: &Inventory,
    warn: &mut dyn FnMut(&str),
    stdout: &mut TextOut<'_>,
) -> Result<()> {
    let _stage = Stage::spinner(&format!("compiling {} Services", inv.state.services.len()));
    let resolved = resolve(&args.node, inv)?;
    let backend = backend(args, &resolved.mode)?;
    let (layout, notes) = layout(&args.node, backend)?;
    for w in inv.warnings.iter().chain(&resolved.warnings).chain(&notes) {
        warn(w);
    }
    let nft_profile = match layout {
        Layout::Nftables(p) => p,
        Layout::Iptables(_) => NftablesProfile::Current,
    };
    let several = resolved.nodes.len() > 1;
    if backend == Backend::NftablesJson {
        let plans: Vec<_> = resolved
            .nodes
            .iter()
            .map(|n| Layout::Nftables(nft_profile).plan(&inv.state, n))
            .collect();
        return stdout.with_writer(|w| {
            kproxy_nft::write_json_profile(&plans, nft_profile, &mut *w)?;
            w.write_all(b"\n")?;
            Ok(())
        });
    }
    for node in &resolved.nodes {
        let text = match backend {
            Backend::Iptables => kproxy_iptables::compile(
                &inv.state,
                node,
                kproxy_iptables::Options {
                    standalone: args.standalone,
                    profile: layout.iptables(),
                    threads: crate::cpus(),
                },
            )?,
            Backend::Nftables | Backend::NftablesJson => kproxy_nft::compile(
                &inv.state,
                node,
                kproxy_nft::Options {
                    profile: nft_profile,
                    ..kproxy_nft::Options::default()
                },
            )?,
        };
        if several {
            let tool = match (backend, node.family) {
                (Backend::Iptables, IpFamily::V4) => "iptables-restore",
                (Backend::Iptables, IpFamily::V6) => "ip6tables-restore",
                _ => "nft -f",
            };
            stdout.line(format_args!("# {} input ({tool})", node.family))?;
        }
        stdout.text(text)?;
    }
    Ok(())
}

/// Runs `kproxy compile` from its arguments.
pub fn run(args: &CompileArgs) -> Result<Output> {
    let inv = crate::live::load_input(&args.live, &args.node, &args.paths)?;
    compile(args, &inv)
}

/// [`run`] with [`compile_to`]: warnings to `warn`, then the rules written
/// to `stdout` as they are made.
pub fn run_to(
    args: &CompileArgs,
    warn: &mut dyn FnMut(&str),
    stdout: &mut dyn Write,
) -> Result<()> {
    let inv = crate::live::load_input(&args.live, &args.node, &args.paths)?;
    compile_to(args, &inv, warn, stdout)
}

/// The nftables transactions `kproxy compile` prints (one per node
/// family), with the print options of their text: what the netlink path
/// ([`crate::agent::netlink`]) sends instead of `nft -f`.
pub fn nft_transactions(
    args: &CompileArgs,
    inv: &Inventory,
) -> Result<Vec<(kproxy_nft::Transaction, kproxy_nft::PrintOptions)>> {
    let resolved = resolve(&args.node, inv)?;
    let backend = backend(args, &resolved.mode)?;
    let (layout, _) = layout(&args.node, backend)?;
    let Layout::Nftables(profile) = layout else {
        anyhow::bail!("not an nftables layout");
    };
    Ok(resolved
        .nodes
        .iter()
        .map(|node| {
            let plan = layout.plan(&inv.state, node);
            let tx = kproxy_nft::build(
                &plan,
                kproxy_nft::LayoutOptions {
                    profile,
                    ..kproxy_nft::LayoutOptions::default()
                },
            );
            let opts = kproxy_nft::PrintOptions {
                mark_style: plan.node.mark.style,
                single_dnat: kproxy_nft::SingleDnat::default(),
            };
            (tx, opts)
        })
        .collect())
}
