//! iptables mode's first sync on a fresh node (issue 18), against the real
//! kernel.
//!
//! The agent writes its first full sync with one `iptables-restore
//! --noflush` that, with iptables-nft, lists each table first
//! (`kproxy_iptables::noflush`, in the iptables sync engine): fast, and it
//! must change nothing else.
//!
//! * Every iptables golden case and snapshot scenario (current and 1.5
//!   layouts, IPv4 and IPv6), written that way into a fresh namespace,
//!   gives the same `iptables-save` as a plain `iptables-restore` of the
//!   same payload into another.
//! * Foreign chains and rules present before the agent's first full sync,
//!   and foreign rules added while it runs, are all there afterwards.
//!
//! nftables mode's first sync on a fresh node (issue 16): written as
//! several transactions (the table dormant until the last wakes it), by
//! netlink and by `nft -f`:
//!
//! * it leaves the same `nft list ruleset` and `nft -j list ruleset`
//!   (handles aside) as one `nft -f` of the whole table, and real traffic
//!   reaches a Service's pods;
//! * a failed transaction leaves the node's traffic as it was, and the
//!   next sync (full, one transaction) leaves the same listing.
//!
//! Needs root (see `kernel_e2e.rs`); prints SKIPPED (or fails with
//! `CI=true`) where namespaces cannot be created.

#[allow(unused_imports)] // the testbed re-exports what only kernel_e2e uses
mod kernel;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kernel::testbed::{Namespaces, in_ns};
use kernel::*;
use kproxy_bin::agent::exec;
use kproxy_bin::agent::metrics::Metrics;
use kproxy_bin::agent::sync::{Desired, Mode, Proxier};
use kproxy_bin::compile::{AgentLayout, Layout};
use kproxy_core::model::{IpFamily, LocalDetector, NodeConfig};
use kproxy_core::profile::IptablesProfile;
use kproxy_core::synthetic::cluster;
use kproxy_iptables::noflush::{TABLE_LISTING, saved_rules, with_table_listing};

/// One `iptables-restore` payload of a scenario.
struct Payload {
    name: String,
    family: Family,
    rules: String,
}

fn model_family(f: Family) -> IpFamily {
    match f {
        Family::V4 => IpFamily::V4,
        Family::V6 => IpFamily::V6,
    }
}

/// The golden cases, compiled as the agent writes them (without
/// `--standalone`: the agent ensures the jumps from the built-in chains
/// one by one after the restore).
fn golden_payloads() -> Vec<Payload> {
    let mut out = Vec::new();
    for dir in kproxy_tests::golden_cases("iptables") {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let args = kproxy_tests::read_args(&dir.join("args"));
        let family = if args.iter().any(|a| a == "--ip-family=ipv6") {
            Family::V6
        } else {
            Family::V4
        };
        let (rules, _) = kproxy_tests::compile(&args, &[&dir.join("input.yaml")])
            .unwrap_or_else(|e| panic!("golden {name}: {e}"));
        out.push(Payload {
            name: format!("golden {name}"),
            family,
            rules,
        });
    }
    out
}

/// The iptables snapshots' payloads (the text after insta's header; the
/// `#` lines are comments to iptables-restore): every scenario of
/// `snapshots_iptables.rs`, the 1.5 layout's of `profile_goldens.rs` and
/// the seed article's. A dual-stack snapshot gives one payload per family.
fn snapshot_payloads() -> Vec<Payload> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("snapshots_iptables__")
                || n.starts_with("profile_goldens__iptables_")
                || n.starts_with("seed_article__")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        // `---`, insta's metadata, `---`, the snapshot.
        let Some(body) = text.splitn(3, "---\n").nth(2) else {
            panic!("{name}: not an insta snapshot");
        };
        if let Some((v4, v6)) = body.split_once("# IPv6 input (ip6tables-restore)\n") {
            out.push(Payload {
                name: format!("{name} (IPv4)"),
                family: Family::V4,
                rules: v4.to_string(),
            });
            out.push(Payload {
                name: format!("{name} (IPv6)"),
                family: Family::V6,
                rules: v6.to_string(),
            });
        } else {
            let family = if body
                .lines()
                .next()
                .unwrap_or("")
                .contains("--ip-family=ipv6")
            {
                Family::V6
            } else {
                Family::V4
            };
            out.push(Payload {
                name,
                family,
                rules: body.to_string(),
            });
        }
    }
    out
}

/// `iptables-save` (`ip6tables-save`) of `ns`, without its comment lines.
fn save(ns: &str, family: Family) -> String {
    let tool = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    let text = netns_exec(ns, &[tool]).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Writes `rules` into `ns` as the agent's first full sync does: the
/// node's rules counted from its `iptables-save`, the input prepared for
/// iptables-nft, one `--noflush --counters` restore. Returns whether the
/// table listing was added.
fn agent_restore(ns: &str, family: Family, rules: &str) -> Result<bool, String> {
    ensure_nfacct(ns, rules)?;
    let held = saved_rules(&save(ns, family));
    in_ns(ns, || {
        let node_rules = |t: &str| {
            held.iter()
                .find(|(name, _)| name == t)
                .map_or(0, |(_, n)| *n)
        };
        let input = if exec::iptables_is_nft() {
            with_table_listing(rules, node_rules)
        } else {
            rules.to_string()
        };
        let listed = input.lines().any(|l| l == TABLE_LISTING);
        let tool = match model_family(family) {
            IpFamily::V4 => "iptables-restore",
            IpFamily::V6 => "ip6tables-restore",
        };
        exec::run(tool, &["--noflush", "--counters", "-w", "5"], Some(&input))
            .map(|_| listed)
            .map_err(|e| e.to_string())
    })
}

#[test]
fn first_sync_path_writes_what_a_plain_restore_writes() {
    let test = "first_sync_path_writes_what_a_plain_restore_writes";
    if !gate_loader(test, Loader::Iptables) {
        return;
    }
    let nft = exec::iptables_is_nft();
    let payloads: Vec<Payload> = golden_payloads()
        .into_iter()
        .chain(snapshot_payloads())
        .collect();
    assert!(payloads.len() > 60, "only {} payloads", payloads.len());
    assert!(payloads.iter().any(|p| p.family == Family::V6));
    assert!(payloads.iter().any(|p| p.name.contains("1_5")));
    let mut failures = Vec::new();
    let mut listed = 0;
    for (i, p) in payloads.iter().enumerate() {
        // Deleted at the end of each payload.
        let nss = Namespaces::new();
        let plain = nss
            .create(&format!("p{i}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let agent = nss
            .create(&format!("a{i}"))
            .unwrap_or_else(|e| panic!("{e}"));
        // The 1.5 layout jumps to kubelet's KUBE-MARK-DROP: on the agent's
        // node, kubelet's chain is there before (a foreign chain to keep);
        // the plain restore replaces the table, so it declares it.
        let mut plain_rules = p.rules.clone();
        if p.rules.contains("-j KUBE-MARK-DROP") && !p.rules.contains(":KUBE-MARK-DROP") {
            let tool = match p.family {
                Family::V4 => "iptables",
                Family::V6 => "ip6tables",
            };
            netns_exec(&agent, &[tool, "-t", "nat", "-N", "KUBE-MARK-DROP"])
                .unwrap_or_else(|e| panic!("{e}"));
            plain_rules = plain_rules.replace("*nat\n", "*nat\n:KUBE-MARK-DROP - [0:0]\n");
        }
        if let Err(e) = Loader::Iptables.load(&plain, p.family, &plain_rules, false) {
            if e.contains("Message too long") && !initial_user_ns() {
                skip(&format!("{test}: {}", p.name), "batch too large rootless");
                continue;
            }
            failures.push(format!("{}: plain restore: {e}", p.name));
            continue;
        }
        match agent_restore(&agent, p.family, &p.rules) {
            Ok(l) => listed += usize::from(l),
            Err(e) => {
                failures.push(format!("{}: agent restore: {e}", p.name));
                continue;
            }
        }
        let (want, got) = (save(&plain, p.family), save(&agent, p.family));
        if want != got {
            failures.push(format!(
                "{}: iptables-save differs:\n{}",
                p.name,
                kproxy_tests::line_diff(&want, &got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if nft {
        // Every payload writes rules into a fresh namespace: each is listed.
        assert!(
            listed > 60,
            "the table listing was added to {listed} payloads only"
        );
    }
}

fn node() -> NodeConfig {
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    node
}

/// Foreign chains and rules before the agent's first full sync, and
/// foreign rules added while it runs, all survive it; kproxy's rules are
/// those of a first sync into an empty namespace.
#[test]
fn foreign_rules_survive_the_first_sync() {
    let test = "foreign_rules_survive_the_first_sync";
    if !gate_loader(test, Loader::Iptables) {
        return;
    }
    let nss = Namespaces::new();
    let ns = nss.create("node").unwrap_or_else(|e| panic!("{e}"));
    let empty = nss.create("empty").unwrap_or_else(|e| panic!("{e}"));
    let before = [
        "-t nat -N CNI-FOREIGN",
        "-t nat -A CNI-FOREIGN -s 192.0.2.0/24 -j RETURN",
        "-t nat -A POSTROUTING -j CNI-FOREIGN",
        "-t nat -N LIVE-FOREIGN",
        "-t filter -N KUBELET-FOREIGN",
        "-t filter -A KUBELET-FOREIGN -p tcp --dport 10250 -j ACCEPT",
        "-t filter -A INPUT -j KUBELET-FOREIGN",
        "-t filter -A FORWARD -s 198.51.100.7 -j DROP",
    ];
    for rule in before {
        let args: Vec<&str> = std::iter::once("iptables")
            .chain(rule.split_whitespace())
            .collect();
        netns_exec(&ns, &args).unwrap_or_else(|e| panic!("{e}"));
    }
    let foreign = save(&ns, Family::V4);
    assert_eq!(foreign.lines().filter(|l| l.starts_with("-A ")).count(), 5);
    let d = vec![
        Desired::compile(
            &cluster(150, 4),
            &node(),
            AgentLayout(Layout::Iptables(IptablesProfile::Current)),
        )
        .expect("rules"),
    ];
    let metrics = Metrics::new(Mode::Iptables, Duration::from_secs(60));
    let done = AtomicBool::new(false);
    let (report, added) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            in_ns(&ns, || {
                // A foreign writer (kubelet, a CNI plugin) adding rules
                // while the agent's first sync runs.
                let mut added = Vec::new();
                while !done.load(Ordering::SeqCst) && added.len() < 200 {
                    let src = format!("203.0.113.{}", added.len() % 250 + 1);
                    let ok = exec::run(
                        "iptables",
                        &[
                            "-w",
                            "5",
                            "-t",
                            "nat",
                            "-A",
                            "LIVE-FOREIGN",
                            "-s",
                            &src,
                            "-j",
                            "RETURN",
                        ],
                        None,
                    );
                    ok.unwrap_or_else(|e| panic!("foreign iptables -A: {e}"));
                    added.push(src);
                }
                added
            })
        });
        let report = in_ns(&ns, || {
            let mut proxier = Proxier::new(Mode::Iptables);
            proxier.sync(&d, &metrics)
        });
        done.store(true, Ordering::SeqCst);
        (
            report,
            writer
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        )
    });
    if let Some(e) = report
        .errors
        .iter()
        .find(|e| e.contains("Message too long"))
        && !initial_user_ns()
    {
        skip(test, &format!("batch too large rootless: {e}"));
        return;
    }
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        !added.is_empty(),
        "no foreign rule was added during the sync"
    );
    let text = save(&ns, Family::V4);
    for rule in foreign.lines().filter(|l| l.starts_with("-A ")) {
        assert!(
            text.lines().any(|l| l == rule),
            "foreign rule {rule:?} lost:\n{text}"
        );
    }
    let live = text
        .lines()
        .filter(|l| l.starts_with("-A LIVE-FOREIGN "))
        .count();
    assert_eq!(
        live,
        added.len(),
        "foreign rules added during the sync lost:\n{text}"
    );
    // kproxy's own rules: those of the same first sync into an empty
    // namespace.
    let report = in_ns(&empty, || Proxier::new(Mode::Iptables).sync(&d, &metrics));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let ours = |text: &str| -> String {
        text.lines()
            .filter(|l| l.contains("KUBE-") || l.starts_with('*') || l == &"COMMIT")
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let want = ours(&save(&empty, Family::V4));
    let got = ours(&text);
    assert!(
        want == got,
        "kproxy's rules differ from a first sync into an empty namespace:\n{}",
        kproxy_tests::line_diff(&want, &got)
    );
}

// ---------------------------------------------------------------------------
// nftables: the first sync in several transactions (issue 16).

mod nft_chunks {
    use super::*;
    use crate::kernel::testbed::Ns;
    use crate::kernel::traffic::sock;
    use kproxy_core::model::{
        ClusterState, EndpointPort, EndpointSlice, Protocol, Service, ServicePort,
    };
    use kproxy_core::profile::NftablesProfile;
    use kproxy_nft::sync::payload::nft_full;
    use kproxy_nft::sync::print_options;

    /// Commands per transaction: the tests' tables take dozens.
    const CHUNK: usize = 400;
    const WEB: &str = "10.79.255.7";

    fn node() -> NodeConfig {
        let mut node = NodeConfig::new(IpFamily::V4, "node1");
        node.local_detector = LocalDetector::Cidr("10.76.0.0/14".parse().expect("constant"));
        node.node_ip = Some(ip(NODE_IP));
        node.node_addresses = vec![ip(NODE_IP), ip(NODE_LINK_IP), ip(BRIDGE_IP)];
        node
    }

    /// `services` synthetic Services and one whose endpoints are the
    /// testbed's pods 9 and 10 (`WEB`:80).
    fn state(services: u32) -> ClusterState {
        let mut state = cluster(services, 3);
        state.services.push(
            Service::cluster_ip("default", "web", ip(WEB)).with_port(ServicePort::new(
                "http",
                Protocol::Tcp,
                80,
            )),
        );
        let mut slice = EndpointSlice::new("default", "web-1", "web", IpFamily::V4)
            .with_port(EndpointPort::new("http", Protocol::Tcp, POD_PORT));
        for p in [9, 10] {
            slice = slice.with_endpoint(
                kproxy_core::model::Endpoint::ready(ip(&format!("10.76.0.{p}"))).on_node("node1"),
            );
        }
        state.endpoint_slices.push(slice);
        state
    }

    fn desired(state: &ClusterState) -> Vec<Desired> {
        let layout = AgentLayout(Layout::Nftables(NftablesProfile::Current));
        vec![Desired::compile(state, &node(), layout).expect("rules")]
    }

    /// `nft list ruleset` and `nft -j list ruleset` (handles aside).
    fn listings(ns: &str) -> (String, String) {
        let text = netns_exec(ns, &["nft", "list", "ruleset"]).unwrap_or_else(|e| panic!("{e}"));
        let json =
            netns_exec(ns, &["nft", "-j", "list", "ruleset"]).unwrap_or_else(|e| panic!("{e}"));
        (text, kproxy_tests::netns::without_handles(&json))
    }

    /// The listings of the whole table loaded in one transaction into a
    /// namespace of its own, by netlink or by `nft -f`. (The netlink
    /// encoder spells a prefix that is not byte-aligned, the testbed's
    /// `10.76.0.0/14`, otherwise than nft does: `nft list` prints it as a
    /// raw payload match; the same either way the table is written.)
    fn whole(d: &[Desired], netlink: bool) -> (String, String) {
        let nss = Namespaces::new();
        let ns = nss.create("whole").unwrap_or_else(|e| panic!("{e}"));
        let table = &d[0].ruleset.tables[0];
        let tx = nft_full(table, print_options(&node())).expect("transaction");
        if netlink {
            let (t, opts) = (tx.transaction.clone(), tx.options);
            in_ns(&ns, move || kproxy_bin::agent::netlink::apply(&[t], opts))
                .unwrap_or_else(|e| panic!("{e}"));
        } else {
            netns_exec_stdin(&ns, &["nft", "-f", "-"], &tx.text).unwrap_or_else(|e| panic!("{e}"));
        }
        listings(&ns)
    }

    fn generation(ns: &str) -> u32 {
        in_ns(ns, kproxy_bin::agent::nfnl::generation).expect("generation")
    }

    fn chunked_first_sync(test: &str, loader: Loader) {
        let Some(bed) = testbed(test, loader) else {
            return;
        };
        let node_ns = bed.ns(Ns::Node);
        let d = desired(&state(300));
        let metrics = Metrics::new(Mode::Nftables, Duration::from_secs(60));
        let mut proxier = Proxier::new(Mode::Nftables);
        proxier.nft_netlink = loader == Loader::NftNetlink;
        proxier.nft_first_sync_chunk = CHUNK;
        let before = generation(&node_ns);
        let r = in_ns(&node_ns, || proxier.sync(&d, &metrics));
        assert!(r.errors.is_empty() && r.full, "{test}: {:?}", r.errors);
        let commits = generation(&node_ns).wrapping_sub(before);
        assert!(commits > 3, "{test}: {commits} commits: not split");
        let (text, json) = listings(&node_ns);
        let (want_text, want_json) = whole(&d, loader == Loader::NftNetlink);
        assert_eq!(text, want_text, "{test}: nft list ruleset");
        assert_eq!(json, want_json, "{test}: nft -j list ruleset");
        assert!(!text.contains("dormant"));
        // Real traffic reaches the Service's pods.
        bed.expect_spread(test, Ns::Client, sock(WEB, 80), 30, &["pod-9", "pod-10"]);
        // A later full sync: one transaction, the same table.
        proxier.force_full_sync();
        let before = generation(&node_ns);
        let r = in_ns(&node_ns, || proxier.sync(&d, &metrics));
        assert!(r.errors.is_empty() && r.full, "{test}: {:?}", r.errors);
        assert_eq!(generation(&node_ns).wrapping_sub(before), 1, "{test}");
        assert_eq!(listings(&node_ns), (want_text, want_json), "{test}");
    }

    #[test]
    fn chunked_first_sync_nftables() {
        chunked_first_sync("chunked_first_sync_nftables", Loader::NftText);
    }

    #[test]
    fn chunked_first_sync_nftables_netlink() {
        chunked_first_sync("chunked_first_sync_nftables_netlink", Loader::NftNetlink);
    }

    /// Runs the engine's commands in `ns` as the agent's shell does (a
    /// transaction by netlink or `nft -f`); `before(i)` runs before the
    /// `i`th transaction.
    fn drive(
        engine: &mut kproxy_nft::sync::Engine,
        ns: &str,
        netlink: bool,
        mut before: impl FnMut(usize),
    ) -> kproxy_core::sync::SyncReport {
        use kproxy_core::sync::Outcome;
        use kproxy_nft::sync::{Command, Report};
        let now = std::time::Instant::now();
        let mut i = 0;
        while let Some(cmd) = engine.poll_command(now) {
            let outcome = match &cmd {
                Command::Transaction { transaction, .. } => {
                    before(i);
                    i += 1;
                    if netlink {
                        let tx = transaction.transaction.clone();
                        let opts = transaction.options;
                        in_ns(ns, move || kproxy_bin::agent::netlink::apply(&[tx], opts))
                            .map(|_| String::new())
                            .map_err(|e| format!("netlink:1:1: Error: {e}"))
                    } else {
                        netns_exec_stdin(ns, &["nft", "-f", "-"], &transaction.text)
                            .map(|()| String::new())
                    }
                }
                other => {
                    let mut args = vec![other.program().to_string()];
                    args.extend(other.args());
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    netns_exec(ns, &args)
                }
            };
            engine.handle_outcome(
                now,
                match outcome {
                    Ok(out) => Outcome::Done(out),
                    Err(e) => Outcome::Failed(e),
                },
            );
        }
        match engine.poll_report() {
            Some(Report::Sync(r)) => r,
            other => panic!("no sync report: {other:?}"),
        }
    }

    /// A transaction of the first sync refused (one of its map elements
    /// added behind the agent's back with another verdict): the failure
    /// is reported, the dormant table left changes no traffic, and the
    /// next sync (one transaction, the atomic replacement) leaves what one
    /// `nft -f` leaves.
    fn failed_chunk(test: &str, loader: Loader) {
        let Some(bed) = testbed(test, loader) else {
            return;
        };
        let node_ns = bed.ns(Ns::Node);
        let d = desired(&state(300));
        let table = &d[0].ruleset.tables[0];
        let netlink = loader == Loader::NftNetlink;
        // A Service's element, added by a late transaction, added before
        // with another verdict: that transaction is refused (EEXIST).
        let map = table
            .maps
            .iter()
            .find(|m| m.name == "service-ips")
            .expect("service-ips");
        let (key, value) = map.elements.last().expect("an element");
        let tx = kproxy_nft::Transaction::new(IpFamily::V4, "kube-proxy");
        let op = kproxy_nft::Op::AddMapElement(map.name.clone(), key.clone(), value.clone());
        let line = kproxy_nft::print::print_op(&tx, &op, print_options(&node())).expect("print");
        let (head, _) = line.rsplit_once(" : ").expect("a map element");
        let foreign = format!("{head} : drop }}\n");
        let mut engine = kproxy_nft::sync::Engine::new();
        engine.first_sync_chunk = CHUNK;
        engine.sync(std::time::Instant::now(), &d);
        // Added as soon as the map is declared (the elements come last).
        let mut added = false;
        let r = drive(&mut engine, &node_ns, netlink, |_| {
            if !added {
                added = netns_exec_stdin(&node_ns, &["nft", "-f", "-"], &foreign).is_ok();
            }
        });
        assert!(added, "{test}: the map was never declared");
        let e = r.families[0].error.as_ref().expect("the sync must fail");
        assert_eq!(
            e.kind,
            kproxy_core::sync::FailureKind::Write { partial: false }
        );
        assert!(engine.next_is_full(std::time::Instant::now()));
        // The node holds a dormant table: no Service answers.
        let (text, _) = listings(&node_ns);
        assert!(text.contains("flags dormant"), "{text}");
        let o = bed.tcp_within(Ns::Client, None, sock(WEB, 80), Duration::from_secs(1));
        assert!(
            !matches!(o, crate::kernel::traffic::Outcome::Answered { .. }),
            "{test}: {o:?}"
        );
        // The next sync: one transaction, the whole table.
        let mut count = 0;
        engine.sync(std::time::Instant::now(), &d);
        let r = drive(&mut engine, &node_ns, netlink, |_| count += 1);
        assert!(r.ok() && r.full, "{test}: {r:?}");
        assert_eq!(count, 1, "{test}: one transaction");
        assert_eq!(listings(&node_ns), whole(&d, netlink), "{test}");
        bed.expect_spread(test, Ns::Client, sock(WEB, 80), 30, &["pod-9", "pod-10"]);
    }

    #[test]
    fn failed_chunk_nftables() {
        failed_chunk("failed_chunk_nftables", Loader::NftText);
    }

    #[test]
    fn failed_chunk_nftables_netlink() {
        failed_chunk("failed_chunk_nftables_netlink", Loader::NftNetlink);
    }
}
