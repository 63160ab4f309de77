//! Linux x86_64 ABI definitions for the Linux personality. `no_std` + `alloc`, host-tested.
//!
//! - [`elf`]: loading plans for static and static-PIE executables.
//! - [`auxv`]: the auxiliary vector and the initial stack (argv, envp, auxv).
//! - [`syscall`]: system-call numbers, their names, the decoded arguments of a call.
//! - [`errno`]: error numbers and their names.
//! - [`signal`]: signal numbers, sets, `sigaction`, default actions, the signal frame.
//! - [`file`](mod@file): `stat`, `statx`, `linux_dirent64` packing, `iovec`, `pollfd`, and the file
//!   flags (`O_*`, `AT_*`, `S_IF*`, `F_*`, `SEEK_*`, `POLL*`).
//! - [`time`]: `timespec`, `timeval`, interval timers, `tms`, `CLOCK_*`.
//! - [`mm`]: `PROT_*`, `MAP_*`, `MREMAP_*`, `MADV_*`.
//! - [`process`]: `CLONE_*`, wait options and statuses, rlimits, `rusage`, `prctl`,
//!   `arch_prctl`, `uname`, `sysinfo`, `getrandom` flags.
//! - [`futex`]: futex operations and flags.
//! - [`tty`]: the kernel's `termios`, `winsize`, terminal `ioctl`s.
//!
//! The emulation copies these structures to and from user memory as bytes. They are
//! `#[repr(C)]` with every padding byte an explicit field, and derive `zerocopy`'s
//! `IntoBytes`/`FromBytes`: the derives prove at compile time that a structure has no hidden
//! padding and that every bit pattern is valid, so the byte views need no `unsafe` here, and the
//! bytes copied are exactly the layout the tests check field by field against `libc`.
//! Hand-written encoders would be a second description of each layout that could drift from
//! the struct; `zerocopy` is `no_std`, needs no allocator and adds no run-time code. The
//! guest is x86_64, so native byte order is little-endian, Linux's order.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

#[cfg(not(all(target_arch = "x86_64", target_endian = "little")))]
compile_error!("the Linux ABI described here is x86_64's");

pub mod auxv;
pub mod block;
pub mod elf;
pub mod errno;
pub mod file;
pub mod futex;
pub mod mm;
pub mod process;
pub mod signal;
pub mod syscall;
pub mod time;
pub mod tty;
