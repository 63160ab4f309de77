//! A minimal `/proc`: `cpuinfo`, `meminfo`, `mounts`, `uptime` and `version` (made here at each
//! open from CPUID and the kernel's `info`, read locally), `k42-file-windows` (the file
//! server's window counts: opens that got one, swaps back to the server, grows, closes), and
//! `/proc/self`, also reached as `/proc/<own pid>`: this process's `stat`, `status`, `cmdline`
//! and `comm` (what the personality knows of it), and `exe` (the running program). The file
//! server holds the files as empty placeholders, so `ls /proc` and `stat` see them as on Linux.
//! Other processes' directories are not there yet: a process knows only itself.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};
use core::fmt::Write;

use core::sync::atomic::{AtomicU64, Ordering};

use k42_rt::kabi::{Info, PAGE_SIZE};
use k42_rt::sys;

/// Clock ticks per second in `/proc` times (`AT_CLKTCK`, `sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SECOND: u64 = 100;
/// When this process started (boot clock, ns): its creation by the kernel or a fork.
static STARTED_NS: AtomicU64 = AtomicU64::new(0);

/// Notes that this process starts now (at its first program, and in a forked child).
pub fn record_start() {
    STARTED_NS.store(sys::now_ns(), Ordering::Relaxed);
}

/// `path` (absolute) with `/proc/<this process's pid>` as `/proc/self`, and `/proc/self/mounts`
/// as `/proc/mounts`; `None` when neither applies.
pub fn alias(path: &[u8]) -> Option<Vec<u8>> {
    if path == b"/proc/self/mounts" {
        return Some(b"/proc/mounts".to_vec());
    }
    let rest = path.strip_prefix(b"/proc/")?;
    let (first, tail) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => rest.split_at(i),
        None => (rest, &b""[..]),
    };
    if first != self_link().as_slice() {
        return None;
    }
    let mut out = b"/proc/self".to_vec();
    out.extend_from_slice(tail);
    Some(out)
}

/// The contents of `/proc` file `path` (absolute, normalized), if it is one made here.
pub fn contents(path: &[u8]) -> Option<Vec<u8>> {
    let name = path.strip_prefix(b"/proc/")?;
    let text = match name {
        b"cpuinfo" => cpuinfo(),
        b"meminfo" => meminfo(),
        b"mounts" | b"self/mounts" => mounts(),
        b"uptime" => uptime(),
        b"version" => version(),
        b"k42-file-windows" => crate::files::window_stats_text(),
        b"self/stat" => stat(),
        b"self/status" => status(),
        b"self/comm" => format!("{}\n", comm()),
        b"self/cmdline" => return Some(crate::exec::current_cmdline()),
        _ => return None,
    };
    Some(text.into_bytes())
}

/// The program's name as Linux keeps it: the last part of its path, at most 15 bytes.
fn comm() -> String {
    let exe = crate::exec::current_exe();
    let name = exe.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
    String::from_utf8_lossy(&name[..name.len().min(15)]).into()
}

/// `/proc/self/stat`: the 52 fields of proc(5), with what the personality knows (times it does
/// not count, and memory sizes, are 0).
fn stat() -> String {
    let pid = k42_rt::pid();
    let ppid = crate::fork::parent();
    let group = crate::fork::getpgid(0);
    let session = crate::fork::getsid(0);
    let threads = crate::threads::live_count();
    let started = STARTED_NS.load(Ordering::Relaxed) / (1_000_000_000 / TICKS_PER_SECOND);
    let blocked = crate::signals::blocked();
    let cpu = k42_rt::current_cpu();
    // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss
    // rsslim startcode endcode startstack kstkesp kstkeip signal blocked sigignore sigcatch
    // wchan nswap cnswap exit_signal processor rt_priority policy delayacct_blkio_ticks
    // guest_time cguest_time start_data end_data start_brk arg_start arg_end env_start env_end
    // exit_code
    format!(
        "{pid} ({}) R {ppid} {group} {session} 0 -1 0 0 0 0 0 0 0 0 0 20 0 {threads} 0 \
         {started} 0 0 18446744073709551615 0 0 0 0 0 0 {blocked} 0 0 0 0 0 17 {cpu} 0 0 0 0 \
         0 0 0 0 0 0 0 0 0\n",
        comm()
    )
}

/// `/proc/self/status`: the common fields of proc(5).
fn status() -> String {
    let pid = k42_rt::pid();
    format!(
        "Name:\t{}\nUmask:\t{:04o}\nState:\tR (running)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\n\
         PPid:\t{}\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nThreads:\t{}\n\
         SigBlk:\t{:016x}\n",
        comm(),
        crate::files::umask(),
        crate::fork::parent(),
        crate::threads::live_count(),
        crate::signals::blocked()
    )
}

/// The target of `/proc/self`: this process's id.
pub fn self_link() -> Vec<u8> {
    format!("{}", k42_rt::pid()).into_bytes()
}

fn cpuid(leaf: u32) -> CpuidResult {
    __cpuid(leaf)
}

/// The CPU's brand string (leaves 0x8000_0002..4), trimmed.
fn brand() -> String {
    if cpuid(0x8000_0000).eax < 0x8000_0004 {
        return String::from("unknown");
    }
    let mut bytes = Vec::new();
    for leaf in 0x8000_0002..=0x8000_0004u32 {
        let r = cpuid(leaf);
        for word in [r.eax, r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
    }
    String::from_utf8_lossy(&bytes)
        .trim_matches(|c: char| c == '\0' || c == ' ')
        .into()
}

/// Linux's names of the CPUID feature bits we report: (leaf 1 EDX, leaf 1 ECX, leaf 7 EBX).
const EDX1: [(u32, &str); 23] = [
    (0, "fpu"),
    (1, "vme"),
    (2, "de"),
    (3, "pse"),
    (4, "tsc"),
    (5, "msr"),
    (6, "pae"),
    (7, "mce"),
    (8, "cx8"),
    (9, "apic"),
    (11, "sep"),
    (12, "mtrr"),
    (13, "pge"),
    (14, "mca"),
    (15, "cmov"),
    (16, "pat"),
    (17, "pse36"),
    (19, "clflush"),
    (23, "mmx"),
    (24, "fxsr"),
    (25, "sse"),
    (26, "sse2"),
    (28, "ht"),
];
const ECX1: [(u32, &str); 17] = [
    (0, "pni"),
    (1, "pclmulqdq"),
    (9, "ssse3"),
    (12, "fma"),
    (13, "cx16"),
    (19, "sse4_1"),
    (20, "sse4_2"),
    (21, "x2apic"),
    (22, "movbe"),
    (23, "popcnt"),
    (25, "aes"),
    (26, "xsave"),
    (27, "osxsave"),
    (28, "avx"),
    (29, "f16c"),
    (30, "rdrand"),
    (31, "hypervisor"),
];
const EBX7: [(u32, &str); 12] = [
    (0, "fsgsbase"),
    (3, "bmi1"),
    (5, "avx2"),
    (7, "smep"),
    (8, "bmi2"),
    (9, "erms"),
    (16, "avx512f"),
    (18, "rdseed"),
    (19, "adx"),
    (20, "smap"),
    (23, "clflushopt"),
    (29, "sha_ni"),
];

fn flags() -> String {
    let l1 = cpuid(1);
    let l7 = if cpuid(0).eax >= 7 {
        __cpuid_count(7, 0).ebx
    } else {
        0
    };
    let mut names: Vec<&str> = Vec::new();
    for (word, table) in [(l1.edx, &EDX1[..]), (l1.ecx, &ECX1[..]), (l7, &EBX7[..])] {
        names.extend(
            table
                .iter()
                .filter(|(bit, _)| word & (1 << bit) != 0)
                .map(|(_, name)| *name),
        );
    }
    names.join(" ")
}

fn cpuinfo() -> String {
    let vendor = {
        let r = cpuid(0);
        let mut v = Vec::new();
        for word in [r.ebx, r.edx, r.ecx] {
            v.extend_from_slice(&word.to_le_bytes());
        }
        String::from_utf8_lossy(&v).into_owned()
    };
    let signature = cpuid(1).eax;
    let family = (signature >> 8) & 0xf;
    let model = (signature >> 4) & 0xf;
    let (family, model) = if family == 0xf || family == 6 {
        (
            family + ((signature >> 20) & 0xff),
            model | (((signature >> 16) & 0xf) << 4),
        )
    } else {
        (family, model)
    };
    let stepping = signature & 0xf;
    let khz = sys::info(Info::TscKhz);
    let cpus = sys::info(Info::Cpus);
    let (brand, flags) = (brand(), flags());
    let mut out = String::new();
    for cpu in 0..cpus {
        let _ = write!(
            out,
            "processor\t: {cpu}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: \
             {model}\nmodel name\t: {brand}\nstepping\t: {stepping}\ncpu MHz\t\t: {}.{:03}\n\
             physical id\t: 0\nsiblings\t: {cpus}\ncore id\t\t: {cpu}\ncpu cores\t: {cpus}\n\
             apicid\t\t: {cpu}\nfpu\t\t: yes\nflags\t\t: {flags}\nclflush size\t: 64\n\
             cache_alignment\t: 64\n\n",
            khz / 1000,
            khz % 1000,
        );
    }
    out
}

fn meminfo() -> String {
    let kib = |frames: u64| frames * (PAGE_SIZE / 1024);
    let total = kib(sys::info(Info::TotalFrames));
    let free = kib(sys::info(Info::FreeFrames));
    format!(
        "MemTotal:       {total:>8} kB\nMemFree:        {free:>8} kB\nMemAvailable:   {free:>8} kB\n\
         Buffers:        {:>8} kB\nCached:         {:>8} kB\nSwapTotal:      {:>8} kB\n\
         SwapFree:       {:>8} kB\n",
        0, 0, 0, 0
    )
}

fn mounts() -> String {
    String::from("rootfs / rootfs rw 0 0\nproc /proc proc ro 0 0\n")
}

/// `sysinfo(2)`: uptime and memory as `/proc` reports them (no load average or swap).
pub fn sysinfo() -> k42_linux_abi::process::Sysinfo {
    k42_linux_abi::process::Sysinfo {
        uptime: (sys::now_ns() / 1_000_000_000) as i64,
        totalram: sys::info(Info::TotalFrames),
        freeram: sys::info(Info::FreeFrames),
        procs: 1,
        mem_unit: PAGE_SIZE as u32,
        ..Default::default()
    }
}

fn uptime() -> String {
    let ns = sys::now_ns();
    let centis = ns / 10_000_000;
    // Idle time is not counted (reported as 0, as some containers do).
    format!("{}.{:02} 0.00\n", centis / 100, centis % 100)
}

fn version() -> String {
    String::from("Linux version 6.1.0-k42 (k42) #1 K42 (the k42 kernel's Linux personality)\n")
}
