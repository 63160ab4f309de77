//! Prints, then checks that bad arguments get errors (never a kernel fault).
#![no_std]
#![no_main]

use k42_rt::kabi::{self, Error, Info, Prot};
use k42_rt::{println, sys};

k42_rt::entry!(main);

fn expect(what: &str, got: Result<impl core::fmt::Debug, Error>, want: Error) -> bool {
    match got {
        Err(e) if e == want => true,
        other => {
            println!("hello: {what}: expected {want:?}, got {other:?}");
            false
        }
    }
}

fn main(_arg: u64) -> i64 {
    println!(
        "hello from user space: pid {}, cpu {}",
        k42_rt::pid(),
        k42_rt::current_cpu()
    );
    let mut ok = true;
    // A pointer into the kernel, an unmapped one, and a range running off user space.
    let kernel = unsafe { core::slice::from_raw_parts(0xffff_8000_0000_0000 as *const u8, 16) };
    ok &= expect(
        "spawn with a kernel pointer",
        sys::spawn(unsafe { core::str::from_utf8_unchecked(kernel) }, 0, 0),
        Error::Fault,
    );
    let unmapped = unsafe {
        core::str::from_utf8_unchecked(core::slice::from_raw_parts(0x7000_0000 as *const u8, 8))
    };
    ok &= expect(
        "lookup with an unmapped name",
        sys::ppc_lookup(unmapped),
        Error::Fault,
    );
    ok &= expect(
        "receive into the kernel",
        sys::receive_into(0xffff_8000_0000_1000),
        Error::Fault,
    );
    ok &= expect(
        "map over the kernel's areas",
        sys::map(0x7fff_f000_0000, 4096, Prot::READ),
        Error::Invalid,
    );
    ok &= expect(
        "map unaligned",
        sys::map(0x1234, 4096, Prot::READ),
        Error::Invalid,
    );
    ok &= expect(
        "spawn a missing program",
        sys::spawn("/bin/nonexistent", 0, 0),
        Error::NotFound,
    );
    ok &= expect(
        "spawn a non-ELF file",
        sys::spawn("/etc/motd", 0, 0),
        Error::NotExecutable,
    );
    ok &= expect("wait for a non-child", sys::wait(1), Error::NoChild);
    ok &= expect(
        "unknown system call",
        sys::check_raw(sys::raw_number(999, 0)),
        Error::NoSys,
    );
    for (what, (index, class, tickets), error) in [
        (
            "schedule: a class beyond the last",
            (0, 3, 100),
            Error::Invalid,
        ),
        ("schedule: no tickets", (0, 1, 0), Error::Invalid),
        ("schedule: too many tickets", (0, 1, 10_001), Error::Invalid),
        (
            "schedule: class 0 without the driver right",
            (0, 0, 100),
            Error::NotPermitted,
        ),
        (
            "schedule: a missing dispatcher",
            (99, 1, 100),
            Error::NotFound,
        ),
    ] {
        ok &= expect(what, sys::dispatcher_schedule(index, class, tickets), error);
    }
    if sys::dispatcher_schedule(0, 1, 100) != Ok(()) {
        println!("hello: FAILED: dispatcher_schedule with good arguments");
        ok = false;
    }
    for (what, period) in [
        ("tick period below the minimum", kabi::MIN_TICK_NS - 1),
        ("tick period above the maximum", kabi::MAX_TICK_NS + 1),
        ("tick period u64::MAX", u64::MAX),
    ] {
        ok &= expect(what, sys::tick(period), Error::Invalid);
    }
    if sys::tick(kabi::MIN_TICK_NS) != Ok(()) || sys::tick(0) != Ok(()) {
        println!("hello: FAILED: tick with good arguments");
        ok = false;
    }
    ok &= expect(
        "dispatcher on a missing CPU",
        sys::dispatcher_create(10_000, worker, 0x10_0000, 0),
        Error::Invalid,
    );
    // Demand-zero memory: map, touch, check zero, write, read back, protect read-only.
    let area = 0x0000_3000_0000_0000u64;
    if sys::map(area, 1 << 20, Prot::READ | Prot::WRITE).is_err() {
        println!("hello: map failed");
        return 1;
    }
    let words = unsafe { core::slice::from_raw_parts_mut(area as *mut u64, (1 << 20) / 8) };
    if words.iter().step_by(512).any(|&w| w != 0) {
        println!("hello: demand-zero memory is not zero");
        ok = false;
    }
    for (i, w) in words.iter_mut().enumerate().step_by(511) {
        *w = i as u64;
    }
    if words
        .iter()
        .enumerate()
        .step_by(511)
        .any(|(i, &w)| w != i as u64)
    {
        println!("hello: memory did not keep what was written");
        ok = false;
    }
    if sys::unmap(area, 1 << 20).is_err() {
        println!("hello: unmap failed");
        ok = false;
    }
    println!(
        "hello: {} cpus, {} kernel entries so far",
        sys::info(Info::Cpus),
        sys::info(Info::KernelEntries)
    );
    if ok {
        println!("hello: all checks passed");
        0
    } else {
        1
    }
}

extern "C" fn worker(_: u64) -> ! {
    sys::exit(0)
}
