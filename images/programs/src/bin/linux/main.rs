//! The Linux personality: the Linux emulation the kernel loads into every Linux process (K42 ran
//! Linux binaries through such a layer in each process's own library). It starts first, like an
//! ELF interpreter: it sets itself up, tells the kernel where the process's `syscall`
//! instructions must go, and jumps to the program with the initial stack Linux gives. Each
//! system call then runs here, in ring 3, asking the kernel (through the K42 entry page) only
//! for what needs it.
//!
//! On an emulating KVM `syscall` stays in ring 3 and jumps to LSTAR, which the kernel points
//! at [`k42_linux_syscall`]; on real x86 it enters the kernel, which reflects it here unchanged.
//! Either way `rcx` holds the return address and the caller's stack is in `rsp`.
//! The first call from each site has the kernel rewrite it into `call rax` (see `rewrite`), so
//! later calls from there arrive the same way without a `syscall` instruction.
//!
//! Covered so far: memory (brk, mmap/munmap/mprotect: anonymous, and private copies of
//! files), arch_prctl, ids, uname,
//! clocks and sleeps, getrandom, rlimits; files, directories, pipes and terminals (`files`);
//! fork, execve and wait4 (`fork`, `exec`); signals (`signals`); threads and futexes
//! (`threads`); a minimal `/proc` (`procfs`). Anything else returns `-ENOSYS`, and the first use of each is logged by name.
#![no_std]
#![no_main]

extern crate alloc;

mod disk;
mod exec;
mod files;
mod fork;
mod procfs;
mod rewrite;
mod signals;
mod threads;

use core::sync::atomic::{AtomicU64, Ordering};

use k42_guest_lib::virtio::rng;
use k42_linux_abi::{auxv, errno, mm, process, syscall as nr, time};
use k42_programs::devmem::own_ppc_buffer;
use k42_rt::kabi::{self, Prot, Sys};
use k42_rt::sys;
use zerocopy::{FromBytes, IntoBytes};

/// The lowest address a program's pointer may use, and the end of what it may reach (its
/// initial stack is the highest thing it owns).
pub(crate) const USER_POINTERS: core::ops::Range<u64> = kabi::USER_START..kabi::MAIN_STACK_TOP;
/// Anonymous mappings are placed downwards from here (below the kernel's fixed areas).
pub(crate) const MMAP_TOP: u64 = 0x0000_7f00_0000_0000;
/// The break may grow this far above its start (staying below the personality).
const BRK_MAX: u64 = 1 << 30;
/// Where this code and its data are: no mapping of the program may touch it.
pub(crate) const PERSONALITY: core::ops::Range<u64> = kabi::LINUX_PERSONALITY_AREA;
/// Where the personality maps file windows (`files`): kept across `execve`, refused to the
/// program's own `mmap`.
pub(crate) const FILE_WINDOWS: core::ops::Range<u64> = 0x0000_1100_0000_0000..0x0000_1200_0000_0000;
const PAGE: u64 = kabi::PAGE_SIZE;

static BRK_START: AtomicU64 = AtomicU64::new(0);
static BRK: AtomicU64 = AtomicU64::new(0);
static MMAP_NEXT: AtomicU64 = AtomicU64::new(MMAP_TOP);
/// Whether system-call sites are rewritten into calls (the kernel said so at registration).
static REWRITE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// `AT_HWCAP` as the kernel gave it (passed on by `execve`).
static HWCAP: AtomicU64 = AtomicU64::new(0);

/// The CPU capabilities for `AT_HWCAP`.
pub(crate) fn hwcap() -> u64 {
    HWCAP.load(Ordering::Relaxed)
}

/// A fresh program's memory layout: its break starts at `end`, mappings start at the top.
pub(crate) fn reset_memory(end: u64) {
    let end = end.next_multiple_of(PAGE);
    BRK_START.store(end, Ordering::Relaxed);
    BRK.store(end, Ordering::Relaxed);
    MMAP_NEXT.store(MMAP_TOP, Ordering::Relaxed);
}
/// Unimplemented system calls already logged (one bit per number below 512).
static LOGGED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static RANDOM_STATE: AtomicU64 = AtomicU64::new(0);

// Process start: rsp is the Linux initial stack (argc, argv, envp, auxv).
core::arch::global_asm!(
    r#"
    .global _start
_start:
    mov rdi, rsp
    and rsp, -16
    call {start}
    ud2
    "#,
    start = sym linux_start,
);

// A Linux `syscall`: rax = number, rdi, rsi, rdx, r10, r8, r9 = arguments, rcx = where to
// return. Runs on the caller's stack below its red zone; preserves every register Linux does
// (all but rax, rcx and r11), flags included. A rewritten site (`call rax`) arrives the same
// way: the sled page's code pops the return address into rcx and jumps here. The return
// address is passed on as the dispatcher's eighth argument.
core::arch::global_asm!(
    r#"
    .global k42_linux_syscall
k42_linux_syscall:
    lea rsp, [rsp - 128]
    push rcx
    pushfq
    push rdi
    push rsi
    push rdx
    push r10
    push r8
    push r9
    push rbp
    mov rbp, rsp
    and rsp, -16
    push qword ptr [rbp + 64]
    push r9
    mov r9, r8
    mov r8, r10
    mov rcx, rdx
    mov rdx, rsi
    mov rsi, rdi
    mov rdi, rax
    cld
    call {dispatch}
    mov rsp, rbp
    pop rbp
    pop r9
    pop r8
    pop r10
    pop rdx
    pop rsi
    pop rdi
    popfq
    pop rcx
    lea rsp, [rsp + 128]
    jmp rcx
    "#,
    dispatch = sym linux_syscall,
);

extern "C" {
    fn k42_linux_syscall();
}

/// What the personality needs from the auxiliary vector.
struct Auxv {
    phdr: u64,
    phent: u64,
    phnum: u64,
    entry: u64,
    hwcap: u64,
    execfn: u64,
}

/// Reads the auxiliary vector from the initial stack at `sp`.
fn read_auxv(sp: u64) -> Auxv {
    let word = |at: u64| -> u64 {
        // SAFETY: the kernel wrote the initial stack (argc, argv, NULL, envp, NULL, auxv pairs
        // ending in AT_NULL) at `sp`; every address read here lies inside it.
        unsafe { core::ptr::read(at as *const u64) }
    };
    let argc = word(sp);
    let mut at = sp + 8 * (argc + 2);
    while word(at) != 0 {
        at += 8;
    }
    at += 8;
    let mut aux = Auxv {
        phdr: 0,
        phent: 0,
        phnum: 0,
        entry: 0,
        hwcap: 0,
        execfn: 0,
    };
    loop {
        let (key, value) = (word(at), word(at + 8));
        match key {
            auxv::AT_NULL => break,
            auxv::AT_PHDR => aux.phdr = value,
            auxv::AT_PHENT => aux.phent = value,
            auxv::AT_PHNUM => aux.phnum = value,
            auxv::AT_ENTRY => aux.entry = value,
            auxv::AT_HWCAP => aux.hwcap = value,
            auxv::AT_EXECFN => aux.execfn = value,
            _ => {}
        }
        at += 16;
    }
    aux
}

/// The end of the program's highest loadable segment, page-aligned: where its break starts.
fn program_end(aux: &Auxv) -> u64 {
    const PT_LOAD: u32 = 1;
    const PT_PHDR: u32 = 6;
    let header = |i: u64| -> (u32, u64, u64) {
        let at = aux.phdr + i * aux.phent;
        // SAFETY: AT_PHDR/AT_PHNUM/AT_PHENT describe the program headers, which the kernel
        // loaded with the program (they lie in a loaded segment).
        unsafe {
            (
                core::ptr::read(at as *const u32),
                core::ptr::read((at + 16) as *const u64),
                core::ptr::read((at + 40) as *const u64),
            )
        }
    };
    let headers = (0..aux.phnum).map(header);
    // A static-PIE program is loaded at a bias: PT_PHDR's address versus AT_PHDR says which.
    let bias = headers
        .clone()
        .find(|h| h.0 == PT_PHDR)
        .map_or(0, |h| aux.phdr.wrapping_sub(h.1));
    headers
        .filter(|h| h.0 == PT_LOAD)
        .map(|h| bias.wrapping_add(h.1).wrapping_add(h.2))
        .max()
        .unwrap_or(0)
        .next_multiple_of(PAGE)
}

extern "C" fn linux_start(sp: u64) -> ! {
    k42_rt::init_heap();
    files::init();
    let aux = read_auxv(sp);
    reset_memory(program_end(&aux));
    HWCAP.store(aux.hwcap, Ordering::Relaxed);
    if aux.execfn != 0 {
        if let Ok(path) = files::user_path(aux.execfn) {
            exec::set_current_exe(&path);
        }
    }
    exec::record_args(sp);
    procfs::record_start();
    procfs::publish_command();
    RANDOM_STATE.store(sys::rdtsc() | 1, Ordering::Relaxed);
    threads::take_upcalls();
    let entry = k42_linux_syscall as *const () as u64;
    let registered = sys::check_raw(sys::raw(Sys::LinuxEntry, entry, 0, 0, 0).0);
    match registered {
        Ok(rewriting) if aux.entry != 0 => REWRITE.store(rewriting == 1, Ordering::Relaxed),
        _ => {
            k42_rt::println!("linux: cannot start the program: {registered:?}");
            sys::exit(127);
        }
    }
    // SAFETY: enters the program as Linux does: rsp = its initial stack, rdx = 0 (no exit
    // handler), at its entry point; nothing of ours is needed afterwards.
    unsafe {
        core::arch::asm!(
            "mov rsp, {sp}",
            "xor ebp, ebp",
            "jmp {entry}",
            sp = in(reg) sp,
            entry = in(reg) aux.entry,
            in("rdx") 0,
            options(noreturn)
        )
    }
}

/// A Linux return value: the result, or `-errno`.
type Ret = i64;

fn err(e: i32) -> Ret {
    -i64::from(e)
}

/// The program's memory at `ptr..ptr + len`, if the range is one a program may own.
fn user_range(ptr: u64, len: u64) -> Result<(), Ret> {
    let end = ptr.checked_add(len).ok_or(err(errno::EFAULT))?;
    if len != 0 && (!USER_POINTERS.contains(&ptr) || end > USER_POINTERS.end) {
        return Err(err(errno::EFAULT));
    }
    Ok(())
}

fn user_bytes<'a>(ptr: u64, len: u64) -> Result<&'a [u8], Ret> {
    user_range(ptr, len)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: the range lies where the program's own memory is; it is the program's buffer,
    // read while the program waits in this call. An unmapped address there faults the
    // process (as a bad pointer would crash it on Linux when touched by the program itself).
    Ok(unsafe { core::slice::from_raw_parts(ptr as *const u8, len as usize) })
}

fn user_bytes_mut<'a>(ptr: u64, len: u64) -> Result<&'a mut [u8], Ret> {
    user_range(ptr, len)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as in `user_bytes`, for a buffer the program handed over for writing.
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr as *mut u8, len as usize) })
}

/// A NUL-terminated string of the program, at most `max` bytes long (`-too_long` if longer).
fn user_cstring(ptr: u64, max: usize, too_long: i32) -> Result<alloc::vec::Vec<u8>, Ret> {
    let mut out = alloc::vec::Vec::new();
    loop {
        let byte = user_bytes(ptr + out.len() as u64, 1)?[0];
        if byte == 0 {
            return Ok(out);
        }
        if out.len() >= max {
            return Err(err(too_long));
        }
        out.push(byte);
    }
}

fn put<T: IntoBytes + zerocopy::Immutable>(ptr: u64, value: &T) -> Ret {
    let bytes = value.as_bytes();
    match user_bytes_mut(ptr, bytes.len() as u64) {
        Ok(out) => {
            out.copy_from_slice(bytes);
            0
        }
        Err(e) => e,
    }
}

fn get<T: FromBytes>(ptr: u64) -> Result<T, Ret> {
    let bytes = user_bytes(ptr, core::mem::size_of::<T>() as u64)?;
    T::read_from_bytes(bytes).map_err(|_| err(errno::EFAULT))
}

/// Handles Linux system call `n` with arguments `a0..a5`, made by the instruction that ends
/// just before `resume`.
extern "C" fn linux_syscall(
    n: u64,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    resume: u64,
) -> Ret {
    if REWRITE.load(Ordering::Relaxed) && n < kabi::LINUX_SLED_CALLS {
        rewrite::site(resume - 2);
    }
    let ret = match n {
        nr::SYS_CLONE if a0 & process::CLONE_THREAD != 0 => {
            threads::spawn(a0, a1, a2, a3, a4, [a0, a1, a2, a3, a4, a5], resume)
        }
        nr::SYS_CLONE if a0 & process::CLONE_VM != 0 => {
            threads::spawn_process(a0, a1, [a0, a1, a2, a3, a4, a5], resume)
        }
        nr::SYS_FUTEX => threads::futex(a0, a1, a2, a3, a4, a5),
        nr::SYS_MMAP => mmap(a0, a1, a2, a3, a4, a5),
        _ => match files::syscall(n, [a0, a1, a2, a3, a4, a5]) {
            Some(ret) => ret,
            None => process_syscall(n, a0, a1, a2, a3),
        },
    };
    signals::deliver();
    threads::preempt_if_wanted();
    ret
}

/// The system calls that are not about files.
fn process_syscall(n: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> Ret {
    match n {
        nr::SYS_BRK => brk(a0),
        nr::SYS_MUNMAP => match ours(a0, a1) {
            true => err(errno::EINVAL),
            false if threads::defer_own_stack_unmap(a0, a1.next_multiple_of(PAGE)) => 0,
            false => memory(sys::unmap(a0, a1.next_multiple_of(PAGE))),
        },
        nr::SYS_MPROTECT => match ours(a0, a1) {
            true => err(errno::EINVAL),
            false => memory(sys::protect(a0, a1.next_multiple_of(PAGE), prot(a2))),
        },
        nr::SYS_ARCH_PRCTL => arch_prctl(a0, a1),
        nr::SYS_GETPID => k42_rt::pid() as Ret,
        nr::SYS_GETTID => threads::gettid(),
        nr::SYS_SET_TID_ADDRESS => threads::set_tid_address(a0),
        nr::SYS_GETPPID => fork::parent(),
        nr::SYS_FORK | nr::SYS_VFORK => fork::fork(),
        nr::SYS_CLONE => fork::clone(a0, a1, a2, a3),
        nr::SYS_EXECVE => exec::execve(a0, a1, a2),
        // pid_t is an int: -1 arrives as 0xffff_ffff.
        nr::SYS_WAIT4 => fork::wait4(i64::from(a0 as i32), a1, a2, a3),
        nr::SYS_SETPGID => fork::setpgid(a0, a1),
        nr::SYS_GETPGID => fork::getpgid(a0),
        nr::SYS_GETPGRP => fork::getpgid(0),
        nr::SYS_SETSID => fork::setsid(),
        nr::SYS_GETSID => fork::getsid(a0),
        nr::SYS_GETUID | nr::SYS_GETEUID | nr::SYS_GETGID | nr::SYS_GETEGID => 0,
        nr::SYS_UNAME => put(
            a0,
            &process::Utsname::new("Linux", "k42", "6.1.0-k42", "#1 K42", "x86_64", "(none)"),
        ),
        nr::SYS_CLOCK_GETTIME => clock_gettime(a0, a1),
        nr::SYS_NANOSLEEP => clock_nanosleep(time::CLOCK_MONOTONIC as u64, 0, a0),
        nr::SYS_CLOCK_NANOSLEEP => clock_nanosleep(a0, a1, a2),
        nr::SYS_GETRANDOM => getrandom(a0, a1),
        nr::SYS_SCHED_YIELD => {
            threads::yield_now();
            0
        }
        nr::SYS_RT_SIGACTION => signals::sigaction(a0, a1, a2, a3),
        nr::SYS_RT_SIGPROCMASK => signals::sigprocmask(a0, a1, a2, a3),
        nr::SYS_RT_SIGPENDING => signals::sigpending(a0),
        nr::SYS_RT_SIGSUSPEND => signals::sigsuspend(a0, a1),
        nr::SYS_PAUSE => signals::sigsuspend(0, 0),
        nr::SYS_KILL => signals::kill(i64::from(a0 as i32), a1),
        nr::SYS_TKILL => signals::tgkill(i64::from(a0 as i32), a1),
        nr::SYS_TGKILL => signals::tgkill(i64::from(a1 as i32), a2),
        nr::SYS_TIME => time_seconds(a0),
        nr::SYS_SYSINFO => put(a0, &procfs::sysinfo()),
        nr::SYS_SIGALTSTACK => signals::sigaltstack(a0, a1),
        // Robust futex lists matter only for threads of several processes sharing a lock;
        // a kernel without rseq says ENOSYS, which C libraries expect.
        nr::SYS_SET_ROBUST_LIST => 0,
        nr::SYS_RSEQ => err(errno::ENOSYS),
        nr::SYS_PRLIMIT64 => rlimit(a1, a3),
        nr::SYS_GETRLIMIT => rlimit(a0, a1),
        nr::SYS_PRCTL => prctl(a0),
        nr::SYS_EXIT => threads::exit_thread((a0 & 0xff) as i64),
        nr::SYS_EXIT_GROUP => exit((a0 & 0xff) as i64),
        _ => unimplemented(n),
    }
}

/// The limits the personality reports (`getrlimit`, `prlimit64`); new limits are accepted and
/// not enforced.
fn rlimit(resource: u64, old: u64) -> Ret {
    const INFINITY: u64 = u64::MAX;
    let (cur, max) = match resource as i32 {
        process::RLIMIT_STACK => (8 << 20, INFINITY),
        process::RLIMIT_NOFILE => (1024, 1024),
        r if (0..16).contains(&r) => (INFINITY, INFINITY),
        _ => return err(errno::EINVAL),
    };
    if old == 0 {
        return 0;
    }
    put(
        old,
        &process::Rlimit {
            rlim_cur: cur,
            rlim_max: max,
        },
    )
}

/// `prctl`: naming a thread is accepted (and not kept); anything else is not supported.
fn prctl(option: u64) -> Ret {
    const PR_SET_NAME: u64 = 15;
    match option {
        PR_SET_NAME => 0,
        _ => err(errno::EINVAL),
    }
}

/// Ends the process with `status` once its descriptors are closed and its disk drivers have
/// let go of its transfer areas.
pub(crate) fn exit(status: i64) -> ! {
    files::close_all();
    disk::detach_all();
    sys::exit(status)
}

fn unimplemented(n: u64) -> Ret {
    if n < 512 {
        let bit = 1u64 << (n % 64);
        if LOGGED[(n / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            k42_rt::println!(
                "linux: unimplemented system call {} ({n}) returns ENOSYS",
                nr::name(n).unwrap_or("unknown")
            );
        }
    }
    err(errno::ENOSYS)
}

/// Whether `addr..addr + len` touches the personality's own area or its heap.
pub(crate) fn ours(addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len);
    let heap = k42_rt::HEAP_START..k42_rt::HEAP_START + k42_rt::HEAP_SIZE;
    let overlaps = |r: &core::ops::Range<u64>| addr < r.end && end > r.start;
    overlaps(&PERSONALITY) || overlaps(&heap) || overlaps(&FILE_WINDOWS)
}

/// Logs once per kind that a supported call was asked for something not supported yet;
/// returns `-ENOSYS`.
pub(crate) fn unimplemented_variant(what: &'static str) -> Ret {
    unsupported(what, errno::ENOSYS, "ENOSYS")
}

/// As [`unimplemented_variant`], returning `-errno` (named `errno_name` in the log line).
pub(crate) fn unsupported(what: &'static str, errno: i32, errno_name: &str) -> Ret {
    static SEEN: spin::Mutex<alloc::vec::Vec<&'static str>> =
        spin::Mutex::new(alloc::vec::Vec::new());
    let mut seen = SEEN.lock();
    if !seen.contains(&what) {
        seen.push(what);
        k42_rt::println!("linux: unimplemented: {what}; returns {errno_name}");
    }
    err(errno)
}

fn prot(linux: u64) -> u64 {
    let linux = linux as u32;
    let mut k42 = 0;
    if linux & mm::PROT_READ != 0 {
        k42 |= Prot::READ;
    }
    if linux & mm::PROT_WRITE != 0 {
        k42 |= Prot::WRITE | Prot::READ;
    }
    if linux & mm::PROT_EXEC != 0 {
        k42 |= Prot::EXEC | Prot::READ;
    }
    k42
}

fn memory(result: sys::SysResult<()>) -> Ret {
    match result {
        Ok(()) => 0,
        Err(kabi::Error::NoMemory) => err(errno::ENOMEM),
        Err(_) => err(errno::EINVAL),
    }
}

fn brk(wanted: u64) -> Ret {
    let current = BRK.load(Ordering::Relaxed);
    let start = BRK_START.load(Ordering::Relaxed);
    if wanted < start || wanted > start + BRK_MAX || ours(start, wanted - start) {
        return current as Ret;
    }
    let (mapped_end, wanted_end) = (
        current.next_multiple_of(PAGE),
        wanted.next_multiple_of(PAGE),
    );
    if wanted_end > mapped_end
        && sys::map(
            mapped_end,
            wanted_end - mapped_end,
            Prot::READ | Prot::WRITE,
        )
        .is_err()
    {
        return current as Ret;
    }
    if wanted_end < mapped_end {
        let _ = sys::unmap(wanted_end, mapped_end - wanted_end);
    }
    BRK.store(wanted, Ordering::Relaxed);
    wanted as Ret
}

/// `mmap(addr, len, prot, flags, fd, offset)`. Anonymous memory is demand-zero. A file
/// mapping is private: the file's bytes from `offset` are read into fresh memory when the
/// mapping is made, and changes to either side are not seen by the other later (what Linux
/// promises for `MAP_PRIVATE`; a read-only `MAP_SHARED` mapping is served the same way, so
/// it does not follow later writes to the file). The part past the end of the file reads as
/// zeros (Linux raises SIGBUS for whole pages past it). A writable `MAP_SHARED` file mapping,
/// whose stores would have to reach the file, is refused with `ENODEV`.
fn mmap(addr: u64, len: u64, prot_bits: u64, flags: u64, fd: u64, offset: u64) -> Ret {
    let flags = flags as u32;
    if len == 0 || !addr.is_multiple_of(PAGE) {
        return err(errno::EINVAL);
    }
    let anonymous = flags & mm::MAP_ANONYMOUS != 0;
    let shared = flags & mm::MAP_TYPE != mm::MAP_PRIVATE;
    let source = if anonymous {
        None
    } else {
        if !offset.is_multiple_of(PAGE) {
            return err(errno::EINVAL);
        }
        let writable_shared = shared && prot_bits as u32 & mm::PROT_WRITE != 0;
        match files::mappable(fd as i32, writable_shared) {
            Ok(file) => Some(file),
            Err(e) => return e,
        }
    };
    let Some(len) = len.checked_next_multiple_of(PAGE) else {
        return err(errno::ENOMEM);
    };
    let at = if flags & mm::MAP_FIXED != 0 {
        if ours(addr, len) {
            return err(errno::EINVAL);
        }
        let _ = sys::unmap(addr, len);
        addr
    } else {
        let next = MMAP_NEXT.fetch_sub(len, Ordering::Relaxed);
        next - len
    };
    let wanted = prot(prot_bits);
    let Some(file) = source else {
        return match sys::map(at, len, wanted) {
            Ok(()) => at as Ret,
            Err(kabi::Error::NoMemory) => err(errno::ENOMEM),
            Err(_) => err(errno::EINVAL),
        };
    };
    // Writable while the contents go in, then as asked.
    let filled = sys::map(at, len, Prot::READ | Prot::WRITE)
        .map_err(|e| match e {
            kabi::Error::NoMemory => err(errno::ENOMEM),
            _ => err(errno::EINVAL),
        })
        .and_then(|()| files::read_mapped(&file, offset, at, len))
        .and_then(|()| {
            let same = wanted == Prot::READ | Prot::WRITE;
            match same || sys::protect(at, len, wanted).is_ok() {
                true => Ok(()),
                false => Err(err(errno::ENOMEM)),
            }
        });
    match filled {
        Ok(()) => at as Ret,
        Err(e) => {
            let _ = sys::unmap(at, len);
            e
        }
    }
}

fn arch_prctl(code: u64, addr: u64) -> Ret {
    match code as i32 {
        process::ARCH_SET_FS => {
            if addr >= 1 << 47 {
                return err(errno::EPERM);
            }
            // SAFETY: WRFSBASE with a canonical address only changes this thread's FS base, the
            // program's own thread pointer (this code never uses FS). The kernel keeps it per
            // dispatcher.
            unsafe { core::arch::asm!("wrfsbase {}", in(reg) addr, options(nostack)) };
            0
        }
        process::ARCH_GET_FS => {
            let base: u64;
            // SAFETY: RDFSBASE only reads the FS base.
            unsafe { core::arch::asm!("rdfsbase {}", out(reg) base, options(nostack)) };
            put(addr, &base)
        }
        _ => err(errno::EINVAL),
    }
}

/// Whether `clock` counts Unix time (the others count from the TSC's zero).
pub(crate) fn is_wall_clock(clock: u64) -> bool {
    matches!(
        clock as i32,
        time::CLOCK_REALTIME | time::CLOCK_REALTIME_COARSE | time::CLOCK_TAI
    )
}

/// `clock_gettime(clock, ptr)`: Unix time for the wall clocks, the boot clock for the rest.
fn clock_gettime(clock: u64, ptr: u64) -> Ret {
    let ns = if is_wall_clock(clock) {
        sys::unix_time_ns()
    } else {
        sys::now_ns()
    };
    put(
        ptr,
        &time::Timespec {
            tv_sec: (ns / 1_000_000_000) as i64,
            tv_nsec: (ns % 1_000_000_000) as i64,
        },
    )
}

/// The deadline (boot-clock ns) a `timespec` at `ptr` names: that long from now, or with
/// `absolute` that time on the wall clock (`wall`) or the boot clock.
pub(crate) fn deadline_ns(ptr: u64, absolute: bool, wall: bool) -> Result<u64, Ret> {
    let t: time::Timespec = get(ptr)?;
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(err(errno::EINVAL));
    }
    let ns = (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64);
    Ok(match (absolute, wall) {
        (false, _) => sys::now_ns().saturating_add(ns),
        (true, false) => ns,
        (true, true) => ns.saturating_sub(sys::unix_time_ns() - sys::now_ns()),
    })
}

/// `clock_nanosleep(clock, flags, request, remain)` (and `nanosleep`).
fn clock_nanosleep(clock: u64, flags: u64, request: u64) -> Ret {
    const TIMER_ABSTIME: u64 = 1;
    let absolute = flags & TIMER_ABSTIME != 0;
    let deadline = match deadline_ns(request, absolute, is_wall_clock(clock)) {
        Ok(d) => d,
        Err(e) => return e,
    };
    // Only this thread sleeps; the process's others run meanwhile.
    while sys::now_ns() < deadline {
        threads::wait_for(signals::SOFT_INTERRUPTS, deadline);
        // A signal to act on ends the sleep early; it is delivered as the call returns (by
        // the first thread it wakes: the others find it gone and sleep on).
        if signals::deliverable() {
            return err(errno::EINTR);
        }
    }
    0
}

/// `time(tloc)`: seconds on the same clock as `clock_gettime`.
fn time_seconds(tloc: u64) -> Ret {
    let seconds = (sys::unix_time_ns() / 1_000_000_000) as i64;
    if tloc != 0 {
        let r = put(tloc, &seconds);
        if r < 0 {
            return r;
        }
    }
    seconds
}

/// The `random` server (`rngd`): 0 not looked up yet, `u64::MAX` none.
static RANDOM_SERVER: AtomicU64 = AtomicU64::new(0);

/// Fills `out` from the `random` server as far as it can; returns how many bytes it filled.
fn from_random_server(out: &mut [u8]) -> usize {
    let mut server = RANDOM_SERVER.load(Ordering::Relaxed);
    if server == 0 {
        server = sys::ppc_lookup("random").unwrap_or(u64::MAX);
        RANDOM_SERVER.store(server, Ordering::Relaxed);
        if server != u64::MAX {
            k42_rt::println!(
                "linux: getrandom and /dev/urandom are served by the virtio-rng driver (random)"
            );
        }
    }
    if server == u64::MAX {
        return 0;
    }
    let mut done = 0;
    while done < out.len() {
        let want = (out.len() - done) as u64;
        match sys::ppc_call(server, [rng::op::GET, want, 0, 0]) {
            Ok((0, n)) if n > 0 => {
                let n = (n as usize).min(out.len() - done);
                out[done..done + n].copy_from_slice(&own_ppc_buffer()[..n]);
                done += n;
            }
            _ => break,
        }
    }
    done
}

fn getrandom(ptr: u64, len: u64) -> Ret {
    let len = len.min(1 << 20);
    match user_bytes_mut(ptr, len) {
        Ok(out) => {
            fill_random(out);
            len as Ret
        }
        Err(e) => e,
    }
}

/// Fills `out` with random bytes.
pub(crate) fn fill_random(out: &mut [u8]) {
    // From the virtio-rng driver when one runs; what it cannot give comes from the fallback.
    let served = from_random_server(out);
    let out = &mut out[served..];
    // xorshift64* over the TSC: not a cryptographic source (no entropy device, or it failed).
    let mut state = RANDOM_STATE.load(Ordering::Relaxed) ^ sys::rdtsc();
    for chunk in out.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    RANDOM_STATE.store(state, Ordering::Relaxed);
}
