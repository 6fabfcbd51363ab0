//! `kproxy run --source kube` against an API server fixture: an HTTP
//! server in the test that speaks list+watch for Services, EndpointSlices
//! and Nodes (resource versions, chunked watch streams, `410 Gone`), with
//! knobs to drop watches, expire resource versions and fail requests.
//!
//! Checks: the first sync waits for every initial list; watch events
//! arrive; a dropped watch resumes; a 410 forces a relist that replaces the
//! state (an object deleted while the watch was down goes away); server
//! errors are retried, never fatal. And the real `kproxy run --source kube`
//! in the kernel testbed (needs root; see `kernel_e2e.rs`) follows the
//! fixture: first sync, a watch event, a relist after 410 Gone; and a
//! slice change annotated `endpoints.kubernetes.io/last-change-trigger-time`
//! is observed in `kubeproxy_network_programming_duration_seconds` (changes
//! without it are not).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

mod kernel;

use kernel::traffic::{Outcome, sock};
use kernel::{Loader, Ns, tool};
use kproxy_bin::agent::http;
use kproxy_bin::agent::kube::KubeSource;
use kproxy_bin::agent::latency;
use serde_json::{Value, json};

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const NODES: &str = "/api/v1/nodes";

#[derive(Default)]
struct Api {
    rv: u64,
    /// (resource path, namespace/name) -> object.
    objects: BTreeMap<(String, String), Value>,
    /// Every change: (rv, path, type, object).
    events: Vec<(u64, String, String, Value)>,
    /// Watches from a resource version below this get 410 Gone.
    expired_below: u64,
    /// Bumped to close every open watch.
    drops: u64,
    /// The next N requests fail with 500.
    fail_next: usize,
    /// Requests seen (path?query).
    requests: Vec<String>,
}

#[derive(Clone, Default)]
struct Fixture(Arc<Mutex<Api>>);

fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("")
    )
}

impl Fixture {
    fn api(&self) -> std::sync::MutexGuard<'_, Api> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Adds or replaces an object, with a watch event.
    fn put(&self, path: &str, mut obj: Value) {
        let mut a = self.api();
        a.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(a.rv.to_string());
        let k = (path.to_string(), key(&obj));
        let kind = if a.objects.contains_key(&k) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        a.objects.insert(k, obj.clone());
        let rv = a.rv;
        a.events.push((rv, path.into(), kind.into(), obj));
    }
    /// Deletes an object; `event`: with a watch event (else silently, as
    /// if the event was compacted away).
    fn delete(&self, path: &str, name: &str, event: bool) {
        let mut a = self.api();
        a.rv += 1;
        if let Some(mut obj) = a.objects.remove(&(path.to_string(), name.to_string()))
            && event
        {
            obj["metadata"]["resourceVersion"] = json!(a.rv.to_string());
            let rv = a.rv;
            a.events.push((rv, path.into(), "DELETED".into(), obj));
        }
    }
    fn drop_watches(&self) {
        self.api().drops += 1;
    }
    /// Every resource version seen so far is too old from now on (as after
    /// a compaction): watches from them get 410 Gone; a relist gets a
    /// resource version that can be watched from.
    fn expire(&self) {
        let mut a = self.api();
        a.rv += 1;
        a.expired_below = a.rv;
        a.events.clear();
    }

    fn serve(&self) -> u16 {
        self.serve_on(TcpListener::bind("127.0.0.1:0").expect("bind"))
    }

    /// Serves on `listener` (bound in whatever network namespace).
    fn serve_on(&self, listener: TcpListener) -> u16 {
        let port = listener.local_addr().expect("addr").port();
        let me = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.handle(stream));
            }
        });
        port
    }

    fn handle(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut out = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            // Headers.
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let params: BTreeMap<&str, &str> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            {
                let mut a = self.api();
                a.requests.push(target.clone());
                if a.fail_next > 0 {
                    a.fail_next -= 1;
                    drop(a);
                    let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is sad","reason":"InternalError","code":500}"#;
                    let _ = write!(
                        out,
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
            }
            if params.get("watch") == Some(&"true") {
                let from: u64 = params
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.watch(&mut out, path, from);
                return;
            }
            let body = self.list(path);
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    }

    fn list(&self, path: &str) -> String {
        let a = self.api();
        let items: Vec<&Value> = a
            .objects
            .iter()
            .filter(|((p, _), _)| p == path)
            .map(|(_, o)| o)
            .collect();
        json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": a.rv.to_string()}, "items": items})
            .to_string()
    }

    fn watch(&self, out: &mut TcpStream, path: &str, from: u64) {
        let chunk = |out: &mut TcpStream, v: &Value| -> bool {
            let text = format!("{v}\n");
            write!(out, "{:x}\r\n{text}\r\n", text.len()).is_ok() && out.flush().is_ok()
        };
        if write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
        let (expired, drops) = {
            let a = self.api();
            (from < a.expired_below, a.drops)
        };
        if expired {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {from}")}});
            chunk(out, &gone);
            let _ = write!(out, "0\r\n\r\n");
            return;
        }
        let mut sent = from;
        let start = Instant::now();
        loop {
            let (events, dropped) = {
                let a = self.api();
                let evs: Vec<(u64, Value)> = a
                    .events
                    .iter()
                    .filter(|(rv, p, _, _)| *rv > sent && p == path)
                    .map(|(rv, _, t, o)| (*rv, json!({"type": t, "object": o})))
                    .collect();
                (evs, a.drops != drops)
            };
            if dropped {
                // Close without the final chunk: a broken watch.
                return;
            }
            for (rv, ev) in events {
                if !chunk(out, &ev) {
                    return;
                }
                sent = rv;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = write!(out, "0\r\n\r\n");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

fn slice(svc: &str, ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node1"}],
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]})
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.140.0.2"}]}})
}

fn kubeconfig(port: u16) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("kproxy-kubeconfig-{}-{port}", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             contexts:\n- name: t\n  context: {{cluster: t, user: u}}\ncurrent-context: t\n\
             users:\n- name: u\n  user: {{}}\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

fn services(src: &KubeSource) -> Vec<String> {
    let inv = src.inventory();
    inv.state
        .services
        .iter()
        .map(|s| s.id.name.clone())
        .collect()
}

fn wait(src: &mut KubeSource, what: &str, f: impl Fn(&KubeSource) -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let _ = src.poll();
        if f(src) {
            eprintln!("{what}: {:?}", start.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within 20 s (services now {:?})", services(src));
}

#[test]
fn kube_source_lists_watches_and_relists() {
    let fx = Fixture::default();
    fx.put(SERVICES, service("a", "10.96.0.10"));
    fx.put(SLICES, slice("a", "10.0.0.1"));
    fx.put(NODES, node());
    let port = fx.serve();
    let cfg = kubeconfig(port);
    let mut src = KubeSource::start(Some(&cfg), "node1").expect("start");

    // The initial lists.
    wait(&mut src, "initial lists", KubeSource::synced);
    let inv = src.inventory();
    assert_eq!(services(&src), ["a"]);
    assert_eq!(inv.state.endpoint_slices.len(), 1);
    assert_eq!(inv.nodes.len(), 1);
    assert!(src.node_eligible());
    {
        let a = fx.api();
        assert!(
            a.requests
                .iter()
                .any(|r| r.starts_with(NODES) && r.contains("fieldSelector=metadata.name%3Dnode1")),
            "the Node watch selects this node: {:?}",
            a.requests
        );
    }

    // A watch event.
    fx.put(SERVICES, service("b", "10.96.0.11"));
    wait(&mut src, "watch event", |s| services(s) == ["a", "b"]);

    // A dropped watch resumes from its resource version.
    fx.drop_watches();
    std::thread::sleep(Duration::from_millis(50));
    fx.put(SERVICES, service("c", "10.96.0.12"));
    wait(&mut src, "after a dropped watch", |s| {
        services(s) == ["a", "b", "c"]
    });

    // 410 Gone: "a" was deleted while the watch was down and its event
    // compacted away; the relist replaces the state.
    fx.delete(SERVICES, "default/a", false);
    fx.expire();
    fx.drop_watches();
    fx.put(SERVICES, service("d", "10.96.0.13"));
    wait(&mut src, "relist after 410", |s| {
        services(s) == ["b", "c", "d"]
    });
    {
        let a = fx.api();
        let lists = a
            .requests
            .iter()
            .filter(|r| r.starts_with(SERVICES) && !r.contains("watch=true"))
            .count();
        assert!(lists >= 2, "no relist: {:?}", a.requests);
    }

    // Server errors are retried, never fatal.
    fx.api().fail_next = 3;
    fx.drop_watches();
    std::thread::sleep(Duration::from_millis(50));
    fx.put(SERVICES, service("e", "10.96.0.14"));
    wait(&mut src, "after server errors", |s| {
        services(s) == ["b", "c", "d", "e"]
    });
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn kube_source_waits_for_every_initial_list() {
    let fx = Fixture::default();
    fx.put(SERVICES, service("a", "10.96.0.10"));
    // Every request fails for a while: nothing is synced, nothing exits.
    fx.api().fail_next = 1_000_000;
    let port = fx.serve();
    let cfg = kubeconfig(port);
    let mut src = KubeSource::start(Some(&cfg), "node1").expect("start");
    std::thread::sleep(Duration::from_millis(500));
    let _ = src.poll();
    assert!(!src.synced());
    fx.api().fail_next = 0;
    wait(&mut src, "initial lists after errors", KubeSource::synced);
    assert_eq!(services(&src), ["a"]);
    let _ = std::fs::remove_file(cfg);
}

// ---------------------------------------------------------------------------
// The real agent with `--source kube`, in the kernel testbed.

/// The `kproxy` binary ([`kproxy_tests::kproxy_binary`]).
fn kproxy_bin() -> PathBuf {
    kproxy_tests::kproxy_binary().to_path_buf()
}

fn hostnames_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hostnames", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.79.255.4", "clusterIPs": ["10.79.255.4"],
                 "ports": [{"port": 80, "targetPort": 9376, "protocol": "TCP"}]}})
}

fn hostnames_slice(pods: &[u8]) -> Value {
    let eps: Vec<Value> = pods
        .iter()
        .map(|p| json!({"addresses": [format!("10.76.0.{p}")], "conditions": {"ready": true}, "nodeName": "node1"}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "hostnames-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "hostnames"}},
        "addressType": "IPv4", "endpoints": eps,
        "ports": [{"name": "", "port": 9376, "protocol": "TCP"}]})
}

fn agent_follows_the_api(test: &str, backend: &str, loader: Loader) {
    let Some(bed) = kernel::testbed(test, loader) else {
        return;
    };
    let fx = Fixture::default();
    fx.put(SERVICES, hostnames_service());
    fx.put(SLICES, hostnames_slice(&[9, 10]));
    fx.put(NODES, node());
    // The API server listens in the node's namespace, where the agent runs.
    let listener = bed.in_ns(Ns::Node, || TcpListener::bind("127.0.0.1:0").expect("bind"));
    let port = fx.serve_on(listener);
    let cfg = kubeconfig(port);
    let log = cfg.with_extension("log");
    let node_ns = bed.ns(Ns::Node);
    let mut child = std::process::Command::new(tool("ip").unwrap_or_else(|| "ip".into()))
        .args(["netns", "exec", &node_ns])
        .arg(kproxy_bin())
        .args(["run", "--source", "kube", "--kubeconfig"])
        .arg(&cfg)
        .args(["--backend", backend, "--hostname-override", "node1"])
        .args(["--ip-family", "ipv4", "--cluster-cidr", "10.76.0.0/14"])
        .args(["--min-sync-period", "0s", "--poll-interval", "20ms"])
        .args([
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            "127.0.0.1:10249",
        ])
        .env("KPROXY_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn kproxy run");
    let svc = sock("10.79.255.4", 80);
    let quick = Duration::from_millis(300);
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > Duration::from_secs(15) {
                // SAFETY: kill() of our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                panic!(
                    "{what}: not within 15 s\n--- kproxy run log ---\n{}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default(),
                    bed.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{what}: {:?}", start.elapsed());
    };
    until("first sync from the API", &|| {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Answered { .. }
        )
    });
    // A watch event: scaled to pod-11.
    fx.put(SLICES, hostnames_slice(&[9, 10, 11]));
    until("watch event (scale)", &|| {
        (0..6).any(|_| {
            matches!(bed.tcp_within(Ns::Client, None, svc, quick),
                Outcome::Answered { pod, .. } if pod == "pod-11")
        })
    });
    // Network programming latency: nothing observed for changes without
    // a trigger time; one observation for the annotated change.
    let programmed = || -> Option<u64> {
        let (_, body) = bed
            .in_ns(Ns::Node, || {
                http::get("127.0.0.1:10249".parse().expect("addr"), "/metrics")
            })
            .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("kubeproxy_network_programming_duration_seconds_count "))
            .and_then(|n| n.trim().parse().ok())
    };
    assert_eq!(programmed(), Some(0), "no trigger time, no observation");
    let mut annotated = hostnames_slice(&[9, 10, 11]);
    annotated["metadata"]["annotations"] = json!({
        "endpoints.kubernetes.io/last-change-trigger-time":
            latency::timestamp(SystemTime::now()).to_string()
    });
    fx.put(SLICES, annotated);
    until("network programming latency observed", &|| {
        programmed().is_some_and(|n| n > 0)
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        programmed(),
        Some(1),
        "one annotated change, one observation"
    );

    // 410 Gone after the slice went away unseen: the relist empties it.
    fx.delete(SLICES, "default/hostnames-1", false);
    fx.expire();
    fx.drop_watches();
    until("relist after 410", &|| {
        matches!(
            bed.tcp_within(Ns::Client, None, svc, quick),
            Outcome::Refused { .. }
        )
    });
    // SAFETY: kill() of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let stopping = Instant::now();
    let status = child.wait().expect("wait");
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = std::fs::remove_file(&cfg);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn agent_follows_the_api_iptables() {
    agent_follows_the_api(
        "agent_follows_the_api_iptables",
        "iptables",
        Loader::Iptables,
    );
}

#[test]
fn agent_follows_the_api_nftables() {
    agent_follows_the_api(
        "agent_follows_the_api_nftables",
        "nftables",
        Loader::NftText,
    );
}
