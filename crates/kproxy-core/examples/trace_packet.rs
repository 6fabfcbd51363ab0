//! Plans a Service, lowers its plan to a few rules of IR by hand (what a
//! backend of your own would do), and traces a packet through them.
//!
//! `cargo run -p kproxy-core --example trace_packet`

use kproxy_core::ir::{
    AddrMatch, Chain, Direction, Hook, Match, Rule, Table, TableFamily, Verdict,
};
use kproxy_core::trace::{PacketOrigin, trace};
use kproxy_core::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, IpFamily, NodeConfig, Packet, Protocol,
    Ruleset, Service, ServicePort, TraceEnv, plan,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let svc = Service::cluster_ip("default", "web", "10.96.0.10".parse()?)
        .with_port(ServicePort::new("http", Protocol::Tcp, 80));
    let mut slice = EndpointSlice::new("default", "web-1", "web", IpFamily::V4)
        .with_port(EndpointPort::new("http", Protocol::Tcp, 8080));
    for ip in ["10.244.0.5", "10.244.1.7", "10.244.2.3"] {
        slice = slice.with_endpoint(Endpoint::ready(ip.parse()?));
    }
    let state = ClusterState {
        services: vec![svc],
        endpoint_slices: vec![slice],
    };
    let plan = plan(&state, &NodeConfig::new(IpFamily::V4, "node-1"));

    // A minimal backend: one chain per service port, one DNAT per endpoint,
    // each taken with probability 1/(endpoints left), as kube-proxy does.
    let mut prerouting = Chain::builtin(Hook::Prerouting);
    let mut chains = Vec::new();
    for sp in &plan.service_ports {
        let name = format!("SVC-{}", sp.name);
        prerouting.push(
            Rule::new()
                .with(Match::Protocol(sp.name.protocol))
                .with(Match::Addr {
                    dir: Direction::Dst,
                    addr: AddrMatch::Ip(sp.cluster_ip),
                    negate: false,
                })
                .with(Match::DstPort(sp.port))
                .verdict(Verdict::Jump(name.as_str().into())),
        );
        let mut chain = Chain::new(name.as_str());
        let n = sp.cluster_endpoints.len();
        for (i, ep) in sp.cluster_endpoints.iter().enumerate() {
            let mut rule = Rule::new();
            if i + 1 < n {
                rule = rule.with(Match::Probability {
                    one_in: u32::try_from(n - i)?,
                });
            }
            chain.push(rule.verdict(Verdict::Dnat(std::net::SocketAddr::new(ep.ip, ep.port))));
        }
        chains.push(chain);
    }
    let mut nat = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
    nat.chains.push(prerouting);
    nat.chains.extend(chains);
    let ruleset = Ruleset { tables: vec![nat] };

    let packet = Packet::new(
        PacketOrigin::Pod,
        "10.244.0.9".parse()?,
        "10.96.0.10".parse()?,
        Protocol::Tcp,
        80,
    );
    let t = trace(&ruleset, &TraceEnv::default(), &packet)?;
    for outcome in &t.outcomes {
        println!("{} with probability {}", outcome.kind, outcome.probability);
    }
    Ok(())
}
