//! Every nftables table, chain, set and map name and prefix kube-proxy
//! uses, in any release kproxy knows: the one owner of these names (the
//! nftables layout, [`crate::check`], [`crate::owners`] and the agent read
//! them from here; `kproxy_nft::names` re-exports them and adds the hashed
//! per-service names).
//!
//! ```
//! use kproxy_core::names::nft::{is_service_object, SERVICE_PREFIX, TABLE};
//! assert_eq!(TABLE, "kube-proxy");
//! assert!(is_service_object(&format!("{SERVICE_PREFIX}ULMVA6XW-ns1/svc1/tcp/p80")));
//! assert!(is_service_object("affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"));
//! assert!(!is_service_object("service-ips"));
//! ```

/// The table (one per family: `ip kube-proxy`, `ip6 kube-proxy`).
pub const TABLE: &str = "kube-proxy";
/// `services`
pub const SERVICES: &str = "services";
/// `service-ips`
pub const SERVICE_IPS: &str = "service-ips";
/// `service-nodeports`
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// `nodeport-ips`
pub const NODEPORT_IPS: &str = "nodeport-ips";
/// `cluster-ips`
pub const CLUSTER_IPS: &str = "cluster-ips";
/// `service-endpoints-check`
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
/// `nodeport-endpoints-check`
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
/// `no-endpoint-services`
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// `no-endpoint-nodeports`
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// `reject-chain`
pub const REJECT_CHAIN: &str = "reject-chain";
/// `cluster-ips-check`
pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
/// `firewall-ips`
pub const FIREWALL_IPS: &str = "firewall-ips";
/// `firewall-check`
pub const FIREWALL_CHECK: &str = "firewall-check";
/// `masquerading`
pub const MASQUERADING: &str = "masquerading";
/// `mark-for-masquerade` (the pre-1.36 layout)
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
/// `hairpin-connections`
pub const HAIRPIN_CONNECTIONS: &str = "hairpin-connections";
/// `localhost-nodeport-reject-ports`
pub const LOCALHOST_REJECT_PORTS: &str = "localhost-nodeport-reject-ports";

/// `service-`: a service port's Cluster-policy endpoint selection chain.
pub const SERVICE_PREFIX: &str = "service-";
/// `local-`: a service port's Local-policy endpoint selection chain.
pub const LOCAL_PREFIX: &str = "local-";
/// `external-`: a service port's external traffic chain.
pub const EXTERNAL_PREFIX: &str = "external-";
/// `firewall-`: a service port's loadBalancerSourceRanges chain.
pub const FIREWALL_PREFIX: &str = "firewall-";
/// `endpoint-`: one endpoint's chain.
pub const ENDPOINT_PREFIX: &str = "endpoint-";
/// `affinity-`: one endpoint's ClientIP affinity set.
pub const AFFINITY_PREFIX: &str = "affinity-";

/// The name prefixes of the chains and sets kube-proxy creates per service
/// port or endpoint. Each is followed by `HASH-ns/name/proto/port`, so no
/// fixed name (`service-ips`, `firewall-check`, ...) matches
/// [`is_service_object`].
pub const SERVICE_PREFIXES: [&str; 6] = [
    SERVICE_PREFIX,
    LOCAL_PREFIX,
    EXTERNAL_PREFIX,
    FIREWALL_PREFIX,
    ENDPOINT_PREFIX,
    AFFINITY_PREFIX,
];

/// The readable part of a per-service chain or set name
/// (`HASH-ns/name/proto/port[__ip/port]`), if `name` is one.
pub fn service_object_base(name: &str) -> Option<&str> {
    let rest = SERVICE_PREFIXES.iter().find_map(|p| name.strip_prefix(p))?;
    // Every per-service base holds the `ns/name` slash; no fixed name does.
    rest.contains('/').then_some(rest)
}

/// Whether `name` is a chain or set kube-proxy creates per service port or
/// endpoint (see [`SERVICE_PREFIXES`]).
pub fn is_service_object(name: &str) -> bool {
    service_object_base(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_names_are_not_service_objects() {
        for n in [
            SERVICES,
            SERVICE_IPS,
            SERVICE_NODEPORTS,
            SERVICE_ENDPOINTS_CHECK,
            FIREWALL_IPS,
            FIREWALL_CHECK,
            LOCALHOST_REJECT_PORTS,
        ] {
            assert!(!is_service_object(n), "{n}");
        }
        assert!(is_service_object("local-AAAAAAAA-ns/a/tcp/"));
    }
}
