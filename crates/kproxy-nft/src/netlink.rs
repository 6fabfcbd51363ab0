//! Transaction -> nf_tables netlink messages, encoded as `nft` (1.0.x)
//! encodes the same `nft -f` text, so that `nft list ruleset` prints the
//! same after either. Pure: the binary sends the messages in one batch
//! ([`kproxy_nfnl::batch`]).
//!
//! Each rule is first lowered to typed [`Expr`]essions, which print as
//! libnftnl prints them (`nft --debug=netlink`), then to attributes.
//!
//! ```
//! use kproxy_core::ir::{Chain, Rule, Verdict};
//! use kproxy_core::model::IpFamily;
//! use kproxy_nft::netlink::{Encoder, rule_exprs};
//! use kproxy_nft::tx::{Op, Transaction};
//! use kproxy_nft::SingleDnat;
//!
//! let mut tx = Transaction::new(IpFamily::V4, "kube-proxy");
//! tx.push(Op::AddTable { comment: None });
//! tx.push(Op::AddChain(Chain::new("services")));
//! tx.push(Op::AddRule("services".into(), Rule::new().verdict(Verdict::Drop)));
//! let enc = Encoder::new(SingleDnat::Concat).encode(&tx).unwrap();
//! assert_eq!(enc.messages.len(), 3);
//! assert_eq!(enc.op_of_message, [0, 1, 2]);
//! let (_, exprs) = rule_exprs(IpFamily::V4, &Rule::new().verdict(Verdict::Drop), SingleDnat::Concat).unwrap();
//! assert_eq!(exprs[0].to_string(), "[ immediate reg 0 drop ]");
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use kproxy_core::ir::{
    AddrMatch, BaseChainType, ChainKind, CtState, Direction, Element, Hook, Key, KeyValue,
    MapValue, MarkOp, Match, Rule, Set, Verdict,
};
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_nfnl::attr::AttrBuf;
use kproxy_nfnl::consts::{attr as a, expr as e, msg as m, netlink as nl, nfnl, val as v};
use kproxy_nfnl::msg::Message;
use kproxy_nfnl::udata::{self, Udata};

use crate::NftError;
use crate::print::SingleDnat;
use crate::tx::{Op, Transaction};

/// nft's data types (`enum datatypes`), for set keys and values.
pub(crate) const TYPE_VERDICT: u32 = 1;
pub(crate) const TYPE_INTEGER: u32 = 4;
pub(crate) const TYPE_IPADDR: u32 = 7;
pub(crate) const TYPE_IP6ADDR: u32 = 8;
pub(crate) const TYPE_INET_PROTOCOL: u32 = 12;
pub(crate) const TYPE_INET_SERVICE: u32 = 13;
pub(crate) const TYPE_MARK: u32 = 19;
/// nft's `TYPE_BITS`: a concatenation's type is its fields' types shifted
/// in this many bits each.
pub(crate) const TYPE_BITS: u32 = 6;
/// nft's byte orders (`enum byteorder`), stored in set user data.
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_HOST: u32 = 1;
const BYTEORDER_BIG: u32 = 2;
/// `RTN_LOCAL`: fib's address type of a local address.
pub(crate) const RTN_LOCAL: u32 = 2;
/// Conntrack state bits (`NF_CT_STATE_BIT`) and the DNAT status bit.
pub(crate) const CT_INVALID: u32 = 1;
pub(crate) const CT_ESTABLISHED: u32 = 2;
pub(crate) const CT_RELATED: u32 = 4;
pub(crate) const CT_NEW: u32 = 8;
pub(crate) const IPS_DST_NAT: u32 = 0x20;
/// ICMP / ICMPv6 "port unreachable".
pub(crate) const ICMP_PORT_UNREACH: u32 = 3;
pub(crate) const ICMPV6_PORT_UNREACH: u32 = 4;

/// A register as nft numbers it: 32-bit slots from 1; printed and sent as
/// the kernel's number (a 128-bit register when aligned, else `NFT_REG32_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(u32);

impl Reg {
    /// The verdict register.
    pub const VERDICT: Reg = Reg(0);
    /// The first data register.
    pub const FIRST: Reg = Reg(1);

    /// The register of the kernel's number `n` (`None`: not a register).
    pub fn from_kernel(n: u32) -> Option<Reg> {
        match n {
            v::NFT_REG_VERDICT => Some(Reg(0)),
            1..=4 => Some(Reg(1 + (n - 1) * 4)),
            8..=23 => Some(Reg(n - 8 + 1)),
            _ => None,
        }
    }

    /// The register `words` 32-bit slots after this one.
    pub(crate) fn after(self, words: u32) -> Reg {
        Reg(self.0 + words)
    }

    /// The kernel's register number.
    pub fn kernel(self) -> u32 {
        if self.0 == 0 {
            return v::NFT_REG_VERDICT;
        }
        let i = self.0 - 1;
        if i.is_multiple_of(4) {
            v::NFT_REG_1 + i / 4
        } else {
            v::NFT_REG32_00 + i
        }
    }
}

/// A verdict in an immediate or a map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictData {
    /// `NF_ACCEPT`, `NF_DROP`, `NFT_RETURN`...
    Code(i32),
    /// `jump CHAIN` / `goto CHAIN`.
    Chain(i32, String),
}

/// Data of an immediate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Raw bytes.
    Value(Vec<u8>),
    /// A verdict.
    Verdict(VerdictData),
}

/// One nf_tables expression, as the kernel receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Expr {
    /// `payload load LENb @ BASE header + OFFSET => reg D`
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    /// `meta load KEY => reg D`
    Meta { key: u32, dreg: Reg },
    /// `meta set KEY with reg S`
    MetaSet { key: u32, sreg: Reg },
    /// `cmp OP reg S DATA`
    Cmp { sreg: Reg, op: u32, data: Vec<u8> },
    /// `bitwise reg D = ( reg S & MASK ) ^ XOR`
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `lookup reg S set NAME [dreg D] [flags 0x1]`
    Lookup {
        set: String,
        set_id: Option<u32>,
        sreg: Reg,
        dreg: Option<Reg>,
        invert: bool,
    },
    /// `immediate reg D DATA`
    Immediate { dreg: Reg, data: Data },
    /// `numgen reg D = random mod N`
    Numgen { dreg: Reg, modulus: u32 },
    /// `nat dnat FAMILY addr_min reg A proto_min reg P [flags F]`
    Dnat {
        family: IpFamily,
        addr: Reg,
        proto: Reg,
        flags: u32,
    },
    /// `masq [flags F]`
    Masq { flags: u32 },
    /// `dynset update reg_key K set NAME`
    DynsetUpdate {
        set: String,
        set_id: Option<u32>,
        sreg: Reg,
    },
    /// `objref type 1 name NAME` (a named counter)
    CounterRef { name: String },
    /// `fib saddr|daddr type => reg D`
    Fib { flags: u32, dreg: Reg },
    /// `ct load KEY => reg D`
    Ct { key: u32, dreg: Reg },
    /// `reject type T code C`
    Reject { kind: u32, code: u32 },
}

/// libnftnl's `0x%08x` words of data (host order).
fn words(data: &[u8]) -> String {
    data.chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            format!("0x{:08x}", u32::from_ne_bytes(w))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn verdict_word(d: &VerdictData) -> String {
    let name = |c: i32| match c {
        v::NF_DROP => "drop",
        v::NF_ACCEPT => "accept",
        v::NFT_CONTINUE => "continue",
        v::NFT_BREAK => "break",
        v::NFT_JUMP => "jump",
        v::NFT_GOTO => "goto",
        v::NFT_RETURN => "return",
        _ => "unknown",
    };
    match d {
        VerdictData::Code(c) => name(*c).to_string(),
        VerdictData::Chain(c, chain) => format!("{} -> {chain}", name(*c)),
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let b = match *base {
                    v::NFT_PAYLOAD_LL_HEADER => "link",
                    v::NFT_PAYLOAD_NETWORK_HEADER => "network",
                    _ => "transport",
                };
                write!(
                    f,
                    "[ payload load {len}b @ {b} header + {offset} => reg {} ]",
                    dreg.kernel()
                )
            }
            Expr::Meta { key, dreg } => write!(
                f,
                "[ meta load {} => reg {} ]",
                meta_name(*key),
                dreg.kernel()
            ),
            Expr::MetaSet { key, sreg } => write!(
                f,
                "[ meta set {} with reg {} ]",
                meta_name(*key),
                sreg.kernel()
            ),
            Expr::Cmp { sreg, op, data } => {
                let o = if *op == v::NFT_CMP_EQ { "eq" } else { "neq" };
                write!(f, "[ cmp {o} reg {} {} ]", sreg.kernel(), words(data))
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => write!(
                f,
                "[ bitwise reg {} = ( reg {} & {} ) ^ {} ]",
                dreg.kernel(),
                sreg.kernel(),
                words(mask),
                words(xor)
            ),
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
                ..
            } => {
                write!(f, "[ lookup reg {} set {set}", sreg.kernel())?;
                if let Some(d) = dreg {
                    write!(f, " dreg {}", d.kernel())?;
                }
                if *invert {
                    write!(f, " 0x{:x}", v::NFT_LOOKUP_F_INV)?;
                }
                write!(f, " ]")
            }
            Expr::Immediate { dreg, data } => match data {
                Data::Value(b) => write!(f, "[ immediate reg {} {} ]", dreg.kernel(), words(b)),
                Data::Verdict(d) => {
                    write!(f, "[ immediate reg {} {} ]", dreg.kernel(), verdict_word(d))
                }
            },
            Expr::Numgen { dreg, modulus } => {
                write!(f, "[ numgen reg {} = random mod {modulus} ]", dreg.kernel())
            }
            Expr::Dnat {
                family,
                addr,
                proto,
                flags,
            } => {
                let fam = match family {
                    IpFamily::V4 => "ip",
                    IpFamily::V6 => "ip6",
                };
                write!(
                    f,
                    "[ nat dnat {fam} addr_min reg {} proto_min reg {}",
                    addr.kernel(),
                    proto.kernel()
                )?;
                if *flags != 0 {
                    write!(f, " flags 0x{flags:x}")?;
                }
                write!(f, " ]")
            }
            Expr::Masq { flags } => {
                if *flags != 0 {
                    write!(f, "[ masq flags 0x{flags:x} ]")
                } else {
                    write!(f, "[ masq ]")
                }
            }
            Expr::DynsetUpdate { set, sreg, .. } => {
                write!(f, "[ dynset update reg_key {} set {set} ]", sreg.kernel())
            }
            Expr::CounterRef { name } => write!(f, "[ objref type 1 name {name} ]"),
            Expr::Fib { flags, dreg } => {
                let which = if flags & v::NFTA_FIB_F_SADDR != 0 {
                    "saddr"
                } else {
                    "daddr"
                };
                write!(f, "[ fib {which} type => reg {} ]", dreg.kernel())
            }
            Expr::Ct { key, dreg } => {
                let k = if *key == v::NFT_CT_STATE {
                    "state"
                } else {
                    "status"
                };
                write!(f, "[ ct load {k} => reg {} ]", dreg.kernel())
            }
            Expr::Reject { kind, code } => write!(f, "[ reject type {kind} code {code} ]"),
        }
    }
}

fn meta_name(key: u32) -> &'static str {
    match key {
        v::NFT_META_MARK => "mark",
        v::NFT_META_IIFNAME => "iifname",
        v::NFT_META_L4PROTO => "l4proto",
        _ => "unknown",
    }
}

fn put_reg(b: &mut AttrBuf, kind: u16, r: Reg) {
    b.put_u32_be(kind, r.kernel());
}

fn put_value(b: &mut AttrBuf, kind: u16, data: &[u8]) {
    b.nest(kind, |d| {
        d.put(a::NFTA_DATA_VALUE, data);
    });
}

fn put_verdict(b: &mut AttrBuf, kind: u16, vd: &VerdictData) {
    b.nest(kind, |d| {
        d.nest(a::NFTA_DATA_VERDICT, |vb| match vd {
            VerdictData::Code(c) => {
                vb.put(a::NFTA_VERDICT_CODE, &c.to_be_bytes());
            }
            VerdictData::Chain(c, chain) => {
                vb.put(a::NFTA_VERDICT_CODE, &c.to_be_bytes());
                vb.put_str(a::NFTA_VERDICT_CHAIN, chain);
            }
        });
    });
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } => "immediate",
            Expr::Numgen { .. } => "numgen",
            Expr::Dnat { .. } => "nat",
            Expr::Masq { .. } => "masq",
            Expr::DynsetUpdate { .. } => "dynset",
            Expr::CounterRef { .. } => "objref",
            Expr::Fib { .. } => "fib",
            Expr::Ct { .. } => "ct",
            Expr::Reject { .. } => "reject",
        }
    }

    /// The expression's attributes (`NFTA_LIST_ELEM` content).
    pub fn encode(&self, out: &mut AttrBuf) {
        out.nest(a::NFTA_LIST_ELEM, |el| {
            el.put_str(a::NFTA_EXPR_NAME, self.name());
            el.nest(a::NFTA_EXPR_DATA, |d| self.encode_data(d));
        });
    }

    fn encode_data(&self, d: &mut AttrBuf) {
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                put_reg(d, e::NFTA_PAYLOAD_DREG, *dreg);
                d.put_u32_be(e::NFTA_PAYLOAD_BASE, *base);
                d.put_u32_be(e::NFTA_PAYLOAD_OFFSET, *offset);
                d.put_u32_be(e::NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Meta { key, dreg } => {
                d.put_u32_be(e::NFTA_META_KEY, *key);
                put_reg(d, e::NFTA_META_DREG, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                d.put_u32_be(e::NFTA_META_KEY, *key);
                put_reg(d, e::NFTA_META_SREG, *sreg);
            }
            Expr::Cmp { sreg, op, data } => {
                put_reg(d, e::NFTA_CMP_SREG, *sreg);
                d.put_u32_be(e::NFTA_CMP_OP, *op);
                put_value(d, e::NFTA_CMP_DATA, data);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                put_reg(d, e::NFTA_BITWISE_SREG, *sreg);
                put_reg(d, e::NFTA_BITWISE_DREG, *dreg);
                d.put_u32_be(e::NFTA_BITWISE_LEN, mask.len() as u32);
                put_value(d, e::NFTA_BITWISE_MASK, mask);
                put_value(d, e::NFTA_BITWISE_XOR, xor);
            }
            Expr::Lookup {
                set,
                set_id,
                sreg,
                dreg,
                invert,
            } => {
                d.put_str(e::NFTA_LOOKUP_SET, set);
                put_reg(d, e::NFTA_LOOKUP_SREG, *sreg);
                if let Some(r) = dreg {
                    put_reg(d, e::NFTA_LOOKUP_DREG, *r);
                }
                if let Some(id) = set_id {
                    d.put_u32_be(e::NFTA_LOOKUP_SET_ID, *id);
                }
                if *invert {
                    d.put_u32_be(e::NFTA_LOOKUP_FLAGS, v::NFT_LOOKUP_F_INV);
                }
            }
            Expr::Immediate { dreg, data } => {
                put_reg(d, e::NFTA_IMMEDIATE_DREG, *dreg);
                match data {
                    Data::Value(b) => put_value(d, e::NFTA_IMMEDIATE_DATA, b),
                    Data::Verdict(vd) => put_verdict(d, e::NFTA_IMMEDIATE_DATA, vd),
                }
            }
            Expr::Numgen { dreg, modulus } => {
                put_reg(d, e::NFTA_NG_DREG, *dreg);
                d.put_u32_be(e::NFTA_NG_MODULUS, *modulus);
                d.put_u32_be(e::NFTA_NG_TYPE, v::NFT_NG_RANDOM);
                d.put_u32_be(e::NFTA_NG_OFFSET, 0);
            }
            Expr::Dnat {
                family,
                addr,
                proto,
                flags,
            } => {
                d.put_u32_be(e::NFTA_NAT_TYPE, v::NFT_NAT_DNAT);
                d.put_u32_be(e::NFTA_NAT_FAMILY, u32::from(nfproto(*family)));
                put_reg(d, e::NFTA_NAT_REG_ADDR_MIN, *addr);
                put_reg(d, e::NFTA_NAT_REG_PROTO_MIN, *proto);
                if *flags != 0 {
                    d.put_u32_be(e::NFTA_NAT_FLAGS, *flags);
                }
            }
            Expr::Masq { flags } => {
                if *flags != 0 {
                    d.put_u32_be(e::NFTA_MASQ_FLAGS, *flags);
                }
            }
            Expr::DynsetUpdate { set, set_id, sreg } => {
                put_reg(d, e::NFTA_DYNSET_SREG_KEY, *sreg);
                d.put_str(e::NFTA_DYNSET_SET_NAME, set);
                if let Some(id) = set_id {
                    d.put_u32_be(e::NFTA_DYNSET_SET_ID, *id);
                }
                d.put_u32_be(e::NFTA_DYNSET_OP, v::NFT_DYNSET_OP_UPDATE);
            }
            Expr::CounterRef { name } => {
                d.put_u32_be(e::NFTA_OBJREF_IMM_TYPE, v::NFT_OBJECT_COUNTER);
                d.put_str(e::NFTA_OBJREF_IMM_NAME, name);
            }
            Expr::Fib { flags, dreg } => {
                put_reg(d, e::NFTA_FIB_DREG, *dreg);
                d.put_u32_be(e::NFTA_FIB_RESULT, v::NFT_FIB_RESULT_ADDRTYPE);
                d.put_u32_be(e::NFTA_FIB_FLAGS, *flags);
            }
            Expr::Ct { key, dreg } => {
                d.put_u32_be(e::NFTA_CT_KEY, *key);
                put_reg(d, e::NFTA_CT_DREG, *dreg);
            }
            Expr::Reject { kind, code } => {
                d.put_u32_be(e::NFTA_REJECT_TYPE, *kind);
                d.put(e::NFTA_REJECT_ICMP_CODE, &[*code as u8]);
            }
        }
    }
}

/// The `NFPROTO_*` of a family.
pub fn nfproto(f: IpFamily) -> u8 {
    match f {
        IpFamily::V4 => nfnl::NFPROTO_IPV4,
        IpFamily::V6 => nfnl::NFPROTO_IPV6,
    }
}

/// One element of an anonymous set: key bytes, value, interval-end flag.
pub type AnonElement = (Vec<u8>, Option<Data>, bool);

/// A set type's key: nft type number, length, byte order, `typeof` record.
type KeySpec = (u32, u32, u32, Option<Vec<u8>>);

/// An anonymous set or map a rule needs (`{ ... }` in its text), created in
/// the same batch just before the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonSet {
    /// `__set%d` or `__map%d`.
    pub name: &'static str,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Key type and length.
    pub key: (u32, u32),
    /// Value type and length (maps).
    pub data: Option<(u32, u32)>,
    /// The elements: key bytes, value, interval-end flag.
    pub elements: Vec<AnonElement>,
    /// The user data records.
    pub udata: Udata,
}

fn proto_byte(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub(crate) fn addr_len(f: IpFamily) -> u32 {
    match f {
        IpFamily::V4 => 4,
        IpFamily::V6 => 16,
    }
}

pub(crate) fn addr_offset(f: IpFamily, dir: Direction) -> u32 {
    match (f, dir) {
        (IpFamily::V4, Direction::Src) => 12,
        (IpFamily::V4, Direction::Dst) => 16,
        (IpFamily::V6, Direction::Src) => 8,
        (IpFamily::V6, Direction::Dst) => 24,
    }
}

/// The expression loading `key` into `dreg`, and its length in bytes.
fn load(f: IpFamily, key: Key, dreg: Reg) -> (Expr, u32) {
    match key {
        Key::SrcAddr | Key::DstAddr => {
            let dir = if key == Key::SrcAddr {
                Direction::Src
            } else {
                Direction::Dst
            };
            let len = addr_len(f);
            (
                Expr::Payload {
                    base: v::NFT_PAYLOAD_NETWORK_HEADER,
                    offset: addr_offset(f, dir),
                    len,
                    dreg,
                },
                len,
            )
        }
        Key::L4Proto => (
            Expr::Meta {
                key: v::NFT_META_L4PROTO,
                dreg,
            },
            1,
        ),
        Key::DstPort => (
            Expr::Payload {
                base: v::NFT_PAYLOAD_TRANSPORT_HEADER,
                offset: 2,
                len: 2,
                dreg,
            },
            2,
        ),
    }
}

/// Loads concatenated keys from register 1 on.
fn load_keys(f: IpFamily, keys: &[Key], out: &mut Vec<Expr>) {
    let mut r = Reg::FIRST;
    for k in keys {
        let (x, len) = load(f, *k, r);
        out.push(x);
        r = r.after(len.div_ceil(4));
    }
}

/// `ADDR` / `NET` compared at `dir`, as nft does for a single value: a
/// prefix on a byte boundary loads only its bytes; another loads the whole
/// address and masks it.
fn addr_match(
    f: IpFamily,
    dir: Direction,
    am: &AddrMatch,
    negate: bool,
    out: &mut Vec<Expr>,
) -> Result<(), String> {
    let op = if negate {
        v::NFT_CMP_NEQ
    } else {
        v::NFT_CMP_EQ
    };
    let r = Reg::FIRST;
    let off = addr_offset(f, dir);
    let (bytes, plen) = match am {
        AddrMatch::Ip(ip) => (ip_bytes(ip), addr_len(f) * 8),
        AddrMatch::Net(n) => (ip_bytes(&n.network()), u32::from(n.prefix_len())),
    };
    if plen == 0 {
        return Err("a match on a /0 prefix".into());
    }
    if plen % 8 == 0 {
        let len = plen / 8;
        out.push(Expr::Payload {
            base: v::NFT_PAYLOAD_NETWORK_HEADER,
            offset: off,
            len,
            dreg: r,
        });
        out.push(Expr::Cmp {
            sreg: r,
            op,
            data: bytes[..len as usize].to_vec(),
        });
    } else {
        let len = addr_len(f);
        let mut mask = vec![0u8; len as usize];
        for (i, m) in mask.iter_mut().enumerate() {
            let bits = plen.saturating_sub(i as u32 * 8).min(8);
            *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        }
        // nft (1.0.x) loads and masks the whole address for a prefix off
        // a byte boundary (`10.76.0.0/14`: 4 bytes, `& 0xfffc0000`).
        out.push(Expr::Payload {
            base: v::NFT_PAYLOAD_NETWORK_HEADER,
            offset: off,
            len,
            dreg: r,
        });
        out.push(Expr::Bitwise {
            sreg: r,
            dreg: r,
            xor: vec![0; mask.len()],
            mask,
        });
        out.push(Expr::Cmp {
            sreg: r,
            op,
            data: bytes[..len as usize].to_vec(),
        });
    }
    Ok(())
}

fn set_mark_exprs(op: MarkOp, value: u32, out: &mut Vec<Expr>) {
    let r = Reg::FIRST;
    let (mask, xor) = match op {
        MarkOp::Or => (!value, value),
        MarkOp::Xor => (u32::MAX, value),
    };
    out.push(Expr::Meta {
        key: v::NFT_META_MARK,
        dreg: r,
    });
    out.push(Expr::Bitwise {
        sreg: r,
        dreg: r,
        mask: mask.to_ne_bytes().to_vec(),
        xor: xor.to_ne_bytes().to_vec(),
    });
    out.push(Expr::MetaSet {
        key: v::NFT_META_MARK,
        sreg: r,
    });
}

fn bit_test(load: Expr, bits: u32, negate: bool, out: &mut Vec<Expr>) {
    let r = Reg::FIRST;
    out.push(load);
    out.push(Expr::Bitwise {
        sreg: r,
        dreg: r,
        mask: bits.to_ne_bytes().to_vec(),
        xor: vec![0; 4],
    });
    let op = if negate {
        v::NFT_CMP_EQ
    } else {
        v::NFT_CMP_NEQ
    };
    out.push(Expr::Cmp {
        sreg: r,
        op,
        data: vec![0; 4],
    });
}

fn chain_verdict(code: i32, chain: &str) -> Data {
    Data::Verdict(VerdictData::Chain(code, chain.to_string()))
}

/// The interval elements of an anonymous address set, as nft sends them:
/// sorted, merged, each range's start and (unless it ends at the top of the
/// address space) the first address after it flagged as an interval end,
/// and an end element at the zero address when the first range starts
/// above it.
fn interval_elements(f: IpFamily, addrs: &[AddrMatch]) -> Result<Vec<AnonElement>, String> {
    let bits = addr_len(f) * 8;
    let mut ranges: Vec<(u128, u128)> = Vec::new();
    for am in addrs {
        let (ip, plen) = match am {
            AddrMatch::Ip(ip) => (*ip, bits),
            AddrMatch::Net(n) => (n.network(), u32::from(n.prefix_len())),
        };
        let base: u128 = match (f, ip) {
            (IpFamily::V4, IpAddr::V4(a)) => u128::from(u32::from(a)),
            (IpFamily::V6, IpAddr::V6(a)) => u128::from(a),
            _ => return Err("an address of the other family".into()),
        };
        let size_minus_one: u128 = if bits - plen >= 128 {
            u128::MAX
        } else {
            (1u128 << (bits - plen)) - 1
        };
        ranges.push((base, base.saturating_add(size_minus_one)));
    }
    ranges.sort();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let top: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let key = |x: u128| -> Vec<u8> {
        let b = x.to_be_bytes();
        b[(16 - bits as usize / 8)..].to_vec()
    };
    let mut out = Vec::new();
    if merged.first().is_some_and(|(s, _)| *s > 0) {
        out.push((key(0), None, true));
    }
    for (s, e) in merged {
        out.push((key(s), None, false));
        if e < top {
            out.push((key(e + 1), None, true));
        }
    }
    Ok(out)
}

/// A rule's anonymous sets and expressions (comments go to user data).
pub fn rule_exprs(
    f: IpFamily,
    rule: &Rule,
    single: SingleDnat,
) -> Result<(Vec<AnonSet>, Vec<Expr>), String> {
    let mut out = Vec::new();
    let mut anon = Vec::new();
    let r = Reg::FIRST;
    for mt in &rule.matches {
        match mt {
            Match::Comment(_) => {}
            Match::Protocol(p) => {
                out.push(Expr::Meta {
                    key: v::NFT_META_L4PROTO,
                    dreg: r,
                });
                out.push(Expr::Cmp {
                    sreg: r,
                    op: v::NFT_CMP_EQ,
                    data: vec![proto_byte(*p)],
                });
            }
            Match::Addr { dir, addr, negate } => addr_match(f, *dir, addr, *negate, &mut out)?,
            Match::DstPort(p) => {
                out.push(load(f, Key::DstPort, r).0);
                out.push(Expr::Cmp {
                    sreg: r,
                    op: v::NFT_CMP_EQ,
                    data: p.to_be_bytes().to_vec(),
                });
            }
            Match::InInterface {
                name,
                prefix,
                negate,
            } => {
                let op = if *negate {
                    v::NFT_CMP_NEQ
                } else {
                    v::NFT_CMP_EQ
                };
                let mut data = name.as_bytes().to_vec();
                if !*prefix {
                    data.resize(16, 0);
                }
                if data.len() > 16 {
                    return Err(format!("interface name {name} longer than 15 bytes"));
                }
                out.push(Expr::Meta {
                    key: v::NFT_META_IIFNAME,
                    dreg: r,
                });
                out.push(Expr::Cmp { sreg: r, op, data });
            }
            Match::AddrTypeLocal { dir, negate } => {
                let flags = match dir {
                    Direction::Src => v::NFTA_FIB_F_SADDR,
                    Direction::Dst => v::NFTA_FIB_F_DADDR,
                };
                let op = if *negate {
                    v::NFT_CMP_NEQ
                } else {
                    v::NFT_CMP_EQ
                };
                out.push(Expr::Fib { flags, dreg: r });
                out.push(Expr::Cmp {
                    sreg: r,
                    op,
                    data: RTN_LOCAL.to_ne_bytes().to_vec(),
                });
            }
            Match::CtState { states, negate } => {
                if states.as_slice() == [CtState::Dnat] {
                    bit_test(
                        Expr::Ct {
                            key: v::NFT_CT_STATUS,
                            dreg: r,
                        },
                        IPS_DST_NAT,
                        *negate,
                        &mut out,
                    );
                } else {
                    let mut bits = 0;
                    for s in states {
                        bits |= match s {
                            CtState::New => CT_NEW,
                            CtState::Established => CT_ESTABLISHED,
                            CtState::Related => CT_RELATED,
                            CtState::Invalid => CT_INVALID,
                            CtState::Dnat => {
                                return Err("ct status dnat mixed with ct states".into());
                            }
                        };
                    }
                    bit_test(
                        Expr::Ct {
                            key: v::NFT_CT_STATE,
                            dreg: r,
                        },
                        bits,
                        *negate,
                        &mut out,
                    );
                }
            }
            Match::Mark {
                value,
                mask,
                negate,
            } => {
                let op = if *negate {
                    v::NFT_CMP_NEQ
                } else {
                    v::NFT_CMP_EQ
                };
                out.push(Expr::Meta {
                    key: v::NFT_META_MARK,
                    dreg: r,
                });
                out.push(Expr::Bitwise {
                    sreg: r,
                    dreg: r,
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                out.push(Expr::Cmp {
                    sreg: r,
                    op,
                    data: value.to_ne_bytes().to_vec(),
                });
            }
            Match::Nfacct(name) => out.push(Expr::CounterRef { name: name.clone() }),
            Match::InSet { keys, set, negate } => {
                load_keys(f, keys, &mut out);
                out.push(Expr::Lookup {
                    set: set.clone(),
                    set_id: None,
                    sreg: r,
                    dreg: None,
                    invert: *negate,
                });
            }
            Match::AddrSet { dir, addrs, negate } => match addrs.as_slice() {
                [] => return Err("an empty address set".into()),
                [one] => addr_match(f, *dir, one, *negate, &mut out)?,
                many => {
                    let key = if f == IpFamily::V4 {
                        TYPE_IPADDR
                    } else {
                        TYPE_IP6ADDR
                    };
                    let mut udata = Udata::new();
                    udata.put_u32(udata::SET_KEYBYTEORDER, BYTEORDER_BIG);
                    anon.push(AnonSet {
                        name: "__set%d",
                        flags: v::NFT_SET_ANONYMOUS | v::NFT_SET_CONSTANT | v::NFT_SET_INTERVAL,
                        key: (key, addr_len(f)),
                        data: None,
                        elements: interval_elements(f, many)?,
                        udata,
                    });
                    let (x, _) = load(
                        f,
                        if *dir == Direction::Src {
                            Key::SrcAddr
                        } else {
                            Key::DstAddr
                        },
                        r,
                    );
                    out.push(x);
                    out.push(Expr::Lookup {
                        set: "__set%d".into(),
                        set_id: None,
                        sreg: r,
                        dreg: None,
                        invert: *negate,
                    });
                }
            },
            Match::SetMark { op, value } => set_mark_exprs(*op, *value, &mut out),
            Match::UpdateSet { keys, set } => {
                load_keys(f, keys, &mut out);
                out.push(Expr::DynsetUpdate {
                    set: set.clone(),
                    set_id: None,
                    sreg: r,
                });
            }
            Match::Probability { .. } => return Err("statistic probability".into()),
            Match::Recent { .. } => return Err("recent list".into()),
            Match::PhysDevIsIn { .. } => return Err("physdev match".into()),
            Match::Opaque(t) => return Err(format!("opaque statement {t}")),
        }
    }
    if let Some(vd) = &rule.verdict {
        verdict_exprs(f, vd, single, &mut anon, &mut out)?;
    }
    if out.is_empty() {
        return Err("empty rule".into());
    }
    Ok((anon, out))
}

fn simple_verdict(vd: &Verdict) -> Option<Data> {
    Some(match vd {
        Verdict::Jump(c) => chain_verdict(v::NFT_JUMP, c.as_str()),
        Verdict::Goto(c) => chain_verdict(v::NFT_GOTO, c.as_str()),
        Verdict::Return => Data::Verdict(VerdictData::Code(v::NFT_RETURN)),
        Verdict::Accept => Data::Verdict(VerdictData::Code(v::NF_ACCEPT)),
        Verdict::Drop => Data::Verdict(VerdictData::Code(v::NF_DROP)),
        _ => return None,
    })
}

fn port_bytes(p: u16) -> Vec<u8> {
    p.to_be_bytes().to_vec()
}

fn dnat_one(f: IpFamily, to: &SocketAddr, concat: bool, out: &mut Vec<Expr>) {
    let r = Reg::FIRST;
    let proto = if concat {
        r.after(addr_len(f) / 4)
    } else {
        r.after(4)
    };
    out.push(Expr::Immediate {
        dreg: r,
        data: Data::Value(ip_bytes(&to.ip())),
    });
    out.push(Expr::Immediate {
        dreg: proto,
        data: Data::Value(port_bytes(to.port())),
    });
    let flags = if concat {
        0
    } else {
        v::NF_NAT_RANGE_PROTO_SPECIFIED
    };
    out.push(Expr::Dnat {
        family: f,
        addr: r,
        proto,
        flags,
    });
}

fn verdict_exprs(
    f: IpFamily,
    vd: &Verdict,
    single: SingleDnat,
    anon: &mut Vec<AnonSet>,
    out: &mut Vec<Expr>,
) -> Result<(), String> {
    let r = Reg::FIRST;
    if let Some(d) = simple_verdict(vd) {
        out.push(Expr::Immediate {
            dreg: Reg::VERDICT,
            data: d,
        });
        return Ok(());
    }
    match vd {
        Verdict::Reject => {
            let code = if f == IpFamily::V4 {
                ICMP_PORT_UNREACH
            } else {
                ICMPV6_PORT_UNREACH
            };
            out.push(Expr::Reject {
                kind: v::NFT_REJECT_ICMP_UNREACH,
                code,
            });
        }
        Verdict::Dnat(to) => dnat_one(f, to, false, out),
        Verdict::Masquerade { random_fully } => out.push(Expr::Masq {
            flags: if *random_fully {
                v::NF_NAT_RANGE_PROTO_RANDOM_FULLY
            } else {
                0
            },
        }),
        Verdict::SetMark { op, value } => set_mark_exprs(*op, *value, out),
        Verdict::VerdictMap { keys, map } => {
            load_keys(f, keys, out);
            out.push(Expr::Lookup {
                set: map.clone(),
                set_id: None,
                sreg: r,
                dreg: Some(Reg::VERDICT),
                invert: false,
            });
        }
        Verdict::DnatRandom { to } => match to.as_slice() {
            [] => return Err("DNAT to no destination".into()),
            [one] => {
                let concat = single == SingleDnat::Concat && one.is_ipv4();
                dnat_one(f, one, concat, out);
            }
            many => {
                let alen = addr_len(f);
                let addr_type = if f == IpFamily::V4 {
                    TYPE_IPADDR
                } else {
                    TYPE_IP6ADDR
                };
                let elements = many
                    .iter()
                    .enumerate()
                    .map(|(i, sa)| {
                        let mut val = ip_bytes(&sa.ip());
                        let mut port = port_bytes(sa.port());
                        port.resize(4, 0);
                        val.extend(port);
                        (
                            (i as u32).to_ne_bytes().to_vec(),
                            Some(Data::Value(val)),
                            false,
                        )
                    })
                    .collect();
                anon.push(numgen_map(
                    (addr_type << TYPE_BITS | TYPE_INET_SERVICE, alen + 4),
                    elements,
                    BYTEORDER_INVALID,
                    None,
                ));
                out.push(Expr::Numgen {
                    dreg: r,
                    modulus: many.len() as u32,
                });
                out.push(Expr::Lookup {
                    set: "__map%d".into(),
                    set_id: None,
                    sreg: r,
                    dreg: Some(r),
                    invert: false,
                });
                out.push(Expr::Dnat {
                    family: f,
                    addr: r,
                    proto: r.after(alen / 4),
                    flags: 0,
                });
            }
        },
        Verdict::RandomVerdictMap { to } => {
            if to.is_empty() {
                return Err("numgen verdict map without targets".into());
            }
            let elements = to
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        (i as u32).to_ne_bytes().to_vec(),
                        Some(chain_verdict(v::NFT_GOTO, c.as_str())),
                        false,
                    )
                })
                .collect();
            anon.push(numgen_map(
                (v::NFT_DATA_VERDICT, 0),
                elements,
                BYTEORDER_INVALID,
                Some(TYPE_VERDICT),
            ));
            out.push(Expr::Numgen {
                dreg: r,
                modulus: to.len() as u32,
            });
            out.push(Expr::Lookup {
                set: "__map%d".into(),
                set_id: None,
                sreg: r,
                dreg: Some(Reg::VERDICT),
                invert: false,
            });
        }
        Verdict::Opaque(t) => return Err(format!("opaque statement {t}")),
        Verdict::Jump(_) | Verdict::Goto(_) | Verdict::Return | Verdict::Accept | Verdict::Drop => {
        }
    }
    Ok(())
}

/// The anonymous map of `numgen random mod N map { 0 : ..., ... }`.
fn numgen_map(
    data: (u32, u32),
    elements: Vec<AnonElement>,
    data_order: u32,
    data_typeof: Option<u32>,
) -> AnonSet {
    let mut udata = Udata::new();
    udata.put_u32(udata::SET_KEYBYTEORDER, BYTEORDER_HOST);
    udata.put_u32(udata::SET_DATABYTEORDER, data_order);
    if let Some(t) = data_typeof {
        udata.put(udata::SET_DATA_TYPEOF, &typeof_blob(t));
    }
    udata.put_u32(6, 0);
    AnonSet {
        name: "__map%d",
        flags: v::NFT_SET_ANONYMOUS | v::NFT_SET_CONSTANT | v::NFT_SET_MAP,
        key: (TYPE_INTEGER, 4),
        data: Some(data),
        elements,
        udata,
    }
}

/// The `typeof` record nft 1.0.6 stores for a concatenated key or a
/// verdict value: a nested record of the type number and an empty one.
fn typeof_blob(t: u32) -> Vec<u8> {
    let mut b = vec![0, 4];
    b.extend_from_slice(&t.to_ne_bytes());
    b.extend_from_slice(&[1, 0]);
    b
}

/// One field of a set type: nft's type number, length and byte order.
fn field(name: &str) -> Option<(u32, u32, u32)> {
    Some(match name {
        "ipv4_addr" => (TYPE_IPADDR, 4, BYTEORDER_BIG),
        "ipv6_addr" => (TYPE_IP6ADDR, 16, BYTEORDER_BIG),
        "inet_proto" => (TYPE_INET_PROTOCOL, 1, BYTEORDER_BIG),
        "inet_service" => (TYPE_INET_SERVICE, 2, BYTEORDER_BIG),
        "mark" => (TYPE_MARK, 4, BYTEORDER_HOST),
        _ => return None,
    })
}

/// Key type, length, byte order and typeof record of a set type spec
/// (`ipv4_addr . inet_proto . inet_service`).
fn key_spec(spec: &str) -> Result<KeySpec, String> {
    let parts: Vec<&str> = spec.split(" . ").map(str::trim).collect();
    let mut t = 0u32;
    let mut len = 0u32;
    let mut order = BYTEORDER_INVALID;
    let mut last = 0;
    for p in &parts {
        let (ty, l, o) = field(p).ok_or_else(|| format!("set type {p}"))?;
        t = (t << TYPE_BITS) | ty;
        len += l.div_ceil(4) * 4;
        order = o;
        last = ty;
    }
    if parts.len() == 1 {
        let (_, l, _) = field(parts[0]).ok_or_else(|| format!("set type {}", parts[0]))?;
        return Ok((t, l, order, None));
    }
    Ok((t, len, BYTEORDER_INVALID, Some(typeof_blob(last))))
}

fn key_bytes(k: &[KeyValue]) -> Vec<u8> {
    let single = k.len() == 1;
    let mut out = Vec::new();
    for kv in k {
        let mut b = match kv {
            KeyValue::Ip(ip) => ip_bytes(ip),
            KeyValue::Net(n) => ip_bytes(&n.network()),
            KeyValue::Proto(p) => vec![proto_byte(*p)],
            KeyValue::Port(p) => port_bytes(*p),
        };
        if !single {
            b.resize(b.len().div_ceil(4) * 4, 0);
        }
        out.extend(b);
    }
    out
}

fn set_flags(flags: &[String]) -> Result<u32, String> {
    let mut f = 0;
    for x in flags {
        f |= match x.as_str() {
            "interval" => v::NFT_SET_INTERVAL,
            "timeout" => v::NFT_SET_TIMEOUT,
            "dynamic" => v::NFT_SET_EVAL,
            "constant" => v::NFT_SET_CONSTANT,
            other => return Err(format!("set flag {other}")),
        };
    }
    if f & v::NFT_SET_INTERVAL != 0 {
        return Err("named interval sets".into());
    }
    Ok(f)
}

fn hooknum(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

/// The encoded messages of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// For each message, the index of the [`Op`] it comes from (a rule with
    /// an anonymous set sends several).
    pub op_of_message: Vec<usize>,
}

/// Encodes transactions. Holds the batch's set ids (nft numbers the sets
/// it creates in a batch, and names them by id in the rules and elements
/// of the same batch).
#[derive(Debug, Clone)]
pub struct Encoder {
    single: SingleDnat,
    next_set_id: u32,
    set_ids: std::collections::HashMap<String, u32>,
    next_anonymous: Option<u64>,
}

impl Encoder {
    /// A new encoder; `single` must be the spelling the text printer would
    /// use (both forms load, but nft encodes them differently).
    pub fn new(single: SingleDnat) -> Self {
        Self {
            single,
            next_set_id: 1,
            set_ids: Default::default(),
            next_anonymous: None,
        }
    }

    /// Names anonymous sets `__set<N>` / `__map<N>` (N hexadecimal, from
    /// `first` on) instead of letting the kernel number them: the kernel
    /// finds a free `%d` by scanning every set of the table, once per
    /// anonymous set, which makes a batch of 10,000 of them quadratic.
    /// The names must not be in use in the table: the caller keeps
    /// [`Encoder::next_anonymous`] for its next batch.
    ///
    /// ```
    /// use kproxy_core::ir::{Rule, Verdict};
    /// use kproxy_core::model::IpFamily;
    /// use kproxy_nft::netlink::Encoder;
    /// use kproxy_nft::tx::{Op, Transaction};
    /// use kproxy_nft::SingleDnat;
    /// let mut tx = Transaction::new(IpFamily::V4, "t");
    /// let to = vec!["c0".into(), "c1".into()];
    /// tx.push(Op::AddRule("c".into(), Rule::new().verdict(Verdict::RandomVerdictMap { to })));
    /// let mut enc = Encoder::new(SingleDnat::Concat).naming_anonymous_sets(0x2a);
    /// let e = enc.encode(&tx).unwrap();
    /// assert_eq!(e.messages.len(), 3, "set, elements, rule");
    /// assert_eq!(enc.next_anonymous(), Some(0x2b));
    /// ```
    pub fn naming_anonymous_sets(mut self, first: u64) -> Self {
        self.next_anonymous = Some(first);
        self
    }

    /// The number the next anonymous set would get (see
    /// [`Encoder::naming_anonymous_sets`]).
    pub fn next_anonymous(&self) -> Option<u64> {
        self.next_anonymous
    }

    fn new_set_id(&mut self) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        id
    }

    /// The messages of `tx`, or what the encoder cannot express (the
    /// caller then falls back to `nft -f`).
    pub fn encode(&mut self, tx: &Transaction) -> Result<Encoded, NftError> {
        let mut out = Encoded {
            messages: Vec::new(),
            op_of_message: Vec::new(),
        };
        for (i, op) in tx.ops.iter().enumerate() {
            let before = out.messages.len();
            self.encode_op(tx, op, &mut out.messages)
                .map_err(|what| NftError::Unsupported { what })?;
            out.op_of_message
                .extend(std::iter::repeat_n(i, out.messages.len() - before));
        }
        Ok(out)
    }

    fn encode_op(
        &mut self,
        tx: &Transaction,
        op: &Op,
        out: &mut Vec<Message>,
    ) -> Result<(), String> {
        let fam = nfproto(tx.family);
        let t = tx.table.as_str();
        let create = nl::NLM_F_CREATE;
        let msg =
            |kind: u16, flags: u16, b: AttrBuf| Message::nft(kind, flags, fam, b.into_bytes());
        match op {
            Op::AddTable { comment } | Op::AddDormantTable { comment } => {
                // NFT_TABLE_F_DORMANT; 0 wakes a dormant table.
                let flags = u32::from(matches!(op, Op::AddDormantTable { .. }));
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_TABLE_NAME, t);
                b.put_u32_be(a::NFTA_TABLE_FLAGS, flags);
                if let Some(c) = comment {
                    b.put(
                        a::NFTA_TABLE_USERDATA,
                        comment_udata(udata::TABLE_COMMENT, c)?.as_bytes(),
                    );
                }
                out.push(msg(m::NFT_MSG_NEWTABLE, create, b));
            }
            Op::DeleteTable => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_TABLE_NAME, t);
                out.push(msg(m::NFT_MSG_DELTABLE, 0, b));
            }
            Op::DeleteElement(s, el) => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_SET_ELEM_LIST_TABLE, t);
                b.put_str(a::NFTA_SET_ELEM_LIST_SET, s);
                let key = key_bytes(&el.key);
                b.nest(a::NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                    l.nest(a::NFTA_LIST_ELEM, |x| {
                        element_attrs(x, &key, None, false, None)
                    });
                });
                out.push(msg(m::NFT_MSG_DELSETELEM, 0, b));
            }
            Op::AddChain(c) => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_CHAIN_TABLE, t);
                b.put_str(a::NFTA_CHAIN_NAME, c.name.as_str());
                match &c.kind {
                    ChainKind::Regular => {}
                    ChainKind::Base {
                        chain_type,
                        hook,
                        priority,
                    } => {
                        let ty = match chain_type {
                            BaseChainType::Filter => "filter",
                            BaseChainType::Nat => "nat",
                        };
                        b.put_str(a::NFTA_CHAIN_TYPE, ty);
                        b.nest(a::NFTA_CHAIN_HOOK, |h| {
                            h.put_u32_be(a::NFTA_HOOK_HOOKNUM, hooknum(*hook));
                            h.put(a::NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
                        });
                    }
                    ChainKind::Builtin(_) => return Err("an iptables built-in chain".into()),
                }
                if let Some(cm) = &c.comment {
                    b.put(
                        a::NFTA_CHAIN_USERDATA,
                        comment_udata(udata::CHAIN_COMMENT, cm)?.as_bytes(),
                    );
                }
                out.push(msg(m::NFT_MSG_NEWCHAIN, create, b));
            }
            Op::FlushChain(c) => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_RULE_TABLE, t);
                b.put_str(a::NFTA_RULE_CHAIN, c.as_str());
                out.push(msg(m::NFT_MSG_DELRULE, 0, b));
            }
            Op::DeleteChain(c) => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_CHAIN_TABLE, t);
                b.put_str(a::NFTA_CHAIN_NAME, c.as_str());
                out.push(msg(m::NFT_MSG_DELCHAIN, 0, b));
            }
            Op::AddRule(chain, rule) => {
                let (anons, mut exprs) = rule_exprs(tx.family, rule, self.single)?;
                let mut ids = Vec::new();
                for s in anons {
                    let id = self.new_set_id();
                    let name = self.anon_name(s.name);
                    self.anon_set(t, fam, &s, &name, id, out);
                    ids.push((s.name, name, id));
                }
                for x in &mut exprs {
                    match x {
                        Expr::Lookup { set, set_id, .. }
                        | Expr::DynsetUpdate { set, set_id, .. } => {
                            if let Some(pos) = ids.iter().position(|(n, _, _)| *n == set.as_str()) {
                                // Each anonymous set is used by the expression that follows it.
                                let (_, name, id) = ids.remove(pos);
                                *set = name;
                                *set_id = Some(id);
                            } else {
                                *set_id = self.set_ids.get(set.as_str()).copied();
                            }
                        }
                        _ => {}
                    }
                }
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_RULE_TABLE, t);
                b.put_str(a::NFTA_RULE_CHAIN, chain.as_str());
                b.nest(a::NFTA_RULE_EXPRESSIONS, |l| {
                    for x in &exprs {
                        x.encode(l);
                    }
                });
                if let Some(c) = rule.comment() {
                    b.put(
                        a::NFTA_RULE_USERDATA,
                        comment_udata(udata::RULE_COMMENT, c)?.as_bytes(),
                    );
                }
                out.push(msg(m::NFT_MSG_NEWRULE, create | nl::NLM_F_APPEND, b));
            }
            Op::AddSet(s) => out.push(self.named_set(t, fam, s, None)?),
            Op::AddMap(mp) => {
                let s = Set {
                    name: mp.name.clone(),
                    type_spec: mp.type_spec.clone(),
                    flags: mp.flags.clone(),
                    timeout: None,
                    comment: mp.comment.clone(),
                    elements: Vec::new(),
                };
                if mp.value_type != "verdict" {
                    return Err(format!("map value type {}", mp.value_type));
                }
                out.push(self.named_set(t, fam, &s, Some(()))?);
            }
            Op::FlushSet(s) => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_SET_ELEM_LIST_TABLE, t);
                b.put_str(a::NFTA_SET_ELEM_LIST_SET, s);
                out.push(msg(m::NFT_MSG_DELSETELEM, 0, b));
            }
            Op::DeleteSet(s) | Op::DeleteMap(s) => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_SET_TABLE, t);
                b.put_str(a::NFTA_SET_NAME, s);
                out.push(msg(m::NFT_MSG_DELSET, 0, b));
            }
            Op::AddSetElement(s, el) => out.push(self.element(t, fam, s, el, None)?),
            Op::AddMapElement(s, el, MapValue::Verdict(vd)) => {
                let d = simple_verdict(vd)
                    .ok_or_else(|| "a map value that is not a verdict".to_string())?;
                out.push(self.element(t, fam, s, el, Some(d))?);
            }
            Op::AddCounter(c) => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_OBJ_TABLE, t);
                b.put_str(a::NFTA_OBJ_NAME, &c.name);
                b.put_u32_be(a::NFTA_OBJ_TYPE, v::NFT_OBJECT_COUNTER);
                b.nest(a::NFTA_OBJ_DATA, |d| {
                    d.put_u64_be(e::NFTA_COUNTER_BYTES, 0);
                    d.put_u64_be(e::NFTA_COUNTER_PACKETS, 0);
                });
                out.push(msg(m::NFT_MSG_NEWOBJ, create, b));
            }
            Op::DeleteCounter(c) => {
                let mut b = AttrBuf::new();
                b.put_str(a::NFTA_OBJ_TABLE, t);
                b.put_str(a::NFTA_OBJ_NAME, c);
                b.put_u32_be(a::NFTA_OBJ_TYPE, v::NFT_OBJECT_COUNTER);
                out.push(msg(m::NFT_MSG_DELOBJ, 0, b));
            }
        }
        Ok(())
    }

    fn named_set(
        &mut self,
        t: &str,
        fam: u8,
        s: &Set,
        verdict_map: Option<()>,
    ) -> Result<Message, String> {
        let (ktype, klen, korder, ktypeof) = key_spec(&s.type_spec)?;
        let mut flags = set_flags(&s.flags)?;
        if verdict_map.is_some() {
            flags |= v::NFT_SET_MAP;
        }
        if s.timeout.is_some() {
            flags |= v::NFT_SET_TIMEOUT;
        }
        let id = self.new_set_id();
        self.set_ids.insert(s.name.clone(), id);
        let mut b = AttrBuf::new();
        b.put_str(a::NFTA_SET_TABLE, t);
        b.put_str(a::NFTA_SET_NAME, &s.name);
        b.put_u32_be(a::NFTA_SET_FLAGS, flags);
        b.put_u32_be(a::NFTA_SET_KEY_TYPE, ktype);
        b.put_u32_be(a::NFTA_SET_KEY_LEN, klen);
        if verdict_map.is_some() {
            b.put_u32_be(a::NFTA_SET_DATA_TYPE, v::NFT_DATA_VERDICT);
            b.put_u32_be(a::NFTA_SET_DATA_LEN, 0);
        }
        b.put_u32_be(a::NFTA_SET_ID, id);
        if let Some(secs) = s.timeout {
            b.put_u64_be(a::NFTA_SET_TIMEOUT, u64::from(secs) * 1000);
        }
        let mut u = Udata::new();
        u.put_u32(udata::SET_KEYBYTEORDER, korder);
        if verdict_map.is_some() {
            u.put_u32(udata::SET_DATABYTEORDER, BYTEORDER_INVALID);
        }
        if let Some(blob) = ktypeof {
            u.put(udata::SET_KEY_TYPEOF, &blob);
        }
        if verdict_map.is_some() {
            u.put_u32(6, 0);
        }
        if let Some(c) = &s.comment
            && !u.put_str(udata::SET_COMMENT, c)
        {
            return Err("a set comment longer than 254 bytes".into());
        }
        b.put(a::NFTA_SET_USERDATA, u.as_bytes());
        Ok(Message::nft(
            m::NFT_MSG_NEWSET,
            nl::NLM_F_CREATE,
            fam,
            b.into_bytes(),
        ))
    }

    fn element(
        &self,
        t: &str,
        fam: u8,
        set: &str,
        el: &Element,
        data: Option<Data>,
    ) -> Result<Message, String> {
        let mut b = AttrBuf::new();
        b.put_str(a::NFTA_SET_ELEM_LIST_TABLE, t);
        b.put_str(a::NFTA_SET_ELEM_LIST_SET, set);
        if let Some(id) = self.set_ids.get(set) {
            b.put_u32_be(a::NFTA_SET_ELEM_LIST_SET_ID, *id);
        }
        let ud = match &el.comment {
            Some(c) => Some(comment_udata(udata::SET_ELEM_COMMENT, c)?),
            None => None,
        };
        let key = key_bytes(&el.key);
        b.nest(a::NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
            l.nest(a::NFTA_LIST_ELEM, |x| {
                element_attrs(x, &key, data.as_ref(), false, ud.as_ref())
            });
        });
        Ok(Message::nft(
            m::NFT_MSG_NEWSETELEM,
            nl::NLM_F_CREATE,
            fam,
            b.into_bytes(),
        ))
    }

    /// The name an anonymous set is sent with: nft's template (`__map%d`,
    /// the kernel picks the number) or, with
    /// [`Encoder::naming_anonymous_sets`], one of ours.
    fn anon_name(&mut self, template: &str) -> String {
        match self.next_anonymous.as_mut() {
            Some(n) => {
                let name = format!("{}{:x}", template.trim_end_matches("%d"), *n);
                *n = n.wrapping_add(1);
                name
            }
            None => template.to_string(),
        }
    }

    fn anon_set(&self, t: &str, fam: u8, s: &AnonSet, name: &str, id: u32, out: &mut Vec<Message>) {
        let mut b = AttrBuf::new();
        b.put_str(a::NFTA_SET_TABLE, t);
        b.put_str(a::NFTA_SET_NAME, name);
        b.put_u32_be(a::NFTA_SET_FLAGS, s.flags);
        b.put_u32_be(a::NFTA_SET_KEY_TYPE, s.key.0);
        b.put_u32_be(a::NFTA_SET_KEY_LEN, s.key.1);
        if let Some((dt, dl)) = s.data {
            b.put_u32_be(a::NFTA_SET_DATA_TYPE, dt);
            b.put_u32_be(a::NFTA_SET_DATA_LEN, dl);
        }
        b.put_u32_be(a::NFTA_SET_ID, id);
        b.nest(a::NFTA_SET_DESC, |d| {
            d.put_u32_be(a::NFTA_SET_DESC_SIZE, s.elements.len() as u32);
        });
        // nft's records, then kproxy's digest (see [`crate::anon`]).
        let mut udata = s.udata.clone();
        udata.put(crate::anon::ANON_DIGEST_UDATA, &s.digest());
        b.put(a::NFTA_SET_USERDATA, udata.as_bytes());
        out.push(Message::nft(
            m::NFT_MSG_NEWSET,
            nl::NLM_F_CREATE,
            fam,
            b.into_bytes(),
        ));
        // The elements name their set by the batch's id alone: the kernel
        // then finds it among the sets this batch creates, last first,
        // instead of comparing the name with every set of the table (at
        // 10k Services, tens of thousands of sets for each anonymous set).
        let mut b = AttrBuf::new();
        b.put_str(a::NFTA_SET_ELEM_LIST_TABLE, t);
        b.put_u32_be(a::NFTA_SET_ELEM_LIST_SET_ID, id);
        b.nest(a::NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
            for (key, data, end) in &s.elements {
                l.nest(a::NFTA_LIST_ELEM, |x| {
                    element_attrs(x, key, data.as_ref(), *end, None)
                });
            }
        });
        out.push(Message::nft(
            m::NFT_MSG_NEWSETELEM,
            nl::NLM_F_CREATE,
            fam,
            b.into_bytes(),
        ));
    }
}

fn element_attrs(x: &mut AttrBuf, key: &[u8], data: Option<&Data>, end: bool, ud: Option<&Udata>) {
    if end {
        x.put_u32_be(a::NFTA_SET_ELEM_FLAGS, v::NFT_SET_ELEM_INTERVAL_END);
    }
    put_value(x, a::NFTA_SET_ELEM_KEY, key);
    match data {
        Some(Data::Value(b)) => put_value(x, a::NFTA_SET_ELEM_DATA, b),
        Some(Data::Verdict(vd)) => put_verdict(x, a::NFTA_SET_ELEM_DATA, vd),
        None => {}
    }
    if let Some(u) = ud {
        x.put(a::NFTA_SET_ELEM_USERDATA, u.as_bytes());
    }
}

fn comment_udata(kind: u8, c: &str) -> Result<Udata, String> {
    let mut u = Udata::new();
    if u.put_str(kind, c) {
        Ok(u)
    } else {
        Err("a comment longer than 254 bytes".into())
    }
}
