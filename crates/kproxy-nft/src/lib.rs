//! # kproxy-nft
//!
//! Lowers a [`kproxy_core::plan::Plan`] to the ruleset kube-proxy's nftables
//! mode writes (the v1.36+ layout: one `table ip|ip6 kube-proxy`, the
//! `service-ips` / `service-nodeports` / `firewall-ips` / `no-endpoint-*`
//! verdict maps, the `cluster-ips`, `nodeport-ips` and `hairpin-connections`
//! sets, per-service `service-` / `local-` / `external-` / `firewall-`
//! chains, `endpoint-` chains and `affinity-` sets for ClientIP affinity).
//!
//! [`layout`] builds the [`tx::Transaction`] of kube-proxy's first full sync;
//! [`tx::Transaction::apply`] gives the resulting table as IR (for the tracer);
//! [`mod@print`] spells the transaction as knftables writes it for `nft -f -`;
//! [`json`] writes the same ruleset as one `nft -j -f -` batch. No Kubernetes
//! decision is taken here: the planner took them.
//!
//! ```
//! use kproxy_core::model::*;
//! use kproxy_nft::{compile, Options};
//!
//! let svc = Service::cluster_ip("ns1", "svc1", "172.30.0.41".parse().unwrap())
//!     .with_port(ServicePort::new("p80", Protocol::Tcp, 80));
//! let slice = EndpointSlice::new("ns1", "svc1-abc", "svc1", IpFamily::V4)
//!     .with_port(EndpointPort::new("p80", Protocol::Tcp, 80))
//!     .with_endpoint(Endpoint::ready("10.180.0.1".parse().unwrap()));
//! let state = ClusterState { services: vec![svc], endpoint_slices: vec![slice] };
//! let node = NodeConfig::new(IpFamily::V4, "node-1");
//! let text = compile(&state, &node, Options::default()).unwrap();
//! // Every command that names the Service (the rest is the node's set-up).
//! let service: Vec<&str> = text.lines().filter(|l| l.contains("svc1") || l.contains("172.30.0.41")).collect();
//! assert_eq!(service, [
//!     "add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80",
//!     "flush chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80",
//!     "add element ip kube-proxy cluster-ips { 172.30.0.41 }",
//!     "add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
//!     "add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to 10.180.0.1 . 80",
//! ]);
//! assert_eq!(text.lines().count(), 95);
//! ```
#![deny(missing_docs)]

pub mod anon;
pub mod decode;
pub mod json;
pub mod layout;
pub mod names;
pub mod netlink;
pub mod parse;
pub mod print;
pub mod sync;
pub mod tx;

use kproxy_core::ir::Ruleset;
use kproxy_core::model::{ClusterState, NodeConfig};
use kproxy_core::plan::{Plan, Release};
use kproxy_core::profile::{Layout, NftablesProfile};

pub use layout::{LayoutOptions, build};
pub use print::{PrintOptions, SingleDnat};
pub use tx::{Op, Transaction};

/// Errors of the nftables backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NftError {
    /// The IR holds something nft (or this printer) cannot express.
    #[error("nftables cannot express {what}")]
    Unsupported {
        /// What could not be printed.
        what: String,
    },
    /// A command names an object that does not exist at that point.
    #[error("invalid transaction: {0}")]
    Transaction(String),
    /// The JSON batch could not be serialised.
    #[error("JSON: {0}")]
    Json(String),
    /// The plan was planned for another release than the layout's.
    #[error(
        "the plan holds kube-proxy {plan:?}'s decisions; the {layout:?} layout needs {needs:?}'s"
    )]
    ReleaseMismatch {
        /// The plan's release.
        plan: Release,
        /// The layout asked for.
        layout: NftablesProfile,
        /// The release that layout needs.
        needs: Release,
    },
}

/// Checks that `plan` holds the decisions `profile`'s layout was written
/// for (the release is chosen once, when planning).
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::plan::plan;
/// use kproxy_core::profile::NftablesProfile;
/// let p = plan(&ClusterState::default(), &NodeConfig::new(IpFamily::V4, "node-1"));
/// assert!(kproxy_nft::check_release(&p, NftablesProfile::Current).is_ok());
/// assert_eq!(
///     kproxy_nft::check_release(&p, NftablesProfile::Pre1_36).unwrap_err().to_string(),
///     "the plan holds kube-proxy Current's decisions; the Pre1_36 layout needs V1_35's"
/// );
/// ```
pub fn check_release(plan: &Plan, profile: NftablesProfile) -> Result<(), NftError> {
    if plan.release == profile.release() {
        Ok(())
    } else {
        Err(NftError::ReleaseMismatch {
            plan: plan.release,
            layout: profile,
            needs: profile.release(),
        })
    }
}

/// Options of [`compile`] and [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// How a single-endpoint DNAT is spelled in native text.
    pub single_dnat: SingleDnat,
    /// The kube-proxy release whose layout is written.
    pub profile: NftablesProfile,
}

/// Plans (with the profile's release), lowers and prints (native nft text)
/// in one call.
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::profile::NftablesProfile;
/// use kproxy_nft::{compile, Options};
///
/// let svc = Service::cluster_ip("ns1", "svc1", "172.30.0.41".parse().unwrap())
///     .with_port(ServicePort::new("p80", Protocol::Tcp, 80));
/// let slice = EndpointSlice::new("ns1", "svc1-abc", "svc1", IpFamily::V4)
///     .with_port(EndpointPort::new("p80", Protocol::Tcp, 80))
///     .with_endpoint(Endpoint::ready("10.180.0.1".parse().unwrap()));
/// let state = ClusterState { services: vec![svc], endpoint_slices: vec![slice] };
/// let node = NodeConfig::new(IpFamily::V4, "node-1");
/// let opts = Options { profile: NftablesProfile::Pre1_36, ..Options::default() };
/// let text = compile(&state, &node, opts).unwrap();
/// let service: Vec<&str> = text
///     .lines()
///     .filter(|l| l.contains("svc1") || l.contains("172.30.0.41") || l.contains("mark-for-masquerade"))
///     .collect();
/// assert_eq!(service, [
///     "add chain ip kube-proxy mark-for-masquerade",
///     "flush chain ip kube-proxy mark-for-masquerade",
///     "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x00004000",
///     "add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80",
///     "flush chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80",
///     "add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80",
///     "flush chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80",
///     "add element ip kube-proxy cluster-ips { 172.30.0.41 }",
///     "add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
///     "add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap \
///      { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }",
///     "add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade",
///     "add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80",
/// ]);
/// ```
pub fn compile(state: &ClusterState, node: &NodeConfig, opts: Options) -> Result<String, NftError> {
    render(&Layout::Nftables(opts.profile).plan(state, node), opts)
}

/// Lowers and prints an existing plan (planned with the release of
/// `opts.profile`) as the `nft -f -` transaction of a first full sync.
pub fn render(plan: &Plan, opts: Options) -> Result<String, NftError> {
    check_release(plan, opts.profile)?;
    let tx = build(
        plan,
        LayoutOptions {
            profile: opts.profile,
            ..LayoutOptions::default()
        },
    );
    print::print(
        &tx,
        PrintOptions {
            mark_style: plan.node.mark.style,
            single_dnat: opts.single_dnat,
        },
    )
}

/// Lowers existing plans (one per family) and prints them as one
/// `nft -j -f -` batch.
pub fn render_json(plans: &[Plan]) -> Result<String, NftError> {
    render_json_profile(plans, NftablesProfile::Current)
}

/// [`render_json`] in `profile`'s layout (the plans planned with its release).
pub fn render_json_profile(plans: &[Plan], profile: NftablesProfile) -> Result<String, NftError> {
    let mut text = Vec::new();
    write_json_profile(plans, profile, &mut text)?;
    String::from_utf8(text).map_err(|e| NftError::Json(e.to_string()))
}

/// [`render_json_profile`] written to `out` as it is made: one family's
/// transaction at a time, consumed as it is written, and no text held (a
/// 10k-Service batch is tens of MB). Errors writing to `out` are
/// [`NftError::Json`]; what was written before an error stays written.
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::plan::plan_release;
/// use kproxy_core::profile::NftablesProfile;
/// let node = NodeConfig::new(IpFamily::V4, "node-1");
/// let profile = NftablesProfile::Current;
/// let plan = plan_release(&ClusterState::default(), &node, profile.release());
/// let mut out = Vec::new();
/// kproxy_nft::write_json_profile(&[plan], profile, &mut out).unwrap();
/// assert!(out.starts_with(b"{\"nftables\":[{\"add\":{\"table\""));
/// ```
pub fn write_json_profile(
    plans: &[Plan],
    profile: NftablesProfile,
    out: &mut dyn std::io::Write,
) -> Result<(), NftError> {
    for plan in plans {
        check_release(plan, profile)?;
    }
    let opts = LayoutOptions {
        profile,
        ..LayoutOptions::default()
    };
    let mut batch = json::BatchWriter::new(out)?;
    for plan in plans {
        batch.push(build(plan, opts))?;
    }
    batch.finish()
}

/// The table state a first full sync leaves, as IR.
pub fn ruleset(plan: &Plan) -> Result<Ruleset, NftError> {
    ruleset_profile(plan, NftablesProfile::Current)
}

/// [`ruleset`] in `profile`'s layout (the plan planned with its release).
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::plan::plan_release;
/// use kproxy_core::profile::NftablesProfile;
/// let state = ClusterState::default();
/// let node = NodeConfig::new(IpFamily::V4, "node-1");
/// let profile = NftablesProfile::Pre1_36;
/// let rs = kproxy_nft::ruleset_profile(&plan_release(&state, &node, profile.release()), profile).unwrap();
/// assert!(rs.tables[0].chain("mark-for-masquerade").is_some());
/// ```
pub fn ruleset_profile(plan: &Plan, profile: NftablesProfile) -> Result<Ruleset, NftError> {
    check_release(plan, profile)?;
    let tx = build(
        plan,
        LayoutOptions {
            profile,
            ..LayoutOptions::default()
        },
    );
    Ok(Ruleset {
        tables: vec![tx.apply()?],
    })
}
