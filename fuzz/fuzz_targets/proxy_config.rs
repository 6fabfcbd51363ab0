#![no_main]
//! `cargo +nightly fuzz run proxy_config`: see `kproxy_fuzz::proxy_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kproxy_fuzz::proxy_config(data));
