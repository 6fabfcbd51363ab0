//! Benchmark of iptables mode's first sync on a fresh node (not a test;
//! needs root):
//!
//! ```sh
//! sudo cargo run --release -p kproxy-bin --example first_sync_bench -- 10000 10
//! ```
//!
//! Side by side for the synthetic cluster of `SERVICES` x `ENDPOINTS`, each
//! in a throwaway network namespace:
//! 1. the floor: plain `iptables-restore` (no `--noflush`: it replaces the
//!    tables) of the agent's full payload into an empty namespace;
//! 2. the agent's first full sync (`Proxier::sync`) on a fresh node that
//!    holds a few foreign rules, then syncs that each change one Service;
//! 3. the same payload with `iptables-restore --noflush` as it is, without
//!    the table listing iptables-nft gets from the agent: quadratic, so
//!    only up to 2000 Services unless `KPROXY_BENCH_OLD=1`.
//!
//! Figures go to stdout.

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "bench/mod.rs"]
mod bench;
use bench::ms;

use kproxy_bin::agent::exec;
use kproxy_bin::agent::metrics::Metrics;
use kproxy_bin::agent::sync::{Desired, Mode, Proxier};
use kproxy_bin::compile::{AgentLayout, Layout};
use kproxy_core::model::{Endpoint, IpFamily, LocalDetector, NodeConfig};
use kproxy_core::profile::IptablesProfile;
use kproxy_core::synthetic::cluster;
use kproxy_iptables::sync::payload::iptables_full;

const NFACCT: [&str; 2] = [
    "ct_state_invalid_dropped_pkts",
    "localhost_nps_accepted_pkts",
];

fn nfacct() {
    for c in NFACCT {
        let _ = Command::new("nfacct").args(["add", c]).output();
    }
}

fn timed_restore(args: &[&str], input: &str) -> Duration {
    let t = Instant::now();
    exec::run("iptables-restore", args, Some(input)).expect("iptables-restore");
    t.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let services: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let endpoints: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    let layout = AgentLayout(Layout::Iptables(IptablesProfile::Current));
    let mut state = cluster(services, endpoints);
    let t = Instant::now();
    let d = vec![Desired::compile(&state, &node, layout).expect("rules")];
    let compile = t.elapsed();
    let payload = iptables_full(&d[0].ruleset, &[], Default::default()).expect("payload");
    let rules: usize = payload.rules_written.values().sum();
    println!(
        "iptables first sync: {services} Services x {endpoints} endpoints, {rules} rules, {} bytes (compile {})",
        payload.restore.len(),
        ms(compile)
    );
    let version = exec::run("iptables", &["--version"], None).unwrap_or_default();
    println!("{}", version.trim());

    {
        let _netns = bench::Netns::enter(&format!("kproxy-fsb-plain-{}", std::process::id()));
        nfacct();
        let took = timed_restore(&[], &payload.restore);
        println!(
            "1. plain iptables-restore into an empty namespace: {}",
            ms(took)
        );
    }

    {
        let _netns = bench::Netns::enter(&format!("kproxy-fsb-agent-{}", std::process::id()));
        for args in [
            vec!["-t", "nat", "-N", "FOREIGN"],
            vec!["-t", "nat", "-A", "FOREIGN", "-j", "RETURN"],
            vec![
                "-t",
                "filter",
                "-A",
                "INPUT",
                "-s",
                "192.0.2.1",
                "-j",
                "DROP",
            ],
        ] {
            exec::run("iptables", &args, None).expect("foreign rule");
        }
        let metrics = Metrics::new(Mode::Iptables, Duration::from_secs(60));
        let mut proxier = Proxier::new(Mode::Iptables);
        let r = proxier.sync(&d, &metrics);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        println!(
            "2. the agent's first full sync (fresh node, foreign rules present): {}",
            ms(r.duration)
        );
        for round in 0..3u32 {
            let i = (round * 997 + 13) as usize % state.endpoint_slices.len();
            let ip = std::net::Ipv4Addr::new(10, 200, 0, round as u8 + 1);
            state.endpoint_slices[i]
                .endpoints
                .push(Endpoint::ready(ip.into()).on_node("node-1"));
            let d = vec![Desired::compile(&state, &node, layout).expect("rules")];
            let r = proxier.sync(&d, &metrics);
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert!(!r.full);
            println!(
                "   then one Service changed: partial sync {}",
                ms(r.duration)
            );
        }
    }

    if services <= 2000 || std::env::var_os("KPROXY_BENCH_OLD").is_some() {
        let _netns = bench::Netns::enter(&format!("kproxy-fsb-old-{}", std::process::id()));
        nfacct();
        let took = timed_restore(&["--noflush", "--counters", "-w", "5"], &payload.restore);
        println!(
            "3. iptables-restore --noflush of the same payload, no table listing: {}",
            ms(took)
        );
    } else {
        println!(
            "3. iptables-restore --noflush without table listing: skipped (KPROXY_BENCH_OLD=1)"
        );
    }
}
