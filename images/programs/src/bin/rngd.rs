//! The virtio-rng driver server: drives the first entropy device the kernel knows and exports
//! it as `random` (`k42_guest_lib::virtio::rng::op`): random bytes from the host's getrandom,
//! in the caller's PPC buffer. The source is a user-level clustered object
//! (`k42_guest_lib::entropy`): each CPU's PPC dispatcher calls its own rep, which hands out
//! bytes from that CPU's pool and refills it from the device when it is empty. Like `blkd`, it
//! waits for the device by blocking the serving PPC dispatcher on the soft-interrupt bit the
//! device's interrupt posts.
#![no_std]
#![no_main]

use k42_guest_lib::cobj::{CoManager, CoRef};
use k42_guest_lib::entropy::{self, EntropyBackend, EntropySource};
use k42_guest_lib::virtio::rng::{op, RngDevice, RngError, DMA_PAGES, MAX_REQUEST};
use k42_guest_lib::virtio::DEVICE_ID_RNG;
use k42_programs::devmem::{ppc_window_write, start_device, DmaRegion, MmioRegs, Started, IRQ_BIT};
use k42_programs::{driver_object, ServerCpus};
use k42_rt::println;
use k42_rt::sys::{self, PpcReply};
use spin::Once;

k42_rt::entry!(main);

/// The device under the pools (the entropy object holds it under a lock).
struct Device {
    dev: RngDevice<MmioRegs, DmaRegion>,
    /// The kernel's index of the device.
    index: usize,
    /// The CPU whose PPC dispatcher the interrupt is bound to.
    bound_cpu: Option<usize>,
}

impl EntropyBackend for Device {
    fn fill(&mut self, out: &mut [u8], cpu: usize) -> Result<usize, RngError> {
        if self.bound_cpu != Some(cpu) {
            // The interrupt goes to the dispatcher that waits for it: this CPU's PPC one.
            sys::device_irq(self.index, IRQ_BIT).map_err(|_| RngError::Device)?;
            self.bound_cpu = Some(cpu);
        }
        self.dev.fill(out, &mut || {
            sys::block(0);
        })
    }
}

/// The driver's clustered objects, and the entropy source among them.
struct Objects {
    cos: CoManager<ServerCpus>,
    source: CoRef<dyn EntropySource>,
}

static OBJECTS: Once<Objects> = Once::new();

fn get(objects: &Objects, len: u64, cpu: usize) -> Result<u64, RngError> {
    let mut bytes = [0u8; MAX_REQUEST];
    let len = (len as usize).min(MAX_REQUEST);
    let n = objects
        .cos
        .call(objects.source, |s| s.get(&mut bytes[..len]))?;
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
    let result = match (OBJECTS.get(), operation) {
        (None, _) => Err(RngError::Setup),
        (Some(objects), op::GET) => get(objects, a1, cpu as usize),
        (Some(_), _) => Err(RngError::UnknownOp),
    };
    k42_programs::devmem::ppc_reply(result.map_err(|e| e as u64))
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
    let device = Device {
        dev,
        index,
        bound_cpu: None,
    };
    let Some((cos, source)) =
        driver_object("rngd", "rng.source", |cpus| entropy::root(device, cpus))
    else {
        return 1;
    };
    OBJECTS.call_once(|| Objects { cos, source });
    if let Err(e) = sys::ppc_serve("random", serve) {
        println!("rngd: cannot export random: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
