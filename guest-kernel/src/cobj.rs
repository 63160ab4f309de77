//! The kernel's clustered objects: the manager over the real CPUs, and the kernel services
//! built as clustered objects (page-frame manager, statistics, an adaptive counter that is
//! hot-swapped from one shared rep to per-CPU reps when it becomes contended).

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use k42_guest_lib::cobj::{
    CoError, CoManager, CoRef, Cpus, PerCpuReps, Root, SingleRep, SwapReport,
};
use spin::Once;

use crate::mm::frames::{frame_manager_root, FrameManager};
use crate::{arch, percpu};

/// The CPUs, seen through GS: the current index is one GS-relative load.
pub struct KernelCpus {
    count: usize,
}

impl Cpus for KernelCpus {
    #[inline(always)]
    fn current(&self) -> usize {
        percpu::index()
    }
    fn count(&self) -> usize {
        self.count
    }
    fn relax(&self) {
        arch::pause();
    }
}

/// Objects the kernel can hold (the translation tables are sized for it).
const CAPACITY: usize = 32;

static COS: Once<CoManager<KernelCpus>> = Once::new();
static FRAMES: Once<CoRef<dyn FrameManager>> = Once::new();
static STATS: Once<CoRef<dyn Counter>> = Once::new();
static ADAPTIVE: Once<CoRef<dyn Counter>> = Once::new();

/// The clustered-object manager (after `init`).
pub fn manager() -> &'static CoManager<KernelCpus> {
    COS.get()
        .expect("clustered objects are initialised after SMP start-up")
}

/// The page-frame manager object, once clustered objects are up.
pub fn frame_manager() -> Option<(&'static CoManager<KernelCpus>, CoRef<dyn FrameManager>)> {
    Some((COS.get()?, *FRAMES.get()?))
}

/// Creates the manager for `cpus` CPUs and the kernel's clustered services.
pub fn init(cpus: usize) -> Result<(), CoError> {
    let cos = COS.call_once(|| CoManager::new(KernelCpus { count: cpus }, CAPACITY));
    let frames = cos.create("frame-manager", frame_manager_root(cpus))?;
    FRAMES.call_once(|| frames);
    let stats = cos.create("stats.frame-allocs", per_cpu_counter(cpus, 0))?;
    STATS.call_once(|| stats);
    let adaptive = cos.create("counter.adaptive", shared_counter(0))?;
    ADAPTIVE.call_once(|| adaptive);
    Ok(())
}

/// A counter interface: reps are either one shared atomic or one per CPU.
pub trait Counter: Send + Sync {
    /// Adds `n` on behalf of `cpu`.
    fn add(&self, cpu: usize, n: u64);
    /// This rep's share of the total.
    fn part(&self) -> u64;
    /// Whether this rep has seen enough cross-CPU use to be worth replicating.
    fn contended(&self) -> bool {
        false
    }
}

/// Cross-CPU successions after which a shared counter reports contention.
const CONTENTION_THRESHOLD: usize = 64;

/// One atomic shared by every CPU; notices when consecutive calls come from different CPUs.
struct SharedCounter {
    value: AtomicU64,
    last_cpu: AtomicUsize,
    crossings: AtomicUsize,
}

impl Counter for SharedCounter {
    fn add(&self, cpu: usize, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        if self.last_cpu.swap(cpu, Ordering::Relaxed) != cpu {
            self.crossings.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn part(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }
    fn contended(&self) -> bool {
        self.crossings.load(Ordering::Relaxed) >= CONTENTION_THRESHOLD
    }
}

/// One CPU's share; CPU 0's rep also reports the total carried over from a swap.
struct CpuCounter {
    local: AtomicU64,
    carried: Arc<AtomicU64>,
    cpu: usize,
}

impl Counter for CpuCounter {
    fn add(&self, _cpu: usize, n: u64) {
        self.local.fetch_add(n, Ordering::Relaxed);
    }
    fn part(&self) -> u64 {
        self.local.load(Ordering::Acquire)
            + if self.cpu == 0 {
                self.carried.load(Ordering::Acquire)
            } else {
                0
            }
    }
}

/// A single-rep counter starting at `initial`.
pub fn shared_counter(initial: u64) -> Box<dyn Root<dyn Counter>> {
    Box::new(SingleRep::<dyn Counter>::new(Box::new(SharedCounter {
        value: AtomicU64::new(initial),
        last_cpu: AtomicUsize::new(usize::MAX),
        crossings: AtomicUsize::new(0),
    })))
}

/// A per-CPU-reps counter starting at `initial`.
pub fn per_cpu_counter(cpus: usize, initial: u64) -> Box<dyn Root<dyn Counter>> {
    Box::new(PerCpuReps::<dyn Counter, AtomicU64>::new(
        cpus,
        AtomicU64::new(initial),
        |carried, cpu| {
            Box::new(CpuCounter {
                local: AtomicU64::new(0),
                carried: carried.clone(),
                cpu,
            })
        },
    ))
}

/// The total of a counter root (the transfer format of counter swaps).
pub fn counter_total(root: &dyn Root<dyn Counter>) -> u64 {
    let mut sum = 0;
    let mut cpu0 = false;
    root.for_each_rep(&mut |cpu, rep| {
        sum += rep.part();
        cpu0 |= cpu == 0;
    });
    if let Some(per_cpu) = root
        .as_any()
        .downcast_ref::<PerCpuReps<dyn Counter, AtomicU64>>()
    {
        if !cpu0 {
            sum += per_cpu.shared().load(Ordering::Acquire);
        }
    }
    sum
}

/// The statistics counter of frame allocations (per-CPU reps, summed when read).
pub fn stats() -> Option<CoRef<dyn Counter>> {
    STATS.get().copied()
}

/// The adaptive counter.
pub fn adaptive() -> CoRef<dyn Counter> {
    *ADAPTIVE.get().expect("clustered objects are initialised")
}

/// Total of a counter object.
pub fn total(obj: CoRef<dyn Counter>) -> u64 {
    manager().with_root(obj, counter_total)
}

/// Whether the adaptive counter runs with one shared rep now.
pub fn adaptive_is_shared() -> bool {
    manager().with_root(adaptive(), |root| root.kind() == "single-rep")
}

static ADAPTING: AtomicBool = AtomicBool::new(false);

/// Swaps the adaptive counter to per-CPU reps if its shared rep reports contention. Called by a
/// CPU outside any operation (the boot CPU's housekeeping, the ktests). Returns the swap report
/// when it swapped.
pub fn adapt() -> Option<SwapReport> {
    let cos = manager();
    let obj = adaptive();
    let contended = cos.with_root(obj, |root| {
        root.kind() == "single-rep" && {
            let mut c = false;
            root.for_each_rep(&mut |_, rep| c |= rep.contended());
            c
        }
    });
    if !contended || ADAPTING.swap(true, Ordering::AcqRel) {
        return None;
    }
    let cpus = cos.cpus().count();
    let report = cos
        .hot_swap(obj, counter_total, |total| per_cpu_counter(cpus, total))
        .ok();
    ADAPTING.store(false, Ordering::Release);
    report
}

/// Prints every clustered object (id, name, root type, reps per CPU, misses, swaps).
pub fn print_objects() {
    let Some(cos) = COS.get() else { return };
    crate::kprintln!("clustered objects ({} CPUs):", cos.cpus().count());
    for o in cos.objects() {
        let mut map = [b'-'; percpu::MAX_CPUS];
        for (cpu, &has) in o.reps_per_cpu.iter().enumerate() {
            if has != 0 {
                map[cpu] = b'R';
            }
        }
        let map = core::str::from_utf8(&map[..o.reps_per_cpu.len()]).unwrap_or("?");
        crate::kprintln!(
            "  cobj {:>2} {:<24} root={:<13} reps={} cpus=[{}] misses={} swaps={}",
            o.id,
            o.name,
            o.root_kind,
            o.reps,
            map,
            o.misses,
            o.swaps
        );
    }
}
