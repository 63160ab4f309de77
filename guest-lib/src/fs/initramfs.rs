//! Filling a [`FileSystem`] from an initramfs image (cpio newc, optionally gzip), as Linux
//! unpacks one into its rootfs.

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{Ctx, FileSystem, FileType, FsError, Ino, SetTime, ROOT_INO};
use crate::cpio::{self, mode, CpioError, Entry};
use k42_linux_abi::file::S_IALLUGO;

/// Why an image could not be unpacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PopulateError {
    /// The archive is damaged.
    Archive(CpioError),
    /// An entry could not be added (e.g. a file over a directory, a `..` in its name).
    Entry {
        /// The entry's name in the archive.
        name: String,
        /// What the file system answered.
        error: FsError,
    },
    /// An entry's type is not held by this file system (block device, FIFO, socket).
    Unsupported {
        /// The entry's name.
        name: String,
        /// Its mode.
        mode: u32,
    },
}

impl From<CpioError> for PopulateError {
    fn from(e: CpioError) -> Self {
        PopulateError::Archive(e)
    }
}

impl core::fmt::Display for PopulateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PopulateError::Archive(e) => write!(f, "initramfs: {e}"),
            PopulateError::Entry { name, error } => write!(f, "initramfs entry {name}: {error}"),
            PopulateError::Unsupported { name, mode } => {
                write!(
                    f,
                    "initramfs entry {name}: unsupported file type (mode {mode:o})"
                )
            }
        }
    }
}

/// What makes two newc entries the same file: device (major, minor) and inode number.
type LinkKey = (u32, u32, u32);

/// Unpacks `image` into `fs`, relative to its root; returns the number of entries added.
///
/// Directories, regular files, symlinks and character devices are created with the
/// archive's mode, owner and modification time (directories get theirs back after their
/// contents are in, as Linux does). Missing parent directories are created (0755, root).
/// Entries with the same inode and device numbers and a link count above one are hard links
/// of one file; its contents come from whichever of them carries data (GNU cpio puts it on
/// the last). An entry named `..` is skipped. A later entry replaces an earlier
/// non-directory of the same name; a directory entry over an existing directory updates its
/// attributes; anything else is an error, as is a `..` inside a name.
pub fn populate_from_cpio(fs: &mut FileSystem, image: &[u8]) -> Result<usize, PopulateError> {
    let bytes = cpio::decompress(image)?;
    let entries = cpio::parse(&bytes)?;
    let ids = header_ids(&bytes)?;
    if ids.len() != entries.len() {
        return Err(PopulateError::Archive(CpioError::NoTrailer));
    }
    let mut links: BTreeMap<LinkKey, Ino> = BTreeMap::new();
    let mut dir_times: Vec<(Ino, i64)> = Vec::new();
    let mut added = 0;
    for (entry, key) in entries.iter().zip(ids) {
        if entry.name == ".." {
            continue;
        }
        let fail = |error| PopulateError::Entry {
            name: entry.name.to_string(),
            error,
        };
        let mtime = i64::from(entry.mtime) * 1_000_000_000;
        let ctx = Ctx {
            uid: entry.uid,
            gid: entry.gid,
            now: mtime,
        };
        let components: Vec<&[u8]> = entry
            .name
            .as_bytes()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if components.contains(&&b".."[..]) {
            return Err(fail(FsError::Invalid));
        }
        let Some((&leaf, parents)) = components.split_last() else {
            continue;
        };
        let dir = make_parents(fs, parents, mtime).map_err(fail)?;
        let existing = match fs.lookup_in(dir, leaf) {
            Ok(ino) => Some(ino),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(fail(e)),
        };
        let kind = entry.kind();
        if kind == mode::DIRECTORY {
            let ino = match existing {
                Some(ino) if fs.inode(ino).map_err(fail)?.file_type() == FileType::Directory => {
                    fs.chmod(ino, entry.mode, ctx).map_err(fail)?;
                    fs.chown(ino, Some(entry.uid), Some(entry.gid), ctx)
                        .map_err(fail)?;
                    ino
                }
                Some(_) => return Err(fail(FsError::Exists)),
                None => fs.mkdir(dir, leaf, entry.mode, ctx).map_err(fail)?,
            };
            dir_times.push((ino, mtime));
            added += 1;
            continue;
        }
        if ![
            mode::REGULAR,
            mode::SYMLINK,
            mode::CHAR_DEVICE,
            mode::BLOCK_DEVICE,
        ]
        .contains(&kind)
        {
            return Err(PopulateError::Unsupported {
                name: entry.name.to_string(),
                mode: entry.mode,
            });
        }
        let hard_link = (entry.nlink > 1).then_some(key);
        let earlier = hard_link.and_then(|k| links.get(&k).copied());
        if let Some(old) = existing {
            if Some(old) == earlier {
                added += 1;
                continue;
            }
            if fs.inode(old).map_err(fail)?.file_type() == FileType::Directory {
                return Err(fail(FsError::IsADirectory));
            }
            fs.unlink(dir, leaf, ctx).map_err(fail)?;
        }
        let ino = match earlier {
            Some(ino) => {
                if fs.inode(ino).map_err(fail)?.mode() & mode::TYPE_MASK != kind {
                    return Err(fail(FsError::Invalid));
                }
                fs.attach(dir, leaf, ino, ctx).map_err(fail)?;
                if kind == mode::REGULAR && !entry.data.is_empty() {
                    fs.truncate(ino, 0, ctx).map_err(fail)?;
                }
                ino
            }
            None => create(fs, dir, leaf, entry, ctx).map_err(fail)?,
        };
        if kind == mode::REGULAR && !entry.data.is_empty() {
            fs.write_at(ino, 0, entry.data, ctx).map_err(fail)?;
            if matches!(bytes, Cow::Borrowed(_)) {
                let offset = entry.data.as_ptr() as u64 - image.as_ptr() as u64;
                fs.set_archive_offset(ino, offset).map_err(fail)?;
            }
        }
        if let Some(key) = hard_link {
            links.insert(key, ino);
        }
        added += 1;
    }
    for (ino, mtime) in dir_times {
        fs.utimens(
            ino,
            SetTime::At(mtime),
            SetTime::At(mtime),
            Ctx::root(mtime),
        )
        .map_err(|error| PopulateError::Entry {
            name: String::from("(directory times)"),
            error,
        })?;
    }
    Ok(added)
}

/// Creates the inode of a non-directory entry named `leaf` in `dir`.
fn create(
    fs: &mut FileSystem,
    dir: Ino,
    leaf: &[u8],
    entry: &Entry<'_>,
    ctx: Ctx,
) -> Result<Ino, FsError> {
    let perm = entry.mode & S_IALLUGO;
    match entry.kind() {
        mode::REGULAR => Ok(fs.create(dir, leaf, perm, true, ctx)?.0),
        mode::SYMLINK => {
            if entry.data.contains(&0) {
                return Err(FsError::Invalid);
            }
            fs.symlink(entry.data, dir, leaf, ctx)
        }
        mode::BLOCK_DEVICE => {
            fs.mknod_device(dir, leaf, FileType::BlockDevice, perm, entry.rdev, ctx)
        }
        _ => fs.mknod_device(dir, leaf, FileType::CharDevice, perm, entry.rdev, ctx),
    }
}

/// Walks `parents` from the root, following symlinks and creating missing directories.
fn make_parents(fs: &mut FileSystem, parents: &[&[u8]], mtime: i64) -> Result<Ino, FsError> {
    let mut dir = ROOT_INO;
    for &name in parents {
        dir = match fs.lookup(dir, name, true) {
            Ok(ino) if fs.inode(ino)?.file_type() == FileType::Directory => ino,
            Ok(_) => return Err(FsError::NotADirectory),
            Err(FsError::NotFound) => fs.mkdir(dir, name, 0o755, Ctx::root(mtime))?,
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

/// The (devmajor, devminor, ino) of every entry [`cpio::parse`] returns, in the same order:
/// its `Entry` does not carry them. Runs after `parse` accepted the archive, so a mismatch
/// is reported, not expected.
fn header_ids(archive: &[u8]) -> Result<Vec<LinkKey>, CpioError> {
    const HEADER_LEN: usize = 110;
    let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);
    let mut ids = Vec::new();
    let mut offset = 0;
    loop {
        let header = archive
            .get(offset..offset + HEADER_LEN)
            .ok_or(CpioError::Truncated { offset })?;
        let field = |index: usize, name: &'static str| {
            core::str::from_utf8(&header[6 + index * 8..14 + index * 8])
                .ok()
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .ok_or(CpioError::BadField {
                    offset,
                    field: name,
                })
        };
        let file_size = field(6, "filesize")? as usize;
        let name_size = field(11, "namesize")? as usize;
        let name_start = offset + HEADER_LEN;
        let name = name_size
            .checked_sub(1)
            .and_then(|len| archive.get(name_start..name_start.checked_add(len)?))
            .ok_or(CpioError::BadName { offset })?;
        if name == b"TRAILER!!!" {
            return Ok(ids);
        }
        let name = core::str::from_utf8(name).map_err(|_| CpioError::BadName { offset })?;
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if !name.is_empty() && name != "." {
            ids.push((
                field(7, "devmajor")?,
                field(8, "devminor")?,
                field(0, "ino")?,
            ));
        }
        offset = align4(name_start + name_size)
            .and_then(|data| data.checked_add(file_size))
            .and_then(align4)
            .ok_or(CpioError::Truncated { offset })?;
    }
}
