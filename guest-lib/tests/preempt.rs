//! Host tests of preemption in the user-level thread runtime, with real asynchronous
//! interrupts: dispatchers are OS threads, and a ticker thread sends `SIGUSR1` to each
//! dispatcher the runtime asked to tick (and to each one it kicks). The handler runs on the
//! interrupted code's stack, as a K42 interrupt upcall does, and calls `uthread::preempt`.
//!
//! The binary's allocator takes a `NoPreempt` section around the system allocator, as the
//! guest's does: a thread preempted inside `malloc` would otherwise leave its lock held for a
//! scheduler on the same OS thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use k42_guest_lib::uthread::{self, Builder, Mutex, NoPreempt, Platform, Runtime};

struct Guarded;

// SAFETY: forwards to `System`, which upholds the contract; the section changes no memory.
unsafe impl GlobalAlloc for Guarded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _section = NoPreempt::enter();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _section = NoPreempt::enter();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Guarded = Guarded;

/// Interval between ticks.
const TICK: Duration = Duration::from_millis(2);
/// How long a check waits for what only preemption brings.
const PATIENCE: Duration = Duration::from_secs(10);

/// A dispatcher's OS thread, once it runs.
struct Slot {
    thread: OnceLock<(std::thread::Thread, libc::pthread_t)>,
    ticking: AtomicBool,
}

/// Dispatchers as OS threads, interrupted by signals.
struct Preemptive {
    start: Instant,
    slots: Vec<Slot>,
    kicks_of_busy: AtomicU64,
}

impl Platform for Preemptive {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn dispatcher_count(&self) -> usize {
        self.slots.len()
    }

    fn idle(&self, _dispatcher: usize, deadline_ns: Option<u64>) {
        common::park_until(self.now_ns(), deadline_ns);
    }

    fn kick(&self, dispatcher: usize) {
        // Idle or busy: unpark ends an idle; the signal interrupts a running thread.
        if let Some((thread, pthread)) = self.slots[dispatcher].thread.get() {
            thread.unpark();
            self.kicks_of_busy.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the dispatcher's OS thread lives until the test joins it, after the
            // work (and so every kick) is over.
            unsafe { libc::pthread_kill(*pthread, libc::SIGUSR1) };
        }
    }

    fn preemptive(&self) -> bool {
        true
    }

    fn set_ticks(&self, dispatcher: usize, on: bool) {
        self.slots[dispatcher].ticking.store(on, Ordering::Release);
    }
}

extern "C" fn on_tick(_signal: libc::c_int) {
    uthread::preempt();
}

/// Installs the tick handler (once): not deferred while it runs, so a thread switched to from
/// inside a handler can itself be interrupted.
fn install_handler() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: a plain sigaction with a handler that only calls `uthread::preempt`, which
        // the runtime allows wherever an interrupt lands; the struct is zeroed then filled.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_tick as *const () as usize;
            action.sa_flags = libc::SA_NODEFER | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );
        }
    });
}

/// Runs `body` as a user-level thread on a preemptive runtime of `dispatchers` dispatchers
/// with the ticker going; returns its result and the runtime's total preemptions.
fn with_ticks<T: Send + 'static>(
    dispatchers: usize,
    body: impl FnOnce() -> T + Send + 'static,
) -> (T, u64) {
    install_handler();
    let rt = Runtime::new(Preemptive {
        start: Instant::now(),
        slots: (0..dispatchers)
            .map(|_| Slot {
                thread: OnceLock::new(),
                ticking: AtomicBool::new(false),
            })
            .collect(),
        kicks_of_busy: AtomicU64::new(0),
    });
    let (result_tx, result_rx) = mpsc::channel();
    rt.spawn(move || {
        let _ = result_tx.send(body());
    });
    let os_threads: Vec<_> = (0..dispatchers)
        .map(|index| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                let me = unsafe { libc::pthread_self() };
                let _ = rt.platform().slots[index]
                    .thread
                    .set((std::thread::current(), me));
                rt.run_dispatcher(index);
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (rt, stop) = (rt.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(TICK);
                for slot in &rt.platform().slots {
                    if let (true, Some((_, pthread))) =
                        (slot.ticking.load(Ordering::Acquire), slot.thread.get())
                    {
                        // SAFETY: as in `kick`: the thread outlives the ticker.
                        unsafe { libc::pthread_kill(*pthread, libc::SIGUSR1) };
                    }
                }
            }
        })
    };
    let result = result_rx
        .recv_timeout(PATIENCE * 3)
        .expect("the test body finished (a missed preemption would hang it)");
    stop.store(true, Ordering::Release);
    ticker.join().expect("ticker");
    rt.shutdown();
    for t in os_threads {
        t.join().expect("dispatcher thread");
    }
    let preemptions = (0..dispatchers).map(|i| rt.stats(i).preemptions).sum();
    (result, preemptions)
}

/// Spins until `done` holds or [`PATIENCE`] passes, never yielding; returns whether it held.
fn spin_until(done: impl Fn() -> bool) -> bool {
    let give_up = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() > give_up {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

#[test]
fn a_spin_wait_ends_when_the_setter_on_the_same_dispatcher_gets_a_turn() {
    let (seen, preemptions) = with_ticks(1, || {
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let flag = flag.clone();
            uthread::spawn(move || spin_until(|| flag.load(Ordering::Acquire)))
        };
        let setter = uthread::spawn(move || flag.store(true, Ordering::Release));
        setter.join();
        waiter.join()
    });
    assert!(seen, "the setter never ran while the waiter spun");
    assert!(preemptions > 0);
}

#[test]
fn no_preemption_inside_a_section_and_one_right_after_it() {
    let ((ran_inside, ran_after), _) = with_ticks(1, || {
        let other_ran = Arc::new(AtomicU64::new(0));
        let inside = Arc::new(AtomicBool::new(false));
        let holder = {
            let (other_ran, inside) = (other_ran.clone(), inside.clone());
            uthread::spawn(move || {
                let ran_inside = {
                    let _section = NoPreempt::enter();
                    inside.store(true, Ordering::Release);
                    let before = other_ran.load(Ordering::Acquire);
                    // Many ticks long.
                    let end = Instant::now() + TICK * 25;
                    while Instant::now() < end {
                        std::hint::spin_loop();
                    }
                    other_ran.load(Ordering::Acquire) - before
                };
                (
                    ran_inside,
                    spin_until(|| other_ran.load(Ordering::Acquire) > 0),
                )
            })
        };
        let other = uthread::spawn(move || {
            spin_until(|| inside.load(Ordering::Acquire));
            other_ran.fetch_add(1, Ordering::AcqRel);
        });
        let result = holder.join();
        other.join();
        result
    });
    assert_eq!(ran_inside, 0, "preempted inside a NoPreempt section");
    assert!(
        ran_after,
        "the deferred preemption did not come after the section"
    );
}

#[test]
fn preempted_threads_share_a_mutex_allocate_and_migrate_without_losing_counts() {
    const THREADS: u64 = 6;
    const ROUNDS: u64 = 20_000;
    let (total, preemptions) = with_ticks(2, || {
        let counter = Arc::new(Mutex::new(0u64));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let counter = counter.clone();
                Builder::new().dispatcher((t % 2) as usize).spawn(move || {
                    let mut kept = Vec::new();
                    for round in 0..ROUNDS {
                        *counter.lock() += 1;
                        // Allocations and frees: the allocator's section under ticks.
                        kept.push(vec![t as u8; (round % 64) as usize]);
                        if kept.len() > 32 {
                            kept.clear();
                        }
                        if round % 5_000 == 0 {
                            uthread::migrate_to(((t + round / 5_000) % 2) as usize);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join();
        }
        let total = *counter.lock();
        total
    });
    assert_eq!(total, THREADS * ROUNDS);
    // Six threads of 20000 rounds on two dispatchers take several ticks.
    assert!(preemptions > 0, "no thread was preempted");
}
