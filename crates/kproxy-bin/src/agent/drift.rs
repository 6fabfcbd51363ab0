//! The drift check's decisions: [`kproxy_core::sync::drift`] (the agent
//! reads the node, see [`super::nfnl`] and
//! [`super::sync::Proxier::repair_drift`]).

pub use kproxy_core::sync::drift::*;
