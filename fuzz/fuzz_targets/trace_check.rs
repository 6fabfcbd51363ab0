#![no_main]
//! `cargo +nightly fuzz run trace_check`: see `kproxy_fuzz::trace_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kproxy_fuzz::trace_check(data));
