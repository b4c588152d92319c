//! The binaries' allocator: mimalloc, with one setting changed for a server whose processing
//! thread must not pause.
//!
//! Each binary declares
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: sluice_alloc::MiMalloc = sluice_alloc::MiMalloc;
//! ```
//!
//! and calls [`keep_freed_memory`] first thing in `main`.
//!
//! Why mimalloc: each event allocates its row, and glibc malloc costs a fifth of the engine's
//! time on the aggregate benchmark (docs/benchmarks.md).

pub use mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its position in the `mi_option_e` enum of the mimalloc
/// that libmimalloc-sys compiles (v3; the Rust bindings name the option after it, 16, but not
/// it). `purge_delay_is_option_15` checks it against that neighbour and its default value.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable that sets the purge delay by hand; when it is set, it wins.
pub const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Tells mimalloc to keep memory that is freed for reuse instead of returning it to the
/// system ("purging" it), unless the operator set [`PURGE_DELAY_ENV`]. Returns whether it
/// changed the setting.
///
/// By default mimalloc returns freed memory a second after it is freed, and it does so from
/// whichever thread next asks it for a fresh page: that was the engine's thread, which then
/// spent 1.5 to 4.5 ms in `madvise` in the middle of a block or of a snapshot's freeze after
/// a large state had been dropped (docs/benchmarks.md, "Fourth session"). Kept, the
/// memory is reused by the next growth of the state, and the process's resident size stays
/// at its high-water mark (docs/operations.md, "Memory").
pub fn keep_freed_memory() -> bool {
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return false;
    }
    // SAFETY: `mi_option_set` is mimalloc's documented API for changing an option at run
    // time; it takes two integers by value, touches only mimalloc's option table (atomically),
    // and is safe to call from any thread at any time. The option index is the one of
    // `mi_option_purge_delay` (checked by the test below), and -1 is its documented value for
    // "never purge".
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
    };
    true
}

/// The purge delay mimalloc uses now, in milliseconds (-1: never).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: `mi_option_get` reads one entry of mimalloc's option table (initialising it
    // from the environment on first use); two integers, no pointers, callable at any time.
    #[allow(unsafe_code)]
    let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    v as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_option_15() {
        // The bindings name the option after it (and, for mimalloc v2 only, the one before).
        assert_eq!(
            libmimalloc_sys::mi_option_use_numa_nodes - 1,
            MI_OPTION_PURGE_DELAY
        );
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            println!("{PURGE_DELAY_ENV} is set: the default of the option is not checked");
            assert!(!keep_freed_memory());
            return;
        }
        // mimalloc v3's default purge delay; neither neighbour has it.
        assert_eq!(purge_delay_ms(), 1000);
        assert!(keep_freed_memory());
        assert_eq!(purge_delay_ms(), -1);
    }
}
