//! UDP conntrack cleanup: [`kproxy_core::sync::conntrack`] plans it, the
//! sync engines ask for each `conntrack -D`.

pub use kproxy_core::sync::conntrack::*;
