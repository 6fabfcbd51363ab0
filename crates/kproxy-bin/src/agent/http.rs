//! Minimal HTTP/1.1 servers on std sockets: `/healthz` and `/livez`
//! (healthzBindAddress), `/metrics` (metricsBindAddress), and one
//! healthCheckNodePort responder per eTP=Local LoadBalancer Service, each
//! answering as kube-proxy's `pkg/proxy/healthcheck` does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use kproxy_core::model::NamespacedName;

use super::metrics::{Metrics, go_time};

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Response {
    fn new(status: u16, content_type: &str, body: String) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "",
    }
}

type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// A running server; dropping it stops it.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The bound address (the port chosen for `:0`).
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let path = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    let resp = handler(path);
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        resp.body.len(),
        resp.body
    ));
    let _ = stream.write_all(out.as_bytes());
}

/// Serves `handler` on `addr` until the returned server is dropped.
pub fn serve(addr: &str, handler: Handler) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => handle(s, &handler),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(Server {
        stop,
        thread: Some(thread),
        addr: bound,
    })
}

fn json(status: u16, body: String) -> Response {
    let mut r = Response::new(status, "application/json", body);
    r.headers
        .push(("X-Content-Type-Options".into(), "nosniff".into()));
    r
}

/// `/healthz` and `/livez` as kube-proxy answers them.
pub fn health_handler(metrics: Arc<Metrics>, node_eligible: Arc<AtomicBool>) -> Handler {
    Arc::new(move |path: &str| {
        let now = SystemTime::now();
        let (healthy, last) = metrics.health();
        match path {
            "/healthz" => {
                let eligible = node_eligible.load(Ordering::Relaxed);
                let ok = healthy && eligible;
                let code = if ok { 200 } else { 503 };
                metrics.count_probe(false, code);
                let last = if ok { now } else { last.unwrap_or(now) };
                json(
                    code,
                    format!(
                        "{{\"lastUpdated\": \"{}\",\"currentTime\": \"{}\", \"nodeEligible\": {eligible}}}",
                        go_time(last),
                        go_time(now)
                    ),
                )
            }
            "/livez" => {
                let code = if healthy { 200 } else { 503 };
                metrics.count_probe(true, code);
                let last = if healthy { now } else { last.unwrap_or(now) };
                json(
                    code,
                    format!(
                        "{{\"lastUpdated\": \"{}\",\"currentTime\": \"{}\"}}",
                        go_time(last),
                        go_time(now)
                    ),
                )
            }
            _ => Response::new(
                404,
                "text/plain; charset=utf-8",
                "404 page not found\n".into(),
            ),
        }
    })
}

/// `/metrics` in the Prometheus text format.
pub fn metrics_handler(metrics: Arc<Metrics>) -> Handler {
    Arc::new(move |path: &str| match path {
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        _ => Response::new(
            404,
            "text/plain; charset=utf-8",
            "404 page not found\n".into(),
        ),
    })
}

/// One Service's health check responder state.
struct ServiceHealth {
    name: NamespacedName,
    endpoints: Arc<AtomicUsize>,
    _server: Server,
}

/// The healthCheckNodePort servers: one per Service with a health check
/// node port, answering `200` with the count of local ready endpoints, or
/// `503` when there are none (or the proxy is unhealthy).
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
            let handler = service_handler(name.clone(), endpoints.clone(), self.metrics.clone());
            let addr = if self.bind_ip.contains(':') {
                format!("[{}]:{port}", self.bind_ip)
            } else {
                format!("{}:{port}", self.bind_ip)
            };
            match serve(&addr, handler) {
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

fn service_handler(
    name: NamespacedName,
    endpoints: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) -> Handler {
    Arc::new(move |_path: &str| {
        let count = endpoints.load(Ordering::Relaxed);
        let healthy = metrics.health().0;
        let code = if count > 0 && healthy { 200 } else { 503 };
        let mut r = json(
            code,
            format!(
                "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
                name.namespace, name.name
            ),
        );
        r.headers
            .push(("X-Load-Balancing-Endpoint-Weight".into(), count.to_string()));
        r
    })
}

/// A blocking `GET path` against `addr` (tests and the bench): status and body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    }

    #[test]
    fn health_check_node_ports() {
        let metrics = Arc::new(Metrics::new("iptables", Duration::from_secs(60)));
        let mut hc = HealthChecks::new("127.0.0.1", metrics.clone());
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let name = NamespacedName::new("ns", "lb");
        let mut wanted = BTreeMap::new();
        wanted.insert(port, (name.clone(), 2));
        assert!(hc.sync(&wanted).is_empty());
        let (code, body) = get(addr, "/").unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"localEndpoints\": 2"), "{body}");
        assert!(body.contains("\"namespace\": \"ns\""), "{body}");
        assert!(body.contains("\"serviceProxyHealthy\": true"), "{body}");
        wanted.insert(port, (name, 0));
        assert!(hc.sync(&wanted).is_empty());
        assert_eq!(get(addr, "/").unwrap().0, 503);
        assert!(hc.sync(&BTreeMap::new()).is_empty());
        assert!(hc.ports().is_empty());
        assert!(get(addr, "/").is_err());
    }

    #[test]
    fn healthz_and_metrics() {
        let metrics = Arc::new(Metrics::new("nftables", Duration::from_secs(60)));
        let eligible = Arc::new(AtomicBool::new(true));
        let s = serve(
            "127.0.0.1:0",
            health_handler(metrics.clone(), eligible.clone()),
        )
        .unwrap();
        let (code, body) = get(s.addr, "/healthz").unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("{\"lastUpdated\": \""), "{body}");
        assert!(body.ends_with("\"nodeEligible\": true}"), "{body}");
        eligible.store(false, Ordering::Relaxed);
        assert_eq!(get(s.addr, "/healthz").unwrap().0, 503);
        assert_eq!(get(s.addr, "/livez").unwrap().0, 200);
        assert_eq!(get(s.addr, "/nope").unwrap().0, 404);
        let m = serve("127.0.0.1:0", metrics_handler(metrics.clone())).unwrap();
        let (code, body) = get(m.addr, "/metrics").unwrap();
        assert_eq!(code, 200);
        assert!(
            body.contains("kubeproxy_proxy_healthz_total{code=\"503\"} 1"),
            "{body}"
        );
        assert!(body.contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0"));
    }
}
