//! Upcalls (K42): instead of resuming a dispatcher where it was, or blocking it in the kernel,
//! the kernel saves the user context in the dispatcher's shared page and enters the process's
//! upcall handler, so the process's own thread scheduler decides what runs next on its CPU.
//! The contract (page fields, registers, reasons) is in `kabi::DispatcherPage`.
//!
//! Four occasions: soft interrupts pending when the kernel resumes an enabled dispatcher
//! ([`kabi::UPCALL_INTERRUPT`]), a call that would block the dispatcher
//! ([`kabi::UPCALL_BLOCKED`]; today a PPC call to a busy server), a page fault that must
//! wait for a pager ([`kabi::UPCALL_PAGE_FAULT`]), and an exception that would otherwise end
//! the process ([`kabi::UPCALL_TRAP`]). A dispatcher that registered no entry point,
//! or runs disabled, gets none: it is resumed, or blocked, as before; one that declined a
//! reason (`DispatcherPage::declined`) does not get that one.

use core::mem::offset_of;
use core::sync::atomic::Ordering;

use k42_guest_lib::kabi::{self, DispatcherPage, SaveArea};

use crate::arch::idt::TrapFrame;
use crate::mm;
use crate::proc::Dispatcher;

/// User RFLAGS an upcall starts with: interrupts enabled, reserved bit 1.
const UPCALL_RFLAGS: u64 = 0x202;

/// Redirects `frame` (the context `d` would resume) into `d`'s upcall handler with `reason`,
/// after saving it in the page. Returns false, changing nothing, when `d` takes no upcalls now
/// (no page, no entry point, disabled, or an entry point or stack outside user space).
fn upcall(d: &Dispatcher, frame: &mut TrapFrame, reason: u64) -> bool {
    let (Some(entry), Some(stack), Some(disabled)) = (
        d.page_word(offset_of!(DispatcherPage, upcall_entry)),
        d.page_word(offset_of!(DispatcherPage, upcall_stack)),
        d.page_word(kabi::DISABLED_OFFSET),
    ) else {
        return false;
    };
    let entry = entry.load(Ordering::Acquire);
    let stack = stack.load(Ordering::Acquire) & !0xf;
    if entry == 0 || disabled.load(Ordering::Acquire) != 0 {
        return false;
    }
    let declined = mm::frame_atomic32(d.page, offset_of!(DispatcherPage, declined));
    if reason < 32 && declined.load(Ordering::Acquire) & (1 << reason) != 0 {
        return false;
    }
    // The frame is resumed by iretq in ring 0: never hand it a non-canonical address.
    if !kabi::user_range_ok(entry, 1) || !kabi::user_range_ok(stack.wrapping_sub(64), 64) {
        return false;
    }
    let saved = SaveArea {
        rax: frame.rax,
        rbx: frame.rbx,
        rcx: frame.rcx,
        rdx: frame.rdx,
        rsi: frame.rsi,
        rdi: frame.rdi,
        rbp: frame.rbp,
        r8: frame.r8,
        r9: frame.r9,
        r10: frame.r10,
        r11: frame.r11,
        r12: frame.r12,
        r13: frame.r13,
        r14: frame.r14,
        r15: frame.r15,
        rip: frame.rip,
        rsp: frame.rsp,
        rflags: frame.rflags,
    };
    for (i, word) in saved.to_words().into_iter().enumerate() {
        mm::frame_atomic(d.page, kabi::SAVE_AREA_OFFSET + 8 * i).store(word, Ordering::Relaxed);
    }
    disabled.store(1, Ordering::Release);
    let retry = mm::frame_atomic32(d.page, offset_of!(DispatcherPage, retry_count));
    frame.rip = entry;
    frame.rsp = stack;
    frame.rflags = UPCALL_RFLAGS;
    frame.rdi = kabi::dispatcher_page(d.index);
    frame.rsi = reason;
    frame.rdx = u64::from(retry.load(Ordering::Acquire));
    true
}

/// If `d` (about to resume with `frame`) has soft interrupts pending and takes upcalls, turns
/// the resumption into an interrupt upcall.
pub fn deliver_pending(d: &Dispatcher, frame: &mut TrapFrame) {
    let pending = d
        .page_word(offset_of!(DispatcherPage, soft_interrupts))
        .is_some_and(|w| w.load(Ordering::Acquire) != 0);
    if pending {
        upcall(d, frame, kabi::UPCALL_INTERRUPT);
    }
}

/// `d`'s call, whose re-issue context is `frame`, cannot proceed now: upcalls `d` so another of
/// its threads runs. Returns false if `d` takes no upcalls (the caller blocks it instead).
pub fn blocked(d: &Dispatcher, frame: &mut TrapFrame) -> bool {
    upcall(d, frame, kabi::UPCALL_BLOCKED)
}

/// `d` faulted at `address` (its context in `frame`, at the faulting instruction) on a page
/// that is not there yet: upcalls `d` so another of its threads runs. Returns false if `d`
/// takes no upcalls (the caller blocks it instead).
pub fn page_fault(d: &Dispatcher, frame: &mut TrapFrame, address: u64) -> bool {
    if !upcall(d, frame, kabi::UPCALL_PAGE_FAULT) {
        return false;
    }
    frame.rcx = address;
    true
}

/// `d` took an exception it cannot resume from as it is (its context in `frame`, at the
/// faulting instruction; `address` the faulting address, or the instruction's) that would end
/// its process with `signal`: upcalls `d` so the process handles it (a Linux process runs its
/// signal handler). Returns false if `d` takes no trap upcalls (the caller ends the process).
pub fn trap(d: &Dispatcher, frame: &mut TrapFrame, address: u64, signal: i64) -> bool {
    let vector = frame.vector;
    let error_code = frame.error_code;
    if !upcall(d, frame, kabi::UPCALL_TRAP) {
        return false;
    }
    frame.rcx = address;
    frame.r8 = vector | error_code << 8;
    frame.r9 = signal as u64;
    true
}

/// Tells `d` that a call it was upcalled about may now be re-issued: bumps its retry count,
/// then posts [`kabi::SOFT_INTERRUPT_RETRY`].
pub fn retry(d: &alloc::sync::Arc<Dispatcher>) {
    if d.page == 0 {
        return;
    }
    mm::frame_atomic32(d.page, offset_of!(DispatcherPage, retry_count))
        .fetch_add(1, Ordering::AcqRel);
    crate::sched::post_soft_interrupt(d, kabi::SOFT_INTERRUPT_RETRY);
}
