//! Converting a whole batch of objects.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as corev1;

use super::{
    ConvertOptions, LABEL_SERVICE_NAME, NodeFacts, Object, Outcome, endpoint_slice_with,
    endpoints_to_slices_with, node, service_cidr, service_with,
};
use crate::config::KubeProxyConfiguration;
use crate::model::{ClusterState, EndpointSlice, NamespacedName, Service};

/// Everything usable from a batch of objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// Services and EndpointSlices (Endpoints mirrored), sorted by
    /// `namespace/name`.
    pub state: ClusterState,
    /// Nodes, in input order.
    pub nodes: Vec<NodeFacts>,
    /// ServiceCIDR ranges, in input order, without duplicates.
    pub service_cidrs: Vec<IpNet>,
    /// kube-proxy configurations, in input order.
    pub proxy_configs: Vec<KubeProxyConfiguration>,
    /// One line per skipped object, rejected object or ignored field, each
    /// prefixed with its source (`file.yaml: Service default/web: ...`).
    pub warnings: Vec<String>,
}

/// Converts `(source, object)` pairs into an [`Inventory`], with the
/// `serviceProxyName` of the first [`KubeProxyConfiguration`] among them (if
/// any). See [`inventory_with`].
pub fn inventory(objects: impl IntoIterator<Item = (String, Object)>) -> Inventory {
    let objects: Vec<(String, Object)> = objects.into_iter().collect();
    let service_proxy_name = objects.iter().find_map(|(_, o)| match o {
        Object::ProxyConfig(c) => Some(
            c.service_proxy_name
                .clone()
                .filter(|s| !s.trim().is_empty()),
        ),
        _ => None,
    });
    let opts = ConvertOptions {
        service_proxy_name: service_proxy_name.flatten(),
    };
    inventory_with(objects, &opts)
}

/// Converts `(source, object)` pairs into an [`Inventory`].
///
/// An invalid object is left out and its error becomes a warning; so do
/// skipped objects and other kinds (`ignoring ConfigMap ns/name`). Endpoints
/// are mirrored into EndpointSlices, except for a Service that also has
/// EndpointSlices in the input (the slices win). When the same object
/// appears twice, the later one wins (as with `kubectl apply`).
///
/// ```
/// use kproxy_core::convert::{inventory_with, parse_documents, ConvertOptions};
/// let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 70000}]}\n";
/// let objs = parse_documents(text, "s.yaml").unwrap();
/// let inv = inventory_with(objs.into_iter().map(|o| ("s.yaml".to_string(), o)), &ConvertOptions::default());
/// assert!(inv.state.services.is_empty());
/// assert_eq!(inv.warnings, ["s.yaml: Service default/a: spec.ports[0].port: 70000 is out of range 1-65535"]);
/// ```
pub fn inventory_with(
    objects: impl IntoIterator<Item = (String, Object)>,
    opts: &ConvertOptions,
) -> Inventory {
    let objects: Vec<(String, Object)> = objects.into_iter().collect();
    inventory_of(objects.iter().map(|(s, o)| (s.as_str(), o)), opts)
}

/// [`inventory_with`] of borrowed objects (the converters read them by
/// reference; only kube-proxy configurations are copied).
pub(super) fn inventory_of<'a>(
    objects: impl IntoIterator<Item = (&'a str, &'a Object)>,
    opts: &ConvertOptions,
) -> Inventory {
    let mut inv = Inventory::default();
    let mut services: BTreeMap<NamespacedName, Service> = BTreeMap::new();
    let mut slices: BTreeMap<NamespacedName, EndpointSlice> = BTreeMap::new();
    let mut sliced_services: BTreeSet<NamespacedName> = BTreeSet::new();
    let mut endpoints: Vec<(&str, &corev1::Endpoints)> = Vec::new();
    let w = &mut inv.warnings;

    fn add_slice(
        slices: &mut BTreeMap<NamespacedName, EndpointSlice>,
        w: &mut Vec<String>,
        source: &str,
        slice: EndpointSlice,
    ) {
        let id = slice.id.clone();
        if slices.insert(id.clone(), slice).is_some() {
            w.push(format!(
                "{source}: EndpointSlice {id}: duplicate; the later one wins"
            ));
        }
    }

    for (source, object) in objects {
        match object {
            Object::Service(svc) => match service_with(svc, opts) {
                Ok(Outcome::Converted { value, warnings }) => {
                    w.extend(warnings.iter().map(|x| format!("{source}: {x}")));
                    let id = value.id.clone();
                    if services.insert(id.clone(), value).is_some() {
                        w.push(format!(
                            "{source}: Service {id}: duplicate; the later one wins"
                        ));
                    }
                }
                Ok(Outcome::Skipped(r)) => w.push(format!(
                    "{source}: ignoring Service {}: {r}",
                    display_name(&svc.metadata)
                )),
                Err(e) => w.push(format!("{source}: {e}")),
            },
            Object::EndpointSlice(es) => {
                if let Some(svc) = es
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_SERVICE_NAME))
                {
                    sliced_services.insert(NamespacedName::new(namespace(&es.metadata), svc));
                }
                match endpoint_slice_with(es, opts) {
                    Ok(Outcome::Converted { value, warnings }) => {
                        w.extend(warnings.iter().map(|x| format!("{source}: {x}")));
                        add_slice(&mut slices, w, source, value);
                    }
                    Ok(Outcome::Skipped(r)) => w.push(format!(
                        "{source}: ignoring EndpointSlice {}: {r}",
                        display_name(&es.metadata)
                    )),
                    Err(e) => w.push(format!("{source}: {e}")),
                }
            }
            Object::Endpoints(ep) => endpoints.push((source, ep)),
            Object::Node(n) => match node(n) {
                Ok(facts) => inv.nodes.push(facts),
                Err(e) => w.push(format!("{source}: {e}")),
            },
            Object::ServiceCidr(sc) => match service_cidr(sc) {
                Ok(nets) => {
                    for net in nets {
                        if !inv.service_cidrs.contains(&net) {
                            inv.service_cidrs.push(net);
                        }
                    }
                }
                Err(e) => w.push(format!("{source}: {e}")),
            },
            Object::ProxyConfig(c) => inv.proxy_configs.push(c.as_ref().clone()),
            Object::Other { kind, name, .. } => {
                let kind = if kind.is_empty() {
                    "object without kind".to_string()
                } else {
                    super::validate::show(kind)
                };
                if name.is_empty() {
                    w.push(format!("{source}: ignoring {kind}"));
                } else {
                    w.push(format!("{source}: ignoring {kind} {name}"));
                }
            }
        }
    }

    for (source, ep) in endpoints {
        let id = NamespacedName::new(
            namespace(&ep.metadata),
            ep.metadata.name.clone().unwrap_or_default(),
        );
        if sliced_services.contains(&id) {
            w.push(format!(
                "{source}: ignoring Endpoints {id}: EndpointSlices of the Service are given"
            ));
            continue;
        }
        match endpoints_to_slices_with(ep, opts) {
            Ok(Outcome::Converted { value, warnings }) => {
                w.extend(warnings.iter().map(|x| format!("{source}: {x}")));
                for s in value {
                    add_slice(&mut slices, w, source, s);
                }
            }
            Ok(Outcome::Skipped(r)) => w.push(format!("{source}: ignoring Endpoints {id}: {r}")),
            Err(e) => w.push(format!("{source}: {e}")),
        }
    }

    inv.state = ClusterState {
        services: services.into_values().collect(),
        endpoint_slices: slices.into_values().collect(),
    };
    inv
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

fn display_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    super::validate::show(&format!(
        "{}/{}",
        namespace(meta),
        meta.name.as_deref().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::parse_documents;

    fn inv(text: &str) -> Inventory {
        let objs = parse_documents(text, "f.yaml").expect("parses");
        inventory(objs.into_iter().map(|o| ("f.yaml".to_string(), o)))
    }

    #[test]
    fn batch() {
        let i = inv(r#"
apiVersion: v1
kind: Service
metadata: {name: z, namespace: b}
spec: {clusterIP: 10.0.0.2, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: b}
spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: proxied, labels: {service.kubernetes.io/service-proxy-name: x}}
spec: {clusterIP: 10.0.0.3, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: bad}
spec: {clusterIP: 10.0.0.4, ports: [{port: 0}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: a, namespace: b}
subsets: [{addresses: [{ip: 10.1.0.1}], ports: [{port: 8080}]}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: z, namespace: b}
subsets: [{addresses: [{ip: 10.1.0.2}], ports: [{port: 8080}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: z-abc, namespace: b, labels: {kubernetes.io/service-name: z}}
addressType: IPv4
endpoints: [{addresses: [10.1.0.3]}]
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: k}
spec: {cidrs: [10.0.0.0/16]}
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: k2}
spec: {cidrs: [10.0.0.0/16]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: b}
"#);
        let svcs: Vec<_> = i.state.services.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(svcs, ["b/a", "b/z"]);
        let slices: Vec<_> = i
            .state
            .endpoint_slices
            .iter()
            .map(|s| s.id.to_string())
            .collect();
        assert_eq!(slices, ["b/a-mirrored-1", "b/z-abc"]);
        assert_eq!(i.nodes.len(), 1);
        assert_eq!(i.service_cidrs.len(), 1);
        assert_eq!(
            i.warnings,
            [
                "f.yaml: ignoring Service default/proxied: labelled service.kubernetes.io/service-proxy-name=x",
                "f.yaml: Service default/bad: spec.ports[0].port: 0 is out of range 1-65535",
                "f.yaml: ignoring ConfigMap b/cm",
                "f.yaml: ignoring Endpoints b/z: EndpointSlices of the Service are given",
            ]
        );
    }

    #[test]
    fn proxy_config_service_proxy_name_and_duplicates() {
        let i = inv(r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
serviceProxyName: mine
---
apiVersion: v1
kind: Service
metadata: {name: a, labels: {service.kubernetes.io/service-proxy-name: mine}}
spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: a, labels: {service.kubernetes.io/service-proxy-name: mine}}
spec: {clusterIP: 10.0.0.9, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.0.0.2, ports: [{port: 80}]}
"#);
        assert_eq!(i.proxy_configs.len(), 1);
        assert_eq!(i.state.services.len(), 1);
        assert_eq!(i.state.services[0].cluster_ips[0].to_string(), "10.0.0.9");
        assert_eq!(
            i.warnings,
            [
                "f.yaml: Service default/a: duplicate; the later one wins",
                "f.yaml: ignoring Service default/b: no service.kubernetes.io/service-proxy-name label matching serviceProxyName",
            ]
        );
    }
}
