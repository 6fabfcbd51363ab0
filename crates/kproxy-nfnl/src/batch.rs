//! Batches: nf_tables' transactions. The kernel applies every message
//! between `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END` or none; it
//! answers each failed message with an error carrying that message's
//! sequence number, which [`Outcome`] maps back to the operation.
//!
//! ```
//! use kproxy_nfnl::attr::AttrBuf;
//! use kproxy_nfnl::batch::{Batch, Outcome};
//! use kproxy_nfnl::consts::{attr, msg, netlink, nfnl};
//! use kproxy_nfnl::msg::Message;
//!
//! let mut batch = Batch::new(100, None);
//! for name in ["a", "b"] {
//!     let mut a = AttrBuf::new();
//!     a.put_str(attr::NFTA_TABLE_NAME, name);
//!     batch.push(&Message::nft(msg::NFT_MSG_NEWTABLE, netlink::NLM_F_CREATE, nfnl::NFPROTO_IPV4, a.into_bytes()));
//! }
//! let sent = batch.finish();
//! assert_eq!(sent.ops(), 2);
//! // The kernel refused the second table (sequence 102) with EINVAL.
//! let mut outcome = Outcome::new(&sent);
//! outcome.record(102, 22);
//! assert_eq!(outcome.failures()[0].op, Some(1));
//! assert_eq!(outcome.failures()[0].errno, 22);
//! ```

use crate::NfnlError;
use crate::attr::AttrBuf;
use crate::consts::nfnl;
use crate::msg::{Message, Reply};

/// A batch being built.
#[derive(Debug, Clone)]
pub struct Batch {
    buf: Vec<u8>,
    first_seq: u32,
    ops: u32,
}

impl Batch {
    /// Starts a batch whose `NFNL_MSG_BATCH_BEGIN` has sequence number
    /// `first_seq` (operation `i` gets `first_seq + 1 + i`). With `genid`,
    /// the kernel refuses the batch (`ERESTART`) unless the ruleset is still
    /// at that generation.
    pub fn new(first_seq: u32, genid: Option<u32>) -> Self {
        let mut attrs = AttrBuf::new();
        if let Some(g) = genid {
            attrs.put_u32_be(nfnl::NFNL_BATCH_GENID, g);
        }
        let mut buf = Vec::with_capacity(4096);
        Self::marker(nfnl::NFNL_MSG_BATCH_BEGIN, attrs.into_bytes())
            .encode_into(first_seq, &mut buf);
        Self {
            buf,
            first_seq,
            ops: 0,
        }
    }

    fn marker(kind: u16, attrs: Vec<u8>) -> Message {
        Message {
            msg_type: kind,
            flags: 0,
            family: nfnl::NFPROTO_UNSPEC,
            res_id: nfnl::NFNL_SUBSYS_NFTABLES,
            attrs,
        }
    }

    /// Appends an operation; returns its index.
    pub fn push(&mut self, m: &Message) -> usize {
        let i = self.ops;
        self.ops += 1;
        m.encode_into(self.seq_of(i as usize), &mut self.buf);
        i as usize
    }

    /// The operations so far.
    pub fn ops(&self) -> usize {
        self.ops as usize
    }

    /// The bytes so far (without the end marker).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    fn seq_of(&self, op: usize) -> u32 {
        self.first_seq.wrapping_add(1).wrapping_add(op as u32)
    }

    /// Closes the batch (`NFNL_MSG_BATCH_END`).
    pub fn finish(mut self) -> Sent {
        let end_seq = self.seq_of(self.ops as usize);
        Self::marker(nfnl::NFNL_MSG_BATCH_END, Vec::new()).encode_into(end_seq, &mut self.buf);
        Sent {
            bytes: self.buf,
            first_seq: self.first_seq,
            ops: self.ops,
        }
    }
}

/// A closed batch, ready to send in one `sendmsg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    bytes: Vec<u8>,
    first_seq: u32,
    ops: u32,
}

impl Sent {
    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The number of operations.
    pub fn ops(&self) -> usize {
        self.ops as usize
    }

    /// The operation answered by sequence number `seq`, if it is one of
    /// this batch's (`None` for the begin/end markers and foreign numbers).
    pub fn op_of(&self, seq: u32) -> Option<usize> {
        let i = seq.wrapping_sub(self.first_seq).wrapping_sub(1);
        (i < self.ops).then_some(i as usize)
    }

    /// The sequence number of the begin marker.
    pub fn first_seq(&self) -> u32 {
        self.first_seq
    }

    /// The sequence number of the end marker (the last of the batch).
    pub fn last_seq(&self) -> u32 {
        self.first_seq.wrapping_add(1).wrapping_add(self.ops)
    }
}

/// One failed message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The operation (index in the batch); `None` when the kernel refused
    /// the batch itself (begin or end marker, e.g. `ERESTART` for a
    /// generation mismatch).
    pub op: Option<usize>,
    /// The error number (positive).
    pub errno: i32,
}

/// The kernel's answers to one batch.
#[derive(Debug, Clone)]
pub struct Outcome {
    first_seq: u32,
    ops: u32,
    failures: Vec<Failure>,
    acks: usize,
}

impl Outcome {
    /// Expects the answers to `sent`.
    pub fn new(sent: &Sent) -> Self {
        Self {
            first_seq: sent.first_seq,
            ops: sent.ops,
            failures: Vec::new(),
            acks: 0,
        }
    }

    fn in_batch(&self, seq: u32) -> Option<Option<usize>> {
        let off = seq.wrapping_sub(self.first_seq);
        if off > self.ops + 1 {
            return None;
        }
        Some((off >= 1 && off <= self.ops).then(|| (off - 1) as usize))
    }

    /// Records an error answer `errno` (positive) to sequence number `seq`;
    /// ignored when `seq` is not this batch's.
    pub fn record(&mut self, seq: u32, errno: i32) {
        if let Some(op) = self.in_batch(seq) {
            self.failures.push(Failure { op, errno });
        }
    }

    /// Records the messages of a received buffer; returns how many were
    /// this batch's.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, NfnlError> {
        let mut n = 0;
        for r in crate::msg::replies(data) {
            match r? {
                Reply::Error { seq, errno } if self.in_batch(seq).is_some() => {
                    self.record(seq, errno);
                    n += 1;
                }
                Reply::Ack { seq } if self.in_batch(seq).is_some() => {
                    self.acks += 1;
                    n += 1;
                }
                _ => {}
            }
        }
        Ok(n)
    }

    /// The failures, in the order the kernel reported them.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// The acknowledgements received (messages sent with `NLM_F_ACK`).
    pub fn acks(&self) -> usize {
        self.acks
    }

    /// `Ok` when the kernel reported no failure, else the first one (the
    /// cause: later ones are often its consequences).
    pub fn result(&self) -> Result<(), Failure> {
        self.failures.first().map_or(Ok(()), |f| Err(*f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{attr, msg, netlink};
    const CREATE: u16 = netlink::NLM_F_CREATE;
    use crate::msg::replies;

    fn table(name: &str) -> Message {
        let mut a = AttrBuf::new();
        a.put_str(attr::NFTA_TABLE_NAME, name);
        Message::nft(
            msg::NFT_MSG_NEWTABLE,
            CREATE,
            nfnl::NFPROTO_IPV4,
            a.into_bytes(),
        )
    }

    fn error(seq: u32, errno: i32) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&36u32.to_ne_bytes());
        e.extend_from_slice(&netlink::NLMSG_ERROR.to_ne_bytes());
        e.extend_from_slice(&0u16.to_ne_bytes());
        e.extend_from_slice(&seq.to_ne_bytes());
        e.extend_from_slice(&0u32.to_ne_bytes());
        e.extend_from_slice(&(-errno).to_ne_bytes());
        e.extend_from_slice(&[0u8; 16]);
        e
    }

    #[test]
    fn frames_begin_ops_end() {
        let mut b = Batch::new(u32::MAX, Some(0x0102_0304));
        b.push(&table("t"));
        let sent = b.finish();
        let bytes = sent.bytes();
        // begin: 16 + 4 + genid attribute (8)
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 0x10);
        assert_eq!(
            &bytes[18..20],
            &10u16.to_be_bytes(),
            "res_id = NFNL_SUBSYS_NFTABLES"
        );
        assert_eq!(&bytes[24..28], &[1, 2, 3, 4], "genid big-endian");
        let seqs: Vec<u32> = {
            let mut v = Vec::new();
            let mut d = bytes;
            while d.len() >= 16 {
                let l = u32::from_ne_bytes(d[0..4].try_into().unwrap()) as usize;
                v.push(u32::from_ne_bytes(d[8..12].try_into().unwrap()));
                d = &d[l..];
            }
            v
        };
        assert_eq!(seqs, [u32::MAX, 0, 1], "sequence numbers wrap");
        assert_eq!(sent.op_of(0), Some(0));
        assert_eq!(sent.op_of(u32::MAX), None);
        assert_eq!(sent.op_of(1), None);
        assert_eq!(sent.last_seq(), 1);
    }

    #[test]
    fn attributes_errors() {
        let mut b = Batch::new(10, None);
        for n in ["a", "b", "c"] {
            b.push(&table(n));
        }
        let sent = b.finish();
        let mut o = Outcome::new(&sent);
        let mut buf = error(13, 17);
        buf.extend(error(10, 85));
        buf.extend(error(99, 1));
        assert_eq!(o.feed(&buf).unwrap(), 2);
        assert_eq!(
            o.failures(),
            [
                Failure {
                    op: Some(2),
                    errno: 17
                },
                Failure {
                    op: None,
                    errno: 85
                }
            ]
        );
        assert_eq!(
            o.result(),
            Err(Failure {
                op: Some(2),
                errno: 17
            })
        );
        assert_eq!(replies(&buf).count(), 3);
    }

    #[test]
    fn truncated_reply_is_an_error() {
        let buf = error(1, 2);
        assert!(replies(&buf[..20]).next().unwrap().is_err());
    }
}
