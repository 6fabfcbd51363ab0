//! Shared helpers of kproxy's cross-crate tests.
