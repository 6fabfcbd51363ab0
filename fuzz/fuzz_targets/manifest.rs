#![no_main]
//! `cargo +nightly fuzz run manifest`: see `kproxy_fuzz::manifest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kproxy_fuzz::manifest(data));
