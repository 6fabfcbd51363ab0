//! What the agent benchmarks share (included with `#[path]`; not an
//! example of its own): a throwaway network namespace to run in, and a fast
//! first iptables load.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kproxy_bin::agent::incremental::{Compiled, Compiler};
use kproxy_bin::agent::metrics::Metrics;
use kproxy_bin::agent::sync::{Desired, Mode, Proxier, SyncReport};
use kproxy_bin::compile::{AgentLayout, Layout};
use kproxy_core::model::{ClusterState, IpFamily, LocalDetector, NamespacedName, NodeConfig};
use kproxy_core::profile::{IptablesProfile, NftablesProfile};
use kproxy_iptables::sync::payload::iptables_full;

/// `d` in milliseconds, one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A network namespace this thread (and the tools it starts) runs in until
/// dropped; then deleted.
pub struct Netns(String);

impl Netns {
    /// Creates `name` and enters it (root needed).
    pub fn enter(name: &str) -> Self {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} failed (root needed)");
        let f = File::open(format!("/run/netns/{name}")).expect("open netns");
        // SAFETY: setns() on a valid descriptor; changes this thread only,
        // and the tools the proxier spawns inherit it.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns");
        Self(name.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Loads `d` (iptables) into the empty namespace with plain
/// `iptables-restore` (`--noflush` is quadratic in iptables-nft 1.8.9),
/// ensures the jumps from the built-in chains as the agent does (with them
/// the kernel validates every chain reachable from the base chains on each
/// later commit, which partial syncs pay), and tells `proxier`.
pub fn fast_first_load(proxier: &mut Proxier, d: &Desired) {
    let full = iptables_full(&d.ruleset, &[], Default::default()).expect("payload");
    for c in [
        "ct_state_invalid_dropped_pkts",
        "localhost_nps_accepted_pkts",
    ] {
        let _ = Command::new("nfacct").args(["add", c]).output();
    }
    let mut child = Command::new("iptables-restore")
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(full.restore.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
    for r in &full.ensure {
        let ok = Command::new("iptables")
            .args(["-w", "5", "-t", &r.table, "-I", &r.chain])
            .args(&r.args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "iptables -I {} {:?}", r.chain, r.args);
    }
    proxier.assume_applied(std::slice::from_ref(d));
}

/// The first (full) compile of `state` and its sync: for iptables,
/// [`fast_first_load`] unless `KPROXY_BENCH_AGENT_FIRST` is set (then, as
/// for nftables, the agent's own full sync). Returns the compile and load
/// times.
#[allow(dead_code)] // Not every bench starts from a compiled first sync.
pub fn first_sync(
    mode: Mode,
    compiler: &mut Compiler,
    proxier: &mut Proxier,
    state: &ClusterState,
    targets: &[(NodeConfig, AgentLayout)],
    metrics: &Metrics,
) -> (Duration, Duration) {
    let t = Instant::now();
    let first = compiler.compile(state, targets, true).expect("compile");
    let compile = t.elapsed();
    let t = Instant::now();
    let agent_first = std::env::var_os("KPROXY_BENCH_AGENT_FIRST").is_some();
    match (mode, first.as_slice()) {
        (Mode::Iptables, [Compiled::Full(d)]) if !agent_first => fast_first_load(proxier, d),
        (_, [Compiled::Full(_)]) => {
            let r = proxier.sync_compiled(&first, metrics);
            assert!(r.errors.is_empty(), "{:?}", r.errors);
        }
        _ => panic!("the first compile is full, of one family"),
    }
    (compile, t.elapsed())
}

/// One sync as `kproxy run` does it: the incremental compile of `state`
/// told that `hint` changed, then the sync. Returns the compile time, the
/// sync's report and whether the compile was partial.
pub fn sync_changed(
    compiler: &mut Compiler,
    proxier: &mut Proxier,
    state: &ClusterState,
    targets: &[(NodeConfig, AgentLayout)],
    hint: Option<&BTreeSet<NamespacedName>>,
    metrics: &Metrics,
) -> (Duration, SyncReport, bool) {
    let t = Instant::now();
    let c = compiler
        .compile_hinted(state, targets, proxier.next_is_full(), hint)
        .expect("compile");
    let compile = t.elapsed();
    let partial = c.iter().all(|c| matches!(c, Compiled::Partial(_)));
    let r = proxier.sync_compiled(&c, metrics);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    (compile, r, partial)
}

/// The backend named by `arg` (`nftables`; anything else: iptables) and the
/// compiler's target for it: node `node-3` of the synthetic clusters, pod
/// CIDR `10.0.0.0/8`, the current release's layout.
#[allow(dead_code)] // Not every bench takes the backend by name.
pub fn target(arg: Option<&str>) -> (Mode, [(NodeConfig, AgentLayout); 1]) {
    let (mode, layout) = match arg {
        Some("nftables") => (Mode::Nftables, Layout::Nftables(NftablesProfile::Current)),
        _ => (Mode::Iptables, Layout::Iptables(IptablesProfile::Current)),
    };
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    (mode, [(node, AgentLayout(layout))])
}
