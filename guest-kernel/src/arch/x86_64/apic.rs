//! The local APIC: one-shot timer, IPIs, INIT/SIPI, EOI.
//!
//! x2APIC mode when the CPU offers it (k42vm always does): registers are MSRs, one instruction
//! per access, no mapping. Otherwise (QEMU 7 TCG, old CPUs) the xAPIC page at 0xfee0_0000,
//! reached through the direct map.

use core::sync::atomic::{AtomicBool, Ordering};

use super::{phys_to_virt, rdmsr, wrmsr};

const IA32_APIC_BASE: u32 = 0x1b;
const XAPIC_PHYS: u64 = 0xfee0_0000;

// Register numbers: the x2APIC MSR is 0x800 + n, the xAPIC MMIO offset is n << 4.
const REG_ID: u32 = 0x02;
const REG_EOI: u32 = 0x0b;
const REG_SVR: u32 = 0x0f;
const REG_ICR: u32 = 0x30;
const REG_ICR_HIGH: u32 = 0x31;
const REG_LVT_TIMER: u32 = 0x32;
const REG_TIMER_INITIAL: u32 = 0x38;
const REG_TIMER_DIVIDE: u32 = 0x3e;
const REG_SELF_IPI: u32 = 0x3f;

static X2APIC: AtomicBool = AtomicBool::new(false);

/// Whether the CPU offers x2APIC mode (CPUID.1:ECX bit 21).
pub fn x2apic_supported() -> bool {
    super::cpuid(1, 0).ecx & (1 << 21) != 0
}

/// Whether the local APICs run in x2APIC mode.
pub fn x2apic_mode() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

fn read(reg: u32) -> u32 {
    if x2apic_mode() {
        rdmsr(0x800 + reg) as u32
    } else {
        // SAFETY: the xAPIC page is mapped by the direct map (first 4 GiB); the register is a
        // defined 32-bit register of the local APIC.
        unsafe {
            core::ptr::read_volatile(phys_to_virt(XAPIC_PHYS + (u64::from(reg) << 4)) as *const u32)
        }
    }
}

fn write(reg: u32, value: u64) {
    if x2apic_mode() {
        wrmsr(0x800 + reg, value);
    } else if reg == REG_ICR {
        write(REG_ICR_HIGH, (value >> 32) << 24);
        write_mmio(REG_ICR, value as u32);
    } else {
        write_mmio(reg, value as u32);
    }
}

fn write_mmio(reg: u32, value: u32) {
    // SAFETY: as for `read`; writes to APIC registers only affect interrupt delivery.
    unsafe {
        core::ptr::write_volatile(
            phys_to_virt(XAPIC_PHYS + (u64::from(reg) << 4)) as *mut u32,
            value,
        )
    }
}

/// Enables the calling CPU's local APIC (x2APIC mode when available); timer divide is 1.
pub fn init(spurious_vector: u8) {
    let use_x2apic = x2apic_supported();
    X2APIC.store(use_x2apic, Ordering::Relaxed);
    let base = rdmsr(IA32_APIC_BASE);
    let wanted = base | (1 << 11) | if use_x2apic { 1 << 10 } else { 0 };
    if base != wanted {
        // xAPIC enable must precede x2APIC enable (SDM 10.12.5).
        wrmsr(IA32_APIC_BASE, base | (1 << 11));
        wrmsr(IA32_APIC_BASE, wanted);
    }
    write(REG_SVR, 0x100 | u64::from(spurious_vector));
    write(REG_TIMER_DIVIDE, 0b1011);
}

/// The calling CPU's APIC ID.
pub fn id() -> u32 {
    if x2apic_mode() || (rdmsr(IA32_APIC_BASE) & (1 << 10)) != 0 {
        rdmsr(0x800 + REG_ID) as u32
    } else {
        read(REG_ID) >> 24
    }
}

/// Signals end of interrupt for the interrupt being handled.
#[inline(always)]
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Arms the one-shot timer to raise `vector` after `ticks` APIC timer ticks (0 disarms it).
pub fn arm_one_shot(vector: u8, ticks: u32) {
    write(REG_LVT_TIMER, u64::from(vector));
    write(REG_TIMER_INITIAL, u64::from(ticks));
}

/// Sends a fixed interrupt `vector` to the CPU with APIC ID `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    write(REG_ICR, (u64::from(apic_id) << 32) | u64::from(vector));
}

/// Sends a fixed interrupt `vector` to the calling CPU.
pub fn send_self_ipi(vector: u8) {
    if x2apic_mode() {
        write(REG_SELF_IPI, u64::from(vector));
    } else {
        write(REG_ICR, (1 << 18) | u64::from(vector)); // destination shorthand: self
    }
}

/// Sends INIT (assert) to `apic_id`.
pub fn send_init(apic_id: u32) {
    write(REG_ICR, (u64::from(apic_id) << 32) | 0x4500);
}

/// Sends a STARTUP IPI to `apic_id`; the CPU starts in real mode at `page << 12`.
pub fn send_startup(apic_id: u32, page: u8) {
    write(
        REG_ICR,
        (u64::from(apic_id) << 32) | 0x4600 | u64::from(page),
    );
}
