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
//! rules of every Service: the node's first rules, each service port's
//! share in plan order, the node's last rules
//! ([`kproxy_iptables::layout::Sink::owner`]). The compiler keeps them so,
//! by owner. When the changed Services' share of one of them changes (a
//! Service added or removed, a front end changed, the first or last
//! endpoint), their shares are replaced and the chain's last and next
//! content are handed over, so that the sync edits it in place (or writes
//! it whole); no other Service is laid out. nftables keeps every Service's
//! share of its fixed chains in set and map elements, which are compared
//! one by one; a change to an nftables fixed chain (none is known) falls
//! back to a full sync.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use kproxy_core::diff::changes;
use kproxy_core::incremental::PlanCache;
use kproxy_core::ir::{Chain, Hook, Rule, Ruleset};
use kproxy_core::model::{ClusterState, IpFamily, NamespacedName, NodeConfig};
use kproxy_core::names::ServicePortName;
use kproxy_core::plan::{Plan, ServicePortPlan};
use kproxy_iptables::layout::{LayoutOptions, RulesetSink, Sink, TableId, emit};

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
    // The fixed chains are few: compare names without allocating.
    fixed.iter().any(|(t, c)| c == chain && t == table)
}

#[derive(Debug)]
struct FamilyCompiler {
    layout: Layout,
    cache: PlanCache,
    fixed: Arc<BTreeSet<(String, String)>>,
    /// The fixed chains as last compiled, by owner (iptables).
    shares: SharesByChain,
}

/// The fixed chains' rules by owner, by (table, chain).
type SharesByChain = BTreeMap<(String, String), Shares>;

/// One fixed chain's rules by owner: the node's first rules, each service
/// port's share (in plan order, which is name order), the node's last
/// rules.
#[derive(Debug, Clone)]
struct Shares {
    /// The chain, without rules.
    chain: Chain,
    head: Vec<Rule>,
    ports: BTreeMap<ServicePortName, Vec<Rule>>,
    tail: Vec<Rule>,
}

impl Shares {
    /// The chain with its rules in layout order.
    fn content(&self) -> Chain {
        let mut chain = self.chain.clone();
        chain.rules = self
            .head
            .iter()
            .chain(self.ports.values().flatten())
            .chain(&self.tail)
            .cloned()
            .collect();
        chain
    }
}

/// Whose rules the layout is writing.
#[derive(Debug, Clone)]
enum Owner {
    Head,
    Port(ServicePortName),
    Tail,
}

/// Collects the whole ruleset and, by owner, the rules of the fixed chains.
struct SharesSink<'a> {
    rules: RulesetSink,
    fixed: &'a BTreeSet<(String, String)>,
    owner: Owner,
    shares: SharesByChain,
}

/// The shares of `chain` of `table` in `shares` if it is a fixed chain.
fn shares_of<'s>(
    shares: &'s mut SharesByChain,
    fixed: &BTreeSet<(String, String)>,
    table: &str,
    chain: &str,
    make: impl FnOnce() -> Chain,
) -> Option<&'s mut Shares> {
    if !is_fixed(fixed, table, chain) {
        return None;
    }
    Some(
        shares
            .entry((table.to_string(), chain.to_string()))
            .or_insert_with(|| Shares {
                chain: make(),
                head: Vec::new(),
                ports: BTreeMap::new(),
                tail: Vec::new(),
            }),
    )
}

impl SharesSink<'_> {
    fn record(&mut self, table: &str, chain: &str, rule: &Rule, make: impl FnOnce() -> Chain) {
        let Some(shares) = shares_of(&mut self.shares, self.fixed, table, chain, make) else {
            return;
        };
        let rule = rule.clone();
        match &self.owner {
            Owner::Head => shares.head.push(rule),
            Owner::Port(name) => shares.ports.entry(name.clone()).or_default().push(rule),
            Owner::Tail => shares.tail.push(rule),
        }
    }
}

impl Sink for SharesSink<'_> {
    fn declare(&mut self, table: TableId, chain: &str) {
        // A fixed chain without rules yet has its (empty) shares too.
        shares_of(&mut self.shares, self.fixed, table.name(), chain, || {
            Chain::new(chain)
        });
        self.rules.declare(table, chain);
    }
    fn push(&mut self, table: TableId, chain: &str, rule: Rule) {
        self.record(table.name(), chain, &rule, || Chain::new(chain));
        self.rules.push(table, chain, rule);
    }
    fn push_builtin(&mut self, table: TableId, hook: Hook, rule: Rule) {
        self.record(table.name(), hook.as_iptables(), &rule, || {
            Chain::builtin(hook)
        });
        self.rules.push_builtin(table, hook, rule);
    }
    fn owner(&mut self, owner: Option<&ServicePortName>) {
        self.owner = match owner {
            Some(name) => Owner::Port(name.clone()),
            None => Owner::Tail,
        };
    }
}

/// Lays out `plan` (standalone) and, for iptables, its fixed chains by
/// owner.
fn layout_shares(
    plan: &Plan,
    layout: Layout,
    fixed: &BTreeSet<(String, String)>,
) -> Result<(Ruleset, SharesByChain)> {
    let Layout::Iptables(profile) = layout else {
        return Ok((layout_plan(plan, layout, true)?, BTreeMap::new()));
    };
    let mut sink = SharesSink {
        rules: RulesetSink::new(plan.node.family),
        fixed,
        owner: Owner::Head,
        shares: BTreeMap::new(),
    };
    let opts = LayoutOptions {
        standalone: true,
        profile,
    };
    emit(plan, opts, &mut sink);
    Ok((sink.rules.finish(), sink.shares))
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
                        shares: BTreeMap::new(),
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
                    let (ruleset, shares) = layout_shares(&fc.cache.plan(), *layout, &fc.fixed)?;
                    fc.shares = shares;
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
    let changed_ports: BTreeSet<ServicePortName> = before_ports
        .iter()
        .chain(&after_ports)
        .map(|sp| sp.name.clone())
        .collect();
    let before = layout_plan(&fc.cache.partial_plan(before_ports), fc.layout, true)?;
    let (after, after_shares) =
        layout_shares(&fc.cache.partial_plan(after_ports), fc.layout, &fc.fixed)?;
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
    if !changed_fixed.is_empty() && matches!(fc.layout, Layout::Nftables(_)) {
        return Ok(None);
    }
    // Each changed chain's last content, before its shares are replaced.
    let mut last = Vec::new();
    for key in &changed_fixed {
        let Some(shares) = fc.shares.get(key) else {
            // Not known: a full sync sorts it out.
            return Ok(None);
        };
        last.push(shares.content());
    }
    // The changed service ports' shares, in every fixed chain.
    for (key, shares) in &mut fc.shares {
        for name in &changed_ports {
            shares.ports.remove(name);
        }
        if let Some(next) = after_shares.get(key) {
            shares
                .ports
                .extend(next.ports.iter().map(|(n, r)| (n.clone(), r.clone())));
        }
    }
    let mut fixed_changes = Vec::new();
    for (key, before) in changed_fixed.into_iter().zip(last) {
        // Known: looked up above.
        let after = fc.shares[&key].content();
        fixed_changes.push(FixedChange {
            table: key.0,
            before,
            after,
        });
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

    /// The fixed chains of the full layout of `state`.
    fn full_fixed(
        state: &ClusterState,
        layout: Layout,
        fixed: &BTreeSet<(String, String)>,
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
            let layout = Layout::Iptables(profile);
            let pool = cluster(30, 2);
            // Two ClusterIP Services: the node port chains start empty.
            let mut state = ClusterState {
                services: pool.services[1..3].to_vec(),
                endpoint_slices: pool.endpoint_slices[1..3].to_vec(),
            };
            let mut c = Compiler::new();
            let targets = [(node(), layout)];
            c.compile(&state, &targets, false).expect("compile");
            let fixed = Arc::clone(&c.families[&IpFamily::V4].fixed);
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
