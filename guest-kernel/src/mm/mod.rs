//! Physical memory: the page-frame manager (shared pool + per-CPU caches), the kernel heap, and
//! the direct map of all RAM.
//!
//! One of the low-level modules DESIGN.md allows `unsafe` in: it turns physical addresses into
//! references through the direct map.

pub mod aspace;
pub mod bulk;
pub mod frames;
pub mod heap;
pub mod paging;

use crate::arch::phys_to_virt;
use crate::bootinfo::BootInfo;

pub use frames::{alloc_frame, alloc_frames, free_frame, free_zeroed};

/// Drops one space's reference to each of `frames` (originals of copy-on-write pages) and
/// frees those no space shares any more.
pub fn release_shared(frames: &[u64]) {
    let shares = frames::shares();
    let last: alloc::vec::Vec<u64> = frames
        .iter()
        .copied()
        .filter(|&f| shares.release(f))
        .collect();
    free_zeroed(&last);
}

/// A `'static` reference to a `T` at physical address `phys`.
///
/// Only for loader-provided structures (start info, memory map, ACPI tables) that live in
/// memory the frame allocator never hands out and that nothing writes after boot.
pub fn phys_ref<T: Copy>(phys: u64) -> &'static T {
    debug_assert_eq!(phys % core::mem::align_of::<T>() as u64, 0);
    // SAFETY: the direct map covers all RAM below 4 GiB from the first instruction (boot page
    // tables); callers pass addresses of loader structures, which are never reallocated or
    // written, so a shared 'static reference is sound. T: Copy excludes drop glue.
    unsafe { &*(phys_to_virt(phys) as *const T) }
}

/// A `'static` slice of `len` `T`s at physical address `phys` (same contract as [`phys_ref`]).
pub fn phys_slice<T: Copy>(phys: u64, len: usize) -> &'static [T] {
    // SAFETY: as for `phys_ref`.
    unsafe { core::slice::from_raw_parts(phys_to_virt(phys) as *const T, len) }
}

/// Sets up the frame allocator from the memory map, maps RAM above 4 GiB, and starts the heap.
pub fn init(info: &BootInfo) -> Result<MemoryInfo, &'static str> {
    let ram = frames::init(info)?;
    paging::map_high_ram(info)?;
    frames::init_share_counts()?;
    heap::init()?;
    Ok(ram)
}

/// What `init` found.
#[derive(Clone, Copy, Debug)]
pub struct MemoryInfo {
    /// Bytes of RAM in the memory map.
    pub ram_bytes: u64,
    /// Bytes handed to the frame allocator (RAM minus kernel, loader data and initrd).
    pub usable_bytes: u64,
}

/// Zeroes whole frames in one batch (see [`bulk`]). A failure means the frames are not RAM the
/// hypervisor knows, which would be a kernel bug.
pub fn zero_frames(frames: &[u64]) {
    let mut batch = bulk::MemBatch::new();
    for &f in frames {
        batch.zero(f, k42_guest_lib::frames::FRAME_SIZE);
    }
    if let Err(status) = batch.run() {
        panic!(
            "zeroing {} frames failed with status {status}",
            frames.len()
        );
    }
}

/// Writes `bytes` at the start of frame `frame`, which the caller owns (small writes only:
/// code stubs, headers).
pub fn write_phys(frame: u64, bytes: &[u8]) {
    assert!(bytes.len() as u64 <= k42_guest_lib::frames::FRAME_SIZE);
    // SAFETY: `frame` is a RAM frame the caller owns, covered by the direct map; the write
    // stays inside it (checked).
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), phys_to_virt(frame) as *mut u8, bytes.len())
    }
}

/// The 64-bit word at `offset` in frame `frame`, as an atomic shared with user code that maps
/// the frame. The caller keeps the frame allocated while it uses the reference.
pub fn frame_atomic(frame: u64, offset: usize) -> &'static core::sync::atomic::AtomicU64 {
    assert!(offset.is_multiple_of(8) && (offset as u64) < k42_guest_lib::frames::FRAME_SIZE);
    // SAFETY: an aligned word inside a RAM frame covered by the direct map; AtomicU64 has the
    // layout of u64 and every access to the word (kernel or user) is atomic.
    unsafe { &*((phys_to_virt(frame) + offset as u64) as *const core::sync::atomic::AtomicU64) }
}

/// The 32-bit word at `offset` in frame `frame`, as an atomic shared with user code (see
/// [`frame_atomic`]).
pub fn frame_atomic32(frame: u64, offset: usize) -> &'static core::sync::atomic::AtomicU32 {
    assert!(offset.is_multiple_of(4) && (offset as u64) < k42_guest_lib::frames::FRAME_SIZE);
    // SAFETY: as for `frame_atomic`, for an aligned 32-bit word.
    unsafe { &*((phys_to_virt(frame) + offset as u64) as *const core::sync::atomic::AtomicU32) }
}
