//! The netlink path: every nftables golden scenario (current and pre-1.36
//! layouts) and a dual-stack one, loaded by kproxy's own nf_tables batch
//! into a fresh network namespace, must leave the same ruleset as `nft -f`
//! of the same transaction: `nft list ruleset` and `nft -j list ruleset`
//! (handles aside). A refused batch changes nothing and names the command
//! that failed.
//!
//! Needs root, `ip` and `nft`. Without them the test prints a visible
//! `SKIPPED` line and passes, except when `CI=true`, where it fails.

use std::path::Path;

use kproxy_tests::dual_stack_variants;
use kproxy_tests::netns::{Netns, skip_without_nft, without_handles};

use kproxy_bin::agent::netlink::{ApplyError, apply};
use kproxy_nft::{PrintOptions, Transaction};
use kproxy_tests::read_args;

/// The transactions of `kproxy compile ARGS INPUT`.
fn transactions(args: &[String], input: &Path) -> Vec<(Transaction, PrintOptions)> {
    kproxy_tests::compile_nft_transactions(args, &[input]).expect("transactions")
}

fn listings(ns: &Netns) -> Result<(String, String), String> {
    Ok((
        ns.nft(&["list", "ruleset"], "")?,
        without_handles(&ns.nft(&["-j", "list", "ruleset"], "")?),
    ))
}

fn check(name: &str, txs: &[(Transaction, PrintOptions)]) -> Result<(), String> {
    let mut text = String::new();
    for (tx, opts) in txs {
        text.push_str(&kproxy_nft::print::print(tx, *opts).map_err(|e| e.to_string())?);
    }
    let by_nft = Netns::new("kproxy-nl");
    by_nft
        .nft(&["-f", "-"], &text)
        .map_err(|e| format!("{name}: nft -f: {e}"))?;
    let by_netlink = Netns::new("kproxy-nl");
    let only: Vec<Transaction> = txs.iter().map(|(t, _)| t.clone()).collect();
    let opts = txs[0].1;
    by_netlink
        .run(|| apply(&only, opts))
        .map_err(|e| format!("{name}: netlink: {e}"))?;
    let (want_text, want_json) = listings(&by_nft)?;
    let (got_text, got_json) = listings(&by_netlink)?;
    if want_text != got_text {
        return Err(format!(
            "{name}: nft list ruleset differs\n{}",
            kproxy_tests::line_diff(&want_text, &got_text)
        ));
    }
    if want_json != got_json {
        return Err(format!(
            "{name}: nft -j list ruleset differs\n{}",
            kproxy_tests::line_diff(&want_json, &got_json)
        ));
    }
    Ok(())
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/netlink")
        .join(name)
}

#[test]
fn goldens_by_netlink_list_as_by_nft() {
    if skip_without_nft("goldens_by_netlink_list_as_by_nft") {
        return;
    }
    let mut failures = Vec::new();
    let mut cases: Vec<(String, Vec<String>, std::path::PathBuf)> =
        kproxy_tests::golden_cases("nftables")
            .into_iter()
            .map(|d| {
                let name = d
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                (name, read_args(&d.join("args")), d.join("input.yaml"))
            })
            .collect();
    // A dual-stack input (LoadBalancer with source ranges, affinity, UDP,
    // SCTP, IPv6-only Services) on dual-stack, IPv4 and IPv6 nodes, in both
    // layouts.
    for (name, args) in dual_stack_variants() {
        cases.push((name, args, fixture("dual-stack.yaml")));
    }
    for (name, args, input) in cases {
        let txs = match std::panic::catch_unwind(|| transactions(&args, &input)) {
            Ok(t) => t,
            Err(_) => {
                failures.push(format!("{name}: compile"));
                continue;
            }
        };
        match check(&name, &txs) {
            Ok(()) => println!("ok   {name}"),
            Err(e) => {
                println!("FAIL {e}");
                failures.push(name);
            }
        }
    }
    assert!(failures.is_empty(), "failed: {failures:?}");
}

#[test]
fn a_refused_batch_changes_nothing_and_names_the_command() {
    if skip_without_nft("a_refused_batch_changes_nothing_and_names_the_command") {
        return;
    }
    use kproxy_core::ir::{Chain, Rule, Verdict};
    use kproxy_core::model::IpFamily;
    use kproxy_nft::Op;
    let ns = Netns::new("kproxy-nl");
    let mut tx = Transaction::new(IpFamily::V4, "kube-proxy");
    tx.push(Op::AddTable { comment: None });
    tx.push(Op::AddChain(Chain::new("a")));
    tx.push(Op::AddRule("a".into(), Rule::new().verdict(Verdict::Drop)));
    // A jump to a chain that does not exist: the kernel refuses the rule.
    tx.push(Op::AddRule(
        "a".into(),
        Rule::new().verdict(Verdict::Jump("missing".into())),
    ));
    let err = ns
        .run(|| apply(std::slice::from_ref(&tx), PrintOptions::default()))
        .expect_err("refused");
    let msg = err.to_string();
    assert!(
        matches!(err, ApplyError::Refused { .. })
            && msg.contains("add rule ip kube-proxy a jump missing"),
        "{msg}"
    );
    assert!(!err.wants_fallback(), "{msg}");
    assert_eq!(
        ns.nft(&["list", "ruleset"], "").expect("list"),
        "",
        "nothing applied"
    );
    // Without the broken rule the batch applies.
    tx.ops.pop();
    let sent = ns
        .run(|| apply(std::slice::from_ref(&tx), PrintOptions::default()))
        .expect("applies");
    assert_eq!(sent, 3);
    assert!(
        ns.nft(&["list", "ruleset"], "")
            .expect("list")
            .contains("drop")
    );
}
