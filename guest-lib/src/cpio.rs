//! The initramfs: a cpio archive in the "newc" format (`070701`/`070702`), optionally
//! gzip-compressed, as Linux and `k42vm --initrd` use it.
//!
//! Every header field is checked; a damaged archive gives an error naming the entry and the
//! problem, never a panic or an out-of-bounds read.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;

/// Size of a newc header.
const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";
/// Largest decompressed initramfs accepted (guards against gzip bombs).
pub const MAX_DECOMPRESSED: usize = 1 << 30;

/// File type bits of `mode` (as in `stat`).
pub mod mode {
    /// Mask of the type bits.
    pub const TYPE_MASK: u32 = 0o170000;
    /// Regular file.
    pub const REGULAR: u32 = 0o100000;
    /// Directory.
    pub const DIRECTORY: u32 = 0o040000;
    /// Symbolic link (data is the target).
    pub const SYMLINK: u32 = 0o120000;
    /// Character device.
    pub const CHAR_DEVICE: u32 = 0o020000;
    /// Block device.
    pub const BLOCK_DEVICE: u32 = 0o060000;
}

/// One archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Path inside the archive, without a leading `./` or `/`.
    pub name: &'a str,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// Device numbers for device nodes (major, minor).
    pub rdev: (u32, u32),
    /// Contents (the target path for a symlink).
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// The type bits of `mode`.
    pub fn kind(&self) -> u32 {
        self.mode & mode::TYPE_MASK
    }
}

/// Why an archive cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// An entry's header does not start with `070701` or `070702`.
    BadMagic {
        /// Byte offset of the header.
        offset: usize,
    },
    /// A header field is not 8 hex digits.
    BadField {
        /// Byte offset of the header.
        offset: usize,
        /// Which field.
        field: &'static str,
    },
    /// The archive ends inside an entry.
    Truncated {
        /// Byte offset of the entry.
        offset: usize,
    },
    /// A name is empty, lacks its NUL, or is not UTF-8.
    BadName {
        /// Byte offset of the header.
        offset: usize,
    },
    /// The archive has no `TRAILER!!!` entry.
    NoTrailer,
    /// The gzip stream is damaged or too large.
    Gzip(String),
}

impl core::fmt::Display for CpioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpioError::BadMagic { offset } => write!(f, "no cpio newc header at byte {offset}"),
            CpioError::BadField { offset, field } => {
                write!(f, "bad {field} field in the header at byte {offset}")
            }
            CpioError::Truncated { offset } => {
                write!(f, "archive ends inside the entry at byte {offset}")
            }
            CpioError::BadName { offset } => {
                write!(f, "bad file name in the header at byte {offset}")
            }
            CpioError::NoTrailer => write!(f, "archive has no TRAILER!!! entry"),
            CpioError::Gzip(why) => write!(f, "gzip: {why}"),
        }
    }
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

fn hex_field(
    header: &[u8],
    index: usize,
    offset: usize,
    field: &'static str,
) -> Result<u32, CpioError> {
    let start = 6 + index * 8;
    let text = core::str::from_utf8(&header[start..start + 8])
        .map_err(|_| CpioError::BadField { offset, field })?;
    u32::from_str_radix(text, 16).map_err(|_| CpioError::BadField { offset, field })
}

/// Parses every entry of an uncompressed newc archive (the trailer excluded).
pub fn parse(archive: &[u8]) -> Result<Vec<Entry<'_>>, CpioError> {
    let mut entries = Vec::new();
    let mut offset = 0;
    loop {
        let header =
            archive
                .get(offset..offset + HEADER_LEN)
                .ok_or(if offset >= archive.len() {
                    CpioError::NoTrailer
                } else {
                    CpioError::Truncated { offset }
                })?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(CpioError::BadMagic { offset });
        }
        let field = |i, name| hex_field(header, i, offset, name);
        let mode = field(1, "mode")?;
        let uid = field(2, "uid")?;
        let gid = field(3, "gid")?;
        let nlink = field(4, "nlink")?;
        let mtime = field(5, "mtime")?;
        let file_size = field(6, "filesize")? as usize;
        let rdev = (field(9, "rdevmajor")?, field(10, "rdevminor")?);
        let name_size = field(11, "namesize")? as usize;
        let name_start = offset + HEADER_LEN;
        let name_end = name_start
            .checked_add(name_size)
            .ok_or(CpioError::Truncated { offset })?;
        let raw_name = archive
            .get(name_start..name_end)
            .ok_or(CpioError::Truncated { offset })?;
        let (&nul, name_bytes) = raw_name.split_last().ok_or(CpioError::BadName { offset })?;
        if nul != 0 || name_bytes.is_empty() {
            return Err(CpioError::BadName { offset });
        }
        let name = core::str::from_utf8(name_bytes).map_err(|_| CpioError::BadName { offset })?;
        let data_start = align4(name_end).ok_or(CpioError::Truncated { offset })?;
        let data_end = data_start
            .checked_add(file_size)
            .ok_or(CpioError::Truncated { offset })?;
        let data = archive
            .get(data_start..data_end)
            .ok_or(CpioError::Truncated { offset })?;
        if name == TRAILER {
            return Ok(entries);
        }
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if !name.is_empty() && name != "." {
            entries.push(Entry {
                name,
                mode,
                uid,
                gid,
                nlink,
                mtime,
                rdev,
                data,
            });
        }
        offset = align4(data_end).ok_or(CpioError::Truncated { offset })?;
    }
}

/// The archive's bytes: decompressed if it is gzip, as is otherwise.
pub fn decompress(image: &[u8]) -> Result<Cow<'_, [u8]>, CpioError> {
    if image.len() < 2 || image[0] != 0x1f || image[1] != 0x8b {
        return Ok(Cow::Borrowed(image));
    }
    let body = gzip_body(image)?;
    miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_DECOMPRESSED)
        .map(Cow::Owned)
        .map_err(|e| CpioError::Gzip(alloc::format!("{:?}", e.status)))
}

/// The deflate stream of a gzip member (RFC 1952), skipping the optional header fields.
fn gzip_body(image: &[u8]) -> Result<&[u8], CpioError> {
    let bad = |why: &str| CpioError::Gzip(String::from(why));
    if image.len() < 18 || image[2] != 8 {
        return Err(bad("not a deflate-compressed gzip member"));
    }
    let flags = image[3];
    let mut at = 10;
    if flags & 0x04 != 0 {
        let extra = image
            .get(at..at + 2)
            .ok_or_else(|| bad("truncated header"))?;
        at += 2 + usize::from(u16::from_le_bytes([extra[0], extra[1]]));
    }
    for bit in [0x08, 0x10] {
        if flags & bit != 0 {
            let rest = image.get(at..).ok_or_else(|| bad("truncated header"))?;
            at += rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("unterminated header string"))?
                + 1;
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    // The 8-byte trailer (CRC32, size) follows the deflate data.
    image
        .get(at..image.len().saturating_sub(8))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad("truncated header"))
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use super::*;
    use alloc::vec;

    /// Builds a newc archive of (name, mode, data) entries, with the trailer.
    pub(crate) fn archive(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |name: &str, mode: u32, data: &[u8]| {
            let header = alloc::format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                1, mode, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (name, mode, data) in entries {
            push(name, *mode, data);
        }
        push(TRAILER, 0, &[]);
        out
    }

    #[test]
    fn reads_files_directories_and_links() {
        let a = archive(&[
            (".", mode::DIRECTORY | 0o755, b""),
            ("./bin", mode::DIRECTORY | 0o755, b""),
            ("bin/init", mode::REGULAR | 0o755, b"\x7fELF..."),
            ("bin/sh", mode::SYMLINK | 0o777, b"init"),
            ("empty", mode::REGULAR | 0o644, b""),
        ]);
        let entries = parse(&a).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["bin", "bin/init", "bin/sh", "empty"]);
        assert_eq!(entries[1].data, b"\x7fELF...");
        assert_eq!(entries[1].kind(), mode::REGULAR);
        assert_eq!(entries[2].kind(), mode::SYMLINK);
        assert_eq!(entries[2].data, b"init");
        assert_eq!(entries[3].data, b"");
    }

    #[test]
    fn damaged_archives_are_errors_not_panics() {
        let good = archive(&[("f", mode::REGULAR | 0o644, b"hello world")]);
        // Every truncation is an error.
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "truncated at {cut} parsed");
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(parse(&bad), Err(CpioError::BadMagic { offset: 0 }));
        let mut bad = good.clone();
        bad[6 + 6 * 8] = b'z'; // filesize
        assert_eq!(
            parse(&bad),
            Err(CpioError::BadField {
                offset: 0,
                field: "filesize"
            })
        );
        let mut bad = good.clone();
        bad[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"ffffffff");
        assert_eq!(parse(&bad), Err(CpioError::Truncated { offset: 0 }));
        let mut bad = good;
        bad[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"00000000");
        assert_eq!(parse(&bad), Err(CpioError::BadName { offset: 0 }));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if i < 6 {
                        b"070701"[i]
                    } else {
                        (state >> 33) as u8
                    }
                })
                .collect();
            let _ = parse(&bytes);
            let _ = decompress(&bytes);
        }
    }

    #[test]
    fn gzip_archives_are_decompressed() {
        let plain = archive(&[("init", mode::REGULAR | 0o755, &[42u8; 5000])]);
        let dir = std::env::temp_dir().join(alloc::format!("k42-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("initrd");
        std::fs::write(&path, &plain).unwrap();
        let status = std::process::Command::new("gzip")
            .args(["-k", "-f", "-9"])
            .arg(&path)
            .status();
        let Ok(status) = status else {
            panic!("gzip(1) is needed for this test");
        };
        assert!(status.success());
        let compressed = std::fs::read(dir.join("initrd.gz")).unwrap();
        assert!(compressed.len() < plain.len());
        let bytes = decompress(&compressed).unwrap();
        assert_eq!(&*bytes, &plain[..]);
        assert_eq!(parse(&bytes).unwrap()[0].data, &[42u8; 5000][..]);
        // Uncompressed input passes through without a copy.
        assert!(matches!(decompress(&plain).unwrap(), Cow::Borrowed(_)));
        // A damaged stream is an error.
        let mut broken = compressed.clone();
        let mid = broken.len() / 2;
        broken[mid] ^= 0xff;
        broken.truncate(mid + 4);
        assert!(matches!(decompress(&broken), Err(CpioError::Gzip(_))));
        std::fs::remove_dir_all(&dir).ok();
    }
}
