//! The input model: what the user gave, validated and normalised.
//!
//! These are plain Rust values, constructible by hand; embedders never need
//! `k8s-openapi`. The [`crate::convert`] module builds them from the
//! Kubernetes API types and reports bad fields with the object's name.
//!
//! ```
//! use kproxy_core::model::*;
//! let svc = Service::cluster_ip("default", "web", "10.96.0.10".parse().unwrap())
//!     .with_port(ServicePort::new("http", Protocol::Tcp, 80));
//! assert_eq!(svc.ports[0].port, 80);
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// An IP family. kube-proxy runs one proxier per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4 (`iptables`, `table ip`).
    V4,
    /// IPv6 (`ip6tables`, `table ip6`).
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
    /// Whether `ip` belongs to this family.
    pub fn contains(self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self
    }
    /// Whether `net` belongs to this family.
    pub fn contains_net(self, net: &IpNet) -> bool {
        IpFamily::of(&net.addr()) == self
    }
    /// The Kubernetes spelling (`IPv4` / `IPv6`).
    pub fn as_k8s(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
    /// The loopback network of the family (`127.0.0.0/8`, `::1/128`).
    pub fn loopback_net(self) -> IpNet {
        match self {
            IpFamily::V4 => "127.0.0.0/8".parse().expect("constant"),
            IpFamily::V6 => "::1/128".parse().expect("constant"),
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_k8s())
    }
}

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Protocol {
    /// TCP (the API server's default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Lower-case name, as used in rules and chain hashes (`tcp`).
    pub fn as_lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn from_k8s(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_lower())
    }
}

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl NamespacedName {
    /// Builds a namespaced name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The type of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// `ClusterIP` (the API default).
    #[default]
    ClusterIp,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
    /// `ExternalName`: never proxied.
    ExternalName,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// `Cluster` (default): any ready endpoint.
    #[default]
    Cluster,
    /// `Local`: only endpoints on this node.
    Local,
}

/// `status.loadBalancer.ingress[].ipMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpMode {
    /// `VIP` (default): traffic arrives with the LB IP as destination.
    #[default]
    Vip,
    /// `Proxy`: the load balancer proxies; kube-proxy ignores the IP.
    Proxy,
}

/// One load balancer ingress point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerIngress {
    /// The ingress IP.
    pub ip: IpAddr,
    /// How traffic to it arrives.
    pub ip_mode: IpMode,
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (`""` for an unnamed port).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
    /// The node port (`None` when not allocated).
    pub node_port: Option<u16>,
}

impl ServicePort {
    /// A port without node port.
    pub fn new(name: impl Into<String>, protocol: Protocol, port: u16) -> Self {
        Self {
            name: name.into(),
            protocol,
            port,
            node_port: None,
        }
    }
    /// Sets the node port.
    pub fn with_node_port(mut self, node_port: u16) -> Self {
        self.node_port = Some(node_port);
        self
    }
}

/// A Service, reduced to what a proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `namespace/name`.
    pub id: NamespacedName,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (parsed; at most one per family). Empty = headless.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// `spec.externalIPs` (valid ones, order kept).
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress` entries that carry an IP.
    pub load_balancer_ingress: Vec<LoadBalancerIngress>,
    /// `spec.loadBalancerSourceRanges`, masked to their network.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.healthCheckNodePort` (0 when unset).
    pub health_check_node_port: u16,
    /// ClientIP session affinity timeout in seconds; `None` without affinity.
    pub session_affinity_timeout: Option<u32>,
}

impl Service {
    /// A `ClusterIP` Service with one cluster IP and no ports.
    pub fn cluster_ip(namespace: &str, name: &str, ip: IpAddr) -> Self {
        Self {
            id: NamespacedName::new(namespace, name),
            service_type: ServiceType::ClusterIp,
            cluster_ips: vec![ip],
            ports: Vec::new(),
            external_ips: Vec::new(),
            load_balancer_ingress: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: 0,
            session_affinity_timeout: None,
        }
    }
    /// Adds a port.
    pub fn with_port(mut self, port: ServicePort) -> Self {
        self.ports.push(port);
        self
    }
    /// The cluster IP of `family`, if the Service has one.
    pub fn cluster_ip_of(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| family.contains(ip))
    }
}

/// The conditions of an endpoint (`endpoints[].conditions`), with the API's
/// defaults applied (absent `ready`/`serving` mean true, absent
/// `terminating` means false).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointConditions {
    /// Ready to receive new traffic.
    pub ready: bool,
    /// Serving (may be terminating).
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
}

impl Default for EndpointConditions {
    fn default() -> Self {
        Self {
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// One endpoint of a slice (only the first address counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses[0]`.
    pub address: IpAddr,
    /// Conditions.
    pub conditions: EndpointConditions,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `zone` (informational; kube-proxy reads hints, not zones).
    pub zone: Option<String>,
    /// `hints.forZones[].name` (empty when the endpoint has no zone hints).
    pub zone_hints: BTreeSet<String>,
    /// `hints.forNodes[].name` (empty when the endpoint has no node hints).
    pub node_hints: BTreeSet<String>,
}

impl Endpoint {
    /// A ready endpoint with no node and no hints.
    pub fn ready(address: IpAddr) -> Self {
        Self {
            address,
            conditions: EndpointConditions::default(),
            node_name: None,
            zone: None,
            zone_hints: BTreeSet::new(),
            node_hints: BTreeSet::new(),
        }
    }
    /// Sets the node name.
    pub fn on_node(mut self, node: impl Into<String>) -> Self {
        self.node_name = Some(node.into());
        self
    }
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    /// Name (`None` when absent; unnamed ports are `Some("")`).
    pub name: Option<String>,
    /// Port number (`None` when absent).
    pub port: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
}

impl EndpointPort {
    /// A named port.
    pub fn new(name: impl Into<String>, protocol: Protocol, port: u16) -> Self {
        Self {
            name: Some(name.into()),
            port: Some(port),
            protocol,
        }
    }
}

/// An EndpointSlice's address type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressType {
    /// An IP family.
    Ip(IpFamily),
    /// `FQDN`: ignored by kube-proxy.
    Fqdn,
}

/// An EndpointSlice (discovery.k8s.io/v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The slice's own `namespace/name`.
    pub id: NamespacedName,
    /// The Service it belongs to (`kubernetes.io/service-name` label).
    pub service_name: String,
    /// `addressType`.
    pub address_type: AddressType,
    /// `ports`.
    pub ports: Vec<EndpointPort>,
    /// `endpoints`.
    pub endpoints: Vec<Endpoint>,
}

impl EndpointSlice {
    /// An empty slice of `service` in `namespace` for `family`.
    pub fn new(namespace: &str, name: &str, service: &str, family: IpFamily) -> Self {
        Self {
            id: NamespacedName::new(namespace, name),
            service_name: service.to_string(),
            address_type: AddressType::Ip(family),
            ports: Vec::new(),
            endpoints: Vec::new(),
        }
    }
    /// Adds a port.
    pub fn with_port(mut self, port: EndpointPort) -> Self {
        self.ports.push(port);
        self
    }
    /// Adds an endpoint.
    pub fn with_endpoint(mut self, ep: Endpoint) -> Self {
        self.endpoints.push(ep);
        self
    }
    /// The Service this slice belongs to.
    pub fn service_id(&self) -> NamespacedName {
        NamespacedName::new(self.id.namespace.clone(), self.service_name.clone())
    }
}

/// Everything the cluster tells a proxy: Services and their EndpointSlices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Services (headless/ExternalName ones are kept here and ignored by the planner).
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// How kube-proxy tells pod traffic from other traffic (`--detect-local-mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDetector {
    /// No detector: nothing is known to be local.
    None,
    /// Source address in a CIDR (ClusterCIDR and NodeCIDR modes).
    Cidr(IpNet),
    /// Arrives on this bridge (BridgeInterface mode).
    BridgeInterface(String),
    /// Arrives on an interface whose name starts with this prefix.
    InterfaceNamePrefix(String),
}

/// What kube-proxy probes on the host at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFeatures {
    /// `iptables` supports `MASQUERADE --random-fully`.
    pub random_fully: bool,
    /// The nfacct counters could be created.
    pub nfacct: bool,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` is non-zero.
    pub conntrack_tcp_be_liberal: bool,
}

impl Default for HostFeatures {
    fn default() -> Self {
        Self {
            random_fully: true,
            nfacct: true,
            conntrack_tcp_be_liberal: false,
        }
    }
}

/// How the masquerade mark is spelled in rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MarkStyle {
    /// As production kube-proxy prints it: `0x00004000` (`%#08x`).
    #[default]
    Production,
    /// As the upstream unit-test fake prints it: `0x4000`.
    Short,
}

/// The node-level configuration of one proxier (one family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The proxier's family.
    pub family: IpFamily,
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// The node's zone (`topology.kubernetes.io/zone` label).
    pub zone: Option<String>,
    /// The node's primary IP of this family (for the LB source-range allowance).
    pub node_ip: Option<IpAddr>,
    /// `masqueradeBit` (0..=31).
    pub masquerade_bit: u8,
    /// How the mark is printed.
    pub mark_style: MarkStyle,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// The local traffic detector of this family.
    pub local_detector: LocalDetector,
    /// `nodePortAddresses` as configured (all families; `primary` already
    /// resolved to the node IPs as host prefixes). Empty means every address.
    pub node_port_addresses: Vec<IpNet>,
    /// The node's interface addresses (all families), which
    /// `nodePortAddresses` selects from.
    pub node_addresses: Vec<IpAddr>,
    /// `iptables.localhostNodePorts` as configured (the planner decides if it applies).
    pub localhost_node_ports: bool,
    /// The feature gate `KubeProxyNFTablesLocalhostNodePorts` (nftables
    /// mode: reject, count or proxy NodePort traffic to localhost).
    pub nftables_localhost_node_ports: bool,
    /// The cluster's Service CIDRs (all families; `--service-cidr` and
    /// ServiceCIDR objects). nftables mode drops traffic to addresses in
    /// them that are not an active ClusterIP.
    pub service_cidrs: Vec<IpNet>,
    /// Host features.
    pub host: HostFeatures,
}

impl NodeConfig {
    /// kube-proxy's defaults for `family` on node `node_name`.
    pub fn new(family: IpFamily, node_name: impl Into<String>) -> Self {
        Self {
            family,
            node_name: node_name.into(),
            zone: None,
            node_ip: None,
            masquerade_bit: 14,
            mark_style: MarkStyle::Production,
            masquerade_all: false,
            local_detector: LocalDetector::None,
            node_port_addresses: Vec::new(),
            node_addresses: Vec::new(),
            localhost_node_ports: true,
            nftables_localhost_node_ports: false,
            service_cidrs: Vec::new(),
            host: HostFeatures::default(),
        }
    }
}
