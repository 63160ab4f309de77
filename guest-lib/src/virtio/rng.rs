//! A virtio-rng (entropy) driver (virtio 1.x, section 5.4): one queue of device-writable
//! buffers that the device fills with random bytes.
//!
//! DMA memory ([`DMA_PAGES`] pages): the queue's page and one buffer page.

use super::queue::{Buffer, Dma, QueueError, SplitQueue};
use super::transport::{Regs, Transport, TransportError, STATUS_NEEDS_RESET};

/// Pages of DMA memory the driver needs.
pub const DMA_PAGES: usize = 2;
/// Offset of the buffer page in the DMA memory.
pub const BUFFER: usize = 4096;
/// Most bytes one request asks for.
pub const MAX_REQUEST: usize = 4096;
/// Entries of the request queue.
pub const QUEUE_SIZE: u16 = 8;

/// Why the entropy device failed.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RngError {
    /// Not a virtio-rng device, or it could not be set up.
    Setup = 1,
    /// The device needs a reset, broke the queue protocol, or returned no bytes.
    Device = 2,
    /// An operation code the server does not know.
    UnknownOp = 3,
}

impl From<TransportError> for RngError {
    fn from(_: TransportError) -> RngError {
        RngError::Setup
    }
}

impl From<QueueError> for RngError {
    fn from(_: QueueError) -> RngError {
        RngError::Device
    }
}

/// The random server's PPC protocol (`a0` is the operation; `r0` 0 or an [`RngError`] code).
pub mod op {
    /// `get(len = a1) -> (0, n)`: `n` (at most `len`, at most a page) random bytes from the
    /// device in the caller's PPC buffer.
    pub const GET: u64 = 1;
}

/// A virtio-rng device with its queue.
#[derive(Debug)]
pub struct RngDevice<R: Regs, D: Dma> {
    transport: Transport<R>,
    dma: D,
    queue: SplitQueue,
}

impl<R: Regs, D: Dma> RngDevice<R, D> {
    /// Brings the device in `regs` up, with its queue in `dma` (zeroed, [`DMA_PAGES`] pages).
    pub fn new(regs: R, dma: D) -> Result<Self, RngError> {
        let (transport, queue) = Transport::single_queue::<RngError>(
            regs,
            super::DEVICE_ID_RNG,
            0,
            QUEUE_SIZE,
            0,
            &dma,
        )?;
        Ok(RngDevice {
            transport,
            dma,
            queue,
        })
    }

    /// Asks the device for up to `len` bytes (at most [`MAX_REQUEST`]) and copies what it gave
    /// into `out`; `wait` blocks until the device may have interrupted. Returns the count.
    pub fn fill(&mut self, out: &mut [u8], wait: &mut dyn FnMut()) -> Result<usize, RngError> {
        let len = out.len().min(MAX_REQUEST);
        if len == 0 {
            return Ok(0);
        }
        let buffer = Buffer {
            phys: self.dma.phys(BUFFER),
            len: len as u32,
            device_writes: true,
        };
        self.queue.push(&self.dma, &[buffer])?;
        self.transport.notify(0);
        loop {
            self.transport.ack_interrupt();
            if let Some((_, written)) = self.queue.pop_used(&self.dma)? {
                let n = (written as usize).min(len);
                if n == 0 {
                    return Err(RngError::Device);
                }
                self.dma.read_bytes(BUFFER, &mut out[..n]);
                return Ok(n);
            }
            if self.transport.status() & STATUS_NEEDS_RESET != 0 {
                return Err(RngError::Device);
            }
            wait();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The driver against a model entropy device that fills buffers from a counter.
    use super::*;
    use crate::virtio::testing::{r16, ModelMemory};
    use crate::virtio::transport::{reg, MAGIC};
    use alloc::vec;
    use core::cell::RefCell;

    struct Model {
        mem: ModelMemory,
        regs: RefCell<[u32; 0x40]>,
        last_avail: RefCell<u16>,
        next: RefCell<u8>,
        /// Most bytes it gives per request (a device may give fewer than asked).
        limit: usize,
    }

    impl Model {
        fn serve(&self) {
            let regs = *self.regs.borrow();
            let addr = |low: usize| u64::from(regs[low / 4]) as usize;
            let (desc, avail, used) = (
                addr(reg::QUEUE_DESC_LOW),
                addr(reg::QUEUE_DRIVER_LOW),
                addr(reg::QUEUE_DEVICE_LOW),
            );
            let size = regs[reg::QUEUE_NUM / 4] as usize;
            let mut mem = self.mem.0.borrow_mut();
            while *self.last_avail.borrow() != r16(&mem, avail + 2) {
                let slot = usize::from(*self.last_avail.borrow()) % size;
                let head = usize::from(r16(&mem, avail + 4 + 2 * slot));
                let d = desc + 16 * head;
                let phys = u64::from_le_bytes(mem[d..d + 8].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(mem[d + 8..d + 12].try_into().unwrap()) as usize;
                let n = len.min(self.limit);
                for b in &mut mem[phys..phys + n] {
                    let mut next = self.next.borrow_mut();
                    *next = next.wrapping_add(1);
                    *b = *next;
                }
                let idx = r16(&mem, used + 2);
                let entry = used + 4 + 8 * (usize::from(idx) % size);
                mem[entry..entry + 4].copy_from_slice(&(head as u32).to_le_bytes());
                mem[entry + 4..entry + 8].copy_from_slice(&(n as u32).to_le_bytes());
                mem[used + 2..used + 4].copy_from_slice(&idx.wrapping_add(1).to_le_bytes());
                *self.last_avail.borrow_mut() += 1;
            }
        }
    }

    impl Regs for &Model {
        fn read32(&self, offset: usize) -> u32 {
            match offset {
                reg::MAGIC => MAGIC,
                reg::VERSION => 2,
                reg::DEVICE_ID => 4,
                reg::DEVICE_FEATURES => {
                    u32::from(self.regs.borrow()[reg::DEVICE_FEATURES_SEL / 4] == 1)
                }
                reg::QUEUE_NUM_MAX => 256,
                o => self.regs.borrow()[o / 4],
            }
        }

        fn write32(&self, offset: usize, value: u32) {
            if offset == reg::QUEUE_NOTIFY {
                self.serve();
            } else {
                self.regs.borrow_mut()[offset / 4] = value;
            }
        }
    }

    fn never_wait() {
        panic!("the driver waited for a request the model had completed");
    }

    /// A fresh model device that gives at most `limit` bytes per request.
    fn model(limit: usize) -> Model {
        Model {
            mem: ModelMemory::new(DMA_PAGES),
            regs: RefCell::new([0; 0x40]),
            last_avail: RefCell::new(0),
            next: RefCell::new(0),
            limit,
        }
    }

    #[test]
    fn another_driver_leaves_the_device_alone() {
        let model = model(100);
        let blk = crate::virtio::blk::BlkDevice::new(&model, &model.mem);
        assert_eq!(blk.err(), Some(crate::virtio::blk::BlkError::Setup));
        // Refused at the probe: the status register was never written.
        assert_eq!(model.regs.borrow()[reg::STATUS / 4], 0);
        assert!(RngDevice::new(&model, &model.mem).is_ok());
    }

    #[test]
    fn fills_buffers_and_takes_short_answers() {
        let model = model(100);
        let mut dev = RngDevice::new(&model, &model.mem).unwrap();
        assert_eq!(
            model.regs.borrow()[reg::QUEUE_NUM / 4],
            u32::from(QUEUE_SIZE)
        );
        let mut out = [0u8; 64];
        assert_eq!(dev.fill(&mut out, &mut never_wait), Ok(64));
        assert_eq!((out[0], out[63]), (1, 64));
        // Asked for more than the device gives at once: the short count is reported.
        let mut big = vec![0u8; 8192];
        assert_eq!(dev.fill(&mut big, &mut never_wait), Ok(100));
        assert_eq!(big[0], 65);
        assert_eq!(big[100], 0);
        // Many requests recycle the queue's descriptors.
        for _ in 0..50 {
            assert_eq!(dev.fill(&mut out[..8], &mut never_wait), Ok(8));
        }
        assert_eq!(dev.fill(&mut [], &mut never_wait), Ok(0));
    }
}
