//! The two lock-free protocols of the runtime, kept apart so loom can check them: a thread's
//! park word and a dispatcher's idle flag. Run the checks with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p k42-guest-lib --lib uthread::protocol`.

use crate::sync::{AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::SeqCst};

// The park word: a generation (counts parks, above the two low bits) and a state.
const EMPTY: u64 = 0;
const NOTIFIED: u64 = 1;
const PARKED: u64 = 2;
const STATE: u64 = 3;
const GENERATION: u64 = 4;

/// Park/unpark of one thread: at most one pending token, and a parked state that exactly one
/// party (an `unpark` or the timer of that very park) ends.
pub(crate) struct ParkWord(AtomicU64);

/// What the scheduler made of a thread that asked to park.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Parked; the value names this park (for its timer).
    Parked(u64),
    /// A token was pending: consumed, the thread runs on.
    Notified,
}

impl ParkWord {
    pub(crate) fn new() -> Self {
        ParkWord(AtomicU64::new(EMPTY))
    }

    /// The thread, before switching out to park: consumes a pending token if there is one.
    pub(crate) fn take_token(&self) -> bool {
        let mut word = self.0.load(Acquire);
        while word & STATE == NOTIFIED {
            match self
                .0
                .compare_exchange(word, word & !STATE, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
        false
    }

    /// Gives a token, or ends a park. `true` means the thread was parked and the caller now
    /// owns it (must make it runnable on its home dispatcher).
    pub(crate) fn unpark(&self) -> bool {
        let mut word = self.0.load(Acquire);
        loop {
            let (next, wakes) = match word & STATE {
                NOTIFIED => return false,
                EMPTY => (word | NOTIFIED, false),
                _ => (word & !STATE, true),
            };
            match self.0.compare_exchange(word, next, AcqRel, Acquire) {
                Ok(_) => return wakes,
                Err(now) => word = now,
            }
        }
    }

    /// The scheduler, once the thread's context is saved: parks it, or consumes the token that
    /// arrived meanwhile. Panics if the thread is already parked (a scheduler bug).
    pub(crate) fn commit(&self) -> Commit {
        let mut word = self.0.load(Acquire);
        loop {
            let next = match word & STATE {
                NOTIFIED => word & !STATE,
                EMPTY => (word & !STATE).wrapping_add(GENERATION) | PARKED,
                _ => panic!("a user-level thread parked twice"),
            };
            match self.0.compare_exchange(word, next, AcqRel, Acquire) {
                Ok(_) if next & STATE == PARKED => return Commit::Parked(next),
                Ok(_) => return Commit::Notified,
                Err(now) => word = now,
            }
        }
    }

    /// The timer of park `parked`: ends it if it is still going on. `true` means the caller
    /// owns the thread now.
    pub(crate) fn expire(&self, parked: u64) -> bool {
        self.0
            .compare_exchange(parked, parked & !STATE, AcqRel, Acquire)
            .is_ok()
    }
}

/// A dispatcher's idle flag. The scheduler announces it, re-checks its inbox (under the inbox
/// lock) and only then idles; a poster publishes to the inbox (under the same lock) and then
/// claims the kick. Either the re-check sees the post, or the claim sees the flag.
pub(crate) struct IdleFlag(AtomicUsize);

impl IdleFlag {
    pub(crate) fn new() -> Self {
        IdleFlag(AtomicUsize::new(0))
    }

    /// The scheduler is about to idle (re-check the inbox after this).
    pub(crate) fn announce(&self) {
        self.0.store(1, SeqCst);
    }

    /// The scheduler runs again (or decided not to idle).
    pub(crate) fn clear(&self) {
        self.0.store(0, SeqCst);
    }

    /// A poster, after publishing: whether it must kick the dispatcher. Only one of several
    /// posters kicks.
    pub(crate) fn claim_kick(&self) -> bool {
        self.0.swap(0, SeqCst) != 0
    }
}

#[cfg(all(test, loom))]
mod loom_checks {
    use super::*;
    use alloc::vec::Vec;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn an_unpark_racing_a_park_is_never_lost() {
        loom::model(|| {
            let word = Arc::new(ParkWord::new());
            let w = word.clone();
            let unparker = thread::spawn(move || w.unpark());
            // The parking thread, then its scheduler after the switch.
            let parked = !word.take_token() && matches!(word.commit(), Commit::Parked(_));
            let requeued = unparker.join().unwrap();
            // Parked exactly when the unpark took ownership of it; else it ran on.
            assert_eq!(parked, requeued);
        });
    }

    #[test]
    fn a_park_ends_once_between_timer_and_unpark_even_if_parked_again() {
        loom::model(|| {
            let word = Arc::new(ParkWord::new());
            let Commit::Parked(first) = word.commit() else {
                panic!("no token was pending");
            };
            let w = word.clone();
            let timer = thread::spawn(move || w.expire(first));
            let unparked = word.unpark();
            if unparked {
                // Resumed, the thread parks again: the old timer must not end this park.
                assert!(matches!(word.commit(), Commit::Parked(_)));
            }
            let expired = timer.join().unwrap();
            assert!(unparked ^ expired, "exactly one party ends the first park");
        });
    }

    #[test]
    fn a_post_racing_the_idle_decision_is_seen_or_kicks() {
        loom::model(|| {
            let flag = Arc::new(IdleFlag::new());
            let inbox = Arc::new(crate::sync::Mutex::new(0usize));
            let kicked = Arc::new(AtomicBool::new(false));
            let posters: Vec<_> = (0..2)
                .map(|_| {
                    let (flag, inbox, kicked) = (flag.clone(), inbox.clone(), kicked.clone());
                    thread::spawn(move || {
                        *inbox.lock() += 1;
                        if flag.claim_kick() {
                            kicked.store(true, SeqCst);
                        }
                    })
                })
                .collect();
            flag.announce();
            let sleeps = *inbox.lock() == 0;
            if !sleeps {
                flag.clear();
            }
            for p in posters {
                p.join().unwrap();
            }
            if sleeps {
                assert!(kicked.load(SeqCst), "a post after the idle decision kicks");
            }
        });
    }
}
