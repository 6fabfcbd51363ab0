//! # kproxy-core
//!
//! kube-proxy's Service semantics as pure functions, with no I/O:
//!
//! * [`model`]: the input (Services, EndpointSlices, node configuration), as
//!   plain values; [`convert`] builds them from Kubernetes objects (YAML/JSON
//!   text or `k8s-openapi` types) and names the object and field of bad input.
//! * [`plan`]: every decision kube-proxy takes per service port (which
//!   endpoints serve cluster and local traffic, which front ends exist, when to
//!   masquerade, reject or drop), taken once for all backends.
//! * [`ir`]: the rule IR the backends produce (tables, chains, typed matches
//!   and verdicts, sets and maps), read by the tracer and the diff.
//! * [`names`]: the hashed chain names.
//!
//! ```
//! use kproxy_core::model::*;
//! use kproxy_core::plan::plan;
//!
//! let svc = Service::cluster_ip("default", "web", "10.96.0.10".parse().unwrap())
//!     .with_port(ServicePort::new("http", Protocol::Tcp, 80));
//! let slice = EndpointSlice::new("default", "web-abc", "web", IpFamily::V4)
//!     .with_port(EndpointPort::new("http", Protocol::Tcp, 8080))
//!     .with_endpoint(Endpoint::ready("10.244.0.5".parse().unwrap()));
//! let state = ClusterState { services: vec![svc], endpoint_slices: vec![slice] };
//! let plan = plan(&state, &NodeConfig::new(IpFamily::V4, "node-1"));
//! assert_eq!(plan.service_ports.len(), 1);
//! assert_eq!(plan.service_ports[0].cluster_endpoints[0].to_string(), "10.244.0.5:8080");
//! ```
#![deny(missing_docs)]

pub mod canon;
pub mod check;
pub mod config;
pub mod convert;
pub mod diff;
pub mod equivalence;
pub mod graph;
pub mod incremental;
pub mod ir;
pub mod model;
pub mod names;
pub mod owners;
pub mod plan;
pub mod profile;
pub mod resolve;
pub mod sync;
/// Synthetic clusters for tests and benches: not part of the API.
#[doc(hidden)]
pub mod synthetic;
pub mod trace;

#[cfg(test)]
mod test_rng;

pub use ir::Ruleset;
pub use model::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, IpFamily, NodeConfig, Protocol, Service,
    ServicePort, TrafficPolicy,
};
pub use plan::{Disposition, Plan, Release, ServicePortPlan, plan, plan_release};
pub use profile::{IptablesProfile, KubeProxyVersion, Layout, NftablesProfile};
pub use trace::{Packet, TraceEnv, Tracer};
