//! The metrics server's `/configz`: component-base's configz answer,
//! `{"kubeproxy.config.k8s.io": CONFIG}`, where kube-proxy prints its
//! internal `KubeProxyConfiguration` with Go's `encoding/json` (field
//! names as the Go type spells them, in its order; durations as Go prints
//! them, `30s`, `15m0s`).
//!
//! kproxy prints the fields of the effective configuration it models
//! ([`ProxySettings`]), named and ordered as kube-proxy's internal type.

use std::fmt::Write as _;
use std::time::Duration;

use kproxy_core::config::{NodePortAddresses, ProxySettings, format_go_duration};

use super::sync::Mode;

/// A JSON object written in field order, as Go writes a struct.
struct Object(String);

impl Object {
    fn new() -> Self {
        Self(String::from("{"))
    }
    fn raw(mut self, name: &str, value: &str) -> Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "{}:{value}", json_string(name));
        self
    }
    fn str(self, name: &str, value: &str) -> Self {
        self.raw(name, &json_string(value))
    }
    fn duration(self, name: &str, d: Duration) -> Self {
        self.str(name, &format_go_duration(d))
    }
    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The `/configz` body for `settings`, proxying in `mode`.
pub fn body(settings: &ProxySettings, mode: Mode) -> String {
    let s = settings;
    let gates = s
        .feature_gates
        .iter()
        .fold(Object::new(), |o, (k, v)| o.raw(k, &v.to_string()))
        .end();
    // The mode's section holds the mode's settings; the other one keeps
    // kube-proxy's defaults.
    let section = |ours: bool, iptables: bool| {
        let default = ProxySettings::default();
        let v = if ours { s } else { &default };
        let o = Object::new()
            .raw("MasqueradeBit", &v.masquerade_bit.to_string())
            .raw("MasqueradeAll", &v.masquerade_all.to_string());
        let o = if iptables {
            o.raw("LocalhostNodePorts", &v.localhost_node_ports.to_string())
        } else {
            o
        };
        o.duration("SyncPeriod", v.sync_period)
            .duration("MinSyncPeriod", v.min_sync_period)
            .end()
    };
    let node_port_addresses = match &s.node_port_addresses {
        NodePortAddresses::All => "null".to_string(),
        NodePortAddresses::Primary => "[\"primary\"]".to_string(),
        NodePortAddresses::Cidrs(c) => {
            let items: Vec<String> = c.iter().map(|n| json_string(&n.to_string())).collect();
            format!("[{}]", items.join(","))
        }
    };
    let cluster_cidr: Vec<String> = s.cluster_cidrs.iter().map(ToString::to_string).collect();
    let bind_address = s
        .node_ip_override
        .first()
        .map_or_else(|| "0.0.0.0".to_string(), ToString::to_string);
    let conntrack = Object::new()
        .raw("MaxPerCore", &s.conntrack.max_per_core.to_string())
        .raw("Min", &s.conntrack.min.to_string())
        .duration("TCPEstablishedTimeout", s.conntrack.tcp_established_timeout)
        .duration("TCPCloseWaitTimeout", s.conntrack.tcp_close_wait_timeout)
        .raw("TCPBeLiberal", &s.conntrack.tcp_be_liberal.to_string())
        .end();
    let config = Object::new()
        .raw("FeatureGates", &gates)
        .str(
            "HostnameOverride",
            s.hostname_override.as_deref().unwrap_or(""),
        )
        .str("BindAddress", &bind_address)
        .str("HealthzBindAddress", &s.healthz_bind_address)
        .str("MetricsBindAddress", &s.metrics_bind_address)
        .str(
            "ServiceProxyName",
            s.service_proxy_name.as_deref().unwrap_or(""),
        )
        // The mode in use (`--backend` may override the configuration's).
        .str("Mode", mode.name())
        .raw("IPTables", &section(mode == Mode::Iptables, true))
        .raw("NFTables", &section(mode == Mode::Nftables, false))
        .str("DetectLocalMode", s.detect_local_mode.as_str())
        .raw(
            "DetectLocal",
            &Object::new()
                .str(
                    "BridgeInterface",
                    s.bridge_interface.as_deref().unwrap_or(""),
                )
                .str(
                    "InterfaceNamePrefix",
                    s.interface_name_prefix.as_deref().unwrap_or(""),
                )
                .end(),
        )
        .str("ClusterCIDR", &cluster_cidr.join(","))
        .raw("NodePortAddresses", &node_port_addresses)
        .raw("Conntrack", &conntrack)
        .duration("ConfigSyncPeriod", s.config_sync_period)
        .end();
    Object::new().raw("kubeproxy.config.k8s.io", &config).end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(2_500), "2.5µs"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(61), "1m1s"),
            (Duration::from_secs(900), "15m0s"),
            (Duration::from_secs(86_400), "24h0m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
        ] {
            assert_eq!(format_go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn configz_of_the_defaults() {
        let nft = body(&ProxySettings::default(), Mode::Nftables);
        assert!(nft.contains("\"Mode\":\"nftables\""), "{nft}");
        let body = body(&ProxySettings::default(), Mode::Iptables);
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let c = &v["kubeproxy.config.k8s.io"];
        assert_eq!(c["Mode"], "iptables");
        assert_eq!(c["HealthzBindAddress"], "0.0.0.0:10256");
        assert_eq!(c["MetricsBindAddress"], "127.0.0.1:10249");
        assert_eq!(c["IPTables"]["SyncPeriod"], "30s");
        assert_eq!(c["IPTables"]["MinSyncPeriod"], "1s");
        assert_eq!(c["IPTables"]["MasqueradeBit"], 14);
        assert_eq!(c["Conntrack"]["TCPEstablishedTimeout"], "24h0m0s");
        assert_eq!(c["ConfigSyncPeriod"], "15m0s");
        assert_eq!(c["NodePortAddresses"], serde_json::Value::Null);
        // Go's field order.
        assert!(body.starts_with(
            "{\"kubeproxy.config.k8s.io\":{\"FeatureGates\":{},\"HostnameOverride\":\"\",\"BindAddress\":\"0.0.0.0\","
        ));
    }
}
