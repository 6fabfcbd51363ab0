//! Netlink attributes: a builder for (nested) attributes and a parser that
//! walks them without copying.
//!
//! ```
//! use kproxy_nfnl::attr::{AttrBuf, Attrs};
//! let mut b = AttrBuf::new();
//! b.put_str(1, "kube-proxy");
//! b.nest(2, |n| {
//!     n.put_u32_be(1, 7);
//! });
//! let bytes = b.into_bytes();
//! let attrs: Vec<_> = Attrs::new(&bytes).collect::<Result<_, _>>().unwrap();
//! assert_eq!(attrs[0].str().unwrap(), "kube-proxy");
//! assert!(attrs[1].nested());
//! assert_eq!(attrs[1].attr(1).unwrap().unwrap().u32_be().unwrap(), 7);
//! ```

use crate::NfnlError;

/// The flag of an attribute whose payload is more attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// The flag of an attribute whose payload is in network byte order.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// The bits of an attribute's type that are not flags.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Rounds `len` up to netlink's 4-byte alignment.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A growing buffer of attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttrBuf {
    buf: Vec<u8>,
}

impl AttrBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an attribute of type `kind` holding `value` (padded to 4 bytes).
    ///
    /// # Panics
    /// Never for values under 64 kB; a longer value (more than netlink can
    /// carry in one attribute) is cut, and [`AttrBuf::checked`] reports it.
    pub fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        // An attribute longer than u16::MAX is recorded as 0 and caught by
        // `checked()`: no silent truncation reaches the kernel.
        let hdr = u16::try_from(len).unwrap_or(0);
        self.buf.extend_from_slice(&hdr.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Appends a NUL-terminated string.
    pub fn put_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.put(kind, &v)
    }

    /// Appends a big-endian u32 (nf_tables' numbers are big-endian).
    pub fn put_u32_be(&mut self, kind: u16, value: u32) -> &mut Self {
        self.put(kind, &value.to_be_bytes())
    }

    /// Appends a big-endian u64.
    pub fn put_u64_be(&mut self, kind: u16, value: u64) -> &mut Self {
        self.put(kind, &value.to_be_bytes())
    }

    /// Appends a nested attribute (`kind | NLA_F_NESTED`) whose payload
    /// `fill` writes.
    pub fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut AttrBuf)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        let mut inner = AttrBuf {
            buf: std::mem::take(&mut self.buf),
        };
        fill(&mut inner);
        self.buf = inner.buf;
        let len = u16::try_from(self.buf.len() - start).unwrap_or(0);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes, or an error when an attribute was too long for netlink
    /// (its length recorded as 0 by [`AttrBuf::put`] or [`AttrBuf::nest`]).
    pub fn checked(self) -> Result<Vec<u8>, NfnlError> {
        fn walk(data: &[u8]) -> Result<(), NfnlError> {
            for a in Attrs::new(data) {
                let a = a?;
                if a.nested() {
                    walk(a.payload())?;
                }
            }
            Ok(())
        }
        walk(&self.buf)?;
        Ok(self.buf)
    }
}

/// One attribute seen by [`Attrs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    kind: u16,
    payload: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The type, without the flag bits.
    pub fn kind(&self) -> u16 {
        self.kind & NLA_TYPE_MASK
    }

    /// Whether the nested flag is set.
    pub fn nested(&self) -> bool {
        self.kind & NLA_F_NESTED != 0
    }

    /// The payload (without padding).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The attributes inside this one.
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs::new(self.payload)
    }

    /// The first attribute of type `kind` inside this one.
    pub fn attr(&self, kind: u16) -> Result<Option<Attr<'a>>, NfnlError> {
        find(self.payload, kind)
    }

    /// The payload as a string (up to its NUL).
    pub fn str(&self) -> Result<&'a str, NfnlError> {
        let end = self
            .payload
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.payload.len());
        std::str::from_utf8(&self.payload[..end])
            .map_err(|_| NfnlError::Malformed("string attribute is not UTF-8"))
    }

    /// The payload as a big-endian u32.
    pub fn u32_be(&self) -> Result<u32, NfnlError> {
        let b: [u8; 4] = self
            .payload
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(NfnlError::Malformed("u32 attribute shorter than 4 bytes"))?;
        Ok(u32::from_be_bytes(b))
    }

    /// The payload as a big-endian u64.
    pub fn u64_be(&self) -> Result<u64, NfnlError> {
        let b: [u8; 8] = self
            .payload
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .ok_or(NfnlError::Malformed("u64 attribute shorter than 8 bytes"))?;
        Ok(u64::from_be_bytes(b))
    }
}

/// The first attribute of type `kind` (flags aside) in `data`.
pub fn find(data: &[u8], kind: u16) -> Result<Option<Attr<'_>>, NfnlError> {
    for a in Attrs::new(data) {
        let a = a?;
        if a.kind() == kind {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

/// An iterator over the attributes of a buffer; yields one error and stops
/// on a malformed attribute.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    data: &'a [u8],
    failed: bool,
}

impl<'a> Attrs<'a> {
    /// Walks `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            failed: false,
        }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, NfnlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.data.is_empty() {
            return None;
        }
        if self.data.len() < 4 {
            self.failed = true;
            return Some(Err(NfnlError::Malformed("attribute header cut short")));
        }
        let len = usize::from(u16::from_ne_bytes([self.data[0], self.data[1]]));
        let kind = u16::from_ne_bytes([self.data[2], self.data[3]]);
        if len < 4 || len > self.data.len() {
            self.failed = true;
            return Some(Err(NfnlError::Malformed("attribute length out of bounds")));
        }
        let payload = &self.data[4..len];
        self.data = &self.data[align(len).min(self.data.len())..];
        Some(Ok(Attr { kind, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_and_nests() {
        let mut b = AttrBuf::new();
        b.put(1, &[1, 2, 3]);
        b.nest(2, |n| {
            n.put_str(3, "ab");
        });
        let bytes = b.into_bytes();
        assert_eq!(
            bytes,
            [
                7, 0, 1, 0, 1, 2, 3, 0, 12, 0, 2, 0x80, 7, 0, 3, 0, b'a', b'b', 0, 0
            ]
        );
        let all: Vec<_> = Attrs::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].payload(), &[1, 2, 3]);
        assert_eq!(all[1].kind(), 2);
        assert_eq!(all[1].attr(3).unwrap().unwrap().str().unwrap(), "ab");
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(Attrs::new(&[2, 0, 1, 0]).next().unwrap().is_err());
        assert!(Attrs::new(&[9, 0, 1, 0, 0]).next().unwrap().is_err());
        assert!(Attrs::new(&[4, 0]).next().unwrap().is_err());
        let mut it = Attrs::new(&[9, 0, 1, 0]);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none(), "stops after an error");
    }

    #[test]
    fn too_long_is_caught() {
        let mut b = AttrBuf::new();
        b.put(1, &vec![0u8; 70_000]);
        assert!(b.checked().is_err());
    }
}
