//! `kproxy run` takes kube-proxy's command line (issue 12): every flag of
//! the current kube-proxy release parses, in both of Go's forms; the
//! configuration flags apply with kube-proxy's precedence (ignored, with a
//! warning, when a configuration file is given); `--write-config-to`
//! writes the effective configuration; started as `kube-proxy`, kproxy is
//! `kproxy run`; an unknown flag is still a usage error (exit status 2).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use kproxy_bin::cli::{Cli, Command as Sub, kube_proxy_args};
use kproxy_bin::settings::{log_filter, run_settings};
use kproxy_core::config::{KubeProxyConfiguration, ProxyMode};
use kproxy_core::convert::Inventory;
use kproxy_tests::Scratch;

/// Whether the flag is a boolean (`--flag`, `--flag=false`).
const BOOL: bool = true;
const VALUE: bool = false;

/// kube-proxy's flags on Linux, with a plausible value each, as registered
/// by `cmd/kube-proxy/app/options.go` (`Options.AddFlags`, in its order),
/// `logsapi.AddFlags` (the logging flags, JSON format registered), and the
/// global ones (`--version` from verflag, `--boot-id-file` and
/// `--machine-id-file` from the Go flag set).
const UPSTREAM_FLAGS: &[(&str, &str, bool)] = &[
    ("config", "/var/lib/kube-proxy/config.conf", VALUE),
    ("write-config-to", "/tmp/kproxy-unused.yaml", VALUE),
    ("cleanup", "true", BOOL),
    (
        "feature-gates",
        "KubeProxyNFTablesLocalhostNodePorts=true",
        VALUE,
    ),
    ("kubeconfig", "/var/lib/kube-proxy/kubeconfig.conf", VALUE),
    ("master", "https://10.0.0.1:6443", VALUE),
    (
        "kube-api-content-type",
        "application/vnd.kubernetes.protobuf",
        VALUE,
    ),
    ("kube-api-burst", "20", VALUE),
    ("kube-api-qps", "7.5", VALUE),
    ("hostname-override", "node-1", VALUE),
    ("bind-address", "10.0.0.7", VALUE),
    ("healthz-bind-address", "0.0.0.0:10256", VALUE),
    ("metrics-bind-address", "127.0.0.1:10249", VALUE),
    ("bind-address-hard-fail", "true", BOOL),
    ("profiling", "true", BOOL),
    ("show-hidden-metrics-for-version", "1.34", VALUE),
    ("init-only", "true", BOOL),
    ("proxy-mode", "iptables", VALUE),
    ("iptables-masquerade-bit", "14", VALUE),
    ("masquerade-all", "true", BOOL),
    ("iptables-localhost-nodeports", "false", BOOL),
    ("iptables-sync-period", "30s", VALUE),
    ("iptables-min-sync-period", "1s", VALUE),
    ("ipvs-sync-period", "30s", VALUE),
    ("ipvs-min-sync-period", "0s", VALUE),
    ("ipvs-scheduler", "rr", VALUE),
    ("ipvs-exclude-cidrs", "10.0.0.0/8,192.168.0.0/16", VALUE),
    ("ipvs-strict-arp", "true", BOOL),
    ("ipvs-tcp-timeout", "15m", VALUE),
    ("ipvs-tcpfin-timeout", "2m", VALUE),
    ("ipvs-udp-timeout", "5m", VALUE),
    ("detect-local-mode", "ClusterCIDR", VALUE),
    ("pod-bridge-interface", "cbr0", VALUE),
    ("pod-interface-name-prefix", "veth", VALUE),
    ("cluster-cidr", "10.244.0.0/16,fd00:10:244::/56", VALUE),
    ("nodeport-addresses", "primary", VALUE),
    ("oom-score-adj", "-999", VALUE),
    ("conntrack-max-per-core", "32768", VALUE),
    ("conntrack-min", "131072", VALUE),
    ("conntrack-tcp-timeout-established", "24h0m0s", VALUE),
    ("conntrack-tcp-timeout-close-wait", "1h0m0s", VALUE),
    ("conntrack-tcp-be-liberal", "true", BOOL),
    ("conntrack-udp-timeout", "30s", VALUE),
    ("conntrack-udp-timeout-stream", "2m", VALUE),
    ("config-sync-period", "15m", VALUE),
    ("healthz-port", "10256", VALUE),
    ("metrics-port", "10249", VALUE),
    // logsapi.AddFlags
    ("logging-format", "text", VALUE),
    ("log-flush-frequency", "5s", VALUE),
    ("v", "2", VALUE),
    ("vmodule", "kproxy_bin::agent::kube=4", VALUE),
    ("log-json-split-stream", "true", BOOL),
    ("log-json-info-buffer-size", "0", VALUE),
    ("log-text-split-stream", "true", BOOL),
    ("log-text-info-buffer-size", "0", VALUE),
    // Global flags.
    ("version", "raw", BOOL),
    ("boot-id-file", "/proc/sys/kernel/random/boot_id", VALUE),
    ("machine-id-file", "/etc/machine-id", VALUE),
];

fn parse(args: &[String]) -> Result<Cli, clap::Error> {
    let mut argv = vec!["kproxy".to_string(), "run".to_string()];
    argv.extend(args.iter().cloned());
    Cli::try_parse_from(kube_proxy_args(argv))
}

fn run_args(args: &[&str]) -> kproxy_bin::agent::RunArgs {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match parse(&args) {
        Ok(Cli {
            command: Sub::Run(r),
            ..
        }) => *r,
        Ok(other) => panic!("not run: {other:?}"),
        Err(e) => panic!("{args:?}: {e}"),
    }
}

#[test]
fn every_upstream_flag_parses_in_both_forms() {
    let mut equals = Vec::new();
    let mut separate = Vec::new();
    for (name, value, is_bool) in UPSTREAM_FLAGS {
        equals.push(format!("--{name}={value}"));
        if *is_bool {
            // A Go boolean alone means true; a value needs `=`.
            separate.push(format!("--{name}"));
        } else {
            separate.push(format!("--{name}"));
            separate.push((*value).to_string());
        }
    }
    for args in [&equals, &separate] {
        if let Err(e) = parse(args) {
            panic!("{e}\n{args:?}");
        }
    }
    // Each flag alone too (no flag leans on another to parse).
    for (name, value, _) in UPSTREAM_FLAGS {
        let one = [format!("--{name}={value}")];
        assert!(parse(&one).is_ok(), "{one:?}");
    }
    // Go's boolean spellings, pflag's underscores, klog's shorthand.
    for args in [
        &["--masquerade-all=false"][..],
        &["--masquerade-all=F"],
        &["--cleanup=1"],
        &["--hostname_override=node-1"],
        &["-v=4"],
        &["-v", "4"],
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert!(parse(&args).is_ok(), "{args:?}");
    }
}

#[test]
fn bad_values_and_unknown_flags_are_usage_errors() {
    for args in [
        &["--no-such-flag"][..],
        &["--masquerade-all=maybe"],
        &["--iptables-sync-period=5"],
        &["--oom-score-adj=-1001"],
        &["--kube-api-burst=many"],
        &["--masquerade-all", "true"],
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert!(parse(&args).is_err(), "{args:?} must not parse");
    }
}

#[test]
fn configuration_flags_apply_without_a_file() {
    let a = run_args(&[
        "--iptables-sync-period=5s",
        "--iptables-min-sync-period=250ms",
        "--oom-score-adj=-500",
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-close-wait=30m",
        "--conntrack-udp-timeout-stream=3m",
        "--kube-api-qps=50",
        "--kube-api-burst=100",
        "--kubeconfig=/etc/kc",
        "--healthz-bind-address=127.0.0.1",
        "--healthz-port=12345",
        "--metrics-port=0",
        "--hostname-override= Node-1 ",
        "--conntrack-tcp-be-liberal",
    ]);
    let (s, warnings) =
        run_settings(&a.node, &a.kube_proxy, &Inventory::default()).expect("settings");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.sync_period, Duration::from_secs(5));
    assert_eq!(s.min_sync_period, Duration::from_millis(250));
    assert_eq!(s.oom_score_adj, -500);
    assert_eq!(s.conntrack.max_per_core, 0);
    assert_eq!(
        s.conntrack.tcp_close_wait_timeout,
        Duration::from_secs(1800)
    );
    assert_eq!(s.conntrack.udp_stream_timeout, Duration::from_secs(180));
    assert!(s.conntrack.tcp_be_liberal);
    assert_eq!(s.client_connection.qps, 50.0);
    assert_eq!(s.client_connection.burst, 100);
    assert_eq!(s.client_connection.kubeconfig.as_deref(), Some("/etc/kc"));
    // The deprecated ports: appended to an address without one; 0 disables.
    assert_eq!(s.healthz_bind_address, "127.0.0.1:12345");
    assert_eq!(s.metrics_bind_address, "");
    assert_eq!(s.hostname_override.as_deref(), Some("node-1"));
    // Defaults otherwise.
    let (d, _) = run_settings(
        &run_args(&[]).node,
        &run_args(&[]).kube_proxy,
        &Inventory::default(),
    )
    .expect("defaults");
    assert_eq!(d.oom_score_adj, -999);
    assert_eq!(d.healthz_bind_address, "0.0.0.0:10256");
    assert_eq!(
        d.client_connection.content_type,
        "application/vnd.kubernetes.protobuf"
    );
}

/// A scratch directory for one test's files, removed on drop.
fn scratch(test: &str) -> Scratch {
    Scratch::new("kproxy-flags", test)
}

#[test]
fn a_configuration_file_wins_over_configuration_flags() {
    let dir = scratch("config");
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         clientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 9}\n\
         conntrack: {maxPerCore: 0, udpTimeout: 45s}\noomScoreAdj: -100\n\
         hostnameOverride: from-file\n",
    )
    .expect("write");
    let a = run_args(&[
        &format!("--config={}", cfg.display()),
        "--conntrack-max-per-core=8",
        "--oom-score-adj=7",
        "--kube-api-qps=1",
        "--masquerade-all",
        "--hostname-override=from-flag",
        "--ipvs-scheduler=rr",
    ]);
    let (s, warnings) =
        run_settings(&a.node, &a.kube_proxy, &Inventory::default()).expect("settings");
    assert_eq!(s.conntrack.max_per_core, 0);
    assert_eq!(s.conntrack.udp_timeout, Duration::from_secs(45));
    assert_eq!(s.oom_score_adj, -100);
    assert_eq!(s.client_connection.qps, 9.0);
    assert_eq!(
        s.client_connection.kubeconfig.as_deref(),
        Some("/var/lib/kube-proxy/kubeconfig.conf")
    );
    // --hostname-override always wins.
    assert_eq!(s.hostname_override.as_deref(), Some("from-flag"));
    for flag in [
        "--conntrack-max-per-core",
        "--oom-score-adj",
        "--kube-api-qps",
        "--masquerade-all",
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("{flag} is ignored"))),
            "{flag}: {warnings:?}"
        );
    }
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("--ipvs-scheduler has no effect")),
        "{warnings:?}"
    );
    // kube-proxy's validation: the OOM score is in [-1000, 1000].
    std::fs::write(
        &cfg,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\noomScoreAdj: 5000\n",
    )
    .expect("write");
    let e = run_settings(&a.node, &a.kube_proxy, &Inventory::default()).expect_err("out of range");
    assert!(e.to_string().starts_with("oomScoreAdj: 5000"), "{e}");
    // --kubeconfig is taken over the file's.
    let b = run_args(&[&format!("--config={}", cfg.display()), "--kubeconfig=/mine"]);
    std::fs::write(
        &cfg,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         clientConnection: {kubeconfig: /theirs}\n",
    )
    .expect("write");
    let (s, _) = run_settings(&b.node, &b.kube_proxy, &Inventory::default()).expect("settings");
    let _ = std::fs::remove_file(&cfg);
    assert_eq!(s.client_connection.kubeconfig.as_deref(), Some("/mine"));
}

#[test]
fn verbosity_flags_map_to_a_tracing_filter() {
    assert_eq!(log_filter(None, None), None);
    assert_eq!(log_filter(Some(0), None).as_deref(), Some("info"));
    assert_eq!(log_filter(Some(2), None).as_deref(), Some("debug"));
    assert_eq!(log_filter(Some(6), None).as_deref(), Some("trace"));
    assert_eq!(
        log_filter(None, Some("kproxy_bin::agent::kube=4,bad,x=y,*.go=2")).as_deref(),
        Some("info,kproxy_bin::agent::kube=trace")
    );
    let a = run_args(&["--v=3"]);
    assert_eq!(a.kube_proxy.log_filter().as_deref(), Some("debug"));
}

fn kproxy() -> Command {
    Command::new(kproxy_tests::kproxy_binary())
}

#[test]
fn unknown_flags_exit_2_and_kube_proxy_is_kproxy_run() {
    let out = kproxy()
        .args(["run", "--no-such-flag"])
        .output()
        .expect("run kproxy");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Started under kube-proxy's name, the arguments are `run`'s.
    let dir = scratch("bin");
    let link = dir.join("kube-proxy");
    std::os::unix::fs::symlink(kproxy_tests::kproxy_binary(), &link).expect("symlink");
    let out = Command::new(&link)
        .arg("--version")
        .output()
        .expect("run kube-proxy");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kproxy v"));
    let out = Command::new(&link)
        .arg("--no-such-flag")
        .output()
        .expect("run kube-proxy");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn write_config_to_writes_the_effective_configuration() {
    let dir = scratch("write-config");
    let out_file = dir.join("written.yaml");
    let again = dir.join("again.yaml");
    let status = kproxy()
        .args([
            "run",
            &format!("--write-config-to={}", out_file.display()),
            "--proxy-mode=nftables",
            "--cluster-cidr=10.244.0.0/16",
            "--conntrack-max-per-core=0",
            "--conntrack-udp-timeout=45s",
            "--iptables-sync-period=1m",
            "--oom-score-adj=-10",
            "--kubeconfig=/var/lib/kube-proxy/kubeconfig.conf",
            "--hostname-override=node-1",
            "--nodeport-addresses=primary",
        ])
        .status()
        .expect("run kproxy");
    assert!(status.success());
    let text = std::fs::read_to_string(&out_file).expect("written");
    let cfg: KubeProxyConfiguration = serde_saphyr::from_str(&text).expect("YAML");
    let s = cfg.effective().expect("effective");
    assert_eq!(
        cfg.api_version.as_deref(),
        Some("kubeproxy.config.k8s.io/v1alpha1")
    );
    assert_eq!(s.mode, ProxyMode::Nftables);
    assert_eq!(s.cluster_cidrs[0].to_string(), "10.244.0.0/16");
    assert_eq!(s.conntrack.max_per_core, 0);
    assert_eq!(s.conntrack.udp_timeout, Duration::from_secs(45));
    assert_eq!(s.sync_period, Duration::from_secs(60));
    assert_eq!(s.oom_score_adj, -10);
    assert_eq!(s.hostname_override.as_deref(), Some("node-1"));
    assert_eq!(
        s.client_connection.kubeconfig.as_deref(),
        Some("/var/lib/kube-proxy/kubeconfig.conf")
    );
    assert!(text.contains("syncPeriod: 1m0s"), "{text}");
    // Read back as --config, it writes the same file.
    let status = kproxy()
        .args([
            "run",
            &format!("--config={}", out_file.display()),
            &format!("--write-config-to={}", again.display()),
        ])
        .status()
        .expect("run kproxy");
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&again).expect("written"), text);
}

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_deploy_command_lines_parse_and_use_kubeadms_config_map() {
    let text = std::fs::read_to_string(repo().join("deploy/kproxy.yaml")).expect("kproxy.yaml");
    let ds: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
    let spec = &ds["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let command: Vec<String> = container["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|a| {
            a.as_str()
                .expect("string")
                .replace("$(NODE_NAME)", "node-1")
        })
        .collect();
    assert_eq!(command[0], "/usr/local/bin/kproxy");
    let parsed = Cli::try_parse_from(kube_proxy_args(command.clone())).expect("parses");
    let Sub::Run(run) = parsed.command else {
        panic!("not run: {command:?}")
    };
    assert_eq!(
        run.node.config.as_deref(),
        Some(std::path::Path::new("/var/lib/kube-proxy/config.conf"))
    );
    assert!(run.source.is_none(), "the API is the default source");
    // kubeadm's ConfigMap where kube-proxy's DaemonSet has it.
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/var/lib/kube-proxy"
    );
    assert_eq!(spec["volumes"][0]["configMap"]["name"], "kube-proxy");
    assert_eq!(spec["serviceAccountName"], "kube-proxy");
    // The image's entry point: kubeadm's command under kube-proxy's name.
    let docker = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let entry = |key: &str| -> Vec<String> {
        let line = docker
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the Dockerfile"));
        serde_json::from_str(line.trim()).expect("exec form")
    };
    let mut argv = entry("ENTRYPOINT");
    argv.extend(entry("CMD"));
    assert_eq!(argv[0], "/usr/local/bin/kube-proxy");
    let parsed = Cli::try_parse_from(kube_proxy_args(argv)).expect("parses");
    assert!(matches!(parsed.command, Sub::Run(_)));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
