use kproxy_bin::cli::Command;
use std::io::Write;
use std::process::ExitCode;

/// mimalloc: the plan of a 10k-Service node is millions of small
/// allocations, where glibc's malloc spent a quarter of `compile`'s time.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether `e` comes from writing to a closed standard output (as a
/// failed write of the output, exit status 1 without a message).
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) || e.to_string().contains("Broken pipe")
}

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
    if !matches!(cli.command, Command::Run(_)) {
        kproxy_bin::memory::keep_freed_memory();
        kproxy_bin::oneshot::set(true);
    }
    kproxy_bin::progress::set_quiet(cli.quiet);
    let mut drift = false;
    let result = match &cli.command {
        Command::Compile(args) => {
            // Written as it is made (a 10k-Service nftables JSON batch is
            // tens of MB): warnings first, as for the other commands.
            let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let written = kproxy_bin::compile::run_to(
                args,
                &mut |w| eprintln!("kproxy: warning: {w}"),
                &mut stdout,
            );
            match written.map(|()| stdout.flush()) {
                Ok(Ok(())) => Ok(kproxy_bin::compile::Output::default()),
                Ok(Err(_)) => return ExitCode::from(1),
                Err(e) if broken_pipe(&e) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
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
