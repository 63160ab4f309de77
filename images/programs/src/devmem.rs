//! The only code of a ring-3 driver that touches device registers and DMA memory: volatile
//! accesses behind guest-lib's [`Regs`] and [`Dma`] traits, so the driver logic above them is
//! safe (and host-tested in guest-lib).

use alloc::vec::Vec;

use k42_guest_lib::virtio::{Dma, Regs};
use k42_rt::kabi::{self, Error, Prot};
use k42_rt::sys;

/// Where a driver server maps its device's registers.
pub const REGS_ADDR: u64 = 0x0000_4000_0000_0000;
/// A driver server's PPC reply: `(0, value)`, or `(code, 0)` for an error with that code (the
/// drivers' error enums are `#[repr(u64)]` with non-zero codes).
pub fn ppc_reply(result: Result<u64, u64>) -> k42_rt::sys::PpcReply {
    match result {
        Ok(r1) => k42_rt::sys::PpcReply { r0: 0, r1 },
        Err(r0) => k42_rt::sys::PpcReply { r0, r1: 0 },
    }
}

/// Where a driver server maps its DMA memory.
pub const DMA_ADDR: u64 = 0x0000_4000_0100_0000;
/// The soft-interrupt bit a driver server's device interrupt posts.
pub const IRQ_BIT: u64 = 1;

/// A device's register window, mapped by `device_map` (uncached).
#[derive(Debug)]
pub struct MmioRegs {
    base: u64,
    size: usize,
}

impl MmioRegs {
    /// Maps device `index` (whose window is `size` bytes) at `addr` and claims it.
    pub fn map(index: usize, addr: u64, size: u64) -> Result<MmioRegs, Error> {
        sys::device_map(index, addr)?;
        Ok(MmioRegs {
            base: addr,
            size: size as usize,
        })
    }

    fn register(&self, offset: usize) -> *mut u32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.size,
            "register {offset:#x} outside the window"
        );
        (self.base + offset as u64) as *mut u32
    }
}

impl Regs for MmioRegs {
    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: `register` checked that the aligned word lies in the window `device_map`
        // mapped (uncached, read-write) for this process, which keeps it until it exits.
        unsafe { self.register(offset).read_volatile() }
    }

    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { self.register(offset).write_volatile(value) }
    }
}

/// DMA memory: a memory object of this process mapped at one address, with the physical
/// address of each page (from `memobj_phys`).
#[derive(Debug)]
pub struct DmaRegion {
    base: u64,
    pages: Vec<u64>,
}

impl DmaRegion {
    /// A zeroed memory object of `pages` pages, mapped read-write at `addr`.
    pub fn new(pages: usize, addr: u64) -> Result<DmaRegion, Error> {
        let id = sys::memobj_create(pages as u64)?;
        sys::memobj_map(id, addr, Prot::READ | Prot::WRITE)?;
        let pages = (0..pages as u64)
            .map(|p| sys::memobj_phys(id, p))
            .collect::<Result<Vec<u64>, Error>>()?;
        Ok(DmaRegion { base: addr, pages })
    }

    fn at(&self, offset: usize, len: usize) -> *mut u8 {
        let end = offset.checked_add(len).expect("DMA range overflows");
        assert!(
            end <= self.pages.len() * kabi::PAGE_SIZE as usize,
            "DMA range {offset:#x}+{len} outside the region"
        );
        (self.base + offset as u64) as *mut u8
    }
}

impl Dma for DmaRegion {
    fn read_u16(&self, offset: usize) -> u16 {
        // SAFETY: `at` checked the range lies in the mapped memory object, which this process
        // owns until it exits; the device may write it at any time, hence volatile.
        unsafe { (self.at(offset, 2) as *const u16).read_volatile() }
    }

    fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: as in `read_u16`.
        unsafe { (self.at(offset, 4) as *const u32).read_volatile() }
    }

    fn write_u16(&self, offset: usize, value: u16) {
        // SAFETY: as in `read_u16`.
        unsafe { (self.at(offset, 2) as *mut u16).write_volatile(value) }
    }

    fn write_u32(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_u16`.
        unsafe { (self.at(offset, 4) as *mut u32).write_volatile(value) }
    }

    fn write_u64(&self, offset: usize, value: u64) {
        // SAFETY: as in `read_u16`.
        unsafe { (self.at(offset, 8) as *mut u64).write_volatile(value) }
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let src = self.at(offset, out.len());
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: as in `read_u16`, byte `i` of the checked range.
            *b = unsafe { src.add(i).read_volatile() };
        }
    }

    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let dst = self.at(offset, bytes.len());
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: as in `read_u16`, byte `i` of the checked range.
            unsafe { dst.add(i).write_volatile(b) };
        }
    }

    fn phys(&self, offset: usize) -> u64 {
        let page = offset / kabi::PAGE_SIZE as usize;
        self.pages[page] + (offset % kabi::PAGE_SIZE as usize) as u64
    }
}

/// Copies `len` bytes (at most a page) from the caller's PPC buffer, mapped at this CPU's
/// window during a PPC call, into `out`.
pub fn ppc_window_read(cpu: usize, out: &mut [u8]) {
    let len = out.len().min(kabi::PAGE_SIZE as usize);
    // SAFETY: during a PPC call the kernel maps the caller's buffer page at this CPU's window
    // (read-write) for this server; only this call's handler runs on this CPU's PPC stack.
    let window = unsafe { core::slice::from_raw_parts(kabi::ppc_window(cpu) as *const u8, len) };
    out[..len].copy_from_slice(window);
}

/// Copies `bytes` (at most a page) into the caller's PPC buffer during a PPC call.
pub fn ppc_window_write(cpu: usize, bytes: &[u8]) {
    let len = bytes.len().min(kabi::PAGE_SIZE as usize);
    // SAFETY: as in `ppc_window_read`.
    let window = unsafe { core::slice::from_raw_parts_mut(kabi::ppc_window(cpu) as *mut u8, len) };
    window.copy_from_slice(&bytes[..len]);
}

/// This dispatcher's own PPC buffer (what a client's calls carry), as a page.
pub fn own_ppc_buffer() -> &'static mut [u8] {
    // SAFETY: the kernel maps each dispatcher's PPC buffer writable when it creates the
    // dispatcher; single-dispatcher clients use only their own, one call at a time.
    unsafe {
        core::slice::from_raw_parts_mut(
            sys::ppc_buffer(k42_rt::current_dispatcher()),
            kabi::PAGE_SIZE as usize,
        )
    }
}

/// The kernel's index and description of the `n`-th device with virtio device ID `device_id`
/// (a `kind` such as "virtio-blk"), or a sentence saying why there is none (`who` names the
/// driver in it).
pub fn nth_device(
    who: &str,
    kind: &str,
    device_id: u32,
    n: usize,
) -> Result<(usize, kabi::DeviceDesc), alloc::string::String> {
    let mut list = [kabi::DeviceDesc::default(); kabi::MAX_DEVICES];
    let count = sys::device_list(&mut list)
        .map_err(|e| {
            alloc::format!(
                "{who}: cannot list devices: {e:?} (spawn drivers with SpawnFlags::DEVICES)"
            )
        })?
        .min(list.len());
    list[..count]
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, d)| d.device_id == u64::from(device_id))
        .nth(n)
        .ok_or_else(|| {
            alloc::format!("{who}: there is no {kind} device number {n} ({count} devices in all)")
        })
}

/// A device a driver has claimed: its kernel index and description, its mapped registers
/// (at [`REGS_ADDR`]) and its DMA memory (at [`DMA_ADDR`]).
#[derive(Debug)]
pub struct Claimed {
    /// The kernel's index of the device.
    pub index: usize,
    /// Where it is and its interrupt line.
    pub desc: kabi::DeviceDesc,
    /// The register window.
    pub regs: MmioRegs,
    /// The driver's DMA memory.
    pub dma: DmaRegion,
}

/// Claims the `n`-th `kind` device (virtio ID `device_id`) for the driver `who`: maps its
/// registers and makes `dma_pages` of DMA memory. The error is a sentence to print; `hint`
/// (such as "k42vm --rng") follows it when there is no such device.
pub fn claim_device(
    who: &str,
    (kind, device_id, hint): (&str, u32, &str),
    n: usize,
    dma_pages: usize,
) -> Result<Claimed, alloc::string::String> {
    let (index, desc) =
        nth_device(who, kind, device_id, n).map_err(|why| alloc::format!("{why} ({hint})"))?;
    let regs = MmioRegs::map(index, REGS_ADDR, desc.size)
        .map_err(|e| alloc::format!("{who}: cannot map device {index}: {e:?}"))?;
    let dma = DmaRegion::new(dma_pages, DMA_ADDR)
        .map_err(|e| alloc::format!("{who}: no DMA memory: {e:?}"))?;
    Ok(Claimed {
        index,
        desc,
        regs,
        dma,
    })
}

/// A driver's device, claimed and brought up.
pub struct Started<D> {
    /// The kernel's index of the device.
    pub index: usize,
    /// Where it is and its interrupt line.
    pub desc: kabi::DeviceDesc,
    /// The device, as `start` made it.
    pub dev: D,
}

/// Claims the device ([`claim_device`]) and brings it up with `start` (the device type's
/// constructor over its registers and DMA memory); prints why not and returns `None` when
/// either fails.
pub fn start_device<D, E: core::fmt::Debug>(
    who: &str,
    kind: (&str, u32, &str),
    n: usize,
    dma_pages: usize,
    start: impl FnOnce(MmioRegs, DmaRegion) -> Result<D, E>,
) -> Option<Started<D>> {
    let claimed = match claim_device(who, kind, n, dma_pages) {
        Ok(claimed) => claimed,
        Err(why) => {
            k42_rt::println!("{why}");
            return None;
        }
    };
    let index = claimed.index;
    match start(claimed.regs, claimed.dma) {
        Ok(dev) => Some(Started {
            index,
            desc: claimed.desc,
            dev,
        }),
        Err(e) => {
            k42_rt::println!("{who}: device {index} did not come up: {e:?}");
            None
        }
    }
}
