//! The virtio devices of a VM, wired to KVM.
//!
//! Two steps. [`plan`] runs before KVM is touched: it opens every backend (disk images, TAP
//! devices, the console's output), so a user mistake is reported first, and gives each device a
//! 4 KiB MMIO window and an IOAPIC pin from an [`Allocator`]; the plan yields the
//! `virtio_mmio.device=` words for the guest's command line. [`attach`] then puts each device
//! behind an `MmioTransport` on the [`MmioBus`], registers one ioeventfd per queue on the
//! window's QueueNotify register (datamatch = queue index) and one irqfd for the device's pin,
//! and returns an event-loop subscriber per device that turns the ioeventfds (and a TAP's
//! readability) into `notify`/`poll` calls. A queue notification therefore never leaves KVM on
//! the vCPU's thread: the guest's write signals the eventfd, and k42vm's event loop does the work.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use k42_devices::virtio::block::Block;
use k42_devices::virtio::console::Console;
use k42_devices::virtio::mmio::{self, MmioTransport, MMIO_WINDOW_SIZE, NOTIFY_OFFSET};
use k42_devices::virtio::net::Net;
use k42_devices::virtio::rng::Rng;
use k42_devices::virtio::{EventFdInterrupt, VirtioDevice};

use crate::cli::RunArgs;
use crate::error::{Result, VmmError};
use crate::layout;
use crate::mmio::MmioBus;
use crate::tap;
use crate::vm::ConsoleOut;

/// Where one device sits: its MMIO window and its interrupt line (a GSI, = IOAPIC pin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Guest-physical base of the 4 KiB window.
    pub base: u64,
    /// GSI / IOAPIC pin.
    pub irq: u32,
}

impl Slot {
    /// The kernel command-line word announcing a device here.
    pub fn announcement(&self) -> String {
        mmio::cmdline_entry(self.base, self.irq)
    }
}

/// Hands out MMIO windows and interrupt lines, in order, without reuse.
#[derive(Clone, Debug)]
pub struct Allocator {
    next_base: u64,
    end: u64,
    first_irq: u32,
    next_irq: u32,
    last_irq: u32,
}

/// The allocator ran out of windows or lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No interrupt line left.
    Irqs {
        /// How many lines there were.
        lines: u32,
    },
    /// No MMIO window left.
    Mmio,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::Irqs { lines } => write!(
                f,
                "too many virtio devices: k42vm has {lines} interrupt lines for them"
            ),
            AllocError::Mmio => write!(f, "too many virtio devices: no MMIO window left"),
        }
    }
}

impl Allocator {
    /// Windows of `MMIO_WINDOW_SIZE` in `base..end`, lines `first_irq..=last_irq`.
    pub fn new(base: u64, end: u64, first_irq: u32, last_irq: u32) -> Self {
        Allocator {
            next_base: base,
            end,
            first_irq,
            next_irq: first_irq,
            last_irq,
        }
    }

    /// k42vm's area: windows from `layout::VIRTIO_MMIO_START`, lines 5-23.
    pub fn for_guest() -> Self {
        Allocator::new(
            layout::VIRTIO_MMIO_START,
            layout::VIRTIO_MMIO_END,
            layout::VIRTIO_IRQ_FIRST,
            layout::VIRTIO_IRQ_LAST,
        )
    }

    /// The next window and line.
    pub fn allocate(&mut self) -> std::result::Result<Slot, AllocError> {
        if self.next_irq > self.last_irq {
            return Err(AllocError::Irqs {
                lines: (self.last_irq + 1).saturating_sub(self.first_irq),
            });
        }
        let end = self
            .next_base
            .checked_add(MMIO_WINDOW_SIZE)
            .filter(|&end| end <= self.end)
            .ok_or(AllocError::Mmio)?;
        let slot = Slot {
            base: self.next_base,
            irq: self.next_irq,
        };
        self.next_base = end;
        self.next_irq += 1;
        Ok(slot)
    }
}

/// A device with its backend open and its place decided, not yet wired to KVM.
pub struct PlannedDevice {
    /// Name for log lines, e.g. `virtio-blk0`.
    pub name: String,
    /// Its window and line.
    pub slot: Slot,
    device: Box<dyn VirtioDevice>,
    /// A host fd the device reads from, watched for readability: a network card's TAP, a
    /// console's input FIFO.
    watch: Option<File>,
}

impl fmt::Debug for PlannedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlannedDevice")
            .field("name", &self.name)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// Every device of a VM, in the order of their windows.
#[derive(Debug, Default)]
pub struct Plan {
    /// The devices.
    pub devices: Vec<PlannedDevice>,
}

impl Plan {
    /// One `virtio_mmio.device=` word per device, for the guest's command line.
    pub fn announcements(&self) -> Vec<String> {
        self.devices.iter().map(|d| d.slot.announcement()).collect()
    }
}

fn device_error(message: String) -> VmmError {
    VmmError::Device(message)
}

/// Opens the backends of the devices `args` asks for and places them: disks first, then network
/// cards, the entropy device and the console.
pub fn plan(args: &RunArgs) -> Result<Plan> {
    let mut alloc = Allocator::for_guest();
    let mut plan = Plan::default();
    let mut add = |name: String, device: Box<dyn VirtioDevice>, watch: Option<File>| {
        let slot = alloc
            .allocate()
            .map_err(|e| device_error(format!("{e}; {name} does not fit")))?;
        plan.devices.push(PlannedDevice {
            name,
            slot,
            device,
            watch,
        });
        Ok::<(), VmmError>(())
    };

    let mut opened: Vec<(std::path::PathBuf, bool)> = Vec::new();
    for (i, disk) in args.disks.iter().enumerate() {
        // The same image twice, once writable, would let the guest corrupt it through two devices.
        if let Ok(canonical) = disk.path.canonicalize() {
            if let Some((_, other_ro)) = opened.iter().find(|(p, _)| *p == canonical) {
                if !(disk.readonly && *other_ro) {
                    return Err(device_error(format!(
                        "--disk {} is given twice; a disk image may appear more than once only \
                         if every --disk for it is readonly",
                        disk.path.display()
                    )));
                }
            }
            opened.push((canonical, disk.readonly));
        }
        let block = Block::open(disk).map_err(|e| device_error(format!("--disk: {e}")))?;
        add(format!("virtio-blk{i}"), Box::new(block), None)?;
    }
    for (i, net) in args.nets.iter().enumerate() {
        if args.nets[..i].iter().any(|other| other.tap == net.tap) {
            return Err(device_error(format!(
                "--net tap={} is given twice; each network card needs its own TAP device",
                net.tap
            )));
        }
        let file = tap::open_tap(&net.tap).map_err(|e| device_error(format!("--net: {e}")))?;
        let watch = file
            .try_clone()
            .map_err(|e| VmmError::Host(format!("duplicating the TAP fd: {e}")))?;
        add(
            format!("virtio-net{i}({})", net.tap),
            Box::new(Net::new(Box::new(file), net.mac)),
            Some(watch),
        )?;
    }
    if args.rng {
        add("virtio-rng".into(), Box::new(Rng::new()), None)?;
    }
    if let Some(target) = &args.virtio_console {
        let out: Box<dyn io::Write + Send> = match target {
            None => Box::new(ConsoleOut),
            Some(path) => Box::new(File::create(path).map_err(|e| {
                device_error(format!(
                    "--virtio-console: cannot create {}: {e}",
                    path.display()
                ))
            })?),
        };
        let mut console = Console::new(out);
        let mut watch = None;
        if let Some(path) = &args.virtio_console_input {
            let (source, fifo) = open_console_input(path)?;
            console = console.with_source(Box::new(source));
            watch = fifo;
        }
        add("virtio-console".into(), Box::new(console), watch)?;
    }
    Ok(plan)
}

/// Opens `--virtio-console-input`: a regular file is read as the guest takes it; a FIFO is
/// opened for reading and writing (so it never reads as ended while no writer has it open) and
/// without blocking, and also returned to be watched for more.
fn open_console_input(path: &std::path::Path) -> Result<(File, Option<File>)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let failed = |e: io::Error| {
        device_error(format!(
            "--virtio-console-input: cannot read {}: {e}",
            path.display()
        ))
    };
    let kind = std::fs::metadata(path).map_err(failed)?.file_type();
    if kind.is_file() {
        return Ok((File::open(path).map_err(failed)?, None));
    }
    if !kind.is_fifo() {
        return Err(device_error(format!(
            "--virtio-console-input: {} is neither a regular file nor a FIFO",
            path.display()
        )));
    }
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(failed)?;
    let watched = fifo.try_clone().map_err(failed)?;
    Ok((fifo, Some(watched)))
}

/// The event-loop subscriber of one device: its queues' ioeventfds and the host fd it reads
/// from, if any (a network card's TAP, a console's input FIFO).
pub struct DeviceEvents {
    name: String,
    transport: Arc<Mutex<MmioTransport>>,
    queues: Vec<EventFd>,
    watch: Option<File>,
}

/// Event data that marks the watched host fd (queue indices are small).
const WATCH_EVENT: u32 = u32::MAX;

impl DeviceEvents {
    fn transport(&self) -> std::sync::MutexGuard<'_, MmioTransport> {
        self.transport.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MutEventSubscriber for DeviceEvents {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let data = events.data();
        if data == WATCH_EVENT {
            if events
                .event_set()
                .intersects(EventSet::ERROR | EventSet::HANG_UP)
            {
                eprintln!(
                    "k42vm: {}: its host backend failed; nothing more from it will reach the guest",
                    self.name
                );
                let _ = ops.remove(events);
                return;
            }
            // Edge-triggered: what the device cannot take yet (no receive buffer, or the driver
            // not ready) stays in the fd until the driver's next receive notification.
            self.transport().poll();
            return;
        }
        let Some(fd) = self.queues.get(data as usize) else {
            let _ = ops.remove(events);
            return;
        };
        match fd.read() {
            Ok(_) => self.transport().notify(data),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                eprintln!(
                    "k42vm: {}: queue {data} notification failed: {e}; no longer watched",
                    self.name
                );
                let _ = ops.remove(events);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (i, fd) in self.queues.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(fd, i as u32, EventSet::IN)) {
                eprintln!("k42vm: {}: cannot watch queue {i}: {e:?}", self.name);
            }
        }
        if let Some(fd) = &self.watch {
            let set = EventSet::IN | EventSet::EDGE_TRIGGERED;
            if let Err(e) = ops.add(Events::with_data_raw(fd.as_raw_fd(), WATCH_EVENT, set)) {
                eprintln!("k42vm: {}: cannot watch its host backend: {e:?}", self.name);
            }
        }
    }
}

/// What [`attach`] made of a plan.
pub struct Attached {
    /// One subscriber per device, for the event loop.
    pub subscribers: Vec<DeviceEvents>,
    /// The transports with their slots (for inspection and tests).
    pub transports: Vec<(Slot, Arc<Mutex<MmioTransport>>)>,
}

/// Puts every planned device behind a transport on `bus` and registers its irqfd and ioeventfds.
pub fn attach(plan: Plan, vm: &VmFd, mem: &GuestMemoryMmap, bus: &mut MmioBus) -> Result<Attached> {
    let host = |what: &str, e: io::Error| VmmError::Host(format!("{what}: {e}"));
    let mut attached = Attached {
        subscribers: Vec::new(),
        transports: Vec::new(),
    };
    for planned in plan.devices {
        let PlannedDevice {
            name,
            slot,
            device,
            watch,
        } = planned;
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| host("creating an eventfd", e))?;
        vm.register_irqfd(&irq, slot.irq)
            .map_err(|source| VmmError::Kvm {
                what: "register a virtio device's irqfd",
                source,
            })?;
        let interrupt = Arc::new(EventFdInterrupt::new(irq));
        let mut transport = MmioTransport::new(device, mem.clone(), interrupt);
        transport.set_name(&format!("k42vm: {name}@{:#x}", slot.base));
        let queue_count = transport.queue_count();
        let transport = Arc::new(Mutex::new(transport));
        bus.insert(slot.base, MMIO_WINDOW_SIZE, transport.clone())
            .map_err(|e| VmmError::Config(format!("{name}: {e}")))?;
        let mut queues = Vec::with_capacity(queue_count);
        for q in 0..queue_count {
            let fd =
                EventFd::new(libc::EFD_NONBLOCK).map_err(|e| host("creating an eventfd", e))?;
            vm.register_ioevent(
                &fd,
                &IoEventAddress::Mmio(slot.base + NOTIFY_OFFSET),
                q as u32,
            )
            .map_err(|source| VmmError::Kvm {
                what: "register a virtio queue's ioeventfd",
                source,
            })?;
            queues.push(fd);
        }
        attached.transports.push((slot, transport.clone()));
        attached.subscribers.push(DeviceEvents {
            name,
            transport,
            queues,
            watch,
        });
    }
    Ok(attached)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut all = vec!["k42vm", "run"];
        all.extend_from_slice(extra);
        let Command::Run(args) = Cli::try_parse_from(all).unwrap().command;
        args
    }

    #[test]
    fn allocator_hands_out_consecutive_windows_and_lines() {
        let mut a = Allocator::for_guest();
        let first = a.allocate().unwrap();
        let second = a.allocate().unwrap();
        assert_eq!(
            first,
            Slot {
                base: 0xd000_0000,
                irq: 5
            }
        );
        assert_eq!(
            second,
            Slot {
                base: 0xd000_1000,
                irq: 6
            }
        );
        assert_eq!(first.announcement(), "virtio_mmio.device=4K@0xd0000000:5");
        // Lines 5..=23: 19 devices in all.
        let rest: Vec<Slot> = std::iter::from_fn(|| a.allocate().ok()).collect();
        assert_eq!(rest.len(), 17);
        assert_eq!(rest.last().unwrap().irq, 23);
        assert_eq!(a.allocate(), Err(AllocError::Irqs { lines: 19 }));
        assert!(AllocError::Irqs { lines: 19 }
            .to_string()
            .contains("19 interrupt lines"));
    }

    #[test]
    fn allocator_stops_at_the_end_of_its_area() {
        let mut a = Allocator::new(0x1000, 0x3000, 5, 23);
        assert_eq!(a.allocate().unwrap().base, 0x1000);
        assert_eq!(a.allocate().unwrap().base, 0x2000);
        assert_eq!(a.allocate(), Err(AllocError::Mmio));
        // A window that would overflow the address space is refused, not wrapped.
        let mut a = Allocator::new(u64::MAX - 0xfff, u64::MAX, 5, 23);
        assert_eq!(a.allocate(), Err(AllocError::Mmio));
    }

    fn temp_image(name: &str, size: usize) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("k42vm-{}-{name}", std::process::id()));
        std::fs::write(&path, vec![0u8; size]).unwrap();
        path
    }

    #[test]
    fn plan_opens_backends_and_announces_each_device() {
        let a = temp_image("plan-a.img", 1 << 20);
        let b = temp_image("plan-b.img", 4096);
        let out = temp_image("plan-console.txt", 0);
        let (a_s, b_s, out_s) = (
            a.to_str().unwrap(),
            format!("{},readonly,id=b", b.display()),
            format!("--virtio-console={}", out.display()),
        );
        let planned = plan(&run_args(&["--disk", a_s, "--disk", &b_s, "--rng", &out_s])).unwrap();
        let names: Vec<&str> = planned.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["virtio-blk0", "virtio-blk1", "virtio-rng", "virtio-console"]
        );
        assert_eq!(
            planned.announcements(),
            [
                "virtio_mmio.device=4K@0xd0000000:5",
                "virtio_mmio.device=4K@0xd0001000:6",
                "virtio_mmio.device=4K@0xd0002000:7",
                "virtio_mmio.device=4K@0xd0003000:8",
            ]
        );
        assert!(plan(&run_args(&[])).unwrap().devices.is_empty());
        for p in [a, b, out] {
            std::fs::remove_file(p).ok();
        }
    }

    #[test]
    fn plan_reports_backends_that_cannot_be_opened() {
        use k42_devices::virtio::console::INPUT_CAPACITY;
        let err = plan(&run_args(&["--disk", "/nonexistent/disk.img"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cannot open disk image /nonexistent/disk.img"),
            "{msg}"
        );
        assert_eq!(err.exit_status(), crate::error::EXIT_USAGE);
        let err = plan(&run_args(&["--virtio-console=/nonexistent/dir/out"])).unwrap_err();
        assert!(err
            .to_string()
            .contains("cannot create /nonexistent/dir/out"));
        let err = plan(&run_args(&[
            "--virtio-console=/dev/null",
            "--virtio-console-input=/nonexistent/in",
        ]))
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("--virtio-console-input: cannot read /nonexistent/in"));
        let err = plan(&run_args(&[
            "--virtio-console=/dev/null",
            "--virtio-console-input=/dev",
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("/dev is neither a regular file nor a FIFO"),
            "{err}"
        );
        let big = temp_image("plan-input.txt", 3 * INPUT_CAPACITY);
        let flag = format!("--virtio-console-input={}", big.display());
        let planned = plan(&run_args(&["--virtio-console=/dev/null", &flag])).unwrap();
        assert_eq!(planned.devices.len(), 1);
        assert!(
            planned.devices[0].watch.is_none(),
            "a regular file is not watched"
        );
        std::fs::remove_file(big).ok();
        let fifo = std::env::temp_dir().join(format!("k42vm-{}-plan-fifo", std::process::id()));
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(
            made.as_ref().is_ok_and(|s| s.success()),
            "mkfifo (coreutils) {made:?}"
        );
        let flag = format!("--virtio-console-input={}", fifo.display());
        let planned = plan(&run_args(&["--virtio-console=/dev/null", &flag])).unwrap();
        assert!(planned.devices[0].watch.is_some(), "a FIFO is watched");
        std::fs::remove_file(fifo).ok();
        let err = plan(&run_args(&["--net", "tap=lo"])).unwrap_err();
        assert!(err.to_string().contains("TAP device lo"), "{err}");
    }

    #[test]
    fn the_same_image_twice_must_be_readonly_both_times() {
        let a = temp_image("twice.img", 4096);
        let s = a.to_str().unwrap();
        let ro = format!("{s},readonly");
        let err = plan(&run_args(&["--disk", s, "--disk", &ro])).unwrap_err();
        assert!(err.to_string().contains("is given twice"), "{err}");
        assert_eq!(
            plan(&run_args(&["--disk", &ro, "--disk", &ro]))
                .unwrap()
                .devices
                .len(),
            2
        );
        std::fs::remove_file(a).ok();
    }

    /// Writes a 32-bit register of the device at `base` through the bus, as a guest would.
    fn reg(bus: &MmioBus, base: u64, offset: u64, value: u32) {
        assert!(bus.write(0, base + offset, &value.to_le_bytes()));
    }

    fn read_reg(bus: &MmioBus, base: u64, offset: u64) -> u32 {
        let mut v = [0u8; 4];
        assert!(bus.read(0, base + offset, &mut v));
        u32::from_le_bytes(v)
    }

    /// The whole host side of a request on a real KVM VM: the registers through the bus, the
    /// queue's ioeventfd (signalled here as KVM would on the guest's QueueNotify write) through
    /// the event loop, and the answer's interrupt through the irqfd into KVM's irqchip.
    #[test]
    fn attach_wires_queues_and_interrupts_through_kvm() {
        use event_manager::{EventManager, SubscriberOps};
        use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_PIC_MASTER};
        use vm_memory::{Bytes, GuestAddress};

        let kvm = kvm_ioctls::Kvm::new().unwrap_or_else(|e| {
            panic!("this test needs /dev/kvm (an x86_64 Linux host with KVM): {e}")
        });
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let planned = plan(&run_args(&["--rng", "--virtio-console=/dev/null"])).unwrap();
        let mut bus = MmioBus::new();
        let mut attached = attach(planned, &vm, &mem, &mut bus).unwrap();
        assert_eq!(bus.len(), 2);
        assert_eq!(attached.subscribers.len(), 2);

        // KVM refuses a second ioeventfd with the same address, length and datamatch: so every
        // queue has one on its device's QueueNotify, matching its index, and no other index has.
        for (slot, transport) in &attached.transports {
            let queues = transport.lock().unwrap().queue_count() as u32;
            let notify = IoEventAddress::Mmio(slot.base + NOTIFY_OFFSET);
            let probe = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            for q in 0..queues {
                let err = vm.register_ioevent(&probe, &notify, q).unwrap_err();
                assert_eq!(err.errno(), libc::EEXIST, "queue {q} at {:#x}", slot.base);
            }
            vm.register_ioevent(&probe, &notify, queues).unwrap();
            vm.unregister_ioevent(&probe, &notify, queues).unwrap();
        }

        // Bring up the entropy device's queue 0 (size 4) and post one 16-byte buffer.
        let (slot, _) = attached.transports[0];
        assert_eq!(
            slot,
            Slot {
                base: 0xd000_0000,
                irq: 5
            }
        );
        let base = slot.base;
        assert_eq!(read_reg(&bus, base, 0x8), 4, "virtio-rng's device ID");
        reg(&bus, base, 0x70, 1);
        reg(&bus, base, 0x70, 3);
        reg(&bus, base, 0x24, 1);
        reg(&bus, base, 0x20, 1); // VIRTIO_F_VERSION_1
        reg(&bus, base, 0x70, 0xb);
        assert_eq!(read_reg(&bus, base, 0x70), 0xb, "FEATURES_OK accepted");
        let (desc, avail, used, buf) = (0x1000u64, 0x2000u64, 0x3000u64, 0x4000u64);
        for (offset, value) in [
            (0x30, 0),
            (0x38, 4),
            (0x80, desc as u32),
            (0x90, avail as u32),
            (0xa0, used as u32),
            (0x44, 1),
            (0x70, 0xf),
        ] {
            reg(&bus, base, offset, value);
        }
        assert_eq!(read_reg(&bus, base, 0x70), 0xf, "DRIVER_OK");
        mem.write_obj(buf, GuestAddress(desc)).unwrap();
        mem.write_obj(16u32, GuestAddress(desc + 8)).unwrap();
        mem.write_obj(2u16, GuestAddress(desc + 12)).unwrap(); // VIRTQ_DESC_F_WRITE
        mem.write_obj(0u16, GuestAddress(avail + 4)).unwrap(); // ring[0] = descriptor 0
        mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap(); // idx

        // The guest's QueueNotify write, as KVM signals it; the event loop does the rest.
        attached.subscribers[0].queues[0].write(1).unwrap();
        let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
            EventManager::new().unwrap();
        for device in attached.subscribers.drain(..) {
            manager.add_subscriber(Arc::new(Mutex::new(device)));
        }
        assert_eq!(manager.run_with_timeout(1000).unwrap(), 1);
        let used_idx: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
        let used_len: u32 = mem.read_obj(GuestAddress(used + 8)).unwrap();
        assert_eq!((used_idx, used_len), (1, 16), "the request was answered");
        let mut bytes = [0u8; 16];
        mem.read_slice(&mut bytes, GuestAddress(buf)).unwrap();
        assert_ne!(bytes, [0; 16], "entropy arrived");
        assert_eq!(
            read_reg(&bus, base, 0x60) & 1,
            1,
            "InterruptStatus: used buffer"
        );

        // The irqfd raised GSI 5, which KVM routes to the master PIC's pin 5 too: its IRR bit
        // shows the edge (injection runs asynchronously in KVM, so wait for it).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut chip = kvm_irqchip {
                chip_id: KVM_IRQCHIP_PIC_MASTER,
                ..Default::default()
            };
            vm.get_irqchip(&mut chip).unwrap();
            // SAFETY: for KVM_IRQCHIP_PIC_MASTER the kernel fills the `pic` member of the union,
            // plain bytes.
            let irr = unsafe { chip.chip.pic }.irr;
            if irr & (1 << 5) != 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "GSI 5 was never raised (PIC IRR {irr:#x})"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn too_many_devices_is_a_clear_error() {
        let a = temp_image("many.img", 4096);
        let ro = format!("{},readonly", a.display());
        let mut flags = Vec::new();
        for _ in 0..20 {
            flags.push("--disk");
            flags.push(ro.as_str());
        }
        let err = plan(&run_args(&flags)).unwrap_err();
        assert!(err.to_string().contains("too many virtio devices"), "{err}");
        std::fs::remove_file(a).ok();
    }
}
