//! Golden tests transcribed from upstream kube-proxy's nftables tests
//! (`tests/golden/nftables/*`): `kproxy compile` with the case's `args` on
//! its `input.yaml` prints a transaction; replayed as knftables' fake does,
//! its state must equal `expected.txt` after upstream's normalisation
//! (`sortNFTablesTransaction`).

use std::path::Path;

use kproxy_tests::nft::{replay, sort_transaction};
use kproxy_tests::{compile, line_diff, production_mark, read_args, run_goldens};

fn run_case(dir: &Path) -> Result<(), String> {
    let args = read_args(&dir.join("args"));
    let input = dir.join("input.yaml");
    let (out, _warnings) = compile(&args, &[&input])?;
    let expected = std::fs::read_to_string(dir.join("expected.txt")).map_err(|e| e.to_string())?;
    let want = sort_transaction(&production_mark(&expected));
    let got = sort_transaction(&replay(&out)?);
    if want != got {
        return Err(line_diff(&want, &got));
    }
    Ok(())
}

#[test]
fn upstream_nftables_goldens() {
    run_goldens("nftables", run_case);
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
