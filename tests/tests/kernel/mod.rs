//! The kernel end-to-end testbed: throwaway network namespaces wired like a
//! one-node cluster, rule loaders, and traffic with assertions that cannot
//! flake (see shared/spec/kernel-testing.md).
//!
//! ```text
//!  pod9   eth0 10.76.0.9/24  fd00:76::9  ─┐
//!  pod10  eth0 10.76.0.10/24 fd00:76::10 ├─ vpN ── cbr0 10.76.0.1/24 fd00:76::1 (hairpin on)
//!  pod11  eth0 10.76.0.11/24 fd00:76::11 ┘         lo 10.140.0.2/32                    node
//!  client eth0 192.168.50.2/24 (+.3) fd00:50::2 ── eth1 192.168.50.1/24 fd00:50::1
//! ```

#![allow(dead_code)] // not every helper is used by every loader's tests yet

pub mod predict;
pub mod testbed;
pub mod traffic;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub use testbed::{Ns, Testbed};

/// The node's primary address (the seed article's node).
pub const NODE_IP: &str = "10.140.0.2";
/// The node's address on the client link.
pub const NODE_LINK_IP: &str = "192.168.50.1";
/// The node's IPv6 address on the client link.
pub const NODE_LINK_IP6: &str = "fd00:50::1";
/// cbr0's address: what a pod sees when traffic is masqueraded.
pub const BRIDGE_IP: &str = "10.76.0.1";
/// cbr0's IPv6 address.
pub const BRIDGE_IP6: &str = "fd00:76::1";
/// The client's first address.
pub const CLIENT_IP: &str = "192.168.50.2";
/// The client's second address.
pub const CLIENT_IP_ALT: &str = "192.168.50.3";
/// The client's IPv6 address.
pub const CLIENT_IP6: &str = "fd00:50::2";
/// The `--node-address` arguments naming the node's IPv4 interface
/// addresses (what kube-proxy would read from the host).
pub const NODE_ADDRESS_ARGS_V4: [&str; 6] = [
    "--node-address",
    "10.140.0.2/24",
    "--node-address",
    "192.168.50.1/24",
    "--node-address",
    "10.76.0.1/24",
];
/// The port every pod serves on, TCP and UDP.
pub const POD_PORT: u16 = 9376;
/// The pods of every testbed (last octet of 10.76.0.N; named `pod-N`).
pub const PODS: [u8; 3] = [9, 10, 11];

/// Parses an address constant.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad address {s:?}"))
}

/// An address family of the testbed and of kproxy's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4: iptables-restore.
    V4,
    /// IPv6: ip6tables-restore.
    V6,
}

/// How compiled rules get into the node's netfilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// `iptables-restore` / `ip6tables-restore` (no --noflush: the tables in
    /// the input are replaced).
    Iptables,
    /// `nft -f -` of the nftables backend's native text (the transaction of
    /// kube-proxy's first full sync).
    NftText,
    /// `nft -j -f -` of the nftables backend's JSON batch.
    NftJson,
    /// The nftables backend's transaction as one netlink batch
    /// (`kproxy_bin::agent::netlink`, the agent's default).
    NftNetlink,
}

/// The tables kproxy's nftables backends write (`table ip|ip6 kube-proxy`).
const NFT_TABLES: [&str; 2] = ["ip kube-proxy", "ip6 kube-proxy"];

impl Loader {
    /// kproxy arguments that select this loader's backend.
    pub fn compile_args(self) -> &'static [&'static str] {
        match self {
            Loader::Iptables => &["--backend", "iptables"],
            Loader::NftText | Loader::NftNetlink => {
                &["--proxy-mode", "nftables", "--backend", "nftables"]
            }
            Loader::NftJson => &["--proxy-mode", "nftables", "--backend", "nftables-json"],
        }
    }

    /// The tools this loader runs in the node (beyond the testbed's own).
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            Loader::Iptables => &["iptables-restore", "ip6tables-restore", "nfacct"],
            Loader::NftText | Loader::NftJson | Loader::NftNetlink => &["nft"],
        }
    }

    /// Loads `rules` into namespace `ns` (`test_only`: check, do not commit).
    ///
    /// A real load is a full sync that replaces what an earlier load left:
    /// iptables-restore (without --noflush) replaces the tables it is given;
    /// for nft the previous `kube-proxy` tables are deleted first. (kproxy
    /// prints kube-proxy's first-sync transaction as sent to an empty table:
    /// it re-creates the base chains and flushes the chains it writes, but
    /// the leftover set/map elements and service chains that kube-proxy
    /// would list and delete are unknown to it, so they would survive; the
    /// JSON batch assumes an empty table.)
    pub fn load(
        self,
        ns: &str,
        family: Family,
        rules: &str,
        test_only: bool,
    ) -> Result<(), String> {
        match self {
            Loader::Iptables => {
                let tool = match family {
                    Family::V4 => "iptables-restore",
                    Family::V6 => "ip6tables-restore",
                };
                let mut args = vec![tool];
                if test_only {
                    args.push("--test");
                } else {
                    ensure_nfacct(ns, rules)?;
                }
                netns_exec_stdin(ns, &args, rules)
            }
            Loader::NftNetlink if !test_only => {
                let txs = compiled_transactions(rules).ok_or_else(|| {
                    "netlink loader: rules not made by compile_fixture".to_string()
                })?;
                nft_delete_tables(ns)?;
                let only: Vec<kproxy_nft::Transaction> =
                    txs.iter().map(|(t, _)| t.clone()).collect();
                let opts = txs.first().map(|(_, o)| *o).unwrap_or_default();
                in_netns(ns, || kproxy_bin::agent::netlink::apply(&only, opts))
                    .map(|_| ())
                    .map_err(|e| format!("netlink batch: {e}"))
            }
            Loader::NftText | Loader::NftJson | Loader::NftNetlink => {
                let mut args = vec!["nft"];
                if self == Loader::NftJson {
                    args.push("-j");
                }
                if test_only {
                    args.push("-c");
                } else {
                    nft_delete_tables(ns)?;
                }
                args.extend(["-f", "-"]);
                netns_exec_stdin(ns, &args, rules)
            }
        }
    }
}

/// The transactions [`compile_fixture`] compiled into `rules` (netlink
/// loader), by their text.
type Compiled = Vec<(kproxy_nft::Transaction, kproxy_nft::PrintOptions)>;

fn compiled() -> &'static std::sync::Mutex<std::collections::HashMap<String, Compiled>> {
    static MAP: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Compiled>>> =
        std::sync::OnceLock::new();
    MAP.get_or_init(Default::default)
}

fn compiled_transactions(rules: &str) -> Option<Compiled> {
    compiled().lock().ok()?.get(rules).cloned()
}

/// Runs `f` on a thread inside network namespace `ns` (`ip netns` name).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on this (scoped) thread only, with a namespace fd we own.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// Deletes the `kube-proxy` tables of both families from namespace `ns`,
/// in one transaction (`add` first, so a missing table is no error).
pub fn nft_delete_tables(ns: &str) -> Result<(), String> {
    let script: String = NFT_TABLES
        .iter()
        .map(|t| format!("add table {t}\ndelete table {t}\n"))
        .collect();
    netns_exec_stdin(ns, &["nft", "-f", "-"], &script)
}

/// Creates the nfacct counters that `rules` name, as kube-proxy does before
/// its first restore (`-m nfacct` of a missing counter fails with ENOENT).
pub fn ensure_nfacct(ns: &str, rules: &str) -> Result<(), String> {
    let mut names: Vec<&str> = rules
        .split("--nfacct-name ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    names.sort_unstable();
    names.dedup();
    let existing = if names.is_empty() {
        String::new()
    } else {
        netns_exec(ns, &["nfacct", "list"])?
    };
    for name in names {
        if !existing.contains(&format!("= {name};")) {
            netns_exec(ns, &["nfacct", "add", name])?;
        }
    }
    Ok(())
}

/// The directory of the YAML fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel/fixtures")
}

/// The `kproxy compile` arguments of [`compile_fixture`].
fn fixture_args(loader: Loader, family: Family, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--standalone", "--hostname-override", "node1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(loader.compile_args().iter().map(|s| s.to_string()));
    match family {
        Family::V4 => args.extend(
            ["--ip-family", "ipv4", "--cluster-cidr", "10.76.0.0/14"]
                .into_iter()
                .chain(NODE_ADDRESS_ARGS_V4)
                .map(str::to_string),
        ),
        Family::V6 => args.extend(
            [
                "--ip-family",
                "ipv6",
                "--cluster-cidr",
                "fd00:76::/56",
                "--node-address",
                "fd00:50::1/64",
                "--node-address",
                "fd00:76::1/64",
            ]
            .iter()
            .map(|s| s.to_string()),
        ),
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Compiles a fixture (relative to [`fixtures`]) for this testbed's node
/// (`node1`, cluster CIDR 10.76.0.0/14 or fd00:76::/56) with `--standalone`;
/// `extra` arguments come last.
pub fn compile_fixture(loader: Loader, family: Family, fixture: &str, extra: &[&str]) -> String {
    let args = fixture_args(loader, family, extra);
    let path = fixtures().join(fixture);
    let out = match kproxy_tests::compile(&args, &[&path]) {
        Ok((out, _warnings)) => out,
        Err(e) => panic!("kproxy compile {args:?} {}: {e}", path.display()),
    };
    if loader == Loader::NftNetlink {
        let txs = kproxy_tests::compile_nft_transactions(&args, &[&path])
            .unwrap_or_else(|e| panic!("kproxy compile {args:?} {}: {e}", path.display()));
        if let Ok(mut m) = compiled().lock() {
            m.insert(out.clone(), txs);
        }
    }
    out
}

/// Finds a tool in PATH or the sbin directories (a non-root PATH lacks them).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn tool_path(name: &str) -> PathBuf {
    tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a command, returning its stdout or an error with its stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(tool_path(program));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        // A tool that fails early closes its stdin: report its stderr instead.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// `ip netns exec NS ARGS...` with `stdin`.
pub fn netns_exec_stdin(ns: &str, args: &[&str], stdin: &str) -> Result<(), String> {
    let tool = tool_path(args[0]);
    let tool = tool.to_string_lossy();
    let mut all = vec!["netns", "exec", ns, &tool];
    all.extend(&args[1..]);
    run("ip", &all, Some(stdin)).map(|_| ())
}

/// `ip netns exec NS ARGS...`, returning stdout.
pub fn netns_exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let tool = tool_path(args[0]);
    let tool = tool.to_string_lossy();
    let mut all = vec!["netns", "exec", ns, &tool];
    all.extend(&args[1..]);
    run("ip", &all, None)
}

/// Whether this machine can run the kernel tests: the tools are there and a
/// network namespace can be created and entered. Probed once.
pub fn availability() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    let missing: Vec<&str> = ["ip", "conntrack", "sysctl"]
        .into_iter()
        .filter(|t| tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing tools {missing:?} (apt-get install conntrack iproute2 procps)"
        ));
    }
    // Pod traffic to ClusterIPs needs br_netfilter (pitfall 1).
    let br_nf = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if !br_nf.exists() && tool("modprobe").is_some() {
        let _ = run("modprobe", &["br_netfilter"], None);
    }
    if !br_nf.exists() {
        return Err("br_netfilter is not available (modprobe br_netfilter)".into());
    }
    testbed::remove_stale_namespaces();
    let guard = testbed::Namespaces::new();
    let name = guard
        .create("probe")
        .map_err(|e| format!("cannot create a network namespace: {}", e.trim()))?;
    testbed::enter_in_thread(&name)
        .map_err(|e| format!("cannot enter a network namespace: {e}"))?;
    Ok(())
}

/// The gate of every kernel test: true to go on. When the testbed cannot
/// run here, prints `SKIPPED: <test>: <reason>`, or panics when `CI=true`
/// (CI must never skip these tests silently).
pub fn gate(test: &str) -> bool {
    match availability() {
        Ok(()) => true,
        Err(reason) => {
            skip(test, &reason);
            false
        }
    }
}

/// [`gate`], plus the tools of `loader` (iptables tests can run where nft
/// is missing, and the other way round).
pub fn gate_loader(test: &str, loader: Loader) -> bool {
    if !gate(test) {
        return false;
    }
    let missing: Vec<&str> = loader
        .tools()
        .iter()
        .copied()
        .filter(|t| tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(
        test,
        &format!(
            "missing tools {missing:?} for {loader:?} (apt-get install iptables nftables nfacct)"
        ),
    );
    false
}

/// Prints `SKIPPED: <what>: <reason>` where the harness does not hide it,
/// or panics when `CI=true`.
pub fn skip(what: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}: CI=true but the kernel testbed cannot run: {reason}");
    }
    // Written to the stderr handle, not with eprintln!, which the test
    // harness captures and hides for passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: {reason}");
}

/// Whether this process runs in the initial user namespace (not rootless).
pub fn initial_user_ns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// The gate (with `loader`'s tools) and a testbed: `None` when the test
/// must skip.
pub fn testbed(test: &str, loader: Loader) -> Option<Testbed> {
    if !gate_loader(test, loader) {
        return None;
    }
    Some(Testbed::new().unwrap_or_else(|e| panic!("{test}: testbed setup failed: {e}")))
}
