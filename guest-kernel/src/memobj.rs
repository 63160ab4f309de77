//! Memory objects: sets of frames that several address spaces map (K42's shared FCMs, in
//! their simplest form). The owner grants other processes the right to map one.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_guest_lib::frames::FRAME_SIZE;
use k42_guest_lib::kabi::{self, Prot};
use spin::Mutex;

use crate::mm;
use crate::mm::aspace::{Backing, Region};
use crate::proc::Process;

/// Largest memory object, in pages.
pub const MAX_PAGES: u64 = 16 * 1024;

/// A memory object.
pub struct Memobj {
    /// The creating process.
    pub owner: u64,
    /// Frames, in order.
    frames: Vec<u64>,
    /// Processes allowed to map it besides the owner.
    grants: Mutex<Vec<u64>>,
}

impl Drop for Memobj {
    fn drop(&mut self) {
        mm::free_zeroed(&self.frames);
    }
}

static OBJECTS: Mutex<BTreeMap<u64, alloc::sync::Weak<Memobj>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Creates a zeroed object of `pages` pages owned by `owner` (kept alive by the owner's list).
pub fn create(owner: &Arc<Process>, pages: u64) -> Result<u64, kabi::Error> {
    if pages == 0 || pages > MAX_PAGES {
        return Err(kabi::Error::Invalid);
    }
    let mut frames = alloc::vec![0u64; pages as usize];
    let got = mm::alloc_frames(&mut frames);
    if got < frames.len() {
        mm::free_zeroed(&frames[..got]);
        return Err(kabi::Error::NoMemory);
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let obj = Arc::new(Memobj {
        owner: owner.pid,
        frames,
        grants: Mutex::new(Vec::new()),
    });
    OBJECTS.lock().insert(id, Arc::downgrade(&obj));
    owner.memobjs.lock().push(obj);
    Ok(id)
}

fn find(id: u64) -> Option<Arc<Memobj>> {
    let mut objects = OBJECTS.lock();
    let obj = objects.get(&id)?.upgrade();
    if obj.is_none() {
        objects.remove(&id);
    }
    obj
}

/// Maps the initramfs read-only at `addr` in `caller`: one region, its pages mapped on first
/// touch (no ring-0 loop over the archive's pages).
fn map_initrd(caller: &Arc<Process>, addr: u64, prot: u64) -> Result<(), kabi::Error> {
    let (phys, len) = crate::proc::initrd_range().ok_or(kabi::Error::NotFound)?;
    if prot & Prot::WRITE != 0 {
        return Err(kabi::Error::NotPermitted);
    }
    let base = phys - phys % FRAME_SIZE;
    let span = (phys + len).next_multiple_of(FRAME_SIZE) - base;
    if !kabi::user_range_ok(addr, span) || !addr.is_multiple_of(FRAME_SIZE) || prot & !7 != 0 {
        return Err(kabi::Error::Invalid);
    }
    let mut guard = caller.aspace.lock();
    let space = guard.as_mut().ok_or(kabi::Error::NotFound)?;
    space.add_region(Region {
        start: addr,
        end: addr + span,
        prot: prot | Prot::READ,
        backing: Backing::Physical { base },
    })?;
    Ok(())
}

/// Lets `pid` map object `id` (only its owner may grant).
pub fn grant(caller: &Arc<Process>, id: u64, pid: u64) -> Result<(), kabi::Error> {
    let obj = find(id).ok_or(kabi::Error::NotFound)?;
    if obj.owner != caller.pid {
        return Err(kabi::Error::NotPermitted);
    }
    obj.grants.lock().push(pid);
    Ok(())
}

/// Maps object `id` at `addr` in `caller` with `prot`.
pub fn map(caller: &Arc<Process>, id: u64, addr: u64, prot: u64) -> Result<(), kabi::Error> {
    if id == kabi::INITRD_MEMOBJ {
        return map_initrd(caller, addr, prot);
    }
    let obj = find(id).ok_or(kabi::Error::NotFound)?;
    if obj.owner != caller.pid && !obj.grants.lock().contains(&caller.pid) {
        return Err(kabi::Error::NotPermitted);
    }
    let len = obj.frames.len() as u64 * FRAME_SIZE;
    if !kabi::user_range_ok(addr, len) || !addr.is_multiple_of(FRAME_SIZE) || prot & !7 != 0 {
        return Err(kabi::Error::Invalid);
    }
    let mut guard = caller.aspace.lock();
    let space = guard.as_mut().ok_or(kabi::Error::NotFound)?;
    space.add_region(Region {
        start: addr,
        end: addr + len,
        prot: prot | Prot::READ,
        backing: Backing::Object { id },
    })?;
    for (i, &frame) in obj.frames.iter().enumerate() {
        let mapped = space.map_page(
            addr + i as u64 * FRAME_SIZE,
            frame,
            prot | Prot::READ,
            false,
        );
        if let Err(e) = mapped {
            // Nothing the process could have used yet: take the whole mapping back.
            let _ = space.remove_range(addr, addr + len, &mut Vec::new());
            return Err(e.into());
        }
    }
    drop(guard);
    let mut held = caller.memobjs.lock();
    if !held.iter().any(|o| Arc::ptr_eq(o, &obj)) {
        held.push(obj);
    }
    Ok(())
}

/// Removes the mapping of a memory object that starts at `addr` (the whole object, as
/// `map` made it) from `caller`, and drops `caller`'s hold on the object once no mapping of
/// it is left there: the object's frames are freed when no process holds it any more.
///
/// A process with several dispatchers keeps its hold until it exits, since its other CPUs
/// may still cache translations of the pages (there is no TLB shoot-down yet).
pub fn unmap(caller: &Arc<Process>, addr: u64) -> Result<(), kabi::Error> {
    let mut guard = caller.aspace.lock();
    let space = guard.as_mut().ok_or(kabi::Error::NotFound)?;
    let region = *space.region_at(addr).ok_or(kabi::Error::Invalid)?;
    let Backing::Object { id } = region.backing else {
        return Err(kabi::Error::Invalid);
    };
    let obj = find(id).ok_or(kabi::Error::Invalid)?;
    if region.start != addr || region.end - region.start != obj.frames.len() as u64 * FRAME_SIZE {
        return Err(kabi::Error::Invalid);
    }
    // The object's frames are not the space's: nothing comes back in `freed`.
    let mut freed = Vec::new();
    space.remove_range(region.start, region.end, &mut freed)?;
    let still_mapped = space.maps_object(id);
    drop(guard);
    // No CPU reaches the object's frames through this space after this.
    crate::tlb::finish_change(caller, region.start..region.end, &[]);
    if !still_mapped {
        caller.memobjs.lock().retain(|o| !Arc::ptr_eq(o, &obj));
    }
    // If that was the last hold, the frames are zeroed and freed here.
    drop(obj);
    Ok(())
}

/// The physical address of page `page` of object `id`, for its owner (a driver handing the
/// page to a device for DMA; the frames stay the object's until the owner exits).
pub fn phys(caller: &Arc<Process>, id: u64, page: u64) -> Result<u64, kabi::Error> {
    let obj = find(id).ok_or(kabi::Error::NotFound)?;
    if obj.owner != caller.pid {
        return Err(kabi::Error::NotPermitted);
    }
    usize::try_from(page)
        .ok()
        .and_then(|p| obj.frames.get(p))
        .copied()
        .ok_or(kabi::Error::Invalid)
}
