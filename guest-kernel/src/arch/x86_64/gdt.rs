//! Per-CPU GDT and TSS (with IST stacks for double fault, NMI and machine check).

use core::arch::asm;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3), placed for SYSRET's layout.
pub const USER_DS: u16 = 0x20 | 3;
/// User 64-bit code selector (RPL 3).
pub const USER_CS: u16 = 0x28 | 3;
/// Task-state segment selector.
pub const TSS_SELECTOR: u16 = 0x30;

/// IST slot (1-based, as the IDT encodes it) used by the double-fault handler.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot used by the NMI handler.
pub const IST_NMI: u8 = 2;
/// IST slot used by the machine-check handler.
pub const IST_MACHINE_CHECK: u8 = 3;

/// The 64-bit task-state segment.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Default)]
pub struct Tss {
    reserved0: u32,
    /// Stack pointers loaded on a privilege change to ring 0..2.
    pub rsp: [u64; 3],
    reserved1: u64,
    /// Interrupt stack table.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Offset of the I/O permission bitmap (past the limit: none).
    pub iomap_base: u16,
}

/// One CPU's descriptor tables.
#[repr(C, align(16))]
#[derive(Default)]
pub struct CpuTables {
    gdt: [u64; 8],
    tss: Tss,
}

#[repr(C, packed(2))]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

impl CpuTables {
    /// Fills the GDT and the TSS with the given IST stack tops and the ring-0 stack taken on
    /// entry from user mode.
    pub fn new(ist_tops: [u64; 3], kernel_stack_top: u64) -> CpuTables {
        let mut tables = CpuTables::default();
        tables.gdt[1] = 0x00af_9a00_0000_ffff; // kernel code, 64-bit
        tables.gdt[2] = 0x00cf_9200_0000_ffff; // kernel data
        tables.gdt[3] = 0x00cf_fa00_0000_ffff; // user code, 32-bit (unused)
        tables.gdt[4] = 0x00cf_f200_0000_ffff; // user data
        tables.gdt[5] = 0x00af_fa00_0000_ffff; // user code, 64-bit
        tables.tss.rsp[0] = kernel_stack_top;
        tables.tss.ist[0] = ist_tops[0];
        tables.tss.ist[1] = ist_tops[1];
        tables.tss.ist[2] = ist_tops[2];
        tables.tss.iomap_base = core::mem::size_of::<Tss>() as u16;
        tables
    }

    /// Loads these tables on the calling CPU: GDT, segment registers and task register.
    ///
    /// Must be called with the tables at their final (never moved, never freed) address.
    pub fn load(&'static mut self) {
        let tss_base = core::ptr::addr_of!(self.tss) as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        self.gdt[6] = (limit & 0xffff)
            | ((tss_base & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((tss_base >> 24) & 0xff) << 56);
        self.gdt[7] = tss_base >> 32;
        let pointer = DescriptorPointer {
            limit: (core::mem::size_of::<[u64; 8]>() - 1) as u16,
            base: self.gdt.as_ptr() as u64,
        };
        // SAFETY: the GDT is 'static and holds valid descriptors at the selectors loaded here;
        // the far return reloads CS with the kernel code selector; FS/GS are cleared before the
        // per-CPU code sets the GS base.
        unsafe {
            asm!(
                "lgdt [{ptr}]",
                "push {cs}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov ds, {ds:e}",
                "mov es, {ds:e}",
                "mov ss, {ds:e}",
                "xor {tmp:e}, {tmp:e}",
                "mov fs, {tmp:e}",
                "mov gs, {tmp:e}",
                "ltr {tss:x}",
                ptr = in(reg) &pointer,
                cs = const KERNEL_CS as u64,
                ds = in(reg) u32::from(KERNEL_DS),
                tss = in(reg) TSS_SELECTOR,
                tmp = out(reg) _,
            );
        }
    }
}
