//! The harnesses of kproxy's coverage-guided fuzz targets.
//!
//! Every parser of untrusted input has one harness here: a function of the
//! fuzzer's bytes that runs the parser (and what consumes its result in
//! `kproxy`) and panics only when an invariant breaks. The `cargo fuzz`
//! targets in `fuzz/` (outside the workspace, nightly) are one-line
//! wrappers of these functions, and the corpus replay in
//! `tests/tests/fuzz_corpus.rs` runs the same functions on every file of
//! `fuzz/corpus/<target>/` on stable, inside `cargo test`.
//!
//! A harness returns normally on anything kproxy rejects cleanly (an
//! error); a panic, an abort, or an endless loop or allocation is a bug.
//!
//! ```
//! // A corpus file is replayed by name:
//! let target = kproxy_fuzz::target("scalars").unwrap();
//! (target.run)(b"1m30s");
//! ```

#![warn(missing_docs)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use ipnet::IpNet;
use kproxy_core::canon::canonical;
use kproxy_core::check::{Mode, check};
use kproxy_core::config::{GoDuration, parse_go_duration};
use kproxy_core::convert::{Object, inventory, parse_documents_lenient, sloppy, yaml_readers};
use kproxy_core::equivalence::Options;
use kproxy_core::ir::{AddrMatch, Direction, Match, Ruleset, TableFamily};
use kproxy_core::model::{ClusterState, IpFamily, LocalDetector, NodeConfig, Protocol, Timestamp};
use kproxy_core::plan::plan;
use kproxy_core::trace::{Packet, PacketOrigin, TraceEnv, Tracer};

/// A fuzz target: its name (`fuzz/fuzz_targets/<name>.rs`,
/// `fuzz/corpus/<name>/`) and its harness.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// The harness.
    pub run: fn(&[u8]),
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "manifest",
        run: manifest,
    },
    Target {
        name: "proxy_config",
        run: proxy_config,
    },
    Target {
        name: "iptables_save",
        run: iptables_save,
    },
    Target {
        name: "nft_json",
        run: nft_json,
    },
    Target {
        name: "scalars",
        run: scalars,
    },
    Target {
        name: "trace_check",
        run: trace_check,
    },
];

/// The target named `name`.
///
/// ```
/// assert!(kproxy_fuzz::target("manifest").is_some());
/// assert!(kproxy_fuzz::target("nope").is_none());
/// ```
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The largest dump the `trace_check` target analyses. `trace` and `check`
/// are not yet bounded on small pathological dumps (issue 14); the cap
/// keeps the campaign on what they are meant to survive.
pub const MAX_DUMP_LEN: usize = 12 * 1024;

/// The packet classes `check` traces per input (an evenly spread subset
/// beyond): every class costs a trace of both rulesets, and the default
/// (500,000) makes even a small dump take seconds, which would leave the
/// campaign a few executions a second.
pub const MAX_CLASSES: usize = 256;

/// The source name given to the parsers.
const SOURCE: &str = "fuzz.yaml";

/// Manifests: the fast YAML reader and serde-saphyr (the differential check:
/// whatever the fast reader accepts, serde-saphyr reads the same), then the
/// objects as `kproxy compile` reads them, converted, planned and printed
/// for both backends and both families.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(fast) = yaml_readers::fast(text) {
        match yaml_readers::full(text) {
            Ok(full) => assert_eq!(fast, full, "the fast YAML reader and serde-saphyr disagree"),
            Err(e) => panic!("the fast YAML reader accepts what serde-saphyr rejects: {e}"),
        }
    }
    let (objects, errors) = parse_documents_lenient(text, SOURCE);
    for e in &errors {
        let _ = e.to_string();
    }
    let inv = inventory(objects.into_iter().map(|o| (SOURCE.to_string(), o)));
    for family in [IpFamily::V4, IpFamily::V6] {
        compile_all(&inv.state, &node(family));
    }
}

/// Plans `state` on `node` and prints it as both backends would.
fn compile_all(state: &ClusterState, node: &NodeConfig) {
    let _ = kproxy_iptables::compile(
        state,
        node,
        kproxy_iptables::Options {
            standalone: true,
            ..Default::default()
        },
    );
    let _ = kproxy_nft::compile(state, node, kproxy_nft::Options::default());
    let _ = kproxy_nft::render_json(&[plan(state, node)]);
}

/// The node the harnesses compile for: `node-1`, with a pod CIDR, an
/// interface address and a node IP of `family`.
fn node(family: IpFamily) -> NodeConfig {
    let mut n = NodeConfig::new(family, "node-1");
    let (pods, ip) = match family {
        IpFamily::V4 => ("10.0.0.0/8", IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10))),
        IpFamily::V6 => (
            "fd00::/48",
            IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 10)),
        ),
    };
    let pods: IpNet = pods.parse().expect("a constant CIDR");
    n.local_detector = LocalDetector::Cidr(pods);
    n.node_ip = Some(ip);
    n.node_addresses = vec![ip];
    n
}

/// `KubeProxyConfiguration` files, read as `--config` reads them, then
/// resolved with kube-proxy's defaults into the settings `kproxy` uses.
pub fn proxy_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (objects, _) = parse_documents_lenient(text, "config.yaml");
    for o in objects {
        let Object::ProxyConfig(cfg) = o else {
            continue;
        };
        let _ = (cfg.version(), cfg.proxy_mode());
        let Ok(s) = cfg.effective() else {
            continue;
        };
        for (family, ip) in [
            (IpFamily::V4, IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10))),
            (
                IpFamily::V6,
                IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 10)),
            ),
        ] {
            let pods: Vec<IpNet> = s.cluster_cidrs.clone();
            let _ = s.local_detector(family, &pods);
            let _ = s.node_port_networks(&[ip]);
        }
        for d in [s.sync_period, s.min_sync_period, s.config_sync_period] {
            roundtrip_duration(d);
        }
    }
}

/// A duration kproxy holds prints (as `GoDuration`) into text that parses
/// back to it.
fn roundtrip_duration(d: Duration) {
    let text = GoDuration(d).to_string();
    assert_eq!(
        parse_go_duration(&text).ok(),
        Some(d),
        "{d:?} prints as {text:?}, which does not parse back"
    );
}

/// `iptables-save` / `ip6tables-save` dumps, read as `check`, `trace
/// --rules` and `graph --rules` read them, then canonicalised and printed
/// back rule by rule (as `trace` and `check` print dump rules).
pub fn iptables_save(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = kproxy_iptables::parse::looks_like_save(text);
    let _ = kproxy_iptables::parse::detect_family(text);
    let Ok(rs) = kproxy_iptables::parse::parse(text, None) else {
        return;
    };
    print_rules(&rs);
    print_rules(&canonical(&rs));
    let _ = kproxy_iptables::print::print(&rs, kproxy_iptables::PrintOptions::default());
}

/// `nft -j list ruleset` dumps, read as `check`, `trace --rules` and `graph
/// --rules` read them, then canonicalised and printed back rule by rule.
pub fn nft_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = kproxy_nft::parse::looks_like_json(text);
    let Ok(dump) = kproxy_nft::parse::parse_json(text) else {
        return;
    };
    print_rules(&dump.ruleset);
    print_rules(&canonical(&dump.ruleset));
}

/// Every rule of `rs` as `trace`, `check` and `graph` print it.
fn print_rules(rs: &Ruleset) {
    for t in &rs.tables {
        let (TableFamily::Iptables(f) | TableFamily::Nft(f)) = t.family;
        for c in &t.chains {
            for r in &c.rules {
                let _ = kproxy_core::trace::describe_rule(r);
                let _ = kproxy_core::graph::summary(r);
                match t.family {
                    TableFamily::Iptables(_) => {
                        let mut out = format!("-A {}", c.name);
                        let _ = kproxy_iptables::print::print_rule(
                            &mut out,
                            c.name.as_str(),
                            r,
                            kproxy_iptables::PrintOptions::default(),
                        );
                    }
                    TableFamily::Nft(_) => {
                        let _ = kproxy_nft::print::print_rule(
                            f,
                            r,
                            kproxy_nft::PrintOptions::default(),
                        );
                    }
                }
            }
        }
    }
}

/// The small text parsers: Go durations (sync periods), Kubernetes' sloppy
/// IPs and CIDRs, and RFC 3339 times (the last-change-trigger-time
/// annotation). Each is run on the whole input and on each line; what one
/// accepts must print back into text it reads as the same value, and the
/// sloppy parsers accept everything the strict standard parsers accept.
pub fn scalars(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    scalar(text);
    for line in text.lines() {
        scalar(line);
    }
}

fn scalar(s: &str) {
    if let Ok(d) = parse_go_duration(s) {
        assert!(
            d.as_nanos() <= i64::MAX as u128,
            "{s:?} parses as {d:?}, beyond Go's int64 nanoseconds"
        );
        roundtrip_duration(d);
    }
    let ip = sloppy::parse_ip(s);
    if let Some(ip) = ip {
        assert_eq!(sloppy::parse_ip(&ip.to_string()), Some(ip), "{s:?}");
    }
    if let Ok(strict) = s.parse::<IpAddr>() {
        assert_eq!(ip, Some(strict.to_canonical()), "{s:?}");
    }
    let net = sloppy::parse_cidr(s);
    if let Some(net) = net {
        assert_eq!(sloppy::parse_cidr(&net.to_string()), Some(net), "{s:?}");
        let _ = net.trunc();
    }
    // The standard library's address parser, not ipnet's: ipnet's accepts
    // `::` standing for no group at all, which Go and the standard library
    // reject. A `+` before the prefix length is Rust's, not Go's.
    if let Some((a, len)) = s.split_once('/')
        && let Ok(ip) = a.parse::<IpAddr>()
        && ip.to_canonical() == ip
        && !len.starts_with('+')
        && let Ok(len) = len.parse::<u8>()
        && let Ok(strict) = IpNet::new(ip, len)
    {
        assert_eq!(net, Some(strict), "{s:?}");
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        let _ = t.to_string();
    }
}

/// What the `trace_check` target compares dumps with: a small synthetic
/// cluster compiled for [`node`] in both modes (iptables standalone, as
/// `check` compiles it).
struct Expected {
    node: NodeConfig,
    iptables: Ruleset,
    nftables: Ruleset,
}

fn expected() -> &'static Expected {
    static EXPECTED: OnceLock<Expected> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let node = node(IpFamily::V4);
        let state = kproxy_core::synthetic::cluster(4, 2);
        let p = plan(&state, &node);
        let iptables = kproxy_iptables::build(
            &p,
            kproxy_iptables::LayoutOptions {
                standalone: true,
                ..Default::default()
            },
        );
        let nftables = kproxy_nft::ruleset(&p).unwrap_or_default();
        Expected {
            node,
            iptables,
            nftables,
        }
    })
}

/// `trace` and `check` on a parsed dump (`iptables-save` or `nft -j`,
/// detected as `kproxy check --rules` detects it), up to
/// [`MAX_DUMP_LEN`] bytes: the dump checked against a small compiled
/// cluster, and packets traced through it (to the cluster's Services, and
/// to the first addresses and ports the dump's rules match).
pub fn trace_check(data: &[u8]) {
    if data.len() > MAX_DUMP_LEN {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let exp = expected();
    let (node_rs, mode, compiled) = if kproxy_nft::parse::looks_like_json(text) {
        match kproxy_nft::parse::parse_json(text) {
            Ok(d) => (d.ruleset, Mode::Nftables, &exp.nftables),
            Err(_) => return,
        }
    } else if kproxy_iptables::parse::looks_like_save(text) {
        match kproxy_iptables::parse::parse(text, None) {
            Ok(rs) => (rs, Mode::Iptables, &exp.iptables),
            Err(_) => return,
        }
    } else {
        return;
    };
    let env = TraceEnv::from_node(&exp.node);
    let opts = Options {
        max_classes: MAX_CLASSES,
        ..Options::default()
    };
    let one = check(compiled, &node_rs, mode, &env, IpFamily::V4, opts);
    // On two threads: the same classes and differences (only the work
    // done, and so where the work bound stops, may differ).
    let two = check(
        compiled,
        &node_rs,
        mode,
        &env,
        IpFamily::V4,
        opts.with_threads(2),
    );
    if let (Ok(one), Ok(two)) = (&one, &two) {
        let (a, b) = (&one.equivalence, &two.equivalence);
        assert_eq!(a.classes, b.classes, "classes on one and two threads");
        assert_eq!(a.complete, b.complete, "complete on one and two threads");
        assert_eq!(
            a.differences, b.differences,
            "differences on one and two threads"
        );
    }
    let tracer = Tracer::new(&node_rs, &env);
    for packet in packets(&node_rs) {
        let _ = tracer.trace(&packet);
    }
}

/// Packets worth tracing through `rs`: to the synthetic cluster's first
/// ClusterIP, NodePort and LoadBalancer IP, and to the first IPv4
/// destinations (with their ports) that `rs`'s rules match.
fn packets(rs: &Ruleset) -> Vec<Packet> {
    let pod = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    let outside = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    let node_ip = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10));
    let mut out = vec![
        Packet::new(
            PacketOrigin::Pod,
            pod,
            IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1)),
            Protocol::Tcp,
            80,
        ),
        Packet::new(
            PacketOrigin::External,
            outside,
            node_ip,
            Protocol::Tcp,
            30000,
        ),
        Packet::new(
            PacketOrigin::External,
            outside,
            IpAddr::V4(Ipv4Addr::new(203, 0, 0, 0)),
            Protocol::Tcp,
            80,
        ),
    ];
    let mut found = 0;
    'rules: for t in &rs.tables {
        for c in &t.chains {
            for r in &c.rules {
                let dst = r.matches.iter().find_map(|m| match m {
                    Match::Addr {
                        dir: Direction::Dst,
                        addr: AddrMatch::Ip(ip @ IpAddr::V4(_)),
                        negate: false,
                    } => Some(*ip),
                    _ => None,
                });
                let Some(dst) = dst else { continue };
                let port = r
                    .matches
                    .iter()
                    .find_map(|m| match m {
                        Match::DstPort(p) => Some(*p),
                        _ => None,
                    })
                    .unwrap_or(80);
                out.push(Packet::new(
                    PacketOrigin::Pod,
                    pod,
                    dst,
                    Protocol::Tcp,
                    port,
                ));
                found += 1;
                if found == 3 {
                    break 'rules;
                }
            }
        }
    }
    out
}
