//! The iptables sync engine at a large node's scale, with an executor that
//! runs nothing (so the figures are the engine's own work).
//!
//! `cargo bench -p kproxy-iptables --bench sync`: 10k Services x 10
//! endpoints; `first_sync` compiles everything and plans the first sync
//! (the `iptables-restore` payload, the jumps to ensure); `endpoint_change`
//! recompiles after one endpoint was added and plans the partial sync.

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use kproxy_core::model::{Endpoint, IpFamily, LocalDetector, NodeConfig};
use kproxy_core::profile::IptablesProfile;
use kproxy_core::sync::{Compiler, Outcome};
use kproxy_core::synthetic::cluster;
use kproxy_iptables::sync::{Engine, Layout};

fn drive(engine: &mut Engine, now: Instant) -> usize {
    let mut bytes = 0;
    while let Some(cmd) = engine.poll_command(now) {
        bytes += cmd.stdin().map_or(0, str::len);
        engine.handle_outcome(now, Outcome::Done(String::new()));
    }
    while engine.poll_report().is_some() {}
    bytes
}

fn bench(c: &mut Criterion) {
    let mut node = NodeConfig::new(IpFamily::V4, "node-1");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("cidr"));
    let targets = [(node, Layout(IptablesProfile::Current))];
    let state = cluster(10_000, 10);
    let mut changed = state.clone();
    changed.endpoint_slices[5]
        .endpoints
        .push(Endpoint::ready("10.99.0.1".parse().expect("ip")));
    let mut g = c.benchmark_group("iptables_sync");
    g.sample_size(10);
    g.bench_function("first_sync/10000", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut compiler = Compiler::new();
            let mut engine = Engine::new();
            let compiled = compiler.compile(&state, &targets, true).expect("compile");
            engine.sync_compiled(now, &compiled);
            drive(&mut engine, now)
        })
    });
    // A synced engine and compiler, then one endpoint more, then back.
    let now = Instant::now();
    let mut compiler = Compiler::new();
    let mut engine = Engine::new();
    let compiled = compiler.compile(&state, &targets, true).expect("compile");
    engine.sync_compiled(now, &compiled);
    drive(&mut engine, now);
    let mut flip = false;
    g.bench_function("endpoint_change/10000", |b| {
        b.iter(|| {
            flip = !flip;
            let next = if flip { &changed } else { &state };
            let compiled = compiler.compile(next, &targets, false).expect("compile");
            engine.sync_compiled(now, &compiled);
            drive(&mut engine, now)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
