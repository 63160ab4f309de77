//! `futex` operations and flags.

/// Sleep if the word still holds the expected value.
pub const FUTEX_WAIT: i32 = 0;
/// Wake up to `val` waiters.
pub const FUTEX_WAKE: i32 = 1;
/// Obsolete: a descriptor for the futex.
pub const FUTEX_FD: i32 = 2;
/// Wake some waiters and move the rest to another futex.
pub const FUTEX_REQUEUE: i32 = 3;
/// `FUTEX_REQUEUE` if the word still holds the expected value.
pub const FUTEX_CMP_REQUEUE: i32 = 4;
/// Modify a second word and wake waiters of both depending on its old value.
pub const FUTEX_WAKE_OP: i32 = 5;
/// Priority-inheritance lock.
pub const FUTEX_LOCK_PI: i32 = 6;
/// Priority-inheritance unlock.
pub const FUTEX_UNLOCK_PI: i32 = 7;
/// Priority-inheritance try-lock.
pub const FUTEX_TRYLOCK_PI: i32 = 8;
/// `FUTEX_WAIT` with a bit mask and an absolute timeout.
pub const FUTEX_WAIT_BITSET: i32 = 9;
/// `FUTEX_WAKE` of the waiters whose mask intersects.
pub const FUTEX_WAKE_BITSET: i32 = 10;
/// Wait on a non-PI futex, to be requeued to a PI one.
pub const FUTEX_WAIT_REQUEUE_PI: i32 = 11;
/// Requeue from a non-PI futex to a PI one.
pub const FUTEX_CMP_REQUEUE_PI: i32 = 12;
/// `FUTEX_LOCK_PI` with a selectable clock.
pub const FUTEX_LOCK_PI2: i32 = 13;
/// The futex is private to the process (no shared-memory lookup).
pub const FUTEX_PRIVATE_FLAG: i32 = 128;
/// The timeout is measured on `CLOCK_REALTIME` (bitset waits).
pub const FUTEX_CLOCK_REALTIME: i32 = 256;
/// Flag of the newest kernels for unlocking robust futexes (stripped from the command).
pub const FUTEX_ROBUST_UNLOCK: i32 = 512;
/// Flag of the newest kernels: the robust list uses 32-bit pointers (stripped from the command).
pub const FUTEX_ROBUST_LIST32: i32 = 1024;
/// Mask of the operation, without the flag bits.
pub const FUTEX_CMD_MASK: i32 =
    !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME | FUTEX_ROBUST_UNLOCK | FUTEX_ROBUST_LIST32);
/// The bit mask matching every waiter.
pub const FUTEX_BITSET_MATCH_ANY: u32 = 0xffff_ffff;
/// PI and robust futex word: there are waiters.
pub const FUTEX_WAITERS: u32 = 0x8000_0000;
/// Robust futex word: the owner died.
pub const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
/// PI and robust futex word: the owner's tid.
pub const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// The operation of a `futex` `op` argument, flags removed.
pub const fn command(op: i32) -> i32 {
    op & FUTEX_CMD_MASK
}

/// Whether a `futex` `op` argument is private to the process.
pub const fn is_private(op: i32) -> bool {
    op & FUTEX_PRIVATE_FLAG != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_decoding() {
        let op = FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME;
        assert_eq!(command(op), FUTEX_WAIT_BITSET);
        assert!(is_private(op));
        assert!(!is_private(FUTEX_WAKE));
        assert_eq!(op, 393);
    }
}
