//! Memory objects: sets of frames that several address spaces map (K42's shared FCMs, in
//! their simplest form). The owner grants other processes the right to map one.
//!
//! A paged object ([`kabi::MemobjFlags::PAGED`]) has its owner as pager (K42's FCM asking its
//! file representative for a page): in other processes a page is mapped only once the pager
//! has filled it. The first fault on an unfilled page sends the pager a
//! [`kabi::MESSAGE_PAGE_REQUEST`]; the faulting dispatcher either takes a page-fault upcall
//! and runs another thread, or blocks in the kernel; both are told when the page is filled
//! (`memobj_fill`) or failed (by the pager, or by its exit).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_guest_lib::frames::FRAME_SIZE;
use k42_guest_lib::kabi::{self, Prot};
use spin::Mutex;

use crate::arch::idt::TrapFrame;
use crate::interrupts::{SIGBUS, SIGSEGV};
use crate::mm;
use crate::mm::aspace::{AddressSpace, Backing, Region};
use crate::proc::{BlockReason, Dispatcher, Process};

/// A memory object.
pub struct Memobj {
    /// The creating process.
    pub owner: u64,
    /// Frames, in order.
    frames: Vec<u64>,
    /// Processes allowed to map it besides the owner.
    grants: Mutex<Vec<u64>>,
    /// Paged objects: which pages the pager has filled, and who waits for the others.
    paging: Option<Mutex<Paging>>,
}

/// Where a page of a paged object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageState {
    /// Not filled, not asked for.
    Absent,
    /// Asked for (the pager has its request), not filled yet.
    Requested,
    /// Filled: maps like any object page.
    Filled,
    /// Will never be filled: an access is a bus error.
    Failed,
}

/// How a dispatcher waits for a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaitKind {
    /// It took a page-fault upcall; its thread retries when told ([`crate::upcall::retry`]).
    Upcalled,
    /// It is blocked in the kernel and resumes at the faulting instruction when woken.
    Blocked,
}

/// The pager's side of a paged object.
struct Paging {
    pages: Vec<PageState>,
    /// Dispatchers waiting for a page: (page index, dispatcher, how).
    waiters: Vec<(usize, Arc<Dispatcher>, WaitKind)>,
}

/// What a page fault on a memory object's region came to.
pub enum ObjectFault {
    /// The page is mapped now: retry the access.
    Resolved,
    /// The faulting dispatcher waits for the pager (upcalled or blocked); the frame is set up.
    Waiting,
    /// An illegal access: the process is ended with this signal.
    Fatal(i64),
}

impl Drop for Memobj {
    fn drop(&mut self) {
        mm::free_zeroed(&self.frames);
    }
}

static OBJECTS: Mutex<BTreeMap<u64, alloc::sync::Weak<Memobj>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Creates a zeroed object of `pages` pages owned by `owner` (kept alive by the owner's list);
/// `flags` are [`kabi::MemobjFlags`].
pub fn create(owner: &Arc<Process>, pages: u64, flags: u64) -> Result<u64, kabi::Error> {
    if pages == 0 || pages > kabi::MEMOBJ_MAX_PAGES || flags & !kabi::MemobjFlags::ALL != 0 {
        return Err(kabi::Error::Invalid);
    }
    let mut frames = alloc::vec![0u64; pages as usize];
    let got = mm::alloc_frames(&mut frames);
    if got < frames.len() {
        mm::free_zeroed(&frames[..got]);
        return Err(kabi::Error::NoMemory);
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let paging = (flags & kabi::MemobjFlags::PAGED != 0).then(|| {
        Mutex::new(Paging {
            pages: alloc::vec![PageState::Absent; pages as usize],
            waiters: Vec::new(),
        })
    });
    let obj = Arc::new(Memobj {
        owner: owner.pid,
        frames,
        grants: Mutex::new(Vec::new()),
        paging,
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
    // The pager sees every page; anyone else only the filled ones (the rest fault).
    let filled: Option<Vec<bool>> = match &obj.paging {
        Some(paging) if obj.owner != caller.pid => Some(
            paging
                .lock()
                .pages
                .iter()
                .map(|&p| p == PageState::Filled)
                .collect(),
        ),
        _ => None,
    };
    for (i, &frame) in obj.frames.iter().enumerate() {
        if filled.as_ref().is_some_and(|f| !f[i]) {
            continue;
        }
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

/// A page fault at `va` (a `write`, an instruction fetch with `exec`) by `d`, whose trap frame
/// is `frame`, that the address space could not resolve, in region `region` of `space` (`d`'s
/// process's). Only memory-object regions are handled here (`None` for others): a filled page
/// of a paged object is mapped; an unfilled one is asked for and waited for.
pub fn fault(
    d: &Arc<Dispatcher>,
    frame: &mut TrapFrame,
    space: &mut AddressSpace,
    region: &Region,
    va: u64,
    write: bool,
    exec: bool,
) -> Option<ObjectFault> {
    let Backing::Object { id } = region.backing else {
        return None;
    };
    let allowed = (!write || region.prot & Prot::WRITE != 0)
        && (!exec || region.prot & Prot::EXEC != 0)
        && region.prot != 0;
    let obj = find(id)?;
    let page = va & !(FRAME_SIZE - 1);
    let index = ((page - region.start) / FRAME_SIZE) as usize;
    // Plain objects are mapped whole: a fault there is the process's mistake.
    let (Some(paging), Some(&frame_phys), true) = (&obj.paging, obj.frames.get(index), allowed)
    else {
        return Some(ObjectFault::Fatal(SIGSEGV));
    };
    let mut state = paging.lock();
    let ask = match state.pages[index] {
        PageState::Filled => {
            return Some(match space.translate(page) {
                // Another CPU of the process mapped it first.
                Some(_) => ObjectFault::Resolved,
                None => match space.map_page(page, frame_phys, region.prot, false) {
                    Ok(()) => ObjectFault::Resolved,
                    Err(_) => ObjectFault::Fatal(SIGSEGV),
                },
            });
        }
        PageState::Failed => return Some(ObjectFault::Fatal(SIGBUS)),
        PageState::Absent => {
            state.pages[index] = PageState::Requested;
            true
        }
        PageState::Requested => false,
    };
    // Registered under the object's lock, which `fill` takes too: the upcall's retry count
    // (read inside) is older than the fill's bump, and a blocked dispatcher is marked
    // blocked before the fill looks for it. So no fill is missed.
    let kind = if crate::upcall::page_fault(d, frame, va) {
        WaitKind::Upcalled
    } else {
        crate::sched::block_current(BlockReason::PageFault);
        WaitKind::Blocked
    };
    state.waiters.push((index, d.clone(), kind));
    drop(state);
    if ask {
        let request = kabi::Message {
            sender: 0,
            words: [kabi::MESSAGE_PAGE_REQUEST, id, index as u64],
        };
        if crate::ppc::deliver(obj.owner, request, d.cpu, false).is_err() {
            // No pager to ask: the page will never come.
            settle(&obj, index, 1, PageState::Failed);
        }
    }
    Some(ObjectFault::Waiting)
}

/// Sets pages `first..first + count` of paged object `obj` to `to` (filled or failed, from
/// absent or requested) and tells the dispatchers waiting for them to retry.
fn settle(obj: &Memobj, first: usize, count: usize, to: PageState) {
    let Some(paging) = &obj.paging else { return };
    let ready: Vec<(usize, Arc<Dispatcher>, WaitKind)> = {
        let mut state = paging.lock();
        for page in &mut state.pages[first..first + count] {
            if matches!(page, PageState::Absent | PageState::Requested) {
                *page = to;
            }
        }
        let (ready, waiting) = core::mem::take(&mut state.waiters)
            .into_iter()
            .partition(|(index, _, _)| (first..first + count).contains(index));
        state.waiters = waiting;
        ready
    };
    for (_, d, kind) in ready {
        match kind {
            WaitKind::Upcalled => crate::upcall::retry(&d),
            WaitKind::Blocked => {
                crate::sched::resume(&d, BlockReason::PageFault);
            }
        }
    }
}

/// `memobj_fill(id, first, count, flags)` from `caller`, the object's pager (see
/// [`kabi::Sys::MemobjFill`]).
pub fn fill(
    caller: &Arc<Process>,
    id: u64,
    first: u64,
    count: u64,
    flags: u64,
) -> Result<(), kabi::Error> {
    let obj = find(id).ok_or(kabi::Error::NotFound)?;
    if obj.owner != caller.pid {
        return Err(kabi::Error::NotPermitted);
    }
    let pages = obj.frames.len() as u64;
    let in_range = first < pages && count > 0 && count <= pages - first;
    if obj.paging.is_none() || !in_range || flags & !kabi::FillFlags::ALL != 0 {
        return Err(kabi::Error::Invalid);
    }
    let to = if flags & kabi::FillFlags::ERROR != 0 {
        PageState::Failed
    } else {
        PageState::Filled
    };
    settle(&obj, first as usize, count as usize, to);
    Ok(())
}

/// `process` (exiting) can page nothing any more: the unfilled pages of the paged objects it
/// created fail, and their waiters are told.
pub fn pager_exited(process: &Process) {
    let objects: Vec<Arc<Memobj>> = process.memobjs.lock().clone();
    for obj in objects {
        if obj.owner == process.pid && obj.paging.is_some() {
            settle(&obj, 0, obj.frames.len(), PageState::Failed);
        }
    }
}
