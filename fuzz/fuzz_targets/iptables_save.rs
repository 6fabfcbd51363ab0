#![no_main]
//! `cargo +nightly fuzz run iptables_save`: see `kproxy_fuzz::iptables_save`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kproxy_fuzz::iptables_save(data));
