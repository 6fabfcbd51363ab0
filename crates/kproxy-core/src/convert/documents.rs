//! Reading YAML/JSON text into Kubernetes objects.

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use k8s_openapi::api::networking::v1 as networkingv1;
use serde_json::Value;

use super::error::{InputError, one_line, yaml_message};
use crate::config::{self, KubeProxyConfiguration};

/// One Kubernetes object read from text.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// `v1` `Service`.
    Service(Box<corev1::Service>),
    /// `discovery.k8s.io/v1` `EndpointSlice`.
    EndpointSlice(Box<discoveryv1::EndpointSlice>),
    /// `v1` `Endpoints` (converted as the mirroring controller would).
    Endpoints(Box<corev1::Endpoints>),
    /// `v1` `Node`.
    Node(Box<corev1::Node>),
    /// `networking.k8s.io/v1` (or `v1beta1`) `ServiceCIDR`.
    ServiceCidr(Box<networkingv1::ServiceCIDR>),
    /// `kubeproxy.config.k8s.io/v1alpha1` or `v1alpha2` `KubeProxyConfiguration`.
    ProxyConfig(Box<KubeProxyConfiguration>),
    /// Any other kind: kept only to be reported.
    Other {
        /// `apiVersion` (empty when absent).
        api_version: String,
        /// `kind` (empty when absent).
        kind: String,
        /// `namespace/name`, `name`, or empty.
        name: String,
    },
}

impl Object {
    /// The object's kind (`Service`, ...).
    pub fn kind(&self) -> &str {
        match self {
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Endpoints(_) => "Endpoints",
            Object::Node(_) => "Node",
            Object::ServiceCidr(_) => "ServiceCIDR",
            Object::ProxyConfig(_) => "KubeProxyConfiguration",
            Object::Other { kind, .. } => kind,
        }
    }
}

/// Budget for serde-saphyr: inputs are whole cluster dumps, so the defaults
/// (1024 documents, 250k nodes) are raised; alias limits stay.
pub(super) fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 10_000_000;
    budget.max_nodes = 500_000_000;
    budget.max_events = 2_000_000_000;
    budget.max_total_scalar_bytes = 1 << 34;
    budget.max_depth = 256;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    // `1e999` reads as the string ".inf": the field's type then rejects it
    // by name (the reader alone cannot say which field it was).
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::AsString;
    options
}

/// Reads every object of a multi-document YAML (or JSON) text.
///
/// Empty documents are skipped; `kind: List` and typed lists (`ServiceList`,
/// as `kubectl get -o yaml` or the API return) are unpacked recursively.
/// `source` names the text in errors (usually the file name). The first
/// document that is not a valid object of its kind is an error; use
/// [`parse_documents_lenient`] to keep going.
///
/// ```
/// use kproxy_core::convert::{parse_documents, Object};
/// let objs = parse_documents(
///     "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n---\nkind: ConfigMap\napiVersion: v1\n",
///     "in.yaml",
/// ).unwrap();
/// assert!(matches!(&objs[0], Object::Service(_)));
/// assert_eq!(objs[1].kind(), "ConfigMap");
/// ```
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Object>, InputError> {
    let (objects, mut errors) = parse_documents_lenient(text, source);
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Like [`parse_documents`], but a bad document only adds an error and the
/// others are still returned. A YAML syntax error still loses the whole text.
pub fn parse_documents_lenient(text: &str, source: &str) -> (Vec<Object>, Vec<InputError>) {
    // The fast reader takes the plain YAML most manifests are; serde-saphyr
    // (whose results it equals) the rest, and reports errors.
    let parsed = match super::fastyaml::read(text) {
        Some(docs) => Ok(docs),
        None => serde_saphyr::from_multiple_with_options(text, yaml_options()),
    };
    let docs: Vec<Value> = match parsed {
        Ok(d) => d,
        Err(e) => {
            return (
                Vec::new(),
                vec![InputError::Syntax {
                    file: source.to_string(),
                    message: yaml_message(&e),
                }],
            );
        }
    };
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let location = format!("document {}", i + 1);
        read_value(doc, source, &location, &mut objects, &mut errors);
    }
    (objects, errors)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn object_name(v: &Value) -> Option<String> {
    let meta = v.get("metadata")?;
    let name = str_field(meta, "name")?;
    let full = match str_field(meta, "namespace") {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    };
    Some(super::validate::show(&full))
}

fn read_value(
    mut doc: Value,
    source: &str,
    location: &str,
    objects: &mut Vec<Object>,
    errors: &mut Vec<InputError>,
) {
    if doc.is_null() {
        return;
    }
    let doc_error =
        |kind: Option<String>, object: Option<String>, message: String| InputError::Document {
            file: source.to_string(),
            location: location.to_string(),
            kind,
            object,
            message,
        };
    if !doc.is_object() {
        errors.push(doc_error(
            None,
            None,
            "expected a mapping with apiVersion and kind".into(),
        ));
        return;
    }
    let api_version = str_field(&doc, "apiVersion").unwrap_or("").to_string();
    let kind = str_field(&doc, "kind").unwrap_or("").to_string();

    // Lists: `kind: List` (kubectl) or `<Kind>List` (the API).
    if kind.ends_with("List") {
        if let Some(Value::Array(items)) = doc.get_mut("items").map(Value::take) {
            let item_kind = kind.strip_suffix("List").unwrap_or("");
            for (j, mut item) in items.into_iter().enumerate() {
                // The API leaves apiVersion/kind out of typed list items.
                if let Value::Object(map) = &mut item
                    && !item_kind.is_empty()
                {
                    map.entry("kind")
                        .or_insert_with(|| Value::String(item_kind.to_string()));
                    map.entry("apiVersion")
                        .or_insert_with(|| Value::String(api_version.clone()));
                }
                let loc = format!("{location}, items[{j}]");
                read_value(item, source, &loc, objects, errors);
            }
            return;
        }
        if kind == "List" || doc.get("items").is_some_and(Value::is_null) {
            return; // an empty list
        }
    }

    let name = object_name(&doc);
    let result = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => typed(doc).map(Object::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(doc).map(Object::EndpointSlice),
        ("v1", "Endpoints") => typed(doc).map(Object::Endpoints),
        ("v1", "Node") => typed(doc).map(Object::Node),
        ("networking.k8s.io/v1" | "networking.k8s.io/v1beta1", "ServiceCIDR") => {
            // v1beta1 has the same shape; k8s-openapi checks the apiVersion.
            if let Value::Object(map) = &mut doc {
                map.insert(
                    "apiVersion".into(),
                    Value::String("networking.k8s.io/v1".into()),
                );
            }
            typed(doc).map(Object::ServiceCidr)
        }
        // kube-proxy's ConfigMap counts as its configuration.
        ("v1", "ConfigMap") => super::configmap::object(doc, name.clone()),
        (config::V1ALPHA1 | config::V1ALPHA2, "KubeProxyConfiguration") => {
            typed(doc).map(Object::ProxyConfig)
        }
        _ => Ok(Object::Other {
            api_version,
            kind: kind.clone(),
            name: name.clone().unwrap_or_default(),
        }),
    };
    match result {
        Ok(o) => objects.push(o),
        Err(message) => errors.push(doc_error(
            (!kind.is_empty()).then(|| super::validate::show(&kind)),
            name,
            message,
        )),
    }
}

/// Deserialises a document into a typed object, naming the failing field.
fn typed<T: serde::de::DeserializeOwned>(doc: Value) -> Result<Box<T>, String> {
    // Path tracking allocates every key it passes: only a document that
    // does not deserialise is read again with it, for the error's path.
    if let Ok(t) = T::deserialize(&doc) {
        return Ok(Box::new(t));
    }
    serde_path_to_error::deserialize(doc)
        .map(Box::new)
        .map_err(|e| {
            // Keys in the path are input text: shown escaped.
            let path = super::validate::show(&e.path().to_string());
            let inner = non_finite_hint(one_line(&e.into_inner().to_string()));
            if path == "." || path.is_empty() {
                inner
            } else {
                format!("{path}: {inner}")
            }
        })
}

/// A number too large for a float reads as `.inf` (see [`yaml_options`]):
/// says so where a type error shows it.
fn non_finite_hint(message: String) -> String {
    for v in [".inf", "-.inf", ".nan"] {
        let spelled = format!("invalid type: string \"{v}\"");
        if let Some(rest) = message.strip_prefix(&spelled) {
            return format!("invalid type: {v} (a number too large, or .inf/.nan){rest}");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_lists() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a, namespace: ns}
  spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: a-1, namespace: ns, labels: {kubernetes.io/service-name: a}}
  addressType: IPv4
  endpoints: []
---
# just a comment
---
apiVersion: v1
kind: ServiceList
items:
- metadata: {name: b}
  spec: {clusterIP: 10.0.0.2}
---
{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "y"}}
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
---
apiVersion: networking.k8s.io/v1beta1
kind: ServiceCIDR
metadata: {name: kubernetes}
spec: {cidrs: [10.96.0.0/16]}
"#;
        let objs = parse_documents(text, "t.yaml").unwrap();
        let kinds: Vec<_> = objs.iter().map(Object::kind).collect();
        assert_eq!(
            kinds,
            [
                "Service",
                "EndpointSlice",
                "Service",
                "ConfigMap",
                "KubeProxyConfiguration",
                "ServiceCIDR"
            ]
        );
        match &objs[3] {
            Object::Other { name, .. } => assert_eq!(name, "y/x"),
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn errors_name_file_document_object_and_field() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  ports:\n  - port: \"80\"\n";
        let err = parse_documents(text, "svc.yaml").unwrap_err().to_string();
        assert!(
            err.starts_with("svc.yaml: document 2 (Service default/web): spec.ports[0].port: "),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let (objs, errs) = parse_documents_lenient(text, "svc.yaml");
        assert_eq!(objs.len(), 1);
        assert_eq!(errs.len(), 1);

        let err = parse_documents("a: [1, 2\n", "bad.yaml").unwrap_err();
        assert!(matches!(err, InputError::Syntax { .. }), "{err}");
        assert!(err.to_string().starts_with("bad.yaml: "));

        let err = parse_documents("- 1\n- 2\n", "seq.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "seq.yaml: document 1: expected a mapping with apiVersion and kind"
        );

        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata: {name: s}\n  endpoints: 5\n";
        let err = parse_documents(text, "l.yaml").unwrap_err().to_string();
        assert!(
            err.starts_with("l.yaml: document 1, items[0] (EndpointSlice s): "),
            "{err}"
        );
    }

    #[test]
    fn empty_inputs() {
        assert!(parse_documents("", "e").unwrap().is_empty());
        assert!(parse_documents("---\n---\n", "e").unwrap().is_empty());
        assert!(
            parse_documents("apiVersion: v1\nkind: List\nitems: []\n", "e")
                .unwrap()
                .is_empty()
        );
    }
}

#[cfg(test)]
mod kubectl_tests {
    use super::*;

    /// What `kubectl get svc,endpointslices -o yaml` prints, trimmed.
    const KUBECTL: &str = r#"apiVersion: v1
items:
- apiVersion: v1
  kind: Service
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"v1","kind":"Service"}
    creationTimestamp: "2024-05-29T07:42:43Z"
    labels:
      app: nginx
    name: nginx-service
    namespace: default
    resourceVersion: "412201"
    uid: 17f43ff9-16fe-4507-a593-ede1a29a1255
  spec:
    clusterIP: 10.96.95.164
    clusterIPs:
    - 10.96.95.164
    externalTrafficPolicy: Cluster
    internalTrafficPolicy: Cluster
    ipFamilies:
    - IPv4
    ipFamilyPolicy: SingleStack
    ports:
    - nodePort: 31234
      port: 80
      protocol: TCP
      targetPort: 80
    selector:
      app: nginx
    sessionAffinity: None
    type: NodePort
  status:
    loadBalancer: {}
- addressType: IPv4
  apiVersion: discovery.k8s.io/v1
  endpoints:
  - addresses:
    - 10.244.1.5
    conditions:
      ready: true
      serving: true
      terminating: false
    nodeName: kind-worker
    targetRef:
      kind: Pod
      name: nginx-7c5ddbdf54-abcde
      namespace: default
      uid: 0c7a6f0e-8d0b-4b0e-9f3e-2f7f5d1c1a11
  kind: EndpointSlice
  metadata:
    creationTimestamp: "2024-05-29T07:42:43Z"
    generateName: nginx-service-
    generation: 3
    labels:
      endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
      kubernetes.io/service-name: nginx-service
    name: nginx-service-xk2p9
    namespace: default
    ownerReferences:
    - apiVersion: v1
      blockOwnerDeletion: true
      controller: true
      kind: Service
      name: nginx-service
      uid: 17f43ff9-16fe-4507-a593-ede1a29a1255
    resourceVersion: "468584"
    uid: 85b1134f-7f5d-4087-b76f-e7aa5371c016
  ports:
  - name: ""
    port: 80
    protocol: TCP
kind: List
metadata:
  resourceVersion: ""
"#;

    #[test]
    fn kubectl_dump_yaml_and_json() {
        let objs = parse_documents(KUBECTL, "dump.yaml").expect("kubectl yaml parses");
        assert_eq!(objs.len(), 2);
        let value: Value = serde_saphyr::from_str(KUBECTL).expect("yaml");
        let json = serde_json::to_string_pretty(&value).expect("json");
        let again = parse_documents(&json, "dump.json").expect("kubectl json parses");
        assert_eq!(objs, again);
        let inv = crate::convert::inventory(objs.into_iter().map(|o| ("d".to_string(), o)));
        assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
        assert_eq!(inv.state.services[0].ports[0].node_port, Some(31234));
        assert_eq!(
            inv.state.endpoint_slices[0].ports[0].name.as_deref(),
            Some("")
        );
    }

    #[test]
    fn syntax_error_is_one_line() {
        let err = parse_documents("apiVersion: v1\nkind: Service\n  bad: [\n", "x.yaml")
            .expect_err("syntax error");
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("x.yaml: "), "{text}");
    }
}
