//! Linux threads (`clone` with `CLONE_VM | CLONE_THREAD`) as user-level threads of the process,
//! as K42 ran them: the kernel sees one dispatcher; this module switches between the program's
//! threads in ring 3, each on the stack the C library gave it, with its own FS base (TLS).
//!
//! A thread runs until it waits (a futex, `sched_yield`, or [`wait_for`] soft-interrupt bits or
//! a deadline: a sleep, a pipe, `wait4`, console input, `poll`), exits, or is preempted: while
//! the process has more than one thread, the dispatcher asks the kernel for a tick every
//! [`TICK_NS`] of running, and the interrupt upcall of a tick that lands in the program's own
//! code switches threads right there ([`on_upcall`]); one that lands in the personality (which
//! holds its locks there) is taken as the system call returns ([`preempt_if_wanted`]). Futex
//! waits stay in the process: no kernel call unless every thread waits, and then one `block`
//! until the earliest deadline or a soft interrupt, whose bits wake the threads waiting for
//! them ([`bits_arrived`]).
//!
//! No lock is held across a switch: the table is locked to decide, unlocked, then the stacks
//! are switched.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use k42_linux_abi::errno;
use k42_linux_abi::futex::{self, FUTEX_BITSET_MATCH_ANY};
use k42_linux_abi::process::{
    CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID, CLONE_FILES, CLONE_FS, CLONE_PARENT_SETTID,
    CLONE_SETTLS, CLONE_SIGHAND, CLONE_SYSVSEM, CLONE_THREAD, CLONE_VM,
};
use k42_linux_abi::signal::StackT;
use k42_rt::{kabi, sys};
use spin::Mutex;

use crate::{err, get, put, Ret};

/// What a thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Runnable,
    /// In `futex` wait on `addr` (with `bits`), until `deadline` (0: none).
    Waiting {
        addr: u64,
        bits: u32,
        deadline: u64,
    },
    /// Waiting for soft-interrupt bits in `mask`, until `deadline` (0: none).
    Awaiting {
        mask: u64,
        deadline: u64,
    },
    Exited,
}

struct Thread {
    tid: u64,
    /// The stack pointer while switched out.
    rsp: u64,
    /// The FS base (the C library's thread pointer) while switched out.
    fs_base: u64,
    /// Its blocked-signal mask while switched out (each thread has its own, as on Linux).
    sigmask: u64,
    /// Its alternate signal stack while switched out (each thread has its own, as on Linux).
    alt_stack: StackT,
    /// Zeroed and futex-woken at exit (`CLONE_CHILD_CLEARTID`, `set_tid_address`).
    clear_tid: u64,
    state: State,
    /// Whether the last wait ended by a wake (not by its deadline).
    woken: bool,
    /// The soft-interrupt bits that ended its last [`wait_for`].
    arrived: u64,
    /// Inside a [`wait_for`] that signals end (woken or not yet).
    interruptible: bool,
    /// Set when a signal's handler ran on another thread while this one waited (see
    /// [`interrupt_waits`]).
    interrupted: bool,
    /// An unmap of its own stack, done once it has exited (see [`defer_own_stack_unmap`]).
    stack_unmap: Option<(u64, u64)>,
}

struct Threads {
    list: Vec<Thread>,
    /// Index of the running thread.
    current: usize,
    /// Threads created so far (for thread ids).
    created: u64,
    /// Bits that arrived while no thread waited for them (for example a child's exit taken by
    /// an interrupt upcall between a caller's check and its wait): the next [`wait_for`] that
    /// asks for one takes it at once instead of sleeping through it.
    unclaimed: u64,
}

static THREADS: Mutex<Threads> = Mutex::new(Threads {
    list: Vec::new(),
    current: 0,
    created: 0,
    unclaimed: 0,
});

/// How often a process with several threads is ticked, so the running one gives way.
const TICK_NS: u64 = 10_000_000;
/// Whether this process asked for ticks (it has more than one thread).
static TICKING: AtomicBool = AtomicBool::new(false);
/// A tick landed inside the personality; the thread gives way as its system call returns.
static PREEMPT_WANTED: AtomicBool = AtomicBool::new(false);
/// Top of the upcall stack (0 until made; the trampoline leaves it at once).
static UPCALL_STACK_TOP: AtomicU64 = AtomicU64::new(0);

/// Starts or stops the ticks (and takes upcalls from the first start in this process).
fn set_ticking(on: bool) {
    if TICKING.swap(on, Ordering::AcqRel) == on {
        return;
    }
    if on {
        take_upcalls();
    }
    // Periods within the kernel's bounds are always accepted.
    let _ = sys::tick(if on { TICK_NS } else { 0 });
}

/// Has the kernel upcall this process (its one dispatcher) for interrupts and traps, once, as
/// it starts (and again in a forked child, whose dispatcher starts without an entry point):
/// for signals from other processes while the program runs without system calls, for
/// preemption between threads, and for faults. A busy server (or a pager) is still waited
/// for in the kernel.
pub(crate) fn take_upcalls() {
    let page = k42_rt::dispatcher_page(0);
    if page.upcall_entry.load(Ordering::Acquire) != 0 {
        return;
    }
    let mut top = UPCALL_STACK_TOP.load(Ordering::Relaxed);
    if top == 0 {
        // Kept across fork: the child's copy of the heap holds it too.
        top = sys::new_upcall_stack();
        UPCALL_STACK_TOP.store(top, Ordering::Relaxed);
    }
    sys::decline_upcall(0, kabi::UPCALL_BLOCKED);
    sys::decline_upcall(0, kabi::UPCALL_PAGE_FAULT);
    sys::enable_upcalls(0, top, on_upcall);
}

/// The upcall (on the interrupted thread's stack, its registers saved below). A trap becomes
/// its signal ([`crate::signals::fault`]). An interrupt is a signal from another process, a
/// tick, or another soft interrupt, while the program runs. In the program's own code no lock
/// of ours is held: pending signals are delivered at once (a handler runs on the interrupted
/// thread's stack; a default action that ends the process ends it), then the thread gives way
/// if a tick came. In the personality both happen as its call returns. Bits other than
/// signals and the tick stay in the page for those who take them.
fn on_upcall(page: &'static kabi::DispatcherPage, upcall: sys::Upcall) {
    // SAFETY: the save area is plain memory of our own dispatcher page; a nested upcall may
    // rewrite it meanwhile, so it is read once, volatile, and only steers the choices below.
    let rip = unsafe { core::ptr::addr_of!(page.save_area.rip).read_volatile() };
    // The program's own code: anything else is ours (the personality, or a system call of it
    // returning through the kernel's entry page) or on its way to us (the sled page).
    let in_program =
        crate::USER_POINTERS.contains(&rip) && !kabi::LINUX_PERSONALITY_AREA.contains(&rip);
    if let sys::Upcall::Trap {
        address,
        vector,
        error_code,
        signal,
    } = upcall
    {
        let fault = crate::signals::Fault {
            signal,
            vector,
            error_code,
            address,
            rip,
        };
        crate::signals::fault(&fault, in_program);
        return;
    }
    if upcall != sys::Upcall::Interrupt {
        return;
    }
    let ticking = TICKING.load(Ordering::Acquire);
    let ticked = ticking
        && page
            .soft_interrupts
            .fetch_and(!kabi::SOFT_INTERRUPT_TICK, Ordering::AcqRel)
            & kabi::SOFT_INTERRUPT_TICK
            != 0;
    if !in_program {
        if ticked {
            PREEMPT_WANTED.store(true, Ordering::Release);
        }
        return;
    }
    crate::signals::deliver();
    if ticking {
        preempt();
    }
}

/// Lets the other runnable threads run first, if there are any; for preemption, so unlike
/// [`yield_now`] it never yields the dispatcher.
fn preempt() {
    {
        let mut threads = THREADS.lock();
        if threads.list.len() < 2 {
            return;
        }
        let me = threads.current;
        threads.list[me].state = State::Runnable;
    }
    // Takes bits other threads wait for and expires their deadlines first.
    schedule();
}

/// As a system call returns: gives way if a tick arrived while the personality ran.
pub fn preempt_if_wanted() {
    if PREEMPT_WANTED.load(Ordering::Relaxed) && PREEMPT_WANTED.swap(false, Ordering::AcqRel) {
        preempt();
    }
}

/// Thread ids of new threads are `pid + n * TID_STRIDE`: distinct from every process id.
const TID_STRIDE: u64 = 1 << 20;

// switch(save: *mut u64 (rdi), load: u64 (rsi)): saves the callee-saved registers on this
// stack and its pointer at `save`, then continues on the stack `load` (saved the same way, or
// prepared by `spawn` to return into `k42_linux_thread_start`).
core::arch::global_asm!(
    r#"
    .global k42_linux_switch
k42_linux_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    .global k42_linux_thread_start
k42_linux_thread_start:
    pop rdi
    pop rsi
    pop rdx
    pop r10
    pop r8
    pop r9
    popfq
    pop rcx
    pop rsp
    mov eax, 0
    jmp rcx
    "#
);

extern "C" {
    fn k42_linux_switch(save: *mut u64, load: u64);
    fn k42_linux_thread_start();
}

fn fs_base() -> u64 {
    let base: u64;
    // SAFETY: RDFSBASE only reads the FS base (the personality enables nothing else; see
    // `arch_prctl`).
    unsafe { core::arch::asm!("rdfsbase {}", out(reg) base, options(nostack)) };
    base
}

fn set_fs_base(base: u64) {
    // SAFETY: WRFSBASE sets the program's thread pointer; this code never uses FS itself.
    unsafe { core::arch::asm!("wrfsbase {}", in(reg) base, options(nostack)) };
}

impl Threads {
    /// The table, with the main thread in it once.
    fn ensure_main(&mut self) {
        if self.list.is_empty() {
            self.list.push(Thread {
                tid: k42_rt::pid(),
                rsp: 0,
                fs_base: 0,
                sigmask: 0,
                alt_stack: crate::signals::NO_ALT_STACK,
                clear_tid: 0,
                state: State::Running,
                woken: false,
                arrived: 0,
                interruptible: false,
                interrupted: false,
                stack_unmap: None,
            });
            self.current = 0;
        }
    }

    fn live(&self) -> usize {
        self.list
            .iter()
            .filter(|t| t.state != State::Exited)
            .count()
    }

    /// Wakes up to `count` threads waiting on `addr` whose bits meet `bits`.
    fn wake(&mut self, addr: u64, bits: u32, count: u64) -> u64 {
        let mut woken = 0;
        for t in self.list.iter_mut() {
            if woken == count {
                break;
            }
            if let State::Waiting {
                addr: a, bits: b, ..
            } = t.state
            {
                if a == addr && b & bits != 0 {
                    t.state = State::Runnable;
                    t.woken = true;
                    woken += 1;
                }
            }
        }
        woken
    }

    /// Makes threads whose deadline has passed runnable; returns the earliest deadline left
    /// (0: none).
    fn expire(&mut self, now: u64) -> u64 {
        let mut earliest = 0u64;
        for t in self.list.iter_mut() {
            let deadline = match t.state {
                State::Waiting { deadline, .. } | State::Awaiting { deadline, .. } => deadline,
                _ => continue,
            };
            if deadline == 0 {
                continue;
            }
            if deadline <= now {
                t.state = State::Runnable;
                t.woken = false;
            } else if earliest == 0 || deadline < earliest {
                earliest = deadline;
            }
        }
        earliest
    }

    /// Makes the threads waiting for any of `bits` runnable.
    fn bits_arrived(&mut self, bits: u64) {
        let mut claimed = 0;
        for t in self.list.iter_mut() {
            if let State::Awaiting { mask, .. } = t.state {
                if mask & bits != 0 {
                    t.state = State::Runnable;
                    t.arrived |= bits & mask;
                    claimed |= bits & mask;
                }
            }
        }
        self.unclaimed |= bits & !claimed;
    }

    /// The soft-interrupt bits some thread waits for.
    fn awaited(&self) -> u64 {
        self.list.iter().fold(0, |all, t| match t.state {
            State::Awaiting { mask, .. } => all | mask,
            _ => all,
        })
    }

    /// The next runnable thread after the current one (the current one last).
    fn next_runnable(&self) -> Option<usize> {
        let n = self.list.len();
        (1..=n)
            .map(|i| (self.current + i) % n)
            .find(|&i| self.list[i].state == State::Runnable)
    }
}

/// Runs other threads until the current one is runnable again, then returns on its stack.
/// The caller has set the current thread's state (anything but `Running`).
fn schedule() {
    loop {
        // Bits posted while threads ran wait in the dispatcher page until a `block` would
        // return them; take those some thread waits for now, so it runs in this round.
        let awaited = THREADS.lock().awaited();
        let word = &k42_rt::dispatcher_page(0).soft_interrupts;
        if word.load(Ordering::Relaxed) & awaited != 0 {
            crate::signals::absorb(word.fetch_and(!awaited, Ordering::AcqRel) & awaited);
        }
        let mut threads = THREADS.lock();
        let now = sys::now_ns();
        let earliest = threads.expire(now);
        // Exited threads are dropped here, by another thread: their switch is long over, and
        // their stacks may go now.
        let current_tid = threads.list[threads.current].tid;
        let mut unmaps = Vec::new();
        threads.list.retain(|t| {
            let gone = t.state == State::Exited && t.tid != current_tid;
            if gone {
                unmaps.extend(t.stack_unmap);
            }
            !gone
        });
        threads.current = threads
            .list
            .iter()
            .position(|t| t.tid == current_tid)
            .unwrap_or(0);
        let me = threads.current;
        for (addr, len) in unmaps {
            // The C library asked for it; a failure would have been its error to see, and
            // the thread that asked is gone.
            let _ = sys::unmap(addr, len);
        }
        match threads.next_runnable() {
            Some(next) if next == me => {
                threads.list[me].state = State::Running;
                return;
            }
            Some(next) => {
                threads.list[me].fs_base = fs_base();
                threads.list[me].sigmask = crate::signals::blocked();
                crate::signals::set_blocked(threads.list[next].sigmask);
                threads.list[me].alt_stack = crate::signals::alt_stack();
                crate::signals::set_alt_stack(threads.list[next].alt_stack);
                threads.list[next].state = State::Running;
                threads.current = next;
                let save: *mut u64 = &mut threads.list[me].rsp;
                let load = threads.list[next].rsp;
                set_fs_base(threads.list[next].fs_base);
                drop(threads);
                // SAFETY: `save` points at the current thread's entry, which nothing changes
                // before the switch writes it (one dispatcher: nothing else runs in between);
                // `load` is a stack saved by this function or prepared by `spawn`. No lock is
                // held.
                unsafe { k42_linux_switch(save, load) };
                // Back on this thread: someone made it runnable and switched here.
                return;
            }
            None => {
                drop(threads);
                // Every thread waits: block the dispatcher until the earliest deadline or a
                // soft interrupt (signals are kept for delivery; `absorb` wakes the threads
                // waiting for the bits).
                crate::signals::absorb(sys::block(earliest));
            }
        }
    }
}

/// `clone` with `CLONE_VM | CLONE_THREAD`: a new thread of this process that starts where the
/// caller returns, with `rax` 0, on `stack`, with `tls` as its FS base and the caller's
/// argument registers (`regs`: rdi, rsi, rdx, r10, r8, r9). Returns its thread id.
pub fn spawn(
    flags: u64,
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
    regs: [u64; 6],
    resume: u64,
) -> Ret {
    let required = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
    let allowed = required
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID
        | CLONE_CHILD_SETTID
        | k42_linux_abi::process::CLONE_DETACHED;
    if flags & required != required || flags & !allowed != 0 {
        return crate::unimplemented_variant("clone of a thread with other sharing flags");
    }
    let frame_at = match write_start_frame(stack, regs, resume) {
        Ok(at) => at,
        Err(e) => return e,
    };
    let mut threads = THREADS.lock();
    threads.ensure_main();
    threads.created += 1;
    let tid = k42_rt::pid() + threads.created * TID_STRIDE;
    threads.list.push(Thread {
        tid,
        rsp: frame_at,
        fs_base: if flags & CLONE_SETTLS != 0 {
            tls
        } else {
            fs_base()
        },
        // A new thread starts with its creator's mask, and without an alternate stack.
        sigmask: crate::signals::blocked(),
        alt_stack: crate::signals::NO_ALT_STACK,
        clear_tid: if flags & CLONE_CHILD_CLEARTID != 0 {
            child_tid
        } else {
            0
        },
        state: State::Runnable,
        woken: false,
        arrived: 0,
        interruptible: false,
        interrupted: false,
        stack_unmap: None,
    });
    drop(threads);
    set_ticking(true);
    if flags & CLONE_CHILD_SETTID != 0 {
        let _ = put(child_tid, &(tid as u32));
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        let _ = put(parent_tid, &(tid as u32));
    }
    tid as Ret
}

/// Writes the start frame of a new thread (or of a `CLONE_VM | CLONE_VFORK` child) just below
/// `stack`, memory the new context owns and has not used yet: six callee-saved registers for
/// `k42_linux_switch`, its return into `k42_linux_thread_start`, then that code's argument
/// registers, flags, resume address and stack pointer. Returns where the frame starts.
fn write_start_frame(stack: u64, regs: [u64; 6], resume: u64) -> Result<u64, Ret> {
    if stack < 8 * START_FRAME_WORDS as u64 || !stack.is_multiple_of(8) {
        return Err(err(errno::EINVAL));
    }
    let frame: [u64; START_FRAME_WORDS] = [
        0,
        0,
        0,
        0,
        0,
        0,
        k42_linux_thread_start as *const () as u64,
        regs[0],
        regs[1],
        regs[2],
        regs[3],
        regs[4],
        regs[5],
        0x202,
        resume,
        stack,
    ];
    let frame_at = stack - 8 * START_FRAME_WORDS as u64;
    let words: Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
    crate::user_bytes_mut(frame_at, words.len() as u64)?.copy_from_slice(&words);
    Ok(frame_at)
}

/// Words of a start frame (see [`write_start_frame`]).
const START_FRAME_WORDS: usize = 16;
/// Where `k42_linux_thread_start`'s part of a start frame begins.
const START_CODE_WORD: usize = 7;

/// Continues the calling context as the start frame at `frame_at` says: the program resumes
/// with `rax` 0 on the frame's stack. For the child of a `CLONE_VM | CLONE_VFORK` clone.
pub fn enter_start_frame(frame_at: u64) -> ! {
    // SAFETY: `frame_at` was written by `write_start_frame` in memory the program gave for
    // the new context; the code pops the registers and jumps into the program, never back.
    unsafe {
        core::arch::asm!(
            "mov rsp, {frame}",
            "jmp {start}",
            frame = in(reg) frame_at + 8 * START_CODE_WORD as u64,
            start = sym k42_linux_thread_start,
            options(noreturn)
        )
    }
}

/// `clone` with `CLONE_VM | CLONE_VFORK` and no `CLONE_THREAD` (how musl's `posix_spawn`, and
/// so Rust's `Command`, starts a child): a fork whose child continues on `stack`. The child
/// gets a copy of the memory rather than sharing it until its exec, which is all such a child
/// may rely on; the parent learns the exec's outcome through the pipe the C library uses.
pub fn spawn_process(flags: u64, stack: u64, regs: [u64; 6], resume: u64) -> Ret {
    let allowed = CLONE_VM | k42_linux_abi::process::CLONE_VFORK | k42_linux_abi::process::CSIGNAL;
    if flags & !allowed != 0 {
        return crate::unimplemented_variant("clone of a process with sharing flags");
    }
    if stack == 0 {
        return err(errno::EINVAL);
    }
    let pid = crate::fork::fork();
    if pid != 0 {
        return pid;
    }
    match write_start_frame(stack, regs, resume) {
        Ok(frame_at) => enter_start_frame(frame_at),
        // The child has nowhere to run: it ends as a C library's child does when exec fails.
        Err(_) => crate::exit(127),
    }
}

/// The calling thread's id.
pub fn gettid() -> Ret {
    let mut threads = THREADS.lock();
    threads.ensure_main();
    threads.list[threads.current].tid as Ret
}

/// `set_tid_address`: the word zeroed and woken when this thread exits.
pub fn set_tid_address(addr: u64) -> Ret {
    let mut threads = THREADS.lock();
    threads.ensure_main();
    let me = threads.current;
    threads.list[me].clear_tid = addr;
    threads.list[me].tid as Ret
}

/// `munmap` of the stack the calling thread runs on (a detached thread's C library frees its
/// own stack right before `exit`): done once the thread has exited, since this code still
/// runs on that stack. Returns whether it was deferred.
pub fn defer_own_stack_unmap(addr: u64, len: u64) -> bool {
    let here = core::ptr::addr_of!(addr) as u64;
    if !(addr..addr.saturating_add(len)).contains(&here) {
        return false;
    }
    let mut threads = THREADS.lock();
    threads.ensure_main();
    let me = threads.current;
    threads.list[me].stack_unmap = Some((addr, len));
    true
}

/// Whether `tid` is a live thread of this process.
pub fn is_ours(tid: u64) -> bool {
    let threads = THREADS.lock();
    tid == k42_rt::pid()
        || threads
            .list
            .iter()
            .any(|t| t.tid == tid && t.state != State::Exited)
}

/// `exit` of one thread: the process ends with `status` when it was the last one.
pub fn exit_thread(status: i64) -> ! {
    let clear = {
        let mut threads = THREADS.lock();
        threads.ensure_main();
        if threads.live() <= 1 {
            drop(threads);
            crate::exit(status);
        }
        let me = threads.current;
        threads.list[me].state = State::Exited;
        let last_other = threads.live() <= 1;
        let clear = threads.list[me].clear_tid;
        drop(threads);
        if last_other {
            set_ticking(false);
        }
        clear
    };
    if clear != 0 && put(clear, &0u32) == 0 {
        THREADS.lock().wake(clear, FUTEX_BITSET_MATCH_ANY, 1);
    }
    schedule();
    unreachable!("an exited thread was scheduled again");
}

/// After a fork (in the child) or an exec: only the calling thread is left, with the
/// process's id.
pub fn reset() {
    {
        let mut threads = THREADS.lock();
        threads.list.clear();
        threads.created = 0;
        // Whatever was left unclaimed was the old program's to see (a child's exit is found
        // by asking the kernel, not by the bit).
        threads.unclaimed = 0;
        threads.ensure_main();
    }
    set_ticking(false);
    PREEMPT_WANTED.store(false, Ordering::Relaxed);
}

/// `sched_yield`: lets the other runnable threads run first.
pub fn yield_now() {
    {
        let mut threads = THREADS.lock();
        threads.ensure_main();
        if threads.next_runnable().is_none() {
            drop(threads);
            sys::yield_now();
            return;
        }
        let me = threads.current;
        threads.list[me].state = State::Runnable;
    }
    schedule();
}

/// Waits until a soft interrupt brings bits in `mask` or `deadline` (boot-clock ns, 0: none)
/// passes, while the process's other threads run; returns the bits of `mask` that came (0: the
/// deadline). Every wait of the personality for a soft interrupt comes here, so one thread
/// waiting for a pipe, a child or console input never holds up the others.
pub fn wait_for(mask: u64, deadline: u64) -> u64 {
    {
        let mut threads = THREADS.lock();
        threads.ensure_main();
        let early = threads.unclaimed & mask;
        if early != 0 {
            threads.unclaimed &= !early;
            return early;
        }
        let me = threads.current;
        threads.list[me].state = State::Awaiting { mask, deadline };
        threads.list[me].arrived = 0;
        threads.list[me].interruptible = mask & crate::signals::SOFT_INTERRUPTS != 0;
        threads.list[me].interrupted = false;
    }
    schedule();
    let mut threads = THREADS.lock();
    let me = threads.current;
    threads.list[me].interruptible = false;
    core::mem::take(&mut threads.list[me].arrived)
}

/// Threads of the process that have not exited.
pub fn live_count() -> usize {
    let threads = THREADS.lock();
    threads.live().max(1)
}

/// A signal's handler (without `SA_RESTART`) is about to run on the calling thread: every other
/// thread waiting for signals in [`wait_for`] is woken and told ([`take_interrupted`]), so its
/// call ends with `EINTR` as the thread Linux would have interrupted. (Signals are kept per
/// process here, so the handler runs on whichever thread returns from a call first.)
pub fn interrupt_waits() {
    let mut threads = THREADS.lock();
    let me = threads.current;
    for (i, t) in threads.list.iter_mut().enumerate() {
        if i != me && t.interruptible {
            t.interrupted = true;
            if matches!(t.state, State::Awaiting { .. }) {
                t.state = State::Runnable;
            }
        }
    }
}

/// Whether a handler ran on another thread during the calling thread's last [`wait_for`]
/// (cleared by asking).
pub fn take_interrupted() -> bool {
    let mut threads = THREADS.lock();
    if threads.list.is_empty() {
        return false;
    }
    let me = threads.current;
    core::mem::take(&mut threads.list[me].interrupted)
}

/// Wakes the threads waiting (in [`wait_for`]) for any of `bits`, which a `block` returned or
/// which were taken from the dispatcher page. Called by [`crate::signals::absorb`], which
/// sees every such bit.
pub fn bits_arrived(bits: u64) {
    if bits != 0 {
        THREADS.lock().bits_arrived(bits);
    }
}

/// `futex(addr, op, val, timeout_or_val2, addr2, val3)`.
pub fn futex(addr: u64, op: u64, val: u64, timeout: u64, addr2: u64, val3: u64) -> Ret {
    let op = op as i32;
    if op & futex::FUTEX_CLOCK_REALTIME != 0
        && !matches!(
            futex::command(op),
            futex::FUTEX_WAIT | futex::FUTEX_WAIT_BITSET
        )
    {
        return err(errno::ENOSYS);
    }
    if !addr.is_multiple_of(4) {
        return err(errno::EINVAL);
    }
    match futex::command(op) {
        futex::FUTEX_WAIT => wait(
            addr,
            val as u32,
            FUTEX_BITSET_MATCH_ANY,
            timeout,
            false,
            false,
        ),
        futex::FUTEX_WAIT_BITSET if val3 as u32 != 0 => wait(
            addr,
            val as u32,
            val3 as u32,
            timeout,
            true,
            op & futex::FUTEX_CLOCK_REALTIME != 0,
        ),
        futex::FUTEX_WAKE => wake(addr, FUTEX_BITSET_MATCH_ANY, val),
        futex::FUTEX_WAKE_BITSET if val3 as u32 != 0 => wake(addr, val3 as u32, val),
        futex::FUTEX_REQUEUE => requeue(addr, val, timeout, addr2, None),
        futex::FUTEX_CMP_REQUEUE => requeue(addr, val, timeout, addr2, Some(val3 as u32)),
        futex::FUTEX_WAIT_BITSET | futex::FUTEX_WAKE_BITSET => err(errno::EINVAL),
        _ => crate::unimplemented_variant("futex operation other than wait, wake and requeue"),
    }
}

fn wait(addr: u64, expected: u32, bits: u32, timeout: u64, absolute: bool, realtime: bool) -> Ret {
    let deadline = if timeout == 0 {
        0
    } else {
        match crate::deadline_ns(timeout, absolute, realtime) {
            Ok(at) => at.max(1),
            Err(e) => return e,
        }
    };
    {
        let mut threads = THREADS.lock();
        threads.ensure_main();
        // Checked under the table's lock: a waker on this dispatcher cannot slip in between.
        let word: u32 = match get(addr) {
            Ok(w) => w,
            Err(e) => return e,
        };
        if word != expected {
            return err(errno::EAGAIN);
        }
        if deadline != 0 && deadline <= sys::now_ns() {
            return err(errno::ETIMEDOUT);
        }
        let me = threads.current;
        threads.list[me].state = State::Waiting {
            addr,
            bits,
            deadline,
        };
        threads.list[me].woken = false;
    }
    schedule();
    let threads = THREADS.lock();
    if threads.list[threads.current].woken {
        0
    } else {
        err(errno::ETIMEDOUT)
    }
}

fn wake(addr: u64, bits: u32, count: u64) -> Ret {
    let count = count.min(i32::MAX as u64);
    let mut threads = THREADS.lock();
    threads.ensure_main();
    threads.wake(addr, bits, count) as Ret
}

/// Wakes `count` waiters of `addr` and moves up to `moved` more to `addr2` (if `addr` still
/// holds `expected`, when given).
fn requeue(addr: u64, count: u64, moved: u64, addr2: u64, expected: Option<u32>) -> Ret {
    let mut threads = THREADS.lock();
    threads.ensure_main();
    if let Some(expected) = expected {
        match get::<u32>(addr) {
            Ok(word) if word == expected => {}
            Ok(_) => return err(errno::EAGAIN),
            Err(e) => return e,
        }
    }
    let woken = threads.wake(addr, FUTEX_BITSET_MATCH_ANY, count.min(i32::MAX as u64));
    let mut requeued = 0;
    for t in threads.list.iter_mut() {
        if requeued >= moved {
            break;
        }
        if let State::Waiting { addr: a, .. } = t.state {
            if a == addr {
                if let State::Waiting { bits, deadline, .. } = t.state {
                    t.state = State::Waiting {
                        addr: addr2,
                        bits,
                        deadline,
                    };
                }
                requeued += 1;
            }
        }
    }
    (woken + requeued) as Ret
}
