//! The rule builders every iptables release layout shares: comments,
//! jumps, and the endpoint rules (ClientIP affinity checks, the
//! probability jumps to endpoint chains, an endpoint chain's masquerade and
//! DNAT), which have not changed since kube-proxy 1.5.

use std::net::SocketAddr;

use kproxy_core::ir::{AddrMatch, Direction, MarkOp, Match, RecentOp, Rule, Verdict};
use kproxy_core::names::ChainName;
use kproxy_core::plan::{PlannedEndpoint, ServicePortPlan};

use crate::names::KUBE_MARK_MASQ;

pub(super) fn comment(text: impl Into<String>) -> Match {
    Match::Comment(text.into())
}

pub(super) fn jump(chain: &str) -> Verdict {
    Verdict::Jump(ChainName::new(chain))
}

/// `-j MARK --or-mark VALUE` (1.5 spelled it `--set-xmark`).
pub(super) fn mark_or(value: u32) -> Verdict {
    Verdict::SetMark {
        op: MarkOp::Or,
        value,
    }
}

/// ClientIP affinity: back to the endpoint chain `sep` a source recently
/// went to (`-m recent --name SEP --rcheck --seconds N --reap -j SEP`).
pub(super) fn affinity_check(
    comments: impl IntoIterator<Item = Match>,
    sep: &ChainName,
    seconds: u32,
) -> Rule {
    Rule::new()
        .with_all(comments)
        .with(Match::Recent {
            name: sep.to_string(),
            op: RecentOp::Check {
                seconds,
                reap: true,
            },
        })
        .verdict(Verdict::Jump(sep.clone()))
}

/// The jump to endpoint chain `sep`, the `i`th of `n`: with probability
/// 1/(n-i), except the last, which takes what is left.
pub(super) fn endpoint_jump(
    comments: impl IntoIterator<Item = Match>,
    i: usize,
    n: usize,
    sep: ChainName,
) -> Rule {
    let mut r = Rule::new().with_all(comments);
    if i + 1 < n {
        r = r.with(Match::Probability {
            one_in: u32::try_from(n - i).unwrap_or(u32::MAX),
        });
    }
    r.verdict(Verdict::Jump(sep))
}

/// An endpoint chain's rules: the endpoint's own traffic (hairpin) marked
/// for masquerading (`src`: the endpoint's address as the release writes
/// it), then DNAT to the endpoint, remembered for ClientIP affinity.
pub(super) fn endpoint_chain_rules(
    comments: &[Match],
    src: AddrMatch,
    sp: &ServicePortPlan,
    ep: &PlannedEndpoint,
    sep: &ChainName,
) -> [Rule; 2] {
    let masq = Rule::new()
        .with_all(comments.iter().cloned())
        .with(Match::Addr {
            dir: Direction::Src,
            addr: src,
            negate: false,
        })
        .verdict(jump(KUBE_MARK_MASQ));
    let mut dnat = Rule::new().with_all(comments.iter().cloned());
    if sp.affinity_timeout.is_some() {
        dnat = dnat.with(Match::Recent {
            name: sep.to_string(),
            op: RecentOp::Set,
        });
    }
    let dnat = dnat
        .with(Match::Protocol(sp.name.protocol))
        .verdict(Verdict::Dnat(SocketAddr::new(ep.ip, ep.port)));
    [masq, dnat]
}
