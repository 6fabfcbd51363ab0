//! `KubeProxyConfiguration` (kubeproxy.config.k8s.io v1alpha1 / v1alpha2).
//!
//! [`KubeProxyConfiguration`] is the file as written: every field is an
//! `Option`, so an absent field and a field set to its default are told apart,
//! and unknown fields are ignored. [`KubeProxyConfiguration::effective`]
//! applies kube-proxy's defaults, resolves the differences between the two
//! API versions and the proxy mode (which section's `masqueradeBit`,
//! `syncPeriod`... counts) and returns plain values in [`ProxySettings`].
//!
//! `v1alpha1` follows upstream's `k8s.io/kube-proxy/config/v1alpha1` types
//! and `pkg/proxy/apis/config/v1alpha1` defaults and conversion. `v1alpha2`
//! follows the layout designed in KEP-784 (sync periods at the top level,
//! `linux.masqueradeAll`, `linux.conntrack`, `detectLocal.clusterCIDRs`,
//! `nodeIPOverride`, `localhostNodePorts` defaulting to false); upstream had
//! not released that version in the sources read, so its reading here is a
//! best effort.
//!
//! ```
//! use kproxy_core::config::{DetectLocalMode, KubeProxyConfiguration};
//! use std::time::Duration;
//!
//! let cfg: KubeProxyConfiguration = serde_json::from_str(r#"{
//!     "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
//!     "kind": "KubeProxyConfiguration",
//!     "clusterCIDR": "10.244.0.0/16",
//!     "iptables": {"minSyncPeriod": "2s"}
//! }"#).unwrap();
//! let s = cfg.effective().unwrap();
//! assert_eq!(s.masquerade_bit, 14);
//! assert_eq!(s.min_sync_period, Duration::from_secs(2));
//! assert_eq!(s.sync_period, Duration::from_secs(30));
//! assert_eq!(s.detect_local_mode, DetectLocalMode::ClusterCidr);
//! assert_eq!(s.cluster_cidrs[0].to_string(), "10.244.0.0/16");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::convert::sloppy;
use crate::model::{IpFamily, LocalDetector};

/// The `apiVersion` of kube-proxy's v1alpha1 configuration.
pub const V1ALPHA1: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The `apiVersion` of kube-proxy's v1alpha2 configuration.
pub const V1ALPHA2: &str = "kubeproxy.config.k8s.io/v1alpha2";

/// An error in a configuration value (one line: `<field>: <problem>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// The field path, e.g. `iptables.masqueradeBit`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// An error parsing a Go duration string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// The text that was parsed.
    pub input: String,
    /// Why it is not a duration.
    pub reason: &'static str,
}

/// Formats a duration as Go's `time.Duration.String` does: `"0s"`,
/// `"250ms"`, `"1.5s"`, `"1m30s"`, `"24h0m0s"` (what kube-proxy writes in a
/// configuration file).
///
/// ```
/// use kproxy_core::config::format_go_duration;
/// use std::time::Duration;
/// assert_eq!(format_go_duration(Duration::from_secs(86400)), "24h0m0s");
/// assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
/// assert_eq!(format_go_duration(Duration::from_millis(250)), "250ms");
/// assert_eq!(format_go_duration(Duration::ZERO), "0s");
/// ```
pub fn format_go_duration(d: Duration) -> String {
    /// `whole` followed by `frac` (of `digits` digits), trailing zeros dropped.
    fn decimal(whole: u128, frac: u128, digits: usize) -> String {
        let f = format!("{frac:0digits$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{f}")
        }
    }
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}\u{b5}s", decimal(n / 1_000, n % 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{}ms", decimal(n / 1_000_000, n % 1_000_000, 6));
    }
    let secs = n / 1_000_000_000;
    let s = decimal(secs % 60, n % 1_000_000_000, 9);
    let (m, h) = ((secs / 60) % 60, secs / 3600);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// Parses a Go duration (`time.ParseDuration`): `"30s"`, `"1m0s"`, `"1.5h"`,
/// `"250ms"`, `"0"`. Units: `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`.
/// Negative durations are rejected (kube-proxy has no use for them).
///
/// ```
/// use kproxy_core::config::parse_go_duration;
/// use std::time::Duration;
/// assert_eq!(parse_go_duration("1m0s").unwrap(), Duration::from_secs(60));
/// assert_eq!(parse_go_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert!(parse_go_duration("30").is_err());
/// ```
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let mut s = input;
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if let Some(rest) = s.strip_prefix('-') {
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        return Err(err("negative durations are not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u128 = 0; // nanoseconds
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let (unit, rest) = rest.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("number too large"))?
        };
        let mut value = int.checked_mul(scale).ok_or_else(|| err("overflow"))?;
        // Fraction: accumulate digits while they still matter.
        let mut frac_scale = scale;
        for d in frac_part.bytes() {
            frac_scale /= 10;
            if frac_scale == 0 {
                break;
            }
            value = value
                .checked_add(u128::from(d - b'0') * frac_scale)
                .ok_or_else(|| err("overflow"))?;
        }
        total = total.checked_add(value).ok_or_else(|| err("overflow"))?;
        s = rest;
    }
    // Go durations are int64 nanoseconds.
    if total > i64::MAX as u128 {
        return Err(err("overflow"));
    }
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// A Go duration as it appears in a configuration file (`"30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_go_duration(&s)
            .map(GoDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// `iptables` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpTablesConfiguration {
    /// `masqueradeBit` (0..=31).
    pub masquerade_bit: Option<i32>,
    /// `masqueradeAll` (v1alpha1; `linux.masqueradeAll` in v1alpha2).
    pub masquerade_all: Option<bool>,
    /// `localhostNodePorts`.
    pub localhost_node_ports: Option<bool>,
    /// `syncPeriod` (v1alpha1; top level in v1alpha2).
    pub sync_period: Option<GoDuration>,
    /// `minSyncPeriod` (v1alpha1; top level in v1alpha2).
    pub min_sync_period: Option<GoDuration>,
}

/// `nftables` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NfTablesConfiguration {
    /// `masqueradeBit` (0..=31).
    pub masquerade_bit: Option<i32>,
    /// `masqueradeAll` (v1alpha1; `linux.masqueradeAll` in v1alpha2).
    pub masquerade_all: Option<bool>,
    /// `syncPeriod` (v1alpha1; top level in v1alpha2).
    pub sync_period: Option<GoDuration>,
    /// `minSyncPeriod` (v1alpha1; top level in v1alpha2).
    pub min_sync_period: Option<GoDuration>,
}

/// `ipvs` section (only the sync periods, which count in `ipvs` mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpvsConfiguration {
    /// `syncPeriod` (v1alpha1).
    pub sync_period: Option<GoDuration>,
    /// `minSyncPeriod` (v1alpha1).
    pub min_sync_period: Option<GoDuration>,
}

/// `conntrack` section (`linux.conntrack` in v1alpha2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConntrackConfiguration {
    /// `maxPerCore`.
    pub max_per_core: Option<i32>,
    /// `min`.
    pub min: Option<i32>,
    /// `tcpEstablishedTimeout`.
    pub tcp_established_timeout: Option<GoDuration>,
    /// `tcpCloseWaitTimeout`.
    pub tcp_close_wait_timeout: Option<GoDuration>,
    /// `tcpBeLiberal`.
    pub tcp_be_liberal: Option<bool>,
    /// `udpTimeout`.
    pub udp_timeout: Option<GoDuration>,
    /// `udpStreamTimeout`.
    pub udp_stream_timeout: Option<GoDuration>,
}

/// `detectLocal` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectLocalConfiguration {
    /// `bridgeInterface` (BridgeInterface mode).
    pub bridge_interface: Option<String>,
    /// `interfaceNamePrefix` (InterfaceNamePrefix mode).
    pub interface_name_prefix: Option<String>,
    /// `clusterCIDRs` (v1alpha2; v1alpha1 has top-level `clusterCIDR`).
    #[serde(rename = "clusterCIDRs")]
    pub cluster_cidrs: Option<Vec<String>>,
}

/// `linux` section (v1alpha2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxConfiguration {
    /// `masqueradeAll`.
    pub masquerade_all: Option<bool>,
    /// `conntrack`.
    pub conntrack: Option<ConntrackConfiguration>,
    /// `oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
}

/// `clientConnection` section (both versions).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnectionConfiguration {
    /// `kubeconfig`: the kubeconfig file to reach the API server with.
    pub kubeconfig: Option<String>,
    /// `acceptContentTypes`.
    pub accept_content_types: Option<String>,
    /// `contentType`.
    pub content_type: Option<String>,
    /// `qps`.
    pub qps: Option<f32>,
    /// `burst`.
    pub burst: Option<i32>,
}

/// A kube-proxy configuration file, `v1alpha1` or `v1alpha2`, as written.
///
/// Only the fields kproxy uses are kept; unknown fields are ignored. Fields
/// of the other version are accepted but ignored by [`Self::effective`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    /// `apiVersion` ([`V1ALPHA1`] or [`V1ALPHA2`]; absent means v1alpha1).
    pub api_version: Option<String>,
    /// `kind` (`KubeProxyConfiguration`).
    pub kind: Option<String>,
    /// `featureGates`.
    pub feature_gates: Option<BTreeMap<String, bool>>,
    /// `hostnameOverride`: the node name.
    pub hostname_override: Option<String>,
    /// `bindAddress` (v1alpha1): overrides the node's primary IP unless it is
    /// unspecified (`0.0.0.0` / `::`).
    pub bind_address: Option<String>,
    /// `nodeIPOverride` (v1alpha2): the node's primary IPs.
    #[serde(rename = "nodeIPOverride")]
    pub node_ip_override: Option<Vec<String>>,
    /// `ipFamilyPolicy` (v1alpha2).
    pub ip_family_policy: Option<String>,
    /// `healthzBindAddress`.
    pub healthz_bind_address: Option<String>,
    /// `metricsBindAddress`.
    pub metrics_bind_address: Option<String>,
    /// `serviceProxyName`: the value of `service.kubernetes.io/service-proxy-name`
    /// this instance handles (unset: only Services without the label).
    pub service_proxy_name: Option<String>,
    /// `mode` (`iptables`, `nftables`, `ipvs`; empty means iptables on Linux).
    pub mode: Option<String>,
    /// `iptables`.
    pub iptables: Option<IpTablesConfiguration>,
    /// `nftables`.
    pub nftables: Option<NfTablesConfiguration>,
    /// `ipvs`.
    pub ipvs: Option<IpvsConfiguration>,
    /// `syncPeriod` (v1alpha2).
    pub sync_period: Option<GoDuration>,
    /// `minSyncPeriod` (v1alpha2).
    pub min_sync_period: Option<GoDuration>,
    /// `linux` (v1alpha2).
    pub linux: Option<LinuxConfiguration>,
    /// `detectLocalMode` (`ClusterCIDR`, `NodeCIDR`, `BridgeInterface`,
    /// `InterfaceNamePrefix`).
    pub detect_local_mode: Option<String>,
    /// `detectLocal`.
    pub detect_local: Option<DetectLocalConfiguration>,
    /// `clusterCIDR` (v1alpha1; comma-separated, at most one per family).
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    /// `nodePortAddresses`: CIDRs, or the single value `primary`.
    pub node_port_addresses: Option<Vec<String>>,
    /// `conntrack` (v1alpha1; `linux.conntrack` in v1alpha2).
    pub conntrack: Option<ConntrackConfiguration>,
    /// `oomScoreAdj` (v1alpha1).
    pub oom_score_adj: Option<i32>,
    /// `configSyncPeriod`.
    pub config_sync_period: Option<GoDuration>,
    /// `clientConnection`.
    pub client_connection: Option<ClientConnectionConfiguration>,
}

/// The configuration API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersion {
    /// `kubeproxy.config.k8s.io/v1alpha1`.
    V1Alpha1,
    /// `kubeproxy.config.k8s.io/v1alpha2`.
    V1Alpha2,
}

/// The proxy backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// `iptables` (also the Linux default for an empty mode).
    Iptables,
    /// `nftables`.
    Nftables,
    /// `ipvs` (not generated by kproxy).
    Ipvs,
    /// Anything else (e.g. `kernelspace`), kept as written.
    Other(String),
}

/// `detectLocalMode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectLocalMode {
    /// `ClusterCIDR` (default): source in the cluster CIDR of the family.
    ClusterCidr,
    /// `NodeCIDR`: source in the Node's `podCIDRs` of the family.
    NodeCidr,
    /// `BridgeInterface`: arrives on `detectLocal.bridgeInterface`.
    BridgeInterface,
    /// `InterfaceNamePrefix`: arrives on an interface named
    /// `detectLocal.interfaceNamePrefix*`.
    InterfaceNamePrefix,
    /// Any other value; kube-proxy then detects nothing as local.
    Other(String),
}

impl DetectLocalMode {
    /// The mode a `detectLocalMode` value (or `--detect-local-mode` flag)
    /// names; empty is the default, `ClusterCIDR`.
    ///
    /// ```
    /// use kproxy_core::config::DetectLocalMode;
    /// assert_eq!(DetectLocalMode::parse(""), DetectLocalMode::ClusterCidr);
    /// assert_eq!(DetectLocalMode::parse("NodeCIDR").as_str(), "NodeCIDR");
    /// ```
    pub fn parse(s: &str) -> Self {
        match s {
            "" | "ClusterCIDR" => Self::ClusterCidr,
            "NodeCIDR" => Self::NodeCidr,
            "BridgeInterface" => Self::BridgeInterface,
            "InterfaceNamePrefix" => Self::InterfaceNamePrefix,
            other => Self::Other(other.to_string()),
        }
    }

    /// The value as kube-proxy's configuration spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::ClusterCidr => "ClusterCIDR",
            Self::NodeCidr => "NodeCIDR",
            Self::BridgeInterface => "BridgeInterface",
            Self::InterfaceNamePrefix => "InterfaceNamePrefix",
            Self::Other(s) => s,
        }
    }
}

/// `nodePortAddresses`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Unset or empty: every local address.
    All,
    /// `primary`: the node's primary IP of each family.
    Primary,
    /// The listed CIDRs (canonical, masked).
    Cidrs(Vec<IpNet>),
}

/// Conntrack settings kproxy cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// `tcpBeLiberal` (default false). kube-proxy sets the sysctl; when it is
    /// (or already was) set, the KUBE-FORWARD INVALID drop rule is not written.
    pub tcp_be_liberal: bool,
    /// `maxPerCore` (default 32768).
    pub max_per_core: i32,
    /// `min` (default 131072).
    pub min: i32,
    /// `tcpEstablishedTimeout` (default 24h).
    pub tcp_established_timeout: Duration,
    /// `tcpCloseWaitTimeout` (default 1h).
    pub tcp_close_wait_timeout: Duration,
    /// `udpTimeout` (default 0: left as it is).
    pub udp_timeout: Duration,
    /// `udpStreamTimeout` (default 0: left as it is).
    pub udp_stream_timeout: Duration,
}

/// How kube-proxy reaches the API server (`clientConnection`), defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConnection {
    /// `kubeconfig` if non-empty (else the in-cluster configuration).
    pub kubeconfig: Option<String>,
    /// `acceptContentTypes` (default empty).
    pub accept_content_types: String,
    /// `contentType` (default `application/vnd.kubernetes.protobuf`).
    pub content_type: String,
    /// `qps` (default 5).
    pub qps: f32,
    /// `burst` (default 10).
    pub burst: i32,
}

impl Eq for ClientConnection {}

impl Default for ClientConnection {
    /// kube-proxy's v1alpha1 defaults.
    fn default() -> Self {
        ClientConnection {
            kubeconfig: None,
            accept_content_types: String::new(),
            content_type: "application/vnd.kubernetes.protobuf".into(),
            qps: 5.0,
            burst: 10,
        }
    }
}

/// kube-proxy's default `oomScoreAdj` (the kubelet's `KubeProxyOOMScoreAdj`).
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -999;

/// The effective configuration: defaults applied, versions and modes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Which version the file was.
    pub version: ConfigVersion,
    /// The backend.
    pub mode: ProxyMode,
    /// `hostnameOverride`, if set and non-empty (else the host name is used).
    pub hostname_override: Option<String>,
    /// Primary node IP overrides: v1alpha1 `bindAddress` when it is a specific
    /// address, v1alpha2 `nodeIPOverride`.
    pub node_ip_override: Vec<IpAddr>,
    /// `healthzBindAddress` with its port (default `0.0.0.0:10256`).
    pub healthz_bind_address: String,
    /// `metricsBindAddress` with its port (default `127.0.0.1:10249`).
    pub metrics_bind_address: String,
    /// `detectLocalMode`.
    pub detect_local_mode: DetectLocalMode,
    /// Cluster CIDRs (v1alpha1 `clusterCIDR` split at commas; v1alpha2
    /// `detectLocal.clusterCIDRs`), canonical and masked.
    pub cluster_cidrs: Vec<IpNet>,
    /// `detectLocal.bridgeInterface`.
    pub bridge_interface: Option<String>,
    /// `detectLocal.interfaceNamePrefix`.
    pub interface_name_prefix: Option<String>,
    /// `nodePortAddresses`.
    pub node_port_addresses: NodePortAddresses,
    /// The masquerade bit of the mode's section (default 14).
    pub masquerade_bit: u8,
    /// `masqueradeAll` of the mode's section (v1alpha2: `linux.masqueradeAll`).
    pub masquerade_all: bool,
    /// `iptables.localhostNodePorts` as configured (default true in v1alpha1,
    /// false in v1alpha2). Only iptables mode with IPv4 uses it.
    pub localhost_node_ports: bool,
    /// `syncPeriod` of the mode (default 30s).
    pub sync_period: Duration,
    /// `minSyncPeriod` of the mode (default 1s).
    pub min_sync_period: Duration,
    /// `configSyncPeriod` (default 15m).
    pub config_sync_period: Duration,
    /// Conntrack settings.
    pub conntrack: ConntrackSettings,
    /// `serviceProxyName` if non-empty.
    pub service_proxy_name: Option<String>,
    /// Feature gates as written.
    pub feature_gates: BTreeMap<String, bool>,
    /// `clientConnection`.
    pub client_connection: ClientConnection,
    /// `oomScoreAdj` (v1alpha2: `linux.oomScoreAdj`; default -999).
    pub oom_score_adj: i32,
}

impl Default for ProxySettings {
    /// kube-proxy's v1alpha1 defaults (what an empty configuration gives).
    fn default() -> Self {
        ProxySettings {
            version: ConfigVersion::V1Alpha1,
            mode: ProxyMode::Iptables,
            hostname_override: None,
            node_ip_override: Vec::new(),
            healthz_bind_address: "0.0.0.0:10256".into(),
            metrics_bind_address: "127.0.0.1:10249".into(),
            detect_local_mode: DetectLocalMode::ClusterCidr,
            cluster_cidrs: Vec::new(),
            bridge_interface: None,
            interface_name_prefix: None,
            node_port_addresses: NodePortAddresses::All,
            masquerade_bit: 14,
            masquerade_all: false,
            localhost_node_ports: true,
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
            config_sync_period: Duration::from_secs(900),
            conntrack: ConntrackSettings {
                tcp_be_liberal: false,
                max_per_core: 32 * 1024,
                min: 128 * 1024,
                tcp_established_timeout: Duration::from_secs(86400),
                tcp_close_wait_timeout: Duration::from_secs(3600),
                udp_timeout: Duration::ZERO,
                udp_stream_timeout: Duration::ZERO,
            },
            service_proxy_name: None,
            feature_gates: BTreeMap::new(),
            client_connection: ClientConnection::default(),
            oom_score_adj: DEFAULT_OOM_SCORE_ADJ,
        }
    }
}

impl ProxySettings {
    /// The local-traffic detector of `family` (spec §9.2): the first cluster
    /// CIDR of the family (`ClusterCIDR`), the first of the Node's pod CIDRs
    /// of the family (`NodeCIDR`), the bridge or the interface prefix; none
    /// when the needed value is missing or the mode is unknown.
    ///
    /// ```
    /// use kproxy_core::config::ProxySettings;
    /// use kproxy_core::model::{IpFamily, LocalDetector};
    /// let mut s = ProxySettings::default();
    /// s.cluster_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
    /// assert_eq!(s.local_detector(IpFamily::V4, &[]), LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()));
    /// assert_eq!(s.local_detector(IpFamily::V6, &[]), LocalDetector::None);
    /// ```
    pub fn local_detector(&self, family: IpFamily, node_pod_cidrs: &[IpNet]) -> LocalDetector {
        let first = |nets: &[IpNet]| {
            nets.iter()
                .find(|n| family.contains_net(n))
                .map_or(LocalDetector::None, |n| LocalDetector::Cidr(n.trunc()))
        };
        match &self.detect_local_mode {
            DetectLocalMode::ClusterCidr => first(&self.cluster_cidrs),
            DetectLocalMode::NodeCidr => first(node_pod_cidrs),
            DetectLocalMode::BridgeInterface => self
                .bridge_interface
                .clone()
                .map_or(LocalDetector::None, LocalDetector::BridgeInterface),
            DetectLocalMode::InterfaceNamePrefix => self
                .interface_name_prefix
                .clone()
                .map_or(LocalDetector::None, LocalDetector::InterfaceNamePrefix),
            DetectLocalMode::Other(_) => LocalDetector::None,
        }
    }

    /// `nodePortAddresses` as networks (all families): `primary` becomes the
    /// node's primary IPs as host prefixes (`/32`, `/128`); unset is empty
    /// (every address).
    ///
    /// ```
    /// use kproxy_core::config::{NodePortAddresses, ProxySettings};
    /// let mut s = ProxySettings::default();
    /// s.node_port_addresses = NodePortAddresses::Primary;
    /// let nets = s.node_port_networks(&["192.0.2.7".parse().unwrap()]);
    /// assert_eq!(nets[0].to_string(), "192.0.2.7/32");
    /// ```
    pub fn node_port_networks(&self, primary_ips: &[IpAddr]) -> Vec<IpNet> {
        match &self.node_port_addresses {
            NodePortAddresses::All => Vec::new(),
            NodePortAddresses::Primary => primary_ips.iter().map(|ip| IpNet::from(*ip)).collect(),
            NodePortAddresses::Cidrs(nets) => nets.clone(),
        }
    }
}

/// kube-proxy's healthz port.
const HEALTHZ_PORT: u16 = 10256;
/// kube-proxy's metrics port.
const METRICS_PORT: u16 = 10249;

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A duration that counts only when non-zero (Go's "zero means unset").
fn set(d: Option<GoDuration>) -> Option<Duration> {
    d.map(|d| d.0).filter(|d| !d.is_zero())
}

/// Appends `port` to `addr` when it has none (IPv6 literals get brackets);
/// anything else is kept as it is (kube-proxy's `AppendPortIfNeeded`).
///
/// ```
/// use kproxy_core::config::append_port_if_needed;
/// assert_eq!(append_port_if_needed("0.0.0.0", 10256), "0.0.0.0:10256");
/// assert_eq!(append_port_if_needed("::1", 10249), "[::1]:10249");
/// assert_eq!(append_port_if_needed("127.0.0.1:1", 10249), "127.0.0.1:1");
/// ```
pub fn append_port_if_needed(addr: &str, port: u16) -> String {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return addr.to_string();
    }
    match sloppy::parse_ip(addr) {
        Some(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Some(IpAddr::V4(ip)) => format!("{ip}:{port}"),
        None => addr.to_string(),
    }
}

impl KubeProxyConfiguration {
    /// The API version (absent or unknown `apiVersion` reads as v1alpha1).
    pub fn version(&self) -> ConfigVersion {
        match self.api_version.as_deref() {
            Some(V1ALPHA2) => ConfigVersion::V1Alpha2,
            _ => ConfigVersion::V1Alpha1,
        }
    }

    /// The proxy mode (empty or absent: iptables).
    pub fn proxy_mode(&self) -> ProxyMode {
        match non_empty(&self.mode) {
            None | Some("iptables") => ProxyMode::Iptables,
            Some("nftables") => ProxyMode::Nftables,
            Some("ipvs") => ProxyMode::Ipvs,
            Some(other) => ProxyMode::Other(other.to_string()),
        }
    }

    /// Applies kube-proxy's defaults and resolves version and mode
    /// differences. Fails on values kube-proxy's validation rejects and
    /// kproxy needs (bad CIDRs, masquerade bit out of range, bad IPs).
    pub fn effective(&self) -> Result<ProxySettings, ConfigError> {
        let version = self.version();
        let mode = self.proxy_mode();
        let iptables = self.iptables.clone().unwrap_or_default();
        let nftables = self.nftables.clone().unwrap_or_default();
        let ipvs = self.ipvs.clone().unwrap_or_default();
        let linux = self.linux.clone().unwrap_or_default();
        let detect_local = self.detect_local.clone().unwrap_or_default();

        // Masquerade bit: the mode's own section (ipvs uses iptables').
        let (bit_field, bit) = match mode {
            ProxyMode::Nftables => ("nftables.masqueradeBit", nftables.masquerade_bit),
            _ => ("iptables.masqueradeBit", iptables.masquerade_bit),
        };
        let masquerade_bit = match bit.unwrap_or(14) {
            b @ 0..=31 => b as u8,
            b => {
                return Err(ConfigError::new(
                    bit_field,
                    format!("{b} must be within the range [0, 31]"),
                ));
            }
        };

        let (masquerade_all, sync, min_sync, conntrack, node_ip_override, cidr_strings) =
            match version {
                ConfigVersion::V1Alpha1 => {
                    let masq = match mode {
                        ProxyMode::Nftables => nftables.masquerade_all,
                        _ => iptables.masquerade_all,
                    };
                    let (sync, min_sync) = match mode {
                        ProxyMode::Nftables => (nftables.sync_period, nftables.min_sync_period),
                        ProxyMode::Ipvs => (ipvs.sync_period, ipvs.min_sync_period),
                        _ => (iptables.sync_period, iptables.min_sync_period),
                    };
                    let mut overrides = Vec::new();
                    if let Some(b) = non_empty(&self.bind_address) {
                        let ip = sloppy::parse_ip(b).ok_or_else(|| {
                            ConfigError::new("bindAddress", format!("{b:?} is not a valid IP"))
                        })?;
                        if !ip.is_unspecified() {
                            overrides.push(ip);
                        }
                    }
                    let cidrs: Vec<(String, String)> = non_empty(&self.cluster_cidr)
                        .map(|s| {
                            s.split(',')
                                .map(|c| ("clusterCIDR".to_string(), c.trim().to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        masq,
                        sync,
                        min_sync,
                        self.conntrack.clone(),
                        overrides,
                        cidrs,
                    )
                }
                ConfigVersion::V1Alpha2 => {
                    let mut overrides = Vec::new();
                    for (i, s) in self.node_ip_override.iter().flatten().enumerate() {
                        let ip = sloppy::parse_ip(s.trim()).ok_or_else(|| {
                            ConfigError::new(
                                format!("nodeIPOverride[{i}]"),
                                format!("{s:?} is not a valid IP"),
                            )
                        })?;
                        overrides.push(ip);
                    }
                    let cidrs = detect_local
                        .cluster_cidrs
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, c)| {
                            (
                                format!("detectLocal.clusterCIDRs[{i}]"),
                                c.trim().to_string(),
                            )
                        })
                        .collect();
                    (
                        linux.masquerade_all,
                        self.sync_period,
                        self.min_sync_period,
                        linux.conntrack.clone(),
                        overrides,
                        cidrs,
                    )
                }
            };

        let mut cluster_cidrs = Vec::new();
        for (field, c) in cidr_strings {
            let net = sloppy::parse_cidr(&c)
                .ok_or_else(|| ConfigError::new(field, format!("{c:?} is not a valid CIDR")))?;
            cluster_cidrs.push(net.trunc());
        }

        let node_port_addresses = match self.node_port_addresses.as_deref() {
            None | Some([]) => NodePortAddresses::All,
            Some([one]) if one.trim() == "primary" => NodePortAddresses::Primary,
            Some(list) => {
                let mut nets = Vec::new();
                for (i, c) in list.iter().enumerate() {
                    let net = sloppy::parse_cidr(c.trim()).ok_or_else(|| {
                        ConfigError::new(
                            format!("nodePortAddresses[{i}]"),
                            format!("{c:?} is not a valid CIDR (or the single value \"primary\")"),
                        )
                    })?;
                    nets.push(net.trunc());
                }
                NodePortAddresses::Cidrs(nets)
            }
        };

        let bind_is_v6 = matches!(
            non_empty(&self.bind_address).and_then(sloppy::parse_ip),
            Some(IpAddr::V6(_))
        ) && version == ConfigVersion::V1Alpha1;
        let (healthz_host, metrics_host) = if bind_is_v6 {
            ("[::]", "[::1]")
        } else {
            ("0.0.0.0", "127.0.0.1")
        };
        let healthz_bind_address = match non_empty(&self.healthz_bind_address) {
            Some(a) => append_port_if_needed(a, HEALTHZ_PORT),
            None => format!("{healthz_host}:{HEALTHZ_PORT}"),
        };
        let metrics_bind_address = match non_empty(&self.metrics_bind_address) {
            Some(a) => append_port_if_needed(a, METRICS_PORT),
            None => format!("{metrics_host}:{METRICS_PORT}"),
        };

        let detect_local_mode =
            DetectLocalMode::parse(non_empty(&self.detect_local_mode).unwrap_or(""));

        let localhost_default = version == ConfigVersion::V1Alpha1;
        let ct = conntrack.unwrap_or_default();
        let conntrack = ConntrackSettings {
            tcp_be_liberal: ct.tcp_be_liberal.unwrap_or(false),
            max_per_core: ct.max_per_core.unwrap_or(32 * 1024),
            min: ct.min.unwrap_or(128 * 1024),
            tcp_established_timeout: ct
                .tcp_established_timeout
                .map_or(Duration::from_secs(86400), |d| d.0),
            tcp_close_wait_timeout: ct
                .tcp_close_wait_timeout
                .map_or(Duration::from_secs(3600), |d| d.0),
            udp_timeout: ct.udp_timeout.map_or(Duration::ZERO, |d| d.0),
            udp_stream_timeout: ct.udp_stream_timeout.map_or(Duration::ZERO, |d| d.0),
        };
        let cc = self.client_connection.clone().unwrap_or_default();
        let defaults = ClientConnection::default();
        let client_connection = ClientConnection {
            kubeconfig: non_empty(&cc.kubeconfig).map(str::to_string),
            accept_content_types: cc.accept_content_types.unwrap_or_default(),
            content_type: non_empty(&cc.content_type).map_or(defaults.content_type, str::to_string),
            qps: cc
                .qps
                .filter(|q| q.is_finite() && *q != 0.0)
                .unwrap_or(defaults.qps),
            burst: cc.burst.filter(|b| *b != 0).unwrap_or(defaults.burst),
        };
        let oom_score_adj = match version {
            ConfigVersion::V1Alpha1 => self.oom_score_adj,
            ConfigVersion::V1Alpha2 => linux.oom_score_adj,
        }
        .unwrap_or(DEFAULT_OOM_SCORE_ADJ);

        Ok(ProxySettings {
            version,
            mode,
            hostname_override: non_empty(&self.hostname_override).map(str::to_string),
            node_ip_override,
            healthz_bind_address,
            metrics_bind_address,
            detect_local_mode,
            cluster_cidrs,
            bridge_interface: non_empty(&detect_local.bridge_interface).map(str::to_string),
            interface_name_prefix: non_empty(&detect_local.interface_name_prefix)
                .map(str::to_string),
            node_port_addresses,
            masquerade_bit,
            masquerade_all: masquerade_all.unwrap_or(false),
            localhost_node_ports: iptables.localhost_node_ports.unwrap_or(localhost_default),
            sync_period: set(sync).unwrap_or(Duration::from_secs(30)),
            min_sync_period: set(min_sync).unwrap_or(Duration::from_secs(1)),
            config_sync_period: set(self.config_sync_period).unwrap_or(Duration::from_secs(900)),
            conntrack,
            service_proxy_name: non_empty(&self.service_proxy_name).map(str::to_string),
            feature_gates: self.feature_gates.clone().unwrap_or_default(),
            client_connection,
            oom_score_adj,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> KubeProxyConfiguration {
        serde_json::from_str(json).expect("test config parses")
    }

    #[test]
    fn go_durations_round_trip() {
        for (d, text) in [
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(10), "10\u{b5}s"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(3_723), "1h2m3s"),
            (Duration::from_secs(3_600), "1h0m0s"),
            (Duration::from_millis(90_500), "1m30.5s"),
        ] {
            assert_eq!(format_go_duration(d), text);
            assert_eq!(parse_go_duration(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("0", 0),
            ("0s", 0),
            ("30s", 30_000_000_000u64),
            ("1m0s", 60_000_000_000),
            ("1h2m3s", 3_723_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("250ms", 250_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("7ns", 7),
            ("+2s", 2_000_000_000),
        ];
        for (s, ns) in ok {
            assert_eq!(
                parse_go_duration(s).map(|d| d.as_nanos()),
                Ok(u128::from(ns)),
                "{s}"
            );
        }
        for bad in ["", "30", "s", "1x", "-1s", "1..5s", "99999999999999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_go_duration("5").unwrap_err().to_string(),
            "invalid duration \"5\": missing unit"
        );
    }

    /// A fraction added to an integer part just below `u128::MAX`
    /// nanoseconds overflowed: a panic in debug builds, a wrapped (and
    /// accepted) value in release ones. Replayed by the fuzz corpus test
    /// from `fuzz/regressions/scalars/`.
    #[test]
    fn duration_fraction_overflow_is_an_error() {
        for s in [
            "340282366920938463463374607431.9s",
            "94522879700260684295381835.9h",
            "340282366920938463463374607431768211.9us",
        ] {
            assert_eq!(
                parse_go_duration(s).map_err(|e| e.to_string()),
                Err(format!("invalid duration {s:?}: overflow")),
            );
        }
    }

    #[test]
    fn empty_gets_v1alpha1_defaults() {
        let s = KubeProxyConfiguration::default().effective().unwrap();
        assert_eq!(s, ProxySettings::default());
        assert_eq!(s.version, ConfigVersion::V1Alpha1);
        assert_eq!(s.mode, ProxyMode::Iptables);
        assert_eq!(s.masquerade_bit, 14);
        assert!(!s.masquerade_all);
        assert!(s.localhost_node_ports);
        assert_eq!(s.sync_period, Duration::from_secs(30));
        assert_eq!(s.min_sync_period, Duration::from_secs(1));
        assert_eq!(s.healthz_bind_address, "0.0.0.0:10256");
        assert_eq!(s.metrics_bind_address, "127.0.0.1:10249");
        assert_eq!(s.detect_local_mode, DetectLocalMode::ClusterCidr);
        assert_eq!(s.node_port_addresses, NodePortAddresses::All);
        assert!(s.cluster_cidrs.is_empty());
        assert!(!s.conntrack.tcp_be_liberal);
    }

    #[test]
    fn v1alpha1_full() {
        let c = parse(
            r#"{
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "bindAddress": "fd00::10",
            "hostnameOverride": "node-a",
            "clusterCIDR": "10.244.0.0/16, fd00:10::5/64",
            "mode": "iptables",
            "detectLocalMode": "InterfaceNamePrefix",
            "detectLocal": {"interfaceNamePrefix": "veth", "bridgeInterface": ""},
            "nodePortAddresses": ["192.168.001.0/24", "::1/128"],
            "iptables": {"masqueradeAll": true, "masqueradeBit": 15,
                         "localhostNodePorts": false, "syncPeriod": "1m0s", "minSyncPeriod": "0s"},
            "nftables": {"masqueradeBit": 3, "syncPeriod": "5s"},
            "conntrack": {"tcpBeLiberal": true, "maxPerCore": 0},
            "metricsBindAddress": "0.0.0.0",
            "unknownField": {"whatever": 1},
            "syncPeriod": "99s"
        }"#,
        );
        let s = c.effective().unwrap();
        assert_eq!(
            s.node_ip_override,
            vec!["fd00::10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.hostname_override.as_deref(), Some("node-a"));
        assert_eq!(
            s.cluster_cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.244.0.0/16", "fd00:10::/64"]
        );
        assert_eq!(s.detect_local_mode, DetectLocalMode::InterfaceNamePrefix);
        assert_eq!(s.interface_name_prefix.as_deref(), Some("veth"));
        assert_eq!(s.bridge_interface, None);
        assert_eq!(
            s.node_port_addresses,
            NodePortAddresses::Cidrs(vec![
                "192.168.1.0/24".parse().unwrap(),
                "::1/128".parse().unwrap()
            ])
        );
        assert!(s.masquerade_all);
        assert_eq!(s.masquerade_bit, 15);
        assert!(!s.localhost_node_ports);
        // top-level syncPeriod is a v1alpha2 field: ignored here.
        assert_eq!(s.sync_period, Duration::from_secs(60));
        // 0s means unset.
        assert_eq!(s.min_sync_period, Duration::from_secs(1));
        assert!(s.conntrack.tcp_be_liberal);
        assert_eq!(s.conntrack.max_per_core, 0);
        // IPv6 bindAddress moves the default healthz address to [::].
        assert_eq!(s.healthz_bind_address, "[::]:10256");
        assert_eq!(s.metrics_bind_address, "0.0.0.0:10249");
    }

    #[test]
    fn v1alpha1_nftables_mode_uses_nftables_section() {
        let c = parse(
            r#"{"mode": "nftables",
                "iptables": {"masqueradeBit": 15, "masqueradeAll": true, "syncPeriod": "1m"},
                "nftables": {"masqueradeBit": 3, "syncPeriod": "5s"}}"#,
        );
        let s = c.effective().unwrap();
        assert_eq!(s.mode, ProxyMode::Nftables);
        assert_eq!(s.masquerade_bit, 3);
        assert!(!s.masquerade_all);
        assert_eq!(s.sync_period, Duration::from_secs(5));
    }

    #[test]
    fn v1alpha2_layout() {
        let c = parse(
            r#"{
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha2",
            "kind": "KubeProxyConfiguration",
            "syncPeriod": "10s",
            "minSyncPeriod": "500ms",
            "linux": {"masqueradeAll": true, "conntrack": {"tcpBeLiberal": true}},
            "detectLocal": {"clusterCIDRs": ["10.0.0.0/8", "fd00:10::/64"]},
            "nodeIPOverride": ["192.168.0.10"],
            "iptables": {"masqueradeAll": false, "syncPeriod": "1h"},
            "nodePortAddresses": ["primary"]
        }"#,
        );
        let s = c.effective().unwrap();
        assert_eq!(s.version, ConfigVersion::V1Alpha2);
        assert_eq!(s.sync_period, Duration::from_secs(10));
        assert_eq!(s.min_sync_period, Duration::from_millis(500));
        assert!(s.masquerade_all);
        assert!(s.conntrack.tcp_be_liberal);
        assert_eq!(s.cluster_cidrs.len(), 2);
        assert_eq!(
            s.node_ip_override,
            vec!["192.168.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.node_port_addresses, NodePortAddresses::Primary);
        // v1alpha2 default for localhostNodePorts is false.
        assert!(!s.localhost_node_ports);
        assert_eq!(s.masquerade_bit, 14);
    }

    #[test]
    fn errors() {
        let e = parse(r#"{"iptables": {"masqueradeBit": 32}}"#)
            .effective()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "iptables.masqueradeBit: 32 must be within the range [0, 31]"
        );
        let e = parse(r#"{"clusterCIDR": "10.0.0.0/8,bogus"}"#)
            .effective()
            .unwrap_err();
        assert_eq!(e.field, "clusterCIDR");
        let e = parse(r#"{"nodePortAddresses": ["primary", "10.0.0.0/8"]}"#)
            .effective()
            .unwrap_err();
        assert_eq!(e.field, "nodePortAddresses[0]");
        let e =
            serde_json::from_str::<KubeProxyConfiguration>(r#"{"iptables": {"syncPeriod": "30"}}"#)
                .unwrap_err();
        assert!(e.to_string().contains("missing unit"), "{e}");
    }

    #[test]
    fn nulls_read_as_absent() {
        let c = parse(
            r#"{"iptables": {"masqueradeBit": null, "syncPeriod": "0s"},
                "nodePortAddresses": null, "mode": "", "clusterCIDR": ""}"#,
        );
        assert_eq!(c.effective().unwrap(), ProxySettings::default());
    }

    #[test]
    fn local_detectors() {
        let pods: Vec<IpNet> = vec![
            "fd00:1::/64".parse().unwrap(),
            "10.1.2.0/24".parse().unwrap(),
        ];
        let mut s = ProxySettings::default();
        assert_eq!(s.local_detector(IpFamily::V4, &pods), LocalDetector::None);
        s.detect_local_mode = DetectLocalMode::NodeCidr;
        assert_eq!(
            s.local_detector(IpFamily::V4, &pods),
            LocalDetector::Cidr("10.1.2.0/24".parse().unwrap())
        );
        s.detect_local_mode = DetectLocalMode::BridgeInterface;
        assert_eq!(s.local_detector(IpFamily::V4, &pods), LocalDetector::None);
        s.bridge_interface = Some("cbr0".into());
        assert_eq!(
            s.local_detector(IpFamily::V6, &pods),
            LocalDetector::BridgeInterface("cbr0".into())
        );
        s.detect_local_mode = DetectLocalMode::Other("Bogus".into());
        assert_eq!(s.local_detector(IpFamily::V4, &pods), LocalDetector::None);
        assert!(s.node_port_networks(&[]).is_empty());
    }
}
