//! Signals: numbers, sets, the kernel's `sigaction`, default actions, and the x86_64 signal
//! frame (`rt_sigframe`) the emulation builds to run a handler and reads back on `rt_sigreturn`.
//!
//! The frame, from the handler's `rsp` upward: the return address (the `sa_restorer`, which
//! calls `rt_sigreturn`), a [`UContext`] (flags, link, alternate stack, the interrupted
//! registers as a [`Sigcontext`], the blocked mask to restore), then the [`SigInfo`]. The FPU
//! state lives elsewhere (64-byte aligned, above the frame) and is found through
//! [`Sigcontext::fpstate`]; 0 means "none saved".

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Hangup.
pub const SIGHUP: i32 = 1;
/// Interrupt from the keyboard.
pub const SIGINT: i32 = 2;
/// Quit from the keyboard.
pub const SIGQUIT: i32 = 3;
/// Illegal instruction.
pub const SIGILL: i32 = 4;
/// Trace or breakpoint trap.
pub const SIGTRAP: i32 = 5;
/// Abort (`abort()`).
pub const SIGABRT: i32 = 6;
/// Alias of [`SIGABRT`].
pub const SIGIOT: i32 = SIGABRT;
/// Bus error (bad memory access).
pub const SIGBUS: i32 = 7;
/// Arithmetic exception.
pub const SIGFPE: i32 = 8;
/// Kill (cannot be caught, blocked or ignored).
pub const SIGKILL: i32 = 9;
/// User signal 1.
pub const SIGUSR1: i32 = 10;
/// Invalid memory reference.
pub const SIGSEGV: i32 = 11;
/// User signal 2.
pub const SIGUSR2: i32 = 12;
/// Write to a pipe with no readers.
pub const SIGPIPE: i32 = 13;
/// Timer from `alarm()`.
pub const SIGALRM: i32 = 14;
/// Termination request.
pub const SIGTERM: i32 = 15;
/// Coprocessor stack fault (unused on x86_64).
pub const SIGSTKFLT: i32 = 16;
/// Child stopped, continued or terminated.
pub const SIGCHLD: i32 = 17;
/// Continue if stopped.
pub const SIGCONT: i32 = 18;
/// Stop (cannot be caught, blocked or ignored).
pub const SIGSTOP: i32 = 19;
/// Stop typed at the terminal.
pub const SIGTSTP: i32 = 20;
/// Terminal input for a background process.
pub const SIGTTIN: i32 = 21;
/// Terminal output for a background process.
pub const SIGTTOU: i32 = 22;
/// Urgent condition on a socket.
pub const SIGURG: i32 = 23;
/// CPU time limit exceeded.
pub const SIGXCPU: i32 = 24;
/// File size limit exceeded.
pub const SIGXFSZ: i32 = 25;
/// Virtual alarm clock.
pub const SIGVTALRM: i32 = 26;
/// Profiling timer expired.
pub const SIGPROF: i32 = 27;
/// Window size change.
pub const SIGWINCH: i32 = 28;
/// I/O now possible.
pub const SIGIO: i32 = 29;
/// Alias of [`SIGIO`].
pub const SIGPOLL: i32 = SIGIO;
/// Power failure.
pub const SIGPWR: i32 = 30;
/// Bad system call.
pub const SIGSYS: i32 = 31;
/// The first real-time signal as the kernel numbers it (C libraries reserve a few above it).
pub const SIGRTMIN: i32 = 32;
/// The last real-time signal.
pub const SIGRTMAX: i32 = 64;
/// Number of signals (`_NSIG`): signals are `1..=NSIG`.
pub const NSIG: i32 = 64;

/// Default disposition (`sa_handler`).
pub const SIG_DFL: u64 = 0;
/// Ignore the signal (`sa_handler`).
pub const SIG_IGN: u64 = 1;

/// `rt_sigprocmask`: add the set to the blocked mask.
pub const SIG_BLOCK: i32 = 0;
/// `rt_sigprocmask`: remove the set from the blocked mask.
pub const SIG_UNBLOCK: i32 = 1;
/// `rt_sigprocmask`: replace the blocked mask.
pub const SIG_SETMASK: i32 = 2;

/// `sa_flags`: no `SIGCHLD` when a child stops or continues.
pub const SA_NOCLDSTOP: u64 = 0x1;
/// `sa_flags`: children do not become zombies.
pub const SA_NOCLDWAIT: u64 = 0x2;
/// `sa_flags`: the handler takes `(sig, siginfo *, ucontext *)`.
pub const SA_SIGINFO: u64 = 0x4;
/// `sa_flags`: probe bit; the kernel clears it to say "flag bits are checked".
pub const SA_UNSUPPORTED: u64 = 0x400;
/// `sa_flags`: keep the tag bits of fault addresses (not on x86_64).
pub const SA_EXPOSE_TAGBITS: u64 = 0x800;
/// `sa_flags`: `sa_restorer` is valid (every x86_64 C library sets it).
pub const SA_RESTORER: u64 = 0x0400_0000;
/// `sa_flags`: run the handler on the alternate signal stack.
pub const SA_ONSTACK: u64 = 0x0800_0000;
/// `sa_flags`: restart interrupted system calls.
pub const SA_RESTART: u64 = 0x1000_0000;
/// `sa_flags`: do not block the signal while its handler runs.
pub const SA_NODEFER: u64 = 0x4000_0000;
/// `sa_flags`: reset to `SIG_DFL` on delivery.
pub const SA_RESETHAND: u64 = 0x8000_0000;

/// `ss_flags`: the thread is running on the alternate stack.
pub const SS_ONSTACK: i32 = 1;
/// `ss_flags`: the alternate stack is disabled.
pub const SS_DISABLE: i32 = 2;
/// `ss_flags`: clear the alternate stack while a handler runs on it.
pub const SS_AUTODISARM: i32 = 1 << 31;
/// Smallest alternate stack `sigaltstack` accepts.
pub const MINSIGSTKSZ: u64 = 2048;
/// Suggested alternate stack size.
pub const SIGSTKSZ: u64 = 8192;

/// `si_code`: sent by `kill`.
pub const SI_USER: i32 = 0;
/// `si_code`: sent by the kernel.
pub const SI_KERNEL: i32 = 0x80;
/// `si_code`: sent by `sigqueue`.
pub const SI_QUEUE: i32 = -1;
/// `si_code`: a POSIX timer expired.
pub const SI_TIMER: i32 = -2;
/// `si_code`: a message arrived on a message queue.
pub const SI_MESGQ: i32 = -3;
/// `si_code`: asynchronous I/O completed.
pub const SI_ASYNCIO: i32 = -4;
/// `si_code`: queued `SIGIO`.
pub const SI_SIGIO: i32 = -5;
/// `si_code`: sent by `tkill`/`tgkill`.
pub const SI_TKILL: i32 = -6;
/// `si_code` of `SIGCHLD`: the child exited.
pub const CLD_EXITED: i32 = 1;
/// `si_code` of `SIGCHLD`: the child was killed.
pub const CLD_KILLED: i32 = 2;
/// `si_code` of `SIGCHLD`: the child was killed and dumped core.
pub const CLD_DUMPED: i32 = 3;
/// `si_code` of `SIGCHLD`: a traced child trapped.
pub const CLD_TRAPPED: i32 = 4;
/// `si_code` of `SIGCHLD`: the child stopped.
pub const CLD_STOPPED: i32 = 5;
/// `si_code` of `SIGCHLD`: a stopped child continued.
pub const CLD_CONTINUED: i32 = 6;
/// `si_code` of `SIGSEGV`: no mapping at the address.
pub const SEGV_MAPERR: i32 = 1;
/// `si_code` of `SIGSEGV`: the mapping forbids the access.
pub const SEGV_ACCERR: i32 = 2;
/// `si_code` of `SIGBUS`: misaligned address.
pub const BUS_ADRALN: i32 = 1;
/// `si_code` of `SIGBUS`: no physical memory behind the address (e.g. past a file's end).
pub const BUS_ADRERR: i32 = 2;
/// `si_code` of `SIGILL`: illegal opcode.
pub const ILL_ILLOPC: i32 = 1;
/// `si_code` of `SIGILL`: privileged opcode.
pub const ILL_PRVOPC: i32 = 5;
/// `si_code` of `SIGFPE`: integer divide by zero.
pub const FPE_INTDIV: i32 = 1;
/// `si_code` of `SIGTRAP`: breakpoint.
pub const TRAP_BRKPT: i32 = 1;

/// `uc_flags`: the FPU state is in the extended (XSAVE) format.
pub const UC_FP_XSTATE: u64 = 0x1;
/// `uc_flags`: `sigcontext.ss` holds the interrupted `ss`.
pub const UC_SIGCONTEXT_SS: u64 = 0x2;
/// `uc_flags`: `rt_sigreturn` restores `ss` exactly.
pub const UC_STRICT_RESTORE_SS: u64 = 0x4;

/// The `rflags` bits a handler may change through the saved context (`FIX_EFLAGS` in Linux:
/// AC, OF, DF, TF, SF, ZF, AF, PF, CF and RF); the others keep their current value.
pub const SIGRETURN_RFLAGS_MASK: u64 = 0x50dd5;
/// The `rflags` bits cleared when a handler starts (DF, RF and TF).
pub const HANDLER_CLEARED_RFLAGS: u64 = 0x10000 | 0x400 | 0x100;

/// Linux's user code selector, as it appears in `sigcontext.cs` on a Linux host.
pub const LINUX_USER_CS: u16 = 0x33;
/// Linux's user stack selector, as it appears in `sigcontext.ss` on a Linux host.
pub const LINUX_USER_SS: u16 = 0x2b;

/// Whether `sig` is a signal number (`1..=64`).
pub const fn is_valid(sig: i32) -> bool {
    sig >= 1 && sig <= NSIG
}

/// Whether `sig` is a real-time signal (queued, delivered in order).
pub const fn is_realtime(sig: i32) -> bool {
    sig >= SIGRTMIN && sig <= SIGRTMAX
}

/// The name of a standard signal (`"SIGSEGV"`); `None` for real-time and invalid numbers.
pub fn name(sig: i32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig)
        .ok()
        .and_then(|s| s.checked_sub(1))
        .and_then(|i| NAMES.get(i).copied())
}

/// What a signal does when its disposition is `SIG_DFL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    /// End the process.
    Terminate,
    /// End the process and (on Linux) write a core dump; the wait status says so.
    CoreDump,
    /// Discard the signal.
    Ignore,
    /// Stop the process.
    Stop,
    /// Continue a stopped process (otherwise nothing).
    Continue,
}

/// The default action of `sig`, `None` for an invalid number.
pub fn default_action(sig: i32) -> Option<DefaultAction> {
    use DefaultAction::*;
    Some(match sig {
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ
        | SIGSYS => CoreDump,
        SIGCHLD | SIGURG | SIGWINCH => Ignore,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Stop,
        SIGCONT => Continue,
        s if is_valid(s) => Terminate,
        _ => return None,
    })
}

/// A set of signals as the kernel stores it: bit `sig - 1` of a `u64`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(transparent)]
pub struct Sigset(pub u64);

impl Sigset {
    /// No signals.
    pub const EMPTY: Sigset = Sigset(0);
    /// All 64 signals.
    pub const FULL: Sigset = Sigset(u64::MAX);
    /// Signals raised by the faulting instruction itself, delivered before any other
    /// pending signal (Linux's `SYNCHRONOUS_MASK`).
    pub const SYNCHRONOUS: Sigset = Sigset(
        Self::bit(SIGSEGV)
            | Self::bit(SIGBUS)
            | Self::bit(SIGILL)
            | Self::bit(SIGTRAP)
            | Self::bit(SIGFPE)
            | Self::bit(SIGSYS),
    );
    /// The two signals that can never be blocked, caught or ignored.
    pub const UNBLOCKABLE: Sigset = Sigset(Self::bit(SIGKILL) | Self::bit(SIGSTOP));

    /// The bit of `sig` (0 for an invalid number).
    pub const fn bit(sig: i32) -> u64 {
        if is_valid(sig) {
            1 << (sig - 1)
        } else {
            0
        }
    }

    /// The set holding just `sig` (empty for an invalid number).
    pub const fn of(sig: i32) -> Sigset {
        Sigset(Self::bit(sig))
    }

    /// Adds `sig` (invalid numbers are ignored; check [`is_valid`] to report `EINVAL`).
    pub fn add(&mut self, sig: i32) {
        self.0 |= Self::bit(sig);
    }

    /// Removes `sig`.
    pub fn remove(&mut self, sig: i32) {
        self.0 &= !Self::bit(sig);
    }

    /// Whether `sig` is in the set (false for invalid numbers).
    pub const fn contains(self, sig: i32) -> bool {
        self.0 & Self::bit(sig) != 0
    }

    /// Whether no signal is in the set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Signals in either set.
    pub const fn union(self, other: Sigset) -> Sigset {
        Sigset(self.0 | other.0)
    }

    /// Signals in both sets.
    pub const fn intersection(self, other: Sigset) -> Sigset {
        Sigset(self.0 & other.0)
    }

    /// Signals in `self` but not in `other`.
    pub const fn difference(self, other: Sigset) -> Sigset {
        Sigset(self.0 & !other.0)
    }

    /// The set with `SIGKILL` and `SIGSTOP` removed: what a blocked mask may hold.
    pub const fn blockable(self) -> Sigset {
        self.difference(Self::UNBLOCKABLE)
    }

    /// The lowest-numbered signal in the set.
    pub const fn lowest(self) -> Option<i32> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros() as i32 + 1)
        }
    }

    /// The signal Linux delivers first from this pending set: the lowest synchronous one,
    /// else the lowest.
    pub const fn next_to_deliver(self) -> Option<i32> {
        match self.intersection(Self::SYNCHRONOUS).lowest() {
            Some(sig) => Some(sig),
            None => self.lowest(),
        }
    }

    /// The signals in the set, ascending.
    pub fn iter(self) -> impl Iterator<Item = i32> {
        (1..=NSIG).filter(move |&sig| self.contains(sig))
    }

    /// The new blocked mask after `rt_sigprocmask(how, set)` on `self`; `EINVAL` for an
    /// unknown `how`. `SIGKILL` and `SIGSTOP` are never blocked.
    pub fn apply_sigprocmask(self, how: i32, set: Sigset) -> Result<Sigset, i32> {
        let new = match how {
            SIG_BLOCK => self.union(set),
            SIG_UNBLOCK => self.difference(set),
            SIG_SETMASK => set,
            _ => return Err(crate::errno::EINVAL),
        };
        Ok(new.blockable())
    }
}

/// The kernel's `struct sigaction` for `rt_sigaction` on x86_64 (not the C library's, whose
/// mask is 128 bytes and comes second): handler, flags, restorer, mask; 32 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct KernelSigaction {
    /// `sa_handler`/`sa_sigaction`: [`SIG_DFL`], [`SIG_IGN`] or the handler's address.
    pub handler: u64,
    /// `SA_*` flags.
    pub flags: u64,
    /// `sa_restorer`: the code the handler returns to, which calls `rt_sigreturn`.
    pub restorer: u64,
    /// Signals blocked while the handler runs (besides the signal itself unless `SA_NODEFER`).
    pub mask: Sigset,
}

/// `stack_t`, the alternate signal stack of `sigaltstack` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StackT {
    /// Base address.
    pub ss_sp: u64,
    /// [`SS_ONSTACK`], [`SS_DISABLE`], [`SS_AUTODISARM`].
    pub ss_flags: i32,
    /// Padding before the 8-byte-aligned size.
    pub _pad: u32,
    /// Size in bytes.
    pub ss_size: u64,
}

impl StackT {
    /// Whether `sp` lies on this stack (`ss_sp < sp <= ss_sp + ss_size`, as Linux tests it).
    pub fn contains(&self, sp: u64) -> bool {
        self.ss_flags & SS_DISABLE == 0 && sp > self.ss_sp && sp - self.ss_sp <= self.ss_size
    }
}

/// x86_64 `struct sigcontext`: the interrupted registers, in Linux's order (which is also
/// glibc's `REG_*` order for `mcontext_t.gregs`); 256 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Sigcontext {
    /// `r8`.
    pub r8: u64,
    /// `r9`.
    pub r9: u64,
    /// `r10`.
    pub r10: u64,
    /// `r11`.
    pub r11: u64,
    /// `r12`.
    pub r12: u64,
    /// `r13`.
    pub r13: u64,
    /// `r14`.
    pub r14: u64,
    /// `r15`.
    pub r15: u64,
    /// `rdi`.
    pub rdi: u64,
    /// `rsi`.
    pub rsi: u64,
    /// `rbp`.
    pub rbp: u64,
    /// `rbx`.
    pub rbx: u64,
    /// `rdx`.
    pub rdx: u64,
    /// `rax`.
    pub rax: u64,
    /// `rcx`.
    pub rcx: u64,
    /// `rsp`.
    pub rsp: u64,
    /// `rip`.
    pub rip: u64,
    /// `rflags`.
    pub eflags: u64,
    /// Code segment selector.
    pub cs: u16,
    /// `gs` selector.
    pub gs: u16,
    /// `fs` selector.
    pub fs: u16,
    /// Stack segment selector (meaningful with [`UC_SIGCONTEXT_SS`]).
    pub ss: u16,
    /// Error code of the exception.
    pub err: u64,
    /// Exception vector.
    pub trapno: u64,
    /// The old blocked mask (unused on x86_64: `uc_sigmask` is restored).
    pub oldmask: u64,
    /// Fault address of a page fault.
    pub cr2: u64,
    /// Address of the saved FPU state, 0 if none.
    pub fpstate: u64,
    /// Reserved, zero.
    pub reserved1: [u64; 8],
}

/// The kernel's x86_64 `struct ucontext` (304 bytes; glibc's `ucontext_t` begins the same way).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct UContext {
    /// `UC_*` flags.
    pub uc_flags: u64,
    /// Linked context (unused by Linux, 0).
    pub uc_link: u64,
    /// The alternate stack at the time of delivery.
    pub uc_stack: StackT,
    /// The interrupted registers.
    pub uc_mcontext: Sigcontext,
    /// The blocked mask to restore on `rt_sigreturn`.
    pub uc_sigmask: Sigset,
}

impl UContext {
    /// The `rflags` to resume with after `rt_sigreturn`: the handler-changeable bits from the
    /// saved context, the rest from `current`.
    pub fn sigreturn_rflags(&self, current: u64) -> u64 {
        (current & !SIGRETURN_RFLAGS_MASK) | (self.uc_mcontext.eflags & SIGRETURN_RFLAGS_MASK)
    }
}

/// `siginfo_t` (128 bytes): the three common fields, then a union whose layout depends on
/// `si_signo`/`si_code`; it is kept as words and read and written through the accessors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SigInfo {
    /// Signal number.
    pub si_signo: i32,
    /// An errno value (usually 0).
    pub si_errno: i32,
    /// Why the signal was sent (`SI_*`, `CLD_*`, `SEGV_*`...).
    pub si_code: i32,
    /// Padding before the 8-byte-aligned union.
    pub _pad: i32,
    /// The union `_sifields`, 112 bytes.
    pub fields: [u64; 14],
}

impl Default for SigInfo {
    fn default() -> Self {
        SigInfo::new(0, 0)
    }
}

/// Offsets inside `siginfo_t`, from the start of the structure.
mod si {
    /// `si_pid` (kill, rt, SIGCHLD).
    pub const PID: usize = 16;
    /// `si_uid` (kill, rt, SIGCHLD).
    pub const UID: usize = 20;
    /// `si_status` (SIGCHLD).
    pub const STATUS: usize = 24;
    /// `si_value` (rt, timers).
    pub const VALUE: usize = 24;
    /// `si_utime` (SIGCHLD), after 4 bytes of padding.
    pub const UTIME: usize = 32;
    /// `si_stime` (SIGCHLD).
    pub const STIME: usize = 40;
    /// `si_addr` (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP).
    pub const ADDR: usize = 16;
}

impl SigInfo {
    /// Size of `siginfo_t`.
    pub const SIZE: usize = 128;

    /// A siginfo with the given number and code and an all-zero union.
    pub const fn new(signo: i32, code: i32) -> Self {
        SigInfo {
            si_signo: signo,
            si_errno: 0,
            si_code: code,
            _pad: 0,
            fields: [0; 14],
        }
    }

    /// A signal sent by a process: `kill` ([`SI_USER`]) or `tgkill` ([`SI_TKILL`]).
    pub fn kill(signo: i32, code: i32, pid: i32, uid: u32) -> Self {
        let mut info = SigInfo::new(signo, code);
        info.put(si::PID, &pid.to_ne_bytes());
        info.put(si::UID, &uid.to_ne_bytes());
        info
    }

    /// A queued signal (`sigqueue`, [`SI_QUEUE`]) carrying `value`.
    pub fn queue(signo: i32, pid: i32, uid: u32, value: u64) -> Self {
        let mut info = SigInfo::kill(signo, SI_QUEUE, pid, uid);
        info.put(si::VALUE, &value.to_ne_bytes());
        info
    }

    /// `SIGCHLD` about child `pid`: `code` is a `CLD_*`, `status` the exit code or signal,
    /// `utime`/`stime` the child's CPU times in clock ticks.
    pub fn chld(code: i32, pid: i32, uid: u32, status: i32, utime: i64, stime: i64) -> Self {
        let mut info = SigInfo::kill(SIGCHLD, code, pid, uid);
        info.put(si::STATUS, &status.to_ne_bytes());
        info.put(si::UTIME, &utime.to_ne_bytes());
        info.put(si::STIME, &stime.to_ne_bytes());
        info
    }

    /// A fault (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`) at `addr`.
    pub fn fault(signo: i32, code: i32, addr: u64) -> Self {
        let mut info = SigInfo::new(signo, code);
        info.put(si::ADDR, &addr.to_ne_bytes());
        info
    }

    /// `si_pid` (meaningful for kill, queued and `SIGCHLD` siginfos).
    pub fn pid(&self) -> i32 {
        i32::from_ne_bytes(self.get(si::PID))
    }

    /// `si_uid`.
    pub fn uid(&self) -> u32 {
        u32::from_ne_bytes(self.get(si::UID))
    }

    /// `si_status` of `SIGCHLD`.
    pub fn status(&self) -> i32 {
        i32::from_ne_bytes(self.get(si::STATUS))
    }

    /// `si_value` of a queued signal.
    pub fn value(&self) -> u64 {
        u64::from_ne_bytes(self.get(si::VALUE))
    }

    /// `si_utime` of `SIGCHLD`.
    pub fn utime(&self) -> i64 {
        i64::from_ne_bytes(self.get(si::UTIME))
    }

    /// `si_stime` of `SIGCHLD`.
    pub fn stime(&self) -> i64 {
        i64::from_ne_bytes(self.get(si::STIME))
    }

    /// `si_addr` of a fault.
    pub fn addr(&self) -> u64 {
        u64::from_ne_bytes(self.get(si::ADDR))
    }

    fn put(&mut self, offset: usize, bytes: &[u8]) {
        let at = offset - 16;
        self.fields.as_mut_bytes()[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn get<const N: usize>(&self, offset: usize) -> [u8; N] {
        let at = offset - 16;
        let mut out = [0; N];
        out.copy_from_slice(&self.fields.as_bytes()[at..at + N]);
        out
    }
}

/// The whole frame as it lies on the user stack (440 bytes), the handler's `rsp` at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RtSigframe {
    /// The return address: `sa_restorer`.
    pub pretcode: u64,
    /// The saved context.
    pub uc: UContext,
    /// The signal's information.
    pub info: SigInfo,
}

/// Size of the frame without the FPU state.
pub const RT_SIGFRAME_SIZE: usize = core::mem::size_of::<RtSigframe>();
/// Offset of the ucontext in the frame (the handler's third argument is `frame + this`).
pub const RT_SIGFRAME_UC: usize = core::mem::offset_of!(RtSigframe, uc);
/// Offset of the siginfo in the frame (the handler's second argument is `frame + this`).
pub const RT_SIGFRAME_INFO: usize = core::mem::offset_of!(RtSigframe, info);
/// Alignment of the FPU state area.
pub const FPSTATE_ALIGN: u64 = 64;
/// The x86_64 red zone below `rsp` that a signal frame must not overwrite.
pub const RED_ZONE: u64 = 128;

/// Why a frame cannot be written or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer is shorter than the frame.
    TooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The stack would wrap below address 0.
    NoRoom,
}

/// Where a signal frame goes on the user stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramePlacement {
    /// Address of the [`RtSigframe`] (the handler's `rsp`); `frame + 8` is 16-byte aligned,
    /// as after a `call`.
    pub frame: u64,
    /// Address of the FPU state area (64-byte aligned), equal to the top of the frame area
    /// when no state is saved.
    pub fpstate: u64,
}

/// Places a frame as Linux does: below the red zone of `sp` (or at the top of `altstack` when
/// the handler asked for it and `sp` is not already on it), the FPU state first (`fpstate_len`
/// bytes, 64-byte aligned), the frame under it.
pub fn place_rt_sigframe(
    sp: u64,
    fpstate_len: u64,
    altstack: Option<&StackT>,
) -> Result<FramePlacement, FrameError> {
    let below_red_zone = sp.checked_sub(RED_ZONE).ok_or(FrameError::NoRoom)?;
    let top = match altstack {
        Some(alt) if alt.ss_flags & SS_DISABLE == 0 && !alt.contains(below_red_zone) => alt
            .ss_sp
            .checked_add(alt.ss_size)
            .ok_or(FrameError::NoRoom)?,
        _ => below_red_zone,
    };
    let fpstate = top.checked_sub(fpstate_len).ok_or(FrameError::NoRoom)? & !(FPSTATE_ALIGN - 1);
    let frame = (fpstate
        .checked_sub(RT_SIGFRAME_SIZE as u64)
        .ok_or(FrameError::NoRoom)?
        & !15)
        .checked_sub(8)
        .ok_or(FrameError::NoRoom)?;
    Ok(FramePlacement { frame, fpstate })
}

/// Writes a frame into `buf` (the user memory at the frame's address): `restorer` as the
/// return address, `uc` with its `fpstate` pointer set to `fpstate` (0 for none), then `info`.
/// Returns the bytes written ([`RT_SIGFRAME_SIZE`]).
pub fn write_rt_sigframe(
    buf: &mut [u8],
    restorer: u64,
    uc: &UContext,
    info: &SigInfo,
    fpstate: u64,
) -> Result<usize, FrameError> {
    let got = buf.len();
    let out = buf
        .get_mut(..RT_SIGFRAME_SIZE)
        .ok_or(FrameError::TooSmall {
            need: RT_SIGFRAME_SIZE,
            got,
        })?;
    let mut frame = RtSigframe {
        pretcode: restorer,
        uc: *uc,
        info: *info,
    };
    frame.uc.uc_mcontext.fpstate = fpstate;
    out.copy_from_slice(frame.as_bytes());
    Ok(RT_SIGFRAME_SIZE)
}

/// Reads a whole frame back (tests, debuggers).
pub fn read_rt_sigframe(buf: &[u8]) -> Result<RtSigframe, FrameError> {
    RtSigframe::read_from_prefix(buf)
        .map(|(frame, _)| frame)
        .map_err(|_| FrameError::TooSmall {
            need: RT_SIGFRAME_SIZE,
            got: buf.len(),
        })
}

/// Reads the context `rt_sigreturn` restores from `at_rsp`, the user memory at `rsp` when the
/// restorer makes the call: the handler's `ret` popped the return address, so `rsp` points at
/// the ucontext (Linux reads the frame at `rsp - 8`).
pub fn read_sigreturn_context(at_rsp: &[u8]) -> Result<UContext, FrameError> {
    UContext::read_from_prefix(at_rsp)
        .map(|(uc, _)| uc)
        .map_err(|_| FrameError::TooSmall {
            need: core::mem::size_of::<UContext>(),
            got: at_rsp.len(),
        })
}

/// The registers a handler starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlerEntry {
    /// `rip`: the handler.
    pub rip: u64,
    /// `rsp`: the frame (so the return address is the restorer).
    pub rsp: u64,
    /// `rdi`: the signal number.
    pub rdi: u64,
    /// `rsi`: the siginfo (meaningful with `SA_SIGINFO`; Linux always sets it).
    pub rsi: u64,
    /// `rdx`: the ucontext.
    pub rdx: u64,
    /// `rax`: 0 (no vector registers used by a varargs handler).
    pub rax: u64,
}

/// The entry registers for running `handler` for `signo` on the frame at `frame`.
pub fn handler_entry(frame: u64, signo: i32, handler: u64) -> HandlerEntry {
    HandlerEntry {
        rip: handler,
        rsp: frame,
        rdi: signo as u64,
        rsi: frame + RT_SIGFRAME_INFO as u64,
        rdx: frame + RT_SIGFRAME_UC as u64,
        rax: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn numbers_names_and_defaults() {
        assert_eq!(
            (SIGKILL, SIGSEGV, SIGCHLD, SIGSTOP, SIGSYS),
            (9, 11, 17, 19, 31)
        );
        assert_eq!(name(SIGSEGV), Some("SIGSEGV"));
        assert_eq!(name(1), Some("SIGHUP"));
        assert_eq!(name(31), Some("SIGSYS"));
        assert_eq!((name(0), name(32), name(-1)), (None, None, None));
        assert_eq!(default_action(SIGSEGV), Some(DefaultAction::CoreDump));
        assert_eq!(default_action(SIGCHLD), Some(DefaultAction::Ignore));
        assert_eq!(default_action(SIGTSTP), Some(DefaultAction::Stop));
        assert_eq!(default_action(SIGCONT), Some(DefaultAction::Continue));
        assert_eq!(default_action(SIGTERM), Some(DefaultAction::Terminate));
        assert_eq!(default_action(SIGRTMIN + 3), Some(DefaultAction::Terminate));
        assert_eq!(default_action(65), None);
        assert!(is_realtime(SIGRTMAX) && !is_realtime(SIGSYS));
    }

    #[test]
    fn sets() {
        let mut set = Sigset::EMPTY;
        set.add(SIGINT);
        set.add(SIGRTMAX);
        set.add(0);
        set.add(65);
        assert_eq!(set.0, (1 << 1) | (1 << 63));
        assert!(set.contains(SIGINT) && set.contains(64) && !set.contains(SIGHUP));
        assert!(!set.contains(0) && !set.contains(65));
        set.remove(SIGINT);
        assert_eq!(set.iter().collect::<alloc::vec::Vec<_>>(), [64]);
        let pending = Sigset::of(SIGTERM)
            .union(Sigset::of(SIGSEGV))
            .union(Sigset::of(SIGHUP));
        assert_eq!(pending.lowest(), Some(SIGHUP));
        assert_eq!(
            pending.next_to_deliver(),
            Some(SIGSEGV),
            "synchronous first"
        );
        assert_eq!(Sigset::EMPTY.next_to_deliver(), None);
    }

    #[test]
    fn sigkill_and_sigstop_are_never_blocked() {
        let all = Sigset::EMPTY
            .apply_sigprocmask(SIG_SETMASK, Sigset::FULL)
            .unwrap();
        assert!(!all.contains(SIGKILL) && !all.contains(SIGSTOP));
        assert!(all.contains(SIGTERM));
        let blocked = Sigset::EMPTY
            .apply_sigprocmask(SIG_BLOCK, Sigset::of(SIGKILL).union(Sigset::of(SIGUSR1)))
            .unwrap();
        assert_eq!(blocked, Sigset::of(SIGUSR1));
        assert_eq!(
            blocked.apply_sigprocmask(SIG_UNBLOCK, Sigset::of(SIGUSR1)),
            Ok(Sigset::EMPTY)
        );
        assert_eq!(
            blocked.apply_sigprocmask(3, Sigset::EMPTY),
            Err(crate::errno::EINVAL)
        );
    }

    #[test]
    fn layouts_by_hand() {
        // Linux's include/uapi/asm-generic/signal.h (x86_64 has no SA_RESTORER variant there:
        // arch/x86/include/uapi/asm/signal.h): handler, flags, restorer, mask.
        assert_eq!(size_of::<KernelSigaction>(), 32);
        assert_eq!(offset_of!(KernelSigaction, flags), 8);
        assert_eq!(offset_of!(KernelSigaction, restorer), 16);
        assert_eq!(offset_of!(KernelSigaction, mask), 24);
        assert_eq!(size_of::<Sigcontext>(), 256);
        assert_eq!(offset_of!(Sigcontext, eflags), 17 * 8);
        assert_eq!(offset_of!(Sigcontext, cs), 18 * 8);
        assert_eq!(offset_of!(Sigcontext, ss), 18 * 8 + 6);
        assert_eq!(offset_of!(Sigcontext, cr2), 22 * 8);
        assert_eq!(offset_of!(Sigcontext, fpstate), 23 * 8);
        assert_eq!(size_of::<UContext>(), 304);
        assert_eq!(offset_of!(UContext, uc_sigmask), 296);
        assert_eq!(size_of::<SigInfo>(), SigInfo::SIZE);
        assert_eq!(
            (RT_SIGFRAME_UC, RT_SIGFRAME_INFO, RT_SIGFRAME_SIZE),
            (8, 312, 440)
        );
    }

    #[test]
    fn siginfo_union_fields_land_at_their_offsets() {
        let info = SigInfo::chld(CLD_EXITED, 0x1234, 1000, 42, 7, 9);
        let bytes = info.as_bytes();
        assert_eq!(&bytes[0..4], &SIGCHLD.to_ne_bytes());
        assert_eq!(&bytes[8..12], &CLD_EXITED.to_ne_bytes());
        assert_eq!(&bytes[16..20], &0x1234i32.to_ne_bytes());
        assert_eq!(&bytes[20..24], &1000u32.to_ne_bytes());
        assert_eq!(&bytes[24..28], &42i32.to_ne_bytes());
        assert_eq!(&bytes[32..40], &7i64.to_ne_bytes());
        assert_eq!(&bytes[40..48], &9i64.to_ne_bytes());
        assert_eq!((info.pid(), info.uid(), info.status()), (0x1234, 1000, 42));
        assert_eq!((info.utime(), info.stime()), (7, 9));
        let fault = SigInfo::fault(SIGSEGV, SEGV_MAPERR, 0xdead_b000);
        assert_eq!(&fault.as_bytes()[16..24], &0xdead_b000u64.to_ne_bytes());
        assert_eq!(fault.addr(), 0xdead_b000);
        let queued = SigInfo::queue(SIGRTMIN, 5, 6, 0x77);
        assert_eq!(
            (queued.si_code, queued.pid(), queued.value()),
            (SI_QUEUE, 5, 0x77)
        );
    }

    fn sample_context() -> UContext {
        let mut uc = UContext {
            uc_flags: UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
            uc_stack: StackT {
                ss_flags: SS_DISABLE,
                ..StackT::default()
            },
            uc_sigmask: Sigset::of(SIGUSR2),
            ..UContext::default()
        };
        let m = &mut uc.uc_mcontext;
        // Distinct values so a swapped field shows.
        let regs = [
            &mut m.r8,
            &mut m.r9,
            &mut m.r10,
            &mut m.r11,
            &mut m.r12,
            &mut m.r13,
            &mut m.r14,
            &mut m.r15,
            &mut m.rdi,
            &mut m.rsi,
            &mut m.rbp,
            &mut m.rbx,
            &mut m.rdx,
            &mut m.rax,
            &mut m.rcx,
            &mut m.rsp,
            &mut m.rip,
            &mut m.eflags,
        ];
        for (i, reg) in regs.into_iter().enumerate() {
            *reg = 0x1111_0000 + i as u64;
        }
        m.cs = LINUX_USER_CS;
        m.ss = LINUX_USER_SS;
        m.cr2 = 0xc2;
        uc
    }

    #[test]
    fn frame_round_trip() {
        let uc = sample_context();
        let info = SigInfo::kill(SIGUSR1, SI_USER, 77, 0);
        let mut buf = [0xaau8; RT_SIGFRAME_SIZE + 8];
        assert_eq!(
            write_rt_sigframe(&mut buf[..100], 0x40_1000, &uc, &info, 0),
            Err(FrameError::TooSmall {
                need: 440,
                got: 100
            })
        );
        let n = write_rt_sigframe(&mut buf, 0x40_1000, &uc, &info, 0x7fff_0040).unwrap();
        assert_eq!(n, 440);
        assert_eq!(&buf[440..], &[0xaa; 8], "nothing past the frame");
        // The fixed places a Linux handler and the restorer rely on.
        assert_eq!(
            &buf[0..8],
            &0x40_1000u64.to_ne_bytes(),
            "return address first"
        );
        assert_eq!(&buf[8..16], &uc.uc_flags.to_ne_bytes());
        assert_eq!(
            &buf[8 + 40..8 + 48],
            &0x1111_0000u64.to_ne_bytes(),
            "r8 first"
        );
        assert_eq!(
            &buf[8 + 40 + 16 * 8..8 + 40 + 17 * 8],
            &0x1111_0010u64.to_ne_bytes(),
            "rip"
        );
        assert_eq!(
            &buf[8 + 40 + 23 * 8..8 + 40 + 24 * 8],
            &0x7fff_0040u64.to_ne_bytes(),
            "fpstate"
        );
        assert_eq!(
            &buf[8 + 296..8 + 304],
            &Sigset::of(SIGUSR2).0.to_ne_bytes(),
            "mask"
        );
        assert_eq!(&buf[312..316], &SIGUSR1.to_ne_bytes(), "si_signo");
        assert_eq!(&buf[312 + 16..312 + 20], &77i32.to_ne_bytes(), "si_pid");

        let frame = read_rt_sigframe(&buf).unwrap();
        assert_eq!(frame.pretcode, 0x40_1000);
        assert_eq!(frame.info, info);
        let mut expected = uc;
        expected.uc_mcontext.fpstate = 0x7fff_0040;
        assert_eq!(frame.uc, expected);
        // rt_sigreturn: the restorer runs with rsp = frame + 8.
        let back = read_sigreturn_context(&buf[8..]).unwrap();
        assert_eq!(back, expected);
        assert!(read_sigreturn_context(&buf[8..100]).is_err());
    }

    #[test]
    fn sigreturn_keeps_privileged_flag_bits() {
        let mut uc = sample_context();
        // The handler tries to set IOPL=3 and IF off, and sets CF and DF.
        uc.uc_mcontext.eflags = 0x3000 | 0x1 | 0x400;
        let current = 0x202; // IF on, reserved bit 1
        assert_eq!(uc.sigreturn_rflags(current), 0x202 | 0x1 | 0x400);
    }

    #[test]
    fn placement_follows_linux() {
        let sp = 0x7fff_f000_1238;
        let p = place_rt_sigframe(sp, 832, None).unwrap();
        assert_eq!(p.fpstate % 64, 0);
        assert!(p.fpstate + 832 <= sp - RED_ZONE);
        assert!(p.fpstate + 832 > sp - RED_ZONE - 64);
        assert_eq!((p.frame + 8) % 16, 0);
        // 440 bytes rounded to 16 below the FPU state, then 8 more for the "pushed" return.
        assert_eq!(p.frame, p.fpstate - 448 - 8);
        // The alternate stack is used unless already on it; no red zone there.
        let alt = StackT {
            ss_sp: 0x10_0000,
            ss_flags: 0,
            _pad: 0,
            ss_size: 0x4000,
        };
        let p = place_rt_sigframe(sp, 0, Some(&alt)).unwrap();
        assert_eq!(p.fpstate, 0x10_4000);
        assert_eq!(p.frame, ((0x10_4000 - 440) & !15) - 8);
        let on_alt = place_rt_sigframe(0x10_2000, 0, Some(&alt)).unwrap();
        assert_eq!(on_alt.fpstate, 0x10_2000 - RED_ZONE);
        let disabled = StackT {
            ss_flags: SS_DISABLE,
            ..alt
        };
        assert_eq!(
            place_rt_sigframe(sp, 0, Some(&disabled)),
            place_rt_sigframe(sp, 0, None)
        );
        assert_eq!(place_rt_sigframe(100, 0, None), Err(FrameError::NoRoom));
        let entry = handler_entry(p.frame, SIGUSR1, 0x40_2000);
        assert_eq!((entry.rsi - entry.rsp, entry.rdx - entry.rsp), (312, 8));
        assert_eq!(entry.rdi, 10);
    }
}
