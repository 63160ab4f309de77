//! Boot bench: `k42vm run` start to guest shutdown for a trivial guest, against QEMU `-M microvm`
//! booting the same PVH ELF, side by side in one run. Goal (DESIGN.md): QEMU/k42vm >= 10x.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use k42_benches::{
    ensure_qemu, fmt_ms, k42vm_binary, kernel_elf, parse_timeline, qemu_command,
    qemu_guest_succeeded, qemu_probe, ratio, require_kvm, run_timed, summarize, tail, timeline_ms,
    verdict, QemuAccel, Summary,
};

const RUNS: usize = 20;
const GOAL: f64 = 10.0;
const TIMEOUT: Duration = Duration::from_secs(30);

/// One k42vm run's three figures, in milliseconds since process start.
struct K42Sample {
    first_instruction: f64,
    init_done: f64,
    /// `guest shutdown` from the timeline, when k42vm printed it.
    shutdown: Option<f64>,
    exit: f64,
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    require_kvm()?;
    let kernel = kernel_elf(k42_images::KERNEL_ELF_PATH)?;
    let k42vm = k42vm_binary()?;
    let qemu = ensure_qemu()?;
    let accel = qemu_probe(&qemu, &kernel)?;

    println!(
        "boot: {RUNS} runs each, interleaved; kernel {}",
        kernel.display()
    );
    println!(
        "  ours: {} run --cmdline k42.quiet --timeline",
        k42vm.display()
    );
    println!(
        "  peer: {} -M microvm -m 256 [{}]",
        qemu.display(),
        accel.label
    );

    // One unmeasured run of each warms the page cache.
    k42vm_once(&k42vm)?;
    qemu_once(&qemu, &accel, &kernel)?;

    let mut ours = Vec::with_capacity(RUNS);
    let mut peer = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        ours.push(k42vm_once(&k42vm)?);
        peer.push(qemu_once(&qemu, &accel, &kernel)?);
    }

    let first = stats(ours.iter().map(|s| s.first_instruction))?;
    let init = stats(ours.iter().map(|s| s.init_done))?;
    let shutdown = stats(ours.iter().filter_map(|s| s.shutdown)).ok();
    let exit = stats(ours.iter().map(|s| s.exit))?;
    let qemu_exit = stats(peer.iter().copied())?;

    println!();
    println!(
        "{:<48} {:>10} {:>10} {:>10}",
        "(milliseconds)", "median", "min", "max"
    );
    row("k42vm start -> first guest instruction", &first);
    row("k42vm start -> kernel init done", &init);
    if let Some(shutdown) = &shutdown {
        row("k42vm start -> guest shutdown", shutdown);
    }
    row("k42vm start -> exit (process wall time)", &exit);
    row("QEMU microvm start -> exit (process wall time)", &qemu_exit);
    let r = ratio(qemu_exit.median, exit.median).ok_or("k42vm's median wall time is zero")?;
    let r_min = ratio(qemu_exit.min, exit.min).unwrap_or(f64::NAN);
    println!();
    println!("ratio QEMU/k42vm, start -> exit: {r:.1}x (medians), {r_min:.1}x (minimums)");
    println!(
        "goal (DESIGN.md): QEMU/k42vm >= {GOAL:.0}x: {}{}",
        verdict(r >= GOAL),
        if accel.args.contains(&"tcg") {
            " (peer ran under TCG, not KVM: not the comparison the goal means)"
        } else {
            ""
        }
    );
    Ok(())
}

fn stats(samples: impl Iterator<Item = f64>) -> Result<Summary, String> {
    summarize(&samples.collect::<Vec<_>>()).ok_or_else(|| "no samples".to_string())
}

fn row(what: &str, s: &Summary) {
    println!(
        "{what:<48} {:>10} {:>10} {:>10}",
        fmt_ms(s.median),
        fmt_ms(s.min),
        fmt_ms(s.max)
    );
}

fn k42vm_once(k42vm: &Path) -> Result<K42Sample, String> {
    let mut cmd = Command::new(k42vm);
    cmd.args(["run", "--cmdline", "k42.quiet", "--timeline"]);
    let run = run_timed(&mut cmd, TIMEOUT)?;
    if !run.status.success() {
        return Err(format!(
            "k42vm run failed ({}); stderr:\n{}",
            run.status,
            tail(&run.stderr, 10)
        ));
    }
    let timeline = parse_timeline(&run.stderr);
    let at = |label: &str| {
        timeline_ms(&timeline, label).ok_or_else(|| {
            format!(
                "k42vm --timeline printed no `timeline <ms> {label}` line; stderr:\n{}",
                tail(&run.stderr, 10)
            )
        })
    };
    Ok(K42Sample {
        first_instruction: at("first guest instruction")?,
        init_done: at("kernel init done")?,
        shutdown: timeline_ms(&timeline, "guest shutdown"),
        exit: run.wall.as_secs_f64() * 1e3,
    })
}

fn qemu_once(qemu: &Path, accel: &QemuAccel, kernel: &Path) -> Result<f64, String> {
    let mut cmd = qemu_command(qemu, accel, kernel, "k42.quiet");
    let run = run_timed(&mut cmd, TIMEOUT)?;
    if !qemu_guest_succeeded(run.status) {
        return Err(format!(
            "QEMU run did not end with guest exit code 0 ({}); stderr:\n{}",
            run.status,
            tail(&run.stderr, 10)
        ));
    }
    Ok(run.wall.as_secs_f64() * 1e3)
}
