//! Incremental planning: re-plan only the Services whose objects changed.
//!
//! A service port's plan depends on its Service object, that Service's
//! EndpointSlices and the node, nothing else; large-cluster mode is the one
//! cluster-wide fact (it counts every endpoint). A [`PlanCache`] keeps, per
//! Service, the objects it was planned from and the plan, so that
//! [`PlanCache::update`] with the next cluster state re-plans only the
//! Services whose objects differ, and reports them as a [`PlanUpdate`]: the
//! old and new plans of each changed Service. A node agent lays out only
//! those (old and new) with the backend and compares the two small results
//! to find what to write, instead of laying out and comparing every
//! Service.
//!
//! [`PlanCache::plan`] is always equal to [`crate::plan::plan_release`] of
//! the last state (tests check it on random state sequences).
//!
//! ```
//! use kproxy_core::incremental::PlanCache;
//! use kproxy_core::model::*;
//! use kproxy_core::plan::{plan, Release};
//! use kproxy_core::synthetic::cluster;
//!
//! let node = NodeConfig::new(IpFamily::V4, "node-1");
//! let mut state = cluster(100, 3);
//! let mut cache = PlanCache::new(node.clone(), Release::Current);
//! let first = cache.update(&state);
//! assert_eq!(first.changes.len(), 100);
//!
//! // One endpoint more for one Service: one Service re-planned.
//! state.endpoint_slices[7].endpoints.push(Endpoint::ready("10.9.9.9".parse().unwrap()));
//! let up = cache.update(&state);
//! assert_eq!(up.changes.len(), 1);
//! let slice = &state.endpoint_slices[7];
//! assert_eq!(up.changes[0].service, NamespacedName::new(&slice.id.namespace, &slice.service_name));
//! assert!(up.is_local());
//! assert_eq!(cache.plan(), plan(&state, &node));
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use crate::model::{AddressType, ClusterState, EndpointSlice, NamespacedName, NodeConfig, Service};
use crate::plan::{
    Plan, Release, ServicePortPlan, finish_plan, is_large_cluster, plan_node_release,
    plan_service_group,
};

/// Something only one Service should own: a front-end address or a node
/// port. Two Services sharing one write the same nftables set/map
/// elements, so a change of one of them is not local to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Frontend {
    Ip(IpAddr),
    Port(u16),
}

#[derive(Debug, Clone)]
struct Entry {
    /// The Service objects of this name (normally one).
    services: Vec<Service>,
    /// Its EndpointSlices of the node's family, sorted by name.
    slices: Vec<EndpointSlice>,
    /// The plan.
    ports: Vec<ServicePortPlan>,
    frontends: BTreeSet<Frontend>,
    endpoints: usize,
}

/// The plans of one Service before and after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    /// The Service.
    pub service: NamespacedName,
    /// Its service ports as last planned (empty: it is new, or it had none).
    pub before: Vec<ServicePortPlan>,
    /// Its service ports now (empty: it is gone, or has none).
    pub after: Vec<ServicePortPlan>,
}

/// What an update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanUpdate {
    /// The Services whose objects changed, by name (the plans may still be
    /// equal, e.g. a change of an ignored field).
    pub changes: Vec<ServiceChange>,
    /// Large-cluster mode switched: every service port's layout changes.
    pub large_cluster_changed: bool,
    /// A changed Service shares a front-end address or node port with
    /// another Service (before or after the change). Those other Services
    /// are in [`Self::changes`] too, unchanged (`before == after`): their
    /// rules and the changed one's write the same set and map elements, so
    /// a layout of the changed Services alone would not show which one
    /// wins.
    pub shared_frontends: bool,
}

impl PlanUpdate {
    /// Whether the changes are local to the Services in
    /// [`Self::changes`]: laying out only their old and new plans shows
    /// everything that changes.
    pub fn is_local(&self) -> bool {
        !self.large_cluster_changed
    }

    /// The changed Services' service ports before the update, sorted.
    pub fn before(&self) -> Vec<ServicePortPlan> {
        self.changes
            .iter()
            .flat_map(|c| c.before.iter().cloned())
            .collect()
    }

    /// The changed Services' service ports after the update, sorted.
    pub fn after(&self) -> Vec<ServicePortPlan> {
        self.changes
            .iter()
            .flat_map(|c| c.after.iter().cloned())
            .collect()
    }
}

/// The per-Service plans of one family on one node, updated incrementally.
#[derive(Debug, Clone)]
pub struct PlanCache {
    node: NodeConfig,
    release: Release,
    /// By `namespace NUL name` (NUL sorts first, so the order is the
    /// order of (namespace, name); lookups need no allocation).
    entries: BTreeMap<String, Entry>,
    endpoints: usize,
    /// The Services using each front end.
    frontends: HashMap<Frontend, BTreeSet<NamespacedName>>,
}

fn frontends(ports: &[ServicePortPlan]) -> BTreeSet<Frontend> {
    let mut out = BTreeSet::new();
    for sp in ports {
        out.insert(Frontend::Ip(sp.cluster_ip));
        out.extend(sp.external_ips.iter().map(|ip| Frontend::Ip(*ip)));
        out.extend(sp.load_balancer_ips.iter().map(|ip| Frontend::Ip(*ip)));
        out.extend(sp.node_port.map(Frontend::Port));
        out.extend(sp.health_check_node_port.map(Frontend::Port));
    }
    out
}

/// `namespace NUL name` into `buf`.
fn entry_key<'b>(buf: &'b mut String, namespace: &str, name: &str) -> &'b str {
    buf.clear();
    buf.push_str(namespace);
    buf.push('\0');
    buf.push_str(name);
    buf
}

fn entry_name(key: &str) -> NamespacedName {
    let (ns, name) = key.split_once('\0').unwrap_or(("", key));
    NamespacedName::new(ns, name)
}

/// FNV-1a: the grouping below hashes short names, for which SipHash's
/// flooding resistance costs more than it buys (the keys are the cluster's
/// own object names).
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

#[derive(Default)]
struct Group<'a> {
    services: Vec<&'a Service>,
    slices: Vec<&'a EndpointSlice>,
}

impl PlanCache {
    /// An empty cache for `node` (its first update plans every Service).
    pub fn new(node: NodeConfig, release: Release) -> Self {
        Self {
            node,
            release,
            entries: BTreeMap::new(),
            endpoints: 0,
            frontends: HashMap::new(),
        }
    }

    /// The node the plans are for.
    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// The release whose decisions are taken.
    pub fn release(&self) -> Release {
        self.release
    }

    /// Large-cluster mode as of the last update.
    pub fn large_cluster(&self) -> bool {
        is_large_cluster(self.endpoints, self.release)
    }

    /// Every service port, sorted by name (as [`Plan::service_ports`]).
    pub fn service_ports(&self) -> impl Iterator<Item = &ServicePortPlan> {
        self.entries.values().flat_map(|e| e.ports.iter())
    }

    /// The whole plan of the last state: equal to
    /// [`crate::plan::plan_release`] of that state.
    pub fn plan(&self) -> Plan {
        finish_plan(
            &self.node,
            self.release,
            self.service_ports().cloned().collect(),
        )
    }

    /// A plan of only `service_ports` (sorted by name) with this cache's
    /// node-level facts and large-cluster mode: what a backend lays out to
    /// see what a few Services contribute.
    pub fn partial_plan(&self, service_ports: Vec<ServicePortPlan>) -> Plan {
        Plan {
            node: plan_node_release(&self.node, self.release),
            large_cluster: self.large_cluster(),
            service_ports,
            release: self.release,
        }
    }

    /// Re-plans the Services of `state` whose objects (the Service, its
    /// EndpointSlices of this family) changed since the last update. Every
    /// Service's objects are compared with the ones it was planned from.
    pub fn update(&mut self, state: &ClusterState) -> PlanUpdate {
        self.update_hinted(state, None)
    }

    /// [`Self::update`], told that only the Services named in `hint` may
    /// have changed (a watch says which objects it saw change): only those
    /// are compared, so the cost follows the change, not the cluster. A
    /// Service that changed but is not in `hint` keeps its old plan until
    /// an update without a hint. `None` compares every Service.
    pub fn update_hinted(
        &mut self,
        state: &ClusterState,
        hint: Option<&BTreeSet<NamespacedName>>,
    ) -> PlanUpdate {
        let was_large = self.large_cluster();
        let family = AddressType::Ip(self.node.family);
        let wanted: Option<HashSet<(&str, &str), FnvBuild>> = hint.map(|h| {
            h.iter()
                .map(|n| (n.namespace.as_str(), n.name.as_str()))
                .collect()
        });
        let wanted = |key: &(&str, &str)| wanted.as_ref().is_none_or(|w| w.contains(key));
        let mut groups: HashMap<(&str, &str), Group<'_>, FnvBuild> =
            HashMap::with_capacity_and_hasher(
                hint.map_or(state.services.len(), BTreeSet::len),
                FnvBuild::default(),
            );
        for svc in &state.services {
            let key = (svc.id.namespace.as_str(), svc.id.name.as_str());
            if wanted(&key) {
                groups.entry(key).or_default().services.push(svc);
            }
        }
        for slice in state
            .endpoint_slices
            .iter()
            .filter(|s| s.address_type == family)
        {
            if let Some(g) =
                groups.get_mut(&(slice.id.namespace.as_str(), slice.service_name.as_str()))
            {
                g.slices.push(slice);
            }
        }
        let present = groups.len();
        let mut buf = String::new();
        // Hinted Services gone from the state.
        let hinted_gone: Vec<String> = hint
            .into_iter()
            .flatten()
            .filter(|n| !groups.contains_key(&(n.namespace.as_str(), n.name.as_str())))
            .map(|n| entry_key(&mut buf, &n.namespace, &n.name).to_string())
            .filter(|k| self.entries.contains_key(k))
            .collect();
        let mut changed: Vec<ServiceChange> = Vec::new();
        let mut changed_frontends: Vec<BTreeSet<Frontend>> = Vec::new();
        for ((ns, name), mut g) in groups {
            g.slices.sort_by(|a, b| a.id.cmp(&b.id));
            if let Some(e) = self.entries.get(entry_key(&mut buf, ns, name))
                && e.services.len() == g.services.len()
                && e.services.iter().zip(&g.services).all(|(a, b)| a == *b)
                && e.slices.len() == g.slices.len()
                && e.slices.iter().zip(&g.slices).all(|(a, b)| a == *b)
            {
                continue;
            }
            let key = NamespacedName::new(ns, name);
            let ports = plan_service_group(&g.services, &g.slices, &self.node, self.release);
            let entry = Entry {
                frontends: frontends(&ports),
                endpoints: ports.iter().map(|p| p.total_endpoints).sum(),
                services: g.services.into_iter().cloned().collect(),
                slices: g.slices.into_iter().cloned().collect(),
                ports,
            };
            let after = entry.ports.clone();
            let mut touched = entry.frontends.clone();
            self.add(&key, &entry);
            let before = match self.entries.insert(buf.clone(), entry) {
                Some(old) => {
                    self.remove(&key, &old);
                    touched.extend(old.frontends.iter().copied());
                    old.ports
                }
                None => Vec::new(),
            };
            changed.push(ServiceChange {
                service: key,
                before,
                after,
            });
            changed_frontends.push(touched);
        }
        // Services gone from the state (every present one has an entry now).
        let gone: Vec<String> = if hint.is_some() {
            hinted_gone
        } else if self.entries.len() > present {
            let present: BTreeSet<String> = state
                .services
                .iter()
                .map(|s| entry_key(&mut buf, &s.id.namespace, &s.id.name).to_string())
                .collect();
            self.entries
                .keys()
                .filter(|k| !present.contains(*k))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        {
            for k in gone {
                if let Some(old) = self.entries.remove(&k) {
                    let key = entry_name(&k);
                    self.remove(&key, &old);
                    changed_frontends.push(old.frontends.clone());
                    changed.push(ServiceChange {
                        service: key,
                        before: old.ports,
                        after: Vec::new(),
                    });
                }
            }
        }
        // Services sharing a touched front end with a changed one join the
        // changes, unchanged.
        let changed_names: BTreeSet<&NamespacedName> = changed.iter().map(|c| &c.service).collect();
        let mut sharers: BTreeSet<NamespacedName> = BTreeSet::new();
        for fs in &changed_frontends {
            for f in fs {
                if let Some(users) = self.frontends.get(f) {
                    sharers.extend(users.iter().filter(|u| !changed_names.contains(u)).cloned());
                }
            }
        }
        let shared_frontends = !sharers.is_empty()
            || changed.iter().zip(&changed_frontends).any(|(c, fs)| {
                fs.iter().any(|f| {
                    self.frontends
                        .get(f)
                        .is_some_and(|users| users.iter().any(|u| *u != c.service))
                })
            });
        for name in sharers {
            if let Some(e) = self
                .entries
                .get(entry_key(&mut buf, &name.namespace, &name.name))
            {
                changed.push(ServiceChange {
                    service: name,
                    before: e.ports.clone(),
                    after: e.ports.clone(),
                });
            }
        }
        changed.sort_by(|a, b| a.service.cmp(&b.service));
        PlanUpdate {
            changes: changed,
            large_cluster_changed: was_large != self.large_cluster(),
            shared_frontends,
        }
    }

    fn add(&mut self, name: &NamespacedName, e: &Entry) {
        self.endpoints += e.endpoints;
        for f in &e.frontends {
            self.frontends.entry(*f).or_default().insert(name.clone());
        }
    }

    fn remove(&mut self, name: &NamespacedName, e: &Entry) {
        self.endpoints -= e.endpoints;
        for f in &e.frontends {
            if let Some(users) = self.frontends.get_mut(f) {
                users.remove(name);
                if users.is_empty() {
                    self.frontends.remove(f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, IpFamily, Protocol, ServicePort};
    use crate::plan::plan_release;
    use crate::synthetic::cluster;
    use crate::test_rng::Rng;

    fn node() -> NodeConfig {
        NodeConfig::new(IpFamily::V4, "node-3")
    }

    #[test]
    fn equals_a_fresh_plan_through_random_changes() {
        for release in [Release::Current, Release::V1_5] {
            let node = node();
            let mut state = cluster(60, 4);
            let mut cache = PlanCache::new(node.clone(), release);
            cache.update(&state);
            let mut rng = Rng(7);
            for step in 0..200 {
                match rng.below(6) {
                    0 => {
                        let i = rng.below(state.endpoint_slices.len());
                        let ip = format!("10.250.{}.{}", step / 200, step % 200 + 1);
                        state.endpoint_slices[i]
                            .endpoints
                            .push(Endpoint::ready(ip.parse().expect("ip")).on_node("node-3"));
                    }
                    1 => {
                        let i = rng.below(state.endpoint_slices.len());
                        state.endpoint_slices[i].endpoints.pop();
                    }
                    2 if !state.services.is_empty() => {
                        let i = rng.below(state.services.len());
                        state.services.remove(i);
                    }
                    3 => {
                        let i = rng.below(state.services.len());
                        let mut s = state.services[i].clone();
                        s.id.name = format!("copy{step}");
                        state.services.push(s);
                    }
                    4 => {
                        // A duplicate of an existing Service object.
                        let i = rng.below(state.services.len());
                        let s = state.services[i].clone();
                        state.services.push(s);
                    }
                    _ => {
                        let i = rng.below(state.services.len());
                        state.services[i].ports.push(ServicePort::new(
                            format!("p{step}"),
                            Protocol::Tcp,
                            9000,
                        ));
                    }
                }
                cache.update(&state);
                assert_eq!(
                    cache.plan(),
                    plan_release(&state, &node, release),
                    "step {step}"
                );
            }
        }
    }

    #[test]
    fn hints_limit_what_is_compared() {
        let node = node();
        let mut state = cluster(30, 2);
        let mut cache = PlanCache::new(node.clone(), Release::Current);
        cache.update(&state);
        let name = |i: usize| state.services[i].id.clone();
        let (a, b) = (name(3), name(4));
        state.endpoint_slices[3].endpoints.pop();
        state.endpoint_slices[4].endpoints.pop();
        // Told about a only: b keeps its old plan.
        let up = cache.update_hinted(&state, Some(&BTreeSet::from([a.clone()])));
        assert_eq!(up.changes.len(), 1);
        assert_eq!(up.changes[0].service, a);
        assert_ne!(cache.plan(), plan_release(&state, &node, Release::Current));
        // A hinted removal, then a full comparison catches b up.
        let gone = state.services.remove(7).id;
        let up = cache.update_hinted(&state, Some(&BTreeSet::from([gone.clone()])));
        assert_eq!(up.changes.len(), 1);
        assert!(up.changes[0].after.is_empty());
        let up = cache.update(&state);
        assert_eq!(up.changes.len(), 1);
        assert_eq!(up.changes[0].service, b);
        assert_eq!(cache.plan(), plan_release(&state, &node, Release::Current));
    }

    #[test]
    fn unchanged_state_changes_nothing() {
        let state = cluster(30, 2);
        let mut cache = PlanCache::new(node(), Release::Current);
        assert_eq!(cache.update(&state).changes.len(), 30);
        assert_eq!(cache.update(&state), PlanUpdate::default());
    }

    #[test]
    fn sharers_join_and_large_cluster_is_not_local() {
        let mut state = cluster(10, 2);
        let mut cache = PlanCache::new(node(), Release::Current);
        cache.update(&state);
        // A second Service with the first one's cluster IP.
        let mut twin = state.services[0].clone();
        twin.id.name = "twin".into();
        state.services.push(twin);
        let up = cache.update(&state);
        assert!(up.shared_frontends);
        // The first one joins the changes, unchanged.
        assert_eq!(up.changes.len(), 2);
        let first = up
            .changes
            .iter()
            .find(|c| c.service == state.services[0].id)
            .expect("the sharer");
        assert_eq!(first.before, first.after);
        assert!(up.is_local());
        // Removing it again touches an address the first one still uses.
        state.services.pop();
        let up = cache.update(&state);
        assert!(up.shared_frontends);
        assert_eq!(up.changes.len(), 2);
        // An unrelated change is not shared.
        state.endpoint_slices[3].endpoints.pop();
        let up = cache.update(&state);
        assert!(!up.shared_frontends);
        assert_eq!(up.changes.len(), 1);
        // Crossing the large-cluster threshold is not.
        let mut big = cluster(120, 9);
        let mut cache = PlanCache::new(node(), Release::Current);
        cache.update(&big);
        assert!(cache.large_cluster());
        for s in big.endpoint_slices.iter_mut().take(60) {
            s.endpoints.clear();
        }
        let up = cache.update(&big);
        assert!(up.large_cluster_changed);
        assert!(!cache.large_cluster());
    }
}
