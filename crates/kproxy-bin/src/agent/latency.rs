//! Network programming latency and change counts:
//! [`kproxy_core::sync::latency`] (the agent passes in the times it reads).

pub use kproxy_core::sync::latency::*;
