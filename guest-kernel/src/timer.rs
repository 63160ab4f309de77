//! Time: the TSC for reading it, the local APIC one-shot timer for waiting on it (no periodic tick).

use core::sync::atomic::Ordering;

use crate::arch::{self, apic, idt, rdtsc};
use crate::{percpu, platform};

/// Busy-waits about `us` microseconds (TSC-based).
pub fn spin_us(us: u64) {
    let end = rdtsc() + us * platform::tsc_khz() / 1000;
    while rdtsc() < end {
        arch::pause();
    }
}

/// Arms this CPU's one-shot timer to fire after `us` microseconds.
pub fn arm_us(us: u64) {
    let ticks = (us * platform::apic_timer_khz() / 1000).clamp(1, u64::from(u32::MAX));
    apic::arm_one_shot(idt::TIMER_VECTOR, ticks as u32);
}

/// Halts until `done()` holds or `timeout_ms` passes; a one-shot timer bounds each halt.
/// Returns whether `done()` held. Leaves interrupts enabled.
pub fn wait_until(timeout_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = rdtsc() + timeout_ms * platform::tsc_khz();
    let have_timer = percpu::try_current().is_some();
    loop {
        arch::disable_interrupts();
        if done() {
            arch::enable_interrupts();
            return true;
        }
        let now = rdtsc();
        if now >= deadline {
            arch::enable_interrupts();
            return false;
        }
        if have_timer {
            let remaining_us = (deadline - now) * 1000 / platform::tsc_khz().max(1);
            arm_us(remaining_us.clamp(200, 100_000));
            arch::enable_interrupts_and_halt();
        } else {
            arch::enable_interrupts();
            arch::pause();
        }
    }
}

/// Timer interrupts this CPU has taken.
pub fn interrupts_taken() -> u64 {
    percpu::current().timer_interrupts.load(Ordering::Acquire)
}

/// Halts until a timer interrupt arrives after `before` interrupts were counted, or until
/// `timeout_ms` passes (a busy check; the timer itself is what wakes us).
pub fn wait_until_interrupt(before: u64, timeout_ms: u64) -> bool {
    let deadline = rdtsc() + timeout_ms * platform::tsc_khz();
    loop {
        arch::disable_interrupts();
        if interrupts_taken() > before {
            arch::enable_interrupts();
            return true;
        }
        if rdtsc() >= deadline {
            arch::enable_interrupts();
            return false;
        }
        // The armed timer (or any other interrupt) ends the halt.
        arch::enable_interrupts_and_halt();
    }
}
