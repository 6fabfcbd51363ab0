//! First nftables sync of a cluster: `nft -f` of kproxy's transaction
//! against the same transaction sent as one netlink batch
//! ([`kproxy_bin::agent::netlink`]), each into a fresh network namespace
//! (not a test; needs root, `ip` and `nft`).
//!
//! ```sh
//! python3 scripts/gen-manifests.py /tmp/m10k 10000
//! cargo run --release -p kproxy-tests --example netlink_first_sync -- /tmp/m10k
//! ```
//!
//! Prints the encode time, the netlink apply time and the `nft -f` time.

use std::process::Command;
use std::time::Instant;

use clap::Parser;
use kproxy_bin::cli::{Cli, Command as Sub};

fn ns(name: &str, add: bool) {
    let verb = if add { "add" } else { "del" };
    let ok = Command::new("ip")
        .args(["netns", verb, name])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok || !add, "ip netns {verb} {name}");
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/m10k".into());
    let argv = [
        "kproxy",
        "compile",
        "--proxy-mode=nftables",
        "--hostname-override=node-3",
        "--ip-family=ipv4",
        "--cluster-cidr=10.0.0.0/8",
        "--detect-local-mode=ClusterCIDR",
        dir.as_str(),
    ];
    let cli = Cli::try_parse_from(argv).expect("arguments");
    let Sub::Compile(c) = cli.command else {
        unreachable!()
    };
    let inv = kproxy_bin::compile::load(&c.paths).expect("load");
    let txs = kproxy_bin::compile::nft_transactions(&c, &inv).expect("transactions");
    let opts = txs[0].1;
    let only: Vec<_> = txs.iter().map(|(t, _)| t.clone()).collect();
    let text: String = txs
        .iter()
        .map(|(t, o)| kproxy_nft::print::print(t, *o).expect("print"))
        .collect();
    let ops: usize = only.iter().map(|t| t.ops.len()).sum();
    let t = Instant::now();
    let mut enc = kproxy_nft::netlink::Encoder::new(opts.single_dnat);
    let msgs: usize = only
        .iter()
        .map(|tx| enc.encode(tx).expect("encode").messages.len())
        .sum();
    println!("{ops} commands, {msgs} messages: encode {:?}", t.elapsed());

    let a = format!("kproxy-nlbench-{}-a", std::process::id());
    ns(&a, true);
    let file = std::env::temp_dir().join(format!("{a}.nft"));
    std::fs::write(&file, &text).expect("write");
    let t = Instant::now();
    let ok = Command::new("ip")
        .args(["netns", "exec", &a, "nft", "-f"])
        .arg(&file)
        .status()
        .is_ok_and(|s| s.success());
    println!("nft -f: {:?} (ok: {ok})", t.elapsed());
    let _ = std::fs::remove_file(&file);
    ns(&a, false);

    let b = format!("kproxy-nlbench-{}-b", std::process::id());
    ns(&b, true);
    let path = format!("/var/run/netns/{b}");
    let took = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).expect("netns");
        // SAFETY: setns on this thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let t = Instant::now();
        let r = kproxy_bin::agent::netlink::apply(&only, opts);
        (t.elapsed(), r.map_err(|e| e.to_string()))
    })
    .join()
    .expect("thread");
    println!(
        "netlink (encode + batch + kernel): {:?} ({:?})",
        took.0, took.1
    );
    ns(&b, false);
}
