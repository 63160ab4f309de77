//! Checks TLB shoot-down: a change to a process's memory reaches the other CPUs that run it.
//!
//! 1. Fork while another dispatcher of the process (on another CPU when there is one) keeps
//!    writing a page: the fork makes the page copy-on-write, so the writer's next write must
//!    fault and get its own copy; the child must keep seeing the value it was forked with.
//!    Had the writer's CPU kept its writable translation, its writes would land in the frame
//!    the child shares.
//! 2. In a second process (`/bin/tlb` with argument 1): unmap a page while another dispatcher
//!    reads it in a loop. Its next read must fault, which ends that process (status 139); had
//!    its CPU kept the translation, its reads would go on and the process reports the failure
//!    and exits 1.
//!
//! Prints what it saw and exits 0 when both hold.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use k42_rt::kabi::{Info, Prot};
use k42_rt::sys::{self, Forked};
use k42_rt::{now_ns, println};

k42_rt::entry!(main);

/// The spawn argument that makes this program the unmap check's process.
const UNMAP_CHECK: u64 = 1;
/// The page the unmap check reads, mapped on its own.
const AREA: u64 = 0x0000_0060_0000_0000;
/// What the unmap check's page holds.
const MAGIC: u64 = 0x7e57_7e57_7e57_7e57;
/// A status the failing checks exit with (the fault's is 139).
const FAILED: i64 = 1;

/// The page the fork check's writer writes (a page of its own, in the program's data).
#[repr(align(4096))]
struct Page(AtomicU64);
static WRITTEN: Page = Page(AtomicU64::new(0));
/// Loop turns of the other dispatcher.
static TURNS: AtomicU64 = AtomicU64::new(0);
/// Tells the fork check's writer to stop.
static STOP: AtomicBool = AtomicBool::new(false);

fn main(arg: u64) -> i64 {
    if arg == UNMAP_CHECK {
        return unmap_check();
    }
    let forked = fork_check();
    let shoot_downs = sys::info(Info::RemoteShootDowns);
    let status = match sys::spawn("/bin/tlb", UNMAP_CHECK, 0).and_then(sys::wait) {
        Ok(status) => status,
        Err(e) => {
            println!("tlb: cannot run the unmap check: {e:?}");
            return FAILED;
        }
    };
    if status != 139 {
        println!("tlb: FAILED: the unmap check ended with {status}, not by its reader's fault");
        return FAILED;
    }
    println!(
        "tlb: an unmap ended the reader on another dispatcher at its next read \
         (remote shoot-downs: {})",
        sys::info(Info::RemoteShootDowns) - shoot_downs
    );
    if forked {
        0
    } else {
        FAILED
    }
}

/// Starts `body` on a second dispatcher: on another CPU when there is one.
fn start_other(body: extern "C" fn(u64) -> !) -> bool {
    let cpus = sys::info(Info::Cpus) as usize;
    let cpu = (k42_rt::current_cpu() + 1) % cpus.max(1);
    if let Err(e) = k42_programs::start_dispatcher(cpu, body, 0) {
        println!("tlb: cannot start a second dispatcher: {e:?}");
        return false;
    }
    true
}

/// How long [`wait_for_turns`] waits before it gives up: a guard against hanging, not a
/// measure (a 1-CPU guest among parallel test VMs once took over a second to run the other
/// dispatcher).
const TURNS_GIVE_UP_NS: u64 = 10_000_000_000;

/// Waits (blocking, so a second dispatcher on this CPU gets it) until the other dispatcher
/// has gone round its loop `turns` more times; false after [`TURNS_GIVE_UP_NS`].
fn wait_for_turns(turns: u64) -> bool {
    let target = TURNS.load(Ordering::Acquire) + turns;
    let end = now_ns() + TURNS_GIVE_UP_NS;
    while TURNS.load(Ordering::Acquire) < target {
        if now_ns() > end {
            return false;
        }
        sys::block(now_ns() + 1_000_000);
    }
    true
}

extern "C" fn writer(_: u64) -> ! {
    while !STOP.load(Ordering::Acquire) {
        WRITTEN.0.fetch_add(1, Ordering::AcqRel);
        TURNS.fetch_add(1, Ordering::AcqRel);
    }
    loop {
        sys::block(0);
    }
}

/// Check 1; true when it holds.
fn fork_check() -> bool {
    if !start_other(writer) || !wait_for_turns(1000) {
        println!("tlb: FAILED: the writer did not run");
        return false;
    }
    match sys::fork() {
        Ok(Forked::Child) => {
            // Only this dispatcher was copied: nothing in this process writes the page now.
            let first = WRITTEN.0.load(Ordering::Acquire);
            let end = now_ns() + 30_000_000;
            while now_ns() < end {
                sys::block(now_ns() + 2_000_000);
                let now = WRITTEN.0.load(Ordering::Acquire);
                if now != first {
                    println!("tlb: FAILED: the child's copy changed from {first} to {now}");
                    sys::exit(FAILED);
                }
            }
            sys::exit(0);
        }
        Ok(Forked::Parent(child)) => {
            let kept = sys::wait(child) == Ok(0);
            let moved_on = wait_for_turns(1000);
            STOP.store(true, Ordering::Release);
            if kept && moved_on {
                println!(
                    "tlb: a fork kept the child's copy while another dispatcher wrote the page"
                );
            } else if !moved_on {
                println!("tlb: FAILED: the writer stopped after the fork");
            }
            kept && moved_on
        }
        Err(e) => {
            println!("tlb: FAILED: fork with two dispatchers: {e:?}");
            false
        }
    }
}

extern "C" fn reader(_: u64) -> ! {
    loop {
        // SAFETY: AREA is mapped (and holds MAGIC) until the other dispatcher unmaps it; a
        // read after that faults, which ends the process: what check 2 expects.
        let value = unsafe { core::ptr::read_volatile(AREA as *const u64) };
        if value != MAGIC {
            println!("tlb: FAILED: the reader saw {value:#x}");
            sys::exit(FAILED);
        }
        TURNS.fetch_add(1, Ordering::AcqRel);
    }
}

/// Check 2, in a process of its own: ends by its reader's fault when it holds.
fn unmap_check() -> i64 {
    if let Err(e) = sys::map(AREA, 4096, Prot::READ | Prot::WRITE) {
        println!("tlb: cannot map the page: {e:?}");
        return FAILED;
    }
    // SAFETY: just mapped, read-write, and nothing else uses it yet.
    unsafe { core::ptr::write_volatile(AREA as *mut u64, MAGIC) };
    if !start_other(reader) || !wait_for_turns(1000) {
        println!("tlb: FAILED: the reader did not run");
        return FAILED;
    }
    if let Err(e) = sys::unmap(AREA, 4096) {
        println!("tlb: cannot unmap the page: {e:?}");
        return FAILED;
    }
    // From here the reader's next read faults. One turn may be under way: allow it.
    let after = TURNS.load(Ordering::Acquire);
    let end = now_ns() + 500_000_000;
    while now_ns() < end {
        sys::block(now_ns() + 5_000_000);
        let turns = TURNS.load(Ordering::Acquire);
        if turns > after + 1 {
            println!(
                "tlb: FAILED: the reader went on reading the unmapped page ({} more reads)",
                turns - after
            );
            return FAILED;
        }
    }
    println!("tlb: FAILED: the reader neither faulted nor read");
    FAILED
}
