//! TLB shoot-down. A change that takes a translation away from an address space (an unmap, a
//! narrower protection, a page made copy-on-write by a fork or moved to its copy) must reach
//! every CPU that may still use the old translation before the change's system call returns
//! and before any frame it let go is reused.
//!
//! Each CPU records the page-table root it has loaded ([`switch_to`]). The CPU making a change
//! invalidates its own entries as it edits the tables, then calls [`shoot_down`] with the
//! range it changed: every other CPU that has the same root loaded is asked, by an IPI, to
//! invalidate that range (page by page with `invlpg` up to [`INVLPG_LIMIT`] pages, else by
//! loading another root and then its own again), and the caller waits until each has done so
//! or has loaded another root (which drops every non-global entry; user pages are never
//! global). A CPU that runs the space only later loads the root then, and walks the tables as
//! they are. So the common case (a process on one CPU) costs one look at each CPU's root and
//! no IPI. `invlpg` rather than a reload of the same root: on kvm_pvm the reload did not
//! reliably drop writable translations (see the fork notes in ARCHITECTURE.md).
//!
//! The kernel runs with interrupts off, so a CPU waiting here serves requests addressed to it
//! while it waits (two CPUs may shoot down each other's spaces at once); and a caller holds no
//! lock while it waits, so a CPU it waits for never spins on one of the caller's.

use core::ops::Range;
use core::sync::atomic::{fence, AtomicU64, Ordering};

use k42_guest_lib::frames::FRAME_SIZE;

use crate::arch::{self, apic, boot, idt, user};
use crate::mm;
use crate::percpu::{self, MAX_CPUS};
use crate::proc::Process;

/// Most pages a flush request invalidates one by one; a larger range is flushed whole.
pub const INVLPG_LIMIT: u64 = 64;

/// Shoot-downs that had to ask another CPU (for the kernel's own statistics and tests).
static REMOTE_SHOOT_DOWNS: AtomicU64 = AtomicU64::new(0);

/// Loads `root` into CR3 on this CPU, recording it first (see the module documentation).
pub fn switch_to(root: u64) {
    percpu::current().loaded_root.store(root, Ordering::SeqCst);
    user::load_cr3(root);
}

/// Makes sure no other CPU still uses a translation in `pages` (page-aligned addresses) of the
/// space with root `root`, which the caller has just changed; returns once each CPU that had
/// the space loaded has invalidated them.
pub fn shoot_down(root: u64, pages: Range<u64>) {
    // The caller's table writes come before the look at which CPUs have the root loaded.
    fence(Ordering::SeqCst);
    let me = percpu::index();
    let mut waiting = 0u64;
    let mut flushes_seen = [0u64; MAX_CPUS];
    for index in (0..percpu::count()).filter(|&i| i != me) {
        let Some(cpu) = percpu::cpu(index) else {
            continue;
        };
        if cpu.loaded_root.load(Ordering::SeqCst) != root {
            continue;
        }
        flushes_seen[index] = cpu.tlb_flushes.load(Ordering::SeqCst);
        // Requests from several CPUs merge into one range covering them all.
        cpu.tlb_flush_start.fetch_min(pages.start, Ordering::SeqCst);
        cpu.tlb_flush_end.fetch_max(pages.end, Ordering::SeqCst);
        cpu.tlb_flush_wanted.store(true, Ordering::SeqCst);
        apic::send_ipi(cpu.apic_id, idt::TLB_VECTOR);
        waiting |= 1 << index;
    }
    if waiting == 0 {
        return;
    }
    REMOTE_SHOOT_DOWNS.fetch_add(1, Ordering::Relaxed);
    while waiting != 0 {
        serve_flush_request();
        for (index, &seen) in flushes_seen.iter().enumerate() {
            if waiting & (1 << index) == 0 {
                continue;
            }
            let done = percpu::cpu(index).is_none_or(|cpu| {
                cpu.tlb_flushes.load(Ordering::SeqCst) != seen
                    || cpu.loaded_root.load(Ordering::SeqCst) != root
            });
            if done {
                waiting &= !(1 << index);
            }
        }
        core::hint::spin_loop();
    }
}

/// Finishes a change to `pages` of `process`'s address space, made under its lock, which the
/// caller no longer holds: once no CPU keeps a stale translation, the frames the change let go
/// (`freed`, and the originals of pages copy-on-write faults moved to copies) go back to the
/// allocator.
pub fn finish_change(process: &Process, pages: Range<u64>, freed: &[u64]) {
    let changed = process
        .aspace
        .lock()
        .as_mut()
        .map(|space| (space.root(), space.take_replaced_frames()));
    let replaced = match changed {
        Some((root, replaced)) => {
            shoot_down(root, pages);
            replaced
        }
        // Torn down meanwhile: its root is loaded nowhere any more.
        None => alloc::vec::Vec::new(),
    };
    mm::free_zeroed(freed);
    mm::release_shared(&replaced);
}

/// Flushes this CPU's TLB if another CPU asked (the TLB IPI, or a CPU waiting in
/// [`shoot_down`] itself).
pub fn serve_flush_request() {
    let cpu = percpu::current();
    if !cpu.tlb_flush_wanted.swap(false, Ordering::SeqCst) {
        return;
    }
    let start = cpu.tlb_flush_start.swap(u64::MAX, Ordering::SeqCst);
    let end = cpu.tlb_flush_end.swap(0, Ordering::SeqCst);
    if end.saturating_sub(start) <= INVLPG_LIMIT * FRAME_SIZE {
        for page in (start..end).step_by(FRAME_SIZE as usize) {
            arch::invlpg(page);
        }
    } else {
        // Through another root and back: the root's translations are all dropped.
        let root = cpu.loaded_root.load(Ordering::SeqCst);
        user::load_cr3(boot::boot_pml4_phys());
        user::load_cr3(root);
    }
    cpu.tlb_flushes.fetch_add(1, Ordering::SeqCst);
}

/// Shoot-downs so far that asked another CPU to flush.
pub fn remote_shoot_downs() -> u64 {
    REMOTE_SHOOT_DOWNS.load(Ordering::Relaxed)
}
