//! Embedding kproxy's nftables sync engine: a first sync and a
//! one-endpoint change, each transaction printed as `$ nft -f -` followed
//! by its text (the operations it carries are what a netlink executor
//! would send). No root needed: a recording executor answers.
//!
//! ```text
//! cargo run --example embed_agent_nft
//! ```

use std::time::Instant;

use kproxy_core::model::{Endpoint, IpFamily, NodeConfig};
use kproxy_core::profile::NftablesProfile;
use kproxy_core::sync::{Compiler, Outcome};
use kproxy_nft::sync::{Command, Engine, Layout, Report};

/// Prints `cmd`; every command succeeds.
fn record(cmd: &Command) -> Outcome {
    println!(
        "{}",
        format!("$ {} {}", cmd.program(), cmd.args().join(" ")).trim_end()
    );
    if let Some(stdin) = cmd.stdin() {
        print!("{stdin}");
    }
    if let Command::Transaction { transaction, .. } = cmd {
        println!("# ({} operations)", transaction.transaction.ops.len());
    }
    Outcome::Done(String::new())
}

fn run(engine: &mut Engine, now: Instant) {
    while let Some(cmd) = engine.poll_command(now) {
        let outcome = record(&cmd);
        engine.handle_outcome(now, outcome);
    }
    while let Some(report) = engine.poll_report() {
        if let Report::Sync(r) = report {
            for f in &r.families {
                let kind = if f.full { "full" } else { "partial" };
                println!("# {kind} sync of {}: objects {:?}", f.family, f.counts);
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let targets = [(
        NodeConfig::new(IpFamily::V4, "node-1"),
        Layout(NftablesProfile::Current),
    )];
    let mut compiler = Compiler::new();
    let mut engine = Engine::new();
    let now = Instant::now();

    println!("# first sync: one Service, two endpoints");
    // The synthetic cluster's second Service is a plain ClusterIP one.
    let mut state = kproxy_core::synthetic::cluster(2, 2);
    state.services.remove(0);
    state.endpoint_slices.remove(0);
    let compiled = compiler.compile(&state, &targets, engine.next_is_full(now))?;
    engine.sync_compiled(now, &compiled);
    run(&mut engine, now);

    println!();
    println!("# one endpoint added");
    state.endpoint_slices[0]
        .endpoints
        .push(Endpoint::ready("10.244.3.9".parse()?));
    let compiled = compiler.compile(&state, &targets, engine.next_is_full(now))?;
    engine.sync_compiled(now, &compiled);
    run(&mut engine, now);
    Ok(())
}
