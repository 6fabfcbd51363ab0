//! `kproxy graph` on the seed article's four cluster states
//! (`examples/seed-article/`): DOT snapshots for iptables and one
//! nftables state, the `--service` subgraph and the SVG rendering.

use std::path::{Path, PathBuf};

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};
use kproxy_tests::Scratch;

fn state(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed-article")
        .join(name)
}

/// Runs `kproxy graph ARGS... STATE` in-process.
fn graph(args: &[&str], name: &str) -> Result<String, String> {
    let mut argv: Vec<String> = vec!["kproxy".into(), "graph".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.push(state(name).display().to_string());
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let Command::Graph(g) = cli.command else {
        return Err("not a graph command".into());
    };
    let out = kproxy_bin::graph::run(&g).map_err(|e| format!("{e:#}"))?;
    assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
    Ok(out.stdout)
}

fn dot(args: &[&str], name: &str) -> String {
    graph(args, name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The path every state shares: the hooks reach the service chain, which
/// reaches the pod 10.76.0.9:9376 through its endpoint chain.
fn assert_common_path(out: &str) {
    for edge in [
        "\"ip4/nat/PREROUTING\" -> \"ip4/nat/KUBE-SERVICES\"",
        "\"ip4/nat/OUTPUT\" -> \"ip4/nat/KUBE-SERVICES\"",
        "\"ip4/nat/KUBE-SEP-Z2UFIHORS27IVXDM\" -> \"endpoint/10.76.0.9:9376\" [label=\"tcp\"]",
        "\"ip4/nat/KUBE-SEP-Z2UFIHORS27IVXDM\" -> \"ip4/nat/KUBE-MARK-MASQ\" [label=\"-s 10.76.0.9\"]",
    ] {
        assert!(out.contains(edge), "missing {edge}:\n{out}");
    }
}

#[test]
fn state_1_clusterip() {
    let out = dot(&[], "1-clusterip");
    assert_common_path(&out);
    assert!(out.contains(
        "\"ip4/nat/KUBE-SERVICES\" -> \"ip4/nat/KUBE-SVC-YN5D6RYVEVZOH44Q\" [label=\"tcp 10.79.255.4:80\"]"
    ));
    assert!(out.contains(
        "\"ip4/nat/KUBE-SVC-YN5D6RYVEVZOH44Q\" -> \"ip4/nat/KUBE-MARK-MASQ\" [label=\"tcp 10.79.255.4:80 ! -s 10.76.0.0/14\"]"
    ));
    insta::assert_snapshot!("graph_1_clusterip", out);
}

#[test]
fn state_2_scaled() {
    let out = dot(&[], "2-scaled");
    assert_common_path(&out);
    // The article: the first endpoint (string order) is taken with p=1/2.
    assert!(out.contains(
        "\"ip4/nat/KUBE-SVC-YN5D6RYVEVZOH44Q\" -> \"ip4/nat/KUBE-SEP-7WM3BZEYIZ2PF6R4\" [label=\"p=0.5\"]"
    ));
    assert!(out.contains("\"endpoint/10.76.0.10:9376\""));
    insta::assert_snapshot!("graph_2_scaled", out);
}

#[test]
fn state_3_nodeport() {
    let out = dot(&[], "3-nodeport");
    assert_common_path(&out);
    assert!(out.contains(
        "\"ip4/nat/KUBE-NODEPORTS\" -> \"ip4/nat/KUBE-EXT-YN5D6RYVEVZOH44Q\" [label=\"tcp dport 31358\"]"
    ));
    insta::assert_snapshot!("graph_3_nodeport", out);
}

#[test]
fn state_4_loadbalancer() {
    let out = dot(&[], "4-loadbalancer");
    assert_common_path(&out);
    assert!(out.contains(
        "\"ip4/nat/KUBE-SERVICES\" -> \"ip4/nat/KUBE-EXT-YN5D6RYVEVZOH44Q\" [label=\"tcp 104.199.232.159:80\"]"
    ));
    insta::assert_snapshot!("graph_4_loadbalancer", out);
}

#[test]
fn nftables_verdict_maps_fan_out() {
    let out = dot(&["--backend", "nftables"], "4-loadbalancer");
    let svc = "ip4/kube-proxy/service-EJAJPSCL-default/hostnames/tcp/";
    let ext = "ip4/kube-proxy/external-EJAJPSCL-default/hostnames/tcp/";
    for edge in [
        "\"ip4/kube-proxy/services\" -> \"ip4/kube-proxy/@service-ips\" [label=\"daddr . l4proto . dport\"]"
            .to_string(),
        format!(
            "\"ip4/kube-proxy/@service-ips\" -> \"{svc}\" [label=\"10.79.250.127 . tcp . 80\"]"
        ),
        format!(
            "\"ip4/kube-proxy/@service-ips\" -> \"{ext}\" [label=\"104.199.232.159 . tcp . 80\"]"
        ),
        format!("\"ip4/kube-proxy/@service-nodeports\" -> \"{ext}\" [label=\"tcp . 30675\"]"),
        format!("\"{svc}\" -> \"endpoint/10.76.0.9:9376\" [label=\"tcp\"]"),
    ] {
        assert!(out.contains(&edge), "missing {edge}:\n{out}");
    }
    insta::assert_snapshot!("graph_4_loadbalancer_nftables", out);
}

#[test]
fn nftables_random_dnat_has_probabilities() {
    let out = dot(&["--backend", "nftables"], "2-scaled");
    let svc = "ip4/kube-proxy/service-EJAJPSCL-default/hostnames/tcp/";
    for ep in ["10.76.0.10:9376", "10.76.0.9:9376"] {
        let edge = format!("\"{svc}\" -> \"endpoint/{ep}\" [label=\"tcp p=0.5\"]");
        assert!(out.contains(&edge), "missing {edge}:\n{out}");
    }
}

#[test]
fn service_subgraph_drops_node_level_chains() {
    let full = dot(&[], "4-loadbalancer");
    let sub = dot(&["--service", "default/hostnames"], "4-loadbalancer");
    assert!(full.contains("KUBE-FORWARD"));
    assert!(!sub.contains("KUBE-FORWARD"));
    assert!(!sub.contains("KUBE-POSTROUTING"));
    assert_common_path(&sub);
    assert!(sub.contains("\"ip4/nat/KUBE-SERVICES\" -> \"ip4/nat/KUBE-NODEPORTS\""));
    let err = graph(&["--service", "default/nope"], "4-loadbalancer").unwrap_err();
    assert!(
        err.contains("services with rules: default/hostnames"),
        "{err}"
    );
    let err = graph(&["--service", "nope"], "4-loadbalancer").unwrap_err();
    assert!(err.contains("not namespace/name"), "{err}");
}

#[test]
fn svg_is_laid_out_without_graphviz() {
    let out = dot(
        &["--format", "svg", "--layout", "embedded"],
        "4-loadbalancer",
    );
    assert!(out.contains("<svg"), "{out}");
    assert!(out.trim_end().ends_with("</svg>"));
    for label in [
        "nat PREROUTING",
        "KUBE-SVC-YN5D6RYVEVZOH44Q",
        "10.76.0.9:9376",
        "tcp 104.199.232.159:80",
    ] {
        assert!(out.contains(label), "missing {label}");
    }
}

/// Graphviz `dot` lays out the same graph (`graphviz` is in `.ci/run`).
#[test]
fn svg_is_laid_out_by_graphviz() {
    let out = dot(&["--format", "svg", "--layout", "dot"], "4-loadbalancer");
    assert!(out.contains("<svg"), "{out}");
    assert!(out.contains("Generated by graphviz"), "{out}");
    // (dot writes `-` as `&#45;`.)
    for label in ["nat PREROUTING", "10.76.0.9:9376", "tcp 104.199.232.159:80"] {
        assert!(out.contains(label), "missing {label}");
    }
}

/// `docs/seed-loadbalancer.svg` is what
/// `kproxy graph --format svg --layout embedded --service default/hostnames examples/seed-article/4-loadbalancer`
/// prints; regenerate it with `KPROXY_BLESS=1`.
#[test]
fn readme_picture_is_current() {
    let out = dot(
        &[
            "--format",
            "svg",
            "--layout",
            "embedded",
            "--service",
            "default/hostnames",
        ],
        "4-loadbalancer",
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/seed-loadbalancer.svg");
    if std::env::var_os("KPROXY_BLESS").is_some() {
        std::fs::write(&path, &out).expect("write docs/seed-loadbalancer.svg");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == out,
        "docs/seed-loadbalancer.svg is stale: run KPROXY_BLESS=1 cargo test -p kproxy-tests --test graph"
    );
}

/// `kproxy graph ARGS... FILE` in-process on a synthetic cluster of
/// `services` Services x 10 endpoints: (stdout, warnings).
fn synthetic_graph(args: &[&str], services: u32) -> (String, Vec<String>) {
    let dir = Scratch::new(
        &format!("kproxy-graph-{services}"),
        &args.join("_").replace('/', "-"),
    );
    let file = dir.join("cluster.json");
    std::fs::write(&file, kproxy_core::synthetic::manifests(services, 10)).expect("write");
    let mut argv: Vec<String> = vec!["kproxy".into(), "graph".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.push(file.display().to_string());
    let cli = Cli::try_parse_from(&argv).expect("arguments");
    let Command::Graph(g) = cli.command else {
        panic!("not a graph command");
    };
    let out = kproxy_bin::graph::run(&g).expect("kproxy graph");
    (out.stdout, out.warnings)
}

/// Nodes plus edges of a DOT text as `to_dot` writes it.
fn dot_size(dot: &str) -> usize {
    dot.lines()
        .filter(|l| l.contains("[label=") || l.contains(" -> "))
        .count()
}

/// 1k Services: the graph is summarised to the node-level chains (hooks,
/// KUBE-SERVICES, KUBE-NODEPORTS, masquerading) plus one node for all the
/// Services' chains and one for their endpoints, with a note in the graph
/// and a warning; `--service` still draws one Service in full.
#[test]
fn thousand_services_are_summarised() {
    let (out, warnings) = synthetic_graph(&[], 1000);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("bigger than the layout's budget")
                && w.contains("one node per table")),
        "{warnings:?}"
    );
    assert!(
        out.contains("  // the Services' chains and endpoints are folded"),
        "{out}"
    );
    assert!(out.contains("  label=\"the Services' chains"), "{out}");
    assert!(
        out.contains("label=\"1000 Services (their chains)\""),
        "{out}"
    );
    assert!(out.contains("label=\"12000 endpoints\""), "{out}");
    for chain in ["KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"] {
        assert!(
            out.contains(&format!("\"ip4/nat/{chain}\"")),
            "missing {chain}:\n{out}"
        );
    }
    assert!(!out.contains("KUBE-SVC-"), "{out}");
    assert!(!out.contains("KUBE-SEP-"), "{out}");
    assert!(dot_size(&out) <= kproxy_bin::graph::DOT_BUDGET, "{out}");

    // The endpoint-folded view keeps each Service's chains, with a count.
    let (folded, _) = synthetic_graph(&["--detail", "endpoints-folded"], 1000);
    assert!(folded.contains("KUBE-SVC-"));
    assert!(!folded.contains("KUBE-SEP-"));
    assert!(!folded.contains("\"endpoint/"));
    // 10 endpoints each, 20 for the fifth with a UDP port too.
    assert_eq!(folded.matches(": 10 endpoints\"").count(), 800);
    assert_eq!(folded.matches(": 20 endpoints\"").count(), 200);

    // --service asks for detail: one Service, in full, no note.
    let (one, warnings) = synthetic_graph(&["--service", "ns7/svc7"], 1000);
    assert!(
        warnings.iter().all(|w| !w.contains("budget")),
        "{warnings:?}"
    );
    assert!(!one.contains("// "), "{one}");
    assert_eq!(one.matches("\"endpoint/").count() / 2, 10, "{one}");
}

/// The embedded layout has a smaller budget: a graph dot draws in full is
/// summarised for it, and the note is in the SVG.
#[test]
fn embedded_layout_summarises_sooner() {
    let (dot_text, warnings) = synthetic_graph(&[], 20);
    assert!(
        warnings.iter().all(|w| !w.contains("budget")),
        "{warnings:?}"
    );
    assert!(dot_size(&dot_text) > kproxy_bin::graph::EMBEDDED_BUDGET);
    let (svg, warnings) = synthetic_graph(&["--format", "svg", "--layout", "embedded"], 20);
    assert!(
        warnings.iter().any(|w| w.contains("budget (600)")),
        "{warnings:?}"
    );
    assert!(
        svg.contains("<!-- kproxy: each Service's endpoint chains"),
        "{svg}"
    );
    assert!(svg.contains("ns3/svc3: 10 endpoints"), "{svg}");
}
