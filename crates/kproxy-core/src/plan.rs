//! The planner: every Kubernetes decision kube-proxy takes, taken once.
//!
//! [`plan`] turns a [`ClusterState`] and one family's [`NodeConfig`] into a
//! [`Plan`]: node-level facts (masquerade mark, where node ports listen, how
//! pod traffic is recognised) and, per service port, which endpoints serve
//! cluster and local traffic, which front ends exist and what happens to
//! traffic that has no endpoint to go to. Backends only lower these facts to
//! their syntax; they never look at the model again.
//!
//! ```
//! use kproxy_core::model::*;
//! use kproxy_core::plan::{plan, Disposition};
//!
//! let svc = Service::cluster_ip("ns", "empty", "10.96.0.1".parse().unwrap())
//!     .with_port(ServicePort::new("", Protocol::Udp, 53));
//! let state = ClusterState { services: vec![svc], endpoint_slices: vec![] };
//! let p = plan(&state, &NodeConfig::new(IpFamily::V4, "node-1"));
//! // A Service without endpoints rejects its traffic.
//! assert_eq!(p.service_ports[0].internal, Disposition::Reject);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{
    AddressType, ClusterState, Endpoint, EndpointSlice, IpFamily, LocalDetector, MarkStyle,
    NodeConfig, Protocol, Service, ServiceType, TrafficPolicy,
};
use crate::names::{ServicePortName, endpoint_arc};
use crate::trace::FastMap;

/// More endpoints than this (summed over all service ports) switch
/// kube-proxy to large-cluster mode, which drops per-endpoint comments.
pub const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;

/// The plan of one family on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// Node-level facts.
    pub node: NodePlan,
    /// Service ports, sorted by service port name and protocol.
    pub service_ports: Vec<ServicePortPlan>,
    /// Large-cluster mode (more than [`LARGE_CLUSTER_ENDPOINTS_THRESHOLD`] endpoints).
    pub large_cluster: bool,
    /// The release whose decisions were taken: the layouts check that they
    /// write this release's rules.
    pub release: Release,
}

/// The masquerade mark: one bit of the packet mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasqueradeMark {
    /// The bit (0..=31).
    pub bit: u8,
    /// How it is printed.
    pub style: MarkStyle,
}

impl MasqueradeMark {
    /// The mark value (`1 << bit`).
    pub fn value(self) -> u32 {
        1u32.checked_shl(u32::from(self.bit)).unwrap_or(0)
    }
}

/// Prints the mark as kube-proxy does: production `0x00004000` (Go
/// `%#08x`), the unit-test fake `0x4000`.
impl fmt::Display for MasqueradeMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.style {
            MarkStyle::Production => write!(f, "{:#010x}", self.value()),
            MarkStyle::Short => write!(f, "{:#x}", self.value()),
        }
    }
}

/// Where node ports are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortDestinations {
    /// Every local address, except `exclude` (the loopback net, when
    /// localhost node ports are off or for IPv6).
    AllLocal {
        /// Loopback network excluded from node ports.
        exclude: Option<IpNet>,
    },
    /// Only these node addresses (possibly none).
    Addresses(Vec<IpAddr>),
}

/// What kube-proxy does with traffic from pods to a cluster IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterIpMasquerade {
    /// `masqueradeAll`: every packet to a cluster IP is masqueraded.
    All,
    /// Packets not recognised as local by the detector are masqueraded.
    IfNotLocal(LocalDetector),
    /// Nothing (no detector, no masqueradeAll).
    Never,
}

/// Node-level facts of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodePlan {
    /// The family.
    pub family: IpFamily,
    /// The node's name.
    pub node_name: String,
    /// The masquerade mark.
    pub mark: MasqueradeMark,
    /// `MASQUERADE --random-fully`.
    pub random_fully: bool,
    /// nfacct counters are available.
    pub nfacct: bool,
    /// Drop packets conntrack considers INVALID in forwarding.
    pub drop_invalid: bool,
    /// Localhost node ports (IPv4 only, `127.0.0.0/8` destinations).
    pub localhost_node_ports: bool,
    /// Where node ports listen.
    pub node_ports: NodePortDestinations,
    /// The local traffic detector.
    pub local_detector: LocalDetector,
    /// Cluster IP masquerading.
    pub cluster_ip_masquerade: ClusterIpMasquerade,
    /// The Service CIDRs of this family (nftables mode drops traffic to
    /// addresses in them that are no active ClusterIP).
    pub service_cidrs: Vec<IpNet>,
    /// nftables mode, feature gate `KubeProxyNFTablesLocalhostNodePorts`:
    /// the protocols whose NodePort traffic to the loopback address kube-proxy
    /// rejects (and counts). Empty when the gate is off. With an explicit
    /// loopback CIDR in `nodePortAddresses` kube-proxy proxies TCP itself and
    /// rejects UDP and SCTP; otherwise it rejects all three.
    pub localhost_node_port_rejects: Vec<Protocol>,
}

/// A service port's list of planned endpoints. The lists of a service
/// port that hold the same endpoints share them (the common case: every
/// endpoint is a cluster endpoint, and so the reachable ones too).
pub type EndpointList = Arc<[PlannedEndpoint]>;

/// One usable endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEndpoint {
    /// Address.
    pub ip: IpAddr,
    /// Target port.
    pub port: u16,
    /// On this node.
    pub is_local: bool,
    /// Ready.
    pub ready: bool,
    /// Serving.
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
    /// Zone hints (empty: none).
    pub zone_hints: BTreeSet<String>,
    /// Node hints (empty: none).
    pub node_hints: BTreeSet<String>,
    /// `ip:port` / `[ip]:port`, as kube-proxy spells the endpoint (shared:
    /// the same endpoint sits in several lists of a plan).
    pub endpoint: Arc<str>,
}

impl PlannedEndpoint {
    /// `ip:port` / `[ip]:port`.
    pub fn endpoint_string(&self) -> String {
        self.endpoint.to_string()
    }
    /// `ip:port` / `[ip]:port`, borrowed.
    pub fn endpoint_str(&self) -> &str {
        &self.endpoint
    }
    fn usable_serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

impl fmt::Display for PlannedEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint)
    }
}

/// What happens to traffic of one kind (internal or external) of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Forwarded to the endpoints of this policy.
    Forward(TrafficPolicy),
    /// Dropped: the policy is Local and this node has no endpoint.
    Drop,
    /// Rejected: the Service has no usable endpoint at all.
    Reject,
}

impl Disposition {
    /// Whether the traffic is forwarded.
    pub fn forwards(self) -> bool {
        matches!(self, Disposition::Forward(_))
    }
}

/// What happens to the source address of external traffic (node ports,
/// external IPs, load balancer IPs): kube-proxy's reading of
/// `externalTrafficPolicy`.
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::plan::{plan, ExternalMasquerade};
/// let mut svc = Service::cluster_ip("ns", "web", "10.96.0.10".parse().unwrap())
///     .with_port(ServicePort::new("", Protocol::Tcp, 80).with_node_port(30080));
/// svc.service_type = ServiceType::NodePort;
/// svc.external_traffic_policy = TrafficPolicy::Local;
/// let state = ClusterState { services: vec![svc], endpoint_slices: vec![] };
/// let p = plan(&state, &NodeConfig::new(IpFamily::V4, "node-1"));
/// assert_eq!(p.service_ports[0].external_masquerade, ExternalMasquerade::PreserveSource);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalMasquerade {
    /// `externalTrafficPolicy: Cluster`: every external packet is
    /// masqueraded.
    All,
    /// `externalTrafficPolicy: Local`: the client's source is kept; traffic
    /// from this node's pods and from the node itself is routed as cluster
    /// traffic instead (the node's own traffic masqueraded).
    PreserveSource,
}

/// The `loadBalancerSourceRanges` filter of a service port's load balancer
/// IPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbSourceFilter {
    /// No filter: no load balancer IP or no source range of this family.
    Open,
    /// Only these sources may reach the load balancer IPs.
    Ranges {
        /// The source ranges of this family.
        ranges: Vec<IpNet>,
        /// The load balancer IPs are admitted as sources too (a range holds
        /// the node's IP, so hairpinned load balancer traffic is allowed).
        admits_lb_ips: bool,
    },
}

impl LbSourceFilter {
    /// Whether traffic to the load balancer IPs is filtered by source.
    pub fn filters(&self) -> bool {
        matches!(self, LbSourceFilter::Ranges { .. })
    }
}

/// Every decision about one service port (one `spec.ports[]` entry, one family).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServicePortPlan {
    /// `namespace/name:port` + protocol.
    pub name: ServicePortName,
    /// The cluster IP of this family.
    pub cluster_ip: IpAddr,
    /// The Service port.
    pub port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
    /// External IPs of this family.
    pub external_ips: Vec<IpAddr>,
    /// Load balancer VIPs of this family (ipMode VIP only).
    pub load_balancer_ips: Vec<IpAddr>,
    /// The health check node port (LoadBalancer with eTP Local only).
    pub health_check_node_port: Option<u16>,
    /// ClientIP affinity timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Endpoints for cluster-policy traffic (topology and fallback applied).
    pub cluster_endpoints: EndpointList,
    /// Endpoints for local-policy traffic.
    pub local_endpoints: EndpointList,
    /// Every endpoint reachable from this node (union of both), sorted.
    pub reachable_endpoints: EndpointList,
    /// The endpoint list before selection (counts for large-cluster mode).
    pub total_endpoints: usize,
    /// The Service has a usable endpoint somewhere in the cluster.
    pub has_endpoints: bool,
    /// Traffic to the cluster IP (with the effective internal traffic
    /// policy when it is forwarded).
    pub internal: Disposition,
    /// Traffic to node ports, external IPs and load balancer IPs (with the
    /// effective external traffic policy when it is forwarded).
    pub external: Disposition,
    /// The source address of external traffic.
    pub external_masquerade: ExternalMasquerade,
    /// Reachable from outside the cluster (node port, external IP or LB IP).
    pub externally_accessible: bool,
    /// The source filter of traffic to the load balancer IPs.
    pub lb_source_filter: LbSourceFilter,
}

impl ServicePortPlan {
    /// Whether external traffic needs its own chain (it has somewhere to go).
    pub fn uses_external_chain(&self) -> bool {
        self.has_endpoints && self.externally_accessible
    }
    /// Whether the cluster-policy endpoint chain is written.
    pub fn uses_cluster_chain(&self) -> bool {
        !self.cluster_endpoints.is_empty()
    }
    /// Whether the local-policy endpoint chain is written.
    pub fn uses_local_chain(&self) -> bool {
        !self.local_endpoints.is_empty()
    }
    /// The addresses of the ready endpoints on this node: what the
    /// healthCheckNodePort responder counts (kube-proxy answers 200 with
    /// `localEndpoints` when there is one, 503 otherwise).
    pub fn local_ready_endpoints(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.reachable_endpoints
            .iter()
            .filter(|ep| ep.is_local && ep.ready)
            .map(|ep| ep.ip)
    }
}

/// Which kube-proxy release's decisions the planner takes.
///
/// Old releases decided some things differently; a layout profile
/// ([`crate::profile`]) names the release it was written for, and the
/// planner takes that release's decisions, so that backends still only lower
/// facts.
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::plan::{plan_release, Disposition, Release};
///
/// let mut svc = Service::cluster_ip("ns", "web", "10.96.0.10".parse().unwrap())
///     .with_port(ServicePort::new("", Protocol::Tcp, 80));
/// svc.internal_traffic_policy = TrafficPolicy::Local;
/// let slice = EndpointSlice::new("ns", "web-1", "web", IpFamily::V4)
///     .with_port(EndpointPort::new("", Protocol::Tcp, 8080))
///     .with_endpoint(Endpoint::ready("10.244.1.5".parse().unwrap()).on_node("node-2"));
/// let state = ClusterState { services: vec![svc], endpoint_slices: vec![slice] };
/// let node = NodeConfig::new(IpFamily::V4, "node-1");
/// // 1.5 had no internalTrafficPolicy: cluster IP traffic is Cluster traffic.
/// let p = plan_release(&state, &node, Release::V1_5);
/// assert_eq!(p.release, Release::V1_5);
/// assert_eq!(p.service_ports[0].internal, Disposition::Forward(TrafficPolicy::Cluster));
/// assert!(!p.node.random_fully);
/// // Today: Local, and this node has no endpoint of the Service.
/// let p = plan_release(&state, &node, Release::Current);
/// assert_eq!(p.service_ports[0].internal, Disposition::Drop);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Release {
    /// Today's kube-proxy (iptables 1.34+, nftables 1.36+).
    #[default]
    Current,
    /// kube-proxy 1.35 and before, as far as the nftables layout up to 1.35
    /// needs: no localhost NodePort rejects (feature gate
    /// `KubeProxyNFTablesLocalhostNodePorts` is not part of that layout).
    /// Everything else as [`Release::Current`].
    V1_35,
    /// kube-proxy 1.5 (Endpoints era):
    /// * endpoints: only ready addresses (no serving/terminating fallback,
    ///   no topology hints); no `internalTrafficPolicy` (always Cluster);
    /// * "OnlyLocal" (`externalTrafficPolicy: Local`, then an annotation)
    ///   only for NodePort and LoadBalancer Services;
    /// * every load balancer ingress IP is used (no `ipMode`);
    /// * ClientIP affinity always lasts 180 minutes (10800 s);
    /// * node ports on every local address (no `nodePortAddresses`, no
    ///   localhost special case), no `--random-fully`, no nfacct, no
    ///   conntrack-INVALID drop, no large-cluster mode;
    /// * pod traffic recognised only by `--cluster-cidr` (other detectors
    ///   did not exist: none).
    V1_5,
}

/// Plans `state` for the family of `node` (today's kube-proxy).
pub fn plan(state: &ClusterState, node: &NodeConfig) -> Plan {
    plan_release(state, node, Release::Current)
}

/// Plans `state` for the family of `node` with the decisions of `release`.
pub fn plan_release(state: &ClusterState, node: &NodeConfig, release: Release) -> Plan {
    let mut endpoints = collect_endpoints(&state.endpoint_slices, node);
    let mut service_ports = Vec::with_capacity(state.services.len());
    for svc in &state.services {
        plan_service_into(svc, node, &mut endpoints, release, &mut service_ports);
    }
    sort_service_ports(&mut service_ports);
    finish_plan(node, release, service_ports)
}

/// Plans the service ports of the Services named `namespace/name` (normally
/// one object; duplicates are planned as [`plan_release`] plans them) with
/// their EndpointSlices: what [`plan_release`] plans for them, in its
/// order. Services depend on nothing but their own objects and the node,
/// which is what makes [`crate::incremental::PlanCache`] possible.
pub(crate) fn plan_service_group(
    services: &[&Service],
    slices: &[&EndpointSlice],
    node: &NodeConfig,
    release: Release,
) -> Vec<ServicePortPlan> {
    let mut endpoints = collect_endpoints(slices.iter().copied(), node);
    let mut service_ports = Vec::new();
    for svc in services {
        plan_service_into(svc, node, &mut endpoints, release, &mut service_ports);
    }
    sort_service_ports(&mut service_ports);
    service_ports
}

fn plan_service_into<'a>(
    svc: &'a Service,
    node: &NodeConfig,
    endpoints: &mut Endpoints<'a>,
    release: Release,
    out: &mut Vec<ServicePortPlan>,
) {
    for (i, _) in svc.ports.iter().enumerate() {
        if let Some(sp) = plan_service_port(svc, i, node, endpoints, release) {
            out.push(sp);
        }
    }
}

/// Sorted by name; of duplicates (the same Service twice), the first stays.
fn sort_service_ports(service_ports: &mut Vec<ServicePortPlan>) {
    service_ports.sort_by(|a, b| a.name.cmp(&b.name));
    service_ports.dedup_by(|a, b| a.name == b.name);
}

/// Whether `total` endpoints put `release` in large-cluster mode.
pub(crate) fn is_large_cluster(total: usize, release: Release) -> bool {
    release != Release::V1_5 && total > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
}

/// The plan of `service_ports` (sorted, as [`plan_release`] sorts them):
/// the node-level facts of `release` and large-cluster mode.
pub(crate) fn finish_plan(
    node: &NodeConfig,
    release: Release,
    service_ports: Vec<ServicePortPlan>,
) -> Plan {
    let total: usize = service_ports.iter().map(|s| s.total_endpoints).sum();
    Plan {
        node: plan_node_release(node, release),
        large_cluster: is_large_cluster(total, release),
        service_ports,
        release,
    }
}

/// [`plan_node`] with the node-level decisions of `release`.
pub fn plan_node_release(node: &NodeConfig, release: Release) -> NodePlan {
    let mut node_plan = plan_node(node);
    match release {
        Release::Current => {}
        Release::V1_35 => node_plan.localhost_node_port_rejects.clear(),
        Release::V1_5 => {
            node_plan.random_fully = false;
            node_plan.nfacct = false;
            node_plan.drop_invalid = false;
            node_plan.localhost_node_ports = false;
            node_plan.localhost_node_port_rejects.clear();
            node_plan.node_ports = NodePortDestinations::AllLocal { exclude: None };
            if !matches!(node_plan.local_detector, LocalDetector::Cidr(_)) {
                node_plan.local_detector = LocalDetector::None;
            }
            node_plan.cluster_ip_masquerade = if node.masquerade_all {
                ClusterIpMasquerade::All
            } else if node_plan.local_detector == LocalDetector::None {
                ClusterIpMasquerade::Never
            } else {
                ClusterIpMasquerade::IfNotLocal(node_plan.local_detector.clone())
            };
        }
    }
    node_plan
}

/// Whether kube-proxy proxies `svc` at all (not headless, not ExternalName).
pub fn is_proxied(svc: &Service) -> bool {
    svc.service_type != ServiceType::ExternalName && !svc.cluster_ips.is_empty()
}

/// Node-level decisions.
pub fn plan_node(node: &NodeConfig) -> NodePlan {
    let localhost = localhost_node_ports_apply(node);
    NodePlan {
        family: node.family,
        node_name: node.node_name.clone(),
        mark: MasqueradeMark {
            bit: node.masquerade_bit,
            style: node.mark_style,
        },
        random_fully: node.host.random_fully,
        nfacct: node.host.nfacct,
        drop_invalid: !node.host.conntrack_tcp_be_liberal,
        localhost_node_ports: localhost,
        node_ports: node_port_destinations(node, localhost),
        local_detector: node.local_detector.clone(),
        cluster_ip_masquerade: cluster_ip_masquerade(node),
        service_cidrs: node
            .service_cidrs
            .iter()
            .copied()
            .filter(|n| node.family.contains_net(n))
            .collect(),
        localhost_node_port_rejects: nft_localhost_rejects(node),
    }
}

/// kube-proxy's `NodePortAddresses.ContainsExplicitLoopback`: a CIDR of the
/// family, other than the all-addresses one, contains the loopback address.
fn node_port_addresses_contain_loopback(node: &NodeConfig) -> bool {
    let loopback = node.family.loopback_net().addr();
    node_port_cidrs(node)
        .iter()
        .any(|c| c.prefix_len() > 0 && c.contains(&loopback))
}

fn nft_localhost_rejects(node: &NodeConfig) -> Vec<Protocol> {
    if !node.nftables_localhost_node_ports {
        Vec::new()
    } else if node_port_addresses_contain_loopback(node) {
        vec![Protocol::Udp, Protocol::Sctp]
    } else {
        vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
    }
}

/// The CIDRs of `nodePortAddresses` that belong to the node's family.
fn node_port_cidrs(node: &NodeConfig) -> Vec<IpNet> {
    node.node_port_addresses
        .iter()
        .copied()
        .filter(|n| node.family.contains_net(n))
        .collect()
}

/// `nodePortAddresses` matches every address: no CIDR of this family, or a
/// zero-length prefix among them.
fn node_ports_match_all(node: &NodeConfig) -> bool {
    let cidrs = node_port_cidrs(node);
    cidrs.is_empty() || cidrs.iter().any(|c| c.prefix_len() == 0)
}

/// Localhost node ports apply on IPv4 only, when configured, and only if
/// `nodePortAddresses` covers an IPv4 loopback address.
pub fn localhost_node_ports_apply(node: &NodeConfig) -> bool {
    if node.family != IpFamily::V4 || !node.localhost_node_ports {
        return false;
    }
    let loopback: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    node_ports_match_all(node)
        || node_port_cidrs(node)
            .iter()
            .any(|c| c.contains(&loopback) || c.addr().is_loopback())
}

fn node_port_destinations(node: &NodeConfig, localhost: bool) -> NodePortDestinations {
    let loopback = node.family.loopback_net();
    if node_ports_match_all(node) {
        return NodePortDestinations::AllLocal {
            exclude: (!localhost).then_some(loopback),
        };
    }
    let cidrs = node_port_cidrs(node);
    let mut addrs: Vec<IpAddr> = node
        .node_addresses
        .iter()
        .copied()
        .filter(|ip| node.family.contains(ip))
        .filter(|ip| cidrs.iter().any(|c| c.contains(ip)))
        .filter(|ip| localhost || !ip.is_loopback())
        .collect();
    addrs.sort();
    addrs.dedup();
    NodePortDestinations::Addresses(addrs)
}

fn cluster_ip_masquerade(node: &NodeConfig) -> ClusterIpMasquerade {
    if node.masquerade_all {
        ClusterIpMasquerade::All
    } else if node.local_detector == LocalDetector::None {
        ClusterIpMasquerade::Never
    } else {
        ClusterIpMasquerade::IfNotLocal(node.local_detector.clone())
    }
}

/// namespace, service, port name, protocol
type EndpointKey<'a> = (&'a str, &'a str, &'a str, Protocol);

/// Each service port's endpoints (only looked up: the order of the map
/// never shows).
type Endpoints<'a> = FastMap<EndpointKey<'a>, Vec<PlannedEndpoint>>;

/// Merges the EndpointSlices of the node's family into per-service-port
/// endpoint lists, de-duplicated and sorted as kube-proxy does.
fn collect_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &NodeConfig,
) -> Endpoints<'a> {
    let mut slices: Vec<_> = slices
        .into_iter()
        .filter(|s| s.address_type == AddressType::Ip(node.family))
        .collect();
    slices.sort_by(|a, b| a.id.cmp(&b.id));
    let mut map: Endpoints<'a> =
        FastMap::with_capacity_and_hasher(slices.len(), Default::default());
    for slice in slices {
        for port in &slice.ports {
            let (Some(name), Some(p)) = (&port.name, port.port) else {
                continue;
            };
            if p == 0 {
                continue;
            }
            let key = (
                slice.id.namespace.as_str(),
                slice.service_name.as_str(),
                name.as_str(),
                port.protocol,
            );
            let list = map.entry(key).or_default();
            list.reserve(slice.endpoints.len());
            for ep in slice
                .endpoints
                .iter()
                .filter(|e| node.family.contains(&e.address))
            {
                merge_endpoint(list, planned_endpoint(ep, p, &node.node_name));
            }
        }
    }
    for list in map.values_mut() {
        list.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    }
    map
}

fn planned_endpoint(ep: &Endpoint, port: u16, node_name: &str) -> PlannedEndpoint {
    PlannedEndpoint {
        ip: ep.address,
        port,
        is_local: ep.node_name.as_deref() == Some(node_name),
        ready: ep.conditions.ready,
        serving: ep.conditions.serving,
        terminating: ep.conditions.terminating,
        zone_hints: ep.zone_hints.clone(),
        node_hints: ep.node_hints.clone(),
        endpoint: endpoint_arc(ep.address, port),
    }
}

/// De-duplicates by endpoint string: the first one seen stays unless a
/// later duplicate is not terminating.
fn merge_endpoint(list: &mut Vec<PlannedEndpoint>, planned: PlannedEndpoint) {
    if let Some(existing) = list
        .iter_mut()
        .find(|e| e.ip == planned.ip && e.port == planned.port)
    {
        if !planned.terminating {
            *existing = planned;
        }
    } else {
        list.push(planned);
    }
}

/// Plans one port of `svc`, taking its endpoint list out of `endpoints`:
/// a second service port of the same name (the same Service listed twice)
/// finds none, and is the one [`sort_service_ports`] drops, since the
/// first one planned stays.
fn plan_service_port<'a>(
    svc: &'a Service,
    index: usize,
    node: &NodeConfig,
    endpoints: &mut Endpoints<'a>,
    release: Release,
) -> Option<ServicePortPlan> {
    let v1_5 = release == Release::V1_5;
    if !is_proxied(svc) {
        return None;
    }
    let family = node.family;
    let cluster_ip = svc.cluster_ip_of(family)?;
    let port = svc.ports.get(index)?;
    let name = ServicePortName::new(&svc.id.namespace, &svc.id.name, &port.name, port.protocol);
    let external_ips: Vec<IpAddr> = svc
        .external_ips
        .iter()
        .copied()
        .filter(|ip| family.contains(ip))
        .collect();
    let load_balancer_ips: Vec<IpAddr> = svc
        .load_balancer_ingress
        .iter()
        .filter(|i| v1_5 || i.ip_mode == crate::model::IpMode::Vip)
        .map(|i| i.ip)
        .filter(|ip| family.contains(ip))
        .collect();
    let source_ranges: Vec<IpNet> = svc
        .load_balancer_source_ranges
        .iter()
        .copied()
        .filter(|n| family.contains_net(n))
        .collect();
    let node_port = port.node_port.filter(|&p| p != 0);
    let externally_accessible =
        node_port.is_some() || !load_balancer_ips.is_empty() || !external_ips.is_empty();
    let external_policy = if v1_5 {
        // 1.5's OnlyLocal: NodePort and LoadBalancer Services only.
        match svc.service_type {
            ServiceType::NodePort | ServiceType::LoadBalancer => svc.external_traffic_policy,
            ServiceType::ClusterIp | ServiceType::ExternalName => TrafficPolicy::Cluster,
        }
    } else {
        effective_external_policy(svc)
    };
    let internal_policy = if v1_5 {
        TrafficPolicy::Cluster
    } else {
        svc.internal_traffic_policy
    };
    let health_check_node_port = (svc.service_type == ServiceType::LoadBalancer
        && external_policy == TrafficPolicy::Local
        && svc.health_check_node_port != 0)
        .then_some(svc.health_check_node_port);

    let key = (
        svc.id.namespace.as_str(),
        svc.id.name.as_str(),
        port.name.as_str(),
        port.protocol,
    );
    let mut all = endpoints.remove(&key).unwrap_or_default();
    // 1.5 read Endpoints: ready addresses only, without hints.
    if v1_5 {
        all.retain(|e| e.ready);
        for e in &mut all {
            e.zone_hints.clear();
            e.node_hints.clear();
        }
    }
    let total_endpoints = all.len();
    let usage = EndpointUsage {
        cluster: internal_policy == TrafficPolicy::Cluster || externally_accessible,
        local: internal_policy == TrafficPolicy::Local
            || (external_policy == TrafficPolicy::Local && externally_accessible),
    };
    let sel = categorize_endpoints(all, usage, &node.node_name, node.zone.as_deref());

    let internal = disposition(sel.has_any, internal_policy, &sel.local);
    let external = disposition(sel.has_any, external_policy, &sel.local);
    let lb_source_filter = if load_balancer_ips.is_empty() || source_ranges.is_empty() {
        LbSourceFilter::Open
    } else {
        LbSourceFilter::Ranges {
            admits_lb_ips: node
                .node_ip
                .is_some_and(|ip| source_ranges.iter().any(|r| r.contains(&ip))),
            ranges: source_ranges,
        }
    };
    Some(ServicePortPlan {
        name,
        cluster_ip,
        port: port.port,
        node_port,
        external_ips,
        load_balancer_ips,
        health_check_node_port,
        affinity_timeout: if v1_5 {
            svc.session_affinity_timeout.map(|_| 10800)
        } else {
            svc.session_affinity_timeout
        },
        cluster_endpoints: if usage.cluster {
            sel.cluster
        } else {
            EndpointList::default()
        },
        local_endpoints: if usage.local {
            sel.local
        } else {
            EndpointList::default()
        },
        reachable_endpoints: sel.reachable,
        total_endpoints,
        has_endpoints: sel.has_any,
        internal,
        external,
        external_masquerade: match external_policy {
            TrafficPolicy::Cluster => ExternalMasquerade::All,
            TrafficPolicy::Local => ExternalMasquerade::PreserveSource,
        },
        externally_accessible,
        lb_source_filter,
    })
}

/// `externalTrafficPolicy: Local` only counts for Services that can be
/// reached from outside by type (NodePort, LoadBalancer) or by external IPs.
pub fn effective_external_policy(svc: &Service) -> TrafficPolicy {
    let external_type = match svc.service_type {
        ServiceType::NodePort | ServiceType::LoadBalancer => true,
        ServiceType::ClusterIp => !svc.external_ips.is_empty(),
        ServiceType::ExternalName => false,
    };
    if external_type {
        svc.external_traffic_policy
    } else {
        TrafficPolicy::Cluster
    }
}

fn disposition(has_any: bool, policy: TrafficPolicy, local: &[PlannedEndpoint]) -> Disposition {
    if !has_any {
        Disposition::Reject
    } else if policy == TrafficPolicy::Local && local.is_empty() {
        Disposition::Drop
    } else {
        Disposition::Forward(policy)
    }
}

/// Which policies a service port uses.
#[derive(Debug, Clone, Copy)]
struct EndpointUsage {
    cluster: bool,
    local: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopologyMode {
    None,
    SameNode,
    SameZone,
}

#[derive(Debug, Default)]
struct Selection {
    cluster: EndpointList,
    local: EndpointList,
    reachable: EndpointList,
    has_any: bool,
}

fn topology_mode(eps: &[PlannedEndpoint], node_name: &str, zone: Option<&str>) -> TopologyMode {
    let ready = || eps.iter().filter(|e| e.ready);
    if ready().next().is_none() {
        return TopologyMode::None;
    }
    let all_node_hints = ready().all(|e| !e.node_hints.is_empty());
    let for_node = ready().any(|e| e.node_hints.contains(node_name));
    if all_node_hints && for_node {
        return TopologyMode::SameNode;
    }
    let zone = zone.unwrap_or("");
    let all_zone_hints = ready().all(|e| !e.zone_hints.is_empty());
    let for_zone = ready().any(|e| e.zone_hints.contains(zone));
    if all_zone_hints && for_zone {
        return TopologyMode::SameZone;
    }
    TopologyMode::None
}

fn available_for_topology(
    ep: &PlannedEndpoint,
    mode: TopologyMode,
    node_name: &str,
    zone: Option<&str>,
) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::SameNode => ep.node_hints.contains(node_name),
        TopologyMode::SameZone => ep.zone_hints.contains(zone.unwrap_or("")),
    }
}

/// kube-proxy's endpoint categorisation: cluster endpoints (topology, then
/// the serving-terminating fallback), local endpoints (ready, else local
/// serving-terminating) and their union.
fn categorize_endpoints(
    eps: Vec<PlannedEndpoint>,
    usage: EndpointUsage,
    node_name: &str,
    zone: Option<&str>,
) -> Selection {
    let mut sel = Selection::default();
    if eps.is_empty() {
        return sel;
    }
    let mut mode = TopologyMode::None;
    if usage.cluster {
        mode = topology_mode(&eps, node_name, zone);
        let cluster =
            |e: &PlannedEndpoint| e.ready && available_for_topology(e, mode, node_name, zone);
        if !usage.local && eps.iter().all(cluster) {
            // The common case: every endpoint, and nothing else to select
            // from the list; it is taken as it is, for both lists.
            sel.has_any = true;
            sel.cluster = eps.into();
            sel.reachable = Arc::clone(&sel.cluster);
            return sel;
        }
        sel.cluster = eps.iter().filter(|e| cluster(e)).cloned().collect();
        if sel.cluster.is_empty() {
            sel.cluster = eps
                .iter()
                .filter(|e| e.usable_serving_terminating())
                .cloned()
                .collect();
        }
        sel.has_any = !sel.cluster.is_empty();
    }
    if !usage.local {
        sel.reachable = Arc::clone(&sel.cluster);
        return sel;
    }
    let mut local_ready = false;
    let mut local_terminating = false;
    for e in &eps {
        if e.ready {
            sel.has_any = true;
            local_ready |= e.is_local;
        } else if e.usable_serving_terminating() {
            sel.has_any = true;
            local_terminating |= e.is_local;
        }
    }
    let mut serving_terminating_local = false;
    if local_ready {
        sel.local = eps
            .iter()
            .filter(|e| e.is_local && e.ready)
            .cloned()
            .collect();
    } else if local_terminating {
        serving_terminating_local = true;
        sel.local = eps
            .iter()
            .filter(|e| e.is_local && e.usable_serving_terminating())
            .cloned()
            .collect();
    }
    if !usage.cluster {
        sel.reachable = Arc::clone(&sel.local);
        return sel;
    }
    if mode == TopologyMode::None && !serving_terminating_local {
        sel.reachable = Arc::clone(&sel.cluster);
        return sel;
    }
    let mut union: BTreeMap<Arc<str>, PlannedEndpoint> = BTreeMap::new();
    for e in sel.cluster.iter().chain(sel.local.iter()) {
        union.insert(Arc::clone(&e.endpoint), e.clone());
    }
    sel.reachable = union.into_values().collect();
    sel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        EndpointConditions, EndpointPort, EndpointSlice, IpMode, LoadBalancerIngress, ServicePort,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc(name: &str) -> Service {
        Service::cluster_ip("ns", name, ip("172.30.0.1")).with_port(ServicePort::new(
            "p",
            Protocol::Tcp,
            80,
        ))
    }

    fn ep(addr: &str, node: &str) -> Endpoint {
        Endpoint::ready(ip(addr)).on_node(node)
    }

    fn slice(name: &str, eps: Vec<Endpoint>) -> EndpointSlice {
        let mut s = EndpointSlice::new("ns", &format!("{name}-1"), name, IpFamily::V4)
            .with_port(EndpointPort::new("p", Protocol::Tcp, 8080));
        s.endpoints = eps;
        s
    }

    fn node() -> NodeConfig {
        NodeConfig::new(IpFamily::V4, "me")
    }

    fn plan_one(s: Service, eps: Vec<Endpoint>, node: &NodeConfig) -> ServicePortPlan {
        let name = s.id.name.clone();
        let state = ClusterState {
            services: vec![s],
            endpoint_slices: vec![slice(&name, eps)],
        };
        plan(&state, node).service_ports.remove(0)
    }

    fn addrs(eps: &[PlannedEndpoint]) -> Vec<&str> {
        eps.iter().map(PlannedEndpoint::endpoint_str).collect()
    }

    fn terminating(mut e: Endpoint, serving: bool) -> Endpoint {
        e.conditions = EndpointConditions {
            ready: false,
            serving,
            terminating: true,
        };
        e
    }

    #[test]
    fn endpoints_are_sorted_as_strings() {
        let p = plan_one(
            svc("a"),
            vec![ep("10.0.1.2", "x"), ep("10.0.1.10", "x")],
            &node(),
        );
        assert_eq!(
            addrs(&p.cluster_endpoints),
            ["10.0.1.10:8080", "10.0.1.2:8080"]
        );
    }

    #[test]
    fn a_duplicate_that_is_not_terminating_replaces_the_first() {
        let state = ClusterState {
            services: vec![svc("a")],
            endpoint_slices: vec![slice("a", vec![terminating(ep("10.0.0.1", "x"), true)]), {
                let mut s = slice("a", vec![ep("10.0.0.1", "x")]);
                s.id.name = "a-2".into();
                s
            }],
        };
        let p = plan(&state, &node()).service_ports.remove(0);
        assert_eq!(p.cluster_endpoints.len(), 1);
        assert!(p.cluster_endpoints[0].ready);
    }

    #[test]
    fn no_endpoints_rejects_everything() {
        let p = plan_one(svc("a"), vec![], &node());
        assert_eq!(p.internal, Disposition::Reject);
        assert_eq!(p.external, Disposition::Reject);
        assert!(!p.has_endpoints);
    }

    #[test]
    fn cluster_policy_falls_back_to_serving_terminating_endpoints() {
        let p = plan_one(
            svc("a"),
            vec![
                terminating(ep("10.0.0.1", "x"), true),
                terminating(ep("10.0.0.2", "x"), false),
            ],
            &node(),
        );
        assert_eq!(addrs(&p.cluster_endpoints), ["10.0.0.1:8080"]);
        assert_eq!(p.internal, Disposition::Forward(TrafficPolicy::Cluster));
    }

    #[test]
    fn not_serving_endpoints_are_never_used() {
        let p = plan_one(
            svc("a"),
            vec![terminating(ep("10.0.0.2", "x"), false)],
            &node(),
        );
        assert_eq!(p.internal, Disposition::Reject);
    }

    #[test]
    fn internal_local_without_local_endpoints_drops() {
        let mut s = svc("a");
        s.internal_traffic_policy = TrafficPolicy::Local;
        let p = plan_one(s, vec![ep("10.0.0.1", "other")], &node());
        assert_eq!(p.internal, Disposition::Drop);
        assert!(!p.uses_local_chain());
        assert!(!p.uses_cluster_chain());
    }

    #[test]
    fn local_policy_prefers_ready_then_local_terminating() {
        let mut s = svc("a");
        s.internal_traffic_policy = TrafficPolicy::Local;
        let p = plan_one(
            s.clone(),
            vec![
                ep("10.0.0.1", "me"),
                terminating(ep("10.0.0.2", "me"), true),
            ],
            &node(),
        );
        assert_eq!(addrs(&p.local_endpoints), ["10.0.0.1:8080"]);
        let p = plan_one(
            s,
            vec![
                terminating(ep("10.0.0.2", "me"), true),
                ep("10.0.0.3", "other"),
            ],
            &node(),
        );
        assert_eq!(addrs(&p.local_endpoints), ["10.0.0.2:8080"]);
        assert_eq!(p.internal, Disposition::Forward(TrafficPolicy::Local));
    }

    #[test]
    fn external_local_only_counts_for_externally_reachable_types() {
        let mut s = svc("a");
        s.external_traffic_policy = TrafficPolicy::Local;
        assert_eq!(effective_external_policy(&s), TrafficPolicy::Cluster);
        s.external_ips.push(ip("1.2.3.4"));
        assert_eq!(effective_external_policy(&s), TrafficPolicy::Local);
        s.external_ips.clear();
        s.service_type = ServiceType::NodePort;
        assert_eq!(effective_external_policy(&s), TrafficPolicy::Local);
    }

    #[test]
    fn external_local_uses_both_endpoint_sets() {
        let mut s = svc("a");
        s.service_type = ServiceType::NodePort;
        s.ports[0].node_port = Some(30001);
        s.external_traffic_policy = TrafficPolicy::Local;
        let p = plan_one(s, vec![ep("10.0.0.1", "me"), ep("10.0.0.2", "x")], &node());
        assert_eq!(p.cluster_endpoints.len(), 2);
        assert_eq!(addrs(&p.local_endpoints), ["10.0.0.1:8080"]);
        assert_eq!(p.external, Disposition::Forward(TrafficPolicy::Local));
        assert!(p.uses_external_chain());
    }

    #[test]
    fn zone_hints_select_same_zone_endpoints() {
        let mut n = node();
        n.zone = Some("z1".into());
        let mut a = ep("10.0.0.1", "x");
        a.zone_hints.insert("z1".into());
        let mut b = ep("10.0.0.2", "y");
        b.zone_hints.insert("z2".into());
        let p = plan_one(svc("a"), vec![a.clone(), b.clone()], &n);
        assert_eq!(addrs(&p.cluster_endpoints), ["10.0.0.1:8080"]);
        // An endpoint without hints disables topology.
        let p = plan_one(svc("a"), vec![a, b, ep("10.0.0.3", "z")], &n);
        assert_eq!(p.cluster_endpoints.len(), 3);
    }

    #[test]
    fn hints_for_another_zone_only_are_ignored() {
        let mut n = node();
        n.zone = Some("z9".into());
        let mut a = ep("10.0.0.1", "x");
        a.zone_hints.insert("z1".into());
        let p = plan_one(svc("a"), vec![a, ep("10.0.0.2", "y")], &n);
        assert_eq!(p.cluster_endpoints.len(), 2);
    }

    #[test]
    fn node_hints_win_over_zone_hints() {
        let mut n = node();
        n.zone = Some("z1".into());
        let mut a = ep("10.0.0.1", "me");
        a.node_hints.insert("me".into());
        a.zone_hints.insert("z1".into());
        let mut b = ep("10.0.0.2", "x");
        b.node_hints.insert("x".into());
        b.zone_hints.insert("z1".into());
        let p = plan_one(svc("a"), vec![a, b], &n);
        assert_eq!(addrs(&p.cluster_endpoints), ["10.0.0.1:8080"]);
    }

    #[test]
    fn proxy_mode_ingress_ips_are_ignored() {
        let mut s = svc("a");
        s.service_type = ServiceType::LoadBalancer;
        s.load_balancer_ingress = vec![
            LoadBalancerIngress {
                ip: ip("5.6.7.8"),
                ip_mode: IpMode::Proxy,
            },
            LoadBalancerIngress {
                ip: ip("5.6.7.9"),
                ip_mode: IpMode::Vip,
            },
        ];
        let p = plan_one(s, vec![ep("10.0.0.1", "x")], &node());
        assert_eq!(p.load_balancer_ips, [ip("5.6.7.9")]);
    }

    #[test]
    fn firewall_admits_lb_ips_when_a_range_holds_the_node_ip() {
        let mut s = svc("a");
        s.service_type = ServiceType::LoadBalancer;
        s.load_balancer_ingress = vec![LoadBalancerIngress {
            ip: ip("5.6.7.8"),
            ip_mode: IpMode::Vip,
        }];
        s.load_balancer_source_ranges = vec!["192.168.0.0/24".parse().unwrap()];
        let mut n = node();
        let p = plan_one(s.clone(), vec![ep("10.0.0.1", "x")], &n);
        let ranges = vec!["192.168.0.0/24".parse().unwrap()];
        assert_eq!(
            p.lb_source_filter,
            LbSourceFilter::Ranges {
                ranges: ranges.clone(),
                admits_lb_ips: false
            }
        );
        n.node_ip = Some(ip("192.168.0.2"));
        let p = plan_one(s.clone(), vec![ep("10.0.0.1", "x")], &n);
        assert_eq!(
            p.lb_source_filter,
            LbSourceFilter::Ranges {
                ranges,
                admits_lb_ips: true
            }
        );
        s.load_balancer_ingress.clear();
        let p = plan_one(s, vec![ep("10.0.0.1", "x")], &n);
        assert_eq!(p.lb_source_filter, LbSourceFilter::Open);
    }

    #[test]
    fn headless_and_external_name_services_are_not_proxied() {
        let mut s = svc("a");
        s.cluster_ips.clear();
        assert!(!is_proxied(&s));
        let mut s = svc("a");
        s.service_type = ServiceType::ExternalName;
        assert!(!is_proxied(&s));
    }

    #[test]
    fn services_of_the_other_family_produce_nothing() {
        let n = NodeConfig::new(IpFamily::V6, "me");
        let state = ClusterState {
            services: vec![svc("a")],
            endpoint_slices: vec![],
        };
        assert!(plan(&state, &n).service_ports.is_empty());
    }

    #[test]
    fn localhost_node_ports_need_ipv4_and_a_loopback_node_port_address() {
        let mut n = node();
        assert!(localhost_node_ports_apply(&n));
        n.node_port_addresses = vec!["192.168.0.0/24".parse().unwrap()];
        assert!(!localhost_node_ports_apply(&n));
        n.node_port_addresses.push("127.0.0.0/8".parse().unwrap());
        assert!(localhost_node_ports_apply(&n));
        let v6 = NodeConfig::new(IpFamily::V6, "me");
        assert!(!localhost_node_ports_apply(&v6));
    }

    #[test]
    fn node_ports_listen_on_matching_node_addresses_only() {
        let mut n = node();
        n.node_addresses = vec![ip("127.0.0.1"), ip("192.168.0.2"), ip("10.1.0.2")];
        assert_eq!(
            plan_node(&n).node_ports,
            NodePortDestinations::AllLocal { exclude: None }
        );
        n.node_port_addresses = vec!["192.168.0.0/16".parse().unwrap()];
        assert_eq!(
            plan_node(&n).node_ports,
            NodePortDestinations::Addresses(vec![ip("192.168.0.2")])
        );
        n.localhost_node_ports = false;
        n.node_port_addresses.clear();
        assert_eq!(
            plan_node(&n).node_ports,
            NodePortDestinations::AllLocal {
                exclude: Some("127.0.0.0/8".parse().unwrap())
            }
        );
    }

    #[test]
    fn masquerade_mark_prints_like_kube_proxy() {
        let m = MasqueradeMark {
            bit: 14,
            style: MarkStyle::Production,
        };
        assert_eq!(m.to_string(), "0x00004000");
    }

    #[test]
    fn large_cluster_mode_starts_above_1000_endpoints() {
        let eps: Vec<Endpoint> = (0..1001u32)
            .map(|i| Endpoint::ready(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        let state = ClusterState {
            services: vec![svc("a")],
            endpoint_slices: vec![slice("a", eps[..1000].to_vec())],
        };
        assert!(!plan(&state, &node()).large_cluster);
        let state = ClusterState {
            services: vec![svc("a")],
            endpoint_slices: vec![slice("a", eps)],
        };
        assert!(plan(&state, &node()).large_cluster);
    }
}
