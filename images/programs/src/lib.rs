//! Helpers shared by the native test programs: dispatchers on every CPU with their own
//! stacks, and the protocol of the key-value server.
#![no_std]

extern crate alloc;

pub mod devmem;

use core::sync::atomic::{AtomicUsize, Ordering};

use k42_rt::kabi::Prot;
use k42_rt::sys;

/// Key-value server operations (`a0` of a PPC call).
pub mod kv {
    /// `put(key = a1, value = a2) -> (0, previous value or 0)`.
    pub const PUT: u64 = 1;
    /// `get(key = a1) -> (1 if found, value)`.
    pub const GET: u64 = 2;
    /// `calls(client = a1) -> (calls served for that client, 0)`.
    pub const CALLS: u64 = 3;
    /// `sum(len = a1) -> (sum of the first len bytes of the caller's buffer, 0)`.
    pub const SUM: u64 = 4;
    /// Result of an unknown operation.
    pub const UNKNOWN: u64 = 0xbad;
}

/// Operations of `/bin/relay`, a server whose handler calls `kv` itself (nested PPC).
pub mod relay {
    /// `get(key = a1)`: `kv`'s `get`, made from the relay's handler; the same reply.
    pub const GET: u64 = 1;
    /// `sum(len = a1)`: copies the first `len` bytes of the caller's buffer into the relay's
    /// nested buffer and asks `kv` for their sum; the same reply.
    pub const SUM: u64 = 2;
    /// `call_self()`: the relay's handler calls the relay (busy on this CPU: itself).
    pub const CALL_SELF: u64 = 3;
    /// `call_missing()`: the relay's handler calls a server that does not exist.
    pub const CALL_MISSING: u64 = 4;
    /// `r0` of a reply whose nested call failed; `r1` is the error's number, negated.
    pub const FAILED: u64 = 0xfa11;
}

/// The files of `/proc` whose contents the Linux personality makes at each open (the file
/// server holds them as empty read-only files, so they list and stat as on Linux, where they
/// also report size 0).
pub const PROC_FILES: [&str; 6] = [
    "cpuinfo",
    "meminfo",
    "mounts",
    "uptime",
    "version",
    "k42-file-windows",
];

/// The files of `/proc/self` whose contents the Linux personality makes at each open, held by
/// the file server as [`PROC_FILES`] are (`/proc/<own pid>` names the same directory there).
pub const PROC_SELF_FILES: [&str; 4] = ["stat", "status", "cmdline", "comm"];

/// The CPUs a PPC server's clustered objects are spread over (user-level clustered objects
/// with a translation table per PPC dispatcher, that is per CPU): a call runs on its CPU's PPC
/// stack, so the stack pointer names the CPU; code on the server's own dispatchers uses the
/// CPU of the dispatcher.
pub struct ServerCpus {
    count: usize,
}

impl ServerCpus {
    /// The machine's CPUs.
    pub fn new() -> ServerCpus {
        ServerCpus {
            count: (sys::info(k42_rt::kabi::Info::Cpus) as usize).max(1),
        }
    }
}

impl Default for ServerCpus {
    fn default() -> Self {
        ServerCpus::new()
    }
}

impl k42_guest_lib::cobj::Cpus for ServerCpus {
    fn current(&self) -> usize {
        use k42_rt::kabi::{PPC_STACK_AREA, PPC_STACK_SIZE};
        let rsp: u64;
        // SAFETY: reading the stack pointer has no effects.
        unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
        let cpu = if rsp > PPC_STACK_AREA && rsp <= k42_rt::kabi::ppc_stack_top(self.count - 1) {
            ((rsp - 1 - PPC_STACK_AREA) / PPC_STACK_SIZE) as usize
        } else {
            k42_rt::current_cpu()
        };
        cpu.min(self.count - 1)
    }

    fn count(&self) -> usize {
        self.count
    }

    fn relax(&self) {
        sys::yield_now();
    }
}

/// Where worker dispatchers' stacks are mapped (one [`STACK_SIZE`] slot each).
pub const STACKS_BASE: u64 = 0x0000_2000_0000_0000;
/// Size of a worker dispatcher's stack.
pub const STACK_SIZE: u64 = 1 << 20;

/// The dispatcher index of the caller, found from its stack pointer (dispatcher 0 runs on the
/// main stack, workers on their slots).
pub fn dispatcher_from_stack() -> usize {
    let rsp: u64;
    // SAFETY: reading the stack pointer has no effects.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    if (STACKS_BASE..STACKS_BASE + 64 * STACK_SIZE).contains(&rsp) {
        ((rsp - STACKS_BASE) / STACK_SIZE) as usize
    } else {
        0
    }
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Starts a dispatcher on `cpu` running `worker(arg)` on its own stack (the next stack slot:
/// dispatcher `i` gets slot `i`, which [`dispatcher_from_stack`] relies on); returns its index.
pub fn start_dispatcher(
    cpu: usize,
    worker: extern "C" fn(u64) -> !,
    arg: u64,
) -> Result<usize, k42_rt::kabi::Error> {
    k42_rt::set_dispatcher_lookup(dispatcher_from_stack);
    let index = STARTED.fetch_add(1, Ordering::AcqRel) + 1;
    let base = STACKS_BASE + index as u64 * STACK_SIZE;
    sys::map(base, STACK_SIZE, Prot::READ | Prot::WRITE)?;
    let got = sys::dispatcher_create(cpu, worker, base + STACK_SIZE - 8, arg)?;
    if got != index {
        return Err(k42_rt::kabi::Error::Invalid);
    }
    Ok(index)
}

/// Starts a dispatcher on every CPU other than the caller's, each running `worker(cpu)` on its
/// own stack ([`start_dispatcher`]); returns how many were started.
pub fn start_workers(worker: extern "C" fn(u64) -> !) -> Result<usize, k42_rt::kabi::Error> {
    let cpus = sys::info(k42_rt::kabi::Info::Cpus) as usize;
    let me = k42_rt::current_cpu();
    let mut started = 0;
    for cpu in (0..cpus).filter(|&c| c != me) {
        start_dispatcher(cpu, worker, cpu as u64)?;
        started += 1;
    }
    Ok(started)
}

/// A driver server's clustered-object manager over its PPC dispatchers' CPUs, with the one
/// object serving its device, made by `root(number of CPUs)` and registered as `name`; `None`,
/// having printed why (as `who`), if it cannot be created.
pub fn driver_object<I: ?Sized + 'static>(
    who: &str,
    name: &'static str,
    root: impl FnOnce(usize) -> alloc::boxed::Box<dyn k42_guest_lib::cobj::Root<I>>,
) -> Option<(
    k42_guest_lib::cobj::CoManager<ServerCpus>,
    k42_guest_lib::cobj::CoRef<I>,
)> {
    use k42_guest_lib::cobj::Cpus;
    let cpus = ServerCpus::new();
    let count = cpus.count();
    let cos = k42_guest_lib::cobj::CoManager::new(cpus, 4);
    match cos.create(name, root(count)) {
        Ok(object) => Some((cos, object)),
        Err(e) => {
            k42_rt::println!("{who}: cannot create the {name} object: {e:?}");
            None
        }
    }
}

/// Starts the console server, a driver for each disk ([`start_block_drivers`]), for an
/// entropy device ([`start_entropy_driver`]) and for a second console
/// ([`start_console_port_driver`]), then the file server (which prints through the console and names the disks in `/dev`): what an init that
/// runs Linux programs needs. `who` names the caller in the message a failure prints; returns
/// the exit status to end with then.
pub fn start_console_and_file_servers(who: &str) -> Result<(), i64> {
    if let Err(e) = sys::spawn("/bin/console", 0, k42_rt::kabi::SpawnFlags::CONSOLE) {
        let _ = sys::console_write(who.as_bytes());
        let _ = sys::console_write(b": cannot start the console server\n");
        return Err(e as i64);
    }
    start_block_drivers(who);
    start_entropy_driver(who);
    start_console_port_driver(who);
    start_file_server().map_err(|why| {
        k42_rt::println!("{who}: {why}");
        1
    })
}

/// Starts a `blkd` for each virtio-blk disk the kernel knows (none when the caller lacks the
/// device right); returns how many serve. `who` names the caller in what it prints.
pub fn start_block_drivers(who: &str) -> usize {
    let block = k42_guest_lib::virtio::DEVICE_ID_BLOCK;
    (0..)
        .map_while(|n| {
            devmem::nth_device(who, "virtio-blk", block, n)
                .ok()
                .map(|_| n)
        })
        .filter(|&n| start_driver(who, "/bin/blkd", n as u64, &alloc::format!("blk{n}")))
        .count()
}

/// Starts `rngd` if the kernel knows a virtio-rng device (and the caller holds the device
/// right), so `getrandom` and `/dev/urandom` get its bytes; returns whether it serves.
pub fn start_entropy_driver(who: &str) -> bool {
    let rng = k42_guest_lib::virtio::DEVICE_ID_RNG;
    devmem::nth_device(who, "virtio-rng", rng, 0).is_ok()
        && start_driver(who, "/bin/rngd", 0, "random")
}

/// Starts `hvcd` if the kernel knows a virtio-console device (and the caller holds the device
/// right), so Linux programs get `/dev/hvc0`; returns whether it serves.
pub fn start_console_port_driver(who: &str) -> bool {
    let console = k42_guest_lib::virtio::DEVICE_ID_CONSOLE;
    devmem::nth_device(who, "virtio-console", console, 0).is_ok()
        && start_driver(who, "/bin/hvcd", 0, "hvc0")
}

/// Starts the driver `program` with argument `n` and the device right, and waits until it
/// serves `name` or has exited (having said why); returns whether it serves.
fn start_driver(who: &str, program: &str, n: u64, name: &str) -> bool {
    let pid = match sys::spawn(program, n, k42_rt::kabi::SpawnFlags::DEVICES) {
        Ok(pid) => pid,
        Err(e) => {
            k42_rt::println!("{who}: cannot start {program} {n}: {e:?}");
            return false;
        }
    };
    let mut exited = false;
    let up = wait_until(1000, 30_000, || {
        exited = sys::wait_no_hang(pid).is_ok();
        exited || sys::ppc_lookup(name).is_ok()
    });
    if !up {
        k42_rt::println!("{who}: {program} {n} did not start serving {name}");
    }
    up && !exited
}

/// Starts the file-system server `/bin/fsd` and waits (up to 120 s: it unpacks the whole
/// initramfs first, which is slow on a loaded machine) until it serves.
pub fn start_file_server() -> Result<(), &'static str> {
    sys::spawn("/bin/fsd", 0, 0).map_err(|_| "cannot start the file server")?;
    let name = k42_guest_lib::fs::server::SERVER_NAME;
    if wait_until(1000, 120_000, || sys::ppc_lookup(name).is_ok()) {
        Ok(())
    } else {
        Err("the file server did not start serving")
    }
}

/// Longest pause between two checks of [`wait_until`].
const MAX_POLL_US: u64 = 50_000;

/// Blocks until `done()` holds (at most `limit_ms`), checking after `poll_us` microseconds and
/// then twice as long each time, up to 50 ms: a waiter that polls at a fixed short interval
/// takes the CPU from the very process it waits for (each wake-up costs a timer interrupt and
/// kernel entries), which made a server start five times slower on one vCPU.
pub fn wait_until(poll_us: u64, limit_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = k42_rt::now_ns() + limit_ms * 1_000_000;
    let mut pause_us = poll_us.max(1);
    while !done() {
        if k42_rt::now_ns() > end {
            return false;
        }
        sys::block(k42_rt::now_ns() + pause_us * 1000);
        pause_us = (pause_us * 2).min(MAX_POLL_US.max(poll_us));
    }
    true
}
