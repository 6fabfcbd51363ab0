//! Embedding kproxy's sync engine: the node agent's decisions without its
//! I/O. The engine is told what changed and answers with the commands to
//! run; this "executor" only records and prints them, as
//! `$ PROGRAM ARGS` followed by the standard input, and answers as a node
//! without any rules would (no root needed).
//!
//! ```text
//! cargo run --example embed_agent
//! ```
//!
//! A real embedder runs each command (or its netlink equivalent) and
//! hands over the outcome; `kproxy run` is such a shell.

use std::time::{Duration, Instant};

use kproxy_core::model::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, IpFamily, NodeConfig, Protocol, Service,
    ServicePort,
};
use kproxy_core::profile::IptablesProfile;
use kproxy_core::sync::{Compiler, Outcome, Timers};
use kproxy_iptables::sync::{Command, Engine, Layout, Report};

/// One Service (`default/web`, port 80) and its endpoints.
fn cluster(endpoints: &[&str]) -> Result<ClusterState, std::net::AddrParseError> {
    let web = Service::cluster_ip("default", "web", "10.96.0.10".parse()?)
        .with_port(ServicePort::new("http", Protocol::Tcp, 80));
    let mut slice = EndpointSlice::new("default", "web-abcde", "web", IpFamily::V4)
        .with_port(EndpointPort::new("http", Protocol::Tcp, 8080));
    for ip in endpoints {
        slice = slice.with_endpoint(Endpoint::ready(ip.parse()?));
    }
    Ok(ClusterState {
        services: vec![web],
        endpoint_slices: vec![slice],
    })
}

/// An argument as a shell would need it.
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Prints `cmd` and answers as a node without rules: `iptables-save`
/// prints nothing, no jump is there yet (`-C` fails), the rest succeeds.
fn record(cmd: &Command) -> Outcome {
    let args: Vec<String> = cmd.args().iter().map(|a| shell_word(a)).collect();
    println!(
        "{}",
        format!("$ {} {}", cmd.program(), args.join(" ")).trim_end()
    );
    if let Some(stdin) = cmd.stdin() {
        print!("{stdin}");
    }
    match cmd {
        Command::Check { .. } => Outcome::Failed(
            "iptables: Bad rule (does a matching rule exist in that chain?).".into(),
        ),
        _ => Outcome::Done(String::new()),
    }
}

/// Runs every command the engine asks for; prints its report.
fn run(engine: &mut Engine, now: Instant) {
    while let Some(cmd) = engine.poll_command(now) {
        let outcome = record(&cmd);
        engine.handle_outcome(now, outcome);
    }
    while let Some(report) = engine.poll_report() {
        if let Report::Sync(r) = report {
            for f in &r.families {
                println!(
                    "# {} sync of {}: {}, rules {:?}",
                    if f.full { "full" } else { "partial" },
                    f.family,
                    if f.ok() { "applied" } else { "failed" },
                    f.counts
                );
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = NodeConfig::new(IpFamily::V4, "node-1");
    let targets = [(node, Layout(IptablesProfile::Current))];
    let mut compiler = Compiler::new();
    let mut engine = Engine::new();
    let mut timers = Timers::new(Duration::from_secs(1), Duration::from_secs(30));
    let start = Instant::now();

    println!("# first sync: two endpoints");
    let state = cluster(&["10.244.1.5", "10.244.2.7"])?;
    timers.sync_started(start);
    let compiled = compiler.compile(&state, &targets, engine.next_is_full(start))?;
    engine.sync_compiled(start, &compiled);
    run(&mut engine, start);

    println!();
    println!("# one endpoint added");
    let state = cluster(&["10.244.1.5", "10.244.2.7", "10.244.3.9"])?;
    timers.changed();
    // Due one minSyncPeriod after the last sync started.
    let now = timers.poll_timeout().unwrap_or(start);
    timers.sync_started(now);
    let compiled = compiler.compile(&state, &targets, engine.next_is_full(now))?;
    engine.sync_compiled(now, &compiled);
    run(&mut engine, now);
    Ok(())
}
