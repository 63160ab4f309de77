//! Physical-memory bookkeeping for the page-frame manager: usable ranges and per-CPU caches.

/// Size of a page frame.
pub const FRAME_SIZE: u64 = 4096;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// Size in bytes.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `addr` lies inside.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// Error from [`RangeSet`] when it has no room for another range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSetFull;

/// A set of disjoint, frame-aligned physical ranges with at most `N` entries (no allocation).
#[derive(Clone, Debug)]
pub struct RangeSet<const N: usize> {
    ranges: [PhysRange; N],
    len: usize,
}

impl<const N: usize> Default for RangeSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> RangeSet<N> {
    /// An empty set.
    pub const fn new() -> Self {
        RangeSet {
            ranges: [PhysRange { start: 0, end: 0 }; N],
            len: 0,
        }
    }

    /// The ranges, in insertion/split order.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges[..self.len]
    }

    /// Total bytes in the set.
    pub fn total(&self) -> u64 {
        self.ranges().iter().map(PhysRange::len).sum()
    }

    /// Adds `[start, end)` shrunk inward to frame boundaries; empty results are ignored.
    /// The caller keeps ranges disjoint (memory maps are).
    pub fn add(&mut self, start: u64, end: u64) -> Result<(), RangeSetFull> {
        let start = start
            .checked_add(FRAME_SIZE - 1)
            .map_or(u64::MAX, |s| s & !(FRAME_SIZE - 1));
        let end = end & !(FRAME_SIZE - 1);
        if end <= start {
            return Ok(());
        }
        if self.len == N {
            return Err(RangeSetFull);
        }
        self.ranges[self.len] = PhysRange { start, end };
        self.len += 1;
        Ok(())
    }

    /// Removes `[start, end)` (widened outward to frame boundaries) from every range.
    pub fn remove(&mut self, start: u64, end: u64) -> Result<(), RangeSetFull> {
        let start = start & !(FRAME_SIZE - 1);
        let end = end
            .checked_add(FRAME_SIZE - 1)
            .map_or(!(FRAME_SIZE - 1), |e| e & !(FRAME_SIZE - 1));
        if end <= start {
            return Ok(());
        }
        let mut i = 0;
        while i < self.len {
            let r = self.ranges[i];
            if end <= r.start || r.end <= start {
                i += 1;
                continue;
            }
            let left = PhysRange {
                start: r.start,
                end: start.max(r.start),
            };
            let right = PhysRange {
                start: end.min(r.end),
                end: r.end,
            };
            match (left.is_empty(), right.is_empty()) {
                (true, true) => {
                    self.ranges.copy_within(i + 1..self.len, i);
                    self.len -= 1;
                    continue;
                }
                (false, true) => self.ranges[i] = left,
                (true, false) => self.ranges[i] = right,
                (false, false) => {
                    if self.len == N {
                        return Err(RangeSetFull);
                    }
                    self.ranges[i] = left;
                    self.ranges.copy_within(i + 1..self.len, i + 2);
                    self.ranges[i + 1] = right;
                    self.len += 1;
                    i += 1;
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// Takes `frames` contiguous frames from the front of the first range that has them.
    pub fn take(&mut self, frames: u64) -> Option<u64> {
        let bytes = frames.checked_mul(FRAME_SIZE)?;
        if bytes == 0 {
            return None;
        }
        let i = self.ranges().iter().position(|r| r.len() >= bytes)?;
        let start = self.ranges[i].start;
        self.ranges[i].start += bytes;
        if self.ranges[i].is_empty() {
            self.ranges.copy_within(i + 1..self.len, i);
            self.len -= 1;
        }
        Some(start)
    }

    /// Whether `addr` lies in some range.
    pub fn contains(&self, addr: u64) -> bool {
        self.ranges().iter().any(|r| r.contains(addr))
    }
}

/// A per-CPU stack of free frames: the fast path of frame allocation, refilled from and drained
/// to the shared pool in batches so the pool's lock is taken once per batch.
#[derive(Clone, Debug)]
pub struct FrameCache<const N: usize> {
    frames: [u64; N],
    len: usize,
}

impl<const N: usize> Default for FrameCache<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameCache<N> {
    /// How many frames a refill or a drain moves at once.
    pub const BATCH: usize = N / 2;

    /// An empty cache.
    pub const fn new() -> Self {
        FrameCache {
            frames: [0; N],
            len: 0,
        }
    }

    /// Number of cached frames.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes a cached frame.
    pub fn pop(&mut self) -> Option<u64> {
        self.len = self.len.checked_sub(1)?;
        Some(self.frames[self.len])
    }

    /// Caches a frame; when full, first hands [`Self::BATCH`] frames to `drain`.
    pub fn push(&mut self, frame: u64, mut drain: impl FnMut(&[u64])) {
        if self.len == N {
            let keep = N - Self::BATCH;
            drain(&self.frames[keep..N]);
            self.len = keep;
        }
        self.frames[self.len] = frame;
        self.len += 1;
    }

    /// Refills up to [`Self::BATCH`] frames from `source`; returns how many arrived.
    pub fn refill(&mut self, mut source: impl FnMut() -> Option<u64>) -> usize {
        let mut n = 0;
        while n < Self::BATCH && self.len < N {
            match source() {
                Some(frame) => {
                    self.frames[self.len] = frame;
                    self.len += 1;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

/// Reference counts of page frames mapped copy-on-write into several address spaces, as a
/// compact table indexed by frame number (one `u16` per frame of the range it covers).
///
/// Each entry holds the number of *extra* mappings: 0 (what zeroed memory holds, so the table
/// needs no initialisation, and what every free frame holds) means "mapped by one address space
/// at most". Why a flat table and not a map of the shared frames only: a fork shares every
/// anonymous page and a copy-on-write fault looks one up, in ring 0, where every instruction
/// counts (DESIGN.md); here each is one atomic instruction on a computed address, where a
/// `BTreeMap` would walk nodes and allocate. It costs 2 bytes per frame (0.05% of RAM), taken
/// from fresh (zero) frames at boot. Entries are atomic: the sharers of a frame live on
/// different CPUs and drop their references independently, without a common lock.
///
/// `u16` is enough: an anonymous frame is mapped at most once per address space, and there
/// are at most [`crate::kabi::MAX_PROCESSES`] of those.
pub struct ShareCounts<'a> {
    base: u64,
    counts: &'a [core::sync::atomic::AtomicU16],
}

const _: () = assert!(crate::kabi::MAX_PROCESSES < u16::MAX as usize);

impl<'a> ShareCounts<'a> {
    /// A table whose entry `i` counts frame `base + i * FRAME_SIZE`.
    pub const fn new(base: u64, counts: &'a [core::sync::atomic::AtomicU16]) -> Self {
        ShareCounts { base, counts }
    }

    /// Bytes of table needed for the frames of `[start, end)`.
    pub const fn table_bytes(start: u64, end: u64) -> u64 {
        (end.saturating_sub(start) / FRAME_SIZE) * 2
    }

    fn slot(&self, frame: u64) -> Option<&core::sync::atomic::AtomicU16> {
        let offset = frame.checked_sub(self.base)?;
        if !offset.is_multiple_of(FRAME_SIZE) {
            return None;
        }
        self.counts.get(usize::try_from(offset / FRAME_SIZE).ok()?)
    }

    /// Records one more mapping of `frame`. `false` if the table does not cover it or its
    /// count is at the maximum (nothing changed).
    pub fn share(&self, frame: u64) -> bool {
        use core::sync::atomic::Ordering;
        self.slot(frame).is_some_and(|c| {
            c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_add(1))
                .is_ok()
        })
    }

    /// Whether `frame` is mapped by more than one address space.
    pub fn is_shared(&self, frame: u64) -> bool {
        self.extra(frame) != 0
    }

    /// Extra mappings of `frame` (0 for frames the table does not cover).
    pub fn extra(&self, frame: u64) -> u16 {
        self.slot(frame)
            .map_or(0, |c| c.load(core::sync::atomic::Ordering::Acquire))
    }

    /// Drops one mapping of `frame`; `true` if it was the last one, so the caller now owns the
    /// frame alone and must free it. Frames the table does not cover have a single mapping.
    pub fn release(&self, frame: u64) -> bool {
        use core::sync::atomic::Ordering;
        match self.slot(frame) {
            Some(c) => c
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_err(),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn add_aligns_inward_and_ignores_empty() {
        let mut set = RangeSet::<4>::new();
        set.add(0x1001, 0x5fff).unwrap();
        set.add(0x7000, 0x7fff).unwrap();
        assert_eq!(
            set.ranges(),
            &[PhysRange {
                start: 0x2000,
                end: 0x5000
            }]
        );
        assert_eq!(set.total(), 0x3000);
    }

    #[test]
    fn remove_splits_trims_and_deletes() {
        let mut set = RangeSet::<4>::new();
        set.add(0x0, 0x10000).unwrap();
        set.add(0x20000, 0x30000).unwrap();
        set.remove(0x4000, 0x5001).unwrap(); // split, widened to 0x6000
        assert_eq!(
            set.ranges(),
            &[
                PhysRange {
                    start: 0,
                    end: 0x4000
                },
                PhysRange {
                    start: 0x6000,
                    end: 0x10000
                },
                PhysRange {
                    start: 0x20000,
                    end: 0x30000
                }
            ]
        );
        set.remove(0x0, 0x4000).unwrap(); // delete whole range
        set.remove(0x2f000, 0x40000).unwrap(); // trim end
        assert_eq!(
            set.ranges(),
            &[
                PhysRange {
                    start: 0x6000,
                    end: 0x10000
                },
                PhysRange {
                    start: 0x20000,
                    end: 0x2f000
                }
            ]
        );
        assert!(set.contains(0x6000) && !set.contains(0x10000) && !set.contains(0x5fff));
    }

    #[test]
    fn remove_reports_full_instead_of_losing_memory() {
        let mut set = RangeSet::<1>::new();
        set.add(0, 0x10000).unwrap();
        assert_eq!(set.remove(0x4000, 0x5000), Err(RangeSetFull));
        assert_eq!(set.total(), 0x10000);
    }

    #[test]
    fn take_is_contiguous_and_skips_small_ranges() {
        let mut set = RangeSet::<4>::new();
        set.add(0x1000, 0x3000).unwrap();
        set.add(0x10000, 0x20000).unwrap();
        assert_eq!(set.take(4), Some(0x10000));
        assert_eq!(set.take(2), Some(0x1000));
        assert_eq!(set.ranges().len(), 1);
        assert_eq!(set.take(100), None);
        assert_eq!(set.take(0), None);
        assert_eq!(set.take(u64::MAX), None);
    }

    #[test]
    fn cache_refills_and_drains_in_batches() {
        let mut cache = FrameCache::<8>::new();
        let mut pool: Vec<u64> = (0..100).map(|i| i * FRAME_SIZE).collect();
        assert_eq!(cache.refill(|| pool.pop()), 4);
        assert_eq!(cache.len(), 4);
        let mut drained = Vec::new();
        for i in 0..5 {
            cache.push(1000 * FRAME_SIZE + i, |batch| {
                drained.extend_from_slice(batch)
            });
        }
        assert_eq!(drained.len(), 4, "a full cache drains one batch");
        assert_eq!(cache.len(), 5);
        let mut seen = Vec::new();
        while let Some(f) = cache.pop() {
            seen.push(f);
        }
        assert_eq!(seen.len() + drained.len(), 9, "no frame lost");
    }

    #[test]
    fn share_counts_free_a_frame_once_on_its_last_release() {
        use core::sync::atomic::AtomicU16;
        let table: Vec<AtomicU16> = (0..4).map(|_| AtomicU16::new(0)).collect();
        let counts = ShareCounts::new(0x10_0000, &table);
        let f = 0x10_2000;
        // One mapping: not shared, its release is the last.
        assert!(!counts.is_shared(f));
        // Forked twice: three mappings, freed by the third release only.
        assert!(counts.share(f) && counts.share(f));
        assert_eq!(counts.extra(f), 2);
        assert!(counts.is_shared(f));
        assert!(!counts.release(f));
        assert!(!counts.release(f));
        assert!(!counts.is_shared(f));
        assert!(counts.release(f));
        // The entry is back to zero, as every free frame's.
        assert_eq!(table[2].load(core::sync::atomic::Ordering::Relaxed), 0);
        // Frames outside the table, or misaligned, are never shared.
        assert!(!counts.share(0x10_4000) && !counts.share(0xf_f000) && !counts.share(f + 1));
        assert!(counts.release(0x10_4000));
        assert_eq!(ShareCounts::table_bytes(0x10_0000, 0x10_4000), 8);
    }

    #[test]
    fn share_counts_saturate_instead_of_wrapping() {
        use core::sync::atomic::AtomicU16;
        let table = [AtomicU16::new(u16::MAX - 1)];
        let counts = ShareCounts::new(0, &table);
        assert!(counts.share(0));
        assert!(!counts.share(0));
        assert_eq!(counts.extra(0), u16::MAX);
    }

    #[test]
    fn share_counts_concurrent_releases_free_exactly_once() {
        use core::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
        for _ in 0..50 {
            let table = [AtomicU16::new(0)];
            let counts = ShareCounts::new(0, &table);
            let sharers = 8;
            for _ in 1..sharers {
                assert!(counts.share(0));
            }
            let last = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..sharers {
                    s.spawn(|| {
                        if counts.release(0) {
                            last.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            assert_eq!(last.load(Ordering::Relaxed), 1);
        }
    }
}
