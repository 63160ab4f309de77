//! Clustered objects on the host: threads stand in for CPUs.
#![cfg(not(loom))]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use k42_guest_lib::cobj::{CoError, CoManager, CoRef, Cpus, PerCpuReps, Rep, Root, SingleRep};

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// Each test thread sets its CPU index; thread = CPU.
struct ThreadCpus(usize);

impl Cpus for ThreadCpus {
    fn current(&self) -> usize {
        CPU.with(|c| c.get())
    }
    fn count(&self) -> usize {
        self.0
    }
    fn relax(&self) {
        thread::yield_now();
    }
}

fn set_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// The interface under test: a counter.
trait Counter: Send + Sync {
    fn add(&self, n: u64);
    /// This rep's share of the total.
    fn part(&self) -> u64;
}

struct SharedCounter(AtomicU64);
impl Counter for SharedCounter {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }
    fn part(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct CpuCounter {
    local: AtomicU64,
    base: Arc<AtomicU64>,
    cpu: usize,
}
impl Counter for CpuCounter {
    fn add(&self, n: u64) {
        self.local.fetch_add(n, Ordering::Relaxed);
    }
    fn part(&self) -> u64 {
        // The transferred total lives in the shared state; CPU 0's rep reports it.
        self.local.load(Ordering::SeqCst)
            + if self.cpu == 0 {
                self.base.load(Ordering::SeqCst)
            } else {
                0
            }
    }
}

fn shared_root(initial: u64) -> Box<dyn Root<dyn Counter>> {
    Box::new(SingleRep::<dyn Counter>::new(Box::new(SharedCounter(
        AtomicU64::new(initial),
    ))))
}

fn per_cpu_root(cpus: usize, initial: u64) -> Box<dyn Root<dyn Counter>> {
    Box::new(PerCpuReps::<dyn Counter, AtomicU64>::new(
        cpus,
        AtomicU64::new(initial),
        |base, cpu| {
            Box::new(CpuCounter {
                local: AtomicU64::new(0),
                base: base.clone(),
                cpu,
            })
        },
    ))
}

fn total<C: Cpus>(mgr: &CoManager<C>, obj: CoRef<dyn Counter>) -> u64 {
    let mut sum = 0;
    mgr.for_each_rep(obj, |_, rep| sum += rep.part());
    // A per-CPU root whose CPU 0 never called still holds the base.
    mgr.with_root(obj, |root| {
        if let Some(r) = root
            .as_any()
            .downcast_ref::<PerCpuReps<dyn Counter, AtomicU64>>()
        {
            let cpu0_has_rep = {
                let mut seen = false;
                r.for_each_rep(&mut |cpu, _| seen |= cpu == 0);
                seen
            };
            if !cpu0_has_rep {
                sum += r.shared().load(Ordering::SeqCst);
            }
        }
    });
    sum
}

fn export_total(root: &dyn Root<dyn Counter>) -> u64 {
    let mut sum = 0;
    root.for_each_rep(&mut |_, rep| sum += rep.part());
    if let Some(r) = root
        .as_any()
        .downcast_ref::<PerCpuReps<dyn Counter, AtomicU64>>()
    {
        let mut cpu0 = false;
        r.for_each_rep(&mut |cpu, _| cpu0 |= cpu == 0);
        if !cpu0 {
            sum += r.shared().load(Ordering::SeqCst);
        }
    }
    sum
}

#[test]
fn single_rep_is_shared_and_each_cpu_misses_once() {
    let mgr = CoManager::new(ThreadCpus(3), 8);
    let obj = mgr.create::<dyn Counter>("shared", shared_root(0)).unwrap();
    for cpu in 0..3 {
        set_cpu(cpu);
        for _ in 0..10 {
            mgr.call(obj, |c| c.add(1));
        }
    }
    assert_eq!(total(&mgr, obj), 30);
    let info = &mgr.objects()[0];
    assert_eq!(
        (info.name, info.root_kind, info.reps, info.misses),
        ("shared", "single-rep", 1, 3)
    );
    assert_eq!(info.reps_per_cpu, vec![1, 1, 1]);
}

#[test]
fn per_cpu_reps_are_created_lazily() {
    let mgr = CoManager::new(ThreadCpus(4), 8);
    let obj = mgr
        .create::<dyn Counter>("percpu", per_cpu_root(4, 0))
        .unwrap();
    assert_eq!(mgr.objects()[0].reps, 0, "no rep before the first call");
    set_cpu(2);
    mgr.call(obj, |c| c.add(5));
    mgr.call(obj, |c| c.add(5));
    let info = &mgr.objects()[0];
    assert_eq!(
        (info.reps, info.misses),
        (1, 1),
        "one CPU used it: one rep, one miss"
    );
    assert_eq!(info.reps_per_cpu, vec![0, 0, 1, 0]);
    set_cpu(0);
    mgr.call(obj, |c| c.add(1));
    assert_eq!(mgr.objects()[0].reps, 2);
    assert_eq!(total(&mgr, obj), 11);
    // Each CPU got its own rep.
    let mut cpus = Vec::new();
    mgr.for_each_rep(obj, |cpu, _| cpus.push(cpu));
    assert_eq!(cpus, vec![0, 2]);
}

#[test]
fn tables_report_full() {
    let mgr = CoManager::new(ThreadCpus(1), 2);
    mgr.create::<dyn Counter>("a", shared_root(0)).unwrap();
    mgr.create::<dyn Counter>("b", shared_root(0)).unwrap();
    assert_eq!(
        mgr.create::<dyn Counter>("c", shared_root(0)).err(),
        Some(CoError::TableFull)
    );
}

#[test]
fn swap_of_an_idle_object_transfers_state() {
    let mgr = CoManager::new(ThreadCpus(2), 4);
    let obj = mgr.create::<dyn Counter>("ctr", shared_root(0)).unwrap();
    set_cpu(1);
    mgr.call(obj, |c| c.add(41));
    set_cpu(0);
    let report = mgr
        .hot_swap(obj, export_total, |t| per_cpu_root(2, t))
        .unwrap();
    assert_eq!((report.forwarded, report.held), (0, 0));
    mgr.call(obj, |c| c.add(1));
    assert_eq!(total(&mgr, obj), 42);
    let info = &mgr.objects()[0];
    assert_eq!((info.root_kind, info.swaps), ("per-cpu-reps", 1));
    // And back.
    mgr.hot_swap(obj, export_total, shared_root).unwrap();
    assert_eq!(total(&mgr, obj), 42);
    assert_eq!(mgr.objects()[0].swaps, 2);
}

#[test]
fn replaced_roots_are_freed_only_after_quiescence() {
    struct Tracked(Arc<AtomicBool>);
    impl Counter for Tracked {
        fn add(&self, _: u64) {}
        fn part(&self) -> u64 {
            0
        }
    }
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let mgr = CoManager::new(ThreadCpus(2), 4);
    let obj = mgr
        .create::<dyn Counter>(
            "tracked",
            Box::new(SingleRep::<dyn Counter>::new(Box::new(Tracked(
                dropped.clone(),
            )))),
        )
        .unwrap();
    set_cpu(0);
    // CPU 1 polls in the background so the swap's synchronisation completes.
    let stop = Arc::new(AtomicBool::new(false));
    let op_running = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let mgr = Arc::new(mgr);
    let helper = {
        let (mgr, stop, op_running, release) = (
            mgr.clone(),
            stop.clone(),
            op_running.clone(),
            release.clone(),
        );
        thread::spawn(move || {
            set_cpu(1);
            while !stop.load(Ordering::SeqCst) {
                mgr.generations().poll(1);
                thread::yield_now();
            }
            // Start an operation that outlives the swap's completion.
            let op = mgr.generations().enter(1);
            op_running.wait();
            release.wait();
            drop(op);
            for _ in 0..100 {
                mgr.generations().poll(1);
                thread::yield_now();
            }
        })
    };
    mgr.hot_swap(obj, |_| 0, shared_root).unwrap();
    assert!(
        mgr.generations().has_pending(),
        "old root waits for quiescence"
    );
    stop.store(true, Ordering::SeqCst);
    op_running.wait();
    for _ in 0..50 {
        mgr.generations().poll(0);
    }
    assert!(
        !dropped.load(Ordering::SeqCst),
        "freed while an operation that may hold it runs"
    );
    release.wait();
    helper.join().unwrap();
    while mgr.generations().has_pending() {
        mgr.generations().poll(0);
        mgr.generations().poll(1);
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "old root freed after quiescence"
    );
}

/// Many CPUs call a counter while it is swapped back and forth; every call is counted once.
#[test]
fn stress_no_call_lost_during_swaps() {
    const WORKERS: usize = 4;
    const SWAPS: usize = 40;
    // On a loaded machine the workers may not run during the first swaps: keep swapping (up
    // to this many) until at least one call has raced a swap.
    const MAX_SWAPS: usize = 20_000;
    let cpus = WORKERS + 1; // the last CPU swaps
    let mgr = Arc::new(CoManager::new(ThreadCpus(cpus), 4));
    let obj = mgr.create::<dyn Counter>("hot", shared_root(0)).unwrap();
    let start = Arc::new(Barrier::new(WORKERS + 1));
    let swapping_done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|cpu| {
            let (mgr, start, done) = (mgr.clone(), start.clone(), swapping_done.clone());
            thread::spawn(move || {
                set_cpu(cpu);
                start.wait();
                let mut calls = 0u64;
                // Call for as long as swaps go on (and a little more), so every swap races calls.
                while !done.load(Ordering::SeqCst) || calls < 1000 {
                    {
                        let _op = mgr.generations().enter(cpu);
                        mgr.call(obj, |c| c.add(1));
                    }
                    calls += 1;
                    if calls.is_multiple_of(8) {
                        mgr.generations().poll(cpu);
                    }
                }
                calls
            })
        })
        .collect();
    set_cpu(WORKERS);
    start.wait();
    let (mut forwarded, mut held) = (0, 0);
    let mut swaps = 0;
    while swaps < SWAPS || (forwarded == 0 && swaps < MAX_SWAPS) {
        let i = swaps;
        swaps += 1;
        let report = if i % 2 == 0 {
            mgr.hot_swap(obj, export_total, |t| per_cpu_root(cpus, t))
                .unwrap()
        } else {
            mgr.hot_swap(obj, export_total, shared_root).unwrap()
        };
        forwarded += report.forwarded;
        held += report.held;
    }
    swapping_done.store(true, Ordering::SeqCst);
    let calls: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(
        total(&mgr, obj),
        calls,
        "calls lost or doubled across {swaps} swaps"
    );
    assert_eq!(mgr.objects()[0].swaps, swaps);
    assert!(
        forwarded > 0,
        "no call went through a mediator: the test did not race"
    );
    eprintln!("stress: {calls} calls, {forwarded} forwarded, {held} held during {swaps} swaps");
}

#[test]
fn concurrent_swaps_of_one_object_are_refused() {
    // A swap holds the object; a second one at the same time gets SwapInProgress. Here we only
    // check the idle case's bookkeeping: after a swap completes, another may start.
    let mgr = CoManager::new(ThreadCpus(1), 2);
    let obj = mgr.create::<dyn Counter>("x", shared_root(0)).unwrap();
    set_cpu(0);
    assert!(mgr.hot_swap(obj, export_total, shared_root).is_ok());
    assert!(mgr.hot_swap(obj, export_total, shared_root).is_ok());
}

#[test]
fn rep_wrapper_derefs() {
    let rep: Rep<dyn Counter> = Rep::new(Box::new(SharedCounter(AtomicU64::new(3))));
    assert_eq!(rep.part(), 3);
}
