//! The file system's errors, one per Linux errno it can produce.

use k42_linux_abi::errno;

/// Why a file-system operation failed; each variant is exactly one Linux errno
/// ([`FsError::errno`]), so the emulation returns `-errno` without a table of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsError {
    /// `ENOENT`: a component is missing (or a symlink target is empty).
    NotFound,
    /// `ENOTDIR`: a component used as a directory is not one.
    NotADirectory,
    /// `EISDIR`: the operation needs a non-directory.
    IsADirectory,
    /// `EEXIST`: the name is taken.
    Exists,
    /// `ENOTEMPTY`: the directory has entries.
    NotEmpty,
    /// `ELOOP`: more than 40 symlinks on one lookup, or a final symlink where none is allowed.
    Loop,
    /// `ENAMETOOLONG`: a component over 255 bytes or a path of 4096 or more.
    NameTooLong,
    /// `EINVAL`: e.g. moving a directory into itself, `readlink` of a non-symlink.
    Invalid,
    /// `EPERM`: e.g. a hard link to a directory.
    NotPermitted,
    /// `EBUSY`: renaming or removing `/`, `.` or `..`.
    Busy,
    /// `EFBIG`: the file would grow past the largest size.
    FileTooBig,
    /// `EMLINK`: the link count would overflow.
    TooManyLinks,
    /// `ESTALE`: the inode number no longer (or never) names an inode.
    Stale,
}

/// Every variant, in declaration order.
pub const ALL_ERRORS: [FsError; 13] = [
    FsError::NotFound,
    FsError::NotADirectory,
    FsError::IsADirectory,
    FsError::Exists,
    FsError::NotEmpty,
    FsError::Loop,
    FsError::NameTooLong,
    FsError::Invalid,
    FsError::NotPermitted,
    FsError::Busy,
    FsError::FileTooBig,
    FsError::TooManyLinks,
    FsError::Stale,
];

impl FsError {
    /// The Linux errno (positive) of this error.
    pub const fn errno(self) -> i32 {
        match self {
            FsError::NotFound => errno::ENOENT,
            FsError::NotADirectory => errno::ENOTDIR,
            FsError::IsADirectory => errno::EISDIR,
            FsError::Exists => errno::EEXIST,
            FsError::NotEmpty => errno::ENOTEMPTY,
            FsError::Loop => errno::ELOOP,
            FsError::NameTooLong => errno::ENAMETOOLONG,
            FsError::Invalid => errno::EINVAL,
            FsError::NotPermitted => errno::EPERM,
            FsError::Busy => errno::EBUSY,
            FsError::FileTooBig => errno::EFBIG,
            FsError::TooManyLinks => errno::EMLINK,
            FsError::Stale => errno::ESTALE,
        }
    }

    /// The error whose errno is `errno`, if the file system produces it.
    pub fn from_errno(errno: i32) -> Option<FsError> {
        ALL_ERRORS.into_iter().find(|e| e.errno() == errno)
    }
}

impl core::fmt::Display for FsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let e = self.errno();
        match (errno::name(e), errno::description(e)) {
            (Some(name), Some(text)) => write!(f, "{text} ({name})"),
            _ => write!(f, "errno {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn one_to_one_with_errno() {
        for (i, a) in ALL_ERRORS.iter().enumerate() {
            assert_eq!(FsError::from_errno(a.errno()), Some(*a));
            for b in &ALL_ERRORS[i + 1..] {
                assert_ne!(a.errno(), b.errno(), "{a:?} and {b:?}");
            }
        }
        assert_eq!(FsError::from_errno(errno::EIO), None);
        assert_eq!(FsError::NotFound.errno(), 2);
        assert_eq!(
            FsError::NotEmpty.to_string(),
            "Directory not empty (ENOTEMPTY)"
        );
    }
}
