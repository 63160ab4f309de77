//! Clustered objects: K42's per-CPU object model, with hot-swapping.
//!
//! A clustered object is a **root** (one per object) and **reps** (representatives, at most one
//! per CPU). The **global translation table** maps an object id to its root; each CPU's **local
//! translation table** maps the id to that CPU's rep. A call loads the caller's local entry and,
//! if it names a rep, calls it: one load and one test on the fast path. An empty entry is a
//! **miss**: the root is asked for this CPU's rep (creating it lazily), the entry is filled, and
//! the call completes. An object used on one CPU therefore costs one rep.
//!
//! **Hot-swapping** replaces a live object's root and reps with another implementation of the
//! same interface while callers keep calling (K42's mediator phases):
//! 1. *Forward*: a mediator is installed in every local entry; calls through it are counted per
//!    CPU and forwarded to the old reps. The swapper waits for a generation round trip, so calls
//!    that reached the old reps directly before the mediator was installed have all ended.
//! 2. *Block*: new calls wait; the swapper waits for the counted calls to drain.
//! 3. *Transfer*: the old root hands its state to the new one in a form both agree on.
//! 4. *Complete*: the new root is installed, local entries are reset (so each CPU misses into the
//!    new root), held calls retry, and the old root and the mediator are freed through
//!    generations. No call is lost and none sees a half-swapped object; objects not being
//!    swapped pay nothing for the possibility.

pub mod roots;
pub mod table;
#[cfg(all(test, not(loom)))]
pub(crate) mod testing;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::{Any, TypeId};
use core::marker::PhantomData;
use core::ops::Deref;

use crate::generation::Generations;
use crate::sync::{fence, spin_hint, AtomicUsize, Mutex, Ordering};
use table::{RootEntry, MEDIATED};

pub use roots::{PerCpuReps, SingleRep};

/// The CPUs clustered objects are spread over. The kernel implements it with its per-CPU data;
/// host tests with threads standing for CPUs.
pub trait Cpus: Send + Sync {
    /// Index of the calling CPU, below [`Cpus::count`].
    fn current(&self) -> usize;
    /// Number of CPUs.
    fn count(&self) -> usize;
    /// Called while waiting for other CPUs (a pause, a yield).
    fn relax(&self) {
        spin_hint();
    }
}

/// A representative: what a local translation entry points to. Derefs to the interface.
pub struct Rep<I: ?Sized>(Box<I>);

impl<I: ?Sized> Rep<I> {
    /// Wraps an implementation.
    pub fn new(inner: Box<I>) -> Self {
        Rep(inner)
    }
}

impl<I: ?Sized> Deref for Rep<I> {
    type Target = I;
    fn deref(&self) -> &I {
        &self.0
    }
}

/// A root: creates or chooses the rep of each CPU for interface `I`.
pub trait Root<I: ?Sized + 'static>: Send + Sync + 'static {
    /// The rep serving `cpu`, created on first use; the same rep for a CPU as long as the root
    /// lives.
    fn rep_for(&self, cpu: usize) -> &Rep<I>;
    /// A short name of the root type.
    fn kind(&self) -> &'static str;
    /// How many reps exist.
    fn rep_count(&self, cpus: usize) -> usize;
    /// Visits every existing rep with its CPU.
    fn for_each_rep(&self, f: &mut dyn FnMut(usize, &I));
    /// For downcasting to the concrete root (state transfer).
    fn as_any(&self) -> &dyn Any;
}

/// Type-erased root in the global table.
pub(crate) trait ErasedRoot: Send + Sync {
    fn miss(&self, cpu: usize) -> usize;
    fn kind(&self) -> &'static str;
    fn rep_count(&self, cpus: usize) -> usize;
    fn interface(&self) -> TypeId;
    fn as_any(&self) -> &dyn Any;
}

struct TypedRoot<I: ?Sized + 'static> {
    root: Box<dyn Root<I>>,
}

impl<I: ?Sized + 'static> ErasedRoot for TypedRoot<I> {
    fn miss(&self, cpu: usize) -> usize {
        table::rep_word(self.root.rep_for(cpu))
    }
    fn kind(&self) -> &'static str {
        self.root.kind()
    }
    fn rep_count(&self, cpus: usize) -> usize {
        self.root.rep_count(cpus)
    }
    fn interface(&self) -> TypeId {
        TypeId::of::<TypedRoot<I>>()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A typed handle to a clustered object (its id). Cheap to copy.
pub struct CoRef<I: ?Sized> {
    id: usize,
    _interface: PhantomData<fn(&I)>,
}

impl<I: ?Sized> Clone for CoRef<I> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<I: ?Sized> Copy for CoRef<I> {}

impl<I: ?Sized> CoRef<I> {
    /// The object id (index in the translation tables).
    pub fn id(&self) -> usize {
        self.id
    }
}

const FORWARD: usize = 0;
const BLOCK: usize = 1;

#[repr(align(64))]
struct PaddedCount(AtomicUsize);

/// The interposed state of an object being swapped.
pub(crate) struct Mediator {
    phase: AtomicUsize,
    in_flight: Box<[PaddedCount]>,
    old_root: usize,
    forwarded: AtomicUsize,
    held: AtomicUsize,
}

struct ObjectMeta {
    name: &'static str,
    swaps: usize,
    swapping: bool,
}

/// Errors of [`CoManager`] operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoError {
    /// The translation tables are full.
    TableFull,
    /// The object is already being swapped.
    SwapInProgress,
    /// The id names no live object.
    NoSuchObject,
}

/// What one clustered object looks like, for listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object id.
    pub id: usize,
    /// Name given at creation.
    pub name: &'static str,
    /// Root type.
    pub root_kind: &'static str,
    /// Reps that exist.
    pub reps: usize,
    /// Local entries filled, per CPU (1 where that CPU has called the object).
    pub reps_per_cpu: Vec<u8>,
    /// Misses handled by the current root.
    pub misses: usize,
    /// Completed hot-swaps.
    pub swaps: usize,
}

/// What a hot-swap did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapReport {
    /// Calls forwarded to the old reps while mediated.
    pub forwarded: usize,
    /// Calls held during the block phase (each retried on the new object).
    pub held: usize,
}

/// The clustered-object manager: global and per-CPU translation tables, and generations.
pub struct CoManager<C: Cpus> {
    cpus: C,
    capacity: usize,
    local: Box<[Box<[AtomicUsize]>]>,
    global: Box<[AtomicUsize]>,
    meta: Mutex<Vec<ObjectMeta>>,
    generations: Generations,
}

fn zeroed_words(n: usize) -> Box<[AtomicUsize]> {
    (0..n)
        .map(|_| AtomicUsize::new(0))
        .collect::<Vec<_>>()
        .into_boxed_slice()
}

impl<C: Cpus> CoManager<C> {
    /// A manager for `cpus` with room for `capacity` objects.
    pub fn new(cpus: C, capacity: usize) -> Self {
        let n = cpus.count();
        CoManager {
            local: (0..n)
                .map(|_| zeroed_words(capacity))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
            global: zeroed_words(capacity),
            meta: Mutex::new(Vec::with_capacity(capacity)),
            generations: Generations::new(n),
            capacity,
            cpus,
        }
    }

    /// The CPUs.
    pub fn cpus(&self) -> &C {
        &self.cpus
    }

    /// The generations that protect reclamation; the runtime brackets operations with
    /// `generations().enter(cpu)` and polls from idle points.
    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    /// Creates a clustered object named `name` with `root`; no rep exists until a CPU calls it.
    pub fn create<I: ?Sized + 'static>(
        &self,
        name: &'static str,
        root: Box<dyn Root<I>>,
    ) -> Result<CoRef<I>, CoError> {
        let mut meta = self.meta.lock();
        let id = meta.len();
        if id >= self.capacity {
            return Err(CoError::TableFull);
        }
        meta.push(ObjectMeta {
            name,
            swaps: 0,
            swapping: false,
        });
        let entry = RootEntry {
            root: Box::new(TypedRoot { root }),
            misses: AtomicUsize::new(0),
        };
        self.global[id].store(table::publish_root(entry), Ordering::Release);
        Ok(CoRef {
            id,
            _interface: PhantomData,
        })
    }

    /// Calls the object on the calling CPU: `f` gets this CPU's rep.
    #[inline]
    pub fn call<I: ?Sized + 'static, T>(&self, obj: CoRef<I>, f: impl FnOnce(&I) -> T) -> T {
        let cpu = self.cpus.current();
        let word = self.local[cpu][obj.id].load(Ordering::Acquire);
        if word & MEDIATED == 0 && word != 0 {
            return f(table::rep_ref::<I>(word));
        }
        self.call_slow(obj, cpu, f)
    }

    #[cold]
    fn call_slow<I: ?Sized + 'static, T>(
        &self,
        obj: CoRef<I>,
        cpu: usize,
        f: impl FnOnce(&I) -> T,
    ) -> T {
        let slot = &self.local[cpu][obj.id];
        loop {
            let word = slot.load(Ordering::Acquire);
            if word == 0 {
                // Miss: ask the current root for this CPU's rep and install it.
                let root_word = self.global[obj.id].load(Ordering::Acquire);
                assert!(
                    root_word != 0,
                    "call on clustered object {} that does not exist",
                    obj.id
                );
                let entry = table::root_ref(root_word);
                debug_assert_eq!(entry.root.interface(), TypeId::of::<TypedRoot<I>>());
                let rep = entry.root.miss(cpu);
                entry.misses.fetch_add(1, Ordering::Relaxed);
                if slot
                    .compare_exchange(0, rep, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return f(table::rep_ref::<I>(rep));
                }
                // A swap installed its mediator meanwhile: go through it.
            } else if word & MEDIATED != 0 {
                let mediator = table::mediator_ref(word);
                let counter = &mediator.in_flight[cpu].0;
                counter.fetch_add(1, Ordering::SeqCst);
                // Dekker with the swapper's BLOCK: it sees our count, or we see BLOCK.
                fence(Ordering::SeqCst);
                if mediator.phase.load(Ordering::SeqCst) == FORWARD {
                    let _done = Decrement(counter);
                    mediator.forwarded.fetch_add(1, Ordering::Relaxed);
                    let old = table::root_ref(mediator.old_root);
                    return f(table::rep_ref::<I>(old.root.miss(cpu)));
                }
                counter.fetch_sub(1, Ordering::SeqCst);
                mediator.held.fetch_add(1, Ordering::Relaxed);
                // Held until the swap completes and resets this entry.
                while slot.load(Ordering::Acquire) == word {
                    self.cpus.relax();
                }
            } else {
                return f(table::rep_ref::<I>(word));
            }
        }
    }

    /// Visits every rep of the object (e.g. to sum a per-CPU counter).
    pub fn for_each_rep<I: ?Sized + 'static>(&self, obj: CoRef<I>, mut f: impl FnMut(usize, &I)) {
        self.with_root(obj, |root| root.for_each_rep(&mut f));
    }

    /// Runs `f` with the object's current root.
    pub fn with_root<I: ?Sized + 'static, T>(
        &self,
        obj: CoRef<I>,
        f: impl FnOnce(&dyn Root<I>) -> T,
    ) -> T {
        let word = self.global[obj.id].load(Ordering::Acquire);
        assert!(word != 0, "clustered object {} does not exist", obj.id);
        let typed = table::root_ref(word)
            .root
            .as_any()
            .downcast_ref::<TypedRoot<I>>()
            .expect("a CoRef's interface matches its root");
        f(&*typed.root)
    }

    /// Replaces the object's implementation while it is being called. `export` reads the old
    /// root's state (after every call to it has ended); `build` makes the new root from it.
    /// The caller must not be inside an operation (it waits for quiescence).
    pub fn hot_swap<I: ?Sized + 'static, S>(
        &self,
        obj: CoRef<I>,
        export: impl FnOnce(&dyn Root<I>) -> S,
        build: impl FnOnce(S) -> Box<dyn Root<I>>,
    ) -> Result<SwapReport, CoError> {
        {
            let mut meta = self.meta.lock();
            let object = meta.get_mut(obj.id).ok_or(CoError::NoSuchObject)?;
            if object.swapping {
                return Err(CoError::SwapInProgress);
            }
            object.swapping = true;
        }
        let old_root = self.global[obj.id].load(Ordering::Acquire);
        if old_root == 0 {
            self.meta.lock()[obj.id].swapping = false;
            return Err(CoError::NoSuchObject);
        }
        let cpus = self.cpus.count();
        let mediator_word = table::publish_mediator(Mediator {
            phase: AtomicUsize::new(FORWARD),
            in_flight: (0..cpus)
                .map(|_| PaddedCount(AtomicUsize::new(0)))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
            old_root,
            forwarded: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
        });
        let mediator = table::mediator_ref(mediator_word);

        // FORWARD: interpose, then wait until direct calls that began before have ended.
        for table in self.local.iter() {
            table[obj.id].swap(mediator_word, Ordering::SeqCst);
        }
        self.generations.synchronize(|| self.cpus.relax());

        // BLOCK: hold new calls, drain the forwarded ones.
        mediator.phase.store(BLOCK, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        while mediator
            .in_flight
            .iter()
            .any(|c| c.0.load(Ordering::SeqCst) != 0)
        {
            self.cpus.relax();
        }

        // TRANSFER: nobody is in the old object now.
        let state = self.with_root(obj, export);
        let new_root = build(state);

        // COMPLETE: install the new root, release held calls into it, reclaim the old one.
        let entry = RootEntry {
            root: Box::new(TypedRoot { root: new_root }),
            misses: AtomicUsize::new(0),
        };
        self.global[obj.id].store(table::publish_root(entry), Ordering::SeqCst);
        for table in self.local.iter() {
            table[obj.id].store(0, Ordering::SeqCst);
        }
        let report = SwapReport {
            forwarded: mediator.forwarded.load(Ordering::Relaxed),
            held: mediator.held.load(Ordering::Relaxed),
        };
        self.generations.defer(Box::new(move || {
            table::free_root(old_root);
            table::free_mediator(mediator_word);
        }));
        {
            let mut meta = self.meta.lock();
            meta[obj.id].swapping = false;
            meta[obj.id].swaps += 1;
        }
        Ok(report)
    }

    /// Lists every object: id, name, root type, reps, misses, swaps.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        let meta = self.meta.lock();
        meta.iter()
            .enumerate()
            .filter_map(|(id, m)| {
                let word = self.global[id].load(Ordering::Acquire);
                (word != 0).then(|| {
                    let entry = table::root_ref(word);
                    ObjectInfo {
                        id,
                        name: m.name,
                        root_kind: entry.root.kind(),
                        reps: entry.root.rep_count(self.cpus.count()),
                        reps_per_cpu: self
                            .local
                            .iter()
                            .map(|t| {
                                let w = t[id].load(Ordering::Acquire);
                                u8::from(w != 0 && w & MEDIATED == 0)
                            })
                            .collect(),
                        misses: entry.misses.load(Ordering::Relaxed),
                        swaps: m.swaps,
                    }
                })
            })
            .collect()
    }
}

impl<C: Cpus> Drop for CoManager<C> {
    fn drop(&mut self) {
        // Run what is still deferred (nothing can be in flight: we are dropped), then free roots.
        while self.generations.has_pending() {
            self.generations.help();
        }
        for word in self.global.iter() {
            let w = word.swap(0, Ordering::SeqCst);
            if w != 0 {
                table::free_root(w);
            }
        }
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
