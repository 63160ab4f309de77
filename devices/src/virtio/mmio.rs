//! The virtio-mmio transport, virtio 1.x (modern, Version 2) only: virtio 1.2 section 4.2.2.
//!
//! One `MmioTransport` is one device's 4 KiB MMIO window. It never panics on guest input: bad
//! register accesses are ignored (reads return zero) with a rate-limited log line, queue setups
//! that break the rules are not made ready, and queue-protocol violations put the device in
//! DEVICE_NEEDS_RESET until the driver resets it.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::queue::{DeviceQueues, QueueSlot};
use super::{
    DeviceError, Interrupt, InterruptReason, VirtioDevice, STATUS_ACKNOWLEDGE,
    STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
    VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1,
};
use crate::ratelimit::{RateLimitedLog, DEFAULT_LINES_PER_SECOND};

/// Size of the MMIO window of one device.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register (where the VMM puts the per-queue ioeventfds).
pub const NOTIFY_OFFSET: u64 = 0x050;
/// Offset where the device configuration space starts.
pub const CONFIG_OFFSET: u64 = 0x100;
/// The MagicValue register's value ("virt").
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The Version register's value: 2, modern virtio-mmio.
pub const MMIO_VERSION: u32 = 2;
/// Our VendorID ("K42V" as little-endian bytes).
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"K42V");

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = NOTIFY_OFFSET;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_SHM_SEL: u64 = 0x0ac;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_SHM_BASE_LOW: u64 = 0x0b8;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_QUEUE_RESET: u64 = 0x0c0;
const REG_CONFIG_GENERATION: u64 = 0x0fc;

/// Status bits a driver may set.
const DRIVER_STATUS_BITS: u32 =
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK | STATUS_FAILED;

/// The kernel command-line entry that announces a device the Linux way:
/// `virtio_mmio.device=4K@0x<base>:<irq>`.
pub fn cmdline_entry(base: u64, irq: u32) -> String {
    format!("virtio_mmio.device=4K@{base:#x}:{irq}")
}

/// One virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn Interrupt>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueSlot>,
    interrupt_status: u32,
    config_generation: u32,
    log: RateLimitedLog,
}

impl MmioTransport {
    /// Puts `device` behind a register window; it reaches guest memory through `mem` (a clone of
    /// the VM's, sharing the mapping) and raises its interrupt through `interrupt`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
    ) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueSlot::new(max))
            .collect();
        let name = format!("virtio-mmio(device {})", device.device_type());
        MmioTransport {
            device,
            mem,
            interrupt,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            interrupt_status: 0,
            config_generation: 0,
            log: RateLimitedLog::new(name, DEFAULT_LINES_PER_SECOND),
        }
    }

    /// The device model.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// Number of queues (the VMM registers one ioeventfd per queue).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The Status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// Features offered: the device's plus VIRTIO_F_VERSION_1.
    pub fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    /// Features the driver has written so far.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Whether queue `queue` is ready.
    pub fn queue_ready(&self, queue: usize) -> bool {
        self.queues.get(queue).is_some_and(QueueSlot::ready)
    }

    /// The rate-limited log of this device (to count what was logged).
    pub fn log(&self) -> &RateLimitedLog {
        &self.log
    }

    /// Names the device in its log lines (for example `virtio-blk@0xd0000000`).
    pub fn set_name(&mut self, name: &str) {
        self.log.set_name(name);
    }

    /// Makes the log count lines without printing them (fuzzing, property tests).
    pub fn set_log_quiet(&mut self, quiet: bool) {
        self.log.set_quiet(quiet);
    }

    /// A read of `data.len()` bytes at `offset` in the MMIO window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_OFFSET {
            let end = offset.checked_add(data.len() as u64);
            if end.is_none_or(|end| end > MMIO_WINDOW_SIZE) {
                self.log.log(format_args!(
                    "read of {} bytes at {offset:#x} outside the window",
                    data.len()
                ));
                return;
            }
            self.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.log.log(format_args!(
                "register read of {} bytes at {offset:#x} (only aligned 32-bit reads allowed)",
                data.len()
            ));
            return;
        }
        let value = match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            REG_QUEUE_READY => u32::from(self.selected_queue().is_some_and(QueueSlot::ready)),
            REG_INTERRUPT_STATUS => self.interrupt_status,
            REG_STATUS => self.status,
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH | REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => {
                // No shared memory regions: length -1 and base all ones.
                u32::MAX
            }
            REG_QUEUE_RESET => 0,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => {
                self.log.log(format_args!(
                    "read of unknown or write-only register {offset:#x}"
                ));
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A write of `data` at `offset` in the MMIO window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            let end = offset.checked_add(data.len() as u64);
            if end.is_none_or(|end| end > MMIO_WINDOW_SIZE) {
                self.log.log(format_args!(
                    "write of {} bytes at {offset:#x} outside the window",
                    data.len()
                ));
                return;
            }
            self.device.write_config(offset - CONFIG_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.log.log(format_args!(
                "register write of {} bytes at {offset:#x} (only aligned 32-bit writes allowed)",
                data.len()
            ));
            return;
        };
        if !offset.is_multiple_of(4) {
            self.log
                .log(format_args!("misaligned register write at {offset:#x}"));
            return;
        }
        let value = u32::from_le_bytes(bytes);
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES => self.write_driver_features(value),
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM => self.write_queue_reg(offset, |q| q.num = value),
            REG_QUEUE_DESC_LOW => self.write_queue_reg(offset, |q| set_low(&mut q.desc, value)),
            REG_QUEUE_DESC_HIGH => self.write_queue_reg(offset, |q| set_high(&mut q.desc, value)),
            REG_QUEUE_DRIVER_LOW => self.write_queue_reg(offset, |q| set_low(&mut q.driver, value)),
            REG_QUEUE_DRIVER_HIGH => {
                self.write_queue_reg(offset, |q| set_high(&mut q.driver, value))
            }
            REG_QUEUE_DEVICE_LOW => self.write_queue_reg(offset, |q| set_low(&mut q.device, value)),
            REG_QUEUE_DEVICE_HIGH => {
                self.write_queue_reg(offset, |q| set_high(&mut q.device, value))
            }
            REG_QUEUE_READY => self.write_queue_ready(value),
            REG_QUEUE_NOTIFY => self.notify(value),
            REG_INTERRUPT_ACK => self.interrupt_status &= !value,
            REG_STATUS => self.write_status(value),
            REG_SHM_SEL => {}
            REG_QUEUE_RESET => self.log.log(format_args!(
                "QueueReset written but VIRTIO_F_RING_RESET is not offered"
            )),
            _ => self.log.log(format_args!(
                "write of {value:#x} to unknown or read-only register {offset:#x}"
            )),
        }
    }

    /// The driver notified queue `queue` (a QueueNotify write, or the VMM's ioeventfd for it).
    pub fn notify(&mut self, queue: u32) {
        if self.status & STATUS_DRIVER_OK == 0 {
            self.log.log(format_args!(
                "notification of queue {queue} before DRIVER_OK ignored"
            ));
            return;
        }
        if self.status & (STATUS_FAILED | STATUS_DEVICE_NEEDS_RESET) != 0 {
            self.log.log(format_args!(
                "notification of queue {queue} ignored: device status {:#x}",
                self.status
            ));
            return;
        }
        let index = queue as usize;
        if !self.queue_ready(index) {
            self.log.log(format_args!(
                "notification of queue {queue}, which does not exist or is not ready"
            ));
            return;
        }
        self.run(|device, queues| device.process_queue(index, queues));
    }

    /// Lets the device handle host-side input (for example console bytes the VMM pushed).
    pub fn poll(&mut self) {
        if self.status & STATUS_DRIVER_OK == 0
            || self.status & (STATUS_FAILED | STATUS_DEVICE_NEEDS_RESET) != 0
        {
            return;
        }
        self.run(|device, queues| device.poll(queues));
    }

    fn run(
        &mut self,
        f: impl FnOnce(&mut dyn VirtioDevice, &mut DeviceQueues<'_>) -> Result<(), DeviceError>,
    ) {
        let indirect = self.driver_features & VIRTIO_F_INDIRECT_DESC != 0;
        let result = {
            let mut queues = DeviceQueues {
                mem: &self.mem,
                slots: &mut self.queues,
                indirect,
                log: &mut self.log,
            };
            f(self.device.as_mut(), &mut queues)
        };
        // Buffers used before a failure are still the driver's: signal them in every case.
        let mut used_interrupt = false;
        for slot in &mut self.queues {
            if std::mem::take(&mut slot.has_used) {
                if let Some(q) = slot.queue.as_mut() {
                    use virtio_queue::QueueT;
                    // If the used_event can't be read, interrupt anyway: spurious is harmless.
                    used_interrupt |= q.needs_notification(&self.mem).unwrap_or(true);
                }
            }
        }
        if used_interrupt {
            self.raise(InterruptReason::UsedBuffer);
        }
        if let Err(e) = result {
            self.needs_reset(&e);
        }
    }

    fn needs_reset(&mut self, error: &DeviceError) {
        self.log.log(format_args!(
            "{error}; device needs reset (DEVICE_NEEDS_RESET)"
        ));
        self.status |= STATUS_DEVICE_NEEDS_RESET;
        if self.status & STATUS_DRIVER_OK != 0 {
            self.raise(InterruptReason::ConfigChange);
        }
    }

    fn raise(&mut self, reason: InterruptReason) {
        self.interrupt_status |= reason.status_bit();
        if let Err(e) = self.interrupt.trigger(reason) {
            self.log
                .log(format_args!("cannot raise the interrupt: {e}"));
        }
    }

    fn selected_queue(&self) -> Option<&QueueSlot> {
        self.queues.get(self.queue_sel as usize)
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & STATUS_DRIVER == 0 || self.status & STATUS_FEATURES_OK != 0 {
            self.log.log(format_args!(
                "DriverFeatures written in status {:#x} ignored",
                self.status
            ));
            return;
        }
        match self.driver_features_sel {
            0 => set_low(&mut self.driver_features, value),
            1 => set_high(&mut self.driver_features, value),
            sel => {
                if value != 0 {
                    self.log.log(format_args!(
                        "DriverFeatures page {sel} written with {value:#x}: no such features"
                    ));
                }
            }
        }
    }

    fn write_queue_reg(&mut self, offset: u64, f: impl FnOnce(&mut QueueSlot)) {
        if self.status & STATUS_FEATURES_OK == 0 || self.status & STATUS_DRIVER_OK != 0 {
            self.log.log(format_args!(
                "queue register {offset:#x} written in status {:#x} ignored",
                self.status
            ));
            return;
        }
        let sel = self.queue_sel;
        match self.queues.get_mut(sel as usize) {
            Some(q) if q.ready() => {
                self.log.log(format_args!(
                    "queue {sel} register {offset:#x} written while the queue is ready: ignored"
                ));
            }
            Some(q) => f(q),
            None => self.log.log(format_args!(
                "queue register {offset:#x} written for queue {sel}, which does not exist"
            )),
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let sel = self.queue_sel;
        if value == 0 {
            if let Some(q) = self.queues.get_mut(sel as usize) {
                q.queue = None;
            }
            return;
        }
        if self.status & STATUS_FEATURES_OK == 0
            || self.status & (STATUS_FAILED | STATUS_DEVICE_NEEDS_RESET) != 0
        {
            self.log.log(format_args!(
                "QueueReady for queue {sel} in status {:#x} ignored",
                self.status
            ));
            return;
        }
        let event_idx = self.driver_features & VIRTIO_F_EVENT_IDX != 0;
        let Some(q) = self.queues.get_mut(sel as usize) else {
            self.log.log(format_args!(
                "QueueReady for queue {sel}, which does not exist"
            ));
            return;
        };
        if q.ready() {
            return;
        }
        if let Err(e) = q.enable(&self.mem, event_idx) {
            self.log
                .log(format_args!("queue {sel} not made ready: {e}"));
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if value & !DRIVER_STATUS_BITS != 0 {
            self.log.log(format_args!(
                "status bits {:#x} are not the driver's to set: ignored",
                value & !DRIVER_STATUS_BITS
            ));
        }
        // The device's own bit stays as it is; the driver may only add bits, never clear them.
        let new = (value & DRIVER_STATUS_BITS) | (old & STATUS_DEVICE_NEEDS_RESET);
        if old & !new & DRIVER_STATUS_BITS != 0 {
            self.log.log(format_args!(
                "status write {value:#x} clears bits of {old:#x} without a reset: ignored"
            ));
            return;
        }
        let added = new & !old;
        let has = |bit| new & bit != 0;
        let order_ok = (!has(STATUS_DRIVER) || has(STATUS_ACKNOWLEDGE))
            && (!has(STATUS_FEATURES_OK) || has(STATUS_DRIVER))
            && (!has(STATUS_DRIVER_OK) || has(STATUS_FEATURES_OK));
        if !order_ok {
            self.log.log(format_args!(
                "status {new:#x} skips initialization steps: ignored"
            ));
            return;
        }
        let mut new = new;
        if added & STATUS_FEATURES_OK != 0 {
            let offered = self.device_features();
            let extra = self.driver_features & !offered;
            if extra != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                self.log.log(format_args!(
                    "FEATURES_OK refused: driver features {:#x} (not offered: {extra:#x}; \
                     VERSION_1 is required)",
                    self.driver_features
                ));
                new &= !(STATUS_FEATURES_OK | STATUS_DRIVER_OK);
            }
        }
        self.status = new;
        if added & STATUS_DRIVER_OK != 0 && new & STATUS_DRIVER_OK != 0 {
            let event_idx = self.driver_features & VIRTIO_F_EVENT_IDX != 0;
            for slot in &mut self.queues {
                if let Some(q) = slot.queue.as_mut() {
                    use virtio_queue::QueueT;
                    q.set_event_idx(event_idx);
                }
            }
            if let Err(e) = self.device.activate(self.driver_features) {
                self.needs_reset(&e);
            }
        }
    }

    /// Device reset (Status written with 0).
    fn reset(&mut self) {
        self.device.reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt_status = 0;
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    /// Checks the transport's invariants (used by fuzzing and property tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.status & !(DRIVER_STATUS_BITS | STATUS_DEVICE_NEEDS_RESET) != 0 {
            return Err(format!("unknown status bits in {:#x}", self.status));
        }
        if self.status & STATUS_FEATURES_OK != 0 {
            if self.driver_features & !self.device_features() != 0 {
                return Err("FEATURES_OK with features the device did not offer".into());
            }
            if self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                return Err("FEATURES_OK without VERSION_1".into());
            }
        }
        if self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            return Err("DRIVER_OK without FEATURES_OK".into());
        }
        if self.interrupt_status & !3 != 0 {
            return Err(format!("InterruptStatus {:#x}", self.interrupt_status));
        }
        for (i, slot) in self.queues.iter().enumerate() {
            if let Some(q) = &slot.queue {
                use virtio_queue::QueueT;
                let n = q.size();
                if n == 0 || n > slot.max_size || !n.is_power_of_two() {
                    return Err(format!("queue {i} ready with size {n}"));
                }
                if !q.is_valid(&self.mem) {
                    return Err(format!("queue {i} ready with invalid rings"));
                }
            }
        }
        Ok(())
    }
}

fn set_low(reg: &mut u64, value: u32) {
    *reg = (*reg & !0xffff_ffff) | u64::from(value);
}

fn set_high(reg: &mut u64, value: u32) {
    *reg = (*reg & 0xffff_ffff) | (u64::from(value) << 32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VMM shares a transport between vCPU threads (MMIO exits) and the event loop
    /// (ioeventfds) behind a mutex, so it must be `Send`.
    #[test]
    fn transport_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<MmioTransport>();
        assert_send::<super::super::EventFdInterrupt>();
    }
}
