//! Processes and dispatchers (K42's user-level model): a process is an address space plus
//! dispatchers, one per CPU it runs on; the kernel schedules dispatchers (see `sched`), a
//! library in the process schedules its threads. Programs come from the initramfs.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use k42_guest_lib::cpio;
use k42_guest_lib::frames::FRAME_SIZE;
use k42_guest_lib::kabi::{self, DispatcherPage, Message, Prot, SpawnFlags};
use k42_linux_abi::{auxv, elf};
use spin::{Mutex, Once};

use crate::arch::{gdt, idt::TrapFrame, user};
use crate::mm::aspace::{AddressSpace, Backing, Region};
use crate::mm::bulk::MemBatch;
use crate::{mm, percpu, platform};

/// Process id of the first user program; when it exits, the VM shuts down with its status.
pub const INIT_PID: u64 = 1;
/// Most pending asynchronous messages per dispatcher.
pub const MESSAGE_QUEUE_MAX: usize = 256;
/// User RFLAGS on entry: interrupts enabled, reserved bit 1.
const USER_RFLAGS: u64 = 0x202;

/// A file of the initramfs: where its bytes are in physical memory.
#[derive(Clone, Debug)]
pub struct InitrdFile {
    /// Path without a leading `/`.
    pub name: String,
    /// Physical address of the contents.
    pub phys: u64,
    /// Length in bytes.
    pub len: u64,
}

static INITRD: Once<Vec<InitrdFile>> = Once::new();
/// Where the initramfs archive is in physical memory: (address, length).
static INITRD_RANGE: Once<(u64, u64)> = Once::new();

/// The initramfs archive's physical address and length, if one was indexed.
pub fn initrd_range() -> Option<(u64, u64)> {
    INITRD_RANGE.get().copied()
}

/// Whether the initramfs at `phys`/`len` starts like a gzip member (which k42vm would have
/// unpacked on the host: another VMM passed it).
pub fn initrd_is_gzip(phys: u64, len: u64) -> bool {
    len >= 2 && mm::phys_slice::<u8>(phys, 2) == [0x1f, 0x8b]
}

/// Indexes the initramfs (an uncompressed cpio newc archive) at `phys`/`len`. Compressed
/// archives are refused: decompressing is bulk work that does not belong in ring 0 (k42vm
/// unpacks a gzip initrd on the host before the guest starts).
pub fn init_initrd(phys: u64, len: u64) -> Result<usize, cpio::CpioError> {
    let bytes: &'static [u8] = mm::phys_slice(phys, len as usize);
    let entries = cpio::parse(bytes)?;
    let files: Vec<InitrdFile> = entries
        .iter()
        .filter(|e| e.kind() == cpio::mode::REGULAR)
        .map(|e| InitrdFile {
            name: String::from(e.name.trim_start_matches("./").trim_start_matches('/')),
            phys: phys + (e.data.as_ptr() as u64 - bytes.as_ptr() as u64),
            len: e.data.len() as u64,
        })
        .collect();
    let count = files.len();
    INITRD.call_once(|| files);
    INITRD_RANGE.call_once(|| (phys, len));
    Ok(count)
}

/// The initramfs file at `path` (with or without a leading `/`).
pub fn initrd_file(path: &str) -> Option<&'static InitrdFile> {
    let path = path.trim_start_matches('/');
    INITRD.get()?.iter().find(|f| f.name == path)
}

/// Why a dispatcher is not running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// On its CPU's run queue.
    Runnable,
    /// The current dispatcher of its CPU.
    Running,
    /// Waiting for something (see [`BlockReason`]).
    Blocked(BlockReason),
    /// A PPC dispatcher with no call to serve.
    Idle,
    /// Its process has exited.
    Dead,
}

/// What a blocked dispatcher waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// A soft interrupt or its deadline (`block`).
    SoftInterrupt,
    /// A child's exit (`wait`).
    Child,
    /// The reply to its PPC call.
    PpcReply,
    /// Its turn at a busy server.
    PpcQueue,
    /// A page its pager has yet to fill (paged memory objects).
    PageFault,
}

/// What kind of dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispatcherKind {
    /// Runs the process's own code (its threads).
    Normal,
    /// Runs PPC calls to this server on one CPU.
    Ppc,
}

/// The mutable part of a dispatcher, under its lock.
pub struct DispatcherState {
    /// Saved user registers while not running.
    pub frame: TrapFrame,
    /// Saved FS base.
    pub fs_base: u64,
    /// Saved x87/SSE registers.
    pub fpu: alloc::boxed::Box<user::FpuState>,
    /// Where it is.
    pub run: RunState,
    /// A value for `rax` (and `rdx`) to return with when it next runs.
    pub pending_return: Option<(u64, Option<u64>)>,
    /// Stride-scheduling pass value.
    pub pass: u64,
    /// Bumped on every block, so stale timer entries are recognised.
    pub block_seq: u64,
    /// PPC dispatchers: the client whose call is being served.
    pub serving: Option<Arc<Dispatcher>>,
    /// PPC dispatchers: clients waiting (blocked) for this one.
    pub waiting: VecDeque<Arc<Dispatcher>>,
    /// PPC dispatchers: clients that took a blocked upcall, to be told when to retry.
    pub retry: Vec<Arc<Dispatcher>>,
    /// Pending asynchronous messages.
    pub messages: VecDeque<Message>,
}

impl DispatcherState {
    /// The state of a new dispatcher that will start with `frame`.
    fn new(frame: TrapFrame, run: RunState) -> DispatcherState {
        DispatcherState {
            frame,
            fs_base: 0,
            fpu: alloc::boxed::Box::new(user::FpuState::initial()),
            run,
            pending_return: None,
            pass: 0,
            block_seq: 0,
            serving: None,
            waiting: VecDeque::new(),
            retry: Vec::new(),
            messages: VecDeque::new(),
        }
    }
}

/// A dispatcher: the kernel's unit of scheduling, bound to one CPU.
pub struct Dispatcher {
    /// Its process.
    pub process: Arc<Process>,
    /// Index within the process (normal dispatchers), or the CPU (PPC dispatchers).
    pub index: usize,
    /// The CPU it runs on.
    pub cpu: usize,
    /// Normal or PPC.
    pub kind: DispatcherKind,
    /// Priority class (0 is the most urgent; [`set_schedule`] changes it).
    pub class: AtomicUsize,
    /// Proportional-share tickets within the class.
    pub tickets: AtomicU64,
    /// Physical frame of its shared page (normal dispatchers; 0 for PPC ones).
    pub page: u64,
    /// Pending soft-interrupt bits of a PPC dispatcher (it has no shared page; only a device
    /// interrupt bound to it sets them, and `block` takes them).
    pub kernel_soft: AtomicU64,
    /// Its tick period in TSC ticks (`tick`; 0: no ticks).
    pub tick_period: AtomicU64,
    /// When its next tick is due (TSC), while it runs.
    pub tick_next: AtomicU64,
    /// State.
    pub state: Mutex<DispatcherState>,
}

impl Dispatcher {
    /// Sets soft-interrupt bits in the shared page; returns the bits now pending.
    pub fn post_soft_interrupt(&self, bits: u64) -> u64 {
        match self.soft_word() {
            Some(word) => word.fetch_or(bits, Ordering::AcqRel) | bits,
            None => 0,
        }
    }

    /// Takes (clears) the pending soft-interrupt bits.
    pub fn take_soft_interrupts(&self) -> u64 {
        self.soft_word().map_or(0, |w| w.swap(0, Ordering::AcqRel))
    }

    fn soft_word(&self) -> Option<&AtomicU64> {
        if self.page == 0 {
            return Some(&self.kernel_soft);
        }
        self.page_word(core::mem::offset_of!(DispatcherPage, soft_interrupts))
    }

    /// The 64-bit word at `offset` of its shared page (`None` for PPC dispatchers, which have
    /// no page).
    pub fn page_word(&self, offset: usize) -> Option<&AtomicU64> {
        // The page lives as long as the dispatcher (freed in Drop).
        (self.page != 0).then(|| mm::frame_atomic(self.page, offset))
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if self.page != 0 {
            mm::free_zeroed(&[self.page]);
        }
    }
}

/// A process.
pub struct Process {
    /// Process id (never reused).
    pub pid: u64,
    /// The spawning process (0 for init).
    pub parent: u64,
    /// Program path.
    pub name: String,
    /// Spawn flags ([`kabi::SpawnFlags`]).
    pub flags: u64,
    /// The argument it was spawned with.
    pub spawn_arg: u64,
    /// Page tables and regions (`None` once torn down).
    pub aspace: Mutex<Option<AddressSpace>>,
    /// Its normal dispatchers, by index (cleared at exit).
    pub dispatchers: Mutex<Vec<Arc<Dispatcher>>>,
    /// Its PPC dispatchers, by CPU (servers only; cleared at exit).
    pub ppc_dispatchers: Mutex<Vec<Option<Arc<Dispatcher>>>>,
    /// PPC entry point, once it exported itself as a server.
    pub ppc_entry: AtomicU64,
    /// Linux processes: where their `syscall`s go (the personality's entry), once registered.
    pub linux_entry: AtomicU64,
    /// Its PPC buffer frames, by dispatcher index.
    pub ppc_buffers: Mutex<Vec<u64>>,
    /// Memory objects it maps (kept alive while mapped).
    pub memobjs: Mutex<Vec<Arc<crate::memobj::Memobj>>>,
    /// Set once it has begun to exit.
    pub exiting: AtomicBool,
    /// Its children, for `wait`.
    pub children: Mutex<Children>,
    /// When it was spawned or forked (boot clock, ns).
    pub started_ns: u64,
    /// What `process_list` shows of it beyond the kernel's own facts.
    pub identity: Mutex<Identity>,
}

/// A process's Linux identity as its personality records it (`process_group`,
/// `process_command`) for `process_list`: the kernel keeps it, it does not act on it.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Linux process group.
    pub group: u64,
    /// Linux session.
    pub session: u64,
    /// Name, NUL, arguments each ended by a NUL (at most [`kabi::COMMAND_MAX`] bytes).
    pub command: Vec<u8>,
}

/// A process's children as `wait` sees them (under one lock, which a child's exit also takes,
/// so no exit is missed between a waiter's check and its sleep).
#[derive(Default)]
pub struct Children {
    /// Pids of children not reaped yet (running, exiting or exited).
    unreaped: BTreeSet<u64>,
    /// Children that exited and wait to be reaped: (pid, status), oldest first.
    exited: VecDeque<(u64, i64)>,
    /// This process's dispatchers blocked in `wait`: (dispatcher, the pid it waits for or
    /// [`kabi::WAIT_ANY`]).
    waiters: Vec<(Arc<Dispatcher>, u64)>,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(space) = self.aspace.get_mut().take() {
            space.destroy();
        }
        let frames: Vec<u64> = core::mem::take(self.ppc_buffers.get_mut())
            .into_iter()
            .filter(|&f| f != 0)
            .collect();
        mm::free_zeroed(&frames);
    }
}

static PROCESSES: Mutex<BTreeMap<u64, Arc<Process>>> = Mutex::new(BTreeMap::new());
static NEXT_PID: AtomicU64 = AtomicU64::new(INIT_PID);
/// Processes alive (created and not yet exiting), bounded by [`LIMIT`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Most live processes: [`kabi::MAX_PROCESSES`] unless lowered at boot.
static LIMIT: AtomicUsize = AtomicUsize::new(kabi::MAX_PROCESSES);

/// Lowers the process limit to `limit` (`k42.max_processes=`; at least 1, at most
/// [`kabi::MAX_PROCESSES`]).
pub fn set_process_limit(limit: usize) {
    LIMIT.store(limit.clamp(1, kabi::MAX_PROCESSES), Ordering::Release);
}

/// The process limit in force.
pub fn process_limit() -> usize {
    LIMIT.load(Ordering::Acquire)
}

/// A place for one more live process, or `None` at the limit.
fn reserve_process() -> Option<()> {
    let limit = process_limit();
    LIVE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < limit).then_some(n + 1)
    })
    .ok()
    .map(|_| ())
}

/// Gives back a place taken by [`reserve_process`].
fn release_process() {
    LIVE.fetch_sub(1, Ordering::AcqRel);
}

/// The entry page's frame (one read-only page mapped into every process).
static ENTRY_FRAME: AtomicU64 = AtomicU64::new(0);

/// Sets the frame that every process maps at [`kabi::ENTRY_PAGE`].
pub fn set_entry_frame(frame: u64) {
    ENTRY_FRAME.store(frame, Ordering::Release);
}

/// The frame of the [`kabi::LINUX_SYSCALL_SLED`] page (0 until the first program starts).
static SLED_FRAME: AtomicU64 = AtomicU64::new(0);
/// Whether Linux system-call sites are rewritten (`k42.syscall_rewrite=off` clears it).
static SYSCALL_REWRITE: AtomicBool = AtomicBool::new(true);

/// Turns the rewriting of Linux system-call sites on or off (before the first program runs).
pub fn set_syscall_rewrite(on: bool) {
    SYSCALL_REWRITE.store(on, Ordering::Release);
}

/// Builds the [`kabi::LINUX_SYSCALL_SLED`] page, shared read-only by every Linux process.
pub fn make_sled_frame() -> Result<(), &'static str> {
    let frame = mm::alloc_frame().ok_or("no memory for the system-call sled page")?;
    static SLED: [u8; FRAME_SIZE as usize] = kabi::linux_sled_page();
    mm::write_phys(frame, &SLED);
    SLED_FRAME.store(frame, Ordering::Release);
    Ok(())
}

/// Maps the system-call sled page into the Linux process `me` once rewriting is on; returns
/// whether it is mapped.
pub fn map_linux_sled(process: &Process) -> Result<bool, kabi::Error> {
    let frame = SLED_FRAME.load(Ordering::Acquire);
    if !SYSCALL_REWRITE.load(Ordering::Acquire) || frame == 0 {
        return Ok(false);
    }
    let mut guard = process.aspace.lock();
    let space = guard.as_mut().ok_or(kabi::Error::NotFound)?;
    if space.region_at(kabi::LINUX_SYSCALL_SLED).is_some() {
        return Ok(true);
    }
    map_code_page(space, kabi::LINUX_SYSCALL_SLED, frame)?;
    Ok(true)
}

/// The live process `pid`.
pub fn process(pid: u64) -> Option<Arc<Process>> {
    PROCESSES.lock().get(&pid).cloned()
}

/// Why a program could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// No such file in the initramfs.
    NotFound,
    /// Not a static x86_64 executable we can load.
    NotExecutable(elf::ElfError),
    /// Out of memory.
    NoMemory,
    /// A Linux program, but no Linux personality in the initramfs.
    NoPersonality,
    /// [`kabi::MAX_PROCESSES`] processes are alive.
    TooManyProcesses,
}

impl From<SpawnError> for kabi::Error {
    fn from(e: SpawnError) -> kabi::Error {
        match e {
            SpawnError::NotFound => kabi::Error::NotFound,
            SpawnError::NotExecutable(_) => kabi::Error::NotExecutable,
            SpawnError::NoMemory => kabi::Error::NoMemory,
            SpawnError::NoPersonality => kabi::Error::NotFound,
            SpawnError::TooManyProcesses => kabi::Error::Again,
        }
    }
}

impl From<mm::aspace::AspaceError> for SpawnError {
    fn from(_: mm::aspace::AspaceError) -> SpawnError {
        SpawnError::NoMemory
    }
}

/// Maps the entry page and builds a new normal dispatcher's shared page for `process`.
fn new_dispatcher(
    process: &Arc<Process>,
    space: &mut AddressSpace,
    index: usize,
    cpu: usize,
    frame: TrapFrame,
) -> Result<Arc<Dispatcher>, SpawnError> {
    let page = mm::alloc_frame().ok_or(SpawnError::NoMemory)?;
    let va = kabi::dispatcher_page(index);
    let region = Region {
        start: va,
        end: va + FRAME_SIZE,
        prot: Prot::READ | Prot::WRITE,
        backing: Backing::Shared,
    };
    if space.add_region(region).is_err() || space.map_page(va, page, region.prot, false).is_err() {
        mm::free_zeroed(&[page]);
        return Err(SpawnError::NoMemory);
    }
    // The words of `DispatcherPage`, in order (soft interrupts start at zero).
    let words = [
        0,
        process.pid,
        index as u64,
        cpu as u64,
        crate::smp::online() as u64,
        platform::tsc_khz(),
        process.spawn_arg,
    ];
    let mut bytes = [0u8; core::mem::size_of::<DispatcherPage>()];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    // A forked Linux child's rewritten system-call sites go where its parent's did.
    let linux_entry = process.linux_entry.load(Ordering::Acquire);
    bytes[kabi::LINUX_ENTRY_OFFSET..kabi::LINUX_ENTRY_OFFSET + 8]
        .copy_from_slice(&linux_entry.to_le_bytes());
    mm::write_phys(page, &bytes);
    Ok(Arc::new(Dispatcher {
        process: process.clone(),
        index,
        cpu,
        kind: DispatcherKind::Normal,
        class: AtomicUsize::new(kabi::DEFAULT_CLASS as usize),
        tickets: AtomicU64::new(kabi::DEFAULT_TICKETS),
        page,
        kernel_soft: AtomicU64::new(0),
        tick_period: AtomicU64::new(0),
        tick_next: AtomicU64::new(0),
        state: Mutex::new(DispatcherState::new(frame, RunState::Runnable)),
    }))
}

/// A user-mode frame starting at `rip` with stack `rsp` and `rdi`/`rsi` arguments.
pub fn user_frame(rip: u64, rsp: u64, rdi: u64, rsi: u64) -> TrapFrame {
    TrapFrame {
        rip,
        rsp,
        rdi,
        rsi,
        cs: u64::from(gdt::USER_CS),
        ss: u64::from(gdt::USER_DS),
        rflags: USER_RFLAGS,
        ..TrapFrame::default()
    }
}

/// Loads the program at `path` into a new process whose first dispatcher runs on `cpu`;
/// returns it (its dispatcher already queued on `cpu`).
pub fn spawn(
    path: &str,
    arg: u64,
    flags: u64,
    argv: Option<Vec<u8>>,
    parent: u64,
    cpu: usize,
) -> Result<Arc<Process>, SpawnError> {
    reserve_process().ok_or(SpawnError::TooManyProcesses)?;
    let spawned = spawn_reserved(path, arg, flags, argv, parent, cpu);
    if spawned.is_err() {
        release_process();
    }
    spawned
}

/// The process record of a new process (no address space, no dispatchers yet). It inherits
/// `identity` (a fork), or else leads its own group and session under its program's name.
fn new_process(
    parent: u64,
    name: &str,
    flags: u64,
    spawn_arg: u64,
    identity: Option<Identity>,
) -> Arc<Process> {
    let pid = NEXT_PID.fetch_add(1, Ordering::AcqRel);
    let identity = identity.unwrap_or_else(|| {
        // Its name is the last part of its path; its one argument, the path.
        let path = name.trim_start_matches('/');
        let short = path.rsplit('/').next().unwrap_or(path);
        let mut command: Vec<u8> = Vec::with_capacity(short.len() + path.len() + 3);
        command.extend_from_slice(short.as_bytes());
        command.push(0);
        command.push(b'/');
        command.extend_from_slice(path.as_bytes());
        command.push(0);
        command.truncate(kabi::COMMAND_MAX);
        Identity {
            group: pid,
            session: pid,
            command,
        }
    });
    Arc::new(Process {
        pid,
        parent,
        name: String::from(name),
        flags,
        spawn_arg,
        aspace: Mutex::new(None),
        dispatchers: Mutex::new(Vec::new()),
        ppc_dispatchers: Mutex::new(Vec::new()),
        ppc_entry: AtomicU64::new(0),
        linux_entry: AtomicU64::new(0),
        ppc_buffers: Mutex::new(Vec::new()),
        memobjs: Mutex::new(Vec::new()),
        exiting: AtomicBool::new(false),
        children: Mutex::new(Children::default()),
        started_ns: platform::tsc_to_ns(crate::arch::rdtsc()),
        identity: Mutex::new(identity),
    })
}

/// Maps the entry page (read-only, shared by every process) into `space`.
fn map_entry_page(space: &mut AddressSpace) -> Result<(), mm::aspace::AspaceError> {
    map_code_page(space, kabi::ENTRY_PAGE, ENTRY_FRAME.load(Ordering::Acquire))
}

/// Maps the kernel's code page `frame` read-only and executable at `va` in `space`, as a
/// region of its own.
fn map_code_page(
    space: &mut AddressSpace,
    va: u64,
    frame: u64,
) -> Result<(), mm::aspace::AspaceError> {
    let region = Region {
        start: va,
        end: va + FRAME_SIZE,
        prot: Prot::READ | Prot::EXEC,
        backing: Backing::Shared,
    };
    space.add_region(region)?;
    space.map_page(va, frame, region.prot, false)
}

/// Makes `process` (fully built, with dispatcher 0) live: its parent learns of it, it enters
/// the process table, and its dispatcher is queued.
fn start_process(process: &Arc<Process>, dispatcher: Arc<Dispatcher>) {
    if let Some(parent) = self::process(process.parent) {
        parent.children.lock().unreaped.insert(process.pid);
    }
    process.dispatchers.lock().push(dispatcher.clone());
    PROCESSES.lock().insert(process.pid, process.clone());
    crate::sched::make_runnable(dispatcher);
}

fn spawn_reserved(
    path: &str,
    arg: u64,
    flags: u64,
    argv: Option<Vec<u8>>,
    parent: u64,
    cpu: usize,
) -> Result<Arc<Process>, SpawnError> {
    let file = initrd_file(path).ok_or(SpawnError::NotFound)?;
    let bytes: &'static [u8] = mm::phys_slice(file.phys, file.len as usize);
    let image = elf::parse(bytes).map_err(SpawnError::NotExecutable)?;
    let bias = match image.kind {
        elf::Kind::Static => 0,
        elf::Kind::StaticPie => elf::PIE_BASE,
    };
    let mut space = AddressSpace::new()?;
    let loaded = load_segments(&mut space, &image, file, bias);
    if let Err(e) = loaded {
        space.destroy();
        return Err(e);
    }
    let stack = Region {
        start: kabi::MAIN_STACK_TOP - kabi::MAIN_STACK_SIZE,
        end: kabi::MAIN_STACK_TOP,
        prot: Prot::READ | Prot::WRITE,
        backing: Backing::Anonymous,
    };
    let mapped = space
        .add_region(stack)
        .and_then(|_| map_entry_page(&mut space));
    if mapped.is_err() {
        space.destroy();
        return Err(SpawnError::NoMemory);
    }
    // As at a function's entry: the stack is 16-byte aligned minus a return address.
    let mut start = (image.entry + bias, kabi::MAIN_STACK_TOP - 8);
    if flags & SpawnFlags::LINUX != 0 {
        match load_linux(&mut space, &image, bias, path, argv.as_deref()) {
            Ok(linux_start) => start = linux_start,
            Err(e) => {
                space.destroy();
                return Err(e);
            }
        }
    }
    let process = new_process(parent, path, flags, arg, None);
    let frame = user_frame(start.0, start.1, arg, kabi::dispatcher_page(0));
    let dispatcher = match new_dispatcher(&process, &mut space, 0, cpu, frame) {
        Ok(d) => d,
        Err(e) => {
            space.destroy();
            return Err(e);
        }
    };
    *process.aspace.lock() = Some(space);
    if ppc_buffer(&process, 0).is_err() {
        return Err(SpawnError::NoMemory);
    }
    start_process(&process, dispatcher);
    Ok(process)
}

/// `fork` for the dispatcher `me`, whose user registers are `frame` (see
/// [`kabi::Sys::Fork`]): a new process, child of `me`'s, with a copy-on-write copy of its
/// memory and one dispatcher on `me`'s CPU that resumes with `frame` and `rax` = 0.
pub fn fork(me: &Arc<Dispatcher>, frame: &TrapFrame) -> Result<Arc<Process>, kabi::Error> {
    // A PPC dispatcher runs calls for others: it has no process state of its own to fork.
    if me.kind != DispatcherKind::Normal {
        return Err(kabi::Error::Invalid);
    }
    reserve_process().ok_or(kabi::Error::Again)?;
    let forked = fork_reserved(me, frame);
    if forked.is_err() {
        release_process();
    }
    forked
}

fn fork_reserved(me: &Arc<Dispatcher>, frame: &TrapFrame) -> Result<Arc<Process>, kabi::Error> {
    let parent = &me.process;
    let forked = {
        let mut guard = parent.aspace.lock();
        guard.as_mut().ok_or(kabi::Error::NotFound)?.fork()
    };
    // The parent's pages are now read-only (shared with the child) even if the fork failed:
    // its other CPUs must drop their writable translations before the child can run.
    crate::tlb::finish_change(parent, kabi::USER_START..mm::aspace::FORK_END, &[]);
    let (mut space, _stats) = forked?;
    if let Err(e) = map_entry_page(&mut space) {
        space.destroy();
        return Err(e.into());
    }
    let identity = parent.identity.lock().clone();
    let process = new_process(
        parent.pid,
        &parent.name,
        parent.flags,
        parent.spawn_arg,
        Some(identity),
    );
    process.linux_entry.store(
        parent.linux_entry.load(Ordering::Acquire),
        Ordering::Release,
    );
    // Memory objects stay mapped in the child, so it holds them too.
    *process.memobjs.lock() = parent.memobjs.lock().clone();
    let mut child_frame = *frame;
    child_frame.rax = 0;
    let dispatcher = match new_dispatcher(&process, &mut space, 0, me.cpu, child_frame) {
        Ok(d) => d,
        Err(e) => {
            space.destroy();
            return Err(e.into());
        }
    };
    {
        // The caller's registers that are not in the trap frame are live on this CPU.
        let mut state = dispatcher.state.lock();
        state.fs_base = user::fs_base();
        state.fpu.save();
    }
    *process.aspace.lock() = Some(space);
    ppc_buffer(&process, 0)?;
    start_process(&process, dispatcher);
    Ok(process)
}

/// Bytes of the initial stack a Linux program may get (arguments, environment, auxv).
const LINUX_STACK_MAX: usize = 64 * 1024;
/// The environment a Linux program starts with.
const LINUX_ENV: [&[u8]; 3] = [b"PATH=/bin", b"HOME=/", b"TERM=vt100"];

/// For a Linux program (`image`, loaded with `bias`): loads the Linux personality beside it and
/// writes the initial stack Linux gives (argv = the path, a small environment, auxv). Returns
/// where the process starts: the personality's entry, which sets itself up and jumps to the
/// program's entry (`AT_ENTRY`) with that stack, like an ELF interpreter.
fn load_linux(
    space: &mut AddressSpace,
    image: &elf::ElfImage,
    bias: u64,
    path: &str,
    argv: Option<&[u8]>,
) -> Result<(u64, u64), SpawnError> {
    let file = initrd_file(kabi::LINUX_PERSONALITY).ok_or(SpawnError::NoPersonality)?;
    let bytes: &'static [u8] = mm::phys_slice(file.phys, file.len as usize);
    let personality = elf::parse(bytes).map_err(SpawnError::NotExecutable)?;
    let (lo, hi) = personality.span();
    let area = kabi::LINUX_PERSONALITY_AREA;
    if personality.kind != elf::Kind::Static || lo < area.start || hi > area.end {
        return Err(SpawnError::NotExecutable(elf::ElfError::BadLayout));
    }
    load_segments(space, &personality, file, 0)?;
    let info = auxv::ProgramInfo {
        phdr: image.phdr_vaddr + bias,
        phent: u64::from(image.phent),
        phnum: u64::from(image.phnum),
        entry: image.entry + bias,
        hwcap: u64::from(crate::arch::cpuid(1, 0).edx),
        random: startup_random(),
    };
    let argv0 = alloc::format!("/{}", path.trim_start_matches('/'));
    let args: Vec<&[u8]> = match argv.and_then(kabi::split_linux_args) {
        Some(args) => args,
        None => alloc::vec![argv0.as_bytes()],
    };
    let stack = auxv::build_initial_stack(
        kabi::MAIN_STACK_TOP,
        LINUX_STACK_MAX,
        argv0.as_bytes(),
        &args,
        &LINUX_ENV,
        &info,
    )
    .map_err(|_| SpawnError::NoMemory)?;
    space.write_user(stack.sp, &stack.bytes)?;
    Ok((personality.entry, stack.sp))
}

/// 16 bytes for `AT_RANDOM` (seeds the program's stack protector and hash keys): the TSC
/// stirred by splitmix64. Not a cryptographic source; virtio-rng will feed a real one.
fn startup_random() -> [u8; 16] {
    let mut state = crate::arch::rdtsc();
    let mut out = [0u8; 16];
    for chunk in out.chunks_exact_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// Maps every loadable segment: pages holding file bytes get frames now (filled by one bulk
/// copy from the initramfs), the rest of each segment is demand-zero.
fn load_segments(
    space: &mut AddressSpace,
    image: &elf::ElfImage,
    file: &InitrdFile,
    bias: u64,
) -> Result<(), SpawnError> {
    let mut batch = MemBatch::new();
    for seg in &image.segments {
        let (first, end) = seg.page_span();
        let (first, end) = (first + bias, end + bias);
        let mut prot = 0;
        if seg.perms.read {
            prot |= Prot::READ;
        }
        if seg.perms.write {
            prot |= Prot::WRITE;
        }
        if seg.perms.exec {
            prot |= Prot::EXEC | Prot::READ;
        }
        let region = Region {
            start: first,
            end,
            prot,
            backing: Backing::Anonymous,
        };
        space
            .add_region(region)
            .map_err(|_| SpawnError::NotExecutable(elf::ElfError::BadLayout))?;
        let data_start = seg.vaddr + bias;
        let data_end = data_start + seg.file_size;
        let mut page = first;
        while page < data_end {
            let frame = mm::alloc_frame().ok_or(SpawnError::NoMemory)?;
            space.map_page(page, frame, prot, true)?;
            let from = page.max(data_start);
            let to = (page + FRAME_SIZE).min(data_end);
            if from < to {
                let file_offset = seg.file_offset + (from - data_start);
                batch.copy(frame + (from - page), file.phys + file_offset, to - from);
            }
            page += FRAME_SIZE;
        }
    }
    batch.run().map_err(|_| SpawnError::NoMemory)
}

/// Creates another normal dispatcher of `process` on `cpu`, starting at `rip` with `rsp`
/// and `arg`. Returns its index.
pub fn create_dispatcher(
    process: &Arc<Process>,
    cpu: usize,
    rip: u64,
    rsp: u64,
    arg: u64,
) -> Result<usize, kabi::Error> {
    if cpu >= crate::smp::online()
        || !kabi::user_range_ok(rip, 1)
        || !kabi::user_range_ok(rsp - 1, 1)
    {
        return Err(kabi::Error::Invalid);
    }
    let mut dispatchers = process.dispatchers.lock();
    let index = dispatchers.len();
    if index >= kabi::MAX_DISPATCHERS {
        return Err(kabi::Error::Busy);
    }
    let mut space_guard = process.aspace.lock();
    let space = space_guard.as_mut().ok_or(kabi::Error::NotFound)?;
    let frame = user_frame(rip, rsp, arg, kabi::dispatcher_page(index));
    let d = new_dispatcher(process, space, index, cpu, frame).map_err(kabi::Error::from)?;
    drop(space_guard);
    ppc_buffer(process, index)?;
    dispatchers.push(d.clone());
    drop(dispatchers);
    crate::sched::make_runnable(d);
    Ok(index)
}

/// The PPC dispatcher of server `process` on `cpu`, created on first use (with its stack).
pub fn ppc_dispatcher(process: &Arc<Process>, cpu: usize) -> Result<Arc<Dispatcher>, kabi::Error> {
    let mut list = process.ppc_dispatchers.lock();
    if list.len() <= cpu {
        list.resize(cpu + 1, None);
    }
    if let Some(d) = &list[cpu] {
        return Ok(d.clone());
    }
    // Its nested buffer (what its calls to other servers carry) exists before its first call,
    // so a handler may fill it at once.
    ppc_buffer(process, kabi::MAX_DISPATCHERS + cpu)?;
    let top = kabi::ppc_stack_top(cpu);
    let window = kabi::ppc_window(cpu);
    {
        let mut guard = process.aspace.lock();
        let space = guard.as_mut().ok_or(kabi::Error::NotFound)?;
        space.add_region(Region {
            start: top - kabi::PPC_STACK_SIZE,
            end: top,
            prot: Prot::READ | Prot::WRITE,
            backing: Backing::Anonymous,
        })?;
        space.add_region(Region {
            start: window,
            end: window + FRAME_SIZE,
            prot: Prot::READ | Prot::WRITE,
            backing: Backing::Shared,
        })?;
    }
    let d = Arc::new(Dispatcher {
        process: process.clone(),
        index: cpu,
        cpu,
        kind: DispatcherKind::Ppc,
        class: AtomicUsize::new(kabi::DEFAULT_CLASS as usize),
        tickets: AtomicU64::new(kabi::DEFAULT_TICKETS),
        page: 0,
        kernel_soft: AtomicU64::new(0),
        tick_period: AtomicU64::new(0),
        tick_next: AtomicU64::new(0),
        state: Mutex::new(DispatcherState::new(TrapFrame::default(), RunState::Idle)),
    });
    list[cpu] = Some(d.clone());
    Ok(d)
}

/// `dispatcher_schedule(index, class, tickets)` for `process` (see
/// [`kabi::Sys::DispatcherSchedule`]).
pub fn set_schedule(
    process: &Arc<Process>,
    index: u64,
    class: u64,
    tickets: u64,
) -> Result<(), kabi::Error> {
    if class >= kabi::SCHED_CLASSES || !(1..=kabi::MAX_TICKETS).contains(&tickets) {
        return Err(kabi::Error::Invalid);
    }
    if class == 0 && process.flags & kabi::SpawnFlags::DEVICES == 0 {
        return Err(kabi::Error::NotPermitted);
    }
    let d = usize::try_from(index)
        .ok()
        .and_then(|i| process.dispatchers.lock().get(i).cloned())
        .ok_or(kabi::Error::NotFound)?;
    d.class.store(class as usize, Ordering::Relaxed);
    d.tickets.store(tickets, Ordering::Relaxed);
    crate::sched::reclassed(&d);
    Ok(())
}

/// The PPC buffer frame `d`'s calls carry: its own for a normal dispatcher, its CPU's nested
/// buffer for a PPC one (see [`ppc_buffer`]).
pub fn ppc_buffer_of(d: &Dispatcher) -> Result<u64, kabi::Error> {
    match d.kind {
        DispatcherKind::Normal => ppc_buffer(&d.process, d.index),
        DispatcherKind::Ppc => ppc_buffer(&d.process, kabi::MAX_DISPATCHERS + d.cpu),
    }
}

/// The PPC buffer frame in `process`'s buffer slot `slot`, allocated and mapped on first use:
/// slots below [`kabi::MAX_DISPATCHERS`] are the dispatchers' buffers ([`kabi::ppc_buffer`]),
/// slot `MAX_DISPATCHERS + c` is the nested buffer of its PPC handler on CPU `c`
/// ([`kabi::ppc_nested_buffer`]).
pub fn ppc_buffer(process: &Arc<Process>, slot: usize) -> Result<u64, kabi::Error> {
    let va = match slot.checked_sub(kabi::MAX_DISPATCHERS) {
        None => kabi::ppc_buffer(slot),
        Some(cpu) if cpu < percpu::MAX_CPUS => kabi::ppc_nested_buffer(cpu),
        Some(_) => return Err(kabi::Error::Invalid),
    };
    let mut buffers = process.ppc_buffers.lock();
    if buffers.len() <= slot {
        buffers.resize(slot + 1, 0);
    }
    if buffers[slot] != 0 {
        return Ok(buffers[slot]);
    }
    let frame = mm::alloc_frame().ok_or(kabi::Error::NoMemory)?;
    let mut guard = process.aspace.lock();
    let space = guard.as_mut().ok_or(kabi::Error::NotFound)?;
    let prot = Prot::READ | Prot::WRITE;
    let mapped = space
        .add_region(Region {
            start: va,
            end: va + FRAME_SIZE,
            prot,
            backing: Backing::Shared,
        })
        .and_then(|_| space.map_page(va, frame, prot, false));
    if let Err(e) = mapped {
        mm::free_zeroed(&[frame]);
        return Err(e.into());
    }
    buffers[slot] = frame;
    Ok(frame)
}

/// Ends `process` with `status`: its dispatchers die (those running elsewhere are told to
/// reschedule), its waiters wake, it leaves the process table. When init exits the VM shuts
/// down with init's status. The address space goes when the last reference does.
pub fn exit(process: &Arc<Process>, status: i64) {
    if process.exiting.swap(true, Ordering::AcqRel) {
        return;
    }
    crate::ppc::unexport(process);
    // Its devices are reset (no more DMA into its memory objects, freed with it) and their
    // interrupts unbound before anything of it goes.
    crate::device::release(process.pid);
    let dispatchers: Vec<Arc<Dispatcher>> = core::mem::take(&mut *process.dispatchers.lock());
    let ppc: Vec<Arc<Dispatcher>> = core::mem::take(&mut *process.ppc_dispatchers.lock())
        .into_iter()
        .flatten()
        .collect();
    for d in dispatchers.iter().chain(ppc.iter()) {
        crate::sched::kill(d);
    }
    drop(dispatchers);
    drop(ppc);
    crate::memobj::pager_exited(process);
    PROCESSES.lock().remove(&process.pid);
    release_process();
    // Its own children's statuses are dropped (nobody can wait for them now), and with them
    // the references to its waiting dispatchers.
    drop(core::mem::take(&mut *process.children.lock()));
    // The status goes to a parent's dispatcher waiting for it, or is kept for a later `wait`;
    // both under the parent's children lock, which `wait_for` also takes (no lost wake-up). An
    // orphan's status is dropped.
    if let Some(parent) = self::process(process.parent) {
        // A Linux parent learns of it as SIGCHLD; native programs wait for their children.
        let first = (parent.flags & kabi::SpawnFlags::LINUX != 0)
            .then(|| parent.dispatchers.lock().first().cloned())
            .flatten();
        let mut children = parent.children.lock();
        let waiter = children
            .waiters
            .iter()
            .position(|&(_, want)| want == process.pid || want == kabi::WAIT_ANY);
        match waiter {
            Some(at) => {
                let (w, _) = children.waiters.swap_remove(at);
                children.unreaped.remove(&process.pid);
                drop(children);
                crate::sched::wake(&w, BlockReason::Child, status as u64, Some(process.pid));
            }
            None => {
                children.exited.push_back((process.pid, status));
                drop(children);
            }
        }
        // Only now that the status is there: a parent woken by the bit that asks at once
        // finds it (posted first, a parent on another CPU could ask, find nothing, and sleep
        // through the bit it had already taken).
        if let Some(d) = first {
            crate::sched::post_soft_interrupt(&d, kabi::SOFT_INTERRUPT_CHILD);
        }
    }
    if process.pid == INIT_PID {
        // A Linux init ended by a signal reports 128 + signal, as a shell would.
        let status = if status & kabi::EXIT_SIGNALED != 0 {
            128 + (status & 0x7f)
        } else {
            status
        };
        crate::kprintln!("init ({}) exited with status {}", process.name, status);
        platform::shutdown((status as u64 & 0xff) as u32);
    }
}

/// `wait(pid, flags)` for `waiter` (a dispatcher of the parent; `pid` may be
/// [`kabi::WAIT_ANY`]): `(pid, status)` of a matching child that already exited (reaped now),
/// or `None` after registering the waiter (the caller then blocks it). With `no_hang`, `Again`
/// instead of waiting.
pub fn wait_for(
    waiter: &Arc<Dispatcher>,
    pid: u64,
    no_hang: bool,
) -> Result<Option<(u64, i64)>, kabi::Error> {
    let mut children = waiter.process.children.lock();
    if waiter.process.exiting.load(Ordering::Acquire) {
        // Another dispatcher is ending the process and has emptied (or is about to empty)
        // this list: registering now would keep the dispatcher, and so the process, alive.
        return Err(kabi::Error::NotFound);
    }
    let matches = |p: u64| pid == kabi::WAIT_ANY || p == pid;
    if let Some(at) = children.exited.iter().position(|&(p, _)| matches(p)) {
        if let Some((p, status)) = children.exited.remove(at) {
            children.unreaped.remove(&p);
            return Ok(Some((p, status)));
        }
    }
    let running = if pid == kabi::WAIT_ANY {
        !children.unreaped.is_empty()
    } else {
        children.unreaped.contains(&pid)
    };
    if !running {
        return Err(kabi::Error::NoChild);
    }
    if no_hang {
        return Err(kabi::Error::Again);
    }
    children.waiters.push((waiter.clone(), pid));
    Ok(None)
}

/// `process_group(pid, group, session)` from `me`'s process (see [`kabi::Sys::ProcessGroup`]).
pub fn set_group(me: &Arc<Process>, pid: u64, group: u64, session: u64) -> Result<(), kabi::Error> {
    let target = if pid == 0 || pid == me.pid {
        me.clone()
    } else {
        let child = process(pid).ok_or(kabi::Error::NotFound)?;
        if child.parent != me.pid {
            return Err(kabi::Error::NotFound);
        }
        child
    };
    let mut identity = target.identity.lock();
    if group != 0 {
        identity.group = group;
    }
    if session != 0 {
        identity.session = session;
    }
    Ok(())
}

/// `process_command(ptr, len)` from `me`'s process (see [`kabi::Sys::ProcessCommand`]).
pub fn set_command(me: &Arc<Process>, ptr: u64, len: u64) -> Result<(), kabi::Error> {
    let kept = usize::try_from(len)
        .map_err(|_| kabi::Error::Invalid)?
        .min(kabi::COMMAND_MAX);
    let mut command = alloc::vec![0u8; kept];
    me.aspace
        .lock()
        .as_mut()
        .ok_or(kabi::Error::Fault)?
        .read_user(ptr, &mut command)?;
    if !command.contains(&0) {
        return Err(kabi::Error::Invalid);
    }
    me.identity.lock().command = command;
    Ok(())
}

/// `process_list(ptr, max)` for `me`'s process (see [`kabi::Sys::ProcessList`]).
pub fn list(me: &Arc<Process>, ptr: u64, max: u64) -> Result<u64, kabi::Error> {
    // Copied out first: a dispatcher's lock is never taken under the table's.
    let all: Vec<Arc<Process>> = PROCESSES.lock().values().cloned().collect();
    let n = all.len().min(usize::try_from(max).unwrap_or(usize::MAX));
    if n > 0 {
        let record = core::mem::size_of::<kabi::ProcessDesc>();
        let mut bytes = Vec::with_capacity(n * record);
        for p in &all[..n] {
            let identity = p.identity.lock().clone();
            let dispatchers: Vec<Arc<Dispatcher>> = p.dispatchers.lock().clone();
            let running = dispatchers
                .iter()
                .any(|d| matches!(d.state.lock().run, RunState::Running | RunState::Runnable));
            let state = if p.exiting.load(Ordering::Acquire) {
                kabi::ProcessState::Exiting
            } else if running {
                kabi::ProcessState::Running
            } else {
                kabi::ProcessState::Waiting
            };
            let words = [
                p.pid,
                p.parent,
                identity.group,
                identity.session,
                state as u64,
                p.started_ns,
                p.flags,
                dispatchers.len() as u64,
                identity.command.len() as u64,
            ];
            for word in words {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            let mut command = [0u8; kabi::COMMAND_MAX];
            command[..identity.command.len()].copy_from_slice(&identity.command);
            bytes.extend_from_slice(&command);
        }
        me.aspace
            .lock()
            .as_mut()
            .ok_or(kabi::Error::Fault)?
            .write_user(ptr, &bytes)?;
    }
    Ok(all.len() as u64)
}
