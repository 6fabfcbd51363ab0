//! kube-proxy's nftables layout (v1.36+): plan -> transaction.
//!
//! The commands are those of kube-proxy's first full sync
//! (`setupNFTables` + `syncProxyRules` in `pkg/proxy/nftables/proxier.go`),
//! in its order. Every function lowers facts the planner decided; none
//! looks at the model or re-decides Kubernetes semantics.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kproxy_core::ir::{
    AddrMatch, BaseChainType, Chain, ChainKind, Counter, CtState, Direction, Element, Hook, Key,
    KeyValue, Map, MapValue, MarkOp, Match, Rule, Set, Verdict, local_traffic_matches,
};
use kproxy_core::model::{IpFamily, Protocol, TrafficPolicy};
use kproxy_core::names::ChainName;
use kproxy_core::plan::{
    ClusterIpMasquerade, Disposition, ExternalMasquerade, LbSourceFilter, NodePlan,
    NodePortDestinations, Plan, ServicePortPlan,
};
use kproxy_core::profile::NftablesProfile;

use crate::names::*;
use crate::tx::{Op, Transaction};

/// The base chains: name, type, hook, priority (knftables writes numbers).
pub const BASE_CHAINS: [(&str, BaseChainType, Hook, i32); 8] = [
    (
        "filter-prerouting-pre-dnat",
        BaseChainType::Filter,
        Hook::Prerouting,
        -110,
    ),
    (
        "filter-output-pre-dnat",
        BaseChainType::Filter,
        Hook::Output,
        -110,
    ),
    ("filter-input", BaseChainType::Filter, Hook::Input, 0),
    ("filter-forward", BaseChainType::Filter, Hook::Forward, 0),
    ("filter-output", BaseChainType::Filter, Hook::Output, 0),
    ("nat-prerouting", BaseChainType::Nat, Hook::Prerouting, -100),
    ("nat-output", BaseChainType::Nat, Hook::Output, -100),
    (
        "nat-postrouting",
        BaseChainType::Nat,
        Hook::Postrouting,
        100,
    ),
];

/// The jumps from base chains to top-level chains: (to, from, `ct state new`).
const JUMP_CHAINS: [(&str, &str, bool); 11] = [
    (NODEPORT_ENDPOINTS_CHECK, "filter-input", true),
    (SERVICE_ENDPOINTS_CHECK, "filter-input", true),
    (SERVICE_ENDPOINTS_CHECK, "filter-forward", true),
    (SERVICE_ENDPOINTS_CHECK, "filter-output", true),
    (FIREWALL_CHECK, "filter-prerouting-pre-dnat", true),
    (FIREWALL_CHECK, "filter-output-pre-dnat", true),
    (SERVICES, "nat-output", false),
    (SERVICES, "nat-prerouting", false),
    (MASQUERADING, "nat-postrouting", false),
    (CLUSTER_IPS_CHECK, "filter-forward", true),
    (CLUSTER_IPS_CHECK, "filter-output", true),
];

/// Every protocol kube-proxy may reject localhost NodePorts for, in its order.
const REJECTABLE: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutOptions {
    /// The first sync of a kube-proxy process: base chains are added and
    /// deleted once before being re-created (so changed hooks/priorities apply).
    pub first_sync: bool,
    /// The release's layout (the plan must be planned with the profile's
    /// [`NftablesProfile::release`]). [`NftablesProfile::Pre1_36`] differs
    /// from the current layout in: a `mark-for-masquerade` chain that every
    /// marking rule jumps to; `masquerading` as three rules (`mark and M == 0
    /// return`, `mark set mark xor M`, `masquerade fully-random`); no
    /// `hairpin-connections` set (each endpoint chain marks its own hairpin
    /// traffic); cluster IP masquerading in the service's chain
    /// (`ip daddr CIP ip saddr != PODS jump mark-for-masquerade`) instead of
    /// one `services` rule; one `endpoint-…` chain per endpoint
    /// (`ip saddr EP jump mark-for-masquerade`, the affinity update, `dnat
    /// to EP:PORT`), selected by `numgen random mod N vmap` even for one
    /// endpoint; no localhost NodePort rejects.
    pub profile: NftablesProfile,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        Self {
            first_sync: true,
            profile: NftablesProfile::Current,
        }
    }
}

/// `localhost-nodeport-reject-<proto>`
pub fn localhost_reject_chain(p: Protocol) -> String {
    format!("localhost-nodeport-reject-{}", p.as_lower())
}

/// `localhost-nodeport-rejected-<proto>` (kube-proxy's metrics counter name).
pub fn localhost_reject_counter(p: Protocol) -> String {
    format!("localhost-nodeport-rejected-{}", p.as_lower())
}

/// Lowers `plan` to the transaction of kube-proxy's first full sync.
pub fn build(plan: &Plan, opts: LayoutOptions) -> Transaction {
    debug_assert_eq!(
        plan.release,
        opts.profile.release(),
        "a plan laid out in another release's layout (see crate::check_release)"
    );
    let mut b = Builder::new(plan.node.family);
    b.legacy = opts.profile == NftablesProfile::Pre1_36;
    setup(&mut b, &plan.node, opts);
    for sp in &plan.service_ports {
        service_port(&mut b, &plan.node, sp);
    }
    b.finish()
}

/// A transaction under construction, with knftables-style bookkeeping:
/// chains are added+flushed once, elements are written once per key
/// (a later value replaces an earlier one, as kube-proxy's element storage
/// does). The same element again is written once, where it first came;
/// two Services writing one key with different values (e.g. the same node
/// port, which the API server forbids) leave only the later element,
/// written where the later one came, after the chain its verdict names.
struct Builder {
    /// The pre-1.36 layout.
    legacy: bool,
    tx: Transaction,
    chains: BTreeSet<String>,
    elements: HashMap<(String, Vec<KeyValue>), usize>,
    /// Positions of elements a later one replaced: left out by `finish`.
    replaced: BTreeSet<usize>,
}

impl Builder {
    fn new(family: IpFamily) -> Self {
        Self {
            legacy: false,
            tx: Transaction::new(family, TABLE),
            chains: BTreeSet::new(),
            elements: HashMap::new(),
            replaced: BTreeSet::new(),
        }
    }
    fn family(&self) -> IpFamily {
        self.tx.family
    }
    fn op(&mut self, op: Op) {
        self.tx.push(op);
    }
    /// kube-proxy's `ensureChain`: `add chain` + `flush chain`, once.
    fn ensure_chain(&mut self, name: &str) {
        if self.chains.insert(name.to_string()) {
            self.op(Op::AddChain(Chain::new(name)));
            self.op(Op::FlushChain(ChainName::new(name)));
        }
    }
    fn rule(&mut self, chain: &str, rule: Rule) {
        self.op(Op::AddRule(ChainName::new(chain), rule));
    }
    /// kube-proxy's `ensureElem` (on a first sync).
    fn element(
        &mut self,
        container: &str,
        key: Vec<KeyValue>,
        value: Option<Verdict>,
        comment: Option<String>,
    ) {
        let id = (container.to_string(), key.clone());
        let element = Element { key, comment };
        let op = match value {
            Some(v) => Op::AddMapElement(container.to_string(), element, MapValue::Verdict(v)),
            None => Op::AddSetElement(container.to_string(), element),
        };
        match self.elements.get(&id) {
            // The same element again (e.g. the cluster IP of each port).
            Some(&i) if self.tx.ops.get(i) == Some(&op) => {}
            Some(&i) => {
                self.replaced.insert(i);
                self.elements.insert(id, self.tx.ops.len());
                self.op(op);
            }
            None => {
                self.elements.insert(id, self.tx.ops.len());
                self.op(op);
            }
        }
    }
    fn finish(mut self) -> Transaction {
        if !self.replaced.is_empty() {
            let ops = std::mem::take(&mut self.tx.ops);
            self.tx.ops = ops
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !self.replaced.contains(i))
                .map(|(_, op)| op)
                .collect();
        }
        self.tx
    }
}

fn addr_type(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    }
}

fn set(name: &str, type_spec: String, comment: Option<&str>) -> Set {
    Set {
        name: name.into(),
        type_spec,
        flags: Vec::new(),
        timeout: None,
        comment: comment.map(str::to_string),
        elements: Vec::new(),
    }
}

fn vmap(name: &str, type_spec: String, comment: &str) -> Map {
    Map {
        name: name.into(),
        type_spec,
        value_type: "verdict".into(),
        flags: Vec::new(),
        comment: Some(comment.into()),
        elements: Vec::new(),
    }
}

fn ct_new() -> Match {
    Match::CtState {
        states: vec![CtState::New],
        negate: false,
    }
}

fn comment(text: &str) -> Match {
    Match::Comment(text.into())
}

fn goto(chain: &str) -> Verdict {
    Verdict::Goto(ChainName::new(chain))
}

/// A network as kube-proxy spells it: a host prefix is a plain address.
fn net_match(net: IpNet) -> AddrMatch {
    if net.prefix_len() == net.max_prefix_len() {
        AddrMatch::Ip(net.addr())
    } else {
        AddrMatch::Net(net)
    }
}

fn dst_addr(addr: AddrMatch, negate: bool) -> Match {
    Match::Addr {
        dir: Direction::Dst,
        addr,
        negate,
    }
}

/// `ip daddr . meta l4proto . th dport`
const DST_TUPLE: [Key; 3] = [Key::DstAddr, Key::L4Proto, Key::DstPort];
/// `meta l4proto . th dport`
const PROTO_PORT: [Key; 2] = [Key::L4Proto, Key::DstPort];

fn in_set(keys: &[Key], set: &str) -> Match {
    Match::InSet {
        keys: keys.to_vec(),
        set: set.into(),
        negate: false,
    }
}

fn vmap_verdict(keys: &[Key], map: &str) -> Verdict {
    Verdict::VerdictMap {
        keys: keys.to_vec(),
        map: map.into(),
    }
}

/// `jump mark-for-masquerade` (the pre-1.36 layout's way to mark).
fn mark_jump() -> Verdict {
    Verdict::Jump(ChainName::new(MARK_FOR_MASQUERADE))
}

fn mark_or(node: &NodePlan) -> Verdict {
    Verdict::SetMark {
        op: MarkOp::Or,
        value: node.mark.value(),
    }
}

/// The loopback destination of the family (`127.0.0.0/8`, `::1`).
fn loopback(f: IpFamily) -> AddrMatch {
    net_match(f.loopback_net())
}

fn setup(b: &mut Builder, node: &NodePlan, opts: LayoutOptions) {
    b.op(Op::AddTable {
        comment: Some("rules for kube-proxy".into()),
    });
    if opts.first_sync {
        for (name, ..) in BASE_CHAINS {
            b.op(Op::AddChain(Chain::new(name)));
            b.op(Op::DeleteChain(ChainName::new(name)));
        }
    }
    for (name, chain_type, hook, priority) in BASE_CHAINS {
        let mut c = Chain::new(name);
        c.kind = ChainKind::Base {
            chain_type,
            hook,
            priority,
        };
        b.op(Op::AddChain(c));
        b.op(Op::FlushChain(ChainName::new(name)));
    }
    for (to, from, ct) in JUMP_CHAINS {
        b.ensure_chain(to);
        let mut r = Rule::new();
        if ct {
            r = r.with(ct_new());
        }
        b.rule(from, r.verdict(Verdict::Jump(ChainName::new(to))));
    }
    for c in [SERVICES, CLUSTER_IPS_CHECK, MASQUERADING] {
        b.ensure_chain(c);
    }

    // Masquerading.
    let mark = node.mark.value();
    if b.legacy {
        b.ensure_chain(MARK_FOR_MASQUERADE);
        b.rule(MARK_FOR_MASQUERADE, Rule::new().verdict(mark_or(node)));
        b.rule(
            MASQUERADING,
            Rule::new()
                .with(Match::Mark {
                    value: 0,
                    mask: mark,
                    negate: false,
                })
                .verdict(Verdict::Return),
        );
        b.rule(
            MASQUERADING,
            Rule::new().verdict(Verdict::SetMark {
                op: MarkOp::Xor,
                value: mark,
            }),
        );
        b.rule(
            MASQUERADING,
            Rule::new().verdict(Verdict::Masquerade { random_fully: true }),
        );
    } else {
        masquerading(b, node);
    }
    setup_rest(b, node);
}

/// The current layout's masquerading: one rule for marked packets, one for
/// hairpin connections.
fn masquerading(b: &mut Builder, node: &NodePlan) {
    let mark = node.mark.value();
    b.op(Op::AddSet(set(
        HAIRPIN_CONNECTIONS,
        format!(
            "{a} . {a} . inet_proto . inet_service",
            a = addr_type(b.family())
        ),
        Some("service hairpin connections"),
    )));
    b.rule(
        MASQUERADING,
        Rule::new()
            .with(Match::Mark {
                value: 0,
                mask: mark,
                negate: true,
            })
            .with(Match::SetMark {
                op: MarkOp::Xor,
                value: mark,
            })
            .verdict(Verdict::Masquerade { random_fully: true }),
    );
    b.rule(
        MASQUERADING,
        Rule::new()
            .with(Match::CtState {
                states: vec![CtState::Dnat],
                negate: false,
            })
            .with(in_set(
                &[Key::SrcAddr, Key::DstAddr, Key::L4Proto, Key::DstPort],
                HAIRPIN_CONNECTIONS,
            ))
            .verdict(Verdict::Masquerade { random_fully: true }),
    );
}

fn setup_rest(b: &mut Builder, node: &NodePlan) {
    let f = b.family();
    let addr = addr_type(f);

    // Cluster IPs.
    b.op(Op::AddSet(set(
        CLUSTER_IPS,
        addr.into(),
        Some("Active ClusterIPs"),
    )));
    b.rule(
        CLUSTER_IPS_CHECK,
        Rule::new()
            .with(in_set(&[Key::DstAddr], CLUSTER_IPS))
            .with(comment("Reject traffic to invalid ports of ClusterIPs"))
            .verdict(Verdict::Reject),
    );
    if !node.service_cidrs.is_empty() {
        b.rule(
            CLUSTER_IPS_CHECK,
            Rule::new()
                .with(Match::AddrSet {
                    dir: Direction::Dst,
                    addrs: node
                        .service_cidrs
                        .iter()
                        .map(|n| AddrMatch::Net(*n))
                        .collect(),
                    negate: false,
                })
                .with(comment("Drop traffic to unallocated ClusterIPs"))
                .verdict(Verdict::Drop),
        );
    }

    // Node port addresses.
    b.op(Op::AddSet(set(
        NODEPORT_IPS,
        addr.into(),
        Some("IPs that accept NodePort traffic"),
    )));
    let match_all = matches!(node.node_ports, NodePortDestinations::AllLocal { .. });
    match &node.node_ports {
        NodePortDestinations::AllLocal { .. } => b.op(Op::DeleteSet(NODEPORT_IPS.into())),
        NodePortDestinations::Addresses(ips) => {
            b.op(Op::FlushSet(NODEPORT_IPS.into()));
            for ip in ips.iter().filter(|ip| !ip.is_loopback()) {
                b.element(NODEPORT_IPS, vec![KeyValue::Ip(*ip)], None, None);
            }
        }
    }

    // No endpoints.
    b.op(Op::AddMap(vmap(
        NO_ENDPOINT_SERVICES,
        format!("{addr} . inet_proto . inet_service"),
        "vmap to drop or reject packets to services with no endpoints",
    )));
    b.op(Op::AddMap(vmap(
        NO_ENDPOINT_NODEPORTS,
        "inet_proto . inet_service".into(),
        "vmap to drop or reject packets to service nodeports with no endpoints",
    )));
    let mut reject = Chain::new(REJECT_CHAIN);
    reject.comment = Some("helper for @no-endpoint-services / @no-endpoint-nodeports".into());
    b.op(Op::AddChain(reject));
    b.op(Op::FlushChain(ChainName::new(REJECT_CHAIN)));
    b.rule(REJECT_CHAIN, Rule::new().verdict(Verdict::Reject));
    b.rule(
        SERVICE_ENDPOINTS_CHECK,
        Rule::new().verdict(vmap_verdict(&DST_TUPLE, NO_ENDPOINT_SERVICES)),
    );
    let nodeport_dst = |rule: Rule| {
        if match_all {
            rule.with(dst_addr(loopback(f), true))
        } else {
            rule.with(in_set(&[Key::DstAddr], NODEPORT_IPS))
        }
    };
    b.rule(
        NODEPORT_ENDPOINTS_CHECK,
        nodeport_dst(Rule::new()).verdict(vmap_verdict(&PROTO_PORT, NO_ENDPOINT_NODEPORTS)),
    );

    // Localhost node ports (not in the pre-1.36 layout).
    if !b.legacy {
        localhost_node_ports(b, node);
    }
    setup_dispatch(b, node, match_all);
}

fn localhost_node_ports(b: &mut Builder, node: &NodePlan) {
    let f = b.family();
    b.op(Op::AddMap(vmap(
        LOCALHOST_REJECT_PORTS,
        "inet_proto . inet_service".into(),
        "localhost NodePorts rejected by kube-proxy",
    )));
    let rejects = &node.localhost_node_port_rejects;
    if rejects.is_empty() {
        b.op(Op::DeleteMap(LOCALHOST_REJECT_PORTS.into()));
    } else {
        for p in rejects {
            let counter = localhost_reject_counter(*p);
            b.op(Op::AddCounter(Counter {
                name: counter.clone(),
            }));
            let chain = localhost_reject_chain(*p);
            b.ensure_chain(&chain);
            b.rule(
                &chain,
                Rule::new()
                    .with(Match::Nfacct(counter))
                    .verdict(Verdict::Reject),
            );
        }
        b.rule(
            NODEPORT_ENDPOINTS_CHECK,
            Rule::new()
                .with(dst_addr(loopback(f), false))
                .verdict(vmap_verdict(&PROTO_PORT, LOCALHOST_REJECT_PORTS)),
        );
    }
    for p in REJECTABLE.iter().filter(|p| !rejects.contains(p)) {
        let chain = localhost_reject_chain(*p);
        b.op(Op::AddChain(Chain::new(chain.as_str())));
        b.op(Op::DeleteChain(ChainName::new(chain)));
        let counter = localhost_reject_counter(*p);
        b.op(Op::AddCounter(Counter {
            name: counter.clone(),
        }));
        b.op(Op::DeleteCounter(counter));
    }
}

fn setup_dispatch(b: &mut Builder, node: &NodePlan, match_all: bool) {
    let f = b.family();
    let addr = addr_type(f);

    // Load balancer source ranges.
    b.op(Op::AddMap(vmap(
        FIREWALL_IPS,
        format!("{addr} . inet_proto . inet_service"),
        "destinations that are subject to LoadBalancerSourceRanges",
    )));
    b.ensure_chain(FIREWALL_CHECK);
    b.rule(
        FIREWALL_CHECK,
        Rule::new().verdict(vmap_verdict(&DST_TUPLE, FIREWALL_IPS)),
    );

    // Service dispatch.
    b.op(Op::AddMap(vmap(
        SERVICE_IPS,
        format!("{addr} . inet_proto . inet_service"),
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    )));
    b.op(Op::AddMap(vmap(
        SERVICE_NODEPORTS,
        "inet_proto . inet_service".into(),
        "NodePort traffic",
    )));
    match &node.cluster_ip_masquerade {
        // The pre-1.36 layout masquerades in each service's chain.
        _ if b.legacy => {}
        ClusterIpMasquerade::All => b.rule(
            SERVICES,
            Rule::new()
                .with(in_set(&[Key::DstAddr], CLUSTER_IPS))
                .with(comment("masquerade all clusterIP traffic"))
                .verdict(mark_or(node)),
        ),
        ClusterIpMasquerade::IfNotLocal(det) => b.rule(
            SERVICES,
            Rule::new()
                .with(in_set(&[Key::DstAddr], CLUSTER_IPS))
                .with_all(local_traffic_matches(det, false))
                .with(comment("masquerade clusterIP traffic from outside cluster"))
                .verdict(mark_or(node)),
        ),
        ClusterIpMasquerade::Never => {}
    }
    b.rule(
        SERVICES,
        Rule::new().verdict(vmap_verdict(&DST_TUPLE, SERVICE_IPS)),
    );
    let nodeports = if match_all {
        Rule::new()
            .with(Match::AddrTypeLocal {
                dir: Direction::Dst,
                negate: false,
            })
            .with(dst_addr(loopback(f), true))
    } else {
        Rule::new().with(in_set(&[Key::DstAddr], NODEPORT_IPS))
    };
    b.rule(
        SERVICES,
        nodeports.verdict(vmap_verdict(&PROTO_PORT, SERVICE_NODEPORTS)),
    );
}

/// The filter verdict for traffic with nowhere to go.
fn no_endpoint_verdict(d: Disposition) -> Option<Verdict> {
    match d {
        Disposition::Forward(_) => None,
        Disposition::Reject => Some(goto(REJECT_CHAIN)),
        Disposition::Drop => Some(Verdict::Drop),
    }
}

fn policy_chain(chains: &ServiceChains, policy: TrafficPolicy) -> &ChainName {
    match policy {
        TrafficPolicy::Cluster => &chains.cluster,
        TrafficPolicy::Local => &chains.local,
    }
}

fn dst_key(ip: IpAddr, proto: Protocol, port: u16) -> Vec<KeyValue> {
    vec![
        KeyValue::Ip(ip),
        KeyValue::Proto(proto),
        KeyValue::Port(port),
    ]
}

fn service_port(b: &mut Builder, node: &NodePlan, sp: &ServicePortPlan) {
    let chains = ServiceChains::new(&sp.name);
    let proto = sp.name.protocol;
    let affinity = sp.affinity_timeout;
    let spn_comment = truncate_comment(&sp.name.to_string());

    let legacy = b.legacy;
    for ep in &sp.reachable_endpoints {
        if affinity.is_some() || legacy {
            let (chain, _) = endpoint_names(&sp.name, ep.ip, ep.port);
            b.ensure_chain(chain.as_str());
        }
        if ep.is_local && !legacy {
            b.element(
                HAIRPIN_CONNECTIONS,
                vec![
                    KeyValue::Ip(ep.ip),
                    KeyValue::Ip(ep.ip),
                    KeyValue::Proto(proto),
                    KeyValue::Port(ep.port),
                ],
                None,
                None,
            );
        }
    }
    if sp.uses_cluster_chain() {
        b.ensure_chain(chains.cluster.as_str());
    }
    if sp.uses_local_chain() {
        b.ensure_chain(chains.local.as_str());
    }
    let uses_external = sp.uses_external_chain();
    if uses_external {
        b.ensure_chain(chains.external.as_str());
    }
    let internal_block = no_endpoint_verdict(sp.internal);
    let external_block = no_endpoint_verdict(sp.external);
    let external = goto(chains.external.as_str());

    // Cluster IP.
    b.element(CLUSTER_IPS, vec![KeyValue::Ip(sp.cluster_ip)], None, None);
    let cip = dst_key(sp.cluster_ip, proto, sp.port);
    match (&internal_block, sp.internal) {
        (None, Disposition::Forward(policy)) => b.element(
            SERVICE_IPS,
            cip,
            Some(Verdict::Goto(policy_chain(&chains, policy).clone())),
            None,
        ),
        (Some(v), _) => b.element(
            NO_ENDPOINT_SERVICES,
            cip,
            Some(v.clone()),
            Some(spn_comment.clone()),
        ),
        (None, _) => {}
    }

    // External IPs.
    for ip in &sp.external_ips {
        let key = dst_key(*ip, proto, sp.port);
        if sp.has_endpoints {
            b.element(SERVICE_IPS, key.clone(), Some(external.clone()), None);
        }
        if let Some(v) = &external_block {
            b.element(
                NO_ENDPOINT_SERVICES,
                key,
                Some(v.clone()),
                Some(spn_comment.clone()),
            );
        }
    }

    // Load balancer IPs.
    let firewall = sp.lb_source_filter.filters();
    if firewall {
        b.ensure_chain(chains.firewall.as_str());
    }
    for ip in &sp.load_balancer_ips {
        let key = dst_key(*ip, proto, sp.port);
        if sp.has_endpoints {
            b.element(SERVICE_IPS, key.clone(), Some(external.clone()), None);
        }
        if firewall {
            b.element(
                FIREWALL_IPS,
                key,
                Some(goto(chains.firewall.as_str())),
                None,
            );
        }
    }
    if let Some(v) = &external_block {
        for ip in &sp.load_balancer_ips {
            b.element(
                NO_ENDPOINT_SERVICES,
                dst_key(*ip, proto, sp.port),
                Some(v.clone()),
                Some(spn_comment.clone()),
            );
        }
    }

    // Node port.
    if let Some(np) = sp.node_port {
        let key = vec![KeyValue::Proto(proto), KeyValue::Port(np)];
        if node.localhost_node_port_rejects.contains(&proto) {
            b.element(
                LOCALHOST_REJECT_PORTS,
                key.clone(),
                Some(goto(&localhost_reject_chain(proto))),
                None,
            );
        }
        if sp.has_endpoints {
            b.element(SERVICE_NODEPORTS, key.clone(), Some(external.clone()), None);
        }
        if let Some(v) = &external_block {
            b.element(
                NO_ENDPOINT_NODEPORTS,
                key,
                Some(v.clone()),
                Some(spn_comment.clone()),
            );
        }
    }

    // External chain.
    let ext = chains.external.as_str();
    if uses_external {
        let masquerade_all = sp.external_masquerade == ExternalMasquerade::All;
        if masquerade_all && legacy {
            b.rule(ext, Rule::new().verdict(mark_jump()));
        } else if masquerade_all {
            b.rule(
                ext,
                Rule::new()
                    .with(comment("masquerade"))
                    .verdict(mark_or(node)),
            );
        } else {
            let local = local_traffic_matches(&node.local_detector, true);
            if !local.is_empty() {
                b.rule(
                    ext,
                    Rule::new()
                        .with_all(local)
                        .with(comment("short-circuit pod traffic"))
                        .verdict(Verdict::Goto(chains.cluster.clone())),
                );
            }
            let src_local = Match::AddrTypeLocal {
                dir: Direction::Src,
                negate: false,
            };
            b.rule(
                ext,
                Rule::new()
                    .with(src_local.clone())
                    .with(comment("masquerade local traffic"))
                    .verdict(if legacy { mark_jump() } else { mark_or(node) }),
            );
            b.rule(
                ext,
                Rule::new()
                    .with(src_local)
                    .with(comment("short-circuit local traffic"))
                    .verdict(Verdict::Goto(chains.cluster.clone())),
            );
        }
        if let Disposition::Forward(policy) = sp.external {
            b.rule(
                ext,
                Rule::new().verdict(Verdict::Goto(policy_chain(&chains, policy).clone())),
            );
        }
    }

    // Firewall chain.
    if let LbSourceFilter::Ranges {
        ranges,
        admits_lb_ips,
    } = &sp.lb_source_filter
    {
        let mut allowed: Vec<AddrMatch> = ranges.iter().map(|n| AddrMatch::Net(*n)).collect();
        if *admits_lb_ips {
            allowed.extend(sp.load_balancer_ips.iter().map(|ip| AddrMatch::Ip(*ip)));
        }
        b.rule(
            chains.firewall.as_str(),
            Rule::new()
                .with(Match::AddrSet {
                    dir: Direction::Src,
                    addrs: allowed,
                    negate: true,
                })
                .verdict(Verdict::Drop),
        );
    }

    // Affinity sets.
    if let Some(timeout) = affinity {
        for ep in &sp.reachable_endpoints {
            let (_, set_name) = endpoint_names(&sp.name, ep.ip, ep.port);
            let mut s = set(&set_name, addr_type(b.family()).into(), None);
            s.flags = vec!["dynamic".into(), "timeout".into()];
            s.timeout = Some(timeout);
            b.op(Op::AddSet(s));
        }
    }

    // Endpoint selection.
    let selections = [
        (
            sp.uses_cluster_chain(),
            &chains.cluster,
            &sp.cluster_endpoints,
        ),
        (sp.uses_local_chain(), &chains.local, &sp.local_endpoints),
    ];
    // The pre-1.36 layout masquerades off-cluster traffic to the cluster IP
    // in the internal policy's chain.
    if let (true, Disposition::Forward(policy)) = (legacy, sp.internal) {
        let not_local = match &node.cluster_ip_masquerade {
            ClusterIpMasquerade::All => Some(Vec::new()),
            ClusterIpMasquerade::IfNotLocal(det) => Some(local_traffic_matches(det, false)),
            ClusterIpMasquerade::Never => None,
        };
        if let Some(extra) = not_local {
            b.rule(
                policy_chain(&chains, policy).as_str(),
                Rule::new()
                    .with(dst_addr(AddrMatch::Ip(sp.cluster_ip), false))
                    .with_all(extra)
                    .verdict(mark_jump()),
            );
        }
    }
    for (used, chain, eps) in selections {
        if !used {
            continue;
        }
        if affinity.is_none() && !legacy {
            let to: Vec<SocketAddr> = eps.iter().map(|e| SocketAddr::new(e.ip, e.port)).collect();
            b.rule(
                chain.as_str(),
                Rule::new()
                    .with(Match::Protocol(proto))
                    .verdict(Verdict::DnatRandom { to }),
            );
        } else {
            let mut to = Vec::new();
            for ep in eps.iter() {
                let (ep_chain, set_name) = endpoint_names(&sp.name, ep.ip, ep.port);
                if affinity.is_some() {
                    b.rule(
                        chain.as_str(),
                        Rule::new()
                            .with(in_set(&[Key::SrcAddr], &set_name))
                            .verdict(Verdict::Goto(ep_chain.clone())),
                    );
                }
                to.push(ep_chain);
            }
            b.rule(
                chain.as_str(),
                Rule::new().verdict(Verdict::RandomVerdictMap { to }),
            );
        }
    }
    if affinity.is_some() || legacy {
        for ep in &sp.reachable_endpoints {
            let (ep_chain, set_name) = endpoint_names(&sp.name, ep.ip, ep.port);
            if legacy {
                b.rule(
                    ep_chain.as_str(),
                    Rule::new()
                        .with(Match::Addr {
                            dir: Direction::Src,
                            addr: AddrMatch::Ip(ep.ip),
                            negate: false,
                        })
                        .verdict(mark_jump()),
                );
            }
            if affinity.is_some() {
                b.rule(
                    ep_chain.as_str(),
                    Rule::new().with(Match::UpdateSet {
                        keys: vec![Key::SrcAddr],
                        set: set_name,
                    }),
                );
            }
            b.rule(
                ep_chain.as_str(),
                Rule::new()
                    .with(Match::Protocol(proto))
                    .verdict(Verdict::Dnat(SocketAddr::new(ep.ip, ep.port))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use kproxy_core::model::{ClusterState, Endpoint, EndpointPort, EndpointSlice, NodeConfig};
    use kproxy_core::model::{Service, ServicePort, ServiceType};
    use kproxy_core::plan::plan;

    use super::*;

    /// Two Services with one node port (the API server forbids it, a
    /// directory of manifests may not): one element, the later Service's,
    /// written after the chain it jumps to, so `nft -f` accepts it.
    #[test]
    fn a_shared_key_keeps_the_later_element_after_its_chain() {
        let mut state = ClusterState::default();
        for (name, ip, ep) in [
            ("a", "10.96.0.1", "10.1.0.1"),
            ("b", "10.96.0.2", "10.1.0.2"),
        ] {
            let mut svc = Service::cluster_ip("ns", name, ip.parse().expect("ip"))
                .with_port(ServicePort::new("p", Protocol::Tcp, 80).with_node_port(30000));
            svc.service_type = ServiceType::NodePort;
            state.services.push(svc);
            state.endpoint_slices.push(
                EndpointSlice::new("ns", &format!("{name}-1"), name, IpFamily::V4)
                    .with_port(EndpointPort::new("p", Protocol::Tcp, 8080))
                    .with_endpoint(Endpoint::ready(ep.parse().expect("ip"))),
            );
        }
        let p = plan(&state, &NodeConfig::new(IpFamily::V4, "node-1"));
        let tx = build(&p, LayoutOptions::default());
        let is_np = |op: &Op| matches!(op, Op::AddMapElement(m, _, _) if m == "service-nodeports");
        let elements: Vec<usize> = (0..tx.ops.len()).filter(|&i| is_np(&tx.ops[i])).collect();
        assert_eq!(elements.len(), 1);
        let Op::AddMapElement(_, _, MapValue::Verdict(Verdict::Goto(target))) =
            &tx.ops[elements[0]]
        else {
            panic!("not a goto element: {:?}", tx.ops[elements[0]]);
        };
        assert!(target.as_str().contains("ns/b/"), "{target}");
        let chain_at = tx
            .ops
            .iter()
            .position(|op| matches!(op, Op::AddChain(c) if c.name == *target))
            .expect("the chain");
        assert!(chain_at < elements[0]);
    }
}
