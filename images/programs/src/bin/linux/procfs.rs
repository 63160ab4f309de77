//! A minimal `/proc`: `cpuinfo`, `meminfo`, `mounts`, `uptime` and `version` (made here at each
//! open from CPUID and the kernel's `info`, read locally), `k42-file-windows` (the file
//! server's window counts: opens that got one, swaps back to the server, grows, closes), and a
//! directory per process. `/proc/self`, also reached as `/proc/<own pid>`, has this process's
//! `stat`, `status`, `cmdline` and `comm` (what the personality knows of it) and `exe` (the
//! running program). The file server holds those files as empty placeholders, so `ls /proc` and
//! `stat` see them as on Linux. Another process's `/proc/<pid>` shows the same four files made
//! from what the kernel's process list says of it (`Sys::ProcessList`: parent, group,
//! session, state, start time, name and the first [`kabi::COMMAND_MAX`] bytes of its command
//! line); the file server's placeholders under `/proc/self` stand in for them there, and
//! reading `/proc` lists every live process after the server's entries.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};
use core::fmt::Write;

use core::sync::atomic::{AtomicU64, Ordering};

use k42_rt::kabi::{self, Info, ProcessDesc, ProcessState, PAGE_SIZE};
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
        _ => {
            let (pid, file) = other_process_file(path)?;
            let desc = find(pid)?;
            match file {
                b"stat" => other_stat(&desc),
                b"status" => other_status(&desc),
                b"comm" => format!("{}\n", short_name(desc.name())),
                b"cmdline" => return Some(desc.arguments().to_vec()),
                _ => return None,
            }
        }
    };
    Some(text.into_bytes())
}

/// Where the file server keeps the entry standing in for `path` when it names another
/// process's directory or one of its files (`/proc/<pid>[/file]`): `Ok(None)` for any other
/// path, `ENOENT` for a process that is not alive or a file it does not have.
pub fn server_path(path: &[u8]) -> Result<Option<Vec<u8>>, crate::Ret> {
    let Some(rest) = path.strip_prefix(b"/proc/") else {
        return Ok(None);
    };
    let (first, file) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let Some(pid) = parse_pid(first) else {
        return Ok(None);
    };
    let known = file.is_empty() || PROCESS_FILES.contains(&file);
    if !known || find(pid).is_none() {
        return Err(crate::err(k42_linux_abi::errno::ENOENT));
    }
    let mut stand_in = b"/proc/self".to_vec();
    if !file.is_empty() {
        stand_in.push(b'/');
        stand_in.extend_from_slice(file);
    }
    Ok(Some(stand_in))
}

/// The files of another process's directory.
const PROCESS_FILES: [&[u8]; 4] = [b"stat", b"status", b"cmdline", b"comm"];

/// `(pid, file)` of a path `/proc/<pid>/<file>` (after `/proc/<own pid>` became `/proc/self`).
fn other_process_file(path: &[u8]) -> Option<(u64, &[u8])> {
    let rest = path.strip_prefix(b"/proc/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    Some((parse_pid(&rest[..slash])?, &rest[slash + 1..]))
}

/// A pid written as Linux names `/proc` directories (decimal, no sign or leading zero).
fn parse_pid(name: &[u8]) -> Option<u64> {
    if name.is_empty() || name.len() > 19 || name[0] == b'0' {
        return None;
    }
    name.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// The live processes, by pid.
pub fn processes() -> Vec<ProcessDesc> {
    let mut all = alloc::vec![ProcessDesc::default(); kabi::MAX_PROCESSES];
    let n = sys::process_list(&mut all).unwrap_or(0);
    all.truncate(n.min(kabi::MAX_PROCESSES));
    all
}

/// The live process `pid`, if any.
pub fn find(pid: u64) -> Option<ProcessDesc> {
    processes().into_iter().find(|d| d.pid == pid)
}

/// Records this process's name and command line with the kernel, where other processes'
/// `/proc/<pid>` and `ps` read them: at the first program and at each exec.
pub fn publish_command() {
    let mut record = comm().into_bytes();
    record.push(0);
    record.extend_from_slice(&crate::exec::current_cmdline());
    record.truncate(kabi::COMMAND_MAX);
    // Only what others see is lost if this fails.
    let _ = sys::process_command(&record);
}

/// Linux's name for a program: the last part of a path, at most 15 bytes.
fn short_name(path: &[u8]) -> String {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
    String::from_utf8_lossy(&name[..name.len().min(15)]).into()
}

/// Linux's one-letter state of a process the kernel lists.
fn state_letter(desc: &ProcessDesc) -> (char, &'static str) {
    match desc.state {
        s if s == ProcessState::Running as u64 => ('R', "running"),
        s if s == ProcessState::Exiting as u64 => ('Z', "zombie"),
        _ => ('S', "sleeping"),
    }
}

/// What a `stat` line shows.
struct StatFields {
    pid: u64,
    name: String,
    state: char,
    parent: u64,
    group: u64,
    session: u64,
    threads: u64,
    started_ns: u64,
    blocked: u64,
    cpu: u64,
}

/// The 52 fields of proc(5)'s `stat` (times not counted and memory sizes are 0).
fn stat_line(f: &StatFields) -> String {
    let started = f.started_ns / (1_000_000_000 / TICKS_PER_SECOND);
    // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss
    // rsslim startcode endcode startstack kstkesp kstkeip signal blocked sigignore sigcatch
    // wchan nswap cnswap exit_signal processor rt_priority policy delayacct_blkio_ticks
    // guest_time cguest_time start_data end_data start_brk arg_start arg_end env_start env_end
    // exit_code
    format!(
        "{} ({}) {} {} {} {} 0 -1 0 0 0 0 0 0 0 0 0 20 0 {} 0 {started} 0 0 \
         18446744073709551615 0 0 0 0 0 0 {} 0 0 0 0 0 17 {} 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        f.pid, f.name, f.state, f.parent, f.group, f.session, f.threads, f.blocked, f.cpu
    )
}

/// `/proc/<pid>/stat` of another process: what the kernel lists (its dispatchers count as
/// threads; its signal mask and CPU are not known here and read 0).
fn other_stat(desc: &ProcessDesc) -> String {
    stat_line(&StatFields {
        pid: desc.pid,
        name: short_name(desc.name()),
        state: state_letter(desc).0,
        parent: desc.parent,
        group: desc.group,
        session: desc.session,
        threads: desc.dispatchers.max(1),
        started_ns: desc.started_ns,
        blocked: 0,
        cpu: 0,
    })
}

/// `/proc/<pid>/status` of another process.
fn other_status(desc: &ProcessDesc) -> String {
    let (letter, word) = state_letter(desc);
    format!(
        "Name:\t{}\nState:\t{letter} ({word})\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\n\
         PPid:\t{}\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nThreads:\t{}\n",
        short_name(desc.name()),
        desc.parent,
        desc.dispatchers.max(1),
        pid = desc.pid,
    )
}

/// The program's name as Linux keeps it: the last part of its path, at most 15 bytes.
fn comm() -> String {
    short_name(&crate::exec::current_exe())
}

/// `/proc/self/stat`: the 52 fields of proc(5), with what the personality knows (times it does
/// not count, and memory sizes, are 0).
fn stat() -> String {
    stat_line(&StatFields {
        pid: k42_rt::pid(),
        name: comm(),
        state: 'R',
        parent: crate::fork::parent() as u64,
        group: crate::fork::getpgid(0) as u64,
        session: crate::fork::getsid(0) as u64,
        threads: crate::threads::live_count() as u64,
        started_ns: STARTED_NS.load(Ordering::Relaxed),
        blocked: crate::signals::blocked(),
        cpu: k42_rt::current_cpu() as u64,
    })
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
