//! virtio-blk (virtio 1.2 section 5.2) backed by a raw image file, or any [`DiskBackend`].
//!
//! Requests: IN, OUT, FLUSH (an fsync), GET_ID, and DISCARD / WRITE_ZEROES where the host file
//! supports them (punch-hole; zero-range with a fallback to writing zeroes). A read-only disk
//! offers VIRTIO_BLK_F_RO and completes writes with VIRTIO_BLK_S_IOERR without touching the file.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::fallocate::{fallocate, FallocateMode};

use super::chain::{read_at, write_at, Chain};
use super::{
    DeviceError, DeviceQueues, VirtioDevice, DEVICE_ID_BLOCK, VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
};

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID string.
pub const ID_LEN: usize = 20;
/// Maximum size of the request queue.
pub const QUEUE_SIZE: u16 = 256;

/// Feature: `seg_max` is valid.
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// Feature: the device is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature: `blk_size` is valid.
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
/// Feature: the FLUSH command.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// Feature: the DISCARD command.
pub const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
/// Feature: the WRITE_ZEROES command.
pub const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;

/// Request type: read.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Request type: write.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Request type: flush.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Request type: get the device ID string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Request type: discard.
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
/// Request type: write zeroes.
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

/// Status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: device or driver error.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: request not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Length of the request header (type, reserved, sector).
const HEADER_LEN: u64 = 16;
/// Length of one discard / write-zeroes segment.
const SEGMENT_LEN: u64 = 16;
/// Segments accepted in one discard or write-zeroes request.
const MAX_DISCARD_SEGMENTS: u32 = 16;
/// Bytes moved between the disk and guest memory per step.
const CHUNK: usize = 64 * 1024;
/// Size of the configuration space we expose (through `write_zeroes_may_unmap` and padding).
const CONFIG_LEN: usize = 60;

/// What the VMM parsed from `--disk PATH[,readonly][,id=NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// The raw image file (or block device).
    pub path: PathBuf,
    /// Whether the guest may only read.
    pub readonly: bool,
    /// The GET_ID string: printable ASCII, at most 20 bytes.
    pub id: Option<String>,
}

/// A `--disk` argument that could not be parsed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BlockConfigError {
    /// No path before the first comma.
    #[error("--disk needs an image path: --disk PATH[,readonly][,id=NAME]")]
    EmptyPath,
    /// An option other than `readonly` or `id=NAME`.
    #[error("unknown --disk option `{0}`: the options are `readonly` and `id=NAME`")]
    UnknownOption(String),
    /// The same option twice.
    #[error("--disk option `{0}` given twice")]
    DuplicateOption(&'static str),
    /// `id=` with nothing after it.
    #[error("--disk id= needs a name: id=NAME")]
    EmptyId,
    /// An id longer than virtio-blk's 20 bytes.
    #[error("--disk id `{0}` is longer than 20 bytes")]
    IdTooLong(String),
    /// An id with non-printable or non-ASCII characters.
    #[error("--disk id `{0}` must be printable ASCII")]
    IdNotPrintable(String),
}

impl BlockConfig {
    /// Parses `PATH[,readonly][,id=NAME]` (options in any order; a path cannot contain commas).
    pub fn parse(spec: &str) -> Result<Self, BlockConfigError> {
        let mut parts = spec.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(BlockConfigError::EmptyPath);
        }
        let mut readonly = false;
        let mut id = None;
        for opt in parts {
            if opt == "readonly" {
                if readonly {
                    return Err(BlockConfigError::DuplicateOption("readonly"));
                }
                readonly = true;
            } else if let Some(name) = opt.strip_prefix("id=") {
                if id.is_some() {
                    return Err(BlockConfigError::DuplicateOption("id"));
                }
                if name.is_empty() {
                    return Err(BlockConfigError::EmptyId);
                }
                if name.len() > ID_LEN {
                    return Err(BlockConfigError::IdTooLong(name.to_string()));
                }
                if !name.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                    return Err(BlockConfigError::IdNotPrintable(name.to_string()));
                }
                id = Some(name.to_string());
            } else {
                return Err(BlockConfigError::UnknownOption(opt.to_string()));
            }
        }
        Ok(BlockConfig {
            path: PathBuf::from(path),
            readonly,
            id,
        })
    }
}

impl FromStr for BlockConfig {
    type Err = BlockConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlockConfig::parse(s)
    }
}

/// A disk image that could not be opened.
#[derive(Debug, Error)]
pub enum BlockError {
    /// The file could not be opened.
    #[error("cannot open disk image {}: {source}", path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path is neither a regular file nor a block device.
    #[error("disk image {} is neither a regular file nor a block device", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The size could not be determined.
    #[error("cannot determine the size of disk image {}: {source}", path.display())]
    Size {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The id is longer than 20 bytes.
    #[error("disk id `{0}` is longer than 20 bytes")]
    IdTooLong(String),
}

/// Storage behind a virtio-blk device.
pub trait DiskBackend: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes completed writes durable (fsync).
    fn flush(&mut self) -> io::Result<()>;
    /// Makes completed writes durable, data only (fdatasync); used in write-through mode.
    fn sync_data(&mut self) -> io::Result<()> {
        self.flush()
    }
    /// Whether `discard` can deallocate (so DISCARD is offered).
    fn supports_discard(&self) -> bool;
    /// Deallocates a range; it then reads as zeroes.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes a range read as zeroes, deallocating it if `unmap` and supported.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
}

/// A raw image file (or block device) on the host.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    punch_hole: bool,
    zero_range: bool,
}

impl RawFile {
    /// Opens `path`, read-only if `readonly`, and probes which fallocate modes work on it.
    pub fn open(path: &Path, readonly: bool) -> Result<Self, BlockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| BlockError::Size {
            path: path.to_path_buf(),
            source,
        })?;
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(BlockError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path.to_path_buf(),
                source,
            })?;
        // Probe past the end of the file with KEEP_SIZE: a no-op on the data where supported,
        // EOPNOTSUPP where not.
        let probe = |mode| fallocate(&file, mode, true, size, SECTOR_SIZE).is_ok();
        let writable_file = !readonly && ft.is_file();
        let punch_hole = writable_file && probe(FallocateMode::PunchHole);
        let zero_range = writable_file && probe(FallocateMode::ZeroRange);
        Ok(RawFile {
            file,
            size,
            punch_hole,
            zero_range,
        })
    }
}

fn write_zeroes_slowly(
    disk: &mut dyn DiskBackend,
    mut offset: u64,
    mut len: u64,
) -> io::Result<()> {
    let zeroes = vec![0u8; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))];
    while len > 0 {
        let n = len.min(zeroes.len() as u64) as usize;
        disk.write_at(&zeroes[..n], offset)?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

impl DiskBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn supports_discard(&self) -> bool {
        self.punch_hole
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        fallocate(&self.file, FallocateMode::PunchHole, true, offset, len)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        if unmap && self.punch_hole {
            return self.discard(offset, len);
        }
        if self.zero_range {
            match fallocate(&self.file, FallocateMode::ZeroRange, true, offset, len) {
                Ok(()) => return Ok(()),
                Err(e) if e.errno() == libc::EOPNOTSUPP => self.zero_range = false,
                Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
            }
        }
        write_zeroes_slowly(self, offset, len)
    }
}

/// A disk in host memory (for tests and fuzzing).
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    /// The disk contents.
    pub data: Vec<u8>,
    /// Flushes so far.
    pub flushes: u64,
}

impl MemDisk {
    /// A zero-filled disk of `size` bytes.
    pub fn new(size: usize) -> Self {
        MemDisk {
            data: vec![0; size],
            flushes: 0,
        }
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
        if end > self.data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(start..end)
    }
}

impl DiskBackend for MemDisk {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        self.data[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, false)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let r = self.range(offset, len)?;
        self.data[r].fill(0);
        Ok(())
    }
}

/// A virtio-blk device.
pub struct Block {
    disk: Box<dyn DiskBackend>,
    readonly: bool,
    id: Option<[u8; ID_LEN]>,
    capacity: u64,
    features: u64,
    config: [u8; CONFIG_LEN],
    write_through: bool,
    buf: Vec<u8>,
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("readonly", &self.readonly)
            .field("capacity", &self.capacity)
            .field("features", &format_args!("{:#x}", self.features))
            .finish_non_exhaustive()
    }
}

/// What went wrong with one request; reported to the driver as a status byte.
enum ReqError {
    /// VIRTIO_BLK_S_IOERR, with the reason for the log.
    Io(String),
    /// VIRTIO_BLK_S_UNSUPP.
    Unsupported,
}

impl Block {
    /// Opens the image of `config`.
    pub fn open(config: &BlockConfig) -> Result<Self, BlockError> {
        let disk = RawFile::open(&config.path, config.readonly)?;
        Block::with_backend(Box::new(disk), config.readonly, config.id.as_deref())
    }

    /// A device over any backend.
    pub fn with_backend(
        disk: Box<dyn DiskBackend>,
        readonly: bool,
        id: Option<&str>,
    ) -> Result<Self, BlockError> {
        let id = match id {
            None => None,
            Some(s) if s.len() > ID_LEN => return Err(BlockError::IdTooLong(s.to_string())),
            Some(s) => {
                let mut b = [0u8; ID_LEN];
                b[..s.len()].copy_from_slice(s.as_bytes());
                Some(b)
            }
        };
        let capacity = disk.size() / SECTOR_SIZE;
        let discard = !readonly && disk.supports_discard();
        let mut features = VIRTIO_F_INDIRECT_DESC
            | VIRTIO_F_EVENT_IDX
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE
            | VIRTIO_BLK_F_FLUSH;
        if readonly {
            features |= VIRTIO_BLK_F_RO;
        } else {
            features |= VIRTIO_BLK_F_WRITE_ZEROES;
            if discard {
                features |= VIRTIO_BLK_F_DISCARD;
            }
        }
        let max_sectors = u32::try_from(capacity).unwrap_or(u32::MAX);
        let mut config = [0u8; CONFIG_LEN];
        let mut put =
            |off: usize, bytes: &[u8]| config[off..off + bytes.len()].copy_from_slice(bytes);
        put(0, &capacity.to_le_bytes());
        put(12, &u32::from(QUEUE_SIZE - 2).to_le_bytes()); // seg_max
        put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
        if discard {
            put(36, &max_sectors.to_le_bytes()); // max_discard_sectors
            put(40, &MAX_DISCARD_SEGMENTS.to_le_bytes());
            put(44, &8u32.to_le_bytes()); // discard_sector_alignment: 4 KiB
        }
        if !readonly {
            put(48, &max_sectors.to_le_bytes()); // max_write_zeroes_sectors
            put(52, &MAX_DISCARD_SEGMENTS.to_le_bytes());
            put(56, &[u8::from(discard)]); // write_zeroes_may_unmap
        }
        Ok(Block {
            disk,
            readonly,
            id,
            capacity,
            features,
            config,
            write_through: false,
            buf: Vec::new(),
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the device is read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Checks that `len` bytes at `sector` are on the disk; returns the byte offset.
    fn disk_range(&self, sector: u64, len: u64) -> Result<u64, ReqError> {
        let offset = sector
            .checked_mul(SECTOR_SIZE)
            .ok_or_else(|| ReqError::Io(format!("sector {sector} overflows")))?;
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity * SECTOR_SIZE => Ok(offset),
            _ => Err(ReqError::Io(format!(
                "{len} bytes at sector {sector} go beyond the disk's {} sectors",
                self.capacity
            ))),
        }
    }

    fn take_buf(&mut self, n: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(n, 0);
        buf
    }

    /// Executes one request; returns its status and the bytes written into data buffers.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        data_w: u64,
    ) -> (Result<(), ReqError>, u32) {
        let mut hdr = [0u8; HEADER_LEN as usize];
        if !read_at(mem, &chain.readable, 0, &mut hdr) {
            return (
                Err(ReqError::Io("request header shorter than 16 bytes".into())),
                0,
            );
        }
        let ty = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes([
            hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
        ]);
        let data_r = chain.readable_len() - HEADER_LEN;
        match ty {
            VIRTIO_BLK_T_IN => self.read(mem, chain, sector, data_r, data_w),
            VIRTIO_BLK_T_OUT => (self.write(mem, chain, sector, data_r, data_w), 0),
            VIRTIO_BLK_T_FLUSH => (
                self.disk
                    .flush()
                    .map_err(|e| ReqError::Io(format!("flush failed: {e}"))),
                0,
            ),
            VIRTIO_BLK_T_GET_ID => self.get_id(mem, chain, data_w),
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                (self.discard_or_zero(mem, chain, ty, data_r, data_w), 0)
            }
            _ => (Err(ReqError::Unsupported), 0),
        }
    }

    fn read(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        sector: u64,
        data_r: u64,
        data_w: u64,
    ) -> (Result<(), ReqError>, u32) {
        if data_r != 0 {
            return (
                Err(ReqError::Io(
                    "read with device-readable data buffers".into(),
                )),
                0,
            );
        }
        if !data_w.is_multiple_of(SECTOR_SIZE) {
            return (
                Err(ReqError::Io(format!(
                    "read of {data_w} bytes, not whole sectors"
                ))),
                0,
            );
        }
        let offset = match self.disk_range(sector, data_w) {
            Ok(o) => o,
            Err(e) => return (Err(e), 0),
        };
        let mut buf = self.take_buf(CHUNK.min(data_w as usize));
        let mut done = 0u64;
        let mut result = Ok(());
        while done < data_w {
            let n = (data_w - done).min(CHUNK as u64) as usize;
            if let Err(e) = self.disk.read_at(&mut buf[..n], offset + done) {
                result = Err(ReqError::Io(format!("read failed: {e}")));
                break;
            }
            if !write_at(mem, &chain.writable, done, &buf[..n]) {
                result = Err(ReqError::Io("guest buffer not writable".into()));
                break;
            }
            done += n as u64;
        }
        self.buf = buf;
        (result, done as u32)
    }

    fn write(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        sector: u64,
        data_r: u64,
        data_w: u64,
    ) -> Result<(), ReqError> {
        if self.readonly {
            return Err(ReqError::Io("write to a read-only disk".into()));
        }
        if data_w != 0 {
            return Err(ReqError::Io(
                "write with device-writable data buffers".into(),
            ));
        }
        if !data_r.is_multiple_of(SECTOR_SIZE) {
            return Err(ReqError::Io(format!(
                "write of {data_r} bytes, not whole sectors"
            )));
        }
        let offset = self.disk_range(sector, data_r)?;
        let mut buf = self.take_buf(CHUNK.min(data_r as usize));
        let mut done = 0u64;
        let mut result = Ok(());
        while done < data_r {
            let n = (data_r - done).min(CHUNK as u64) as usize;
            if !read_at(mem, &chain.readable, HEADER_LEN + done, &mut buf[..n]) {
                result = Err(ReqError::Io("guest buffer not readable".into()));
                break;
            }
            if let Err(e) = self.disk.write_at(&buf[..n], offset + done) {
                result = Err(ReqError::Io(format!("write failed: {e}")));
                break;
            }
            done += n as u64;
        }
        self.buf = buf;
        result?;
        if self.write_through {
            self.disk
                .sync_data()
                .map_err(|e| ReqError::Io(format!("sync failed: {e}")))?;
        }
        Ok(())
    }

    fn get_id(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        data_w: u64,
    ) -> (Result<(), ReqError>, u32) {
        let Some(id) = self.id else {
            return (Err(ReqError::Unsupported), 0);
        };
        let n = (data_w as usize).min(ID_LEN);
        if !write_at(mem, &chain.writable, 0, &id[..n]) {
            return (Err(ReqError::Io("guest buffer not writable".into())), 0);
        }
        (Ok(()), n as u32)
    }

    fn discard_or_zero(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        ty: u32,
        data_r: u64,
        data_w: u64,
    ) -> Result<(), ReqError> {
        let discard = ty == VIRTIO_BLK_T_DISCARD;
        if self.readonly {
            return Err(ReqError::Io(
                "discard or write-zeroes on a read-only disk".into(),
            ));
        }
        let feature = if discard {
            VIRTIO_BLK_F_DISCARD
        } else {
            VIRTIO_BLK_F_WRITE_ZEROES
        };
        if self.features & feature == 0 {
            return Err(ReqError::Unsupported);
        }
        if data_w != 0 || data_r == 0 || !data_r.is_multiple_of(SEGMENT_LEN) {
            return Err(ReqError::Io(
                "malformed discard/write-zeroes segments".into(),
            ));
        }
        let count = data_r / SEGMENT_LEN;
        if count > u64::from(MAX_DISCARD_SEGMENTS) {
            return Err(ReqError::Io(format!(
                "{count} segments, more than {MAX_DISCARD_SEGMENTS}"
            )));
        }
        for i in 0..count {
            let mut seg = [0u8; SEGMENT_LEN as usize];
            if !read_at(mem, &chain.readable, HEADER_LEN + i * SEGMENT_LEN, &mut seg) {
                return Err(ReqError::Io("guest buffer not readable".into()));
            }
            let sector = u64::from_le_bytes([
                seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
            ]);
            let sectors = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
            let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
            let unmap = flags & 1 != 0;
            // Unknown flags, or unmap on a discard: UNSUPP (5.2.6.1).
            if flags & !1 != 0 || (discard && unmap) {
                return Err(ReqError::Unsupported);
            }
            let len = u64::from(sectors) * SECTOR_SIZE;
            let offset = self.disk_range(sector, len)?;
            if len == 0 {
                continue;
            }
            let r = if discard {
                self.disk.discard(offset, len)
            } else {
                self.disk.write_zeroes(offset, len, unmap)
            };
            r.map_err(|e| ReqError::Io(format!("discard/write-zeroes failed: {e}")))?;
        }
        Ok(())
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        copy_config(&self.config, offset, data);
    }

    fn activate(&mut self, features: u64) -> Result<(), DeviceError> {
        // FLUSH offered but not negotiated: every write must be stable when completed
        // (5.2.6.1, the first case of "a write becomes stable").
        self.write_through = features & VIRTIO_BLK_F_FLUSH == 0;
        Ok(())
    }

    fn process_queue(
        &mut self,
        queue: usize,
        queues: &mut DeviceQueues<'_>,
    ) -> Result<(), DeviceError> {
        let mem = queues.mem();
        while let Some(chain) = queues.pop(queue)? {
            let wlen = chain.writable_len();
            if wlen == 0 {
                return Err(DeviceError::MalformedRequest {
                    queue,
                    reason: "no device-writable status byte",
                });
            }
            let data_w = wlen - 1;
            let (result, written) = self.execute(mem, &chain, data_w);
            let status = match result {
                Ok(()) => VIRTIO_BLK_S_OK,
                Err(ReqError::Unsupported) => VIRTIO_BLK_S_UNSUPP,
                Err(ReqError::Io(reason)) => {
                    queues.log(format_args!("request failed with IOERR: {reason}"));
                    VIRTIO_BLK_S_IOERR
                }
            };
            if !write_at(mem, &chain.writable, data_w, &[status]) {
                return Err(DeviceError::MalformedRequest {
                    queue,
                    reason: "status byte not writable",
                });
            }
            queues.add_used(queue, chain.head, written.saturating_add(1))?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.write_through = false;
    }
}

/// Copies configuration bytes at `offset` into `data`; bytes past the end read as zero.
pub(crate) fn copy_config(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_disk_specs() {
        assert_eq!(
            BlockConfig::parse("/a/b.img").unwrap(),
            BlockConfig {
                path: "/a/b.img".into(),
                readonly: false,
                id: None
            }
        );
        assert_eq!(
            BlockConfig::parse("d.img,id=root,readonly").unwrap(),
            BlockConfig {
                path: "d.img".into(),
                readonly: true,
                id: Some("root".into())
            }
        );
        assert_eq!(BlockConfig::parse(""), Err(BlockConfigError::EmptyPath));
        assert_eq!(
            BlockConfig::parse(",readonly"),
            Err(BlockConfigError::EmptyPath)
        );
        assert_eq!(
            BlockConfig::parse("d.img,ro"),
            Err(BlockConfigError::UnknownOption("ro".into()))
        );
        assert_eq!(
            BlockConfig::parse("d.img,readonly,readonly"),
            Err(BlockConfigError::DuplicateOption("readonly"))
        );
        assert_eq!(
            BlockConfig::parse("d.img,id="),
            Err(BlockConfigError::EmptyId)
        );
        assert!(matches!(
            BlockConfig::parse("d.img,id=012345678901234567890"),
            Err(BlockConfigError::IdTooLong(_))
        ));
        assert!(matches!(
            BlockConfig::parse("d.img,id=a\tb"),
            Err(BlockConfigError::IdNotPrintable(_))
        ));
        assert_eq!(
            "d.img,id=01234567890123456789"
                .parse::<BlockConfig>()
                .unwrap()
                .id
                .as_deref(),
            Some("01234567890123456789")
        );
        let msg = BlockConfig::parse("x,foo").unwrap_err().to_string();
        assert!(msg.contains("readonly") && msg.contains("id=NAME"), "{msg}");
    }

    #[test]
    fn config_space_layout() {
        let b = Block::with_backend(Box::new(MemDisk::new(1 << 20)), false, None).unwrap();
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 2048);
        let mut past = [0xffu8; 4];
        b.read_config(4096, &mut past);
        assert_eq!(past, [0; 4]);
        assert_ne!(b.features() & VIRTIO_BLK_F_DISCARD, 0);
        let ro = Block::with_backend(Box::new(MemDisk::new(1 << 20)), true, None).unwrap();
        assert_ne!(ro.features() & VIRTIO_BLK_F_RO, 0);
        assert_eq!(
            ro.features() & (VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES),
            0
        );
    }

    #[test]
    fn raw_file_probe_and_zeroing() {
        let tmp = vmm_sys_util::tempfile::TempFile::new().unwrap();
        tmp.as_file().set_len(64 * 1024).unwrap();
        tmp.as_file().write_all_at(&[0xaa; 8192], 0).unwrap();
        let mut f = RawFile::open(tmp.as_path(), false).unwrap();
        assert_eq!(f.size(), 64 * 1024);
        f.write_zeroes(512, 1024, false).unwrap();
        f.write_zeroes(4096, 4096, true).unwrap();
        let mut buf = vec![0u8; 8192];
        f.read_at(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0xaa));
        assert!(buf[512..1536].iter().all(|&b| b == 0));
        assert!(buf[1536..4096].iter().all(|&b| b == 0xaa));
        assert!(buf[4096..].iter().all(|&b| b == 0));
        let ro = RawFile::open(tmp.as_path(), true).unwrap();
        assert!(!ro.supports_discard());
        assert!(matches!(
            RawFile::open(Path::new("/nonexistent/disk.img"), true),
            Err(BlockError::Open { .. })
        ));
        assert!(matches!(
            RawFile::open(Path::new("/tmp"), true),
            Err(BlockError::NotAFile { .. }) | Err(BlockError::Open { .. })
        ));
    }
}
