//! The engine's command sequences, without root: a recording executor
//! answers every command.

use std::time::{Duration, Instant};

use kproxy_core::model::{ClusterState, Endpoint, IpFamily, LocalDetector, NodeConfig};
use kproxy_core::profile::IptablesProfile;
use kproxy_core::sync::{Compiled, Compiler, FULL_SYNC_PERIOD, FailureKind, Outcome};
use kproxy_core::synthetic::cluster;

use super::*;

fn node() -> NodeConfig {
    let mut n = NodeConfig::new(IpFamily::V4, "node-1");
    n.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    n
}

/// Runs the engine's commands; `answer` answers each. Returns the
/// commands and the sync's report.
fn drive(
    engine: &mut Engine,
    now: Instant,
    mut answer: impl FnMut(&Command) -> Outcome,
) -> (Vec<Command>, SyncReport) {
    let mut cmds = Vec::new();
    while let Some(c) = engine.poll_command(now) {
        let o = answer(&c);
        cmds.push(c);
        engine.handle_outcome(now, o);
        assert!(cmds.len() < 10_000, "unbounded");
    }
    let Some(Report::Sync(r)) = engine.poll_report() else {
        panic!("no sync report");
    };
    (cmds, r)
}

/// The node holds nothing: `iptables-save` prints nothing, every `-C` fails.
fn empty_node(c: &Command) -> Outcome {
    match c {
        Command::Check { .. } => Outcome::Failed("iptables: Bad rule".into()),
        _ => Outcome::Done(String::new()),
    }
}

/// The commands' kinds, nfacct's aside (see [`nfacct_counters_once`]).
fn kinds(cmds: &[Command]) -> Vec<&'static str> {
    cmds.iter()
        .filter(|c| !matches!(c, Command::ListCounters | Command::AddCounter { .. }))
        .map(|c| match c {
            Command::Save { .. } => "save",
            Command::Restore { .. } => "restore",
            Command::Check { .. } => "check",
            Command::Insert { .. } => "insert",
            Command::ListChain { .. } => "list",
            Command::ListCounters => "nfacct-list",
            Command::AddCounter { .. } => "nfacct-add",
            Command::Conntrack { .. } => "conntrack",
        })
        .collect()
}

fn restores(cmds: &[Command]) -> Vec<&str> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Restore { input, .. } => Some(input.as_ref()),
            _ => None,
        })
        .collect()
}

struct Setup {
    engine: Engine,
    compiler: Compiler<Layout>,
    targets: Vec<(NodeConfig, Layout)>,
    now: Instant,
}

impl Setup {
    fn new(profile: IptablesProfile) -> Self {
        Self {
            engine: Engine::new(),
            compiler: Compiler::new(),
            targets: vec![(node(), Layout(profile))],
            now: Instant::now(),
        }
    }

    fn compile(&mut self, state: &ClusterState) -> Vec<Compiled> {
        let full = self.engine.next_is_full(self.now);
        let c = self
            .compiler
            .compile(state, &self.targets, full)
            .expect("compile");
        self.engine.sync_compiled(self.now, &c);
        c
    }
}

const PROFILES: [IptablesProfile; 2] = [IptablesProfile::Current, IptablesProfile::V1_5];

#[test]
fn first_sync_reads_writes_and_ensures_the_jumps() {
    for profile in PROFILES {
        let mut s = Setup::new(profile);
        s.compile(&cluster(10, 2));
        let (cmds, r) = drive(&mut s.engine, s.now, empty_node);
        let k = kinds(&cmds);
        assert_eq!(k[..2], ["save", "restore"], "{profile:?}");
        // Each jump checked, then inserted when missing.
        // Then the UDP Services' first endpoints' conntrack entries.
        let jumps = k.iter().take_while(|k| **k != "conntrack").count();
        let rest = &k[2..jumps];
        assert!(!rest.is_empty());
        for pair in rest.chunks(2) {
            assert_eq!(pair, ["check", "insert"], "{profile:?}: {k:?}");
        }
        assert!(k[jumps..].iter().all(|k| *k == "conntrack") && jumps < k.len());
        let input = restores(&cmds)[0];
        assert!(input.starts_with("*filter\n"), "{input}");
        assert!(input.contains(":KUBE-SERVICES - [0:0]\n"));
        assert!(r.ok() && r.full);
        assert_eq!(
            r.families[0].counts["nat"],
            input.matches("\n-A ").count() - r.families[0].rules_written["filter"]
        );
        assert!(!s.engine.next_is_full(s.now));
        // The jumps as kube-proxy ensures them: -C then -I at the top.
        let insert = cmds
            .iter()
            .find(|c| matches!(c, Command::Insert { .. }))
            .expect("an insert");
        let Command::Insert { rule, .. } = insert else {
            panic!("{insert:?}");
        };
        assert_eq!(insert.program(), "iptables");
        assert_eq!(
            insert.args()[..6],
            ["-w", "5", "-t", &rule.table, "-I", &rule.chain]
        );
    }
}

#[test]
fn an_endpoint_change_writes_only_its_chains() {
    for profile in PROFILES {
        let mut s = Setup::new(profile);
        let mut state = cluster(10, 2);
        s.compile(&state);
        drive(&mut s.engine, s.now, empty_node);
        state.endpoint_slices[1]
            .endpoints
            .push(Endpoint::ready("10.99.0.1".parse().expect("ip")));
        let c = s.compile(&state);
        assert!(matches!(c[0], Compiled::Partial(_)));
        let (cmds, r) = drive(&mut s.engine, s.now, |_| Outcome::Done(String::new()));
        assert_eq!(kinds(&cmds), ["restore"], "{profile:?}");
        let input = restores(&cmds)[0];
        assert!(input.contains("10.99.0.1"), "{input}");
        assert!(
            !input.contains("*filter"),
            "{profile:?}: only nat changes: {input}"
        );
        assert!(r.ok() && !r.full);
        assert_eq!(r.families[0].services, 1);
    }
}

#[test]
fn a_service_removed_deletes_its_chains_and_edits_the_fixed_ones() {
    let mut s = Setup::new(IptablesProfile::Current);
    let mut state = cluster(10, 2);
    s.compile(&state);
    drive(&mut s.engine, s.now, empty_node);
    state.services.remove(2);
    s.compile(&state);
    let (cmds, r) = drive(&mut s.engine, s.now, |_| Outcome::Done(String::new()));
    let input = restores(&cmds)[0];
    assert!(input.contains("\n-X KUBE-SVC-"), "{input}");
    assert!(
        input.contains("\n-D KUBE-SERVICES "),
        "edited in place: {input}"
    );
    assert!(!r.families[0].edited.is_empty());
}

#[test]
fn a_udp_service_losing_an_endpoint_cleans_conntrack() {
    let mut s = Setup::new(IptablesProfile::Current);
    let mut state = cluster(10, 2);
    s.compile(&state);
    drive(&mut s.engine, s.now, empty_node);
    // svc0 has a UDP port (every fifth Service).
    let gone = state.endpoint_slices[0].endpoints.remove(0);
    s.compile(&state);
    let (cmds, _) = drive(&mut s.engine, s.now, |_| Outcome::Done(String::new()));
    let k = kinds(&cmds);
    assert_eq!(k[0], "restore");
    assert!(
        k[1..].iter().all(|k| *k == "conntrack") && k.len() > 1,
        "{k:?}"
    );
    let ip = gone.address.to_string();
    assert!(
        cmds.iter()
            .any(|c| c.args().join(" ").ends_with(&format!("--dst-nat {ip}"))),
        "{cmds:?}"
    );
    // A conntrack failure that deleted nothing is none.
    state.endpoint_slices[0].endpoints.clear();
    s.compile(&state);
    let (_, r) = drive(&mut s.engine, s.now, |c| match c {
        Command::Conntrack { .. } => {
            Outcome::Failed("conntrack: 0 flow entries have been deleted.".into())
        }
        _ => Outcome::Done(String::new()),
    });
    assert!(r.families[0].conntrack_failures.is_empty());
}

#[test]
fn a_failed_write_makes_the_next_sync_full() {
    let mut s = Setup::new(IptablesProfile::Current);
    let mut state = cluster(10, 2);
    s.compile(&state);
    drive(&mut s.engine, s.now, empty_node);
    state.endpoint_slices[3].endpoints.clear();
    s.compile(&state);
    let (cmds, r) = drive(&mut s.engine, s.now, |c| match c {
        Command::Restore { .. } => Outcome::Failed("iptables-restore: line 3 failed".into()),
        _ => Outcome::Done(String::new()),
    });
    assert_eq!(kinds(&cmds), ["restore"], "nothing after the failure");
    let e = r.families[0].error.as_ref().expect("failed");
    assert_eq!(e.kind, FailureKind::Write { partial: true });
    assert!(e.input.is_some());
    assert!(s.engine.next_is_full(s.now));
    let c = s.compile(&state);
    assert!(matches!(c[0], Compiled::Full(_)));
    let (cmds, r) = drive(&mut s.engine, s.now, empty_node);
    assert_eq!(kinds(&cmds)[..2], ["save", "restore"]);
    assert!(r.ok() && r.full);
}

#[test]
fn a_restart_writes_only_what_the_node_lacks() {
    for profile in PROFILES {
        let state = cluster(10, 2);
        let mut s = Setup::new(profile);
        s.compile(&state);
        let (cmds, _) = drive(&mut s.engine, s.now, empty_node);
        let first = restores(&cmds)[0].len();
        // What iptables-save prints of them.
        let last = s.engine.last(IpFamily::V4).expect("whole rules");
        let held = crate::print::print(last, print_options(&node())).expect("print");
        crate::parse::parse(&held, Some(IpFamily::V4)).expect("parses");
        // A new engine on a node that holds those rules.
        let mut again = Setup::new(profile);
        again.compile(&state);
        let (cmds, r) = drive(&mut again.engine, again.now, |c| match c {
            Command::Save { .. } => Outcome::Done(held.clone()),
            _ => Outcome::Done(String::new()),
        });
        // The endpoints' chains are not written again (kproxy's printer
        // writes addresses and matches in another order than iptables-save,
        // so chains matching addresses are; the kernel tests load real
        // iptables-save output).
        let input = restores(&cmds)[0];
        assert!(
            !input.contains("\n-A KUBE-SEP-"),
            "{profile:?}: rewrote: {input}"
        );
        assert!(input.len() < first, "{profile:?}: {input}");
        assert!(r.ok() && r.full);
        // Every jump checked and found; no conntrack entry is stale.
        assert!(
            kinds(&cmds)[2..]
                .iter()
                .all(|k| *k == "check" || *k == "conntrack")
        );
    }
}

#[test]
fn a_restart_deletes_stale_service_chains_of_any_release() {
    // kube-proxy 1.5's OnlyLocal chain left on the node: declared and
    // deleted by the first full sync of a node that has no kproxy rules.
    let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-XLB-ABCDEF - [0:0]\n:KUBE-FW-ABCDEF - [0:0]\n:MINE - [0:0]\nCOMMIT\n";
    let mut s = Setup::new(IptablesProfile::Current);
    s.compile(&cluster(3, 1));
    let (cmds, _) = drive(&mut s.engine, s.now, |c| match c {
        Command::Save { .. } => Outcome::Done(saved.into()),
        other => empty_node(other),
    });
    let input = restores(&cmds)[0];
    assert!(input.contains("\n-X KUBE-XLB-ABCDEF\n"), "{input}");
    assert!(input.contains("\n-X KUBE-FW-ABCDEF\n"), "{input}");
    assert!(!input.contains("MINE"), "{input}");
}

#[test]
fn canary_and_repair() {
    let mut s = Setup::new(IptablesProfile::Current);
    s.compile(&cluster(4, 1));
    drive(&mut s.engine, s.now, empty_node);
    s.engine.check_canary();
    let c = s.engine.poll_command(s.now).expect("a command");
    assert_eq!(c.args(), ["-w", "5", "-t", "mangle", "-S", CANARY]);
    s.engine.handle_outcome(
        s.now,
        Outcome::Failed("No chain/target/match by that name.".into()),
    );
    assert_eq!(s.engine.poll_command(s.now), None);
    assert_eq!(
        s.engine.poll_report(),
        Some(Report::Canary { present: false })
    );
    assert!(s.engine.next_is_full(s.now));
    // A repair writes the chain as last written and ensures the jumps.
    let mut s = Setup::new(IptablesProfile::Current);
    s.compile(&cluster(4, 1));
    drive(&mut s.engine, s.now, empty_node);
    let key = ("nat".to_string(), "KUBE-SERVICES".to_string());
    let jumps = [("nat".to_string(), "PREROUTING".to_string())];
    s.engine
        .repair(IpFamily::V4, std::slice::from_ref(&key), &jumps);
    let mut cmds = Vec::new();
    while let Some(c) = s.engine.poll_command(s.now) {
        cmds.push(c);
        s.engine.handle_outcome(s.now, Outcome::Done(String::new()));
    }
    assert_eq!(kinds(&cmds), ["restore", "check"]);
    assert!(restores(&cmds)[0].starts_with("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES "));
    assert!(matches!(s.engine.poll_report(), Some(Report::Repair(r)) if r.ok()));
    assert!(!s.engine.next_is_full(s.now));
}

#[test]
fn the_hourly_full_sync() {
    let mut s = Setup::new(IptablesProfile::Current);
    s.compile(&cluster(2, 1));
    drive(&mut s.engine, s.now, empty_node);
    assert!(!s.engine.next_is_full(s.now + Duration::from_secs(3599)));
    assert!(s.engine.next_is_full(s.now + FULL_SYNC_PERIOD));
}

#[test]
fn nfacct_counters_once() {
    let mut s = Setup::new(IptablesProfile::Current);
    let mut state = cluster(4, 1);
    s.compile(&state);
    let (cmds, _) = drive(&mut s.engine, s.now, |c| {
        match c {
        Command::ListCounters => Outcome::Done(
            "{ pkts = 00000000000000000000 bytes = 00000000000000000000 } = ct_state_invalid_dropped_pkts;\n"
                .into(),
        ),
        other => empty_node(other),
    }
    });
    let nfacct: Vec<String> = cmds
        .iter()
        .filter(|c| c.program() == "nfacct")
        .map(|c| c.args().join(" "))
        .collect();
    assert_eq!(nfacct, ["list", "add localhost_nps_accepted_pkts"]);
    assert!(
        matches!(cmds[1], Command::ListCounters),
        "before the restore: {cmds:?}"
    );
    // Known now: a partial sync asks nothing.
    state.endpoint_slices[1].endpoints.clear();
    s.compile(&state);
    let (cmds, _) = drive(&mut s.engine, s.now, |_| Outcome::Done(String::new()));
    assert!(cmds.iter().all(|c| c.program() != "nfacct"), "{cmds:?}");
}

#[test]
fn an_unreadable_node_is_written_whole_with_a_warning() {
    let mut s = Setup::new(IptablesProfile::Current);
    s.compile(&cluster(3, 1));
    let (cmds, r) = drive(&mut s.engine, s.now, |c| match c {
        Command::Save { .. } => Outcome::Failed("iptables-save: not found".into()),
        other => empty_node(other),
    });
    assert_eq!(kinds(&cmds)[..2], ["save", "restore"]);
    assert!(r.ok());
    let w = &r.families[0].warnings;
    assert_eq!(w.len(), 1);
    assert!(
        w[0].message.starts_with("cannot list the node's rules"),
        "{w:?}"
    );
}
