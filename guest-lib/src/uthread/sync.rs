//! Blocking primitives built on the user-level futex, as programs would build them: a mutex, a
//! condition variable and an unbounded multi-producer channel. Contended waits block the
//! user-level thread, never the dispatcher; outside a runtime they spin.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

use super::futex::{wait, wait_until, wake};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and someone may be waiting.
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock whose waiters block at user level.
///
/// The futex word decides who owns the lock; the data sits in a spin lock that only the owner
/// ever takes, so it never spins.
pub struct Mutex<T> {
    state: AtomicU32,
    data: spin::Mutex<T>,
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Some(guard) => f.debug_struct("Mutex").field("data", &*guard).finish(),
            None => f.debug_struct("Mutex").field("data", &"<locked>").finish(),
        }
    }
}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
            data: spin::Mutex::new(value),
        }
    }

    /// Locks, blocking the calling user-level thread while another holds the lock.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Mark it contended so the owner wakes someone, then sleep until it is free.
            while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
                wait(&self.state, CONTENDED);
            }
        }
        self.guard()
    }

    /// Locks if the lock is free.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.guard())
    }

    fn guard(&self) -> MutexGuard<'_, T> {
        // The previous owner released the data before the state, and we acquired the state.
        let data = self
            .data
            .try_lock()
            .expect("the owner of a uthread::Mutex finds its data free");
        MutexGuard {
            mutex: self,
            data: Some(data),
        }
    }

    /// The data, through exclusive access to the mutex.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Consumes the mutex, returning the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

/// Holds a [`Mutex`] locked; unlocks it when dropped.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    /// `Some` until the guard is dropped.
    data: Option<spin::MutexGuard<'a, T>>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data.as_deref().expect("a live guard holds its data")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.data
            .as_deref_mut()
            .expect("a live guard holds its data")
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.data = None;
        if self.mutex.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            wake(&self.mutex.state, 1);
        }
    }
}

/// A condition variable for [`Mutex`]: a sequence number that waiters sleep on.
#[derive(Default)]
pub struct Condvar {
    seq: AtomicU32,
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

impl Condvar {
    /// A condition variable nobody waits on.
    pub const fn new() -> Self {
        Condvar {
            seq: AtomicU32::new(0),
        }
    }

    /// Unlocks, waits for a notification (or spuriously), and relocks.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        // Read under the lock: a notifier that changed the condition after we checked it bumps
        // the number after this read, so the wait below returns at once.
        let seq = self.seq.load(Ordering::Relaxed);
        let mutex = guard.mutex;
        drop(guard);
        wait(&self.seq, seq);
        mutex.lock()
    }

    /// Waits while `condition` holds.
    pub fn wait_while<'a, T>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> MutexGuard<'a, T> {
        while condition(&mut guard) {
            guard = self.wait(guard);
        }
        guard
    }

    /// Like [`Condvar::wait`] with a deadline on the platform clock; the flag is `false` if the
    /// deadline passed.
    pub fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline_ns: u64,
    ) -> (MutexGuard<'a, T>, bool) {
        let seq = self.seq.load(Ordering::Relaxed);
        let mutex = guard.mutex;
        drop(guard);
        let notified = wait_until(&self.seq, seq, deadline_ns);
        (mutex.lock(), notified)
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        wake(&self.seq, 1);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        wake(&self.seq, usize::MAX);
    }
}

struct Channel<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receiver: bool,
}

/// The sending half of a [`channel`]; clone it for more producers.
pub struct Sender<T> {
    channel: Arc<Channel<T>>,
}

/// The receiving half of a [`channel`].
pub struct Receiver<T> {
    channel: Arc<Channel<T>>,
}

/// A send to a channel whose receiver is gone; holds the value back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a channel whose receiver was dropped")
    }
}

/// An unbounded multi-producer, single-consumer channel between user-level threads.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let channel = Arc::new(Channel {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver: true,
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            channel: channel.clone(),
        },
        Receiver { channel },
    )
}

impl<T> Sender<T> {
    /// Queues `value`; fails only if the receiver was dropped.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut state = self.channel.state.lock();
        if !state.receiver {
            return Err(SendError(value));
        }
        state.queue.push_back(value);
        drop(state);
        self.channel.ready.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.channel.state.lock().senders += 1;
        Sender {
            channel: self.channel.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.channel.state.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.channel.ready.notify_all();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    /// The next value, blocking while the channel is empty; `None` once it is empty and every
    /// sender is gone.
    pub fn recv(&self) -> Option<T> {
        let mut state = self.channel.state.lock();
        loop {
            if let Some(value) = state.queue.pop_front() {
                return Some(value);
            }
            if state.senders == 0 {
                return None;
            }
            state = self.channel.ready.wait(state);
        }
    }

    /// The next value if one is queued.
    pub fn try_recv(&self) -> Option<T> {
        self.channel.state.lock().queue.pop_front()
    }

    /// The values as they arrive, until every sender is gone.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        core::iter::from_fn(|| self.recv())
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.channel.state.lock().receiver = false;
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
