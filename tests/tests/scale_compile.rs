//! `kproxy compile` and `kproxy diff` at 1k Services x 10 endpoints (the
//! synthetic cluster's JSON List, as `kubectl get -o json` prints it, and
//! the same cluster as kubectl's YAML would be read): the results, not the
//! timings (those are `cargo bench -p kproxy-bin --bench scale`).

use std::path::{Path, PathBuf};

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};
use kproxy_core::model::{IpFamily, LocalDetector, NodeConfig};
use kproxy_core::synthetic::{cluster, manifests};
use kproxy_tests::Scratch;

const SERVICES: u32 = 1000;
/// Every fifth Service has a UDP port too.
const PORTS: usize = 1200;

/// The node the commands compile for, as flags and as the model's config.
const NODE_ARGS: &[&str] = &[
    "--hostname-override",
    "node-3",
    "--cluster-cidr",
    "10.0.0.0/8",
];

fn node() -> NodeConfig {
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    node
}

/// Writes `text` to a fresh file of this test's own directory
/// ([`Scratch`]`::new("kproxy-scale", test)`, removed when the test drops it).
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn run(argv: Vec<String>) -> String {
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{e}"));
    let out = match &cli.command {
        Command::Compile(c) => kproxy_bin::compile::run(c),
        Command::Diff(d) => kproxy_bin::diff::run(d),
        _ => panic!("not compile or diff"),
    }
    .unwrap_or_else(|e| panic!("{e:#}"));
    out.stdout
}

fn compile(backend: &str, path: &Path) -> String {
    let mut argv: Vec<String> = ["kproxy", "compile", "--quiet", "--backend", backend]
        .iter()
        .chain(NODE_ARGS)
        .map(ToString::to_string)
        .collect();
    argv.push(path.display().to_string());
    run(argv)
}

#[test]
fn compile_1k_json_list_equals_compiling_the_model() {
    let dir = Scratch::new("kproxy-scale", "compile");
    let path = write(&dir, "list.json", &manifests(SERVICES, 10));
    let state = cluster(SERVICES, 10);

    let ipt = compile("iptables", &path);
    let want = kproxy_iptables::compile(&state, &node(), kproxy_iptables::Options::default())
        .expect("iptables");
    assert!(ipt == want, "iptables output differs from the model's");
    assert_eq!(
        ipt.lines().filter(|l| l.starts_with(":KUBE-SVC-")).count(),
        PORTS
    );
    assert_eq!(
        ipt.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count(),
        PORTS * 10
    );

    let nft = compile("nftables", &path);
    let want = kproxy_nft::compile(&state, &node(), kproxy_nft::Options::default()).expect("nft");
    assert!(nft == want, "nftables output differs from the model's");
    assert_eq!(
        nft.lines()
            .filter(|l| l.starts_with("add chain ip kube-proxy service-") && l.contains('/'))
            .count(),
        PORTS
    );

    let json = compile("nftables-json", &path);
    let v: serde_json::Value = serde_json::from_str(&json).expect("nft -j batch");
    let chains = v["nftables"]
        .as_array()
        .expect("batch")
        .iter()
        .filter(|c| {
            c["add"]["chain"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("service-") && n.contains('/'))
        })
        .count();
    assert_eq!(chains, PORTS);
}

#[test]
fn diff_1k_names_exactly_the_added_services() {
    let dir = Scratch::new("kproxy-scale", "diff");
    let before = write(&dir, "before.json", &manifests(SERVICES, 10));
    let after = write(&dir, "after.json", &manifests(SERVICES + 10, 10));
    let diff = |a: &Path, b: &Path| {
        let mut argv: Vec<String> = ["kproxy", "diff", "--quiet", "--backend", "iptables"]
            .iter()
            .chain(NODE_ARGS)
            .map(ToString::to_string)
            .collect();
        argv.extend(["--before".into(), a.display().to_string()]);
        argv.extend(["--after".into(), b.display().to_string()]);
        run(argv)
    };
    assert_eq!(diff(&before, &before), "no changes\n");
    let out = diff(&before, &after);
    let mut services: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("service "))
        .collect();
    services.sort_unstable();
    let mut want: Vec<String> = (SERVICES..SERVICES + 10)
        .map(|i| format!("ns{}/svc{i}:", i % 50))
        .collect();
    want.sort_unstable();
    assert_eq!(services, want, "{out}");
    assert!(out.contains(": added\n"), "{out}");
}
