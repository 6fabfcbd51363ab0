//! kube-proxy's current iptables layout (v1.34+): plan -> IR.
//!
//! Every function here lowers facts the planner decided; none looks at the
//! model or re-decides Kubernetes semantics.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use kproxy_core::ir::{
    AddrMatch, CtState, Direction, Hook, MarkOp, Match, Rule, Verdict, local_traffic_matches,
};
use kproxy_core::model::{Protocol, TrafficPolicy};
use kproxy_core::names::{ChainName, IptablesEndpointChains, IptablesServiceChains};
use kproxy_core::plan::{
    ClusterIpMasquerade, Disposition, ExternalMasquerade, LbSourceFilter, NodePlan,
    NodePortDestinations, Plan, PlannedEndpoint, ServicePortPlan,
};

use crate::names::{
    KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS,
    KUBE_POSTROUTING, KUBE_PROXY_CANARY, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};

use super::rules::{Parts, affinity_check, comment, endpoint_chain_rules, endpoint_jump, jump};
use super::{
    CT_STATE_INVALID_COUNTER, LOCALHOST_NODEPORTS_COUNTER, LayoutOptions, Part, Sink, TableId,
};

use TableId::{Filter, Mangle, Nat};

/// Lowers `plan` to the current layout, writing into `out`:
/// tables `filter` then `nat` (and `mangle` for the canary when standalone).
pub(super) fn emit<S: Sink>(plan: &Plan, opts: LayoutOptions, part: &Part, out: &mut S) {
    if part.head {
        head(plan, opts, out);
    }
    let ctx = Ctx {
        node: &plan.node,
        large_cluster: plan.large_cluster,
    };
    for sp in part.service_ports(plan) {
        out.owner(Some(&sp.name));
        service_port(out, &ctx, sp);
    }
    if part.tail {
        out.owner(None);
        forward_rules(out, &plan.node);
        nodeports_jump(out, &plan.node);
    }
}

/// The node's first rules: declarations of the fixed chains, and their
/// rules that come before any service port's.
fn head<S: Sink>(plan: &Plan, opts: LayoutOptions, out: &mut S) {
    if opts.standalone {
        builtin_jumps(out);
    }
    for name in [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ] {
        out.declare(Filter, name);
    }
    if plan.node.localhost_node_ports || opts.standalone {
        out.declare(Filter, KUBE_FIREWALL);
    }
    for name in [
        KUBE_SERVICES,
        KUBE_NODEPORTS,
        KUBE_POSTROUTING,
        KUBE_MARK_MASQ,
    ] {
        out.declare(Nat, name);
    }
    if opts.standalone {
        out.declare(Filter, KUBE_PROXY_CANARY);
        out.declare(Nat, KUBE_PROXY_CANARY);
        out.declare(Mangle, KUBE_PROXY_CANARY);
    }
    if plan.node.localhost_node_ports {
        out.push(Filter, KUBE_FIREWALL, localnet_block_rule());
    }
    postrouting_rules(out, &plan.node);
}

struct Ctx<'a> {
    node: &'a NodePlan,
    large_cluster: bool,
}

fn ct_new() -> Match {
    Match::CtState {
        states: vec![CtState::New],
        negate: false,
    }
}

/// The jump rules kube-proxy ensures at the top of the built-in chains, in
/// the order they end up in on a clean node (each is inserted at the top).
fn builtin_jumps<S: Sink>(out: &mut S) {
    use Hook::{Forward, Input, Output, Postrouting, Prerouting};
    const EXTERNAL: &str = "kubernetes externally-visible service portals";
    const PORTALS: &str = "kubernetes service portals";
    const HEALTH: &str = "kubernetes health check service ports";
    const FORWARDING: &str = "kubernetes forwarding rules";
    const LB_FW: &str = "kubernetes load balancer firewall";
    let r = |ct: bool, text: Option<&str>, target: &str| {
        let mut rule = Rule::new();
        if ct {
            rule = rule.with(ct_new());
        }
        if let Some(t) = text {
            rule = rule.with(comment(t));
        }
        rule.verdict(jump(target))
    };
    out.push_builtin(Filter, Input, r(false, None, KUBE_FIREWALL));
    out.push_builtin(Filter, Input, r(true, Some(LB_FW), KUBE_PROXY_FIREWALL));
    out.push_builtin(Filter, Input, r(false, Some(HEALTH), KUBE_NODEPORTS));
    out.push_builtin(
        Filter,
        Input,
        r(true, Some(EXTERNAL), KUBE_EXTERNAL_SERVICES),
    );
    out.push_builtin(Filter, Forward, r(true, Some(LB_FW), KUBE_PROXY_FIREWALL));
    out.push_builtin(Filter, Forward, r(false, Some(FORWARDING), KUBE_FORWARD));
    out.push_builtin(Filter, Forward, r(true, Some(PORTALS), KUBE_SERVICES));
    out.push_builtin(
        Filter,
        Forward,
        r(true, Some(EXTERNAL), KUBE_EXTERNAL_SERVICES),
    );
    out.push_builtin(Filter, Output, r(false, None, KUBE_FIREWALL));
    out.push_builtin(Filter, Output, r(true, Some(LB_FW), KUBE_PROXY_FIREWALL));
    out.push_builtin(Filter, Output, r(true, Some(PORTALS), KUBE_SERVICES));
    out.push_builtin(Nat, Prerouting, r(false, Some(PORTALS), KUBE_SERVICES));
    out.push_builtin(Nat, Output, r(false, Some(PORTALS), KUBE_SERVICES));
    out.push_builtin(
        Nat,
        Postrouting,
        r(
            false,
            Some("kubernetes postrouting rules"),
            KUBE_POSTROUTING,
        ),
    );
}

fn localnet_block_rule() -> Rule {
    let loopback: ipnet::IpNet = "127.0.0.0/8".parse().expect("constant");
    Rule::new()
        .with(comment("block incoming localnet connections"))
        .with(Match::Addr {
            dir: Direction::Dst,
            addr: AddrMatch::Net(loopback),
            negate: false,
        })
        .with(Match::Addr {
            dir: Direction::Src,
            addr: AddrMatch::Net(loopback),
            negate: true,
        })
        .with(Match::CtState {
            states: vec![CtState::Related, CtState::Established, CtState::Dnat],
            negate: true,
        })
        .verdict(Verdict::Drop)
}

fn postrouting_rules<S: Sink>(out: &mut S, node: &NodePlan) {
    let mark = node.mark.value();
    out.push(
        Nat,
        KUBE_POSTROUTING,
        Rule::new()
            .with(Match::Mark {
                value: mark,
                mask: mark,
                negate: true,
            })
            .verdict(Verdict::Return),
    );
    out.push(
        Nat,
        KUBE_POSTROUTING,
        Rule::new().verdict(Verdict::SetMark {
            op: MarkOp::Xor,
            value: mark,
        }),
    );
    out.push(
        Nat,
        KUBE_POSTROUTING,
        Rule::new()
            .with(comment("kubernetes service traffic requiring SNAT"))
            .verdict(Verdict::Masquerade {
                random_fully: node.random_fully,
            }),
    );
    out.push(
        Nat,
        KUBE_MARK_MASQ,
        Rule::new().verdict(Verdict::SetMark {
            op: MarkOp::Or,
            value: mark,
        }),
    );
}

fn forward_rules<S: Sink>(out: &mut S, node: &NodePlan) {
    if node.drop_invalid {
        let mut r = Rule::new().with(Match::CtState {
            states: vec![CtState::Invalid],
            negate: false,
        });
        if node.nfacct {
            r = r.with(Match::Nfacct(CT_STATE_INVALID_COUNTER.into()));
        }
        out.push(Filter, KUBE_FORWARD, r.verdict(Verdict::Drop));
    }
    let mark = node.mark.value();
    out.push(
        Filter,
        KUBE_FORWARD,
        Rule::new()
            .with(comment("kubernetes forwarding rules"))
            .with(Match::Mark {
                value: mark,
                mask: mark,
                negate: false,
            })
            .verdict(Verdict::Accept),
    );
    out.push(
        Filter,
        KUBE_FORWARD,
        Rule::new()
            .with(comment("kubernetes forwarding conntrack rule"))
            .with(Match::CtState {
                states: vec![CtState::Related, CtState::Established],
                negate: false,
            })
            .verdict(Verdict::Accept),
    );
}

/// The last rule of nat KUBE-SERVICES: local destinations go to KUBE-NODEPORTS.
fn nodeports_jump<S: Sink>(out: &mut S, node: &NodePlan) {
    const TEXT: &str =
        "kubernetes service nodeports; NOTE: this must be the last rule in this chain";
    match &node.node_ports {
        NodePortDestinations::AllLocal { exclude } => {
            let mut r = Rule::new().with(comment(TEXT)).with(Match::AddrTypeLocal {
                dir: Direction::Dst,
                negate: false,
            });
            if let Some(net) = exclude {
                r = r.with(Match::Addr {
                    dir: Direction::Dst,
                    addr: AddrMatch::Net(*net),
                    negate: true,
                });
            }
            out.push(Nat, KUBE_SERVICES, r.verdict(jump(KUBE_NODEPORTS)));
        }
        NodePortDestinations::Addresses(addrs) => {
            for ip in addrs {
                out.push(
                    Nat,
                    KUBE_SERVICES,
                    Rule::new()
                        .with(comment(TEXT))
                        .with(dst_ip(*ip))
                        .verdict(jump(KUBE_NODEPORTS)),
                );
            }
        }
    }
}

fn dst_ip(ip: IpAddr) -> Match {
    Match::Addr {
        dir: Direction::Dst,
        addr: AddrMatch::Ip(ip),
        negate: false,
    }
}

fn src_ip(ip: IpAddr) -> Match {
    Match::Addr {
        dir: Direction::Src,
        addr: AddrMatch::Ip(ip),
        negate: false,
    }
}

/// `-m p -p p -d IP --dport PORT`
fn proto_dst(proto: Protocol, ip: IpAddr, port: u16) -> [Match; 3] {
    [Match::Protocol(proto), dst_ip(ip), Match::DstPort(port)]
}

/// The filter rule for traffic with nowhere to go.
/// The policy whose chain forwarded traffic jumps to, or the comment and
/// verdict of the rule that blocks traffic with nowhere to go.
fn no_endpoint_rule(
    sp: &ServicePortPlan,
    disposition: Disposition,
) -> Result<TrafficPolicy, (String, Verdict)> {
    match disposition {
        Disposition::Forward(policy) => Ok(policy),
        Disposition::Reject => Err((format!("{} has no endpoints", sp.name), Verdict::Reject)),
        Disposition::Drop => Err((format!("{} has no local endpoints", sp.name), Verdict::Drop)),
    }
}

/// Whether the layout writes the `KUBE-FW-…` chain: the source filter is
/// reached through the load balancer IP's rule, which exists only with
/// endpoints (without, `KUBE-EXTERNAL-SERVICES` rejects first).
fn uses_firewall_chain(sp: &ServicePortPlan) -> bool {
    sp.has_endpoints && sp.lb_source_filter.filters()
}

fn policy_chain(chains: &IptablesServiceChains, policy: TrafficPolicy) -> &str {
    match policy {
        TrafficPolicy::Cluster => chains.svc.as_str(),
        TrafficPolicy::Local => chains.svl.as_str(),
    }
}

fn service_port<S: Sink>(out: &mut S, ctx: &Ctx<'_>, sp: &ServicePortPlan) {
    let chains = IptablesServiceChains::new(&sp.name);
    let spn = sp.name.to_string();
    let proto = sp.name.protocol;
    let ext = chains.ext.as_str();

    // 1. Cluster IP.
    match no_endpoint_rule(sp, sp.internal) {
        Ok(policy) => out.push(
            Nat,
            KUBE_SERVICES,
            Rule::new()
                .with(comment(format!("{spn} cluster IP")))
                .with_all(proto_dst(proto, sp.cluster_ip, sp.port))
                .verdict(jump(policy_chain(&chains, policy))),
        ),
        Err((text, verdict)) => out.push(
            Filter,
            KUBE_SERVICES,
            Rule::new()
                .with(comment(text))
                .with_all(proto_dst(proto, sp.cluster_ip, sp.port))
                .verdict(verdict),
        ),
    }
    let external_block = no_endpoint_rule(sp, sp.external).err();
    let block = |out: &mut S, matches: Vec<Match>| {
        if let Some((text, verdict)) = &external_block {
            out.push(
                Filter,
                KUBE_EXTERNAL_SERVICES,
                Rule::new()
                    .with(comment(text.clone()))
                    .with_all(matches)
                    .verdict(verdict.clone()),
            );
        }
    };

    // 2. External IPs.
    for ip in &sp.external_ips {
        if sp.has_endpoints {
            out.push(
                Nat,
                KUBE_SERVICES,
                Rule::new()
                    .with(comment(format!("{spn} external IP")))
                    .with_all(proto_dst(proto, *ip, sp.port))
                    .verdict(jump(ext)),
            );
        }
        block(out, proto_dst(proto, *ip, sp.port).to_vec());
    }

    // 3. Load balancer IPs.
    let firewall = uses_firewall_chain(sp);
    let lb_target = if firewall { chains.fw.as_str() } else { ext };
    for ip in &sp.load_balancer_ips {
        if sp.has_endpoints {
            out.push(
                Nat,
                KUBE_SERVICES,
                Rule::new()
                    .with(comment(format!("{spn} loadbalancer IP")))
                    .with_all(proto_dst(proto, *ip, sp.port))
                    .verdict(jump(lb_target)),
            );
        }
        if firewall {
            out.push(
                Filter,
                KUBE_PROXY_FIREWALL,
                Rule::new()
                    .with(comment(format!(
                        "{spn} traffic not accepted by {}",
                        chains.fw
                    )))
                    .with_all(proto_dst(proto, *ip, sp.port))
                    .verdict(Verdict::Drop),
            );
        }
    }
    // 4. Load balancer IPs with nowhere to go.
    for ip in &sp.load_balancer_ips {
        block(out, proto_dst(proto, *ip, sp.port).to_vec());
    }

    // 5. Node port.
    if let Some(np) = sp.node_port {
        if sp.has_endpoints {
            if ctx.node.localhost_node_ports && ctx.node.nfacct {
                out.push(
                    Nat,
                    KUBE_NODEPORTS,
                    Rule::new()
                        .with(comment(spn.clone()))
                        .with(Match::Protocol(proto))
                        .with(Match::Addr {
                            dir: Direction::Dst,
                            addr: AddrMatch::Net(ctx.node.family.loopback_net()),
                            negate: false,
                        })
                        .with(Match::DstPort(np))
                        .with(Match::Nfacct(LOCALHOST_NODEPORTS_COUNTER.into()))
                        .verdict(jump(ext)),
                );
            }
            out.push(
                Nat,
                KUBE_NODEPORTS,
                Rule::new()
                    .with(comment(spn.clone()))
                    .with(Match::Protocol(proto))
                    .with(Match::DstPort(np))
                    .verdict(jump(ext)),
            );
        }
        block(
            out,
            vec![
                Match::AddrTypeLocal {
                    dir: Direction::Dst,
                    negate: false,
                },
                Match::Protocol(proto),
                Match::DstPort(np),
            ],
        );
    }

    // 6. Health check node port.
    if let Some(hc) = sp.health_check_node_port {
        out.push(
            Filter,
            KUBE_NODEPORTS,
            Rule::new()
                .with(comment(format!("{spn} health check node port")))
                .with(Match::Protocol(Protocol::Tcp))
                .with(Match::DstPort(hc))
                .verdict(Verdict::Accept),
        );
    }

    // 7..12: the service's own chains.
    service_chains(out, ctx, sp, &chains);
}

fn service_chains<S: Sink>(
    out: &mut S,
    ctx: &Ctx<'_>,
    sp: &ServicePortPlan,
    chains: &IptablesServiceChains,
) {
    let spn = sp.name.to_string();
    let proto = sp.name.protocol;
    let svc = chains.svc.as_str();

    // The service's chains, declared before their rules.
    for (used, chain) in [
        (sp.uses_external_chain(), &chains.ext),
        (uses_firewall_chain(sp), &chains.fw),
        (sp.uses_cluster_chain(), &chains.svc),
        (sp.uses_local_chain(), &chains.svl),
    ] {
        if used {
            out.declare(Nat, chain.as_str());
        }
    }

    // 7. Masquerade off-node traffic to the cluster IP.
    if let Disposition::Forward(internal_policy) = sp.internal {
        let not_local = match &ctx.node.cluster_ip_masquerade {
            ClusterIpMasquerade::All => Some(Vec::new()),
            ClusterIpMasquerade::IfNotLocal(det) => Some(local_traffic_matches(det, false)),
            ClusterIpMasquerade::Never => None,
        };
        if let Some(extra) = not_local {
            out.push(
                Nat,
                policy_chain(chains, internal_policy),
                Rule::new()
                    .with(comment(format!("{spn} cluster IP")))
                    .with_all(proto_dst(proto, sp.cluster_ip, sp.port))
                    .with_all(extra)
                    .verdict(jump(KUBE_MARK_MASQ)),
            );
        }
    }

    // 8. External traffic.
    if sp.uses_external_chain() {
        let ext = chains.ext.as_str();
        if sp.external_masquerade == ExternalMasquerade::All {
            out.push(
                Nat,
                ext,
                Rule::new()
                    .with(comment(format!(
                        "masquerade traffic for {spn} external destinations"
                    )))
                    .verdict(jump(KUBE_MARK_MASQ)),
            );
        } else {
            let local = local_traffic_matches(&ctx.node.local_detector, true);
            if !local.is_empty() {
                out.push(
                    Nat,
                    ext,
                    Rule::new()
                        .with(comment(format!(
                            "pod traffic for {spn} external destinations"
                        )))
                        .with_all(local)
                        .verdict(jump(svc)),
                );
            }
            let src_local = Match::AddrTypeLocal {
                dir: Direction::Src,
                negate: false,
            };
            out.push(
                Nat,
                ext,
                Rule::new()
                    .with(comment(format!(
                        "masquerade LOCAL traffic for {spn} external destinations"
                    )))
                    .with(src_local.clone())
                    .verdict(jump(KUBE_MARK_MASQ)),
            );
            out.push(
                Nat,
                ext,
                Rule::new()
                    .with(comment(format!(
                        "route LOCAL traffic for {spn} external destinations"
                    )))
                    .with(src_local)
                    .verdict(jump(svc)),
            );
        }
        if let Disposition::Forward(policy) = sp.external {
            out.push(
                Nat,
                ext,
                Rule::new().verdict(jump(policy_chain(chains, policy))),
            );
        }
    }

    // 9. Load balancer source ranges.
    if let (
        true,
        LbSourceFilter::Ranges {
            ranges,
            admits_lb_ips,
        },
    ) = (sp.has_endpoints, &sp.lb_source_filter)
    {
        let fw = chains.fw.as_str();
        let text = format!("{spn} loadbalancer IP");
        for net in ranges {
            out.push(
                Nat,
                fw,
                Rule::new()
                    .with(comment(text.clone()))
                    .with(Match::Addr {
                        dir: Direction::Src,
                        addr: AddrMatch::Net(*net),
                        negate: false,
                    })
                    .verdict(jump(chains.ext.as_str())),
            );
        }
        if *admits_lb_ips {
            for ip in &sp.load_balancer_ips {
                out.push(
                    Nat,
                    fw,
                    Rule::new()
                        .with(comment(text.clone()))
                        .with(src_ip(*ip))
                        .verdict(jump(chains.ext.as_str())),
                );
            }
        }
        out.push(
            Nat,
            fw,
            Rule::new().with(comment(format!(
                "other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL"
            ))),
        );
    }

    // 10, 11. Endpoint selection; the endpoint chains are named once.
    let seps = EndpointChains::new(sp);
    let mut parts = Parts::default();
    if sp.uses_cluster_chain() {
        let cluster = &sp.cluster_endpoints;
        endpoint_selection(out, ctx, &mut parts, &spn, sp, svc, cluster, &seps);
    }
    if sp.uses_local_chain() {
        let svl = chains.svl.as_str();
        let local = &sp.local_endpoints;
        endpoint_selection(out, ctx, &mut parts, &spn, sp, svl, local, &seps);
    }

    // 12. Endpoint chains.
    for (ep, sep) in sp.reachable_endpoints.iter().zip(&seps.names) {
        endpoint_chain(out, ctx, &mut parts, &spn, sp, ep, sep);
    }
}

/// The endpoint chains of a service port, named once.
struct EndpointChains<'a> {
    sp: &'a ServicePortPlan,
    namer: IptablesEndpointChains,
    /// The chain of each reachable endpoint, in their order.
    names: Vec<ChainName>,
}

impl<'a> EndpointChains<'a> {
    fn new(sp: &'a ServicePortPlan) -> Self {
        let namer = IptablesEndpointChains::new(&sp.name);
        let names = sp
            .reachable_endpoints
            .iter()
            .map(|ep| namer.chain(ep.endpoint_str()))
            .collect();
        Self { sp, namer, names }
    }

    /// The chain of `ep`, the `i`th endpoint of its list, which is its
    /// place among the reachable endpoints too when the lists are the same
    /// (the common case: they share their strings then).
    fn of(&self, i: usize, ep: &PlannedEndpoint) -> Cow<'_, ChainName> {
        let reachable = &self.sp.reachable_endpoints;
        let at = match reachable.get(i) {
            Some(r) if Arc::ptr_eq(&r.endpoint, &ep.endpoint) => Some(i),
            _ => reachable
                .binary_search_by(|r| r.endpoint_str().cmp(ep.endpoint_str()))
                .ok(),
        };
        match at.and_then(|i| self.names.get(i)) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(self.namer.chain(ep.endpoint_str())),
        }
    }
}

/// The per-endpoint comment, left out in large-cluster mode.
fn endpoint_comment(ctx: &Ctx<'_>, text: impl FnOnce() -> String) -> Option<Match> {
    (!ctx.large_cluster).then(|| Match::Comment(text()))
}

#[allow(clippy::too_many_arguments)]
fn endpoint_selection<S: Sink>(
    out: &mut S,
    ctx: &Ctx<'_>,
    parts: &mut Parts,
    spn: &str,
    sp: &ServicePortPlan,
    chain: &str,
    endpoints: &[PlannedEndpoint],
    seps: &EndpointChains<'_>,
) {
    let named: Vec<(&str, Cow<'_, ChainName>)> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| (ep.endpoint_str(), seps.of(i, ep)))
        .collect();
    if let Some(seconds) = sp.affinity_timeout {
        for (s, sep) in &named {
            let comment = endpoint_comment(ctx, || format!("{spn} -> {s}"));
            affinity_check(out, chain, parts, comment.as_slice(), sep, seconds);
        }
    }
    let n = named.len();
    for (i, (s, sep)) in named.iter().enumerate() {
        let comment = endpoint_comment(ctx, || format!("{spn} -> {s}"));
        endpoint_jump(out, chain, parts, comment.as_slice(), i, n, sep);
    }
}

fn endpoint_chain<S: Sink>(
    out: &mut S,
    ctx: &Ctx<'_>,
    parts: &mut Parts,
    spn: &str,
    sp: &ServicePortPlan,
    ep: &PlannedEndpoint,
    sep: &ChainName,
) {
    out.declare(Nat, sep.as_str());
    let comment = endpoint_comment(ctx, || spn.to_string());
    let src = AddrMatch::Ip(ep.ip);
    endpoint_chain_rules(out, parts, comment.as_slice(), src, sp, ep, sep);
}
