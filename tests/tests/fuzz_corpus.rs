//! Replays the fuzz corpora on stable: every file of `fuzz/corpus/<target>/`
//! (the minimised corpus of each `cargo fuzz` target) and of
//! `fuzz/regressions/<target>/` (the inputs that once crashed a harness)
//! through the target's harness in `kproxy-fuzz`. A harness panics when an
//! invariant breaks; any panic fails the test, naming the file.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Replays on a thread with a large stack: a debug build's frames are
/// several times a release build's, and the corpora hold documents nested
/// up to the readers' depth limits (which the release build reads within a
/// 2 MiB thread stack).
fn replay(name: &'static str) {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 << 20)
        .spawn(move || replay_here(name))
        .expect("a replay thread")
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

fn replay_here(name: &str) {
    let target = kproxy_fuzz::target(name).expect("a fuzz target of kproxy-fuzz");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = files(&root.join("corpus").join(name));
    assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ is empty");
    let regressions = files(&root.join("regressions").join(name));
    let mut failures = Vec::new();
    for f in corpus.iter().chain(&regressions) {
        let data = std::fs::read(f).expect("a readable corpus file");
        let start = std::time::Instant::now();
        if catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
            failures.push(f.display().to_string());
        }
        let took = start.elapsed();
        if took > std::time::Duration::from_millis(500) {
            eprintln!("{}: {took:.1?}", f.display());
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: the harness panicked on {failures:#?}"
    );
}

#[test]
fn every_target_has_a_replay() {
    let replayed = [
        "manifest",
        "proxy_config",
        "iptables_save",
        "nft_json",
        "scalars",
        "trace_check",
    ];
    let names: Vec<&str> = kproxy_fuzz::TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(names, replayed);
}

#[test]
fn manifest_corpus() {
    replay("manifest");
}

#[test]
fn proxy_config_corpus() {
    replay("proxy_config");
}

#[test]
fn iptables_save_corpus() {
    replay("iptables_save");
}

#[test]
fn nft_json_corpus() {
    replay("nft_json");
}

#[test]
fn scalars_corpus() {
    replay("scalars");
}

#[test]
fn trace_check_corpus() {
    replay("trace_check");
}
