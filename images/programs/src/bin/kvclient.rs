//! A client of the key-value server with a dispatcher on every CPU: each puts and gets its own
//! keys by PPC and checks every answer; at the end the server's count of calls for this client
//! must equal the calls made (none lost, none misrouted). Argument: calls per dispatcher.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use k42_programs::{kv, start_workers, wait_until};
use k42_rt::{println, sys};

k42_rt::entry!(main);

static SERVER: AtomicU64 = AtomicU64::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static FINISHED: AtomicU64 = AtomicU64::new(0);

fn call(args: [u64; 4]) -> Option<(u64, u64)> {
    CALLS.fetch_add(1, Ordering::Relaxed);
    sys::ppc_call(SERVER.load(Ordering::Relaxed), args).ok()
}

/// Puts and gets `rounds` keys unique to (this process, `cpu`), checking each answer.
fn work(cpu: u64) {
    let me = k42_rt::pid();
    let rounds = ROUNDS.load(Ordering::Relaxed);
    for i in 0..rounds {
        let key = (me << 40) | (cpu << 24) | i;
        let value = key ^ 0x5555_aaaa;
        let put = call([kv::PUT, key, value, 0]);
        let got = call([kv::GET, key, 0, 0]);
        let wrong = put != Some((0, 0)) || got != Some((1, value));
        if wrong && ERRORS.fetch_add(1, Ordering::Relaxed) < 5 {
            println!("kvclient {me} cpu {cpu}: key {key:#x}: put {put:?}, get {got:?}");
        }
    }
    // Bulk data through the PPC buffer: the server sums the bytes.
    let buffer = sys::ppc_buffer(k42_rt::current_dispatcher());
    for n in [0usize, 1, 100, 4096] {
        // SAFETY: this dispatcher's PPC buffer is mapped writable; only this dispatcher uses it.
        let bytes = unsafe { core::slice::from_raw_parts_mut(buffer, 4096) };
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u64 + cpu) as u8;
        }
        let want: u64 = bytes[..n].iter().map(|&b| u64::from(b)).sum();
        if call([kv::SUM, n as u64, 0, 0]) != Some((want, 0)) {
            ERRORS.fetch_add(1, Ordering::Relaxed);
            println!("kvclient {me} cpu {cpu}: sum of {n} buffer bytes wrong");
        }
    }
}

extern "C" fn worker(cpu: u64) -> ! {
    work(cpu);
    FINISHED.fetch_add(1, Ordering::AcqRel);
    loop {
        sys::block(0);
    }
}

fn main(rounds: u64) -> i64 {
    let rounds = if rounds == 0 { 200 } else { rounds };
    ROUNDS.store(rounds, Ordering::Relaxed);
    let server = match k42_rt::lookup_retrying("kv") {
        Ok(pid) => pid,
        Err(e) => {
            println!("kvclient: no kv server: {e:?}");
            return 1;
        }
    };
    SERVER.store(server, Ordering::Relaxed);
    let workers = match start_workers(worker) {
        Ok(n) => n as u64,
        Err(e) => {
            println!("kvclient: cannot start dispatchers: {e:?}");
            return 1;
        }
    };
    work(k42_rt::current_cpu() as u64);
    if !wait_until(200, 60_000, || FINISHED.load(Ordering::Acquire) == workers) {
        println!("kvclient: workers did not finish");
        return 1;
    }
    let made = CALLS.load(Ordering::Acquire);
    let served = sys::ppc_call(server, [kv::CALLS, k42_rt::pid(), 0, 0]).map(|r| r.0);
    let errors = ERRORS.load(Ordering::Acquire);
    println!(
        "kvclient {}: {} dispatchers, {} calls made, server counted {:?}, {} errors",
        k42_rt::pid(),
        workers + 1,
        made,
        served,
        errors
    );
    // The server counts the CALLS query itself too.
    if errors == 0 && served == Ok(made + 1) {
        0
    } else {
        1
    }
}
