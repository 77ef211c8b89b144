//! The heap of a one-shot command that loads a large services file (`validate`, `config show`):
//! a 1,000-service file builds ~20 MB of YAML tree and model, which glibc's default heap faults
//! in 4 KiB at a time (~5,000 page faults, a quarter of `validate`'s CPU time;
//! bench/results-validate4-2026-12-06.md).
//!
//! Only these commands change the settings, for their own process, which exits after them: the
//! daemon (`harnessd`, or `harness daemon run`) and every other command keep glibc's defaults.

/// How much the heap grows by at once: more than the largest file needs (10 MiB of YAML is
/// refused before parsing; such a file would grow the heap again, with default pages).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const GROW: usize = 64 << 20;

/// Transparent huge page size on x86-64 and aarch64 with 4 KiB pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HUGE_PAGE: usize = 2 << 20;

/// Before loading: every thread allocates from the main heap (the YAML parser threads too, which
/// would each get a heap of their own), blocks up to 32 MiB come from it rather than from their
/// own mappings, and the heap grows now by [`GROW`], marked for transparent huge pages
/// (`MADV_HUGEPAGE`: what `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` does, which only the
/// environment can set). Where the kernel gives no huge pages, the heap is as before but
/// grown in one step. Nothing to do on other systems; a setting refused leaves the default.
pub fn prepare_for_large_load() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; sbrk(0) only reads the program break;
    // the blocks are allocated and freed here; madvise(MADV_HUGEPAGE) is advice on pages the
    // heap owns, which changes no contents.
    unsafe {
        let grow = libc::c_int::try_from(GROW).unwrap_or(libc::c_int::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, grow.saturating_mul(2));
        libc::mallopt(libc::M_TOP_PAD, grow);
        let before = libc::sbrk(0) as usize;
        // Blocks until the heap grows (by GROW more than they need), then freed into it.
        let mut blocks = [std::ptr::null_mut::<libc::c_void>(); 64];
        let mut after = before;
        for block in &mut blocks {
            *block = libc::malloc(64 << 10);
            after = libc::sbrk(0) as usize;
            if block.is_null() || after != before {
                break;
            }
        }
        for block in blocks {
            libc::free(block);
        }
        let start = before.next_multiple_of(HUGE_PAGE);
        if after > start {
            let len = (after - start) / HUGE_PAGE * HUGE_PAGE;
            if len > 0 {
                libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
    }
}
