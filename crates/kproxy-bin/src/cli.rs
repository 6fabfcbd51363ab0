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
    #[command(
        after_help = "Examples:\n  kproxy compile examples/seed-article/4-loadbalancer\n  kproxy compile --backend nftables --hostname-override node-7 cluster.yaml\n  kproxy compile --kubeconfig ~/.kube/config --hostname-override node-7"
    )]
    Compile(CompileArgs),
    /// Follow one packet through the rules and print every outcome.
    #[command(
        after_help = "Examples:\n  kproxy trace --from external --src 203.0.113.9 --dst 104.199.232.159:80 examples/seed-article/4-loadbalancer\n  kproxy trace --from pod --src 10.76.0.5 --dst 10.79.250.127:80 --rules node.save examples/seed-article/4-loadbalancer\n  kproxy trace --kubeconfig ~/.kube/config --hostname-override node-7 --from node --src 10.0.0.7 --dst 10.96.0.10:53 --proto udp"
    )]
    Trace(crate::trace::TraceArgs),
    /// Draw the chain graph of the rules (Graphviz DOT or SVG).
    #[command(
        after_help = "Examples:\n  kproxy graph examples/seed-article/4-loadbalancer | dot -Tsvg > rules.svg\n  kproxy graph --format svg --service default/hostnames examples/seed-article/4-loadbalancer > hostnames.svg"
    )]
    Graph(crate::graph::GraphArgs),
    /// Show what changes on the node between two cluster states.
    #[command(
        after_help = "Examples:\n  kproxy diff --before examples/seed-article/3-nodeport --after examples/seed-article/4-loadbalancer\n  kproxy diff --before cluster.yaml --after kube: --hostname-override node-7\n  kproxy diff --before-backend iptables --after-backend nftables --before cluster.yaml --after cluster.yaml"
    )]
    Diff(crate::diff::DiffArgs),
    /// Compare a node's rules (iptables-save / nft -j list ruleset) with
    /// what kube-proxy should have written; exit status 1 on drift.
    #[command(
        after_help = "Examples:\n  iptables-save > node.save; kproxy check --rules node.save cluster.yaml\n  nft -j list ruleset > node.json; kproxy check --rules node.json --hostname-override node-7 cluster.yaml\n  kproxy check --kubeconfig ~/.kube/config --hostname-override node-7 --rules node-7.save"
    )]
    Check(crate::check::CheckArgs),
    /// Run as a node agent: keep the node's rules in sync with a source.
    #[command(
        after_help = "Examples:\n  kproxy run --config=/var/lib/kube-proxy/config.conf --hostname-override=$(NODE_NAME)\n  kproxy run --source dir:/etc/kproxy/cluster --hostname-override node-7 --proxy-mode nftables\n  kproxy run --config=/var/lib/kube-proxy/config.conf --write-config-to=/tmp/effective.yaml"
    )]
    Run(Box<crate::agent::RunArgs>),
    /// Remove what kproxy or kube-proxy (iptables or nftables mode) set up on the node.
    #[command(after_help = "Examples:\n  kproxy cleanup\n  kproxy cleanup --mode iptables")]
    Cleanup(crate::agent::cleanup::CleanupArgs),
    /// Print the shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(
        after_help = "Examples:\n  source <(kproxy completions bash)\n  kproxy completions zsh > \"${fpath[1]}/_kproxy\""
    )]
    Completions(crate::shell::CompletionsArgs),
    /// Print the man page (roff; `kproxy man SUBCOMMAND` for a
    /// subcommand's, `--dir DIR` writes them all).
    #[command(
        after_help = "Examples:\n  kproxy man | man -l -\n  kproxy man --dir /usr/local/share/man/man1"
    )]
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
