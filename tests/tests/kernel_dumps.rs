//! Reading a real node's rules back (issue 8), with the kernel as the
//! source: every golden case is compiled, loaded into a throwaway network
//! namespace, dumped with the node's own tools (`iptables-save` /
//! `ip6tables-save`, `nft -j list ruleset`), parsed, and must give the IR
//! the backend built (after [`kproxy_core::canon::canonical`]); and
//! `kproxy check` must report nothing on a freshly loaded ruleset and find
//! drift injected into it.
//!
//! Needs root (see `kernel_e2e.rs`); skips (or fails with `CI=true`) where
//! namespaces cannot be created.

#[allow(unused_imports)] // the testbed re-exports what only kernel_e2e uses
mod kernel;

use std::path::{Path, PathBuf};

use kernel::*;
use kproxy_core::canon::canonical;
use kproxy_core::diff::{EditOp, diff};
use kproxy_core::ir::Ruleset;
use kproxy_core::trace::describe_rule;

fn name(dir: &Path) -> String {
    dir.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string()
}

fn family_of(args: &[String]) -> Family {
    if args.iter().any(|a| a == "--ip-family=ipv6") {
        Family::V6
    } else {
        Family::V4
    }
}

/// The differences between two canonical rulesets, readably (empty when equal).
fn differences(want: &Ruleset, got: &Ruleset) -> String {
    let (want, got) = (canonical(want), canonical(got));
    if want == got {
        return String::new();
    }
    let d = diff(&want, &got);
    let mut out = String::new();
    for t in &d.tables {
        out.push_str(&format!(
            "table {} ({:?}): {:?}\n",
            t.table, t.family, t.status
        ));
        for c in &t.chains {
            out.push_str(&format!("  chain {}: {:?}\n", c.chain, c.status));
            for e in c.edits.iter().take(6) {
                let sign = if e.op == EditOp::Delete { "-" } else { "+" };
                out.push_str(&format!(
                    "    {sign}#{} {}\n",
                    e.index + 1,
                    describe_rule(&e.rule)
                ));
            }
        }
        for s in &t.containers {
            out.push_str(&format!(
                "  {:?} {}: {:?}, {} element changes\n",
                s.kind,
                s.name,
                s.status,
                s.elements.len()
            ));
        }
    }
    if out.is_empty() {
        // Same contents by the diff's measure: show the first difference.
        out = format!("canonical forms differ:\nwant {want:#?}\ngot {got:#?}");
        out.truncate(4000);
    }
    out
}

/// Loads `rules` into a fresh namespace with `loader` and returns the
/// parsed dump of the namespace.
fn load_and_dump(loader: Loader, family: Family, rules: &str) -> Result<Ruleset, String> {
    let nss = kernel::testbed::Namespaces::new();
    let ns = nss.create("dump")?;
    loader.load(&ns, family, rules, false)?;
    dump(loader, &ns, family)
}

/// Dumps and parses the rules of `loader`'s kind in namespace `ns`.
fn dump(loader: Loader, ns: &str, family: Family) -> Result<Ruleset, String> {
    match loader {
        Loader::Iptables => {
            let tool = match family {
                Family::V4 => "iptables-save",
                Family::V6 => "ip6tables-save",
            };
            let text = netns_exec(ns, &[tool])?;
            kproxy_iptables::parse::parse(&text, None).map_err(|e| format!("{tool}: {e}"))
        }
        Loader::NftText | Loader::NftJson | Loader::NftNetlink => {
            let text = netns_exec(ns, &["nft", "-j", "list", "ruleset"])?;
            kproxy_nft::parse::parse_json(&text)
                .map(|d| d.ruleset)
                .map_err(|e| format!("nft -j list ruleset: {e}"))
        }
    }
}

/// Every iptables golden case: compile --standalone, iptables-restore,
/// iptables-save, parse: the IR the backend built.
#[test]
fn iptables_golden_dumps_round_trip() {
    let test = "iptables_golden_dumps_round_trip";
    if !gate_loader(test, Loader::Iptables) {
        return;
    }
    let mut failures = Vec::new();
    for dir in kproxy_tests::golden_cases("iptables") {
        let name = name(&dir);
        let mut args = kproxy_tests::read_args(&dir.join("args"));
        args.push("--standalone".into());
        let family = family_of(&args);
        let input = dir.join("input.yaml");
        let result = kproxy_tests::compile(&args, &[&input])
            .and_then(|(text, _)| {
                let built = kproxy_tests::compile_ir(&args, &[&input])?;
                let built = built
                    .into_iter()
                    .next()
                    .ok_or("no ruleset compiled")?
                    .ruleset;
                Ok((text, built))
            })
            .and_then(|(text, built)| {
                let got = load_and_dump(Loader::Iptables, family, &text)?;
                Ok(differences(&built, &got))
            });
        match result {
            Ok(d) if d.is_empty() => println!("ok   {name}"),
            Ok(d) => failures.push(format!("{name}:\n{d}")),
            Err(e) if e.contains("Message too long") && !initial_user_ns() => skip(
                &format!("{test}: {name}"),
                "the batch is too large for netlink in an unprivileged user namespace",
            ),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "dumps that do not parse back to the built IR:\n{}",
        failures.join("\n")
    );
}

/// Every nftables golden case, loaded as native text and as JSON: `nft -j
/// list ruleset`, parse: the table the transaction leaves.
#[test]
fn nft_golden_dumps_round_trip() {
    let test = "nft_golden_dumps_round_trip";
    if !gate_loader(test, Loader::NftText) {
        return;
    }
    let mut failures = Vec::new();
    for dir in kproxy_tests::golden_cases("nftables") {
        let name = name(&dir);
        let args = kproxy_tests::read_args(&dir.join("args"));
        let family = family_of(&args);
        let input = dir.join("input.yaml");
        let built = match kproxy_tests::compile_ir(&args, &[&input]) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let Some(built) = built.into_iter().next().map(|f| f.ruleset) else {
            failures.push(format!("{name}: no ruleset compiled"));
            continue;
        };
        for (loader, backend) in [
            (Loader::NftText, "--backend=nftables"),
            (Loader::NftJson, "--backend=nftables-json"),
        ] {
            let mut args = args.clone();
            args.push(backend.into());
            let result = kproxy_tests::compile(&args, &[&input])
                .and_then(|(text, _)| load_and_dump(loader, family, &text))
                .map(|got| differences(&built, &got));
            match result {
                Ok(d) if d.is_empty() => println!("ok   {name} {loader:?}"),
                Ok(d) => failures.push(format!("{name} {loader:?}:\n{d}")),
                Err(e) => failures.push(format!("{name} {loader:?}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dumps that do not parse back to the built IR:\n{}",
        failures.join("\n")
    );
}

/// The seed article's LoadBalancer state, as `kproxy check` is run on it.
fn seed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-article/4-loadbalancer")
}

/// `kproxy check` on the dumps of namespace `ns` (`iptables-save` and/or
/// `nft -j list ruleset`) against the seed state.
fn check_ns(
    ns: &str,
    iptables: bool,
    nft: bool,
    backend: &str,
) -> Vec<kproxy_bin::check::FamilyCheck> {
    use clap::Parser;
    let argv = [
        "kproxy",
        "check",
        "--rules",
        "unused",
        "--backend",
        backend,
        &seed().display().to_string(),
    ]
    .map(String::from);
    let cli = kproxy_bin::cli::Cli::try_parse_from(argv).expect("arguments");
    let kproxy_bin::cli::Command::Check(args) = cli.command else {
        panic!("not check");
    };
    let mut dumps = kproxy_bin::check::Dumps::default();
    if iptables {
        let text = netns_exec(ns, &["iptables-save"]).expect("iptables-save");
        dumps.ruleset.tables.extend(
            kproxy_iptables::parse::parse(&text, None)
                .expect("parse")
                .tables,
        );
        dumps.iptables = true;
    }
    if nft {
        let text = netns_exec(ns, &["nft", "-j", "list", "ruleset"]).expect("nft");
        let d = kproxy_nft::parse::parse_json(&text).expect("parse");
        for t in d.ruleset.tables {
            let dup = dumps
                .ruleset
                .tables
                .iter()
                .any(|o| o.name == t.name && iptables);
            if !dup {
                dumps.ruleset.tables.push(t);
            }
        }
        dumps.nft = true;
    }
    let inv = kproxy_bin::compile::load(&args.paths).expect("load");
    let (_, checks, _) = kproxy_bin::check::check_dumps(&args, &dumps, &inv).expect("check");
    checks
}

fn seed_rules(backend: &str) -> String {
    let args: Vec<String> = ["--standalone", "--backend", backend]
        .map(String::from)
        .to_vec();
    kproxy_tests::compile(&args, &[&seed()]).expect("compile").0
}

fn sh(ns: &str, args: &[&str]) {
    netns_exec(ns, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

/// iptables mode: a fresh load is in sync; an extra rule, a deleted
/// endpoint chain and a leftover nftables table are drift.
#[test]
fn check_finds_iptables_drift() {
    let test = "check_finds_iptables_drift";
    if !gate_loader(test, Loader::Iptables) || !gate_loader(test, Loader::NftText) {
        return;
    }
    let rules = seed_rules("iptables");
    let nss = kernel::testbed::Namespaces::new();
    let ns = nss.create("check").expect("namespace");
    Loader::Iptables
        .load(&ns, Family::V4, &rules, false)
        .expect("load");
    let fresh = check_ns(&ns, true, false, "iptables");
    assert_eq!(fresh.len(), 1);
    assert!(
        fresh[0].report.is_clean(),
        "fresh load: {:#?}",
        fresh[0].report
    );

    // An extra rule in KUBE-SERVICES, ahead of the Service's.
    sh(
        &ns,
        &[
            "iptables",
            "-t",
            "nat",
            "-I",
            "KUBE-SERVICES",
            "1",
            "-d",
            "10.79.250.127",
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "RETURN",
        ],
    );
    let r = &check_ns(&ns, true, false, "iptables")[0].report;
    assert!(r.drift());
    assert!(r.foreign_in_path.iter().any(|f| f.chain == "KUBE-SERVICES"));
    assert!(!r.equivalence.is_equivalent());

    // The endpoint chain deleted (with the jump to it).
    Loader::Iptables
        .load(&ns, Family::V4, &rules, false)
        .expect("reload");
    sh(
        &ns,
        &[
            "iptables",
            "-t",
            "nat",
            "-D",
            "KUBE-SVC-YN5D6RYVEVZOH44Q",
            "-m",
            "comment",
            "--comment",
            "default/hostnames -> 10.76.0.9:9376",
            "-j",
            "KUBE-SEP-Z2UFIHORS27IVXDM",
        ],
    );
    sh(
        &ns,
        &["iptables", "-t", "nat", "-F", "KUBE-SEP-Z2UFIHORS27IVXDM"],
    );
    sh(
        &ns,
        &["iptables", "-t", "nat", "-X", "KUBE-SEP-Z2UFIHORS27IVXDM"],
    );
    let r = &check_ns(&ns, true, false, "iptables")[0].report;
    assert!(r.drift());
    let svc = kproxy_core::model::NamespacedName::new("default", "hostnames");
    let d = r
        .by_service
        .get(&Some(svc))
        .expect("the service's differences");
    assert!(d.tables.iter().any(|t| {
        t.chains.iter().any(|c| {
            c.chain.as_str() == "KUBE-SEP-Z2UFIHORS27IVXDM"
                && c.status == kproxy_core::diff::Status::Removed
        })
    }));
    assert!(!r.equivalence.is_equivalent());

    // A leftover of nftables mode next to the iptables rules.
    Loader::Iptables
        .load(&ns, Family::V4, &rules, false)
        .expect("reload");
    Loader::NftText
        .load(&ns, Family::V4, &seed_rules("nftables"), false)
        .expect("nft load");
    let r = &check_ns(&ns, true, true, "iptables")[0].report;
    assert!(r.drift());
    assert!(
        r.stale
            .iter()
            .any(|s| s.kind == kproxy_core::check::StaleKind::OtherMode && s.name == "kube-proxy")
    );
}

/// nftables mode: a fresh load is in sync; an extra rule and leftovers of
/// iptables mode are drift.
#[test]
fn check_finds_nft_drift() {
    let test = "check_finds_nft_drift";
    if !gate_loader(test, Loader::Iptables) || !gate_loader(test, Loader::NftText) {
        return;
    }
    let rules = seed_rules("nftables");
    let nss = kernel::testbed::Namespaces::new();
    let ns = nss.create("check").expect("namespace");
    Loader::NftText
        .load(&ns, Family::V4, &rules, false)
        .expect("load");
    let fresh = check_ns(&ns, false, true, "nftables");
    assert!(
        fresh[0].report.is_clean(),
        "fresh load: {:#?}",
        fresh[0].report
    );

    sh(
        &ns,
        &[
            "nft",
            "insert",
            "rule",
            "ip",
            "kube-proxy",
            "services",
            "ip",
            "daddr",
            "10.79.250.127",
            "drop",
        ],
    );
    let r = &check_ns(&ns, false, true, "nftables")[0].report;
    assert!(r.drift());
    assert!(r.foreign_in_path.iter().any(|f| f.chain == "services"));
    assert!(!r.equivalence.is_equivalent());

    // Leftovers of iptables mode (seen through nft: iptables-nft tables).
    Loader::NftText
        .load(&ns, Family::V4, &rules, false)
        .expect("reload");
    Loader::Iptables
        .load(&ns, Family::V4, &seed_rules("iptables"), false)
        .expect("iptables load");
    let r = &check_ns(&ns, false, true, "nftables")[0].report;
    assert!(r.drift());
    assert!(
        r.stale.iter().any(
            |s| s.kind == kproxy_core::check::StaleKind::OtherMode && s.name == "KUBE-SERVICES"
        )
    );
}
