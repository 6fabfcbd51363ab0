//! Running the node's tools (`iptables-restore`, `iptables`, `nft`,
//! `nfacct`, `conntrack`), and reading their errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    let mut child = Command::new(tool_path(program))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that fails early closes its stdin: its stderr says why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
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

/// The line number an `iptables-restore` or `nft -f` error names
/// (`line 12 failed`, `line 12:`, `-:12:`), 1-based.
pub fn error_line(message: &str) -> Option<usize> {
    let digits = |s: &str| -> Option<usize> {
        let n: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        n.parse().ok()
    };
    for (i, _) in message.match_indices("line") {
        let rest = message[i + 4..].trim_start_matches([':', ' ']);
        if let Some(n) = digits(rest) {
            return Some(n);
        }
    }
    // nft: "/dev/stdin:12:1-5: Error: ..." or "-:12:..."
    for part in message.split(':').skip(1) {
        if let Some(n) = digits(part)
            && part.chars().all(|c| c.is_ascii_digit())
        {
            return Some(n);
        }
    }
    None
}

/// The text of line `n` (1-based) of `payload`.
pub fn payload_line(payload: &str, n: usize) -> Option<&str> {
    n.checked_sub(1).and_then(|i| payload.lines().nth(i))
}

/// Chain names in `iptables-save` output (`:NAME POLICY [x:y]` lines).
pub fn saved_chains(save: &str) -> Vec<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines() {
        assert_eq!(error_line("iptables-restore: line 7 failed"), Some(7));
        assert_eq!(
            error_line("iptables-restore v1.8.9 (nf_tables): line 3: CHAIN_USER_DEL failed"),
            Some(3)
        );
        assert_eq!(
            error_line("/dev/stdin:4:1-3: Error: Could not process rule"),
            Some(4)
        );
        assert_eq!(
            error_line("v1.8.9 (nf_tables): Chain 'X' does not exist\nError occurred at line: 59"),
            Some(59)
        );
        assert_eq!(error_line("nothing here"), None);
        assert_eq!(payload_line("a\nb\nc\n", 2), Some("b"));
        assert_eq!(
            saved_chains("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\n-A X\n"),
            vec!["PREROUTING", "KUBE-SVC-X"]
        );
    }
}
