//! Deterministic synthetic cluster states, for benchmarks and load tests.
//!
//! ```
//! use kproxy_core::synthetic::cluster;
//! let state = cluster(100, 10);
//! assert_eq!(state.services.len(), 100);
//! assert_eq!(state.endpoint_slices[0].endpoints.len(), 10);
//! ```

use std::net::{IpAddr, Ipv4Addr};

use crate::model::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, IpFamily, IpMode, LoadBalancerIngress,
    Protocol, Service, ServicePort, ServiceType, TrafficPolicy,
};

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// `services` Services with `endpoints` endpoints each, on 20 nodes
/// (`node-0` .. `node-19`). A mix like a real cluster's: every third is a
/// NodePort, every tenth a LoadBalancer (every other one of those with
/// source ranges, eTP Local), every seventh has ClientIP affinity, every
/// fifth has a UDP port too.
pub fn cluster(services: u32, endpoints: u32) -> ClusterState {
    let mut state = ClusterState::default();
    let base_cluster_ip = u32::from(Ipv4Addr::new(172, 16, 0, 0));
    let base_pod_ip = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let mut pod = 0u32;
    for i in 0..services {
        let name = format!("svc{i}");
        let ns = format!("ns{}", i % 50);
        let mut svc = Service::cluster_ip(&ns, &name, v4(base_cluster_ip + i + 1))
            .with_port(ServicePort::new("http", Protocol::Tcp, 80));
        if i % 5 == 0 {
            svc = svc.with_port(ServicePort::new("dns", Protocol::Udp, 53));
        }
        if i % 3 == 0 {
            svc.service_type = ServiceType::NodePort;
            for (k, p) in svc.ports.iter_mut().enumerate() {
                p.node_port = Some(30000 + ((i * 2 + k as u32) % 2768) as u16);
            }
        }
        if i % 10 == 0 {
            svc.service_type = ServiceType::LoadBalancer;
            svc.load_balancer_ingress.push(LoadBalancerIngress {
                ip: v4(u32::from(Ipv4Addr::new(203, 0, 0, 0)) + i),
                ip_mode: IpMode::Vip,
            });
            if i % 20 == 0 {
                svc.load_balancer_source_ranges
                    .push("198.51.100.0/24".parse().expect("constant"));
                svc.external_traffic_policy = TrafficPolicy::Local;
                svc.health_check_node_port = 32000 + (i % 700) as u16;
            }
        }
        if i % 7 == 0 {
            svc.session_affinity_timeout = Some(10800);
        }
        let mut slice = EndpointSlice::new(&ns, &format!("{name}-abcde"), &name, IpFamily::V4);
        for p in &svc.ports {
            slice = slice.with_port(EndpointPort::new(&p.name, p.protocol, 8000 + p.port));
        }
        for _ in 0..endpoints {
            pod += 1;
            slice = slice.with_endpoint(
                Endpoint::ready(v4(base_pod_ip + pod)).on_node(format!("node-{}", pod % 20)),
            );
        }
        state.services.push(svc);
        state.endpoint_slices.push(slice);
    }
    state
}

/// The manifests of [`cluster`]`(services, endpoints)` as one JSON `kind:
/// List` (what `kubectl get svc,endpointslices -A -o json` prints, without
/// the metadata kproxy does not read), for load tests of reading,
/// compiling and diffing at a real node's scale. Reading it gives the
/// cluster back.
///
/// ```
/// use kproxy_core::convert::{inventory, parse_documents};
/// let text = kproxy_core::synthetic::manifests(30, 2);
/// let objects = parse_documents(&text, "list.json").unwrap();
/// let inv = inventory(objects.into_iter().map(|o| ("list.json".to_string(), o)));
/// assert_eq!(inv.state.services.len(), 30);
/// assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
/// ```
pub fn manifests(services: u32, endpoints: u32) -> String {
    use serde_json::{Value, json};
    let state = cluster(services, endpoints);
    let proto = |p: Protocol| match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    };
    let policy = |p: TrafficPolicy| match p {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    };
    let mut items: Vec<Value> = Vec::with_capacity(state.services.len() * 2);
    for (svc, slice) in state.services.iter().zip(&state.endpoint_slices) {
        let ports: Vec<Value> = svc
            .ports
            .iter()
            .map(|p| {
                let mut v = json!({
                    "name": p.name, "port": p.port, "protocol": proto(p.protocol),
                    "targetPort": 8000 + p.port,
                });
                if let Some(np) = p.node_port {
                    v["nodePort"] = json!(np);
                }
                v
            })
            .collect();
        let service_type = match svc.service_type {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        };
        let ips: Vec<String> = svc.cluster_ips.iter().map(ToString::to_string).collect();
        let mut spec = json!({
            "clusterIP": ips.first(), "clusterIPs": ips, "ports": ports, "type": service_type,
            "internalTrafficPolicy": policy(svc.internal_traffic_policy),
            "selector": {"app": svc.id.name},
            "sessionAffinity": if svc.session_affinity_timeout.is_some() { "ClientIP" } else { "None" },
        });
        if svc.service_type != ServiceType::ClusterIp {
            spec["externalTrafficPolicy"] = json!(policy(svc.external_traffic_policy));
        }
        if let Some(t) = svc.session_affinity_timeout {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": t}});
        }
        if svc.health_check_node_port != 0 {
            spec["healthCheckNodePort"] = json!(svc.health_check_node_port);
        }
        if !svc.load_balancer_source_ranges.is_empty() {
            let ranges: Vec<String> = svc
                .load_balancer_source_ranges
                .iter()
                .map(ToString::to_string)
                .collect();
            spec["loadBalancerSourceRanges"] = json!(ranges);
        }
        let ingress: Vec<Value> = svc
            .load_balancer_ingress
            .iter()
            .map(|i| {
                let mode = match i.ip_mode {
                    IpMode::Vip => "VIP",
                    IpMode::Proxy => "Proxy",
                };
                json!({"ip": i.ip.to_string(), "ipMode": mode})
            })
            .collect();
        items.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc.id.name, "namespace": svc.id.namespace},
            "spec": spec,
            "status": {"loadBalancer": if ingress.is_empty() { json!({}) } else { json!({"ingress": ingress}) }},
        }));
        let eps: Vec<Value> = slice
            .endpoints
            .iter()
            .map(|e| {
                json!({
                    "addresses": [e.address.to_string()],
                    "conditions": {"ready": e.conditions.ready, "serving": e.conditions.serving,
                                   "terminating": e.conditions.terminating},
                    "nodeName": e.node_name,
                })
            })
            .collect();
        let slice_ports: Vec<Value> = slice
            .ports
            .iter()
            .map(|p| json!({"name": p.name, "port": p.port, "protocol": proto(p.protocol)}))
            .collect();
        items.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice.id.name, "namespace": slice.id.namespace,
                         "labels": {"kubernetes.io/service-name": slice.service_name}},
            "addressType": "IPv4", "endpoints": eps, "ports": slice_ports,
        }));
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{inventory, parse_documents};

    #[test]
    fn manifests_read_back_as_the_cluster() {
        let text = manifests(300, 4);
        let objects = parse_documents(&text, "l.json").expect("parses");
        let inv = inventory(objects.into_iter().map(|o| ("l.json".to_string(), o)));
        assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
        let mut want = cluster(300, 4);
        want.services.sort_by(|a, b| a.id.cmp(&b.id));
        want.endpoint_slices.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(inv.state.services, want.services);
        assert_eq!(inv.state.endpoint_slices, want.endpoint_slices);
    }
}
