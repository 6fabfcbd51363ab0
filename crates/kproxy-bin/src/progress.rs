//! Progress on stderr for the stages that can take seconds at a real
//! node's scale (reading and parsing inputs, compiling, loading, checking):
//! a bar with a rate and an ETA when the total is known, else a spinner with
//! the elapsed time. Drawn only when stderr is a terminal and `--quiet` is
//! not given; cleared when the stage ends, so output and warnings are as
//! without it.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Turns progress off for the rest of the process (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn enabled() -> bool {
    !QUIET.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

/// Every stage drawn at the moment, one line each: stages run at once on
/// several threads (`kproxy diff` reads and compiles both sides at once).
fn lines() -> &'static MultiProgress {
    static LINES: OnceLock<MultiProgress> = OnceLock::new();
    LINES.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)))
}

/// One stage's progress; cleared when finished or dropped.
#[derive(Debug)]
pub struct Stage(Option<ProgressBar>);

impl Stage {
    fn new(bar: impl FnOnce() -> ProgressBar) -> Stage {
        if !enabled() {
            return Stage(None);
        }
        let bar = lines().add(bar());
        bar.enable_steady_tick(Duration::from_millis(250));
        Stage(Some(bar))
    }

    /// A stage of `total` bytes (input read and parsed): bytes done, rate, ETA.
    pub fn bytes(what: &str, total: u64) -> Stage {
        Stage::new(|| {
            ProgressBar::new(total)
                .with_style(style(
                    "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
                ))
                .with_message(what.to_string())
        })
    }

    /// A stage of `total` items (Services, packet classes...): count, rate, ETA.
    pub fn items(what: &str, total: u64) -> Stage {
        Stage::new(|| {
            ProgressBar::new(total)
                .with_style(style(
                    "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, ETA {eta})",
                ))
                .with_message(what.to_string())
        })
    }

    /// A stage of unknown length: a spinner and the elapsed time.
    pub fn spinner(what: &str) -> Stage {
        Stage::new(|| {
            ProgressBar::no_length()
                .with_style(style("{spinner} {msg} ({elapsed})"))
                .with_message(what.to_string())
        })
    }

    /// `n` more bytes or items done.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// What is being done now (a file name...).
    pub fn set_message(&self, what: &str) {
        if let Some(b) = &self.0 {
            b.set_message(what.to_string());
        }
    }

    /// Whether anything is drawn (stderr is a terminal, no `--quiet`).
    pub fn is_drawn(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
            lines().remove(b);
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_valid() {
        for t in [
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
            "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, ETA {eta})",
            "{spinner} {msg} ({elapsed})",
        ] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn nothing_is_drawn_when_quiet_or_not_a_terminal() {
        // Under `cargo test` stderr is captured (not a terminal); `--quiet`
        // turns it off even on a terminal.
        set_quiet(true);
        let s = Stage::bytes("parsing", 100);
        s.inc(50);
        s.set_message("x");
        assert!(!s.is_drawn());
        set_quiet(false);
    }
}
