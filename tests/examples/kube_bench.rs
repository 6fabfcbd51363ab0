//! End-to-end benchmark of `kproxy run --source kube` (not a test; needs
//! root): from a Kubernetes API watch event to the rules applied in the
//! kernel, through the real [`KubeSource`] (kube-rs list+watch), timed by
//! phase.
//!
//! ```sh
//! cargo run --release -p kproxy-tests --example kube_bench -- [SERVICES] [iptables|nftables]
//! cargo run --release -p kproxy-tests --example kube_bench -- 10000 nftables
//! ```
//!
//! SERVICES (default 10000) ClusterIP Services `svc<N>` in namespaces
//! `ns<N % 50>`, each with one EndpointSlice of 10 ready endpoints over
//! nodes node-0..node-19 (the cluster `scripts/gen-manifests.py` writes),
//! served by the API server fixture ([`kproxy_tests::apiserver`]) to the
//! agent of `node-3`. Everything runs in a throwaway network namespace
//! (created, loopback brought up, deleted at the end): the fixture listens
//! on its 127.0.0.1, the source's watch connections and the rules are
//! there.
//!
//! Timed: the first (full) sync (the initial lists until the source is
//! synced, their conversion, the compile, the load); then rounds that each
//! change one Service's EndpointSlice (one more endpoint) on the API
//! server and time: event -> source (from the change on the server until
//! `KubeSource::poll` has it converted and `take_changed` names the
//! Service: the watch stream, kube-rs, the conversion; "last poll" is the
//! `poll` call that converted the change), the incremental
//! compile (`Compiler::compile_hinted`, partial), and the sync
//! (`Proxier::sync_compiled`: payload and tool); then one Service added
//! and one deleted. The first iptables load uses plain `iptables-restore`
//! into the empty namespace; with `KPROXY_BENCH_AGENT_FIRST=1` it is the
//! agent's own full sync.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../crates/kproxy-bin/examples/bench/mod.rs"]
mod bench;
use bench::ms;

use kproxy_bin::agent::incremental::Compiler;
use kproxy_bin::agent::kube::KubeSource;
use kproxy_bin::agent::metrics::Metrics;
use kproxy_bin::agent::sync::Proxier;
use kproxy_core::model::NamespacedName;
use kproxy_tests::apiserver::{Fixture, NODES, SERVICES, SLICES, kubeconfig};
use serde_json::{Value, json};

/// How long the source may take to report a change before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(60);

fn namespace(i: usize) -> String {
    format!("ns{}", i % 50)
}

fn service(i: usize) -> Value {
    let cip = format!("172.16.{}.{}", (i + 1) / 256, (i + 1) % 256);
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc{i}"), "namespace": namespace(i)},
        "spec": {"type": "ClusterIP", "clusterIP": cip, "clusterIPs": [cip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
}

/// `svc<i>`'s slice: 10 ready endpoints, plus `extra` (an address).
fn slice(i: usize, extra: Option<&str>) -> Value {
    let mut eps: Vec<Value> = (0..10)
        .map(|k| {
            let n = i * 10 + k;
            json!({"addresses": [format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256)],
                   "conditions": {"ready": true}, "nodeName": format!("node-{}", k % 20)})
        })
        .collect();
    if let Some(ip) = extra {
        eps.push(json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-1"}));
    }
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc{i}-abc"), "namespace": namespace(i),
                     "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps})
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-3"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.140.0.3"}]}})
}

/// Polls `source` until `done` holds; returns the time taken (from
/// `since`), that of the last `poll` (the one that converted the change)
/// and the union of the changed Services reported (`None`: everything may
/// have changed).
fn until_reported(
    source: &mut KubeSource,
    since: Instant,
    what: &str,
    done: impl Fn(&KubeSource, &Option<BTreeSet<NamespacedName>>) -> bool,
) -> (Duration, Duration, Option<BTreeSet<NamespacedName>>) {
    let mut hint = Some(BTreeSet::new());
    loop {
        let t = Instant::now();
        let (changed, errors) = source.poll();
        let convert = t.elapsed();
        assert!(errors.is_empty(), "{what}: watch errors: {errors:?}");
        if changed {
            hint = match (hint, source.take_changed()) {
                (Some(mut a), Some(b)) => {
                    a.extend(b);
                    Some(a)
                }
                _ => None,
            };
            if done(source, &hint) {
                return (since.elapsed(), convert, hint);
            }
        }
        assert!(since.elapsed() < PATIENCE, "{what}: not reported in time");
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn median_range(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    match (v.first(), v.last()) {
        (Some(lo), Some(hi)) => format!(
            "{} ({}..{})",
            ms(v[v.len() / 2]),
            ms(*lo).trim_end_matches(" ms"),
            ms(*hi)
        ),
        _ => "-".into(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = match args.get(1).map(|a| a.parse()) {
        None => 10_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: kube_bench [SERVICES] [iptables|nftables]");
            std::process::exit(2);
        }
    };
    let (mode, targets) = bench::target(args.get(2).map(String::as_str));

    // The namespace first: the fixture's listener, the source's thread
    // (and so its connections) and the tools all live in it.
    let _netns = bench::Netns::enter(&format!("kproxy-kubebench-{}", std::process::id()));
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip link set lo up failed");

    let fx = Fixture::default();
    for i in 0..n {
        fx.put(SERVICES, service(i));
        fx.put(SLICES, slice(i, None));
    }
    fx.put(NODES, node());
    let port = fx.serve_on(TcpListener::bind("127.0.0.1:0").expect("bind in the namespace"));
    let cfg = kubeconfig(port);

    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    let mut compiler = Compiler::new();
    let t = Instant::now();
    let mut source = KubeSource::start(Some(cfg.path()), "node-3").expect("start the kube source");
    while !source.synced() {
        assert!(t.elapsed() < PATIENCE, "initial lists not complete in time");
        std::thread::sleep(Duration::from_millis(1));
    }
    let list = t.elapsed();
    let t = Instant::now();
    let (_, errors) = source.poll();
    assert!(errors.is_empty(), "{errors:?}");
    // The first compile is full: what changed so far is not needed.
    source.take_changed();
    let convert = t.elapsed();
    assert_eq!(source.inventory().state.services.len(), n);
    let (compile, load) = bench::first_sync(
        mode,
        &mut compiler,
        &mut proxier,
        &source.inventory().state,
        &targets,
        &metrics,
    );
    println!(
        "{}: {} Services: initial lists {} (until synced), convert {}, compile {}, load {}",
        mode.name(),
        source.inventory().state.services.len(),
        ms(list),
        ms(convert),
        ms(compile),
        ms(load)
    );

    let parts = n.div_ceil(100);
    let (mut e2e, mut event, mut polls, mut compiles, mut syncs) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..8usize {
        let i = (round * 7 % parts) * 100;
        let id = NamespacedName {
            namespace: namespace(i),
            name: format!("svc{i}"),
        };
        let changed = slice(i, Some(&format!("10.250.0.{}", round + 1)));
        let t0 = Instant::now();
        fx.put(SLICES, changed);
        let (reported, poll, hint) = until_reported(&mut source, t0, "slice change", |_, h| {
            h.as_ref().is_none_or(|h| h.contains(&id))
        });
        assert_eq!(
            hint.as_ref().map(BTreeSet::len),
            Some(1),
            "only {id:?} changed"
        );
        let (compile, r, partial) = bench::sync_changed(
            &mut compiler,
            &mut proxier,
            &source.inventory().state,
            &targets,
            hint.as_ref(),
            &metrics,
        );
        assert!(partial, "not partial");
        let total = t0.elapsed();
        println!(
            "{}: one Service changed ({}/{}): end to end {} = event->source {} (last poll {}) + compile {} + sync {}",
            mode.name(),
            id.namespace,
            id.name,
            ms(total),
            ms(reported),
            ms(poll),
            ms(compile),
            ms(r.duration),
        );
        e2e.push(total);
        event.push(reported);
        polls.push(poll);
        compiles.push(compile);
        syncs.push(r.duration);
    }
    println!(
        "{}: {} rounds, median (min..max): end to end {}, event->source {} (last poll {}), compile {}, sync {}",
        mode.name(),
        e2e.len(),
        median_range(&e2e),
        median_range(&event),
        median_range(&polls),
        median_range(&compiles),
        median_range(&syncs),
    );

    // A Service added (Service and slice), then deleted again: the shared
    // chains (iptables KUBE-SERVICES, ...) change too. Two objects, two
    // watch streams: reported when the source has both.
    let extra = NamespacedName {
        namespace: "ns0".into(),
        name: "bench-extra".into(),
    };
    let has = |s: &KubeSource, want: bool| {
        let state = &s.inventory().state;
        state.services.iter().any(|x| x.id == extra) == want
            && state
                .endpoint_slices
                .iter()
                .any(|x| x.id.namespace == extra.namespace && x.service_name == extra.name)
                == want
    };
    for add in [true, false] {
        let t0 = Instant::now();
        if add {
            fx.put(
                SERVICES,
                json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "bench-extra", "namespace": "ns0"},
                    "spec": {"type": "ClusterIP", "clusterIP": "172.31.255.1", "clusterIPs": ["172.31.255.1"],
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
            );
            fx.put(
                SLICES,
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "bench-extra-1", "namespace": "ns0",
                                 "labels": {"kubernetes.io/service-name": "bench-extra"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": [{"addresses": ["10.250.1.1"], "conditions": {"ready": true}, "nodeName": "node-1"}]}),
            );
        } else {
            fx.delete(SERVICES, "ns0/bench-extra", true);
            fx.delete(SLICES, "ns0/bench-extra-1", true);
        }
        let (reported, poll, hint) =
            until_reported(&mut source, t0, "Service added/deleted", |s, _| has(s, add));
        let (compile, r, partial) = bench::sync_changed(
            &mut compiler,
            &mut proxier,
            &source.inventory().state,
            &targets,
            hint.as_ref(),
            &metrics,
        );
        println!(
            "{}: one Service {}: end to end {} = event->source {} (last poll {}) + compile {} + sync {} ({})",
            mode.name(),
            if add { "added" } else { "deleted" },
            ms(t0.elapsed()),
            ms(reported),
            ms(poll),
            ms(compile),
            ms(r.duration),
            if partial { "partial" } else { "full" },
        );
    }
    drop(source);
    drop(cfg);
}
