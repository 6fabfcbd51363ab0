//! Real TCP and UDP traffic between the testbed's namespaces, and
//! assertions whose only time bounds are the ones that cannot flake:
//! dropped = no answer within a 1 s connect timeout and no pod saw it,
//! rejected = ECONNREFUSED/EHOSTUNREACH (not a timeout) and no pod saw it.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::testbed::{Ns, Testbed};

/// How long a connection that must be dropped is given to be answered.
pub const DROP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connection that must be answered may take (generous: a slow
/// machine must not turn an answer into a failure; answers take
/// milliseconds).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The upper bound of a rejection (ECONNREFUSED / ICMP unreachable).
///
/// REJECT answers in well under a millisecond, but when its ICMP error
/// reaches the client while connect() still holds the socket lock, Linux
/// (tcp_v4_err) records only a soft error and the connection fails at the
/// next SYN retransmission, 1 s later (then 3 s): seen under load (1 run in
/// 20 with 44 tests in parallel on 2 cores: 1.02 s). What tells a rejection
/// from a drop is the error, not the time: a drop never yields one.
pub const REJECT_WITHIN: Duration = Duration::from_millis(3500);

/// What one connection attempt (or datagram exchange) got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A pod answered: its name and the source address it saw.
    Answered {
        /// `pod-N`.
        pod: String,
        /// The client address as the pod saw it.
        seen: IpAddr,
    },
    /// ECONNREFUSED or EHOSTUNREACH (an ICMP error), after `took`.
    Refused {
        /// Time until the error.
        took: Duration,
        /// The error.
        error: String,
    },
    /// No answer within the connect timeout.
    TimedOut,
    /// Anything else (a testbed problem, usually).
    Failed(String),
}

/// `ip:port` as a socket address (`[v6]:port` also accepted; a bare IPv6
/// address with a port is written `ip` + `port` separately).
pub fn sock(ip: &str, port: u16) -> SocketAddr {
    let ip: IpAddr = ip.parse().unwrap_or_else(|_| panic!("bad address {ip:?}"));
    SocketAddr::new(ip, port)
}

fn parse_answer(text: &str) -> Outcome {
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
        (Some(pod), Some(seen)) => Outcome::Answered {
            pod: pod.to_string(),
            seen,
        },
        _ => Outcome::Failed(format!("unexpected answer {text:?}")),
    }
}

fn classify(e: &std::io::Error, start: Instant) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH) => Outcome::Refused {
            took: start.elapsed(),
            error: e.to_string(),
        },
        _ if matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) =>
        {
            Outcome::TimedOut
        }
        _ => Outcome::Failed(e.to_string()),
    }
}

/// One TCP connection from the calling thread's namespace.
pub fn tcp_once(src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let s = match Socket::new(Domain::for_address(dst), Type::STREAM, None) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("socket: {e}")),
    };
    if let Some(src) = src
        && let Err(e) = s.bind(&SocketAddr::new(src, 0).into())
    {
        return Outcome::Failed(format!("bind {src}: {e}"));
    }
    if let Err(e) = s.connect_timeout(&dst.into(), timeout) {
        return classify(&e, start);
    }
    let mut stream: TcpStream = s.into();
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut text = String::new();
    match stream.read_to_string(&mut text) {
        Ok(_) => parse_answer(&text),
        Err(e) => Outcome::Failed(format!("connected to {dst} but read failed: {e}")),
    }
}

/// One UDP exchange: up to 5 datagrams on one socket (one flow), each
/// given 1 s for the answer.
pub fn udp_once(src: Option<IpAddr>, dst: SocketAddr) -> Outcome {
    let start = Instant::now();
    let local = src.unwrap_or(match dst {
        SocketAddr::V4(_) => IpAddr::from([0u8; 4]),
        SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
    });
    let s = match UdpSocket::bind(SocketAddr::new(local, 0)) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("bind {local}: {e}")),
    };
    if let Err(e) = s.connect(dst) {
        return Outcome::Failed(format!("connect {dst}: {e}"));
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        if let Err(e) = s.send(b"hello") {
            return classify(&e, start);
        }
        match s.recv(&mut buf) {
            Ok(n) => return parse_answer(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => match classify(&e, start) {
                Outcome::TimedOut => continue,
                other => return other,
            },
        }
    }
    Outcome::TimedOut
}

impl Testbed {
    /// `n` TCP connections from `from` (source address `src` if given),
    /// each given [`ANSWER_TIMEOUT`].
    pub fn tcp_n(&self, from: Ns, src: Option<&str>, dst: SocketAddr, n: usize) -> Vec<Outcome> {
        let src = src.map(super::ip);
        self.in_ns(from, || {
            (0..n).map(|_| tcp_once(src, dst, ANSWER_TIMEOUT)).collect()
        })
    }

    /// One TCP connection, given `timeout` to be established.
    pub fn tcp_within(
        &self,
        from: Ns,
        src: Option<&str>,
        dst: SocketAddr,
        timeout: Duration,
    ) -> Outcome {
        let src = src.map(super::ip);
        self.in_ns(from, || tcp_once(src, dst, timeout))
    }

    /// One TCP connection, given [`ANSWER_TIMEOUT`].
    pub fn tcp(&self, from: Ns, src: Option<&str>, dst: SocketAddr) -> Outcome {
        self.tcp_within(from, src, dst, ANSWER_TIMEOUT)
    }

    /// One UDP exchange.
    pub fn udp(&self, from: Ns, src: Option<&str>, dst: SocketAddr) -> Outcome {
        let src = src.map(super::ip);
        self.in_ns(from, || udp_once(src, dst))
    }

    fn fail(&self, what: &str, detail: &str) -> ! {
        panic!("{what}: {detail}\n{}", self.dump());
    }

    /// Asserts that a pod answered; returns the pod and the source it saw.
    pub fn expect_answer(&self, what: &str, o: &Outcome) -> (String, IpAddr) {
        match o {
            Outcome::Answered { pod, seen } => (pod.clone(), *seen),
            other => self.fail(what, &format!("expected an answer, got {other:?}")),
        }
    }

    /// Asserts a TCP connection is answered by `pod`; returns the source it saw.
    pub fn expect_tcp(
        &self,
        what: &str,
        from: Ns,
        src: Option<&str>,
        dst: SocketAddr,
        pod: &str,
    ) -> IpAddr {
        let o = self.tcp(from, src, dst);
        let (got, seen) = self.expect_answer(what, &o);
        if got != pod {
            self.fail(what, &format!("expected {pod} to answer, {got} did"));
        }
        seen
    }

    /// Asserts that all of `n` TCP connections are answered, each by a pod
    /// of `pods`, and that every pod of `pods` answers at least once. With 2
    /// pods and n = 60 a correct ruleset fails with probability 2^-59.
    /// Returns the outcomes.
    pub fn expect_spread(
        &self,
        what: &str,
        from: Ns,
        dst: SocketAddr,
        n: usize,
        pods: &[&str],
    ) -> Vec<Outcome> {
        let outcomes = self.tcp_n(from, None, dst, n);
        let mut counts: Vec<usize> = vec![0; pods.len()];
        for (i, o) in outcomes.iter().enumerate() {
            let (pod, _) = self.expect_answer(&format!("{what} (connection {} of {n})", i + 1), o);
            match pods.iter().position(|p| *p == pod) {
                Some(i) => counts[i] += 1,
                None => self.fail(what, &format!("{pod} answered; expected only {pods:?}")),
            }
        }
        if counts.contains(&0) {
            let seen: Vec<String> = pods
                .iter()
                .zip(&counts)
                .map(|(p, c)| format!("{p}: {c}"))
                .collect();
            self.fail(
                what,
                &format!("{n} connections did not reach every endpoint: {seen:?}"),
            );
        }
        outcomes
    }

    /// Asserts that a TCP connection gets no answer within the connect
    /// timeout and that no pod saw it. Returns the outcome.
    pub fn expect_dropped(
        &self,
        what: &str,
        from: Ns,
        src: Option<&str>,
        dst: SocketAddr,
    ) -> Outcome {
        let before = self.total_hits();
        let o = self.tcp_within(from, src, dst, DROP_TIMEOUT);
        if o != Outcome::TimedOut {
            self.fail(what, &format!("expected a drop (timeout), got {o:?}"));
        }
        let after = self.total_hits();
        if after != before {
            self.fail(what, "the connection timed out but a pod saw it");
        }
        o
    }

    /// Asserts a rejection (ECONNREFUSED / ICMP unreachable, within
    /// [`REJECT_WITHIN`]: no timeout) that no pod saw. Returns the outcome.
    pub fn expect_rejected(
        &self,
        what: &str,
        from: Ns,
        src: Option<&str>,
        dst: SocketAddr,
    ) -> Outcome {
        let before = self.total_hits();
        let o = self.tcp(from, src, dst);
        match &o {
            Outcome::Refused { took, .. } if *took < REJECT_WITHIN => {}
            o => self.fail(
                what,
                &format!("expected a rejection within {REJECT_WITHIN:?}, got {o:?}"),
            ),
        }
        if self.total_hits() != before {
            self.fail(what, "rejected, but a pod saw the connection");
        }
        o
    }
}
