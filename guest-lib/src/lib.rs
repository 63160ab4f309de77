//! The K42 library shared by the guest kernel and (later) user-level processes.
//!
//! `no_std`, host-testable. Today it holds the per-CPU allocator front ([`frames`]): physical
//! range bookkeeping and the per-CPU frame cache the kernel's page-frame manager is built on.
#![no_std]
#![forbid(unsafe_code)]

pub mod frames;
