//! kube-proxy's nftables layout (`--proxy-mode=nftables`).
//!
//! Not written yet: its issue builds it on the same plan and IR as
//! `kproxy-iptables`. The crate exists so that the workspace has its final
//! shape from the start.
