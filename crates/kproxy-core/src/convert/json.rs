//! A fast path for one JSON document (`kubectl get -o json`, the API's
//! lists): the objects of the kinds kproxy reads are deserialised straight
//! from the text into their types, with no `serde_json::Value` tree in
//! between (which cost most of the time and memory of reading a large
//! list). Anything else (other kinds, items without `kind`, objects that
//! do not deserialise) goes the general way through a `Value`, so results
//! and errors are those of [`super::documents`].

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::documents::{Object, fill_list_item, read_value};
use super::error::InputError;

/// What is read of a document before deciding how to read the rest.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "apiVersion", default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// The objects and errors of `text` when it is one JSON document (a
/// mapping), else `None` (the text is read as YAML).
pub(super) fn read(text: &str, source: &str) -> Option<(Vec<Object>, Vec<InputError>)> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    document(raw, source, "document 1", None, &mut objects, &mut errors)?;
    Some((objects, errors))
}

/// Reads one document or list item; `list` is the kind (without `List`)
/// and apiVersion of the list holding it.
fn document(
    raw: &RawValue,
    source: &str,
    location: &str,
    list: Option<(&str, &str)>,
    objects: &mut Vec<Object>,
    errors: &mut Vec<InputError>,
) -> Option<()> {
    let text = raw.get();
    let head: Option<Head> = if text.starts_with('{') {
        serde_json::from_str(text).ok()
    } else {
        None
    };
    if let Some(head) = &head {
        let api_version = head.api_version.as_deref().unwrap_or("");
        let kind = head.kind.as_deref().unwrap_or("");
        if let (Some(items), Some(item_kind)) = (&head.items, kind.strip_suffix("List")) {
            for (j, item) in items.iter().enumerate() {
                let loc = format!("{location}, items[{j}]");
                document(
                    item,
                    source,
                    &loc,
                    Some((item_kind, api_version)),
                    objects,
                    errors,
                )?;
            }
            return Some(());
        }
        if head.items.is_none() {
            let typed = match (api_version, kind) {
                ("v1", "Service") => typed(text).map(Object::Service),
                ("discovery.k8s.io/v1", "EndpointSlice") => typed(text).map(Object::EndpointSlice),
                ("v1", "Endpoints") => typed(text).map(Object::Endpoints),
                ("v1", "Node") => typed(text).map(Object::Node),
                _ => None,
            };
            if let Some(object) = typed {
                objects.push(object);
                return Some(());
            }
        }
    }
    let mut value: Value = serde_json::from_str(text).ok()?;
    if let Some((item_kind, api_version)) = list {
        fill_list_item(&mut value, item_kind, api_version);
    }
    read_value(value, source, location, objects, errors);
    Some(())
}

fn typed<T: serde::de::DeserializeOwned>(text: &str) -> Option<Box<T>> {
    serde_json::from_str(text).ok().map(Box::new)
}

#[cfg(test)]
mod tests {
    use super::super::documents::parse_documents_lenient;
    use super::*;

    /// The general way: the text through a `Value`.
    fn general(text: &str, source: &str) -> (Vec<Object>, Vec<InputError>) {
        let value: Value = serde_json::from_str(text).expect("json");
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        read_value(value, source, "document 1", &mut objects, &mut errors);
        (objects, errors)
    }

    #[test]
    fn typed_reading_equals_the_general_way() {
        let texts = [
            r#"{"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"},
                 "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80, "targetPort": "http"}]}},
                {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                 "metadata": {"name": "a-1", "namespace": "n", "labels": {"kubernetes.io/service-name": "a"}},
                 "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true}}]},
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}},
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"}, "spec": {"ports": [{"port": "80"}]}},
                {"apiVersion": "v1", "kind": "ServiceList", "items": [{"metadata": {"name": "typed"}}]},
                {"apiVersion": "v1", "kind": "Service", "kind": "Service", "metadata": {"name": "dup"}},
                {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"}, "subsets": []},
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}},
                5, null, [], {"kind": "List"}
            ]}"#,
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "one"}}"#,
            r#"{"apiVersion": "v1", "kind": "ServiceList", "items": null}"#,
            r#"{"apiVersion": "v1", "kind": "EndpointsList", "items": [{"metadata": {"name": "x"}}]}"#,
        ];
        for text in texts {
            let fast = read(text, "f.json").expect("one JSON document");
            let slow = general(text, "f.json");
            assert_eq!(fast.0, slow.0, "{text}");
            let msgs = |e: &[InputError]| e.iter().map(ToString::to_string).collect::<Vec<_>>();
            assert_eq!(msgs(&fast.1), msgs(&slow.1), "{text}");
            // And parse_documents_lenient takes this way.
            let public = parse_documents_lenient(text, "f.json");
            assert_eq!(public.0, fast.0);
        }
        let (objects, errors) = read(texts[0], "f.json").expect("json");
        assert_eq!(objects.len(), 7);
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn other_texts_are_left_to_the_yaml_reader() {
        for text in [
            "kind: Service\n",
            "[{\"kind\": \"Service\"}]",
            "{\"a\": 1}\n---\n{\"b\": 2}\n",
            "{\"a\": 1",
            "{a: 1}",
        ] {
            assert!(read(text, "x").is_none(), "{text}");
        }
    }
}
