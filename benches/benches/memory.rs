//! Memory bench: resident memory of an idle `k42vm` beyond its guest RAM, against QEMU
//! `-M microvm` idling the same kernel with the same RAM, in one run.
//! Goal (DESIGN.md): under 5 MiB (Firecracker's bound).
//!
//! Each VMM runs the kernel with `k42.test_hang` (the guest idles in `hlt`); after it has settled
//! we read /proc/<pid>/status (VmRSS), smaps_rollup (Rss) and smaps. Guest RAM is the anonymous
//! (or memfd) mapping whose size equals the guest RAM size (see `split_guest_ram`); the overhead
//! is the sum of Rss over every other mapping: the VMM's binary, libraries, heap, stacks, and
//! KVM's per-vCPU pages.

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use k42_benches::{
    ensure_qemu, fmt_mib, k42vm_binary, kernel_elf, kill_child, parse_kib_field, parse_size,
    parse_smaps, qemu_command, qemu_probe, ratio, require_kvm, split_guest_ram, summarize, verdict,
    RamSplit,
};

const RAM: &str = "256M";
const GOAL_MIB: f64 = 5.0;
const RUNS: usize = 3;
/// How long each VMM idles before it is sampled.
const SETTLE: Duration = Duration::from_millis(1000);

/// What one sample of a running VMM shows.
struct Sample {
    vm_rss_kib: u64,
    rollup_rss_kib: u64,
    split: RamSplit,
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memory bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    require_kvm()?;
    let ram_bytes = parse_size(RAM).ok_or("bad RAM size")?;
    let kernel = kernel_elf(k42_images::KERNEL_ELF_PATH)?;
    let k42vm = k42vm_binary()?;
    let qemu = ensure_qemu()?;
    let accel = qemu_probe(&qemu, &kernel)?;

    println!("memory: {RUNS} runs each, guest RAM {RAM}, sampled {SETTLE:?} after start");
    println!(
        "  ours: {} run --memory {RAM} --cmdline \"k42.test_hang k42.quiet\" --timeout 3s",
        k42vm.display()
    );
    println!(
        "  peer: {} -M microvm -m 256 [{}] -append \"k42.test_hang k42.quiet\"",
        qemu.display(),
        accel.label
    );
    println!("  guest RAM = the anonymous mapping of exactly {RAM}; overhead = Rss of all other mappings");

    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for _ in 0..RUNS {
        let mut cmd = Command::new(&k42vm);
        cmd.args([
            "run",
            "--memory",
            RAM,
            "--cmdline",
            "k42.test_hang k42.quiet",
        ])
        .args(["--timeout", "3s"]);
        ours.push(sample_vmm("k42vm", cmd, ram_bytes)?);
        let cmd = qemu_command(&qemu, &accel, &kernel, "k42.test_hang k42.quiet");
        peer.push(sample_vmm("QEMU", cmd, ram_bytes)?);
    }

    println!();
    println!(
        "{:<14} {:>10} {:>12} {:>14} {:>12}",
        "(MiB, median)", "VmRSS", "smaps Rss", "guest RAM Rss", "overhead"
    );
    let ours_overhead = report("k42vm", &ours)?;
    let peer_overhead = report("QEMU microvm", &peer)?;
    for (who, samples) in [("k42vm", &ours), ("QEMU", &peer)] {
        if let Some(s) = samples.first() {
            let maps: Vec<String> = s
                .split
                .guest_mappings
                .iter()
                .map(|m| {
                    format!(
                        "{:#x}-{:#x} {} ({} KiB resident)",
                        m.start, m.end, m.perms, m.rss_kib
                    )
                })
                .collect();
            println!(
                "  {who} guest RAM mapping(s): {}{}",
                if maps.is_empty() {
                    "NONE FOUND (all Rss counted as overhead)".to_string()
                } else {
                    maps.join(", ")
                },
                if s.split.exact {
                    ""
                } else {
                    " [inexact: no mapping of exactly the RAM size]"
                }
            );
        }
    }
    let r = ratio(peer_overhead, ours_overhead).unwrap_or(f64::INFINITY);
    println!();
    println!("ratio QEMU/k42vm, overhead beyond guest RAM: {r:.1}x");
    println!(
        "goal (DESIGN.md): k42vm overhead < {GOAL_MIB} MiB: {} ({:.2} MiB)",
        verdict(ours_overhead < GOAL_MIB * 1024.0),
        ours_overhead / 1024.0
    );
    Ok(())
}

/// Prints one VMM's row and returns its median overhead in KiB.
fn report(who: &str, samples: &[Sample]) -> Result<f64, String> {
    let med = |f: &dyn Fn(&Sample) -> u64| -> Result<f64, String> {
        let v: Vec<f64> = samples.iter().map(|s| f(s) as f64).collect();
        summarize(&v)
            .map(|s| s.median)
            .ok_or_else(|| format!("no {who} samples"))
    };
    let vm_rss = med(&|s| s.vm_rss_kib)?;
    let rollup = med(&|s| s.rollup_rss_kib)?;
    let guest = med(&|s| s.split.guest_rss_kib)?;
    let overhead = med(&|s| s.split.other_rss_kib)?;
    println!(
        "{who:<14} {:>10} {:>12} {:>14} {:>12}",
        fmt_mib(vm_rss as u64),
        fmt_mib(rollup as u64),
        fmt_mib(guest as u64),
        fmt_mib(overhead as u64)
    );
    Ok(overhead)
}

/// Starts `cmd`, lets it idle, samples its memory, and kills it.
fn sample_vmm(who: &str, mut cmd: Command, ram_bytes: u64) -> Result<Sample, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {who}: {e}"))?;
    thread::sleep(SETTLE);
    let sample = sample_pid(&mut child, ram_bytes);
    let still_running = matches!(child.try_wait(), Ok(None));
    kill_child(&mut child);
    let stderr = child
        .stderr
        .take()
        .map(|mut p| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut p, &mut s);
            s
        })
        .unwrap_or_default();
    match sample {
        Ok(s) if still_running => Ok(s),
        Ok(_) | Err(_) => Err(format!(
            "{who} was not running when sampled {SETTLE:?} after start; stderr:\n{}",
            k42_benches::tail(&stderr, 10)
        )),
    }
}

fn sample_pid(child: &mut Child, ram_bytes: u64) -> Result<Sample, String> {
    if !matches!(child.try_wait(), Ok(None)) {
        return Err("exited early".into());
    }
    let proc_dir = Path::new("/proc").join(child.id().to_string());
    let read = |name: &str| {
        std::fs::read_to_string(proc_dir.join(name))
            .map_err(|e| format!("reading {}/{name}: {e}", proc_dir.display()))
    };
    let status = read("status")?;
    let rollup = read("smaps_rollup")?;
    let smaps = read("smaps")?;
    let vm_rss_kib = parse_kib_field(&status, "VmRSS").ok_or("no VmRSS in status")?;
    let rollup_rss_kib = parse_kib_field(&rollup, "Rss").ok_or("no Rss in smaps_rollup")?;
    let split = split_guest_ram(&parse_smaps(&smaps), &[ram_bytes]);
    Ok(Sample {
        vm_rss_kib,
        rollup_rss_kib,
        split,
    })
}
