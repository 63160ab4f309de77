//! The K42 library shared by the guest kernel and (later) user-level processes. `no_std` + `alloc`,
//! host-testable: the CPU is an abstraction ([`cobj::Cpus`]) that the kernel implements with real
//! per-CPU data and host tests implement with threads.
//!
//! - [`cobj`]: clustered objects (a root plus lazily created per-CPU representatives reached
//!   through per-CPU translation tables) and their hot-swapping.
//! - [`generation`]: quiescence by generations (K42's active-thread counts and token), which
//!   drives deferred destruction.
//! - [`frames`]: the per-CPU allocator front of the page-frame manager.
//! - [`cmdlist`]: the command-list format of the Linux comparison tests.
//! - [`cpio`]: the initramfs format (cpio newc, optionally gzip-compressed).
//! - [`filewindow`]: file windows, the shared memory through which a process reads and writes
//!   a file it alone has open (K42's exclusive file object), with their lock protocol.
//! - [`fs`]: the RAM file system of the file-system server (inodes, Linux path lookup,
//!   `getdents64` positions, `stat`), filled from the initramfs.
//! - [`kabi`]: the K42 system-call interface between the kernel and user level.
//! - [`sys`]: the user-level system-call wrappers and the PPC server trampoline.
//! - [`virtio`]: virtio for ring-3 drivers (virtio-mmio transport, split virtqueue,
//!   virtio-blk, a block cache), host-tested against a model device.
//! - [`uthread`]: the user-level thread scheduler of a process (K42's two-level scheduling:
//!   threads on dispatchers), its user-level futex, and a mutex, condvar and channel on top.
//!
//! `unsafe` is confined to `cobj::table`, which stores typed pointers in atomic words,
//! `uthread::context`, which allocates aligned stacks and switches contexts, `filewindow`,
//! which reaches memory mapped from another process, and `sys`, the system-call instructions.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod blockdev;
pub mod cmdlist;
pub mod cobj;
pub mod consoleport;
pub mod cpio;
pub mod entropy;
pub mod filewindow;
pub mod frames;
pub mod fs;
pub mod generation;
pub mod kabi;
pub mod netcard;
mod sync;
pub mod sys;
pub mod uthread;
pub mod virtio;
