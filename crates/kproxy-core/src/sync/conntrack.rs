//! UDP conntrack cleanup, as kube-proxy does after a sync with the
//! `conntrack` tool: conntrack entries outlive rule changes, so a UDP flow
//! keeps going to an endpoint that is gone, or keeps being black-holed
//! after its Service gained an endpoint, until its entry is deleted.
//!
//! * A UDP service port that gains its first endpoint: the entries of its
//!   front ends (cluster IP, external IPs, LB IPs: `--orig-dst IP --dport
//!   PORT`; the node port: `--dport NODEPORT`) are deleted.
//! * An endpoint removed from a UDP service port (or the port removed): the
//!   entries DNATed to it from each front end are deleted (`--orig-dst IP
//!   --dst-nat EP`; node port: `--dport NODEPORT --dst-nat EP`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use crate::model::{IpFamily, Protocol};
use crate::plan::{Plan, ServicePortPlan};

/// One UDP service port, as far as conntrack cleanup cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UdpPort {
    /// Front ends: (address, port).
    pub frontends: Vec<(IpAddr, u16)>,
    /// The node port.
    pub node_port: Option<u16>,
    /// Endpoint addresses that receive traffic from this node.
    pub endpoints: BTreeSet<IpAddr>,
}

/// The UDP service ports of one family, by service port name.
pub type UdpState = BTreeMap<String, UdpPort>;

/// The UDP service ports of a plan.
pub fn udp_state(plan: &Plan) -> UdpState {
    udp_state_of(&plan.service_ports)
}

/// The UDP service ports among `service_ports`.
pub fn udp_state_of<'a>(service_ports: impl IntoIterator<Item = &'a ServicePortPlan>) -> UdpState {
    let mut out = UdpState::new();
    for sp in service_ports {
        if sp.name.protocol != Protocol::Udp {
            continue;
        }
        let mut frontends = vec![(sp.cluster_ip, sp.port)];
        frontends.extend(sp.external_ips.iter().map(|ip| (*ip, sp.port)));
        frontends.extend(sp.load_balancer_ips.iter().map(|ip| (*ip, sp.port)));
        out.insert(
            sp.name.to_string(),
            UdpPort {
                frontends,
                node_port: sp.node_port,
                endpoints: sp.reachable_endpoints.iter().map(|e| e.ip).collect(),
            },
        );
    }
    out
}

fn family_arg(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

/// The `conntrack` argument lists that clean up after going from `last`
/// to `next` (deduplicated, in a stable order).
pub fn cleanup_commands(family: IpFamily, last: &UdpState, next: &UdpState) -> Vec<Vec<String>> {
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    // `conntrack -D -p udp -f FAMILY ARGS`.
    let mut delete = |args: &[String]| {
        let mut cmd: Vec<String> = ["-D", "-p", "udp", "-f", family_arg(family)]
            .iter()
            .map(|x| x.to_string())
            .collect();
        cmd.extend_from_slice(args);
        out.insert(cmd);
    };
    let words = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    for (name, n) in next {
        let had = last.get(name).is_some_and(|l| !l.endpoints.is_empty());
        if !had && !n.endpoints.is_empty() {
            for (ip, port) in &n.frontends {
                delete(&words(&[
                    "--orig-dst",
                    &ip.to_string(),
                    "--dport",
                    &port.to_string(),
                ]));
            }
            if let Some(np) = n.node_port {
                delete(&words(&["--dport", &np.to_string()]));
            }
        }
    }
    for (name, l) in last {
        let now: BTreeSet<IpAddr> = next
            .get(name)
            .map(|n| n.endpoints.clone())
            .unwrap_or_default();
        for ep in l.endpoints.difference(&now) {
            let ep = ep.to_string();
            for (ip, _) in &l.frontends {
                delete(&words(&["--orig-dst", &ip.to_string(), "--dst-nat", &ep]));
            }
            if let Some(np) = l.node_port {
                delete(&words(&["--dport", &np.to_string(), "--dst-nat", &ep]));
            }
        }
    }
    out.into_iter().collect()
}

/// Whether a failed `conntrack -D` only found nothing to delete.
pub fn nothing_deleted(message: &str) -> bool {
    message.contains("0 flow entries have been deleted")
}

/// The arguments of `conntrack -L` listing the UDP entries of `family`.
///
/// Each `conntrack -D` reads the whole conntrack table; with more than one
/// deletion to run ([`worth_listing`]), the engines list the entries once
/// and run only the deletions [`needed`] keeps (a fresh 10k-Service node's
/// first sync has thousands of UDP front ends to clean up, nearly all
/// without an entry).
pub fn listing_args(family: IpFamily) -> Vec<String> {
    ["-L", "-p", "udp", "-f", family_arg(family)]
        .iter()
        .map(|x| x.to_string())
        .collect()
}

/// Whether listing the entries first ([`listing_args`]) saves work: more
/// than one deletion.
pub fn worth_listing(commands: &[Vec<String>]) -> bool {
    commands.len() > 1
}

/// What the deletions look at in one UDP conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The original destination (`--orig-dst`).
    orig_dst: IpAddr,
    /// The original destination port (`--dport`).
    orig_dport: u16,
    /// The reply's source: the endpoint when DNATed (`--dst-nat`).
    reply_src: IpAddr,
}

/// The entries of a `conntrack -L` listing (its standard output); `None`
/// when a line cannot be read (then every deletion runs).
fn parse_listing(text: &str) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (mut dst, mut dport, mut reply_src, mut srcs) = (None, None, None, 0);
        for (key, value) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
            match key {
                "dst" if dst.is_none() => dst = value.parse().ok(),
                "dport" if dport.is_none() => dport = value.parse().ok(),
                "src" => {
                    srcs += 1;
                    if srcs == 2 {
                        reply_src = value.parse().ok();
                    }
                }
                _ => {}
            }
        }
        out.push(Entry {
            orig_dst: dst?,
            orig_dport: dport?,
            reply_src: reply_src?,
        });
    }
    Some(out)
}

/// What a deletion (from [`cleanup_commands`]) selects: `--orig-dst IP`,
/// `--dport PORT`, `--dst-nat IP` (DNATed to IP); `None` where it does not
/// look (or cannot read the value: then it matches, nothing is skipped
/// wrongly). `Err(())` for an argument it does not know.
type Filter = (Option<IpAddr>, Option<u16>, Option<IpAddr>);

fn filter(args: &[String]) -> Result<Filter, ()> {
    let mut f: Filter = (None, None, None);
    let mut words = args.iter().map(String::as_str);
    while let Some(w) = words.next() {
        match w {
            "-D" => {}
            "-p" | "-f" => {
                words.next();
            }
            "--orig-dst" => f.0 = words.next().and_then(|v| v.parse().ok()),
            "--dport" => f.1 = words.next().and_then(|v| v.parse().ok()),
            "--dst-nat" => f.2 = words.next().and_then(|v| v.parse().ok()),
            _ => return Err(()),
        }
    }
    Ok(f)
}

/// Every filter that selects one of the entries: each entry under each
/// combination of the fields a deletion can look at (`--dst-nat` only for
/// DNATed entries), so that a deletion is checked by one lookup instead of
/// against every entry.
fn index(entries: &[Entry]) -> HashSet<Filter> {
    let mut out = HashSet::with_capacity(entries.len() * 4);
    for e in entries {
        let dnat = e.reply_src != e.orig_dst;
        for mask in 0u8..8 {
            if mask & 4 != 0 && !dnat {
                continue;
            }
            out.insert((
                (mask & 1 != 0).then_some(e.orig_dst),
                (mask & 2 != 0).then_some(e.orig_dport),
                (mask & 4 != 0).then_some(e.reply_src),
            ));
        }
    }
    out
}

/// The deletions of `commands` that would delete something, given the
/// family's UDP entries `listing` (`conntrack` with [`listing_args`]): all
/// of them when a line of the listing cannot be read.
///
/// ```
/// use kproxy_core::sync::conntrack::needed;
///
/// let cmd = |t: &str| t.split(' ').map(String::from).collect::<Vec<_>>();
/// let listing = "udp      17 29 src=10.1.1.5 dst=10.96.0.10 sport=35593 dport=53 \
///     [UNREPLIED] src=10.0.0.1 dst=10.1.1.5 sport=5353 dport=35593 mark=0 use=1\n";
/// let commands = vec![
///     cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dport 53"),
///     cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.11 --dport 53"),
///     cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dst-nat 10.0.0.1"),
///     cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dst-nat 10.0.0.2"),
/// ];
/// assert_eq!(needed(commands.clone(), listing), vec![commands[0].clone(), commands[2].clone()]);
/// assert_eq!(needed(commands.clone(), "garbage\n"), commands);
/// ```
pub fn needed(commands: Vec<Vec<String>>, listing: &str) -> Vec<Vec<String>> {
    let Some(entries) = parse_listing(listing) else {
        return commands;
    };
    let selected = index(&entries);
    commands
        .into_iter()
        .filter(|c| match filter(c) {
            Ok(f) => selected.contains(&f),
            Err(()) => !entries.is_empty(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(eps: &[&str]) -> UdpPort {
        UdpPort {
            frontends: vec![("10.96.0.10".parse().unwrap(), 53)],
            node_port: Some(30053),
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn first_endpoint_and_removed_endpoints() {
        let mut last = UdpState::new();
        last.insert("ns/dns:dns".into(), port(&[]));
        let mut next = UdpState::new();
        next.insert("ns/dns:dns".into(), port(&["10.0.0.1"]));
        let cmds = cleanup_commands(IpFamily::V4, &last, &next);
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            text,
            vec![
                "-D -p udp -f ipv4 --dport 30053",
                "-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dport 53",
            ]
        );
        let cmds = cleanup_commands(IpFamily::V4, &next, &last);
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            text,
            vec![
                "-D -p udp -f ipv4 --dport 30053 --dst-nat 10.0.0.1",
                "-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dst-nat 10.0.0.1",
            ]
        );
        assert!(cleanup_commands(IpFamily::V4, &next, &next).is_empty());
    }

    const LISTING: &str = "udp      17 29 src=10.1.1.5 dst=10.1.1.9 sport=35593 dport=99 [UNREPLIED] src=10.1.1.9 dst=10.1.1.5 sport=99 dport=35593 mark=0 use=1\n\
        udp      17 29 src=10.1.1.5 dst=10.96.0.10 sport=35593 dport=53 [UNREPLIED] src=10.0.0.1 dst=10.1.1.5 sport=5353 dport=35593 mark=0 use=1\n";

    fn cmd(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn reads_conntrack_listings() {
        let entries = parse_listing(LISTING).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    orig_dst: "10.1.1.9".parse().unwrap(),
                    orig_dport: 99,
                    reply_src: "10.1.1.9".parse().unwrap(),
                },
                Entry {
                    orig_dst: "10.96.0.10".parse().unwrap(),
                    orig_dport: 53,
                    reply_src: "10.0.0.1".parse().unwrap(),
                }
            ]
        );
        let v6 = "udp      17 29 src=fd00:50::2 dst=fd00:96::a sport=1 dport=53 src=fd00:76::9 dst=fd00:50::2 sport=53 dport=1 mark=0 use=1";
        assert_eq!(
            parse_listing(v6).unwrap()[0].reply_src,
            "fd00:76::9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(parse_listing("garbage\n"), None);
        assert_eq!(parse_listing(""), Some(vec![]));
    }

    #[test]
    fn runs_only_the_deletions_that_match_an_entry() {
        let commands = vec![
            cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dport 53"),
            cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dport 54"),
            cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.11 --dport 53"),
            cmd("-D -p udp -f ipv4 --dport 53"),
            cmd("-D -p udp -f ipv4 --dport 99 --dst-nat 10.1.1.9"),
            cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dst-nat 10.0.0.1"),
            cmd("-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dst-nat 10.0.0.2"),
            cmd("-D -p udp -f ipv4 --unknown-flag x"),
        ];
        let kept: Vec<String> = needed(commands.clone(), LISTING)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            kept,
            vec![
                "-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dport 53",
                "-D -p udp -f ipv4 --dport 53",
                "-D -p udp -f ipv4 --orig-dst 10.96.0.10 --dst-nat 10.0.0.1",
                "-D -p udp -f ipv4 --unknown-flag x",
            ]
        );
        // Not DNATed (reply from the original destination): no --dst-nat
        // deletion matches it.
        assert!(needed(commands.clone(), "").is_empty());
        assert_eq!(needed(commands.clone(), "garbage\n"), commands);
        assert!(worth_listing(&commands) && !worth_listing(&commands[..1]));
        assert_eq!(listing_args(IpFamily::V6).join(" "), "-L -p udp -f ipv6");
    }

    /// The index gives what checking each deletion against each entry
    /// gives (random small listings and deletions).
    #[test]
    fn index_agrees_with_checking_every_entry() {
        let mut rng = crate::test_rng::Rng(7);
        let ip = |rng: &mut crate::test_rng::Rng| format!("10.0.0.{}", rng.below(4));
        for _ in 0..300 {
            let mut listing = String::new();
            let mut entries = Vec::new();
            for _ in 0..rng.below(5) {
                let (dst, port, reply) = (ip(&mut rng), 50 + rng.below(3), ip(&mut rng));
                listing.push_str(&format!(
                    "udp 17 29 src=10.9.9.9 dst={dst} sport=1 dport={port} src={reply} dst=10.9.9.9 sport=2 dport=1\n"
                ));
                entries.push((dst, port.to_string(), reply));
            }
            let mut commands = Vec::new();
            for _ in 0..6 {
                let mut c = cmd("-D -p udp -f ipv4");
                if rng.below(2) == 0 {
                    c.extend(["--orig-dst".to_string(), ip(&mut rng)]);
                }
                if rng.below(2) == 0 {
                    c.extend(["--dport".to_string(), (50 + rng.below(3)).to_string()]);
                }
                if rng.below(2) == 0 {
                    c.extend(["--dst-nat".to_string(), ip(&mut rng)]);
                }
                commands.push(c);
            }
            let value = |c: &[String], flag: &str| {
                c.iter().position(|w| w == flag).map(|i| c[i + 1].clone())
            };
            let brute: Vec<Vec<String>> = commands
                .iter()
                .filter(|c| {
                    entries.iter().any(|(dst, port, reply)| {
                        value(c, "--orig-dst").is_none_or(|v| &v == dst)
                            && value(c, "--dport").is_none_or(|v| &v == port)
                            && value(c, "--dst-nat").is_none_or(|v| &v == reply && reply != dst)
                    })
                })
                .cloned()
                .collect();
            assert_eq!(needed(commands, &listing), brute, "{listing}");
        }
    }
}
