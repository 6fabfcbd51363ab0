//! Network namespaces (named with a per-process unique prefix, removed by a
//! guard's Drop on success, failure and panic) and the pods' servers
//! (threads whose sockets were created inside the pod namespaces).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::{Family, Loader, POD_PORT, PODS, netns_exec, run};

/// The prefix of every namespace this suite creates: `kxe2e<pid>-<n>-<role>`.
const PREFIX: &str = "kxe2e";

fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Enters network namespace `name` on the calling thread (only this thread:
/// sockets it creates afterwards live in that namespace).
pub fn enter(name: &str) -> Result<(), String> {
    let f = File::open(netns_path(name)).map_err(|e| format!("open {name}: {e}"))?;
    // SAFETY: setns() on a valid descriptor; it changes only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Checks that a namespace can be entered, on a throwaway thread.
pub fn enter_in_thread(name: &str) -> Result<(), String> {
    let name = name.to_string();
    std::thread::spawn(move || enter(&name))
        .join()
        .unwrap_or_else(|_| Err("thread panicked".into()))
}

/// Runs `f` on a new thread inside namespace `name`.
pub fn in_ns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(name).unwrap_or_else(|e| panic!("{e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Namespaces created by this guard; Drop deletes them.
pub struct Namespaces {
    prefix: String,
    created: Mutex<Vec<String>>,
}

impl Namespaces {
    /// A guard with a fresh unique prefix.
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Namespaces {
            prefix: format!("{PREFIX}{}-{n}", std::process::id()),
            created: Mutex::new(Vec::new()),
        }
    }

    /// The full name of role `role`.
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Creates namespace `<prefix>-<role>` with `lo` up; returns its name.
    pub fn create(&self, role: &str) -> Result<String, String> {
        let name = self.name(role);
        run("ip", &["netns", "add", &name], None)?;
        self.created.lock().expect("lock").push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"], None)?;
        Ok(name)
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()));
        for name in created.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", name], None) {
                eprintln!("warning: cannot delete namespace {name}: {e}");
            }
        }
    }
}

/// Deletes namespaces left by earlier runs of this suite that were killed
/// (their pid is gone), so that a SIGKILLed run leaves no lasting litter.
pub fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &name], None);
        }
    }
}

/// A namespace of the testbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// The node: bridge, rules, conntrack.
    Node,
    /// The client outside the cluster.
    Client,
    /// Pod `pod-N` (10.76.0.N).
    Pod(u8),
}

/// A pod's server: answers every TCP connection and UDP datagram on
/// [`POD_PORT`] with `pod-N <source address it saw>`.
struct Server {
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn dual_stack_listener(ty: Type) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, ty, None)?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, POD_PORT)).into())?;
    Ok(s)
}

/// The source address as the server saw it (IPv4-mapped shown as IPv4).
fn seen(peer: SocketAddr) -> String {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.ip().to_string(),
        },
        SocketAddr::V4(v4) => v4.ip().to_string(),
    }
}

fn serve(name: String, tcp: TcpListener, udp: UdpSocket, stop: &AtomicBool, hits: &AtomicUsize) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd {
                fd: tcp.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: udp.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll() on two valid descriptors owned by this function.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
        if n <= 0 {
            continue;
        }
        loop {
            match tcp.accept() {
                Ok((mut stream, peer)) => {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = stream.write_all(format!("{name} {}\n", seen(peer)).as_bytes());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        loop {
            match udp.recv_from(&mut buf) {
                Ok((_, peer)) => {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let _ = udp.send_to(format!("{name} {}\n", seen(peer)).as_bytes(), peer);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

fn start_server(ns: String, pod: String) -> Result<Server, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let (stop2, hits2) = (stop.clone(), hits.clone());
    let thread = std::thread::Builder::new()
        .name(format!("server {pod}"))
        .spawn(move || {
            let setup = || -> Result<(TcpListener, UdpSocket), String> {
                enter(&ns)?;
                let tcp = dual_stack_listener(Type::STREAM).map_err(|e| format!("tcp: {e}"))?;
                tcp.listen(128).map_err(|e| format!("listen: {e}"))?;
                let udp = dual_stack_listener(Type::DGRAM).map_err(|e| format!("udp: {e}"))?;
                let tcp: TcpListener = tcp.into();
                let udp: UdpSocket = udp.into();
                tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
                udp.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok((tcp, udp))
            };
            match setup() {
                Ok((tcp, udp)) => {
                    let _ = tx.send(Ok(()));
                    serve(pod, tcp, udp, &stop2, &hits2);
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("server {pod}: {e}")));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    let server = Server {
        stop,
        hits,
        thread: Some(thread),
    };
    rx.recv().map_err(|e| e.to_string())??;
    Ok(server)
}

/// The testbed of one test. Drop stops the servers and deletes the
/// namespaces (also when the test panics).
pub struct Testbed {
    // Declared first: dropped (servers stopped) before the namespaces go.
    servers: BTreeMap<u8, Server>,
    nss: Namespaces,
}

impl Testbed {
    /// Builds the namespaces, links, addresses, sysctls and pod servers.
    pub fn new() -> Result<Testbed, String> {
        let mut bed = Testbed {
            servers: BTreeMap::new(),
            nss: Namespaces::new(),
        };
        let node = bed.nss.create("node")?;
        let client = bed.nss.create("client")?;
        let pods: Vec<(u8, String)> = PODS
            .iter()
            .map(|&n| Ok((n, bed.nss.create(&format!("pod{n}"))?)))
            .collect::<Result<_, String>>()?;
        // No duplicate address detection: addresses (link-local ones too)
        // are usable at once instead of tentative for a second.
        for ns in [&node, &client]
            .into_iter()
            .chain(pods.iter().map(|(_, p)| p))
        {
            netns_exec(
                ns,
                &[
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )?;
        }
        // New namespaces start from kernel defaults (pitfall 6).
        netns_exec(
            &node,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.route_localnet=1",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.icmp.ratelimit=0",
                "net.bridge.bridge-nf-call-iptables=1",
                "net.bridge.bridge-nf-call-ip6tables=1",
            ],
        )?;
        let mut node_batch = vec![
            "link add cbr0 type bridge".to_string(),
            "addr add 10.76.0.1/24 dev cbr0".into(),
            "addr add fd00:76::1/64 dev cbr0 nodad".into(),
            "link set cbr0 up".into(),
            // The node's primary address (no dummy driver on every kernel).
            "addr add 10.140.0.2/32 dev lo".into(),
            format!("link add eth1 type veth peer name eth0 netns {client}"),
            "addr add 192.168.50.1/24 dev eth1".into(),
            "addr add fd00:50::1/64 dev eth1 nodad".into(),
            "link set eth1 up".into(),
        ];
        for (n, pod) in &pods {
            node_batch.extend([
                format!("link add vp{n} type veth peer name eth0 netns {pod}"),
                format!("link set vp{n} master cbr0"),
                format!("link set vp{n} type bridge_slave hairpin on"),
                format!("link set vp{n} up"),
            ]);
        }
        // The node's default route (towards the client) covers ClusterIPs
        // (pitfall 4).
        node_batch.extend([
            "route add default via 192.168.50.2".into(),
            "route add default via fd00:50::2".into(),
        ]);
        ip_batch(&node, &node_batch)?;
        ip_batch(
            &client,
            &[
                "addr add 192.168.50.2/24 dev eth0".into(),
                "addr add 192.168.50.3/24 dev eth0".into(),
                "addr add fd00:50::2/64 dev eth0 nodad".into(),
                "link set eth0 up".into(),
                "route add default via 192.168.50.1".into(),
                "route add default via fd00:50::1".into(),
            ],
        )?;
        for (n, pod) in &pods {
            ip_batch(
                pod,
                &[
                    format!("addr add 10.76.0.{n}/24 dev eth0"),
                    format!("addr add fd00:76::{n}/64 dev eth0 nodad"),
                    "link set eth0 up".into(),
                    "route add default via 10.76.0.1".into(),
                    "route add default via fd00:76::1".into(),
                ],
            )?;
            bed.servers
                .insert(*n, start_server(pod.clone(), format!("pod-{n}"))?);
        }
        Ok(bed)
    }

    /// The full name of a namespace.
    pub fn ns(&self, ns: Ns) -> String {
        match ns {
            Ns::Node => self.nss.name("node"),
            Ns::Client => self.nss.name("client"),
            Ns::Pod(n) => self.nss.name(&format!("pod{n}")),
        }
    }

    /// Runs `f` on a thread inside `ns`.
    pub fn in_ns<T: Send>(&self, ns: Ns, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.ns(ns), f)
    }

    /// Loads rules into the node.
    pub fn load(&self, loader: Loader, family: Family, rules: &str) {
        if let Err(e) = loader.load(&self.ns(Ns::Node), family, rules, false) {
            panic!("loading rules with {loader:?} failed: {e}\n--- rules ---\n{rules}");
        }
    }

    /// Forgets every connection the node tracks (pitfall 7).
    pub fn flush_conntrack(&self) {
        for family in ["ipv4", "ipv6"] {
            netns_exec(&self.ns(Ns::Node), &["conntrack", "-F", "-f", family])
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Connections and datagrams pod-N has answered so far.
    pub fn hits(&self, pod: u8) -> usize {
        self.servers
            .get(&pod)
            .map_or(0, |s| s.hits.load(Ordering::Relaxed))
    }

    /// Answers of all pods so far.
    pub fn total_hits(&self) -> usize {
        PODS.iter().map(|&p| self.hits(p)).sum()
    }

    /// The node's rules and conntrack table, for failure messages.
    pub fn dump(&self) -> String {
        let node = self.ns(Ns::Node);
        let mut out = String::new();
        for args in [
            &["iptables-save", "-c"][..],
            &["ip6tables-save", "-c"][..],
            &["nft", "list", "ruleset"][..],
            &["conntrack", "-L", "-f", "ipv4"][..],
            &["conntrack", "-L", "-f", "ipv6"][..],
        ] {
            out.push_str(&format!("--- {} ---\n", args.join(" ")));
            match netns_exec(&node, args) {
                Ok(s) => out.push_str(&s),
                Err(e) => out.push_str(&e),
            }
        }
        out
    }
}

/// `ip -n NS -batch -`.
fn ip_batch(ns: &str, lines: &[String]) -> Result<(), String> {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    run("ip", &["-n", ns, "-batch", "-"], Some(&input)).map(|_| ())
}
