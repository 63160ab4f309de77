//! Rewriting system-call sites into calls (the zpoline technique, done lazily as lazypoline
//! does): the first time a `syscall` instruction reaches the personality, the kernel replaces
//! it with `call rax` (`Sys::LinuxRewrite`). From then on that site calls into the sled page at
//! address 0 (`kabi::LINUX_SYSCALL_SLED`), slides over `nop`s to code that jumps here, and
//! never makes the CPU execute `syscall` again: on an emulating KVM each `syscall` costs an
//! exit, on real x86 a trip through ring 0.
//!
//! The two bytes are known to be a `syscall` because one just ran there (the kernel checks
//! them anyway). The program's text pages are its own copies of the file, so `read()` of the
//! executable still returns the original bytes. A site the kernel refuses (an instruction
//! that straddles two pages, say) is remembered, so it is not asked about again.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use k42_rt::kabi::Sys;
use k42_rt::sys;

/// Sites the kernel would not rewrite (a small ring: forgetting one only costs a call).
static DECLINED: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
static NEXT_DECLINED: AtomicUsize = AtomicUsize::new(0);

/// The `syscall` instruction's bytes, as a little-endian word.
const SYSCALL: u16 = u16::from_le_bytes([0x0f, 0x05]);

/// Rewrites the system-call site at `at` (the instruction that just called the personality)
/// if it is still a `syscall`.
pub(crate) fn site(at: u64) {
    if crate::user_range(at, 2).is_err() {
        return;
    }
    // SAFETY: `at` is the address of the instruction that just ran (the return address of
    // the call minus its two bytes), in the program's own text, which stays mapped while the
    // program waits here; it is only read.
    let bytes = unsafe { core::ptr::read_volatile(at as *const [u8; 2]) };
    if u16::from_le_bytes(bytes) != SYSCALL
        || DECLINED.iter().any(|d| d.load(Ordering::Relaxed) == at)
    {
        return;
    }
    if sys::check_raw(sys::raw(Sys::LinuxRewrite, at, 0, 0, 0).0).is_err() {
        let slot = NEXT_DECLINED.fetch_add(1, Ordering::Relaxed) % DECLINED.len();
        DECLINED[slot].store(at, Ordering::Relaxed);
    }
}

/// Forgets the declined sites (a new program was loaded).
pub(crate) fn reset() {
    for d in &DECLINED {
        d.store(0, Ordering::Relaxed);
    }
}
