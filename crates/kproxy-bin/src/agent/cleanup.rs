//! `kproxy cleanup`: removes what kproxy, or kube-proxy in iptables or
//! nftables mode, created on the node, and nothing else: kube-proxy's own
//! iptables chains in the layout of any release kproxy knows (their exact
//! names and the per-service prefixes, [`owned_chains`] and
//! [`kproxy_core::owners::IPTABLES_SERVICE_PREFIXES`]), the rules of the
//! built-in chains that jump to them, the canaries, and the nftables
//! `kube-proxy` tables. Other rules in the built-in chains, other chains and
//! other tables stay.
//!
//! References go before chains: per table, the jumps from the built-in
//! chains are deleted, then every kube-proxy chain flushed, then deleted; a
//! chain that a foreign chain still jumps to is kept (flushed, reported),
//! and never stops the others from going.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::Result;
use clap::Args;
use kproxy_core::model::{ClusterState, IpFamily, NodeConfig};
use kproxy_core::owners::is_iptables_service_chain;
use kproxy_core::plan::plan_release;
use kproxy_core::profile::IptablesProfile;

use super::exec;
use crate::compile::Output;
use kproxy_iptables::sync::CANARY;

/// Arguments of `kproxy cleanup`.
#[derive(Args, Debug, Clone)]
pub struct CleanupArgs {
    /// What to remove: iptables, nftables or all.
    #[arg(
        help_heading = "Output",
        long,
        value_name = "MODE",
        default_value = "all"
    )]
    pub mode: String,
}

/// Every iptables release layout kproxy knows.
const PROFILES: [IptablesProfile; 2] = [IptablesProfile::Current, IptablesProfile::V1_5];

/// kube-proxy's own iptables chains of `table` besides the per-service ones
/// (see [`is_iptables_service_chain`]), in any release kproxy knows: the
/// chains each release's layout declares (without the kubelet's, such as
/// `KUBE-MARK-DROP`), and the canary.
pub fn owned_chains(table: &str) -> BTreeSet<String> {
    let mut node = NodeConfig::new(IpFamily::V4, "");
    node.localhost_node_ports = true;
    let mut out: BTreeSet<String> = BTreeSet::new();
    for profile in PROFILES {
        let plan = plan_release(&ClusterState::default(), &node, profile.release());
        let rs = kproxy_iptables::build(
            &plan,
            kproxy_iptables::LayoutOptions {
                standalone: false,
                profile,
            },
        );
        out.extend(
            rs.table(table)
                .into_iter()
                .flat_map(|t| &t.chains)
                .map(|c| c.name.to_string()),
        );
    }
    if ["filter", "nat", "mangle"].contains(&table) {
        out.insert(CANARY.to_string());
    }
    out
}

/// The built-in chains (rules there are never kube-proxy's chains).
const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// How to remove kube-proxy's objects from one table, read from its
/// `iptables-save -t TABLE` text: each a separate `iptables-restore
/// --noflush` input, applied in order, so that a failure of one step (a
/// chain someone else still references) does not undo the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCleanup {
    /// Deletes the jumps from the built-in chains to kube-proxy's chains
    /// (any release's: every such rule), by rule.
    pub unlink: String,
    /// Flushes every kube-proxy chain (no reference between them is left).
    pub flush: String,
    /// Deletes the kube-proxy chains no other chain references.
    pub delete: String,
    /// The chains to delete (one by one when [`Self::delete`] fails).
    pub chains: Vec<String>,
    /// kube-proxy chains kept (flushed) because a foreign chain's rule
    /// jumps to them: (chain, that rule).
    pub kept: Vec<(String, String)>,
}

/// The target of an `iptables-save` rule line (`-j`/`-g`).
fn rule_target(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" || w == "-g" || w == "--jump" || w == "--goto" {
            return words.next();
        }
    }
    None
}

/// The cleanup of `table` given its `iptables-save -t TABLE` text (pure).
pub fn iptables_table_cleanup(table: &str, save: &str) -> TableCleanup {
    let owned = owned_chains(table);
    let ours = |c: &str| owned.contains(c) || (table == "nat" && is_iptables_service_chain(c));
    let chains: Vec<&str> = save
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| ours(c))
        .collect();
    let mut out = TableCleanup::default();
    if chains.is_empty() {
        return out;
    }
    let mut unlink = Vec::new();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for line in save.lines() {
        let Some(rest) = line.strip_prefix("-A ") else {
            continue;
        };
        let Some((chain, spec)) = rest.split_once(' ') else {
            continue;
        };
        let Some(target) = rule_target(spec).filter(|t| ours(t)) else {
            continue;
        };
        if ours(chain) {
            continue;
        }
        if BUILTIN.contains(&chain) {
            unlink.push(format!("-D {chain} {spec}"));
        } else {
            kept.insert(target);
            out.kept.push((target.to_string(), line.to_string()));
        }
    }
    let section = |lines: &mut dyn Iterator<Item = String>| {
        let mut s = format!("*{table}\n");
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
        s.push_str("COMMIT\n");
        s
    };
    if !unlink.is_empty() {
        out.unlink = section(&mut unlink.into_iter());
    }
    out.flush = section(&mut chains.iter().map(|c| format!(":{c} - [0:0]")));
    out.chains = chains
        .iter()
        .filter(|c| !kept.contains(*c))
        .map(|c| c.to_string())
        .collect();
    if !out.chains.is_empty() {
        out.delete = section(&mut out.chains.iter().map(|c| format!("-X {c}")));
    }
    out
}

fn cleanup_iptables(family: IpFamily, notes: &mut Vec<String>) -> Result<()> {
    let (iptables, save, restore) = match family {
        IpFamily::V4 => ("iptables", "iptables-save", "iptables-restore"),
        IpFamily::V6 => ("ip6tables", "ip6tables-save", "ip6tables-restore"),
    };
    if exec::run(save, &["-t", "filter"], None).is_err() {
        notes.push(format!(
            "{save} is not usable here: {family} iptables rules left alone"
        ));
        return Ok(());
    }
    let mut failed = Vec::new();
    for table in ["filter", "nat", "mangle"] {
        let Ok(text) = exec::run(save, &["-t", table], None) else {
            continue;
        };
        let plan = iptables_table_cleanup(table, &text);
        let restore_input = |input: &str| {
            if input.is_empty() {
                return Ok(());
            }
            exec::run(restore, &["--noflush", "-w", "5"], Some(input)).map(|_| ())
        };
        if let Err(e) = restore_input(&plan.unlink) {
            failed.push(format!(
                "{family} {table}: unlinking kube-proxy's chains: {e}"
            ));
        }
        if let Err(e) = restore_input(&plan.flush) {
            failed.push(format!(
                "{family} {table}: flushing kube-proxy's chains: {e}"
            ));
            continue;
        }
        if restore_input(&plan.delete).is_err() {
            // One chain still referenced must not keep the others.
            for c in &plan.chains {
                if let Err(e) = exec::run(iptables, &["-w", "5", "-t", table, "-X", c], None) {
                    failed.push(format!("{family} {table}: chain {c} kept: {e}"));
                }
            }
        }
        for (chain, rule) in &plan.kept {
            notes.push(format!(
                "{family} {table}: chain {chain} flushed but kept: another chain jumps to it ({rule})"
            ));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// The nft transaction that deletes kube-proxy's table of every family
/// (added first, so that a missing table is no error).
fn nft_cleanup_transaction() -> Result<String> {
    let mut text = String::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let mut tx = kproxy_nft::Transaction::new(family, kproxy_nft::names::TABLE);
        tx.push(kproxy_nft::Op::AddTable { comment: None });
        tx.push(kproxy_nft::Op::DeleteTable);
        text.push_str(&kproxy_nft::print::print(&tx, Default::default())?);
    }
    Ok(text)
}

fn cleanup_nft(notes: &mut Vec<String>) -> Result<()> {
    let tx = nft_cleanup_transaction()?;
    if let Err(e) = exec::run("nft", &["-f", "-"], Some(&tx)) {
        notes.push(format!("nftables left alone: {e}"));
    }
    Ok(())
}

/// Runs `kproxy cleanup`.
pub fn run(args: &CleanupArgs) -> Result<Output> {
    let mut out = Output::default();
    let (ipt, nft) = match args.mode.as_str() {
        "iptables" => (true, false),
        "nftables" => (false, true),
        "all" => (true, true),
        other => anyhow::bail!("--mode: {other:?} is not iptables, nftables or all"),
    };
    if ipt {
        for f in [IpFamily::V4, IpFamily::V6] {
            cleanup_iptables(f, &mut out.warnings)?;
        }
    }
    if nft {
        cleanup_nft(&mut out.warnings)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_cleanup_deletes_both_families_tables() {
        assert_eq!(
            nft_cleanup_transaction().expect("print"),
            "add table ip kube-proxy\ndelete table ip kube-proxy\n\
             add table ip6 kube-proxy\ndelete table ip6 kube-proxy\n"
        );
    }

    #[test]
    fn owned_chains_of_every_release() {
        let nat = owned_chains("nat");
        for c in [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
            CANARY,
        ] {
            assert!(nat.contains(c), "{c}");
        }
        assert!(!nat.contains("KUBE-MARK-DROP"), "the kubelet's");
        let filter = owned_chains("filter");
        for c in [
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
            "KUBE-FIREWALL",
            CANARY,
        ] {
            assert!(filter.contains(c), "{c}");
        }
        assert_eq!(owned_chains("mangle"), BTreeSet::from([CANARY.to_string()]));
    }

    /// kube-proxy 1.5's rules (a filter `OUTPUT` jump without conntrack,
    /// `KUBE-XLB-*`) beside foreign ones: every jump from a built-in chain
    /// goes, chains are flushed before they are deleted, a chain a foreign
    /// chain jumps to is kept.
    #[test]
    fn only_kube_proxy_chains() {
        let nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
            :KUBE-SERVICES - [0:0]\n:KUBE-SVC-ABC - [0:0]\n:KUBE-XLB-ABC - [0:0]\n\
            :KUBE-SEP-DEF - [0:0]\n:KUBE-MARK-DROP - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n\
            :MY-CHAIN - [0:0]\n\
            -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
            -A PREROUTING -j MY-CHAIN\n\
            -A KUBE-SERVICES -d 10.0.0.1/32 -j KUBE-SVC-ABC\n\
            -A KUBE-XLB-ABC -j KUBE-SVC-ABC\n\
            -A KUBE-XLB-ABC -j KUBE-MARK-DROP\n\
            -A KUBE-SVC-ABC -j KUBE-SEP-DEF\n\
            -A MY-CHAIN -j KUBE-SEP-DEF\nCOMMIT\n";
        let c = iptables_table_cleanup("nat", nat);
        assert_eq!(
            c.unlink,
            "*nat\n-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n"
        );
        assert_eq!(
            c.flush,
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-ABC - [0:0]\n:KUBE-XLB-ABC - [0:0]\n\
             :KUBE-SEP-DEF - [0:0]\nCOMMIT\n"
        );
        assert_eq!(
            c.delete,
            "*nat\n-X KUBE-SERVICES\n-X KUBE-SVC-ABC\n-X KUBE-XLB-ABC\nCOMMIT\n"
        );
        assert_eq!(c.kept.len(), 1);
        assert_eq!(c.kept[0].0, "KUBE-SEP-DEF");
        let filter = "*filter\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n\
            -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
            -A OUTPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
        let c = iptables_table_cleanup("filter", filter);
        assert!(c.unlink.contains("-D OUTPUT -m comment"), "{}", c.unlink);
        assert!(!c.unlink.contains("22"));
        assert_eq!(c.chains, ["KUBE-SERVICES"]);
        assert_eq!(
            iptables_table_cleanup("filter", "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"),
            TableCleanup::default()
        );
    }
}
