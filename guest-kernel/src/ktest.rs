//! In-kernel tests (ktest): run at boot when the command line says `k42.ktest`, each result
//! reported through the test-result hypercall (a console line on other hypervisors).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use k42_guest_lib::cobj::CoRef;

use k42_guest_lib::frames::FRAME_SIZE;
use k42_paravirt::ReportKind;

use crate::arch::{self, apic, cpuid, idt};
use crate::cobj::{self, Counter};
use crate::percpu::{self, Command};
use crate::{mm, platform, smp, timer};

pub(crate) type TestResult = Result<(), (&'static str, u64)>;

struct Test {
    name: &'static str,
    run: fn() -> TestResult,
}

const TESTS: &[Test] = &[
    Test {
        name: "frame_allocator",
        run: frame_allocator,
    },
    Test {
        name: "frame_cache_every_cpu",
        run: frame_cache_every_cpu,
    },
    Test {
        name: "heap",
        run: heap,
    },
    Test {
        name: "percpu_data",
        run: percpu_data,
    },
    Test {
        name: "timer_every_cpu",
        run: timer_every_cpu,
    },
    Test {
        name: "ipi_every_cpu",
        run: ipi_every_cpu,
    },
    Test {
        name: "cobj_rep_per_cpu_on_miss",
        run: cobj_rep_per_cpu_on_miss,
    },
    Test {
        name: "cobj_hot_swap_under_load",
        run: cobj_hot_swap_under_load,
    },
    Test {
        name: "cobj_adaptive_counter",
        run: cobj_adaptive_counter,
    },
    Test {
        name: "generations_reclaim_after_quiescence",
        run: generations_reclaim,
    },
];

/// Runs every test, reporting the plan first; returns whether all passed.
pub fn run_all() -> bool {
    platform::report(ReportKind::Plan, "ktest", TESTS.len() as u64);
    let mut ok = true;
    for test in TESTS {
        match (test.run)() {
            Ok(()) => platform::report(ReportKind::Pass, test.name, 0),
            Err((why, detail)) => {
                crate::kprintln!("ktest {} failed: {} ({:#x})", test.name, why, detail);
                platform::report(ReportKind::Fail, test.name, detail);
                ok = false;
            }
        }
    }
    ok
}

fn check(cond: bool, why: &'static str, detail: u64) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err((why, detail))
    }
}

/// Runs a per-CPU command on the calling CPU (asked for by `smp::run_on`); 0 means success.
pub fn run_command(command: u32) -> u32 {
    let result = match command {
        c if c == Command::TimerTest as u32 => one_shot_timer(),
        c if c == Command::PerCpuCheck as u32 => own_percpu_block(),
        c if c == Command::FrameTest as u32 => frames_through_cache(),
        c if c == Command::CounterHammer as u32 => hammer(),
        c if c == Command::CounterBench as u32 => crate::kbench::on_each_cpu(),
        _ => Err(("unknown command", u64::from(command))),
    };
    match result {
        Ok(()) => 0,
        Err((_, detail)) => detail.max(1) as u32,
    }
}

fn frame_allocator() -> TestResult {
    let before = mm::frames::stats();
    let mut frames = Vec::new();
    for _ in 0..200 {
        let f = mm::alloc_frame().ok_or(("out of frames", 0))?;
        check(f % FRAME_SIZE == 0, "frame not aligned", f)?;
        check(mm::frames::is_managed(f), "frame outside managed RAM", f)?;
        let (kstart, kend) = arch::boot::kernel_phys_range();
        check(
            !(kstart..kend).contains(&f),
            "frame inside the kernel image",
            f,
        )?;
        frames.push(f);
    }
    let mut sorted = frames.clone();
    sorted.sort_unstable();
    sorted.dedup();
    check(sorted.len() == frames.len(), "frame handed out twice", 0)?;
    // Each frame is usable memory: write a tag, read it back after all writes.
    for &f in &frames {
        // SAFETY-free: write through the allocator's own checked accessor.
        mm::frames::write_word(f, f ^ 0x5a5a_5a5a);
    }
    for &f in &frames {
        check(
            mm::frames::read_word(f) == f ^ 0x5a5a_5a5a,
            "frame contents changed",
            f,
        )?;
    }
    for &f in &frames {
        mm::frames::write_word(f, 0);
        mm::free_frame(f).map_err(|_| ("free refused an allocated frame", f))?;
    }
    check(
        mm::free_frame(0x1234).is_err(),
        "free accepted an unaligned frame",
        0x1234,
    )?;
    check(mm::free_frame(0).is_err(), "free accepted frame 0", 0)?;
    let after = mm::frames::stats();
    check(
        after.allocated == before.allocated,
        "allocation count not restored",
        after.allocated,
    )?;
    // Freed frames come back before fresh memory is touched.
    let again = mm::alloc_frame().ok_or(("out of frames", 1))?;
    check(frames.contains(&again), "freed frame not reused", again)?;
    check(
        mm::frames::read_word(again) == 0,
        "a reused frame is not zero",
        again,
    )?;
    mm::free_frame(again).map_err(|_| ("free failed", again))?;
    Ok(())
}

fn frames_through_cache() -> TestResult {
    let mut frames = [0u64; 100];
    for slot in frames.iter_mut() {
        *slot = mm::alloc_frame().ok_or(("out of frames", 2))?;
    }
    for &f in &frames {
        mm::free_frame(f).map_err(|_| ("free failed", f))?;
    }
    let (cos, frames) = crate::cobj::frame_manager().ok_or(("no frame manager object", 4))?;
    let cached = cos.call(frames, |f| f.cached());
    check(cached > 0, "per-CPU frame cache unused", 3)
}

fn frame_cache_every_cpu() -> TestResult {
    for cpu in (0..percpu::count()).filter_map(percpu::cpu) {
        let result = smp::run_on(cpu, Command::FrameTest, 2000)
            .ok_or(("cpu did not answer", cpu.index as u64))?;
        check(result == 0, "frame test failed on a cpu", cpu.index as u64)?;
    }
    Ok(())
}

fn heap() -> TestResult {
    let before = mm::heap::used();
    {
        let v: Vec<u64> = (0..2000).collect();
        check(
            v.iter().sum::<u64>() == 1999 * 2000 / 2,
            "vector contents wrong",
            0,
        )?;
        let mut map = BTreeMap::new();
        for i in 0..200u64 {
            map.insert(i * 7 % 200, alloc::format!("value {i}"));
        }
        check(map.len() == 200, "map lost entries", map.len() as u64)?;
        check(
            map.get(&7).map(|s| s.as_str()) == Some("value 1"),
            "map value wrong",
            7,
        )?;
        let boxes: Vec<alloc::boxed::Box<[u8; 100]>> = (0..50)
            .map(|i| alloc::boxed::Box::new([i as u8; 100]))
            .collect();
        check(
            boxes.iter().enumerate().all(|(i, b)| b[99] == i as u8),
            "boxed data wrong",
            0,
        )?;
    }
    check(
        mm::heap::used() == before,
        "heap memory leaked",
        mm::heap::used() as u64,
    )
}

fn own_percpu_block() -> TestResult {
    let cpu = percpu::current();
    check(
        cpu.self_pointer() == cpu.address(),
        "gs:[0] is not the block's address",
        cpu.index as u64,
    )?;
    check(
        percpu::cpu(cpu.index).map(|c| c.address()) == Some(cpu.address()),
        "cpu table mismatch",
        0,
    )?;
    check(
        apic::id() == cpu.apic_id,
        "APIC ID differs from MADT",
        u64::from(apic::id()),
    )?;
    // The VMM's CPUID must give each vCPU its own APIC ID.
    let leaf1_id = cpuid(1, 0).ebx >> 24;
    check(
        leaf1_id == cpu.apic_id & 0xff,
        "CPUID.1 APIC ID wrong",
        u64::from(leaf1_id),
    )?;
    if cpuid(0, 0).eax >= 0xb {
        let x2id = cpuid(0xb, 0).edx;
        check(
            x2id == cpu.apic_id,
            "CPUID.0xB x2APIC ID wrong",
            u64::from(x2id),
        )?;
    }
    Ok(())
}

fn percpu_data() -> TestResult {
    check(
        percpu::count() == smp::online(),
        "online count differs from CPU blocks",
        percpu::count() as u64,
    )?;
    let mut seen = Vec::new();
    for cpu in (0..percpu::count()).filter_map(percpu::cpu) {
        check(
            !seen.contains(&cpu.apic_id),
            "two CPUs share an APIC ID",
            u64::from(cpu.apic_id),
        )?;
        seen.push(cpu.apic_id);
        let result = smp::run_on(cpu, Command::PerCpuCheck, 2000)
            .ok_or(("cpu did not answer", cpu.index as u64))?;
        check(
            result == 0,
            "per-CPU check failed on a cpu",
            cpu.index as u64 | (u64::from(result) << 32),
        )?;
    }
    Ok(())
}

fn one_shot_timer() -> TestResult {
    let before = timer::interrupts_taken();
    timer::arm_us(1000);
    let start = arch::rdtsc();
    let fired = timer::wait_until_interrupt(before, 1000);
    check(
        fired,
        "timer interrupt never arrived",
        percpu::current_index() as u64,
    )?;
    let elapsed_us = platform::tsc_to_ns(arch::rdtsc() - start) / 1000;
    // Timer and TSC rates are known exactly only on k42vm (CPUID timing leaf).
    check(
        !platform::on_k42vm() || elapsed_us >= 500,
        "timer fired too early (us)",
        elapsed_us,
    )
}

fn timer_every_cpu() -> TestResult {
    for cpu in (0..percpu::count()).filter_map(percpu::cpu) {
        let result = smp::run_on(cpu, Command::TimerTest, 3000)
            .ok_or(("cpu did not answer", cpu.index as u64))?;
        check(result == 0, "timer test failed on a cpu", cpu.index as u64)?;
    }
    Ok(())
}

fn ipi_every_cpu() -> TestResult {
    let me = percpu::current();
    let cpus: Vec<_> = (0..percpu::count()).filter_map(percpu::cpu).collect();
    let answers_before = me.ping_answers.load(Ordering::Acquire);
    let pings_before: Vec<u64> = cpus
        .iter()
        .map(|c| c.pings.load(Ordering::Acquire))
        .collect();
    for cpu in &cpus {
        cpu.reply_to.store(me.apic_id, Ordering::Release);
        cpu.reply_to_index.store(me.index as u32, Ordering::Release);
        if cpu.index == me.index {
            apic::send_self_ipi(idt::PING_VECTOR);
        } else {
            apic::send_ipi(cpu.apic_id, idt::PING_VECTOR);
        }
    }
    let expected = answers_before + cpus.len() as u64;
    let all = timer::wait_until(2000, || me.ping_answers.load(Ordering::Acquire) >= expected);
    check(
        all,
        "not every CPU answered the ping",
        me.ping_answers.load(Ordering::Acquire) - answers_before,
    )?;
    for (cpu, before) in cpus.iter().zip(pings_before) {
        check(
            cpu.pings.load(Ordering::Acquire) == before + 1,
            "ping count wrong",
            cpu.index as u64,
        )?;
    }
    Ok(())
}

/// The counter the hammer command calls, and the flag that stops it.
static HAMMER_TARGET: spin::Mutex<Option<CoRef<dyn Counter>>> = spin::Mutex::new(None);
static HAMMER_STOP: AtomicBool = AtomicBool::new(false);

/// Calls the hammer target (each call one generation-counted operation) until stopped; the
/// number of calls is left in this CPU's `work_done`.
fn hammer() -> TestResult {
    let target = (*HAMMER_TARGET.lock()).ok_or(("no hammer target", 5))?;
    let cos = cobj::manager();
    let me = percpu::current();
    let cpu = me.index;
    let mut calls = 0u64;
    while !HAMMER_STOP.load(Ordering::Acquire) {
        {
            let _op = cos.generations().enter(cpu);
            cos.call(target, |c| c.add(cpu, 1));
        }
        calls += 1;
    }
    me.work_done.store(calls, Ordering::Release);
    Ok(())
}

/// Runs `hammer` on every other CPU while `drive` runs here; returns the calls they made.
pub(crate) fn with_hammering(
    target: CoRef<dyn Counter>,
    drive: impl FnOnce() -> TestResult,
) -> Result<u64, (&'static str, u64)> {
    *HAMMER_TARGET.lock() = Some(target);
    HAMMER_STOP.store(false, Ordering::Release);
    let me = percpu::current();
    let others: Vec<_> = (0..percpu::count())
        .filter_map(percpu::cpu)
        .filter(|c| c.index != me.index)
        .collect();
    let started: Vec<u64> = others
        .iter()
        .map(|c| smp::start_on(c, Command::CounterHammer))
        .collect();
    let driven = drive();
    HAMMER_STOP.store(true, Ordering::Release);
    let mut calls = 0;
    for (cpu, before) in others.iter().zip(started) {
        let result = smp::wait_done(cpu, before, 5000)
            .ok_or(("hammering cpu did not stop", cpu.index as u64))?;
        check(result == 0, "hammer failed on a cpu", cpu.index as u64)?;
        calls += cpu.work_done.load(Ordering::Acquire);
    }
    driven.map(|()| calls)
}

fn cobj_rep_per_cpu_on_miss() -> TestResult {
    // The frame test has run on every CPU: each has exactly its own frame-manager rep.
    let cos = cobj::manager();
    let info = cos
        .objects()
        .into_iter()
        .find(|o| o.name == "frame-manager")
        .ok_or(("no frame manager", 0))?;
    check(
        info.reps == percpu::count(),
        "frame manager reps != CPUs",
        info.reps as u64,
    )?;
    check(
        info.reps_per_cpu.iter().all(|&r| r == 1),
        "a CPU has no local entry",
        0,
    )?;
    // A fresh per-CPU object used on one CPU costs one rep and one miss.
    let obj = cos
        .create("ktest.lazy", cobj::per_cpu_counter(percpu::count(), 0))
        .map_err(|_| ("table full", 0))?;
    for _ in 0..10 {
        cos.call(obj, |c| c.add(0, 1));
    }
    let lazy = cos
        .objects()
        .into_iter()
        .find(|o| o.id == obj.id())
        .ok_or(("object vanished", 0))?;
    check(
        lazy.reps == 1 && lazy.misses == 1,
        "lazy creation: reps/misses",
        (lazy.reps as u64) << 32 | lazy.misses as u64,
    )?;
    check(
        cobj::total(obj) == 10,
        "lazy counter total",
        cobj::total(obj),
    )
}

fn cobj_hot_swap_under_load() -> TestResult {
    const SWAPS: usize = 8;
    let cos = cobj::manager();
    let cpus = percpu::count();
    let obj = cos
        .create("ktest.swapped", cobj::shared_counter(0))
        .map_err(|_| ("table full", 0))?;
    let me = percpu::current().index;
    let mut own_calls = 0u64;
    let mut forwarded = 0;
    let others = with_hammering(obj, || {
        for i in 0..SWAPS {
            let report = if i % 2 == 0 {
                cos.hot_swap(obj, cobj::counter_total, |t| cobj::per_cpu_counter(cpus, t))
            } else {
                cos.hot_swap(obj, cobj::counter_total, cobj::shared_counter)
            }
            .map_err(|_| ("swap refused", i as u64))?;
            forwarded += report.forwarded;
            for _ in 0..20 {
                let _op = cos.generations().enter(me);
                cos.call(obj, |c| c.add(me, 1));
                own_calls += 1;
            }
        }
        Ok(())
    })?;
    let total = cobj::total(obj);
    crate::kprintln!(
        "ktest: {} swaps while {} CPUs called: {} calls, {} forwarded through mediators",
        SWAPS,
        cpus,
        others + own_calls,
        forwarded
    );
    check(
        total == others + own_calls,
        "calls lost or doubled across swaps",
        total,
    )?;
    let swaps = cos
        .objects()
        .into_iter()
        .find(|o| o.id == obj.id())
        .map_or(0, |o| o.swaps);
    check(swaps == SWAPS, "swap count", swaps as u64)
}

fn cobj_adaptive_counter() -> TestResult {
    let obj = cobj::adaptive();
    check(
        cobj::adaptive_is_shared(),
        "adaptive counter does not start shared",
        0,
    )?;
    let me = percpu::current().index;
    let cos = cobj::manager();
    if percpu::count() == 1 {
        for _ in 0..1000 {
            let _op = cos.generations().enter(me);
            cos.call(obj, |c| c.add(me, 1));
        }
        check(cobj::adapt().is_none(), "swapped without contention", 0)?;
        return check(cobj::total(obj) == 1000, "adaptive total", cobj::total(obj));
    }
    let mut own = 0u64;
    let mut swapped = false;
    let others = with_hammering(obj, || {
        let deadline = arch::rdtsc() + 2000 * platform::tsc_khz();
        while !swapped && arch::rdtsc() < deadline {
            for _ in 0..50 {
                let _op = cos.generations().enter(me);
                cos.call(obj, |c| c.add(me, 1));
                own += 1;
            }
            swapped = cobj::adapt().is_some();
        }
        Ok(())
    })?;
    check(swapped, "contended counter was not swapped", 0)?;
    check(
        !cobj::adaptive_is_shared(),
        "adaptive counter still shared",
        0,
    )?;
    check(
        cobj::total(obj) == others + own,
        "adaptive total after swap",
        cobj::total(obj),
    )
}

fn generations_reclaim() -> TestResult {
    struct DropFlag(&'static AtomicBool);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    static DROPPED: AtomicBool = AtomicBool::new(false);
    let cos = cobj::manager();
    let gens = cos.generations();
    let flag = DropFlag(&DROPPED);
    // An operation on this CPU that started before the deferral holds it back.
    let op = gens.enter(percpu::current().index);
    gens.defer(alloc::boxed::Box::new(move || drop(flag)));
    for _ in 0..(gens.cpu_count() * 8) {
        gens.help();
    }
    check(
        !DROPPED.load(Ordering::Acquire),
        "reclaimed under a running operation",
        gens.rounds(),
    )?;
    drop(op);
    gens.synchronize(arch::pause);
    check(
        DROPPED.load(Ordering::Acquire),
        "not reclaimed after quiescence",
        gens.rounds(),
    )
}
