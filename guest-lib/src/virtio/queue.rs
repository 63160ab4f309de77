//! A split virtqueue (virtio 1.x, section 2.7) in one page of DMA memory: the descriptor table
//! at the start, the available ring after it, the used ring at [`USED_OFFSET`].

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

/// Memory the device reads and writes (DMA), addressed by byte offset: a program backs it with
/// a memory object whose pages' physical addresses the kernel reported. Accesses are volatile;
/// a structure never crosses a page (pages need not be physically contiguous).
pub trait Dma {
    /// Reads a little-endian u16 at `offset`.
    fn read_u16(&self, offset: usize) -> u16;
    /// Reads a little-endian u32 at `offset`.
    fn read_u32(&self, offset: usize) -> u32;
    /// Writes a little-endian u16 at `offset`.
    fn write_u16(&self, offset: usize, value: u16);
    /// Writes a little-endian u32 at `offset`.
    fn write_u32(&self, offset: usize, value: u32);
    /// Writes a little-endian u64 at `offset`.
    fn write_u64(&self, offset: usize, value: u64);
    /// Copies `out.len()` bytes from `offset`.
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copies `bytes` to `offset`.
    fn write_bytes(&self, offset: usize, bytes: &[u8]);
    /// The guest-physical address of byte `offset`.
    fn phys(&self, offset: usize) -> u64;
}

/// Most entries a queue may have here (its three parts must fit one page).
pub const MAX_SIZE: u16 = 64;
/// Offset of the used ring from the start of the queue's page.
pub const USED_OFFSET: usize = 2048;
/// Descriptor flag: the chain continues in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;

/// A buffer of a request: physical address, length, and whether the device writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Guest-physical address.
    pub phys: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (otherwise it reads it).
    pub device_writes: bool,
}

/// Why a queue operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free descriptors for the chain.
    Full,
    /// An empty chain, or a size that is not a power of two in `1..=MAX_SIZE`.
    Invalid,
    /// The device put an id in the used ring that is no request in flight.
    BadUsed(u32),
}

/// The driver's side of one split virtqueue.
#[derive(Debug)]
pub struct SplitQueue {
    size: u16,
    /// Offset of the queue's page in the DMA memory.
    base: usize,
    free: Vec<u16>,
    /// Descriptors of each request in flight, by head index (0: not in flight).
    chain_len: Vec<u16>,
    /// Our own copy of each descriptor's link (what the device sees is not trusted back).
    next: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
}

impl SplitQueue {
    /// A queue of `size` entries in the (zeroed) page at `base` of `dma`.
    pub fn new(size: u16, base: usize) -> Result<SplitQueue, QueueError> {
        if size == 0 || size > MAX_SIZE || !size.is_power_of_two() {
            return Err(QueueError::Invalid);
        }
        Ok(SplitQueue {
            size,
            base,
            free: (0..size).rev().collect(),
            chain_len: vec![0; size as usize],
            next: vec![0; size as usize],
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Offsets (in the DMA memory) of the descriptor table, available ring and used ring.
    pub fn parts(&self) -> (usize, usize, usize) {
        let avail = self.base + 16 * self.size as usize;
        (self.base, avail, self.base + USED_OFFSET)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        (self.size as usize) - self.free.len()
    }

    /// Puts a chain of buffers on the available ring; returns its head. The caller then
    /// notifies the device.
    pub fn push(&mut self, dma: &dyn Dma, chain: &[Buffer]) -> Result<u16, QueueError> {
        if chain.is_empty() {
            return Err(QueueError::Invalid);
        }
        if chain.len() > self.free.len() {
            return Err(QueueError::Full);
        }
        let ids: Vec<u16> = (0..chain.len()).filter_map(|_| self.free.pop()).collect();
        let (desc, avail, _) = self.parts();
        for (i, (buffer, &id)) in chain.iter().zip(&ids).enumerate() {
            let at = desc + 16 * id as usize;
            let mut flags = if buffer.device_writes {
                DESC_F_WRITE
            } else {
                0
            };
            let next = ids.get(i + 1).copied().unwrap_or(0);
            if i + 1 < ids.len() {
                flags |= DESC_F_NEXT;
            }
            dma.write_u64(at, buffer.phys);
            dma.write_u32(at + 8, buffer.len);
            dma.write_u16(at + 12, flags);
            dma.write_u16(at + 14, next);
            self.next[id as usize] = next;
        }
        let head = ids[0];
        self.chain_len[head as usize] = ids.len() as u16;
        let slot = (self.avail_idx % self.size) as usize;
        dma.write_u16(avail + 4 + 2 * slot, head);
        // The descriptors and the ring entry before the index that publishes them.
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        dma.write_u16(avail + 2, self.avail_idx);
        fence(Ordering::SeqCst);
        Ok(head)
    }

    /// Takes the next completion from the used ring: (head, bytes the device wrote).
    pub fn pop_used(&mut self, dma: &dyn Dma) -> Result<Option<(u16, u32)>, QueueError> {
        let (_, _, used) = self.parts();
        let used_idx = dma.read_u16(used + 2);
        if used_idx == self.last_used {
            return Ok(None);
        }
        // The entry after the index that published it.
        fence(Ordering::SeqCst);
        let slot = (self.last_used % self.size) as usize;
        let id = dma.read_u32(used + 4 + 8 * slot);
        let len = dma.read_u32(used + 8 + 8 * slot);
        let head = u16::try_from(id).map_err(|_| QueueError::BadUsed(id))?;
        let count = *self
            .chain_len
            .get(head as usize)
            .filter(|&&n| n != 0)
            .ok_or(QueueError::BadUsed(id))?;
        self.last_used = self.last_used.wrapping_add(1);
        self.chain_len[head as usize] = 0;
        // Free the chain by following our own links (the device does not write descriptors).
        let mut id = head;
        for _ in 0..count {
            self.free.push(id);
            id = self.next[id as usize];
        }
        Ok(Some((head, len)))
    }
}
