//! Benchmark of a restarted agent on an unchanged nftables node (not a
//! test; needs root): the node's table read by netlink, and the restart's
//! first sync, which reads it and writes nothing.
//!
//! ```sh
//! cargo run --release -p kproxy-bin --example restart_bench -- 10000 10
//! ```
//!
//! The network namespace `kproxy-restartbench-SERVICES-ENDPOINTS` is kept
//! between runs, so that the node's table (kproxy's synthetic cluster,
//! loaded by the agent's own first sync: minutes at 10,000 Services) is
//! loaded once; `ip netns del` it when done. Each run times, `ROUNDS`
//! times (the third argument, default 3): the digests of the anonymous
//! sets the sync would write, the table read by netlink (anonymous sets
//! taken by their digest, both rule dumps), and a new proxier's first
//! sync; and first, `2 x ROUNDS` changes of one Service each, as the agent
//! syncs them (netlink and `nft -f` in turn). `KPROXY_BENCH_READS_ONLY=1`:
//! the reads alone.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_bin::agent::incremental::{Compiled, Compiler};
use kproxy_bin::agent::metrics::Metrics;
use kproxy_bin::agent::nfnl::{RuleDump, generation, read_comments, read_table};
use kproxy_bin::agent::sync::{Desired, Mode, Proxier};
use kproxy_bin::compile::{AgentLayout, Layout};
use kproxy_core::model::{
    ClusterState, Endpoint, IpFamily, LocalDetector, NamespacedName, NodeConfig,
};
use kproxy_core::profile::NftablesProfile;
use kproxy_core::synthetic::cluster;
use kproxy_nft::anon::AnonDigests;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Enters namespace `name`, creating it when missing; whether it was new.
fn enter(name: &str) -> bool {
    let path = format!("/run/netns/{name}");
    let new = !std::path::Path::new(&path).exists();
    if new {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} failed (root needed)");
    }
    let f = File::open(&path).expect("open netns");
    // SAFETY: setns() on a valid descriptor; changes this thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns");
    new
}

/// One Service changed at a time (one endpoint more), as `kproxy run`
/// does it: the incremental compile told which Service changed, then the
/// sync; applied by netlink, and in alternate rounds by `nft -f` (the same
/// partial transaction, as text). The agent starts as restarted on the
/// node (its first sync reads the table).
fn changes(state: &mut ClusterState, node: &NodeConfig, rounds: u32, metrics: &Metrics) {
    let targets = [(
        node.clone(),
        AgentLayout(Layout::Nftables(NftablesProfile::Current)),
    )];
    let mut compiler = Compiler::new();
    let mut proxier = Proxier::new(Mode::Nftables);
    let first = compiler.compile(state, &targets, true).expect("compile");
    let r = proxier.sync_compiled(&first, metrics);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    for round in 0..rounds * 2 {
        let i = (round * 997 + 13) as usize % state.endpoint_slices.len();
        let slice = &mut state.endpoint_slices[i];
        let ip = std::net::Ipv4Addr::new(10, 202, (round / 250) as u8, (round % 250) as u8 + 1);
        let t0 = Instant::now();
        slice
            .endpoints
            .push(Endpoint::ready(ip.into()).on_node("node-1"));
        let hint = BTreeSet::from([NamespacedName::new(
            slice.id.namespace.clone(),
            slice.service_name.clone(),
        )]);
        proxier.nft_netlink = round % 2 == 0;
        let t = Instant::now();
        let c = compiler
            .compile_hinted(state, &targets, proxier.next_is_full(), Some(&hint))
            .expect("compile");
        let compile = t.elapsed();
        assert!(c.iter().all(|c| matches!(c, Compiled::Partial(_))));
        let r = proxier.sync_compiled(&c, metrics);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        println!(
            "one Service changed ({}): end to end {} (compile {}, sync {})",
            if proxier.nft_netlink {
                "netlink"
            } else {
                "nft -f"
            },
            ms(t0.elapsed()),
            ms(compile),
            ms(r.duration),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let services: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let endpoints: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let rounds: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    let state = cluster(services, endpoints);
    let t = Instant::now();
    let layout = AgentLayout(Layout::Nftables(NftablesProfile::Current));
    let d = vec![Desired::compile(&state, &node, layout).expect("rules")];
    println!(
        "kproxy restart bench: {services} Services x {endpoints} endpoints (compile {})",
        ms(t.elapsed())
    );
    let metrics = Metrics::new(Mode::Nftables, Duration::from_secs(60));
    let name = format!("kproxy-restartbench-{services}-{endpoints}");
    // (Not `nft list tables`: nft 1.0.6 reads every set's elements for it,
    // a minute at 10,000 Services.)
    let held = || read_comments(node.family, "kube-proxy").is_ok_and(|c| c.is_some());
    if enter(&name) || !held() {
        let t = Instant::now();
        let r = Proxier::new(Mode::Nftables).sync(&d, &metrics);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        println!("first sync into {name}: {}", ms(t.elapsed()));
    }
    let reads_only = std::env::var_os("KPROXY_BENCH_READS_ONLY").is_some();
    if !reads_only {
        changes(&mut state.clone(), &node, rounds, &metrics);
    }
    let written = &d[0].ruleset.tables[0];
    let single = kproxy_nft::sync::print_options(&node).single_dnat;
    for _ in 0..rounds {
        let t = Instant::now();
        let known = Arc::new(AnonDigests::of_table(node.family, written, single));
        let digests = t.elapsed();
        println!("digests of {} anonymous sets {}", known.len(), ms(digests));
        for dump in [RuleDump::Table, RuleDump::PerChain] {
            let t = Instant::now();
            let read = read_table(node.family, &written.name, dump, Some(&known))
                .expect("netlink read")
                .expect("the table is there");
            let took = t.elapsed();
            // What the engine then does with it: nothing to write.
            let t = Instant::now();
            let mut held = read.table;
            kproxy_nft::sync::payload::as_written(&mut held, written);
            let opts = kproxy_nft::sync::print_options(&node);
            let partial = kproxy_nft::sync::payload::nft_partial(&held, written, opts)
                .expect("partial")
                .expect("the same table");
            let compared = t.elapsed();
            let t = Instant::now();
            drop(held);
            let dropped = t.elapsed();
            println!(
                "read by netlink ({dump:?} rule dump) {} ({} sets taken by digest, {} dumped, {} dynamic not read); compared {} ({} bytes to write), dropped {}",
                ms(took),
                read.taken,
                read.dumped,
                read.dynamic,
                ms(compared),
                partial.transaction.text.len(),
                ms(dropped),
            );
        }
        if reads_only {
            continue;
        }
        let before = generation().expect("generation");
        let t = Instant::now();
        let r = Proxier::new(Mode::Nftables).sync(&d, &metrics);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        println!(
            "restart on the unchanged node: first sync {} (committed: {})",
            ms(t.elapsed()),
            generation().expect("generation") != before
        );
    }
}
