//! What one nftables sync writes, as transactions of the backend's
//! operations ([`Op`]), printed by its printer.
//!
//! [`nft_full`] replaces the `kube-proxy` table atomically in one
//! transaction; [`nft_partial`] (two whole tables) and [`nft_changes`] (any
//! [`TableChanges`], e.g. of the changed Services' layouts) are one
//! transaction with only the changed chains (`add` + `flush` + rules) and
//! element adds and deletes. Chains that went away are flushed and deleted
//! by a later [`nft_delete_stale`] transaction, as kube-proxy does.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt};

use kproxy_core::diff::{ContainerChange, ContainerKind, ContainerRef, TableChanges, changes};
use kproxy_core::ir::{
    AddrMatch, Chain, ChainKind, Counter, Element, MapValue, Match, Set, Table, TableFamily,
    Verdict,
};
use kproxy_core::model::IpFamily;
use kproxy_core::names::ChainName;

use crate::names::is_service_chain;
use crate::print::PrintOptions;
use crate::{NftError, Op, Transaction};

/// A transaction and its `nft -f` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Printed {
    /// The operations.
    pub transaction: Transaction,
    /// Their text, one per line (empty when there are none).
    pub text: String,
    /// The options they were printed with (a netlink encoder encodes them
    /// with the same).
    pub options: PrintOptions,
}

impl Printed {
    /// Prints `transaction`.
    pub fn new(transaction: Transaction, opts: PrintOptions) -> Result<Self, NftError> {
        let text = crate::print::print(&transaction, opts)?;
        Ok(Self {
            transaction,
            text,
            options: opts,
        })
    }

    /// Whether it holds no operation.
    pub fn is_empty(&self) -> bool {
        self.transaction.ops.is_empty()
    }
}

fn nft_family(t: &Table) -> IpFamily {
    match t.family {
        TableFamily::Nft(f) | TableFamily::Iptables(f) => f,
    }
}

/// The whole table as one atomic transaction that replaces whatever table
/// of that name the node holds (`add table` + `delete table` + the table
/// again): chains, sets, maps and counters first, then rules, then
/// elements.
pub fn nft_full(next: &Table, opts: PrintOptions) -> Result<Printed, NftError> {
    let family = nft_family(next);
    let mut tx = Transaction::new(family, next.name.clone());
    tx.push(Op::AddTable { comment: None });
    tx.push(Op::DeleteTable);
    tx.push(Op::AddTable {
        comment: next.comment.clone(),
    });
    for c in &next.chains {
        tx.push(Op::AddChain(c.clone()));
    }
    for s in &next.sets {
        tx.push(Op::AddSet(s.clone()));
    }
    for m in &next.maps {
        tx.push(Op::AddMap(m.clone()));
    }
    for c in &next.counters {
        tx.push(Op::AddCounter(c.clone()));
    }
    for c in &next.chains {
        for r in &c.rules {
            tx.push(Op::AddRule(c.name.clone(), r.clone()));
        }
    }
    for s in &next.sets {
        for e in &s.elements {
            tx.push(Op::AddSetElement(s.name.clone(), e.clone()));
        }
    }
    for m in &next.maps {
        for (e, v) in &m.elements {
            tx.push(Op::AddMapElement(m.name.clone(), e.clone(), v.clone()));
        }
    }
    Printed::new(tx, opts)
}

/// The whole table written into a node that holds no table of that name,
/// as several transactions of at most `chunk` operations each (`nft -f`
/// lines; the kernel's cost of a transaction grows with the square of its
/// size), when it has more than that; otherwise [`nft_full`]'s one
/// transaction.
///
/// The first transaction is [`nft_full`]'s prefix (`add table`, `delete
/// table`: whatever table of that name is there goes) with the table
/// added dormant ([`Op::AddDormantTable`]: its base chains see no packet),
/// then every chain, set, map and counter declared in [`nft_full`]'s
/// order. Then, in that order too, the rules of the regular chains and the
/// elements, `chunk` operations per transaction; then the base chains'
/// rules; last, alone, the [`Op::AddTable`] that wakes the table, whose
/// hooks then see the whole table at once. The kernel then holds what
/// [`nft_full`] leaves (the same chains, sets, rules and elements, in the
/// same order, the table not dormant), handles aside.
///
/// When a transaction fails, the node holds a dormant table, possibly
/// short of rules or elements, whose base chains are empty (or complete,
/// when only the last failed): the next write should be [`nft_full`].
///
/// ```
/// use kproxy_core::ir::{Chain, Rule, Table, TableFamily, Verdict};
/// use kproxy_core::model::IpFamily;
/// use kproxy_nft::Op;
/// use kproxy_nft::sync::payload::{nft_first, nft_full};
///
/// let mut t = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
/// t.comment = Some("rules for kube-proxy".into());
/// for i in 0..4 {
///     let mut c = Chain::new(format!("c{i}"));
///     c.rules.push(Rule::new().verdict(Verdict::Drop));
///     c.rules.push(Rule::new().verdict(Verdict::Accept));
///     t.chains.push(c);
/// }
/// let opts = Default::default();
/// let txs = nft_first(&t, opts, 5).unwrap();
/// let ops: Vec<usize> = txs.iter().map(|p| p.transaction.ops.len()).collect();
/// // The prefix and two chains; two chains and three rules; five rules;
/// // the wake-up.
/// assert_eq!(ops, [5, 5, 5, 1]);
/// assert!(txs[0].text.starts_with(
///     "add table ip kube-proxy\n\
///      delete table ip kube-proxy\n\
///      add table ip kube-proxy { comment \"rules for kube-proxy\" ; flags dormant ; }\n"
/// ));
/// assert_eq!(txs[3].text, "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n");
/// // The same table as the one transaction builds.
/// let mut all = kproxy_nft::Transaction::new(IpFamily::V4, "kube-proxy");
/// all.ops = txs.iter().flat_map(|p| p.transaction.ops.clone()).collect();
/// assert_eq!(all.apply().unwrap(), nft_full(&t, opts).unwrap().transaction.apply().unwrap());
/// // Small enough: one transaction.
/// assert_eq!(nft_first(&t, opts, 100).unwrap(), vec![nft_full(&t, opts).unwrap()]);
/// ```
pub fn nft_first(next: &Table, opts: PrintOptions, chunk: usize) -> Result<Vec<Printed>, NftError> {
    let family = nft_family(next);
    let is_base = |c: &Chain| matches!(c.kind, ChainKind::Base { .. });
    let mut ops: Vec<Op> = vec![
        Op::AddTable { comment: None },
        Op::DeleteTable,
        Op::AddDormantTable {
            comment: next.comment.clone(),
        },
    ];
    ops.extend(next.chains.iter().map(|c| Op::AddChain(c.clone())));
    ops.extend(next.sets.iter().map(|s| Op::AddSet(s.clone())));
    ops.extend(next.maps.iter().map(|m| Op::AddMap(m.clone())));
    ops.extend(next.counters.iter().map(|c| Op::AddCounter(c.clone())));
    for c in next.chains.iter().filter(|c| !is_base(c)) {
        ops.extend(
            c.rules
                .iter()
                .map(|r| Op::AddRule(c.name.clone(), r.clone())),
        );
    }
    for s in &next.sets {
        ops.extend(
            s.elements
                .iter()
                .map(|e| Op::AddSetElement(s.name.clone(), e.clone())),
        );
    }
    for m in &next.maps {
        ops.extend(
            m.elements
                .iter()
                .map(|(e, v)| Op::AddMapElement(m.name.clone(), e.clone(), v.clone())),
        );
    }
    let base: Vec<Op> = next
        .chains
        .iter()
        .filter(|c| is_base(c))
        .flat_map(|c| {
            c.rules
                .iter()
                .map(|r| Op::AddRule(c.name.clone(), r.clone()))
        })
        .collect();
    if chunk == 0 || ops.len() + base.len() <= chunk {
        return Ok(vec![nft_full(next, opts)?]);
    }
    let tx = |ops: Vec<Op>| -> Result<Printed, NftError> {
        let mut t = Transaction::new(family, next.name.clone());
        t.ops = ops;
        Printed::new(t, opts)
    };
    let mut out = Vec::new();
    let mut rest = ops.into_iter().peekable();
    while rest.peek().is_some() {
        out.push(tx(rest.by_ref().take(chunk).collect())?);
    }
    if !base.is_empty() {
        out.push(tx(base)?);
    }
    out.push(tx(vec![Op::AddTable {
        comment: next.comment.clone(),
    }])?);
    Ok(out)
}

/// One incremental nftables transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftSync {
    /// The transaction (empty when nothing changes).
    pub transaction: Printed,
    /// Chains that went away: flushed by this transaction, to delete later
    /// with [`nft_delete_stale`].
    pub stale_chains: Vec<String>,
    /// Chains (re)created by this transaction: no longer stale.
    pub revived_chains: Vec<String>,
    /// Set and map elements added and deleted.
    pub element_changes: usize,
    /// Rules written.
    pub rules_written: usize,
}

/// Whether two matches are the same in the kernel: equal, or spelled
/// differently by `nft -j` than written (a one-member anonymous address
/// set is compiled to, and listed as, the plain address match; a
/// full-length prefix as the address; an anonymous set's members are
/// listed sorted).
fn same_match(a: &Match, b: &Match) -> bool {
    let norm = |m: &Match| -> Match {
        let m = match m {
            Match::AddrSet { dir, addrs, negate } if addrs.len() == 1 => Match::Addr {
                dir: *dir,
                addr: addrs[0],
                negate: *negate,
            },
            // nft lists an anonymous set's members sorted, a full-length
            // prefix as its address.
            Match::AddrSet { dir, addrs, negate } => {
                let mut addrs: Vec<AddrMatch> = addrs
                    .iter()
                    .map(|a| match a {
                        AddrMatch::Net(n) if n.prefix_len() == n.max_prefix_len() => {
                            AddrMatch::Ip(n.addr())
                        }
                        a => *a,
                    })
                    .collect();
                addrs.sort_by_key(|a| match a {
                    AddrMatch::Ip(ip) => (*ip, u8::MAX),
                    AddrMatch::Net(n) => (n.network(), n.prefix_len()),
                });
                Match::AddrSet {
                    dir: *dir,
                    addrs,
                    negate: *negate,
                }
            }
            m => m.clone(),
        };
        match m {
            Match::Addr {
                dir,
                addr: AddrMatch::Net(n),
                negate,
            } if n.prefix_len() == n.max_prefix_len() => Match::Addr {
                dir,
                addr: AddrMatch::Ip(n.addr()),
                negate,
            },
            m => m,
        }
    };
    a == b || norm(a) == norm(b)
}

/// Whether two verdicts are the same in the kernel: a random DNAT to one
/// destination is a plain DNAT.
fn same_verdict(a: Option<&Verdict>, b: Option<&Verdict>) -> bool {
    let norm = |v: Option<&Verdict>| match v {
        Some(Verdict::DnatRandom { to }) if to.len() == 1 => Some(Verdict::Dnat(to[0])),
        v => v.cloned(),
    };
    a == b || norm(a) == norm(b)
}

/// Makes `held` (the node's table as `nft -j list table` printed it) spell
/// what is the same in the kernel as `written` spells it, so that the diff
/// between them ([`nft_partial`]) sees no change where only the spelling
/// differs: chains whose rules are the same in the kernel take `written`'s
/// rules; the table's and chains' comments and the sets' `dynamic` flag,
/// which nft before 1.0.7 leaves out of its JSON, are taken from `written`
/// where `held` has none. A `dynamic` set's elements are the kernel's (it
/// adds them as packets pass: session affinity) and are taken from
/// `written` too, so that a restarted agent keeps them, as kube-proxy,
/// which never flushes its affinity sets, does.
///
/// ```
/// use kproxy_core::ir::{Chain, Table, TableFamily};
/// use kproxy_core::model::IpFamily;
/// use kproxy_nft::sync::payload::as_written;
///
/// let mut written = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
/// written.comment = Some("rules for kube-proxy".into());
/// let mut chain = Chain::new("services");
/// chain.comment = Some("services".into());
/// written.chains.push(chain);
/// let mut held = written.clone();
/// held.comment = None;
/// held.chains[0].comment = None;
/// as_written(&mut held, &written);
/// assert_eq!(held, written);
/// ```
pub fn as_written(held: &mut Table, written: &Table) {
    if held.comment.is_none() {
        held.comment.clone_from(&written.comment);
    }
    // By name (the first of a name, as `Table::chain` finds it).
    let mut chains: HashMap<&str, &Chain> = HashMap::with_capacity(written.chains.len());
    for c in &written.chains {
        chains.entry(c.name.as_str()).or_insert(c);
    }
    let mut sets: HashMap<&str, &Set> = HashMap::with_capacity(written.sets.len());
    for s in &written.sets {
        sets.entry(s.name.as_str()).or_insert(s);
    }
    for c in &mut held.chains {
        let Some(w) = chains.get(c.name.as_str()) else {
            continue;
        };
        if c.comment.is_none() {
            c.comment.clone_from(&w.comment);
        }
        // Most chains read back spelled as written: nothing to copy.
        let spelled_differently = c.rules != w.rules;
        let same = spelled_differently
            && c.rules.len() == w.rules.len()
            && c.rules.iter().zip(&w.rules).all(|(a, b)| {
                same_verdict(a.verdict.as_ref(), b.verdict.as_ref())
                    && a.matches.len() == b.matches.len()
                    && a.matches
                        .iter()
                        .zip(&b.matches)
                        .all(|(x, y)| same_match(x, y))
            });
        if same {
            c.rules.clone_from(&w.rules);
        }
    }
    for set in &mut held.sets {
        let Some(w) = sets.get(set.name.as_str()) else {
            continue;
        };
        let dynamic = "dynamic";
        // Its elements are the kernel's (`update @set` as packets pass:
        // session affinity); a sync leaves them, as kube-proxy does.
        if w.flags.iter().any(|f| f == dynamic) {
            set.elements.clone_from(&w.elements);
        }
        if w.flags.iter().any(|f| f == dynamic) && !set.flags.iter().any(|f| f == dynamic) {
            let mut with: Vec<String> = set.flags.clone();
            with.push(dynamic.to_string());
            with.sort();
            let mut want = w.flags.clone();
            want.sort();
            if with == want {
                set.flags.clone_from(&w.flags);
            }
        }
    }
}

/// The incremental transaction from table `last` (what the node holds,
/// stale chains aside) to `next`. `None` when it cannot be expressed
/// incrementally (a chain, set or map changed its declaration, or the
/// table itself is new): the caller does a full sync.
pub fn nft_partial(
    last: &Table,
    next: &Table,
    opts: PrintOptions,
) -> Result<Option<NftSync>, NftError> {
    if last.name != next.name || last.comment != next.comment || last.family != next.family {
        return Ok(None);
    }
    let d = changes(last, next);
    if d.redeclares_chains() {
        return Ok(None);
    }
    nft_changes(&d, last, next, opts).map(Some)
}

/// The incremental transaction from table `before` to `after` whose
/// changes are `d` (no chain redeclared). A set or map whose declaration
/// changed (an affinity set's timeout) is deleted and added again, the
/// chains that use it flushed first and written again.
pub fn nft_changes(
    d: &TableChanges<'_>,
    before: &Table,
    after: &Table,
    opts: PrintOptions,
) -> Result<NftSync, NftError> {
    let family = nft_family(after);
    let mut tx = Transaction::new(family, after.name.clone());
    let mut sync = NftSync {
        transaction: Printed::new(tx.clone(), opts)?,
        stale_chains: Vec::new(),
        revived_chains: Vec::new(),
        element_changes: 0,
        rules_written: 0,
    };
    if d.is_empty() {
        return Ok(sync);
    }
    let mut ops: Vec<Op> = Vec::new();
    // Redeclared sets and maps: the chains using them (before and after)
    // flushed, the container deleted and declared again.
    let redeclared: Vec<&ContainerChange<'_>> =
        d.containers.iter().filter(|c| c.redeclared()).collect();
    let users = |t: &Table| -> BTreeSet<String> {
        t.chains
            .iter()
            .filter(|c| {
                c.rules.iter().any(|r| {
                    redeclared
                        .iter()
                        .any(|rc| r.references(rc.container().name()))
                })
            })
            .map(|c| c.name.to_string())
            .collect()
    };
    let (users_before, users_after) = if redeclared.is_empty() {
        Default::default()
    } else {
        (users(before), users(after))
    };
    for c in users_before.iter().filter(|c| before.chain(c).is_some()) {
        ops.push(Op::FlushChain(ChainName::new(c.as_str())));
    }
    for c in &redeclared {
        let Some(old) = c.before else { continue };
        ops.push(match old {
            ContainerRef::Set(s) => Op::DeleteSet(s.name.clone()),
            ContainerRef::Map(m) => Op::DeleteMap(m.name.clone()),
        });
        ops.push(match c.container() {
            ContainerRef::Set(s) => Op::AddSet(s.clone()),
            ContainerRef::Map(m) => Op::AddMap(m.clone()),
        });
    }
    // Declarations: new sets and maps, counters, chains.
    for c in d.containers.iter().filter(|c| c.before.is_none()) {
        ops.push(match c.container() {
            ContainerRef::Set(s) => Op::AddSet(s.clone()),
            ContainerRef::Map(m) => Op::AddMap(m.clone()),
        });
    }
    for c in &d.counters_added {
        ops.push(Op::AddCounter(Counter {
            name: c.to_string(),
        }));
    }
    for chain in d.added_chains() {
        ops.push(Op::AddChain(chain.clone()));
        sync.revived_chains.push(chain.name.to_string());
    }
    // Elements: deletes (a changed one is deleted and added again), adds;
    // the elements of new containers are added too.
    let mut removed = 0;
    let mut added = 0;
    for c in d
        .containers
        .iter()
        .filter(|c| c.after.is_some() && !c.redeclared())
    {
        let name = c.container().name();
        for e in &c.elements {
            if let Some((el, _)) = e.before {
                ops.push(Op::DeleteElement(name.to_string(), el.clone()));
                removed += 1;
            }
        }
    }
    for c in d.containers.iter().filter(|c| c.after.is_some()) {
        let container = c.container();
        let name = container.name();
        let new: Vec<(&Element, Option<&MapValue>)> = if c.before.is_none() || c.redeclared() {
            container.elements().collect()
        } else {
            c.elements.iter().filter_map(|e| e.after).collect()
        };
        for (e, v) in new {
            ops.push(match v {
                Some(v) => Op::AddMapElement(name.to_string(), e.clone(), v.clone()),
                None => Op::AddSetElement(name.to_string(), e.clone()),
            });
            added += 1;
        }
    }
    sync.element_changes = removed + added;
    // Chains whose rules changed, and the users of redeclared containers:
    // flushed and written whole.
    let changed: BTreeSet<&str> = d.written_chains().map(|c| c.name.as_str()).collect();
    let rewrite = d.written_chains().chain(
        users_after
            .iter()
            .filter(|c| !changed.contains(c.as_str()))
            .filter_map(|c| after.chain(c)),
    );
    for c in rewrite {
        ops.push(Op::FlushChain(c.name.clone()));
        for r in &c.rules {
            ops.push(Op::AddRule(c.name.clone(), r.clone()));
        }
        sync.rules_written += c.rules.len();
    }
    // Chains that went away: flushed now; a service's chains are deleted by
    // a later transaction, others at once.
    for c in d.removed_chains() {
        ops.push(Op::FlushChain(c.name.clone()));
        if is_service_chain(c.name.as_str()) {
            sync.stale_chains.push(c.name.to_string());
        } else {
            ops.push(Op::DeleteChain(c.name.clone()));
        }
    }
    for c in d.containers.iter().filter(|c| c.after.is_none()) {
        let container = c.container();
        ops.push(match container.kind() {
            ContainerKind::Set => Op::DeleteSet(container.name().to_string()),
            ContainerKind::Map => Op::DeleteMap(container.name().to_string()),
        });
    }
    for c in &d.counters_removed {
        ops.push(Op::DeleteCounter(c.to_string()));
    }
    tx.ops = ops;
    sync.transaction = Printed::new(tx, opts)?;
    Ok(sync)
}

/// The nftables transaction that writes `chains` of table `table` again,
/// whole (added, which creates a chain gone, flushed, then their rules):
/// the drift repair of node-level chains.
pub fn nft_rewrite(
    family: IpFamily,
    table: &str,
    chains: &[&Chain],
    opts: PrintOptions,
) -> Result<Printed, NftError> {
    let mut tx = Transaction::new(family, table.to_string());
    for c in chains {
        tx.push(Op::AddChain((*c).clone()));
        tx.push(Op::FlushChain(c.name.clone()));
        for r in &c.rules {
            tx.push(Op::AddRule(c.name.clone(), r.clone()));
        }
    }
    Printed::new(tx, opts)
}

/// The transaction that deletes stale chains (flushed by an earlier sync).
pub fn nft_delete_stale(
    family: IpFamily,
    table: &str,
    chains: &[String],
    opts: PrintOptions,
) -> Result<Printed, NftError> {
    let mut tx = Transaction::new(family, table.to_string());
    for c in chains {
        tx.push(Op::DeleteChain(ChainName::new(c.as_str())));
    }
    Printed::new(tx, opts)
}

/// Objects per kind in a table: chains, rules, sets, maps, elements
/// (`kproxy_sync_proxy_rules_nftables_objects`).
pub fn nft_object_counts(t: &Table) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    m.insert("chain", t.chains.len());
    m.insert("rule", t.chains.iter().map(|c| c.rules.len()).sum());
    m.insert("set", t.sets.len());
    m.insert("map", t.maps.len());
    m.insert(
        "element",
        t.sets.iter().map(|s| s.elements.len()).sum::<usize>()
            + t.maps.iter().map(|m| m.elements.len()).sum::<usize>(),
    );
    m
}
