//! Model checks (loom) of the clustered-object protocols: the miss path, the hot-swap phases,
//! and generation token passing. Run with `RUSTFLAGS="--cfg loom"` (scripts/test does).
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use k42_guest_lib::cobj::{CoManager, Cpus, PerCpuReps, Root, SingleRep};
use k42_guest_lib::generation::Generations;

loom::thread_local! {
    static CPU: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

struct LoomCpus(usize);

impl Cpus for LoomCpus {
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

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

trait Counter: Send + Sync {
    fn add(&self);
    fn get(&self) -> u64;
}

struct Plain(AtomicU64);
impl Counter for Plain {
    fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn plain_root(initial: u64) -> Box<dyn Root<dyn Counter>> {
    Box::new(SingleRep::<dyn Counter>::new(Box::new(Plain(
        AtomicU64::new(initial),
    ))))
}

fn sum(root: &dyn Root<dyn Counter>) -> u64 {
    let mut s = 0;
    root.for_each_rep(&mut |_, r| s += r.get());
    s
}

/// Two callers on one CPU (an interrupted miss) race the miss: one rep, one installed entry,
/// both calls counted.
#[test]
fn miss_path_installs_one_rep_per_cpu() {
    model(|| {
        let mgr = Arc::new(CoManager::new(LoomCpus(2), 1));
        let root: Box<dyn Root<dyn Counter>> =
            Box::new(PerCpuReps::<dyn Counter, ()>::new(2, (), |_, _| {
                Box::new(Plain(AtomicU64::new(0)))
            }));
        let obj = mgr.create::<dyn Counter>("c", root).unwrap();
        let other = {
            let mgr = mgr.clone();
            thread::spawn(move || {
                CPU.with(|c| c.set(1));
                mgr.call(obj, |c| c.add());
            })
        };
        CPU.with(|c| c.set(1));
        mgr.call(obj, |c| c.add());
        other.join().unwrap();
        let info = &mgr.objects()[0];
        assert_eq!(info.reps, 1, "one CPU, one rep");
        assert_eq!(info.reps_per_cpu, vec![0, 1]);
        mgr.with_root(obj, |r| assert_eq!(sum(r), 2));
    });
}

/// A call racing a swap is neither lost nor applied twice, whatever the interleaving of the
/// forward, block, transfer and complete phases.
#[test]
fn swap_phases_lose_no_call() {
    model(|| {
        let mgr = Arc::new(CoManager::new(LoomCpus(2), 1));
        let obj = mgr.create::<dyn Counter>("c", plain_root(0)).unwrap();
        let caller = {
            let mgr = mgr.clone();
            thread::spawn(move || {
                CPU.with(|c| c.set(1));
                let _op = mgr.generations().enter(1);
                mgr.call(obj, |c| c.add());
            })
        };
        CPU.with(|c| c.set(0));
        mgr.hot_swap(obj, sum, plain_root).unwrap();
        caller.join().unwrap();
        mgr.with_root(obj, |r| {
            assert_eq!(sum(r), 1, "the racing call must be counted exactly once")
        });
    });
}

/// Deferred reclamation never frees what a running operation can still see (RCU property).
#[test]
fn token_passing_protects_readers() {
    model(|| {
        let gens = Arc::new(Generations::new(2));
        // 1 = published and alive, 2 = unlinked, 3 = freed.
        let state = Arc::new(AtomicUsize::new(1));
        let reader = {
            let (gens, state) = (gens.clone(), state.clone());
            thread::spawn(move || {
                let _op = gens.enter(1);
                let seen = state.load(Ordering::SeqCst);
                if seen == 1 {
                    // Still linked when we looked: it must stay unfreed until we leave.
                    if state.load(Ordering::SeqCst) == 3 {
                        panic!(
                            "freed under a reader: rounds {} cpu0 {:?} cpu1 {:?} token {}",
                            gens.rounds(),
                            gens.cpu_state(0),
                            gens.cpu_state(1),
                            gens.token_holder()
                        );
                    }
                }
            })
        };
        state.store(2, Ordering::SeqCst);
        let target = gens.quiescence_target();
        gens.synchronize(thread::yield_now);
        assert!(gens.rounds() >= target);
        state.store(3, Ordering::SeqCst);
        reader.join().unwrap();
    });
}

/// The file-window lock: a client writing through the window and the server retiring it. The
/// server must see either none or all of the write (bytes and size together), and once it has
/// retired the window the client must not write.
#[test]
fn file_window_retire_against_a_write() {
    use k42_guest_lib::filewindow::Header;
    use loom::cell::UnsafeCell;

    struct Shared {
        header: Header,
        byte: UnsafeCell<u8>,
    }
    // SAFETY: `byte` is touched only under the header's lock (the protocol under test).
    unsafe impl Sync for Shared {}

    model(|| {
        let shared = Arc::new(Shared {
            header: Header::new(0, 0),
            byte: UnsafeCell::new(0),
        });
        let client = {
            let shared = shared.clone();
            thread::spawn(move || {
                let began = shared.header.begin(5, thread::yield_now);
                if began {
                    shared.byte.with_mut(|b| unsafe { *b = 7 });
                    shared.header.set_size(1);
                    shared.header.mark_dirty();
                    shared.header.end();
                }
                began
            })
        };
        let state = shared.header.retire(|_| {
            thread::yield_now();
            true
        });
        let byte = shared.byte.with(|b| unsafe { *b });
        assert!(!state.forced);
        if state.size == 1 {
            assert!(state.dirty && byte == 7, "the whole write is seen");
        } else {
            assert!(!state.dirty && byte == 0, "none of it is seen");
        }
        let wrote = client.join().unwrap();
        assert_eq!(wrote, state.size == 1, "a retired window refuses the write");
        assert!(!shared.header.begin(5, || panic!("retired")));
    });
}
