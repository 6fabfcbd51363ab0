//! Netlink messages: the header (`struct nlmsghdr`), the netfilter header
//! (`struct nfgenmsg`) and the kernel's answers.
//!
//! ```
//! use kproxy_nfnl::attr::AttrBuf;
//! use kproxy_nfnl::consts::{attr, msg, netlink, nfnl};
//! use kproxy_nfnl::msg::{Message, Reply, replies};
//! let mut a = AttrBuf::new();
//! a.put_str(attr::NFTA_TABLE_NAME, "kube-proxy");
//! let m = Message::nft(msg::NFT_MSG_GETTABLE, 0, nfnl::NFPROTO_IPV4, a.into_bytes());
//! let mut buf = Vec::new();
//! m.encode_into(7, &mut buf);
//! assert_eq!(buf.len(), 16 + 4 + 16);
//! // The kernel's answer "no such table" to sequence number 7:
//! let mut err = Vec::new();
//! err.extend_from_slice(&36u32.to_ne_bytes());
//! err.extend_from_slice(&netlink::NLMSG_ERROR.to_ne_bytes());
//! err.extend_from_slice(&0u16.to_ne_bytes());
//! err.extend_from_slice(&7u32.to_ne_bytes());
//! err.extend_from_slice(&0u32.to_ne_bytes());
//! err.extend_from_slice(&(-2i32).to_ne_bytes());
//! err.extend_from_slice(&buf[..16]);
//! let r: Vec<_> = replies(&err).collect::<Result<_, _>>().unwrap();
//! assert_eq!(r, [Reply::Error { seq: 7, errno: 2 }]);
//! ```

use crate::NfnlError;
use crate::attr::align;
use crate::consts::{netlink, nfnl};

/// One request to the kernel: a netlink header with an nfgenmsg and
/// attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The full netlink message type (`subsystem << 8 | message`).
    pub msg_type: u16,
    /// `NLM_F_*` flags (`NLM_F_REQUEST` is always added).
    pub flags: u16,
    /// The `nfgenmsg` family (`NFPROTO_*`).
    pub family: u8,
    /// The `nfgenmsg` resource id (host order; written big-endian).
    pub res_id: u16,
    /// The attributes.
    pub attrs: Vec<u8>,
}

impl Message {
    /// An nf_tables message (`NFNL_SUBSYS_NFTABLES`) of type `kind`
    /// (`NFT_MSG_*`).
    pub fn nft(kind: u16, flags: u16, family: u8, attrs: Vec<u8>) -> Self {
        Self {
            msg_type: (nfnl::NFNL_SUBSYS_NFTABLES << 8) | kind,
            flags,
            family,
            res_id: 0,
            attrs,
        }
    }

    /// The nf_tables message type (`NFT_MSG_*`) without the subsystem.
    pub fn nft_kind(&self) -> u16 {
        self.msg_type & 0xff
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        netlink::NLMSG_HDRLEN + nfnl::NFGENMSG_LEN + self.attrs.len()
    }

    /// Whether the message carries no attributes.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// Appends the message with sequence number `seq` (port id 0: the
    /// kernel fills it in).
    pub fn encode_into(&self, seq: u32, out: &mut Vec<u8>) {
        let len = u32::try_from(self.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&self.msg_type.to_ne_bytes());
        out.extend_from_slice(&(self.flags | netlink::NLM_F_REQUEST).to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.push(self.family);
        out.push(nfnl::NFNETLINK_V0);
        out.extend_from_slice(&self.res_id.to_be_bytes());
        out.extend_from_slice(&self.attrs);
        out.resize(align(out.len()), 0);
    }
}

/// One answer of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An nf_tables object (a dump entry or a single answer).
    Data {
        /// The nf_tables message type (`NFT_MSG_*`).
        kind: u16,
        /// The sequence number of the request answered.
        seq: u32,
        /// Whether more messages of a dump follow (`NLM_F_MULTI`).
        multi: bool,
        /// The `nfgenmsg` family.
        family: u8,
        /// The `nfgenmsg` resource id (the generation, for NEWGEN).
        res_id: u16,
        /// The attributes.
        attrs: &'a [u8],
    },
    /// An acknowledgement (error 0) of the request `seq`.
    Ack {
        /// The sequence number.
        seq: u32,
    },
    /// The request `seq` failed with `errno` (positive).
    Error {
        /// The sequence number.
        seq: u32,
        /// The error number (positive, e.g. 2 for ENOENT).
        errno: i32,
    },
    /// The end of the dump answering `seq`.
    Done {
        /// The sequence number.
        seq: u32,
    },
}

/// The messages of a received buffer.
pub fn replies(mut data: &[u8]) -> impl Iterator<Item = Result<Reply<'_>, NfnlError>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        loop {
            if failed || data.len() < netlink::NLMSG_HDRLEN {
                return None;
            }
            let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
            let msg_type = u16::from_ne_bytes([data[4], data[5]]);
            let flags = u16::from_ne_bytes([data[6], data[7]]);
            let seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
            if len < netlink::NLMSG_HDRLEN || len > data.len() {
                failed = true;
                return Some(Err(NfnlError::Malformed("message length out of bounds")));
            }
            let body = &data[netlink::NLMSG_HDRLEN..len];
            data = &data[align(len).min(data.len())..];
            return Some(Ok(match msg_type {
                netlink::NLMSG_NOOP => continue,
                netlink::NLMSG_DONE => Reply::Done { seq },
                netlink::NLMSG_ERROR => {
                    let Some(code) = body.get(..4) else {
                        failed = true;
                        return Some(Err(NfnlError::Malformed("error message cut short")));
                    };
                    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                    if code == 0 {
                        Reply::Ack { seq }
                    } else {
                        Reply::Error {
                            seq,
                            errno: code.saturating_neg(),
                        }
                    }
                }
                t if t >> 8 == nfnl::NFNL_SUBSYS_NFTABLES => {
                    let Some(hdr) = body.get(..nfnl::NFGENMSG_LEN) else {
                        failed = true;
                        return Some(Err(NfnlError::Malformed("nfgenmsg cut short")));
                    };
                    Reply::Data {
                        kind: t & 0xff,
                        seq,
                        multi: flags & netlink::NLM_F_MULTI != 0,
                        family: hdr[0],
                        res_id: u16::from_be_bytes([hdr[2], hdr[3]]),
                        attrs: &body[nfnl::NFGENMSG_LEN..],
                    }
                }
                _ => continue,
            }));
        }
    })
}
