//! kube-proxy's Prometheus metrics (the `kubeproxy_*` names of
//! `pkg/proxy/metrics`) that kproxy's agent maintains, and the health state
//! behind `/healthz` and `/livez` (`pkg/proxy/healthcheck/proxy_health.go`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kproxy_core::model::IpFamily;

/// A Prometheus histogram.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: Vec<f64>) -> Self {
        let counts = vec![0; bounds.len()];
        Self {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
        }
    }
    fn exponential(start: f64, factor: f64, n: usize) -> Self {
        let mut b = Vec::with_capacity(n);
        let mut v = start;
        for _ in 0..n {
            b.push(v);
            v *= factor;
        }
        Self::new(b)
    }
    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

fn network_programming_buckets() -> Vec<f64> {
    let mut b = vec![0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

#[derive(Debug)]
struct Inner {
    sync: Histogram,
    sync_full: Histogram,
    sync_partial: Histogram,
    network_programming: Histogram,
    last_timestamp: f64,
    last_queued_timestamp: f64,
    iptables_restore_failures: u64,
    iptables_partial_restore_failures: u64,
    iptables_total: BTreeMap<String, usize>,
    iptables_last: BTreeMap<String, usize>,
    nftables_sync_failures: u64,
    nftables_cleanup_failures: u64,
    nftables_objects: BTreeMap<String, usize>,
    healthz: BTreeMap<u16, u64>,
    livez: BTreeMap<u16, u64>,
    conntrack_cleanup_failures: u64,
    skipped_services: usize,
    skipped_services_total: u64,
    // Health.
    last_updated: BTreeMap<IpFamily, SystemTime>,
    oldest_pending: BTreeMap<IpFamily, Instant>,
}

/// The agent's metrics and health, shared between the sync loop and the
/// HTTP servers.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
    health_timeout: Duration,
    mode: String,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    /// Metrics of a proxier in `mode` (`iptables` / `nftables`) whose
    /// health times out after `health_timeout` (kube-proxy: 2 × syncPeriod).
    pub fn new(mode: &str, health_timeout: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                sync: Histogram::exponential(0.001, 2.0, 15),
                sync_full: Histogram::exponential(0.001, 2.0, 15),
                sync_partial: Histogram::exponential(0.001, 2.0, 15),
                network_programming: Histogram::new(network_programming_buckets()),
                last_timestamp: 0.0,
                last_queued_timestamp: 0.0,
                iptables_restore_failures: 0,
                iptables_partial_restore_failures: 0,
                iptables_total: BTreeMap::new(),
                iptables_last: BTreeMap::new(),
                nftables_sync_failures: 0,
                nftables_cleanup_failures: 0,
                nftables_objects: BTreeMap::new(),
                healthz: BTreeMap::new(),
                livez: BTreeMap::new(),
                conntrack_cleanup_failures: 0,
                skipped_services: 0,
                skipped_services_total: 0,
                last_updated: BTreeMap::new(),
                oldest_pending: BTreeMap::new(),
            }),
            health_timeout,
            mode: mode.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking holder leaves plain numbers behind: keep serving them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sync finished: its duration and whether it was full.
    pub fn observe_sync(&self, d: Duration, full: bool) {
        let mut m = self.lock();
        m.sync.observe(d.as_secs_f64());
        if full {
            m.sync_full.observe(d.as_secs_f64());
        } else {
            m.sync_partial.observe(d.as_secs_f64());
        }
    }

    /// A sync succeeded: the rules of `families` are up to date.
    pub fn synced(&self, families: &[IpFamily]) {
        let mut m = self.lock();
        let now = SystemTime::now();
        m.last_timestamp = unix(now);
        for f in families {
            m.oldest_pending.remove(f);
            m.last_updated.insert(*f, now);
        }
    }

    /// A change was queued for `families` (health: it must be applied
    /// within the health timeout).
    pub fn queued(&self, families: &[IpFamily]) {
        let mut m = self.lock();
        m.last_queued_timestamp = unix(SystemTime::now());
        let now = Instant::now();
        for f in families {
            m.oldest_pending.entry(*f).or_insert(now);
        }
    }

    /// One network programming latency (object change to rules applied).
    pub fn observe_programming(&self, d: Duration) {
        self.lock().network_programming.observe(d.as_secs_f64());
    }

    /// An `iptables-restore` failed (`partial`: in a partial sync).
    pub fn iptables_restore_failed(&self, partial: bool) {
        let mut m = self.lock();
        m.iptables_restore_failures += 1;
        if partial {
            m.iptables_partial_restore_failures += 1;
        }
    }

    /// Rules in kproxy's chains per table, and rules written by the last sync.
    pub fn iptables_rules(&self, total: BTreeMap<String, usize>, last: BTreeMap<String, usize>) {
        let mut m = self.lock();
        m.iptables_total = total;
        m.iptables_last = last;
    }

    /// An nft transaction failed (`cleanup`: the stale-chain deletion).
    pub fn nftables_failed(&self, cleanup: bool) {
        let mut m = self.lock();
        if cleanup {
            m.nftables_cleanup_failures += 1;
        } else {
            m.nftables_sync_failures += 1;
        }
    }

    /// Objects in the nftables table by kind.
    pub fn nftables_objects(&self, counts: BTreeMap<String, usize>) {
        self.lock().nftables_objects = counts;
    }

    /// `now` Services are left out of the rules (see
    /// [`super::isolate`]), `newly` of them since the last call.
    pub fn skipped_services(&self, now: usize, newly: usize) {
        let mut m = self.lock();
        m.skipped_services = now;
        m.skipped_services_total += newly as u64;
    }

    /// A `conntrack -D` failed.
    pub fn conntrack_cleanup_failed(&self) {
        self.lock().conntrack_cleanup_failures += 1;
    }

    /// kube-proxy's health: false once a queued change has waited longer
    /// than the timeout; with the last update time.
    pub fn health(&self) -> (bool, Option<SystemTime>) {
        let m = self.lock();
        let last = m.last_updated.values().max().copied();
        for (f, _) in m.last_updated.iter() {
            if let Some(q) = m.oldest_pending.get(f)
                && q.elapsed() >= self.health_timeout
            {
                return (false, last);
            }
        }
        // Healthy while starting up (no sync yet), as kube-proxy.
        (true, last)
    }

    /// Counts a `/healthz` (`livez` false) or `/livez` answer.
    pub fn count_probe(&self, livez: bool, code: u16) {
        let mut m = self.lock();
        let map = if livez { &mut m.livez } else { &mut m.healthz };
        *map.entry(code).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        m.sync.render(
            &mut out,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
        );
        m.sync_full.render(
            &mut out,
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
        );
        m.sync_partial.render(
            &mut out,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
        );
        m.network_programming.render(
            &mut out,
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
        );
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            "gauge",
            m.last_timestamp.to_string(),
        );
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            "gauge",
            m.last_queued_timestamp.to_string(),
        );
        let labelled = |out: &mut String,
                        name: &str,
                        help: &str,
                        kind: &str,
                        label: &str,
                        values: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (k, v) in values {
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
            }
        };
        labelled(
            &mut out,
            "kubeproxy_proxy_healthz_total",
            "Cumulative proxy healthz HTTP status",
            "counter",
            "code",
            m.healthz
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        labelled(
            &mut out,
            "kubeproxy_proxy_livez_total",
            "Cumulative proxy livez HTTP status",
            "counter",
            "code",
            m.livez
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if self.mode == "iptables" {
            gauge(
                &mut out,
                "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
                "Cumulative proxy iptables restore failures",
                "counter",
                m.iptables_restore_failures.to_string(),
            );
            gauge(
                &mut out,
                "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
                "Cumulative proxy iptables partial restore failures",
                "counter",
                m.iptables_partial_restore_failures.to_string(),
            );
            labelled(
                &mut out,
                "kubeproxy_sync_proxy_rules_iptables_total",
                "Total number of iptables rules owned by kube-proxy",
                "gauge",
                "table",
                m.iptables_total
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            );
            labelled(
                &mut out,
                "kubeproxy_sync_proxy_rules_iptables_last",
                "Number of iptables rules written by kube-proxy in last sync",
                "gauge",
                "table",
                m.iptables_last
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            );
        } else {
            gauge(
                &mut out,
                "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
                "Cumulative proxy nftables sync failures",
                "counter",
                m.nftables_sync_failures.to_string(),
            );
            gauge(
                &mut out,
                "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
                "Cumulative proxy nftables cleanup failures",
                "counter",
                m.nftables_cleanup_failures.to_string(),
            );
            labelled(
                &mut out,
                "kproxy_sync_proxy_rules_nftables_objects",
                "Objects in kproxy's nftables tables by kind (kproxy's own metric)",
                "gauge",
                "type",
                m.nftables_objects
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            );
        }
        gauge(
            &mut out,
            "kproxy_conntrack_cleanup_failures_total",
            "Cumulative conntrack -D failures (kproxy's own metric)",
            "counter",
            m.conntrack_cleanup_failures.to_string(),
        );
        gauge(
            &mut out,
            "kproxy_sync_proxy_rules_skipped_services",
            "Services left out of the rules because the kernel tool rejected them, until they change (kproxy's own metric; kube-proxy has none)",
            "gauge",
            m.skipped_services.to_string(),
        );
        gauge(
            &mut out,
            "kproxy_sync_proxy_rules_skipped_services_total",
            "Cumulative Services left out of the rules because the kernel tool rejected them (kproxy's own metric; kube-proxy has none)",
            "counter",
            m.skipped_services_total.to_string(),
        );
        out
    }
}

/// Go's `time.Time.String()` for a UTC time
/// (`2006-01-02 15:04:05.999999999 +0000 UTC`), as kube-proxy's health
/// bodies print times.
pub fn go_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut frac = format!("{:09}", d.subsec_nanos());
    while frac.ends_with('0') {
        frac.pop();
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}{frac} +0000 UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_format() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(go_time(t), "2023-11-14 22:13:20.12 +0000 UTC");
        assert_eq!(go_time(UNIX_EPOCH), "1970-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn health_times_out() {
        let m = Metrics::new("iptables", Duration::from_millis(0));
        assert!(m.health().0);
        m.synced(&[IpFamily::V4]);
        m.queued(&[IpFamily::V4]);
        assert!(!m.health().0);
        m.synced(&[IpFamily::V4]);
        assert!(m.health().0);
        assert!(
            m.render()
                .contains("kubeproxy_sync_proxy_rules_iptables_restore_failures_total 0")
        );
    }
}
