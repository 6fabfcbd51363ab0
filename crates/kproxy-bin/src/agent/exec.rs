//! Running the node's tools (`iptables-restore`, `iptables`, `nft`,
//! `nfacct`, `conntrack`), and reading their errors.
//!
//! Prompt shutdown: each tool runs in a process group of its own, known
//! while it runs; [`stop_all`] kills them all and refuses to start more,
//! so that the agent stops within a second even during a long
//! `iptables-restore` (the kernel keeps the rules of the last committed
//! transaction: both tools commit atomically).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The tools running now, and whether the agent is stopping.
#[derive(Debug)]
struct Running {
    stopping: bool,
    /// Process (and process group) ids.
    pids: Vec<u32>,
}

static RUNNING: Mutex<Running> = Mutex::new(Running {
    stopping: false,
    pids: Vec::new(),
});

fn running() -> std::sync::MutexGuard<'static, Running> {
    // A panic while holding the lock leaves consistent data.
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills every tool running now (their whole process groups) and makes
/// every later [`run`] fail at once: the agent is stopping.
pub fn stop_all() {
    let mut r = running();
    r.stopping = true;
    for pid in r.pids.drain(..) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) of a process group we created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// Whether [`stop_all`] was called.
pub fn stopping() -> bool {
    running().stopping
}

/// Starts a thread that waits for `stop` (set by a signal handler), then
/// kills the running tools ([`stop_all`]) and, if the process is still
/// there after `grace` (busy compiling: nothing of it reaches the node),
/// exits with status 0. The rules stay as the last committed sync left
/// them.
pub fn spawn_stop_watchdog(stop: &'static AtomicBool, grace: Duration) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop_all();
        std::thread::sleep(grace);
        tracing::info!("kproxy run stopping now (rules stay in place)");
        std::process::exit(0);
    });
}

/// A failed tool run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {message}")]
pub struct ToolError {
    /// The command line.
    pub command: String,
    /// Its stderr (or why it could not start).
    pub message: String,
}

/// Finds a tool in PATH or the sbin directories.
pub fn tool_path(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs `program args` with `stdin`, returning stdout.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ToolError> {
    let command = format!("{program} {}", args.join(" "));
    let err = |message: String| ToolError {
        command: command.clone(),
        message,
    };
    let mut child = {
        let mut r = running();
        if r.stopping {
            return Err(err("not started: kproxy is stopping".into()));
        }
        let child = Command::new(tool_path(program))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| err(e.to_string()))?;
        r.pids.push(child.id());
        child
    };
    let pid = child.id();
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that fails early (or is stopped) closes its stdin: its
        // stderr says why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output();
    let stopped = {
        let mut r = running();
        r.pids.retain(|p| *p != pid);
        r.stopping
    };
    let out = out.map_err(|e| err(e.to_string()))?;
    if stopped && !out.status.success() {
        return Err(err("stopped: kproxy is stopping".into()));
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if message.is_empty() {
            message = format!("exited with {}", out.status);
        }
        Err(err(message))
    }
}
