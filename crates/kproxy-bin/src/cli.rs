//! The command line.

use clap::{Parser, Subcommand};

use crate::compile::CompileArgs;

/// kproxy: compiles Kubernetes Services into the rules kube-proxy writes.
#[derive(Parser, Debug)]
#[command(
    name = "kproxy",
    version = crate::version::short(),
    long_version = crate::version::long(),
    about,
    long_about = None
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// No progress bars on stderr (they are drawn only on a terminal).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the rules kube-proxy would write for the given cluster state.
    Compile(CompileArgs),
    /// Follow one packet through the rules and print every outcome.
    Trace(crate::trace::TraceArgs),
    /// Draw the chain graph of the rules (Graphviz DOT or SVG).
    Graph(crate::graph::GraphArgs),
    /// Show what changes on the node between two cluster states.
    Diff(crate::diff::DiffArgs),
    /// Compare a node's rules (iptables-save / nft -j list ruleset) with
    /// what kube-proxy should have written; exit status 1 on drift.
    Check(crate::check::CheckArgs),
    /// Run as a node agent: keep the node's rules in sync with a source.
    Run(Box<crate::agent::RunArgs>),
    /// Remove what kproxy or kube-proxy (iptables or nftables mode) set up on the node.
    Cleanup(crate::agent::cleanup::CleanupArgs),
    /// Print the shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(crate::shell::CompletionsArgs),
    /// Print the man page (roff; `kproxy man SUBCOMMAND` for a
    /// subcommand's, `--dir DIR` writes them all).
    Man(crate::shell::ManArgs),
}

/// The command line as kproxy parses it. Started as `kube-proxy` (the
/// image links that name to kproxy), the arguments are `kproxy run`'s.
/// Flag names are normalized as kube-proxy's flag library does:
/// `--hostname_override` is `--hostname-override`.
///
/// ```
/// use kproxy_bin::cli::kube_proxy_args;
/// use std::ffi::OsString;
/// let args = kube_proxy_args(["/usr/local/bin/kube-proxy", "--config=/c", "--v=2"]);
/// assert_eq!(args, ["/usr/local/bin/kube-proxy", "run", "--config=/c", "--v=2"].map(OsString::from));
/// let args = kube_proxy_args(["kproxy", "run", "--hostname_override=A_B"]);
/// assert_eq!(args, ["kproxy", "run", "--hostname-override=A_B"].map(OsString::from));
/// ```
pub fn kube_proxy_args<I, T>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for (i, arg) in args.into_iter().enumerate() {
        let arg: std::ffi::OsString = arg.into();
        if i == 0 {
            let name = std::path::Path::new(&arg)
                .file_name()
                .map(|n| n == "kube-proxy")
                .unwrap_or(false);
            out.push(arg);
            if name {
                out.push("run".into());
            }
            continue;
        }
        out.push(normalize_flag(arg));
    }
    out
}

/// `--a_b[=v]` to `--a-b[=v]` (the value is kept as it is).
fn normalize_flag(arg: std::ffi::OsString) -> std::ffi::OsString {
    let Some(text) = arg.to_str() else {
        return arg;
    };
    let Some(rest) = text.strip_prefix("--") else {
        return arg;
    };
    let (name, value) = match rest.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (rest, None),
    };
    if !name.contains('_') {
        return arg;
    }
    let name = name.replace('_', "-");
    match value {
        Some(v) => format!("--{name}={v}").into(),
        None => format!("--{name}").into(),
    }
}
