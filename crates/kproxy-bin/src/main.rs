use kproxy_bin::cli::Command;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = kproxy_bin::shell::parse();
    // --v / --vmodule (kube-proxy's) win over KPROXY_LOG; warn by default.
    let flags = match &cli.command {
        Command::Run(args) => args.kube_proxy.log_filter(),
        _ => None,
    };
    let filter = flags
        .map(tracing_subscriber::EnvFilter::new)
        .or_else(|| tracing_subscriber::EnvFilter::try_from_env("KPROXY_LOG").ok())
        .unwrap_or_else(|| {
            tracing_subscriber::EnvFilter::new(kproxy_bin::live::DEFAULT_LOG_FILTER)
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    kproxy_bin::color::detect_terminal();
    let mut drift = false;
    let result = match &cli.command {
        Command::Compile(args) => kproxy_bin::compile::run(args),
        Command::Trace(args) => kproxy_bin::trace::run(args),
        Command::Graph(args) => kproxy_bin::graph::run(args),
        Command::Diff(args) => kproxy_bin::diff::run(args),
        Command::Cleanup(args) => kproxy_bin::agent::cleanup::run(args),
        Command::Completions(args) => kproxy_bin::shell::completions(args),
        Command::Man(args) => kproxy_bin::shell::man(args),
        Command::Run(args) => kproxy_bin::agent::run_command(args),
        Command::Check(args) => kproxy_bin::check::run(args).map(|c| {
            drift = c.drift;
            c.output
        }),
    };
    match result {
        Ok(out) => {
            for w in &out.warnings {
                eprintln!("kproxy: warning: {w}");
            }
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.stdout.as_bytes()).is_err() {
                return ExitCode::from(1);
            }
            if drift {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kproxy: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
