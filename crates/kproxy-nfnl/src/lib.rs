//! # kproxy-nfnl
//!
//! Building and parsing nfnetlink messages for nf_tables, without I/O:
//! [`attr`] (nested attributes), [`msg`] (netlink and nfgenmsg headers, the
//! kernel's answers), [`batch`] (transactions: `NFNL_MSG_BATCH_BEGIN` ...
//! `NFNL_MSG_BATCH_END`, errors mapped back to operations), [`consts`] (the
//! kernel's numbers) and [`udata`] (the user data TLVs `nft` stores with
//! tables, chains, rules, sets and elements). The caller owns the socket.
//!
//! ```
//! use kproxy_nfnl::attr::AttrBuf;
//! use kproxy_nfnl::batch::Batch;
//! use kproxy_nfnl::consts::{attr, msg, netlink, nfnl};
//! use kproxy_nfnl::msg::Message;
//!
//! let mut a = AttrBuf::new();
//! a.put_str(attr::NFTA_TABLE_NAME, "kube-proxy");
//! let mut batch = Batch::new(1, None);
//! batch.push(&Message::nft(msg::NFT_MSG_NEWTABLE, netlink::NLM_F_CREATE, nfnl::NFPROTO_IPV4, a.into_bytes()));
//! let sent = batch.finish();
//! assert_eq!(sent.bytes().len(), 20 + (20 + 16) + 20);
//! ```
#![deny(missing_docs)]

pub mod attr;
pub mod batch;
pub mod consts;
pub mod msg;
pub mod udata;

/// Errors of parsing what the kernel sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NfnlError {
    /// A message or attribute is not well formed.
    #[error("malformed netlink data: {0}")]
    Malformed(&'static str),
}
