//! The MMIO bus: which device answers a guest-physical address that KVM hands to k42vm as a
//! KVM_EXIT_MMIO. Ranges are fixed before the vCPUs start and kept sorted, so a lookup is a
//! binary search without a lock; an access that hits no device is logged (rate-limited) and
//! reads as zeroes.

use std::fmt;
use std::sync::{Arc, Mutex};

use k42_devices::ratelimit::{RateLimitedLog, DEFAULT_LINES_PER_SECOND};
use k42_devices::virtio::mmio::MmioTransport;

/// A device that answers MMIO accesses at offsets within its range.
pub trait MmioDevice: Send + Sync {
    /// A read of `data.len()` bytes at `offset` from the start of the device's range.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// A write of `data` at `offset` from the start of the device's range.
    fn write(&self, offset: u64, data: &[u8]);
}

/// A virtio-mmio transport shared by the vCPU threads (exits) and the event loop (ioeventfds).
impl MmioDevice for Mutex<MmioTransport> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(offset, data);
    }
}

/// Why a range could not be added to the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusError {
    /// A range of size zero.
    Empty {
        /// Its base.
        base: u64,
    },
    /// A range that runs past the end of the address space.
    Overflow {
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// A range that overlaps one already on the bus.
    Overlap {
        /// The new range's base.
        base: u64,
        /// The new range's size.
        size: u64,
        /// The base of the range it overlaps.
        existing: u64,
    },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Empty { base } => write!(f, "MMIO range at {base:#x} has size zero"),
            BusError::Overflow { base, size } => write!(
                f,
                "MMIO range at {base:#x} of {size:#x} bytes runs past the address space"
            ),
            BusError::Overlap {
                base,
                size,
                existing,
            } => write!(
                f,
                "MMIO range at {base:#x} of {size:#x} bytes overlaps the device at {existing:#x}"
            ),
        }
    }
}

impl std::error::Error for BusError {}

struct Range {
    base: u64,
    size: u64,
    device: Arc<dyn MmioDevice>,
}

/// Guest-physical MMIO ranges and the devices behind them.
pub struct MmioBus {
    /// Sorted by base, never overlapping.
    ranges: Vec<Range>,
    unknown: Mutex<RateLimitedLog>,
}

impl Default for MmioBus {
    fn default() -> Self {
        MmioBus::new()
    }
}

impl fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for r in &self.ranges {
            list.entry(&format_args!("{:#x}..{:#x}", r.base, r.base + r.size));
        }
        list.finish()
    }
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        MmioBus {
            ranges: Vec::new(),
            unknown: Mutex::new(RateLimitedLog::new("k42vm: mmio", DEFAULT_LINES_PER_SECOND)),
        }
    }

    /// Puts `device` at `base..base + size`; refuses empty, overflowing and overlapping ranges.
    pub fn insert(
        &mut self,
        base: u64,
        size: u64,
        device: Arc<dyn MmioDevice>,
    ) -> Result<(), BusError> {
        if size == 0 {
            return Err(BusError::Empty { base });
        }
        let end = base
            .checked_add(size)
            .ok_or(BusError::Overflow { base, size })?;
        // The first range starting at or after `base`, and the one before it.
        let at = self.ranges.partition_point(|r| r.base < base);
        let overlaps = |r: &Range| r.base < end && base < r.base + r.size;
        for r in self.ranges[at.saturating_sub(1)..].iter().take(2) {
            if overlaps(r) {
                return Err(BusError::Overlap {
                    base,
                    size,
                    existing: r.base,
                });
            }
        }
        self.ranges.insert(at, Range { base, size, device });
        Ok(())
    }

    /// The device whose range holds all of `addr..addr + len`, and the offset of `addr` in it.
    pub fn find(&self, addr: u64, len: usize) -> Option<(&Arc<dyn MmioDevice>, u64)> {
        let i = self
            .ranges
            .partition_point(|r| r.base <= addr)
            .checked_sub(1)?;
        let r = &self.ranges[i];
        let offset = addr - r.base;
        let end = offset.checked_add(len as u64)?;
        (end <= r.size).then_some((&r.device, offset))
    }

    /// Number of ranges on the bus.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the bus has no ranges.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Accesses that hit no device so far (logged or suppressed by the rate limit).
    pub fn unknown_accesses(&self) -> u64 {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total()
    }

    /// Makes the unknown-access log count without printing (tests).
    pub fn set_log_quiet(&self, quiet: bool) {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_quiet(quiet);
    }

    /// A guest read at `addr`: the device's answer, or zeroes when no device has the address.
    /// Returns whether a device answered.
    pub fn read(&self, vcpu: usize, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((device, offset)) => {
                device.read(offset, data);
                true
            }
            None => {
                data.fill(0);
                self.log_unknown(format_args!(
                    "vCPU {vcpu} read {} bytes at {addr:#x}, where there is no device; read as zero",
                    data.len()
                ));
                false
            }
        }
    }

    /// A guest write at `addr`: given to the device, or dropped when no device has the address.
    /// Returns whether a device took it.
    pub fn write(&self, vcpu: usize, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((device, offset)) => {
                device.write(offset, data);
                true
            }
            None => {
                self.log_unknown(format_args!(
                    "vCPU {vcpu} wrote {} bytes at {addr:#x}, where there is no device; ignored",
                    data.len()
                ));
                false
            }
        }
    }

    fn log_unknown(&self, args: fmt::Arguments<'_>) {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log(args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last access and answers reads with its tag byte.
    struct Probe {
        tag: u8,
        last: Mutex<Option<(u64, Vec<u8>)>>,
    }

    impl Probe {
        fn new(tag: u8) -> Arc<Probe> {
            Arc::new(Probe {
                tag,
                last: Mutex::new(None),
            })
        }

        fn last(&self) -> Option<(u64, Vec<u8>)> {
            self.last.lock().unwrap().clone()
        }
    }

    impl MmioDevice for Probe {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(self.tag);
            *self.last.lock().unwrap() = Some((offset, Vec::new()));
        }

        fn write(&self, offset: u64, data: &[u8]) {
            *self.last.lock().unwrap() = Some((offset, data.to_vec()));
        }
    }

    fn bus() -> MmioBus {
        let bus = MmioBus::new();
        bus.set_log_quiet(true);
        bus
    }

    #[test]
    fn finds_the_device_and_offset_in_sorted_ranges() {
        let mut bus = bus();
        let (a, b, c) = (Probe::new(1), Probe::new(2), Probe::new(3));
        // Inserted out of order; looked up by address.
        bus.insert(0xd000_2000, 0x1000, c.clone()).unwrap();
        bus.insert(0xd000_0000, 0x1000, a.clone()).unwrap();
        bus.insert(0xd000_1000, 0x1000, b.clone()).unwrap();
        assert_eq!(bus.len(), 3);
        let mut data = [0u8; 4];
        assert!(bus.read(0, 0xd000_1ffc, &mut data));
        assert_eq!(data, [2; 4]);
        assert_eq!(b.last(), Some((0xffc, Vec::new())));
        assert!(bus.write(0, 0xd000_0050, &[7, 0, 0, 0]));
        assert_eq!(a.last(), Some((0x50, vec![7, 0, 0, 0])));
        assert!(bus.read(0, 0xd000_2000, &mut data));
        assert_eq!(data, [3; 4]);
        assert_eq!(bus.unknown_accesses(), 0);
    }

    #[test]
    fn unknown_addresses_read_zero_and_are_counted() {
        let mut bus = bus();
        let a = Probe::new(9);
        bus.insert(0xd000_0000, 0x1000, a.clone()).unwrap();
        let mut data = [0xaau8; 8];
        // Below, above, just past the end, and straddling the end.
        for addr in [0x1000, 0xcfff_fff8, 0xd000_1000, 0xffff_ffff_ffff_fff8] {
            data.fill(0xaa);
            assert!(!bus.read(0, addr, &mut data), "{addr:#x}");
            assert_eq!(data, [0; 8], "{addr:#x}");
        }
        assert!(!bus.read(0, 0xd000_0ffc, &mut data));
        assert!(!bus.write(1, 0xe000_0000, &[1]));
        assert_eq!(a.last(), None, "no access reached the device");
        assert_eq!(bus.unknown_accesses(), 6);
        // An empty bus answers nothing.
        let empty = MmioBus::new();
        empty.set_log_quiet(true);
        assert!(!empty.read(0, 0, &mut data));
        assert!(empty.is_empty());
    }

    #[test]
    fn overlaps_and_bad_ranges_are_refused() {
        let mut bus = bus();
        let p = Probe::new(0);
        bus.insert(0x1000, 0x1000, p.clone()).unwrap();
        bus.insert(0x3000, 0x1000, p.clone()).unwrap();
        let overlap = |base, size, existing| {
            Err(BusError::Overlap {
                base,
                size,
                existing,
            })
        };
        assert_eq!(
            bus.insert(0x1000, 0x1000, p.clone()),
            overlap(0x1000, 0x1000, 0x1000)
        );
        assert_eq!(
            bus.insert(0x1800, 0x10, p.clone()),
            overlap(0x1800, 0x10, 0x1000)
        );
        assert_eq!(
            bus.insert(0x0800, 0x1000, p.clone()),
            overlap(0x800, 0x1000, 0x1000)
        );
        assert_eq!(bus.insert(0x2fff, 2, p.clone()), overlap(0x2fff, 2, 0x3000));
        assert_eq!(
            bus.insert(0, 0x10_0000, p.clone()),
            overlap(0, 0x10_0000, 0x1000)
        );
        assert_eq!(
            bus.insert(0x5000, 0, p.clone()),
            Err(BusError::Empty { base: 0x5000 })
        );
        assert_eq!(
            bus.insert(u64::MAX - 0xfff, 0x1001, p.clone()),
            Err(BusError::Overflow {
                base: u64::MAX - 0xfff,
                size: 0x1001
            })
        );
        // Touching ranges are fine, at both ends.
        bus.insert(0x2000, 0x1000, p.clone()).unwrap();
        bus.insert(0x0, 0x1000, p.clone()).unwrap();
        bus.insert(u64::MAX - 0x1fff, 0x1000, p).unwrap();
        assert_eq!(bus.len(), 5);
        let msg = overlap(1, 2, 3).unwrap_err().to_string();
        assert!(msg.contains("overlaps the device at 0x3"), "{msg}");
    }
}
