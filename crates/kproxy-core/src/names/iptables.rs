//! Every iptables chain name and prefix kube-proxy uses, in any release
//! kproxy knows: the one owner of these names (the iptables layout, parser,
//! [`crate::check`], [`crate::owners`] and the agent's cleanup read them
//! from here; `kproxy_iptables::names` re-exports them).
//!
//! ```
//! use kproxy_core::names::iptables::{is_kube_proxy_chain, is_service_chain, SEP_PREFIX};
//! assert!(is_service_chain("KUBE-XLB-NWV5X2332I4OT4T3"));
//! assert!(is_service_chain(&format!("{SEP_PREFIX}EV2NQKURMPKCP5UI")));
//! assert!(!is_service_chain("KUBE-SERVICES"));
//! assert!(is_kube_proxy_chain("KUBE-SERVICES"));
//! assert!(!is_kube_proxy_chain("KUBE-KUBELET-CANARY"));
//! ```

/// `KUBE-SERVICES`
pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
/// `KUBE-EXTERNAL-SERVICES`
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// `KUBE-FORWARD`
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
/// `KUBE-NODEPORTS`
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
/// `KUBE-PROXY-FIREWALL`
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// `KUBE-FIREWALL` (kubelet's historical chain, duplicated by kube-proxy)
pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";
/// `KUBE-POSTROUTING`
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
/// `KUBE-MARK-MASQ`
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// `KUBE-PROXY-CANARY`
pub const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";
/// `KUBE-MARK-DROP` (the kubelet's chain; kube-proxy 1.5 jumps to it).
pub const KUBE_MARK_DROP: &str = "KUBE-MARK-DROP";
/// `KUBE-LOAD-BALANCER` (kube-proxy's IPVS mode).
pub const KUBE_LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
/// `KUBE-NODE-PORT` (kube-proxy's IPVS mode).
pub const KUBE_NODE_PORT: &str = "KUBE-NODE-PORT";

/// The fixed (not per-service) chains kube-proxy writes or jumps to, in any
/// mode and release: the current layout's, 1.5's `KUBE-MARK-DROP` (the
/// kubelet's, which 1.5's rules need) and the IPVS mode's.
pub const FIXED_CHAINS: [&str; 12] = [
    KUBE_SERVICES,
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
    KUBE_FIREWALL,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
    KUBE_MARK_DROP,
    KUBE_PROXY_CANARY,
    KUBE_LOAD_BALANCER,
    KUBE_NODE_PORT,
];

/// `KUBE-SVC-`: a service port's cluster-policy endpoint selection.
pub const SVC_PREFIX: &str = "KUBE-SVC-";
/// `KUBE-SVL-`: a service port's local-policy endpoint selection.
pub const SVL_PREFIX: &str = "KUBE-SVL-";
/// `KUBE-EXT-`: a service port's external traffic.
pub const EXT_PREFIX: &str = "KUBE-EXT-";
/// `KUBE-FW-`: a service port's load balancer source ranges.
pub const FW_PREFIX: &str = "KUBE-FW-";
/// `KUBE-SEP-`: one endpoint.
pub const SEP_PREFIX: &str = "KUBE-SEP-";
/// `KUBE-XLB-`: kube-proxy 1.5's OnlyLocal chain.
pub const XLB_PREFIX: &str = "KUBE-XLB-";

/// The name prefixes of the chains kube-proxy creates per service port or
/// endpoint, in every release kproxy knows.
pub const SERVICE_PREFIXES: [&str; 6] = [
    SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX, XLB_PREFIX,
];

/// Whether `name` is a per-service or per-endpoint chain of kube-proxy (see
/// [`SERVICE_PREFIXES`]).
pub fn is_service_chain(name: &str) -> bool {
    SERVICE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether `name` is one of kube-proxy's chains: fixed ([`FIXED_CHAINS`])
/// or per service ([`is_service_chain`]).
pub fn is_kube_proxy_chain(name: &str) -> bool {
    FIXED_CHAINS.contains(&name) || is_service_chain(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_chains_are_not_service_chains() {
        for c in FIXED_CHAINS {
            assert!(!is_service_chain(c), "{c}");
            assert!(is_kube_proxy_chain(c), "{c}");
        }
        assert!(!is_kube_proxy_chain("KUBE-KUBELET-CANARY"));
        assert!(!is_kube_proxy_chain("KUBE-SVCX"));
    }
}
