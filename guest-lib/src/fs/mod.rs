//! A RAM file system: the data model of the ring-3 file-system server that holds the
//! initramfs. Host-testable, no clock (callers pass the time), no permission checks (the
//! server decides who may do what), safe code.
//!
//! Inodes are directories, regular files (page-sized chunks, holes cost nothing), symlinks and
//! character devices (numbers only: the server decides what their reads do). Names are bytes,
//! as on Linux. Path operations take the directory relative paths start from (the process's
//! cwd, or the `dirfd` of an `*at` call) and follow Linux's lookup rules: `/` and `//` are the
//! root, `.` and `..` (the root's `..` is the root), a trailing `/` demands a directory,
//! symlinks are followed up to 40 per lookup, final symlinks only when asked. Errors are
//! [`FsError`]s, each one Linux errno.
//!
//! Link counts follow Linux: a file has one per name, a directory two (its name and its `.`)
//! plus one per subdirectory (their `..`). An inode without names lives on while it is
//! [retained](FileSystem::retain) (an open file), then goes.
//!
//! [`populate_from_cpio`] fills a file system from an initramfs image.
#![forbid(unsafe_code)]

mod data;
mod dir;
mod error;
mod initramfs;
mod path;
pub mod server;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use k42_linux_abi::file::{
    self as abi, Dirent64Writer, DirentError, Stat, DT_BLK, DT_CHR, DT_DIR, DT_LNK, DT_REG,
    PATH_MAX, RENAME_NOREPLACE, S_IALLUGO, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
};
use k42_linux_abi::time::Timespec;

pub use data::{MAX_FILE_SIZE, PAGE_SIZE};
use dir::Dir;
pub use error::{FsError, ALL_ERRORS};
pub use initramfs::{populate_from_cpio, PopulateError};
use path::Last;
pub use path::MAX_SYMLINK_HOPS;

/// An inode number (never reused within one file system).
pub type Ino = u64;

/// The root directory's inode number.
pub const ROOT_INO: Ino = 1;

/// The size a directory reports per entry (`.` and `..` included), as tmpfs does.
pub const DIR_ENTRY_SIZE: u64 = 20;

/// The type of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A directory.
    Directory,
    /// A regular file.
    Regular,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

impl FileType {
    /// The `S_IF*` bits of the type.
    pub const fn mode_bits(self) -> u32 {
        match self {
            FileType::Directory => S_IFDIR,
            FileType::Regular => S_IFREG,
            FileType::Symlink => S_IFLNK,
            FileType::CharDevice => S_IFCHR,
            FileType::BlockDevice => S_IFBLK,
        }
    }

    /// The `DT_*` of the type, for `getdents64`.
    pub const fn d_type(self) -> u8 {
        match self {
            FileType::Directory => DT_DIR,
            FileType::Regular => DT_REG,
            FileType::Symlink => DT_LNK,
            FileType::CharDevice => DT_CHR,
            FileType::BlockDevice => DT_BLK,
        }
    }
}

/// Who changes the file system and when: the owner of inodes it creates, and the time (in
/// nanoseconds since the epoch) stamped on what it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    /// Owner of created inodes.
    pub uid: u32,
    /// Group of created inodes.
    pub gid: u32,
    /// The current time, nanoseconds since the epoch.
    pub now: i64,
}

impl Ctx {
    /// Root at time `now`.
    pub const fn root(now: i64) -> Self {
        Ctx {
            uid: 0,
            gid: 0,
            now,
        }
    }
}

/// How `utimens` sets one time stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// Leave it (`UTIME_OMIT`).
    Omit,
    /// The caller's time (`UTIME_NOW`).
    Now,
    /// This time, nanoseconds since the epoch.
    At(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Directory(Dir),
    Regular(data::FileData),
    Symlink(Vec<u8>),
    /// A device special file (`block`: a block device, else a character device).
    Device {
        block: bool,
        major: u32,
        minor: u32,
    },
}

/// An inode: its attributes and contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    ino: Ino,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    atime: i64,
    mtime: i64,
    ctime: i64,
    open: u32,
    node: Node,
}

impl Inode {
    /// The inode number.
    pub fn ino(&self) -> Ino {
        self.ino
    }

    /// The type.
    pub fn file_type(&self) -> FileType {
        match self.node {
            Node::Directory(_) => FileType::Directory,
            Node::Regular(_) => FileType::Regular,
            Node::Symlink(_) => FileType::Symlink,
            Node::Device { block: false, .. } => FileType::CharDevice,
            Node::Device { block: true, .. } => FileType::BlockDevice,
        }
    }

    /// `st_mode`: type bits and permissions.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// Owner.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Group.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Link count.
    pub fn nlink(&self) -> u32 {
        self.nlink
    }

    /// How many times the inode is [retained](FileSystem::retain).
    pub fn open_count(&self) -> u32 {
        self.open
    }

    /// `st_size`: bytes of a file, length of a symlink's target, a nominal size for a
    /// directory ([`DIR_ENTRY_SIZE`] per entry), 0 for a device.
    pub fn size(&self) -> u64 {
        match &self.node {
            Node::Directory(d) => (d.len() as u64 + 2) * DIR_ENTRY_SIZE,
            Node::Regular(f) => f.size(),
            Node::Symlink(t) => t.len() as u64,
            Node::Device { .. } => 0,
        }
    }

    /// Last access, nanoseconds since the epoch (reads do not update it: `noatime`).
    pub fn atime(&self) -> i64 {
        self.atime
    }

    /// Last change of the contents.
    pub fn mtime(&self) -> i64 {
        self.mtime
    }

    /// Last change of the inode.
    pub fn ctime(&self) -> i64 {
        self.ctime
    }

    /// A device's (major, minor).
    pub fn rdev(&self) -> Option<(u32, u32)> {
        match self.node {
            Node::Device { major, minor, .. } => Some((major, minor)),
            _ => None,
        }
    }

    /// A symlink's target.
    pub fn symlink_target(&self) -> Option<&[u8]> {
        match &self.node {
            Node::Symlink(t) => Some(t),
            _ => None,
        }
    }

    /// Page `index` of a regular file, `None` for a hole (zeros) or another type: what a
    /// mapping of the file would show.
    pub fn page(&self, index: u64) -> Option<&[u8]> {
        match &self.node {
            Node::Regular(f) => f.page(index),
            _ => None,
        }
    }

    fn dir(&self) -> Result<&Dir, FsError> {
        match &self.node {
            Node::Directory(d) => Ok(d),
            _ => Err(FsError::NotADirectory),
        }
    }

    fn dir_mut(&mut self) -> Result<&mut Dir, FsError> {
        match &mut self.node {
            Node::Directory(d) => Ok(d),
            _ => Err(FsError::NotADirectory),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.node, Node::Directory(_))
    }
}

/// One `readdir` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// The name.
    pub name: &'a [u8],
    /// Its inode.
    pub ino: Ino,
    /// Its `DT_*` type.
    pub d_type: u8,
    /// The offset to resume from after this record (its `d_off`).
    pub next_offset: u64,
}

/// The file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSystem {
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    dev: u64,
}

/// A path cut before its last component and walked to the parent directory.
struct Parent<'p> {
    dir: Ino,
    last: Last<'p>,
    trailing_slash: bool,
}

impl FileSystem {
    /// An empty file system: a root directory (mode 0755) owned by `ctx`, stamped `ctx.now`.
    pub fn new(ctx: Ctx) -> Self {
        let mut fs = FileSystem {
            inodes: BTreeMap::new(),
            next_ino: ROOT_INO,
            dev: abi::makedev(0, 1),
        };
        let root = fs.alloc(Node::Directory(Dir::new(ROOT_INO)), S_IFDIR | 0o755, ctx);
        debug_assert_eq!(root, ROOT_INO);
        // Its `.` and its `..` (itself): the root has no name in a parent.
        if let Some(inode) = fs.inodes.get_mut(&root) {
            inode.nlink = 2;
        }
        fs
    }

    /// The root directory.
    pub fn root(&self) -> Ino {
        ROOT_INO
    }

    /// `st_dev` of every inode.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// Sets `st_dev` (the server's device number for this file system).
    pub fn set_dev(&mut self, dev: u64) {
        self.dev = dev;
    }

    /// Number of live inodes.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// The inode `ino`.
    pub fn inode(&self, ino: Ino) -> Result<&Inode, FsError> {
        self.inodes.get(&ino).ok_or(FsError::Stale)
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode, FsError> {
        self.inodes.get_mut(&ino).ok_or(FsError::Stale)
    }

    fn dir(&self, ino: Ino) -> Result<&Dir, FsError> {
        self.inode(ino)?.dir()
    }

    fn alloc(&mut self, node: Node, mode: u32, ctx: Ctx) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        let dir_self_link = u32::from(matches!(node, Node::Directory(_)));
        self.inodes.insert(
            ino,
            Inode {
                ino,
                mode,
                uid: ctx.uid,
                gid: ctx.gid,
                nlink: dir_self_link,
                atime: ctx.now,
                mtime: ctx.now,
                ctime: ctx.now,
                open: 0,
                node,
            },
        );
        ino
    }

    /// Frees `ino` if nothing names or holds it.
    fn maybe_free(&mut self, ino: Ino) {
        let dead = self
            .inodes
            .get(&ino)
            .is_some_and(|i| i.open == 0 && i.nlink == 0);
        if dead {
            self.inodes.remove(&ino);
        }
    }

    /// Whether `dir` has been removed (a directory that is open but has no name).
    fn is_removed_dir(&self, dir: Ino) -> Result<bool, FsError> {
        Ok(self.inode(dir)?.nlink == 0)
    }

    /// Adds the name `name` for `child` in `dir`, counting the links.
    fn attach(&mut self, dir: Ino, name: &[u8], child: Ino, ctx: Ctx) -> Result<(), FsError> {
        let child_inode = self.inode(child)?;
        let child_is_dir = child_inode.is_dir();
        let d_type = child_inode.file_type().d_type();
        if child_inode.nlink == u32::MAX || (child_is_dir && self.inode(dir)?.nlink == u32::MAX) {
            return Err(FsError::TooManyLinks);
        }
        let parent = self.inode_mut(dir)?;
        parent.dir_mut()?.insert(name, child, d_type);
        parent.mtime = ctx.now;
        parent.ctime = ctx.now;
        if child_is_dir {
            parent.nlink += 1;
        }
        let child_inode = self.inode_mut(child)?;
        child_inode.nlink += 1;
        child_inode.ctime = ctx.now;
        if let Node::Directory(d) = &mut child_inode.node {
            d.parent = dir;
        }
        Ok(())
    }

    /// Attaches a just-allocated inode, or frees it if that fails.
    fn attach_new(&mut self, dir: Ino, name: &[u8], child: Ino, ctx: Ctx) -> Result<Ino, FsError> {
        self.attach(dir, name, child, ctx).inspect_err(|_| {
            self.inodes.remove(&child);
        })?;
        Ok(child)
    }

    /// Removes the name `name` from `dir`, counting the links; returns the inode it named
    /// (not freed: the caller decides).
    fn detach(&mut self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Ino, FsError> {
        let parent = self.inode_mut(dir)?;
        let slot = parent.dir_mut()?.remove(name).ok_or(FsError::NotFound)?;
        parent.mtime = ctx.now;
        parent.ctime = ctx.now;
        if slot.d_type == DT_DIR {
            parent.nlink -= 1;
        }
        let child = self.inode_mut(slot.ino)?;
        child.nlink -= 1;
        child.ctime = ctx.now;
        Ok(slot.ino)
    }

    /// Whether `a` is `b` or one of `b`'s ancestors.
    fn is_ancestor_or_self(&self, a: Ino, mut b: Ino) -> bool {
        // Bounded: a path to the root is at most as long as there are inodes.
        for _ in 0..=self.inodes.len() {
            if a == b {
                return true;
            }
            match self.dir(b) {
                Ok(d) if d.parent != b => b = d.parent,
                _ => return false,
            }
        }
        false
    }

    /// Resolves `path` from the directory `cwd`; a final symlink is followed if `follow`.
    pub fn lookup(&self, cwd: Ino, path: &[u8], follow: bool) -> Result<Ino, FsError> {
        self.walk(cwd, path, follow, &mut 0)
    }

    /// Looks `name` (one component, `.` and `..` included) up in the directory `dir`,
    /// following nothing.
    pub fn lookup_in(&self, dir: Ino, name: &[u8]) -> Result<Ino, FsError> {
        let d = self.dir(dir)?;
        match name {
            b"." => Ok(dir),
            b".." if self.is_removed_dir(dir)? => Err(FsError::NotFound),
            b".." => Ok(d.parent),
            _ => {
                path::check_name(name)?;
                d.get(name).map(|s| s.ino).ok_or(FsError::NotFound)
            }
        }
    }

    fn walk(&self, cwd: Ino, path: &[u8], follow: bool, hops: &mut u32) -> Result<Ino, FsError> {
        path::check(path)?;
        let mut cur = if path[0] == b'/' { ROOT_INO } else { cwd };
        self.dir(cur)?;
        let trailing_slash = path.ends_with(b"/");
        let mut components = path::components(path).peekable();
        while let Some(name) = components.next() {
            let last = components.peek().is_none();
            let mut next = self.lookup_in(cur, name)?;
            if let Some(target) = self.inode(next)?.symlink_target() {
                if !last || follow || trailing_slash {
                    *hops += 1;
                    if *hops > MAX_SYMLINK_HOPS {
                        return Err(FsError::Loop);
                    }
                    next = self.walk(cur, target, true, hops)?;
                }
            }
            if (!last || trailing_slash) && !self.inode(next)?.is_dir() {
                return Err(FsError::NotADirectory);
            }
            cur = next;
        }
        Ok(cur)
    }

    fn walk_parent<'p>(
        &self,
        cwd: Ino,
        path: &'p [u8],
        hops: &mut u32,
    ) -> Result<Parent<'p>, FsError> {
        let split = path::split_last(path)?;
        let dir = match split.dir {
            None => cwd,
            Some(dir_path) => self.walk(cwd, dir_path, true, hops)?,
        };
        self.dir(dir)?;
        Ok(Parent {
            dir,
            last: split.last,
            trailing_slash: split.trailing_slash,
        })
    }

    /// The parent and free name for a new inode at `path`, or why there is none.
    fn new_name<'p>(&self, cwd: Ino, path: &'p [u8]) -> Result<(Ino, &'p [u8]), FsError> {
        let p = self.walk_parent(cwd, path, &mut 0)?;
        let Last::Normal(name) = p.last else {
            return Err(FsError::Exists);
        };
        if self.dir(p.dir)?.get(name).is_some() {
            return Err(FsError::Exists);
        }
        if p.trailing_slash || self.is_removed_dir(p.dir)? {
            return Err(FsError::NotFound);
        }
        Ok((p.dir, name))
    }

    /// `open(O_CREAT)`: the regular file at `path`, created (with `perm & 07777`) if missing.
    /// Returns it and whether it was created. With `exclusive` (`O_EXCL`) an existing name,
    /// even a symlink, is `EEXIST`; otherwise a final symlink is followed, and a dangling one
    /// creates its target. An existing directory is `EISDIR`.
    pub fn create(
        &mut self,
        cwd: Ino,
        path: &[u8],
        perm: u32,
        exclusive: bool,
        ctx: Ctx,
    ) -> Result<(Ino, bool), FsError> {
        let mut hops = 0;
        let mut start = cwd;
        let mut path: Vec<u8> = path.to_vec();
        loop {
            let p = self.walk_parent(start, &path, &mut hops)?;
            let Last::Normal(name) = p.last else {
                return Err(FsError::IsADirectory);
            };
            if p.trailing_slash {
                return Err(FsError::IsADirectory);
            }
            let Some(slot) = self.dir(p.dir)?.get(name) else {
                if self.is_removed_dir(p.dir)? {
                    return Err(FsError::NotFound);
                }
                let ino = self.alloc(
                    Node::Regular(data::FileData::default()),
                    S_IFREG | (perm & S_IALLUGO),
                    ctx,
                );
                return Ok((self.attach_new(p.dir, name, ino, ctx)?, true));
            };
            if exclusive {
                return Err(FsError::Exists);
            }
            let inode = self.inode(slot.ino)?;
            if let Some(target) = inode.symlink_target() {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(FsError::Loop);
                }
                let target = target.to_vec();
                start = p.dir;
                path = target;
                continue;
            }
            if inode.is_dir() {
                return Err(FsError::IsADirectory);
            }
            return Ok((slot.ino, false));
        }
    }

    /// `mkdir`: a new directory at `path` with `perm & 07777`.
    pub fn mkdir(&mut self, cwd: Ino, path: &[u8], perm: u32, ctx: Ctx) -> Result<Ino, FsError> {
        let p = self.walk_parent(cwd, path, &mut 0)?;
        let Last::Normal(name) = p.last else {
            return Err(FsError::Exists);
        };
        if self.dir(p.dir)?.get(name).is_some() {
            return Err(FsError::Exists);
        }
        if self.is_removed_dir(p.dir)? {
            return Err(FsError::NotFound);
        }
        let ino = self.alloc(
            Node::Directory(Dir::new(p.dir)),
            S_IFDIR | (perm & S_IALLUGO),
            ctx,
        );
        self.attach_new(p.dir, name, ino, ctx)
    }

    /// `mknod(S_IFCHR)` or `mknod(S_IFBLK)`: a device `major:minor` of type `kind` (a
    /// character or block device, else `Invalid`) at `path` with `perm & 07777`.
    pub fn mknod_device(
        &mut self,
        cwd: Ino,
        path: &[u8],
        kind: FileType,
        perm: u32,
        (major, minor): (u32, u32),
        ctx: Ctx,
    ) -> Result<Ino, FsError> {
        let block = match kind {
            FileType::CharDevice => false,
            FileType::BlockDevice => true,
            _ => return Err(FsError::Invalid),
        };
        let (dir, name) = self.new_name(cwd, path)?;
        let ino = self.alloc(
            Node::Device {
                block,
                major,
                minor,
            },
            kind.mode_bits() | (perm & S_IALLUGO),
            ctx,
        );
        self.attach_new(dir, name, ino, ctx)
    }

    /// `symlink(target, path)`: a symlink (mode 0777) holding `target`, which is not checked
    /// beyond being non-empty and shorter than `PATH_MAX`.
    pub fn symlink(
        &mut self,
        target: &[u8],
        cwd: Ino,
        path: &[u8],
        ctx: Ctx,
    ) -> Result<Ino, FsError> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() >= PATH_MAX {
            return Err(FsError::NameTooLong);
        }
        let (dir, name) = self.new_name(cwd, path)?;
        let ino = self.alloc(Node::Symlink(target.to_vec()), S_IFLNK | 0o777, ctx);
        self.attach_new(dir, name, ino, ctx)
    }

    /// `linkat`: a new name `new` for the inode at `old` (a final symlink of `old` is followed
    /// if `follow`, as with `AT_SYMLINK_FOLLOW`). Directories cannot be linked (`EPERM`).
    pub fn link(
        &mut self,
        old_cwd: Ino,
        old: &[u8],
        follow: bool,
        new_cwd: Ino,
        new: &[u8],
        ctx: Ctx,
    ) -> Result<(), FsError> {
        let ino = self.lookup(old_cwd, old, follow)?;
        if self.inode(ino)?.is_dir() {
            return Err(FsError::NotPermitted);
        }
        let (dir, name) = self.new_name(new_cwd, new)?;
        self.attach(dir, name, ino, ctx)
    }

    /// `unlink`: removes the name of a non-directory; the inode goes with its last name
    /// unless it is retained.
    pub fn unlink(&mut self, cwd: Ino, path: &[u8], ctx: Ctx) -> Result<(), FsError> {
        let p = self.walk_parent(cwd, path, &mut 0)?;
        let Last::Normal(name) = p.last else {
            return Err(FsError::IsADirectory);
        };
        let slot = self.dir(p.dir)?.get(name).ok_or(FsError::NotFound)?;
        if slot.d_type == DT_DIR {
            return Err(FsError::IsADirectory);
        }
        if p.trailing_slash {
            return Err(FsError::NotADirectory);
        }
        let ino = self.detach(p.dir, name, ctx)?;
        self.maybe_free(ino);
        Ok(())
    }

    /// `rmdir`: removes an empty directory.
    pub fn rmdir(&mut self, cwd: Ino, path: &[u8], ctx: Ctx) -> Result<(), FsError> {
        let p = self.walk_parent(cwd, path, &mut 0)?;
        let name = match p.last {
            Last::Normal(name) => name,
            Last::Dot => return Err(FsError::Invalid),
            Last::DotDot => return Err(FsError::NotEmpty),
            Last::Root => return Err(FsError::Busy),
        };
        let slot = self.dir(p.dir)?.get(name).ok_or(FsError::NotFound)?;
        if !self.dir(slot.ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        let ino = self.detach(p.dir, name, ctx)?;
        // Its `.` goes too.
        self.inode_mut(ino)?.nlink -= 1;
        self.maybe_free(ino);
        Ok(())
    }

    /// `renameat2` with `flags` 0 or `RENAME_NOREPLACE`: moves the name `old` to `new`,
    /// replacing a non-directory by a non-directory or an empty directory by a directory.
    /// Moving a directory into its own subtree is `EINVAL`; renaming a name onto another name
    /// of the same inode does nothing.
    pub fn rename(
        &mut self,
        old_cwd: Ino,
        old: &[u8],
        new_cwd: Ino,
        new: &[u8],
        flags: u32,
        ctx: Ctx,
    ) -> Result<(), FsError> {
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(FsError::Invalid);
        }
        let op = self.walk_parent(old_cwd, old, &mut 0)?;
        let np = self.walk_parent(new_cwd, new, &mut 0)?;
        let (Last::Normal(old_name), Last::Normal(new_name)) = (op.last, np.last) else {
            return Err(FsError::Busy);
        };
        // The checks in Linux's order: lookups, NOREPLACE, trailing slashes, loops, types.
        let moved = self.dir(op.dir)?.get(old_name).ok_or(FsError::NotFound)?;
        let moved_is_dir = moved.d_type == DT_DIR;
        let target = self.dir(np.dir)?.get(new_name);
        if target.is_some() && flags & RENAME_NOREPLACE != 0 {
            return Err(FsError::Exists);
        }
        if !moved_is_dir && (op.trailing_slash || np.trailing_slash) {
            return Err(FsError::NotADirectory);
        }
        if op.dir != np.dir {
            if moved_is_dir && self.is_ancestor_or_self(moved.ino, np.dir) {
                return Err(FsError::Invalid);
            }
            if let Some(t) = target {
                if t.d_type == DT_DIR && self.is_ancestor_or_self(t.ino, op.dir) {
                    return Err(FsError::NotEmpty);
                }
            }
        }
        if let Some(t) = target {
            if t.ino == moved.ino {
                return Ok(());
            }
            match (moved_is_dir, t.d_type == DT_DIR) {
                (true, false) => return Err(FsError::NotADirectory),
                (false, true) => return Err(FsError::IsADirectory),
                (true, true) if !self.dir(t.ino)?.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
        } else if self.is_removed_dir(np.dir)? {
            return Err(FsError::NotFound);
        }
        if let Some(t) = target {
            let replaced = self.detach(np.dir, new_name, ctx)?;
            if t.d_type == DT_DIR {
                self.inode_mut(replaced)?.nlink -= 1;
            }
            self.maybe_free(replaced);
        }
        let ino = self.detach(op.dir, old_name, ctx)?;
        self.attach(np.dir, new_name, ino, ctx)
    }

    /// `readlink`: the target of the symlink at `path` (`EINVAL` for another type).
    pub fn readlink(&self, cwd: Ino, path: &[u8]) -> Result<&[u8], FsError> {
        let ino = self.lookup(cwd, path, false)?;
        self.inode(ino)?.symlink_target().ok_or(FsError::Invalid)
    }

    /// Where a regular file's bytes lie, contiguously, in the uncompressed archive
    /// [`populate_from_cpio`] unpacked it from, while it is unchanged since: a client that can
    /// see the archive may read them there. `None` once written or truncated, for files from
    /// a compressed archive, and for every other inode.
    pub fn archive_offset(&self, ino: Ino) -> Option<u64> {
        match &self.inode(ino).ok()?.node {
            Node::Regular(f) => f.origin(),
            _ => None,
        }
    }

    /// Records that `ino`'s bytes are at `offset` in the archive (see
    /// [`archive_offset`](FileSystem::archive_offset)).
    fn set_archive_offset(&mut self, ino: Ino, offset: u64) -> Result<(), FsError> {
        match &mut self.inode_mut(ino)?.node {
            Node::Regular(f) => {
                f.set_origin(offset);
                Ok(())
            }
            _ => Err(FsError::Invalid),
        }
    }

    /// Reads from a regular file at `offset`; returns the bytes read (0 at the end).
    pub fn read_at(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        match &self.inode(ino)?.node {
            Node::Regular(f) => Ok(f.read_at(offset, buf)),
            Node::Directory(_) => Err(FsError::IsADirectory),
            _ => Err(FsError::Invalid),
        }
    }

    /// Writes to a regular file at `offset`, extending it (with zeros up to `offset` if it
    /// lies past the end); returns the bytes written.
    pub fn write_at(
        &mut self,
        ino: Ino,
        offset: u64,
        data: &[u8],
        ctx: Ctx,
    ) -> Result<usize, FsError> {
        let inode = self.inode_mut(ino)?;
        let n = match &mut inode.node {
            Node::Regular(f) => f.write_at(offset, data)?,
            Node::Directory(_) => return Err(FsError::IsADirectory),
            _ => return Err(FsError::Invalid),
        };
        if n > 0 {
            inode.mtime = ctx.now;
            inode.ctime = ctx.now;
        }
        Ok(n)
    }

    /// Sets a regular file's size (cut, or extended with zeros).
    pub fn truncate(&mut self, ino: Ino, len: u64, ctx: Ctx) -> Result<(), FsError> {
        let inode = self.inode_mut(ino)?;
        match &mut inode.node {
            Node::Regular(f) => f.truncate(len)?,
            Node::Directory(_) => return Err(FsError::IsADirectory),
            _ => return Err(FsError::Invalid),
        }
        inode.mtime = ctx.now;
        inode.ctime = ctx.now;
        Ok(())
    }

    /// The entries of directory `dir` from `offset` (0: the start; else a `next_offset` of an
    /// earlier record): `.`, `..`, then the names in the order they were added. A removed
    /// directory has none.
    pub fn readdir(
        &self,
        dir: Ino,
        offset: u64,
    ) -> Result<impl Iterator<Item = DirEntry<'_>> + '_, FsError> {
        let d = self.dir(dir)?;
        let removed = self.is_removed_dir(dir)?;
        let dots = [(&b"."[..], dir), (&b".."[..], d.parent)]
            .into_iter()
            .enumerate()
            .filter(move |&(pos, _)| !removed && pos as u64 >= offset)
            .map(|(pos, (name, ino))| DirEntry {
                name,
                ino,
                d_type: DT_DIR,
                next_offset: pos as u64 + 1,
            });
        let names = d.starting_at(offset).map(|(name, slot)| DirEntry {
            name,
            ino: slot.ino,
            d_type: slot.d_type,
            next_offset: slot.position + 1,
        });
        Ok(dots.chain(names))
    }

    /// `getdents64`: packs the entries of `dir` from `offset` into `buf` as `linux_dirent64`
    /// records. Returns the bytes used (0 at the end) and the offset to resume from.
    /// `EINVAL` if not even the first record fits.
    pub fn getdents64(
        &self,
        dir: Ino,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(usize, u64), FsError> {
        let mut writer = Dirent64Writer::new(buf);
        let mut next = offset;
        for entry in self.readdir(dir, offset)? {
            match writer.push(
                entry.ino,
                entry.next_offset as i64,
                entry.d_type,
                entry.name,
            ) {
                Ok(()) => next = entry.next_offset,
                Err(DirentError::Full) if !writer.is_empty() => break,
                Err(_) => return Err(FsError::Invalid),
            }
        }
        Ok((writer.len(), next))
    }

    /// `stat` of an inode.
    pub fn stat(&self, ino: Ino) -> Result<Stat, FsError> {
        let inode = self.inode(ino)?;
        let ts = Timespec::from_nanos;
        let (atime, mtime, ctime) = (ts(inode.atime), ts(inode.mtime), ts(inode.ctime));
        let blocks = match &inode.node {
            Node::Regular(f) => f.pages() as i64 * (PAGE_SIZE as i64 / 512),
            _ => 0,
        };
        Ok(Stat {
            st_dev: self.dev,
            st_ino: ino,
            st_nlink: u64::from(inode.nlink),
            st_mode: inode.mode,
            st_uid: inode.uid,
            st_gid: inode.gid,
            st_rdev: inode.rdev().map_or(0, |(ma, mi)| abi::makedev(ma, mi)),
            st_size: inode.size() as i64,
            st_blksize: PAGE_SIZE as i64,
            st_blocks: blocks,
            st_atime: atime.tv_sec,
            st_atime_nsec: atime.tv_nsec as u64,
            st_mtime: mtime.tv_sec,
            st_mtime_nsec: mtime.tv_nsec as u64,
            st_ctime: ctime.tv_sec,
            st_ctime_nsec: ctime.tv_nsec as u64,
            ..Stat::default()
        })
    }

    /// `chmod`: sets the permission bits (`mode & 07777`), keeping the type.
    pub fn chmod(&mut self, ino: Ino, mode: u32, ctx: Ctx) -> Result<(), FsError> {
        let inode = self.inode_mut(ino)?;
        inode.mode = (inode.mode & S_IFMT) | (mode & S_IALLUGO);
        inode.ctime = ctx.now;
        Ok(())
    }

    /// `chown`: sets the owner and/or group (`None` keeps one, as `-1` does).
    pub fn chown(
        &mut self,
        ino: Ino,
        uid: Option<u32>,
        gid: Option<u32>,
        ctx: Ctx,
    ) -> Result<(), FsError> {
        let inode = self.inode_mut(ino)?;
        if let Some(uid) = uid {
            inode.uid = uid;
        }
        if let Some(gid) = gid {
            inode.gid = gid;
        }
        inode.ctime = ctx.now;
        Ok(())
    }

    /// `utimensat`: sets the access and modification times; the change time becomes `now`
    /// unless both are [`SetTime::Omit`].
    pub fn utimens(
        &mut self,
        ino: Ino,
        atime: SetTime,
        mtime: SetTime,
        ctx: Ctx,
    ) -> Result<(), FsError> {
        let inode = self.inode_mut(ino)?;
        if atime == SetTime::Omit && mtime == SetTime::Omit {
            return Ok(());
        }
        for (field, set) in [(&mut inode.atime, atime), (&mut inode.mtime, mtime)] {
            match set {
                SetTime::Omit => {}
                SetTime::Now => *field = ctx.now,
                SetTime::At(t) => *field = t,
            }
        }
        inode.ctime = ctx.now;
        Ok(())
    }

    /// Holds `ino` alive (an open file): it outlives its last name until [released].
    ///
    /// [released]: FileSystem::release
    pub fn retain(&mut self, ino: Ino) -> Result<(), FsError> {
        let inode = self.inode_mut(ino)?;
        inode.open = inode.open.checked_add(1).ok_or(FsError::TooManyLinks)?;
        Ok(())
    }

    /// Drops one [`retain`](FileSystem::retain); an inode with no name left goes.
    pub fn release(&mut self, ino: Ino) -> Result<(), FsError> {
        let inode = self.inode_mut(ino)?;
        inode.open = inode.open.checked_sub(1).ok_or(FsError::Invalid)?;
        self.maybe_free(ino);
        Ok(())
    }
}
