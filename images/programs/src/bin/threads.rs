//! User-level threads on a dispatcher per CPU (guest-lib's `uthread` runtime over K42 system
//! calls): threads exchange messages through channels, share a mutex, migrate between
//! dispatchers, sleep on user-level timers and ping-pong through the user-level futex; the
//! program checks every result and exits 0 only if all hold.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use k42_guest_lib::uthread::k42::K42Platform;
use k42_guest_lib::uthread::{self, Builder, Runtime};
use k42_rt::kabi::{Info, Prot};
use k42_rt::{println, sys};
use spin::Once;

k42_rt::entry!(main);

static RUNTIME: Once<Runtime<K42Platform>> = Once::new();
static FAILURES: AtomicU64 = AtomicU64::new(0);
const ENTRY_STACKS: u64 = 0x0000_2000_0000_0000;
const ENTRY_STACK_SIZE: u64 = 64 * 1024;

fn fail(what: &str) {
    FAILURES.fetch_add(1, Ordering::Relaxed);
    println!("threads: FAILED: {what}");
}

extern "C" fn dispatcher_entry(index: u64) -> ! {
    if let Some(rt) = RUNTIME.get() {
        rt.run_dispatcher(index as usize);
    }
    loop {
        sys::block(0);
    }
}

fn messages(n: usize) {
    let (tx, rx) = uthread::channel::<u64>();
    let senders: Vec<_> = (0..8u64)
        .map(|t| {
            let tx = tx.clone();
            Builder::new().dispatcher(t as usize % n).spawn(move || {
                for i in 0..500u64 {
                    tx.send(t * 1000 + i).expect("receiver alive");
                    if i % 64 == 0 {
                        uthread::yield_now();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let collector = Builder::new().dispatcher(n - 1).spawn(move || {
        let mut count = 0u64;
        let mut sum = 0u64;
        while let Some(v) = rx.recv() {
            count += 1;
            sum += v;
        }
        (count, sum)
    });
    for s in senders {
        s.join();
    }
    let want: u64 = (0..8u64)
        .map(|t| (0..500u64).map(|i| t * 1000 + i).sum::<u64>())
        .sum();
    if collector.join() != (4000, want) {
        fail("messages lost or changed between dispatchers");
    }
}

fn mutex(n: usize) {
    static COUNTER: Once<uthread::Mutex<u64>> = Once::new();
    let counter = COUNTER.call_once(|| uthread::Mutex::new(0));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            Builder::new().dispatcher(t % n).spawn(move || {
                for i in 0..1000 {
                    *counter.lock() += 1;
                    if i % 100 == 0 {
                        uthread::yield_now();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join();
    }
    if *counter.lock() != 8000 {
        fail("mutex lost increments");
    }
}

fn migration(n: usize) {
    let visited = Builder::new()
        .dispatcher(0)
        .spawn(move || {
            let mut seen = Vec::new();
            for d in (0..n).chain(0..n).rev() {
                uthread::migrate_to(d);
                seen.push(uthread::current_dispatcher());
            }
            seen
        })
        .join();
    let want: Vec<_> = (0..n).chain(0..n).rev().map(Some).collect();
    if visited != want {
        fail("migration did not move the thread where asked");
    }
}

fn sleeping() {
    let slept = Builder::new()
        .spawn(|| {
            let start = uthread::now_ns();
            uthread::sleep_for(core::time::Duration::from_millis(2));
            uthread::now_ns() - start
        })
        .join();
    if slept < 2_000_000 {
        fail("sleep returned early");
    }
}

fn ping_pong(n: usize) {
    static TURN: AtomicU32 = AtomicU32::new(0);
    const ROUNDS: u32 = 1000;
    let side = |me: u32, dispatcher: usize| {
        Builder::new().dispatcher(dispatcher).spawn(move || {
            for _ in 0..ROUNDS {
                loop {
                    let turn = TURN.load(Ordering::Acquire);
                    if turn % 2 == me {
                        break;
                    }
                    uthread::wait(&TURN, turn);
                }
                TURN.fetch_add(1, Ordering::AcqRel);
                uthread::wake(&TURN, 1);
            }
        })
    };
    let a = side(0, 0);
    let b = side(1, n - 1);
    a.join();
    b.join();
    if TURN.load(Ordering::Acquire) != 2 * ROUNDS {
        fail("futex ping-pong lost a wake-up");
    }
}

fn main(_arg: u64) -> i64 {
    let n = sys::info(Info::Cpus) as usize;
    let rt = RUNTIME.call_once(|| Runtime::new(K42Platform::new(n)));
    k42_rt::set_dispatcher_lookup(|| uthread::current_dispatcher().unwrap_or(0));
    for index in 1..n {
        let base = ENTRY_STACKS + index as u64 * ENTRY_STACK_SIZE;
        let stack = sys::map(base, ENTRY_STACK_SIZE, Prot::READ | Prot::WRITE);
        let created = stack.and_then(|_| {
            sys::dispatcher_create(
                index,
                dispatcher_entry,
                base + ENTRY_STACK_SIZE - 8,
                index as u64,
            )
        });
        if created != Ok(index) {
            println!("threads: dispatcher {index}: {created:?}");
            return 1;
        }
    }
    rt.spawn(move || {
        messages(n);
        mutex(n);
        migration(n);
        sleeping();
        ping_pong(n);
        RUNTIME.get().expect("set").shutdown();
    });
    rt.run_dispatcher(0);
    let switches: u64 = (0..n).map(|d| rt.stats(d).switches).sum();
    let migrations: u64 = (0..n).map(|d| rt.stats(d).migrations_in).sum();
    println!(
        "threads: {} dispatchers, {} thread switches, {} migrations, {} kernel entries on cpu 0",
        n,
        switches,
        migrations,
        sys::info(Info::KernelEntries)
    );
    if FAILURES.load(Ordering::Relaxed) == 0 {
        println!("threads: all checks passed");
        0
    } else {
        1
    }
}
