//! The incremental compiler of `kproxy run`:
//! [`kproxy_core::sync::Compiler`] over the binary's [`Layout`] (either
//! backend, as `--proxy-mode` and `--kube-proxy-version` choose).

pub use kproxy_core::sync::compiler::{Compiled, FixedChange, Partial};

use crate::compile::AgentLayout;

/// The incremental compiler of every family, for either backend.
pub type Compiler = kproxy_core::sync::Compiler<AgentLayout>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{AgentLayout, Layout};
    use kproxy_core::ir::Chain;
    use kproxy_core::model::{ClusterState, IpFamily, NodeConfig};
    use kproxy_core::model::{Endpoint, LocalDetector};
    use kproxy_core::profile::{IptablesProfile, NftablesProfile};
    use kproxy_core::sync::Desired;
    use kproxy_core::sync::compiler::is_fixed;
    use kproxy_core::synthetic::cluster;
    use std::collections::BTreeMap;

    fn node() -> NodeConfig {
        let mut n = NodeConfig::new(IpFamily::V4, "node-3");
        n.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
        n
    }

    #[test]
    fn first_full_then_partial() {
        for layout in [
            AgentLayout(Layout::Iptables(IptablesProfile::Current)),
            AgentLayout(Layout::Nftables(NftablesProfile::Current)),
        ] {
            let mut c = Compiler::new();
            let mut state = cluster(40, 3);
            let targets = [(node(), layout)];
            let r = c.compile(&state, &targets, false).expect("compile");
            assert!(matches!(r[0], Compiled::Full(_)));
            state.endpoint_slices[5]
                .endpoints
                .push(Endpoint::ready("10.99.0.1".parse().expect("ip")));
            let r = c.compile(&state, &targets, false).expect("compile");
            let Compiled::Partial(p) = &r[0] else {
                panic!("not partial");
            };
            assert_eq!(p.services, 1);
            assert!(p.fixed_changes.is_empty());
            // Asked for a full one, or with another node: full.
            let r = c.compile(&state, &targets, true).expect("compile");
            assert!(matches!(r[0], Compiled::Full(_)));
            let mut other = node();
            other.node_name = "node-4".into();
            let r = c
                .compile(&state, &[(other, layout)], false)
                .expect("compile");
            assert!(matches!(r[0], Compiled::Full(_)));
        }
    }

    #[test]
    fn iptables_fixed_chain_changes_come_with_both_contents() {
        let layout = AgentLayout(Layout::Iptables(IptablesProfile::Current));
        let mut c = Compiler::new();
        let mut state = cluster(20, 2);
        let targets = [(node(), layout)];
        c.compile(&state, &targets, false).expect("compile");
        state.services.remove(3);
        let r = c.compile(&state, &targets, false).expect("compile");
        let Compiled::Partial(p) = &r[0] else {
            panic!("not partial");
        };
        let services = p
            .fixed_changes
            .iter()
            .find(|f| f.table == "nat" && f.after.name.as_str() == "KUBE-SERVICES")
            .expect("KUBE-SERVICES changes");
        assert!(services.before.rules.len() > services.after.rules.len());
        assert!(p.is_fixed("nat", "KUBE-SERVICES"));
        assert!(!p.is_fixed("nat", "KUBE-SVC-X"));
    }

    /// The fixed chains of the full layout of `state`.
    fn full_fixed(
        state: &ClusterState,
        layout: AgentLayout,
        fixed: &kproxy_core::sync::compiler::FixedChains,
    ) -> BTreeMap<(String, String), Chain> {
        let rules = Desired::compile(state, &node(), layout).expect("compile");
        rules
            .ruleset
            .tables
            .iter()
            .flat_map(|t| t.chains.iter().map(move |c| (t.name.clone(), c)))
            .filter(|(t, c)| is_fixed(fixed, t, c.name.as_str()))
            .map(|(t, c)| ((t, c.name.to_string()), c.clone()))
            .collect()
    }

    #[test]
    fn iptables_fixed_chains_patched_by_share_equal_the_full_layout() {
        for profile in [IptablesProfile::Current, IptablesProfile::V1_5] {
            let layout = AgentLayout(Layout::Iptables(profile));
            let pool = cluster(30, 2);
            // Two ClusterIP Services: the node port chains start empty.
            let mut state = ClusterState {
                services: pool.services[1..3].to_vec(),
                endpoint_slices: pool.endpoint_slices[1..3].to_vec(),
            };
            let mut c = Compiler::new();
            let targets = [(node(), layout)];
            c.compile(&state, &targets, false).expect("compile");
            let fixed = c.fixed_chains(IpFamily::V4).expect("compiled").clone();
            let mut want = full_fixed(&state, layout, &fixed);
            let mut patched = 0;
            for step in 0..40usize {
                // Add one of the pool's Services (first, last or between
                // the others in name order) or remove it, empty one's
                // endpoints, or remove another.
                match step % 4 {
                    0 | 1 => {
                        let i = 3 + (step * 7) % 27;
                        if let Some(pos) = state
                            .services
                            .iter()
                            .position(|s| s.id == pool.services[i].id)
                        {
                            state.services.remove(pos);
                            state
                                .endpoint_slices
                                .retain(|e| e.service_id() != pool.services[i].id);
                        } else {
                            state.services.push(pool.services[i].clone());
                            state.endpoint_slices.push(pool.endpoint_slices[i].clone());
                        }
                    }
                    2 if !state.endpoint_slices.is_empty() => {
                        let k = (step * 5) % state.endpoint_slices.len();
                        state.endpoint_slices[k].endpoints.clear();
                    }
                    _ if state.services.len() > 1 => {
                        let k = (step * 3) % state.services.len();
                        state.services.remove(k);
                    }
                    _ => {}
                }
                let r = c.compile(&state, &targets, false).expect("compile");
                let next = full_fixed(&state, layout, &fixed);
                let Compiled::Partial(p) = &r[0] else {
                    panic!("step {step}: full");
                };
                for f in &p.fixed_changes {
                    let key = (f.table.clone(), f.after.name.to_string());
                    assert_eq!(f.before, want[&key], "step {step}: last content of {key:?}");
                    assert_eq!(f.after, next[&key], "step {step}: next content of {key:?}");
                    want.insert(key, f.after.clone());
                    patched += 1;
                }
                assert_eq!(want, next, "step {step}: a fixed chain changed unseen");
                want = next;
            }
            assert!(
                patched > 20,
                "{profile:?}: only {patched} fixed chain changes"
            );
        }
    }
}
