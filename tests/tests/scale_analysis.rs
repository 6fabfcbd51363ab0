//! `check` and `trace` at 1k Services x 10 endpoints (the synthetic
//! cluster): results, not timings (those are in the `scale_analysis`
//! bench). A drift in one Service's endpoint chain is found and named.

use kproxy_core::check::{Mode, check};
use kproxy_core::equivalence::Options;
use kproxy_core::ir::{Ruleset, Verdict};
use kproxy_core::model::{IpFamily, LocalDetector, NodeConfig, Protocol};
use kproxy_core::plan::plan;
use kproxy_core::synthetic::cluster;
use kproxy_core::trace::{OutcomeKind, Packet, PacketOrigin, TraceEnv, trace};

fn node() -> NodeConfig {
    let mut n = NodeConfig::new(IpFamily::V4, "node-3");
    n.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().unwrap());
    n.node_addresses = vec!["192.168.0.3".parse().unwrap()];
    n
}

fn iptables(services: u32) -> (Ruleset, NodeConfig) {
    let node = node();
    let p = plan(&cluster(services, 10), &node);
    let rs = kproxy_iptables::build(
        &p,
        kproxy_iptables::LayoutOptions {
            standalone: true,
            ..Default::default()
        },
    );
    (rs, node)
}

/// The first Service and its endpoint chains: those that DNAT to its
/// endpoints, `10.0.0.0` .. `10.0.0.9` port 8080 (see `synthetic::cluster`).
fn first_service(rs: &Ruleset) -> (String, Vec<String>) {
    let nat = rs.table("nat").unwrap();
    let ours = |r: &kproxy_core::ir::Rule| match r.verdict {
        Some(Verdict::Dnat(to)) => {
            to.port() == 8080
                && matches!(to.ip(), std::net::IpAddr::V4(v) if v.octets()[..3] == [10, 0, 0] && v.octets()[3] < 10)
        }
        _ => false,
    };
    let seps = nat
        .chains
        .iter()
        .filter(|c| c.name.as_str().starts_with("KUBE-SEP-") && c.rules.iter().any(ours))
        .map(|c| c.name.to_string())
        .collect();
    (String::from("ns0/svc0"), seps)
}

/// Drift: the DNAT of endpoint chain `sep` goes to port 9999 instead;
/// returns where it went before.
fn move_endpoint(rs: &mut Ruleset, sep: &str) -> std::net::SocketAddr {
    let chain = rs.table_mut("nat").unwrap().chain_mut(sep).unwrap();
    let dnat = chain
        .rules
        .iter_mut()
        .find_map(|r| match &mut r.verdict {
            Some(Verdict::Dnat(to)) => Some(to),
            _ => None,
        })
        .unwrap();
    let was = *dnat;
    dnat.set_port(9999);
    was
}

#[test]
fn check_finds_and_names_one_endpoint_drift_at_1k() {
    let (compiled, node) = iptables(1000);
    let env = TraceEnv::from_node(&node);
    let (svc, seps) = first_service(&compiled);
    assert!(seps.len() >= 5, "{svc}: {seps:?}");
    // The node's rules: one endpoint chain of svc0 DNATs elsewhere.
    let mut on_node = compiled.clone();
    let was = move_endpoint(&mut on_node, &seps[3]);
    // The classes are explored Service by Service, svc0's first: a budget
    // keeps the debug build fast (the whole comparison is in the bench).
    let budget = Options {
        max_classes: 500,
        ..Options::default()
    };
    let r = check(
        &compiled,
        &on_node,
        Mode::Iptables,
        &env,
        IpFamily::V4,
        budget,
    )
    .unwrap();
    assert!(r.drift());
    let names: Vec<String> = r
        .by_service
        .keys()
        .map(|k| k.as_ref().map(|s| s.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(names, vec![svc.clone()]);
    // Every class that differs reaches svc0's endpoint: the moved one.
    assert!(!r.equivalence.differences.is_empty());
    for d in &r.equivalence.differences {
        let mut moved = was;
        moved.set_port(9999);
        assert!(
            d.left.iter().any(|f| f.kind == OutcomeKind::Endpoint(was))
                && d.right
                    .iter()
                    .any(|f| f.kind == OutcomeKind::Endpoint(moved)),
            "{d:?}"
        );
    }
    // A node as compiled (20 Services): in sync, every class the same.
    let (compiled, node) = iptables(20);
    let env = TraceEnv::from_node(&node);
    let same = check(
        &compiled,
        &compiled,
        Mode::Iptables,
        &env,
        IpFamily::V4,
        Options::default(),
    )
    .unwrap();
    assert!(same.is_clean());
    assert!(same.equivalence.complete);
    assert!(same.equivalence.classes > 100);
}

#[test]
fn trace_at_1k() {
    let (rs, node) = iptables(1000);
    let env = TraceEnv::from_node(&node);
    // svc500's cluster IP (see `synthetic::cluster`).
    let p = Packet::new(
        PacketOrigin::Pod,
        "10.9.9.9".parse().unwrap(),
        "172.16.1.245".parse().unwrap(),
        Protocol::Tcp,
        80,
    );
    let t = trace(&rs, &env, &p).unwrap();
    assert_eq!(t.endpoints().len(), 10, "{t:#?}");
    let total: f64 = t.outcomes.iter().map(|o| o.probability.value).sum();
    assert!((total - 1.0).abs() < 1e-9);
    assert!(t.outcomes.iter().all(|o| !o.path.is_empty()));
}

/// The whole comparison of a 1k node (NodePorts, LoadBalancers with
/// source ranges, affinity, UDP), on two threads: complete, every class
/// traced, the one drifted endpoint chain found and named. (Before the
/// search remembered the witnesses of chain-index questions, this stopped
/// with "too much work".)
#[test]
fn full_check_of_a_mixed_1k_node() {
    let (compiled, node) = iptables(1000);
    let env = TraceEnv::from_node(&node);
    let (svc, seps) = first_service(&compiled);
    let mut on_node = compiled.clone();
    move_endpoint(&mut on_node, &seps[0]);
    let r = check(
        &compiled,
        &on_node,
        Mode::Iptables,
        &env,
        IpFamily::V4,
        Options::default().with_threads(2),
    )
    .unwrap();
    assert!(r.equivalence.complete);
    assert!(r.equivalence.classes > 20_000, "{}", r.equivalence.classes);
    assert!(r.drift());
    let names: Vec<String> = r
        .by_service
        .keys()
        .map(|k| k.as_ref().map(|s| s.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(names, vec![svc]);
    assert!(!r.equivalence.differences.is_empty());
    assert!(
        r.equivalence.differences.iter().all(|d| d
            .right
            .iter()
            .any(|f| matches!(f.kind, OutcomeKind::Endpoint(a) if a.port() == 9999))),
        "{:?}",
        r.equivalence.differences.first()
    );
}
