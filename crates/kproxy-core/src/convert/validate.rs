//! What the API server checks of names and labels (apimachinery's
//! `util/validation`), and how input text is shown in messages.
//!
//! A name the API server would refuse never reaches a Service chain, a
//! comment or an nftables object name: the converters reject the object.

use std::collections::BTreeMap;

use super::error::{Ctx, ObjectError};

/// Longest DNS-1123 label (namespaces, Service names, port names).
pub const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain (EndpointSlice, Endpoints and Node names).
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest label value (and name part of a label key).
pub const LABEL_VALUE_MAX: usize = 63;
/// Longest text echoed in a message (in characters); longer ones are cut.
/// Room for any valid `namespace/name`.
pub const SHOWN_MAX: usize = 320;

const LABEL_TEXT: &str = "must be a lowercase RFC 1123 label: lower case alphanumeric characters or '-', starting and ending with an alphanumeric character";
const SUBDOMAIN_TEXT: &str = "must be a lowercase RFC 1123 subdomain: lower case alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character";
const LABEL_VALUE_TEXT: &str = "must be empty or consist of alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character";

/// Why a name or label is not what the API server accepts (the message
/// follows the value it is about: `"a_b": must be ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// Longer than the kind allows.
    #[error("must be no more than {0} characters")]
    TooLong(usize),
    /// Not a DNS-1123 label.
    #[error("{LABEL_TEXT}")]
    NotLabel,
    /// Not a DNS-1123 subdomain.
    #[error("{SUBDOMAIN_TEXT}")]
    NotSubdomain,
    /// Not a label value.
    #[error("{LABEL_VALUE_TEXT}")]
    NotLabelValue,
    /// A port name that is empty or longer than 15 characters.
    #[error("must be 1 to 15 characters")]
    PortNameLength,
    /// A port name with a character other than `a-z`, `0-9`, `-`.
    #[error("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")]
    PortNameCharacters,
    /// A port name without a letter.
    #[error("must contain at least one letter (a-z)")]
    PortNameNoLetter,
    /// A port name with `--`.
    #[error("must not contain consecutive hyphens")]
    PortNameHyphens,
    /// A port name starting or ending with `-`.
    #[error("must not begin or end with a hyphen")]
    PortNameEdgeHyphen,
    /// A label key's prefix (before `/`) that is empty.
    #[error("prefix part must be non-empty")]
    EmptyPrefix,
    /// A label key's prefix that is not a DNS-1123 subdomain.
    #[error("prefix part {0}")]
    Prefix(Box<Invalid>),
    /// A label key without a name part.
    #[error("name part must be non-empty")]
    EmptyName,
    /// A label key's name part longer than 63 characters.
    #[error("name part must be no more than {0} characters")]
    NameTooLong(usize),
    /// A label key's name part with other characters.
    #[error(
        "name part must consist of alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
    )]
    NameCharacters,
}

fn is_label_bytes(b: &[u8]) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// Checks a DNS-1123 label (`IsDNS1123Label`): at most 63 lower-case
/// alphanumerics or `-`, starting and ending with an alphanumeric.
///
/// ```
/// use kproxy_core::convert::validate::dns1123_label;
/// assert!(dns1123_label("kube-system").is_ok());
/// assert!(dns1123_label("9lives").is_ok());
/// assert!(dns1123_label("a\"b").is_err());
/// assert_eq!(dns1123_label(&"a".repeat(64)).unwrap_err().to_string(), "must be no more than 63 characters");
/// ```
pub fn dns1123_label(s: &str) -> Result<(), Invalid> {
    if s.len() > DNS1123_LABEL_MAX {
        return Err(Invalid::TooLong(DNS1123_LABEL_MAX));
    }
    if !is_label_bytes(s.as_bytes()) {
        return Err(Invalid::NotLabel);
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (`IsDNS1123Subdomain`): at most 253
/// characters, labels joined by `.`.
///
/// ```
/// use kproxy_core::convert::validate::dns1123_subdomain;
/// assert!(dns1123_subdomain("web-abc.x1").is_ok());
/// assert!(dns1123_subdomain("web..x").is_err());
/// assert!(dns1123_subdomain("Web").is_err());
/// ```
pub fn dns1123_subdomain(s: &str) -> Result<(), Invalid> {
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(Invalid::TooLong(DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(|l| is_label_bytes(l.as_bytes())) {
        return Err(Invalid::NotSubdomain);
    }
    Ok(())
}

/// Checks a named port (`IsValidPortName`, an IANA_SVC_NAME, as a
/// Service's `targetPort`): 1 to 15 lower-case alphanumerics or `-`, at
/// least one letter, no `--`, not starting or ending with `-`.
///
/// ```
/// use kproxy_core::convert::validate::port_name;
/// assert!(port_name("http-alt").is_ok());
/// assert!(port_name("8080").is_err());
/// assert!(port_name("a--b").is_err());
/// assert!(port_name("sixteen-chars-xx").is_err());
/// ```
pub fn port_name(s: &str) -> Result<(), Invalid> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 15 {
        return Err(Invalid::PortNameLength);
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Err(Invalid::PortNameCharacters);
    }
    if !b.iter().any(u8::is_ascii_lowercase) {
        return Err(Invalid::PortNameNoLetter);
    }
    if s.contains("--") {
        return Err(Invalid::PortNameHyphens);
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Err(Invalid::PortNameEdgeHyphen);
    }
    Ok(())
}

fn is_label_value_bytes(b: &[u8]) -> bool {
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    b.is_empty()
        || (b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|c| alnum(c) || b"-_.".contains(c)))
}

/// Checks a label value (`IsValidLabelValue`): empty, or at most 63
/// alphanumerics, `-`, `_` or `.`, starting and ending with an alphanumeric.
///
/// ```
/// use kproxy_core::convert::validate::label_value;
/// assert!(label_value("").is_ok());
/// assert!(label_value("My_app.v2").is_ok());
/// assert!(label_value("a b").is_err());
/// ```
pub fn label_value(s: &str) -> Result<(), Invalid> {
    if s.len() > LABEL_VALUE_MAX {
        return Err(Invalid::TooLong(LABEL_VALUE_MAX));
    }
    if !is_label_value_bytes(s.as_bytes()) {
        return Err(Invalid::NotLabelValue);
    }
    Ok(())
}

/// Checks a label key (`IsQualifiedName`): an optional DNS-1123 subdomain
/// prefix and `/`, then a name of at most 63 alphanumerics, `-`, `_` or
/// `.`, starting and ending with an alphanumeric.
///
/// ```
/// use kproxy_core::convert::validate::qualified_name;
/// assert!(qualified_name("kubernetes.io/service-name").is_ok());
/// assert!(qualified_name("app").is_ok());
/// assert!(qualified_name("a/b/c").is_err());
/// assert!(qualified_name("/b").is_err());
/// ```
pub fn qualified_name(s: &str) -> Result<(), Invalid> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(Invalid::EmptyPrefix);
        }
        dns1123_subdomain(p).map_err(|e| Invalid::Prefix(Box::new(e)))?;
    }
    if name.is_empty() {
        return Err(Invalid::EmptyName);
    }
    if name.len() > LABEL_VALUE_MAX {
        return Err(Invalid::NameTooLong(LABEL_VALUE_MAX));
    }
    if !is_label_value_bytes(name.as_bytes()) {
        return Err(Invalid::NameCharacters);
    }
    Ok(())
}

/// Input text as shown in a message: control characters, quotes and
/// backslashes escaped, cut after [`SHOWN_MAX`] characters (the length is
/// then given), so that any name stays on one line of bounded length.
///
/// ```
/// use kproxy_core::convert::validate::show;
/// assert_eq!(show("a\nb"), "a\\nb");
/// assert_eq!(show(&"x".repeat(1000)), format!("{}...(1000 bytes)", "x".repeat(320)));
/// ```
pub fn show(s: &str) -> String {
    let cut = s.char_indices().nth(SHOWN_MAX).map(|(i, _)| i);
    let head = &s[..cut.unwrap_or(s.len())];
    // `Debug` escapes what a terminal or a log line must not see raw.
    let debug = format!("{head:?}");
    let mut out = debug[1..debug.len() - 1].to_string();
    if cut.is_some() {
        out.push_str(&format!("...({} bytes)", s.len()));
    }
    out
}

/// [`show`] in double quotes.
pub(crate) fn quoted(s: &str) -> String {
    format!("\"{}\"", show(s))
}

/// Checks `value` of `field` with `check`, as an [`ObjectError`].
pub(crate) fn field(
    ctx: &Ctx,
    field: impl Into<String>,
    value: &str,
    check: fn(&str) -> Result<(), Invalid>,
) -> Result<(), ObjectError> {
    check(value).map_err(|e| ctx.err(field, format!("{}: {e}", quoted(value))))
}

/// Checks an object's labels (`ValidateLabels`): keys are qualified
/// names, values label values.
pub(crate) fn labels(ctx: &Ctx, labels: &BTreeMap<String, String>) -> Result<(), ObjectError> {
    for (k, v) in labels {
        field(ctx, "metadata.labels", k, qualified_name)?;
        field(ctx, format!("metadata.labels[{}]", show(k)), v, label_value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "0", "a-b", "a1-2b", &"a".repeat(63)] {
            assert!(dns1123_label(ok).is_ok(), "{ok}");
            assert!(dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-a", "a-", "A", "a_b", "a.b", "a\"b", "a$b", "a\nb", "ä",
        ] {
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a.-b", "A.b"] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert_eq!(
            dns1123_subdomain(&long).unwrap_err().to_string(),
            "must be no more than 253 characters"
        );
        assert!(dns1123_subdomain(&long[2..]).is_ok());
    }

    #[test]
    fn label_values_and_keys() {
        for ok in ["", "a", "A_b.c-D", &"z".repeat(63)] {
            assert!(label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["_a", "a_", "a b", "a\"", &"z".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
        for ok in ["a", "example.com/A_b", "kubernetes.io/service-name"] {
            assert!(qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/", "/a", "a/b/c", "Ex.com/a", "a b", &"k".repeat(64)] {
            assert!(qualified_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shown_text_is_one_short_line() {
        assert_eq!(show("ns\"x\"\r\n\t\\"), "ns\\\"x\\\"\\r\\n\\t\\\\");
        assert_eq!(show("\u{1b}[31m"), "\\u{1b}[31m");
        assert_eq!(show("plain/name"), "plain/name");
        let s = show(&format!("{}\n", "é".repeat(400)));
        assert!(s.ends_with("...(801 bytes)") && !s.contains('\n'), "{s}");
        assert_eq!(s.chars().count(), SHOWN_MAX + "...(801 bytes)".len());
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }
}
