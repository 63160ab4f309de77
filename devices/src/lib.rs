//! Device models for k42vm. They know nothing of KVM (DESIGN.md: `devices` never depends on
//! `vmm`); the VMM routes port and MMIO accesses to them and wires their interrupts.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ratelimit;
pub mod serial;
pub mod testing;
pub mod virtio;

#[doc(hidden)]
pub mod fuzzing;
