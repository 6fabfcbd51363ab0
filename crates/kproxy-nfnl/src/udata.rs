//! User data: the type-length-value records `nft` (libnftnl's `nftnl_udata`)
//! stores in the kernel's opaque `*_USERDATA` attributes: comments, and a
//! set's key byte order and `typeof` expression. The kernel keeps them
//! verbatim; `nft list` reads them back.
//!
//! ```
//! use kproxy_nfnl::udata::{Udata, RULE_COMMENT};
//! let mut u = Udata::new();
//! u.put_str(RULE_COMMENT, "ns1/svc1:p80");
//! assert_eq!(u.as_bytes()[..2], [0, 13]);
//! assert_eq!(Udata::get(u.as_bytes(), RULE_COMMENT), Some(&b"ns1/svc1:p80\0"[..]));
//! ```

/// `NFTNL_UDATA_TABLE_COMMENT`
pub const TABLE_COMMENT: u8 = 0;
/// `NFTNL_UDATA_CHAIN_COMMENT`
pub const CHAIN_COMMENT: u8 = 0;
/// `NFTNL_UDATA_RULE_COMMENT`
pub const RULE_COMMENT: u8 = 0;
/// `NFTNL_UDATA_SET_KEYBYTEORDER`
pub const SET_KEYBYTEORDER: u8 = 0;
/// `NFTNL_UDATA_SET_DATABYTEORDER`
pub const SET_DATABYTEORDER: u8 = 1;
/// `NFTNL_UDATA_SET_MERGE_ELEMENTS`
pub const SET_MERGE_ELEMENTS: u8 = 2;
/// `NFTNL_UDATA_SET_KEY_TYPEOF`
pub const SET_KEY_TYPEOF: u8 = 3;
/// `NFTNL_UDATA_SET_DATA_TYPEOF`
pub const SET_DATA_TYPEOF: u8 = 4;
/// `NFTNL_UDATA_SET_COMMENT`
pub const SET_COMMENT: u8 = 7;
/// `NFTNL_UDATA_SET_ELEM_COMMENT`
pub const SET_ELEM_COMMENT: u8 = 0;
/// `NFTNL_UDATA_SET_ELEM_FLAGS`
pub const SET_ELEM_FLAGS: u8 = 1;

/// A buffer of user data records (type: u8, length: u8, value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Udata {
    buf: Vec<u8>,
}

impl Udata {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a record; `false` (and nothing written) when `value` is
    /// longer than a record can hold (255 bytes).
    pub fn put(&mut self, kind: u8, value: &[u8]) -> bool {
        let Ok(len) = u8::try_from(value.len()) else {
            return false;
        };
        self.buf.push(kind);
        self.buf.push(len);
        self.buf.extend_from_slice(value);
        true
    }

    /// Appends a NUL-terminated string (as `nft` stores comments).
    pub fn put_str(&mut self, kind: u8, value: &str) -> bool {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.put(kind, &v)
    }

    /// Appends a native-endian u32 (as libnftnl stores numbers).
    pub fn put_u32(&mut self, kind: u8, value: u32) -> bool {
        self.put(kind, &value.to_ne_bytes())
    }

    /// The records.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether no record was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The value of the first record of type `kind` in `data`.
    pub fn get(mut data: &[u8], kind: u8) -> Option<&[u8]> {
        while data.len() >= 2 {
            let (k, len) = (data[0], usize::from(data[1]));
            let value = data.get(2..2 + len)?;
            if k == kind {
                return Some(value);
            }
            data = &data[2 + len..];
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_limits() {
        let mut u = Udata::new();
        assert!(u.put_u32(SET_KEYBYTEORDER, 1));
        assert!(!u.put(SET_COMMENT, &[0u8; 256]));
        assert!(u.put_str(SET_COMMENT, "x"));
        assert_eq!(Udata::get(u.as_bytes(), SET_COMMENT), Some(&b"x\0"[..]));
        assert_eq!(Udata::get(u.as_bytes(), 9), None);
        assert_eq!(Udata::get(&[1, 5, 0], 1), None, "cut short");
    }
}
