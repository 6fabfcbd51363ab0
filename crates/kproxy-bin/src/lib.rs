//! The `kproxy` command's library half: argument types, input reading and
//! the commands, so that tests and embedders can run a command in-process.
//! All I/O of kproxy lives in this crate.

pub mod agent;
pub mod check;
pub mod cli;
pub mod compile;
pub mod diff;
pub mod graph;
pub mod progress;
pub mod settings;
pub mod sources;
pub mod trace;
