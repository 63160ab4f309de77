//! Block devices: the `ioctl` numbers programs use to size a disk (`include/uapi/linux/fs.h`),
//! and how Linux numbers virtio disks.

/// Size in 512-byte sectors, as an `unsigned long` (`_IO(0x12, 96)`).
pub const BLKGETSIZE: u32 = 0x1260;
/// Write back and drop the device's cached blocks (`_IO(0x12, 97)`).
pub const BLKFLSBUF: u32 = 0x1261;
/// Whether the device is read-only, as an `int` (`_IO(0x12, 94)`).
pub const BLKROGET: u32 = 0x125e;
/// Logical sector size, as an `int` (`_IO(0x12, 104)`).
pub const BLKSSZGET: u32 = 0x1268;
/// Physical sector size, as an `unsigned int` (`_IO(0x12, 123)`).
pub const BLKPBSZGET: u32 = 0x127b;
/// Size in bytes, as a `u64` (`_IOR(0x12, 114, size_t)`).
pub const BLKGETSIZE64: u32 = 0x8008_1272;

/// The sector size of `BLKGETSIZE` and `BLKSSZGET`.
pub const SECTOR_SIZE: u64 = 512;
/// The major number Linux's virtio_blk gets on a typical system (it is dynamic there).
pub const VIRTIO_BLK_MAJOR: u32 = 254;
/// Minor numbers per virtio disk (the disk, then its partitions).
pub const VIRTIO_BLK_MINORS: u32 = 16;

/// The `/dev` name of virtio disk `n` (`vda`, `vdb`, ... `vdz`), or `None` past 26 disks.
pub fn virtio_disk_name(n: usize) -> Option<[u8; 3]> {
    (n < 26).then(|| [b'v', b'd', b'a' + n as u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IOC(dir, type, nr, size)` of `include/uapi/asm-generic/ioctl.h`.
    const fn ioc(dir: u32, kind: u32, nr: u32, size: u32) -> u32 {
        (dir << 30) | (size << 16) | (kind << 8) | nr
    }

    #[test]
    fn ioctl_numbers_follow_the_encoding() {
        assert_eq!(BLKROGET, ioc(0, 0x12, 94, 0));
        assert_eq!(BLKGETSIZE, ioc(0, 0x12, 96, 0));
        assert_eq!(BLKFLSBUF, ioc(0, 0x12, 97, 0));
        assert_eq!(BLKSSZGET, ioc(0, 0x12, 104, 0));
        assert_eq!(BLKPBSZGET, ioc(0, 0x12, 123, 0));
        // _IOR: the read direction is 2; size_t is 8 bytes.
        assert_eq!(BLKGETSIZE64, ioc(2, 0x12, 114, 8));
    }

    #[test]
    fn disks_are_named_the_linux_way() {
        assert_eq!(virtio_disk_name(0), Some(*b"vda"));
        assert_eq!(virtio_disk_name(2), Some(*b"vdc"));
        assert_eq!(virtio_disk_name(25), Some(*b"vdz"));
        assert_eq!(virtio_disk_name(26), None);
    }
}
