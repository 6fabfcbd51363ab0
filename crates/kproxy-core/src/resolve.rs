//! The effective node configuration: kube-proxy's settings (from its
//! configuration file or flags, [`ProxySettings`]), the Node object and
//! ServiceCIDRs of the input, and the node's own facts, resolved with
//! kube-proxy's precedence into one [`NodeConfig`] per IP family (primary
//! first).
//!
//! Precedence is kube-proxy's: the node name is `hostnameOverride` (given
//! by flag or file), else the one Node of the input; the primary IP is
//! `bindAddress` (`nodeIPOverride`), else the Node's, else the node's first
//! non-loopback address; the primary family is that IP's; the local
//! detector follows `detectLocalMode`; `nodePortAddresses: primary` is the
//! primary IP of each family. Reading the file and parsing flags is the
//! embedder's (`kproxy` does it in its `settings` module).
//!
//! ```
//! use kproxy_core::config::ProxySettings;
//! use kproxy_core::convert::Inventory;
//! use kproxy_core::model::IpFamily;
//! use kproxy_core::resolve::{NodeInputs, resolve};
//!
//! let facts = NodeInputs {
//!     hostname_override: Some("Node-1".into()),
//!     node_addresses: vec!["fd00::5".parse().unwrap(), "192.0.2.5".parse().unwrap()],
//!     families: None,
//!     ..NodeInputs::default()
//! };
//! let r = resolve(&ProxySettings::default(), &facts, &Inventory::default()).unwrap();
//! assert_eq!(r.nodes.len(), 1);
//! assert_eq!(r.nodes[0].node_name, "node-1");
//! assert_eq!(r.nodes[0].family, IpFamily::V6, "the first address's family");
//! assert_eq!(r.nodes[0].node_ip, Some("fd00::5".parse().unwrap()));
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{DetectLocalMode, NodePortAddresses, ProxyMode, ProxySettings};
use crate::convert::Inventory;
use crate::model::{HostFeatures, IpFamily, LocalDetector, NodeConfig};

/// The feature gate that enables localhost NodePort handling in nftables mode.
pub const NFT_LOCALHOST_NODEPORTS_GATE: &str = "KubeProxyNFTablesLocalhostNodePorts";

/// What the embedder knows of the node besides kube-proxy's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInputs {
    /// `--hostname-override` (a flag: it wins over the file's).
    pub hostname_override: Option<String>,
    /// The node's interface addresses (else the Node object's).
    pub node_addresses: Vec<IpAddr>,
    /// Which families: `None` the primary one, `Some(None)` both (primary
    /// first), `Some(Some(f))` only `f`.
    pub families: Option<Option<IpFamily>>,
    /// What the host supports (`conntrack_tcp_be_liberal` is replaced by
    /// [`Self::conntrack_tcp_be_liberal`] or the settings').
    pub host: HostFeatures,
    /// `nf_conntrack_tcp_be_liberal` as known (else the settings').
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// Service CIDRs given besides the input's ServiceCIDRs.
    pub service_cidrs: Vec<IpNet>,
}

/// The resolved node configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Resolved {
    /// One per family to compile, primary first.
    pub nodes: Vec<NodeConfig>,
    /// The proxy mode.
    pub mode: ProxyMode,
    /// Notes for the log.
    pub warnings: Vec<String>,
}

/// Why the settings cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// `masqueradeBit` above 31.
    #[error("masqueradeBit {0} is out of range 0-31")]
    MasqueradeBit(u8),
    /// `detectLocalMode: BridgeInterface` without an interface.
    #[error("detect-local-mode BridgeInterface needs --pod-bridge-interface")]
    NoBridgeInterface,
    /// `detectLocalMode: InterfaceNamePrefix` without a prefix.
    #[error("detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix")]
    NoInterfaceNamePrefix,
}

/// Resolves the node configuration of every family to compile (see the
/// [module documentation](self)).
pub fn resolve(
    settings: &ProxySettings,
    facts: &NodeInputs,
    inv: &Inventory,
) -> Result<Resolved, ResolveError> {
    let mut warnings = Vec::new();
    if settings.masquerade_bit > 31 {
        return Err(ResolveError::MasqueradeBit(settings.masquerade_bit));
    }
    let node_name = match (&facts.hostname_override, &settings.hostname_override) {
        (Some(h), _) | (None, Some(h)) => h.trim().to_lowercase(),
        (None, None) => match inv.nodes.as_slice() {
            [one] => one.name.clone(),
            _ => {
                warnings
                    .push("no node name (--hostname-override): no endpoint counts as local".into());
                String::new()
            }
        },
    };
    let node = inv.nodes.iter().find(|n| n.name == node_name);
    let mut interface_addrs = facts.node_addresses.clone();
    if let (true, Some(n)) = (interface_addrs.is_empty(), node) {
        interface_addrs = n.addresses.iter().map(|a| a.ip).collect();
    }
    let primary_ip = |family: IpFamily| -> Option<IpAddr> {
        settings
            .node_ip_override
            .iter()
            .copied()
            .find(|ip| family.contains(ip))
            .or_else(|| node.and_then(|n| n.primary_ip(family)))
            .or_else(|| {
                interface_addrs
                    .iter()
                    .copied()
                    .find(|ip| family.contains(ip) && !ip.is_loopback())
            })
    };
    let primary_family = settings
        .node_ip_override
        .first()
        .copied()
        .or_else(|| node.and_then(|n| n.primary_ip(IpFamily::V4).or(n.primary_ip(IpFamily::V6))))
        .or_else(|| interface_addrs.iter().copied().find(|ip| !ip.is_loopback()))
        .map(|ip| IpFamily::of(&ip))
        .unwrap_or(IpFamily::V4);
    let families = match facts.families {
        Some(Some(f)) => vec![f],
        Some(None) => {
            let other = match primary_family {
                IpFamily::V4 => IpFamily::V6,
                IpFamily::V6 => IpFamily::V4,
            };
            vec![primary_family, other]
        }
        None => vec![primary_family],
    };
    let mut host = facts.host;
    host.conntrack_tcp_be_liberal = facts
        .conntrack_tcp_be_liberal
        .unwrap_or(settings.conntrack.tcp_be_liberal);
    let zone = node.and_then(|n| n.zone().map(str::to_string));
    let mut service_cidrs = facts.service_cidrs.clone();
    for c in &inv.service_cidrs {
        if !service_cidrs.contains(c) {
            service_cidrs.push(*c);
        }
    }
    let nft_localhost = settings
        .feature_gates
        .get(NFT_LOCALHOST_NODEPORTS_GATE)
        .copied()
        .unwrap_or(false);
    let mut nodes = Vec::new();
    for family in families {
        let local_detector = local_detector(settings, node, family, &mut warnings)?;
        let node_port_addresses = match &settings.node_port_addresses {
            NodePortAddresses::All => Vec::new(),
            NodePortAddresses::Primary => [IpFamily::V4, IpFamily::V6]
                .into_iter()
                .filter_map(&primary_ip)
                .map(IpNet::from)
                .collect(),
            NodePortAddresses::Cidrs(c) => c.clone(),
        };
        let mut cfg = NodeConfig::new(family, node_name.clone());
        cfg.zone = zone.clone();
        cfg.node_ip = primary_ip(family);
        cfg.masquerade_bit = settings.masquerade_bit;
        cfg.masquerade_all = settings.masquerade_all;
        cfg.local_detector = local_detector;
        cfg.node_port_addresses = node_port_addresses;
        cfg.node_addresses = interface_addrs.clone();
        cfg.localhost_node_ports = settings.localhost_node_ports;
        cfg.nftables_localhost_node_ports = nft_localhost;
        cfg.service_cidrs = service_cidrs.clone();
        cfg.host = host;
        nodes.push(cfg);
    }
    Ok(Resolved {
        nodes,
        mode: settings.mode.clone(),
        warnings,
    })
}

fn local_detector(
    s: &ProxySettings,
    node: Option<&crate::convert::NodeFacts>,
    family: IpFamily,
    warnings: &mut Vec<String>,
) -> Result<LocalDetector, ResolveError> {
    Ok(match &s.detect_local_mode {
        DetectLocalMode::ClusterCidr => s
            .cluster_cidrs
            .iter()
            .copied()
            .find(|c| family.contains_net(c))
            .map(LocalDetector::Cidr)
            .unwrap_or(LocalDetector::None),
        DetectLocalMode::NodeCidr => match node {
            Some(n) => n
                .pod_cidrs
                .iter()
                .copied()
                .find(|c| family.contains_net(c))
                .map(|c| LocalDetector::Cidr(c.trunc()))
                .unwrap_or(LocalDetector::None),
            None => {
                warnings.push(
                    "detect-local-mode NodeCIDR needs the Node object in the input: no local detector".into(),
                );
                LocalDetector::None
            }
        },
        DetectLocalMode::BridgeInterface => match s.bridge_interface.as_deref() {
            Some(b) if !b.is_empty() => LocalDetector::BridgeInterface(b.to_string()),
            _ => return Err(ResolveError::NoBridgeInterface),
        },
        DetectLocalMode::InterfaceNamePrefix => match s.interface_name_prefix.as_deref() {
            Some(p) if !p.is_empty() => LocalDetector::InterfaceNamePrefix(p.to_string()),
            _ => return Err(ResolveError::NoInterfaceNamePrefix),
        },
        DetectLocalMode::Other(m) => {
            warnings.push(format!(
                "detect-local-mode {m:?} is unknown: no local detector"
            ));
            LocalDetector::None
        }
    })
}
