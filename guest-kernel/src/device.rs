//! Devices delegated to ring-3 drivers (DESIGN.md's privileged minimum): the kernel only knows
//! which virtio-mmio windows and interrupt lines exist (from `virtio_mmio.device=` on its
//! command line), maps a window uncached into the one process that claims it, turns the
//! device's interrupt into a soft interrupt of a dispatcher of that process, and reports the
//! physical frames of the process's memory objects for DMA. Everything else (feature
//! negotiation, queues, acknowledging interrupts) is the driver's, in ring 3.

use alloc::sync::Arc;
use alloc::vec::Vec;

use k42_guest_lib::frames::FRAME_SIZE;
use k42_guest_lib::kabi::{self, DeviceDesc, Error, Prot, SpawnFlags};
use k42_guest_lib::virtio;
use k42_paravirt::HvmMemmapEntry;
use spin::{Mutex, Once};

use crate::arch::{idt, ioapic};
use crate::mm::aspace::{Backing, Region};
use crate::proc::{self, Dispatcher, Process};
use crate::{percpu, sched};

/// Largest device window accepted.
const MAX_WINDOW: u64 = 1 << 20;
/// virtio-mmio's device-ID register.
const VIRTIO_MMIO_DEVICE_ID: u64 = 0x08;
/// virtio-mmio's status register: writing 0 resets the device.
const VIRTIO_MMIO_STATUS: u64 = 0x70;

/// Who holds a device.
struct Claim {
    /// Owning process (0: none).
    owner: u64,
    /// CPU its line is routed to, once bound.
    routed_cpu: Option<usize>,
}

static DEVICES: Once<Vec<DeviceDesc>> = Once::new();
static CLAIMS: [Mutex<Claim>; kabi::MAX_DEVICES] = [const {
    Mutex::new(Claim {
        owner: 0,
        routed_cpu: None,
    })
}; kabi::MAX_DEVICES];
/// A bound line: the dispatcher and the bits its interrupt posts.
type Target = Option<(Arc<Dispatcher>, u64)>;
/// Per interrupt line, its target.
static TARGETS: [Mutex<Target>; idt::DEVICE_VECTORS as usize] =
    [const { Mutex::new(None) }; idt::DEVICE_VECTORS as usize];

/// Reads the devices announced on `cmdline`, keeping those whose window is page-aligned, at
/// most 1 MiB, outside every RAM range of `memmap`, and not overlapping another, and whose
/// line is an I/O APIC pin not used by another or by the console's UART; logs the others. Returns how many it kept.
pub fn init(cmdline: &str, memmap: &[HvmMemmapEntry]) -> usize {
    let mut kept: Vec<DeviceDesc> = Vec::new();
    for found in virtio::devices(cmdline) {
        let dev = match found {
            Ok(dev) => dev,
            Err(word) => {
                crate::kprintln!("devices: cannot parse `{}`; ignored", word);
                continue;
            }
        };
        let end = dev.base.checked_add(dev.size);
        let overlaps_ram = |start: u64, end: u64| {
            memmap.iter().any(|m| {
                m.kind == k42_paravirt::E820_RAM && m.addr < end && start < m.addr + m.size
            })
        };
        let ok = dev.size >= FRAME_SIZE
            && dev.size <= MAX_WINDOW
            && dev.base.is_multiple_of(FRAME_SIZE)
            && end.is_some_and(|end| !overlaps_ram(dev.base, end))
            && dev.irq < ioapic::PINS
            && dev.irq != crate::console_input::LINE
            && kept.len() < kabi::MAX_DEVICES
            && !kept.iter().any(|k| {
                k.irq == u64::from(dev.irq)
                    || (k.base < dev.base + dev.size && dev.base < k.base + k.size)
            });
        if !ok {
            crate::kprintln!(
                "devices: {:#x} size {:#x} line {} is not a usable device window; ignored",
                dev.base,
                dev.size,
                dev.irq
            );
            continue;
        }
        // SAFETY: the window passed the checks above: page-aligned, outside RAM, and at
        // least a page long, so both registers lie in device memory.
        let (magic, id) = unsafe {
            (
                crate::arch::device_read32(dev.base),
                crate::arch::device_read32(dev.base + VIRTIO_MMIO_DEVICE_ID),
            )
        };
        kept.push(DeviceDesc {
            base: dev.base,
            size: dev.size,
            irq: u64::from(dev.irq),
            device_id: if magic == virtio::transport::MAGIC {
                u64::from(id)
            } else {
                0
            },
        });
    }
    let count = kept.len();
    DEVICES.call_once(|| kept);
    count
}

fn devices() -> &'static [DeviceDesc] {
    DEVICES.get().map_or(&[], Vec::as_slice)
}

fn check_driver(process: &Process) -> Result<(), Error> {
    if process.flags & SpawnFlags::DEVICES == 0 {
        return Err(Error::NotPermitted);
    }
    Ok(())
}

/// `device_list(ptr, max)`: copies up to `max` descriptions to `ptr`; returns the count.
pub fn list(process: &Arc<Process>, ptr: u64, max: u64) -> Result<u64, Error> {
    check_driver(process)?;
    let all = devices();
    let n = all.len().min(usize::try_from(max).unwrap_or(usize::MAX));
    if n > 0 {
        let mut bytes = Vec::with_capacity(n * core::mem::size_of::<DeviceDesc>());
        for d in &all[..n] {
            for word in [d.base, d.size, d.irq, d.device_id] {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
        }
        process
            .aspace
            .lock()
            .as_mut()
            .ok_or(Error::Fault)?
            .write_user(ptr, &bytes)?;
    }
    Ok(all.len() as u64)
}

/// Whether the process `pid` is alive (a claim by a dead process is free).
fn alive(pid: u64) -> bool {
    pid != 0
        && proc::process(pid)
            .is_some_and(|p| !p.exiting.load(core::sync::atomic::Ordering::Acquire))
}

/// `device_map(index, addr)`: maps the window uncached at `addr` and claims the device.
pub fn map(process: &Arc<Process>, index: u64, addr: u64) -> Result<u64, Error> {
    check_driver(process)?;
    let dev = *devices()
        .get(usize::try_from(index).map_err(|_| Error::NotFound)?)
        .ok_or(Error::NotFound)?;
    let len = dev.size.div_ceil(FRAME_SIZE) * FRAME_SIZE;
    if !addr.is_multiple_of(FRAME_SIZE) || !kabi::user_range_ok(addr, len) {
        return Err(Error::Invalid);
    }
    let mut claim = CLAIMS[index as usize].lock();
    if claim.owner != process.pid && alive(claim.owner) {
        return Err(Error::Busy);
    }
    let mut guard = process.aspace.lock();
    let space = guard.as_mut().ok_or(Error::Fault)?;
    space.add_region(Region {
        start: addr,
        end: addr + len,
        prot: Prot::READ | Prot::WRITE,
        backing: Backing::Device,
    })?;
    for page in 0..len / FRAME_SIZE {
        let offset = page * FRAME_SIZE;
        if let Err(e) = space.map_device_page(addr + offset, dev.base + offset) {
            // Nothing of it was owned: the frames list stays empty.
            let mut none = Vec::new();
            let _ = space.remove_range(addr, addr + len, &mut none);
            return Err(e.into());
        }
    }
    if claim.owner != process.pid {
        claim.owner = process.pid;
        claim.routed_cpu = None;
    }
    Ok(0)
}

/// `device_irq(index, bits)`: the device's interrupt posts `bits` to `me`.
pub fn bind_irq(me: &Arc<Dispatcher>, index: u64, bits: u64) -> Result<u64, Error> {
    check_driver(&me.process)?;
    let dev = *devices()
        .get(usize::try_from(index).map_err(|_| Error::NotFound)?)
        .ok_or(Error::NotFound)?;
    if bits == 0 || bits & kabi::SOFT_INTERRUPT_RESERVED != 0 {
        return Err(Error::Invalid);
    }
    let mut claim = CLAIMS[index as usize].lock();
    if claim.owner != me.process.pid {
        return Err(Error::NotPermitted);
    }
    let line = dev.irq as usize;
    *TARGETS[line].lock() = Some((me.clone(), bits));
    if claim.routed_cpu != Some(me.cpu) {
        let apic_id = percpu::cpu(me.cpu).ok_or(Error::Invalid)?.apic_id;
        ioapic::route(
            dev.irq as u32,
            idt::DEVICE_VECTOR_BASE + line as u8,
            apic_id,
        );
        claim.routed_cpu = Some(me.cpu);
    }
    Ok(0)
}

/// Gives up the devices `pid` holds: each is reset (so it stops using the process's memory
/// before that is freed), its line masked and unbound.
pub fn release(pid: u64) {
    for (index, dev) in devices().iter().enumerate() {
        let mut claim = CLAIMS[index].lock();
        if claim.owner != pid {
            continue;
        }
        claim.owner = 0;
        claim.routed_cpu = None;
        ioapic::mask(dev.irq as u32);
        TARGETS[dev.irq as usize].lock().take();
        // SAFETY: `dev` passed `init`'s checks: its window is page-aligned device memory
        // outside every RAM range, and the status register lies inside it.
        unsafe { crate::arch::device_write32(dev.base + VIRTIO_MMIO_STATUS, 0) };
    }
}

/// A device line's interrupt (vector `vector`): posts the bound bits, nothing else. Device
/// interrupts arrive only while a CPU runs user code or idles (the kernel runs with interrupts
/// off), so the locks taken here are never held by the interrupted code.
pub fn interrupt(vector: u8) {
    let line = usize::from(vector - idt::DEVICE_VECTOR_BASE);
    if let Some(target) = TARGETS.get(line) {
        if let Some((d, bits)) = &*target.lock() {
            sched::post_soft_interrupt(d, *bits);
        }
    }
}
