//! The kernel heap: a linked-list allocator over a contiguous run of frames in the direct map.

use linked_list_allocator::LockedHeap;

use crate::arch::phys_to_virt;

/// Heap size: enough for per-CPU blocks and stacks of 64 CPUs and boot-time tables.
const HEAP_FRAMES: u64 = 1024; // 4 MiB

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

pub(super) fn init() -> Result<(), &'static str> {
    let start = super::frames::alloc_contiguous(HEAP_FRAMES)
        .ok_or("no contiguous 4 MiB for the kernel heap")?;
    // SAFETY: the frames were just taken from the allocator and are used by nothing else; the
    // direct map covers them; `init` runs once.
    unsafe {
        HEAP.lock().init(
            phys_to_virt(start) as *mut u8,
            (HEAP_FRAMES * 4096) as usize,
        )
    };
    Ok(())
}

/// Bytes of heap in use.
pub fn used() -> usize {
    HEAP.lock().used()
}

/// Allocates an uninitialised kernel stack of `size` bytes (16-byte aligned) that is never freed;
/// returns its top. Not zeroed: stacks need no zeroing, and zeroing in ring 0 is costly.
pub fn alloc_stack(size: usize) -> u64 {
    let layout = core::alloc::Layout::from_size_align(size, 16).expect("valid stack layout");
    // SAFETY: the layout has non-zero size; the memory is leaked on purpose (stacks live forever).
    let base = unsafe { alloc::alloc::alloc(layout) };
    if base.is_null() {
        alloc::alloc::handle_alloc_error(layout);
    }
    base as u64 + size as u64
}
