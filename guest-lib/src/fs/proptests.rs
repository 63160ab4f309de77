//! Property tests: random sequences of operations against a small model of the tree. After
//! every step the file system keeps its invariants, holds exactly the model's names, kinds
//! and file contents, answers what the model predicts (success or which errno), and a failed
//! operation has changed nothing.

extern crate std;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::tests::{check_invariants, ctx, T0};
use super::*;
use k42_linux_abi::errno::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY, EPERM};

/// Names in the generated paths: a tiny namespace, so operations collide often.
const NAMES: [&str; 3] = ["a", "b", "c"];

type MPath = Vec<&'static str>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MNode {
    Dir,
    /// A regular file, by identity (hard links share it).
    File(u32),
    /// A symlink to `/nowhere/<id>` (always dangling: paths never pass through one).
    Link(u32),
}

#[derive(Clone, Debug)]
enum Op {
    Mkdir(MPath),
    Create(MPath, bool),
    Unlink(MPath),
    Rmdir(MPath),
    Link(MPath, MPath),
    Symlink(MPath),
    Rename(MPath, MPath, bool),
    Write(MPath, u16, u8),
    Truncate(MPath, u16),
    Retain(MPath),
    Release(usize),
}

fn path() -> impl Strategy<Value = MPath> {
    prop::collection::vec(prop::sample::select(&NAMES[..]), 1..=3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => path().prop_map(Op::Mkdir),
        3 => (path(), any::<bool>()).prop_map(|(p, x)| Op::Create(p, x)),
        2 => path().prop_map(Op::Unlink),
        2 => path().prop_map(Op::Rmdir),
        2 => (path(), path()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => path().prop_map(Op::Symlink),
        3 => (path(), path(), any::<bool>()).prop_map(|(a, b, n)| Op::Rename(a, b, n)),
        3 => (path(), 0u16..9000, 0u8..200).prop_map(|(p, o, l)| Op::Write(p, o, l)),
        2 => (path(), 0u16..9000).prop_map(|(p, l)| Op::Truncate(p, l)),
        1 => path().prop_map(Op::Retain),
        1 => any::<usize>().prop_map(Op::Release),
    ]
}

fn bytes(p: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in p {
        out.push(b'/');
        out.extend_from_slice(c.as_bytes());
    }
    out
}

#[derive(Default)]
struct Model {
    nodes: BTreeMap<MPath, MNode>,
    /// Contents of every live file id.
    files: BTreeMap<u32, Vec<u8>>,
    /// The inode of every file and symlink id.
    inos: BTreeMap<u32, Ino>,
    /// Retained file ids (open handles), with their inodes.
    open: Vec<u32>,
    next_id: u32,
}

impl Model {
    /// Whether the parent of `p` is a directory, else the errno of walking to it.
    fn parent(&self, p: &[&'static str]) -> Result<(), i32> {
        for i in 1..p.len() {
            match self.nodes.get(&p[..i]) {
                Some(MNode::Dir) => {}
                Some(MNode::File(_)) => return Err(ENOTDIR),
                Some(MNode::Link(_)) | None => return Err(ENOENT),
            }
        }
        Ok(())
    }

    fn get(&self, p: &MPath) -> Option<MNode> {
        self.nodes.get(p).copied()
    }

    fn is_empty_dir(&self, p: &MPath) -> bool {
        !self
            .nodes
            .keys()
            .any(|k| k.len() > p.len() && k.starts_with(p))
    }

    /// Forgets the contents of files that lost their last name and handle.
    fn collect(&mut self) {
        let live: Vec<u32> = self
            .nodes
            .values()
            .filter_map(|n| match n {
                MNode::File(id) | MNode::Link(id) => Some(*id),
                MNode::Dir => None,
            })
            .chain(self.open.iter().copied())
            .collect();
        self.files.retain(|id, _| live.contains(id));
        self.inos.retain(|id, _| live.contains(id));
    }

    /// The inodes the file system should hold: the root, every directory, every live id.
    fn inode_count(&self) -> usize {
        1 + self.nodes.values().filter(|n| **n == MNode::Dir).count() + self.inos.len()
    }
}

/// The fs tree as the model describes it, read through readdir and lookups.
fn tree(fs: &FileSystem, dir: Ino, prefix: &MPath, out: &mut BTreeMap<MPath, Ino>) {
    for e in fs.readdir(dir, 0).unwrap() {
        if e.name == b"." || e.name == b".." {
            continue;
        }
        let name = core::str::from_utf8(e.name).unwrap();
        let static_name = NAMES
            .iter()
            .find(|n| **n == name)
            .copied()
            .expect("a generated name");
        let mut p = prefix.clone();
        p.push(static_name);
        out.insert(p.clone(), e.ino);
        if e.d_type == DT_DIR {
            tree(fs, e.ino, &p, out);
        }
    }
}

fn data_for(step: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (step * 31 + i) as u8 | 1).collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut fs = FileSystem::new(Ctx::root(T0));
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let c = ctx(T0 + step as i64);
        let before = fs.clone();
        let (predicted, got): (Result<(), i32>, Result<(), FsError>) = match &op {
            Op::Mkdir(p) => {
                let predicted = m.parent(p).and_then(|()| match m.get(p) {
                    Some(_) => Err(EEXIST),
                    None => Ok(()),
                });
                let got = fs.mkdir(ROOT_INO, &bytes(p), 0o755, c).map(|_| ());
                if got.is_ok() {
                    m.nodes.insert(p.clone(), MNode::Dir);
                }
                (predicted, got)
            }
            Op::Create(p, excl) => {
                let predicted = m.parent(p).and_then(|()| match m.get(p) {
                    Some(_) if *excl => Err(EEXIST),
                    Some(MNode::Dir) => Err(EISDIR),
                    Some(MNode::Link(_)) => Err(ENOENT),
                    _ => Ok(()),
                });
                let got = fs.create(ROOT_INO, &bytes(p), 0o644, *excl, c);
                if let Ok((ino, created)) = got {
                    if created {
                        let id = m.next_id;
                        m.next_id += 1;
                        m.nodes.insert(p.clone(), MNode::File(id));
                        m.files.insert(id, Vec::new());
                        m.inos.insert(id, ino);
                    }
                }
                (predicted, got.map(|_| ()))
            }
            Op::Unlink(p) => {
                let predicted = m.parent(p).and_then(|()| match m.get(p) {
                    None => Err(ENOENT),
                    Some(MNode::Dir) => Err(EISDIR),
                    _ => Ok(()),
                });
                let got = fs.unlink(ROOT_INO, &bytes(p), c);
                if got.is_ok() {
                    m.nodes.remove(p);
                }
                (predicted, got)
            }
            Op::Rmdir(p) => {
                let predicted = m.parent(p).and_then(|()| match m.get(p) {
                    None => Err(ENOENT),
                    Some(MNode::Dir) if !m.is_empty_dir(p) => Err(ENOTEMPTY),
                    Some(MNode::Dir) => Ok(()),
                    _ => Err(ENOTDIR),
                });
                let got = fs.rmdir(ROOT_INO, &bytes(p), c);
                if got.is_ok() {
                    m.nodes.remove(p);
                }
                (predicted, got)
            }
            Op::Link(old, new) => {
                let predicted = m.parent(old).and_then(|()| match m.get(old) {
                    None => Err(ENOENT),
                    Some(MNode::Dir) => Err(EPERM),
                    Some(_) => m.parent(new).and_then(|()| match m.get(new) {
                        Some(_) => Err(EEXIST),
                        None => Ok(()),
                    }),
                });
                let got = fs.link(ROOT_INO, &bytes(old), false, ROOT_INO, &bytes(new), c);
                if got.is_ok() {
                    let node = m.nodes[old];
                    m.nodes.insert(new.clone(), node);
                }
                (predicted, got)
            }
            Op::Symlink(p) => {
                let predicted = m.parent(p).and_then(|()| match m.get(p) {
                    Some(_) => Err(EEXIST),
                    None => Ok(()),
                });
                let id = m.next_id;
                let target = format!("/nowhere/{id}");
                let got = fs.symlink(target.as_bytes(), ROOT_INO, &bytes(p), c);
                if let Ok(ino) = got {
                    m.next_id += 1;
                    m.nodes.insert(p.clone(), MNode::Link(id));
                    m.inos.insert(id, ino);
                }
                (predicted, got.map(|_| ()))
            }
            Op::Rename(old, new, noreplace) => {
                let predicted = (|| {
                    m.parent(old)?;
                    m.parent(new)?;
                    let moved = m.get(old).ok_or(ENOENT)?;
                    let target = m.get(new);
                    if target.is_some() && *noreplace {
                        return Err(EEXIST);
                    }
                    if old[..old.len() - 1] != new[..new.len() - 1] {
                        if moved == MNode::Dir && new.len() > old.len() && new.starts_with(old) {
                            return Err(EINVAL);
                        }
                        if target == Some(MNode::Dir)
                            && old.len() > new.len()
                            && old.starts_with(new)
                        {
                            return Err(ENOTEMPTY);
                        }
                    }
                    match (moved, target) {
                        (_, None) => Ok(()),
                        (a, Some(b)) if old == new || (a != MNode::Dir && a == b) => Ok(()),
                        (MNode::Dir, Some(MNode::Dir)) if !m.is_empty_dir(new) => Err(ENOTEMPTY),
                        (MNode::Dir, Some(MNode::Dir)) => Ok(()),
                        (MNode::Dir, Some(_)) => Err(ENOTDIR),
                        (_, Some(MNode::Dir)) => Err(EISDIR),
                        _ => Ok(()),
                    }
                })();
                let flags = if *noreplace { RENAME_NOREPLACE } else { 0 };
                let got = fs.rename(ROOT_INO, &bytes(old), ROOT_INO, &bytes(new), flags, c);
                let same =
                    old == new || (m.get(old) != Some(MNode::Dir) && m.get(old) == m.get(new));
                if got.is_ok() && !same {
                    m.nodes.remove(new);
                    let moved: Vec<(MPath, MNode)> = m
                        .nodes
                        .iter()
                        .filter(|(k, _)| k.starts_with(old))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                    for (k, v) in moved {
                        m.nodes.remove(&k);
                        let mut nk = new.clone();
                        nk.extend_from_slice(&k[old.len()..]);
                        m.nodes.insert(nk, v);
                    }
                }
                (predicted, got)
            }
            Op::Write(p, offset, len) => {
                let predicted = m.parent(p).and_then(|()| match m.get(p) {
                    Some(MNode::File(_)) => Ok(()),
                    Some(MNode::Dir) => Err(EISDIR),
                    _ => Err(ENOENT),
                });
                let data = data_for(step, usize::from(*len));
                let got = fs
                    .lookup(ROOT_INO, &bytes(p), true)
                    .and_then(|ino| fs.write_at(ino, u64::from(*offset), &data, c))
                    .map(|n| assert_eq!(n, data.len()));
                if got.is_ok() {
                    let Some(MNode::File(id)) = m.get(p) else {
                        unreachable!()
                    };
                    let f = m.files.get_mut(&id).unwrap();
                    let end = usize::from(*offset) + data.len();
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[usize::from(*offset)..end].copy_from_slice(&data);
                }
                (predicted, got)
            }
            Op::Truncate(p, len) => {
                let predicted = m.parent(p).and_then(|()| match m.get(p) {
                    Some(MNode::File(_)) => Ok(()),
                    Some(MNode::Dir) => Err(EISDIR),
                    _ => Err(ENOENT),
                });
                let got = fs
                    .lookup(ROOT_INO, &bytes(p), true)
                    .and_then(|ino| fs.truncate(ino, u64::from(*len), c));
                if got.is_ok() {
                    let Some(MNode::File(id)) = m.get(p) else {
                        unreachable!()
                    };
                    m.files.get_mut(&id).unwrap().resize(usize::from(*len), 0);
                }
                (predicted, got)
            }
            Op::Retain(p) => match m.get(p) {
                Some(MNode::File(id)) if m.parent(p).is_ok() => {
                    fs.retain(m.inos[&id]).unwrap();
                    m.open.push(id);
                    (Ok(()), Ok(()))
                }
                _ => continue,
            },
            Op::Release(k) => {
                if m.open.is_empty() {
                    continue;
                }
                let id = m.open.remove(k % m.open.len());
                (Ok(()), fs.release(m.inos[&id]))
            }
        };
        m.collect();
        prop_assert_eq!(
            got.map_err(|e| e.errno()),
            predicted,
            "step {}: {:?}",
            step,
            op
        );
        if got.is_err() {
            prop_assert!(
                fs == before,
                "step {}: failed {:?} changed the file system",
                step,
                op
            );
        }
        if let Err(why) = check_invariants(&fs) {
            return Err(TestCaseError::fail(format!("step {step}: {op:?}: {why}")));
        }
        // The tree holds exactly the model's names, with the right kinds and identities.
        let mut seen = BTreeMap::new();
        tree(&fs, ROOT_INO, &Vec::new(), &mut seen);
        let names: Vec<&MPath> = seen.keys().collect();
        let expected: Vec<&MPath> = m.nodes.keys().collect();
        prop_assert_eq!(names, expected, "step {}: {:?}", step, op);
        for (p, node) in &m.nodes {
            let ino = seen[p];
            let inode = fs.inode(ino).unwrap();
            match node {
                MNode::Dir => prop_assert_eq!(inode.file_type(), FileType::Directory),
                MNode::File(id) => prop_assert_eq!(ino, m.inos[id]),
                MNode::Link(id) => {
                    prop_assert_eq!(ino, m.inos[id]);
                    let target = format!("/nowhere/{id}");
                    prop_assert_eq!(inode.symlink_target(), Some(target.as_bytes()));
                }
            }
        }
        for (id, data) in &m.files {
            let ino = m.inos[id];
            let mut buf = vec![0u8; data.len() + 10];
            let n = fs.read_at(ino, 0, &mut buf).unwrap();
            prop_assert_eq!(&buf[..n], &data[..], "contents of file {}", id);
        }
        prop_assert_eq!(fs.inode_count(), m.inode_count(), "step {}: {:?}", step, op);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

/// Arbitrary bytes as paths and names never panic, whatever the tree.
#[test]
fn arbitrary_paths_never_panic() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 500,
        ..ProptestConfig::default()
    });
    let paths = prop::collection::vec(
        prop::collection::vec(prop::sample::select(&b"ab./\0"[..]), 0..12),
        1..30,
    );
    runner
        .run(&paths, |paths| {
            let mut fs = FileSystem::new(Ctx::root(T0));
            let c = ctx(T0);
            for (i, p) in paths.iter().enumerate() {
                let _ = match i % 8 {
                    0 => fs.mkdir(ROOT_INO, p, 0o755, c).map(|_| ()),
                    1 => fs.create(ROOT_INO, p, 0o644, false, c).map(|_| ()),
                    2 => fs.symlink(p, ROOT_INO, b"s", c).map(|_| ()),
                    3 => fs.rename(ROOT_INO, p, ROOT_INO, &paths[0], 0, c),
                    4 => fs.unlink(ROOT_INO, p, c),
                    5 => fs.rmdir(ROOT_INO, p, c),
                    6 => fs.link(ROOT_INO, p, true, ROOT_INO, &paths[0], c),
                    _ => fs.lookup(ROOT_INO, p, true).map(|_| ()),
                };
                if let Err(why) = check_invariants(&fs) {
                    return Err(TestCaseError::fail(format!(
                        "{:?}: {why}",
                        String::from_utf8_lossy(p)
                    )));
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Sequences that caught injected bugs while these tests were written (the parent's link
/// count on a replacing rename, a move into the own subtree, a rename between hard links).
#[test]
fn model_regressions() {
    use Op::*;
    for ops in [
        vec![
            Mkdir(vec!["b"]),
            Mkdir(vec!["c"]),
            Rename(vec!["b"], vec!["c"], false),
        ],
        vec![Mkdir(vec!["a"]), Rename(vec!["a"], vec!["a", "a"], false)],
        vec![
            Create(vec!["b"], false),
            Link(vec!["b"], vec!["c"]),
            Rename(vec!["b"], vec!["b"], false),
        ],
    ] {
        run(ops).unwrap();
    }
}
