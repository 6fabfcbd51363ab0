//! Benchmark of the agent's apply path (not a test; needs root):
//!
//! ```sh
//! sudo cargo run --release -p kproxy-bin --example agent_bench -- 10000 10
//! ```
//!
//! In a throwaway network namespace, for each backend: the first (full)
//! sync of `SERVICES` x `ENDPOINTS` (kproxy's synthetic cluster), then
//! several syncs that each change one Service (one endpoint added), timed
//! by phase. Two ways: as `kproxy run` does it (the incremental compiler:
//! only the changed Service re-planned and laid out, then
//! `Proxier::sync_compiled`), and the full way (plan and lay out every
//! Service, compare with the last full ruleset, `Proxier::sync`). Last, the
//! drift check each periodic sync runs (`Proxier::repair_drift`), and a
//! restarted agent's first sync on the unchanged node (its table read by
//! netlink; also by `nft -j` with `KPROXY_BENCH_JSON_RESTART=1`), and the
//! table read alone (by netlink, anonymous sets taken by their digest;
//! also dumping them with `KPROXY_BENCH_DUMP_ANON=1`; also by `nft -j`
//! with `KPROXY_BENCH_JSON_RESTART=1`).
//! Figures go to stdout. nftables syncs go as one netlink batch (the
//! agent's default); `KPROXY_BENCH_NFT=1` times `nft -f` instead.
//! `KPROXY_BENCH_FIRST_ONLY=1` stops after each backend's first sync;
//! `KPROXY_BENCH_CHUNK=N` sets the nftables first sync's transaction size
//! (`Proxier::nft_first_sync_chunk`; 0: one transaction).

use std::time::{Duration, Instant};

#[path = "bench/mod.rs"]
mod bench;
use bench::ms;

use kproxy_bin::agent::incremental::{Compiled, Compiler};
use kproxy_bin::agent::metrics::Metrics;
use kproxy_bin::agent::sync::{Desired, Mode, Proxier};
use kproxy_bin::compile::{AgentLayout, Layout};
use kproxy_core::model::{ClusterState, Endpoint, IpFamily, LocalDetector, NodeConfig};
use kproxy_core::profile::{IptablesProfile, NftablesProfile};
use kproxy_core::synthetic::cluster;
use kproxy_iptables::sync::payload::iptables_partial;
use kproxy_nft::anon::AnonDigests;
use kproxy_nft::sync::payload::nft_partial;
use kproxy_nft::sync::print_options as nft_print_opts;

fn desired(mode: Mode, state: &ClusterState, node: &NodeConfig) -> Vec<Desired> {
    let layout = match mode {
        Mode::Iptables => Layout::Iptables(IptablesProfile::Current),
        Mode::Nftables => Layout::Nftables(NftablesProfile::Current),
    };
    vec![Desired::compile(state, node, AgentLayout(layout)).expect("rules")]
}

/// `t` with its chains, sets and maps sorted by name, and their elements
/// sorted (the kernel lists them in its own order).
fn sorted_elements(mut t: kproxy_core::ir::Table) -> kproxy_core::ir::Table {
    t.chains
        .sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    t.sets.sort_by(|a, b| a.name.cmp(&b.name));
    t.maps.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &mut t.sets {
        s.elements.sort_by_cached_key(|e| format!("{e:?}"));
    }
    for m in &mut t.maps {
        m.elements.sort_by_cached_key(|e| format!("{e:?}"));
    }
    t
}

/// Where two tables first differ (a chain, set or map, or the rest).
fn first_difference(got: &kproxy_core::ir::Table, want: &kproxy_core::ir::Table) -> String {
    for c in &want.chains {
        match got.chain(c.name.as_str()) {
            None => return format!("chain {} missing", c.name),
            Some(g) if g != c => {
                let at = g.rules.iter().zip(&c.rules).position(|(a, b)| a != b);
                return format!(
                    "chain {}: {} rules read, {} written; first different rule: {:?} / {:?}",
                    c.name,
                    g.rules.len(),
                    c.rules.len(),
                    at.map(|i| &g.rules[i]),
                    at.map(|i| &c.rules[i]),
                );
            }
            Some(_) => {}
        }
    }
    for s in &want.sets {
        if got.sets.iter().find(|g| g.name == s.name) != Some(s) {
            return format!(
                "set {:?} / {:?}",
                got.sets.iter().find(|g| g.name == s.name),
                s
            );
        }
    }
    for m in &want.maps {
        if got.maps.iter().find(|g| g.name == m.name) != Some(m) {
            return format!("map {}", m.name);
        }
    }
    format!(
        "chains {} / {}, sets {} / {}, maps {} / {}, counters {} / {}",
        got.chains.len(),
        want.chains.len(),
        got.sets.len(),
        want.sets.len(),
        got.maps.len(),
        want.maps.len(),
        got.counters.len(),
        want.counters.len()
    )
}

/// The node's table read alone: by netlink (table-wide and per-chain rule
/// dumps, decoded) and by `nft -j list table` (parsed), each compared with
/// what was written.
fn read_alone(d: &Desired) {
    use kproxy_bin::agent::nfnl::{RuleDump, read_table};
    let Some(written) = d.ruleset.tables.first() else {
        return;
    };
    let family = d.node.family;
    let t = Instant::now();
    let single = kproxy_nft::sync::print_options(&d.node).single_dnat;
    let known = std::sync::Arc::new(AnonDigests::of_table(family, written, single));
    println!(
        "nftables: digests of the {} anonymous sets to write: {}",
        known.len(),
        ms(t.elapsed())
    );
    let slow = std::env::var_os("KPROXY_BENCH_DUMP_ANON").is_some();
    for dump in [RuleDump::Table, RuleDump::PerChain] {
        for by_digest in [true, false] {
            if !by_digest && !slow {
                continue;
            }
            let t = Instant::now();
            let read = read_table(family, &written.name, dump, by_digest.then_some(&known))
                .expect("netlink read")
                .expect("the table is there");
            let took = t.elapsed();
            let mut held = read.table;
            kproxy_nft::sync::payload::as_written(&mut held, written);
            // Elements in any order: the kernel lists them in its own.
            let held = sorted_elements(held);
            let written = &sorted_elements(written.clone());
            if held != *written {
                println!(
                    "nftables: the read differs: {}",
                    first_difference(&held, written)
                );
            }
            println!(
                "nftables: table read by netlink ({dump:?} rule dump, {} sets taken by digest, {} dumped, {} dynamic not read) and decoded: {}, as written: {}",
                read.taken,
                read.dumped,
                read.dynamic,
                ms(took),
                held == *written
            );
        }
    }
    if std::env::var_os("KPROXY_BENCH_JSON_RESTART").is_none() {
        return;
    }
    let t = Instant::now();
    let fam = if family == IpFamily::V4 { "ip" } else { "ip6" };
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "table", fam, &written.name])
        .output()
        .expect("nft");
    let listed = t.elapsed();
    let dump = kproxy_nft::parse::parse_json(&String::from_utf8_lossy(&out.stdout)).expect("json");
    println!(
        "nftables: table read by nft -j list table: {} (+ parse_json {})",
        ms(listed),
        ms(t.elapsed() - listed),
    );
    drop(dump);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let services: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let endpoints: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let modes: Vec<Mode> = match args.get(3).map(String::as_str) {
        Some("iptables") => vec![Mode::Iptables],
        Some("nftables") => vec![Mode::Nftables],
        _ => vec![Mode::Iptables, Mode::Nftables],
    };
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    println!("kproxy agent bench: {services} Services x {endpoints} endpoints");
    for mode in modes {
        let _netns = bench::Netns::enter(&format!(
            "kproxy-bench-{}-{}",
            std::process::id(),
            mode.name()
        ));

        let metrics = Metrics::new(mode, Duration::from_secs(60));
        let mut proxier = Proxier::new(mode);
        // nftables: one netlink batch per sync (the agent's default), or
        // `nft -f` with KPROXY_BENCH_NFT=1.
        proxier.nft_netlink = std::env::var_os("KPROXY_BENCH_NFT").is_none();
        if mode == Mode::Nftables {
            let how = if proxier.nft_netlink {
                "netlink batch"
            } else {
                "nft -f"
            };
            println!("nftables: applied by {how}");
        }
        if let Some(n) = std::env::var("KPROXY_BENCH_CHUNK")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            proxier.nft_first_sync_chunk = n;
            println!("nftables: first sync in transactions of {n} commands (0: one)");
        }
        let minimal = std::env::var_os("KPROXY_BENCH_MINIMAL").is_some();
        proxier.minimal_partial_syncs = minimal;
        let mut state = cluster(services, endpoints);
        let t = Instant::now();
        let d = desired(mode, &state, &node);
        let compile = t.elapsed();
        let fast_first =
            mode == Mode::Iptables && std::env::var_os("KPROXY_BENCH_FAST_FIRST").is_some();
        let r = if fast_first {
            // iptables-restore --noflush is quadratic in iptables-nft: load
            // the first payload without it (the namespace is empty).
            let t = Instant::now();
            bench::fast_first_load(&mut proxier, &d[0]);
            println!("iptables: first load without --noflush (KPROXY_BENCH_FAST_FIRST)");
            kproxy_bin::agent::sync::SyncReport {
                full: true,
                errors: vec![],
                duration: t.elapsed(),
                ..Default::default()
            }
        } else {
            proxier.sync(&d, &metrics)
        };
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        println!(
            "{}: first full sync: {} (compile {}), {} rules",
            mode.name(),
            ms(r.duration),
            ms(compile),
            d[0].ruleset
                .tables
                .iter()
                .flat_map(|t| &t.chains)
                .map(|c| c.rules.len())
                .sum::<usize>()
        );
        if std::env::var_os("KPROXY_BENCH_FIRST_ONLY").is_some() {
            continue;
        }
        let mut last = d;
        for round in 0..6u32 {
            if round == 3 && mode == Mode::Iptables && !minimal {
                proxier.minimal_partial_syncs = true;
                println!("iptables: --minimal-partial-syncs from here on");
            }
            let i = (round * 997 + 13) as usize % state.endpoint_slices.len();
            let ip = std::net::Ipv4Addr::new(10, 200, (round / 250) as u8, (round % 250) as u8 + 1);
            state.endpoint_slices[i]
                .endpoints
                .push(Endpoint::ready(ip.into()).on_node("node-1"));
            let t = Instant::now();
            let d = desired(mode, &state, &node);
            let compile = t.elapsed();
            // The payload planning alone (what the proxier does before the tool).
            let t = Instant::now();
            let bytes = match mode {
                Mode::Iptables => iptables_partial(
                    &last[0].ruleset,
                    &d[0].ruleset,
                    kproxy_iptables::PrintOptions::default(),
                    proxier.minimal_partial_syncs,
                )
                .map(|s| s.restore.len())
                .unwrap_or(0),
                Mode::Nftables => nft_partial(
                    &last[0].ruleset.tables[0],
                    &d[0].ruleset.tables[0],
                    nft_print_opts(&node),
                )
                .ok()
                .flatten()
                .map(|s| s.transaction.text.len())
                .unwrap_or(0),
            };
            let planning = t.elapsed();
            let r = proxier.sync(&d, &metrics);
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert!(!r.full);
            println!(
                "{}: one Service changed: sync {} (of which payload planning {}, payload {} bytes); compile {}",
                mode.name(),
                ms(r.duration),
                ms(planning),
                bytes,
                ms(compile),
            );
            last = d;
        }
        // As `kproxy run` does it: the incremental compiler.
        let layout = match mode {
            Mode::Iptables => Layout::Iptables(IptablesProfile::Current),
            Mode::Nftables => Layout::Nftables(NftablesProfile::Current),
        };
        let targets = [(node.clone(), AgentLayout(layout))];
        let mut compiler = Compiler::new();
        let t = Instant::now();
        let first = compiler.compile(&state, &targets, true).expect("compile");
        assert!(matches!(first[0], Compiled::Full(_)));
        println!(
            "{}: incremental compiler primed (full compile {})",
            mode.name(),
            ms(t.elapsed())
        );
        for round in 6..12u32 {
            let i = (round * 997 + 13) as usize % state.endpoint_slices.len();
            let ip = std::net::Ipv4Addr::new(10, 201, (round / 250) as u8, (round % 250) as u8 + 1);
            let t0 = Instant::now();
            state.endpoint_slices[i]
                .endpoints
                .push(Endpoint::ready(ip.into()).on_node("node-1"));
            let (compile, r, partial) = bench::sync_changed(
                &mut compiler,
                &mut proxier,
                &state,
                &targets,
                None,
                &metrics,
            );
            assert!(partial, "not partial");
            println!(
                "{}: one Service changed, incremental: end to end {} (compile {}, sync {})",
                mode.name(),
                ms(t0.elapsed()),
                ms(compile),
                ms(r.duration),
            );
        }
        // The drift check of each periodic sync (nothing to repair): the
        // first after kproxy wrote reads every node-level chain whole; then,
        // while nothing is committed, nothing; after someone else's commit,
        // the long chains by their sample.
        for round in 0..6 {
            let what = match round {
                0 => "first after kproxy's syncs: every chain dumped",
                1 | 2 => "nothing committed since",
                _ => {
                    let t = format!("add table ip bench-other-{round}\n");
                    kproxy_bin::agent::exec::run("nft", &["-f", "-"], Some(&t)).expect("nft");
                    "after someone else's commit: long chains by sample"
                }
            };
            let t = Instant::now();
            let repairs = proxier.repair_drift(&metrics);
            println!(
                "{}: drift check ({what}): {} ({repairs:?})",
                mode.name(),
                ms(t.elapsed()),
            );
        }
        // A restarted agent on the unchanged node: a new proxier's first
        // (full) sync reads the node's rules and writes what differs.
        let d = desired(mode, &state, &node);
        if mode == Mode::Nftables && std::env::var_os("KPROXY_BENCH_JSON_RESTART").is_some() {
            // The restart as before the netlink reader: nft -j list table.
            let mut restarted = Proxier::new(mode);
            restarted.nft_netlink = proxier.nft_netlink;
            restarted.nft_netlink_read = false;
            let r = restarted.sync(&d, &metrics);
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            println!(
                "nftables: restart on the unchanged node, read by nft -j: first sync {}",
                ms(r.duration)
            );
        }
        let mut restarted = Proxier::new(mode);
        restarted.nft_netlink = proxier.nft_netlink;
        let r = restarted.sync(&d, &metrics);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        println!(
            "{}: restart on the unchanged node: first sync {}",
            mode.name(),
            ms(r.duration)
        );
        if mode == Mode::Nftables {
            read_alone(&d[0]);
        }
    }
}
