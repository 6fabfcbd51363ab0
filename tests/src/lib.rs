//! Shared helpers of kproxy's cross-crate tests: running `kproxy compile`
//! in-process and normalising iptables-restore text the way the upstream
//! kube-proxy tests do before comparing.

pub mod known_differences;
pub mod nft;

use std::collections::BTreeMap;
use std::path::Path;

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};

/// Runs `kproxy compile ARGS... PATHS...` in-process; returns stdout and warnings.
pub fn compile(args: &[String], paths: &[&Path]) -> Result<(String, Vec<String>), String> {
    let mut argv: Vec<String> = vec!["kproxy".into(), "compile".into()];
    argv.extend(args.iter().cloned());
    argv.extend(paths.iter().map(|p| p.display().to_string()));
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let Command::Compile(c) = cli.command else {
        return Err("not a compile command".into());
    };
    kproxy_bin::compile::run(&c)
        .map(|o| (o.stdout, o.warnings))
        .map_err(|e| format!("{e:#}"))
}

/// Reads an `args` file: one argument per line, `#` comments and blank lines skipped.
pub fn read_args(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// One table of an iptables-restore text, normalised: chain declarations as
/// a sorted set, rules grouped per chain (order within a chain kept), `-X`
/// lines as a sorted set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NormTable {
    /// Declared chains.
    pub chains: Vec<String>,
    /// Rules per chain.
    pub rules: BTreeMap<String, Vec<String>>,
    /// Deleted chains.
    pub deletes: Vec<String>,
}

/// Normalises iptables-restore text as upstream's test helper does: the
/// order of chains does not matter, the order of rules within a chain does.
pub fn normalise(text: &str) -> BTreeMap<String, NormTable> {
    let mut tables: BTreeMap<String, NormTable> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            current = t.to_string();
            tables.entry(current.clone()).or_default();
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or("").to_string();
            tables.entry(current.clone()).or_default().chains.push(name);
        } else if let Some(x) = line.strip_prefix("-X ") {
            tables
                .entry(current.clone())
                .or_default()
                .deletes
                .push(x.trim().to_string());
        } else {
            let chain = line
                .strip_prefix("-A ")
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            tables
                .entry(current.clone())
                .or_default()
                .rules
                .entry(chain)
                .or_default()
                .push(line.to_string());
        }
    }
    for t in tables.values_mut() {
        t.chains.sort();
        t.deletes.sort();
    }
    tables
}

/// Prints a normalised ruleset back as text (for readable diffs).
pub fn render_normalised(tables: &BTreeMap<String, NormTable>) -> String {
    let mut out = String::new();
    for (name, t) in tables {
        out.push_str(&format!("*{name}\n"));
        for c in &t.chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for rules in t.rules.values() {
            for r in rules {
                out.push_str(r);
                out.push('\n');
            }
        }
        for x in &t.deletes {
            out.push_str(&format!("-X {x}\n"));
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Replaces the upstream test fake's mark spelling (`0x4000`) with the
/// production one (`0x00004000`) kproxy prints.
pub fn production_mark(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("0x4000") {
        let after = &rest[i + 6..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_hexdigit()) {
            out.push_str("0x4000");
        } else {
            out.push_str("0x00004000");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The IR rulesets `kproxy compile ARGS... PATHS...` would print (one per
/// family, primary first), as the backend builds them: iptables with the
/// built-in chains when `--standalone` is among `args`, nftables as the
/// table its transaction leaves.
pub fn compile_ir(
    args: &[String],
    paths: &[&Path],
) -> Result<Vec<kproxy_bin::compile::FamilyRules>, String> {
    let mut argv: Vec<String> = vec!["kproxy".into(), "compile".into()];
    argv.extend(args.iter().cloned());
    argv.extend(paths.iter().map(|p| p.display().to_string()));
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let Command::Compile(c) = cli.command else {
        return Err("not a compile command".into());
    };
    let inv = kproxy_bin::compile::load(&c.paths).map_err(|e| format!("{e:#}"))?;
    kproxy_bin::compile::ir_rulesets(&c.node, c.backend.as_deref(), c.standalone, &inv)
        .map(|(_, families, _)| families)
        .map_err(|e| format!("{e:#}"))
}
