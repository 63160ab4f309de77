//! k42vm: a KVM virtual machine monitor for the K42-style paravirtual guest kernel.
//!
//! `k42vm run` boots a PVH ELF kernel (by default the k42 kernel embedded in the binary) on KVM
//! with an in-kernel irqchip, one host thread per vCPU, an 8250 UART on COM1, ACPI tables
//! describing the CPUs, the paravirtual interface of `k42-paravirt`, and virtio-mmio devices
//! (block, network, entropy, console) from `k42-devices`.

pub mod cli;
pub mod error;
pub mod hypercall;
pub mod initrd;
pub mod layout;
pub mod mmio;
pub mod tap;
pub mod timeline;
pub mod virtio;
pub mod vm;
