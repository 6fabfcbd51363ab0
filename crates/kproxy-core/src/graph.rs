//! The chain graph of a ruleset: where a packet can go.
//!
//! [`Graph::from_rulesets`] turns rule IR into nodes (hooks, chains,
//! nftables verdict maps, endpoints `ip:port` and terminal verdicts) and
//! edges (one per jump, goto, DNAT or map element; jumps to chains without
//! rules and lookups in empty maps, which do nothing, are left out, and so
//! is what no hook reaches), each edge labelled with
//! a short summary of what it matches: `tcp 10.79.250.127:80`,
//! `! -s 10.76.0.0/14`, `p=0.5`. [`Graph::service`] keeps one Service's
//! subgraph and the paths that lead to it; [`Graph::to_dot`] writes
//! Graphviz DOT.
//!
//! ```
//! use kproxy_core::graph::Graph;
//! use kproxy_core::ir::*;
//! use kproxy_core::model::{IpFamily, Protocol};
//!
//! let mut t = Table::new("nat", TableFamily::Iptables(IpFamily::V4));
//! let mut pre = Chain::builtin(Hook::Prerouting);
//! pre.push(Rule::new().verdict(Verdict::Jump("KUBE-SERVICES".into())));
//! let mut services = Chain::new("KUBE-SERVICES");
//! services.push(Rule::new()
//!     .with(Match::Comment("default/web cluster IP".into()))
//!     .with(Match::Protocol(Protocol::Tcp))
//!     .with(Match::Addr {
//!         dir: Direction::Dst,
//!         addr: AddrMatch::Ip("10.96.0.10".parse().unwrap()),
//!         negate: false,
//!     })
//!     .with(Match::DstPort(80))
//!     .verdict(Verdict::Dnat("10.244.0.5:8080".parse().unwrap())));
//! t.chains = vec![pre, services];
//! let g = Graph::from_rulesets(&[Ruleset { tables: vec![t] }]);
//! let dot = g.to_dot();
//! assert_eq!(dot, r##"digraph kproxy {
//!   rankdir=LR;
//!   node [shape=box, fontname="monospace", fontsize=10];
//!   edge [fontname="monospace", fontsize=9];
//!   subgraph cluster_0 {
//!     label="iptables nat (IPv4)";
//!     "ip4/nat/PREROUTING" [label="nat PREROUTING", shape=cds, style=filled, fillcolor="#dde8ff"];
//!     "ip4/nat/KUBE-SERVICES" [label="KUBE-SERVICES"];
//!   }
//!   "endpoint/10.244.0.5:8080" [label="10.244.0.5:8080", shape=ellipse, style=filled, fillcolor="#d9f2d9"];
//!   "ip4/nat/PREROUTING" -> "ip4/nat/KUBE-SERVICES";
//!   "ip4/nat/KUBE-SERVICES" -> "endpoint/10.244.0.5:8080" [label="tcp 10.96.0.10:80"];
//! }
//! "##);
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::ir::{
    AddrMatch, ChainKind, Direction, Key, MapValue, MarkOp, Match, RecentOp, Rule, Ruleset, Table,
    TableFamily, Verdict,
};
use crate::model::{IpFamily, NamespacedName};
use crate::owners::Owners;

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKind {
    /// A netfilter hook: an iptables built-in chain or an nftables base chain.
    Hook,
    /// A regular chain.
    Chain,
    /// An nftables verdict map (a fan-out).
    Map,
    /// A destination `ip:port` (a pod, or whatever the endpoint is).
    Endpoint,
    /// A terminal verdict (`DROP`, `REJECT`, `MASQUERADE`, ...).
    Verdict,
}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// A unique id (family, table and name).
    pub id: String,
    /// The text to show.
    pub label: String,
    /// What it is.
    pub kind: NodeKind,
    /// The group it is drawn in (`iptables nat (IPv4)`); `None` for endpoints.
    pub group: Option<String>,
    /// The Service it belongs to, if it belongs to one.
    pub service: Option<NamespacedName>,
}

/// An edge: one way a packet goes from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Index of the source node.
    pub from: usize,
    /// Index of the target node.
    pub to: usize,
    /// What the edge matches (may be empty: everything).
    pub label: String,
    /// The Service the rule or element behind the edge belongs to.
    pub service: Option<NamespacedName>,
}

/// The chain graph of one or more rulesets (one per family).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Graph {
    /// Nodes, in first-seen order (tables, then chains, in ruleset order).
    pub nodes: Vec<Node>,
    /// Edges, in rule order.
    pub edges: Vec<Edge>,
    /// A note drawn with the graph (what a summary left out).
    pub note: Option<String>,
}

/// How much of a graph is drawn: big graphs are summarised, as a layout
/// engine's time grows much faster than the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Detail {
    /// Every chain, rule and endpoint.
    Full,
    /// Each Service's endpoint chains and endpoints folded into one node
    /// with a count ([`Graph::fold_endpoints`]).
    FoldedEndpoints,
    /// Every Service's chains folded into one node per table and their
    /// endpoints into one node; the node-level chains stay
    /// ([`Graph::node_level`]).
    NodeLevel,
}

fn family_word(f: TableFamily) -> (&'static str, &'static str, IpFamily) {
    match f {
        TableFamily::Iptables(fam) => ("iptables", fam_tag(fam), fam),
        TableFamily::Nft(fam) => ("nftables", fam_tag(fam), fam),
    }
}

fn fam_tag(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip4",
        IpFamily::V6 => "ip6",
    }
}

struct Builder {
    g: Graph,
    index: HashMap<String, usize>,
}

impl Builder {
    fn node(
        &mut self,
        id: String,
        label: impl FnOnce() -> String,
        kind: NodeKind,
        group: Option<&str>,
    ) -> usize {
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        let i = self.g.nodes.len();
        self.g.nodes.push(Node {
            id: id.clone(),
            label: label(),
            kind,
            group: group.map(str::to_string),
            service: None,
        });
        self.index.insert(id, i);
        i
    }
    fn edge(&mut self, from: usize, to: usize, label: String, service: Option<NamespacedName>) {
        self.g.edges.push(Edge {
            from,
            to,
            label,
            service,
        });
    }
}

impl Graph {
    /// The graph of `rulesets` (one per family; node ids carry the family).
    pub fn from_rulesets(rulesets: &[Ruleset]) -> Self {
        let mut b = Builder {
            g: Graph::default(),
            index: HashMap::new(),
        };
        for rs in rulesets {
            let owners = Owners::of(rs);
            // Chain names used in more than one table get the table in their label.
            let mut seen: HashMap<&str, BTreeSet<&str>> = HashMap::new();
            for t in &rs.tables {
                for c in &t.chains {
                    seen.entry(c.name.as_str()).or_default().insert(&t.name);
                }
            }
            let ambiguous = |name: &str| seen.get(name).is_some_and(|s| s.len() > 1);
            for t in &rs.tables {
                add_table(&mut b, t, &owners, &ambiguous);
            }
        }
        let mut g = b.g;
        g.prune();
        g
    }

    /// Drops nodes without edges (chains without rules, which the jumps to
    /// them skip, and hooks left without jumps).
    ///
    /// When there are hooks, only what they reach is kept (nftables
    /// helper chains whose map elements are absent, for one).
    fn prune(&mut self) {
        let mut used = vec![false; self.nodes.len()];
        for e in &self.edges {
            used[e.from] = true;
            used[e.to] = true;
        }
        let hooks: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| used[i] && self.nodes[i].kind == NodeKind::Hook)
            .collect();
        if !hooks.is_empty() {
            let mut succ: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
            for e in &self.edges {
                succ[e.from].push(e.to);
            }
            let mut reached = vec![false; self.nodes.len()];
            let mut stack = hooks;
            while let Some(i) = stack.pop() {
                if !std::mem::replace(&mut reached[i], true) {
                    stack.extend(succ[i].iter().copied());
                }
            }
            used = reached;
        }
        self.retain(|i, _| used[i]);
    }

    /// Keeps the nodes `keep(index, node)` accepts and the edges between them
    /// (moved, not copied: a 10k-Service graph is hundreds of MiB).
    fn retain(&mut self, keep: impl Fn(usize, &Node) -> bool) {
        let old = std::mem::take(&mut self.nodes);
        let mut map = vec![None; old.len()];
        for (i, n) in old.into_iter().enumerate() {
            if keep(i, &n) {
                map[i] = Some(self.nodes.len());
                self.nodes.push(n);
            }
        }
        self.edges = std::mem::take(&mut self.edges)
            .into_iter()
            .filter_map(|mut e| {
                e.from = map[e.from]?;
                e.to = map[e.to]?;
                Some(e)
            })
            .collect();
    }

    /// The subgraph of one Service: its own nodes, what they lead to, and
    /// the paths from the hooks that lead to them; edges that belong to
    /// other Services are left out.
    pub fn service(&self, svc: &NamespacedName) -> Graph {
        let ok = |e: &Edge| e.service.as_ref().is_none_or(|s| s == svc);
        let n = self.nodes.len();
        let mut own: Vec<usize> = (0..n)
            .filter(|&i| self.nodes[i].service.as_ref() == Some(svc))
            .collect();
        own.extend(
            self.edges
                .iter()
                .filter(|e| e.service.as_ref() == Some(svc))
                .map(|e| e.to),
        );
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut pred: Vec<Vec<usize>> = vec![Vec::new(); n];
        for e in self.edges.iter().filter(|e| ok(e)) {
            succ[e.from].push(e.to);
            pred[e.to].push(e.from);
        }
        let closure = |adj: &[Vec<usize>]| {
            let mut seen = vec![false; n];
            let mut stack = own.clone();
            while let Some(i) = stack.pop() {
                if !std::mem::replace(&mut seen[i], true) {
                    stack.extend(adj[i].iter().copied().filter(|&z| !seen[z]));
                }
            }
            seen
        };
        let fwd = closure(&succ);
        let back = closure(&pred);
        let mut g = Graph {
            nodes: self.nodes.clone(),
            edges: self.edges.iter().filter(|e| ok(e)).cloned().collect(),
            note: self.note.clone(),
        };
        g.retain(|i, _| fwd[i] || back[i]);
        g
    }

    /// The Services the graph's nodes belong to.
    pub fn services(&self) -> BTreeSet<NamespacedName> {
        self.nodes
            .iter()
            .filter_map(|n| n.service.clone())
            .collect()
    }

    /// The size a layout engine has to place: nodes plus edges.
    pub fn size(&self) -> usize {
        self.nodes.len() + self.edges.len()
    }

    /// The most detailed view of the graph whose [`size`](Self::size) is at
    /// most `budget` (the [`Detail::NodeLevel`] view when none is), with a
    /// [`note`](Self::note) saying what was folded.
    ///
    /// ```
    /// use kproxy_core::graph::{Detail, Graph};
    /// let g = Graph::default();
    /// assert_eq!(g.within(10).1, Detail::Full);
    /// ```
    pub fn within(self, budget: usize) -> (Graph, Detail) {
        if self.size() <= budget {
            return (self, Detail::Full);
        }
        let folded = self.fold_endpoints();
        if folded.size() <= budget {
            return (folded, Detail::FoldedEndpoints);
        }
        (self.node_level(), Detail::NodeLevel)
    }

    /// The graph at `detail`.
    pub fn at(self, detail: Detail) -> Graph {
        match detail {
            Detail::Full => self,
            Detail::FoldedEndpoints => self.fold_endpoints(),
            Detail::NodeLevel => self.node_level(),
        }
    }

    /// Each Service's endpoint chains (those the Service's own chains alone
    /// lead to and that lead to an endpoint) and its endpoints folded into
    /// one node `NS/NAME: N endpoints`; parallel edges merged.
    pub fn fold_endpoints(&self) -> Graph {
        let n = self.nodes.len();
        let mut pred: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut to_endpoint = vec![false; n];
        for e in &self.edges {
            pred[e.to].push(e.from);
            if self.nodes[e.to].kind == NodeKind::Endpoint {
                to_endpoint[e.from] = true;
            }
        }
        let owner = |i: usize| self.nodes[i].service.as_ref();
        let only_from = |i: usize, ok: &dyn Fn(usize) -> bool| pred[i].iter().all(|&p| ok(p));
        // Endpoint chains first, then the endpoints they (or their
        // Service's chains) alone lead to.
        let folded: Vec<bool> = (0..n)
            .map(|i| {
                let kind = self.nodes[i].kind;
                owner(i).is_some()
                    && (kind == NodeKind::Endpoint || kind == NodeKind::Chain && to_endpoint[i])
                    && only_from(i, &|p| owner(p) == owner(i))
            })
            .collect();
        let mut endpoints: HashMap<&NamespacedName, usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if folded[i]
                && node.kind == NodeKind::Endpoint
                && let Some(s) = &node.service
            {
                *endpoints.entry(s).or_default() += 1;
            }
        }
        let group = |i: usize| -> Option<(String, String)> {
            if !folded[i] {
                return None;
            }
            let s = owner(i)?;
            let count = endpoints.get(s).copied().unwrap_or(0);
            Some((
                format!("endpoints/{s}"),
                format!("{s}: {}", plural(count, "endpoint")),
            ))
        };
        let note = "each Service's endpoint chains and endpoints are folded into one node \
             (--service NS/NAME draws one Service in full)";
        self.fold(group, note)
    }

    /// Every Service's own chains, maps and verdicts folded into one node
    /// per table (`N Services`) and the endpoints into one node
    /// (`N endpoints`); the node-level chains (hooks, dispatch chains,
    /// masquerading) stay; parallel edges merged.
    pub fn node_level(&self) -> Graph {
        let mut services: HashMap<Option<&str>, BTreeSet<&NamespacedName>> = HashMap::new();
        let mut endpoints = 0;
        for node in &self.nodes {
            if node.kind == NodeKind::Endpoint {
                endpoints += 1;
            } else if let Some(s) = &node.service {
                services.entry(node.group.as_deref()).or_default().insert(s);
            }
        }
        let group = |i: usize| -> Option<(String, String)> {
            let node = &self.nodes[i];
            if node.kind == NodeKind::Endpoint {
                return Some(("endpoints".into(), plural(endpoints, "endpoint")));
            }
            node.service.as_ref()?;
            let g = node.group.as_deref();
            let count = services.get(&g).map_or(0, BTreeSet::len);
            Some((
                format!("services/{}", g.unwrap_or_default()),
                format!("{} (their chains)", plural(count, "Service")),
            ))
        };
        let note = "the Services' chains and endpoints are folded into one node per table \
             (--service NS/NAME draws one Service in full)";
        self.fold(group, note)
    }

    /// Replaces every node `group` names (`(id, label)`) by one node per
    /// id, drops the edges inside a group and merges parallel edges (one
    /// label when they share it, else `N rules`).
    fn fold(&self, group: impl Fn(usize) -> Option<(String, String)>, note: &str) -> Graph {
        let mut nodes: Vec<Node> = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut map = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let Some((id, label)) = group(i) else {
                map.push((nodes.len(), false));
                nodes.push(node.clone());
                continue;
            };
            let j = *ids.entry(id.clone()).or_insert_with(|| {
                nodes.push(Node {
                    id,
                    label,
                    kind: node.kind,
                    group: node.group.clone(),
                    service: node.service.clone(),
                });
                nodes.len() - 1
            });
            if nodes[j].service != node.service {
                nodes[j].service = None;
            }
            if nodes[j].group != node.group {
                nodes[j].group = None;
            }
            if nodes[j].kind != node.kind {
                nodes[j].kind = NodeKind::Chain;
            }
            map.push((j, true));
        }
        // (from, to) -> (edge index, label or None when they differ, count)
        let mut merged: HashMap<(usize, usize), usize> = HashMap::new();
        let mut edges: Vec<(Edge, bool, usize)> = Vec::new();
        for e in &self.edges {
            let ((from, f), (to, t)) = (map[e.from], map[e.to]);
            if from == to && f && t {
                continue;
            }
            match merged.get(&(from, to)) {
                Some(&k) => {
                    let (edge, same, count) = &mut edges[k];
                    *same &= edge.label == e.label;
                    *count += 1;
                    if edge.service != e.service {
                        edge.service = None;
                    }
                }
                None => {
                    merged.insert((from, to), edges.len());
                    edges.push((
                        Edge {
                            from,
                            to,
                            ..e.clone()
                        },
                        true,
                        1,
                    ));
                }
            }
        }
        let edges = edges
            .into_iter()
            .map(|(mut e, same, count)| {
                if !same {
                    e.label = plural(count, "rule");
                }
                e
            })
            .collect();
        let note = match &self.note {
            Some(old) => format!("{old}; {note}"),
            None => note.to_string(),
        };
        Graph {
            nodes,
            edges,
            note: Some(note),
        }
    }

    /// Graphviz DOT, left to right, one cluster per table; a
    /// [`note`](Self::note) is a comment and the graph's label.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph kproxy {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n  edge [fontname=\"monospace\", fontsize=9];\n",
        );
        if let Some(note) = &self.note {
            let _ = writeln!(out, "  // {}", note.replace('\n', " "));
            let _ = writeln!(
                out,
                "  label={};\n  labelloc=t;\n  fontname=\"monospace\";",
                quote(note)
            );
        }
        let mut groups: Vec<&str> = Vec::new();
        for n in &self.nodes {
            if let Some(g) = &n.group
                && !groups.contains(&g.as_str())
            {
                groups.push(g);
            }
        }
        for (gi, group) in groups.iter().enumerate() {
            let _ = writeln!(out, "  subgraph cluster_{gi} {{");
            let _ = writeln!(out, "    label={};", quote(group));
            for n in self
                .nodes
                .iter()
                .filter(|n| n.group.as_deref() == Some(group))
            {
                let _ = writeln!(out, "    {}", node_stmt(n));
            }
            out.push_str("  }\n");
        }
        for n in self.nodes.iter().filter(|n| n.group.is_none()) {
            let _ = writeln!(out, "  {}", node_stmt(n));
        }
        for e in &self.edges {
            let (from, to) = (&self.nodes[e.from], &self.nodes[e.to]);
            let _ = write!(out, "  {} -> {}", quote(&from.id), quote(&to.id));
            if !e.label.is_empty() {
                let _ = write!(out, " [label={}]", quote(&e.label));
            }
            out.push_str(";\n");
        }
        out.push_str("}\n");
        out
    }
}

/// `1 endpoint`, `3 endpoints`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn node_stmt(n: &Node) -> String {
    let style = match n.kind {
        NodeKind::Hook => ", shape=cds, style=filled, fillcolor=\"#dde8ff\"",
        NodeKind::Chain => "",
        NodeKind::Map => ", shape=trapezium, style=filled, fillcolor=\"#fff2cc\"",
        NodeKind::Endpoint => ", shape=ellipse, style=filled, fillcolor=\"#d9f2d9\"",
        NodeKind::Verdict => ", shape=octagon, style=filled, fillcolor=\"#f2dede\"",
    };
    format!("{} [label={}{style}];", quote(&n.id), quote(&n.label))
}

/// A DOT double-quoted string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn add_table(b: &mut Builder, t: &Table, owners: &Owners<'_>, ambiguous: &dyn Fn(&str) -> bool) {
    let (backend, fam, ip_family) = family_word(t.family);
    let group = format!("{backend} {} ({ip_family})", t.name);
    let prefix = format!("{fam}/{}", t.name);
    let chain_id = |name: &str| format!("{prefix}/{name}");
    let chains: HashMap<&str, &crate::ir::Chain> =
        t.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let maps: HashMap<&str, &crate::ir::Map> =
        t.maps.iter().map(|m| (m.name.as_str(), m)).collect();
    let chain_label = |name: &str| -> String {
        match chains.get(name).map(|c| &c.kind) {
            Some(ChainKind::Builtin(_)) => format!("{} {name}", t.name),
            Some(ChainKind::Base { hook, priority, .. }) => {
                format!("{name} (hook {}, priority {priority})", hook.as_nft())
            }
            _ if ambiguous(name) => format!("{name} ({})", t.name),
            _ => name.to_string(),
        }
    };
    let chain_kind = |name: &str| match chains.get(name).map(|c| &c.kind) {
        Some(ChainKind::Builtin(_) | ChainKind::Base { .. }) => NodeKind::Hook,
        _ => NodeKind::Chain,
    };
    let chain_node = |b: &mut Builder, name: &str| {
        let i = b.node(
            chain_id(name),
            || chain_label(name),
            chain_kind(name),
            Some(&group),
        );
        if b.g.nodes[i].service.is_none() {
            b.g.nodes[i].service = owners.chain(&t.name, name).cloned();
        }
        i
    };
    // A jump to a regular chain without rules does nothing: left out.
    let empty = |name: &str| {
        chains
            .get(name)
            .is_some_and(|c| c.kind == ChainKind::Regular && c.rules.is_empty())
    };
    // The node an edge leads to (`None`: left out: an empty chain or map,
    // or nothing).
    let target_node =
        |b: &mut Builder, target: Target<'_>, svc: Option<&NamespacedName>| -> Option<usize> {
            Some(match target {
                Target::Chain(name) if empty(name) => return None,
                Target::Chain(name) => chain_node(b, name),
                Target::Endpoint(sa) => endpoint_node(b, sa, svc),
                Target::Map(map) if maps.get(map).is_some_and(|m| m.elements.is_empty()) => {
                    return None;
                }
                Target::Map(map) => b.node(
                    format!("{prefix}/@{map}"),
                    || format!("@{map}"),
                    NodeKind::Map,
                    Some(&group),
                ),
                Target::Verdict(text) => b.node(
                    format!("{prefix}/verdict/{text}"),
                    || text.clone(),
                    NodeKind::Verdict,
                    Some(&group),
                ),
                Target::None => return None,
            })
        };
    // Hooks first, so that they lead the picture.
    for c in &t.chains {
        if !matches!(c.kind, ChainKind::Regular) {
            chain_node(b, c.name.as_str());
        }
    }
    for c in &t.chains {
        let from = chain_node(b, c.name.as_str());
        for rule in &c.rules {
            let svc = owners.rule(&t.name, c.name.as_str(), rule);
            let label = summary(rule);
            let Some(v) = &rule.verdict else { continue };
            let targets = verdict_targets(v, &label);
            for (target, label) in targets {
                if let Some(to) = target_node(b, target, svc.as_ref()) {
                    b.edge(from, to, label, svc.clone());
                }
            }
        }
    }
    // Verdict maps fan out to their elements' verdicts.
    for m in &t.maps {
        let id = format!("{prefix}/@{}", m.name);
        let Some(&from) = b.index.get(&id) else {
            continue;
        };
        for (e, MapValue::Verdict(v)) in &m.elements {
            let key = e.key.iter().map(key_value).collect::<Vec<_>>().join(" . ");
            let svc = owners.element(&t.name, &m.name, &e.key).cloned();
            for (target, label) in verdict_targets(v, &key) {
                if let Some(to) = target_node(b, target, svc.as_ref()) {
                    b.edge(from, to, label, svc.clone());
                }
            }
        }
    }
}

fn endpoint_node(b: &mut Builder, sa: &SocketAddr, svc: Option<&NamespacedName>) -> usize {
    let i = b.node(
        format!("endpoint/{sa}"),
        || sa.to_string(),
        NodeKind::Endpoint,
        None,
    );
    if b.g.nodes[i].service.is_none() {
        b.g.nodes[i].service = svc.cloned();
    }
    i
}

enum Target<'a> {
    Chain(&'a str),
    Endpoint(&'a SocketAddr),
    Map(&'a str),
    Verdict(String),
    None,
}

/// Where a verdict goes, with the edge label (`label`, plus `p=…` for a
/// random choice).
fn verdict_targets<'a>(v: &'a Verdict, label: &str) -> Vec<(Target<'a>, String)> {
    let with_p = |n: usize| {
        let p = format!("p={}", probability(n));
        if label.is_empty() {
            p
        } else {
            format!("{label} {p}")
        }
    };
    match v {
        Verdict::Jump(c) | Verdict::Goto(c) => vec![(Target::Chain(c.as_str()), label.into())],
        Verdict::Dnat(sa) => vec![(Target::Endpoint(sa), label.into())],
        Verdict::DnatRandom { to } if to.len() == 1 => to
            .iter()
            .map(|sa| (Target::Endpoint(sa), label.into()))
            .collect(),
        Verdict::DnatRandom { to } => to
            .iter()
            .map(|sa| (Target::Endpoint(sa), with_p(to.len())))
            .collect(),
        Verdict::RandomVerdictMap { to } => to
            .iter()
            .map(|c| (Target::Chain(c.as_str()), with_p(to.len())))
            .collect(),
        Verdict::VerdictMap { keys, map } => {
            let k = keys_text(keys);
            let l = if label.is_empty() {
                k
            } else {
                format!("{label} {k}")
            };
            vec![(Target::Map(map), l)]
        }
        Verdict::Return => vec![(Target::None, String::new())],
        Verdict::Accept => vec![(Target::Verdict("ACCEPT".into()), label.into())],
        Verdict::Drop => vec![(Target::Verdict("DROP".into()), label.into())],
        Verdict::Reject => vec![(Target::Verdict("REJECT".into()), label.into())],
        Verdict::Masquerade { random_fully } => vec![(
            Target::Verdict(if *random_fully {
                "MASQUERADE --random-fully".into()
            } else {
                "MASQUERADE".into()
            }),
            label.into(),
        )],
        Verdict::SetMark { op, value } => {
            vec![(Target::Verdict(mark_text(*op, *value)), label.into())]
        }
        Verdict::Opaque(text) => vec![(Target::Verdict(text.clone()), label.into())],
    }
}

/// `1/n` as a short decimal: `0.5`, `0.3333`, `1`.
fn probability(n: usize) -> String {
    let p = 1.0 / n.max(1) as f64;
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn mark_text(op: MarkOp, value: u32) -> String {
    match op {
        MarkOp::Or => format!("MARK or {value:#x}"),
        MarkOp::Xor => format!("MARK xor {value:#x}"),
    }
}

fn key_text(k: Key) -> &'static str {
    match k {
        Key::SrcAddr => "saddr",
        Key::DstAddr => "daddr",
        Key::L4Proto => "l4proto",
        Key::DstPort => "dport",
    }
}

fn keys_text(ks: &[Key]) -> String {
    ks.iter()
        .map(|k| key_text(*k))
        .collect::<Vec<_>>()
        .join(" . ")
}

fn key_value(v: &crate::ir::KeyValue) -> String {
    use crate::ir::KeyValue;
    match v {
        KeyValue::Ip(ip) => ip.to_string(),
        KeyValue::Net(n) => n.to_string(),
        KeyValue::Proto(p) => p.as_lower().to_string(),
        KeyValue::Port(p) => p.to_string(),
    }
}

fn addr_text(a: &AddrMatch) -> String {
    match a {
        AddrMatch::Ip(ip) => ip.to_string(),
        AddrMatch::Net(n) => n.to_string(),
    }
}

/// A short, backend-neutral summary of a rule's matches (comments and
/// counters left out): `tcp 10.79.250.127:80`, `! -s 10.76.0.0/14`, `p=0.5`.
///
/// ```
/// use kproxy_core::graph::summary;
/// use kproxy_core::ir::*;
/// use kproxy_core::model::Protocol;
/// let r = Rule::new()
///     .with(Match::Protocol(Protocol::Udp))
///     .with(Match::DstPort(30053))
///     .with(Match::Probability { one_in: 3 });
/// assert_eq!(summary(&r), "udp dport 30053 p=0.3333");
/// ```
pub fn summary(rule: &Rule) -> String {
    let mut words: Vec<String> = Vec::new();
    // `proto dst:port` when the rule has a plain destination.
    let proto = rule.matches.iter().find_map(|m| match m {
        Match::Protocol(p) => Some(*p),
        _ => None,
    });
    let dst = rule.matches.iter().find_map(|m| match m {
        Match::Addr {
            dir: Direction::Dst,
            addr,
            negate: false,
        } => Some(*addr),
        _ => None,
    });
    let port = rule.matches.iter().find_map(|m| match m {
        Match::DstPort(p) => Some(*p),
        _ => None,
    });
    let head = match (proto, dst, port) {
        (Some(p), Some(AddrMatch::Ip(ip)), Some(port)) => {
            Some(format!("{p} {}", SocketAddr::new(ip, port)))
        }
        (Some(p), Some(d), None) => Some(format!("{p} -d {}", addr_text(&d))),
        (Some(p), None, Some(port)) => Some(format!("{p} dport {port}")),
        (Some(p), Some(d), Some(port)) => Some(format!("{p} -d {} dport {port}", addr_text(&d))),
        (Some(p), None, None) => Some(p.to_string()),
        (None, Some(d), _) => Some(format!("-d {}", addr_text(&d))),
        (None, None, Some(port)) => Some(format!("dport {port}")),
        (None, None, None) => None,
    };
    words.extend(head);
    for m in &rule.matches {
        let w = match m {
            Match::Comment(_) | Match::Protocol(_) | Match::DstPort(_) => continue,
            Match::Addr {
                dir: Direction::Dst,
                negate: false,
                ..
            } => continue,
            Match::Addr { dir, addr, negate } => format!(
                "{}{} {}",
                if *negate { "! " } else { "" },
                match dir {
                    Direction::Src => "-s",
                    Direction::Dst => "-d",
                },
                addr_text(addr)
            ),
            Match::InInterface {
                name,
                prefix,
                negate,
            } => format!(
                "{}-i {name}{}",
                if *negate { "! " } else { "" },
                if *prefix { "+" } else { "" }
            ),
            Match::PhysDevIsIn { negate } => {
                format!("{}physdev-is-in", if *negate { "! " } else { "" })
            }
            Match::AddrTypeLocal { dir, negate } => format!(
                "{}{}-type LOCAL",
                if *negate { "! " } else { "" },
                match dir {
                    Direction::Src => "src",
                    Direction::Dst => "dst",
                }
            ),
            Match::CtState { states, negate } => format!(
                "{}ctstate {}",
                if *negate { "! " } else { "" },
                states
                    .iter()
                    .map(|s| s.as_iptables())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Match::Mark {
                value,
                mask,
                negate,
            } => format!(
                "{}mark {value:#x}/{mask:#x}",
                if *negate { "! " } else { "" }
            ),
            Match::Probability { one_in } => {
                format!("p={}", probability(*one_in as usize))
            }
            Match::Recent { name, op } => match op {
                RecentOp::Set => format!("recent set {name}"),
                RecentOp::Check { seconds, .. } => format!("recent {name} {seconds}s"),
            },
            // A counter: always matches.
            Match::Nfacct(_) => continue,
            Match::InSet { keys, set, negate } => format!(
                "{} {}@{set}",
                keys_text(keys),
                if *negate { "!= " } else { "" }
            ),
            Match::AddrSet { dir, addrs, negate } => format!(
                "{}{} {{{}}}",
                if *negate { "! " } else { "" },
                match dir {
                    Direction::Src => "-s",
                    Direction::Dst => "-d",
                },
                addrs.iter().map(addr_text).collect::<Vec<_>>().join(",")
            ),
            Match::SetMark { op, value } => mark_text(*op, *value),
            Match::UpdateSet { keys, set } => format!("update @{set} {{{}}}", keys_text(keys)),
            Match::Opaque(text) => text.clone(),
        };
        words.push(w);
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Chain, Element, Hook, Map};
    use crate::model::Protocol;

    fn nat() -> Table {
        Table::new("nat", TableFamily::Iptables(IpFamily::V4))
    }

    #[test]
    fn probabilities_are_short() {
        assert_eq!(probability(1), "1");
        assert_eq!(probability(2), "0.5");
        assert_eq!(probability(3), "0.3333");
    }

    #[test]
    fn service_subgraph_keeps_paths_and_drops_other_services() {
        let mut t = nat();
        let mut pre = Chain::builtin(Hook::Prerouting);
        pre.push(Rule::new().verdict(Verdict::Jump("KUBE-SERVICES".into())));
        let mut services = Chain::new("KUBE-SERVICES");
        for (svc, chain) in [("ns/a", "KUBE-SVC-A"), ("ns/b", "KUBE-SVC-B")] {
            services.push(
                Rule::new()
                    .with(Match::Comment(format!("{svc} cluster IP")))
                    .with(Match::Protocol(Protocol::Tcp))
                    .verdict(Verdict::Jump(chain.into())),
            );
        }
        let mut a = Chain::new("KUBE-SVC-A");
        a.push(Rule::new().verdict(Verdict::Jump("KUBE-MARK-MASQ".into())));
        a.push(Rule::new().verdict(Verdict::Dnat("10.0.0.1:80".parse().unwrap())));
        let mut bch = Chain::new("KUBE-SVC-B");
        bch.push(Rule::new().verdict(Verdict::Jump("KUBE-MARK-MASQ".into())));
        let mut masq = Chain::new("KUBE-MARK-MASQ");
        masq.push(Rule::new().verdict(Verdict::SetMark {
            op: MarkOp::Or,
            value: 0x4000,
        }));
        t.chains = vec![pre, services, a, bch, masq];
        let g = Graph::from_rulesets(&[Ruleset { tables: vec![t] }]);
        assert_eq!(g.nodes.len(), 7);
        let sub = g.service(&NamespacedName::new("ns", "a"));
        let labels: Vec<&str> = sub.nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "nat PREROUTING",
                "KUBE-SERVICES",
                "KUBE-SVC-A",
                "KUBE-MARK-MASQ",
                "10.0.0.1:80",
                "MARK or 0x4000"
            ]
        );
        assert_eq!(sub.edges.len(), 5);
    }

    /// Two Services, `ns/a` with two endpoint chains, `ns/b` with one.
    fn two_services() -> Graph {
        let mut t = nat();
        let mut pre = Chain::builtin(Hook::Prerouting);
        pre.push(Rule::new().verdict(Verdict::Jump("KUBE-SERVICES".into())));
        let mut services = Chain::new("KUBE-SERVICES");
        let mut chains = Vec::new();
        for (svc, eps) in [
            ("a", &["10.0.0.1:80", "10.0.0.2:80"][..]),
            ("b", &["10.0.0.3:80"][..]),
        ] {
            let svc_chain = format!("KUBE-SVC-{svc}");
            services.push(
                Rule::new()
                    .with(Match::Comment(format!("ns/{svc} cluster IP")))
                    .verdict(Verdict::Jump(svc_chain.as_str().into())),
            );
            let mut c = Chain::new(svc_chain);
            for (k, ep) in eps.iter().enumerate() {
                let sep = format!("KUBE-SEP-{svc}{k}");
                c.push(
                    Rule::new()
                        .with(Match::Comment(format!("ns/{svc} -> {ep}")))
                        .with(Match::Probability {
                            one_in: (eps.len() - k) as u32,
                        })
                        .verdict(Verdict::Jump(sep.as_str().into())),
                );
                let mut s = Chain::new(sep);
                s.push(
                    Rule::new()
                        .with(Match::Comment(format!("ns/{svc}")))
                        .verdict(Verdict::Jump("KUBE-MARK-MASQ".into())),
                );
                s.push(
                    Rule::new()
                        .with(Match::Comment(format!("ns/{svc}")))
                        .verdict(Verdict::Dnat(ep.parse().unwrap())),
                );
                chains.push(s);
            }
            chains.insert(0, c);
        }
        let mut masq = Chain::new("KUBE-MARK-MASQ");
        masq.push(Rule::new().verdict(Verdict::SetMark {
            op: MarkOp::Or,
            value: 0x4000,
        }));
        t.chains = vec![pre, services, masq];
        t.chains.extend(chains);
        Graph::from_rulesets(&[Ruleset { tables: vec![t] }])
    }

    fn labels(g: &Graph) -> Vec<&str> {
        let mut l: Vec<&str> = g.nodes.iter().map(|n| n.label.as_str()).collect();
        l.sort_unstable();
        l
    }

    #[test]
    fn endpoint_chains_fold_into_one_node_per_service() {
        let g = two_services();
        assert_eq!(g.note, None);
        assert!(
            g.services().contains(&NamespacedName::new("ns", "a")),
            "{g:?}"
        );
        let f = g.fold_endpoints();
        assert_eq!(
            labels(&f),
            [
                "KUBE-MARK-MASQ",
                "KUBE-SERVICES",
                "KUBE-SVC-a",
                "KUBE-SVC-b",
                "MARK or 0x4000",
                "nat PREROUTING",
                "ns/a: 2 endpoints",
                "ns/b: 1 endpoint"
            ]
        );
        let dot = f.to_dot();
        // Parallel edges merged: one label when they share it, else a count.
        assert!(
            dot.contains("\"ip4/nat/KUBE-SVC-a\" -> \"endpoints/ns/a\" [label=\"2 rules\"]"),
            "{dot}"
        );
        assert!(
            dot.contains("\"ip4/nat/KUBE-SVC-b\" -> \"endpoints/ns/b\" [label=\"p=1\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"endpoints/ns/a\" -> \"ip4/nat/KUBE-MARK-MASQ\";"),
            "{dot}"
        );
        assert!(dot.contains("  // each Service's endpoint chains"), "{dot}");
        assert!(f.size() < g.size());
        // Small enough: nothing folded.
        assert_eq!(g.clone().within(g.size()), (g.clone(), Detail::Full));
        assert_eq!(g.within(f.size()), (f, Detail::FoldedEndpoints));
    }

    #[test]
    fn node_level_keeps_the_node_chains_only() {
        let g = two_services();
        let n = g.node_level();
        assert_eq!(
            labels(&n),
            [
                "2 Services (their chains)",
                "3 endpoints",
                "KUBE-MARK-MASQ",
                "KUBE-SERVICES",
                "MARK or 0x4000",
                "nat PREROUTING"
            ]
        );
        assert_eq!(n.edges.len(), 5, "{}", n.to_dot());
        assert_eq!(g.within(1), (n, Detail::NodeLevel));
    }

    #[test]
    fn verdict_maps_fan_out() {
        let mut t = Table::new("kube-proxy", TableFamily::Nft(IpFamily::V4));
        let mut services = Chain::new("services");
        services.push(Rule::new().verdict(Verdict::VerdictMap {
            keys: vec![Key::DstAddr, Key::L4Proto, Key::DstPort],
            map: "service-ips".into(),
        }));
        let chain = "service-AAAAAAAA-ns/a/tcp/";
        let mut c = Chain::new(chain);
        c.push(
            Rule::new()
                .with(Match::Protocol(Protocol::Tcp))
                .verdict(Verdict::DnatRandom {
                    to: vec![
                        "10.0.0.1:80".parse().unwrap(),
                        "10.0.0.2:80".parse().unwrap(),
                    ],
                }),
        );
        t.chains = vec![services, c];
        t.maps.push(Map {
            name: "service-ips".into(),
            type_spec: String::new(),
            value_type: "verdict".into(),
            flags: vec![],
            comment: None,
            elements: vec![(
                Element {
                    key: vec![
                        crate::ir::KeyValue::Ip("10.96.0.1".parse().unwrap()),
                        crate::ir::KeyValue::Proto(Protocol::Tcp),
                        crate::ir::KeyValue::Port(80),
                    ],
                    comment: None,
                },
                MapValue::Verdict(Verdict::Goto(chain.into())),
            )],
        });
        let g = Graph::from_rulesets(&[Ruleset { tables: vec![t] }]);
        let dot = g.to_dot();
        assert!(
            dot.contains("-> \"ip4/kube-proxy/@service-ips\" [label=\"daddr . l4proto . dport\"]"),
            "{dot}"
        );
        assert!(dot.contains("[label=\"10.96.0.1 . tcp . 80\"]"), "{dot}");
        assert!(dot.contains("[label=\"tcp p=0.5\"]"), "{dot}");
    }
}
