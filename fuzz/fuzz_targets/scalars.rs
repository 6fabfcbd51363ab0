#![no_main]
//! `cargo +nightly fuzz run scalars`: see `kproxy_fuzz::scalars`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kproxy_fuzz::scalars(data));
