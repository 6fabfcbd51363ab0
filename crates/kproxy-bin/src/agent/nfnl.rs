//! Cheap reads of nf_tables chains over netlink, for the drift check
//! ([`super::drift`]): whether a chain exists, how many rules it holds and
//! which chains its rules jump to, without listing (and translating) the
//! rules as `iptables -S` or `nft list` do. One dump of a 10,000-rule chain
//! costs milliseconds this way, against a few hundred for `iptables -S`.
//!
//! Works for `nft` tables and for iptables-nft's (`ip nat`, `ip filter`,
//! ...), in the network namespace of the calling thread.

use std::io;
use std::sync::Arc;

use kproxy_core::model::IpFamily;
use kproxy_nfnl::attr::{AttrBuf, find};
use kproxy_nfnl::consts::{attr as a, msg as m, netlink as nl, nfnl as nf, val};
use kproxy_nfnl::msg::{Message, Reply, replies};
use kproxy_nft::anon::AnonDigests;
use netlink_sys::{Socket as NlSocket, SocketAddr, protocols::NETLINK_NETFILTER};

pub use kproxy_core::sync::drift::ChainSeen;

/// How to read one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRead {
    /// The table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// Whether its rules' jump targets are wanted.
    pub targets: bool,
    /// Rules known to be there when the chain held `.1` rules (their
    /// handles): when they all still are, the chain is taken to hold those
    /// rules without being dumped (a long chain is costly to dump: the
    /// kernel walks it again for each 32 kB of the dump).
    pub sample: Option<(Vec<u64>, usize)>,
}

fn nfproto(family: Option<IpFamily>) -> u8 {
    match family {
        Some(f) => kproxy_nft::netlink::nfproto(f),
        None => nf::NFPROTO_UNSPEC,
    }
}

fn bad(e: kproxy_nfnl::NfnlError) -> io::Error {
    io::Error::other(e.to_string())
}

/// The chain a rule's verdict jumps or goes to (an `immediate` expression
/// holding a verdict with a chain), from the rule's attributes.
fn rule_target(rule: &[u8]) -> Option<String> {
    use kproxy_nfnl::consts::expr as e;
    let exprs = find(rule, a::NFTA_RULE_EXPRESSIONS).ok()??;
    exprs
        .attrs()
        .filter_map(Result::ok)
        .filter(|x| x.kind() == a::NFTA_LIST_ELEM)
        .filter(|x| {
            x.attr(a::NFTA_EXPR_NAME)
                .ok()
                .flatten()
                .is_some_and(|n| n.str() == Ok("immediate"))
        })
        .find_map(|x| {
            let data = x.attr(a::NFTA_EXPR_DATA).ok()??;
            let value = data.attr(e::NFTA_IMMEDIATE_DATA).ok()??;
            let verdict = value.attr(a::NFTA_DATA_VERDICT).ok()??;
            let chain = verdict.attr(a::NFTA_VERDICT_CHAIN).ok()??;
            chain.str().ok().map(str::to_string)
        })
}

/// A netlink socket of the netfilter subsystem.
struct Socket {
    sock: NlSocket,
    seq: u32,
    /// The receive buffer (a dump's messages come in up to 32 kB).
    buf: Vec<u8>,
}

impl Socket {
    fn open() -> io::Result<Self> {
        let mut sock = NlSocket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            sock,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends one request and calls `each(type, attributes)` for every
    /// answer until the end of the dump (or the single answer);
    /// `Ok(false)` when the kernel answered ENOENT.
    fn request(
        &mut self,
        msg: u16,
        flags: u16,
        family: Option<IpFamily>,
        attributes: AttrBuf,
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let mut out = Vec::with_capacity(64);
        Message::nft(msg, flags, nfproto(family), attributes.into_bytes())
            .encode_into(self.seq, &mut out);
        self.sock.send(&out, 0)?;
        let dump = flags & nl::NLM_F_DUMP == nl::NLM_F_DUMP;
        loop {
            self.buf.clear();
            let n = match self.sock.recv(&mut self.buf, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for r in replies(&self.buf[..n.min(self.buf.len())]) {
                match r.map_err(bad)? {
                    Reply::Done { seq } if seq == self.seq => return Ok(true),
                    Reply::Ack { seq } if seq == self.seq => return Ok(true),
                    Reply::Error { seq, errno } if seq == self.seq => {
                        return if errno == libc::ENOENT {
                            Ok(false)
                        } else {
                            Err(io::Error::from_raw_os_error(errno))
                        };
                    }
                    Reply::Data {
                        kind, seq, attrs, ..
                    } if seq == self.seq => {
                        each(kind, attrs);
                        if !dump {
                            return Ok(true);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The nf_tables ruleset generation: a number that changes with every
/// committed transaction (of any table, by anyone). When it is the same
/// as when the node last held what kproxy wrote, nothing can have changed
/// since.
pub fn generation() -> io::Result<u32> {
    sock_generation(&mut Socket::open()?)
}

/// The attributes naming a table and a chain (or a rule's chain).
fn names(table: &str, chain_attr: u16, chain: &str) -> AttrBuf {
    let mut b = AttrBuf::new();
    b.put_str(a::NFTA_CHAIN_TABLE, table);
    b.put_str(chain_attr, chain);
    b
}

/// Reads `chains` of the nf_tables tables of `family`: `None` for a chain
/// (or table) that does not exist.
pub fn read_chains(family: IpFamily, chains: &[ChainRead]) -> io::Result<Vec<Option<ChainSeen>>> {
    let mut sock = Socket::open()?;
    let mut out = Vec::with_capacity(chains.len());
    for read in chains {
        let (table, chain) = (&read.table, &read.chain);
        let mut found = false;
        let exists = sock.request(
            m::NFT_MSG_GETCHAIN,
            0,
            Some(family),
            names(table, a::NFTA_CHAIN_NAME, chain),
            |kind, _| found |= kind == m::NFT_MSG_NEWCHAIN,
        )?;
        if !exists || !found {
            out.push(None);
            continue;
        }
        if let Some((handles, rules)) = &read.sample {
            let mut all = !handles.is_empty();
            for h in handles {
                let mut q = names(table, a::NFTA_RULE_CHAIN, chain);
                q.put_u64_be(a::NFTA_RULE_HANDLE, *h);
                let mut found = false;
                let exists = sock.request(m::NFT_MSG_GETRULE, 0, Some(family), q, |kind, _| {
                    found |= kind == m::NFT_MSG_NEWRULE;
                })?;
                if !exists || !found {
                    all = false;
                    break;
                }
            }
            if all {
                out.push(Some(ChainSeen {
                    rules: *rules,
                    ..ChainSeen::default()
                }));
                continue;
            }
        }
        let want_targets = read.targets;
        let mut seen = ChainSeen::default();
        sock.request(
            m::NFT_MSG_GETRULE,
            nl::NLM_F_DUMP,
            Some(family),
            names(table, a::NFTA_RULE_CHAIN, chain),
            |kind, body| {
                if kind != m::NFT_MSG_NEWRULE {
                    return;
                }
                // Older kernels ignore the chain filter: check it.
                if let Ok(Some(c)) = find(body, a::NFTA_RULE_CHAIN)
                    && c.str() != Ok(chain.as_str())
                {
                    return;
                }
                seen.rules += 1;
                if let Ok(Some(h)) = find(body, a::NFTA_RULE_HANDLE)
                    && let Ok(h) = h.u64_be()
                {
                    seen.handles.push(h);
                }
                if want_targets && let Some(t) = rule_target(body) {
                    seen.targets.push(t);
                }
            },
        )?;
        out.push(Some(seen));
    }
    Ok(out)
}

/// The comments of a table and of its chains, sets and maps (kept by nft in
/// their user data; `nft -j list` 1.0.x does not print them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comments {
    /// The table's.
    pub table: Option<String>,
    /// By chain name.
    pub chains: std::collections::HashMap<String, String>,
    /// By set or map name.
    pub sets: std::collections::HashMap<String, String>,
    /// The `NFT_SET_*` flags of each set and map.
    pub set_flags: std::collections::HashMap<String, u32>,
}

/// The `flags` words of a set's kernel flags (as kproxy's layouts spell
/// them: alphabetical), without those implied by its declaration (`map`,
/// anonymous, concatenation).
///
/// ```
/// use kproxy_bin::agent::nfnl::set_flag_words;
/// assert_eq!(set_flag_words(0x30), ["dynamic", "timeout"]);
/// assert_eq!(set_flag_words(0x8), Vec::<String>::new());
/// ```
pub fn set_flag_words(flags: u32) -> Vec<String> {
    use kproxy_nfnl::consts::val as v;
    [
        (v::NFT_SET_CONSTANT, "constant"),
        (v::NFT_SET_EVAL, "dynamic"),
        (v::NFT_SET_INTERVAL, "interval"),
        (v::NFT_SET_TIMEOUT, "timeout"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, w)| w.to_string())
    .collect()
}

fn udata_comment(body: &[u8], attr: u16, kind: u8) -> Option<String> {
    let u = find(body, attr).ok()??;
    let v = kproxy_nfnl::udata::Udata::get(u.payload(), kind)?;
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).ok()
}

/// Reads the comments of table `table` of `family`; `None` when the table
/// does not exist.
pub fn read_comments(family: IpFamily, table: &str) -> io::Result<Option<Comments>> {
    use kproxy_nfnl::udata;
    let mut sock = Socket::open()?;
    let mut out = Comments::default();
    let mut q = AttrBuf::new();
    q.put_str(a::NFTA_TABLE_NAME, table);
    let mut found = false;
    let exists = sock.request(m::NFT_MSG_GETTABLE, 0, Some(family), q, |kind, body| {
        if kind == m::NFT_MSG_NEWTABLE {
            found = true;
            out.table = udata_comment(body, a::NFTA_TABLE_USERDATA, udata::TABLE_COMMENT);
        }
    })?;
    if !exists || !found {
        return Ok(None);
    }
    let name = |body: &[u8], attr: u16| -> Option<String> {
        find(body, attr)
            .ok()?
            .and_then(|n| n.str().ok().map(str::to_string))
    };
    let in_table = |body: &[u8], attr: u16| name(body, attr).as_deref() == Some(table);
    let mut q = AttrBuf::new();
    q.put_str(a::NFTA_CHAIN_TABLE, table);
    sock.request(
        m::NFT_MSG_GETCHAIN,
        nl::NLM_F_DUMP,
        Some(family),
        q,
        |kind, body| {
            if kind == m::NFT_MSG_NEWCHAIN
                && in_table(body, a::NFTA_CHAIN_TABLE)
                && let (Some(n), Some(c)) = (
                    name(body, a::NFTA_CHAIN_NAME),
                    udata_comment(body, a::NFTA_CHAIN_USERDATA, udata::CHAIN_COMMENT),
                )
            {
                out.chains.insert(n, c);
            }
        },
    )?;
    let mut q = AttrBuf::new();
    q.put_str(a::NFTA_SET_TABLE, table);
    sock.request(
        m::NFT_MSG_GETSET,
        nl::NLM_F_DUMP,
        Some(family),
        q,
        |kind, body| {
            if kind == m::NFT_MSG_NEWSET
                && in_table(body, a::NFTA_SET_TABLE)
                && let Some(n) = name(body, a::NFTA_SET_NAME)
            {
                if let Ok(Some(f)) = find(body, a::NFTA_SET_FLAGS)
                    && let Ok(f) = f.u32_be()
                {
                    out.set_flags.insert(n.clone(), f);
                }
                if let Some(c) = udata_comment(body, a::NFTA_SET_USERDATA, udata::SET_COMMENT) {
                    out.sets.insert(n, c);
                }
            }
        },
    )?;
    Ok(Some(out))
}

/// Why [`read_table`] could not read a table.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("netlink: {0}")]
    Io(#[from] io::Error),
    /// The dump holds something the decoder does not know.
    #[error("decoding the table: {0}")]
    Decode(#[from] kproxy_nft::decode::DecodeError),
    /// The ruleset kept changing while it was read.
    #[error("the ruleset changed while it was read")]
    Changed,
    /// The dump is larger than [`MAX_TABLE_DUMP`].
    #[error("the table's dump is larger than {MAX_TABLE_DUMP} bytes")]
    TooLarge,
    /// The table has flags (dormant: a first sync in chunks that did not
    /// finish); `nft -j` reads them for the engine, which replaces the
    /// table whole.
    #[error("the table has flags {0:#x} (dormant)")]
    Flagged(u32),
}

/// The most bytes of attributes [`read_table`] reads (a 10,000-Service
/// table dumps about 100 MB).
pub const MAX_TABLE_DUMP: usize = 2 << 30;

/// How [`read_table`] dumps the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleDump {
    /// One dump of the table's rules (the kernel walks them from the
    /// start again for each 32 kB it answers).
    Table,
    /// One dump per chain (the kernel finds each by hash), on
    /// [`RULE_READERS`] threads while the sets are read.
    #[default]
    PerChain,
}

/// A table read by [`read_table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRead {
    /// The table, as `nft -j list table` would show it.
    pub table: kproxy_core::ir::Table,
    /// Anonymous sets and maps taken by their digest (not dumped).
    pub taken: usize,
    /// Sets and maps whose elements were dumped (named ones, and
    /// anonymous ones without a known digest).
    pub dumped: usize,
    /// Named `dynamic` sets, whose elements were not read: the kernel adds
    /// them as packets pass (`update @set`, session affinity), and a sync
    /// never changes them.
    pub dynamic: usize,
}

/// Reads table `table` of `family` whole, as `nft -j list table` would
/// show it (see [`kproxy_nft::decode`]) but for the elements of named
/// `dynamic` sets (session affinity entries, left out): `None` when there
/// is no such table. The table, its chains, its sets and maps (anonymous ones
/// included) and each one's elements, its counters and its rules are
/// dumped in turn; the nf_tables generation is read before and after,
/// and a read during which it changed is done again (twice at most).
///
/// An anonymous set carrying one of `known`'s digests (kproxy wrote it,
/// see [`kproxy_nft::anon`]) is taken as those elements without dumping
/// them: each such dump costs the kernel a walk of the table's whole set
/// list, which at 10,000 Services made the read take tens of seconds.
pub fn read_table(
    family: IpFamily,
    table: &str,
    rules: RuleDump,
    known: Option<&Arc<AnonDigests>>,
) -> Result<Option<TableRead>, ReadError> {
    let mut sock = Socket::open()?;
    for _ in 0..3 {
        let before = sock_generation(&mut sock)?;
        let read = read_table_once(&mut sock, family, table, rules, known)?;
        if sock_generation(&mut sock)? == before {
            return Ok(read);
        }
    }
    Err(ReadError::Changed)
}

fn sock_generation(sock: &mut Socket) -> io::Result<u32> {
    let mut id = None;
    sock.request(m::NFT_MSG_GETGEN, 0, None, AttrBuf::new(), |kind, body| {
        if kind == m::NFT_MSG_NEWGEN
            && let Ok(Some(v)) = find(body, a::NFTA_GEN_ID)
        {
            id = v.u32_be().ok();
        }
    })?;
    id.ok_or_else(|| io::Error::other("netlink: no ruleset generation"))
}

/// The decoder of one read and what it was handed.
struct Feed<'a> {
    table: &'a str,
    dec: kproxy_nft::decode::TableDecoder,
    /// The first decoding error (the rest of the dump is not decoded).
    failed: Option<kproxy_nft::decode::DecodeError>,
    /// Bytes handed so far (at most [`MAX_TABLE_DUMP`] are decoded).
    total: usize,
}

impl Feed<'_> {
    /// Whether the object's `attr` names this table.
    fn in_table(&self, body: &[u8], attr: u16) -> bool {
        find(body, attr)
            .ok()
            .flatten()
            .is_some_and(|n| n.str() == Ok(self.table))
    }

    /// One dump of `get` (answered by `new` messages): each answer about
    /// this table (named by its `table_attr`; `None`: every answer) goes
    /// to `seen`, then to the decoder.
    fn dump(
        &mut self,
        sock: &mut Socket,
        family: IpFamily,
        (get, new): (u16, u16),
        table_attr: Option<u16>,
        q: AttrBuf,
        mut seen: impl FnMut(&[u8]),
    ) -> io::Result<bool> {
        sock.request(get, nl::NLM_F_DUMP, Some(family), q, |kind, body| {
            if kind == new && table_attr.is_none_or(|t| self.in_table(body, t)) {
                seen(body);
                self.feed(kind, body);
            }
        })
    }

    /// Hands one answer to the decoder (the first error kept).
    fn feed(&mut self, kind: u16, body: &[u8]) {
        self.total = self.total.saturating_add(body.len());
        if self.failed.is_none()
            && self.total <= MAX_TABLE_DUMP
            && let Err(e) = self.dec.message(kind, body)
        {
            self.failed = Some(e);
        }
    }
}

/// A 32-bit attribute of `body`; 0 when missing or malformed.
fn u32_or_zero(body: &[u8], attr: u16) -> u32 {
    find(body, attr)
        .ok()
        .flatten()
        .and_then(|f| f.u32_be().ok())
        .unwrap_or(0)
}

/// A set of the table, as its declaration was dumped.
struct SetDumped {
    name: String,
    /// A named set the kernel fills (`update @set`: session affinity):
    /// its elements are traffic, not rules, and are not read.
    dynamic: bool,
}

fn read_table_once(
    sock: &mut Socket,
    family: IpFamily,
    table: &str,
    rules: RuleDump,
    known: Option<&Arc<AnonDigests>>,
) -> Result<Option<TableRead>, ReadError> {
    use kproxy_nft::decode::TableDecoder;
    let mut dec = TableDecoder::new(family);
    if let Some(k) = known {
        dec = dec.knowing(Arc::clone(k));
    }
    let mut f = Feed {
        table,
        dec,
        failed: None,
        total: 0,
    };
    let mut q = AttrBuf::new();
    q.put_str(a::NFTA_TABLE_NAME, table);
    let mut found = false;
    let mut flags = 0;
    let exists = sock.request(m::NFT_MSG_GETTABLE, 0, Some(family), q, |kind, body| {
        if kind == m::NFT_MSG_NEWTABLE {
            found = true;
            flags = u32_or_zero(body, a::NFTA_TABLE_FLAGS);
            f.feed(kind, body);
        }
    })?;
    if !exists || !found {
        return Ok(None);
    }
    if flags != 0 {
        return Err(ReadError::Flagged(flags));
    }
    let mut chains = Vec::new();
    let mut q = AttrBuf::new();
    q.put_str(a::NFTA_CHAIN_TABLE, table);
    let chain_msgs = (m::NFT_MSG_GETCHAIN, m::NFT_MSG_NEWCHAIN);
    f.dump(
        sock,
        family,
        chain_msgs,
        Some(a::NFTA_CHAIN_TABLE),
        q,
        |body| {
            if rules == RuleDump::PerChain
                && let Ok(Some(n)) = find(body, a::NFTA_CHAIN_NAME)
                && let Ok(n) = n.str()
            {
                chains.push(n.to_string());
            }
        },
    )?;
    let (sets, per_chain) = match rules {
        RuleDump::PerChain => std::thread::scope(|s| {
            // The rules on other threads while this one reads the sets.
            let rules = s.spawn(|| rules_per_chain(family, table, &chains));
            let sets = read_sets(sock, &mut f, family);
            let rules = rules
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("netlink: a rule reader panicked")));
            (sets, Some(rules))
        }),
        RuleDump::Table => (read_sets(sock, &mut f, family), None),
    };
    let sets = sets?;
    match per_chain {
        Some(dumped) => {
            for raw in dumped? {
                for body in raw.bodies() {
                    f.feed(m::NFT_MSG_NEWRULE, body);
                }
            }
        }
        None => {
            let mut q = AttrBuf::new();
            q.put_str(a::NFTA_RULE_TABLE, table);
            let rule_msgs = (m::NFT_MSG_GETRULE, m::NFT_MSG_NEWRULE);
            f.dump(sock, family, rule_msgs, Some(a::NFTA_RULE_TABLE), q, |_| {})?;
        }
    }
    if let Some(e) = f.failed {
        return Err(e.into());
    }
    if f.total > MAX_TABLE_DUMP {
        return Err(ReadError::TooLarge);
    }
    let dumped = sets.iter().filter(|s| s.1).count();
    let dynamic = sets.iter().filter(|s| s.0.dynamic).count();
    Ok(Some(TableRead {
        table: f.dec.finish()?,
        taken: sets.len() - dumped - dynamic,
        dumped,
        dynamic,
    }))
}

/// The table's sets and maps, their elements (but for those the decoder
/// takes by digest, and the kernel-filled ones) and its counters, handed
/// to the decoder; each set with whether its elements were dumped.
fn read_sets(
    sock: &mut Socket,
    f: &mut Feed<'_>,
    family: IpFamily,
) -> io::Result<Vec<(SetDumped, bool)>> {
    let table = f.table;
    let mut sets = Vec::new();
    let mut q = AttrBuf::new();
    q.put_str(a::NFTA_SET_TABLE, table);
    let set_msgs = (m::NFT_MSG_GETSET, m::NFT_MSG_NEWSET);
    f.dump(sock, family, set_msgs, Some(a::NFTA_SET_TABLE), q, |body| {
        if let Ok(Some(n)) = find(body, a::NFTA_SET_NAME)
            && let Ok(n) = n.str()
        {
            let flags = u32_or_zero(body, a::NFTA_SET_FLAGS);
            sets.push(SetDumped {
                name: n.to_string(),
                dynamic: flags & (val::NFT_SET_EVAL | val::NFT_SET_ANONYMOUS) == val::NFT_SET_EVAL,
            });
        }
    })?;
    let mut out = Vec::with_capacity(sets.len());
    for set in sets {
        let dump = !set.dynamic && !f.dec.elements_known(&set.name) && f.failed.is_none();
        if dump {
            let mut q = AttrBuf::new();
            q.put_str(a::NFTA_SET_ELEM_LIST_TABLE, table);
            q.put_str(a::NFTA_SET_ELEM_LIST_SET, &set.name);
            let elem_msgs = (m::NFT_MSG_GETSETELEM, m::NFT_MSG_NEWSETELEM);
            f.dump(sock, family, elem_msgs, None, q, |_| {})?;
        }
        out.push((set, dump));
    }
    let mut q = AttrBuf::new();
    q.put_str(a::NFTA_OBJ_TABLE, table);
    q.put_u32_be(a::NFTA_OBJ_TYPE, val::NFT_OBJECT_COUNTER);
    let obj_msgs = (m::NFT_MSG_GETOBJ, m::NFT_MSG_NEWOBJ);
    f.dump(sock, family, obj_msgs, Some(a::NFTA_OBJ_TABLE), q, |_| {})?;
    Ok(out)
}

/// Rule messages as dumped, one after the other.
#[derive(Default)]
struct RawRules {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl RawRules {
    fn push(&mut self, body: &[u8]) {
        self.bytes.extend_from_slice(body);
        self.ends.push(self.bytes.len());
    }

    fn bodies(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, e)| &self.bytes[s..*e])
    }
}

/// How many threads dump rules chain by chain.
pub const RULE_READERS: usize = 2;

/// The rules of `chains` of `table`, one dump per chain (the kernel finds
/// a chain by hash; a dump of the whole table instead walks the table's
/// rules from the start for each 32 kB it answers, quadratic in the rules)
/// on [`RULE_READERS`] threads of their own sockets; chain `i` goes to
/// reader `i % RULE_READERS`. Each reader's rules, in its chains' order.
fn rules_per_chain(family: IpFamily, table: &str, chains: &[String]) -> io::Result<Vec<RawRules>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let total = AtomicUsize::new(0);
    let readers = RULE_READERS.min(chains.len()).max(1);
    let read = |k: usize| -> io::Result<RawRules> {
        let mut sock = Socket::open()?;
        let mut raw = RawRules::default();
        for c in chains.iter().skip(k).step_by(readers) {
            let q = names(table, a::NFTA_RULE_CHAIN, c);
            sock.request(
                m::NFT_MSG_GETRULE,
                nl::NLM_F_DUMP,
                Some(family),
                q,
                |kind, body| {
                    if kind == m::NFT_MSG_NEWRULE
                        && total.fetch_add(body.len(), Ordering::Relaxed) <= MAX_TABLE_DUMP
                    {
                        raw.push(body);
                    }
                },
            )?;
            if total.load(Ordering::Relaxed) > MAX_TABLE_DUMP {
                break;
            }
        }
        Ok(raw)
    };
    std::thread::scope(|s| {
        let others: Vec<_> = (1..readers).map(|k| s.spawn(move || read(k))).collect();
        let mut out = vec![read(0)?];
        for h in others {
            out.push(
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("netlink: a rule reader panicked")))?,
            );
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_jump_target_in_nested_attributes() {
        use kproxy_nfnl::consts::expr as e;
        // rule { expressions { counter, immediate { dreg, data { verdict {
        // code, chain "KUBE-SERVICES" } } } } }
        let mut rule = AttrBuf::new();
        rule.put_str(a::NFTA_RULE_TABLE, "nat");
        rule.put_str(a::NFTA_RULE_CHAIN, "PREROUTING");
        rule.nest(a::NFTA_RULE_EXPRESSIONS, |l| {
            l.nest(a::NFTA_LIST_ELEM, |x| {
                x.put_str(a::NFTA_EXPR_NAME, "counter");
            });
            l.nest(a::NFTA_LIST_ELEM, |x| {
                x.put_str(a::NFTA_EXPR_NAME, "immediate");
                x.nest(a::NFTA_EXPR_DATA, |d| {
                    d.put_u32_be(e::NFTA_IMMEDIATE_DREG, 0);
                    d.nest(e::NFTA_IMMEDIATE_DATA, |v| {
                        v.nest(a::NFTA_DATA_VERDICT, |vd| {
                            vd.put(a::NFTA_VERDICT_CODE, &(-3i32).to_be_bytes());
                            vd.put_str(a::NFTA_VERDICT_CHAIN, "KUBE-SERVICES");
                        });
                    });
                });
            });
        });
        let rule = rule.into_bytes();
        assert_eq!(rule_target(&rule).as_deref(), Some("KUBE-SERVICES"));
        assert_eq!(rule_target(&rule[..rule.len() - 8]), None, "truncated");
        let chain = find(&rule, a::NFTA_RULE_CHAIN).unwrap().unwrap();
        assert_eq!(chain.str(), Ok("PREROUTING"));
        assert_eq!(kproxy_nfnl::attr::Attrs::new(&rule).count(), 3);
    }
}
