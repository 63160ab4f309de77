//! Clustered-object bench: figures measured inside the guest (`k42.bench=cobj`) and reported
//! through the test-result hypercall. Peers come from the same run: a shared atomic and a
//! spin-locked counter next to the clustered per-CPU counter at 1, 2 and 4 vCPUs; a direct call
//! next to a clustered-object call. Goal (issue 3): the clustered counter scales with vCPUs (up
//! to the host's cores) where the shared ones do not.

use std::process::{Command, ExitCode};
use std::time::Duration;

use k42_benches::{k42vm_binary, parse_metric, require_kvm, run_timed, summarize, tail};

const RUNS: usize = 3;
const CPUS: u32 = 4;

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cobj bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn median_metric(outputs: &[String], name: &str) -> Option<f64> {
    let samples: Vec<f64> = outputs
        .iter()
        .filter_map(|o| parse_metric(o, name))
        .collect();
    summarize(&samples).map(|s| s.median)
}

fn bench() -> Result<(), String> {
    require_kvm()?;
    let k42vm = k42vm_binary()?;
    let cpus = CPUS.to_string();
    println!("cobj: {RUNS} runs of `k42vm run --cpus {CPUS} --cmdline \"k42.quiet k42.bench=cobj\"`, medians");
    let mut outputs = Vec::new();
    for _ in 0..RUNS {
        let mut cmd = Command::new(&k42vm);
        cmd.args([
            "run",
            "--cpus",
            &cpus,
            "--cmdline",
            "k42.quiet k42.bench=cobj",
            "--timeout",
            "300s",
        ]);
        let run = run_timed(&mut cmd, Duration::from_secs(320))?;
        if !run.status.success() {
            return Err(format!(
                "k42vm failed: {:?}\n{}",
                run.status,
                tail(&run.stderr, 20)
            ));
        }
        outputs.push(run.stdout);
    }
    let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\n(increments per second, all CPUs together; host has {host_cores} cores)");
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>12} {:>12}",
        "vCPUs", "clustered", "shared atomic", "spin-locked", "vs atomic", "vs locked"
    );
    let mut base = None;
    let mut scaling = Vec::new();
    for n in [1, 2, 4] {
        let get = |v: &str| median_metric(&outputs, &format!("{v}_ops_per_s_{n}cpu"));
        let (Some(c), Some(a), Some(l)) = (
            get("cobj_counter"),
            get("atomic_counter"),
            get("locked_counter"),
        ) else {
            continue;
        };
        println!(
            "{n:<10} {c:>16.0} {a:>16.0} {l:>16.0} {:>11.2}x {:>11.2}x",
            c / a,
            c / l
        );
        let b = *base.get_or_insert((c, a, l));
        scaling.push((n, c / b.0, a / b.1, l / b.2));
    }
    println!("\nscaling relative to 1 vCPU:");
    for (n, c, a, l) in &scaling {
        println!("  {n} vCPUs: clustered {c:.2}x, shared atomic {a:.2}x, spin-locked {l:.2}x");
    }
    if let Some((_, c, a, l)) = scaling.iter().find(|s| s.0 == 2.min(host_cores as u32)) {
        let met = *c > 1.3 && *c > *a && *c > *l;
        println!(
            "goal (clustered scales to the host's cores, shared ones do not): {}",
            if met { "MET" } else { "NOT MET" }
        );
    }
    let ps = |name: &str| median_metric(&outputs, name).map(|v| v / 1000.0);
    if let (Some(direct), Some(cobj)) = (ps("direct_call_ps"), ps("cobj_call_ps")) {
        println!(
            "\ncall cost (ns): direct {direct:.1}, clustered {cobj:.1}, ratio {:.2}x",
            cobj / direct
        );
    }
    if let (Some(miss), Some(hit)) = (
        median_metric(&outputs, "cobj_miss_ns"),
        median_metric(&outputs, "cobj_hit_after_miss_ns"),
    ) {
        println!(
            "miss (first call: rep created and installed): {miss:.0} ns; next call {hit:.0} ns"
        );
    }
    let swap = format!("hot_swap_ns_{CPUS}cpu_calling");
    let worst = format!("hot_swap_worst_ns_{CPUS}cpu_calling");
    if let (Some(mean), Some(w)) = (
        median_metric(&outputs, &swap),
        median_metric(&outputs, &worst),
    ) {
        println!(
            "hot-swap latency with {CPUS} vCPUs calling: mean {:.3} ms, worst {:.3} ms",
            mean / 1e6,
            w / 1e6
        );
    }
    println!("\nNote: on kvm_pvm guest ring 0 is emulated (~1 µs per instruction), so absolute figures are those of the emulator; ratios taken in the same run still compare the designs.");
    Ok(())
}
