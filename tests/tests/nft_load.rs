//! Loads kproxy's nftables output into empty network namespaces with the
//! real `nft`: the native transaction (`nft -f`) and the JSON batch
//! (`nft -j -f`) must both load, and `nft list ruleset` must show the same
//! state for both (nft 1.0.x drops table/chain/set/map comments given in
//! JSON, so those comment lines are ignored).
//!
//! Needs root, `ip` and `nft`. Without them the test prints a visible
//! `SKIPPED` line and passes, except when `CI=true`, where it fails.

use std::path::Path;

use kproxy_tests::netns::{Netns, skip_without_nft};

use kproxy_tests::{Scratch, compile, read_args};

/// Loads `input` with `nft ARGS -f -` into a fresh namespace; returns `nft list ruleset`.
fn load(args: &[&str], input: &str) -> Result<String, String> {
    let ns = Netns::new("kproxy-nftload");
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["-f", "-"]);
    ns.nft(&full, input)?;
    ns.nft(&["list", "ruleset"], "")
}

fn without_object_comments(listing: &str) -> String {
    listing
        .lines()
        .filter(|l| {
            let t = l.trim();
            !(t.starts_with("comment \"") && t.ends_with('"') && !t[9..t.len() - 1].contains('"'))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn check(name: &str, args: &[String], input: &Path) -> Result<(), String> {
    let (native, _) = compile(args, &[input])?;
    let mut json_args = args.to_vec();
    json_args.push("--backend=nftables-json".into());
    let (json, _) = compile(&json_args, &[input])?;
    let native_state = load(&[], &native).map_err(|e| format!("{name}: nft -f failed: {e}"))?;
    let json_state = load(&["-j"], &json).map_err(|e| format!("{name}: nft -j -f failed: {e}"))?;
    if !native_state.contains("comment \"rules for kube-proxy\"") {
        return Err(format!("{name}: native load lost the table comment"));
    }
    // Reloading nft's own listing gives the same state (a sanity check of the listing).
    let reloaded = load(&[], &native_state).map_err(|e| format!("{name}: reload failed: {e}"))?;
    if reloaded != native_state {
        return Err(format!("{name}: listing does not reload identically"));
    }
    let a = without_object_comments(&native_state);
    let b = without_object_comments(&json_state);
    if a != b {
        return Err(format!(
            "{name}: native and JSON states differ\n--- native\n{a}\n--- json\n{b}"
        ));
    }
    Ok(())
}

#[test]
fn goldens_load_natively_and_as_json() {
    if skip_without_nft("nft_load") {
        return;
    }
    let mut failures = Vec::new();
    for dir in kproxy_tests::golden_cases("nftables") {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        match check(
            &name,
            &read_args(&dir.join("args")),
            &dir.join("input.yaml"),
        ) {
            Ok(()) => println!("ok   {name}"),
            Err(e) => {
                println!("FAIL {e}");
                failures.push(name);
            }
        }
    }
    assert!(failures.is_empty(), "failed: {failures:?}");
}

const DUAL_STACK: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns1}
spec:
  type: LoadBalancer
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: RequireDualStack
  clusterIP: 172.30.0.10
  clusterIPs: [172.30.0.10, "fd00:172:30::10"]
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP, nodePort: 30053}
  loadBalancerSourceRanges: [203.0.113.0/25, "2001:db8:99::/64", 192.168.0.0/24]
status:
  loadBalancer:
    ingress: [{ip: 1.2.3.4}, {ip: "2001:db8:ffff::4"}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: ns2}
spec:
  ipFamilies: [IPv6]
  clusterIP: "fd00:172:30::20"
  clusterIPs: ["fd00:172:30::20"]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports:
  - {name: p, port: 8080, protocol: SCTP}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: ns3}
spec:
  type: NodePort
  clusterIP: 172.30.0.30
  clusterIPs: [172.30.0.30]
  externalIPs: [192.168.99.30]
  ports:
  - {port: 443, protocol: TCP, nodePort: 30443}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, namespace: ns1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- {addresses: [10.0.1.1], nodeName: test-node}
- {addresses: [10.0.2.1], nodeName: other-node}
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 5353, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, namespace: ns1, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
endpoints:
- {addresses: ["fd00:10::1:1"], nodeName: test-node}
- {addresses: ["fd00:10::2:1"], nodeName: test-node}
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 5353, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sticky-1, namespace: ns2, labels: {kubernetes.io/service-name: sticky}}
addressType: IPv6
endpoints:
- {addresses: ["fd00:10::3:1"], nodeName: test-node}
- {addresses: ["fd00:10::3:2"], nodeName: other-node}
ports:
- {name: p, port: 9000, protocol: SCTP}
"#;

#[test]
fn dual_stack_loads_natively_and_as_json() {
    if skip_without_nft("nft_load") {
        return;
    }
    let dir = Scratch::new("kproxy-nftload", "dual-stack");
    let input = dir.join("dual.yaml");
    std::fs::write(&input, DUAL_STACK).expect("write input");
    let base: Vec<String> = kproxy_tests::DUAL_STACK_ARGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let variants: Vec<(&str, Vec<&str>)> = vec![
        ("dual, all node addresses", vec!["--ip-family=dual"]),
        (
            "dual, loopback node ports, masquerade all",
            vec![
                "--ip-family=dual",
                "--nodeport-addresses=127.0.0.0/8,192.168.0.0/24,::1/128",
                "--masquerade-all=true",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, extra) in variants {
        let mut args = base.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        match check(name, &args, &input) {
            Ok(()) => println!("ok   {name}"),
            Err(e) => {
                println!("FAIL {e}");
                failures.push(name);
            }
        }
    }
    assert!(failures.is_empty(), "failed: {failures:?}");
}

/// The fixtures of `snapshots_nftables.rs` that exercise other spellings
/// (IPv6 single-endpoint DNAT, interface detectors, affinity, localhost
/// NodePorts, ServiceCIDRs) load both ways and give the same state.
#[test]
fn scenario_fixtures_load_natively_and_as_json() {
    if skip_without_nft("nft_load") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
    let base = ["--proxy-mode=nftables", "--hostname-override=node-a"];
    let cases: &[(&str, &[&str])] = &[
        (
            "ipv6.yaml",
            &["--cluster-cidr=fd00:10:244::/56", "--ip-family=ipv6"],
        ),
        (
            "dual-stack.yaml",
            &[
                "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
                "--ip-family=dual",
            ],
        ),
        (
            "local-detector.yaml",
            &[
                "--detect-local-mode=BridgeInterface",
                "--pod-bridge-interface=cbr0",
            ],
        ),
        (
            "local-detector.yaml",
            &[
                "--detect-local-mode=InterfaceNamePrefix",
                "--pod-interface-name-prefix=veth",
            ],
        ),
        ("session-affinity.yaml", &["--cluster-cidr=10.244.0.0/16"]),
        (
            "etp-local-without-local.yaml",
            &["--cluster-cidr=10.244.0.0/16"],
        ),
        ("no-endpoints.yaml", &["--cluster-cidr=10.244.0.0/16"]),
        ("lb-source-ranges.yaml", &["--cluster-cidr=10.244.0.0/16"]),
        (
            "nodeport-protocols.yaml",
            &[
                "--feature-gates=KubeProxyNFTablesLocalhostNodePorts=true",
                "--nodeport-addresses=192.168.0.0/24,127.0.0.0/8",
                "--node-address=127.0.0.1/8",
                "--node-address=192.168.0.10/24",
            ],
        ),
        // Not adjacent: nft merges 10.96.0.0/16 + 10.97.0.0/16 into
        // `{ 10.96.0.0/15 }`, whose listing reloads as a plain prefix.
        (
            "clusterip.yaml",
            &["--service-cidr=10.96.0.0/16,10.100.0.0/16"],
        ),
    ];
    let mut failures = Vec::new();
    for (fixture, extra) in cases {
        let args: Vec<String> = base
            .iter()
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect();
        let name = format!("{fixture} {}", extra.join(" "));
        match check(&name, &args, &root.join(fixture)) {
            Ok(()) => println!("ok   {name}"),
            Err(e) => {
                println!("FAIL {e}");
                failures.push(name);
            }
        }
    }
    assert!(failures.is_empty(), "failed: {failures:?}");
}
