//! kproxy's nf_tables expressions, rule by rule, against what `nft` 1.0.6
//! sends for the same transaction (`nft --debug=netlink -f FILE`, rule
//! listings captured in `fixtures/netlink/*.txt`). No root needed: the
//! kernel tests (`kernel_netlink.rs`) check the loaded result.

use std::path::Path;

use kproxy_core::model::IpFamily;
use kproxy_nft::Op;
use kproxy_nft::netlink::rule_exprs;
use kproxy_tests::read_args;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Our listing of every rule of `kproxy compile ARGS INPUT`, in order,
/// as libnftnl prints rules (`ip TABLE CHAIN` then one line per expression).
fn listing(args: &[String], input: &Path) -> String {
    let mut out = String::new();
    for (tx, opts) in kproxy_tests::compile_nft_transactions(args, &[input]).expect("transactions")
    {
        let fam = match tx.family {
            IpFamily::V4 => "ip",
            IpFamily::V6 => "ip6",
        };
        for op in &tx.ops {
            if let Op::AddRule(chain, rule) = op {
                out.push_str(&format!("{fam} {} {}\n", tx.table, chain.as_str()));
                let (_, exprs) = rule_exprs(tx.family, rule, opts.single_dnat).expect("encodable");
                for x in exprs {
                    out.push_str(&format!("  {x}\n"));
                }
            }
        }
    }
    out
}

fn compare(fixture: &str, args: &[String], input: &Path) {
    let want =
        std::fs::read_to_string(root().join("fixtures/netlink").join(fixture)).expect("fixture");
    let got = listing(args, input);
    assert!(
        want == got,
        "{fixture}: expressions differ from nft's\n{}",
        kproxy_tests::line_diff(&want, &got)
    );
}

#[test]
fn golden_rules_encode_as_nft_encodes_them() {
    for case in [
        "test_overall_nftables_rules",
        "test_overall_nftables_rules_pre_1_36",
    ] {
        let dir = root().join("golden/nftables").join(case);
        compare(
            &format!("{case}.txt"),
            &read_args(&dir.join("args")),
            &dir.join("input.yaml"),
        );
    }
}

#[test]
fn dual_stack_rules_encode_as_nft_encodes_them() {
    let args: Vec<String> = kproxy_tests::DUAL_STACK_ARGS
        .iter()
        .chain(&["--ip-family=dual"])
        .map(|s| s.to_string())
        .collect();
    compare(
        "dual-stack.txt",
        &args,
        &root().join("fixtures/netlink/dual-stack.yaml"),
    );
}

/// Prefixes off a byte boundary: nft 1.0.6 loads the whole address and
/// masks it (`nft --debug=netlink` of `ip saddr 10.76.0.0/14`, `ip daddr
/// 10.0.0.0/8`, `ip6 saddr fd00:10::/62`, `ip6 daddr fd00::/20`); a
/// shorter load lists as `@nh,96,16` instead of `ip saddr 10.76.0.0/14`.
#[test]
fn prefixes_encode_as_nft_encodes_them() {
    use kproxy_core::ir::{AddrMatch, Direction, Match, Rule, Verdict};
    use kproxy_nft::SingleDnat;
    let text = |f: IpFamily, dir: Direction, net: &str| {
        let rule = Rule::new()
            .with(Match::Addr {
                dir,
                addr: AddrMatch::Net(net.parse().unwrap()),
                negate: false,
            })
            .verdict(Verdict::Accept);
        let (_, exprs) = rule_exprs(f, &rule, SingleDnat::Concat).expect("encodable");
        exprs.iter().map(|x| format!("{x}\n")).collect::<String>()
    };
    assert_eq!(
        text(IpFamily::V4, Direction::Src, "10.76.0.0/14"),
        "[ payload load 4b @ network header + 12 => reg 1 ]\n\
         [ bitwise reg 1 = ( reg 1 & 0x0000fcff ) ^ 0x00000000 ]\n\
         [ cmp eq reg 1 0x00004c0a ]\n\
         [ immediate reg 0 accept ]\n"
    );
    assert_eq!(
        text(IpFamily::V4, Direction::Dst, "10.0.0.0/8"),
        "[ payload load 1b @ network header + 16 => reg 1 ]\n\
         [ cmp eq reg 1 0x0000000a ]\n\
         [ immediate reg 0 accept ]\n"
    );
    assert_eq!(
        text(IpFamily::V6, Direction::Src, "fd00:10::/62"),
        "[ payload load 16b @ network header + 8 => reg 1 ]\n\
         [ bitwise reg 1 = ( reg 1 & 0xffffffff 0xfcffffff 0x00000000 0x00000000 ) ^ 0x00000000 0x00000000 0x00000000 0x00000000 ]\n\
         [ cmp eq reg 1 0x100000fd 0x00000000 0x00000000 0x00000000 ]\n\
         [ immediate reg 0 accept ]\n"
    );
    assert_eq!(
        text(IpFamily::V6, Direction::Dst, "fd00::/20"),
        "[ payload load 16b @ network header + 24 => reg 1 ]\n\
         [ bitwise reg 1 = ( reg 1 & 0x00f0ffff 0x00000000 0x00000000 0x00000000 ) ^ 0x00000000 0x00000000 0x00000000 0x00000000 ]\n\
         [ cmp eq reg 1 0x000000fd 0x00000000 0x00000000 0x00000000 ]\n\
         [ immediate reg 0 accept ]\n"
    );
}
