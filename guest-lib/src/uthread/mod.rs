//! The user-level half of K42's two-level scheduling: a thread library that runs inside each
//! process, on top of the dispatchers the kernel schedules.
//!
//! # Two levels
//!
//! The kernel never sees these threads. Its unit is the *dispatcher*: one per virtual CPU a
//! process runs on, each with its own entry points and save areas. The kernel decides which
//! dispatcher runs on which CPU and when; this library decides which of the process's threads
//! a dispatcher runs. A switch between two threads of a process is therefore a few dozen
//! instructions in ring 3 and never enters the kernel, and a process may pick its own policy.
//!
//! # What one dispatcher holds
//!
//! Every dispatcher has a scheduler (a loop on its own stack, entered through
//! [`Runtime::run_dispatcher`]) that owns, privately, a run queue and a timer queue:
//!
//! - The run queue has [`PRIORITIES`] strict levels (0 first). Within a level, threads get the
//!   processor in proportion to their *share* (tickets) by stride scheduling: each dispatch
//!   advances the thread's pass by `STRIDE / share`, and the smallest pass runs next. A dispatch
//!   lasts until the thread yields, blocks, sleeps, migrates, ends or is preempted (on a
//!   preemptive platform, see Limits), and counts as one quantum.
//! - The timer queue orders sleeping (or waiting-with-deadline) threads by deadline; a dispatcher
//!   with nothing to run asks the platform to idle it until the earliest deadline.
//!
//! Other dispatchers never touch those queues. They reach a dispatcher through its *inbox*, a
//! short spin-locked list it drains on every pass of its loop: a thread woken from elsewhere, a
//! migrated thread and a freshly spawned thread all arrive there. A dispatcher with no work sets
//! its `idle` flag, looks at its inbox once more, and only then idles; whoever posts to an inbox
//! clears the flag and, if it was set, kicks the dispatcher ([`Platform::kick`]). The inbox lock
//! orders the two sides, so a post is either seen by the re-check or answered by a kick.
//!
//! # Finding oneself without thread-local storage
//!
//! The guest has no TLS and no OS to ask "which thread am I". Every stack here (threads' and the
//! schedulers') is [`STACK_SIZE`] bytes, a power of two, allocated aligned to its size, with a
//! header at its lowest address naming its thread or dispatcher; masking the stack pointer finds
//! the header. A process-wide, lock-free set of our stack bases is consulted first, so code that
//! is not on one of our stacks (a host test's main thread) is told so instead of reading stray
//! memory.
//!
//! # Blocking at user level
//!
//! [`wait`] and [`wake`] are a futex kept at user level: waiters are queued in process-wide
//! buckets hashed by address, each bucket under a spin lock, and the value is checked under that
//! lock so a wake between the check and the sleep is never lost. A woken thread goes to its own
//! dispatcher's inbox. [`Mutex`], [`Condvar`] and [`channel`] are built on them, as users would,
//! and so are [`park`] and [`Thread::unpark`]: their token is a futex word of its own, so the
//! runtime's internal blocking never consumes a token meant for the program.
//!
//! # The platform
//!
//! The runtime asks little of the system below it ([`Platform`]): a clock, the number of
//! dispatchers, "idle this dispatcher until kicked or a deadline", and "kick that dispatcher". In
//! the guest these are K42 system calls (block the dispatcher, send it a soft interrupt; see
//! [`k42`], which also takes K42's upcalls); host tests use OS threads.
//!
//! # Limits
//!
//! - Without a preemptive platform, threads are cooperative among themselves: a more urgent
//!   thread that becomes runnable waits for the running one to yield or block (the kernel still
//!   preempts whole dispatchers). With one ([`Platform::preemptive`]; on K42,
//!   [`k42::K42Platform::with_preemption`]) a running thread is made to yield at the
//!   platform's ticks, which run only while the process has more than one thread, except inside
//!   [`NoPreempt`] sections (the runtime's own locks and switches, the allocator); see
//!   [`preempt`]. A thread preempted while it holds a plain spin lock of the program leaves the
//!   others spinning until their own preemption: use [`Mutex`].
//! - A panic in a thread aborts (there is no unwinding across a context switch).
//! - Stacks are a fixed [`STACK_SIZE`] with no guard page, only a header checked on every switch.
//! - The inbox and futex-bucket locks spin; a dispatcher preempted by the kernel while holding
//!   one delays the others until it runs again.
//! - A thread that never finishes (blocked forever) keeps its stack and the runtime alive.
//! - MXCSR and the x87 control word are per thread only in builds with SSE (the host); the
//!   guest's soft-float programs have no such state to keep.

mod context;
mod futex;
pub mod k42;
mod protocol;
mod sched;
mod sync;

pub use context::STACK_SIZE;
pub use futex::{wait, wait_until, wake};
pub use sched::{
    current, current_dispatcher, migrate_to, now_ns, park, park_until, preempt, sleep_for,
    sleep_until, spawn, yield_now, Builder, DispatcherStats, JoinHandle, NoPreempt, Runtime,
    Thread, DEFAULT_PRIORITY, DEFAULT_SHARE, MAX_SHARE, PRIORITIES,
};
pub use sync::{channel, Condvar, Mutex, MutexGuard, Receiver, SendError, Sender};

/// What the runtime needs from the system below it: a clock and a way to idle and wake
/// dispatchers. The guest implements it with K42 system calls; host tests with OS threads.
pub trait Platform: Send + Sync + 'static {
    /// A monotonic clock in nanoseconds (any origin), the time base of all deadlines.
    fn now_ns(&self) -> u64;

    /// How many dispatchers the process has (fixed for the runtime's life, at least one).
    fn dispatcher_count(&self) -> usize;

    /// Blocks `dispatcher` (called on it) until it is kicked or `deadline_ns` passes.
    ///
    /// A [`Platform::kick`] that arrives after the runtime decided to idle but before this call
    /// blocks must still make it return (the kick stays pending, like a soft interrupt).
    /// Spurious returns are allowed.
    fn idle(&self, dispatcher: usize, deadline_ns: Option<u64>);

    /// Wakes `dispatcher` out of [`Platform::idle`] (or makes its next idle return at once).
    /// The runtime calls it only when the dispatcher flagged itself idle.
    fn kick(&self, dispatcher: usize);

    /// Called by `dispatcher`'s scheduler at the start of each pass, on its own stack with no
    /// lock held: where a platform handles events it recorded asynchronously. Does nothing by
    /// default.
    fn poll(&self, _dispatcher: usize) {}

    /// Whether the platform interrupts running threads (ticks, and kicks of busy dispatchers)
    /// and calls [`preempt`] where they land. False by default: threads are cooperative.
    fn preemptive(&self) -> bool {
        false
    }

    /// Starts (`on`) or stops the ticks of `dispatcher` (called on it, by its scheduler, when
    /// the process goes from one thread to more or back). Only called if
    /// [`Platform::preemptive`].
    fn set_ticks(&self, _dispatcher: usize, _on: bool) {}

    /// Runs `switch` (the preempted thread's yield) on `dispatcher`, keeping around it whatever
    /// the dispatcher holds for its running thread that other threads could overwrite
    /// meanwhile (K42: the PPC buffer). Just runs it by default.
    fn around_preemption(&self, _dispatcher: usize, switch: &mut dyn FnMut()) {
        switch();
    }
}
