//! kube-proxy's nftables layouts: plan -> transaction, one module per
//! release ([`NftablesProfile`]): the current one (v1.36+) and the one
//! before it (1.29-1.35), over shared builders.
//!
//! The commands are those of kube-proxy's first full sync
//! (`setupNFTables` + `syncProxyRules` in `pkg/proxy/nftables/proxier.go`),
//! in its order. Every function lowers facts the planner decided; none
//! looks at the model or re-decides Kubernetes semantics.

use kproxy_core::ir::{BaseChainType, Hook, Rule, Verdict};
use kproxy_core::model::Protocol;
use kproxy_core::names::ChainName;
use kproxy_core::plan::{NodePlan, Plan, PlannedEndpoint, ServicePortPlan};
use kproxy_core::profile::NftablesProfile;

use crate::names::ServiceChains;
use crate::tx::Transaction;

mod current;
mod pre_1_36;
mod rules;

use rules::Builder;

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

/// Where the releases' layouts differ: the shared builders
/// ([`rules`]) call these at the points where a release writes its own
/// rules.
trait Release {
    /// The `masquerading` chain, and what it needs.
    fn masquerading(&self, b: &mut Builder, node: &NodePlan);
    /// Node-level objects after the no-endpoint maps.
    fn node_extras(&self, b: &mut Builder, node: &NodePlan);
    /// Masquerading of off-cluster traffic to cluster IPs in `services`.
    fn services_masquerade(&self, b: &mut Builder, node: &NodePlan);
    /// The verdict that marks a packet for masquerading.
    fn mark(&self, node: &NodePlan) -> Verdict;
    /// The external chain's rule for `externalTrafficPolicy: Cluster`.
    fn masquerade_external(&self, node: &NodePlan) -> Rule;
    /// What one reachable endpoint adds before the service's chains.
    fn endpoint_objects(&self, b: &mut Builder, sp: &ServicePortPlan, ep: &PlannedEndpoint);
    /// Masquerading in the service's own chains, before endpoint selection.
    fn service_masquerade(
        &self,
        b: &mut Builder,
        node: &NodePlan,
        sp: &ServicePortPlan,
        chains: &ServiceChains,
    );
    /// Endpoint selection in `chain`.
    fn select(
        &self,
        b: &mut Builder,
        sp: &ServicePortPlan,
        chain: &ChainName,
        eps: &[PlannedEndpoint],
    );
    /// The endpoint chains of the service port.
    fn endpoint_chains(&self, b: &mut Builder, sp: &ServicePortPlan);
}

/// Lowers `plan` to the transaction of kube-proxy's first full sync in the
/// layout of `opts.profile`.
///
/// The plan must hold the profile's release's decisions
/// ([`crate::check_release`]; checked in debug builds).
pub fn build(plan: &Plan, opts: LayoutOptions) -> Transaction {
    debug_assert_eq!(
        plan.release,
        opts.profile.release(),
        "a plan laid out in another release's layout (see crate::check_release)"
    );
    let release: &dyn Release = match opts.profile {
        NftablesProfile::Current => &current::Current,
        NftablesProfile::Pre1_36 => &pre_1_36::Pre1_36,
    };
    let mut b = Builder::new(plan.node.family);
    rules::setup(&mut b, &plan.node, opts, release);
    for sp in &plan.service_ports {
        rules::service_port(&mut b, &plan.node, sp, release);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use kproxy_core::ir::MapValue;
    use kproxy_core::model::{ClusterState, Endpoint, EndpointPort, EndpointSlice, NodeConfig};
    use kproxy_core::model::{IpFamily, Protocol};
    use kproxy_core::model::{Service, ServicePort, ServiceType};
    use kproxy_core::plan::plan;

    use super::*;
    use crate::tx::Op;

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
