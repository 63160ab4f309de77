//! k42vm's errors and the exit statuses they map to.

use std::path::PathBuf;

use thiserror::Error;

/// Exit status for a bad flag, a missing `/dev/kvm`, a bad image or too little memory.
pub const EXIT_USAGE: i32 = 2;
/// Exit status when `--timeout` stopped the guest.
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status when the VM failed: triple fault, KVM internal error, failed entry, missing ktest
/// reports.
pub const EXIT_VM_FAILURE: i32 = 125;

/// Everything that stops k42vm before or while running a guest.
#[derive(Debug, Error)]
pub enum VmmError {
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm: {0}. k42vm needs KVM: run on an x86_64 Linux host with the kvm module loaded and read/write access to /dev/kvm")]
    KvmUnavailable(#[source] kvm_ioctls::Error),
    /// `/dev/kvm` opened but does not answer as KVM.
    #[error("/dev/kvm is not a usable KVM device ({0}). k42vm needs KVM: run on an x86_64 Linux host with the kvm module loaded")]
    KvmNotKvm(String),
    /// A KVM ioctl failed during setup.
    #[error("KVM refused to {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// An image file could not be read.
    #[error("cannot read {kind} {path}: {source}")]
    ReadImage {
        /// "kernel image" or "initrd".
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A gzip-compressed initrd could not be unpacked.
    #[error("the initrd {name} is gzip-compressed but cannot be unpacked: {reason}. Pass an intact .gz or the plain cpio archive")]
    BadInitrd {
        /// The file.
        name: String,
        /// What the decompressor said.
        reason: String,
    },
    /// The kernel image is not a loadable PVH ELF.
    #[error("{name} is not a usable kernel: {reason}. k42vm boots PVH ELF kernels (with a XEN_ELFNOTE_PHYS32_ENTRY note)")]
    BadKernel {
        /// The file (or "the embedded kernel").
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Guest memory is too small for what must be loaded into it.
    #[error("{0}")]
    MemoryTooSmall(String),
    /// An invalid combination of options.
    #[error("{0}")]
    Config(String),
    /// A device's backend (disk image, TAP device, console file) could not be set up.
    #[error("{0}")]
    Device(String),
    /// Guest memory could not be created.
    #[error("cannot allocate guest memory: {0}")]
    Memory(String),
    /// A host resource (thread, eventfd, epoll) failed.
    #[error("host error: {0}")]
    Host(String),
}

impl VmmError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> i32 {
        EXIT_USAGE
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, VmmError>;
