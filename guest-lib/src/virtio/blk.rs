//! A virtio-blk driver (virtio 1.x, section 5.2) with one request in flight at a time, each
//! moving up to [`MAX_REQUEST_BLOCKS`] consecutive 4 KiB blocks, and the protocol its server
//! (`blkd`) speaks to clients by PPC.
//!
//! DMA memory ([`DMA_PAGES`] pages): the queue's page, a page holding the request header and
//! the status byte, and [`MAX_REQUEST_BLOCKS`] data pages (block `i` of a request in data page
//! `i`; pages that are physically adjacent share one descriptor).

use super::queue::{Buffer, Dma, QueueError, SplitQueue};
use super::transport::{Regs, Transport, TransportError, STATUS_NEEDS_RESET};

/// Bytes of a block (the unit clients read and write).
pub const BLOCK_SIZE: usize = 4096;
/// Bytes of a virtio-blk sector.
pub const SECTOR_SIZE: u64 = 512;
const SECTORS_PER_BLOCK: u64 = BLOCK_SIZE as u64 / SECTOR_SIZE;
/// Most blocks one request moves.
pub const MAX_REQUEST_BLOCKS: usize = 16;
/// Pages of DMA memory the driver needs.
pub const DMA_PAGES: usize = 2 + MAX_REQUEST_BLOCKS;
const QUEUE_PAGE: usize = 0;
const HEADER: usize = 4096;
const STATUS: usize = HEADER + 16;
/// Offset of the first data page in the DMA memory (data page `i` at `DATA + i * BLOCK_SIZE`).
pub const DATA: usize = 8192;
/// Entries of the request queue (a request of every data page in its own descriptor, the
/// header and the status fit).
pub const QUEUE_SIZE: u16 = 32;

/// Feature: the device is read-only.
pub const F_RO: u64 = 1 << 5;
/// Feature: the device has a write cache and takes FLUSH.
pub const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// A block request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read blocks `block..block + count` into data pages `0..count`.
    Read {
        /// The first block.
        block: u64,
        /// Blocks, 1 to [`BlkDevice::max_request_blocks`].
        count: usize,
    },
    /// Write data pages `0..count` to blocks `block..block + count`.
    Write {
        /// The first block.
        block: u64,
        /// Blocks, 1 to [`BlkDevice::max_request_blocks`].
        count: usize,
    },
    /// Make written blocks durable.
    Flush,
}

/// Why a block operation failed; also the `r0` a `blkd` client gets back (0 is success).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The device reported an I/O error.
    Io = 1,
    /// The device is read-only and refused a write.
    ReadOnly = 2,
    /// The block is beyond the end of the device.
    OutOfRange = 3,
    /// The device does not support the request (or it is longer than the queue takes).
    Unsupported = 4,
    /// The device needs a reset or broke the queue protocol.
    Device = 5,
    /// Not a virtio-blk device, or it could not be set up.
    Setup = 6,
    /// An operation code `blkd` does not know.
    UnknownOp = 7,
    /// No `blkd` serves that disk.
    NoServer = 8,
    /// The caller has no transfer area attached (`op::ATTACH`), or the one it named cannot
    /// be mapped, or a multi-block request does not fit in it.
    NoTransferArea = 9,
}

impl BlkError {
    /// The error a non-zero `r0` stands for.
    pub fn from_code(code: u64) -> Option<BlkError> {
        [
            BlkError::Io,
            BlkError::ReadOnly,
            BlkError::OutOfRange,
            BlkError::Unsupported,
            BlkError::Device,
            BlkError::Setup,
            BlkError::UnknownOp,
            BlkError::NoServer,
            BlkError::NoTransferArea,
        ]
        .into_iter()
        .find(|e| *e as u64 == code)
    }
}

impl From<TransportError> for BlkError {
    fn from(_: TransportError) -> BlkError {
        BlkError::Setup
    }
}

impl From<QueueError> for BlkError {
    fn from(_: QueueError) -> BlkError {
        BlkError::Device
    }
}

/// `blkd`'s PPC protocol: `a0` is the operation; block data travels in the caller's PPC
/// buffer; `r0` is 0 or a [`BlkError`] code.
pub mod op {
    /// `info() -> (0, blocks | READONLY_BIT if read-only)`.
    pub const INFO: u64 = 1;
    /// `read(block = a1)`: the block into the caller's buffer.
    pub const READ: u64 = 2;
    /// `write(block = a1)`: the caller's buffer to the block (written through to the device).
    pub const WRITE: u64 = 3;
    /// `flush()`: a virtio FLUSH (the host file is synced).
    pub const FLUSH: u64 = 4;
    /// `stats() -> (0, hits << 32 | misses)` of the block cache (hits on every CPU's part;
    /// misses are device reads).
    pub const STATS: u64 = 5;
    /// `invalidate()`: empties the block cache (later reads go to the device).
    pub const INVALIDATE: u64 = 6;
    /// `waits() -> (0, requests << 32 | times the driver blocked for the device's interrupt)`.
    pub const WAITS: u64 = 7;
    /// `peer_hits() -> (0, reads copied from another CPU's part of the cache << 32 | CPUs
    /// with a part)`.
    pub const PEER_HITS: u64 = 8;
    /// `attach(object = a1, pages = a2)`: the memory object `object` (1 to
    /// [`MAX_TRANSFER_PAGES`] pages, granted to the driver by the caller) becomes the caller's
    /// transfer area for multi-block requests, replacing any earlier one of the caller.
    pub const ATTACH: u64 = 9;
    /// `read_blocks(block = a1, count = a2, page = a3) -> (0, blocks read)`: blocks
    /// `block..block + count` into pages `page..page + count` of the caller's transfer area
    /// (fewer at the end of the disk).
    pub const READ_BLOCKS: u64 = 10;
    /// `write_blocks(block = a1, count = a2, page = a3) -> (0, blocks written)`: pages
    /// `page..page + count` of the caller's transfer area to blocks `block..block + count`,
    /// through to the device.
    pub const WRITE_BLOCKS: u64 = 11;
    /// `detach() -> (0, areas)`: the driver unmaps the caller's transfer areas (a client
    /// calls it as it exits; one a call of the caller's still uses stays until replaced);
    /// returns how many went.
    pub const DETACH: u64 = 12;
    /// Most pages of a transfer area.
    pub const MAX_TRANSFER_PAGES: u64 = 16;
    /// Bit of `info`'s `r1`: the disk is read-only.
    pub const READONLY_BIT: u64 = 1 << 63;
}

/// A virtio-blk device with its queue.
#[derive(Debug)]
pub struct BlkDevice<R: Regs, D: Dma> {
    transport: Transport<R>,
    dma: D,
    queue: SplitQueue,
    sectors: u64,
    readonly: bool,
}

impl<R: Regs, D: Dma> BlkDevice<R, D> {
    /// Brings the device in `regs` up, with its queue in `dma` (zeroed, [`DMA_PAGES`] pages).
    pub fn new(regs: R, dma: D) -> Result<Self, BlkError> {
        let (transport, queue) = Transport::single_queue::<BlkError>(
            regs,
            super::DEVICE_ID_BLOCK,
            F_RO | F_FLUSH,
            QUEUE_SIZE,
            QUEUE_PAGE,
            &dma,
        )?;
        let sectors = transport.config_u64(0);
        let readonly = transport.features() & F_RO != 0;
        Ok(BlkDevice {
            transport,
            dma,
            queue,
            sectors,
            readonly,
        })
    }

    /// Capacity in whole blocks.
    pub fn blocks(&self) -> u64 {
        self.sectors / SECTORS_PER_BLOCK
    }

    /// Whether the device is read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The DMA memory (to fill or read the data pages from [`DATA`] on).
    pub fn dma(&self) -> &D {
        &self.dma
    }

    /// Most blocks one request may move: [`MAX_REQUEST_BLOCKS`], or fewer when the device's
    /// queue is too short for that many data descriptors besides the header and status.
    pub fn max_request_blocks(&self) -> usize {
        MAX_REQUEST_BLOCKS.min(usize::from(self.queue.size()).saturating_sub(2))
    }

    /// Puts `request` on the queue and notifies the device.
    pub fn start(&mut self, request: Request) -> Result<(), BlkError> {
        let (kind, sector, count) = match request {
            Request::Read { block, count } | Request::Write { block, count } => {
                if count == 0 || count > self.max_request_blocks() {
                    return Err(BlkError::Unsupported);
                }
                if block
                    .checked_add(count as u64)
                    .is_none_or(|end| end > self.blocks())
                {
                    return Err(BlkError::OutOfRange);
                }
                let kind = if matches!(request, Request::Read { .. }) {
                    T_IN
                } else {
                    T_OUT
                };
                (kind, block * SECTORS_PER_BLOCK, count)
            }
            Request::Flush => (T_FLUSH, 0, 0),
        };
        self.dma.write_u32(HEADER, kind);
        self.dma.write_u32(HEADER + 4, 0);
        self.dma.write_u64(HEADER + 8, sector);
        self.dma.write_bytes(STATUS, &[0xff]);
        let header = Buffer {
            phys: self.dma.phys(HEADER),
            len: 16,
            device_writes: false,
        };
        let status = Buffer {
            phys: self.dma.phys(STATUS),
            len: 1,
            device_writes: true,
        };
        let mut chain = alloc::vec::Vec::with_capacity(count + 2);
        chain.push(header);
        for page in 0..count {
            let phys = self.dma.phys(DATA + page * BLOCK_SIZE);
            match chain.last_mut() {
                Some(last) if page > 0 && last.phys + u64::from(last.len) == phys => {
                    last.len += BLOCK_SIZE as u32;
                }
                _ => chain.push(Buffer {
                    phys,
                    len: BLOCK_SIZE as u32,
                    device_writes: kind == T_IN,
                }),
            }
        }
        chain.push(status);
        self.queue.push(&self.dma, &chain)?;
        self.transport.notify(0);
        Ok(())
    }

    /// The outcome of the request in flight, once the device has completed it.
    pub fn poll(&mut self) -> Option<Result<(), BlkError>> {
        match self.queue.pop_used(&self.dma) {
            Ok(None) => {
                if self.transport.status() & STATUS_NEEDS_RESET != 0 {
                    return Some(Err(BlkError::Device));
                }
                None
            }
            Err(e) => Some(Err(e.into())),
            Ok(Some(_)) => {
                let mut status = [0u8];
                self.dma.read_bytes(STATUS, &mut status);
                Some(match status[0] {
                    S_OK => Ok(()),
                    S_IOERR if self.readonly => Err(BlkError::ReadOnly),
                    S_IOERR => Err(BlkError::Io),
                    S_UNSUPP => Err(BlkError::Unsupported),
                    _ => Err(BlkError::Device),
                })
            }
        }
    }

    /// Acknowledges the device's interrupt (call after waking, before polling).
    pub fn ack_interrupt(&self) -> u32 {
        self.transport.ack_interrupt()
    }

    /// Runs `request` to completion; `wait` blocks until the device may have interrupted
    /// (a driver blocks on its soft-interrupt bit there).
    pub fn run(&mut self, request: Request, wait: &mut dyn FnMut()) -> Result<(), BlkError> {
        self.start(request)?;
        loop {
            self.ack_interrupt();
            if let Some(result) = self.poll() {
                return result;
            }
            wait();
        }
    }

    /// Resets the device.
    pub fn reset(&self) {
        self.transport.reset();
    }
}

/// FNV-1a over `bytes`, continuing from `hash` (start with [`FNV_OFFSET`]): the checksum the
/// block tests print on both sides.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a's starting value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The test pattern byte `i` of block `block` (what `blktest` writes and the host checks).
pub fn pattern(block: u64, i: usize) -> u8 {
    (block.wrapping_mul(131) as usize ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

#[cfg(test)]
mod tests {
    //! The driver against a small model of a virtio-mmio block device that reads the queue
    //! from the same memory the driver wrote, as the real device does.
    use super::*;
    use crate::virtio::transport::reg;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    const PHYS_BASE: u64 = 0x10_0000;

    struct Model {
        mem: RefCell<Vec<u8>>,
        disk: RefCell<Vec<u8>>,
        readonly: bool,
        regs: RefCell<[u32; 0x40]>,
        features_sel: RefCell<u32>,
        driver_features: RefCell<u64>,
        last_avail: RefCell<u16>,
        interrupts: RefCell<u32>,
        /// Descriptors of each request served, in order.
        chains: RefCell<Vec<usize>>,
        /// The data pages are swapped in pairs in physical memory, so no two consecutive ones
        /// are adjacent (as a program's memory object may be); otherwise all are contiguous.
        scattered: bool,
    }

    impl Model {
        fn new(blocks: usize, readonly: bool) -> Model {
            Model::with_layout(blocks, readonly, false)
        }

        fn with_layout(blocks: usize, readonly: bool, scattered: bool) -> Model {
            Model {
                mem: RefCell::new(vec![0; DMA_PAGES * 4096]),
                disk: RefCell::new((0..blocks * BLOCK_SIZE).map(|i| (i % 251) as u8).collect()),
                readonly,
                regs: RefCell::new([0; 0x40]),
                features_sel: RefCell::new(0),
                driver_features: RefCell::new(0),
                last_avail: RefCell::new(0),
                interrupts: RefCell::new(0),
                chains: RefCell::new(Vec::new()),
                scattered,
            }
        }

        /// The frame holding DMA page `page` (its own inverse).
        fn frame(&self, page: usize) -> usize {
            if self.scattered && page * BLOCK_SIZE >= DATA {
                2 + ((page - 2) ^ 1)
            } else {
                page
            }
        }

        /// The DMA-memory offset at guest-physical `phys`.
        fn offset_of(&self, phys: u64) -> usize {
            let at = (phys - PHYS_BASE) as usize;
            self.frame(at / BLOCK_SIZE) * BLOCK_SIZE + at % BLOCK_SIZE
        }

        fn offered(&self) -> u64 {
            (1 << 32) | F_FLUSH | if self.readonly { F_RO } else { 0 }
        }

        fn m16(&self, phys: u64) -> u16 {
            let at = self.offset_of(phys);
            u16::from_le_bytes(self.mem.borrow()[at..at + 2].try_into().unwrap())
        }

        fn m32(&self, phys: u64) -> u32 {
            let at = self.offset_of(phys);
            u32::from_le_bytes(self.mem.borrow()[at..at + 4].try_into().unwrap())
        }

        fn m64(&self, phys: u64) -> u64 {
            u64::from(self.m32(phys)) | (u64::from(self.m32(phys + 4)) << 32)
        }

        /// The `len` bytes at guest-physical `phys`, byte by byte through the frames.
        fn bytes(&self, phys: u64, len: usize) -> Vec<u8> {
            let mem = self.mem.borrow();
            (0..len as u64)
                .map(|i| mem[self.offset_of(phys + i)])
                .collect()
        }

        /// Stores `bytes` at guest-physical `phys`.
        fn store(&self, phys: u64, bytes: &[u8]) {
            let mut mem = self.mem.borrow_mut();
            for (i, &b) in bytes.iter().enumerate() {
                mem[self.offset_of(phys + i as u64)] = b;
            }
        }

        fn addr(&self, low: usize) -> u64 {
            let r = self.regs.borrow();
            u64::from(r[low / 4]) | (u64::from(r[low / 4 + 1]) << 32)
        }

        /// Serves every available request, as the device does on a notification.
        fn serve(&self) {
            let size = u64::from(self.regs.borrow()[reg::QUEUE_NUM / 4]);
            let (desc, avail, used) = (
                self.addr(reg::QUEUE_DESC_LOW),
                self.addr(reg::QUEUE_DRIVER_LOW),
                self.addr(reg::QUEUE_DEVICE_LOW),
            );
            while *self.last_avail.borrow() != self.m16(avail + 2) {
                let slot = u64::from(*self.last_avail.borrow()) % size;
                let head = self.m16(avail + 4 + 2 * slot);
                let mut chain = Vec::new();
                let mut id = head;
                loop {
                    let d = desc + 16 * u64::from(id);
                    chain.push((self.m64(d), self.m32(d + 8) as usize, self.m16(d + 12)));
                    if self.m16(d + 12) & 1 == 0 {
                        break;
                    }
                    id = self.m16(d + 14);
                }
                self.chains.borrow_mut().push(chain.len());
                let kind = self.m32(chain[0].0);
                let mut at = self.m64(chain[0].0 + 8) as usize * 512;
                let status_phys = chain.last().unwrap().0;
                let data = &chain[1..chain.len() - 1];
                let status = match kind {
                    T_IN | T_OUT if data.is_empty() => S_UNSUPP,
                    T_IN => {
                        for &(phys, len, _) in data {
                            self.store(phys, &self.disk.borrow()[at..at + len]);
                            at += len;
                        }
                        S_OK
                    }
                    T_OUT if self.readonly => S_IOERR,
                    T_OUT => {
                        for &(phys, len, _) in data {
                            let bytes = self.bytes(phys, len);
                            self.disk.borrow_mut()[at..at + len].copy_from_slice(&bytes);
                            at += len;
                        }
                        S_OK
                    }
                    T_FLUSH if data.is_empty() => S_OK,
                    _ => S_UNSUPP,
                };
                self.store(status_phys, &[status]);
                let used_idx = self.m16(used + 2);
                let entry = used + 4 + 8 * (u64::from(used_idx) % size);
                self.store(entry, &u32::from(head).to_le_bytes());
                self.store(used + 2, &used_idx.wrapping_add(1).to_le_bytes());
                *self.last_avail.borrow_mut() += 1;
                self.regs.borrow_mut()[reg::INTERRUPT_STATUS / 4] |= 1;
                *self.interrupts.borrow_mut() += 1;
            }
        }
    }

    impl Regs for &Model {
        fn read32(&self, offset: usize) -> u32 {
            match offset {
                reg::MAGIC => super::super::transport::MAGIC,
                reg::VERSION => 2,
                reg::DEVICE_ID => 2,
                reg::DEVICE_FEATURES => {
                    (self.offered() >> (32 * *self.features_sel.borrow())) as u32
                }
                reg::QUEUE_NUM_MAX => 8,
                o if o >= reg::CONFIG => {
                    let sectors = (self.disk.borrow().len() / 512) as u64;
                    if o == reg::CONFIG {
                        sectors as u32
                    } else {
                        (sectors >> 32) as u32
                    }
                }
                o => self.regs.borrow()[o / 4],
            }
        }

        fn write32(&self, offset: usize, value: u32) {
            match offset {
                reg::DEVICE_FEATURES_SEL => *self.features_sel.borrow_mut() = value,
                reg::DRIVER_FEATURES => {
                    let sel = self.regs.borrow()[reg::DRIVER_FEATURES_SEL / 4];
                    let mut f = self.driver_features.borrow_mut();
                    *f |= u64::from(value) << (32 * sel);
                }
                reg::QUEUE_NOTIFY => self.serve(),
                reg::INTERRUPT_ACK => self.regs.borrow_mut()[reg::INTERRUPT_STATUS / 4] &= !value,
                reg::STATUS
                    if value & 8 != 0 && *self.driver_features.borrow() & !self.offered() != 0 =>
                {
                    self.regs.borrow_mut()[reg::STATUS / 4] = value & !8;
                }
                o => self.regs.borrow_mut()[o / 4] = value,
            }
        }
    }

    impl Dma for &Model {
        fn read_u16(&self, offset: usize) -> u16 {
            self.m16(self.phys(offset))
        }
        fn read_u32(&self, offset: usize) -> u32 {
            self.m32(self.phys(offset))
        }
        fn write_u16(&self, offset: usize, value: u16) {
            self.write_bytes(offset, &value.to_le_bytes());
        }
        fn write_u32(&self, offset: usize, value: u32) {
            self.write_bytes(offset, &value.to_le_bytes());
        }
        fn write_u64(&self, offset: usize, value: u64) {
            self.write_bytes(offset, &value.to_le_bytes());
        }
        fn read_bytes(&self, offset: usize, out: &mut [u8]) {
            out.copy_from_slice(&self.mem.borrow()[offset..offset + out.len()]);
        }
        fn write_bytes(&self, offset: usize, bytes: &[u8]) {
            self.mem.borrow_mut()[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        fn phys(&self, offset: usize) -> u64 {
            PHYS_BASE + (self.frame(offset / BLOCK_SIZE) * BLOCK_SIZE + offset % BLOCK_SIZE) as u64
        }
    }

    /// The model completes a request when notified: a driver that waits has lost it.
    fn never_wait() {
        panic!("the driver waited for a request the model had completed");
    }

    #[test]
    fn reads_writes_and_flushes_through_the_queue() {
        let model = Model::new(64, false);
        let mut dev = BlkDevice::new(&model, &model).unwrap();
        assert_eq!((dev.blocks(), dev.readonly()), (64, false));
        // The device's smaller queue maximum (8) was taken.
        assert_eq!(model.regs.borrow()[reg::QUEUE_NUM / 4], 8);
        assert_eq!(model.regs.borrow()[reg::STATUS / 4], 15);
        // More requests than queue entries: descriptors are recycled.
        for block in 0..40u64 {
            let data: Vec<u8> = (0..BLOCK_SIZE).map(|i| pattern(block, i)).collect();
            dev.dma().write_bytes(DATA, &data);
            dev.run(Request::Write { block, count: 1 }, &mut never_wait)
                .unwrap();
        }
        dev.run(Request::Flush, &mut never_wait).unwrap();
        for block in [0u64, 17, 39] {
            dev.dma().write_bytes(DATA, &[0; BLOCK_SIZE]);
            dev.run(Request::Read { block, count: 1 }, &mut never_wait)
                .unwrap();
            let mut out = vec![0; BLOCK_SIZE];
            dev.dma().read_bytes(DATA, &mut out);
            assert!(out.iter().enumerate().all(|(i, &b)| b == pattern(block, i)));
        }
        // Every request interrupted.
        assert_eq!(*model.interrupts.borrow(), 44);
        let disk = model.disk.borrow();
        assert_eq!(disk[39 * BLOCK_SIZE + 5], pattern(39, 5));
        // Untouched blocks keep their contents.
        assert_eq!(
            disk[40 * BLOCK_SIZE + 3],
            ((40 * BLOCK_SIZE + 3) % 251) as u8
        );
        drop(disk);
        assert_eq!(
            dev.run(
                Request::Read {
                    block: 64,
                    count: 1
                },
                &mut never_wait
            ),
            Err(BlkError::OutOfRange)
        );
    }

    /// Writes blocks `block..block + count` (each its pattern) in one request, reads them
    /// back in another, and returns the descriptors of the two requests.
    fn round_trip(
        model: &Model,
        dev: &mut BlkDevice<&Model, &Model>,
        block: u64,
        count: usize,
    ) -> (usize, usize) {
        for page in 0..count {
            let data: Vec<u8> = (0..BLOCK_SIZE)
                .map(|i| pattern(block + page as u64, i))
                .collect();
            dev.dma().write_bytes(DATA + page * BLOCK_SIZE, &data);
        }
        dev.run(Request::Write { block, count }, &mut never_wait)
            .unwrap();
        dev.dma().write_bytes(DATA, &vec![0; count * BLOCK_SIZE]);
        dev.run(Request::Read { block, count }, &mut never_wait)
            .unwrap();
        let mut out = vec![0; count * BLOCK_SIZE];
        dev.dma().read_bytes(DATA, &mut out);
        for (page, data) in out.chunks(BLOCK_SIZE).enumerate() {
            let at = block + page as u64;
            assert!(data.iter().enumerate().all(|(i, &b)| b == pattern(at, i)));
            assert_eq!(
                model.disk.borrow()[at as usize * BLOCK_SIZE + 9],
                pattern(at, 9)
            );
        }
        let chains = model.chains.borrow();
        (chains[chains.len() - 2], chains[chains.len() - 1])
    }

    #[test]
    fn a_request_moves_several_blocks() {
        // Contiguous data pages: one data descriptor for the whole run.
        let model = Model::with_layout(64, false, false);
        let mut dev = BlkDevice::new(&model, &model).unwrap();
        assert_eq!(round_trip(&model, &mut dev, 10, 6), (3, 3));
        // Scattered ones: a descriptor per page, as many as the device's queue (8) allows.
        let model = Model::with_layout(64, false, true);
        let mut dev = BlkDevice::new(&model, &model).unwrap();
        assert_eq!(dev.max_request_blocks(), 6);
        assert_eq!(round_trip(&model, &mut dev, 58, 6), (8, 8));
        let before = model.disk.borrow().clone();
        for (request, error) in [
            (Request::Read { block: 0, count: 7 }, BlkError::Unsupported),
            (Request::Write { block: 0, count: 0 }, BlkError::Unsupported),
            (
                Request::Read {
                    block: 60,
                    count: 5,
                },
                BlkError::OutOfRange,
            ),
            (
                Request::Write {
                    block: u64::MAX,
                    count: 2,
                },
                BlkError::OutOfRange,
            ),
        ] {
            assert_eq!(dev.run(request, &mut never_wait), Err(error), "{request:?}");
        }
        // Blocks around the runs are untouched; refused requests reached nothing.
        assert_eq!(*model.disk.borrow(), before);
        assert_eq!(
            model.disk.borrow()[9 * BLOCK_SIZE + 1],
            ((9 * BLOCK_SIZE + 1) % 251) as u8
        );
    }

    #[test]
    fn a_read_only_device_refuses_writes() {
        let model = Model::new(8, true);
        let mut dev = BlkDevice::new(&model, &model).unwrap();
        assert!(dev.readonly());
        let before = model.disk.borrow().clone();
        assert_eq!(
            dev.run(Request::Write { block: 1, count: 1 }, &mut never_wait),
            Err(BlkError::ReadOnly)
        );
        assert_eq!(*model.disk.borrow(), before);
        dev.run(Request::Read { block: 1, count: 1 }, &mut never_wait)
            .unwrap();
        assert_eq!(BlkError::from_code(2), Some(BlkError::ReadOnly));
        assert_eq!(BlkError::from_code(0), None);
    }

    #[test]
    fn the_checksum_is_fnv1a() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), FNV_OFFSET);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            fnv1a(fnv1a(FNV_OFFSET, b"fo"), b"o"),
            fnv1a(FNV_OFFSET, b"foo")
        );
    }
}
