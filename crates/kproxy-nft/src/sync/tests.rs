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

fn ok(_: &Command) -> Outcome {
    Outcome::Done(String::new())
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
        let tx = transactions(&cmds);
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
        assert!(r.ok() && r.full);
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
