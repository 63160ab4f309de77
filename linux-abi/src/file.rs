//! Files: `stat`/`statx`, `linux_dirent64` (with a packing writer and a reader), `iovec`,
//! `pollfd`, `flock`, device numbers, and the flag constants of the file system calls
//! (`O_*`, `AT_*`, `S_IF*`, `F_*`, `SEEK_*`, `POLL*`, `RENAME_*`, `STATX_*`, `UTIME_*`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::time::Timespec;

/// `open`: read only.
pub const O_RDONLY: u32 = 0;
/// `open`: write only.
pub const O_WRONLY: u32 = 0o1;
/// `open`: read and write.
pub const O_RDWR: u32 = 0o2;
/// Mask of the access mode.
pub const O_ACCMODE: u32 = 0o3;
/// Create the file if it does not exist.
pub const O_CREAT: u32 = 0o100;
/// With `O_CREAT`: fail with `EEXIST` if it exists.
pub const O_EXCL: u32 = 0o200;
/// Do not make a terminal the controlling terminal.
pub const O_NOCTTY: u32 = 0o400;
/// Truncate a regular file to length 0.
pub const O_TRUNC: u32 = 0o1000;
/// Every write appends.
pub const O_APPEND: u32 = 0o2000;
/// Non-blocking I/O.
pub const O_NONBLOCK: u32 = 0o4000;
/// Synchronized data writes.
pub const O_DSYNC: u32 = 0o10000;
/// Signal-driven I/O (`FASYNC`).
pub const O_ASYNC: u32 = 0o20000;
/// Bypass the page cache.
pub const O_DIRECT: u32 = 0o40000;
/// Large-file flag; the kernel reports it in `F_GETFL` on 64-bit (glibc defines it as 0 there).
pub const O_LARGEFILE: u32 = 0o100000;
/// Fail with `ENOTDIR` unless a directory.
pub const O_DIRECTORY: u32 = 0o200000;
/// Fail with `ELOOP` if the last component is a symlink.
pub const O_NOFOLLOW: u32 = 0o400000;
/// Do not update the access time.
pub const O_NOATIME: u32 = 0o1000000;
/// Close on `execve`.
pub const O_CLOEXEC: u32 = 0o2000000;
/// Synchronized file writes (`__O_SYNC | O_DSYNC`).
pub const O_SYNC: u32 = 0o4010000;
/// A path-only descriptor (no I/O).
pub const O_PATH: u32 = 0o10000000;
/// An unnamed temporary file in the given directory (`__O_TMPFILE | O_DIRECTORY`).
pub const O_TMPFILE: u32 = 0o20200000;

/// The `dirfd` meaning "the current directory".
pub const AT_FDCWD: i32 = -100;
/// Do not follow a final symlink.
pub const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
/// `unlinkat`: remove a directory.
pub const AT_REMOVEDIR: u32 = 0x200;
/// `faccessat`: check with the effective ids.
pub const AT_EACCESS: u32 = 0x200;
/// `linkat`: follow a final symlink.
pub const AT_SYMLINK_FOLLOW: u32 = 0x400;
/// Do not trigger automounts.
pub const AT_NO_AUTOMOUNT: u32 = 0x800;
/// An empty path means the `dirfd` itself.
pub const AT_EMPTY_PATH: u32 = 0x1000;
/// `statx`: sync as `stat` does.
pub const AT_STATX_SYNC_AS_STAT: u32 = 0;
/// `statx`: force a sync with the server.
pub const AT_STATX_FORCE_SYNC: u32 = 0x2000;
/// `statx`: do not sync.
pub const AT_STATX_DONT_SYNC: u32 = 0x4000;

/// Mask of the file type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
/// Socket.
pub const S_IFSOCK: u32 = 0o140000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Block device.
pub const S_IFBLK: u32 = 0o060000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// FIFO.
pub const S_IFIFO: u32 = 0o010000;
/// Set user id on execution.
pub const S_ISUID: u32 = 0o4000;
/// Set group id on execution.
pub const S_ISGID: u32 = 0o2000;
/// Sticky bit.
pub const S_ISVTX: u32 = 0o1000;
/// Owner read, write, execute.
pub const S_IRWXU: u32 = 0o700;
/// Owner read.
pub const S_IRUSR: u32 = 0o400;
/// Owner write.
pub const S_IWUSR: u32 = 0o200;
/// Owner execute.
pub const S_IXUSR: u32 = 0o100;
/// Group read, write, execute.
pub const S_IRWXG: u32 = 0o070;
/// Group read.
pub const S_IRGRP: u32 = 0o040;
/// Group write.
pub const S_IWGRP: u32 = 0o020;
/// Group execute.
pub const S_IXGRP: u32 = 0o010;
/// Others read, write, execute.
pub const S_IRWXO: u32 = 0o007;
/// Others read.
pub const S_IROTH: u32 = 0o004;
/// Others write.
pub const S_IWOTH: u32 = 0o002;
/// Others execute.
pub const S_IXOTH: u32 = 0o001;
/// The permission bits `chmod` may change (`07777`).
pub const S_IALLUGO: u32 = 0o7777;

/// `access`: existence.
pub const F_OK: u32 = 0;
/// `access`: execute.
pub const X_OK: u32 = 1;
/// `access`: write.
pub const W_OK: u32 = 2;
/// `access`: read.
pub const R_OK: u32 = 4;

/// `fcntl`: duplicate to the lowest free descriptor at or above the argument.
pub const F_DUPFD: i32 = 0;
/// `fcntl`: get the descriptor flags.
pub const F_GETFD: i32 = 1;
/// `fcntl`: set the descriptor flags.
pub const F_SETFD: i32 = 2;
/// `fcntl`: get the status flags.
pub const F_GETFL: i32 = 3;
/// `fcntl`: set the status flags (`O_APPEND`, `O_NONBLOCK`, ...).
pub const F_SETFL: i32 = 4;
/// `fcntl`: test a record lock.
pub const F_GETLK: i32 = 5;
/// `fcntl`: set a record lock.
pub const F_SETLK: i32 = 6;
/// `fcntl`: set a record lock, waiting.
pub const F_SETLKW: i32 = 7;
/// `fcntl`: set the `SIGIO` owner.
pub const F_SETOWN: i32 = 8;
/// `fcntl`: get the `SIGIO` owner.
pub const F_GETOWN: i32 = 9;
/// `fcntl`: set the signal sent for I/O readiness.
pub const F_SETSIG: i32 = 10;
/// `fcntl`: get the signal sent for I/O readiness.
pub const F_GETSIG: i32 = 11;
/// `fcntl`: open-file-description lock test.
pub const F_OFD_GETLK: i32 = 36;
/// `fcntl`: open-file-description lock.
pub const F_OFD_SETLK: i32 = 37;
/// `fcntl`: open-file-description lock, waiting.
pub const F_OFD_SETLKW: i32 = 38;
/// `fcntl`: duplicate with `FD_CLOEXEC` set.
pub const F_DUPFD_CLOEXEC: i32 = 1030;
/// `fcntl`: set a pipe's capacity.
pub const F_SETPIPE_SZ: i32 = 1031;
/// `fcntl`: get a pipe's capacity.
pub const F_GETPIPE_SZ: i32 = 1032;
/// `fcntl`: add file seals.
pub const F_ADD_SEALS: i32 = 1033;
/// `fcntl`: get file seals.
pub const F_GET_SEALS: i32 = 1034;
/// Descriptor flag: close on `execve`.
pub const FD_CLOEXEC: i32 = 1;
/// Lock type: shared.
pub const F_RDLCK: i16 = 0;
/// Lock type: exclusive.
pub const F_WRLCK: i16 = 1;
/// Lock type: unlock.
pub const F_UNLCK: i16 = 2;

/// `lseek`: from the start.
pub const SEEK_SET: i32 = 0;
/// `lseek`: from the current offset.
pub const SEEK_CUR: i32 = 1;
/// `lseek`: from the end.
pub const SEEK_END: i32 = 2;
/// `lseek`: the next data at or after the offset.
pub const SEEK_DATA: i32 = 3;
/// `lseek`: the next hole at or after the offset.
pub const SEEK_HOLE: i32 = 4;

/// `utimensat`: set this time to now.
pub const UTIME_NOW: i64 = (1 << 30) - 1;
/// `utimensat`: leave this time unchanged.
pub const UTIME_OMIT: i64 = (1 << 30) - 2;

/// `renameat2`: fail with `EEXIST` instead of replacing.
pub const RENAME_NOREPLACE: u32 = 1;
/// `renameat2`: exchange the two names.
pub const RENAME_EXCHANGE: u32 = 2;
/// `renameat2`: leave a whiteout (overlay file systems).
pub const RENAME_WHITEOUT: u32 = 4;

/// `statx` mask: `stx_mode & S_IFMT`.
pub const STATX_TYPE: u32 = 0x1;
/// `statx` mask: `stx_mode & !S_IFMT`.
pub const STATX_MODE: u32 = 0x2;
/// `statx` mask: `stx_nlink`.
pub const STATX_NLINK: u32 = 0x4;
/// `statx` mask: `stx_uid`.
pub const STATX_UID: u32 = 0x8;
/// `statx` mask: `stx_gid`.
pub const STATX_GID: u32 = 0x10;
/// `statx` mask: `stx_atime`.
pub const STATX_ATIME: u32 = 0x20;
/// `statx` mask: `stx_mtime`.
pub const STATX_MTIME: u32 = 0x40;
/// `statx` mask: `stx_ctime`.
pub const STATX_CTIME: u32 = 0x80;
/// `statx` mask: `stx_ino`.
pub const STATX_INO: u32 = 0x100;
/// `statx` mask: `stx_size`.
pub const STATX_SIZE: u32 = 0x200;
/// `statx` mask: `stx_blocks`.
pub const STATX_BLOCKS: u32 = 0x400;
/// `statx` mask: everything `stat` gives.
pub const STATX_BASIC_STATS: u32 = 0x7ff;
/// `statx` mask: `stx_btime`.
pub const STATX_BTIME: u32 = 0x800;

/// `poll`: data to read.
pub const POLLIN: i16 = 0x1;
/// `poll`: urgent data to read.
pub const POLLPRI: i16 = 0x2;
/// `poll`: writing will not block.
pub const POLLOUT: i16 = 0x4;
/// `poll`: error condition (output only).
pub const POLLERR: i16 = 0x8;
/// `poll`: hung up (output only).
pub const POLLHUP: i16 = 0x10;
/// `poll`: the descriptor is not open (output only).
pub const POLLNVAL: i16 = 0x20;
/// `poll`: normal data to read.
pub const POLLRDNORM: i16 = 0x40;
/// `poll`: priority band data to read.
pub const POLLRDBAND: i16 = 0x80;
/// `poll`: normal data may be written.
pub const POLLWRNORM: i16 = 0x100;
/// `poll`: priority data may be written.
pub const POLLWRBAND: i16 = 0x200;
/// `poll`: the peer closed its writing end.
pub const POLLRDHUP: i16 = 0x2000;

/// `d_type`: unknown.
pub const DT_UNKNOWN: u8 = 0;
/// `d_type`: FIFO.
pub const DT_FIFO: u8 = 1;
/// `d_type`: character device.
pub const DT_CHR: u8 = 2;
/// `d_type`: directory.
pub const DT_DIR: u8 = 4;
/// `d_type`: block device.
pub const DT_BLK: u8 = 6;
/// `d_type`: regular file.
pub const DT_REG: u8 = 8;
/// `d_type`: symbolic link.
pub const DT_LNK: u8 = 10;
/// `d_type`: socket.
pub const DT_SOCK: u8 = 12;

/// The `d_type` of a file whose `st_mode` is `mode` (`(mode >> 12) & 15`, as Linux defines it).
pub const fn dt_from_mode(mode: u32) -> u8 {
    ((mode & S_IFMT) >> 12) as u8
}

/// Longest file name component.
pub const NAME_MAX: usize = 255;
/// Longest path, including its NUL.
pub const PATH_MAX: usize = 4096;

/// A `dev_t` from major and minor numbers (Linux's 64-bit encoding, as glibc's `makedev`).
pub const fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (major as u64, minor as u64);
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// The major number of a `dev_t`.
pub const fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}

/// The minor number of a `dev_t`.
pub const fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

/// x86_64 `struct stat` of `stat`, `fstat`, `lstat` and `newfstatat` (144 bytes; x86_64 has
/// its own layout, unlike the generic one: `st_nlink` is 64 bits and comes before `st_mode`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Stat {
    /// Device of the file system.
    pub st_dev: u64,
    /// Inode number.
    pub st_ino: u64,
    /// Number of hard links.
    pub st_nlink: u64,
    /// Type and permissions.
    pub st_mode: u32,
    /// Owner.
    pub st_uid: u32,
    /// Group.
    pub st_gid: u32,
    /// Padding.
    pub _pad0: u32,
    /// Device number of a device node.
    pub st_rdev: u64,
    /// Size in bytes.
    pub st_size: i64,
    /// Preferred I/O block size.
    pub st_blksize: i64,
    /// Allocated 512-byte blocks.
    pub st_blocks: i64,
    /// Last access, seconds.
    pub st_atime: i64,
    /// Last access, nanoseconds.
    pub st_atime_nsec: u64,
    /// Last modification, seconds.
    pub st_mtime: i64,
    /// Last modification, nanoseconds.
    pub st_mtime_nsec: u64,
    /// Last status change, seconds.
    pub st_ctime: i64,
    /// Last status change, nanoseconds.
    pub st_ctime_nsec: u64,
    /// Reserved.
    pub _unused: [i64; 3],
}

/// `struct statx_timestamp` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StatxTimestamp {
    /// Seconds since the epoch.
    pub tv_sec: i64,
    /// Nanoseconds.
    pub tv_nsec: u32,
    /// Reserved.
    pub _reserved: i32,
}

impl From<Timespec> for StatxTimestamp {
    fn from(t: Timespec) -> Self {
        StatxTimestamp {
            tv_sec: t.tv_sec,
            tv_nsec: t.tv_nsec as u32,
            _reserved: 0,
        }
    }
}

/// `struct statx` (256 bytes, the layout of Linux 6.16 with its spare space).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Statx {
    /// `STATX_*` bits of the fields filled in.
    pub stx_mask: u32,
    /// Preferred I/O block size.
    pub stx_blksize: u32,
    /// `STATX_ATTR_*` flags.
    pub stx_attributes: u64,
    /// Number of hard links.
    pub stx_nlink: u32,
    /// Owner.
    pub stx_uid: u32,
    /// Group.
    pub stx_gid: u32,
    /// Type and permissions.
    pub stx_mode: u16,
    /// Spare.
    pub _spare0: u16,
    /// Inode number.
    pub stx_ino: u64,
    /// Size in bytes.
    pub stx_size: u64,
    /// Allocated 512-byte blocks.
    pub stx_blocks: u64,
    /// Which `stx_attributes` bits are supported.
    pub stx_attributes_mask: u64,
    /// Last access.
    pub stx_atime: StatxTimestamp,
    /// Creation.
    pub stx_btime: StatxTimestamp,
    /// Last status change.
    pub stx_ctime: StatxTimestamp,
    /// Last modification.
    pub stx_mtime: StatxTimestamp,
    /// Major device number of a device node.
    pub stx_rdev_major: u32,
    /// Minor device number of a device node.
    pub stx_rdev_minor: u32,
    /// Major number of the file system's device.
    pub stx_dev_major: u32,
    /// Minor number of the file system's device.
    pub stx_dev_minor: u32,
    /// Mount id.
    pub stx_mnt_id: u64,
    /// Memory alignment for direct I/O.
    pub stx_dio_mem_align: u32,
    /// File offset alignment for direct I/O.
    pub stx_dio_offset_align: u32,
    /// Subvolume id.
    pub stx_subvol: u64,
    /// Smallest atomic write.
    pub stx_atomic_write_unit_min: u32,
    /// Largest atomic write.
    pub stx_atomic_write_unit_max: u32,
    /// Most segments in an atomic write.
    pub stx_atomic_write_segments_max: u32,
    /// File offset alignment for direct reads.
    pub stx_dio_read_offset_align: u32,
    /// Optimised largest atomic write.
    pub stx_atomic_write_unit_max_opt: u32,
    /// Spare.
    pub _spare2: u32,
    /// Spare.
    pub _spare3: [u64; 8],
}

impl Statx {
    /// The `statx` answer carrying what a [`Stat`] holds (`STATX_BASIC_STATS`).
    pub fn from_stat(st: &Stat) -> Statx {
        let ts = |sec: i64, nsec: u64| StatxTimestamp {
            tv_sec: sec,
            tv_nsec: nsec as u32,
            _reserved: 0,
        };
        Statx {
            stx_mask: STATX_BASIC_STATS,
            stx_blksize: st.st_blksize as u32,
            stx_nlink: st.st_nlink as u32,
            stx_uid: st.st_uid,
            stx_gid: st.st_gid,
            stx_mode: st.st_mode as u16,
            stx_ino: st.st_ino,
            stx_size: st.st_size as u64,
            stx_blocks: st.st_blocks as u64,
            stx_atime: ts(st.st_atime, st.st_atime_nsec),
            stx_mtime: ts(st.st_mtime, st.st_mtime_nsec),
            stx_ctime: ts(st.st_ctime, st.st_ctime_nsec),
            stx_rdev_major: major(st.st_rdev),
            stx_rdev_minor: minor(st.st_rdev),
            stx_dev_major: major(st.st_dev),
            stx_dev_minor: minor(st.st_dev),
            ..Statx::default()
        }
    }
}

/// `struct iovec` of `readv`/`writev` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Iovec {
    /// User address of the buffer.
    pub iov_base: u64,
    /// Its length.
    pub iov_len: u64,
}

/// `struct pollfd` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Pollfd {
    /// Descriptor (negative: ignored).
    pub fd: i32,
    /// Requested `POLL*` events.
    pub events: i16,
    /// Returned events.
    pub revents: i16,
}

/// `struct flock` of `F_GETLK`/`F_SETLK` (32 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Flock {
    /// [`F_RDLCK`], [`F_WRLCK`] or [`F_UNLCK`].
    pub l_type: i16,
    /// `SEEK_*` base of `l_start`.
    pub l_whence: i16,
    /// Padding.
    pub _pad: u32,
    /// Start of the range.
    pub l_start: i64,
    /// Length (0: to the end).
    pub l_len: i64,
    /// Holder (`F_GETLK`).
    pub l_pid: i32,
    /// Padding.
    pub _pad2: u32,
}

/// Offset of `d_ino` (u64) in `linux_dirent64`.
pub const DIRENT64_INO: usize = 0;
/// Offset of `d_off` (i64): the cookie to resume after this entry.
pub const DIRENT64_OFF: usize = 8;
/// Offset of `d_reclen` (u16): the record's length.
pub const DIRENT64_RECLEN: usize = 16;
/// Offset of `d_type` (u8).
pub const DIRENT64_TYPE: usize = 18;
/// Offset of `d_name` (NUL-terminated): the header size.
pub const DIRENT64_NAME: usize = 19;

/// The record length of a `linux_dirent64` with a `name_len`-byte name: header, name, NUL,
/// rounded up to 8.
pub const fn dirent64_reclen(name_len: usize) -> usize {
    (DIRENT64_NAME + name_len + 1 + 7) & !7
}

/// Why a directory entry was not packed or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirentError {
    /// The buffer has no room for the entry: stop and return what is packed (`getdents64`
    /// answers `EINVAL` if that is nothing).
    Full,
    /// The name is empty, longer than [`NAME_MAX`], or holds `/` or NUL.
    BadName,
    /// A record in the buffer being read is inconsistent.
    Malformed,
}

/// Packs `linux_dirent64` records into a `getdents64` buffer.
#[derive(Debug)]
pub struct Dirent64Writer<'a> {
    buf: &'a mut [u8],
    used: usize,
}

impl<'a> Dirent64Writer<'a> {
    /// A writer filling `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Dirent64Writer { buf, used: 0 }
    }

    /// Appends an entry; `next_off` is the cookie from which a later call resumes after it.
    /// On [`DirentError::Full`] nothing is written.
    pub fn push(
        &mut self,
        ino: u64,
        next_off: i64,
        d_type: u8,
        name: &[u8],
    ) -> Result<(), DirentError> {
        if name.is_empty() || name.len() > NAME_MAX || name.iter().any(|&b| b == 0 || b == b'/') {
            return Err(DirentError::BadName);
        }
        let reclen = dirent64_reclen(name.len());
        let record = self
            .buf
            .get_mut(self.used..)
            .and_then(|rest| rest.get_mut(..reclen))
            .ok_or(DirentError::Full)?;
        record[DIRENT64_INO..DIRENT64_INO + 8].copy_from_slice(&ino.to_ne_bytes());
        record[DIRENT64_OFF..DIRENT64_OFF + 8].copy_from_slice(&next_off.to_ne_bytes());
        record[DIRENT64_RECLEN..DIRENT64_RECLEN + 2]
            .copy_from_slice(&(reclen as u16).to_ne_bytes());
        record[DIRENT64_TYPE] = d_type;
        let name_end = DIRENT64_NAME + name.len();
        record[DIRENT64_NAME..name_end].copy_from_slice(name);
        record[name_end..].fill(0);
        self.used += reclen;
        Ok(())
    }

    /// Bytes packed so far (the `getdents64` result).
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether nothing is packed yet.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
}

/// One record read back from a `getdents64` buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dirent64<'a> {
    /// Inode number.
    pub ino: u64,
    /// Cookie of the next entry.
    pub off: i64,
    /// `DT_*`.
    pub d_type: u8,
    /// The name, without its NUL.
    pub name: &'a [u8],
}

/// Iterates over the records of a `getdents64` buffer (the bytes the call returned).
pub fn read_dirent64(buf: &[u8]) -> impl Iterator<Item = Result<Dirent64<'_>, DirentError>> {
    let mut rest = buf;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let header = rest.get(..DIRENT64_NAME).ok_or(DirentError::Malformed)?;
            let word = |at: usize| {
                let mut b = [0; 8];
                b.copy_from_slice(&header[at..at + 8]);
                b
            };
            let reclen =
                u16::from_ne_bytes([header[DIRENT64_RECLEN], header[DIRENT64_RECLEN + 1]]) as usize;
            if !reclen.is_multiple_of(8) || reclen <= DIRENT64_NAME || reclen > rest.len() {
                return Err(DirentError::Malformed);
            }
            let name_area = &rest[DIRENT64_NAME..reclen];
            let len = name_area
                .iter()
                .position(|&b| b == 0)
                .ok_or(DirentError::Malformed)?;
            let entry = Dirent64 {
                ino: u64::from_ne_bytes(word(DIRENT64_INO)),
                off: i64::from_ne_bytes(word(DIRENT64_OFF)),
                d_type: header[DIRENT64_TYPE],
                name: &name_area[..len],
            };
            rest = &rest[reclen..];
            Ok(entry)
        })();
        if entry.is_err() {
            rest = &[];
        }
        Some(entry)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::mem::{offset_of, size_of};

    #[test]
    fn sizes() {
        assert_eq!(size_of::<Stat>(), 144);
        assert_eq!(offset_of!(Stat, st_mode), 24);
        assert_eq!(offset_of!(Stat, st_rdev), 40);
        assert_eq!(offset_of!(Stat, st_atime), 72);
        assert_eq!(size_of::<Statx>(), 256);
        assert_eq!(offset_of!(Statx, stx_atime), 0x40);
        assert_eq!(offset_of!(Statx, stx_rdev_major), 0x80);
        assert_eq!(offset_of!(Statx, stx_subvol), 0xa0);
        assert_eq!(offset_of!(Statx, _spare3), 0xc0);
        assert_eq!(
            (size_of::<Iovec>(), size_of::<Pollfd>(), size_of::<Flock>()),
            (16, 8, 32)
        );
    }

    #[test]
    fn device_numbers_round_trip() {
        for (ma, mi) in [
            (0, 0),
            (1, 3),
            (4, 64),
            (136, 0),
            (0xfff, 0xff),
            (0x0001_2345, 0x00ab_cdef),
        ] {
            let dev = makedev(ma, mi);
            assert_eq!((major(dev), minor(dev)), (ma, mi));
        }
        assert_eq!(makedev(1, 3), 0x103);
        assert_eq!(
            makedev(4, 300),
            (300 & 0xff) | (4 << 8) | ((300 & !0xff) << 12)
        );
    }

    #[test]
    fn dirent_types_follow_the_mode() {
        assert_eq!(dt_from_mode(S_IFDIR | 0o755), DT_DIR);
        assert_eq!(dt_from_mode(S_IFREG), DT_REG);
        assert_eq!(dt_from_mode(S_IFLNK | 0o777), DT_LNK);
        assert_eq!(dt_from_mode(S_IFCHR), DT_CHR);
        assert_eq!(dt_from_mode(S_IFSOCK), DT_SOCK);
    }

    #[test]
    fn dirent_records_are_packed_and_aligned() {
        let mut buf = [0xeeu8; 64];
        let mut w = Dirent64Writer::new(&mut buf);
        assert!(w.is_empty());
        // 19 + 1 + 1 = 21 -> 24.
        w.push(7, 1, DT_DIR, b".").unwrap();
        // 19 + 5 + 1 = 25 -> 32.
        w.push(9, 2, DT_REG, b"hello").unwrap();
        assert_eq!(w.len(), 56);
        // 24 more do not fit in the 8 left.
        assert_eq!(w.push(10, 3, DT_REG, b"x"), Err(DirentError::Full));
        assert_eq!(w.len(), 56, "a failed push writes nothing");
        assert_eq!(w.push(10, 3, DT_REG, b""), Err(DirentError::BadName));
        assert_eq!(w.push(10, 3, DT_REG, b"a/b"), Err(DirentError::BadName));
        assert_eq!(
            w.push(10, 3, DT_REG, &[b'n'; 256]),
            Err(DirentError::BadName)
        );
        assert_eq!(&buf[0..8], &7u64.to_ne_bytes());
        assert_eq!(&buf[8..16], &1i64.to_ne_bytes());
        assert_eq!(&buf[16..18], &24u16.to_ne_bytes());
        assert_eq!(buf[18], DT_DIR);
        assert_eq!(&buf[19..24], b".\0\0\0\0");
        assert_eq!(&buf[24..32], &9u64.to_ne_bytes());
        assert_eq!(&buf[40..42], &32u16.to_ne_bytes());
        assert_eq!(&buf[43..56], b"hello\0\0\0\0\0\0\0\0");
        assert_eq!(&buf[56..], &[0xee; 8], "untouched past the packed records");
        let entries: Vec<_> = read_dirent64(&buf[..56]).collect::<Result<_, _>>().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1],
            Dirent64 {
                ino: 9,
                off: 2,
                d_type: DT_REG,
                name: b"hello"
            }
        );
    }

    #[test]
    fn reclen_rounds_to_eight() {
        for len in 1..=NAME_MAX {
            let r = dirent64_reclen(len);
            assert_eq!(r % 8, 0);
            assert!(r > DIRENT64_NAME + len && r <= DIRENT64_NAME + len + 8);
        }
        assert_eq!(dirent64_reclen(4), 24);
        assert_eq!(dirent64_reclen(5), 32);
    }

    #[test]
    fn a_name_of_every_length_round_trips_and_a_buffer_fills_exactly() {
        for len in 1..=NAME_MAX {
            let name: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let reclen = dirent64_reclen(len);
            let mut buf = alloc::vec![0u8; reclen * 3];
            let mut w = Dirent64Writer::new(&mut buf);
            for i in 0..3 {
                w.push(i, i as i64 + 1, DT_REG, &name).unwrap();
            }
            assert_eq!(w.push(9, 9, DT_REG, &name), Err(DirentError::Full));
            assert_eq!(w.len(), buf.len());
            let read: Vec<_> = read_dirent64(&buf).collect::<Result<_, _>>().unwrap();
            assert_eq!(read.len(), 3);
            assert!(read
                .iter()
                .enumerate()
                .all(|(i, e)| e.ino == i as u64 && e.off == i as i64 + 1 && e.name == &name[..]));
        }
    }

    #[test]
    fn damaged_dirent_buffers_are_errors() {
        let mut buf = [0u8; 32];
        let mut w = Dirent64Writer::new(&mut buf);
        w.push(1, 1, DT_REG, b"abc").unwrap();
        let n = w.len();
        let mut bad = buf;
        bad[16] = 3; // reclen not a multiple of 8
        assert_eq!(
            read_dirent64(&bad[..n]).next(),
            Some(Err(DirentError::Malformed))
        );
        let mut bad = buf;
        bad[16] = 64; // past the end
        assert_eq!(
            read_dirent64(&bad[..n]).next(),
            Some(Err(DirentError::Malformed))
        );
        let mut bad = buf;
        bad[19..24].fill(b'x'); // no NUL
        assert_eq!(
            read_dirent64(&bad[..n]).next(),
            Some(Err(DirentError::Malformed))
        );
        assert_eq!(
            read_dirent64(&buf[..10]).count(),
            1,
            "one error, then the end"
        );
    }
}
