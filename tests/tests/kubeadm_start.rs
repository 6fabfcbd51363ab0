//! kproxy started the way kubeadm starts kube-proxy (issue 12): `kproxy run
//! --config=FILE --hostname-override=NODE`, no `--source`, no
//! `--kubeconfig`, no in-cluster environment: the API server (the fixture,
//! [`kproxy_tests::apiserver`]) is reached only through the configuration's
//! `clientConnection.kubeconfig`, as kubeadm's ConfigMap has it.
//!
//! In the kernel testbed's node namespace (needs root; see
//! `kernel_e2e.rs`): `--init-only` sets the per-namespace sysctls the
//! configuration asks for (conntrack TCP/UDP timeouts, `tcpBeLiberal`,
//! `route_localnet` for localhost node ports) and writes no rule; then the
//! agent syncs from the API (Services, EndpointSlices and ServiceCIDRs
//! listed with kube-proxy's label selector), follows a watch event and a
//! relist after `410 Gone`, runs with the configured OOM score; and
//! `--cleanup` removes the rules.

mod kernel;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kernel::traffic::{Outcome, sock};
use kernel::{Loader, Ns, netns_exec, tool};
use kproxy_tests::Scratch;
use kproxy_tests::apiserver::{
    Fixture, NODES, SERVICE_CIDRS, SERVICES, SLICES, hostnames_service as service,
    hostnames_slice as slice, kubeconfig,
};
use serde_json::{Value, json};

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.140.0.2"}]}})
}

fn service_cidr() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.79.0.0/16"]}})
}

/// The sysctls the configuration asks for, with the values expected (all
/// above the kernel's defaults: kube-proxy only raises them).
const SYSCTLS: [(&str, &str); 6] = [
    (
        "net/netfilter/nf_conntrack_tcp_timeout_established",
        "500000",
    ),
    ("net/netfilter/nf_conntrack_tcp_timeout_close_wait", "3600"),
    ("net/netfilter/nf_conntrack_tcp_be_liberal", "1"),
    ("net/netfilter/nf_conntrack_udp_timeout", "45"),
    ("net/netfilter/nf_conntrack_udp_timeout_stream", "200"),
    ("net/ipv4/conf/all/route_localnet", "1"),
];

fn config(kubeconfig: &Path) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 10.76.0.0/14
clientConnection:
  kubeconfig: {}
  qps: 50
  burst: 100
  contentType: application/vnd.kubernetes.protobuf
  acceptContentTypes: \"\"
oomScoreAdj: 321
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 500000s
  tcpCloseWaitTimeout: 1h0m0s
  tcpBeLiberal: true
  udpTimeout: 45s
  udpStreamTimeout: 200s
",
        kubeconfig.display()
    )
}

fn sysctl(ns: &str, key: &str) -> String {
    netns_exec(ns, &["cat", &format!("/proc/sys/{key}")])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// `kproxy run ARGS` in the node's namespace, as kubeadm's DaemonSet runs
/// kube-proxy: no in-cluster environment, no kubeconfig but the
/// configuration's.
fn kproxy_in(ns: &str, home: &Path, args: &[&str], log: &Path) -> Command {
    let mut cmd = Command::new(tool("ip").unwrap_or_else(|| "ip".into()));
    cmd.args(["netns", "exec", ns])
        .arg(kproxy_tests::kproxy_binary())
        .arg("run")
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .env("KPROXY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    cmd
}

fn kube_services_chain(ns: &str) -> bool {
    netns_exec(ns, &["iptables-save"])
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(":KUBE-SERVICES"))
}

#[test]
fn kubeadm_command_line_follows_the_api() {
    let Some(bed) = kernel::testbed("kubeadm_command_line_follows_the_api", Loader::Iptables)
    else {
        return;
    };
    let node_ns = bed.ns(Ns::Node);
    let fx = Fixture::default();
    fx.put(SERVICES, service());
    fx.put(SLICES, slice(&[9, 10]));
    fx.put(NODES, node());
    fx.put(SERVICE_CIDRS, service_cidr());
    let listener = bed.in_ns(Ns::Node, || TcpListener::bind("127.0.0.1:0").expect("bind"));
    let port = fx.serve_on(listener);
    let kc = kubeconfig(port);
    let dir = Scratch::new("kproxy-kubeadm", "start");
    let cfg = dir.join("config.conf");
    std::fs::write(&cfg, config(&kc)).expect("write config");
    let cfg_arg = format!("--config={}", cfg.display());
    let log = dir.join("kproxy.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The conntrack sysctls exist once nf_conntrack is loaded.
    let _ = netns_exec(&node_ns, &["conntrack", "-L"]);
    let before: Vec<String> = SYSCTLS.iter().map(|(k, _)| sysctl(&node_ns, k)).collect();
    assert!(
        before.iter().all(|v| v.parse::<u64>().is_ok()),
        "sysctls unreadable in the node's namespace (nf_conntrack loaded?): {before:?}"
    );

    // --init-only: the privileged set-up, no rules, exit.
    let started = Instant::now();
    let status = kproxy_in(
        &node_ns,
        &dir,
        &[&cfg_arg, "--hostname-override=node1", "--init-only"],
        &log,
    )
    .status()
    .expect("run kproxy --init-only");
    assert!(status.success(), "--init-only failed\n{}", read_log());
    assert!(started.elapsed() < Duration::from_secs(10));
    for (key, want) in SYSCTLS {
        assert_eq!(
            sysctl(&node_ns, key),
            want,
            "{key} after --init-only\n{}",
            read_log()
        );
    }
    assert!(!kube_services_chain(&node_ns), "--init-only wrote rules");

    // The agent, with kubeadm's command line.
    let mut child = kproxy_in(
        &node_ns,
        &dir,
        &[&cfg_arg, "--hostname-override=node1"],
        &log,
    )
    .spawn()
    .expect("spawn kproxy run");
    let svc = sock("10.79.255.4", 80);
    let quick = Duration::from_millis(300);
    let until = |what: &str, child: &mut std::process::Child, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what}: kproxy run exited ({status})\n{}", read_log());
            }
            if start.elapsed() > Duration::from_secs(15) {
                // SAFETY: kill() of our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                let _ = child.wait();
                panic!(
                    "{what}: not within 15 s\n--- kproxy run log ---\n{}\n{}",
                    read_log(),
                    bed.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{what}: {:?}", start.elapsed());
    };
    until("first sync from the API", &mut child, &|| {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Answered { .. }
        )
    });
    {
        let a = fx.api();
        let selector = "labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name";
        for path in [SERVICES, SLICES, SERVICE_CIDRS] {
            assert!(
                a.requests
                    .iter()
                    .any(|r| r.starts_with(path) && r.contains(selector)),
                "{path} listed without kube-proxy's selector: {:?}",
                a.requests
            );
        }
    }
    // The configured OOM score (raised, which needs no privilege; the
    // default -999 needs CAP_SYS_RESOURCE).
    let oom =
        std::fs::read_to_string(format!("/proc/{}/oom_score_adj", child.id())).unwrap_or_default();
    assert_eq!(oom.trim(), "321", "{}", read_log());

    // A watch event: scaled to pod-11.
    fx.put(SLICES, slice(&[9, 10, 11]));
    until("watch event (scale)", &mut child, &|| {
        (0..6).any(|_| {
            matches!(bed.tcp_within(Ns::Client, None, svc, quick),
                Outcome::Answered { pod, .. } if pod == "pod-11")
        })
    });
    // 410 Gone after the slice went away unseen: the relist empties it.
    fx.delete(SLICES, "default/hostnames-1", false);
    fx.expire();
    fx.drop_watches();
    until("relist after 410", &mut child, &|| {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Refused { .. }
        )
    });
    // SAFETY: kill() of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "{}", read_log());
    assert!(
        kube_services_chain(&node_ns),
        "the rules stay after SIGTERM"
    );

    // --cleanup removes them.
    let status = kproxy_in(&node_ns, &dir, &["--cleanup"], &log)
        .status()
        .expect("run kproxy --cleanup");
    assert!(status.success(), "--cleanup failed\n{}", read_log());
    assert!(
        !kube_services_chain(&node_ns),
        "--cleanup left KUBE-SERVICES"
    );
}
