//! UDP conntrack cleanup, as kube-proxy does after a sync with the
//! `conntrack` tool: conntrack entries outlive rule changes, so a UDP flow
//! keeps going to an endpoint that is gone, or keeps being black-holed
//! after its Service gained an endpoint, until its entry is deleted.
//!
//! * A UDP service port that gains its first endpoint: the entries of its
//!   front ends (cluster IP, external IPs, LB IPs: `--orig-dst IP --dport
//!   PORT`; the node port: `--dport NODEPORT`) are deleted.
//! * An endpoint removed from a UDP service port (or the port removed): the
//!   entries DNATed to it from each front end are deleted (`--orig-dst IP
//!   --dst-nat EP`; node port: `--dport NODEPORT --dst-nat EP`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{IpFamily, Protocol};
use crate::plan::{Plan, ServicePortPlan};

/// One UDP service port, as far as conntrack cleanup cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UdpPort {
    /// Front ends: (address, port).
    pub frontends: Vec<(IpAddr, u16)>,
    /// The node port.
    pub node_port: Option<u16>,
    /// Endpoint addresses that receive traffic from this node.
    pub endpoints: BTreeSet<IpAddr>,
}

/// The UDP service ports of one family, by service port name.
pub type UdpState = BTreeMap<String, UdpPort>;

/// The UDP service ports of a plan.
pub fn udp_state(plan: &Plan) -> UdpState {
    udp_state_of(&plan.service_ports)
}

/// The UDP service ports among `service_ports`.
pub fn udp_state_of<'a>(service_ports: impl IntoIterator<Item = &'a ServicePortPlan>) -> UdpState {
    let mut out = UdpState::new();
    for sp in service_ports {
        if sp.name.protocol != Protocol::Udp {
            continue;
        }
        let mut frontends = vec![(sp.cluster_ip, sp.port)];
        frontends.extend(sp.external_ips.iter().map(|ip| (*ip, sp.port)));
        frontends.extend(sp.load_balancer_ips.iter().map(|ip| (*ip, sp.port)));
        out.insert(
            sp.name.to_string(),
            UdpPort {
                frontends,
                node_port: sp.node_port,
                endpoints: sp.reachable_endpoints.iter().map(|e| e.ip).collect(),
            },
        );
    }
    out
}

fn family_arg(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

/// The `conntrack` argument lists that clean up after going from `last`
/// to `next` (deduplicated, in a stable order).
pub fn cleanup_commands(family: IpFamily, last: &UdpState, next: &UdpState) -> Vec<Vec<String>> {
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    // `conntrack -D -p udp -f FAMILY ARGS`.
    let mut delete = |args: &[String]| {
        let mut cmd: Vec<String> = ["-D", "-p", "udp", "-f", family_arg(family)]
            .iter()
            .map(|x| x.to_string())
            .collect();
        cmd.extend_from_slice(args);
        out.insert(cmd);
    };
    let words = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    for (name, n) in next {
        let had = last.get(name).is_some_and(|l| !l.endpoints.is_empty());
        if !had && !n.endpoints.is_empty() {
            for (ip, port) in &n.frontends {
                delete(&words(&[
                    "--orig-dst",
                    &ip.to_string(),
                    "--dport",
                    &port.to_string(),
                ]));
            }
            if let Some(np) = n.node_port {
                delete(&words(&["--dport", &np.to_string()]));
            }
        }
    }
    for (name, l) in last {
        let now: BTreeSet<IpAddr> = next
            .get(name)
            .map(|n| n.endpoints.clone())
            .unwrap_or_default();
        for ep in l.endpoints.difference(&now) {
            let ep = ep.to_string();
            for (ip, _) in &l.frontends {
                delete(&words(&["--orig-dst", &ip.to_string(), "--dst-nat", &ep]));
            }
            if let Some(np) = l.node_port {
                delete(&words(&["--dport", &np.to_string(), "--dst-nat", &ep]));
            }
        }
    }
    out.into_iter().collect()
}

/// Whether a failed `conntrack -D` only found nothing to delete.
pub fn nothing_deleted(message: &str) -> bool {
    message.contains("0 flow entries have been deleted")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(eps: &[&str]) -> UdpPort {
        UdpPort {
            frontends: vec![("10.96.0.10".parse().unwrap(), 53)],
            node_port: Some(30053),
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn first_endpoint_and_removed_endpoints() {
        let mut last = UdpState::new();
        last.insert("ns/dns:dns".into(), port(&[]));
        let mut next = UdpState::new();
        next.insert("ns/dns:dns".into(), port(&["10.0.0.1"]));
        let cmds = cleanup_commands(IpFamily::V4, &last, &next);
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            text,
            vec![
                "-D -p udp -f ipv4 --dport 30053",
                "-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dport 53",
            ]
        );
        let cmds = cleanup_commands(IpFamily::V4, &next, &last);
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            text,
            vec![
                "-D -p udp -f ipv4 --dport 30053 --dst-nat 10.0.0.1",
                "-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dst-nat 10.0.0.1",
            ]
        );
        assert!(cleanup_commands(IpFamily::V4, &next, &next).is_empty());
    }
}
