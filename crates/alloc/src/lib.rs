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
//! and calls [`keep_freed_memory`] and [`small_pages_only`] first thing in `main`.
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

/// mimalloc's `mi_option_allow_thp` (v3; not in the Rust bindings): whether it asks the
/// kernel for transparent huge pages (`madvise(MADV_HUGEPAGE)`) on the memory it maps.
/// `allow_thp_is_option_43` checks it by its neighbours' defaults.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// The environment variable that sets mimalloc's use of transparent huge pages by hand; when
/// it is set, it wins.
pub const ALLOW_THP_ENV: &str = "MIMALLOC_ALLOW_THP";

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

/// Keeps the process on 4 KiB pages: tells mimalloc not to ask for transparent huge pages,
/// and the kernel not to give the process any (`PR_SET_THP_DISABLE`, which also covers what
/// mimalloc mapped before `main`), unless the operator set [`ALLOW_THP_ENV`]. Returns whether
/// it changed the setting.
///
/// Memory a process has never used costs its first write, and on this kind of virtual machine
/// a fresh 2 MiB page costs twice as much a byte as 4 KiB pages do (1.0 against 2.3 GB/s on
/// one thread; the host backs it whole), all of it taken at once by the thread that touches
/// it. A restore into new memory (a new process after a failure) ran at 0.6–0.8 s with huge
/// pages and 0.4 s without, at 10M groups; and a block whose new group starts a huge page
/// waits for 2 MiB's first write (about 2 ms at that rate). The price is the TLB: updates of a
/// 10M-group state, whose keys are looked up at random, ran about 12% slower; the engine
/// benchmark, whose state is small, did not move (docs/benchmarks.md, "Fifth session").
pub fn small_pages_only() -> bool {
    if std::env::var_os(ALLOW_THP_ENV).is_some() {
        return false;
    }
    // SAFETY: as in `keep_freed_memory`: two integers by value into mimalloc's option table.
    // The index is the one of `mi_option_allow_thp` (checked by the test below), and 0 is
    // its documented value for "do not use transparent huge pages".
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0)
    };
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` takes integers only, sets one flag
        // of this process (inherited by its children) and touches no memory of ours; the
        // unused arguments must be zero. It fails only on kernels without the option, and
        // then nothing changes: huge pages are a hint, so the result is not needed.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
        };
    }
    true
}

/// Whether mimalloc asks for transparent huge pages now.
pub fn allows_huge_pages() -> bool {
    // SAFETY: as in `purge_delay_ms`.
    #[allow(unsafe_code)]
    let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP) };
    v != 0
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

    /// The value of `name` in /proc/self/status, if the kernel shows it.
    #[cfg(target_os = "linux")]
    fn status_field(name: &str) -> Option<String> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.trim().to_string())
        })
    }

    #[test]
    fn allow_thp_is_option_43() {
        // Its neighbours by their defaults: page_cross_thread_max_reclaim (32) before it,
        // arena_max_object_size (2 GiB in KiB) two after it; allow_thp itself defaults to 1
        // on Linux.
        // SAFETY: reads of mimalloc's option table, as in `purge_delay_ms`.
        #[allow(unsafe_code)]
        let (before, after) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP - 1),
                libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP + 2),
            )
        };
        assert_eq!((before, after), (32, 2 << 20));
        if std::env::var_os(ALLOW_THP_ENV).is_some() {
            println!("{ALLOW_THP_ENV} is set: the default of the option is not checked");
            assert!(!small_pages_only());
            return;
        }
        assert!(allows_huge_pages());
        assert!(small_pages_only());
        assert!(!allows_huge_pages());
        #[cfg(target_os = "linux")]
        if let Some(v) = status_field("THP_enabled") {
            // The kernel's own word on the process (shown from Linux 6.0).
            assert_eq!(v, "0", "PR_SET_THP_DISABLE took effect");
        } else {
            println!("this kernel does not show THP_enabled in /proc/self/status");
        }
    }
}
