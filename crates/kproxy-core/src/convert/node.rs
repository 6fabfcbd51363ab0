//! `v1` Node and `networking.k8s.io/v1` ServiceCIDR.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as networkingv1;

use super::error::{Ctx, ObjectError};
use super::{LABEL_ZONE, sloppy, validate};
use crate::model::IpFamily;

/// One IP address of a Node (`status.addresses[]` whose value is an IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// The address type (`InternalIP`, `ExternalIP`, ...).
    pub kind: String,
    /// The address.
    pub ip: IpAddr,
}

/// What kube-proxy reads from its Node object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// `metadata.name`.
    pub name: String,
    /// `status.addresses` that are IPs, in order (host names are left out).
    pub addresses: Vec<NodeAddress>,
    /// `spec.podCIDRs` (or `spec.podCIDR`), canonical.
    pub pod_cidrs: Vec<IpNet>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

impl NodeFacts {
    /// The node's IPs in kube-proxy's order of preference: all `InternalIP`
    /// addresses, then all `ExternalIP` ones.
    pub fn host_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let of = |kind: &'static str| {
            self.addresses
                .iter()
                .filter(move |a| a.kind == kind)
                .map(|a| a.ip)
        };
        of("InternalIP").chain(of("ExternalIP"))
    }

    /// The primary IP of `family`: the first `InternalIP` of the family, else
    /// the first `ExternalIP`.
    ///
    /// ```
    /// use kproxy_core::convert::{NodeAddress, NodeFacts};
    /// use kproxy_core::model::IpFamily;
    /// let n = NodeFacts {
    ///     name: "n1".into(),
    ///     addresses: vec![
    ///         NodeAddress { kind: "ExternalIP".into(), ip: "203.0.113.5".parse().unwrap() },
    ///         NodeAddress { kind: "InternalIP".into(), ip: "10.0.0.5".parse().unwrap() },
    ///     ],
    ///     pod_cidrs: vec![],
    ///     labels: [("topology.kubernetes.io/zone".to_string(), "z1".to_string())].into(),
    /// };
    /// assert_eq!(n.primary_ip(IpFamily::V4).unwrap().to_string(), "10.0.0.5");
    /// assert_eq!(n.primary_ip(IpFamily::V6), None);
    /// assert_eq!(n.zone(), Some("z1"));
    /// ```
    pub fn primary_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.host_ips().find(|ip| family.contains(ip))
    }

    /// The first pod CIDR of `family` (NodeCIDR local-traffic detection).
    pub fn pod_cidr(&self, family: IpFamily) -> Option<IpNet> {
        self.pod_cidrs
            .iter()
            .copied()
            .find(|n| family.contains_net(n))
    }

    /// The `topology.kubernetes.io/zone` label.
    pub fn zone(&self) -> Option<&str> {
        self.labels.get(LABEL_ZONE).map(String::as_str)
    }
}

/// Reads a Node: name, IP addresses (sloppy-parsed; addresses that are not
/// IPs are left out), pod CIDRs and labels. An invalid pod CIDR is an error.
pub fn node(n: &corev1::Node) -> Result<NodeFacts, ObjectError> {
    let name = n.metadata.name.clone().unwrap_or_default();
    let ctx = Ctx::new("Node", name.clone());
    if name.is_empty() {
        return Err(ctx.err("metadata.name", "required"));
    }
    validate::field(&ctx, "metadata.name", &name, validate::dns1123_subdomain)?;
    let addresses = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|a| {
            sloppy::parse_ip(&a.address).map(|ip| NodeAddress {
                kind: a.type_.clone(),
                ip,
            })
        })
        .collect();
    let spec = n.spec.as_ref();
    let (field, list): (&str, Vec<String>) = match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(l) if !l.is_empty() => ("spec.podCIDRs", l),
        _ => (
            "spec.podCIDR",
            spec.and_then(|s| s.pod_cidr.clone())
                .filter(|s| !s.is_empty())
                .into_iter()
                .collect(),
        ),
    };
    let mut pod_cidrs = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let f = if field == "spec.podCIDRs" {
            format!("{field}[{i}]")
        } else {
            field.to_string()
        };
        let net = sloppy::parse_cidr(c.trim())
            .ok_or_else(|| ctx.err(f, format!("{c:?} is not a valid CIDR")))?;
        pod_cidrs.push(net.trunc());
    }
    Ok(NodeFacts {
        name,
        addresses,
        pod_cidrs,
        labels: n.metadata.labels.clone().unwrap_or_default(),
    })
}

/// Reads a ServiceCIDR's `spec.cidrs` (canonical, masked). An invalid entry
/// is an error.
///
/// ```
/// use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};
/// use kproxy_core::convert::service_cidr;
/// let sc = ServiceCIDR {
///     spec: Some(ServiceCIDRSpec { cidrs: Some(vec!["10.96.0.0/16".into(), "fd00:96::/112".into()]) }),
///     ..Default::default()
/// };
/// assert_eq!(service_cidr(&sc).unwrap().len(), 2);
/// ```
pub fn service_cidr(sc: &networkingv1::ServiceCIDR) -> Result<Vec<IpNet>, ObjectError> {
    let ctx = Ctx::new("ServiceCIDR", sc.metadata.name.clone().unwrap_or_default());
    let mut out = Vec::new();
    for (i, c) in sc
        .spec
        .as_ref()
        .and_then(|s| s.cidrs.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let net = sloppy::parse_cidr(c.trim()).ok_or_else(|| {
            ctx.err(
                format!("spec.cidrs[{i}]"),
                format!("{c:?} is not a valid CIDR"),
            )
        })?;
        out.push(net.trunc());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Object, parse_documents};

    fn parse_node(yaml: &str) -> corev1::Node {
        match parse_documents(&format!("apiVersion: v1\nkind: Node\n{yaml}"), "t")
            .expect("parses")
            .pop()
        {
            Some(Object::Node(n)) => *n,
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn node_facts() {
        let n = node(&parse_node(
            r#"metadata: {name: n1, labels: {topology.kubernetes.io/zone: zone-a}}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00:244:1::5/64"]}
status:
  addresses:
  - {type: Hostname, address: n1.example}
  - {type: ExternalIP, address: 203.0.113.5}
  - {type: ExternalIP, address: "2001:db8::5"}
  - {type: InternalIP, address: 10.0.0.05}
"#,
        ))
        .unwrap();
        assert_eq!(n.name, "n1");
        assert_eq!(n.addresses.len(), 3);
        assert_eq!(n.primary_ip(IpFamily::V4).unwrap().to_string(), "10.0.0.5");
        assert_eq!(
            n.primary_ip(IpFamily::V6).unwrap().to_string(),
            "2001:db8::5"
        );
        assert_eq!(
            n.host_ips().map(|i| i.to_string()).collect::<Vec<_>>(),
            ["10.0.0.5", "203.0.113.5", "2001:db8::5"]
        );
        assert_eq!(
            n.pod_cidr(IpFamily::V6).unwrap().to_string(),
            "fd00:244:1::/64"
        );
        assert_eq!(n.zone(), Some("zone-a"));

        let n = node(&parse_node(
            "metadata: {name: n2}\nspec: {podCIDR: 10.1.0.0/16}\n",
        ))
        .unwrap();
        assert_eq!(n.pod_cidr(IpFamily::V4).unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(n.zone(), None);

        assert_eq!(
            node(&parse_node(
                "metadata: {name: n3}\nspec: {podCIDRs: [nope]}\n"
            ))
            .unwrap_err()
            .to_string(),
            "Node n3: spec.podCIDRs[0]: \"nope\" is not a valid CIDR"
        );
    }

    #[test]
    fn service_cidrs() {
        let objs = parse_documents(
            "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: k}\nspec: {cidrs: [10.96.0.1/12, bad]}\n",
            "t",
        )
        .unwrap();
        let Some(Object::ServiceCidr(sc)) = objs.first() else {
            panic!()
        };
        assert_eq!(
            service_cidr(sc).unwrap_err().to_string(),
            "ServiceCIDR k: spec.cidrs[1]: \"bad\" is not a valid CIDR"
        );
    }
}
