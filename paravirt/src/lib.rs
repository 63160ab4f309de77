//! The paravirtual interface between `k42vm` and the guest kernel.
//!
//! This crate is the only code both sides share (see DESIGN.md). It has no dependencies and
//! is `no_std`, so the guest kernel links it as it is and the VMM links it on the host.
//!
//! # Hypercalls
//!
//! A hypercall is a 32-bit `out` to one I/O port per call ([`Hypercall`]). For every call except
//! [`Hypercall::BootStage`] and [`Hypercall::Nop`] the value written is the guest-physical address
//! of the call's `#[repr(C)]` parameter block defined below; the block must lie in guest RAM
//! below 4 GiB. The VMM validates every block (address, lengths, enumerations) and writes the
//! call's status back into the block's `status` field where it has one ([`status`]).
//!
//! # Detection
//!
//! CPUID leaf [`CPUID_SIGNATURE_LEAF`] returns [`CPUID_SIGNATURE`] in EBX, ECX, EDX when the guest
//! runs on `k42vm`. Elsewhere (QEMU, Firecracker) the guest falls back to the 8250 UART for output
//! and `isa-debug-exit` ([`QEMU_DEBUG_EXIT_PORT`]) to end the VM.
#![no_std]
#![forbid(unsafe_code)]

/// CPUID leaf whose EBX:ECX:EDX carry [`CPUID_SIGNATURE`]; EAX is the highest k42vm leaf.
pub const CPUID_SIGNATURE_LEAF: u32 = 0x4000_0000;
/// The 12-byte hypervisor signature k42vm reports (EBX, ECX, EDX in that order).
pub const CPUID_SIGNATURE: [u8; 12] = *b"K42vmK42vmK4";
/// CPUID leaf whose EAX is [`INTERFACE_VERSION`].
pub const CPUID_INTERFACE_LEAF: u32 = 0x4000_0001;
/// CPUID leaf (the de-facto hypervisor timing leaf): EAX = TSC kHz, EBX = local APIC timer kHz.
pub const CPUID_TIMING_LEAF: u32 = 0x4000_0010;
/// Version of this interface; bumped on any incompatible change.
pub const INTERFACE_VERSION: u32 = 1;

/// Port of QEMU's `isa-debug-exit` device, the guest's way out on hypervisors other than k42vm.
pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;
/// I/O port of the first 8250 UART (COM1).
pub const COM1_PORT: u16 = 0x3f8;

/// The hypercalls; each value is the I/O port the guest writes to.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// Write bytes to the console: [`ConsoleWrite`].
    ConsoleWrite = 0x510,
    /// End the VM with an exit code: [`Shutdown`].
    Shutdown = 0x511,
    /// Mark a boot stage; the value written is a [`BootStage`] code, not an address.
    BootStage = 0x512,
    /// Report a test result, a test plan or a benchmark figure: [`TestReport`].
    TestReport = 0x513,
    /// Start a secondary vCPU directly in 64-bit mode: [`CpuStart`].
    CpuStart = 0x514,
    /// Does nothing and returns; the value is ignored (measures the bare round trip).
    Nop = 0x515,
    /// Copy or zero guest-physical ranges in one batch: [`MemOps`].
    MemOps = 0x516,
    /// Read the host's wall-clock time: [`WallClock`].
    WallClock = 0x517,
}

impl Hypercall {
    /// All hypercalls, in port order.
    pub const ALL: [Hypercall; 8] = [
        Hypercall::ConsoleWrite,
        Hypercall::Shutdown,
        Hypercall::BootStage,
        Hypercall::TestReport,
        Hypercall::CpuStart,
        Hypercall::Nop,
        Hypercall::MemOps,
        Hypercall::WallClock,
    ];

    /// The hypercall at I/O port `port`, if any.
    pub fn from_port(port: u16) -> Option<Hypercall> {
        Self::ALL.into_iter().find(|h| *h as u16 == port)
    }

    /// The I/O port of this hypercall.
    pub const fn port(self) -> u16 {
        self as u16
    }
}

/// Status codes written back into parameter blocks.
pub mod status {
    /// The call succeeded.
    pub const OK: i32 = 0;
    /// A field of the block was out of range or inconsistent.
    pub const INVALID: i32 = -22;
    /// A guest address in the block lies outside guest RAM.
    pub const FAULT: i32 = -14;
    /// The target (for example a vCPU) is already in the requested state.
    pub const BUSY: i32 = -16;
}

/// Largest console write accepted in one call; longer writes are split by the guest.
pub const CONSOLE_WRITE_MAX: u32 = 64 * 1024;
/// Largest test or metric name accepted in a [`TestReport`].
pub const TEST_NAME_MAX: u32 = 256;

/// Parameter block of [`Hypercall::ConsoleWrite`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleWrite {
    /// Guest-physical address of the bytes.
    pub buf_gpa: u64,
    /// Number of bytes, at most [`CONSOLE_WRITE_MAX`].
    pub len: u32,
    /// Written by the VMM: a [`status`] code.
    pub status: i32,
}

/// Parameter block of [`Hypercall::WallClock`]: filled by the VMM.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    /// Nanoseconds since the Unix epoch (UTC) when the VMM handled the call.
    pub unix_ns: u64,
    /// Written by the VMM: a [`status`] code.
    pub status: i32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Parameter block of [`Hypercall::Shutdown`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shutdown {
    /// The VM's exit code; k42vm exits with it (its low 8 bits).
    pub exit_code: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// What a [`TestReport`] says.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    /// `value` test results will follow; a missing one is a failure.
    Plan = 1,
    /// The named test passed.
    Pass = 2,
    /// The named test failed; `value` is a test-specific detail.
    Fail = 3,
    /// A benchmark figure: `value` in the unit the name ends with (`_ns`, `_per_s`, ...).
    Metric = 4,
}

impl ReportKind {
    /// The kind encoded as `raw`, if valid.
    pub fn from_raw(raw: u32) -> Option<ReportKind> {
        match raw {
            1 => Some(ReportKind::Plan),
            2 => Some(ReportKind::Pass),
            3 => Some(ReportKind::Fail),
            4 => Some(ReportKind::Metric),
            _ => None,
        }
    }
}

/// Parameter block of [`Hypercall::TestReport`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestReport {
    /// A [`ReportKind`] as `u32`.
    pub kind: u32,
    /// The CPU that reports.
    pub cpu: u32,
    /// Guest-physical address of the UTF-8 name.
    pub name_gpa: u64,
    /// Length of the name, at most [`TEST_NAME_MAX`].
    pub name_len: u32,
    /// Written by the VMM: a [`status`] code.
    pub status: i32,
    /// Plan: number of tests; Fail: detail; Metric: the figure.
    pub value: u64,
}

/// Parameter block of [`Hypercall::CpuStart`]: start vCPU `cpu` in 64-bit mode.
///
/// The VMM loads flat 64-bit segments, `CR0.PG|PE`, `CR4.PAE`, `EFER.LME|LMA`, the given CR3,
/// RIP, RSP and RDI, and runs the vCPU. Interrupts are disabled; the kernel loads its own GDT
/// and IDT first thing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStart {
    /// Index of the vCPU (0 is the boot CPU, which cannot be started).
    pub cpu: u32,
    /// Written by the VMM: a [`status`] code.
    pub status: i32,
    /// 64-bit entry point (a kernel virtual address).
    pub rip: u64,
    /// Initial stack pointer.
    pub rsp: u64,
    /// Page-table root (physical).
    pub cr3: u64,
    /// Passed in RDI.
    pub arg: u64,
}

/// Most operations in one [`MemOps`] batch.
pub const MEM_OPS_MAX: u32 = 4096;
/// Largest length of one [`MemOp`] (the whole of guest RAM below the MMIO hole).
pub const MEM_OP_LEN_MAX: u64 = 1 << 32;
/// [`MemOp::src`] value that asks for zeroes instead of a copy.
pub const MEM_OP_ZERO: u64 = u64::MAX;

/// One operation of a [`MemOps`] batch: copy `len` bytes from `src` to `dst`, or zero `len`
/// bytes at `dst` when `src` is [`MEM_OP_ZERO`]. Ranges must not overlap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemOp {
    /// Guest-physical destination.
    pub dst: u64,
    /// Guest-physical source, or [`MEM_OP_ZERO`].
    pub src: u64,
    /// Bytes, at most [`MEM_OP_LEN_MAX`].
    pub len: u64,
}

/// Parameter block of [`Hypercall::MemOps`]: bulk memory work done by the VMM at host speed,
/// so the kernel never runs a copy or zeroing loop in (possibly emulated) ring 0.
///
/// The VMM performs the operations in order and stops at the first invalid one; `done` says
/// how many were performed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemOps {
    /// Guest-physical address of an array of `count` [`MemOp`]s.
    pub ops_gpa: u64,
    /// Number of operations, at most [`MEM_OPS_MAX`].
    pub count: u32,
    /// Written by the VMM: a [`status`] code.
    pub status: i32,
    /// Written by the VMM: operations performed.
    pub done: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Boot stages the guest marks with [`Hypercall::BootStage`]; k42vm timestamps each.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootStage {
    /// First instruction of the PVH entry (32-bit protected mode).
    Entry = 1,
    /// Running Rust code in 64-bit mode.
    LongMode = 2,
    /// Console, frame allocator and heap are up.
    MemoryReady = 3,
    /// GDT, TSS, IDT and the local APIC are set up on the boot CPU.
    InterruptsReady = 4,
    /// Every CPU has reported in.
    SmpReady = 5,
    /// Kernel initialisation is complete.
    InitDone = 6,
    /// In-kernel tests have finished.
    TestsDone = 7,
}

impl BootStage {
    /// All stages in boot order.
    pub const ALL: [BootStage; 7] = [
        BootStage::Entry,
        BootStage::LongMode,
        BootStage::MemoryReady,
        BootStage::InterruptsReady,
        BootStage::SmpReady,
        BootStage::InitDone,
        BootStage::TestsDone,
    ];

    /// The stage encoded as `raw`, if valid.
    pub fn from_raw(raw: u32) -> Option<BootStage> {
        Self::ALL.into_iter().find(|s| *s as u32 == raw)
    }

    /// A short human-readable name.
    pub const fn name(self) -> &'static str {
        match self {
            BootStage::Entry => "first guest instruction",
            BootStage::LongMode => "64-bit kernel entered",
            BootStage::MemoryReady => "memory ready",
            BootStage::InterruptsReady => "interrupts ready",
            BootStage::SmpReady => "all CPUs up",
            BootStage::InitDone => "kernel init done",
            BootStage::TestsDone => "ktests done",
        }
    }
}

/// Exit codes the guest kernel uses for its own failures (distinct from k42vm's, see README).
pub mod exit_code {
    /// A kernel panic.
    pub const PANIC: u32 = 101;
    /// An unexpected CPU exception in the kernel.
    pub const EXCEPTION: u32 = 102;
    /// At least one in-kernel test failed.
    pub const KTEST_FAILED: u32 = 103;
    /// The first user program (`init=`) could not be started.
    pub const NO_INIT: u32 = 104;
}

/// The Xen PVH start-of-day structure (`hvm_start_info`), found at the guest-physical address in
/// EBX at the PVH entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    /// Structure version (1 adds the memory map).
    pub version: u32,
    /// Flags, unused.
    pub flags: u32,
    /// Number of [`HvmModlistEntry`] at `modlist_paddr`.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line (0 if none).
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0 if none).
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (version 1).
    pub memmap_paddr: u64,
    /// Number of [`HvmMemmapEntry`] at `memmap_paddr`.
    pub memmap_entries: u32,
    /// Reserved.
    pub reserved: u32,
}

/// Magic value of [`HvmStartInfo::magic`].
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

/// One entry of the PVH memory map (E820 types).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmMemmapEntry {
    /// Start of the range.
    pub addr: u64,
    /// Size of the range in bytes.
    pub size: u64,
    /// E820 type ([`E820_RAM`], [`E820_RESERVED`], ...).
    pub kind: u32,
    /// Reserved.
    pub reserved: u32,
}

/// Usable RAM.
pub const E820_RAM: u32 = 1;
/// Reserved, not to be used.
pub const E820_RESERVED: u32 = 2;
/// ACPI tables, reclaimable after parsing.
pub const E820_ACPI: u32 = 3;

/// One PVH module (module 0 is the initrd).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Physical address of the module's command line (0 if none).
    pub cmdline_paddr: u64,
    /// Reserved.
    pub reserved: u64,
}

/// FNV-1a 64-bit hash: the checksum the guest reports for the initrd and the VMM recomputes.
pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Checksum of an image (the initrd) the guest reports and the VMM recomputes: FNV-1a over
/// 64-bit little-endian words (the tail zero-padded), then the length. Word-wise because the
/// guest computes it in ring 0, where every instruction counts.
pub fn checksum64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash ^ u64::from_le_bytes(word)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        hash = (hash ^ u64::from_le_bytes(word)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash ^ bytes.len() as u64).wrapping_mul(0x0000_0100_0000_01b3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn hypercall_ports_round_trip_and_are_distinct() {
        for h in Hypercall::ALL {
            assert_eq!(Hypercall::from_port(h.port()), Some(h));
        }
        assert_eq!(Hypercall::from_port(0x3f8), None);
        assert_eq!(Hypercall::from_port(QEMU_DEBUG_EXIT_PORT), None);
    }

    #[test]
    fn boot_stages_round_trip() {
        for s in BootStage::ALL {
            assert_eq!(BootStage::from_raw(s as u32), Some(s));
        }
        assert_eq!(BootStage::from_raw(0), None);
        assert_eq!(BootStage::from_raw(99), None);
    }

    #[test]
    fn report_kinds_round_trip() {
        for k in [
            ReportKind::Plan,
            ReportKind::Pass,
            ReportKind::Fail,
            ReportKind::Metric,
        ] {
            assert_eq!(ReportKind::from_raw(k as u32), Some(k));
        }
        assert_eq!(ReportKind::from_raw(0), None);
    }

    #[test]
    fn parameter_blocks_have_stable_layouts() {
        assert_eq!(size_of::<ConsoleWrite>(), 16);
        assert_eq!(size_of::<Shutdown>(), 8);
        assert_eq!(size_of::<TestReport>(), 32);
        assert_eq!(offset_of!(TestReport, value), 24);
        assert_eq!(size_of::<CpuStart>(), 40);
        assert_eq!(size_of::<MemOp>(), 24);
        assert_eq!(size_of::<MemOps>(), 24);
        assert_eq!(offset_of!(CpuStart, rip), 8);
    }

    #[test]
    fn pvh_structures_match_the_xen_abi() {
        assert_eq!(size_of::<HvmStartInfo>(), 56);
        assert_eq!(offset_of!(HvmStartInfo, rsdp_paddr), 32);
        assert_eq!(offset_of!(HvmStartInfo, memmap_entries), 48);
        assert_eq!(size_of::<HvmMemmapEntry>(), 24);
        assert_eq!(size_of::<HvmModlistEntry>(), 32);
    }

    #[test]
    fn checksum64_sees_every_byte_and_the_length() {
        let a = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut b = a;
        b[8] = 10;
        assert_ne!(checksum64(&a), checksum64(&b));
        assert_ne!(
            checksum64(&[0u8; 3]),
            checksum64(&[0u8; 4]),
            "zero padding must not hide length"
        );
        assert_eq!(checksum64(&a), checksum64(&a));
    }

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
