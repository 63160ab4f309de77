//! The machine layer of user-level threads, and the only `unsafe` code of [`super`]: aligned
//! stacks with a header at their base, the set of our stack bases, the x86_64 context switch,
//! and the entry trampolines of fresh contexts.
//!
//! A saved context is a stack pointer. The switch pushes the SysV callee-saved registers (rbp,
//! rbx, r12-r15) and the SSE/x87 control words (MXCSR, x87 FCW; in builds with SSE) on the old
//! stack, stores rsp, loads the new rsp and pops the same set. Everything else is caller-saved, so the compiler has
//! already saved what it needs around the call. A fresh context is a hand-built frame of the same
//! shape whose return address is a stub that calls `entry(arg)` on an aligned stack.
//!
//! Contracts the scheduler keeps (each function below names its own):
//! - A context is resumed at most once per save, and only while its stack is alive: a thread is
//!   in exactly one place (running, a run queue, an inbox, a timer or parked), checked by the
//!   scheduler's `running` flag.
//! - A thread's stack is freed only with its control block, and only if the thread finished or
//!   never started; otherwise it is leaked (frames on it are never resumed and never dropped,
//!   which keeps `Pin` promises).
//! - The header of a thread stack names its control block, which owns the stack; the header of
//!   a scheduler stack names the runtime, which `run_dispatcher` keeps alive while on it.
#![allow(unsafe_code)]

use alloc::alloc::{alloc, alloc_zeroed, dealloc, handle_alloc_error, Layout};
use alloc::sync::Arc;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::sched::{self, Sh, Tcb};

/// log2 of [`STACK_SIZE`].
const STACK_SHIFT: u32 = 16;

/// Size (and alignment) of every user-level thread's stack, and of each dispatcher's scheduler
/// stack: 64 KiB. Its header takes the lowest 32 bytes.
pub const STACK_SIZE: usize = 1 << STACK_SHIFT;

/// Marks an intact stack header ("K42uthrd").
const MAGIC: u64 = 0x4b34_3275_7468_7264;

/// Initial MXCSR (all exceptions masked, round to nearest) and x87 control word (the SysV
/// defaults), as the 8-byte slot the switch keeps them in: MXCSR at +0, FCW at +4.
const INITIAL_CONTROL: usize = 0x037f << 32 | 0x1f80;

/// The base of every stack here.
#[repr(C)]
struct Header {
    magic: u64,
    /// The control block owning this stack, or null on a scheduler stack.
    thread: *const Tcb,
    /// The runtime of a scheduler stack (`None` on a thread stack).
    shared: Option<NonNull<Sh>>,
    /// The dispatcher of a scheduler stack.
    dispatcher: usize,
}

// The context switch and the first frame of a fresh context.
//
// k42_uthread_switch(save: *mut usize [rdi], to: usize [rsi]): saves the current context,
// stores its stack pointer in *save and resumes the context whose stack pointer is `to`.
// k42_uthread_start: where a fresh context "returns" to; r12 = argument, r13 = entry function.
//
// The 8-byte slot below the registers holds MXCSR (+0) and the x87 control word (+4) when the
// code is built with SSE (the host). A soft-float build (x86_64-unknown-none, as the guest's
// programs are) never touches SSE or x87 state, and its kernel need not enable them (ldmxcsr
// faults without CR4.OSFXSR), so that build leaves the slot alone.
macro_rules! switch_asm {
    ($($save:literal),* ; $($load:literal),*) => {
        core::arch::global_asm!(
            ".pushsection .text.k42_uthread,\"ax\",@progbits",
            ".p2align 4",
            ".global k42_uthread_switch",
            ".hidden k42_uthread_switch",
            ".type k42_uthread_switch,@function",
            "k42_uthread_switch:",
            "push rbp",
            "push rbx",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            "sub rsp, 8",
            $($save,)*
            "mov qword ptr [rdi], rsp",
            "mov rsp, rsi",
            $($load,)*
            "add rsp, 8",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop rbx",
            "pop rbp",
            "ret",
            ".size k42_uthread_switch, . - k42_uthread_switch",
            ".p2align 4",
            ".global k42_uthread_start",
            ".hidden k42_uthread_start",
            ".type k42_uthread_start,@function",
            "k42_uthread_start:",
            "xor ebp, ebp",
            "mov rdi, r12",
            "and rsp, -16",
            "call r13",
            "ud2",
            ".size k42_uthread_start, . - k42_uthread_start",
            ".popsection",
        );
    };
}

#[cfg(target_feature = "sse")]
switch_asm!(
    "stmxcsr dword ptr [rsp]", "fnstcw word ptr [rsp + 4]";
    "ldmxcsr dword ptr [rsp]", "fldcw word ptr [rsp + 4]"
);
#[cfg(not(target_feature = "sse"))]
switch_asm!(;);

extern "C" {
    fn k42_uthread_switch(save: *mut usize, to: usize);
    fn k42_uthread_start();
}

/// Saves the running context into `*save` and resumes the context `to`; returns when someone
/// resumes the saved context.
///
/// Contract: `to` was saved by `switch` (or built by [`Stack::fresh_frame`]), has not been
/// resumed since, and its stack is alive; `save` is valid for a write now and stays allocated
/// until the saved context is resumed or abandoned for good.
pub(crate) fn switch(save: *mut usize, to: usize) {
    debug_assert!(to != 0 && to.is_multiple_of(8));
    // SAFETY: per the contract, `to` is a suspended context of the shape the switch pops, on a
    // live stack, resumed once; `save` is writable. The callee-saved registers the compiler
    // relies on are restored by whoever resumes us, through the same routine.
    unsafe { k42_uthread_switch(save, to) }
}

/// The running code's stack pointer.
#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads rsp; no memory access, no stack use, flags preserved.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// One aligned stack: [`STACK_SIZE`] bytes at a [`STACK_SIZE`]-aligned base, listed in the
/// registry while it exists.
pub(crate) struct Stack {
    base: NonNull<u8>,
}

// SAFETY: a `Stack` is plain owned memory; which context runs on it is governed by the
// scheduler, and its header is written only before any context runs on it.
unsafe impl Send for Stack {}
// SAFETY: shared access only reads the header magic.
unsafe impl Sync for Stack {}

impl Stack {
    fn layout() -> Layout {
        // A power-of-two size aligned to itself is always a valid layout.
        Layout::from_size_align(STACK_SIZE, STACK_SIZE).expect("stack layout")
    }

    /// Allocates a stack whose header names `thread` or, if null, the scheduler of
    /// `dispatcher` in `shared`. Contract: a non-null `thread` owns this stack; a non-null
    /// `shared` outlives every context run on it.
    fn with_header(thread: *const Tcb, shared: Option<NonNull<Sh>>, dispatcher: usize) -> Stack {
        let layout = Self::layout();
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc(layout) };
        let Some(base) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        debug_assert_eq!(base.as_ptr() as usize % STACK_SIZE, 0);
        let header = Header {
            magic: MAGIC,
            thread,
            shared,
            dispatcher,
        };
        // SAFETY: the block is ours, aligned to STACK_SIZE (more than Header's alignment) and
        // larger than a Header.
        unsafe { ptr::write(base.as_ptr().cast::<Header>(), header) };
        registry::insert(base.as_ptr() as usize);
        Stack { base }
    }

    /// A stack for the thread whose control block is at `thread` (the block that will own it).
    pub(crate) fn for_thread(thread: *const Tcb) -> Stack {
        Stack::with_header(thread, None, 0)
    }

    /// Whether the header is intact (a thread that overflowed its stack overwrites it first).
    pub(crate) fn intact(&self) -> bool {
        // SAFETY: the header was written in `with_header` and the block is alive (we own it);
        // a volatile read because contexts running on this stack may have overwritten it.
        unsafe { ptr::read_volatile(self.base.as_ptr().cast::<u64>()) == MAGIC }
    }

    /// Builds a fresh context on this stack that calls `entry(arg)` when first resumed, and
    /// returns it. Contract: no context is running or suspended on this stack.
    pub(crate) fn fresh_frame(&self, entry: extern "C" fn(usize) -> !, arg: usize) -> usize {
        let top = self.base.as_ptr() as usize + STACK_SIZE;
        // From the saved stack pointer upwards: control words, r15, r14, r13 = entry,
        // r12 = arg, rbx, rbp, return address = the start stub, and a zero word so the stub
        // starts with rsp = top - 8 (it realigns before calling).
        let frame: [usize; 9] = [
            INITIAL_CONTROL,
            0,
            0,
            entry as usize,
            arg,
            0,
            0,
            k42_uthread_start as *const () as usize,
            0,
        ];
        let sp = top - frame.len() * 8;
        // SAFETY: [sp, top) lies inside this stack, above the header, 8-aligned, and no context
        // uses the stack (contract).
        unsafe { ptr::copy_nonoverlapping(frame.as_ptr(), sp as *mut usize, frame.len()) };
        sp
    }

    /// Gives up the memory for good (a suspended context on it is never resumed or dropped).
    pub(crate) fn leak(self) {
        registry::remove(self.base.as_ptr() as usize);
        core::mem::forget(self);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        registry::remove(self.base.as_ptr() as usize);
        // SAFETY: allocated in `with_header` with this layout; no context runs or will resume
        // on it (the owner drops a stack only when its thread finished or never started, and
        // the scheduler stack only after switching back off it).
        unsafe { dealloc(self.base.as_ptr(), Self::layout()) };
    }
}

/// The entry of a thread's fresh context: runs the thread and switches away for good.
extern "C" fn thread_start(tcb: usize) -> ! {
    let back = sched::thread_main(CurrentThread {
        tcb: tcb as *const Tcb,
        _local: PhantomData,
    });
    let mut dead = 0usize;
    // The scheduler context `back` was saved when it switched to us; this frame holds no
    // references, so the scheduler may free this stack as soon as it runs.
    switch(&mut dead, back);
    unreachable!("a finished user-level thread was resumed");
}

/// The entry function for thread contexts, for [`Stack::fresh_frame`].
pub(crate) const THREAD_ENTRY: extern "C" fn(usize) -> ! = thread_start;

/// What a scheduler stack runs, and where to go back afterwards.
struct Launch<'a> {
    body: &'a mut dyn FnMut(),
    back: AtomicUsize,
}

extern "C" fn scheduler_start(launch: usize) -> ! {
    let back = {
        // SAFETY: `launch` is the address of the `Launch` in `on_scheduler_stack`'s frame,
        // which is suspended in `switch` until we switch back below, so it is alive and
        // nothing else touches it.
        let launch = unsafe { &mut *(launch as *mut Launch<'_>) };
        (launch.body)();
        launch.back.load(Ordering::Relaxed)
    };
    let mut dead = 0usize;
    switch(&mut dead, back);
    unreachable!("a finished scheduler context was resumed");
}

/// Runs `body` on a fresh [`STACK_SIZE`]-aligned stack whose header names dispatcher
/// `dispatcher` of `shared`, then frees the stack. Contract: `shared` outlives the call.
pub(crate) fn on_scheduler_stack(shared: &Sh, dispatcher: usize, body: &mut dyn FnMut()) {
    let stack = Stack::with_header(ptr::null(), Some(NonNull::from(shared)), dispatcher);
    let mut launch = Launch {
        body,
        back: AtomicUsize::new(0),
    };
    let entry = stack.fresh_frame(scheduler_start, &mut launch as *mut Launch<'_> as usize);
    switch(launch.back.as_ptr(), entry);
    // `scheduler_start` switched back after `body` returned: nothing runs on the stack now.
    drop(stack);
}

/// The running thread, found from the stack pointer. Not `Send`: it is only meaningful on the
/// thread's own stack.
#[derive(Clone, Copy)]
pub(crate) struct CurrentThread {
    tcb: *const Tcb,
    _local: PhantomData<*const ()>,
}

impl CurrentThread {
    /// The running thread's control block.
    pub(crate) fn get(&self) -> &Tcb {
        // SAFETY: a `CurrentThread` is made only on the thread's own stack, from its header,
        // and used there; while the thread runs its dispatcher holds an `Arc` to the block.
        unsafe { &*self.tcb }
    }

    /// A counted reference to the running thread's control block.
    pub(crate) fn arc(&self) -> Arc<Tcb> {
        // SAFETY: the pointer came from `Arc::as_ptr` of the block (which owns this stack) and
        // the block is alive (see `get`); adding a count and adopting it is balanced.
        unsafe {
            Arc::increment_strong_count(self.tcb);
            Arc::from_raw(self.tcb)
        }
    }
}

/// The scheduler of a dispatcher, found from the stack pointer on its stack.
#[derive(Clone, Copy)]
pub(crate) struct CurrentScheduler {
    shared: NonNull<Sh>,
    dispatcher: usize,
    _local: PhantomData<*const ()>,
}

impl CurrentScheduler {
    /// The runtime this scheduler belongs to.
    pub(crate) fn shared(&self) -> &Sh {
        // SAFETY: `run_dispatcher` holds an `Arc` to the runtime while its scheduler stack
        // exists, and this value is used only on that stack.
        unsafe { self.shared.as_ref() }
    }

    /// The dispatcher's index.
    pub(crate) fn dispatcher(&self) -> usize {
        self.dispatcher
    }
}

/// What the running code is.
pub(crate) enum Current {
    /// A user-level thread.
    Thread(CurrentThread),
    /// A dispatcher's scheduler loop (or a platform call made from it).
    Scheduler(CurrentScheduler),
}

/// Finds the running thread or scheduler from the stack pointer; `None` when the code is not on
/// one of our stacks (for example a host test's own OS thread).
pub(crate) fn current() -> Option<Current> {
    let base = stack_pointer() & !(STACK_SIZE - 1);
    if !registry::contains(base) {
        return None;
    }
    // SAFETY: `base` is the base of a live stack of ours (registered stacks are allocated and
    // carry a header), and we are running on it, so it is not freed under us.
    let header = unsafe { &*(base as *const Header) };
    assert!(
        header.magic == MAGIC,
        "user-level stack overflow: the header at the base of stack {base:#x} was overwritten \
         (stacks are {STACK_SIZE} bytes; keep large data on the heap)"
    );
    Some(match header.shared {
        Some(shared) => Current::Scheduler(CurrentScheduler {
            shared,
            dispatcher: header.dispatcher,
            _local: PhantomData,
        }),
        None => Current::Thread(CurrentThread {
            tcb: header.thread,
            _local: PhantomData,
        }),
    })
}

/// The set of live stack bases, as a three-level radix tree of bits over the address space
/// (indexed by `base >> STACK_SHIFT`, user addresses below 2^48). Lock-free: inner nodes are
/// installed once by CAS and never freed; leaves are bitmaps.
mod registry {
    use super::*;

    const INDEX_BITS: u32 = 48 - STACK_SHIFT;
    const LEAF_BITS: u32 = 10;
    const MID_BITS: u32 = 11;
    const ROOT_BITS: u32 = INDEX_BITS - LEAF_BITS - MID_BITS;

    struct Mid {
        leaves: [AtomicPtr<Leaf>; 1 << MID_BITS],
    }

    struct Leaf {
        words: [AtomicU64; (1 << LEAF_BITS) / 64],
    }

    static ROOT: [AtomicPtr<Mid>; 1 << ROOT_BITS] =
        [const { AtomicPtr::new(ptr::null_mut()) }; 1 << ROOT_BITS];

    /// (root slot, mid slot, leaf word, bit) of a stack base; `None` beyond 2^48.
    fn split(base: usize) -> Option<(usize, usize, usize, u64)> {
        let index = base >> STACK_SHIFT;
        if index >> INDEX_BITS != 0 {
            return None;
        }
        let leaf_index = index & ((1 << LEAF_BITS) - 1);
        let mid = (index >> LEAF_BITS) & ((1 << MID_BITS) - 1);
        let root = index >> (LEAF_BITS + MID_BITS);
        Some((root, mid, leaf_index / 64, 1 << (leaf_index % 64)))
    }

    /// The node in `slot`, installing a zeroed one if there is none.
    fn node<T>(slot: &AtomicPtr<T>) -> &T {
        let existing = slot.load(Ordering::Acquire);
        if !existing.is_null() {
            // SAFETY: installed nodes are never freed.
            return unsafe { &*existing };
        }
        let layout = Layout::new::<T>();
        // SAFETY: `T` is `Mid` or `Leaf`, non-zero-sized arrays of atomics, for which all-zero
        // bytes are a valid value (null pointers, zero words).
        let fresh = unsafe { alloc_zeroed(layout) }.cast::<T>();
        if fresh.is_null() {
            handle_alloc_error(layout);
        }
        match slot.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: we just installed it; installed nodes are never freed.
            Ok(_) => unsafe { &*fresh },
            Err(winner) => {
                // SAFETY: `fresh` came from `alloc_zeroed(layout)` and was never shared.
                unsafe { dealloc(fresh.cast(), layout) };
                // SAFETY: installed nodes are never freed.
                unsafe { &*winner }
            }
        }
    }

    /// The existing node in `slot`, if any.
    fn existing<T>(slot: &AtomicPtr<T>) -> Option<&T> {
        let node = slot.load(Ordering::Acquire);
        // SAFETY: installed nodes are never freed.
        (!node.is_null()).then(|| unsafe { &*node })
    }

    /// Lists a stack base (after its header is written).
    pub(super) fn insert(base: usize) {
        let (root, mid, word, bit) = split(base).unwrap_or_else(|| {
            panic!("stack at {base:#x} is beyond the 48-bit user address space")
        });
        let leaf = node(&node(&ROOT[root]).leaves[mid]);
        leaf.words[word].fetch_or(bit, Ordering::Release);
    }

    /// Unlists a stack base (before its memory is freed).
    pub(super) fn remove(base: usize) {
        if let Some((root, mid, word, bit)) = split(base) {
            if let Some(leaf) = existing(&ROOT[root]).and_then(|m| existing(&m.leaves[mid])) {
                leaf.words[word].fetch_and(!bit, Ordering::Release);
            }
        }
    }

    /// Whether `base` is the base of a live stack of ours.
    pub(super) fn contains(base: usize) -> bool {
        let Some((root, mid, word, bit)) = split(base) else {
            return false;
        };
        existing(&ROOT[root])
            .and_then(|m| existing(&m.leaves[mid]))
            .is_some_and(|leaf| leaf.words[word].load(Ordering::Acquire) & bit != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU32;

    static STEPS: AtomicU32 = AtomicU32::new(0);
    static MAIN_CTX: AtomicUsize = AtomicUsize::new(0);
    static CO_CTX: AtomicUsize = AtomicUsize::new(0);

    fn mxcsr() -> u32 {
        let mut value = 0u32;
        // SAFETY: stores MXCSR into a local.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack)) };
        value
    }

    fn set_mxcsr(value: u32) {
        // SAFETY: loads a valid MXCSR value (reserved bits zero).
        unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &value, options(nostack)) };
    }

    extern "C" fn coroutine(arg: usize) -> ! {
        assert_eq!(arg, 42);
        // A fresh context starts with the default control words, whatever its creator had.
        assert_eq!(mxcsr(), 0x1f80);
        set_mxcsr(0x7f80); // round toward zero
        STEPS.fetch_add(1, Ordering::SeqCst);
        switch(CO_CTX.as_ptr(), MAIN_CTX.load(Ordering::SeqCst));
        assert_eq!(mxcsr(), 0x7f80, "MXCSR is per context");
        assert!(registry::contains(stack_pointer() & !(STACK_SIZE - 1)));
        STEPS.fetch_add(1, Ordering::SeqCst);
        let mut dead = 0;
        switch(&mut dead, MAIN_CTX.load(Ordering::SeqCst));
        unreachable!()
    }

    #[test]
    fn switch_and_fresh_frames_keep_registers_and_control_words() {
        let stack = Stack::for_thread(ptr::null());
        assert!(stack.intact());
        let entry = stack.fresh_frame(coroutine, 42);
        let before = mxcsr();
        switch(MAIN_CTX.as_ptr(), entry);
        assert_eq!(STEPS.load(Ordering::SeqCst), 1);
        assert_eq!(mxcsr(), before, "the caller's MXCSR is restored");
        switch(MAIN_CTX.as_ptr(), CO_CTX.load(Ordering::SeqCst));
        assert_eq!(STEPS.load(Ordering::SeqCst), 2);
        assert_eq!(mxcsr(), before);
        let base = stack.base.as_ptr() as usize;
        drop(stack);
        assert!(!registry::contains(base));
    }

    #[test]
    fn code_off_our_stacks_is_not_found() {
        assert!(current().is_none());
        assert!(!registry::contains(0));
        assert!(!registry::contains(usize::MAX & !(STACK_SIZE - 1)));
    }
}
