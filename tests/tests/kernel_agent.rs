//! `kproxy run` against the real kernel (issue 6).
//!
//! * Incremental syncs equal a fresh full sync: a sequence of random state
//!   changes applied by the agent's [`Proxier`] in-process (inside a network
//!   namespace) leaves the same kernel state (normalised `iptables-save` /
//!   `nft -j list ruleset`, parsed and canonicalised) as one full sync of
//!   the final state in another namespace. Both backends, both ways the
//!   proxier is fed: full rulesets compared with the last ones, and the
//!   incremental compiler `kproxy run` uses (only changed Services laid out).
//! * A failed partial sync (the node's rules wiped behind the agent's back)
//!   is reported with the offending input line, counted, and the next sync
//!   is full and repairs the node.
//! * The real `kproxy run --source dir:` process in the testbed: change the
//!   files (scale, delete, add a NodePort) and watch real traffic follow
//!   within a second; `/healthz`, `/livez` and `/metrics` answer over HTTP;
//!   SIGTERM stops it and the rules stay.
//!
//! Needs root (see `kernel_e2e.rs`); prints SKIPPED (or fails with
//! `CI=true`) where namespaces cannot be created.

mod kernel;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kernel::testbed::{Namespaces, in_ns};
use kernel::traffic::{Outcome, sock};
use kernel::*;
use kproxy_bin::agent::http;
use kproxy_bin::agent::incremental::Compiler;
use kproxy_bin::agent::metrics::Metrics;
use kproxy_bin::agent::sync::{Desired, Mode, Proxier};
use kproxy_bin::compile::{AgentLayout, Layout};
use kproxy_core::canon::canonical;
use kproxy_core::ir::Ruleset;
use kproxy_core::model::*;
use kproxy_core::profile::{IptablesProfile, NftablesProfile};
use kproxy_core::synthetic::cluster;
use kproxy_tests::Scratch;

// ---------------------------------------------------------------------------
// In-process: incremental == full.

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn node_config() -> NodeConfig {
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    node.node_ip = Some(ip("10.140.0.2"));
    node.node_addresses = vec![ip("10.140.0.2")];
    node
}

fn desired(mode: Mode, state: &ClusterState, node: &NodeConfig) -> Vec<Desired> {
    vec![Desired::compile(state, node, layout_of(mode)).expect("rules")]
}

/// One random change: scale, delete, re-add, NodePort on/off, affinity
/// on/off, eTP Local on/off, endpoints moved to this node or away, UDP.
fn mutate(state: &mut ClusterState, pool: &ClusterState, rng: &mut Rng, step: usize) -> String {
    let i = rng.below(pool.services.len());
    let id = pool.services[i].id.clone();
    let pos = state.services.iter().position(|s| s.id == id);
    let Some(pos) = pos else {
        state.services.push(pool.services[i].clone());
        state.endpoint_slices.push(pool.endpoint_slices[i].clone());
        return format!("add {}/{}", id.namespace, id.name);
    };
    let slice_pos = state
        .endpoint_slices
        .iter()
        .position(|s| s.service_id() == id);
    match rng.below(8) {
        0 => {
            state.services.remove(pos);
            if let Some(sp) = slice_pos {
                state.endpoint_slices.remove(sp);
            }
            format!("delete {}/{}", id.namespace, id.name)
        }
        1 | 2 => {
            let Some(sp) = slice_pos else {
                return "noop".into();
            };
            let slice = &mut state.endpoint_slices[sp];
            if !slice.endpoints.is_empty() && rng.below(2) == 0 {
                let k = rng.below(slice.endpoints.len());
                slice.endpoints.remove(k);
                format!("scale down {}", id.name)
            } else {
                let a = 0x0a00_0000u32 + 5000 + (step as u32) * 7 + rng.below(5) as u32;
                slice.endpoints.push(
                    Endpoint::ready(std::net::IpAddr::V4(a.into()))
                        .on_node(format!("node-{}", rng.below(5))),
                );
                format!("scale up {}", id.name)
            }
        }
        3 => {
            let svc = &mut state.services[pos];
            if svc.service_type == ServiceType::ClusterIp {
                svc.service_type = ServiceType::NodePort;
                for (k, p) in svc.ports.iter_mut().enumerate() {
                    p.node_port = Some(31000 + (i * 3 + k) as u16);
                }
            } else {
                svc.service_type = ServiceType::ClusterIp;
                svc.load_balancer_ingress.clear();
                svc.load_balancer_source_ranges.clear();
                svc.health_check_node_port = 0;
                svc.external_traffic_policy = TrafficPolicy::Cluster;
                for p in &mut svc.ports {
                    p.node_port = None;
                }
            }
            format!("toggle NodePort {}", id.name)
        }
        4 => {
            let svc = &mut state.services[pos];
            // None -> 600 s -> 900 s (a new timeout redeclares the nftables
            // affinity sets) -> None.
            svc.session_affinity_timeout = match svc.session_affinity_timeout {
                Some(600) => Some(900),
                Some(_) => None,
                None => Some(600),
            };
            format!("cycle affinity {}", id.name)
        }
        5 => {
            let svc = &mut state.services[pos];
            if svc.service_type != ServiceType::ClusterIp {
                svc.external_traffic_policy = match svc.external_traffic_policy {
                    TrafficPolicy::Local => TrafficPolicy::Cluster,
                    _ => TrafficPolicy::Local,
                };
            }
            svc.internal_traffic_policy = match svc.internal_traffic_policy {
                TrafficPolicy::Local => TrafficPolicy::Cluster,
                _ => TrafficPolicy::Local,
            };
            format!("toggle policies {}", id.name)
        }
        6 => {
            let Some(sp) = slice_pos else {
                return "noop".into();
            };
            for ep in &mut state.endpoint_slices[sp].endpoints {
                ep.node_name = Some(if ep.node_name.as_deref() == Some("node-3") {
                    "node-4".into()
                } else {
                    "node-3".into()
                });
            }
            format!("move endpoints {}", id.name)
        }
        _ => {
            let Some(sp) = slice_pos else {
                return "noop".into();
            };
            state.endpoint_slices[sp].endpoints.clear();
            format!("no endpoints {}", id.name)
        }
    }
}

/// The node's rules, parsed back and canonicalised.
fn dump(mode: Mode, ns: &str) -> Ruleset {
    let rs = match mode {
        Mode::Iptables => {
            let text = netns_exec(ns, &["iptables-save"]).unwrap_or_else(|e| panic!("{e}"));
            kproxy_iptables::parse::parse(&text, None)
                .unwrap_or_else(|e| panic!("iptables-save: {e}\n{text}"))
        }
        Mode::Nftables => {
            let text =
                netns_exec(ns, &["nft", "-j", "list", "ruleset"]).unwrap_or_else(|e| panic!("{e}"));
            kproxy_nft::parse::parse_json(&text)
                .unwrap_or_else(|e| panic!("nft -j list ruleset: {e}"))
                .ruleset
        }
    };
    canonical(&rs)
}

fn differences(want: &Ruleset, got: &Ruleset) -> String {
    let d = kproxy_core::diff::diff(want, got);
    let mut out = String::new();
    for t in &d.tables {
        out.push_str(&format!("table {} {:?}\n", t.table, t.status));
        for c in t.chains.iter().take(10) {
            out.push_str(&format!(
                "  chain {} {:?} ({} edits)\n",
                c.chain,
                c.status,
                c.edits.len()
            ));
        }
        for s in t.containers.iter().take(10) {
            out.push_str(&format!(
                "  {:?} {} {:?} ({} element changes)\n",
                s.kind,
                s.name,
                s.status,
                s.elements.len()
            ));
        }
    }
    out
}

/// Loads `d` with a new proxier into the empty namespace
/// `fresh`, and asserts that `ns` holds the same rules (`after` says what
/// `ns` went through).
fn assert_same_as_fresh(
    mode: Mode,
    ns: &str,
    fresh: &str,
    d: &[Desired],
    metrics: &Metrics,
    after: &str,
) {
    let mut full = Proxier::new(mode);
    // The reference is `nft -f`'s (the agent under test may use netlink).
    full.nft_netlink = false;
    let report = in_ns(fresh, || full.sync(d, metrics));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (got, want) = (dump(mode, ns), dump(mode, fresh));
    assert!(
        got == want,
        "the rules differ from a fresh full sync after {after}:\n{}",
        differences(&want, &got)
    );
}

/// How the agent gets its rules in [`incremental_equals_full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Full rulesets each sync, compared with the last one ([`Proxier::sync`]).
    Rulesets,
    /// The incremental compiler: only changed Services laid out
    /// ([`Proxier::sync_compiled`]), as `kproxy run` does.
    Compiler,
    /// The same, told which Services changed (as `kproxy run`'s sources
    /// tell it), so only those are compared.
    Hinted,
}

/// The Services whose Service object or EndpointSlices differ.
fn changed_services(
    a: &ClusterState,
    b: &ClusterState,
) -> std::collections::BTreeSet<NamespacedName> {
    let objects = |s: &ClusterState| {
        let mut m: std::collections::BTreeMap<NamespacedName, (Vec<Service>, Vec<EndpointSlice>)> =
            Default::default();
        for svc in &s.services {
            m.entry(svc.id.clone()).or_default().0.push(svc.clone());
        }
        for slice in &s.endpoint_slices {
            m.entry(slice.service_id())
                .or_default()
                .1
                .push(slice.clone());
        }
        m
    };
    let (a, b) = (objects(a), objects(b));
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn layout_of(mode: Mode) -> AgentLayout {
    AgentLayout(match mode {
        Mode::Iptables => Layout::Iptables(IptablesProfile::Current),
        Mode::Nftables => Layout::Nftables(NftablesProfile::Current),
    })
}

fn incremental_equals_full(test: &str, mode: Mode, loader: Loader, via: Via) {
    if !gate_loader(test, loader) {
        return;
    }
    let nss = Namespaces::new();
    let inc = nss.create("inc").unwrap_or_else(|e| panic!("{e}"));
    let fresh = nss.create("fresh").unwrap_or_else(|e| panic!("{e}"));
    let node = node_config();
    let pool = cluster(24, 3);
    let mut state = ClusterState {
        services: pool.services[..16].to_vec(),
        endpoint_slices: pool.endpoint_slices[..16].to_vec(),
    };
    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    proxier.stale_chain_delay = Duration::ZERO;
    proxier.nft_netlink = loader == Loader::NftNetlink;
    let mut last_state = ClusterState::default();
    let mut compiler = Compiler::new();
    let targets = [(node.clone(), layout_of(mode))];
    let mut sync = |proxier: &mut Proxier, state: &ClusterState| match via {
        Via::Rulesets => {
            let d = desired(mode, state, &node);
            in_ns(&inc, || proxier.sync(&d, &metrics))
        }
        Via::Compiler | Via::Hinted => {
            let hint = changed_services(&last_state, state);
            last_state = state.clone();
            let hint = (via == Via::Hinted).then_some(&hint);
            let c = compiler
                .compile_hinted(state, &targets, proxier.next_is_full(), hint)
                .expect("compile");
            in_ns(&inc, || proxier.sync_compiled(&c, &metrics))
        }
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut log = Vec::new();
    let steps = match via {
        Via::Rulesets => 30,
        Via::Compiler | Via::Hinted => 60,
    };
    for step in 0..steps {
        if step > 0 {
            // One to three changes per sync.
            for _ in 0..=rng.below(3) {
                log.push(mutate(&mut state, &pool, &mut rng, step));
            }
        }
        let report = sync(&mut proxier, &state);
        assert!(
            report.errors.is_empty(),
            "step {step} ({:?}): {:?}",
            log.last(),
            report.errors
        );
        assert_eq!(report.full, step == 0, "step {step}: full sync?");
    }
    // A sync without changes deletes the chains left stale (nftables).
    let report = sync(&mut proxier, &state);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(proxier.stale_chains().is_empty());

    let d = desired(mode, &state, &node);
    assert_same_as_fresh(mode, &inc, &fresh, &d, &metrics, &format!("{log:?}"));
    let text = metrics.render();
    // Every sync timed (kube-proxy labels them by family); the full and
    // partial ones apart in iptables mode only, as kube-proxy registers them.
    let count = |name: &str, n: usize| format!("{name}_count{{ip_family=\"IPv4\"}} {n}\n");
    assert!(
        text.contains(&count(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            steps + 2
        )),
        "{text}"
    );
    let full = count("kubeproxy_sync_full_proxy_rules_duration_seconds", 2);
    let partial = count("kubeproxy_sync_partial_proxy_rules_duration_seconds", steps);
    assert_eq!(text.contains(&full), mode == Mode::Iptables, "{text}");
    assert_eq!(text.contains(&partial), mode == Mode::Iptables, "{text}");
    // The rule and object counts kept through partial syncs are the full ones.
    let counts = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                l.starts_with("kubeproxy_sync_proxy_rules_iptables_total")
                    || l.starts_with("kproxy_sync_proxy_rules_nftables_objects")
            })
            .map(str::to_string)
            .collect()
    };
    let fresh_metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut again = Proxier::new(mode);
    let report = in_ns(&fresh, || again.sync(&d, &fresh_metrics));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(counts(&text), counts(&fresh_metrics.render()));
    assert!(!counts(&text).is_empty(), "no rule counts in\n{text}");
}

#[test]
fn incremental_syncs_equal_full_sync_iptables() {
    incremental_equals_full(
        "incremental_syncs_equal_full_sync_iptables",
        Mode::Iptables,
        Loader::Iptables,
        Via::Rulesets,
    );
}

#[test]
fn incremental_syncs_equal_full_sync_nftables() {
    incremental_equals_full(
        "incremental_syncs_equal_full_sync_nftables",
        Mode::Nftables,
        Loader::NftText,
        Via::Rulesets,
    );
}

#[test]
fn incremental_syncs_equal_full_sync_nftables_netlink() {
    incremental_equals_full(
        "incremental_syncs_equal_full_sync_nftables_netlink",
        Mode::Nftables,
        Loader::NftNetlink,
        Via::Rulesets,
    );
}

#[test]
fn hinted_syncs_equal_full_sync_nftables_netlink() {
    incremental_equals_full(
        "hinted_syncs_equal_full_sync_nftables_netlink",
        Mode::Nftables,
        Loader::NftNetlink,
        Via::Hinted,
    );
}

#[test]
fn compiled_syncs_equal_full_sync_nftables_netlink() {
    incremental_equals_full(
        "compiled_syncs_equal_full_sync_nftables_netlink",
        Mode::Nftables,
        Loader::NftNetlink,
        Via::Compiler,
    );
}

#[test]
fn compiled_syncs_equal_full_sync_iptables() {
    incremental_equals_full(
        "compiled_syncs_equal_full_sync_iptables",
        Mode::Iptables,
        Loader::Iptables,
        Via::Compiler,
    );
}

#[test]
fn hinted_syncs_equal_full_sync_iptables() {
    incremental_equals_full(
        "hinted_syncs_equal_full_sync_iptables",
        Mode::Iptables,
        Loader::Iptables,
        Via::Hinted,
    );
}

#[test]
fn hinted_syncs_equal_full_sync_nftables() {
    incremental_equals_full(
        "hinted_syncs_equal_full_sync_nftables",
        Mode::Nftables,
        Loader::NftText,
        Via::Hinted,
    );
}

#[test]
fn compiled_syncs_equal_full_sync_nftables() {
    incremental_equals_full(
        "compiled_syncs_equal_full_sync_nftables",
        Mode::Nftables,
        Loader::NftText,
        Via::Compiler,
    );
}

/// A Service's affinity timeout changes: a partial sync (nftables
/// replaces the endpoints' affinity sets, declared with the timeout, and
/// rewrites the chains using them), leaving what a full sync leaves.
fn affinity_timeout_change(test: &str, mode: Mode, loader: Loader) {
    if !gate_loader(test, loader) {
        return;
    }
    let nss = Namespaces::new();
    let ns = nss.create("aff").unwrap_or_else(|e| panic!("{e}"));
    let fresh = nss.create("fresh").unwrap_or_else(|e| panic!("{e}"));
    let node = node_config();
    let mut state = cluster(6, 2);
    state.services[0].session_affinity_timeout = Some(600);
    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    let mut compiler = Compiler::new();
    let targets = [(node.clone(), layout_of(mode))];
    let c = compiler.compile(&state, &targets, true).expect("compile");
    let r = in_ns(&ns, || proxier.sync_compiled(&c, &metrics));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    state.services[0].session_affinity_timeout = Some(900);
    let c = compiler
        .compile(&state, &targets, proxier.next_is_full())
        .expect("compile");
    assert!(
        matches!(c[0], kproxy_bin::agent::incremental::Compiled::Partial(_)),
        "a timeout change must not need a full sync"
    );
    let r = in_ns(&ns, || proxier.sync_compiled(&c, &metrics));
    assert!(r.errors.is_empty() && !r.full, "{:?}", r.errors);
    let d = desired(mode, &state, &node);
    assert_same_as_fresh(mode, &ns, &fresh, &d, &metrics, "a timeout change");
}

#[test]
fn affinity_timeout_change_iptables() {
    affinity_timeout_change(
        "affinity_timeout_change_iptables",
        Mode::Iptables,
        Loader::Iptables,
    );
}

#[test]
fn affinity_timeout_change_nftables() {
    affinity_timeout_change(
        "affinity_timeout_change_nftables",
        Mode::Nftables,
        Loader::NftText,
    );
}

/// A restarted agent (a new proxier) finds its rules on the node: its first
/// (full) sync writes only the chains that differ from what the node holds,
/// and leaves what a full sync from scratch leaves.
#[test]
fn restart_writes_only_what_differs() {
    let test = "restart_writes_only_what_differs";
    if !gate_loader(test, Loader::Iptables) {
        return;
    }
    let nss = Namespaces::new();
    let ns = nss.create("restart").unwrap_or_else(|e| panic!("{e}"));
    let fresh = nss.create("fresh").unwrap_or_else(|e| panic!("{e}"));
    let node = node_config();
    let mut state = cluster(12, 3);
    let metrics = Metrics::new(Mode::Iptables, Duration::from_secs(60));
    let mut first = Proxier::new(Mode::Iptables);
    let d = desired(Mode::Iptables, &state, &node);
    let r = in_ns(&ns, || first.sync(&d, &metrics));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    let written = |m: &Metrics, table: &str| -> usize {
        let prefix = format!(
            "kubeproxy_sync_proxy_rules_iptables_last{{ip_family=\"IPv4\",table=\"{table}\"}} "
        );
        m.render()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let total_nat = written(&metrics, "nat");
    assert!(total_nat > 100, "{}", metrics.render());
    // Restarted with the same state: nothing to write.
    let m2 = Metrics::new(Mode::Iptables, Duration::from_secs(60));
    let mut again = Proxier::new(Mode::Iptables);
    let r = in_ns(&ns, || again.sync(&d, &m2));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    assert_eq!(written(&m2, "nat"), 0, "{}", m2.render());
    // Restarted after one endpoint more and one Service less.
    state.endpoint_slices[2]
        .endpoints
        .push(Endpoint::ready(ip("10.9.9.9")).on_node("node-1"));
    state.services.remove(5);
    let d = desired(Mode::Iptables, &state, &node);
    let m3 = Metrics::new(Mode::Iptables, Duration::from_secs(60));
    let mut third = Proxier::new(Mode::Iptables);
    let r = in_ns(&ns, || third.sync(&d, &m3));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    let nat = written(&m3, "nat");
    assert!(nat > 0 && nat < total_nat / 2, "wrote {nat} of {total_nat}");
    assert_same_as_fresh(Mode::Iptables, &ns, &fresh, &d, &metrics, "restarts");
}

/// nftables: a restarted agent (a new proxier) reads the node's table and
/// writes only what differs: nothing (no commit: the ruleset generation
/// stays) when nothing changed; after changes, a state equal to a fresh
/// full sync.
fn restart_writes_only_what_differs_nft(test: &str, loader: Loader) {
    if !gate_loader(test, loader) {
        return;
    }
    let mode = Mode::Nftables;
    let nss = Namespaces::new();
    let ns = nss.create("restart").unwrap_or_else(|e| panic!("{e}"));
    let fresh = nss.create("fresh").unwrap_or_else(|e| panic!("{e}"));
    let node = node_config();
    let mut state = cluster(12, 3);
    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let netlink = loader == Loader::NftNetlink;
    let proxier = || {
        let mut p = Proxier::new(mode);
        p.nft_netlink = netlink;
        p
    };
    let mut first = proxier();
    let d = desired(mode, &state, &node);
    let r = in_ns(&ns, || first.sync(&d, &metrics));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    let generation = || in_ns(&ns, kproxy_bin::agent::nfnl::generation).expect("generation");
    // A client's session affinity entry, as the kernel adds one when a
    // packet passes (`update @affinity-...`): a restart keeps it.
    let affinity = d[0].ruleset.tables[0]
        .sets
        .iter()
        .find(|s| s.name.starts_with("affinity-"))
        .map(|s| s.name.clone())
        .expect("an affinity set");
    let entry = format!("add element ip kube-proxy {affinity} {{ 10.77.0.1 timeout 1h }}\n");
    netns_exec_stdin(&ns, &["nft", "-f", "-"], &entry).unwrap_or_else(|e| panic!("{e}"));
    let listed = || {
        netns_exec(&ns, &["nft", "list", "set", "ip", "kube-proxy", &affinity])
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(listed().contains("10.77.0.1"), "{test}: {}", listed());
    let before = generation();
    if netlink {
        // What the restart reads (by netlink, decoded) is what was written.
        use kproxy_bin::agent::nfnl::{RuleDump, read_table};
        use kproxy_nft::anon::AnonDigests;
        let written = &d[0].ruleset.tables[0];
        let single = kproxy_nft::sync::print_options(&node).single_dnat;
        let known = std::sync::Arc::new(AnonDigests::of_table(node.family, written, single));
        let read = |known| {
            in_ns(&ns, || {
                read_table(node.family, &written.name, RuleDump::Table, known)
            })
            .expect("netlink read")
            .expect("the table is there")
        };
        let dumped = read(None);
        // The anonymous maps kproxy wrote are taken by their digest, the
        // named sets and maps dumped, and the table read is the same.
        let by_digest = read(Some(&known));
        // Affinity sets are named, `dynamic`, and not read.
        let named = written.sets.len() + written.maps.len() - by_digest.dynamic;
        assert!(by_digest.dynamic > 0, "{test}");
        assert_eq!(by_digest.dumped, named, "{test}");
        assert_eq!(by_digest.taken, dumped.dumped - named, "{test}");
        assert!(by_digest.taken >= 12, "{test}: {} taken", by_digest.taken);
        assert_eq!(by_digest.table, dumped.table, "{test}");
        let mut held = by_digest.table;
        kproxy_nft::sync::payload::as_written(&mut held, written);
        // Elements in any order: the kernel lists a set's elements in its
        // own order (the engine compares them as sets).
        let sorted = |t: &kproxy_core::ir::Table| {
            let mut t = t.clone();
            for s in &mut t.sets {
                s.elements.sort_by_cached_key(|e| format!("{e:?}"));
            }
            for m in &mut t.maps {
                m.elements.sort_by_cached_key(|e| format!("{e:?}"));
            }
            t
        };
        assert!(
            sorted(&held) == sorted(written),
            "{test}: the netlink read differs"
        );
    }
    // Restarted with the same state: nothing written.
    let mut again = proxier();
    let r = in_ns(&ns, || again.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        generation(),
        before,
        "{test}: a restart with nothing changed committed"
    );
    assert!(
        listed().contains("10.77.0.1"),
        "{test}: the affinity entry is gone: {}",
        listed()
    );
    // Restarted after one endpoint more and one Service less.
    state.endpoint_slices[2]
        .endpoints
        .push(Endpoint::ready(ip("10.9.9.9")).on_node("node-1"));
    state.services.remove(5);
    let d = desired(mode, &state, &node);
    let mut third = proxier();
    let r = in_ns(&ns, || third.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_ne!(generation(), before, "{test}: the changes were not written");
    // The Service's chains that went away are flushed now, deleted later.
    third.stale_chain_delay = Duration::ZERO;
    let r = in_ns(&ns, || third.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_as_fresh(mode, &ns, &fresh, &d, &metrics, "restarts");
}

#[test]
fn restart_writes_only_what_differs_nftables() {
    restart_writes_only_what_differs_nft(
        "restart_writes_only_what_differs_nftables",
        Loader::NftText,
    );
}

#[test]
fn restart_writes_only_what_differs_nftables_netlink() {
    restart_writes_only_what_differs_nft(
        "restart_writes_only_what_differs_nftables_netlink",
        Loader::NftNetlink,
    );
}

/// The node's kproxy rules wiped behind the agent's back: the next partial
/// sync fails (reported with the input line, counted), the one after is
/// full and leaves what a fresh full sync leaves.
fn failed_sync_forces_full(test: &str, mode: Mode, loader: Loader) {
    if !gate_loader(test, loader) {
        return;
    }
    let nss = Namespaces::new();
    let ns = nss.create("fail").unwrap_or_else(|e| panic!("{e}"));
    let fresh = nss.create("fresh").unwrap_or_else(|e| panic!("{e}"));
    let node = node_config();
    let mut state = cluster(8, 2);
    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    let d = desired(mode, &state, &node);
    let r = in_ns(&ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    match mode {
        Mode::Iptables => {
            netns_exec(&ns, &["iptables", "-t", "nat", "-F"]).unwrap_or_else(|e| panic!("{e}"));
            netns_exec(&ns, &["iptables", "-t", "nat", "-X"]).unwrap_or_else(|e| panic!("{e}"));
        }
        Mode::Nftables => {
            netns_exec(&ns, &["nft", "delete", "table", "ip", "kube-proxy"])
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    state.endpoint_slices[1]
        .endpoints
        .push(Endpoint::ready(ip("10.9.9.9")).on_node("node-1"));
    let d = desired(mode, &state, &node);
    let r = in_ns(&ns, || proxier.sync(&d, &metrics));
    assert!(!r.full);
    assert_eq!(r.errors.len(), 1, "the partial sync must fail");
    let e = &r.errors[0];
    assert!(e.contains("input line "), "no offending line in {e:?}");
    assert!(proxier.next_is_full());
    let text = metrics.render();
    let counter = match mode {
        Mode::Iptables => {
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 1"
        }
        Mode::Nftables => {
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family=\"IPv4\"} 1"
        }
    };
    assert!(text.contains(counter), "{text}");
    let r = in_ns(&ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    assert_same_as_fresh(mode, &ns, &fresh, &d, &metrics, "a failed sync");
}

#[test]
fn failed_sync_forces_full_sync_iptables() {
    failed_sync_forces_full(
        "failed_sync_forces_full_sync_iptables",
        Mode::Iptables,
        Loader::Iptables,
    );
}

#[test]
fn failed_sync_forces_full_sync_nftables() {
    failed_sync_forces_full(
        "failed_sync_forces_full_sync_nftables",
        Mode::Nftables,
        Loader::NftText,
    );
}

// ---------------------------------------------------------------------------
// The real process.

/// The `kproxy` binary ([`kproxy_tests::kproxy_binary`]).
fn kproxy_bin() -> &'static Path {
    kproxy_tests::kproxy_binary()
}

const SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: hostnames, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 10.79.255.4
  ports:
  - {port: 80, targetPort: 9376, protocol: TCP}
";

const SVC_NODEPORT: &str = "apiVersion: v1
kind: Service
metadata: {name: hostnames, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.79.255.4
  ports:
  - {port: 80, targetPort: 9376, protocol: TCP, nodePort: 30080}
";

const WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.79.255.5
  ports:
  - {port: 80, targetPort: 9376, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [\"10.76.0.11\"]
  nodeName: node1
ports:
- {name: \"\", port: 9376, protocol: TCP}
";

fn slice(pods: &[u8]) -> String {
    let mut s = String::from(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hostnames-1
  namespace: default
  labels: {kubernetes.io/service-name: hostnames}
addressType: IPv4
endpoints:
",
    );
    for p in pods {
        s.push_str(&format!(
            "- addresses: [\"10.76.0.{p}\"]\n  conditions: {{ready: true}}\n  nodeName: node1\n"
        ));
    }
    s.push_str("ports:\n- {name: \"\", port: 9376, protocol: TCP}\n");
    s
}

/// The agent process; SIGTERM on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill() of our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait().expect("wait for kproxy run")
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Retries `probe` until it holds; returns how long that took, or fails
/// after `limit`.
fn within(
    bed: &Testbed,
    agent: &Agent,
    what: &str,
    limit: Duration,
    probe: impl Fn() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if probe() {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!(
                "{what}: not within {limit:?}\n--- kproxy run log ---\n{}\n{}",
                agent.log(),
                bed.dump()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn answered_by(o: &Outcome, pod: &str) -> bool {
    matches!(o, Outcome::Answered { pod: p, .. } if p == pod)
}

/// Starts `kproxy run --source dir:DIR` in the node's namespace with the
/// testbed's cluster CIDR, fast polls and no minimum sync period, plus
/// `extra` arguments; its log goes to `DIR.log`.
fn spawn_agent(bed: &Testbed, dir: &std::path::Path, backend: &str, extra: &[&str]) -> Agent {
    spawn_agent_with_path(bed, dir, backend, extra, None)
}

/// [`spawn_agent`], with the tools looked up in `path` first when given.
fn spawn_agent_with_path(
    bed: &Testbed,
    dir: &std::path::Path,
    backend: &str,
    extra: &[&str],
    path: Option<&Path>,
) -> Agent {
    let log = dir.with_extension("log");
    let node = bed.ns(Ns::Node);
    let bin = kproxy_bin().to_string_lossy().to_string();
    let source = format!("dir:{}", dir.display());
    let child = Command::new(tool("ip").unwrap_or_else(|| "ip".into()))
        .args(["netns", "exec", &node, &bin, "run", "--source", &source])
        .args(["--backend", backend, "--hostname-override", "node1"])
        .args(["--ip-family", "ipv4", "--cluster-cidr", "10.76.0.0/14"])
        .args(["--min-sync-period", "0s", "--poll-interval", "20ms"])
        .args(extra)
        .env(
            "PATH",
            match path {
                Some(p) => format!(
                    "{}:{}",
                    p.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
                None => std::env::var("PATH").unwrap_or_default(),
            },
        )
        .env("KPROXY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn kproxy run");
    Agent { child, log }
}

fn agent_follows_directory(test: &str, backend: &str, loader: Loader) {
    let Some(bed) = testbed(test, loader) else {
        return;
    };
    // The manifests in a directory of the test's scratch directory, which
    // also holds the agent's log (`manifests.log`); removed on drop.
    let scratch = Scratch::new("kproxy-agent", test);
    let dir = scratch.join("manifests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("svc.yaml"), SVC).expect("write");
    std::fs::write(dir.join("slice.yaml"), slice(&[9, 10])).expect("write");
    std::fs::write(dir.join("web.yaml"), WEB).expect("write");
    let mut agent = spawn_agent(
        &bed,
        &dir,
        backend,
        &[
            NODE_ADDRESS_ARGS_V4.as_slice(),
            &[
                "--healthz-bind-address",
                "127.0.0.1:10256",
                "--metrics-bind-address",
                "127.0.0.1:10249",
            ],
        ]
        .concat(),
    );
    let svc = sock("10.79.255.4", 80);
    let web = sock("10.79.255.5", 80);
    let quick = Duration::from_millis(300);

    // The first (full) sync.
    within(&bed, &agent, "first sync", Duration::from_secs(10), || {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Answered { .. }
        )
    });
    bed.expect_spread(
        "ClusterIP after the first sync",
        Ns::Pod(11),
        svc,
        40,
        &["pod-9", "pod-10"],
    );
    let pod11 = |o: &Outcome| answered_by(o, "pod-11");
    assert!(
        pod11(&bed.tcp(Ns::Client, None, web)),
        "web is served by pod-11"
    );

    // Scale hostnames to three pods: pod-11 answers within a second.
    std::fs::write(dir.join("slice.yaml"), slice(&[9, 10, 11])).expect("write");
    let t_scale = within(
        &bed,
        &agent,
        "scale to pod-11",
        Duration::from_secs(1),
        || (0..6).any(|_| pod11(&bed.tcp_within(Ns::Client, None, svc, quick))),
    );

    // Delete web: its ClusterIP stops answering.
    std::fs::remove_file(dir.join("web.yaml")).expect("remove");
    let t_delete = within(&bed, &agent, "delete web", Duration::from_secs(1), || {
        !matches!(
            bed.tcp_within(Ns::Client, None, web, Duration::from_millis(150)),
            Outcome::Answered { .. }
        )
    });

    // hostnames becomes a NodePort: the client reaches it on the node.
    std::fs::write(dir.join("svc.yaml"), SVC_NODEPORT).expect("write");
    let np = sock(NODE_LINK_IP, 30080);
    let t_nodeport = within(
        &bed,
        &agent,
        "add a NodePort",
        Duration::from_secs(1),
        || {
            matches!(
                bed.tcp_within(Ns::Client, None, np, quick),
                Outcome::Answered { .. }
            )
        },
    );
    println!("traffic followed: scale {t_scale:?}, delete {t_delete:?}, NodePort {t_nodeport:?}");

    // Health and metrics over HTTP, in the node's namespace.
    let (healthz, livez, metrics, proxy_mode) = bed.in_ns(Ns::Node, || {
        let h = http::get("127.0.0.1:10256".parse().expect("addr"), "/healthz");
        let l = http::get("127.0.0.1:10256".parse().expect("addr"), "/livez");
        let m = http::get("127.0.0.1:10249".parse().expect("addr"), "/metrics");
        let p = http::get("127.0.0.1:10249".parse().expect("addr"), "/proxyMode");
        (h, l, m, p)
    });
    assert_eq!(
        proxy_mode.expect("GET /proxyMode"),
        (200, backend.to_string())
    );
    let (code, body) = healthz.expect("GET /healthz");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"nodeEligible\": true") && body.contains("\"lastUpdated\": "),
        "{body}"
    );
    let (code, body) = livez.expect("GET /livez");
    assert_eq!(code, 200, "{body}");
    let (code, body) = metrics.expect("GET /metrics");
    assert_eq!(code, 200);
    let mut names = vec![
        "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
        "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"} 0",
        "kubeproxy_proxy_healthz_total{code=\"200\"} 1",
        "process_start_time_seconds",
    ];
    if backend == "iptables" {
        names.extend([
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
            "kubeproxy_iptables_ct_state_invalid_dropped_packets_total",
        ]);
    }
    for name in names {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }

    // SIGTERM: a clean exit, and the rules stay.
    let status = agent.stop();
    assert!(
        status.success(),
        "kproxy run exited with {status}\n{}",
        agent.log()
    );
    assert!(
        matches!(bed.tcp(Ns::Client, None, np), Outcome::Answered { .. }),
        "rules must stay after SIGTERM"
    );
}

#[test]
fn agent_follows_directory_iptables() {
    agent_follows_directory(
        "agent_follows_directory_iptables",
        "iptables",
        Loader::Iptables,
    );
}

#[test]
fn agent_follows_directory_nftables() {
    agent_follows_directory(
        "agent_follows_directory_nftables",
        "nftables",
        Loader::NftText,
    );
}

/// `kproxy run` without `--node-address` reads the host's addresses for
/// `nodePortAddresses` before every sync, as kube-proxy does: an address
/// added to the node's interface accepts node port traffic after the next
/// (periodic) sync, and stops when it is removed again.
fn agent_follows_host_addresses(test: &str, backend: &str, loader: Loader) {
    let Some(bed) = testbed(test, loader) else {
        return;
    };
    // The manifests in a directory of the test's scratch directory, which
    // also holds the agent's log (`manifests.log`); removed on drop.
    let scratch = Scratch::new("kproxy-agent", test);
    let dir = scratch.join("manifests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("svc.yaml"), SVC_NODEPORT).expect("write");
    std::fs::write(dir.join("slice.yaml"), slice(&[9, 10])).expect("write");
    let mut agent = spawn_agent(
        &bed,
        &dir,
        backend,
        &[
            "--nodeport-addresses",
            "192.168.50.0/24",
            "--sync-period",
            "300ms",
            "--healthz-bind-address",
            "127.0.0.1:0",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ],
    );
    let node = bed.ns(Ns::Node);
    let quick = Duration::from_millis(300);
    let answers = |addr: &str| {
        matches!(
            bed.tcp_within(Ns::Client, None, sock(addr, 30080), quick),
            Outcome::Answered { .. }
        )
    };
    within(&bed, &agent, "first sync", Duration::from_secs(10), || {
        answers(NODE_LINK_IP)
    });
    const ADDED: &str = "192.168.50.77";
    assert!(!answers(ADDED), "{ADDED} is no address of the node yet");
    let ip_cmd = |args: &[&str]| {
        let mut all = vec!["ip"];
        all.extend(args);
        netns_exec(&node, &all).unwrap_or_else(|e| panic!("{e}"));
    };
    ip_cmd(&["addr", "add", "192.168.50.77/24", "dev", "eth1"]);
    let t_added = within(
        &bed,
        &agent,
        "address added",
        Duration::from_secs(5),
        || answers(ADDED),
    );
    ip_cmd(&["addr", "del", "192.168.50.77/24", "dev", "eth1"]);
    // The address is gone from the node; its node port rules go at the next
    // sync (checked in the rules: without the address, no traffic reaches
    // them anyway).
    let t_removed = within(
        &bed,
        &agent,
        "address removed",
        Duration::from_secs(5),
        || {
            let rules = match backend {
                "iptables" => netns_exec(&node, &["iptables-save", "-t", "nat"]),
                _ => netns_exec(&node, &["nft", "list", "table", "ip", "kube-proxy"]),
            }
            .unwrap_or_else(|e| panic!("{e}"));
            !rules.contains(ADDED)
        },
    );
    println!("node port addresses followed: added {t_added:?}, removed {t_removed:?}");
    assert!(answers(NODE_LINK_IP), "the node's own address still serves");
    let status = agent.stop();
    assert!(
        status.success(),
        "kproxy run exited with {status}\n{}",
        agent.log()
    );
}

#[test]
fn agent_follows_host_addresses_iptables() {
    agent_follows_host_addresses(
        "agent_follows_host_addresses_iptables",
        "iptables",
        Loader::Iptables,
    );
}

#[test]
fn agent_follows_host_addresses_nftables() {
    agent_follows_host_addresses(
        "agent_follows_host_addresses_nftables",
        "nftables",
        Loader::NftText,
    );
}

// ---------------------------------------------------------------------------
// UDP conntrack cleanup.

fn udp_state_with(pods: &[u8]) -> ClusterState {
    let svc = Service::cluster_ip("default", "dns", ip("10.79.255.6")).with_port(ServicePort::new(
        "dns",
        Protocol::Udp,
        53,
    ));
    let mut slice = EndpointSlice::new("default", "dns-1", "dns", IpFamily::V4)
        .with_port(EndpointPort::new("dns", Protocol::Udp, POD_PORT));
    for p in pods {
        slice = slice.with_endpoint(Endpoint::ready(ip(&format!("10.76.0.{p}"))).on_node("node1"));
    }
    ClusterState {
        services: vec![svc],
        endpoint_slices: vec![slice],
    }
}

/// One UDP flow: a client socket bound to a fixed source port and
/// connected to `dst`.
fn udp_flow(bed: &Testbed, port: u16, dst: std::net::SocketAddr) -> std::net::UdpSocket {
    bed.in_ns(Ns::Client, || {
        let s = std::net::UdpSocket::bind((ip(CLIENT_IP), port)).expect("bind");
        s.connect(dst).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        s
    })
}

/// The name of the pod that answers the flow's next datagram (up to five
/// tries), or `no answer`.
fn udp_ask(socket: &std::net::UdpSocket) -> String {
    let mut buf = [0u8; 256];
    for _ in 0..5 {
        let _ = socket.send(b"hello");
        if let Ok(n) = socket.recv(&mut buf) {
            return String::from_utf8_lossy(&buf[..n])
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    }
    "no answer".into()
}

/// The node's test configuration of the UDP tests.
fn udp_node() -> NodeConfig {
    let mut node = NodeConfig::new(IpFamily::V4, "node1");
    node.local_detector = LocalDetector::Cidr("10.76.0.0/14".parse().expect("constant"));
    node.node_ip = Some(ip(NODE_IP));
    node.node_addresses = vec![ip(NODE_IP), ip(NODE_LINK_IP), ip(BRIDGE_IP)];
    node
}

/// A UDP flow (one client socket) follows its Service's endpoint change:
/// the agent deletes the flow's conntrack entry when its endpoint goes.
fn udp_flow_follows_endpoints(test: &str, mode: Mode, loader: Loader) {
    let Some(bed) = testbed(test, loader) else {
        return;
    };
    let node = udp_node();
    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    let node_ns = bed.ns(Ns::Node);
    let d = desired(mode, &udp_state_with(&[9]), &node);
    let r = in_ns(&node_ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let socket = udp_flow(&bed, 40053, sock("10.79.255.6", 53));
    let ask = || udp_ask(&socket);
    assert_eq!(ask(), "pod-9");
    let ct = netns_exec(&node_ns, &["conntrack", "-L", "-p", "udp"]).unwrap_or_default();
    assert!(ct.contains("src=10.76.0.9"), "no flow to pod-9:\n{ct}");
    // pod-9 goes, pod-10 comes: the same flow now reaches pod-10.
    let d = desired(mode, &udp_state_with(&[10]), &node);
    let r = in_ns(&node_ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        ask(),
        "pod-10",
        "the flow's stale conntrack entry must be deleted"
    );
    assert!(
        metrics
            .render()
            .contains("kproxy_conntrack_cleanup_failures_total 0")
    );
}

#[test]
fn udp_flow_follows_endpoints_iptables() {
    udp_flow_follows_endpoints(
        "udp_flow_follows_endpoints_iptables",
        Mode::Iptables,
        Loader::Iptables,
    );
}

#[test]
fn udp_flow_follows_endpoints_nftables() {
    udp_flow_follows_endpoints(
        "udp_flow_follows_endpoints_nftables",
        Mode::Nftables,
        Loader::NftText,
    );
}

/// The `dns-np` Service: UDP, cluster IP 10.79.255.8, external IP
/// 10.79.255.9, node port 30053, port = target port (the pods' port, so
/// that an impostor pod answers on it too), endpoints `pods`.
fn udp_frontends_state(pods: &[u8]) -> ClusterState {
    let mut svc = Service::cluster_ip("default", "dns-np", ip("10.79.255.8"))
        .with_port(ServicePort::new("dns", Protocol::Udp, POD_PORT).with_node_port(30053));
    svc.service_type = ServiceType::NodePort;
    svc.external_ips = vec![ip("10.79.255.9")];
    let mut slice = EndpointSlice::new("default", "dns-np-1", "dns-np", IpFamily::V4)
        .with_port(EndpointPort::new("dns", Protocol::Udp, POD_PORT));
    for p in pods {
        slice = slice.with_endpoint(Endpoint::ready(ip(&format!("10.76.0.{p}"))).on_node("node1"));
    }
    ClusterState {
        services: vec![svc],
        endpoint_slices: vec![slice],
    }
}

/// The node's conntrack entry of the client flow from source port `sport`.
fn ct_entry(node_ns: &str, sport: u16) -> String {
    let ct = netns_exec(node_ns, &["conntrack", "-L", "-p", "udp"]).unwrap_or_default();
    let needle = format!("sport={sport} ");
    ct.lines()
        .find(|l| l.contains(&format!("src={CLIENT_IP} ")) && l.contains(&needle))
        .unwrap_or("no entry")
        .to_string()
}

/// A UDP flow that started before its Service had rules (its conntrack
/// entry confirmed without DNAT) reaches the Service's first endpoint: the
/// agent deletes the entries of the front ends of a UDP port that gains its
/// first endpoint (cluster IP and external IP by original destination and
/// port, node port by port).
///
/// The stale entries come from real traffic: before the Service exists,
/// the node routes its cluster IP to pod-11 and its external IP to pod-9
/// (impostors holding those addresses and answering from them), and the
/// node port flow gets the node's port unreachable. Then the Service comes
/// with endpoint pod-10 and the same sockets must reach pod-10. Then its
/// endpoints all go (the flows stop reaching pod-10) and pod-9 comes.
fn udp_flow_reaches_first_endpoint(test: &str, mode: Mode, loader: Loader) {
    let Some(bed) = testbed(test, loader) else {
        return;
    };
    let node = udp_node();
    let node_ns = bed.ns(Ns::Node);
    let sh = |ns: &str, args: &[&str]| {
        netns_exec(ns, args).unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
    };
    // The impostors, and the node's routes to them.
    for (pod, addr) in [(11, "10.79.255.8"), (9, "10.79.255.9")] {
        let pod_ns = bed.ns(Ns::Pod(pod));
        sh(
            &pod_ns,
            &["ip", "addr", "add", &format!("{addr}/32"), "dev", "eth0"],
        );
        sh(
            &pod_ns,
            &[
                "ip",
                "route",
                "add",
                "192.168.50.0/24",
                "via",
                BRIDGE_IP,
                "src",
                addr,
            ],
        );
        sh(
            &node_ns,
            &["ip", "route", "add", addr, "via", &format!("10.76.0.{pod}")],
        );
    }
    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    let d = desired(mode, &ClusterState::default(), &node);
    let r = in_ns(&node_ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);

    let flows = [
        (
            "cluster IP",
            40061,
            sock("10.79.255.8", POD_PORT),
            "pod-11",
            "10.79.255.8",
        ),
        (
            "external IP",
            40062,
            sock("10.79.255.9", POD_PORT),
            "pod-9",
            "10.79.255.9",
        ),
        (
            "node port",
            40063,
            sock(NODE_LINK_IP, 30053),
            "no answer",
            NODE_LINK_IP,
        ),
    ];
    let sockets: Vec<_> = flows
        .iter()
        .map(|(_, port, dst, _, _)| udp_flow(&bed, *port, *dst))
        .collect();
    for ((what, port, _, before, orig_dst), s) in flows.iter().zip(&sockets) {
        assert_eq!(&udp_ask(s), before, "{what} before the Service");
        // Confirmed without DNAT: the reply comes from the original
        // destination.
        let e = ct_entry(&node_ns, *port);
        assert!(
            e.contains(&format!("src={orig_dst} dst={CLIENT_IP} ")),
            "{what}: no un-NATed entry: {e}\n{}",
            bed.dump()
        );
    }

    // The Service comes with its first endpoint, pod-10.
    let d = desired(mode, &udp_frontends_state(&[10]), &node);
    let r = in_ns(&node_ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    for ((what, port, _, _, _), s) in flows.iter().zip(&sockets) {
        assert_eq!(
            udp_ask(s),
            "pod-10",
            "{what}: the flow's stale conntrack entry must be deleted\n{}",
            bed.dump()
        );
        let e = ct_entry(&node_ns, *port);
        assert!(
            e.contains("src=10.76.0.10 "),
            "{what}: the flow is not DNATed to pod-10: {e}"
        );
    }

    // All its endpoints go: the flows stop reaching pod-10. Then pod-9
    // comes: they reach it.
    let d = desired(mode, &udp_frontends_state(&[]), &node);
    let r = in_ns(&node_ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    for ((what, _, _, _, _), s) in flows.iter().zip(&sockets) {
        assert_eq!(udp_ask(s), "no answer", "{what} without endpoints");
    }
    let d = desired(mode, &udp_frontends_state(&[9]), &node);
    let r = in_ns(&node_ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    for ((what, _, _, _, _), s) in flows.iter().zip(&sockets) {
        assert_eq!(udp_ask(s), "pod-9", "{what} with a new endpoint");
    }
    let text = metrics.render();
    assert!(
        text.contains("kproxy_conntrack_cleanup_failures_total 0"),
        "{text}"
    );
}

#[test]
fn udp_flow_reaches_first_endpoint_iptables() {
    udp_flow_reaches_first_endpoint(
        "udp_flow_reaches_first_endpoint_iptables",
        Mode::Iptables,
        Loader::Iptables,
    );
}

#[test]
fn udp_flow_reaches_first_endpoint_nftables() {
    udp_flow_reaches_first_endpoint(
        "udp_flow_reaches_first_endpoint_nftables",
        Mode::Nftables,
        Loader::NftText,
    );
}

// ---------------------------------------------------------------------------
// kproxy cleanup.

/// User chains and rules of `iptables-save` (built-in chain policies and
/// empty tables aside), as table-prefixed lines.
fn save_lines(ns: &str, tool: &str) -> std::collections::BTreeSet<String> {
    let text = netns_exec(ns, &[tool]).unwrap_or_else(|e| panic!("{e}"));
    let mut table = String::new();
    let mut out = std::collections::BTreeSet::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if l.starts_with("-A ")
            || (l.starts_with(':') && l.split_whitespace().nth(1) == Some("-"))
        {
            let l = l.split(" [").next().unwrap_or(l);
            out.insert(format!("{table} {l}"));
        }
    }
    out
}

#[test]
fn cleanup_removes_only_kube_proxy_state() {
    let test = "cleanup_removes_only_kube_proxy_state";
    if !gate_loader(test, Loader::Iptables) || !gate_loader(test, Loader::NftText) {
        return;
    }
    let nss = Namespaces::new();
    let ns = nss.create("cleanup").unwrap_or_else(|e| panic!("{e}"));
    let sh = |args: &[&str]| netns_exec(&ns, args).unwrap_or_else(|e| panic!("{e}"));
    // Someone else's rules: they must survive.
    sh(&["iptables", "-t", "nat", "-N", "MY-CHAIN"]);
    sh(&["iptables", "-t", "nat", "-A", "MY-CHAIN", "-j", "RETURN"]);
    sh(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-j",
        "MY-CHAIN",
    ]);
    sh(&[
        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
    ]);
    sh(&["iptables", "-t", "nat", "-N", "KUBE-MARK-DROP"]);
    sh(&["ip6tables", "-N", "MY-V6"]);
    netns_exec_stdin(
        &ns,
        &["nft", "-f", "-"],
        "add table ip other\nadd chain ip other c\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let before = (
        save_lines(&ns, "iptables-save"),
        save_lines(&ns, "ip6tables-save"),
    );
    let nft_before = netns_exec(&ns, &["nft", "list", "ruleset"]).unwrap_or_else(|e| panic!("{e}"));

    // kproxy's rules of both modes and both families.
    let metrics = Metrics::new(Mode::Iptables, Duration::from_secs(60));
    let node4 = node_config();
    let mut node6 = NodeConfig::new(IpFamily::V6, "node-3");
    node6.local_detector = LocalDetector::Cidr("fd00::/48".parse().expect("constant"));
    let state = cluster(6, 2);
    for mode in [Mode::Iptables, Mode::Nftables] {
        for node in [&node4, &node6] {
            let mut p = Proxier::new(mode);
            let d = desired(mode, &state, node);
            let r = in_ns(&ns, || p.sync(&d, &metrics));
            assert!(
                r.errors.is_empty(),
                "{mode:?} {}: {:?}",
                node.family,
                r.errors
            );
        }
    }
    assert_ne!(save_lines(&ns, "iptables-save"), before.0);

    let out = Command::new(tool("ip").unwrap_or_else(|| "ip".into()))
        .args(["netns", "exec", &ns])
        .arg(kproxy_bin())
        .arg("cleanup")
        .output()
        .expect("run kproxy cleanup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(save_lines(&ns, "iptables-save"), before.0);
    assert_eq!(save_lines(&ns, "ip6tables-save"), before.1);
    let nft_after = netns_exec(&ns, &["nft", "list", "ruleset"]).unwrap_or_else(|e| panic!("{e}"));
    // iptables-nft's own tables aside, nftables is as before.
    let ours = |t: &str| -> String {
        t.split("\ntable ")
            .filter(|b| b.contains("ip other") || b.starts_with("table ip other"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(ours(&nft_after), ours(&nft_before));
    assert!(!nft_after.contains("kube-proxy"), "{nft_after}");
}

/// kube-proxy's canary: when someone removes kproxy's rules, the periodic
/// check notices and the next sync is full (and restores them).
fn canary_forces_full_sync(test: &str, mode: Mode, loader: Loader) {
    if !gate_loader(test, loader) {
        return;
    }
    let nss = Namespaces::new();
    let ns = nss.create("canary").unwrap_or_else(|e| panic!("{e}"));
    let node = node_config();
    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    let d = desired(mode, &cluster(4, 2), &node);
    let r = in_ns(&ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    assert!(in_ns(&ns, || proxier.check_canary()));
    assert!(!proxier.next_is_full());
    match mode {
        Mode::Iptables => {
            for t in ["mangle", "nat"] {
                netns_exec(&ns, &["iptables", "-t", t, "-F"]).unwrap_or_else(|e| panic!("{e}"));
                netns_exec(&ns, &["iptables", "-t", t, "-X"]).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        Mode::Nftables => {
            netns_exec(&ns, &["nft", "flush", "ruleset"]).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert!(!in_ns(&ns, || proxier.check_canary()));
    assert!(proxier.next_is_full());
    let before = dump(mode, &ns);
    let r = in_ns(&ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    assert_ne!(dump(mode, &ns), before, "the full sync restores the rules");
    assert!(in_ns(&ns, || proxier.check_canary()));
}

#[test]
fn canary_forces_full_sync_iptables() {
    canary_forces_full_sync(
        "canary_forces_full_sync_iptables",
        Mode::Iptables,
        Loader::Iptables,
    );
}

#[test]
fn canary_forces_full_sync_nftables() {
    canary_forces_full_sync(
        "canary_forces_full_sync_nftables",
        Mode::Nftables,
        Loader::NftText,
    );
}

// ---------------------------------------------------------------------------
// Issue 14: drift repaired within a sync period, cleanup of every layout,
// prompt shutdown.

/// kproxy's rules changed behind the agent's back, in-process: the drift
/// check writes again exactly what went (a flushed node-level chain, a
/// deleted built-in jump), or makes the next sync full when a whole table
/// went; either way the node ends as a fresh full sync leaves it.
fn drift_repaired(test: &str, mode: Mode, loader: Loader) {
    use kproxy_bin::agent::drift::Repair;
    if !gate_loader(test, loader) {
        return;
    }
    let nss = Namespaces::new();
    let ns = nss.create("drift").unwrap_or_else(|e| panic!("{e}"));
    let fresh = nss.create("drift-fresh").unwrap_or_else(|e| panic!("{e}"));
    let node = node_config();
    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    // Chains of two rules or more are read by their sample once dumped.
    proxier.sampled_chain_rules = 2;
    let d = desired(mode, &cluster(6, 2), &node);
    let r = in_ns(&ns, || proxier.sync(&d, &metrics));
    assert!(r.errors.is_empty() && r.full, "{:?}", r.errors);
    assert_eq!(
        in_ns(&ns, || proxier.repair_drift(&metrics)),
        [Repair::Nothing]
    );
    let sh = |args: &[&str]| netns_exec(&ns, args).unwrap_or_else(|e| panic!("{e}"));
    // What goes, and whether a full sync is what repairs it.
    let cases: Vec<(&str, Vec<Vec<&str>>, bool)> = match mode {
        Mode::Iptables => vec![
            (
                "nat KUBE-SERVICES flushed, the PREROUTING jump deleted",
                vec![
                    vec!["iptables", "-t", "nat", "-F", "KUBE-SERVICES"],
                    vec![
                        "iptables",
                        "-t",
                        "nat",
                        "-D",
                        "PREROUTING",
                        "-m",
                        "comment",
                        "--comment",
                        "kubernetes service portals",
                        "-j",
                        "KUBE-SERVICES",
                    ],
                ],
                false,
            ),
            (
                "filter KUBE-FORWARD flushed",
                vec![vec!["iptables", "-F", "KUBE-FORWARD"]],
                false,
            ),
            (
                "the last rule of nat KUBE-SERVICES deleted",
                vec![vec![
                    "iptables",
                    "-t",
                    "nat",
                    "-D",
                    "KUBE-SERVICES",
                    "-m",
                    "comment",
                    "--comment",
                    "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
                    "-m",
                    "addrtype",
                    "--dst-type",
                    "LOCAL",
                    "-j",
                    "KUBE-NODEPORTS",
                ]],
                false,
            ),
            (
                "nat flushed",
                vec![vec!["iptables", "-t", "nat", "-F"]],
                true,
            ),
            (
                "mangle flushed and its chains deleted",
                vec![
                    vec!["iptables", "-t", "mangle", "-F"],
                    vec!["iptables", "-t", "mangle", "-X"],
                ],
                true,
            ),
        ],
        Mode::Nftables => vec![
            (
                "the services chain flushed",
                vec![vec![
                    "nft",
                    "flush",
                    "chain",
                    "ip",
                    "kube-proxy",
                    "services",
                ]],
                false,
            ),
            (
                "nft flush table ip kube-proxy",
                vec![vec!["nft", "flush", "table", "ip", "kube-proxy"]],
                true,
            ),
            (
                "nft delete table ip kube-proxy",
                vec![vec!["nft", "delete", "table", "ip", "kube-proxy"]],
                true,
            ),
        ],
    };
    for (what, commands, full) in cases {
        let before = dump(mode, &ns);
        for c in &commands {
            sh(c);
        }
        assert_ne!(dump(mode, &ns), before, "{what}: nothing changed");
        let repairs = in_ns(&ns, || proxier.repair_drift(&metrics));
        assert_eq!(repairs.len(), 1, "{what}");
        assert_eq!(
            matches!(repairs[0], Repair::Full(_)),
            full,
            "{what}: {repairs:?}"
        );
        assert!(!matches!(repairs[0], Repair::Nothing), "{what}: not seen");
        assert_eq!(proxier.next_is_full(), full, "{what}");
        // The periodic sync that follows.
        let r = in_ns(&ns, || proxier.sync(&d, &metrics));
        assert!(r.errors.is_empty(), "{what}: {:?}", r.errors);
        assert_eq!(r.full, full, "{what}");
        assert_same_as_fresh(mode, &ns, &fresh, &d, &metrics, what);
        assert_eq!(
            in_ns(&ns, || proxier.repair_drift(&metrics)),
            [Repair::Nothing],
            "{what}: repaired"
        );
    }
}

#[test]
fn drift_repaired_iptables() {
    drift_repaired("drift_repaired_iptables", Mode::Iptables, Loader::Iptables);
}

#[test]
fn drift_repaired_nftables() {
    drift_repaired("drift_repaired_nftables", Mode::Nftables, Loader::NftText);
}

/// The real agent with a one-second `--sync-period`: rules removed behind
/// its back (iptables: nat `KUBE-SERVICES` flushed and the `PREROUTING`
/// jump deleted; nftables: `nft flush table ip kube-proxy`) carry traffic
/// again within a sync period.
fn agent_repairs_drift(test: &str, backend: &str, loader: Loader) {
    let Some(bed) = testbed(test, loader) else {
        return;
    };
    // The manifests in a directory of the test's scratch directory, which
    // also holds the agent's log (`manifests.log`); removed on drop.
    let scratch = Scratch::new("kproxy-agent", test);
    let dir = scratch.join("manifests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("svc.yaml"), SVC).expect("write");
    std::fs::write(dir.join("slice.yaml"), slice(&[9, 10])).expect("write");
    let period = Duration::from_secs(1);
    let agent = spawn_agent(
        &bed,
        &dir,
        backend,
        &[NODE_ADDRESS_ARGS_V4.as_slice(), &["--sync-period", "1s"]].concat(),
    );
    let svc = sock("10.79.255.4", 80);
    let quick = Duration::from_millis(300);
    let answered = || {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Answered { .. }
        )
    };
    within(
        &bed,
        &agent,
        "first sync",
        Duration::from_secs(10),
        answered,
    );
    let node = bed.ns(Ns::Node);
    let sh = |args: &[&str]| netns_exec(&node, args).unwrap_or_else(|e| panic!("{e}"));
    let removals: Vec<Vec<&str>> = if backend == "iptables" {
        vec![
            vec!["iptables", "-t", "nat", "-F", "KUBE-SERVICES"],
            vec![
                "iptables",
                "-t",
                "nat",
                "-D",
                "PREROUTING",
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES",
            ],
        ]
    } else {
        vec![vec!["nft", "flush", "table", "ip", "kube-proxy"]]
    };
    for r in &removals {
        sh(r);
    }
    assert!(!answered(), "traffic still flows without the rules");
    // One sync period, plus the sync and the probes' own time.
    let took = within(
        &bed,
        &agent,
        "drift repaired",
        period + Duration::from_secs(2),
        answered,
    );
    println!("{test}: repaired after {took:?}");
}

#[test]
fn agent_repairs_drift_iptables() {
    agent_repairs_drift("agent_repairs_drift_iptables", "iptables", Loader::Iptables);
}

#[test]
fn agent_repairs_drift_nftables() {
    agent_repairs_drift("agent_repairs_drift_nftables", "nftables", Loader::NftText);
}

/// SIGTERM while the agent waits for a slow tool (a wrapper in PATH that
/// sleeps a minute before running the real `iptables-restore` / `nft -f`
/// once told to): the agent exits within seconds (the old one waited for
/// the tool), and the node keeps the last committed rules.
fn agent_stops_promptly(test: &str, backend: &str, loader: Loader) {
    let Some(bed) = testbed(test, loader) else {
        return;
    };
    // The manifests, the tool wrappers, the agent's log and the `slow`
    // switch side by side in the test's scratch directory (removed on drop).
    let scratch = Scratch::new("kproxy-agent", test);
    let dir = scratch.join("manifests");
    let bin = scratch.join("bin");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::create_dir_all(&bin).expect("scratch dir");
    let slow = scratch.join("slow");
    let (name, when) = match backend {
        "iptables" => ("iptables-restore", "true"),
        _ => ("nft", "[ \"$1\" = -f ]"),
    };
    let real = tool(name).unwrap_or_else(|| panic!("{test}: no {name}"));
    let wrapper = bin.join(name);
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e {} ] && {when}; then sleep 60; fi\nexec {} \"$@\"\n",
            slow.display(),
            real.display()
        ),
    )
    .expect("write the wrapper");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::write(dir.join("svc.yaml"), SVC).expect("write");
    std::fs::write(dir.join("slice.yaml"), slice(&[9, 10])).expect("write");
    // The hang is in `nft -f`: the nftables agent is told to use it (its
    // default is a netlink batch).
    let mut args: Vec<&str> = NODE_ADDRESS_ARGS_V4.to_vec();
    if backend == "nftables" {
        args.push("--nftables-apply=nft");
    }
    let mut agent = spawn_agent_with_path(&bed, &dir, backend, args.as_slice(), Some(&bin));
    let svc = sock("10.79.255.4", 80);
    let quick = Duration::from_millis(300);
    within(&bed, &agent, "first sync", Duration::from_secs(10), || {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Answered { .. }
        )
    });
    // The next sync hangs in the tool.
    std::fs::write(&slow, "").expect("write");
    std::fs::write(dir.join("slice.yaml"), slice(&[9, 10, 11])).expect("write");
    within(
        &bed,
        &agent,
        "the sync starts",
        Duration::from_secs(5),
        || agent.log().contains("source changed"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let status = agent.stop();
    let took = start.elapsed();
    println!("{test}: stopped in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "{test}: SIGTERM took {took:?}\n{}",
        agent.log()
    );
    assert!(status.success(), "{test}: {status}\n{}", agent.log());
    // The old rules (the killed transaction never committed).
    let pods: std::collections::BTreeSet<String> = (0..30)
        .filter_map(|_| match bed.tcp_within(Ns::Client, None, svc, quick) {
            Outcome::Answered { pod, .. } => Some(pod),
            _ => None,
        })
        .collect();
    assert!(
        !pods.is_empty() && pods.iter().all(|p| p == "pod-9" || p == "pod-10"),
        "{test}: answered by {pods:?}"
    );
}

#[test]
fn agent_stops_promptly_iptables() {
    agent_stops_promptly(
        "agent_stops_promptly_iptables",
        "iptables",
        Loader::Iptables,
    );
}

#[test]
fn agent_stops_promptly_nftables() {
    agent_stops_promptly("agent_stops_promptly_nftables", "nftables", Loader::NftText);
}

/// `kproxy cleanup` on a node holding kube-proxy's rules of one release
/// (1.5 with an OnlyLocal LoadBalancer, current iptables, nftables current
/// and pre-1.36) beside someone else's rules, chains and tables: exactly
/// kube-proxy's objects go.
#[test]
fn cleanup_removes_every_layout() {
    let test = "cleanup_removes_every_layout";
    if !gate_loader(test, Loader::Iptables) || !gate_loader(test, Loader::NftText) {
        return;
    }
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios/etp-local-with-local.yaml");
    let layouts: [(&str, &[&str]); 4] = [
        (
            "iptables 1.5",
            &["--kube-proxy-version", "1.5", "--backend", "iptables"],
        ),
        ("iptables current", &["--backend", "iptables"]),
        ("nftables current", &["--backend", "nftables"]),
        (
            "nftables 1.35",
            &["--kube-proxy-version", "1.35", "--backend", "nftables"],
        ),
    ];
    for (what, args) in layouts {
        let nss = Namespaces::new();
        let ns = nss.create("cleanup-all").unwrap_or_else(|e| panic!("{e}"));
        let sh = |args: &[&str]| netns_exec(&ns, args).unwrap_or_else(|e| panic!("{what}: {e}"));
        // Someone else's: a chain and jumps in nat and filter, the
        // kubelet's KUBE-MARK-DROP (as kube-proxy 1.5 writes it), a table.
        sh(&["iptables", "-t", "nat", "-N", "MY-CHAIN"]);
        sh(&["iptables", "-t", "nat", "-A", "MY-CHAIN", "-j", "RETURN"]);
        sh(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-j",
            "MY-CHAIN",
        ]);
        sh(&[
            "iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
        ]);
        sh(&["iptables", "-t", "nat", "-N", "KUBE-MARK-DROP"]);
        sh(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "KUBE-MARK-DROP",
            "-j",
            "MARK",
            "--set-xmark",
            "0x8000/0x8000",
        ]);
        netns_exec_stdin(
            &ns,
            &["nft", "-f", "-"],
            "add table ip other\nadd chain ip other c\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let before = save_lines(&ns, "iptables-save");
        let nft_before = netns_exec(&ns, &["nft", "list", "table", "ip", "other"])
            .unwrap_or_else(|e| panic!("{e}"));

        let mut argv: Vec<String> = [
            "--standalone",
            "--hostname-override",
            "node-a",
            "--host-features",
            "random-fully",
        ]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect();
        argv.push("--ip-family".into());
        argv.push("ipv4".into());
        let (rules, _) = kproxy_tests::compile(&argv, &[&fixture])
            .unwrap_or_else(|e| panic!("{what}: compile: {e}"));
        let load = if args.contains(&"nftables") {
            vec!["nft", "-f", "-"]
        } else {
            vec!["iptables-restore", "--noflush"]
        };
        netns_exec_stdin(&ns, &load, &rules).unwrap_or_else(|e| panic!("{what}: load: {e}"));
        let loaded = save_lines(&ns, "iptables-save");
        if what.starts_with("iptables") {
            assert_ne!(loaded, before, "{what}: nothing loaded");
        }
        if what == "iptables 1.5" {
            assert!(
                loaded.iter().any(|l| l.contains(":KUBE-XLB-")),
                "{what}: no KUBE-XLB chain: {loaded:?}"
            );
        }

        let out = Command::new(tool("ip").unwrap_or_else(|| "ip".into()))
            .args(["netns", "exec", &ns])
            .arg(kproxy_bin())
            .arg("cleanup")
            .output()
            .expect("run kproxy cleanup");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(save_lines(&ns, "iptables-save"), before, "{what}");
        let tables = netns_exec(&ns, &["nft", "list", "tables"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!tables.contains("kube-proxy"), "{what}: {tables}");
        let nft_after = netns_exec(&ns, &["nft", "list", "table", "ip", "other"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nft_after, nft_before, "{what}");
    }
}

/// The drift check after the incremental compiler's partial syncs, which
/// edit `KUBE-SERVICES` in place: a Service added or removed is no drift
/// (the chain read back by its sample or dumped again), and a flush after
/// that is seen.
#[test]
fn drift_after_partial_syncs_iptables() {
    use kproxy_bin::agent::drift::Repair;
    let test = "drift_after_partial_syncs_iptables";
    if !gate_loader(test, Loader::Iptables) {
        return;
    }
    let nss = Namespaces::new();
    let ns = nss
        .create("drift-partial")
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new(Mode::Iptables, Duration::from_secs(60));
    let mut proxier = Proxier::new(Mode::Iptables);
    proxier.sampled_chain_rules = 2;
    let mut compiler = Compiler::new();
    let targets = [(node_config(), layout_of(Mode::Iptables))];
    let pool = cluster(12, 2);
    let mut state = ClusterState {
        services: pool.services[..8].to_vec(),
        endpoint_slices: pool.endpoint_slices[..8].to_vec(),
    };
    let mut sync = |state: &ClusterState, proxier: &mut Proxier| {
        let c = compiler
            .compile(state, &targets, proxier.next_is_full())
            .expect("compile");
        let r = in_ns(&ns, || proxier.sync_compiled(&c, &metrics));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    };
    sync(&state, &mut proxier);
    let check = |proxier: &mut Proxier| in_ns(&ns, || proxier.repair_drift(&metrics));
    assert_eq!(check(&mut proxier), [Repair::Nothing]);
    for step in 0..6 {
        if step % 2 == 0 {
            state.services.push(pool.services[8 + step / 2].clone());
            state
                .endpoint_slices
                .push(pool.endpoint_slices[8 + step / 2].clone());
        } else {
            state.services.remove(step);
        }
        sync(&state, &mut proxier);
        assert_eq!(check(&mut proxier), [Repair::Nothing], "step {step}");
    }
    netns_exec(&ns, &["iptables", "-t", "nat", "-F", "KUBE-SERVICES"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        check(&mut proxier).as_slice(),
        [Repair::Rewrite { chains, .. }] if chains.iter().any(|c| c.1 == "KUBE-SERVICES")
    ));
    assert_eq!(check(&mut proxier), [Repair::Nothing], "repaired");
}
