//! A futex at user level: wait on a 32-bit word while it holds an expected value, wake waiters
//! of a word. Waiters queue in process-wide buckets hashed by the word's address, one spin lock
//! per bucket; the kernel is not involved.
//!
//! No lost wake-ups: a waiter compares the word and queues itself under the bucket lock; a waker
//! changes the word before it takes that lock to dequeue. So either the waiter sees the new value
//! (its lock came after the waker's), or the waker finds it queued. A dequeued waiter is marked
//! woken under the lock and then unparked; park/unpark tokens cover a wake that lands before the
//! waiter has switched out.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};

use super::context::{self, Current};
use super::sched::{self, NoPreempt, Tcb};

const BUCKET_BITS: u32 = 8;

/// Waiters of the words that hash to one bucket, in arrival order.
type Bucket = spin::Mutex<VecDeque<(usize, Arc<Tcb>)>>;

static BUCKETS: [Bucket; 1 << BUCKET_BITS] =
    [const { spin::Mutex::new(VecDeque::new()) }; 1 << BUCKET_BITS];

fn bucket(address: usize) -> &'static Bucket {
    let hash = ((address as u64) >> 2).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - BUCKET_BITS);
    &BUCKETS[hash as usize]
}

/// Blocks the calling user-level thread while `*word == expected`, until a [`wake`] of `word`.
/// May return spuriously, so callers re-check in a loop. Outside a user-level thread it only
/// spins once (a spurious return).
pub fn wait(word: &AtomicU32, expected: u32) {
    wait_inner(word, expected, None);
}

/// Like [`wait`], but gives up when the platform clock reaches `deadline_ns`. Returns `false`
/// only on a timeout.
pub fn wait_until(word: &AtomicU32, expected: u32, deadline_ns: u64) -> bool {
    wait_inner(word, expected, Some(deadline_ns))
}

fn wait_inner(word: &AtomicU32, expected: u32, deadline_ns: Option<u64>) -> bool {
    let Some(Current::Thread(cur)) = context::current() else {
        core::hint::spin_loop();
        return true;
    };
    let me = cur.arc();
    let address = word as *const AtomicU32 as usize;
    let bucket = bucket(address);
    {
        // Bucket locks are taken by schedulers too: never preempted while held.
        let _section = NoPreempt::of(cur);
        let mut waiters = bucket.lock();
        if word.load(Ordering::SeqCst) != expected {
            return true;
        }
        me.futex_woken.store(false, Ordering::Relaxed);
        waiters.push_back((address, me.clone()));
    }
    loop {
        if me.futex_woken.load(Ordering::Acquire) {
            return true;
        }
        if let Some(deadline) = deadline_ns {
            if sched::now_ns() >= deadline {
                let _section = NoPreempt::of(cur);
                let mut waiters = bucket.lock();
                if me.futex_woken.load(Ordering::Relaxed) {
                    // A waker took us just now; its unpark token will be a spurious one.
                    return true;
                }
                waiters.retain(|(_, t)| !Arc::ptr_eq(t, &me));
                return false;
            }
        }
        sched::park_inner(deadline_ns);
    }
}

/// Wakes up to `n` threads waiting on `word` (oldest first) and returns how many. Change the
/// word before calling it. Works from anywhere, including outside a runtime.
pub fn wake(word: &AtomicU32, n: usize) -> usize {
    const BATCH: usize = 8;
    let address = word as *const AtomicU32 as usize;
    let bucket = bucket(address);
    let mut woken = 0;
    while woken < n {
        // Dequeue a few under the lock, unpark them after it (unparking may kick a dispatcher).
        let mut batch: [Option<Arc<Tcb>>; BATCH] = Default::default();
        let mut taken = 0;
        {
            let _section = NoPreempt::enter();
            let mut waiters = bucket.lock();
            let mut i = 0;
            while i < waiters.len() && taken < BATCH && woken + taken < n {
                if waiters[i].0 == address {
                    if let Some((_, tcb)) = waiters.remove(i) {
                        tcb.futex_woken.store(true, Ordering::Release);
                        batch[taken] = Some(tcb);
                        taken += 1;
                    }
                } else {
                    i += 1;
                }
            }
        }
        for tcb in batch.iter().flatten() {
            tcb.unpark();
        }
        woken += taken;
        if taken < BATCH {
            break;
        }
    }
    woken
}
