//! Disks for Linux programs: `/dev/vda`, `/dev/vdb`... (block-device nodes that fsd makes for
//! each disk a driver serves, numbered as Linux numbers virtio disks) are read and written
//! here, through the disk's driver server `blk<n>` (`blkd`), one 4 KiB block per PPC call with
//! the block in this process's PPC buffer. The file server only names the disk; no byte passes
//! through it. A write of part of a block reads the block, changes it and writes it back.
//!
//! The disk is `blocks × 4 KiB` long, as `blkd` reports it (a last partial block is not
//! reachable). Writes reach the device before the call returns (the driver writes through);
//! `fsync` asks the device to make them durable (a virtio flush: the host file is synced).

use alloc::format;

use k42_guest_lib::virtio::blk::{op, BlkError, BLOCK_SIZE};
use k42_linux_abi::block::{VIRTIO_BLK_MAJOR, VIRTIO_BLK_MINORS};
use k42_linux_abi::{errno, file};
use k42_programs::devmem::own_ppc_buffer;
use k42_rt::sys;

use crate::{err, Ret};

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

    /// Reads from byte `pos` into `out`; returns the bytes read (0 at or past the end).
    pub fn read_at(&self, out: &mut [u8], pos: u64) -> Result<usize, Ret> {
        let end = self.size().min(pos.saturating_add(out.len() as u64));
        let mut at = pos;
        while at < end {
            let (block, within) = (at / BLOCK_SIZE as u64, (at % BLOCK_SIZE as u64) as usize);
            let n = (BLOCK_SIZE - within).min((end - at) as usize);
            let done = (at - pos) as usize;
            let result = crate::files::with_ppc_buffer(|| {
                self.call(op::READ, block).map_err(errno_of)?;
                out[done..done + n].copy_from_slice(&own_ppc_buffer()[within..within + n]);
                Ok(())
            });
            match result {
                Ok(()) => at += n as u64,
                Err(e) if at == pos => return Err(e),
                Err(_) => break,
            }
        }
        Ok((at - pos) as usize)
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
        let mut at = pos;
        while at < end {
            let (block, within) = (at / BLOCK_SIZE as u64, (at % BLOCK_SIZE as u64) as usize);
            let n = (BLOCK_SIZE - within).min((end - at) as usize);
            let done = (at - pos) as usize;
            let result = crate::files::with_ppc_buffer(|| {
                if n < BLOCK_SIZE {
                    // Part of a block: the rest of it is kept.
                    self.call(op::READ, block).map_err(errno_of)?;
                }
                own_ppc_buffer()[within..within + n].copy_from_slice(&data[done..done + n]);
                self.call(op::WRITE, block).map(|_| ()).map_err(errno_of)
            });
            match result {
                Ok(()) => at += n as u64,
                Err(e) if at == pos => return Err(e),
                Err(_) => break,
            }
        }
        Ok((at - pos) as usize)
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
