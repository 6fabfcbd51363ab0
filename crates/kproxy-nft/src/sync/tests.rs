//! The engine's transactions, without root: a recording executor answers
//! every command.

use std::time::{Duration, Instant};

use kproxy_core::model::{ClusterState, Endpoint, IpFamily, LocalDetector, NodeConfig};
use kproxy_core::profile::NftablesProfile;
use kproxy_core::sync::{Compiled, Compiler, FailureKind, Outcome};
use kproxy_core::synthetic::cluster;

use super::*;
use crate::Op;

fn node() -> NodeConfig {
    let mut n = NodeConfig::new(IpFamily::V4, "node-1");
    n.local_detector = LocalDetector::Cidr("10.0.0.0/8".parse().expect("constant"));
    n
}

const PROFILES: [NftablesProfile; 2] = [NftablesProfile::Current, NftablesProfile::Pre1_36];

struct Setup {
    engine: Engine,
    compiler: Compiler<Layout>,
    targets: Vec<(NodeConfig, Layout)>,
    now: Instant,
}

impl Setup {
    fn new(profile: NftablesProfile) -> Self {
        let mut engine = Engine::new();
        engine.stale_chain_delay = Duration::from_secs(1);
        Self {
            engine,
            compiler: Compiler::new(),
            targets: vec![(node(), Layout(profile))],
            now: Instant::now(),
        }
    }

    fn sync(&mut self, state: &ClusterState) -> Vec<Compiled> {
        let full = self.engine.next_is_full(self.now);
        let c = self
            .compiler
            .compile(state, &self.targets, full)
            .expect("compile");
        self.engine.sync_compiled(self.now, &c);
        c
    }

    /// Runs the commands, answering with `answer`.
    fn drive(&mut self, mut answer: impl FnMut(&Command) -> Outcome) -> (Vec<Command>, SyncReport) {
        let mut cmds = Vec::new();
        while let Some(c) = self.engine.poll_command(self.now) {
            let o = answer(&c);
            cmds.push(c);
            self.engine.handle_outcome(self.now, o);
            assert!(cmds.len() < 10_000, "unbounded");
        }
        let Some(Report::Sync(r)) = self.engine.poll_report() else {
            panic!("no sync report");
        };
        (cmds, r)
    }
}

/// Every command succeeds; the node holds no table yet.
fn ok(c: &Command) -> Outcome {
    match c {
        Command::ReadTable { .. } => Outcome::Failed("Error: No such file or directory".into()),
        _ => Outcome::Done(String::new()),
    }
}

/// The transactions among `cmds`: (purpose, ops).
fn transactions(cmds: &[Command]) -> Vec<(Purpose, &[Op])> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Transaction {
                purpose,
                transaction,
                ..
            } => {
                // The text is the printer's, of the operations.
                assert_eq!(
                    transaction.text,
                    crate::print::print(&transaction.transaction, Default::default())
                        .expect("print")
                );
                Some((*purpose, transaction.transaction.ops.as_slice()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn first_sync_replaces_the_table() {
    for profile in PROFILES {
        let mut s = Setup::new(profile);
        s.sync(&cluster(10, 2));
        let (cmds, r) = s.drive(ok);
        // A new engine reads the node's table first (a restarted agent
        // writes only what differs); there is none here.
        assert_eq!(
            cmds[0].args(),
            ["-j", "list", "table", "ip", "kube-proxy"],
            "{profile:?}"
        );
        let cmds = &cmds[1..];
        let tx = transactions(cmds);
        assert_eq!(tx.len(), 1, "{profile:?}");
        let (purpose, ops) = tx[0];
        assert_eq!(purpose, Purpose::Sync);
        assert_eq!(ops[0], Op::AddTable { comment: None });
        assert_eq!(ops[1], Op::DeleteTable);
        assert!(matches!(ops[2], Op::AddTable { .. }));
        assert!(
            cmds[1..].iter().all(|c| c.program() == "conntrack"),
            "{cmds:?}"
        );
        assert!(r.ok() && r.full && r.families[0].warnings.is_empty());
        // The table as the transaction builds it is what was compiled.
        let built = match &cmds[0] {
            Command::Transaction { transaction, .. } => {
                transaction.transaction.apply().expect("applies")
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            Some(&built),
            s.engine.last(IpFamily::V4).and_then(|l| l.tables.first())
        );
    }
}

#[test]
fn an_endpoint_change_adds_and_deletes_elements() {
    for profile in PROFILES {
        let mut s = Setup::new(profile);
        let mut state = cluster(10, 2);
        s.sync(&state);
        s.drive(ok);
        // An endpoint added: its Service's chain written again.
        state.endpoint_slices[1]
            .endpoints
            .push(Endpoint::ready("10.99.0.1".parse().expect("ip")));
        let c = s.sync(&state);
        assert!(matches!(c[0], Compiled::Partial(_)), "{profile:?}");
        let (cmds, r) = s.drive(ok);
        let tx = transactions(&cmds);
        assert_eq!(tx.len(), 1);
        assert!(cmds[0].stdin().is_some_and(|t| t.contains("10.99.0.1")));
        assert!(r.ok() && !r.full);
        assert!(s.engine.stale_chains().is_empty());
        // A Service removed: its chains go stale.
        let svc = state.services.remove(1);
        s.sync(&state);
        let (cmds, _) = s.drive(ok);
        let ops = transactions(&cmds)[0].1;
        let stale = s.engine.stale_chains();
        assert!(!stale.is_empty(), "{profile:?}");
        assert!(
            stale
                .iter()
                .all(|(_, c)| c.contains(&format!("{}/{}", svc.id.namespace, svc.id.name)))
        );
        // Flushed now, not deleted.
        for (_, c) in &stale {
            assert!(ops.contains(&Op::FlushChain(c.as_str().into())));
            assert!(!ops.contains(&Op::DeleteChain(c.as_str().into())));
        }
        // Deleted by a sync once the delay passed, in a transaction of its own.
        let more = |k: u8| Endpoint::ready(format!("10.98.0.{k}").parse().expect("ip"));
        state.endpoint_slices[2].endpoints.push(more(1));
        s.sync(&state);
        let (cmds, _) = s.drive(ok);
        assert_eq!(transactions(&cmds).len(), 1, "not yet due");
        s.now += Duration::from_secs(1);
        state.endpoint_slices[3].endpoints.push(more(2));
        s.sync(&state);
        let (cmds, _) = s.drive(ok);
        let tx = transactions(&cmds);
        assert_eq!(tx[0].0, Purpose::StaleCleanup);
        let deleted: Vec<Op> = stale
            .iter()
            .map(|(_, c)| Op::DeleteChain(c.as_str().into()))
            .collect();
        assert_eq!(tx[0].1, deleted.as_slice());
        assert_eq!(tx[1].0, Purpose::Sync);
        assert!(s.engine.stale_chains().is_empty());
    }
}

#[test]
fn a_service_removed_deletes_its_elements() {
    let mut s = Setup::new(NftablesProfile::Current);
    let mut state = cluster(10, 2);
    s.sync(&state);
    s.drive(ok);
    state.services.remove(4);
    s.sync(&state);
    let (cmds, _) = s.drive(ok);
    let ops = transactions(&cmds)[0].1;
    assert!(
        ops.iter().any(|o| matches!(o, Op::DeleteElement(..))),
        "{ops:?}"
    );
    let text = cmds[0].stdin().expect("text");
    assert!(text.contains("delete element ip kube-proxy "), "{text}");
}

#[test]
fn a_failed_transaction_makes_the_next_sync_full() {
    let mut s = Setup::new(NftablesProfile::Current);
    let mut state = cluster(10, 2);
    s.sync(&state);
    s.drive(ok);
    state.endpoint_slices[0].endpoints.clear();
    s.sync(&state);
    let (cmds, r) = s.drive(|c| match c {
        Command::Transaction { .. } => {
            Outcome::Failed("/dev/stdin:2:1-10: Error: No such file".into())
        }
        other => ok(other),
    });
    assert_eq!(cmds.len(), 1, "nothing after the failure: {cmds:?}");
    let e = r.families[0].error.as_ref().expect("failed");
    assert_eq!(e.kind, FailureKind::Write { partial: true });
    assert!(s.engine.next_is_full(s.now));
    assert!(s.engine.stale_chains().is_empty());
    let c = s.sync(&state);
    assert!(matches!(c[0], Compiled::Full(_)));
    let (cmds, r) = s.drive(ok);
    assert_eq!(transactions(&cmds)[0].1[1], Op::DeleteTable);
    assert!(r.ok() && r.full);
}

#[test]
fn a_failed_stale_cleanup_fails_a_partial_sync() {
    let mut s = Setup::new(NftablesProfile::Current);
    let mut state = cluster(10, 2);
    s.sync(&state);
    s.drive(ok);
    state.services.remove(1);
    s.sync(&state);
    s.drive(ok);
    assert!(!s.engine.stale_chains().is_empty());
    s.now += Duration::from_secs(2);
    state.endpoint_slices[2].endpoints.clear();
    s.sync(&state);
    let (cmds, r) = s.drive(|c| match c {
        Command::Transaction {
            purpose: Purpose::StaleCleanup,
            ..
        } => Outcome::Failed("Error: Device or resource busy".into()),
        other => ok(other),
    });
    assert_eq!(cmds.len(), 1);
    assert_eq!(
        r.families[0].error.as_ref().map(|e| e.kind),
        Some(FailureKind::StaleCleanup)
    );
    assert!(s.engine.next_is_full(s.now));
}

#[test]
fn canary() {
    let mut s = Setup::new(NftablesProfile::Current);
    s.sync(&cluster(2, 1));
    s.drive(ok);
    s.engine.check_canary();
    let c = s.engine.poll_command(s.now).expect("a command");
    assert_eq!(c.args(), ["list", "tables", "ip"]);
    s.engine.handle_outcome(
        s.now,
        Outcome::Done("table ip kube-proxy\ntable ip filter\n".into()),
    );
    assert_eq!(s.engine.poll_command(s.now), None);
    assert_eq!(
        s.engine.poll_report(),
        Some(Report::Canary { present: true })
    );
    assert!(!s.engine.next_is_full(s.now));
    s.engine.check_canary();
    s.engine.poll_command(s.now);
    s.engine
        .handle_outcome(s.now, Outcome::Done("table ip filter\n".into()));
    s.engine.poll_command(s.now);
    assert_eq!(
        s.engine.poll_report(),
        Some(Report::Canary { present: false })
    );
    assert!(s.engine.next_is_full(s.now));
}

/// The engine's transactions, their operations concatenated.
fn all_ops(cmds: &[Command]) -> Vec<Op> {
    transactions(cmds)
        .into_iter()
        .flat_map(|(_, ops)| ops.iter().cloned())
        .collect()
}

fn is_base_rule(table: &Table, op: &Op) -> bool {
    match op {
        Op::AddRule(c, _) => table
            .chain(c.as_str())
            .is_some_and(|c| matches!(c.kind, kproxy_core::ir::ChainKind::Base { .. })),
        _ => false,
    }
}

#[test]
fn a_fresh_first_sync_is_split_and_woken_last() {
    for profile in PROFILES {
        let mut s = Setup::new(profile);
        s.engine.first_sync_chunk = 40;
        s.sync(&cluster(20, 2));
        let (cmds, r) = s.drive(ok);
        assert!(r.ok() && r.full, "{profile:?}: {r:?}");
        let tx = transactions(&cmds);
        assert!(tx.len() > 4, "{profile:?}: {} transactions", tx.len());
        assert!(
            tx.iter()
                .all(|(p, ops)| *p == Purpose::Sync && ops.len() <= 40)
        );
        let table = s
            .engine
            .last(IpFamily::V4)
            .and_then(|l| l.tables.first())
            .expect("written")
            .clone();
        // The first replaces any table and adds it dormant.
        let first = tx[0].1;
        assert_eq!(first[0], Op::AddTable { comment: None });
        assert_eq!(first[1], Op::DeleteTable);
        assert_eq!(
            first[2],
            Op::AddDormantTable {
                comment: table.comment.clone()
            }
        );
        // The last wakes it, alone; the one before holds the base chains'
        // rules, and only them.
        let (last, before) = (tx[tx.len() - 1].1, tx[tx.len() - 2].1);
        assert_eq!(
            last,
            [Op::AddTable {
                comment: table.comment.clone()
            }]
        );
        assert!(before.iter().all(|o| is_base_rule(&table, o)), "{before:?}");
        for (_, ops) in &tx[..tx.len() - 2] {
            assert!(!ops.iter().any(|o| is_base_rule(&table, o)));
        }
        // Together they build what was compiled, as the one transaction.
        let mut together = crate::Transaction::new(IpFamily::V4, TABLE);
        together.ops = all_ops(&cmds);
        assert_eq!(together.apply().expect("applies"), table);
        let one = nft_full(&table, print_options(&node())).expect("full");
        assert_eq!(one.transaction.apply().expect("applies"), table);
        assert_eq!(
            r.families[0].bytes,
            tx.iter()
                .map(|(_, ops)| {
                    let mut t = crate::Transaction::new(IpFamily::V4, TABLE);
                    t.ops = ops.to_vec();
                    crate::print::print(&t, Default::default())
                        .expect("print")
                        .len()
                })
                .sum::<usize>()
        );
        // The next syncs are as before.
        s.now += Duration::from_secs(1);
        let mut state = cluster(20, 2);
        state.endpoint_slices[1]
            .endpoints
            .push(Endpoint::ready("10.99.0.1".parse().expect("ip")));
        s.sync(&state);
        let (cmds, r) = s.drive(ok);
        assert!(r.ok() && !r.full);
        assert_eq!(transactions(&cmds).len(), 1);
    }
}

#[test]
fn a_node_with_a_table_gets_one_transaction() {
    let state = cluster(20, 2);
    // The read failed for another reason than a missing table: the
    // atomic replacement.
    let mut s = Setup::new(NftablesProfile::Current);
    s.engine.first_sync_chunk = 40;
    s.sync(&state);
    let (cmds, r) = s.drive(|c| match c {
        Command::ReadTable { .. } => Outcome::Failed("Error: Permission denied".into()),
        other => ok(other),
    });
    assert!(r.ok());
    let tx = transactions(&cmds);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].1[1], Op::DeleteTable);
    assert!(
        !tx[0]
            .1
            .iter()
            .any(|o| matches!(o, Op::AddDormantTable { .. }))
    );
    // The node holds a table: only what differs, in one transaction.
    let mut s = Setup::new(NftablesProfile::Current);
    s.engine.first_sync_chunk = 40;
    s.sync(&state);
    let held = r#"{"nftables": [{"table": {"family": "ip", "name": "kube-proxy", "handle": 1}}]}"#;
    let (cmds, r) = s.drive(|c| match c {
        Command::ReadTable { .. } => Outcome::Done(held.into()),
        other => ok(other),
    });
    assert!(r.ok());
    assert_eq!(transactions(&cmds).len(), 1);
    // A later full sync: the atomic replacement.
    s.engine.force_full_sync();
    s.sync(&state);
    let (cmds, r) = s.drive(ok);
    assert!(r.ok() && r.full);
    assert!(cmds.iter().all(|c| !matches!(c, Command::ReadTable { .. })));
    let tx = transactions(&cmds);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].1[1], Op::DeleteTable);
}

#[test]
fn a_failed_chunk_makes_the_next_sync_full_and_atomic() {
    let state = cluster(20, 2);
    let mut s = Setup::new(NftablesProfile::Current);
    s.engine.first_sync_chunk = 40;
    s.sync(&state);
    let mut n = 0;
    let (cmds, r) = s.drive(|c| match c {
        Command::Transaction { .. } => {
            n += 1;
            if n == 2 {
                Outcome::Failed("/dev/stdin:3:1-10: Error: Could not process rule".into())
            } else {
                Outcome::Done(String::new())
            }
        }
        other => ok(other),
    });
    // Nothing after the failed transaction.
    assert_eq!(transactions(&cmds).len(), 2);
    assert_eq!(cmds.len(), 3, "the read, two transactions");
    let e = r.families[0].error.as_ref().expect("failed");
    assert_eq!(e.kind, FailureKind::Write { partial: false });
    // The failure names the failed transaction's text.
    assert_eq!(e.input.as_deref(), cmds[2].stdin());
    assert!(s.engine.next_is_full(s.now));
    assert!(s.engine.last(IpFamily::V4).is_none());
    // The node holds an unfinished table: replaced whole, in one
    // transaction, without reading it.
    let c = s.sync(&state);
    assert!(matches!(c[0], Compiled::Full(_)));
    let (cmds, r) = s.drive(ok);
    assert!(r.ok() && r.full);
    assert!(cmds.iter().all(|c| !matches!(c, Command::ReadTable { .. })));
    let tx = transactions(&cmds);
    assert_eq!(tx.len(), 1);
    let table = s
        .engine
        .last(IpFamily::V4)
        .and_then(|l| l.tables.first())
        .expect("written");
    assert_eq!(
        tx[0].1,
        nft_full(table, print_options(&node()))
            .expect("full")
            .transaction
            .ops
    );
}

#[test]
fn a_dormant_table_is_replaced_whole() {
    // A restarted agent finds the dormant table an earlier one left.
    let mut s = Setup::new(NftablesProfile::Current);
    s.engine.first_sync_chunk = 40;
    s.sync(&cluster(20, 2));
    let held = r#"{"nftables": [{"table": {"family": "ip", "name": "kube-proxy", "handle": 1, "flags": "dormant"}}]}"#;
    let (cmds, r) = s.drive(|c| match c {
        Command::ReadTable { .. } => Outcome::Done(held.into()),
        other => ok(other),
    });
    assert!(r.ok());
    let tx = transactions(&cmds);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].1[1], Op::DeleteTable);
}
