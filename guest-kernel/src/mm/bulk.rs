//! Bulk memory work (zeroing frames, copying file data into frames) kept out of ring 0 loops:
//! on k42vm one batched `MemOps` hypercall does it at host speed (DESIGN.md, "the privileged
//! minimum"); elsewhere (QEMU TCG, real hardware) the kernel does it in place, where ring 0 is
//! as fast as any ring.

use alloc::vec::Vec;

use k42_paravirt::{MemOp, MEM_OP_ZERO};

use crate::arch::phys_to_virt;
use crate::platform;

/// A batch of copy and zero operations on physical memory, performed by [`MemBatch::run`].
#[derive(Default)]
pub struct MemBatch {
    ops: Vec<MemOp>,
}

impl MemBatch {
    /// An empty batch.
    pub fn new() -> MemBatch {
        MemBatch::default()
    }

    /// Adds a copy of `len` bytes from `src` to `dst` (physical, non-overlapping).
    pub fn copy(&mut self, dst: u64, src: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.ops.last_mut() {
            if last.src != MEM_OP_ZERO && last.dst + last.len == dst && last.src + last.len == src {
                last.len += len;
                return;
            }
        }
        self.ops.push(MemOp { dst, src, len });
    }

    /// Adds zeroing of `len` bytes at `dst` (physical).
    pub fn zero(&mut self, dst: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.ops.last_mut() {
            if last.src == MEM_OP_ZERO && last.dst + last.len == dst {
                last.len += len;
                return;
            }
        }
        self.ops.push(MemOp {
            dst,
            src: MEM_OP_ZERO,
            len,
        });
    }

    /// Performs the batch; the addresses must be RAM the caller owns. Returns the hypervisor's
    /// status if it refused an operation.
    pub fn run(self) -> Result<(), i32> {
        if self.ops.is_empty() {
            return Ok(());
        }
        if platform::on_k42vm() {
            return platform::mem_ops(&self.ops);
        }
        for op in &self.ops {
            let dst = phys_to_virt(op.dst) as *mut u8;
            // SAFETY: the caller owns the destination RAM (and the source, read-only), both
            // covered by the direct map; the ranges do not overlap (callers copy from files in
            // the initramfs into fresh frames).
            unsafe {
                if op.src == MEM_OP_ZERO {
                    core::ptr::write_bytes(dst, 0, op.len as usize);
                } else {
                    core::ptr::copy_nonoverlapping(
                        phys_to_virt(op.src) as *const u8,
                        dst,
                        op.len as usize,
                    );
                }
            }
        }
        Ok(())
    }
}
