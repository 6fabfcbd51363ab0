//! Differential test of the two backends: random cluster states (service
//! types, traffic policies, affinity, source ranges, endpoint conditions,
//! topology hints, IPv4 or IPv6) and random packets; the iptables layout
//! and the nftables layout must give the same outcomes, with the same
//! probabilities and masquerade decisions.
//!
//! A few differences are kube-proxy's own, by design (its two modes are not
//! identical); they are recognised from the plan and asserted exactly, see
//! [`kproxy_tests::known_differences`]. Anything else is a backend bug: the
//! failure prints a (shrunk) reproducer.
//!
//! Not covered here (configured away, both by-design differences):
//! localhost node ports (iptables only) and the Service-CIDR drop for
//! unallocated cluster IPs (nftables only).

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_core::ir::Ruleset;
use kproxy_core::model::{
    ClusterState, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, IpFamily, IpMode,
    LoadBalancerIngress, LocalDetector, NodeConfig, Protocol, Service, ServicePort, ServiceType,
    TrafficPolicy,
};
use kproxy_core::plan::{Plan, plan};
use kproxy_core::trace::{Packet, PacketOrigin, Trace, TraceEnv, trace};
use kproxy_tests::known_differences::{known_difference, summary};
use proptest::prelude::*;

const NODE: &str = "node-a";

#[derive(Debug, Clone)]
struct EpSpec {
    /// 0: this node, 1: another node, 2: no node name.
    node: u8,
    /// 0: ready, 1: serving and terminating, 2: terminating, not serving.
    cond: u8,
    /// 0: no hints, 1: for zone-a (ours), 2: for zone-b.
    hint: u8,
}

#[derive(Debug, Clone)]
struct SvcSpec {
    /// 0: ClusterIP, 1: NodePort, 2: LoadBalancer.
    kind: u8,
    /// (protocol 0..3, port 80 or 443).
    ports: Vec<(u8, bool)>,
    external_ip: bool,
    lb_ips: u8,
    lb_proxy_mode: bool,
    /// Bit 0: the external client range; bit 1: a range holding the node IP.
    ranges: u8,
    etp_local: bool,
    itp_local: bool,
    affinity: bool,
    endpoints: Vec<EpSpec>,
}

#[derive(Debug, Clone)]
struct NodeSpec {
    v6: bool,
    /// 0: none, 1: pod CIDR, 2: bridge, 3: interface prefix.
    detector: u8,
    masquerade_all: bool,
    /// Node ports on every local address, or on the primary IP only.
    node_ports_everywhere: bool,
}

#[derive(Debug, Clone)]
struct PktSpec {
    origin: u8,
    src: u8,
    dst: u8,
    port: u8,
    proto: u8,
}

fn ep_spec() -> impl Strategy<Value = EpSpec> {
    (0u8..3, 0u8..3, 0u8..3).prop_map(|(node, cond, hint)| EpSpec { node, cond, hint })
}

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    (
        0u8..3,
        prop::collection::vec((0u8..3, any::<bool>()), 1..3),
        any::<bool>(),
        0u8..3,
        prop::bool::weighted(0.2),
        0u8..4,
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.3),
        prop::collection::vec(ep_spec(), 0..4),
    )
        .prop_map(
            |(kind, ports, external_ip, lb_ips, lb_proxy_mode, ranges, etp, itp, aff, eps)| {
                SvcSpec {
                    kind,
                    ports,
                    external_ip,
                    lb_ips,
                    lb_proxy_mode,
                    ranges,
                    etp_local: etp,
                    itp_local: itp,
                    affinity: aff,
                    endpoints: eps,
                }
            },
        )
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (any::<bool>(), 0u8..4, any::<bool>(), any::<bool>()).prop_map(|(v6, detector, m, np)| {
        NodeSpec {
            v6,
            detector,
            masquerade_all: m,
            node_ports_everywhere: np,
        }
    })
}

fn pkt_spec() -> impl Strategy<Value = PktSpec> {
    (0u8..3, any::<u8>(), any::<u8>(), any::<u8>(), 0u8..3).prop_map(
        |(origin, src, dst, port, proto)| PktSpec {
            origin,
            src,
            dst,
            port,
            proto,
        },
    )
}

/// The addresses of one family.
struct Addrs {
    family: IpFamily,
    v6: bool,
}

impl Addrs {
    fn ip(&self, v4: String, v6: String) -> IpAddr {
        let s = if self.v6 { v6 } else { v4 };
        s.parse().expect("generated address")
    }
    fn net(&self, v4: &str, v6: &str) -> IpNet {
        (if self.v6 { v6 } else { v4 })
            .parse()
            .expect("generated net")
    }
    fn node_ip(&self) -> IpAddr {
        self.ip("192.168.0.2".into(), "2001:db8::1".into())
    }
    fn node_ip2(&self) -> IpAddr {
        self.ip("192.168.1.2".into(), "2001:db8:1::2".into())
    }
    fn pod_cidr(&self) -> IpNet {
        self.net("10.0.0.0/8", "fd00:10::/32")
    }
    fn pod_src(&self) -> IpAddr {
        self.ip("10.0.0.2".into(), "fd00:10:ff::2".into())
    }
    fn cluster_ip(&self, i: usize) -> IpAddr {
        self.ip(
            format!("172.30.0.{}", 10 + i),
            format!("fd00:172:30::{}", 10 + i),
        )
    }
    fn external_ip(&self, i: usize) -> IpAddr {
        self.ip(
            format!("198.51.100.{}", 10 + i),
            format!("fd00:198:51::{}", 10 + i),
        )
    }
    fn lb_ip(&self, i: usize, k: usize) -> IpAddr {
        self.ip(
            format!("1.2.3.{}", 10 + 2 * i + k),
            format!("2001:db8:99::{}", 10 + 2 * i + k),
        )
    }
    fn endpoint(&self, i: usize, j: usize) -> IpAddr {
        self.ip(
            format!("10.180.{i}.{}", j + 1),
            format!("fd00:10:{i}::{}", j + 1),
        )
    }
    fn client_allowed(&self) -> IpAddr {
        self.ip("203.0.113.2".into(), "2600:5200::1".into())
    }
    fn client_blocked(&self) -> IpAddr {
        self.ip("203.0.113.130".into(), "2600:6200::1".into())
    }
    fn elsewhere(&self) -> IpAddr {
        self.ip("8.8.8.8".into(), "2001:4860::8888".into())
    }
}

const PROTOS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

fn build(node: &NodeSpec, svcs: &[SvcSpec]) -> (ClusterState, NodeConfig, Addrs) {
    let a = Addrs {
        family: if node.v6 { IpFamily::V6 } else { IpFamily::V4 },
        v6: node.v6,
    };
    let mut state = ClusterState::default();
    for (i, s) in svcs.iter().enumerate() {
        let name = format!("svc{i}");
        let mut svc = Service::cluster_ip("ns", &name, a.cluster_ip(i));
        svc.service_type = match s.kind {
            0 => ServiceType::ClusterIp,
            1 => ServiceType::NodePort,
            _ => ServiceType::LoadBalancer,
        };
        let mut slice = EndpointSlice::new("ns", &format!("{name}-1"), &name, a.family);
        let mut seen = Vec::new();
        for (j, (proto, p443)) in s.ports.iter().enumerate() {
            let proto = PROTOS[usize::from(*proto) % 3];
            let port = if *p443 { 443 } else { 80 };
            if seen.contains(&(proto, port)) {
                continue;
            }
            seen.push((proto, port));
            let mut sp = ServicePort::new(format!("p{j}"), proto, port);
            if s.kind > 0 {
                sp = sp.with_node_port(30000 + (i as u16) * 10 + j as u16);
            }
            svc.ports.push(sp);
            slice = slice.with_port(EndpointPort::new(format!("p{j}"), proto, 8000 + j as u16));
        }
        if s.external_ip {
            svc.external_ips.push(a.external_ip(i));
        }
        if s.kind == 2 {
            for k in 0..usize::from(s.lb_ips) {
                svc.load_balancer_ingress.push(LoadBalancerIngress {
                    ip: a.lb_ip(i, k),
                    ip_mode: if s.lb_proxy_mode && k == 0 {
                        IpMode::Proxy
                    } else {
                        IpMode::Vip
                    },
                });
            }
            if s.ranges & 1 != 0 {
                svc.load_balancer_source_ranges
                    .push(a.net("203.0.113.0/25", "2600:5200::/32"));
            }
            if s.ranges & 2 != 0 {
                svc.load_balancer_source_ranges
                    .push(a.net("192.168.0.0/24", "2001:db8::/64"));
            }
        }
        if s.etp_local {
            svc.external_traffic_policy = TrafficPolicy::Local;
        }
        if s.itp_local {
            svc.internal_traffic_policy = TrafficPolicy::Local;
        }
        if s.affinity {
            svc.session_affinity_timeout = Some(10800);
        }
        for (j, e) in s.endpoints.iter().enumerate() {
            let mut ep = Endpoint::ready(a.endpoint(i, j));
            match e.node {
                0 => ep = ep.on_node(NODE),
                1 => ep = ep.on_node("node-b"),
                _ => {}
            }
            ep.conditions = match e.cond {
                0 => EndpointConditions::default(),
                1 => EndpointConditions {
                    ready: false,
                    serving: true,
                    terminating: true,
                },
                _ => EndpointConditions {
                    ready: false,
                    serving: false,
                    terminating: true,
                },
            };
            match e.hint {
                1 => {
                    ep.zone_hints.insert("zone-a".into());
                }
                2 => {
                    ep.zone_hints.insert("zone-b".into());
                }
                _ => {}
            }
            slice = slice.with_endpoint(ep);
        }
        state.services.push(svc);
        state.endpoint_slices.push(slice);
    }
    let mut cfg = NodeConfig::new(a.family, NODE);
    cfg.zone = Some("zone-a".into());
    cfg.node_ip = Some(a.node_ip());
    cfg.node_addresses = vec![a.node_ip(), a.node_ip2()];
    cfg.masquerade_all = node.masquerade_all;
    cfg.local_detector = match node.detector {
        0 => LocalDetector::None,
        1 => LocalDetector::Cidr(a.pod_cidr()),
        2 => LocalDetector::BridgeInterface("cni0".into()),
        _ => LocalDetector::InterfaceNamePrefix("veth".into()),
    };
    if !node.node_ports_everywhere {
        cfg.node_port_addresses = vec![IpNet::from(a.node_ip())];
    }
    // By-design differences configured away: see the module comment.
    cfg.localhost_node_ports = false;
    cfg.nftables_localhost_node_ports = false;
    cfg.service_cidrs = Vec::new();
    (state, cfg, a)
}

fn packet(p: &PktSpec, a: &Addrs, state: &ClusterState, plan: &Plan) -> Packet {
    let pick = |v: &[IpAddr], i: u8| v[usize::from(i) % v.len()];
    let origin = [
        PacketOrigin::Pod,
        PacketOrigin::Node,
        PacketOrigin::External,
    ][usize::from(p.origin) % 3];
    let mut lb_ips: Vec<IpAddr> = state
        .services
        .iter()
        .flat_map(|s| s.load_balancer_ingress.iter().map(|i| i.ip))
        .collect();
    let src = match origin {
        PacketOrigin::Pod => {
            // A pod of this node: any pod address, or a local endpoint (hairpin).
            let mut v = vec![a.pod_src()];
            for sp in &plan.service_ports {
                v.extend(
                    sp.reachable_endpoints
                        .iter()
                        .filter(|e| e.is_local)
                        .map(|e| e.ip),
                );
            }
            pick(&v, p.src)
        }
        PacketOrigin::Node => pick(&[a.node_ip(), a.node_ip2()], p.src),
        PacketOrigin::External => {
            let mut v = vec![a.client_allowed(), a.client_blocked()];
            // Hairpinned LB traffic, SNATted to the LB IP by the cloud.
            v.append(&mut lb_ips.clone());
            pick(&v, p.src)
        }
    };
    let mut dsts = vec![a.node_ip(), a.node_ip2(), a.elsewhere()];
    for s in &state.services {
        dsts.extend(s.cluster_ips.iter().copied());
        dsts.extend(s.external_ips.iter().copied());
    }
    dsts.append(&mut lb_ips);
    let dst = pick(&dsts, p.dst);
    let mut ports = vec![80u16, 443, 9999];
    for s in &state.services {
        ports.extend(s.ports.iter().filter_map(|p| p.node_port));
    }
    let port = ports[usize::from(p.port) % ports.len()];
    Packet::new(origin, src, dst, PROTOS[usize::from(p.proto) % 3], port)
}

fn render(t: &Trace) -> String {
    let mut s = String::new();
    for o in &t.outcomes {
        s.push_str(&format!(
            "  {} p={} masq={}\n",
            o.kind, o.probability, o.masqueraded
        ));
        for st in &o.path {
            s.push_str(&format!(
                "      {:?} {}/{} #{}: {}\n",
                st.hook, st.table, st.chain, st.rule_index, st.rule_text
            ));
        }
    }
    s
}

fn rulesets(state: &ClusterState, node: &NodeConfig) -> (Plan, Ruleset, Ruleset) {
    let p = plan(state, node);
    let layout = kproxy_iptables::LayoutOptions {
        standalone: true,
        ..Default::default()
    };
    let ipt = kproxy_iptables::build(&p, layout);
    let nft = kproxy_nft::ruleset(&p).expect("nft ruleset");
    (p, ipt, nft)
}

fn check(node: &NodeSpec, svcs: &[SvcSpec], pkts: &[PktSpec]) -> Result<(), TestCaseError> {
    let (state, cfg, a) = build(node, svcs);
    let (plan, ipt, nft) = rulesets(&state, &cfg);
    let env = TraceEnv::from_node(&cfg);
    for ps in pkts {
        let p = packet(ps, &a, &state, &plan);
        let ti =
            trace(&ipt, &env, &p).map_err(|e| TestCaseError::fail(format!("iptables: {e}")))?;
        let tn =
            trace(&nft, &env, &p).map_err(|e| TestCaseError::fail(format!("nftables: {e}")))?;
        let (si, sn) = (summary(&ti), summary(&tn));
        // Probabilities sum to one, in both.
        for t in [&ti, &tn] {
            let total: f64 = t.outcomes.iter().map(|o| o.probability.value).sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
        }
        if si != sn && known_difference(&plan, &p, &si, &sn).is_none() {
            return Err(TestCaseError::fail(format!(
                "backends disagree\npacket: {p:?}\nnode: {cfg:#?}\nstate: {state:#?}\n\
                 iptables:\n{}nftables:\n{}",
                render(&ti),
                render(&tn)
            )));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=N runs more (e.g. 5000 when hunting).
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn iptables_and_nftables_agree(
        node in node_spec(),
        svcs in prop::collection::vec(svc_spec(), 1..4),
        pkts in prop::collection::vec(pkt_spec(), 1..16),
    ) {
        check(&node, &svcs, &pkts)?;
    }
}

/// The by-design differences above do occur (the generator reaches them).
#[test]
fn known_differences_are_recognised() {
    let node = NodeSpec {
        v6: false,
        detector: 1,
        masquerade_all: false,
        node_ports_everywhere: false,
    };
    let svc = SvcSpec {
        kind: 2,
        ports: vec![(0, false)],
        external_ip: false,
        lb_ips: 1,
        lb_proxy_mode: false,
        ranges: 1,
        etp_local: false,
        itp_local: false,
        affinity: false,
        endpoints: vec![],
    };
    let (state, cfg, a) = build(&node, std::slice::from_ref(&svc));
    let (plan, ipt, nft) = rulesets(&state, &cfg);
    let env = TraceEnv::from_node(&cfg);
    let run = |p: Packet| {
        let (i, n) = (
            summary(&trace(&ipt, &env, &p).unwrap()),
            summary(&trace(&nft, &env, &p).unwrap()),
        );
        known_difference(&plan, &p, &i, &n)
    };
    let p = |origin, src, dst, port| Packet::new(origin, src, dst, Protocol::Tcp, port);
    assert!(
        run(p(PacketOrigin::Pod, a.pod_src(), a.cluster_ip(0), 443))
            .is_some_and(|d| d.starts_with("unserved"))
    );
    assert!(
        run(p(
            PacketOrigin::External,
            a.client_blocked(),
            a.lb_ip(0, 0),
            80
        ))
        .is_some_and(|d| d.starts_with("source-range"))
    );
    assert!(
        run(p(
            PacketOrigin::External,
            a.client_allowed(),
            a.node_ip2(),
            30000
        ))
        .is_some_and(|d| d.starts_with("node port"))
    );
}

/// The explored equivalence ([`kproxy_core::equivalence::compare`]) finds
/// exactly what the exhaustive product of candidate values finds: the same
/// verdict, and a grid packet differs exactly when its class is one of the
/// differing classes.
fn same_as_exhaustive(
    left: &Ruleset,
    right: &Ruleset,
    env: &TraceEnv,
    family: kproxy_core::model::IpFamily,
) -> Result<(), TestCaseError> {
    use kproxy_core::equivalence::{
        Classifier, Options, compare, compare_exhaustive, packet_classes,
    };
    let fail = |e: kproxy_core::trace::TraceError| TestCaseError::fail(e.to_string());
    let new = compare(left, right, env, family, Options::default()).map_err(fail)?;
    // On several threads: the same classes and differences, in order.
    let shared =
        compare(left, right, env, family, Options::default().with_threads(3)).map_err(fail)?;
    prop_assert_eq!(shared.classes, new.classes);
    prop_assert_eq!(shared.complete, new.complete);
    prop_assert_eq!(&shared.differences, &new.differences);
    let old = compare_exhaustive(left, right, env, family, Options::default()).map_err(fail)?;
    prop_assert!(new.complete && old.complete);
    prop_assert_eq!(new.is_equivalent(), old.is_equivalent());
    let classes = Classifier::new(left, right, env);
    let mut differing = std::collections::HashMap::new();
    for d in &new.differences {
        differing.insert(classes.class_of(&d.packet).map_err(fail)?, d);
    }
    let old_differs: std::collections::HashSet<String> = old
        .differences
        .iter()
        .map(|d| format!("{:?}", d.packet))
        .collect();
    for p in packet_classes(&[left, right], env, family) {
        let class = classes.class_of(&p).map_err(fail)?;
        let before = old_differs.contains(&format!("{p:?}"));
        prop_assert_eq!(
            differing.contains_key(&class),
            before,
            "{:?}: exhaustive says differs={}; explored: {:?}",
            p,
            before,
            differing.get(&class)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Both backends of a random state, and the iptables rules against
    /// themselves with one rule removed (a real difference).
    #[test]
    fn explored_equivalence_matches_exhaustive(
        node in node_spec(),
        svcs in prop::collection::vec(svc_spec(), 1..3),
        drop_rule in any::<prop::sample::Index>(),
    ) {
        let (state, cfg, _) = build(&node, &svcs);
        let (_, ipt, nft) = rulesets(&state, &cfg);
        let env = TraceEnv::from_node(&cfg);
        same_as_exhaustive(&ipt, &nft, &env, cfg.family)?;
        let mut cut = ipt.clone();
        let rules: Vec<(usize, usize)> = cut.tables.iter().enumerate().flat_map(|(t, tb)| {
            tb.chains.iter().enumerate().filter(|(_, c)| !c.rules.is_empty()).map(move |(c, _)| (t, c))
        }).collect();
        if !rules.is_empty() {
            let (t, c) = rules[drop_rule.index(rules.len())];
            let chain = &mut cut.tables[t].chains[c];
            let r = drop_rule.index(chain.rules.len());
            chain.rules.remove(r);
        }
        same_as_exhaustive(&ipt, &cut, &env, cfg.family)?;
    }
}
