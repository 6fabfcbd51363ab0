//! The host set-up kube-proxy does when it starts, as values: the
//! conntrack sysctls (`nf_conntrack_max` from `conntrack.maxPerCore` /
//! `conntrack.min`, with the hash table size; the TCP and UDP timeouts;
//! `tcpBeLiberal`) and `net.ipv4.conf.all.route_localnet` for localhost
//! node ports (iptables mode). The embedder reads the current values and
//! writes what [`plan`] and [`needs_write`] ask for.

use std::time::Duration;

use crate::config::ConntrackSettings;

/// `nf_conntrack_max`, under `/proc/sys`.
pub const CONNTRACK_MAX: &str = "net/netfilter/nf_conntrack_max";
/// `nf_conntrack_tcp_timeout_established`.
pub const TCP_ESTABLISHED: &str = "net/netfilter/nf_conntrack_tcp_timeout_established";
/// `nf_conntrack_tcp_timeout_close_wait`.
pub const TCP_CLOSE_WAIT: &str = "net/netfilter/nf_conntrack_tcp_timeout_close_wait";
/// `nf_conntrack_tcp_be_liberal`.
pub const TCP_BE_LIBERAL: &str = "net/netfilter/nf_conntrack_tcp_be_liberal";
/// `nf_conntrack_udp_timeout`.
pub const UDP_TIMEOUT: &str = "net/netfilter/nf_conntrack_udp_timeout";
/// `nf_conntrack_udp_timeout_stream`.
pub const UDP_STREAM_TIMEOUT: &str = "net/netfilter/nf_conntrack_udp_timeout_stream";
/// `net.ipv4.conf.all.route_localnet`.
pub const ROUTE_LOCALNET: &str = "net/ipv4/conf/all/route_localnet";
/// The conntrack hash table size (sysfs; writable from the initial network
/// namespace only).
pub const HASHSIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";

/// When a sysctl is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// When the current value differs (kube-proxy's `EnsureSysctl`).
    Differs,
    /// Only when the current value is lower (kube-proxy's conntrack
    /// settings never lower what the host has).
    Raise,
}

/// One sysctl to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlWrite {
    /// The key, a path under `/proc/sys` (`net/netfilter/...`).
    pub key: &'static str,
    /// The value wanted.
    pub value: u64,
    /// When to write it.
    pub rule: Rule,
}

/// kube-proxy's `nf_conntrack_max`: `maxPerCore` times the CPUs, at least
/// `min`; `None` (left as it is) when `maxPerCore` is 0 or less.
///
/// ```
/// use kproxy_core::sync::host::conntrack_max;
/// assert_eq!(conntrack_max(32768, 131072, 2), Some(131072));
/// assert_eq!(conntrack_max(32768, 131072, 8), Some(262144));
/// assert_eq!(conntrack_max(0, 131072, 8), None);
/// ```
pub fn conntrack_max(max_per_core: i32, min: i32, cpus: u32) -> Option<u64> {
    if max_per_core <= 0 {
        return None;
    }
    let scaled = u64::from(max_per_core.unsigned_abs()) * u64::from(cpus);
    Some(scaled.max(u64::from(min.max(0).unsigned_abs())))
}

/// Whole seconds of a timeout, `None` for zero (left as it is).
fn seconds(d: Duration) -> Option<u64> {
    (d.as_secs() > 0).then_some(d.as_secs())
}

/// The sysctls kube-proxy sets at start, in its order: the conntrack ones
/// from `ct` (`cpus`: the online CPUs), then `route_localnet` when
/// localhost node ports are on (`localhost_node_ports`: iptables mode,
/// IPv4, `nodePortAddresses` covering 127.0.0.1).
pub fn plan(ct: &ConntrackSettings, cpus: u32, localhost_node_ports: bool) -> Vec<SysctlWrite> {
    let raise = |key, value| SysctlWrite {
        key,
        value,
        rule: Rule::Raise,
    };
    let mut out = Vec::new();
    if let Some(max) = conntrack_max(ct.max_per_core, ct.min, cpus) {
        out.push(raise(CONNTRACK_MAX, max));
    }
    if let Some(s) = seconds(ct.tcp_established_timeout) {
        out.push(raise(TCP_ESTABLISHED, s));
    }
    if let Some(s) = seconds(ct.tcp_close_wait_timeout) {
        out.push(raise(TCP_CLOSE_WAIT, s));
    }
    if ct.tcp_be_liberal {
        out.push(raise(TCP_BE_LIBERAL, 1));
    }
    if let Some(s) = seconds(ct.udp_timeout) {
        out.push(raise(UDP_TIMEOUT, s));
    }
    if let Some(s) = seconds(ct.udp_stream_timeout) {
        out.push(raise(UDP_STREAM_TIMEOUT, s));
    }
    if localhost_node_ports {
        out.push(SysctlWrite {
            key: ROUTE_LOCALNET,
            value: 1,
            rule: Rule::Differs,
        });
    }
    out
}

/// Whether `w` must be written given the current value (`None`: unreadable).
///
/// ```
/// use kproxy_core::sync::host::{Rule, SysctlWrite, needs_write};
/// let w = SysctlWrite { key: "net/netfilter/nf_conntrack_max", value: 131072, rule: Rule::Raise };
/// assert!(needs_write(Some(65536), &w));
/// assert!(!needs_write(Some(262144), &w));
/// ```
pub fn needs_write(current: Option<u64>, w: &SysctlWrite) -> bool {
    match (current, w.rule) {
        (None, _) => true,
        (Some(c), Rule::Differs) => c != w.value,
        (Some(c), Rule::Raise) => c < w.value,
    }
}

/// The conntrack hash table size to write for `max` entries, when the
/// current one is below a quarter of it (kube-proxy's rule).
///
/// ```
/// use kproxy_core::sync::host::hashsize_wanted;
/// assert_eq!(hashsize_wanted(16384, 131072), Some(32768));
/// assert_eq!(hashsize_wanted(65536, 131072), None);
/// ```
pub fn hashsize_wanted(current: u64, max: u64) -> Option<u64> {
    (current < max / 4).then_some(max / 4)
}
