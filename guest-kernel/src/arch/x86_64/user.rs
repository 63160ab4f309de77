//! What user mode needs from the CPU: the `syscall` MSRs, no-execute, CR3 and TLB control,
//! the FS base, and the jump from the scheduler into user mode.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

use super::{cpuid, idt::TrapFrame, rdmsr, wrmsr};

const EFER: u32 = 0xc000_0080;
const STAR: u32 = 0xc000_0081;
const LSTAR: u32 = 0xc000_0082;
const SFMASK: u32 = 0xc000_0084;
const FS_BASE: u32 = 0xc000_0100;
const KERNEL_GS_BASE: u32 = 0xc000_0102;
const EFER_SCE: u64 = 1;
const EFER_NXE: u64 = 1 << 11;

static NX: AtomicBool = AtomicBool::new(false);

/// Sets up this CPU for user mode: `syscall` entry, no-execute pages when the CPU has them,
/// and an empty user GS base (swapped in on every return to user mode).
pub fn init_cpu() {
    let nx = cpuid(0x8000_0001, 0).edx & (1 << 20) != 0;
    let mut efer = rdmsr(EFER) | EFER_SCE;
    if nx {
        efer |= EFER_NXE;
    }
    wrmsr(EFER, efer);
    NX.store(nx, Ordering::Relaxed);
    // SYSCALL loads CS = STAR[47:32] (kernel code) and SS = +8 (kernel data); SYSRET is not
    // used (every return is an iretq), but its base is set consistently with the GDT.
    let star =
        (u64::from(super::gdt::KERNEL_CS) << 32) | (u64::from(super::gdt::USER_DS - 8) << 48);
    wrmsr(STAR, star);
    wrmsr(LSTAR, super::idt::syscall_entry_address());
    // IF, TF, DF, AC and NT cleared on entry.
    wrmsr(SFMASK, 0x4_7700);
    wrmsr(KERNEL_GS_BASE, 0);
    enable_sse_for_user();
    enable_fsgsbase_for_user();
}

/// Lets user code set its own FS base with `wrfsbase` (the Linux personality's
/// `arch_prctl(ARCH_SET_FS)`, no kernel entry) where the CPU offers FSGSBASE. An emulating KVM
/// that hides the feature from CPUID runs ring 3 natively, where it works regardless.
fn enable_fsgsbase_for_user() {
    if cpuid(7, 0).ebx & 1 == 0 {
        return;
    }
    // SAFETY: CR4.FSGSBASE only enables the RD/WR FS/GS base instructions; the kernel finds
    // its own GS base by `swapgs` decided from the saved CS, never from the user's GS value.
    unsafe {
        asm!(
            "mov {tmp}, cr4",
            "or {tmp}, 0x10000",
            "mov cr4, {tmp}",
            tmp = out(reg) _,
            options(nostack)
        )
    }
}

/// Lets user code use SSE (the kernel itself is built without it): CR0.EM off, CR0.MP on,
/// CR4.OSFXSR and CR4.OSXMMEXCPT on. Each dispatcher keeps its own register state
/// ([`FpuState`]), switched with the dispatchers.
fn enable_sse_for_user() {
    // SAFETY: these bits only enable SSE instructions and their exceptions; the kernel never
    // executes SSE code, so nothing it relies on changes.
    unsafe {
        asm!(
            "mov {tmp}, cr0",
            "and {tmp}, ~4",
            "or {tmp}, 2",
            "mov cr0, {tmp}",
            "mov {tmp}, cr4",
            "or {tmp}, 0x600",
            "mov cr4, {tmp}",
            tmp = out(reg) _,
            options(nostack)
        )
    }
}

/// A dispatcher's x87 and SSE registers in the FXSAVE layout (512 bytes, 16-byte aligned).
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState([u8; 512]);

impl FpuState {
    /// The state a new dispatcher starts with: x87 control word 0x37f and MXCSR 0x1f80 (all
    /// exceptions masked, round to nearest; the SysV defaults), every register zero.
    pub fn initial() -> FpuState {
        let mut bytes = [0u8; 512];
        bytes[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        bytes[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        FpuState(bytes)
    }

    /// Stores this CPU's x87/SSE registers here.
    #[inline(always)]
    pub fn save(&mut self) {
        // SAFETY: FXSAVE writes exactly 512 bytes at a 16-byte-aligned address, which `self`
        // is (repr align 16, size 512); CR4.OSFXSR is set on every CPU before user code runs.
        unsafe {
            asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack, preserves_flags))
        }
    }

    /// Loads this CPU's x87/SSE registers from here.
    #[inline(always)]
    pub fn restore(&self) {
        // SAFETY: FXRSTOR reads 512 aligned bytes that FXSAVE wrote or `initial` built (MXCSR
        // without reserved bits, so it cannot fault); the kernel itself uses no x87/SSE state.
        unsafe {
            asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, preserves_flags))
        }
    }
}

/// Points this CPU's LSTAR (where `syscall` goes) at `entry`, code in ring 3: for platforms
/// where `syscall` stays in ring 3 (kvm_pvm). There `syscall` still applies SFMASK to the
/// virtual interrupt flag although `pushfq` shows it set, and interrupts (the timer among
/// them) then stay masked until the next kernel entry, so the mask keeps IF.
pub fn set_lstar(entry: u64) {
    wrmsr(LSTAR, entry);
    // TF, DF, AC and NT cleared; IF kept.
    wrmsr(SFMASK, 0x4_7500);
}

/// Whether page-table entries may carry the no-execute bit.
pub fn no_execute_enabled() -> bool {
    NX.load(Ordering::Relaxed)
}

/// Invalidates the TLB entry of `va` on this CPU.
#[inline(always)]
pub fn invlpg(va: u64) {
    // SAFETY: invalidating a TLB entry only costs a later page walk.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

/// Loads `root` (a page-table root owned by a live address space, with the kernel's half
/// mapped) into CR3.
#[inline(always)]
pub fn load_cr3(root: u64) {
    // SAFETY: every root the kernel loads maps the kernel half identically (address spaces
    // copy it from the boot tables), so the code and data in use stay mapped.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) }
}

/// The user FS base of this CPU.
pub fn fs_base() -> u64 {
    rdmsr(FS_BASE)
}

/// Sets the user FS base of this CPU.
pub fn set_fs_base(value: u64) {
    wrmsr(FS_BASE, value);
}

/// Returns to user mode with the registers in `frame`, which must be the trap frame slot at
/// the top of this CPU's kernel stack (so the stack is empty again once in user mode).
pub fn enter_user(frame: &mut TrapFrame) -> ! {
    debug_assert!(frame.cs & 3 == 3);
    // SAFETY: `frame` is a complete user-mode frame (user CS/SS, canonical RIP/RSP checked by
    // the callers) at the top of the kernel stack; `k42_trap_exit` pops it and irets. Nothing
    // on the stack below it is needed any more.
    unsafe {
        asm!(
            "mov rsp, {}",
            "jmp k42_trap_exit",
            in(reg) frame as *mut TrapFrame,
            options(noreturn)
        )
    }
}

/// Fills the trap-frame slot at the top of the kernel stack ending at `stack_top` with `fill`
/// and enters user mode with it. Called on that stack, below the slot (see [`run_on_stack`]).
pub fn enter_user_at(stack_top: u64, fill: impl FnOnce(&mut TrapFrame)) -> ! {
    let slot = (stack_top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
    // SAFETY: the slot is the top of this CPU's kernel stack; the caller runs below it (its
    // stack was entered through `run_on_stack`, which leaves the slot free), so nothing else
    // uses that memory.
    let frame = unsafe { &mut *slot };
    *frame = TrapFrame::default();
    fill(frame);
    enter_user(frame)
}

/// Switches to the (empty) kernel stack ending at `stack_top` and runs `f` on it; whatever was
/// on the current stack is abandoned.
pub fn run_on_stack(stack_top: u64, f: extern "C" fn() -> !) -> ! {
    // SAFETY: `stack_top` is the top of this CPU's kernel stack; callers have saved all state
    // they need from the current stack. The stack is 16-byte aligned before the call.
    unsafe {
        asm!(
            "mov rsp, {top}",
            "sub rsp, {gap}",
            "call {f}",
            "ud2",
            top = in(reg) stack_top,
            gap = const core::mem::size_of::<TrapFrame>() + 64,
            f = in(reg) f,
            options(noreturn)
        )
    }
}

core::arch::global_asm!(
    r#"
    .global k42_probe_enter
k42_probe_enter:
    mov [rsi], rsp
    mov [rsi + 8], rbx
    mov [rsi + 16], rbp
    mov [rsi + 24], r12
    mov [rsi + 32], r13
    mov [rsi + 40], r14
    mov [rsi + 48], r15
    mov rsp, rdi
    jmp k42_trap_exit

    .global k42_probe_resume
k42_probe_resume:
    mov rsp, [rdi]
    mov rbx, [rdi + 8]
    mov rbp, [rdi + 16]
    mov r12, [rdi + 24]
    mov r13, [rdi + 32]
    mov r14, [rdi + 40]
    mov r15, [rdi + 48]
    ret
    "#
);

extern "C" {
    fn k42_probe_enter(frame: *mut TrapFrame, save: *mut [u64; 7]);
    fn k42_probe_resume(save: *const [u64; 7]) -> !;
}

/// Kernel registers saved while the boot probe runs in user mode (boot CPU only).
struct ProbeContext(core::cell::UnsafeCell<[u64; 7]>);

// SAFETY: used by the boot CPU alone, during the probe, with interrupts disabled.
unsafe impl Sync for ProbeContext {}

static PROBE_CONTEXT: ProbeContext = ProbeContext(core::cell::UnsafeCell::new([0; 7]));

/// Runs user code described by `frame` until a trap handler calls [`probe_return`]; then
/// returns here. Only for the boot probe (boot CPU, interrupts disabled).
pub fn probe_run(frame: &mut TrapFrame) {
    // SAFETY: `k42_probe_enter` saves the callee-saved registers and the stack pointer in the
    // probe context and irets to `frame`; `probe_return` restores them, so control comes back
    // here as from an ordinary call. Only the boot CPU probes, once.
    unsafe { k42_probe_enter(frame, PROBE_CONTEXT.0.get()) }
}

/// From a trap handler during [`probe_run`]: abandons the trap and resumes the prober.
pub fn probe_return() -> ! {
    // SAFETY: the context was filled by `probe_run`, whose stack frame is still live (the
    // probe's traps run on the kernel stack of TSS.RSP0, a different stack).
    unsafe { k42_probe_resume(PROBE_CONTEXT.0.get()) }
}
