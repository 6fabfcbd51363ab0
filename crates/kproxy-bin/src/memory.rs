//! How the `kproxy` binary's allocator (mimalloc, the default `mimalloc`
//! feature) treats freed memory.

/// For the one-shot commands (`compile`, `diff`, `check`, ...): mimalloc
/// keeps the memory it frees instead of returning it to the OS after 10 ms.
/// A 10k-Service compile frees and allocates hundreds of MiB in turns, and
/// every page given back was faulted in and zeroed again: on a VM, as much
/// system time as the whole compile's user time. `kproxy run` lives long
/// and keeps the default. Without the `mimalloc` feature (or when mimalloc
/// is not the global allocator) this changes nothing that matters.
///
/// ```
/// kproxy_bin::memory::keep_freed_memory();
/// ```
pub fn keep_freed_memory() {
    #[cfg(feature = "mimalloc")]
    {
        // `mi_option_purge_delay` in mimalloc.h (v2 and v3); -1: never purge.
        const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        // SAFETY: sets a global option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}
