//! The page-frame manager: a shared pool (bump allocation over the free ranges of the memory map,
//! plus a free list threaded through freed frames) behind per-CPU caches.
//!
//! Every frame handed out is zero: fresh frames from the bump ranges because new guest memory is
//! zero (DESIGN.md), freed frames because whoever frees a frame must have zeroed it first (see
//! [`free_zeroed`], which zeroes in bulk outside ring 0). The free-list link a freed frame carries
//! is cleared when the frame is taken again.

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::boxed::Box;

use k42_guest_lib::cobj::{PerCpuReps, Root};
use k42_guest_lib::frames::{FrameCache, RangeSet, ShareCounts, FRAME_SIZE};
use k42_paravirt::E820_RAM;
use spin::{Mutex, Once};

use crate::arch::{boot, phys_to_virt};
use crate::bootinfo::BootInfo;

use super::MemoryInfo;

/// Never hand out memory below 1 MiB (real-mode trampoline, loader structures, BIOS areas).
const LOW_MEMORY_END: u64 = 0x10_0000;
/// The direct map covers 512 GiB (one PDPT).
pub const DIRECT_MAP_LIMIT: u64 = 512 << 30;

struct Pool {
    fresh: RangeSet<32>,
    usable: RangeSet<32>,
    free_list: u64,
    free_count: u64,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    fresh: RangeSet::new(),
    usable: RangeSet::new(),
    free_list: 0,
    free_count: 0,
});
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

/// Counters of the frame allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames currently allocated (per-CPU caches count as free).
    pub allocated: u64,
    /// Frames on the shared free list.
    pub free_listed: u64,
    /// Bytes not yet handed out by bump allocation.
    pub fresh_bytes: u64,
}

pub(super) fn init(info: &BootInfo) -> Result<MemoryInfo, &'static str> {
    let mut pool = POOL.lock();
    let mut ram_bytes = 0;
    for entry in info.memmap.iter().filter(|e| e.kind == E820_RAM) {
        ram_bytes += entry.size;
        let end = entry.addr.saturating_add(entry.size).min(DIRECT_MAP_LIMIT);
        pool.fresh
            .add(entry.addr.max(LOW_MEMORY_END), end)
            .map_err(|_| "too many memory ranges")?;
    }
    let (kernel_start, kernel_end) = boot::kernel_phys_range();
    let mut reserved = [
        (0, LOW_MEMORY_END),
        (kernel_start, kernel_end),
        (0, 0),
        (0, 0),
        (0, 0),
        (0, 0),
    ];
    if let Some((start, size)) = info.initrd {
        reserved[2] = (start, start.saturating_add(size));
    }
    let entries =
        info.memmap.len() as u64 * core::mem::size_of::<k42_paravirt::HvmMemmapEntry>() as u64;
    reserved[3] = (info.memmap_phys, info.memmap_phys + entries);
    reserved[4] = (info.start_info_phys, info.start_info_phys + 64);
    if let Some(range) = info.cmdline_range {
        reserved[5] = range;
    }
    for (start, end) in reserved {
        pool.fresh
            .remove(start, end)
            .map_err(|_| "too many memory ranges")?;
    }
    pool.usable = pool.fresh.clone();
    let usable_bytes = pool.fresh.total();
    if usable_bytes < 4 << 20 {
        return Err("less than 4 MiB of usable RAM");
    }
    Ok(MemoryInfo {
        ram_bytes,
        usable_bytes,
    })
}

static SHARES: Once<ShareCounts<'static>> = Once::new();

/// Sets up the copy-on-write reference counts ([`ShareCounts`]): one entry per frame from the
/// lowest to the highest usable address, in fresh (zero) frames. After the direct map covers
/// all RAM.
pub(super) fn init_share_counts() -> Result<(), &'static str> {
    let (start, end) = {
        let pool = POOL.lock();
        let ranges = pool.usable.ranges();
        let start = ranges.iter().map(|r| r.start).min().unwrap_or(0);
        let end = ranges.iter().map(|r| r.end).max().unwrap_or(0);
        (start, end)
    };
    let bytes = ShareCounts::table_bytes(start, end);
    let table = alloc_contiguous(bytes.div_ceil(FRAME_SIZE).max(1))
        .ok_or("no contiguous memory for the frame share counts")?;
    // SAFETY: the frames were just taken from the allocator for this table alone and are never
    // freed; the direct map covers them; they are zero (fresh memory), a valid AtomicU16 each.
    let counts = unsafe {
        core::slice::from_raw_parts(
            phys_to_virt(table) as *const core::sync::atomic::AtomicU16,
            (bytes / 2) as usize,
        )
    };
    SHARES.call_once(|| ShareCounts::new(start, counts));
    Ok(())
}

/// The copy-on-write reference counts of all frames.
pub fn shares() -> &'static ShareCounts<'static> {
    SHARES
        .get()
        .expect("frame share counts are set up with the memory manager")
}

/// Frames not handed out (per-CPU caches count as free).
pub fn free_count() -> u64 {
    total_count().saturating_sub(ALLOCATED.load(Ordering::Relaxed))
}

/// Frames the allocator manages, free or handed out.
pub fn total_count() -> u64 {
    POOL.lock().usable.total() / FRAME_SIZE
}

/// Takes `count` physically contiguous fresh (zero) frames; for early boot structures.
pub fn alloc_contiguous(count: u64) -> Option<u64> {
    let frame = POOL.lock().fresh.take(count)?;
    ALLOCATED.fetch_add(count, Ordering::Relaxed);
    Some(frame)
}

fn pool_alloc(pool: &mut Pool) -> Option<u64> {
    if pool.free_list != 0 {
        let frame = pool.free_list;
        // SAFETY: every frame on the free list is a free RAM frame covered by the direct map
        // whose first word holds the next link (written by `pool_free`).
        pool.free_list = unsafe { core::ptr::read(phys_to_virt(frame) as *const u64) };
        // SAFETY: as above; clearing the link restores the all-zero frame that was freed.
        unsafe { core::ptr::write(phys_to_virt(frame) as *mut u64, 0) };
        pool.free_count -= 1;
        return Some(frame);
    }
    pool.fresh.take(1)
}

fn pool_free(pool: &mut Pool, frame: u64) {
    // SAFETY: `frame` is a free RAM frame owned by the allocator (checked by `free_frame`),
    // mapped by the direct map; nothing else references it.
    unsafe { core::ptr::write(phys_to_virt(frame) as *mut u64, pool.free_list) };
    pool.free_list = frame;
    pool.free_count += 1;
}

/// The page-frame manager's interface: a clustered object with one rep (a frame cache) per CPU
/// over the shared pool, K42's distributed PMRoot.
pub trait FrameManager: Send + Sync {
    /// Allocates a frame.
    fn alloc(&self) -> Option<u64>;
    /// Allocates up to `out.len()` frames into `out` under one lock; returns how many.
    fn alloc_many(&self, out: &mut [u64]) -> usize;
    /// Frees a frame the caller owns (already validated).
    fn free(&self, frame: u64);
    /// Frees frames the caller owns (already validated) under one lock.
    fn free_many(&self, frames: &[u64]);
    /// Frames cached by this rep.
    fn cached(&self) -> usize;
}

/// The shared state of the frame manager's root: the pool (a static, so early boot can use it
/// before clustered objects exist).
pub struct SharedPool;

/// One CPU's rep: a frame cache refilled from and drained to the pool in batches.
struct FrameRep {
    cache: Mutex<FrameCache<64>>,
}

impl FrameManager for FrameRep {
    fn alloc(&self) -> Option<u64> {
        let mut cache = self.cache.lock();
        if cache.is_empty() {
            let mut pool = POOL.lock();
            cache.refill(|| pool_alloc(&mut pool));
        }
        cache.pop()
    }

    fn alloc_many(&self, out: &mut [u64]) -> usize {
        let mut cache = self.cache.lock();
        let mut n = 0;
        while n < out.len() {
            if cache.is_empty() {
                let mut pool = POOL.lock();
                cache.refill(|| pool_alloc(&mut pool));
            }
            match cache.pop() {
                Some(frame) => out[n] = frame,
                None => break,
            }
            n += 1;
        }
        n
    }

    fn free(&self, frame: u64) {
        self.cache.lock().push(frame, |batch| {
            let mut pool = POOL.lock();
            for &f in batch {
                pool_free(&mut pool, f);
            }
        });
    }

    fn free_many(&self, frames: &[u64]) {
        let mut cache = self.cache.lock();
        for &frame in frames {
            cache.push(frame, |batch| {
                let mut pool = POOL.lock();
                for &f in batch {
                    pool_free(&mut pool, f);
                }
            });
        }
    }

    fn cached(&self) -> usize {
        self.cache.lock().len()
    }
}

/// The root of the page-frame manager for `cpus` CPUs (reps created on each CPU's first use).
pub fn frame_manager_root(cpus: usize) -> Box<dyn Root<dyn FrameManager>> {
    Box::new(PerCpuReps::<dyn FrameManager, SharedPool>::new(
        cpus,
        SharedPool,
        |_, _| {
            Box::new(FrameRep {
                cache: Mutex::new(FrameCache::new()),
            })
        },
    ))
}

/// Allocates one 4 KiB frame: through this CPU's rep of the frame manager once clustered objects
/// are up, from the pool directly before.
pub fn alloc_frame() -> Option<u64> {
    let frame = match crate::cobj::frame_manager() {
        Some((cos, frames)) => {
            let frame = cos.call(frames, |f| f.alloc());
            if let Some(stats) = crate::cobj::stats() {
                cos.call(stats, |c| c.add(crate::percpu::index(), 1));
            }
            frame
        }
        None => pool_alloc(&mut POOL.lock()),
    }?;
    ALLOCATED.fetch_add(1, Ordering::Relaxed);
    Some(frame)
}

/// Allocates up to `out.len()` zero frames at once (one call of this CPU's rep rather than one
/// per frame); returns how many it got.
pub fn alloc_frames(out: &mut [u64]) -> usize {
    let n = match crate::cobj::frame_manager() {
        Some((cos, frames)) => {
            let n = cos.call(frames, |f| f.alloc_many(out));
            if let Some(stats) = crate::cobj::stats() {
                cos.call(stats, |c| c.add(crate::percpu::index(), n as u64));
            }
            n
        }
        None => {
            let mut pool = POOL.lock();
            let mut n = 0;
            while n < out.len() {
                match pool_alloc(&mut pool) {
                    Some(frame) => out[n] = frame,
                    None => break,
                }
                n += 1;
            }
            n
        }
    };
    ALLOCATED.fetch_add(n as u64, Ordering::Relaxed);
    n
}

/// Error freeing a frame that the allocator never handed out.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame(pub u64);

/// Returns a frame (to this CPU's rep; overflow goes back to the shared pool). The frame must
/// be zero (use [`free_zeroed`] for frames that may hold data).
pub fn free_frame(frame: u64) -> Result<(), BadFrame> {
    if !frame.is_multiple_of(FRAME_SIZE) || !POOL.lock().usable.contains(frame) {
        return Err(BadFrame(frame));
    }
    ALLOCATED.fetch_sub(1, Ordering::Relaxed);
    match crate::cobj::frame_manager() {
        Some((cos, frames)) => cos.call(frames, |f| f.free(frame)),
        None => pool_free(&mut POOL.lock(), frame),
    }
    Ok(())
}

/// Whether `phys` is a frame the allocator manages.
pub fn is_managed(phys: u64) -> bool {
    POOL.lock().usable.contains(phys)
}

/// Current counters.
pub fn stats() -> FrameStats {
    let pool = POOL.lock();
    FrameStats {
        allocated: ALLOCATED.load(Ordering::Relaxed),
        free_listed: pool.free_count,
        fresh_bytes: pool.fresh.total(),
    }
}

/// Writes the first word of an allocated frame (for tests and diagnostics).
pub fn write_word(frame: u64, value: u64) {
    assert!(
        frame.is_multiple_of(FRAME_SIZE) && is_managed(frame),
        "write_word on an unmanaged frame"
    );
    // SAFETY: `frame` is managed RAM (checked) mapped by the direct map; the caller owns it.
    unsafe { core::ptr::write_volatile(phys_to_virt(frame) as *mut u64, value) }
}

/// Reads the first word of an allocated frame (for tests and diagnostics).
pub fn read_word(frame: u64) -> u64 {
    assert!(
        frame.is_multiple_of(FRAME_SIZE) && is_managed(frame),
        "read_word on an unmanaged frame"
    );
    // SAFETY: as for `write_word`.
    unsafe { core::ptr::read_volatile(phys_to_virt(frame) as *const u64) }
}

/// Zeroes `frames` in bulk (one k42vm hypercall, or in place elsewhere) and frees them.
/// Frames the allocator does not manage are skipped and counted in the result.
pub fn free_zeroed(frames: &[u64]) -> usize {
    let managed: alloc::vec::Vec<u64> = {
        let pool = POOL.lock();
        frames
            .iter()
            .copied()
            .filter(|&f| f.is_multiple_of(FRAME_SIZE) && pool.usable.contains(f))
            .collect()
    };
    super::zero_frames(&managed);
    // Checked above: all are the allocator's. One call of this CPU's rep for the lot.
    ALLOCATED.fetch_sub(managed.len() as u64, Ordering::Relaxed);
    match crate::cobj::frame_manager() {
        Some((cos, manager)) => cos.call(manager, |f| f.free_many(&managed)),
        None => {
            let mut pool = POOL.lock();
            for &f in &managed {
                pool_free(&mut pool, f);
            }
        }
    }
    frames.len() - managed.len()
}
