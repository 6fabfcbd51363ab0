//! kube-proxy's node-level configuration: flags, `--config` file and the
//! Node object, resolved with kube-proxy's precedence
//! ([`kproxy_core::resolve`]) into one node configuration per family.
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
use kproxy_core::convert::{Inventory, Object, parse_documents, sloppy};
use kproxy_core::model::{HostFeatures, IpFamily};
use kproxy_core::resolve::NodeInputs;

/// The node-level options shared by every command that compiles rules.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Node configuration (kube-proxy's flags)")]
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
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub masquerade_all: Option<bool>,
    /// The bit of the packet mark that marks traffic to masquerade (0-31).
    #[arg(long, value_name = "BIT")]
    pub iptables_masquerade_bit: Option<u8>,
    /// Node port addresses: comma-separated CIDRs, or `primary`.
    #[arg(long, value_name = "CIDRS")]
    pub nodeport_addresses: Option<String>,
    /// Accept node ports on 127.0.0.0/8 (IPv4 iptables only).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub iptables_localhost_nodeports: Option<bool>,
    /// iptables | nftables.
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,
    /// A node interface address (repeatable); stands in for the addresses
    /// kube-proxy reads from the host (nodePortAddresses selects from them).
    #[arg(
        help_heading = "Host (what kube-proxy reads from the node)",
        long = "node-address",
        value_name = "IP[/PREFIX]"
    )]
    pub node_addresses: Vec<String>,
    /// Host features kube-proxy probes at run time: comma-separated from
    /// `random-fully` (MASQUERADE --random-fully) and `nfacct`; empty for none.
    #[arg(
        help_heading = "Host (what kube-proxy reads from the node)",
        long,
        value_name = "LIST",
        default_value = "random-fully,nfacct"
    )]
    pub host_features: String,
    /// The nf_conntrack_tcp_be_liberal sysctl is set on the node.
    #[arg(help_heading = "Host (what kube-proxy reads from the node)", long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
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
    #[arg(
        help_heading = "Host (what kube-proxy reads from the node)",
        long,
        value_name = "FAMILY"
    )]
    pub ip_family: Option<String>,
    /// The kube-proxy release whose rule layout is written: `current` (the
    /// default), `1.5`, `v1.5.2`, `1.35`, ... iptables: 1.5.x and 1.34+;
    /// nftables: 1.29-1.35 (pre-1.36 layout) and 1.36+. A flag only (not
    /// read from a configuration file).
    #[arg(help_heading = "Output", long, value_name = "X.Y")]
    pub kube_proxy_version: Option<String>,
}

pub use kproxy_core::resolve::{NFT_LOCALHOST_NODEPORTS_GATE, Resolved};

/// The names of the flags among `field => "--flag"` that `args` has
/// (fields of type `Option`).
macro_rules! flags_given {
    ($args:expr; $($field:ident => $flag:literal),* $(,)?) => {{
        let mut given: Vec<&'static str> = Vec::new();
        $(if $args.$field.is_some() { given.push($flag); })*
        given
    }};
}

fn parse_bool_flag_given(args: &NodeArgs) -> Vec<&'static str> {
    flags_given!(args;
        bind_address => "--bind-address",
        cluster_cidr => "--cluster-cidr",
        detect_local_mode => "--detect-local-mode",
        pod_bridge_interface => "--pod-bridge-interface",
        pod_interface_name_prefix => "--pod-interface-name-prefix",
        masquerade_all => "--masquerade-all",
        iptables_masquerade_bit => "--iptables-masquerade-bit",
        nodeport_addresses => "--nodeport-addresses",
        iptables_localhost_nodeports => "--iptables-localhost-nodeports",
        proxy_mode => "--proxy-mode",
        feature_gates => "--feature-gates",
    )
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
        s.detect_local_mode = DetectLocalMode::parse(m);
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

/// Resolves the node configuration of every family to compile: the
/// settings (file or flags) and kproxy's offline flags, resolved by
/// [`kproxy_core::resolve::resolve`].
pub fn resolve(args: &NodeArgs, inv: &Inventory) -> Result<Resolved> {
    let mut warnings = Vec::new();
    let settings = match load_config(args, inv, &mut warnings)? {
        Some(s) => s,
        None => settings_from_flags(args)?,
    };
    let mut node_addresses: Vec<IpAddr> = Vec::new();
    for a in &args.node_addresses {
        let ip = sloppy::parse_cidr(a)
            .map(|n| n.addr())
            .or_else(|| sloppy::parse_ip(a))
            .with_context(|| format!("--node-address: {a:?} is not an IP address or CIDR"))?;
        node_addresses.push(ip);
    }
    let inputs = NodeInputs {
        hostname_override: args.hostname_override.clone(),
        node_addresses,
        families: args.ip_family.as_deref().map(parse_family).transpose()?,
        host: parse_host_features(&args.host_features)?,
        conntrack_tcp_be_liberal: args.conntrack_tcp_be_liberal,
        service_cidrs: parse_cidrs("--service-cidr", &args.service_cidrs.join(","))?,
    };
    let mut resolved = kproxy_core::resolve::resolve(&settings, &inputs, inv)?;
    warnings.append(&mut resolved.warnings);
    resolved.warnings = warnings;
    Ok(resolved)
}

// ---------------------------------------------------------------------------
// kube-proxy's remaining flags (`kproxy run`).

/// Parses a Go boolean flag value (`strconv.ParseBool`: 1, t, T, TRUE,
/// true, True, 0, f, F, FALSE, false, False).
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

/// Parses a Go duration flag value (`5s`, `1m`, `2h22m`).
pub fn go_duration(s: &str) -> Result<std::time::Duration, String> {
    kproxy_core::config::parse_go_duration(s).map_err(|e| e.to_string())
}

/// The flags of kube-proxy's command line that `kproxy compile` has no use
/// for: the API connection, the host setup, the actions
/// (`--cleanup`, `--init-only`, `--write-config-to`), the logging flags and
/// the flags of features kproxy does not have (accepted, with a warning
/// when given). Booleans are Go's: `--flag`, `--flag=false`.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "kube-proxy's other flags")]
pub struct KubeProxyFlags {
    /// The kubeconfig to reach the API server with. Takes precedence over
    /// the configuration's `clientConnection.kubeconfig`; neither: the
    /// in-cluster configuration (then $KUBECONFIG / ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's address (overrides the kubeconfig's server).
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    /// clientConnection.contentType (kproxy speaks JSON; accepted).
    #[arg(long, value_name = "TYPE")]
    pub kube_api_content_type: Option<String>,
    /// clientConnection.burst (accepted; kube-rs has no client-side limiter).
    #[arg(long, value_name = "N")]
    pub kube_api_burst: Option<i32>,
    /// clientConnection.qps (accepted; kube-rs has no client-side limiter).
    #[arg(long, value_name = "QPS")]
    pub kube_api_qps: Option<f32>,
    /// Remove kube-proxy's (and kproxy's) rules of every mode, then exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub cleanup: Option<bool>,
    /// Do the privileged set-up (sysctls), then exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub init_only: Option<bool>,
    /// Write the effective configuration (kubeproxy.config.k8s.io/v1alpha1
    /// YAML) to FILE, then exit.
    #[arg(long, value_name = "FILE")]
    pub write_config_to: Option<PathBuf>,
    /// healthzBindAddress (`/healthz`, `/livez`); IP or IP:PORT. Empty: no
    /// server. Default 0.0.0.0:10256.
    #[arg(long, value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// metricsBindAddress (`/metrics`); IP or IP:PORT. Empty: no server.
    /// Default 127.0.0.1:10249.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// Deprecated: the healthz port when --healthz-bind-address has none; 0
    /// disables the server.
    #[arg(long, value_name = "PORT")]
    pub healthz_port: Option<u16>,
    /// Deprecated: the metrics port when --metrics-bind-address has none; 0
    /// disables the server.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// syncPeriod (iptables and nftables modes).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub iptables_sync_period: Option<std::time::Duration>,
    /// minSyncPeriod (iptables and nftables modes).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub iptables_min_sync_period: Option<std::time::Duration>,
    /// oomScoreAdj of the process, -1000..=1000 (default -999).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub oom_score_adj: Option<i32>,
    /// conntrack.maxPerCore (0: leave nf_conntrack_max as it is).
    #[arg(long, value_name = "N")]
    pub conntrack_max_per_core: Option<i32>,
    /// conntrack.min.
    #[arg(long, value_name = "N")]
    pub conntrack_min: Option<i32>,
    /// conntrack.tcpEstablishedTimeout (0: leave as it is).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub conntrack_tcp_timeout_established: Option<std::time::Duration>,
    /// conntrack.tcpCloseWaitTimeout (0: leave as it is).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub conntrack_tcp_timeout_close_wait: Option<std::time::Duration>,
    /// conntrack.udpTimeout (0: leave as it is).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub conntrack_udp_timeout: Option<std::time::Duration>,
    /// conntrack.udpStreamTimeout (0: leave as it is).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub conntrack_udp_timeout_stream: Option<std::time::Duration>,
    /// configSyncPeriod (accepted; watches need no resync).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub config_sync_period: Option<std::time::Duration>,
    /// Log verbosity, klog's: 0-1 info, 2-3 debug, 4 and more trace (the
    /// KPROXY_LOG filter otherwise).
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u8>,
    /// Per-module verbosity: comma-separated TARGET=LEVEL, TARGET a Rust
    /// module path prefix (e.g. kproxy_bin::agent::kube=4).
    #[arg(long, value_name = "LIST")]
    pub vmodule: Option<String>,
    /// Print the version and exit (`--version=raw` too).
    #[arg(long, value_name = "raw", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub version: Option<String>,
    /// Accepted for kube-proxy compatibility: text is the only format.
    #[arg(long, value_name = "FORMAT")]
    pub logging_format: Option<String>,
    /// Accepted for kube-proxy compatibility (logs are not buffered).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub log_flush_frequency: Option<std::time::Duration>,
    #[command(flatten)]
    pub unsupported: UnsupportedFlags,
}

/// kube-proxy flags of features kproxy does not have: they parse, and a
/// warning says they have no effect.
#[derive(Args, Debug, Clone, Default)]
pub struct UnsupportedFlags {
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    bind_address_hard_fail: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    profiling: Option<bool>,
    #[arg(long, hide = true)]
    show_hidden_metrics_for_version: Option<String>,
    #[arg(long, hide = true, value_parser = go_duration)]
    ipvs_sync_period: Option<std::time::Duration>,
    #[arg(long, hide = true, value_parser = go_duration)]
    ipvs_min_sync_period: Option<std::time::Duration>,
    #[arg(long, hide = true)]
    ipvs_scheduler: Option<String>,
    #[arg(long, hide = true)]
    ipvs_exclude_cidrs: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    ipvs_strict_arp: Option<bool>,
    #[arg(long, hide = true, value_parser = go_duration)]
    ipvs_tcp_timeout: Option<std::time::Duration>,
    #[arg(long, hide = true, value_parser = go_duration)]
    ipvs_tcpfin_timeout: Option<std::time::Duration>,
    #[arg(long, hide = true, value_parser = go_duration)]
    ipvs_udp_timeout: Option<std::time::Duration>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    log_json_split_stream: Option<bool>,
    #[arg(long, hide = true)]
    log_json_info_buffer_size: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    log_text_split_stream: Option<bool>,
    #[arg(long, hide = true)]
    log_text_info_buffer_size: Option<String>,
    #[arg(long, hide = true)]
    boot_id_file: Option<String>,
    #[arg(long, hide = true)]
    machine_id_file: Option<String>,
}

impl UnsupportedFlags {
    /// The flags given, by name.
    fn given(&self) -> Vec<&'static str> {
        flags_given!(self;
            bind_address_hard_fail => "--bind-address-hard-fail",
            profiling => "--profiling",
            show_hidden_metrics_for_version => "--show-hidden-metrics-for-version",
            ipvs_sync_period => "--ipvs-sync-period",
            ipvs_min_sync_period => "--ipvs-min-sync-period",
            ipvs_scheduler => "--ipvs-scheduler",
            ipvs_exclude_cidrs => "--ipvs-exclude-cidrs",
            ipvs_strict_arp => "--ipvs-strict-arp",
            ipvs_tcp_timeout => "--ipvs-tcp-timeout",
            ipvs_tcpfin_timeout => "--ipvs-tcpfin-timeout",
            ipvs_udp_timeout => "--ipvs-udp-timeout",
            log_json_split_stream => "--log-json-split-stream",
            log_json_info_buffer_size => "--log-json-info-buffer-size",
            log_text_split_stream => "--log-text-split-stream",
            log_text_info_buffer_size => "--log-text-info-buffer-size",
            boot_id_file => "--boot-id-file",
            machine_id_file => "--machine-id-file",
        )
    }
}

impl KubeProxyFlags {
    /// The configuration flags given (ignored when a file is given).
    fn config_flags_given(&self) -> Vec<&'static str> {
        flags_given!(self;
            kube_api_content_type => "--kube-api-content-type",
            kube_api_burst => "--kube-api-burst",
            kube_api_qps => "--kube-api-qps",
            healthz_bind_address => "--healthz-bind-address",
            metrics_bind_address => "--metrics-bind-address",
            iptables_sync_period => "--iptables-sync-period",
            iptables_min_sync_period => "--iptables-min-sync-period",
            oom_score_adj => "--oom-score-adj",
            conntrack_max_per_core => "--conntrack-max-per-core",
            conntrack_min => "--conntrack-min",
            conntrack_tcp_timeout_established => "--conntrack-tcp-timeout-established",
            conntrack_tcp_timeout_close_wait => "--conntrack-tcp-timeout-close-wait",
            conntrack_udp_timeout => "--conntrack-udp-timeout",
            conntrack_udp_timeout_stream => "--conntrack-udp-timeout-stream",
            config_sync_period => "--config-sync-period",
        )
    }

    /// Applies the configuration flags over `s` (no file given), as
    /// kube-proxy does; `deprecated_ports`: whether --healthz-port and
    /// --metrics-port count (not with --write-config-to).
    fn apply(&self, s: &mut ProxySettings, deprecated_ports: bool) {
        let cc = &mut s.client_connection;
        if let Some(t) = &self.kube_api_content_type {
            cc.content_type = t.clone();
        }
        if let Some(b) = self.kube_api_burst {
            cc.burst = b;
        }
        if let Some(q) = self.kube_api_qps {
            cc.qps = q;
        }
        if let Some(a) = &self.healthz_bind_address {
            s.healthz_bind_address = a.clone();
        }
        if let Some(a) = &self.metrics_bind_address {
            s.metrics_bind_address = a.clone();
        }
        if deprecated_ports {
            s.healthz_bind_address = address_with_port(&s.healthz_bind_address, self.healthz_port);
            s.metrics_bind_address = address_with_port(&s.metrics_bind_address, self.metrics_port);
        }
        if s.mode != ProxyMode::Ipvs {
            if let Some(d) = self.iptables_sync_period {
                s.sync_period = d;
            }
            if let Some(d) = self.iptables_min_sync_period {
                s.min_sync_period = d;
            }
        }
        if let Some(o) = self.oom_score_adj {
            s.oom_score_adj = o;
        }
        let ct = &mut s.conntrack;
        if let Some(n) = self.conntrack_max_per_core {
            ct.max_per_core = n;
        }
        if let Some(n) = self.conntrack_min {
            ct.min = n;
        }
        if let Some(d) = self.conntrack_tcp_timeout_established {
            ct.tcp_established_timeout = d;
        }
        if let Some(d) = self.conntrack_tcp_timeout_close_wait {
            ct.tcp_close_wait_timeout = d;
        }
        if let Some(d) = self.conntrack_udp_timeout {
            ct.udp_timeout = d;
        }
        if let Some(d) = self.conntrack_udp_timeout_stream {
            ct.udp_stream_timeout = d;
        }
        if let Some(d) = self.config_sync_period {
            s.config_sync_period = d;
        }
    }

    /// The tracing filter the logging flags ask for, if any.
    pub fn log_filter(&self) -> Option<String> {
        log_filter(self.verbosity, self.vmodule.as_deref())
    }
}

/// kube-proxy's deprecated `--healthz-port` / `--metrics-port`: port 0
/// disables the server, another port is appended to an address without one.
fn address_with_port(addr: &str, port: Option<u16>) -> String {
    match port {
        Some(0) => String::new(),
        Some(p) => kproxy_core::config::append_port_if_needed(addr, p),
        None => addr.to_string(),
    }
}

/// The tracing level of a klog verbosity.
fn level_of(v: u8) -> &'static str {
    match v {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    }
}

/// The tracing filter for `--v` and `--vmodule` (`None` when neither is
/// given): the level of `--v` (info when only --vmodule is given), then one
/// `target=level` directive per `--vmodule` entry. Entries that are not
/// `TARGET=N` are dropped.
pub fn log_filter(v: Option<u8>, vmodule: Option<&str>) -> Option<String> {
    if v.is_none() && vmodule.is_none() {
        return None;
    }
    let mut directives = vec![level_of(v.unwrap_or(0)).to_string()];
    for entry in vmodule.unwrap_or_default().split(',') {
        let Some((target, level)) = entry.trim().split_once('=') else {
            continue;
        };
        let (target, Ok(level)) = (target.trim(), level.trim().parse::<u8>()) else {
            continue;
        };
        let valid = !target.is_empty()
            && target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if valid {
            directives.push(format!("{target}={}", level_of(level)));
        }
    }
    Some(directives.join(","))
}

/// The effective run-time configuration of `kproxy run`: the configuration
/// file's (configuration flags ignored, with a warning each), else the
/// flags' over kube-proxy's defaults; `--kubeconfig` and
/// `--hostname-override` always apply. With the warnings.
pub fn run_settings(
    node: &NodeArgs,
    flags: &KubeProxyFlags,
    inv: &Inventory,
) -> Result<(ProxySettings, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut s = match load_config(node, inv, &mut warnings)? {
        Some(s) => {
            for flag in flags.config_flags_given() {
                warnings.push(format!(
                    "{flag} is ignored: a configuration file was given, and kube-proxy ignores configuration flags then"
                ));
            }
            s
        }
        None => {
            let mut s = settings_from_flags(node)?;
            flags.apply(&mut s, flags.write_config_to.is_none());
            if let Some(b) = node.conntrack_tcp_be_liberal {
                s.conntrack.tcp_be_liberal = b;
            }
            s
        }
    };
    if !(-1000..=1000).contains(&s.oom_score_adj) {
        bail!(
            "oomScoreAdj: {} must be within the range [-1000, 1000]",
            s.oom_score_adj
        );
    }
    for flag in flags.unsupported.given() {
        warnings.push(format!("{flag} has no effect in kproxy"));
    }
    if let Some(k) = &flags.kubeconfig {
        s.client_connection.kubeconfig = Some(k.display().to_string());
    }
    if let Some(h) = &node.hostname_override {
        let h = h.trim();
        if h.is_empty() {
            bail!("--hostname-override: an empty name is invalid");
        }
        s.hostname_override = Some(h.to_lowercase());
    }
    if let Some(f) = flags.logging_format.as_deref().filter(|f| *f != "text") {
        warnings.push(format!(
            "--logging-format={f}: kproxy writes text logs only"
        ));
    }
    Ok((s, warnings))
}

/// The effective configuration as kube-proxy writes it with
/// `--write-config-to`: a `kubeproxy.config.k8s.io/v1alpha1`
/// KubeProxyConfiguration with every field kproxy knows, defaults applied.
pub fn v1alpha1_document(s: &ProxySettings) -> serde_json::Value {
    use kproxy_core::config::format_go_duration as d;
    use serde_json::json;
    let mode = match &s.mode {
        ProxyMode::Iptables => "iptables".to_string(),
        ProxyMode::Nftables => "nftables".to_string(),
        ProxyMode::Ipvs => "ipvs".to_string(),
        ProxyMode::Other(m) => m.clone(),
    };
    let detect_local_mode = s.detect_local_mode.as_str();
    let node_port_addresses: Vec<String> = match &s.node_port_addresses {
        NodePortAddresses::All => Vec::new(),
        NodePortAddresses::Primary => vec!["primary".into()],
        NodePortAddresses::Cidrs(c) => c.iter().map(ToString::to_string).collect(),
    };
    let bind_address = s
        .node_ip_override
        .first()
        .map_or("0.0.0.0".to_string(), ToString::to_string);
    let cluster_cidr: Vec<String> = s.cluster_cidrs.iter().map(ToString::to_string).collect();
    let cc = &s.client_connection;
    let ct = &s.conntrack;
    json!({
        "apiVersion": kproxy_core::config::V1ALPHA1,
        "kind": "KubeProxyConfiguration",
        "bindAddress": bind_address,
        "clientConnection": {
            "acceptContentTypes": cc.accept_content_types,
            "burst": cc.burst,
            "contentType": cc.content_type,
            "kubeconfig": cc.kubeconfig.clone().unwrap_or_default(),
            "qps": cc.qps,
        },
        "clusterCIDR": cluster_cidr.join(","),
        "configSyncPeriod": d(s.config_sync_period),
        "conntrack": {
            "maxPerCore": ct.max_per_core,
            "min": ct.min,
            "tcpBeLiberal": ct.tcp_be_liberal,
            "tcpCloseWaitTimeout": d(ct.tcp_close_wait_timeout),
            "tcpEstablishedTimeout": d(ct.tcp_established_timeout),
            "udpStreamTimeout": d(ct.udp_stream_timeout),
            "udpTimeout": d(ct.udp_timeout),
        },
        "detectLocal": {
            "bridgeInterface": s.bridge_interface.clone().unwrap_or_default(),
            "interfaceNamePrefix": s.interface_name_prefix.clone().unwrap_or_default(),
        },
        "detectLocalMode": detect_local_mode,
        "featureGates": s.feature_gates,
        "healthzBindAddress": s.healthz_bind_address,
        "hostnameOverride": s.hostname_override.clone().unwrap_or_default(),
        "iptables": {
            "localhostNodePorts": s.localhost_node_ports,
            "masqueradeAll": s.masquerade_all,
            "masqueradeBit": s.masquerade_bit,
            "minSyncPeriod": d(s.min_sync_period),
            "syncPeriod": d(s.sync_period),
        },
        "metricsBindAddress": s.metrics_bind_address,
        "mode": mode,
        "nftables": {
            "masqueradeAll": s.masquerade_all,
            "masqueradeBit": s.masquerade_bit,
            "minSyncPeriod": d(s.min_sync_period),
            "syncPeriod": d(s.sync_period),
        },
        "nodePortAddresses": node_port_addresses,
        "oomScoreAdj": s.oom_score_adj,
    })
}
