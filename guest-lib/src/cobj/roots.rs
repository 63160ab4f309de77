//! The common roots: one rep shared by every CPU, and one rep per CPU created on first use.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

use super::{Rep, Root};
use crate::sync::{AtomicUsize, Ordering};

/// A plain shared object: every CPU's translation entry points at the same rep.
pub struct SingleRep<I: ?Sized + 'static> {
    rep: Rep<I>,
}

impl<I: ?Sized + Send + Sync + 'static> SingleRep<I> {
    /// A root around `rep`.
    pub fn new(rep: Box<I>) -> Self {
        SingleRep { rep: Rep::new(rep) }
    }

    /// The one rep.
    pub fn rep(&self) -> &I {
        &self.rep
    }
}

impl<I: ?Sized + Send + Sync + 'static> Root<I> for SingleRep<I> {
    fn rep_for(&self, _cpu: usize) -> &Rep<I> {
        &self.rep
    }

    fn kind(&self) -> &'static str {
        "single-rep"
    }

    fn rep_count(&self, _cpus: usize) -> usize {
        1
    }

    fn for_each_rep(&self, f: &mut dyn FnMut(usize, &I)) {
        f(0, &self.rep)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// How a [`PerCpuReps`] root makes the rep of one CPU from the shared state.
pub type RepFactory<I, S> = fn(&Arc<S>, usize) -> Box<I>;

/// One rep per CPU, created lazily on that CPU's first call (replicated or partitioned state);
/// reps reach state shared by all of them through the `Arc<S>` their factory gives them.
pub struct PerCpuReps<I: ?Sized + 'static, S: Send + Sync + 'static> {
    shared: Arc<S>,
    make: RepFactory<I, S>,
    reps: Box<[super::table::RepSlot<I>]>,
    created: AtomicUsize,
}

impl<I: ?Sized + Send + Sync + 'static, S: Send + Sync + 'static> PerCpuReps<I, S> {
    /// A root for `cpus` CPUs whose reps `make` builds from `shared`.
    pub fn new(cpus: usize, shared: S, make: RepFactory<I, S>) -> Self {
        PerCpuReps {
            shared: Arc::new(shared),
            make,
            reps: (0..cpus)
                .map(|_| super::table::RepSlot::empty())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
            created: AtomicUsize::new(0),
        }
    }

    /// The state shared by all reps.
    pub fn shared(&self) -> &Arc<S> {
        &self.shared
    }
}

impl<I: ?Sized + Send + Sync + 'static, S: Send + Sync + 'static> Root<I> for PerCpuReps<I, S> {
    fn rep_for(&self, cpu: usize) -> &Rep<I> {
        let (rep, created) = self.reps[cpu].get_or_create(|| (self.make)(&self.shared, cpu));
        if created {
            self.created.fetch_add(1, Ordering::SeqCst);
        }
        rep
    }

    fn kind(&self) -> &'static str {
        "per-cpu-reps"
    }

    fn rep_count(&self, _cpus: usize) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    fn for_each_rep(&self, f: &mut dyn FnMut(usize, &I)) {
        for (cpu, slot) in self.reps.iter().enumerate() {
            if let Some(rep) = slot.get() {
                f(cpu, rep);
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
