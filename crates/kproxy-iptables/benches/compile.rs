//! Compiling synthetic clusters to the iptables payload.
//!
//! `cargo bench -p kproxy-iptables --bench compile`. Sizes: 1k, 10k and 30k
//! Services x 10 endpoints; the baseline in the same run is planning alone,
//! so the report reads as ratios (layout + printing over planning).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kproxy_core::model::{IpFamily, NodeConfig};
use kproxy_core::plan::plan;
use kproxy_core::synthetic::cluster;

fn node() -> NodeConfig {
    let mut n = NodeConfig::new(IpFamily::V4, "node-1");
    n.local_detector = kproxy_core::model::LocalDetector::Cidr("10.0.0.0/8".parse().expect("cidr"));
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("iptables");
    g.sample_size(10);
    for services in [1_000u32, 10_000, 30_000] {
        let state = cluster(services, 10);
        let node = node();
        g.bench_with_input(BenchmarkId::new("plan", services), &state, |b, s| {
            b.iter(|| plan(s, &node))
        });
        g.bench_with_input(BenchmarkId::new("compile", services), &state, |b, s| {
            b.iter(|| kproxy_iptables::compile(s, &node, kproxy_iptables::Options::default()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
