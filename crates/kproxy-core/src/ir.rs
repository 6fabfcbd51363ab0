//! The rule IR: what a backend layout produces and a printer prints.
//!
//! A [`Ruleset`] holds [`Table`]s; a table holds [`Chain`]s (regular or
//! attached to a hook), and, for nftables, [`Set`]s and [`Map`]s. A chain
//! holds [`Rule`]s: an ordered list of typed [`Match`]es and an optional
//! [`Verdict`]. The order of matches is kept, because it is part of the
//! exact text kube-proxy writes, and the typed form is what the packet
//! tracer and the diff evaluate. The same IR serves both backends and every
//! version profile.
//!
//! ```
//! use kproxy_core::ir::*;
//! use kproxy_core::names::ChainName;
//! let rule = Rule::new()
//!     .with(Match::Comment("kubernetes service portals".into()))
//!     .verdict(Verdict::Jump(ChainName::new("KUBE-SERVICES")));
//! assert_eq!(rule.jump_target().map(|c| c.as_str()), Some("KUBE-SERVICES"));
//! ```

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::model::{IpFamily, Protocol};
use crate::names::ChainName;

/// A whole ruleset for one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Tables, in the order they are written.
    pub tables: Vec<Table>,
}

impl Ruleset {
    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
    /// The table named `name`, mutably.
    pub fn table_mut(&mut self, name: &str) -> Option<&mut Table> {
        self.tables.iter_mut().find(|t| t.name == name)
    }
}

/// The family a table belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFamily {
    /// An iptables table (`iptables` for IPv4, `ip6tables` for IPv6).
    Iptables(IpFamily),
    /// An nftables table of family `ip` or `ip6`.
    Nft(IpFamily),
}

/// A table (`filter`, `nat`, or nftables `kube-proxy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Name.
    pub name: String,
    /// Family.
    pub family: TableFamily,
    /// A comment (nftables).
    pub comment: Option<String>,
    /// Chains, in declaration order.
    pub chains: Vec<Chain>,
    /// Sets (nftables).
    pub sets: Vec<Set>,
    /// Maps (nftables).
    pub maps: Vec<Map>,
    /// Named counters (nftables).
    pub counters: Vec<Counter>,
}

impl Table {
    /// An empty table.
    pub fn new(name: impl Into<String>, family: TableFamily) -> Self {
        Self {
            name: name.into(),
            family,
            comment: None,
            chains: Vec::new(),
            sets: Vec::new(),
            maps: Vec::new(),
            counters: Vec::new(),
        }
    }
    /// The chain named `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name.as_str() == name)
    }
    /// The chain named `name`, mutably.
    pub fn chain_mut(&mut self, name: &str) -> Option<&mut Chain> {
        self.chains.iter_mut().find(|c| c.name.as_str() == name)
    }
    /// The set named `name`.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
    /// The map named `name`.
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps.iter().find(|m| m.name == name)
    }
}

/// A netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// prerouting
    Prerouting,
    /// input
    Input,
    /// forward
    Forward,
    /// output
    Output,
    /// postrouting
    Postrouting,
}

impl Hook {
    /// The nft spelling (`prerouting`).
    pub fn as_nft(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
    /// The iptables built-in chain (`PREROUTING`).
    pub fn as_iptables(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }
}

/// The kind of an nftables base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseChainType {
    /// `type filter`
    Filter,
    /// `type nat`
    Nat,
}

/// What kind of chain this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainKind {
    /// A regular chain, reached only by jumps.
    Regular,
    /// An iptables built-in chain (`INPUT`, ...): never declared or
    /// flushed; kube-proxy only adds its jump rules at the top.
    Builtin(Hook),
    /// An nftables base chain.
    Base {
        /// The chain type.
        chain_type: BaseChainType,
        /// The hook.
        hook: Hook,
        /// The priority (numeric, as nft 1.0 accepts everywhere).
        priority: i32,
    },
}

/// A chain and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Name.
    pub name: ChainName,
    /// Kind.
    pub kind: ChainKind,
    /// A comment (nftables).
    pub comment: Option<String>,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

impl Chain {
    /// An empty regular chain.
    pub fn new(name: impl Into<ChainName>) -> Self {
        Self {
            name: name.into(),
            kind: ChainKind::Regular,
            comment: None,
            rules: Vec::new(),
        }
    }
    /// An empty built-in chain (iptables).
    pub fn builtin(hook: Hook) -> Self {
        Self {
            name: ChainName::new(hook.as_iptables()),
            kind: ChainKind::Builtin(hook),
            comment: None,
            rules: Vec::new(),
        }
    }
    /// Appends a rule.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Rule {
    /// Matches, in the order they are written.
    pub matches: Vec<Match>,
    /// The verdict or target; `None` for a rule that only counts/comments.
    pub verdict: Option<Verdict>,
}

impl Rule {
    /// Whether the rule names the set or map `container` (`@container` in
    /// a match, an `update`, or a verdict map).
    pub fn references(&self, container: &str) -> bool {
        self.matches.iter().any(|m| match m {
            Match::InSet { set, .. } | Match::UpdateSet { set, .. } => set == container,
            _ => false,
        }) || matches!(&self.verdict, Some(Verdict::VerdictMap { map, .. }) if map == container)
    }

    /// An empty rule (matches everything, does nothing).
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a match.
    pub fn with(mut self, m: Match) -> Self {
        self.matches.push(m);
        self
    }
    /// Appends several matches.
    pub fn with_all(mut self, ms: impl IntoIterator<Item = Match>) -> Self {
        self.matches.extend(ms);
        self
    }
    /// Sets the verdict.
    pub fn verdict(mut self, v: Verdict) -> Self {
        self.verdict = Some(v);
        self
    }
    /// The chain this rule jumps or goes to, if any.
    pub fn jump_target(&self) -> Option<&ChainName> {
        match &self.verdict {
            Some(Verdict::Jump(c)) | Some(Verdict::Goto(c)) => Some(c),
            _ => None,
        }
    }
    /// The rule's comment, if any.
    pub fn comment(&self) -> Option<&str> {
        self.matches.iter().find_map(|m| match m {
            Match::Comment(c) => Some(c.as_str()),
            _ => None,
        })
    }
}

/// An address match: a single address or a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrMatch {
    /// One address (printed without prefix length).
    Ip(IpAddr),
    /// A network.
    Net(IpNet),
}

impl AddrMatch {
    /// Whether `ip` matches.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match self {
            AddrMatch::Ip(a) => a == ip,
            AddrMatch::Net(n) => n.contains(ip),
        }
    }
}

/// Source or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Source.
    Src,
    /// Destination.
    Dst,
}

/// Conntrack states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    /// NEW
    New,
    /// ESTABLISHED
    Established,
    /// RELATED
    Related,
    /// INVALID
    Invalid,
    /// DNAT (a conntrack status, matched with `--ctstate` in iptables)
    Dnat,
}

impl CtState {
    /// Upper-case iptables spelling.
    pub fn as_iptables(self) -> &'static str {
        match self {
            CtState::New => "NEW",
            CtState::Established => "ESTABLISHED",
            CtState::Related => "RELATED",
            CtState::Invalid => "INVALID",
            CtState::Dnat => "DNAT",
        }
    }
}

/// The operation of the `recent` match (ClientIP affinity in iptables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecentOp {
    /// `--set`: record the source address.
    Set,
    /// `--rcheck --seconds N --reap`: seen within N seconds.
    Check {
        /// Timeout.
        seconds: u32,
        /// Reap old entries.
        reap: bool,
    },
}

/// A key of an nftables set/map lookup or a concatenation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `ip saddr` / `ip6 saddr`.
    SrcAddr,
    /// `ip daddr` / `ip6 daddr`.
    DstAddr,
    /// `meta l4proto`.
    L4Proto,
    /// `th dport`.
    DstPort,
}

/// A typed match. The variants cover kube-proxy's iptables and nftables
/// layouts; a printer that meets a variant its syntax cannot express
/// reports an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// `-m comment --comment TEXT` / `comment "TEXT"`.
    Comment(String),
    /// `-m PROTO -p PROTO` / `meta l4proto PROTO`.
    Protocol(Protocol),
    /// `[!] -s ADDR` / `[!] -d ADDR`.
    Addr {
        /// Source or destination.
        dir: Direction,
        /// The address or network.
        addr: AddrMatch,
        /// Negated.
        negate: bool,
    },
    /// `--dport PORT` (after a [`Match::Protocol`]).
    DstPort(u16),
    /// `[!] -i NAME[+]` / `iifname`.
    InInterface {
        /// Name or prefix.
        name: String,
        /// A prefix (`+` in iptables, `*` in nft).
        prefix: bool,
        /// Negated.
        negate: bool,
    },
    /// `-m physdev [!] --physdev-is-in`: the packet came in through a bridge
    /// port (kube-proxy 1.5's "not from a container" test for external IPs).
    PhysDevIsIn {
        /// Negated.
        negate: bool,
    },
    /// `-m addrtype [!] --src-type|--dst-type LOCAL` / `fib ... type local`.
    AddrTypeLocal {
        /// Source or destination.
        dir: Direction,
        /// Negated.
        negate: bool,
    },
    /// `-m conntrack [!] --ctstate S1,S2`.
    CtState {
        /// States (any of).
        states: Vec<CtState>,
        /// Negated.
        negate: bool,
    },
    /// `-m mark [!] --mark VALUE/MASK`.
    Mark {
        /// Value.
        value: u32,
        /// Mask.
        mask: u32,
        /// Negated.
        negate: bool,
    },
    /// `-m statistic --mode random --probability 1/N`.
    Probability {
        /// N: the rule matches one packet in N (printed as 1/N).
        one_in: u32,
    },
    /// `-m recent --name NAME ...`.
    Recent {
        /// The list name.
        name: String,
        /// The operation.
        op: RecentOp,
    },
    /// `-m nfacct --nfacct-name NAME` / nft named counter.
    Nfacct(String),
    /// nft: `KEY[ . KEY] [!]= @SET`.
    InSet {
        /// Keys (concatenated).
        keys: Vec<Key>,
        /// The set.
        set: String,
        /// Negated.
        negate: bool,
    },
    /// nft: `ip saddr|daddr [!=] { ADDR, ... }` (an anonymous set).
    AddrSet {
        /// Source or destination.
        dir: Direction,
        /// The members.
        addrs: Vec<AddrMatch>,
        /// Negated (matches addresses in none of the members).
        negate: bool,
    },
    /// nft statement `mark set mark or|xor V`, when another statement
    /// follows it in the same rule (not terminal; see [`Verdict::SetMark`]
    /// for a rule that ends with it).
    SetMark {
        /// Operation.
        op: MarkOp,
        /// Value.
        value: u32,
    },
    /// nft statement `update @SET { KEY[ . KEY] }`: records the packet's
    /// keys in a dynamic set (ClientIP affinity); always continues.
    UpdateSet {
        /// Keys (concatenated).
        keys: Vec<Key>,
        /// The set.
        set: String,
    },
    /// A match kproxy does not model, kept verbatim from a dump of a real
    /// node (iptables words such as `-m multiport --dports 1,2`, or an nft
    /// JSON statement). The tracer cannot evaluate it: a packet that
    /// reaches it ends as [`crate::trace::OutcomeKind::Unknown`].
    Opaque(String),
}

/// How a mark is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkOp {
    /// `--or-mark`.
    Or,
    /// `--xor-mark`.
    Xor,
}

/// A verdict or target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `-j CHAIN` / `jump CHAIN`.
    Jump(ChainName),
    /// `goto CHAIN` (nftables).
    Goto(ChainName),
    /// `-j RETURN` / `return`.
    Return,
    /// ACCEPT.
    Accept,
    /// DROP.
    Drop,
    /// REJECT (ICMP port unreachable / TCP reset as the kernel chooses).
    Reject,
    /// `-j DNAT --to-destination ADDR`.
    Dnat(SocketAddr),
    /// `-j MASQUERADE [--random-fully]`.
    Masquerade {
        /// `--random-fully`.
        random_fully: bool,
    },
    /// `-j MARK --or-mark V` / `--xor-mark V`.
    SetMark {
        /// Operation.
        op: MarkOp,
        /// Value.
        value: u32,
    },
    /// nft: `KEY vmap @MAP`.
    VerdictMap {
        /// Keys (concatenated).
        keys: Vec<Key>,
        /// The map.
        map: String,
    },
    /// nft: `dnat to numgen random mod N map { ... }` and friends; with one
    /// destination, a plain DNAT to it (kube-proxy writes no numgen then).
    DnatRandom {
        /// The destinations, chosen uniformly.
        to: Vec<SocketAddr>,
    },
    /// nft: `numgen random mod N vmap { 0 : goto C0, ... }`.
    RandomVerdictMap {
        /// The chains, chosen uniformly.
        to: Vec<ChainName>,
    },
    /// A target or verdict kproxy does not model, kept verbatim from a dump
    /// (`-j LOG --log-prefix x`, an nft JSON statement). The tracer cannot
    /// evaluate it (see [`Match::Opaque`]).
    Opaque(String),
}

/// An nftables set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Name.
    pub name: String,
    /// Element type (nft spelling, e.g. `ipv4_addr . inet_proto . inet_service`).
    pub type_spec: String,
    /// Flags (e.g. `interval`, `timeout`, `dynamic`).
    pub flags: Vec<String>,
    /// Timeout in seconds.
    pub timeout: Option<u32>,
    /// Comment.
    pub comment: Option<String>,
    /// Elements (each a concatenation).
    pub elements: Vec<Element>,
}

/// An nftables named counter (`add counter ... NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Name.
    pub name: String,
}

/// An nftables map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    /// Name.
    pub name: String,
    /// Key type.
    pub type_spec: String,
    /// Value type (`verdict` for verdict maps).
    pub value_type: String,
    /// Flags.
    pub flags: Vec<String>,
    /// Comment.
    pub comment: Option<String>,
    /// Elements with their values.
    pub elements: Vec<(Element, MapValue)>,
}

/// One value of a concatenated key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    /// An address.
    Ip(IpAddr),
    /// A network (interval sets).
    Net(IpNet),
    /// A protocol.
    Proto(Protocol),
    /// A port.
    Port(u16),
}

/// A set or map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// The concatenated key.
    pub key: Vec<KeyValue>,
    /// Comment.
    pub comment: Option<String>,
}

/// A map value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapValue {
    /// A verdict (`goto C`, `jump C`, `drop`, ...).
    Verdict(Verdict),
}

/// The matches of kube-proxy's local traffic detector: traffic from this
/// node's pods (`local`) or from anywhere else (`!local`). Empty without a
/// detector. Both backends spell these the same way in the IR.
///
/// ```
/// use kproxy_core::ir::{local_traffic_matches, Match};
/// use kproxy_core::model::LocalDetector;
/// let det = LocalDetector::InterfaceNamePrefix("veth".into());
/// assert!(matches!(
///     local_traffic_matches(&det, false).as_slice(),
///     [Match::InInterface { prefix: true, negate: true, .. }]
/// ));
/// ```
pub fn local_traffic_matches(det: &crate::model::LocalDetector, local: bool) -> Vec<Match> {
    use crate::model::LocalDetector;
    let negate = !local;
    match det {
        LocalDetector::None => Vec::new(),
        LocalDetector::Cidr(net) => vec![Match::Addr {
            dir: Direction::Src,
            addr: AddrMatch::Net(*net),
            negate,
        }],
        LocalDetector::BridgeInterface(name) => vec![Match::InInterface {
            name: name.clone(),
            prefix: false,
            negate,
        }],
        LocalDetector::InterfaceNamePrefix(prefix) => vec![Match::InInterface {
            name: prefix.clone(),
            prefix: true,
            negate,
        }],
    }
}
