//! The kernel half of two-level scheduling: each CPU runs dispatchers (never threads) from
//! its own run queue, a clustered object with one rep per CPU. Within a CPU: strict priority
//! classes, then proportional share by stride scheduling. No periodic tick: a one-shot timer is
//! armed only when another dispatcher is waiting for the CPU or a blocked one has a deadline.
//!
//! Every CPU runs on one kernel stack. A trap from user mode saves the user registers at its
//! top; switching dispatchers swaps those saved registers (and CR3), and a CPU with nothing to
//! run abandons the stack and idles in [`idle_entry`].

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use k42_guest_lib::cobj::{CoRef, PerCpuReps};
use k42_guest_lib::kabi;
use spin::{Mutex, Once};

use crate::arch::{self, apic, boot, idt, idt::TrapFrame, user};
use crate::percpu::{self, MAX_CPUS};
use crate::proc::{BlockReason, Dispatcher, RunState};
use crate::{platform, timer};

/// Priority classes (0 is served first).
pub const CLASSES: usize = kabi::SCHED_CLASSES as usize;
/// Time a dispatcher runs before another of its CPU gets a turn.
const QUANTUM_US: u64 = 10_000;
/// Stride numerator: a dispatcher's pass advances by `STRIDE_ONE / tickets` per turn.
const STRIDE_ONE: u64 = 1 << 20;

/// A CPU's run queue: the rep of the run-queue clustered object.
pub trait RunQueue: Send + Sync {
    /// Queues a runnable dispatcher.
    fn push(&self, d: Arc<Dispatcher>);
    /// Takes the dispatcher to run next (highest class, then lowest pass).
    fn pop(&self) -> Option<Arc<Dispatcher>>;
    /// Dispatchers waiting.
    fn len(&self) -> usize;
    /// Moves `d`, if it waits here, to the queue of the class it now has.
    fn reclass(&self, d: &Arc<Dispatcher>);
}

struct RunQueueRep {
    classes: Mutex<[Vec<Arc<Dispatcher>>; CLASSES]>,
    /// The pass of the last dispatcher chosen, so newcomers do not monopolise the CPU.
    global_pass: AtomicU64,
    waiting: AtomicU64,
}

impl RunQueue for RunQueueRep {
    fn push(&self, d: Arc<Dispatcher>) {
        let class = d.class.load(Ordering::Relaxed).min(CLASSES - 1);
        {
            let mut state = d.state.lock();
            state.pass = state.pass.max(self.global_pass.load(Ordering::Relaxed));
        }
        self.classes.lock()[class].push(d);
        self.waiting.fetch_add(1, Ordering::AcqRel);
    }

    fn pop(&self) -> Option<Arc<Dispatcher>> {
        let mut classes = self.classes.lock();
        for queue in classes.iter_mut() {
            if queue.is_empty() {
                continue;
            }
            let mut best = 0;
            let mut best_pass = u64::MAX;
            for (i, d) in queue.iter().enumerate() {
                let pass = d.state.lock().pass;
                if pass < best_pass {
                    best = i;
                    best_pass = pass;
                }
            }
            let d = queue.remove(best);
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.global_pass.store(best_pass, Ordering::Relaxed);
            d.state.lock().pass = best_pass + STRIDE_ONE / d.tickets.load(Ordering::Relaxed).max(1);
            return Some(d);
        }
        None
    }

    fn len(&self) -> usize {
        self.waiting.load(Ordering::Acquire) as usize
    }

    fn reclass(&self, d: &Arc<Dispatcher>) {
        let class = d.class.load(Ordering::Relaxed).min(CLASSES - 1);
        let mut classes = self.classes.lock();
        for queue in classes.iter_mut() {
            if let Some(at) = queue.iter().position(|q| Arc::ptr_eq(q, d)) {
                let d = queue.remove(at);
                classes[class].push(d);
                return;
            }
        }
    }
}

/// After `d`'s class changed: if it waits on its CPU's run queue, it moves to its new class's
/// queue (else it would wait behind every dispatcher of its old class).
pub fn reclassed(d: &Arc<Dispatcher>) {
    with_queue(d.cpu, |q| q.reclass(d));
}

/// Per-CPU scheduler state that is not a run queue.
struct CpuSched {
    current: Mutex<Option<Arc<Dispatcher>>>,
    need_resched: AtomicBool,
    idle: AtomicBool,
    entries: AtomicU64,
    /// Blocked dispatchers with a deadline: (deadline in TSC ticks, block_seq, dispatcher).
    sleepers: Mutex<Vec<(u64, u64, Arc<Dispatcher>)>>,
    switches: AtomicU64,
}

static CPUS: [CpuSched; MAX_CPUS] = [const {
    CpuSched {
        current: Mutex::new(None),
        need_resched: AtomicBool::new(false),
        idle: AtomicBool::new(false),
        entries: AtomicU64::new(0),
        sleepers: Mutex::new(Vec::new()),
        switches: AtomicU64::new(0),
    }
}; MAX_CPUS];

static RUN_QUEUES: Once<CoRef<dyn RunQueue>> = Once::new();

/// Creates the run-queue clustered object (after clustered objects are up).
pub fn init(cpus: usize) -> Result<(), k42_guest_lib::cobj::CoError> {
    let root = Box::new(PerCpuReps::<dyn RunQueue, ()>::new(cpus, (), |_, _| {
        Box::new(RunQueueRep {
            classes: Mutex::new([const { Vec::new() }; CLASSES]),
            global_pass: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        })
    }));
    let obj = crate::cobj::manager().create("scheduler.run-queues", root)?;
    RUN_QUEUES.call_once(|| obj);
    Ok(())
}

/// Runs `f` on CPU `cpu`'s run queue (the rep of that CPU, from any CPU).
fn with_queue<T: Default>(cpu: usize, f: impl FnOnce(&dyn RunQueue) -> T) -> T {
    let Some(&obj) = RUN_QUEUES.get() else {
        return T::default();
    };
    let cos = crate::cobj::manager();
    if cpu == percpu::index() {
        cos.call(obj, |q| f(q))
    } else {
        cos.with_root(obj, |root| f(&**root.rep_for(cpu)))
    }
}

fn this() -> &'static CpuSched {
    &CPUS[percpu::index()]
}

/// Counts an entry into the kernel from user mode on this CPU.
pub fn count_entry() {
    this().entries.fetch_add(1, Ordering::Relaxed);
}

/// Kernel entries from user mode on this CPU so far.
pub fn entries() -> u64 {
    this().entries.load(Ordering::Relaxed)
}

/// The dispatcher running on this CPU.
pub fn current() -> Option<Arc<Dispatcher>> {
    this().current.lock().clone()
}

/// Queues `d` (runnable) on its CPU and wakes that CPU if it idles.
pub fn make_runnable(d: Arc<Dispatcher>) {
    let cpu = d.cpu;
    d.state.lock().run = RunState::Runnable;
    with_queue(cpu, |q| q.push(d));
    kick(cpu);
}

/// Asks CPU `cpu` to look at its run queue: an IPI if it idles, or if it runs a dispatcher
/// that should now share the CPU (the quantum timer is armed when the next trap returns).
fn kick(cpu: usize) {
    if cpu == percpu::index() {
        this().need_resched.store(true, Ordering::Release);
        return;
    }
    CPUS[cpu].need_resched.store(true, Ordering::Release);
    if let Some(target) = percpu::cpu(cpu) {
        apic::send_ipi(target.apic_id, idt::WAKE_VECTOR);
    }
}

/// Asks for a reschedule when the current trap returns (`yield`).
pub fn request_resched() {
    this().need_resched.store(true, Ordering::Release);
}

/// Marks the current dispatcher blocked for `reason`; it stops running when the trap returns
/// (unless a wake-up comes first). Returns the block sequence number.
pub fn block_current(reason: BlockReason) -> u64 {
    let Some(d) = current() else { return 0 };
    let mut state = d.state.lock();
    state.run = RunState::Blocked(reason);
    state.block_seq += 1;
    this().need_resched.store(true, Ordering::Release);
    state.block_seq
}

/// Marks the current dispatcher blocked for `reason` when the caller hands the CPU to another
/// dispatcher itself ([`hand_off`], as a PPC call does): no reschedule is asked for, so the
/// trap returns into the new dispatcher without a pass through the scheduler (on kvm_pvm that
/// pass cost about a tenth of a PPC round trip).
pub fn block_current_for_hand_off(reason: BlockReason) {
    if let Some(d) = current() {
        let mut state = d.state.lock();
        state.run = RunState::Blocked(reason);
        state.block_seq += 1;
    }
}

/// Undoes [`block_current`] when the thing waited for was already there.
pub fn unblock_current() {
    if let Some(d) = current() {
        let mut state = d.state.lock();
        if matches!(state.run, RunState::Blocked(_)) {
            state.run = RunState::Running;
        }
    }
}

/// Arms a deadline (TSC ticks) for the current dispatcher's block number `seq`.
pub fn sleep_until(deadline_tsc: u64, seq: u64) {
    if let Some(d) = current() {
        this().sleepers.lock().push((deadline_tsc, seq, d));
    }
}

/// Wakes `d` if it is blocked for `reason`: it returns `rax` (and `rdx`) from its call.
/// Returns whether it was woken.
pub fn wake(d: &Arc<Dispatcher>, reason: BlockReason, rax: u64, rdx: Option<u64>) -> bool {
    {
        let mut state = d.state.lock();
        if state.run != RunState::Blocked(reason) {
            return false;
        }
        state.pending_return = Some((rax, rdx));
    }
    make_runnable(d.clone());
    true
}

/// Wakes `d` if it is blocked for `reason`, to resume where it blocked with its registers
/// unchanged (a faulting instruction, re-executed). Returns whether it was woken.
pub fn resume(d: &Arc<Dispatcher>, reason: BlockReason) -> bool {
    if d.state.lock().run != RunState::Blocked(reason) {
        return false;
    }
    make_runnable(d.clone());
    true
}

/// Sets soft-interrupt `bits` for `d` and makes sure it notices: blocked for soft interrupts,
/// it wakes with all pending bits; running, its CPU is told, so it takes an interrupt upcall
/// (if it takes upcalls) when it next returns to user mode; queued, it does so when it runs.
pub fn post_soft_interrupt(d: &Arc<Dispatcher>, bits: u64) {
    let mut state = d.state.lock();
    d.post_soft_interrupt(bits);
    match state.run {
        RunState::Blocked(BlockReason::SoftInterrupt) => {
            // Under the dispatcher's lock: a second poster finds it runnable and leaves its
            // bits pending, so none is lost.
            state.pending_return = Some((d.take_soft_interrupts(), None));
            drop(state);
            make_runnable(d.clone());
        }
        RunState::Running => {
            drop(state);
            kick(d.cpu);
        }
        _ => {}
    }
}

/// Kills `d`: it never runs again; if it runs on another CPU, that CPU is told to switch.
pub fn kill(d: &Arc<Dispatcher>) {
    let (was, serving, waiting, retry) = {
        let mut state = d.state.lock();
        (
            core::mem::replace(&mut state.run, RunState::Dead),
            state.serving.take(),
            core::mem::take(&mut state.waiting),
            core::mem::take(&mut state.retry),
        )
    };
    if was == RunState::Running {
        kick(d.cpu);
    }
    // A dying server's clients carry on: the one being served gets an error, the queued ones
    // re-issue their calls (and get the same error).
    if let Some(client) = serving {
        let error = k42_guest_lib::kabi::Error::NotFound as i64 as u64;
        wake(&client, BlockReason::PpcReply, error, None);
    }
    for client in waiting {
        let call = k42_guest_lib::kabi::Sys::PpcCall as u64;
        wake(&client, BlockReason::PpcQueue, call, None);
    }
    for client in &retry {
        crate::upcall::retry(client);
    }
}

/// Makes `next` the running dispatcher right away (a PPC hand-off), without the run queue:
/// called from a trap whose frame is `frame`; the current dispatcher's registers are saved
/// and it is left in whatever state the caller put it.
pub fn hand_off(frame: &mut TrapFrame, next: Arc<Dispatcher>) {
    let prev = this().current.lock().take();
    if let Some(prev) = &prev {
        save(prev, frame);
    }
    next.state.lock().run = RunState::Running;
    load(&next, frame, prev.as_ref());
    *this().current.lock() = Some(next);
    drop(prev);
}

/// Saves the user state of the dispatcher leaving this CPU: registers, FS base, x87/SSE.
fn save(d: &Arc<Dispatcher>, frame: &TrapFrame) {
    let mut state = d.state.lock();
    state.frame = *frame;
    state.fs_base = user::fs_base();
    state.fpu.save();
}

fn load(next: &Arc<Dispatcher>, frame: &mut TrapFrame, prev: Option<&Arc<Dispatcher>>) {
    let mut state = next.state.lock();
    *frame = state.frame;
    if let Some((rax, rdx)) = state.pending_return.take() {
        frame.rax = rax;
        if let Some(rdx) = rdx {
            frame.rdx = rdx;
        }
    }
    state.fpu.restore();
    let fs = state.fs_base;
    drop(state);
    let period = next.tick_period.load(Ordering::Relaxed);
    if period != 0 {
        // A fresh period each time it is switched in: ticks count its own running time.
        next.tick_next
            .store(arch::rdtsc().saturating_add(period), Ordering::Relaxed);
    }
    crate::upcall::deliver_pending(next, frame);
    crate::entry::route_linux_syscalls(next.process.linux_entry.load(Ordering::Acquire));
    user::set_fs_base(fs);
    let same_space = prev.is_some_and(|p| Arc::ptr_eq(&p.process, &next.process));
    if !same_space {
        if let Some(space) = next.process.aspace.lock().as_ref() {
            crate::tlb::switch_to(space.root());
        }
    }
    this().switches.fetch_add(1, Ordering::Relaxed);
}

/// Wakes this CPU's sleepers whose deadline passed; returns the earliest remaining deadline.
fn wake_sleepers() -> Option<u64> {
    let now = arch::rdtsc();
    let mut due = Vec::new();
    let earliest = {
        let mut sleepers = this().sleepers.lock();
        let mut i = 0;
        while i < sleepers.len() {
            if sleepers[i].0 <= now {
                due.push(sleepers.swap_remove(i));
            } else {
                i += 1;
            }
        }
        sleepers.iter().map(|s| s.0).min()
    };
    for (_, seq, d) in due {
        let mut state = d.state.lock();
        if state.block_seq == seq && state.run == RunState::Blocked(BlockReason::SoftInterrupt) {
            // The deadline passed: `block` returns whatever bits are pending (usually 0).
            state.pending_return = Some((d.take_soft_interrupts(), None));
            drop(state);
            make_runnable(d);
        }
    }
    earliest
}

fn arm_timer(earliest_deadline: Option<u64>, others_waiting: bool) {
    let mut us = if others_waiting {
        Some(QUANTUM_US)
    } else {
        None
    };
    let tick = this()
        .current
        .lock()
        .as_ref()
        .filter(|d| d.tick_period.load(Ordering::Relaxed) != 0)
        .map(|d| d.tick_next.load(Ordering::Relaxed));
    let earliest_deadline = match (earliest_deadline, tick) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(deadline) = earliest_deadline {
        let until = platform::tsc_to_ns(deadline.saturating_sub(arch::rdtsc())) / 1000 + 1;
        us = Some(us.map_or(until, |q| q.min(until)));
    }
    if let Some(us) = us {
        timer::arm_us(us);
    }
}

/// The timer fired while a dispatcher ran: wake due sleepers, tick the running dispatcher if
/// its period is over, and share the CPU.
pub fn timer_tick() {
    wake_sleepers();
    let running = this().current.lock().clone();
    if let Some(d) = running {
        let period = d.tick_period.load(Ordering::Relaxed);
        let now = arch::rdtsc();
        if period != 0 && now >= d.tick_next.load(Ordering::Relaxed) {
            d.tick_next.store(now + period, Ordering::Relaxed);
            // Running: the upcall (or, disabled, the pending bit) comes as this trap returns.
            d.post_soft_interrupt(kabi::SOFT_INTERRUPT_TICK);
        }
    }
    this().need_resched.store(true, Ordering::Release);
}

/// Sets the calling dispatcher `d`'s tick period (`tick`; 0 stops its ticks). The timer is
/// armed as the call returns.
pub fn set_tick(d: &Dispatcher, period_ns: u64) {
    let period = period_ns.saturating_mul(platform::tsc_khz()) / 1_000_000;
    d.tick_next
        .store(arch::rdtsc().saturating_add(period), Ordering::Relaxed);
    d.tick_period.store(period, Ordering::Relaxed);
    request_resched();
}

/// Called at the end of every trap from user mode: switches dispatchers if one blocked, died,
/// or used up its turn while others wait; otherwise returns to the same one.
pub fn return_to_user(frame: &mut TrapFrame) {
    let cpu = this();
    // The fast path: one load. Everything that stops the current dispatcher (blocking, dying,
    // a wake-up of another one here, a yield, the quantum's end) sets the flag.
    if !cpu.need_resched.swap(false, Ordering::AcqRel) {
        return;
    }
    let earliest = wake_sleepers();
    let prev = cpu.current.lock().take();
    let mut requeue = false;
    if let Some(prev) = &prev {
        let running = prev.state.lock().run == RunState::Running;
        if running && with_queue(percpu::index(), |q| q.len()) == 0 {
            // Nothing else wants this CPU: keep running (taking any soft interrupts posted
            // to it meanwhile).
            crate::upcall::deliver_pending(prev, frame);
            *cpu.current.lock() = Some(prev.clone());
            arm_timer(earliest, false);
            return;
        }
        save(prev, frame);
        requeue = running;
    }
    if requeue {
        if let Some(prev) = &prev {
            make_runnable(prev.clone());
            cpu.need_resched.store(false, Ordering::Release);
        }
    }
    match pick() {
        Some(next) => {
            load(&next, frame, prev.as_ref());
            *cpu.current.lock() = Some(next);
            let others = with_queue(percpu::index(), |q| q.len()) > 0;
            arm_timer(earliest, others);
            drop(prev);
        }
        None => {
            crate::tlb::switch_to(boot::boot_pml4_phys());
            drop(prev);
            user::run_on_stack(percpu::current().kernel_stack_top, idle_entry);
        }
    }
}

/// Takes the next live dispatcher from this CPU's queue (dropping dead ones).
fn pick() -> Option<Arc<Dispatcher>> {
    loop {
        let d = with_queue(percpu::index(), |q| q.pop())?;
        let mut state = d.state.lock();
        if state.run == RunState::Runnable {
            state.run = RunState::Running;
            drop(state);
            return Some(d);
        }
    }
}

/// A CPU with nothing to run: on an empty kernel stack, waits for a dispatcher (running the
/// kernel's own per-CPU commands meanwhile) and enters user mode with it.
pub extern "C" fn idle_entry() -> ! {
    let cpu = this();
    loop {
        arch::disable_interrupts();
        crate::smp::run_pending_command();
        let earliest = wake_sleepers();
        // Only a kick (which sets the flag before its IPI) puts work on this CPU's queue, so
        // an idle CPU does not touch the queue (nor create its rep) until then.
        let kicked = cpu.need_resched.swap(false, Ordering::AcqRel);
        if let Some(next) = kicked.then(pick).flatten() {
            cpu.idle.store(false, Ordering::Release);
            let top = percpu::current().kernel_stack_top;
            user::enter_user_at(top, |frame| {
                load(&next, frame, None);
                *cpu.current.lock() = Some(next);
                let others = with_queue(percpu::index(), |q| q.len()) > 0;
                arm_timer(earliest, others);
            });
        }
        arm_timer(earliest, false);
        cpu.idle.store(true, Ordering::Release);
        arch::enable_interrupts_and_halt();
    }
}

/// Starts scheduling on the calling CPU: leaves the boot code's stack for good.
pub fn run() -> ! {
    user::run_on_stack(percpu::current().kernel_stack_top, idle_entry)
}
