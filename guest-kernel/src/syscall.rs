//! The K42 system calls ([`kabi::Sys`]): decoded from the trap frame, every argument checked;
//! a bad argument or pointer is an error return, never a kernel fault.

use alloc::string::String;
use alloc::sync::Arc;

use k42_guest_lib::frames::FRAME_SIZE;
use k42_guest_lib::kabi::{self, Error, Info, Message, Prot, SpawnFlags, Sys, WaitFlags};

use crate::arch::idt::TrapFrame;
use crate::mm::aspace::{Backing, Region};
use crate::proc::{self, BlockReason, Dispatcher, DispatcherKind};
use crate::{device, memobj, platform, ppc, sched};

type SysResult = Result<u64, Error>;

/// Handles the system call in `frame` (number in `rax`, arguments in `rdi, rsi, rdx, r10, r8,
/// r9`); the result goes back in `rax` (negative: an error).
pub fn handle(frame: &mut TrapFrame) {
    let Some(current) = sched::current() else {
        return;
    };
    let result = match Sys::from_number(frame.rax) {
        Some(call) => dispatch(call, frame, current),
        None => Err(Error::NoSys),
    };
    match result {
        Ok(Some(value)) => frame.rax = value,
        Ok(None) => {}
        Err(e) => frame.rax = e as i64 as u64,
    }
}

/// `Ok(None)`: the call set the frame itself (or switched dispatchers).
fn dispatch(call: Sys, frame: &mut TrapFrame, me: Arc<Dispatcher>) -> Result<Option<u64>, Error> {
    let (a0, a1, a2, a3) = (frame.rdi, frame.rsi, frame.rdx, frame.r10);
    let value = match call {
        Sys::Null => Ok(0),
        Sys::Exit => {
            proc::exit(&me.process, a0 as i64);
            return Ok(None);
        }
        Sys::ConsoleWrite => console_write(&me, a0, a1),
        Sys::ConsoleRead => crate::console_input::read(&me, a0, a1, a2),
        Sys::Yield => {
            sched::request_resched();
            Ok(0)
        }
        Sys::Block => block(&me, a0),
        Sys::SoftInterrupt => soft_interrupt(&me, a0, a1, a2),
        Sys::Map => map(&me, a0, a1, a2),
        Sys::Unmap => unmap(&me, a0, a1),
        Sys::Protect => protect(&me, a0, a1, a2),
        Sys::Spawn => spawn(&me, a0, a1, a2, a3),
        Sys::Wait => {
            if a1 & !WaitFlags::ALL != 0 {
                return Err(Error::Invalid);
            }
            // Blocked first: a child exiting on another CPU right after `wait_for` registers
            // this dispatcher then finds it blocked and wakes it.
            sched::block_current(BlockReason::Child);
            match proc::wait_for(&me, a0, a1 & WaitFlags::NO_HANG != 0) {
                Ok(Some((pid, status))) => {
                    sched::unblock_current();
                    frame.rdx = pid;
                    Ok(status as u64)
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    sched::unblock_current();
                    Err(e)
                }
            }
        }
        Sys::DispatcherCreate => {
            proc::create_dispatcher(&me.process, a0 as usize, a1, a2, a3).map(|i| i as u64)
        }
        Sys::PpcExport => {
            let name = user_string(&me, a0, a1)?;
            ppc::export(&me.process, name, a2).map(|_| 0)
        }
        Sys::PpcLookup => {
            let name = user_string(&me, a0, a1)?;
            ppc::lookup(&name).ok_or(Error::NotFound)
        }
        Sys::PpcCall => {
            ppc::call(frame, me)?;
            return Ok(None);
        }
        Sys::PpcReturn => {
            if me.kind != DispatcherKind::Ppc {
                return Err(Error::Invalid);
            }
            ppc::ret(frame, me)?;
            return Ok(None);
        }
        Sys::Send => ppc::send(&me.process, a0, [a1, a2, a3], me.cpu).map(|_| 0),
        Sys::Receive => receive(&me, a0),
        Sys::MemobjCreate => memobj::create(&me.process, a0, a1),
        Sys::MemobjFill => memobj::fill(&me.process, a0, a1, a2, a3).map(|_| 0),
        Sys::MemobjMap => memobj::map(&me.process, a0, a1, a2).map(|_| 0),
        Sys::MemobjGrant => memobj::grant(&me.process, a0, a1).map(|_| 0),
        Sys::MemobjUnmap => memobj::unmap(&me.process, a0).map(|_| 0),
        Sys::DispatcherSchedule => proc::set_schedule(&me.process, a0, a1, a2).map(|_| 0),
        Sys::Tick => {
            let valid = a0 == 0 || (kabi::MIN_TICK_NS..=kabi::MAX_TICK_NS).contains(&a0);
            if !valid || me.kind == DispatcherKind::Ppc {
                return Err(Error::Invalid);
            }
            sched::set_tick(&me, a0);
            Ok(0)
        }
        Sys::Info => info(&me, a0),
        Sys::ProcessGroup => proc::set_group(&me.process, a0, a1, a2).map(|_| 0),
        Sys::ProcessCommand => proc::set_command(&me.process, a0, a1).map(|_| 0),
        Sys::ProcessList => proc::list(&me.process, a0, a1),
        Sys::LinuxEntry => linux_entry(&me, a0),
        Sys::LinuxRewrite => linux_rewrite(&me, a0),
        Sys::Fork => proc::fork(&me, frame).map(|child| child.pid),
        Sys::DeviceList => device::list(&me.process, a0, a1),
        Sys::DeviceMap => device::map(&me.process, a0, a1),
        Sys::DeviceIrq => device::bind_irq(&me, a0, a1),
        Sys::MemobjPhys => {
            if me.process.flags & SpawnFlags::DEVICES == 0 {
                return Err(Error::NotPermitted);
            }
            memobj::phys(&me.process, a0, a1)
        }
    };
    value.map(Some)
}

fn user_string(me: &Arc<Dispatcher>, ptr: u64, len: u64) -> Result<String, Error> {
    if len == 0 || len as usize > kabi::NAME_MAX {
        return Err(Error::Invalid);
    }
    let mut buf = [0u8; kabi::NAME_MAX];
    let out = &mut buf[..len as usize];
    me.process
        .aspace
        .lock()
        .as_mut()
        .ok_or(Error::Fault)?
        .read_user(ptr, out)?;
    core::str::from_utf8(out)
        .map(String::from)
        .map_err(|_| Error::Invalid)
}

fn console_write(me: &Arc<Dispatcher>, ptr: u64, len: u64) -> SysResult {
    if me.process.flags & SpawnFlags::CONSOLE == 0 {
        return Err(Error::NotPermitted);
    }
    if len > 1 << 20 {
        return Err(Error::Invalid);
    }
    let ranges = me
        .process
        .aspace
        .lock()
        .as_mut()
        .ok_or(Error::Fault)?
        .user_frames(ptr, len, false)?;
    for (phys, n) in ranges {
        platform::console_write(crate::mm::phys_slice(phys, n as usize));
    }
    Ok(len)
}

fn block(me: &Arc<Dispatcher>, deadline_ns: u64) -> SysResult {
    let seq = sched::block_current(BlockReason::SoftInterrupt);
    let pending = me.take_soft_interrupts();
    if pending != 0 {
        sched::unblock_current();
        return Ok(pending);
    }
    if deadline_ns != 0 {
        let ticks = (u128::from(deadline_ns) * u128::from(platform::tsc_khz()) / 1_000_000)
            .min(u128::from(u64::MAX)) as u64;
        sched::sleep_until(ticks, seq);
    }
    // Returns through `wake` (the pending bits, or 0 at the deadline).
    Ok(0)
}

fn soft_interrupt(me: &Arc<Dispatcher>, pid: u64, index: u64, bits: u64) -> SysResult {
    let process = proc::process(pid).ok_or(Error::NotFound)?;
    // Servers wake the clients they serve (a reader waiting on a pipe, say), whoever
    // started them.
    let server = me
        .process
        .ppc_entry
        .load(core::sync::atomic::Ordering::Acquire)
        != 0;
    // Linux processes signal one another as Linux lets processes of one user do (all run as
    // root here): a child its parent, a sibling its group.
    let linux = |p: &proc::Process| p.flags & kabi::SpawnFlags::LINUX != 0;
    let both_linux = linux(&process) && linux(&me.process);
    if process.pid != me.process.pid && process.parent != me.process.pid && !server && !both_linux {
        return Err(Error::NotPermitted);
    }
    let target = process
        .dispatchers
        .lock()
        .get(index as usize)
        .cloned()
        .ok_or(Error::NotFound)?;
    if bits == 0 {
        return Err(Error::Invalid);
    }
    sched::post_soft_interrupt(&target, bits);
    Ok(0)
}

fn page_range(addr: u64, len: u64) -> Result<(u64, u64), Error> {
    if !addr.is_multiple_of(FRAME_SIZE) || len == 0 || !kabi::user_range_ok(addr, len) {
        return Err(Error::Invalid);
    }
    let end = addr + len.div_ceil(FRAME_SIZE) * FRAME_SIZE;
    if end > kabi::USER_END {
        return Err(Error::Invalid);
    }
    Ok((addr, end))
}

/// Checks a [`Prot`] argument.
fn prot_arg(prot: u64) -> Result<u64, Error> {
    if prot & !(Prot::READ | Prot::WRITE | Prot::EXEC) != 0 {
        return Err(Error::Invalid);
    }
    Ok(prot)
}

fn map(me: &Arc<Dispatcher>, addr: u64, len: u64, prot: u64) -> SysResult {
    let (start, end) = page_range(addr, len)?;
    let prot = prot_arg(prot)?;
    me.process
        .aspace
        .lock()
        .as_mut()
        .ok_or(Error::Fault)?
        .add_region(Region {
            start,
            end,
            prot,
            backing: Backing::Anonymous,
        })?;
    Ok(0)
}

fn unmap(me: &Arc<Dispatcher>, addr: u64, len: u64) -> SysResult {
    let (start, end) = page_range(addr, len)?;
    let mut freed = alloc::vec::Vec::new();
    me.process
        .aspace
        .lock()
        .as_mut()
        .ok_or(Error::Fault)?
        .remove_range(start, end, &mut freed)?;
    // Other CPUs running this process may still hold TLB entries for these pages.
    crate::tlb::finish_change(&me.process, start..end, &freed);
    Ok(0)
}

fn protect(me: &Arc<Dispatcher>, addr: u64, len: u64, prot: u64) -> SysResult {
    let (start, end) = page_range(addr, len)?;
    let prot = prot_arg(prot)?;
    me.process
        .aspace
        .lock()
        .as_mut()
        .ok_or(Error::Fault)?
        .protect(start, end, prot)?;
    crate::tlb::finish_change(&me.process, start..end, &[]);
    Ok(0)
}

fn spawn(me: &Arc<Dispatcher>, path_ptr: u64, path_len: u64, arg: u64, flags: u64) -> SysResult {
    let path = user_string(me, path_ptr, path_len)?;
    if flags & !SpawnFlags::ALL != 0 {
        return Err(Error::Invalid);
    }
    // The console and device rights are passed on only by a holder.
    for right in [SpawnFlags::CONSOLE, SpawnFlags::DEVICES] {
        if flags & right != 0 && me.process.flags & right == 0 {
            return Err(Error::NotPermitted);
        }
    }
    let argv = if flags & SpawnFlags::LINUX != 0 && arg != 0 {
        Some(linux_args(me, arg)?)
    } else {
        None
    };
    let child = proc::spawn(&path, arg, flags, argv, me.process.pid, me.cpu)?;
    Ok(child.pid)
}

/// The argv blob a [`kabi::LinuxArgs`] at `at` points to, checked.
fn linux_args(me: &Arc<Dispatcher>, at: u64) -> Result<alloc::vec::Vec<u8>, Error> {
    let mut header = [0u8; 16];
    let mut guard = me.process.aspace.lock();
    let space = guard.as_mut().ok_or(Error::NotFound)?;
    space.read_user(at, &mut header)?;
    let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or([0; 8]));
    let (ptr, len) = (word(0), word(8));
    if len == 0 || len > kabi::LINUX_ARGS_MAX {
        return Err(Error::Invalid);
    }
    let mut blob = alloc::vec![0u8; len as usize];
    space.read_user(ptr, &mut blob)?;
    kabi::split_linux_args(&blob).ok_or(Error::Invalid)?;
    Ok(blob)
}

fn linux_entry(me: &Arc<Dispatcher>, entry: u64) -> SysResult {
    if me.process.flags & SpawnFlags::LINUX == 0 {
        return Err(Error::NotPermitted);
    }
    if !kabi::LINUX_PERSONALITY_AREA.contains(&entry) {
        return Err(Error::Invalid);
    }
    me.process
        .linux_entry
        .store(entry, core::sync::atomic::Ordering::Release);
    // The sled page's code jumps through dispatcher 0's page.
    for dispatcher in me.process.dispatchers.lock().iter() {
        crate::mm::frame_atomic(dispatcher.page, kabi::LINUX_ENTRY_OFFSET)
            .store(entry, core::sync::atomic::Ordering::Release);
    }
    crate::entry::route_linux_syscalls(entry);
    proc::map_linux_sled(&me.process).map(u64::from)
}

/// `linux_rewrite(site)`: turns the `syscall` at `site` into `call rax` (see
/// [`kabi::Sys::LinuxRewrite`]).
fn linux_rewrite(me: &Arc<Dispatcher>, site: u64) -> SysResult {
    let mut guard = me.process.aspace.lock();
    let space = guard.as_mut().ok_or(Error::NotFound)?;
    if me.process.flags & SpawnFlags::LINUX == 0
        || space.region_at(kabi::LINUX_SYSCALL_SLED).is_none()
    {
        return Err(Error::NotPermitted);
    }
    space.patch_text(site, [0x0f, 0x05], [0xff, 0xd0])?;
    drop(guard);
    // A page fork shared was copied first: the original goes once no TLB points at it.
    let page = site & !(FRAME_SIZE - 1);
    crate::tlb::finish_change(&me.process, page..page + FRAME_SIZE, &[]);
    Ok(0)
}

fn receive(me: &Arc<Dispatcher>, ptr: u64) -> SysResult {
    // The destination is checked first, so a bad pointer is reported even with nothing queued.
    me.process
        .aspace
        .lock()
        .as_mut()
        .ok_or(Error::Fault)?
        .user_frames(ptr, core::mem::size_of::<Message>() as u64, true)?;
    let message = ppc::receive(me).ok_or(Error::Again)?;
    let mut bytes = [0u8; core::mem::size_of::<Message>()];
    bytes[0..8].copy_from_slice(&message.sender.to_le_bytes());
    for (i, w) in message.words.iter().enumerate() {
        bytes[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    let written = me
        .process
        .aspace
        .lock()
        .as_mut()
        .ok_or(Error::Fault)
        .and_then(|s| s.write_user(ptr, &bytes).map_err(Error::from));
    if let Err(e) = written {
        // Not lost: put it back for a retry with a good pointer.
        me.state.lock().messages.push_front(message);
        return Err(e);
    }
    Ok(0)
}

fn info(me: &Arc<Dispatcher>, what: u64) -> SysResult {
    Ok(match Info::from_number(what).ok_or(Error::Invalid)? {
        Info::Cpus => crate::smp::online() as u64,
        Info::Pid => me.process.pid,
        Info::Cpu => me.cpu as u64,
        Info::TscKhz => platform::tsc_khz(),
        Info::Dispatcher => me.index as u64,
        Info::SpawnArg => me.process.spawn_arg,
        Info::KernelEntries => sched::entries(),
        Info::InitrdLen => proc::initrd_range().map_or(0, |(_, len)| len),
        Info::InitrdOffset => proc::initrd_range().map_or(0, |(phys, _)| phys % FRAME_SIZE),
        Info::FreeFrames => crate::mm::frames::free_count(),
        Info::MaxProcesses => proc::process_limit() as u64,
        Info::TotalFrames => crate::mm::frames::total_count(),
        Info::WallClockOffset => platform::wall_clock_offset(),
        Info::RemoteShootDowns => crate::tlb::remote_shoot_downs(),
        Info::Group => me.process.identity.lock().group,
        Info::Session => me.process.identity.lock().session,
    })
}
