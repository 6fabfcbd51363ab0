//! Golden snapshots of the old layouts on the seed article's four states:
//! `--kube-proxy-version 1.5` (iptables, what the article's kube-proxy 1.5.2
//! wrote) and `--kube-proxy-version 1.35` (nftables before the 1.36 rework),
//! beside the current layouts that `seed_article.rs` pins. The iptables 1.5
//! output is also loaded into the kernel and read back with `iptables-save`
//! in `kernel_profiles.rs`, which checks every rule line the article quotes.

use std::path::{Path, PathBuf};

use kproxy_tests::compile;

const STATES: [&str; 4] = ["1-clusterip", "2-scaled", "3-nodeport", "4-loadbalancer"];

fn state(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed-article")
        .join(name)
}

fn run(extra: &[&str], name: &str) -> String {
    let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let (stdout, _warnings) =
        compile(&args, &[&state(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
    stdout
}

#[test]
fn iptables_1_5_seed_states() {
    for name in STATES {
        let out = run(&["--kube-proxy-version=1.5"], name);
        // The 1.5 spelling of the unnamed port keeps the colon, which gives
        // the article's chain names back.
        assert!(out.contains("KUBE-SVC-NWV5X2332I4OT4T3"), "{name}");
        insta::assert_snapshot!(format!("iptables_1_5_{name}"), out);
    }
}

#[test]
fn nftables_pre_1_36_seed_states() {
    for name in STATES {
        let out = run(&["--kube-proxy-version=1.35", "--backend=nftables"], name);
        assert!(out.contains("mark-for-masquerade"), "{name}");
        insta::assert_snapshot!(format!("nftables_1_35_{name}"), out);
    }
}
