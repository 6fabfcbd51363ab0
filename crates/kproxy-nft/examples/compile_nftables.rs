//! Compiles a NodePort Service with two endpoints into the transaction
//! kube-proxy's nftables mode writes on its first sync (`nft -f -` input),
//! and prints it.
//!
//! `cargo run -p kproxy-nft --example compile_nftables`

use kproxy_core::model::ServiceType;
use kproxy_core::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, IpFamily, NodeConfig, Protocol, Service,
    ServicePort,
};
use kproxy_nft::{Options, compile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut svc = Service::cluster_ip("default", "web", "10.96.0.10".parse()?)
        .with_port(ServicePort::new("http", Protocol::Tcp, 80).with_node_port(30080));
    svc.service_type = ServiceType::NodePort;
    let slice = EndpointSlice::new("default", "web-1", "web", IpFamily::V4)
        .with_port(EndpointPort::new("http", Protocol::Tcp, 8080))
        .with_endpoint(Endpoint::ready("10.244.0.5".parse()?).on_node("node-1"))
        .with_endpoint(Endpoint::ready("10.244.1.7".parse()?).on_node("node-2"));
    let state = ClusterState {
        services: vec![svc],
        endpoint_slices: vec![slice],
    };
    let node = NodeConfig::new(IpFamily::V4, "node-1");
    print!("{}", compile(&state, &node, Options::default())?);
    Ok(())
}
