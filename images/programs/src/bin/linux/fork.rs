//! Linux processes over K42 ones: fork (and vfork, and `clone` used as fork) on the kernel's
//! copy-on-write `fork`, `wait4` on its `wait`, and process groups and sessions, which the
//! kernel records (`process_group`, inherited at fork) so that other processes see them in
//! its process list; Linux's rules for changing them are applied here.

use core::sync::atomic::{AtomicU64, Ordering};

use k42_linux_abi::process::{
    self, wait_status, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID, CLONE_PARENT_SETTID, CSIGNAL,
    WNOHANG,
};
use k42_linux_abi::{errno, signal};
use k42_rt::kabi::{self, Error, Info, WaitFlags};
use k42_rt::sys::{self, Forked};

use crate::{err, files, put, Ret};

/// The parent's pid (1, init, for a process the kernel or a native program started).
static PARENT: AtomicU64 = AtomicU64::new(1);

/// `getppid()`.
pub fn parent() -> Ret {
    PARENT.load(Ordering::Relaxed) as Ret
}

/// `fork()` / `vfork()` (a vfork child gets a copy too, which is what vfork allows).
pub fn fork() -> Ret {
    let handles = match files::prepare_fork() {
        Ok(handles) => handles,
        Err(e) => return e,
    };
    let me = k42_rt::pid();
    match sys::fork() {
        Ok(Forked::Child) => {
            PARENT.store(me, Ordering::Relaxed);
            crate::procfs::record_start();
            crate::signals::forked_child();
            crate::threads::reset();
            0
        }
        Ok(Forked::Parent(pid)) => pid as Ret,
        Err(e) => {
            files::fork_failed(&handles);
            match e {
                Error::Again => err(errno::EAGAIN),
                Error::NoMemory => err(errno::ENOMEM),
                // A process with threads on several CPUs cannot fork yet.
                _ => err(errno::ENOSYS),
            }
        }
    }
}

/// `clone(flags, stack, parent_tid, child_tid, tls)` without `CLONE_VM`: a new process (what C
/// libraries' `fork` asks for); threads are `threads::spawn`. Other sharing is `-ENOSYS`.
pub fn clone(flags: u64, stack: u64, parent_tid: u64, child_tid: u64) -> Ret {
    let allowed = CSIGNAL | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | CLONE_PARENT_SETTID;
    if flags & !allowed != 0 || stack != 0 {
        return crate::unimplemented_variant("clone with sharing flags or a new stack");
    }
    if flags & CSIGNAL != signal::SIGCHLD as u64 && flags & CSIGNAL != 0 {
        return err(errno::EINVAL);
    }
    let pid = fork();
    if pid == 0 && flags & CLONE_CHILD_SETTID != 0 {
        // The child's copy of its thread id word; a bad pointer is the child's problem, as on
        // Linux (the kernel ignores the failure).
        let _ = put(child_tid, &(k42_rt::pid() as u32));
    }
    if pid > 0 && flags & CLONE_PARENT_SETTID != 0 {
        let _ = put(parent_tid, &(pid as u32));
    }
    pid
}

/// `wait4(pid, status, options, rusage)`: any child for `pid` -1, 0 or below -1 (process
/// groups are not tracked across processes yet), else that child.
pub fn wait4(pid: i64, status: u64, options: u64, rusage: u64) -> Ret {
    let known = u64::from(WNOHANG | process::WUNTRACED | process::WCONTINUED | process::__WALL);
    if options & !known != 0 {
        return err(errno::EINVAL);
    }
    let target = if pid > 0 { pid as u64 } else { kabi::WAIT_ANY };
    let no_hang = options & u64::from(WNOHANG) != 0;
    match wait_child(target, no_hang) {
        Err(Waited::Interrupted) => err(errno::EINTR),
        Err(Waited::NoChild) => err(errno::ECHILD),
        Err(Waited::NoneYet) => 0,
        Ok((child, code)) => {
            if status != 0 {
                let word = if code & kabi::EXIT_SIGNALED != 0 {
                    wait_status::signaled((code & 0x7f) as i32, false)
                } else {
                    wait_status::exited(code as i32)
                };
                let r = put(status, &word);
                if r < 0 {
                    return r;
                }
            }
            if rusage != 0 {
                let r = put(rusage, &process::Rusage::default());
                if r < 0 {
                    return r;
                }
            }
            child as Ret
        }
    }
}

/// Why [`wait_child`] found no child.
enum Waited {
    /// `WNOHANG`, and none has exited.
    NoneYet,
    /// A signal ended the wait.
    Interrupted,
    /// No such child.
    NoChild,
}

/// Waits for `target` (or any child) to exit: (its pid, its status). The wait is the soft
/// interrupt a child's exit posts, so the process's other threads run meanwhile and a signal
/// can end it (`EINTR`, see [`crate::signals::interrupts_call`]), in a process with one thread
/// too; a child that has exited is reaped before a signal is looked at.
fn wait_child(target: u64, no_hang: bool) -> Result<(u64, i64), Waited> {
    let mut interrupted = false;
    loop {
        match sys::wait_flags(target, WaitFlags::NO_HANG) {
            Ok(found) => return Ok(found),
            Err(Error::Again) if no_hang => return Err(Waited::NoneYet),
            Err(Error::Again) if interrupted => return Err(Waited::Interrupted),
            Err(Error::Again) => {}
            Err(_) => return Err(Waited::NoChild),
        }
        let mask = kabi::SOFT_INTERRUPT_CHILD | crate::signals::SOFT_INTERRUPTS;
        crate::threads::wait_for(mask, 0);
        interrupted = crate::signals::interrupts_call();
    }
}

/// `setpgid(pid, pgid)` for the caller or one of its children: the group must be the
/// process's own id (a new group) or a group of its session; a session leader cannot move.
pub fn setpgid(pid: u64, group: u64) -> Ret {
    if (pid as i64) < 0 || (group as i64) < 0 {
        return err(errno::EINVAL);
    }
    let me = k42_rt::pid();
    let target = if pid == 0 { me } else { pid };
    let group = if group == 0 { target } else { group };
    let all = crate::procfs::processes();
    let Some(desc) = all.iter().find(|d| d.pid == target) else {
        return err(errno::ESRCH);
    };
    if target != me && desc.parent != me {
        return err(errno::ESRCH);
    }
    let joins_existing = all
        .iter()
        .any(|d| d.group == group && d.session == desc.session);
    if desc.session == target || (group != target && !joins_existing) {
        return err(errno::EPERM);
    }
    match sys::process_group(target, group, 0) {
        Ok(()) => 0,
        Err(_) => err(errno::ESRCH),
    }
}

/// `getpgid(pid)` / `getpgrp()`.
pub fn getpgid(pid: u64) -> Ret {
    if pid == 0 || pid == k42_rt::pid() {
        return sys::info(Info::Group) as Ret;
    }
    match crate::procfs::find(pid) {
        Some(d) => d.group as Ret,
        None => err(errno::ESRCH),
    }
}

/// `setsid()`: a new session and group led by the caller (`EPERM` for a group leader).
pub fn setsid() -> Ret {
    let me = k42_rt::pid();
    if sys::info(Info::Group) == me {
        return err(errno::EPERM);
    }
    match sys::process_group(0, me, me) {
        Ok(()) => me as Ret,
        Err(_) => err(errno::EPERM),
    }
}

/// `getsid(pid)`.
pub fn getsid(pid: u64) -> Ret {
    if pid == 0 || pid == k42_rt::pid() {
        return sys::info(Info::Session) as Ret;
    }
    match crate::procfs::find(pid) {
        Some(d) => d.session as Ret,
        None => err(errno::ESRCH),
    }
}
