//! The virtio-blk driver server (a ring-3 driver, DESIGN.md's privileged minimum). Argument
//! `n`: drive the `n`-th virtio-blk device the kernel knows and export it as `blk<n>`.
//!
//! It claims the device's register window and DMA memory from the kernel, brings the device up
//! (guest-lib's virtio-mmio transport and split queue), and serves 4 KiB blocks by PPC through
//! the caller's PPC buffer (`k42_guest_lib::virtio::blk::op`), with a page-sized block cache
//! in front (write-through: a write reaches the device before the call returns). A request
//! waits for its completion by blocking the serving PPC dispatcher on a soft-interrupt bit
//! that the device's interrupt posts; the handler then acknowledges the device itself.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;

use k42_guest_lib::virtio::blk::{op, BlkDevice, BlkError, Request, BLOCK_SIZE, DATA};
use k42_guest_lib::virtio::cache::BlockCache;
use k42_guest_lib::virtio::{Dma, DEVICE_ID_BLOCK};
use k42_programs::devmem::{
    claim_device, ppc_window_read, ppc_window_write, Claimed, DmaRegion, MmioRegs, IRQ_BIT,
};
use k42_rt::println;
use k42_rt::sys::{self, PpcReply};
use spin::Mutex;

k42_rt::entry!(main);

/// Blocks the cache holds (64 pages).
const CACHE_BLOCKS: usize = 64;

struct Driver {
    dev: BlkDevice<MmioRegs, DmaRegion>,
    cache: BlockCache,
    /// The kernel's index of the device.
    index: usize,
    /// The CPU whose PPC dispatcher the interrupt is bound to.
    bound_cpu: Option<usize>,
    /// Requests sent to the device.
    requests: u64,
    /// Times a request blocked for the device's interrupt.
    waits: u64,
}

impl Driver {
    /// Runs one request, blocking the calling dispatcher on [`IRQ_BIT`] until it completes.
    fn run(&mut self, request: Request, cpu: usize) -> Result<(), BlkError> {
        if self.bound_cpu != Some(cpu) {
            // The interrupt goes to the dispatcher that waits for it: this CPU's PPC one.
            sys::device_irq(self.index, IRQ_BIT).map_err(|_| BlkError::Device)?;
            self.bound_cpu = Some(cpu);
        }
        self.requests += 1;
        if request == Request::Flush {
            return self.run_on_interrupt(request);
        }
        let waits = &mut self.waits;
        self.dev.run(request, &mut || {
            *waits += 1;
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
            self.waits += 1;
            if sys::block(0) & IRQ_BIT != 0 {
                break;
            }
        }
        loop {
            self.dev.ack_interrupt();
            if let Some(result) = self.dev.poll() {
                return result;
            }
            self.waits += 1;
            sys::block(0);
        }
    }

    fn read(&mut self, block: u64, cpu: usize) -> Result<(), BlkError> {
        if let Some(data) = self.cache.get(block) {
            ppc_window_write(cpu, data);
            return Ok(());
        }
        self.run(Request::Read(block), cpu)?;
        let mut data = [0u8; BLOCK_SIZE];
        self.dev.dma().read_bytes(DATA, &mut data);
        self.cache.insert(block, &data);
        ppc_window_write(cpu, &data);
        Ok(())
    }

    fn write(&mut self, block: u64, cpu: usize) -> Result<(), BlkError> {
        let mut data = [0u8; BLOCK_SIZE];
        ppc_window_read(cpu, &mut data);
        self.dev.dma().write_bytes(DATA, &data);
        self.run(Request::Write(block), cpu)?;
        // Cached only once the device has it (write-through).
        self.cache.insert(block, &data);
        Ok(())
    }
}

/// One request at a time: a handler waiting for the device holds the driver.
static DRIVER: Mutex<Option<Driver>> = Mutex::new(None);

fn reply(result: Result<u64, BlkError>) -> PpcReply {
    match result {
        Ok(r1) => PpcReply { r0: 0, r1 },
        Err(e) => PpcReply {
            r0: e as u64,
            r1: 0,
        },
    }
}

extern "C" fn serve(
    _client: u64,
    operation: u64,
    a1: u64,
    _a2: u64,
    _a3: u64,
    cpu: u64,
) -> PpcReply {
    let cpu = cpu as usize;
    let mut guard = DRIVER.lock();
    let Some(driver) = guard.as_mut() else {
        return reply(Err(BlkError::Setup));
    };
    reply(match operation {
        op::INFO => {
            let ro = if driver.dev.readonly() {
                op::READONLY_BIT
            } else {
                0
            };
            Ok(driver.dev.blocks() | ro)
        }
        op::READ => driver.read(a1, cpu).map(|_| 0),
        op::WRITE => driver.write(a1, cpu).map(|_| 0),
        op::FLUSH => driver.run(Request::Flush, cpu).map(|_| 0),
        op::STATS => {
            let (hits, misses) = driver.cache.stats();
            Ok((hits << 32) | (misses & 0xffff_ffff))
        }
        op::WAITS => Ok((driver.requests << 32) | (driver.waits & 0xffff_ffff)),
        op::INVALIDATE => {
            driver.cache.clear();
            Ok(0)
        }
        _ => Err(BlkError::UnknownOp),
    })
}

fn main(n: u64) -> i64 {
    let who = format!("blkd {n}");
    let kind = ("virtio-blk", DEVICE_ID_BLOCK, "k42vm --disk PATH");
    let blk_pages = k42_guest_lib::virtio::blk::DMA_PAGES;
    let Claimed {
        index,
        desc,
        regs,
        dma,
    } = match claim_device(&who, kind, n as usize, blk_pages) {
        Ok(claimed) => claimed,
        Err(why) => {
            println!("{why}");
            return 1;
        }
    };
    let dev = match BlkDevice::new(regs, dma) {
        Ok(dev) => dev,
        Err(e) => {
            println!("{who}: device {index} did not come up: {e:?}");
            return 1;
        }
    };
    let name = format!("blk{n}");
    println!(
        "blkd {n}: virtio-blk at {:#x} line {}: {} blocks of 4 KiB{}; serving {name}",
        desc.base,
        desc.irq,
        dev.blocks(),
        if dev.readonly() { ", read-only" } else { "" }
    );
    *DRIVER.lock() = Some(Driver {
        dev,
        cache: BlockCache::new(CACHE_BLOCKS),
        index,
        bound_cpu: None,
        requests: 0,
        waits: 0,
    });
    if let Err(e) = sys::ppc_serve(&name, serve) {
        println!("blkd {n}: cannot export {name}: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
