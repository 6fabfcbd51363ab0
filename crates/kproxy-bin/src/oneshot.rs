//! Whether the process exits as soon as its command is done (every command
//! but `kproxy run`): then the command leaves its biggest structures to the
//! OS rather than freeing them object by object (a 10k-Service ruleset is
//! millions of allocations, tens of ms to free). Off by default: an
//! embedder's calls free everything as usual.

use std::sync::atomic::{AtomicBool, Ordering};

static ONE_SHOT: AtomicBool = AtomicBool::new(false);

/// Declares that the process exits once the command is done (`main` of
/// the one-shot commands).
pub fn set(one_shot: bool) {
    ONE_SHOT.store(one_shot, Ordering::Relaxed);
}

/// Whether the process exits once the command is done.
pub fn is_set() -> bool {
    ONE_SHOT.load(Ordering::Relaxed)
}

/// Drops `value`, unless the process exits once the command is done: then
/// its memory goes back to the OS with the rest of the process.
pub fn dispose<T>(value: T) {
    if is_set() {
        std::mem::forget(value);
    } else {
        drop(value);
    }
}
