//! The console server: owns the console (spawned with the console right) and prints what
//! other processes send it by PPC (`CONSOLE_OP_WRITE`, `a0` bytes in the caller's buffer).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use k42_rt::kabi;
use k42_rt::sys::{self, PpcReply};

k42_rt::entry!(main);

static WRITES: AtomicU64 = AtomicU64::new(0);

extern "C" fn serve(_client: u64, op: u64, len: u64, _a2: u64, _a3: u64, cpu: u64) -> PpcReply {
    if op != k42_rt::CONSOLE_OP_WRITE || len > kabi::PAGE_SIZE {
        return PpcReply { r0: 1, r1: 0 };
    }
    let window = kabi::ppc_window(cpu as usize) as *const u8;
    // SAFETY: during a call the kernel maps the caller's PPC buffer (one page) at this CPU's
    // window; `len` is at most a page.
    let bytes = unsafe { core::slice::from_raw_parts(window, len as usize) };
    WRITES.fetch_add(1, Ordering::Relaxed);
    match sys::console_write(bytes) {
        Ok(n) => PpcReply {
            r0: 0,
            r1: n as u64,
        },
        Err(e) => PpcReply {
            r0: 2,
            r1: e as i64 as u64,
        },
    }
}

fn main(_arg: u64) -> i64 {
    if let Err(e) = sys::ppc_serve("console", serve) {
        let _ = sys::console_write(b"console: cannot export the console server\n");
        return e as i64;
    }
    // The calls run on PPC dispatchers; this one has nothing left to do but stay alive.
    loop {
        sys::block(0);
    }
}
