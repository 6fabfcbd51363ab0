//! Records the commit kproxy is built from (`KPROXY_COMMIT`, for
//! `--version`): `$KPROXY_COMMIT` when set (builds without `.git`, e.g. a
//! container), else `git rev-parse --short HEAD`, else `unknown`. Never
//! fails the build.
//!
//! Reruns when HEAD moves: the worktree's `HEAD` file (a checkout), the
//! branch's ref file (a commit) and `packed-refs`, found through `git
//! rev-parse --git-path` (correct in linked worktrees, where `.git` is a
//! file). Only files that exist are watched: cargo reruns a build script on
//! every build when a watched path is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KPROXY_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = match std::env::var("KPROXY_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            let mut watched = vec![git(&dir, &["rev-parse", "--git-path", "HEAD"])];
            if let Some(r) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
                watched.push(git(&dir, &["rev-parse", "--git-path", &r]));
            }
            watched.push(git(&dir, &["rev-parse", "--git-path", "packed-refs"]));
            for p in watched.into_iter().flatten() {
                let p = dir.join(p); // --git-path may be relative to `dir`
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
            git(&dir, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=KPROXY_COMMIT={commit}");
}
