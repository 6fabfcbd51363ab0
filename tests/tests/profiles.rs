//! `--kube-proxy-version` (issue 7): the layout profiles through every
//! command that reads rules (compile, trace, graph, diff), and the version
//! errors.

use std::path::{Path, PathBuf};

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};
use kproxy_bin::compile::Output;

fn state(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed-article")
        .join(name)
}

/// Runs `kproxy ARGS...` in-process.
fn run(args: &[String]) -> Result<Output, String> {
    let mut argv = vec!["kproxy".to_string()];
    argv.extend(args.iter().cloned());
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let out = match &cli.command {
        Command::Compile(a) => kproxy_bin::compile::run(a),
        Command::Trace(a) => kproxy_bin::trace::run(a),
        Command::Graph(a) => kproxy_bin::graph::run(a),
        Command::Diff(a) => kproxy_bin::diff::run(a),
        #[allow(unreachable_patterns)]
        _ => return Err("not a command of this test".into()),
    };
    out.map_err(|e| format!("{e:#}"))
}

fn args(words: &[&str], path: &str) -> Vec<String> {
    let mut v: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    v.push(state(path).display().to_string());
    v
}

fn ok(words: &[&str], path: &str) -> String {
    run(&args(words, path))
        .unwrap_or_else(|e| panic!("{words:?} {path}: {e}"))
        .stdout
}

fn err(words: &[&str], path: &str) -> String {
    match run(&args(words, path)) {
        Ok(o) => panic!("{words:?} {path}: expected an error, got\n{}", o.stdout),
        Err(e) => e,
    }
}

#[test]
fn compile_writes_the_1_5_layout() {
    let out = ok(
        &["compile", "--kube-proxy-version", "v1.5.2"],
        "4-loadbalancer",
    );
    for line in [
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x00004000/0x00004000",
        "-A KUBE-SERVICES -m comment --comment \"default/hostnames: loadbalancer IP\" -m tcp -p tcp -d 104.199.232.159/32 --dport 80 -j KUBE-FW-NWV5X2332I4OT4T3",
        "-A KUBE-FW-NWV5X2332I4OT4T3 -m comment --comment \"default/hostnames: loadbalancer IP\" -j KUBE-MARK-DROP",
        "-A KUBE-SEP-EV2NQKURMPKCP5UI -m comment --comment default/hostnames: -m tcp -p tcp -j DNAT --to-destination 10.76.0.9:9376",
    ] {
        assert!(out.contains(line), "missing {line}\n{out}");
    }
    assert!(!out.contains("KUBE-EXT-"), "{out}");
    let out = ok(&["compile", "--kube-proxy-version", "1.5"], "2-scaled");
    assert!(
        out.contains("--probability 0.50000 -j KUBE-SEP-BWZ646KDVNVKXICT"),
        "{out}"
    );
}

#[test]
fn current_is_the_default() {
    let default = ok(&["compile"], "4-loadbalancer");
    assert_eq!(
        default,
        ok(
            &["compile", "--kube-proxy-version", "current"],
            "4-loadbalancer"
        )
    );
    assert_eq!(
        default,
        ok(
            &["compile", "--kube-proxy-version", "1.36"],
            "4-loadbalancer"
        )
    );
    let nft = ok(&["compile", "--backend", "nftables"], "4-loadbalancer");
    assert_eq!(
        nft,
        ok(
            &[
                "compile",
                "--backend",
                "nftables",
                "--kube-proxy-version",
                "v1.36.0"
            ],
            "4-loadbalancer"
        )
    );
}

#[test]
fn compile_writes_the_pre_1_36_nftables_layout() {
    for backend in ["nftables", "nftables-json"] {
        let out = ok(
            &[
                "compile",
                "--backend",
                backend,
                "--kube-proxy-version",
                "1.35",
            ],
            "2-scaled",
        );
        assert!(out.contains("mark-for-masquerade"), "{backend}\n{out}");
        assert!(!out.contains("hairpin-connections"), "{backend}\n{out}");
    }
}

#[test]
fn unsupported_versions_name_the_supported_ranges() {
    let e = err(&["compile", "--kube-proxy-version", "1.20"], "1-clusterip");
    assert!(
        e.contains("1.20") && e.contains("1.5.x") && e.contains("1.34"),
        "{e}"
    );
    let e = err(
        &[
            "compile",
            "--backend",
            "nftables",
            "--kube-proxy-version",
            "1.5",
        ],
        "1-clusterip",
    );
    assert!(e.contains("nftables") && e.contains("1.29 to 1.35"), "{e}");
    let e = err(
        &["compile", "--kube-proxy-version", "one.five"],
        "1-clusterip",
    );
    assert!(e.contains("not a kube-proxy version"), "{e}");
}

#[test]
fn old_nftables_releases_get_a_note() {
    let out = run(&args(
        &[
            "compile",
            "--backend",
            "nftables",
            "--kube-proxy-version",
            "1.30",
        ],
        "1-clusterip",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.warnings.iter().any(|w| w.contains("1.33-1.35")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn trace_follows_the_1_5_rules() {
    let out = ok(
        &[
            "trace",
            "--kube-proxy-version",
            "1.5",
            "--from",
            "external",
            "--src",
            "203.0.113.7",
            "--dst",
            "104.199.232.159:80",
        ],
        "4-loadbalancer",
    );
    assert!(
        out.contains("100.00% (1) to endpoint 10.76.0.9:9376, masqueraded"),
        "{out}"
    );
    assert!(out.contains("-A KUBE-FW-NWV5X2332I4OT4T3"), "{out}");
    assert!(out.contains("--set-xmark 0x00004000/0x00004000"), "{out}");
    let out = ok(
        &[
            "trace",
            "--kube-proxy-version",
            "1.5",
            "--from",
            "pod",
            "--src",
            "10.76.0.11",
            "--dst",
            "10.79.255.4:80",
        ],
        "2-scaled",
    );
    assert!(
        out.contains("50.00% (1/2) to endpoint 10.76.0.10:9376, not masqueraded"),
        "{out}"
    );
    assert!(out.contains("--probability 0.50000 "), "{out}");
}

#[test]
fn trace_follows_the_pre_1_36_nftables_rules() {
    let out = ok(
        &[
            "trace",
            "--backend",
            "nftables",
            "--kube-proxy-version",
            "1.35",
            "--from",
            "external",
            "--src",
            "203.0.113.7",
            "--dst",
            "104.199.232.159:80",
        ],
        "4-loadbalancer",
    );
    assert!(
        out.contains("to endpoint 10.76.0.9:9376, masqueraded"),
        "{out}"
    );
    assert!(out.contains("mark-for-masquerade"), "{out}");
    assert!(out.contains("numgen random mod 1 vmap"), "{out}");
}

#[test]
fn graph_draws_every_profile() {
    let dot = ok(&["graph", "--kube-proxy-version", "1.5"], "4-loadbalancer");
    for chain in [
        "KUBE-FW-NWV5X2332I4OT4T3",
        "KUBE-SVC-NWV5X2332I4OT4T3",
        "KUBE-SEP-EV2NQKURMPKCP5UI",
    ] {
        assert!(dot.contains(chain), "{chain}\n{dot}");
    }
    let dot = ok(
        &[
            "graph",
            "--backend",
            "nftables",
            "--kube-proxy-version",
            "1.35",
        ],
        "4-loadbalancer",
    );
    assert!(dot.contains("endpoint-"), "{dot}");
}

fn diff(words: &[&str], before: &str, after: &str) -> String {
    let mut v: Vec<String> = vec!["diff".into()];
    v.extend(words.iter().map(|s| s.to_string()));
    v.push("--before".into());
    v.push(state(before).display().to_string());
    v.push("--after".into());
    v.push(state(after).display().to_string());
    run(&v).unwrap_or_else(|e| panic!("{e}")).stdout
}

#[test]
fn diff_shows_a_kube_proxy_upgrade() {
    let out = diff(
        &[
            "--backend",
            "iptables",
            "--before-version",
            "1.5",
            "--after-version",
            "current",
        ],
        "4-loadbalancer",
        "4-loadbalancer",
    );
    assert!(
        out.contains("# kube-proxy iptables (1.5.x) -> iptables (1.34 and later)"),
        "{out}"
    );
    assert!(
        out.contains("nat chain KUBE-SVC-NWV5X2332I4OT4T3: removed"),
        "{out}"
    );
    assert!(
        out.contains("nat chain KUBE-EXT-YN5D6RYVEVZOH44Q: added"),
        "{out}"
    );
    // Removed rules are spelled as 1.5 wrote them, added ones as today.
    assert!(out.contains("- #1 -A KUBE-SEP-EV2NQKURMPKCP5UI -m comment --comment default/hostnames: -s 10.76.0.9/32 -j KUBE-MARK-MASQ"), "{out}");
    assert!(out.contains("+ #3 -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"), "{out}");
    // `--set-xmark M/M` and `--or-mark M` are the same rule in the IR: no change.
    assert!(!out.contains("chain KUBE-MARK-MASQ"), "{out}");
}

#[test]
fn diff_shows_a_switch_to_nftables() {
    let out = diff(
        &[
            "--before-backend",
            "iptables",
            "--after-backend",
            "nftables",
        ],
        "2-scaled",
        "2-scaled",
    );
    assert!(out.contains("table kube-proxy: added"), "{out}");
    assert!(out.contains("table nat: removed"), "{out}");
    assert!(out.contains("- #1 -A KUBE-SVC-YN5D6RYVEVZOH44Q"), "{out}");
    assert!(
        out.contains("kube-proxy chain service-EJAJPSCL-default/hostnames/tcp/: added"),
        "{out}"
    );
    let out = diff(
        &[
            "--backend",
            "nftables",
            "--before-version",
            "1.35",
            "--output",
            "json",
        ],
        "2-scaled",
        "2-scaled",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(v["families"][0]["before_layout"], "nftables (1.29 to 1.35)");
    assert_eq!(
        v["families"][0]["after_layout"],
        "nftables (1.36 and later)"
    );
    assert!(out.contains("mark-for-masquerade"), "{out}");
}
