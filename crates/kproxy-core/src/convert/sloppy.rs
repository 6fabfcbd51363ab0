//! Lenient IP and CIDR parsing, as kube-proxy does it (`ParseIPSloppy`).
//!
//! Kubernetes accepts IPv4 octets with leading zeros and reads them as
//! decimal (`10.180.00.001` is `10.180.0.1`), and treats IPv4-mapped IPv6
//! addresses (`::ffff:1.2.3.4`) as IPv4. The results print canonically.
//!
//! ```
//! use kproxy_core::convert::sloppy::{parse_cidr, parse_ip};
//! assert_eq!(parse_ip("10.180.00.001").unwrap().to_string(), "10.180.0.1");
//! assert_eq!(parse_ip("::ffff:1.2.3.4").unwrap().to_string(), "1.2.3.4");
//! assert_eq!(parse_cidr("203.0.113.000/025").unwrap().trunc().to_string(), "203.0.113.0/25");
//! assert!(parse_ip("1.2.3").is_none());
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Parses dotted-decimal IPv4, allowing leading zeros in each octet.
fn parse_v4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() {
            return None;
        }
        // Decimal, any number of leading zeros, at most 255.
        let mut value: u32 = 0;
        for b in part.bytes() {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
            if value > 255 {
                return None;
            }
        }
        *octet = u8::try_from(value).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Parses IPv6 text, allowing a sloppy embedded IPv4 tail (`::ffff:010.1.2.3`).
fn parse_v6(s: &str) -> Option<Ipv6Addr> {
    if let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Some(ip);
    }
    let (head, tail) = s.rsplit_once(':')?;
    if !tail.contains('.') {
        return None;
    }
    let v4 = parse_v4(tail)?;
    format!("{head}:{v4}").parse().ok()
}

/// Parses an IP address the way Kubernetes' `ParseIPSloppy` does. IPv4-mapped
/// IPv6 addresses come back as IPv4. No surrounding whitespace is allowed.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        let v6 = parse_v6(s)?;
        Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        })
    } else {
        parse_v4(s).map(IpAddr::V4)
    }
}

/// Parses `ip/prefix` the way Kubernetes' `ParseCIDRSloppy` does (leading
/// zeros allowed in octets and in the prefix length). The host bits are kept:
/// call [`IpNet::trunc`] to mask to the network. An IPv4-mapped IPv6 network
/// with a prefix of at least 96 comes back as IPv4.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let (ip, prefix) = s.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = prefix.trim_start_matches('0');
    let len: u8 = if digits.is_empty() {
        0
    } else if digits.len() > 3 {
        return None;
    } else {
        digits.parse().ok()?
    };
    if ip.contains(':') {
        let v6 = parse_v6(ip)?;
        match v6.to_ipv4_mapped() {
            Some(v4) if len >= 96 => Ipv4Net::new(v4, len - 96).ok().map(IpNet::V4),
            _ => Ipv6Net::new(v6, len).ok().map(IpNet::V6),
        }
    } else {
        Ipv4Net::new(parse_v4(ip)?, len).ok().map(IpNet::V4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<String> {
        parse_ip(s).map(|i| i.to_string())
    }

    #[test]
    fn ipv4() {
        assert_eq!(ip("10.180.00.001").as_deref(), Some("10.180.0.1"));
        assert_eq!(ip("172.30.0.041").as_deref(), Some("172.30.0.41"));
        assert_eq!(ip("0000.1.1.1").as_deref(), Some("0.1.1.1"));
        assert_eq!(ip("255.255.255.255").as_deref(), Some("255.255.255.255"));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.-4",
            "1.2..4",
            " 1.2.3.4",
            "a.b.c.d",
            "1.2.3.4/32",
            "1111.1.1.1",
        ] {
            assert_eq!(ip(bad), None, "{bad}");
        }
    }

    /// The octet reading of the first version (trim zeros, then parse).
    fn reference_v4(s: &str) -> Option<Ipv4Addr> {
        let mut octets = [0u8; 4];
        let mut parts = s.split('.');
        for octet in &mut octets {
            let part = parts.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let digits = part.trim_start_matches('0');
            *octet = if digits.is_empty() {
                0
            } else if digits.len() > 3 {
                return None;
            } else {
                digits.parse().ok()?
            };
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Ipv4Addr::from(octets))
    }

    #[test]
    fn ipv4_octets_as_the_reference() {
        let pieces = [
            "", "0", "00", "000000", "1", "01", "001", "0001", "9", "10", "99", "100", "199",
            "255", "0255", "256", "0256", "999", "1000", "00000255", "1a", "+1", "-1", " 1", "1 ",
            "\u{661}",
        ];
        let mut n = 0;
        for a in pieces {
            for b in pieces {
                for tail in ["1.2", "255.0", "1", "1.2.3", "01.002"] {
                    let s = format!("{a}.{b}.{tail}");
                    assert_eq!(parse_v4(&s), reference_v4(&s), "{s}");
                    n += usize::from(parse_v4(&s).is_some());
                }
            }
        }
        assert!(n > 100);
    }

    #[test]
    fn ipv6() {
        assert_eq!(ip("FD00:0:0::0001").as_deref(), Some("fd00::1"));
        assert_eq!(ip("::ffff:1.2.3.4").as_deref(), Some("1.2.3.4"));
        assert_eq!(ip("::ffff:010.001.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(ip("64:ff9b::1.2.3.4").as_deref(), Some("64:ff9b::102:304"));
        for bad in ["fe80::1%eth0", ":::", "1::2::3", "[::1]", "::ffff:1.2.3"] {
            assert_eq!(ip(bad), None, "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let c = |s: &str| parse_cidr(s).map(|n| n.trunc().to_string());
        assert_eq!(c("203.0.113.000/025").as_deref(), Some("203.0.113.0/25"));
        assert_eq!(c("1.2.3.4/28").as_deref(), Some("1.2.3.0/28"));
        assert_eq!(c("fd00:10::5/64").as_deref(), Some("fd00:10::/64"));
        assert_eq!(c("::ffff:1.2.3.4/120").as_deref(), Some("1.2.3.0/24"));
        assert_eq!(c("0.0.0.0/0").as_deref(), Some("0.0.0.0/0"));
        for bad in [
            "1.2.3.4",
            "1.2.3.4/33",
            "::/129",
            "1.2.3.4/",
            "/8",
            "1.2.3.4/-1",
            "x/8",
        ] {
            assert_eq!(c(bad), None, "{bad}");
        }
    }
}
