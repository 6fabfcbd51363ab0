//! Bad objects on a real node (issue 14): one Service never stops the
//! others.
//!
//! * Names the API server refuses (a `"` in a namespace, `$` in a
//!   LoadBalancer Service's name, a 1,000-character namespace, a newline)
//!   are skipped with a warning, and what is compiled loads with
//!   `iptables-restore`, `nft -f` and `nft -j -f` in a network namespace.
//! * `kproxy run` with a Service whose rules the kernel tool rejects: the
//!   others are served, follow changes, and `/healthz` stays 200; the
//!   Service is reported in the log and the metrics. Validation leaves no
//!   input that makes the tools fail, so the test makes one: the agent
//!   finds `iptables-restore` / `nft` in a directory put first in its
//!   PATH, where a wrapper passes the input to the real tool after
//!   appending a word the tool cannot read to each line naming
//!   `default/poison`. The error and its line number are the real tool's.

mod kernel;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kernel::testbed::Namespaces;
use kernel::traffic::{Outcome, sock};
use kernel::*;
use kproxy_bin::agent::http;
use kproxy_tests::Scratch;

const GOOD: &str = "apiVersion: v1
kind: Service
metadata: {name: good, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.0.0.5
  ports: [{name: http, port: 80, protocol: TCP, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.5}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: good-1, namespace: shop, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.1.0.5], nodeName: n1}]
";

/// A LoadBalancer Service with endpoints, its metadata given as flow text.
fn lb(meta: &str, slice_meta: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {meta}
spec:
  type: LoadBalancer
  clusterIP: 10.0.0.9
  externalTrafficPolicy: Local
  healthCheckNodePort: 30999
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports: [{{name: http, port: 80, protocol: TCP, nodePort: 30090}}]
status: {{loadBalancer: {{ingress: [{{ip: 192.0.2.9}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {slice_meta}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints: [{{addresses: [10.1.0.9], nodeName: n1}}]
"
    )
}

#[test]
fn bad_names_are_skipped_and_the_rest_loads() {
    let test = "bad_names_are_skipped_and_the_rest_loads";
    let long = "n".repeat(1000);
    let bad = [
        lb(
            r#"{name: web, namespace: 'sh"op'}"#,
            r#"{name: web-1, namespace: 'sh"op', labels: {kubernetes.io/service-name: web}}"#,
        ),
        lb(
            "{name: 'lb$1', namespace: shop}",
            "{name: lb-1, namespace: shop, labels: {kubernetes.io/service-name: 'lb$1'}}",
        ),
        lb(
            &format!("{{name: web, namespace: {long}}}"),
            &format!(
                "{{name: web-1, namespace: {long}, labels: {{kubernetes.io/service-name: web}}}}"
            ),
        ),
        lb(
            r#"{name: "we\nb", namespace: shop}"#,
            r#"{name: "we\nb-1", namespace: shop, labels: {kubernetes.io/service-name: "we\nb"}}"#,
        ),
    ];
    let dir = Scratch::new("kproxy", test);
    let input = dir.join("cluster.yaml");
    std::fs::write(&input, format!("{}---\n{GOOD}", bad.join("---\n"))).expect("write");
    for loader in [Loader::Iptables, Loader::NftText, Loader::NftJson] {
        if !gate_loader(test, loader) {
            return;
        }
        let mut args: Vec<String> = ["--hostname-override=n1", "--standalone"]
            .iter()
            .chain(loader.compile_args())
            .map(|s| s.to_string())
            .collect();
        args.push("--ip-family=ipv4".into());
        let (rules, warnings) =
            kproxy_tests::compile(&args, &[&input]).unwrap_or_else(|e| panic!("{loader:?}: {e}"));
        // Each bad Service and each of its slices: one line each.
        assert_eq!(warnings.len(), 2 * bad.len(), "{loader:?}: {warnings:#?}");
        assert!(
            warnings.iter().all(|w| !w.contains('\n') && w.len() < 1000),
            "{warnings:#?}"
        );
        for gone in ["10.0.0.9", "192.0.2.9", "30090"] {
            assert!(!rules.contains(gone), "{loader:?}: {gone} written");
        }
        assert!(rules.contains("192.0.2.5"), "{loader:?}: the good Service");
        let nss = Namespaces::new();
        let ns = nss.create("bad").unwrap_or_else(|e| panic!("{test}: {e}"));
        loader
            .load(&ns, Family::V4, &rules, true)
            .and_then(|()| loader.load(&ns, Family::V4, &rules, false))
            .unwrap_or_else(|e| panic!("{loader:?}: the tool rejected the rules: {e}"));
    }
}

/// The longest names the API server accepts (63-character namespace,
/// Service and port names; an IPv6 endpoint) in every rule kproxy writes
/// for them: the printers accept them (comments at most 255 bytes for
/// iptables, nft names at most 255) and the tools load them, in every
/// layout.
#[test]
fn longest_valid_names_load() {
    let test = "longest_valid_names_load";
    let ns = format!("n{}", "s".repeat(62));
    let name = format!("s{}", "v".repeat(62));
    let port = format!("p{}", "o".repeat(62));
    let text = |family: &str, cluster_ip: &str, lb: &str, src: &str, ep: &str| {
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  type: LoadBalancer
  clusterIP: {cluster_ip}
  ipFamilies: [{family}]
  externalTrafficPolicy: Local
  healthCheckNodePort: 30999
  sessionAffinity: ClientIP
  externalIPs: [{lb}]
  loadBalancerSourceRanges: [{src}]
  ports: [{{name: {port}, port: 80, protocol: TCP, nodePort: 30090}}]
status: {{loadBalancer: {{ingress: [{{ip: {lb}}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: {family}
ports: [{{name: {port}, port: 8080, protocol: TCP}}]
endpoints: [{{addresses: [{ep}], nodeName: n1}}, {{addresses: [{ep}0], nodeName: n2}}]
"
        )
    };
    let dir = Scratch::new("kproxy", test);
    let cases = [
        (
            Family::V4,
            text(
                "IPv4",
                "10.0.0.9",
                "192.0.2.9",
                "203.0.113.0/24",
                "10.1.0.9",
            ),
        ),
        (
            Family::V6,
            text(
                "IPv6",
                "fd00:10:96::9",
                "2001:db8::9",
                "2001:db8:1::/48",
                "fd00:1111:2222:3333:4444:5555:6666:777",
            ),
        ),
    ];
    for (family, manifest) in cases {
        let input = dir.join(format!("{family:?}.yaml"));
        std::fs::write(&input, manifest).expect("write");
        let fam = match family {
            Family::V4 => "--ip-family=ipv4",
            Family::V6 => "--ip-family=ipv6",
        };
        for (loader, extra) in [
            (Loader::Iptables, None),
            (Loader::Iptables, Some("--kube-proxy-version=1.5")),
            (Loader::NftText, None),
            (Loader::NftJson, None),
        ] {
            if !gate_loader(test, loader) {
                return;
            }
            let mut args: Vec<String> = ["--hostname-override=n1", "--standalone", fam]
                .iter()
                .chain(loader.compile_args())
                .chain(extra.as_slice())
                .map(|s| s.to_string())
                .collect();
            if family == Family::V6 {
                args.push("--cluster-cidr=fd00:1::/64".into());
            }
            let (rules, warnings) = kproxy_tests::compile(&args, &[&input])
                .unwrap_or_else(|e| panic!("{family:?} {loader:?} {extra:?}: {e}"));
            assert!(warnings.is_empty(), "{warnings:#?}");
            assert!(rules.contains(&name), "{loader:?}: the Service");
            let nss = Namespaces::new();
            let netns = nss.create("long").unwrap_or_else(|e| panic!("{test}: {e}"));
            loader
                .load(&netns, family, &rules, true)
                .and_then(|()| loader.load(&netns, family, &rules, false))
                .unwrap_or_else(|e| panic!("{family:?} {loader:?} {extra:?}: rejected: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------
// `kproxy run` with a Service the tool rejects.

/// `name: default/NAME`, clusterIP 10.79.255.N, served by pod `pod`.
fn service(name: &str, n: u8, pod: u8, port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: 10.79.255.{n}
  ports: [{{port: {port}, targetPort: 9376, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{{addresses: [10.76.0.{pod}], nodeName: node1}}]
ports: [{{name: \"\", port: 9376, protocol: TCP}}]
"
    )
}

/// Wrappers of the restore tools in `dir` (see the module docs).
fn poison_tools(dir: &Path) {
    for (name, word) in [
        ("iptables-restore", "-m kproxy-no-such-match"),
        ("nft", "kproxy-no-such-word"),
    ] {
        let real = tool(name).unwrap_or_else(|| panic!("{name} not found"));
        let script = format!(
            "#!/bin/sh\n# Test hook: the lines of default/poison made unreadable to the real tool.\n\
             sed '/default\\/poison/s/$/ {word}/' | {} \"$@\"\n",
            real.display()
        );
        let path = dir.join(name);
        std::fs::write(&path, script).expect("write wrapper");
        Command::new("chmod")
            .args(["+x", &path.to_string_lossy()])
            .status()
            .expect("chmod");
    }
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill() of our own child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = self.child.wait();
        }
    }
}

fn agent_isolates_rejected_service(test: &str, backend: &str, loader: Loader) {
    let Some(bed) = testbed(test, loader) else {
        return;
    };
    let dir = Scratch::new("kproxy", test);
    let manifests = dir.join("manifests");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&manifests).expect("scratch dir");
    std::fs::create_dir_all(&bin).expect("scratch dir");
    poison_tools(&bin);
    let write = |file: &str, text: String| {
        std::fs::write(manifests.join(file), text).expect("write manifest");
    };
    write("hostnames.yaml", service("hostnames", 4, 9, 80));
    write("poison.yaml", service("poison", 6, 11, 80));
    write("web.yaml", service("web", 5, 10, 80));

    let log = dir.join("agent.log");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kproxy = kproxy_tests::kproxy_binary().to_string_lossy().to_string();
    let source = format!("dir:{}", manifests.display());
    let child = Command::new(tool("ip").unwrap_or_else(|| "ip".into()))
        .args(["netns", "exec", &bed.ns(Ns::Node), &kproxy, "run"])
        .args(["--source", &source, "--backend", backend])
        // The rejection is the poisoned tool's: the nftables agent is told
        // to use `nft -f` (its default is a netlink batch).
        .args(if backend == "nftables" {
            &["--nftables-apply=nft"][..]
        } else {
            &[]
        })
        .args(["--hostname-override", "node1", "--ip-family", "ipv4"])
        .args(["--cluster-cidr", "10.76.0.0/14"])
        .args(["--min-sync-period", "0s", "--poll-interval", "20ms"])
        .args(NODE_ADDRESS_ARGS_V4)
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .args(["--metrics-bind-address", "127.0.0.1:10249"])
        .env("PATH", path)
        .env("KPROXY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn kproxy run");
    let agent = Agent { child, log };
    let quick = Duration::from_millis(300);
    let answers = |ip: &str, pod: &str| {
        matches!(
            bed.tcp_within(Ns::Client, None, sock(ip, 80), quick),
            Outcome::Answered { pod: p, .. } if p == pod
        )
    };
    let within = |what: &str, limit: Duration, probe: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !probe() {
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?}\n--- kproxy run log ---\n{}\n{}",
                agent.log(),
                bed.dump()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    };

    // The first sync fails on poison's rules; the others are synced at once.
    let first = within(
        "first sync without poison",
        Duration::from_secs(10),
        &|| answers("10.79.255.4", "pod-9") && answers("10.79.255.5", "pod-10"),
    );
    assert!(
        !matches!(
            bed.tcp_within(Ns::Client, None, sock("10.79.255.6", 80), quick),
            Outcome::Answered { .. }
        ),
        "poison must not be served"
    );
    let log = agent.log();
    assert!(
        log.contains("RulesRejected") && log.contains("default/poison"),
        "{log}"
    );

    // Other Services keep following changes (partial syncs).
    write("hostnames.yaml", service("hostnames", 4, 10, 80));
    let moved = within("hostnames moved to pod-10", Duration::from_secs(2), &|| {
        answers("10.79.255.4", "pod-10")
    });
    // poison changes: tried again, rejected again, skipped again; web still follows.
    write("poison.yaml", service("poison", 6, 11, 81));
    write("web.yaml", service("web", 5, 9, 80));
    within("web moved to pod-9", Duration::from_secs(3), &|| {
        answers("10.79.255.5", "pod-9")
    });
    within("poison skipped again", Duration::from_secs(3), &|| {
        agent.log().matches("RulesRejected").count() >= 2
    });
    println!("served without poison after {first:?}; a change followed in {moved:?}");

    let (healthz, metrics) = bed.in_ns(Ns::Node, || {
        (
            http::get("127.0.0.1:10256".parse().expect("addr"), "/healthz"),
            http::get("127.0.0.1:10249".parse().expect("addr"), "/metrics"),
        )
    });
    let (code, body) = healthz.expect("GET /healthz");
    assert_eq!(code, 200, "{body}");
    let (_, body) = metrics.expect("GET /metrics");
    for want in [
        "kproxy_sync_proxy_rules_skipped_services 1",
        "kproxy_sync_proxy_rules_skipped_services_total 2",
    ] {
        assert!(body.contains(want), "{want} missing from /metrics:\n{body}");
    }
    drop(agent);
}

#[test]
fn agent_isolates_rejected_service_iptables() {
    agent_isolates_rejected_service(
        "agent_isolates_rejected_service_iptables",
        "iptables",
        Loader::Iptables,
    );
}

#[test]
fn agent_isolates_rejected_service_nftables() {
    agent_isolates_rejected_service(
        "agent_isolates_rejected_service_nftables",
        "nftables",
        Loader::NftText,
    );
}
