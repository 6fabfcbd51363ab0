//! Reading the node tools' text: which input line an error names, the
//! words of a printed rule.

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

/// Splits a printed rule into arguments (double quotes group words, as the
/// printer writes multi-word comments).
pub fn split_args(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        args.push(cur);
    }
    args
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
    }

    #[test]
    fn splits_quoted_words() {
        assert_eq!(
            split_args(" -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
            vec![
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES"
            ]
        );
        assert_eq!(
            split_args("--comment \"\" -j X"),
            vec!["--comment", "", "-j", "X"]
        );
    }
}
