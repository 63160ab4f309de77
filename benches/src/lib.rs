//! Shared pieces of the k42 benchmarks (`boot`, `hypercall`, `memory`).
//!
//! The parsing and statistics functions are pure and unit-tested without KVM; the process helpers
//! at the bottom locate and run `k42vm` and QEMU for the benches in `benches/`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Parsing what k42vm prints
// ---------------------------------------------------------------------------------------------

/// One `timeline <ms> <label>` line from `k42vm run --timeline`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    /// Milliseconds since the k42vm process started.
    pub ms: f64,
    /// What happened at that moment, e.g. `first guest instruction`.
    pub label: String,
}

/// Extracts the `timeline <ms> <label>` lines from k42vm's stderr, ignoring every other line.
pub fn parse_timeline(stderr: &str) -> Vec<TimelineEntry> {
    stderr
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("timeline ")?;
            let (ms, label) = rest.trim_start().split_once(char::is_whitespace)?;
            let ms: f64 = ms.parse().ok()?;
            let label = label.trim();
            (ms.is_finite() && !label.is_empty()).then(|| TimelineEntry {
                ms,
                label: label.to_string(),
            })
        })
        .collect()
}

/// The time of the first timeline entry with exactly `label`, if any.
pub fn timeline_ms(entries: &[TimelineEntry], label: &str) -> Option<f64> {
    entries.iter().find(|e| e.label == label).map(|e| e.ms)
}

/// The value of the first `metric <name> <value>` line in `stdout`, if any.
pub fn parse_metric(stdout: &str, name: &str) -> Option<f64> {
    stdout.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "metric" || words.next()? != name {
            return None;
        }
        let value: f64 = words.next()?.parse().ok()?;
        value.is_finite().then_some(value)
    })
}

/// Parses a memory size as k42vm's `--memory` takes it (`256M`, `1G`, `512K`, `4096`) into bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// The median (mean of the two middle samples for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

/// Summarises `samples`; `None` when there are none or any is NaN.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Summary {
        n,
        median,
        min: sorted[0],
        max: sorted[n - 1],
    })
}

/// `numerator / denominator`, or `None` when the denominator is not positive.
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0 && numerator.is_finite()).then(|| numerator / denominator)
}

/// `MET` or `NOT MET`, for the goal lines the benches print.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "NOT MET"
    }
}

// ---------------------------------------------------------------------------------------------
// /proc/<pid>/status, smaps and smaps_rollup
// ---------------------------------------------------------------------------------------------

/// The value in KiB of a `Name:   1234 kB` line (as in /proc/<pid>/status and smaps_rollup).
pub fn parse_kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        matches!(words.next(), Some("kB") | None).then_some(value)
    })
}

/// One mapping of /proc/<pid>/smaps with the fields the memory bench uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Permissions, e.g. `rw-p`.
    pub perms: String,
    /// Path or pseudo-name (`[heap]`, `/memfd:x (deleted)`); empty for an anonymous mapping.
    pub path: String,
    /// Resident set, KiB.
    pub rss_kib: u64,
}

impl Mapping {
    /// Size of the mapping in bytes.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Whether guest RAM could live here: anonymous memory (unnamed, `[anon:…]`) or a memfd.
    pub fn is_anonymous_like(&self) -> bool {
        self.path.is_empty() || self.path.starts_with("[anon:") || self.path.starts_with("/memfd:")
    }
}

/// Parses /proc/<pid>/smaps into its mappings (header line plus the `Rss:` field).
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(header) = parse_smaps_header(line) {
            maps.push(header);
        } else if let (Some(last), Some(rss)) = (maps.last_mut(), parse_kib_field(line, "Rss")) {
            last.rss_kib = rss;
        }
    }
    maps
}

/// Parses a mapping header `start-end perms offset dev inode [path]`; `None` for field lines.
fn parse_smaps_header(line: &str) -> Option<Mapping> {
    let (range, rest) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start {
        return None;
    }
    let mut fields = rest.splitn(5, ' ');
    let perms = fields.next()?;
    if perms.len() != 4 {
        return None;
    }
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim();
    Some(Mapping {
        start,
        end,
        perms: perms.to_string(),
        path: path.to_string(),
        rss_kib: 0,
    })
}

/// How a process's resident memory splits into guest RAM and everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamSplit {
    /// Resident KiB in the mappings taken as guest RAM.
    pub guest_rss_kib: u64,
    /// Resident KiB in all other mappings: the VMM's own overhead.
    pub other_rss_kib: u64,
    /// The mappings taken as guest RAM.
    pub guest_mappings: Vec<Mapping>,
    /// Whether every expected RAM region matched a mapping of exactly its size.
    pub exact: bool,
}

/// Splits `maps` into guest RAM and the rest, given the sizes (bytes) of the guest's RAM regions.
///
/// Each region size is matched to an anonymous (or memfd) mapping of exactly that size, the most
/// resident one if several qualify. A region with no exact match (the kernel merged its mapping
/// with an adjacent one) takes the smallest larger anonymous mapping instead, and the split is
/// then marked inexact.
pub fn split_guest_ram(maps: &[Mapping], region_sizes: &[u64]) -> RamSplit {
    let mut taken = vec![false; maps.len()];
    let mut exact = true;
    for &size in region_sizes {
        let pick_exact = maps
            .iter()
            .enumerate()
            .filter(|(i, m)| !taken[*i] && m.is_anonymous_like() && m.size() == size)
            .max_by_key(|(_, m)| m.rss_kib)
            .map(|(i, _)| i);
        let pick = pick_exact.or_else(|| {
            exact = false;
            maps.iter()
                .enumerate()
                .filter(|(i, m)| !taken[*i] && m.is_anonymous_like() && m.size() > size)
                .min_by_key(|(_, m)| m.size())
                .map(|(i, _)| i)
        });
        if let Some(i) = pick {
            taken[i] = true;
        }
    }
    let guest_mappings: Vec<Mapping> = maps
        .iter()
        .zip(&taken)
        .filter(|(_, t)| **t)
        .map(|(m, _)| m.clone())
        .collect();
    let guest_rss_kib = guest_mappings.iter().map(|m| m.rss_kib).sum();
    let other_rss_kib = maps
        .iter()
        .zip(&taken)
        .filter(|(_, t)| !**t)
        .map(|(m, _)| m.rss_kib)
        .sum();
    RamSplit {
        guest_rss_kib,
        other_rss_kib,
        guest_mappings,
        exact: exact && region_sizes.iter().all(|&s| s > 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------------------------

/// The result of one timed run of a program.
#[derive(Debug)]
pub struct Run {
    /// How the program ended.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
    /// Wall time from just before spawning to reaping it.
    pub wall: Duration,
}

/// Runs `cmd` (stdin closed, stdout and stderr captured), killing it after `timeout`.
pub fn run_timed(cmd: &mut Command, timeout: Duration) -> Result<Run, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let (tx, rx) = mpsc::channel();
    let readers = [
        spawn_reader(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            0,
            tx.clone(),
        ),
        spawn_reader(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            1,
            tx,
        ),
    ];
    let deadline = start + timeout;
    let mut out = [String::new(), String::new()];
    let mut done = 0;
    while done < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((which, text)) => {
                out[which] = text;
                done += 1;
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{:?} did not finish within {timeout:?}; killed it",
                    cmd.get_program()
                ));
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the child: {e}"))?;
    let wall = start.elapsed();
    for r in readers {
        let _ = r.join();
    }
    let [stdout, stderr] = out;
    Ok(Run {
        status,
        stdout,
        stderr,
        wall,
    })
}

fn spawn_reader(
    pipe: Option<Box<dyn Read + Send>>,
    which: usize,
    tx: mpsc::Sender<(usize, String)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        let _ = tx.send((which, String::from_utf8_lossy(&bytes).into_owned()));
    })
}

/// Kills and reaps a child this bench started (ignoring one that already exited).
pub fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails with a clear message unless /dev/kvm can be opened for reading and writing.
pub fn require_kvm() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| {
            format!("/dev/kvm is not usable ({e}): this benchmark needs KVM; run it on a KVM host")
        })
}

/// The directory holding the bench executable's profile outputs (`<target>/release`).
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    let dir = if deps.file_name()? == "deps" {
        deps.parent()?
    } else {
        deps
    };
    Some(dir.to_path_buf())
}

/// Finds (building it first) the `k42vm` binary.
///
/// Order: `$K42VM` if set; else `cargo build --release -p k42vm` (with `$CARGO` and the same
/// target directory) and the binary next to this bench's profile directory; else an existing
/// binary there, with a warning that it may be stale.
pub fn k42vm_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("K42VM") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("K42VM={} is not a file", path.display()))
        };
    }
    let dir = profile_dir().ok_or("cannot tell this bench's target directory")?;
    let candidate = dir.join("k42vm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    eprintln!("setup: building k42vm (cargo build --release -p k42vm) ...");
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--release", "-p", "k42vm", "--manifest-path"])
        .arg(&manifest);
    // Build into the target directory this bench runs from, so the binary lands where we look.
    if let Some(target) = dir.parent() {
        build.env("CARGO_TARGET_DIR", target);
    }
    let built = build.status();
    match built {
        Ok(s) if s.success() && candidate.is_file() => Ok(candidate),
        Ok(s) if s.success() => Err(format!(
            "`cargo build --release -p k42vm` succeeded but {} does not exist; set K42VM=/path/to/k42vm",
            candidate.display()
        )),
        other => {
            let why = match other {
                Ok(s) => format!("exited with {s}"),
                Err(e) => format!("could not run {cargo:?}: {e}"),
            };
            if candidate.is_file() {
                eprintln!(
                    "setup: WARNING: building k42vm failed ({why}); using the existing, possibly stale {}",
                    candidate.display()
                );
                Ok(candidate)
            } else {
                Err(format!(
                    "k42vm binary missing: `cargo build --release -p k42vm` failed ({why}) and there is no {}; \
                     fix the build or set K42VM=/path/to/k42vm",
                    candidate.display()
                ))
            }
        }
    }
}

/// The guest kernel ELF to boot: `$K42_KERNEL` if set, else `default` (the images crate's).
pub fn kernel_elf(default: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("K42_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "guest kernel ELF {} does not exist; build the workspace (k42-images builds it) or set K42_KERNEL",
            path.display()
        ))
    }
}

/// Searches `$PATH` for an executable called `name`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Finds `qemu-system-x86_64`, installing Debian's `qemu-system-x86` package if it is missing.
pub fn ensure_qemu() -> Result<PathBuf, String> {
    const QEMU: &str = "qemu-system-x86_64";
    if let Some(p) = which(QEMU) {
        return Ok(p);
    }
    eprintln!("setup: {QEMU} not found; installing it: apt-get install -y qemu-system-x86");
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "qemu-system-x86",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let ok = match install() {
        Ok(s) if s.success() => true,
        _ => {
            // A fresh machine may have no package lists yet.
            let _ = Command::new("apt-get").arg("update").status();
            matches!(install(), Ok(s) if s.success())
        }
    };
    match which(QEMU) {
        Some(p) if ok => Ok(p),
        _ => Err(format!(
            "{QEMU} is missing and `apt-get install -y qemu-system-x86` failed; install QEMU to get the peer figure"
        )),
    }
}

/// How QEMU is run as the peer: the accelerator and CPU arguments, and a label for the output.
#[derive(Debug, Clone)]
pub struct QemuAccel {
    /// Arguments selecting the accelerator and CPU model.
    pub args: Vec<&'static str>,
    /// Human-readable description printed with every QEMU figure.
    pub label: String,
}

/// The accelerator variants tried, best first: KVM as specified, KVM without the host CPU's
/// ARCH_CAPABILITIES MSR (which some KVMs refuse), then TCG.
const QEMU_VARIANTS: [(&[&str], &str); 3] = [
    (&["-accel", "kvm", "-cpu", "host"], "kvm, -cpu host"),
    (
        &["-accel", "kvm", "-cpu", "host,-arch-capabilities"],
        "kvm, -cpu host,-arch-capabilities (plain -cpu host fails on this KVM)",
    ),
    (
        &["-accel", "tcg", "-cpu", "max"],
        "TCG, -cpu max: QEMU with -accel kvm FAILED on this machine, so this is full emulation",
    ),
];

/// The QEMU `-M microvm` command line for `kernel` with `cmdline`, using `accel`.
pub fn qemu_command(qemu: &Path, accel: &QemuAccel, kernel: &Path, cmdline: &str) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(&accel.args)
        .args([
            "-M",
            "microvm",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-serial", "stdio", "-kernel"])
        .arg(kernel)
        .args(["-append", cmdline])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
    cmd
}

/// Whether a QEMU run ended through isa-debug-exit with guest exit code 0 (status (0<<1)|1 = 1).
pub fn qemu_guest_succeeded(status: ExitStatus) -> bool {
    status.code() == Some(1)
}

/// Picks the first QEMU accelerator variant that boots `kernel` to a clean guest exit.
pub fn qemu_probe(qemu: &Path, kernel: &Path) -> Result<QemuAccel, String> {
    let mut failures = Vec::new();
    for (args, label) in QEMU_VARIANTS {
        let accel = QemuAccel {
            args: args.to_vec(),
            label: label.to_string(),
        };
        let mut cmd = qemu_command(qemu, &accel, kernel, "k42.quiet");
        match run_timed(&mut cmd, Duration::from_secs(30)) {
            Ok(run) if qemu_guest_succeeded(run.status) => {
                for (args, why) in &failures {
                    eprintln!("setup: QEMU `{args}` failed: {why}");
                }
                return Ok(accel);
            }
            Ok(run) => failures.push((
                args.join(" "),
                format!("{}; stderr: {}", run.status, tail(&run.stderr, 3)),
            )),
            Err(e) => failures.push((args.join(" "), e)),
        }
    }
    let all: Vec<String> = failures
        .iter()
        .map(|(a, w)| format!("`{a}`: {w}"))
        .collect();
    Err(format!(
        "QEMU could not boot {} with any accelerator: {}",
        kernel.display(),
        all.join("; ")
    ))
}

/// Formats milliseconds with three decimals.
pub fn fmt_ms(ms: f64) -> String {
    format!("{ms:.3}")
}

/// Formats KiB as MiB with two decimals.
pub fn fmt_mib(kib: u64) -> String {
    format!("{:.2}", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_lines_are_parsed_and_others_ignored() {
        let stderr = "k42vm: starting\n\
                      timeline 2.345 first guest instruction\n\
                      timeline  4.000   kernel init done  \n\
                      timeline x bogus\n\
                      timeline 5.5\n\
                      something timeline 1.0 not at start\n\
                      timeline 6.125 guest shutdown\n";
        let t = parse_timeline(stderr);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].label, "first guest instruction");
        assert_eq!(timeline_ms(&t, "first guest instruction"), Some(2.345));
        assert_eq!(timeline_ms(&t, "kernel init done"), Some(4.0));
        assert_eq!(timeline_ms(&t, "guest shutdown"), Some(6.125));
        assert_eq!(timeline_ms(&t, "missing"), None);
    }

    #[test]
    fn metric_lines_are_found_by_name() {
        let out = "hello\nmetric other 5\nmetric hypercall_roundtrip_ns 9123\nmetric x nan\n";
        assert_eq!(parse_metric(out, "hypercall_roundtrip_ns"), Some(9123.0));
        assert_eq!(parse_metric(out, "other"), Some(5.0));
        assert_eq!(parse_metric(out, "x"), None);
        assert_eq!(parse_metric(out, "absent"), None);
        assert_eq!(
            parse_metric("metric hypercall_roundtrip_ns", "hypercall_roundtrip_ns"),
            None
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("M"), None);
    }

    #[test]
    fn summary_of_odd_even_and_empty() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratios_and_verdicts() {
        assert_eq!(ratio(10.0, 2.0), Some(5.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(verdict(true), "MET");
        assert_eq!(verdict(false), "NOT MET");
    }

    #[test]
    fn kib_fields_from_status() {
        let status = "Name:\tk42vm\nVmPeak:\t  300000 kB\nVmRSS:\t    4321 kB\nThreads:\t3\n";
        assert_eq!(parse_kib_field(status, "VmRSS"), Some(4321));
        assert_eq!(parse_kib_field(status, "VmPeak"), Some(300000));
        assert_eq!(parse_kib_field(status, "Threads"), Some(3));
        assert_eq!(parse_kib_field(status, "VmRS"), None);
        assert_eq!(parse_kib_field(status, "VmSwap"), None);
    }

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r-xp 00000000 fe:00 1234                       /usr/bin/k42vm
Size:               1024 kB
Rss:                 800 kB
Pss:                 800 kB
VmFlags: rd ex mr mw me
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  40 kB
7f0000000000-7f0010000000 rw-p 00000000 00:00 0 
Size:             262144 kB
Rss:                2048 kB
7f0010000000-7f0010200000 rw-p 00000000 00:00 0 
Size:               2048 kB
Rss:                 100 kB
7f0020000000-7f0020001000 rw-s 00000000 00:0e 99                         anon_inode:kvm-vcpu:0
Size:                  4 kB
Rss:                   4 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  16 kB
";

    #[test]
    fn smaps_mappings_and_rss() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 6);
        assert_eq!(maps[0].path, "/usr/bin/k42vm");
        assert_eq!(maps[0].perms, "r-xp");
        assert_eq!(maps[0].rss_kib, 800);
        assert_eq!(maps[2].size(), 256 << 20);
        assert!(maps[2].is_anonymous_like());
        assert!(!maps[1].is_anonymous_like());
        assert_eq!(maps[4].path, "anon_inode:kvm-vcpu:0");
        assert!(!maps[4].is_anonymous_like());
    }

    #[test]
    fn guest_ram_is_the_exact_size_anonymous_mapping() {
        let maps = parse_smaps(SMAPS);
        let split = split_guest_ram(&maps, &[256 << 20]);
        assert!(split.exact);
        assert_eq!(split.guest_mappings.len(), 1);
        assert_eq!(split.guest_rss_kib, 2048);
        assert_eq!(split.other_rss_kib, 800 + 40 + 100 + 4 + 16);
    }

    #[test]
    fn guest_ram_falls_back_to_a_merged_mapping() {
        let maps = parse_smaps(SMAPS);
        // 255 MiB of RAM whose mapping got merged into the 256 MiB one.
        let split = split_guest_ram(&maps, &[255 << 20]);
        assert!(!split.exact);
        assert_eq!(split.guest_rss_kib, 2048);
        // Two regions: both matched exactly.
        let split = split_guest_ram(&maps, &[256 << 20, 2 << 20]);
        assert!(split.exact);
        assert_eq!(split.guest_rss_kib, 2148);
        assert_eq!(split.other_rss_kib, 800 + 40 + 4 + 16);
    }

    #[test]
    fn no_guest_ram_found_counts_everything_as_overhead() {
        let maps = parse_smaps(SMAPS);
        let split = split_guest_ram(&maps, &[1 << 30]);
        assert!(!split.exact);
        assert!(split.guest_mappings.is_empty());
        assert_eq!(split.other_rss_kib, 800 + 40 + 2048 + 100 + 4 + 16);
    }

    #[test]
    fn memfd_backed_ram_counts_as_anonymous() {
        let text = "7f0000000000-7f0010000000 rw-s 00000000 00:01 7   /memfd:guest-ram (deleted)\nRss: 12 kB\n";
        let maps = parse_smaps(text);
        assert_eq!(maps[0].path, "/memfd:guest-ram (deleted)");
        assert_eq!(split_guest_ram(&maps, &[256 << 20]).guest_rss_kib, 12);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
