//! PVH entry, boot page tables and the INIT/SIPI trampoline.
//!
//! The boot path is short in instructions on purpose (each ring-0 instruction costs about a
//! microsecond on an emulating KVM): the page tables are built by the assembler and linker, not
//! by a loop at run time, so the 32-bit entry only loads registers and jumps to Rust.
//!
//! Boot page tables map the first 4 GiB of physical memory three times with 2 MiB pages:
//! identity (PML4 slot 0, needed while switching modes and for the AP trampoline), the direct
//! map at [`super::PHYS_OFFSET`] (slot 256) and the kernel image at `KERNEL_VMA` (slot 511,
//! first 2 GiB only). RAM above 4 GiB is added to the direct map by `mm::paging` at boot.

use core::arch::global_asm;

global_asm!(
    r#"
    .set BOOT_STAGE_PORT, {stage_port}
    .set KERNEL_VMA, 0xffffffff80000000

    .section .note.Xen, "a", @note
    .p2align 2
    .long 4               /* name size */
    .long 4               /* desc size */
    .long 18              /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_entry

    .section .boot.text, "awx", @progbits
    .code32
    .global pvh_entry
pvh_entry:
    /* Boot-stage marker: the first guest instruction (k42vm timestamps it). */
    mov $BOOT_STAGE_PORT, %dx
    mov $1, %eax
    out %eax, %dx
    mov %ebx, %esi              /* hvm_start_info (physical), kept for kernel_main */
    rdtsc
    mov %eax, boot_tsc
    mov %edx, boot_tsc + 4
    lgdt boot_gdtr
    mov %cr4, %eax
    or $0x20, %eax              /* PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $0x100, %eax             /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax        /* PG | WP | PE */
    mov %eax, %cr0
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $boot_stack_top, %rsp
    mov %esi, %edi              /* zero-extends: start_info physical address */
    xor %ebp, %ebp
    movabs $kernel_main, %rax
    call *%rax
1:  hlt
    jmp 1b

    /* Secondary CPUs started by INIT/SIPI land here in 64-bit mode (see ap_trampoline). */
ap_trampoline_long:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov ap_boot_rsp(%rip), %rsp
    mov ap_boot_arg(%rip), %rdi
    xor %ebp, %ebp
    movabs $ap_entry64, %rax
    jmp *%rax

    /* Real-mode trampoline; copied to AP_TRAMPOLINE_PHYS (below 1 MiB) before INIT/SIPI. */
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    lgdtl {tramp} + (ap_tramp_gdtr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, ${tramp} + (ap_tramp32 - ap_trampoline_start)
    .code32
ap_tramp32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %ss
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    ljmp $0x08, $ap_trampoline_long
    .p2align 3
ap_tramp_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .global ap_trampoline_end
ap_trampoline_end:

    .section .boot.data, "aw", @progbits
    .p2align 12
    .global boot_pml4
boot_pml4:
    .quad boot_pdpt + 0x3
    .fill 255, 8, 0
    .quad boot_pdpt + 0x3       /* 256: direct map of physical memory */
    .fill 254, 8, 0
    .quad boot_pdpt_kernel + 0x3 /* 511: the kernel image */
    .global boot_pdpt
boot_pdpt:
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1000 + 0x3
    .quad boot_pd + 0x2000 + 0x3
    .quad boot_pd + 0x3000 + 0x3
    .fill 508, 8, 0
boot_pdpt_kernel:
    .fill 510, 8, 0
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1000 + 0x3
boot_pd:
    .set i, 0
    .rept 2048
    .quad (i << 21) | 0x83
    .set i, i + 1
    .endr

    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit kernel code */
    .quad 0x00cf92000000ffff    /* 0x10: kernel data */
    .quad 0x00cf9a000000ffff    /* 0x18: 32-bit code (trampoline only) */
boot_gdt_end:
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .p2align 3
    .global boot_tsc
boot_tsc:
    .quad 0
    .global ap_boot_rsp
ap_boot_rsp:
    .quad 0
    .global ap_boot_arg
ap_boot_arg:
    .quad 0

    .section .bss.boot_stack, "aw", @nobits
    .p2align 12
boot_stack:
    .space 65536
boot_stack_top:
    .code64
    .text
    "#,
    stage_port = const k42_paravirt::Hypercall::BootStage as u16,
    tramp = const super::smp::AP_TRAMPOLINE_PHYS,
    options(att_syntax)
);

/// The `KERNEL_VMA` the kernel image is linked at (physical + this).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;

extern "C" {
    static boot_pml4: u8;
    static boot_pdpt: u8;
    static boot_tsc: u64;
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static mut ap_boot_rsp: u64;
    static mut ap_boot_arg: u64;
    static __kernel_phys_start: u8;
    static __kernel_phys_end: u8;
}

/// Physical address of the boot PML4 (the CR3 every CPU starts with).
pub fn boot_pml4_phys() -> u64 {
    core::ptr::addr_of!(boot_pml4) as u64
}

/// Physical address of the PDPT shared by the identity and direct maps.
pub fn boot_pdpt_phys() -> u64 {
    core::ptr::addr_of!(boot_pdpt) as u64
}

/// TSC value read by the first instructions of the PVH entry.
pub fn boot_tsc_value() -> u64 {
    // SAFETY: written once by the 32-bit entry before any Rust code runs, read-only afterwards;
    // read through the direct map so it stays valid once the identity map is gone.
    unsafe {
        let phys = core::ptr::addr_of!(boot_tsc) as u64;
        core::ptr::read_volatile((super::PHYS_OFFSET + phys) as *const u64)
    }
}

/// Physical range `[start, end)` occupied by the kernel image, .bss included.
pub fn kernel_phys_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__kernel_phys_start) as u64,
        core::ptr::addr_of!(__kernel_phys_end) as u64,
    )
}

/// Physical address and length of the real-mode AP trampoline code.
pub fn ap_trampoline_image() -> (u64, usize) {
    let start = core::ptr::addr_of!(ap_trampoline_start) as u64;
    let end = core::ptr::addr_of!(ap_trampoline_end) as u64;
    (start, (end - start) as usize)
}

/// Sets the stack and argument the next INIT/SIPI-started CPU picks up.
///
/// # Safety
/// Only one AP may be in the trampoline at a time: the caller waits for it to report in
/// before calling this again.
pub unsafe fn set_ap_boot_mailbox(rsp: u64, arg: u64) {
    // SAFETY: the caller serialises AP start-up, so nothing reads the mailbox concurrently.
    unsafe {
        let rsp_slot = super::PHYS_OFFSET + core::ptr::addr_of_mut!(ap_boot_rsp) as u64;
        let arg_slot = super::PHYS_OFFSET + core::ptr::addr_of_mut!(ap_boot_arg) as u64;
        core::ptr::write_volatile(rsp_slot as *mut u64, rsp);
        core::ptr::write_volatile(arg_slot as *mut u64, arg);
    }
}
