//! The runtime on K42 itself: [`K42Platform`] implements [`Platform`] with K42 system calls
//! (idle = `block` the dispatcher, kick = a soft interrupt) and, if asked, takes upcalls, so a
//! thread whose call would block the dispatcher in the kernel (a PPC call to a busy server) is
//! parked at user level while the dispatcher runs its other threads.
//!
//! With preemption ([`K42Platform::with_preemption`]) a dispatcher whose process has more than
//! one thread asks the kernel for a tick every [`PREEMPTION_TICK_NS`] of its running time
//! (`sys::tick`); the interrupt upcall of a tick, or of a kick, preempts the running thread
//! ([`super::preempt`]), keeping the dispatcher's PPC buffer for it across the switch.
//!
//! Upcall handling stays lock-free where it must: an interrupt upcall can land anywhere
//! (inside the scheduler, holding an inbox or futex-bucket lock), so it only records the
//! soft-interrupt bits, which the dispatcher's scheduler handles at its next pass
//! ([`Platform::poll`]). A blocked upcall lands at a system-call site of a thread (or of code
//! outside any thread), where blocking is as safe as in any call: the thread keeps a copy of the
//! dispatcher's PPC buffer (its call's data, which other threads may overwrite meanwhile), waits
//! on the page's retry count, puts the copy back and returns, which re-issues the call. A
//! page-fault upcall (a paged memory object's page its pager has yet to fill) is waited out the
//! same way, and returning retries the access. It lands where the thread touched the page, which
//! is the program's own code, never the runtime's (whose memory is never paged).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{current, futex, Platform};
use crate::kabi::{self, DispatcherPage, MAX_DISPATCHERS};
use crate::sys::{self, Upcall};

/// The soft-interrupt bit that kicks an idle dispatcher.
pub const SOFT_INTERRUPT_KICK: u64 = 1;

/// How often a dispatcher running one of several threads is ticked, so that thread gives way.
pub const PREEMPTION_TICK_NS: u64 = 10_000_000;

/// Soft-interrupt bits taken by upcalls, not yet handled by the dispatcher's scheduler.
static TAKEN: [AtomicU64; MAX_DISPATCHERS] = [const { AtomicU64::new(0) }; MAX_DISPATCHERS];
/// Bits the runtime does not handle itself, kept for the program.
static FOR_PROGRAM: [AtomicU64; MAX_DISPATCHERS] = [const { AtomicU64::new(0) }; MAX_DISPATCHERS];
static UPCALLS_ON: [AtomicBool; MAX_DISPATCHERS] =
    [const { AtomicBool::new(false) }; MAX_DISPATCHERS];
/// Whether this process's runtime preempts threads (set by a preemptive platform).
static PREEMPTIVE: AtomicBool = AtomicBool::new(false);
static INTERRUPT_UPCALLS: AtomicU64 = AtomicU64::new(0);
static BLOCKED_UPCALLS: AtomicU64 = AtomicU64::new(0);
static PAGE_FAULT_UPCALLS: AtomicU64 = AtomicU64::new(0);

/// Upcalls this process has taken so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpcallCounts {
    /// Interrupt upcalls (soft interrupts while running).
    pub interrupts: u64,
    /// Blocked upcalls (calls that would have blocked the dispatcher).
    pub blocked: u64,
    /// Page-fault upcalls (pages a pager had yet to fill).
    pub page_faults: u64,
}

/// [`Platform`] over K42 system calls, for a process whose dispatchers are `0..dispatchers`.
#[derive(Debug)]
pub struct K42Platform {
    pid: u64,
    dispatchers: usize,
    upcalls: bool,
    preemptive: bool,
}

impl K42Platform {
    /// The platform of this process, with `dispatchers` dispatchers, without upcalls.
    pub fn new(dispatchers: usize) -> K42Platform {
        K42Platform {
            pid: sys::dispatcher_page(0).pid,
            dispatchers: dispatchers.max(1),
            upcalls: false,
            preemptive: false,
        }
    }

    /// Takes upcalls on every dispatcher (each turns them on when its scheduler starts).
    pub fn with_upcalls(mut self) -> K42Platform {
        self.upcalls = true;
        self
    }

    /// Takes upcalls (see [`K42Platform::with_upcalls`]) and preempts threads: a running
    /// thread gives way to the dispatcher's other runnable ones every [`PREEMPTION_TICK_NS`]
    /// of running while the process has more than one thread.
    pub fn with_preemption(mut self) -> K42Platform {
        self.upcalls = true;
        self.preemptive = true;
        PREEMPTIVE.store(true, Ordering::Release);
        self
    }

    /// Upcalls taken so far by the process.
    pub fn upcall_counts() -> UpcallCounts {
        UpcallCounts {
            interrupts: INTERRUPT_UPCALLS.load(Ordering::Relaxed),
            blocked: BLOCKED_UPCALLS.load(Ordering::Relaxed),
            page_faults: PAGE_FAULT_UPCALLS.load(Ordering::Relaxed),
        }
    }

    /// Takes the soft-interrupt bits of dispatcher `index` that the runtime left for the
    /// program (everything but its kick and retry bits).
    pub fn take_soft_interrupts(index: usize) -> u64 {
        FOR_PROGRAM[index % MAX_DISPATCHERS].swap(0, Ordering::AcqRel)
    }
}

fn index_of(page: &DispatcherPage) -> usize {
    page.index as usize % MAX_DISPATCHERS
}

fn on_upcall(page: &'static DispatcherPage, upcall: Upcall) {
    match upcall {
        Upcall::Interrupt => {
            INTERRUPT_UPCALLS.fetch_add(1, Ordering::Relaxed);
            let bits = page.soft_interrupts.swap(0, Ordering::AcqRel);
            TAKEN[index_of(page)].fetch_or(bits & !kabi::SOFT_INTERRUPT_TICK, Ordering::AcqRel);
            let interrupting = kabi::SOFT_INTERRUPT_TICK | SOFT_INTERRUPT_KICK;
            if bits & interrupting != 0 && PREEMPTIVE.load(Ordering::Acquire) {
                // Here the interrupted code is suspended below us on its own stack: a thread
                // yields (or will, at the end of its runtime section); a scheduler carries on.
                super::preempt();
            }
        }
        Upcall::Blocked { retry_count } => {
            BLOCKED_UPCALLS.fetch_add(1, Ordering::Relaxed);
            wait_to_retry(page, retry_count);
        }
        Upcall::PageFault { retry_count, .. } => {
            PAGE_FAULT_UPCALLS.fetch_add(1, Ordering::Relaxed);
            wait_to_retry(page, retry_count);
        }
        // Declined when upcalls are turned on: the kernel ends the process, as without them.
        Upcall::Trap { signal, .. } => sys::exit(128 + i64::from(signal)),
    }
}

/// The thread the kernel upcalled about (a blocked call, a page not there yet) waits at user
/// level until the kernel bumps the retry count past `retry_count`, then returns, which retries
/// its call or access.
fn wait_to_retry(page: &'static DispatcherPage, retry_count: u32) {
    if current().is_some() {
        let index = page.index as usize;
        let call_data = sys::ppc_buffer_save(index);
        futex::wait(&page.retry_count, retry_count);
        sys::ppc_buffer_restore(index, &call_data);
    } else {
        // Not a thread of ours (the scheduler itself, or code before the runtime): nothing
        // else to run; let other dispatchers have the CPU, then retry.
        sys::yield_now();
    }
}

impl Platform for K42Platform {
    fn now_ns(&self) -> u64 {
        sys::now_ns()
    }

    fn dispatcher_count(&self) -> usize {
        self.dispatchers
    }

    fn idle(&self, dispatcher: usize, deadline_ns: Option<u64>) {
        let page = sys::dispatcher_page(dispatcher);
        // Disabled while deciding, so no upcall takes bits between the look and the block.
        page.disabled.store(1, Ordering::Release);
        let taken = &TAKEN[dispatcher % MAX_DISPATCHERS];
        if taken.load(Ordering::Acquire) == 0 && page.soft_interrupts.load(Ordering::Acquire) == 0 {
            let bits = sys::block(deadline_ns.map_or(0, |d| d.max(1)));
            taken.fetch_or(bits, Ordering::AcqRel);
        }
        page.disabled.store(0, Ordering::Release);
        // Bits that arrived while disabled stay in the page; `poll` takes them next.
    }

    fn kick(&self, dispatcher: usize) {
        let _ = sys::soft_interrupt(self.pid, dispatcher, SOFT_INTERRUPT_KICK);
    }

    fn poll(&self, dispatcher: usize) {
        let index = dispatcher % MAX_DISPATCHERS;
        let page = sys::dispatcher_page(dispatcher);
        if self.upcalls && !UPCALLS_ON[index].swap(true, Ordering::AcqRel) {
            // Exceptions end the process in the kernel, as without upcalls.
            sys::decline_upcall(dispatcher, kabi::UPCALL_TRAP);
            sys::enable_upcalls(dispatcher, sys::new_upcall_stack(), on_upcall);
        }
        let bits =
            TAKEN[index].swap(0, Ordering::AcqRel) | page.soft_interrupts.swap(0, Ordering::AcqRel);
        if bits & kabi::SOFT_INTERRUPT_RETRY != 0 {
            futex::wake(&page.retry_count, usize::MAX);
        }
        let rest =
            bits & !(kabi::SOFT_INTERRUPT_RETRY | kabi::SOFT_INTERRUPT_TICK | SOFT_INTERRUPT_KICK);
        if rest != 0 {
            FOR_PROGRAM[index].fetch_or(rest, Ordering::AcqRel);
        }
    }

    fn preemptive(&self) -> bool {
        self.preemptive
    }

    fn set_ticks(&self, _dispatcher: usize, on: bool) {
        let _ = sys::tick(if on { PREEMPTION_TICK_NS } else { 0 });
    }

    fn around_preemption(&self, dispatcher: usize, switch: &mut dyn FnMut()) {
        // The thread may have filled the PPC buffer for a call it has yet to make; the others
        // may call meanwhile. It gets it back wherever it resumes.
        let call_data = sys::ppc_buffer_save(dispatcher);
        switch();
        let here = super::current_dispatcher().unwrap_or(dispatcher);
        sys::ppc_buffer_restore(here, &call_data);
    }
}
