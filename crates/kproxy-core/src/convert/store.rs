//! An [`Inventory`] kept up to date object by object.
//!
//! A watch (a directory of manifests, the API server) sees a few objects
//! change at a time. [`Store`] holds the objects in named buckets (a file,
//! or one watched object each) and, when a bucket changes, re-converts only
//! the objects of the Services it touches, patching the inventory in place:
//! its [`Store::inventory`] equals [`inventory`](super::inventory()) of
//! every bucket's objects in bucket order (tests check it), without
//! re-converting the cluster.
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
//! assert_eq!(store.objects("web.yaml").map(<[_]>::len), Some(1));
//! store.remove("web.yaml");
//! assert!(store.inventory().state.services.is_empty());
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::inventory::inventory_of;
use super::{ConvertOptions, Inventory, LABEL_SERVICE_NAME, Object};
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
    /// The names of each Service's slices in `merged`.
    slices_of: HashMap<NamespacedName, Vec<NamespacedName>>,
    opts: ConvertOptions,
    /// Services touched since [`Store::take_changed`]; `None`: unknown
    /// (the inventory was rebuilt).
    changed: Option<BTreeSet<NamespacedName>>,
}

/// How an object relates to the inventory.
enum Scope<'a> {
    /// It belongs to this Service (a Service, its EndpointSlice or
    /// Endpoints): namespace and name.
    Service((&'a str, &'a str)),
    /// It concerns everything.
    Node,
    /// It converts to nothing (only a warning).
    Nothing,
}

fn namespace(ns: &Option<String>) -> &str {
    ns.as_deref().filter(|s| !s.is_empty()).unwrap_or("default")
}

fn scope(o: &Object) -> Scope<'_> {
    match o {
        Object::Service(s) => Scope::Service((
            namespace(&s.metadata.namespace),
            s.metadata.name.as_deref().unwrap_or(""),
        )),
        Object::EndpointSlice(es) => Scope::Service((
            namespace(&es.metadata.namespace),
            es.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE_NAME))
                .map_or("", String::as_str),
        )),
        Object::Endpoints(ep) => Scope::Service((
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

    /// The objects of `bucket` (`None`: no such bucket).
    pub fn objects(&self, bucket: &str) -> Option<&[Object]> {
        self.buckets.get(bucket).map(|b| b.objects.as_slice())
    }

    /// The Services whose objects changed since the last call (`None`:
    /// anything may have changed, e.g. a Node or a configuration did).
    pub fn take_changed(&mut self) -> Option<BTreeSet<NamespacedName>> {
        self.changed.replace(BTreeSet::new())
    }

    /// Replaces the objects of `bucket` (a new bucket is added).
    pub fn set(&mut self, bucket: &str, objects: Vec<Object>) {
        let old = self.buckets.remove(bucket).unwrap_or_default();
        let change = Change::new(&old.objects, &objects);
        let warnings = changed_warnings(bucket, &old, &objects, &change, &self.opts)
            .unwrap_or_else(|| bucket_warnings(bucket, &objects, &self.opts));
        self.buckets
            .insert(bucket.to_string(), Bucket { objects, warnings });
        self.changed_bucket(bucket, change);
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
                if let Scope::Service((ns, n)) = scope(o) {
                    self.by_service
                        .entry(NamespacedName::new(ns, n))
                        .or_default()
                        .insert(name.clone());
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
            self.changed_bucket(bucket, Change::new(&old.objects, &[]));
        }
    }

    /// Updates the index and the inventory after `bucket` changed as
    /// `change` says.
    fn changed_bucket(&mut self, bucket: &str, change: Change) {
        let Change {
            rebuild,
            node,
            removed,
            added_or_changed,
        } = change;
        // The index: the bucket holds objects of the new and changed
        // Services, no longer of the removed ones (the others' entries
        // already name it).
        for n in &removed {
            if let Some(b) = self.by_service.get_mut(n) {
                b.remove(bucket);
                if b.is_empty() {
                    self.by_service.remove(n);
                }
            }
        }
        for n in &added_or_changed {
            if !self.by_service.get(n).is_some_and(|b| b.contains(bucket)) {
                self.by_service
                    .entry(n.clone())
                    .or_default()
                    .insert(bucket.to_string());
            }
        }
        let services: BTreeSet<NamespacedName> =
            removed.into_iter().chain(added_or_changed).collect();
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
        let wanted: BTreeSet<(&str, &str)> = services
            .iter()
            .map(|n| (n.namespace.as_str(), n.name.as_str()))
            .collect();
        let mut objects: Vec<(&str, &Object)> = Vec::new();
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
                if let Scope::Service(n) = scope(o)
                    && wanted.contains(&n)
                {
                    objects.push((b, o));
                }
            }
        }
        let part = inventory_of(objects, &self.opts);
        // `merged` holds Services and slices sorted by name, without
        // duplicates: they are found by binary search (a scan of the
        // cluster's objects would cost more than the rest).
        let state = &mut self.merged.state;
        let slices = &state.endpoint_slices;
        if part.state.endpoint_slices.iter().any(|p| {
            slices.binary_search_by(|s| s.id.cmp(&p.id)).is_ok_and(|i| {
                let s = &slices[i];
                !wanted.contains(&(s.id.namespace.as_str(), s.service_name.as_str()))
            })
        }) {
            return false;
        }
        // The old Services and slices that are not replaced go; the new
        // ones take the place of their namesakes, or are inserted.
        let new_services: BTreeSet<&NamespacedName> =
            part.state.services.iter().map(|s| &s.id).collect();
        for n in services.iter().filter(|n| !new_services.contains(n)) {
            if let Ok(i) = state.services.binary_search_by(|s| s.id.cmp(n)) {
                state.services.remove(i);
            }
        }
        let new_slices: BTreeSet<&NamespacedName> =
            part.state.endpoint_slices.iter().map(|s| &s.id).collect();
        for n in services {
            for id in self.slices_of.remove(n).into_iter().flatten() {
                if !new_slices.contains(&id)
                    && let Ok(i) = state.endpoint_slices.binary_search_by(|s| s.id.cmp(&id))
                {
                    state.endpoint_slices.remove(i);
                }
            }
        }
        for svc in part.state.services {
            match state.services.binary_search_by(|s| s.id.cmp(&svc.id)) {
                Ok(i) => state.services[i] = svc,
                Err(i) => state.services.insert(i, svc),
            }
        }
        for slice in part.state.endpoint_slices {
            self.slices_of
                .entry(slice.service_id())
                .or_default()
                .push(slice.id.clone());
            match state
                .endpoint_slices
                .binary_search_by(|s| s.id.cmp(&slice.id))
            {
                Ok(i) => state.endpoint_slices[i] = slice,
                Err(i) => state.endpoint_slices.insert(i, slice),
            }
        }
        true
    }

    /// The Nodes and ServiceCIDRs of every bucket, converted again (as
    /// [`inventory`](super::inventory()) converts them: Nodes in order,
    /// CIDRs in order without duplicates).
    fn refresh_node_facts(&mut self) {
        let objects = self.buckets.iter().flat_map(|(b, bucket)| {
            bucket
                .objects
                .iter()
                .filter(|o| matches!(o, Object::Node(_) | Object::ServiceCidr(_)))
                .map(move |o| (b.as_str(), o))
        });
        let part = inventory_of(objects, &self.opts);
        self.merged.nodes = part.nodes;
        self.merged.service_cidrs = part.service_cidrs;
    }

    /// Converts every bucket again.
    fn rebuild(&mut self) {
        let opts = proxy_options(self.buckets.values().flat_map(|b| b.objects.iter()));
        if opts != self.opts {
            self.opts = opts;
            for (name, b) in &mut self.buckets {
                b.warnings = bucket_warnings(name, &b.objects, &self.opts);
            }
        }
        let all = self
            .buckets
            .iter()
            .flat_map(|(b, bucket)| bucket.objects.iter().map(move |o| (b.as_str(), o)));
        let mut inv = inventory_of(all, &self.opts);
        inv.warnings = self
            .buckets
            .values()
            .flat_map(|b| b.warnings.iter().cloned())
            .collect();
        self.slices_of.clear();
        for slice in &inv.state.endpoint_slices {
            self.slices_of
                .entry(slice.service_id())
                .or_default()
                .push(slice.id.clone());
        }
        self.merged = inv;
        self.changed = None;
    }
}

/// What replacing a bucket's objects changes.
struct Change {
    /// A kube-proxy configuration changed (how every Service converts).
    rebuild: bool,
    /// A Node or ServiceCIDR changed (the node-wide facts).
    node: bool,
    /// The Services the bucket no longer holds objects of.
    removed: Vec<NamespacedName>,
    /// The Services whose objects in the bucket are new or differ (a file
    /// rewritten with one Service changed touches that one only).
    added_or_changed: Vec<NamespacedName>,
}

impl Change {
    fn new(old: &[Object], new: &[Object]) -> Self {
        let ((old_by, old_node), (new_by, new_node)) = (group(old), group(new));
        Change {
            rebuild: configs(&old_node) != configs(&new_node),
            node: old_node != new_node,
            removed: old_by
                .keys()
                .filter(|n| !new_by.contains_key(*n))
                .map(|&(ns, n)| NamespacedName::new(ns, n))
                .collect(),
            added_or_changed: new_by
                .iter()
                .filter(|(n, objects)| old_by.get(*n) != Some(*objects))
                .map(|(&(ns, n), _)| NamespacedName::new(ns, n))
                .collect(),
        }
    }
}

/// The warnings of `new` replacing `old` in `bucket` (see
/// [`bucket_warnings`]), from the objects of the changed Services alone;
/// `None` when that cannot tell.
///
/// When the old objects gave no warning, those of the unchanged Services
/// give none either (an object's own warnings do not depend on the others),
/// except that one of their slices can become a duplicate of a changed
/// Service's slice (or a slice mirrored from its Endpoints): the only
/// warnings involving two Services. Without such a clash, the bucket's
/// warnings are those of the changed Services' objects, in the same order.
fn changed_warnings(
    bucket: &str,
    old: &Bucket,
    new: &[Object],
    change: &Change,
    opts: &ConvertOptions,
) -> Option<Vec<String>> {
    if !old.warnings.is_empty() || change.node {
        return None;
    }
    let changed: BTreeSet<(&str, &str)> = change
        .added_or_changed
        .iter()
        .map(|n| (n.namespace.as_str(), n.name.as_str()))
        .collect();
    let mut objects: Vec<(&str, &Object)> = Vec::new();
    // The names the unchanged Services' slices may take.
    let mut names: HashSet<(&str, &str)> = HashSet::new();
    for o in new {
        match (scope(o), o) {
            (Scope::Service(n), _) if changed.contains(&n) => objects.push((bucket, o)),
            (Scope::Service(_), Object::EndpointSlice(es)) => {
                names.insert((
                    namespace(&es.metadata.namespace),
                    es.metadata.name.as_deref().unwrap_or(""),
                ));
            }
            // Mirrored slices' names are only known from converting.
            (Scope::Service(_), Object::Endpoints(_)) => return None,
            (Scope::Service(_), _) => {}
            // (Other kinds give warnings; configurations set options.)
            (Scope::Nothing, _) | (_, Object::ProxyConfig(_)) => return None,
            (Scope::Node, _) => {}
        }
    }
    let part = inventory_of(objects, opts);
    let clash = part
        .state
        .endpoint_slices
        .iter()
        .any(|s| names.contains(&(s.id.namespace.as_str(), s.id.name.as_str())));
    (!clash).then_some(part.warnings)
}

/// The conversion options the first kube-proxy configuration among
/// `objects` sets (see [`inventory`](super::inventory())).
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
type Grouped<'a> = (
    BTreeMap<(&'a str, &'a str), Vec<&'a Object>>,
    Vec<&'a Object>,
);

fn group(objects: &[Object]) -> Grouped<'_> {
    let mut by: BTreeMap<(&str, &str), Vec<&Object>> = BTreeMap::new();
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
    let with_source = objects.iter().map(|o| (bucket, o));
    if objects.iter().any(|o| matches!(o, Object::ProxyConfig(_))) {
        // A configuration here sets the options for this bucket too (as
        // `inventory` would).
        inventory_of(with_source, &proxy_options(objects.iter())).warnings
    } else {
        inventory_of(with_source, opts).warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{inventory, parse_documents};
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
        let mut warned = 0;
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
            // Warnings: each file's own, under the configuration of its own
            // or else the first file's that has one.
            let global = ConvertOptions {
                service_proxy_name: want.proxy_configs.first().and_then(|c| {
                    c.service_proxy_name
                        .clone()
                        .filter(|s| !s.trim().is_empty())
                }),
            };
            let warnings: Vec<String> = files
                .iter()
                .flat_map(|(f, t)| {
                    let objs = objects(t);
                    let with_source = objs.iter().map(|o| (f.clone(), o.clone()));
                    if objs.iter().any(|o| matches!(o, Object::ProxyConfig(_))) {
                        inventory(with_source).warnings
                    } else {
                        crate::convert::inventory_with(with_source, &global).warnings
                    }
                })
                .collect();
            assert_eq!(got.warnings, warnings, "step {step}");
            warned += usize::from(!warnings.is_empty());
        }
        assert!(warned > 100, "{warned}");
    }

    #[test]
    fn warnings_of_the_changed_services_are_the_buckets() {
        let mut rng = Rng(11);
        let opts = ConvertOptions::default();
        let random_object = |rng: &mut Rng| {
            let s = rng.below(4);
            let (ns, name) = ("nx", format!("s{s}"));
            let ip = if rng.below(8) == 0 { "bad" } else { "10.1.0.1" };
            // Slice names shared between Services: duplicates across them.
            let slice_name = format!("sl{}", rng.below(5));
            let text = match rng.below(6) {
                0 | 1 => service(ns, &name, &format!("10.96.0.{}", s + 1)),
                2..=4 => slice(ns, &slice_name, &name, ip),
                _ => endpoints(ns, &name, ip),
            };
            objects(&text).remove(0)
        };
        let (mut quick, mut clash) = (0, 0);
        for _ in 0..3000 {
            let old: Vec<Object> = (0..rng.below(6)).map(|_| random_object(&mut rng)).collect();
            let old = Bucket {
                warnings: bucket_warnings("b", &old, &opts),
                objects: old,
            };
            if !old.warnings.is_empty() {
                continue;
            }
            let mut new = old.objects.clone();
            for _ in 0..1 + rng.below(2) {
                let at = rng.below(new.len() + 1);
                match rng.below(3) {
                    0 => new.insert(at, random_object(&mut rng)),
                    1 if at < new.len() => {
                        new.remove(at);
                    }
                    _ if at < new.len() => new[at] = random_object(&mut rng),
                    _ => {}
                }
            }
            let change = Change::new(&old.objects, &new);
            let want = bucket_warnings("b", &new, &opts);
            match changed_warnings("b", &old, &new, &change, &opts) {
                Some(got) => {
                    assert_eq!(got, want);
                    quick += usize::from(!got.is_empty());
                }
                None => clash += usize::from(want.iter().any(|w| w.contains("duplicate"))),
            }
        }
        // Both ways are taken, with warnings to tell.
        assert!(quick > 50 && clash > 20, "{quick} {clash}");
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
