//! Chain names and the hashes kube-proxy derives them from; the fixed
//! names and prefixes of each backend ([`iptables`], [`nft`]).
//!
//! kube-proxy names per-service chains after the first characters of
//! base32(sha256(...)) of the service port name, the protocol and (for
//! endpoint chains) the endpoint string, concatenated without separators.
//!
//! ```
//! use kproxy_core::names::{hash_base32, ServicePortName};
//! use kproxy_core::model::Protocol;
//! let spn = ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp);
//! assert_eq!(spn.to_string(), "ns1/svc1:p80");
//! assert_eq!(hash_base32("ns1/svc1:p80tcp", 16), "XPGD46QRK7WJZT7O");
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use data_encoding::BASE32;
use sha2::{Digest, Sha256};

use crate::model::{NamespacedName, Protocol};

pub mod iptables;
pub mod nft;

use iptables::{EXT_PREFIX, FW_PREFIX, SEP_PREFIX, SVC_PREFIX, SVL_PREFIX, XLB_PREFIX};

/// The first `len` characters of RFC 4648 base32 of SHA-256(`input`).
///
/// `len` is at most 56 (the whole encoding of 32 bytes, without padding).
pub fn hash_base32(input: &str, len: usize) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut s = BASE32.encode(&digest);
    s.truncate(len.min(56));
    s
}

/// The 16 characters of a per-service chain's hash: the base32 of the
/// digest's first 10 bytes (80 bits, exactly 16 characters) is the first 16
/// characters of the whole digest's, so only those are encoded.
fn hash16(hasher: Sha256) -> Hash16 {
    let digest = hasher.finalize();
    let mut text = [0u8; 16];
    BASE32.encode_mut(&digest[..10], &mut text);
    Hash16(text)
}

/// The 16 base32 characters of a chain name's hash.
struct Hash16([u8; 16]);

impl Hash16 {
    fn as_str(&self) -> &str {
        // Base32 is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A chain name `prefix` + the 16 hash characters of `hasher`'s input.
fn hashed_chain(prefix: &str, hasher: Sha256) -> ChainName {
    ChainName::concat(prefix, hash16(hasher).as_str())
}

/// A SHA-256 state fed with [`ServicePortName::hash_input`] (what every
/// per-service chain name of the current layouts starts from), without
/// formatting it.
fn service_port_hasher(spn: &ServicePortName) -> Sha256 {
    let mut h = Sha256::new();
    h.update(spn.service.namespace.as_bytes());
    h.update(b"/");
    h.update(spn.service.name.as_bytes());
    if !spn.port.is_empty() {
        h.update(b":");
        h.update(spn.port.as_bytes());
    }
    h.update(spn.protocol.as_lower().as_bytes());
    h
}

/// A chain name (iptables chain or nftables chain).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainName(String);

impl ChainName {
    /// Wraps a name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `prefix` + `rest`, in one allocation of the right size.
    fn concat(prefix: &str, rest: &str) -> Self {
        let mut name = String::with_capacity(prefix.len() + rest.len());
        name.push_str(prefix);
        name.push_str(rest);
        Self(name)
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for ChainName {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for ChainName {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// kube-proxy's `ServicePortName`: `namespace/name[:port]` plus protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service.
    pub service: NamespacedName,
    /// The port's name (`""` when unnamed).
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// Builds a service port name.
    pub fn new(namespace: &str, name: &str, port: &str, protocol: Protocol) -> Self {
        Self {
            service: NamespacedName::new(namespace, name),
            port: port.to_string(),
            protocol,
        }
    }
    /// The string that kube-proxy hashes: `SPN` + lower-case protocol.
    pub fn hash_input(&self) -> String {
        format!("{self}{}", self.protocol.as_lower())
    }
    /// The name as kube-proxy 1.5 printed it: `namespace/name:port`, the
    /// colon always there (`default/hostnames:` for an unnamed port).
    ///
    /// ```
    /// use kproxy_core::model::Protocol;
    /// use kproxy_core::names::ServicePortName;
    /// let spn = ServicePortName::new("default", "hostnames", "", Protocol::Tcp);
    /// assert_eq!(spn.to_string_v1_5(), "default/hostnames:");
    /// assert_eq!(spn.to_string(), "default/hostnames");
    /// ```
    pub fn to_string_v1_5(&self) -> String {
        format!("{}:{}", self.service, self.port)
    }
    /// What kube-proxy 1.5 hashed: [`Self::to_string_v1_5`] + protocol.
    pub fn hash_input_v1_5(&self) -> String {
        format!("{}{}", self.to_string_v1_5(), self.protocol.as_lower())
    }
}

/// Prints `namespace/name` and, for a named port, `:port` (kube-proxy's
/// current spelling; the 1.5 layout always printed the colon).
impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

/// The endpoint string kube-proxy uses: `ip:port` or `[ipv6]:port`, with the
/// IP in canonical form.
pub fn endpoint_string(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => V4Endpoint::new(v4.octets(), port).as_str().to_string(),
        IpAddr::V6(_) => SocketAddr::new(ip, port).to_string(),
    }
}

/// [`endpoint_string`], shared (the planner's endpoints hold it so).
pub(crate) fn endpoint_arc(ip: IpAddr, port: u16) -> std::sync::Arc<str> {
    match ip {
        // The hot path of large clusters: one allocation, no `fmt`.
        IpAddr::V4(v4) => V4Endpoint::new(v4.octets(), port).as_str().into(),
        IpAddr::V6(_) => SocketAddr::new(ip, port).to_string().into(),
    }
}

/// `a.b.c.d:port` spelled into a buffer on the stack.
struct V4Endpoint {
    buf: [u8; 21],
    len: usize,
}

impl V4Endpoint {
    fn new(octets: [u8; 4], port: u16) -> Self {
        let mut e = Self {
            buf: [0; 21],
            len: 0,
        };
        for (i, o) in octets.into_iter().enumerate() {
            if i > 0 {
                e.push(b'.');
            }
            e.push_decimal(u32::from(o));
        }
        e.push(b':');
        e.push_decimal(u32::from(port));
        e
    }
    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }
    /// `n` is at most 65535 (an octet or a port).
    fn push_decimal(&mut self, n: u32) {
        let digits = match n {
            0..=9 => 1,
            10..=99 => 2,
            100..=999 => 3,
            1000..=9999 => 4,
            _ => 5,
        };
        let mut n = n;
        for i in (self.len..self.len + digits).rev() {
            self.buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.len += digits;
    }
    fn as_str(&self) -> &str {
        // Only ASCII digits, dots and a colon were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// The iptables per-service chains of one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesServiceChains {
    /// `KUBE-SVC-…`: cluster-policy endpoint selection.
    pub svc: ChainName,
    /// `KUBE-SVL-…`: local-policy endpoint selection.
    pub svl: ChainName,
    /// `KUBE-EXT-…`: external traffic.
    pub ext: ChainName,
    /// `KUBE-FW-…`: load balancer source ranges.
    pub fw: ChainName,
}

impl IptablesServiceChains {
    /// Names the chains of `spn` (current layout).
    pub fn new(spn: &ServicePortName) -> Self {
        let h = hash16(service_port_hasher(spn));
        let name = |prefix: &str| ChainName::concat(prefix, h.as_str());
        Self {
            svc: name(SVC_PREFIX),
            svl: name(SVL_PREFIX),
            ext: name(EXT_PREFIX),
            fw: name(FW_PREFIX),
        }
    }
}

/// The per-service chains of kube-proxy 1.5, hashed from
/// [`ServicePortName::hash_input_v1_5`].
///
/// ```
/// use kproxy_core::model::Protocol;
/// use kproxy_core::names::{ServicePortName, V1_5ServiceChains};
/// let spn = ServicePortName::new("default", "hostnames", "", Protocol::Tcp);
/// let c = V1_5ServiceChains::new(&spn);
/// assert_eq!(c.svc.as_str(), "KUBE-SVC-NWV5X2332I4OT4T3");
/// assert_eq!(c.fw.as_str(), "KUBE-FW-NWV5X2332I4OT4T3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1_5ServiceChains {
    /// `KUBE-SVC-…`: endpoint selection.
    pub svc: ChainName,
    /// `KUBE-XLB-…`: OnlyLocal external traffic (local endpoints only).
    pub xlb: ChainName,
    /// `KUBE-FW-…`: traffic to a load balancer IP.
    pub fw: ChainName,
}

impl V1_5ServiceChains {
    /// Names the chains of `spn`.
    pub fn new(spn: &ServicePortName) -> Self {
        let h = hash_base32(&spn.hash_input_v1_5(), 16);
        Self {
            svc: ChainName(format!("{SVC_PREFIX}{h}")),
            xlb: ChainName(format!("{XLB_PREFIX}{h}")),
            fw: ChainName(format!("{FW_PREFIX}{h}")),
        }
    }
}

/// `KUBE-SEP-…` as kube-proxy 1.5 named it (hash over the 1.5 spelling).
///
/// ```
/// use kproxy_core::model::Protocol;
/// use kproxy_core::names::{ServicePortName, iptables_endpoint_chain_v1_5};
/// let spn = ServicePortName::new("default", "hostnames", "", Protocol::Tcp);
/// assert_eq!(
///     iptables_endpoint_chain_v1_5(&spn, "10.76.0.9:9376").as_str(),
///     "KUBE-SEP-EV2NQKURMPKCP5UI"
/// );
/// ```
pub fn iptables_endpoint_chain_v1_5(spn: &ServicePortName, endpoint: &str) -> ChainName {
    let mut input = spn.hash_input_v1_5();
    input.push_str(endpoint);
    ChainName(format!("{SEP_PREFIX}{}", hash_base32(&input, 16)))
}

/// `KUBE-SEP-…`: the iptables chain of one endpoint of `spn` (for several
/// endpoints of one service port, [`IptablesEndpointChains`] hashes the
/// service port's part once).
pub fn iptables_endpoint_chain(spn: &ServicePortName, endpoint: &str) -> ChainName {
    IptablesEndpointChains::new(spn).chain(endpoint)
}

/// Names the `KUBE-SEP-…` chains of one service port's endpoints: the hash
/// of the service port name is taken once, each endpoint only adds its own
/// string.
///
/// ```
/// use kproxy_core::model::Protocol;
/// use kproxy_core::names::{IptablesEndpointChains, ServicePortName, iptables_endpoint_chain};
/// let spn = ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp);
/// let chains = IptablesEndpointChains::new(&spn);
/// assert_eq!(chains.chain("10.180.0.1:80").as_str(), "KUBE-SEP-SXIVWICOYRO3J4NJ");
/// assert_eq!(chains.chain("10.180.0.2:80"), iptables_endpoint_chain(&spn, "10.180.0.2:80"));
/// ```
#[derive(Debug, Clone)]
pub struct IptablesEndpointChains {
    prefix: Sha256,
}

impl IptablesEndpointChains {
    /// The namer of `spn`'s endpoint chains.
    pub fn new(spn: &ServicePortName) -> Self {
        Self {
            prefix: service_port_hasher(spn),
        }
    }
    /// The chain of `endpoint` (`ip:port`, as [`endpoint_string`] spells it).
    pub fn chain(&self, endpoint: &str) -> ChainName {
        let mut h = self.prefix.clone();
        h.update(endpoint.as_bytes());
        hashed_chain(SEP_PREFIX, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spn(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName::new(ns, name, port, Protocol::Tcp)
    }

    #[test]
    fn upstream_service_chain_names() {
        let c = IptablesServiceChains::new(&spn("ns1", "svc1", "p80"));
        assert_eq!(c.svc.as_str(), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(c.ext.as_str(), "KUBE-EXT-XPGD46QRK7WJZT7O");
        let c = IptablesServiceChains::new(&spn("ns2", "svc2", "p8080"));
        assert_eq!(c.svc.as_str(), "KUBE-SVC-2VJB64SDSIJUP5T6");
    }

    #[test]
    fn upstream_endpoint_chain_name() {
        let s = spn("ns1", "svc1", "p80");
        let ep = endpoint_string("10.180.0.1".parse().unwrap(), 80);
        assert_eq!(
            iptables_endpoint_chain(&s, &ep).as_str(),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn the_hasher_is_fed_the_hash_input() {
        for port in ["", "p80"] {
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                let s = ServicePortName::new("ns1", "svc1", port, proto);
                let whole = hash16(service_port_hasher(&s));
                assert_eq!(whole.as_str(), hash_base32(&s.hash_input(), 16));
                let ep = "10.180.0.1:80";
                assert_eq!(
                    IptablesEndpointChains::new(&s).chain(ep).as_str(),
                    format!(
                        "{SEP_PREFIX}{}",
                        hash_base32(&format!("{}{ep}", s.hash_input()), 16)
                    )
                );
            }
        }
    }

    #[test]
    fn seed_article_names_use_the_1_5_spelling() {
        // kube-proxy 1.5 always printed the colon after the service name.
        assert_eq!(hash_base32("default/hostnames:tcp", 16), "NWV5X2332I4OT4T3");
        assert_eq!(
            hash_base32("default/hostnames:tcp10.76.0.9:9376", 16),
            "EV2NQKURMPKCP5UI"
        );
        assert_eq!(
            hash_base32("default/hostnames:tcp10.76.0.10:9376", 16),
            "BWZ646KDVNVKXICT"
        );
    }

    #[test]
    fn unnamed_port_has_no_colon() {
        assert_eq!(
            spn("default", "hostnames", "").to_string(),
            "default/hostnames"
        );
    }

    #[test]
    fn ipv4_endpoint_string_is_the_socket_address() {
        for (ip, port) in [
            ("0.0.0.0", 0),
            ("10.180.0.1", 80),
            ("255.255.255.255", 65535),
            ("1.20.100.9", 8080),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let want = SocketAddr::new(ip, port).to_string();
            assert_eq!(endpoint_string(ip, port), want);
            assert_eq!(&*endpoint_arc(ip, port), want);
        }
    }

    #[test]
    fn ipv6_endpoint_string_is_bracketed_and_canonical() {
        let ip: IpAddr = "FD00:10:180:0::1".parse().unwrap();
        assert_eq!(endpoint_string(ip, 80), "[fd00:10:180::1]:80");
    }
}
