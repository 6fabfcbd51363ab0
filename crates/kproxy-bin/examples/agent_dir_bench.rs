//! End-to-end benchmark of `kproxy run --source dir:` (not a test; needs
//! root): from a changed manifest file to the rules applied, as the agent
//! does it, timed by phase.
//!
//! ```sh
//! cargo run --release -p kproxy-bin --example agent_dir_bench -- DIR [iptables|nftables]
//! ```
//!
//! DIR holds manifests (Services, EndpointSlices), files named
//! `part000.yaml`, `part001.yaml`, ... each with Services `svc<N>` in
//! namespaces `ns<N % 50>` (the layout the README's generator writes).
//! In a throwaway network namespace: the first (full) sync, then rounds
//! that each append one EndpointSlice (one more endpoint for one Service)
//! to one file and time: the directory poll (stat, parse the changed file,
//! re-convert the Services it touches), the incremental compile (hinted
//! plan-cache update, layout of the changed Service), and the sync
//! (payload and tool). The first iptables load uses plain
//! `iptables-restore` into the empty namespace; with
//! `KPROXY_BENCH_AGENT_FIRST=1` it is the agent's own full sync
//! (`--noflush`, in parts on a fresh node).

use std::io::Write as _;
use std::time::{Duration, Instant};

#[path = "bench/mod.rs"]
mod bench;
use bench::ms;

use kproxy_bin::agent::incremental::Compiler;
use kproxy_bin::agent::metrics::Metrics;
use kproxy_bin::agent::source::DirSource;
use kproxy_bin::agent::sync::Proxier;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: agent_dir_bench DIR [iptables|nftables]");
        std::process::exit(2);
    };
    let (mode, targets) = bench::target(args.get(2).map(String::as_str));

    let _netns = bench::Netns::enter(&format!("kproxy-dirbench-{}", std::process::id()));

    let metrics = Metrics::new(mode, Duration::from_secs(60));
    let mut proxier = Proxier::new(mode);
    let mut compiler = Compiler::new();
    let mut source = DirSource::new(dir);
    let t = Instant::now();
    let changes = settle(&mut source);
    // The first compile is full: what changed so far is not needed.
    source.take_changed();
    let poll = t.elapsed();
    assert!(changes.errors.is_empty(), "{:?}", changes.errors);
    let (compile, load) = bench::first_sync(
        mode,
        &mut compiler,
        &mut proxier,
        &source.inventory().state,
        &targets,
        &metrics,
    );
    println!(
        "{}: {} Services: first poll {} (parse + convert), compile {}, load {}",
        mode.name(),
        source.inventory().state.services.len(),
        ms(poll),
        ms(compile),
        ms(load)
    );

    let parts = (source.inventory().state.services.len() as u32)
        .div_ceil(100)
        .max(1);
    for round in 0..8u32 {
        let part = round * 7 % parts;
        let file = format!("{dir}/part{part:03}.yaml");
        let svc = part * 100;
        let ns_name = format!("ns{}", svc % 50);
        let doc = format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc{svc}-extra{round}, namespace: {ns_name}, \
             labels: {{kubernetes.io/service-name: svc{svc}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n\
             endpoints: [{{addresses: [10.250.0.{}], conditions: {{ready: true}}, nodeName: node-1}}]\n",
            round + 1
        );
        let t0 = Instant::now();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(doc.as_bytes()))
            .expect("append");
        let t = Instant::now();
        let changes = settle(&mut source);
        let hint = source.take_changed();
        let poll = t.elapsed();
        assert_eq!(changes.files.len(), 1);
        let (compile, r, partial) = bench::sync_changed(
            &mut compiler,
            &mut proxier,
            &source.inventory().state,
            &targets,
            hint.as_ref(),
            &metrics,
        );
        assert!(partial, "not partial");
        println!(
            "{}: one Service changed (file {file}): end to end {} = poll {} + compile {} + sync {} (hint: {:?})",
            mode.name(),
            ms(t0.elapsed()),
            ms(poll),
            ms(compile),
            ms(r.duration),
            hint.map(|h| h.len()),
        );
    }
    // A Service added (a new file), then deleted again: the shared chains
    // (iptables KUBE-SERVICES, ...) change too.
    let extra = format!("{dir}/zz-bench-extra.yaml");
    for add in [true, false] {
        let t0 = Instant::now();
        if add {
            std::fs::write(
                &extra,
                "apiVersion: v1\nkind: Service\nmetadata: {name: bench-extra, namespace: ns0}\n\
                 spec: {clusterIP: 172.31.255.1, ports: [{name: http, port: 80, targetPort: 8080}]}\n---\n\
                 apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {name: bench-extra-1, namespace: ns0, labels: {kubernetes.io/service-name: bench-extra}}\n\
                 addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\n\
                 endpoints: [{addresses: [10.250.1.1], conditions: {ready: true}, nodeName: node-1}]\n",
            )
            .expect("write");
        } else {
            std::fs::remove_file(&extra).expect("remove");
        }
        let t = Instant::now();
        settle(&mut source);
        let hint = source.take_changed();
        let poll = t.elapsed();
        let (compile, r, partial) = bench::sync_changed(
            &mut compiler,
            &mut proxier,
            &source.inventory().state,
            &targets,
            hint.as_ref(),
            &metrics,
        );
        println!(
            "{}: one Service {}: end to end {} = poll {} + compile {} + sync {} ({})",
            mode.name(),
            if add { "added" } else { "deleted" },
            ms(t0.elapsed()),
            ms(poll),
            ms(compile),
            ms(r.duration),
            if partial { "partial" } else { "full" },
        );
    }

    // A restarted agent: a new proxier's first (full) sync against the
    // rules the node holds.
    let mut restarted = Proxier::new(mode);
    let t = Instant::now();
    let c = compiler
        .compile(&source.inventory().state, &targets, true)
        .expect("compile");
    let compile = t.elapsed();
    let r = restarted.sync_compiled(&c, &metrics);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    println!(
        "{}: restarted agent's first (full) sync: {} (compile {})",
        mode.name(),
        ms(r.duration),
        ms(compile)
    );
}

/// Polls until no file is still changing (a file written in place is read
/// at the poll after the one that saw it change; the bench does not wait
/// for the poll interval in between).
fn settle(source: &mut DirSource) -> kproxy_bin::agent::source::Changes {
    let mut all = source.poll();
    for _ in 0..10 {
        if source.pending().next().is_none() {
            break;
        }
        let more = source.poll();
        all.files.extend(more.files);
        all.errors.extend(more.errors);
    }
    all
}
