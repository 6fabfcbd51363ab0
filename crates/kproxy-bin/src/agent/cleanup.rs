//! `kproxy cleanup`: removes what kproxy, or kube-proxy in iptables or
//! nftables mode, created on the node, and nothing else: the jumps from the
//! built-in chains, kube-proxy's own iptables chains (by their exact names
//! and the per-service prefixes), the canaries, and the nftables `kube-proxy`
//! tables. Other rules in the built-in chains, other chains and other
//! tables stay.

use std::fmt::Write as _;

use anyhow::Result;
use clap::Args;
use kproxy_core::model::{ClusterState, IpFamily, NodeConfig};
use kproxy_core::plan::plan;

use super::apply::{CANARY, EnsureRule, SERVICE_CHAIN_PREFIXES, iptables_full};
use super::exec::{self, saved_chains};
use crate::compile::Output;

/// Arguments of `kproxy cleanup`.
#[derive(Args, Debug, Clone)]
pub struct CleanupArgs {
    /// What to remove: iptables, nftables or all.
    #[arg(long, value_name = "MODE", default_value = "all")]
    pub mode: String,
}

/// kube-proxy's iptables chains by table (besides the per-service ones).
pub fn owned_chains(table: &str) -> &'static [&'static str] {
    match table {
        "nat" => &[
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
            CANARY,
        ],
        "filter" => &[
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
            "KUBE-FIREWALL",
            CANARY,
        ],
        "mangle" => &[CANARY],
        _ => &[],
    }
}

/// The jumps from the built-in chains kube-proxy ensures, for `family`.
pub fn builtin_jumps(family: IpFamily) -> Vec<EnsureRule> {
    let node = NodeConfig::new(family, "");
    let rs = kproxy_iptables::build(
        &plan(&ClusterState::default(), &node),
        kproxy_iptables::LayoutOptions {
            standalone: true,
            ..Default::default()
        },
    );
    iptables_full(&rs, &[], kproxy_iptables::PrintOptions::default())
        .map(|s| s.ensure)
        .unwrap_or_default()
}

/// The `iptables-restore --noflush` input that flushes and deletes the
/// chains of `table` that are kube-proxy's, given the chain names the node
/// has (from `iptables-save -t TABLE`); empty when there are none.
pub fn iptables_cleanup_payload(table: &str, existing: &[String]) -> String {
    let ours: Vec<&String> = existing
        .iter()
        .filter(|c| {
            owned_chains(table).contains(&c.as_str())
                || (table == "nat" && SERVICE_CHAIN_PREFIXES.iter().any(|p| c.starts_with(p)))
        })
        .collect();
    if ours.is_empty() {
        return String::new();
    }
    let mut out = format!("*{table}\n");
    for c in &ours {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for c in &ours {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
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
    for j in builtin_jumps(family) {
        let mut args = vec!["-w", "5", "-t", j.table.as_str(), "-D", j.chain.as_str()];
        args.extend(j.args.iter().map(String::as_str));
        // Delete every copy.
        for _ in 0..16 {
            if exec::run(iptables, &args, None).is_err() {
                break;
            }
        }
    }
    let mut payload = String::new();
    for table in ["filter", "nat", "mangle"] {
        let Ok(text) = exec::run(save, &["-t", table], None) else {
            continue;
        };
        payload.push_str(&iptables_cleanup_payload(table, &saved_chains(&text)));
    }
    if !payload.is_empty() {
        exec::run(restore, &["--noflush", "-w", "5"], Some(&payload))?;
    }
    Ok(())
}

fn cleanup_nft(notes: &mut Vec<String>) -> Result<()> {
    let tx = "add table ip kube-proxy\ndelete table ip kube-proxy\n\
              add table ip6 kube-proxy\ndelete table ip6 kube-proxy\n";
    if let Err(e) = exec::run("nft", &["-f", "-"], Some(tx)) {
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
    fn only_kube_proxy_chains() {
        let existing: Vec<String> = [
            "PREROUTING",
            "KUBE-SERVICES",
            "KUBE-SVC-ABC",
            "KUBE-SEP-DEF",
            "KUBE-MARK-DROP",
            "KUBE-KUBELET-CANARY",
            "MY-CHAIN",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = iptables_cleanup_payload("nat", &existing);
        assert_eq!(
            p,
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-ABC - [0:0]\n:KUBE-SEP-DEF - [0:0]\n\
             -X KUBE-SERVICES\n-X KUBE-SVC-ABC\n-X KUBE-SEP-DEF\nCOMMIT\n"
        );
        assert!(iptables_cleanup_payload("filter", &existing[..1]).is_empty());
        assert_eq!(builtin_jumps(IpFamily::V4).len(), 14);
    }
}
