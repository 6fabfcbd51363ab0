//! kube-proxy's iptables chain names: the fixed chains and the per-service
//! prefixes ([`kproxy_core::names::iptables`], re-exported: core's check and
//! owners need them too, and core depends on no backend), and the hashed
//! per-service chain names.
//!
//! ```
//! use kproxy_core::model::Protocol;
//! use kproxy_iptables::names::{IptablesServiceChains, ServicePortName, is_service_chain};
//! let c = IptablesServiceChains::new(&ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp));
//! assert_eq!(c.svc.as_str(), "KUBE-SVC-XPGD46QRK7WJZT7O");
//! assert!(is_service_chain(c.fw.as_str()));
//! ```

pub use kproxy_core::names::iptables::*;
pub use kproxy_core::names::{
    ChainName, IptablesEndpointChains, IptablesServiceChains, ServicePortName, V1_5ServiceChains,
    iptables_endpoint_chain, iptables_endpoint_chain_v1_5,
};
