//! Host tests of the user-level thread runtime: dispatchers are OS threads (idle = park with a
//! timeout, kick = unpark, clock = `Instant`). Most tests are deterministic (one dispatcher, or
//! results that do not depend on interleaving); none asserts on elapsed time beyond ordering.
//!
//! A panic inside a user-level thread aborts the test binary (no unwinding across contexts);
//! the message is printed first.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k42_guest_lib::uthread::{
    self, channel, Builder, Condvar, DispatcherStats, Mutex, Platform, Runtime,
};

/// Dispatchers as OS threads.
struct Host {
    start: Instant,
    threads: Vec<OnceLock<std::thread::Thread>>,
}

impl Host {
    fn new(dispatchers: usize) -> Self {
        Host {
            start: Instant::now(),
            threads: (0..dispatchers).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl Platform for Host {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn dispatcher_count(&self) -> usize {
        self.threads.len()
    }

    fn idle(&self, _dispatcher: usize, deadline_ns: Option<u64>) {
        common::park_until(self.now_ns(), deadline_ns);
    }

    fn kick(&self, dispatcher: usize) {
        // The runtime kicks only dispatchers that flagged themselves idle, which they do only
        // inside `run_dispatcher`, after `start` registered their OS thread.
        self.threads[dispatcher]
            .get()
            .expect("only a running dispatcher is kicked")
            .unpark();
    }
}

type Rt = Runtime<Host>;

/// Aborts the test binary if a test hangs (a lost wake-up would).
fn watchdog(name: &'static str) -> mpsc::Sender<()> {
    let (done, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(60)) {
            eprintln!("{name}: still running after 60 s (lost wake-up?); aborting");
            std::process::abort();
        }
    });
    done
}

/// Starts one OS thread per dispatcher.
fn start(rt: &Rt) -> Vec<std::thread::JoinHandle<()>> {
    (0..rt.dispatcher_count())
        .map(|index| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                rt.platform().threads[index]
                    .set(std::thread::current())
                    .expect("one OS thread per dispatcher");
                rt.run_dispatcher(index);
            })
        })
        .collect()
}

/// Requests shutdown, waits for every dispatcher to return, and gives their counters.
fn finish(rt: &Rt, dispatchers: Vec<std::thread::JoinHandle<()>>) -> Vec<DispatcherStats> {
    rt.shutdown();
    for d in dispatchers {
        d.join().expect("dispatcher thread");
    }
    assert_eq!(rt.live_threads(), 0);
    (0..rt.dispatcher_count()).map(|i| rt.stats(i)).collect()
}

/// Builds a runtime, lets `setup` spawn threads before any dispatcher runs, then runs the
/// dispatchers until every thread finished.
fn run<R>(
    name: &'static str,
    dispatchers: usize,
    setup: impl FnOnce(&Rt) -> R,
) -> (R, Vec<DispatcherStats>) {
    let done = watchdog(name);
    let rt = Runtime::new(Host::new(dispatchers));
    let result = setup(&rt);
    let running = start(&rt);
    let stats = finish(&rt, running);
    let _ = done.send(());
    (result, stats)
}

#[test]
fn threads_on_four_dispatchers_count_through_a_mutex() {
    const THREADS: usize = 64;
    const ROUNDS: u64 = 300;
    let counter = Arc::new(Mutex::new(0u64));
    let c = counter.clone();
    let (root, stats) = run("mutex", 4, |rt| {
        rt.spawn(move || {
            let children: Vec<_> = (0..THREADS)
                .map(|i| {
                    let c = c.clone();
                    Builder::new().dispatcher(i % 4).spawn(move || {
                        let mut mine = 0;
                        for round in 0..ROUNDS {
                            let mut guard = c.lock();
                            let seen = *guard;
                            if round % 8 == 0 {
                                // Hold the lock across a switch so others contend for it.
                                uthread::yield_now();
                            }
                            *guard = seen + 1;
                            drop(guard);
                            mine += 1;
                        }
                        mine
                    })
                })
                .collect();
            // Joining blocks this thread only; its dispatcher runs the children meanwhile.
            children.into_iter().map(|h| h.join()).sum::<u64>()
        })
    });
    let total = THREADS as u64 * ROUNDS;
    assert_eq!(root.try_join().expect("finished"), total);
    assert_eq!(*counter.lock(), total);
    for (i, s) in stats.iter().enumerate() {
        assert!(s.switches > 0, "dispatcher {i} ran threads: {s:?}");
    }
}

#[test]
fn messages_cross_dispatchers_through_channels() {
    const PRODUCERS: u64 = 3;
    const MESSAGES: u64 = 2000;
    let ((sum, replies), _) = run("channel", 4, |rt| {
        let (tx, rx) = channel::<(u64, u64)>();
        let (reply_tx, reply_rx) = channel::<u64>();
        for p in 0..PRODUCERS {
            let tx = tx.clone();
            Builder::new().dispatcher(p as usize).spawn_in(rt, move || {
                for i in 0..MESSAGES {
                    tx.send((p, i)).expect("receiver alive");
                    if i % 64 == 0 {
                        uthread::yield_now();
                    }
                }
            });
        }
        drop(tx);
        let consumer = Builder::new().dispatcher(3).spawn_in(rt, move || {
            let mut next = [0u64; PRODUCERS as usize];
            let mut sum = 0;
            for (p, i) in rx.iter() {
                assert_eq!(
                    next[p as usize], i,
                    "messages of one producer stay in order"
                );
                next[p as usize] += 1;
                sum += p * 1_000_000 + i;
            }
            reply_tx.send(sum).expect("reply");
            sum
        });
        let checker = Builder::new()
            .dispatcher(1)
            .spawn_in(rt, move || reply_rx.recv());
        (consumer, checker)
    });
    let expected: u64 = (0..PRODUCERS)
        .flat_map(|p| (0..MESSAGES).map(move |i| p * 1_000_000 + i))
        .sum();
    assert_eq!(sum.try_join().expect("finished"), expected);
    assert_eq!(replies.try_join().expect("finished"), Some(expected));
}

#[test]
fn higher_priority_always_runs_first() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    run("priority", 1, |rt| {
        for name in ["low-a", "low-b"] {
            let log = log.clone();
            Builder::new().priority(6).spawn_in(rt, move || {
                log.lock().unwrap().push(name);
                // A low thread wakes a high one: it runs before the low thread resumes.
                let l = log.clone();
                let _high = Builder::new().priority(0).spawn(move || {
                    l.lock().unwrap().push("high-spawned");
                });
                uthread::yield_now();
                log.lock().unwrap().push(name);
            });
        }
        let l = log.clone();
        // Spawned last, but the most urgent: it runs first, and keeps the processor while it
        // yields because nothing as urgent is runnable.
        Builder::new().priority(1).spawn_in(rt, move || {
            for _ in 0..20 {
                l.lock().unwrap().push("high");
                uthread::yield_now();
            }
        });
    });
    let log = log.lock().unwrap().clone();
    let mut expected = vec!["high"; 20];
    expected.extend([
        "low-a",
        "high-spawned",
        "low-b",
        "high-spawned",
        "low-a",
        "low-b",
    ]);
    assert_eq!(log, expected);
}

#[test]
fn shares_divide_the_processor_within_a_priority() {
    const TOTAL: u64 = 4000;
    let total = Arc::new(AtomicU64::new(0));
    let ((a, b, c), _) = run("stride", 1, |rt| {
        let spin = |share: u32, priority: u8| {
            let total = total.clone();
            Builder::new()
                .share(share)
                .priority(priority)
                .spawn_in(rt, move || {
                    let mut mine = 0u64;
                    while total.fetch_add(1, Ordering::Relaxed) < TOTAL {
                        mine += 1;
                        uthread::yield_now();
                    }
                    mine
                })
        };
        // A less urgent thread only runs once both are done.
        let late = spin(1000, 7);
        (spin(300, 3), spin(100, 3), late)
    });
    let (a, b, c) = (
        a.try_join().unwrap(),
        b.try_join().unwrap(),
        c.try_join().unwrap(),
    );
    assert_eq!(c, 0, "strict priority over shares");
    assert_eq!(a + b, TOTAL);
    let ratio = a as f64 / b as f64;
    assert!(
        (2.8..=3.2).contains(&ratio),
        "shares 3:1 gave {a}:{b} dispatches"
    );
}

#[test]
fn sleepers_wake_in_deadline_order() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (_, stats) = run("sleep", 1, |rt| {
        let log = log.clone();
        rt.spawn(move || {
            let base = uthread::now_ns();
            let sleepers: Vec<_> = [30u64, 10, 20]
                .into_iter()
                .map(|ms| {
                    let log = log.clone();
                    uthread::spawn(move || {
                        let deadline = base + ms * 1_000_000;
                        uthread::sleep_until(deadline);
                        assert!(uthread::now_ns() >= deadline, "woke before its deadline");
                        log.lock().unwrap().push(ms);
                    })
                })
                .collect();
            for s in sleepers {
                s.join();
            }
            let before = uthread::now_ns();
            uthread::sleep_for(Duration::from_millis(2));
            assert!(uthread::now_ns() >= before + 2_000_000);
        });
    });
    assert_eq!(*log.lock().unwrap(), [10, 20, 30]);
    assert!(stats[0].idles > 0, "the dispatcher idled while all slept");
}

#[test]
fn migration_changes_the_dispatcher() {
    let (_, stats) = run("migrate", 3, |rt| {
        let moved = Builder::new().dispatcher(0).spawn_in(rt, || {
            assert_eq!(uthread::current_dispatcher(), Some(0));
            uthread::migrate_to(2);
            assert_eq!(uthread::current_dispatcher(), Some(2));
            assert_eq!(uthread::current().unwrap().dispatcher(), 2);
            uthread::migrate_to(1);
            assert_eq!(uthread::current_dispatcher(), Some(1));
        });
        // Another thread's migration, requested from outside while it is runnable: it moves the
        // next time its scheduler handles it.
        let pushed = Builder::new().dispatcher(0).spawn_in(rt, || {
            while uthread::current_dispatcher() != Some(1) {
                uthread::yield_now();
            }
        });
        pushed.thread().migrate(1);
        // A parked thread asked to move goes where it was asked when it wakes.
        let go = Arc::new(AtomicBool::new(false));
        let g = go.clone();
        let parked = Builder::new().dispatcher(0).spawn_in(rt, move || {
            while !g.load(Ordering::Acquire) {
                uthread::park();
            }
            assert_eq!(uthread::current_dispatcher(), Some(2));
        });
        let target = parked.thread().clone();
        Builder::new().dispatcher(1).spawn_in(rt, move || {
            uthread::sleep_for(Duration::from_millis(5));
            target.migrate(2);
            go.store(true, Ordering::Release);
            target.unpark();
        });
        (moved, pushed, parked)
    });
    let out: u64 = stats.iter().map(|s| s.migrations_out).sum();
    let inn: u64 = stats.iter().map(|s| s.migrations_in).sum();
    assert!(out >= 4, "{stats:?}");
    assert_eq!(out, inn, "every migration out arrives: {stats:?}");
    assert!(stats[0].migrations_out >= 3, "{stats:?}");
    assert!(stats[2].migrations_in >= 2, "{stats:?}");
}

#[test]
fn futex_ping_pong_loses_no_wakeups() {
    const ROUNDS: u32 = 10_000;
    let (pair, _) = run("ping-pong", 2, |rt| {
        let turn = Arc::new(AtomicU32::new(0));
        let player = |me: u32, dispatcher: usize| {
            let turn = turn.clone();
            Builder::new().dispatcher(dispatcher).spawn_in(rt, move || {
                let mut seen = 0;
                for _ in 0..ROUNDS {
                    loop {
                        let now = turn.load(Ordering::Acquire);
                        if now == me {
                            break;
                        }
                        uthread::wait(&turn, now);
                    }
                    seen += 1;
                    turn.store(1 - me, Ordering::Release);
                    uthread::wake(&turn, 1);
                }
                (seen, uthread::current_dispatcher())
            })
        };
        (player(0, 0), player(1, 1))
    });
    assert_eq!(pair.0.try_join().unwrap(), (ROUNDS, Some(0)));
    assert_eq!(pair.1.try_join().unwrap(), (ROUNDS, Some(1)));
}

#[test]
fn condvar_and_wait_deadlines() {
    let (handle, _) = run("condvar", 2, |rt| {
        rt.spawn(|| {
            // A wait whose value never changes times out.
            let word = AtomicU32::new(7);
            let deadline = uthread::now_ns() + 3_000_000;
            assert!(!uthread::wait_until(&word, 7, deadline));
            assert!(uthread::now_ns() >= deadline);
            // A wait on a value that already changed returns at once.
            assert!(uthread::wait_until(&word, 8, u64::MAX));

            // A condvar handshake with a thread on the other dispatcher.
            let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
            let p = pair.clone();
            let other = Builder::new().dispatcher(1).spawn(move || {
                let (m, c) = &*p;
                for step in 1..=100 {
                    let mut g = c.wait_while(m.lock(), |v| *v != step * 2 - 1);
                    *g += 1;
                    drop(g);
                    c.notify_all();
                }
            });
            let (m, c) = &*pair;
            for step in 1..=100 {
                let mut g = c.wait_while(m.lock(), |v| *v != step * 2 - 2);
                *g += 1;
                drop(g);
                c.notify_all();
            }
            other.join();
            let (g, notified) = c.wait_until(m.lock(), uthread::now_ns() + 1_000_000);
            assert!(!notified);
            *g
        })
    });
    assert_eq!(handle.try_join().unwrap(), 200);
}

#[test]
fn park_tokens_and_unpark_from_outside() {
    let done = watchdog("park");
    let rt = Runtime::new(Host::new(2));
    let parked = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let (p, g) = (parked.clone(), go.clone());
    let handle = rt.spawn(move || {
        // A token given before parking makes the park return at once.
        uthread::current().unwrap().unpark();
        uthread::park();
        p.store(true, Ordering::Release);
        let mut parks = 0;
        while !g.load(Ordering::Acquire) {
            uthread::park();
            parks += 1;
        }
        parks
    });
    let dispatchers = start(&rt);
    while !parked.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(5));
    go.store(true, Ordering::Release);
    // From an OS thread that is not a dispatcher.
    handle.thread().unpark();
    assert!(handle.thread().id() >= 1);
    let stats = finish(&rt, dispatchers);
    // How often it parked depends on timing; that it woke at all is the point.
    let _parks = handle.try_join().expect("finished");
    assert!(stats[0].idles + stats[1].idles > 0);
    let _ = done.send(());
}

#[test]
fn an_unpark_during_a_mutex_wait_is_kept_for_the_next_park() {
    // One dispatcher, so the order is fixed: the holder locks and yields, the waiter blocks in
    // the mutex, the third thread unparks the waiter (which wakes, finds the mutex still held
    // and sleeps again), the holder unlocks. The waiter's internal
    // futex wait must not eat the unpark token: its next `park` returns at once.
    let m = Arc::new(Mutex::new(()));
    let unparked = Arc::new(AtomicBool::new(false));
    let (_, _) = run("token", 1, |rt| {
        let (hm, hu) = (m.clone(), unparked.clone());
        rt.spawn(move || {
            let guard = hm.lock();
            while !hu.load(Ordering::Acquire) {
                uthread::yield_now();
            }
            // Let the waiter run (and go back to sleep in the mutex) before unlocking.
            for _ in 0..3 {
                uthread::yield_now();
            }
            drop(guard);
        });
        let wm = m.clone();
        let waiter = rt.spawn(move || {
            drop(wm.lock());
            let deadline = uthread::now_ns() + 5_000_000_000;
            uthread::park_until(deadline);
            assert!(
                uthread::now_ns() < deadline,
                "the unpark given during the mutex wait was lost"
            );
        });
        let target = waiter.thread().clone();
        let u = unparked.clone();
        rt.spawn(move || {
            target.unpark();
            u.store(true, Ordering::Release);
        });
    });
    assert!(unparked.load(Ordering::Acquire));
}

#[test]
fn join_from_outside_detach_and_spawn_after_start() {
    let done = watchdog("join");
    let rt = Runtime::new(Host::new(2));
    let dispatchers = start(&rt);
    // Spawned onto running (possibly idle) dispatchers: the spawn kicks them.
    let handles: Vec<_> = (0..20u64)
        .map(|i| {
            Builder::new()
                .dispatcher(i as usize % 2)
                .spawn_in(&rt, move || i * i)
        })
        .collect();
    let finished = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let f = finished.clone();
        // Detached: the handle is dropped at once; the stack goes when the thread ends.
        drop(rt.spawn(move || {
            uthread::yield_now();
            f.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // `join` outside the runtime spins until the thread finished.
    let sum: u64 = handles.into_iter().map(|h| h.join()).sum();
    assert_eq!(sum, (0..20u64).map(|i| i * i).sum());
    finish(&rt, dispatchers);
    assert_eq!(finished.load(Ordering::SeqCst), 10);
    let _ = done.send(());
}

#[test]
fn queries_outside_the_runtime() {
    assert!(uthread::current().is_none());
    assert_eq!(uthread::current_dispatcher(), None);
    // Harmless outside: a spin hint, and spurious returns.
    uthread::yield_now();
    uthread::park();
    let word = AtomicU32::new(0);
    uthread::wait(&word, 0);
    assert_eq!(uthread::wake(&word, 1), 0);
    // A mutex works from plain OS threads too.
    let m = Mutex::new(1);
    *m.lock() += 1;
    assert_eq!(m.into_inner(), 2);
    // No threads: the dispatchers return at once.
    let (_, stats) = run("empty", 2, |_| ());
    assert!(stats.iter().all(|s| s.switches == 0));
}

#[test]
fn many_threads_sleep_yield_and_exchange_on_two_dispatchers() {
    // A mix of everything at once, checked by totals only.
    const WORKERS: u64 = 40;
    let (total, stats) = run("mix", 2, |rt| {
        let (tx, rx) = channel::<u64>();
        for w in 0..WORKERS {
            let tx = tx.clone();
            Builder::new()
                .dispatcher(w as usize % 2)
                .share(1 + w as u32 % 5)
                .priority(2 + (w % 3) as u8)
                .spawn_in(rt, move || {
                    for i in 0..50 {
                        match i % 10 {
                            0 => uthread::sleep_for(Duration::from_micros(200)),
                            3 => uthread::migrate_to((w as usize + i as usize) % 2),
                            _ => uthread::yield_now(),
                        }
                        tx.send(w * 100 + i).expect("receiver alive");
                    }
                });
        }
        drop(tx);
        rt.spawn(move || rx.iter().sum::<u64>())
    });
    let expected: u64 = (0..WORKERS)
        .flat_map(|w| (0..50).map(move |i| w * 100 + i))
        .sum();
    assert_eq!(total.try_join().unwrap(), expected);
    assert!(stats.iter().map(|s| s.migrations_out).sum::<u64>() > 0);
}

#[test]
#[should_panic(expected = "dispatcher 5 does not exist")]
fn running_a_missing_dispatcher_panics() {
    Runtime::new(Host::new(1)).run_dispatcher(5);
}

#[test]
#[should_panic(expected = "priority 8 is out of range")]
fn bad_priority_panics() {
    let rt = Runtime::new(Host::new(1));
    let _ = Builder::new().priority(8).spawn_in(&rt, || ());
}
