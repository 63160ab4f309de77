//! Which hypervisor we run on, and the few services it gives: console, shutdown, boot-stage
//! markers, test reports, secondary-CPU start.
//!
//! On k42vm (CPUID signature) these are hypercalls; elsewhere the kernel falls back to the 8250
//! UART and QEMU's `isa-debug-exit`, so the same ELF boots on QEMU.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use k42_paravirt as pv;
use pv::{BootStage, Hypercall};

use crate::arch::{self, cpuid, halt_forever, inb, outb, outl, virt_to_phys};

static ON_K42VM: AtomicBool = AtomicBool::new(false);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
static APIC_TIMER_KHZ: AtomicU64 = AtomicU64::new(1_000_000);

/// Detects the hypervisor and its timing information. First thing the boot CPU does.
pub fn detect() {
    let sig = cpuid(pv::CPUID_SIGNATURE_LEAF, 0);
    let mut bytes = [0u8; 12];
    bytes[0..4].copy_from_slice(&sig.ebx.to_le_bytes());
    bytes[4..8].copy_from_slice(&sig.ecx.to_le_bytes());
    bytes[8..12].copy_from_slice(&sig.edx.to_le_bytes());
    let k42vm = bytes == pv::CPUID_SIGNATURE;
    ON_K42VM.store(k42vm, Ordering::Relaxed);
    // The de-facto timing leaf (k42vm, and VMware/QEMU when they offer it).
    if sig.eax >= pv::CPUID_TIMING_LEAF {
        let timing = cpuid(pv::CPUID_TIMING_LEAF, 0);
        if timing.eax != 0 {
            TSC_KHZ.store(u64::from(timing.eax), Ordering::Relaxed);
        }
        if timing.ebx != 0 {
            APIC_TIMER_KHZ.store(u64::from(timing.ebx), Ordering::Relaxed);
        }
    }
    if TSC_KHZ.load(Ordering::Relaxed) == 0 {
        // CPUID 0x15 (crystal ratio) when present, else assume 1 GHz (only affects reported times).
        let max = cpuid(0, 0).eax;
        let mut khz = 0;
        if max >= 0x15 {
            let r = cpuid(0x15, 0);
            if r.eax != 0 && r.ecx != 0 {
                khz = u64::from(r.ecx) * u64::from(r.ebx) / u64::from(r.eax) / 1000;
            }
        }
        TSC_KHZ.store(if khz == 0 { 1_000_000 } else { khz }, Ordering::Relaxed);
    }
}

/// Whether we run on k42vm (its paravirtual interface is available).
pub fn on_k42vm() -> bool {
    ON_K42VM.load(Ordering::Relaxed)
}

/// TSC frequency in kHz (from the hypervisor, CPUID 0x15, or assumed 1 GHz).
pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Local APIC timer frequency in kHz (divide-by-1).
pub fn apic_timer_khz() -> u64 {
    APIC_TIMER_KHZ.load(Ordering::Relaxed)
}

/// Converts a TSC delta to nanoseconds.
pub fn tsc_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000 / u128::from(tsc_khz().max(1))) as u64
}

fn hypercall<T>(call: Hypercall, block: &mut T) {
    let phys = virt_to_phys(block as *mut T as u64);
    debug_assert!(
        phys < (1 << 32),
        "hypercall parameter blocks live below 4 GiB"
    );
    outl(call.port(), phys as u32);
}

/// Marks a boot stage (k42vm timestamps it; no-op elsewhere).
pub fn boot_stage(stage: BootStage) {
    if on_k42vm() {
        outl(Hypercall::BootStage.port(), stage as u32);
    }
}

/// Nanoseconds to add to the TSC clock (`tsc_to_ns(rdtsc())`) for Unix time; 0 while unknown.
static WALL_CLOCK_OFFSET: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Asks k42vm for the wall-clock time once and keeps its offset from the TSC clock (other
/// machines: unknown, 0).
pub fn init_wall_clock() {
    if !on_k42vm() {
        return;
    }
    let mut block = pv::WallClock::default();
    hypercall(Hypercall::WallClock, &mut block);
    if block.status == pv::status::OK {
        let offset = block.unix_ns.saturating_sub(tsc_to_ns(arch::rdtsc()));
        WALL_CLOCK_OFFSET.store(offset, core::sync::atomic::Ordering::Relaxed);
    }
}

/// The offset from the TSC clock to Unix time in nanoseconds (0: unknown).
pub fn wall_clock_offset() -> u64 {
    WALL_CLOCK_OFFSET.load(core::sync::atomic::Ordering::Relaxed)
}

/// Issues the no-op hypercall (benchmarks the round trip).
pub fn nop_hypercall() {
    outl(Hypercall::Nop.port(), 0);
}

/// Writes raw bytes to the console (the paravirtual console on k42vm, the UART elsewhere).
pub fn console_write(bytes: &[u8]) {
    if on_k42vm() {
        for chunk in bytes.chunks(pv::CONSOLE_WRITE_MAX as usize) {
            let mut block = pv::ConsoleWrite {
                buf_gpa: virt_to_phys(chunk.as_ptr() as u64),
                len: chunk.len() as u32,
                status: 0,
            };
            hypercall(Hypercall::ConsoleWrite, &mut block);
        }
    } else {
        for &byte in bytes {
            if byte == b'\n' {
                uart_put(b'\r');
            }
            uart_put(byte);
        }
    }
}

fn uart_put(byte: u8) {
    let port = pv::COM1_PORT;
    let mut spins = 0;
    while inb(port + 5) & 0x20 == 0 && spins < 100_000 {
        arch::pause();
        spins += 1;
    }
    outb(port, byte);
}

/// Reports a test plan, result or metric (a hypercall on k42vm, a console line elsewhere).
pub fn report(kind: pv::ReportKind, name: &str, value: u64) {
    if on_k42vm() {
        let mut block = pv::TestReport {
            kind: kind as u32,
            cpu: crate::percpu::current_index() as u32,
            name_gpa: virt_to_phys(name.as_ptr() as u64),
            name_len: name.len() as u32,
            status: 0,
            value,
        };
        hypercall(Hypercall::TestReport, &mut block);
    } else {
        // The same line k42vm prints for a report, so harnesses parse one format.
        match kind {
            pv::ReportKind::Plan => crate::kprintln!("ktest plan {}", value),
            pv::ReportKind::Pass => crate::kprintln!("ktest pass {}", name),
            pv::ReportKind::Fail => crate::kprintln!("ktest FAIL {} ({})", name, value),
            pv::ReportKind::Metric => crate::kprintln!("metric {} {}", name, value),
        }
    }
}

/// Starts secondary vCPU `cpu` in 64-bit mode through k42vm. Returns the hypercall status.
pub fn start_cpu(cpu: u32, rip: u64, rsp: u64, cr3: u64, arg: u64) -> i32 {
    let mut block = pv::CpuStart {
        cpu,
        status: 0,
        rip,
        rsp,
        cr3,
        arg,
    };
    hypercall(Hypercall::CpuStart, &mut block);
    block.status
}

/// Performs bulk copy/zero operations at host speed through k42vm (one hypercall per
/// [`pv::MEM_OPS_MAX`] operations). Returns the first failing status. Only on k42vm.
pub fn mem_ops(ops: &[pv::MemOp]) -> Result<(), i32> {
    debug_assert!(on_k42vm());
    for batch in ops.chunks(pv::MEM_OPS_MAX as usize) {
        let mut block = pv::MemOps {
            ops_gpa: virt_to_phys(batch.as_ptr() as u64),
            count: batch.len() as u32,
            status: 0,
            done: 0,
            reserved: 0,
        };
        hypercall(Hypercall::MemOps, &mut block);
        if block.status != pv::status::OK {
            return Err(block.status);
        }
    }
    Ok(())
}

/// Ends the VM with `code`: k42vm's shutdown hypercall, or QEMU's isa-debug-exit.
pub fn shutdown(code: u32) -> ! {
    if on_k42vm() {
        let mut block = pv::Shutdown {
            exit_code: code,
            reserved: 0,
        };
        hypercall(Hypercall::Shutdown, &mut block);
    } else {
        // QEMU exits with (code << 1) | 1; 0x3f8-only machines just halt.
        outl(pv::QEMU_DEBUG_EXIT_PORT, code);
    }
    halt_forever()
}
