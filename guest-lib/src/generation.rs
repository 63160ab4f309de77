//! Quiescence by generations: K42's active-operation counts and circulating token.
//!
//! Each CPU counts the operations it has in flight in two slots, one per generation parity. An
//! operation enters the current generation of its CPU and leaves the same slot. A token visits
//! the CPUs in order; the holder advances its own generation once the *older* slot has drained,
//! then passes the token on. When the token has gone round every CPU twice after some moment,
//! every operation that was running at that moment has finished: that is when deferred work
//! (freeing replaced objects, reps, translation entries) may run.
//!
//! Operations are what the runtime brackets with [`Generations::enter`] (in the kernel: the
//! handling of one request on a CPU; in host tests: one step of a thread). Object calls are made
//! inside operations; they do not count themselves, so calls pay nothing for reclamation.
//!
//! Any CPU may advance the token holder's generation (the holder need not be running: an idle,
//! halted CPU does not stall reclamation). Advances of one CPU are serialised by claiming the
//! token; `enter` re-checks the generation after counting itself, so an advance racing with it
//! never judges a slot empty that holds a committed operation.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::sync::{fence, AtomicU64, AtomicUsize, Mutex, Ordering};

/// Token value while some CPU's advance is in progress.
pub const TOKEN_CLAIMED: usize = usize::MAX;

/// Deferred work: runs once every operation that was in flight when it was deferred has ended.
pub type Deferred = Box<dyn FnOnce() + Send>;

#[repr(align(64))]
struct CpuGeneration {
    generation: AtomicU64,
    active: [AtomicU64; 2],
}

/// The generation state of all CPUs.
pub struct Generations {
    cpus: Box<[CpuGeneration]>,
    token: AtomicUsize,
    rounds: AtomicU64,
    advances: AtomicU64,
    deferred: Mutex<VecDeque<(u64, Deferred)>>,
    pending: AtomicUsize,
}

/// An operation in flight on one CPU; leaving it (drop) ends the operation.
#[must_use = "the operation ends when the guard is dropped"]
pub struct Operation<'a> {
    slot: &'a AtomicU64,
}

impl Drop for Operation<'_> {
    fn drop(&mut self) {
        self.slot.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Generations {
    /// State for `cpus` CPUs (at least one).
    pub fn new(cpus: usize) -> Generations {
        assert!(cpus > 0, "at least one CPU");
        let cpus = (0..cpus)
            .map(|_| CpuGeneration {
                generation: AtomicU64::new(0),
                active: [AtomicU64::new(0), AtomicU64::new(0)],
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Generations {
            cpus,
            token: AtomicUsize::new(0),
            rounds: AtomicU64::new(0),
            advances: AtomicU64::new(0),
            deferred: Mutex::new(VecDeque::new()),
            pending: AtomicUsize::new(0),
        }
    }

    /// Number of CPUs.
    pub fn cpu_count(&self) -> usize {
        self.cpus.len()
    }

    /// Starts an operation on `cpu`, counted in that CPU's current generation.
    pub fn enter(&self, cpu: usize) -> Operation<'_> {
        let state = &self.cpus[cpu];
        loop {
            let generation = state.generation.load(Ordering::SeqCst);
            let slot = &state.active[(generation & 1) as usize];
            slot.fetch_add(1, Ordering::SeqCst);
            // Pairs with the fence in `try_advance`: either the advance sees our count, or we see
            // its new generation. If the generation advanced meanwhile, our count may sit in a
            // slot the advance already judged empty: undo and count again in the new generation.
            fence(Ordering::SeqCst);
            if state.generation.load(Ordering::SeqCst) == generation {
                return Operation { slot };
            }
            slot.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Completed token rounds so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// The CPU holding the token ([`usize::MAX`] while an advance is in progress).
    pub fn token_holder(&self) -> usize {
        self.token.load(Ordering::SeqCst)
    }

    /// Diagnostics: `cpu`'s generation and its two active-operation counts.
    pub fn cpu_state(&self, cpu: usize) -> (u64, u64, u64) {
        let c = &self.cpus[cpu];
        (
            c.generation.load(Ordering::SeqCst),
            c.active[0].load(Ordering::SeqCst),
            c.active[1].load(Ordering::SeqCst),
        )
    }

    /// Total generation advances (all CPUs).
    pub fn advances(&self) -> u64 {
        self.advances.load(Ordering::SeqCst)
    }

    /// Whether deferred work is waiting (the runtime keeps the token moving while it is).
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// The round count after which everything running now is known to have finished.
    pub fn quiescence_target(&self) -> u64 {
        // The round in progress may have visited some CPUs before now; the next two full rounds
        // each advance every CPU after now, and the second advance drains anything running now.
        self.rounds() + 3
    }

    /// Called by `cpu` at a point where it runs no operation of its own (idle loop, scheduler):
    /// if it holds the token and its older generation has drained, advances its generation and
    /// passes the token on. Runs deferred work that has become safe. Returns whether the token
    /// moved.
    pub fn poll(&self, cpu: usize) -> bool {
        let moved = self.try_advance(cpu);
        if moved && self.has_pending() {
            self.run_ready();
        }
        moved
    }

    /// Advances whichever CPU holds the token, if its older generation has drained (any CPU may
    /// call this, for example while waiting for quiescence). Returns whether the token moved.
    pub fn help(&self) -> bool {
        let holder = self.token.load(Ordering::SeqCst);
        holder != TOKEN_CLAIMED && self.poll(holder)
    }

    fn try_advance(&self, cpu: usize) -> bool {
        // Claim the token so that advances of one CPU never overlap.
        if self
            .token
            .compare_exchange(cpu, TOKEN_CLAIMED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        // Pairs with the fence in `enter` (see there).
        fence(Ordering::SeqCst);
        let state = &self.cpus[cpu];
        let generation = state.generation.load(Ordering::SeqCst);
        let older = &state.active[((generation + 1) & 1) as usize];
        if older.load(Ordering::SeqCst) != 0 {
            self.token.store(cpu, Ordering::SeqCst);
            return false;
        }
        state.generation.store(generation + 1, Ordering::SeqCst);
        self.advances.fetch_add(1, Ordering::SeqCst);
        let next = (cpu + 1) % self.cpus.len();
        if next == 0 {
            self.rounds.fetch_add(1, Ordering::SeqCst);
        }
        self.token.store(next, Ordering::SeqCst);
        true
    }

    /// Runs `work` once every operation in flight now has finished.
    pub fn defer(&self, work: Deferred) {
        let target = self.quiescence_target();
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.deferred.lock().push_back((target, work));
    }

    /// Runs the deferred work whose quiescence target has been reached; returns how many ran.
    pub fn run_ready(&self) -> usize {
        let rounds = self.rounds();
        let mut ran = 0;
        loop {
            let work = {
                let mut queue = self.deferred.lock();
                match queue.front() {
                    Some((target, _)) if *target <= rounds => queue.pop_front().map(|(_, w)| w),
                    _ => None,
                }
            };
            match work {
                Some(work) => {
                    work();
                    self.pending.fetch_sub(1, Ordering::SeqCst);
                    ran += 1;
                }
                None => return ran,
            }
        }
    }

    /// Waits, outside any operation of the caller, until everything running now has finished,
    /// helping the token along (so idle CPUs do not have to wake up). `relax` is called between
    /// attempts.
    pub fn synchronize(&self, mut relax: impl FnMut()) {
        let target = self.quiescence_target();
        while self.rounds() < target {
            if !self.help() {
                relax();
            }
        }
        self.run_ready();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use core::sync::atomic::AtomicBool;

    #[test]
    fn token_circulates_and_counts_rounds() {
        let g = Generations::new(3);
        assert!(g.poll(0));
        assert!(!g.poll(0), "token moved on to CPU 1");
        assert!(g.poll(1) && g.poll(2));
        assert_eq!(g.rounds(), 1);
        assert_eq!(g.token_holder(), 0);
    }

    #[test]
    fn an_operation_holds_the_token_two_advances_later() {
        let g = Generations::new(1);
        let op = g.enter(0);
        assert!(g.poll(0), "first advance: the older slot is empty");
        assert!(!g.poll(0), "second advance waits for the operation");
        drop(op);
        assert!(g.poll(0));
    }

    #[test]
    fn idle_cpus_are_helped_along() {
        let g = Generations::new(4);
        let op = g.enter(2);
        let target = g.quiescence_target();
        // CPU 0 alone drives every CPU's generation while the others never poll.
        for _ in 0..20 {
            g.help();
        }
        assert!(
            g.rounds() < target,
            "an operation in flight on CPU 2 must hold the token"
        );
        assert_eq!(g.token_holder(), 2);
        drop(op);
        g.synchronize(|| {});
        assert!(g.rounds() >= target);
    }

    #[test]
    fn deferred_work_waits_for_operations_in_flight() {
        let g = Generations::new(2);
        let done = Arc::new(AtomicBool::new(false));
        let op = g.enter(1);
        let flag = done.clone();
        g.defer(Box::new(move || {
            flag.store(true, core::sync::atomic::Ordering::SeqCst)
        }));
        for _ in 0..20 {
            g.poll(0);
            g.poll(1);
        }
        assert!(
            !done.load(core::sync::atomic::Ordering::SeqCst),
            "ran while an operation was in flight"
        );
        assert!(g.has_pending());
        drop(op);
        for _ in 0..20 {
            g.poll(0);
            g.poll(1);
        }
        assert!(done.load(core::sync::atomic::Ordering::SeqCst));
        assert!(!g.has_pending());
    }

    #[test]
    fn operations_started_after_defer_do_not_delay_it() {
        let g = Generations::new(1);
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        g.defer(Box::new(move || {
            flag.store(true, core::sync::atomic::Ordering::SeqCst)
        }));
        for _ in 0..2 {
            assert!(g.poll(0));
        }
        let _late = g.enter(0);
        // The late operation is in the newest generation; the older slot is empty.
        assert!(g.poll(0));
        assert!(done.load(core::sync::atomic::Ordering::SeqCst));
    }
}
