//! Shared helpers of kproxy's cross-crate tests: running `kproxy compile`
//! in-process and normalising iptables-restore text the way the upstream
//! kube-proxy tests do before comparing.

pub mod apiserver;
pub mod known_differences;
pub mod netns;
pub mod nft;
pub mod scratch;

pub use scratch::Scratch;

use std::collections::BTreeMap;
use std::path::Path;

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};

/// Runs `kproxy compile ARGS... PATHS...` in-process; returns stdout and warnings.
pub fn compile(args: &[String], paths: &[&Path]) -> Result<(String, Vec<String>), String> {
    let mut argv: Vec<String> = vec!["kproxy".into(), "compile".into()];
    argv.extend(args.iter().cloned());
    argv.extend(paths.iter().map(|p| p.display().to_string()));
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let Command::Compile(c) = cli.command else {
        return Err("not a compile command".into());
    };
    kproxy_bin::compile::run(&c)
        .map(|o| (o.stdout, o.warnings))
        .map_err(|e| format!("{e:#}"))
}

/// The nftables transactions (with their print options) of `kproxy
/// compile ARGS... PATHS...`: what the netlink path sends.
pub fn compile_nft_transactions(
    args: &[String],
    paths: &[&Path],
) -> Result<Vec<(kproxy_nft::Transaction, kproxy_nft::PrintOptions)>, String> {
    let mut argv: Vec<String> = vec!["kproxy".into(), "compile".into()];
    argv.extend(args.iter().cloned());
    argv.extend(paths.iter().map(|p| p.display().to_string()));
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let Command::Compile(c) = cli.command else {
        return Err("not a compile command".into());
    };
    let inv = kproxy_bin::compile::load(&c.paths).map_err(|e| format!("{e:#}"))?;
    kproxy_bin::compile::nft_transactions(&c, &inv).map_err(|e| format!("{e:#}"))
}

/// Reads an `args` file: one argument per line, `#` comments and blank lines skipped.
pub fn read_args(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// One table of an iptables-restore text, normalised: chain declarations as
/// a sorted set, rules grouped per chain (order within a chain kept), `-X`
/// lines as a sorted set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NormTable {
    /// Declared chains.
    pub chains: Vec<String>,
    /// Rules per chain.
    pub rules: BTreeMap<String, Vec<String>>,
    /// Deleted chains.
    pub deletes: Vec<String>,
}

/// Normalises iptables-restore text as upstream's test helper does: the
/// order of chains does not matter, the order of rules within a chain does.
pub fn normalise(text: &str) -> BTreeMap<String, NormTable> {
    let mut tables: BTreeMap<String, NormTable> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            current = t.to_string();
            tables.entry(current.clone()).or_default();
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or("").to_string();
            tables.entry(current.clone()).or_default().chains.push(name);
        } else if let Some(x) = line.strip_prefix("-X ") {
            tables
                .entry(current.clone())
                .or_default()
                .deletes
                .push(x.trim().to_string());
        } else {
            let chain = line
                .strip_prefix("-A ")
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            tables
                .entry(current.clone())
                .or_default()
                .rules
                .entry(chain)
                .or_default()
                .push(line.to_string());
        }
    }
    for t in tables.values_mut() {
        t.chains.sort();
        t.deletes.sort();
    }
    tables
}

/// Prints a normalised ruleset back as text (for readable diffs).
pub fn render_normalised(tables: &BTreeMap<String, NormTable>) -> String {
    let mut out = String::new();
    for (name, t) in tables {
        out.push_str(&format!("*{name}\n"));
        for c in &t.chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for rules in t.rules.values() {
            for r in rules {
                out.push_str(r);
                out.push('\n');
            }
        }
        for x in &t.deletes {
            out.push_str(&format!("-X {x}\n"));
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Replaces the upstream test fake's mark spelling (`0x4000`) with the
/// production one (`0x00004000`) kproxy prints.
pub fn production_mark(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("0x4000") {
        let after = &rest[i + 6..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_hexdigit()) {
            out.push_str("0x4000");
        } else {
            out.push_str("0x00004000");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The IR rulesets `kproxy compile ARGS... PATHS...` would print (one per
/// family, primary first), as the backend builds them: iptables with the
/// built-in chains when `--standalone` is among `args`, nftables as the
/// table its transaction leaves.
pub fn compile_ir(
    args: &[String],
    paths: &[&Path],
) -> Result<Vec<kproxy_bin::compile::FamilyRules>, String> {
    let mut argv: Vec<String> = vec!["kproxy".into(), "compile".into()];
    argv.extend(args.iter().cloned());
    argv.extend(paths.iter().map(|p| p.display().to_string()));
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let Command::Compile(c) = cli.command else {
        return Err("not a compile command".into());
    };
    let inv = kproxy_bin::compile::load(&c.paths).map_err(|e| format!("{e:#}"))?;
    kproxy_bin::compile::ir_rulesets(&c.node, c.backend.as_deref(), c.standalone, &inv)
        .map(|(_, families, _)| families)
        .map_err(|e| format!("{e:#}"))
}

/// The real `kproxy` binary, for tests that run it as a process.
///
/// `CARGO_BIN_EXE_kproxy` exists only for kproxy-bin's own tests, so the
/// binary is built here (a no-op when it is fresh) into the target directory
/// and profile of the running test; `KPROXY_BIN=/path/to/kproxy` overrides.
pub fn kproxy_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("KPROXY_BIN") {
            return std::path::PathBuf::from(p);
        }
        // target/<profile>/deps/<test>-<hash> -> target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile> directory")
            .to_path_buf();
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "kproxy-bin", "--bin", "kproxy"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        // The nested cargo must see cargo's environment, not the one cargo
        // gives this test (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...): build
        // scripts that watch those variables (ring's) would rebuild, and
        // their dependents with them, on every alternation.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_BIN_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .iter()
            .any(|p| k.starts_with(p))
            {
                cmd.env_remove(k.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p kproxy-bin failed");
        let bin = profile_dir.join(format!("kproxy{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.exists(),
            "{} not found after cargo build; set KPROXY_BIN",
            bin.display()
        );
        bin
    })
}

/// The case directories of `tests/golden/<kind>/` (`iptables`, `nftables`),
/// in name order.
pub fn golden_cases(kind: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(kind);
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(&root)
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "golden cases missing in {kind}");
    dirs
}

/// A readable difference of two normalised texts: lines only in `want`
/// (`-`), lines only in `got` (`+`); when both hold the same lines, the
/// order differs and `got` is shown whole.
pub fn line_diff(want: &str, got: &str) -> String {
    let mut out = String::from("--- expected (normalised)\n+++ kproxy (normalised)\n");
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    for l in w.iter().filter(|l| !g.contains(l)) {
        out.push_str(&format!("-{l}\n"));
    }
    for l in g.iter().filter(|l| !w.contains(l)) {
        out.push_str(&format!("+{l}\n"));
    }
    if out.lines().count() == 2 {
        out.push_str("(same lines, different order)\n");
        out.push_str(got);
    }
    out
}

/// Runs `run_case` on every golden case of `kind`, printing `ok`/`FAIL` per
/// case, and fails with the list of failed cases.
pub fn run_goldens(kind: &str, run_case: impl Fn(&Path) -> Result<(), String>) {
    let mut failures = Vec::new();
    for dir in golden_cases(kind) {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        match run_case(&dir) {
            Ok(()) => println!("ok   {name}"),
            Err(e) => {
                println!("FAIL {name}\n{e}");
                failures.push(name);
            }
        }
    }
    assert!(failures.is_empty(), "failed golden cases: {failures:?}");
}

/// The snapshot scenarios both backends cover (fixture, flags): each
/// snapshot test file defines its own `snap!` and lists these once with
/// `kproxy_tests::shared_scenarios!(snap);`, plus its backend's own.
#[macro_export]
macro_rules! shared_scenarios {
    ($snap:ident) => {
        $snap!(clusterip, "clusterip.yaml");
        $snap!(unnamed_port, "unnamed-port.yaml");
        $snap!(multiple_ports, "multiple-ports.yaml");
        $snap!(nodeport, "nodeport.yaml");
        $snap!(
            nodeport_addresses_list,
            "nodeport.yaml",
            "--nodeport-addresses=192.168.0.0/24,127.0.0.0/8",
            "--node-address=127.0.0.1/8",
            "--node-address=192.168.0.10/24",
            "--node-address=192.168.0.11/24",
            "--node-address=172.17.0.1/16"
        );
        $snap!(
            nodeport_addresses_list_without_loopback,
            "nodeport.yaml",
            "--nodeport-addresses=192.168.0.0/24",
            "--node-address=127.0.0.1/8",
            "--node-address=192.168.0.10/24",
            "--node-address=172.17.0.1/16"
        );
        $snap!(
            nodeport_addresses_primary,
            "nodeport.yaml",
            "--nodeport-addresses=primary",
            "--node-address=127.0.0.1/8",
            "--node-address=192.168.0.10/24",
            "--node-address=172.17.0.1/16"
        );
        $snap!(loadbalancer, "loadbalancer.yaml");
        $snap!(lb_ipmode_proxy_ignored, "lb-ipmode-proxy.yaml");
        $snap!(lb_source_ranges_node_ip_inside, "lb-source-ranges.yaml");
        $snap!(external_ips, "external-ips.yaml");
        $snap!(health_check_node_port, "health-check-node-port.yaml");
        $snap!(session_affinity_client_ip, "session-affinity.yaml");
        $snap!(etp_local_with_local_endpoints, "etp-local-with-local.yaml");
        $snap!(
            etp_local_without_local_endpoints,
            "etp-local-without-local.yaml"
        );
        $snap!(itp_local_with_local_endpoints, "itp-local-with-local.yaml");
        $snap!(
            itp_local_without_local_endpoints,
            "itp-local-without-local.yaml"
        );
        $snap!(topology_zone_hints, "topology-zone-hints.yaml");
        $snap!(topology_node_hints, "topology-node-hints.yaml");
        $snap!(
            topology_hints_for_other_zone,
            "topology-other-zone-hints.yaml"
        );
        $snap!(terminating_fallback_cluster, "terminating-cluster.yaml");
        $snap!(terminating_fallback_local, "terminating-local.yaml");
        $snap!(not_serving_ignored, "not-serving.yaml");
        $snap!(no_endpoints_reject, "no-endpoints.yaml");
        $snap!(protocols_tcp_udp_sctp, "protocols.yaml");
        $snap!(
            masquerade_all,
            "local-detector.yaml",
            "--masquerade-all=true"
        );
        $snap!(
            detect_local_cluster_cidr,
            "local-detector.yaml",
            "--detect-local-mode=ClusterCIDR"
        );
        $snap!(
            detect_local_node_cidr,
            "local-detector.yaml",
            "--detect-local-mode=NodeCIDR"
        );
        $snap!(
            detect_local_bridge_interface,
            "local-detector.yaml",
            "--detect-local-mode=BridgeInterface",
            "--pod-bridge-interface=cbr0"
        );
        $snap!(
            detect_local_interface_name_prefix,
            "local-detector.yaml",
            "--detect-local-mode=InterfaceNamePrefix",
            "--pod-interface-name-prefix=veth"
        );
        $snap!(ignored_services_produce_nothing, "ignored-services.yaml");
        $snap!(endpoints_v1_mirrored, "endpoints-v1.yaml");
        $snap!(kind_list_input, "kind-list.yaml");
        $snap!(json_input, "json-input.json");
        $snap!(non_canonical_ips, "non-canonical-ips.yaml");
    };
}

/// The node flags of the dual-stack netlink fixture
/// (`fixtures/netlink/dual-stack.yaml`), without `--ip-family`.
pub const DUAL_STACK_ARGS: &[&str] = &[
    "--proxy-mode=nftables",
    "--hostname-override=test-node",
    "--detect-local-mode=ClusterCIDR",
    "--cluster-cidr=10.0.0.0/8,fd00:10::/64",
    "--bind-address=192.168.0.2",
    "--node-address=192.168.0.2/24",
    "--node-address=2001:db8::1/64",
    "--service-cidr=172.30.0.0/16",
    "--service-cidr=fd00:172:30::/112",
    "--feature-gates=KubeProxyNFTablesLocalhostNodePorts=true",
];

/// [`DUAL_STACK_ARGS`] for each node family (dual, ipv4, ipv6) and each
/// nftables layout (current, pre-1.36), named.
pub fn dual_stack_variants() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for family in ["dual", "ipv4", "ipv6"] {
        for (layout, extra) in [
            ("current", None),
            ("pre-1.36", Some("--kube-proxy-version=1.35")),
        ] {
            let mut args: Vec<String> = DUAL_STACK_ARGS.iter().map(|s| s.to_string()).collect();
            args.push(format!("--ip-family={family}"));
            args.extend(extra.map(str::to_string));
            out.push((format!("dual-stack input, {family} node, {layout}"), args));
        }
    }
    out
}
