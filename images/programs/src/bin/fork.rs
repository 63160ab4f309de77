//! Checks `fork` (copy on write) and `wait`: parent and child each write their own values into
//! the same heap, static and stack pages and keep seeing their own; a child's computed exit
//! status reaches its parent; several children are reaped with wait-any in whatever order
//! they exit; `NO_HANG` says `Again` while a child still runs; no process runs with the
//! translations of one that exited; a fork bomb ends with `Again`
//! at the process limit, everyone is reaped and forking works again; and every frame comes
//! back once the children are gone (the system's free-frame count is where it was).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_rt::kabi::{self, Error, Info, WaitFlags};
use k42_rt::sys::{self, Forked};
use k42_rt::{println, sys::wait_any};

k42_rt::entry!(main);

/// Words per checked area: two pages, so each spans more than one frame.
const WORDS: usize = 1024;
/// Children reaped with wait-any.
const ANY_CHILDREN: u64 = 4;
/// Set in a fork-bomb process's exit status when something other than `Again` went wrong.
const BOMB_FAILED: i64 = 1 << 40;
/// An area no other check uses, which children map fresh (its own 2 MiB block of tables).
const FRESH_AREA: u64 = 0x0000_0050_0000_0000;
/// Pages of [`FRESH_AREA`].
const FRESH_PAGES: usize = 8;
/// Processes of the stale-translation check.
const STALE_ROUNDS: u64 = 24;
/// The spawn argument that makes `/bin/fork` one of those processes (plus its number).
const STALE_ARG: u64 = 1000;

/// A static area (in the program's writable data, demand-zero).
static STATICS: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// The value of word `i` for writer `who`.
fn pattern(who: u64, i: usize) -> u64 {
    (who << 32) ^ (i as u64).wrapping_mul(0x9e37_79b9)
}

fn fill(heap: &mut [u64], stack: &mut [u64], who: u64) {
    for i in 0..WORDS {
        heap[i] = pattern(who, i);
        stack[i] = pattern(who, i) ^ 1;
        STATICS[i].store(pattern(who, i) ^ 2, Ordering::Relaxed);
    }
}

/// How many words of the three areas do not hold `who`'s values.
fn mismatches(heap: &[u64], stack: &[u64], who: u64) -> usize {
    (0..WORDS)
        .filter(|&i| {
            heap[i] != pattern(who, i)
                || stack[i] != pattern(who, i) ^ 1
                || STATICS[i].load(Ordering::Relaxed) != pattern(who, i) ^ 2
        })
        .count()
}

/// The exit status a child that sees `who`'s values computes from them.
fn status_of(heap: &[u64], stack: &[u64]) -> i64 {
    let mix = heap[5] ^ stack[7] ^ STATICS[9].load(Ordering::Relaxed);
    (mix % 97) as i64 + 3
}

/// Parent and child write different values into the same pages, check they see their own
/// (before and after the other wrote), and the child's computed status reaches the parent.
fn copy_on_write(heap: &mut [u64], round: u64) -> Result<(), &'static str> {
    let mut stack = [0u64; WORDS];
    let stack = black_box(&mut stack[..]);
    let (parent, child) = (10 + 2 * round, 11 + 2 * round);
    fill(heap, stack, parent);
    match sys::fork().map_err(|_| "fork failed")? {
        Forked::Child => {
            let mut ok = mismatches(heap, stack, parent) == 0;
            fill(heap, stack, child);
            for _ in 0..3 {
                sys::yield_now();
            }
            ok &= mismatches(heap, stack, child) == 0;
            sys::exit(if ok { status_of(heap, stack) } else { 1 });
        }
        Forked::Parent(pid) => {
            // The child's values, to compute the status it should exit with.
            let mut want_heap = [0u64; 16];
            let mut want_stack = [0u64; 16];
            for i in 0..16 {
                want_heap[i] = pattern(child, i);
                want_stack[i] = pattern(child, i) ^ 1;
            }
            let mix = want_heap[5] ^ want_stack[7] ^ (pattern(child, 9) ^ 2);
            let want = (mix % 97) as i64 + 3;
            sys::yield_now();
            if mismatches(heap, stack, parent) != 0 {
                return Err("the parent saw the child's writes (or lost its own)");
            }
            fill(heap, stack, parent + 100);
            if mismatches(heap, stack, parent + 100) != 0 {
                return Err("the parent's writes after fork did not stick");
            }
            match sys::wait_flags(pid, 0) {
                Ok((p, s)) if p == pid && s == want => {}
                Ok((_, 1)) => return Err("the child saw the parent's writes (or lost its own)"),
                Ok(_) => return Err("wait returned the wrong pid or status"),
                Err(_) => return Err("wait for the child failed"),
            }
            // The child is gone: the pages are the parent's alone, writable again.
            fill(heap, stack, parent + 200);
            if mismatches(heap, stack, parent + 200) != 0 {
                return Err("writes after the child exited did not stick");
            }
            Ok(())
        }
    }
}

/// [`FRESH_AREA`], mapped read-write now, as words.
fn map_fresh_area() -> &'static mut [u64] {
    let len = FRESH_PAGES as u64 * kabi::PAGE_SIZE;
    if sys::map(FRESH_AREA, len, kabi::Prot::READ | kabi::Prot::WRITE).is_err() {
        sys::exit(10);
    }
    // SAFETY: the range was just mapped read-write in this process (demand-zero) and nothing
    // else refers to it.
    unsafe { core::slice::from_raw_parts_mut(FRESH_AREA as *mut u64, len as usize / 8) }
}

/// Word 0 and a middle word of every page of the fresh area.
fn fresh_words(area: &mut [u64]) -> impl Iterator<Item = &mut u64> {
    area.chunks_mut(512).flat_map(|page| {
        let (first, rest) = page.split_at_mut(300);
        [&mut first[0], &mut rest[0]]
    })
}

/// In a process spawned with argument [`STALE_ARG`] + n: maps the fresh area, which must be
/// zero, writes its own values and forks a child, which must see them (they are in the page
/// tables the kernel knows). Returns the exit status.
fn fresh_area_user(marker: u64) -> i64 {
    let area = map_fresh_area();
    if fresh_words(area).any(|w| *w != 0) {
        return 12;
    }
    fresh_words(area).for_each(|w| *w = marker);
    match sys::fork() {
        Ok(Forked::Child) => {
            let seen = fresh_words(area).filter(|w| **w == marker).count();
            sys::exit(seen as i64)
        }
        Ok(Forked::Parent(child)) => match sys::wait(child) {
            Ok(seen) if seen == 2 * FRESH_PAGES as i64 => 0,
            _ => 13,
        },
        Err(_) => 14,
    }
}

/// A process never runs with the translations of one that exited: fresh processes, one
/// after the other, map and fill the same area (see [`fresh_area_user`]). Each one's page
/// tables are freed at its exit and their frames zeroed by `k42vm`; the next one's tables
/// are often the same frames. A hypervisor that shadows page tables and kept its shadow of
/// a freed table would let a process read an exited one's frames, and write there, out of
/// the kernel's sight.
fn no_stale_translations() -> Result<(), &'static str> {
    for round in 0..STALE_ROUNDS {
        let pid = sys::spawn("/bin/fork", STALE_ARG + round, 0)
            .map_err(|_| "spawning a fresh process failed")?;
        match sys::wait(pid) {
            Ok(0) => {}
            Ok(12) => return Err("a freshly mapped page held an exited process's data"),
            Ok(13) => {
                return Err(
                    "a process's writes did not reach the page tables the kernel \
                            knows (stale translations of an exited process)",
                )
            }
            _ => return Err("a process of the stale-translation check failed"),
        }
    }
    Ok(())
}

/// Several children, reaped with wait-any in the order they exit.
fn wait_any_children() -> Result<(), &'static str> {
    let mut pids = [0u64; ANY_CHILDREN as usize];
    for (i, slot) in pids.iter_mut().enumerate() {
        match sys::fork().map_err(|_| "fork failed")? {
            Forked::Child => {
                // Exit in the reverse order of creation.
                for _ in 0..(ANY_CHILDREN as usize - i) * 2 {
                    sys::yield_now();
                }
                sys::exit(20 + i as i64);
            }
            Forked::Parent(pid) => *slot = pid,
        }
    }
    let mut seen = [false; ANY_CHILDREN as usize];
    for _ in 0..ANY_CHILDREN {
        let (pid, status) = wait_any().map_err(|_| "wait-any failed with children left")?;
        let i = pids
            .iter()
            .position(|&p| p == pid)
            .ok_or("wait-any returned a pid that is not a child")?;
        if status != 20 + i as i64 || seen[i] {
            return Err("wait-any returned a wrong status, or a child twice");
        }
        seen[i] = true;
    }
    if wait_any() != Err(Error::NoChild) {
        return Err("wait-any with no children left did not say NoChild");
    }
    Ok(())
}

/// `NO_HANG` says `Again` while the child runs, and reaps it once it exited.
fn no_hang() -> Result<(), &'static str> {
    let pid = match sys::fork().map_err(|_| "fork failed")? {
        Forked::Child => {
            // Wait for the parent's soft interrupt.
            while sys::block(0) == 0 {}
            sys::exit(7);
        }
        Forked::Parent(pid) => pid,
    };
    if sys::wait_no_hang(pid) != Err(Error::Again)
        || sys::wait_no_hang(kabi::WAIT_ANY) != Err(Error::Again)
    {
        return Err("NO_HANG did not say Again while the child runs");
    }
    if sys::wait_flags(pid, 2) != Err(Error::Invalid) {
        return Err("wait with an unknown flag was not Invalid");
    }
    if sys::wait(1) != Err(Error::NoChild) || sys::wait_no_hang(1) != Err(Error::NoChild) {
        return Err("wait for a process that is not a child was not NoChild");
    }
    sys::soft_interrupt(pid, 0, 1).map_err(|_| "cannot interrupt the child")?;
    // It exits soon: poll without blocking until it has.
    loop {
        match sys::wait_flags(pid, WaitFlags::NO_HANG) {
            Ok((p, 7)) if p == pid => return Ok(()),
            Err(Error::Again) => sys::yield_now(),
            _ => return Err("NO_HANG did not reap the exited child"),
        }
    }
}

/// A fork bomb: every process forks until the system says `Again`, then reaps its children
/// and exits with the number of processes in its subtree. Returns that number (or a status
/// with [`BOMB_FAILED`]).
fn bomb() -> i64 {
    let mut top = true;
    let mut children = 0u64;
    let mut total = 1i64;
    loop {
        match sys::fork() {
            Ok(Forked::Child) => {
                top = false;
                children = 0;
                total = 1;
            }
            Ok(Forked::Parent(_)) => children += 1,
            Err(Error::Again) => break,
            Err(e) => {
                println!("fork: bomb: fork failed with {e:?}, not Again");
                total |= BOMB_FAILED;
                break;
            }
        }
    }
    for _ in 0..children {
        match wait_any() {
            Ok((_, status)) => total = (total + (status & !BOMB_FAILED)) | (status & BOMB_FAILED),
            Err(e) => {
                println!("fork: bomb: wait failed with {e:?}");
                total |= BOMB_FAILED;
            }
        }
    }
    let last = wait_any();
    if last != Err(Error::NoChild) {
        println!("fork: bomb: a wait after the last child gave {last:?}, not NoChild");
        total |= BOMB_FAILED;
    }
    if !top {
        sys::exit(total);
    }
    total
}

/// Microseconds from a fork call to its child running (the child measures, on its copy of
/// the start time, and exits with it).
fn fork_latency_us() -> Result<i64, &'static str> {
    let start = black_box(sys::now_ns());
    match sys::fork().map_err(|_| "fork failed")? {
        Forked::Child => sys::exit(((sys::now_ns() - start) / 1000) as i64),
        Forked::Parent(pid) => sys::wait(pid).map_err(|_| "wait failed"),
    }
}

fn round(heap: &mut [u64], n: u64) -> Result<(), &'static str> {
    copy_on_write(heap, n)?;
    wait_any_children()?;
    no_hang()
}

fn main(arg: u64) -> i64 {
    if arg >= STALE_ARG {
        return fresh_area_user(arg);
    }
    let heap: &'static mut [u64] = Box::leak(alloc::vec![0u64; WORDS].into_boxed_slice());
    // The first round touches every page and heap block the checks use, so the second one
    // allocates nothing that stays: the free-frame count must come back exactly.
    if let Err(e) = round(heap, 0) {
        println!("fork: FAILED: {e}");
        return 1;
    }
    if let Err(e) = no_stale_translations() {
        println!("fork: FAILED: {e}");
        return 1;
    }
    let latency = fork_latency_us();
    let null_start = sys::now_ns();
    sys::null();
    let null_us = (sys::now_ns() - null_start) / 1000;
    let free_before = sys::info(Info::FreeFrames);
    if let Err(e) = round(heap, 1) {
        println!("fork: FAILED: {e}");
        return 1;
    }
    let processes = bomb();
    if processes & BOMB_FAILED != 0 {
        println!("fork: FAILED: a fork-bomb process saw an error other than Again");
        return 1;
    }
    // The limit counts every live process: init, the console server and this one at least,
    // and the bomb ends only by reaching it.
    let limit = sys::info(Info::MaxProcesses) as i64;
    if processes < limit - 8 || processes > 64 * limit {
        println!("fork: FAILED: the fork bomb made {processes} processes");
        return 1;
    }
    // The system carries on: forking works again.
    let again = match sys::fork() {
        Ok(Forked::Child) => sys::exit(5),
        Ok(Forked::Parent(pid)) => sys::wait(pid),
        Err(e) => Err(e),
    };
    if again != Ok(5) {
        println!("fork: FAILED: fork after the bomb: {again:?}");
        return 1;
    }
    // Every frame the children took came back. (Not exact equality: processes that exited
    // before may still be returning theirs, e.g. a dead dispatcher left in an idle CPU's run
    // queue; nothing else allocates meanwhile, so a leak shows as fewer free frames.)
    let free_after = sys::info(Info::FreeFrames);
    if free_after < free_before {
        println!("fork: FAILED: {free_before} free frames before the children, {free_after} after");
        return 1;
    }
    println!(
        "fork: ok (copy on write, wait-any, no-hang, no stale translations, fork bomb of {processes} processes ended \
         by the limit of {limit}, all frames returned; fork to child running {} us, null call {null_us} us)",
        latency.unwrap_or(-1)
    );
    0
}
