//! A server whose handler calls another server (nested PPC): exported as `relay`, it forwards
//! requests to `kv` from inside its own PPC handler, carrying data in its CPU's nested buffer,
//! and tries the two calls a nested call must refuse rather than wait for (itself, and a
//! server that does not exist). See `k42_programs::relay` for the operations.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use k42_programs::{kv, relay};
use k42_rt::kabi::{self, Error};
use k42_rt::sys::{self, PpcReply};

k42_rt::entry!(main);

/// `kv`'s pid, looked up on first use (0: not yet).
static KV: AtomicU64 = AtomicU64::new(0);

fn kv_server() -> Result<u64, Error> {
    match KV.load(Ordering::Acquire) {
        0 => {
            let pid = sys::ppc_lookup("kv")?;
            KV.store(pid, Ordering::Release);
            Ok(pid)
        }
        pid => Ok(pid),
    }
}

fn reply(result: Result<(u64, u64), Error>) -> PpcReply {
    match result {
        Ok((r0, r1)) => PpcReply { r0, r1 },
        Err(e) => PpcReply {
            r0: relay::FAILED,
            r1: (-(e as i64)) as u64,
        },
    }
}

extern "C" fn serve(_client: u64, op: u64, a1: u64, _a2: u64, _a3: u64, cpu: u64) -> PpcReply {
    let cpu = cpu as usize;
    reply(match op {
        relay::GET => kv_server().and_then(|kv| sys::ppc_call(kv, [kv::GET, a1, 0, 0])),
        relay::SUM => {
            let len = a1.min(kabi::PAGE_SIZE) as usize;
            // SAFETY: during this call the caller's buffer is mapped at this CPU's window and
            // this handler's own nested buffer at its place; both are pages, `len` fits.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    kabi::ppc_window(cpu) as *const u8,
                    kabi::ppc_nested_buffer(cpu) as *mut u8,
                    len,
                );
            }
            kv_server().and_then(|kv| sys::ppc_call(kv, [kv::SUM, len as u64, 0, 0]))
        }
        relay::CALL_SELF => sys::ppc_call(k42_rt::pid(), [relay::GET, 0, 0, 0]).map(|_| (0, 0)),
        relay::CALL_MISSING => sys::ppc_call(u64::MAX >> 1, [0; 4]).map(|_| (0, 0)),
        _ => Ok((kv::UNKNOWN, 0)),
    })
}

fn main(_arg: u64) -> i64 {
    if let Err(e) = sys::ppc_serve("relay", serve) {
        k42_rt::println!("relay: cannot export: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
