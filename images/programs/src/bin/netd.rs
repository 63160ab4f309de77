//! The virtio-net driver server (a ring-3 driver, like `blkd`). Argument `n`: drive the `n`-th
//! virtio-net card and export it as `net<n>`. It moves raw Ethernet frames, one per PPC call,
//! through the caller's PPC buffer (`k42_guest_lib::virtio::net::op`): the network stack that
//! is to use them comes later. Waiting for the device (a transmit to be taken, a frame to
//! arrive) blocks the serving PPC dispatcher on the soft-interrupt bit the card's interrupt
//! posts.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;

use k42_guest_lib::virtio::net::{op, NetDevice, NetError, DMA_PAGES, MAX_FRAME};
use k42_guest_lib::virtio::DEVICE_ID_NET;
use k42_programs::devmem::{
    ppc_window_read, ppc_window_write, start_device, DmaRegion, MmioRegs, Started, IRQ_BIT,
};
use k42_rt::println;
use k42_rt::sys::{self, PpcReply};
use spin::Mutex;

k42_rt::entry!(main);

struct Driver {
    dev: NetDevice<MmioRegs, DmaRegion>,
    index: usize,
    bound_cpu: Option<usize>,
    sent: u64,
    received: u64,
}

impl Driver {
    /// Routes the card's interrupt to this CPU's PPC dispatcher, the one that waits for it.
    fn bind(&mut self, cpu: usize) -> Result<(), NetError> {
        if self.bound_cpu != Some(cpu) {
            sys::device_irq(self.index, IRQ_BIT).map_err(|_| NetError::Device)?;
            self.bound_cpu = Some(cpu);
        }
        Ok(())
    }

    fn send(&mut self, len: u64, cpu: usize) -> Result<u64, NetError> {
        let len = usize::try_from(len).map_err(|_| NetError::BadFrame)?;
        if len > MAX_FRAME {
            return Err(NetError::BadFrame);
        }
        self.bind(cpu)?;
        let mut frame = [0u8; MAX_FRAME];
        ppc_window_read(cpu, &mut frame[..len]);
        self.dev.send(&frame[..len], &mut || {
            sys::block(0);
        })?;
        self.sent += 1;
        Ok(0)
    }

    fn receive(&mut self, deadline: u64, cpu: usize) -> Result<u64, NetError> {
        self.bind(cpu)?;
        let mut frame = [0u8; MAX_FRAME];
        loop {
            if let Some(len) = self.dev.receive(&mut frame)? {
                self.received += 1;
                ppc_window_write(cpu, &frame[..len]);
                return Ok(len as u64);
            }
            if sys::now_ns() >= deadline {
                return Ok(0);
            }
            // Woken by the card's interrupt or at the deadline.
            sys::block(deadline);
        }
    }
}

static DRIVER: Mutex<Option<Driver>> = Mutex::new(None);

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
    let result = match (guard.as_mut(), operation) {
        (None, _) => Err(NetError::Setup),
        (Some(d), op::MAC) => Ok(d.dev.mac().iter().fold(0, |w, &b| (w << 8) | u64::from(b))),
        (Some(d), op::SEND) => d.send(a1, cpu),
        (Some(d), op::RECEIVE) => d.receive(a1, cpu),
        (Some(d), op::STATS) => Ok((d.sent << 32) | (d.received & 0xffff_ffff)),
        (Some(_), _) => Err(NetError::UnknownOp),
    };
    match result {
        Ok(r1) => PpcReply { r0: 0, r1 },
        Err(e) => PpcReply {
            r0: e as u64,
            r1: 0,
        },
    }
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
    *DRIVER.lock() = Some(Driver {
        dev,
        index,
        bound_cpu: None,
        sent: 0,
        received: 0,
    });
    if let Err(e) = sys::ppc_serve(&name, serve) {
        println!("netd {n}: cannot export {name}: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
