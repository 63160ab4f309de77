//! The virtio-blk driver server (a ring-3 driver, DESIGN.md's privileged minimum). Argument
//! `n`: drive the `n`-th virtio-blk device the kernel knows and export it as `blk<n>`.
//!
//! It claims the device's register window and DMA memory from the kernel, brings the device up
//! (guest-lib's virtio-mmio transport and split queue), and serves 4 KiB blocks by PPC through
//! the caller's PPC buffer (`k42_guest_lib::virtio::blk::op`). The disk is a user-level
//! clustered object (`k42_guest_lib::blockdev`): each CPU's PPC dispatcher calls its own rep,
//! which keeps that CPU's part of a distributed block cache (write-through: a write reaches
//! the device before the call returns) in front of the one device. A device request moves up
//! to 16 consecutive blocks (a multi-block call's run of blocks no CPU's part holds), and waits
//! for its completion by blocking the serving PPC dispatcher on a soft-interrupt bit that the
//! device's interrupt posts; the handler then acknowledges the device itself.
//!
//! A client may attach a transfer area (a memory object it grants to the driver, up to 16
//! pages) and then move up to that many blocks in one call (`op::READ_BLOCKS`,
//! `op::WRITE_BLOCKS`): one PPC round trip per 64 KiB instead of per 4 KiB. The driver maps
//! each client's area in its own address space; it keeps [`MAX_ATTACHED`] of them, replacing
//! the oldest one not in use when another client attaches. A client detaches its areas as it
//! exits (`op::DETACH`).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_guest_lib::blockdev::{self, BlockBackend, BlockDevice, CacheStats};
use k42_guest_lib::cobj::{CoManager, CoRef};
use k42_guest_lib::virtio::blk::op::{self, MAX_TRANSFER_PAGES};
use k42_guest_lib::virtio::blk::{BlkDevice, BlkError, Request, BLOCK_SIZE, DATA};
use k42_guest_lib::virtio::{Dma, DEVICE_ID_BLOCK};
use k42_programs::devmem::{
    ppc_window_read, ppc_window_write, start_device, DmaRegion, MmioRegs, Started, IRQ_BIT,
};
use k42_programs::{driver_object, ServerCpus};
use k42_rt::kabi::{Prot, PAGE_SIZE};
use k42_rt::println;
use k42_rt::sys::{self, PpcReply};
use spin::Once;

k42_rt::entry!(main);

/// Blocks each CPU's part of the cache holds (64 pages).
const CACHE_BLOCKS_PER_CPU: usize = 64;

/// The device under the cache, one request at a time (the block-device object holds it under
/// a lock).
struct Device {
    dev: BlkDevice<MmioRegs, DmaRegion>,
    /// The kernel's index of the device.
    index: usize,
    /// The CPU whose PPC dispatcher the interrupt is bound to.
    bound_cpu: Option<usize>,
}

/// Requests sent to the device.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Times a request blocked for the device's interrupt.
static WAITS: AtomicU64 = AtomicU64::new(0);

impl Device {
    /// Runs one request, blocking the calling dispatcher on [`IRQ_BIT`] until it completes.
    fn run(&mut self, request: Request, cpu: usize) -> Result<(), BlkError> {
        if self.bound_cpu != Some(cpu) {
            // The interrupt goes to the dispatcher that waits for it: this CPU's PPC one.
            sys::device_irq(self.index, IRQ_BIT).map_err(|_| BlkError::Device)?;
            self.bound_cpu = Some(cpu);
        }
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        if request == Request::Flush {
            return self.run_on_interrupt(request);
        }
        self.dev.run(request, &mut || {
            WAITS.fetch_add(1, Ordering::Relaxed);
            sys::block(0);
        })
    }

    /// Runs `request` strictly on its interrupt: bits left from earlier completions are
    /// taken first, then the driver blocks until the device's interrupt posts the bit (the
    /// device interrupts on every completion), and only then looks at the queue. Without a
    /// working interrupt path this never returns.
    fn run_on_interrupt(&mut self, request: Request) -> Result<(), BlkError> {
        // A deadline already past: returns the pending bits, without waiting for any.
        sys::block(1);
        self.dev.start(request)?;
        loop {
            WAITS.fetch_add(1, Ordering::Relaxed);
            if sys::block(0) & IRQ_BIT != 0 {
                break;
            }
        }
        loop {
            self.dev.ack_interrupt();
            if let Some(result) = self.dev.poll() {
                return result;
            }
            WAITS.fetch_add(1, Ordering::Relaxed);
            sys::block(0);
        }
    }
}

impl BlockBackend for Device {
    fn blocks(&self) -> u64 {
        self.dev.blocks()
    }

    fn readonly(&self) -> bool {
        self.dev.readonly()
    }

    fn max_run(&self) -> usize {
        self.dev.max_request_blocks()
    }

    fn read(
        &mut self,
        first: u64,
        out: &mut [[u8; BLOCK_SIZE]],
        cpu: usize,
    ) -> Result<(), BlkError> {
        let count = out.len();
        self.run(
            Request::Read {
                block: first,
                count,
            },
            cpu,
        )?;
        for (i, block) in out.iter_mut().enumerate() {
            self.dev.dma().read_bytes(DATA + i * BLOCK_SIZE, block);
        }
        Ok(())
    }

    fn write(&mut self, first: u64, data: &[[u8; BLOCK_SIZE]], cpu: usize) -> Result<(), BlkError> {
        for (i, block) in data.iter().enumerate() {
            self.dev.dma().write_bytes(DATA + i * BLOCK_SIZE, block);
        }
        let count = data.len();
        self.run(
            Request::Write {
                block: first,
                count,
            },
            cpu,
        )
    }

    fn flush(&mut self, cpu: usize) -> Result<(), BlkError> {
        self.run(Request::Flush, cpu)
    }
}

/// Clients whose transfer areas are mapped at once.
const MAX_ATTACHED: usize = 32;
/// Where the transfer areas are mapped: slot `i` at `AREAS + i * MAX_TRANSFER_PAGES` pages.
const AREAS: u64 = 0x0000_3000_0000_0000;

/// A client's transfer area, mapped in slot `slot`.
struct Attached {
    client: u64,
    object: u64,
    pages: u64,
    /// Calls using it now (it is not replaced meanwhile).
    in_use: u32,
    /// When it was attached (for replacing the oldest).
    attached: u64,
}

/// The transfer areas, by slot.
static AREAS_IN_USE: spin::Mutex<[Option<Attached>; MAX_ATTACHED]> =
    spin::Mutex::new([const { None }; MAX_ATTACHED]);
static ATTACHES: AtomicU64 = AtomicU64::new(0);

fn area_address(slot: usize) -> u64 {
    AREAS + slot as u64 * MAX_TRANSFER_PAGES * PAGE_SIZE
}

/// `op::ATTACH` for `client`: maps `object` (`pages` pages) in a free slot, or in the oldest
/// one not in use, in place of the client's earlier area.
fn attach(client: u64, object: u64, pages: u64) -> Result<u64, BlkError> {
    if !(1..=MAX_TRANSFER_PAGES).contains(&pages) {
        return Err(BlkError::NoTransferArea);
    }
    let mut areas = AREAS_IN_USE.lock();
    if let Some(Some(a)) = areas.iter().find(|a| {
        a.as_ref()
            .is_some_and(|a| a.client == client && a.object == object)
    }) {
        // Already attached (a call after a fork attaches again under the child's pid).
        return if a.pages == pages {
            Ok(0)
        } else {
            Err(BlkError::NoTransferArea)
        };
    }
    let slot = areas
        .iter()
        .position(|a| {
            a.as_ref()
                .is_some_and(|a| a.client == client && a.in_use == 0)
        })
        .or_else(|| areas.iter().position(Option::is_none))
        .or_else(|| {
            (0..MAX_ATTACHED)
                .filter(|&i| areas[i].as_ref().is_some_and(|a| a.in_use == 0))
                .min_by_key(|&i| areas[i].as_ref().map_or(0, |a| a.attached))
        })
        .ok_or(BlkError::NoTransferArea)?;
    if areas[slot].take().is_some() {
        let _ = sys::memobj_unmap(area_address(slot));
    }
    sys::memobj_map(object, area_address(slot), Prot::READ | Prot::WRITE)
        .map_err(|_| BlkError::NoTransferArea)?;
    areas[slot] = Some(Attached {
        client,
        object,
        pages,
        in_use: 0,
        attached: ATTACHES.fetch_add(1, Ordering::Relaxed),
    });
    Ok(0)
}

/// `op::DETACH` for `client`: unmaps its areas that no call uses; returns how many.
fn detach(client: u64) -> u64 {
    let mut areas = AREAS_IN_USE.lock();
    let mut gone = 0;
    for slot in 0..MAX_ATTACHED {
        if areas[slot]
            .as_ref()
            .is_some_and(|a| a.client == client && a.in_use == 0)
        {
            areas[slot] = None;
            let _ = sys::memobj_unmap(area_address(slot));
            gone += 1;
        }
    }
    gone
}

/// Runs `f` on pages `first..first + count` of `client`'s transfer area (each a block's
/// worth), keeping the area mapped meanwhile.
fn with_area<T>(
    client: u64,
    first: u64,
    count: u64,
    f: impl FnOnce(&mut [[u8; BLOCK_SIZE]]) -> T,
) -> Result<T, BlkError> {
    let (slot, pages) = {
        let mut areas = AREAS_IN_USE.lock();
        // The client's latest area (an older one may still be in use by another call).
        let slot = (0..MAX_ATTACHED)
            .filter(|&i| areas[i].as_ref().is_some_and(|a| a.client == client))
            .max_by_key(|&i| areas[i].as_ref().map_or(0, |a| a.attached))
            .ok_or(BlkError::NoTransferArea)?;
        let area = areas[slot].as_mut().ok_or(BlkError::NoTransferArea)?;
        area.in_use += 1;
        (slot, area.pages)
    };
    let result = if count == 0 || first.checked_add(count).is_none_or(|end| end > pages) {
        Err(BlkError::NoTransferArea)
    } else {
        // SAFETY: slot `slot` maps `pages` pages of the client's object read-write, and stays
        // mapped while `in_use` is non-zero; the pages asked for lie inside it. The client may
        // write them meanwhile (it is shared memory): that changes only what this call moves.
        let blocks = unsafe {
            core::slice::from_raw_parts_mut(
                (area_address(slot) + first * PAGE_SIZE) as *mut [u8; BLOCK_SIZE],
                count as usize,
            )
        };
        Ok(f(blocks))
    };
    if let Some(area) = AREAS_IN_USE.lock()[slot].as_mut() {
        area.in_use -= 1;
    }
    result
}

/// Moves `count` blocks from `block` on between the disk and `client`'s transfer area (from
/// page `first`); returns the blocks moved (fewer when the disk ends or fails after the first).
fn transfer(
    objects: &Objects,
    client: u64,
    write: bool,
    block: u64,
    count: u64,
    first: u64,
) -> Result<u64, BlkError> {
    with_area(client, first, count, |pages| {
        objects.cos.call(objects.disk, |d| {
            if write {
                d.write_blocks(block, pages)
            } else {
                d.read_blocks(block, pages)
            }
        })
    })?
    .map(|done| done as u64)
}

/// The driver's clustered objects, and the disk among them.
struct Objects {
    cos: CoManager<ServerCpus>,
    disk: CoRef<dyn BlockDevice>,
}

static OBJECTS: Once<Objects> = Once::new();

fn reply(result: Result<u64, BlkError>) -> PpcReply {
    k42_programs::devmem::ppc_reply(result.map_err(|e| e as u64))
}

/// How every CPU's part of the cache has served reads.
fn cache_stats(objects: &Objects) -> CacheStats {
    let mut total = CacheStats::default();
    objects
        .cos
        .for_each_rep(objects.disk, |_, rep| total = total.plus(rep.stats()));
    total
}

extern "C" fn serve(client: u64, operation: u64, a1: u64, a2: u64, a3: u64, cpu: u64) -> PpcReply {
    let cpu = cpu as usize;
    let Some(objects) = OBJECTS.get() else {
        return reply(Err(BlkError::Setup));
    };
    let disk = |f: &mut dyn FnMut(&dyn BlockDevice) -> Result<u64, BlkError>| {
        objects.cos.call(objects.disk, |d| f(d))
    };
    reply(match operation {
        op::INFO => disk(&mut |d| {
            let ro = if d.readonly() { op::READONLY_BIT } else { 0 };
            Ok(d.blocks() | ro)
        }),
        op::READ => {
            let mut data = [0u8; BLOCK_SIZE];
            disk(&mut |d| d.read(a1, &mut data).map(|()| 0)).inspect(|_| {
                ppc_window_write(cpu, &data);
            })
        }
        op::WRITE => {
            let mut data = [0u8; BLOCK_SIZE];
            ppc_window_read(cpu, &mut data);
            disk(&mut |d| d.write(a1, &data).map(|()| 0))
        }
        op::FLUSH => disk(&mut |d| d.flush().map(|()| 0)),
        op::STATS => {
            let stats = cache_stats(objects);
            let hits = stats.local_hits + stats.peer_hits;
            Ok((hits << 32) | (stats.device_reads & 0xffff_ffff))
        }
        op::PEER_HITS => {
            let reps = objects.cos.objects()[objects.disk.id()].reps as u64;
            Ok((cache_stats(objects).peer_hits << 32) | reps)
        }
        op::WAITS => {
            let requests = REQUESTS.load(Ordering::Relaxed);
            Ok((requests << 32) | (WAITS.load(Ordering::Relaxed) & 0xffff_ffff))
        }
        op::ATTACH => attach(client, a1, a2),
        op::DETACH => Ok(detach(client)),
        op::READ_BLOCKS => transfer(objects, client, false, a1, a2, a3),
        op::WRITE_BLOCKS => transfer(objects, client, true, a1, a2, a3),
        op::INVALIDATE => disk(&mut |d| {
            d.invalidate();
            Ok(0)
        }),
        _ => Err(BlkError::UnknownOp),
    })
}

fn main(n: u64) -> i64 {
    let who = format!("blkd {n}");
    let kind = ("virtio-blk", DEVICE_ID_BLOCK, "k42vm --disk PATH");
    let blk_pages = k42_guest_lib::virtio::blk::DMA_PAGES;
    let Some(Started { index, desc, dev }) =
        start_device(&who, kind, n as usize, blk_pages, BlkDevice::new)
    else {
        return 1;
    };
    let name = format!("blk{n}");
    println!(
        "blkd {n}: virtio-blk at {:#x} line {}: {} blocks of 4 KiB{}; serving {name}",
        desc.base,
        desc.irq,
        dev.blocks(),
        if dev.readonly() { ", read-only" } else { "" }
    );
    let device = Device {
        dev,
        index,
        bound_cpu: None,
    };
    let Some((cos, disk)) = driver_object(&alloc::format!("blkd {n}"), "blk.disk", |cpus| {
        blockdev::root(device, cpus, CACHE_BLOCKS_PER_CPU)
    }) else {
        return 1;
    };
    OBJECTS.call_once(|| Objects { cos, disk });
    if let Err(e) = sys::ppc_serve(&name, serve) {
        println!("blkd {n}: cannot export {name}: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
