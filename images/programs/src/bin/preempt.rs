//! Checks that user-level threads of one dispatcher preempt each other
//! (`K42Platform::with_preemption`: kernel ticks, interrupt upcalls, `uthread::preempt`):
//!
//! 1. A thread that spins until another thread of its dispatcher sets a flag finishes: without
//!    preemption the other one never ran.
//! 2. Two spinning threads with shares 100 and 300 get about 1:3 of the iterations.
//! 3. A thread inside a `NoPreempt` section is not preempted for 60 ms; the thread waiting for
//!    the CPU runs once the section ends.
//! 4. A thread preempted with data in the dispatcher's PPC buffer finds it intact afterwards,
//!    though the other thread wrote its own there meanwhile.
//!
//! Every wait is bounded, so a missing preemption fails a check instead of hanging. Exits 0 when
//! all hold.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use k42_guest_lib::uthread::{self, k42::K42Platform, Builder, NoPreempt, Runtime};
use k42_rt::println;
use spin::Once;

k42_rt::entry!(main);

static RUNTIME: Once<Runtime<K42Platform>> = Once::new();

/// How long a check waits for what only preemption brings (ticks come every 10 ms).
const PATIENCE_NS: u64 = 3_000_000_000;

/// Spins until `done` holds or `PATIENCE_NS` pass, never yielding; returns whether it held.
fn spin_until(done: impl Fn() -> bool) -> bool {
    let give_up = k42_rt::now_ns() + PATIENCE_NS;
    while !done() {
        if k42_rt::now_ns() > give_up {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Check 1: a spin-wait on a flag that only another thread of this dispatcher sets.
fn spin_wait_ends() -> bool {
    static FLAG: AtomicBool = AtomicBool::new(false);
    static SPINNING: AtomicBool = AtomicBool::new(false);
    let waiter = uthread::spawn(|| {
        SPINNING.store(true, Ordering::Release);
        spin_until(|| FLAG.load(Ordering::Acquire))
    });
    let setter = uthread::spawn(|| {
        // Runs only once the waiter spins: this thread started after it, on its CPU.
        let waiter_was_spinning = SPINNING.load(Ordering::Acquire);
        FLAG.store(true, Ordering::Release);
        waiter_was_spinning
    });
    let (seen, setter_after_waiter) = (waiter.join(), setter.join());
    if !seen {
        println!("preempt: a thread spun 3 s on a flag another thread of its dispatcher never got to set");
    }
    seen && setter_after_waiter
}

/// Check 2: two spinning threads share the CPU by their shares; returns their iterations.
fn shares() -> (u64, u64) {
    static STOP: AtomicBool = AtomicBool::new(false);
    let spinner = |share: u32| {
        Builder::new().share(share).spawn(move || {
            // Bounded: without preemption the sleeper that sets STOP would never run.
            let give_up = k42_rt::now_ns() + PATIENCE_NS;
            let mut iterations = 0u64;
            while !STOP.load(Ordering::Relaxed) {
                iterations += 1;
                if iterations.is_multiple_of(1024) && k42_rt::now_ns() > give_up {
                    break;
                }
                core::hint::spin_loop();
            }
            iterations
        })
    };
    let (small, large) = (spinner(100), spinner(300));
    // This thread sleeps meanwhile (and so takes no turns from them).
    uthread::sleep_for(core::time::Duration::from_millis(600));
    STOP.store(true, Ordering::Relaxed);
    (small.join(), large.join())
}

/// Check 3: no preemption inside a `NoPreempt` section, a deferred one right after it.
fn sections_defer() -> bool {
    static OTHER_RAN: AtomicU64 = AtomicU64::new(0);
    static IN_SECTION: AtomicBool = AtomicBool::new(false);
    let holder = uthread::spawn(|| {
        let ran_inside = {
            let _section = NoPreempt::enter();
            IN_SECTION.store(true, Ordering::Release);
            let before = OTHER_RAN.load(Ordering::Acquire);
            let end = k42_rt::now_ns() + 60_000_000;
            while k42_rt::now_ns() < end {
                core::hint::spin_loop();
            }
            OTHER_RAN.load(Ordering::Acquire) - before
        };
        // Preempted as the section ended: the other thread has had its turn by now.
        let after = spin_until(|| OTHER_RAN.load(Ordering::Acquire) > 0);
        (ran_inside, after)
    });
    let other = uthread::spawn(|| {
        // Spins (never yields) until the holder is inside, then counts its turn.
        spin_until(|| IN_SECTION.load(Ordering::Acquire));
        OTHER_RAN.fetch_add(1, Ordering::AcqRel);
    });
    let (ran_inside, after) = holder.join();
    other.join();
    if ran_inside != 0 || !after {
        println!(
            "preempt: the other thread ran {ran_inside} times inside a NoPreempt section; ran after it: {after}"
        );
    }
    ran_inside == 0 && after
}

/// Check 4: the PPC buffer a preempted thread filled is back when it resumes.
fn ppc_buffer_kept() -> bool {
    static TURN: AtomicU64 = AtomicU64::new(0);
    let fill_and_check = |pattern: u8| {
        uthread::spawn(move || {
            let buffer = k42_programs::devmem::own_ppc_buffer();
            buffer.fill(pattern);
            let mine = TURN.fetch_add(1, Ordering::AcqRel);
            // Both threads fill before either checks: each spins until the other has.
            let both = spin_until(|| TURN.load(Ordering::Acquire) >= 2);
            let intact = k42_programs::devmem::own_ppc_buffer()
                .iter()
                .all(|b| *b == pattern);
            if !intact {
                println!(
                    "preempt: thread {mine}'s PPC buffer was overwritten while it was preempted"
                );
            }
            both && intact
        })
    };
    let (a, b) = (fill_and_check(0x5a), fill_and_check(0xa5));
    a.join() & b.join()
}

fn main(_arg: u64) -> i64 {
    let rt = RUNTIME.call_once(|| Runtime::new(K42Platform::new(1).with_preemption()));
    k42_rt::set_dispatcher_lookup(|| uthread::current_dispatcher().unwrap_or(0));
    let main = rt.spawn(|| {
        let spin_wait = spin_wait_ends();
        let (small, large) = shares();
        let sections = sections_defer();
        let ppc_buffer = ppc_buffer_kept();
        RUNTIME.get().expect("set").shutdown();
        (spin_wait, small, large, sections, ppc_buffer)
    });
    rt.run_dispatcher(0);
    let Ok((spin_wait, small, large, sections, ppc_buffer)) = main.try_join() else {
        println!("preempt: FAILED (the checks did not finish)");
        return 1;
    };
    let ratio_x10 = large * 10 / small.max(1);
    let stats = rt.stats(0);
    println!(
        "preempt: {} preemptions, {} interrupt upcalls; spinning threads with shares 100 and 300 ran {small} and {large} iterations (ratio {}.{})",
        stats.preemptions,
        K42Platform::upcall_counts().interrupts,
        ratio_x10 / 10,
        ratio_x10 % 10
    );
    // Stride scheduling over ~60 turns of 10 ms: 3.0 expected; a wide band for noisy hosts.
    let shares_ok = (15..=60).contains(&ratio_x10);
    if !shares_ok {
        println!("preempt: the shares 100:300 gave a ratio outside 1.5-6");
    }
    if spin_wait && shares_ok && sections && ppc_buffer && stats.preemptions > 0 {
        println!("preempt: all checks passed");
        0
    } else {
        println!("preempt: FAILED");
        1
    }
}
