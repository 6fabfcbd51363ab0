//! The command line as shells and kubectl see it: the `kubectl-kproxy`
//! plugin name, `kproxy completions SHELL` (clap_complete) and `kproxy man`
//! (clap_mangen), all generated from the clap definitions of [`Cli`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, FromArgMatches};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::compile::Output;

/// The name kubectl gives plugin executables (`kubectl kproxy` runs it).
pub const PLUGIN_EXECUTABLE: &str = "kubectl-kproxy";
/// How the plugin is invoked, as its help shows it.
pub const PLUGIN_COMMAND: &str = "kubectl kproxy";

/// Arguments of `kproxy completions`.
#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, powershell or elvish. E.g. `source <(kproxy
    /// completions bash)`, or write it to
    /// /etc/bash_completion.d/kproxy.
    #[arg(help_heading = "Input", value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of `kproxy man`.
#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// A subcommand's page (`kproxy man compile`) instead of the top page.
    #[arg(help_heading = "Input", value_name = "SUBCOMMAND")]
    pub command: Option<String>,
    /// Write every page (kproxy.1, kproxy-compile.1, ...) into this
    /// directory instead of printing one.
    #[arg(help_heading = "Output", long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Whether `argv0` is the plugin executable (`.../kubectl-kproxy`, also
/// with `.exe`).
///
/// ```
/// use std::ffi::OsStr;
/// assert!(kproxy_bin::shell::is_plugin(Some(OsStr::new("/usr/local/bin/kubectl-kproxy"))));
/// assert!(!kproxy_bin::shell::is_plugin(Some(OsStr::new("kproxy"))));
/// ```
pub fn is_plugin(argv0: Option<&OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_stem())
        .is_some_and(|s| s == PLUGIN_EXECUTABLE)
}

/// The clap command, with `kubectl kproxy` as its name in usage and help
/// when `argv0` is the plugin executable.
pub fn command(argv0: Option<&OsStr>) -> clap::Command {
    let cmd = Cli::command();
    if is_plugin(argv0) {
        cmd.bin_name(PLUGIN_COMMAND)
    } else {
        cmd
    }
}

/// Parses the process's arguments ([`command`] of its argv\[0\]; kube-proxy's
/// spellings as [`crate::cli::kube_proxy_args`] reads them); prints
/// help, version or the usage error and exits as clap does.
pub fn parse() -> Cli {
    let args = crate::cli::kube_proxy_args(std::env::args_os());
    let matches = command(args.first().map(|a| a.as_os_str())).get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `kproxy completions SHELL`: the completion script for `kproxy` (for
/// `kubectl-kproxy` when run under that name).
pub fn completions(args: &CompletionsArgs) -> Result<Output> {
    let argv0 = std::env::args_os().next();
    let name = if is_plugin(argv0.as_deref()) {
        PLUGIN_EXECUTABLE
    } else {
        "kproxy"
    };
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), name, &mut buf);
    Ok(Output {
        stdout: String::from_utf8(buf).context("the completion script is not UTF-8")?,
        warnings: Vec::new(),
    })
}

/// `kproxy man [SUBCOMMAND] [--dir DIR]`: a roff man page (`kproxy man |
/// man -l -`), or every page into a directory.
pub fn man(args: &ManArgs) -> Result<Output> {
    let mut cmd = Cli::command();
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        clap_mangen::generate_to(cmd, dir)
            .with_context(|| format!("{}: cannot write the man pages", dir.display()))?;
        return Ok(Output::default());
    }
    cmd.build();
    let page = match &args.command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                let known: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                bail!("man: no subcommand {name:?} ({})", known.join(", "))
            }
        },
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .context("cannot render the man page")?;
    Ok(Output {
        stdout: String::from_utf8(buf).context("the man page is not UTF-8")?,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(cmd: clap::Command, args: &[&str]) -> String {
        match cmd.try_get_matches_from(args) {
            Err(e) => e.render().to_string(),
            Ok(_) => panic!("{args:?} is not a help request"),
        }
    }

    #[test]
    fn plugin_help_speaks_of_kubectl_kproxy() {
        let argv0 = OsStr::new("/usr/local/bin/kubectl-kproxy");
        let top = help(command(Some(argv0)), &["kubectl-kproxy", "--help"]);
        assert!(
            top.contains("Usage: kubectl kproxy [OPTIONS] <COMMAND>"),
            "{top}"
        );
        let sub = help(
            command(Some(argv0)),
            &["kubectl-kproxy", "compile", "--help"],
        );
        assert!(sub.contains("Usage: kubectl kproxy compile "), "{sub}");
        let plain = help(command(Some(OsStr::new("kproxy"))), &["kproxy", "--help"]);
        assert!(
            plain.contains("Usage: kproxy [OPTIONS] <COMMAND>"),
            "{plain}"
        );
    }

    #[test]
    fn the_summary_names_every_subcommand() {
        let cmd = Cli::command();
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        for sub in cmd.get_subcommands() {
            assert!(
                about.contains(sub.get_name()),
                "{} not in {about:?}",
                sub.get_name()
            );
        }
    }

    #[test]
    fn every_option_has_a_heading_and_every_subcommand_examples() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let name = sub.get_name();
            let examples = sub.get_after_help().map(|h| h.to_string());
            assert!(
                examples.is_some_and(|e| e.starts_with("Examples:\n  ")),
                "{name}: no examples"
            );
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "quiet", "version"].contains(&id) || arg.is_hide_set() {
                    continue;
                }
                assert!(
                    arg.get_help_heading().is_some(),
                    "{name} --{id}: no help heading"
                );
            }
        }
    }

    #[test]
    fn man_pages() {
        let top = man(&ManArgs {
            command: None,
            dir: None,
        })
        .unwrap()
        .stdout;
        assert!(
            top.starts_with(".ie") || top.contains(".TH kproxy"),
            "{top}"
        );
        assert!(top.contains("compile"));
        let sub = man(&ManArgs {
            command: Some("check".into()),
            dir: None,
        })
        .unwrap()
        .stdout;
        assert!(sub.contains(".TH kproxy-check"), "{sub}");
        assert!(sub.contains("\\-\\-rules"), "{sub}");
        let e = man(&ManArgs {
            command: Some("nope".into()),
            dir: None,
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("man: no subcommand \"nope\" (compile, "),
            "{e}"
        );
    }
}
