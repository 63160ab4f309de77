//! Upcalls (K42): a thread whose PPC call finds the server busy does not cost its dispatcher
//! the CPU. The kernel upcalls the dispatcher, the runtime parks that thread and runs another;
//! when the server frees, a soft interrupt (taken by an interrupt upcall) lets the parked
//! thread re-issue its call, with its PPC buffer contents intact.
//!
//! Run with argument 0 (the check) it starts itself with argument 1 (a server whose calls spin
//! for `a0` ms and echo the first word of the caller's buffer), then runs two dispatchers on one
//! CPU: a caller and a busy "other" thread on each. Exits 0 if both calls returned the right
//! values and an other thread ran while a caller was blocked. Finally the server exits inside
//! a call, whose caller must get `NotFound` rather than wait forever.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use k42_guest_lib::uthread::k42::K42Platform;
use k42_guest_lib::uthread::{self, Builder, Runtime};
use k42_rt::kabi::{self, Prot};
use k42_rt::println;
use k42_rt::sys::{self, PpcReply};
use spin::Once;

k42_rt::entry!(main);

const SERVER_ROLE: u64 = 1;
const SERVER_NAME: &str = "upcall.slow";
/// How long each call keeps the server busy: several of the kernel's 10 ms quanta.
const CALL_MS: u64 = 40;
/// A call with this `a0` makes the server exit inside the call (its caller must get an error).
const EXIT_IN_CALL: u64 = 0xdead;
const SERVER_EXIT_STATUS: i64 = 3;
const ENTRY_STACK: u64 = 0x0000_2000_0000_0000;
const ENTRY_STACK_SIZE: u64 = 64 * 1024;

static RUNTIME: Once<Runtime<K42Platform>> = Once::new();
static CALLS_DONE: AtomicU64 = AtomicU64::new(0);
static FIRST_CALL_STARTED: AtomicU64 = AtomicU64::new(0);
static TURNS_WHILE_BLOCKED: AtomicU64 = AtomicU64::new(0);

extern "C" fn serve(_client: u64, ms: u64, _a1: u64, _a2: u64, _a3: u64, cpu: u64) -> PpcReply {
    if ms == EXIT_IN_CALL {
        sys::exit(SERVER_EXIT_STATUS);
    }
    let end = sys::now_ns() + ms.min(1000) * 1_000_000;
    while sys::now_ns() < end {
        core::hint::spin_loop();
    }
    let window = kabi::ppc_window(cpu as usize) as *const u64;
    // SAFETY: the kernel maps the caller's PPC buffer at this CPU's window for the call.
    let marker = unsafe { core::ptr::read_volatile(window) };
    PpcReply {
        r0: ms + 1,
        r1: marker,
    }
}

fn server() -> i64 {
    if let Err(e) = sys::ppc_serve(SERVER_NAME, serve) {
        println!("upcall server: export failed: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}

fn write_buffer_marker(marker: u64) {
    let buffer = sys::ppc_buffer(k42_rt::current_dispatcher()) as *mut u64;
    // SAFETY: the PPC buffer of this dispatcher's CPU is mapped; its threads run one at a time.
    unsafe { core::ptr::write_volatile(buffer, marker) };
}

/// A caller: writes its marker into the PPC buffer and calls the slow server.
fn caller(server: u64, marker: u64) -> bool {
    write_buffer_marker(marker);
    FIRST_CALL_STARTED.store(1, Ordering::Release);
    let reply = sys::ppc_call(server, [CALL_MS, 0, 0, 0]);
    CALLS_DONE.fetch_add(1, Ordering::AcqRel);
    if reply != Ok((CALL_MS + 1, marker)) {
        println!("upcall: FAILED: call with marker {marker:#x} returned {reply:?}");
        return false;
    }
    true
}

/// Another thread of the same dispatcher: keeps it busy, scribbles on the PPC buffer (as a
/// thread making its own calls would) and counts its turns while a caller is blocked.
fn other(marker: u64) {
    while CALLS_DONE.load(Ordering::Acquire) < 2 {
        write_buffer_marker(marker);
        if K42Platform::upcall_counts().blocked > 0 {
            TURNS_WHILE_BLOCKED.fetch_add(1, Ordering::Relaxed);
        }
        uthread::yield_now();
    }
}

extern "C" fn dispatcher_entry(index: u64) -> ! {
    if let Some(rt) = RUNTIME.get() {
        rt.run_dispatcher(index as usize);
    }
    loop {
        sys::block(0);
    }
}

fn main(arg: u64) -> i64 {
    if arg == SERVER_ROLE {
        return server();
    }
    let server = match sys::spawn("/bin/upcall", SERVER_ROLE, 0)
        .and_then(|_| k42_rt::lookup_retrying(SERVER_NAME))
    {
        Ok(pid) => pid,
        Err(e) => {
            println!("upcall: cannot start the server: {e:?}");
            return 1;
        }
    };
    let cpu = k42_rt::current_cpu();
    let rt = RUNTIME.call_once(|| Runtime::new(K42Platform::new(2).with_upcalls()));
    k42_rt::set_dispatcher_lookup(|| uthread::current_dispatcher().unwrap_or(0));
    // The second dispatcher shares the first one's CPU, so one of them finds the server busy.
    let created =
        sys::map(ENTRY_STACK, ENTRY_STACK_SIZE, Prot::READ | Prot::WRITE).and_then(|_| {
            sys::dispatcher_create(cpu, dispatcher_entry, ENTRY_STACK + ENTRY_STACK_SIZE - 8, 1)
        });
    if created != Ok(1) {
        println!("upcall: second dispatcher: {created:?}");
        return 1;
    }
    let main = rt.spawn(move || {
        let others: [_; 2] = [0usize, 1].map(|d| {
            Builder::new()
                .dispatcher(d)
                .priority(uthread::PRIORITIES as u8 - 1)
                .spawn(move || other(0xbad0 + d as u64))
        });
        let first = Builder::new()
            .dispatcher(0)
            .priority(0)
            .spawn(move || caller(server, 0x1111));
        let second = Builder::new().dispatcher(1).priority(0).spawn(move || {
            while FIRST_CALL_STARTED.load(Ordering::Acquire) == 0 {
                uthread::yield_now();
            }
            caller(server, 0x2222)
        });
        let ok = first.join() & second.join();
        for o in others {
            o.join();
        }
        RUNTIME.get().expect("set").shutdown();
        ok
    });
    rt.run_dispatcher(0);
    let ok = main.try_join().is_ok_and(|ok| ok);
    let counts = K42Platform::upcall_counts();
    let turns = TURNS_WHILE_BLOCKED.load(Ordering::Relaxed);
    // A server that dies inside a call: the caller gets an error instead of waiting forever.
    let last = sys::ppc_call(server, [EXIT_IN_CALL, 0, 0, 0]);
    let server_status = sys::wait(server);
    println!(
        "upcall: {} blocked and {} interrupt upcalls; other threads ran {} turns while a caller was blocked; server exited {:?} inside a call, which returned {:?}",
        counts.blocked, counts.interrupts, turns, server_status, last
    );
    let server_died_cleanly =
        server_status == Ok(SERVER_EXIT_STATUS) && last == Err(kabi::Error::NotFound);
    if ok && counts.blocked > 0 && turns > 0 && server_died_cleanly {
        println!("upcall: all checks passed");
        0
    } else {
        println!("upcall: FAILED");
        1
    }
}
