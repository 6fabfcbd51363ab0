//! The tracer against the kernel (issue 5): the packet a scenario sent is
//! traced through the rule IR that the loaded text was printed from, in an
//! environment read from the node namespace (its real addresses, pod
//! traffic in on `cbr0`, external traffic in on `eth1`), and the set of
//! outcomes the tracer predicts must be the set the kernel showed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use ipnet::IpNet;
use kproxy_bin::cli::{Cli, Command};
use kproxy_core::ir::Ruleset;
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::trace::{OutcomeKind, Packet, PacketOrigin, Trace, TraceEnv};

use super::testbed::{Ns, Testbed};
use super::traffic::Outcome;
use super::{Family, Loader, POD_PORT, fixture_args, fixtures, run};

/// The interface pod traffic arrives on in the node (the bridge).
pub const POD_INTERFACE: &str = "cbr0";
/// The interface the client's traffic arrives on in the node.
pub const EXTERNAL_INTERFACE: &str = "eth1";

/// The rule IR of `family` that [`super::compile_fixture`] prints for the
/// same arguments (the backend's own IR, with `--standalone`'s built-in
/// chains): what the tracer evaluates.
pub fn compile_fixture_ir(
    loader: Loader,
    family: Family,
    fixture: &str,
    extra: &[&str],
) -> Ruleset {
    let mut argv: Vec<String> = vec!["kproxy".into(), "compile".into()];
    argv.extend(fixture_args(loader, family, extra));
    argv.push(fixtures().join(fixture).display().to_string());
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("kproxy {argv:?}: {e}"));
    let Command::Compile(c) = cli.command else {
        panic!("kproxy {argv:?}: not a compile command");
    };
    let inv = kproxy_bin::compile::load(&c.paths).unwrap_or_else(|e| panic!("{fixture}: {e:#}"));
    let (_, families, _) =
        kproxy_bin::compile::ir_rulesets(&c.node, c.backend.as_deref(), c.standalone, &inv)
            .unwrap_or_else(|e| panic!("{fixture}: {e:#}"));
    let want = match family {
        Family::V4 => IpFamily::V4,
        Family::V6 => IpFamily::V6,
    };
    families
        .into_iter()
        .find(|f| f.node.family == want)
        .unwrap_or_else(|| panic!("{fixture}: no {want} rules compiled"))
        .ruleset
}

/// A packet a scenario sent: from which namespace, from which source
/// (`None`: the one the kernel chooses, asked with `ip route get`), to
/// where, over which protocol.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The sending namespace (decides the tracer's origin and interface).
    pub from: Ns,
    /// The bound source address, if any.
    pub src: Option<&'a str>,
    /// The destination.
    pub dst: SocketAddr,
    /// The protocol.
    pub proto: Protocol,
}

impl<'a> Probe<'a> {
    /// A TCP connection.
    pub fn tcp(from: Ns, src: Option<&'a str>, dst: SocketAddr) -> Self {
        Self {
            from,
            src,
            dst,
            proto: Protocol::Tcp,
        }
    }
}

/// One fate of a packet as both sides can state it: what happened and, if
/// it got through, whether its source was rewritten.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fate {
    kind: OutcomeKind,
    masqueraded: Option<bool>,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.masqueraded {
            Some(true) => write!(f, "{}, masqueraded", self.kind),
            Some(false) => write!(f, "{}, not masqueraded", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// The address of `pod-N` in `family` (10.76.0.N, fd00:76::N: N written
/// in hex digits, as the testbed writes it).
fn pod_addr(pod: &str, family: IpFamily) -> Option<IpAddr> {
    let n: u8 = pod.strip_prefix("pod-")?.parse().ok()?;
    match family {
        IpFamily::V4 => format!("10.76.0.{n}").parse().ok(),
        IpFamily::V6 => format!("fd00:76::{n}").parse().ok(),
    }
}

/// The address from `ip ... route get` output (`... src ADDR ...`).
fn route_src(text: &str) -> Option<IpAddr> {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            return words.next()?.parse().ok();
        }
    }
    None
}

impl Testbed {
    /// The tracer's view of the node: the addresses the node namespace
    /// really has (each a host address; the loopback networks whole, as the
    /// kernel's local table has them), pod traffic in on
    /// [`POD_INTERFACE`], external traffic in on [`EXTERNAL_INTERFACE`].
    pub fn trace_env(&self) -> TraceEnv {
        let node = self.ns(Ns::Node);
        let out =
            run("ip", &["-n", &node, "-o", "addr", "show"], None).unwrap_or_else(|e| panic!("{e}"));
        let mut local = vec![IpFamily::V4.loopback_net(), IpFamily::V6.loopback_net()];
        for line in out.lines() {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                if w == "inet" || w == "inet6" {
                    let addr = words.next().and_then(|a| a.split('/').next());
                    if let Some(ip) = addr.and_then(|a| a.parse::<IpAddr>().ok())
                        && !local.iter().any(|n| n.contains(&ip))
                    {
                        local.push(IpNet::from(ip));
                    }
                }
            }
        }
        TraceEnv {
            local,
            pod_interface: POD_INTERFACE.into(),
            external_interface: EXTERNAL_INTERFACE.into(),
        }
    }

    /// The source address the kernel of `from` picks towards `dst`.
    fn kernel_source(&self, from: Ns, dst: IpAddr) -> IpAddr {
        let ns = self.ns(from);
        let out = run("ip", &["-n", &ns, "route", "get", &dst.to_string()], None)
            .unwrap_or_else(|e| panic!("{e}"));
        route_src(&out).unwrap_or_else(|| panic!("no source in `ip route get {dst}`: {out}"))
    }

    /// Asserts that the tracer, run on `rules` (the IR of what was loaded)
    /// for the packet of `probe`, predicts exactly the fates the kernel
    /// showed in `observed` (the outcomes of connections sent as `probe`
    /// describes): the same endpoints, drop or rejection, and the same
    /// masquerade decision. A pod that answered is the endpoint
    /// `pod-address:POD_PORT` (or "unchanged" when that was the
    /// destination already), masqueraded when it saw another source than
    /// the sender's, which must then be an address of the node; a timeout
    /// is a drop, ECONNREFUSED/EHOSTUNREACH a rejection. `observed` must
    /// be large enough to show every predicted fate (1 for a certain one,
    /// 30 for two halves). Returns the trace for further checks
    /// (probabilities).
    pub fn expect_trace_agrees(
        &self,
        what: &str,
        rules: &Ruleset,
        probe: Probe<'_>,
        observed: &[Outcome],
    ) -> Trace {
        let env = self.trace_env();
        let src = match probe.src {
            Some(s) => super::ip(s),
            None => self.kernel_source(probe.from, probe.dst.ip()),
        };
        let origin = match probe.from {
            Ns::Pod(_) => PacketOrigin::Pod,
            Ns::Node => PacketOrigin::Node,
            Ns::Client => PacketOrigin::External,
        };
        let packet = Packet::new(origin, src, probe.dst.ip(), probe.proto, probe.dst.port());
        let family = IpFamily::of(&src);
        let trace = kproxy_core::trace::trace(rules, &env, &packet)
            .unwrap_or_else(|e| panic!("{what}: the tracer failed on {packet:?}: {e}"));

        let mut kernel: BTreeMap<Fate, usize> = BTreeMap::new();
        let mut problems = Vec::new();
        for o in observed {
            let fate = match o {
                Outcome::Answered { pod, seen } => {
                    let Some(addr) = pod_addr(pod, family) else {
                        panic!("{what}: unexpected answer from {pod:?}");
                    };
                    let to = SocketAddr::new(addr, POD_PORT);
                    let masqueraded = *seen != src;
                    if masqueraded && !env.is_local(seen) {
                        problems.push(format!(
                            "{pod} saw {seen}: neither the sender's {src} nor a node address"
                        ));
                    }
                    Fate {
                        kind: if to == probe.dst {
                            OutcomeKind::Unchanged
                        } else {
                            OutcomeKind::Endpoint(to)
                        },
                        masqueraded: Some(masqueraded),
                    }
                }
                Outcome::Refused { .. } => Fate {
                    kind: OutcomeKind::Reject,
                    masqueraded: None,
                },
                Outcome::TimedOut => Fate {
                    kind: OutcomeKind::Drop,
                    masqueraded: None,
                },
                Outcome::Failed(e) => panic!("{what}: the connection failed: {e}"),
            };
            *kernel.entry(fate).or_default() += 1;
        }
        let predicted: BTreeSet<Fate> = trace
            .outcomes
            .iter()
            .filter(|o| o.probability.value > 0.0)
            .map(|o| Fate {
                kind: o.kind.clone(),
                masqueraded: match o.kind {
                    OutcomeKind::Endpoint(_) | OutcomeKind::Unchanged => Some(o.masqueraded),
                    OutcomeKind::Drop | OutcomeKind::Reject | OutcomeKind::Unknown { .. } => None,
                },
            })
            .collect();
        // Every predicted fate must have had its chance to show: the
        // chance of never seeing one of probability p in n tries is
        // (1 - p)^n, which must be negligible (at most 2^-30).
        let n = observed.len() as i32;
        for o in &trace.outcomes {
            let p = o.probability.value;
            assert!(
                p <= 0.0 || (1.0 - p).powi(n) <= 2f64.powi(-30),
                "{what}: {n} connections are too few to see the predicted {} \
                 (p = {}): send more",
                o.kind,
                o.probability
            );
        }
        let shown: BTreeSet<Fate> = kernel.keys().cloned().collect();
        if shown != predicted || !problems.is_empty() {
            let kernel_side: Vec<String> = kernel
                .iter()
                .map(|(f, n)| format!("  {f} (x{n} of {})", observed.len()))
                .collect();
            let tracer_side: Vec<String> = trace
                .outcomes
                .iter()
                .map(|o| {
                    let path: Vec<String> = o
                        .path
                        .iter()
                        .map(|s| {
                            format!(
                                "      {} {} {} #{}: {}",
                                s.hook.as_nft(),
                                s.table,
                                s.chain,
                                s.rule_index + 1,
                                s.rule_text
                            )
                        })
                        .collect();
                    format!(
                        "  {} (p = {}, masqueraded: {})\n{}",
                        o.kind,
                        o.probability,
                        o.masqueraded,
                        path.join("\n")
                    )
                })
                .collect();
            panic!(
                "{what}: the tracer's prediction differs from what the kernel did\n\
                 packet: {:?} {src} -> {} ({:?})\n\
                 env: local {:?}, pod interface {}, external interface {}\n\
                 kernel:\n{}\n\
                 tracer:\n{}\n\
                 tracer notes: {:?}\n\
                 problems: {problems:?}\n{}",
                probe.proto,
                probe.dst,
                origin,
                env.local,
                env.pod_interface,
                env.external_interface,
                kernel_side.join("\n"),
                tracer_side.join("\n"),
                trace.notes,
                self.dump()
            );
        }
        trace
    }
}
