//! Reading one manifest file of the `dir:` source, and what a poll does with it.
//!
//! `cargo bench -p kproxy-core --bench parse`. The text is one file of
//! `scripts/gen-manifests.py` (100 ClusterIP Services, each with one
//! EndpointSlice of 10 endpoints; about 113 KB), generated here. Measured:
//!
//! * `baseline_json_value`: `serde_json` reading the same objects, written
//!   as one JSON array, into `serde_json::Value` (the yardstick: report the
//!   others as ratios to it);
//! * `baseline_yaml_value`: `serde-saphyr` reading the YAML into
//!   `serde_json::Value`;
//! * `parse_documents_lenient`: the YAML into typed objects;
//! * `store_set`: a [`Store`] holding the file takes its objects again with
//!   one Service's slice changed (the objects are cloned outside the timing);
//! * `poll`: both, as `DirSource::poll` does for a rewritten file;
//! * `store_set_10k`: `store_set` with the store also holding the other 99
//!   files of a 10k-Service cluster.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kproxy_core::convert::{Object, Store, parse_documents_lenient};

const FILE: &str = "part000.yaml";

/// The YAML of `scripts/gen-manifests.py`'s file `file` (Services
/// `file*100..file*100+100`); `extra` adds an 11th endpoint to the slice of
/// Service `extra`.
fn manifest(file: usize, extra: Option<usize>) -> String {
    let mut docs = Vec::new();
    for i in file * 100..file * 100 + 100 {
        let ns = format!("ns{}", i % 50);
        let cip = format!("172.16.{}.{}", (i + 1) / 256, (i + 1) % 256);
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}}}\n\
             spec:\n  clusterIP: {cip}\n  clusterIPs: [{cip}]\n  \
             ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]\n"
        ));
        let count = if extra == Some(i) { 11 } else { 10 };
        let mut eps = String::new();
        for k in 0..count {
            let n = i * 10 + k;
            if k > 0 {
                eps.push(',');
            }
            let _ = write!(
                eps,
                "{{addresses: [10.{}.{}.{}], conditions: {{ready: true}}, nodeName: node-{}}}",
                n / 65536,
                (n / 256) % 256,
                n % 256,
                k % 20
            );
        }
        docs.push(format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc{i}-abc, namespace: {ns}, labels: {{kubernetes.io/service-name: svc{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n\
             endpoints: [{eps}]\n"
        ));
    }
    docs.join("---\n")
}

fn parse(text: &str) -> Vec<Object> {
    let (objects, errors) = parse_documents_lenient(text, FILE);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects.len(), 200);
    objects
}

fn bench(c: &mut Criterion) {
    // With glibc, freeing an iteration's results (a megabyte in small
    // blocks) can shrink the heap, and the next iteration faults the pages
    // back in: whether it does depends on the heap's layout, and changed
    // the figures 2.5-fold between builds. Freeing one block past the mmap
    // threshold raises the trim threshold (to twice its size), which
    // keeps those pages.
    drop(black_box(vec![1u8; 16 << 20]));
    let text = manifest(0, None);
    let changed = manifest(0, Some(50));
    let values: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).expect("the manifest is YAML");
    let json = serde_json::to_string(&values).expect("JSON");

    let mut g = c.benchmark_group("parse");
    g.bench_function("baseline_json_value", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&json)).expect("JSON"))
    });
    g.bench_function("baseline_yaml_value", |b| {
        b.iter(|| serde_saphyr::from_multiple::<serde_json::Value>(black_box(&text)).expect("YAML"))
    });
    g.bench_function("parse_documents_lenient", |b| {
        b.iter(|| parse_documents_lenient(black_box(&text), FILE))
    });

    // The file alternates between its two versions: one Service changes
    // each time.
    let versions = [parse(&text), parse(&changed)];
    let mut store = Store::new();
    store.set(FILE, versions[0].clone());
    store.take_changed();
    let mut n = 0usize;
    g.bench_function("store_set", |b| {
        b.iter_batched(
            || {
                n += 1;
                versions[n % 2].clone()
            },
            |objects| {
                store.set(FILE, objects);
                let changed = store.take_changed().expect("Services only");
                assert_eq!(changed.len(), 1);
            },
            BatchSize::LargeInput,
        )
    });
    // (Before the 10k-Service store is built: it leaves the heap larger and
    // every later allocation slower.)
    let texts = [&text, &changed];
    g.bench_function("poll", |b| {
        b.iter(|| {
            n += 1;
            store.set(FILE, parse(texts[n % 2]));
            let changed = store.take_changed().expect("Services only");
            assert_eq!(changed.len(), 1);
        })
    });
    // `store_set` in a store holding the other 99 files of a 10k-Service
    // cluster (what `dir:` holds).
    let mut m = 0usize;
    let mut big = Store::new();
    big.apply((0..100).map(|f| {
        let objects = if f == 0 {
            versions[0].clone()
        } else {
            parse(&manifest(f, None))
        };
        (format!("part{f:03}.yaml"), Some(objects))
    }));
    big.take_changed();
    g.bench_function("store_set_10k", |b| {
        b.iter_batched(
            || {
                m += 1;
                versions[m % 2].clone()
            },
            |objects| {
                big.set(FILE, objects);
                let changed = big.take_changed().expect("Services only");
                assert_eq!(changed.len(), 1);
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
