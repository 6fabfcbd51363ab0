//! The host's interface addresses, which `nodePortAddresses` selects from.
//!
//! kube-proxy matches the `nodePortAddresses` CIDRs against
//! `net.InterfaceAddrs()` (`pkg/proxy/util/nodeport_addresses.go`): every
//! address of every interface, both families, loopback and link-local
//! included. [`interface_addresses`] reads the same list with
//! `getifaddrs(3)`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kproxy_core::config::NodePortAddresses;
use tracing::{info, warn};

use crate::settings::NodeArgs;

/// The address of a socket address, if it is an IPv4 or IPv6 one.
///
/// # Safety
///
/// `sa` is null or points to a socket address as long as its family says.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null, and every socket address starts with its family.
    let family = unsafe { std::ptr::read_unaligned(sa) }.sa_family;
    match libc::c_int::from(family) {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in>()) };
            Some(IpAddr::V4(Ipv4Addr::from(
                sin.sin_addr.s_addr.to_ne_bytes(),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in6>()) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Every IPv4 and IPv6 address of every interface of the host (of the
/// network namespace), once each, in the kernel's order.
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list, which is not freed yet.
        let ifa = unsafe { &*cur };
        // SAFETY: getifaddrs' addresses are null or as long as their family says.
        if let Some(ip) = unsafe { sockaddr_ip(ifa.ifa_addr) }
            && !out.contains(&ip)
        {
            out.push(ip);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Whether the agent reads the host's addresses: none given
/// (`--node-address`), and `nodePortAddresses` selects from them (CIDRs or
/// `primary`; with every address no address is needed).
pub fn wanted(node: &NodeArgs, npa: &NodePortAddresses) -> bool {
    node.node_addresses.is_empty() && !matches!(npa, NodePortAddresses::All)
}

/// The host's addresses for `nodePortAddresses`, read before every sync,
/// as kube-proxy reads them (`GetNodeIPs` in each sync): an address added to
/// or removed from an interface reaches the rules at the next sync (the node
/// configuration changes, so that sync is full).
#[derive(Debug)]
pub struct HostAddresses {
    wanted: bool,
    last: Option<Vec<String>>,
}

impl HostAddresses {
    /// Reads the host's addresses only when [`wanted`].
    pub fn new(node: &NodeArgs, npa: &NodePortAddresses) -> Self {
        Self {
            wanted: wanted(node, npa),
            last: None,
        }
    }

    /// `node`, with the host's current interface addresses when they are
    /// wanted. A change is logged. A failure to read them is logged and
    /// keeps the last ones (none at first: the Node object's addresses stand
    /// in, as for `kproxy compile`).
    pub fn fill(&mut self, node: &NodeArgs) -> NodeArgs {
        let mut node = node.clone();
        if !self.wanted {
            return node;
        }
        match interface_addresses() {
            Ok(addrs) => {
                let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
                if self.last.as_ref() != Some(&list) {
                    info!(
                        addresses = %list.join(","),
                        "nodePortAddresses: using the host's interface addresses"
                    );
                    self.last = Some(list);
                }
            }
            Err(e) => warn!("cannot read the host's interface addresses: {e}"),
        }
        node.node_addresses = self.last.clone().unwrap_or_default();
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loopback() {
        let addrs = interface_addresses().expect("getifaddrs");
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
        let mut unique = addrs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), addrs.len(), "{addrs:?}");
    }

    #[test]
    fn fills_only_when_needed() {
        let cidrs = NodePortAddresses::Cidrs(vec!["127.0.0.0/8".parse().expect("cidr")]);
        let node = NodeArgs::default();
        let filled = HostAddresses::new(&node, &NodePortAddresses::All).fill(&node);
        assert!(filled.node_addresses.is_empty());
        let filled = HostAddresses::new(&node, &cidrs).fill(&node);
        assert!(filled.node_addresses.iter().any(|a| a == "127.0.0.1"));
        let filled = HostAddresses::new(&node, &NodePortAddresses::Primary).fill(&node);
        assert!(filled.node_addresses.iter().any(|a| a == "127.0.0.1"));
        // Given addresses stay.
        let node = NodeArgs {
            node_addresses: vec!["10.0.0.1".into()],
            ..NodeArgs::default()
        };
        let filled = HostAddresses::new(&node, &cidrs).fill(&node);
        assert_eq!(filled.node_addresses, ["10.0.0.1"]);
    }
}
