//! The rule builders every iptables release layout shares: comments,
//! jumps, and the endpoint rules (ClientIP affinity checks, the
//! probability jumps to endpoint chains, an endpoint chain's masquerade and
//! DNAT), which have not changed since kube-proxy 1.5.

use std::net::SocketAddr;

use kproxy_core::ir::{AddrMatch, Direction, MarkOp, Match, RecentOp, Verdict};
use kproxy_core::names::ChainName;
use kproxy_core::plan::{PlannedEndpoint, ServicePortPlan};

use super::{Sink, TableId::Nat, VerdictRef};
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

/// The match lists of the per-endpoint rules, made in one buffer that is
/// used again for each rule (these rules are most of a large node's: see
/// [`Sink::push_parts`]).
#[derive(Debug, Default)]
pub(super) struct Parts(Vec<Match>);

impl Parts {
    /// `comments` then `rest`, in the buffer.
    fn of(&mut self, comments: &[Match], rest: impl IntoIterator<Item = Match>) -> &[Match] {
        self.0.clear();
        self.0.extend_from_slice(comments);
        self.0.extend(rest);
        &self.0
    }
}

/// ClientIP affinity, appended to `chain`: back to the endpoint chain
/// `sep` a source recently went to (`-m recent --name SEP --rcheck
/// --seconds N --reap -j SEP`).
pub(super) fn affinity_check<S: Sink>(
    out: &mut S,
    chain: &str,
    parts: &mut Parts,
    comments: &[Match],
    sep: &ChainName,
    seconds: u32,
) {
    let recent = Match::Recent {
        name: sep.to_string(),
        op: RecentOp::Check {
            seconds,
            reap: true,
        },
    };
    let matches = parts.of(comments, [recent]);
    out.push_parts(Nat, chain, matches, VerdictRef::Jump(sep.as_str()));
}

/// The jump to endpoint chain `sep`, the `i`th of `n`, appended to
/// `chain`: with probability 1/(n-i), except the last, which takes what is
/// left.
pub(super) fn endpoint_jump<S: Sink>(
    out: &mut S,
    chain: &str,
    parts: &mut Parts,
    comments: &[Match],
    i: usize,
    n: usize,
    sep: &ChainName,
) {
    let probability = (i + 1 < n).then(|| Match::Probability {
        one_in: u32::try_from(n - i).unwrap_or(u32::MAX),
    });
    let matches = parts.of(comments, probability);
    out.push_parts(Nat, chain, matches, VerdictRef::Jump(sep.as_str()));
}

/// An endpoint chain's rules, appended to it: the endpoint's own traffic
/// (hairpin) marked for masquerading (`src`: the endpoint's address as the
/// release writes it), then DNAT to the endpoint, remembered for ClientIP
/// affinity.
pub(super) fn endpoint_chain_rules<S: Sink>(
    out: &mut S,
    parts: &mut Parts,
    comments: &[Match],
    src: AddrMatch,
    sp: &ServicePortPlan,
    ep: &PlannedEndpoint,
    sep: &ChainName,
) {
    let hairpin = Match::Addr {
        dir: Direction::Src,
        addr: src,
        negate: false,
    };
    let matches = parts.of(comments, [hairpin]);
    out.push_parts(Nat, sep.as_str(), matches, VerdictRef::Jump(KUBE_MARK_MASQ));
    let remember = sp.affinity_timeout.map(|_| Match::Recent {
        name: sep.to_string(),
        op: RecentOp::Set,
    });
    let protocol = Match::Protocol(sp.name.protocol);
    let matches = parts.of(comments, remember.into_iter().chain([protocol]));
    let dnat = Verdict::Dnat(SocketAddr::new(ep.ip, ep.port));
    out.push_parts(Nat, sep.as_str(), matches, VerdictRef::Verdict(&dnat));
}
