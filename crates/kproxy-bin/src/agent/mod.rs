//! `kproxy run`: a node agent that keeps the node's rules equal to what
//! kube-proxy would write for the cluster state a source gives.
//!
//! * [`source`] and [`kube`]: where the state comes from (`dir:PATH`,
//!   polled; the API server, watched), kept in a
//!   [`kproxy_core::convert::Store`] that names the Services each change
//!   touches.
//! * [`incremental`]: the [`incremental::Compiler`]: per family a plan cache
//!   that re-plans only the named Services, and the layout of only those,
//!   before and after (full results for full syncs).
//! * [`sync`]: the [`sync::Proxier`], the shell around the backends' sync
//!   engines ([`kproxy_iptables::sync`], [`kproxy_nft::sync`]): it runs the
//!   commands they ask for with the node's tools; every sync decision is
//!   theirs.
//! * [`http`], [`metrics`] and [`configz`]: kube-proxy's healthz server
//!   (`/healthz`, `/livez`), metrics server (`/metrics`, `/healthz`,
//!   `/proxyMode`, `/configz`) and healthCheckNodePort responders, on hyper;
//!   the metrics registered per mode as kube-proxy registers them.
//! * [`latency`]: network programming latency, from the slices'
//!   `endpoints.kubernetes.io/last-change-trigger-time`, and the change
//!   counts. The `dir:` source also times a changed (or removed) file that
//!   holds no slice with that annotation by its modification time, so
//!   hand-edited manifests are measured too (a file modified before the
//!   agent started is no change: the first sync observes nothing for the
//!   files' ages); a file with such a slice is timed by the annotations only.
//! * [`hostaddr`]: the host's interface addresses, read before every sync
//!   for `nodePortAddresses` when no `--node-address` is given.
//! * [`isolate`]: a Service whose rules the kernel tool rejects is left
//!   out (and reported) so that the others keep syncing.
//! * [`host`]: the host set-up kube-proxy does at start (conntrack sysctls,
//!   `route_localnet`, the OOM score).
//!
//! `kproxy run` takes kube-proxy's command line: every flag of kube-proxy
//! parses ([`crate::settings::KubeProxyFlags`]), `--cleanup`, `--init-only`
//! and `--write-config-to` do what they do in kube-proxy, and without
//! `--source` the state comes from the API server, reached as kube-proxy
//! reaches it ([`kube::Connection`]).
//!
//! The loop follows kube-proxy's BoundedFrequencyRunner: a change is
//! applied at most `minSyncPeriod` after the previous sync started, and
//! a sync runs at least every `syncPeriod`.

pub mod cleanup;
pub mod configz;
pub mod conntrack;
pub mod drift;
pub mod exec;
pub mod host;
pub mod hostaddr;
pub mod http;
pub mod incremental;
pub mod isolate;
pub mod kube;
pub mod latency;
pub mod metrics;
pub mod nfnl;
pub mod source;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use kproxy_core::config::parse_go_duration;
use kproxy_core::convert::Inventory;
use kproxy_core::model::{IpFamily, NamespacedName};
use tracing::{error, info, warn};

use crate::compile::{Backend, backend_named, family_targets};
use crate::settings::{KubeProxyFlags, NodeArgs, resolve, run_settings, v1alpha1_document};
use source::DirSource;
use sync::{Mode, Proxier};

/// Arguments of `kproxy run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Node-level configuration (as `kproxy compile`).
    #[command(flatten)]
    pub node: NodeArgs,
    /// kube-proxy's other flags.
    #[command(flatten)]
    pub kube_proxy: KubeProxyFlags,
    /// The backend: iptables or nftables. Default: the proxy mode.
    #[arg(help_heading = "Agent", long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Where the cluster state comes from: `kube` (the default), the API
    /// server (list+watch of Services, EndpointSlices, ServiceCIDRs and
    /// this node's Node); or `dir:PATH`, a directory of manifests (*.yaml,
    /// *.yml, *.json, recursively) watched for changes.
    #[arg(help_heading = "Agent", long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// syncPeriod (Go duration); overrides the configuration. Default 30s.
    #[arg(help_heading = "Agent", long, value_name = "DURATION")]
    pub sync_period: Option<String>,
    /// minSyncPeriod (Go duration); overrides the configuration. Default 1s.
    #[arg(help_heading = "Agent", long, value_name = "DURATION")]
    pub min_sync_period: Option<String>,
    /// How often the source is polled for changes.
    #[arg(
        help_heading = "Agent",
        long,
        value_name = "DURATION",
        default_value = "100ms"
    )]
    pub poll_interval: String,
    /// How long an nftables stale chain stays (flushed) before it is deleted.
    #[arg(
        help_heading = "Agent",
        long,
        value_name = "DURATION",
        default_value = "1s"
    )]
    pub stale_chain_delay: String,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    // Within a second whatever the loop is doing: a running tool is killed.
    exec::spawn_stop_watchdog(&STOP, Duration::from_millis(500));
}

fn duration(flag: &str, v: &str) -> Result<Duration> {
    parse_go_duration(v).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// The healthCheckNodePort responders wanted: port -> (Service, local ready
/// endpoints), from the primary family's service ports.
pub fn health_check_ports<'a>(
    service_ports: impl IntoIterator<Item = &'a kproxy_core::plan::ServicePortPlan>,
) -> BTreeMap<u16, (NamespacedName, usize)> {
    let mut out: BTreeMap<u16, (NamespacedName, std::collections::BTreeSet<std::net::IpAddr>)> =
        BTreeMap::new();
    for sp in service_ports {
        let Some(port) = sp.health_check_node_port else {
            continue;
        };
        let e = out
            .entry(port)
            .or_insert_with(|| (sp.name.service.clone(), Default::default()));
        e.1.extend(sp.local_ready_endpoints());
    }
    out.into_iter()
        .map(|(p, (n, ips))| (p, (n, ips.len())))
        .collect()
}

/// Compiles the rules of every family for the next sync, incrementally
/// (full results when `full`, the proxier's next sync being full; `hint`:
/// the Services changed since the last call, `None` if unknown).
pub fn compile_incrementally(
    compiler: &mut incremental::Compiler,
    node: &NodeArgs,
    backend: &str,
    inv: &Inventory,
    full: bool,
    hint: Option<&BTreeSet<NamespacedName>>,
) -> Result<Vec<incremental::Compiled>> {
    let (_, targets, warnings) = family_targets(node, Some(backend), inv)?;
    for w in warnings {
        warn!("{w}");
    }
    let targets: Vec<_> = targets
        .into_iter()
        .map(|(node, layout)| (node, crate::compile::AgentLayout(layout)))
        .collect();
    Ok(compiler.compile_hinted(&inv.state, &targets, full, hint)?)
}

/// The service ports whose Local traffic policy drops their traffic for
/// want of a local endpoint (kube-proxy's
/// `kubeproxy_sync_proxy_rules_no_local_endpoints_total`): internal and
/// external, as the planner decided them.
pub fn no_local_endpoints<'a>(
    service_ports: impl IntoIterator<Item = &'a kproxy_core::plan::ServicePortPlan>,
) -> (usize, usize) {
    use kproxy_core::plan::Disposition;
    service_ports
        .into_iter()
        .fold((0, 0), |(internal, external), sp| {
            (
                internal + usize::from(sp.internal == Disposition::Drop),
                external + usize::from(sp.external == Disposition::Drop),
            )
        })
}

fn start_server(
    what: &str,
    addr: &str,
    handler: impl FnOnce() -> http::Handler,
    blocking: http::Blocking,
) -> Option<http::Server> {
    if addr.is_empty() {
        return None;
    }
    match http::serve(addr, handler(), blocking) {
        Ok(s) => {
            info!(address = %s.addr, "{what} server listening");
            Some(s)
        }
        Err(e) => {
            error!("{what} server on {addr}: {e}");
            None
        }
    }
}

/// Where the agent reads the cluster state.
enum Source {
    Dir(DirSource),
    Kube(kube::KubeSource),
}

/// What one poll of a source found.
struct Polled {
    changed: bool,
    /// When the changes happened, if known (the `dir:` source's changed
    /// files without annotated slices; for network programming latency).
    times: Vec<SystemTime>,
    /// The Services whose objects changed (`None`: anything may have).
    services: Option<BTreeSet<NamespacedName>>,
}

impl Source {
    fn poll(&mut self) -> Polled {
        match self {
            Source::Dir(d) => {
                let c = d.poll();
                for e in &c.errors {
                    warn!("{e}");
                }
                Polled {
                    changed: !c.is_empty(),
                    // Files with annotated slices are timed by the annotations.
                    times: c
                        .files
                        .iter()
                        .filter(|(p, _)| !d.has_trigger_time(p))
                        .map(|(_, t)| *t)
                        .collect(),
                    services: d.take_changed(),
                }
            }
            Source::Kube(k) => {
                let (changed, errors) = k.poll();
                for e in &errors {
                    warn!("{e}");
                }
                Polled {
                    changed,
                    times: Vec::new(),
                    services: k.take_changed(),
                }
            }
        }
    }
    /// Whether the first sync may run (every initial list complete; every
    /// file read, none still being written).
    fn ready(&self) -> bool {
        match self {
            Source::Dir(d) => d.settled(),
            Source::Kube(k) => k.synced(),
        }
    }
    fn inventory(&self) -> &Inventory {
        match self {
            Source::Dir(d) => d.inventory(),
            Source::Kube(k) => k.inventory(),
        }
    }
    /// Logs the inventory's warnings not logged yet (`logged`: those that
    /// were; a warning that went away may come back and be logged again).
    fn log_warnings(&self, logged: &mut std::collections::HashSet<String>) {
        let now: std::collections::HashSet<&String> = self.inventory().warnings.iter().collect();
        logged.retain(|w| now.contains(w));
        for w in &self.inventory().warnings {
            if logged.insert(w.clone()) {
                warn!("{w}");
            }
        }
    }
}

/// After a poll: the tracker sees the slices and Services (`polled.services`
/// may have changed) and the changed files' times; the change counts go to
/// the metrics.
fn observe_changes(
    triggers: &mut latency::Tracker,
    source: &Source,
    polled: &Polled,
    metrics: &metrics::Metrics,
) {
    let state = &source.inventory().state;
    triggers.observe(&state.endpoint_slices, polled.services.as_ref());
    triggers.observe_services(&state.services, polled.services.as_ref());
    for t in &polled.times {
        triggers.changed_at(*t);
    }
    let (seen, pending) = triggers.counted();
    metrics.changes(seen, pending);
}

/// The node's name for the Node watch: --hostname-override, the
/// configuration's hostnameOverride, else the host name.
fn node_name(args: &RunArgs, configured: Option<&str>) -> String {
    args.node
        .hostname_override
        .as_deref()
        .or(configured)
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_lowercase())
                .unwrap_or_default()
        })
}

/// The host set-up kube-proxy does before it proxies (conntrack sysctls;
/// `route_localnet` when localhost node ports are on in iptables mode).
/// Returns the node arguments to compile with: `nf_conntrack_tcp_be_liberal`
/// as the host has it (kube-proxy reads it back), unless given.
fn host_setup(args: &RunArgs, settings: &kproxy_core::config::ProxySettings) -> Result<NodeArgs> {
    let backend = backend_named(args.backend.as_deref(), &settings.mode)?;
    let localhost = backend == Backend::Iptables
        && resolve(&args.node, &Inventory::default())?
            .nodes
            .iter()
            .any(kproxy_core::plan::localhost_node_ports_apply);
    let host = host::Host::default();
    host.apply(&host::plan(
        &settings.conntrack,
        host::online_cpus(),
        localhost,
    ));
    let mut node = args.node.clone();
    if node.conntrack_tcp_be_liberal.is_none() && host.read(host::TCP_BE_LIBERAL) == Some(1) {
        info!("nf_conntrack_tcp_be_liberal is set: no rule drops INVALID packets");
        node.conntrack_tcp_be_liberal = Some(true);
    }
    Ok(node)
}

/// Runs `kproxy run` until SIGTERM or SIGINT (the rules stay in place);
/// `--write-config-to`, `--cleanup` and `--init-only` return after their
/// work, with what to print.
pub fn run(args: &RunArgs) -> Result<crate::compile::Output> {
    let flags = &args.kube_proxy;
    if flags.version.as_deref().is_some_and(|v| v != "false") {
        return Ok(crate::compile::Output {
            stdout: format!("kproxy v{}\n", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        });
    }
    let (early, warnings) = run_settings(&args.node, flags, &Inventory::default())?;
    for w in &warnings {
        warn!("{w}");
    }
    if let Some(path) = &flags.write_config_to {
        let yaml = serde_saphyr::to_string(&v1alpha1_document(&early))
            .context("cannot write the configuration as YAML")?;
        std::fs::write(path, yaml)
            .with_context(|| format!("{}: cannot write the configuration", path.display()))?;
        info!(file = %path.display(), "wrote the configuration");
        return Ok(Default::default());
    }
    if flags.cleanup == Some(true) {
        return cleanup::run(&cleanup::CleanupArgs { mode: "all".into() });
    }
    let node_args = host_setup(args, &early)?;
    if flags.init_only == Some(true) {
        info!("system initialized and --init-only given");
        return Ok(Default::default());
    }
    host::set_oom_score_adj(early.oom_score_adj);
    let args = &RunArgs {
        node: node_args,
        ..args.clone()
    };
    serve(args, &early)?;
    Ok(Default::default())
}

/// The agent's loop (`early`: the settings known before the source).
fn serve(args: &RunArgs, early: &kproxy_core::config::ProxySettings) -> Result<()> {
    let mut triggers = latency::Tracker::new(SystemTime::now());
    let poll = duration("--poll-interval", &args.poll_interval)?;
    let source_name = args.source.clone().unwrap_or_else(|| "kube".into());
    let (mut source, first) = if let Some(dir) = source_name.strip_prefix("dir:") {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("--source: {} is not a directory", dir.display());
        }
        let mut source = Source::Dir(DirSource::new(dir));
        let first = source.poll();
        (source, first)
    } else if source_name == "kube" {
        let node = node_name(args, early.hostname_override.as_deref());
        let cc = &early.client_connection;
        info!(
            qps = cc.qps,
            burst = cc.burst,
            content_type = %cc.content_type,
            "clientConnection: kproxy sends JSON with no client-side rate limit"
        );
        let conn = kube::Connection {
            kubeconfig: cc.kubeconfig.as_ref().map(PathBuf::from),
            master: args.kube_proxy.master.clone(),
            service_proxy_name: early.service_proxy_name.clone(),
        };
        let k = kube::KubeSource::connect(&conn, &node)?;
        let first = Polled {
            changed: true,
            times: Vec::new(),
            services: None,
        };
        (Source::Kube(k), first)
    } else {
        bail!("--source: {source_name:?} is not supported (dir:PATH or kube)");
    };
    let mut logged = std::collections::HashSet::new();
    source.log_warnings(&mut logged);
    let (settings, _) = run_settings(&args.node, &args.kube_proxy, source.inventory())?;
    let mut host_addresses =
        hostaddr::HostAddresses::new(&args.node, &settings.node_port_addresses);
    let sync_period = match &args.sync_period {
        Some(s) => duration("--sync-period", s)?,
        None => settings.sync_period,
    };
    let min_sync_period = match &args.min_sync_period {
        Some(s) => duration("--min-sync-period", s)?,
        None => settings.min_sync_period,
    };
    let backend = backend_named(args.backend.as_deref(), &settings.mode)?;
    let (mode, backend_name) = match backend {
        Backend::Iptables => (Mode::Iptables, "iptables"),
        Backend::Nftables | Backend::NftablesJson => (Mode::Nftables, "nftables"),
    };
    let metrics = Arc::new(metrics::Metrics::new(mode, 2 * sync_period));
    let node_eligible = Arc::new(AtomicBool::new(true));
    let healthz_addr = settings.healthz_bind_address.clone();
    let metrics_addr = settings.metrics_bind_address.clone();
    let _healthz = start_server(
        "healthz",
        &healthz_addr,
        || {
            http::health_handler(http::HealthState {
                metrics: metrics.clone(),
                node_eligible: node_eligible.clone(),
            })
        },
        http::Blocking::No,
    );
    let _metrics_server = start_server(
        "metrics",
        &metrics_addr,
        || {
            http::metrics_handler(http::MetricsState {
                metrics: metrics.clone(),
                configz: configz::body(&settings, mode).into(),
            })
        },
        http::Blocking::Yes,
    );
    let mut health_checks = http::HealthChecks::new("0.0.0.0", metrics.clone());
    install_signal_handlers();

    let mut proxier = Proxier::new(mode);
    let mut compiler = incremental::Compiler::new();
    proxier.stale_chain_delay = duration("--stale-chain-delay", &args.stale_chain_delay)?;
    info!(
        mode = mode.name(),
        source = %source_name,
        ?sync_period,
        ?min_sync_period,
        "kproxy run starting"
    );
    observe_changes(&mut triggers, &source, &first, &metrics);
    // The Services changed since the last compile (`None`: any may have).
    let mut hint: Option<BTreeSet<NamespacedName>> = first.services;
    // kube-proxy's BoundedFrequencyRunner: the first sync at once.
    let mut timers = kproxy_core::sync::Timers::new(min_sync_period, sync_period);
    let started_at = Instant::now();
    let mut last_poll = Instant::now();
    let mut families: Vec<IpFamily> = Vec::new();
    let mut waiting_logged = false;
    let mut was_ready = false;
    let mut isolation = isolate::Isolation::default();
    while !STOP.load(Ordering::SeqCst) {
        // Read before polling: when the source turns ready, the poll below
        // sees every initial list.
        let ready = source.ready();
        if last_poll.elapsed() >= poll || (ready && !was_ready) {
            last_poll = Instant::now();
            let polled = source.poll();
            if polled.changed {
                info!("source changed");
                observe_changes(&mut triggers, &source, &polled, &metrics);
                source.log_warnings(&mut logged);
                for s in isolation.changed(polled.services.as_ref()) {
                    info!(service = %s, "a skipped Service changed: trying its rules again");
                }
                metrics.skipped_services(isolation.skipped().len(), 0);
                hint = match (hint, polled.services) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    _ => None,
                };
                timers.changed();
                metrics.queued(&families);
            }
            if let Source::Kube(k) = &source {
                node_eligible.store(k.node_eligible(), Ordering::Relaxed);
            }
        }
        was_ready = ready;
        if !ready {
            if !waiting_logged {
                info!("waiting for the initial lists");
                waiting_logged = true;
            }
            std::thread::sleep(Duration::from_millis(10).min(poll));
            continue;
        }
        if !timers.due(Instant::now()) {
            std::thread::sleep(Duration::from_millis(10).min(poll));
            continue;
        }
        if timers.drift_check_due(Instant::now(), started_at) {
            // A periodic sync (or changes kept every sync busy for a
            // syncPeriod): the drift check first.
            timers.drift_checked(Instant::now());
            let started = Instant::now();
            let repairs = proxier.repair_drift(&metrics);
            tracing::debug!(took = ?started.elapsed(), ?repairs, "drift check");
        }
        timers.sync_started(Instant::now());
        // The changes this sync applies, timed (kube-proxy takes them at
        // the start of a sync; a failed sync loses them).
        let (triggered, untagged) = triggers.take();
        let (seen, pending) = triggers.counted();
        metrics.changes(seen, pending);
        let compile_start = Instant::now();
        let node_args = host_addresses.fill(&args.node);
        let compiled = compile_incrementally(
            &mut compiler,
            &node_args,
            backend_name,
            &isolation.inventory(source.inventory()),
            proxier.next_is_full(),
            hint.as_ref(),
        );
        // A failed compile may not have seen the changes: compare all next time.
        hint = compiled.is_ok().then(BTreeSet::new);
        let compile_time = compile_start.elapsed();
        let wanted = match compiled {
            Ok(c) => c,
            Err(e) => {
                error!("cannot compile the rules: {e:#}");
                // The plan caches may be ahead of the node: start over, full.
                compiler.reset();
                proxier.force_full_sync();
                continue;
            }
        };
        families = wanted.iter().map(|c| c.node().family).collect();
        for f in &families {
            let (internal, external) = no_local_endpoints(compiler.service_ports(*f));
            metrics.no_local_endpoints(*f, internal, external);
        }
        let report = proxier.sync_compiled(&wanted, &metrics);
        // A sync the tool rejected on a Service's rules: that Service is
        // left out and the others synced again at once.
        let skipped = isolate_rejected(&mut isolation, &report, &wanted, &metrics);
        let retry = !skipped.is_empty();
        if let Some(h) = hint.as_mut() {
            h.extend(skipped);
        }
        if report.errors.is_empty() {
            isolation.synced();
            let now = SystemTime::now();
            let untagged = families
                .iter()
                .flat_map(|f| untagged.iter().map(move |t| (*f, *t)));
            for (f, t) in triggered.into_iter().chain(untagged) {
                if !families.contains(&f) {
                    continue;
                }
                if let Ok(d) = now.duration_since(t) {
                    metrics.observe_programming(f, d);
                }
            }
            info!(
                full = report.full,
                compile = ?compile_time,
                apply = ?report.duration,
                "synced"
            );
        }
        // A failure is retried at the next change or after syncPeriod, as
        // a full sync (at once when a Service was left out).
        if retry {
            timers.changed();
        }
        if let Some(primary) = families.first() {
            let ports = health_check_ports(compiler.service_ports(*primary));
            for (port, e) in health_checks.sync(&ports) {
                error!(port, "health check node port: {e}");
            }
        }
    }
    info!("kproxy run stopping (rules stay in place)");
    Ok(())
}

/// Skips the Services whose rules the tools rejected in `report` (see
/// [`isolate`]), reported in the log, as an event-like warning and in the
/// metrics; returns them.
fn isolate_rejected(
    isolation: &mut isolate::Isolation,
    report: &sync::SyncReport,
    compiled: &[incremental::Compiled],
    metrics: &metrics::Metrics,
) -> Vec<NamespacedName> {
    if report.rejected.is_empty() {
        return Vec::new();
    }
    let rulesets: Vec<&kproxy_core::ir::Ruleset> = compiled
        .iter()
        .map(|c| match c {
            incremental::Compiled::Full(d) => d.ruleset.as_ref(),
            incremental::Compiled::Partial(p) => &p.after,
        })
        .collect();
    let newly = isolation.skip(&report.rejected, &rulesets);
    for s in &newly {
        let line = isolation.skipped().get(s).map(String::as_str).unwrap_or("");
        warn!(
            event = "Warning",
            reason = "RulesRejected",
            object = %format!("Service {s}"),
            "the kernel tool rejected Service {s}'s rules (input line: {line}); it is left out of the rules until it changes, and the other Services are synced without it"
        );
    }
    if newly.is_empty() {
        warn!(
            "the tool's failure names no Service that can be left out (or {} were already, without a sync): the next sync is full",
            isolate::MAX_SKIPS_WITHOUT_SYNC
        );
    }
    metrics.skipped_services(isolation.skipped().len(), newly.len());
    newly
}

/// Runs `kproxy run` from its arguments (an error is fatal at start-up only).
pub fn run_command(args: &RunArgs) -> Result<crate::compile::Output> {
    run(args).context("kproxy run")
}
