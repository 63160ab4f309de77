//! Starting secondary CPUs with INIT/SIPI (on hypervisors other than k42vm) and their 64-bit entry.

use super::{apic, boot, phys_to_virt};

/// Physical address the real-mode trampoline is copied to (page 8, below 1 MiB).
pub const AP_TRAMPOLINE_PHYS: u64 = 0x8000;

/// Copies the real-mode trampoline below 1 MiB. Called once before the first INIT/SIPI.
pub fn install_trampoline() {
    let (image_phys, len) = boot::ap_trampoline_image();
    // SAFETY: the trampoline page (0x8000) is below 1 MiB, which the frame allocator never hands
    // out, and the direct map covers it; the source is the kernel's own .boot section.
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(image_phys) as *const u8,
            phys_to_virt(AP_TRAMPOLINE_PHYS) as *mut u8,
            len,
        );
    }
}

/// Starts the CPU with x2APIC ID `apic_id` by INIT/SIPI/SIPI; it enters `ap_entry64` with `arg`.
///
/// The caller must wait for this CPU to report in before starting another one (the trampoline
/// mailbox is shared), and must have called [`install_trampoline`].
pub fn start_with_init_sipi(apic_id: u32, stack_top: u64, arg: u64, spin: impl Fn(u64)) {
    // SAFETY: the caller serialises start-ups (documented above).
    unsafe { boot::set_ap_boot_mailbox(stack_top, arg) };
    apic::send_init(apic_id);
    spin(10_000);
    let page = (AP_TRAMPOLINE_PHYS >> 12) as u8;
    apic::send_startup(apic_id, page);
    spin(200);
    apic::send_startup(apic_id, page);
}

/// Where every secondary CPU enters the kernel in 64-bit mode, with paging on (boot page tables),
/// interrupts off, a valid stack, and `arg` (its per-CPU block) in RDI.
#[no_mangle]
pub extern "C" fn ap_entry64(arg: u64) -> ! {
    crate::smp::ap_main(arg)
}
