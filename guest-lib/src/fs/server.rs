//! The file-system server's protocol and its logic: open-file descriptions (handles), pipes
//! and the small device files, over a [`FileSystem`]. The ring-3 server program only moves
//! calls between PPC and [`FileServer::call`]; the Linux personality talks to it through
//! [`Client`]. Both halves are host-tested together through a loopback [`Transport`].
//!
//! A call is four words (`op`, `a1`, `a2`, `a3`) plus the caller's 4 KiB PPC buffer, which
//! carries paths (NUL-terminated, absolute: the client resolves its working directory), data
//! and structures both ways. The reply is two words: a value and an errno (0: success).
//!
//! Handles are open-file descriptions, as Linux's: an offset, the open flags, and a reference
//! count that `dup`, `fork` ([`op::RETAIN`]) and `close` move. Pipes live here too; a read
//! from an empty pipe (or a write to a full one) that may block replies [`WOULD_BLOCK`], and
//! the server later posts [`WAKE_SOFT_INTERRUPT`] to the waiting process (its dispatcher 0)
//! when the pipe changes: the client blocks until then and calls again.
//!
//! Not yet: ownership checks on handles (any client that names a handle may use it), closing
//! the handles of a process that dies without closing them.
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use k42_linux_abi::errno;
use k42_linux_abi::file::{
    Stat, O_ACCMODE, O_APPEND, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_RDONLY,
    O_TRUNC, O_WRONLY, SEEK_CUR, SEEK_END, SEEK_SET, S_IFIFO, S_IFMT,
};

use super::{Ctx, FileSystem, FileType, FsError, Ino, ROOT_INO};

/// Size of the buffer a call carries (one page, the PPC buffer).
pub const BUFFER_SIZE: usize = 4096;
/// The name the server exports.
pub const SERVER_NAME: &str = "fs";
/// The reply value of a call that would block: wait for [`WAKE_SOFT_INTERRUPT`], call again.
pub const WOULD_BLOCK: u64 = u64::MAX >> 2;
/// The soft-interrupt bit the server posts to a waiting client when a pipe it waits on
/// changes.
pub const WAKE_SOFT_INTERRUPT: u64 = 1 << 61;
/// Bytes a pipe holds (Linux's default).
pub const PIPE_CAPACITY: usize = 64 * 1024;
/// Most handles named in one [`op::RETAIN`] or [`op::CLOSE`] call.
pub const MAX_HANDLES_PER_CALL: usize = BUFFER_SIZE / 8;

/// Operations (`a0`).
pub mod op {
    /// `open(flags = a1, mode = a2)`, path in the buffer → handle; [`OpenInfo`](super::OpenInfo)
    /// words in the buffer.
    pub const OPEN: u64 = 1;
    /// `close(count = a1)`, that many handles (u64 each) in the buffer: drops one reference each.
    pub const CLOSE: u64 = 2;
    /// `retain(count = a1)`, handles in the buffer: one more reference each (dup, fork).
    pub const RETAIN: u64 = 3;
    /// `read(handle = a1, len = a2, offset = a3 or [`CURRENT`])` → bytes, data in the buffer.
    pub const READ: u64 = 4;
    /// `write(handle = a1, len = a2, offset = a3 or [`CURRENT`])`, data in the buffer → bytes.
    pub const WRITE: u64 = 5;
    /// `seek(handle = a1, offset = a2, whence = a3)` → the new offset.
    pub const SEEK: u64 = 6;
    /// `fstat(handle = a1)` → a `struct stat` in the buffer.
    pub const FSTAT: u64 = 7;
    /// `stat(follow = a1)`, path in the buffer → a `struct stat` in the buffer.
    pub const STAT: u64 = 8;
    /// `getdents64(handle = a1, len = a2)` → bytes of `linux_dirent64` records in the buffer.
    pub const GETDENTS: u64 = 9;
    /// `readlink()`, path in the buffer → length, the target in the buffer.
    pub const READLINK: u64 = 10;
    /// `mkdir(mode = a1)`, path in the buffer.
    pub const MKDIR: u64 = 11;
    /// `unlink()`, path in the buffer.
    pub const UNLINK: u64 = 12;
    /// `rmdir()`, path in the buffer.
    pub const RMDIR: u64 = 13;
    /// `rename()`, old and new path in the buffer, each NUL-terminated.
    pub const RENAME: u64 = 14;
    /// `link()`, existing and new path in the buffer.
    pub const LINK: u64 = 15;
    /// `symlink()`, target and link path in the buffer.
    pub const SYMLINK: u64 = 16;
    /// `truncate(handle = a1, len = a2)`.
    pub const TRUNCATE: u64 = 17;
    /// `chmod(mode = a1)`, path in the buffer.
    pub const CHMOD: u64 = 18;
    /// `getfl(handle = a1)` → the open flags.
    pub const GETFL: u64 = 19;
    /// `setfl(handle = a1, flags = a2)`: `O_APPEND` and `O_NONBLOCK` may change.
    pub const SETFL: u64 = 20;
    /// `pipe(flags = a1)` → the read end; the write end is the value + 1.
    pub const PIPE: u64 = 21;
    /// `poll(handle = a1)` → readiness bits: 1 readable, 2 writable, 4 hung up.
    pub const POLL: u64 = 22;
    /// `utimens(follow = a1, atime_ns = a2, mtime_ns = a3)`, path in the buffer (times as
    /// [`TIME_NOW`](super::TIME_NOW) or [`TIME_OMIT`](super::TIME_OMIT) or nanoseconds).
    pub const UTIMENS: u64 = 23;
    /// `a3` of read and write: use and advance the handle's own offset.
    pub const CURRENT: u64 = u64::MAX;
}

/// `utimens` time meaning "now".
pub const TIME_NOW: u64 = u64::MAX;
/// `utimens` time meaning "leave it".
pub const TIME_OMIT: u64 = u64::MAX - 1;

/// What `open` tells the client about the file, as words in the buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenInfo {
    /// The `S_IF*` type bits.
    pub kind: u32,
    /// The size at open time.
    pub size: u64,
    /// Where the bytes lie in the initramfs archive while unchanged (see
    /// [`FileSystem::archive_offset`]); only for files opened read-only.
    pub archive_offset: Option<u64>,
    /// Device numbers of a character device (`makedev` form).
    pub rdev: u64,
    /// The inode number.
    pub ino: u64,
}

impl OpenInfo {
    fn encode(&self, buf: &mut [u8]) {
        let words = [
            u64::from(self.kind),
            self.size,
            self.archive_offset.unwrap_or(u64::MAX),
            self.rdev,
            self.ino,
        ];
        put_words(buf, &words);
    }

    fn decode(buf: &[u8]) -> OpenInfo {
        let w = |i: usize| word(buf, i);
        OpenInfo {
            kind: w(0) as u32,
            size: w(1),
            archive_offset: Some(w(2)).filter(|&o| o != u64::MAX),
            rdev: w(3),
            ino: w(4),
        }
    }
}

fn word(buf: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
    u64::from_le_bytes(b)
}

fn put_words(buf: &mut [u8], words: &[u64]) {
    for (i, w) in words.iter().enumerate() {
        buf[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
}

/// A pipe's buffer and ends.
#[derive(Debug, Default)]
struct Pipe {
    data: VecDeque<u8>,
    readers: u32,
    writers: u32,
    /// Processes waiting for it to change.
    waiting: Vec<u64>,
}

#[derive(Debug)]
enum Object {
    Inode(Ino),
    PipeRead(u64),
    PipeWrite(u64),
}

#[derive(Debug)]
struct Description {
    object: Object,
    offset: u64,
    flags: u32,
    refs: u32,
}

/// What a call returns: a value or an errno, plus the processes to wake.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// The result (when `errno` is 0).
    pub value: u64,
    /// 0, or the Linux errno of the failure.
    pub errno: i32,
}

type Result<T> = core::result::Result<T, i32>;

fn fs_err(e: FsError) -> i32 {
    e.errno()
}

/// The server: a file system, the open-file descriptions and the pipes.
pub struct FileServer {
    fs: FileSystem,
    handles: BTreeMap<u64, Description>,
    pipes: BTreeMap<u64, Pipe>,
    next_handle: u64,
    next_pipe: u64,
    random: u64,
    wake: Vec<u64>,
}

impl FileServer {
    /// A server over `fs`; `seed` starts the `/dev/urandom` generator.
    pub fn new(fs: FileSystem, seed: u64) -> FileServer {
        FileServer {
            fs,
            handles: BTreeMap::new(),
            pipes: BTreeMap::new(),
            next_handle: 1,
            next_pipe: 1,
            random: seed | 1,
            wake: Vec::new(),
        }
    }

    /// The file system.
    pub fn fs(&self) -> &FileSystem {
        &self.fs
    }

    /// Open handles (for tests and statistics).
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// Processes to wake (post [`WAKE_SOFT_INTERRUPT`] to) after the last call.
    pub fn take_wakeups(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.wake)
    }

    /// Serves one call from process `client` at time `now` (ns since the epoch).
    pub fn call(&mut self, client: u64, args: [u64; 4], buf: &mut [u8], now: i64) -> Reply {
        let ctx = Ctx::root(now);
        match self.dispatch(client, args, buf, ctx) {
            Ok(value) => Reply { value, errno: 0 },
            Err(errno) => Reply { value: 0, errno },
        }
    }

    fn dispatch(&mut self, client: u64, args: [u64; 4], buf: &mut [u8], ctx: Ctx) -> Result<u64> {
        let [op, a1, a2, a3] = args;
        if buf.len() < BUFFER_SIZE {
            return Err(errno::EINVAL);
        }
        match op {
            op::OPEN => self.open(a1 as u32, a2 as u32, buf, ctx),
            op::CLOSE => self.close_many(a1, buf),
            op::RETAIN => self.retain_many(a1, buf),
            op::READ => self.read(client, a1, a2, a3, buf),
            op::WRITE => self.write(client, a1, a2, a3, buf, ctx),
            op::SEEK => self.seek(a1, a2 as i64, a3 as i32),
            op::FSTAT => {
                let stat = self.handle_stat(a1)?;
                put_stat(buf, &stat);
                Ok(0)
            }
            op::STAT => {
                let ino = self
                    .fs
                    .lookup(ROOT_INO, path(buf, 0)?, a1 != 0)
                    .map_err(fs_err)?;
                let stat = self.fs.stat(ino).map_err(fs_err)?;
                put_stat(buf, &stat);
                Ok(0)
            }
            op::GETDENTS => self.getdents(a1, a2, buf),
            op::READLINK => {
                let target = self.fs.readlink(ROOT_INO, path(buf, 0)?).map_err(fs_err)?;
                let n = target.len().min(BUFFER_SIZE);
                let copy: Vec<u8> = target[..n].to_vec();
                buf[..n].copy_from_slice(&copy);
                Ok(n as u64)
            }
            op::MKDIR => {
                let p = path(buf, 0)?;
                self.fs.mkdir(ROOT_INO, p, a1 as u32, ctx).map_err(fs_err)?;
                Ok(0)
            }
            op::UNLINK => {
                self.fs
                    .unlink(ROOT_INO, path(buf, 0)?, ctx)
                    .map_err(fs_err)?;
                Ok(0)
            }
            op::RMDIR => {
                self.fs
                    .rmdir(ROOT_INO, path(buf, 0)?, ctx)
                    .map_err(fs_err)?;
                Ok(0)
            }
            op::RENAME | op::LINK | op::SYMLINK => {
                let (first, second) = two_paths(buf)?;
                let (first, second) = (first.to_vec(), second.to_vec());
                match op {
                    op::RENAME => self
                        .fs
                        .rename(ROOT_INO, &first, ROOT_INO, &second, 0, ctx)
                        .map(|_| 0),
                    op::LINK => self
                        .fs
                        .link(ROOT_INO, &first, false, ROOT_INO, &second, ctx)
                        .map(|_| 0),
                    _ => self.fs.symlink(&first, ROOT_INO, &second, ctx).map(|_| 0),
                }
                .map_err(fs_err)
            }
            op::TRUNCATE => {
                let d = self.description(a1)?;
                let Object::Inode(ino) = d.object else {
                    return Err(errno::EINVAL);
                };
                if d.flags & O_ACCMODE == O_RDONLY {
                    return Err(errno::EINVAL);
                }
                self.fs.truncate(ino, a2, ctx).map_err(fs_err)?;
                Ok(0)
            }
            op::CHMOD => {
                let ino = self
                    .fs
                    .lookup(ROOT_INO, path(buf, 0)?, true)
                    .map_err(fs_err)?;
                self.fs.chmod(ino, a1 as u32, ctx).map_err(fs_err)?;
                Ok(0)
            }
            op::GETFL => Ok(u64::from(self.description(a1)?.flags)),
            op::SETFL => {
                let d = self.description_mut(a1)?;
                let changeable = O_APPEND | O_NONBLOCK;
                d.flags = (d.flags & !changeable) | (a2 as u32 & changeable);
                Ok(0)
            }
            op::PIPE => self.pipe(a1 as u32),
            op::POLL => self.poll(client, a1),
            op::UTIMENS => {
                let ino = self
                    .fs
                    .lookup(ROOT_INO, path(buf, 0)?, a1 != 0)
                    .map_err(fs_err)?;
                let time = |t: u64| match t {
                    TIME_NOW => super::SetTime::Now,
                    TIME_OMIT => super::SetTime::Omit,
                    t => super::SetTime::At(t as i64),
                };
                self.fs
                    .utimens(ino, time(a2), time(a3), ctx)
                    .map_err(fs_err)?;
                Ok(0)
            }
            _ => Err(errno::ENOSYS),
        }
    }

    fn description(&self, handle: u64) -> Result<&Description> {
        self.handles.get(&handle).ok_or(errno::EBADF)
    }

    fn description_mut(&mut self, handle: u64) -> Result<&mut Description> {
        self.handles.get_mut(&handle).ok_or(errno::EBADF)
    }

    fn new_handle(&mut self, object: Object, flags: u32) -> u64 {
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            handle,
            Description {
                object,
                offset: 0,
                flags,
                refs: 1,
            },
        );
        handle
    }

    fn open(&mut self, flags: u32, mode: u32, buf: &mut [u8], ctx: Ctx) -> Result<u64> {
        let p = path(buf, 0)?.to_vec();
        let access = flags & O_ACCMODE;
        let writes = access == O_WRONLY || access == O_RDWR_BITS;
        let ino = if flags & O_CREAT != 0 {
            self.fs
                .create(ROOT_INO, &p, mode, flags & O_EXCL != 0, ctx)
                .map_err(fs_err)?
                .0
        } else {
            let ino = self
                .fs
                .lookup(ROOT_INO, &p, flags & O_NOFOLLOW == 0)
                .map_err(fs_err)?;
            if flags & O_NOFOLLOW != 0
                && self.fs.inode(ino).map_err(fs_err)?.file_type() == FileType::Symlink
            {
                return Err(errno::ELOOP);
            }
            ino
        };
        let kind = self.fs.inode(ino).map_err(fs_err)?.file_type();
        if flags & O_DIRECTORY != 0 && kind != FileType::Directory {
            return Err(errno::ENOTDIR);
        }
        if kind == FileType::Directory && (writes || flags & O_CREAT != 0) {
            return Err(errno::EISDIR);
        }
        if kind == FileType::Regular && writes && flags & O_TRUNC != 0 {
            self.fs.truncate(ino, 0, ctx).map_err(fs_err)?;
        }
        self.fs.retain(ino).map_err(fs_err)?;
        let stat = self.fs.stat(ino).map_err(fs_err)?;
        let info = OpenInfo {
            kind: stat.st_mode & S_IFMT,
            size: stat.st_size as u64,
            archive_offset: self.fs.archive_offset(ino).filter(|_| !writes),
            rdev: stat.st_rdev,
            ino,
        };
        info.encode(buf);
        let keep = flags & !(O_CREAT | O_EXCL | O_TRUNC | O_NOFOLLOW);
        Ok(self.new_handle(Object::Inode(ino), keep))
    }

    fn handles_in(count: u64, buf: &[u8]) -> Result<Vec<u64>> {
        let count = usize::try_from(count).map_err(|_| errno::EINVAL)?;
        if count == 0 || count > MAX_HANDLES_PER_CALL {
            return Err(errno::EINVAL);
        }
        Ok((0..count).map(|i| word(buf, i)).collect())
    }

    fn close_many(&mut self, count: u64, buf: &[u8]) -> Result<u64> {
        let handles = Self::handles_in(count, buf)?;
        let mut bad = false;
        for h in handles {
            bad |= self.close(h).is_err();
        }
        if bad {
            Err(errno::EBADF)
        } else {
            Ok(0)
        }
    }

    fn retain_many(&mut self, count: u64, buf: &[u8]) -> Result<u64> {
        let handles = Self::handles_in(count, buf)?;
        if handles.iter().any(|h| !self.handles.contains_key(h)) {
            return Err(errno::EBADF);
        }
        for h in &handles {
            let d = self.handles.get_mut(h).ok_or(errno::EBADF)?;
            d.refs = d.refs.checked_add(1).ok_or(errno::EMFILE)?;
            let pipe = match d.object {
                Object::PipeRead(p) => Some((p, true)),
                Object::PipeWrite(p) => Some((p, false)),
                Object::Inode(_) => None,
            };
            if let Some((p, read)) = pipe {
                if let Some(pipe) = self.pipes.get_mut(&p) {
                    if read {
                        pipe.readers += 1;
                    } else {
                        pipe.writers += 1;
                    }
                }
            }
        }
        Ok(0)
    }

    fn close(&mut self, handle: u64) -> Result<()> {
        let d = self.description_mut(handle)?;
        d.refs -= 1;
        let (object_end, last) = (
            match d.object {
                Object::Inode(ino) => (None, Some(ino)),
                Object::PipeRead(p) => (Some((p, true)), None),
                Object::PipeWrite(p) => (Some((p, false)), None),
            },
            d.refs == 0,
        );
        if let (Some((p, read)), _) = object_end {
            if let Some(pipe) = self.pipes.get_mut(&p) {
                if read {
                    pipe.readers -= 1;
                } else {
                    pipe.writers -= 1;
                }
                self.wake.append(&mut pipe.waiting);
                if pipe.readers == 0 && pipe.writers == 0 {
                    self.pipes.remove(&p);
                }
            }
        }
        if last {
            if let (_, Some(ino)) = object_end {
                let _ = self.fs.release(ino);
            }
            self.handles.remove(&handle);
        }
        Ok(())
    }

    fn read(&mut self, client: u64, handle: u64, len: u64, at: u64, buf: &mut [u8]) -> Result<u64> {
        let len = (len as usize).min(BUFFER_SIZE);
        let d = self.description(handle)?;
        if d.flags & O_ACCMODE == O_WRONLY {
            return Err(errno::EBADF);
        }
        let (offset, nonblock) = (d.offset, d.flags & O_NONBLOCK != 0);
        match d.object {
            Object::Inode(ino) => {
                let start = if at == op::CURRENT { offset } else { at };
                let n = match self.device(ino) {
                    Some(dev) => self.device_read(dev, &mut buf[..len])?,
                    None => self
                        .fs
                        .read_at(ino, start, &mut buf[..len])
                        .map_err(fs_err)?,
                };
                if at == op::CURRENT {
                    self.description_mut(handle)?.offset = start + n as u64;
                }
                Ok(n as u64)
            }
            Object::PipeRead(p) => {
                if at != op::CURRENT {
                    return Err(errno::ESPIPE);
                }
                let pipe = self.pipes.get_mut(&p).ok_or(errno::EBADF)?;
                if pipe.data.is_empty() {
                    if pipe.writers == 0 {
                        return Ok(0);
                    }
                    if nonblock {
                        return Err(errno::EAGAIN);
                    }
                    if !pipe.waiting.contains(&client) {
                        pipe.waiting.push(client);
                    }
                    return Ok(WOULD_BLOCK);
                }
                let n = len.min(pipe.data.len());
                for (slot, byte) in buf[..n].iter_mut().zip(pipe.data.drain(..n)) {
                    *slot = byte;
                }
                self.wake.append(&mut pipe.waiting);
                Ok(n as u64)
            }
            Object::PipeWrite(_) => Err(errno::EBADF),
        }
    }

    fn write(
        &mut self,
        client: u64,
        handle: u64,
        len: u64,
        at: u64,
        buf: &[u8],
        ctx: Ctx,
    ) -> Result<u64> {
        let len = (len as usize).min(BUFFER_SIZE);
        let d = self.description(handle)?;
        if d.flags & O_ACCMODE == O_RDONLY {
            return Err(errno::EBADF);
        }
        let (offset, flags) = (d.offset, d.flags);
        match d.object {
            Object::Inode(ino) => {
                if let Some(dev) = self.device(ino) {
                    return match dev {
                        Device::Full => Err(errno::ENOSPC),
                        _ => Ok(len as u64),
                    };
                }
                let start = if flags & O_APPEND != 0 {
                    self.fs.inode(ino).map_err(fs_err)?.size()
                } else if at == op::CURRENT {
                    offset
                } else {
                    at
                };
                let n = self
                    .fs
                    .write_at(ino, start, &buf[..len], ctx)
                    .map_err(fs_err)?;
                if at == op::CURRENT {
                    self.description_mut(handle)?.offset = start + n as u64;
                }
                Ok(n as u64)
            }
            Object::PipeWrite(p) => {
                if at != op::CURRENT {
                    return Err(errno::ESPIPE);
                }
                let pipe = self.pipes.get_mut(&p).ok_or(errno::EBADF)?;
                if pipe.readers == 0 {
                    return Err(errno::EPIPE);
                }
                let room = PIPE_CAPACITY - pipe.data.len();
                if room == 0 || (len <= 4096 && room < len) {
                    // Writes of up to a page are atomic: all or nothing.
                    if flags & O_NONBLOCK != 0 {
                        return Err(errno::EAGAIN);
                    }
                    if !pipe.waiting.contains(&client) {
                        pipe.waiting.push(client);
                    }
                    return Ok(WOULD_BLOCK);
                }
                let n = len.min(room);
                pipe.data.extend(&buf[..n]);
                self.wake.append(&mut pipe.waiting);
                Ok(n as u64)
            }
            Object::PipeRead(_) => Err(errno::EBADF),
        }
    }

    fn seek(&mut self, handle: u64, offset: i64, whence: i32) -> Result<u64> {
        let d = self.description(handle)?;
        let Object::Inode(ino) = d.object else {
            return Err(errno::ESPIPE);
        };
        let inode = self.fs.inode(ino).map_err(fs_err)?;
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => d.offset as i64,
            SEEK_END => inode.size() as i64,
            _ => return Err(errno::EINVAL),
        };
        let target = base.checked_add(offset).ok_or(errno::EOVERFLOW)?;
        if target < 0 {
            return Err(errno::EINVAL);
        }
        self.description_mut(handle)?.offset = target as u64;
        Ok(target as u64)
    }

    fn handle_stat(&self, handle: u64) -> Result<Stat> {
        match self.description(handle)?.object {
            Object::Inode(ino) => self.fs.stat(ino).map_err(fs_err),
            Object::PipeRead(p) | Object::PipeWrite(p) => Ok(Stat {
                st_dev: 0,
                st_ino: p,
                st_nlink: 1,
                st_mode: S_IFIFO | 0o600,
                st_blksize: 4096,
                ..Stat::default()
            }),
        }
    }

    fn getdents(&mut self, handle: u64, len: u64, buf: &mut [u8]) -> Result<u64> {
        let d = self.description(handle)?;
        let Object::Inode(ino) = d.object else {
            return Err(errno::ENOTDIR);
        };
        let len = (len as usize).min(BUFFER_SIZE);
        let (n, next) = self
            .fs
            .getdents64(ino, d.offset, &mut buf[..len])
            .map_err(fs_err)?;
        self.description_mut(handle)?.offset = next;
        Ok(n as u64)
    }

    fn pipe(&mut self, flags: u32) -> Result<u64> {
        let id = self.next_pipe;
        self.next_pipe += 1;
        self.pipes.insert(
            id,
            Pipe {
                readers: 1,
                writers: 1,
                ..Pipe::default()
            },
        );
        let keep = flags & O_NONBLOCK;
        // Two consecutive handles: the read end, then the write end.
        let read = self.new_handle(Object::PipeRead(id), O_RDONLY | keep);
        let write = self.new_handle(Object::PipeWrite(id), O_WRONLY | keep);
        debug_assert_eq!(write, read + 1);
        Ok(read)
    }

    fn poll(&mut self, client: u64, handle: u64) -> Result<u64> {
        let d = self.description(handle)?;
        let (p, read) = match d.object {
            Object::Inode(_) => return Ok(3),
            Object::PipeRead(p) => (p, true),
            Object::PipeWrite(p) => (p, false),
        };
        let pipe = self.pipes.get_mut(&p).ok_or(errno::EBADF)?;
        let mut bits = 0;
        if read && (!pipe.data.is_empty() || pipe.writers == 0) {
            bits |= 1;
        }
        if !read && pipe.data.len() < PIPE_CAPACITY {
            bits |= 2;
        }
        if (read && pipe.writers == 0) || (!read && pipe.readers == 0) {
            bits |= 4;
        }
        if bits == 0 && !pipe.waiting.contains(&client) {
            pipe.waiting.push(client);
        }
        Ok(bits)
    }

    fn device(&self, ino: Ino) -> Option<Device> {
        let (major, minor) = self.fs.inode(ino).ok()?.rdev()?;
        match (major, minor) {
            (1, 3) => Some(Device::Null),
            (1, 5) => Some(Device::Zero),
            (1, 7) => Some(Device::Full),
            (1, 8) | (1, 9) => Some(Device::Random),
            _ => Some(Device::Other),
        }
    }

    fn device_read(&mut self, dev: Device, out: &mut [u8]) -> Result<usize> {
        match dev {
            Device::Null => Ok(0),
            Device::Zero | Device::Full => {
                out.fill(0);
                Ok(out.len())
            }
            Device::Random => {
                // xorshift64*: not a cryptographic source; virtio-rng is to feed a real one.
                let mut state = self.random;
                for chunk in out.chunks_mut(8) {
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                    chunk.copy_from_slice(&word[..chunk.len()]);
                }
                self.random = state;
                Ok(out.len())
            }
            Device::Other => Err(errno::ENXIO),
        }
    }
}

/// `O_RDWR`'s access-mode bits.
const O_RDWR_BITS: u32 = k42_linux_abi::file::O_RDWR;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    Null,
    Zero,
    Full,
    Random,
    /// Terminals and the rest: the client serves them itself.
    Other,
}

/// The NUL-terminated path starting at `at` in `buf`.
fn path(buf: &[u8], at: usize) -> Result<&[u8]> {
    let rest = buf.get(at..).ok_or(errno::EINVAL)?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(errno::ENAMETOOLONG)?;
    if end == 0 {
        return Err(errno::ENOENT);
    }
    Ok(&rest[..end])
}

fn two_paths(buf: &[u8]) -> Result<(&[u8], &[u8])> {
    let first = path(buf, 0)?;
    let second = path(buf, first.len() + 1)?;
    Ok((first, second))
}

fn put_stat(buf: &mut [u8], stat: &Stat) {
    use zerocopy::IntoBytes;
    let bytes = stat.as_bytes();
    buf[..bytes.len()].copy_from_slice(bytes);
}

/// How a [`Client`] reaches the server: the PPC call and its buffer.
pub trait Transport {
    /// The buffer the next call carries (and its reply comes back in).
    fn buffer(&mut self) -> &mut [u8; BUFFER_SIZE];
    /// Makes the call; returns the reply words (value, errno).
    fn call(&mut self, args: [u64; 4]) -> (u64, u64);
    /// Waits until the server posts [`WAKE_SOFT_INTERRUPT`] (after a [`WOULD_BLOCK`]).
    fn wait(&mut self);
}

/// The client half: typed calls over a [`Transport`]. Paths must be absolute.
pub struct Client<T: Transport> {
    transport: T,
}

impl<T: Transport> Client<T> {
    /// A client over `transport`.
    pub fn new(transport: T) -> Self {
        Client { transport }
    }

    /// The transport.
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    fn put_path(&mut self, at: usize, path: &[u8]) -> Result<usize> {
        let buf = self.transport.buffer();
        let end = at + path.len();
        if end >= BUFFER_SIZE || path.contains(&0) {
            return Err(errno::ENAMETOOLONG);
        }
        buf[at..end].copy_from_slice(path);
        buf[end] = 0;
        Ok(end + 1)
    }

    fn call(&mut self, args: [u64; 4]) -> Result<u64> {
        loop {
            let (value, errno) = self.transport.call(args);
            if errno != 0 {
                return Err(errno as i32);
            }
            if value != WOULD_BLOCK {
                return Ok(value);
            }
            self.transport.wait();
        }
    }

    /// `open`: a handle and what the server knows of the file.
    pub fn open(&mut self, path: &[u8], flags: u32, mode: u32) -> Result<(u64, OpenInfo)> {
        self.put_path(0, path)?;
        let handle = self.call([op::OPEN, u64::from(flags), u64::from(mode), 0])?;
        Ok((handle, OpenInfo::decode(self.transport.buffer())))
    }

    /// Drops one reference to each of `handles`.
    pub fn close(&mut self, handles: &[u64]) -> Result<()> {
        for chunk in handles.chunks(MAX_HANDLES_PER_CALL) {
            put_words(self.transport.buffer(), chunk);
            self.call([op::CLOSE, chunk.len() as u64, 0, 0])?;
        }
        Ok(())
    }

    /// Adds one reference to each of `handles`.
    pub fn retain(&mut self, handles: &[u64]) -> Result<()> {
        for chunk in handles.chunks(MAX_HANDLES_PER_CALL) {
            put_words(self.transport.buffer(), chunk);
            self.call([op::RETAIN, chunk.len() as u64, 0, 0])?;
        }
        Ok(())
    }

    /// Reads into `out` (at most one buffer's worth) from `offset` or, with `None`, from the
    /// handle's offset; blocks on an empty pipe.
    pub fn read(&mut self, handle: u64, out: &mut [u8], offset: Option<u64>) -> Result<usize> {
        let len = out.len().min(BUFFER_SIZE);
        let at = offset.unwrap_or(op::CURRENT);
        let n = self.call([op::READ, handle, len as u64, at])? as usize;
        let n = n.min(len);
        out[..n].copy_from_slice(&self.transport.buffer()[..n]);
        Ok(n)
    }

    /// Writes (at most one buffer's worth of) `data`; blocks on a full pipe.
    pub fn write(&mut self, handle: u64, data: &[u8], offset: Option<u64>) -> Result<usize> {
        let len = data.len().min(BUFFER_SIZE);
        self.transport.buffer()[..len].copy_from_slice(&data[..len]);
        let at = offset.unwrap_or(op::CURRENT);
        Ok(self.call([op::WRITE, handle, len as u64, at])? as usize)
    }

    /// `lseek`.
    pub fn seek(&mut self, handle: u64, offset: i64, whence: i32) -> Result<u64> {
        self.call([op::SEEK, handle, offset as u64, whence as u64])
    }

    fn stat_reply(&mut self) -> Stat {
        use zerocopy::FromBytes;
        let size = core::mem::size_of::<Stat>();
        Stat::read_from_bytes(&self.transport.buffer()[..size]).unwrap_or_default()
    }

    /// `fstat`.
    pub fn fstat(&mut self, handle: u64) -> Result<Stat> {
        self.call([op::FSTAT, handle, 0, 0])?;
        Ok(self.stat_reply())
    }

    /// `stat` (`follow`) or `lstat`.
    pub fn stat(&mut self, path: &[u8], follow: bool) -> Result<Stat> {
        self.put_path(0, path)?;
        self.call([op::STAT, u64::from(follow), 0, 0])?;
        Ok(self.stat_reply())
    }

    /// `getdents64` into `out`.
    pub fn getdents(&mut self, handle: u64, out: &mut [u8]) -> Result<usize> {
        let len = out.len().min(BUFFER_SIZE);
        let n = (self.call([op::GETDENTS, handle, len as u64, 0])? as usize).min(len);
        out[..n].copy_from_slice(&self.transport.buffer()[..n]);
        Ok(n)
    }

    /// `readlink` into `out`; returns the target's length (cut to `out`).
    pub fn readlink(&mut self, path: &[u8], out: &mut [u8]) -> Result<usize> {
        self.put_path(0, path)?;
        let n = (self.call([op::READLINK, 0, 0, 0])? as usize).min(out.len());
        out[..n].copy_from_slice(&self.transport.buffer()[..n]);
        Ok(n)
    }

    /// A call on one path with one argument (`mkdir`, `unlink`, `rmdir`, `chmod`).
    pub fn path_op(&mut self, op: u64, path: &[u8], arg: u64) -> Result<()> {
        self.put_path(0, path)?;
        self.call([op, arg, 0, 0]).map(|_| ())
    }

    /// A call on two paths (`rename`, `link`, `symlink`).
    pub fn two_path_op(&mut self, op: u64, first: &[u8], second: &[u8]) -> Result<()> {
        let at = self.put_path(0, first)?;
        self.put_path(at, second)?;
        self.call([op, 0, 0, 0]).map(|_| ())
    }

    /// `utimensat` (times in ns, or [`TIME_NOW`] / [`TIME_OMIT`]).
    pub fn utimens(&mut self, path: &[u8], follow: bool, atime: u64, mtime: u64) -> Result<()> {
        self.put_path(0, path)?;
        self.call([op::UTIMENS, u64::from(follow), atime, mtime])
            .map(|_| ())
    }

    /// A call on a handle with up to two arguments (`truncate`, `getfl`, `setfl`, `poll`).
    pub fn handle_op(&mut self, op: u64, handle: u64, arg: u64) -> Result<u64> {
        self.call([op, handle, arg, 0])
    }

    /// A call on a handle that must not block (`poll`): one attempt.
    pub fn poll(&mut self, handle: u64) -> Result<u64> {
        let (value, errno) = self.transport.call([op::POLL, handle, 0, 0]);
        if errno != 0 {
            return Err(errno as i32);
        }
        Ok(value)
    }

    /// `pipe`: (read end, write end).
    pub fn pipe(&mut self, flags: u32) -> Result<(u64, u64)> {
        let read = self.call([op::PIPE, u64::from(flags), 0, 0])?;
        Ok((read, read + 1))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::cpio::mode;
    use crate::cpio::tests::archive;
    use crate::fs::populate_from_cpio;
    use alloc::vec;
    use k42_linux_abi::file::{O_RDWR, S_IFCHR, S_IFDIR, S_IFREG};

    /// Calls the server directly, as the PPC server would, from one client pid.
    struct Loopback {
        server: FileServer,
        pid: u64,
        buffer: [u8; BUFFER_SIZE],
        woken: Vec<u64>,
        waits: usize,
    }

    impl Transport for Loopback {
        fn buffer(&mut self) -> &mut [u8; BUFFER_SIZE] {
            &mut self.buffer
        }
        fn call(&mut self, args: [u64; 4]) -> (u64, u64) {
            let reply = self.server.call(self.pid, args, &mut self.buffer, 1_000);
            self.woken.extend(self.server.take_wakeups());
            (reply.value, reply.errno as u64)
        }
        fn wait(&mut self) {
            // Nobody else can run in this test: a wait would hang. Count it and fail loudly.
            self.waits += 1;
            panic!("the client would block");
        }
    }

    fn image() -> Vec<u8> {
        archive(&[
            ("bin", mode::DIRECTORY | 0o755, b""),
            ("bin/tool", mode::REGULAR | 0o755, b"tool bytes"),
            ("bin/link", mode::SYMLINK | 0o777, b"tool"),
            (
                "etc/motd",
                mode::REGULAR | 0o644,
                b"hello from the archive\n",
            ),
        ])
    }

    fn client() -> Client<Loopback> {
        let mut fs = FileSystem::new(Ctx::root(0));
        populate_from_cpio(&mut fs, &image()).unwrap();
        fs.mkdir(ROOT_INO, b"/dev", 0o755, Ctx::root(0)).unwrap();
        for (name, minor) in [("null", 3), ("zero", 5), ("full", 7), ("urandom", 9)] {
            let path = alloc::format!("/dev/{name}");
            fs.mknod_char(ROOT_INO, path.as_bytes(), 0o666, 1, minor, Ctx::root(0))
                .unwrap();
        }
        Client::new(Loopback {
            server: FileServer::new(fs, 42),
            pid: 7,
            buffer: [0; BUFFER_SIZE],
            woken: Vec::new(),
            waits: 0,
        })
    }

    #[test]
    fn files_are_created_written_read_and_closed() {
        let mut c = client();
        assert_eq!(c.open(b"/new", O_RDONLY, 0).unwrap_err(), errno::ENOENT);
        let (h, info) = c.open(b"/new", O_CREAT | O_RDWR, 0o640).unwrap();
        assert_eq!(
            (info.kind, info.size, info.archive_offset),
            (S_IFREG, 0, None)
        );
        assert_eq!(c.write(h, b"abcdef", None).unwrap(), 6);
        assert_eq!(c.write(h, b"XY", Some(1)).unwrap(), 2);
        assert_eq!(c.seek(h, 0, SEEK_SET).unwrap(), 0);
        let mut out = [0u8; 16];
        assert_eq!(c.read(h, &mut out, None).unwrap(), 6);
        assert_eq!(&out[..6], b"aXYdef");
        assert_eq!(c.read(h, &mut out, None).unwrap(), 0, "at the end");
        assert_eq!(c.seek(h, -2, SEEK_END).unwrap(), 4);
        assert_eq!(c.seek(h, -9, SEEK_CUR).unwrap_err(), errno::EINVAL);
        let st = c.fstat(h).unwrap();
        assert_eq!((st.st_size, st.st_mode), (6, S_IFREG | 0o640));
        assert_eq!(c.stat(b"/new", true).unwrap().st_ino, st.st_ino);
        c.close(&[h]).unwrap();
        assert_eq!(c.close(&[h]).unwrap_err(), errno::EBADF);
        assert_eq!(c.fstat(h).unwrap_err(), errno::EBADF);
        assert_eq!(c.transport().server.open_handles(), 0);
        // O_EXCL on an existing name, O_TRUNC, O_APPEND.
        assert_eq!(
            c.open(b"/new", O_CREAT | O_EXCL | O_WRONLY, 0).unwrap_err(),
            errno::EEXIST
        );
        let (h, info) = c.open(b"/new", O_WRONLY | O_TRUNC | O_APPEND, 0).unwrap();
        assert_eq!(info.size, 0);
        c.write(h, b"12", None).unwrap();
        c.write(h, b"34", Some(0)).unwrap();
        assert_eq!(c.fstat(h).unwrap().st_size, 4, "appends ignore the offset");
        assert_eq!(c.read(h, &mut out, None).unwrap_err(), errno::EBADF);
        c.close(&[h]).unwrap();
    }

    #[test]
    fn archive_files_report_where_their_bytes_are_until_written() {
        let mut c = client();
        let (h, info) = c.open(b"/etc/motd", O_RDONLY, 0).unwrap();
        let at = info.archive_offset.expect("an unchanged archive file") as usize;
        let image = image();
        assert_eq!(
            &image[at..at + info.size as usize],
            b"hello from the archive\n"
        );
        c.close(&[h]).unwrap();
        // Opened for writing: no offset (the client must go through the server).
        let (w, info) = c.open(b"/etc/motd", O_WRONLY, 0).unwrap();
        assert_eq!(info.archive_offset, None);
        c.write(w, b"J", None).unwrap();
        let (h, info) = c.open(b"/etc/motd", O_RDONLY, 0).unwrap();
        assert_eq!(info.archive_offset, None, "written since");
        let mut out = [0u8; 8];
        assert_eq!(c.read(h, &mut out, None).unwrap(), 8);
        assert_eq!(&out, b"Jello fr");
        c.close(&[h, w]).unwrap();
    }

    #[test]
    fn directories_links_and_names() {
        let mut c = client();
        c.path_op(op::MKDIR, b"/d", 0o700).unwrap();
        assert_eq!(
            c.path_op(op::MKDIR, b"/d", 0o700).unwrap_err(),
            errno::EEXIST
        );
        let (f, _) = c.open(b"/d/a", O_CREAT | O_WRONLY, 0o600).unwrap();
        c.close(&[f]).unwrap();
        c.two_path_op(op::RENAME, b"/d/a", b"/d/b").unwrap();
        c.two_path_op(op::LINK, b"/d/b", b"/d/c").unwrap();
        c.two_path_op(op::SYMLINK, b"b", b"/d/s").unwrap();
        let mut target = [0u8; 8];
        assert_eq!(c.readlink(b"/d/s", &mut target).unwrap(), 1);
        assert_eq!(c.stat(b"/d/c", true).unwrap().st_nlink, 2);
        assert_eq!(
            c.stat(b"/bin/link", false).unwrap().st_mode & S_IFMT,
            k42_linux_abi::file::S_IFLNK
        );
        let (d, info) = c.open(b"/d", O_RDONLY | O_DIRECTORY, 0).unwrap();
        assert_eq!(info.kind, S_IFDIR);
        let mut names = Vec::new();
        let mut out = [0u8; 64];
        loop {
            // A small buffer: one or two records per call, resuming where it stopped.
            let n = c.getdents(d, &mut out).unwrap();
            if n == 0 {
                break;
            }
            let mut at = 0;
            while at < n {
                let reclen = u16::from_le_bytes([out[at + 16], out[at + 17]]) as usize;
                let name = &out[at + 19..at + reclen];
                let end = name.iter().position(|&b| b == 0).unwrap();
                names.push(alloc::string::String::from_utf8(name[..end].to_vec()).unwrap());
                at += reclen;
            }
        }
        assert_eq!(names, [".", "..", "b", "c", "s"]);
        assert_eq!(c.open(b"/d", O_WRONLY, 0).unwrap_err(), errno::EISDIR);
        assert_eq!(
            c.open(b"/d/b", O_RDONLY | O_DIRECTORY, 0).unwrap_err(),
            errno::ENOTDIR
        );
        assert_eq!(
            c.path_op(op::RMDIR, b"/d", 0).unwrap_err(),
            errno::ENOTEMPTY
        );
        for name in [&b"/d/b"[..], b"/d/c", b"/d/s"] {
            c.path_op(op::UNLINK, name, 0).unwrap();
        }
        c.path_op(op::RMDIR, b"/d", 0).unwrap();
        c.close(&[d]).unwrap();
        assert_eq!(c.transport().server.open_handles(), 0);
    }

    #[test]
    fn pipes_pass_bytes_block_and_hang_up() {
        let mut c = client();
        let (r, w) = c.pipe(0).unwrap();
        assert_eq!(c.poll(r).unwrap(), 0, "empty: not readable");
        assert_eq!(c.poll(w).unwrap(), 2, "writable");
        assert_eq!(c.write(w, b"ping", None).unwrap(), 4);
        assert_eq!(c.transport().woken, [7], "the poller is woken");
        assert_eq!(c.poll(r).unwrap(), 1);
        let mut out = [0u8; 8];
        assert_eq!(c.read(r, &mut out, None).unwrap(), 4);
        assert_eq!(&out[..4], b"ping");
        // Empty with a writer: the server says wait (the loopback cannot, so ask it raw).
        let (value, e) = c.transport().call([op::READ, r, 8, op::CURRENT]);
        assert_eq!((value, e), (WOULD_BLOCK, 0));
        assert_eq!(c.seek(r, 0, SEEK_SET).unwrap_err(), errno::ESPIPE);
        assert_eq!(c.fstat(r).unwrap().st_mode & S_IFMT, S_IFIFO);
        // fork: both ends gain a reference; the write end closes twice before hang-up.
        c.retain(&[r, w]).unwrap();
        c.transport().woken.clear();
        c.close(&[w]).unwrap();
        assert_eq!(
            c.transport().woken,
            [7],
            "a reader waiting is woken by a close"
        );
        let (value, _) = c.transport().call([op::READ, r, 8, op::CURRENT]);
        assert_eq!(value, WOULD_BLOCK, "one writer left");
        c.close(&[w]).unwrap();
        assert_eq!(c.read(r, &mut out, None).unwrap(), 0, "end of file");
        assert_eq!(c.poll(r).unwrap() & 4, 4, "hung up");
        // A pipe with no reader: EPIPE.
        let (r2, w2) = c.pipe(0).unwrap();
        c.close(&[r2]).unwrap();
        assert_eq!(c.write(w2, b"x", None).unwrap_err(), errno::EPIPE);
        // Full, non-blocking: EAGAIN.
        let (r3, w3) = c.pipe(O_NONBLOCK).unwrap();
        let page = vec![7u8; BUFFER_SIZE];
        for _ in 0..PIPE_CAPACITY / BUFFER_SIZE {
            assert_eq!(c.write(w3, &page, None).unwrap(), BUFFER_SIZE);
        }
        assert_eq!(c.write(w3, b"x", None).unwrap_err(), errno::EAGAIN);
        assert_eq!(c.read(r3, &mut out, None).unwrap(), 8);
        c.close(&[r, r, w2, r3, w3]).unwrap();
        assert_eq!(c.transport().server.open_handles(), 0);
        assert_eq!(c.transport().waits, 0);
    }

    #[test]
    fn device_files_behave_as_on_linux() {
        let mut c = client();
        let (null, info) = c.open(b"/dev/null", O_RDWR, 0).unwrap();
        assert_eq!(info.kind, S_IFCHR);
        let mut out = [1u8; 16];
        assert_eq!(c.read(null, &mut out, None).unwrap(), 0);
        assert_eq!(c.write(null, b"gone", None).unwrap(), 4);
        let (zero, _) = c.open(b"/dev/zero", O_RDONLY, 0).unwrap();
        assert_eq!(c.read(zero, &mut out, None).unwrap(), 16);
        assert_eq!(out, [0; 16]);
        let (full, _) = c.open(b"/dev/full", O_WRONLY, 0).unwrap();
        assert_eq!(c.write(full, b"x", None).unwrap_err(), errno::ENOSPC);
        let (random, _) = c.open(b"/dev/urandom", O_RDONLY, 0).unwrap();
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        c.read(random, &mut a, None).unwrap();
        c.read(random, &mut b, None).unwrap();
        assert!(a != [0; 16] && a != b);
        c.close(&[null, zero, full, random]).unwrap();
    }

    #[test]
    fn bad_requests_are_errors() {
        let mut c = client();
        let t = c.transport();
        assert_eq!(t.call([99, 0, 0, 0]).1, errno::ENOSYS as u64);
        assert_eq!(
            t.call([op::READ, 12345, 8, op::CURRENT]).1,
            errno::EBADF as u64
        );
        assert_eq!(t.call([op::CLOSE, 0, 0, 0]).1, errno::EINVAL as u64);
        assert_eq!(t.call([op::CLOSE, 1 << 40, 0, 0]).1, errno::EINVAL as u64);
        // A path without its NUL: the whole buffer is one name.
        t.buffer.fill(b'a');
        assert_eq!(t.call([op::STAT, 1, 0, 0]).1, errno::ENAMETOOLONG as u64);
        t.buffer[0] = 0;
        assert_eq!(t.call([op::OPEN, 0, 0, 0]).1, errno::ENOENT as u64);
        // Reads longer than the buffer are cut to it.
        let (h, _) = c.open(b"/bin/tool", O_RDONLY, 0).unwrap();
        let (n, e) = c.transport().call([op::READ, h, 1 << 30, op::CURRENT]);
        assert_eq!((n, e), (10, 0));
        let long = vec![b'x'; BUFFER_SIZE];
        assert_eq!(c.open(&long, O_RDONLY, 0).unwrap_err(), errno::ENAMETOOLONG);
    }
}
