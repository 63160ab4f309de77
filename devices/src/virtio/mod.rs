//! Virtio 1.x (modern) devices over the MMIO transport: the transport (`mmio`), the device
//! interface it drives (`VirtioDevice`), descriptor-chain parsing (`chain`), and the devices
//! (`block`, `net`, `rng`, `console`).
//!
//! Wiring (done by the VMM): every `MmioTransport` owns one 4 KiB MMIO window and one interrupt
//! line. MMIO exits go to `MmioTransport::read`/`write`; an ioeventfd per queue on
//! `base + NOTIFY_OFFSET` (datamatch = queue index) calls `MmioTransport::notify(queue)`; the
//! device raises its line through an [`Interrupt`], normally an [`EventFdInterrupt`] registered as
//! an irqfd.

pub mod block;
pub mod chain;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

pub use queue::{DeviceQueues, QueueError};

/// Feature bit: the device supports indirect descriptors.
pub const VIRTIO_F_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: used_event / avail_event notification suppression.
pub const VIRTIO_F_EVENT_IDX: u64 = 1 << 29;
/// Feature bit: virtio 1.x compliance (required: this is a modern-only transport).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bit: the guest has noticed the device.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// Device status bit: the guest knows how to drive the device.
pub const STATUS_DRIVER: u32 = 2;
/// Device status bit: the driver is set up and ready to drive the device.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Device status bit: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u32 = 8;
/// Device status bit: the device hit an error it cannot recover from without a reset.
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 64;
/// Device status bit: the guest has given up on the device.
pub const STATUS_FAILED: u32 = 128;

/// Virtio device ID of a network card.
pub const DEVICE_ID_NET: u32 = 1;
/// Virtio device ID of a block device.
pub const DEVICE_ID_BLOCK: u32 = 2;
/// Virtio device ID of a console.
pub const DEVICE_ID_CONSOLE: u32 = 3;
/// Virtio device ID of an entropy source.
pub const DEVICE_ID_RNG: u32 = 4;

/// Why the device raises its interrupt (the bits of the MMIO InterruptStatus register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptReason {
    /// A buffer was placed in a used ring (InterruptStatus bit 0).
    UsedBuffer,
    /// The configuration space or the device status changed (InterruptStatus bit 1).
    ConfigChange,
}

impl InterruptReason {
    /// The InterruptStatus bit for this reason.
    pub fn status_bit(self) -> u32 {
        match self {
            InterruptReason::UsedBuffer => 1,
            InterruptReason::ConfigChange => 2,
        }
    }
}

/// How a device raises its interrupt line; the VMM supplies it.
pub trait Interrupt: Send + Sync {
    /// Raises the interrupt for `reason` (the transport has already set the status bit).
    fn trigger(&self, reason: InterruptReason) -> io::Result<()>;
}

/// Raises the interrupt by writing an eventfd that the VMM registered as a KVM irqfd.
#[derive(Debug)]
pub struct EventFdInterrupt(EventFd);

impl EventFdInterrupt {
    /// Wraps `fd` (keep a `try_clone` of it to register as the irqfd).
    pub fn new(fd: EventFd) -> Self {
        EventFdInterrupt(fd)
    }

    /// The eventfd, for registering it as an irqfd.
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }
}

impl Interrupt for EventFdInterrupt {
    fn trigger(&self, _reason: InterruptReason) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Counts interrupts instead of raising them (for tests and for devices driven by polling).
#[derive(Debug, Default)]
pub struct CountingInterrupt {
    used: AtomicU64,
    config: AtomicU64,
}

impl CountingInterrupt {
    /// A counter at zero.
    pub fn new() -> Self {
        CountingInterrupt::default()
    }

    /// Used-buffer interrupts raised so far.
    pub fn used_buffer_count(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Configuration-change interrupts raised so far.
    pub fn config_change_count(&self) -> u64 {
        self.config.load(Ordering::SeqCst)
    }
}

impl Interrupt for CountingInterrupt {
    fn trigger(&self, reason: InterruptReason) -> io::Result<()> {
        match reason {
            InterruptReason::UsedBuffer => self.used.fetch_add(1, Ordering::SeqCst),
            InterruptReason::ConfigChange => self.config.fetch_add(1, Ordering::SeqCst),
        };
        Ok(())
    }
}

/// A device failure that needs a reset: the transport sets DEVICE_NEEDS_RESET and stops using
/// the device until the driver resets it.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// The driver broke the queue protocol (bad ring index, malformed chain, ...).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A request too malformed to complete (for example, no room for a status byte).
    #[error("queue {queue}: malformed request: {reason}")]
    MalformedRequest {
        /// The queue it came from.
        queue: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// The device cannot start with what the driver negotiated.
    #[error("cannot activate: {0}")]
    Activate(String),
}

/// A virtio device model, driven by a transport (`mmio::MmioTransport`).
///
/// The transport owns the queues, guest memory and interrupt; it calls `process_queue` when the
/// driver notifies a queue and `poll` when the VMM has new host-side input for the device.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`DEVICE_ID_*`).
    fn device_type(&self) -> u32;

    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// The feature bits the device offers (VIRTIO_F_VERSION_1 is added by the transport).
    fn features(&self) -> u64;

    /// Reads device configuration space at `offset`; bytes beyond its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes device configuration space; the default ignores writes.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// Called when the driver sets DRIVER_OK, with the negotiated features (nothing to do
    /// unless a device's behaviour depends on them).
    fn activate(&mut self, _features: u64) -> Result<(), DeviceError> {
        Ok(())
    }

    /// Processes the buffers the driver made available on queue `queue`.
    fn process_queue(
        &mut self,
        queue: usize,
        queues: &mut DeviceQueues<'_>,
    ) -> Result<(), DeviceError>;

    /// Processes host-side events (for example new console input); the default does nothing.
    fn poll(&mut self, _queues: &mut DeviceQueues<'_>) -> Result<(), DeviceError> {
        Ok(())
    }

    /// Returns the device to its initial state (the driver wrote 0 to Status).
    fn reset(&mut self);
}
