//! kube-proxy's iptables layouts: plan -> IR, one module per release
//! ([`IptablesProfile`]): the current one (v1.34+) and 1.5's, over shared
//! rule builders. Every function lowers facts the planner decided; none
//! looks at the model or re-decides Kubernetes semantics.

use std::collections::HashMap;
use std::ops::Range;

use kproxy_core::ir::{Chain, ChainKind, Hook, Match, Rule, Ruleset, Table, TableFamily, Verdict};
use kproxy_core::model::IpFamily;
use kproxy_core::names::ChainName;
use kproxy_core::names::ServicePortName;
use kproxy_core::plan::{Plan, ServicePortPlan};
use kproxy_core::profile::IptablesProfile;

mod current;
mod rules;
mod v1_5;

/// The nfacct counter of the packets KUBE-FORWARD drops as conntrack
/// INVALID (kube-proxy exports it as
/// `kubeproxy_iptables_ct_state_invalid_dropped_packets_total`).
pub const CT_STATE_INVALID_COUNTER: &str = "ct_state_invalid_dropped_pkts";
/// The nfacct counter of the packets accepted on localhost node ports
/// (`kubeproxy_iptables_localhost_nodeports_accepted_packets_total`).
pub const LOCALHOST_NODEPORTS_COUNTER: &str = "localhost_nps_accepted_pkts";

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayoutOptions {
    /// Also build what kube-proxy sets up outside the restore payload: the
    /// jump rules from the built-in chains, the canary chains and the
    /// KUBE-FIREWALL chain the jumps need, so the result works on its own.
    pub standalone: bool,
    /// The release's layout (the plan must be planned with the profile's
    /// [`IptablesProfile::release`]).
    pub profile: IptablesProfile,
}

/// The table a rule goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableId {
    /// `filter`
    Filter,
    /// `nat`
    Nat,
    /// `mangle` (only the canary)
    Mangle,
}

impl TableId {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            TableId::Filter => "filter",
            TableId::Nat => "nat",
            TableId::Mangle => "mangle",
        }
    }
}

/// Where the layout writes: chain declarations and rules, in kube-proxy's
/// emission order. [`build`] collects them into a [`Ruleset`];
/// [`crate::print::stream`] prints them as they come, as kube-proxy does.
pub trait Sink {
    /// Declares (creates or flushes) a chain. Each chain is declared once,
    /// before its rules.
    fn declare(&mut self, table: TableId, chain: &str);
    /// Appends a rule to a declared chain.
    fn push(&mut self, table: TableId, chain: &str, rule: Rule);
    /// Appends a rule to a built-in chain (standalone output only).
    fn push_builtin(&mut self, table: TableId, hook: Hook, rule: Rule);
    /// Appends the rule of `matches` and `verdict` to a declared chain; the
    /// caller keeps the parts. The per-endpoint rules, most of a large
    /// node's rules, come this way, so that a printer writes them without
    /// a [`Rule`] made for each. The default makes the [`Rule`] and
    /// [`push`](Sink::push)es it.
    fn push_parts(
        &mut self,
        table: TableId,
        chain: &str,
        matches: &[Match],
        verdict: VerdictRef<'_>,
    ) {
        let rule = Rule {
            matches: matches.to_vec(),
            verdict: Some(verdict.to_verdict()),
        };
        self.push(table, chain, rule);
    }
    /// Says whose rules follow: `Some` service port's (until the next
    /// call), or, with `None` after the last service port, the node's. The
    /// rules before the first call are the node's too. Every chain shared
    /// by all Services (`KUBE-SERVICES`, ...) is thus the node's first
    /// rules, each service port's share in plan order, then the node's last
    /// rules. The default ignores it.
    fn owner(&mut self, _owner: Option<&ServicePortName>) {}
}

/// A rule's verdict as [`Sink::push_parts`] takes it: borrowed.
///
/// ```
/// use kproxy_core::ir::Verdict;
/// use kproxy_iptables::layout::VerdictRef;
/// assert_eq!(
///     VerdictRef::Jump("KUBE-MARK-MASQ").to_verdict(),
///     Verdict::Jump("KUBE-MARK-MASQ".into())
/// );
/// assert_eq!(VerdictRef::Verdict(&Verdict::Drop).to_verdict(), Verdict::Drop);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictRef<'a> {
    /// `-j CHAIN`: [`Verdict::Jump`] to the chain named.
    Jump(&'a str),
    /// Any verdict.
    Verdict(&'a Verdict),
}

impl VerdictRef<'_> {
    /// The verdict, owned.
    pub fn to_verdict(self) -> Verdict {
        match self {
            VerdictRef::Jump(chain) => Verdict::Jump(ChainName::new(chain)),
            VerdictRef::Verdict(v) => v.clone(),
        }
    }
}

use TableId::{Filter, Mangle, Nat};

/// Lowers `plan` to the layout of `opts.profile`, writing into `out`:
/// tables `filter` then `nat` (and `mangle` for the canary when standalone).
///
/// The plan must hold the profile's release's decisions
/// ([`crate::check_release`]; checked in debug builds).
pub fn emit<S: Sink>(plan: &Plan, opts: LayoutOptions, out: &mut S) {
    emit_part(plan, opts, &Part::whole(plan), out);
}

/// A piece of the layout, for laying it out in pieces ([`emit_part`]):
/// the node's first rules, the rules of a range of service ports, the
/// node's last rules. Pieces emitted into sinks of their own, in order,
/// give together what [`emit`] gives whole, per table: the declarations of
/// one piece after the other's, and their rules likewise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// The node's first rules: the fixed chains' declarations, and their
    /// rules before any service port's.
    pub head: bool,
    /// Which of the plan's service ports.
    pub ports: Range<usize>,
    /// The node's last rules.
    pub tail: bool,
}

impl Part {
    /// The whole layout.
    pub fn whole(plan: &Plan) -> Self {
        Self {
            head: true,
            ports: 0..plan.service_ports.len(),
            tail: true,
        }
    }

    /// The service ports of the piece.
    pub fn service_ports<'a>(&self, plan: &'a Plan) -> &'a [ServicePortPlan] {
        plan.service_ports
            .get(self.ports.clone())
            .unwrap_or_default()
    }
}

/// [`emit`] of one [`Part`].
pub(crate) fn emit_part<S: Sink>(plan: &Plan, opts: LayoutOptions, part: &Part, out: &mut S) {
    debug_assert_eq!(
        plan.release,
        opts.profile.release(),
        "a plan laid out in another release's layout (see crate::check_release)"
    );
    match opts.profile {
        IptablesProfile::Current => current::emit(plan, opts, part, out),
        IptablesProfile::V1_5 => v1_5::emit(plan, opts, part, out),
    }
}

/// Lowers `plan` to kube-proxy's iptables layout as a [`Ruleset`]: tables
/// `filter` then `nat` (and `mangle` when standalone), chains in
/// declaration order (built-in chains first).
pub fn build(plan: &Plan, opts: LayoutOptions) -> Ruleset {
    let mut sink = RulesetSink::new(plan.node.family);
    emit(plan, opts, &mut sink);
    sink.finish()
}

/// The [`Sink`] that [`build`] collects into: for embedders that watch the
/// layout as it is built (a [`Sink`] of their own beside this one).
///
/// ```
/// use kproxy_core::model::*;
/// use kproxy_core::plan::plan;
/// use kproxy_iptables::layout::{LayoutOptions, RulesetSink, emit};
///
/// let node = NodeConfig::new(IpFamily::V4, "node-1");
/// let p = plan(&ClusterState::default(), &node);
/// let mut sink = RulesetSink::new(IpFamily::V4);
/// emit(&p, LayoutOptions::default(), &mut sink);
/// let rules = sink.finish();
/// assert_eq!(rules, kproxy_iptables::build(&p, LayoutOptions::default()));
/// assert!(rules.table("nat").is_some());
/// ```
#[derive(Debug)]
pub struct RulesetSink {
    tables: [Tables; 3],
}

impl RulesetSink {
    /// An empty ruleset of `family`.
    pub fn new(family: IpFamily) -> Self {
        let family = TableFamily::Iptables(family);
        Self {
            tables: [
                Tables::new(Table::new("filter", family)),
                Tables::new(Table::new("nat", family)),
                Tables::new(Table::new("mangle", family)),
            ],
        }
    }

    /// The tables `filter` and `nat`, and `mangle` when it has chains.
    pub fn finish(self) -> Ruleset {
        let [filter, nat, mangle] = self.tables;
        let mut tables = vec![filter.table, nat.table];
        if !mangle.table.chains.is_empty() {
            tables.push(mangle.table);
        }
        Ruleset { tables }
    }

    fn table(&mut self, t: TableId) -> &mut Tables {
        match t {
            Filter => &mut self.tables[0],
            Nat => &mut self.tables[1],
            Mangle => &mut self.tables[2],
        }
    }
}

impl Sink for RulesetSink {
    fn declare(&mut self, table: TableId, chain: &str) {
        self.table(table).declare(chain);
    }
    fn push(&mut self, table: TableId, chain: &str, rule: Rule) {
        self.table(table).push(chain, rule);
    }
    fn push_builtin(&mut self, table: TableId, hook: Hook, rule: Rule) {
        self.table(table).push_builtin(hook, rule);
    }
}

/// A table under construction, with an index of its chains by name.
#[derive(Debug)]
struct Tables {
    table: Table,
    index: HashMap<String, usize, foldhash::fast::FixedState>,
    /// The chain the last rule went to (a chain's rules mostly come one
    /// after the other).
    last: usize,
}

impl Tables {
    fn new(table: Table) -> Self {
        Self {
            table,
            index: HashMap::default(),
            last: 0,
        }
    }
    fn position(&mut self, name: &str, make: impl FnOnce() -> (usize, Chain)) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let (pos, chain) = make();
        if pos < self.table.chains.len() {
            for i in self.index.values_mut() {
                if *i >= pos {
                    *i += 1;
                }
            }
        }
        self.table.chains.insert(pos, chain);
        self.index.insert(name.to_string(), pos);
        pos
    }
    /// The chain `name`, declared at the end if new; its rules follow
    /// mostly.
    fn declare(&mut self, name: &str) -> usize {
        let end = self.table.chains.len();
        self.last = self.position(name, || (end, Chain::new(name)));
        self.last
    }
    fn push(&mut self, chain: &str, rule: Rule) {
        let i = match self.table.chains.get(self.last) {
            Some(c) if c.name.as_str() == chain => self.last,
            _ => self.declare(chain),
        };
        self.table.chains[i].push(rule);
    }
    fn push_builtin(&mut self, hook: Hook, rule: Rule) {
        // Built-in chains first, as iptables-save lists them.
        let first_regular = self
            .table
            .chains
            .iter()
            .take_while(|c| matches!(c.kind, ChainKind::Builtin(_)))
            .count();
        let i = self.position(hook.as_iptables(), || (first_regular, Chain::builtin(hook)));
        self.table.chains[i].push(rule);
    }
}
