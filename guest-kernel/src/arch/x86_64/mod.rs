//! x86_64 architecture layer: the only place (with `mm`'s raw-memory modules) that uses `unsafe`.
//!
//! Everything here wraps one privileged instruction or one hardware structure behind a safe
//! function whose contract the rest of the kernel cannot break.

pub mod apic;
pub mod boot;
pub mod gdt;
pub mod idt;
pub mod ioapic;
pub mod smp;
pub mod user;

pub use user::invlpg;

use core::arch::asm;

/// Virtual address at which all physical memory is mapped (PML4 slot 256).
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;

/// Writes a byte to an I/O port.
#[inline(always)]
pub fn outb(port: u16, value: u8) {
    // SAFETY: port writes have no memory effects visible to Rust; the ports this kernel uses
    // (UART, hypercalls, PIC mask, debug exit) are side-effect-only devices.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 32-bit value to an I/O port.
#[inline(always)]
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`. The hypercall handler may read guest memory named by `value`,
    // so this is not `nomem`: earlier writes to the parameter block must be visible.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
#[inline(always)]
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port reads of the UART status register have no memory effects.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Reads a model-specific register.
#[inline(always)]
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: callers only name architectural MSRs present on every x86_64 CPU this kernel
    // supports (EFER, APIC base, x2APIC range, GS base).
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
#[inline(always)]
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: see `rdmsr`; the values written keep the kernel's invariants (callers are the
    // APIC driver and per-CPU setup).
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Executes CPUID for `leaf`/`subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Enables interrupts and halts until the next one, atomically (the `sti` shadow covers `hlt`).
#[inline(always)]
pub fn enable_interrupts_and_halt() {
    // SAFETY: the IDT is loaded before any caller enables interrupts.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) }
}

/// Disables interrupts.
#[inline(always)]
pub fn disable_interrupts() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

/// Enables interrupts.
#[inline(always)]
pub fn enable_interrupts() {
    // SAFETY: the IDT is loaded before any caller enables interrupts.
    unsafe { asm!("sti", options(nomem, nostack)) }
}

/// Halts this CPU forever with interrupts disabled.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts masked only stops this CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// Spin-loop hint.
#[inline(always)]
pub fn pause() {
    core::hint::spin_loop();
}

/// The faulting address of the last page fault.
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Writes a 32-bit device register at physical address `phys` through the direct map.
///
/// # Safety
/// `phys` must be a register of a device's MMIO window (never RAM), 4-byte aligned.
pub unsafe fn device_write32(phys: u64, value: u32) {
    // SAFETY: by the caller's contract the address is device memory in the direct map (which
    // covers the first 4 GiB, MMIO hole included); the write has only the device's effects.
    unsafe { core::ptr::write_volatile(phys_to_virt(phys) as *mut u32, value) }
}

/// Reads a 32-bit device register at physical address `phys` through the direct map.
///
/// # Safety
/// As for [`device_write32`].
pub unsafe fn device_read32(phys: u64) -> u32 {
    // SAFETY: as for `device_write32`.
    unsafe { core::ptr::read_volatile(phys_to_virt(phys) as *const u32) }
}

/// Translates a physical address to its virtual address in the direct map.
#[inline(always)]
pub const fn phys_to_virt(phys: u64) -> u64 {
    phys + PHYS_OFFSET
}

/// Translates a kernel virtual address (direct map or kernel image) to a physical address.
#[inline(always)]
pub const fn virt_to_phys(virt: u64) -> u64 {
    if virt >= boot::KERNEL_VMA {
        virt - boot::KERNEL_VMA
    } else if virt >= PHYS_OFFSET {
        virt - PHYS_OFFSET
    } else {
        // The identity map (boot only).
        virt
    }
}

/// Sets this CPU's GS base (the per-CPU data pointer).
pub fn set_gs_base(value: u64) {
    wrmsr(0xc000_0101, value);
}

/// Reads the quadword at offset 0 of the GS segment (the per-CPU self pointer).
#[inline(always)]
pub fn gs_self_pointer() -> u64 {
    let value: u64;
    // SAFETY: GS base is set to a valid per-CPU block by `percpu` before any caller runs; the
    // read has no side effects.
    unsafe { asm!("mov {}, gs:[0]", out(reg) value, options(nostack, preserves_flags, readonly)) }
    value
}

/// Reads the quadword at `offset` in the GS segment (a field of the per-CPU block).
#[inline(always)]
pub fn gs_word<const OFFSET: usize>() -> u64 {
    let value: u64;
    // SAFETY: as for `gs_self_pointer`: GS points at this CPU's block, and OFFSET is a field
    // offset inside it (callers use `offset_of!`).
    unsafe {
        asm!("mov {}, gs:[{off}]", out(reg) value, off = const OFFSET, options(nostack, preserves_flags, readonly))
    }
    value
}

/// Reads an address that is never mapped (the canonical hole's edge), to exercise the page-fault
/// path on request (`k42.test_fault`). Does not return.
pub fn touch_unmapped() -> ! {
    let address = 0x0000_7fff_ffff_f000u64;
    // SAFETY: the read faults (nothing is mapped there); the page-fault handler ends the VM, so
    // no value is ever produced.
    unsafe { core::ptr::read_volatile(address as *const u64) };
    halt_forever()
}

/// Loads an empty IDT and raises an exception, so the CPU triple-faults (test-only,
/// `k42.test_triple_fault`: exercises the VMM's report of a dead vCPU). Does not return.
pub fn triple_fault() -> ! {
    #[repr(C, packed(2))]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let empty = Pointer { limit: 0, base: 0 };
    // SAFETY: deliberately unsound for the machine, not for memory: with a zero-limit IDT the
    // #UD escalates to a double fault and then a triple fault, which resets the vCPU; no Rust
    // code runs afterwards.
    unsafe { asm!("cli", "lidt [{}]", "ud2", in(reg) &empty, options(noreturn)) }
}
