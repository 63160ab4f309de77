//! Linux x86_64 ABI definitions for the Linux personality. `no_std`.
//!
//! Only what the foundation needs exists yet; the Linux-personality issue fills this crate.
#![no_std]
#![forbid(unsafe_code)]

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
