//! `kproxy compile`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use kproxy_core::config::ProxyMode;
use kproxy_core::convert::{Inventory, Object, inventory, parse_documents};
use kproxy_core::model::IpFamily;

use crate::settings::{NodeArgs, resolve};
use crate::sources::read_sources;

/// Arguments of `kproxy compile`.
#[derive(Args, Debug, Clone)]
pub struct CompileArgs {
    /// Node-level configuration.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Also print what kube-proxy sets up outside its restore payload (the
    /// jumps from the built-in chains, the canary chains), so that the output
    /// loads into an empty network namespace with plain `iptables-restore`.
    #[arg(long)]
    pub standalone: bool,
    /// The backend: iptables, nftables (`nft -f` text) or nftables-json
    /// (`nft -j -f` batch). Default: the proxy mode.
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Manifests: files, directories (*.yaml, *.yml, *.json, recursively) or
    /// `-` for stdin. Multi-document YAML, JSON and `kind: List` are read.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
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
    let mut objects: Vec<(String, Object)> = Vec::new();
    for src in read_sources(paths)? {
        let docs = parse_documents(&src.text, &src.name)?;
        objects.extend(docs.into_iter().map(|o| (src.name.clone(), o)));
    }
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

/// The node configuration as nftables mode reads it: `iptables.localhostNodePorts`
/// is an iptables-only setting (nftables mode has its own feature gate).
fn nft_node(node: &kproxy_core::model::NodeConfig) -> kproxy_core::model::NodeConfig {
    let mut n = node.clone();
    n.localhost_node_ports = false;
    n
}

/// The rule IR of one family, as a backend builds it.
#[derive(Debug, Clone)]
pub struct FamilyRules {
    /// The node configuration the backend compiled for.
    pub node: kproxy_core::model::NodeConfig,
    /// The tables.
    pub ruleset: kproxy_core::ir::Ruleset,
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
    let resolved = resolve(node_args, inv)?;
    let backend = backend_named(backend, &resolved.mode)?;
    let mut out = Vec::new();
    for node in &resolved.nodes {
        out.push(match backend {
            Backend::Iptables => {
                let plan = kproxy_core::plan::plan(&inv.state, node);
                FamilyRules {
                    node: node.clone(),
                    ruleset: kproxy_iptables::build(
                        &plan,
                        kproxy_iptables::LayoutOptions { standalone },
                    ),
                }
            }
            Backend::Nftables | Backend::NftablesJson => {
                let node = nft_node(node);
                let plan = kproxy_core::plan::plan(&inv.state, &node);
                FamilyRules {
                    node,
                    ruleset: kproxy_nft::ruleset(&plan)?,
                }
            }
        });
    }
    Ok((backend, out, resolved.warnings))
}

/// Runs `kproxy compile` on an already loaded inventory.
pub fn compile(args: &CompileArgs, inv: &Inventory) -> Result<Output> {
    let resolved = resolve(&args.node, inv)?;
    let mut out = Output {
        warnings: inv.warnings.clone(),
        ..Output::default()
    };
    out.warnings.extend(resolved.warnings.iter().cloned());
    let backend = backend(args, &resolved.mode)?;
    let several = resolved.nodes.len() > 1;
    if backend == Backend::NftablesJson {
        let plans: Vec<_> = resolved
            .nodes
            .iter()
            .map(|n| kproxy_core::plan::plan(&inv.state, &nft_node(n)))
            .collect();
        out.stdout = kproxy_nft::render_json(&plans)?;
        out.stdout.push('\n');
        return Ok(out);
    }
    for node in &resolved.nodes {
        let text = match backend {
            Backend::Iptables => kproxy_iptables::compile(
                &inv.state,
                node,
                kproxy_iptables::Options {
                    standalone: args.standalone,
                },
            )?,
            Backend::Nftables | Backend::NftablesJson => {
                kproxy_nft::compile(&inv.state, &nft_node(node), kproxy_nft::Options::default())?
            }
        };
        if several {
            let tool = match (backend, node.family) {
                (Backend::Iptables, IpFamily::V4) => "iptables-restore",
                (Backend::Iptables, IpFamily::V6) => "ip6tables-restore",
                _ => "nft -f",
            };
            out.stdout
                .push_str(&format!("# {} input ({tool})\n", node.family));
        }
        out.stdout.push_str(&text);
    }
    Ok(out)
}

/// Runs `kproxy compile` from its arguments.
pub fn run(args: &CompileArgs) -> Result<Output> {
    let inv = load(&args.paths)?;
    compile(args, &inv)
}
