//! The live cluster as input (`--kubeconfig`, `kube:`) against the API
//! server fixture ([`kproxy_tests::apiserver`]), which serves a small
//! cluster with kube-proxy's ConfigMap (kubeadm's `config.conf`, selecting
//! nftables mode) in pages of one object:
//!
//! * `compile`, `trace`, `graph`, `check` and `diff` (a side `kube:`) give
//!   exactly what they give for the same objects written to files (the
//!   ConfigMap file as kubectl prints it);
//! * the reads carry kube-proxy's label selector and follow `continue`;
//! * `--config` wins over the ConfigMap (which is then not read);
//! * a server error or a hung server is a one-line error, exit status 2.

use std::path::Path;
use std::process::Command as Process;

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};
use kproxy_tests::Scratch;
use kproxy_tests::apiserver::{
    CONFIGMAPS, Fixture, Kubeconfig, NODES, SERVICE_CIDRS, SERVICES, SLICES, kubeconfig,
};
use serde_json::{Value, json};

const KUBE_PROXY_CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\nclusterCIDR: 10.244.0.0/16\nnftables:\n  masqueradeBit: 15\n";

fn service(name: &str, ip: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": labels,
                     "uid": format!("uid-{name}"), "creationTimestamp": "2025-01-07T10:11:12Z"},
        "spec": {"type": "NodePort", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}]}})
}

fn slice(svc: &str, name: &str, ips: &[(&str, &str)], labels: Value) -> Value {
    let mut l = labels;
    l["kubernetes.io/service-name"] = json!(svc);
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": l},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|(ip, node)| json!({"addresses": [ip],
            "conditions": {"ready": true}, "nodeName": node})).collect::<Vec<_>>(),
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]})
}

fn node(name: &str, ip: &str, pod_cidr: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

/// kube-proxy's ConfigMap as `kubectl get cm kube-proxy -n kube-system -o
/// yaml` shows it (as JSON).
fn configmap() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system",
                     "uid": "9c0b8a4e-5a4b-4f7e-9b1e-0d7c9d1f2a3b",
                     "creationTimestamp": "2025-01-07T10:11:12Z",
                     "labels": {"app": "kube-proxy"}},
        "data": {"config.conf": KUBE_PROXY_CONFIG,
                 "kubeconfig.conf": "apiVersion: v1\nkind: Config\n"}})
}

/// The cluster: (resource path, object, whether kube-proxy sees it).
fn cluster() -> Vec<(&'static str, Value, bool)> {
    vec![
        (
            SERVICES,
            service("web", "10.96.0.10", json!({"app": "web"})),
            true,
        ),
        (SERVICES, service("api", "10.96.0.11", json!({})), true),
        (
            SERVICES,
            service(
                "mesh",
                "10.96.0.12",
                json!({"service.kubernetes.io/service-proxy-name": "other"}),
            ),
            false,
        ),
        (
            SLICES,
            slice(
                "web",
                "web-1",
                &[("10.244.1.5", "node1"), ("10.244.2.6", "node2")],
                json!({}),
            ),
            true,
        ),
        (
            SLICES,
            slice("api", "api-1", &[("10.244.2.7", "node2")], json!({})),
            true,
        ),
        (
            SLICES,
            slice(
                "web",
                "web-headless",
                &[("10.244.9.9", "node1")],
                json!({"service.kubernetes.io/headless": ""}),
            ),
            false,
        ),
        (NODES, node("node1", "10.0.0.1", "10.244.1.0/24"), true),
        (NODES, node("node2", "10.0.0.2", "10.244.2.0/24"), true),
        (
            SERVICE_CIDRS,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                "metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.96.0.0/16"]}}),
            true,
        ),
        (CONFIGMAPS, configmap(), true),
    ]
}

fn serve(objects: &[(&'static str, Value, bool)]) -> (Fixture, Kubeconfig) {
    let fx = Fixture::default();
    for (path, o, _) in objects {
        fx.put(path, o.clone());
    }
    fx.api().page_cap = Some(1);
    let port = fx.serve();
    (fx, kubeconfig(port))
}

/// The objects kube-proxy sees, one JSON file each (the fixture's, with
/// their resource versions), in a fresh directory (removed on drop).
fn files(test: &str, objects: &[(&'static str, Value, bool)]) -> Scratch {
    let dir = Scratch::new("kproxy-live", test);
    for (i, (_, o, seen)) in objects.iter().enumerate() {
        if *seen {
            let mut o = o.clone();
            o["metadata"]["resourceVersion"] = json!((i + 1).to_string());
            std::fs::write(dir.join(format!("{i:02}.json")), o.to_string()).unwrap();
        }
    }
    dir
}

/// Runs a command in-process: stdout, or the error on one line.
fn run(argv: &[&str]) -> Result<String, String> {
    let mut full = vec!["kproxy"];
    full.extend_from_slice(argv);
    let cli = Cli::try_parse_from(&full).map_err(|e| e.to_string())?;
    let out = match &cli.command {
        Command::Compile(a) => kproxy_bin::compile::run(a),
        Command::Trace(a) => kproxy_bin::trace::run(a),
        Command::Graph(a) => kproxy_bin::graph::run(a),
        Command::Diff(a) => kproxy_bin::diff::run(a),
        Command::Check(a) => kproxy_bin::check::run(a).map(|c| c.output),
        _ => panic!("not a command of these tests"),
    };
    out.map(|o| o.stdout).map_err(|e| format!("{e:#}"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn live_cluster_equals_its_objects_from_files() {
    let objects = cluster();
    let (fx, cfg) = serve(&objects);
    let dir = files("equal", &objects);
    let node = ["--hostname-override", "node1"];

    let live = run(&[&["compile", "--kubeconfig", p(&cfg)][..], &node].concat()).unwrap();
    let from_files = run(&[&["compile"][..], &node, &[p(&dir)]].concat()).unwrap();
    assert_eq!(live, from_files);
    // The ConfigMap's mode (nftables) and settings, the Services kube-proxy
    // sees and not the others.
    assert!(live.contains("add table ip kube-proxy"), "{live}");
    assert!(live.contains("10.96.0.10") && live.contains("10.96.0.11"));
    assert!(!live.contains("10.96.0.12") && !live.contains("10.244.9.9"));
    assert!(
        live.contains("mark set mark or 0x00008000"),
        "masqueradeBit 15"
    );

    // The reads: kube-proxy's label selector (sorted by key, as its client
    // sends it) on Services and slices, the
    // node by name, pages followed.
    let requests = fx.api().requests.clone();
    let sel = "labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name";
    for path in [SERVICES, SLICES] {
        assert!(
            requests
                .iter()
                .any(|r| r.starts_with(path) && r.contains(sel)),
            "{path}: {requests:?}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(NODES) && r.contains("fieldSelector=metadata.name%3Dnode1")),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("continue=")),
        "{requests:?}"
    );
    assert!(requests.contains(&"/api/v1/namespaces/kube-system/configmaps/kube-proxy".into()));

    // trace, graph, check: the same from the cluster as from the files.
    let trace = [
        "trace",
        "--from",
        "pod",
        "--src",
        "10.244.1.9",
        "--dst",
        "10.96.0.10:80",
    ];
    let t_live = run(&[&trace[..], &node, &["--kubeconfig", p(&cfg)]].concat()).unwrap();
    assert_eq!(
        t_live,
        run(&[&trace[..], &node, &[p(&dir)]].concat()).unwrap()
    );
    assert!(t_live.contains("10.244.2.6:8080"), "{t_live}");
    let g_live = run(&[&["graph", "kube:", "--kubeconfig", p(&cfg)][..], &node].concat()).unwrap();
    assert_eq!(
        g_live,
        run(&[&["graph"][..], &node, &[p(&dir)]].concat()).unwrap()
    );
    let dump = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/dumps/seed-4-loadbalancer.iptables-save");
    let check = ["check", "--backend", "iptables", "--rules", p(&dump)];
    let c_live = run(&[&check[..], &node, &["--kubeconfig", p(&cfg)]].concat()).unwrap();
    assert_eq!(
        c_live,
        run(&[&check[..], &node, &[p(&dir)]].concat()).unwrap()
    );
    assert!(c_live.contains("DRIFT"), "{c_live}");
}

#[test]
fn diff_sides_may_be_the_live_cluster() {
    let objects = cluster();
    let (_fx, cfg) = serve(&objects);
    let before = files("before", &objects);
    let mut scaled = objects.clone();
    scaled[4].1 = slice(
        "api",
        "api-1",
        &[("10.244.2.7", "node2"), ("10.244.1.8", "node1")],
        json!({}),
    );
    let after = files("after", &scaled);
    let node = ["--hostname-override", "node1"];
    let live = run(&[
        &[
            "diff",
            "--kubeconfig",
            p(&cfg),
            "--before",
            "kube:",
            "--after",
            p(&after),
        ][..],
        &node,
    ]
    .concat())
    .unwrap();
    let offline = run(&[
        &["diff", "--before", p(&before), "--after", p(&after)][..],
        &node,
    ]
    .concat())
    .unwrap();
    assert_eq!(live, offline);
    assert!(live.contains("10.244.1.8"), "{live}");
    // Both sides live (read once): what switching the backend changes.
    let both = run(&[
        &[
            "diff",
            "--kubeconfig",
            p(&cfg),
            "--before",
            "kube:",
            "--after",
            "kube:",
        ][..],
        &["--before-backend", "iptables"],
        &node,
    ]
    .concat())
    .unwrap();
    assert!(both.contains("KUBE-SERVICES"), "{both}");
    // --kubeconfig without a live side is a mistake.
    let e = run(&[
        "diff",
        "--kubeconfig",
        p(&cfg),
        "--before",
        p(&before),
        "--after",
        p(&after),
    ])
    .unwrap_err();
    assert!(e.contains("--before kube:"), "{e}");
}

#[test]
fn config_file_wins_over_the_configmap() {
    let objects = cluster();
    let (fx, cfg) = serve(&objects);
    let dir = Scratch::new("kproxy-live", "config");
    let file = dir.join("kube-proxy.yaml");
    std::fs::write(&file, KUBE_PROXY_CONFIG.replace("nftables", "iptables")).unwrap();
    let out = run(&[
        "compile",
        "--kubeconfig",
        p(&cfg),
        "--config",
        p(&file),
        "--hostname-override",
        "node1",
    ])
    .unwrap();
    assert!(out.contains("*nat") && !out.contains("add table"), "{out}");
    assert!(
        !fx.api().requests.iter().any(|r| r.contains("configmaps")),
        "the ConfigMap is not read when --config is given"
    );
    // A ConfigMap named but absent is an error naming it and the status.
    let e = run(&[
        "compile",
        "--kubeconfig",
        p(&cfg),
        "--kube-proxy-configmap",
        "x/y",
    ])
    .unwrap_err();
    assert!(
        e.starts_with(
            "cannot read ConfigMap (/api/v1/namespaces/x/configmaps/y) from http://127.0.0.1:"
        ) && e.ends_with(": HTTP 404 NotFound"),
        "{e}"
    );
}

struct Run {
    code: Option<i32>,
    stderr: String,
}

fn binary(args: &[&str]) -> Run {
    let out = Process::new(kproxy_tests::kproxy_binary())
        .args(args)
        .env_remove("KPROXY_LOG")
        .output()
        .expect("run kproxy");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    Run {
        code: out.status.code(),
        stderr,
    }
}

#[test]
fn server_errors_and_timeouts_are_one_line_and_exit_2() {
    let objects = cluster();
    let (fx, cfg) = serve(&objects);
    let dir = Scratch::new("kproxy-live", "err");
    let config = dir.join("err.yaml");
    std::fs::write(&config, KUBE_PROXY_CONFIG).unwrap();

    fx.api().fail_next = 1;
    let r = binary(&["compile", "--kubeconfig", p(&cfg)]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("kproxy: error: cannot read ConfigMap (/api/v1/namespaces/kube-system/configmaps/kube-proxy) from http://127.0.0.1:")
            && r.stderr.trim_end().ends_with("HTTP 500 InternalError: etcd is sad"),
        "{}",
        r.stderr
    );

    fx.api().fail_next = 10;
    let dump = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/dumps/seed-4-loadbalancer.iptables-save");
    let r = binary(&[
        "check",
        "--rules",
        p(&dump),
        "--config",
        p(&config),
        "--kubeconfig",
        p(&cfg),
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cannot list Services (/api/v1/services) from http://127.0.0.1:")
            && r.stderr.contains(": HTTP 500"),
        "{}",
        r.stderr
    );
    fx.api().fail_next = 0;

    fx.api().stall = true;
    let start = std::time::Instant::now();
    let r = binary(&[
        "trace",
        "--kubeconfig",
        p(&cfg),
        "--request-timeout",
        "1s",
        "--from",
        "pod",
        "--src",
        "10.244.1.9",
        "--dst",
        "10.96.0.10:80",
    ]);
    fx.api().stall = false;
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no answer within 1s (--request-timeout)"),
        "{}",
        r.stderr
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));

    // Nothing listening: one line too.
    let gone = kubeconfig(1);
    let r = binary(&["graph", "--kubeconfig", p(&gone), "--request-timeout", "5s"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("from http://127.0.0.1:1"), "{}", r.stderr);
}
