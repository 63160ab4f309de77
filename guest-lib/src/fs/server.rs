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
//! when the pipe changes. The client call then fails with [`MUST_WAIT`]: its caller waits for
//! the wake-up without holding the client (another thread of the process may need it to make
//! that wake-up happen) and makes the call again.
//!
//! Regular files can be read and written without calls ([`crate::filewindow`]): a client
//! that asks ([`op::WINDOW`]) for a window on a file nobody else has open gets the file copied
//! into a memory object granted to it (K42's exclusive file object), which it maps and uses in
//! place. (Making a window costs kernel work per page, so clients ask only once a file has
//! seen a few calls.) When
//! another open of the file comes, or a call about it from a process without the mapping, the
//! server retires the window, copies the file back and serves it itself from then on (the
//! switch to K42's shared, server-mediated file object); the last close copies it back too.
//! A client whose writes outgrow the window asks for a larger one ([`op::GROW`]).
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
use crate::filewindow::{Window, PAGE};

/// Size of the buffer a call carries (one page, the PPC buffer).
pub const BUFFER_SIZE: usize = 4096;
/// The name the server exports.
pub const SERVER_NAME: &str = "fs";
/// The reply value of a call that would block: wait for [`WAKE_SOFT_INTERRUPT`], call again.
pub const WOULD_BLOCK: u64 = u64::MAX >> 2;
/// The error of a [`Client`] call the server answered with [`WOULD_BLOCK`]: wait for
/// [`WAKE_SOFT_INTERRUPT`], then make the call again. Negative, so never a Linux errno.
pub const MUST_WAIT: i32 = -1;
/// The soft-interrupt bit the server posts to a waiting client when a pipe it waits on
/// changes.
pub const WAKE_SOFT_INTERRUPT: u64 = 1 << 61;
/// Bytes a pipe holds (Linux's default).
pub const PIPE_CAPACITY: usize = 64 * 1024;
/// Most handles named in one [`op::RETAIN`] or [`op::CLOSE`] call.
pub const MAX_HANDLES_PER_CALL: usize = BUFFER_SIZE / 8;
/// Largest file window, in pages (header included).
pub const MAX_WINDOW_PAGES: u64 = 16 * 1024;
/// Smallest window, in data pages, for a file opened for writing.
const MIN_WRITE_PAGES: u64 = 4;
/// The lock holder the server names itself when it fills a fresh window.
const SERVER_HOLDER: u64 = u64::MAX - 1;

/// The memory objects behind file windows, as the server's process makes them.
pub trait SharedMemory {
    /// A new zero-filled object of `pages` pages, mapped read-write here: its id and window.
    fn create(&mut self, pages: u64) -> Option<(u64, Window)>;
    /// Lets process `pid` map object `id`; false if it cannot.
    fn grant(&mut self, id: u64, pid: u64) -> bool;
    /// Unmaps the server's window on object `id` (the server's hold on the object ends).
    fn release(&mut self, id: u64, window: Window);
    /// Whether process `pid` is still alive (to take a window's lock from one that died).
    fn alive(&mut self, pid: u64) -> bool;
    /// Lets other processes run while the server waits for a window's holder.
    fn pause(&mut self);
}

/// Counts of the file-window events, for tests and `/proc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Opens that got a window.
    pub mapped_opens: u64,
    /// Windows retired because another process came (exclusive → server-mediated).
    pub swaps: u64,
    /// Windows replaced by larger ones.
    pub grows: u64,
    /// Windows copied back at the last close.
    pub closes: u64,
}

impl WindowStats {
    fn words(&self) -> [u64; 4] {
        [self.mapped_opens, self.swaps, self.grows, self.closes]
    }
}

/// A file some client reads and writes through a window.
struct Exclusive {
    /// The one open-file description of the file.
    handle: u64,
    /// The memory object.
    object: u64,
    /// The server's own mapping of it.
    window: Window,
}

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
    /// `grow(handle = a1, end = a2)`: the caller's window on the file is too small for a
    /// write ending at `end`. → a larger window's object id (its page count in the buffer's
    /// first word; the old window is retired), or 0: the file is now served by the server.
    pub const GROW: u64 = 24;
    /// `stats()` → 0, the [`WindowStats`](super::WindowStats) as four words in the buffer.
    pub const STATS: u64 = 25;
    /// `window(handle = a1)`: a window on the regular file of `handle`, if it is the file's
    /// only open description → the object id (its page count in the buffer's first word), or
    /// 0 for no window (the file is open elsewhere, is not a regular file, or is too large).
    pub const WINDOW: u64 = 26;
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
    /// Device numbers of a character or block device (`makedev` form).
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
    wake: Vec<u64>,
    memory: Option<alloc::boxed::Box<dyn SharedMemory + Send>>,
    exclusive: BTreeMap<Ino, Exclusive>,
    stats: WindowStats,
    /// The time of the call being served.
    now: i64,
}

impl FileServer {
    /// A server over `fs`.
    pub fn new(fs: FileSystem) -> FileServer {
        FileServer {
            fs,
            handles: BTreeMap::new(),
            pipes: BTreeMap::new(),
            next_handle: 1,
            next_pipe: 1,
            wake: Vec::new(),
            memory: None,
            exclusive: BTreeMap::new(),
            stats: WindowStats::default(),
            now: 0,
        }
    }

    /// Lets the server hand out file windows made from `memory`.
    pub fn with_memory(mut self, memory: alloc::boxed::Box<dyn SharedMemory + Send>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// The file-window counts.
    pub fn window_stats(&self) -> WindowStats {
        self.stats
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
        self.now = now;
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
        // A call about a windowed file from its handle means the caller works without the
        // window (a forked child, a program after exec, or a client giving it up): the
        // server takes the file back first. `fstat` and `getfl` need not.
        if matches!(
            op,
            op::READ | op::WRITE | op::SEEK | op::TRUNCATE | op::SETFL | op::GETDENTS
        ) {
            if let Some(Object::Inode(ino)) = self.handles.get(&a1).map(|d| &d.object) {
                let ino = *ino;
                if self.demote(ino, ctx) {
                    self.stats.swaps += 1;
                }
            }
        }
        match op {
            op::OPEN => self.open(a1 as u32, a2 as u32, buf, ctx),
            op::GROW => self.grow(client, a1, a2, buf, ctx),
            op::WINDOW => self.window(client, a1, buf),
            op::STATS => {
                put_words(buf, &self.stats.words());
                Ok(0)
            }
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
                let stat = self.stat_now(ino)?;
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
        // A second open of a windowed file: the server takes it back and mediates it.
        if self.demote(ino, ctx) {
            self.stats.swaps += 1;
        }
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

    /// `window`: a window on `handle`'s file for `client` if the handle is the file's only
    /// open description.
    fn window(&mut self, client: u64, handle: u64, buf: &mut [u8]) -> Result<u64> {
        let d = self.description(handle)?;
        let (offset, writes) = (d.offset, d.flags & O_ACCMODE != O_RDONLY);
        let Object::Inode(ino) = d.object else {
            return Ok(0);
        };
        let open_elsewhere = self
            .handles
            .iter()
            .any(|(&h, d)| h != handle && matches!(d.object, Object::Inode(i) if i == ino));
        let regular = self.fs.inode(ino).map_err(fs_err)?.file_type() == FileType::Regular;
        // An unchanged archive file opened to read is read in place instead.
        let in_archive = !writes && self.fs.archive_offset(ino).is_some();
        if !regular || in_archive || open_elsewhere || self.exclusive.contains_key(&ino) {
            return Ok(0);
        }
        let size = self.fs.inode(ino).map_err(fs_err)?.size();
        let data_pages = if writes {
            (size.div_ceil(PAGE) * 2)
                .max(MIN_WRITE_PAGES)
                .next_power_of_two()
        } else {
            size.div_ceil(PAGE).max(1)
        };
        match self.window_for(client, ino, handle, data_pages, offset) {
            Some((object, pages)) => {
                self.stats.mapped_opens += 1;
                put_words(buf, &[pages]);
                Ok(object)
            }
            None => Ok(0),
        }
    }

    /// Makes a window of `data_pages` (plus the header) on `ino`'s contents for `client`,
    /// which holds the file's only description `handle`: (object id, pages), or `None` if
    /// it cannot (too large, no memory).
    fn window_for(
        &mut self,
        client: u64,
        ino: Ino,
        handle: u64,
        data_pages: u64,
        offset: u64,
    ) -> Option<(u64, u64)> {
        let pages = data_pages
            .checked_add(1)
            .filter(|&p| p <= MAX_WINDOW_PAGES)?;
        let (object, window) = self.memory.as_mut()?.create(pages)?;
        let size = self.fs.inode(ino).ok()?.size();
        if size > window.capacity() {
            self.memory.as_mut()?.release(object, window);
            return None;
        }
        let fs = &self.fs;
        window.with_lock(
            SERVER_HOLDER,
            || {},
            |held| {
                held.fill(size, offset, |bytes| {
                    let _ = fs.read_at(ino, 0, bytes);
                })
            },
        )?;
        let memory = self.memory.as_mut()?;
        if !memory.grant(object, client) {
            memory.release(object, window);
            return None;
        }
        self.exclusive.insert(
            ino,
            Exclusive {
                handle,
                object,
                window,
            },
        );
        Some((object, pages))
    }

    /// Takes `ino` back from its window, if it has one: retires the window, copies what was
    /// written there into the file, gives the description the window's offset, and unmaps
    /// the window here. Returns whether there was a window.
    fn demote(&mut self, ino: Ino, ctx: Ctx) -> bool {
        let Some(ex) = self.exclusive.remove(&ino) else {
            return false;
        };
        let Some(memory) = self.memory.as_mut() else {
            return false;
        };
        let state = ex.window.header().retire(|pid| {
            let alive = memory.alive(pid);
            if alive {
                memory.pause();
            }
            alive
        });
        if state.dirty {
            // Pages of zeros stay holes.
            let bytes = ex.window.retired_bytes(state.size);
            let _ = self.fs.truncate(ino, 0, ctx);
            for (i, page) in bytes.chunks(PAGE as usize).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    let _ = self.fs.write_at(ino, i as u64 * PAGE, page, ctx);
                }
            }
            let _ = self.fs.truncate(ino, state.size, ctx);
        }
        if let Some(d) = self.handles.get_mut(&ex.handle) {
            d.offset = state.offset;
        }
        memory.release(ex.object, ex.window);
        true
    }

    /// `grow`: moves `handle`'s window into a larger one that holds a write ending at `end`.
    fn grow(
        &mut self,
        client: u64,
        handle: u64,
        end: u64,
        buf: &mut [u8],
        ctx: Ctx,
    ) -> Result<u64> {
        let Object::Inode(ino) = self.description(handle)?.object else {
            return Err(errno::EINVAL);
        };
        let current = match self.exclusive.get(&ino) {
            Some(ex) if ex.handle == handle => ex.window.pages() - 1,
            // Already taken back: the client goes on through the server.
            _ => return Ok(0),
        };
        // At least double, so a file written from empty costs at most twice its final
        // window in pages made.
        let data_pages = end
            .div_ceil(PAGE)
            .next_power_of_two()
            .max(current.saturating_mul(2));
        if data_pages >= MAX_WINDOW_PAGES {
            self.demote(ino, ctx);
            self.stats.swaps += 1;
            return Ok(0);
        }
        // The old window's state moves to the file, then into the new window.
        self.demote(ino, ctx);
        let offset = self.description(handle)?.offset;
        let Some((object, pages)) = self.window_for(client, ino, handle, data_pages, offset) else {
            return Ok(0);
        };
        self.stats.grows += 1;
        put_words(buf, &[pages]);
        Ok(object)
    }

    /// `ino`'s `stat`, with the size its window has now if it has one.
    fn stat_now(&self, ino: Ino) -> Result<Stat> {
        let mut stat = self.fs.stat(ino).map_err(fs_err)?;
        if let Some(ex) = self.exclusive.get(&ino) {
            stat.st_size = ex.window.header().size() as i64;
            stat.st_blocks = (stat.st_size as u64).div_ceil(512) as i64;
        }
        Ok(stat)
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
                if self.demote(ino, Ctx::root(self.now)) {
                    self.stats.closes += 1;
                }
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
                        // Served by the client (terminals, disks): nothing here to write to.
                        Device::Other => Err(errno::ENXIO),
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
            Object::Inode(ino) => self.stat_now(ino),
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
        let inode = self.fs.inode(ino).ok()?;
        let (major, minor) = inode.rdev()?;
        if inode.file_type() == FileType::BlockDevice {
            return Some(Device::Other);
        }
        match (major, minor) {
            (1, 3) => Some(Device::Null),
            (1, 5) => Some(Device::Zero),
            (1, 7) => Some(Device::Full),
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
    /// Terminals, disks, random sources and the rest: the client serves them itself (a disk
    /// through its driver server, `/dev/urandom` from the entropy driver).
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
        match self.transport.call(args) {
            (_, errno) if errno != 0 => Err(errno as i32),
            (WOULD_BLOCK, _) => Err(MUST_WAIT),
            (value, _) => Ok(value),
        }
    }

    /// `open`: a handle and what the server knows of the file.
    pub fn open(&mut self, path: &[u8], flags: u32, mode: u32) -> Result<(u64, OpenInfo)> {
        self.put_path(0, path)?;
        let handle = self.call([op::OPEN, u64::from(flags), u64::from(mode), 0])?;
        Ok((handle, OpenInfo::decode(self.transport.buffer())))
    }

    /// Asks for a window on `handle`'s file: the memory object and its pages, or `None`.
    pub fn window(&mut self, handle: u64) -> Result<Option<(u64, u64)>> {
        let object = self.call([op::WINDOW, handle, 0, 0])?;
        Ok((object != 0).then(|| (object, word(self.transport.buffer(), 0))))
    }

    /// Asks for a window on `handle`'s file that holds a write ending at `end`: the new
    /// object and its pages, or `None` when the server now serves the file itself.
    pub fn grow(&mut self, handle: u64, end: u64) -> Result<Option<(u64, u64)>> {
        let object = self.call([op::GROW, handle, end, 0])?;
        Ok((object != 0).then(|| (object, word(self.transport.buffer(), 0))))
    }

    /// The server's file-window counts.
    pub fn window_stats(&mut self) -> Result<WindowStats> {
        self.call([op::STATS, 0, 0, 0])?;
        let buf = self.transport.buffer();
        let w = |i| word(buf, i);
        Ok(WindowStats {
            mapped_opens: w(0),
            swaps: w(1),
            grows: w(2),
            closes: w(3),
        })
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
    /// handle's offset; [`MUST_WAIT`] on an empty pipe.
    pub fn read(&mut self, handle: u64, out: &mut [u8], offset: Option<u64>) -> Result<usize> {
        let len = out.len().min(BUFFER_SIZE);
        let at = offset.unwrap_or(op::CURRENT);
        let n = self.call([op::READ, handle, len as u64, at])? as usize;
        let n = n.min(len);
        out[..n].copy_from_slice(&self.transport.buffer()[..n]);
        Ok(n)
    }

    /// Writes (at most one buffer's worth of) `data`; [`MUST_WAIT`] on a full pipe.
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
    use crate::filewindow::host::HostMemory;
    use crate::filewindow::WindowError;
    use crate::fs::populate_from_cpio;
    use alloc::vec;
    use k42_linux_abi::file::{makedev, O_RDWR, S_IFBLK, S_IFCHR, S_IFDIR, S_IFREG};

    #[test]
    fn the_wake_bit_is_none_the_kernel_posts() {
        // A client's upcall handler takes the kernel's bits (a tick, say) out of its page: a
        // shared bit would lose the server's wake-ups.
        assert_eq!(
            WAKE_SOFT_INTERRUPT & crate::kabi::SOFT_INTERRUPT_RESERVED,
            0
        );
    }

    /// Calls the server directly, as the PPC server would, from one client pid.
    struct Loopback {
        server: FileServer,
        pid: u64,
        buffer: [u8; BUFFER_SIZE],
        woken: Vec<u64>,
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
            let (kind, dev) = (FileType::CharDevice, (1, minor));
            fs.mknod_device(ROOT_INO, path.as_bytes(), kind, 0o666, dev, Ctx::root(0))
                .unwrap();
        }
        // A disk whose numbers are /dev/null's: the type decides, not the numbers.
        let (kind, dev) = (FileType::BlockDevice, (1, 3));
        fs.mknod_device(ROOT_INO, b"/dev/vda", kind, 0o660, dev, Ctx::root(0))
            .unwrap();
        Client::new(Loopback {
            server: FileServer::new(fs),
            pid: 7,
            buffer: [0; BUFFER_SIZE],
            woken: Vec::new(),
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
        // Empty with a writer: the server says wait, and the client tells its caller to.
        let (value, e) = c.transport().call([op::READ, r, 8, op::CURRENT]);
        assert_eq!((value, e), (WOULD_BLOCK, 0));
        assert_eq!(c.read(r, &mut out, None).unwrap_err(), MUST_WAIT);
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
        assert_eq!(
            c.read(r, &mut out, None).unwrap_err(),
            MUST_WAIT,
            "one writer left"
        );
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
        // Full and blocking: the writer must wait, and a read wakes it.
        let (r4, w4) = c.pipe(0).unwrap();
        for _ in 0..PIPE_CAPACITY / BUFFER_SIZE {
            assert_eq!(c.write(w4, &page, None).unwrap(), BUFFER_SIZE);
        }
        assert_eq!(c.write(w4, b"x", None).unwrap_err(), MUST_WAIT);
        c.transport().woken.clear();
        assert_eq!(c.read(r4, &mut out, None).unwrap(), 8);
        assert_eq!(c.transport().woken, [7], "the waiting writer is woken");
        assert_eq!(c.write(w4, b"x", None).unwrap(), 1);
        c.close(&[r, r, w2, r3, w3, r4, w4]).unwrap();
        assert_eq!(c.transport().server.open_handles(), 0);
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
        // Random bytes are the client's to make (from the entropy driver): none here.
        let (random, _) = c.open(b"/dev/urandom", O_RDONLY, 0).unwrap();
        assert_eq!(c.read(random, &mut out, None).unwrap_err(), errno::ENXIO);
        c.close(&[null, zero, full, random]).unwrap();
        // A disk is the client's to serve (through its driver): the server moves no bytes.
        let (disk, info) = c.open(b"/dev/vda", O_RDWR, 0).unwrap();
        assert_eq!((info.kind, info.rdev), (S_IFBLK, makedev(1, 3)));
        assert_eq!(c.read(disk, &mut out, None).unwrap_err(), errno::ENXIO);
        assert_eq!(c.write(disk, b"lost", None).unwrap_err(), errno::ENXIO);
        c.close(&[disk]).unwrap();
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

    /// A client (pid 7) of a server that hands out windows, and the memory registry.
    fn windowed_client() -> (Client<Loopback>, HostMemory) {
        let memory = HostMemory::default();
        let mut c = client();
        let t = c.transport();
        let server = core::mem::replace(
            &mut t.server,
            FileServer::new(FileSystem::new(Ctx::root(0))),
        );
        t.server = server.with_memory(alloc::boxed::Box::new(memory.clone()));
        (c, memory)
    }

    fn no_wait() {
        panic!("nobody else holds the lock here");
    }

    /// What [`open_windowed`] got.
    struct Opened {
        archive_offset: Option<u64>,
        object: u64,
        object_pages: u64,
    }

    /// Opens `path` and asks for a window on it.
    fn open_windowed(
        c: &mut Client<Loopback>,
        path: &[u8],
        flags: u32,
        mode: u32,
    ) -> Result<(u64, Opened)> {
        let (h, info) = c.open(path, flags, mode)?;
        let (object, object_pages) = c.window(h)?.unwrap_or((0, 0));
        let opened = Opened {
            archive_offset: info.archive_offset,
            object,
            object_pages,
        };
        Ok((h, opened))
    }

    /// Calls the server as another process.
    fn call_as(c: &mut Client<Loopback>, pid: u64, args: [u64; 4]) -> Reply {
        let t = c.transport();
        t.server.call(pid, args, &mut t.buffer, 2_000)
    }

    #[test]
    fn a_lone_writer_works_in_its_window_until_a_second_open() {
        let (mut c, memory) = windowed_client();
        let (h, info) = open_windowed(&mut c, b"/new", O_CREAT | O_RDWR, 0o644).unwrap();
        assert!(info.object != 0, "a lone writer gets a window");
        assert_eq!(info.object_pages, MIN_WRITE_PAGES + 1);
        let w = memory.map(info.object, 7).expect("granted to the opener");
        assert!(memory.map(info.object, 8).is_none(), "and to nobody else");
        w.with_lock(7, no_wait, |held| held.write(b"hello world", None, false))
            .unwrap()
            .unwrap();
        // The server reports the window's size without taking the file back.
        assert_eq!(c.fstat(h).unwrap().st_size, 11);
        assert_eq!(c.stat(b"/new", true).unwrap().st_size, 11);
        assert_eq!(c.transport().server.window_stats().swaps, 0);
        // Another process opens it: the server retires the window and has the bytes.
        c.put_path(0, b"/new").unwrap();
        let other = call_as(&mut c, 8, [op::OPEN, u64::from(O_RDONLY), 0, 0]);
        assert_eq!(other.errno, 0);
        let asked = call_as(&mut c, 8, [op::WINDOW, other.value, 0, 0]);
        assert_eq!(
            (asked.value, asked.errno),
            (0, 0),
            "no window for either now"
        );
        assert_eq!(c.window(h).unwrap(), None);
        assert!(
            w.with_lock(7, no_wait, |_| ()).is_none(),
            "the window is retired"
        );
        assert_eq!(memory.0.lock().released, [info.object]);
        let stats = c.transport().server.window_stats();
        assert_eq!((stats.mapped_opens, stats.swaps), (1, 1));
        // The first client now goes through the server, from the window's offset.
        let mut out = [0u8; 32];
        assert_eq!(
            c.read(h, &mut out, None).unwrap(),
            0,
            "its offset is at the end"
        );
        assert_eq!(c.read(h, &mut out, Some(6)).unwrap(), 5);
        assert_eq!(&out[..5], b"world");
        c.write(h, b"!", None).unwrap();
        assert_eq!(c.fstat(h).unwrap().st_size, 12);
        c.close(&[h, other.value]).unwrap();
        // Alone again: the next open gets a new window with the whole file in it.
        let (h, info) = open_windowed(&mut c, b"/new", O_RDONLY, 0).unwrap();
        assert_eq!(
            info.object_pages, 2,
            "a reader's window holds just the file"
        );
        let w = memory.map(info.object, 7).unwrap();
        let n = w
            .with_lock(7, no_wait, |held| held.read(&mut out, None))
            .unwrap();
        assert_eq!(&out[..n], b"hello world!");
        c.close(&[h]).unwrap();
        assert_eq!(c.transport().server.window_stats().closes, 1);
    }

    #[test]
    fn the_last_close_copies_the_window_back() {
        let (mut c, memory) = windowed_client();
        let (h, info) = open_windowed(&mut c, b"/f", O_CREAT | O_WRONLY, 0o600).unwrap();
        let w = memory.map(info.object, 7).unwrap();
        // A hole, then data: the hole stays a hole in the file.
        w.with_lock(7, no_wait, |held| held.write(b"end", Some(2 * PAGE), false))
            .unwrap()
            .unwrap();
        // A forked child's reference keeps the window alive past the parent's close.
        c.retain(&[h]).unwrap();
        c.close(&[h]).unwrap();
        assert!(w.with_lock(7, no_wait, |_| ()).is_some(), "still in use");
        c.close(&[h]).unwrap();
        assert!(w.header().is_retired());
        let st = c.stat(b"/f", true).unwrap();
        assert_eq!(st.st_size as u64, 2 * PAGE + 3);
        assert_eq!(st.st_blocks, 8, "one page holds data");
        let (h, _) = c.open(b"/f", O_RDONLY, 0).unwrap();
        let mut out = [9u8; 8];
        assert_eq!(c.read(h, &mut out, Some(2 * PAGE - 4)).unwrap(), 7);
        assert_eq!(&out[..7], b"\0\0\0\0end");
        assert_eq!(c.transport().server.window_stats().closes, 1);
    }

    #[test]
    fn a_window_grows_and_calls_without_it_take_the_file_back() {
        let (mut c, memory) = windowed_client();
        let (h, info) = open_windowed(&mut c, b"/g", O_CREAT | O_RDWR | O_APPEND, 0o600).unwrap();
        let w = memory.map(info.object, 7).unwrap();
        let chunk = [b'a'; 3000];
        let mut end = 0;
        loop {
            match w
                .with_lock(7, no_wait, |held| held.write(&chunk, None, true))
                .unwrap()
            {
                Ok(n) => end += n as u64,
                Err(WindowError::NoRoom(needed)) => {
                    assert_eq!(needed, end + 3000);
                    break;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        let (object, pages) = c.grow(h, end + 3000).unwrap().expect("a larger window");
        assert!(pages > info.object_pages && object != info.object);
        assert!(w.header().is_retired(), "the old window is retired");
        let w2 = memory.map(object, 7).unwrap();
        assert_eq!((w2.header().size(), w2.header().offset()), (end, end));
        w2.with_lock(7, no_wait, |held| held.write(b"tail", None, true))
            .unwrap()
            .unwrap();
        assert_eq!(c.transport().server.window_stats().grows, 1);
        // A forked child reads through the server: the file comes back to it, whole.
        let reply = call_as(&mut c, 9, [op::READ, h, 4, end]);
        assert_eq!((reply.value, reply.errno), (4, 0));
        assert_eq!(&c.transport().buffer[..4], b"tail");
        assert!(w2.header().is_retired());
        assert_eq!(
            c.grow(h, 1 << 20).unwrap(),
            None,
            "served by the server now"
        );
        assert_eq!(c.transport().server.window_stats().swaps, 1);
        c.close(&[h]).unwrap();
    }

    #[test]
    fn windows_only_where_they_fit() {
        let (mut c, _memory) = windowed_client();
        // An unchanged archive file opened to read is read in place instead.
        let (h, info) = open_windowed(&mut c, b"/etc/motd", O_RDONLY, 0).unwrap();
        assert!(info.archive_offset.is_some() && info.object == 0);
        // A second open of a file already open gets none.
        let (h2, info) = open_windowed(&mut c, b"/etc/motd", O_WRONLY, 0).unwrap();
        assert_eq!(info.object, 0);
        c.close(&[h, h2]).unwrap();
        // Devices and directories get none, nor a file too large for a window.
        let (h, info) = open_windowed(&mut c, b"/dev/zero", O_RDWR, 0).unwrap();
        assert_eq!(info.object, 0);
        c.close(&[h]).unwrap();
        let (h, _) = c.open(b"/big", O_CREAT | O_WRONLY, 0o600).unwrap();
        c.handle_op(op::TRUNCATE, h, MAX_WINDOW_PAGES * PAGE)
            .unwrap();
        c.close(&[h]).unwrap();
        let (h, info) = open_windowed(&mut c, b"/big", O_RDONLY, 0).unwrap();
        assert_eq!(info.object, 0);
        c.close(&[h]).unwrap();
        // Without memory, never.
        let mut plain = client();
        let (_, info) = open_windowed(&mut plain, b"/new", O_CREAT | O_RDWR, 0o600).unwrap();
        assert_eq!(info.object, 0);
    }

    #[test]
    fn a_holder_that_died_loses_its_window() {
        let (mut c, memory) = windowed_client();
        let (_, info) = open_windowed(&mut c, b"/d", O_CREAT | O_RDWR, 0o600).unwrap();
        let w = memory.map(info.object, 7).unwrap();
        w.with_lock(7, no_wait, |held| held.write(b"kept", None, false))
            .unwrap()
            .unwrap();
        // Process 7 takes the lock and dies holding it.
        assert!(w.header().begin(7, no_wait));
        memory.0.lock().dead.push(7);
        c.put_path(0, b"/d").unwrap();
        let other = call_as(&mut c, 8, [op::OPEN, u64::from(O_RDONLY), 0, 0]);
        assert_eq!(other.errno, 0, "the server goes on");
        let reply = call_as(&mut c, 8, [op::READ, other.value, 8, 0]);
        assert_eq!(&c.transport().buffer[..reply.value as usize], b"kept");
        // A live holder is waited for (here it never lets go, so the test marks it dead
        // after the first pause).
        let (mut c, memory) = windowed_client();
        let (_, info) = open_windowed(&mut c, b"/e", O_CREAT | O_RDWR, 0o600).unwrap();
        let w = memory.map(info.object, 7).unwrap();
        assert!(w.header().begin(7, no_wait));
        let registry = memory.0.clone();
        let marker = std::thread::spawn(move || {
            while registry.lock().pauses == 0 {
                std::thread::yield_now();
            }
            registry.lock().dead.push(7);
        });
        c.put_path(0, b"/e").unwrap();
        assert_eq!(call_as(&mut c, 8, [op::OPEN, 0, 0, 0]).errno, 0);
        marker.join().unwrap();
        assert!(memory.0.lock().pauses >= 1);
    }
}
