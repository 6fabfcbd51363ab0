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
#[non_exhaustive]
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

/// A YAML reader error as one line for people: where it is, and the limit
/// or rule it broke in the input's terms (not the library's).
pub(crate) fn yaml_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    let mut inner = e;
    while let E::WithSnippet { error, .. } | E::AliasError { error, .. } = inner {
        inner = error;
    }
    let what = match inner {
        E::Budget { breach, .. } => budget_text(breach),
        E::DuplicateMappingKey { key: Some(k), .. } => {
            format!(
                "duplicate key {} (a key may appear once per mapping)",
                super::validate::quoted(k)
            )
        }
        E::DuplicateMappingKey { key: None, .. } => {
            "duplicate key (a key may appear once per mapping)".into()
        }
        E::NonFiniteFloat { value, .. } => format!(
            "{} is not a finite number (too large, or .inf/.nan)",
            super::validate::quoted(value)
        ),
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => {
            "too many alias (*name) expansions: the document is too large once aliases are expanded"
                .into()
        }
        _ => return one_line(&e.render_with_formatter(&serde_saphyr::UserMessageFormatter)),
    };
    match e.location() {
        Some(l) if l.line() > 0 => format!("line {} column {}: {what}", l.line(), l.column()),
        _ => what,
    }
}

/// A YAML size or shape limit, in words.
fn budget_text(b: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match b {
        B::Depth { depth } => format!(
            "nested too deeply (more than {} levels of mappings and lists)",
            depth.saturating_sub(1)
        ),
        B::Aliases { aliases } => format!("too many aliases (*name): {aliases}"),
        B::Anchors { anchors } => format!("too many anchors (&name): {anchors}"),
        B::AliasAnchorRatio { aliases, anchors } => {
            format!("too many aliases ({aliases}) for its anchors ({anchors})")
        }
        B::Documents { documents } => format!("too many documents: {documents}"),
        B::Nodes { nodes } => format!("too many values: {nodes}"),
        B::Events { events } => format!("too large: {events} parser events"),
        B::ScalarBytes { total_scalar_bytes } => {
            format!("too much text: {total_scalar_bytes} bytes of values")
        }
        B::InputBytes { input_bytes } => format!("too large: {input_bytes} bytes"),
        B::MergeKeys { merge_keys } => format!("too many merge keys (<<): {merge_keys}"),
        B::SequenceUnbalanced => "a list or mapping ends that never started".into(),
        B::RecordedAnchorEvents {
            recorded_anchor_events,
        } => format!(
            "too many alias (*name) expansions: {recorded_anchor_events} values copied from anchors"
        ),
        B::RecordedAnchorBytes {
            recorded_anchor_bytes,
        } => format!(
            "too many alias (*name) expansions: {recorded_anchor_bytes} bytes copied from anchors"
        ),
        B::InclusionDepth { depth } => format!("includes nested too deeply: {depth}"),
        B::PropertyExpansionDepth { depth, .. } => {
            format!("properties nested too deeply: {depth}")
        }
        B::PropertyInterpolationWork { work, .. } => {
            format!("too much property interpolation: {work}")
        }
        _ => "too large or too complex".into(),
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
    /// `object` is input text: it is shown escaped (see [`super::validate::show`]).
    pub fn new(kind: &'static str, object: String) -> Self {
        Self {
            kind,
            object: super::validate::show(&object),
        }
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
