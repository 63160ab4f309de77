//! The k42 guest kernel: entry, initialisation order, and what it does once up.
#![no_std]
#![no_main]

extern crate alloc;

mod acpi;
mod arch;
mod bootinfo;
mod cobj;
mod console;
mod console_input;
mod device;
mod entry;
mod interrupts;
mod kbench;
mod ktest;
mod memobj;
mod mm;
mod percpu;
mod platform;
mod ppc;
mod proc;
mod sched;
mod smp;
mod syscall;
mod timer;
mod tlb;
mod upcall;

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use k42_paravirt::{exit_code, BootStage, ReportKind};

use arch::{apic, idt};
use bootinfo::Switches;
use k42_guest_lib::kabi;

/// The boot CPU's Rust entry, from the PVH entry in `arch::x86_64::boot`.
#[no_mangle]
pub extern "C" fn kernel_main(start_info_phys: u64) -> ! {
    platform::detect();
    platform::boot_stage(BootStage::LongMode);
    if !platform::on_k42vm() {
        // Mask the legacy PICs: their timer would otherwise arrive on exception vector 8.
        arch::outb(0x21, 0xff);
        arch::outb(0xa1, 0xff);
    }
    let info = match bootinfo::parse(start_info_phys) {
        Ok(info) => info,
        Err(e) => panic!("unusable PVH start info at {start_info_phys:#x}: {e}"),
    };
    let switches = Switches::parse(info.cmdline);
    let memory = match mm::init(&info) {
        Ok(m) => m,
        Err(e) => panic!("memory setup failed: {e}"),
    };
    platform::boot_stage(BootStage::MemoryReady);

    idt::init();
    let bsp = percpu::create(0, apic::id());
    percpu::install(bsp);
    apic::init(idt::SPURIOUS_VECTOR);
    // Interrupts come through the I/O APIC; the legacy PICs, never programmed, would turn
    // low lines (the UART's 4) into exception vectors.
    arch::ioapic::mask_legacy_pics();
    bsp.online.store(true, Ordering::Release);
    platform::boot_stage(BootStage::InterruptsReady);

    let cpus = match acpi::enumerate_cpus(info.rsdp_phys) {
        Some(list) => smp::start_secondaries(list.apic_ids()),
        None => {
            kprintln!("smp: no ACPI MADT found; running on the boot CPU only");
            1
        }
    };
    platform::boot_stage(BootStage::SmpReady);
    if let Err(e) = cobj::init(cpus) {
        panic!("clustered objects could not be set up: {e:?}");
    }
    if let Err(e) = sched::init(cpus) {
        panic!("the scheduler could not be set up: {e:?}");
    }

    platform::init_wall_clock();
    let boot_us = platform::tsc_to_ns(arch::rdtsc() - arch::boot::boot_tsc_value()) / 1000;
    if !switches.quiet {
        kprintln!(
            "k42 kernel: {} on {}, {} CPU{}, {} MiB RAM ({} MiB free), booted in {} us",
            env!("CARGO_PKG_VERSION"),
            if platform::on_k42vm() {
                "k42vm"
            } else {
                "a non-k42vm hypervisor"
            },
            cpus,
            if cpus == 1 { "" } else { "s" },
            memory.ram_bytes >> 20,
            memory.usable_bytes >> 20,
            boot_us
        );
    }
    if let (true, Some((start, size))) = (switches.initrd_checksum, info.initrd) {
        let bytes: &[u8] = mm::phys_slice(start, size as usize);
        let sum = k42_paravirt::checksum64(bytes);
        kprintln!("initrd: {} bytes, checksum {:#018x}", size, sum);
        platform::report(ReportKind::Metric, "initrd_checksum", sum);
    }
    platform::boot_stage(BootStage::InitDone);

    if switches.bench_hypercall {
        bench_hypercall();
    }
    if switches.bench_cobj {
        kbench::run();
    }
    if switches.ktest {
        let ok = ktest::run_all();
        platform::boot_stage(BootStage::TestsDone);
        if switches.cobj_list {
            cobj::print_objects();
        }
        platform::shutdown(if ok { 0 } else { exit_code::KTEST_FAILED });
    }
    if switches.cobj_list {
        cobj::print_objects();
    }
    if switches.test_panic {
        panic!("test panic requested on the command line (k42.test_panic)");
    }
    if switches.test_fault {
        // SAFETY-free by design: reading an unmapped address to exercise the exception path.
        arch::touch_unmapped();
    }
    if switches.test_triple_fault {
        arch::triple_fault();
    }
    if switches.test_hang {
        kprintln!("k42.test_hang: idling forever");
        loop {
            arch::enable_interrupts_and_halt();
        }
    }
    if let Some(init) = switches.init {
        if let Some(limit) = switches.max_processes {
            proc::set_process_limit(limit);
        }
        proc::set_syscall_rewrite(!switches.no_syscall_rewrite);
        let devices = device::init(info.cmdline, info.memmap);
        if devices > 0 && !switches.quiet {
            kprintln!("devices: {} virtio-mmio device(s) for drivers", devices);
        }
        start_init(
            init,
            switches.init_arg,
            info.initrd,
            !switches.no_console_input,
        );
    }
    platform::shutdown(switches.exit_code)
}

/// Starts the first user program and schedules from then on; fails the boot with a clear
/// message when it cannot be started.
fn start_init(path: &str, arg: u64, initrd: Option<(u64, u64)>, console_input: bool) -> ! {
    let Some((start, size)) = initrd else {
        kprintln!("init={}: no initramfs was given (k42vm --initrd)", path);
        platform::shutdown(exit_code::NO_INIT);
    };
    // The probe needs a user-mode round trip, so only boots that run programs pay for it.
    match entry::probe() {
        Ok(kind) => kprintln!("user entry: {:?}", kind),
        Err(e) => panic!("user-mode entry probe failed: {e}"),
    }
    console_input::init(console_input);
    match proc::init_initrd(start, size) {
        Ok(files) => kprintln!("initramfs: {} files; starting {}", files, path),
        Err(_) if proc::initrd_is_gzip(start, size) => {
            kprintln!(
                "init={}: the initramfs is gzip-compressed; this kernel does not unpack it in ring 0. \
                 k42vm unpacks it on the host; under another VMM pass the uncompressed cpio archive \
                 (gunzip it)",
                path
            );
            platform::shutdown(exit_code::NO_INIT);
        }
        Err(e) => {
            kprintln!(
                "init={}: the initramfs is not an uncompressed cpio archive ({:?})",
                path,
                e
            );
            platform::shutdown(exit_code::NO_INIT);
        }
    }
    // init is the root of trust: it holds every right and passes them on to the servers and
    // drivers it starts.
    let rights = kabi::SpawnFlags::CONSOLE | kabi::SpawnFlags::DEVICES;
    if let Err(e) = proc::spawn(path, arg, rights, None, 0, 0) {
        kprintln!("init={}: cannot start it: {:?}", path, e);
        platform::shutdown(exit_code::NO_INIT);
    }
    sched::run()
}

/// Measures the hypercall round trip (no-op hypercall) and reports it in nanoseconds.
fn bench_hypercall() {
    const ROUNDS: u64 = 2000;
    for _ in 0..100 {
        platform::nop_hypercall();
    }
    let start = arch::rdtsc();
    for _ in 0..ROUNDS {
        platform::nop_hypercall();
    }
    let per_call = platform::tsc_to_ns(arch::rdtsc() - start) / ROUNDS;
    platform::report(ReportKind::Metric, "hypercall_roundtrip_ns", per_call);
}

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    arch::disable_interrupts();
    if PANICKING.swap(true, Ordering::AcqRel) {
        // A panic while panicking: do not recurse into formatting.
        platform::shutdown(exit_code::PANIC);
    }
    let cpu = percpu::current_index();
    match info.location() {
        Some(loc) => console::print_unlocked(format_args!(
            "\nKERNEL PANIC on cpu {} at {}:{}: {}\n",
            cpu,
            loc.file(),
            loc.line(),
            info.message()
        )),
        None => console::print_unlocked(format_args!(
            "\nKERNEL PANIC on cpu {}: {}\n",
            cpu,
            info.message()
        )),
    }
    platform::shutdown(exit_code::PANIC)
}
