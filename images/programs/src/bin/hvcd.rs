//! The virtio-console driver server (a ring-3 driver, like `blkd`): drives the first
//! virtio-console device and exports it as `hvc0`, speaking the console server's protocol
//! (`k42_rt::CONSOLE_OP_WRITE`, `CONSOLE_OP_READ`), so a client reads and writes it as it does
//! the console; Linux programs see it as `/dev/hvc0`. The port is a user-level clustered object
//! (`k42_guest_lib::consoleport`): each CPU's PPC dispatcher calls its own rep. A write returns
//! once the device has taken the bytes (polling the queue between short sleeps, without holding
//! the device). The device's interrupt goes to this server's first dispatcher, which takes the
//! input the device brought and wakes the readers that found none, with the console's wake bit
//! (also when the device fails: their next read reports it).
#![no_std]
#![no_main]

use k42_guest_lib::cobj::{CoManager, CoRef};
use k42_guest_lib::consoleport::{self, ConsolePort};
use k42_guest_lib::virtio::console::{ConsoleDevice, ConsoleError, DMA_PAGES};
use k42_guest_lib::virtio::DEVICE_ID_CONSOLE;
use k42_programs::devmem::{ppc_window_read, ppc_window_write, start_device, Started, IRQ_BIT};
use k42_programs::{driver_object, ServerCpus};
use k42_rt::kabi::PAGE_SIZE;
use k42_rt::sys::{self, PpcReply};
use k42_rt::{println, CONSOLE_OP_READ, CONSOLE_OP_WRITE, CONSOLE_WAKE_SOFT_INTERRUPT};
use spin::Once;

k42_rt::entry!(main);

/// How long a writer sleeps before asking again whether the device took its bytes.
const WRITE_POLL_NS: u64 = 100_000;

/// The driver's clustered objects, and the port among them.
struct Objects {
    cos: CoManager<ServerCpus>,
    port: CoRef<dyn ConsolePort>,
}

static OBJECTS: Once<Objects> = Once::new();

fn write(objects: &Objects, len: u64, cpu: usize) -> Result<u64, ConsoleError> {
    if len == 0 || len > PAGE_SIZE {
        return Err(ConsoleError::BadRequest);
    }
    let mut bytes = [0u8; PAGE_SIZE as usize];
    let bytes = &mut bytes[..len as usize];
    ppc_window_read(cpu, bytes);
    let mut pause = || {
        sys::block(sys::now_ns() + WRITE_POLL_NS);
    };
    let n = objects
        .cos
        .call(objects.port, |p| p.write(bytes, &mut pause))?;
    Ok(n as u64)
}

fn read(objects: &Objects, client: u64, len: u64, cpu: usize) -> Result<u64, ConsoleError> {
    if len > PAGE_SIZE {
        return Err(ConsoleError::BadRequest);
    }
    let mut bytes = [0u8; PAGE_SIZE as usize];
    let out = &mut bytes[..len as usize];
    let got = objects.cos.call(objects.port, |p| p.read(out, client))?;
    let n = got.unwrap_or(0);
    if len > 0 {
        ppc_window_write(cpu, &out[..n]);
    }
    Ok(n as u64)
}

extern "C" fn serve(
    client: u64,
    operation: u64,
    a1: u64,
    _a2: u64,
    _a3: u64,
    cpu: u64,
) -> PpcReply {
    let cpu = cpu as usize;
    let result = match (OBJECTS.get(), operation) {
        (None, _) => Err(ConsoleError::Setup),
        (Some(o), CONSOLE_OP_WRITE) => write(o, a1, cpu),
        (Some(o), CONSOLE_OP_READ) => read(o, client, a1, cpu),
        (Some(_), _) => Err(ConsoleError::BadRequest),
    };
    k42_programs::devmem::ppc_reply(result.map_err(|e| e as u64))
}

fn main(_arg: u64) -> i64 {
    let kind = (
        "virtio-console",
        DEVICE_ID_CONSOLE,
        "k42vm --virtio-console",
    );
    let Some(Started { index, desc, dev }) =
        start_device("hvcd", kind, 0, DMA_PAGES, ConsoleDevice::new)
    else {
        return 1;
    };
    // Input interrupts come to this dispatcher, which wakes the readers.
    if let Err(e) = sys::device_irq(index, IRQ_BIT) {
        println!("hvcd: cannot take the device's interrupt: {e:?}");
        return 1;
    }
    println!(
        "hvcd: virtio-console at {:#x} line {}; serving hvc0",
        desc.base, desc.irq
    );
    let Some((cos, port)) = driver_object("hvcd", "hvc.port", |cpus| consoleport::root(dev, cpus))
    else {
        return 1;
    };
    let objects = OBJECTS.call_once(|| Objects { cos, port });
    if let Err(e) = sys::ppc_serve("hvc0", serve) {
        println!("hvcd: cannot export hvc0: {e:?}");
        return 1;
    }
    loop {
        if sys::block(0) & IRQ_BIT == 0 {
            continue;
        }
        let readers = objects.cos.call(objects.port, |p| p.input_arrived());
        for pid in readers {
            // A reader that has gone meanwhile is no error of ours.
            let _ = sys::soft_interrupt(pid, 0, CONSOLE_WAKE_SOFT_INTERRUPT);
        }
    }
}
