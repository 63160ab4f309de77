//! Checks the kernel's dispatcher scheduling through `dispatcher_schedule`: two dispatchers of
//! this process spin on one CPU. With the second in a less urgent class it gets no turn while
//! the first is runnable; in the same class with three times the tickets it gets about three
//! times the turns (stride scheduling). Both run the same loop, whose iterations measure their
//! shares; exits 0 when both hold.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use k42_rt::kabi::DEFAULT_CLASS;
use k42_rt::{println, sys};

k42_rt::entry!(main);

/// Iterations of the second dispatcher's loop.
static OTHER: AtomicU64 = AtomicU64::new(0);

extern "C" fn spinner(_: u64) -> ! {
    loop {
        OTHER.fetch_add(1, Ordering::Relaxed);
    }
}

/// Iterations of this dispatcher's loop (the same loop as the other's).
static MINE: AtomicU64 = AtomicU64::new(0);

/// Spins for `ms` milliseconds without giving up the CPU, in the other dispatcher's loop (the
/// clock is read once every 1024 iterations); returns its iterations.
fn spin_for(ms: u64) -> u64 {
    let start = MINE.load(Ordering::Relaxed);
    let end = k42_rt::now_ns() + ms * 1_000_000;
    while k42_rt::now_ns() < end {
        for _ in 0..1024 {
            MINE.fetch_add(1, Ordering::Relaxed);
        }
    }
    MINE.load(Ordering::Relaxed) - start
}

fn main(_arg: u64) -> i64 {
    if let Err(e) = k42_programs::start_dispatcher(k42_rt::current_cpu(), spinner, 0) {
        println!("sched: cannot start the second dispatcher: {e:?}");
        return 1;
    }
    // A less urgent class: from its next turn on, it waits while this one runs.
    if let Err(e) = sys::dispatcher_schedule(1, DEFAULT_CLASS + 1, 100) {
        println!("sched: dispatcher_schedule: {e:?}");
        return 1;
    }
    spin_for(50);
    let before = OTHER.load(Ordering::Relaxed);
    spin_for(150);
    let starved = OTHER.load(Ordering::Relaxed) - before;
    // The same class, three times the tickets.
    let same_class = sys::dispatcher_schedule(1, DEFAULT_CLASS, 300)
        .and_then(|()| sys::dispatcher_schedule(0, DEFAULT_CLASS, 100));
    if let Err(e) = same_class {
        println!("sched: dispatcher_schedule: {e:?}");
        return 1;
    }
    // Both run the same loop, so their iteration counts are in the ratio of their shares.
    spin_for(50);
    let start = OTHER.load(Ordering::Relaxed);
    let start_ns = k42_rt::now_ns();
    let mine = spin_for(400);
    let elapsed_ms = (k42_rt::now_ns() - start_ns) / 1_000_000;
    let others = OTHER.load(Ordering::Relaxed) - start;
    let ratio_x10 = others * 10 / mine.max(1);
    println!(
        "sched: less urgent class: {starved} iterations in 150 ms of the other's spinning; \
         same class, 3x the tickets: {ratio_x10} tenths of the other's share over {elapsed_ms} ms"
    );
    let ok = starved == 0 && (15..=60).contains(&ratio_x10);
    if ok {
        println!("sched: all checks passed");
        0
    } else {
        println!("sched: some checks FAILED");
        1
    }
}
