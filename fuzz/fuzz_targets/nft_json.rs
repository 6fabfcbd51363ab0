#![no_main]
//! `cargo +nightly fuzz run nft_json`: see `kproxy_fuzz::nft_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kproxy_fuzz::nft_json(data));
