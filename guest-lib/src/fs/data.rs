//! The contents of a regular file: page-sized chunks, allocated only where written, so a file
//! with holes (a write far past the end) costs only the pages it touched.
//!
//! Invariant: every stored byte at or past `size` is zero, so growing a file (by `truncate` or
//! by a write past the end) exposes zeros without touching the pages.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;

use super::FsError;

/// Size of one chunk (the guest's page size, so chunks can later be mapped).
pub const PAGE_SIZE: usize = 4096;
/// Largest file size (Linux's `MAX_LFS_FILESIZE` on 64-bit).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// A regular file's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct FileData {
    size: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
    /// Where the same bytes lie contiguously in the archive the file came from, while the
    /// file is unchanged since it was unpacked (any write or truncate forgets it).
    origin: Option<u64>,
}

fn split(pos: u64) -> (u64, usize) {
    (pos / PAGE_SIZE as u64, (pos % PAGE_SIZE as u64) as usize)
}

impl FileData {
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// The offset of these bytes in the archive they were unpacked from, if unchanged since.
    pub(super) fn origin(&self) -> Option<u64> {
        self.origin
    }

    /// Records that these bytes are also at `offset` in the archive they came from.
    pub(super) fn set_origin(&mut self, offset: u64) {
        self.origin = Some(offset);
    }

    /// Pages holding data (for `st_blocks`).
    pub(super) fn pages(&self) -> usize {
        self.pages.len()
    }

    /// The page `index` if it is allocated (holes are `None` and read as zeros).
    pub(super) fn page(&self, index: u64) -> Option<&[u8]> {
        self.pages.get(&index).map(|p| &p[..])
    }

    /// Copies bytes from `offset` into `buf`; returns how many (0 at or past the end).
    pub(super) fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        if offset >= self.size {
            return 0;
        }
        let n = buf
            .len()
            .min((self.size - offset).min(usize::MAX as u64) as usize);
        let mut done = 0;
        while done < n {
            let (index, within) = split(offset + done as u64);
            let len = (PAGE_SIZE - within).min(n - done);
            let out = &mut buf[done..done + len];
            match self.pages.get(&index) {
                Some(page) => out.copy_from_slice(&page[within..within + len]),
                None => out.fill(0),
            }
            done += len;
        }
        n
    }

    /// Writes `data` at `offset`, extending the file (the gap reads as zeros).
    pub(super) fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<usize, FsError> {
        self.origin = None;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let mut done = 0;
        while done < data.len() {
            let (index, within) = split(offset + done as u64);
            let len = (PAGE_SIZE - within).min(data.len() - done);
            let page = self
                .pages
                .entry(index)
                .or_insert_with(|| vec![0; PAGE_SIZE].into_boxed_slice());
            page[within..within + len].copy_from_slice(&data[done..done + len]);
            done += len;
        }
        self.size = self.size.max(end);
        Ok(data.len())
    }

    /// Sets the size: drops the pages past a shorter end and zeroes the tail of the last one.
    pub(super) fn truncate(&mut self, len: u64) -> Result<(), FsError> {
        self.origin = None;
        if len > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        if len < self.size {
            let (index, within) = split(len);
            let first_gone = if within == 0 { index } else { index + 1 };
            self.pages.split_off(&first_gone);
            if within != 0 {
                if let Some(page) = self.pages.get_mut(&index) {
                    page[within..].fill(0);
                }
            }
        }
        self.size = len;
        Ok(())
    }

    /// The whole contents (tests, small files).
    #[cfg(test)]
    pub(super) fn to_vec(&self) -> alloc::vec::Vec<u8> {
        let mut out = vec![0; self.size as usize];
        self.read_at(0, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_holes() {
        let mut f = FileData::default();
        assert_eq!(f.write_at(0, b"hello").unwrap(), 5);
        assert_eq!(f.to_vec(), b"hello");
        // Across a page boundary.
        let at = PAGE_SIZE as u64 - 2;
        f.write_at(at, b"wxyz").unwrap();
        assert_eq!(f.size(), at + 4);
        assert_eq!(f.pages(), 2);
        let mut buf = [9u8; 8];
        assert_eq!(f.read_at(at - 2, &mut buf), 6);
        assert_eq!(&buf[..6], b"\0\0wxyz");
        // A write far away leaves a hole that costs nothing.
        f.write_at(100 * PAGE_SIZE as u64, b"!").unwrap();
        assert_eq!(f.pages(), 3);
        assert_eq!(f.read_at(50 * PAGE_SIZE as u64, &mut buf), 8);
        assert_eq!(buf, [0; 8]);
        assert!(f.page(50).is_none() && f.page(100).is_some());
        assert_eq!(f.read_at(f.size(), &mut buf), 0);
        assert_eq!(f.read_at(u64::MAX, &mut buf), 0);
    }

    #[test]
    fn truncate_zeroes_what_it_cuts() {
        let mut f = FileData::default();
        f.write_at(0, &[7u8; 3 * PAGE_SIZE]).unwrap();
        f.truncate(PAGE_SIZE as u64 + 10).unwrap();
        assert_eq!(f.pages(), 2);
        // Growing again shows zeros where the old bytes were.
        f.truncate(3 * PAGE_SIZE as u64).unwrap();
        let data = f.to_vec();
        assert!(data[..PAGE_SIZE + 10].iter().all(|&b| b == 7));
        assert!(data[PAGE_SIZE + 10..].iter().all(|&b| b == 0));
        f.truncate(PAGE_SIZE as u64).unwrap();
        assert_eq!(f.pages(), 1, "an exact page boundary keeps no partial page");
        f.truncate(0).unwrap();
        assert_eq!((f.size(), f.pages()), (0, 0));
    }

    #[test]
    fn size_limits() {
        let mut f = FileData::default();
        assert_eq!(f.write_at(MAX_FILE_SIZE, b"x"), Err(FsError::FileTooBig));
        assert_eq!(f.write_at(u64::MAX, b"x"), Err(FsError::FileTooBig));
        assert_eq!(f.truncate(MAX_FILE_SIZE + 1), Err(FsError::FileTooBig));
        f.write_at(MAX_FILE_SIZE - 1, b"x").unwrap();
        assert_eq!(f.size(), MAX_FILE_SIZE);
        assert_eq!(f.pages(), 1);
    }
}
