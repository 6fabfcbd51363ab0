//! `v1` Service into [`model::Service`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::error::{Ctx, ObjectError, Warning};
use super::{ConvertOptions, Outcome, namespaced, port_number, protocol, sloppy, validate};
use crate::model::{self, IpFamily, IpMode, LoadBalancerIngress, ServiceType, TrafficPolicy};

/// The API server's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// The largest ClientIP affinity timeout the API accepts (1 day).
const MAX_AFFINITY_TIMEOUT: i32 = 86400;

/// Converts a Service with kube-proxy's default options (Services labelled
/// `service.kubernetes.io/service-proxy-name` are skipped). See
/// [`service_with`].
///
/// ```
/// use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
/// use kproxy_core::convert::service;
/// let svc = Service {
///     metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
///         name: Some("web".into()),
///         ..Default::default()
///     },
///     spec: Some(ServiceSpec {
///         cluster_ip: Some("10.0.0.1".into()),
///         ports: Some(vec![ServicePort { port: 70000, ..Default::default() }]),
///         ..Default::default()
///     }),
///     ..Default::default()
/// };
/// assert_eq!(
///     service(&svc).unwrap_err().to_string(),
///     "Service default/web: spec.ports[0].port: 70000 is out of range 1-65535"
/// );
/// ```
pub fn service(svc: &corev1::Service) -> Result<Outcome<model::Service>, ObjectError> {
    service_with(svc, &ConvertOptions::default())
}

/// Converts a Service: applies the API server's defaults (type `ClusterIP`,
/// protocol `TCP`, traffic policies `Cluster`, affinity timeout 10800s),
/// rejects what API validation rejects (bad ports, duplicate port names,
/// more than one cluster IP per family...), and reads addresses the way
/// kube-proxy does: sloppy IP parsing, invalid `externalIPs`, load balancer
/// ingress IPs and `loadBalancerSourceRanges` dropped with a [`Warning`],
/// source ranges trimmed and masked to their network.
///
/// A headless Service (`clusterIP: None`) or an `ExternalName` one converts
/// with no cluster IPs. Services not meant for this proxy (label
/// `service.kubernetes.io/service-proxy-name`, see [`ConvertOptions`]) give
/// [`Outcome::Skipped`].
pub fn service_with(
    svc: &corev1::Service,
    opts: &ConvertOptions,
) -> Result<Outcome<model::Service>, ObjectError> {
    // A DNS-1123 label: upstream requires a DNS-1035 one (no leading digit)
    // unless the RelaxedServiceNameValidation gate is on; both are safe to
    // write, and a cluster with the gate serves the relaxed ones.
    let (id, ctx) = namespaced("Service", &svc.metadata, validate::dns1123_label)?;
    let no_labels = std::collections::BTreeMap::new();
    let labels = svc.metadata.labels.as_ref().unwrap_or(&no_labels);
    if let Some(reason) = opts.proxy_name_skip(labels) {
        return Ok(Outcome::Skipped(reason));
    }
    let default_spec = corev1::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    let mut warnings = Vec::new();

    let service_type = match spec.type_.as_deref() {
        None | Some("") | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(other) => {
            return Err(ctx.err(
                "spec.type",
                format!(
                    "unsupported value {other:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                ),
            ));
        }
    };

    let (cluster_ips, headless) = cluster_ips(&ctx, spec, service_type, &mut warnings)?;
    let ports = ports(&ctx, spec, service_type, headless)?;

    let external_ips = parse_ips(
        &ctx,
        "spec.externalIPs",
        spec.external_ips.as_deref().unwrap_or_default(),
        &mut warnings,
    );

    let mut load_balancer_ingress = Vec::new();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        let Some(ip_text) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
            continue; // hostname-only ingress: nothing for kube-proxy
        };
        let field = format!("status.loadBalancer.ingress[{i}]");
        let ip_mode = match ing.ip_mode.as_deref() {
            None | Some("VIP") => IpMode::Vip,
            Some("Proxy") => IpMode::Proxy,
            Some(other) => {
                warnings.push(ctx.warn(
                    format!("{field}.ipMode"),
                    format!("unknown value {other:?}; treated as Proxy (not a VIP)"),
                ));
                IpMode::Proxy
            }
        };
        match sloppy::parse_ip(ip_text) {
            Some(ip) => load_balancer_ingress.push(LoadBalancerIngress { ip, ip_mode }),
            None => warnings.push(ctx.warn(
                format!("{field}.ip"),
                format!("{ip_text:?} is not a valid IP; ignored"),
            )),
        }
    }

    let mut load_balancer_source_ranges = Vec::new();
    for (i, range) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        match sloppy::parse_cidr(range.trim()) {
            Some(net) => load_balancer_source_ranges.push(net.trunc()),
            None => warnings.push(ctx.warn(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("{range:?} is not a valid CIDR; ignored"),
            )),
        }
    }

    let external_traffic_policy = policy(
        &ctx,
        "spec.externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
    )?;
    let internal_traffic_policy = policy(
        &ctx,
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
    )?;

    let health_check_node_port = match spec.health_check_node_port {
        None | Some(0) => 0,
        Some(p) => port_number(&ctx, "spec.healthCheckNodePort", p)?,
    };

    let session_affinity_timeout = match spec.session_affinity.as_deref() {
        None | Some("") | Some("None") => None,
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match t {
                None => Some(DEFAULT_AFFINITY_TIMEOUT),
                Some(t @ 1..=MAX_AFFINITY_TIMEOUT) => Some(t.unsigned_abs()),
                Some(t) => {
                    return Err(ctx.err(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{t} must be greater than 0 and less than or equal to {MAX_AFFINITY_TIMEOUT}"),
                    ));
                }
            }
        }
        Some(other) => {
            return Err(ctx.err(
                "spec.sessionAffinity",
                format!("unsupported value {other:?}: supported values: \"ClientIP\", \"None\""),
            ));
        }
    };

    Ok(Outcome::Converted {
        value: model::Service {
            id,
            service_type,
            cluster_ips,
            ports,
            external_ips,
            load_balancer_ingress,
            load_balancer_source_ranges,
            external_traffic_policy,
            internal_traffic_policy,
            health_check_node_port,
            session_affinity_timeout,
        },
        warnings,
    })
}

fn policy(ctx: &Ctx, field: &str, value: Option<&str>) -> Result<TrafficPolicy, ObjectError> {
    match value {
        None | Some("") | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(ctx.err(
            field,
            format!("unsupported value {other:?}: supported values: \"Cluster\", \"Local\""),
        )),
    }
}

/// Valid IPs of a list, in order; invalid ones become warnings.
fn parse_ips(ctx: &Ctx, field: &str, list: &[String], warnings: &mut Vec<Warning>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match sloppy::parse_ip(s) {
            Some(ip) => out.push(ip),
            None => warnings.push(ctx.warn(
                format!("{field}[{i}]"),
                format!("{s:?} is not a valid IP; ignored"),
            )),
        }
    }
    out
}

/// The cluster IPs, and whether the Service is headless.
fn cluster_ips(
    ctx: &Ctx,
    spec: &corev1::ServiceSpec,
    service_type: ServiceType,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<IpAddr>, bool), ObjectError> {
    if service_type == ServiceType::ExternalName {
        return Ok((Vec::new(), false));
    }
    let cluster_ip = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let list: Vec<(String, &str)> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.clusterIPs[{i}]"), s.as_str()))
            .collect(),
        _ => cluster_ip
            .map(|s| vec![("spec.clusterIP".to_string(), s)])
            .unwrap_or_default(),
    };
    if list.is_empty() {
        warnings.push(ctx.warn(
            "spec.clusterIP",
            "not set (the API server would allocate one); the Service has no cluster IP",
        ));
        return Ok((Vec::new(), false));
    }
    if list[0].1 == "None" {
        if list.len() > 1 {
            return Err(ctx.err(
                "spec.clusterIPs",
                "must contain only \"None\" for a headless Service",
            ));
        }
        if let Some(ci) = cluster_ip.filter(|ci| *ci != "None") {
            return Err(ctx.err(
                "spec.clusterIPs[0]",
                format!("must match spec.clusterIP {ci:?}"),
            ));
        }
        return Ok((Vec::new(), true));
    }
    if list.len() > 2 {
        return Err(ctx.err(
            "spec.clusterIPs",
            format!("may have at most 2 entries, has {}", list.len()),
        ));
    }
    let mut ips = Vec::new();
    for (field, text) in &list {
        let ip = sloppy::parse_ip(text)
            .ok_or_else(|| ctx.err(field.as_str(), format!("{text:?} is not a valid IP")))?;
        ips.push(ip);
    }
    if ips.len() == 2 && IpFamily::of(&ips[0]) == IpFamily::of(&ips[1]) {
        return Err(ctx.err(
            "spec.clusterIPs[1]",
            "must be of a different IP family than spec.clusterIPs[0]",
        ));
    }
    let from_list = spec.cluster_ips.as_ref().is_some_and(|v| !v.is_empty());
    if let Some(ci) = cluster_ip
        && from_list
        && sloppy::parse_ip(ci) != Some(ips[0])
    {
        return Err(ctx.err(
            "spec.clusterIPs[0]",
            format!("must match spec.clusterIP {ci:?}"),
        ));
    }
    for (i, fam) in spec.ip_families.iter().flatten().enumerate() {
        let want = match fam.as_str() {
            "IPv4" => IpFamily::V4,
            "IPv6" => IpFamily::V6,
            other => {
                return Err(ctx.err(
                    format!("spec.ipFamilies[{i}]"),
                    format!("unsupported value {other:?}: supported values: \"IPv4\", \"IPv6\""),
                ));
            }
        };
        if let Some(ip) = ips.get(i)
            && IpFamily::of(ip) != want
        {
            return Err(ctx.err(
                format!("spec.ipFamilies[{i}]"),
                format!("{fam} does not match the family of {ip}"),
            ));
        }
    }
    Ok((ips, false))
}

fn ports(
    ctx: &Ctx,
    spec: &corev1::ServiceSpec,
    service_type: ServiceType,
    headless: bool,
) -> Result<Vec<model::ServicePort>, ObjectError> {
    let list = spec.ports.as_deref().unwrap_or_default();
    if list.is_empty() && !headless && service_type != ServiceType::ExternalName {
        return Err(ctx.err("spec.ports", "required (at least one port)"));
    }
    let node_ports_allowed = matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut seen_node = BTreeSet::new();
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let f = |sub: &str| format!("spec.ports[{i}].{sub}");
        let name = p.name.clone().unwrap_or_default();
        if name.is_empty() {
            if list.len() > 1 {
                return Err(ctx.err(
                    f("name"),
                    "required when the Service has more than one port",
                ));
            }
        } else {
            validate::field(ctx, f("name"), &name, validate::dns1123_label)?;
            if !names.insert(name.clone()) {
                return Err(ctx.err(
                    f("name"),
                    format!("duplicate value {}", validate::quoted(&name)),
                ));
            }
        }
        // Not used by the proxy, but the API server refuses a bad one.
        match &p.target_port {
            Some(IntOrString::Int(n)) if *n != 0 => {
                port_number(ctx, &f("targetPort"), *n)?;
            }
            Some(IntOrString::String(s)) => {
                validate::field(ctx, f("targetPort"), s, validate::port_name)?;
            }
            _ => {}
        }
        let proto = protocol(ctx, &f("protocol"), p.protocol.as_deref())?;
        let port = port_number(ctx, &f("port"), p.port)?;
        if !seen.insert((port, proto)) {
            return Err(ctx.err(
                f("port"),
                format!("duplicate port {port}/{}", proto.as_lower().to_uppercase()),
            ));
        }
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(np) => {
                let np = port_number(ctx, &f("nodePort"), np)?;
                if !node_ports_allowed {
                    return Err(ctx.err(
                        f("nodePort"),
                        "may not be used unless type is NodePort or LoadBalancer",
                    ));
                }
                if !seen_node.insert((np, proto)) {
                    return Err(ctx.err(f("nodePort"), format!("duplicate node port {np}")));
                }
                Some(np)
            }
        };
        out.push(model::ServicePort {
            name,
            protocol: proto,
            port,
            node_port,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Object, SkipReason, parse_documents};
    use crate::model::Protocol;

    fn svc(yaml: &str) -> corev1::Service {
        let text = format!("apiVersion: v1\nkind: Service\n{yaml}");
        match parse_documents(&text, "t").expect("parses").pop() {
            Some(Object::Service(s)) => *s,
            o => panic!("not a service: {o:?}"),
        }
    }

    fn ok(yaml: &str) -> (model::Service, Vec<String>) {
        match service(&svc(yaml)).expect("converts") {
            Outcome::Converted { value, warnings } => {
                (value, warnings.iter().map(ToString::to_string).collect())
            }
            Outcome::Skipped(r) => panic!("skipped: {r}"),
        }
    }

    fn err(yaml: &str) -> String {
        service(&svc(yaml)).expect_err("fails").to_string()
    }

    const META: &str = "metadata: {name: web, namespace: ns}\n";

    #[test]
    fn defaults_and_sloppy_ips() {
        let (s, w) = ok(&format!(
            "{META}spec:\n  clusterIP: 172.30.0.041\n  ports: [{{port: 80}}]\n"
        ));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.id, model::NamespacedName::new("ns", "web"));
        assert_eq!(s.service_type, ServiceType::ClusterIp);
        assert_eq!(
            s.cluster_ips,
            vec!["172.30.0.41".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            s.ports,
            vec![model::ServicePort::new("", Protocol::Tcp, 80)]
        );
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(s.session_affinity_timeout, None);
        assert_eq!(s.health_check_node_port, 0);
        // namespace defaults to "default"
        let (s, _) = ok("metadata: {name: x}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 1}]}\n");
        assert_eq!(s.id.to_string(), "default/x");
    }

    #[test]
    fn full_load_balancer() {
        let (s, w) = ok(&format!(
            r#"{META}spec:
  type: LoadBalancer
  clusterIP: 10.0.0.1
  clusterIPs: [10.0.0.1, "fd00::0001"]
  ipFamilies: [IPv4, IPv6]
  externalIPs: [192.0.2.001, bogus, "2001:db8::1"]
  loadBalancerSourceRanges: [" 203.0.113.000/025 ", 1.2.3.4/28, nope, "fd00::/8"]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  healthCheckNodePort: 30000
  sessionAffinity: ClientIP
  ports:
  - {{name: http, port: 80, nodePort: 30080}}
  - {{name: dns, port: 53, protocol: UDP, nodePort: 0}}
status:
  loadBalancer:
    ingress:
    - ip: 198.51.100.1
    - ip: 198.51.100.2
      ipMode: Proxy
    - hostname: lb.example.com
    - ip: not-an-ip
"#
        ));
        assert_eq!(s.service_type, ServiceType::LoadBalancer);
        assert_eq!(s.cluster_ips.len(), 2);
        assert_eq!(
            s.cluster_ip_of(IpFamily::V6).unwrap().to_string(),
            "fd00::1"
        );
        let ext: Vec<_> = s.external_ips.iter().map(ToString::to_string).collect();
        assert_eq!(ext, ["192.0.2.1", "2001:db8::1"]);
        let ranges: Vec<_> = s
            .load_balancer_source_ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ranges, ["203.0.113.0/25", "1.2.3.0/28", "fd00::/8"]);
        assert_eq!(
            s.load_balancer_ingress,
            vec![
                LoadBalancerIngress {
                    ip: "198.51.100.1".parse().unwrap(),
                    ip_mode: IpMode::Vip
                },
                LoadBalancerIngress {
                    ip: "198.51.100.2".parse().unwrap(),
                    ip_mode: IpMode::Proxy
                },
            ]
        );
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.internal_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.health_check_node_port, 30000);
        assert_eq!(s.session_affinity_timeout, Some(10800));
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.ports[1].node_port, None);
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(
            w,
            [
                "Service ns/web: spec.externalIPs[1]: \"bogus\" is not a valid IP; ignored",
                "Service ns/web: status.loadBalancer.ingress[3].ip: \"not-an-ip\" is not a valid IP; ignored",
                "Service ns/web: spec.loadBalancerSourceRanges[2]: \"nope\" is not a valid CIDR; ignored",
            ]
        );
    }

    #[test]
    fn headless_and_external_name() {
        let (s, w) = ok(&format!("{META}spec: {{clusterIP: None}}\n"));
        assert!(s.cluster_ips.is_empty());
        assert!(w.is_empty());
        let (s, _) = ok(&format!(
            "{META}spec: {{type: ExternalName, externalName: example.com}}\n"
        ));
        assert_eq!(s.service_type, ServiceType::ExternalName);
        assert!(s.cluster_ips.is_empty());
        let (s, w) = ok(&format!("{META}spec: {{ports: [{{port: 80}}]}}\n"));
        assert!(s.cluster_ips.is_empty());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn affinity_timeout() {
        let (s, _) = ok(&format!(
            "{META}spec: {{clusterIP: 10.0.0.1, ports: [{{port: 80}}], sessionAffinity: ClientIP, sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 60}}}}}}\n"
        ));
        assert_eq!(s.session_affinity_timeout, Some(60));
        assert!(
            err(&format!(
                "{META}spec: {{clusterIP: 10.0.0.1, ports: [{{port: 80}}], sessionAffinity: ClientIP, sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 0}}}}}}\n"
            ))
            .contains("timeoutSeconds: 0 must be greater than 0")
        );
    }

    #[test]
    fn names_are_validated() {
        let e = |meta: &str| {
            err(&format!(
                "metadata: {meta}\nspec: {{clusterIP: 10.0.0.1, ports: [{{port: 80}}]}}\n"
            ))
        };
        assert_eq!(
            e(r#"{name: web, namespace: 'a"b'}"#),
            r#"Service a\"b/web: metadata.namespace: "a\"b": must be a lowercase RFC 1123 label: lower case alphanumeric characters or '-', starting and ending with an alphanumeric character"#
        );
        assert!(e("{name: 'lb$1'}").contains("metadata.name: \"lb$1\""));
        assert!(e("{name: Web}").contains("metadata.name"));
        assert!(
            e(&format!("{{name: {}}}", "a".repeat(64)))
                .ends_with("must be no more than 63 characters")
        );
        assert!(e("{name: web, labels: {'a b': x}}").contains("metadata.labels: \"a b\""));
        assert!(e("{name: web, labels: {app: 'x y'}}").contains("metadata.labels[app]: \"x y\""));
        // Relaxed service names (a leading digit) are accepted.
        assert!(
            service(&svc(
                "metadata: {name: 9web}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn validation_errors() {
        let base = |ports: &str| {
            format!("{META}spec:\n  type: NodePort\n  clusterIP: 10.0.0.1\n  ports: {ports}\n")
        };
        assert_eq!(
            err(&base("[{name: a, port: 80}, {name: b, port: 70000}]")),
            "Service ns/web: spec.ports[1].port: 70000 is out of range 1-65535"
        );
        assert_eq!(
            err(&base("[{name: a, port: 80}, {port: 81}]")),
            "Service ns/web: spec.ports[1].name: required when the Service has more than one port"
        );
        assert_eq!(
            err(&base("[{name: a, port: 80}, {name: a, port: 81}]")),
            "Service ns/web: spec.ports[1].name: duplicate value \"a\""
        );
        assert_eq!(
            err(&base("[{name: a, port: 80}, {name: b, port: 80}]")),
            "Service ns/web: spec.ports[1].port: duplicate port 80/TCP"
        );
        assert!(err(&base("[{name: A_1, port: 80}]")).contains("spec.ports[0].name: \"A_1\""));
        assert!(err(&base("[{port: 80, protocol: ICMP}]")).contains("spec.ports[0].protocol"));
        assert!(
            err(&base("[{port: 80, targetPort: 70000}]"))
                .contains("spec.ports[0].targetPort: 70000 is out of range")
        );
        assert!(
            err(&base("[{port: 80, targetPort: 'a\"b'}]"))
                .contains(r#"spec.ports[0].targetPort: "a\"b": must contain only"#)
        );
        for ok in ["8080", "http", "0"] {
            assert!(
                service(&svc(&base(&format!("[{{port: 80, targetPort: {ok}}}]")))).is_ok(),
                "{ok}"
            );
        }
        assert!(err(&base("[{port: 80, nodePort: 99999}]")).contains("spec.ports[0].nodePort"));
        assert!(err(&base("[]")).contains("spec.ports: required"));
        assert!(
            err(&format!(
                "{META}spec: {{clusterIP: 10.0.0.1, ports: [{{port: 80, nodePort: 30000}}]}}\n"
            ))
            .contains("may not be used unless type is NodePort")
        );
        assert!(
            err(&format!(
                "{META}spec: {{clusterIPs: [10.0.0.1, 10.0.0.2], ports: [{{port: 80}}]}}\n"
            ))
            .contains("spec.clusterIPs[1]: must be of a different IP family")
        );
        assert!(
            err(&format!(
                "{META}spec: {{clusterIPs: [10.0.0.1, 'fd00::1', 'fd00::2'], ports: [{{port: 80}}]}}\n"
            ))
            .contains("spec.clusterIPs: may have at most 2 entries")
        );
        assert_eq!(
            err(&format!(
                "{META}spec: {{clusterIP: 10.0.0.256, ports: [{{port: 80}}]}}\n"
            )),
            "Service ns/web: spec.clusterIP: \"10.0.0.256\" is not a valid IP"
        );
        assert!(
            err(&format!(
                "{META}spec: {{clusterIP: 10.0.0.1, clusterIPs: [10.0.0.2], ports: [{{port: 80}}]}}\n"
            ))
            .contains("spec.clusterIPs[0]: must match spec.clusterIP")
        );
        assert!(
            err(&format!(
                "{META}spec: {{clusterIP: 10.0.0.1, ipFamilies: [IPv6], ports: [{{port: 80}}]}}\n"
            ))
            .contains("spec.ipFamilies[0]")
        );
        assert!(err(&format!("{META}spec: {{type: Foo}}\n")).contains("spec.type"));
        assert!(
            err(&format!(
                "{META}spec: {{clusterIP: 10.0.0.1, ports: [{{port: 80}}], externalTrafficPolicy: Global}}\n"
            ))
            .contains("spec.externalTrafficPolicy")
        );
        assert_eq!(
            err("metadata: {namespace: ns}\nspec: {}\n"),
            "Service ns/: metadata.name: required"
        );
    }

    #[test]
    fn service_proxy_name() {
        let s = svc(
            "metadata: {name: web, labels: {service.kubernetes.io/service-proxy-name: other}}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n",
        );
        assert_eq!(
            service(&s).unwrap(),
            Outcome::Skipped(SkipReason::ServiceProxyName(Some("other".into())))
        );
        let mine = ConvertOptions {
            service_proxy_name: Some("other".into()),
        };
        assert!(service_with(&s, &mine).unwrap().value().is_some());
        let plain = svc(&format!(
            "{META}spec: {{clusterIP: 10.0.0.1, ports: [{{port: 80}}]}}\n"
        ));
        assert_eq!(
            service_with(&plain, &mine).unwrap(),
            Outcome::Skipped(SkipReason::ServiceProxyName(None))
        );
    }
}
