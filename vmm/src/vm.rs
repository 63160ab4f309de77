//! One virtual machine: KVM setup, guest memory, vCPU threads, the exit path and the event loop.

use std::borrow::Cow;
use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_mp_state, kvm_regs, kvm_segment, kvm_userspace_memory_region, CpuId,
    KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use k42_devices::serial::{SerialConsole, SERIAL_PORT_COUNT};
use k42_paravirt as pv;

use crate::cli::RunArgs;
use crate::error::{Result, VmmError, EXIT_TIMEOUT, EXIT_VM_FAILURE};
use crate::hypercall::{self, KtestLog};
use crate::initrd;
use crate::layout;
use crate::mmio::MmioBus;
use crate::timeline::Timeline;
use crate::virtio::{self, DeviceEvents};

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest shut down with this exit code.
    Shutdown(u32),
    /// The VM failed; the message says how (registers included).
    Failed(String),
}

/// Where guest console output goes: stdout, flushed at each line end (nothing is lost at exit).
#[derive(Clone, Default)]
pub struct ConsoleOut;

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        if buf.contains(&b'\n') {
            out.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}

/// A request to start a secondary vCPU in 64-bit mode.
#[derive(Clone, Copy, Debug)]
pub struct StartRequest {
    /// Entry point.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Page-table root.
    pub cr3: u64,
    /// RDI.
    pub arg: u64,
}

/// State shared by the vCPU threads and the main thread.
pub struct VmShared {
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// Guest RAM size in bytes.
    pub mem_size: u64,
    /// COM1.
    pub serial: Mutex<SerialConsole<ConsoleOut>>,
    /// Boot timeline.
    pub timeline: Timeline,
    /// In-kernel test reports.
    pub ktests: Mutex<KtestLog>,
    /// Senders that start secondary vCPUs (index = vCPU), taken on first use.
    pub ap_start: Vec<Mutex<Option<Sender<StartRequest>>>>,
    /// The virtio-mmio devices, by guest-physical address.
    pub mmio: MmioBus,
    exit: Mutex<Option<VmExit>>,
    exit_event: EventFd,
}

impl VmShared {
    /// Records why the VM stops (the first reason wins) and wakes the main thread.
    pub fn request_exit(&self, reason: VmExit) {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_none() {
            *exit = Some(reason);
            self.timeline.mark("guest shutdown");
            let _ = self.exit_event.write(1);
        }
    }

    fn exit_reason(&self) -> Option<VmExit> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes guest console bytes to the host console.
    pub fn console_write(&self, bytes: &[u8]) {
        let _ = ConsoleOut.write_all(bytes);
    }
}

/// Sets up and runs a VM as `args` says; returns k42vm's exit status.
pub fn run(args: &RunArgs, timeline: Timeline) -> Result<i32> {
    let (kernel_image, kernel_name) = match &args.kernel {
        Some(path) => (
            std::fs::read(path).map_err(|source| VmmError::ReadImage {
                kind: "kernel image",
                path: path.clone(),
                source,
            })?,
            path.display().to_string(),
        ),
        None => (
            k42_images::DEFAULT_KERNEL.to_vec(),
            "the embedded kernel".to_string(),
        ),
    };
    let initrd: Option<Cow<'static, [u8]>> = match &args.initrd {
        Some(path) => {
            let image = std::fs::read(path).map_err(|source| VmmError::ReadImage {
                kind: "initrd",
                path: path.clone(),
                source,
            })?;
            let name = path.display().to_string();
            Some(initrd::unpack(Cow::Owned(image), &name, args.memory)?)
        }
        None if args.default_guest() => Some(Cow::Borrowed(k42_images::DEFAULT_INITRD)),
        None => None,
    };
    let base_cmdline = match &args.cmdline {
        Some(cmdline) => cmdline.clone(),
        None if args.default_guest() => k42_images::default_cmdline(std::io::stdin().is_terminal()),
        None => String::new(),
    };
    // Device backends are opened before KVM is touched: a wrong path or TAP name is reported
    // first, and the guest's command line needs the devices' places.
    let devices = virtio::plan(args)?;
    let cmdline = layout::guest_cmdline(&base_cmdline, &devices.announcements());

    let kvm = Kvm::new().map_err(VmmError::KvmUnavailable)?;
    match kvm.get_api_version() {
        12 => {}
        v if v < 0 => {
            return Err(VmmError::KvmNotKvm(format!(
                "KVM_GET_API_VERSION failed: {}",
                std::io::Error::last_os_error()
            )))
        }
        v => {
            return Err(VmmError::KvmNotKvm(format!(
                "KVM API version {v}, expected 12"
            )))
        }
    }
    let max_vcpus = kvm.get_max_vcpus();
    if usize::from(args.cpus) > max_vcpus {
        return Err(VmmError::Config(format!(
            "--cpus {} exceeds this host's KVM limit of {max_vcpus}",
            args.cpus
        )));
    }
    let vm = kvm.create_vm().map_err(|source| VmmError::Kvm {
        what: "create a VM",
        source,
    })?;
    vm.set_tss_address(0xfffb_d000)
        .map_err(|source| VmmError::Kvm {
            what: "set the TSS address",
            source,
        })?;
    vm.create_irq_chip().map_err(|source| VmmError::Kvm {
        what: "create the in-kernel irqchip",
        source,
    })?;
    timeline.mark("KVM VM created");

    let mem = GuestMemoryMmap::from_ranges(&layout::ram_regions(args.memory))
        .map_err(|e| VmmError::Memory(e.to_string()))?;
    timeline.mark("guest memory mapped");
    // KVM's first memory-slot registration is a fixed few milliseconds on some hosts (measured:
    // 4.5 ms on kvm_pvm, whatever the size); load the guest and create the vCPUs meanwhile.
    let (registered, prepared) = thread::scope(|scope| {
        let registration = scope.spawn(|| register_memory(&vm, &mem));
        let prepared = prepare_guest(
            args,
            &kvm,
            &vm,
            &mem,
            &kernel_image,
            &kernel_name,
            initrd.as_deref(),
            &cmdline,
            devices,
            &timeline,
        );
        let registered = registration.join().unwrap_or_else(|_| {
            Err(VmmError::Host(
                "the memory-registration thread panicked".into(),
            ))
        });
        (registered, prepared)
    });
    registered?;
    timeline.mark("guest memory registered");
    let Prepared {
        kernel,
        mut vcpus,
        serial_irq,
        exit_event,
        mmio,
        device_events,
    } = prepared?;

    let mut ap_senders = Vec::new();
    let mut ap_receivers = Vec::new();
    for index in 0..args.cpus {
        if index == 0 {
            ap_senders.push(Mutex::new(None));
            ap_receivers.push(None);
        } else {
            let (tx, rx) = mpsc::channel();
            ap_senders.push(Mutex::new(Some(tx)));
            ap_receivers.push(Some(rx));
        }
    }
    let shared = Arc::new(VmShared {
        mem,
        mem_size: args.memory,
        serial: Mutex::new(SerialConsole::new(pv::COM1_PORT, serial_irq, ConsoleOut)),
        timeline: timeline.clone(),
        ktests: Mutex::new(KtestLog::default()),
        ap_start: ap_senders,
        mmio,
        exit: Mutex::new(None),
        exit_event: exit_event
            .try_clone()
            .map_err(|e| VmmError::Host(e.to_string()))?,
    });

    let mut bsp = vcpus.remove(0);
    setup_bsp(&bsp, kernel.entry)?;
    for (i, (vcpu, rx)) in vcpus
        .into_iter()
        .zip(ap_receivers.into_iter().skip(1))
        .enumerate()
    {
        let shared = shared.clone();
        let rx = rx.expect("every secondary vCPU has a start channel");
        thread::Builder::new()
            .name(format!("vcpu{}", i + 1))
            .spawn(move || secondary_vcpu_thread(vcpu, i + 1, rx, shared))
            .map_err(|e| VmmError::Host(format!("cannot start a vCPU thread: {e}")))?;
    }
    timeline.mark("vCPUs created");
    {
        let shared = shared.clone();
        thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || run_vcpu(&mut bsp, 0, &shared))
            .map_err(|e| VmmError::Host(format!("cannot start a vCPU thread: {e}")))?;
    }

    let status = event_loop(&shared, exit_event, device_events, args.timeout)?;
    let _ = std::io::stdout().flush();
    Ok(status)
}

/// What `prepare_guest` set up.
struct Prepared {
    kernel: layout::LoadedKernel,
    vcpus: Vec<VcpuFd>,
    serial_irq: EventFd,
    exit_event: EventFd,
    mmio: MmioBus,
    device_events: Vec<DeviceEvents>,
}

/// Loads kernel, initrd and boot tables into `mem`, wires the virtio devices to KVM and creates
/// the vCPUs with their CPUID.
#[allow(clippy::too_many_arguments)]
fn prepare_guest(
    args: &RunArgs,
    kvm: &Kvm,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    kernel_image: &[u8],
    kernel_name: &str,
    initrd: Option<&[u8]>,
    cmdline: &str,
    devices: virtio::Plan,
    timeline: &Timeline,
) -> Result<Prepared> {
    let kernel = layout::load_kernel(mem, kernel_image, kernel_name, args.memory)?;
    timeline.mark("kernel copied");
    let initrd_location = match initrd {
        Some(bytes) => Some((
            layout::load_initrd(mem, bytes, kernel.end, args.memory)?,
            bytes.len() as u64,
        )),
        None => None,
    };
    layout::write_start_info(mem, args.memory, cmdline, initrd_location)?;
    layout::write_gdts(mem)?;
    layout::write_acpi(mem, args.cpus)?;
    timeline.mark("kernel loaded");

    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Host(e.to_string()))?;
    vm.register_irqfd(&serial_irq, 4)
        .map_err(|source| VmmError::Kvm {
            what: "register the serial irqfd",
            source,
        })?;
    let exit_event = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Host(e.to_string()))?;
    let mut mmio = MmioBus::new();
    let device_events = virtio::attach(devices, vm, mem, &mut mmio)?.subscribers;
    if !mmio.is_empty() {
        timeline.mark("virtio devices attached");
    }

    let base_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| VmmError::Kvm {
            what: "report supported CPUID",
            source,
        })?;
    let mut vcpus = Vec::new();
    for index in 0..args.cpus {
        let vcpu = vm
            .create_vcpu(u64::from(index))
            .map_err(|source| VmmError::Kvm {
                what: "create a vCPU",
                source,
            })?;
        let tsc_khz = vcpu.get_tsc_khz().unwrap_or(0);
        let cpuid = vcpu_cpuid(&base_cpuid, index, args.cpus, tsc_khz)?;
        vcpu.set_cpuid2(&cpuid).map_err(|source| VmmError::Kvm {
            what: "set a vCPU's CPUID",
            source,
        })?;
        vcpus.push(vcpu);
    }

    Ok(Prepared {
        kernel,
        vcpus,
        serial_irq,
        exit_event,
        mmio,
        device_events,
    })
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| VmmError::Memory(e.to_string()))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which the VmShared keeps alive for as
        // long as the VM (the process) exists; slots do not overlap.
        unsafe { vm.set_user_memory_region(region) }.map_err(|source| VmmError::Kvm {
            what: "register guest memory",
            source,
        })?;
    }
    Ok(())
}

/// CPUID for vCPU `index`: KVM's supported set, this vCPU's APIC IDs, and k42vm's leaves.
fn vcpu_cpuid(base: &CpuId, index: u8, cpus: u8, tsc_khz: u32) -> Result<CpuId> {
    let mut entries: Vec<kvm_cpuid_entry2> = base
        .as_slice()
        .iter()
        .copied()
        .filter(|e| !(0x4000_0000..0x4000_0100).contains(&e.function))
        .collect();
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(cpus) << 16) | (u32::from(index) << 24);
                e.ecx |= 1 << 31; // running on a hypervisor
                e.ecx |= 1 << 21; // x2APIC (emulated by the in-kernel LAPIC)
            }
            0xb | 0x1f => e.edx = u32::from(index),
            _ => {}
        }
    }
    let sig = pv::CPUID_SIGNATURE;
    let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    let leaf = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    entries.push(leaf(
        pv::CPUID_SIGNATURE_LEAF,
        pv::CPUID_TIMING_LEAF,
        word(0),
        word(4),
        word(8),
    ));
    entries.push(leaf(
        pv::CPUID_INTERFACE_LEAF,
        pv::INTERFACE_VERSION,
        0,
        0,
        0,
    ));
    // KVM's LAPIC timer runs at 1 GHz (1 ns per tick).
    entries.push(leaf(pv::CPUID_TIMING_LEAF, tsc_khz, 1_000_000, 0, 0));
    CpuId::from_entries(&entries).map_err(|e| VmmError::Host(format!("building CPUID: {e:?}")))
}

fn flat_segment(selector: u16, code: bool, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Segment and control registers for a vCPU's first instruction: flat code at selector 0x08 (64-bit
/// when `long_mode`), flat data at 0x10, a busy TSS, and the given GDT and control registers.
struct StartState {
    long_mode: bool,
    gdt: u64,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
}

fn load_start_state(
    vcpu: &VcpuFd,
    state: &StartState,
    regs: kvm_regs,
) -> std::result::Result<(), kvm_ioctls::Error> {
    let mut sregs = vcpu.get_sregs()?;
    sregs.cs = flat_segment(0x08, true, state.long_mode);
    let data = flat_segment(0x10, false, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment {
        limit: 0x67,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = state.gdt;
    sregs.gdt.limit = 23;
    (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) = (state.cr0, state.cr3, state.cr4, state.efer);
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)
}

/// The boot vCPU: 32-bit protected mode, paging off, EBX = `hvm_start_info` (the PVH contract).
fn setup_bsp(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let state = StartState {
        long_mode: false,
        gdt: layout::GDT32_ADDR,
        cr0: 0x11,
        cr3: 0,
        cr4: 0,
        efer: 0,
    }; // PE | ET
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rbx: layout::START_INFO_ADDR,
        ..Default::default()
    };
    load_start_state(vcpu, &state, regs).map_err(|source| VmmError::Kvm {
        what: "set the boot vCPU's registers",
        source,
    })
}

/// A secondary vCPU: 64-bit mode with the guest's page tables, as `CpuStart` asked.
fn setup_secondary(
    vcpu: &VcpuFd,
    start: &StartRequest,
) -> std::result::Result<(), kvm_ioctls::Error> {
    let state = StartState {
        long_mode: true,
        gdt: layout::GDT64_ADDR,
        cr0: 0x8001_0033, // PG | WP | NE | ET | MP | PE
        cr3: start.cr3,
        cr4: 0x20,   // PAE
        efer: 0x500, // LME | LMA
    };
    let regs = kvm_regs {
        rflags: 0x2,
        rip: start.rip,
        rsp: start.rsp,
        rdi: start.arg,
        ..Default::default()
    };
    load_start_state(vcpu, &state, regs)?;
    vcpu.set_mp_state(kvm_mp_state {
        mp_state: KVM_MP_STATE_RUNNABLE,
    })
}

fn secondary_vcpu_thread(
    mut vcpu: VcpuFd,
    index: usize,
    start: Receiver<StartRequest>,
    shared: Arc<VmShared>,
) {
    // Waits until the guest asks for this CPU; a VM that never does simply exits without it.
    let Ok(request) = start.recv() else { return };
    if let Err(e) = setup_secondary(&vcpu, &request) {
        shared.request_exit(VmExit::Failed(format!("cannot start vCPU {index}: {e}")));
        return;
    }
    run_vcpu(&mut vcpu, index, &shared);
}

fn register_dump(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "rip={:#018x} rsp={:#018x} rflags={:#x}\n  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}\n  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, s.cr0, s.cr2, s.cr3, s.cr4, s.efer,
            s.cs.selector
        ),
        _ => "(registers unavailable)".into(),
    }
}

fn run_vcpu(vcpu: &mut VcpuFd, index: usize, shared: &VmShared) {
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if let Some(exit) = handle_io_out(shared, index, port, data) {
                    shared.request_exit(exit);
                    return;
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                let mut serial = shared.serial.lock().unwrap_or_else(|e| e.into_inner());
                if serial.claims(port) {
                    data[0] = serial.read(port);
                } else {
                    data.fill(0xff);
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                shared.mmio.read(index, addr, data);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                shared.mmio.write(index, addr, data);
            }
            Ok(VcpuExit::Hlt) | Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => {}
            Ok(VcpuExit::Shutdown) => {
                shared.request_exit(VmExit::Failed(format!(
                    "the guest triple-faulted on vCPU {index}; its registers:\n  {}",
                    register_dump(vcpu)
                )));
                return;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                shared.request_exit(VmExit::Failed(format!(
                    "KVM failed to enter vCPU {index} (hardware reason {reason:#x}, cpu {cpu}); its registers:\n  {}",
                    register_dump(vcpu)
                )));
                return;
            }
            Ok(VcpuExit::InternalError) => {
                shared.request_exit(VmExit::Failed(format!(
                    "KVM internal error on vCPU {index} (often an instruction KVM cannot emulate); its registers:\n  {}",
                    register_dump(vcpu)
                )));
                return;
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                shared.request_exit(VmExit::Failed(format!(
                    "vCPU {index} raised system event {kind} (reset or power-off)"
                )));
                return;
            }
            Ok(other) => {
                let what = format!("{other:?}");
                shared.request_exit(VmExit::Failed(format!(
                    "unexpected KVM exit on vCPU {index}: {what}; its registers:\n  {}",
                    register_dump(vcpu)
                )));
                return;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                shared.request_exit(VmExit::Failed(format!(
                    "KVM_RUN failed on vCPU {index}: {e}"
                )));
                return;
            }
        }
    }
}

fn handle_io_out(shared: &VmShared, index: usize, port: u16, data: &[u8]) -> Option<VmExit> {
    // Decide by port number first: hypercalls never take the UART's lock.
    if port.wrapping_sub(pv::COM1_PORT) < SERIAL_PORT_COUNT {
        let mut serial = shared.serial.lock().unwrap_or_else(|e| e.into_inner());
        for &byte in data {
            let _ = serial.write(port, byte);
        }
        return None;
    }
    let call = pv::Hypercall::from_port(port)?;
    if data.len() != 4 {
        eprintln!("k42vm: vCPU {index} wrote {} bytes to hypercall port {port:#x}; hypercalls take a 32-bit value", data.len());
        return None;
    }
    let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    hypercall::handle(shared, index, call, value)
}

/// Watches the exit eventfd from the event loop.
struct ExitWatcher {
    event: EventFd,
    fired: bool,
}

impl MutEventSubscriber for ExitWatcher {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.event.read();
        self.fired = true;
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.event, EventSet::IN)) {
            eprintln!("k42vm: cannot watch the exit event: {e:?}");
        }
    }
}

/// Forwards k42vm's standard input (a terminal or a pipe) to the guest's UART, whose backlog
/// keeps what the guest has not read yet; its end drops the UART's carrier.
struct StdinToSerial {
    shared: Arc<VmShared>,
}

impl MutEventSubscriber for StdinToSerial {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 4096];
        match std::io::stdin().lock().read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            Ok(0) | Err(_) => {
                let _ = ops.remove(events);
                let mut serial = self.shared.serial.lock().unwrap_or_else(|e| e.into_inner());
                serial.end_input();
            }
            Ok(n) => {
                let mut serial = self.shared.serial.lock().unwrap_or_else(|e| e.into_inner());
                let _ = serial.enqueue_input(&buf[..n]);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if ops
            .add(Events::new_raw(std::io::stdin().as_raw_fd(), EventSet::IN))
            .is_err()
        {
            // Not pollable (a regular file) or not open: what can be read now is all of it.
            let mut all = Vec::new();
            let _ = std::io::stdin().lock().read_to_end(&mut all);
            let mut serial = self.shared.serial.lock().unwrap_or_else(|e| e.into_inner());
            let _ = serial.enqueue_input(&all);
            serial.end_input();
        }
    }
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

fn event_loop(
    shared: &Arc<VmShared>,
    exit_event: EventFd,
    devices: Vec<DeviceEvents>,
    timeout: Option<Duration>,
) -> Result<i32> {
    let mut manager: EventManager<Subscriber> =
        EventManager::new().map_err(|e| VmmError::Host(format!("{e:?}")))?;
    let watcher = Arc::new(Mutex::new(ExitWatcher {
        event: exit_event,
        fired: false,
    }));
    manager.add_subscriber(watcher.clone());
    // Queue notifications (ioeventfds) and TAP input are handled here, on the main thread.
    for device in devices {
        manager.add_subscriber(Arc::new(Mutex::new(device)));
    }
    // /dev/null as standard input ends at once (the guest then sees its input end); a regular
    // file, which epoll refuses, is read whole at the start.
    manager.add_subscriber(Arc::new(Mutex::new(StdinToSerial {
        shared: shared.clone(),
    })));
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(reason) = shared.exit_reason() {
            return Ok(finish(shared, reason));
        }
        let wait_ms = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = std::io::stdout().flush();
                    eprintln!(
                        "k42vm: the guest did not shut down within --timeout {}; stopped it",
                        humantime::format_duration(timeout.unwrap_or_default())
                    );
                    shared.timeline.print_if_enabled();
                    return Ok(EXIT_TIMEOUT);
                }
                left.as_millis().min(1000) as i32 + 1
            }
            None => 1000,
        };
        manager
            .run_with_timeout(wait_ms)
            .map_err(|e| VmmError::Host(format!("event loop: {e:?}")))?;
    }
}

fn finish(shared: &VmShared, reason: VmExit) -> i32 {
    let _ = std::io::stdout().flush();
    let status = match reason {
        VmExit::Shutdown(code) => {
            let ktests = shared.ktests.lock().unwrap_or_else(|e| e.into_inner());
            match ktests.verdict() {
                Err(problem) => {
                    eprintln!("k42vm: {problem}");
                    EXIT_VM_FAILURE
                }
                Ok(summary) => {
                    if let Some(summary) = summary {
                        eprintln!("k42vm: {summary}");
                    }
                    code.min(255) as i32
                }
            }
        }
        VmExit::Failed(message) => {
            eprintln!("k42vm: {message}");
            EXIT_VM_FAILURE
        }
    };
    shared.timeline.print_if_enabled();
    status
}
