//! Per-CPU data, reached through the GS base: `gs:[0]` holds a pointer to the CPU's own block.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::arch::{self, gdt::CpuTables};
use crate::mm::heap::alloc_stack;

/// Most CPUs the kernel supports.
pub const MAX_CPUS: usize = 64;
/// Kernel stack size of every CPU (boot code, then traps and the scheduler loop).
pub const KERNEL_STACK_SIZE: usize = 32 * 1024;
/// Size of each IST stack (double fault, NMI, machine check).
const IST_STACK_SIZE: usize = 8 * 1024;

/// Work one CPU asks another to do (see `smp::run_on`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Nothing pending.
    None = 0,
    /// Arm a one-shot timer and wait for its interrupt.
    TimerTest = 1,
    /// Check this CPU's per-CPU block, APIC ID and CPUID topology.
    PerCpuCheck = 2,
    /// Allocate and free frames through this CPU's cache.
    FrameTest = 3,
    /// Call the adaptive counter until told to stop (hot-swap stress).
    CounterHammer = 4,
    /// Run the counter benchmarks on this CPU.
    CounterBench = 5,
}

/// One CPU's private data. `#[repr(C)]` with the self pointer first: `gs:[0]`.
#[repr(C, align(64))]
pub struct PerCpu {
    self_ptr: u64,
    /// Scratch slot for the user stack pointer on a `syscall` entry (read by the entry stub).
    pub user_rsp_scratch: u64,
    /// Top of this CPU's kernel stack: TSS.RSP0, and the stack of its scheduler loop.
    pub kernel_stack_top: u64,
    /// Index of this CPU (0 is the boot CPU; the order of the ACPI MADT).
    pub index: usize,
    /// x2APIC ID.
    pub apic_id: u32,
    /// Descriptor tables, taken by the CPU itself when it loads them.
    tables: Mutex<Option<&'static mut CpuTables>>,
    /// Calls this CPU made in the current hot-swap stress run.
    pub work_done: AtomicU64,
    /// Set once this CPU runs its idle loop.
    pub online: AtomicBool,
    /// Local APIC timer interrupts taken.
    pub timer_interrupts: AtomicU64,
    /// Ping IPIs received.
    pub pings: AtomicU64,
    /// Wake IPIs received.
    pub wakes: AtomicU64,
    /// x2APIC ID to answer a ping to.
    pub reply_to: AtomicU32,
    /// Index of the CPU to credit a ping answer to.
    pub reply_to_index: AtomicU32,
    /// Pings answered to this CPU (counted exactly; wake IPIs may coalesce).
    pub ping_answers: AtomicU64,
    /// Pending [`Command`].
    pub command: AtomicU32,
    /// Result of the last command (0 = success, else a command-specific code).
    pub command_result: AtomicU32,
    /// Incremented when a command completes.
    pub commands_done: AtomicU64,
    /// The page-table root this CPU has loaded (`crate::tlb`).
    pub loaded_root: AtomicU64,
    /// Set by a CPU that needs this one to flush its TLB (`crate::tlb::shoot_down`).
    pub tlb_flush_wanted: AtomicBool,
    /// The pages to flush: from here (`u64::MAX`: none asked)...
    pub tlb_flush_start: AtomicU64,
    /// ...to here.
    pub tlb_flush_end: AtomicU64,
    /// TLB flushes this CPU has done at another's request.
    pub tlb_flushes: AtomicU64,
}

static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static CPU_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Creates the per-CPU block of CPU `index` (stacks, descriptor tables) and registers it.
pub fn create(index: usize, apic_id: u32) -> &'static PerCpu {
    assert!(index < MAX_CPUS, "CPU index {index} beyond MAX_CPUS");
    let ist = [
        alloc_stack(IST_STACK_SIZE),
        alloc_stack(IST_STACK_SIZE),
        alloc_stack(IST_STACK_SIZE),
    ];
    let stack_top = alloc_stack(KERNEL_STACK_SIZE);
    let tables: &'static mut CpuTables = Box::leak(Box::new(CpuTables::new(ist, stack_top)));
    let cpu: &'static mut PerCpu = Box::leak(Box::new(PerCpu {
        self_ptr: 0,
        user_rsp_scratch: 0,
        kernel_stack_top: stack_top,
        index,
        apic_id,
        tables: Mutex::new(Some(tables)),
        work_done: AtomicU64::new(0),
        online: AtomicBool::new(false),
        timer_interrupts: AtomicU64::new(0),
        pings: AtomicU64::new(0),
        wakes: AtomicU64::new(0),
        reply_to: AtomicU32::new(0),
        reply_to_index: AtomicU32::new(0),
        ping_answers: AtomicU64::new(0),
        command: AtomicU32::new(Command::None as u32),
        command_result: AtomicU32::new(0),
        commands_done: AtomicU64::new(0),
        loaded_root: AtomicU64::new(0),
        tlb_flush_wanted: AtomicBool::new(false),
        tlb_flush_start: AtomicU64::new(u64::MAX),
        tlb_flush_end: AtomicU64::new(0),
        tlb_flushes: AtomicU64::new(0),
    }));
    cpu.self_ptr = cpu as *const PerCpu as u64;
    CPUS[index].store(cpu, Ordering::Release);
    CPU_COUNT.fetch_max(index + 1, Ordering::AcqRel);
    cpu
}

/// Makes `cpu` the calling CPU's own block: loads its GDT/TSS and the IDT, sets the GS base.
pub fn install(cpu: &'static PerCpu) {
    let tables = cpu
        .tables
        .lock()
        .take()
        .expect("per-CPU tables are installed once");
    tables.load();
    arch::idt::load();
    arch::set_gs_base(cpu.self_ptr);
    arch::user::init_cpu();
}

/// Index of the calling CPU, in one GS-relative load. Only after `install` on this CPU.
#[inline(always)]
pub fn index() -> usize {
    arch::gs_word::<{ core::mem::offset_of!(PerCpu, index) }>() as usize
}

/// The calling CPU's block. Panics if called before `install` on this CPU.
pub fn current() -> &'static PerCpu {
    try_current().expect("per-CPU data used before it was installed")
}

/// The calling CPU's block, or `None` this early in boot.
pub fn try_current() -> Option<&'static PerCpu> {
    if CPU_COUNT.load(Ordering::Acquire) == 0 || arch::rdmsr(0xc000_0101) == 0 {
        return None;
    }
    let ptr = arch::gs_self_pointer() as *const PerCpu;
    // SAFETY: GS base points at a leaked ('static) PerCpu whose first word is its own address,
    // installed by `install`; the blocks are never freed.
    unsafe { ptr.as_ref() }
}

/// Index of the calling CPU (0 before per-CPU data exists).
pub fn current_index() -> usize {
    try_current().map_or(0, |c| c.index)
}

/// CPU `index`'s block, if it was created.
pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    let ptr = CPUS.get(index)?.load(Ordering::Acquire);
    // SAFETY: non-null entries point at leaked PerCpu blocks (see `create`).
    unsafe { ptr.as_ref() }
}

/// Number of CPU blocks created.
pub fn count() -> usize {
    CPU_COUNT.load(Ordering::Acquire)
}

impl PerCpu {
    /// Address of this block (what `gs:[0]` holds on its CPU).
    pub fn address(&self) -> u64 {
        self as *const PerCpu as u64
    }

    /// The self pointer stored in the block.
    pub fn self_pointer(&self) -> u64 {
        self.self_ptr
    }
}

/// The registered block at `address` (how a secondary CPU finds its own block from its entry
/// argument without trusting a raw pointer).
pub fn cpu_by_address(address: u64) -> Option<&'static PerCpu> {
    (0..count())
        .filter_map(cpu)
        .find(|c| c.address() == address)
}
