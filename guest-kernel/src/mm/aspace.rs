//! Address spaces: one page-table tree per process, the kernel's half shared by all of them
//! (supervisor-only), the user half private. Memory is described by regions; pages of
//! anonymous regions are filled on first touch (demand-zero: frames come zeroed, see
//! [`super::frames`]). Frames an address space owns are marked in their page-table entries and
//! returned (zeroed in bulk) when it is destroyed.
//!
//! Fork ([`AddressSpace::fork`]) shares the anonymous frames of a space with its copy,
//! read-only in both, and counts the sharers in the frame manager's share counts
//! ([`super::frames::shares`]); a write fault on such a page copies it (one bulk copy), or, when
//! the other sharers have gone, just makes it writable again. A shared frame is freed when its
//! last mapping goes.
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
    /// pages, PPC windows): touching an unmapped page is a fault.
    Shared,
    /// Memory object `id`, mapped whole (`memobj_map`): like `Shared`, and the region names the
    /// object so `memobj_unmap` can drop the process's reference once no mapping is left.
    Object {
        /// The memory object's id.
        id: u64,
    },
    /// Read-only frames the kernel keeps for good, starting at physical address `base` (the
    /// initramfs): page `i` of the region is frame `base + i * 4096`, mapped on first touch,
    /// never owned, never writable.
    Physical {
        /// Frame behind the region's first page.
        base: u64,
    },
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
    /// Addresses of the leaf pages this space owns (their frames, in the entries, are
    /// released with the space or when unmapped, and freed once no other space shares them).
    /// A list rather than a walk of the tables at teardown and at fork: ring-0 instructions
    /// are the cost that matters. Only addresses, so a copy-on-write fault, which changes a
    /// page's frame, need not search it.
    owned: Vec<u64>,
    /// Frames this space stopped mapping whose reference it still holds: originals of
    /// copy-on-write pages it has copied, which another CPU's TLB may still point at. The
    /// kernel releases them after a TLB shoot-down ([`AddressSpace::take_replaced_frames`]).
    replaced: Vec<u64>,
}

/// Regions below this address are the process's own memory, which fork copies; the areas
/// above (PPC stacks, buffers and windows, dispatcher pages, the entry page) are managed by the
/// kernel per process and made fresh for a child.
pub const FORK_END: u64 = kabi::PPC_STACK_AREA;

/// Pages a demand-zero fault maps beyond the one that faulted (see
/// [`AddressSpace::fault_ahead`]).
const FAULT_AHEAD_PAGES: u64 = 15;
/// Free frames below which faults map only the page that faulted.
const FAULT_AHEAD_RESERVE: u64 = 4096;

/// What [`AddressSpace::fork`] did, for measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkStats {
    /// Anonymous pages now shared copy-on-write.
    pub shared_pages: u64,
    /// Pages of memory objects mapped in the child too.
    pub object_pages: u64,
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
            replaced: Vec::new(),
        })
    }

    /// Physical address of the top-level table (what CR3 holds while this space runs).
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// Adds a region; it must be page-aligned, inside user space (or, for `Shared` regions the
    /// kernel creates, in the fixed kernel-managed areas or the Linux system-call sled page),
    /// and overlap no other region.
    pub fn add_region(&mut self, region: Region) -> Result<(), AspaceError> {
        let aligned =
            region.start.is_multiple_of(FRAME_SIZE) && region.end.is_multiple_of(FRAME_SIZE);
        // The Linux system-call sled is the one kernel-made page below USER_START.
        let sled = region.start == kabi::LINUX_SYSCALL_SLED
            && region.end == kabi::LINUX_SYSCALL_SLED + FRAME_SIZE
            && region.backing == Backing::Shared;
        let in_user = (region.start >= kabi::USER_START || sled)
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

    /// Whether any region maps memory object `id`.
    pub fn maps_object(&self, id: u64) -> bool {
        self.regions
            .iter()
            .any(|r| r.backing == Backing::Object { id })
    }

    /// The region containing `va`.
    pub fn region_at(&self, va: u64) -> Option<&Region> {
        let at = self.regions.partition_point(|r| r.start <= va);
        self.regions[..at].last().filter(|r| va < r.end)
    }

    /// Takes the frames copy-on-write faults moved this space away from: once no TLB points
    /// at them any more (after `crate::tlb::shoot_down`), the caller releases this space's
    /// reference to each ([`super::release_shared`]).
    pub fn take_replaced_frames(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.replaced)
    }

    /// Whether copy-on-write faults have moved pages since the last
    /// [`AddressSpace::take_replaced_frames`].
    pub fn has_replaced_frames(&self) -> bool {
        !self.replaced.is_empty()
    }

    /// Splits the region containing `va` in two at `va` (nothing to do when `va` is a region
    /// boundary or in no region), so range operations can work on whole regions.
    fn split_at(&mut self, va: u64) {
        let at = self.regions.partition_point(|r| r.start <= va);
        let Some(index) = at.checked_sub(1) else {
            return;
        };
        let region = self.regions[index];
        if va <= region.start || va >= region.end {
            return;
        }
        let backing = match region.backing {
            Backing::Physical { base } => Backing::Physical {
                base: base + (va - region.start),
            },
            other => other,
        };
        self.regions[index].end = va;
        self.regions.insert(
            index + 1,
            Region {
                start: va,
                end: region.end,
                prot: region.prot,
                backing,
            },
        );
    }

    /// Removes whatever regions lie in `[start, end)` (splitting those that straddle its
    /// ends; holes are fine) and unmaps their pages; frames this space owned are returned
    /// through `freed` (the caller frees them once no CPU can still reach them).
    pub fn remove_range(
        &mut self,
        start: u64,
        end: u64,
        freed: &mut Vec<u64>,
    ) -> Result<(), AspaceError> {
        if !start.is_multiple_of(FRAME_SIZE) || !end.is_multiple_of(FRAME_SIZE) || start >= end {
            return Err(AspaceError::BadRange);
        }
        self.split_at(start);
        self.split_at(end);
        let first = self.regions.partition_point(|r| r.start < start);
        let last = self.regions.partition_point(|r| r.start < end);
        let removed: Vec<Region> = self.regions.drain(first..last).collect();
        let shares = super::frames::shares();
        let mut owned_removed = false;
        for region in removed {
            let mut va = region.start;
            while va < region.end {
                let Some((t, index)) = self.leaf_slot(va) else {
                    // No leaf table: nothing is mapped up to the next 2 MiB block.
                    va = ((va >> 21) + 1) << 21;
                    continue;
                };
                let old = read_entry(t, index);
                if old & PRESENT != 0 {
                    write_entry(t, index, 0);
                    arch::invlpg(va);
                    if old & OWNED != 0 {
                        owned_removed = true;
                        if shares.release(old & ADDRESS_MASK) {
                            freed.push(old & ADDRESS_MASK);
                        }
                    }
                }
                va += FRAME_SIZE;
            }
        }
        // One pass over the owned list for the whole range (a search per page made unmapping
        // n pages cost n^2).
        if owned_removed {
            self.owned.retain(|&v| v < start || v >= end);
        }
        Ok(())
    }

    /// Changes the protection of `[start, end)`, which regions must cover without holes
    /// (splitting those that straddle its ends), and of its mapped pages. A `Physical`
    /// region never becomes writable.
    pub fn protect(&mut self, start: u64, end: u64, prot: u64) -> Result<(), AspaceError> {
        if !start.is_multiple_of(FRAME_SIZE) || !end.is_multiple_of(FRAME_SIZE) || start >= end {
            return Err(AspaceError::BadRange);
        }
        let mut at = start;
        for r in self
            .regions
            .iter()
            .filter(|r| r.end > start && r.start < end)
        {
            if r.start > at
                || (prot & Prot::WRITE != 0 && matches!(r.backing, Backing::Physical { .. }))
            {
                return Err(AspaceError::BadRange);
            }
            at = r.end;
        }
        if at < end {
            return Err(AspaceError::BadRange);
        }
        self.split_at(start);
        self.split_at(end);
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
                    let mut flags = leaf_flags(prot);
                    if entry & OWNED != 0 && super::frames::shares().is_shared(entry & ADDRESS_MASK)
                    {
                        // Still shared copy-on-write: the first write copies it.
                        flags &= !WRITABLE;
                    }
                    write_entry(slot_table, index, keep | flags);
                    arch::invlpg(va);
                }
            }
            va += FRAME_SIZE;
        }
        Ok(())
    }

    /// The last-level table for `va`, creating the tables down to it.
    fn leaf_table(&mut self, va: u64) -> Result<u64, AspaceError> {
        let [i4, i3, i2, _] = indices(va);
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
        Ok(t)
    }

    /// Maps frame `frame` at `va` with `prot`. `owned` frames are freed with the space.
    pub fn map_page(
        &mut self,
        va: u64,
        frame: u64,
        prot: u64,
        owned: bool,
    ) -> Result<(), AspaceError> {
        let t = self.leaf_table(va)?;
        let i1 = indices(va)[3];
        let old = read_entry(t, i1);
        if old & PRESENT != 0 {
            // Replacing a mapping is not something callers do; refuse rather than leak.
            return Err(AspaceError::BadRange);
        }
        let owned_bit = if owned { OWNED } else { 0 };
        if owned {
            self.owned.push(va);
        }
        write_entry(t, i1, frame | leaf_flags(prot) | owned_bit);
        Ok(())
    }

    /// Points the page at `va` (a PPC window) at `frame`, read-write and not owned, replacing
    /// whatever it mapped: one walk and one entry write, since every PPC call does it.
    pub fn map_window(&mut self, va: u64, frame: u64) -> Result<(), AspaceError> {
        let t = self.leaf_table(va)?;
        let index = indices(va)[3];
        let old = read_entry(t, index);
        if old & OWNED != 0 {
            return Err(AspaceError::BadRange);
        }
        write_entry(t, index, frame | leaf_flags(Prot::READ | Prot::WRITE));
        if old & PRESENT != 0 {
            arch::invlpg(va);
        }
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
            if let Some(at) = self.owned.iter().rposition(|&v| v == va) {
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
        let page = va & !(FRAME_SIZE - 1);
        let physical = match region.backing {
            Backing::Anonymous => None,
            Backing::Physical { base } if !write => Some(base + (page - region.start)),
            _ => return Err(AspaceError::Fault),
        };
        if !allowed {
            return Err(AspaceError::Fault);
        }
        if let Some((t, index)) = self.leaf_slot(page) {
            let entry = read_entry(t, index);
            if entry & PRESENT != 0 {
                if write && entry & WRITABLE == 0 && entry & OWNED != 0 {
                    return self.copy_on_write(page, t, index, entry, region.prot);
                }
                // Present and allowed: another CPU of this process mapped it first (or a
                // stale TLB entry); retrying the access is enough.
                return Ok(());
            }
        }
        if let Some(frame) = physical {
            return self.map_page(page, frame, region.prot & !Prot::WRITE, false);
        }
        let frame = super::alloc_frame().ok_or(AspaceError::NoMemory)?;
        if let Err(e) = self.map_page(page, frame, region.prot, true) {
            super::free_zeroed(&[frame]);
            return Err(e);
        }
        self.fault_ahead(page, &region);
        Ok(())
    }

    /// After a demand-zero fault at `page`, maps the next few unmapped pages of its region in
    /// the same leaf table too (fresh frames are zero, so this is only a mapping): a program
    /// touching memory in order then takes one fault per [`FAULT_AHEAD_PAGES`] + 1 pages
    /// instead of one per page, and a fault is the expensive part (a trap and hypervisor
    /// exits). Best effort: it stops at the first mapped page, region or table end, or when
    /// frames run short.
    fn fault_ahead(&mut self, page: u64, region: &Region) {
        let Some((t, _)) = self.leaf_slot(page) else {
            return;
        };
        let end = region
            .end
            .min(page + (FAULT_AHEAD_PAGES + 1) * FRAME_SIZE)
            .min(((page >> 21) + 1) << 21);
        let mut wanted = 0;
        let mut va = page + FRAME_SIZE;
        while va < end && read_entry(t, indices(va)[3]) & PRESENT == 0 {
            wanted += 1;
            va += FRAME_SIZE;
        }
        if wanted == 0 || super::frames::free_count() < FAULT_AHEAD_RESERVE {
            return;
        }
        let mut frames = [0u64; FAULT_AHEAD_PAGES as usize];
        let got = super::frames::alloc_frames(&mut frames[..wanted]);
        let flags = leaf_flags(region.prot) | OWNED;
        for (i, &frame) in frames[..got].iter().enumerate() {
            let va = page + (i as u64 + 1) * FRAME_SIZE;
            self.owned.push(va);
            write_entry(t, indices(va)[3], frame | flags);
        }
    }

    /// A write to the copy-on-write page at `page` (leaf entry `entry` at `t[index]`): makes it
    /// writable if no other space shares its frame any more, or else gives this space a copy
    /// (one bulk copy, see [`MemBatch`]) and drops its reference to the original.
    fn copy_on_write(
        &mut self,
        page: u64,
        t: u64,
        index: usize,
        entry: u64,
        prot: u64,
    ) -> Result<(), AspaceError> {
        let shares = super::frames::shares();
        let old = entry & ADDRESS_MASK;
        if !shares.is_shared(old) {
            // The other sharers are gone (and can no longer take a reference: only a fork of
            // this space, which holds its lock, could).
            write_entry(t, index, old | leaf_flags(prot) | OWNED);
            arch::invlpg(page);
            return Ok(());
        }
        let new = super::alloc_frame().ok_or(AspaceError::NoMemory)?;
        let mut batch = MemBatch::new();
        batch.copy(new, old, FRAME_SIZE);
        if batch.run().is_err() {
            super::free_zeroed(&[new]);
            return Err(AspaceError::NoMemory);
        }
        write_entry(t, index, new | leaf_flags(prot) | OWNED);
        arch::invlpg(page);
        // Another CPU of this space may still reach `old` through its TLB: the reference goes
        // after a shoot-down.
        self.replaced.push(old);
        Ok(())
    }

    /// A copy of this space for a forked child (see [`kabi::Sys::Fork`]): its regions below
    /// [`FORK_END`]; anonymous pages it has mapped shared copy-on-write (read-only here too);
    /// memory-object pages mapped as they are. The caller runs in this space: each page made
    /// read-only is invalidated on its CPU, and the caller then shoots down the space's other
    /// CPUs (`crate::tlb`). One pass over the owned-frame list,
    /// caching the last leaf table of both spaces, so the ring-0 cost is a few dozen
    /// instructions per page (plus the child's page tables).
    pub fn fork(&mut self) -> Result<(AddressSpace, ForkStats), AspaceError> {
        let mut child = AddressSpace::new()?;
        let mut stats = ForkStats::default();
        let copied = self.copy_into(&mut child, &mut stats);
        // Pages already made read-only stay so even on failure: a later write just makes
        // them writable again (their frames are no longer shared once the child is gone).
        match copied {
            Ok(()) => Ok((child, stats)),
            Err(e) => {
                child.destroy();
                Err(e)
            }
        }
    }

    fn copy_into(
        &mut self,
        child: &mut AddressSpace,
        stats: &mut ForkStats,
    ) -> Result<(), AspaceError> {
        child.regions = self
            .regions
            .iter()
            // A device stays with the process that claimed it: the child gets no window.
            .filter(|r| r.end <= FORK_END && r.backing != Backing::Device)
            .copied()
            .collect();
        child.owned.reserve(self.owned.len());
        for r in self.regions.iter().filter(|r| r.end <= FORK_END) {
            if !matches!(r.backing, Backing::Shared | Backing::Object { .. }) {
                continue;
            }
            let mut va = r.start;
            while va < r.end {
                if let Some((frame, _)) = self.translate(va) {
                    child.map_page(va, frame, r.prot, false)?;
                    stats.object_pages += 1;
                }
                va += FRAME_SIZE;
            }
        }
        let shares = super::frames::shares();
        // The last 2 MiB block seen and its leaf table, in this space and in the child.
        let mut cached = (u64::MAX, 0u64, 0u64);
        for &va in &self.owned {
            if va >= FORK_END {
                continue;
            }
            let block = va >> 21;
            if cached.0 != block {
                let (mine, _) = self.leaf_slot(va).ok_or(AspaceError::Fault)?;
                cached = (block, mine, child.leaf_table(va)?);
            }
            let index = indices(va)[3];
            let entry = read_entry(cached.1, index);
            if entry & (PRESENT | OWNED) != PRESENT | OWNED {
                continue;
            }
            let frame = entry & ADDRESS_MASK;
            let shared = entry & !WRITABLE;
            if !shares.share(frame) {
                return Err(AspaceError::NoMemory);
            }
            if entry != shared {
                write_entry(cached.1, index, shared);
                // One invalidation per page made read-only (~1 µs each here), as everywhere
                // else a live entry changes; reloading CR3 with the same root is not relied
                // on to drop the translations of a shadowing hypervisor.
                arch::invlpg(va);
            }
            // The child owns it too (its reference was just counted).
            write_entry(cached.2, index, shared);
            child.owned.push(va);
            stats.shared_pages += 1;
        }
        Ok(())
    }

    /// The frame behind user address `va` for an access by the kernel on the process's behalf,
    /// faulting it in like the process would. Returns the frame's physical address.
    fn frame_for(&mut self, va: u64, write: bool) -> Result<u64, AspaceError> {
        // Nothing below USER_START (the system-call sled page) is a pointer a call may pass.
        if va < kabi::USER_START || (!kabi::user_range_ok(va, 1) && self.region_at(va).is_none()) {
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
            // A write to a copy-on-write page copies it first, as the process's own would.
            Some((frame, writable)) if writable || !write => Ok(frame),
            _ => {
                self.fault(va, write, false)?;
                self.translate(page)
                    .map(|(f, _)| f)
                    .ok_or(AspaceError::Fault)
            }
        }
    }

    /// Replaces the bytes `old` at `va` in the process's own program text with `new` (a
    /// system-call site rewritten into a call): the page must be mapped, in an executable
    /// anonymous region, and hold `old` there within one page. A page fork shares is copied
    /// first (it stays read-only), so the rewrite is private to this process, like the text
    /// itself, which was copied from the file when it was loaded.
    pub fn patch_text(&mut self, va: u64, old: [u8; 2], new: [u8; 2]) -> Result<(), AspaceError> {
        let region = *self.region_at(va).ok_or(AspaceError::BadRange)?;
        if region.backing != Backing::Anonymous
            || region.prot & Prot::EXEC == 0
            || va % FRAME_SIZE > FRAME_SIZE - 2
            || va < kabi::USER_START
        {
            return Err(AspaceError::BadRange);
        }
        let page = va & !(FRAME_SIZE - 1);
        let (t, index) = self.leaf_slot(page).ok_or(AspaceError::Fault)?;
        let entry = read_entry(t, index);
        if entry & PRESENT == 0 || entry & OWNED == 0 {
            return Err(AspaceError::Fault);
        }
        if entry & WRITABLE == 0 && super::frames::shares().is_shared(entry & ADDRESS_MASK) {
            // Give this space its own copy, keeping the region's protection.
            self.copy_on_write(page, t, index, entry, region.prot & !Prot::WRITE)?;
        }
        let frame = read_entry(t, index) & ADDRESS_MASK;
        let at = (phys_to_virt(frame) + va % FRAME_SIZE) as *mut [u8; 2];
        // SAFETY: `frame` is a RAM frame this space owns alone (checked above), reached through
        // the direct map; the two bytes lie inside it. A Linux process runs on one
        // dispatcher, so no other CPU executes this text while it changes.
        unsafe {
            if at.read_volatile() != old {
                return Err(AspaceError::BadRange);
            }
            at.write_volatile(new);
        }
        Ok(())
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

    /// The frames of the owned pages, read from their entries (one table walk per 2 MiB
    /// block, as the list is mostly in address order).
    fn owned_frames(&self) -> Vec<u64> {
        let mut frames = Vec::with_capacity(self.owned.len());
        let mut cached: (u64, Option<u64>) = (u64::MAX, None);
        for &va in &self.owned {
            let block = va >> 21;
            if cached.0 != block {
                cached = (block, self.leaf_slot(va).map(|(t, _)| t));
            }
            let Some(t) = cached.1 else { continue };
            let entry = read_entry(t, indices(va)[3]);
            if entry & (PRESENT | OWNED) == PRESENT | OWNED {
                frames.push(entry & ADDRESS_MASK);
            }
        }
        frames
    }

    /// Tears the user half down: every page table, and every owned frame no other space
    /// shares, is zeroed in bulk and freed (shared ones just lose this space's reference).
    pub fn destroy(mut self) {
        let shares = super::frames::shares();
        let mut frames: Vec<u64> = self
            .owned_frames()
            .into_iter()
            .chain(self.replaced.iter().copied())
            .filter(|&f| shares.release(f))
            .collect();
        self.tables.push(self.pml4);
        for &table in &self.tables {
            drop_shadow(table);
        }
        frames.append(&mut self.tables);
        super::free_zeroed(&frames);
    }
}

/// Makes a hypervisor that shadows guest page tables forget its shadow of `table`, a
/// page-table frame about to be freed.
///
/// Freed frames are zeroed by `k42vm` (one bulk hypercall), that is by the host, behind the
/// back of a shadow-paging hypervisor (KVM without EPT/NPT, and `kvm_pvm` here). Such a
/// hypervisor write-protects every guest page table it shadows and follows the guest's own
/// stores to it; a host store it never sees. Its shadow of the frame would then outlive
/// the frame's contents, and the next address space to use the frame as a page table (a
/// new process's table for the same addresses, or a reused PML4) would run with the dead
/// process's translations: reads of pages it never mapped returning another process's
/// data. That was seen here as busybox processes finding garbage in their TLS.
///
/// A store to the table that is narrower than an entry is one the hypervisor cannot apply
/// as an entry update, so it drops every shadow of the frame (KVM: `kvm_mmu_track_write`,
/// "misaligned" write). One byte, rewritten with its own value: one store per table, where
/// clearing each present entry would cost a store per mapped page. With hardware nested
/// paging it is an ordinary store.
fn drop_shadow(table: u64) {
    let byte = (phys_to_virt(table) + 1) as *mut u8;
    // SAFETY: `table` is a page-table frame of this address space, which no CPU uses any
    // more (it is being destroyed); the direct map covers it. The byte keeps its value.
    unsafe { byte.write_volatile(byte.read_volatile()) };
}
