//! kube-proxy's nftables object names.
//!
//! Per-service chains are named `PREFIX-HASH-ns/name/proto/port` and
//! per-endpoint chains and affinity sets `PREFIX-HASH-ns/name/proto/port__IP/port`,
//! where `HASH` is the first 8 characters of base32(sha256(...)) of the
//! readable part (IPv6 colons become dots). A base longer than 240 bytes is
//! cut to 237 and `...` is appended (the hash is still over the full text).
//!
//! ```
//! use kproxy_core::model::Protocol;
//! use kproxy_core::names::ServicePortName;
//! use kproxy_nft::names::{endpoint_base, service_base};
//!
//! let spn = ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp);
//! assert_eq!(service_base(&spn), "ULMVA6XW-ns1/svc1/tcp/p80");
//! let ip = "10.180.0.1".parse().unwrap();
//! assert_eq!(endpoint_base(&spn, ip, 80), "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80");
//! ```

use std::net::IpAddr;

use kproxy_core::names::{ChainName, ServicePortName, hash_base32};

/// The fixed names and the per-service prefixes, owned by core (its check
/// and owners need them too, and core depends on no backend).
pub use kproxy_core::names::nft::*;

/// Longest base name (knftables `NameLengthMax` 256 minus the longest prefix, 16).
pub const BASE_LENGTH_MAX: usize = 256 - 16;

/// knftables `CommentLengthMax`: longer comments are cut (in bytes).
pub const COMMENT_LENGTH_MAX: usize = 128;

/// kube-proxy's `hashAndTruncate`.
fn hash_and_truncate(name: &str) -> String {
    let mut out = format!("{}-{name}", hash_base32(name, 8));
    if out.len() > BASE_LENGTH_MAX {
        let mut cut = BASE_LENGTH_MAX - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// The base of a service port's chain names: `HASH-ns/name/proto/port`.
pub fn service_base(spn: &ServicePortName) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}",
        spn.service.namespace,
        spn.service.name,
        spn.protocol.as_lower(),
        spn.port
    ))
}

/// The base of an endpoint's chain and affinity set: `HASH-ns/name/proto/port__IP/port`.
///
/// The address is written as Go's `net.IP.String` writes it (RFC 5952, as
/// Rust's `Display`: a single zero group is not compressed).
pub fn endpoint_base(spn: &ServicePortName, ip: IpAddr, port: u16) -> String {
    endpoint_base_text(spn, &ip.to_string(), port)
}

/// [`endpoint_base`] for an address already in text form.
fn endpoint_base_text(spn: &ServicePortName, ip: &str, port: u16) -> String {
    let ip = ip.replace(':', ".");
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{ip}/{port}",
        spn.service.namespace,
        spn.service.name,
        spn.protocol.as_lower(),
        spn.port
    ))
}

/// Whether `name` is a chain of one service port or endpoint (`service-`,
/// `local-`, `external-`, `firewall-`, `endpoint-` and a hashed base); the
/// others of the `kube-proxy` table are the node's.
///
/// ```
/// use kproxy_core::model::Protocol;
/// use kproxy_core::names::ServicePortName;
/// use kproxy_nft::names::{ServiceChains, is_service_chain};
/// let spn = ServicePortName::new("ns", "web", "http", Protocol::Tcp);
/// assert!(is_service_chain(ServiceChains::new(&spn).external.as_str()));
/// assert!(!is_service_chain("firewall-check"));
/// assert!(!is_service_chain("services"));
/// ```
pub fn is_service_chain(name: &str) -> bool {
    is_service_object(name) && !name.starts_with(AFFINITY_PREFIX)
}

/// A service port's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChains {
    /// `service-…`: Cluster-policy endpoint selection.
    pub cluster: ChainName,
    /// `local-…`: Local-policy endpoint selection.
    pub local: ChainName,
    /// `external-…`: traffic to node ports, external IPs and LB IPs.
    pub external: ChainName,
    /// `firewall-…`: loadBalancerSourceRanges.
    pub firewall: ChainName,
}

impl ServiceChains {
    /// Names the chains of `spn`.
    pub fn new(spn: &ServicePortName) -> Self {
        let base = service_base(spn);
        Self {
            cluster: ChainName::new(format!("{SERVICE_PREFIX}{base}")),
            local: ChainName::new(format!("{LOCAL_PREFIX}{base}")),
            external: ChainName::new(format!("{EXTERNAL_PREFIX}{base}")),
            firewall: ChainName::new(format!("{FIREWALL_PREFIX}{base}")),
        }
    }
}

/// `endpoint-…` chain and `affinity-…` set of one endpoint.
pub fn endpoint_names(spn: &ServicePortName, ip: IpAddr, port: u16) -> (ChainName, String) {
    let base = endpoint_base(spn, ip, port);
    (
        ChainName::new(format!("{ENDPOINT_PREFIX}{base}")),
        format!("{AFFINITY_PREFIX}{base}"),
    )
}

/// Cuts `s` to [`COMMENT_LENGTH_MAX`] bytes, as kube-proxy does.
pub fn truncate_comment(s: &str) -> String {
    if s.len() <= COMMENT_LENGTH_MAX {
        return s.to_string();
    }
    let mut cut = COMMENT_LENGTH_MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_core::model::Protocol;

    fn spn(ns: &str, name: &str, port: &str, p: Protocol) -> ServicePortName {
        ServicePortName::new(ns, name, port, p)
    }

    const NS: &str = "very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx";
    const SVC: &str = "very-long-service-name-why-would-you-even-do-this-i-mean-really";
    const PORT: &str = "port-443-providing-the-hypertext-transmission-protocol-with-tls";

    #[test]
    fn upstream_service_bases() {
        let s = spn("testing", "service", "http", Protocol::Tcp);
        assert_eq!(service_base(&s), "P4ZYZVCF-testing/service/tcp/http");
        let s = spn("testing", "service", "https", Protocol::Tcp);
        assert_eq!(service_base(&s), "LZBRENCP-testing/service/tcp/https");
        let s = spn(NS, SVC, PORT, Protocol::Sctp);
        assert_eq!(service_base(&s), format!("KR6NACJP-{NS}/{SVC}/sctp/{PORT}"));
        let s = spn("ns2", "svc2", "p8080", Protocol::Tcp);
        assert_eq!(service_base(&s), "MHHHYRWA-ns2/svc2/tcp/p8080");
    }

    #[test]
    fn upstream_endpoint_bases() {
        let s = spn("testing", "service", "http", Protocol::Tcp);
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert_eq!(
            endpoint_base(&s, ip("10.180.0.1"), 80),
            "JO2XBXZR-testing/service/tcp/http__10.180.0.1/80"
        );
        assert_eq!(
            endpoint_base(&s, ip("10.180.0.2"), 80),
            "5S6H3H22-testing/service/tcp/http__10.180.0.2/80"
        );
        // Upstream's unit test passes this non-canonical text directly
        // (Go and Rust both print the address as fd80:abcd:12:0:a1b2:…).
        assert_eq!(
            endpoint_base_text(&s, "fd80:abcd:12::a1b2:c3d4:e5f6:9999", 80),
            "U7E2ET36-testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80"
        );
        let s = spn(NS, SVC, PORT, Protocol::Sctp);
        assert_eq!(
            endpoint_base(&s, ip("1234:5678:9abc:def0::abc:1234"), 443),
            format!("5YS7AFEA-{NS}/{SVC}/sctp/{PORT}__1234.5678.9abc.def0..abc.1234/443")
        );
        assert_eq!(
            endpoint_base_text(&s, "1234:5678:9abc:def0::abcd:1234:5678", 443),
            format!("CI6C53Q3-{NS}/{SVC}/sctp/{PORT}__1234.5678.9abc.def0..abcd.1234...")
        );
        assert_eq!(
            endpoint_base_text(&s, "1234:5678:9abc:def0::abcd:1234:8765", 443),
            format!("2FLXFK6X-{NS}/{SVC}/sctp/{PORT}__1234.5678.9abc.def0..abcd.1234...")
        );
    }

    #[test]
    fn upstream_comment_truncation() {
        let long = "loft-acme-platform-services-team-dev-v-shared-workloads-ns-001/my-api-svc-x-my-api-namespace-x-acme-shared-vcluster--a1b2c3d4e:http";
        assert_eq!(
            truncate_comment(long),
            "loft-acme-platform-services-team-dev-v-shared-workloads-ns-001/my-api-svc-x-my-api-namespace-x-acme-shared-vcluster--a1b2c3d4e:h"
        );
        assert_eq!(truncate_comment(&"a".repeat(128)), "a".repeat(128));
        assert_eq!(truncate_comment(&"a".repeat(129)), "a".repeat(128));
    }
}
