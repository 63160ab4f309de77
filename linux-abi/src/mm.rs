//! Memory mapping: `PROT_*`, `MAP_*`, `MREMAP_*`, `MADV_*` and `MS_*` (x86_64 values).

/// Pages cannot be accessed.
pub const PROT_NONE: u32 = 0;
/// Pages can be read.
pub const PROT_READ: u32 = 0x1;
/// Pages can be written.
pub const PROT_WRITE: u32 = 0x2;
/// Pages can be executed.
pub const PROT_EXEC: u32 = 0x4;
/// `mprotect`: extend the change down to the start of a grows-down mapping.
pub const PROT_GROWSDOWN: u32 = 0x0100_0000;
/// `mprotect`: extend the change up to the end of a grows-up mapping.
pub const PROT_GROWSUP: u32 = 0x0200_0000;

/// Changes are shared.
pub const MAP_SHARED: u32 = 0x01;
/// Changes are private (copy on write).
pub const MAP_PRIVATE: u32 = 0x02;
/// Shared, and unknown flags are an error.
pub const MAP_SHARED_VALIDATE: u32 = 0x03;
/// Mask of the mapping type.
pub const MAP_TYPE: u32 = 0x0f;
/// Place the mapping exactly at the address, replacing what is there.
pub const MAP_FIXED: u32 = 0x10;
/// Not backed by a file; zero-filled.
pub const MAP_ANONYMOUS: u32 = 0x20;
/// Place the mapping in the first 2 GiB.
pub const MAP_32BIT: u32 = 0x40;
/// A stack that grows down.
pub const MAP_GROWSDOWN: u32 = 0x0100;
/// Ignored.
pub const MAP_DENYWRITE: u32 = 0x0800;
/// Ignored.
pub const MAP_EXECUTABLE: u32 = 0x1000;
/// Lock the pages (as `mlock`).
pub const MAP_LOCKED: u32 = 0x2000;
/// Do not reserve swap.
pub const MAP_NORESERVE: u32 = 0x4000;
/// Prefault the pages.
pub const MAP_POPULATE: u32 = 0x8000;
/// With `MAP_POPULATE`: do not block.
pub const MAP_NONBLOCK: u32 = 0x10000;
/// The mapping is a thread stack.
pub const MAP_STACK: u32 = 0x20000;
/// Huge pages.
pub const MAP_HUGETLB: u32 = 0x40000;
/// Synchronous page faults for DAX files.
pub const MAP_SYNC: u32 = 0x80000;
/// Like `MAP_FIXED` but fail with `EEXIST` instead of replacing.
pub const MAP_FIXED_NOREPLACE: u32 = 0x100000;
/// The `mmap` failure value (`(void *)-1`).
pub const MAP_FAILED: u64 = u64::MAX;

/// `mremap`: the mapping may move.
pub const MREMAP_MAYMOVE: u32 = 1;
/// `mremap`: move to the given new address.
pub const MREMAP_FIXED: u32 = 2;
/// `mremap`: leave the old range mapped (empty).
pub const MREMAP_DONTUNMAP: u32 = 4;

/// `madvise`: no special treatment.
pub const MADV_NORMAL: i32 = 0;
/// `madvise`: random access expected.
pub const MADV_RANDOM: i32 = 1;
/// `madvise`: sequential access expected.
pub const MADV_SEQUENTIAL: i32 = 2;
/// `madvise`: the pages will be needed.
pub const MADV_WILLNEED: i32 = 3;
/// `madvise`: drop the pages (private anonymous pages read back as zeros).
pub const MADV_DONTNEED: i32 = 4;
/// `madvise`: the pages may be freed lazily.
pub const MADV_FREE: i32 = 8;
/// `madvise`: free the range and its backing store.
pub const MADV_REMOVE: i32 = 9;
/// `madvise`: do not copy the range on `fork`.
pub const MADV_DONTFORK: i32 = 10;
/// `madvise`: undo `MADV_DONTFORK`.
pub const MADV_DOFORK: i32 = 11;
/// `madvise`: allow transparent huge pages.
pub const MADV_HUGEPAGE: i32 = 14;
/// `madvise`: forbid transparent huge pages.
pub const MADV_NOHUGEPAGE: i32 = 15;
/// `madvise`: exclude from core dumps.
pub const MADV_DONTDUMP: i32 = 16;

/// `msync`: schedule the write-back.
pub const MS_ASYNC: u32 = 1;
/// `msync`: invalidate other mappings.
pub const MS_INVALIDATE: u32 = 2;
/// `msync`: write back and wait.
pub const MS_SYNC: u32 = 4;

/// Whether `prot` holds only known `PROT_*` bits (`mmap`/`mprotect` answer `EINVAL` otherwise).
pub const fn prot_is_valid(prot: u32) -> bool {
    prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protections() {
        assert!(prot_is_valid(PROT_READ | PROT_WRITE));
        assert!(prot_is_valid(PROT_NONE));
        assert!(!prot_is_valid(0x8));
        assert_eq!(MAP_SHARED_VALIDATE & MAP_TYPE, MAP_SHARED | MAP_PRIVATE);
    }
}
