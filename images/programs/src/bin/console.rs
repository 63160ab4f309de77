//! The console server: owns the console (spawned with the console right). Other processes
//! print through it (`CONSOLE_OP_WRITE`, `a0` bytes in the caller's buffer) and read what is
//! typed into k42vm (`CONSOLE_OP_READ`): a reader that finds no input is remembered and woken
//! with `CONSOLE_WAKE_SOFT_INTERRUPT` when the kernel reports input, then asks again. As a
//! terminal in canonical mode does, one read returns at most one line; the rest waits here.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use k42_rt::kabi;
use k42_rt::sys::{self, PpcReply};
use spin::Mutex;

k42_rt::entry!(main);

/// The bit the kernel posts to this server's dispatcher 0 when console input arrives.
const INPUT_ARRIVED: u64 = 1;

static WRITES: AtomicU64 = AtomicU64::new(0);
/// Processes waiting for input (woken all at once; whoever asks first gets it).
static READERS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Input taken from the kernel and not yet read (what follows the line a reader got).
static PENDING: Mutex<VecDeque<u8>> = Mutex::new(VecDeque::new());
/// Bytes taken from the kernel at a time.
const CHUNK: usize = 256;

fn reply(r0: u64, r1: u64) -> PpcReply {
    PpcReply { r0, r1 }
}

fn write(len: u64, cpu: u64) -> PpcReply {
    if len > kabi::PAGE_SIZE {
        return reply(1, 0);
    }
    let window = kabi::ppc_window(cpu as usize) as *const u8;
    // SAFETY: during a call the kernel maps the caller's PPC buffer (one page) at this CPU's
    // window; `len` is at most a page.
    let bytes = unsafe { core::slice::from_raw_parts(window, len as usize) };
    WRITES.fetch_add(1, Ordering::Relaxed);
    match sys::console_write(bytes) {
        Ok(n) => reply(0, n as u64),
        Err(e) => reply(2, e as i64 as u64),
    }
}

fn read(client: u64, len: u64, cpu: u64) -> PpcReply {
    if len > kabi::PAGE_SIZE {
        return reply(1, 0);
    }
    // Held across the read and the registration, so the main loop cannot wake the readers
    // between the kernel arming the notification and this reader being on the list.
    let mut readers = READERS.lock();
    let mut pending = PENDING.lock();
    if pending.is_empty() {
        let mut chunk = [0u8; CHUNK];
        match sys::console_read(&mut chunk, INPUT_ARRIVED) {
            Ok(0) => {
                if !readers.contains(&client) {
                    readers.push(client);
                }
                return reply(0, 0);
            }
            Ok(n) => pending.extend(&chunk[..n]),
            Err(kabi::Error::Ended) => return reply(k42_rt::CONSOLE_INPUT_ENDED, 0),
            Err(e) => return reply(2, e as i64 as u64),
        }
    }
    if len == 0 {
        return reply(0, pending.len() as u64);
    }
    let line = pending
        .iter()
        .position(|&b| b == b'\n')
        .map_or(pending.len(), |newline| newline + 1);
    let n = line.min(len as usize);
    let window = kabi::ppc_window(cpu as usize) as *mut u8;
    // SAFETY: as in `write`; the caller's buffer is mapped writable for the call and `n` is at
    // most `len`, at most a page.
    let out = unsafe { core::slice::from_raw_parts_mut(window, n) };
    for (slot, byte) in out.iter_mut().zip(pending.drain(..n)) {
        *slot = byte;
    }
    reply(0, n as u64)
}

extern "C" fn serve(client: u64, op: u64, len: u64, _a2: u64, _a3: u64, cpu: u64) -> PpcReply {
    match op {
        k42_rt::CONSOLE_OP_WRITE => write(len, cpu),
        k42_rt::CONSOLE_OP_READ => read(client, len, cpu),
        _ => reply(1, 0),
    }
}

fn main(_arg: u64) -> i64 {
    if let Err(e) = sys::ppc_serve("console", serve) {
        let _ = sys::console_write(b"console: cannot export the console server\n");
        return e as i64;
    }
    // The calls run on PPC dispatchers; this one wakes readers when input arrives.
    loop {
        if sys::block(0) & INPUT_ARRIVED != 0 {
            let waiting = core::mem::take(&mut *READERS.lock());
            for pid in waiting {
                // A reader that has gone meanwhile is no error of ours.
                let _ = sys::soft_interrupt(pid, 0, k42_rt::CONSOLE_WAKE_SOFT_INTERRUPT);
            }
        }
    }
}
