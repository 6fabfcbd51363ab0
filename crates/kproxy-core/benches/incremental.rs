//! Incremental planning against planning from scratch.
//!
//! `cargo bench -p kproxy-core --bench incremental`. At 1k and 10k
//! Services x 10 endpoints: `plan` (the baseline: every Service planned)
//! and `update` (a [`PlanCache`] fed the state after one endpoint of one
//! Service changed; `update_hinted`: told which Service), so the report
//! reads as ratios.

use std::collections::BTreeSet;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kproxy_core::incremental::PlanCache;
use kproxy_core::model::{Endpoint, IpFamily, LocalDetector, NamespacedName, NodeConfig};
use kproxy_core::plan::{Release, plan};
use kproxy_core::synthetic::cluster;

fn node() -> NodeConfig {
    let mut n = NodeConfig::new(IpFamily::V4, "node-1");
    n.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("cidr"));
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("incremental");
    g.sample_size(10);
    for services in [1_000u32, 10_000] {
        let mut state = cluster(services, 10);
        let node = node();
        g.bench_with_input(BenchmarkId::new("plan", services), &state, |b, s| {
            b.iter(|| plan(s, &node))
        });
        let mut cache = PlanCache::new(node.clone(), Release::Current);
        cache.update(&state);
        let i = state.endpoint_slices.len() / 2;
        let extra = Endpoint::ready("10.250.0.1".parse().expect("ip"));
        let changed = BTreeSet::from([NamespacedName::new(
            &state.endpoint_slices[i].id.namespace,
            &state.endpoint_slices[i].service_name,
        )]);
        for hinted in [false, true] {
            let id = if hinted { "update_hinted" } else { "update" };
            g.bench_function(BenchmarkId::new(id, services), |b| {
                b.iter(|| {
                    // One endpoint in, then out again: one Service changes each time.
                    let slice = &mut state.endpoint_slices[i];
                    if slice.endpoints.last() == Some(&extra) {
                        slice.endpoints.pop();
                    } else {
                        slice.endpoints.push(extra.clone());
                    }
                    let up = cache.update_hinted(&state, hinted.then_some(&changed));
                    assert!(!up.changes.is_empty());
                    up
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
