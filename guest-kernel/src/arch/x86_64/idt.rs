//! The IDT, the exception and interrupt entry stubs, and the saved-register frame.

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;

use super::gdt;

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector of the "ping" IPI (a CPU asks another to do something).
pub const PING_VECTOR: u8 = 0x21;
/// Vector of the "wake" IPI (a CPU reports back, or wakes a halted CPU).
pub const WAKE_VECTOR: u8 = 0x22;
/// Vector of the TLB shoot-down IPI (see `crate::tlb`).
pub const TLB_VECTOR: u8 = 0x23;
/// Vector of device interrupt line (GSI) 0; line `n` uses `DEVICE_VECTOR_BASE + n`.
pub const DEVICE_VECTOR_BASE: u8 = 0x30;
/// Device lines with a vector (the I/O APIC's pins).
pub const DEVICE_VECTORS: u8 = 24;
/// Spurious-interrupt vector of the local APIC.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Pseudo-vector of a trap frame built by the `syscall` entry (not an IDT vector).
pub const SYSCALL_VECTOR: u64 = 0x100;

/// Registers saved on every entry to the kernel (exception, interrupt, `syscall`), lowest
/// address first. From user mode it sits at the top of the CPU's kernel stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Exception vector.
    pub vector: u64,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

global_asm!(
    r#"
    .macro exc_noerr n
    exc_stub_\n:
        push $0
        push $\n
        jmp exc_common
    .endm
    .macro exc_err n
    exc_stub_\n:
        push $\n
        jmp exc_common
    .endm
    .macro irq_stub n
    irq_stub_\n:
        push $0
        push $\n
        jmp exc_common
    .endm

    .text
    exc_noerr 0
    exc_noerr 1
    exc_noerr 2
    exc_noerr 3
    exc_noerr 4
    exc_noerr 5
    exc_noerr 6
    exc_noerr 7
    exc_err 8
    exc_noerr 9
    exc_err 10
    exc_err 11
    exc_err 12
    exc_err 13
    exc_err 14
    exc_noerr 15
    exc_noerr 16
    exc_err 17
    exc_noerr 18
    exc_noerr 19
    exc_noerr 20
    exc_err 21
    exc_noerr 22
    exc_noerr 23
    exc_noerr 24
    exc_noerr 25
    exc_noerr 26
    exc_noerr 27
    exc_noerr 28
    exc_err 29
    exc_err 30
    exc_noerr 31
    irq_stub 32
    irq_stub 33
    irq_stub 34
    irq_stub 35
    irq_stub 48
    irq_stub 49
    irq_stub 50
    irq_stub 51
    irq_stub 52
    irq_stub 53
    irq_stub 54
    irq_stub 55
    irq_stub 56
    irq_stub 57
    irq_stub 58
    irq_stub 59
    irq_stub 60
    irq_stub 61
    irq_stub 62
    irq_stub 63
    irq_stub 64
    irq_stub 65
    irq_stub 66
    irq_stub 67
    irq_stub 68
    irq_stub 69
    irq_stub 70
    irq_stub 71

exc_common:
    /* From user mode (CS.RPL 3): swap in the kernel's GS base. */
    testb $3, 24(%rsp)
    jz 1f
    swapgs
1:
trap_after_swapgs:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call k42_trap_entry
    .global k42_trap_exit
k42_trap_exit:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    testb $3, 8(%rsp)
    jz 2f
    swapgs
2:
    iretq

    /* `syscall` from user mode on hardware where it enters ring 0: build the same frame an
       interrupt would (SS, RSP, RFLAGS from R11, CS, RIP from RCX), vector SYSCALL_VECTOR. */
    .global k42_syscall_entry
k42_syscall_entry:
    swapgs
    mov %rsp, %gs:{user_rsp}
    mov %gs:{kstack}, %rsp
    push ${user_ds}
    push %gs:{user_rsp}
    push %r11
    push ${user_cs}
    push %rcx
    push $0
    push ${syscall_vector}
    jmp trap_after_swapgs

spurious_stub:
    iretq

    .section .rodata.k42_stub_table, "a"
    .p2align 3
    .global k42_exception_stubs
k42_exception_stubs:
    .quad exc_stub_0, exc_stub_1, exc_stub_2, exc_stub_3, exc_stub_4, exc_stub_5, exc_stub_6, exc_stub_7
    .quad exc_stub_8, exc_stub_9, exc_stub_10, exc_stub_11, exc_stub_12, exc_stub_13, exc_stub_14, exc_stub_15
    .quad exc_stub_16, exc_stub_17, exc_stub_18, exc_stub_19, exc_stub_20, exc_stub_21, exc_stub_22, exc_stub_23
    .quad exc_stub_24, exc_stub_25, exc_stub_26, exc_stub_27, exc_stub_28, exc_stub_29, exc_stub_30, exc_stub_31
    .global k42_interrupt_stubs
k42_interrupt_stubs:
    .quad irq_stub_32, irq_stub_33, irq_stub_34, irq_stub_35
    .global k42_device_stubs
k42_device_stubs:
    .quad irq_stub_48, irq_stub_49, irq_stub_50, irq_stub_51, irq_stub_52, irq_stub_53, irq_stub_54, irq_stub_55, irq_stub_56, irq_stub_57, irq_stub_58, irq_stub_59, irq_stub_60, irq_stub_61, irq_stub_62, irq_stub_63, irq_stub_64, irq_stub_65, irq_stub_66, irq_stub_67, irq_stub_68, irq_stub_69, irq_stub_70, irq_stub_71
    .global k42_spurious_stub
k42_spurious_stub:
    .quad spurious_stub
    "#,
    user_rsp = const core::mem::offset_of!(crate::percpu::PerCpu, user_rsp_scratch),
    kstack = const core::mem::offset_of!(crate::percpu::PerCpu, kernel_stack_top),
    user_ds = const super::gdt::USER_DS as u64,
    user_cs = const super::gdt::USER_CS as u64,
    syscall_vector = const SYSCALL_VECTOR,
    options(att_syntax)
);

extern "C" {
    static k42_exception_stubs: [u64; 32];
    static k42_interrupt_stubs: [u64; 4];
    static k42_device_stubs: [u64; DEVICE_VECTORS as usize];
    static k42_spurious_stub: u64;
    fn k42_syscall_entry();
}

#[no_mangle]
extern "C" fn k42_trap_entry(frame: &mut TrapFrame) {
    crate::interrupts::trap(frame);
}

/// Address of the `syscall` entry stub (for LSTAR).
pub fn syscall_entry_address() -> u64 {
    k42_syscall_entry as *const () as u64
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64, ist: u8) -> Gate {
        Gate::with_dpl(handler, ist, 0)
    }

    fn with_dpl(handler: u64, ist: u8, dpl: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: gdt::KERNEL_CS,
            ist,
            attributes: 0x8e | (dpl << 5), // present, 64-bit interrupt gate
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: the IDT is written only by `init` on the boot CPU before any other CPU starts or any
// interrupt is enabled; afterwards it is only read (by the CPUs, through IDTR).
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::EMPTY; 256]));

/// Fills the shared IDT. Called once, on the boot CPU, before interrupts are enabled.
pub fn init() {
    // SAFETY: single-threaded boot, see `Idt`'s Sync impl; the stub tables are linker-resolved
    // arrays of valid code addresses.
    unsafe {
        let idt = &mut *IDT.0.get();
        for (vector, &stub) in k42_exception_stubs.iter().enumerate() {
            let ist = match vector {
                2 => gdt::IST_NMI,
                8 => gdt::IST_DOUBLE_FAULT,
                18 => gdt::IST_MACHINE_CHECK,
                _ => 0,
            };
            // `int3` may be used from user mode: it is how user code enters the kernel where
            // `syscall` does not (see PLATFORM.md and `crate::entry`).
            let dpl = if vector == 3 { 3 } else { 0 };
            idt[vector] = Gate::with_dpl(stub, ist, dpl);
        }
        for (i, &stub) in k42_interrupt_stubs.iter().enumerate() {
            idt[TIMER_VECTOR as usize + i] = Gate::interrupt(stub, 0);
        }
        for (i, &stub) in k42_device_stubs.iter().enumerate() {
            idt[DEVICE_VECTOR_BASE as usize + i] = Gate::interrupt(stub, 0);
        }
        idt[SPURIOUS_VECTOR as usize] = Gate::interrupt(k42_spurious_stub, 0);
    }
}

/// Loads the shared IDT on the calling CPU.
pub fn load() {
    #[repr(C, packed(2))]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer {
        limit: (256 * 16 - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is 'static and filled by `init` before any CPU loads it.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) }
}
