//! User-level side of the K42 system calls: typed wrappers over `call ENTRY_PAGE` (see
//! [`crate::kabi`]), and the trampoline a PPC server's calls start in.
//!
//! Only meaningful inside a guest process (the entry page exists there); host builds compile it
//! so the crate stays one library.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::kabi::{self, Error, Info, Message, SpawnFlags, Sys};

/// Result of a system call.
pub type SysResult<T> = Result<T, Error>;

/// Raw system call with up to four arguments: returns (`rax`, `rdx`).
#[inline(always)]
pub fn raw(nr: Sys, a0: u64, a1: u64, a2: u64, a3: u64) -> (i64, u64) {
    raw_any(nr as u64, a0, a1, a2, a3)
}

/// System call by number, including numbers that do not exist (tests use it); returns `rax`.
pub fn raw_number(nr: u64, a0: u64) -> i64 {
    raw_any(nr, a0, 0, 0, 0).0
}

/// A raw return value as a result.
pub fn check_raw(value: i64) -> SysResult<u64> {
    check(value)
}

#[inline(always)]
fn raw_any(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> (i64, u64) {
    let rax: i64;
    let rdx: u64;
    // SAFETY: the kernel's entry page at `kabi::ENTRY_PAGE` is mapped executable in every
    // process; its stub enters the kernel and returns with results in rax/rdx, clobbering only
    // rcx and r11 (the `syscall` instruction's), as declared. The kernel never touches this
    // process's memory except through checked system-call arguments.
    unsafe {
        core::arch::asm!(
            "call {entry}",
            entry = in(reg) kabi::ENTRY_PAGE,
            inlateout("rax") nr => rax,
            in("rdi") a0,
            in("rsi") a1,
            inlateout("rdx") a2 => rdx,
            in("r10") a3,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    (rax, rdx)
}

fn check(value: i64) -> SysResult<u64> {
    if value < 0 {
        Err(Error::from_return(value).unwrap_or(Error::Invalid))
    } else {
        Ok(value as u64)
    }
}

/// Ends the process with `status`.
pub fn exit(status: i64) -> ! {
    raw(Sys::Exit, status as u64, 0, 0, 0);
    // The kernel never returns from exit; if it did, spin rather than run on.
    loop {
        core::hint::spin_loop();
    }
}

/// Writes to the console (processes spawned with the console right only).
pub fn console_write(bytes: &[u8]) -> SysResult<usize> {
    check(
        raw(
            Sys::ConsoleWrite,
            bytes.as_ptr() as u64,
            bytes.len() as u64,
            0,
            0,
        )
        .0,
    )
    .map(|n| n as usize)
}

/// Takes console input into `buf` ([`Sys::ConsoleRead`]): the bytes moved (0 when none), and
/// with `notify_bits` not 0, arms a soft interrupt of dispatcher 0 for the next input.
pub fn console_read(buf: &mut [u8], notify_bits: u64) -> SysResult<usize> {
    check(
        raw(
            Sys::ConsoleRead,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            notify_bits,
            0,
        )
        .0,
    )
    .map(|n| n as usize)
}

/// Lets another dispatcher of this CPU run.
pub fn yield_now() {
    raw(Sys::Yield, 0, 0, 0, 0);
}

/// Blocks this dispatcher until a soft interrupt or `deadline_ns` (TSC time, 0 = none);
/// returns the soft-interrupt bits that woke it (0 at the deadline).
pub fn block(deadline_ns: u64) -> u64 {
    raw(Sys::Block, deadline_ns, 0, 0, 0).0 as u64
}

/// Sets `bits` in dispatcher `index` of process `pid` (own or a child) and wakes it.
pub fn soft_interrupt(pid: u64, index: usize, bits: u64) -> SysResult<()> {
    check(raw(Sys::SoftInterrupt, pid, index as u64, bits, 0).0).map(|_| ())
}

/// Reserves demand-zero memory at `addr` (page-aligned).
pub fn map(addr: u64, len: u64, prot: u64) -> SysResult<()> {
    check(raw(Sys::Map, addr, len, prot, 0).0).map(|_| ())
}

/// Removes a mapping.
pub fn unmap(addr: u64, len: u64) -> SysResult<()> {
    check(raw(Sys::Unmap, addr, len, 0, 0).0).map(|_| ())
}

/// Changes the protection of mapped memory.
pub fn protect(addr: u64, len: u64, prot: u64) -> SysResult<()> {
    check(raw(Sys::Protect, addr, len, prot, 0).0).map(|_| ())
}

/// Starts the initramfs program at `path`; returns its pid.
pub fn spawn(path: &str, arg: u64, flags: u64) -> SysResult<u64> {
    check(
        raw(
            Sys::Spawn,
            path.as_ptr() as u64,
            path.len() as u64,
            arg,
            flags,
        )
        .0,
    )
}

/// Starts the initramfs Linux program at `path` with argument list `argv` (through the Linux
/// personality); returns its pid. `scratch` holds the packed arguments during the call.
pub fn spawn_linux(
    path: &str,
    argv: &[&[u8]],
    scratch: &mut alloc::vec::Vec<u8>,
) -> SysResult<u64> {
    scratch.clear();
    for a in argv {
        if a.contains(&0) {
            return Err(Error::Invalid);
        }
        scratch.extend_from_slice(a);
        scratch.push(0);
    }
    let args = kabi::LinuxArgs {
        ptr: scratch.as_ptr() as u64,
        len: scratch.len() as u64,
    };
    spawn(
        path,
        &args as *const kabi::LinuxArgs as u64,
        SpawnFlags::LINUX,
    )
}

/// Waits for child `pid` to exit; returns its status.
pub fn wait(pid: u64) -> SysResult<i64> {
    wait_flags(pid, 0).map(|(_, status)| status)
}

/// Waits for any child to exit; returns its pid and status (`NoChild` if there is none).
pub fn wait_any() -> SysResult<(u64, i64)> {
    wait_flags(kabi::WAIT_ANY, 0)
}

/// Reaps a child that has already exited (`pid` or [`kabi::WAIT_ANY`]) without blocking:
/// `Again` while the matching children all still run.
pub fn wait_no_hang(pid: u64) -> SysResult<(u64, i64)> {
    wait_flags(pid, kabi::WaitFlags::NO_HANG)
}

/// `wait(pid, flags)` ([`Sys::Wait`]): the reaped child's pid and its status.
pub fn wait_flags(pid: u64, flags: u64) -> SysResult<(u64, i64)> {
    let (rax, rdx) = raw(Sys::Wait, pid, flags, 0, 0);
    // Exit statuses are small non-negative numbers; negative values are errors.
    check(rax).map(|s| (rdx, s as i64))
}

/// Which side of a [`fork`] the caller is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forked {
    /// The original process; the child has this pid.
    Parent(u64),
    /// The new process.
    Child,
}

/// Forks this process ([`Sys::Fork`]): the child gets a copy-on-write copy of its memory and
/// resumes here too.
pub fn fork() -> SysResult<Forked> {
    // Every register but rax (and the clobbered rcx, r11, rdx) comes back as it was, in both
    // processes: the child resumes with this call's registers and stack.
    check(raw(Sys::Fork, 0, 0, 0, 0).0).map(|pid| match pid {
        0 => Forked::Child,
        pid => Forked::Parent(pid),
    })
}

/// Starts another dispatcher of this process on `cpu` at `entry(arg)` with stack `rsp`.
pub fn dispatcher_create(
    cpu: usize,
    entry: extern "C" fn(u64) -> !,
    rsp: u64,
    arg: u64,
) -> SysResult<usize> {
    check(
        raw(
            Sys::DispatcherCreate,
            cpu as u64,
            entry as usize as u64,
            rsp,
            arg,
        )
        .0,
    )
    .map(|i| i as usize)
}

/// A system fact.
pub fn info(what: Info) -> u64 {
    raw(Sys::Info, what as u64, 0, 0, 0).0 as u64
}

/// Enters and leaves the kernel doing nothing.
pub fn null() {
    raw(Sys::Null, 0, 0, 0, 0);
}

/// Makes this process the server `name`; its calls run `handler` (see [`PpcHandler`]).
pub fn ppc_serve(name: &str, handler: PpcHandler) -> SysResult<()> {
    PPC_HANDLER.store(handler as usize, Ordering::Release);
    let entry = k42_ppc_entry_address();
    check(
        raw(
            Sys::PpcExport,
            name.as_ptr() as u64,
            name.len() as u64,
            entry,
            0,
        )
        .0,
    )
    .map(|_| ())
}

/// The pid of server `name`.
pub fn ppc_lookup(name: &str) -> SysResult<u64> {
    check(
        raw(
            Sys::PpcLookup,
            name.as_ptr() as u64,
            name.len() as u64,
            0,
            0,
        )
        .0,
    )
}

/// Calls server `server` with four words; returns its two result words. Bulk data goes in
/// this process's PPC buffer for the calling CPU ([`ppc_buffer`]).
pub fn ppc_call(server: u64, args: [u64; 4]) -> SysResult<(u64, u64)> {
    let (rax, rdx) = raw4(Sys::PpcCall, server, args);
    check(rax).map(|r0| (r0, rdx))
}

#[inline(always)]
fn raw4(nr: Sys, a0: u64, args: [u64; 4]) -> (i64, u64) {
    let rax: i64;
    let rdx: u64;
    // SAFETY: as in `raw`, with r8 carrying one more argument.
    unsafe {
        core::arch::asm!(
            "call {entry}",
            entry = in(reg) kabi::ENTRY_PAGE,
            inlateout("rax") nr as u64 => rax,
            in("rdi") a0,
            in("rsi") args[0],
            inlateout("rdx") args[1] => rdx,
            in("r10") args[2],
            in("r8") args[3],
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    (rax, rdx)
}

/// Sends an asynchronous message to server `server` (no reply, never blocks).
pub fn send(server: u64, words: [u64; 3]) -> SysResult<()> {
    check(raw(Sys::Send, server, words[0], words[1], words[2]).0).map(|_| ())
}

/// Takes the oldest pending message of this dispatcher.
pub fn receive() -> SysResult<Message> {
    let mut message = Message::default();
    receive_into(&mut message as *mut Message as u64)?;
    Ok(message)
}

/// Takes the oldest pending message into the [`Message`] at address `ptr`.
pub fn receive_into(ptr: u64) -> SysResult<()> {
    check(raw(Sys::Receive, ptr, 0, 0, 0).0).map(|_| ())
}

/// Creates a shareable memory object of `pages` pages; returns its id.
pub fn memobj_create(pages: u64) -> SysResult<u64> {
    check(raw(Sys::MemobjCreate, pages, 0, 0, 0).0)
}

/// Creates a paged memory object of `pages` pages with this process as its pager (see
/// [`kabi::MemobjFlags::PAGED`]); returns its id.
pub fn memobj_create_paged(pages: u64) -> SysResult<u64> {
    check(raw(Sys::MemobjCreate, pages, kabi::MemobjFlags::PAGED, 0, 0).0)
}

/// As the pager of paged object `id`, says pages `first..first + count` hold their data.
pub fn memobj_fill(id: u64, first: u64, count: u64) -> SysResult<()> {
    check(raw(Sys::MemobjFill, id, first, count, 0).0).map(|_| ())
}

/// As the pager of paged object `id`, says pages `first..first + count` cannot be supplied
/// (an access to one ends the process with SIGBUS).
pub fn memobj_fail(id: u64, first: u64, count: u64) -> SysResult<()> {
    check(raw(Sys::MemobjFill, id, first, count, kabi::FillFlags::ERROR).0).map(|_| ())
}

/// Maps memory object `id` at `addr`.
pub fn memobj_map(id: u64, addr: u64, prot: u64) -> SysResult<()> {
    check(raw(Sys::MemobjMap, id, addr, prot, 0).0).map(|_| ())
}

/// Maps the initramfs archive read-only at `addr` (page-aligned; its pages fault in on
/// touch) and returns its bytes ([`kabi::INITRD_MEMOBJ`]).
pub fn map_initrd(addr: u64) -> SysResult<&'static [u8]> {
    let len = info(Info::InitrdLen);
    if len == 0 {
        return Err(Error::NotFound);
    }
    let offset = info(Info::InitrdOffset);
    memobj_map(kabi::INITRD_MEMOBJ, addr, kabi::Prot::READ)?;
    // SAFETY: the kernel just mapped the archive read-only at `addr`, `len` bytes from
    // `offset`, for the life of the process; it never changes.
    Ok(unsafe { core::slice::from_raw_parts((addr + offset) as *const u8, len as usize) })
}

/// Lets process `pid` map memory object `id`.
pub fn memobj_grant(id: u64, pid: u64) -> SysResult<()> {
    check(raw(Sys::MemobjGrant, id, pid, 0, 0).0).map(|_| ())
}

/// Puts this process's dispatcher `index` in priority class `class` with `tickets` (see
/// [`Sys::DispatcherSchedule`]).
pub fn dispatcher_schedule(index: usize, class: u64, tickets: u64) -> SysResult<()> {
    check(raw(Sys::DispatcherSchedule, index as u64, class, tickets, 0).0).map(|_| ())
}

/// Asks for [`kabi::SOFT_INTERRUPT_TICK`] after every `period_ns` the calling dispatcher runs
/// (0 stops them; see [`Sys::Tick`]).
pub fn tick(period_ns: u64) -> SysResult<()> {
    check(raw(Sys::Tick, period_ns, 0, 0, 0).0).map(|_| ())
}

/// Removes the mapping of a memory object made at `addr` (see [`Sys::MemobjUnmap`]).
pub fn memobj_unmap(addr: u64) -> SysResult<()> {
    check(raw(Sys::MemobjUnmap, addr, 0, 0, 0).0).map(|_| ())
}

/// The devices the kernel knows (at most `out.len()` are written); returns how many there are.
pub fn device_list(out: &mut [kabi::DeviceDesc]) -> SysResult<usize> {
    let (ptr, len) = (out.as_mut_ptr() as u64, out.len() as u64);
    check(raw(Sys::DeviceList, ptr, len, 0, 0).0).map(|n| n as usize)
}

/// Records the Linux process group and session of this process (`pid` 0) or of a child; 0
/// leaves a value as it is ([`Sys::ProcessGroup`]).
pub fn process_group(pid: u64, group: u64, session: u64) -> SysResult<()> {
    check(raw(Sys::ProcessGroup, pid, group, session, 0).0).map(|_| ())
}

/// Records this process's name and command line: `record` is the name, a NUL, then the
/// arguments each ended by a NUL ([`Sys::ProcessCommand`]).
pub fn process_command(record: &[u8]) -> SysResult<()> {
    let (ptr, len) = (record.as_ptr() as u64, record.len() as u64);
    check(raw(Sys::ProcessCommand, ptr, len, 0, 0).0).map(|_| ())
}

/// The live processes (at most `out.len()` are written, by pid); returns how many there are.
pub fn process_list(out: &mut [kabi::ProcessDesc]) -> SysResult<usize> {
    let (ptr, len) = (out.as_mut_ptr() as u64, out.len() as u64);
    check(raw(Sys::ProcessList, ptr, len, 0, 0).0).map(|n| n as usize)
}

/// Maps device `device`'s registers (uncached) at `addr` and claims the device.
pub fn device_map(device: usize, addr: u64) -> SysResult<()> {
    check(raw(Sys::DeviceMap, device as u64, addr, 0, 0).0).map(|_| ())
}

/// Routes device `device`'s interrupt to the calling dispatcher as soft-interrupt `bits`.
pub fn device_irq(device: usize, bits: u64) -> SysResult<()> {
    check(raw(Sys::DeviceIrq, device as u64, bits, 0, 0).0).map(|_| ())
}

/// The physical address of page `page` of memory object `id` (for DMA).
pub fn memobj_phys(id: u64, page: u64) -> SysResult<u64> {
    check(raw(Sys::MemobjPhys, id, page, 0, 0).0)
}

/// The PPC buffer of this process's dispatcher `dispatcher` (mapped when the dispatcher is
/// created): the page a call from that dispatcher shows the server.
pub fn ppc_buffer(dispatcher: usize) -> *mut u8 {
    kabi::ppc_buffer(dispatcher) as *mut u8
}

/// The TSC.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and runs natively in ring 3.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A PPC handler: `(client pid, a0, a1, a2, a3, cpu) -> (r0, r1)`. The caller's PPC buffer is
/// at [`kabi::ppc_window`]`(cpu)` while it runs.
pub type PpcHandler = extern "C" fn(u64, u64, u64, u64, u64, u64) -> PpcReply;

/// Two result words, returned in `rax:rdx` by the SysV ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PpcReply {
    /// First result (must be non-negative as an i64: negative values read as kernel errors).
    pub r0: u64,
    /// Second result.
    pub r1: u64,
}

static PPC_HANDLER: AtomicUsize = AtomicUsize::new(0);

#[no_mangle]
extern "C" fn k42_ppc_dispatch(
    client: u64,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    cpu: u64,
) -> PpcReply {
    let handler = PPC_HANDLER.load(Ordering::Acquire);
    if handler == 0 {
        return PpcReply {
            r0: u64::MAX >> 1,
            r1: 0,
        };
    }
    // SAFETY: the only non-zero value stored is a `PpcHandler` (in `ppc_serve`).
    let handler: PpcHandler = unsafe { core::mem::transmute::<usize, PpcHandler>(handler) };
    handler(client, a0, a1, a2, a3, cpu)
}

// A PPC call starts here on the server's PPC stack for this CPU, with the kernel's registers:
// rdi = client, rsi/rdx/rcx/r8 = a0..a3, r9 = cpu. It calls the handler and returns the reply
// through `ppc_return`, which never comes back.
core::arch::global_asm!(
    r#"
    .global k42_ppc_entry
k42_ppc_entry:
    call k42_ppc_dispatch
    mov rdi, rax
    mov rsi, rdx
    mov eax, {ret}
    movabs r11, {entry}
    call r11
    ud2
    "#,
    ret = const Sys::PpcReturn as u64,
    entry = const kabi::ENTRY_PAGE,
);

extern "C" {
    fn k42_ppc_entry();
}

fn k42_ppc_entry_address() -> u64 {
    k42_ppc_entry as *const () as u64
}

/// The shared page of dispatcher `index` of this process.
pub fn dispatcher_page(index: usize) -> &'static kabi::DispatcherPage {
    // SAFETY: in a guest process the kernel maps each dispatcher's page (read-write, never
    // unmapped while the process lives) before the dispatcher runs; its layout is
    // `DispatcherPage`'s and every field user code or the kernel changes is atomic.
    unsafe { &*(kabi::dispatcher_page(index) as *const kabi::DispatcherPage) }
}

/// Nanoseconds of TSC time (the time base of [`block`] deadlines).
pub fn now_ns() -> u64 {
    let khz = dispatcher_page(0).tsc_khz.max(1);
    (u128::from(rdtsc()) * 1_000_000 / u128::from(khz)) as u64
}

/// Unix time in nanoseconds: [`now_ns`] plus the kernel's wall-clock offset
/// ([`Info::WallClockOffset`], asked once per process). Where the kernel does not know the
/// time, this is [`now_ns`] itself.
pub fn unix_time_ns() -> u64 {
    static OFFSET: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);
    let mut offset = OFFSET.load(core::sync::atomic::Ordering::Relaxed);
    if offset == u64::MAX {
        offset = info(Info::WallClockOffset);
        OFFSET.store(offset, core::sync::atomic::Ordering::Relaxed);
    }
    now_ns().saturating_add(offset)
}

/// A copy of the PPC buffer of dispatcher `dispatcher` (see [`ppc_buffer`]).
pub fn ppc_buffer_save(dispatcher: usize) -> [u8; kabi::PAGE_SIZE as usize] {
    let mut copy = [0u8; kabi::PAGE_SIZE as usize];
    // SAFETY: the kernel maps each dispatcher's PPC buffer (one page, read-write) when it
    // creates the dispatcher, and never unmaps it.
    unsafe {
        core::ptr::copy_nonoverlapping(ppc_buffer(dispatcher), copy.as_mut_ptr(), copy.len())
    };
    copy
}

/// Puts back a copy taken by [`ppc_buffer_save`].
pub fn ppc_buffer_restore(dispatcher: usize, copy: &[u8; kabi::PAGE_SIZE as usize]) {
    // SAFETY: as in `ppc_buffer_save`; the dispatcher runs one thread at a time.
    unsafe { core::ptr::copy_nonoverlapping(copy.as_ptr(), ppc_buffer(dispatcher), copy.len()) };
}

/// Why the kernel upcalled a dispatcher (see [`kabi::DispatcherPage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upcall {
    /// Soft interrupts are pending; the interrupted code resumes when the handler returns.
    Interrupt,
    /// The interrupted code made a call that would have blocked the dispatcher; it is re-issued
    /// when the handler returns, which is worth doing once the page's `retry_count` is no
    /// longer `retry_count`.
    Blocked {
        /// The page's retry count when the kernel upcalled.
        retry_count: u32,
    },
    /// The interrupted code touched a page of a paged memory object that its pager has yet to
    /// fill; the access is retried when the handler returns, which is worth doing once the
    /// page's `retry_count` is no longer `retry_count`.
    PageFault {
        /// The faulting address.
        address: u64,
        /// The page's retry count when the kernel upcalled.
        retry_count: u32,
    },
    /// The interrupted code took an exception that would end the process (see
    /// [`kabi::UPCALL_TRAP`]); returning re-executes the faulting instruction.
    Trap {
        /// The faulting address (the instruction's, for exceptions other than page faults).
        address: u64,
        /// The exception vector (14: page fault, 13: general protection, 6: invalid opcode...).
        vector: u8,
        /// The exception's error code (0 where it has none).
        error_code: u64,
        /// The signal (Linux numbering) the kernel would end the process with.
        signal: i32,
    },
}

/// An upcall handler. It runs on the stack of the code the upcall interrupted, below that
/// code's red zone, with the dispatcher enabled again: it may block its thread (a blocked
/// call's thread, typically, until told to retry), and further upcalls may nest in it.
pub type UpcallHandler = fn(&'static kabi::DispatcherPage, Upcall);

static UPCALL_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Size of an upcall stack from [`new_upcall_stack`] (the trampoline leaves it at once).
pub const UPCALL_STACK_SIZE: usize = 4096;

/// A fresh upcall stack for [`enable_upcalls`], kept for the life of the process; returns its
/// top.
pub fn new_upcall_stack() -> u64 {
    let stack: &'static mut [u8] =
        alloc::boxed::Box::leak(alloc::vec![0u8; UPCALL_STACK_SIZE].into_boxed_slice());
    stack.as_ptr() as u64 + UPCALL_STACK_SIZE as u64
}

/// Makes the kernel upcall dispatcher `index` (the caller's own) into `handler`, starting on
/// the stack whose top is `stack_top` (a few hundred bytes are enough: the trampoline moves to
/// the interrupted stack at once). One handler serves all dispatchers of a process: the first
/// one registered stays.
pub fn enable_upcalls(index: usize, stack_top: u64, handler: UpcallHandler) {
    let _ =
        UPCALL_HANDLER.compare_exchange(0, handler as usize, Ordering::AcqRel, Ordering::Acquire);
    let page = dispatcher_page(index);
    page.upcall_stack.store(stack_top, Ordering::Release);
    page.upcall_entry
        .store(k42_upcall_entry as *const () as u64, Ordering::Release);
}

/// Makes the kernel treat upcall `reason` ([`kabi::UPCALL_BLOCKED`], ...) of dispatcher
/// `index` (the caller's own) as if no entry point were registered.
pub fn decline_upcall(index: usize, reason: u64) {
    if reason < 32 {
        dispatcher_page(index)
            .declined
            .fetch_or(1 << reason, Ordering::AcqRel);
    }
}

extern "C" fn k42_upcall_dispatch(
    page: u64,
    reason: u64,
    retry_count: u64,
    address: u64,
    trap: u64,
    signal: u64,
) {
    let upcall = match reason {
        kabi::UPCALL_INTERRUPT => Upcall::Interrupt,
        kabi::UPCALL_BLOCKED => Upcall::Blocked {
            retry_count: retry_count as u32,
        },
        kabi::UPCALL_PAGE_FAULT => Upcall::PageFault {
            address,
            retry_count: retry_count as u32,
        },
        kabi::UPCALL_TRAP => Upcall::Trap {
            address,
            vector: trap as u8,
            error_code: trap >> 8,
            signal: signal as i32,
        },
        _ => return,
    };
    let index = (page.wrapping_sub(kabi::DISPATCHER_AREA) / kabi::PAGE_SIZE) as usize;
    let handler = UPCALL_HANDLER.load(Ordering::Acquire);
    if handler != 0 {
        // SAFETY: the only non-zero value stored is an `UpcallHandler` (in `enable_upcalls`).
        let handler = unsafe { core::mem::transmute::<usize, UpcallHandler>(handler) };
        handler(dispatcher_page(index), upcall);
    }
}

/// Bytes the upcall trampoline leaves untouched below the interrupted stack pointer: the
/// SysV red zone (128) and the 8-byte slot at -136 that holds the resume address.
const UPCALL_STACK_GAP: u64 = 256;
/// Where the interrupted resume address is parked, below the interrupted stack pointer.
const UPCALL_RESUME_SLOT: u64 = 136;
/// Offset of the FXSAVE image in the trampoline's frame (after the 18 saved words).
const UPCALL_FXSAVE: u64 = 192;
/// Size of the trampoline's frame: the saved words and the 512-byte FXSAVE image.
const UPCALL_FRAME: u64 = UPCALL_FXSAVE + 512;

// The upcall trampoline. Entered by the kernel disabled, on the upcall stack, with rdi = the
// dispatcher page, rsi = reason, rdx = retry count, rcx = the faulting address (page faults,
// traps), r8 and r9 (traps): the dispatch function's six arguments. It copies the save area and the x87/SSE
// registers into a frame below the interrupted stack (below its red zone), moves there,
// enables the dispatcher (the save area is free again) and calls the handler; then it restores
// everything and jumps back. An upcall that nests anywhere in here saves a context whose rsp
// is inside or above this frame, and builds its own frame lower: this one, and the resume
// address parked at -136 of the interrupted stack, are never overwritten.
core::arch::global_asm!(
    r#"
    .global k42_upcall_entry
k42_upcall_entry:
    mov rax, [rdi + {save} + {rsp_off}]
    sub rax, {gap} + {frame}
    and rax, -64
    xor r11d, r11d
2:
    mov r10, [rdi + {save} + r11 * 8]
    mov [rax + r11 * 8], r10
    inc r11d
    cmp r11d, {words}
    jb 2b
    fxsave64 [rax + {fx}]
    mov rsp, rax
    mov qword ptr [rdi + {disabled}], 0
    call {dispatch}
    fxrstor64 [rsp + {fx}]
    mov rax, [rsp + {rsp_off}]
    mov rcx, [rsp + {rip_off}]
    mov [rax - {slot}], rcx
    mov rbx, [rsp + 8]
    mov rcx, [rsp + 16]
    mov rdx, [rsp + 24]
    mov rsi, [rsp + 32]
    mov rdi, [rsp + 40]
    mov rbp, [rsp + 48]
    mov r8, [rsp + 56]
    mov r9, [rsp + 64]
    mov r10, [rsp + 72]
    mov r11, [rsp + 80]
    mov r12, [rsp + 88]
    mov r13, [rsp + 96]
    mov r14, [rsp + 104]
    mov r15, [rsp + 112]
    mov rax, [rsp]
    push qword ptr [rsp + {rflags_off}]
    popfq
    mov rsp, [rsp + {rsp_off}]
    jmp qword ptr [rsp - {slot}]
    "#,
    save = const kabi::SAVE_AREA_OFFSET,
    disabled = const kabi::DISABLED_OFFSET,
    rsp_off = const kabi::SaveArea::RSP,
    rip_off = const kabi::SaveArea::RIP,
    rflags_off = const kabi::SaveArea::RFLAGS,
    words = const kabi::SaveArea::WORDS,
    gap = const UPCALL_STACK_GAP,
    frame = const UPCALL_FRAME,
    fx = const UPCALL_FXSAVE,
    slot = const UPCALL_RESUME_SLOT,
    dispatch = sym k42_upcall_dispatch,
);

extern "C" {
    fn k42_upcall_entry();
}
