//! Physical memory: the page-frame manager (shared pool + per-CPU caches), the kernel heap, and
//! the direct map of all RAM.
//!
//! One of the low-level modules DESIGN.md allows `unsafe` in: it turns physical addresses into
//! references through the direct map.

pub mod frames;
pub mod heap;
pub mod paging;

use crate::arch::phys_to_virt;
use crate::bootinfo::BootInfo;

pub use frames::{alloc_frame, free_frame};

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
