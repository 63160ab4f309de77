//! What the loader told us: the PVH `hvm_start_info` (memory map, command line, modules, RSDP).

use k42_paravirt::{HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_START_MAGIC};

use crate::mm::phys_ref;

/// Longest kernel command line read.
const CMDLINE_MAX: usize = 4096;

/// Parsed boot information; all references point into loader-provided memory that the frame
/// allocator never hands out.
pub struct BootInfo {
    /// Physical address of the `hvm_start_info` itself.
    pub start_info_phys: u64,
    /// The kernel command line ("" when absent or not UTF-8).
    pub cmdline: &'static str,
    /// Physical range of the command line, if any.
    pub cmdline_range: Option<(u64, u64)>,
    /// The memory map.
    pub memmap: &'static [HvmMemmapEntry],
    /// Physical address of the memory map.
    pub memmap_phys: u64,
    /// The initrd (module 0): physical start and size.
    pub initrd: Option<(u64, u64)>,
    /// Physical address of the ACPI RSDP (0 if not given).
    pub rsdp_phys: u64,
}

/// Why the start-of-day information is unusable.
#[derive(Debug)]
pub enum BootInfoError {
    /// `hvm_start_info.magic` is wrong.
    BadMagic(u32),
    /// No memory map (PVH version 0, or zero entries).
    NoMemoryMap,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => write!(f, "bad hvm_start_info magic {m:#x}"),
            BootInfoError::NoMemoryMap => write!(f, "no memory map in hvm_start_info"),
        }
    }
}

/// Reads the `hvm_start_info` at `phys`.
pub fn parse(phys: u64) -> Result<BootInfo, BootInfoError> {
    let info: &HvmStartInfo = phys_ref(phys);
    if info.magic != HVM_START_MAGIC {
        return Err(BootInfoError::BadMagic(info.magic));
    }
    if info.version < 1 || info.memmap_entries == 0 || info.memmap_paddr == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let memmap: &'static [HvmMemmapEntry] =
        crate::mm::phys_slice(info.memmap_paddr, info.memmap_entries.min(128) as usize);
    let (cmdline, cmdline_range) = if info.cmdline_paddr != 0 {
        let bytes: &'static [u8] = crate::mm::phys_slice(info.cmdline_paddr, CMDLINE_MAX);
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(CMDLINE_MAX);
        let text = core::str::from_utf8(&bytes[..len]).unwrap_or("");
        (
            text,
            Some((info.cmdline_paddr, info.cmdline_paddr + len as u64 + 1)),
        )
    } else {
        ("", None)
    };
    let initrd = if info.nr_modules > 0 && info.modlist_paddr != 0 {
        let module: &HvmModlistEntry = phys_ref(info.modlist_paddr);
        (module.size > 0).then_some((module.paddr, module.size))
    } else {
        None
    };
    Ok(BootInfo {
        start_info_phys: phys,
        cmdline,
        cmdline_range,
        memmap,
        memmap_phys: info.memmap_paddr,
        initrd,
        rsdp_phys: info.rsdp_paddr,
    })
}

/// The kernel's own command-line switches (`k42.*`), parsed once at boot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    /// `k42.ktest`: run the in-kernel tests and shut down with their result.
    pub ktest: bool,
    /// `k42.exit=N`: exit code after a normal boot.
    pub exit_code: u32,
    /// `k42.test_panic`: panic after init (tests the panic path).
    pub test_panic: bool,
    /// `k42.test_fault`: touch an unmapped address after init (tests the exception path).
    pub test_fault: bool,
    /// `k42.test_hang`: never shut down (tests the VMM's timeout).
    pub test_hang: bool,
    /// `k42.test_triple_fault`: triple-fault the boot CPU (tests the VMM's failure report).
    pub test_triple_fault: bool,
    /// `k42.initrd_checksum`: report the initrd's checksum.
    pub initrd_checksum: bool,
    /// `k42.bench=hypercall`: measure the hypercall round trip.
    pub bench_hypercall: bool,
    /// `k42.quiet`: no banner.
    pub quiet: bool,
    /// `k42.cobj_list`: print the clustered objects at the end of boot.
    pub cobj_list: bool,
    /// `k42.bench=cobj`: run the clustered-object benchmarks.
    pub bench_cobj: bool,
    /// `init=PATH`: the first user program (a path in the initramfs).
    pub init: Option<&'static str>,
    /// `k42.arg=N`: the argument the first program is started with.
    pub init_arg: u64,
    /// `k42.max_processes=N`: fewer live processes than `kabi::MAX_PROCESSES` (tests run a
    /// small fork bomb against it).
    pub max_processes: Option<usize>,
    /// `k42.syscall_rewrite=off`: Linux system-call sites stay `syscall` instructions (they
    /// are rewritten into calls by default).
    pub no_syscall_rewrite: bool,
    /// `k42.console_input=off`: the console has no input (reads of it end at once).
    pub no_console_input: bool,
}

impl Switches {
    /// Parses the `k42.*` words of `cmdline`; unknown words are left to others.
    pub fn parse(cmdline: &'static str) -> Switches {
        let mut s = Switches::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "k42.ktest" => s.ktest = true,
                "k42.exit" => s.exit_code = value.parse().unwrap_or(0),
                "k42.test_panic" => s.test_panic = true,
                "k42.test_fault" => s.test_fault = true,
                "k42.test_hang" => s.test_hang = true,
                "k42.test_triple_fault" => s.test_triple_fault = true,
                "k42.initrd_checksum" => s.initrd_checksum = true,
                "k42.bench" if value == "hypercall" => s.bench_hypercall = true,
                "k42.bench" if value == "cobj" => s.bench_cobj = true,
                "k42.cobj_list" => s.cobj_list = true,
                "k42.quiet" => s.quiet = true,
                "init" if !value.is_empty() => s.init = Some(value),
                "k42.arg" => s.init_arg = value.parse().unwrap_or(0),
                "k42.max_processes" => s.max_processes = value.parse().ok(),
                "k42.syscall_rewrite" => s.no_syscall_rewrite = value == "off",
                "k42.console_input" => s.no_console_input = value == "off",
                _ => {}
            }
        }
        s
    }
}
