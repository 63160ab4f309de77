//! The first process (`init=/bin/init`): starts the console server, then runs the user-level
//! checks as child processes and exits with 0 only if every one passed. Argument (`k42.arg=`):
//! calls per dispatcher for the key-value clients (default 200).
#![no_std]
#![no_main]

use k42_rt::kabi::SpawnFlags;
use k42_rt::{println, sys};

k42_rt::entry!(main);

fn run(path: &str, arg: u64, flags: u64, want: i64) -> bool {
    match sys::spawn(path, arg, flags).and_then(sys::wait) {
        Ok(status) if status == want => true,
        Ok(status) => {
            println!("init: {path} exited with {status}, expected {want}");
            false
        }
        Err(e) => {
            println!("init: {path}: {e:?}");
            false
        }
    }
}

fn start_file_server() -> bool {
    match k42_programs::start_file_server() {
        Ok(()) => true,
        Err(why) => {
            println!("init: {why}");
            false
        }
    }
}

fn main(arg: u64) -> i64 {
    if let Err(e) = sys::spawn("/bin/console", 0, SpawnFlags::CONSOLE) {
        let _ = sys::console_write(b"init: cannot start the console server\n");
        return e as i64;
    }
    let mut ok = true;
    ok &= run("/bin/hello", 0, 0, 0);
    // A faulting program is ended with SIGSEGV's status; everything else carries on.
    ok &= run("/bin/fault", 0, 0, 128 + 11);
    // The file-system server, which Linux programs' files go to.
    ok &= start_file_server();
    // Two processes sharing a CPU keep their own x87/SSE registers.
    let fpu: [_; 2] = [1, 2].map(|seed| sys::spawn("/bin/fpu", seed, 0));
    for child in fpu {
        match child.and_then(sys::wait) {
            Ok(0) => {}
            other => {
                println!("init: fpu: {other:?}");
                ok = false;
            }
        }
    }
    // A thread whose call finds a server busy is parked by upcall; its dispatcher runs on.
    ok &= run("/bin/upcall", 0, 0, 0);
    // A static musl program through the Linux personality.
    ok &= run("/bin/linux-hello", 0, k42_rt::kabi::SpawnFlags::LINUX, 0);
    // Files, directories, pipes and devices through the personality and the file server.
    ok &= run("/bin/linux-files", 0, k42_rt::kabi::SpawnFlags::LINUX, 0);
    // File windows: a lone opener works in place; a second open swaps the file to the server.
    ok &= run("/bin/linux-windows", 0, k42_rt::kabi::SpawnFlags::LINUX, 0);
    // Linux processes: fork, exec, wait4, signals, SIGSEGV from a fault, the process limit.
    ok &= run("/bin/linux-procs", 0, k42_rt::kabi::SpawnFlags::LINUX, 0);
    // System-call sites rewritten into calls, the file unchanged (or none, when switched off).
    ok &= run("/bin/linux-rewrite", 0, k42_rt::kabi::SpawnFlags::LINUX, 0);
    // A Rust program with the standard library: threads, Mutex, Condvar, channels, TLS.
    ok &= run(
        "/bin/linux-rust-threads",
        0,
        k42_rt::kabi::SpawnFlags::LINUX,
        0,
    );
    // The same, for directories, pipes, signals, mmap, clocks, getrandom, uname, ioctl, poll.
    ok &= run("/bin/linux-rust-sys", 0, k42_rt::kabi::SpawnFlags::LINUX, 0);
    // User-level threads on a dispatcher per CPU.
    ok &= run("/bin/threads", 0, 0, 0);
    // Copy-on-write fork, wait for any child, the process limit.
    ok &= run("/bin/fork", 0, 0, 0);
    // TLB shoot-down: a fork and an unmap reach the process's other dispatchers.
    ok &= run("/bin/tlb", 0, 0, 0);
    // Priority classes and proportional share, set by dispatcher_schedule.
    ok &= run("/bin/sched", 0, 0, 0);
    // User-level threads of one dispatcher preempt each other at kernel ticks.
    ok &= run("/bin/preempt", 0, 0, 0);
    // Page-fault upcalls: a thread waiting for a pager's page does not stop its dispatcher.
    ok &= run("/bin/pager", 0, 0, 0);
    match sys::spawn("/bin/kv", 0, 0) {
        Ok(_) => {
            let a = sys::spawn("/bin/kvclient", arg, 0);
            let b = sys::spawn("/bin/kvclient", arg, 0);
            for client in [a, b] {
                match client.and_then(sys::wait) {
                    Ok(0) => {}
                    other => {
                        println!("init: kvclient: {other:?}");
                        ok = false;
                    }
                }
            }
            // Nested PPC: a server whose handler calls kv.
            ok &= run("/bin/nested", 0, 0, 0);
        }
        Err(e) => {
            println!("init: cannot start kv: {e:?}");
            ok = false;
        }
    }
    if ok {
        println!("init: all user-level checks passed");
        0
    } else {
        println!("init: some user-level checks FAILED");
        1
    }
}
