//! kube-proxy's Prometheus metrics (`pkg/proxy/metrics`), registered per
//! proxy mode as kube-proxy registers them, on a [`prometheus`] registry
//! with the standard `process_*` collector; and the health state behind
//! `/healthz` and `/livez` (`pkg/proxy/healthcheck/proxy_health.go`).
//!
//! Every kube-proxy metric is `ALPHA`: its help text starts with
//! `[ALPHA] `, as component-base prints it. The metrics kproxy adds of its
//! own are named `kproxy_*`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kproxy_core::model::IpFamily;
use kproxy_iptables::layout::{CT_STATE_INVALID_COUNTER, LOCALHOST_NODEPORTS_COUNTER};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing::warn;

use super::sync::Mode;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `ip_family` label value of a family (`v1.IPFamily`).
pub fn family_label(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// `prometheus.ExponentialBuckets(start, factor, n)`.
fn exponential(start: f64, factor: f64, n: usize) -> Vec<f64> {
    std::iter::successors(Some(start), |b| Some(b * factor))
        .take(n)
        .collect()
}

/// `prometheus.LinearBuckets(start, width, n)`.
fn linear(start: f64, width: f64, n: u32) -> Vec<f64> {
    (0..n).map(|i| start + width * f64::from(i)).collect()
}

/// The buckets of `kubeproxy_network_programming_duration_seconds`:
/// component-base's `MergeBuckets` of 0.25 s steps to 0.5 s, 1 s steps to
/// 59 s, 5 s steps to 115 s and 30 s steps to 5 min, after the leading 0
/// that `MergeBuckets` starts with.
pub fn network_programming_buckets() -> Vec<f64> {
    let mut b = vec![0.0];
    b.extend(linear(0.25, 0.25, 2));
    b.extend(linear(1.0, 1.0, 59));
    b.extend(linear(60.0, 5.0, 12));
    b.extend(linear(120.0, 30.0, 7));
    b
}

fn alpha(name: &str, help: &str) -> Opts {
    Opts::new(name, format!("[ALPHA] {help}"))
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::from(alpha(name, help)).buckets(buckets);
    // Constant names, labels and increasing buckets: cannot fail.
    HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn sync_histogram(name: &str, help: &str) -> HistogramVec {
    histogram(name, help, exponential(0.001, 2.0, 15), &["ip_family"])
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(alpha(name, help)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(alpha(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(alpha(name, help)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(alpha(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(alpha(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Reads an nfacct counter's packets (`None`: unreadable).
pub type NfacctReader = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// The packets of `name` in `nfacct get NAME`'s output
/// (`{ pkts = 00000000000000000042, bytes = ... } = NAME;`).
pub fn nfacct_packets(output: &str, name: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let (counts, counter) = line.rsplit_once(" = ")?;
        if counter.trim().trim_end_matches(';') != name {
            return None;
        }
        let pkts = counts.split("pkts = ").nth(1)?;
        pkts.split(',').next()?.trim().parse().ok()
    })
}

/// Reads an nfacct counter with the `nfacct` tool, as the agent runs its
/// other tools (kube-proxy reads it over netlink).
pub fn nfacct_tool(name: &str) -> Option<u64> {
    match super::exec::run("nfacct", &["get", name], None) {
        Ok(out) => nfacct_packets(&out, name),
        Err(e) => {
            warn!("failed to collect nfacct counter: {e}");
            None
        }
    }
}

/// A counter read from an nfacct counter at each scrape (kube-proxy's
/// custom collectors): no sample when the counter cannot be read.
struct NfacctCollector {
    desc: Desc,
    help: String,
    counter: &'static str,
    read: NfacctReader,
}

impl NfacctCollector {
    fn new(name: &str, help: &str, counter: &'static str, read: NfacctReader) -> Self {
        let help = format!("[ALPHA] {help}");
        let desc = Desc::new(name.into(), help.clone(), Vec::new(), HashMap::new())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Self {
            desc,
            help,
            counter,
            read,
        }
    }
}

impl Collector for NfacctCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(packets) = (self.read)(self.counter) else {
            return Vec::new();
        };
        match IntCounter::new(self.desc.fq_name.clone(), self.help.clone()) {
            Ok(c) => {
                c.inc_by(packets);
                c.collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// The iptables mode's own metrics.
struct IptablesMetrics {
    sync_full: HistogramVec,
    sync_partial: HistogramVec,
    restore_failures: IntCounterVec,
    partial_restore_failures: IntCounterVec,
    rules_total: IntGaugeVec,
    rules_last: IntGaugeVec,
}

/// The nftables mode's own metrics.
struct NftablesMetrics {
    sync_failures: IntCounterVec,
    cleanup_failures: IntCounterVec,
    objects: IntGaugeVec,
}

#[derive(Debug, Default)]
struct Health {
    last_updated: BTreeMap<IpFamily, SystemTime>,
    oldest_pending: BTreeMap<IpFamily, Instant>,
}

/// The agent's metrics and health, shared between the sync loop and the
/// HTTP servers.
pub struct Metrics {
    registry: Registry,
    mode: Mode,
    sync: HistogramVec,
    network_programming: HistogramVec,
    last_timestamp: GaugeVec,
    last_queued_timestamp: GaugeVec,
    endpoint_changes_pending: IntGauge,
    endpoint_changes_total: IntCounter,
    service_changes_pending: IntGauge,
    service_changes_total: IntCounter,
    healthz: IntCounterVec,
    livez: IntCounterVec,
    no_local_endpoints: IntGaugeVec,
    iptables: Option<IptablesMetrics>,
    nftables: Option<NftablesMetrics>,
    conntrack_cleanup_failures: IntCounter,
    skipped_services: IntGauge,
    skipped_services_total: IntCounter,
    health: Mutex<Health>,
    health_timeout: Duration,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    /// Metrics of a proxier in `mode` whose health times out after
    /// `health_timeout` (kube-proxy: 2 × syncPeriod); the iptables mode's
    /// nfacct counters are read with the `nfacct` tool.
    pub fn new(mode: Mode, health_timeout: Duration) -> Self {
        Self::with_nfacct(mode, health_timeout, Arc::new(nfacct_tool))
    }

    /// As [`Metrics::new`], the nfacct counters read by `read`.
    pub fn with_nfacct(mode: Mode, health_timeout: Duration, read: NfacctReader) -> Self {
        let registry = Registry::new();
        let m = Self {
            mode,
            sync: sync_histogram(
                "kubeproxy_sync_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds",
            ),
            network_programming: histogram(
                "kubeproxy_network_programming_duration_seconds",
                "In Cluster Network Programming Latency in seconds",
                network_programming_buckets(),
                &["ip_family"],
            ),
            last_timestamp: float_gauge_vec(
                "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                "The last time proxy rules were successfully synced",
                &["ip_family"],
            ),
            last_queued_timestamp: float_gauge_vec(
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                "The last time a sync of proxy rules was queued",
                &["ip_family"],
            ),
            endpoint_changes_pending: gauge(
                "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                "Pending proxy rules Endpoint changes",
            ),
            endpoint_changes_total: counter(
                "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                "Cumulative proxy rules Endpoint changes",
            ),
            service_changes_pending: gauge(
                "kubeproxy_sync_proxy_rules_service_changes_pending",
                "Pending proxy rules Service changes",
            ),
            service_changes_total: counter(
                "kubeproxy_sync_proxy_rules_service_changes_total",
                "Cumulative proxy rules Service changes",
            ),
            healthz: counter_vec(
                "kubeproxy_proxy_healthz_total",
                "Cumulative proxy healthz HTTP status",
                &["code"],
            ),
            livez: counter_vec(
                "kubeproxy_proxy_livez_total",
                "Cumulative proxy livez HTTP status",
                &["code"],
            ),
            no_local_endpoints: gauge_vec(
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                "Number of services with a Local traffic policy and no endpoints",
                &["ip_family", "traffic_policy"],
            ),
            iptables: (mode == Mode::Iptables).then(|| IptablesMetrics {
                sync_full: sync_histogram(
                    "kubeproxy_sync_full_proxy_rules_duration_seconds",
                    "SyncProxyRules latency in seconds for full resyncs",
                ),
                sync_partial: sync_histogram(
                    "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                    "SyncProxyRules latency in seconds for partial resyncs",
                ),
                restore_failures: counter_vec(
                    "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
                    "Cumulative proxy iptables restore failures",
                    &["ip_family"],
                ),
                partial_restore_failures: counter_vec(
                    "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
                    "Cumulative proxy iptables partial restore failures",
                    &["ip_family"],
                ),
                rules_total: gauge_vec(
                    "kubeproxy_sync_proxy_rules_iptables_total",
                    "Total number of iptables rules owned by kube-proxy",
                    &["ip_family", "table"],
                ),
                rules_last: gauge_vec(
                    "kubeproxy_sync_proxy_rules_iptables_last",
                    "Number of iptables rules written by kube-proxy in last sync",
                    &["ip_family", "table"],
                ),
            }),
            nftables: (mode == Mode::Nftables).then(|| NftablesMetrics {
                sync_failures: counter_vec(
                    "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
                    "Cumulative proxy nftables sync failures",
                    &["ip_family"],
                ),
                cleanup_failures: counter_vec(
                    "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
                    "Cumulative proxy nftables cleanup failures",
                    &["ip_family"],
                ),
                objects: IntGaugeVec::new(
                    Opts::new(
                        "kproxy_sync_proxy_rules_nftables_objects",
                        "Objects in kproxy's nftables tables by kind (kproxy's own metric)",
                    ),
                    &["ip_family", "type"],
                )
                .unwrap_or_else(|e| panic!("kproxy_sync_proxy_rules_nftables_objects: {e}")),
            }),
            conntrack_cleanup_failures: IntCounter::new(
                "kproxy_conntrack_cleanup_failures_total",
                "Cumulative conntrack -D failures (kproxy's own metric)",
            )
            .unwrap_or_else(|e| panic!("kproxy_conntrack_cleanup_failures_total: {e}")),
            skipped_services: IntGauge::new(
                "kproxy_sync_proxy_rules_skipped_services",
                "Services left out of the rules because the kernel tool rejected them, until they change (kproxy's own metric; kube-proxy has none)",
            )
            .unwrap_or_else(|e| panic!("kproxy_sync_proxy_rules_skipped_services: {e}")),
            skipped_services_total: IntCounter::new(
                "kproxy_sync_proxy_rules_skipped_services_total",
                "Cumulative Services left out of the rules because the kernel tool rejected them (kproxy's own metric; kube-proxy has none)",
            )
            .unwrap_or_else(|e| panic!("kproxy_sync_proxy_rules_skipped_services_total: {e}")),
            health: Mutex::new(Health::default()),
            health_timeout,
            registry,
        };
        m.register(read);
        m
    }

    /// Registers the metrics of the mode, as kube-proxy's `RegisterMetrics`.
    fn register(&self, read: NfacctReader) {
        let mut all: Vec<Box<dyn Collector>> = vec![
            Box::new(self.sync.clone()),
            Box::new(self.last_queued_timestamp.clone()),
            Box::new(self.last_timestamp.clone()),
            Box::new(self.endpoint_changes_pending.clone()),
            Box::new(self.endpoint_changes_total.clone()),
            Box::new(self.service_changes_pending.clone()),
            Box::new(self.service_changes_total.clone()),
            Box::new(self.healthz.clone()),
            Box::new(self.livez.clone()),
            Box::new(self.network_programming.clone()),
            Box::new(self.no_local_endpoints.clone()),
            Box::new(self.conntrack_cleanup_failures.clone()),
            Box::new(self.skipped_services.clone()),
            Box::new(self.skipped_services_total.clone()),
        ];
        if let Some(i) = &self.iptables {
            all.push(Box::new(NfacctCollector::new(
                "kubeproxy_iptables_ct_state_invalid_dropped_packets_total",
                "packets dropped by iptables to work around conntrack problems",
                CT_STATE_INVALID_COUNTER,
                read.clone(),
            )));
            all.push(Box::new(NfacctCollector::new(
                "kubeproxy_iptables_localhost_nodeports_accepted_packets_total",
                "Number of packets accepted on nodeports of loopback interface",
                LOCALHOST_NODEPORTS_COUNTER,
                read,
            )));
            all.push(Box::new(i.sync_full.clone()));
            all.push(Box::new(i.sync_partial.clone()));
            all.push(Box::new(i.restore_failures.clone()));
            all.push(Box::new(i.partial_restore_failures.clone()));
            all.push(Box::new(i.rules_total.clone()));
            all.push(Box::new(i.rules_last.clone()));
        }
        if let Some(n) = &self.nftables {
            all.push(Box::new(n.sync_failures.clone()));
            all.push(Box::new(n.cleanup_failures.clone()));
            all.push(Box::new(n.objects.clone()));
        }
        all.push(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        for c in all {
            // Distinct constant names: registering cannot fail.
            if let Err(e) = self.registry.register(c) {
                warn!("metrics: {e}");
            }
        }
    }

    /// The proxy mode the metrics are registered for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn health_state(&self) -> std::sync::MutexGuard<'_, Health> {
        // A panicking holder leaves plain times behind: keep serving them.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sync of `family` finished: its duration and whether it was full
    /// (the iptables mode's full and partial histograms).
    pub fn observe_sync(&self, family: IpFamily, d: Duration, full: bool) {
        let f = family_label(family);
        let secs = d.as_secs_f64();
        self.sync.with_label_values(&[f]).observe(secs);
        if let Some(i) = &self.iptables {
            let h = if full { &i.sync_full } else { &i.sync_partial };
            h.with_label_values(&[f]).observe(secs);
        }
    }

    /// A sync succeeded: the rules of `families` are up to date.
    pub fn synced(&self, families: &[IpFamily]) {
        let now = SystemTime::now();
        let mut h = self.health_state();
        for f in families {
            h.oldest_pending.remove(f);
            h.last_updated.insert(*f, now);
            self.last_timestamp
                .with_label_values(&[family_label(*f)])
                .set(unix(now));
        }
    }

    /// A change was queued for `families` (health: it must be applied
    /// within the health timeout).
    pub fn queued(&self, families: &[IpFamily]) {
        let now = Instant::now();
        let mut h = self.health_state();
        for f in families {
            h.oldest_pending.entry(*f).or_insert(now);
            self.last_queued_timestamp
                .with_label_values(&[family_label(*f)])
                .set(unix(SystemTime::now()));
        }
    }

    /// Changes seen since the last call (`endpoints`: EndpointSlice
    /// changes; `services`: Service changes) and the changes pending now.
    pub fn changes(&self, seen: Changes, pending: Changes) {
        self.endpoint_changes_total.inc_by(seen.endpoints);
        self.service_changes_total.inc_by(seen.services);
        self.endpoint_changes_pending
            .set(i64::try_from(pending.endpoints).unwrap_or(i64::MAX));
        self.service_changes_pending
            .set(i64::try_from(pending.services).unwrap_or(i64::MAX));
    }

    /// One network programming latency of `family` (object change to
    /// rules applied).
    pub fn observe_programming(&self, family: IpFamily, d: Duration) {
        self.network_programming
            .with_label_values(&[family_label(family)])
            .observe(d.as_secs_f64());
    }

    /// The service ports of `family` whose Local traffic policy drops
    /// their traffic (no local endpoint): `internal` and `external`.
    pub fn no_local_endpoints(&self, family: IpFamily, internal: usize, external: usize) {
        let f = family_label(family);
        for (policy, n) in [("internal", internal), ("external", external)] {
            self.no_local_endpoints
                .with_label_values(&[f, policy])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// An `iptables-restore` of `family` failed (`partial`: in a partial
    /// sync).
    pub fn iptables_restore_failed(&self, family: IpFamily, partial: bool) {
        if let Some(i) = &self.iptables {
            let f = family_label(family);
            i.restore_failures.with_label_values(&[f]).inc();
            if partial {
                i.partial_restore_failures.with_label_values(&[f]).inc();
            }
        }
    }

    /// Rules of `family` in kproxy's chains per table, and rules written by
    /// the last sync.
    pub fn iptables_rules(
        &self,
        family: IpFamily,
        total: &BTreeMap<String, usize>,
        last: &BTreeMap<String, usize>,
    ) {
        let Some(i) = &self.iptables else {
            return;
        };
        let f = family_label(family);
        for (vec, counts) in [(&i.rules_total, total), (&i.rules_last, last)] {
            for (table, n) in counts {
                vec.with_label_values(&[f, table])
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
    }

    /// An nft transaction of `family` failed (`cleanup`: the stale-chain
    /// deletion).
    pub fn nftables_failed(&self, family: IpFamily, cleanup: bool) {
        if let Some(n) = &self.nftables {
            let v = if cleanup {
                &n.cleanup_failures
            } else {
                &n.sync_failures
            };
            v.with_label_values(&[family_label(family)]).inc();
        }
    }

    /// Objects in the nftables table of `family` by kind.
    pub fn nftables_objects(&self, family: IpFamily, counts: &BTreeMap<String, usize>) {
        if let Some(n) = &self.nftables {
            // Every kind is counted (zero included): each is overwritten.
            for (kind, c) in counts {
                n.objects
                    .with_label_values(&[family_label(family), kind])
                    .set(i64::try_from(*c).unwrap_or(i64::MAX));
            }
        }
    }

    /// `now` Services are left out of the rules (see
    /// [`super::isolate`]), `newly` of them since the last call.
    pub fn skipped_services(&self, now: usize, newly: usize) {
        self.skipped_services
            .set(i64::try_from(now).unwrap_or(i64::MAX));
        self.skipped_services_total
            .inc_by(u64::try_from(newly).unwrap_or(u64::MAX));
    }

    /// A `conntrack -D` failed.
    pub fn conntrack_cleanup_failed(&self) {
        self.conntrack_cleanup_failures.inc();
    }

    /// kube-proxy's health: false once a queued change has waited longer
    /// than the timeout; with the last update time.
    pub fn health(&self) -> (bool, Option<SystemTime>) {
        let h = self.health_state();
        let last = h.last_updated.values().max().copied();
        for (f, updated) in &h.last_updated {
            if let Some(q) = h.oldest_pending.get(f)
                && q.elapsed() >= self.health_timeout
            {
                return (false, Some(*updated));
            }
        }
        // Healthy while starting up (no sync yet), as kube-proxy.
        (true, last)
    }

    /// Counts a `/healthz` (`livez` false) or `/livez` answer.
    pub fn count_probe(&self, livez: bool, code: u16) {
        let v = if livez { &self.livez } else { &self.healthz };
        v.with_label_values(&[&code.to_string()]).inc();
    }

    /// The Prometheus text exposition (runs the nfacct reader: blocking).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                warn!("metrics: {e}");
                String::new()
            })
    }
}

pub use kproxy_core::sync::latency::Changes;

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
    use std::collections::BTreeSet;

    #[test]
    fn go_time_format() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(go_time(t), "2023-11-14 22:13:20.12 +0000 UTC");
        assert_eq!(go_time(UNIX_EPOCH), "1970-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn health_times_out() {
        let m = Metrics::new(Mode::Iptables, Duration::from_millis(0));
        assert!(m.health().0);
        m.synced(&[IpFamily::V4]);
        m.queued(&[IpFamily::V4]);
        assert!(!m.health().0);
        m.synced(&[IpFamily::V4]);
        assert!(m.health().0);
    }

    #[test]
    fn nfacct_output() {
        let out = "{ pkts = 00000000000000000042, bytes = 00000000000000004200 } = ct_state_invalid_dropped_pkts;\n";
        assert_eq!(nfacct_packets(out, CT_STATE_INVALID_COUNTER), Some(42));
        assert_eq!(nfacct_packets(out, LOCALHOST_NODEPORTS_COUNTER), None);
        assert_eq!(nfacct_packets("garbage", CT_STATE_INVALID_COUNTER), None);
    }

    #[test]
    fn network_programming_buckets_as_upstream() {
        let b = network_programming_buckets();
        assert_eq!(b.len(), 1 + 2 + 59 + 12 + 7);
        assert_eq!(&b[..4], &[0.0, 0.25, 0.5, 1.0]);
        assert_eq!(b[61], 59.0);
        assert_eq!(b[62], 60.0);
        assert_eq!(b[73], 115.0);
        assert_eq!(b[74], 120.0);
        assert_eq!(b.last(), Some(&300.0));
        assert_eq!(exponential(0.001, 2.0, 15).last(), Some(&16.384));
    }

    /// name -> (type, label names, help), parsed from an exposition.
    fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>, String)> {
        let mut out: BTreeMap<String, (String, BTreeSet<String>, String)> = BTreeMap::new();
        let mut helps = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                helps.insert(name.to_string(), help.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                let help = helps.get(name).cloned().unwrap_or_default();
                out.insert(name.into(), (kind.into(), BTreeSet::new(), help));
            } else if !line.starts_with('#') && !line.is_empty() {
                let name_end = line.find(['{', ' ']).unwrap_or(line.len());
                let sample = &line[..name_end];
                let family = out
                    .keys()
                    .filter(|f| sample.starts_with(f.as_str()))
                    .max_by_key(|f| f.len())
                    .cloned()
                    .unwrap_or_else(|| panic!("sample of no family: {line}"));
                if let Some(labels) = line[name_end..]
                    .strip_prefix('{')
                    .and_then(|l| l.split_once('}'))
                {
                    for pair in labels.0.split(',') {
                        let name = pair.split('=').next().unwrap_or_default();
                        if name != "le" && !name.is_empty() {
                            out.get_mut(&family).map(|f| f.1.insert(name.to_string()));
                        }
                    }
                }
            }
        }
        out
    }

    /// Every metric touched once.
    fn exercised(mode: Mode) -> String {
        let m = Metrics::with_nfacct(mode, Duration::from_secs(60), Arc::new(|_| Some(7)));
        for f in [IpFamily::V4, IpFamily::V6] {
            m.observe_sync(f, Duration::from_millis(3), true);
            m.observe_sync(f, Duration::from_millis(3), false);
            m.queued(&[f]);
            m.synced(&[f]);
            m.observe_programming(f, Duration::from_secs(2));
            m.no_local_endpoints(f, 1, 2);
            m.iptables_restore_failed(f, true);
            let counts = BTreeMap::from([("nat".to_string(), 3), ("filter".to_string(), 1)]);
            m.iptables_rules(f, &counts, &counts);
            m.nftables_failed(f, false);
            m.nftables_failed(f, true);
            m.nftables_objects(f, &BTreeMap::from([("chain".to_string(), 4)]));
        }
        m.changes(
            Changes {
                endpoints: 3,
                services: 2,
            },
            Changes {
                endpoints: 1,
                services: 1,
            },
        );
        m.count_probe(false, 200);
        m.count_probe(true, 503);
        m.render()
    }

    const COMMON: &[(&str, &str, &[&str])] = &[
        (
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "histogram",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "gauge",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "gauge",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "gauge",
            &[],
        ),
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "counter",
            &[],
        ),
        (
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "gauge",
            &[],
        ),
        (
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "counter",
            &[],
        ),
        ("kubeproxy_proxy_healthz_total", "counter", &["code"]),
        ("kubeproxy_proxy_livez_total", "counter", &["code"]),
        (
            "kubeproxy_network_programming_duration_seconds",
            "histogram",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "gauge",
            &["ip_family", "traffic_policy"],
        ),
    ];

    const IPTABLES: &[(&str, &str, &[&str])] = &[
        (
            "kubeproxy_iptables_ct_state_invalid_dropped_packets_total",
            "counter",
            &[],
        ),
        (
            "kubeproxy_iptables_localhost_nodeports_accepted_packets_total",
            "counter",
            &[],
        ),
        (
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "histogram",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "histogram",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "counter",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
            "counter",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_proxy_rules_iptables_total",
            "gauge",
            &["ip_family", "table"],
        ),
        (
            "kubeproxy_sync_proxy_rules_iptables_last",
            "gauge",
            &["ip_family", "table"],
        ),
    ];

    const NFTABLES: &[(&str, &str, &[&str])] = &[
        (
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "counter",
            &["ip_family"],
        ),
        (
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
            "counter",
            &["ip_family"],
        ),
    ];

    const PROCESS: &[&str] = &[
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ];

    fn check_families(mode: Mode, own: &[(&str, &str, &[&str])]) {
        let text = exercised(mode);
        let got = families(&text);
        let mut want: Vec<&(&str, &str, &[&str])> = COMMON.iter().chain(own).collect();
        want.sort();
        for (name, kind, labels) in want {
            let (k, l, help) = got
                .get(*name)
                .unwrap_or_else(|| panic!("{name} missing in {mode:?} mode:\n{text}"));
            assert_eq!(k, kind, "{name}");
            let labels: BTreeSet<String> = labels.iter().map(|s| s.to_string()).collect();
            assert_eq!(l, &labels, "{name}");
            assert!(help.starts_with("[ALPHA] "), "{name}: {help}");
        }
        for name in PROCESS {
            assert!(got.contains_key(*name), "{name} missing:\n{text}");
        }
        // Nothing of kube-proxy's beyond the mode's families.
        let known: BTreeSet<&str> = COMMON.iter().chain(own).map(|f| f.0).collect();
        for name in got.keys().filter(|n| n.starts_with("kubeproxy_")) {
            assert!(known.contains(name.as_str()), "{name} in {mode:?} mode");
        }
    }

    #[test]
    fn iptables_families_as_kube_proxy_registers_them() {
        check_families(Mode::Iptables, IPTABLES);
        let text = exercised(Mode::Iptables);
        assert!(text.contains("kubeproxy_iptables_ct_state_invalid_dropped_packets_total 7"));
        assert!(text.contains(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv6\",traffic_policy=\"external\"} 2"
        ));
        assert!(text.contains(
            "kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"0\"} 0"
        ));
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 3"));
    }

    #[test]
    fn nftables_families_as_kube_proxy_registers_them() {
        check_families(Mode::Nftables, NFTABLES);
    }

    #[test]
    fn unreadable_nfacct_counter_has_no_sample() {
        let m = Metrics::with_nfacct(Mode::Iptables, Duration::from_secs(1), Arc::new(|_| None));
        let text = m.render();
        assert!(!text.contains("kubeproxy_iptables_ct_state_invalid_dropped_packets_total"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 0"));
    }
}
