//! Compiling synthetic clusters to the nftables payloads.
//!
//! `cargo bench -p kproxy-nft --bench compile`. Sizes: 1k, 10k and 30k
//! Services x 10 endpoints, to native `nft -f` text (`native`: plan, layout,
//! print) and to the `nft -j -f` batch (`json`: plan, layout, apply, JSON);
//! the baseline in the same run is planning alone, so the report reads as
//! ratios (layout + printing over planning).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kproxy_core::model::{IpFamily, LocalDetector, NodeConfig};
use kproxy_core::plan::plan;
use kproxy_core::synthetic::cluster;

/// The node as nftables mode configures it (no localhost NodePorts).
fn node() -> NodeConfig {
    let mut n = NodeConfig::new(IpFamily::V4, "node-1");
    n.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("cidr"));
    n.localhost_node_ports = false;
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("nftables");
    g.sample_size(10);
    for services in [1_000u32, 10_000, 30_000] {
        let state = cluster(services, 10);
        let node = node();
        g.bench_with_input(BenchmarkId::new("plan", services), &state, |b, s| {
            b.iter(|| plan(s, &node))
        });
        g.bench_with_input(BenchmarkId::new("native", services), &state, |b, s| {
            b.iter(|| kproxy_nft::compile(s, &node, kproxy_nft::Options::default()).expect("nft"))
        });
        g.bench_with_input(BenchmarkId::new("json", services), &state, |b, s| {
            b.iter(|| kproxy_nft::render_json(&[plan(s, &node)]).expect("json"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
