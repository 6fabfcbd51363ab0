//! Applies nftables transactions over netlink: the messages of
//! [`kproxy_nft::netlink`] in one nf_tables batch (all or nothing), sent
//! on a `NETLINK_NETFILTER` socket, in the network namespace of the
//! calling thread. A refused batch is reported with the command that
//! failed, as `nft -f` would print it.

use std::os::fd::AsRawFd;

use kproxy_nfnl::batch::{Batch, Outcome};
use kproxy_nfnl::consts::msg as m;
use kproxy_nfnl::msg::{Message, Reply, replies};
use kproxy_nft::netlink::Encoder;
use kproxy_nft::{PrintOptions, Transaction};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

/// Why a transaction was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The encoder cannot express a command: use `nft -f`.
    #[error("netlink encoder: {0}")]
    Unsupported(kproxy_nft::NftError),
    /// The kernel refused the batch (nothing was applied).
    #[error("kernel refused the batch: {what}: {err}")]
    Refused {
        /// The failing command: its transaction and its index there
        /// (`None` when the kernel refused the batch as a whole).
        op: Option<(usize, usize)>,
        /// The failing command (`nft -f` text), or "the batch".
        what: String,
        /// The kernel's error.
        err: std::io::Error,
    },
    /// The socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

impl ApplyError {
    /// Whether `nft -f` may succeed where the batch failed (the encoder
    /// cannot express something, or the kernel does not support what it
    /// was sent).
    pub fn wants_fallback(&self) -> bool {
        match self {
            ApplyError::Unsupported(_) => true,
            ApplyError::Refused { err, .. } => err.raw_os_error() == Some(libc::EOPNOTSUPP),
            ApplyError::Io(_) => false,
        }
    }
}

/// Sets a socket buffer size (the `*FORCE` variant, as root, beyond the
/// system maximum), falling back to the plain one.
fn set_buf(sock: &Socket, force: libc::c_int, plain: libc::c_int, size: usize) {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    for opt in [force, plain] {
        // SAFETY: setsockopt on our socket with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Applies `txs` (one per family) as one nf_tables batch. Returns the
/// number of messages sent.
pub fn apply(txs: &[Transaction], opts: PrintOptions) -> Result<usize, ApplyError> {
    let mut next = NEXT_ANONYMOUS.lock().unwrap_or_else(|e| e.into_inner());
    let first = *next.get_or_insert_with(anonymous_seed);
    let mut enc = Encoder::new(opts.single_dnat).naming_anonymous_sets(first);
    let mut origin: Vec<(usize, usize)> = Vec::new();
    let mut batch = Batch::new(seq_base(), None);
    for (ti, tx) in txs.iter().enumerate() {
        let e = enc.encode(tx).map_err(ApplyError::Unsupported)?;
        for (msg, op) in e.messages.iter().zip(&e.op_of_message) {
            batch.push(msg);
            origin.push((ti, *op));
        }
    }
    *next = enc.next_anonymous();
    drop(next);
    if batch.is_empty() {
        return Ok(0);
    }
    let sent = batch.finish();
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    set_buf(
        &sock,
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
        sent.bytes().len() + 4096,
    );
    set_buf(&sock, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, 4 << 20);
    sock.send(sent.bytes(), 0)?;
    // The kernel handles the batch within send(); a request sent after it
    // is answered after every error of the batch: read up to its answer.
    let barrier = sent.last_seq().wrapping_add(1);
    let mut getgen = Vec::new();
    Message::nft(m::NFT_MSG_GETGEN, 0, 0, Vec::new()).encode_into(barrier, &mut getgen);
    sock.send(&getgen, 0)?;
    let mut outcome = Outcome::new(&sent);
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    'recv: loop {
        buf.clear();
        let n = sock.recv(&mut buf, 0)?;
        let data = &buf[..n.min(buf.len())];
        outcome
            .feed(data)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        for r in replies(data) {
            match r.map_err(|e| std::io::Error::other(e.to_string()))? {
                Reply::Data { seq, .. }
                | Reply::Ack { seq }
                | Reply::Done { seq }
                | Reply::Error { seq, .. }
                    if seq == barrier =>
                {
                    break 'recv;
                }
                _ => {}
            }
        }
    }
    match outcome.result() {
        Ok(()) => Ok(sent.ops()),
        Err(f) => {
            let op = f.op.and_then(|i| origin.get(i)).copied();
            let what = match op {
                Some((ti, oi)) => txs
                    .get(ti)
                    .and_then(|tx| tx.ops.get(oi).map(|op| (tx, op)))
                    .map(|(tx, op)| {
                        kproxy_nft::print::print_op(tx, op, opts)
                            .unwrap_or_else(|_| format!("{op:?}"))
                    })
                    .unwrap_or_else(|| "the batch".into()),
                None => "the batch".into(),
            };
            Err(ApplyError::Refused {
                op,
                what,
                err: std::io::Error::from_raw_os_error(f.errno),
            })
        }
    }
}

/// The number of the next anonymous set this process names (see
/// [`Encoder::naming_anonymous_sets`]): unique across the batches of the
/// process, and (seeded from the clock) across restarts of the agent on a
/// node whose table keeps the sets of an earlier run.
static NEXT_ANONYMOUS: std::sync::Mutex<Option<u64>> = std::sync::Mutex::new(None);

fn anonymous_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// A sequence number base that differs between calls (the kernel does not
/// care; it keeps answers of different batches apart when reading).
fn seq_base() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1 << 20, Ordering::Relaxed)
}
