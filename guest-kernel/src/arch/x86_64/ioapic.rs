//! The I/O APIC (device interrupt routing) and the legacy PICs.
//!
//! Device lines (GSIs) reach CPUs through the I/O APIC's redirection table; with KVM's in-kernel
//! irqchip the lines below 16 also reach the legacy 8259 PICs, whose output KVM wires to the
//! boot CPU as ExtINT. An unprogrammed PIC would turn device line 5 into vector 5 (an
//! exception), so the kernel masks both PICs before any device interrupt can be raised.

use spin::Mutex;

use super::{outb, phys_to_virt};

/// Physical address of the I/O APIC (the standard one; k42vm, QEMU and Firecracker use it).
const IOAPIC_PHYS: u64 = 0xfec0_0000;
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// First redirection-table register; pin `n` uses `0x10 + 2n` (low) and `0x11 + 2n` (high).
const REDIRECTION: u32 = 0x10;
/// Redirection entry bit: masked.
const MASKED: u32 = 1 << 16;
/// Pins of the I/O APIC (24 on every machine we run on).
pub const PINS: u32 = 24;

/// IOREGSEL and IOWIN are a pair: one CPU at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn write_register(reg: u32, value: u32) {
    // SAFETY: the I/O APIC's two registers lie in the direct map's first 4 GiB (like the xAPIC
    // page); selecting a register and writing it only changes interrupt routing. The caller
    // holds LOCK, so no other CPU changes the selection in between.
    unsafe {
        core::ptr::write_volatile(phys_to_virt(IOAPIC_PHYS + IOREGSEL) as *mut u32, reg);
        core::ptr::write_volatile(phys_to_virt(IOAPIC_PHYS + IOWIN) as *mut u32, value);
    }
}

/// Routes pin `pin` to `vector` on the CPU with APIC ID `apic_id`: fixed delivery, physical
/// destination, active high, edge-triggered (k42vm's irqfds pulse the line). Out-of-range pins
/// are ignored.
pub fn route(pin: u32, vector: u8, apic_id: u32) {
    if pin >= PINS {
        return;
    }
    let _guard = LOCK.lock();
    let low = REDIRECTION + 2 * pin;
    // Masked while the destination changes, so no interrupt goes to a half-written entry.
    write_register(low, MASKED | u32::from(vector));
    write_register(low + 1, (apic_id & 0xff) << 24);
    write_register(low, u32::from(vector));
}

/// Masks pin `pin`.
pub fn mask(pin: u32) {
    if pin >= PINS {
        return;
    }
    let _guard = LOCK.lock();
    write_register(REDIRECTION + 2 * pin, MASKED);
}

/// Masks every line of both legacy PICs.
pub fn mask_legacy_pics() {
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}
