//! In-guest benchmarks of clustered objects (`k42.bench=cobj`), reported as metrics:
//! a per-CPU clustered counter against a shared atomic and a spin-locked counter on 1, 2 and 4
//! CPUs; a clustered call against a direct call; a miss; hot-swap latency under load.

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use k42_paravirt::ReportKind;
use spin::{Mutex, Once};

use k42_guest_lib::cobj::CoRef;

use crate::cobj::{self, Counter};
use crate::ktest::{with_hammering, TestResult};
use crate::percpu::{self, Command, MAX_CPUS};
use crate::{arch, platform, smp};

/// Increments per CPU per variant.
const OPS: u64 = 4000;
const VARIANTS: usize = 3;
const VARIANT_NAMES: [&str; VARIANTS] = ["cobj_counter", "atomic_counter", "locked_counter"];

static BENCH_COUNTER: Once<CoRef<dyn Counter>> = Once::new();
static SHARED: AtomicU64 = AtomicU64::new(0);
static LOCKED: Mutex<u64> = Mutex::new(0);
static PARTICIPANTS: AtomicUsize = AtomicUsize::new(0);
static ARRIVED: [AtomicUsize; VARIANTS] = [const { AtomicUsize::new(0) }; VARIANTS];
static ELAPSED: [[AtomicU64; VARIANTS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; VARIANTS] }; MAX_CPUS];

fn metric(name: &str, value: u64) {
    platform::report(ReportKind::Metric, name, value);
}

/// One CPU's part of the counter benchmark (run on every participating CPU at once).
pub fn on_each_cpu() -> TestResult {
    let obj = *BENCH_COUNTER
        .get()
        .ok_or(("benchmark counter missing", 0))?;
    let cos = cobj::manager();
    let cpu = percpu::index();
    let participants = PARTICIPANTS.load(Ordering::Acquire);
    for variant in 0..VARIANTS {
        // Start together.
        ARRIVED[variant].fetch_add(1, Ordering::AcqRel);
        while ARRIVED[variant].load(Ordering::Acquire) < participants {
            arch::pause();
        }
        let start = arch::rdtsc();
        match variant {
            0 => {
                for _ in 0..OPS {
                    cos.call(obj, |c| c.add(cpu, 1));
                }
            }
            1 => {
                for _ in 0..OPS {
                    SHARED.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                for _ in 0..OPS {
                    *LOCKED.lock() += 1;
                }
            }
        }
        ELAPSED[cpu][variant].store(arch::rdtsc() - start, Ordering::Release);
    }
    Ok(())
}

fn counters_on(cpus: usize) {
    PARTICIPANTS.store(cpus, Ordering::Release);
    for a in ARRIVED.iter() {
        a.store(0, Ordering::Release);
    }
    let helpers: Vec<_> = (1..cpus)
        .filter_map(percpu::cpu)
        .map(|c| (c, smp::start_on(c, Command::CounterBench)))
        .collect();
    let _ = on_each_cpu();
    for (cpu, before) in helpers {
        let _ = smp::wait_done(cpu, before, 30_000);
    }
    for (variant, name) in VARIANT_NAMES.iter().enumerate() {
        let slowest = (0..cpus)
            .map(|c| ELAPSED[c][variant].load(Ordering::Acquire))
            .max()
            .unwrap_or(1)
            .max(1);
        let ops_per_s = (u128::from(OPS) * cpus as u128 * u128::from(platform::tsc_khz()) * 1000
            / u128::from(slowest)) as u64;
        metric(&format!("{name}_ops_per_s_{cpus}cpu"), ops_per_s);
    }
}

fn call_costs() {
    let cos = cobj::manager();
    let cpu = percpu::index();
    let obj = *BENCH_COUNTER.get().expect("benchmark counter");
    // Direct: the same rep type called through a plain reference (no translation).
    let direct_root = cobj::per_cpu_counter(percpu::count(), 0);
    let rep = direct_root.rep_for(cpu);
    let start = arch::rdtsc();
    for _ in 0..OPS {
        rep.add(cpu, 1);
    }
    let direct = platform::tsc_to_ns(arch::rdtsc() - start) * 1000 / OPS;
    let start = arch::rdtsc();
    for _ in 0..OPS {
        cos.call(obj, |c| c.add(cpu, 1));
    }
    let clustered = platform::tsc_to_ns(arch::rdtsc() - start) * 1000 / OPS;
    metric("direct_call_ps", direct);
    metric("cobj_call_ps", clustered);
    // Misses: first call of fresh per-CPU objects (miss, rep creation, install).
    let mut miss_total = 0;
    let mut hit_total = 0;
    const FRESH: u64 = 4;
    for _ in 0..FRESH {
        let Ok(fresh) = cos.create("bench.fresh", cobj::per_cpu_counter(percpu::count(), 0)) else {
            break;
        };
        let t0 = arch::rdtsc();
        cos.call(fresh, |c| c.add(cpu, 1));
        let t1 = arch::rdtsc();
        cos.call(fresh, |c| c.add(cpu, 1));
        let t2 = arch::rdtsc();
        miss_total += t1 - t0;
        hit_total += t2 - t1;
    }
    metric("cobj_miss_ns", platform::tsc_to_ns(miss_total / FRESH));
    metric(
        "cobj_hit_after_miss_ns",
        platform::tsc_to_ns(hit_total / FRESH),
    );
}

fn swap_latency() {
    let cos = cobj::manager();
    let cpus = percpu::count();
    let Ok(obj) = cos.create("bench.swapped", cobj::shared_counter(0)) else {
        return;
    };
    let mut worst = 0;
    let mut sum = 0;
    const SWAPS: u64 = 4;
    let _ = with_hammering(obj, || {
        for i in 0..SWAPS {
            let start = arch::rdtsc();
            let _ = if i % 2 == 0 {
                cos.hot_swap(obj, cobj::counter_total, |t| cobj::per_cpu_counter(cpus, t))
            } else {
                cos.hot_swap(obj, cobj::counter_total, cobj::shared_counter)
            };
            let ns = platform::tsc_to_ns(arch::rdtsc() - start);
            worst = worst.max(ns);
            sum += ns;
        }
        Ok(())
    });
    metric(&format!("hot_swap_ns_{cpus}cpu_calling"), sum / SWAPS);
    metric(&format!("hot_swap_worst_ns_{cpus}cpu_calling"), worst);
}

/// Runs every clustered-object benchmark and reports the figures.
pub fn run() {
    let cos = cobj::manager();
    let Ok(obj) = cos.create("bench.counter", cobj::per_cpu_counter(percpu::count(), 0)) else {
        crate::kprintln!("kbench: no room for the benchmark counter");
        return;
    };
    BENCH_COUNTER.call_once(|| obj);
    for cpus in [1, 2, 4] {
        if cpus <= percpu::count() {
            counters_on(cpus);
        }
    }
    call_costs();
    swap_latency();
}
