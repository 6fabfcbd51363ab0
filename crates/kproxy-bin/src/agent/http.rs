//! kube-proxy's HTTP servers on hyper (HTTP/1.1, every connection served
//! concurrently on one small tokio runtime of their own):
//!
//! * the healthz server (healthzBindAddress): `/healthz` and `/livez`
//!   (`pkg/proxy/healthcheck/proxy_health.go`, on Go's `http.ServeMux`);
//! * the metrics server (metricsBindAddress): `/metrics`, `/healthz` (and
//!   `/healthz/ping`), `/proxyMode` and `/configz` (`cmd/kube-proxy`'s
//!   `serveMetrics`, on component-base's path-recorder mux);
//! * one healthCheckNodePort responder per Service with a health check
//!   node port (`pkg/proxy/healthcheck/service_health.go`), answering every
//!   path.
//!
//! Routes are pure functions of a [`Request`] to a [`Response`]; the
//! servers only carry them. Like Go's `net/http`, any method gets the
//! route's answer (a `HEAD` one without its body) and an unknown path gets
//! `404 page not found`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use kproxy_core::model::NamespacedName;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tracing::warn;

use super::metrics::{CONTENT_TYPE, Metrics, go_time};

/// Connections one server serves at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;

/// A request as the routes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (`GET`, `HEAD`, `POST`, ...).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query (after `?`), if any.
    pub query: Option<String>,
}

impl Request {
    /// A `GET` of `target` (`/path?query`).
    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    /// A `method` request of `target` (`/path?query`).
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (target, None),
        };
        Self {
            method: method.into(),
            path: path.into(),
            query,
        }
    }

    /// Whether the query has parameter `name` (with or without a value).
    pub fn has_param(&self, name: &str) -> bool {
        self.params().any(|(k, _)| k == name)
    }

    /// The query's parameters (not percent-decoded: kube-proxy's names and
    /// values are plain).
    fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (besides `Content-Length` and `Date`).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

impl Response {
    fn new(status: u16, content_type: &str, body: String) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    /// Adds `X-Content-Type-Options: nosniff`.
    fn nosniff(mut self) -> Self {
        self.headers
            .push(("X-Content-Type-Options".into(), "nosniff".into()));
        self
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Go's `http.NotFound`.
fn not_found() -> Response {
    Response::new(404, TEXT, "404 page not found\n".into()).nosniff()
}

/// Go's `path.Clean` of a rooted path, keeping a trailing slash as Go's
/// `ServeMux` does.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// Go's `ServeMux` redirect of an unclean path (`//healthz`,
/// `/a/../livez`) to its clean form: `301` with a `Location`.
fn redirect_unclean(req: &Request) -> Option<Response> {
    let clean = clean_path(&req.path);
    if clean == req.path || req.method == "CONNECT" {
        return None;
    }
    let location = match &req.query {
        Some(q) => format!("{clean}?{q}"),
        None => clean,
    };
    let mut r = Response {
        status: 301,
        headers: vec![("Location".into(), location.clone())],
        body: String::new(),
    };
    if req.method == "GET" || req.method == "HEAD" {
        r.headers
            .push(("Content-Type".into(), "text/html; charset=utf-8".into()));
    }
    if req.method == "GET" {
        let escaped = location
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        r.body = format!("<a href=\"{escaped}\">Moved Permanently</a>.\n\n");
    }
    Some(r)
}

/// Go's zero `time.Time`, printed.
const GO_ZERO_TIME: &str = "0001-01-01 00:00:00 +0000 UTC";

/// What the healthz server's routes read.
#[derive(Clone)]
pub struct HealthState {
    /// The proxier's health.
    pub metrics: Arc<Metrics>,
    /// The node is eligible (not being deleted, not tainted
    /// `ToBeDeletedByClusterAutoscaler`).
    pub node_eligible: Arc<AtomicBool>,
}

/// The healthz server's answer to `req` at `now` (`/healthz`: the proxier
/// healthy and the node eligible; `/livez`: the proxier healthy).
pub fn health_route(state: &HealthState, req: &Request, now: SystemTime) -> Response {
    if req.path == "*" {
        // Go's ServeMux: a `*` request target is a bad request.
        return Response {
            status: 400,
            headers: vec![("Connection".into(), "close".into())],
            body: String::new(),
        };
    }
    if let Some(r) = redirect_unclean(req) {
        return r;
    }
    let livez = match req.path.as_str() {
        "/healthz" => false,
        "/livez" => true,
        _ => return not_found(),
    };
    let (healthy, last) = state.metrics.health();
    let eligible = state.node_eligible.load(Ordering::Relaxed);
    let ok = healthy && (livez || eligible);
    let code = if ok { 200 } else { 503 };
    state.metrics.count_probe(livez, code);
    // Healthy: "lastUpdated" is now, as kube-proxy answers for
    // compatibility with older releases.
    // Never synced: Go's zero time.
    let last = match (ok, last) {
        (true, _) => go_time(now),
        (false, Some(t)) => go_time(t),
        (false, None) => GO_ZERO_TIME.to_string(),
    };
    let now = go_time(now);
    let body = if livez {
        format!("{{\"lastUpdated\": \"{last}\",\"currentTime\": \"{now}\"}}")
    } else {
        format!(
            "{{\"lastUpdated\": \"{last}\",\"currentTime\": \"{now}\", \"nodeEligible\": {eligible}}}"
        )
    };
    Response::new(code, JSON, body).nosniff()
}

/// What the metrics server's routes read.
#[derive(Clone)]
pub struct MetricsState {
    /// The metrics (and the proxy mode).
    pub metrics: Arc<Metrics>,
    /// The `/configz` body.
    pub configz: Arc<str>,
}

/// component-base's `/healthz` with its one check, `ping`: `ok`, or with
/// `?verbose` each check and the verdict; `?exclude=NAME` skips a check.
fn component_healthz(req: &Request) -> Response {
    let mut excluded: Vec<&str> = req
        .params()
        .filter(|(k, _)| *k == "exclude")
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    let mut out = String::new();
    if excluded.contains(&"ping") {
        excluded.retain(|e| *e != "ping");
        out.push_str("[+]ping excluded: ok\n");
    } else {
        out.push_str("[+]ping ok\n");
    }
    if !excluded.is_empty() {
        excluded.sort_unstable();
        excluded.dedup();
        let quoted: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
        out.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            quoted.join(", ")
        ));
    }
    let body = if req.has_param("verbose") {
        out + "healthz check passed\n"
    } else {
        "ok".into()
    };
    Response::new(200, TEXT, body).nosniff()
}

/// The metrics server's answer to `req`.
pub fn metrics_route(state: &MetricsState, req: &Request) -> Response {
    match req.path.as_str() {
        "/metrics" => Response::new(200, CONTENT_TYPE, state.metrics.render()),
        "/healthz" => component_healthz(req),
        "/healthz/ping" => Response::new(200, TEXT, "ok".into()),
        "/proxyMode" => Response::new(200, TEXT, state.metrics.mode().name().to_string()).nosniff(),
        "/configz" => Response::new(200, JSON, state.configz.to_string()).nosniff(),
        _ => not_found(),
    }
}

/// One Service's healthCheckNodePort answer (any path, any method): `200`
/// with its local endpoint count when it has local endpoints and the
/// proxier is healthy, `503` otherwise.
pub fn service_route(name: &NamespacedName, endpoints: usize, healthy: bool) -> Response {
    let code = if endpoints > 0 && healthy { 200 } else { 503 };
    let mut r = Response::new(
        code,
        JSON,
        format!(
            "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {endpoints},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
            name.namespace, name.name
        ),
    )
    .nosniff();
    r.headers.push((
        "X-Load-Balancing-Endpoint-Weight".into(),
        endpoints.to_string(),
    ));
    r
}

/// A route: answers a request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The healthz server's handler.
pub fn health_handler(state: HealthState) -> Handler {
    Arc::new(move |req| health_route(&state, req, SystemTime::now()))
}

/// The metrics server's handler (blocking: `/metrics` reads nfacct
/// counters; serve it with [`Blocking::Yes`]).
pub fn metrics_handler(state: MetricsState) -> Handler {
    Arc::new(move |req| metrics_route(&state, req))
}

/// Whether a handler may block (run on tokio's blocking threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// The handler is quick: run on the server's runtime.
    No,
    /// The handler may block (runs tools): run off the runtime.
    Yes,
}

/// The HTTP runtime: one thread driving every server's connections.
fn runtime() -> std::io::Result<Handle> {
    static RUNTIME: Mutex<Option<Handle>> = Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(8)
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("kproxy-http".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// A running server; dropping it stops it: its listener is closed when the
/// drop returns, its connections soon after.
pub struct Server {
    /// The bound address (the port chosen for `:0`).
    pub addr: SocketAddr,
    stop: Option<watch::Sender<()>>,
    closed: std::sync::mpsc::Receiver<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping the sender wakes the accept loop, which closes the
        // listener and says so (bounded: never wait on a stuck runtime).
        self.stop.take();
        let _ = self.closed.recv_timeout(Duration::from_secs(2));
    }
}

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut out = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *out.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            out.headers_mut().append(k, v);
        }
    }
    out
}

async fn answer(
    handler: Handler,
    blocking: Blocking,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let req = Request {
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
    };
    let resp = match blocking {
        // Go's server answers `OPTIONS *` itself, before any handler.
        _ if req.method == "OPTIONS" && req.path == "*" => Response {
            status: 200,
            headers: Vec::new(),
            body: String::new(),
        },
        Blocking::No => handler(&req),
        Blocking::Yes => tokio::task::spawn_blocking(move || handler(&req))
            .await
            .unwrap_or_else(|e| Response::new(500, TEXT, format!("{e}\n"))),
    };
    Ok(to_hyper(resp))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    handler: Handler,
    blocking: Blocking,
    mut stop: watch::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: try again soon.
                    warn!("http: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(handler.clone(), blocking, req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
            drop(permit);
        });
    }
}

/// Serves `handler` on `addr` (`IP:PORT`, `[IPv6]:PORT`) until the
/// returned server is dropped.
pub fn serve(addr: &str, handler: Handler, blocking: Blocking) -> std::io::Result<Server> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let rt = runtime()?;
    let listener = {
        let _in_runtime = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let (stop, stopped) = watch::channel(());
    let (closed_tx, closed) = std::sync::mpsc::channel();
    rt.spawn(async move {
        // The listener is dropped (closed) when the loop returns.
        accept_loop(listener, handler, blocking, stopped).await;
        let _ = closed_tx.send(());
    });
    Ok(Server {
        addr: bound,
        stop: Some(stop),
        closed,
    })
}

/// One Service's health check responder.
struct ServiceHealth {
    name: NamespacedName,
    endpoints: Arc<AtomicUsize>,
    _server: Server,
}

/// The healthCheckNodePort servers: one per Service with a health check
/// node port.
pub struct HealthChecks {
    bind_ip: String,
    metrics: Arc<Metrics>,
    servers: BTreeMap<u16, ServiceHealth>,
}

impl HealthChecks {
    /// Responders bound on `bind_ip` (`0.0.0.0`, `::`, or a node address).
    pub fn new(bind_ip: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            bind_ip: bind_ip.to_string(),
            metrics,
            servers: BTreeMap::new(),
        }
    }

    /// The ports served now.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }

    /// Makes the responders match `wanted` (port -> Service and local
    /// endpoint count): starts new ones, stops gone ones, updates counts.
    /// Returns the ports that could not be bound, with the error.
    pub fn sync(&mut self, wanted: &BTreeMap<u16, (NamespacedName, usize)>) -> Vec<(u16, String)> {
        self.servers
            .retain(|port, s| wanted.get(port).is_some_and(|(n, _)| *n == s.name));
        let mut errors = Vec::new();
        for (port, (name, count)) in wanted {
            if let Some(s) = self.servers.get(port) {
                s.endpoints.store(*count, Ordering::Relaxed);
                continue;
            }
            let endpoints = Arc::new(AtomicUsize::new(*count));
            let handler: Handler = {
                let (name, endpoints, metrics) =
                    (name.clone(), endpoints.clone(), self.metrics.clone());
                Arc::new(move |_req| {
                    service_route(&name, endpoints.load(Ordering::Relaxed), metrics.health().0)
                })
            };
            let addr = if self.bind_ip.contains(':') {
                format!("[{}]:{port}", self.bind_ip)
            } else {
                format!("{}:{port}", self.bind_ip)
            };
            match serve(&addr, handler, Blocking::No) {
                Ok(server) => {
                    self.servers.insert(
                        *port,
                        ServiceHealth {
                            name: name.clone(),
                            endpoints,
                            _server: server,
                        },
                    );
                }
                Err(e) => errors.push((*port, e.to_string())),
            }
        }
        errors
    }
}

/// A blocking `method path` against `addr` (tests and the bench): the
/// answer (header names lower case).
pub fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// A blocking `GET path` against `addr` (tests and the bench): status and body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path).map(|r| (r.status, r.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::sync::Mode;
    use kproxy_core::model::IpFamily;
    use std::net::TcpListener;
    use std::time::Instant;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    }

    fn metrics(mode: Mode) -> Arc<Metrics> {
        Arc::new(Metrics::with_nfacct(
            mode,
            Duration::from_secs(60),
            Arc::new(|_| Some(0)),
        ))
    }

    fn health_state(mode: Mode) -> HealthState {
        HealthState {
            metrics: metrics(mode),
            node_eligible: Arc::new(AtomicBool::new(true)),
        }
    }

    #[test]
    fn health_check_node_ports() {
        let metrics = metrics(Mode::Iptables);
        let mut hc = HealthChecks::new("127.0.0.1", metrics.clone());
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let name = NamespacedName::new("ns", "lb");
        let mut wanted = BTreeMap::new();
        wanted.insert(port, (name.clone(), 2));
        assert!(hc.sync(&wanted).is_empty());
        // Served concurrently too: idle connections delay nothing.
        let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let r = request(addr, "GET", "/any/path").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        assert_eq!(r.header("x-load-balancing-endpoint-weight"), Some("2"));
        assert_eq!(r.header("content-type"), Some(JSON));
        // Any method.
        assert_eq!(request(addr, "POST", "/").unwrap().status, 200);
        wanted.insert(port, (name, 0));
        assert!(hc.sync(&wanted).is_empty());
        assert_eq!(get(addr, "/").unwrap().0, 503);
        drop(idle);
        assert!(hc.sync(&BTreeMap::new()).is_empty());
        assert!(hc.ports().is_empty());
        assert!(get(addr, "/").is_err());
    }

    #[test]
    fn healthz_routes_and_methods() {
        let state = health_state(Mode::Nftables);
        let now = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
            let r = health_route(&state, &Request::new(method, "/healthz"), now);
            assert_eq!(r.status, 200, "{method}");
            assert_eq!(
                r.body,
                "{\"lastUpdated\": \"2023-11-14 22:13:20.12 +0000 UTC\",\"currentTime\": \"2023-11-14 22:13:20.12 +0000 UTC\", \"nodeEligible\": true}"
            );
            assert_eq!(r.header("content-type"), Some(JSON));
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            let r = health_route(&state, &Request::new(method, "/livez?x=1"), now);
            assert_eq!(r.status, 200);
            assert_eq!(
                r.body,
                "{\"lastUpdated\": \"2023-11-14 22:13:20.12 +0000 UTC\",\"currentTime\": \"2023-11-14 22:13:20.12 +0000 UTC\"}"
            );
        }
        // The node being deleted: /healthz fails, /livez not.
        state.node_eligible.store(false, Ordering::Relaxed);
        let r = health_route(&state, &Request::get("/healthz"), now);
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            "{\"lastUpdated\": \"0001-01-01 00:00:00 +0000 UTC\",\"currentTime\": \"2023-11-14 22:13:20.12 +0000 UTC\", \"nodeEligible\": false}"
        );
        assert_eq!(
            health_route(&state, &Request::get("/livez"), now).status,
            200
        );
        // Unknown paths, ServeMux style.
        for path in ["/", "/metrics", "/healthz/", "/livez/x", "/HEALTHZ"] {
            let r = health_route(&state, &Request::get(path), now);
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(r.body, "404 page not found\n");
            assert_eq!(r.header("content-type"), Some(TEXT));
        }
        let r = health_route(&state, &Request::get("//healthz?a=b"), now);
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location"), Some("/healthz?a=b"));
        assert_eq!(
            r.body,
            "<a href=\"/healthz?a=b\">Moved Permanently</a>.\n\n"
        );
        let r = health_route(&state, &Request::new("POST", "/x/../livez"), now);
        assert_eq!((r.status, r.body.as_str()), (301, ""));
        assert_eq!(r.header("location"), Some("/livez"));
        let text = state.metrics.render();
        assert!(text.contains("kubeproxy_proxy_healthz_total{code=\"200\"} 6"));
        assert!(text.contains("kubeproxy_proxy_healthz_total{code=\"503\"} 1"));
        assert!(text.contains("kubeproxy_proxy_livez_total{code=\"200\"} 7"));
    }

    #[test]
    fn unhealthy_answers_the_last_update() {
        let state = health_state(Mode::Iptables);
        let m = Arc::new(Metrics::with_nfacct(
            Mode::Iptables,
            Duration::ZERO,
            Arc::new(|_| None),
        ));
        let state = HealthState {
            metrics: m,
            ..state
        };
        state.metrics.synced(&[IpFamily::V4]);
        state.metrics.queued(&[IpFamily::V4]);
        let now = SystemTime::now() + Duration::from_secs(1);
        for path in ["/healthz", "/livez"] {
            let r = health_route(&state, &Request::get(path), now);
            assert_eq!(r.status, 503, "{path}");
            // The last update, not now.
            let last = r
                .body
                .strip_prefix("{\"lastUpdated\": \"")
                .and_then(|b| b.split('"').next())
                .unwrap_or_default();
            assert!(!last.is_empty() && last != go_time(now), "{}", r.body);
        }
    }

    #[test]
    fn metrics_server_routes_and_methods() {
        for mode in [Mode::Iptables, Mode::Nftables] {
            let state = MetricsState {
                metrics: metrics(mode),
                configz: "{\"kubeproxy.config.k8s.io\":{}}".into(),
            };
            for method in ["GET", "POST", "DELETE"] {
                let r = metrics_route(&state, &Request::new(method, "/proxyMode"));
                assert_eq!((r.status, r.body.as_str()), (200, mode.name()));
                assert_eq!(r.header("content-type"), Some(TEXT));
                assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            }
            let r = metrics_route(&state, &Request::get("/metrics"));
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
            assert!(
                r.body
                    .contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 0")
            );
            assert!(r.body.contains("process_start_time_seconds"));
            let r = metrics_route(&state, &Request::get("/healthz"));
            assert_eq!((r.status, r.body.as_str()), (200, "ok"));
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            let r = metrics_route(&state, &Request::get("/healthz?verbose"));
            assert_eq!(r.body, "[+]ping ok\nhealthz check passed\n");
            let r = metrics_route(
                &state,
                &Request::get("/healthz?verbose&exclude=ping&exclude=x"),
            );
            assert_eq!(
                r.body,
                "[+]ping excluded: ok\nwarn: some health checks cannot be excluded: no matches for \"x\"\nhealthz check passed\n"
            );
            let r = metrics_route(&state, &Request::get("/healthz/ping"));
            assert_eq!((r.status, r.body.as_str()), (200, "ok"));
            let r = metrics_route(&state, &Request::get("/configz"));
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-type"), Some(JSON));
            assert_eq!(r.body, "{\"kubeproxy.config.k8s.io\":{}}");
            for path in [
                "/",
                "/livez",
                "/healthz/",
                "/metrics/",
                "/proxymode",
                "/debug/pprof/",
            ] {
                let r = metrics_route(&state, &Request::get(path));
                assert_eq!(
                    (r.status, r.body.as_str()),
                    (404, "404 page not found\n"),
                    "{path}"
                );
            }
        }
    }

    #[test]
    fn served_over_http() {
        let state = health_state(Mode::Iptables);
        let s = serve("127.0.0.1:0", health_handler(state.clone()), Blocking::No).unwrap();
        let r = request(s.addr, "GET", "/healthz").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.starts_with("{\"lastUpdated\": \""), "{}", r.body);
        assert_eq!(r.header("content-type"), Some(JSON));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        // HEAD: the headers without the body.
        let r = request(s.addr, "HEAD", "/livez").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, ""));
        assert!(r.header("content-length").is_some());
        assert_eq!(get(s.addr, "/nope").unwrap().0, 404);
        let r = request(s.addr, "OPTIONS", "*").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, ""));
        assert_eq!(request(s.addr, "GET", "*").unwrap().status, 400);
        let m = serve(
            "127.0.0.1:0",
            metrics_handler(MetricsState {
                metrics: state.metrics.clone(),
                configz: "{}".into(),
            }),
            Blocking::Yes,
        )
        .unwrap();
        let (code, body) = get(m.addr, "/metrics").unwrap();
        assert_eq!(code, 200);
        assert!(
            body.contains("kubeproxy_proxy_healthz_total{code=\"200\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("kubeproxy_proxy_livez_total{code=\"200\"} 1"),
            "{body}"
        );
        assert_eq!(get(m.addr, "/proxyMode").unwrap(), (200, "iptables".into()));
        // Stopped with the server.
        let addr = s.addr;
        drop(s);
        assert!(get(addr, "/healthz").is_err());
    }

    /// 100 idle connections held open do not delay `/healthz` (the old
    /// one-connection-at-a-time server took seconds with 3).
    #[test]
    fn idle_connections_do_not_delay_healthz() {
        let state = health_state(Mode::Nftables);
        let s = serve("127.0.0.1:0", health_handler(state), Blocking::No).unwrap();
        let idle: Vec<TcpStream> = (0..100)
            .map(|_| TcpStream::connect(s.addr).unwrap())
            .collect();
        // One more connection that sent half a request.
        let mut half = TcpStream::connect(s.addr).unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
        let start = Instant::now();
        let (code, _) = get(s.addr, "/healthz").unwrap();
        let took = start.elapsed();
        assert_eq!(code, 200);
        assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
        drop(idle);
    }
}
