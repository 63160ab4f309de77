//! A key-value server called by PPC from clients on every CPU at once. It also counts the calls
//! it served per client, so clients can check that none was lost or misrouted.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;

use k42_programs::kv;
use k42_rt::kabi;
use k42_rt::sys::{self, PpcReply};
use spin::Mutex;

k42_rt::entry!(main);

static STORE: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());
static CALLS: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());

extern "C" fn serve(client: u64, op: u64, a1: u64, a2: u64, _a3: u64, cpu: u64) -> PpcReply {
    *CALLS.lock().entry(client).or_insert(0) += 1;
    match op {
        kv::PUT => {
            let old = STORE.lock().insert(a1, a2).unwrap_or(0);
            PpcReply { r0: 0, r1: old }
        }
        kv::GET => match STORE.lock().get(&a1) {
            Some(&v) => PpcReply { r0: 1, r1: v },
            None => PpcReply { r0: 0, r1: 0 },
        },
        kv::CALLS => PpcReply {
            r0: CALLS.lock().get(&a1).copied().unwrap_or(0),
            r1: 0,
        },
        kv::SUM => {
            let len = a1.min(kabi::PAGE_SIZE) as usize;
            // SAFETY: the caller's PPC buffer is mapped at this CPU's window during the call.
            let bytes = unsafe {
                core::slice::from_raw_parts(kabi::ppc_window(cpu as usize) as *const u8, len)
            };
            PpcReply {
                r0: bytes.iter().map(|&b| u64::from(b)).sum(),
                r1: 0,
            }
        }
        _ => PpcReply {
            r0: kv::UNKNOWN,
            r1: 0,
        },
    }
}

fn main(_arg: u64) -> i64 {
    if let Err(e) = sys::ppc_serve("kv", serve) {
        k42_rt::println!("kv: cannot export: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
