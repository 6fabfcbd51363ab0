//! Snapshot tests of `kproxy compile --proxy-mode nftables`, one scenario
//! per feature: the scenarios of `snapshots_iptables.rs` over the same
//! fixtures (`tests/fixtures/scenarios/`), each in both output forms. A
//! scenario `NAME` has two snapshots: `NAME` (the native `nft -f`
//! transaction of kube-proxy's first full sync) and `NAME_json` (the
//! `--backend nftables-json` batch, pretty-printed).
//!
//! Left out, because they are iptables-only by nature:
//! * `localhost_nodeports_off` (`--iptables-localhost-nodeports`): an
//!   iptables setting; nftables mode never accepts NodePorts on localhost
//!   (`localhost_nodeports_*` below cover its own feature gate instead);
//! * `standalone`: adds iptables' built-in chain jumps (nftables creates its
//!   own base chains in every transaction);
//! * `host_features_empty`, `conntrack_tcp_be_liberal`: probes of iptables
//!   features (`--random-fully`, nfacct) and iptables' INVALID-drop rule;
//!   nftables mode always writes `masquerade fully-random` and has no such rule;
//! * `large_cluster_mode`: an iptables optimisation (nftables has none);
//! * `masquerade_bit_0` / `masquerade_bit_31` (`--iptables-masquerade-bit`):
//!   upstream's flag sets `IPTables.MasqueradeBit`, which nftables mode does
//!   not read (it uses `nftables.masqueradeBit`); the config-file scenarios
//!   below set that bit instead.
//!
//! [`iptables_only_flags_change_nothing`] checks that those flags leave the
//! nftables output alone (except `--iptables-masquerade-bit`, see there).
//!
//! Every snapshot was reviewed against `shared/spec/kube-proxy-nftables.md`
//! (upstream kube-proxy's `pkg/proxy/nftables/proxier.go`) when accepted.
//! Update with `INSTA_UPDATE=always cargo test -p kproxy-tests --test
//! snapshots_nftables` and review the diff of the `.snap` files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kproxy_tests::compile;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/scenarios").join(name)
}

fn config(name: &str) -> String {
    format!(
        "--config={}",
        root().join("fixtures/configs").join(name).display()
    )
}

/// Flags every scenario starts from: nftables mode, the node is `node-a`
/// (the fixtures' Node object), the pod network 10.244.0.0/16.
const BASE: &[&str] = &[
    "--proxy-mode=nftables",
    "--hostname-override=node-a",
    "--cluster-cidr=10.244.0.0/16",
];

fn run(args: &[&str], paths: &[PathBuf]) -> (String, Vec<String>) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    compile(&args, &refs).unwrap_or_else(|e| panic!("compile: {e}"))
}

fn strip(s: &str) -> String {
    s.replace(&format!("{}/", root().display()), "")
}

/// Compiles `paths` with `args` and renders the snapshot text: the command
/// line, the warnings (paths made relative to `tests/`) and stdout (JSON
/// pretty-printed).
fn render(args: &[&str], paths: &[PathBuf]) -> String {
    let (stdout, warnings) = run(args, paths);
    let json = args.contains(&"--backend=nftables-json");
    let mut out = String::new();
    let shown: Vec<String> = paths
        .iter()
        .map(|p| strip(&p.display().to_string()))
        .collect();
    let shown_args: Vec<String> = args.iter().map(|a| strip(a)).collect();
    writeln!(
        out,
        "# kproxy compile {} {}",
        shown_args.join(" "),
        shown.join(" ")
    )
    .unwrap();
    for w in &warnings {
        writeln!(out, "# warning: {}", strip(w)).unwrap();
    }
    if json {
        let v: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("--backend=nftables-json output is not JSON: {e}"));
        out.push_str(&serde_json::to_string_pretty(&v).unwrap());
        out.push('\n');
    } else {
        out.push_str(&stdout);
    }
    out
}

/// Both forms of one scenario: `args` + `paths`, then the same with
/// `--backend=nftables-json`.
fn both(args: &[&str], paths: &[PathBuf]) -> (String, String) {
    let text = render(args, paths);
    let mut json_args = args.to_vec();
    json_args.push("--backend=nftables-json");
    (text, render(&json_args, paths))
}

/// One scenario: `fixture` compiled with [`BASE`] plus `extra` flags.
fn scenario(fixture_name: &str, extra: &[&str]) -> (String, String) {
    let mut args: Vec<&str> = BASE.to_vec();
    args.extend_from_slice(extra);
    both(&args, &[fixture(fixture_name)])
}

macro_rules! assert_both {
    ($name:expr, $pair:expr) => {
        let (text, json) = $pair;
        insta::assert_snapshot!($name, text);
        insta::assert_snapshot!(concat!($name, "_json"), json);
    };
}

macro_rules! snap {
    ($test:ident, $fixture:expr $(, $flag:expr)* $(,)?) => {
        #[test]
        fn $test() {
            assert_both!(stringify!($test), scenario($fixture, &[$($flag),*]));
        }
    };
}

// The scenarios both backends share (tests/src/lib.rs).
kproxy_tests::shared_scenarios!(snap);

// nftables only: numgen endpoint selection.
snap!(multi_endpoint_numgen, "multi-endpoint.yaml");

// nftables only: localhost NodePorts (feature gate
// KubeProxyNFTablesLocalhostNodePorts), unallocated ClusterIPs.
snap!(
    localhost_nodeports_gate_with_loopback,
    "nodeport-protocols.yaml",
    "--feature-gates=KubeProxyNFTablesLocalhostNodePorts=true",
    "--nodeport-addresses=192.168.0.0/24,127.0.0.0/8",
    "--node-address=127.0.0.1/8",
    "--node-address=192.168.0.10/24",
);
snap!(
    localhost_nodeports_gate_without_loopback,
    "nodeport-protocols.yaml",
    "--feature-gates=KubeProxyNFTablesLocalhostNodePorts=true",
);
snap!(
    service_cidrs_drop_unallocated,
    "clusterip.yaml",
    "--service-cidr=10.96.0.0/16,10.97.0.0/16",
);

// Node-level knobs.
#[test]
fn detect_local_none() {
    // No --cluster-cidr: ClusterCIDR mode has no CIDR, so no detector.
    assert_both!(
        "detect_local_none",
        both(
            &["--proxy-mode=nftables", "--hostname-override=node-a"],
            &[fixture("local-detector.yaml")],
        )
    );
}

/// The flags of the scenarios left out above change nothing in nftables
/// mode. `--iptables-masquerade-bit` is not among them: kproxy currently
/// applies it to nftables mode too, where upstream's flag only sets
/// `IPTables.MasqueradeBit` (nftables mode reads `NFTables.MasqueradeBit`,
/// which has no flag).
#[test]
fn iptables_only_flags_change_nothing() {
    let base = scenario("local-detector.yaml", &[]);
    for flags in [
        &["--iptables-localhost-nodeports=false"][..],
        &["--iptables-localhost-nodeports=true"],
        &["--standalone"],
        &["--host-features="],
        &["--conntrack-tcp-be-liberal=true"],
    ] {
        let got = scenario("local-detector.yaml", flags);
        let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(body(&got.0), body(&base.0), "{flags:?} (native)");
        assert_eq!(body(&got.1), body(&base.1), "{flags:?} (JSON)");
    }
}

// Configuration files (mode: nftables): they replace the configuration flags
// (ignored, with a warning) except --hostname-override, which wins over
// hostnameOverride. The mark bit comes from the nftables section.
#[test]
fn config_v1alpha1() {
    let cfg = config("kube-proxy-nftables-v1alpha1.yaml");
    assert_both!(
        "config_v1alpha1",
        both(
            &[
                &cfg,
                "--hostname-override=node-a",
                "--cluster-cidr=10.244.0.0/16",
                "--masquerade-all=true",
                "--iptables-masquerade-bit=14",
            ],
            &[fixture("config.yaml")],
        )
    );
}

#[test]
fn config_v1alpha2() {
    let cfg = config("kube-proxy-nftables-v1alpha2.yaml");
    assert_both!(
        "config_v1alpha2",
        both(
            &[
                &cfg,
                "--hostname-override=node-a",
                "--detect-local-mode=ClusterCIDR",
                "--cluster-cidr=10.244.0.0/16",
                "--nodeport-addresses=10.0.0.0/8",
            ],
            &[fixture("config.yaml")],
        )
    );
}

// IP families.
#[test]
fn ipv6() {
    assert_both!(
        "ipv6",
        both(
            &[
                "--proxy-mode=nftables",
                "--hostname-override=node-a",
                "--cluster-cidr=fd00:10:244::/56",
                "--ip-family=ipv6",
            ],
            &[fixture("ipv6.yaml")],
        )
    );
}
#[test]
fn dual_stack() {
    assert_both!(
        "dual_stack",
        both(
            &[
                "--proxy-mode=nftables",
                "--hostname-override=node-a",
                "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
                "--ip-family=dual",
            ],
            &[fixture("dual-stack.yaml")],
        )
    );
}
