//! kube-proxy's own, intended differences between its iptables and
//! nftables modes, as the packet tracer sees them: recognised from the
//! [`Plan`] and the two outcome [`Summary`]s, and asserted exactly (a pair
//! of outcomes that is not one of them is a backend bug).
//!
//! Shared by `tests/trace_differential.rs` (random states and packets) and
//! `tests/equivalence.rs` (every packet class of fixed states).
//!
//! Not classified here: localhost node ports (iptables only) and the
//! Service-CIDR drop for unallocated cluster IPs (nftables only); the tests
//! configure them away.

use kproxy_core::plan::{Disposition, NodePortDestinations, Plan, ServicePortPlan};
use kproxy_core::trace::{OutcomeKind, Packet, PacketOrigin, Ratio, Trace};

/// The outcomes of a trace, as compared: kind, exact probability,
/// masqueraded.
pub type Summary = Vec<(OutcomeKind, Option<Ratio>, bool)>;

/// The [`Summary`] of a trace.
pub fn summary(t: &Trace) -> Summary {
    t.outcomes
        .iter()
        .map(|o| (o.kind.clone(), o.probability.exact, o.masqueraded))
        .collect()
}

/// Whether `s` is the single, unmasqueraded outcome `kind`.
pub fn only(s: &Summary, kind: OutcomeKind) -> bool {
    matches!(s.as_slice(), [(k, _, false)] if *k == kind)
}

/// kube-proxy's own differences between its modes, recognised from the
/// plan; `None` when the pair of outcomes (`ipt` from iptables mode, `nft`
/// from nftables mode) is not one of them.
pub fn known_difference(
    plan: &Plan,
    p: &Packet,
    ipt: &Summary,
    nft: &Summary,
) -> Option<&'static str> {
    let serves = |sp: &ServicePortPlan| sp.name.protocol == p.protocol;
    // nftables' cluster-ips-check rejects traffic to a cluster IP on a port
    // it does not serve; iptables lets it through.
    let is_cluster_ip = plan.service_ports.iter().any(|sp| sp.cluster_ip == p.dst);
    let served = plan
        .service_ports
        .iter()
        .any(|sp| serves(sp) && sp.cluster_ip == p.dst && sp.port == p.dst_port);
    if is_cluster_ip
        && !served
        && only(ipt, OutcomeKind::Unchanged)
        && only(nft, OutcomeKind::Reject)
    {
        return Some("unserved cluster IP port: nftables rejects");
    }
    // nftables filters LB source ranges even without endpoints (drop);
    // iptables only has the firewall with endpoints, so it rejects.
    let unfirewalled = plan.service_ports.iter().any(|sp| {
        serves(sp)
            && sp.port == p.dst_port
            && sp.load_balancer_ips.contains(&p.dst)
            && sp.lb_source_filter.filters()
            && !sp.has_endpoints
    });
    // (From the node itself, iptables lets it through: see below.)
    let ipt_without_firewall = only(ipt, OutcomeKind::Reject)
        || (p.origin == PacketOrigin::Node && only(ipt, OutcomeKind::Unchanged));
    if unfirewalled && ipt_without_firewall && only(nft, OutcomeKind::Drop) {
        return Some("source-range filter without endpoints: nftables drops first");
    }
    // iptables blocks external IP and LB IP traffic with nowhere to go in
    // KUBE-EXTERNAL-SERVICES, hooked on INPUT and FORWARD only; nftables'
    // service-endpoints-check also runs in filter-output, for the node's own
    // traffic.
    let external_block = plan.service_ports.iter().find_map(|sp| {
        let front = sp.external_ips.contains(&p.dst) || sp.load_balancer_ips.contains(&p.dst);
        if !serves(sp) || sp.port != p.dst_port || !front {
            return None;
        }
        match sp.external {
            Disposition::Reject => Some(OutcomeKind::Reject),
            Disposition::Drop => Some(OutcomeKind::Drop),
            Disposition::Forward(_) => None,
        }
    });
    if let Some(kind) = external_block
        && p.origin == PacketOrigin::Node
        && only(ipt, OutcomeKind::Unchanged)
        && only(nft, kind)
    {
        return Some("node's own traffic to an external IP with nowhere to go: nftables blocks");
    }
    // iptables rejects (or, for the Local policy, drops) node port traffic
    // with nowhere to go on every local address (`-m addrtype --dst-type
    // LOCAL`); nftables only on the node port addresses.
    let np_addr = match &plan.node.node_ports {
        NodePortDestinations::AllLocal { .. } => true,
        NodePortDestinations::Addresses(a) => a.contains(&p.dst),
    };
    let blocked = plan.service_ports.iter().find_map(|sp| {
        if !serves(sp) || sp.node_port != Some(p.dst_port) {
            return None;
        }
        match sp.external {
            Disposition::Reject => Some(OutcomeKind::Reject),
            Disposition::Drop => Some(OutcomeKind::Drop),
            Disposition::Forward(_) => None,
        }
    });
    if let Some(kind) = blocked
        && !np_addr
        && only(ipt, kind)
        && only(nft, OutcomeKind::Unchanged)
    {
        return Some("node port with nowhere to go, on another local address: iptables blocks");
    }
    None
}

/// [`known_difference`], and the by-design differences of packet classes
/// that `trace_differential.rs` does not generate but the exhaustive
/// classes of [`kproxy_core::equivalence::packet_classes`] reach:
///
/// * node ports with nowhere to go, sent to a loopback address while
///   localhost node ports are off: iptables' `KUBE-EXTERNAL-SERVICES`
///   matches `-m addrtype --dst-type LOCAL`, loopback included, and blocks;
///   nftables' `nodeport-endpoints-check` skips the loopback network
///   (`ip daddr != 127.0.0.0/8`), so the packet passes unchanged;
/// * hairpin through an endpoint on another node (the packet's source is
///   that endpoint): iptables masquerades in every `KUBE-SEP-…` chain
///   (`-s EP -j KUBE-MARK-MASQ`), nftables (1.36+) only for local
///   endpoints (the `hairpin-connections` set).
pub fn known_class_difference(
    plan: &Plan,
    p: &Packet,
    ipt: &Summary,
    nft: &Summary,
) -> Option<&'static str> {
    if let Some(why) = known_difference(plan, p, ipt, nft) {
        return Some(why);
    }
    // Loopback node ports.
    let loopback = match &plan.node.node_ports {
        NodePortDestinations::AllLocal { exclude: Some(net) } => net.contains(&p.dst),
        _ => false,
    };
    let blocked = plan.service_ports.iter().find_map(|sp| {
        if sp.name.protocol != p.protocol || sp.node_port != Some(p.dst_port) {
            return None;
        }
        match sp.external {
            Disposition::Reject => Some(OutcomeKind::Reject),
            Disposition::Drop => Some(OutcomeKind::Drop),
            Disposition::Forward(_) => None,
        }
    });
    if let Some(kind) = blocked
        && loopback
        && only(ipt, kind)
        && only(nft, OutcomeKind::Unchanged)
    {
        return Some("node port with nowhere to go, on a loopback address: iptables blocks");
    }
    // Hairpin through a remote endpoint: the same outcomes, but iptables
    // masquerades the one back to the source.
    let local = |ip| {
        plan.service_ports
            .iter()
            .flat_map(|sp| sp.reachable_endpoints.iter())
            .any(|e| e.ip == ip && e.is_local)
    };
    let mut hairpin = false;
    let same_but_hairpin = ipt.len() == nft.len()
        && ipt.iter().zip(nft).all(|(i, n)| {
            if i == n {
                return true;
            }
            let back_to_source = matches!(i.0, OutcomeKind::Endpoint(ep) if ep.ip() == p.src);
            let only_masq = i.0 == n.0 && i.1 == n.1 && i.2 && !n.2;
            hairpin |= only_masq && back_to_source;
            only_masq && back_to_source && !local(p.src)
        });
    if same_but_hairpin && hairpin {
        return Some("hairpin through an endpoint on another node: iptables masquerades");
    }
    None
}

/// [`known_class_difference`] over the two traces of a packet (iptables
/// mode's first): the shape of
/// [`kproxy_core::equivalence::compare_with`]'s callback.
pub fn known_trace_difference(
    plan: &Plan,
    p: &Packet,
    ipt: &Trace,
    nft: &Trace,
) -> Option<&'static str> {
    known_class_difference(plan, p, &summary(ipt), &summary(nft))
}
