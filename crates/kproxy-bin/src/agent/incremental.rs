//! What the agent compiles for one sync, incrementally (pure: no I/O).
//!
//! Per family, a [`PlanCache`] re-plans only the Services whose objects
//! changed. A partial sync then lays out only those Services, as they were
//! and as they are now, each with the layout's fixed chains, sets and maps:
//! two small rulesets whose difference ([`kproxy_core::diff::changes`]) is
//! exactly what changes on the node, since a Service's own chains and
//! elements depend on nothing but its plan and the node. Laying out and
//! comparing every Service (what a full compile costs) is left to full
//! syncs.
//!
//! The fixed chains (iptables `KUBE-SERVICES`, `KUBE-NODEPORTS`, ...) hold
//! rules of every Service: when the changed Services' share of one of them
//! changes (a Service added or removed, a front end changed, the first or
//! last endpoint), its next content comes from a full layout of the next
//! state and is handed over with its last content, so that the sync edits
//! it in place (or writes it whole). nftables keeps every Service's
//! share of its fixed chains in set and map elements, which are compared
//! one by one; a change to an nftables fixed chain (none is known) falls
//! back to a full sync.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use kproxy_core::diff::changes;
use kproxy_core::incremental::PlanCache;
use kproxy_core::ir::{Chain, Ruleset};
use kproxy_core::model::{ClusterState, IpFamily, NamespacedName, NodeConfig};
use kproxy_core::plan::ServicePortPlan;

use super::conntrack::{UdpState, udp_state_of};
use super::sync::Desired;
use crate::compile::{Layout, layout_plan};

/// The rules of one family for one sync.
#[derive(Debug, Clone)]
pub enum Compiled {
    /// Every rule: the first sync, a forced full sync, a changed node
    /// configuration, or a change that is not local to some Services.
    Full(Desired),
    /// Only some Services changed.
    Partial(Partial),
}

impl Compiled {
    /// The node configuration.
    pub fn node(&self) -> &NodeConfig {
        match self {
            Compiled::Full(d) => &d.node,
            Compiled::Partial(p) => &p.node,
        }
    }
}

/// The changed Services of one family, laid out before and after.
#[derive(Debug, Clone)]
pub struct Partial {
    /// The node configuration.
    pub node: NodeConfig,
    /// The changed Services' rules as last compiled, with the layout's
    /// fixed chains, sets and maps.
    pub before: Ruleset,
    /// The changed Services' rules now, likewise.
    pub after: Ruleset,
    /// The fixed chains whose content changes (iptables), before and after.
    pub fixed_changes: Vec<FixedChange>,
    /// The layout's fixed chains: (table, chain).
    pub fixed: Arc<BTreeSet<(String, String)>>,
    /// The changed Services' UDP ports before and after (conntrack cleanup).
    pub udp_before: UdpState,
    /// See [`Self::udp_before`].
    pub udp_after: UdpState,
    /// How many Services changed.
    pub services: usize,
}

/// A fixed chain whose content changes, with its whole last and next
/// content.
#[derive(Debug, Clone)]
pub struct FixedChange {
    /// The table.
    pub table: String,
    /// The chain as the node holds it.
    pub before: Chain,
    /// The chain as it is to be.
    pub after: Chain,
}

impl Partial {
    /// Whether `chain` of `table` is one of the layout's fixed chains.
    pub fn is_fixed(&self, table: &str, chain: &str) -> bool {
        is_fixed(&self.fixed, table, chain)
    }
}

fn is_fixed(fixed: &BTreeSet<(String, String)>, table: &str, chain: &str) -> bool {
    fixed.contains(&(table.to_string(), chain.to_string()))
}

#[derive(Debug)]
struct FamilyCompiler {
    layout: Layout,
    cache: PlanCache,
    fixed: Arc<BTreeSet<(String, String)>>,
    /// The fixed chains' content as last compiled (iptables).
    fixed_content: BTreeMap<(String, String), Chain>,
}

/// The fixed chains of `ruleset`, by (table, chain).
fn fixed_content(
    ruleset: &Ruleset,
    fixed: &BTreeSet<(String, String)>,
) -> BTreeMap<(String, String), Chain> {
    ruleset
        .tables
        .iter()
        .flat_map(|t| {
            t.chains
                .iter()
                .filter(|c| is_fixed(fixed, &t.name, c.name.as_str()))
                .map(move |c| ((t.name.clone(), c.name.to_string()), c.clone()))
        })
        .collect()
}

/// The incremental compiler of every family (kept across syncs).
#[derive(Debug, Default)]
pub struct Compiler {
    families: BTreeMap<IpFamily, FamilyCompiler>,
}

fn fixed_chains(cache: &PlanCache, layout: Layout) -> Result<BTreeSet<(String, String)>> {
    let empty = layout_plan(&cache.partial_plan(Vec::new()), layout, true)?;
    Ok(empty
        .tables
        .iter()
        .flat_map(|t| {
            t.chains
                .iter()
                .map(move |c| (t.name.clone(), c.name.to_string()))
        })
        .collect())
}

impl Compiler {
    /// A compiler that has compiled nothing (its first result is full).
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything: the next result is full.
    pub fn reset(&mut self) {
        self.families.clear();
    }

    /// The service ports of `family` as last compiled.
    pub fn service_ports(&self, family: IpFamily) -> impl Iterator<Item = &ServicePortPlan> {
        self.families
            .get(&family)
            .into_iter()
            .flat_map(|f| f.cache.service_ports())
    }

    /// Compiles `state` for each (node configuration, layout) of `targets`
    /// (the iptables rulesets standalone). `full` asks for full results
    /// (the proxier's next sync is full).
    pub fn compile(
        &mut self,
        state: &ClusterState,
        targets: &[(NodeConfig, Layout)],
        full: bool,
    ) -> Result<Vec<Compiled>> {
        self.compile_hinted(state, targets, full, None)
    }

    /// [`Self::compile`], told that only the Services in `hint` may have
    /// changed since the last call (see
    /// [`PlanCache::update_hinted`]); `None`: any may have.
    pub fn compile_hinted(
        &mut self,
        state: &ClusterState,
        targets: &[(NodeConfig, Layout)],
        full: bool,
        hint: Option<&BTreeSet<NamespacedName>>,
    ) -> Result<Vec<Compiled>> {
        let wanted: BTreeSet<IpFamily> = targets.iter().map(|(n, _)| n.family).collect();
        self.families.retain(|f, _| wanted.contains(f));
        let mut out = Vec::new();
        for (node, layout) in targets {
            let reuse = self
                .families
                .get(&node.family)
                .is_some_and(|f| f.layout == *layout && f.cache.node() == node);
            if !reuse {
                self.families.remove(&node.family);
            }
            let fc = match self.families.entry(node.family) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let cache = PlanCache::new(node.clone(), layout.release());
                    let fixed = Arc::new(fixed_chains(&cache, *layout)?);
                    v.insert(FamilyCompiler {
                        layout: *layout,
                        cache,
                        fixed,
                        fixed_content: BTreeMap::new(),
                    })
                }
            };
            // Full results and a fresh cache compare everything.
            let up = fc
                .cache
                .update_hinted(state, hint.filter(|_| reuse && !full));
            let partial = if full || !reuse || !up.is_local() {
                None
            } else {
                partial(fc, up.before(), up.after(), up.changes.len())?
            };
            out.push(match partial {
                Some(p) => Compiled::Partial(p),
                None => {
                    let ruleset = layout_plan(&fc.cache.plan(), *layout, true)?;
                    fc.fixed_content = fixed_content(&ruleset, &fc.fixed);
                    Compiled::Full(Desired {
                        node: node.clone(),
                        ruleset: Arc::new(ruleset),
                        udp: udp_state_of(fc.cache.service_ports()),
                    })
                }
            });
        }
        Ok(out)
    }
}

/// The partial result for the changed Services (`None`: it takes a full one).
fn partial(
    fc: &mut FamilyCompiler,
    before_ports: Vec<ServicePortPlan>,
    after_ports: Vec<ServicePortPlan>,
    services: usize,
) -> Result<Option<Partial>> {
    let udp_before = udp_state_of(&before_ports);
    let udp_after = udp_state_of(&after_ports);
    let before = layout_plan(&fc.cache.partial_plan(before_ports), fc.layout, true)?;
    let after = layout_plan(&fc.cache.partial_plan(after_ports), fc.layout, true)?;
    let mut changed_fixed: Vec<(String, String)> = Vec::new();
    for t in &after.tables {
        let Some(b) = before.table(&t.name) else {
            return Ok(None);
        };
        let d = changes(b, t);
        // A redeclared iptables chain cannot be; an nftables chain neither
        // (kind, hook): full. Redeclared sets and maps (an affinity timeout)
        // are replaced by the partial sync.
        if d.redeclares_chains() || (matches!(fc.layout, Layout::Iptables(_)) && d.redeclares()) {
            return Ok(None);
        }
        changed_fixed.extend(
            d.chains
                .iter()
                .filter(|c| is_fixed(&fc.fixed, &t.name, c.name().as_str()))
                .map(|c| (t.name.clone(), c.name().to_string())),
        );
    }
    if before.tables.len() != after.tables.len() {
        return Ok(None);
    }
    let mut fixed_changes = Vec::new();
    if !changed_fixed.is_empty() {
        if matches!(fc.layout, Layout::Nftables(_)) {
            return Ok(None);
        }
        let whole = layout_plan(&fc.cache.plan(), fc.layout, true)?;
        let next = fixed_content(&whole, &fc.fixed);
        for key in changed_fixed {
            let (Some(before), Some(after)) = (fc.fixed_content.get(&key), next.get(&key)) else {
                // Not known (or gone): a full sync sorts it out.
                return Ok(None);
            };
            fixed_changes.push(FixedChange {
                table: key.0.clone(),
                before: before.clone(),
                after: after.clone(),
            });
        }
        fc.fixed_content = next;
    }
    Ok(Some(Partial {
        node: fc.cache.node().clone(),
        before,
        after,
        fixed_changes,
        fixed: Arc::clone(&fc.fixed),
        udp_before,
        udp_after,
        services,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_core::model::{Endpoint, LocalDetector};
    use kproxy_core::profile::{IptablesProfile, NftablesProfile};
    use kproxy_core::synthetic::cluster;

    fn node() -> NodeConfig {
        let mut n = NodeConfig::new(IpFamily::V4, "node-3");
        n.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
        n
    }

    #[test]
    fn first_full_then_partial() {
        for layout in [
            Layout::Iptables(IptablesProfile::Current),
            Layout::Nftables(NftablesProfile::Current),
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
        let layout = Layout::Iptables(IptablesProfile::Current);
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
}
