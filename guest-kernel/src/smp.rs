//! Bringing up the other CPUs and asking them to do work.
//!
//! On k42vm a secondary vCPU is started by a hypercall directly in 64-bit mode (about 50 µs);
//! elsewhere by INIT/SIPI through the real-mode trampoline, one CPU at a time.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch::{apic, boot, idt, smp as arch_smp};
use crate::percpu::{self, Command, PerCpu};
use crate::{platform, timer};

static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Number of CPUs running (the boot CPU included).
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Starts every CPU in `apic_ids` except the boot CPU; returns how many came online.
pub fn start_secondaries(apic_ids: &[u32]) -> usize {
    let bsp = apic::id();
    let mut index = 1;
    let mut trampoline_installed = false;
    for &apic_id in apic_ids.iter().filter(|&&id| id != bsp) {
        if index >= percpu::MAX_CPUS {
            crate::kprintln!("smp: ignoring CPUs beyond {}", percpu::MAX_CPUS);
            break;
        }
        let cpu = percpu::create(index, apic_id);
        if platform::on_k42vm() {
            let rip = arch_smp::ap_entry64 as *const () as u64;
            let status = platform::start_cpu(
                index as u32,
                rip,
                cpu.kernel_stack_top,
                boot::boot_pml4_phys(),
                cpu.address(),
            );
            if status != 0 {
                crate::kprintln!(
                    "smp: k42vm refused to start cpu {} (status {})",
                    index,
                    status
                );
            }
        } else {
            if !trampoline_installed {
                arch_smp::install_trampoline();
                trampoline_installed = true;
            }
            arch_smp::start_with_init_sipi(
                apic_id,
                cpu.kernel_stack_top,
                cpu.address(),
                timer::spin_us,
            );
            if !timer::wait_until(1000, || cpu.online.load(Ordering::Acquire)) {
                crate::kprintln!("smp: cpu {} (APIC ID {}) did not start", index, apic_id);
            }
        }
        index += 1;
    }
    let expected = index;
    timer::wait_until(2000, || online() == expected);
    online()
}

/// The secondary CPUs' Rust entry (from `arch::smp::ap_entry64`).
pub fn ap_main(arg: u64) -> ! {
    // SAFETY-free cast: `arg` is the address of a leaked PerCpu the boot CPU passed us.
    let cpu: &'static PerCpu =
        percpu::cpu_by_address(arg).expect("AP started with a valid per-CPU block");
    percpu::install(cpu);
    apic::init(idt::SPURIOUS_VECTOR);
    cpu.online.store(true, Ordering::Release);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    apic::send_ipi(percpu::cpu(0).map_or(0, |c| c.apic_id), idt::WAKE_VECTOR);
    crate::sched::run()
}

/// Runs the command another CPU asked this one to run (see [`run_on`]), if any. Called from
/// the idle loop with interrupts disabled.
pub fn run_pending_command() {
    let cpu = percpu::current();
    let command = cpu.command.load(Ordering::Acquire);
    if command != Command::None as u32 {
        let result = crate::ktest::run_command(command);
        cpu.command_result.store(result, Ordering::Release);
        cpu.command.store(Command::None as u32, Ordering::Release);
        cpu.commands_done.fetch_add(1, Ordering::AcqRel);
        apic::send_ipi(cpu.reply_to.load(Ordering::Acquire), idt::WAKE_VECTOR);
    }
}

/// Asks CPU `target` (not the caller) to start `command` and returns at once; returns the
/// completion count to pass to [`wait_done`].
pub fn start_on(target: &'static PerCpu, command: Command) -> u64 {
    let me = percpu::current();
    let before = target.commands_done.load(Ordering::Acquire);
    target.reply_to.store(me.apic_id, Ordering::Release);
    target
        .reply_to_index
        .store(me.index as u32, Ordering::Release);
    target.command.store(command as u32, Ordering::Release);
    apic::send_ipi(target.apic_id, idt::PING_VECTOR);
    before
}

/// Waits (up to `timeout_ms`) until `target` finished the command started with [`start_on`].
pub fn wait_done(target: &'static PerCpu, before: u64, timeout_ms: u64) -> Option<u32> {
    timer::wait_until(timeout_ms, || {
        target.commands_done.load(Ordering::Acquire) != before
    })
    .then(|| target.command_result.load(Ordering::Acquire))
}

/// Asks CPU `target` to run `command` and waits (up to `timeout_ms`) for its result.
/// Returns `None` on timeout.
pub fn run_on(target: &'static PerCpu, command: Command, timeout_ms: u64) -> Option<u32> {
    if target.index == percpu::current().index {
        return Some(crate::ktest::run_command(command as u32));
    }
    let before = start_on(target, command);
    wait_done(target, before, timeout_ms)
}
