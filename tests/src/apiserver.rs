//! A Kubernetes API server fixture: a std-only HTTP/1.1 server that speaks
//! list+watch for Services, EndpointSlices, Nodes and ServiceCIDRs (with
//! the `networking.k8s.io/v1` discovery document), enough for kube-rs'
//! watchers (and so for `kproxy run --source kube`), and ConfigMaps. The
//! requests are recorded.
//!
//! * Lists return the objects of a resource path with the current
//!   resource version, filtered by `labelSelector` (`k`, `!k`, `k=v`,
//!   `k!=v`) and `fieldSelector` (`metadata.name=`, `metadata.namespace=`),
//!   in pages of `limit` (at most [`Api::page_cap`]) with `continue` tokens.
//! * `GET /api/v1/namespaces/NS/RESOURCE/NAME` (and `/apis/G/V/...`) returns
//!   one object of the collection `/api/v1/RESOURCE`, or a `404` Status.
//! * Watches (`?watch=true&resourceVersion=N`) stream the events after `N`
//!   as chunks, delivered as soon as they are recorded (a [`Condvar`], no
//!   polling), and end cleanly after 60 s.
//! * Knobs: [`Fixture::drop_watches`] closes every open watch without the
//!   final chunk (a broken connection), [`Fixture::expire`] makes every
//!   resource version seen so far too old (`410 Gone`, as after a
//!   compaction), [`Api::fail_next`] fails requests with `500`,
//!   [`Api::stall`] leaves requests unanswered (a hung server).
//!
//! ```no_run
//! use kproxy_tests::apiserver::{Fixture, SERVICES, kubeconfig};
//! let fx = Fixture::default();
//! fx.put(SERVICES, serde_json::json!({"apiVersion": "v1", "kind": "Service",
//!     "metadata": {"name": "a", "namespace": "default"}}));
//! let port = fx.serve();
//! let cfg = kubeconfig(port); // cfg.path() for KubeSource::start / --kubeconfig
//! # let _ = cfg;
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Scratch;

/// The Services resource path (every namespace).
pub const SERVICES: &str = "/api/v1/services";
/// The EndpointSlices resource path (every namespace).
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
/// The Nodes resource path.
pub const NODES: &str = "/api/v1/nodes";
/// The ServiceCIDRs resource path (cluster-scoped).
pub const SERVICE_CIDRS: &str = "/apis/networking.k8s.io/v1/servicecidrs";
/// The discovery path of `networking.k8s.io/v1` (answered with
/// `servicecidrs` among its resources).
const NETWORKING_V1: &str = "/apis/networking.k8s.io/v1";
/// The ConfigMaps resource path (every namespace; one is read at
/// `/api/v1/namespaces/NS/configmaps/NAME`).
pub const CONFIGMAPS: &str = "/api/v1/configmaps";

/// How long a watch stays open before the server ends it cleanly.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's state, behind [`Fixture::api`].
#[derive(Default)]
pub struct Api {
    rv: u64,
    /// (resource path, namespace/name) -> object.
    objects: BTreeMap<(String, String), Value>,
    /// Every change, in resource version order: (rv, path, type, object).
    events: Vec<(u64, String, String, Value)>,
    /// Watches from a resource version below this get 410 Gone.
    expired_below: u64,
    /// Bumped to close every open watch.
    drops: u64,
    /// The next N requests fail with 500.
    pub fail_next: usize,
    /// Requests get no answer (the connection is held, then closed) while set.
    pub stall: bool,
    /// Lists return at most this many objects per page, whatever the
    /// `limit` (a server may return fewer).
    pub page_cap: Option<usize>,
    /// Requests seen (`path?query`), in arrival order.
    pub requests: Vec<String>,
}

impl Api {
    /// The current resource version (that of the last change).
    pub fn resource_version(&self) -> u64 {
        self.rv
    }
}

#[derive(Default)]
struct Inner {
    api: Mutex<Api>,
    /// Notified on every change and watch drop.
    changed: Condvar,
}

/// The API server fixture: cheap to clone (shared state); serve it with
/// [`Fixture::serve`] or [`Fixture::serve_on`], change it with
/// [`Fixture::put`] and [`Fixture::delete`].
#[derive(Clone, Default)]
pub struct Fixture(Arc<Inner>);

/// An object's `namespace/name` (`/name` for cluster-scoped objects), the
/// key [`Fixture::delete`] takes.
pub fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("")
    )
}

impl Fixture {
    /// The state, locked (read the requests seen, set
    /// [`Api::fail_next`]).
    pub fn api(&self) -> MutexGuard<'_, Api> {
        self.0.api.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces an object at resource `path`, with a watch event
    /// (`ADDED` or `MODIFIED`); sets its `metadata.resourceVersion`.
    pub fn put(&self, path: &str, mut obj: Value) {
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
        drop(a);
        self.0.changed.notify_all();
    }

    /// Deletes the object `name` (`namespace/name`, see [`key`]) at
    /// resource `path`; `event`: with a `DELETED` watch event (else
    /// silently, as if the event was compacted away).
    pub fn delete(&self, path: &str, name: &str, event: bool) {
        let mut a = self.api();
        a.rv += 1;
        if let Some(mut obj) = a.objects.remove(&(path.to_string(), name.to_string()))
            && event
        {
            obj["metadata"]["resourceVersion"] = json!(a.rv.to_string());
            let rv = a.rv;
            a.events.push((rv, path.into(), "DELETED".into(), obj));
        }
        drop(a);
        self.0.changed.notify_all();
    }

    /// Closes every open watch without its final chunk (a broken watch).
    pub fn drop_watches(&self) {
        self.api().drops += 1;
        self.0.changed.notify_all();
    }

    /// Every resource version seen so far is too old from now on (as after
    /// a compaction): watches from them get 410 Gone; a relist gets a
    /// resource version that can be watched from.
    pub fn expire(&self) {
        let mut a = self.api();
        a.rv += 1;
        a.expired_below = a.rv;
        a.events.clear();
        drop(a);
        self.0.changed.notify_all();
    }

    /// Serves on an ephemeral port of 127.0.0.1 (in the caller's network
    /// namespace); returns the port.
    pub fn serve(&self) -> u16 {
        self.serve_on(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
    }

    /// Serves on `listener` (bound in whatever network namespace), one
    /// thread per connection; returns its port.
    pub fn serve_on(&self, listener: TcpListener) -> u16 {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
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
        // Each response and chunk goes out in one write; no Nagle delay
        // on top.
        let _ = stream.set_nodelay(true);
        let Ok(read_half) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
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
                    let response = format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = out.write_all(response.as_bytes());
                    continue;
                }
            }
            if self.api().stall {
                let start = Instant::now();
                while self.api().stall && start.elapsed() < WATCH_TIMEOUT {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            if params.get("watch") == Some(&"true") {
                let from: u64 = params
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.watch(&mut out, path, from);
                return;
            }
            let (status, body) = if path == NETWORKING_V1 {
                ("200 OK", discovery_networking_v1())
            } else {
                match one_object(path) {
                    Some((collection, key)) => self.get(&collection, &key),
                    None => ("200 OK", self.list(path, &params)),
                }
            };
            let mut response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            response.extend_from_slice(&body);
            let _ = out.write_all(&response);
        }
    }

    /// One object of `collection`, or a 404 Status.
    fn get(&self, collection: &str, key: &str) -> (&'static str, Vec<u8>) {
        let a = self.api();
        match a.objects.get(&(collection.to_string(), key.to_string())) {
            Some(o) => ("200 OK", o.to_string().into_bytes()),
            None => {
                let name = key.rsplit('/').next().unwrap_or("");
                let resource = collection.rsplit('/').next().unwrap_or("");
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "NotFound", "code": 404,
                    "message": format!("{resource} \"{name}\" not found"),
                    "details": {"name": name, "kind": resource}});
                ("404 Not Found", status.to_string().into_bytes())
            }
        }
    }

    /// A page of the list of `path` (selectors, `limit`, `continue`),
    /// serialized once (no copy of the objects).
    fn list(&self, path: &str, params: &BTreeMap<&str, &str>) -> Vec<u8> {
        let a = self.api();
        let labels = params.get("labelSelector").map(|s| decode(s));
        let fields = params.get("fieldSelector").map(|s| decode(s));
        let offset: usize = params
            .get("continue")
            .and_then(|c| decode(c).parse().ok())
            .unwrap_or(0);
        let mut limit: usize = params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        if let Some(cap) = a.page_cap {
            limit = limit.min(cap.max(1));
        }
        let matching: Vec<&Value> = a
            .objects
            .iter()
            .filter(|((p, _), o)| {
                p == path
                    && labels.as_deref().is_none_or(|l| labels_match(l, o))
                    && fields.as_deref().is_none_or(|f| fields_match(f, o))
            })
            .map(|(_, o)| o)
            .collect();
        let page: Vec<&Value> = matching.iter().skip(offset).take(limit).copied().collect();
        let next = offset + page.len();
        let cont = if next < matching.len() {
            format!(r#","continue":"{next}""#)
        } else {
            String::new()
        };
        let mut body = format!(
            r#"{{"kind":"List","apiVersion":"v1","metadata":{{"resourceVersion":"{}"{cont}}},"items":["#,
            a.rv
        )
        .into_bytes();
        for (i, o) in page.into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut body, o);
        }
        body.extend_from_slice(b"]}");
        body
    }

    fn watch(&self, out: &mut TcpStream, path: &str, from: u64) {
        let chunk = |out: &mut TcpStream, v: &Value| -> bool {
            let text = format!("{v}\n");
            let framed = format!("{:x}\r\n{text}\r\n", text.len());
            out.write_all(framed.as_bytes()).is_ok() && out.flush().is_ok()
        };
        if out
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
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
            let _ = out.write_all(b"0\r\n\r\n");
            return;
        }
        let mut sent = from;
        let start = Instant::now();
        loop {
            let (events, dropped) = {
                let mut a = self.api();
                loop {
                    let dropped = a.drops != drops;
                    // Events are in resource version order.
                    let after = a.events.partition_point(|(rv, _, _, _)| *rv <= sent);
                    let evs: Vec<(u64, Value)> = a.events[after..]
                        .iter()
                        .filter(|(_, p, _, _)| p == path)
                        .map(|(rv, _, t, o)| (*rv, json!({"type": t, "object": o})))
                        .collect();
                    if let Some((rv, _, _, _)) = a.events.last() {
                        // Events of other paths need not be looked at again.
                        sent = sent.max(*rv);
                    }
                    let left = WATCH_TIMEOUT.saturating_sub(start.elapsed());
                    if dropped || !evs.is_empty() || left.is_zero() {
                        break (evs, dropped);
                    }
                    a = match self.0.changed.wait_timeout(a, left) {
                        Ok((a, _)) => a,
                        Err(e) => e.into_inner().0,
                    };
                }
            };
            if dropped {
                // Close without the final chunk: a broken watch.
                return;
            }
            for (_, ev) in events {
                if !chunk(out, &ev) {
                    return;
                }
            }
            if start.elapsed() >= WATCH_TIMEOUT {
                let _ = out.write_all(b"0\r\n\r\n");
                return;
            }
        }
    }
}

/// The testbed's `default/hostnames` Service (ClusterIP 10.79.255.4, port
/// 80 to 9376/TCP).
pub fn hostnames_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hostnames", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.79.255.4", "clusterIPs": ["10.79.255.4"],
                 "ports": [{"port": 80, "targetPort": 9376, "protocol": "TCP"}]}})
}

/// `default/hostnames`' EndpointSlice with the testbed's pods `pods`
/// (`10.76.0.N`, ready, on node1).
pub fn hostnames_slice(pods: &[u8]) -> Value {
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

/// The `networking.k8s.io/v1` discovery document: ServiceCIDRs served.
fn discovery_networking_v1() -> Vec<u8> {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "networking.k8s.io/v1",
        "resources": [{"name": "servicecidrs", "singularName": "servicecidr", "namespaced": false,
                       "kind": "ServiceCIDR", "verbs": ["list", "watch", "get"]}]})
    .to_string()
    .into_bytes()
}

/// The collection and `namespace/name` of a one-object path:
/// `/api/v1/namespaces/NS/RES/NAME` -> (`/api/v1/RES`, `NS/NAME`), and the
/// same under `/apis/GROUP/VERSION`.
fn one_object(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, res, name] => Some((format!("{prefix}/{res}"), format!("{ns}/{name}"))),
        _ => None,
    }
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `obj`'s labels satisfy a label selector (`k`, `!k`, `k=v`,
/// `k==v`, `k!=v`, comma-separated).
fn labels_match(selector: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
    selector
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .all(|r| {
            if let Some(k) = r.strip_prefix('!') {
                get(k).is_none()
            } else if let Some((k, v)) = r.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                get(k) == Some(v.trim())
            } else {
                get(r).is_some()
            }
        })
}

/// Whether `obj` satisfies a field selector (`metadata.name=`,
/// `metadata.namespace=`; other fields are not filtered on).
fn fields_match(selector: &str, obj: &Value) -> bool {
    selector.split(',').all(|r| match r.split_once('=') {
        Some(("metadata.name", v)) => obj["metadata"]["name"].as_str() == Some(v),
        Some(("metadata.namespace", v)) => obj["metadata"]["namespace"].as_str() == Some(v),
        _ => true,
    })
}

/// A kubeconfig file written by [`kubeconfig`], in a scratch directory
/// removed (with the file and anything else put next to it) on drop. It
/// dereferences to the file's [`Path`]; keep it alive while that is used.
#[derive(Debug)]
pub struct Kubeconfig {
    file: PathBuf,
    _dir: Scratch,
}

impl Kubeconfig {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

impl std::ops::Deref for Kubeconfig {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.file
    }
}

impl AsRef<Path> for Kubeconfig {
    fn as_ref(&self) -> &Path {
        &self.file
    }
}

impl AsRef<std::ffi::OsStr> for Kubeconfig {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.file.as_os_str()
    }
}

/// Writes a kubeconfig for the fixture on `127.0.0.1:port` (plain HTTP, no
/// credentials) into a scratch directory; the file and the directory go
/// when the returned guard is dropped.
pub fn kubeconfig(port: u16) -> Kubeconfig {
    let dir = Scratch::new("kproxy-kubeconfig", &port.to_string());
    let file = dir.join("kubeconfig");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             contexts:\n- name: t\n  context: {{cluster: t, user: u}}\ncurrent-context: t\n\
             users:\n- name: u\n  user: {{}}\n"
        ),
    )
    .expect("write kubeconfig");
    Kubeconfig { file, _dir: dir }
}
