//! The seed article's four cluster states (`examples/seed-article/`), each
//! compiled with no flags at all: the directory holds the Node and the
//! KubeProxyConfiguration (clusterCIDR 10.76.0.0/14, hostnameOverride).

use std::path::{Path, PathBuf};

use kproxy_tests::compile;

fn state(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed-article")
        .join(name)
}

fn run(name: &str) -> String {
    let (stdout, warnings) =
        compile(&[], &[&state(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(warnings.is_empty(), "{name}: warnings {warnings:?}");
    // Facts every state shares: the node's pods are local to the cluster
    // CIDR of the configuration file, and the service port is unnamed.
    assert!(
        stdout.contains("! -s 10.76.0.0/14 -j KUBE-MARK-MASQ"),
        "{name}"
    );
    assert!(stdout.contains("-A KUBE-SVC-YN5D6RYVEVZOH44Q "), "{name}");
    stdout
}

#[test]
fn state_1_clusterip() {
    let out = run("1-clusterip");
    assert!(out.contains("-j DNAT --to-destination 10.76.0.9:9376"));
    insta::assert_snapshot!("seed_1_clusterip", out);
}

#[test]
fn state_2_scaled() {
    let out = run("2-scaled");
    // The article: the first of the two endpoints (in string order,
    // 10.76.0.10 before 10.76.0.9) is taken with probability 1/2.
    assert!(out.contains(
        "-A KUBE-SVC-YN5D6RYVEVZOH44Q -m comment --comment \"default/hostnames -> 10.76.0.10:9376\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-7WM3BZEYIZ2PF6R4"
    ));
    insta::assert_snapshot!("seed_2_scaled", out);
}

#[test]
fn state_3_nodeport() {
    let out = run("3-nodeport");
    assert!(out.contains("--dport 31358 -j KUBE-EXT-YN5D6RYVEVZOH44Q"));
    insta::assert_snapshot!("seed_3_nodeport", out);
}

#[test]
fn state_4_loadbalancer() {
    let out = run("4-loadbalancer");
    assert!(out.contains("-d 104.199.232.159 --dport 80 -j KUBE-EXT-YN5D6RYVEVZOH44Q"));
    insta::assert_snapshot!("seed_4_loadbalancer", out);
}
