//! `kproxy diff` on the seed article's state transitions (1 -> 2: scaled to
//! two pods; 2 -> 3: re-created as NodePort; 3 -> 4: re-created as
//! LoadBalancer), for both backends: text snapshots, the JSON report and
//! its minimal update.

use std::path::{Path, PathBuf};

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};

fn state(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed-article")
        .join(name)
}

/// Runs `kproxy diff ARGS... --before BEFORE --after AFTER` in-process.
fn diff(args: &[&str], before: &str, after: &str) -> String {
    let mut argv: Vec<String> = vec!["kproxy".into(), "diff".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.push("--before".into());
    argv.push(state(before).display().to_string());
    argv.push("--after".into());
    argv.push(state(after).display().to_string());
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{e}"));
    let Command::Diff(d) = cli.command else {
        panic!("not a diff command");
    };
    let out = kproxy_bin::diff::run(&d).unwrap_or_else(|e| panic!("{before} -> {after}: {e:#}"));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    out.stdout
}

fn iptables(before: &str, after: &str) -> String {
    diff(&["--backend", "iptables"], before, after)
}

fn nftables(before: &str, after: &str) -> String {
    diff(&["--backend", "nftables"], before, after)
}

#[test]
fn same_state_has_no_changes() {
    assert_eq!(iptables("2-scaled", "2-scaled"), "no changes\n");
    assert_eq!(nftables("2-scaled", "2-scaled"), "no changes\n");
}

#[test]
fn iptables_1_to_2_adds_an_endpoint_chain() {
    let out = iptables("1-clusterip", "2-scaled");
    assert!(out.starts_with("service default/hostnames:\n"), "{out}");
    assert!(out.contains("  nat chain KUBE-SEP-7WM3BZEYIZ2PF6R4: added\n"));
    assert!(out.contains(
        "    + #2 -A KUBE-SVC-YN5D6RYVEVZOH44Q -m comment --comment \"default/hostnames -> 10.76.0.10:9376\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-7WM3BZEYIZ2PF6R4\n"
    ));
    assert!(!out.contains("node:"), "{out}");
    insta::assert_snapshot!("diff_iptables_1_to_2", out);
}

#[test]
fn iptables_2_to_3_moves_the_cluster_ip_and_adds_the_node_port() {
    let out = iptables("2-scaled", "3-nodeport");
    assert!(out.contains("  nat chain KUBE-EXT-YN5D6RYVEVZOH44Q: added\n"));
    assert!(out.contains("  nat chain KUBE-SEP-7WM3BZEYIZ2PF6R4: removed\n"));
    assert!(out.contains("-d 10.79.255.4 --dport 80"));
    assert!(out.contains("-d 10.79.245.174 --dport 80"));
    insta::assert_snapshot!("diff_iptables_2_to_3", out);
}

#[test]
fn iptables_3_to_4_adds_the_load_balancer_ip() {
    let out = iptables("3-nodeport", "4-loadbalancer");
    assert!(out.contains(
        "    + #2 -A KUBE-SERVICES -m comment --comment \"default/hostnames loadbalancer IP\" -m tcp -p tcp -d 104.199.232.159 --dport 80 -j KUBE-EXT-YN5D6RYVEVZOH44Q\n"
    ));
    insta::assert_snapshot!("diff_iptables_3_to_4", out);
}

#[test]
fn nftables_1_to_2_changes_the_dnat_and_the_hairpin_set() {
    let out = nftables("1-clusterip", "2-scaled");
    assert!(out.contains("  kube-proxy set hairpin-connections: changed\n    + 10.76.0.10 . 10.76.0.10 . tcp . 9376\n"), "{out}");
    assert!(out.contains("numgen random mod 2"));
    insta::assert_snapshot!("diff_nftables_1_to_2", out);
}

#[test]
fn nftables_2_to_3_swaps_map_elements() {
    let out = nftables("2-scaled", "3-nodeport");
    assert!(out.contains(
        "  kube-proxy map service-nodeports: changed\n    + tcp . 31358 : goto external-EJAJPSCL-default/hostnames/tcp/\n"
    ));
    assert!(out.contains(
        "  kube-proxy set cluster-ips: changed\n    - 10.79.255.4\n    + 10.79.245.174\n"
    ));
    insta::assert_snapshot!("diff_nftables_2_to_3", out);
}

#[test]
fn nftables_3_to_4_touches_only_elements() {
    let out = nftables("3-nodeport", "4-loadbalancer");
    assert!(!out.contains(" chain "), "{out}");
    assert!(
        out.ends_with("summary: elements: 4 added, 3 removed\n"),
        "{out}"
    );
    insta::assert_snapshot!("diff_nftables_3_to_4", out);
}

#[test]
fn json_report_and_minimal_update() {
    let out = diff(&["--output", "json"], "1-clusterip", "2-scaled");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["backend"], "iptables");
    let fam = &v["families"][0];
    assert_eq!(fam["family"], "IPv4");
    assert_eq!(fam["services"][0]["service"], "default/hostnames");
    let up = &fam["update"][0];
    assert_eq!(up["table"], "nat");
    assert_eq!(
        up["create_chains"],
        serde_json::json!(["KUBE-SEP-7WM3BZEYIZ2PF6R4"])
    );
    assert_eq!(
        up["rewrite_chains"],
        serde_json::json!(["KUBE-SVC-YN5D6RYVEVZOH44Q", "KUBE-SEP-7WM3BZEYIZ2PF6R4"])
    );
    assert_eq!(up["delete_chains"], serde_json::json!([]));

    let out = diff(
        &["--backend", "nftables", "--output", "json"],
        "2-scaled",
        "3-nodeport",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let up = &v["families"][0]["update"][0];
    assert_eq!(up["table"], "kube-proxy");
    assert_eq!(
        up["rewrite_chains"],
        serde_json::json!([
            "service-EJAJPSCL-default/hostnames/tcp/",
            "external-EJAJPSCL-default/hostnames/tcp/"
        ])
    );
    let removed: Vec<&str> = up["remove_elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["element"].as_str().unwrap())
        .collect();
    assert!(removed.contains(&"10.79.255.4"), "{removed:?}");
    insta::assert_snapshot!("diff_nftables_2_to_3_json", out);
}
