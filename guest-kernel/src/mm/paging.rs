//! The direct map beyond the 4 GiB the boot page tables cover.

use k42_paravirt::E820_RAM;

use crate::arch::{boot, cpuid, phys_to_virt};
use crate::bootinfo::BootInfo;

use super::frames::{alloc_contiguous, DIRECT_MAP_LIMIT};

const GIB: u64 = 1 << 30;
const PRESENT_WRITABLE: u64 = 0x3;
const HUGE: u64 = 0x80;

/// Adds every GiB of RAM above 4 GiB to the direct map (1 GiB pages when the CPU has them,
/// otherwise 2 MiB pages in fresh page directories).
pub(super) fn map_high_ram(info: &BootInfo) -> Result<(), &'static str> {
    let top = info
        .memmap
        .iter()
        .filter(|e| e.kind == E820_RAM)
        .map(|e| e.addr.saturating_add(e.size))
        .max()
        .unwrap_or(0)
        .min(DIRECT_MAP_LIMIT);
    if top <= 4 * GIB {
        return Ok(());
    }
    let gib_pages = cpuid(0x8000_0001, 0).edx & (1 << 26) != 0;
    let pdpt = phys_to_virt(boot::boot_pdpt_phys()) as *mut u64;
    for slot in 4..top.div_ceil(GIB) {
        let entry = if gib_pages {
            (slot * GIB) | HUGE | PRESENT_WRITABLE
        } else {
            let pd = alloc_contiguous(1).ok_or("no frame for a page directory")?;
            let pd_virt = phys_to_virt(pd) as *mut u64;
            for i in 0..512u64 {
                // SAFETY: `pd` is a fresh frame owned by us, mapped by the direct map (it lies
                // below 4 GiB or in an already-mapped GiB, as bump allocation goes upward).
                unsafe {
                    pd_virt
                        .add(i as usize)
                        .write((slot * GIB + (i << 21)) | HUGE | PRESENT_WRITABLE)
                };
            }
            pd | PRESENT_WRITABLE
        };
        // SAFETY: the boot PDPT is the kernel's live direct-map table; slots >= 4 are unused until
        // now and only the boot CPU runs.
        unsafe { pdpt.add(slot as usize).write(entry) };
    }
    Ok(())
}
