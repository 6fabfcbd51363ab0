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
//! assert!(text.contains(
//!     "-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\" \
//!      -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"
//! ));
//! assert!(text.contains("-j DNAT --to-destination 10.180.0.1:80"));
//! ```
#![deny(missing_docs)]

pub mod layout;
pub mod layout_v1_5;
pub mod parse;
pub mod print;
pub mod sync;

use kproxy_core::model::{ClusterState, NodeConfig};
use kproxy_core::plan::{Plan, plan_release};
use kproxy_core::profile::IptablesProfile;

pub use layout::{LayoutOptions, build};
pub use print::PrintOptions;

/// Errors of the iptables backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IptablesError {
    /// The IR holds something iptables cannot express.
    #[error("chain {chain}: iptables cannot express {what}")]
    Unsupported {
        /// The chain of the rule.
        chain: String,
        /// What could not be printed.
        what: String,
    },
}

/// Options of [`compile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Include the jump rules from the built-in chains and the canaries.
    pub standalone: bool,
    /// The kube-proxy release whose layout is written.
    pub profile: IptablesProfile,
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
/// assert!(text.contains(
///     "-A KUBE-SEP-EV2NQKURMPKCP5UI -m comment --comment default/hostnames: \
///      -m tcp -p tcp -j DNAT --to-destination 10.76.0.9:9376"
/// ));
/// ```
pub fn compile(
    state: &ClusterState,
    node: &NodeConfig,
    opts: Options,
) -> Result<String, IptablesError> {
    render(&plan_release(state, node, opts.profile.release()), opts)
}

/// Lowers and prints an existing plan (planned with the release of
/// `opts.profile`).
pub fn render(plan: &Plan, opts: Options) -> Result<String, IptablesError> {
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
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kproxy_core::model::{IpFamily, LocalDetector, NodeConfig};
    use kproxy_core::plan::plan;
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

    #[test]
    fn streamed_and_collected_output_agree() {
        let state = cluster(60, 4);
        let mut node = NodeConfig::new(IpFamily::V4, "node-3");
        node.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().unwrap());
        let plan = plan(&state, &node);
        for standalone in [false, true] {
            let layout = LayoutOptions {
                standalone,
                ..LayoutOptions::default()
            };
            let opts = PrintOptions::default();
            let streamed = print::stream(&plan, layout, opts).unwrap();
            let collected = print::print(&build(&plan, layout), opts).unwrap();
            assert_eq!(by_chain(&streamed), by_chain(&collected));
            assert!(streamed.lines().count() > 1000);
        }
    }
}
