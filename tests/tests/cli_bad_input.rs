//! Bad input to the real `kproxy` binary: exit status, one-line messages on
//! stderr that name the file, the object (`namespace/name`) and the field,
//! and never a panic.
//!
//! Finding the binary: `CARGO_BIN_EXE_kproxy` exists only for the tests of
//! the package that defines the binary (kproxy-bin), and this crate only
//! links kproxy-bin as a library, so cargo does not build the binary for
//! these tests. The tests therefore run `cargo build -p kproxy-bin --bin
//! kproxy` once per test process (with the `cargo` that runs the tests,
//! `env!("CARGO")`; a no-op when the binary is fresh, and safe because cargo
//! releases the build lock before it runs tests) and use the binary next to
//! the test executable's `deps/` directory, i.e. in the same target
//! directory and profile. `KPROXY_BIN=/path/to/kproxy` overrides all this
//! (e.g. to test an installed binary).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kproxy_tests::{Scratch, compile};

fn kproxy_bin() -> &'static Path {
    kproxy_tests::kproxy_binary()
}

/// A scratch directory for one test's input files, removed on drop.
fn scratch(test: &str) -> Scratch {
    Scratch::new("kproxy-cli", test)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn kproxy(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(kproxy_bin())
        .args(args)
        .env_remove("KPROXY_LOG")
        .output()
        .expect("run kproxy");
    let run = Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "kproxy panicked: {}",
        run.stderr
    );
    run
}

/// The `kproxy: error: ...` line of a failed run: exit status 2, nothing on
/// stdout, exactly one line on stderr.
fn error_line(run: &Run) -> &str {
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line on stderr, got {lines:?}");
    lines[0]
        .strip_prefix("kproxy: error: ")
        .unwrap_or_else(|| panic!("not a kproxy error line: {:?}", lines[0]))
}

/// The warning lines of a successful run (exit 0, rules on stdout).
fn warning_lines(run: &Run) -> Vec<&str> {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(
        run.stdout.starts_with("*filter\n"),
        "stdout: {}",
        run.stdout
    );
    run.stderr
        .lines()
        .map(|l| {
            l.strip_prefix("kproxy: warning: ")
                .unwrap_or_else(|| panic!("not a kproxy warning line: {l:?}"))
        })
        .collect()
}

/// Asserts `line` names the file, the object and the field.
fn names_all(line: &str, file: &Path, object: &str, field: &str) {
    let file = file.display().to_string();
    assert!(
        line.contains(&file),
        "{line:?} does not name the file {file}"
    );
    assert!(
        line.contains(object),
        "{line:?} does not name the object {object}"
    );
    assert!(
        line.contains(field),
        "{line:?} does not name the field {field}"
    );
}

const GOOD: &str = "apiVersion: v1
kind: Service
metadata: {name: good, namespace: shop}
spec:
  clusterIP: 10.0.0.5
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: good-1, namespace: shop, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.1.0.5], nodeName: n1}]
";

fn service(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
    )
}

#[test]
fn unparsable_yaml_is_an_error() {
    let dir = scratch("unparsable");
    let f = write(
        &dir,
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop\nspec: [\n",
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let line = error_line(&run);
    // No object can be named: the text is not YAML. The file and the
    // position are.
    assert!(line.starts_with(&format!("{}: ", f.display())), "{line}");
    assert!(line.contains("line 4"), "{line}");
}

#[test]
fn invalid_cluster_ip_skips_the_service() {
    let dir = scratch("clusterip");
    let f = write(
        &dir,
        "svc.yaml",
        &format!(
            "{}---\n{GOOD}",
            service(
                "web",
                "{clusterIP: 10.0.0.300, ports: [{name: http, port: 80}]}"
            )
        ),
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let warnings = warning_lines(&run);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    names_all(warnings[0], &f, "Service shop/web", "spec.clusterIP");
    assert!(warnings[0].contains("10.0.0.300"), "{}", warnings[0]);
    assert!(!run.stdout.contains("shop/web"));
    assert!(run.stdout.contains("\"shop/good:http cluster IP\""));
}

#[test]
fn invalid_external_ip_is_dropped_with_a_warning() {
    let dir = scratch("externalip");
    let f = write(
        &dir,
        "svc.yaml",
        &service(
            "web",
            "{clusterIP: 10.0.0.3, externalIPs: [192.0.2.1, not-an-ip], ports: [{name: http, port: 80}]}",
        ),
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let warnings = warning_lines(&run);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    names_all(warnings[0], &f, "Service shop/web", "spec.externalIPs[1]");
    // The Service itself is kept (no endpoints: REJECT), the valid external
    // IP too.
    assert!(run.stdout.contains(
        "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"shop/web:http has no endpoints\" -m tcp -p tcp -d 192.0.2.1 --dport 80 -j REJECT"
    ));
}

#[test]
fn port_out_of_range_skips_the_service() {
    let dir = scratch("port70000");
    let f = write(
        &dir,
        "svc.yaml",
        &format!(
            "{}---\n{GOOD}",
            service(
                "web",
                "{clusterIP: 10.0.0.3, ports: [{name: http, port: 70000}]}"
            )
        ),
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let warnings = warning_lines(&run);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    names_all(warnings[0], &f, "Service shop/web", "spec.ports[0].port");
    assert!(warnings[0].contains("70000"));
    assert!(!run.stdout.contains("shop/web"));
    assert!(run.stdout.contains("shop/good:http"));
}

#[test]
fn duplicate_port_names_skip_the_service() {
    let dir = scratch("dupnames");
    let f = write(
        &dir,
        "svc.yaml",
        &service(
            "web",
            "{clusterIP: 10.0.0.3, ports: [{name: http, port: 80}, {name: http, port: 81, protocol: UDP}]}",
        ),
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let warnings = warning_lines(&run);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    names_all(warnings[0], &f, "Service shop/web", "spec.ports[1].name");
    assert!(!run.stdout.contains("shop/web"));
}

#[test]
fn port_without_protocol_defaults_to_tcp() {
    let dir = scratch("noproto");
    let f = write(
        &dir,
        "svc.yaml",
        "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.0.0.3, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.1.0.1]}]
",
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    assert!(warning_lines(&run).is_empty(), "{}", run.stderr);
    assert!(run.stdout.contains(
        "-A KUBE-SERVICES -m comment --comment \"shop/web:http cluster IP\" -m tcp -p tcp -d 10.0.0.3 --dport 80 -j KUBE-SVC-"
    ));
    assert!(
        run.stdout
            .contains("-m tcp -p tcp -j DNAT --to-destination 10.1.0.1:8080")
    );
}

#[test]
fn endpoint_of_the_wrong_family_is_dropped_with_a_warning() {
    let dir = scratch("family");
    let f = write(
        &dir,
        "svc.yaml",
        "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.0.0.3, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [\"fd00::1\"]}, {addresses: [10.1.0.2]}]
",
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let warnings = warning_lines(&run);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    names_all(
        warnings[0],
        &f,
        "EndpointSlice shop/web-1",
        "endpoints[0].addresses[0]",
    );
    assert!(run.stdout.contains("--to-destination 10.1.0.2:8080"));
    assert!(!run.stdout.contains("fd00::1"));
}

#[test]
fn missing_file_is_an_error() {
    let dir = scratch("missing");
    let f = dir.join("nope.yaml");
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let line = error_line(&run);
    assert!(line.starts_with(&format!("{}: ", f.display())), "{line}");
    assert!(line.contains("no such file"), "{line}");
}

#[test]
fn unknown_backend_is_an_error() {
    let dir = scratch("backend");
    let f = write(&dir, "svc.yaml", GOOD);
    let run = kproxy(&[
        "compile",
        "--hostname-override=n1",
        "--backend=ipvs",
        f.to_str().unwrap(),
    ]);
    let line = error_line(&run);
    assert!(
        line.contains("--backend") && line.contains("ipvs"),
        "{line}"
    );
}

#[test]
fn bad_cluster_cidr_is_an_error() {
    let dir = scratch("cidr");
    let f = write(&dir, "svc.yaml", GOOD);
    for bad in ["10.0.0.0/33", "banana", "10.0.0.0/8,,x"] {
        let run = kproxy(&[
            "compile",
            "--hostname-override=n1",
            &format!("--cluster-cidr={bad}"),
            f.to_str().unwrap(),
        ]);
        let line = error_line(&run);
        assert!(line.starts_with("--cluster-cidr: "), "{line}");
    }
}

#[test]
fn invalid_object_beside_a_valid_one_is_skipped() {
    let dir = scratch("mixed");
    let f = write(
        &dir,
        "svc.yaml",
        &format!(
            "{}---\n{GOOD}",
            service(
                "bad",
                "{clusterIP: 10.0.0.4, ports: [{name: http, port: 0}]}"
            )
        ),
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let warnings = warning_lines(&run);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    names_all(warnings[0], &f, "Service shop/bad", "spec.ports[0].port");
    assert!(!run.stdout.contains("shop/bad"));
    assert!(run.stdout.contains("--to-destination 10.1.0.5:8080"));
}

/// An object whose fields have the wrong *type* (not just a bad value) is
/// not skipped: the run fails, naming file, document, object and field.
/// (This is kproxy's current rule, "unparsable documents are errors"; see
/// the report: it differs from the value-level errors above, which skip.)
#[test]
fn wrongly_typed_object_is_an_error_naming_the_field() {
    let dir = scratch("typed");
    let f = write(
        &dir,
        "svc.yaml",
        &format!(
            "{}---\n{GOOD}",
            service(
                "bad",
                "{clusterIP: 10.0.0.4, ports: [{name: http, port: eighty}]}"
            )
        ),
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    let line = error_line(&run);
    names_all(line, &f, "Service shop/bad", "spec.ports[0].port");
}

/// kube-proxy's boolean flags are plain switches (`--masquerade-all`); the
/// same spelling followed by a path must work with kproxy.
/// (The optional value of these flags needs `=`: `--masquerade-all=false`.)
#[test]
fn bare_boolean_switch_before_a_path() {
    let dir = scratch("switch");
    let f = write(&dir, "svc.yaml", GOOD);
    for flag in [
        "--masquerade-all",
        "--iptables-localhost-nodeports",
        "--conntrack-tcp-be-liberal",
    ] {
        let run = kproxy(&[
            "compile",
            "--hostname-override=n1",
            flag,
            f.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(0), "{flag}: {}", run.stderr);
    }
}

/// The same messages in-process (`kproxy_bin::compile::run`), for the
/// cases that are errors.
#[test]
fn in_process_error_texts() {
    let dir = scratch("inproc");
    let missing = dir.join("nope.yaml");
    let err = compile(&["--hostname-override=n1".into()], &[&missing]).unwrap_err();
    assert_eq!(
        err,
        format!("{}: no such file or directory", missing.display())
    );

    let good = write(&dir, "good.yaml", GOOD);
    let err = compile(&["--backend=ipvs".into()], &[&good]).unwrap_err();
    // The list of known backends grows; the start is stable.
    assert!(
        err.starts_with("--backend: unknown backend \"ipvs\""),
        "{err}"
    );
    let err = compile(&["--cluster-cidr=10.0.0.0/33".into()], &[&good]).unwrap_err();
    assert_eq!(err, "--cluster-cidr: \"10.0.0.0/33\" is not a valid CIDR");
    let err = compile(&["--iptables-masquerade-bit=32".into()], &[&good]).unwrap_err();
    assert_eq!(err, "masqueradeBit 32 is out of range 0-31");

    let (_, warnings) = compile(
        &["--hostname-override=n1".into()],
        &[&write(
            &dir,
            "p.yaml",
            &service(
                "web",
                "{clusterIP: 10.0.0.3, ports: [{name: http, port: 70000}]}",
            ),
        )],
    )
    .unwrap();
    assert_eq!(
        warnings,
        [format!(
            "{}: Service shop/web: spec.ports[0].port: 70000 is out of range 1-65535",
            dir.join("p.yaml").display()
        )]
    );
}

/// A Service manifest with `metadata` given as flow-mapping text.
fn service_meta(meta: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {meta}\nspec: {spec}\n")
}

/// Names the API server refuses (issue 14: each of them once stopped every
/// sync of a node): the object is skipped with one warning line naming the
/// file, the object (escaped) and the field; the rest compiles, exit 0,
/// for every backend (the payloads load: `kernel_bad_names.rs`).
#[test]
fn names_the_api_server_refuses_skip_the_object() {
    let dir = scratch("badnames");
    let long_ns = "n".repeat(1000);
    let lb = "{type: LoadBalancer, clusterIP: 10.0.0.7, ports: [{name: http, port: 80, nodePort: 30080}]}";
    let cip = "{clusterIP: 10.0.0.8, ports: [{name: http, port: 80}]}";
    let cases: [(&str, String, &str, &str); 6] = [
        (
            "quote",
            service_meta(r#"{name: web, namespace: 'sh"op'}"#, cip),
            r#"Service sh\"op/web"#,
            "metadata.namespace",
        ),
        (
            "dollar",
            service_meta("{name: 'lb$1', namespace: shop}", lb),
            "Service shop/lb$1",
            "metadata.name",
        ),
        (
            "long",
            service_meta(&format!("{{name: web, namespace: {long_ns}}}"), cip),
            "(1004 bytes)",
            "metadata.namespace: \"nnnn",
        ),
        (
            "newline",
            service_meta(r#"{name: "a\nb", namespace: shop}"#, cip),
            r"Service shop/a\nb",
            "metadata.name",
        ),
        (
            "portname",
            service("web", "{clusterIP: 10.0.0.9, ports: [{name: 'http\"x', port: 80}]}"),
            "Service shop/web",
            "spec.ports[0].name",
        ),
        (
            "slicelabel",
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: good-2, namespace: shop, labels: {kubernetes.io/service-name: \"go od\"}}\naddressType: IPv4\nendpoints: [{addresses: [10.1.0.6]}]\n".to_string(),
            "EndpointSlice shop/good-2",
            "metadata.labels[kubernetes.io/service-name]",
        ),
    ];
    for (case, bad, object, field) in cases {
        let f = write(&dir, &format!("{case}.yaml"), &format!("{bad}---\n{GOOD}"));
        for backend in ["iptables", "nftables", "nftables-json"] {
            let run = kproxy(&[
                "compile",
                "--hostname-override=n1",
                "--backend",
                backend,
                f.to_str().unwrap(),
            ]);
            assert_eq!(run.code, Some(0), "{case} {backend}: {}", run.stderr);
            let warnings: Vec<&str> = run.stderr.lines().collect();
            assert_eq!(warnings.len(), 1, "{case} {backend}: {warnings:?}");
            names_all(warnings[0], &f, object, field);
            assert!(
                warnings[0].starts_with("kproxy: warning: ") && warnings[0].len() < 1000,
                "{case}: {}",
                warnings[0]
            );
            assert!(
                run.stdout.contains("10.1.0.5"),
                "{case} {backend}: the good Service"
            );
            for bad_text in [
                "sh\"op", "lb$1", "a\nb", "http\"x", "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.1.0.6",
            ] {
                assert!(
                    !run.stdout.contains(bad_text),
                    "{case} {backend}: {bad_text:?} written"
                );
            }
            assert!(!run.stdout.contains(&long_ns));
        }
    }
}

/// The YAML reader's limits and rules, in words about the input (not the
/// library's API), naming the position or the field; input text echoed
/// escaped.
#[test]
fn reader_limits_and_rules_are_explained() {
    let dir = scratch("reader");
    let deep: String = (0..300)
        .map(|i| format!("{}a{i}:\n", "  ".repeat(i)))
        .collect();
    let aliases = {
        let mut t = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            let refs = vec![format!("*{prev}"); 10].join(", ");
            t.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        t
    };
    let cases: [(&str, String, &[&str], &[&str]); 4] = [
        (
            "deep",
            deep,
            &["line 257", "nested too deeply"],
            &["Depth", "budget"],
        ),
        (
            "aliases",
            aliases,
            &["line 6", "alias"],
            &["budget", "{", "Options"],
        ),
        (
            "dup",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, name: other}\n".into(),
            &["line 3", "duplicate key \"name\""],
            &["DuplicateKeyPolicy", "Options"],
        ),
        (
            "huge",
            service(
                "web",
                "{clusterIP: 10.0.0.3, ports: [{name: http, port: 1e999}]}",
            ),
            &["Service shop/web", "spec.ports[0].port", "too large"],
            &["non-finite float"],
        ),
    ];
    for (case, text, want, never) in cases {
        let f = write(&dir, &format!("{case}.yaml"), &text);
        let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
        let line = error_line(&run);
        assert!(
            line.starts_with(&format!("{}: ", f.display())),
            "{case}: {line}"
        );
        for w in want {
            assert!(line.contains(w), "{case}: {line:?} lacks {w:?}");
        }
        for n in never {
            assert!(!line.contains(n), "{case}: {line:?} has {n:?}");
        }
    }
    // A kind with a newline, in an object that does not deserialise.
    let f = write(
        &dir,
        "kind.yaml",
        "apiVersion: v1\nkind: \"Ser\\nvice\"\nmetadata: {name: \"x\\ny\"}\n",
    );
    let run = kproxy(&["compile", "--hostname-override=n1", f.to_str().unwrap()]);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(r"Ser\nvice") && run.stderr.contains(r"x\ny"),
        "{}",
        run.stderr
    );
}

/// An iptables dump whose chains `C0..C{levels}` each go on to the next
/// twice: by a `--probability 0.5` rule and, with `double`, once more
/// unconditionally (2^levels or 4^levels walks).
fn fan_out_dump(levels: usize, double: bool) -> String {
    let mut s = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n");
    for i in 0..=levels {
        s.push_str(&format!(":C{i} - [0:0]\n"));
    }
    s.push_str("-A PREROUTING -j C0\n");
    for i in 0..levels {
        let next = i + 1;
        s.push_str(&format!(
            "-A C{i} -m statistic --mode random --probability 0.50000000000 -j C{next}\n"
        ));
        if double {
            s.push_str(&format!("-A C{i} -j C{next}\n"));
        }
    }
    s.push_str(&format!(
        "-A C{levels} -p tcp -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n"
    ));
    s
}

/// The campaign's fan-out dumps: every walk is counted (plain jumps too),
/// so `trace` and `check` finish, or stop with one "too many paths" line,
/// instead of exhausting memory (40 probability splits aborted `trace` on
/// a failed allocation; four double jumps made `check` take seconds).
#[test]
fn fan_out_dumps_are_bounded() {
    let dir = scratch("fan-out");
    let node = ["--hostname-override", "n1", "--node-address", "192.168.0.3"];
    let manifests = "../examples/seed-article/4-loadbalancer";

    let packet = [
        "--from",
        "external",
        "--src",
        "203.0.113.9",
        "--dst",
        "10.0.0.9:80",
    ];
    // 40 splits: 2^40 walks with one outcome each way, followed exactly.
    let splits = write(&dir, "splits.save", &fan_out_dump(40, false));
    let mut args = vec!["trace", "--rules", splits.to_str().unwrap()];
    args.extend(node);
    args.extend(packet);
    let run = kproxy(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("(1/1099511627776) to endpoint 10.0.0.1:80"),
        "{}",
        run.stdout
    );
    // 40 double splits: 4^40 walks, stopped.
    let doubles = write(&dir, "double40.save", &fan_out_dump(40, true));
    let mut args = vec!["trace", "--rules", doubles.to_str().unwrap()];
    args.extend(node);
    args.extend(packet);
    let line = error_line(&kproxy(&args)).to_string();
    assert!(line.contains("too many paths"), "{line}");

    let small = write(&dir, "double4.save", &fan_out_dump(4, true));
    let mut args = vec!["check", "--rules", small.to_str().unwrap()];
    args.extend(node);
    args.push(manifests);
    let run = kproxy(&args);
    assert_eq!(run.code, Some(1), "drift, found: {}", run.stderr);

    let big = write(&dir, "double8.save", &fan_out_dump(8, true));
    let mut args = vec!["check", "--rules", big.to_str().unwrap()];
    args.extend(node);
    args.push(manifests);
    let line = error_line(&kproxy(&args)).to_string();
    assert!(line.contains("too many paths"), "{line}");
}
