//! The host set-up kube-proxy does when it starts: conntrack sysctls
//! (`nf_conntrack_max` from `conntrack.maxPerCore` / `conntrack.min`, with
//! the hash table size; the TCP and UDP timeouts; `tcpBeLiberal`),
//! `net.ipv4.conf.all.route_localnet` for localhost node ports (iptables
//! mode), and the process's `oomScoreAdj`.
//!
//! What to write is decided by pure functions ([`kproxy_core::sync::host`]:
//! [`plan`], [`needs_write`], [`hashsize_wanted`]); [`Host::apply`] reads
//! and writes `/proc/sys` and
//! `/sys/module/nf_conntrack/parameters/hashsize`. A value that cannot be
//! written (a read-only `/proc/sys`, as in a rootless or unprivileged
//! container; an entry read-only in a network namespace, such as
//! `nf_conntrack_max`; conntrack not loaded) is skipped with a warning.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

pub use kproxy_core::sync::host::*;

/// The number of online CPUs (what kube-proxy scales `maxPerCore` by).
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

/// Whether an I/O error means "not writable here" (read-only file system,
/// permission: a rootless or unprivileged container, an entry read-only in
/// a network namespace).
fn read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
    ) || e.raw_os_error() == Some(libc::EROFS)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Where the host's files are (`/proc/sys` and `/sys`; a test may point
/// them elsewhere).
#[derive(Debug, Clone)]
pub struct Host {
    /// `/proc/sys`.
    pub proc_sys: PathBuf,
    /// The hash size file ([`HASHSIZE`]).
    pub hashsize: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            proc_sys: PathBuf::from("/proc/sys"),
            hashsize: PathBuf::from(HASHSIZE),
        }
    }
}

/// What [`apply`] did with one sysctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written.
    Written,
    /// Already as wanted.
    Unchanged,
    /// Not written: the reason (read-only, missing, ...).
    Skipped(String),
}

impl Host {
    /// Reads a sysctl (`key` under `/proc/sys`).
    pub fn read(&self, key: &str) -> Option<u64> {
        read_u64(&self.proc_sys.join(key))
    }

    fn write(&self, key: &str, value: u64) -> std::io::Result<()> {
        std::fs::write(self.proc_sys.join(key), value.to_string())
    }

    /// Applies `writes`, logging what was set; what cannot be written is
    /// skipped with a warning. Returns each write's outcome.
    pub fn apply(&self, writes: &[SysctlWrite]) -> Vec<Outcome> {
        writes.iter().map(|w| self.apply_one(w)).collect()
    }

    fn apply_one(&self, w: &SysctlWrite) -> Outcome {
        if !needs_write(self.read(w.key), w) {
            return Outcome::Unchanged;
        }
        let dotted = w.key.replace('/', ".");
        match self.write(w.key, w.value) {
            Ok(()) => {
                info!(sysctl = %dotted, value = w.value, "set sysctl");
                if w.key == CONNTRACK_MAX {
                    self.raise_hashsize(w.value);
                }
                Outcome::Written
            }
            Err(e) => {
                let why = if read_only(&e) {
                    format!("read-only here ({e})")
                } else {
                    e.to_string()
                };
                warn!("cannot set {dotted}={}: {why}; left as it is", w.value);
                Outcome::Skipped(why)
            }
        }
    }

    /// kube-proxy raises the hash table with `nf_conntrack_max` when it is
    /// below a quarter of it (possible from the initial network namespace
    /// with a writable /sys only).
    fn raise_hashsize(&self, max: u64) {
        let Some(current) = read_u64(&self.hashsize) else {
            return;
        };
        let Some(size) = hashsize_wanted(current, max) else {
            return;
        };
        match std::fs::write(&self.hashsize, size.to_string()) {
            Ok(()) => info!(hashsize = size, "set the conntrack hash table size"),
            Err(e) => warn!(
                "cannot set the conntrack hash table size to {size}: {e} (is /sys read-only?)"
            ),
        }
    }
}

/// Sets the process's OOM score adjustment, as kube-proxy does
/// (`/proc/self/oom_score_adj`); a failure is logged, never fatal.
pub fn set_oom_score_adj(value: i32) {
    match std::fs::write("/proc/self/oom_score_adj", value.to_string()) {
        Ok(()) => info!(value, "set oom_score_adj"),
        Err(e) => warn!("cannot set oom_score_adj to {value}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_core::config::ConntrackSettings;
    use std::time::Duration;

    fn settings() -> ConntrackSettings {
        kproxy_core::config::ProxySettings::default().conntrack
    }

    #[test]
    fn defaults_set_max_and_tcp_timeouts_only() {
        let keys: Vec<(&str, u64)> = plan(&settings(), 4, false)
            .iter()
            .map(|w| (w.key, w.value))
            .collect();
        assert_eq!(
            keys,
            [
                (CONNTRACK_MAX, 131072),
                (TCP_ESTABLISHED, 86400),
                (TCP_CLOSE_WAIT, 3600)
            ]
        );
    }

    #[test]
    fn zero_values_leave_the_host_alone() {
        let mut ct = settings();
        ct.max_per_core = 0;
        ct.tcp_established_timeout = Duration::ZERO;
        ct.tcp_close_wait_timeout = Duration::ZERO;
        assert!(plan(&ct, 4, false).is_empty());
    }

    #[test]
    fn liberal_udp_and_localnet() {
        let mut ct = settings();
        ct.max_per_core = 0;
        ct.tcp_be_liberal = true;
        ct.udp_timeout = Duration::from_secs(30);
        ct.udp_stream_timeout = Duration::from_secs(120);
        let w = plan(&ct, 1, true);
        let keys: Vec<&str> = w.iter().map(|w| w.key).collect();
        assert_eq!(
            keys,
            [
                TCP_ESTABLISHED,
                TCP_CLOSE_WAIT,
                TCP_BE_LIBERAL,
                UDP_TIMEOUT,
                UDP_STREAM_TIMEOUT,
                ROUTE_LOCALNET
            ]
        );
        assert_eq!(w[3].value, 30);
        assert_eq!(w[5].rule, Rule::Differs);
    }

    #[test]
    fn max_scales_with_cpus_above_min() {
        assert_eq!(conntrack_max(32768, 0, 16), Some(524288));
        assert_eq!(conntrack_max(-1, 5, 16), None);
        assert_eq!(conntrack_max(10, -5, 2), Some(20));
    }

    #[test]
    fn raise_never_lowers_differs_sets_exactly() {
        let raise = SysctlWrite {
            key: TCP_ESTABLISHED,
            value: 100,
            rule: Rule::Raise,
        };
        assert!(needs_write(Some(99), &raise));
        assert!(!needs_write(Some(100), &raise));
        assert!(!needs_write(Some(101), &raise));
        assert!(needs_write(None, &raise));
        let differs = SysctlWrite {
            rule: Rule::Differs,
            ..raise
        };
        assert!(needs_write(Some(101), &differs));
        assert!(!needs_write(Some(100), &differs));
    }

    #[test]
    fn apply_writes_raises_and_skips() {
        let dir = std::env::temp_dir().join(format!("kproxy-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nf = dir.join("net/netfilter");
        std::fs::create_dir_all(&nf).expect("dir");
        std::fs::write(nf.join("nf_conntrack_max"), "65536\n").expect("write");
        std::fs::write(nf.join("nf_conntrack_tcp_timeout_established"), "432000\n").expect("write");
        std::fs::write(dir.join("hashsize"), "1024\n").expect("write");
        let host = Host {
            proc_sys: dir.clone(),
            hashsize: dir.join("hashsize"),
        };
        let mut ct = settings();
        ct.tcp_close_wait_timeout = Duration::ZERO;
        // close_wait absent: the route_localnet directory does not exist.
        let out = host.apply(&plan(&ct, 2, true));
        assert_eq!(out[0], Outcome::Written);
        assert_eq!(host.read(CONNTRACK_MAX), Some(131072));
        assert_eq!(read_u64(&dir.join("hashsize")), Some(32768));
        // Already higher: left alone.
        assert_eq!(out[1], Outcome::Unchanged);
        assert_eq!(host.read(TCP_ESTABLISHED), Some(432000));
        assert!(matches!(out[2], Outcome::Skipped(_)), "{out:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
