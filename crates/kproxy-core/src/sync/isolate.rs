//! One Service whose rules the kernel tool rejects never stops the node.
//!
//! The converters reject what the API server rejects, and the printers
//! refuse what the tools cannot read, so a sync should never fail for a
//! Service's sake. When one still does (something kproxy cannot know
//! about: a kernel without a match module, a node's limit, a tool's bug),
//! the tool's error names the failing input line (`Error occurred at line:
//! N`, nft's `/dev/stdin:N:…`), and the line names its Service: the
//! comment (`ns/name:port …`), an nftables per-service object
//! (`service-HASH-ns/name/…`), or an iptables per-service chain of the
//! rules being written. That Service is left out of the rules, reported
//! (a warning, an event-like warning, `kproxy_sync_proxy_rules_skipped_services`)
//! and the sync retried at once without it, so that every other Service
//! keeps syncing. It is tried again when it changes.
//!
//! A node-level failure can also fail on a Service's line (a counter the
//! rule names is missing, say): after [`MAX_SKIPS_WITHOUT_SYNC`] Services
//! skipped without a successful sync in between, no more are skipped.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::convert::Inventory;
use crate::ir::Ruleset;
use crate::model::NamespacedName;
use crate::owners::{Owners, service_in_comment, service_in_nft_name};

use super::tool::{error_line, payload_line, split_args};

/// At most this many Services are skipped between two successful syncs.
pub const MAX_SKIPS_WITHOUT_SYNC: usize = 3;

/// An input line a tool rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The line, as sent.
    pub line: String,
    /// The iptables table it is in (`*nat` before it), if any.
    pub table: Option<String>,
}

/// The line of `payload` that the tool's error `message` names.
///
/// ```
/// use kproxy_core::sync::isolate::rejected;
/// let payload = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j X\nCOMMIT\n";
/// let r = rejected("iptables-restore: Bad argument\nError occurred at line: 3", payload).unwrap();
/// assert_eq!(r.line, "-A KUBE-SERVICES -j X");
/// assert_eq!(r.table.as_deref(), Some("nat"));
/// ```
pub fn rejected(message: &str, payload: &str) -> Option<Rejected> {
    let n = error_line(message)?;
    let line = payload_line(payload, n)?.to_string();
    let table = payload
        .lines()
        .take(n)
        .filter_map(|l| l.strip_prefix('*'))
        .last()
        .map(str::to_string);
    Some(Rejected { line, table })
}

/// The Service whose rules `r` writes, if the line is a Service's: named
/// by a comment, by an nftables per-service object, or (iptables) by the
/// per-service chain it writes, as `rulesets` (what the sync wrote) own it.
///
/// ```
/// use kproxy_core::sync::isolate::{Rejected, owner};
/// let r = |line: &str| Rejected { line: line.into(), table: None };
/// let svc = |l: &str| owner(&r(l), &[]).map(|s| s.to_string());
/// assert_eq!(svc(r#"-A KUBE-SERVICES -m comment --comment "shop/web:http cluster IP" -j KUBE-SVC-X"#).as_deref(), Some("shop/web"));
/// assert_eq!(svc("add rule ip kube-proxy service-ABCDEFGH-shop/web/tcp/http ip daddr 1.2.3.4").as_deref(), Some("shop/web"));
/// assert_eq!(svc("add element ip kube-proxy service-ips { 10.0.0.1 . tcp . 80 : goto service-ABCDEFGH-shop/web/tcp/http }").as_deref(), Some("shop/web"));
/// assert_eq!(svc("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"), None);
/// ```
pub fn owner(r: &Rejected, rulesets: &[&Ruleset]) -> Option<NamespacedName> {
    let words = split_args(&r.line);
    // iptables `-m comment --comment TEXT`, nft `comment TEXT`.
    let after = |key: &str| {
        let i = words.iter().position(|w| w == key)?;
        words.get(i + 1)
    };
    let comment = after("--comment").or_else(|| after("comment"));
    if let Some(s) = comment.and_then(|c| service_in_comment(c)) {
        return Some(s);
    }
    if let Some(s) = words
        .iter()
        .find_map(|w| service_in_nft_name(w.trim_start_matches('@')))
    {
        return Some(s);
    }
    // iptables: `:CHAIN - [0:0]`, `-A CHAIN …`, `-I CHAIN N …`, `-X CHAIN`...
    let chain = match words.first().map(String::as_str) {
        Some(w) if w.starts_with(':') => Some(&w[1..]),
        Some("-A" | "-I" | "-D" | "-R" | "-X" | "-N" | "-F") => words.get(1).map(String::as_str),
        _ => None,
    }?;
    let table = r.table.as_deref()?;
    rulesets
        .iter()
        .find_map(|rs| Owners::of(rs).chain(table, chain).cloned())
}

/// The Services left out of the rules, and why.
#[derive(Debug, Default)]
pub struct Isolation {
    skipped: BTreeMap<NamespacedName, String>,
    /// Services skipped since the last successful sync.
    streak: usize,
}

impl Isolation {
    /// The Services skipped now, with the rejected line of each.
    pub fn skipped(&self) -> &BTreeMap<NamespacedName, String> {
        &self.skipped
    }

    /// Skips the owners of `rejected` lines (see [`owner`]); returns the
    /// Services newly skipped. None once [`MAX_SKIPS_WITHOUT_SYNC`] were
    /// skipped without a successful sync.
    pub fn skip(&mut self, rejected: &[Rejected], rulesets: &[&Ruleset]) -> Vec<NamespacedName> {
        let mut newly = Vec::new();
        for r in rejected {
            if self.streak >= MAX_SKIPS_WITHOUT_SYNC {
                break;
            }
            if let Some(s) = owner(r, rulesets)
                && !self.skipped.contains_key(&s)
            {
                self.skipped.insert(s.clone(), r.line.clone());
                self.streak += 1;
                newly.push(s);
            }
        }
        newly
    }

    /// A sync succeeded.
    pub fn synced(&mut self) {
        self.streak = 0;
    }

    /// The objects of `changed` Services changed (`None`: any may have):
    /// they are tried again. Returns those no longer skipped.
    pub fn changed(&mut self, changed: Option<&BTreeSet<NamespacedName>>) -> Vec<NamespacedName> {
        let retry: Vec<NamespacedName> = self
            .skipped
            .keys()
            .filter(|s| changed.is_none_or(|c| c.contains(*s)))
            .cloned()
            .collect();
        for s in &retry {
            self.skipped.remove(s);
        }
        retry
    }

    /// `inv` without the skipped Services (borrowed when none is).
    pub fn inventory<'a>(&self, inv: &'a Inventory) -> Cow<'a, Inventory> {
        if self.skipped.is_empty() {
            return Cow::Borrowed(inv);
        }
        let mut out = inv.clone();
        out.state
            .services
            .retain(|s| !self.skipped.contains_key(&s.id));
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Chain, Match, Rule, Table, TableFamily, Verdict};
    use crate::model::{ClusterState, IpFamily, Service};

    fn nn(s: &str) -> NamespacedName {
        crate::owners::parse_service(s).unwrap()
    }

    #[test]
    fn rejected_lines_of_both_tools() {
        let ipt = "*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n*nat\n:KUBE-SVC-X - [0:0]\n-A KUBE-SVC-X -j KUBE-SEP-Y\nCOMMIT\n";
        // iptables-nft 1.8.9's text, as the kernel_agent tests see it.
        let msg = "iptables-restore v1.8.9 (nf_tables): Couldn't load match `nosuch':No such file or directory\n\nError occurred at line: 6\nTry `iptables-restore -h' for more information.";
        let r = rejected(msg, ipt).unwrap();
        assert_eq!(r.line, "-A KUBE-SVC-X -j KUBE-SEP-Y");
        assert_eq!(r.table.as_deref(), Some("nat"));
        let nft =
            "add table ip kube-proxy\nadd chain ip kube-proxy service-AAAAAAAA-ns/a/tcp/p junk\n";
        let r = rejected(
            "/dev/stdin:2:56-59: Error: syntax error, unexpected string",
            nft,
        )
        .unwrap();
        assert_eq!(r.table, None);
        assert_eq!(owner(&r, &[]), Some(nn("ns/a")));
        assert_eq!(
            rejected("Another app is currently holding the xtables lock", ipt),
            None
        );
        assert_eq!(rejected("Error occurred at line: 99", ipt), None);
    }

    #[test]
    fn iptables_chains_without_comments_are_owned_by_their_service() {
        let mut t = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
        let mut svcs = Chain::new("KUBE-SERVICES");
        svcs.push(
            Rule::new()
                .with(Match::Comment("ns/a:p cluster IP".into()))
                .verdict(Verdict::Jump("KUBE-SVC-A".into())),
        );
        t.chains.push(svcs);
        let mut svc = Chain::new("KUBE-SVC-A");
        svc.push(Rule::new().verdict(Verdict::Jump("KUBE-SEP-A1".into())));
        t.chains.push(svc);
        t.chains.push(Chain::new("KUBE-SEP-A1"));
        let rs = Ruleset { tables: vec![t] };
        let line = |l: &str, table: &str| Rejected {
            line: l.into(),
            table: Some(table.into()),
        };
        for l in [
            "-A KUBE-SEP-A1 -m tcp -p tcp -j DNAT --to-destination 10.0.0.1:80",
            ":KUBE-SVC-A - [0:0]",
            "-X KUBE-SEP-A1",
        ] {
            assert_eq!(owner(&line(l, "nat"), &[&rs]), Some(nn("ns/a")), "{l}");
        }
        assert_eq!(owner(&line("-A KUBE-SEP-A1 -j X", "filter"), &[&rs]), None);
        assert_eq!(owner(&line("COMMIT", "nat"), &[&rs]), None);
    }

    #[test]
    fn skipped_until_changed_and_bounded() {
        let mut iso = Isolation::default();
        let r = |s: &str| Rejected {
            line: format!("-A KUBE-SERVICES -m comment --comment \"{s}:p cluster IP\" -j X"),
            table: Some("nat".into()),
        };
        assert_eq!(iso.skip(&[r("ns/a")], &[]), [nn("ns/a")]);
        assert!(iso.skip(&[r("ns/a")], &[]).is_empty(), "already skipped");
        let inv = Inventory {
            state: ClusterState {
                services: vec![
                    Service::cluster_ip("ns", "a", "10.0.0.1".parse().unwrap()),
                    Service::cluster_ip("ns", "b", "10.0.0.2".parse().unwrap()),
                ],
                endpoint_slices: vec![],
            },
            ..Default::default()
        };
        let left: Vec<String> = iso
            .inventory(&inv)
            .state
            .services
            .iter()
            .map(|s| s.id.to_string())
            .collect();
        assert_eq!(left, ["ns/b"]);
        // A change to another Service keeps it skipped; its own retries it.
        assert!(iso.changed(Some(&[nn("ns/b")].into())).is_empty());
        assert_eq!(iso.changed(Some(&[nn("ns/a")].into())), [nn("ns/a")]);
        assert!(matches!(iso.inventory(&inv), Cow::Borrowed(_)));
        // A node-level failure on Services' lines: bounded.
        let many: Vec<Rejected> = (0..10).map(|i| r(&format!("ns/s{i}"))).collect();
        assert_eq!(
            iso.skip(&many, &[]).len(),
            MAX_SKIPS_WITHOUT_SYNC - 1,
            "one was skipped in this streak already"
        );
        assert!(iso.skip(&many, &[]).is_empty());
        iso.synced();
        assert_eq!(iso.skip(&many, &[]).len(), MAX_SKIPS_WITHOUT_SYNC);
        assert_eq!(iso.changed(None).len(), 2 * MAX_SKIPS_WITHOUT_SYNC - 1);
        assert!(iso.skipped().is_empty());
    }
}
