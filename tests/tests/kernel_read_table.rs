//! The netlink table reader ([`kproxy_bin::agent::nfnl::read_table`] and
//! [`kproxy_nft::decode`]): every nftables golden and snapshot scenario,
//! in the current and pre-1.36 layouts, and the dual-stack fixture on
//! IPv4, IPv6 and dual-stack nodes, loaded into a fresh network namespace
//! (by `nft -f`, and by kproxy's own netlink batch), must read back by
//! netlink as `kproxy_nft::parse::parse_json` reads `nft -j list table` of
//! the same namespace (both rule dumps: the table's and per chain). nft
//! 1.0.6 leaves the table's and chains' comments and the sets' `dynamic`
//! flag out of its JSON; the reader reads them, so they are compared only
//! where the JSON has them. A statement `parse_json` does not know
//! (`Match::Opaque`: `meta mark & 0x80000000 != 0`, listed by nft as a
//! prefix) may be known to the reader.
//!
//! Needs root, `ip` and `nft`. Without them the test prints a visible
//! `SKIPPED` line and passes, except when `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kproxy_tests::dual_stack_variants;
use kproxy_tests::netns::{Netns, skip_without_nft};

use kproxy_bin::agent::netlink::apply;
use kproxy_bin::agent::nfnl::{RuleDump, read_table};
use kproxy_core::ir::{Match, Table, TableFamily, Verdict};
use kproxy_core::model::IpFamily;
use kproxy_nft::anon::AnonDigests;
use kproxy_nft::{PrintOptions, Transaction};
use kproxy_tests::read_args;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The scenarios of `snapshots_nftables.rs`, from the command line each
/// native snapshot records (`# kproxy compile ARGS PATHS`).
fn snapshot_cases() -> Vec<(String, Vec<String>, Vec<PathBuf>)> {
    let dir = root().join("tests/snapshots");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("snapshots")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("snapshots_nftables__") && !n.ends_with("_json.snap")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("snapshot");
        let Some(line) = text
            .lines()
            .find_map(|l| l.strip_prefix("# kproxy compile "))
        else {
            continue;
        };
        let mut args = Vec::new();
        let mut paths = Vec::new();
        for tok in line.split_whitespace() {
            if let Some(cfg) = tok.strip_prefix("--config=") {
                args.push(format!("--config={}", root().join(cfg).display()));
            } else if tok.starts_with("--") {
                args.push(tok.to_string());
            } else {
                paths.push(root().join(tok));
            }
        }
        let name = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_start_matches("snapshots_nftables__")
            .to_string();
        out.push((name, args, paths));
    }
    assert!(out.len() >= 40, "snapshot scenarios missing: {}", out.len());
    out
}

/// What nft 1.0.6's JSON leaves out, left out of `t` where `json` lacks it.
fn as_listed(mut t: Table, json: &Table) -> Table {
    if json.comment.is_none() {
        t.comment = None;
    }
    for c in &mut t.chains {
        if json
            .chain(c.name.as_str())
            .is_none_or(|j| j.comment.is_none())
        {
            c.comment = None;
        }
    }
    // Where nft -j lists a statement parse_json does not know (Opaque),
    // the reader may know it (`meta mark & 0x80000000 != 0`, which nft
    // lists as a prefix): the JSON's statement is taken.
    for c in &mut t.chains {
        let Some(j) = json.chain(c.name.as_str()) else {
            continue;
        };
        for (r, jr) in c.rules.iter_mut().zip(&j.rules) {
            if r.matches.len() == jr.matches.len() {
                for (m, jm) in r.matches.iter_mut().zip(&jr.matches) {
                    if matches!(jm, Match::Opaque(_)) {
                        *m = jm.clone();
                    }
                }
            }
            if matches!(jr.verdict, Some(Verdict::Opaque(_))) {
                r.verdict.clone_from(&jr.verdict);
            }
        }
    }
    for s in &mut t.sets {
        let listed = json
            .sets
            .iter()
            .find(|j| j.name == s.name)
            .is_some_and(|j| j.flags.iter().any(|f| f == "dynamic"));
        if !listed {
            s.flags.retain(|f| f != "dynamic");
        }
    }
    t
}

/// The first object of two tables that differs.
fn difference(got: &Table, want: &Table) -> String {
    if got.comment != want.comment || got.counters != want.counters {
        return format!(
            "table: got {:?} {:?}, want {:?} {:?}",
            got.comment, got.counters, want.comment, want.counters
        );
    }
    for i in 0..got.chains.len().max(want.chains.len()) {
        let (g, w) = (got.chains.get(i), want.chains.get(i));
        if g != w {
            return format!("chain {i}:\n got {g:?}\nwant {w:?}");
        }
    }
    for i in 0..got.sets.len().max(want.sets.len()) {
        let (g, w) = (got.sets.get(i), want.sets.get(i));
        if g != w {
            return format!("set {i}:\n got {g:?}\nwant {w:?}");
        }
    }
    for i in 0..got.maps.len().max(want.maps.len()) {
        let (g, w) = (got.maps.get(i), want.maps.get(i));
        if g != w {
            return format!("map {i}:\n got {g:?}\nwant {w:?}");
        }
    }
    "no difference".into()
}

fn family_word(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

/// How anonymous sets' elements are expected to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anon {
    /// Dumped: no digest known to the reader.
    Dumped,
    /// kproxy's netlink batch wrote a digest into each: all taken by it,
    /// none dumped.
    Taken,
    /// nft wrote them (no digest): all dumped though the reader knows the
    /// digests.
    DumpedThoughKnown,
}

/// Each family's table of `ns`, read by netlink (both rule dumps) and by
/// `nft -j`, compared. `tables` holds the digests of the anonymous sets of
/// each table as written. The anonymous sets taken by digest, in all.
fn compare(
    ns: &Netns,
    how: &str,
    tables: &[(IpFamily, String, Arc<AnonDigests>)],
    anon: Anon,
) -> Result<usize, String> {
    let mut all = 0;
    for (family, name, known) in tables {
        let json = ns
            .nft(&["-j", "list", "table", family_word(*family), name], "")
            .map_err(|e| format!("{how}: nft -j list table: {e}"))?;
        let want = kproxy_nft::parse::parse_json(&json)
            .map_err(|e| format!("{how}: parse_json: {e}"))?
            .ruleset
            .tables
            .into_iter()
            .find(|t| t.name == *name && t.family == TableFamily::Nft(*family))
            .ok_or_else(|| format!("{how}: no table {name} in nft -j"))?;
        let known = match anon {
            Anon::Dumped => None,
            Anon::Taken | Anon::DumpedThoughKnown => Some(known),
        };
        for dump in [RuleDump::Table, RuleDump::PerChain] {
            let read = ns
                .run(|| read_table(*family, name, dump, known))
                .map_err(|e| format!("{how} ({dump:?}): read_table: {e}"))?
                .ok_or_else(|| format!("{how} ({dump:?}): read_table found no table"))?;
            // Named `dynamic` sets (affinity) are not read.
            let named = read.table.sets.len() + read.table.maps.len() - read.dynamic;
            let anonymous = read.taken + read.dumped - named;
            let (taken, dumped) = match anon {
                Anon::Taken => (anonymous, named),
                Anon::Dumped | Anon::DumpedThoughKnown => (0, named + anonymous),
            };
            if (read.taken, read.dumped) != (taken, dumped) {
                return Err(format!(
                    "{how} ({dump:?}), {family:?}: {} sets taken by digest and {} dumped, \
                     want {taken} and {dumped}",
                    read.taken, read.dumped
                ));
            }
            all += read.taken;
            let got = as_listed(read.table, &want);
            if got != want {
                return Err(format!(
                    "{how} ({dump:?}), {family:?}: {}",
                    difference(&got, &want)
                ));
            }
        }
    }
    Ok(all)
}

/// The scenario loaded both ways and read back; the anonymous sets the
/// reader took by their digest.
fn check(name: &str, txs: &[(Transaction, PrintOptions)]) -> Result<usize, String> {
    let mut text = String::new();
    let mut tables: Vec<(IpFamily, String, Arc<AnonDigests>)> = Vec::new();
    for (tx, opts) in txs {
        text.push_str(&kproxy_nft::print::print(tx, *opts).map_err(|e| e.to_string())?);
        if tables
            .iter()
            .any(|(f, t, _)| *f == tx.family && *t == tx.table)
        {
            return Err(format!("{name}: two transactions for table {}", tx.table));
        }
        let written = tx.apply().map_err(|e| format!("{name}: {e}"))?;
        let known = AnonDigests::of_table(tx.family, &written, opts.single_dnat);
        tables.push((tx.family, tx.table.clone(), Arc::new(known)));
    }
    let by_nft = Netns::new("kproxy-rt");
    by_nft
        .nft(&["-f", "-"], &text)
        .map_err(|e| format!("{name}: nft -f: {e}"))?;
    let how = format!("{name}, loaded by nft -f");
    compare(&by_nft, &how, &tables, Anon::Dumped)?;
    compare(&by_nft, &how, &tables, Anon::DumpedThoughKnown)?;
    let by_netlink = Netns::new("kproxy-rt");
    let only: Vec<Transaction> = txs.iter().map(|(t, _)| t.clone()).collect();
    by_netlink
        .run(|| apply(&only, txs[0].1))
        .map_err(|e| format!("{name}: netlink: {e}"))?;
    let how = format!("{name}, loaded by netlink");
    compare(&by_netlink, &how, &tables, Anon::Dumped)?;
    compare(&by_netlink, &how, &tables, Anon::Taken)
}

#[test]
fn every_scenario_reads_back_by_netlink_as_nft_json_lists_it() {
    if skip_without_nft("every_scenario_reads_back_by_netlink_as_nft_json_lists_it") {
        return;
    }
    let mut cases: Vec<(String, Vec<String>, Vec<PathBuf>)> =
        kproxy_tests::golden_cases("nftables")
            .into_iter()
            .map(|d| {
                let name = d
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                (name, read_args(&d.join("args")), vec![d.join("input.yaml")])
            })
            .collect();
    let dual = root().join("fixtures/netlink/dual-stack.yaml");
    for (name, args) in dual_stack_variants() {
        cases.push((name, args, vec![dual.clone()]));
    }
    for (name, args, paths) in snapshot_cases() {
        let mut old = args.clone();
        old.push("--kube-proxy-version=1.35".into());
        cases.push((format!("{name}, current"), args, paths.clone()));
        cases.push((format!("{name}, pre-1.36"), old, paths));
    }
    let mut failures = Vec::new();
    let mut taken = 0;
    for (name, args, paths) in &cases {
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let txs = match kproxy_tests::compile_nft_transactions(args, &refs) {
            Ok(t) => t,
            Err(e) => {
                println!("FAIL {name}: compile: {e}");
                failures.push(name.clone());
                continue;
            }
        };
        match check(name, &txs) {
            Ok(n) => {
                println!("ok   {name}");
                taken += n;
            }
            Err(e) => {
                println!("FAIL {e}");
                failures.push(name.clone());
            }
        }
    }
    assert!(cases.len() >= 90, "{} cases", cases.len());
    assert!(failures.is_empty(), "failed: {failures:?}");
    // The scenarios have anonymous sets and maps (numgen maps, address
    // sets), read by digest after the netlink load.
    assert!(taken >= 100, "{taken} anonymous sets taken by digest");
}

#[test]
fn a_missing_table_reads_as_none() {
    if skip_without_nft("a_missing_table_reads_as_none") {
        return;
    }
    let ns = Netns::new("kproxy-rt");
    for family in [IpFamily::V4, IpFamily::V6] {
        let got = ns
            .run(|| read_table(family, "kube-proxy", RuleDump::Table, None))
            .expect("read");
        assert_eq!(got, None);
    }
    // Another table of the same name in the other family is not read.
    ns.nft(&["-f", "-"], "add table ip6 kube-proxy\n")
        .expect("nft");
    let got = ns
        .run(|| read_table(IpFamily::V4, "kube-proxy", RuleDump::Table, None))
        .expect("read");
    assert_eq!(got, None);
}
