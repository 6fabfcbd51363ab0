//! `kproxy compile` and `kproxy diff` at a real node's scale, in-process:
//! `cargo bench -p kproxy-bin --bench scale`. The input is the synthetic
//! cluster's JSON List ([`kproxy_core::synthetic::manifests`], 1k and 10k
//! Services x 10 endpoints: 2 and 21 MB) for node `node-3`.
//!
//! * `parse/N`: the List into objects and the inventory (what `load` does
//!   after reading the file);
//! * `compile/BACKEND/N`: plan, layout and print of a loaded inventory;
//! * `diff/N`: two loaded states (the second with 10 Services more) compiled
//!   and compared, the text report printed.
//!
//! The allocator is the `kproxy` binary's (mimalloc, with the default
//! `mimalloc` feature), set up as the one-shot commands set it up
//! ([`kproxy_bin::memory::keep_freed_memory`]), so the figures are those of
//! the binary's code.
//! Whole-process figures (with reading the file) are measured on the
//! release binary: see the README.

use std::hint::black_box;

use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use kproxy_bin::cli::{Cli, Command};
use kproxy_bin::compile::CompileArgs;
use kproxy_bin::diff::DiffArgs;
use kproxy_core::convert::{Inventory, inventory, parse_documents};
use kproxy_core::synthetic::manifests;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODE_ARGS: &[&str] = &[
    "--hostname-override",
    "node-3",
    "--cluster-cidr",
    "10.0.0.0/8",
];

fn load(text: &str) -> Inventory {
    let objects = parse_documents(text, "list.json").expect("parses");
    inventory(objects.into_iter().map(|o| ("list.json".to_string(), o)))
}

fn command(args: &[&str]) -> Command {
    let argv: Vec<&str> = ["kproxy"]
        .iter()
        .chain(args)
        .chain(NODE_ARGS)
        .copied()
        .collect();
    Cli::try_parse_from(argv).expect("arguments").command
}

fn compile_args(backend: &str) -> CompileArgs {
    match command(&["compile", "--backend", backend, "unused"]) {
        Command::Compile(c) => c,
        _ => unreachable!("a compile command"),
    }
}

fn diff_args() -> DiffArgs {
    match command(&[
        "diff",
        "--backend",
        "iptables",
        "--before",
        "-",
        "--after",
        "-",
    ]) {
        Command::Diff(d) => d,
        _ => unreachable!("a diff command"),
    }
}

fn scale(c: &mut Criterion) {
    kproxy_bin::memory::keep_freed_memory();
    for (label, services) in [("1k", 1000), ("10k", 10_000)] {
        let text = manifests(services, 10);
        let inv = load(&text);
        let mut g = c.benchmark_group("scale");
        g.sample_size(10);
        g.bench_function(format!("parse/{label}"), |b| {
            b.iter(|| load(black_box(&text)))
        });
        for backend in ["iptables", "nftables", "nftables-json"] {
            let args = compile_args(backend);
            g.bench_function(format!("compile/{backend}/{label}"), |b| {
                b.iter(|| kproxy_bin::compile::compile(&args, black_box(&inv)).expect("compiles"))
            });
        }
        let after = load(&manifests(services + 10, 10));
        let args = diff_args();
        g.bench_function(format!("diff/{label}"), |b| {
            b.iter(|| kproxy_bin::diff::diff_states(&args, &inv, black_box(&after)).expect("diff"))
        });
        g.finish();
    }
}

criterion_group!(benches, scale);
criterion_main!(benches);
