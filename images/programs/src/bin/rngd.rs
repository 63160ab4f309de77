//! The virtio-rng driver server: drives the first entropy device the kernel knows and exports
//! it as `random` (`k42_guest_lib::virtio::rng::op`): random bytes from the host's getrandom,
//! in the caller's PPC buffer. Like `blkd`, it waits for the device by blocking the serving PPC
//! dispatcher on the soft-interrupt bit the device's interrupt posts.
#![no_std]
#![no_main]

use k42_guest_lib::virtio::rng::{op, RngDevice, RngError, DMA_PAGES, MAX_REQUEST};
use k42_guest_lib::virtio::DEVICE_ID_RNG;
use k42_programs::devmem::{ppc_window_write, start_device, DmaRegion, MmioRegs, Started, IRQ_BIT};
use k42_rt::println;
use k42_rt::sys::{self, PpcReply};
use spin::Mutex;

k42_rt::entry!(main);

struct Driver {
    dev: RngDevice<MmioRegs, DmaRegion>,
    index: usize,
    bound_cpu: Option<usize>,
}

static DRIVER: Mutex<Option<Driver>> = Mutex::new(None);

fn get(driver: &mut Driver, len: u64, cpu: usize) -> Result<u64, RngError> {
    if driver.bound_cpu != Some(cpu) {
        sys::device_irq(driver.index, IRQ_BIT).map_err(|_| RngError::Device)?;
        driver.bound_cpu = Some(cpu);
    }
    let mut bytes = [0u8; MAX_REQUEST];
    let len = (len as usize).min(MAX_REQUEST);
    let n = driver.dev.fill(&mut bytes[..len], &mut || {
        sys::block(0);
    })?;
    ppc_window_write(cpu, &bytes[..n]);
    Ok(n as u64)
}

extern "C" fn serve(
    _client: u64,
    operation: u64,
    a1: u64,
    _a2: u64,
    _a3: u64,
    cpu: u64,
) -> PpcReply {
    let mut guard = DRIVER.lock();
    let result = match (guard.as_mut(), operation) {
        (None, _) => Err(RngError::Setup),
        (Some(driver), op::GET) => get(driver, a1, cpu as usize),
        (Some(_), _) => Err(RngError::UnknownOp),
    };
    match result {
        Ok(n) => PpcReply { r0: 0, r1: n },
        Err(e) => PpcReply {
            r0: e as u64,
            r1: 0,
        },
    }
}

fn main(_arg: u64) -> i64 {
    let kind = ("virtio-rng", DEVICE_ID_RNG, "k42vm --rng");
    let Some(Started { index, desc, dev }) =
        start_device("rngd", kind, 0, DMA_PAGES, RngDevice::new)
    else {
        return 1;
    };
    println!(
        "rngd: virtio-rng at {:#x} line {}; serving random",
        desc.base, desc.irq
    );
    *DRIVER.lock() = Some(Driver {
        dev,
        index,
        bound_cpu: None,
    });
    if let Err(e) = sys::ppc_serve("random", serve) {
        println!("rngd: cannot export random: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
