//! Kernel end-to-end tests (issue 4): kproxy's output is loaded into real
//! netfilter inside throwaway network namespaces wired like a one-node
//! cluster (see `kernel/mod.rs`), and real TCP and UDP traffic checks what
//! the rules do.
//!
//! Needs root (or `unshare -Urnm` with a tmpfs on /run) and iptables,
//! nftables, conntrack, nfacct, iproute2. Where namespaces cannot be created each test prints
//! `SKIPPED: <test>: <reason>` and passes, except with `CI=true`, where it
//! fails.
//!
//! Every scenario is a function of the [`Loader`]; `loader_tests!` turns
//! them into one `#[test]` each per loader (iptables-restore, `nft -f`,
//! `nft -j -f`).

mod kernel;

use kernel::predict::{Probe, compile_fixture_ir};
use kernel::traffic::{Outcome, sock};
use kernel::*;
use kproxy_core::ir::Ruleset;
use kproxy_core::trace::{OutcomeKind, Ratio};

/// The scenarios, each run against a fresh testbed.
mod scenarios {
    use super::*;

    const HOSTNAMES: [&str; 2] = ["pod-9", "pod-10"];

    /// A testbed with `fixture`'s rules loaded, or `None` to skip.
    fn bed_with(test: &str, loader: Loader, family: Family, fixture: &str) -> Option<Testbed> {
        let bed = testbed(test, loader)?;
        bed.load(
            loader,
            family,
            &compile_fixture(loader, family, fixture, &[]),
        );
        Some(bed)
    }

    /// [`bed_with`], and the rule IR the loaded text was printed from (for
    /// the tracer).
    fn bed_and_rules(
        test: &str,
        loader: Loader,
        family: Family,
        fixture: &str,
    ) -> Option<(Testbed, Ruleset)> {
        let bed = bed_with(test, loader, family, fixture)?;
        Some((bed, compile_fixture_ir(loader, family, fixture, &[])))
    }

    /// A connection `pod` answered, seeing source `seen`.
    fn answered(pod: &str, seen: std::net::IpAddr) -> Outcome {
        Outcome::Answered {
            pod: pod.into(),
            seen,
        }
    }

    /// 1. ClusterIP from a pod and from the node; two endpoints both reached;
    ///    (nftables) an unserved port of the ClusterIP is rejected.
    pub fn clusterip(loader: Loader, test: &str) {
        let Some((bed, rules)) = bed_and_rules(test, loader, Family::V4, "clusterip.yaml") else {
            return;
        };
        let svc = sock("10.79.255.4", 80);
        let mut from_pod =
            bed.expect_spread("ClusterIP from pod-11", Ns::Pod(11), svc, 60, &HOSTNAMES);
        let from_node = bed.expect_spread("ClusterIP from the node", Ns::Node, svc, 60, &HOSTNAMES);
        // A pod inside the cluster CIDR is not masqueraded.
        let o = bed.tcp(Ns::Pod(11), None, svc);
        let (_, seen) = bed.expect_answer("ClusterIP from pod-11", &o);
        assert_eq!(seen, ip("10.76.0.11"), "pod-11's address must be preserved");
        from_pod.push(o);
        // The tracer: both endpoints at 1/2 each, not masqueraded.
        let t = bed.expect_trace_agrees(
            "ClusterIP from pod-11",
            &rules,
            Probe::tcp(Ns::Pod(11), None, svc),
            &from_pod,
        );
        let halves: Vec<(OutcomeKind, Option<Ratio>, bool)> = t
            .outcomes
            .iter()
            .map(|o| (o.kind.clone(), o.probability.exact, o.masqueraded))
            .collect();
        let half = Ratio::new(1, 2);
        assert_eq!(
            halves,
            [
                (OutcomeKind::Endpoint(sock("10.76.0.9", 9376)), half, false),
                (OutcomeKind::Endpoint(sock("10.76.0.10", 9376)), half, false),
            ],
            "ClusterIP from pod-11: the tracer's outcomes"
        );
        bed.expect_trace_agrees(
            "ClusterIP from the node",
            &rules,
            Probe::tcp(Ns::Node, None, svc),
            &from_node,
        );
        if loader != Loader::Iptables {
            // nftables mode rejects ports a ClusterIP does not serve
            // (cluster-ips-check); iptables mode routes them on.
            let unserved = sock("10.79.255.4", 81);
            let o = bed.expect_rejected(
                "ClusterIP on an unserved port from pod-11",
                Ns::Pod(11),
                None,
                unserved,
            );
            bed.expect_trace_agrees(
                "ClusterIP on an unserved port from pod-11",
                &rules,
                Probe::tcp(Ns::Pod(11), None, unserved),
                &[o],
            );
        }
    }

    /// 2. NodePort from outside, masqueraded to cbr0's address; also on
    ///    localhost from the node (route_localnet) with iptables, while
    ///    nftables mode leaves localhost NodePorts unserved.
    pub fn nodeport(loader: Loader, test: &str) {
        let Some((bed, rules)) = bed_and_rules(test, loader, Family::V4, "nodeport.yaml") else {
            return;
        };
        for node_ip in [NODE_IP, NODE_LINK_IP] {
            let what = format!("NodePort {node_ip}:31358 from the client");
            let dst = sock(node_ip, 31358);
            let seen = bed.expect_tcp(&what, Ns::Client, None, dst, "pod-9");
            assert_eq!(seen, ip(BRIDGE_IP), "{what}: must be masqueraded");
            // The tracer: the endpoint, masqueraded.
            let t = bed.expect_trace_agrees(
                &what,
                &rules,
                Probe::tcp(Ns::Client, None, dst),
                &[answered("pod-9", seen)],
            );
            assert!(
                matches!(t.outcomes.as_slice(), [o] if o.masqueraded),
                "{what}: the tracer must predict one masqueraded outcome: {:?}",
                t.outcomes
            );
        }
        let localhost = sock("127.0.0.1", 31358);
        if loader == Loader::Iptables {
            let seen = bed.expect_tcp(
                "NodePort 127.0.0.1:31358 from the node",
                Ns::Node,
                None,
                localhost,
                "pod-9",
            );
            assert_eq!(
                seen,
                ip(BRIDGE_IP),
                "localhost NodePort must be masqueraded"
            );
            bed.expect_trace_agrees(
                "NodePort 127.0.0.1:31358 from the node",
                &rules,
                Probe::tcp(Ns::Node, None, localhost),
                &[answered("pod-9", seen)],
            );
        } else {
            // nftables mode serves no localhost NodePorts (`ip daddr !=
            // 127.0.0.0/8` before @service-nodeports): nothing listens on
            // the node, whose own stack resets the connection.
            bed.expect_rejected(
                "NodePort 127.0.0.1:31358 from the node (nftables: not served)",
                Ns::Node,
                None,
                localhost,
            );
            // The rules let it through unchanged to the node's own stack
            // (whose reset is no rule's doing: not comparable as a fate).
            let t = kproxy_core::trace::trace(
                &rules,
                &bed.trace_env(),
                &kproxy_core::trace::Packet::new(
                    kproxy_core::trace::PacketOrigin::Node,
                    ip("127.0.0.1"),
                    localhost.ip(),
                    kproxy_core::model::Protocol::Tcp,
                    localhost.port(),
                ),
            )
            .expect("trace");
            assert!(
                t.to_local
                    && matches!(t.outcomes.as_slice(),
                        [o] if o.kind == OutcomeKind::Unchanged && !o.masqueraded),
                "NodePort 127.0.0.1:31358 from the node (nftables): the tracer must \
                 predict the node's own delivery: {:?}",
                t.outcomes
            );
        }
        let cluster_ip = sock("10.79.245.174", 80);
        let seen = bed.expect_tcp(
            "ClusterIP from the client",
            Ns::Client,
            None,
            cluster_ip,
            "pod-9",
        );
        bed.expect_trace_agrees(
            "ClusterIP from the client",
            &rules,
            Probe::tcp(Ns::Client, None, cluster_ip),
            &[answered("pod-9", seen)],
        );
    }

    /// 3. LoadBalancer IP (on no interface) with loadBalancerSourceRanges.
    pub fn loadbalancer_source_ranges(loader: Loader, test: &str) {
        let Some((bed, rules)) = bed_and_rules(test, loader, Family::V4, "loadbalancer.yaml")
        else {
            return;
        };
        let lb = sock("104.199.232.159", 80);
        let seen = bed.expect_tcp(
            "LB IP from an allowed source",
            Ns::Client,
            Some(CLIENT_IP),
            lb,
            "pod-9",
        );
        assert_eq!(
            seen,
            ip(BRIDGE_IP),
            "LB traffic (policy Cluster) is masqueraded"
        );
        bed.expect_trace_agrees(
            "LB IP from an allowed source",
            &rules,
            Probe::tcp(Ns::Client, Some(CLIENT_IP), lb),
            &[answered("pod-9", seen)],
        );
        let o = bed.expect_dropped(
            "LB IP from a source outside loadBalancerSourceRanges",
            Ns::Client,
            Some(CLIENT_IP_ALT),
            lb,
        );
        bed.expect_trace_agrees(
            "LB IP from a source outside loadBalancerSourceRanges",
            &rules,
            Probe::tcp(Ns::Client, Some(CLIENT_IP_ALT), lb),
            &[o],
        );
    }

    /// 4. externalTrafficPolicy Local: source preserved; no local endpoint = drop.
    pub fn external_traffic_policy_local(loader: Loader, test: &str) {
        let Some((bed, rules)) = bed_and_rules(test, loader, Family::V4, "local.yaml") else {
            return;
        };
        let with_local = sock(NODE_IP, 30001);
        let seen = bed.expect_tcp(
            "eTP Local NodePort with a local endpoint",
            Ns::Client,
            Some(CLIENT_IP),
            with_local,
            "pod-9",
        );
        assert_eq!(
            seen,
            ip(CLIENT_IP),
            "eTP Local must preserve the client's address"
        );
        bed.expect_trace_agrees(
            "eTP Local NodePort with a local endpoint",
            &rules,
            Probe::tcp(Ns::Client, Some(CLIENT_IP), with_local),
            &[answered("pod-9", seen)],
        );
        let without_local = sock(NODE_IP, 30002);
        let o = bed.expect_dropped(
            "eTP Local NodePort without a local endpoint",
            Ns::Client,
            Some(CLIENT_IP),
            without_local,
        );
        bed.expect_trace_agrees(
            "eTP Local NodePort without a local endpoint",
            &rules,
            Probe::tcp(Ns::Client, Some(CLIENT_IP), without_local),
            &[o],
        );
        // Internal traffic still reaches the remote endpoint (policy Cluster).
        let cluster_ip = sock("10.79.0.32", 80);
        let seen = bed.expect_tcp(
            "ClusterIP of the eTP Local Service from pod-11",
            Ns::Pod(11),
            None,
            cluster_ip,
            "pod-10",
        );
        bed.expect_trace_agrees(
            "ClusterIP of the eTP Local Service from pod-11",
            &rules,
            Probe::tcp(Ns::Pod(11), None, cluster_ip),
            &[answered("pod-10", seen)],
        );
    }

    /// 5. No endpoints: a fast rejection, not a timeout.
    pub fn no_endpoints_rejected(loader: Loader, test: &str) {
        let Some((bed, rules)) = bed_and_rules(test, loader, Family::V4, "no-endpoints.yaml")
        else {
            return;
        };
        let svc = sock("10.79.0.50", 80);
        for (what, from, dst) in [
            ("ClusterIP without endpoints from pod-11", Ns::Pod(11), svc),
            ("ClusterIP without endpoints from the node", Ns::Node, svc),
            (
                "NodePort without endpoints from the client",
                Ns::Client,
                sock(NODE_IP, 30003),
            ),
        ] {
            let o = bed.expect_rejected(what, from, None, dst);
            bed.expect_trace_agrees(what, &rules, Probe::tcp(from, None, dst), &[o]);
        }
    }

    /// 6. sessionAffinity ClientIP: 30 connections, one pod.
    pub fn session_affinity(loader: Loader, test: &str) {
        let Some(bed) = bed_with(test, loader, Family::V4, "affinity.yaml") else {
            return;
        };
        let outcomes = bed.tcp_n(Ns::Pod(11), None, sock("10.79.0.60", 80), 30);
        let pods: Vec<String> = outcomes
            .iter()
            .map(|o| bed.expect_answer("ClientIP affinity", o).0)
            .collect();
        assert!(
            pods.iter().all(|p| *p == pods[0]),
            "ClientIP affinity: 30 connections from one client reached {pods:?}\n{}",
            bed.dump()
        );
    }

    /// 7. UDP: datagrams reach both pods and replies come back.
    pub fn udp(loader: Loader, test: &str) {
        let Some((bed, rules)) = bed_and_rules(test, loader, Family::V4, "udp.yaml") else {
            return;
        };
        let svc = sock("10.79.0.53", 53);
        for from in [Ns::Pod(11), Ns::Node] {
            let mut reached = std::collections::BTreeSet::new();
            let mut observed = Vec::new();
            for _ in 0..60 {
                let o = bed.udp(from, None, svc);
                let (pod, seen) = bed.expect_answer(&format!("UDP ClusterIP from {from:?}"), &o);
                if from == Ns::Pod(11) {
                    assert_eq!(seen, ip("10.76.0.11"), "UDP from pod-11 is not masqueraded");
                }
                reached.insert(pod);
                observed.push(o);
            }
            assert_eq!(
                reached.len(),
                2,
                "60 UDP exchanges from {from:?} reached {reached:?}\n{}",
                bed.dump()
            );
            let probe = Probe {
                proto: kproxy_core::model::Protocol::Udp,
                ..Probe::tcp(from, None, svc)
            };
            bed.expect_trace_agrees(
                &format!("UDP ClusterIP from {from:?}"),
                &rules,
                probe,
                &observed,
            );
        }
    }

    /// 8. Hairpin: a pod reaches its own Service and is answered (masqueraded).
    pub fn hairpin(loader: Loader, test: &str) {
        let Some((bed, rules)) = bed_and_rules(test, loader, Family::V4, "hairpin.yaml") else {
            return;
        };
        let svc = sock("10.79.0.20", 80);
        let seen = bed.expect_tcp("pod-9 to its own ClusterIP", Ns::Pod(9), None, svc, "pod-9");
        assert_eq!(seen, ip(BRIDGE_IP), "hairpin traffic must be masqueraded");
        bed.expect_trace_agrees(
            "pod-9 to its own ClusterIP",
            &rules,
            Probe::tcp(Ns::Pod(9), None, svc),
            &[answered("pod-9", seen)],
        );
    }

    /// 9. IPv6: ClusterIP from a pod and the node, NodePort from outside.
    pub fn ipv6(loader: Loader, test: &str) {
        let Some((bed, rules)) = bed_and_rules(test, loader, Family::V6, "ipv6.yaml") else {
            return;
        };
        let svc = sock("fd00:79::4", 80);
        let from_pod = bed.expect_spread(
            "IPv6 ClusterIP from pod-11",
            Ns::Pod(11),
            svc,
            60,
            &HOSTNAMES,
        );
        let from_node = bed.expect_spread(
            "IPv6 ClusterIP from the node",
            Ns::Node,
            svc,
            60,
            &HOSTNAMES,
        );
        let nodeport = sock(NODE_LINK_IP6, 31358);
        let o = bed.tcp(Ns::Client, None, nodeport);
        let (_, seen) = bed.expect_answer("IPv6 NodePort from the client", &o);
        assert_eq!(seen, ip(BRIDGE_IP6), "IPv6 NodePort must be masqueraded");
        let mut from_client = bed.expect_spread(
            "IPv6 NodePort from the client",
            Ns::Client,
            nodeport,
            60,
            &HOSTNAMES,
        );
        from_client.push(o);
        for (what, from, dst, observed) in [
            ("IPv6 ClusterIP from pod-11", Ns::Pod(11), svc, from_pod),
            ("IPv6 ClusterIP from the node", Ns::Node, svc, from_node),
            (
                "IPv6 NodePort from the client",
                Ns::Client,
                nodeport,
                from_client,
            ),
        ] {
            bed.expect_trace_agrees(what, &rules, Probe::tcp(from, None, dst), &observed);
        }
    }

    /// 10. The seed article's four states, in order, each loaded as a full
    ///     (standalone) ruleset replacing the previous one.
    pub fn seed_article_states(loader: Loader, test: &str) {
        let Some(bed) = testbed(test, loader) else {
            return;
        };
        let state = |fixture: &str| {
            bed.flush_conntrack();
            bed.load(
                loader,
                Family::V4,
                &compile_fixture(loader, Family::V4, fixture, &[]),
            );
        };

        state("seed/1-clusterip.yaml");
        bed.expect_spread(
            "state 1: ClusterIP",
            Ns::Pod(11),
            sock("10.79.255.4", 80),
            10,
            &["pod-9"],
        );

        state("seed/2-scaled.yaml");
        bed.expect_spread(
            "state 2: scaled to two",
            Ns::Pod(11),
            sock("10.79.255.4", 80),
            60,
            &HOSTNAMES,
        );

        state("seed/3-nodeport.yaml");
        let seen = bed.expect_tcp(
            "state 3: NodePort",
            Ns::Client,
            None,
            sock(NODE_IP, 31358),
            "pod-9",
        );
        assert_eq!(seen, ip(BRIDGE_IP), "state 3: NodePort must be masqueraded");
        bed.expect_tcp(
            "state 3: new ClusterIP",
            Ns::Pod(11),
            None,
            sock("10.79.245.174", 80),
            "pod-9",
        );
        bed.expect_dropped(
            "state 3: the old ClusterIP is gone",
            Ns::Pod(11),
            None,
            sock("10.79.255.4", 80),
        );

        state("seed/4-loadbalancer.yaml");
        let seen = bed.expect_tcp(
            "state 4: LB IP",
            Ns::Client,
            None,
            sock("104.199.232.159", 80),
            "pod-9",
        );
        assert_eq!(
            seen,
            ip(BRIDGE_IP),
            "state 4: LB traffic must be masqueraded"
        );
        bed.expect_tcp(
            "state 4: NodePort",
            Ns::Client,
            None,
            sock(NODE_IP, 30675),
            "pod-9",
        );
        bed.expect_tcp(
            "state 4: ClusterIP",
            Ns::Pod(11),
            None,
            sock("10.79.250.127", 80),
            "pod-9",
        );
        // Nothing listens on the node's old NodePort any more: the node's
        // own stack resets the connection.
        bed.expect_rejected(
            "state 4: the old NodePort is gone",
            Ns::Client,
            None,
            sock(NODE_IP, 31358),
        );
    }
}

macro_rules! scenario_tests {
    ($loader:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                scenarios::$name($loader, concat!(module_path!(), "::", stringify!($name)));
            }
        )*
    };
}

/// One `#[test]` per scenario for a loader, in module `$module`.
macro_rules! loader_tests {
    ($module:ident, $loader:expr) => {
        mod $module {
            use super::*;
            scenario_tests!($loader;
                clusterip,
                nodeport,
                loadbalancer_source_ranges,
                external_traffic_policy_local,
                no_endpoints_rejected,
                session_affinity,
                udp,
                hairpin,
                ipv6,
                seed_article_states,
            );
        }
    };
}

loader_tests!(iptables, Loader::Iptables);
loader_tests!(nft_text, Loader::NftText);
loader_tests!(nft_json, Loader::NftJson);
loader_tests!(nft_netlink, Loader::NftNetlink);

/// Every golden case's standalone output is accepted by
/// `iptables-restore --test` (ip6tables-restore for IPv6 cases) and then
/// loaded for real, each in a fresh namespace.
#[test]
fn iptables_goldens_load() {
    let test = "iptables_goldens_load";
    if !gate_loader(test, Loader::Iptables) {
        return;
    }
    let dirs = kproxy_tests::golden_cases("iptables");
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut args = kproxy_tests::read_args(&dir.join("args"));
        args.push("--standalone".into());
        let family = if args.iter().any(|a| a == "--ip-family=ipv6") {
            Family::V6
        } else {
            Family::V4
        };
        let input = dir.join("input.yaml");
        let rules = match kproxy_tests::compile(&args, &[&input]) {
            Ok((out, _)) => out,
            Err(e) => {
                failures.push(format!("{name}: compile: {e}"));
                continue;
            }
        };
        let nss = kernel::testbed::Namespaces::new();
        let ns = nss
            .create("golden")
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        // `--test` only parses (it accepts a jump to an undeclared chain);
        // the real load into the throwaway namespace is what the kernel
        // validates.
        let result = Loader::Iptables
            .load(&ns, family, &rules, true)
            .map_err(|e| format!("--test: {e}"))
            .and_then(|()| Loader::Iptables.load(&ns, family, &rules, false));
        match result {
            Ok(()) => println!("ok   {name}"),
            // Rootless (unshare -Urn), netlink cannot grow its buffers for a
            // large nf_tables batch; root can.
            Err(e) if e.contains("Message too long") && !initial_user_ns() => skip(
                &format!("{test}: {name} (real load; --test passed)"),
                "the batch is too large for netlink in an unprivileged user namespace",
            ),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "rejected by the kernel:\n{}",
        failures.join("\n")
    );
}

/// Every nftables golden case (compiled as `golden_nftables.rs` does, with
/// `--standalone`) is accepted by `nft -c -f` (native text) and
/// `nft -j -c -f` (`--backend=nftables-json`) and then loaded for real,
/// each in a fresh namespace.
#[test]
fn nft_goldens_load() {
    let test = "nft_goldens_load";
    if !gate_loader(test, Loader::NftText) {
        return;
    }
    let dirs = kproxy_tests::golden_cases("nftables");
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut args = kproxy_tests::read_args(&dir.join("args"));
        args.push("--standalone".into());
        let family = if args.iter().any(|a| a == "--ip-family=ipv6") {
            Family::V6
        } else {
            Family::V4
        };
        let input = dir.join("input.yaml");
        for (loader, backend) in [
            (Loader::NftText, "--backend=nftables"),
            (Loader::NftJson, "--backend=nftables-json"),
        ] {
            let mut args = args.clone();
            args.push(backend.into());
            let rules = match kproxy_tests::compile(&args, &[&input]) {
                Ok((out, _)) => out,
                Err(e) => {
                    failures.push(format!("{name} {loader:?}: compile: {e}"));
                    continue;
                }
            };
            let nss = kernel::testbed::Namespaces::new();
            let ns = nss
                .create("golden")
                .unwrap_or_else(|e| panic!("{test}: {e}"));
            let result = loader
                .load(&ns, family, &rules, true)
                .map_err(|e| format!("-c: {e}"))
                .and_then(|()| loader.load(&ns, family, &rules, false));
            match result {
                Ok(()) => println!("ok   {name} {loader:?}"),
                Err(e) => failures.push(format!("{name} {loader:?}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "rejected by nft:\n{}",
        failures.join("\n")
    );
}
