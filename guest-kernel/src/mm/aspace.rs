//! Address spaces: one page-table tree per process, the kernel's half shared by all of them
//! (supervisor-only), the user half private. Memory is described by regions; pages of
//! anonymous regions are filled on first touch (demand-zero: frames come zeroed, see
//! [`super::frames`]). Frames an address space owns are marked in their page-table entries and
//! returned (zeroed in bulk) when it is destroyed.
//!
//! One of the low-level modules DESIGN.md allows `unsafe` in: it reads and writes page tables
//! and user memory through the direct map, always after a software walk of the tables, so the
//! kernel never takes a fault on a user address.

use alloc::vec::Vec;

use k42_guest_lib::frames::FRAME_SIZE;
use k42_guest_lib::kabi::{self, Prot};

use crate::arch::{self, phys_to_virt};

use super::bulk::MemBatch;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// Page-level write-through and cache-disable: device registers are never cached.
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
/// Available bit: the frame belongs to this address space (freed with it).
const OWNED: u64 = 1 << 9;
const NO_EXECUTE: u64 = 1 << 63;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// First PML4 slot of the kernel half.
const KERNEL_HALF: usize = 256;

/// Why an address-space operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspaceError {
    /// No frame for a page or a page table.
    NoMemory,
    /// The range is outside user space, misaligned, or overlaps another region.
    BadRange,
    /// The address is in no region, or the region forbids the access.
    Fault,
}

impl From<AspaceError> for kabi::Error {
    fn from(e: AspaceError) -> kabi::Error {
        match e {
            AspaceError::NoMemory => kabi::Error::NoMemory,
            AspaceError::BadRange => kabi::Error::Invalid,
            AspaceError::Fault => kabi::Error::Fault,
        }
    }
}

/// What backs a region's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private demand-zero memory owned by this address space.
    Anonymous,
    /// Frames mapped explicitly by the kernel and owned elsewhere (the entry page, dispatcher
    /// pages, memory objects, PPC windows): touching an unmapped page is a fault.
    Shared,
    /// A device's registers (`device_map`): mapped uncached, never RAM, never owned; the
    /// kernel never reads or writes them on the process's behalf (a system-call pointer into
    /// them is `Fault`).
    Device,
}

/// A range of user virtual memory with one protection and backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address (page-aligned).
    pub start: u64,
    /// End address, exclusive (page-aligned).
    pub end: u64,
    /// [`Prot`] bits.
    pub prot: u64,
    /// What backs it.
    pub backing: Backing,
}

/// A process's page tables and regions.
pub struct AddressSpace {
    pml4: u64,
    regions: Vec<Region>,
    /// Page-table frames below the PML4 (freed with the space).
    tables: Vec<u64>,
    /// Leaf frames this space owns (freed with the space, or when unmapped). A list rather
    /// than a walk of the tables at teardown: ring-0 instructions are the cost that matters.
    owned: Vec<u64>,
}

fn table(phys: u64) -> *mut u64 {
    phys_to_virt(phys) as *mut u64
}

fn read_entry(table_phys: u64, index: usize) -> u64 {
    // SAFETY: `table_phys` is a page-table frame of this address space (or the kernel's) and
    // `index` < 512; the direct map covers it.
    unsafe { table(table_phys).add(index).read_volatile() }
}

fn write_entry(table_phys: u64, index: usize, value: u64) {
    // SAFETY: as for `read_entry`; the caller holds the address space (its lock) exclusively.
    unsafe { table(table_phys).add(index).write_volatile(value) }
}

fn indices(va: u64) -> [usize; 4] {
    [
        ((va >> 39) & 511) as usize,
        ((va >> 30) & 511) as usize,
        ((va >> 21) & 511) as usize,
        ((va >> 12) & 511) as usize,
    ]
}

fn leaf_flags(prot: u64) -> u64 {
    let mut flags = PRESENT | USER;
    if prot & Prot::WRITE != 0 {
        flags |= WRITABLE;
    }
    if prot & Prot::EXEC == 0 && arch::user::no_execute_enabled() {
        flags |= NO_EXECUTE;
    }
    flags
}

impl AddressSpace {
    /// A new address space: an empty user half and the kernel's half shared.
    pub fn new() -> Result<AddressSpace, AspaceError> {
        let pml4 = super::alloc_frame().ok_or(AspaceError::NoMemory)?;
        let kernel = arch::boot::boot_pml4_phys();
        let half = (KERNEL_HALF * 8) as u64;
        let mut batch = MemBatch::new();
        batch.copy(pml4 + half, kernel + half, FRAME_SIZE - half);
        if batch.run().is_err() {
            super::free_zeroed(&[pml4]);
            return Err(AspaceError::NoMemory);
        }
        Ok(AddressSpace {
            pml4,
            regions: Vec::new(),
            tables: Vec::new(),
            owned: Vec::new(),
        })
    }

    /// Physical address of the top-level table (what CR3 holds while this space runs).
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// Adds a region; it must be page-aligned, inside user space (or, for `Shared` regions the
    /// kernel creates, in the fixed kernel-managed areas), and overlap no other region.
    pub fn add_region(&mut self, region: Region) -> Result<(), AspaceError> {
        let aligned =
            region.start.is_multiple_of(FRAME_SIZE) && region.end.is_multiple_of(FRAME_SIZE);
        let in_user = region.start >= kabi::USER_START
            && region.end <= 0x0000_8000_0000_0000
            && region.start < region.end;
        if !aligned || !in_user {
            return Err(AspaceError::BadRange);
        }
        if self
            .regions
            .iter()
            .any(|r| r.start < region.end && region.start < r.end)
        {
            return Err(AspaceError::BadRange);
        }
        let at = self.regions.partition_point(|r| r.start < region.start);
        self.regions.insert(at, region);
        Ok(())
    }

    /// The region containing `va`.
    pub fn region_at(&self, va: u64) -> Option<&Region> {
        let at = self.regions.partition_point(|r| r.start <= va);
        self.regions[..at].last().filter(|r| va < r.end)
    }

    /// Removes the regions exactly covering `[start, end)` and unmaps their pages; frames this
    /// space owned are returned through `freed` (the caller frees them once no CPU can still
    /// reach them).
    pub fn remove_range(
        &mut self,
        start: u64,
        end: u64,
        freed: &mut Vec<u64>,
    ) -> Result<(), AspaceError> {
        if !start.is_multiple_of(FRAME_SIZE) || !end.is_multiple_of(FRAME_SIZE) || start >= end {
            return Err(AspaceError::BadRange);
        }
        let first = self
            .regions
            .iter()
            .position(|r| r.start == start)
            .ok_or(AspaceError::BadRange)?;
        let mut last = first;
        while self.regions[last].end < end {
            last += 1;
            if last >= self.regions.len() || self.regions[last].start != self.regions[last - 1].end
            {
                return Err(AspaceError::BadRange);
            }
        }
        if self.regions[last].end != end {
            return Err(AspaceError::BadRange);
        }
        self.regions.drain(first..=last);
        let mut va = start;
        while va < end {
            if let Some(old) = self.unmap_page(va) {
                if old & OWNED != 0 {
                    freed.push(old & ADDRESS_MASK);
                }
            }
            va += FRAME_SIZE;
        }
        Ok(())
    }

    /// Changes the protection of the regions exactly covering `[start, end)` and of their
    /// mapped pages.
    pub fn protect(&mut self, start: u64, end: u64, prot: u64) -> Result<(), AspaceError> {
        let covered = self
            .regions
            .iter()
            .filter(|r| r.start < end && start < r.end)
            .all(|r| r.start >= start && r.end <= end);
        if !covered || self.region_at(start).is_none() {
            return Err(AspaceError::BadRange);
        }
        for r in self.regions.iter_mut() {
            if r.start >= start && r.end <= end {
                r.prot = prot;
            }
        }
        let mut va = start;
        while va < end {
            if let Some((slot_table, index)) = self.leaf_slot(va) {
                let entry = read_entry(slot_table, index);
                if entry & PRESENT != 0 {
                    let keep = entry & (ADDRESS_MASK | OWNED | WRITE_THROUGH | CACHE_DISABLE);
                    write_entry(slot_table, index, keep | leaf_flags(prot));
                    arch::invlpg(va);
                }
            }
            va += FRAME_SIZE;
        }
        Ok(())
    }

    /// Maps frame `frame` at `va` with `prot`. `owned` frames are freed with the space.
    pub fn map_page(
        &mut self,
        va: u64,
        frame: u64,
        prot: u64,
        owned: bool,
    ) -> Result<(), AspaceError> {
        let [i4, i3, i2, i1] = indices(va);
        let mut t = self.pml4;
        for index in [i4, i3, i2] {
            let entry = read_entry(t, index);
            t = if entry & PRESENT != 0 {
                if entry & HUGE != 0 {
                    return Err(AspaceError::BadRange);
                }
                entry & ADDRESS_MASK
            } else {
                let next = super::alloc_frame().ok_or(AspaceError::NoMemory)?;
                self.tables.push(next);
                write_entry(t, index, next | PRESENT | WRITABLE | USER);
                next
            };
        }
        let old = read_entry(t, i1);
        if old & PRESENT != 0 {
            // Replacing a mapping is not something callers do; refuse rather than leak.
            return Err(AspaceError::BadRange);
        }
        let owned_bit = if owned { OWNED } else { 0 };
        if owned {
            self.owned.push(frame);
        }
        write_entry(t, i1, frame | leaf_flags(prot) | owned_bit);
        Ok(())
    }

    /// Maps the device page at physical `phys` at `va` (inside a [`Backing::Device`] region),
    /// read-write, not executable, uncached (PCD and PWT set).
    pub fn map_device_page(&mut self, va: u64, phys: u64) -> Result<(), AspaceError> {
        if self.region_at(va).map(|r| r.backing) != Some(Backing::Device) {
            return Err(AspaceError::BadRange);
        }
        self.map_page(va, phys, Prot::READ | Prot::WRITE, false)?;
        let (t, index) = self.leaf_slot(va).ok_or(AspaceError::BadRange)?;
        let entry = read_entry(t, index);
        write_entry(t, index, entry | WRITE_THROUGH | CACHE_DISABLE);
        Ok(())
    }

    /// The last-level table and index for `va`, if the tables down to it exist.
    fn leaf_slot(&self, va: u64) -> Option<(u64, usize)> {
        let [i4, i3, i2, i1] = indices(va);
        let mut t = self.pml4;
        for index in [i4, i3, i2] {
            let entry = read_entry(t, index);
            if entry & PRESENT == 0 || entry & HUGE != 0 {
                return None;
            }
            t = entry & ADDRESS_MASK;
        }
        Some((t, i1))
    }

    /// Removes the mapping at `va`; returns the old entry if one was present.
    pub fn unmap_page(&mut self, va: u64) -> Option<u64> {
        let (t, index) = self.leaf_slot(va)?;
        let old = read_entry(t, index);
        if old & PRESENT == 0 {
            return None;
        }
        write_entry(t, index, 0);
        if old & OWNED != 0 {
            let frame = old & ADDRESS_MASK;
            if let Some(at) = self.owned.iter().rposition(|&f| f == frame) {
                self.owned.swap_remove(at);
            }
        }
        arch::invlpg(va);
        Some(old)
    }

    /// The frame mapped at `va` and whether it is writable by user code.
    pub fn translate(&self, va: u64) -> Option<(u64, bool)> {
        let (t, index) = self.leaf_slot(va)?;
        let entry = read_entry(t, index);
        (entry & PRESENT != 0).then_some((entry & ADDRESS_MASK, entry & WRITABLE != 0))
    }

    /// Resolves a user page fault at `va`: maps a zero frame if `va` is in an anonymous region
    /// that allows the access. `Err` means the access is illegal (the process is at fault).
    pub fn fault(&mut self, va: u64, write: bool, exec: bool) -> Result<(), AspaceError> {
        let region = *self.region_at(va).ok_or(AspaceError::Fault)?;
        let allowed = (!write || region.prot & Prot::WRITE != 0)
            && (!exec || region.prot & Prot::EXEC != 0)
            && region.prot != 0;
        if !allowed || region.backing != Backing::Anonymous {
            return Err(AspaceError::Fault);
        }
        let page = va & !(FRAME_SIZE - 1);
        if self.translate(page).is_some() {
            // Present and allowed: another CPU of this process mapped it first (or a stale TLB
            // entry); retrying the access is enough.
            return Ok(());
        }
        let frame = super::alloc_frame().ok_or(AspaceError::NoMemory)?;
        if let Err(e) = self.map_page(page, frame, region.prot, true) {
            super::free_zeroed(&[frame]);
            return Err(e);
        }
        Ok(())
    }

    /// The frame behind user address `va` for an access by the kernel on the process's behalf,
    /// faulting it in like the process would. Returns the frame's physical address.
    fn frame_for(&mut self, va: u64, write: bool) -> Result<u64, AspaceError> {
        if !kabi::user_range_ok(va, 1) && self.region_at(va).is_none() {
            return Err(AspaceError::Fault);
        }
        let region = *self.region_at(va).ok_or(AspaceError::Fault)?;
        if region.prot & Prot::READ == 0
            || (write && region.prot & Prot::WRITE == 0)
            || region.backing == Backing::Device
        {
            return Err(AspaceError::Fault);
        }
        let page = va & !(FRAME_SIZE - 1);
        match self.translate(page) {
            Some((frame, _)) => Ok(frame),
            None => {
                self.fault(va, write, false)?;
                self.translate(page)
                    .map(|(f, _)| f)
                    .ok_or(AspaceError::Fault)
            }
        }
    }

    /// Copies `out.len()` bytes from user address `va` (checked page by page).
    pub fn read_user(&mut self, va: u64, out: &mut [u8]) -> Result<(), AspaceError> {
        let mut done = 0usize;
        while done < out.len() {
            let at = va.checked_add(done as u64).ok_or(AspaceError::Fault)?;
            let frame = self.frame_for(at, false)?;
            let offset = at % FRAME_SIZE;
            let n = ((FRAME_SIZE - offset) as usize).min(out.len() - done);
            // SAFETY: `frame` is a mapped RAM frame of this address space, reached through the
            // direct map; [offset, offset + n) lies inside it; `out` is kernel memory.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (phys_to_virt(frame) + offset) as *const u8,
                    out[done..].as_mut_ptr(),
                    n,
                )
            };
            done += n;
        }
        Ok(())
    }

    /// Copies `bytes` to user address `va` (checked page by page; the region must be writable).
    pub fn write_user(&mut self, va: u64, bytes: &[u8]) -> Result<(), AspaceError> {
        let mut done = 0usize;
        while done < bytes.len() {
            let at = va.checked_add(done as u64).ok_or(AspaceError::Fault)?;
            let frame = self.frame_for(at, true)?;
            let offset = at % FRAME_SIZE;
            let n = ((FRAME_SIZE - offset) as usize).min(bytes.len() - done);
            // SAFETY: as in `read_user`, writing into a frame of a writable user region.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes[done..].as_ptr(),
                    (phys_to_virt(frame) + offset) as *mut u8,
                    n,
                )
            };
            done += n;
        }
        Ok(())
    }

    /// The physical ranges backing `[va, va + len)` of this space, faulting pages in for a
    /// write: how the kernel hands user buffers to bulk copies and hypercalls.
    pub fn user_frames(
        &mut self,
        va: u64,
        len: u64,
        write: bool,
    ) -> Result<Vec<(u64, u64)>, AspaceError> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut done = 0u64;
        while done < len {
            let at = va.checked_add(done).ok_or(AspaceError::Fault)?;
            let frame = self.frame_for(at, write)?;
            let offset = at % FRAME_SIZE;
            let n = (FRAME_SIZE - offset).min(len - done);
            match out.last_mut() {
                Some(last) if last.0 + last.1 == frame + offset => last.1 += n,
                _ => out.push((frame + offset, n)),
            }
            done += n;
        }
        Ok(out)
    }

    /// Tears the user half down: every owned frame and page table is zeroed in bulk and freed.
    pub fn destroy(mut self) {
        let mut frames = core::mem::take(&mut self.owned);
        frames.append(&mut self.tables);
        frames.push(self.pml4);
        super::free_zeroed(&frames);
    }
}
