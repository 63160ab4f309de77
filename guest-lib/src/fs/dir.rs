//! A directory's entries, with the stable positions `getdents64` resumes from.
//!
//! Position 0 is `.`, 1 is `..`; every name added gets the next position from 2 on, never
//! reused in this directory. A record's `d_off` is its position + 1, so a later call resumes
//! after it even if entries were added or removed meanwhile: removed names are skipped, and
//! names added later appear after every older one.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::Ino;

/// One name in a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) ino: Ino,
    pub(super) position: u64,
    pub(super) d_type: u8,
}

/// A directory's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Dir {
    /// The parent directory (the root's is itself).
    pub(super) parent: Ino,
    names: BTreeMap<Vec<u8>, Slot>,
    by_position: BTreeMap<u64, Vec<u8>>,
    next_position: u64,
}

/// First position of a name (after `.` and `..`).
const FIRST_POSITION: u64 = 2;

impl Dir {
    pub(super) fn new(parent: Ino) -> Self {
        Dir {
            parent,
            names: BTreeMap::new(),
            by_position: BTreeMap::new(),
            next_position: FIRST_POSITION,
        }
    }

    pub(super) fn get(&self, name: &[u8]) -> Option<Slot> {
        self.names.get(name).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.names.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Adds a name that is not present.
    pub(super) fn insert(&mut self, name: &[u8], ino: Ino, d_type: u8) {
        let position = self.next_position;
        self.next_position += 1;
        let old = self.names.insert(
            name.to_vec(),
            Slot {
                ino,
                position,
                d_type,
            },
        );
        debug_assert!(old.is_none(), "insert of a present name");
        self.by_position.insert(position, name.to_vec());
    }

    /// Removes a name, returning what it held.
    pub(super) fn remove(&mut self, name: &[u8]) -> Option<Slot> {
        let slot = self.names.remove(name)?;
        self.by_position.remove(&slot.position);
        Some(slot)
    }

    /// The names and their inodes, in name order.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], Slot)> {
        self.names.iter().map(|(n, s)| (&n[..], *s))
    }

    /// The names from `position` on, in position order.
    pub(super) fn starting_at(&self, position: u64) -> impl Iterator<Item = (&[u8], Slot)> {
        self.by_position
            .range(position.max(FIRST_POSITION)..)
            .filter_map(|(_, name)| Some((&name[..], *self.names.get(name)?)))
    }
}
