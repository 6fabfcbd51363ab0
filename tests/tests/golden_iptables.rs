//! Golden tests transcribed from upstream kube-proxy's iptables tests
//! (`tests/golden/iptables/*`): `kproxy compile` with the case's `args` on
//! its `input.yaml` must equal `expected.txt` after upstream's normalisation.

use std::path::Path;

use kproxy_tests::{
    compile, line_diff, normalise, production_mark, read_args, render_normalised, run_goldens,
};

/// Lines of upstream's expected output that come from kernel state left by
/// earlier syncs in the same test, which a first full sync cannot produce
/// (listed in the case's SOURCE.md).
fn stale_state_lines(dir: &Path) -> Vec<String> {
    let src = std::fs::read_to_string(dir.join("SOURCE.md")).unwrap_or_default();
    if !src.contains("stale-state lines") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for part in src.split('`') {
        if part.starts_with(":KUBE-") || part.starts_with("-X KUBE-") {
            out.push(part.to_string());
        }
    }
    out
}

fn run_case(dir: &Path) -> Result<(), String> {
    let args = read_args(&dir.join("args"));
    let input = dir.join("input.yaml");
    let (out, _warnings) = compile(&args, &[&input])?;
    let expected_path = dir.join("expected.txt");
    if expected_path.exists() {
        let stale = stale_state_lines(dir);
        let expected: String =
            production_mark(&std::fs::read_to_string(&expected_path).map_err(|e| e.to_string())?)
                .lines()
                .filter(|l| !stale.iter().any(|s| s == l.trim()))
                .map(|l| format!("{l}\n"))
                .collect();
        let want = render_normalised(&normalise(&expected));
        let got = render_normalised(&normalise(&out));
        if want != got {
            return Err(line_diff(&want, &got));
        }
        return Ok(());
    }
    check_assertions(dir, &out)
}

/// `expected_checks.txt`: counts and exact lines, for upstream tests that
/// assert only those (large-cluster mode).
fn check_assertions(dir: &Path, out: &str) -> Result<(), String> {
    let checks = std::fs::read_to_string(dir.join("expected_checks.txt"))
        .map_err(|e| format!("no expected.txt or expected_checks.txt: {e}"))?;
    let sep_dnat: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SEP-") && l.contains("-j DNAT"))
        .collect();
    for line in checks.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(" = ")
            .ok_or_else(|| format!("bad check line {line:?}"))?;
        if key == "count_sep_dnat_lines" {
            let n: usize = value.parse().map_err(|_| format!("bad count {value}"))?;
            if sep_dnat.len() != n {
                return Err(format!("{key}: want {n}, got {}", sep_dnat.len()));
            }
        } else if key == "count_sep_dnat_lines_with_comment" {
            let n: usize = value.parse().map_err(|_| format!("bad count {value}"))?;
            let got = sep_dnat.iter().filter(|l| l.contains("--comment")).count();
            if got != n {
                return Err(format!("{key}: want {n}, got {got}"));
            }
        } else if let Some(needle) = key.strip_prefix("sep_dnat_line_containing ") {
            let needle = format!("--to-destination {needle}:");
            let found: Vec<&&str> = sep_dnat.iter().filter(|l| l.contains(&needle)).collect();
            if found.len() != 1 || *found[0] != value {
                return Err(format!("{key}: want {value:?}, got {found:?}"));
            }
        } else {
            return Err(format!("unknown check {key:?}"));
        }
    }
    Ok(())
}

#[test]
fn upstream_iptables_goldens() {
    run_goldens("iptables", run_case);
}
