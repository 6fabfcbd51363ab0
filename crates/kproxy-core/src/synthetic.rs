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
