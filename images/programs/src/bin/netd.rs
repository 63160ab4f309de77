//! The virtio-net driver server (a ring-3 driver, like `blkd`). Argument `n`: drive the `n`-th
//! virtio-net card and export it as `net<n>`. It moves raw Ethernet frames, one per PPC call,
//! through the caller's PPC buffer (`k42_guest_lib::virtio::net::op`): the network stack that
//! is to use them comes later. The card is a user-level clustered object
//! (`k42_guest_lib::netcard`): each CPU's PPC dispatcher calls its own rep, which counts its
//! CPU's frames. Waiting for the device (a transmit to be taken, a frame to arrive) blocks the
//! serving PPC dispatcher on the soft-interrupt bit the card's interrupt posts.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;

use k42_guest_lib::cobj::{CoManager, CoRef};
use k42_guest_lib::netcard::{self, NetBackend, NetCard, NetStats};
use k42_guest_lib::virtio::net::{op, NetDevice, NetError, DMA_PAGES, MAX_FRAME};
use k42_guest_lib::virtio::DEVICE_ID_NET;
use k42_programs::devmem::{
    ppc_window_read, ppc_window_write, start_device, DmaRegion, MmioRegs, Started, IRQ_BIT,
};
use k42_programs::{driver_object, ServerCpus};
use k42_rt::println;
use k42_rt::sys::{self, PpcReply};
use spin::Once;

k42_rt::entry!(main);

/// The card under the object (which holds it under a lock).
struct Device {
    dev: NetDevice<MmioRegs, DmaRegion>,
    /// The kernel's index of the device.
    index: usize,
    /// The CPU whose PPC dispatcher the interrupt is bound to.
    bound_cpu: Option<usize>,
}

impl Device {
    /// Routes the card's interrupt to this CPU's PPC dispatcher, the one that waits for it.
    fn bind(&mut self, cpu: usize) -> Result<(), NetError> {
        if self.bound_cpu != Some(cpu) {
            sys::device_irq(self.index, IRQ_BIT).map_err(|_| NetError::Device)?;
            self.bound_cpu = Some(cpu);
        }
        Ok(())
    }
}

impl NetBackend for Device {
    fn mac(&self) -> [u8; 6] {
        self.dev.mac()
    }

    fn send(&mut self, frame: &[u8], cpu: usize) -> Result<(), NetError> {
        self.bind(cpu)?;
        self.dev.send(frame, &mut || {
            sys::block(0);
        })
    }

    fn receive(&mut self, out: &mut [u8], deadline: u64, cpu: usize) -> Result<usize, NetError> {
        self.bind(cpu)?;
        loop {
            if let Some(len) = self.dev.receive(out)? {
                return Ok(len);
            }
            if sys::now_ns() >= deadline {
                return Ok(0);
            }
            // Woken by the card's interrupt or at the deadline.
            sys::block(deadline);
        }
    }
}

/// The driver's clustered objects, and the card among them.
struct Objects {
    cos: CoManager<ServerCpus>,
    card: CoRef<dyn NetCard>,
}

static OBJECTS: Once<Objects> = Once::new();

fn send(objects: &Objects, len: u64, cpu: usize) -> Result<u64, NetError> {
    let len = usize::try_from(len).map_err(|_| NetError::BadFrame)?;
    if len > MAX_FRAME {
        return Err(NetError::BadFrame);
    }
    let mut frame = [0u8; MAX_FRAME];
    ppc_window_read(cpu, &mut frame[..len]);
    objects.cos.call(objects.card, |c| c.send(&frame[..len]))?;
    Ok(0)
}

fn receive(objects: &Objects, deadline: u64, cpu: usize) -> Result<u64, NetError> {
    let mut frame = [0u8; MAX_FRAME];
    let len = objects
        .cos
        .call(objects.card, |c| c.receive(&mut frame, deadline))?;
    ppc_window_write(cpu, &frame[..len]);
    Ok(len as u64)
}

/// Frames every CPU's rep has moved.
fn stats(objects: &Objects) -> NetStats {
    let mut total = NetStats::default();
    objects
        .cos
        .for_each_rep(objects.card, |_, rep| total = total.plus(rep.stats()));
    total
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
    let result = match (OBJECTS.get(), operation) {
        (None, _) => Err(NetError::Setup),
        (Some(o), op::MAC) => {
            let mac = o.cos.call(o.card, |c| c.mac());
            Ok(mac.iter().fold(0, |w, &b| (w << 8) | u64::from(b)))
        }
        (Some(o), op::SEND) => send(o, a1, cpu),
        (Some(o), op::RECEIVE) => receive(o, a1, cpu),
        (Some(o), op::STATS) => {
            let total = stats(o);
            Ok((total.sent << 32) | (total.received & 0xffff_ffff))
        }
        (Some(_), _) => Err(NetError::UnknownOp),
    };
    k42_programs::devmem::ppc_reply(result.map_err(|e| e as u64))
}

fn main(n: u64) -> i64 {
    let who = format!("netd {n}");
    let kind = ("virtio-net", DEVICE_ID_NET, "k42vm --net tap=NAME");
    let Some(Started { index, desc, dev }) =
        start_device(&who, kind, n as usize, DMA_PAGES, NetDevice::new)
    else {
        return 1;
    };
    let name = format!("net{n}");
    let mac = dev.mac();
    println!(
        "netd {n}: virtio-net at {:#x} line {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}; serving {name}",
        desc.base, desc.irq, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    );
    let device = Device {
        dev,
        index,
        bound_cpu: None,
    };
    let Some((cos, card)) = driver_object(&who, "net.card", |cpus| netcard::root(device, cpus))
    else {
        return 1;
    };
    OBJECTS.call_once(|| Objects { cos, card });
    if let Err(e) = sys::ppc_serve(&name, serve) {
        println!("netd {n}: cannot export {name}: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
