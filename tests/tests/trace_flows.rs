//! The packet-flow cases of kube-proxy's unit tests (`runPacketFlowTests`
//! in `pkg/proxy/{iptables,nftables}/proxier_test.go`), transcribed as
//! fixtures under `tests/fixtures/flows/` and run through `kproxy trace`
//! against BOTH backends with the same expectations.
//!
//! The environment is upstream's fake proxier: node `test-node` with
//! addresses 192.168.0.2, 192.168.1.2, 192.168.99.11, 2001:db8::1 and
//! 2001:db8:1::2; Service CIDRs 172.30.0.0/16 and fd00:10:96::/112. Each
//! fixture adds its flags (pod CIDR, node port addresses, ...).
//!
//! A flow's `output` is upstream's: `REJECT`, `DROP`, `""` (not a service:
//! passes unchanged) or the comma-separated endpoints. For endpoints, every
//! endpoint must be reached with the same probability and with the given
//! masquerade decision. `only: iptables|nftables` marks the few cases where
//! kube-proxy's two modes differ by design.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};
use kproxy_bin::trace::{TraceReport, render_text, trace_inventory};
use kproxy_core::convert::{Inventory, inventory, parse_documents};
use kproxy_core::trace::{OutcomeKind, Ratio};
use serde::Deserialize;

/// Upstream's fake node (`NewFakeProxier`).
const COMMON: &[&str] = &[
    "--hostname-override=test-node",
    "--node-address=192.168.0.2",
    "--node-address=192.168.1.2",
    "--node-address=192.168.99.11",
    "--node-address=2001:db8::1",
    "--node-address=2001:db8:1::2",
    "--service-cidr=172.30.0.0/16,fd00:10:96::/112",
];

const BACKENDS: [&str; 2] = ["iptables", "nftables"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    upstream: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    objects: Option<String>,
    #[serde(default)]
    flows: Vec<Flow>,
    #[serde(default)]
    scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    objects: Option<String>,
    #[serde(default)]
    flows: Vec<Flow>,
    #[serde(default)]
    overrides: BTreeMap<String, Override>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Flow {
    name: String,
    from: String,
    src: String,
    dst: String,
    #[serde(default)]
    proto: Option<String>,
    output: String,
    #[serde(default)]
    masq: Option<bool>,
    #[serde(default)]
    only: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Override {
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    masq: Option<bool>,
}

/// What a trace gives, normalised for comparison between backends.
type Summary = Vec<(String, Option<Ratio>, bool)>;

fn summary(r: &TraceReport) -> Summary {
    r.trace
        .outcomes
        .iter()
        .map(|o| (o.kind.to_string(), o.probability.exact, o.masqueraded))
        .collect()
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/flows")
}

fn load_inventory(text: &str, name: &str) -> Inventory {
    let objects = parse_documents(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    inventory(objects.into_iter().map(|o| (name.to_string(), o)))
}

/// Checks one trace against upstream's expectation; `Err` explains.
fn check(flow: &Flow, r: &TraceReport) -> Result<(), String> {
    let outcomes = &r.trace.outcomes;
    let single = |kind: OutcomeKind| -> Result<(), String> {
        match outcomes.as_slice() {
            [o] if o.kind == kind && o.probability.exact == Some(Ratio::ONE) => {
                if kind == OutcomeKind::Unchanged && o.masqueraded {
                    Err("masqueraded, expected not".into())
                } else {
                    Ok(())
                }
            }
            _ => Err(format!("expected only {kind}")),
        }
    };
    match flow.output.trim() {
        "REJECT" => single(OutcomeKind::Reject),
        "DROP" => single(OutcomeKind::Drop),
        "" => single(OutcomeKind::Unchanged),
        list => {
            let mut want: Vec<SocketAddr> = list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{}: bad endpoint {s:?}", flow.name))
                })
                .collect();
            want.sort();
            let n = want.len() as u128;
            let share = Ratio::new(1, n);
            let masq = flow.masq.unwrap_or(false);
            let mut got = Vec::new();
            for o in outcomes {
                let OutcomeKind::Endpoint(a) = o.kind else {
                    return Err(format!("unexpected outcome {}", o.kind));
                };
                if o.masqueraded != masq {
                    return Err(format!(
                        "{a}: masqueraded = {}, expected {masq}",
                        o.masqueraded
                    ));
                }
                if o.probability.exact != share {
                    return Err(format!(
                        "{a}: probability {}, expected 1/{n}",
                        o.probability
                    ));
                }
                got.push(a);
            }
            if got != want {
                return Err(format!("endpoints {got:?}, expected {want:?}"));
            }
            Ok(())
        }
    }
}

fn trace_args(argv: Vec<String>) -> kproxy_bin::trace::TraceArgs {
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    match cli.command {
        Command::Trace(t) => t,
        _ => panic!("not a trace command"),
    }
}

fn run_fixture(file: &str) {
    let path = fixtures_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let fx: Fixture = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let scenarios = if fx.scenarios.is_empty() {
        vec![Scenario {
            name: "default".into(),
            ..Scenario::default()
        }]
    } else {
        fx.scenarios
    };
    let mut failures = Vec::new();
    let mut count = 0;
    for sc in &scenarios {
        let objects = sc
            .objects
            .as_deref()
            .or(fx.objects.as_deref())
            .unwrap_or_else(|| panic!("{file}: scenario {}: no objects", sc.name));
        let inv = load_inventory(objects, &format!("{file} ({})", sc.name));
        let mut flows: Vec<Flow> = fx.flows.iter().chain(&sc.flows).cloned().collect();
        for (name, o) in &sc.overrides {
            let f = flows
                .iter_mut()
                .find(|f| &f.name == name)
                .unwrap_or_else(|| {
                    panic!("{file}: {}: override {name:?} matches no flow", sc.name)
                });
            if let Some(out) = &o.output {
                assert_ne!(&f.output, out, "{file}: {name}: override changes nothing");
                f.output = out.clone();
            }
            if let Some(m) = o.masq {
                assert_ne!(f.masq, Some(m), "{file}: {name}: override changes nothing");
                f.masq = Some(m);
            }
        }
        for flow in &flows {
            let mut by_backend: Vec<(&str, Summary)> = Vec::new();
            for backend in BACKENDS {
                if flow.only.as_deref().is_some_and(|o| o != backend) {
                    continue;
                }
                count += 1;
                let mut argv: Vec<String> = vec!["kproxy".into(), "trace".into()];
                argv.extend(COMMON.iter().map(|s| s.to_string()));
                argv.extend(fx.args.iter().cloned());
                argv.extend(sc.args.iter().cloned());
                argv.extend(
                    [
                        "--backend",
                        backend,
                        "--from",
                        &flow.from,
                        "--src",
                        &flow.src,
                        "--dst",
                        &flow.dst,
                        "--proto",
                        flow.proto.as_deref().unwrap_or("tcp"),
                        "inline.yaml",
                    ]
                    .iter()
                    .map(|s| s.to_string()),
                );
                let what = format!("{file} [{}] {:?} ({backend})", sc.name, flow.name);
                let report = match trace_inventory(&trace_args(argv), &inv) {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("{what}: error: {e:#}"));
                        continue;
                    }
                };
                if let Err(why) = check(flow, &report) {
                    failures.push(format!(
                        "{what}: {why}; expected {:?} masq={:?}\n{}",
                        flow.output,
                        flow.masq,
                        render_text(&report)
                    ));
                }
                by_backend.push((backend, summary(&report)));
            }
            if let [(_, a), (_, b)] = by_backend.as_slice()
                && a != b
            {
                failures.push(format!(
                    "{file} [{}] {:?}: backends disagree:\n  iptables: {a:?}\n  nftables: {b:?}",
                    sc.name, flow.name
                ));
            }
        }
    }
    assert!(count > 0, "{file}: no flows");
    assert!(
        failures.is_empty(),
        "{} ({}): {} of {count} traces failed:\n\n{}",
        file,
        fx.upstream,
        failures.len(),
        failures.join("\n\n")
    );
}

/// The command's text and JSON renderings of one trace.
#[test]
fn text_and_json_output() {
    let path = fixtures_dir().join("external-traffic-policy-cluster.yaml");
    let fx: Fixture =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("yaml");
    let inv = load_inventory(fx.objects.as_deref().expect("objects"), "etp-cluster");
    for (output, want) in [
        (
            "text",
            "50.00% (1/2) to endpoint 10.180.0.1:80, masqueraded",
        ),
        ("json", "\"probability_exact\":\"1/2\""),
    ] {
        let mut argv: Vec<String> = ["kproxy", "trace", "--cluster-cidr=10.0.0.0/8"]
            .iter()
            .chain(COMMON)
            .map(|s| s.to_string())
            .collect();
        argv.extend(
            [
                "--backend=nftables",
                "--from=external",
                "--src=203.0.113.2",
                "--dst=1.2.3.4:80",
                "--output",
                output,
                "x.yaml",
            ]
            .map(String::from),
        );
        let out = kproxy_bin::trace::trace(&trace_args(argv), &inv).expect("trace");
        let text = if output == "json" {
            out.stdout.split_whitespace().collect::<String>()
        } else {
            out.stdout.clone()
        };
        assert!(text.contains(want), "{output}: {}", out.stdout);
    }
}

macro_rules! flows {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_fixture($file);
            }
        )*
        /// Every fixture file has its test.
        #[test]
        fn every_fixture_is_run() {
            let known = [$($file),*];
            let mut files: Vec<String> = std::fs::read_dir(fixtures_dir())
                .expect("fixtures/flows")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yaml"))
                .collect();
            files.sort();
            for f in &files {
                assert!(known.contains(&f.as_str()), "fixture {f} has no test in trace_flows.rs");
            }
        }
    };
}

flows! {
    no_endpoints_reject => "no-endpoints-reject.yaml",
    cluster_ip_general => "cluster-ip-general.yaml",
    load_balancer => "load-balancer.yaml",
    node_ports => "node-ports.yaml",
    external_traffic_policy_local => "external-traffic-policy-local.yaml",
    external_traffic_policy_cluster => "external-traffic-policy-cluster.yaml",
    internal_traffic_policy => "internal-traffic-policy.yaml",
    terminating_endpoints_local => "terminating-endpoints-local.yaml",
    terminating_endpoints_cluster => "terminating-endpoints-cluster.yaml",
    internal_external_masquerade => "internal-external-masquerade.yaml",
}
