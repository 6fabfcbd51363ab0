//! Exhaustive equivalence of the two backends on fixed cluster states: the
//! iptables and nftables rulesets `kproxy compile` builds (as IR) must treat
//! every packet class ([`kproxy_core::equivalence::packet_classes`]) the
//! same, except for kube-proxy's own, intended differences between its modes
//! ([`kproxy_tests::known_differences`], shared with the differential
//! proptest). Any other difference fails the test with a `kproxy trace`
//! reproducer.
//!
//! States: the seed article's four (`examples/seed-article/`) and scenario
//! fixtures for eTP Local, source ranges, no endpoints, session affinity
//! and IPv6. The by-design differences that are not classified are
//! configured away, as in `trace_differential.rs`: localhost node ports off
//! (iptables only) and no Service CIDRs (nftables' drop for unallocated
//! cluster IPs). The exhaustive classes reach two by-design differences the
//! proptest's packets do not (node ports on loopback addresses, hairpin
//! through an endpoint on another node): see
//! [`kproxy_tests::known_differences::known_class_difference`].
//!
//! [`removing_an_endpoint_dnat_is_a_difference`] checks that a real
//! disagreement is reported; [`iptables_1_5_profile_on_seed_states`]
//! compares kube-proxy 1.5's iptables layout with the current one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kproxy_bin::compile::FamilyRules;
use kproxy_core::equivalence::{Difference, Equivalence, Options, compare_with};
use kproxy_core::ir::{Ruleset, Verdict};
use kproxy_core::model::{ClusterState, IpFamily};
use kproxy_core::plan::{Plan, plan};
use kproxy_core::trace::OutcomeKind;
use kproxy_core::trace::{Packet, TraceEnv};
use kproxy_tests::compile_ir;
use kproxy_tests::known_differences::{known_trace_difference, only, summary};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const SEED_NODE: &str = "gke-kube-sandbox-default-pool-88bb8656-26d1";

/// One cluster state: the manifests and the flags of `kproxy compile`.
struct Case {
    name: &'static str,
    args: Vec<String>,
    paths: Vec<PathBuf>,
}

impl Case {
    /// A seed article state: its manifests without the directory's
    /// KubeProxyConfiguration (a configuration file would make kproxy ignore
    /// `--iptables-localhost-nodeports`, as kube-proxy does), and the
    /// configuration's settings as flags.
    fn seed(name: &'static str) -> Self {
        let dir = root().join("../examples/seed-article").join(name);
        Self {
            name,
            args: vec![
                format!("--hostname-override={SEED_NODE}"),
                "--cluster-cidr=10.76.0.0/14".into(),
                "--iptables-localhost-nodeports=false".into(),
            ],
            paths: ["node.yaml", "service.yaml", "endpoints.yaml"]
                .iter()
                .map(|f| dir.join(f))
                .collect(),
        }
    }

    /// A seed article state as it is: its directory, with the
    /// KubeProxyConfiguration (localhost node ports on, kube-proxy's
    /// default), no flags.
    fn seed_as_is(name: &'static str) -> Self {
        Self {
            name,
            args: Vec::new(),
            paths: vec![root().join("../examples/seed-article").join(name)],
        }
    }

    /// A scenario fixture on node-a, with the pod network 10.244.0.0/16.
    fn scenario(name: &'static str) -> Self {
        Self {
            name,
            args: vec![
                "--hostname-override=node-a".into(),
                "--cluster-cidr=10.244.0.0/16".into(),
                "--iptables-localhost-nodeports=false".into(),
            ],
            paths: vec![root().join("fixtures/scenarios").join(name)],
        }
    }

    fn with(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The IR of one backend (`--backend=BACKEND --standalone`, plus
    /// `extra` flags), one entry per family.
    fn ir(&self, backend: &str, extra: &[&str]) -> Vec<FamilyRules> {
        let mut args = self.args.clone();
        args.push(format!("--backend={backend}"));
        args.push("--standalone".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let paths: Vec<&Path> = self.paths.iter().map(PathBuf::as_path).collect();
        compile_ir(&args, &paths).unwrap_or_else(|e| panic!("{}: {backend}: {e}", self.name))
    }

    fn state(&self) -> ClusterState {
        kproxy_bin::compile::load(&self.paths)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
            .state
    }

    /// The `kproxy trace` command that shows one packet class.
    fn reproducer(&self, backend: &str, extra: &[&str], p: &Packet) -> String {
        let mut s = String::from("kproxy trace");
        for a in self
            .args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            write!(s, " {a}").unwrap();
        }
        let dst = std::net::SocketAddr::new(p.dst, p.dst_port);
        write!(
            s,
            " --backend={backend} --from={} --src={} --dst={dst} --proto={}",
            p.origin.as_str(),
            p.src,
            p.protocol.as_lower()
        )
        .unwrap();
        for path in &self.paths {
            let shown = path.display().to_string();
            let shown = shown.replace(&format!("{}/", root().display()), "tests/");
            write!(s, " {}", shown.replace("tests/../", "")).unwrap();
        }
        s
    }
}

/// The known differences one comparison met: description, classes.
type Found = BTreeMap<&'static str, usize>;

fn render(diffs: &[Difference]) -> String {
    let mut out = String::new();
    for d in diffs.iter().take(12) {
        let fates = |f: &[kproxy_core::equivalence::Fate]| {
            f.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            out,
            "  {:?}\n    left:  {}\n    right: {}",
            d.packet,
            fates(&d.left),
            fates(&d.right)
        )
        .unwrap();
    }
    if diffs.len() > 12 {
        writeln!(out, "  ... {} more", diffs.len() - 12).unwrap();
    }
    out
}

/// Compares two rulesets of `family` over every packet class on the node
/// of `env`; `known` classifies the expected differences. Returns the
/// result and the known differences met.
fn compare_all(
    left: &Ruleset,
    right: &Ruleset,
    env: &TraceEnv,
    family: IpFamily,
    known: impl Fn(
        &Packet,
        &kproxy_core::trace::Trace,
        &kproxy_core::trace::Trace,
    ) -> Option<&'static str>
    + Sync,
) -> (Equivalence, Found) {
    let met = std::sync::Mutex::new(BTreeMap::new());
    let eq = compare_with(
        left,
        right,
        env,
        family,
        Options::default(),
        |p, a, b| match known(p, a, b) {
            Some(why) => {
                *met.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(why)
                    .or_insert(0) += 1;
                true
            }
            None => false,
        },
    )
    .unwrap_or_else(|e| panic!("trace: {e}"));
    (eq, met.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// The iptables and nftables IR of `case`, per family, with the plan the
/// known differences are recognised from.
fn backends(case: &Case) -> Vec<(FamilyRules, FamilyRules, Plan)> {
    let state = case.state();
    let ipt = case.ir("iptables", &[]);
    let nft = case.ir("nftables", &[]);
    assert_eq!(ipt.len(), nft.len(), "{}", case.name);
    ipt.into_iter()
        .zip(nft)
        .map(|(i, n)| {
            // The by-design differences the classification leaves out are
            // configured away: then both backends compile the same node.
            assert!(!i.node.localhost_node_ports, "{}", case.name);
            assert!(!n.node.nftables_localhost_node_ports, "{}", case.name);
            assert!(i.node.service_cidrs.is_empty(), "{}", case.name);
            assert_eq!(i.node, n.node, "{}", case.name);
            let p = plan(&state, &i.node);
            (i, n, p)
        })
        .collect()
}

/// Checks that the two backends are equivalent on `case` up to known
/// differences; returns what was found per family.
fn backends_equivalent(case: &Case) -> Vec<Found> {
    let mut out = Vec::new();
    for (ipt, nft, plan) in backends(case) {
        let env = TraceEnv::from_node(&ipt.node);
        let family = ipt.node.family;
        let (eq, found) = compare_all(&ipt.ruleset, &nft.ruleset, &env, family, |p, a, b| {
            known_trace_difference(&plan, p, a, b)
        });
        assert!(eq.complete, "{}: not every class traced", case.name);
        assert!(eq.classes > 0, "{}", case.name);
        if let Some(d) = eq.differences.first() {
            panic!(
                "{} ({family}): iptables (left) and nftables (right) disagree on {} of {} \
                 packet classes, and not in a known way:\n{}reproduce:\n  {}\n  {}",
                case.name,
                eq.differences.len(),
                eq.classes,
                render(&eq.differences),
                case.reproducer("iptables", &[], &d.packet),
                case.reproducer("nftables", &[], &d.packet),
            );
        }
        eprintln!(
            "{} ({family}): {} classes, known: {found:?}",
            case.name, eq.classes
        );
        out.push(found);
    }
    out
}

fn seed_cases() -> Vec<Case> {
    ["1-clusterip", "2-scaled", "3-nodeport", "4-loadbalancer"]
        .into_iter()
        .map(Case::seed)
        .collect()
}

#[test]
fn seed_article_states() {
    for case in seed_cases() {
        let found = backends_equivalent(&case);
        assert_eq!(found.len(), 1, "{}", case.name);
        // Every state has a cluster IP: a port it does not serve is
        // nftables' cluster-ips-check reject, iptables lets it through.
        assert!(
            found[0].contains_key("unserved cluster IP port: nftables rejects"),
            "{}: {:?}",
            case.name,
            found[0]
        );
    }
}

#[test]
fn etp_local() {
    let found = backends_equivalent(&Case::scenario("etp-local-with-local.yaml"));
    // A packet from the endpoint on node-b, sent back to it: iptables
    // masquerades (every KUBE-SEP chain), nftables only hairpins local ones.
    assert!(
        found[0].contains_key("hairpin through an endpoint on another node: iptables masquerades"),
        "{found:?}"
    );
    // Without a local endpoint, external traffic is dropped.
    backends_equivalent(&Case::scenario("etp-local-without-local.yaml"));
}

#[test]
fn lb_source_ranges() {
    backends_equivalent(&Case::scenario("lb-source-ranges.yaml"));
}

#[test]
fn no_endpoints() {
    let found = backends_equivalent(&Case::scenario("no-endpoints.yaml"));
    // Node ports with no endpoints on 127.0.0.0/8: iptables rejects
    // (`--dst-type LOCAL`), nftables skips loopback.
    assert!(
        found[0]
            .contains_key("node port with nowhere to go, on a loopback address: iptables blocks"),
        "{found:?}"
    );
}

#[test]
fn session_affinity() {
    backends_equivalent(&Case::scenario("session-affinity.yaml"));
}

#[test]
fn ipv6() {
    let case = Case::scenario("ipv6.yaml");
    let case = Case {
        args: vec![
            "--hostname-override=node-a".into(),
            "--cluster-cidr=fd00:10:244::/56".into(),
            "--ip-family=ipv6".into(),
            "--iptables-localhost-nodeports=false".into(),
        ],
        ..case
    };
    let found = backends_equivalent(&case);
    assert_eq!(found.len(), 1);
}

#[test]
fn node_port_on_primary_address_only() {
    // Node ports on the primary address only: iptables still blocks node
    // ports with nowhere to go on the other local addresses.
    backends_equivalent(
        &Case::scenario("etp-local-without-local.yaml").with("--nodeport-addresses=primary"),
    );
}

/// A real disagreement is reported, and none of it is classified as known:
/// the iptables rules lose the DNAT of one endpoint (`KUBE-SEP-…`).
#[test]
fn removing_an_endpoint_dnat_is_a_difference() {
    let case = Case::seed("2-scaled");
    let (mut ipt, nft, plan) = backends(&case).remove(0);
    let nat = ipt.ruleset.table_mut("nat").expect("nat table");
    let sep = nat
        .chains
        .iter_mut()
        .find(|c| c.name.as_str().starts_with("KUBE-SEP-"))
        .expect("a KUBE-SEP chain");
    let before = sep.rules.len();
    sep.rules
        .retain(|r| !matches!(r.verdict, Some(Verdict::Dnat(_))));
    assert_eq!(sep.rules.len() + 1, before, "one DNAT removed");
    let env = TraceEnv::from_node(&ipt.node);
    let (eq, _) = compare_all(&ipt.ruleset, &nft.ruleset, &env, IpFamily::V4, |p, a, b| {
        known_trace_difference(&plan, p, a, b)
    });
    assert!(
        !eq.is_equivalent(),
        "the broken ruleset passed as equivalent"
    );
    assert!(eq.differences.iter().all(|d| !d.undecided()));
    // The classes that differ are those sent to the service: the broken
    // endpoint chain leaves them unchanged (half the time).
    let svc_ip: std::net::IpAddr = "10.79.255.4".parse().unwrap();
    assert!(
        eq.differences
            .iter()
            .any(|d| d.packet.dst == svc_ip && d.packet.dst_port == 80),
        "{}",
        render(&eq.differences)
    );
    // And a lost endpoint in the nftables rules (1.36+ writes one
    // `dnat to numgen random mod 2 map { … }` and no endpoint chains here).
    let (ipt, mut nft, plan) = backends(&case).remove(0);
    let dnat = nft
        .ruleset
        .tables
        .iter_mut()
        .flat_map(|t| t.chains.iter_mut())
        .flat_map(|c| c.rules.iter_mut())
        .find_map(|r| match &mut r.verdict {
            Some(Verdict::DnatRandom { to }) => Some(to),
            _ => None,
        })
        .expect("a numgen DNAT");
    assert_eq!(dnat.len(), 2);
    dnat.remove(0);
    let (eq, _) = compare_all(&ipt.ruleset, &nft.ruleset, &env, IpFamily::V4, |p, a, b| {
        known_trace_difference(&plan, p, a, b)
    });
    assert!(
        !eq.is_equivalent(),
        "the broken nft ruleset passed as equivalent"
    );
    assert!(
        eq.differences
            .iter()
            .all(|d| d.packet.dst == svc_ip && d.packet.dst_port == 80),
        "{}",
        render(&eq.differences)
    );
}

/// kube-proxy 1.5's iptables layout (`--kube-proxy-version=1.5`) and the
/// current one on the seed article's states, as they are (the directory's
/// configuration: localhost node ports on, kube-proxy's default). Different
/// chains (the masquerade mark moved from `KUBE-SERVICES` into
/// `KUBE-SVC-…`, node ports and load-balancer IPs go through `KUBE-EXT-…`),
/// the same behaviour, but for one documented difference:
///
/// * current kube-proxy sets `route_localnet` for localhost node ports and
///   so guards it in `KUBE-FIREWALL` (`-d 127.0.0.0/8 ! -s 127.0.0.0/8 …
///   -j DROP`, "block incoming localnet connections"); 1.5 has no such rule
///   and lets those packets through unchanged. Node ports on 127.0.0.0/8
///   (TCP, the seed's protocol) are DNATed by both.
#[test]
fn iptables_1_5_profile_on_seed_states() {
    for name in ["1-clusterip", "2-scaled", "3-nodeport", "4-loadbalancer"] {
        let case = Case::seed_as_is(name);
        let old = case.ir("iptables", &["--kube-proxy-version=1.5"]);
        let new = case.ir("iptables", &[]);
        assert_eq!(old.len(), 1);
        assert_ne!(old[0].ruleset, new[0].ruleset, "{}: same rules", case.name);
        let env = TraceEnv::from_node(&new[0].node);
        let loopback: ipnet::IpNet = "127.0.0.0/8".parse().unwrap();
        let (eq, found) = compare_all(
            &old[0].ruleset,
            &new[0].ruleset,
            &env,
            new[0].node.family,
            |p, a, b| {
                let (a, b) = (summary(a), summary(b));
                (loopback.contains(&p.dst)
                    && !loopback.contains(&p.src)
                    && only(&a, OutcomeKind::Unchanged)
                    && only(&b, OutcomeKind::Drop))
                .then_some("non-loopback source to 127.0.0.0/8: current drops (KUBE-FIREWALL)")
            },
        );
        assert!(eq.complete);
        assert_eq!(found.len(), 1, "{}: {found:?}", case.name);
        if let Some(d) = eq.differences.first() {
            panic!(
                "{}: kube-proxy 1.5 (left) and current (right) iptables rules differ on {} of {} \
                 packet classes:\n{}reproduce:\n  {}\n  {}",
                case.name,
                eq.differences.len(),
                eq.classes,
                render(&eq.differences),
                case.reproducer("iptables", &["--kube-proxy-version=1.5"], &d.packet),
                case.reproducer("iptables", &[], &d.packet),
            );
        }
    }
}
