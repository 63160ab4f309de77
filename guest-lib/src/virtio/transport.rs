//! The virtio-mmio transport, version 2 (virtio 1.x, section 4.2.2): probing, the status
//! machine, feature negotiation, queue setup, notification, interrupt acknowledgement and
//! config space.

use super::queue::{Dma, QueueError, SplitQueue};

/// A device's register window, accessed in 32-bit words at byte offsets.
pub trait Regs {
    /// Reads the register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the register at `offset`.
    fn write32(&self, offset: usize, value: u32);
}

/// Register offsets.
pub mod reg {
    /// "virt" in little endian.
    pub const MAGIC: usize = 0x000;
    /// Transport version (2: modern).
    pub const VERSION: usize = 0x004;
    /// Device type (0: no device).
    pub const DEVICE_ID: usize = 0x008;
    /// Offered features, the 32-bit half chosen by `DEVICE_FEATURES_SEL`.
    pub const DEVICE_FEATURES: usize = 0x010;
    /// Which half of the offered features to read.
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    /// Accepted features, the half chosen by `DRIVER_FEATURES_SEL`.
    pub const DRIVER_FEATURES: usize = 0x020;
    /// Which half of the accepted features to write.
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    /// Selects the queue the queue registers address.
    pub const QUEUE_SEL: usize = 0x030;
    /// Largest size of the selected queue (0: no such queue).
    pub const QUEUE_NUM_MAX: usize = 0x034;
    /// Size of the selected queue.
    pub const QUEUE_NUM: usize = 0x038;
    /// The selected queue is ready.
    pub const QUEUE_READY: usize = 0x044;
    /// Write a queue index: there are new buffers.
    pub const QUEUE_NOTIFY: usize = 0x050;
    /// Why the device interrupted (bit 0: used buffers, bit 1: config change).
    pub const INTERRUPT_STATUS: usize = 0x060;
    /// Write the bits handled.
    pub const INTERRUPT_ACK: usize = 0x064;
    /// Device status.
    pub const STATUS: usize = 0x070;
    /// Descriptor table address, low half.
    pub const QUEUE_DESC_LOW: usize = 0x080;
    /// Available ring address, low half.
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    /// Used ring address, low half.
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    /// Changes whenever the config space changes.
    pub const CONFIG_GENERATION: usize = 0x0fc;
    /// Start of the device-specific config space.
    pub const CONFIG: usize = 0x100;
}

/// The magic value.
pub const MAGIC: u32 = 0x7472_6976;
/// Status bit: the guest found the device.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// Status bit: the guest has a driver for it.
pub const STATUS_DRIVER: u32 = 2;
/// Status bit: the driver is ready.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Status bit: feature negotiation done.
pub const STATUS_FEATURES_OK: u32 = 8;
/// Status bit: the device hit an error it cannot recover from without a reset.
pub const STATUS_NEEDS_RESET: u32 = 64;
/// Status bit: the driver gave up.
pub const STATUS_FAILED: u32 = 128;
/// Feature: virtio 1.x (required by the modern transport).
pub const F_VERSION_1: u64 = 1 << 32;

/// Why the transport could not bring a device up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The window does not start with the virtio magic.
    BadMagic(u32),
    /// Not the modern (version 2) transport.
    Version(u32),
    /// Device ID 0: an empty slot.
    NoDevice,
    /// The device does not offer virtio 1.x.
    NotModern,
    /// The device refused the features the driver accepted.
    FeaturesRefused,
    /// The queue does not exist or is already in use.
    NoQueue(u32),
    /// Another kind of device than the driver drives (its device ID).
    WrongDevice(u32),
}

/// A virtio-mmio device being driven.
#[derive(Debug)]
pub struct Transport<R: Regs> {
    regs: R,
    features: u64,
}

impl<R: Regs> Transport<R> {
    /// Checks the window's magic and version and returns its device ID.
    pub fn probe(regs: &R) -> Result<u32, TransportError> {
        let magic = regs.read32(reg::MAGIC);
        if magic != MAGIC {
            return Err(TransportError::BadMagic(magic));
        }
        let version = regs.read32(reg::VERSION);
        if version != 2 {
            return Err(TransportError::Version(version));
        }
        match regs.read32(reg::DEVICE_ID) {
            0 => Err(TransportError::NoDevice),
            id => Ok(id),
        }
    }

    /// Brings up a device of type `device_id` that uses one queue: negotiates `wanted`
    /// features, sets queue 0 up (at most `max_size` entries, its rings at `queue_base` in
    /// `dma`) and sets DRIVER_OK. The bring-up every single-queue driver shares.
    pub fn single_queue<E: From<TransportError> + From<QueueError>>(
        regs: R,
        device_id: u32,
        wanted: u64,
        max_size: u16,
        queue_base: usize,
        dma: &dyn Dma,
    ) -> Result<(Transport<R>, SplitQueue), E> {
        let found = Self::probe(&regs)?;
        if found != device_id {
            return Err(TransportError::WrongDevice(found).into());
        }
        let transport = Self::negotiate(regs, wanted)?;
        let queue = transport.queue_at::<E>(0, max_size, queue_base, dma)?;
        transport.driver_ok();
        Ok((transport, queue))
    }

    /// Sets queue `index` up with at most `max_size` entries, its rings at `base` in `dma`
    /// (a page), and returns the driver's side of it.
    pub fn queue_at<E: From<TransportError> + From<QueueError>>(
        &self,
        index: u32,
        max_size: u16,
        base: usize,
        dma: &dyn Dma,
    ) -> Result<SplitQueue, E> {
        let size = self.queue_size(index, max_size)?;
        let queue = SplitQueue::new(size, base)?;
        let (desc, avail, used) = queue.parts();
        self.setup_queue(index, size, dma.phys(desc), dma.phys(avail), dma.phys(used))?;
        Ok(queue)
    }

    /// Resets the device and negotiates features: accepts those of `wanted` it offers (plus
    /// VERSION_1), and stops at FEATURES_OK. The caller sets up queues, then [`Self::driver_ok`].
    pub fn negotiate(regs: R, wanted: u64) -> Result<Transport<R>, TransportError> {
        Self::probe(&regs)?;
        regs.write32(reg::STATUS, 0);
        regs.write32(reg::STATUS, STATUS_ACKNOWLEDGE);
        regs.write32(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        regs.write32(reg::DEVICE_FEATURES_SEL, 0);
        let low = regs.read32(reg::DEVICE_FEATURES);
        regs.write32(reg::DEVICE_FEATURES_SEL, 1);
        let high = regs.read32(reg::DEVICE_FEATURES);
        let offered = (u64::from(high) << 32) | u64::from(low);
        if offered & F_VERSION_1 == 0 {
            regs.write32(reg::STATUS, STATUS_FAILED);
            return Err(TransportError::NotModern);
        }
        let features = offered & (wanted | F_VERSION_1);
        regs.write32(reg::DRIVER_FEATURES_SEL, 0);
        regs.write32(reg::DRIVER_FEATURES, features as u32);
        regs.write32(reg::DRIVER_FEATURES_SEL, 1);
        regs.write32(reg::DRIVER_FEATURES, (features >> 32) as u32);
        let status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        regs.write32(reg::STATUS, status);
        if regs.read32(reg::STATUS) & STATUS_FEATURES_OK == 0 {
            regs.write32(reg::STATUS, STATUS_FAILED);
            return Err(TransportError::FeaturesRefused);
        }
        Ok(Transport { regs, features })
    }

    /// The features both sides agreed on.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The size to give queue `index`: the largest power of two no larger than `wanted` and
    /// the device's maximum (`NoQueue` if the queue does not exist).
    pub fn queue_size(&self, index: u32, wanted: u16) -> Result<u16, TransportError> {
        self.regs.write32(reg::QUEUE_SEL, index);
        let max = self.regs.read32(reg::QUEUE_NUM_MAX).min(u32::from(wanted));
        if max == 0 {
            return Err(TransportError::NoQueue(index));
        }
        Ok(1 << (31 - max.leading_zeros()))
    }

    /// Sets queue `index` up with `size` entries (from [`Self::queue_size`]) at the given
    /// guest-physical addresses.
    pub fn setup_queue(
        &self,
        index: u32,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<(), TransportError> {
        self.regs.write32(reg::QUEUE_SEL, index);
        let max = self.regs.read32(reg::QUEUE_NUM_MAX);
        if u32::from(size) > max || self.regs.read32(reg::QUEUE_READY) != 0 {
            return Err(TransportError::NoQueue(index));
        }
        self.regs.write32(reg::QUEUE_NUM, u32::from(size));
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, avail),
            (reg::QUEUE_DEVICE_LOW, used),
        ] {
            self.regs.write32(low, addr as u32);
            self.regs.write32(low + 4, (addr >> 32) as u32);
        }
        self.regs.write32(reg::QUEUE_READY, 1);
        Ok(())
    }

    /// Tells the device the driver is ready.
    pub fn driver_ok(&self) {
        self.regs.write32(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.regs.read32(reg::STATUS)
    }

    /// Notifies the device of new buffers on queue `index`.
    pub fn notify(&self, index: u32) {
        self.regs.write32(reg::QUEUE_NOTIFY, index);
    }

    /// Reads and acknowledges the interrupt status; returns the bits (0: not this device).
    pub fn ack_interrupt(&self) -> u32 {
        let bits = self.regs.read32(reg::INTERRUPT_STATUS);
        if bits != 0 {
            self.regs.write32(reg::INTERRUPT_ACK, bits);
        }
        bits
    }

    /// A 64-bit config field at `offset`, read consistently (retried across a config change).
    pub fn config_u64(&self, offset: usize) -> u64 {
        loop {
            let before = self.regs.read32(reg::CONFIG_GENERATION);
            let low = self.regs.read32(reg::CONFIG + offset);
            let high = self.regs.read32(reg::CONFIG + offset + 4);
            if self.regs.read32(reg::CONFIG_GENERATION) == before {
                return (u64::from(high) << 32) | u64::from(low);
            }
        }
    }

    /// Resets the device (it forgets its queues and stops using memory).
    pub fn reset(&self) {
        self.regs.write32(reg::STATUS, 0);
    }
}
