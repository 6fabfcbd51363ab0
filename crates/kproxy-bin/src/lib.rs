//! The `kproxy` command's library half: argument types, input reading and
//! the commands, so that tests and embedders can run a command in-process.
//! All I/O of kproxy lives in this crate.

pub mod agent;
pub mod check;
pub mod cli;
pub mod color;
pub mod compile;
pub mod diff;
pub mod graph;
pub mod live;
pub mod memory;
pub mod oneshot;
pub mod progress;
pub mod settings;
pub mod shell;
pub mod sources;
pub mod trace;
pub mod version;

/// The threads a command's parallel work runs on (a comparison tracing
/// classes, a compile printing rules): the CPUs this process may use.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
