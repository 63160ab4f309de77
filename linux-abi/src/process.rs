//! Processes and threads: `clone` flags, wait options and status encoding, resource limits
//! and usage, `prctl` and `arch_prctl` codes, `getrandom` flags, `uname` and `sysinfo`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::time::Timeval;

/// `clone`: mask of the signal sent to the parent when the child exits.
pub const CSIGNAL: u64 = 0xff;
/// Share the address space.
pub const CLONE_VM: u64 = 0x100;
/// Share the cwd, root and umask.
pub const CLONE_FS: u64 = 0x200;
/// Share the descriptor table.
pub const CLONE_FILES: u64 = 0x400;
/// Share the signal handlers.
pub const CLONE_SIGHAND: u64 = 0x800;
/// Return a pidfd of the child.
pub const CLONE_PIDFD: u64 = 0x1000;
/// Continue tracing the child.
pub const CLONE_PTRACE: u64 = 0x2000;
/// Suspend the parent until the child execs or exits.
pub const CLONE_VFORK: u64 = 0x4000;
/// The child's parent is the caller's parent.
pub const CLONE_PARENT: u64 = 0x8000;
/// Same thread group: a thread, not a process.
pub const CLONE_THREAD: u64 = 0x10000;
/// New mount namespace.
pub const CLONE_NEWNS: u64 = 0x20000;
/// Share System V semaphore undo lists.
pub const CLONE_SYSVSEM: u64 = 0x40000;
/// Set the child's FS base (TLS) to the `tls` argument.
pub const CLONE_SETTLS: u64 = 0x80000;
/// Store the child's tid at `parent_tid` in the parent.
pub const CLONE_PARENT_SETTID: u64 = 0x100000;
/// Clear `child_tid` and futex-wake it when the child exits.
pub const CLONE_CHILD_CLEARTID: u64 = 0x200000;
/// Ignored.
pub const CLONE_DETACHED: u64 = 0x400000;
/// The tracer cannot force `CLONE_PTRACE`.
pub const CLONE_UNTRACED: u64 = 0x800000;
/// Store the child's tid at `child_tid` in the child.
pub const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
/// New cgroup namespace.
pub const CLONE_NEWCGROUP: u64 = 0x0200_0000;
/// New UTS namespace.
pub const CLONE_NEWUTS: u64 = 0x0400_0000;
/// New IPC namespace.
pub const CLONE_NEWIPC: u64 = 0x0800_0000;
/// New user namespace.
pub const CLONE_NEWUSER: u64 = 0x1000_0000;
/// New PID namespace.
pub const CLONE_NEWPID: u64 = 0x2000_0000;
/// New network namespace.
pub const CLONE_NEWNET: u64 = 0x4000_0000;
/// Share the I/O context.
pub const CLONE_IO: u64 = 0x8000_0000;

/// `wait4`/`waitid`: do not block.
pub const WNOHANG: u32 = 0x1;
/// `wait4`: also report stopped children.
pub const WUNTRACED: u32 = 0x2;
/// `waitid`: report stopped children.
pub const WSTOPPED: u32 = WUNTRACED;
/// `waitid`: report exited children.
pub const WEXITED: u32 = 0x4;
/// Report continued children.
pub const WCONTINUED: u32 = 0x8;
/// `waitid`: leave the child waitable.
pub const WNOWAIT: u32 = 0x0100_0000;
/// Do not wait for children of other threads in the group.
pub const __WNOTHREAD: u32 = 0x2000_0000;
/// Wait for all children, whatever their exit signal.
pub const __WALL: u32 = 0x4000_0000;
/// Wait only for children whose exit signal is not `SIGCHLD`.
pub const __WCLONE: u32 = 0x8000_0000;
/// `waitid`: any child.
pub const P_ALL: i32 = 0;
/// `waitid`: the child with this pid.
pub const P_PID: i32 = 1;
/// `waitid`: any child in this process group.
pub const P_PGID: i32 = 2;
/// `waitid`: the child this pidfd refers to.
pub const P_PIDFD: i32 = 3;

/// The `int` status `wait4` stores, as the `W*` macros of C libraries decode it.
pub mod wait_status {
    /// A child that exited with `code` (its low 8 bits).
    pub const fn exited(code: i32) -> i32 {
        (code & 0xff) << 8
    }

    /// A child killed by `sig`, with a core dump if `core`.
    pub const fn signaled(sig: i32, core: bool) -> i32 {
        (sig & 0x7f) | if core { 0x80 } else { 0 }
    }

    /// A child stopped by `sig`.
    pub const fn stopped(sig: i32) -> i32 {
        ((sig & 0xff) << 8) | 0x7f
    }

    /// A stopped child that continued.
    pub const fn continued() -> i32 {
        0xffff
    }
}

/// CPU time in seconds.
pub const RLIMIT_CPU: i32 = 0;
/// Largest file size.
pub const RLIMIT_FSIZE: i32 = 1;
/// Largest data segment.
pub const RLIMIT_DATA: i32 = 2;
/// Largest stack.
pub const RLIMIT_STACK: i32 = 3;
/// Largest core file.
pub const RLIMIT_CORE: i32 = 4;
/// Largest resident set (no effect).
pub const RLIMIT_RSS: i32 = 5;
/// Most processes of the user.
pub const RLIMIT_NPROC: i32 = 6;
/// One more than the highest descriptor number.
pub const RLIMIT_NOFILE: i32 = 7;
/// Most locked memory.
pub const RLIMIT_MEMLOCK: i32 = 8;
/// Largest address space.
pub const RLIMIT_AS: i32 = 9;
/// Most file locks.
pub const RLIMIT_LOCKS: i32 = 10;
/// Most pending signals.
pub const RLIMIT_SIGPENDING: i32 = 11;
/// Most bytes in POSIX message queues.
pub const RLIMIT_MSGQUEUE: i32 = 12;
/// Ceiling of the nice value.
pub const RLIMIT_NICE: i32 = 13;
/// Ceiling of the real-time priority.
pub const RLIMIT_RTPRIO: i32 = 14;
/// Real-time CPU time without blocking, in microseconds.
pub const RLIMIT_RTTIME: i32 = 15;
/// Number of limits.
pub const RLIM_NLIMITS: i32 = 16;
/// No limit.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// `struct rlimit` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Rlimit {
    /// Soft limit.
    pub rlim_cur: u64,
    /// Hard limit (ceiling of the soft one).
    pub rlim_max: u64,
}

/// `getrusage`: the calling process.
pub const RUSAGE_SELF: i32 = 0;
/// `getrusage`: its waited-for children.
pub const RUSAGE_CHILDREN: i32 = -1;
/// `getrusage`: the calling thread.
pub const RUSAGE_THREAD: i32 = 1;

/// `struct rusage` (144 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Rusage {
    /// User CPU time.
    pub ru_utime: Timeval,
    /// System CPU time.
    pub ru_stime: Timeval,
    /// Largest resident set, KiB.
    pub ru_maxrss: i64,
    /// Unused.
    pub ru_ixrss: i64,
    /// Unused.
    pub ru_idrss: i64,
    /// Unused.
    pub ru_isrss: i64,
    /// Page faults served without I/O.
    pub ru_minflt: i64,
    /// Page faults that needed I/O.
    pub ru_majflt: i64,
    /// Unused.
    pub ru_nswap: i64,
    /// Blocks read.
    pub ru_inblock: i64,
    /// Blocks written.
    pub ru_oublock: i64,
    /// Unused.
    pub ru_msgsnd: i64,
    /// Unused.
    pub ru_msgrcv: i64,
    /// Unused.
    pub ru_nsignals: i64,
    /// Voluntary context switches.
    pub ru_nvcsw: i64,
    /// Involuntary context switches.
    pub ru_nivcsw: i64,
}

/// `prctl`: set the signal sent when the parent dies.
pub const PR_SET_PDEATHSIG: i32 = 1;
/// `prctl`: get the parent-death signal.
pub const PR_GET_PDEATHSIG: i32 = 2;
/// `prctl`: get the dumpable flag.
pub const PR_GET_DUMPABLE: i32 = 3;
/// `prctl`: set the dumpable flag.
pub const PR_SET_DUMPABLE: i32 = 4;
/// `prctl`: get the keep-capabilities flag.
pub const PR_GET_KEEPCAPS: i32 = 7;
/// `prctl`: set the keep-capabilities flag.
pub const PR_SET_KEEPCAPS: i32 = 8;
/// `prctl`: set the thread name (16 bytes with the NUL).
pub const PR_SET_NAME: i32 = 15;
/// `prctl`: get the thread name.
pub const PR_GET_NAME: i32 = 16;
/// `prctl`: get the seccomp mode.
pub const PR_GET_SECCOMP: i32 = 21;
/// `prctl`: set the seccomp mode.
pub const PR_SET_SECCOMP: i32 = 22;
/// `prctl`: whether a capability is in the bounding set.
pub const PR_CAPBSET_READ: i32 = 23;
/// `prctl`: drop a capability from the bounding set.
pub const PR_CAPBSET_DROP: i32 = 24;
/// `prctl`: set the timer slack.
pub const PR_SET_TIMERSLACK: i32 = 29;
/// `prctl`: get the timer slack.
pub const PR_GET_TIMERSLACK: i32 = 30;
/// `prctl`: become a subreaper of orphaned descendants.
pub const PR_SET_CHILD_SUBREAPER: i32 = 36;
/// `prctl`: whether the caller is a subreaper.
pub const PR_GET_CHILD_SUBREAPER: i32 = 37;
/// `prctl`: set no-new-privileges.
pub const PR_SET_NO_NEW_PRIVS: i32 = 38;
/// `prctl`: get no-new-privileges.
pub const PR_GET_NO_NEW_PRIVS: i32 = 39;
/// `prctl`: disable transparent huge pages.
pub const PR_SET_THP_DISABLE: i32 = 41;
/// `prctl`: whether transparent huge pages are disabled.
pub const PR_GET_THP_DISABLE: i32 = 42;
/// `prctl`: set an attribute of a memory range.
pub const PR_SET_VMA: i32 = 0x5356_4d41;
/// `PR_SET_VMA` attribute: the name of an anonymous mapping.
pub const PR_SET_VMA_ANON_NAME: i32 = 0;
/// Length of a thread name buffer (`TASK_COMM_LEN`).
pub const TASK_COMM_LEN: usize = 16;

/// `arch_prctl`: set the GS base.
pub const ARCH_SET_GS: i32 = 0x1001;
/// `arch_prctl`: set the FS base (the TLS pointer of x86_64 C libraries).
pub const ARCH_SET_FS: i32 = 0x1002;
/// `arch_prctl`: get the FS base.
pub const ARCH_GET_FS: i32 = 0x1003;
/// `arch_prctl`: get the GS base.
pub const ARCH_GET_GS: i32 = 0x1004;
/// `arch_prctl`: whether `cpuid` is allowed.
pub const ARCH_GET_CPUID: i32 = 0x1011;
/// `arch_prctl`: allow or fault `cpuid`.
pub const ARCH_SET_CPUID: i32 = 0x1012;

/// `getrandom`: fail with `EAGAIN` instead of blocking.
pub const GRND_NONBLOCK: u32 = 0x1;
/// `getrandom`: use the (legacy) blocking pool.
pub const GRND_RANDOM: u32 = 0x2;
/// `getrandom`: never block, even before the pool is initialized.
pub const GRND_INSECURE: u32 = 0x4;

/// Length of each `utsname` field, with its NUL.
pub const UTSNAME_LENGTH: usize = 65;

/// `struct new_utsname` of `uname` (6 fields of 65 bytes, 390 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Utsname {
    /// Operating system name (`"Linux"` for Linux programs).
    pub sysname: [u8; UTSNAME_LENGTH],
    /// Host name.
    pub nodename: [u8; UTSNAME_LENGTH],
    /// Kernel release (C libraries compare it against their minimum).
    pub release: [u8; UTSNAME_LENGTH],
    /// Kernel version string.
    pub version: [u8; UTSNAME_LENGTH],
    /// Hardware name (`"x86_64"`).
    pub machine: [u8; UTSNAME_LENGTH],
    /// NIS domain name.
    pub domainname: [u8; UTSNAME_LENGTH],
}

impl Utsname {
    /// A `utsname` of the given strings, each cut to 64 bytes and NUL-terminated.
    pub fn new(
        sysname: &str,
        nodename: &str,
        release: &str,
        version: &str,
        machine: &str,
        domainname: &str,
    ) -> Self {
        fn field(s: &str) -> [u8; UTSNAME_LENGTH] {
            let mut out = [0; UTSNAME_LENGTH];
            let n = s.len().min(UTSNAME_LENGTH - 1);
            out[..n].copy_from_slice(&s.as_bytes()[..n]);
            out
        }
        Utsname {
            sysname: field(sysname),
            nodename: field(nodename),
            release: field(release),
            version: field(version),
            machine: field(machine),
            domainname: field(domainname),
        }
    }
}

/// `struct sysinfo` (112 bytes on x86_64; the padding is explicit).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Sysinfo {
    /// Seconds since boot.
    pub uptime: i64,
    /// 1, 5 and 15 minute load averages, scaled by 65536.
    pub loads: [u64; 3],
    /// Total usable RAM, in `mem_unit`s.
    pub totalram: u64,
    /// Free RAM.
    pub freeram: u64,
    /// Shared memory.
    pub sharedram: u64,
    /// Buffer memory.
    pub bufferram: u64,
    /// Total swap.
    pub totalswap: u64,
    /// Free swap.
    pub freeswap: u64,
    /// Number of processes.
    pub procs: u16,
    /// Padding (`pad` in Linux).
    pub pad: u16,
    /// Padding before the 8-byte-aligned fields.
    pub _pad1: u32,
    /// Total high memory.
    pub totalhigh: u64,
    /// Free high memory.
    pub freehigh: u64,
    /// Size of the memory unit in bytes.
    pub mem_unit: u32,
    /// Trailing padding (`_f` is empty on 64-bit).
    pub _pad2: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes_by_hand() {
        assert_eq!(size_of::<Utsname>(), 390);
        assert_eq!(size_of::<Sysinfo>(), 112);
        assert_eq!(size_of::<Rusage>(), 144);
        assert_eq!(size_of::<Rlimit>(), 16);
    }

    #[test]
    fn utsname_fields_are_cut_and_terminated() {
        let long = "x".repeat(100);
        let u = Utsname::new("Linux", &long, "6.1.0", "#1 k42", "x86_64", "");
        assert_eq!(&u.sysname[..6], b"Linux\0");
        assert_eq!(&u.nodename[..64], &long.as_bytes()[..64]);
        assert_eq!(u.nodename[64], 0);
        assert_eq!(&u.as_bytes()[65 * 4..65 * 4 + 7], b"x86_64\0");
    }

    #[test]
    fn wait_status_by_hand() {
        assert_eq!(wait_status::exited(3), 0x300);
        assert_eq!(wait_status::exited(256 + 3), 0x300, "only the low 8 bits");
        assert_eq!(wait_status::signaled(11, true), 0x8b);
        assert_eq!(wait_status::stopped(19), 0x137f);
    }
}
