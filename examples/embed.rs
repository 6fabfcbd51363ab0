//! Embedding kproxy: build a Service and its endpoints by hand (no
//! Kubernetes types, no cluster), plan them for one node and print the
//! iptables-restore payload kube-proxy would write.
//!
//! `cargo run -p kproxy-iptables --example embed`

use kproxy_core::model::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, IpFamily, LocalDetector, NodeConfig,
    Protocol, Service, ServicePort, ServiceType,
};
use kproxy_core::plan::plan;

fn main() {
    // A NodePort Service with two ready pods, one of them on this node.
    let mut svc = Service::cluster_ip("default", "hostnames", "10.79.245.174".parse().unwrap())
        .with_port(ServicePort::new("", Protocol::Tcp, 80).with_node_port(31358));
    svc.service_type = ServiceType::NodePort;
    let slice = EndpointSlice::new("default", "hostnames-x7k2p", "hostnames", IpFamily::V4)
        .with_port(EndpointPort::new("", Protocol::Tcp, 9376))
        .with_endpoint(Endpoint::ready("10.76.0.9".parse().unwrap()).on_node("node-a"))
        .with_endpoint(Endpoint::ready("10.76.1.4".parse().unwrap()).on_node("node-b"));
    let state = ClusterState {
        services: vec![svc],
        endpoint_slices: vec![slice],
    };

    // The node: its name decides which endpoints are local; pod traffic is
    // recognised by the cluster CIDR (kube-proxy's --cluster-cidr).
    let mut node = NodeConfig::new(IpFamily::V4, "node-a");
    node.local_detector = LocalDetector::Cidr("10.76.0.0/14".parse().unwrap());

    // Every Kubernetes decision is in the plan ...
    let plan = plan(&state, &node);
    let sp = &plan.service_ports[0];
    eprintln!(
        "{}: {} cluster endpoints, internal traffic {:?}",
        sp.name,
        sp.cluster_endpoints.len(),
        sp.internal
    );
    // ... and the backend only spells it.
    match kproxy_iptables::render(&plan, kproxy_iptables::Options::default()) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
