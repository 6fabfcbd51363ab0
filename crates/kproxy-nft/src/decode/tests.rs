//! The decoder against the encoder: a table encoded as nft encodes it,
//! handed over in the order the kernel dumps it, reads back as the same
//! table (spelled as `nft -j` spells it).

use kproxy_core::model::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, IpFamily, IpMode, LoadBalancerIngress,
    LocalDetector, NodeConfig, Protocol, Service, ServicePort, ServiceType,
};
use kproxy_core::plan::plan_release;
use kproxy_core::profile::NftablesProfile;
use kproxy_core::synthetic::cluster;
use kproxy_nfnl::attr::AttrBuf;
use kproxy_nfnl::msg::Message;

use super::*;
use crate::netlink::Encoder;
use crate::sync::payload::{as_written, nft_full};
use crate::tx::Transaction;
use crate::{PrintOptions, SingleDnat};

/// The messages of `table`'s creation in the order a dump gives them:
/// the table, chains, sets (anonymous ones included), elements, objects,
/// rules. Rules get handles.
fn dump_of(table: &Table, single: SingleDnat) -> Vec<Message> {
    let printed = nft_full(table, PrintOptions::default()).expect("printable");
    let mut tx: Transaction = printed.transaction;
    // nft_full replaces the table: `add table`, `delete table`, `add table`.
    tx.ops.drain(..2);
    let enc = Encoder::new(single)
        .naming_anonymous_sets(0)
        .encode(&tx)
        .expect("encodable");
    let rank = |k: u16| match k {
        m::NFT_MSG_NEWTABLE => 0,
        m::NFT_MSG_NEWCHAIN => 1,
        m::NFT_MSG_NEWSET => 2,
        m::NFT_MSG_NEWSETELEM => 3,
        m::NFT_MSG_NEWOBJ => 4,
        _ => 5,
    };
    let mut msgs = enc.messages;
    // Anonymous sets' elements name their set by the batch's id; a dump
    // names it.
    let mut names = std::collections::HashMap::new();
    for msg in &msgs {
        if msg.nft_kind() == m::NFT_MSG_NEWSET
            && let (Ok(Some(id)), Ok(Some(name))) = (
                find(&msg.attrs, a::NFTA_SET_ID),
                find(&msg.attrs, a::NFTA_SET_NAME),
            )
        {
            names.insert(id.payload().to_vec(), name.str().unwrap().to_string());
        }
    }
    for msg in &mut msgs {
        if msg.nft_kind() == m::NFT_MSG_NEWSETELEM
            && find(&msg.attrs, a::NFTA_SET_ELEM_LIST_SET)
                .unwrap()
                .is_none()
        {
            let id = find(&msg.attrs, a::NFTA_SET_ELEM_LIST_SET_ID)
                .unwrap()
                .unwrap();
            let mut b = AttrBuf::new();
            b.put_str(a::NFTA_SET_ELEM_LIST_SET, &names[id.payload()]);
            msg.attrs.extend_from_slice(b.as_bytes());
        }
    }
    msgs.sort_by_key(|m| rank(m.nft_kind()));
    let mut handle = 100u64;
    for msg in &mut msgs {
        if msg.nft_kind() == m::NFT_MSG_NEWRULE {
            let mut b = AttrBuf::new();
            b.put_u64_be(a::NFTA_RULE_HANDLE, handle);
            msg.attrs.extend_from_slice(b.as_bytes());
            handle += 1;
        }
    }
    msgs
}

fn decode(family: IpFamily, msgs: &[Message]) -> Result<Table, DecodeError> {
    let mut d = TableDecoder::new(family);
    for msg in msgs {
        d.message(msg.nft_kind(), &msg.attrs)?;
    }
    d.finish()
}

fn node(family: IpFamily) -> NodeConfig {
    let mut n = NodeConfig::new(family, "node-1");
    n.local_detector = LocalDetector::Cidr(match family {
        IpFamily::V4 => "10.0.0.0/8".parse().expect("constant"),
        IpFamily::V6 => "fd00:10::/64".parse().expect("constant"),
    });
    n
}

fn table_of(state: &ClusterState, node: &NodeConfig, profile: NftablesProfile) -> Table {
    let plan = plan_release(state, node, profile.release());
    let mut rs = crate::ruleset_profile(&plan, profile).expect("layout");
    rs.tables.remove(0)
}

/// A cluster with the layouts' features: one and several endpoints,
/// session affinity, LoadBalancer source ranges, NodePorts, no endpoints.
fn varied(family: IpFamily) -> ClusterState {
    let (vip, lb, ep1, ep2, ranges, none) = match family {
        IpFamily::V4 => (
            "172.30.0.41",
            "5.6.7.8",
            "10.180.0.1",
            "10.180.0.2",
            ["203.0.113.0/25", "198.51.100.7/32"],
            "172.30.0.42",
        ),
        IpFamily::V6 => (
            "fd00:172:30::41",
            "2001:db8:5::8",
            "fd00:10::1",
            "fd00:10::2",
            ["2001:db8:7::/48", "2001:db8:9::1/128"],
            "fd00:172:30::42",
        ),
    };
    let mut state = match family {
        IpFamily::V4 => cluster(30, 3),
        IpFamily::V6 => ClusterState::default(),
    };
    let mut svc = Service::cluster_ip("ns1", "lb", vip.parse().expect("ip"))
        .with_port(ServicePort::new("p80", Protocol::Tcp, 80).with_node_port(30080));
    svc.service_type = ServiceType::LoadBalancer;
    svc.load_balancer_ingress = vec![LoadBalancerIngress {
        ip: lb.parse().expect("ip"),
        ip_mode: IpMode::Vip,
    }];
    svc.load_balancer_source_ranges = ranges.iter().map(|r| r.parse().expect("net")).collect();
    svc.session_affinity_timeout = Some(10800);
    let slice = EndpointSlice::new("ns1", "lb-a", "lb", family)
        .with_port(EndpointPort::new("p80", Protocol::Tcp, 8080))
        .with_endpoint(Endpoint::ready(ep1.parse().expect("ip")))
        .with_endpoint(Endpoint::ready(ep2.parse().expect("ip")));
    state.services.push(svc);
    state.endpoint_slices.push(slice);
    let single = EndpointSlice::new("ns2", "one-a", "one", family)
        .with_port(EndpointPort::new("p53", Protocol::Udp, 53))
        .with_endpoint(Endpoint::ready(ep1.parse().expect("ip")));
    state.services.push(
        Service::cluster_ip("ns2", "one", none.parse().expect("ip")).with_port(ServicePort::new(
            "p53",
            Protocol::Udp,
            53,
        )),
    );
    state.endpoint_slices.push(single);
    let mut empty = Service::cluster_ip("ns3", "none", none.parse().expect("ip"))
        .with_port(ServicePort::new("p53", Protocol::Sctp, 53));
    empty.cluster_ips = vec![match family {
        IpFamily::V4 => "172.30.0.43".parse().expect("ip"),
        IpFamily::V6 => "fd00:172:30::43".parse().expect("ip"),
    }];
    state.services.push(empty);
    state
}

/// `t` with its sets' and maps' elements in one order (the decoder lists
/// them as nft sorts them, the layouts in their own order).
fn elements_sorted(mut t: Table) -> Table {
    for s in &mut t.sets {
        s.elements.sort_by_key(|e| format!("{e:?}"));
    }
    for m in &mut t.maps {
        m.elements.sort_by_key(|e| format!("{e:?}"));
    }
    t
}

/// The first object that differs.
fn difference(got: &Table, want: &Table) -> Option<String> {
    let n = got.chains.len().max(want.chains.len());
    for i in 0..n {
        let (g, w) = (got.chains.get(i), want.chains.get(i));
        if g != w {
            return Some(format!("chain {i}:\n got {g:?}\nwant {w:?}"));
        }
    }
    for i in 0..got.sets.len().max(want.sets.len()) {
        let (g, w) = (got.sets.get(i), want.sets.get(i));
        if g != w {
            return Some(format!("set {i}:\n got {g:?}\nwant {w:?}"));
        }
    }
    for i in 0..got.maps.len().max(want.maps.len()) {
        let (g, w) = (got.maps.get(i), want.maps.get(i));
        if g != w {
            return Some(format!("map {i}:\n got {g:?}\nwant {w:?}"));
        }
    }
    None
}

#[test]
fn layouts_read_back_as_written() {
    for family in [IpFamily::V4, IpFamily::V6] {
        for profile in [NftablesProfile::Current, NftablesProfile::Pre1_36] {
            for single in [SingleDnat::Concat, SingleDnat::AddrPort] {
                let want = table_of(&varied(family), &node(family), profile);
                let mut got = decode(family, &dump_of(&want, single))
                    .unwrap_or_else(|e| panic!("{family:?} {profile:?}: {e}"));
                as_written(&mut got, &want);
                let (got, want) = (elements_sorted(got), elements_sorted(want));
                assert_eq!(
                    difference(&got, &want),
                    None,
                    "{family:?} {profile:?} {single:?}"
                );
                assert_eq!(got, want);
            }
        }
    }
}

#[test]
fn anonymous_sets_read_as_nft_prints_them() {
    let mut t = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
    let mut c = Chain::new("c");
    let addrs: Vec<AddrMatch> = [
        "10.1.0.0/16",
        "10.0.0.0/16",
        "192.168.1.1/32",
        "10.4.0.0/15",
    ]
    .iter()
    .map(|s| AddrMatch::Net(s.parse().expect("net")))
    .collect();
    c.push(
        Rule::new()
            .with(Match::AddrSet {
                dir: Direction::Src,
                addrs,
                negate: true,
            })
            .verdict(Verdict::Drop),
    );
    t.chains.push(c);
    let got = decode(IpFamily::V4, &dump_of(&t, SingleDnat::Concat)).expect("decodes");
    // 10.0.0.0/16 + 10.1.0.0/16 merge into 10.0.0.0/15; a /32 prints as
    // its address.
    let net = |s: &str| AddrMatch::Net(s.parse().expect("net"));
    assert_eq!(
        got.chains[0].rules[0].matches,
        [Match::AddrSet {
            dir: Direction::Src,
            addrs: vec![
                net("10.0.0.0/15"),
                net("10.4.0.0/15"),
                AddrMatch::Ip("192.168.1.1".parse().expect("ip"))
            ],
            negate: true
        }]
    );
}

#[test]
fn unknown_expressions_name_the_chain_and_handle() {
    let mut t = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
    t.chains.push(Chain::new("c"));
    let mut msgs = dump_of(&t, SingleDnat::Concat);
    let mut b = AttrBuf::new();
    b.put_str(a::NFTA_RULE_TABLE, "kube-proxy");
    b.put_str(a::NFTA_RULE_CHAIN, "c");
    b.put_u64_be(a::NFTA_RULE_HANDLE, 7);
    b.nest(a::NFTA_RULE_EXPRESSIONS, |l| {
        l.nest(a::NFTA_LIST_ELEM, |x| {
            x.put_str(a::NFTA_EXPR_NAME, "log");
        });
    });
    msgs.push(Message::nft(m::NFT_MSG_NEWRULE, 0, 2, b.into_bytes()));
    let err = decode(IpFamily::V4, &msgs).expect_err("log is not known");
    assert_eq!(
        err,
        DecodeError::Rule {
            chain: "c".into(),
            handle: 7,
            what: "expression log".into()
        }
    );
    assert_eq!(err.to_string(), "rule 7 of chain c: expression log");
}

#[test]
fn cut_and_garbled_input_is_an_error_not_a_panic() {
    let want = table_of(
        &varied(IpFamily::V6),
        &node(IpFamily::V6),
        NftablesProfile::Current,
    );
    let msgs = dump_of(&want, SingleDnat::Concat);
    // Every message cut at every length, and every byte flipped, in turn:
    // errors or other tables, never a panic.
    for (i, msg) in msgs.iter().enumerate() {
        for cut in (0..msg.attrs.len()).step_by(5) {
            let mut d = TableDecoder::new(IpFamily::V6);
            for (j, other) in msgs.iter().enumerate() {
                let attrs = if i == j {
                    &msg.attrs[..cut]
                } else {
                    &other.attrs[..]
                };
                if d.message(other.nft_kind(), attrs).is_err() {
                    break;
                }
            }
        }
        for at in (0..msg.attrs.len()).step_by(7) {
            let mut attrs = msg.attrs.clone();
            attrs[at] ^= 0xa5;
            let mut d = TableDecoder::new(IpFamily::V6);
            for (j, other) in msgs.iter().enumerate() {
                let attrs = if i == j { &attrs[..] } else { &other.attrs[..] };
                if d.message(other.nft_kind(), attrs).is_err() {
                    break;
                }
            }
            let _ = d.finish();
        }
    }
    assert_eq!(
        TableDecoder::new(IpFamily::V4).finish(),
        Err(DecodeError::NoTable)
    );
}

#[test]
fn registers_round_trip() {
    for r in [
        Reg::VERDICT,
        Reg::FIRST,
        Reg::FIRST.after(1),
        Reg::FIRST.after(4),
    ] {
        assert_eq!(Reg::from_kernel(r.kernel()), Some(r));
    }
    assert_eq!(Reg::from_kernel(5), None);
    assert_eq!(Reg::from_kernel(24), None);
}

#[test]
fn drop_policy_and_counters() {
    let mut t = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
    t.comment = Some("rules for kube-proxy".into());
    let mut c = Chain::new("in");
    c.kind = ChainKind::Base {
        chain_type: BaseChainType::Filter,
        hook: Hook::Input,
        priority: -110,
    };
    c.comment = Some("a comment".into());
    t.chains.push(c);
    t.counters.push(Counter { name: "n".into() });
    let mut msgs = dump_of(&t, SingleDnat::Concat);
    // The kernel adds the policy to a base chain's dump.
    for msg in &mut msgs {
        if msg.nft_kind() == m::NFT_MSG_NEWCHAIN {
            let mut b = AttrBuf::new();
            b.put_u32_be(a::NFTA_CHAIN_POLICY, v::NF_DROP as u32);
            msg.attrs.extend_from_slice(b.as_bytes());
        }
    }
    let got = decode(IpFamily::V4, &msgs).expect("decodes");
    let mut want = t.clone();
    want.chains[0].push(
        Rule::new()
            .with(Match::Comment("policy drop".into()))
            .verdict(Verdict::Drop),
    );
    assert_eq!(got, want);
}
