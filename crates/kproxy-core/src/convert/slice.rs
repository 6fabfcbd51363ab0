//! `discovery.k8s.io/v1` EndpointSlice and `v1` Endpoints into
//! [`model::EndpointSlice`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;

use super::error::{ObjectError, Warning};
use super::{
    ANNOTATION_LAST_CHANGE_TRIGGER_TIME, ANNOTATION_LEADER, ConvertOptions, LABEL_HEADLESS,
    LABEL_SERVICE_NAME, LABEL_SKIP_MIRROR, Outcome, SkipReason, namespaced, protocol, sloppy,
    validate,
};
use crate::model::{
    self, AddressType, Endpoint, EndpointConditions, EndpointPort, IpFamily, Timestamp,
};

/// The mirroring controller's limit of endpoints per Endpoints subset (and slice).
pub const MAX_MIRRORED_ENDPOINTS: usize = 1000;

// The slice's `endpoints`: optional from Kubernetes 1.36 on, a plain list
// before. The application picks k8s-openapi's Kubernetes version, so both
// shapes must build (k8s-openapi's conditional-compilation macros).
k8s_openapi::k8s_if_ge_1_36! {
    fn listed_endpoints(es: &discoveryv1::EndpointSlice) -> &[discoveryv1::Endpoint] {
        es.endpoints.as_deref().unwrap_or_default()
    }
}
k8s_openapi::k8s_if_le_1_35! {
    fn listed_endpoints(es: &discoveryv1::EndpointSlice) -> &[discoveryv1::Endpoint] {
        &es.endpoints
    }
}

/// Converts an EndpointSlice with kube-proxy's default options. See
/// [`endpoint_slice_with`].
///
/// ```
/// use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
/// use kproxy_core::convert::endpoint_slice;
/// let mut es = EndpointSlice {
///     address_type: "IPv4".into(),
///     endpoints: Some(vec![Endpoint { addresses: vec!["10.0.0.01".into()], ..Default::default() }]),
///     ..Default::default()
/// };
/// es.metadata.name = Some("web-1".into());
/// es.metadata.labels = Some([("kubernetes.io/service-name".to_string(), "web".to_string())].into());
/// let slice = endpoint_slice(&es).unwrap().value().unwrap();
/// assert_eq!(slice.service_name, "web");
/// assert_eq!(slice.endpoints[0].address.to_string(), "10.0.0.1");
/// assert!(slice.endpoints[0].conditions.ready);
/// ```
pub fn endpoint_slice(
    es: &discoveryv1::EndpointSlice,
) -> Result<Outcome<model::EndpointSlice>, ObjectError> {
    endpoint_slice_with(es, &ConvertOptions::default())
}

/// The [`ANNOTATION_LAST_CHANGE_TRIGGER_TIME`] of an object: `None` when
/// absent, or (with a warning, as kube-proxy logs it and ignores it) when
/// not an RFC 3339 time.
fn trigger_time(
    ctx: &super::error::Ctx,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    warnings: &mut Vec<Warning>,
) -> Option<Timestamp> {
    let text = meta
        .annotations
        .as_ref()?
        .get(ANNOTATION_LAST_CHANGE_TRIGGER_TIME)?;
    match text.parse() {
        Ok(t) => Some(t),
        Err(e) => {
            warnings.push(ctx.warn(
                format!("metadata.annotations[{ANNOTATION_LAST_CHANGE_TRIGGER_TIME}]"),
                format!("{text:?} is not an RFC 3339 time ({e}); ignored"),
            ));
            None
        }
    }
}

/// Converts an EndpointSlice the way kube-proxy reads it.
///
/// Requires the `kubernetes.io/service-name` label. Conditions get the API's
/// defaults (absent `ready`/`serving` = true, absent `terminating` = false).
/// Only `addresses[0]` counts; an endpoint without addresses, whose first
/// address is not an IP, or is of the wrong family for `addressType`, is
/// dropped with a [`Warning`]. Ports keep the absent/empty name distinction;
/// a port number of 0 reads as absent. `FQDN` slices convert with no
/// endpoints. Slices labelled `service.kubernetes.io/headless`, or not meant
/// for this proxy (see [`ConvertOptions`]), give [`Outcome::Skipped`]. The
/// [`ANNOTATION_LAST_CHANGE_TRIGGER_TIME`] annotation becomes
/// `trigger_time`; a value that is not an RFC 3339 time is ignored with a
/// [`Warning`].
pub fn endpoint_slice_with(
    es: &discoveryv1::EndpointSlice,
    opts: &ConvertOptions,
) -> Result<Outcome<model::EndpointSlice>, ObjectError> {
    let (id, ctx) = namespaced("EndpointSlice", &es.metadata, validate::dns1123_subdomain)?;
    let empty = BTreeMap::new();
    let labels = es.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(r) = opts.proxy_name_skip(labels) {
        return Ok(Outcome::Skipped(r));
    }
    if labels.contains_key(LABEL_HEADLESS) {
        return Ok(Outcome::Skipped(SkipReason::Headless));
    }
    let service_name = labels
        .get(LABEL_SERVICE_NAME)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ctx.err(
                "metadata.labels",
                format!("missing {LABEL_SERVICE_NAME:?} (the Service the slice belongs to)"),
            )
        })?
        .clone();
    let address_type = match es.address_type.as_str() {
        "IPv4" => AddressType::Ip(IpFamily::V4),
        "IPv6" => AddressType::Ip(IpFamily::V6),
        "FQDN" => AddressType::Fqdn,
        "" => return Err(ctx.err("addressType", "required")),
        other => {
            return Err(ctx.err(
                "addressType",
                format!(
                    "unsupported value {other:?}: supported values: \"FQDN\", \"IPv4\", \"IPv6\""
                ),
            ));
        }
    };

    let mut ports = Vec::new();
    let mut warnings = Vec::new();
    let trigger_time = trigger_time(&ctx, &es.metadata, &mut warnings);
    let mut port_names = BTreeSet::new();
    for (i, p) in es.ports.iter().flatten().enumerate() {
        let f = |sub: &str| format!("ports[{i}].{sub}");
        let port = match p.port {
            None | Some(0) => None,
            Some(n) => match u16::try_from(n) {
                Ok(v) => Some(v),
                Err(_) => return Err(ctx.err(f("port"), format!("{n} is out of range 0-65535"))),
            },
        };
        if let Some(name) = p.name.as_deref() {
            if !name.is_empty() {
                validate::field(&ctx, f("name"), name, validate::dns1123_label)?;
            }
            if !port_names.insert(name) {
                return Err(ctx.err(
                    f("name"),
                    format!("duplicate value {}", validate::quoted(name)),
                ));
            }
        }
        if p.name.is_none() {
            warnings.push(ctx.warn(
                f("name"),
                "absent (an unnamed port is name: \"\"); kube-proxy ignores this port",
            ));
        } else if port.is_none() {
            warnings.push(ctx.warn(f("port"), "absent; kube-proxy ignores this port"));
        }
        ports.push(EndpointPort {
            name: p.name.clone(),
            port,
            protocol: protocol(&ctx, &f("protocol"), p.protocol.as_deref())?,
        });
    }

    let mut endpoints = Vec::new();
    if let AddressType::Ip(family) = address_type {
        for (i, ep) in listed_endpoints(es).iter().enumerate() {
            let Some(text) = ep.addresses.first() else {
                warnings.push(ctx.warn(
                    format!("endpoints[{i}].addresses"),
                    "empty; endpoint ignored",
                ));
                continue;
            };
            let field = || format!("endpoints[{i}].addresses[0]");
            let Some(address) = sloppy::parse_ip(text) else {
                warnings.push(ctx.warn(
                    field(),
                    format!("{text:?} is not a valid IP; endpoint ignored"),
                ));
                continue;
            };
            if !family.contains(&address) {
                warnings.push(ctx.warn(
                    field(),
                    format!("{text:?} is not an {family} address (addressType {family}); endpoint ignored"),
                ));
                continue;
            }
            if let Some(node) = ep.node_name.as_deref() {
                validate::field(
                    &ctx,
                    format!("endpoints[{i}].nodeName"),
                    node,
                    validate::dns1123_subdomain,
                )?;
            }
            let c = ep.conditions.as_ref();
            let conditions = EndpointConditions {
                ready: c.and_then(|c| c.ready).unwrap_or(true),
                serving: c.and_then(|c| c.serving).unwrap_or(true),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
            };
            let hints = ep.hints.as_ref();
            endpoints.push(Endpoint {
                address,
                conditions,
                node_name: ep.node_name.clone(),
                zone: ep.zone.clone(),
                zone_hints: hints
                    .and_then(|h| h.for_zones.as_ref())
                    .map_or_else(BTreeSet::new, |z| {
                        z.iter().map(|z| z.name.clone()).collect()
                    }),
                node_hints: hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .map_or_else(BTreeSet::new, |n| {
                        n.iter().map(|n| n.name.clone()).collect()
                    }),
            });
        }
    }

    Ok(Outcome::Converted {
        value: model::EndpointSlice {
            id,
            service_name,
            address_type,
            ports,
            endpoints,
            trigger_time,
        },
        warnings,
    })
}

/// Converts v1 Endpoints with kube-proxy's default options. See
/// [`endpoints_to_slices_with`].
///
/// ```
/// use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
/// use kproxy_core::convert::endpoints_to_slices;
/// let mut ep = Endpoints {
///     subsets: Some(vec![EndpointSubset {
///         addresses: Some(vec![EndpointAddress { ip: "10.0.0.1".into(), ..Default::default() }]),
///         not_ready_addresses: Some(vec![EndpointAddress { ip: "fd00::1".into(), ..Default::default() }]),
///         ports: Some(vec![EndpointPort { port: 8080, ..Default::default() }]),
///     }]),
///     ..Default::default()
/// };
/// ep.metadata.name = Some("web".into());
/// let slices = endpoints_to_slices(&ep).unwrap().value().unwrap();
/// assert_eq!(slices.len(), 2); // one per family
/// assert_eq!(slices[0].id.name, "web-mirrored-1");
/// assert!(slices[0].endpoints[0].conditions.ready);
/// assert!(!slices[1].endpoints[0].conditions.ready);
/// ```
pub fn endpoints_to_slices(
    ep: &corev1::Endpoints,
) -> Result<Outcome<Vec<model::EndpointSlice>>, ObjectError> {
    endpoints_to_slices_with(ep, &ConvertOptions::default())
}

/// Converts v1 Endpoints into the EndpointSlices the EndpointSlice mirroring
/// controller would write, as kube-proxy then reads them.
///
/// Subsets with the same ports share a slice; each address family gets its
/// own. `addresses` become ready endpoints, `notReadyAddresses` endpoints
/// with `ready: false` (the controller leaves `serving`/`terminating` unset,
/// so they read as serving and not terminating). Addresses that are not IPs
/// are dropped with a [`Warning`], as are addresses beyond the controller's
/// 1000 per subset. Slices are named `<name>-mirrored-<n>` (n from 1) and
/// carry the Endpoints' labels, so Endpoints labelled
/// `service.kubernetes.io/headless` or not meant for this proxy give
/// [`Outcome::Skipped`], as do Endpoints labelled
/// `endpointslice.kubernetes.io/skip-mirror: "true"` and leader-election
/// Endpoints. The mirrored slices have no `trigger_time`: the controller
/// copies every annotation but [`ANNOTATION_LAST_CHANGE_TRIGGER_TIME`] (and
/// `kubectl.kubernetes.io/last-applied-configuration`).
pub fn endpoints_to_slices_with(
    ep: &corev1::Endpoints,
    opts: &ConvertOptions,
) -> Result<Outcome<Vec<model::EndpointSlice>>, ObjectError> {
    let (id, ctx) = namespaced("Endpoints", &ep.metadata, validate::dns1123_subdomain)?;
    let empty = BTreeMap::new();
    let labels = ep.metadata.labels.as_ref().unwrap_or(&empty);
    if labels.get(LABEL_SKIP_MIRROR).is_some_and(|v| v == "true") {
        return Ok(Outcome::Skipped(SkipReason::SkipMirror));
    }
    if ep
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_LEADER))
    {
        return Ok(Outcome::Skipped(SkipReason::LeaderElection));
    }
    if let Some(r) = opts.proxy_name_skip(labels) {
        return Ok(Outcome::Skipped(r));
    }
    if labels.contains_key(LABEL_HEADLESS) {
        return Ok(Outcome::Skipped(SkipReason::Headless));
    }

    struct Group {
        ports: Vec<EndpointPort>,
        family: IpFamily,
        endpoints: Vec<Endpoint>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut warnings: Vec<Warning> = Vec::new();

    for (s, subset) in ep.subsets.iter().flatten().enumerate() {
        let mut ports = Vec::new();
        for (j, p) in subset.ports.iter().flatten().enumerate() {
            let f = |sub: &str| format!("subsets[{s}].ports[{j}].{sub}");
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                validate::field(&ctx, f("name"), name, validate::dns1123_label)?;
            }
            ports.push(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(super::port_number(&ctx, &f("port"), p.port)?),
                protocol: protocol(&ctx, &f("protocol"), p.protocol.as_deref())?,
            });
        }
        let mut index = [0usize; 2];
        for (k, family) in [IpFamily::V4, IpFamily::V6].into_iter().enumerate() {
            index[k] = match groups
                .iter()
                .position(|g| g.family == family && g.ports == ports)
            {
                Some(i) => i,
                None => {
                    groups.push(Group {
                        ports: ports.clone(),
                        family,
                        endpoints: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
        }
        let lists = [
            (
                "addresses",
                subset.addresses.as_deref().unwrap_or_default(),
                true,
            ),
            (
                "notReadyAddresses",
                subset.not_ready_addresses.as_deref().unwrap_or_default(),
                false,
            ),
        ];
        let mut added = 0usize;
        let mut over = 0usize;
        for (list_name, list, ready) in lists {
            for (j, a) in list.iter().enumerate() {
                if added >= MAX_MIRRORED_ENDPOINTS {
                    over += 1;
                    continue;
                }
                if let Some(node) = a.node_name.as_deref() {
                    validate::field(
                        &ctx,
                        format!("subsets[{s}].{list_name}[{j}].nodeName"),
                        node,
                        validate::dns1123_subdomain,
                    )?;
                }
                let Some(address) = sloppy::parse_ip(&a.ip) else {
                    warnings.push(ctx.warn(
                        format!("subsets[{s}].{list_name}[{j}].ip"),
                        format!("{:?} is not a valid IP; not mirrored", a.ip),
                    ));
                    continue;
                };
                added += 1;
                let k = usize::from(IpFamily::of(&address) == IpFamily::V6);
                let endpoint = Endpoint {
                    address,
                    conditions: EndpointConditions {
                        ready,
                        serving: true,
                        terminating: false,
                    },
                    node_name: a.node_name.clone(),
                    zone: None,
                    zone_hints: Default::default(),
                    node_hints: Default::default(),
                };
                if let Some(g) = groups.get_mut(index[k])
                    && !g.endpoints.contains(&endpoint)
                {
                    g.endpoints.push(endpoint);
                }
            }
        }
        if over > 0 {
            warnings.push(ctx.warn(
                format!("subsets[{s}]"),
                format!("{over} addresses beyond the mirroring limit of {MAX_MIRRORED_ENDPOINTS} not mirrored"),
            ));
        }
    }

    let slices = groups
        .into_iter()
        .filter(|g| !g.endpoints.is_empty())
        .enumerate()
        .map(|(n, mut g)| {
            g.endpoints.truncate(MAX_MIRRORED_ENDPOINTS);
            model::EndpointSlice {
                id: model::NamespacedName::new(
                    id.namespace.clone(),
                    format!("{}-mirrored-{}", id.name, n + 1),
                ),
                service_name: id.name.clone(),
                address_type: AddressType::Ip(g.family),
                ports: g.ports,
                endpoints: g.endpoints,
                trigger_time: None,
            }
        })
        .collect();
    Ok(Outcome::Converted {
        value: slices,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Object, parse_documents};
    use crate::model::Protocol;

    fn parse(yaml: &str) -> Object {
        parse_documents(yaml, "t")
            .expect("parses")
            .pop()
            .expect("one object")
    }

    fn slice(yaml: &str) -> Result<Outcome<model::EndpointSlice>, ObjectError> {
        let text = format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n{yaml}");
        match parse(&text) {
            Object::EndpointSlice(es) => endpoint_slice(&es),
            o => panic!("{o:?}"),
        }
    }

    fn mirror(yaml: &str) -> Result<Outcome<Vec<model::EndpointSlice>>, ObjectError> {
        let text = format!("apiVersion: v1\nkind: Endpoints\n{yaml}");
        match parse(&text) {
            Object::Endpoints(ep) => endpoints_to_slices(&ep),
            o => panic!("{o:?}"),
        }
    }

    const META: &str =
        "metadata: {name: web-1, namespace: ns, labels: {kubernetes.io/service-name: web}}\n";

    #[test]
    fn slice_fields() {
        let out = slice(&format!(
            r#"{META}addressType: IPv4
ports:
- {{name: http, port: 80}}
- {{name: "", port: 81, protocol: UDP}}
- {{port: 0}}
- {{}}
endpoints:
- addresses: [10.0.0.001, 10.0.0.2]
  nodeName: n1
  zone: z1
  hints: {{forZones: [{{name: z1}}], forNodes: [{{name: n1}}]}}
- addresses: [10.0.0.3]
  conditions: {{ready: false, serving: true, terminating: true}}
- addresses: []
- addresses: [bogus]
- addresses: ["fd00::1"]
"#
        ))
        .unwrap();
        let Outcome::Converted { value, warnings } = out else {
            panic!()
        };
        assert_eq!(value.id.to_string(), "ns/web-1");
        assert_eq!(value.service_id().to_string(), "ns/web");
        assert_eq!(value.address_type, AddressType::Ip(IpFamily::V4));
        assert_eq!(
            value.ports,
            vec![
                EndpointPort::new("http", Protocol::Tcp, 80),
                EndpointPort::new("", Protocol::Udp, 81),
                EndpointPort {
                    name: None,
                    port: None,
                    protocol: Protocol::Tcp
                },
                EndpointPort {
                    name: None,
                    port: None,
                    protocol: Protocol::Tcp
                },
            ]
        );
        assert_eq!(value.endpoints.len(), 2);
        let e0 = &value.endpoints[0];
        assert_eq!(e0.address.to_string(), "10.0.0.1");
        assert_eq!(e0.conditions, EndpointConditions::default());
        assert_eq!(e0.node_name.as_deref(), Some("n1"));
        assert_eq!(e0.zone.as_deref(), Some("z1"));
        assert!(e0.zone_hints.contains("z1"));
        assert!(e0.node_hints.contains("n1"));
        assert_eq!(
            value.endpoints[1].conditions,
            EndpointConditions {
                ready: false,
                serving: true,
                terminating: true
            }
        );
        let w: Vec<_> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            [
                "EndpointSlice ns/web-1: ports[2].name: absent (an unnamed port is name: \"\"); kube-proxy ignores this port",
                "EndpointSlice ns/web-1: ports[3].name: absent (an unnamed port is name: \"\"); kube-proxy ignores this port",
                "EndpointSlice ns/web-1: endpoints[2].addresses: empty; endpoint ignored",
                "EndpointSlice ns/web-1: endpoints[3].addresses[0]: \"bogus\" is not a valid IP; endpoint ignored",
                "EndpointSlice ns/web-1: endpoints[4].addresses[0]: \"fd00::1\" is not an IPv4 address (addressType IPv4); endpoint ignored",
            ]
        );
    }

    #[test]
    fn slice_errors_and_skips() {
        assert_eq!(
            slice("metadata: {name: s}\naddressType: IPv4\nendpoints: []\n")
                .unwrap_err()
                .to_string(),
            "EndpointSlice default/s: metadata.labels: missing \"kubernetes.io/service-name\" (the Service the slice belongs to)"
        );
        assert!(
            slice(&format!("{META}addressType: IPv5\nendpoints: []\n"))
                .unwrap_err()
                .to_string()
                .contains("addressType: unsupported value \"IPv5\"")
        );
        assert!(
            slice(&format!(
                "{META}addressType: IPv4\nports: [{{port: 65536}}]\nendpoints: []\n"
            ))
            .unwrap_err()
            .to_string()
            .contains("ports[0].port: 65536 is out of range")
        );
        let headless = "metadata: {name: s, labels: {kubernetes.io/service-name: x, service.kubernetes.io/headless: ''}}\naddressType: IPv4\nendpoints: []\n";
        assert_eq!(
            slice(headless).unwrap(),
            Outcome::Skipped(SkipReason::Headless)
        );
        let other = "metadata: {name: s, labels: {kubernetes.io/service-name: x, service.kubernetes.io/service-proxy-name: foo}}\naddressType: IPv4\nendpoints: []\n";
        assert!(matches!(
            slice(other).unwrap(),
            Outcome::Skipped(SkipReason::ServiceProxyName(_))
        ));
        let fqdn = slice(&format!(
            "{META}addressType: FQDN\nendpoints: [{{addresses: [example.com]}}]\n"
        ))
        .unwrap()
        .value()
        .unwrap();
        assert_eq!(fqdn.address_type, AddressType::Fqdn);
        assert!(fqdn.endpoints.is_empty());
    }

    #[test]
    fn trigger_time_annotation() {
        let with = |value: &str| {
            slice(&format!(
                "metadata: {{name: web-1, namespace: ns, labels: {{kubernetes.io/service-name: web}}, \
                 annotations: {{endpoints.kubernetes.io/last-change-trigger-time: {value:?}}}}}\n\
                 addressType: IPv4\nendpoints: [{{addresses: [10.0.0.1]}}]\n"
            ))
            .unwrap()
        };
        let Outcome::Converted { value, warnings } = with("2026-11-26T10:00:00.25Z") else {
            panic!()
        };
        let t = value.trigger_time.expect("trigger time");
        assert_eq!(
            (t.unix_seconds(), t.subsec_nanos()),
            (1_795_687_200, 250_000_000)
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        // Not a time: a warning, and the slice stays.
        let Outcome::Converted { value, warnings } = with("yesterday") else {
            panic!()
        };
        assert_eq!(value.trigger_time, None);
        assert_eq!(value.endpoints.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "EndpointSlice ns/web-1: metadata.annotations[endpoints.kubernetes.io/last-change-trigger-time]: \
             \"yesterday\" is not an RFC 3339 time (not of the form YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)); ignored"
        );
        // Absent: none.
        let plain = slice(&format!("{META}addressType: IPv4\nendpoints: []\n"))
            .unwrap()
            .value()
            .unwrap();
        assert_eq!(plain.trigger_time, None);
        // Mirrored slices never carry it (the mirroring controller drops it).
        let mirrored = mirror(
            "metadata: {name: web, annotations: {endpoints.kubernetes.io/last-change-trigger-time: '2026-11-26T10:00:00Z'}}\n\
             subsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 80}]}]\n",
        )
        .unwrap()
        .value()
        .unwrap();
        assert_eq!(mirrored[0].trigger_time, None);
    }

    #[test]
    fn mirroring() {
        let out = mirror(
            r#"metadata: {name: web, namespace: ns, labels: {app: x}}
subsets:
- addresses:
  - {ip: 10.0.0.1, nodeName: n1}
  - {ip: "fd00::1"}
  - {ip: bogus}
  notReadyAddresses:
  - {ip: 10.0.0.02}
  ports: [{name: http, port: 80}, {port: 53, protocol: UDP}]
- addresses: [{ip: 10.0.0.9}]
  ports: [{name: http, port: 80}, {port: 53, protocol: UDP}]
- addresses: [{ip: 10.0.1.1}]
  ports: [{port: 8080}]
"#,
        )
        .unwrap();
        let Outcome::Converted { value, warnings } = out else {
            panic!()
        };
        let names: Vec<_> = value.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(
            names,
            [
                "ns/web-mirrored-1",
                "ns/web-mirrored-2",
                "ns/web-mirrored-3"
            ]
        );
        assert!(value.iter().all(|s| s.service_name == "web"));
        let v4 = &value[0];
        assert_eq!(v4.address_type, AddressType::Ip(IpFamily::V4));
        assert_eq!(
            v4.ports,
            vec![
                EndpointPort::new("http", Protocol::Tcp, 80),
                EndpointPort::new("", Protocol::Udp, 53)
            ]
        );
        let addrs: Vec<_> = v4
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.conditions.ready))
            .collect();
        assert_eq!(
            addrs,
            [
                ("10.0.0.1".to_string(), true),
                ("10.0.0.2".to_string(), false),
                ("10.0.0.9".to_string(), true)
            ]
        );
        assert_eq!(v4.endpoints[0].node_name.as_deref(), Some("n1"));
        assert!(v4.endpoints[1].conditions.serving);
        assert!(!v4.endpoints[1].conditions.terminating);
        assert_eq!(value[1].address_type, AddressType::Ip(IpFamily::V6));
        assert_eq!(
            value[2].ports,
            vec![EndpointPort::new("", Protocol::Tcp, 8080)]
        );
        assert_eq!(
            warnings[0].to_string(),
            "Endpoints ns/web: subsets[0].addresses[2].ip: \"bogus\" is not a valid IP; not mirrored"
        );
    }

    #[test]
    fn mirroring_skips_and_limits() {
        assert_eq!(
            mirror(
                "metadata: {name: a, labels: {endpointslice.kubernetes.io/skip-mirror: 'true'}}\n"
            )
            .unwrap(),
            Outcome::Skipped(SkipReason::SkipMirror)
        );
        assert_eq!(
            mirror(
                "metadata: {name: a, annotations: {control-plane.alpha.kubernetes.io/leader: x}}\n"
            )
            .unwrap(),
            Outcome::Skipped(SkipReason::LeaderElection)
        );
        assert_eq!(
            mirror("metadata: {name: a, labels: {service.kubernetes.io/headless: ''}}\n").unwrap(),
            Outcome::Skipped(SkipReason::Headless)
        );
        assert!(
            mirror("metadata: {name: a}\nsubsets: [{ports: [{port: 0}]}]\n")
                .unwrap_err()
                .to_string()
                .contains("subsets[0].ports[0].port: 0 is out of range")
        );
        let mut ep = corev1::Endpoints::default();
        ep.metadata.name = Some("big".into());
        ep.subsets = Some(vec![corev1::EndpointSubset {
            addresses: Some(
                (0..1005)
                    .map(|i| corev1::EndpointAddress {
                        ip: format!("10.1.{}.{}", i / 256, i % 256),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }]);
        let Outcome::Converted { value, warnings } = endpoints_to_slices(&ep).unwrap() else {
            panic!()
        };
        assert_eq!(value[0].endpoints.len(), MAX_MIRRORED_ENDPOINTS);
        assert!(warnings[0].to_string().contains("5 addresses beyond"));
        // no subsets: no slices
        assert_eq!(
            mirror("metadata: {name: a}\n").unwrap().value(),
            Some(Vec::new())
        );
    }
}
