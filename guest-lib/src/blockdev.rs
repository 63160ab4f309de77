//! The block-device object a disk driver serves: a clustered object whose reps are the CPUs'
//! parts of one block cache (K42's file cache manager with a distributed hash table of cached
//! blocks), in front of the driver's device ([`BlockBackend`]).
//!
//! Each CPU's rep caches the blocks read or written through it in its own part (a hash table
//! over page-sized slots, [`BlockCache`]), so a hit takes no lock another CPU contends for. A
//! directory at the root records which CPUs' parts hold each block. A block missing from the
//! caller's part is copied from another part that holds it when there is one (no device
//! request), else read from the device; either way it then joins the caller's part. A write
//! goes through to the device before it returns, and the block leaves every other part: no
//! part ever holds a stale copy, and the device always has every byte (the cache never holds
//! the only copy of anything).
//!
//! Multi-block calls ([`BlockDevice::read_blocks`], [`BlockDevice::write_blocks`]) reach the
//! device in runs: consecutive blocks that no part holds are read in one device request, and
//! a write moves up to [`BlockBackend::max_run`] blocks per request.
//!
//! Locks: a CPU's part alone for a local hit; otherwise the directory, then the parts (and the
//! device) under it. The device serves one request at a time.
//!
//! The object is reached through [`crate::cobj`] like any clustered object, so a later driver
//! may replace it (a restarted device, another cache policy) by hot-swapping.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::cobj::{PerCpuReps, Root};
use crate::sync::{counters, AtomicU64, Mutex, Ordering};
use crate::virtio::blk::{BlkError, BLOCK_SIZE};
use crate::virtio::cache::BlockCache;

/// The device under the cache: what a driver implements.
pub trait BlockBackend: Send {
    /// Blocks of [`BLOCK_SIZE`] bytes.
    fn blocks(&self) -> u64;
    /// Whether the device refuses writes.
    fn readonly(&self) -> bool;
    /// Most blocks one [`Self::read`] or [`Self::write`] is given (at least 1).
    fn max_run(&self) -> usize;
    /// Reads blocks `first..first + out.len()` into `out` (in range, at most
    /// [`Self::max_run`]), for a call on `cpu`.
    fn read(
        &mut self,
        first: u64,
        out: &mut [[u8; BLOCK_SIZE]],
        cpu: usize,
    ) -> Result<(), BlkError>;
    /// Writes `data` to blocks `first..first + data.len()` (on the device when it returns;
    /// in range, at most [`Self::max_run`]), for a call on `cpu`. On an error, any of them may
    /// have been written.
    fn write(&mut self, first: u64, data: &[[u8; BLOCK_SIZE]], cpu: usize) -> Result<(), BlkError>;
    /// Makes earlier writes durable, for a call on `cpu`.
    fn flush(&mut self, cpu: usize) -> Result<(), BlkError>;
}

/// How a CPU's part of the cache has served reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads found in the caller's own part.
    pub local_hits: u64,
    /// Reads copied from another CPU's part.
    pub peer_hits: u64,
    /// Blocks read from the device.
    pub device_reads: u64,
}

impl CacheStats {
    /// The sum of two counts.
    pub fn plus(self, other: CacheStats) -> CacheStats {
        CacheStats {
            local_hits: self.local_hits + other.local_hits,
            peer_hits: self.peer_hits + other.peer_hits,
            device_reads: self.device_reads + other.device_reads,
        }
    }
}

/// The block-device interface (one rep per CPU).
pub trait BlockDevice: Send + Sync {
    /// Blocks of [`BLOCK_SIZE`] bytes.
    fn blocks(&self) -> u64;
    /// Whether the device refuses writes.
    fn readonly(&self) -> bool;
    /// Reads blocks from `first` on into `out`; returns how many (fewer at the end of the
    /// disk, or when the device fails after the first). `OutOfRange` when `first` is past the
    /// end; a failure on the first block is its error.
    fn read_blocks(&self, first: u64, out: &mut [[u8; BLOCK_SIZE]]) -> Result<usize, BlkError>;
    /// Writes `data` to blocks from `first` on, through to the device; returns how many, as
    /// [`Self::read_blocks`] does.
    fn write_blocks(&self, first: u64, data: &[[u8; BLOCK_SIZE]]) -> Result<usize, BlkError>;
    /// Reads `block` into `out`.
    fn read(&self, block: u64, out: &mut [u8; BLOCK_SIZE]) -> Result<(), BlkError> {
        self.read_blocks(block, core::slice::from_mut(out))
            .map(|_| ())
    }
    /// Writes `data` to `block`, through to the device.
    fn write(&self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), BlkError> {
        self.write_blocks(block, core::slice::from_ref(data))
            .map(|_| ())
    }
    /// Makes earlier writes durable.
    fn flush(&self) -> Result<(), BlkError>;
    /// Empties every CPU's part (later reads go to the device).
    fn invalidate(&self);
    /// How this CPU's part has served reads.
    fn stats(&self) -> CacheStats;
}

/// State shared by the reps: the device, the directory and every CPU's part.
struct Shared<B> {
    backend: Mutex<B>,
    blocks: u64,
    readonly: bool,
    /// Which CPUs' parts hold each cached block (bit `c`: CPU `c`).
    directory: Mutex<BTreeMap<u64, u64>>,
    /// CPU `c`'s part; only CPU `c` adds to it or looks blocks up in it for itself.
    parts: Box<[Mutex<BlockCache>]>,
    /// Reads CPU `c` copied from another part.
    peer_hits: Box<[AtomicU64]>,
    /// Blocks CPU `c` read from the device.
    device_reads: Box<[AtomicU64]>,
}

/// CPU `cpu`'s rep.
struct CpuRep<B> {
    shared: Arc<Shared<B>>,
    cpu: usize,
}

fn make_rep<B: BlockBackend + 'static>(
    shared: &Arc<Shared<B>>,
    cpu: usize,
) -> Box<dyn BlockDevice> {
    Box::new(CpuRep {
        shared: Arc::clone(shared),
        cpu,
    })
}

/// Most CPUs the directory can name.
pub const MAX_CPUS: usize = 64;

/// The root of a block-device object over `backend` for `cpus` CPUs (at most [`MAX_CPUS`]),
/// each CPU's part holding up to `blocks_per_cpu` blocks.
pub fn root<B: BlockBackend + 'static>(
    backend: B,
    cpus: usize,
    blocks_per_cpu: usize,
) -> Box<dyn Root<dyn BlockDevice>> {
    let cpus = cpus.clamp(1, MAX_CPUS);
    let shared = Shared {
        blocks: backend.blocks(),
        readonly: backend.readonly(),
        backend: Mutex::new(backend),
        directory: Mutex::new(BTreeMap::new()),
        parts: (0..cpus)
            .map(|_| Mutex::new(BlockCache::new(blocks_per_cpu)))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
        peer_hits: counters(cpus),
        device_reads: counters(cpus),
    };
    Box::new(PerCpuReps::new(cpus, shared, make_rep::<B>))
}

impl<B: BlockBackend> CpuRep<B> {
    fn bit(&self) -> u64 {
        1 << self.cpu
    }

    /// Blocks `first..` to consider for a call of `wanted` blocks: `OutOfRange` past the end.
    fn in_range(&self, first: u64, wanted: usize) -> Result<usize, BlkError> {
        let left = self
            .shared
            .blocks
            .checked_sub(first)
            .filter(|&left| left > 0)
            .ok_or(BlkError::OutOfRange)?;
        Ok(wanted.min(usize::try_from(left).unwrap_or(usize::MAX)))
    }

    /// Copies `block` into `out` from another CPU's part, if one holds it (the caller holds
    /// the directory).
    fn copy_from_peer(
        &self,
        directory: &BTreeMap<u64, u64>,
        block: u64,
        out: &mut [u8; BLOCK_SIZE],
    ) -> bool {
        let holders = directory.get(&block).copied().unwrap_or(0) & !self.bit();
        let copied = (holders != 0)
            .then(|| holders.trailing_zeros() as usize)
            .and_then(|peer| {
                let part = self.shared.parts[peer].lock();
                part.peek(block).map(|data| out.copy_from_slice(data))
            });
        copied.is_some()
    }

    /// Takes `block` out of every part (the caller holds the directory).
    fn forget(&self, directory: &mut BTreeMap<u64, u64>, block: u64) {
        let holders = directory.remove(&block).unwrap_or(0);
        for cpu in (0..self.shared.parts.len()).filter(|&c| holders & (1 << c) != 0) {
            self.shared.parts[cpu].lock().remove(block);
        }
    }

    /// Puts `data` in this CPU's part as `block`, keeping the directory in step (the caller
    /// holds it).
    fn keep(&self, directory: &mut BTreeMap<u64, u64>, block: u64, data: &[u8; BLOCK_SIZE]) {
        let evicted = self.shared.parts[self.cpu].lock().insert(block, data);
        if let Some(old) = evicted {
            if let Some(holders) = directory.get_mut(&old) {
                *holders &= !self.bit();
                if *holders == 0 {
                    directory.remove(&old);
                }
            }
        }
        *directory.entry(block).or_insert(0) |= self.bit();
    }
}

impl<B: BlockBackend> BlockDevice for CpuRep<B> {
    fn blocks(&self) -> u64 {
        self.shared.blocks
    }

    fn readonly(&self) -> bool {
        self.shared.readonly
    }

    fn read_blocks(&self, first: u64, out: &mut [[u8; BLOCK_SIZE]]) -> Result<usize, BlkError> {
        let shared = &*self.shared;
        let wanted = self.in_range(first, out.len())?;
        let mut done = 0;
        while done < wanted {
            let block = first + done as u64;
            if let Some(data) = shared.parts[self.cpu].lock().get(block) {
                out[done].copy_from_slice(data);
                done += 1;
                continue;
            }
            let mut directory = shared.directory.lock();
            if self.copy_from_peer(&directory, block, &mut out[done]) {
                shared.peer_hits[self.cpu].fetch_add(1, Ordering::Relaxed);
                self.keep(&mut directory, block, &out[done]);
                done += 1;
                continue;
            }
            // Read this block and the ones after it that no part holds in one request.
            let mut backend = shared.backend.lock();
            let limit = wanted.min(done + backend.max_run().max(1));
            let mut end = done + 1;
            while end < limit && !directory.contains_key(&(first + end as u64)) {
                end += 1;
            }
            match backend.read(block, &mut out[done..end], self.cpu) {
                Ok(()) => {}
                Err(e) if done == 0 => return Err(e),
                Err(_) => return Ok(done),
            }
            drop(backend);
            let run = (end - done) as u64;
            shared.device_reads[self.cpu].fetch_add(run, Ordering::Relaxed);
            for (i, data) in out.iter().enumerate().take(end).skip(done) {
                self.keep(&mut directory, first + i as u64, data);
            }
            done = end;
        }
        Ok(done)
    }

    fn write_blocks(&self, first: u64, data: &[[u8; BLOCK_SIZE]]) -> Result<usize, BlkError> {
        let shared = &*self.shared;
        let wanted = self.in_range(first, data.len())?;
        let mut directory = shared.directory.lock();
        let mut done = 0;
        while done < wanted {
            let mut backend = shared.backend.lock();
            let end = wanted.min(done + backend.max_run().max(1));
            let written = backend.write(first + done as u64, &data[done..end], self.cpu);
            drop(backend);
            // Whatever the outcome, no part keeps a copy that may differ from the device.
            for i in done..end {
                self.forget(&mut directory, first + i as u64);
            }
            match written {
                Ok(()) => {}
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
            for (i, block) in data.iter().enumerate().take(end).skip(done) {
                self.keep(&mut directory, first + i as u64, block);
            }
            done = end;
        }
        Ok(done)
    }

    fn flush(&self) -> Result<(), BlkError> {
        self.shared.backend.lock().flush(self.cpu)
    }

    fn invalidate(&self) {
        let mut directory = self.shared.directory.lock();
        for part in self.shared.parts.iter() {
            part.lock().clear();
        }
        directory.clear();
    }

    fn stats(&self) -> CacheStats {
        let (hits, _) = self.shared.parts[self.cpu].lock().stats();
        CacheStats {
            local_hits: hits,
            peer_hits: self.shared.peer_hits[self.cpu].load(Ordering::Relaxed),
            device_reads: self.shared.device_reads[self.cpu].load(Ordering::Relaxed),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use super::*;
    use crate::cobj::testing::{on, ThreadCpus};
    use crate::cobj::{CoManager, CoRef};
    use std::sync::atomic::AtomicUsize;
    use std::thread;
    use std::vec;

    /// A disk in memory that counts its requests and may fail at one block.
    struct MemoryDisk {
        data: Arc<Mutex<Vec<[u8; BLOCK_SIZE]>>>,
        reads: Arc<AtomicUsize>,
        readonly: bool,
        max_run: usize,
        /// A request including this block fails (before changing anything).
        failing: Arc<AtomicU64>,
    }

    impl MemoryDisk {
        fn check(&self, first: u64, count: usize) -> Result<(), BlkError> {
            let failing = self.failing.load(Ordering::SeqCst);
            assert!(count >= 1 && count <= self.max_run, "a run of {count}");
            assert!(first + count as u64 <= self.blocks(), "in range");
            if (first..first + count as u64).contains(&failing) {
                return Err(BlkError::Io);
            }
            Ok(())
        }
    }

    impl BlockBackend for MemoryDisk {
        fn blocks(&self) -> u64 {
            self.data.lock().len() as u64
        }
        fn readonly(&self) -> bool {
            self.readonly
        }
        fn max_run(&self) -> usize {
            self.max_run
        }
        fn read(
            &mut self,
            first: u64,
            out: &mut [[u8; BLOCK_SIZE]],
            _: usize,
        ) -> Result<(), BlkError> {
            self.check(first, out.len())?;
            self.reads.fetch_add(1, Ordering::SeqCst);
            let data = self.data.lock();
            out.copy_from_slice(&data[first as usize..first as usize + out.len()]);
            Ok(())
        }
        fn write(
            &mut self,
            first: u64,
            data: &[[u8; BLOCK_SIZE]],
            _: usize,
        ) -> Result<(), BlkError> {
            if self.readonly {
                return Err(BlkError::ReadOnly);
            }
            self.check(first, data.len())?;
            self.data.lock()[first as usize..first as usize + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self, _: usize) -> Result<(), BlkError> {
            Ok(())
        }
    }

    struct Setup {
        cos: CoManager<ThreadCpus>,
        disk: CoRef<dyn BlockDevice>,
        data: Arc<Mutex<Vec<[u8; BLOCK_SIZE]>>>,
        reads: Arc<AtomicUsize>,
        failing: Arc<AtomicU64>,
    }

    fn setup(cpus: usize, blocks: usize, per_cpu: usize, readonly: bool) -> Setup {
        setup_runs(cpus, blocks, per_cpu, readonly, 1)
    }

    fn setup_runs(
        cpus: usize,
        blocks: usize,
        per_cpu: usize,
        readonly: bool,
        max_run: usize,
    ) -> Setup {
        let data = Arc::new(Mutex::new(
            (0..blocks)
                .map(|b| [b as u8; BLOCK_SIZE])
                .collect::<Vec<_>>(),
        ));
        let reads = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicU64::new(u64::MAX));
        let backend = MemoryDisk {
            data: Arc::clone(&data),
            reads: Arc::clone(&reads),
            readonly,
            max_run,
            failing: Arc::clone(&failing),
        };
        let cos = CoManager::new(ThreadCpus(cpus), 4);
        let disk = cos
            .create("disk", root(backend, cpus, per_cpu))
            .expect("room for the object");
        Setup {
            cos,
            disk,
            data,
            reads,
            failing,
        }
    }

    fn read(s: &Setup, cpu: usize, block: u64) -> Result<u8, BlkError> {
        on(cpu, || {
            let mut out = [0u8; BLOCK_SIZE];
            s.cos.call(s.disk, |d| d.read(block, &mut out))?;
            assert!(
                out.iter().all(|&b| b == out[0]),
                "a block is one byte value"
            );
            Ok(out[0])
        })
    }

    fn write(s: &Setup, cpu: usize, block: u64, byte: u8) -> Result<(), BlkError> {
        on(cpu, || {
            s.cos.call(s.disk, |d| d.write(block, &[byte; BLOCK_SIZE]))
        })
    }

    /// Blocks the directory lists, and whether each listed copy is really in its part.
    fn directory(s: &Setup) -> (usize, bool) {
        s.cos.with_root(s.disk, |root| {
            let root = root
                .as_any()
                .downcast_ref::<PerCpuReps<dyn BlockDevice, Shared<MemoryDisk>>>()
                .expect("the block-device root");
            let shared = root.shared();
            let directory = shared.directory.lock();
            let true_to_parts = directory.iter().all(|(&block, &holders)| {
                (0..shared.parts.len()).all(|c| {
                    (holders & (1 << c) != 0) == shared.parts[c].lock().peek(block).is_some()
                })
            });
            (directory.len(), true_to_parts)
        })
    }

    fn total(s: &Setup) -> CacheStats {
        let mut sum = CacheStats::default();
        s.cos
            .for_each_rep(s.disk, |_, rep| sum = sum.plus(rep.stats()));
        sum
    }

    #[test]
    fn a_block_read_on_one_cpu_is_copied_to_another_without_the_device() {
        let s = setup(3, 16, 4, false);
        assert_eq!(read(&s, 0, 5), Ok(5));
        assert_eq!(read(&s, 0, 5), Ok(5));
        assert_eq!(read(&s, 1, 5), Ok(5));
        assert_eq!(read(&s, 1, 5), Ok(5));
        assert_eq!(s.reads.load(Ordering::SeqCst), 1, "one device read in all");
        let stats = total(&s);
        assert_eq!(
            stats,
            CacheStats {
                local_hits: 2,
                peer_hits: 1,
                device_reads: 1
            }
        );
        assert_eq!(s.cos.objects()[0].reps, 2, "reps only where called");
        assert_eq!(read(&s, 2, 16), Err(BlkError::OutOfRange));
    }

    #[test]
    fn a_write_leaves_no_stale_copy_on_any_cpu() {
        let s = setup(3, 16, 4, false);
        for cpu in 0..3 {
            assert_eq!(read(&s, cpu, 7), Ok(7));
        }
        write(&s, 1, 7, 0xaa).unwrap();
        assert_eq!(s.data.lock()[7][0], 0xaa, "written through to the device");
        let before = s.reads.load(Ordering::SeqCst);
        for cpu in 0..3 {
            assert_eq!(read(&s, cpu, 7), Ok(0xaa), "cpu {cpu} sees the write");
        }
        assert_eq!(
            s.reads.load(Ordering::SeqCst),
            before,
            "the writer's copy serves the others"
        );
        // A refused write changes no cached copy.
        let ro = setup(2, 4, 2, true);
        assert_eq!(read(&ro, 0, 1), Ok(1));
        assert_eq!(write(&ro, 1, 1, 9), Err(BlkError::ReadOnly));
        assert_eq!(read(&ro, 0, 1), Ok(1));
        assert_eq!(read(&ro, 1, 1), Ok(1));
    }

    #[test]
    fn eviction_and_invalidation_keep_the_directory_true() {
        let s = setup(2, 64, 4, false);
        for block in 0..20 {
            assert_eq!(read(&s, 0, block), Ok(block as u8));
        }
        // CPU 0 holds only its last few: the others come from the device again, not from a
        // directory entry that outlived its copy.
        let before = s.reads.load(Ordering::SeqCst);
        for block in 0..16 {
            assert_eq!(read(&s, 1, block), Ok(block as u8));
        }
        let device = s.reads.load(Ordering::SeqCst) - before;
        assert!((12..=16).contains(&device), "{device} device reads");
        let (listed, true_to_parts) = directory(&s);
        assert!(true_to_parts, "the directory names only copies that exist");
        assert!(listed <= 8, "{listed} blocks listed for two parts of 4");
        on(0, || s.cos.call(s.disk, |d| d.invalidate()));
        let before = s.reads.load(Ordering::SeqCst);
        assert_eq!(read(&s, 1, 15), Ok(15));
        assert_eq!(
            s.reads.load(Ordering::SeqCst),
            before + 1,
            "emptied everywhere"
        );
    }

    /// Reads `count` blocks from `first` on `cpu`: the number read and each block's byte.
    fn read_run(s: &Setup, cpu: usize, first: u64, count: usize) -> Result<Vec<u8>, BlkError> {
        on(cpu, || {
            let mut out = vec![[0u8; BLOCK_SIZE]; count];
            let got = s.cos.call(s.disk, |d| d.read_blocks(first, &mut out))?;
            Ok(out[..got].iter().map(|b| b[0]).collect())
        })
    }

    #[test]
    fn multi_block_reads_go_to_the_device_in_runs() {
        let s = setup_runs(2, 32, 16, false, 4);
        assert_eq!(read(&s, 1, 3), Ok(3));
        assert_eq!(read(&s, 0, 6), Ok(6));
        let before = s.reads.load(Ordering::SeqCst);
        // 0..3 one request, 3 from CPU 1's part, 4..6 one request, 6 from its own part,
        // 7..11 one request (a run of 4), 11..12 one more.
        let bytes = read_run(&s, 0, 0, 12).unwrap();
        assert_eq!(bytes, (0..12).collect::<Vec<u8>>());
        assert_eq!(s.reads.load(Ordering::SeqCst) - before, 4);
        let stats = total(&s);
        assert_eq!(stats.device_reads, 2 + 10, "blocks from the device");
        assert_eq!(stats.peer_hits, 1);
        // Now all twelve are cached on CPU 0: no request at all.
        assert_eq!(read_run(&s, 0, 0, 12).unwrap().len(), 12);
        assert_eq!(s.reads.load(Ordering::SeqCst) - before, 4);
        // The end of the disk shortens a call; past it is an error.
        assert_eq!(read_run(&s, 1, 30, 5), Ok(vec![30, 31]));
        assert_eq!(read_run(&s, 1, 32, 1), Err(BlkError::OutOfRange));
        assert_eq!(read_run(&s, 1, u64::MAX, 1), Err(BlkError::OutOfRange));
        // A failure after the first run shortens the call; on the first block it is the error.
        s.failing.store(20, Ordering::SeqCst);
        assert_eq!(read_run(&s, 1, 16, 8), Ok(vec![16, 17, 18, 19]));
        assert_eq!(read_run(&s, 1, 20, 2), Err(BlkError::Io));
        assert!(directory(&s).1);
    }

    #[test]
    fn multi_block_writes_reach_the_device_and_drop_stale_copies() {
        let s = setup_runs(2, 32, 16, false, 4);
        assert_eq!(read_run(&s, 1, 0, 10).unwrap().len(), 10);
        let data: Vec<[u8; BLOCK_SIZE]> = (0..10).map(|i| [0x80 | i as u8; BLOCK_SIZE]).collect();
        let written = on(0, || s.cos.call(s.disk, |d| d.write_blocks(0, &data)));
        assert_eq!(written, Ok(10));
        for block in 0..10 {
            assert_eq!(s.data.lock()[block][0], 0x80 | block as u8, "on the device");
        }
        let before = s.reads.load(Ordering::SeqCst);
        let expected: Vec<u8> = (0..10).map(|i| 0x80 | i).collect();
        assert_eq!(
            read_run(&s, 1, 0, 10),
            Ok(expected.clone()),
            "no stale copy"
        );
        assert_eq!(read_run(&s, 0, 0, 10), Ok(expected));
        assert_eq!(
            s.reads.load(Ordering::SeqCst),
            before,
            "served by the caches"
        );
        // A run that fails leaves no cached copy of its blocks, and stops the call.
        s.failing.store(6, Ordering::SeqCst);
        let written = on(0, || {
            s.cos
                .call(s.disk, |d| d.write_blocks(0, &[[7; BLOCK_SIZE]; 10]))
        });
        assert_eq!(written, Ok(4));
        assert_eq!(read_run(&s, 1, 4, 3), Err(BlkError::Io), "not from a cache");
        assert!(directory(&s).1);
        s.failing.store(u64::MAX, Ordering::SeqCst);
        assert_eq!(read_run(&s, 1, 4, 1), Ok(vec![0x84]), "the device's bytes");
        assert_eq!(read_run(&s, 1, 0, 4), Ok(vec![7; 4]));
        let past = on(0, || s.cos.call(s.disk, |d| d.write_blocks(32, &data)));
        assert_eq!(past, Err(BlkError::OutOfRange));
    }

    #[test]
    fn cpus_reading_and_writing_at_once_end_coherent() {
        const CPUS: usize = 4;
        const BLOCKS: u64 = 24;
        let s = Arc::new(setup(CPUS, BLOCKS as usize, 6, false));
        let threads: Vec<_> = (0..CPUS)
            .map(|cpu| {
                let s = Arc::clone(&s);
                thread::spawn(move || {
                    let mut x = cpu as u64 * 7919 + 1;
                    for _ in 0..3000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let block = x % BLOCKS;
                        if x.is_multiple_of(5) {
                            write(&s, cpu, block, (x >> 8) as u8).unwrap();
                        } else {
                            read(&s, cpu, block).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            directory(&s).1,
            "the directory names only copies that exist"
        );
        for cpu in 0..CPUS {
            for block in 0..BLOCKS {
                let device = s.data.lock()[block as usize][0];
                assert_eq!(read(&s, cpu, block), Ok(device), "cpu {cpu} block {block}");
            }
        }
    }
}
