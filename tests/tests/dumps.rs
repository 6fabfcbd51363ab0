//! Real dumps of a node's rules (`tests/fixtures/dumps/`, taken with
//! iptables v1.8.9 (nf_tables) and nft 1.0.6 after loading kproxy's
//! output for the seed article's states) parse back to the IR the backends
//! build, and `kproxy check` reads them without a kernel.

use std::path::{Path, PathBuf};

use clap::Parser;
use kproxy_core::canon::canonical;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/dumps")
        .join(name)
}

fn seed(state: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed-article")
        .join(state)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture")
}

fn built(state: &str, backend: &str) -> kproxy_core::ir::Ruleset {
    let args: Vec<String> = ["--standalone", "--backend", backend]
        .map(String::from)
        .to_vec();
    kproxy_tests::compile_ir(&args, &[&seed(state)])
        .expect("compile")
        .remove(0)
        .ruleset
}

#[test]
fn iptables_save_dump_parses_to_the_built_ir() {
    let dump = kproxy_iptables::parse::parse(&read("seed-4-loadbalancer.iptables-save"), None)
        .expect("parse");
    assert_eq!(
        canonical(&dump),
        canonical(&built("4-loadbalancer", "iptables"))
    );
}

#[test]
fn nft_json_dump_parses_to_the_built_ir() {
    let dump = kproxy_nft::parse::parse_json(&read("seed-4-loadbalancer.nft.json")).expect("parse");
    assert!(dump.skipped.is_empty());
    assert_eq!(
        canonical(&dump.ruleset),
        canonical(&built("4-loadbalancer", "nftables"))
    );
}

fn check(rules: &str, state: &str) -> kproxy_bin::check::CheckOutput {
    let argv = [
        "kproxy".to_string(),
        "check".into(),
        "--rules".into(),
        fixture(rules).display().to_string(),
        seed(state).display().to_string(),
    ];
    let cli = kproxy_bin::cli::Cli::try_parse_from(argv).expect("arguments");
    let kproxy_bin::cli::Command::Check(args) = cli.command else {
        panic!("not check");
    };
    kproxy_bin::check::run(&args).expect("check")
}

#[test]
fn check_is_quiet_on_a_node_in_sync() {
    for rules in [
        "seed-4-loadbalancer.iptables-save",
        "seed-4-loadbalancer.nft.json",
    ] {
        let out = check(rules, "4-loadbalancer");
        assert!(!out.drift, "{rules}: {}", out.output.stdout);
        assert!(
            out.output.stdout.contains("in sync"),
            "{}",
            out.output.stdout
        );
    }
}

#[test]
fn check_reports_a_node_that_missed_a_scale_down() {
    let out = check("seed-2-scaled.iptables-save", "1-clusterip");
    assert!(out.drift);
    let text = &out.output.stdout;
    assert!(text.contains("nat chain KUBE-SEP-7WM3BZEYIZ2PF6R4 (service default/hostnames): not produced by the compile"), "{text}");
    assert!(text.contains("+ #2 -A KUBE-SVC-YN5D6RYVEVZOH44Q"), "{text}");
    assert!(text.contains("treated differently"), "{text}");
}
