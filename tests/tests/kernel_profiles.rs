//! Kernel tests of the version profiles (issue 7): the kube-proxy 1.5
//! iptables layout reproduces, read back from the kernel with
//! `iptables-save`, every rule line of the seed article (kube-proxy 1.5.2);
//! the 1.5 and pre-1.36 nftables layouts load and carry real traffic.
//!
//! Same gate as `kernel_e2e.rs`: without root each test prints
//! `SKIPPED: <test>: <reason>` and passes, except with `CI=true`.

mod kernel;

use std::path::{Path, PathBuf};

use kernel::traffic::sock;
use kernel::*;

const HOSTNAMES: [&str; 2] = ["pod-9", "pod-10"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The rule lines the 2017 article shows per state, as `iptables-save`
/// printed them on kube-proxy 1.5.2 (shared/seed/DIGEST.md).
const ARTICLE: [(&str, &[&str]); 4] = [
    (
        "1-clusterip",
        &[
            r#"-A KUBE-SERVICES ! -s 10.76.0.0/14 -d 10.79.255.4/32 -p tcp -m comment --comment "default/hostnames: cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ"#,
            r#"-A KUBE-SERVICES -d 10.79.255.4/32 -p tcp -m comment --comment "default/hostnames: cluster IP" -m tcp --dport 80 -j KUBE-SVC-NWV5X2332I4OT4T3"#,
            r#"-A KUBE-SVC-NWV5X2332I4OT4T3 -m comment --comment "default/hostnames:" -j KUBE-SEP-EV2NQKURMPKCP5UI"#,
            r#"-A KUBE-SEP-EV2NQKURMPKCP5UI -s 10.76.0.9/32 -m comment --comment "default/hostnames:" -j KUBE-MARK-MASQ"#,
            r#"-A KUBE-SEP-EV2NQKURMPKCP5UI -p tcp -m comment --comment "default/hostnames:" -m tcp -j DNAT --to-destination 10.76.0.9:9376"#,
            r#"-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"#,
            r#"-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE"#,
            r#"-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#,
        ],
    ),
    (
        "2-scaled",
        &[
            r#"-A KUBE-SEP-BWZ646KDVNVKXICT -s 10.76.0.10/32 -m comment --comment "default/hostnames:" -j KUBE-MARK-MASQ"#,
            r#"-A KUBE-SEP-BWZ646KDVNVKXICT -p tcp -m comment --comment "default/hostnames:" -m tcp -j DNAT --to-destination 10.76.0.10:9376"#,
            r#"-A KUBE-SVC-NWV5X2332I4OT4T3 -m comment --comment "default/hostnames:" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-BWZ646KDVNVKXICT"#,
            r#"-A KUBE-SVC-NWV5X2332I4OT4T3 -m comment --comment "default/hostnames:" -j KUBE-SEP-EV2NQKURMPKCP5UI"#,
        ],
    ),
    (
        "3-nodeport",
        &[
            r#"-A KUBE-NODEPORTS -p tcp -m comment --comment "default/hostnames:" -m tcp --dport 31358 -j KUBE-MARK-MASQ"#,
            r#"-A KUBE-NODEPORTS -p tcp -m comment --comment "default/hostnames:" -m tcp --dport 31358 -j KUBE-SVC-NWV5X2332I4OT4T3"#,
            r#"-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"#,
        ],
    ),
    (
        "4-loadbalancer",
        &[
            r#"-A KUBE-SERVICES -d 104.199.232.159/32 -p tcp -m comment --comment "default/hostnames: loadbalancer IP" -m tcp --dport 80 -j KUBE-FW-NWV5X2332I4OT4T3"#,
            r#"-A KUBE-FW-NWV5X2332I4OT4T3 -m comment --comment "default/hostnames: loadbalancer IP" -j KUBE-MARK-MASQ"#,
            r#"-A KUBE-FW-NWV5X2332I4OT4T3 -m comment --comment "default/hostnames: loadbalancer IP" -j KUBE-SVC-NWV5X2332I4OT4T3"#,
            r#"-A KUBE-FW-NWV5X2332I4OT4T3 -m comment --comment "default/hostnames: loadbalancer IP" -j KUBE-MARK-DROP"#,
        ],
    ),
];

/// iptables 1.4 (the article's) quoted every comment; 1.8 quotes only
/// comments that need it. Compare without the quotes of one-word comments.
fn unquote_single_words(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("--comment \"") {
        let (head, tail) = rest.split_at(i + "--comment ".len());
        out.push_str(head);
        let body = &tail[1..];
        let end = body.find('"').unwrap_or(body.len());
        let text = &body[..end];
        if text.contains(char::is_whitespace) {
            out.push('"');
            out.push_str(text);
            out.push('"');
        } else {
            out.push_str(text);
        }
        rest = body.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

#[test]
fn seed_article_rules_reproduce_with_kube_proxy_1_5() {
    let test = "seed_article_rules_reproduce_with_kube_proxy_1_5";
    if !gate_loader(test, Loader::Iptables) {
        return;
    }
    if tool("iptables-save").is_none() {
        skip(test, "missing iptables-save (apt-get install iptables)");
        return;
    }
    let guard = testbed::Namespaces::new();
    let ns = guard
        .create("v15")
        .unwrap_or_else(|e| panic!("{test}: cannot create a namespace: {e}"));
    for (state, lines) in ARTICLE {
        let dir = repo().join("examples/seed-article").join(state);
        let args: Vec<String> = [
            "--kube-proxy-version",
            "v1.5.2",
            "--standalone",
            "--backend",
            "iptables",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (rules, _) = kproxy_tests::compile(&args, &[&dir])
            .unwrap_or_else(|e| panic!("{test}: compile {state}: {e}"));
        Loader::Iptables
            .load(&ns, Family::V4, &rules, false)
            .unwrap_or_else(|e| panic!("{test}: {state}: iptables-restore: {e}\n{rules}"));
        let saved = netns_exec(&ns, &["iptables-save"])
            .unwrap_or_else(|e| panic!("{test}: {state}: iptables-save: {e}"));
        let have: Vec<String> = saved.lines().map(unquote_single_words).collect();
        let missing: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !have.contains(&unquote_single_words(l)))
            .collect();
        assert!(
            missing.is_empty(),
            "{test}: {state}: the article's lines are missing from iptables-save:\n{}\n--- iptables-save:\n{saved}",
            missing.join("\n")
        );
    }
}

/// The 1.5 layout carries traffic: ClusterIP spread from a pod and from the
/// node, NodePort from the client (masqueraded).
#[test]
fn kube_proxy_1_5_rules_carry_traffic() {
    let test = "kube_proxy_1_5_rules_carry_traffic";
    let Some(bed) = testbed(test, Loader::Iptables) else {
        return;
    };
    let v15 = ["--kube-proxy-version", "1.5"];
    bed.load(
        Loader::Iptables,
        Family::V4,
        &compile_fixture(Loader::Iptables, Family::V4, "clusterip.yaml", &v15),
    );
    let svc = sock("10.79.255.4", 80);
    bed.expect_spread(
        "1.5 ClusterIP from pod-11",
        Ns::Pod(11),
        svc,
        60,
        &HOSTNAMES,
    );
    bed.expect_spread("1.5 ClusterIP from the node", Ns::Node, svc, 60, &HOSTNAMES);
    bed.load(
        Loader::Iptables,
        Family::V4,
        &compile_fixture(Loader::Iptables, Family::V4, "nodeport.yaml", &v15),
    );
    let seen = bed.expect_tcp(
        "1.5 NodePort from the client",
        Ns::Client,
        None,
        sock(NODE_IP, 31358),
        "pod-9",
    );
    assert_eq!(seen, ip(BRIDGE_IP), "1.5 NodePort traffic is masqueraded");
}

/// The pre-1.36 nftables layout loads (`nft -f` and `nft -j -f`) and
/// carries ClusterIP traffic.
fn nft_pre_1_36(loader: Loader, test: &str) {
    let Some(bed) = testbed(test, loader) else {
        return;
    };
    let v = ["--kube-proxy-version", "1.35"];
    bed.load(
        loader,
        Family::V4,
        &compile_fixture(loader, Family::V4, "clusterip.yaml", &v),
    );
    let listed = netns_exec(
        &bed.ns(Ns::Node),
        &["nft", "list", "table", "ip", "kube-proxy"],
    )
    .unwrap_or_else(|e| panic!("{test}: nft list: {e}"));
    assert!(
        listed.contains("chain mark-for-masquerade") && !listed.contains("hairpin-connections"),
        "{test}: not the pre-1.36 layout:\n{listed}"
    );
    let svc = sock("10.79.255.4", 80);
    bed.expect_spread(
        "1.35 ClusterIP from pod-11",
        Ns::Pod(11),
        svc,
        60,
        &HOSTNAMES,
    );
    // Hairpin: pod-9 reaching itself through the ClusterIP is masqueraded
    // by its endpoint chain.
    let o = bed.tcp(Ns::Pod(9), None, svc);
    let (_, seen) = bed.expect_answer("1.35 ClusterIP from pod-9", &o);
    if seen != ip("10.76.0.9") {
        assert_eq!(seen, ip(BRIDGE_IP), "hairpin traffic must be masqueraded");
    }
}

#[test]
fn nft_pre_1_36_text() {
    nft_pre_1_36(Loader::NftText, "nft_pre_1_36_text");
}

#[test]
fn nft_pre_1_36_json() {
    nft_pre_1_36(Loader::NftJson, "nft_pre_1_36_json");
}

/// The pre-1.36 golden case (upstream TestOverallNFTablesRules) loads into
/// the kernel as text and as JSON.
#[test]
fn nft_pre_1_36_golden_loads() {
    let test = "nft_pre_1_36_golden_loads";
    if !gate_loader(test, Loader::NftText) {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/nftables/test_overall_nftables_rules_pre_1_36");
    let guard = testbed::Namespaces::new();
    let ns = guard
        .create("nft135")
        .unwrap_or_else(|e| panic!("{test}: cannot create a namespace: {e}"));
    let input = dir.join("input.yaml");
    for (loader, backend) in [
        (Loader::NftText, "--backend=nftables"),
        (Loader::NftJson, "--backend=nftables-json"),
    ] {
        let mut args = kproxy_tests::read_args(&dir.join("args"));
        args.push(backend.into());
        let (rules, _) = kproxy_tests::compile(&args, &[&input])
            .unwrap_or_else(|e| panic!("{test}: compile: {e}"));
        loader
            .load(&ns, Family::V4, &rules, false)
            .unwrap_or_else(|e| panic!("{test}: {loader:?}: {e}"));
        let listed = netns_exec(&ns, &["nft", "list", "table", "ip", "kube-proxy"])
            .unwrap_or_else(|e| panic!("{test}: nft list: {e}"));
        assert!(
            listed.contains("numgen random mod 2 vmap"),
            "{test}: {loader:?}: svc4's dispatch is missing:\n{listed}"
        );
    }
}

#[test]
fn comment_quotes_are_compared_loosely() {
    assert_eq!(
        unquote_single_words(r#"-m comment --comment "a:" -m comment --comment "a b" -j X"#),
        r#"-m comment --comment a: -m comment --comment "a b" -j X"#
    );
}
