//! Test support: DMA memory for model devices, whose "physical" addresses are the offsets.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::queue::Dma;

/// Zeroed DMA memory of whole pages, shared by a driver and the model device serving it.
pub struct ModelMemory(pub RefCell<Vec<u8>>);

impl ModelMemory {
    /// `pages` zeroed pages.
    pub fn new(pages: usize) -> ModelMemory {
        ModelMemory(RefCell::new(vec![0; pages * 4096]))
    }
}

/// The little-endian `u16` at `at`.
pub fn r16(mem: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([mem[at], mem[at + 1]])
}

impl Dma for &ModelMemory {
    fn read_u16(&self, offset: usize) -> u16 {
        r16(&self.0.borrow(), offset)
    }
    fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.0.borrow()[offset..offset + 4].try_into().unwrap())
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
        out.copy_from_slice(&self.0.borrow()[offset..offset + out.len()]);
    }
    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        self.0.borrow_mut()[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn phys(&self, offset: usize) -> u64 {
        offset as u64
    }
}

/// One queue's registers as the driver set them, and the device's place in its available ring.
#[derive(Clone, Copy, Default)]
pub struct QueueRegs {
    pub size: usize,
    pub desc: usize,
    pub avail: usize,
    pub used: usize,
    pub last_avail: u16,
}

/// A model of a two-queue device that moves byte streams or frames (virtio-net, virtio-console):
/// queue 0 receives (the test delivers into the posted buffers), queue 1 transmits (what the
/// driver sends lands on `wire`, each chain one descriptor, its first `header` bytes dropped).
pub struct StreamModel {
    pub mem: ModelMemory,
    pub regs: RefCell<[u32; 0x40]>,
    pub queues: RefCell<[QueueRegs; 2]>,
    pub wire: RefCell<Vec<Vec<u8>>>,
    pub status: RefCell<u32>,
    /// While set, transmitted chains are taken but not completed ([`Self::complete_held`]).
    pub hold_transmits: core::cell::Cell<bool>,
    held: RefCell<Vec<u16>>,
    device_id: u32,
    /// The low word of the device's features (VERSION_1 is always offered).
    features: u32,
    config: [u8; 8],
    header: usize,
}

impl StreamModel {
    /// A device of type `device_id` over `pages` pages of DMA memory.
    pub fn new(
        pages: usize,
        device_id: u32,
        features: u32,
        config: [u8; 8],
        header: usize,
    ) -> Self {
        StreamModel {
            mem: ModelMemory::new(pages),
            regs: RefCell::new([0; 0x40]),
            queues: RefCell::new([QueueRegs::default(); 2]),
            wire: RefCell::new(Vec::new()),
            status: RefCell::new(0),
            hold_transmits: core::cell::Cell::new(false),
            held: RefCell::new(Vec::new()),
            device_id,
            features,
            config,
            header,
        }
    }

    /// The next available chain of queue `q` (one descriptor): (head, addr, len).
    pub fn pop(&self, q: usize) -> Option<(u16, usize, usize)> {
        let mut queues = self.queues.borrow_mut();
        let qr = &mut queues[q];
        let mem = self.mem.0.borrow();
        if qr.size == 0 || qr.last_avail == r16(&mem, qr.avail + 2) {
            return None;
        }
        let slot = usize::from(qr.last_avail) % qr.size;
        let head = r16(&mem, qr.avail + 4 + 2 * slot);
        let d = qr.desc + 16 * usize::from(head);
        let addr = u64::from_le_bytes(mem[d..d + 8].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(mem[d + 8..d + 12].try_into().unwrap()) as usize;
        qr.last_avail = qr.last_avail.wrapping_add(1);
        Some((head, addr, len))
    }

    /// Puts `head` with `written` bytes in queue `q`'s used ring.
    pub fn complete(&self, q: usize, head: u16, written: u32) {
        let qr = self.queues.borrow()[q];
        let mut mem = self.mem.0.borrow_mut();
        let idx = r16(&mem, qr.used + 2);
        let entry = qr.used + 4 + 8 * (usize::from(idx) % qr.size);
        mem[entry..entry + 4].copy_from_slice(&u32::from(head).to_le_bytes());
        mem[entry + 4..entry + 8].copy_from_slice(&written.to_le_bytes());
        mem[qr.used + 2..qr.used + 4].copy_from_slice(&idx.wrapping_add(1).to_le_bytes());
    }

    /// Puts `data` (after a zeroed header) into the next posted receive buffer; false if none
    /// is posted.
    pub fn deliver(&self, data: &[u8]) -> bool {
        let Some((head, addr, len)) = self.pop(0) else {
            return false;
        };
        let h = self.header;
        assert!(len >= h + data.len(), "a receive buffer of {len} bytes");
        let mut mem = self.mem.0.borrow_mut();
        mem[addr..addr + h].fill(0);
        mem[addr + h..addr + h + data.len()].copy_from_slice(data);
        drop(mem);
        self.complete(0, head, (h + data.len()) as u32);
        true
    }

    /// Completes the transmits held back while `hold_transmits` was set.
    pub fn complete_held(&self) {
        for head in core::mem::take(&mut *self.held.borrow_mut()) {
            self.complete(1, head, 0);
        }
    }

    fn transmit(&self) {
        while let Some((head, addr, len)) = self.pop(1) {
            let mem = self.mem.0.borrow();
            self.wire
                .borrow_mut()
                .push(mem[addr + self.header..addr + len].to_vec());
            drop(mem);
            if self.hold_transmits.get() {
                self.held.borrow_mut().push(head);
            } else {
                self.complete(1, head, 0);
            }
        }
    }
}

impl super::Regs for &StreamModel {
    fn read32(&self, offset: usize) -> u32 {
        use super::transport::{reg, MAGIC};
        let sel = self.regs.borrow()[reg::DEVICE_FEATURES_SEL / 4];
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => 2,
            reg::DEVICE_ID => self.device_id,
            // VERSION_1 is bit 32.
            reg::DEVICE_FEATURES => [self.features, 1][sel as usize],
            reg::QUEUE_NUM_MAX => 256,
            reg::QUEUE_READY => 0,
            reg::STATUS => *self.status.borrow(),
            o if (reg::CONFIG..reg::CONFIG + 8).contains(&o) => {
                let at = o - reg::CONFIG;
                let mut word = [0u8; 4];
                for (i, b) in word.iter_mut().enumerate() {
                    *b = self.config.get(at + i).copied().unwrap_or(0);
                }
                u32::from_le_bytes(word)
            }
            o => self.regs.borrow()[o / 4],
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        use super::transport::reg;
        let q = self.regs.borrow()[reg::QUEUE_SEL / 4] as usize;
        let low = |r: &mut usize| *r = value as usize;
        match offset {
            reg::QUEUE_NOTIFY if value == 1 => self.transmit(),
            reg::QUEUE_NOTIFY => {}
            reg::STATUS => *self.status.borrow_mut() = value,
            reg::QUEUE_NUM => self.queues.borrow_mut()[q].size = value as usize,
            reg::QUEUE_DESC_LOW => low(&mut self.queues.borrow_mut()[q].desc),
            reg::QUEUE_DRIVER_LOW => low(&mut self.queues.borrow_mut()[q].avail),
            reg::QUEUE_DEVICE_LOW => low(&mut self.queues.borrow_mut()[q].used),
            o => self.regs.borrow_mut()[o / 4] = value,
        }
    }
}
