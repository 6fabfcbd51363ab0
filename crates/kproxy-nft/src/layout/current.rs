//! The current nftables layout (kube-proxy 1.36 and later): masquerading
//! through the `hairpin-connections` set, cluster IP masquerading in
//! `services`, `dnat to numgen random mod N map` without per-endpoint
//! chains unless ClientIP affinity needs them, localhost NodePort rejects.

use std::net::SocketAddr;

use kproxy_core::ir::{
    Chain, Counter, CtState, Key, KeyValue, MarkOp, Match, Rule, Verdict, local_traffic_matches,
};
use kproxy_core::model::Protocol;
use kproxy_core::names::ChainName;
use kproxy_core::plan::{ClusterIpMasquerade, NodePlan, PlannedEndpoint, ServicePortPlan};

use crate::names::*;
use crate::tx::Op;

use super::rules::{
    Builder, PROTO_PORT, addr_type, comment, dst_addr, endpoint_chain, endpoint_vmap, in_set,
    loopback, mark_or, set, vmap, vmap_verdict,
};
use super::{Release, localhost_reject_chain, localhost_reject_counter};

/// Every protocol kube-proxy may reject localhost NodePorts for, in its order.
const REJECTABLE: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// The current layout.
pub(super) struct Current;

impl Release for Current {
    fn masquerading(&self, b: &mut Builder, node: &NodePlan) {
        masquerading(b, node);
    }
    fn node_extras(&self, b: &mut Builder, node: &NodePlan) {
        localhost_node_ports(b, node);
    }
    fn services_masquerade(&self, b: &mut Builder, node: &NodePlan) {
        match &node.cluster_ip_masquerade {
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
    }
    fn mark(&self, node: &NodePlan) -> Verdict {
        mark_or(node)
    }
    fn masquerade_external(&self, node: &NodePlan) -> Rule {
        Rule::new()
            .with(comment("masquerade"))
            .verdict(mark_or(node))
    }
    fn endpoint_objects(&self, b: &mut Builder, sp: &ServicePortPlan, ep: &PlannedEndpoint) {
        if sp.affinity_timeout.is_some() {
            let (chain, _) = endpoint_names(&sp.name, ep.ip, ep.port);
            b.ensure_chain(chain.as_str());
        }
        if ep.is_local {
            b.element(
                HAIRPIN_CONNECTIONS,
                vec![
                    KeyValue::Ip(ep.ip),
                    KeyValue::Ip(ep.ip),
                    KeyValue::Proto(sp.name.protocol),
                    KeyValue::Port(ep.port),
                ],
                None,
                None,
            );
        }
    }
    fn service_masquerade(
        &self,
        _: &mut Builder,
        _: &NodePlan,
        _: &ServicePortPlan,
        _: &ServiceChains,
    ) {
    }
    fn select(
        &self,
        b: &mut Builder,
        sp: &ServicePortPlan,
        chain: &ChainName,
        eps: &[PlannedEndpoint],
    ) {
        if sp.affinity_timeout.is_some() {
            return endpoint_vmap(b, sp, chain, eps);
        }
        let to: Vec<SocketAddr> = eps.iter().map(|e| SocketAddr::new(e.ip, e.port)).collect();
        b.rule(
            chain.as_str(),
            Rule::new()
                .with(Match::Protocol(sp.name.protocol))
                .verdict(Verdict::DnatRandom { to }),
        );
    }
    fn endpoint_chains(&self, b: &mut Builder, sp: &ServicePortPlan) {
        if sp.affinity_timeout.is_some() {
            for ep in sp.reachable_endpoints.iter() {
                endpoint_chain(b, sp, ep, None);
            }
        }
    }
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
