//! The command line.

use clap::{Parser, Subcommand};

use crate::compile::CompileArgs;

/// kproxy: compiles Kubernetes Services into the rules kube-proxy writes.
#[derive(Parser, Debug)]
#[command(name = "kproxy", version, about, long_about = None)]
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
    Run(crate::agent::RunArgs),
    /// Remove what kproxy or kube-proxy (iptables or nftables mode) set up on the node.
    Cleanup(crate::agent::cleanup::CleanupArgs),
}
