//! A minimal virtio driver over an [`MmioTransport`] and a private guest memory, for tests, the
//! fuzz targets and anyone checking a device model without a guest. It writes split-ring
//! descriptors and the available ring itself, so it can also build malformed chains.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::virtio::chain::{RawDescriptor, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::virtio::mmio::MmioTransport;
use crate::virtio::{
    CountingInterrupt, Interrupt, VirtioDevice, STATUS_ACKNOWLEDGE, STATUS_DRIVER,
    STATUS_DRIVER_OK, STATUS_FEATURES_OK, VIRTIO_F_VERSION_1,
};

/// Guest memory size of the test driver.
pub const MEM_SIZE: u64 = 1 << 20;
/// Where queue 0's rings start; queue `q` is at `RINGS_BASE + q * RING_STRIDE`.
pub const RINGS_BASE: u64 = 0x1_0000;
/// Distance between the ring areas of two queues.
pub const RING_STRIDE: u64 = 0x4000;
/// Start of the area tests may use for buffers.
pub const BUFFERS_BASE: u64 = 0x4_0000;

/// Register offsets of virtio-mmio (section 4.2.2), for driving a transport by hand.
pub mod reg {
    /// MagicValue.
    pub const MAGIC: u64 = 0x000;
    /// Version.
    pub const VERSION: u64 = 0x004;
    /// DeviceID.
    pub const DEVICE_ID: u64 = 0x008;
    /// DeviceFeatures.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// DeviceFeaturesSel.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// DriverFeatures.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// DriverFeaturesSel.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// QueueSel.
    pub const QUEUE_SEL: u64 = 0x030;
    /// QueueNumMax.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// QueueNum.
    pub const QUEUE_NUM: u64 = 0x038;
    /// QueueReady.
    pub const QUEUE_READY: u64 = 0x044;
    /// QueueNotify.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// InterruptStatus.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// InterruptACK.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Status.
    pub const STATUS: u64 = 0x070;
    /// QueueDescLow.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// QueueDescHigh.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// QueueDriverLow.
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// QueueDriverHigh.
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// QueueDeviceLow.
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// QueueDeviceHigh.
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// ConfigGeneration.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// A test driver: a transport, its guest memory, and per-queue ring bookkeeping.
pub struct TestDriver {
    /// The device under test.
    pub transport: MmioTransport,
    /// Guest memory (shared with the transport).
    pub mem: GuestMemoryMmap,
    /// Counts the interrupts the device raised.
    pub interrupts: Arc<CountingInterrupt>,
    sizes: Vec<u16>,
    next_desc: Vec<u16>,
    avail_idx: Vec<u16>,
    used_seen: Vec<u16>,
}

impl TestDriver {
    /// A driver for `device` with `MEM_SIZE` bytes of fresh guest memory; the log is quiet.
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
            .expect("mapping test guest memory");
        let interrupts = Arc::new(CountingInterrupt::new());
        let irq: Arc<dyn Interrupt> = interrupts.clone();
        let mut transport = MmioTransport::new(device, mem.clone(), irq);
        transport.set_log_quiet(true);
        let n = transport.queue_count();
        TestDriver {
            transport,
            mem,
            interrupts,
            sizes: vec![0; n],
            next_desc: vec![0; n],
            avail_idx: vec![0; n],
            used_seen: vec![0; n],
        }
    }

    /// Reads a 32-bit register.
    pub fn read32(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes a 32-bit register.
    pub fn write32(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// The 64 feature bits the device offers, read through the registers.
    pub fn device_features(&mut self) -> u64 {
        self.write32(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.read32(reg::DEVICE_FEATURES);
        self.write32(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.read32(reg::DEVICE_FEATURES);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Guest addresses of queue `q`'s descriptor table, driver area and device area.
    pub fn layout(q: usize) -> (u64, u64, u64) {
        let base = RINGS_BASE + q as u64 * RING_STRIDE;
        (base, base + 0x1000, base + 0x2000)
    }

    /// Resets the device and walks it to FEATURES_OK accepting `accept & offered` (plus
    /// VERSION_1); returns whether the device kept FEATURES_OK.
    pub fn negotiate(&mut self, accept: u64) -> bool {
        self.write32(reg::STATUS, 0);
        self.write32(reg::STATUS, STATUS_ACKNOWLEDGE);
        self.write32(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let features = (self.device_features() & accept) | VIRTIO_F_VERSION_1;
        self.write32(reg::DRIVER_FEATURES_SEL, 0);
        self.write32(reg::DRIVER_FEATURES, features as u32);
        self.write32(reg::DRIVER_FEATURES_SEL, 1);
        self.write32(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.write32(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        self.read32(reg::STATUS) & STATUS_FEATURES_OK != 0
    }

    /// Sets up queue `q` with `size` entries at its standard layout; returns QueueReady.
    pub fn setup_queue(&mut self, q: usize, size: u16) -> bool {
        let (desc, driver, device) = Self::layout(q);
        self.write32(reg::QUEUE_SEL, q as u32);
        self.write32(reg::QUEUE_NUM, u32::from(size));
        for (lo, value) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, driver),
            (reg::QUEUE_DEVICE_LOW, device),
        ] {
            self.write32(lo, value as u32);
            self.write32(lo + 4, (value >> 32) as u32);
        }
        // Fresh rings: zero them so stale indices from an earlier run do not leak in.
        let zero = vec![0u8; RING_STRIDE as usize];
        let _ = self.mem.write_slice(&zero, GuestAddress(desc));
        self.write32(reg::QUEUE_READY, 1);
        let ready = self.read32(reg::QUEUE_READY) == 1;
        if let Some(i) = self.sizes.get_mut(q) {
            *i = if ready { size } else { 0 };
            self.next_desc[q] = 0;
            self.avail_idx[q] = 0;
            self.used_seen[q] = 0;
        }
        ready
    }

    /// Sets DRIVER_OK; returns whether the device accepted it.
    pub fn driver_ok(&mut self) -> bool {
        self.write32(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        self.read32(reg::STATUS) & STATUS_DRIVER_OK != 0
    }

    /// The whole initialization: features, every queue at `size`, DRIVER_OK.
    pub fn init(&mut self, accept: u64, size: u16) -> bool {
        if !self.negotiate(accept) {
            return false;
        }
        let mut ok = true;
        for q in 0..self.sizes.len() {
            ok &= self.setup_queue(q, size);
        }
        ok & self.driver_ok()
    }

    /// Writes raw descriptors into queue `q`'s table at `index..`; returns nothing else.
    pub fn write_descriptors(&mut self, q: usize, index: u16, descs: &[RawDescriptor]) {
        let (table, _, _) = Self::layout(q);
        for (i, d) in descs.iter().enumerate() {
            let addr = table + (u64::from(index) + i as u64) * 16;
            let _ = self.mem.write_slice(&d.to_bytes(), GuestAddress(addr));
        }
    }

    /// Publishes chain `head` on queue `q`'s available ring (without notifying).
    pub fn publish(&mut self, q: usize, head: u16) {
        let (_, avail, _) = Self::layout(q);
        let size = self.sizes.get(q).copied().filter(|&s| s > 0).unwrap_or(1);
        let idx = self.avail_idx.get(q).copied().unwrap_or(0);
        let slot = avail + 4 + u64::from(idx % size) * 2;
        let _ = self.mem.write_obj(head.to_le(), GuestAddress(slot));
        let new = idx.wrapping_add(1);
        let _ = self.mem.write_obj(new.to_le(), GuestAddress(avail + 2));
        if let Some(i) = self.avail_idx.get_mut(q) {
            *i = new;
        }
    }

    /// Puts a chain of `(addr, len, device_writable)` buffers on queue `q`, publishes and
    /// notifies it; returns the head index.
    pub fn submit(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let size = self.sizes.get(q).copied().filter(|&s| s > 0).unwrap_or(1);
        let head = self.next_desc.get(q).copied().unwrap_or(0) % size;
        let n = bufs.len();
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, w))| {
                let last = i + 1 == n;
                RawDescriptor {
                    addr,
                    len,
                    flags: if w { VIRTQ_DESC_F_WRITE } else { 0 }
                        | if last { 0 } else { VIRTQ_DESC_F_NEXT },
                    next: ((u64::from(head) + i as u64 + 1) % u64::from(size)) as u16,
                }
            })
            .collect();
        for (i, d) in descs.iter().enumerate() {
            let index = ((u64::from(head) + i as u64) % u64::from(size)) as u16;
            self.write_descriptors(q, index, std::slice::from_ref(d));
        }
        if let Some(next) = self.next_desc.get_mut(q) {
            *next = ((u64::from(head) + n as u64) % u64::from(size)) as u16;
        }
        self.publish(q, head);
        self.transport.notify(q as u32);
        head
    }

    /// Used-ring entries `(id, len)` of queue `q` added since the last call.
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let (_, _, used) = Self::layout(q);
        let size = self.sizes.get(q).copied().filter(|&s| s > 0).unwrap_or(1);
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap_or(0);
        let mut out = Vec::new();
        let Some(seen) = self.used_seen.get_mut(q) else {
            return out;
        };
        while *seen != idx {
            let at = used + 4 + u64::from(*seen % size) * 8;
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap_or(u32::MAX);
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap_or(u32::MAX);
            out.push((id, len));
            *seen = seen.wrapping_add(1);
        }
        out
    }

    /// Reads guest memory.
    pub fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        let _ = self.mem.read_slice(&mut v, GuestAddress(addr));
        v
    }

    /// Writes guest memory.
    pub fn write_mem(&self, addr: u64, data: &[u8]) {
        let _ = self.mem.write_slice(data, GuestAddress(addr));
    }
}
