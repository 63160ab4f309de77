//! Linux signals in the personality: dispositions, the blocked mask and the pending set live
//! here, in the process. Signals arrive as K42 soft interrupts: signal `s` from another
//! process is soft-interrupt bit `s - 1` (posted by that process's `kill`), a child's exit is
//! [`kabi::SOFT_INTERRUPT_CHILD`] (posted by the kernel, raised here as `SIGCHLD`), and a
//! signal the process raises itself (`SIGPIPE`, `kill` of itself) goes straight to the
//! pending set.
//!
//! Delivery happens when a system call returns (and inside `sigsuspend`/`pause`): a handler
//! is called as a function on the program's stack, with the signal (and with `SA_SIGINFO`, a
//! `siginfo_t` and an empty `ucontext_t`), under the handler's mask; its return resumes the
//! system call's return. A default action of Terminate or CoreDump ends the process with
//! status 128 + the signal. A signal ends a blocking call with `EINTR` unless its handler was
//! installed with `SA_RESTART` ([`interrupts_call`]).
//!
//! Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP): once the program installs a handler for
//! one, the process takes the kernel's trap upcalls, and [`fault`] runs the handler on the
//! faulting thread's stack with the `siginfo_t` Linux gives (code and address); without one the
//! kernel (or [`fault`]) ends the process with the signal. Not yet: delivery to a process
//! spinning without system calls, a filled-in `ucontext_t`, alternate signal stacks, stop and
//! continue.

use core::sync::atomic::{AtomicU64, Ordering};

use k42_linux_abi::errno;
use k42_linux_abi::signal::{
    default_action, is_valid, DefaultAction, KernelSigaction, SigInfo, Sigset, StackT, UContext,
    BUS_ADRERR, FPE_INTDIV, ILL_ILLOPC, MINSIGSTKSZ, SA_NODEFER, SA_ONSTACK, SA_RESETHAND,
    SA_RESTART, SA_SIGINFO, SEGV_ACCERR, SEGV_MAPERR, SIGBUS, SIGCHLD, SIGFPE, SIGILL, SIGKILL,
    SIGSEGV, SIGSTOP, SIG_DFL, SIG_IGN, SI_KERNEL, SS_AUTODISARM, SS_DISABLE, SS_ONSTACK,
    TRAP_BRKPT,
};
use k42_rt::kabi;
use k42_rt::sys;
use spin::Mutex;

use crate::{err, get, put, Ret};

/// Soft-interrupt bits that carry signals from other processes (signals 1-31).
const SIGNAL_BITS: u64 = (1 << 31) - 1;
/// Every soft-interrupt bit that raises a signal (from another process, or a child's exit).
pub const SOFT_INTERRUPTS: u64 = SIGNAL_BITS | kabi::SOFT_INTERRUPT_CHILD;

/// Each signal's action (index = signal number).
static ACTIONS: Mutex<[KernelSigaction; 65]> = Mutex::new(
    [KernelSigaction {
        handler: SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: Sigset::EMPTY,
    }; 65],
);
/// Signals raised and not yet delivered.
static PENDING: AtomicU64 = AtomicU64::new(0);
/// The running thread's blocked mask (the thread switch keeps each thread's own).
static BLOCKED: AtomicU64 = AtomicU64::new(0);

/// No alternate signal stack.
pub const NO_ALT_STACK: StackT = StackT {
    ss_sp: 0,
    ss_flags: SS_DISABLE,
    _pad: 0,
    ss_size: 0,
};
/// The running thread's alternate signal stack (`sigaltstack`; the thread switch keeps each
/// thread's own, as for the mask).
static ALT_STACK: Mutex<StackT> = Mutex::new(NO_ALT_STACK);

/// The running thread's alternate signal stack.
pub fn alt_stack() -> StackT {
    *ALT_STACK.lock()
}

/// Makes `stack` the running thread's alternate signal stack (at a thread switch, at exec).
pub fn set_alt_stack(stack: StackT) {
    *ALT_STACK.lock() = stack;
}

/// The stack pointer here: the personality runs on the stack of the program's thread.
fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack)) };
    sp
}

/// `sigaltstack(new, old)`: the alternate stack handlers with `SA_ONSTACK` run on.
pub fn sigaltstack(new: u64, old: u64) -> Ret {
    let current = alt_stack();
    let on_it = current.contains(stack_pointer());
    if new != 0 {
        let mut wanted = match get::<StackT>(new) {
            Ok(s) => s,
            Err(e) => return e,
        };
        if on_it {
            return err(errno::EPERM);
        }
        // `SS_ONSTACK` is accepted as 0, as Linux does for old programs.
        let mode = wanted.ss_flags & !SS_AUTODISARM;
        if !matches!(mode, 0 | SS_ONSTACK | SS_DISABLE) {
            return err(errno::EINVAL);
        }
        if mode == SS_DISABLE {
            wanted = NO_ALT_STACK;
        } else {
            if wanted.ss_size < MINSIGSTKSZ || wanted.ss_sp.checked_add(wanted.ss_size).is_none() {
                return err(errno::ENOMEM);
            }
            wanted.ss_flags &= SS_AUTODISARM;
        }
        set_alt_stack(wanted);
    }
    if old != 0 {
        let mut reported = current;
        if on_it {
            reported.ss_flags = SS_ONSTACK | (current.ss_flags & SS_AUTODISARM);
        }
        return put(old, &reported);
    }
    0
}

// Calls a handler `(sig, info, context)` (rdi, rsi, rdx; the handler's address in rcx) on the
// stack whose 16-byte-aligned top is r8, and comes back to the caller's stack.
core::arch::global_asm!(
    r#"
    .global k42_call_on_stack
k42_call_on_stack:
    push rbp
    mov rbp, rsp
    mov rsp, r8
    call rcx
    mov rsp, rbp
    pop rbp
    ret
    "#
);

extern "C" {
    fn k42_call_on_stack(
        sig: i32,
        info: *mut SigInfo,
        context: *mut UContext,
        handler: u64,
        top: u64,
    );
}

/// The running thread's blocked mask.
pub fn blocked() -> u64 {
    BLOCKED.load(Ordering::Acquire)
}

/// Makes `mask` the running thread's blocked mask (at a thread switch).
pub fn set_blocked(mask: u64) {
    BLOCKED.store(mask, Ordering::Release);
}

/// Records soft-interrupt `bits` (returned by a `block`, or taken from the dispatcher page) as
/// pending signals, and wakes the threads waiting for any of them.
pub fn absorb(bits: u64) {
    crate::threads::bits_arrived(bits);
    let mut signals = bits & SIGNAL_BITS;
    if bits & kabi::SOFT_INTERRUPT_CHILD != 0 {
        signals |= Sigset::bit(SIGCHLD);
    }
    if signals != 0 {
        PENDING.fetch_or(signals, Ordering::AcqRel);
    }
}

/// Takes signal bits the kernel posted while the process ran (they wait in its dispatcher
/// page until a `block` would return them); other bits stay for whoever waits for them.
fn take_posted() {
    let word = &k42_rt::dispatcher_page(0).soft_interrupts;
    if word.load(Ordering::Relaxed) & SOFT_INTERRUPTS != 0 {
        absorb(word.fetch_and(!SOFT_INTERRUPTS, Ordering::AcqRel) & SOFT_INTERRUPTS);
    }
}

/// Makes `sig` pending in this process.
pub fn raise(sig: i32) {
    PENDING.fetch_or(Sigset::bit(sig), Ordering::AcqRel);
    // A thread of this process waiting for a signal's soft interrupt is woken as if one came.
    if (1..=31).contains(&sig) {
        crate::threads::bits_arrived(1 << (sig - 1));
    }
}

/// A forked child starts with no pending signals.
pub fn forked_child() {
    PENDING.store(0, Ordering::Release);
    // The child's dispatcher starts without an upcall entry.
    crate::threads::take_upcalls();
}

/// At `execve`: caught signals go back to their default action (ignored ones stay ignored);
/// the alternate stack is gone with the old program's memory.
pub fn reset_for_exec() {
    set_alt_stack(NO_ALT_STACK);
    for action in ACTIONS.lock().iter_mut() {
        if action.handler != SIG_IGN {
            *action = KernelSigaction::default();
        }
    }
}

/// Whether a pending, unblocked signal would do something (run a handler or end the
/// process): what ends a wait early.
pub fn deliverable() -> bool {
    take_posted();
    let ready = PENDING.load(Ordering::Acquire) & !BLOCKED.load(Ordering::Acquire);
    if ready == 0 {
        return false;
    }
    let actions = ACTIONS.lock();
    Sigset(ready).iter().any(|sig| {
        let handler = actions[sig as usize].handler;
        handler > SIG_IGN
            || (handler == SIG_DFL
                && !matches!(default_action(sig), Some(DefaultAction::Ignore) | None))
    })
}

/// Whether a signal should end the calling thread's blocking call with `EINTR` now: a pending
/// one that is deliverable and whose action is not a handler installed with `SA_RESTART`
/// (that handler runs when the call completes, which stands in for Linux's restart of the
/// call), or one whose handler already ran on another thread meanwhile.
pub fn interrupts_call() -> bool {
    let handled_elsewhere = crate::threads::take_interrupted();
    take_posted();
    let ready = PENDING.load(Ordering::Acquire) & !BLOCKED.load(Ordering::Acquire);
    if ready == 0 {
        return handled_elsewhere;
    }
    let actions = ACTIONS.lock();
    handled_elsewhere
        || Sigset(ready).iter().any(|sig| {
            let action = &actions[sig as usize];
            (action.handler > SIG_IGN && action.flags & SA_RESTART == 0)
                || (action.handler == SIG_DFL
                    && !matches!(default_action(sig), Some(DefaultAction::Ignore) | None))
        })
}

/// Delivers every pending signal that is not blocked (called as each system call returns).
pub fn deliver() {
    take_posted();
    loop {
        let ready = Sigset(PENDING.load(Ordering::Acquire) & !BLOCKED.load(Ordering::Acquire));
        let Some(sig) = ready.next_to_deliver() else {
            return;
        };
        PENDING.fetch_and(!Sigset::bit(sig), Ordering::AcqRel);
        deliver_one(sig);
    }
}

/// Takes signal `sig`'s action for a delivery (a one-shot handler goes back to the default).
fn take_action(sig: i32) -> KernelSigaction {
    let mut actions = ACTIONS.lock();
    let action = actions[sig as usize];
    if action.handler > SIG_IGN && action.flags & SA_RESETHAND != 0 {
        actions[sig as usize] = KernelSigaction::default();
    }
    action
}

fn deliver_one(sig: i32) {
    let action = take_action(sig);
    match action.handler {
        SIG_IGN => {}
        SIG_DFL => {
            if let Some(DefaultAction::Terminate | DefaultAction::CoreDump) = default_action(sig) {
                crate::exit(kabi::EXIT_SIGNALED | i64::from(sig))
            }
        }
        _ => {
            if action.flags & SA_RESTART == 0 {
                crate::threads::interrupt_waits();
            }
            run_handler(sig, &action, SigInfo::kill(sig, 0, 0, 0));
        }
    }
}

/// Calls `action`'s handler for `sig` (with `info` if it takes one) under its mask.
fn run_handler(sig: i32, action: &KernelSigaction, mut info: SigInfo) {
    let old = BLOCKED.load(Ordering::Acquire);
    let mut mask = old | action.mask.0;
    if action.flags & SA_NODEFER == 0 {
        mask |= Sigset::bit(sig);
    }
    BLOCKED.store(Sigset(mask).blockable().0, Ordering::Release);
    let alt = alt_stack();
    if action.flags & SA_ONSTACK != 0
        && alt.ss_flags & SS_DISABLE == 0
        && !alt.contains(stack_pointer())
    {
        let mut context = UContext {
            uc_stack: alt,
            uc_sigmask: Sigset(old),
            ..UContext::default()
        };
        if alt.ss_flags & SS_AUTODISARM != 0 {
            set_alt_stack(NO_ALT_STACK);
        }
        // SAFETY: the program gave this memory as its alternate stack (`sigaltstack`), where
        // Linux too would run the handler; the handler's C type takes these three arguments
        // (one that takes only the signal ignores the others); `info` and `context` live on
        // this stack until it returns.
        unsafe {
            k42_call_on_stack(
                sig,
                &mut info,
                &mut context,
                action.handler,
                (alt.ss_sp + alt.ss_size) & !15,
            )
        };
        if alt.ss_flags & SS_AUTODISARM != 0 {
            set_alt_stack(alt);
        }
    } else if action.flags & SA_SIGINFO != 0 {
        let mut context = UContext {
            uc_stack: alt,
            uc_sigmask: Sigset(old),
            ..UContext::default()
        };
        let f: extern "C" fn(i32, *mut SigInfo, *mut UContext) =
            // SAFETY: the program installed this address as an `SA_SIGINFO` handler, whose C
            // type this is; it runs on the program's stack, as on Linux.
            unsafe { core::mem::transmute(action.handler as usize) };
        f(sig, &mut info, &mut context);
    } else {
        // SAFETY: the program installed this address as a `void (*)(int)` handler.
        let f: extern "C" fn(i32) = unsafe { core::mem::transmute(action.handler as usize) };
        f(sig);
    }
    BLOCKED.store(old, Ordering::Release);
}

/// An exception of the program, as the kernel's trap upcall reported it.
pub struct Fault {
    /// The signal it raises.
    pub signal: i32,
    /// The exception vector.
    pub vector: u8,
    /// The exception's error code.
    pub error_code: u64,
    /// The faulting address (the instruction's, for exceptions other than page faults).
    pub address: u64,
    /// Where it happened.
    pub rip: u64,
}

impl Fault {
    /// `si_code` and `si_addr` as Linux gives them.
    fn siginfo(&self) -> SigInfo {
        const PAGE_FAULT: u8 = 14;
        const PRESENT: u64 = 1;
        let code = match (self.signal, self.vector) {
            (SIGSEGV, PAGE_FAULT) if self.error_code & PRESENT != 0 => SEGV_ACCERR,
            (SIGSEGV, PAGE_FAULT) => SEGV_MAPERR,
            // A general-protection fault has no address on Linux either.
            (SIGSEGV, _) => return SigInfo::fault(SIGSEGV, SI_KERNEL, 0),
            (SIGBUS, _) => BUS_ADRERR,
            (SIGFPE, _) => FPE_INTDIV,
            (SIGILL, _) => ILL_ILLOPC,
            _ => TRAP_BRKPT,
        };
        SigInfo::fault(self.signal, code, self.address)
    }
}

/// A fault of the program (from the trap upcall; `in_program`: it happened in the program's
/// own code): its signal's handler runs now, on the faulting thread's stack, and the faulting
/// instruction runs again when it returns (as on Linux; a handler usually `siglongjmp`s out).
/// A default, ignored or blocked action ends the process with the signal once its
/// descriptors are closed (so a pipe's reader sees the end of the data). A fault in the
/// personality itself ends it at once: a lock of ours may be held, so nothing of ours runs.
pub fn fault(fault: &Fault, in_program: bool) {
    let sig = fault.signal;
    let blocked = BLOCKED.load(Ordering::Acquire) & Sigset::bit(sig) != 0;
    let handled = in_program && !blocked && ACTIONS.lock()[sig as usize].handler > SIG_IGN;
    if handled {
        let action = take_action(sig);
        run_handler(sig, &action, fault.siginfo());
        return;
    }
    k42_rt::println!(
        "process {} ({}): signal {sig} (vector {}, error code {:#x}) at {:#x}, rip {:#x}; ended",
        k42_rt::pid(),
        if in_program {
            "the program"
        } else {
            "the Linux personality"
        },
        fault.vector,
        fault.error_code,
        fault.address,
        fault.rip
    );
    let status = kabi::EXIT_SIGNALED | i64::from(sig);
    if in_program {
        crate::exit(status)
    }
    sys::exit(status)
}

/// `rt_sigaction(sig, new, old, size)`.
pub fn sigaction(sig: u64, new: u64, old: u64, size: u64) -> Ret {
    let sig = sig as i32;
    if !is_valid(sig) || sig == SIGKILL || sig == SIGSTOP || size != 8 {
        return err(errno::EINVAL);
    }
    let new_action = match new {
        0 => None,
        ptr => match get::<KernelSigaction>(ptr) {
            Ok(action) => Some(action),
            Err(e) => return e,
        },
    };
    let previous = {
        let mut actions = ACTIONS.lock();
        let previous = actions[sig as usize];
        if let Some(mut action) = new_action {
            action.mask = action.mask.blockable();
            actions[sig as usize] = action;
        }
        previous
    };
    if old != 0 {
        return put(old, &previous);
    }
    0
}

/// `rt_sigprocmask(how, set, old, size)`.
pub fn sigprocmask(how: u64, set: u64, old: u64, size: u64) -> Ret {
    if size != 8 {
        return err(errno::EINVAL);
    }
    let current = Sigset(BLOCKED.load(Ordering::Acquire));
    if set != 0 {
        let change = match get::<Sigset>(set) {
            Ok(s) => s,
            Err(e) => return e,
        };
        match current.apply_sigprocmask(how as i32, change) {
            Ok(new) => BLOCKED.store(new.0, Ordering::Release),
            Err(e) => return err(e),
        }
    }
    if old != 0 {
        return put(old, &current);
    }
    0
}

/// `rt_sigpending(set, size)`.
pub fn sigpending(set: u64) -> Ret {
    take_posted();
    let pending = PENDING.load(Ordering::Acquire) & BLOCKED.load(Ordering::Acquire);
    put(set, &Sigset(pending))
}

/// `rt_sigsuspend(mask, size)` (and `pause` with `mask` 0: the current mask): waits with
/// `mask` blocked until a signal is delivered, then returns `-EINTR`.
pub fn sigsuspend(mask: u64, size: u64) -> Ret {
    let old = BLOCKED.load(Ordering::Acquire);
    if mask != 0 {
        if size != 8 {
            return err(errno::EINVAL);
        }
        match get::<Sigset>(mask) {
            Ok(set) => BLOCKED.store(set.blockable().0, Ordering::Release),
            Err(e) => return e,
        }
    }
    loop {
        // A signal whose action is to ignore it does not end the wait.
        if deliverable() {
            deliver();
            BLOCKED.store(old, Ordering::Release);
            return err(errno::EINTR);
        }
        deliver();
        crate::threads::wait_for(SOFT_INTERRUPTS, 0);
    }
}

/// `kill(pid, sig)`: to one process (itself, or any Linux process: the kernel lets Linux
/// processes post soft interrupts to each other), to a process group (`pid` 0: the caller's,
/// `-g`: group `g`), or to every other Linux process (`-1`). Native processes (servers,
/// drivers) take no Linux signals: `EPERM`.
pub fn kill(pid: i64, sig: u64) -> Ret {
    let sig = sig as i32;
    if sig != 0 && !is_valid(sig) {
        return err(errno::EINVAL);
    }
    let me = k42_rt::pid();
    if pid == me as i64 {
        if sig != 0 {
            raise(sig);
        }
        return 0;
    }
    if pid > 0 {
        return signal_other(pid as u64, sig);
    }
    if pid == i64::MIN {
        return err(errno::ESRCH);
    }
    let group = match pid {
        0 => Some(sys::info(kabi::Info::Group)),
        -1 => None,
        _ => Some(pid.unsigned_abs()),
    };
    let targets: alloc::vec::Vec<u64> = crate::procfs::processes()
        .iter()
        .filter(|d| d.flags & kabi::SpawnFlags::LINUX != 0)
        .filter(|d| match group {
            Some(g) => d.group == g,
            None => d.pid != me,
        })
        .map(|d| d.pid)
        .collect();
    if targets.is_empty() {
        return err(errno::ESRCH);
    }
    // Others first: a fatal signal to this process ends it at once.
    let mut delivered = false;
    for &target in targets.iter().filter(|&&t| t != me) {
        delivered |= signal_other(target, sig) == 0;
    }
    if targets.contains(&me) {
        if sig != 0 {
            raise(sig);
        }
        delivered = true;
    }
    if delivered {
        0
    } else {
        err(errno::EPERM)
    }
}

/// `sig` (0: only whether it exists) to process `pid`, not the caller.
fn signal_other(pid: u64, sig: i32) -> Ret {
    if sig == 0 {
        return match crate::procfs::find(pid) {
            Some(d) if d.flags & kabi::SpawnFlags::LINUX != 0 => 0,
            Some(_) => err(errno::EPERM),
            None => err(errno::ESRCH),
        };
    }
    if sig > 31 {
        return crate::unimplemented_variant("a real-time signal to another process");
    }
    match sys::soft_interrupt(pid, 0, Sigset::bit(sig)) {
        Ok(()) => 0,
        Err(kabi::Error::NotFound) => err(errno::ESRCH),
        Err(_) => err(errno::EPERM),
    }
}

/// `tgkill(tgid, tid, sig)` / `tkill(tid, sig)`: a signal to one of this process's threads is
/// the process's (signals are kept per process here); another id is a process id.
pub fn tgkill(tid: i64, sig: u64) -> Ret {
    if tid > 0 && crate::threads::is_ours(tid as u64) {
        return kill(k42_rt::pid() as i64, sig);
    }
    kill(tid, sig)
}
