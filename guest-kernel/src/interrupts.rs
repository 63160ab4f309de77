//! What the kernel does on an exception or an interrupt (the entry stubs are in `arch`).

use core::sync::atomic::Ordering;

use k42_guest_lib::frames::FRAME_SIZE;
use k42_guest_lib::kabi;
use k42_paravirt::exit_code;

use crate::arch::{apic, idt, idt::TrapFrame, read_cr2};
use crate::console::print_unlocked;
use crate::memobj::{self, ObjectFault};
use crate::{entry, percpu, platform, proc, sched, syscall};

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

/// Every entry into the kernel: exceptions, interrupts, system calls.
pub fn trap(frame: &mut TrapFrame) {
    let from_user = frame.cs & 3 == 3;
    if !from_user {
        match frame.vector {
            0..32 => exception(frame),
            v => interrupt(v as u8),
        }
        return;
    }
    if entry::probe_trap(frame) {
        return;
    }
    sched::count_entry();
    if entry::is_syscall(frame) {
        syscall::handle(frame);
    } else if frame.vector == idt::SYSCALL_VECTOR {
        let linux_entry =
            sched::current().map_or(0, |d| d.process.linux_entry.load(Ordering::Acquire));
        entry::linux_reflect(frame, linux_entry);
    } else if frame.vector < 32 {
        user_exception(frame);
    } else {
        let vector = frame.vector as u8;
        interrupt(vector);
        if vector == idt::TIMER_VECTOR {
            sched::timer_tick();
        }
    }
    sched::return_to_user(frame);
}

/// Signal for an access its memory cannot back (a page a pager failed).
pub const SIGBUS: i64 = 7;
/// Signal for an access outside the process's memory or its protection.
pub const SIGSEGV: i64 = 11;

/// An exception in user mode: a page fault in a demand-zero region is resolved, one on a paged
/// memory object's page may wait for its pager; anything else goes to the process's trap
/// upcall if it takes one, or ends the process (the kernel and other processes carry on).
fn user_exception(frame: &mut TrapFrame) {
    let Some(current) = sched::current() else {
        return;
    };
    if frame.vector == 14 {
        let address = read_cr2();
        let write = frame.error_code & 2 != 0;
        let exec = frame.error_code & 0x10 != 0;
        let (outcome, replaced) = match current.process.aspace.lock().as_mut() {
            Some(space) => {
                let outcome = match space.fault(address, write, exec) {
                    Ok(()) => ObjectFault::Resolved,
                    Err(_) => match space.region_at(address).copied() {
                        // Memory objects: a paged one's page may have to come from its pager.
                        Some(region) => {
                            memobj::fault(&current, frame, space, &region, address, write, exec)
                                .unwrap_or(ObjectFault::Fatal(SIGSEGV))
                        }
                        None => ObjectFault::Fatal(SIGSEGV),
                    },
                };
                (outcome, space.has_replaced_frames())
            }
            None => (ObjectFault::Fatal(SIGSEGV), false),
        };
        if replaced {
            // A copy-on-write fault moved the page to a copy: other CPUs of the process may
            // still point at the original.
            let page = address & !(FRAME_SIZE - 1);
            crate::tlb::finish_change(&current.process, page..page + FRAME_SIZE, &[]);
        }
        let signal = match outcome {
            ObjectFault::Resolved | ObjectFault::Waiting => return,
            ObjectFault::Fatal(signal) => signal,
        };
        if crate::upcall::trap(&current, frame, address, signal) {
            return;
        }
        crate::kprintln!(
            "process {} ({}): {} at {:#x} ({}{}), rip {:#x}, rsp {:#x}; ended",
            current.process.pid,
            current.process.name,
            if signal == SIGBUS {
                "page its pager could not supply"
            } else {
                "page fault"
            },
            address,
            if write { "write" } else { "read" },
            if exec { ", instruction fetch" } else { "" },
            frame.rip,
            frame.rsp
        );
        proc::exit(&current.process, fault_status(&current.process, signal));
        return;
    }
    let vector = frame.vector as usize;
    let signal = match vector {
        0 => 8,     // SIGFPE
        3 | 1 => 5, // SIGTRAP
        6 => 4,     // SIGILL
        _ => SIGSEGV,
    };
    if crate::upcall::trap(&current, frame, frame.rip, signal) {
        return;
    }
    crate::kprintln!(
        "process {} ({}): {} (vector {}, error code {:#x}) at rip {:#x}; ended",
        current.process.pid,
        current.process.name,
        EXCEPTION_NAMES.get(vector).copied().unwrap_or("exception"),
        vector,
        frame.error_code,
        frame.rip
    );
    proc::exit(&current.process, fault_status(&current.process, signal));
}

/// The exit status of a process a fault ends with `signal`: 128 + signal, as a shell reports
/// it; a Linux process is ended by the signal itself, so its parent's `wait4` sees
/// `WIFSIGNALED` (see [`kabi::EXIT_SIGNALED`]).
fn fault_status(process: &proc::Process, signal: i64) -> i64 {
    if process.flags & kabi::SpawnFlags::LINUX != 0 {
        kabi::EXIT_SIGNALED | signal
    } else {
        128 + signal
    }
}

/// Any CPU exception in the kernel: report vector, error code, RIP, CR2 and registers, and
/// end the VM.
pub fn exception(frame: &mut TrapFrame) {
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
        idt::TLB_VECTOR => crate::tlb::serve_flush_request(),
        v if v == idt::DEVICE_VECTOR_BASE + crate::console_input::LINE as u8 => {
            crate::console_input::interrupt();
        }
        v if (idt::DEVICE_VECTOR_BASE..idt::DEVICE_VECTOR_BASE + idt::DEVICE_VECTORS)
            .contains(&v) =>
        {
            crate::device::interrupt(v);
        }
        _ => {}
    }
    apic::eoi();
}
