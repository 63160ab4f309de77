//! File windows: the memory behind K42's exclusive file object. The file server copies a
//! regular file into a memory object, maps it, and grants it to the one process that has the
//! file open; that process maps it too and reads and writes the file there, in ring 3, with
//! no call to the server. The object's first page is a [`Header`] (the lock, the file's size,
//! the shared offset of the open file); the file's bytes follow from the second page on.
//!
//! The lock protocol (model-checked with loom in `tests/loom.rs`):
//! - a user of the window (the client, or a forked child sharing its mapping) takes the lock
//!   for each operation ([`Header::begin`]: idle → held by its pid), works on the bytes and
//!   the header words, and lets go ([`Header::end`]);
//! - the server swaps the file out of the window ([`Header::retire`]: idle → retired) when it
//!   must mediate the file itself: a second process opens it, a process without the mapping
//!   calls about it, or the window must grow. It waits for an operation in flight to end (or
//!   for its holder to be gone), and from then on the window is the server's alone to read:
//!   every later [`Header::begin`] fails, and its user goes to the server instead. This is
//!   K42's hot-swap with its phases: new operations are turned away, the one in flight
//!   drains, the state moves to the new object, and the new object serves.
//!
//! The bytes are plain shared memory: whoever holds the lock may touch them, and nobody else
//! does (a process that breaks the protocol can spoil only the contents of that one file).
#![allow(unsafe_code)]

use core::ops::Range;

use alloc::collections::BTreeMap;

use crate::sync::{AtomicU64, Ordering};

/// Size of a page of a window.
pub const PAGE: u64 = 4096;
/// The lock word of an idle window.
pub const IDLE: u64 = 0;
/// The lock word of a retired window (the server took the file back).
pub const RETIRED: u64 = u64::MAX;

/// The words at the start of a window's first page.
#[repr(C)]
pub struct Header {
    /// [`IDLE`], [`RETIRED`], or the pid of the process holding the lock.
    lock: AtomicU64,
    /// The file's size.
    size: AtomicU64,
    /// The open file's offset (shared by every user of the window, as Linux shares an open
    /// file description's offset between the processes that inherited it).
    offset: AtomicU64,
    /// Non-zero once the bytes were written through the window.
    dirty: AtomicU64,
}

/// What [`Header::retire`] found: the state the server takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retired {
    /// The file's size.
    pub size: u64,
    /// The open file's offset.
    pub offset: u64,
    /// Whether the bytes were written through the window.
    pub dirty: bool,
    /// Whether a holder had to be given up on (it was gone before letting go).
    pub forced: bool,
}

impl Header {
    /// A header of an idle window with a file of `size` bytes at offset `offset` (for tests
    /// and the loom model; a real window's header is the zeroed page, set by [`Held`]).
    pub fn new(size: u64, offset: u64) -> Header {
        Header {
            lock: AtomicU64::new(IDLE),
            size: AtomicU64::new(size),
            offset: AtomicU64::new(offset),
            dirty: AtomicU64::new(0),
        }
    }

    /// Takes the lock for process `me` (non-zero); while another holds it, calls `wait`.
    /// Returns false once the window is retired (the caller must go to the server).
    pub fn begin(&self, me: u64, mut wait: impl FnMut()) -> bool {
        debug_assert!(me != IDLE && me != RETIRED);
        loop {
            match self
                .lock
                .compare_exchange(IDLE, me, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(RETIRED) => return false,
                Err(_) => wait(),
            }
        }
    }

    /// Lets go of the lock taken by [`Header::begin`].
    pub fn end(&self) {
        self.lock.store(IDLE, Ordering::Release);
    }

    /// Retires the window (server side): waits while a holder works, calling `holder_alive`
    /// with its pid (which returns false once that process is gone, so the lock is taken from
    /// it), then reads the state the server takes over. Retiring twice is harmless.
    pub fn retire(&self, mut holder_alive: impl FnMut(u64) -> bool) -> Retired {
        let mut forced = false;
        loop {
            match self
                .lock
                .compare_exchange(IDLE, RETIRED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) | Err(RETIRED) => break,
                Err(holder) => {
                    if !holder_alive(holder)
                        && self
                            .lock
                            .compare_exchange(holder, RETIRED, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                    {
                        forced = true;
                        break;
                    }
                }
            }
        }
        Retired {
            size: self.size.load(Ordering::Relaxed),
            offset: self.offset.load(Ordering::Relaxed),
            dirty: self.dirty.load(Ordering::Relaxed) != 0,
            forced,
        }
    }

    /// Whether the window is retired.
    pub fn is_retired(&self) -> bool {
        self.lock.load(Ordering::Acquire) == RETIRED
    }

    /// The file's size (exact for the lock holder; for others, as last written: `stat`).
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Sets the size (lock holder).
    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Relaxed);
    }

    /// The shared offset (lock holder).
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Sets the shared offset (lock holder).
    pub fn set_offset(&self, offset: u64) {
        self.offset.store(offset, Ordering::Relaxed);
    }

    /// Notes that the bytes changed (lock holder).
    pub fn mark_dirty(&self) {
        self.dirty.store(1, Ordering::Relaxed);
    }
}

/// A mapped window: `pages` pages at `base` in this process, the first being the [`Header`].
/// (Under loom it compiles but is never made: the model checks [`Header`] alone.)
#[derive(Debug)]
pub struct Window {
    base: u64,
    pages: u64,
}

/// Why a write through a window did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// The window is retired: ask the server.
    Retired,
    /// The write would end past the window's capacity (the end it needs is given).
    NoRoom(u64),
}

impl Window {
    /// A window over the `pages` pages mapped read-write at `base` (at least two).
    ///
    /// # Safety
    /// The pages must stay mapped read-write for as long as the `Window` lives, and be shared
    /// with other processes only through this module's protocol; nothing else in this process
    /// may make Rust references to them.
    pub unsafe fn new(base: u64, pages: u64) -> Window {
        debug_assert!(pages >= 2 && base.is_multiple_of(PAGE));
        Window { base, pages }
    }

    /// Where the window is mapped.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Its length in pages (header included).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// How many bytes of file it holds.
    pub fn capacity(&self) -> u64 {
        (self.pages - 1) * PAGE
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: `new`'s contract: the first page is mapped for the window's life; a zeroed
        // page is a valid header (all words atomic), and it is only reached through atomics.
        unsafe { &*(self.base as *const Header) }
    }

    /// The file's bytes `range` (within the capacity), for whoever holds the lock or retired
    /// the window.
    // The memory is not owned by `self`: the lock, not the borrow, makes the access exclusive.
    #[allow(clippy::mut_from_ref)]
    fn bytes(&self, range: Range<u64>) -> &mut [u8] {
        assert!(range.start <= range.end && range.end <= self.capacity());
        // SAFETY: inside the mapped data pages (`new`'s contract, checked bounds); the caller
        // holds the lock (or retired the window), so no other user touches these bytes, and
        // the slice does not outlive the operation that holds it.
        unsafe {
            core::slice::from_raw_parts_mut(
                (self.base + PAGE + range.start) as *mut u8,
                (range.end - range.start) as usize,
            )
        }
    }

    /// Runs `f` with the lock held by process `me`; `None` if the window is retired.
    pub fn with_lock<T>(
        &self,
        me: u64,
        wait: impl FnMut(),
        f: impl FnOnce(&Held<'_>) -> T,
    ) -> Option<T> {
        if !self.header().begin(me, wait) {
            return None;
        }
        let held = Held { window: self };
        let out = f(&held);
        self.header().end();
        Some(out)
    }

    /// Reads the bytes of a retired window (the server, after [`Header::retire`]).
    pub fn retired_bytes(&self, len: u64) -> &[u8] {
        debug_assert!(self.header().is_retired());
        self.bytes(0..len.min(self.capacity()))
    }
}

/// A window whose lock is held: the file operations.
pub struct Held<'a> {
    window: &'a Window,
}

impl Held<'_> {
    /// The header.
    pub fn header(&self) -> &Header {
        self.window.header()
    }

    /// Copies from `pos` (or the shared offset, advancing it) into `out`; 0 at the end.
    pub fn read(&self, out: &mut [u8], at: Option<u64>) -> usize {
        let h = self.header();
        let pos = at.unwrap_or_else(|| h.offset());
        let size = h.size().min(self.window.capacity());
        let n = size.saturating_sub(pos).min(out.len() as u64);
        if n > 0 {
            out[..n as usize].copy_from_slice(self.window.bytes(pos..pos + n));
        }
        if at.is_none() {
            h.set_offset(pos + n);
        }
        n as usize
    }

    /// Writes `data` at `pos` (or at the end with `append`, or at the shared offset,
    /// advancing it), growing the file; the gap before a write past the end reads as zeros.
    pub fn write(&self, data: &[u8], at: Option<u64>, append: bool) -> Result<usize, WindowError> {
        let h = self.header();
        let pos = match at {
            Some(pos) => pos,
            None if append => h.size(),
            None => h.offset(),
        };
        let end = pos
            .checked_add(data.len() as u64)
            .ok_or(WindowError::NoRoom(u64::MAX))?;
        if end > self.window.capacity() {
            return Err(WindowError::NoRoom(end));
        }
        self.window.bytes(pos..end).copy_from_slice(data);
        h.mark_dirty();
        h.set_size(h.size().max(end));
        if at.is_none() {
            h.set_offset(end);
        }
        Ok(data.len())
    }

    /// Sets the file's size; bytes cut off are zeroed, so growing again shows zeros.
    pub fn truncate(&self, len: u64) -> Result<(), WindowError> {
        if len > self.window.capacity() {
            return Err(WindowError::NoRoom(len));
        }
        let h = self.header();
        let size = h.size();
        if len < size {
            self.window.bytes(len..size).fill(0);
        }
        h.set_size(len);
        h.mark_dirty();
        Ok(())
    }

    /// Fills a fresh window (server): the file's bytes come from `fill`, which writes into
    /// the slice it is given; the size and offset are set.
    pub fn fill(&self, size: u64, offset: u64, fill: impl FnOnce(&mut [u8])) {
        let size = size.min(self.window.capacity());
        fill(self.window.bytes(0..size));
        self.header().set_size(size);
        self.header().set_offset(offset);
    }
}

/// A first-fit allocator of page-aligned address ranges inside one area (where a process
/// maps its file windows).
#[derive(Debug)]
pub struct AddressRanges {
    area: Range<u64>,
    /// Ranges in use: start → length.
    used: BTreeMap<u64, u64>,
}

impl AddressRanges {
    /// An allocator over `area` (page-aligned).
    pub const fn new(area: Range<u64>) -> AddressRanges {
        AddressRanges {
            area,
            used: BTreeMap::new(),
        }
    }

    /// A free range of `len` bytes (rounded up to pages), or `None` when none is left.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let len = len.checked_next_multiple_of(PAGE)?.max(PAGE);
        let mut at = self.area.start;
        for (&start, &used) in &self.used {
            if start - at >= len {
                break;
            }
            at = start + used;
        }
        if self.area.end - at < len {
            return None;
        }
        self.used.insert(at, len);
        Some(at)
    }

    /// Gives back the range that starts at `start`.
    pub fn free(&mut self, start: u64) {
        self.used.remove(&start);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A page-aligned buffer of `pages` pages and a window over it.
    fn window(pages: u64) -> (Vec<u64>, Window) {
        let mut memory = vec![0u64; (pages * PAGE / 8) as usize + PAGE as usize / 8];
        let base = (memory.as_mut_ptr() as u64).next_multiple_of(PAGE);
        // SAFETY: `memory` outlives the window in every test and holds `pages` aligned pages
        // from `base`; only the window touches them.
        (memory, unsafe { Window::new(base, pages) })
    }

    fn no_wait() {
        panic!("nobody else holds the lock here");
    }

    #[test]
    fn reads_writes_and_offsets() {
        let (_m, w) = window(3);
        assert_eq!(w.capacity(), 2 * PAGE);
        w.with_lock(7, no_wait, |h| {
            h.fill(5, 0, |b| b.copy_from_slice(b"hello"))
        })
        .unwrap();
        let mut out = [0u8; 8];
        let n = w.with_lock(7, no_wait, |h| h.read(&mut out, None)).unwrap();
        assert_eq!(&out[..n], b"hello");
        assert_eq!(w.header().offset(), 5);
        // At the end: 0, offset unchanged.
        assert_eq!(w.with_lock(7, no_wait, |h| h.read(&mut out, None)), Some(0));
        // A write past the end leaves zeros in the gap, and moves the offset.
        w.with_lock(7, no_wait, |h| h.write(b"!", Some(9), false))
            .unwrap()
            .unwrap();
        assert_eq!(w.header().size(), 10);
        let n = w
            .with_lock(7, no_wait, |h| h.read(&mut out, Some(3)))
            .unwrap();
        assert_eq!(&out[..n], b"lo\0\0\0\0!");
        w.with_lock(7, no_wait, |h| h.write(b"XY", None, true))
            .unwrap()
            .unwrap();
        assert_eq!(w.header().size(), 12);
        assert_eq!(w.header().offset(), 12);
        // Past the capacity: refused with the end it would need.
        let big = vec![1u8; PAGE as usize * 2];
        assert_eq!(
            w.with_lock(7, no_wait, |h| h.write(&big, Some(1), false)),
            Some(Err(WindowError::NoRoom(2 * PAGE + 1)))
        );
        assert_eq!(w.header().size(), 12, "a refused write changes nothing");
    }

    #[test]
    fn truncate_zeroes_what_it_cuts() {
        let (_m, w) = window(2);
        w.with_lock(1, no_wait, |h| h.write(b"abcdef", Some(0), false))
            .unwrap()
            .unwrap();
        w.with_lock(1, no_wait, |h| h.truncate(2)).unwrap().unwrap();
        w.with_lock(1, no_wait, |h| h.truncate(6)).unwrap().unwrap();
        let mut out = [9u8; 6];
        w.with_lock(1, no_wait, |h| h.read(&mut out, Some(0)));
        assert_eq!(&out, b"ab\0\0\0\0");
        assert_eq!(
            w.with_lock(1, no_wait, |h| h.truncate(PAGE + 1)),
            Some(Err(WindowError::NoRoom(PAGE + 1)))
        );
    }

    #[test]
    fn retired_windows_turn_users_away() {
        let (_m, w) = window(2);
        w.with_lock(3, no_wait, |h| h.write(b"data", None, false))
            .unwrap()
            .unwrap();
        let state = w.header().retire(|_| panic!("nobody holds it"));
        assert_eq!(
            state,
            Retired {
                size: 4,
                offset: 4,
                dirty: true,
                forced: false
            }
        );
        assert_eq!(w.retired_bytes(state.size), b"data");
        assert!(w.with_lock(3, no_wait, |_| ()).is_none());
        // Twice is harmless.
        assert_eq!(w.header().retire(|_| true).size, 4);
    }

    #[test]
    fn a_dead_holder_loses_the_lock() {
        let header = Header::new(0, 0);
        assert!(header.begin(42, no_wait));
        let mut asked = Vec::new();
        let state = header.retire(|pid| {
            asked.push(pid);
            asked.len() < 3
        });
        assert!(state.forced);
        assert_eq!(asked, [42, 42, 42]);
        assert!(!header.begin(42, no_wait));
    }

    #[test]
    fn address_ranges_first_fit() {
        let mut r = AddressRanges::new(0x10000..0x10000 + 8 * PAGE);
        let a = r.alloc(1).unwrap();
        let b = r.alloc(3 * PAGE).unwrap();
        let c = r.alloc(2 * PAGE).unwrap();
        assert_eq!((a, b, c), (0x10000, 0x11000, 0x14000));
        assert_eq!(r.alloc(3 * PAGE), None, "only two pages are left");
        r.free(b);
        assert_eq!(r.alloc(2 * PAGE), Some(b), "the hole is reused");
        assert_eq!(r.alloc(PAGE), Some(b + 2 * PAGE));
        assert_eq!(r.alloc(2 * PAGE), Some(0x16000));
        assert_eq!(r.alloc(PAGE), None);
        assert_eq!(r.alloc(u64::MAX), None);
    }
}

/// Memory objects for host tests of the file server: page-aligned buffers kept until the
/// registry is dropped, with windows on them for the "server" and for "clients".
#[cfg(test)]
pub(crate) mod host {
    use alloc::collections::BTreeMap;
    use alloc::sync::Arc;
    use alloc::vec;
    use alloc::vec::Vec;

    use spin::Mutex;

    use super::{Window, PAGE};
    use crate::fs::server::SharedMemory;

    /// The objects and what happened to them.
    #[derive(Default)]
    pub(crate) struct Registry {
        objects: BTreeMap<u64, (Vec<u64>, u64)>,
        grants: Vec<(u64, u64)>,
        /// Objects whose server window was released.
        pub(crate) released: Vec<u64>,
        /// Processes that are gone.
        pub(crate) dead: Vec<u64>,
        /// Pauses taken while waiting for a holder.
        pub(crate) pauses: usize,
    }

    /// A [`SharedMemory`] over a shared [`Registry`].
    #[derive(Clone, Default)]
    pub(crate) struct HostMemory(pub(crate) Arc<Mutex<Registry>>);

    impl HostMemory {
        fn window_on(registry: &mut Registry, id: u64) -> Option<Window> {
            let (memory, pages) = registry.objects.get_mut(&id)?;
            let base = (memory.as_mut_ptr() as u64).next_multiple_of(PAGE);
            // SAFETY: the buffer holds `pages` aligned pages from `base` and is never freed
            // or moved while the registry lives (tests keep it longer than their windows);
            // every window on it follows the lock protocol.
            Some(unsafe { Window::new(base, *pages) })
        }

        /// Maps object `id` for process `pid`, if it was granted.
        pub(crate) fn map(&self, id: u64, pid: u64) -> Option<Window> {
            let mut registry = self.0.lock();
            if !registry.grants.contains(&(id, pid)) {
                return None;
            }
            Self::window_on(&mut registry, id)
        }
    }

    impl SharedMemory for HostMemory {
        fn create(&mut self, pages: u64) -> Option<(u64, Window)> {
            let mut registry = self.0.lock();
            let id = registry.objects.len() as u64 + 1;
            let words = ((pages + 1) * PAGE / 8) as usize;
            registry.objects.insert(id, (vec![0u64; words], pages));
            Some((id, Self::window_on(&mut registry, id)?))
        }
        fn grant(&mut self, id: u64, pid: u64) -> bool {
            self.0.lock().grants.push((id, pid));
            true
        }
        fn release(&mut self, id: u64, _window: Window) {
            self.0.lock().released.push(id);
        }
        fn alive(&mut self, pid: u64) -> bool {
            !self.0.lock().dead.contains(&pid)
        }
        fn pause(&mut self) {
            self.0.lock().pauses += 1;
        }
    }
}
