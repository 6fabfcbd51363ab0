//! `kproxy run --source kube` against an API server fixture
//! ([`kproxy_tests::apiserver`]): an HTTP server that speaks list+watch
//! for Services, EndpointSlices and Nodes (resource versions, chunked
//! watch streams, `410 Gone`), with knobs to drop watches, expire resource versions and fail requests.
//!
//! Checks: the first sync waits for every initial list; watch events
//! arrive; a dropped watch resumes; a 410 forces a relist that replaces the
//! state (an object deleted while the watch was down goes away); server
//! errors are retried, never fatal. And the real `kproxy run --source kube`
//! in the kernel testbed (needs root; see `kernel_e2e.rs`) follows the
//! fixture: first sync, a watch event, a relist after 410 Gone; and a
//! slice change annotated `endpoints.kubernetes.io/last-change-trigger-time`
//! is observed in `kubeproxy_network_programming_duration_seconds` (changes
//! without it are not).

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

mod kernel;

use kernel::traffic::{Outcome, sock};
use kernel::{Loader, Ns, tool};
use kproxy_bin::agent::http;
use kproxy_bin::agent::kube::KubeSource;
use kproxy_bin::agent::latency;
use kproxy_tests::apiserver::{
    Fixture, NODES, SERVICES, SLICES, hostnames_service, hostnames_slice, kubeconfig,
};
use serde_json::{Value, json};

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

fn slice(svc: &str, ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node1"}],
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]})
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.140.0.2"}]}})
}

fn services(src: &KubeSource) -> Vec<String> {
    let inv = src.inventory();
    inv.state
        .services
        .iter()
        .map(|s| s.id.name.clone())
        .collect()
}

fn wait(src: &mut KubeSource, what: &str, f: impl Fn(&KubeSource) -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let _ = src.poll();
        if f(src) {
            eprintln!("{what}: {:?}", start.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within 20 s (services now {:?})", services(src));
}

#[test]
fn kube_source_lists_watches_and_relists() {
    let fx = Fixture::default();
    fx.put(SERVICES, service("a", "10.96.0.10"));
    fx.put(SLICES, slice("a", "10.0.0.1"));
    fx.put(NODES, node());
    let port = fx.serve();
    let cfg = kubeconfig(port);
    let mut src = KubeSource::start(Some(cfg.path()), "node1").expect("start");

    // The initial lists.
    wait(&mut src, "initial lists", KubeSource::synced);
    let inv = src.inventory();
    assert_eq!(services(&src), ["a"]);
    assert_eq!(inv.state.endpoint_slices.len(), 1);
    assert_eq!(inv.nodes.len(), 1);
    assert!(src.node_eligible());
    {
        let a = fx.api();
        assert!(
            a.requests
                .iter()
                .any(|r| r.starts_with(NODES) && r.contains("fieldSelector=metadata.name%3Dnode1")),
            "the Node watch selects this node: {:?}",
            a.requests
        );
    }

    // A watch event.
    fx.put(SERVICES, service("b", "10.96.0.11"));
    wait(&mut src, "watch event", |s| services(s) == ["a", "b"]);

    // A dropped watch resumes from its resource version.
    fx.drop_watches();
    std::thread::sleep(Duration::from_millis(50));
    fx.put(SERVICES, service("c", "10.96.0.12"));
    wait(&mut src, "after a dropped watch", |s| {
        services(s) == ["a", "b", "c"]
    });

    // 410 Gone: "a" was deleted while the watch was down and its event
    // compacted away; the relist replaces the state.
    fx.delete(SERVICES, "default/a", false);
    fx.expire();
    fx.drop_watches();
    fx.put(SERVICES, service("d", "10.96.0.13"));
    wait(&mut src, "relist after 410", |s| {
        services(s) == ["b", "c", "d"]
    });
    {
        let a = fx.api();
        let lists = a
            .requests
            .iter()
            .filter(|r| r.starts_with(SERVICES) && !r.contains("watch=true"))
            .count();
        assert!(lists >= 2, "no relist: {:?}", a.requests);
    }

    // Server errors are retried, never fatal.
    fx.api().fail_next = 3;
    fx.drop_watches();
    std::thread::sleep(Duration::from_millis(50));
    fx.put(SERVICES, service("e", "10.96.0.14"));
    wait(&mut src, "after server errors", |s| {
        services(s) == ["b", "c", "d", "e"]
    });
}

#[test]
fn kube_source_waits_for_every_initial_list() {
    let fx = Fixture::default();
    fx.put(SERVICES, service("a", "10.96.0.10"));
    // Every request fails for a while: nothing is synced, nothing exits.
    fx.api().fail_next = 1_000_000;
    let port = fx.serve();
    let cfg = kubeconfig(port);
    let mut src = KubeSource::start(Some(cfg.path()), "node1").expect("start");
    std::thread::sleep(Duration::from_millis(500));
    let _ = src.poll();
    assert!(!src.synced());
    fx.api().fail_next = 0;
    wait(&mut src, "initial lists after errors", KubeSource::synced);
    assert_eq!(services(&src), ["a"]);
}

// ---------------------------------------------------------------------------
// The real agent with `--source kube`, in the kernel testbed.

/// The `kproxy` binary ([`kproxy_tests::kproxy_binary`]).
fn kproxy_bin() -> PathBuf {
    kproxy_tests::kproxy_binary().to_path_buf()
}

fn agent_follows_the_api(test: &str, backend: &str, loader: Loader) {
    let Some(bed) = kernel::testbed(test, loader) else {
        return;
    };
    let fx = Fixture::default();
    fx.put(SERVICES, hostnames_service());
    fx.put(SLICES, hostnames_slice(&[9, 10]));
    fx.put(NODES, node());
    // The API server listens in the node's namespace, where the agent runs.
    let listener = bed.in_ns(Ns::Node, || TcpListener::bind("127.0.0.1:0").expect("bind"));
    let port = fx.serve_on(listener);
    let cfg = kubeconfig(port);
    let log = cfg.with_extension("log");
    let node_ns = bed.ns(Ns::Node);
    let mut child = std::process::Command::new(tool("ip").unwrap_or_else(|| "ip".into()))
        .args(["netns", "exec", &node_ns])
        .arg(kproxy_bin())
        .args(["run", "--source", "kube", "--kubeconfig"])
        .arg(&cfg)
        .args(["--backend", backend, "--hostname-override", "node1"])
        .args(["--ip-family", "ipv4", "--cluster-cidr", "10.76.0.0/14"])
        .args(["--min-sync-period", "0s", "--poll-interval", "20ms"])
        .args([
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            "127.0.0.1:10249",
        ])
        .env("KPROXY_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn kproxy run");
    let svc = sock("10.79.255.4", 80);
    let quick = Duration::from_millis(300);
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > Duration::from_secs(15) {
                // SAFETY: kill() of our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                panic!(
                    "{what}: not within 15 s\n--- kproxy run log ---\n{}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default(),
                    bed.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{what}: {:?}", start.elapsed());
    };
    until("first sync from the API", &|| {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Answered { .. }
        )
    });
    // A watch event: scaled to pod-11.
    fx.put(SLICES, hostnames_slice(&[9, 10, 11]));
    until("watch event (scale)", &|| {
        (0..6).any(|_| {
            matches!(bed.tcp_within(Ns::Client, None, svc, quick),
                Outcome::Answered { pod, .. } if pod == "pod-11")
        })
    });
    // Network programming latency: nothing observed for changes without
    // a trigger time, nor for a new trigger time without a change; one
    // observation for the annotated change.
    let programmed = || -> Option<u64> {
        let (_, body) = bed
            .in_ns(Ns::Node, || {
                http::get("127.0.0.1:10249".parse().expect("addr"), "/metrics")
            })
            .ok()?;
        // kube-proxy's histogram is labelled by family: no line before the
        // first observation.
        let count = body.lines().find_map(|l| {
            l.strip_prefix(
                "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"} ",
            )
        });
        match count {
            Some(n) => n.trim().parse().ok(),
            None => body
                .contains("kubeproxy_sync_proxy_rules_endpoint_changes_total")
                .then_some(0),
        }
    };
    assert_eq!(programmed(), Some(0), "no trigger time, no observation");
    let annotated = |pods: &[u8]| {
        let mut slice = hostnames_slice(pods);
        slice["metadata"]["annotations"] = json!({
            "endpoints.kubernetes.io/last-change-trigger-time":
                latency::timestamp(SystemTime::now()).to_string()
        });
        slice
    };
    // Only the annotation changes: no change of the endpoints, nothing to
    // program (kube-proxy counts slice updates that change the slice).
    fx.put(SLICES, annotated(&[9, 10, 11]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(programmed(), Some(0), "an annotation alone is no change");
    // Scaled down, annotated: one observation.
    fx.put(SLICES, annotated(&[9, 10]));
    until("network programming latency observed", &|| {
        programmed().is_some_and(|n| n > 0)
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        programmed(),
        Some(1),
        "one annotated change, one observation"
    );

    // 410 Gone after the slice went away unseen: the relist empties it.
    fx.delete(SLICES, "default/hostnames-1", false);
    fx.expire();
    fx.drop_watches();
    until("relist after 410", &|| {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Refused { .. }
        )
    });
    // SAFETY: kill() of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let stopping = Instant::now();
    let status = child.wait().expect("wait");
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn agent_follows_the_api_iptables() {
    agent_follows_the_api(
        "agent_follows_the_api_iptables",
        "iptables",
        Loader::Iptables,
    );
}

#[test]
fn agent_follows_the_api_nftables() {
    agent_follows_the_api(
        "agent_follows_the_api_nftables",
        "nftables",
        Loader::NftText,
    );
}
