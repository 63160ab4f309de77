//! Unit tests of the RAM file system, and its structural invariants (shared with the
//! property tests).

extern crate std;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use k42_linux_abi::file::{read_dirent64, S_IFMT};

pub(super) const T0: i64 = 1_700_000_000_000_000_000;

pub(super) fn ctx(now: i64) -> Ctx {
    Ctx {
        uid: 1000,
        gid: 100,
        now,
    }
}

fn fs() -> FileSystem {
    FileSystem::new(Ctx::root(T0))
}

fn names(fs: &FileSystem, dir: Ino) -> Vec<String> {
    fs.readdir(dir, 0)
        .unwrap()
        .map(|e| String::from_utf8(e.name.to_vec()).unwrap())
        .collect()
}

fn contents(fs: &FileSystem, ino: Ino) -> Vec<u8> {
    let size = fs.inode(ino).unwrap().size() as usize;
    let mut buf = vec![0; size];
    assert_eq!(fs.read_at(ino, 0, &mut buf).unwrap(), size);
    buf
}

/// Checks everything the file system promises about itself; returns what is wrong.
pub(super) fn check_invariants(fs: &FileSystem) -> Result<(), String> {
    let mut names_of: BTreeMap<Ino, u32> = BTreeMap::new();
    let mut subdirs: BTreeMap<Ino, u32> = BTreeMap::new();
    for (&ino, inode) in &fs.inodes {
        if inode.ino != ino {
            return Err(format!("inode {ino} says it is {}", inode.ino));
        }
        if inode.mode & S_IFMT != inode.file_type().mode_bits() {
            return Err(format!("inode {ino}: mode {:o} vs its type", inode.mode));
        }
        if let Node::Directory(d) = &inode.node {
            for (name, slot) in d.iter() {
                let child = fs
                    .inodes
                    .get(&slot.ino)
                    .ok_or_else(|| format!("{ino}/{name:?} names a freed inode"))?;
                if slot.d_type != child.file_type().d_type() {
                    return Err(format!("{ino}/{name:?}: d_type {}", slot.d_type));
                }
                if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
                    return Err(format!("{ino}: bad name {name:?}"));
                }
                *names_of.entry(slot.ino).or_default() += 1;
                if let Node::Directory(cd) = &child.node {
                    *subdirs.entry(ino).or_default() += 1;
                    if cd.parent != ino {
                        return Err(format!(
                            "dir {} has parent {}, named in {ino}",
                            slot.ino, cd.parent
                        ));
                    }
                }
            }
            let listed: Vec<&[u8]> = fs.readdir(ino, 0).unwrap().map(|e| e.name).collect();
            let mut expected: Vec<&[u8]> = d.iter().map(|(n, _)| n).collect();
            if inode.nlink > 0 {
                expected.push(b".");
                expected.push(b"..");
            }
            let (mut a, mut b) = (listed.clone(), expected);
            a.sort();
            b.sort();
            if a != b {
                return Err(format!("readdir of {ino}: {listed:?}"));
            }
        }
    }
    for (&ino, inode) in &fs.inodes {
        let names = names_of.get(&ino).copied().unwrap_or(0);
        let expected = match inode.node {
            Node::Directory(_) if ino == ROOT_INO => 2 + subdirs.get(&ino).copied().unwrap_or(0),
            Node::Directory(_) if names == 0 => 0,
            Node::Directory(_) => 1 + names + subdirs.get(&ino).copied().unwrap_or(0),
            _ => names,
        };
        if inode.nlink != expected {
            return Err(format!(
                "inode {ino}: nlink {} but {expected} expected",
                inode.nlink
            ));
        }
        if ino != ROOT_INO && names > 1 && inode.is_dir() {
            return Err(format!("directory {ino} has {names} names"));
        }
        if inode.nlink == 0 && inode.open == 0 {
            return Err(format!(
                "inode {ino} has no name and is not open, yet lives"
            ));
        }
    }
    // Every named directory reaches the root through its parents.
    for (&ino, inode) in &fs.inodes {
        if inode.is_dir() && inode.nlink > 0 && !fs.is_ancestor_or_self(ROOT_INO, ino) {
            return Err(format!("directory {ino} does not reach the root"));
        }
    }
    Ok(())
}

#[test]
fn a_new_file_system_is_a_lone_root() {
    let fs = fs();
    let root = fs.inode(fs.root()).unwrap();
    assert_eq!(root.file_type(), FileType::Directory);
    assert_eq!((root.nlink(), root.mode()), (2, S_IFDIR | 0o755));
    assert_eq!(names(&fs, ROOT_INO), [".", ".."]);
    assert_eq!(fs.lookup(ROOT_INO, b"/", true), Ok(ROOT_INO));
    assert_eq!(
        fs.lookup(ROOT_INO, b"/..", true),
        Ok(ROOT_INO),
        ".. of the root is the root"
    );
    assert_eq!(fs.lookup(ROOT_INO, b"", true), Err(FsError::NotFound));
    check_invariants(&fs).unwrap();
}

#[test]
fn path_resolution() {
    let mut fs = fs();
    let c = ctx(T0);
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, c).unwrap();
    let b = fs.mkdir(a, b"b", 0o700, c).unwrap();
    let (f, created) = fs.create(b, b"f", 0o644, false, c).unwrap();
    assert!(created);
    assert_eq!(fs.lookup(ROOT_INO, b"/a/b/f", true), Ok(f));
    assert_eq!(fs.lookup(ROOT_INO, b"a/b/f", true), Ok(f));
    assert_eq!(fs.lookup(b, b"f", true), Ok(f), "relative to a cwd");
    assert_eq!(
        fs.lookup(b, b"/a/b/f", true),
        Ok(f),
        "absolute ignores the cwd"
    );
    assert_eq!(fs.lookup(b, b"../b/./f", true), Ok(f));
    assert_eq!(fs.lookup(b, b"../../../../a", true), Ok(a));
    assert_eq!(
        fs.lookup(ROOT_INO, b"//a///b//f", true),
        Ok(f),
        "repeated slashes"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"a/b/", true),
        Ok(b),
        "trailing slash on a directory"
    );
    assert_eq!(fs.lookup(ROOT_INO, b"a/b/.", true), Ok(b));
    assert_eq!(
        fs.lookup(ROOT_INO, b"a/b/f/", true),
        Err(FsError::NotADirectory)
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"a/b/f/.", true),
        Err(FsError::NotADirectory)
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"a/b/f/x", true),
        Err(FsError::NotADirectory)
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"a/nope/f", true),
        Err(FsError::NotFound)
    );
    assert_eq!(
        fs.lookup(f, b"x", true),
        Err(FsError::NotADirectory),
        "a file as cwd"
    );
    assert_eq!(fs.lookup(999, b"x", true), Err(FsError::Stale));
    assert_eq!(fs.lookup(ROOT_INO, b"a\0b", true), Err(FsError::Invalid));
}

#[test]
fn name_length_limits() {
    let mut fs = fs();
    let c = ctx(T0);
    let long = vec![b'n'; 255];
    fs.mkdir(ROOT_INO, &long, 0o755, c).unwrap();
    let mut too_long = long.clone();
    too_long.push(b'n');
    assert_eq!(
        fs.mkdir(ROOT_INO, &too_long, 0o755, c),
        Err(FsError::NameTooLong)
    );
    assert_eq!(
        fs.lookup(ROOT_INO, &too_long, true),
        Err(FsError::NameTooLong)
    );
    // A missing directory is reported before a long name after it, as Linux walks.
    let mut p = b"missing/".to_vec();
    p.extend_from_slice(&too_long);
    assert_eq!(fs.lookup(ROOT_INO, &p, true), Err(FsError::NotFound));
    // The whole path: 4095 bytes is fine, 4096 is not.
    let mut path = Vec::new();
    while path.len() + 2 <= 4095 {
        path.extend_from_slice(b"./");
    }
    path.truncate(4094);
    path.push(b'.');
    assert_eq!(path.len(), 4095);
    assert_eq!(fs.lookup(ROOT_INO, &path, true), Ok(ROOT_INO));
    path.push(b'/');
    assert_eq!(fs.lookup(ROOT_INO, &path, true), Err(FsError::NameTooLong));
}

#[test]
fn symlinks_are_followed_with_a_limit() {
    let mut fs = fs();
    let c = ctx(T0);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
    let (f, _) = fs.create(d, b"f", 0o644, false, c).unwrap();
    let abs = fs.symlink(b"/d/f", ROOT_INO, b"abs", c).unwrap();
    fs.symlink(b"f", d, b"rel", c).unwrap();
    fs.symlink(b"d", ROOT_INO, b"dirlink", c).unwrap();
    fs.symlink(b"nowhere", ROOT_INO, b"dangling", c).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"abs", true), Ok(f));
    assert_eq!(
        fs.lookup(ROOT_INO, b"abs", false),
        Ok(abs),
        "final no-follow"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"d/rel", true),
        Ok(f),
        "relative to the link's directory"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"dirlink/rel", false),
        Ok(fs.lookup(ROOT_INO, b"d/rel", false).unwrap())
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"dirlink/", false),
        Ok(d),
        "a trailing slash follows"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"dangling", true),
        Err(FsError::NotFound)
    );
    assert!(fs.lookup(ROOT_INO, b"dangling", false).is_ok());
    assert_eq!(fs.readlink(ROOT_INO, b"abs"), Ok(&b"/d/f"[..]));
    assert_eq!(fs.readlink(ROOT_INO, b"d/f"), Err(FsError::Invalid));
    assert_eq!(
        fs.symlink(b"", ROOT_INO, b"empty", c),
        Err(FsError::NotFound)
    );
    // A chain of 40 links resolves, 41 is ELOOP.
    let mut prev = b"d/f".to_vec();
    for i in 0..41 {
        let name = format!("l{i}");
        fs.symlink(&prev, ROOT_INO, name.as_bytes(), c).unwrap();
        prev = name.into_bytes();
    }
    assert_eq!(fs.lookup(ROOT_INO, b"l39", true), Ok(f));
    assert_eq!(fs.lookup(ROOT_INO, b"l40", true), Err(FsError::Loop));
    assert!(fs.lookup(ROOT_INO, b"l40", false).is_ok());
    // Loops.
    fs.symlink(b"self", ROOT_INO, b"self", c).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"self", true), Err(FsError::Loop));
    assert_eq!(fs.lookup(ROOT_INO, b"self/x", false), Err(FsError::Loop));
    fs.symlink(b"pong", ROOT_INO, b"ping", c).unwrap();
    fs.symlink(b"ping", ROOT_INO, b"pong", c).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"ping", true), Err(FsError::Loop));
    check_invariants(&fs).unwrap();
}

#[test]
fn create_follows_o_creat_and_o_excl() {
    let mut fs = fs();
    let c = ctx(T0);
    let (f, created) = fs.create(ROOT_INO, b"f", 0o100644, false, c).unwrap();
    assert!(created);
    let inode = fs.inode(f).unwrap();
    assert_eq!(
        (inode.mode(), inode.uid(), inode.gid(), inode.nlink()),
        (S_IFREG | 0o644, 1000, 100, 1)
    );
    assert_eq!(fs.create(ROOT_INO, b"f", 0o600, false, c), Ok((f, false)));
    assert_eq!(
        fs.create(ROOT_INO, b"f", 0o600, true, c),
        Err(FsError::Exists)
    );
    assert_eq!(
        fs.inode(f).unwrap().mode(),
        S_IFREG | 0o644,
        "an existing file keeps its mode"
    );
    fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
    assert_eq!(
        fs.create(ROOT_INO, b"d", 0o644, false, c),
        Err(FsError::IsADirectory)
    );
    assert_eq!(
        fs.create(ROOT_INO, b"new/", 0o644, false, c),
        Err(FsError::IsADirectory)
    );
    assert_eq!(
        fs.create(ROOT_INO, b".", 0o644, false, c),
        Err(FsError::IsADirectory)
    );
    assert_eq!(
        fs.create(ROOT_INO, b"/", 0o644, false, c),
        Err(FsError::IsADirectory)
    );
    assert_eq!(
        fs.create(ROOT_INO, b"nodir/x", 0o644, false, c),
        Err(FsError::NotFound)
    );
    assert_eq!(
        fs.create(ROOT_INO, b"f/x", 0o644, false, c),
        Err(FsError::NotADirectory)
    );
    // Through a symlink: an existing target is opened, a dangling one created.
    fs.symlink(b"f", ROOT_INO, b"to-f", c).unwrap();
    assert_eq!(
        fs.create(ROOT_INO, b"to-f", 0o644, false, c),
        Ok((f, false))
    );
    fs.symlink(b"d/made", ROOT_INO, b"to-new", c).unwrap();
    let (made, created) = fs.create(ROOT_INO, b"to-new", 0o644, false, c).unwrap();
    assert!(created);
    assert_eq!(fs.lookup(ROOT_INO, b"d/made", false), Ok(made));
    assert_eq!(
        fs.create(ROOT_INO, b"to-f", 0o644, true, c),
        Err(FsError::Exists),
        "O_EXCL never follows"
    );
    check_invariants(&fs).unwrap();
}

#[test]
fn mkdir_rmdir_and_link_counts() {
    let mut fs = fs();
    let c = ctx(T0);
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, c).unwrap();
    assert_eq!(fs.inode(ROOT_INO).unwrap().nlink(), 3);
    assert_eq!(fs.inode(a).unwrap().nlink(), 2);
    let b = fs.mkdir(ROOT_INO, b"a/b/", 0o755, c).unwrap();
    assert_eq!(fs.inode(a).unwrap().nlink(), 3);
    fs.create(a, b"file", 0o644, false, c).unwrap();
    assert_eq!(fs.inode(a).unwrap().nlink(), 3, "files do not count");
    assert_eq!(fs.mkdir(ROOT_INO, b"a", 0o755, c), Err(FsError::Exists));
    assert_eq!(
        fs.mkdir(ROOT_INO, b"a/file", 0o755, c),
        Err(FsError::Exists)
    );
    assert_eq!(fs.mkdir(ROOT_INO, b".", 0o755, c), Err(FsError::Exists));
    assert_eq!(fs.mkdir(ROOT_INO, b"/", 0o755, c), Err(FsError::Exists));
    assert_eq!(fs.mkdir(ROOT_INO, b"x/y", 0o755, c), Err(FsError::NotFound));
    assert_eq!(fs.rmdir(ROOT_INO, b"a", c), Err(FsError::NotEmpty));
    assert_eq!(
        fs.rmdir(ROOT_INO, b"a/file", c),
        Err(FsError::NotADirectory)
    );
    assert_eq!(fs.rmdir(ROOT_INO, b"a/nope", c), Err(FsError::NotFound));
    assert_eq!(fs.rmdir(ROOT_INO, b"a/b/.", c), Err(FsError::Invalid));
    assert_eq!(fs.rmdir(ROOT_INO, b"a/b/..", c), Err(FsError::NotEmpty));
    assert_eq!(fs.rmdir(ROOT_INO, b"/", c), Err(FsError::Busy));
    let before = fs.inode_count();
    fs.rmdir(ROOT_INO, b"a/b/", c).unwrap();
    assert_eq!(fs.inode_count(), before - 1);
    assert_eq!(fs.inode(b), Err(FsError::Stale));
    assert_eq!(fs.inode(a).unwrap().nlink(), 2);
    check_invariants(&fs).unwrap();
}

#[test]
fn unlink_and_hard_links() {
    let mut fs = fs();
    let c = ctx(T0);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
    let (f, _) = fs.create(ROOT_INO, b"f", 0o644, false, c).unwrap();
    fs.write_at(f, 0, b"data", c).unwrap();
    fs.link(ROOT_INO, b"f", false, ROOT_INO, b"d/g", c).unwrap();
    assert_eq!(fs.inode(f).unwrap().nlink(), 2);
    assert_eq!(fs.lookup(ROOT_INO, b"d/g", true), Ok(f));
    assert_eq!(
        fs.link(ROOT_INO, b"f", false, ROOT_INO, b"d/g", c),
        Err(FsError::Exists)
    );
    assert_eq!(
        fs.link(ROOT_INO, b"d", false, ROOT_INO, b"d2", c),
        Err(FsError::NotPermitted)
    );
    assert_eq!(
        fs.link(ROOT_INO, b"nope", false, ROOT_INO, b"x", c),
        Err(FsError::NotFound)
    );
    assert_eq!(
        fs.link(ROOT_INO, b"f", false, ROOT_INO, b"x/", c),
        Err(FsError::NotFound)
    );
    // A link to a symlink itself, or (with follow) to its target.
    let s = fs.symlink(b"f", ROOT_INO, b"s", c).unwrap();
    fs.link(ROOT_INO, b"s", false, ROOT_INO, b"s2", c).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"s2", false), Ok(s));
    fs.link(ROOT_INO, b"s", true, ROOT_INO, b"f3", c).unwrap();
    assert_eq!(fs.inode(f).unwrap().nlink(), 3);

    assert_eq!(fs.unlink(ROOT_INO, b"d", c), Err(FsError::IsADirectory));
    assert_eq!(fs.unlink(ROOT_INO, b"/", c), Err(FsError::IsADirectory));
    assert_eq!(fs.unlink(ROOT_INO, b"f/", c), Err(FsError::NotADirectory));
    assert_eq!(fs.unlink(ROOT_INO, b"nope", c), Err(FsError::NotFound));
    fs.unlink(ROOT_INO, b"f", c).unwrap();
    fs.unlink(ROOT_INO, b"f3", c).unwrap();
    assert_eq!(fs.inode(f).unwrap().nlink(), 1);
    assert_eq!(contents(&fs, f), b"data", "still reachable as d/g");
    // Unlinked while open: lives until released.
    fs.retain(f).unwrap();
    fs.unlink(d, b"g", c).unwrap();
    assert_eq!(fs.inode(f).unwrap().nlink(), 0);
    assert_eq!(contents(&fs, f), b"data");
    check_invariants(&fs).unwrap();
    fs.release(f).unwrap();
    assert_eq!(fs.inode(f), Err(FsError::Stale));
    assert_eq!(fs.release(f), Err(FsError::Stale));
    let (g, _) = fs.create(ROOT_INO, b"g", 0o644, false, c).unwrap();
    assert_eq!(
        fs.release(g),
        Err(FsError::Invalid),
        "release without retain"
    );
    check_invariants(&fs).unwrap();
}

#[test]
fn removed_directory_that_is_still_open() {
    let mut fs = fs();
    let c = ctx(T0);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
    fs.retain(d).unwrap();
    fs.rmdir(ROOT_INO, b"d", c).unwrap();
    assert_eq!(fs.inode(d).unwrap().nlink(), 0);
    assert_eq!(
        fs.readdir(d, 0).unwrap().count(),
        0,
        "nothing, not even . and .."
    );
    assert_eq!(fs.create(d, b"x", 0o644, false, c), Err(FsError::NotFound));
    assert_eq!(fs.mkdir(d, b"x", 0o755, c), Err(FsError::NotFound));
    assert_eq!(fs.lookup(d, b"..", true), Err(FsError::NotFound));
    assert_eq!(fs.lookup(d, b".", true), Ok(d));
    check_invariants(&fs).unwrap();
    fs.release(d).unwrap();
    assert_eq!(fs.inode(d), Err(FsError::Stale));
    assert_eq!(fs.inode(ROOT_INO).unwrap().nlink(), 2);
}

#[test]
fn rename_rules() {
    let mut fs = fs();
    let c = ctx(T0);
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, c).unwrap();
    let b = fs.mkdir(ROOT_INO, b"a/b", 0o755, c).unwrap();
    let e = fs.mkdir(ROOT_INO, b"e", 0o755, c).unwrap();
    let (f, _) = fs.create(ROOT_INO, b"f", 0o644, false, c).unwrap();
    let (g, _) = fs.create(ROOT_INO, b"g", 0o644, false, c).unwrap();
    // File over file: g goes.
    fs.rename(ROOT_INO, b"f", ROOT_INO, b"g", 0, c).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"g", true), Ok(f));
    assert_eq!(fs.inode(g), Err(FsError::Stale));
    assert_eq!(fs.lookup(ROOT_INO, b"f", true), Err(FsError::NotFound));
    // Cross-type and self-moves.
    assert_eq!(
        fs.rename(ROOT_INO, b"g", ROOT_INO, b"e", 0, c),
        Err(FsError::IsADirectory)
    );
    assert_eq!(
        fs.rename(ROOT_INO, b"e", ROOT_INO, b"g", 0, c),
        Err(FsError::NotADirectory)
    );
    assert_eq!(
        fs.rename(ROOT_INO, b"a", ROOT_INO, b"a/b/c", 0, c),
        Err(FsError::Invalid)
    );
    assert_eq!(
        fs.rename(ROOT_INO, b"a", ROOT_INO, b"a/x", 0, c),
        Err(FsError::Invalid)
    );
    assert_eq!(
        fs.rename(ROOT_INO, b"a/b", ROOT_INO, b"a", 0, c),
        Err(FsError::NotEmpty)
    );
    assert_eq!(fs.rename(ROOT_INO, b"a", ROOT_INO, b"a", 0, c), Ok(()));
    assert_eq!(
        fs.rename(ROOT_INO, b".", ROOT_INO, b"z", 0, c),
        Err(FsError::Busy)
    );
    assert_eq!(
        fs.rename(ROOT_INO, b"g", ROOT_INO, b"/", 0, c),
        Err(FsError::Busy)
    );
    assert_eq!(
        fs.rename(ROOT_INO, b"g/", ROOT_INO, b"h", 0, c),
        Err(FsError::NotADirectory)
    );
    assert_eq!(
        fs.rename(ROOT_INO, b"nope", ROOT_INO, b"h", 0, c),
        Err(FsError::NotFound)
    );
    assert_eq!(
        fs.rename(ROOT_INO, b"g", ROOT_INO, b"e", 1 << 5, c),
        Err(FsError::Invalid)
    );
    // Non-empty directory target.
    fs.create(e, b"inside", 0o644, false, c).unwrap();
    assert_eq!(
        fs.rename(ROOT_INO, b"a", ROOT_INO, b"e", 0, c),
        Err(FsError::NotEmpty)
    );
    fs.unlink(e, b"inside", c).unwrap();
    // Directory over an empty directory, across parents: link counts move.
    fs.rename(ROOT_INO, b"a/b", ROOT_INO, b"e", 0, c).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"e", true), Ok(b));
    assert_eq!(fs.inode(e), Err(FsError::Stale));
    assert_eq!(fs.inode(a).unwrap().nlink(), 2);
    assert_eq!(fs.inode(ROOT_INO).unwrap().nlink(), 4, "a and e (now b)");
    assert_eq!(
        fs.lookup(b, b"..", true),
        Ok(ROOT_INO),
        "the moved directory's .. follows"
    );
    // Directory into another one.
    fs.rename(ROOT_INO, b"e", a, b"moved", 0, c).unwrap();
    assert_eq!(fs.inode(a).unwrap().nlink(), 3);
    assert_eq!(fs.inode(ROOT_INO).unwrap().nlink(), 3);
    assert_eq!(fs.lookup(b, b"..", true), Ok(a));
    // Hard links of one file: nothing happens.
    fs.link(ROOT_INO, b"g", false, ROOT_INO, b"g2", c).unwrap();
    fs.rename(ROOT_INO, b"g", ROOT_INO, b"g2", 0, c).unwrap();
    assert!(fs.lookup(ROOT_INO, b"g", true).is_ok() && fs.lookup(ROOT_INO, b"g2", true).is_ok());
    // RENAME_NOREPLACE.
    assert_eq!(
        fs.rename(ROOT_INO, b"g", ROOT_INO, b"g2", RENAME_NOREPLACE, c),
        Err(FsError::Exists)
    );
    fs.rename(ROOT_INO, b"g", ROOT_INO, b"g3", RENAME_NOREPLACE, c)
        .unwrap();
    // Trailing slashes are fine on directories.
    fs.rename(ROOT_INO, b"a/moved/", ROOT_INO, b"top/", 0, c)
        .unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"top", true), Ok(b));
    check_invariants(&fs).unwrap();
}

#[test]
fn a_failed_operation_changes_nothing() {
    let mut fs = fs();
    let c = ctx(T0);
    fs.mkdir(ROOT_INO, b"a", 0o755, c).unwrap();
    fs.mkdir(ROOT_INO, b"a/b", 0o755, c).unwrap();
    fs.create(ROOT_INO, b"a/f", 0o644, false, c).unwrap();
    let snapshot = fs.clone();
    let later = ctx(T0 + 1);
    assert!(fs
        .rename(ROOT_INO, b"a", ROOT_INO, b"a/b/x", 0, later)
        .is_err());
    assert!(fs.rmdir(ROOT_INO, b"a", later).is_err());
    assert!(fs.unlink(ROOT_INO, b"a", later).is_err());
    assert!(fs.mkdir(ROOT_INO, b"a/f", 0o755, later).is_err());
    assert!(fs
        .link(ROOT_INO, b"a", false, ROOT_INO, b"x", later)
        .is_err());
    assert_eq!(fs, snapshot);
}

#[test]
fn reads_writes_and_truncate() {
    let mut fs = fs();
    let c = ctx(T0);
    let (f, _) = fs.create(ROOT_INO, b"f", 0o644, false, c).unwrap();
    let later = ctx(T0 + 5);
    assert_eq!(fs.write_at(f, 0, b"hello", later).unwrap(), 5);
    assert_eq!(fs.inode(f).unwrap().mtime(), T0 + 5);
    fs.write_at(f, 10, b"world", c).unwrap();
    assert_eq!(contents(&fs, f), b"hello\0\0\0\0\0world");
    let mut buf = [0u8; 4];
    assert_eq!(fs.read_at(f, 3, &mut buf).unwrap(), 4);
    assert_eq!(&buf, b"lo\0\0");
    assert_eq!(fs.read_at(f, 15, &mut buf).unwrap(), 0);
    fs.truncate(f, 2, c).unwrap();
    assert_eq!(contents(&fs, f), b"he");
    fs.truncate(f, 4, c).unwrap();
    assert_eq!(contents(&fs, f), b"he\0\0");
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
    let s = fs.symlink(b"f", ROOT_INO, b"s", c).unwrap();
    assert_eq!(fs.read_at(d, 0, &mut buf), Err(FsError::IsADirectory));
    assert_eq!(fs.write_at(d, 0, b"x", c), Err(FsError::IsADirectory));
    assert_eq!(fs.truncate(d, 0, c), Err(FsError::IsADirectory));
    assert_eq!(fs.read_at(s, 0, &mut buf), Err(FsError::Invalid));
    assert_eq!(
        fs.write_at(f, u64::MAX - 1, b"xy", c),
        Err(FsError::FileTooBig)
    );
    // A big sparse file costs only its written pages.
    fs.write_at(f, 1 << 40, b"end", c).unwrap();
    let st = fs.stat(f).unwrap();
    assert_eq!(st.st_size, (1 << 40) + 3);
    assert_eq!(st.st_blocks, 2 * 8);
    assert!(fs.inode(f).unwrap().page(1 << 28).is_some());
    assert!(fs.inode(f).unwrap().page(5).is_none());
}

#[test]
fn stat_fields() {
    let mut fs = fs();
    fs.set_dev(abi::makedev(0, 42));
    let c = ctx(T0 + 123);
    let (f, _) = fs.create(ROOT_INO, b"f", 0o640, false, c).unwrap();
    fs.write_at(f, 0, &[1; 5000], c).unwrap();
    let st = fs.stat(f).unwrap();
    assert_eq!(
        (st.st_dev, st.st_ino, st.st_nlink),
        (abi::makedev(0, 42), f, 1)
    );
    assert_eq!(
        (st.st_mode, st.st_uid, st.st_gid),
        (S_IFREG | 0o640, 1000, 100)
    );
    assert_eq!((st.st_size, st.st_blksize, st.st_blocks), (5000, 4096, 16));
    assert_eq!((st.st_mtime, st.st_mtime_nsec), (1_700_000_000, 123));
    assert_eq!((st.st_atime, st.st_ctime), (1_700_000_000, 1_700_000_000));
    let tty = fs
        .mknod_device(ROOT_INO, b"tty", FileType::CharDevice, 0o666, (5, 0), c)
        .unwrap();
    let st = fs.stat(tty).unwrap();
    assert_eq!(
        (st.st_mode, st.st_rdev, st.st_size),
        (S_IFCHR | 0o666, abi::makedev(5, 0), 0)
    );
    assert_eq!(fs.inode(tty).unwrap().rdev(), Some((5, 0)));
    let disk = fs
        .mknod_device(ROOT_INO, b"vda", FileType::BlockDevice, 0o660, (254, 16), c)
        .unwrap();
    let st = fs.stat(disk).unwrap();
    assert_eq!(
        (st.st_mode, st.st_rdev, st.st_size),
        (S_IFBLK | 0o660, abi::makedev(254, 16), 0)
    );
    assert_eq!(
        fs.mknod_device(ROOT_INO, b"bad", FileType::Regular, 0o666, (1, 1), c),
        Err(FsError::Invalid),
        "only devices"
    );
    let s = fs.symlink(b"target", ROOT_INO, b"s", c).unwrap();
    assert_eq!(fs.stat(s).unwrap().st_size, 6);
    assert_eq!(
        fs.stat(ROOT_INO).unwrap().st_size,
        6 * DIR_ENTRY_SIZE as i64
    );
    assert_eq!(fs.stat(12345), Err(FsError::Stale));
    // Before the epoch.
    fs.utimens(f, SetTime::At(-1), SetTime::Omit, c).unwrap();
    let st = fs.stat(f).unwrap();
    assert_eq!((st.st_atime, st.st_atime_nsec), (-1, 999_999_999));
}

#[test]
fn chmod_chown_utimens() {
    let mut fs = fs();
    let c = ctx(T0);
    let (f, _) = fs.create(ROOT_INO, b"f", 0o644, false, c).unwrap();
    fs.chmod(f, S_IFDIR | 0o4755, ctx(T0 + 1)).unwrap();
    assert_eq!(
        fs.inode(f).unwrap().mode(),
        S_IFREG | 0o4755,
        "the type stays"
    );
    assert_eq!(fs.inode(f).unwrap().ctime(), T0 + 1);
    fs.chown(f, None, Some(7), c).unwrap();
    assert_eq!(
        (fs.inode(f).unwrap().uid(), fs.inode(f).unwrap().gid()),
        (1000, 7)
    );
    fs.utimens(f, SetTime::At(5), SetTime::Now, ctx(T0 + 9))
        .unwrap();
    let i = fs.inode(f).unwrap();
    assert_eq!((i.atime(), i.mtime(), i.ctime()), (5, T0 + 9, T0 + 9));
    fs.utimens(f, SetTime::Omit, SetTime::Omit, ctx(T0 + 20))
        .unwrap();
    assert_eq!(
        fs.inode(f).unwrap().ctime(),
        T0 + 9,
        "both omitted: nothing changes"
    );
    assert_eq!(fs.chmod(999, 0, c), Err(FsError::Stale));
}

#[test]
fn directory_times_follow_their_entries() {
    let mut fs = fs();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, ctx(T0)).unwrap();
    fs.create(d, b"f", 0o644, false, ctx(T0 + 7)).unwrap();
    assert_eq!(fs.inode(d).unwrap().mtime(), T0 + 7);
    fs.unlink(d, b"f", ctx(T0 + 8)).unwrap();
    assert_eq!(fs.inode(d).unwrap().mtime(), T0 + 8);
    assert_eq!(fs.inode(d).unwrap().ctime(), T0 + 8);
}

#[test]
fn readdir_positions_are_stable() {
    let mut fs = fs();
    let c = ctx(T0);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
    for name in ["c", "a", "b"] {
        fs.create(d, name.as_bytes(), 0o644, false, c).unwrap();
    }
    let all: Vec<DirEntry<'_>> = fs.readdir(d, 0).unwrap().collect();
    let listed: Vec<&[u8]> = all.iter().map(|e| e.name).collect();
    assert_eq!(
        listed,
        [&b"."[..], b"..", b"c", b"a", b"b"],
        "in the order added"
    );
    assert_eq!(
        (all[0].ino, all[1].ino, all[0].d_type),
        (d, ROOT_INO, DT_DIR)
    );
    assert_eq!(all[2].d_type, DT_REG);
    // Resume after "c", with "a" removed and "z" added meanwhile.
    let resume = all[2].next_offset;
    let mut fs2 = fs.clone();
    fs2.unlink(d, b"a", c).unwrap();
    fs2.create(d, b"z", 0o644, false, c).unwrap();
    let rest: Vec<&[u8]> = fs2.readdir(d, resume).unwrap().map(|e| e.name).collect();
    assert_eq!(rest, [&b"b"[..], b"z"]);
    // Re-adding a removed name gives it a new position, after the others.
    fs2.create(d, b"a", 0o644, false, c).unwrap();
    let names: Vec<&[u8]> = fs2.readdir(d, 0).unwrap().map(|e| e.name).collect();
    assert_eq!(names, [&b"."[..], b"..", b"c", b"b", b"z", b"a"]);
    assert_eq!(fs.readdir(ROOT_INO + 100, 0).err(), Some(FsError::Stale));
    let (f, _) = fs.create(ROOT_INO, b"file", 0o644, false, c).unwrap();
    assert_eq!(fs.readdir(f, 0).err(), Some(FsError::NotADirectory));
}

#[test]
fn getdents64_resumes_across_small_buffers() {
    let mut fs = fs();
    let c = ctx(T0);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
    let mut expected = vec![String::from("."), String::from("..")];
    for i in 0..50 {
        let name = format!("entry-{i}-{}", "x".repeat(i % 13));
        fs.create(d, name.as_bytes(), 0o644, false, c).unwrap();
        expected.push(name);
    }
    for size in [48usize, 50, 64, 100, 4096] {
        let mut got = Vec::new();
        let mut offset = 0;
        let mut buf = vec![0u8; size];
        let mut last_off = 0;
        loop {
            let (n, next) = fs.getdents64(d, offset, &mut buf).unwrap();
            if n == 0 {
                assert_eq!(next, offset, "the end stays the end");
                break;
            }
            for e in read_dirent64(&buf[..n]) {
                let e = e.unwrap();
                assert_eq!(fs.lookup_in(d, e.name).unwrap(), e.ino);
                got.push(String::from_utf8(e.name.to_vec()).unwrap());
                assert!(e.off > last_off, "d_off increases");
                last_off = e.off;
            }
            assert_eq!(
                next, last_off as u64,
                "resume after the last record returned"
            );
            offset = next;
        }
        assert_eq!(got, expected, "buffer of {size}");
    }
    let mut tiny = [0u8; 16];
    assert_eq!(
        fs.getdents64(d, 0, &mut tiny),
        Err(FsError::Invalid),
        "not even one record fits"
    );
}

#[test]
fn populate_from_a_built_archive() {
    use crate::cpio::mode;
    /// (name, mode, nlink, ino, rdev, data)
    type Member<'a> = (&'a str, u32, u32, u32, (u32, u32), &'a [u8]);
    let entries: [Member<'_>; 11] = [
        (".", mode::DIRECTORY | 0o755, 2, 1, (0, 0), b""),
        ("bin", mode::DIRECTORY | 0o711, 2, 2, (0, 0), b""),
        ("bin/busybox", mode::REGULAR | 0o755, 3, 3, (0, 0), b""),
        ("bin/sh", mode::REGULAR | 0o755, 3, 3, (0, 0), b""),
        (
            "bin/ls",
            mode::REGULAR | 0o755,
            3,
            3,
            (0, 0),
            b"\x7fELF the program",
        ),
        (
            "usr/lib/deep/file",
            mode::REGULAR | 0o600,
            1,
            4,
            (0, 0),
            b"deep",
        ),
        ("lib", mode::SYMLINK | 0o777, 1, 5, (0, 0), b"usr/lib"),
        ("lib/via-link", mode::REGULAR | 0o644, 1, 6, (0, 0), b"v"),
        ("dev/console", mode::CHAR_DEVICE | 0o600, 1, 7, (5, 1), b""),
        ("dev/vda", mode::BLOCK_DEVICE | 0o660, 1, 9, (254, 0), b""),
        ("..", mode::DIRECTORY | 0o755, 2, 8, (0, 0), b""),
    ];
    let mut archive = Vec::new();
    for (name, m, nlink, ino, rdev, data) in entries {
        push_newc(&mut archive, name, m, nlink, ino, rdev, data, 1_600_000_000);
    }
    push_newc(&mut archive, "TRAILER!!!", 0, 1, 0, (0, 0), b"", 0);
    let mut fs = fs();
    assert_eq!(populate_from_cpio(&mut fs, &archive), Ok(9));
    let busybox = fs.lookup(ROOT_INO, b"/bin/busybox", true).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"/bin/sh", true), Ok(busybox));
    assert_eq!(fs.lookup(ROOT_INO, b"/bin/ls", true), Ok(busybox));
    assert_eq!(fs.inode(busybox).unwrap().nlink(), 3);
    assert_eq!(
        contents(&fs, busybox),
        b"\x7fELF the program",
        "data from the last link"
    );
    let bin = fs.lookup(ROOT_INO, b"bin", true).unwrap();
    assert_eq!(fs.inode(bin).unwrap().mode(), S_IFDIR | 0o711);
    assert_eq!(
        fs.inode(bin).unwrap().mtime(),
        1_600_000_000 * 1_000_000_000,
        "restored last"
    );
    let deep = fs.lookup(ROOT_INO, b"usr/lib/deep/file", true).unwrap();
    assert_eq!(fs.inode(deep).unwrap().mode(), S_IFREG | 0o600);
    assert_eq!(
        fs.inode(fs.lookup(ROOT_INO, b"usr/lib", true).unwrap())
            .unwrap()
            .mode(),
        S_IFDIR | 0o755,
        "made parent"
    );
    assert_eq!(fs.readlink(ROOT_INO, b"lib"), Ok(&b"usr/lib"[..]));
    assert_eq!(
        contents(&fs, fs.lookup(ROOT_INO, b"usr/lib/via-link", true).unwrap()),
        b"v",
        "through the symlink"
    );
    let console = fs.lookup(ROOT_INO, b"dev/console", true).unwrap();
    assert_eq!(fs.inode(console).unwrap().rdev(), Some((5, 1)));
    assert_eq!(fs.inode(console).unwrap().file_type(), FileType::CharDevice);
    let vda = fs.lookup(ROOT_INO, b"dev/vda", true).unwrap();
    assert_eq!(
        (
            fs.inode(vda).unwrap().file_type(),
            fs.inode(vda).unwrap().rdev()
        ),
        (FileType::BlockDevice, Some((254, 0)))
    );
    assert_eq!(fs.stat(vda).unwrap().st_mode, S_IFBLK | 0o660);
    check_invariants(&fs).unwrap();
}

#[test]
fn populate_rejects_bad_entries() {
    use crate::cpio::mode;
    let build = |entries: &[(&str, u32, &[u8])]| {
        let mut a = Vec::new();
        for (i, (name, m, data)) in entries.iter().enumerate() {
            push_newc(&mut a, name, *m, 1, i as u32 + 10, (0, 0), data, 0);
        }
        push_newc(&mut a, "TRAILER!!!", 0, 1, 0, (0, 0), b"", 0);
        a
    };
    let entry_error = |name: &str, error| {
        Err(PopulateError::Entry {
            name: String::from(name),
            error,
        })
    };
    let fifo = build(&[("p", 0o010644, b"")]);
    assert_eq!(
        populate_from_cpio(&mut fs(), &fifo),
        Err(PopulateError::Unsupported {
            name: String::from("p"),
            mode: 0o010644
        })
    );
    let dotdot = build(&[("a/../b", mode::REGULAR | 0o644, b"")]);
    assert_eq!(
        populate_from_cpio(&mut fs(), &dotdot),
        entry_error("a/../b", FsError::Invalid)
    );
    let file_over_dir = build(&[
        ("d", mode::DIRECTORY | 0o755, b""),
        ("d", mode::REGULAR | 0o644, b"x"),
    ]);
    assert_eq!(
        populate_from_cpio(&mut fs(), &file_over_dir),
        entry_error("d", FsError::IsADirectory)
    );
    let dir_over_file = build(&[
        ("f", mode::REGULAR | 0o644, b""),
        ("f", mode::DIRECTORY | 0o755, b""),
    ]);
    assert_eq!(
        populate_from_cpio(&mut fs(), &dir_over_file),
        entry_error("f", FsError::Exists)
    );
    let through_file = build(&[
        ("f", mode::REGULAR | 0o644, b""),
        ("f/x", mode::REGULAR | 0o644, b""),
    ]);
    assert_eq!(
        populate_from_cpio(&mut fs(), &through_file),
        entry_error("f/x", FsError::NotADirectory)
    );
    let empty_link = build(&[("s", mode::SYMLINK | 0o777, b"")]);
    assert_eq!(
        populate_from_cpio(&mut fs(), &empty_link),
        entry_error("s", FsError::NotFound)
    );
    let long = "n".repeat(300);
    let long_name = build(&[(&long, mode::REGULAR | 0o644, b"")]);
    assert!(matches!(
        populate_from_cpio(&mut fs(), &long_name),
        Err(PopulateError::Entry {
            error: FsError::NameTooLong,
            ..
        })
    ));
    // A later file replaces an earlier one.
    let twice = build(&[
        ("f", mode::REGULAR | 0o644, b"old"),
        ("f", mode::REGULAR | 0o600, b"new"),
    ]);
    let mut f2 = fs();
    assert_eq!(populate_from_cpio(&mut f2, &twice), Ok(2));
    let ino = f2.lookup(ROOT_INO, b"f", true).unwrap();
    assert_eq!(
        (contents(&f2, ino), f2.inode(ino).unwrap().mode()),
        (b"new".to_vec(), S_IFREG | 0o600)
    );
    check_invariants(&f2).unwrap();
    // Damaged archives: every truncation is an error, never a panic.
    let good = build(&[
        ("d", mode::DIRECTORY | 0o755, b""),
        ("d/f", mode::REGULAR | 0o644, b"data"),
    ]);
    for cut in 0..good.len() {
        let mut fs = fs();
        assert!(
            populate_from_cpio(&mut fs, &good[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

/// Appends one newc entry (the fields the reader and populate look at).
#[allow(clippy::too_many_arguments)]
pub(super) fn push_newc(
    out: &mut Vec<u8>,
    name: &str,
    mode: u32,
    nlink: u32,
    ino: u32,
    rdev: (u32, u32),
    data: &[u8],
    mtime: u32,
) {
    let header = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        ino,
        mode,
        0,
        0,
        nlink,
        mtime,
        data.len(),
        0,
        1,
        rdev.0,
        rdev.1,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A real archive: a temporary directory packed by `cpio -o -H newc` (GNU cpio if installed,
/// else busybox's applet, which `scripts/setup` installs), plain and gzip-compressed.
#[test]
fn populate_from_host_cpio() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::{Command, Stdio};

    let dir = std::env::temp_dir().join(format!("k42-fs-cpio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/init.d")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("etc/motd"), b"welcome\n").unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("big"), &big).unwrap();
    std::fs::write(root.join("etc/init.d/rcS"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        root.join("etc/init.d/rcS"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink("etc/motd", root.join("motd-link")).unwrap();
    symlink("/nowhere", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("big"), root.join("big-hardlink")).unwrap();

    let mut tools: Vec<Vec<&str>> = Vec::new();
    if Command::new("cpio")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        tools.push(vec!["cpio"]);
    }
    assert!(
        std::path::Path::new("/bin/busybox").exists(),
        "busybox (scripts/setup installs busybox-static) provides cpio"
    );
    tools.push(vec!["/bin/busybox", "cpio"]);

    for tool in tools {
        // The file list, as `find . | cpio -o -H newc` gives it.
        let mut list = String::new();
        for path in [
            "big",
            "big-hardlink",
            "dangling",
            "empty",
            "etc",
            "etc/init.d",
            "etc/init.d/rcS",
            "etc/motd",
            "motd-link",
        ] {
            list.push_str(path);
            list.push('\n');
        }
        let mut child = Command::new(tool[0])
            .args(&tool[1..])
            .args(["-o", "-H", "newc"])
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(list.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{tool:?} failed");
        let archive = out.stdout;
        std::fs::write(dir.join("initrd"), &archive).unwrap();
        let gz = Command::new("gzip")
            .args(["-k", "-f", "-9"])
            .arg(dir.join("initrd"))
            .status();
        assert!(
            gz.is_ok_and(|s| s.success()),
            "gzip(1) is needed for this test"
        );
        let compressed = std::fs::read(dir.join("initrd.gz")).unwrap();

        for image in [&archive, &compressed] {
            let mut fs = fs();
            assert_eq!(populate_from_cpio(&mut fs, image), Ok(9), "{tool:?}");
            let get = |p: &str| fs.lookup(ROOT_INO, p.as_bytes(), false).unwrap();
            assert_eq!(contents(&fs, get("etc/motd")), b"welcome\n");
            assert_eq!(contents(&fs, get("big")), big);
            assert_eq!(
                get("big"),
                get("big-hardlink"),
                "{tool:?}: a hard link is one inode"
            );
            assert_eq!(fs.inode(get("big")).unwrap().nlink(), 2);
            assert_eq!(
                fs.inode(get("etc/init.d/rcS")).unwrap().mode(),
                S_IFREG | 0o750
            );
            assert_eq!(fs.inode(get("empty")).unwrap().mode(), S_IFDIR | 0o700);
            assert_eq!(fs.readlink(ROOT_INO, b"motd-link"), Ok(&b"etc/motd"[..]));
            assert_eq!(fs.lookup(ROOT_INO, b"motd-link", true), Ok(get("etc/motd")));
            assert_eq!(fs.readlink(ROOT_INO, b"dangling"), Ok(&b"/nowhere"[..]));
            let listed = names(&fs, get("etc"));
            assert_eq!(listed.len(), 4);
            assert!(
                listed.contains(&String::from("init.d")) && listed.contains(&String::from("motd"))
            );
            let host_mtime = std::fs::metadata(root.join("etc/motd"))
                .unwrap()
                .modified()
                .unwrap();
            let secs = host_mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert_eq!(
                fs.inode(get("etc/motd")).unwrap().mtime(),
                secs * 1_000_000_000
            );
            check_invariants(&fs).unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
