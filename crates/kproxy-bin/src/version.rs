//! `kproxy --version`: the version, the commit it was built from (by
//! `build.rs`: `git rev-parse --short HEAD`, `$KPROXY_COMMIT`, or
//! `unknown`), and the kube-proxy releases whose rules it writes (from
//! [`kproxy_core::profile`], their one owner).

use std::sync::LazyLock;

use kproxy_core::profile::{IPTABLES_SUPPORTED, NFTABLES_SUPPORTED};

/// The commit kproxy was built from (`unknown` without git).
pub const COMMIT: &str = env!("KPROXY_COMMIT");

static SHORT: LazyLock<String> =
    LazyLock::new(|| format!("{} (commit {COMMIT})", env!("CARGO_PKG_VERSION")));

static LONG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}\nwrites the rules of kube-proxy releases:\n  iptables mode: {IPTABLES_SUPPORTED}\n  nftables mode: {NFTABLES_SUPPORTED}\n(--kube-proxy-version X.Y picks one; default: current)",
        short()
    )
});

/// `-V`: `0.1.0 (commit 1a2b3c4)`.
pub fn short() -> &'static str {
    SHORT.as_str()
}

/// `--version`: [`short`], then the kube-proxy releases kproxy writes.
///
/// ```
/// let v = kproxy_bin::version::long();
/// assert!(v.starts_with(env!("CARGO_PKG_VERSION")));
/// assert!(v.contains(kproxy_core::profile::NFTABLES_SUPPORTED));
/// ```
pub fn long() -> &'static str {
    LONG.as_str()
}
