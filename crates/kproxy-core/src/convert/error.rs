//! Errors and warnings of the conversion, each one line naming the object.

use std::fmt;

/// A Kubernetes object that cannot be used, with the offending field:
/// `Service default/web: spec.ports[1].port: 70000 is out of range 1-65535`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {object}: {field}: {problem}")]
pub struct ObjectError {
    /// The object's kind (`Service`, `EndpointSlice`...).
    pub kind: &'static str,
    /// `namespace/name` (or `name` for cluster-scoped objects).
    pub object: String,
    /// The field path, e.g. `spec.ports[1].port`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A part of an object that was ignored, the way kube-proxy ignores it
/// (an invalid external IP, a source range that does not parse...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The object's kind.
    pub kind: &'static str,
    /// `namespace/name` (or `name`).
    pub object: String,
    /// The field path, e.g. `spec.externalIPs[0]`.
    pub field: String,
    /// What was done about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.kind, self.object, self.field, self.message
        )
    }
}

/// A text that could not be read as Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The text is not YAML (or JSON) at all.
    #[error("{file}: {message}")]
    Syntax {
        /// The source (file name) as given by the caller.
        file: String,
        /// The parser's message, on one line.
        message: String,
    },
    /// One document (or list item) is not a valid object of its kind.
    #[error("{file}: {location}{}: {message}", describe(.kind, .object))]
    Document {
        /// The source (file name).
        file: String,
        /// `document 2`, or `document 2, items[5]` inside a `List`.
        location: String,
        /// The document's `kind`, when known.
        kind: Option<String>,
        /// `namespace/name` (or `name`), when known.
        object: Option<String>,
        /// What is wrong, with the field path when serde knows it.
        message: String,
    },
}

fn describe(kind: &Option<String>, object: &Option<String>) -> String {
    match (kind, object) {
        (Some(k), Some(o)) => format!(" ({k} {o})"),
        (Some(k), None) => format!(" ({k})"),
        (None, Some(o)) => format!(" ({o})"),
        (None, None) => String::new(),
    }
}

/// Collapses a possibly multi-line message onto one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The object being converted: builds its errors and warnings.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub kind: &'static str,
    pub object: String,
}

impl Ctx {
    pub fn new(kind: &'static str, object: String) -> Self {
        Self { kind, object }
    }
    pub fn err(&self, field: impl Into<String>, problem: impl Into<String>) -> ObjectError {
        ObjectError {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
            problem: problem.into(),
        }
    }
    pub fn warn(&self, field: impl Into<String>, message: impl Into<String>) -> Warning {
        Warning {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line() {
        let ctx = Ctx::new("Service", "default/web".into());
        assert_eq!(
            ctx.err("spec.ports[1].port", "70000 is out of range 1-65535")
                .to_string(),
            "Service default/web: spec.ports[1].port: 70000 is out of range 1-65535"
        );
        assert_eq!(
            ctx.warn("spec.externalIPs[0]", "ignored").to_string(),
            "Service default/web: spec.externalIPs[0]: ignored"
        );
        let e = InputError::Document {
            file: "a.yaml".into(),
            location: "document 2".into(),
            kind: Some("Service".into()),
            object: Some("default/web".into()),
            message: "spec.ports[0].port: invalid type".into(),
        };
        assert_eq!(
            e.to_string(),
            "a.yaml: document 2 (Service default/web): spec.ports[0].port: invalid type"
        );
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
