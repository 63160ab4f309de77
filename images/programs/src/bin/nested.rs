//! Checks nested PPC (run by `/bin/init` once `kv` runs): calls to `/bin/relay`, whose handler
//! calls `kv` in turn, from a dispatcher on every CPU at once; data through the relay's nested
//! buffer; and the nested calls that must fail at once (`Busy` for the relay calling itself,
//! `NotFound` for a missing server). Exits 0 when every check holds.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use k42_programs::devmem::own_ppc_buffer;
use k42_programs::{kv, relay};
use k42_rt::kabi::Error;
use k42_rt::{println, sys};

k42_rt::entry!(main);

/// Keys each dispatcher puts into `kv` and reads back through the relay.
const KEYS: u64 = 50;

static KV: AtomicU64 = AtomicU64::new(0);
static RELAY: AtomicU64 = AtomicU64::new(0);
/// Dispatchers that finished their keys, and how many of those keys were wrong.
static FINISHED: AtomicU64 = AtomicU64::new(0);
static WRONG: AtomicU64 = AtomicU64::new(0);

/// Puts this dispatcher's keys into `kv` directly, then reads each back through the relay.
fn keys_through_the_relay(who: u64) {
    let (kv_pid, relay_pid) = (KV.load(Ordering::Acquire), RELAY.load(Ordering::Acquire));
    let mut wrong = 0;
    for i in 0..KEYS {
        let key = 10_000 + who * 1000 + i;
        let value = key * 3 + 1;
        let put = sys::ppc_call(kv_pid, [kv::PUT, key, value, 0]);
        let got = sys::ppc_call(relay_pid, [relay::GET, key, 0, 0]);
        if put.is_err() || got != Ok((1, value)) {
            wrong += 1;
        }
    }
    WRONG.fetch_add(wrong, Ordering::AcqRel);
    FINISHED.fetch_add(1, Ordering::AcqRel);
}

extern "C" fn worker(cpu: u64) -> ! {
    keys_through_the_relay(cpu + 1);
    loop {
        sys::block(0);
    }
}

/// A relay operation whose nested call fails: the error it reports.
fn nested_error(relay_pid: u64, op: u64) -> Option<Error> {
    match sys::ppc_call(relay_pid, [op, 0, 0, 0]) {
        Ok((relay::FAILED, code)) => Error::from_return(-(code as i64)),
        _ => None,
    }
}

fn main(_arg: u64) -> i64 {
    let Ok(kv_pid) = k42_rt::lookup_retrying("kv") else {
        println!("nested: no kv server");
        return 1;
    };
    if let Err(e) = sys::spawn("/bin/relay", 0, 0) {
        println!("nested: cannot start the relay: {e:?}");
        return 1;
    }
    let Ok(relay_pid) = k42_rt::lookup_retrying("relay") else {
        println!("nested: the relay never exported itself");
        return 1;
    };
    KV.store(kv_pid, Ordering::Release);
    RELAY.store(relay_pid, Ordering::Release);
    let mut ok = true;

    // Bytes through the relay's nested buffer.
    let buffer = own_ppc_buffer();
    for (i, b) in buffer.iter_mut().enumerate().take(1000) {
        *b = (i * 7 % 251) as u8;
    }
    let expected: u64 = (0..1000u64).map(|i| i * 7 % 251).sum();
    let sum = sys::ppc_call(relay_pid, [relay::SUM, 1000, 0, 0]);
    if sum != Ok((expected, 0)) {
        println!("nested: sum through the relay {sum:?}, expected {expected}");
        ok = false;
    }

    // Calls that must fail at once rather than wait.
    let own = nested_error(relay_pid, relay::CALL_SELF);
    let missing = nested_error(relay_pid, relay::CALL_MISSING);
    println!("nested: the relay calling itself: {own:?}; calling a missing server: {missing:?}");
    ok &= own == Some(Error::Busy) && missing == Some(Error::NotFound);

    // Keys from a dispatcher on every CPU at once.
    let workers = match k42_programs::start_workers(worker) {
        Ok(n) => n as u64,
        Err(e) => {
            println!("nested: cannot start workers: {e:?}");
            return 1;
        }
    };
    keys_through_the_relay(0);
    if !k42_programs::wait_until(100, 30_000, || {
        FINISHED.load(Ordering::Acquire) == workers + 1
    }) {
        println!("nested: the dispatchers did not finish");
        return 1;
    }
    let wrong = WRONG.load(Ordering::Acquire);
    println!(
        "nested: {} keys read through the relay from {} dispatchers, {wrong} wrong",
        KEYS * (workers + 1),
        workers + 1
    );
    ok &= wrong == 0;
    if ok {
        println!("nested: all checks passed");
        0
    } else {
        println!("nested: some checks FAILED");
        1
    }
}
