//! Protected procedure calls (K42's PPC): a client's call runs the server's code on the same
//! CPU, in the caller's turn, on the server's PPC dispatcher for that CPU; no thread or message
//! queue in between. Arguments and results travel in registers; bulk data in the caller's
//! PPC buffer page, which the kernel maps into the server's window for the call. A server has
//! one PPC dispatcher per CPU, so clients on every CPU are served at once; callers that find
//! it busy (its current call was preempted) wait their turn and then re-issue the call, or,
//! if they take upcalls, run other threads until told to retry. A handler may call other
//! servers (nested PPC), carrying its CPU's nested buffer; such a call to a busy handler fails
//! with `Busy` instead of waiting, so a cycle of servers calling each other cannot deadlock.
//!
//! Asynchronous messages go to a dispatcher's queue, set a soft-interrupt bit and never block.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use k42_guest_lib::kabi::{self, Message, Sys};
use spin::Mutex;

use crate::arch::idt::TrapFrame;
use crate::proc::{self, BlockReason, Dispatcher, DispatcherKind, Process, RunState};
use crate::sched;

static NAMES: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Exports `process` as the server `name` with PPC entry point `entry`.
pub fn export(process: &Arc<Process>, name: String, entry: u64) -> Result<(), kabi::Error> {
    if !kabi::user_range_ok(entry, 1) || name.is_empty() {
        return Err(kabi::Error::Invalid);
    }
    let mut names = NAMES.lock();
    if names.contains_key(&name) {
        return Err(kabi::Error::Busy);
    }
    if process
        .ppc_entry
        .compare_exchange(0, entry, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(kabi::Error::Busy);
    }
    names.insert(name, process.pid);
    Ok(())
}

/// Removes `process`'s exported name (at exit).
pub fn unexport(process: &Arc<Process>) {
    NAMES.lock().retain(|_, pid| *pid != process.pid);
}

/// The pid of the server exported as `name`.
pub fn lookup(name: &str) -> Option<u64> {
    NAMES.lock().get(name).copied()
}

/// Where a PPC call's frame resumes when it is re-issued: the start of the entry stub.
fn restart_address() -> u64 {
    kabi::ENTRY_PAGE
}

/// `ppc_call(server, a0..a3)` from `client` (the current dispatcher), whose registers are in
/// `frame`. On success the server's PPC dispatcher runs next (hand-off); the client resumes
/// when the server returns.
pub fn call(frame: &mut TrapFrame, client: Arc<Dispatcher>) -> Result<(), kabi::Error> {
    let server_pid = frame.rdi;
    let server = proc::process(server_pid).ok_or(kabi::Error::NotFound)?;
    let entry = server.ppc_entry.load(Ordering::Acquire);
    if entry == 0 || server.exiting.load(Ordering::Acquire) {
        return Err(kabi::Error::NotFound);
    }
    let cpu = client.cpu;
    let buffer = proc::ppc_buffer_of(&client)?;
    let target = proc::ppc_dispatcher(&server, cpu)?;
    let mut state = target.state.lock();
    match state.run {
        RunState::Idle => {}
        RunState::Dead => return Err(kabi::Error::NotFound),
        // A nested call never waits: the busy handler may be waiting for this one.
        _ if client.kind == DispatcherKind::Ppc => return Err(kabi::Error::Busy),
        _ => {
            // Busy. The call is to be re-issued from the start of the entry stub. A client
            // that takes upcalls runs another of its threads meanwhile and is told when to
            // retry; any other is queued (blocked) and re-issues the call when its turn comes.
            frame.rip = restart_address();
            frame.rax = Sys::PpcCall as u64;
            if crate::upcall::blocked(&client, frame) {
                state.retry.push(client);
            } else {
                drop(state);
                sched::block_current(BlockReason::PpcQueue);
                target.state.lock().waiting.push_back(client);
            }
            return Ok(());
        }
    }
    // Map the client's buffer into the server's window on this CPU.
    {
        let mut guard = server.aspace.lock();
        let space = guard.as_mut().ok_or(kabi::Error::NotFound)?;
        space.map_window(kabi::ppc_window(cpu), buffer)?;
    }
    state.frame = proc::user_frame(
        entry,
        kabi::ppc_stack_top(cpu),
        client.process.pid,
        frame.rsi,
    );
    state.frame.rdx = frame.rdx;
    state.frame.rcx = frame.r10;
    state.frame.r8 = frame.r8;
    state.frame.r9 = cpu as u64;
    state.frame.rax = kabi::ppc_window(cpu);
    state.serving = Some(client.clone());
    drop(state);
    sched::block_current_for_hand_off(BlockReason::PpcReply);
    sched::hand_off(frame, target);
    Ok(())
}

/// `ppc_return(r0, r1)` from a PPC dispatcher (`server_side`, current): the client resumes
/// with the results; the next waiting client, if any, is let in.
pub fn ret(frame: &mut TrapFrame, server_side: Arc<Dispatcher>) -> Result<(), kabi::Error> {
    let (client, next, retry) = {
        let mut state = server_side.state.lock();
        let Some(client) = state.serving.take() else {
            return Err(kabi::Error::Invalid);
        };
        state.run = RunState::Idle;
        (
            client,
            state.waiting.pop_front(),
            core::mem::take(&mut state.retry),
        )
    };
    for d in &retry {
        crate::upcall::retry(d);
    }
    if let Some(space) = server_side.process.aspace.lock().as_mut() {
        space.unmap_page(kabi::ppc_window(server_side.cpu));
    }
    if let Some(next) = next {
        sched::wake(&next, BlockReason::PpcQueue, Sys::PpcCall as u64, None);
    }
    let resumed = {
        let mut state = client.state.lock();
        if state.run == RunState::Blocked(BlockReason::PpcReply) {
            state.pending_return = Some((frame.rdi, Some(frame.rsi)));
            true
        } else {
            false
        }
    };
    if resumed {
        sched::hand_off(frame, client);
    } else {
        // The client died meanwhile: nothing to return to.
        sched::block_current(BlockReason::PpcReply);
    }
    Ok(())
}

/// `send(server, w0, w1, w2)`: queues a message for the server's dispatcher on `cpu` (or its
/// first) and wakes it.
pub fn send(
    sender: &Arc<Process>,
    server_pid: u64,
    words: [u64; 3],
    cpu: usize,
) -> Result<(), kabi::Error> {
    let message = Message {
        sender: sender.pid,
        words,
    };
    deliver(server_pid, message, cpu, true)
}

/// Queues `message` for process `pid`'s dispatcher on `cpu` (or its first) and wakes it.
/// `bounded`: refuse (`Again`) when [`proc::MESSAGE_QUEUE_MAX`] messages wait; the kernel's
/// own messages, which it bounds itself, are always queued.
pub fn deliver(pid: u64, message: Message, cpu: usize, bounded: bool) -> Result<(), kabi::Error> {
    let server = proc::process(pid).ok_or(kabi::Error::NotFound)?;
    let target = {
        let list = server.dispatchers.lock();
        list.iter()
            .find(|d| d.cpu == cpu)
            .or_else(|| list.first())
            .cloned()
            .ok_or(kabi::Error::NotFound)?
    };
    {
        let mut state = target.state.lock();
        if bounded && state.messages.len() >= proc::MESSAGE_QUEUE_MAX {
            return Err(kabi::Error::Again);
        }
        state.messages.push_back(message);
    }
    sched::post_soft_interrupt(&target, kabi::SOFT_INTERRUPT_MESSAGE);
    Ok(())
}

/// Takes the oldest message of `d`.
pub fn receive(d: &Arc<Dispatcher>) -> Option<Message> {
    d.state.lock().messages.pop_front()
}
