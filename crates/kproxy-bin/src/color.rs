//! `--color auto|always|never` of `diff`, `check` and `trace`: added lines
//! green, removed lines red, headings bold.
//!
//! The commands render plain text; [`paint`] styles it line by line from
//! the shape the renderers give every line (`+ ` added, `- ` removed,
//! unindented lines are headings). `auto` colours only when the binary's
//! standard output is a terminal, as anstream (clap's own) decides it:
//! `NO_COLOR` (set and not empty) turns colour off, `CLICOLOR_FORCE`
//! turns it on, `TERM=dumb` off. The flag wins over the environment. The
//! terminal is looked at only when `main` calls [`detect_terminal`], so
//! in-process callers (tests, embedders) get plain text from `auto`.

use std::sync::atomic::{AtomicBool, Ordering};

use anstyle::{AnsiColor, Style};
use clap::{Args, ValueEnum};

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    /// Always (even into a pipe, and despite NO_COLOR).
    Always,
    /// Never.
    Never,
}

/// The `--color` option.
#[derive(Args, Debug, Clone, Default)]
pub struct ColorArgs {
    /// Colour the text output (added green, removed red, headings bold):
    /// auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(help_heading = "Output", long = "color", value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub when: ColorWhen,
}

/// Whether `auto` colours (set by [`detect_terminal`]).
static AUTO: AtomicBool = AtomicBool::new(false);

/// Lets `auto` colour when the process's standard output is a colour
/// terminal by anstream's rules (`NO_COLOR`, `CLICOLOR_FORCE`, `TERM`).
/// Called once by `main`.
pub fn detect_terminal() {
    let on = !matches!(
        anstream::AutoStream::choice(&std::io::stdout()),
        anstream::ColorChoice::Never
    );
    AUTO.store(on, Ordering::Relaxed);
}

/// Whether to colour.
pub fn enabled(when: ColorWhen) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => AUTO.load(Ordering::Relaxed),
    }
}

/// The style of one line of rendered text.
fn style_of(line: &str) -> Style {
    let body = line.trim_start();
    if body.is_empty() {
        Style::new()
    } else if body.starts_with("+ ") {
        Style::new().fg_color(Some(AnsiColor::Green.into()))
    } else if body.starts_with("- ") {
        Style::new().fg_color(Some(AnsiColor::Red.into()))
    } else if body.len() == line.len() {
        Style::new().bold()
    } else {
        Style::new()
    }
}

/// `text`, styled when `when` says so (else unchanged).
///
/// ```
/// use kproxy_bin::color::{ColorWhen, paint};
/// let text = "service default/web:\n  + #1 -A X\n  - #1 -A Y\n".to_string();
/// assert_eq!(paint(text.clone(), ColorWhen::Never), text);
/// assert_eq!(
///     paint(text, ColorWhen::Always),
///     "\x1b[1mservice default/web:\x1b[0m\n  \x1b[32m+ #1 -A X\x1b[0m\n  \x1b[31m- #1 -A Y\x1b[0m\n"
/// );
/// ```
pub fn paint(text: String, when: ColorWhen) -> String {
    if !enabled(when) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let (content, nl) = match line.strip_suffix('\n') {
            Some(c) => (c, "\n"),
            None => (line, ""),
        };
        let style = style_of(content);
        if style == Style::new() {
            out.push_str(line);
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        out.push_str(&content[..indent]);
        out.push_str(&format!("{style}{}{style:#}{nl}", &content[indent..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles() {
        assert_eq!(style_of(""), Style::new());
        assert_eq!(
            style_of("    + #2 -A X"),
            Style::new().fg_color(Some(AnsiColor::Green.into()))
        );
        assert_eq!(
            style_of("- x"),
            Style::new().fg_color(Some(AnsiColor::Red.into()))
        );
        assert_eq!(style_of("summary: chains: 1 added"), Style::new().bold());
        assert_eq!(style_of("   prerouting nat X"), Style::new());
        // `-A` rules are not removals; `+1` is not an addition.
        assert_eq!(style_of("  -A KUBE-X"), Style::new());
        assert_eq!(style_of("  +1"), Style::new());
        assert_eq!(paint("a".into(), ColorWhen::Auto), "a");
    }
}
