//! Descriptor-chain parsing (split virtqueues, virtio 1.2 section 2.7.5), with every rule a guest
//! can break checked: index range, loops and over-long chains, buffers outside guest memory,
//! device-writable buffers before device-readable ones, and the indirect-table rules.

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Descriptor flag: the chain continues at `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (otherwise device-readable).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds a table of indirect descriptors.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Size of one split-ring descriptor in bytes.
pub const DESCRIPTOR_SIZE: u64 = 16;

/// One raw split-ring descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawDescriptor {
    /// Guest-physical address of the buffer.
    pub addr: u64,
    /// Buffer length in bytes.
    pub len: u32,
    /// `VIRTQ_DESC_F_*` flags.
    pub flags: u16,
    /// Index of the next descriptor when `VIRTQ_DESC_F_NEXT` is set.
    pub next: u16,
}

impl RawDescriptor {
    /// Decodes a descriptor from its 16 little-endian bytes.
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        RawDescriptor {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// Encodes the descriptor as 16 little-endian bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Why a descriptor chain was rejected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChainError {
    /// The head index from the available ring is not below the queue size.
    #[error("chain head {head} is outside the descriptor table of {size} entries")]
    HeadOutOfRange {
        /// The head index.
        head: u16,
        /// Entries in the table.
        size: u16,
    },
    /// A `next` field points outside the (direct or indirect) descriptor table.
    #[error("descriptor {index} links to {next}, outside the table of {size} entries")]
    NextOutOfRange {
        /// Index of the linking descriptor.
        index: u16,
        /// Its `next` field.
        next: u16,
        /// Entries in the table.
        size: u16,
    },
    /// More descriptors than the queue size: a loop or an over-long chain.
    #[error("chain longer than {max} descriptors (a loop or an over-long chain)")]
    TooLong {
        /// The limit (the queue size).
        max: u16,
    },
    /// A descriptor could not be read from guest memory.
    #[error("descriptor at {addr:#x} is not in guest memory")]
    DescriptorUnreadable {
        /// Its guest-physical address.
        addr: u64,
    },
    /// A buffer lies (partly) outside guest memory.
    #[error("buffer {addr:#x}+{len:#x} is not in guest memory")]
    BufferOutOfRange {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A device-readable buffer follows a device-writable one (2.7.4.2).
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// An indirect descriptor was used though VIRTIO_F_INDIRECT_DESC was not negotiated.
    #[error("indirect descriptor without VIRTIO_F_INDIRECT_DESC")]
    IndirectNotNegotiated,
    /// An indirect descriptor inside an indirect table (2.7.5.3.1).
    #[error("indirect descriptor inside an indirect table")]
    NestedIndirect,
    /// An indirect descriptor that also has `VIRTQ_DESC_F_NEXT` set (2.7.5.3.1).
    #[error("indirect descriptor with the NEXT flag")]
    IndirectWithNext,
    /// An indirect table whose length is zero, not a multiple of 16, or too large.
    #[error("indirect table length {len} is invalid")]
    BadIndirectLength {
        /// The table length in bytes.
        len: u32,
    },
    /// The buffers add up to more than 2^32 bytes (2.7.5.2).
    #[error("chain buffers add up to more than 4 GiB")]
    TotalTooLarge,
}

/// One guest buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Length in bytes (never zero: zero-length descriptors are dropped).
    pub len: u32,
}

/// A validated descriptor chain: its head index and its buffers split by direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Head index, to be returned in the used ring.
    pub head: u16,
    /// Device-readable buffers in order.
    pub readable: Vec<Segment>,
    /// Device-writable buffers in order.
    pub writable: Vec<Segment>,
    /// Buffer descriptors visited, zero-length ones included.
    pub descriptors: u16,
}

impl Chain {
    /// Total bytes of the device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

fn read_descriptor(mem: &GuestMemoryMmap, addr: GuestAddress) -> Result<RawDescriptor, ChainError> {
    let mut b = [0u8; 16];
    mem.read_slice(&mut b, addr)
        .map_err(|_| ChainError::DescriptorUnreadable { addr: addr.0 })?;
    Ok(RawDescriptor::from_bytes(&b))
}

/// Whether `addr..addr+len` lies entirely in guest memory.
pub fn range_in_memory(mem: &GuestMemoryMmap, addr: GuestAddress, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let Ok(len) = usize::try_from(len) else {
        return false;
    };
    GuestMemoryBackend::check_range(mem, addr, len)
}

/// Walks the chain starting at `head` in the descriptor table at `desc_table` of a queue with
/// `queue_size` entries, checking every rule; `indirect` says whether VIRTIO_F_INDIRECT_DESC was
/// negotiated. A direct chain may not exceed `queue_size` descriptors, a chain within an indirect
/// table not the table's entries: anything longer must contain a loop.
pub fn parse_chain(
    mem: &GuestMemoryMmap,
    desc_table: GuestAddress,
    queue_size: u16,
    head: u16,
    indirect: bool,
) -> Result<Chain, ChainError> {
    if head >= queue_size {
        return Err(ChainError::HeadOutOfRange {
            head,
            size: queue_size,
        });
    }
    let mut chain = Chain {
        head,
        ..Chain::default()
    };
    let mut table = desc_table;
    let mut table_size = queue_size;
    let mut in_indirect = false;
    let mut index = head;
    let mut total: u64 = 0;
    let mut limit = queue_size;
    let mut budget = limit;
    loop {
        if budget == 0 {
            return Err(ChainError::TooLong { max: limit });
        }
        budget -= 1;
        chain.descriptors += 1;
        let addr = table
            .0
            .checked_add(u64::from(index) * DESCRIPTOR_SIZE)
            .map(GuestAddress)
            .ok_or(ChainError::DescriptorUnreadable { addr: u64::MAX })?;
        let desc = read_descriptor(mem, addr)?;
        if desc.flags & VIRTQ_DESC_F_INDIRECT != 0 {
            if !indirect {
                return Err(ChainError::IndirectNotNegotiated);
            }
            if in_indirect {
                return Err(ChainError::NestedIndirect);
            }
            if desc.flags & VIRTQ_DESC_F_NEXT != 0 {
                return Err(ChainError::IndirectWithNext);
            }
            let entries = desc.len / DESCRIPTOR_SIZE as u32;
            if desc.len == 0
                || u64::from(desc.len) % DESCRIPTOR_SIZE != 0
                || entries > u32::from(u16::MAX)
            {
                return Err(ChainError::BadIndirectLength { len: desc.len });
            }
            if !range_in_memory(mem, GuestAddress(desc.addr), u64::from(desc.len)) {
                return Err(ChainError::BufferOutOfRange {
                    addr: desc.addr,
                    len: desc.len,
                });
            }
            table = GuestAddress(desc.addr);
            table_size = entries as u16;
            in_indirect = true;
            index = 0;
            // Within the table no descriptor can be visited twice without a loop; the indirect
            // descriptor itself does not count against the chain length.
            limit = table_size;
            budget = limit;
            chain.descriptors -= 1;
            continue;
        }
        if desc.len > 0 {
            if !range_in_memory(mem, GuestAddress(desc.addr), u64::from(desc.len)) {
                return Err(ChainError::BufferOutOfRange {
                    addr: desc.addr,
                    len: desc.len,
                });
            }
            total += u64::from(desc.len);
            if total > u64::from(u32::MAX) {
                return Err(ChainError::TotalTooLarge);
            }
            let seg = Segment {
                addr: GuestAddress(desc.addr),
                len: desc.len,
            };
            if desc.flags & VIRTQ_DESC_F_WRITE != 0 {
                chain.writable.push(seg);
            } else {
                if !chain.writable.is_empty() {
                    return Err(ChainError::ReadableAfterWritable);
                }
                chain.readable.push(seg);
            }
        }
        if desc.flags & VIRTQ_DESC_F_NEXT == 0 {
            return Ok(chain);
        }
        if desc.next >= table_size {
            return Err(ChainError::NextOutOfRange {
                index,
                next: desc.next,
                size: table_size,
            });
        }
        index = desc.next;
    }
}

/// Reads `buf.len()` bytes starting `offset` bytes into the concatenation of `segs`; returns
/// false when the segments are too short or memory cannot be read.
pub fn read_at(mem: &GuestMemoryMmap, segs: &[Segment], offset: u64, buf: &mut [u8]) -> bool {
    copy_segments(segs, offset, buf.len(), |addr, range| {
        mem.read_slice(&mut buf[range], addr).is_ok()
    })
}

/// Writes `data` starting `offset` bytes into the concatenation of `segs`; returns false when the
/// segments are too short or memory cannot be written.
pub fn write_at(mem: &GuestMemoryMmap, segs: &[Segment], offset: u64, data: &[u8]) -> bool {
    copy_segments(segs, offset, data.len(), |addr, range| {
        mem.write_slice(&data[range], addr).is_ok()
    })
}

fn copy_segments(
    segs: &[Segment],
    mut offset: u64,
    len: usize,
    mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> bool,
) -> bool {
    let mut done = 0usize;
    for seg in segs {
        if done == len {
            break;
        }
        let seg_len = u64::from(seg.len);
        if offset >= seg_len {
            offset -= seg_len;
            continue;
        }
        let avail = (seg_len - offset) as usize;
        let n = avail.min(len - done);
        let Some(addr) = seg.addr.0.checked_add(offset) else {
            return false;
        };
        if !f(GuestAddress(addr), done..done + n) {
            return false;
        }
        done += n;
        offset = 0;
    }
    done == len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn put(mem: &GuestMemoryMmap, table: u64, i: u16, d: RawDescriptor) {
        mem.write_slice(&d.to_bytes(), GuestAddress(table + u64::from(i) * 16))
            .unwrap();
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor {
            addr,
            len,
            flags,
            next,
        }
    }

    #[test]
    fn parses_read_then_write() {
        let m = mem();
        put(&m, 0, 0, desc(0x1000, 16, VIRTQ_DESC_F_NEXT, 2));
        put(
            &m,
            0,
            2,
            desc(0x2000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3),
        );
        put(&m, 0, 3, desc(0x3000, 1, VIRTQ_DESC_F_WRITE, 0));
        let c = parse_chain(&m, GuestAddress(0), 8, 0, false).unwrap();
        assert_eq!(c.readable.len(), 1);
        assert_eq!(c.writable.len(), 2);
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 513);
    }

    #[test]
    fn rejects_loops_and_bad_links() {
        let m = mem();
        put(&m, 0, 0, desc(0x1000, 16, VIRTQ_DESC_F_NEXT, 1));
        put(&m, 0, 1, desc(0x1000, 16, VIRTQ_DESC_F_NEXT, 0));
        assert_eq!(
            parse_chain(&m, GuestAddress(0), 8, 0, false),
            Err(ChainError::TooLong { max: 8 })
        );
        put(&m, 0, 1, desc(0x1000, 16, VIRTQ_DESC_F_NEXT, 9));
        assert!(matches!(
            parse_chain(&m, GuestAddress(0), 8, 0, false),
            Err(ChainError::NextOutOfRange { .. })
        ));
        assert!(matches!(
            parse_chain(&m, GuestAddress(0), 8, 8, false),
            Err(ChainError::HeadOutOfRange { .. })
        ));
    }

    #[test]
    fn rejects_direction_and_range_errors() {
        let m = mem();
        put(
            &m,
            0,
            0,
            desc(0x1000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1),
        );
        put(&m, 0, 1, desc(0x1000, 16, 0, 0));
        assert_eq!(
            parse_chain(&m, GuestAddress(0), 8, 0, false),
            Err(ChainError::ReadableAfterWritable)
        );
        put(&m, 0, 0, desc(0xfff0, 0x20, 0, 0));
        assert!(matches!(
            parse_chain(&m, GuestAddress(0), 8, 0, false),
            Err(ChainError::BufferOutOfRange { .. })
        ));
        put(&m, 0, 0, desc(u64::MAX - 4, 16, 0, 0));
        assert!(matches!(
            parse_chain(&m, GuestAddress(0), 8, 0, false),
            Err(ChainError::BufferOutOfRange { .. })
        ));
    }

    #[test]
    fn zero_length_descriptors_are_dropped() {
        let m = mem();
        put(&m, 0, 0, desc(0xdead_0000_0000, 0, VIRTQ_DESC_F_NEXT, 1));
        put(&m, 0, 1, desc(0x1000, 4, 0, 0));
        let c = parse_chain(&m, GuestAddress(0), 8, 0, false).unwrap();
        assert_eq!(
            c.readable,
            vec![Segment {
                addr: GuestAddress(0x1000),
                len: 4
            }]
        );
        assert_eq!(c.descriptors, 2);
    }

    #[test]
    fn indirect_tables() {
        let m = mem();
        put(&m, 0, 0, desc(0x4000, 32, VIRTQ_DESC_F_INDIRECT, 0));
        put(&m, 0x4000, 0, desc(0x1000, 16, VIRTQ_DESC_F_NEXT, 1));
        put(&m, 0x4000, 1, desc(0x2000, 1, VIRTQ_DESC_F_WRITE, 0));
        assert_eq!(
            parse_chain(&m, GuestAddress(0), 8, 0, false),
            Err(ChainError::IndirectNotNegotiated)
        );
        let c = parse_chain(&m, GuestAddress(0), 8, 0, true).unwrap();
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 1);
        put(&m, 0x4000, 1, desc(0x4000, 32, VIRTQ_DESC_F_INDIRECT, 0));
        assert_eq!(
            parse_chain(&m, GuestAddress(0), 8, 0, true),
            Err(ChainError::NestedIndirect)
        );
        put(&m, 0, 0, desc(0x4000, 33, VIRTQ_DESC_F_INDIRECT, 0));
        assert!(matches!(
            parse_chain(&m, GuestAddress(0), 8, 0, true),
            Err(ChainError::BadIndirectLength { .. })
        ));
        put(
            &m,
            0,
            0,
            desc(0x4000, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1),
        );
        assert_eq!(
            parse_chain(&m, GuestAddress(0), 8, 0, true),
            Err(ChainError::IndirectWithNext)
        );
    }

    #[test]
    fn segment_copies_span_buffers() {
        let m = mem();
        let segs = [
            Segment {
                addr: GuestAddress(0x1000),
                len: 3,
            },
            Segment {
                addr: GuestAddress(0x2000),
                len: 5,
            },
        ];
        assert!(write_at(&m, &segs, 1, b"abcdef"));
        let mut out = [0u8; 7];
        assert!(read_at(&m, &segs, 1, &mut out));
        assert_eq!(&out[..6], b"abcdef");
        assert!(!read_at(&m, &segs, 4, &mut [0u8; 5]));
        assert!(write_at(&m, &segs, 8, &[]));
    }
}
