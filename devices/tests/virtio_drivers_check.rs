//! An independent check of the device models: the `virtio-drivers` crate (rcore-os), a driver
//! implementation nobody here wrote, drives our blk, rng and console devices through a
//! `Transport` that calls our MMIO register handlers, over a `GuestMemoryMmap` in which
//! guest-physical address == offset.
//!
//! The `Hal` hands out DMA pages from that guest memory (the driver touches them through their
//! host mapping) and bounce-buffers the driver's own buffers through it. This is the only
//! `unsafe` in the crate, and it is test code.

use std::cell::RefCell;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k42_devices::virtio::block::{Block, BlockConfig};
use k42_devices::virtio::console::Console;
use k42_devices::virtio::mmio::MmioTransport;
use k42_devices::virtio::net::{MacAddr, MemNet, Net};
use k42_devices::virtio::rng::Rng;
use k42_devices::virtio::{CountingInterrupt, VirtioDevice};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::tempfile::TempFile;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const MEM_SIZE: usize = 16 << 20;
const PAGES: usize = MEM_SIZE / PAGE_SIZE;

/// Guest memory shared by every test in this binary, and its page allocator.
struct Dma {
    mem: GuestMemoryMmap,
    used: Mutex<Vec<bool>>,
}

fn dma() -> &'static Dma {
    static DMA: OnceLock<Dma> = OnceLock::new();
    DMA.get_or_init(|| {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let mut used = vec![false; PAGES];
        used[0] = true; // keep guest-physical 0 out: virtio-drivers treats 0 as failure
        Dma {
            mem,
            used: Mutex::new(used),
        }
    })
}

fn alloc(pages: usize) -> PhysAddr {
    let pages = pages.max(1);
    let mut used = dma().used.lock().unwrap();
    let mut run = 0;
    for i in 0..PAGES {
        run = if used[i] { 0 } else { run + 1 };
        if run == pages {
            let first = i + 1 - pages;
            used[first..=i].iter_mut().for_each(|u| *u = true);
            let paddr = (first * PAGE_SIZE) as PhysAddr;
            dma()
                .mem
                .write_slice(&vec![0u8; pages * PAGE_SIZE], GuestAddress(paddr))
                .unwrap();
            return paddr;
        }
    }
    0
}

fn free(paddr: PhysAddr, pages: usize) {
    let first = paddr as usize / PAGE_SIZE;
    let mut used = dma().used.lock().unwrap();
    used[first..first + pages.max(1)]
        .iter_mut()
        .for_each(|u| *u = false);
}

fn host_ptr(paddr: PhysAddr) -> NonNull<u8> {
    let p = GuestMemoryBackend::get_host_address(&dma().mem, GuestAddress(paddr)).unwrap();
    NonNull::new(p).unwrap()
}

struct TestHal;

// SAFETY: dma_alloc returns page-aligned, zeroed, exclusively owned pages of a mapping that lives
// for the whole process (the static `Dma`); share/unshare copy through bounce pages of it.
unsafe impl Hal for TestHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let paddr = alloc(pages);
        if paddr == 0 {
            return (0, NonNull::dangling());
        }
        (paddr, host_ptr(paddr))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        free(paddr, pages);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        host_ptr(paddr)
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let len = buffer.len();
        let paddr = alloc(len.div_ceil(PAGE_SIZE));
        assert_ne!(paddr, 0, "out of DMA memory");
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller guarantees `buffer` is valid and not accessed concurrently.
            let src = unsafe { std::slice::from_raw_parts(buffer.as_ptr() as *const u8, len) };
            dma().mem.write_slice(src, GuestAddress(paddr)).unwrap();
        }
        paddr
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let len = buffer.len();
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: as in `share`; the device has finished with the buffer.
            let dst = unsafe { std::slice::from_raw_parts_mut(buffer.as_ptr() as *mut u8, len) };
            dma().mem.read_slice(dst, GuestAddress(paddr)).unwrap();
        }
        free(paddr, len.div_ceil(PAGE_SIZE));
    }
}

/// virtio-drivers' `Transport` on top of our MMIO register handlers. Notify writes QueueNotify,
/// which processes the queue synchronously, as the VMM's ioeventfd handler would.
struct OurTransport(Rc<RefCell<MmioTransport>>);

impl OurTransport {
    fn new(device: Box<dyn VirtioDevice>) -> (Self, Rc<RefCell<MmioTransport>>) {
        let t = MmioTransport::new(
            device,
            dma().mem.clone(),
            Arc::new(CountingInterrupt::new()),
        );
        let t = Rc::new(RefCell::new(t));
        (OurTransport(t.clone()), t)
    }

    fn r(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.0.borrow_mut().read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(&self, offset: u64, value: u32) {
        self.0.borrow_mut().write(offset, &value.to_le_bytes());
    }
}

impl Transport for OurTransport {
    fn device_type(&self) -> DeviceType {
        DeviceType::try_from(self.r(0x008)).unwrap()
    }

    fn read_device_features(&mut self) -> u64 {
        self.w(0x014, 0);
        let lo = self.r(0x010);
        self.w(0x014, 1);
        let hi = self.r(0x010);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    fn write_driver_features(&mut self, features: u64) {
        self.w(0x024, 0);
        self.w(0x020, features as u32);
        self.w(0x024, 1);
        self.w(0x020, (features >> 32) as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.w(0x030, u32::from(queue));
        self.r(0x034)
    }

    fn notify(&mut self, queue: u16) {
        self.w(0x050, u32::from(queue));
    }

    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.r(0x070))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.w(0x070, status.bits());
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.w(0x030, u32::from(queue));
        self.w(0x038, size);
        for (lo, v) in [
            (0x080, descriptors),
            (0x090, driver_area),
            (0x0a0, device_area),
        ] {
            self.w(lo, v as u32);
            self.w(lo + 4, (v >> 32) as u32);
        }
        self.w(0x044, 1);
    }

    fn queue_unset(&mut self, queue: u16) {
        self.w(0x030, u32::from(queue));
        self.w(0x044, 0);
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.w(0x030, u32::from(queue));
        self.r(0x044) != 0
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let s = self.r(0x060);
        self.w(0x064, s);
        InterruptStatus::from_bits_retain(s)
    }

    fn read_config_generation(&self) -> u32 {
        self.r(0x0fc)
    }

    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        let mut buf = vec![0u8; size_of::<T>()];
        self.0.borrow_mut().read(0x100 + offset as u64, &mut buf);
        T::read_from_bytes(&buf).map_err(|_| virtio_drivers::Error::InvalidParam)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> virtio_drivers::Result<()> {
        self.0
            .borrow_mut()
            .write(0x100 + offset as u64, value.as_bytes());
        Ok(())
    }
}

/// Runs `f` on its own thread and fails loudly instead of hanging if a driver spins forever
/// waiting for a device that never answers.
fn with_timeout(name: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => h.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("{name}: virtio-drivers did not get an answer within 30 s");
            std::process::abort();
        }
    }
}

fn disk(sectors: u64, readonly: bool, id: Option<&str>) -> (TempFile, Block) {
    let tmp = TempFile::new().unwrap();
    tmp.as_file().set_len(sectors * 512).unwrap();
    let cfg = BlockConfig {
        path: tmp.as_path().to_path_buf(),
        readonly,
        id: id.map(str::to_string),
    };
    let block = Block::open(&cfg).unwrap();
    (tmp, block)
}

#[test]
fn blk_pattern_reaches_the_file_and_file_data_reads_back() {
    with_timeout("blk", || {
        let (tmp, block) = disk(2048, false, Some("k42-check"));
        let (transport, _) = OurTransport::new(Box::new(block));
        let mut blk = VirtIOBlk::<TestHal, _>::new(transport).unwrap();
        assert_eq!(blk.capacity(), 2048);
        assert!(!blk.readonly());

        let pattern: Vec<u8> = (0..8192u32).map(|i| (i ^ (i >> 8)) as u8).collect();
        blk.write_blocks(5, &pattern).unwrap();
        blk.flush().unwrap();
        let mut on_disk = vec![0u8; 8192];
        tmp.as_file().read_exact_at(&mut on_disk, 5 * 512).unwrap();
        assert_eq!(on_disk, pattern);

        let host: Vec<u8> = (0..4096u32).map(|i| (i * 31) as u8).collect();
        tmp.as_file().write_all_at(&host, 100 * 512).unwrap();
        let mut back = vec![0u8; 4096];
        blk.read_blocks(100, &mut back).unwrap();
        assert_eq!(back, host);

        let mut id = [0u8; 20];
        let n = blk.device_id(&mut id).unwrap();
        assert_eq!(&id[..n], b"k42-check");

        // Past the end of the disk: the device answers IOERR.
        let mut sector = [0u8; 512];
        assert_eq!(
            blk.read_blocks(2048, &mut sector),
            Err(virtio_drivers::Error::IoError)
        );
    });
}

#[test]
fn blk_readonly_refuses_writes() {
    with_timeout("blk-ro", || {
        let (tmp, block) = disk(64, true, None);
        tmp.as_file().write_all_at(&[0x77; 512], 0).unwrap();
        let (transport, _) = OurTransport::new(Box::new(block));
        let mut blk = VirtIOBlk::<TestHal, _>::new(transport).unwrap();
        assert!(blk.readonly());
        assert_eq!(
            blk.write_blocks(0, &[1u8; 512]),
            Err(virtio_drivers::Error::IoError)
        );
        let mut buf = [0u8; 512];
        tmp.as_file().read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0x77; 512], "a read-only disk changed");
        blk.read_blocks(0, &mut buf).unwrap();
        assert_eq!(buf, [0x77; 512]);
        let mut id = [0u8; 20];
        assert_eq!(
            blk.device_id(&mut id),
            Err(virtio_drivers::Error::Unsupported)
        );
    });
}

#[test]
fn rng_gives_random_bytes() {
    with_timeout("rng", || {
        let (transport, _) = OurTransport::new(Box::new(Rng::new()));
        let mut rng = VirtIORng::<TestHal, _>::new(transport).unwrap();
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        assert_eq!(rng.request_entropy(&mut a).unwrap(), 64);
        assert_eq!(rng.request_entropy(&mut b).unwrap(), 64);
        assert!(a.iter().any(|&x| x != 0));
        assert_ne!(a, b);
    });
}

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
fn console_output_reaches_the_sink_and_input_reaches_the_driver() {
    with_timeout("console", || {
        let sink = Sink::default();
        let console = Console::new(Box::new(sink.clone()));
        let input = console.input();
        let (transport, shared) = OurTransport::new(Box::new(console));
        let mut con = VirtIOConsole::<TestHal, _>::new(transport).unwrap();
        con.send_bytes(b"hello from virtio-drivers\n").unwrap();
        con.send(b'!').unwrap();
        con.emergency_write(b'?').unwrap();
        assert_eq!(
            sink.0.lock().unwrap().as_slice(),
            b"hello from virtio-drivers\n!?"
        );

        assert_eq!(con.recv(true).unwrap(), None);
        input.push(b"ok");
        shared.borrow_mut().poll();
        assert_eq!(con.recv(true).unwrap(), Some(b'o'));
        assert_eq!(con.recv(true).unwrap(), Some(b'k'));
        assert_eq!(con.recv(true).unwrap(), None);
    });
}

#[test]
fn net_frames_reach_the_backend_and_come_back() {
    with_timeout("net", || {
        let backend = MemNet::default();
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let (transport, shared) =
            OurTransport::new(Box::new(Net::new(Box::new(backend.clone()), Some(mac))));
        let mut net = VirtIONet::<TestHal, _, 16>::new(transport, 2048).unwrap();
        assert_eq!(net.mac_address(), mac.0);

        let mut tx = net.new_tx_buffer(64);
        tx.packet_mut().copy_from_slice(&[0x42; 64]);
        net.send(tx).unwrap();
        assert_eq!(backend.lock().sent.pop_front(), Some(vec![0x42; 64]));

        backend.lock().inbound.push_back((0..90u8).collect());
        shared.borrow_mut().poll();
        let rx = net.receive().unwrap();
        assert_eq!(rx.packet(), (0..90u8).collect::<Vec<u8>>().as_slice());
        net.recycle_rx_buffer(rx).unwrap();
    });
}
