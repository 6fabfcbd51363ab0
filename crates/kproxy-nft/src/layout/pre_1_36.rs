//! The nftables layout before 1.36 (modelled on kube-proxy 1.29-1.35): a
//! `mark-for-masquerade` chain every marking rule jumps to, `masquerading`
//! as three rules, no `hairpin-connections` set (each endpoint chain marks
//! its own hairpin traffic), cluster IP masquerading in the service's own
//! chain, one `endpoint-…` chain per endpoint selected by `numgen random
//! mod N vmap` even for one endpoint, no localhost NodePort rejects.

use kproxy_core::ir::{AddrMatch, Direction, MarkOp, Match, Rule, Verdict, local_traffic_matches};
use kproxy_core::names::ChainName;
use kproxy_core::plan::{
    ClusterIpMasquerade, Disposition, NodePlan, PlannedEndpoint, ServicePortPlan,
};

use crate::names::*;

use super::Release;
use super::rules::{Builder, dst_addr, endpoint_chain, endpoint_vmap, mark_or, policy_chain};

/// `jump mark-for-masquerade` (the pre-1.36 layout's way to mark).
fn mark_jump() -> Verdict {
    Verdict::Jump(ChainName::new(MARK_FOR_MASQUERADE))
}

/// The pre-1.36 layout.
pub(super) struct Pre1_36;

impl Release for Pre1_36 {
    fn masquerading(&self, b: &mut Builder, node: &NodePlan) {
        let mark = node.mark.value();
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
    }
    fn node_extras(&self, _: &mut Builder, _: &NodePlan) {}
    fn services_masquerade(&self, _: &mut Builder, _: &NodePlan) {}
    fn mark(&self, _: &NodePlan) -> Verdict {
        mark_jump()
    }
    fn masquerade_external(&self, _: &NodePlan) -> Rule {
        Rule::new().verdict(mark_jump())
    }
    fn endpoint_objects(&self, b: &mut Builder, sp: &ServicePortPlan, ep: &PlannedEndpoint) {
        let (chain, _) = endpoint_names(&sp.name, ep.ip, ep.port);
        b.ensure_chain(chain.as_str());
    }
    /// Off-cluster traffic to the cluster IP is masqueraded in the internal
    /// policy's chain.
    fn service_masquerade(
        &self,
        b: &mut Builder,
        node: &NodePlan,
        sp: &ServicePortPlan,
        chains: &ServiceChains,
    ) {
        let Disposition::Forward(policy) = sp.internal else {
            return;
        };
        let not_local = match &node.cluster_ip_masquerade {
            ClusterIpMasquerade::All => Some(Vec::new()),
            ClusterIpMasquerade::IfNotLocal(det) => Some(local_traffic_matches(det, false)),
            ClusterIpMasquerade::Never => None,
        };
        if let Some(extra) = not_local {
            b.rule(
                policy_chain(chains, policy).as_str(),
                Rule::new()
                    .with(dst_addr(AddrMatch::Ip(sp.cluster_ip), false))
                    .with_all(extra)
                    .verdict(mark_jump()),
            );
        }
    }
    fn select(
        &self,
        b: &mut Builder,
        sp: &ServicePortPlan,
        chain: &ChainName,
        eps: &[PlannedEndpoint],
    ) {
        endpoint_vmap(b, sp, chain, eps);
    }
    fn endpoint_chains(&self, b: &mut Builder, sp: &ServicePortPlan) {
        for ep in sp.reachable_endpoints.iter() {
            let hairpin = Rule::new()
                .with(Match::Addr {
                    dir: Direction::Src,
                    addr: AddrMatch::Ip(ep.ip),
                    negate: false,
                })
                .verdict(mark_jump());
            endpoint_chain(b, sp, ep, Some(hairpin));
        }
    }
}
