//! kube-proxy's ConfigMap: a `ConfigMap` whose data holds a
//! [`KubeProxyConfiguration`] is a configuration input, as `kubectl get cm
//! kube-proxy -n kube-system -o yaml` prints it (kubeadm puts the
//! configuration under `config.conf`, next to a `kubeconfig.conf`).

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::documents::{Object, parse_documents_lenient};
use super::error::{Ctx, InputError, ObjectError};
use crate::config::KubeProxyConfiguration;

/// The data key kube-proxy's ConfigMap keeps its configuration under
/// (kubeadm's, and the file `--config` names in its DaemonSet).
pub const CONFIGMAP_CONFIG_KEY: &str = "config.conf";

/// What one data value holds.
enum Held {
    /// A valid configuration.
    Config(Box<KubeProxyConfiguration>),
    /// A document of kind `KubeProxyConfiguration` that is not valid.
    Invalid(String),
    /// Anything else (another format, another kind, not YAML at all).
    Other,
}

fn held(text: &str) -> Held {
    let (objects, errors) = parse_documents_lenient(text, "");
    if let Some(c) = objects.into_iter().find_map(|o| match o {
        Object::ProxyConfig(c) => Some(c),
        _ => None,
    }) {
        return Held::Config(c);
    }
    errors
        .into_iter()
        .find_map(|e| match e {
            InputError::Document {
                kind: Some(k),
                message,
                ..
            } if k == "KubeProxyConfiguration" => Some(Held::Invalid(message)),
            _ => None,
        })
        .unwrap_or(Held::Other)
}

/// The [`KubeProxyConfiguration`] a ConfigMap carries: the one under
/// [`CONFIGMAP_CONFIG_KEY`], else the one of the only data key that holds
/// one. `Ok(None)`: the ConfigMap holds none (any other ConfigMap).
///
/// A value that declares `kind: KubeProxyConfiguration` but is not a valid
/// one is an error naming the key, and so are several keys holding one
/// when none is `config.conf`.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kproxy_core::convert::configmap_proxy_config;
/// let cm: ConfigMap = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
///     "data": {
///         "config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n",
///         "kubeconfig.conf": "apiVersion: v1\nkind: Config\n",
///     },
/// })).unwrap();
/// let cfg = configmap_proxy_config(&cm).unwrap().unwrap();
/// assert_eq!(cfg.mode.as_deref(), Some("nftables"));
/// ```
pub fn configmap_proxy_config(
    cm: &ConfigMap,
) -> Result<Option<KubeProxyConfiguration>, ObjectError> {
    let ctx = Ctx::new(
        "ConfigMap",
        format!(
            "{}/{}",
            cm.metadata.namespace.as_deref().unwrap_or("default"),
            cm.metadata.name.as_deref().unwrap_or_default()
        ),
    );
    let Some(data) = &cm.data else {
        return Ok(None);
    };
    let field = |k: &str| format!("data[{k}]");
    let mut found: Vec<(&str, Held)> = Vec::new();
    if let Some(text) = data.get(CONFIGMAP_CONFIG_KEY) {
        match held(text) {
            Held::Other => {}
            h => found.push((CONFIGMAP_CONFIG_KEY, h)),
        }
    }
    if found.is_empty() {
        for (k, text) in data {
            match held(text) {
                Held::Other => {}
                h => found.push((k, h)),
            }
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => match found.swap_remove(0) {
            (_, Held::Config(c)) => Ok(Some(*c)),
            (k, Held::Invalid(m)) => Err(ctx.err(field(k), m)),
            (_, Held::Other) => Ok(None),
        },
        _ => {
            let keys: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
            Err(ctx.err(
                "data",
                format!(
                    "several keys hold a KubeProxyConfiguration ({}); kube-proxy reads {CONFIGMAP_CONFIG_KEY}",
                    keys.join(", ")
                ),
            ))
        }
    }
}

/// A `v1` `ConfigMap` document: the configuration it carries, else an
/// [`Object::Other`] (reported as ignored). Read leniently: only the string
/// values of `data` are looked at, so that a ConfigMap that is not
/// kube-proxy's is never an error. Errors are `field: problem`.
pub(super) fn object(doc: Value, name: Option<String>) -> Result<Object, String> {
    let meta = |k: &str| {
        doc.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let data = doc.get("data").and_then(Value::as_object).map(|m| {
        m.iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect()
    });
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: meta("name"),
            namespace: meta("namespace"),
            ..ObjectMeta::default()
        },
        data,
        ..ConfigMap::default()
    };
    match configmap_proxy_config(&cm) {
        Ok(Some(c)) => Ok(Object::ProxyConfig(Box::new(c))),
        Ok(None) => Ok(Object::Other {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: name.unwrap_or_default(),
        }),
        Err(e) => Err(format!("{}: {}", e.field, e.problem)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::parse_documents;

    /// As `kubectl get cm kube-proxy -n kube-system -o yaml` prints it.
    const KUBECTL: &str = r#"apiVersion: v1
data:
  config.conf: |-
    apiVersion: kubeproxy.config.k8s.io/v1alpha1
    bindAddress: 0.0.0.0
    clusterCIDR: 10.244.0.0/16
    kind: KubeProxyConfiguration
    mode: nftables
    nftables:
      masqueradeBit: 15
  kubeconfig.conf: |-
    apiVersion: v1
    kind: Config
    clusters:
    - cluster:
        server: https://10.0.0.1:6443
      name: default
kind: ConfigMap
metadata:
  annotations:
    kubeadm.kubernetes.io/component-config.hash: sha256:0123
  creationTimestamp: "2025-01-07T10:11:12Z"
  labels:
    app: kube-proxy
  name: kube-proxy
  namespace: kube-system
  resourceVersion: "231"
  uid: 9c0b8a4e-5a4b-4f7e-9b1e-0d7c9d1f2a3b
"#;

    #[test]
    fn kubectl_printed_configmap_is_a_configuration() {
        let objs = parse_documents(KUBECTL, "cm.yaml").unwrap();
        let [Object::ProxyConfig(c)] = objs.as_slice() else {
            panic!("{objs:?}");
        };
        assert_eq!(c.mode.as_deref(), Some("nftables"));
        assert_eq!(c.cluster_cidr.as_deref(), Some("10.244.0.0/16"));
    }

    fn cm(data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"}, "data": data}))
        .unwrap()
    }

    const CFG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n";

    #[test]
    fn the_only_key_holding_one_or_none() {
        let one = cm(serde_json::json!({"kp.yaml": CFG, "other": "a: b"}));
        assert!(configmap_proxy_config(&one).unwrap().is_some());
        let none = cm(serde_json::json!({"config.conf": "[not: yaml", "x": "kind: Foo"}));
        assert_eq!(configmap_proxy_config(&none).unwrap(), None);
        let nothing: ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(configmap_proxy_config(&nothing).unwrap(), None);
        let objs = parse_documents(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: y}\ndata: {a: b, on: true, n: 1}\n",
            "f",
        )
        .unwrap();
        assert_eq!(objs[0].kind(), "ConfigMap");
    }

    #[test]
    fn config_conf_wins_and_ambiguity_and_bad_values_are_errors() {
        let both =
            cm(serde_json::json!({"config.conf": CFG, "b": CFG.replace("nftables", "iptables")}));
        let c = configmap_proxy_config(&both).unwrap().unwrap();
        assert_eq!(c.mode.as_deref(), Some("nftables"));
        let two = cm(serde_json::json!({"a": CFG, "b": CFG}));
        assert_eq!(
            configmap_proxy_config(&two).unwrap_err().to_string(),
            "ConfigMap ns/p: data: several keys hold a KubeProxyConfiguration (a, b); kube-proxy reads config.conf"
        );
        let bad = cm(serde_json::json!({"config.conf": format!("{CFG}clusterCIDR: [1]\n")}));
        let e = configmap_proxy_config(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("ConfigMap ns/p: data[config.conf]: clusterCIDR"),
            "{e}"
        );
        let e = parse_documents(
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: p, namespace: ns}}\ndata:\n  config.conf: |\n{}",
                format!("{CFG}clusterCIDR: [1]\n")
                    .lines()
                    .map(|l| format!("    {l}\n"))
                    .collect::<String>()
            ),
            "cm.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("cm.yaml: document 1 (ConfigMap ns/p): data[config.conf]: clusterCIDR"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
