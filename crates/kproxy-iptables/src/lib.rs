//! # kproxy-iptables
//!
//! Lowers a [`kproxy_core::plan::Plan`] to the rules kube-proxy's iptables
//! mode writes (the v1.34+ layout: `KUBE-SERVICES`, `KUBE-SVC-*`,
//! `KUBE-SVL-*`, `KUBE-EXT-*`, `KUBE-FW-*`, `KUBE-SEP-*`, ...) and prints them
//! as `iptables-restore` input. [`layout`] builds the IR; [`mod@print`] only
//! spells it. No Kubernetes decision is taken here: the planner took them.
//!
//! ```
//! use kproxy_core::model::*;
//! use kproxy_iptables::{compile, Options};
//!
//! let svc = Service::cluster_ip("ns1", "svc1", "172.30.0.41".parse().unwrap())
//!     .with_port(ServicePort::new("p80", Protocol::Tcp, 80));
//! let slice = EndpointSlice::new("ns1", "svc1-abc", "svc1", IpFamily::V4)
//!     .with_port(EndpointPort::new("p80", Protocol::Tcp, 80))
//!     .with_endpoint(Endpoint::ready("10.180.0.1".parse().unwrap()));
//! let state = ClusterState { services: vec![svc], endpoint_slices: vec![slice] };
//! let node = NodeConfig::new(IpFamily::V4, "node-1");
//! let text = compile(&state, &node, Options::default()).unwrap();
//! assert_eq!(text, r#"*filter
//! :KUBE-SERVICES - [0:0]
//! :KUBE-EXTERNAL-SERVICES - [0:0]
//! :KUBE-FORWARD - [0:0]
//! :KUBE-NODEPORTS - [0:0]
//! :KUBE-PROXY-FIREWALL - [0:0]
//! :KUBE-FIREWALL - [0:0]
//! -A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
//! -A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
//! -A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
//! -A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//! COMMIT
//! *nat
//! :KUBE-SERVICES - [0:0]
//! :KUBE-NODEPORTS - [0:0]
//! :KUBE-POSTROUTING - [0:0]
//! :KUBE-MARK-MASQ - [0:0]
//! :KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
//! :KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
//! -A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
//! -A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
//! -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
//! -A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
//! -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
//! -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
//! -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
//! -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
//! -A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
//! COMMIT
//! "#);
//! ```
#![deny(missing_docs)]

pub mod layout;
pub mod names;
pub mod noflush;
pub mod parse;
pub mod print;
pub mod sync;

use kproxy_core::model::{ClusterState, NodeConfig};
use kproxy_core::plan::{Plan, Release};
use kproxy_core::profile::{IptablesProfile, Layout};

pub use layout::{LayoutOptions, build};
pub use print::PrintOptions;

/// Errors of the iptables backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IptablesError {
    /// The IR holds something iptables cannot express.
    #[error("chain {chain}: iptables cannot express {what}")]
    Unsupported {
        /// The chain of the rule.
        chain: String,
        /// What could not be printed.
        what: String,
    },
    /// The plan was planned for another release than the layout's.
    #[error(
        "the plan holds kube-proxy {plan:?}'s decisions; the {layout:?} layout needs {needs:?}'s"
    )]
    ReleaseMismatch {
        /// The plan's release.
        plan: Release,
        /// The layout asked for.
        layout: IptablesProfile,
        /// The release that layout needs.
        needs: Release,
    },
}

/// Options of [`compile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Include the jump rules from the built-in chains and the canaries.
    pub standalone: bool,
    /// The kube-proxy release whose layout is written.
    pub profile: IptablesProfile,
    /// Threads that lay out and print at once, each a run of the service
    /// ports (0 and 1: the calling thread alone). The output is the same
    /// whatever the number; a large cluster's is made faster.
    pub threads: usize,
}

/// Plans (with the profile's release), lowers and prints in one call.
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::profile::IptablesProfile;
/// use kproxy_iptables::{compile, Options};
///
/// let svc = Service::cluster_ip("default", "hostnames", "10.79.255.4".parse().unwrap())
///     .with_port(ServicePort::new("", Protocol::Tcp, 80));
/// let slice = EndpointSlice::new("default", "hostnames-1", "hostnames", IpFamily::V4)
///     .with_port(EndpointPort::new("", Protocol::Tcp, 9376))
///     .with_endpoint(Endpoint::ready("10.76.0.9".parse().unwrap()));
/// let state = ClusterState { services: vec![svc], endpoint_slices: vec![slice] };
/// let node = NodeConfig::new(IpFamily::V4, "node-1");
/// let opts = Options { profile: IptablesProfile::V1_5, ..Options::default() };
/// let text = compile(&state, &node, opts).unwrap();
/// assert_eq!(text, r#"*filter
/// :KUBE-SERVICES - [0:0]
/// COMMIT
/// *nat
/// :KUBE-SERVICES - [0:0]
/// :KUBE-NODEPORTS - [0:0]
/// :KUBE-POSTROUTING - [0:0]
/// :KUBE-MARK-MASQ - [0:0]
/// :KUBE-SVC-NWV5X2332I4OT4T3 - [0:0]
/// :KUBE-SEP-EV2NQKURMPKCP5UI - [0:0]
/// -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x00004000/0x00004000 -j MASQUERADE
/// -A KUBE-MARK-MASQ -j MARK --set-xmark 0x00004000/0x00004000
/// -A KUBE-SERVICES -m comment --comment "default/hostnames: cluster IP" -m tcp -p tcp -d 10.79.255.4/32 --dport 80 -j KUBE-SVC-NWV5X2332I4OT4T3
/// -A KUBE-SVC-NWV5X2332I4OT4T3 -m comment --comment default/hostnames: -j KUBE-SEP-EV2NQKURMPKCP5UI
/// -A KUBE-SEP-EV2NQKURMPKCP5UI -m comment --comment default/hostnames: -s 10.76.0.9/32 -j KUBE-MARK-MASQ
/// -A KUBE-SEP-EV2NQKURMPKCP5UI -m comment --comment default/hostnames: -m tcp -p tcp -j DNAT --to-destination 10.76.0.9:9376
/// -A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
/// COMMIT
/// "#);
/// ```
pub fn compile(
    state: &ClusterState,
    node: &NodeConfig,
    opts: Options,
) -> Result<String, IptablesError> {
    render(&Layout::Iptables(opts.profile).plan(state, node), opts)
}

/// Checks that `plan` holds the decisions `profile`'s layout was written
/// for (the release is chosen once, when planning).
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::plan::plan;
/// use kproxy_core::profile::IptablesProfile;
/// let p = plan(&ClusterState::default(), &NodeConfig::new(IpFamily::V4, "node-1"));
/// assert!(kproxy_iptables::check_release(&p, IptablesProfile::Current).is_ok());
/// assert_eq!(
///     kproxy_iptables::check_release(&p, IptablesProfile::V1_5).unwrap_err().to_string(),
///     "the plan holds kube-proxy Current's decisions; the V1_5 layout needs V1_5's"
/// );
/// ```
pub fn check_release(plan: &Plan, profile: IptablesProfile) -> Result<(), IptablesError> {
    if plan.release == profile.release() {
        Ok(())
    } else {
        Err(IptablesError::ReleaseMismatch {
            plan: plan.release,
            layout: profile,
            needs: profile.release(),
        })
    }
}

/// Lowers and prints an existing plan (planned with the release of
/// `opts.profile`).
pub fn render(plan: &Plan, opts: Options) -> Result<String, IptablesError> {
    check_release(plan, opts.profile)?;
    print::stream(
        plan,
        LayoutOptions {
            standalone: opts.standalone,
            profile: opts.profile,
        },
        PrintOptions {
            mark_style: plan.node.mark.style,
            profile: opts.profile,
        },
        opts.threads,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kproxy_core::model::{IpFamily, LocalDetector, NodeConfig};
    use kproxy_core::synthetic::cluster;

    use super::*;

    /// Per table: sorted declarations and each chain's rules in order.
    fn by_chain(text: &str) -> BTreeMap<(String, String), Vec<String>> {
        let mut table = String::new();
        let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(d) = line.strip_prefix(':') {
                let chain = d.split(' ').next().unwrap_or_default().to_string();
                out.entry((table.clone(), chain)).or_default();
            } else if let Some(r) = line.strip_prefix("-A ") {
                let chain = r.split(' ').next().unwrap_or_default().to_string();
                out.entry((table.clone(), chain))
                    .or_default()
                    .push(line.to_string());
            }
        }
        out
    }

    /// The printer writes the per-endpoint rules from their parts
    /// ([`layout::Sink::push_parts`]), the collector makes them [`Rule`]s:
    /// both layouts, with and without large-cluster mode (which drops the
    /// endpoint comments), must print the same.
    #[test]
    fn streamed_and_collected_output_agree() {
        let state = cluster(60, 4);
        let mut node = NodeConfig::new(IpFamily::V4, "node-3");
        node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().unwrap());
        for profile in [IptablesProfile::Current, IptablesProfile::V1_5] {
            let mut plan = Layout::Iptables(profile).plan(&state, &node);
            assert!(
                plan.service_ports
                    .iter()
                    .any(|sp| sp.affinity_timeout.is_some())
            );
            for (large_cluster, standalone) in [(false, false), (false, true), (true, false)] {
                plan.large_cluster = large_cluster;
                let layout = LayoutOptions {
                    standalone,
                    profile,
                };
                let opts = PrintOptions {
                    profile,
                    ..PrintOptions::default()
                };
                let streamed = print::stream(&plan, layout, opts, 1).unwrap();
                let collected = print::print(&build(&plan, layout), opts).unwrap();
                assert_eq!(by_chain(&streamed), by_chain(&collected));
                assert!(streamed.lines().count() > 1000);
                // In pieces on threads: byte for byte the same text.
                for threads in [2, 3, 7, 1000] {
                    let pieces = print::stream(&plan, layout, opts, threads).unwrap();
                    assert!(pieces == streamed, "{profile:?} on {threads} threads");
                }
            }
        }
    }

    #[test]
    fn an_empty_plan_on_threads() {
        let node = NodeConfig::new(IpFamily::V4, "node-3");
        let state = ClusterState::default();
        let one = compile(&state, &node, Options::default()).unwrap();
        for threads in [0, 2, 4] {
            let opts = Options {
                threads,
                ..Options::default()
            };
            assert_eq!(compile(&state, &node, opts).unwrap(), one);
        }
        assert!(one.contains("*nat\n"), "{one}");
    }
}
