//! Golden tests transcribed from upstream kube-proxy's nftables tests
//! (`tests/golden/nftables/*`): `kproxy compile` with the case's `args` on
//! its `input.yaml` prints a transaction; replayed as knftables' fake does,
//! its state must equal `expected.txt` after upstream's normalisation
//! (`sortNFTablesTransaction`).

use std::path::{Path, PathBuf};

use kproxy_tests::nft::{replay, sort_transaction};
use kproxy_tests::{compile, production_mark, read_args};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/nftables");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn run_case(dir: &Path) -> Result<(), String> {
    let args = read_args(&dir.join("args"));
    let input = dir.join("input.yaml");
    let (out, _warnings) = compile(&args, &[&input])?;
    let expected = std::fs::read_to_string(dir.join("expected.txt")).map_err(|e| e.to_string())?;
    let want = sort_transaction(&production_mark(&expected));
    let got = sort_transaction(&replay(&out)?);
    if want != got {
        return Err(diff(&want, &got));
    }
    Ok(())
}

fn diff(want: &str, got: &str) -> String {
    let mut out = String::from("--- expected (normalised)\n+++ kproxy (normalised)\n");
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    for l in &w {
        if !g.contains(l) {
            out.push_str(&format!("-{l}\n"));
        }
    }
    for l in &g {
        if !w.contains(l) {
            out.push_str(&format!("+{l}\n"));
        }
    }
    if out.lines().count() == 2 {
        out.push_str("(same lines, different order)\n");
        out.push_str(got);
    }
    out
}

#[test]
fn upstream_nftables_goldens() {
    let cases = cases();
    assert!(cases.len() >= 3, "golden cases missing");
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        match run_case(dir) {
            Ok(()) => println!("ok   {name}"),
            Err(e) => {
                println!("FAIL {name}\n{e}");
                failures.push(name);
            }
        }
    }
    assert!(failures.is_empty(), "failed golden cases: {failures:?}");
}

/// The same inputs through `--backend nftables` instead of `--proxy-mode`.
#[test]
fn backend_flag_selects_nftables() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/nftables/test_bad_ips");
    let mut args: Vec<String> = read_args(&dir.join("args"))
        .into_iter()
        .filter(|a| !a.starts_with("--proxy-mode"))
        .collect();
    let input = dir.join("input.yaml");
    let (iptables, _) = compile(&args, &[&input]).expect("iptables");
    assert!(iptables.starts_with("*filter"));
    args.push("--backend=nftables".into());
    let (nft, _) = compile(&args, &[&input]).expect("nftables");
    let (with_mode, _) = compile(&read_args(&dir.join("args")), &[&input]).expect("mode");
    assert_eq!(nft, with_mode);
}
