//! Files, directories and pipes for the Linux personality: the process's descriptor table, its
//! working directory and umask, kept here in the process (as K42 kept them in each process's
//! library), over the file-system server (`fs`, reached by PPC).
//!
//! A descriptor refers to an open file: the server's handle (an open-file description with its
//! offset) plus what the personality keeps to avoid calls. A file the server reports as
//! unchanged since the initramfs is read straight from the archive, which the kernel maps
//! read-only into the process: no call per read (its offset is then kept here, per process).
//! A regular file the server hands a window on (the process alone has it open, and has read
//! or written it a few times through the server) is read and written in that window, here,
//! with no call; once the server retires the window (another
//! process opened the file) the file is read and written through the server
//! ([`k42_guest_lib::filewindow`]). Windows are mapped in [`crate::FILE_WINDOWS`], which
//! `execve` keeps, as it keeps the descriptors.
//! The console is served here too, through the console server. Paths are made absolute here
//! (working directory, `dirfd`) before they go out.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use k42_guest_lib::filewindow::{AddressRanges, Held, Window, WindowError, PAGE};
use k42_guest_lib::fs::server::{self, op, Client, Transport, BUFFER_SIZE, WAKE_SOFT_INTERRUPT};
use k42_linux_abi::file::{
    self, Stat, AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, DT_DIR, FD_CLOEXEC,
    F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_GETFL, F_SETFD, F_SETFL, O_ACCMODE, O_CLOEXEC, O_CREAT,
    O_DIRECTORY, O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY, PATH_MAX, POLLHUP, POLLIN, POLLNVAL,
    POLLOUT, SEEK_CUR, SEEK_END, SEEK_SET, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFMT,
};
use k42_linux_abi::{errno, syscall as nr, tty};
use k42_rt::kabi::{self, Info};
use k42_rt::sys;
use k42_rt::ConsoleInput;
use spin::Mutex;

use crate::disk::Disk;
use crate::{err, get, put, user_bytes, user_bytes_mut, Ret};

/// Where the initramfs archive is mapped in a Linux process (inside the personality's area).
const ARCHIVE_AT: u64 = 0x7400_0000;
/// Most descriptors a process may have open.
const MAX_FDS: usize = 1024;

/// The PPC path to the file server, from this process's dispatcher 0.
struct Ppc {
    server: u64,
}

impl Transport for Ppc {
    fn buffer(&mut self) -> &mut [u8; BUFFER_SIZE] {
        // SAFETY: the kernel maps dispatcher 0's PPC buffer page read-write in every process;
        // only this (single-threaded) personality uses it, and only inside this module.
        unsafe { &mut *(kabi::ppc_buffer(0) as *mut [u8; BUFFER_SIZE]) }
    }

    fn call(&mut self, args: [u64; 4]) -> (u64, u64) {
        match sys::ppc_call(self.server, args) {
            Ok(reply) => reply,
            Err(_) => (0, errno::EIO as u64),
        }
    }
}

static CLIENT: Mutex<Option<Client<Ppc>>> = Mutex::new(None);

/// Runs `f` while it alone uses this process's PPC buffer, as disk I/O does (the file-server
/// client's calls carry their data in the same page).
pub(crate) fn with_ppc_buffer<T>(f: impl FnOnce() -> T) -> T {
    let _client = CLIENT.lock();
    f()
}

/// Runs `f` with the file-server client (`EIO` when there is no server). When the server says
/// the call must wait (an empty or full pipe), waits for its wake-up without the client, so
/// the process's other threads can use it meanwhile, then runs `f` again. A signal that
/// arrives meanwhile ends the wait with `EINTR` (see [`crate::signals::interrupts_call`]); it
/// is delivered as the system call returns.
fn with_client<T>(mut f: impl FnMut(&mut Client<Ppc>) -> Result<T, i32>) -> Result<T, Ret> {
    loop {
        let result = {
            let mut guard = CLIENT.lock();
            if guard.is_none() {
                let server = sys::ppc_lookup(server::SERVER_NAME).map_err(|_| err(errno::EIO))?;
                *guard = Some(Client::new(Ppc { server }));
            }
            let client = guard.as_mut().ok_or(err(errno::EIO))?;
            f(client)
        };
        match result {
            Err(server::MUST_WAIT) => {
                let woke = crate::threads::wait_for(
                    WAKE_SOFT_INTERRUPT | crate::signals::SOFT_INTERRUPTS,
                    0,
                );
                if woke & WAKE_SOFT_INTERRUPT == 0 && crate::signals::interrupts_call() {
                    return Err(err(errno::EINTR));
                }
            }
            other => return other.map_err(err),
        }
    }
}

/// A terminal's server: the console, or a console port (`/dev/hvc<n>`, its driver's pid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Terminal {
    Main,
    Port(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Console(Terminal),
    Regular,
    Directory,
    Pipe,
    /// Other character devices (null, zero, urandom...), served by the server.
    Device,
    /// A disk, read and written through its driver ([`crate::disk`]).
    Disk,
    /// `/dev/random` and `/dev/urandom`: bytes from the entropy driver when one runs
    /// ([`crate::fill_random`]); writes are taken and dropped, as Linux mixes them in.
    Random,
}

/// An open file: one reference to a server handle, shared by `dup`ed descriptors.
pub(crate) struct OpenFile {
    handle: Option<u64>,
    kind: Kind,
    flags: u32,
    /// The file's bytes in the archive mapping (an unchanged initramfs file opened read-only).
    archive: Option<&'static [u8]>,
    /// Contents made here at open (a `/proc` file), always read locally: after a fork the
    /// child reads its own copy with its own offset.
    generated: Option<Vec<u8>>,
    /// Whether reads are served here from `archive`, with the offset kept in `offset`: true
    /// while only this process holds the file. A fork hands the offset to the server and
    /// clears it, since parent and child then share the offset (K42's exclusive-to-shared
    /// switch of a file object).
    local: AtomicBool,
    /// The offset of locally read archive files and of disks (which are also `local` until
    /// a fork shares them).
    offset: AtomicU64,
    /// The disk, for `/dev/vd*`.
    disk: Option<Disk>,
    /// The absolute path it was opened by (directories: for `*at` calls and `fchdir`).
    path: Vec<u8>,
    /// The file's window, while the server lets this process use one.
    window: Mutex<Option<Window>>,
    /// Reads and writes of a regular file that went to the server (see
    /// [`OpenFile::window_now`]).
    server_calls: AtomicU64,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // Unmapped before the close, after which the server copies the window back.
        if let Some(w) = self.window.get_mut().take() {
            unmap_window(w);
        }
        if let Some(h) = self.handle {
            let _ = with_client(|c| c.close(&[h]));
        }
    }
}

impl OpenFile {
    /// The bytes read here: generated contents, or the archive's while this process reads
    /// the file locally.
    fn local_bytes(&self) -> Option<&[u8]> {
        if let Some(bytes) = &self.generated {
            return Some(bytes);
        }
        self.archive.filter(|_| self.local.load(Ordering::Relaxed))
    }

    /// Runs `op` in the file's window with its lock held; `None` when the file has no window
    /// (any more: a retired one is unmapped here, and the caller asks the server).
    fn in_window<T>(&self, op: impl FnOnce(&Held<'_>) -> T) -> Option<T> {
        let mut slot = self.window.lock();
        let out = slot.as_ref()?.with_lock(k42_rt::pid(), sys::yield_now, op);
        if out.is_none() {
            if let Some(w) = slot.take() {
                unmap_window(w);
            }
        }
        out
    }

    /// Whether the file has a window after asking the server for one, which this does at the
    /// [`WINDOW_AFTER_CALLS`]th read or write of a regular file that went to the server, and
    /// every [`WINDOW_RETRY_CALLS`] after: a window costs the kernel work per page to make and
    /// to drop, more than a few calls to the server cost, so short-lived uses of a file never
    /// ask. (The server refuses while the file is open elsewhere.)
    fn window_now(&self) -> Result<bool, Ret> {
        if self.kind != Kind::Regular || self.generated.is_some() {
            return Ok(false);
        }
        let calls = self.server_calls.fetch_add(1, Ordering::Relaxed) + 1;
        let due = calls == WINDOW_AFTER_CALLS
            || (calls > WINDOW_AFTER_CALLS && calls.is_multiple_of(WINDOW_RETRY_CALLS));
        let Some(handle) = self.handle.filter(|_| due) else {
            return Ok(false);
        };
        let Some((object, pages)) = with_client(|c| c.window(handle))? else {
            return Ok(false);
        };
        let mut slot = self.window.lock();
        if slot.is_none() {
            *slot = map_window(object, pages);
        }
        Ok(slot.is_some())
    }

    /// Gives up the window (the next call about the file, through the server, makes the
    /// server take it back).
    fn drop_window(&self) {
        if let Some(w) = self.window.lock().take() {
            unmap_window(w);
        }
    }

    /// Moves to the larger window the server makes for a write ending at `end`, or to the
    /// server if it makes none. Returns whether there is a window now.
    fn grow_window(&self, end: u64) -> Result<bool, Ret> {
        let handle = self.handle.ok_or(err(errno::EBADF))?;
        let grown = with_client(|c| c.grow(handle, end))?;
        let mut slot = self.window.lock();
        if let Some(old) = slot.take() {
            unmap_window(old);
        }
        *slot = grown.and_then(|(object, pages)| map_window(object, pages));
        Ok(slot.is_some())
    }
}

/// The read or write of a regular file through the server after which a window is asked for.
const WINDOW_AFTER_CALLS: u64 = 4;
/// How many more such calls before asking again when the server had none to give.
const WINDOW_RETRY_CALLS: u64 = 256;

/// The address ranges of this process's file windows (inside [`crate::FILE_WINDOWS`]).
static WINDOW_RANGES: Mutex<AddressRanges> = Mutex::new(AddressRanges::new(crate::FILE_WINDOWS));

/// Maps memory object `object` (`pages` pages, read-write) in the window area, which the
/// program's own mappings never use; returns where. For shared areas other than file windows
/// (a disk driver's transfer area).
pub(crate) fn map_object_in_window_area(object: u64, pages: u64) -> Option<u64> {
    let at = WINDOW_RANGES.lock().alloc(pages.checked_mul(PAGE)?)?;
    if sys::memobj_map(object, at, kabi::Prot::READ | kabi::Prot::WRITE).is_err() {
        WINDOW_RANGES.lock().free(at);
        return None;
    }
    Some(at)
}

/// Maps the server's window object `object` of `pages` pages; `None` if it cannot (the file is
/// then used through the server, which takes the window back at the first call).
fn map_window(object: u64, pages: u64) -> Option<Window> {
    let at = map_object_in_window_area(object, pages)?;
    // SAFETY: the object's `pages` pages were just mapped read-write at `at`, inside the
    // window area nothing else here maps into (the program's own `mmap` cannot: `ours`); they
    // stay mapped until `unmap_window` consumes this window.
    Some(unsafe { Window::new(at, pages) })
}

/// Unmaps a window.
fn unmap_window(window: Window) {
    let at = window.base();
    if sys::memobj_unmap(at).is_ok() {
        WINDOW_RANGES.lock().free(at);
    }
}

/// The server's file-window counts, as `/proc/k42-file-windows` shows them.
pub fn window_stats_text() -> alloc::string::String {
    match with_client(|c| c.window_stats()) {
        Ok(s) => alloc::format!(
            "mapped_opens {}\nswaps {}\ngrows {}\ncloses {}\n",
            s.mapped_opens,
            s.swaps,
            s.grows,
            s.closes
        ),
        Err(_) => alloc::string::String::new(),
    }
}

#[derive(Clone)]
struct Fd {
    file: Arc<OpenFile>,
    cloexec: bool,
}

struct State {
    fds: Vec<Option<Fd>>,
    cwd: Vec<u8>,
    umask: u32,
}

static STATE: Mutex<State> = Mutex::new(State {
    fds: Vec::new(),
    cwd: Vec::new(),
    umask: 0o022,
});

/// The file-mode creation mask.
pub fn umask() -> u32 {
    STATE.lock().umask
}

/// Sets up descriptors 0, 1 and 2 on the console and the working directory `/`.
pub fn init() {
    let console = Arc::new(OpenFile {
        handle: None,
        kind: Kind::Console(Terminal::Main),
        flags: O_RDWR,
        archive: None,
        generated: None,
        local: AtomicBool::new(false),
        offset: AtomicU64::new(0),
        disk: None,
        path: b"/dev/console".to_vec(),
        window: Mutex::new(None),
        server_calls: AtomicU64::new(0),
    });
    let mut state = STATE.lock();
    state.fds = (0..3)
        .map(|_| {
            Some(Fd {
                file: console.clone(),
                cloexec: false,
            })
        })
        .collect();
    state.cwd = b"/".to_vec();
}

/// Closes every descriptor (at exit: pipe ends must reach the server).
pub fn close_all() {
    let fds = core::mem::take(&mut STATE.lock().fds);
    drop(fds);
}

fn file(fd: u64) -> Result<Arc<OpenFile>, Ret> {
    let state = STATE.lock();
    usize::try_from(fd)
        .ok()
        .and_then(|i| state.fds.get(i))
        .and_then(|slot| slot.as_ref())
        .map(|fd| fd.file.clone())
        .ok_or(err(errno::EBADF))
}

/// Puts `file` in the lowest free descriptor at or above `min`.
fn install(file: Arc<OpenFile>, cloexec: bool, min: usize) -> Ret {
    let mut state = STATE.lock();
    let free = (min..MAX_FDS).find(|&i| state.fds.get(i).is_none_or(|s| s.is_none()));
    let Some(i) = free else {
        return err(errno::EMFILE);
    };
    if state.fds.len() <= i {
        state.fds.resize(i + 1, None);
    }
    state.fds[i] = Some(Fd { file, cloexec });
    i as Ret
}

/// The archive, mapped on first use (inside the personality's area, so at most 192 MiB).
fn archive() -> Option<&'static [u8]> {
    static ARCHIVE: spin::Once<Option<&'static [u8]>> = spin::Once::new();
    let fits = sys::info(Info::InitrdOffset) + sys::info(Info::InitrdLen)
        <= kabi::LINUX_PERSONALITY_AREA.end - ARCHIVE_AT;
    *ARCHIVE.call_once(|| fits.then(|| sys::map_initrd(ARCHIVE_AT).ok()).flatten())
}

/// The link to the running program's file.
pub const SELF_EXE: &[u8] = b"/proc/self/exe";
/// The link to this process's `/proc` directory (its target is the pid).
const PROC_SELF: &[u8] = b"/proc/self";

/// Reads a NUL-terminated path from the program.
pub fn user_path(ptr: u64) -> Result<Vec<u8>, Ret> {
    crate::user_cstring(ptr, PATH_MAX, errno::ENAMETOOLONG)
}

/// `path` made absolute against `dirfd` (or the working directory).
fn absolute(dirfd: u64, path: &[u8]) -> Result<Vec<u8>, Ret> {
    if path.is_empty() {
        return Err(err(errno::ENOENT));
    }
    let path = crate::procfs::alias(path).unwrap_or_else(|| path.to_vec());
    if path == SELF_EXE {
        return Ok(crate::exec::current_exe());
    }
    if path[0] == b'/' {
        return Ok(path);
    }
    let mut base = if dirfd as i32 == AT_FDCWD {
        STATE.lock().cwd.clone()
    } else {
        let dir = file(dirfd)?;
        if dir.kind != Kind::Directory {
            return Err(err(errno::ENOTDIR));
        }
        dir.path.clone()
    };
    if base.last() != Some(&b'/') {
        base.push(b'/');
    }
    base.extend_from_slice(&path);
    Ok(crate::procfs::alias(&base).unwrap_or(base))
}

/// The path with `.`, `..` and repeated slashes resolved by name (for the working directory).
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn result(r: Result<Ret, Ret>) -> Ret {
    r.unwrap_or_else(|e| e)
}

/// Handles the file system calls; `None` for calls that are not about files.
pub fn syscall(n: u64, a: [u64; 6]) -> Option<Ret> {
    let at = AT_FDCWD as u64;
    Some(match n {
        nr::SYS_READ => result(read(a[0], a[1], a[2], None)),
        nr::SYS_WRITE => result(write(a[0], a[1], a[2], None)),
        nr::SYS_PREAD64 => result(read(a[0], a[1], a[2], Some(a[3]))),
        nr::SYS_PWRITE64 => result(write(a[0], a[1], a[2], Some(a[3]))),
        nr::SYS_READV => result(vectored(a[0], a[1], a[2], false)),
        nr::SYS_WRITEV => result(vectored(a[0], a[1], a[2], true)),
        nr::SYS_OPEN => result(open(at, a[0], a[1] as u32, a[2] as u32)),
        nr::SYS_OPENAT => result(open(a[0], a[1], a[2] as u32, a[3] as u32)),
        nr::SYS_CREAT => result(open(
            at,
            a[0],
            O_CREAT | O_WRONLY | file::O_TRUNC,
            a[1] as u32,
        )),
        nr::SYS_CLOSE => result(close(a[0])),
        nr::SYS_LSEEK => result(lseek(a[0], a[1] as i64, a[2] as i32)),
        nr::SYS_FSTAT => result(fstat(a[0]).map(|st| put(a[1], &st))),
        nr::SYS_STAT => result(stat_path(at, a[0], true).map(|st| put(a[1], &st))),
        nr::SYS_LSTAT => result(stat_path(at, a[0], false).map(|st| put(a[1], &st))),
        nr::SYS_NEWFSTATAT => result(fstatat(a[0], a[1], a[3] as u32).map(|st| put(a[2], &st))),
        nr::SYS_GETDENTS64 => result(getdents(a[0], a[1], a[2])),
        nr::SYS_GETCWD => result(getcwd(a[0], a[1])),
        nr::SYS_CHDIR => result(chdir(at, a[0])),
        nr::SYS_FCHDIR => result(fchdir(a[0])),
        nr::SYS_MKDIR => result(path_op(op::MKDIR, at, a[0], a[1] & 0o7777)),
        nr::SYS_MKDIRAT => result(path_op(op::MKDIR, a[0], a[1], a[2] & 0o7777)),
        nr::SYS_UNLINK => result(path_op(op::UNLINK, at, a[0], 0)),
        nr::SYS_RMDIR => result(path_op(op::RMDIR, at, a[0], 0)),
        nr::SYS_UNLINKAT => {
            let which = if a[2] as u32 & AT_REMOVEDIR != 0 {
                op::RMDIR
            } else {
                op::UNLINK
            };
            result(path_op(which, a[0], a[1], 0))
        }
        nr::SYS_RENAME => result(two_paths(op::RENAME, at, a[0], at, a[1])),
        nr::SYS_RENAMEAT | nr::SYS_RENAMEAT2 => {
            result(two_paths(op::RENAME, a[0], a[1], a[2], a[3]))
        }
        nr::SYS_LINK => result(two_paths(op::LINK, at, a[0], at, a[1])),
        nr::SYS_LINKAT => result(two_paths(op::LINK, a[0], a[1], a[2], a[3])),
        nr::SYS_SYMLINK => result(symlink(a[0], at, a[1])),
        nr::SYS_SYMLINKAT => result(symlink(a[0], a[1], a[2])),
        nr::SYS_READLINK => result(readlink(at, a[0], a[1], a[2])),
        nr::SYS_READLINKAT => result(readlink(a[0], a[1], a[2], a[3])),
        nr::SYS_ACCESS => result(stat_path(at, a[0], true).map(|_| 0)),
        nr::SYS_FACCESSAT | nr::SYS_FACCESSAT2 => result(stat_path(a[0], a[1], true).map(|_| 0)),
        nr::SYS_CHMOD => result(path_op(op::CHMOD, at, a[0], a[1] & 0o7777)),
        nr::SYS_FCHMODAT => result(path_op(op::CHMOD, a[0], a[1], a[2] & 0o7777)),
        nr::SYS_FCHMOD => result(fchmod(a[0], a[1])),
        nr::SYS_FTRUNCATE => result(ftruncate(a[0], a[1])),
        nr::SYS_TRUNCATE => result(truncate(a[0], a[1])),
        nr::SYS_UTIMENSAT => result(utimensat(a[0], a[1], a[2], a[3] as u32)),
        nr::SYS_FSYNC | nr::SYS_FDATASYNC => result(fsync(a[0])),
        nr::SYS_UMASK => {
            let mut state = STATE.lock();
            let old = state.umask;
            state.umask = a[0] as u32 & 0o777;
            Ret::from(old)
        }
        nr::SYS_DUP => result(file(a[0]).map(|f| install(f, false, 0))),
        nr::SYS_DUP2 => result(dup3(a[0], a[1], 0, true)),
        nr::SYS_DUP3 => result(dup3(a[0], a[1], a[2] as u32, false)),
        nr::SYS_FCNTL => result(fcntl(a[0], a[1] as i32, a[2])),
        nr::SYS_PIPE => result(pipe(a[0], 0)),
        nr::SYS_PIPE2 => result(pipe(a[0], a[1] as u32)),
        nr::SYS_IOCTL => result(ioctl(a[0], a[1], a[2])),
        nr::SYS_POLL => result(poll(a[0], a[1], a[2] as i32)),
        nr::SYS_SENDFILE => result(sendfile(a[0], a[1], a[2], a[3])),
        _ => return None,
    })
}

fn open(dirfd: u64, path: u64, flags: u32, mode: u32) -> Result<Ret, Ret> {
    let path = absolute(dirfd, &user_path(path)?)?;
    let generated = crate::procfs::contents(&normalize(&path));
    if generated.is_some() && flags & O_ACCMODE != O_RDONLY {
        return Err(err(errno::EACCES));
    }
    let umask = STATE.lock().umask;
    let mode = mode & 0o7777 & !umask;
    let server_path = crate::procfs::server_path(&normalize(&path))?.unwrap_or(path.clone());
    let (handle, info) = with_client(|c| c.open(&server_path, flags, mode))?;
    let kind = match info.kind & S_IFMT {
        S_IFDIR => Kind::Directory,
        S_IFCHR if matches!(file::major(info.rdev), 4 | 5) => Kind::Console(Terminal::Main),
        S_IFCHR if file::major(info.rdev) == tty::HVC_MAJOR => {
            // The port's driver (`hvcd`), if one serves it; a node without a driver is ENXIO,
            // as on Linux.
            let name = alloc::format!("hvc{}", file::minor(info.rdev));
            match sys::ppc_lookup(&name) {
                Ok(pid) => Kind::Console(Terminal::Port(pid)),
                Err(_) => {
                    let _ = with_client(|c| c.close(&[handle]));
                    return Err(err(errno::ENXIO));
                }
            }
        }
        S_IFCHR if file::major(info.rdev) == 1 && matches!(file::minor(info.rdev), 8 | 9) => {
            Kind::Random
        }
        S_IFCHR => Kind::Device,
        S_IFIFO => Kind::Pipe,
        S_IFBLK => Kind::Disk,
        _ => Kind::Regular,
    };
    let disk = if kind == Kind::Disk {
        match Disk::open(info.rdev, flags & O_ACCMODE != O_RDONLY) {
            Ok(disk) => Some(disk),
            Err(e) => {
                let _ = with_client(|c| c.close(&[handle]));
                return Err(e);
            }
        }
    } else {
        None
    };
    let archive = match (info.archive_offset, flags & O_ACCMODE) {
        (Some(at), O_RDONLY) => {
            archive().and_then(|a| a.get(at as usize..(at + info.size) as usize))
        }
        _ => None,
    };
    let file = Arc::new(OpenFile {
        handle: Some(handle),
        kind,
        flags,
        archive,
        generated,
        local: AtomicBool::new(archive.is_some() || disk.is_some()),
        offset: AtomicU64::new(0),
        disk,
        path: normalize(&path),
        window: Mutex::new(None),
        server_calls: AtomicU64::new(0),
    });
    Ok(install(file, flags & O_CLOEXEC != 0, 0))
}

fn close(fd: u64) -> Result<Ret, Ret> {
    let old = {
        let mut state = STATE.lock();
        let slot = usize::try_from(fd)
            .ok()
            .and_then(|i| state.fds.get_mut(i))
            .ok_or(err(errno::EBADF))?;
        slot.take().ok_or(err(errno::EBADF))?
    };
    drop(old);
    Ok(0)
}

fn read(fd: u64, ptr: u64, len: u64, at: Option<u64>) -> Result<Ret, Ret> {
    let f = file(fd)?;
    let out = user_bytes_mut(ptr, len)?;
    read_into(&f, out, at).map(|n| n as Ret)
}

/// The open file behind `fd`, if `mmap` can map it: a regular file, a disk or a device such
/// as `/dev/zero`, open for reading (`EBADF`, `EACCES`, `ENODEV` otherwise). A writable
/// shared mapping (`writable_shared`) is refused with `ENODEV`, logged once: its stores would
/// have to reach the file, which mappings made by copying cannot do.
pub(crate) fn mappable(fd: i32, writable_shared: bool) -> Result<Arc<OpenFile>, Ret> {
    let f = file(fd as u64)?;
    if f.flags & O_ACCMODE == O_WRONLY {
        return Err(err(errno::EACCES));
    }
    if !matches!(f.kind, Kind::Regular | Kind::Disk | Kind::Device) {
        return Err(err(errno::ENODEV));
    }
    if writable_shared {
        return Err(crate::unsupported(
            "mmap of a file, shared and writable",
            errno::ENODEV,
            "ENODEV",
        ));
    }
    Ok(f)
}

/// Reads `f` from `offset` into the `len` bytes of fresh, writable memory at `at` (a private
/// file mapping), up to the file's end; the rest stays zero.
pub(crate) fn read_mapped(f: &OpenFile, offset: u64, at: u64, len: u64) -> Result<(), Ret> {
    let out = user_bytes_mut(at, len)?;
    let mut done = 0usize;
    while done < out.len() {
        let from = offset
            .checked_add(done as u64)
            .ok_or(err(errno::EOVERFLOW))?;
        match read_into(f, &mut out[done..], Some(from))? {
            0 => break,
            n => done += n,
        }
    }
    Ok(())
}

/// Reads from `f` into `out` (at `at`, or at and past its offset).
fn read_into(f: &OpenFile, out: &mut [u8], at: Option<u64>) -> Result<usize, Ret> {
    if f.flags & O_ACCMODE == O_WRONLY {
        return Err(err(errno::EBADF));
    }
    match f.kind {
        Kind::Console(terminal) => return console_read(f, terminal, out),
        Kind::Random => {
            crate::fill_random(out);
            return Ok(out.len());
        }
        Kind::Directory => return Err(err(errno::EISDIR)),
        Kind::Pipe if at.is_some() => return Err(err(errno::ESPIPE)),
        _ => {}
    }
    if let Some(disk) = &f.disk {
        let start = at.map_or_else(|| disk_offset(f), Ok)?;
        let n = disk.read_at(out, start)?;
        if at.is_none() {
            set_disk_offset(f, start + n as u64)?;
        }
        return Ok(n);
    }
    if let Some(bytes) = f.local_bytes() {
        let start = at.unwrap_or_else(|| f.offset.load(Ordering::Relaxed)) as usize;
        let n = bytes.len().saturating_sub(start).min(out.len());
        if n > 0 {
            out[..n].copy_from_slice(&bytes[start..start + n]);
        }
        if at.is_none() {
            f.offset.store((start + n) as u64, Ordering::Relaxed);
        }
        return Ok(n);
    }
    if let Some(n) = f.in_window(|w| w.read(out, at)) {
        return Ok(n);
    }
    if f.window_now()? {
        if let Some(n) = f.in_window(|w| w.read(out, at)) {
            return Ok(n);
        }
    }
    let handle = f.handle.ok_or(err(errno::EBADF))?;
    let mut done = 0usize;
    while done < out.len() {
        let end = (done + BUFFER_SIZE).min(out.len());
        let chunk = &mut out[done..end];
        let offset = at.map(|o| o + done as u64);
        let n = match with_client(|c| c.read(handle, chunk, offset)) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        done += n;
        // A pipe returns what it has; a file stops at its end.
        if n < chunk.len() || f.kind == Kind::Pipe {
            break;
        }
    }
    Ok(done)
}

/// Reads console input through the console server, waiting for some unless the file is
/// non-blocking; a signal that can be delivered ends the wait with `EINTR`.
fn console_read(f: &OpenFile, terminal: Terminal, out: &mut [u8]) -> Result<usize, Ret> {
    if out.is_empty() {
        return Ok(0);
    }
    loop {
        let got = match terminal {
            Terminal::Main => k42_rt::read_console(out),
            Terminal::Port(server) => k42_rt::read_console_port(server, out),
        };
        match got {
            Ok(ConsoleInput::Bytes(n)) => return Ok(n),
            Ok(ConsoleInput::Ended) => return Ok(0),
            Ok(ConsoleInput::NoneYet) => {}
            Err(_) => return Err(err(errno::EIO)),
        }
        if f.flags & O_NONBLOCK != 0 {
            return Err(err(errno::EAGAIN));
        }
        // The server posts the wake bit once input arrives; a signal ends the wait too.
        let woke = crate::threads::wait_for(
            k42_rt::CONSOLE_WAKE_SOFT_INTERRUPT | crate::signals::SOFT_INTERRUPTS,
            0,
        );
        if woke & k42_rt::CONSOLE_WAKE_SOFT_INTERRUPT == 0 && crate::signals::deliverable() {
            return Err(err(errno::EINTR));
        }
    }
}

fn write(fd: u64, ptr: u64, len: u64, at: Option<u64>) -> Result<Ret, Ret> {
    let f = file(fd)?;
    let data = user_bytes(ptr, len)?;
    write_to(&f, data, at).map(|n| n as Ret)
}

/// Writes `data` to descriptor `fd` at its offset.
fn write_from(fd: u64, data: &[u8]) -> Result<usize, Ret> {
    let f = file(fd)?;
    write_to(&f, data, None)
}

/// Writes `data` to `f` (at `at`, or at its offset).
fn write_to(f: &OpenFile, data: &[u8], at: Option<u64>) -> Result<usize, Ret> {
    if f.flags & O_ACCMODE == O_RDONLY && !matches!(f.kind, Kind::Console(_)) {
        return Err(err(errno::EBADF));
    }
    match f.kind {
        Kind::Console(terminal) => {
            let written = match terminal {
                Terminal::Main => k42_rt::write(data),
                Terminal::Port(server) => k42_rt::write_console_port(server, data),
            };
            return written.map(|()| data.len()).map_err(|_| err(errno::EIO));
        }
        Kind::Random => return Ok(data.len()),
        Kind::Directory => return Err(err(errno::EISDIR)),
        Kind::Pipe if at.is_some() => return Err(err(errno::ESPIPE)),
        _ => {}
    }
    if let Some(disk) = &f.disk {
        let start = at.map_or_else(|| disk_offset(f), Ok)?;
        let n = disk.write_at(data, start)?;
        if at.is_none() {
            set_disk_offset(f, start + n as u64)?;
        }
        return Ok(n);
    }
    let append = f.flags & file::O_APPEND != 0;
    let mut asked = false;
    loop {
        match f.in_window(|w| w.write(data, at, append)) {
            Some(Ok(n)) => return Ok(n),
            Some(Err(WindowError::NoRoom(end))) if f.grow_window(end)? => continue,
            Some(_) => break,
            None if !asked && f.window_now()? => asked = true,
            None => break,
        }
    }
    let handle = f.handle.ok_or(err(errno::EBADF))?;
    let mut done = 0usize;
    while done < data.len() {
        let chunk = &data[done..(done + BUFFER_SIZE).min(data.len())];
        let offset = at.map(|o| o + done as u64);
        match with_client(|c| c.write(handle, chunk, offset)) {
            Ok(n) => done += n,
            Err(e) if done == 0 => {
                if e == err(errno::EPIPE) {
                    // Delivered as the call returns: by default it ends the process.
                    crate::signals::raise(k42_linux_abi::signal::SIGPIPE);
                }
                return Err(e);
            }
            Err(_) => break,
        }
    }
    Ok(done)
}

/// A disk's offset: kept here while only this process has the file, in the server's
/// description once a fork shared it.
fn disk_offset(f: &OpenFile) -> Result<u64, Ret> {
    if f.local.load(Ordering::Relaxed) {
        return Ok(f.offset.load(Ordering::Relaxed));
    }
    let handle = f.handle.ok_or(err(errno::EBADF))?;
    with_client(|c| c.seek(handle, 0, SEEK_CUR))
}

/// Moves a disk's offset (see [`disk_offset`]).
fn set_disk_offset(f: &OpenFile, offset: u64) -> Result<(), Ret> {
    if f.local.load(Ordering::Relaxed) {
        f.offset.store(offset, Ordering::Relaxed);
        return Ok(());
    }
    let handle = f.handle.ok_or(err(errno::EBADF))?;
    let offset = i64::try_from(offset).map_err(|_| err(errno::EOVERFLOW))?;
    with_client(|c| c.seek(handle, offset, SEEK_SET)).map(|_| ())
}

fn vectored(fd: u64, iov: u64, count: u64, writing: bool) -> Result<Ret, Ret> {
    if count > 1024 {
        return Err(err(errno::EINVAL));
    }
    let mut total: Ret = 0;
    for i in 0..count {
        let v: file::Iovec = get(iov + i * 16)?;
        let n = if writing {
            write(fd, v.iov_base, v.iov_len, None)
        } else {
            read(fd, v.iov_base, v.iov_len, None)
        };
        match n {
            Ok(n) => {
                total += n;
                if (n as u64) < v.iov_len {
                    break;
                }
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(total)
}

fn lseek(fd: u64, offset: i64, whence: i32) -> Result<Ret, Ret> {
    let f = file(fd)?;
    match f.kind {
        Kind::Pipe => return Err(err(errno::ESPIPE)),
        Kind::Console(_) => return Err(err(errno::ESPIPE)),
        _ => {}
    }
    if let Some(disk) = &f.disk {
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => disk_offset(&f)? as i64,
            SEEK_END => disk.size() as i64,
            _ => return Err(err(errno::EINVAL)),
        };
        let target = base.checked_add(offset).ok_or(err(errno::EOVERFLOW))?;
        if target < 0 {
            return Err(err(errno::EINVAL));
        }
        set_disk_offset(&f, target as u64)?;
        return Ok(target);
    }
    if let Some(bytes) = f.local_bytes() {
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => f.offset.load(Ordering::Relaxed) as i64,
            SEEK_END => bytes.len() as i64,
            _ => return Err(err(errno::EINVAL)),
        };
        let target = base.checked_add(offset).filter(|&t| t >= 0);
        let target = target.ok_or(err(errno::EINVAL))?;
        f.offset.store(target as u64, Ordering::Relaxed);
        return Ok(target);
    }
    let in_window = f.in_window(|w| {
        let h = w.header();
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => h.offset() as i64,
            SEEK_END => h.size() as i64,
            _ => return Err(err(errno::EINVAL)),
        };
        let target = base.checked_add(offset).ok_or(err(errno::EOVERFLOW))?;
        if target < 0 {
            return Err(err(errno::EINVAL));
        }
        h.set_offset(target as u64);
        Ok(target)
    });
    if let Some(r) = in_window {
        return r;
    }
    let handle = f.handle.ok_or(err(errno::ESPIPE))?;
    if f.kind == Kind::Directory {
        // Back to the server's entries (`/proc`'s processes come after them).
        f.offset.store(0, Ordering::Relaxed);
    }
    with_client(|c| c.seek(handle, offset, whence)).map(|o| o as Ret)
}

fn console_stat() -> Stat {
    Stat {
        st_mode: S_IFCHR | 0o620,
        st_rdev: file::makedev(5, 1),
        st_blksize: 1024,
        st_nlink: 1,
        ..Stat::default()
    }
}

fn fstat(fd: u64) -> Result<Stat, Ret> {
    let f = file(fd)?;
    match f.handle {
        Some(h) => with_client(|c| c.fstat(h)),
        None => Ok(console_stat()),
    }
}

fn stat_path(dirfd: u64, path: u64, follow: bool) -> Result<Stat, Ret> {
    let path = absolute(dirfd, &user_path(path)?)?;
    let path = crate::procfs::server_path(&normalize(&path))?.unwrap_or(path);
    with_client(|c| c.stat(&path, follow))
}

fn fstatat(dirfd: u64, path: u64, flags: u32) -> Result<Stat, Ret> {
    if flags & AT_EMPTY_PATH != 0 && user_path(path)?.is_empty() {
        return if dirfd as i32 == AT_FDCWD {
            let cwd = STATE.lock().cwd.clone();
            with_client(|c| c.stat(&cwd, true))
        } else {
            fstat(dirfd)
        };
    }
    stat_path(dirfd, path, flags & AT_SYMLINK_NOFOLLOW == 0)
}

fn getdents(fd: u64, ptr: u64, len: u64) -> Result<Ret, Ret> {
    let f = file(fd)?;
    if f.kind != Kind::Directory {
        return Err(err(errno::ENOTDIR));
    }
    let out = user_bytes_mut(ptr, len.min(BUFFER_SIZE as u64))?;
    let handle = f.handle.ok_or(err(errno::EBADF))?;
    // `/proc` lists the processes after the server's entries; the file's offset, unused for
    // directories otherwise, holds the last pid listed.
    let listed = f.offset.load(Ordering::Relaxed);
    let n = if listed == 0 {
        with_client(|c| c.getdents(handle, out))?
    } else {
        0
    };
    if n > 0 || f.path != b"/proc" {
        return Ok(n as Ret);
    }
    let (n, last) = process_entries(out, listed)?;
    f.offset.store(last, Ordering::Relaxed);
    Ok(n as Ret)
}

/// Packs a directory entry for each live process with a pid above `after` into `out`;
/// returns the bytes used and the last pid packed (`after` if none).
fn process_entries(out: &mut [u8], after: u64) -> Result<(usize, u64), Ret> {
    let mut writer = k42_linux_abi::file::Dirent64Writer::new(out);
    let mut last = after;
    for d in crate::procfs::processes().iter().filter(|d| d.pid > after) {
        let name = alloc::format!("{}", d.pid);
        // Inode numbers of their own, clear of the file server's.
        let ino = (1 << 40) + d.pid;
        match writer.push(ino, ((1 << 40) + d.pid) as i64, DT_DIR, name.as_bytes()) {
            Ok(()) => last = d.pid,
            Err(_) if !writer.is_empty() => break,
            Err(_) => return Err(err(errno::EINVAL)),
        }
    }
    Ok((writer.len(), last))
}

fn getcwd(ptr: u64, size: u64) -> Result<Ret, Ret> {
    let cwd = STATE.lock().cwd.clone();
    if (size as usize) < cwd.len() + 1 {
        return Err(err(errno::ERANGE));
    }
    let out = user_bytes_mut(ptr, cwd.len() as u64 + 1)?;
    out[..cwd.len()].copy_from_slice(&cwd);
    out[cwd.len()] = 0;
    Ok(cwd.len() as Ret + 1)
}

fn set_cwd(path: Vec<u8>) -> Result<Ret, Ret> {
    let st = with_client(|c| c.stat(&path, true))?;
    if st.st_mode & S_IFMT != S_IFDIR {
        return Err(err(errno::ENOTDIR));
    }
    STATE.lock().cwd = normalize(&path);
    Ok(0)
}

fn chdir(dirfd: u64, path: u64) -> Result<Ret, Ret> {
    set_cwd(absolute(dirfd, &user_path(path)?)?)
}

fn fchdir(fd: u64) -> Result<Ret, Ret> {
    let f = file(fd)?;
    set_cwd(f.path.clone())
}

fn path_op(which: u64, dirfd: u64, path: u64, arg: u64) -> Result<Ret, Ret> {
    let path = absolute(dirfd, &user_path(path)?)?;
    let arg = if which == op::MKDIR {
        arg & !u64::from(STATE.lock().umask)
    } else {
        arg
    };
    with_client(|c| c.path_op(which, &path, arg)).map(|()| 0)
}

fn two_paths(which: u64, dir1: u64, p1: u64, dir2: u64, p2: u64) -> Result<Ret, Ret> {
    let first = absolute(dir1, &user_path(p1)?)?;
    let second = absolute(dir2, &user_path(p2)?)?;
    with_client(|c| c.two_path_op(which, &first, &second)).map(|()| 0)
}

fn symlink(target: u64, dirfd: u64, path: u64) -> Result<Ret, Ret> {
    let target = user_path(target)?;
    let path = absolute(dirfd, &user_path(path)?)?;
    with_client(|c| c.two_path_op(op::SYMLINK, &target, &path)).map(|()| 0)
}

fn readlink(dirfd: u64, path: u64, buf: u64, size: u64) -> Result<Ret, Ret> {
    let raw = user_path(path)?;
    let path = absolute(dirfd, &raw)?;
    if size == 0 {
        return Err(err(errno::EINVAL));
    }
    let out = user_bytes_mut(buf, size.min(BUFFER_SIZE as u64))?;
    if normalize(&raw) == PROC_SELF {
        let target = crate::procfs::self_link();
        let n = target.len().min(out.len());
        out[..n].copy_from_slice(&target[..n]);
        return Ok(n as Ret);
    }
    if normalize(&raw) == SELF_EXE {
        let exe = crate::exec::current_exe();
        let n = exe.len().min(out.len());
        out[..n].copy_from_slice(&exe[..n]);
        return Ok(n as Ret);
    }
    with_client(|c| c.readlink(&path, out)).map(|n| n as Ret)
}

fn fchmod(fd: u64, mode: u64) -> Result<Ret, Ret> {
    let f = file(fd)?;
    let path = f.path.clone();
    with_client(|c| c.path_op(op::CHMOD, &path, mode & 0o7777)).map(|()| 0)
}

fn ftruncate(fd: u64, len: u64) -> Result<Ret, Ret> {
    let f = file(fd)?;
    if f.kind != Kind::Regular || (len as i64) < 0 {
        return Err(err(errno::EINVAL));
    }
    if f.flags & O_ACCMODE == O_RDONLY {
        return Err(err(errno::EINVAL));
    }
    match f.in_window(|w| w.truncate(len)) {
        Some(Ok(())) => return Ok(0),
        // Too long for the window: the server takes the file back and truncates it.
        Some(Err(_)) => f.drop_window(),
        None => {}
    }
    let handle = f.handle.ok_or(err(errno::EINVAL))?;
    with_client(|c| c.handle_op(op::TRUNCATE, handle, len)).map(|_| 0)
}

fn truncate(path: u64, len: u64) -> Result<Ret, Ret> {
    let fd = open(AT_FDCWD as u64, path, O_WRONLY, 0)?;
    let r = ftruncate(fd as u64, len);
    close(fd as u64)?;
    r
}

fn utimensat(dirfd: u64, path: u64, times: u64, flags: u32) -> Result<Ret, Ret> {
    const UTIME_NOW: i64 = (1 << 30) - 1;
    const UTIME_OMIT: i64 = (1 << 30) - 2;
    let path = if path == 0 {
        file(dirfd)?.path.clone()
    } else {
        absolute(dirfd, &user_path(path)?)?
    };
    let (atime, mtime) = if times == 0 {
        (server::TIME_NOW, server::TIME_NOW)
    } else {
        let t: [k42_linux_abi::time::Timespec; 2] = get(times)?;
        let one = |t: k42_linux_abi::time::Timespec| match t.tv_nsec {
            UTIME_NOW => server::TIME_NOW,
            UTIME_OMIT => server::TIME_OMIT,
            ns => (t.tv_sec as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(ns as u64),
        };
        (one(t[0]), one(t[1]))
    };
    let follow = flags & AT_SYMLINK_NOFOLLOW == 0;
    with_client(|c| c.utimens(&path, follow, atime, mtime)).map(|()| 0)
}

fn dup3(old: u64, new: u64, flags: u32, dup2: bool) -> Result<Ret, Ret> {
    let f = file(old)?;
    if old == new {
        return if dup2 {
            Ok(new as Ret)
        } else {
            Err(err(errno::EINVAL))
        };
    }
    let new_index = usize::try_from(new)
        .ok()
        .filter(|&i| i < MAX_FDS)
        .ok_or(err(errno::EBADF))?;
    let previous = {
        let mut state = STATE.lock();
        if state.fds.len() <= new_index {
            state.fds.resize(new_index + 1, None);
        }
        state.fds[new_index].replace(Fd {
            file: f,
            cloexec: flags & O_CLOEXEC != 0,
        })
    };
    drop(previous);
    Ok(new as Ret)
}

fn fcntl(fd: u64, cmd: i32, arg: u64) -> Result<Ret, Ret> {
    let f = file(fd)?;
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let min = usize::try_from(arg)
                .ok()
                .filter(|&m| m < MAX_FDS)
                .ok_or(err(errno::EINVAL))?;
            Ok(install(f, cmd == F_DUPFD_CLOEXEC, min))
        }
        F_GETFD => {
            let state = STATE.lock();
            let cloexec = state.fds[fd as usize].as_ref().is_some_and(|d| d.cloexec);
            Ok(if cloexec { FD_CLOEXEC as Ret } else { 0 })
        }
        F_SETFD => {
            let mut state = STATE.lock();
            if let Some(d) = state.fds[fd as usize].as_mut() {
                d.cloexec = arg as i32 & FD_CLOEXEC != 0;
            }
            Ok(0)
        }
        F_GETFL => match f.handle {
            Some(h) => with_client(|c| c.handle_op(op::GETFL, h, 0)).map(|v| v as Ret),
            None => Ok(O_RDWR as Ret),
        },
        F_SETFL => match f.handle {
            Some(h) => with_client(|c| c.handle_op(op::SETFL, h, arg)).map(|_| 0),
            None => Ok(0),
        },
        _ => Err(err(errno::EINVAL)),
    }
}

fn pipe(fds: u64, flags: u32) -> Result<Ret, Ret> {
    if flags & !(O_CLOEXEC | O_NONBLOCK | O_DIRECTORY) != 0 {
        return Err(err(errno::EINVAL));
    }
    user_bytes_mut(fds, 8)?;
    let (r, w) = with_client(|c| c.pipe(flags & O_NONBLOCK))?;
    let end = |handle, access| {
        Arc::new(OpenFile {
            handle: Some(handle),
            kind: Kind::Pipe,
            flags: access,
            archive: None,
            generated: None,
            local: AtomicBool::new(false),
            offset: AtomicU64::new(0),
            disk: None,
            path: Vec::new(),
            window: Mutex::new(None),
            server_calls: AtomicU64::new(0),
        })
    };
    let cloexec = flags & O_CLOEXEC != 0;
    let rfd = install(end(r, O_RDONLY), cloexec, 0);
    if rfd < 0 {
        return Err(rfd);
    }
    let wfd = install(end(w, O_WRONLY), cloexec, 0);
    if wfd < 0 {
        close(rfd as u64)?;
        return Err(wfd);
    }
    Ok(put(fds, &[rfd as i32, wfd as i32]))
}

/// `fsync`: a disk asks its device to make its writes durable; files are in memory.
fn fsync(fd: u64) -> Result<Ret, Ret> {
    match &file(fd)?.disk {
        Some(disk) => disk.flush().map(|()| 0),
        None => Ok(0),
    }
}

/// The block-device requests of `ioctl` on a disk.
fn disk_ioctl(disk: &Disk, request: u32, arg: u64) -> Result<Ret, Ret> {
    use k42_linux_abi::block::*;
    match request {
        BLKGETSIZE64 => Ok(put(arg, &disk.size())),
        BLKGETSIZE => Ok(put(arg, &(disk.size() / SECTOR_SIZE))),
        BLKSSZGET => Ok(put(arg, &(SECTOR_SIZE as i32))),
        BLKPBSZGET => Ok(put(arg, &(k42_guest_lib::virtio::blk::BLOCK_SIZE as u32))),
        BLKROGET => Ok(put(arg, &i32::from(disk.readonly()))),
        BLKFLSBUF => disk.drop_cached().map(|()| 0),
        _ => Err(err(errno::ENOTTY)),
    }
}

fn ioctl(fd: u64, request: u64, arg: u64) -> Result<Ret, Ret> {
    let f = file(fd)?;
    // Requests every descriptor takes (Rust's std sets close-on-exec this way).
    match request as u32 {
        tty::FIOCLEX => return fcntl(fd, F_SETFD, FD_CLOEXEC as u64),
        tty::FIONCLEX => return fcntl(fd, F_SETFD, 0),
        tty::FIONBIO => {
            let on: i32 = get(arg)?;
            let flags = fcntl(fd, F_GETFL, 0)? as u64;
            let flags = if on != 0 {
                flags | u64::from(O_NONBLOCK)
            } else {
                flags & !u64::from(O_NONBLOCK)
            };
            return fcntl(fd, F_SETFL, flags);
        }
        _ => {}
    }
    if let Some(disk) = &f.disk {
        return disk_ioctl(disk, request as u32, arg);
    }
    if !matches!(f.kind, Kind::Console(_)) {
        return Err(err(errno::ENOTTY));
    }
    match request as u32 {
        tty::TIOCGWINSZ => Ok(put(
            arg,
            &tty::Winsize {
                ws_row: 24,
                ws_col: 80,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )),
        tty::TCGETS => Ok(put(arg, &tty::Termios::host_edited())),
        tty::TCSETS | tty::TCSETSW | tty::TCSETSF => Ok(0),
        _ => Err(err(errno::ENOTTY)),
    }
}

/// `sendfile`: copies through a buffer here (the data passes the personality once).
fn sendfile(out_fd: u64, in_fd: u64, offset_ptr: u64, count: u64) -> Result<Ret, Ret> {
    let mut offset = if offset_ptr != 0 {
        Some(get::<u64>(offset_ptr)?)
    } else {
        None
    };
    let input = file(in_fd)?;
    let mut buffer = vec![0u8; BUFFER_SIZE];
    let mut done = 0u64;
    while done < count {
        let want = (count - done).min(BUFFER_SIZE as u64) as usize;
        let n = read_into(&input, &mut buffer[..want], offset)?;
        if n == 0 {
            break;
        }
        let written = write_from(out_fd, &buffer[..n])?;
        done += written as u64;
        offset = offset.map(|o| o + written as u64);
        if written < n {
            break;
        }
    }
    if let Some(o) = offset {
        let r = put(offset_ptr, &o);
        if r < 0 {
            return Err(r);
        }
    }
    Ok(done as Ret)
}

/// What `poll` reports for one entry.
fn revents(p: &file::Pollfd) -> Result<i16, Ret> {
    if p.fd < 0 {
        return Ok(0);
    }
    let Ok(f) = file(p.fd as u64) else {
        return Ok(POLLNVAL);
    };
    let bits = match (f.kind, f.handle) {
        // Readable when input waits; asking also makes the console server wake this process
        // when input arrives, which ends `poll`'s block below.
        (Kind::Console(terminal), _) if p.events & POLLIN != 0 => {
            let state = match terminal {
                Terminal::Main => k42_rt::console_input_state(),
                Terminal::Port(server) => k42_rt::console_port_input_state(server),
            };
            match state.map_err(|_| err(errno::EIO))? {
                ConsoleInput::Bytes(_) => POLLIN | POLLOUT,
                ConsoleInput::Ended => POLLIN | POLLOUT | POLLHUP,
                ConsoleInput::NoneYet => POLLOUT,
            }
        }
        (Kind::Console(_), _) => POLLOUT,
        (Kind::Pipe, Some(h)) => {
            let bits = with_client(|c| c.poll(h))?;
            let mut r = 0;
            if bits & 1 != 0 {
                r |= POLLIN;
            }
            if bits & 2 != 0 {
                r |= POLLOUT;
            }
            if bits & 4 != 0 {
                r |= POLLHUP;
            }
            r
        }
        _ => POLLIN | POLLOUT,
    };
    Ok(bits & (p.events | POLLHUP | POLLNVAL))
}

fn poll(fds: u64, count: u64, timeout_ms: i32) -> Result<Ret, Ret> {
    if count > 1024 {
        return Err(err(errno::EINVAL));
    }
    let deadline = (timeout_ms > 0).then(|| sys::now_ns() + timeout_ms as u64 * 1_000_000);
    let mut entries: Vec<file::Pollfd> = vec![];
    for i in 0..count {
        entries.push(get(fds + i * 8)?);
    }
    loop {
        let mut ready = 0;
        for p in entries.iter_mut() {
            p.revents = revents(p)?;
            if p.revents != 0 {
                ready += 1;
            }
        }
        let expired = timeout_ms == 0 || deadline.is_some_and(|d| sys::now_ns() >= d);
        if ready > 0 || expired {
            for (i, p) in entries.iter().enumerate() {
                let r = put(fds + i as u64 * 8, p);
                if r < 0 {
                    return Err(r);
                }
            }
            return Ok(ready);
        }
        // Any soft interrupt may be news: a pipe's or the console's wake-up, a signal.
        crate::threads::wait_for(u64::MAX, deadline.unwrap_or(0));
    }
}

/// Gets the open files ready for a fork: files read locally switch to the server, which gets
/// their offsets (parent and child share them from now on), and every server handle gains a
/// reference for the child's copy of the table. Returns the handles retained, to release
/// with [`fork_failed`] if the fork does not happen.
pub fn prepare_fork() -> Result<Vec<u64>, Ret> {
    let files: Vec<Arc<OpenFile>> = {
        let state = STATE.lock();
        let mut files: Vec<Arc<OpenFile>> = Vec::new();
        for fd in state.fds.iter().flatten() {
            if !files.iter().any(|f| Arc::ptr_eq(f, &fd.file)) {
                files.push(fd.file.clone());
            }
        }
        files
    };
    for f in &files {
        let archive_local = f.generated.is_none() && f.local.load(Ordering::Relaxed);
        if let (Some(handle), true) = (f.handle, archive_local) {
            let offset = f.offset.load(Ordering::Relaxed) as i64;
            with_client(|c| c.seek(handle, offset, SEEK_SET))?;
            f.local.store(false, Ordering::Relaxed);
        }
    }
    let handles: Vec<u64> = files.iter().filter_map(|f| f.handle).collect();
    for chunk in handles.chunks(BUFFER_SIZE / 8) {
        with_client(|c| c.retain(chunk))?;
    }
    Ok(handles)
}

/// Gives back the references [`prepare_fork`] took, after a fork that failed.
pub fn fork_failed(handles: &[u64]) {
    for chunk in handles.chunks(BUFFER_SIZE / 8) {
        let _ = with_client(|c| c.close(chunk));
    }
}

/// Closes the descriptors marked close-on-exec (`execve` is replacing the program).
pub fn close_on_exec() {
    let closed: Vec<Fd> = {
        let mut state = STATE.lock();
        state
            .fds
            .iter_mut()
            .filter(|slot| slot.as_ref().is_some_and(|fd| fd.cloexec))
            .filter_map(Option::take)
            .collect()
    };
    drop(closed);
}

/// A program file's contents, for `execve`.
pub enum Contents {
    /// An unchanged initramfs file, read in place.
    Archive(&'static [u8]),
    /// A file read from the server.
    Read(Vec<u8>),
}

impl Contents {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Contents::Archive(bytes) => bytes,
            Contents::Read(bytes) => bytes,
        }
    }
}

/// `path` made absolute against the working directory.
pub fn absolute_path(path: &[u8]) -> Result<Vec<u8>, Ret> {
    absolute(AT_FDCWD as u64, path).map(|p| normalize(&p))
}

/// Most bytes of a program file `execve` reads.
const EXECUTABLE_MAX: u64 = 64 << 20;

/// The contents of the program file at absolute `path`, if it is a regular file with an
/// execute permission bit (`EACCES` otherwise, as Linux says for directories too).
pub fn read_executable(path: &[u8]) -> Result<Contents, Ret> {
    let stat = with_client(|c| c.stat(path, true))?;
    if stat.st_mode & S_IFMT != file::S_IFREG || stat.st_mode & 0o111 == 0 {
        return Err(err(errno::EACCES));
    }
    if stat.st_size as u64 > EXECUTABLE_MAX {
        return Err(err(errno::ENOMEM));
    }
    let (handle, info) = with_client(|c| c.open(path, O_RDONLY, 0))?;
    let in_place = info
        .archive_offset
        .and_then(|at| archive().and_then(|a| a.get(at as usize..(at + info.size) as usize)));
    let contents = match in_place {
        Some(bytes) => Ok(Contents::Archive(bytes)),
        None => {
            let mut bytes = vec![0u8; info.size as usize];
            let mut done = 0;
            let mut failed = None;
            while done < bytes.len() {
                let end = (done + BUFFER_SIZE).min(bytes.len());
                match with_client(|c| c.read(handle, &mut bytes[done..end], Some(done as u64))) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            bytes.truncate(done);
            match failed {
                Some(e) => Err(e),
                None => Ok(Contents::Read(bytes)),
            }
        }
    };
    let _ = with_client(|c| c.close(&[handle]));
    contents
}
