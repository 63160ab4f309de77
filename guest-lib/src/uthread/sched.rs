//! Threads, dispatchers and the scheduler loop of each dispatcher.
//!
//! Ownership of a thread (`Arc<Tcb>`): at any time a thread that has not finished is in exactly
//! one of these places, and only its holder may move it on:
//! - running on a dispatcher (the scheduler loop holds it in `run`),
//! - in a dispatcher's private run queue, or in its timer queue while parked with a deadline,
//! - in a dispatcher's inbox (spawned, woken, or migrating there),
//! - parked: whoever wins the `PARKED -> EMPTY` transition of its park word (an `unpark`, or
//!   the timer of that very park) moves it to its home dispatcher.
//!
//! A thread returns to its scheduler for every decision (yield, park, migrate, exit); the
//! scheduler acts on it only after the switch has saved the thread's context, so a wake-up that
//! races with the thread going to sleep finds a complete context.

use alloc::boxed::Box;
use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Ordering as CmpOrdering;
use core::fmt;
use core::sync::atomic::{
    compiler_fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::AcqRel,
    Ordering::Acquire, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst,
};
use core::time::Duration;

use super::context::{self, Current, CurrentThread, Stack};
use super::protocol::{Commit, IdleFlag, ParkWord};
use super::{futex, Platform};

/// Number of strict priority levels; 0 is the most urgent.
pub const PRIORITIES: usize = 8;
/// Priority of threads spawned without one.
pub const DEFAULT_PRIORITY: u8 = 4;
/// Share (stride-scheduling tickets) of threads spawned without one.
pub const DEFAULT_SHARE: u32 = 100;
/// The largest share a thread may have (the smallest is 1).
pub const MAX_SHARE: u32 = 1 << 16;

/// Pass advance of a thread with share 1; a thread with share `s` advances by `STRIDE / s`.
const STRIDE: u64 = 1 << 20;
/// "No dispatcher" in dispatcher-index fields.
const NONE: usize = usize::MAX;
/// "No deadline" in a park action.
const NO_DEADLINE: u64 = u64::MAX;

// Why a thread switched to its scheduler.
const A_YIELD: u8 = 0;
const A_PARK: u8 = 1;
const A_MIGRATE: u8 = 2;
const A_EXIT: u8 = 3;

/// The runtime state shared by all dispatchers of a process; `P` is last so the runtime can be
/// used as `Shared<dyn Platform>` below the public API.
pub(crate) struct Shared<P: ?Sized> {
    dispatchers: Box<[Dispatcher]>,
    /// Threads spawned and not yet finished.
    live: AtomicUsize,
    shutdown: AtomicBool,
    next_id: AtomicU64,
    platform: P,
}

/// The type-erased runtime that threads and stacks refer to.
pub(crate) type Sh = Shared<dyn Platform>;

/// What other dispatchers (and the dispatcher's own threads) may touch of a dispatcher.
struct Dispatcher {
    /// Threads handed to this dispatcher; drained by its scheduler on every pass.
    inbox: crate::sync::Mutex<Vec<Arc<Tcb>>>,
    /// Announced by the scheduler before it idles; claimed by whoever kicks it.
    idle: IdleFlag,
    /// Whether some caller is inside `run_dispatcher` for it.
    running: AtomicBool,
    /// The scheduler's saved context while one of its threads runs.
    scheduler: AtomicUsize,
    switches: AtomicU64,
    migrations_in: AtomicU64,
    migrations_out: AtomicU64,
    idles: AtomicU64,
    preemptions: AtomicU64,
    /// Whether the platform ticks this dispatcher so its threads can be preempted (kept by
    /// its scheduler; read by posters, which kick it instead while it is off).
    ticking: AtomicBool,
}

impl Dispatcher {
    fn new() -> Self {
        Dispatcher {
            inbox: crate::sync::Mutex::new(Vec::new()),
            idle: IdleFlag::new(),
            running: AtomicBool::new(false),
            scheduler: AtomicUsize::new(0),
            switches: AtomicU64::new(0),
            migrations_in: AtomicU64::new(0),
            migrations_out: AtomicU64::new(0),
            idles: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            ticking: AtomicBool::new(false),
        }
    }
}

/// Counters of one dispatcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatcherStats {
    /// Switches from the scheduler into a thread.
    pub switches: u64,
    /// Threads that arrived from another dispatcher.
    pub migrations_in: u64,
    /// Threads sent to another dispatcher.
    pub migrations_out: u64,
    /// Times the dispatcher asked the platform to idle it.
    pub idles: u64,
    /// Threads preempted on it (see [`preempt`]).
    pub preemptions: u64,
}

impl Sh {
    /// Hands `thread` to dispatcher `target` and kicks it if it is idle.
    fn post(&self, target: usize, thread: Arc<Tcb>) {
        {
            let _section = NoPreempt::enter();
            self.dispatchers[target].inbox.lock().push(thread);
        }
        self.nudge(target);
    }

    /// Kicks `target` if it flagged itself idle. The flag is read after our inbox push was
    /// released, and the scheduler sets it before it re-reads its inbox (under the same lock),
    /// so either it sees our push or we see its flag. On a preemptive platform it also kicks a
    /// busy dispatcher that gets no ticks: its running thread may never give way otherwise.
    fn nudge(&self, target: usize) {
        let d = &self.dispatchers[target];
        if d.idle.claim_kick() || (self.platform.preemptive() && !d.ticking.load(Acquire)) {
            self.platform.kick(target);
        }
    }

    fn nudge_all(&self) {
        for index in 0..self.dispatchers.len() {
            self.nudge(index);
        }
    }

    /// Whether dispatchers should leave `run_dispatcher`.
    fn done(&self) -> bool {
        self.shutdown.load(SeqCst) && self.live.load(SeqCst) == 0
    }

    fn check_dispatcher(&self, index: usize) {
        assert!(
            index < self.dispatchers.len(),
            "dispatcher {index} does not exist (the runtime has {})",
            self.dispatchers.len()
        );
    }
}

/// A thread control block.
pub(crate) struct Tcb {
    id: u64,
    shared: Arc<Sh>,
    /// Always `Some` until the block is dropped.
    stack: Option<Stack>,
    /// The saved context while the thread is not running.
    ctx: AtomicUsize,
    main: spin::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The dispatcher the thread runs on or is queued for.
    home: AtomicUsize,
    /// Set while the thread travels to another dispatcher's inbox (for the counters).
    migrating: AtomicBool,
    /// A requested migration target (`NONE` if none).
    want: AtomicUsize,
    priority: AtomicU8,
    share: AtomicU32,
    /// Stride-scheduling pass, meaningful within its dispatcher's priority level.
    pass: AtomicU64,
    /// The runtime's own blocking (futex waits, sleeps): a token and a parked state.
    park: ParkWord,
    /// Depth of [`NoPreempt`] sections the thread is in (only the thread itself changes it).
    /// A new thread starts at 1, left when its body starts: it is inside `switch` until then.
    no_preempt: AtomicU32,
    /// A preemption arrived inside a [`NoPreempt`] section; taken when the section ends.
    preempt_wanted: AtomicBool,
    /// The token of the public [`park`]/[`Thread::unpark`], a futex word of its own so the
    /// runtime's internal waits never consume it.
    user_token: AtomicU32,
    action: AtomicU8,
    action_arg: AtomicU64,
    /// Guards against running one thread on two dispatchers (a scheduler bug).
    running: AtomicBool,
    started: AtomicBool,
    /// 1 once the thread finished (a futex word for joiners).
    pub(crate) finished: AtomicU32,
    /// Set by `wake` when it takes this thread off a futex queue.
    pub(crate) futex_woken: AtomicBool,
}

impl Drop for Tcb {
    fn drop(&mut self) {
        if let Some(stack) = self.stack.take() {
            if self.started.load(Acquire) && self.finished.load(Acquire) == 0 {
                // Suspended frames live on it (a thread parked forever and forgotten): they
                // are never resumed, and never dropped.
                stack.leak();
            }
        }
    }
}

impl Tcb {
    /// Ends the thread's internal park (or leaves a token for its next one).
    pub(crate) fn unpark(self: &Arc<Self>) {
        if self.park.unpark() {
            // We own the parked thread now; it parked on (and stays homed at) `home`, whose
            // scheduler puts it back in its run queue.
            self.shared.post(self.home.load(Relaxed), self.clone());
        }
    }

    fn stride(&self) -> u64 {
        STRIDE / u64::from(self.share.load(Relaxed).clamp(1, MAX_SHARE))
    }

    fn check_stack(&self) {
        let intact = self.stack.as_ref().is_some_and(Stack::intact);
        assert!(
            intact,
            "user-level thread {} overflowed its {}-byte stack",
            self.id,
            context::STACK_SIZE
        );
    }
}

/// Runs a thread's body on its own stack; returns the context of the scheduler to switch to
/// for good. Called by the context layer's thread entry.
pub(crate) fn thread_main(cur: CurrentThread) -> usize {
    let main = cur.get().main.lock().take();
    leave_no_preempt(cur);
    if let Some(main) = main {
        main();
    }
    let tcb = cur.get();
    // The way out switches for good: no preemption from here on.
    enter_no_preempt(cur);
    tcb.check_stack();
    tcb.action.store(A_EXIT, Relaxed);
    tcb.shared.dispatchers[tcb.home.load(Relaxed)]
        .scheduler
        .load(Relaxed)
}

/// Switches the running thread to its scheduler with `action`; returns when it is resumed
/// (possibly on another dispatcher).
fn switch_out(cur: CurrentThread, action: u8, arg: u64) {
    let _section = NoPreempt::of(cur);
    let tcb = cur.get();
    tcb.check_stack();
    tcb.action.store(action, Relaxed);
    tcb.action_arg.store(arg, Relaxed);
    let scheduler = tcb.shared.dispatchers[tcb.home.load(Relaxed)]
        .scheduler
        .load(Relaxed);
    let save = tcb.ctx.as_ptr();
    // Nothing of `tcb` is used after this: if nobody ever resumes us, the block may be freed.
    context::switch(save, scheduler);
}

/// Enters a [`NoPreempt`] section of the running thread.
fn enter_no_preempt(cur: CurrentThread) {
    let depth = &cur.get().no_preempt;
    // Only this thread writes it; an interrupt that lands here runs on this thread too and
    // only reads it, so a plain load and store suffice, with a compiler fence to keep the
    // section's own accesses after them.
    depth.store(depth.load(Relaxed) + 1, Relaxed);
    compiler_fence(SeqCst);
}

/// Leaves a [`NoPreempt`] section; a preemption that arrived inside the outermost one happens
/// now.
fn leave_no_preempt(cur: CurrentThread) {
    compiler_fence(SeqCst);
    let tcb = cur.get();
    let depth = tcb.no_preempt.load(Relaxed).saturating_sub(1);
    tcb.no_preempt.store(depth, Relaxed);
    compiler_fence(SeqCst);
    if depth == 0 && tcb.preempt_wanted.swap(false, Relaxed) {
        preempt_now(cur);
    }
}

/// Yields the running thread for a preemption, letting the platform keep what the thread's
/// dispatcher holds for it (see [`Platform::around_preemption`]).
fn preempt_now(cur: CurrentThread) {
    let tcb = cur.get();
    let shared = tcb.shared.clone();
    let home = tcb.home.load(Relaxed);
    shared.dispatchers[home].preemptions.fetch_add(1, Relaxed);
    shared
        .platform
        .around_preemption(home, &mut || switch_out(cur, A_YIELD, 0));
}

/// A section in which the calling user-level thread is not preempted (sections nest): a
/// preemption that arrives meanwhile waits until the outermost one ends. The runtime takes one
/// around its own locks and switches, which its schedulers also take; a global allocator
/// should take one around its lock for the same reason. Outside a user-level thread it does
/// nothing.
pub struct NoPreempt {
    thread: Option<CurrentThread>,
}

impl NoPreempt {
    /// Enters a section.
    pub fn enter() -> NoPreempt {
        match context::current() {
            Some(Current::Thread(cur)) => NoPreempt::of(cur),
            _ => NoPreempt { thread: None },
        }
    }

    /// Enters a section of `cur`, the running thread.
    pub(crate) fn of(cur: CurrentThread) -> NoPreempt {
        enter_no_preempt(cur);
        NoPreempt { thread: Some(cur) }
    }
}

impl Drop for NoPreempt {
    fn drop(&mut self) {
        if let Some(cur) = self.thread {
            leave_no_preempt(cur);
        }
    }
}

impl fmt::Debug for NoPreempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoPreempt")
            .field("in_thread", &self.thread.is_some())
            .finish()
    }
}

/// Preempts the running user-level thread: for the platform's interrupt handler (a tick, a
/// kick), which runs on the interrupted code's stack with the interrupted state saved below.
/// The thread yields to its dispatcher's other runnable threads now, or, inside a
/// [`NoPreempt`] section, when the section ends. Returns whether it yielded now; false also
/// when the interrupted code is a scheduler or not in a runtime.
pub fn preempt() -> bool {
    let Some(Current::Thread(cur)) = context::current() else {
        return false;
    };
    let tcb = cur.get();
    if tcb.no_preempt.load(Relaxed) != 0 {
        tcb.preempt_wanted.store(true, Relaxed);
        return false;
    }
    preempt_now(cur);
    true
}

/// One entry of a priority level: ordered by pass, then by arrival.
struct Queued {
    pass: u64,
    seq: u64,
    tcb: Arc<Tcb>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Reversed: `BinaryHeap` is a max-heap and we want the smallest pass first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.pass, other.seq).cmp(&(self.pass, self.seq))
    }
}

/// A parked thread's deadline, valid only while its park word is still `word`.
struct Timer {
    deadline: u64,
    seq: u64,
    word: u64,
    tcb: Arc<Tcb>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    // Reversed, earliest deadline first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

#[derive(Default)]
struct Level {
    queue: BinaryHeap<Queued>,
    /// Pass of the last thread dispatched from this level (the level's virtual time).
    vtime: u64,
}

/// A dispatcher's private scheduling state, on its scheduler stack.
struct Local<'a> {
    shared: &'a Sh,
    index: usize,
    levels: [Level; PRIORITIES],
    timers: BinaryHeap<Timer>,
    seq: u64,
}

impl<'a> Local<'a> {
    fn me(&self) -> &'a Dispatcher {
        &self.shared.dispatchers[self.index]
    }

    /// A thread taken from the inbox.
    fn arrive(&mut self, tcb: Arc<Tcb>) {
        if tcb.migrating.swap(false, Relaxed) {
            self.me().migrations_in.fetch_add(1, Relaxed);
        }
        self.make_runnable(tcb);
    }

    /// Queues a thread that may run here (or sends it where it was asked to go).
    fn make_runnable(&mut self, tcb: Arc<Tcb>) {
        let want = tcb.want.swap(NONE, Relaxed);
        if want != NONE && want != self.index {
            self.send(tcb, want);
            return;
        }
        let level = &mut self.levels[usize::from(tcb.priority.load(Relaxed))];
        // Stride scheduling: a thread that ran keeps its pass (one stride past the dispatch
        // that charged it); new, woken and migrated threads are brought to the level's virtual
        // time, so they neither bank credit while away nor wait more than one stride.
        let pass = tcb
            .pass
            .load(Relaxed)
            .clamp(level.vtime, level.vtime + tcb.stride());
        tcb.pass.store(pass, Relaxed);
        self.seq += 1;
        level.queue.push(Queued {
            pass,
            seq: self.seq,
            tcb,
        });
    }

    /// Sends a thread to another dispatcher.
    fn send(&mut self, tcb: Arc<Tcb>, target: usize) {
        tcb.home.store(target, Relaxed);
        tcb.migrating.store(true, Relaxed);
        self.me().migrations_out.fetch_add(1, Relaxed);
        self.shared.post(target, tcb);
    }

    /// The next thread to run: the smallest pass of the most urgent non-empty level.
    fn pick(&mut self) -> Option<Arc<Tcb>> {
        let level = self.levels.iter_mut().find(|l| !l.queue.is_empty())?;
        let Queued { pass, tcb, .. } = level.queue.pop()?;
        level.vtime = pass;
        tcb.pass.store(pass + tcb.stride(), Relaxed);
        Some(tcb)
    }

    fn next_deadline(&self) -> Option<u64> {
        self.timers.peek().map(|t| t.deadline)
    }

    /// Wakes the parked threads whose deadlines passed.
    fn fire(&mut self, now: u64) {
        while self.timers.peek().is_some_and(|t| t.deadline <= now) {
            let Some(timer) = self.timers.pop() else {
                break;
            };
            // Otherwise the park ended earlier (unparked) and this entry is stale.
            if timer.tcb.park.expire(timer.word) {
                self.make_runnable(timer.tcb);
            }
        }
    }

    /// Runs `tcb` until it comes back, then acts on what it asked for.
    fn run(&mut self, tcb: Arc<Tcb>) {
        let want = tcb.want.swap(NONE, Relaxed);
        if want != NONE && want != self.index {
            self.send(tcb, want);
            return;
        }
        assert!(
            !tcb.running.swap(true, Relaxed),
            "user-level thread {} scheduled twice",
            tcb.id
        );
        tcb.home.store(self.index, Relaxed);
        tcb.started.store(true, Relaxed);
        tcb.check_stack();
        // A new turn: a preemption still pending from the last one is void.
        tcb.preempt_wanted.store(false, Relaxed);
        let me = self.me();
        me.switches.fetch_add(1, Relaxed);
        context::switch(me.scheduler.as_ptr(), tcb.ctx.load(Relaxed));
        tcb.running.store(false, Relaxed);
        match tcb.action.load(Relaxed) {
            A_YIELD => self.make_runnable(tcb),
            A_PARK => self.park(tcb),
            A_MIGRATE => {
                let target = tcb.action_arg.load(Relaxed) as usize;
                if target == self.index {
                    self.make_runnable(tcb);
                } else {
                    self.send(tcb, target);
                }
            }
            A_EXIT => self.exit(tcb),
            other => unreachable!("unknown thread action {other}"),
        }
    }

    /// The thread asked to park: consume a token or really park it, now that its context is
    /// saved.
    fn park(&mut self, tcb: Arc<Tcb>) {
        let deadline = tcb.action_arg.load(Relaxed);
        match tcb.park.commit() {
            Commit::Parked(word) => {
                if deadline != NO_DEADLINE {
                    self.seq += 1;
                    self.timers.push(Timer {
                        deadline,
                        seq: self.seq,
                        word,
                        tcb,
                    });
                }
                // Else whoever unparks it owns it now (or nobody, and it is forgotten).
            }
            Commit::Notified => self.make_runnable(tcb),
        }
    }

    fn exit(&mut self, tcb: Arc<Tcb>) {
        tcb.finished.store(1, Release);
        futex::wake(&tcb.finished, usize::MAX);
        // Our reference may be the last: then the stack is freed here, on the scheduler's.
        drop(tcb);
        if self.shared.live.fetch_sub(1, SeqCst) == 1 {
            self.shared.nudge_all();
        }
    }
}

/// The scheduler loop of dispatcher `index`, on its scheduler stack.
fn schedule(shared: &Sh, index: usize) {
    let mut local = Local {
        shared,
        index,
        levels: Default::default(),
        timers: BinaryHeap::new(),
        seq: 0,
    };
    let me = &shared.dispatchers[index];
    let mut mail = Vec::new();
    loop {
        shared.platform.poll(index);
        core::mem::swap(&mut *me.inbox.lock(), &mut mail);
        for tcb in mail.drain(..) {
            local.arrive(tcb);
        }
        if local.next_deadline().is_some() {
            local.fire(shared.platform.now_ns());
        }
        if let Some(tcb) = local.pick() {
            if shared.platform.preemptive() {
                // Ticks while the process has another thread that might want this CPU.
                let want = shared.live.load(SeqCst) > 1;
                if me.ticking.load(Relaxed) != want {
                    me.ticking.store(want, Release);
                    shared.platform.set_ticks(index, want);
                }
            }
            local.run(tcb);
            continue;
        }
        if shared.done() {
            break;
        }
        // Nothing to run: flag idle, then look again (see `Sh::nudge` for the other side).
        me.idle.announce();
        if !me.inbox.lock().is_empty() || shared.done() {
            me.idle.clear();
            continue;
        }
        me.idles.fetch_add(1, Relaxed);
        shared.platform.idle(index, local.next_deadline());
        me.idle.clear();
    }
}

/// A process's user-level thread runtime: one scheduler per dispatcher.
pub struct Runtime<P: Platform> {
    shared: Arc<Shared<P>>,
}

impl<P: Platform> Clone for Runtime<P> {
    fn clone(&self) -> Self {
        Runtime {
            shared: self.shared.clone(),
        }
    }
}

impl<P: Platform> Runtime<P> {
    /// A runtime with one scheduler for each of the platform's dispatchers.
    pub fn new(platform: P) -> Self {
        let count = platform.dispatcher_count();
        assert!(count > 0, "a runtime needs at least one dispatcher");
        Runtime {
            shared: Arc::new(Shared {
                dispatchers: (0..count).map(|_| Dispatcher::new()).collect(),
                live: AtomicUsize::new(0),
                shutdown: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                platform,
            }),
        }
    }

    fn erased(&self) -> Arc<Sh> {
        self.shared.clone()
    }

    /// The platform the runtime was built on.
    pub fn platform(&self) -> &P {
        &self.shared.platform
    }

    /// Number of dispatchers.
    pub fn dispatcher_count(&self) -> usize {
        self.shared.dispatchers.len()
    }

    /// Spawns a thread with default priority and share (see [`Builder::spawn_in`]).
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Builder::new().spawn_in(self, f)
    }

    /// Runs dispatcher `index`'s scheduler on the calling CPU (in the guest: the dispatcher's
    /// entry; on the host: an OS thread). Returns once [`Runtime::shutdown`] was requested and
    /// every thread has finished. Panics if `index` is out of range or already running.
    pub fn run_dispatcher(&self, index: usize) {
        let shared = self.erased();
        shared.check_dispatcher(index);
        let me = &shared.dispatchers[index];
        assert!(
            !me.running.swap(true, AcqRel),
            "dispatcher {index} is already running"
        );
        context::on_scheduler_stack(&shared, index, &mut || schedule(&shared, index));
        me.running.store(false, Release);
    }

    /// Lets the dispatchers return from [`Runtime::run_dispatcher`] as soon as no thread is
    /// left (at once if none is).
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, SeqCst);
        self.erased().nudge_all();
    }

    /// Threads spawned and not yet finished.
    pub fn live_threads(&self) -> usize {
        self.shared.live.load(SeqCst)
    }

    /// The counters of dispatcher `index`.
    pub fn stats(&self, index: usize) -> DispatcherStats {
        self.erased().check_dispatcher(index);
        let d = &self.shared.dispatchers[index];
        DispatcherStats {
            switches: d.switches.load(Relaxed),
            migrations_in: d.migrations_in.load(Relaxed),
            migrations_out: d.migrations_out.load(Relaxed),
            idles: d.idles.load(Relaxed),
            preemptions: d.preemptions.load(Relaxed),
        }
    }
}

/// Options for spawning a thread: priority, share and dispatcher.
#[derive(Clone, Debug)]
pub struct Builder {
    priority: u8,
    share: u32,
    dispatcher: Option<usize>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Default priority and share, on the spawner's dispatcher.
    pub fn new() -> Self {
        Builder {
            priority: DEFAULT_PRIORITY,
            share: DEFAULT_SHARE,
            dispatcher: None,
        }
    }

    /// Strict priority level, `0..PRIORITIES` (0 runs first).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Proportional share within the priority level, `1..=MAX_SHARE`.
    pub fn share(mut self, share: u32) -> Self {
        self.share = share;
        self
    }

    /// The dispatcher to start on (default: the spawner's, or 0 from outside the runtime).
    pub fn dispatcher(mut self, index: usize) -> Self {
        self.dispatcher = Some(index);
        self
    }

    /// Spawns a thread in the runtime of the calling thread. Panics outside a runtime.
    pub fn spawn<F, T>(self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let shared = match context::current() {
            Some(Current::Thread(cur)) => cur.get().shared.clone(),
            _ => panic!("uthread::spawn called outside a user-level thread; use Runtime::spawn"),
        };
        self.spawn_shared(&shared, f)
    }

    /// Spawns a thread in `runtime` (from anywhere).
    pub fn spawn_in<P, F, T>(self, runtime: &Runtime<P>, f: F) -> JoinHandle<T>
    where
        P: Platform,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_shared(&runtime.erased(), f)
    }

    fn spawn_shared<F, T>(self, shared: &Arc<Sh>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        assert!(
            usize::from(self.priority) < PRIORITIES,
            "priority {} is out of range (0..{PRIORITIES})",
            self.priority
        );
        assert!(
            (1..=MAX_SHARE).contains(&self.share),
            "share {} is out of range (1..={MAX_SHARE})",
            self.share
        );
        let target = match self.dispatcher {
            Some(index) => index,
            None => current_in(shared).unwrap_or(0),
        };
        shared.check_dispatcher(target);
        let result = Arc::new(spin::Mutex::new(None));
        let slot = result.clone();
        let main: Box<dyn FnOnce() + Send> = Box::new(move || {
            let value = f();
            *slot.lock() = Some(value);
        });
        let tcb = Arc::new_cyclic(|me| Tcb {
            id: shared.next_id.fetch_add(1, Relaxed),
            shared: shared.clone(),
            stack: Some(Stack::for_thread(me.as_ptr())),
            ctx: AtomicUsize::new(0),
            main: spin::Mutex::new(Some(main)),
            home: AtomicUsize::new(target),
            migrating: AtomicBool::new(false),
            want: AtomicUsize::new(NONE),
            priority: AtomicU8::new(self.priority),
            share: AtomicU32::new(self.share),
            pass: AtomicU64::new(0),
            park: ParkWord::new(),
            no_preempt: AtomicU32::new(1),
            preempt_wanted: AtomicBool::new(false),
            user_token: AtomicU32::new(0),
            action: AtomicU8::new(A_YIELD),
            action_arg: AtomicU64::new(0),
            running: AtomicBool::new(false),
            started: AtomicBool::new(false),
            finished: AtomicU32::new(0),
            futex_woken: AtomicBool::new(false),
        });
        let stack = tcb.stack.as_ref().expect("a new thread has its stack");
        tcb.ctx.store(
            stack.fresh_frame(context::THREAD_ENTRY, Arc::as_ptr(&tcb) as usize),
            Relaxed,
        );
        shared.live.fetch_add(1, SeqCst);
        shared.post(target, tcb.clone());
        JoinHandle {
            thread: Thread { tcb },
            result,
        }
    }
}

/// The dispatcher the caller runs on, if it runs in `shared`'s runtime.
fn current_in(shared: &Sh) -> Option<usize> {
    let same = |other: &Sh| core::ptr::addr_eq(other as *const Sh, shared as *const Sh);
    match context::current()? {
        Current::Thread(cur) => {
            let tcb = cur.get();
            same(&tcb.shared).then(|| tcb.home.load(Relaxed))
        }
        Current::Scheduler(s) => same(s.shared()).then(|| s.dispatcher()),
    }
}

/// A handle to a user-level thread.
#[derive(Clone)]
pub struct Thread {
    tcb: Arc<Tcb>,
}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread")
            .field("id", &self.tcb.id)
            .field("dispatcher", &self.dispatcher())
            .field("priority", &self.priority())
            .field("share", &self.share())
            .finish()
    }
}

impl PartialEq for Thread {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tcb, &other.tcb)
    }
}
impl Eq for Thread {}

impl Thread {
    /// A process-unique id (ids start at 1).
    pub fn id(&self) -> u64 {
        self.tcb.id
    }

    /// Wakes the thread from [`park`], or makes its next `park` return at once.
    pub fn unpark(&self) {
        // Only the setter of the token wakes: a token already there means the thread has yet
        // to consume it, so it cannot be sleeping on it.
        if self.tcb.user_token.swap(1, AcqRel) == 0 {
            futex::wake(&self.tcb.user_token, 1);
        }
    }

    /// The dispatcher the thread runs on, or is queued or parked on.
    pub fn dispatcher(&self) -> usize {
        self.tcb.home.load(Relaxed)
    }

    /// Asks for the thread to move to dispatcher `target`; it does the next time its scheduler
    /// handles it (when it yields or blocks, or is picked to run). Use [`migrate_to`] to move
    /// the calling thread at once.
    pub fn migrate(&self, target: usize) {
        self.tcb.shared.check_dispatcher(target);
        self.tcb.want.store(target, Relaxed);
    }

    /// The thread's priority level.
    pub fn priority(&self) -> u8 {
        self.tcb.priority.load(Relaxed)
    }

    /// Changes the priority level (`0..PRIORITIES`); takes effect when the thread is next queued.
    pub fn set_priority(&self, priority: u8) {
        assert!(
            usize::from(priority) < PRIORITIES,
            "priority {priority} is out of range"
        );
        self.tcb.priority.store(priority, Relaxed);
    }

    /// The thread's share within its priority level.
    pub fn share(&self) -> u32 {
        self.tcb.share.load(Relaxed)
    }

    /// Changes the share (`1..=MAX_SHARE`); takes effect at the thread's next dispatch.
    pub fn set_share(&self, share: u32) {
        assert!(
            (1..=MAX_SHARE).contains(&share),
            "share {share} is out of range"
        );
        self.tcb.share.store(share, Relaxed);
    }

    /// Whether the thread's body has returned.
    pub fn is_finished(&self) -> bool {
        self.tcb.finished.load(Acquire) != 0
    }
}

/// Owns a thread's result; dropping it detaches the thread.
pub struct JoinHandle<T> {
    thread: Thread,
    result: Arc<spin::Mutex<Option<T>>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("thread", &self.thread)
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// The thread.
    pub fn thread(&self) -> &Thread {
        &self.thread
    }

    /// Whether the thread has finished (so [`JoinHandle::join`] will not block).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the thread to finish and returns its result. Blocks the calling user-level
    /// thread (not its dispatcher); outside a runtime it spins.
    pub fn join(self) -> T {
        let finished = &self.thread.tcb.finished;
        while finished.load(Acquire) == 0 {
            futex::wait(finished, 0);
        }
        self.take()
    }

    /// The result if the thread has finished, else the handle back.
    pub fn try_join(self) -> Result<T, Self> {
        if self.is_finished() {
            Ok(self.take())
        } else {
            Err(self)
        }
    }

    fn take(self) -> T {
        self.result
            .lock()
            .take()
            .expect("a finished thread left its result")
    }
}

/// Spawns a thread with default priority and share on the calling thread's dispatcher. Panics
/// outside a user-level thread (use [`Runtime::spawn`] there).
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().spawn(f)
}

/// The calling thread, or `None` outside a user-level thread.
pub fn current() -> Option<Thread> {
    match context::current()? {
        Current::Thread(cur) => Some(Thread { tcb: cur.arc() }),
        Current::Scheduler(_) => None,
    }
}

/// The dispatcher the caller runs on (from a thread or a scheduler), or `None` outside a runtime.
pub fn current_dispatcher() -> Option<usize> {
    Some(match context::current()? {
        Current::Thread(cur) => cur.get().home.load(Relaxed),
        Current::Scheduler(s) => s.dispatcher(),
    })
}

/// The calling thread; panics with `what` outside one.
fn me(what: &str) -> CurrentThread {
    match context::current() {
        Some(Current::Thread(cur)) => cur,
        _ => panic!("uthread::{what} called outside a user-level thread"),
    }
}

/// Lets the other runnable threads of this dispatcher run (by priority, then share). Outside a
/// user-level thread it is a spin-loop hint.
pub fn yield_now() {
    match context::current() {
        Some(Current::Thread(cur)) => switch_out(cur, A_YIELD, 0),
        _ => core::hint::spin_loop(),
    }
}

/// Blocks the calling thread until [`Thread::unpark`] (returns at once if a token is pending).
/// May return spuriously. Outside a user-level thread it is a spin-loop hint.
pub fn park() {
    user_park(None);
}

/// Like [`park`], but returns no later than about `deadline_ns` on the platform clock.
pub fn park_until(deadline_ns: u64) {
    user_park(Some(deadline_ns));
}

fn user_park(deadline_ns: Option<u64>) {
    let Some(Current::Thread(cur)) = context::current() else {
        core::hint::spin_loop();
        return;
    };
    let token = &cur.get().user_token;
    if token.swap(0, AcqRel) == 0 {
        match deadline_ns {
            None => futex::wait(token, 0),
            Some(deadline) => {
                futex::wait_until(token, 0, deadline);
            }
        }
        token.swap(0, AcqRel);
    }
}

/// The runtime's internal park: blocks the calling thread until [`Tcb::unpark`] or the
/// deadline (or spuriously). Callers loop on their own condition.
pub(crate) fn park_inner(deadline_ns: Option<u64>) {
    let Some(Current::Thread(cur)) = context::current() else {
        core::hint::spin_loop();
        return;
    };
    if !cur.get().park.take_token() {
        let arg = deadline_ns.map_or(NO_DEADLINE, |d| d.min(NO_DEADLINE - 1));
        switch_out(cur, A_PARK, arg);
    }
}

/// The platform clock of the calling thread's runtime. Panics outside a user-level thread.
pub fn now_ns() -> u64 {
    me("now_ns").get().shared.platform.now_ns()
}

/// Sleeps the calling thread until the platform clock reaches `deadline_ns`; its dispatcher
/// runs other threads meanwhile. Panics outside a user-level thread.
pub fn sleep_until(deadline_ns: u64) {
    let cur = me("sleep_until");
    while cur.get().shared.platform.now_ns() < deadline_ns {
        park_inner(Some(deadline_ns));
    }
}

/// Sleeps the calling thread for `duration`. Panics outside a user-level thread.
pub fn sleep_for(duration: Duration) {
    let now = now_ns();
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    sleep_until(now.saturating_add(nanos));
}

/// Moves the calling thread to dispatcher `target`; returns running there. Panics outside a
/// user-level thread or if `target` does not exist.
pub fn migrate_to(target: usize) {
    let cur = me("migrate_to");
    let tcb = cur.get();
    tcb.shared.check_dispatcher(target);
    if tcb.home.load(Relaxed) != target {
        switch_out(cur, A_MIGRATE, target as u64);
    }
}
