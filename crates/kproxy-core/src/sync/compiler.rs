//! What one sync compiles, incrementally (pure).
//!
//! Per family, a [`PlanCache`] re-plans only the Services whose objects
//! changed. A partial sync then lays out only those Services, as they were
//! and as they are now, each with the layout's fixed chains, sets and maps:
//! two small rulesets whose difference ([`crate::diff::changes`]) is
//! exactly what changes on the node, since a Service's own chains and
//! elements depend on nothing but its plan and the node. Laying out and
//! comparing every Service (what a full compile costs) is left to full
//! syncs.
//!
//! The fixed chains (iptables `KUBE-SERVICES`, `KUBE-NODEPORTS`, ...) hold
//! rules of every Service: the node's first rules, each service port's
//! share in plan order, the node's last rules ([`Shares`]). A backend whose
//! [`Layouter::layout_by_owner`] records them so keeps them by owner: when
//! the changed Services' share of one of them changes (a Service added or
//! removed, a front end changed, the first or last endpoint), their shares
//! are replaced and the chain's last and next content are handed over, so
//! that the sync edits it in place (or writes it whole); no other Service
//! is laid out. A backend that does not (nftables keeps every Service's
//! share of its fixed chains in set and map elements, compared one by one)
//! falls back to a full sync when one of its fixed chains changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::diff::changes;
use crate::incremental::PlanCache;
use crate::ir::{Chain, Rule, Ruleset};
use crate::model::{ClusterState, IpFamily, NamespacedName, NodeConfig};
use crate::names::ServicePortName;
use crate::plan::{Plan, Release, ServicePortPlan, plan_release};

use super::conntrack::{UdpState, udp_state_of};

/// The layout's fixed chains: (table, chain).
pub type FixedChains = BTreeSet<(String, String)>;

/// The fixed chains' rules by owner, by (table, chain).
pub type SharesByChain = BTreeMap<(String, String), Shares>;

/// One fixed chain's rules by owner: the node's first rules, each service
/// port's share (in plan order, which is name order), the node's last
/// rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shares {
    /// The chain, without rules.
    pub chain: Chain,
    /// The node's first rules.
    pub head: Vec<Rule>,
    /// Each service port's rules.
    pub ports: BTreeMap<ServicePortName, Vec<Rule>>,
    /// The node's last rules.
    pub tail: Vec<Rule>,
}

impl Shares {
    /// No rules yet in `chain` (whose rules are ignored).
    pub fn new(mut chain: Chain) -> Self {
        chain.rules.clear();
        Self {
            chain,
            head: Vec::new(),
            ports: BTreeMap::new(),
            tail: Vec::new(),
        }
    }

    /// The chain with its rules in layout order.
    pub fn content(&self) -> Chain {
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

/// A backend's layout of plans, as the sync engine needs it: implemented by
/// each backend's sync module (`kproxy_iptables::sync::Layout`,
/// `kproxy_nft::sync::Layout`).
pub trait Layouter: Clone + PartialEq + std::fmt::Debug {
    /// Why a plan cannot be laid out.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The release whose decisions the layout needs from the planner.
    fn release(&self) -> Release;
    /// Every rule of `plan`, as a full sync applies them (iptables:
    /// standalone, with the built-in chains' jumps).
    fn layout(&self, plan: &Plan) -> Result<Ruleset, Self::Error>;
    /// [`Self::layout`], and the rules of the `fixed` chains by owner;
    /// `None` when the layout does not keep them so (a change to a fixed
    /// chain then takes a full sync).
    fn layout_by_owner(
        &self,
        plan: &Plan,
        fixed: &FixedChains,
    ) -> Result<(Ruleset, Option<SharesByChain>), Self::Error> {
        let _ = fixed;
        Ok((self.layout(plan)?, None))
    }
    /// Whether a partial sync can replace a set or map whose declaration
    /// changed (nftables); when not, such a change takes a full sync.
    fn replaces_containers(&self) -> bool {
        true
    }
}

/// The rules of one family for one full sync.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The node configuration.
    pub node: NodeConfig,
    /// The ruleset (iptables: standalone; nftables: the table state);
    /// shared, so that keeping it as the last applied one costs no copy.
    pub ruleset: Arc<Ruleset>,
    /// The UDP service ports (for conntrack cleanup).
    pub udp: UdpState,
}

impl Desired {
    /// Every rule of `state` for `node` in `layout`, as a full sync applies
    /// them.
    pub fn compile<L: Layouter>(
        state: &ClusterState,
        node: &NodeConfig,
        layout: L,
    ) -> Result<Self, L::Error> {
        let plan = plan_release(state, node, layout.release());
        Ok(Self {
            node: node.clone(),
            ruleset: Arc::new(layout.layout(&plan)?),
            udp: udp_state_of(&plan.service_ports),
        })
    }
}

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

    /// The rules this result writes (a partial one: the changed Services'
    /// rules now, with the layout's fixed chains).
    pub fn ruleset(&self) -> &Ruleset {
        match self {
            Compiled::Full(d) => &d.ruleset,
            Compiled::Partial(p) => &p.after,
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
    /// The layout's fixed chains.
    pub fixed: Arc<FixedChains>,
    /// The changed Services' UDP ports before and after (conntrack cleanup).
    pub udp_before: UdpState,
    /// See [`Self::udp_before`].
    pub udp_after: UdpState,
    /// How many Services changed.
    pub services: usize,
}

/// A fixed chain whose content changes, with its whole last and next
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Whether `chain` of `table` is among `fixed`.
pub fn is_fixed(fixed: &FixedChains, table: &str, chain: &str) -> bool {
    // The fixed chains are few: compare names without allocating.
    fixed.iter().any(|(t, c)| c == chain && t == table)
}

#[derive(Debug)]
struct FamilyCompiler<L> {
    layout: L,
    cache: PlanCache,
    fixed: Arc<FixedChains>,
    /// The fixed chains as last compiled, by owner (when the layout keeps
    /// them so).
    shares: SharesByChain,
}

/// The incremental compiler of every family (kept across syncs), for
/// layout `L`.
#[derive(Debug)]
pub struct Compiler<L> {
    families: BTreeMap<IpFamily, FamilyCompiler<L>>,
}

impl<L> Default for Compiler<L> {
    fn default() -> Self {
        Self {
            families: BTreeMap::new(),
        }
    }
}

fn fixed_chains<L: Layouter>(cache: &PlanCache, layout: &L) -> Result<FixedChains, L::Error> {
    let empty = layout.layout(&cache.partial_plan(Vec::new()))?;
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

impl<L: Layouter> Compiler<L> {
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

    /// The fixed chains of `family`'s layout, once compiled.
    pub fn fixed_chains(&self, family: IpFamily) -> Option<&FixedChains> {
        self.families.get(&family).map(|f| f.fixed.as_ref())
    }

    /// Compiles `state` for each (node configuration, layout) of `targets`.
    /// `full` asks for full results (the engine's next sync is full).
    pub fn compile(
        &mut self,
        state: &ClusterState,
        targets: &[(NodeConfig, L)],
        full: bool,
    ) -> Result<Vec<Compiled>, L::Error> {
        self.compile_hinted(state, targets, full, None)
    }

    /// [`Self::compile`], told that only the Services in `hint` may have
    /// changed since the last call (see [`PlanCache::update_hinted`]);
    /// `None`: any may have.
    pub fn compile_hinted(
        &mut self,
        state: &ClusterState,
        targets: &[(NodeConfig, L)],
        full: bool,
        hint: Option<&BTreeSet<NamespacedName>>,
    ) -> Result<Vec<Compiled>, L::Error> {
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
                    let fixed = Arc::new(fixed_chains(&cache, layout)?);
                    v.insert(FamilyCompiler {
                        layout: layout.clone(),
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
                    let (ruleset, shares) =
                        fc.layout.layout_by_owner(&fc.cache.plan(), &fc.fixed)?;
                    fc.shares = shares.unwrap_or_default();
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
fn partial<L: Layouter>(
    fc: &mut FamilyCompiler<L>,
    before_ports: Vec<ServicePortPlan>,
    after_ports: Vec<ServicePortPlan>,
    services: usize,
) -> Result<Option<Partial>, L::Error> {
    let udp_before = udp_state_of(&before_ports);
    let udp_after = udp_state_of(&after_ports);
    let changed_ports: BTreeSet<ServicePortName> = before_ports
        .iter()
        .chain(&after_ports)
        .map(|sp| sp.name.clone())
        .collect();
    let before = fc.layout.layout(&fc.cache.partial_plan(before_ports))?;
    let (after, after_shares) = fc
        .layout
        .layout_by_owner(&fc.cache.partial_plan(after_ports), &fc.fixed)?;
    let by_owner = after_shares.is_some();
    let after_shares = after_shares.unwrap_or_default();
    let mut changed_fixed: Vec<(String, String)> = Vec::new();
    for t in &after.tables {
        let Some(b) = before.table(&t.name) else {
            return Ok(None);
        };
        let d = changes(b, t);
        // A redeclared chain cannot be edited (iptables: its kind; nftables:
        // kind, hook): full. Redeclared sets and maps (an affinity timeout)
        // are replaced by the partial sync where the layout can.
        if d.redeclares_chains() || (!fc.layout.replaces_containers() && d.redeclares()) {
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
    if !changed_fixed.is_empty() && !by_owner {
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
        let Some(after) = fc.shares.get(&key).map(Shares::content) else {
            return Ok(None);
        };
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
