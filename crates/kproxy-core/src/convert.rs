//! Kubernetes objects (YAML/JSON, `k8s-openapi` types) into the [`crate::model`].
//!
//! Two layers:
//!
//! * [`parse_documents`] reads multi-document YAML or JSON text into
//!   [`Object`]s (`k8s-openapi` types and [`KubeProxyConfiguration`]), naming
//!   the file, document and field of anything that does not deserialise.
//! * [`service`], [`endpoint_slice`], [`endpoints_to_slices`], [`node`] and
//!   [`service_cidr`] convert `k8s-openapi` objects into model values, the way
//!   the API server (defaults, validation) and kube-proxy (lenient IP parsing,
//!   ignoring invalid external IPs and source ranges, informer label filters)
//!   would see them. Errors and warnings are one line naming the object and
//!   the field. [`inventory`] does all of it for a batch of objects.
//!
//! Embedders that already hold `k8s-openapi` objects call the converters
//! directly; no text is involved.
//!
//! ```
//! use kproxy_core::convert::{self, Object, Outcome};
//! use kproxy_core::model::IpFamily;
//!
//! let yaml = r#"
//! apiVersion: v1
//! kind: Service
//! metadata: {name: web, namespace: default}
//! spec:
//!   clusterIP: 10.96.000.010
//!   externalIPs: [192.0.2.1, not-an-ip]
//!   ports: [{name: http, port: 80, targetPort: 8080}]
//! ---
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata:
//!   name: web-abc
//!   namespace: default
//!   labels: {kubernetes.io/service-name: web}
//! addressType: IPv4
//! ports: [{name: http, port: 8080}]
//! endpoints:
//! - addresses: [10.244.0.5]
//!   nodeName: node-1
//! "#;
//! let objects = convert::parse_documents(yaml, "example.yaml").unwrap();
//!
//! // One object at a time, straight from the k8s-openapi type:
//! let Object::Service(svc) = &objects[0] else { unreachable!() };
//! let Outcome::Converted { value, warnings } = convert::service(svc).unwrap() else {
//!     unreachable!()
//! };
//! assert_eq!(value.cluster_ip_of(IpFamily::V4).unwrap().to_string(), "10.96.0.10");
//! assert_eq!(value.external_ips.len(), 1);
//! assert_eq!(
//!     warnings[0].to_string(),
//!     "Service default/web: spec.externalIPs[1]: \"not-an-ip\" is not a valid IP; ignored"
//! );
//!
//! // Or everything at once:
//! let inv = convert::inventory(objects.into_iter().map(|o| ("example.yaml".to_string(), o)));
//! assert_eq!(inv.state.services.len(), 1);
//! assert_eq!(inv.state.endpoint_slices[0].endpoints[0].address.to_string(), "10.244.0.5");
//! assert_eq!(inv.warnings.len(), 1);
//! ```

mod configmap;
mod documents;
mod error;
mod fastyaml;
mod inventory;
mod json;
mod node;
mod service;
mod slice;
pub mod sloppy;
mod store;
pub mod validate;

pub use configmap::{CONFIGMAP_CONFIG_KEY, configmap_proxy_config};
pub use documents::{Object, parse_documents, parse_documents_lenient};
pub use error::{InputError, ObjectError, Warning};
pub use inventory::{Inventory, inventory, inventory_with};
pub use node::{NodeAddress, NodeFacts, node, service_cidr};
pub use service::{service, service_with};
pub use slice::{
    endpoint_slice, endpoint_slice_with, endpoints_to_slices, endpoints_to_slices_with,
};
pub use store::Store;

/// The two YAML readers side by side, for the differential fuzz target
/// (`fuzz/`, replayed by `kproxy-fuzz`): not part of the API.
#[doc(hidden)]
pub mod yaml_readers {
    use serde_json::Value;

    /// The fast reader as the manifest reader uses it: the documents it
    /// reads itself, and the others (outside its subset) read one by one by
    /// serde-saphyr; `None` when it cannot split the text, or one of the
    /// others does not read alone (the manifest reader then reads the whole
    /// text with serde-saphyr).
    pub fn fast(text: &str) -> Option<Vec<Value>> {
        use super::fastyaml::Document;
        let mut out = Vec::new();
        for d in super::fastyaml::read(text)? {
            match d {
                Document::Read(v) => out.push(v),
                Document::Other(r) => out.extend(full(text.get(r)?).ok()?),
            }
        }
        Some(out)
    }

    /// serde-saphyr with kproxy's budget (null documents left out, as the
    /// fast reader leaves them out).
    pub fn full(text: &str) -> Result<Vec<Value>, String> {
        serde_saphyr::from_multiple_with_options::<Value>(text, super::documents::yaml_options())
            .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
            .map_err(|e| e.to_string())
    }
}

use std::collections::BTreeMap;
use std::fmt;

#[allow(unused_imports)] // used by rustdoc links
use crate::config::KubeProxyConfiguration;

/// Label naming the proxy that implements a Service; kube-proxy ignores
/// Services (and their slices) that carry it, unless it is configured with
/// the same `serviceProxyName`.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label of EndpointSlices (and Endpoints) of headless Services; kube-proxy
/// ignores such slices.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label tying an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label that stops the mirroring controller from mirroring Endpoints (`"true"`).
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Annotation of leader-election Endpoints, which are never mirrored.
pub const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
/// Annotation of EndpointSlices (and Endpoints) with the time of the change
/// that triggered their last update, RFC 3339 (kube-proxy's network
/// programming latency is measured from it).
pub const ANNOTATION_LAST_CHANGE_TRIGGER_TIME: &str =
    "endpoints.kubernetes.io/last-change-trigger-time";
/// Node label with the node's zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Options of the conversion that depend on kube-proxy's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// kube-proxy's `serviceProxyName`. `None`: only objects *without* the
    /// [`LABEL_SERVICE_PROXY_NAME`] label are handled; `Some(n)`: only objects
    /// whose label equals `n`.
    pub service_proxy_name: Option<String>,
}

impl ConvertOptions {
    /// Why an object with these labels is not handled, if it is not.
    fn proxy_name_skip(&self, labels: &BTreeMap<String, String>) -> Option<SkipReason> {
        let label = labels.get(LABEL_SERVICE_PROXY_NAME);
        match (&self.service_proxy_name, label) {
            (None, None) => None,
            (Some(want), Some(have)) if want == have => None,
            (_, label) => Some(SkipReason::ServiceProxyName(label.cloned())),
        }
    }
}

/// Why a valid object is not used, as kube-proxy's informers or the
/// mirroring controller would leave it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The [`LABEL_SERVICE_PROXY_NAME`] label does not match kube-proxy's
    /// `serviceProxyName` (the label's value; `None` when the label is absent
    /// but a `serviceProxyName` is configured).
    ServiceProxyName(Option<String>),
    /// The slice is labelled [`LABEL_HEADLESS`].
    Headless,
    /// Endpoints labelled [`LABEL_SKIP_MIRROR`]`=true`.
    SkipMirror,
    /// Endpoints used for leader election ([`ANNOTATION_LEADER`]).
    LeaderElection,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ServiceProxyName(Some(v)) => {
                write!(f, "labelled {LABEL_SERVICE_PROXY_NAME}={v}")
            }
            SkipReason::ServiceProxyName(None) => {
                write!(
                    f,
                    "no {LABEL_SERVICE_PROXY_NAME} label matching serviceProxyName"
                )
            }
            SkipReason::Headless => write!(f, "labelled {LABEL_HEADLESS}"),
            SkipReason::SkipMirror => write!(f, "labelled {LABEL_SKIP_MIRROR}=true"),
            SkipReason::LeaderElection => {
                write!(f, "leader-election Endpoints ({ANNOTATION_LEADER})")
            }
        }
    }
}

/// The result of converting a valid object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The model value, and what was ignored on the way.
    Converted {
        /// The converted value.
        value: T,
        /// Ignored parts (invalid external IPs, dropped endpoints...).
        warnings: Vec<Warning>,
    },
    /// kube-proxy would never see (or use) this object.
    Skipped(SkipReason),
}

impl<T> Outcome<T> {
    /// The value, if converted.
    pub fn value(self) -> Option<T> {
        match self {
            Outcome::Converted { value, .. } => Some(value),
            Outcome::Skipped(_) => None,
        }
    }
    /// Maps the converted value, keeping warnings and skip reasons.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Converted { value, warnings } => Outcome::Converted {
                value: f(value),
                warnings,
            },
            Outcome::Skipped(r) => Outcome::Skipped(r),
        }
    }
}

/// `namespace/name` of a namespaced object (namespace defaults to `default`,
/// as `kubectl apply` would), or an error when the name is missing or
/// either is not what the API server accepts (`namespace` a DNS-1123 label,
/// `name` as `check_name` says), or a label is invalid.
fn namespaced(
    kind: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    check_name: fn(&str) -> Result<(), validate::Invalid>,
) -> Result<(crate::model::NamespacedName, error::Ctx), ObjectError> {
    let namespace = meta
        .namespace
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or("");
    let ctx = error::Ctx::new(kind, format!("{namespace}/{name}"));
    if name.is_empty() {
        return Err(ctx.err("metadata.name", "required"));
    }
    validate::field(
        &ctx,
        "metadata.namespace",
        namespace,
        validate::dns1123_label,
    )?;
    validate::field(&ctx, "metadata.name", name, check_name)?;
    if let Some(labels) = &meta.labels {
        validate::labels(&ctx, labels)?;
    }
    Ok((crate::model::NamespacedName::new(namespace, name), ctx))
}

/// Parses a protocol, defaulting to TCP.
fn protocol(
    ctx: &error::Ctx,
    field: &str,
    p: Option<&str>,
) -> Result<crate::model::Protocol, ObjectError> {
    match p {
        None | Some("") => Ok(crate::model::Protocol::Tcp),
        Some(s) => crate::model::Protocol::from_k8s(s).ok_or_else(|| {
            ctx.err(
                field,
                format!("unsupported value {s:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""),
            )
        }),
    }
}

/// Checks a port number (1..=65535).
fn port_number(ctx: &error::Ctx, field: &str, p: i32) -> Result<u16, ObjectError> {
    match u16::try_from(p) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ctx.err(field, format!("{p} is out of range 1-65535"))),
    }
}
