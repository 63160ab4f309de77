//! The K42 system-call interface between the guest kernel and user level (not Linux's).
//!
//! User code enters the kernel only through the read-only *entry page* the kernel maps at
//! [`ENTRY_PAGE`] in every process: `call ENTRY_PAGE` with the call number in `rax` and up to six
//! arguments in `rdi, rsi, rdx, r10, r8, r9`. The stub there uses whichever instruction enters the
//! kernel on the platform found at boot (`syscall` on real x86, `int3` on an emulating KVM where
//! `syscall` stays in ring 3). The call returns a value in `rax` (negative: an [`Error`]) and a
//! second one in `rdx`; `rcx` and `r11` are clobbered, every other register is preserved.
//!
//! The fixed user addresses below are the same in every process; the kernel keeps everything
//! at or above [`USER_END`] for itself.

/// Start of the entry page (read-only, executable) in every process.
pub const ENTRY_PAGE: u64 = 0x0000_7fff_fff0_0000;
/// First address user mappings may not use (the kernel's areas start here).
pub const USER_END: u64 = 0x0000_7fff_0000_0000;
/// Lowest address user mappings may use.
pub const USER_START: u64 = 0x0000_0000_0001_0000;
/// Dispatcher `i`'s shared page is at `DISPATCHER_AREA + i * PAGE_SIZE` (read-write).
pub const DISPATCHER_AREA: u64 = 0x0000_7fff_ffe0_0000;
/// A server's PPC window on CPU `c` is at `PPC_WINDOW_AREA + c * PAGE_SIZE`: the caller's PPC
/// buffer page, mapped there for the duration of a call.
pub const PPC_WINDOW_AREA: u64 = 0x0000_7fff_ffc0_0000;
/// The PPC buffer of a process's dispatcher `d` (the page its calls carry to the server):
/// `PPC_BUFFER_AREA + d * PAGE_SIZE`.
pub const PPC_BUFFER_AREA: u64 = 0x0000_7fff_ffa0_0000;
/// The PPC buffer a server's handler on CPU `c` carries to the servers it calls itself (a
/// nested call): `PPC_NESTED_BUFFER_AREA + c * PAGE_SIZE`.
pub const PPC_NESTED_BUFFER_AREA: u64 = 0x0000_7fff_ffb0_0000;
/// The stacks a server's PPC handler runs on: CPU `c`'s is the [`PPC_STACK_SIZE`] below
/// `PPC_STACK_AREA + (c + 1) * PPC_STACK_SIZE` (demand-zero).
pub const PPC_STACK_AREA: u64 = 0x0000_7fff_e000_0000;
/// Size of one PPC handler stack.
pub const PPC_STACK_SIZE: u64 = 256 * 1024;
/// Top of the first dispatcher's initial stack (demand-zero, [`MAIN_STACK_SIZE`] below it).
pub const MAIN_STACK_TOP: u64 = 0x0000_7fff_d000_0000;
/// Size of the first dispatcher's initial stack.
pub const MAIN_STACK_SIZE: u64 = 1 << 20;
/// Page size.
pub const PAGE_SIZE: u64 = 4096;
/// Most dispatchers a process can have (one per CPU and priority class in practice).
pub const MAX_DISPATCHERS: usize = 64;
/// Bytes of a name (of a server or a program path) accepted by the kernel.
pub const NAME_MAX: usize = 128;

/// The K42 system calls, by number (the value in `rax`).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sys {
    /// `exit(status)`: ends the process; never returns.
    Exit = 0,
    /// `console_write(ptr, len) -> len`: only for a process holding [`SpawnFlags::CONSOLE`].
    ConsoleWrite = 1,
    /// `yield()`: lets another dispatcher on this CPU run.
    Yield = 2,
    /// `block(deadline_ns) -> pending soft interrupts`: blocks this dispatcher until a soft
    /// interrupt arrives or the deadline (0: none) passes. Returns at once if any are pending.
    Block = 3,
    /// `soft_interrupt(pid, dispatcher, bits)`: sets `bits` in a dispatcher's pending soft
    /// interrupts and wakes it (own process, a process this one spawned, or any process if
    /// the caller is a server: servers wake the clients they serve).
    SoftInterrupt = 4,
    /// `map(addr, len, prot)`: reserves demand-zero memory ([`Prot`] bits).
    Map = 5,
    /// `unmap(addr, len)`: removes a mapping made by `map` or `memobj_map`.
    Unmap = 6,
    /// `protect(addr, len, prot)`: changes the protection of mapped memory.
    Protect = 7,
    /// `spawn(path_ptr, path_len, arg, flags) -> pid`: starts a program from the initramfs.
    /// With [`SpawnFlags::LINUX`], a non-zero `arg` is the address of a [`LinuxArgs`] giving
    /// the program's argv (else argv is the path alone).
    Spawn = 8,
    /// `wait(pid, flags) -> (exit status, pid in rdx)`: reaps a child that has exited, waiting
    /// for one if none has. `pid` names one child, or is [`WAIT_ANY`] for any child of the
    /// caller; `flags` are [`WaitFlags`]. Returns the status in `rax` and the reaped child's pid
    /// in `rdx` (on success only). Errors: `NoChild` if the caller has no such child (none at
    /// all, for [`WAIT_ANY`]; a process that is not its child, or one already reaped),
    /// `Again` with [`WaitFlags::NO_HANG`] when the children exist but none has exited yet,
    /// `Invalid` for unknown flags. A child's status is kept by its parent until reaped; when
    /// a parent exits, the statuses of its unreaped children (now or later) are discarded:
    /// there is no reparenting to init.
    Wait = 9,
    /// `dispatcher_create(cpu, rip, rsp, arg) -> index`: a new dispatcher of this process on
    /// `cpu`, starting at `rip` with `rsp` and `arg` in `rdi`.
    DispatcherCreate = 10,
    /// `ppc_export(name_ptr, name_len, entry) -> 0`: makes this process a server named `name`
    /// whose PPC calls start at `entry`.
    PpcExport = 11,
    /// `ppc_lookup(name_ptr, name_len) -> server pid`.
    PpcLookup = 12,
    /// `ppc_call(server, a0, a1, a2, a3) -> (r0, r1)`: synchronous protected procedure call.
    /// The call carries the calling dispatcher's PPC buffer ([`ppc_buffer`]); a server's
    /// handler may call other servers (a nested call), carrying its CPU's
    /// [`ppc_nested_buffer`]. A nested call to a server whose handler on this CPU is busy fails
    /// with `Busy` at once instead of waiting (its handler may be waiting for this one: a
    /// server calling itself, or two servers calling each other).
    PpcCall = 13,
    /// `ppc_return(r0, r1)`: ends the PPC call being served; never returns.
    PpcReturn = 14,
    /// `send(server, w0, w1, w2)`: an asynchronous message to a server's dispatcher on this
    /// CPU (or its first), no reply, never blocks.
    Send = 15,
    /// `memobj_create(pages, flags) -> id`: a zeroed memory object shareable between
    /// processes ([`MemobjFlags`]; `Invalid` for unknown flags or a size outside
    /// 1..=[`MEMOBJ_MAX_PAGES`]).
    MemobjCreate = 16,
    /// `memobj_map(id, addr, prot)`: maps a memory object this process owns or was granted.
    MemobjMap = 17,
    /// `memobj_grant(id, pid)`: lets process `pid` map a memory object.
    MemobjGrant = 18,
    /// `info(what) -> value`: system facts ([`Info`]).
    Info = 19,
    /// `receive(ptr) -> 0`: moves the oldest pending asynchronous message into the
    /// [`Message`] at `ptr` (`Again` if none). Arriving messages set [`SOFT_INTERRUPT_MESSAGE`].
    Receive = 20,
    /// `null()`: returns 0 at once (measures kernel entry and exit).
    Null = 21,
    /// `linux_entry(addr) -> rewriting`: where this Linux process's `syscall` instructions go
    /// (its Linux personality's entry, inside [`LINUX_PERSONALITY_AREA`]). Only for processes
    /// spawned with [`SpawnFlags::LINUX`]. Returns 1 when system-call sites may be rewritten
    /// ([`Sys::LinuxRewrite`]): the kernel has then mapped the [`LINUX_SYSCALL_SLED`] page,
    /// whose code goes on to `addr`. Returns 0 when the kernel switch
    /// `k42.syscall_rewrite=off` turned rewriting off.
    LinuxEntry = 22,
    /// `fork() -> child pid` (0 in the child): a new process, child of the caller, whose
    /// memory is a copy-on-write copy of the caller's and whose one dispatcher (index 0, on the
    /// caller's CPU) resumes from this call with the caller's registers (general registers,
    /// flags, FS base, x87/SSE state), `rax` = 0.
    ///
    /// - Copied (copy on write): every anonymous region below [`PPC_STACK_AREA`], the main
    ///   stack included. Pages are shared read-only and copied by whichever side writes first.
    /// - Shared as they are: memory objects the caller maps (the child holds them too).
    /// - Not passed on: device windows (`device_map`); the device stays claimed by the caller.
    /// - Fresh, not copied: the kernel-managed areas at or above [`PPC_STACK_AREA`] (entry
    ///   page, dispatcher page, PPC buffer, and no PPC stacks or windows). The child's
    ///   dispatcher page holds only its identity (pid, index 0, CPU, CPUs, TSC rate, the
    ///   parent's spawn argument): no pending soft interrupts, no messages, no upcall entry
    ///   (a child that wants upcalls registers them again), and its PPC buffer is zero.
    /// - Inherited: spawn flags (the console right, [`SpawnFlags::LINUX`]), the registered
    ///   Linux entry, the program name and spawn argument. Not inherited: being a PPC server.
    ///
    /// Errors: `Again` when [`MAX_PROCESSES`] processes are alive; `Invalid` if the caller has
    /// more than one dispatcher, has PPC dispatchers (a server that was called), or calls from
    /// a PPC handler: its other CPUs would keep stale TLB entries for the pages fork makes
    /// read-only, and there is no TLB shoot-down yet; `NoMemory`.
    Fork = 23,
    /// `device_list(ptr, max) -> count`: writes up to `max` [`DeviceDesc`] records (the
    /// virtio-mmio devices the kernel found on its command line) to `ptr`; returns how many
    /// devices there are. Only for processes holding [`SpawnFlags::DEVICES`].
    DeviceList = 24,
    /// `device_map(device, addr) -> 0`: maps device `device`'s register window read-write and
    /// uncached at `addr` (page-aligned) and claims the device for this process (`Busy` if
    /// another live process holds it). [`SpawnFlags::DEVICES`] only.
    DeviceMap = 25,
    /// `device_irq(device, bits) -> 0`: routes the interrupt of a device this process claimed
    /// to the calling dispatcher (normal or PPC) as soft-interrupt `bits`: the kernel only
    /// posts the bits; the driver acknowledges the device itself. Re-binding moves it.
    DeviceIrq = 26,
    /// `memobj_phys(id, page) -> physical address` of page `page` of a memory object this
    /// process created (for DMA). [`SpawnFlags::DEVICES`] only.
    MemobjPhys = 27,
    /// `linux_rewrite(site) -> 0`: replaces the `syscall` instruction (`0f 05`) at `site` in
    /// the caller's program text with `call rax` (`ff d0`), which reaches the personality
    /// through the [`LINUX_SYSCALL_SLED`] page without trapping (the zpoline technique). The
    /// page gets a private copy first if fork shares it. Only for Linux processes that
    /// [`Sys::LinuxEntry`] told rewriting is on (`NotPermitted` otherwise). `Invalid` unless
    /// the two bytes are a `syscall`, lie in one page of an executable region of the
    /// program's own memory; `Fault` if that page is not mapped.
    LinuxRewrite = 28,
    /// `console_read(ptr, len, bits) -> n`: moves up to `len` bytes of console input (what is
    /// typed or piped into k42vm, arriving on the UART) to `ptr` and returns how many; 0 when
    /// there is none, and then, if `bits` is not 0, the next input posts `bits` to the
    /// caller's dispatcher 0 (one waiter; a later call replaces it). `len` 0 counts the bytes
    /// waiting instead of taking them. `Ended` when none wait and none will come (k42vm's
    /// standard input ended, or `k42.console_input=off`). [`SpawnFlags::CONSOLE`] only.
    ConsoleRead = 29,
    /// `memobj_unmap(addr) -> 0`: removes the whole mapping of a memory object that
    /// `memobj_map` made at `addr`; once the process maps the object nowhere else it no longer
    /// holds it, and the object's memory is freed when no process does. `Invalid` if no object
    /// mapping starts at `addr`.
    MemobjUnmap = 30,
    /// `dispatcher_schedule(index, class, tickets) -> 0`: puts the caller's dispatcher `index`
    /// in priority class `class` (below [`SCHED_CLASSES`]; 0 is served first and needs
    /// [`SpawnFlags::DEVICES`], the drivers' right) with `tickets` (1 to [`MAX_TICKETS`]) for
    /// its proportional share within the class. New dispatchers start in class
    /// [`DEFAULT_CLASS`] with [`DEFAULT_TICKETS`]. Takes effect from its next turn.
    DispatcherSchedule = 31,
    /// `tick(period_ns) -> 0`: while the calling dispatcher runs, posts [`SOFT_INTERRUPT_TICK`]
    /// to it after every `period_ns` of running (counted afresh each time the kernel switches it
    /// in), so its thread library can preempt one thread for another; 0 stops the ticks.
    /// `Invalid` unless 0 or [`MIN_TICK_NS`]..=[`MAX_TICK_NS`], or when a PPC handler calls.
    Tick = 32,
    /// `memobj_fill(id, first, count, flags) -> 0`: the pager (the creator) of a
    /// [`MemobjFlags::PAGED`] object says pages `first..first + count` now hold their data:
    /// processes that fault on them map them, and those waiting for them are told to retry
    /// (an upcalled thread through [`SOFT_INTERRUPT_RETRY`], a blocked dispatcher by waking).
    /// With [`FillFlags::ERROR`] the pages cannot be supplied: an access to one ends the
    /// process as a bus error (SIGBUS). `NotPermitted` for anyone but the creator, `Invalid`
    /// for an object that is not paged, a range outside it or unknown flags.
    MemobjFill = 33,
    /// `process_group(pid, group, session) -> 0`: records the Linux process group and session
    /// of the caller (`pid` 0 or its own) or of a live child of the caller; 0 leaves a value
    /// as it is. The kernel only keeps them for [`Sys::ProcessList`] (a spawned process starts
    /// as leader of both, a forked one inherits its parent's); the personality applies Linux's
    /// rules. `NotFound` for any other pid.
    ProcessGroup = 34,
    /// `process_command(ptr, len) -> 0`: records the caller's command line (its arguments,
    /// each ended by a NUL, as `/proc/<pid>/cmdline` shows them) and, before it, its name
    /// (`ptr` holds `name NUL arguments`); at most [`COMMAND_MAX`] bytes are kept. A forked
    /// process inherits its parent's. `Invalid` without a NUL, `Fault` for a bad range.
    ProcessCommand = 35,
    /// `process_list(ptr, max) -> count`: writes up to `max` [`ProcessDesc`] records of the live
    /// processes, by pid, at `ptr`; returns how many processes there are.
    ProcessList = 36,
}

/// How many system calls there are.
pub const SYS_COUNT: u64 = 37;

/// Bytes of a process's name and command line the kernel keeps ([`Sys::ProcessCommand`]).
pub const COMMAND_MAX: usize = 128;

/// A live process as [`Sys::ProcessList`] reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessDesc {
    /// Its pid.
    pub pid: u64,
    /// The process that spawned or forked it (0 for the first).
    pub parent: u64,
    /// Linux process group ([`Sys::ProcessGroup`]).
    pub group: u64,
    /// Linux session.
    pub session: u64,
    /// [`ProcessState`] as a number.
    pub state: u64,
    /// When it was spawned or forked (boot clock, nanoseconds, as [`crate::sys::now_ns`]).
    pub started_ns: u64,
    /// Its [`SpawnFlags`].
    pub flags: u64,
    /// How many dispatchers it has.
    pub dispatchers: u64,
    /// Bytes of `command` in use.
    pub command_len: u64,
    /// Its name, a NUL, then its arguments each ended by a NUL ([`Sys::ProcessCommand`]); a
    /// process that recorded none shows its program path and a NUL.
    pub command: [u8; COMMAND_MAX],
}

impl Default for ProcessDesc {
    fn default() -> Self {
        ProcessDesc {
            pid: 0,
            parent: 0,
            group: 0,
            session: 0,
            state: 0,
            started_ns: 0,
            flags: 0,
            dispatchers: 0,
            command_len: 0,
            command: [0; COMMAND_MAX],
        }
    }
}

impl ProcessDesc {
    /// The name (before the first NUL of `command`).
    pub fn name(&self) -> &[u8] {
        let used = &self.command[..(self.command_len as usize).min(COMMAND_MAX)];
        used.split(|&b| b == 0).next().unwrap_or(&[])
    }

    /// The arguments, each ended by a NUL (after the name's NUL; empty if none were recorded).
    pub fn arguments(&self) -> &[u8] {
        let used = &self.command[..(self.command_len as usize).min(COMMAND_MAX)];
        match used.iter().position(|&b| b == 0) {
            Some(i) => &used[i + 1..],
            None => &[],
        }
    }
}

/// What a process is doing, as [`ProcessDesc::state`] reports it.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    /// A dispatcher of it runs or is ready to.
    Running = 0,
    /// Every dispatcher of it waits.
    Waiting = 1,
    /// It has begun to exit.
    Exiting = 2,
}

/// Largest memory object, in pages ([`Sys::MemobjCreate`]).
pub const MEMOBJ_MAX_PAGES: u64 = 16 * 1024;

/// Flags of [`Sys::MemobjCreate`].
pub struct MemobjFlags;

impl MemobjFlags {
    /// Paged: the creator is the object's pager. Its own mapping shows every page; in any
    /// other process a page stays unmapped until the pager fills it ([`Sys::MemobjFill`]).
    /// The first access there sends the pager a [`MESSAGE_PAGE_REQUEST`] and the faulting
    /// thread waits: with upcalls, the dispatcher gets an [`UPCALL_PAGE_FAULT`] and runs its
    /// other threads; without, the dispatcher blocks until the page is filled. If the pager
    /// exits first, its unfilled pages fail as with [`FillFlags::ERROR`].
    pub const PAGED: u64 = 1;
    /// Every flag.
    pub const ALL: u64 = Self::PAGED;
}

/// Flags of [`Sys::MemobjFill`].
pub struct FillFlags;

impl FillFlags {
    /// The pages cannot be supplied: accesses end the process with SIGBUS.
    pub const ERROR: u64 = 1;
    /// Every flag.
    pub const ALL: u64 = Self::ERROR;
}

/// `words[0]` of a message from the kernel ([`Message::sender`] 0) asking a pager for a page:
/// `words[1]` is the object's id, `words[2]` the page's index. Sent once per page, when it is
/// first wanted, until it is filled.
pub const MESSAGE_PAGE_REQUEST: u64 = 1;

/// Shortest period [`Sys::Tick`] accepts (1 ms).
pub const MIN_TICK_NS: u64 = 1_000_000;
/// Longest period [`Sys::Tick`] accepts (1 s).
pub const MAX_TICK_NS: u64 = 1_000_000_000;

/// Priority classes of dispatchers (0 is served first).
pub const SCHED_CLASSES: u64 = 3;
/// The class a dispatcher starts in.
pub const DEFAULT_CLASS: u64 = 1;
/// The tickets a dispatcher starts with.
pub const DEFAULT_TICKETS: u64 = 100;
/// Most tickets a dispatcher may hold.
pub const MAX_TICKETS: u64 = 10_000;

/// Most processes alive at once (running, init and servers included): `spawn` and `fork`
/// beyond it fail with `Again`, which bounds a fork bomb. Exited processes whose status waits
/// to be reaped do not count. The kernel switch `k42.max_processes=N` lowers the limit
/// ([`Info::MaxProcesses`] reports the one in force).
pub const MAX_PROCESSES: usize = 512;

/// Set in the exit status of a Linux process that a signal ended: the status is
/// `EXIT_SIGNALED | signal` (what `wait4` reports as `WIFSIGNALED`, and a shell as
/// 128 + signal).
pub const EXIT_SIGNALED: i64 = 0x1_0000;

/// `wait`'s `pid` meaning "any child of the caller".
pub const WAIT_ANY: u64 = u64::MAX;

/// Flags of `wait`.
pub struct WaitFlags;

impl WaitFlags {
    /// Return `Again` at once instead of blocking when no matching child has exited yet.
    pub const NO_HANG: u64 = 1;
    /// Every flag.
    pub const ALL: u64 = Self::NO_HANG;
}

impl Sys {
    /// The call numbered `nr`, if any.
    pub fn from_number(nr: u64) -> Option<Sys> {
        const ALL: [Sys; SYS_COUNT as usize] = [
            Sys::Exit,
            Sys::ConsoleWrite,
            Sys::Yield,
            Sys::Block,
            Sys::SoftInterrupt,
            Sys::Map,
            Sys::Unmap,
            Sys::Protect,
            Sys::Spawn,
            Sys::Wait,
            Sys::DispatcherCreate,
            Sys::PpcExport,
            Sys::PpcLookup,
            Sys::PpcCall,
            Sys::PpcReturn,
            Sys::Send,
            Sys::MemobjCreate,
            Sys::MemobjMap,
            Sys::MemobjGrant,
            Sys::Info,
            Sys::Receive,
            Sys::Null,
            Sys::LinuxEntry,
            Sys::Fork,
            Sys::DeviceList,
            Sys::DeviceMap,
            Sys::DeviceIrq,
            Sys::MemobjPhys,
            Sys::LinuxRewrite,
            Sys::ConsoleRead,
            Sys::MemobjUnmap,
            Sys::DispatcherSchedule,
            Sys::Tick,
            Sys::MemobjFill,
            Sys::ProcessGroup,
            Sys::ProcessCommand,
            Sys::ProcessList,
        ];
        ALL.get(usize::try_from(nr).ok()?).copied()
    }
}

/// Errors a system call returns, as negative values in `rax` (Linux errno numbers where one fits).
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not permitted (for example the console without [`SpawnFlags::CONSOLE`]).
    NotPermitted = -1,
    /// No such program, server, process or memory object.
    NotFound = -2,
    /// Out of memory.
    NoMemory = -12,
    /// A user pointer or range is not mapped, not writable, or not in user space.
    Fault = -14,
    /// The target is busy (for example a second export of one name).
    Busy = -16,
    /// An argument is out of range.
    Invalid = -22,
    /// No such system call.
    NoSys = -38,
    /// The program is not a loadable static x86_64 ELF executable.
    NotExecutable = -8,
    /// Nothing pending (for example no message to receive).
    Again = -11,
    /// The process has no such child to wait for.
    NoChild = -10,
    /// Nothing more will come (console input after k42vm's standard input ended).
    Ended = -32,
}

impl Error {
    /// The error a negative return value stands for (`None` for values that are not errors).
    pub fn from_return(value: i64) -> Option<Error> {
        const ALL: [Error; 11] = [
            Error::NotPermitted,
            Error::NotFound,
            Error::NoMemory,
            Error::Fault,
            Error::Busy,
            Error::Invalid,
            Error::NoSys,
            Error::NotExecutable,
            Error::Again,
            Error::NoChild,
            Error::Ended,
        ];
        ALL.into_iter().find(|e| *e as i64 == value)
    }
}

/// Protection bits of `map` and `protect`.
pub struct Prot;

impl Prot {
    /// Readable.
    pub const READ: u64 = 1;
    /// Writable.
    pub const WRITE: u64 = 2;
    /// Executable.
    pub const EXEC: u64 = 4;
}

/// Flags of `spawn`.
pub struct SpawnFlags;

impl SpawnFlags {
    /// The child may write to the console directly (the console server, and `init`).
    pub const CONSOLE: u64 = 1;
    /// The child is a Linux program: it starts in the Linux personality
    /// ([`LINUX_PERSONALITY`]) with the initial stack Linux gives (argv, envp, auxv), and its
    /// `syscall` instructions reach the personality, not the kernel.
    pub const LINUX: u64 = 2;
    /// The child may use the device system calls (`device_list`, `device_map`, `device_irq`,
    /// `memobj_phys`): it is a driver. Only a holder may pass it on; the kernel starts init
    /// with it (init is the root of trust and hands it only to the drivers it starts).
    pub const DEVICES: u64 = 4;
    /// Every flag.
    pub const ALL: u64 = Self::CONSOLE | Self::LINUX | Self::DEVICES;
}

/// The argv of a Linux program being spawned: `len` bytes at `ptr`, each argument
/// NUL-terminated, back to back (at most [`LINUX_ARGS_MAX`] bytes, at least one argument).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinuxArgs {
    /// Address of the strings.
    pub ptr: u64,
    /// Their total length, terminators included.
    pub len: u64,
}

/// Most bytes of a [`LinuxArgs`] argv.
pub const LINUX_ARGS_MAX: u64 = 4096;

/// Splits a [`LinuxArgs`] blob into its arguments (`None` if it is empty, too long, or does
/// not end with a NUL).
pub fn split_linux_args(blob: &[u8]) -> Option<alloc::vec::Vec<&[u8]>> {
    if blob.is_empty() || blob.len() as u64 > LINUX_ARGS_MAX || blob.last() != Some(&0) {
        return None;
    }
    Some(blob[..blob.len() - 1].split(|&b| b == 0).collect())
}

/// A device the kernel found (`virtio_mmio.device=<size>@<base>:<irq>` on its command line),
/// as `device_list` reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceDesc {
    /// Guest-physical base of its register window.
    pub base: u64,
    /// Size of the window in bytes (`device_map` maps it rounded up to whole pages).
    pub size: u64,
    /// Its interrupt line (GSI).
    pub irq: u64,
    /// The virtio device ID the kernel read from the window at boot (2: block, 4: entropy;
    /// 0: no virtio device there), so a driver finds its device without claiming others.
    pub device_id: u64,
}

/// Most devices the kernel keeps.
pub const MAX_DEVICES: usize = 32;

/// Soft-interrupt bits a device interrupt may not use (the kernel's own).
pub const SOFT_INTERRUPT_RESERVED: u64 =
    SOFT_INTERRUPT_MESSAGE | SOFT_INTERRUPT_RETRY | SOFT_INTERRUPT_TICK | SOFT_INTERRUPT_CHILD;

/// Path, in the initramfs, of the Linux personality: a static ELF linked inside
/// [`LINUX_PERSONALITY_AREA`] that the kernel loads into every Linux process.
pub const LINUX_PERSONALITY: &str = "lib/k42/linux";
/// Where the Linux personality lives in a Linux process: below 2 GiB (its code is built for the
/// small code model), above where static programs and their break go; the personality refuses
/// the program's own mappings there.
pub const LINUX_PERSONALITY_AREA: core::ops::Range<u64> = 0x7000_0000..0x8000_0000;

/// The page a rewritten Linux system-call site calls into: `call rax` with the system-call
/// number in `rax` lands in a run of `nop`s at address `rax` and slides to code that takes the
/// return address into `rcx` (as `syscall` would) and jumps to the personality entry held in
/// dispatcher 0's [`DispatcherPage::linux_entry`]. The kernel maps it read-only into Linux
/// processes while rewriting is on; it is not part of the range user mappings may use.
pub const LINUX_SYSCALL_SLED: u64 = 0;
/// System-call numbers below this go through the sled; a site is rewritten only while the
/// number it was called with is below it (every Linux x86_64 number is).
pub const LINUX_SLED_CALLS: u64 = 512;

/// Bytes of the code at the end of each run of `nop`s in the sled page.
const SLED_CODE_LEN: usize = 14;

/// The contents of the [`LINUX_SYSCALL_SLED`] page: `nop`s up to [`LINUX_SLED_CALLS`], the
/// code, then `nop`s again up to a second copy of the code at the end of the page, so a call
/// with a larger number (at a site rewritten earlier) still reaches the personality, which
/// says `ENOSYS`. Only numbers that land inside the first copy of the code (a few above
/// [`LINUX_SLED_CALLS`]) or beyond the page (negative ones) fault instead.
pub const fn linux_sled_page() -> [u8; PAGE_SIZE as usize] {
    let mut page = [0x90u8; PAGE_SIZE as usize];
    let slot = (dispatcher_page(0) + LINUX_ENTRY_OFFSET as u64).to_le_bytes();
    let mut code = [0u8; SLED_CODE_LEN];
    // pop rcx; movabs r11, slot; jmp qword ptr [r11]
    code[0] = 0x59;
    code[1] = 0x49;
    code[2] = 0xbb;
    let mut i = 0;
    while i < 8 {
        code[3 + i] = slot[i];
        i += 1;
    }
    code[11] = 0x41;
    code[12] = 0xff;
    code[13] = 0x23;
    let ends = [
        LINUX_SLED_CALLS as usize,
        PAGE_SIZE as usize - SLED_CODE_LEN,
    ];
    let mut e = 0;
    while e < ends.len() {
        let mut i = 0;
        while i < SLED_CODE_LEN {
            page[ends[e] + i] = code[i];
            i += 1;
        }
        e += 1;
    }
    page
}
/// What `info` reports.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Info {
    /// Number of CPUs.
    Cpus = 0,
    /// The caller's process id.
    Pid = 1,
    /// The CPU the caller runs on.
    Cpu = 2,
    /// TSC frequency in kHz (user code reads the TSC itself).
    TscKhz = 3,
    /// The caller's dispatcher index.
    Dispatcher = 4,
    /// The argument the process was spawned with.
    SpawnArg = 5,
    /// Entries into the kernel so far on this CPU (system calls, faults, interrupts).
    KernelEntries = 6,
    /// Bytes of the initramfs ([`INITRD_MEMOBJ`]); 0 without one.
    InitrdLen = 7,
    /// Where the initramfs starts within the first page of [`INITRD_MEMOBJ`]'s mapping.
    InitrdOffset = 8,
    /// Page frames the kernel's frame allocator has not handed out (system-wide; frames in
    /// per-CPU caches count as free): lets tests check that exiting processes return theirs.
    FreeFrames = 9,
    /// The live-process limit in force ([`MAX_PROCESSES`] or lower).
    MaxProcesses = 10,
    /// Page frames the kernel's frame allocator manages (free or handed out).
    TotalFrames = 11,
    /// Nanoseconds to add to [`crate::sys::now_ns`] for Unix time (the host's clock, read once
    /// at boot on k42vm); 0 where the kernel does not know the time.
    WallClockOffset = 12,
    /// TLB shoot-downs so far (system-wide) that had to ask another CPU to flush: lets tests
    /// check that an unmap reached the other CPUs running the process.
    RemoteShootDowns = 13,
    /// The caller's Linux process group ([`Sys::ProcessGroup`]).
    Group = 14,
    /// The caller's Linux session ([`Sys::ProcessGroup`]).
    Session = 15,
}

impl Info {
    /// The item numbered `nr`, if any.
    pub fn from_number(nr: u64) -> Option<Info> {
        [
            Info::Cpus,
            Info::Pid,
            Info::Cpu,
            Info::TscKhz,
            Info::Dispatcher,
            Info::SpawnArg,
            Info::KernelEntries,
            Info::InitrdLen,
            Info::InitrdOffset,
            Info::FreeFrames,
            Info::MaxProcesses,
            Info::TotalFrames,
            Info::WallClockOffset,
            Info::RemoteShootDowns,
            Info::Group,
            Info::Session,
        ]
        .into_iter()
        .find(|i| *i as u64 == nr)
    }
}

/// The memory object holding the initramfs as the boot loader placed it: any process may map it
/// read-only (`memobj_map(INITRD_MEMOBJ, addr, Prot::READ)`; asking for write access is
/// `NotPermitted`). Its pages are mapped on first touch; the archive's first byte is at
/// `addr + info(InitrdOffset)` and it is `info(InitrdLen)` bytes long. The file server reads the
/// archive through it, and clients read files still as the archive holds them without copies.
pub const INITRD_MEMOBJ: u64 = 0;

/// An asynchronous message as `receive` returns it: the sender's pid and three words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Sending process (0: the kernel).
    pub sender: u64,
    /// Payload.
    pub words: [u64; 3],
}

/// Soft-interrupt bit the kernel sets when an asynchronous message arrives.
pub const SOFT_INTERRUPT_MESSAGE: u64 = 1 << 63;

/// Registers a PPC handler starts with: `rdi` = caller pid, `rsi..r9` = `a0..a3`, `rsp` = the
/// server's PPC stack on this CPU, and the caller's PPC buffer at [`ppc_window`]`(cpu)` where
/// `cpu` is in `rax`.
pub const PPC_ENTRY_ARGS: usize = 4;

/// Soft-interrupt bit the kernel sets when a call that found a server busy may be re-issued
/// (see [`UPCALL_BLOCKED`]); [`DispatcherPage::retry_count`] is bumped just before.
pub const SOFT_INTERRUPT_RETRY: u64 = 1 << 62;

/// Soft-interrupt bit the kernel posts to a dispatcher that asked for ticks ([`Sys::Tick`])
/// each time it has run for its period.
pub const SOFT_INTERRUPT_TICK: u64 = 1 << 59;

/// Soft-interrupt bit the kernel posts to dispatcher 0 of a Linux process
/// ([`SpawnFlags::LINUX`]) when one of its children exits (the personality raises `SIGCHLD`
/// for it; `wait` collects the status).
pub const SOFT_INTERRUPT_CHILD: u64 = 1 << 60;

/// Upcall reason (in `rsi`): soft interrupts are pending; the interrupted context is in the
/// save area and resumes unchanged.
pub const UPCALL_INTERRUPT: u64 = 1;
/// Upcall reason (in `rsi`): the thread in the save area made a call that would block the
/// dispatcher in the kernel (a PPC call to a busy server). Resuming the save area re-issues the
/// call; it is worth doing once [`DispatcherPage::retry_count`] differs from the value in `rdx`.
pub const UPCALL_BLOCKED: u64 = 2;
/// Upcall reason (in `rsi`): the thread in the save area touched a page of a paged memory
/// object that its pager has yet to fill ([`MemobjFlags::PAGED`]); `rcx` holds the address.
/// Resuming the save area retries the access; it is worth doing once
/// [`DispatcherPage::retry_count`] differs from the value in `rdx`.
pub const UPCALL_PAGE_FAULT: u64 = 3;
/// Upcall reason (in `rsi`): the thread in the save area took an exception that would end
/// the process (a bad access, an invalid instruction, a divide error...). `rcx` holds the
/// faulting address (the instruction's for exceptions other than page faults), `r8` the
/// vector in its low 8 bits and the error code above, `r9` the signal (Linux numbering) the
/// kernel would end the process with. Resuming the save area re-executes the instruction. A
/// trap while the dispatcher is disabled, or with this reason declined, ends the process.
pub const UPCALL_TRAP: u64 = 4;

/// The user registers of an interrupted or blocked context, as the kernel saved them when it
/// upcalled the dispatcher.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveArea {
    /// General registers, in this order.
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// Where it resumes.
    pub rip: u64,
    /// Its stack pointer.
    pub rsp: u64,
    /// Its flags.
    pub rflags: u64,
}

impl SaveArea {
    /// Number of 8-byte words.
    pub const WORDS: usize = 18;
    /// Byte offsets of `rip`, `rsp` and `rflags`.
    pub const RIP: usize = 15 * 8;
    /// Byte offset of `rsp`.
    pub const RSP: usize = 16 * 8;
    /// Byte offset of `rflags`.
    pub const RFLAGS: usize = 17 * 8;

    /// The words in memory order.
    pub fn to_words(&self) -> [u64; Self::WORDS] {
        [
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rbp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rip,
            self.rsp,
            self.rflags,
        ]
    }
}

/// A dispatcher's page shared between the kernel and user level (K42's dispatcher structure):
/// identity, pending soft interrupts, the disabled flag, the upcall entry point and the save
/// area. The kernel sets soft-interrupt bits; user code takes them with an atomic swap (or
/// through `block`).
///
/// Upcalls: while `upcall_entry` is 0 the kernel never upcalls (a call that must wait blocks
/// the dispatcher). Once set, whenever the kernel resumes the dispatcher with soft interrupts
/// pending and `disabled` clear, or a call of it would block in the kernel, it stores the
/// registers it would have resumed in `save_area`, sets `disabled`, and enters `upcall_entry`
/// with `rsp` = `upcall_stack` (16-byte aligned), `rdi` = this page's address, `rsi` = the
/// reason ([`UPCALL_INTERRUPT`], [`UPCALL_BLOCKED`], [`UPCALL_PAGE_FAULT`], [`UPCALL_TRAP`]),
/// `rdx` = `retry_count`, `rcx` = the faulting address (page faults and traps), and for
/// traps `r8` and `r9` as [`UPCALL_TRAP`] says. User level
/// clears `disabled` once the save area has been consumed, and must look at the
/// soft-interrupt word after clearing it (bits that arrive while disabled wait for it).
#[repr(C)]
#[derive(Debug, Default)]
pub struct DispatcherPage {
    /// Pending soft-interrupt bits (atomically updated by the kernel and the dispatcher).
    pub soft_interrupts: core::sync::atomic::AtomicU64,
    /// The process id.
    pub pid: u64,
    /// This dispatcher's index in its process.
    pub index: u64,
    /// The CPU it runs on.
    pub cpu: u64,
    /// CPUs in the system.
    pub cpus: u64,
    /// TSC frequency in kHz.
    pub tsc_khz: u64,
    /// The argument the process was spawned with.
    pub spawn_arg: u64,
    /// Non-zero: the dispatcher runs disabled and the kernel makes no upcalls.
    pub disabled: core::sync::atomic::AtomicU64,
    /// Where upcalls enter (0: no upcalls).
    pub upcall_entry: core::sync::atomic::AtomicU64,
    /// Top of the stack upcalls start on.
    pub upcall_stack: core::sync::atomic::AtomicU64,
    /// Bumped by the kernel before it sets [`SOFT_INTERRUPT_RETRY`] (a futex word for threads
    /// waiting to re-issue a blocked call).
    pub retry_count: core::sync::atomic::AtomicU32,
    /// Upcall reasons the dispatcher declines, bit `1 << reason` each: the kernel treats
    /// them as if no entry point were registered (0: takes every reason).
    pub declined: core::sync::atomic::AtomicU32,
    /// The context the last upcall interrupted or blocked.
    pub save_area: SaveArea,
    /// A Linux process's personality entry (written by the kernel; read by the code of the
    /// [`LINUX_SYSCALL_SLED`] page).
    pub linux_entry: u64,
}

/// Byte offset of [`DispatcherPage::disabled`].
pub const DISABLED_OFFSET: usize = core::mem::offset_of!(DispatcherPage, disabled);
/// Byte offset of [`DispatcherPage::linux_entry`].
pub const LINUX_ENTRY_OFFSET: usize = core::mem::offset_of!(DispatcherPage, linux_entry);
/// Byte offset of [`DispatcherPage::save_area`].
pub const SAVE_AREA_OFFSET: usize = core::mem::offset_of!(DispatcherPage, save_area);

/// Address of dispatcher `index`'s shared page.
pub const fn dispatcher_page(index: usize) -> u64 {
    DISPATCHER_AREA + index as u64 * PAGE_SIZE
}

/// Address of the PPC window of a server on `cpu`.
pub const fn ppc_window(cpu: usize) -> u64 {
    PPC_WINDOW_AREA + cpu as u64 * PAGE_SIZE
}

/// Address of the PPC buffer of a process's dispatcher `dispatcher`.
pub const fn ppc_buffer(dispatcher: usize) -> u64 {
    PPC_BUFFER_AREA + dispatcher as u64 * PAGE_SIZE
}

/// Address of the PPC buffer a server's handler on `cpu` carries to the servers it calls.
pub const fn ppc_nested_buffer(cpu: usize) -> u64 {
    PPC_NESTED_BUFFER_AREA + cpu as u64 * PAGE_SIZE
}

/// Top of a server's PPC stack on `cpu`.
pub const fn ppc_stack_top(cpu: usize) -> u64 {
    PPC_STACK_AREA + (cpu as u64 + 1) * PPC_STACK_SIZE
}

/// Whether `[addr, addr + len)` lies entirely in the range user mappings may use.
pub fn user_range_ok(addr: u64, len: u64) -> bool {
    addr >= USER_START && addr.checked_add(len).is_some_and(|end| end <= USER_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_desc_splits_name_and_arguments() {
        let mut d = ProcessDesc::default();
        assert_eq!(core::mem::size_of::<ProcessDesc>(), 9 * 8 + COMMAND_MAX);
        assert_eq!((d.name(), d.arguments()), (&b""[..], &b""[..]));
        let record = b"ls\0ls\0-l\0";
        d.command[..record.len()].copy_from_slice(record);
        d.command_len = record.len() as u64;
        assert_eq!((d.name(), d.arguments()), (&b"ls"[..], &b"ls\0-l\0"[..]));
        // A length beyond the array (a bad record) is cut to it.
        d.command_len = u64::MAX;
        assert_eq!(d.name(), b"ls");
        assert_eq!(d.arguments().len(), COMMAND_MAX - 3);
    }

    #[test]
    fn numbers_round_trip() {
        for nr in 0..SYS_COUNT {
            assert_eq!(Sys::from_number(nr).map(|s| s as u64), Some(nr));
        }
        assert_eq!(Sys::from_number(SYS_COUNT), None);
        assert_eq!(Sys::from_number(u64::MAX), None);
        assert_eq!(Error::from_return(-14), Some(Error::Fault));
        assert_eq!(Error::from_return(5), None);
        assert_eq!(Info::from_number(6), Some(Info::KernelEntries));
        assert_eq!(Info::from_number(8), Some(Info::InitrdOffset));
        assert_eq!(Info::from_number(9), Some(Info::FreeFrames));
        assert_eq!(Info::from_number(10), Some(Info::MaxProcesses));
        assert_eq!(Info::from_number(11), Some(Info::TotalFrames));
        assert_eq!(Info::from_number(12), Some(Info::WallClockOffset));
        assert_eq!(Info::from_number(13), Some(Info::RemoteShootDowns));
        assert_eq!(Info::from_number(15), Some(Info::Session));
        assert_eq!(Info::from_number(16), None);
        assert_eq!(Error::from_return(-32), Some(Error::Ended));
        assert_eq!(Sys::from_number(29), Some(Sys::ConsoleRead));
        assert_eq!(Sys::from_number(30), Some(Sys::MemobjUnmap));
        assert_eq!(Sys::from_number(31), Some(Sys::DispatcherSchedule));
        assert_eq!(Sys::from_number(32), Some(Sys::Tick));
        assert_eq!(Sys::from_number(23), Some(Sys::Fork));
    }

    #[test]
    fn dispatcher_page_layout_is_the_contract() {
        // The kernel writes these offsets and the upcall trampoline reads them.
        assert_eq!(core::mem::offset_of!(DispatcherPage, spawn_arg), 48);
        assert_eq!(DISABLED_OFFSET, 56);
        assert_eq!(core::mem::offset_of!(DispatcherPage, upcall_entry), 64);
        assert_eq!(core::mem::offset_of!(DispatcherPage, upcall_stack), 72);
        assert_eq!(core::mem::offset_of!(DispatcherPage, retry_count), 80);
        assert_eq!(SAVE_AREA_OFFSET, 88);
        assert_eq!(core::mem::size_of::<SaveArea>(), SaveArea::WORDS * 8);
        assert_eq!(core::mem::size_of::<DeviceDesc>(), 32);
        assert!(core::mem::size_of::<DispatcherPage>() <= PAGE_SIZE as usize);
        let area = SaveArea {
            rax: 1,
            r15: 15,
            rip: 16,
            rsp: 17,
            rflags: 18,
            ..SaveArea::default()
        };
        let words = area.to_words();
        assert_eq!((words[0], words[14], words[SaveArea::RIP / 8]), (1, 15, 16));
        assert_eq!(
            (words[SaveArea::RSP / 8], words[SaveArea::RFLAGS / 8]),
            (17, 18)
        );
    }

    // The fixed areas do not overlap and lie above what user mappings may use (for 64 CPUs).
    const _: () = {
        assert!(MAIN_STACK_TOP <= PPC_STACK_AREA);
        assert!(ppc_stack_top(63) <= PPC_BUFFER_AREA);
        assert!(ppc_buffer(MAX_DISPATCHERS - 1) + PAGE_SIZE <= PPC_NESTED_BUFFER_AREA);
        assert!(ppc_nested_buffer(63) + PAGE_SIZE <= PPC_WINDOW_AREA);
        assert!(ppc_window(63) + PAGE_SIZE <= DISPATCHER_AREA);
        assert!(dispatcher_page(MAX_DISPATCHERS - 1) + PAGE_SIZE <= ENTRY_PAGE);
        assert!(USER_END <= MAIN_STACK_TOP - MAIN_STACK_SIZE);
        assert!(USER_START <= LINUX_PERSONALITY_AREA.start);
        assert!(LINUX_PERSONALITY_AREA.end <= 1 << 31);
        // The sled page lies below what user mappings may use, so a program cannot replace it.
        assert!(LINUX_SYSCALL_SLED + PAGE_SIZE <= USER_START);
        assert!(LINUX_ENTRY_OFFSET + 8 <= core::mem::size_of::<DispatcherPage>());
    };

    #[test]
    fn linux_sled_slides_into_a_jump_through_dispatcher_zero() {
        let page = linux_sled_page();
        let sled = LINUX_SLED_CALLS as usize;
        let last = PAGE_SIZE as usize - SLED_CODE_LEN;
        // Every number below the limit lands on a `nop` and slides to the code; so do larger
        // ones between the two copies of it.
        assert!(page[..sled].iter().all(|&b| b == 0x90));
        assert!(page[sled + SLED_CODE_LEN..last].iter().all(|&b| b == 0x90));
        for code in [&page[sled..sled + SLED_CODE_LEN], &page[last..]] {
            assert_eq!(&code[..3], &[0x59, 0x49, 0xbb]);
            let slot = u64::from_le_bytes(code[3..11].try_into().unwrap());
            assert_eq!(slot, DISPATCHER_AREA + LINUX_ENTRY_OFFSET as u64);
            assert_eq!(&code[11..], &[0x41, 0xff, 0x23]);
        }
    }

    #[test]
    fn linux_args_split_on_nul() {
        assert_eq!(
            split_linux_args(b"busybox\0ls\0-l\0"),
            Some(alloc::vec![&b"busybox"[..], b"ls", b"-l"])
        );
        assert_eq!(
            split_linux_args(b"x\0\0"),
            Some(alloc::vec![&b"x"[..], b""])
        );
        assert_eq!(split_linux_args(b"unterminated"), None);
        assert_eq!(split_linux_args(b""), None);
        assert_eq!(split_linux_args(&[0u8; 4097]), None);
    }

    #[test]
    fn user_ranges_are_checked() {
        assert!(user_range_ok(0x40_0000, 4096));
        assert!(!user_range_ok(0, 4096));
        assert!(!user_range_ok(USER_END - 4096, 8192));
        assert!(!user_range_ok(u64::MAX - 10, 20));
    }
}
