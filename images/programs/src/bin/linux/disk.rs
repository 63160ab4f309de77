//! Disks for Linux programs: `/dev/vda`, `/dev/vdb`... (block-device nodes that fsd makes for
//! each disk a driver serves, numbered as Linux numbers virtio disks) are read and written
//! here, through the disk's driver server `blk<n>` (`blkd`). Blocks travel in a transfer area
//! this process shares with the driver (a 16-page memory object, attached once per process and
//! driver): up to 16 blocks per PPC call. The file server only names the disk; no byte passes
//! through it. A write of part of a block reads the block, changes it and writes it back.
//!
//! The disk is `blocks × 4 KiB` long, as `blkd` reports it (a last partial block is not
//! reachable). Writes reach the device before the call returns (the driver writes through);
//! `fsync` asks the device to make them durable (a virtio flush: the host file is synced).

use alloc::format;
use alloc::vec::Vec;
use spin::Mutex;

use k42_guest_lib::virtio::blk::op::MAX_TRANSFER_PAGES;
use k42_guest_lib::virtio::blk::{op, BlkError, BLOCK_SIZE};
use k42_linux_abi::block::{VIRTIO_BLK_MAJOR, VIRTIO_BLK_MINORS};
use k42_linux_abi::{errno, file};
use k42_rt::sys;

use crate::{err, Ret};

/// This process's transfer area with one disk driver.
struct TransferArea {
    server: u64,
    object: u64,
    /// Where it is mapped here.
    at: u64,
    /// The pid it was attached under (a forked child attaches it again under its own).
    attached_by: u64,
}

/// The transfer areas, one per driver used; the lock is held through each transfer.
static AREAS: Mutex<Vec<TransferArea>> = Mutex::new(Vec::new());

/// Runs `f` with the transfer area for `server` (made and attached on first use), as
/// [`MAX_TRANSFER_PAGES`] blocks; `None` when there is none to be had.
fn with_transfer_area<T>(server: u64, f: impl FnOnce(&mut [[u8; BLOCK_SIZE]]) -> T) -> Option<T> {
    let mut areas = AREAS.lock();
    let me = k42_rt::pid();
    let index = match areas.iter().position(|a| a.server == server) {
        Some(i) => i,
        None => {
            let object = sys::memobj_create(MAX_TRANSFER_PAGES).ok()?;
            let at = crate::files::map_object_in_window_area(object, MAX_TRANSFER_PAGES)?;
            sys::memobj_grant(object, server).ok()?;
            areas.push(TransferArea {
                server,
                object,
                at,
                attached_by: 0,
            });
            areas.len() - 1
        }
    };
    let area = &mut areas[index];
    if area.attached_by != me {
        let attached = sys::ppc_call(server, [op::ATTACH, area.object, MAX_TRANSFER_PAGES, 0]);
        if attached != Ok((0, 0)) {
            return None;
        }
        area.attached_by = me;
    }
    // SAFETY: the object's pages are mapped read-write at `at` (in the window area, which
    // nothing else here maps over) for the life of the process; the lock held makes this the
    // only user here. The driver writes them only during this process's own calls.
    let blocks = unsafe {
        core::slice::from_raw_parts_mut(
            area.at as *mut [u8; BLOCK_SIZE],
            MAX_TRANSFER_PAGES as usize,
        )
    };
    Some(f(blocks))
}

/// As the process exits: each driver this process attached a transfer area to unmaps it.
pub fn detach_all() {
    let me = k42_rt::pid();
    let areas = AREAS.lock();
    for area in areas.iter().filter(|a| a.attached_by == me) {
        let _ = sys::ppc_call(area.server, [op::DETACH, 0, 0, 0]);
    }
}

/// A disk call made without a transfer area: `ENOMEM` (the memory object could not be made
/// or mapped, or the driver could not take it), said once on the console.
fn no_transfer_area<T>() -> Result<T, Ret> {
    static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, core::sync::atomic::Ordering::Relaxed) {
        k42_rt::println!("linux: no transfer area with a disk driver: disk calls fail with ENOMEM");
    }
    Err(err(errno::ENOMEM))
}

/// A piece of a transfer: `len` bytes at byte `within` of transfer-area page `page`, and at
/// byte `done` of the caller's buffer.
struct Span {
    page: usize,
    within: usize,
    len: usize,
    done: usize,
}

/// The pieces, one per block, of disk bytes `from..to` moved through a transfer area whose
/// page 0 holds block `first`, for a caller whose buffer starts at disk byte `pos`.
fn spans(first: u64, from: u64, to: u64, pos: u64) -> impl Iterator<Item = Span> {
    let bs = BLOCK_SIZE as u64;
    let mut at = from;
    core::iter::from_fn(move || {
        if at >= to {
            return None;
        }
        let within = (at % bs) as usize;
        let len = (BLOCK_SIZE - within).min((to - at) as usize);
        let span = Span {
            page: (at / bs - first) as usize,
            within,
            len,
            done: (at - pos) as usize,
        };
        at += len as u64;
        Some(span)
    })
}

/// An open disk: its driver server and geometry.
#[derive(Debug)]
pub struct Disk {
    server: u64,
    blocks: u64,
    readonly: bool,
}

/// The errno a driver's error becomes.
fn errno_of(e: BlkError) -> Ret {
    err(match e {
        BlkError::ReadOnly => errno::EROFS,
        BlkError::OutOfRange => errno::ENOSPC,
        BlkError::NoServer => errno::ENXIO,
        _ => errno::EIO,
    })
}

impl Disk {
    /// Opens the disk with device numbers `rdev` (`makedev` form), for writing if `writes`:
    /// `ENXIO` when no driver serves it (or it names a partition, which we do not have),
    /// `EROFS` when writing to a read-only disk (Linux refuses such an open too).
    pub fn open(rdev: u64, writes: bool) -> Result<Disk, Ret> {
        let (major, minor) = (file::major(rdev), file::minor(rdev));
        if major != VIRTIO_BLK_MAJOR || minor % VIRTIO_BLK_MINORS != 0 {
            return Err(err(errno::ENXIO));
        }
        let name = format!("blk{}", minor / VIRTIO_BLK_MINORS);
        let server = sys::ppc_lookup(&name).map_err(|_| err(errno::ENXIO))?;
        let mut disk = Disk {
            server,
            blocks: 0,
            readonly: true,
        };
        let info = crate::files::with_ppc_buffer(|| disk.call(op::INFO, 0)).map_err(errno_of)?;
        disk.blocks = info & !op::READONLY_BIT;
        disk.readonly = info & op::READONLY_BIT != 0;
        if writes && disk.readonly {
            return Err(err(errno::EROFS));
        }
        Ok(disk)
    }

    /// Bytes on the disk.
    pub fn size(&self) -> u64 {
        self.blocks * BLOCK_SIZE as u64
    }

    /// Whether the disk refuses writes.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// One call to the driver (the caller holds the PPC buffer): `Ok(r1)` or its error.
    fn call(&self, operation: u64, block: u64) -> Result<u64, BlkError> {
        match sys::ppc_call(self.server, [operation, block, 0, 0]) {
            Ok((0, r1)) => Ok(r1),
            Ok((code, _)) => Err(BlkError::from_code(code).unwrap_or(BlkError::Device)),
            Err(_) => Err(BlkError::NoServer),
        }
    }

    /// A multi-block request (`op::READ_BLOCKS` or `op::WRITE_BLOCKS`) on the transfer area:
    /// the blocks moved.
    fn blocks_call(&self, operation: u64, block: u64, count: u64, page: u64) -> Result<u64, Ret> {
        match sys::ppc_call(self.server, [operation, block, count, page]) {
            Ok((0, moved)) => Ok(moved),
            Ok((code, _)) => Err(errno_of(
                BlkError::from_code(code).unwrap_or(BlkError::Device),
            )),
            Err(_) => Err(errno_of(BlkError::NoServer)),
        }
    }

    /// Reads from byte `pos` into `out`; returns the bytes read (0 at or past the end).
    pub fn read_at(&self, out: &mut [u8], pos: u64) -> Result<usize, Ret> {
        let end = self.size().min(pos.saturating_add(out.len() as u64));
        if end <= pos {
            return Ok(0);
        }
        let through_area = with_transfer_area(self.server, |area| {
            let bs = BLOCK_SIZE as u64;
            let mut at = pos;
            while at < end {
                let block = at / bs;
                let count = ((end - 1) / bs - block + 1).min(MAX_TRANSFER_PAGES);
                let got = match self.blocks_call(op::READ_BLOCKS, block, count, 0) {
                    Ok(got) => got.min(count),
                    Err(e) if at == pos => return Err(e),
                    Err(_) => break,
                };
                let stop = end.min((block + got) * bs);
                for span in spans(block, at, stop, pos) {
                    out[span.done..span.done + span.len]
                        .copy_from_slice(&area[span.page][span.within..span.within + span.len]);
                }
                at = stop.max(at);
                if got < count {
                    break;
                }
            }
            Ok((at - pos) as usize)
        });
        through_area.unwrap_or_else(no_transfer_area)
    }

    /// Writes `data` at byte `pos`; returns the bytes written (`ENOSPC` at or past the end).
    pub fn write_at(&self, data: &[u8], pos: u64) -> Result<usize, Ret> {
        if self.readonly {
            return Err(err(errno::EROFS));
        }
        if data.is_empty() {
            return Ok(0);
        }
        if pos >= self.size() {
            return Err(err(errno::ENOSPC));
        }
        let end = self.size().min(pos.saturating_add(data.len() as u64));
        let through_area = with_transfer_area(self.server, |area| {
            let bs = BLOCK_SIZE as u64;
            let mut at = pos;
            while at < end {
                let block = at / bs;
                let count = ((end - 1) / bs - block + 1).min(MAX_TRANSFER_PAGES);
                let chunk_end = end.min((block + count) * bs);
                // Partial blocks at either end: the rest of them is kept.
                let head_partial = !at.is_multiple_of(bs);
                let tail_partial = !chunk_end.is_multiple_of(bs);
                let last = count - 1;
                let kept = if head_partial {
                    self.blocks_call(op::READ_BLOCKS, block, 1, 0).map(|_| ())
                } else {
                    Ok(())
                }
                .and_then(|()| {
                    if tail_partial && (last > 0 || !head_partial) {
                        self.blocks_call(op::READ_BLOCKS, block + last, 1, last)
                            .map(|_| ())
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = kept {
                    if at == pos {
                        return Err(e);
                    }
                    break;
                }
                for span in spans(block, at, chunk_end, pos) {
                    area[span.page][span.within..span.within + span.len]
                        .copy_from_slice(&data[span.done..span.done + span.len]);
                }
                let put = match self.blocks_call(op::WRITE_BLOCKS, block, count, 0) {
                    Ok(put) => put.min(count),
                    Err(e) if at == pos => return Err(e),
                    Err(_) => break,
                };
                at = chunk_end.min((block + put) * bs).max(at);
                if put < count {
                    break;
                }
            }
            Ok((at - pos) as usize)
        });
        through_area.unwrap_or_else(no_transfer_area)
    }

    /// Makes written blocks durable, then empties the driver's block cache, so later reads
    /// reach the device (`BLKFLSBUF`).
    pub fn drop_cached(&self) -> Result<(), Ret> {
        self.flush()?;
        crate::files::with_ppc_buffer(|| self.call(op::INVALIDATE, 0))
            .map(|_| ())
            .map_err(errno_of)
    }

    /// Makes written blocks durable on the device.
    pub fn flush(&self) -> Result<(), Ret> {
        if self.readonly {
            return Ok(());
        }
        match crate::files::with_ppc_buffer(|| self.call(op::FLUSH, 0)) {
            // A disk without a write cache to flush: what was written is on it.
            Ok(_) | Err(BlkError::Unsupported) => Ok(()),
            Err(e) => Err(errno_of(e)),
        }
    }
}
