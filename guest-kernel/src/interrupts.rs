//! What the kernel does on an exception or an interrupt (the entry stubs are in `arch`).

use core::sync::atomic::Ordering;

use k42_paravirt::exit_code;

use crate::arch::{apic, idt, idt::ExceptionFrame, read_cr2};
use crate::console::print_unlocked;
use crate::{percpu, platform};

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 floating point",
    "alignment check",
    "machine check",
    "SIMD floating point",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// Any CPU exception: report vector, error code, RIP, CR2 and registers, and end the VM.
pub fn exception(frame: &mut ExceptionFrame) {
    let vector = frame.vector as usize;
    let name = EXCEPTION_NAMES.get(vector).copied().unwrap_or("unknown");
    print_unlocked(format_args!(
        "\nKERNEL EXCEPTION on cpu {}: vector {} ({}), error code {:#x}\n  rip {:#018x} cr2 {:#018x} rsp {:#018x} rflags {:#x} cs {:#x}\n  rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}\n",
        percpu::current_index(), vector, name, frame.error_code, frame.rip, read_cr2(), frame.rsp,
        frame.rflags, frame.cs, frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    ));
    platform::shutdown(exit_code::EXCEPTION);
}

/// A device or inter-processor interrupt.
pub fn interrupt(vector: u8) {
    let cpu = percpu::current();
    match vector {
        idt::TIMER_VECTOR => {
            // No clustered-object call here: a first call on a CPU allocates its rep, and an
            // interrupt must never allocate (it may have interrupted the heap's owner).
            cpu.timer_interrupts.fetch_add(1, Ordering::AcqRel);
        }
        idt::PING_VECTOR => {
            cpu.pings.fetch_add(1, Ordering::AcqRel);
            if let Some(asker) = percpu::cpu(cpu.reply_to_index.load(Ordering::Acquire) as usize) {
                asker.ping_answers.fetch_add(1, Ordering::AcqRel);
            }
            apic::eoi();
            apic::send_ipi(cpu.reply_to.load(Ordering::Acquire), idt::WAKE_VECTOR);
            return;
        }
        idt::WAKE_VECTOR => {
            cpu.wakes.fetch_add(1, Ordering::AcqRel);
        }
        _ => {}
    }
    apic::eoi();
}
