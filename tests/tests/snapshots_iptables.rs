//! Snapshot tests of `kproxy compile` (iptables backend), one scenario per
//! feature. Each scenario is a Kubernetes YAML (or JSON) fixture under
//! `tests/fixtures/scenarios/`, compiled with explicit flags (always
//! `--hostname-override`); the snapshot holds the command line, the warnings
//! and the exact iptables-restore text, in kproxy's (deterministic) order.
//!
//! Every snapshot was reviewed against `shared/spec/kube-proxy-iptables.md`
//! (upstream kube-proxy's `pkg/proxy/iptables/proxier.go`) when accepted.
//! Update with `INSTA_UPDATE=always cargo test -p kproxy-tests --test
//! snapshots_iptables` and review the diff of the `.snap` files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kproxy_tests::{Scratch, compile};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/scenarios").join(name)
}

/// Flags every scenario starts from: the node is `node-a` (the fixtures'
/// Node object), the pod network 10.244.0.0/16.
const BASE: &[&str] = &["--hostname-override=node-a", "--cluster-cidr=10.244.0.0/16"];

/// Compiles `paths` with `args` and renders the snapshot text: the command
/// line, the warnings (paths made relative to `tests/`) and stdout.
fn render(args: &[&str], paths: &[PathBuf]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let (stdout, warnings) = compile(&args, &refs).unwrap_or_else(|e| panic!("compile: {e}"));
    let strip = |s: &str| {
        s.replace(&format!("{}/", root().display()), "")
            .replace(&format!("{}/", std::env::temp_dir().display()), "$TMP/")
    };
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
    out.push_str(&stdout);
    out
}

/// One scenario: `fixture` compiled with [`BASE`] plus `extra` flags.
fn scenario(fixture_name: &str, extra: &[&str]) -> String {
    let mut args: Vec<&str> = BASE.to_vec();
    args.extend_from_slice(extra);
    render(&args, &[fixture(fixture_name)])
}

macro_rules! snap {
    ($test:ident, $fixture:expr $(, $flag:expr)* $(,)?) => {
        #[test]
        fn $test() {
            let text = scenario($fixture, &[$($flag),*]);
            insta::assert_snapshot!(stringify!($test), text);
        }
    };
}

// The scenarios both backends share (tests/src/lib.rs).
kproxy_tests::shared_scenarios!(snap);

// iptables only: probabilities, localhost NodePorts off.
snap!(multi_endpoint_probabilities, "multi-endpoint.yaml");
snap!(
    localhost_nodeports_off,
    "nodeport.yaml",
    "--iptables-localhost-nodeports=false",
);

// Node-level knobs.
#[test]
fn detect_local_none() {
    // No --cluster-cidr: ClusterCIDR mode has no CIDR, so no detector.
    let text = render(
        &["--hostname-override=node-a"],
        &[fixture("local-detector.yaml")],
    );
    insta::assert_snapshot!("detect_local_none", text);
}
snap!(
    masquerade_bit_0,
    "local-detector.yaml",
    "--iptables-masquerade-bit=0",
);
snap!(
    masquerade_bit_31,
    "local-detector.yaml",
    "--iptables-masquerade-bit=31",
);
snap!(
    host_features_empty,
    "local-detector.yaml",
    "--host-features="
);
snap!(
    conntrack_tcp_be_liberal,
    "local-detector.yaml",
    "--conntrack-tcp-be-liberal=true",
);
snap!(standalone, "local-detector.yaml", "--standalone");

// Configuration files: they replace the configuration flags (ignored, with
// a warning) except --hostname-override, which wins over hostnameOverride.
#[test]
fn config_v1alpha1() {
    let cfg = root().join("fixtures/configs/kube-proxy-v1alpha1.yaml");
    let cfg = format!("--config={}", cfg.display());
    let text = render(
        &[
            &cfg,
            "--hostname-override=node-a",
            "--cluster-cidr=10.244.0.0/16",
            "--masquerade-all=true",
            "--iptables-masquerade-bit=14",
            "--iptables-localhost-nodeports=true",
        ],
        &[fixture("config.yaml")],
    );
    insta::assert_snapshot!("config_v1alpha1", text);
}

#[test]
fn config_v1alpha2() {
    let cfg = root().join("fixtures/configs/kube-proxy-v1alpha2.yaml");
    let cfg = format!("--config={}", cfg.display());
    let text = render(
        &[
            &cfg,
            "--hostname-override=node-a",
            "--detect-local-mode=ClusterCIDR",
            "--cluster-cidr=10.244.0.0/16",
            "--nodeport-addresses=10.0.0.0/8",
        ],
        &[fixture("config.yaml")],
    );
    insta::assert_snapshot!("config_v1alpha2", text);
}

// IP families.
#[test]
fn ipv6() {
    let text = render(
        &[
            "--hostname-override=node-a",
            "--cluster-cidr=fd00:10:244::/56",
            "--ip-family=ipv6",
        ],
        &[fixture("ipv6.yaml")],
    );
    insta::assert_snapshot!("ipv6", text);
}
#[test]
fn dual_stack() {
    let text = render(
        &[
            "--hostname-override=node-a",
            "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
            "--ip-family=dual",
        ],
        &[fixture("dual-stack.yaml")],
    );
    insta::assert_snapshot!("dual_stack", text);
}

/// Large-cluster mode: more than 1000 endpoints in total. The input is
/// generated: `big` has 1001 endpoints, `small` two. The snapshot keeps
/// everything except the bulk of `big`'s endpoint rules (the first two
/// endpoints' SEP chains are kept), and counts what was left out.
#[test]
fn large_cluster_mode() {
    let mut yaml = String::new();
    yaml.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\n\
         spec: {type: ClusterIP, clusterIP: 10.96.1.1, ports: [{name: http, port: 80, protocol: TCP}]}\n\
         ---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: small, namespace: default}\n\
         spec: {type: NodePort, clusterIP: 10.96.1.2, ports: [{name: http, port: 80, protocol: TCP, nodePort: 30001}]}\n\
         ---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: small-1, namespace: default, labels: {kubernetes.io/service-name: small}}\n\
         addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\n\
         endpoints:\n- {addresses: [10.250.0.1], nodeName: node-a}\n- {addresses: [10.250.0.2], nodeName: node-b}\n",
    );
    // 1001 endpoints over 11 slices of up to 100 (the controller's default).
    for slice in 0..11 {
        write!(
            yaml,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: big-{slice}, namespace: default, labels: {{kubernetes.io/service-name: big}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n"
        )
        .unwrap();
        for i in (slice * 100)..((slice + 1) * 100).min(1001) {
            writeln!(
                yaml,
                "- {{addresses: [10.240.{}.{}], nodeName: node-b}}",
                i / 250,
                i % 250 + 1
            )
            .unwrap();
        }
    }
    // `$TMP/kproxy-large-cluster-PID-mode/large-cluster.yaml`, shown as
    // `$TMP/large-cluster.yaml`; the directory goes when `dir` is dropped.
    let dir = Scratch::new("kproxy-large-cluster", "mode");
    let path = dir.join("large-cluster.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let text = render(BASE, std::slice::from_ref(&path));
    let text = text.replace(
        &format!("kproxy-large-cluster-{}-mode/", std::process::id()),
        "",
    );

    // The SEP chains `big` jumps to, in rule order.
    let big_svc = text
        .lines()
        .find(|l| {
            l.contains("\"default/big:http cluster IP\"") && l.starts_with("-A KUBE-SERVICES")
        })
        .and_then(|l| l.rsplit(' ').next())
        .expect("big's cluster IP rule")
        .to_string();
    let big_seps: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(&format!("-A {big_svc} ")) && l.contains("-j KUBE-SEP-"))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(big_seps.len(), 1001);
    let elided: std::collections::HashSet<&str> =
        big_seps.iter().skip(2).map(String::as_str).collect();
    let mut kept = String::new();
    let mut left_out = 0usize;
    for line in text.lines() {
        let names_elided = line.split([' ', ':']).any(|w| elided.contains(w));
        if names_elided {
            left_out += 1;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    // 999 declarations + 999 jumps from SVC + 2 rules in each of 999 SEPs.
    assert_eq!(left_out, 999 * 4);
    kept.push_str(&format!(
        "# (left out: {left_out} lines naming the other 999 SEP chains of default/big:http)\n"
    ));
    insta::assert_snapshot!("large_cluster_mode", kept);
}
