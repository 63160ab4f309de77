//! How user code enters the kernel on this platform, found by a probe at boot
//! (PLATFORM.md): on real x86 `syscall` enters ring 0; on an emulating KVM it stays in ring 3
//! and jumps to LSTAR, so there user code uses `int3` through a DPL-3 gate instead. Every
//! process maps the same read-only entry page, whose stub uses the instruction that works.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use k42_guest_lib::kabi::{self, Prot};

use crate::arch::{self, idt, idt::TrapFrame, user};
use crate::mm::aspace::{AddressSpace, Backing, Region};
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
        EntryKind::Syscall => frame.vector == idt::SYSCALL_VECTOR,
        EntryKind::Int3 => frame.vector == 3 && frame.rip == kabi::ENTRY_PAGE + 1,
        EntryKind::Unknown => false,
    }
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
