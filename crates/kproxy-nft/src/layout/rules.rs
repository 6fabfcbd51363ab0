//! The builders every nftables release layout shares: the transaction
//! under construction, node-level set-up and each service port's front
//! ends, calling the release ([`Release`]) where layouts differ.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kproxy_core::ir::{
    AddrMatch, Chain, ChainKind, CtState, Direction, Element, Key, KeyValue, Map, MapValue, MarkOp,
    Match, Rule, Set, Verdict, local_traffic_matches,
};
use kproxy_core::model::{IpFamily, Protocol, TrafficPolicy};
use kproxy_core::names::ChainName;
use kproxy_core::plan::{
    Disposition, ExternalMasquerade, LbSourceFilter, NodePlan, NodePortDestinations,
    PlannedEndpoint, ServicePortPlan,
};

use crate::names::*;
use crate::tx::{Op, Transaction};

use super::{BASE_CHAINS, LayoutOptions, Release, localhost_reject_chain};

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

/// A transaction under construction, with knftables-style bookkeeping:
/// chains are added+flushed once, elements are written once per key
/// (a later value replaces an earlier one, as kube-proxy's element storage
/// does). The same element again is written once, where it first came;
/// two Services writing one key with different values (e.g. the same node
/// port, which the API server forbids) leave only the later element,
/// written where the later one came, after the chain its verdict names.
pub(super) struct Builder {
    pub(super) tx: Transaction,
    chains: HashSet<String>,
    elements: HashMap<(String, Vec<KeyValue>), usize>,
    /// Positions of elements a later one replaced: left out by `finish`.
    replaced: BTreeSet<usize>,
}

impl Builder {
    pub(super) fn new(family: IpFamily) -> Self {
        Self {
            tx: Transaction::new(family, TABLE),
            chains: HashSet::new(),
            elements: HashMap::new(),
            replaced: BTreeSet::new(),
        }
    }
    pub(super) fn family(&self) -> IpFamily {
        self.tx.family
    }
    pub(super) fn op(&mut self, op: Op) {
        self.tx.push(op);
    }
    /// kube-proxy's `ensureChain`: `add chain` + `flush chain`, once.
    pub(super) fn ensure_chain(&mut self, name: &str) {
        if !self.chains.contains(name) {
            self.chains.insert(name.to_string());
            self.op(Op::AddChain(Chain::new(name)));
            self.op(Op::FlushChain(ChainName::new(name)));
        }
    }
    pub(super) fn rule(&mut self, chain: &str, rule: Rule) {
        self.op(Op::AddRule(ChainName::new(chain), rule));
    }
    /// kube-proxy's `ensureElem` (on a first sync).
    pub(super) fn element(
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
    pub(super) fn finish(mut self) -> Transaction {
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

pub(super) fn addr_type(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    }
}

pub(super) fn set(name: &str, type_spec: String, comment: Option<&str>) -> Set {
    Set {
        name: name.into(),
        type_spec,
        flags: Vec::new(),
        timeout: None,
        comment: comment.map(str::to_string),
        elements: Vec::new(),
    }
}

pub(super) fn vmap(name: &str, type_spec: String, comment: &str) -> Map {
    Map {
        name: name.into(),
        type_spec,
        value_type: "verdict".into(),
        flags: Vec::new(),
        comment: Some(comment.into()),
        elements: Vec::new(),
    }
}

pub(super) fn ct_new() -> Match {
    Match::CtState {
        states: vec![CtState::New],
        negate: false,
    }
}

pub(super) fn comment(text: &str) -> Match {
    Match::Comment(text.into())
}

pub(super) fn goto(chain: &str) -> Verdict {
    Verdict::Goto(ChainName::new(chain))
}

/// A network as kube-proxy spells it: a host prefix is a plain address.
pub(super) fn net_match(net: IpNet) -> AddrMatch {
    if net.prefix_len() == net.max_prefix_len() {
        AddrMatch::Ip(net.addr())
    } else {
        AddrMatch::Net(net)
    }
}

pub(super) fn dst_addr(addr: AddrMatch, negate: bool) -> Match {
    Match::Addr {
        dir: Direction::Dst,
        addr,
        negate,
    }
}

/// `ip daddr . meta l4proto . th dport`
pub(super) const DST_TUPLE: [Key; 3] = [Key::DstAddr, Key::L4Proto, Key::DstPort];
/// `meta l4proto . th dport`
pub(super) const PROTO_PORT: [Key; 2] = [Key::L4Proto, Key::DstPort];

pub(super) fn in_set(keys: &[Key], set: &str) -> Match {
    Match::InSet {
        keys: keys.to_vec(),
        set: set.into(),
        negate: false,
    }
}

pub(super) fn vmap_verdict(keys: &[Key], map: &str) -> Verdict {
    Verdict::VerdictMap {
        keys: keys.to_vec(),
        map: map.into(),
    }
}

pub(super) fn mark_or(node: &NodePlan) -> Verdict {
    Verdict::SetMark {
        op: MarkOp::Or,
        value: node.mark.value(),
    }
}

/// The loopback destination of the family (`127.0.0.0/8`, `::1`).
pub(super) fn loopback(f: IpFamily) -> AddrMatch {
    net_match(f.loopback_net())
}

pub(super) fn setup(b: &mut Builder, node: &NodePlan, opts: LayoutOptions, r: &dyn Release) {
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
    r.masquerading(b, node);
    setup_rest(b, node, r);
}

pub(super) fn setup_rest(b: &mut Builder, node: &NodePlan, r: &dyn Release) {
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

    r.node_extras(b, node);
    setup_dispatch(b, node, match_all, r);
}

pub(super) fn setup_dispatch(b: &mut Builder, node: &NodePlan, match_all: bool, r: &dyn Release) {
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
    r.services_masquerade(b, node);
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
pub(super) fn no_endpoint_verdict(d: Disposition) -> Option<Verdict> {
    match d {
        Disposition::Forward(_) => None,
        Disposition::Reject => Some(goto(REJECT_CHAIN)),
        Disposition::Drop => Some(Verdict::Drop),
    }
}

pub(super) fn policy_chain(chains: &ServiceChains, policy: TrafficPolicy) -> &ChainName {
    match policy {
        TrafficPolicy::Cluster => &chains.cluster,
        TrafficPolicy::Local => &chains.local,
    }
}

pub(super) fn dst_key(ip: IpAddr, proto: Protocol, port: u16) -> Vec<KeyValue> {
    vec![
        KeyValue::Ip(ip),
        KeyValue::Proto(proto),
        KeyValue::Port(port),
    ]
}

pub(super) fn service_port(
    b: &mut Builder,
    node: &NodePlan,
    sp: &ServicePortPlan,
    r: &dyn Release,
) {
    let chains = ServiceChains::new(&sp.name);
    let proto = sp.name.protocol;
    let affinity = sp.affinity_timeout;
    let spn_comment = truncate_comment(&sp.name.to_string());

    for ep in sp.reachable_endpoints.iter() {
        r.endpoint_objects(b, sp, ep);
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
        if masquerade_all {
            b.rule(ext, r.masquerade_external(node));
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
                    .verdict(r.mark(node)),
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
        for ep in sp.reachable_endpoints.iter() {
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
    r.service_masquerade(b, node, sp, &chains);
    for (used, chain, eps) in selections {
        if used {
            r.select(b, sp, chain, eps);
        }
    }
    r.endpoint_chains(b, sp);
}

/// The `numgen random mod N vmap` selection of `eps` in `chain`, after a
/// `goto` to the endpoint chain of a source with ClientIP affinity.
pub(super) fn endpoint_vmap(
    b: &mut Builder,
    sp: &ServicePortPlan,
    chain: &ChainName,
    eps: &[PlannedEndpoint],
) {
    let mut to = Vec::new();
    for ep in eps {
        let (ep_chain, set_name) = endpoint_names(&sp.name, ep.ip, ep.port);
        if sp.affinity_timeout.is_some() {
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

/// An endpoint chain: `hairpin` first (the release's own), the ClientIP
/// affinity update, then the DNAT.
pub(super) fn endpoint_chain(
    b: &mut Builder,
    sp: &ServicePortPlan,
    ep: &PlannedEndpoint,
    hairpin: Option<Rule>,
) {
    let (ep_chain, set_name) = endpoint_names(&sp.name, ep.ip, ep.port);
    if let Some(rule) = hairpin {
        b.rule(ep_chain.as_str(), rule);
    }
    if sp.affinity_timeout.is_some() {
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
            .with(Match::Protocol(sp.name.protocol))
            .verdict(Verdict::Dnat(SocketAddr::new(ep.ip, ep.port))),
    );
}
