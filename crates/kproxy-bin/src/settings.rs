//! kube-proxy's node-level configuration: flags, `--config` file and the
//! Node object, resolved with kube-proxy's precedence into one
//! [`NodeConfig`] per family.
//!
//! Precedence is kube-proxy's: when a configuration file is given, it
//! replaces the configuration flags entirely (kube-proxy ignores them; so
//! do we, with a warning), except `--hostname-override`, which always wins.
//! kproxy's own offline flags (`--node-address`, `--host-features`,
//! `--ip-family`, `--conntrack-tcp-be-liberal`) always apply.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ipnet::IpNet;
use kproxy_core::config::{
    DetectLocalMode, KubeProxyConfiguration, NodePortAddresses, ProxyMode, ProxySettings,
};
use kproxy_core::convert::{Inventory, NodeFacts, Object, parse_documents, sloppy};
use kproxy_core::model::{HostFeatures, IpFamily, LocalDetector, NodeConfig};

/// The node-level options shared by every command that compiles rules.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// A KubeProxyConfiguration file (kubeproxy.config.k8s.io v1alpha1 or
    /// v1alpha2). Like kube-proxy, it replaces the configuration flags below
    /// except --hostname-override.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's name (endpoints with this nodeName are local). Default:
    /// the config's hostnameOverride, else the only Node in the input.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// kube-proxy's --bind-address; a specific address is the node's
    /// primary IP of its family.
    #[arg(long, value_name = "IP")]
    pub bind_address: Option<String>,
    /// The cluster's pod CIDRs (comma-separated, one per family).
    #[arg(long, value_name = "CIDRS")]
    pub cluster_cidr: Option<String>,
    /// ClusterCIDR | NodeCIDR | BridgeInterface | InterfaceNamePrefix.
    #[arg(long, value_name = "MODE")]
    pub detect_local_mode: Option<String>,
    /// The bridge for --detect-local-mode=BridgeInterface.
    #[arg(long, value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    /// The prefix for --detect-local-mode=InterfaceNamePrefix.
    #[arg(long, value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// Masquerade all traffic sent to cluster IPs.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub masquerade_all: Option<bool>,
    /// The bit of the packet mark that marks traffic to masquerade (0-31).
    #[arg(long, value_name = "BIT")]
    pub iptables_masquerade_bit: Option<u8>,
    /// Node port addresses: comma-separated CIDRs, or `primary`.
    #[arg(long, value_name = "CIDRS")]
    pub nodeport_addresses: Option<String>,
    /// Accept node ports on 127.0.0.0/8 (IPv4 iptables only).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub iptables_localhost_nodeports: Option<bool>,
    /// iptables | nftables.
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,
    /// A node interface address (repeatable); stands in for the addresses
    /// kube-proxy reads from the host (nodePortAddresses selects from them).
    #[arg(long = "node-address", value_name = "IP[/PREFIX]")]
    pub node_addresses: Vec<String>,
    /// Host features kube-proxy probes at run time: comma-separated from
    /// `random-fully` (MASQUERADE --random-fully) and `nfacct`; empty for none.
    #[arg(long, value_name = "LIST", default_value = "random-fully,nfacct")]
    pub host_features: String,
    /// The nf_conntrack_tcp_be_liberal sysctl is set on the node.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// kube-proxy's --feature-gates: comma-separated NAME=BOOL (e.g.
    /// KubeProxyNFTablesLocalhostNodePorts=true).
    #[arg(long, value_name = "GATES")]
    pub feature_gates: Option<String>,
    /// A Service CIDR of the cluster (repeatable; comma-separated lists are
    /// accepted). Added to the ServiceCIDR objects of the input. nftables
    /// mode drops traffic to unallocated addresses in them.
    #[arg(long = "service-cidr", value_name = "CIDR")]
    pub service_cidrs: Vec<String>,
    /// ipv4 | ipv6 | dual (both families, as kube-proxy's two proxiers).
    /// Default: the node's primary family.
    #[arg(long, value_name = "FAMILY")]
    pub ip_family: Option<String>,
    /// The kube-proxy release whose rule layout is written: `current` (the
    /// default), `1.5`, `v1.5.2`, `1.35`, ... iptables: 1.5.x and 1.34+;
    /// nftables: 1.29-1.35 (pre-1.36 layout) and 1.36+. A flag only (not
    /// read from a configuration file).
    #[arg(long, value_name = "X.Y")]
    pub kube_proxy_version: Option<String>,
}

/// The resolved node configuration.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// One per family to compile, primary first.
    pub nodes: Vec<NodeConfig>,
    /// The proxy mode.
    pub mode: ProxyMode,
    /// Notes for stderr.
    pub warnings: Vec<String>,
}

fn parse_bool_flag_given(args: &NodeArgs) -> Vec<&'static str> {
    let mut given = Vec::new();
    macro_rules! check {
        ($field:ident, $flag:literal) => {
            if args.$field.is_some() {
                given.push($flag);
            }
        };
    }
    check!(bind_address, "--bind-address");
    check!(cluster_cidr, "--cluster-cidr");
    check!(detect_local_mode, "--detect-local-mode");
    check!(pod_bridge_interface, "--pod-bridge-interface");
    check!(pod_interface_name_prefix, "--pod-interface-name-prefix");
    check!(masquerade_all, "--masquerade-all");
    check!(iptables_masquerade_bit, "--iptables-masquerade-bit");
    check!(nodeport_addresses, "--nodeport-addresses");
    check!(
        iptables_localhost_nodeports,
        "--iptables-localhost-nodeports"
    );
    check!(proxy_mode, "--proxy-mode");
    check!(feature_gates, "--feature-gates");
    given
}

fn parse_cidrs(flag: &str, list: &str) -> Result<Vec<IpNet>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            sloppy::parse_cidr(s)
                .map(|n| n.trunc())
                .with_context(|| format!("{flag}: {s:?} is not a valid CIDR"))
        })
        .collect()
}

fn parse_detect_local_mode(s: &str) -> DetectLocalMode {
    match s {
        "" | "ClusterCIDR" => DetectLocalMode::ClusterCidr,
        "NodeCIDR" => DetectLocalMode::NodeCidr,
        "BridgeInterface" => DetectLocalMode::BridgeInterface,
        "InterfaceNamePrefix" => DetectLocalMode::InterfaceNamePrefix,
        other => DetectLocalMode::Other(other.to_string()),
    }
}

fn parse_mode(s: &str) -> Result<ProxyMode> {
    match s {
        "" | "iptables" => Ok(ProxyMode::Iptables),
        "nftables" => Ok(ProxyMode::Nftables),
        "ipvs" => Ok(ProxyMode::Ipvs),
        other => bail!("--proxy-mode: unknown mode {other:?} (iptables or nftables)"),
    }
}

/// Applies the configuration flags over kube-proxy's defaults (no file given).
fn settings_from_flags(args: &NodeArgs) -> Result<ProxySettings> {
    let mut s = ProxySettings::default();
    if let Some(b) = &args.bind_address {
        let ip = sloppy::parse_ip(b)
            .with_context(|| format!("--bind-address: {b:?} is not a valid IP address"))?;
        if !ip.is_unspecified() {
            s.node_ip_override = vec![ip];
        }
    }
    if let Some(c) = &args.cluster_cidr {
        s.cluster_cidrs = parse_cidrs("--cluster-cidr", c)?;
    }
    if let Some(m) = &args.detect_local_mode {
        s.detect_local_mode = parse_detect_local_mode(m);
    }
    if let Some(b) = &args.pod_bridge_interface {
        s.bridge_interface = Some(b.clone());
    }
    if let Some(p) = &args.pod_interface_name_prefix {
        s.interface_name_prefix = Some(p.clone());
    }
    if let Some(m) = args.masquerade_all {
        s.masquerade_all = m;
    }
    if let Some(n) = &args.nodeport_addresses {
        s.node_port_addresses = if n.trim() == "primary" {
            NodePortAddresses::Primary
        } else {
            let cidrs = parse_cidrs("--nodeport-addresses", n)?;
            if cidrs.is_empty() {
                NodePortAddresses::All
            } else {
                NodePortAddresses::Cidrs(cidrs)
            }
        };
    }
    if let Some(l) = args.iptables_localhost_nodeports {
        s.localhost_node_ports = l;
    }
    if let Some(m) = &args.proxy_mode {
        s.mode = parse_mode(m)?;
    }
    if let Some(g) = &args.feature_gates {
        s.feature_gates = parse_feature_gates(g)?;
    }
    // kube-proxy's flag sets the iptables section only; nftables mode reads
    // `nftables.masqueradeBit`, which has no flag.
    if let (Some(b), false) = (args.iptables_masquerade_bit, s.mode == ProxyMode::Nftables) {
        s.masquerade_bit = b;
    }
    Ok(s)
}

fn parse_feature_gates(list: &str) -> Result<std::collections::BTreeMap<String, bool>> {
    let mut gates = std::collections::BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .with_context(|| format!("--feature-gates: {item:?} is not NAME=BOOL"))?;
        let value: bool = value
            .trim()
            .parse()
            .with_context(|| format!("--feature-gates: {item:?} is not NAME=BOOL"))?;
        gates.insert(name.trim().to_string(), value);
    }
    Ok(gates)
}

/// The feature gate that enables localhost NodePort handling in nftables mode.
pub const NFT_LOCALHOST_NODEPORTS_GATE: &str = "KubeProxyNFTablesLocalhostNodePorts";

fn parse_host_features(list: &str) -> Result<HostFeatures> {
    let mut h = HostFeatures {
        random_fully: false,
        nfacct: false,
        conntrack_tcp_be_liberal: false,
    };
    for f in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match f {
            "random-fully" => h.random_fully = true,
            "nfacct" => h.nfacct = true,
            other => {
                bail!("--host-features: unknown feature {other:?} (known: random-fully, nfacct)")
            }
        }
    }
    Ok(h)
}

fn parse_family(s: &str) -> Result<Option<IpFamily>> {
    match s.to_ascii_lowercase().as_str() {
        "ipv4" | "4" | "v4" => Ok(Some(IpFamily::V4)),
        "ipv6" | "6" | "v6" => Ok(Some(IpFamily::V6)),
        "dual" | "both" => Ok(None),
        _ => bail!("--ip-family: {s:?} is not ipv4, ipv6 or dual"),
    }
}

/// Loads `--config`, or the one KubeProxyConfiguration found in the inputs.
fn load_config(
    args: &NodeArgs,
    inv: &Inventory,
    warnings: &mut Vec<String>,
) -> Result<Option<ProxySettings>> {
    let cfg: Option<(String, KubeProxyConfiguration)> = if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read file", path.display()))?;
        let name = path.display().to_string();
        let cfg = parse_documents(&text, &name)?
            .into_iter()
            .find_map(|o| match o {
                Object::ProxyConfig(c) => Some(*c),
                _ => None,
            })
            .with_context(|| format!("{name}: no KubeProxyConfiguration in the file"))?;
        Some((name, cfg))
    } else {
        match inv.proxy_configs.as_slice() {
            [] => None,
            [one] => Some((
                "the KubeProxyConfiguration in the input".into(),
                one.clone(),
            )),
            _ => bail!("the input holds several KubeProxyConfiguration objects; keep one"),
        }
    };
    let Some((name, cfg)) = cfg else {
        return Ok(None);
    };
    let settings = cfg
        .effective()
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    for flag in parse_bool_flag_given(args) {
        warnings.push(format!(
            "{flag} is ignored: a configuration file was given ({name}), and kube-proxy ignores configuration flags then"
        ));
    }
    Ok(Some(settings))
}

/// The effective kube-proxy settings (the configuration file's, else the
/// flags'), for the agent's sync periods and bind addresses.
pub fn proxy_settings(args: &NodeArgs, inv: &Inventory) -> Result<ProxySettings> {
    let mut warnings = Vec::new();
    match load_config(args, inv, &mut warnings)? {
        Some(s) => Ok(s),
        None => settings_from_flags(args),
    }
}

/// Resolves the node configuration of every family to compile.
pub fn resolve(args: &NodeArgs, inv: &Inventory) -> Result<Resolved> {
    let mut warnings = Vec::new();
    let settings = match load_config(args, inv, &mut warnings)? {
        Some(s) => s,
        None => settings_from_flags(args)?,
    };
    if settings.masquerade_bit > 31 {
        bail!(
            "masqueradeBit {} is out of range 0-31",
            settings.masquerade_bit
        );
    }
    let node_name = match (&args.hostname_override, &settings.hostname_override) {
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

    let mut interface_addrs: Vec<IpAddr> = Vec::new();
    for a in &args.node_addresses {
        let ip = sloppy::parse_cidr(a)
            .map(|n| n.addr())
            .or_else(|| sloppy::parse_ip(a))
            .with_context(|| format!("--node-address: {a:?} is not an IP address or CIDR"))?;
        interface_addrs.push(ip);
    }
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
    let families = match args.ip_family.as_deref().map(parse_family).transpose()? {
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

    let mut host = parse_host_features(&args.host_features)?;
    host.conntrack_tcp_be_liberal = args
        .conntrack_tcp_be_liberal
        .unwrap_or(settings.conntrack.tcp_be_liberal);
    let zone = node.and_then(|n| n.zone().map(str::to_string));
    let mut service_cidrs = parse_cidrs("--service-cidr", &args.service_cidrs.join(","))?;
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
        let node_ip = primary_ip(family);
        let local_detector = local_detector(&settings, node, family, &mut warnings)?;
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
        cfg.node_ip = node_ip;
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
    node: Option<&NodeFacts>,
    family: IpFamily,
    warnings: &mut Vec<String>,
) -> Result<LocalDetector> {
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
            _ => bail!("detect-local-mode BridgeInterface needs --pod-bridge-interface"),
        },
        DetectLocalMode::InterfaceNamePrefix => match s.interface_name_prefix.as_deref() {
            Some(p) if !p.is_empty() => LocalDetector::InterfaceNamePrefix(p.to_string()),
            _ => bail!("detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix"),
        },
        DetectLocalMode::Other(m) => {
            warnings.push(format!(
                "detect-local-mode {m:?} is unknown: no local detector"
            ));
            LocalDetector::None
        }
    })
}
