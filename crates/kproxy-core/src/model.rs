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

/// A point in time in UTC, as seconds and nanoseconds since the Unix epoch:
/// the value of an `endpoints.kubernetes.io/last-change-trigger-time`
/// annotation (when the change an EndpointSlice reflects was triggered).
///
/// Parsed from RFC 3339 text the way kube-proxy parses it (Go's
/// `time.Parse(time.RFC3339Nano, ..)`): `T` and `Z` upper case, an
/// optional fraction of any length (digits beyond nanoseconds dropped),
/// `Z` or a `±hh:mm` offset. Shown in RFC 3339 UTC, fraction without
/// trailing zeros (Go's `RFC3339Nano`).
///
/// ```
/// use kproxy_core::model::Timestamp;
/// let t: Timestamp = "2026-11-26T10:00:00.5+01:00".parse().unwrap();
/// assert_eq!(t.unix_seconds(), 1_795_687_200 - 3600);
/// assert_eq!(t.subsec_nanos(), 500_000_000);
/// assert_eq!(t.to_string(), "2026-11-26T09:00:00.5Z");
/// assert!("2026-11-26 10:00:00Z".parse::<Timestamp>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// Why a text is not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// Not of the form `YYYY-MM-DDThh:mm:ss[.f](Z|±hh:mm)`.
    #[error("not of the form YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)")]
    Syntax,
    /// A field out of its range (month 13, February 30, hour 24, ...).
    #[error("{0} out of range")]
    Range(&'static str),
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day count from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both in range by construction (1..=31, 1..=12).
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };
    /// The time `secs` seconds and `nanos` nanoseconds after the Unix epoch
    /// (`None` when `nanos` is a second or more).
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Self> {
        (nanos < 1_000_000_000).then_some(Self { secs, nanos })
    }
    /// Whole seconds since the Unix epoch (negative before it).
    pub fn unix_seconds(self) -> i64 {
        self.secs
    }
    /// The nanoseconds past [`Self::unix_seconds`] (0..1e9).
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        // Exactly `n` ASCII digits at `at`.
        let num = |at: usize, n: usize| -> Result<u32, TimestampError> {
            let d = b.get(at..at + n).ok_or(TimestampError::Syntax)?;
            d.iter().try_fold(0u32, |acc, c| {
                c.is_ascii_digit()
                    .then(|| acc * 10 + u32::from(c - b'0'))
                    .ok_or(TimestampError::Syntax)
            })
        };
        let sep = |at: usize, c: u8| -> Result<(), TimestampError> {
            (b.get(at) == Some(&c))
                .then_some(())
                .ok_or(TimestampError::Syntax)
        };
        let year = i64::from(num(0, 4)?);
        sep(4, b'-')?;
        let month = num(5, 2)?;
        sep(7, b'-')?;
        let day = num(8, 2)?;
        sep(10, b'T')?;
        let hour = num(11, 2)?;
        sep(13, b':')?;
        let minute = num(14, 2)?;
        sep(16, b':')?;
        let second = num(17, 2)?;
        let mut at = 19;
        let mut nanos = 0u32;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                if at - start < 9 {
                    nanos = nanos * 10 + u32::from(b[at] - b'0');
                }
                at += 1;
            }
            if at == start {
                return Err(TimestampError::Syntax);
            }
            for _ in (at - start)..9 {
                nanos *= 10;
            }
        }
        let offset = match b.get(at) {
            Some(b'Z') if b.len() == at + 1 => 0,
            Some(&c @ (b'+' | b'-')) if b.len() == at + 6 => {
                let h = num(at + 1, 2)?;
                sep(at + 3, b':')?;
                let m = num(at + 4, 2)?;
                if h >= 24 {
                    return Err(TimestampError::Range("time zone offset hour"));
                }
                if m >= 60 {
                    return Err(TimestampError::Range("time zone offset minute"));
                }
                let o = i64::from(h * 3600 + m * 60);
                if c == b'-' { -o } else { o }
            }
            _ => return Err(TimestampError::Syntax),
        };
        if !(1..=12).contains(&month) {
            return Err(TimestampError::Range("month"));
        }
        if day < 1 || day > days_in_month(year, month) {
            return Err(TimestampError::Range("day"));
        }
        if hour >= 24 {
            return Err(TimestampError::Range("hour"));
        }
        if minute >= 60 {
            return Err(TimestampError::Range("minute"));
        }
        if second >= 60 {
            return Err(TimestampError::Range("second"));
        }
        let secs = days_from_civil(year, month, day) * 86_400
            + i64::from(hour * 3600 + minute * 60 + second)
            - offset;
        Ok(Self { secs, nanos })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d) = civil_from_days(self.secs.div_euclid(86_400));
        let t = self.secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
            t / 3600,
            t / 60 % 60,
            t % 60
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
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
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation
    /// (`None` when absent or not a valid time): when the change this
    /// version of the slice reflects was triggered. Only network programming
    /// latency reads it; the planner does not.
    pub trigger_time: Option<Timestamp>,
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
            trigger_time: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Result<Timestamp, TimestampError> {
        s.parse()
    }

    #[test]
    fn timestamp_parses_rfc3339() {
        let t = ts("2026-11-26T10:00:00Z").unwrap();
        assert_eq!((t.unix_seconds(), t.subsec_nanos()), (1_795_687_200, 0));
        assert_eq!(t.to_string(), "2026-11-26T10:00:00Z");
        assert_eq!(ts("1970-01-01T00:00:00Z").unwrap().unix_seconds(), 0);
        let t = ts("2020-02-29T23:59:59.123456789123-00:30").unwrap();
        assert_eq!(t.subsec_nanos(), 123_456_789);
        assert_eq!(t.to_string(), "2020-03-01T00:29:59.123456789Z");
        assert_eq!(
            ts("2020-01-01T00:00:00.01Z").unwrap().subsec_nanos(),
            10_000_000
        );
        let before = ts("1969-12-31T23:59:59.5Z").unwrap();
        assert_eq!(
            (before.unix_seconds(), before.subsec_nanos()),
            (-1, 500_000_000)
        );
        assert_eq!(before.to_string(), "1969-12-31T23:59:59.5Z");
        assert!(before < ts("1970-01-01T00:00:00Z").unwrap());
        // Round trip over years 0001-9910, leap years included.
        for days in (-719_000..2_900_000).step_by(997) {
            let t = Timestamp::from_unix(days * 86_400 + 3_723, 42).unwrap();
            assert_eq!(ts(&t.to_string()).unwrap(), t, "{t}");
        }
        assert_eq!(Timestamp::from_unix(0, 1_000_000_000), None);
    }

    #[test]
    fn timestamp_rejects_what_go_rejects() {
        for bad in [
            "",
            "2026-11-26",
            "2026-11-26 10:00:00Z",
            "2026-11-26t10:00:00Z",
            "2026-11-26T10:00:00z",
            "2026-11-26T10:00:00",
            "2026-11-26T10:00:00.Z",
            "2026-11-26T10:00:00+0100",
            "2026-11-26T10:00:00Z ",
            "26-11-26T10:00:00Z",
            "2026-1-26T10:00:00Z",
            "+2026-11-26T10:00:00Z",
            "２026-11-26T10:00:00Z",
        ] {
            assert_eq!(ts(bad), Err(TimestampError::Syntax), "{bad:?}");
        }
        for (bad, what) in [
            ("2026-13-01T00:00:00Z", "month"),
            ("2026-00-01T00:00:00Z", "month"),
            ("2026-02-29T00:00:00Z", "day"),
            ("2026-04-31T00:00:00Z", "day"),
            ("2026-01-01T24:00:00Z", "hour"),
            ("2026-01-01T00:60:00Z", "minute"),
            ("2026-01-01T00:00:60Z", "second"),
            ("2026-01-01T00:00:00+24:00", "time zone offset hour"),
        ] {
            assert_eq!(ts(bad), Err(TimestampError::Range(what)), "{bad:?}");
        }
    }
}
