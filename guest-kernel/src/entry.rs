//! How user code enters the kernel on this platform, found by a probe at boot
//! (PLATFORM.md): on real x86 `syscall` enters ring 0; on an emulating KVM it stays in ring 3
//! and jumps to LSTAR, so there user code uses `int3` through a DPL-3 gate instead. Every
//! process maps the same read-only entry page, whose stub uses the instruction that works.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use k42_guest_lib::kabi::{self, Prot};

use crate::arch::{self, idt, idt::TrapFrame, user};
use crate::mm::aspace::{AddressSpace, Backing, Region};
use crate::percpu::MAX_CPUS;
use crate::{mm, proc};

/// The instruction user code enters the kernel with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Not probed yet.
    Unknown,
    /// `syscall` reaches the kernel's LSTAR entry in ring 0.
    Syscall,
    /// `int3` (DPL-3 gate), with the entry page's address as the marker.
    Int3,
}

static KIND: AtomicU8 = AtomicU8::new(0);
static PROBING: AtomicBool = AtomicBool::new(false);
static SAW_SYSCALL: AtomicBool = AtomicBool::new(false);

/// Where the probe's code page is mapped.
const PROBE_CODE: u64 = 0x10000;
/// `syscall; int3; jmp .`
const PROBE_BYTES: [u8; 5] = [0x0f, 0x05, 0xcc, 0xeb, 0xfe];
/// Entry stub with `syscall`: `syscall; ret`.
const STUB_SYSCALL: [u8; 3] = [0x0f, 0x05, 0xc3];
/// Where `syscall` returns to in the `syscall` entry stub.
const STUB_SYSCALL_LEN: u64 = 2;
/// Entry stub with `int3`: `int3; ret`.
const STUB_INT3: [u8; 2] = [0xcc, 0xc3];

/// The entry kind found by [`probe`].
pub fn kind() -> EntryKind {
    match KIND.load(Ordering::Acquire) {
        1 => EntryKind::Syscall,
        2 => EntryKind::Int3,
        _ => EntryKind::Unknown,
    }
}

/// Whether a trap is a system call made through the entry page.
pub fn is_syscall(frame: &TrapFrame) -> bool {
    match kind() {
        EntryKind::Syscall => {
            frame.vector == idt::SYSCALL_VECTOR && frame.rip == kabi::ENTRY_PAGE + STUB_SYSCALL_LEN
        }
        EntryKind::Int3 => frame.vector == 3 && frame.rip == kabi::ENTRY_PAGE + 1,
        EntryKind::Unknown => false,
    }
}

/// LSTAR of each CPU while it points at a Linux personality (0: the kernel's own entry).
static LINUX_LSTAR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Makes this CPU's `syscall` instructions reach the Linux personality entry `entry` of the
/// process about to run. On a platform where `syscall` stays in ring 3 (and jumps to LSTAR) the
/// personality's entry must be LSTAR itself; the MSR is written only when it changes. On real
/// x86 LSTAR stays the kernel's, which reflects Linux `syscall`s (see [`linux_reflect`]).
pub fn route_linux_syscalls(entry: u64) {
    if kind() != EntryKind::Int3 || entry == 0 {
        return;
    }
    let cached = &LINUX_LSTAR[crate::percpu::index()];
    if cached.load(Ordering::Relaxed) != entry {
        user::set_lstar(entry);
        cached.store(entry, Ordering::Relaxed);
    }
}

/// A `syscall` trap that did not come from the entry page (real x86): a Linux process's
/// system call goes on, unchanged, to its personality's entry in ring 3 (`rcx` and `r11` hold
/// the return address and flags, as the instruction left them); anyone else's is refused.
pub fn linux_reflect(frame: &mut TrapFrame, linux_entry: u64) {
    if linux_entry == 0 {
        frame.rax = kabi::Error::NoSys as i64 as u64;
        return;
    }
    frame.rip = linux_entry;
}

/// Runs the probe on the boot CPU (interrupts disabled) and writes the entry page; returns
/// what it found.
pub fn probe() -> Result<EntryKind, &'static str> {
    let mut space = AddressSpace::new().map_err(|_| "no memory for the probe")?;
    let code = mm::alloc_frame().ok_or("no memory for the probe")?;
    let region = Region {
        start: PROBE_CODE,
        end: PROBE_CODE + 4096,
        prot: Prot::READ | Prot::EXEC,
        backing: Backing::Shared,
    };
    space
        .add_region(region)
        .and_then(|_| space.map_page(PROBE_CODE, code, region.prot, false))
        .map_err(|_| "probe mapping failed")?;
    write_frame(code, &PROBE_BYTES);
    let mut frame = proc::user_frame(PROBE_CODE, 0, 0, 0);
    frame.rflags = 0x2; // interrupts off in the probe
    user::load_cr3(space.root());
    PROBING.store(true, Ordering::Release);
    user::probe_run(&mut frame);
    PROBING.store(false, Ordering::Release);
    user::load_cr3(arch::boot::boot_pml4_phys());
    space.destroy();
    mm::free_zeroed(&[code]);
    let found = if SAW_SYSCALL.load(Ordering::Acquire) {
        EntryKind::Syscall
    } else {
        EntryKind::Int3
    };
    let page = mm::alloc_frame().ok_or("no memory for the entry page")?;
    match found {
        EntryKind::Syscall => write_frame(page, &STUB_SYSCALL),
        _ => write_frame(page, &STUB_INT3),
    }
    proc::set_entry_frame(page);
    proc::make_sled_frame()?;
    KIND.store(
        if found == EntryKind::Syscall { 1 } else { 2 },
        Ordering::Release,
    );
    Ok(found)
}

fn write_frame(frame: u64, bytes: &[u8]) {
    mm::write_phys(frame, bytes);
}

/// A trap from user mode while the probe runs: `syscall` reaching ring 0 returns to the probe
/// (which then executes `int3`); anything else ends the probe.
pub fn probe_trap(frame: &mut TrapFrame) -> bool {
    if !PROBING.load(Ordering::Acquire) {
        return false;
    }
    if frame.vector == idt::SYSCALL_VECTOR {
        SAW_SYSCALL.store(true, Ordering::Release);
        return true;
    }
    user::probe_return()
}
