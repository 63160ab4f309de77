//! The raw layer of clustered objects: typed pointers kept in atomic words. The only `unsafe`
//! code of guest-lib; everything above it is safe.
//!
//! Invariants the rest of `cobj` keeps:
//! - A translation-table word is 0 (miss), the address of a live `Rep<I>` of the object's
//!   interface `I`, or the address of a live [`Mediator`] with [`MEDIATED`] set.
//! - A global-table word is 0 (no object) or the address of a live [`RootEntry`] (leaked box).
//! - Roots, reps and mediators that a table may still name are freed only through generations
//!   (after every operation that could have loaded the word has ended).
#![allow(unsafe_code)]

use alloc::boxed::Box;
use core::marker::PhantomData;

use super::{ErasedRoot, Mediator, Rep};
use crate::sync::{AtomicUsize, Ordering};

/// Tag bit of a translation-table word naming a mediator.
pub(crate) const MEDIATED: usize = 1;

/// A root installed in the global table, with its miss count.
pub(crate) struct RootEntry {
    pub(crate) root: Box<dyn ErasedRoot>,
    pub(crate) misses: AtomicUsize,
}

/// Leaks `entry` and returns its address for a global-table word.
pub(crate) fn publish_root(entry: RootEntry) -> usize {
    Box::into_raw(Box::new(entry)) as usize
}

/// The root entry a global-table word names.
pub(crate) fn root_ref<'a>(word: usize) -> &'a RootEntry {
    debug_assert!(word != 0);
    // SAFETY: non-zero global words are addresses from `publish_root`, freed only by
    // `free_root` after a generation wait, which outlives every operation holding `'a`.
    unsafe { &*(word as *const RootEntry) }
}

/// Frees a root entry no table names any more and no operation can still hold.
pub(crate) fn free_root(word: usize) {
    // SAFETY: called from deferred work after quiescence; the word came from `publish_root`
    // and is freed once (the caller took it out of the table).
    drop(unsafe { Box::from_raw(word as *mut RootEntry) });
}

/// Leaks a mediator; returns its tagged translation word.
pub(crate) fn publish_mediator(mediator: Mediator) -> usize {
    let address = Box::into_raw(Box::new(mediator)) as usize;
    debug_assert_eq!(address & MEDIATED, 0);
    address | MEDIATED
}

/// The mediator a tagged translation word names.
pub(crate) fn mediator_ref<'a>(word: usize) -> &'a Mediator {
    // SAFETY: tagged words come from `publish_mediator`; the mediator is freed only by
    // `free_mediator` after quiescence.
    unsafe { &*((word & !MEDIATED) as *const Mediator) }
}

/// Frees a mediator after quiescence.
pub(crate) fn free_mediator(word: usize) {
    // SAFETY: as for `free_root`.
    drop(unsafe { Box::from_raw((word & !MEDIATED) as *mut Mediator) });
}

/// The rep a plain (untagged, non-zero) translation word names.
///
/// The caller guarantees the word belongs to an object of interface `I`: `CoRef<I>` is only
/// made by `CoManager::create` with a `Root<I>`, and roots of a swap keep the interface.
pub(crate) fn rep_ref<'a, I: ?Sized>(word: usize) -> &'a Rep<I> {
    debug_assert!(word != 0 && word & MEDIATED == 0);
    // SAFETY: see above and the module invariants; reps live as long as their root.
    unsafe { &*(word as *const Rep<I>) }
}

/// Address of a rep, for a translation word.
pub(crate) fn rep_word<I: ?Sized>(rep: &Rep<I>) -> usize {
    rep as *const Rep<I> as usize
}

/// A lazily filled, owned slot for one rep (per-CPU roots use one per CPU).
pub struct RepSlot<I: ?Sized> {
    word: AtomicUsize,
    _owns: PhantomData<Box<Rep<I>>>,
}

// SAFETY: the slot owns a `Rep<I>`; sharing it shares `&Rep<I>`, which is sound when I is Sync,
// and sending it moves the box, sound when I is Send.
unsafe impl<I: ?Sized + Send + Sync> Sync for RepSlot<I> {}
// SAFETY: as above.
unsafe impl<I: ?Sized + Send + Sync> Send for RepSlot<I> {}

impl<I: ?Sized> RepSlot<I> {
    /// An empty slot.
    pub fn empty() -> Self {
        RepSlot {
            word: AtomicUsize::new(0),
            _owns: PhantomData,
        }
    }

    /// The rep, if created.
    pub fn get(&self) -> Option<&Rep<I>> {
        let word = self.word.load(Ordering::Acquire);
        // SAFETY: non-zero words are leaked `Rep<I>` boxes owned by this slot until it drops.
        (word != 0).then(|| unsafe { &*(word as *const Rep<I>) })
    }

    /// The rep, creating it with `make` if absent; also says whether this call created it.
    /// Concurrent creators race with a compare-and-swap; losers free their copy.
    pub fn get_or_create(&self, make: impl FnOnce() -> Box<I>) -> (&Rep<I>, bool) {
        if let Some(rep) = self.get() {
            return (rep, false);
        }
        let fresh = Box::into_raw(Box::new(Rep::new(make()))) as usize;
        match self
            .word
            .compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: we just stored our own leaked box.
            Ok(_) => (unsafe { &*(fresh as *const Rep<I>) }, true),
            Err(winner) => {
                // SAFETY: `fresh` was never published; the winner is a leaked box we own.
                unsafe {
                    drop(Box::from_raw(fresh as *mut Rep<I>));
                    (&*(winner as *const Rep<I>), false)
                }
            }
        }
    }
}

impl<I: ?Sized> Drop for RepSlot<I> {
    fn drop(&mut self) {
        let word = self.word.load(Ordering::Acquire);
        if word != 0 {
            // SAFETY: the slot owns the leaked box; dropping the slot (with its root, after
            // quiescence) is the last use.
            drop(unsafe { Box::from_raw(word as *mut Rep<I>) });
        }
    }
}
