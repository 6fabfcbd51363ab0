//! `check`, `trace` and `graph` on the synthetic cluster (1k and 10k
//! Services x 10 endpoints), in process:
//!
//! ```sh
//! nice -n 19 cargo bench -p kproxy-tests --bench scale_analysis
//! ```
//!
//! `check` compares the compiled iptables rules with themselves (every
//! packet class explored, at 10k too: 450k classes).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kproxy_core::check::{Mode, check};
use kproxy_core::equivalence::Options;
use kproxy_core::graph::Graph;
use kproxy_core::ir::Ruleset;
use kproxy_core::model::{IpFamily, LocalDetector, NodeConfig, Protocol};
use kproxy_core::plan::plan;
use kproxy_core::synthetic::cluster;
use kproxy_core::trace::{Packet, PacketOrigin, TraceEnv, Tracer};

fn node() -> NodeConfig {
    let mut n = NodeConfig::new(IpFamily::V4, "node-3");
    n.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("cidr"));
    n.node_addresses = vec!["192.168.0.3".parse().expect("ip")];
    n
}

fn iptables(services: u32, node: &NodeConfig) -> Ruleset {
    let p = plan(&cluster(services, 10), node);
    kproxy_iptables::build(
        &p,
        kproxy_iptables::LayoutOptions {
            standalone: true,
            ..Default::default()
        },
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale_analysis");
    g.sample_size(10);
    let node = node();
    let env = TraceEnv::from_node(&node);
    for services in [1_000u32, 10_000] {
        let rs = iptables(services, &node);
        let p = Packet::new(
            PacketOrigin::Pod,
            "10.9.9.9".parse().expect("ip"),
            "172.16.0.1".parse().expect("ip"),
            Protocol::Tcp,
            80,
        );
        g.bench_with_input(BenchmarkId::new("trace", services), &rs, |b, rs| {
            b.iter(|| Tracer::new(rs, &env).trace(&p).expect("trace"))
        });
        let opts = Options::default();
        g.bench_with_input(BenchmarkId::new("check", services), &rs, |b, rs| {
            b.iter(|| check(rs, rs, Mode::Iptables, &env, IpFamily::V4, opts).expect("check"))
        });
        // As `kproxy check` runs it: on every CPU.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let all = opts.with_threads(cpus);
        g.bench_with_input(
            BenchmarkId::new("check_all_cpus", services),
            &rs,
            |b, rs| {
                b.iter(|| check(rs, rs, Mode::Iptables, &env, IpFamily::V4, all).expect("check"))
            },
        );
        g.bench_with_input(BenchmarkId::new("graph", services), &rs, |b, rs| {
            b.iter(|| Graph::from_rulesets(std::slice::from_ref(rs)).to_dot())
        });
        // What `kproxy graph` prints by default: summarised for `dot`.
        g.bench_with_input(BenchmarkId::new("graph_summary", services), &rs, |b, rs| {
            b.iter(|| {
                Graph::from_rulesets(std::slice::from_ref(rs))
                    .within(kproxy_bin::graph::DOT_BUDGET)
                    .0
                    .to_dot()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
