//! An [`Inventory`] kept up to date object by object.
//!
//! A watch (a directory of manifests, the API server) sees a few objects
//! change at a time. [`Store`] holds the objects in named buckets (a file,
//! or one watched object each) and, when a bucket changes, re-converts only
//! the objects of the Services it touches, patching the inventory in place:
//! its [`Store::inventory`] equals [`inventory`] of every bucket's objects
//! in bucket order (tests check it), without re-converting the cluster.
//! [`Store::take_changed`] names the Services touched since the last call,
//! the hint [`crate::incremental::PlanCache::update_hinted`] takes.
//!
//! A kube-proxy configuration (whose `serviceProxyName` changes what every
//! Service converts to) rebuilds the inventory from all buckets; a Node or
//! ServiceCIDR re-converts only the Nodes and ServiceCIDRs. Neither names a
//! Service: what they change is node-wide (the node configuration).
//!
//! Warnings are per bucket (each bucket converted on its own): a warning
//! that needs two buckets (a duplicate object across files, Endpoints
//! ignored for EndpointSlices in another file) is not repeated here.
//!
//! ```
//! use kproxy_core::convert::{Store, parse_documents};
//!
//! let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
//!            spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";
//! let mut store = Store::new();
//! store.set("web.yaml", parse_documents(svc, "web.yaml").unwrap());
//! assert_eq!(store.inventory().state.services.len(), 1);
//! let changed = store.take_changed().expect("only Services changed");
//! assert_eq!(changed.iter().next().unwrap().to_string(), "default/web");
//! store.remove("web.yaml");
//! assert!(store.inventory().state.services.is_empty());
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{ConvertOptions, Inventory, LABEL_SERVICE_NAME, Object, inventory, inventory_with};
use crate::model::NamespacedName;

/// More bucket changes than this at once are applied by converting
/// everything again.
const BULK: usize = 32;

#[derive(Debug, Clone, Default)]
struct Bucket {
    objects: Vec<Object>,
    warnings: Vec<String>,
}

/// Objects by bucket, and the inventory they convert to.
#[derive(Debug, Clone, Default)]
pub struct Store {
    buckets: BTreeMap<String, Bucket>,
    /// The buckets holding objects of each Service.
    by_service: HashMap<NamespacedName, BTreeSet<String>>,
    merged: Inventory,
    opts: ConvertOptions,
    /// Services touched since [`Store::take_changed`]; `None`: unknown
    /// (the inventory was rebuilt).
    changed: Option<BTreeSet<NamespacedName>>,
}

/// How an object relates to the inventory.
enum Scope {
    /// It belongs to this Service (a Service, its EndpointSlice or Endpoints).
    Service(NamespacedName),
    /// It concerns everything.
    Node,
    /// It converts to nothing (only a warning).
    Nothing,
}

fn namespace(ns: &Option<String>) -> &str {
    ns.as_deref().filter(|s| !s.is_empty()).unwrap_or("default")
}

fn scope(o: &Object) -> Scope {
    match o {
        Object::Service(s) => Scope::Service(NamespacedName::new(
            namespace(&s.metadata.namespace),
            s.metadata.name.as_deref().unwrap_or(""),
        )),
        Object::EndpointSlice(es) => Scope::Service(NamespacedName::new(
            namespace(&es.metadata.namespace),
            es.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE_NAME))
                .map_or("", String::as_str),
        )),
        Object::Endpoints(ep) => Scope::Service(NamespacedName::new(
            namespace(&ep.metadata.namespace),
            ep.metadata.name.as_deref().unwrap_or(""),
        )),
        Object::Node(_) | Object::ServiceCidr(_) | Object::ProxyConfig(_) => Scope::Node,
        Object::Other { .. } => Scope::Nothing,
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            changed: Some(BTreeSet::new()),
            ..Self::default()
        }
    }

    /// The inventory of every bucket's objects.
    pub fn inventory(&self) -> &Inventory {
        &self.merged
    }

    /// The Services whose objects changed since the last call (`None`:
    /// anything may have changed, e.g. a Node or a configuration did).
    pub fn take_changed(&mut self) -> Option<BTreeSet<NamespacedName>> {
        self.changed.replace(BTreeSet::new())
    }

    /// Replaces the objects of `bucket` (a new bucket is added).
    pub fn set(&mut self, bucket: &str, objects: Vec<Object>) {
        let old = self.buckets.remove(bucket).unwrap_or_default();
        let warnings = bucket_warnings(bucket, &objects, &self.opts);
        self.buckets
            .insert(bucket.to_string(), Bucket { objects, warnings });
        self.changed_bucket(bucket, &old.objects);
    }

    /// Applies many bucket changes (`None`: the bucket is removed). Past
    /// a few dozen, the inventory is converted again once instead of
    /// patched per bucket (a first load, a relist).
    pub fn apply(&mut self, changes: impl IntoIterator<Item = (String, Option<Vec<Object>>)>) {
        let changes: Vec<(String, Option<Vec<Object>>)> = changes.into_iter().collect();
        if changes.len() <= BULK {
            for (bucket, objects) in changes {
                match objects {
                    Some(o) => self.set(&bucket, o),
                    None => self.remove(&bucket),
                }
            }
            return;
        }
        self.bulk(changes);
    }

    /// Applies `changes` to the buckets and converts everything again.
    fn bulk(&mut self, changes: Vec<(String, Option<Vec<Object>>)>) {
        for (bucket, objects) in changes {
            match objects {
                Some(objects) => {
                    let warnings = bucket_warnings(&bucket, &objects, &self.opts);
                    self.buckets.insert(bucket, Bucket { objects, warnings });
                }
                None => {
                    self.buckets.remove(&bucket);
                }
            }
        }
        self.by_service.clear();
        for (name, b) in &self.buckets {
            for o in &b.objects {
                if let Scope::Service(n) = scope(o) {
                    self.by_service.entry(n).or_default().insert(name.clone());
                }
            }
        }
        self.rebuild();
    }

    /// Replaces every bucket with `buckets` (a relist).
    pub fn replace_all(&mut self, buckets: impl IntoIterator<Item = (String, Vec<Object>)>) {
        self.buckets.clear();
        self.bulk(buckets.into_iter().map(|(b, o)| (b, Some(o))).collect());
    }

    /// Removes `bucket` and its objects.
    pub fn remove(&mut self, bucket: &str) {
        if let Some(old) = self.buckets.remove(bucket) {
            self.changed_bucket(bucket, &old.objects);
        }
    }

    /// Updates the index and the inventory after `bucket` changed from
    /// `old` to what it holds now.
    fn changed_bucket(&mut self, bucket: &str, old: &[Object]) {
        let new: &[Object] = self
            .buckets
            .get(bucket)
            .map_or(&[], |b| b.objects.as_slice());
        // The Services whose objects in this bucket differ (a file rewritten
        // with one Service changed touches that one only).
        let ((old_by, old_node), (new_by, new_node)) = (group(old), group(new));
        // A kube-proxy configuration changes how every Service converts; a
        // Node or ServiceCIDR changes only the node-wide facts.
        let rebuild = configs(&old_node) != configs(&new_node);
        let node = old_node != new_node;
        let services: BTreeSet<NamespacedName> = old_by
            .keys()
            .chain(new_by.keys())
            .filter(|n| old_by.get(*n) != new_by.get(*n))
            .cloned()
            .collect();
        // The index: drop the bucket from the old objects' Services, add it
        // to the new ones'.
        for o in old {
            if let Scope::Service(n) = scope(o)
                && let Some(b) = self.by_service.get_mut(&n)
            {
                b.remove(bucket);
                if b.is_empty() {
                    self.by_service.remove(&n);
                }
            }
        }
        for o in new {
            if let Scope::Service(n) = scope(o) {
                self.by_service
                    .entry(n)
                    .or_default()
                    .insert(bucket.to_string());
            }
        }
        if rebuild {
            self.rebuild();
            return;
        }
        if node {
            self.refresh_node_facts();
        }
        self.patch(&services);
        self.merged.warnings = self
            .buckets
            .values()
            .flat_map(|b| b.warnings.iter().cloned())
            .collect();
        if let Some(c) = &mut self.changed {
            c.extend(services);
        }
    }

    /// Re-converts the objects of `services` and puts them in place of
    /// their old versions.
    fn patch(&mut self, services: &BTreeSet<NamespacedName>) {
        if services.is_empty() {
            return;
        }
        if !self.try_patch(services) {
            self.rebuild();
        }
    }

    /// [`Self::patch`]; false when an EndpointSlice name is also used by
    /// another Service's slice (which one wins depends on buckets this
    /// does not look at).
    fn try_patch(&mut self, services: &BTreeSet<NamespacedName>) -> bool {
        let mut objects: Vec<(String, Object)> = Vec::new();
        let buckets: BTreeSet<&String> = services
            .iter()
            .filter_map(|n| self.by_service.get(n))
            .flatten()
            .collect();
        for b in buckets {
            let Some(bucket) = self.buckets.get(b) else {
                continue;
            };
            for o in &bucket.objects {
                if matches!(scope(o), Scope::Service(ref n) if services.contains(n)) {
                    objects.push((b.clone(), o.clone()));
                }
            }
        }
        let part = inventory_with(objects, &self.opts);
        let taken: BTreeSet<&NamespacedName> = self
            .merged
            .state
            .endpoint_slices
            .iter()
            .filter(|s| !services.contains(&s.service_id()))
            .map(|s| &s.id)
            .collect();
        if part
            .state
            .endpoint_slices
            .iter()
            .any(|s| taken.contains(&s.id))
        {
            return false;
        }
        let state = &mut self.merged.state;
        state.services.retain(|s| !services.contains(&s.id));
        state
            .endpoint_slices
            .retain(|s| !services.contains(&s.service_id()));
        for svc in part.state.services {
            let at = state.services.partition_point(|s| s.id < svc.id);
            state.services.insert(at, svc);
        }
        for slice in part.state.endpoint_slices {
            let at = state.endpoint_slices.partition_point(|s| s.id < slice.id);
            state.endpoint_slices.insert(at, slice);
        }
        true
    }

    /// The Nodes and ServiceCIDRs of every bucket, converted again (as
    /// [`inventory`] converts them: Nodes in order, CIDRs in order without
    /// duplicates).
    fn refresh_node_facts(&mut self) {
        let objects: Vec<(String, Object)> = self
            .buckets
            .iter()
            .flat_map(|(b, bucket)| {
                bucket
                    .objects
                    .iter()
                    .filter(|o| matches!(o, Object::Node(_) | Object::ServiceCidr(_)))
                    .map(move |o| (b.clone(), o.clone()))
            })
            .collect();
        let part = inventory_with(objects, &self.opts);
        self.merged.nodes = part.nodes;
        self.merged.service_cidrs = part.service_cidrs;
    }

    /// Converts every bucket again.
    fn rebuild(&mut self) {
        let all: Vec<(String, Object)> = self
            .buckets
            .iter()
            .flat_map(|(b, bucket)| bucket.objects.iter().map(move |o| (b.clone(), o.clone())))
            .collect();
        let opts = proxy_options(all.iter().map(|(_, o)| o));
        if opts != self.opts {
            self.opts = opts;
            for (name, b) in &mut self.buckets {
                b.warnings = bucket_warnings(name, &b.objects, &self.opts);
            }
        }
        let mut inv = inventory_with(all, &self.opts);
        inv.warnings = self
            .buckets
            .values()
            .flat_map(|b| b.warnings.iter().cloned())
            .collect();
        self.merged = inv;
        self.changed = None;
    }
}

/// The conversion options the first kube-proxy configuration among
/// `objects` sets (see [`inventory`]).
fn proxy_options<'a>(mut objects: impl Iterator<Item = &'a Object>) -> ConvertOptions {
    ConvertOptions {
        service_proxy_name: objects
            .find_map(|o| match o {
                Object::ProxyConfig(c) => Some(
                    c.service_proxy_name
                        .clone()
                        .filter(|s| !s.trim().is_empty()),
                ),
                _ => None,
            })
            .flatten(),
    }
}

/// The kube-proxy configurations among `objects`.
fn configs<'a>(objects: &[&'a Object]) -> Vec<&'a Object> {
    objects
        .iter()
        .copied()
        .filter(|o| matches!(o, Object::ProxyConfig(_)))
        .collect()
}

/// Objects by the Service they belong to, and the node-wide ones.
type Grouped<'a> = (BTreeMap<NamespacedName, Vec<&'a Object>>, Vec<&'a Object>);

fn group(objects: &[Object]) -> Grouped<'_> {
    let mut by: BTreeMap<NamespacedName, Vec<&Object>> = BTreeMap::new();
    let mut node: Vec<&Object> = Vec::new();
    for o in objects {
        match scope(o) {
            Scope::Service(n) => by.entry(n).or_default().push(o),
            Scope::Node => node.push(o),
            Scope::Nothing => {}
        }
    }
    (by, node)
}

/// The warnings of converting `objects` on their own.
fn bucket_warnings(bucket: &str, objects: &[Object], opts: &ConvertOptions) -> Vec<String> {
    let with_source = objects.iter().map(|o| (bucket.to_string(), o.clone()));
    if objects.iter().any(|o| matches!(o, Object::ProxyConfig(_))) {
        // A configuration here sets the options for this bucket too.
        inventory(with_source).warnings
    } else {
        inventory_with(with_source, opts).warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::parse_documents;
    use crate::test_rng::Rng;

    fn service(ns: &str, name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{clusterIP: {ip}, ports: [{{name: p, port: 80}}]}}\n---\n"
        )
    }

    fn slice(ns: &str, name: &str, svc: &str, ip: &str) -> String {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
             addressType: IPv4\nports: [{{name: p, port: 8080}}]\n\
             endpoints: [{{addresses: [{ip}]}}]\n---\n"
        )
    }

    fn endpoints(ns: &str, name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             subsets: [{{addresses: [{{ip: {ip}}}], ports: [{{name: p, port: 8080}}]}}]\n---\n"
        )
    }

    fn objects(text: &str) -> Vec<Object> {
        parse_documents(text, "t.yaml").expect("parse")
    }

    #[test]
    fn equals_a_fresh_inventory_through_random_changes() {
        let mut store = Store::new();
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        let mut rng = Rng(3);
        for step in 0..300 {
            let file = format!("f{}.yaml", rng.below(6));
            let mut text = String::new();
            for _ in 0..rng.below(4) {
                let s = rng.below(5);
                let (ns, name) = (format!("ns{}", s % 2), format!("s{s}"));
                let ip = format!("10.1.{}.{}", step % 200, rng.below(200) + 1);
                text.push_str(&match rng.below(5) {
                    0 | 1 => service(&ns, &name, &format!("10.96.0.{}", s + 1)),
                    2 | 3 => slice(&ns, &format!("{name}-{}", rng.below(2)), &name, &ip),
                    _ => endpoints(&ns, &name, &ip),
                });
            }
            if rng.below(7) == 0 {
                text.push_str(
                    "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n\
                     status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}\n---\n",
                );
            }
            if rng.below(11) == 0 {
                // serviceProxyName: the unlabeled Services are not ours.
                text.push_str(
                    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                     serviceProxyName: other\n---\n",
                );
            }
            if rng.below(9) == 0 {
                files.remove(&file);
                store.remove(&file);
            } else {
                store.set(&file, objects(&text));
                files.insert(file, text);
            }
            let want = inventory(
                files
                    .iter()
                    .flat_map(|(f, t)| objects(t).into_iter().map(move |o| (f.clone(), o))),
            );
            let got = store.inventory();
            assert_eq!(got.state, want.state, "step {step}");
            assert_eq!(got.nodes, want.nodes, "step {step}");
        }
    }

    #[test]
    fn bulk_changes_and_relists_equal_a_fresh_inventory() {
        let texts: Vec<(String, String)> = (0..50)
            .map(|i| {
                let ns = format!("ns{}", i % 3);
                let name = format!("s{i}");
                (
                    format!("f{i:02}.yaml"),
                    service(&ns, &name, &format!("10.96.1.{}", i + 1))
                        + &slice(
                            &ns,
                            &format!("{name}-a"),
                            &name,
                            &format!("10.1.1.{}", i + 1),
                        ),
                )
            })
            .collect();
        let fresh = |t: &[(String, String)]| {
            inventory(
                t.iter()
                    .flat_map(|(f, x)| objects(x).into_iter().map(move |o| (f.clone(), o))),
            )
        };
        let mut store = Store::new();
        store.apply(texts.iter().map(|(f, t)| (f.clone(), Some(objects(t)))));
        assert_eq!(store.inventory().state, fresh(&texts).state);
        assert_eq!(store.take_changed(), None);
        store.replace_all(texts[10..20].iter().map(|(f, t)| (f.clone(), objects(t))));
        assert_eq!(store.inventory().state, fresh(&texts[10..20]).state);
        assert_eq!(store.inventory().state.services.len(), 10);
    }

    #[test]
    fn names_what_changed() {
        let mut store = Store::new();
        store.set(
            "a.yaml",
            objects(
                &(service("nx", "web", "10.96.0.1") + &slice("nx", "web-1", "web", "10.1.0.1")),
            ),
        );
        store.set("b.yaml", objects(&service("ny", "db", "10.96.0.2")));
        store.take_changed();
        store.set(
            "a.yaml",
            objects(
                &(service("nx", "web", "10.96.0.1") + &slice("nx", "web-1", "web", "10.1.0.2")),
            ),
        );
        let changed = store.take_changed().expect("services only");
        // db, in the same file, did not change.
        assert_eq!(changed, BTreeSet::from([NamespacedName::new("nx", "web")]));
        assert_eq!(
            store.inventory().state.endpoint_slices[0].endpoints[0]
                .address
                .to_string(),
            "10.1.0.2"
        );
        // A Node changes node-wide facts only: no Service named.
        store.set(
            "n.yaml",
            objects("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"),
        );
        assert_eq!(store.take_changed(), Some(BTreeSet::new()));
        assert_eq!(store.inventory().nodes.len(), 1);
        // A configuration may change every Service's conversion.
        store.set(
            "c.yaml",
            objects(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                 mode: nftables\n",
            ),
        );
        assert_eq!(store.take_changed(), None);
        assert_eq!(store.take_changed(), Some(BTreeSet::new()));
    }
}
