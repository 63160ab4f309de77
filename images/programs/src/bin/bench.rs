//! User-level benchmarks, run as init (`init=/bin/bench`): an empty K42 system call, a PPC
//! round trip to a server process, and a user-level thread switch; then static Linux programs
//! that time themselves (getpid, pipes, fork+exec+wait, page faults), and busybox `sh` running
//! a 1000-line script. Prints `metric` lines.
#![no_std]
#![no_main]

extern crate alloc;

use k42_guest_lib::uthread::k42::K42Platform;
use k42_guest_lib::uthread::{self, Runtime};
use k42_programs::kv;
use k42_rt::kabi::{Info, SpawnFlags};
use k42_rt::{println, sys};

k42_rt::entry!(main);

const ROUNDS: u64 = 2000;
const SWITCH_ROUNDS: u64 = 20_000;

fn ns_since(start: u64) -> u64 {
    let khz = sys::info(Info::TscKhz).max(1);
    ((sys::rdtsc() - start) as u128 * 1_000_000 / khz as u128) as u64
}

fn main(_arg: u64) -> i64 {
    // Empty system call.
    for _ in 0..100 {
        sys::null();
    }
    let entries = sys::info(Info::KernelEntries);
    let start = sys::rdtsc();
    for _ in 0..ROUNDS {
        sys::null();
    }
    let ns = ns_since(start) / ROUNDS;
    let entered = sys::info(Info::KernelEntries) - entries;
    println!("metric null_syscall_ns {ns}");
    println!(
        "metric null_syscall_entries_per_call {}",
        entered.saturating_sub(1) / ROUNDS
    );

    // PPC round trip to another process.
    if let Err(e) = sys::spawn("/bin/kv", 0, 0) {
        println!("bench: cannot start kv: {e:?}");
        return 1;
    }
    let Ok(server) = k42_rt::lookup_retrying("kv") else {
        println!("bench: kv never exported itself");
        return 1;
    };
    for _ in 0..100 {
        let _ = sys::ppc_call(server, [kv::UNKNOWN, 0, 0, 0]);
    }
    let start = sys::rdtsc();
    for _ in 0..ROUNDS {
        if sys::ppc_call(server, [kv::UNKNOWN, 0, 0, 0]) != Ok((kv::UNKNOWN, 0)) {
            println!("bench: a PPC call failed");
            return 1;
        }
    }
    println!("metric ppc_roundtrip_ns {}", ns_since(start) / ROUNDS);

    // User-level thread switch: two threads yielding to each other on one dispatcher.
    let rt = Runtime::new(K42Platform::new(1));
    let worker = || {
        for _ in 0..SWITCH_ROUNDS {
            uthread::yield_now();
        }
    };
    rt.spawn(worker);
    rt.spawn(worker);
    let before = rt.stats(0).switches;
    let start = sys::rdtsc();
    rt.shutdown();
    rt.run_dispatcher(0);
    let switches = (rt.stats(0).switches - before).max(1);
    println!("metric uthread_switch_ns {}", ns_since(start) / switches);

    // Linux getpid through the personality (the program prints its own metric line).
    let flags = SpawnFlags::LINUX | SpawnFlags::CONSOLE;
    if let Err(e) = sys::spawn("/bin/linux-getpid", 0, flags).and_then(sys::wait) {
        println!("bench: linux-getpid: {e:?}");
    }
    // Linux processes need the file server (execve reads the program through it), which
    // prints through the console server.
    if let Err(e) = sys::spawn("/bin/console", 0, SpawnFlags::CONSOLE) {
        println!("bench: cannot start the console server: {e:?}");
        return 1;
    }
    if let Err(e) = k42_programs::start_file_server() {
        println!("bench: {e}");
        return 1;
    }
    match sys::spawn("/bin/linux-procbench", 0, flags).and_then(sys::wait) {
        Ok(0) => {}
        other => println!("bench: linux-procbench: {other:?}"),
    }
    // busybox sh running the 1000-line benchmark script, start to exit.
    let mut scratch = alloc::vec::Vec::new();
    let start = sys::rdtsc();
    match sys::spawn_linux(
        "/bin/busybox",
        &[b"sh", b"/scripts/sh-bench.sh"],
        &mut scratch,
    )
    .and_then(sys::wait)
    {
        Ok(0) => println!("metric linux_sh_script_us {}", ns_since(start) / 1000),
        other => println!("bench: busybox sh /scripts/sh-bench.sh: {other:?}"),
    }
    println!("metric uthread_switches {switches}");
    0
}
