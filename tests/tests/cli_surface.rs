//! The command line as people meet it, on the real binary: `--color` and
//! `NO_COLOR`, the `kubectl-kproxy` plugin name, shell completions, man
//! pages, `--version`, and kube-proxy's ConfigMap (as kubectl prints it)
//! read as the configuration.

use std::path::Path;

use kproxy_tests::Scratch;
use std::process::Command;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `bin` with `args` and `env` (the colour variables cleared first).
fn run_as(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("KPROXY_LOG")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kproxy");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
}

fn kproxy(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_as(kproxy_tests::kproxy_binary(), args, env)
}

fn seed(state: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed-article")
        .join(state)
        .display()
        .to_string()
}

/// A scratch directory for one test's files, removed on drop.
fn scratch(test: &str) -> Scratch {
    Scratch::new("kproxy-surface", test)
}

const ESC: &str = "\x1b[";

#[test]
fn diff_colour_by_flag_and_by_environment() {
    let (b, a) = (seed("1-clusterip"), seed("2-scaled"));
    let diff = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["diff", "--before", &b, "--after", &a];
        args.extend_from_slice(extra);
        let r = kproxy(&args, env);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        r.stdout
    };
    let plain = diff(&[], &[]);
    assert!(!plain.contains(ESC), "auto into a pipe: no colour");
    assert!(plain.contains("\n    + #2 -A KUBE-SVC-"), "{plain}");
    let always = diff(&["--color", "always"], &[]);
    assert!(
        always.contains("\x1b[1mservice default/hostnames:\x1b[0m"),
        "{always}"
    );
    assert!(always.contains("    \x1b[32m+ #2 -A KUBE-SVC-"), "{always}");
    // The colour is only added: without the escapes, the same text.
    let stripped = always
        .replace("\x1b[1m", "")
        .replace("\x1b[32m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[0m", "");
    assert_eq!(stripped, plain);
    assert_eq!(
        diff(&["--color", "never"], &[("CLICOLOR_FORCE", "1")]),
        plain
    );
    // auto: CLICOLOR_FORCE stands for a terminal; NO_COLOR wins over it;
    // the flag wins over NO_COLOR.
    assert_eq!(diff(&[], &[("CLICOLOR_FORCE", "1")]), always);
    assert_eq!(
        diff(&[], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]),
        plain
    );
    assert_eq!(diff(&["--color", "always"], &[("NO_COLOR", "1")]), always);
    // JSON is never coloured.
    assert!(!diff(&["--color", "always", "--output", "json"], &[]).contains(ESC));
}

#[test]
fn check_and_trace_colour() {
    let dump =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dumps/seed-2-scaled.iptables-save");
    let state = seed("1-clusterip");
    let args = [
        "check",
        "--rules",
        dump.to_str().unwrap(),
        &state,
        "--color",
        "always",
    ];
    let r = kproxy(&args, &[]);
    assert_eq!(r.code, Some(1), "drift: {}", r.stderr);
    assert!(
        r.stdout
            .contains("\x1b[1mIPv4 rules (iptables mode): DRIFT\x1b[0m"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("\x1b[32m+ #2 -A KUBE-SVC-"),
        "{}",
        r.stdout
    );
    let r = kproxy(
        &args[..args.len() - 2],
        &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")],
    );
    assert!(!r.stdout.contains(ESC), "{}", r.stdout);

    let lb = seed("4-loadbalancer");
    let trace = [
        "trace",
        "--from",
        "external",
        "--src",
        "203.0.113.7",
        "--dst",
        "104.199.232.159:80",
        &lb,
    ];
    let r = kproxy(&[&trace[..], &["--color", "always"]].concat(), &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("\x1b[1mtcp 203.0.113.7 -> 104.199.232.159:80"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("\x1b[1m1. 100.00% (1) to endpoint 10.76.0.9:9376"),
        "{}",
        r.stdout
    );
    assert!(!kproxy(&trace, &[]).stdout.contains(ESC));
}

#[test]
fn kubectl_plugin_name() {
    let dir = scratch("plugin");
    let plugin = dir.join("kubectl-kproxy");
    std::os::unix::fs::symlink(kproxy_tests::kproxy_binary(), &plugin).unwrap();
    let r = run_as(&plugin, &["--help"], &[]);
    assert_eq!(r.code, Some(0));
    assert!(
        r.stdout
            .contains("Usage: kubectl kproxy [OPTIONS] <COMMAND>"),
        "{}",
        r.stdout
    );
    let r = run_as(&plugin, &["check", "--help"], &[]);
    assert!(
        r.stdout.contains("Usage: kubectl kproxy check "),
        "{}",
        r.stdout
    );
    let r = run_as(&plugin, &["compile"], &[]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("kubectl kproxy compile"), "{}", r.stderr);
    let r = kproxy(&["--help"], &[]);
    assert!(
        r.stdout.contains("Usage: kproxy [OPTIONS] <COMMAND>"),
        "{}",
        r.stdout
    );
    for sub in [
        "compile",
        "trace",
        "graph",
        "diff",
        "check",
        "run",
        "cleanup",
        "completions",
        "man",
    ] {
        assert!(
            r.stdout.contains(&format!("\n  {sub} ")),
            "{sub}: {}",
            r.stdout
        );
    }
}

#[test]
fn completions_load_in_bash() {
    let bin = kproxy_tests::kproxy_binary();
    let out = Command::new("bash")
        .args([
            "-c",
            "source <(\"$0\" completions bash) && complete -p kproxy",
        ])
        .arg(bin)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("-F _kproxy kproxy"), "{stdout}");
    for shell in ["zsh", "fish", "powershell"] {
        let r = kproxy(&["completions", shell], &[]);
        assert_eq!(r.code, Some(0), "{shell}: {}", r.stderr);
        assert!(
            r.stdout.contains("kproxy") && r.stdout.contains("compile"),
            "{shell}"
        );
    }
    let r = kproxy(&["completions", "tcsh"], &[]);
    assert_eq!(r.code, Some(2));
}

#[test]
fn man_pages_and_version() {
    let r = kproxy(&["man"], &[]);
    assert!(r.stdout.contains(".TH kproxy 1"), "{}", r.stdout);
    let r = kproxy(&["man", "diff"], &[]);
    assert!(r.stdout.contains(".TH kproxy-diff 1"), "{}", r.stdout);
    let dir = scratch("man");
    let r = kproxy(&["man", "--dir", dir.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(dir.join("kproxy.1").exists() && dir.join("kproxy-check.1").exists());

    let r = kproxy(&["--version"], &[]);
    let first = r.stdout.lines().next().unwrap_or_default().to_string();
    let commit = first
        .strip_prefix(&format!("kproxy {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{first}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    assert!(r.stdout.contains(kproxy_core::profile::IPTABLES_SUPPORTED));
    assert!(r.stdout.contains(kproxy_core::profile::NFTABLES_SUPPORTED));
    assert_eq!(kproxy(&["-V"], &[]).stdout, format!("{first}\n"));
}

/// kube-proxy's ConfigMap as `kubectl get cm kube-proxy -n kube-system -o
/// yaml` prints it.
const CONFIGMAP: &str = r#"apiVersion: v1
data:
  config.conf: |-
    apiVersion: kubeproxy.config.k8s.io/v1alpha1
    bindAddress: 0.0.0.0
    clusterCIDR: 10.76.0.0/14
    hostnameOverride: gke-kube-sandbox-default-pool-88bb8656-26d1
    kind: KubeProxyConfiguration
    mode: nftables
    nftables:
      masqueradeBit: 16
  kubeconfig.conf: |-
    apiVersion: v1
    kind: Config
    clusters:
    - cluster:
        certificate-authority: /var/lib/kube-proxy/ca.crt
        server: https://10.140.0.1:6443
      name: default
kind: ConfigMap
metadata:
  annotations:
    kubeadm.kubernetes.io/component-config.hash: sha256:5a8d1f
  creationTimestamp: "2017-02-02T10:11:12Z"
  labels:
    app: kube-proxy
  name: kube-proxy
  namespace: kube-system
  resourceVersion: "231"
  uid: 9c0b8a4e-5a4b-4f7e-9b1e-0d7c9d1f2a3b
"#;

#[test]
fn a_kubectl_printed_configmap_is_the_configuration() {
    let dir = scratch("configmap");
    let cm = dir.join("kube-proxy-cm.yaml");
    std::fs::write(&cm, CONFIGMAP).unwrap();
    let conf = dir.join("config.conf");
    let text: String = CONFIGMAP
        .split("config.conf: |-\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    std::fs::write(&conf, text).unwrap();
    let lb = seed("4-loadbalancer");
    let objects: Vec<String> = ["service.yaml", "endpoints.yaml", "node.yaml"]
        .iter()
        .map(|f| format!("{lb}/{f}"))
        .collect();
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    let with_cm = kproxy(
        &[&["compile", cm.to_str().unwrap()][..], &objects].concat(),
        &[],
    );
    assert_eq!(with_cm.code, Some(0), "{}", with_cm.stderr);
    assert!(
        !with_cm.stderr.contains("ignoring ConfigMap"),
        "{}",
        with_cm.stderr
    );
    let with_config = kproxy(
        &[
            &["compile", "--config", conf.to_str().unwrap()][..],
            &objects,
        ]
        .concat(),
        &[],
    );
    assert_eq!(with_cm.stdout, with_config.stdout);
    // The mode, the masquerade bit, the cluster CIDR and the node it carries.
    let out = &with_cm.stdout;
    assert!(out.starts_with("add table ip kube-proxy"), "{out}");
    assert!(out.contains("mark set mark or 0x00010000"), "{out}");
    assert!(out.contains("ip saddr != 10.76.0.0/14"), "{out}");
    assert!(out.contains("10.76.0.9 . 9376"), "{out}");
}
