//! virtio-blk, virtio-rng and virtio-console driven by the crate's test driver, including the
//! malformed requests of issue 6.

use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use k42_devices::testing::{reg, TestDriver, BUFFERS_BASE};
use k42_devices::virtio::block::*;
use k42_devices::virtio::chain::{RawDescriptor, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use k42_devices::virtio::console::{Console, RX_QUEUE, TX_QUEUE};
use k42_devices::virtio::rng::Rng;
use k42_devices::virtio::STATUS_DEVICE_NEEDS_RESET;
use vmm_sys_util::tempfile::TempFile;

const HDR: u64 = BUFFERS_BASE;
const DATA: u64 = BUFFERS_BASE + 0x1000;
const STATUS: u64 = BUFFERS_BASE + 0x100;

fn header(d: &TestDriver, ty: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&ty.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    d.write_mem(HDR, &h);
    d.write_mem(STATUS, &[0xff]);
}

fn status(d: &TestDriver) -> u8 {
    d.read_mem(STATUS, 1)[0]
}

fn image(sectors: u64) -> TempFile {
    let tmp = TempFile::new().unwrap();
    tmp.as_file().set_len(sectors * SECTOR_SIZE).unwrap();
    tmp
}

fn open(tmp: &TempFile, readonly: bool, id: Option<&str>) -> TestDriver {
    let cfg = BlockConfig {
        path: tmp.as_path().to_path_buf(),
        readonly,
        id: id.map(str::to_string),
    };
    let mut d = TestDriver::new(Box::new(Block::open(&cfg).unwrap()));
    assert!(d.init(u64::MAX, 64));
    d
}

/// Sends a request: header, then `data` device-readable or -writable, then the status byte.
fn request(d: &mut TestDriver, ty: u32, sector: u64, data: Option<(u32, bool)>) -> (u8, u32) {
    header(d, ty, sector);
    let mut bufs = vec![(HDR, 16, false)];
    if let Some((len, writable)) = data {
        bufs.push((DATA, len, writable));
    }
    bufs.push((STATUS, 1, true));
    d.submit(0, &bufs);
    let used = d.take_used(0);
    assert_eq!(used.len(), 1, "request not completed");
    (status(d), used[0].1)
}

#[test]
fn block_write_reaches_the_file_and_reads_back() {
    let tmp = image(64);
    let mut d = open(&tmp, false, None);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    d.write_mem(DATA, &pattern);
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_OUT, 8, Some((4096, false))),
        (0, 1)
    );
    let mut on_disk = vec![0u8; 4096];
    tmp.as_file().read_exact_at(&mut on_disk, 8 * 512).unwrap();
    assert_eq!(on_disk, pattern);

    tmp.as_file().write_all_at(&[0x5a; 1024], 2 * 512).unwrap();
    d.write_mem(DATA, &[0u8; 1024]);
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_IN, 2, Some((1024, true))),
        (0, 1025)
    );
    assert_eq!(d.read_mem(DATA, 1024), vec![0x5a; 1024]);
    assert_eq!(request(&mut d, VIRTIO_BLK_T_FLUSH, 0, None), (0, 1));
}

#[test]
fn block_data_spread_over_many_buffers() {
    let tmp = image(16);
    let mut d = open(&tmp, false, None);
    d.write_mem(DATA, &[1u8; 512]);
    d.write_mem(DATA + 0x2000, &[2u8; 1024]);
    header(&d, VIRTIO_BLK_T_OUT, 1);
    d.submit(
        0,
        &[
            (HDR, 8, false),
            (HDR + 8, 8, false),
            (DATA, 512, false),
            (DATA + 0x2000, 1024, false),
            (STATUS, 1, true),
        ],
    );
    assert_eq!(d.take_used(0).len(), 1);
    assert_eq!(status(&d), VIRTIO_BLK_S_OK);
    let mut buf = vec![0u8; 1536];
    tmp.as_file().read_exact_at(&mut buf, 512).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 1) && buf[512..].iter().all(|&b| b == 2));
}

#[test]
fn block_capacity_and_range_checks() {
    let tmp = image(16);
    let mut d = open(&tmp, false, None);
    let mut cap = [0u8; 8];
    d.transport.read(reg::CONFIG, &mut cap[..4]);
    d.transport.read(reg::CONFIG + 4, &mut cap[4..]);
    assert_eq!(u64::from_le_bytes(cap), 16);
    // The last sector is fine, one past it is not.
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_IN, 15, Some((512, true))).0,
        VIRTIO_BLK_S_OK
    );
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_IN, 16, Some((512, true))).0,
        VIRTIO_BLK_S_IOERR
    );
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_OUT, 15, Some((1024, false))).0,
        VIRTIO_BLK_S_IOERR
    );
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_IN, u64::MAX / 256, Some((512, true))).0,
        VIRTIO_BLK_S_IOERR
    );
    // Not whole sectors.
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_IN, 0, Some((100, true))).0,
        VIRTIO_BLK_S_IOERR
    );
    // Unknown request type.
    assert_eq!(request(&mut d, 77, 0, None).0, VIRTIO_BLK_S_UNSUPP);
    assert_eq!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
}

#[test]
fn block_wrong_direction_is_ioerr() {
    let tmp = image(16);
    let mut d = open(&tmp, false, None);
    tmp.as_file().write_all_at(&[9; 512], 0).unwrap();
    // A read whose data buffer is device-readable.
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_IN, 0, Some((512, false))).0,
        VIRTIO_BLK_S_IOERR
    );
    // A write whose data buffer is device-writable: nothing may reach the file.
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_OUT, 0, Some((512, true))).0,
        VIRTIO_BLK_S_IOERR
    );
    let mut buf = [0u8; 512];
    tmp.as_file().read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [9; 512]);
    // A header split short of 16 bytes.
    header(&d, VIRTIO_BLK_T_IN, 0);
    d.submit(0, &[(HDR, 8, false), (STATUS, 1, true)]);
    assert_eq!(d.take_used(0).len(), 1);
    assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
}

#[test]
fn block_request_without_status_byte_needs_reset() {
    let tmp = image(16);
    let mut d = open(&tmp, false, None);
    header(&d, VIRTIO_BLK_T_FLUSH, 0);
    d.submit(0, &[(HDR, 16, false)]);
    assert_ne!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
    assert!(d.transport.log().total() > 0);
}

#[test]
fn block_malformed_chains() {
    let tmp = image(16);
    // Out-of-range buffer address.
    let mut d = open(&tmp, false, None);
    header(&d, VIRTIO_BLK_T_IN, 0);
    d.submit(
        0,
        &[(HDR, 16, false), (1 << 40, 512, true), (STATUS, 1, true)],
    );
    assert_ne!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
    // Readable after writable.
    let mut d = open(&tmp, false, None);
    d.submit(0, &[(STATUS, 1, true), (HDR, 16, false)]);
    assert_ne!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
    // A chain longer than the queue (a loop through every descriptor).
    let mut d = open(&tmp, false, None);
    let descs: Vec<RawDescriptor> = (0..64u16)
        .map(|i| RawDescriptor {
            addr: HDR,
            len: 16,
            flags: VIRTQ_DESC_F_NEXT,
            next: (i + 1) % 64,
        })
        .collect();
    d.write_descriptors(0, 0, &descs);
    d.publish(0, 0);
    d.transport.notify(0);
    assert_ne!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
    // Zero-length descriptors are skipped: the request still works.
    let mut d = open(&tmp, false, None);
    header(&d, VIRTIO_BLK_T_FLUSH, 0);
    d.write_descriptors(
        0,
        0,
        &[
            RawDescriptor {
                addr: HDR,
                len: 16,
                flags: VIRTQ_DESC_F_NEXT,
                next: 1,
            },
            RawDescriptor {
                addr: 1 << 50,
                len: 0,
                flags: VIRTQ_DESC_F_NEXT,
                next: 2,
            },
            RawDescriptor {
                addr: STATUS,
                len: 1,
                flags: VIRTQ_DESC_F_WRITE,
                next: 0,
            },
        ],
    );
    d.publish(0, 0);
    d.transport.notify(0);
    assert_eq!(d.take_used(0), vec![(0, 1)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_OK);
}

#[test]
fn block_readonly_refuses_writes() {
    let tmp = image(16);
    tmp.as_file().write_all_at(&[3; 512], 0).unwrap();
    let mut d = open(&tmp, true, None);
    assert_ne!(d.device_features() & VIRTIO_BLK_F_RO, 0);
    d.write_mem(DATA, &[4; 512]);
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_OUT, 0, Some((512, false))).0,
        VIRTIO_BLK_S_IOERR
    );
    let mut seg = [0u8; 16];
    seg[8..12].copy_from_slice(&1u32.to_le_bytes());
    d.write_mem(DATA, &seg);
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_WRITE_ZEROES, 0, Some((16, false))).0,
        VIRTIO_BLK_S_IOERR
    );
    let mut buf = [0u8; 512];
    tmp.as_file().read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [3; 512]);
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_IN, 0, Some((512, true))).0,
        VIRTIO_BLK_S_OK
    );
    assert_eq!(d.read_mem(DATA, 512), vec![3; 512]);
}

#[test]
fn block_get_id() {
    let tmp = image(16);
    let mut d = open(&tmp, false, Some("disk-7"));
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_GET_ID, 0, Some((20, true))),
        (VIRTIO_BLK_S_OK, 21)
    );
    let mut want = b"disk-7".to_vec();
    want.resize(20, 0);
    assert_eq!(d.read_mem(DATA, 20), want);
    let mut d = open(&tmp, false, None);
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_GET_ID, 0, Some((20, true))).0,
        VIRTIO_BLK_S_UNSUPP
    );
}

fn segment(sector: u64, sectors: u32, flags: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    s
}

#[test]
fn block_discard_and_write_zeroes() {
    let tmp = image(64);
    tmp.as_file().write_all_at(&[0xee; 64 * 512], 0).unwrap();
    let mut d = open(&tmp, false, None);
    let features = d.device_features();
    assert_ne!(features & VIRTIO_BLK_F_WRITE_ZEROES, 0);

    d.write_mem(DATA, &segment(2, 2, 0));
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_WRITE_ZEROES, 0, Some((16, false))).0,
        VIRTIO_BLK_S_OK
    );
    d.write_mem(DATA, &segment(8, 8, 1)); // unmap allowed for write-zeroes
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_WRITE_ZEROES, 0, Some((16, false))).0,
        VIRTIO_BLK_S_OK
    );
    let mut buf = vec![0u8; 64 * 512];
    tmp.as_file().read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..1024].iter().all(|&b| b == 0xee));
    assert!(buf[1024..2048].iter().all(|&b| b == 0));
    assert!(buf[2048..4096].iter().all(|&b| b == 0xee));
    assert!(buf[4096..8192].iter().all(|&b| b == 0));
    assert!(buf[8192..].iter().all(|&b| b == 0xee));

    // Unknown flags, or unmap on a discard: UNSUPP. Beyond the end: IOERR.
    d.write_mem(DATA, &segment(0, 1, 2));
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_WRITE_ZEROES, 0, Some((16, false))).0,
        VIRTIO_BLK_S_UNSUPP
    );
    d.write_mem(DATA, &segment(60, 8, 0));
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_WRITE_ZEROES, 0, Some((16, false))).0,
        VIRTIO_BLK_S_IOERR
    );
    if features & VIRTIO_BLK_F_DISCARD != 0 {
        d.write_mem(DATA, &segment(32, 8, 1));
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_DISCARD, 0, Some((16, false))).0,
            VIRTIO_BLK_S_UNSUPP
        );
        d.write_mem(DATA, &segment(32, 8, 0));
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_DISCARD, 0, Some((16, false))).0,
            VIRTIO_BLK_S_OK
        );
        tmp.as_file()
            .read_exact_at(&mut buf[..4096], 32 * 512)
            .unwrap();
        assert!(
            buf[..4096].iter().all(|&b| b == 0),
            "discarded range reads as zeroes"
        );
    } else {
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_DISCARD, 0, Some((16, false))).0,
            VIRTIO_BLK_S_UNSUPP
        );
    }
}

#[test]
fn block_write_through_when_flush_not_negotiated() {
    let tmp = image(16);
    let cfg = BlockConfig {
        path: tmp.as_path().to_path_buf(),
        readonly: false,
        id: None,
    };
    let mut d = TestDriver::new(Box::new(Block::open(&cfg).unwrap()));
    assert!(d.init(!VIRTIO_BLK_F_FLUSH, 16));
    d.write_mem(DATA, &[1; 512]);
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_OUT, 0, Some((512, false))).0,
        VIRTIO_BLK_S_OK
    );
}

#[test]
fn rng_fills_buffers() {
    let mut d = TestDriver::new(Box::new(Rng::new()));
    assert!(d.init(u64::MAX, 16));
    d.submit(0, &[(DATA, 64, true), (DATA + 0x100, 64, true)]);
    assert_eq!(d.take_used(0), vec![(0, 128)]);
    let a = d.read_mem(DATA, 64);
    let b = d.read_mem(DATA + 0x100, 64);
    assert!(a.iter().any(|&x| x != 0) && b.iter().any(|&x| x != 0));
    assert_ne!(a, b);
    // Wrong direction: a device-readable buffer gets nothing, the device goes on.
    d.submit(0, &[(DATA, 64, false)]);
    assert_eq!(d.take_used(0), vec![(2, 0)]);
    assert_eq!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
}

/// A `Write` whose bytes the test can inspect.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn console_output_input_and_emergency_write() {
    let sink = Sink::default();
    let console = Console::new(Box::new(sink.clone()));
    let input = console.input();
    let mut d = TestDriver::new(Box::new(console));
    // Emergency write works before DRIVER_OK.
    d.transport.write(reg::CONFIG + 8, &[b'!', 0, 0, 0]);
    assert!(d.init(u64::MAX, 16));
    d.write_mem(DATA, b"hello, ");
    d.write_mem(DATA + 0x100, b"world\n");
    d.submit(TX_QUEUE, &[(DATA, 7, false), (DATA + 0x100, 6, false)]);
    assert_eq!(d.take_used(TX_QUEUE).len(), 1);
    assert_eq!(sink.0.lock().unwrap().as_slice(), b"!hello, world\n");

    // Input waits for a receive buffer; pushing plus poll delivers it.
    d.submit(RX_QUEUE, &[(DATA + 0x200, 4, true)]);
    assert!(d.take_used(RX_QUEUE).is_empty());
    assert_eq!(input.push(b"abcdef"), 6);
    d.transport.poll();
    assert_eq!(d.take_used(RX_QUEUE), vec![(0, 4)]);
    assert_eq!(d.read_mem(DATA + 0x200, 4), b"abcd");
    // The rest goes into the next buffer as soon as the driver offers it.
    d.submit(RX_QUEUE, &[(DATA + 0x300, 16, true)]);
    assert_eq!(d.take_used(RX_QUEUE), vec![(1, 2)]);
    assert_eq!(d.read_mem(DATA + 0x300, 2), b"ef");
    assert_eq!(input.pending(), 0);
    assert_eq!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
}

/// An input source standing for a FIFO: "would block" while empty, never ending.
#[derive(Clone, Default)]
struct Fifo(Arc<Mutex<std::collections::VecDeque<u8>>>);

impl io::Read for Fifo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut q = self.0.lock().unwrap();
        if q.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(q.len());
        for (slot, b) in buf.iter_mut().zip(q.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

#[test]
fn console_input_from_a_source_larger_than_it_holds_arrives_whole_and_in_order() {
    use k42_devices::virtio::console::INPUT_CAPACITY;
    let text: Vec<u8> = (0..3 * INPUT_CAPACITY + 123)
        .map(|i| (i % 253) as u8)
        .collect();
    let console = Console::new(Box::new(Sink::default()))
        .with_source(Box::new(io::Cursor::new(text.clone())));
    let input = console.input();
    let mut d = TestDriver::new(Box::new(console));
    assert!(d.init(u64::MAX, 16));
    let mut got = Vec::new();
    while got.len() < text.len() {
        // The source is read only as far as the console holds.
        assert!(input.pending() <= INPUT_CAPACITY);
        d.submit(RX_QUEUE, &[(DATA, 4096, true)]);
        let used = d.take_used(RX_QUEUE);
        assert_eq!(used.len(), 1, "after {} bytes", got.len());
        got.extend(d.read_mem(DATA, used[0].1 as usize));
    }
    assert_eq!(got, text);
    // The file has ended: a further buffer waits.
    d.submit(RX_QUEUE, &[(DATA, 4096, true)]);
    d.transport.poll();
    assert!(d.take_used(RX_QUEUE).is_empty());

    // A FIFO with nothing in it yet: the buffer waits until bytes come and the VMM polls.
    let fifo = Fifo::default();
    let console = Console::new(Box::new(Sink::default())).with_source(Box::new(fifo.clone()));
    let mut d = TestDriver::new(Box::new(console));
    assert!(d.init(u64::MAX, 16));
    d.submit(RX_QUEUE, &[(DATA, 64, true)]);
    d.transport.poll();
    assert!(d.take_used(RX_QUEUE).is_empty());
    fifo.0.lock().unwrap().extend(b"late\n");
    d.transport.poll();
    assert_eq!(d.take_used(RX_QUEUE), vec![(0, 5)]);
    assert_eq!(d.read_mem(DATA, 5), b"late\n");
}

#[test]
fn net_frames_both_ways() {
    use k42_devices::virtio::net::{MacAddr, MemNet, Net, NET_HDR_LEN, RX_QUEUE, TX_QUEUE};
    let backend = MemNet::default();
    let mac: MacAddr = "52:54:00:aa:bb:cc".parse().unwrap();
    let mut d = TestDriver::new(Box::new(Net::new(Box::new(backend.clone()), Some(mac))));
    let mut cfg = [0u8; 6];
    d.transport.read(reg::CONFIG, &mut cfg);
    assert_eq!(cfg, mac.0);
    assert!(d.init(u64::MAX, 16));

    // Guest to host: header + frame, possibly split across buffers.
    let frame: Vec<u8> = (0..60u8).collect();
    d.write_mem(DATA, &[0u8; NET_HDR_LEN]);
    d.write_mem(DATA + 0x100, &frame);
    d.submit(
        TX_QUEUE,
        &[(DATA, NET_HDR_LEN as u32, false), (DATA + 0x100, 60, false)],
    );
    assert_eq!(d.take_used(TX_QUEUE).len(), 1);
    assert_eq!(backend.lock().sent.pop_front(), Some(frame.clone()));

    // Host to guest: waits for a buffer, then arrives with a virtio-net header.
    backend.lock().inbound.push_back(vec![0xab; 42]);
    d.transport.poll();
    d.submit(RX_QUEUE, &[(DATA + 0x1000, 1526, true)]);
    assert_eq!(d.take_used(RX_QUEUE), vec![(0, (NET_HDR_LEN + 42) as u32)]);
    assert_eq!(
        d.read_mem(DATA + 0x1000 + NET_HDR_LEN as u64, 42),
        vec![0xab; 42]
    );
    assert_eq!(d.read_mem(DATA + 0x1000 + 10, 2), vec![1, 0], "num_buffers");

    // A receive buffer too small for the frame: the frame is dropped, the device goes on.
    backend.lock().inbound.push_back(vec![1; 100]);
    d.submit(RX_QUEUE, &[(DATA + 0x2000, 50, true)]);
    assert_eq!(d.take_used(RX_QUEUE), vec![(1, 0)]);
    // A transmit buffer shorter than the header is dropped too.
    d.submit(TX_QUEUE, &[(DATA, 4, false)]);
    assert_eq!(d.take_used(TX_QUEUE).len(), 1);
    assert!(backend.lock().sent.is_empty());
    assert_eq!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
}
