//! The iptables and nftables backends agree on what each Service front end
//! reaches. Both rulesets are read structurally from their IR (no packet
//! tracer): every front end (cluster IP, external IP, load-balancer IP as
//! `IP . proto . port`; node port as `proto . port`) is mapped to the set of
//! endpoints `IP:port` its DNATs can pick.
//!
//! * iptables (`kproxy_iptables::build`, not standalone): the `nat` table's
//!   `KUBE-SERVICES` / `KUBE-NODEPORTS` rules, then `KUBE-SVC` / `KUBE-SVL`
//!   / `KUBE-EXT` / `KUBE-FW` chains down to the `KUBE-SEP` DNATs.
//! * nftables (`kproxy_nft::build` + `Transaction::apply`): the
//!   `service-ips` / `service-nodeports` map elements, then `external-`,
//!   `service-`, `local-` and `endpoint-` chains down to their DNATs.
//!
//! Each front end gets two views: `any`, the union over every branch (every
//! possible source), and `plain`, what a source that is neither a pod, nor
//! the node, nor in a LoadBalancerSourceRange reaches (branches guarded by a
//! source match are left out; nftables' `firewall-ips` drop applies). The
//! front ends the filter rules drop or reject for lack of endpoints are
//! compared too (iptables `KUBE-SERVICES` / `KUBE-EXTERNAL-SERVICES` in
//! `filter`; nftables `no-endpoint-services` / `no-endpoint-nodeports`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Parser;
use kproxy_bin::cli::{Cli, Command};
use kproxy_core::ir::{
    Chain, Direction, Key, KeyValue, MapValue, Match, RecentOp, Rule, Table, Verdict,
};
use kproxy_core::model::{ClusterState, IpFamily, LocalDetector, NodeConfig, Protocol};
use kproxy_core::plan::plan;

/// A Service front end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum FrontEnd {
    /// Cluster, external or load-balancer IP.
    Ip(IpAddr, Protocol, u16),
    /// Node port.
    NodePort(Protocol, u16),
}

impl fmt::Display for FrontEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontEnd::Ip(ip, p, port) => write!(f, "{ip} . {} . {port}", p.as_lower()),
            FrontEnd::NodePort(p, port) => write!(f, "nodeport {} . {port}", p.as_lower()),
        }
    }
}

/// What the filter rules do to a front end without (usable) endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Blocked {
    Reject,
    Drop,
}

type Reach = BTreeMap<FrontEnd, BTreeSet<SocketAddr>>;

/// One backend's view of one family.
#[derive(Debug, Default, PartialEq, Eq)]
struct View {
    any: Reach,
    plain: Reach,
    blocked: BTreeMap<FrontEnd, Blocked>,
}

impl View {
    fn render(&self) -> String {
        let mut out = String::new();
        for (fe, eps) in &self.any {
            let eps: Vec<String> = eps.iter().map(SocketAddr::to_string).collect();
            let plain: Vec<String> = self.plain[fe].iter().map(SocketAddr::to_string).collect();
            out.push_str(&format!(
                "{fe} -> any {{{}}} plain {{{}}}\n",
                eps.join(", "),
                plain.join(", ")
            ));
        }
        for (fe, b) in &self.blocked {
            out.push_str(&format!("{fe} -> {b:?}\n"));
        }
        out
    }
}

/// A rule whose match depends on the packet's source (pod, node, source
/// range, affinity): left out of the `plain` view.
fn source_guarded(rule: &Rule) -> bool {
    rule.matches.iter().any(|m| match m {
        Match::Addr { dir, .. } | Match::AddrSet { dir, .. } => *dir == Direction::Src,
        Match::AddrTypeLocal { dir, .. } => *dir == Direction::Src,
        Match::InInterface { .. } => true,
        Match::InSet { keys, .. } => keys.contains(&Key::SrcAddr),
        Match::Recent { op, .. } => matches!(op, RecentOp::Check { .. }),
        _ => false,
    })
}

/// The endpoints reachable from chain `start`.
struct Walker<'a> {
    chains: HashMap<&'a str, &'a Chain>,
    /// Jump targets that only set a mark and return.
    ignored: &'a [&'a str],
}

impl<'a> Walker<'a> {
    fn new(table: &'a Table, ignored: &'a [&'a str]) -> Self {
        Self {
            chains: table.chains.iter().map(|c| (c.name.as_str(), c)).collect(),
            ignored,
        }
    }

    fn reach(&self, start: &str, plain: bool) -> BTreeSet<SocketAddr> {
        let mut out = BTreeSet::new();
        let mut seen = HashSet::new();
        self.walk(start, plain, &mut out, &mut seen);
        out
    }

    fn walk(
        &self,
        chain: &str,
        plain: bool,
        out: &mut BTreeSet<SocketAddr>,
        seen: &mut HashSet<String>,
    ) {
        if self.ignored.contains(&chain) || !seen.insert(chain.to_string()) {
            return;
        }
        let c = self
            .chains
            .get(chain)
            .unwrap_or_else(|| panic!("jump to missing chain {chain}"));
        for rule in &c.rules {
            if plain && source_guarded(rule) {
                continue;
            }
            match &rule.verdict {
                Some(Verdict::Jump(to)) | Some(Verdict::Goto(to)) => {
                    self.walk(to.as_str(), plain, out, seen)
                }
                Some(Verdict::RandomVerdictMap { to }) => {
                    for t in to {
                        self.walk(t.as_str(), plain, out, seen);
                    }
                }
                Some(Verdict::Dnat(sa)) => {
                    out.insert(*sa);
                }
                Some(Verdict::DnatRandom { to }) => out.extend(to.iter().copied()),
                _ => {}
            }
        }
    }
}

fn dst_front_end(rule: &Rule) -> Option<(Option<IpAddr>, Protocol, u16)> {
    let mut ip = None;
    let mut proto = None;
    let mut port = None;
    for m in &rule.matches {
        match m {
            Match::Addr {
                dir: Direction::Dst,
                addr: kproxy_core::ir::AddrMatch::Ip(a),
                negate: false,
            } => ip = Some(*a),
            Match::Protocol(p) => proto = Some(*p),
            Match::DstPort(p) => port = Some(*p),
            _ => {}
        }
    }
    Some((ip, proto?, port?))
}

fn iptables_view(ruleset: &kproxy_core::ir::Ruleset) -> View {
    use kproxy_iptables::names::{
        KUBE_EXTERNAL_SERVICES, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_SERVICES,
    };
    let nat = ruleset.table("nat").expect("nat table");
    let filter = ruleset.table("filter").expect("filter table");
    let ignored = [KUBE_MARK_MASQ];
    let walker = Walker::new(nat, &ignored);
    let mut view = View::default();
    let mut entries: Vec<(FrontEnd, String)> = Vec::new();
    for (chain, node_ports) in [(KUBE_SERVICES, false), (KUBE_NODEPORTS, true)] {
        let Some(c) = nat.chain(chain) else { continue };
        for rule in &c.rules {
            let Some(to) = rule.jump_target() else {
                continue;
            };
            if to.as_str() == KUBE_NODEPORTS {
                continue;
            }
            let (ip, proto, port) =
                dst_front_end(rule).unwrap_or_else(|| panic!("{chain}: unexpected rule {rule:?}"));
            let fe = match (node_ports, ip) {
                (false, Some(ip)) => FrontEnd::Ip(ip, proto, port),
                (true, _) => FrontEnd::NodePort(proto, port),
                (false, None) => panic!("{chain}: rule without destination {rule:?}"),
            };
            entries.push((fe, to.to_string()));
        }
    }
    for (fe, to) in entries {
        let any = walker.reach(&to, false);
        let plain = walker.reach(&to, true);
        // KUBE-NODEPORTS has a second (localhost) rule per node port with
        // the same target.
        view.any.entry(fe.clone()).or_default().extend(any);
        view.plain.entry(fe).or_default().extend(plain);
    }
    for chain in [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES] {
        let Some(c) = filter.chain(chain) else {
            continue;
        };
        for rule in &c.rules {
            let blocked = match rule.verdict {
                Some(Verdict::Reject) => Blocked::Reject,
                Some(Verdict::Drop) => Blocked::Drop,
                _ => continue,
            };
            let Some((ip, proto, port)) = dst_front_end(rule) else {
                continue;
            };
            let fe = match ip {
                Some(ip) => FrontEnd::Ip(ip, proto, port),
                None => FrontEnd::NodePort(proto, port),
            };
            view.blocked.insert(fe, blocked);
        }
    }
    view
}

fn proto_port(key: &[KeyValue]) -> Option<(Protocol, u16)> {
    match key {
        [KeyValue::Proto(p), KeyValue::Port(port)] => Some((*p, *port)),
        _ => None,
    }
}

fn map_front_end(key: &[KeyValue]) -> FrontEnd {
    match key {
        [KeyValue::Ip(ip), rest @ ..] => {
            let (p, port) = proto_port(rest).expect("IP . proto . port");
            FrontEnd::Ip(*ip, p, port)
        }
        other => {
            let (p, port) = proto_port(other).expect("proto . port");
            FrontEnd::NodePort(p, port)
        }
    }
}

fn nft_view(table: &Table) -> View {
    use kproxy_nft::names::{
        FIREWALL_IPS, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, REJECT_CHAIN, SERVICE_IPS,
        SERVICE_NODEPORTS,
    };
    let walker = Walker::new(table, &[]);
    let mut view = View::default();
    // Front ends whose firewall chain drops a source outside the ranges.
    let firewalled: BTreeSet<FrontEnd> = table
        .map(FIREWALL_IPS)
        .map(|m| {
            m.elements
                .iter()
                .filter(|(_, MapValue::Verdict(v))| {
                    let Verdict::Goto(c) = v else { return false };
                    table.chain(c.as_str()).is_some_and(|c| {
                        c.rules.iter().any(|r| {
                            r.verdict == Some(Verdict::Drop)
                                && r.matches.iter().any(|m| {
                                    matches!(
                                        m,
                                        Match::AddrSet {
                                            dir: Direction::Src,
                                            negate: true,
                                            ..
                                        }
                                    )
                                })
                        })
                    })
                })
                .map(|(e, _)| map_front_end(&e.key))
                .collect()
        })
        .unwrap_or_default();
    for map in [SERVICE_IPS, SERVICE_NODEPORTS] {
        let Some(m) = table.map(map) else { continue };
        for (e, MapValue::Verdict(v)) in &m.elements {
            let Verdict::Goto(to) = v else {
                panic!("{map}: unexpected value {v:?}");
            };
            let fe = map_front_end(&e.key);
            let any = walker.reach(to.as_str(), false);
            let plain = if firewalled.contains(&fe) {
                BTreeSet::new()
            } else {
                walker.reach(to.as_str(), true)
            };
            view.any.insert(fe.clone(), any);
            view.plain.insert(fe, plain);
        }
    }
    for map in [NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS] {
        let Some(m) = table.map(map) else { continue };
        for (e, MapValue::Verdict(v)) in &m.elements {
            let blocked = match v {
                Verdict::Goto(c) if c.as_str() == REJECT_CHAIN => Blocked::Reject,
                Verdict::Drop => Blocked::Drop,
                other => panic!("{map}: unexpected value {other:?}"),
            };
            view.blocked.insert(map_front_end(&e.key), blocked);
        }
    }
    view
}

/// Both backends' views of one family (nftables mode never accepts
/// localhost node ports, as `kproxy compile` configures it).
fn views(state: &ClusterState, node: &NodeConfig) -> (View, View) {
    let ipt = kproxy_iptables::build(
        &plan(state, node),
        kproxy_iptables::LayoutOptions {
            standalone: false,
            ..Default::default()
        },
    );
    let mut nft_node = node.clone();
    nft_node.localhost_node_ports = false;
    let tx = kproxy_nft::build(
        &plan(state, &nft_node),
        kproxy_nft::LayoutOptions::default(),
    );
    let table = tx.apply().expect("nft transaction applies");
    (iptables_view(&ipt), nft_view(&table))
}

fn assert_agree(name: &str, state: &ClusterState, node: &NodeConfig) -> View {
    let (ipt, nft) = views(state, node);
    if std::env::var_os("KPROXY_SHOW_VIEWS").is_some() {
        eprintln!("== {name} ({:?})\n{}", node.family, ipt.render());
    }
    if ipt != nft {
        panic!(
            "{name} ({:?}): backends disagree\n--- iptables\n{}--- nftables\n{}",
            node.family,
            ipt.render(),
            nft.render()
        );
    }
    ipt
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/scenarios")
        .join(name)
}

/// The cluster state and the node configurations (one per family) that
/// `kproxy compile ARGS FIXTURE` would use.
fn load(fixture_name: &str, args: &[&str]) -> (ClusterState, Vec<NodeConfig>) {
    let mut argv: Vec<String> = vec!["kproxy".into(), "compile".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.push(fixture(fixture_name).display().to_string());
    let cli = Cli::try_parse_from(&argv).expect("arguments");
    let Command::Compile(c) = cli.command else {
        panic!("not a compile command")
    };
    let inv = kproxy_bin::compile::load(&c.paths).expect("fixture loads");
    let resolved = kproxy_bin::settings::resolve(&c.node, &inv).expect("settings");
    (inv.state, resolved.nodes)
}

const BASE: &[&str] = &["--hostname-override=node-a", "--cluster-cidr=10.244.0.0/16"];

/// Every scenario fixture, compiled with the base flags.
#[test]
fn scenario_fixtures_agree() {
    let mut names: Vec<String> = std::fs::read_dir(fixture(""))
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() > 25, "fixtures missing");
    let mut front_ends = 0;
    for name in &names {
        let (state, nodes) = load(name, BASE);
        for node in &nodes {
            front_ends += assert_agree(name, &state, node).any.len();
        }
    }
    assert!(front_ends > 50, "only {front_ends} front ends compared");
}

/// Node-level knobs and both families.
#[test]
fn flag_variants_agree() {
    let cases: &[(&str, &[&str])] = &[
        ("local-detector.yaml", &["--masquerade-all=true"]),
        ("local-detector.yaml", &["--detect-local-mode=NodeCIDR"]),
        (
            "local-detector.yaml",
            &[
                "--detect-local-mode=InterfaceNamePrefix",
                "--pod-interface-name-prefix=veth",
            ],
        ),
        ("local-detector.yaml", &["--cluster-cidr="]),
        (
            "nodeport.yaml",
            &[
                "--nodeport-addresses=192.168.0.0/24,127.0.0.0/8",
                "--node-address=127.0.0.1/8",
                "--node-address=192.168.0.10/24",
            ],
        ),
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
    ];
    for (name, extra) in cases {
        let mut args = vec!["--hostname-override=node-a"];
        if !extra.iter().any(|a| a.starts_with("--cluster-cidr")) {
            args.push("--cluster-cidr=10.244.0.0/16");
        }
        args.extend_from_slice(extra);
        let (state, nodes) = load(name, &args);
        for node in &nodes {
            assert_agree(&format!("{name} {extra:?}"), &state, node);
        }
    }
}

/// The benchmarks' synthetic cluster (NodePorts, LoadBalancers with source
/// ranges and eTP Local, ClientIP affinity, UDP ports), on a node that
/// hosts some endpoints.
#[test]
fn synthetic_cluster_agrees() {
    let state = kproxy_core::synthetic::cluster(300, 4);
    let mut node = NodeConfig::new(IpFamily::V4, "node-3");
    node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("cidr"));
    let view = assert_agree("synthetic", &state, &node);
    assert!(view.any.len() > 300);
    // Some eTP Local front ends reach fewer endpoints from outside.
    assert!(
        view.any
            .iter()
            .any(|(fe, eps)| view.plain[fe].len() < eps.len())
    );
}

/// The comparison sees a difference when there is one.
#[test]
fn a_difference_is_seen() {
    let (state, nodes) = load("etp-local-with-local.yaml", BASE);
    let (ipt, mut nft) = views(&state, &nodes[0]);
    assert_eq!(ipt, nft);
    let (fe, eps) = nft.plain.iter_mut().find(|(_, e)| !e.is_empty()).unwrap();
    let fe = fe.clone();
    let removed = *eps.iter().next().unwrap();
    eps.remove(&removed);
    assert_ne!(ipt, nft, "removing {removed} from {fe} went unnoticed");
}
