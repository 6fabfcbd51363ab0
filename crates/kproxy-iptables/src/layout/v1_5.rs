//! kube-proxy 1.5's iptables layout (the seed article's): plan -> IR.
//!
//! Modelled on `syncProxyRules` of `pkg/proxy/iptables/proxier.go` in the
//! 1.5 era (Endpoints, the `ExternalTrafficLocalOnly` feature gate,
//! `KUBE-XLB-*`). What it writes, per service port, in its order:
//!
//! * `KUBE-SERVICES` (nat): for the cluster IP `[-j KUBE-MARK-MASQ]`
//!   (masqueradeAll), `! -s CLUSTER_CIDR -j KUBE-MARK-MASQ`, `-j KUBE-SVC-…`;
//!   for each external IP `-j KUBE-MARK-MASQ`, then `-m physdev !
//!   --physdev-is-in -m addrtype ! --src-type LOCAL -j KUBE-SVC-…` and
//!   `-m addrtype --dst-type LOCAL -j KUBE-SVC-…`; for each load balancer IP
//!   `-j KUBE-FW-…`;
//! * `KUBE-FW-…`: `-j KUBE-MARK-MASQ` (not OnlyLocal), a jump to `KUBE-SVC-…`
//!   (or `KUBE-XLB-…`) per source range (or one without), the LB IP itself
//!   as a source when a range holds the node IP, and `-j KUBE-MARK-DROP`;
//! * `KUBE-NODEPORTS`: `-j KUBE-MARK-MASQ` and `-j KUBE-SVC-…`, or only
//!   `-j KUBE-XLB-…` (OnlyLocal);
//! * no endpoints: a filter `KUBE-SERVICES` REJECT for the cluster IP, and
//!   nothing more;
//! * `KUBE-SVC-…`: ClientIP `recent` checks, then one rule per endpoint with
//!   probability 1/(n-i); `KUBE-SEP-…`: hairpin masquerade and DNAT;
//! * `KUBE-XLB-…` (OnlyLocal): pods to the service chain, then the local
//!   endpoints ("Balancing rule i") or `KUBE-MARK-DROP`.
//!
//! The last rule of nat `KUBE-SERVICES` jumps to `KUBE-NODEPORTS` for local
//! destinations. kube-proxy 1.5 iterated a Go map, so its service order was
//! random; kproxy writes services sorted by name. Where 1.5 declared a
//! `KUBE-FW-…` chain once per LB IP, it is declared once.
//!
//! `KUBE-MARK-DROP` and filter `KUBE-FIREWALL` belonged to the kubelet;
//! they are written only with [`LayoutOptions::standalone`], with the
//! kubelet's rules (mark bit 15).

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_core::ir::{AddrMatch, Direction, Hook, Match, Rule, Verdict};
use kproxy_core::model::{LocalDetector, Protocol};
use kproxy_core::names::{ChainName, V1_5ServiceChains, iptables_endpoint_chain_v1_5};
use kproxy_core::plan::{
    ClusterIpMasquerade, ExternalMasquerade, LbSourceFilter, NodePlan, Plan, ServicePortPlan,
};

use super::rules::{
    Parts, affinity_check, comment, endpoint_chain_rules, endpoint_jump, jump, mark_or,
};
use super::{LayoutOptions, Part, Sink, TableId};
use crate::names::{
    KUBE_FIREWALL, KUBE_MARK_DROP, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_SERVICES,
};

/// The kubelet's drop mark bit (`--iptables-drop-bit`, default 15).
pub const KUBELET_DROP_BIT: u8 = 15;

use TableId::{Filter, Nat};

/// 1.5 wrote every host address with `/32` (`/128`).
fn host(ip: IpAddr) -> AddrMatch {
    AddrMatch::Net(IpNet::from(ip))
}

fn dst_host(ip: IpAddr) -> Match {
    Match::Addr {
        dir: Direction::Dst,
        addr: host(ip),
        negate: false,
    }
}

/// `-m p -p p -d IP/32 --dport PORT`
fn proto_dst(proto: Protocol, ip: IpAddr, port: u16) -> [Match; 3] {
    [Match::Protocol(proto), dst_host(ip), Match::DstPort(port)]
}

/// Lowers `plan` (planned with [`kproxy_core::plan::Release::V1_5`]) to
/// kube-proxy 1.5's layout, writing into `out`.
pub(super) fn emit<S: Sink>(plan: &Plan, opts: LayoutOptions, part: &Part, out: &mut S) {
    let node = &plan.node;
    if part.head {
        head(node, opts, out);
    }
    for sp in part.service_ports(plan) {
        out.owner(Some(&sp.name));
        service_port(out, node, sp);
    }
    if part.tail {
        out.owner(None);
        out.push(
            Nat,
            KUBE_SERVICES,
            Rule::new()
                .with(comment(
                    "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
                ))
                .with(Match::AddrTypeLocal {
                    dir: Direction::Dst,
                    negate: false,
                })
                .verdict(jump(KUBE_NODEPORTS)),
        );
    }
}

/// The node's first rules: declarations of the fixed chains, and their
/// rules that come before any service port's.
fn head<S: Sink>(node: &NodePlan, opts: LayoutOptions, out: &mut S) {
    if opts.standalone {
        builtin_jumps(out);
    }
    out.declare(Filter, KUBE_SERVICES);
    for name in [
        KUBE_SERVICES,
        KUBE_NODEPORTS,
        KUBE_POSTROUTING,
        KUBE_MARK_MASQ,
    ] {
        out.declare(Nat, name);
    }
    if opts.standalone {
        kubelet_chains(out);
    }
    let mark = node.mark.value();
    out.push(
        Nat,
        KUBE_POSTROUTING,
        Rule::new()
            .with(comment("kubernetes service traffic requiring SNAT"))
            .with(Match::Mark {
                value: mark,
                mask: mark,
                negate: false,
            })
            .verdict(Verdict::Masquerade {
                random_fully: false,
            }),
    );
    out.push(Nat, KUBE_MARK_MASQ, Rule::new().verdict(mark_or(mark)));
}

/// The jumps kube-proxy 1.5 prepends to the built-in chains, and the
/// kubelet's jumps to `KUBE-FIREWALL`, in the order they end up in.
fn builtin_jumps<S: Sink>(out: &mut S) {
    const PORTALS: &str = "kubernetes service portals";
    let to = |text: Option<&str>, target: &str| {
        let mut r = Rule::new();
        if let Some(t) = text {
            r = r.with(comment(t));
        }
        r.verdict(jump(target))
    };
    out.push_builtin(Filter, Hook::Input, to(None, KUBE_FIREWALL));
    out.push_builtin(Filter, Hook::Output, to(Some(PORTALS), KUBE_SERVICES));
    out.push_builtin(Filter, Hook::Output, to(None, KUBE_FIREWALL));
    out.push_builtin(Nat, Hook::Prerouting, to(Some(PORTALS), KUBE_SERVICES));
    out.push_builtin(Nat, Hook::Output, to(Some(PORTALS), KUBE_SERVICES));
    out.push_builtin(
        Nat,
        Hook::Postrouting,
        to(Some("kubernetes postrouting rules"), KUBE_POSTROUTING),
    );
}

/// The kubelet's `KUBE-MARK-DROP` (nat) and `KUBE-FIREWALL` (filter).
fn kubelet_chains<S: Sink>(out: &mut S) {
    let drop = 1u32 << KUBELET_DROP_BIT;
    out.declare(Nat, KUBE_MARK_DROP);
    out.declare(Filter, KUBE_FIREWALL);
    out.push(Nat, KUBE_MARK_DROP, Rule::new().verdict(mark_or(drop)));
    out.push(
        Filter,
        KUBE_FIREWALL,
        Rule::new()
            .with(comment("kubernetes firewall for dropping marked packets"))
            .with(Match::Mark {
                value: drop,
                mask: drop,
                negate: false,
            })
            .verdict(Verdict::Drop),
    );
}

fn service_port<S: Sink>(out: &mut S, node: &NodePlan, sp: &ServicePortPlan) {
    let chains = V1_5ServiceChains::new(&sp.name);
    let spn = sp.name.to_string_v1_5();
    let proto = sp.name.protocol;
    let svc = chains.svc.as_str();
    let xlb = chains.xlb.as_str();
    let only_local = sp.external_masquerade == ExternalMasquerade::PreserveSource;

    out.declare(Nat, svc);
    if only_local {
        out.declare(Nat, xlb);
    }
    let pod_cidr = match &node.local_detector {
        LocalDetector::Cidr(net) => Some(*net),
        _ => None,
    };

    // Cluster IP.
    let cip = || {
        Rule::new()
            .with(comment(format!("{spn} cluster IP")))
            .with_all(proto_dst(proto, sp.cluster_ip, sp.port))
    };
    if node.cluster_ip_masquerade == ClusterIpMasquerade::All {
        out.push(Nat, KUBE_SERVICES, cip().verdict(jump(KUBE_MARK_MASQ)));
    }
    if let Some(net) = pod_cidr {
        out.push(
            Nat,
            KUBE_SERVICES,
            cip()
                .with(Match::Addr {
                    dir: Direction::Src,
                    addr: AddrMatch::Net(net),
                    negate: true,
                })
                .verdict(jump(KUBE_MARK_MASQ)),
        );
    }
    out.push(Nat, KUBE_SERVICES, cip().verdict(jump(svc)));

    // External IPs.
    for ip in &sp.external_ips {
        let ext = || {
            Rule::new()
                .with(comment(format!("{spn} external IP")))
                .with_all(proto_dst(proto, *ip, sp.port))
        };
        out.push(Nat, KUBE_SERVICES, ext().verdict(jump(KUBE_MARK_MASQ)));
        out.push(
            Nat,
            KUBE_SERVICES,
            ext()
                .with(Match::PhysDevIsIn { negate: true })
                .with(Match::AddrTypeLocal {
                    dir: Direction::Src,
                    negate: true,
                })
                .verdict(jump(svc)),
        );
        out.push(
            Nat,
            KUBE_SERVICES,
            ext()
                .with(Match::AddrTypeLocal {
                    dir: Direction::Dst,
                    negate: false,
                })
                .verdict(jump(svc)),
        );
    }

    // Load balancer IPs.
    let chosen = if only_local { xlb } else { svc };
    if !sp.load_balancer_ips.is_empty() {
        out.declare(Nat, chains.fw.as_str());
    }
    for ip in &sp.load_balancer_ips {
        let fw = chains.fw.as_str();
        let text = format!("{spn} loadbalancer IP");
        out.push(
            Nat,
            KUBE_SERVICES,
            Rule::new()
                .with(comment(text.clone()))
                .with_all(proto_dst(proto, *ip, sp.port))
                .verdict(jump(fw)),
        );
        let base = || Rule::new().with(comment(text.clone()));
        if !only_local {
            out.push(Nat, fw, base().verdict(jump(KUBE_MARK_MASQ)));
        }
        let src = |addr: AddrMatch| Match::Addr {
            dir: Direction::Src,
            addr,
            negate: false,
        };
        match &sp.lb_source_filter {
            LbSourceFilter::Open => out.push(Nat, fw, base().verdict(jump(chosen))),
            LbSourceFilter::Ranges {
                ranges,
                admits_lb_ips,
            } => {
                for net in ranges {
                    out.push(
                        Nat,
                        fw,
                        base().with(src(AddrMatch::Net(*net))).verdict(jump(chosen)),
                    );
                }
                if *admits_lb_ips {
                    out.push(Nat, fw, base().with(src(host(*ip))).verdict(jump(chosen)));
                }
            }
        }
        out.push(Nat, fw, base().verdict(jump(KUBE_MARK_DROP)));
    }

    // Node port.
    if let Some(np) = sp.node_port {
        let rule = || {
            Rule::new()
                .with(comment(spn.clone()))
                .with(Match::Protocol(proto))
                .with(Match::DstPort(np))
        };
        if only_local {
            out.push(Nat, KUBE_NODEPORTS, rule().verdict(jump(xlb)));
        } else {
            out.push(Nat, KUBE_NODEPORTS, rule().verdict(jump(KUBE_MARK_MASQ)));
            out.push(Nat, KUBE_NODEPORTS, rule().verdict(jump(svc)));
        }
    }

    // No endpoints: reject traffic to the cluster IP, and stop.
    if !sp.has_endpoints {
        out.push(
            Filter,
            KUBE_SERVICES,
            Rule::new()
                .with(comment(format!("{spn} has no endpoints")))
                .with_all(proto_dst(proto, sp.cluster_ip, sp.port))
                .verdict(Verdict::Reject),
        );
        return;
    }

    // Endpoint chains: every endpoint of the service (the cluster list).
    let eps = &sp.cluster_endpoints;
    let seps: Vec<ChainName> = eps
        .iter()
        .map(|ep| iptables_endpoint_chain_v1_5(&sp.name, ep.endpoint_str()))
        .collect();
    for sep in &seps {
        out.declare(Nat, sep.as_str());
    }
    let mut parts = Parts::default();
    let comments = [comment(spn.clone())];
    if let Some(seconds) = sp.affinity_timeout {
        for sep in &seps {
            affinity_check(out, svc, &mut parts, &comments, sep, seconds);
        }
    }
    let n = seps.len();
    for (i, (ep, sep)) in eps.iter().zip(&seps).enumerate() {
        endpoint_jump(out, svc, &mut parts, &comments, i, n, sep);
        endpoint_chain_rules(out, &mut parts, &comments, host(ep.ip), sp, ep, sep);
    }

    // OnlyLocal: the XLB chain.
    if !only_local {
        return;
    }
    if let Some(net) = pod_cidr {
        out.push(
            Nat,
            xlb,
            Rule::new()
                .with(comment(
                    "Redirect pods trying to reach external loadbalancer VIP to clusterIP",
                ))
                .with(Match::Addr {
                    dir: Direction::Src,
                    addr: AddrMatch::Net(net),
                    negate: false,
                })
                .verdict(jump(svc)),
        );
    }
    let local: Vec<&ChainName> = eps
        .iter()
        .zip(&seps)
        .filter(|(ep, _)| ep.is_local)
        .map(|(_, sep)| sep)
        .collect();
    if local.is_empty() {
        out.push(
            Nat,
            xlb,
            Rule::new()
                .with(comment(format!("{spn} has no local endpoints")))
                .verdict(jump(KUBE_MARK_DROP)),
        );
    }
    let n = local.len();
    for (i, sep) in local.into_iter().enumerate() {
        let comments = [comment(format!("Balancing rule {i} for {spn}"))];
        endpoint_jump(out, xlb, &mut parts, &comments, i, n, sep);
    }
}
