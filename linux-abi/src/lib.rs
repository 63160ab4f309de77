//! Linux x86_64 ABI definitions for the Linux personality. `no_std` + `alloc`, host-tested.
//!
//! - [`elf`]: loading plans for static and static-PIE executables.
//! - [`auxv`]: the auxiliary vector and the initial stack (argv, envp, auxv).
//! - [`errno`]: error numbers.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod auxv;
pub mod elf;

/// Linux errno values used so far (negated in syscall returns).
pub mod errno {
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Function not implemented.
    pub const ENOSYS: i32 = 38;
}

#[cfg(test)]
mod tests {
    use super::errno;

    #[test]
    fn errno_values_match_linux() {
        assert_eq!((errno::EFAULT, errno::EINVAL, errno::ENOSYS), (14, 22, 38));
    }
}
