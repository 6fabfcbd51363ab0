//! Leaving out a Service whose rules the kernel tool rejects:
//! [`kproxy_core::sync::isolate`].

pub use kproxy_core::sync::isolate::*;
