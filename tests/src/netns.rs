//! A named network namespace for the kernel tests (`ip netns add`, as
//! root), deleted on drop: `nft` run inside it, or a closure on a thread
//! that entered it (netlink sockets opened there talk to its nf_tables).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Whether `cmd ARGS` runs and succeeds (its output discarded).
pub fn tool_ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns(String);

impl Netns {
    /// A new namespace named `PREFIX-PID-N`.
    pub fn new(prefix: &str) -> Self {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        assert!(
            tool_ok("ip", &["netns", "add", &name]),
            "ip netns add {name} failed"
        );
        Netns(name)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Runs `nft ARGS` in the namespace with `input` on stdin: its stdout,
    /// or its stderr when it fails.
    pub fn nft(&self, args: &[&str], input: &str) -> Result<String, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("open netns");
                use std::os::fd::AsRawFd;
                // SAFETY: setns on this thread only, with a namespace fd we own.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}");
                f()
            })
            .join()
            .expect("netns thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = tool_ok("ip", &["netns", "del", &self.0]);
    }
}

/// Whether a kernel test that needs root, `nft` and `ip netns` must be
/// skipped here: prints `SKIPPED TEST: why` and returns true; fails under
/// `CI=true` instead (a skip in CI is a failure).
pub fn skip_without_nft(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let why = if !root {
        Some("not running as root")
    } else if !tool_ok("nft", &["--version"]) {
        Some("`nft` is not installed (apt-get install -y nftables)")
    } else if !tool_ok("ip", &["netns", "list"]) {
        Some("`ip netns` is not available")
    } else {
        None
    };
    if let Some(why) = why {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} cannot run under CI=true: {why}"
        );
        println!("SKIPPED {test}: {why}");
        return true;
    }
    false
}

/// `"handle": N` removed from an `nft -j` listing (pretty-printed).
pub fn without_handles(json: &str) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(json).expect("nft -j output");
    strip(&mut v);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}
