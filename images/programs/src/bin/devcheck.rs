//! Bad arguments to the device system calls, from a process holding the device right (run by
//! `/bin/drvinit` once both `blkd`s have claimed their disks): each gets its error, none hurts
//! the kernel or the drivers.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use k42_rt::kabi::{DeviceDesc, Error, Prot, Sys, MAX_DEVICES};
use k42_rt::{println, sys};

k42_rt::entry!(main);

const ADDR: u64 = 0x0000_4000_0000_0000;

static FAILURES: AtomicU64 = AtomicU64::new(0);

fn fail() {
    FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// Checks that a call failed with `want`.
fn expect(what: &str, got: Result<(), Error>, want: Error) {
    if got != Err(want) {
        println!("devcheck: {what}: got {got:?}, expected {want:?}");
        fail();
    }
}

fn main(_arg: u64) -> i64 {
    let mut list = [DeviceDesc::default(); MAX_DEVICES];
    let count = sys::device_list(&mut list).unwrap_or(0);
    if count < 2 {
        println!("devcheck: expected at least two devices, found {count}");
        return 1;
    }
    // A list written to memory that is not there, or to a kernel address.
    let bad_list = sys::raw(Sys::DeviceList, 0x10, 4, 0, 0).0;
    expect(
        "device_list to an unmapped page",
        sys::check_raw(bad_list).map(|_| ()),
        Error::Fault,
    );
    let kernel = sys::raw(Sys::DeviceList, 0xffff_8000_0000_0000, 4, 0, 0).0;
    expect(
        "device_list to a kernel address",
        sys::check_raw(kernel).map(|_| ()),
        Error::Fault,
    );
    // Devices that do not exist, addresses that are not page-aligned or not user space.
    expect(
        "device_map of device 99",
        sys::device_map(99, ADDR),
        Error::NotFound,
    );
    expect(
        "device_map of device 2^63",
        sys::device_map(1 << 63, ADDR),
        Error::NotFound,
    );
    expect(
        "device_map at an unaligned address",
        sys::device_map(0, ADDR + 8),
        Error::Invalid,
    );
    expect(
        "device_map into the kernel",
        sys::device_map(0, 0xffff_8000_0000_0000),
        Error::Invalid,
    );
    // Both disks are held by their blkd.
    expect(
        "device_map of blk0's device",
        sys::device_map(0, ADDR),
        Error::Busy,
    );
    expect(
        "device_irq of a device it does not hold",
        sys::device_irq(0, 1),
        Error::NotPermitted,
    );
    // A device no one holds (the entropy device, when there is one) can be claimed; its
    // interrupt takes no reserved or empty bit set; a pointer into it is refused by the kernel.
    if let Some(free) = (0..count.min(MAX_DEVICES)).find(|&i| list[i].device_id == 4) {
        match sys::device_map(free, ADDR) {
            Ok(()) => {
                expect(
                    "device_irq with no bits",
                    sys::device_irq(free, 0),
                    Error::Invalid,
                );
                expect(
                    "device_irq with a kernel bit",
                    sys::device_irq(free, 1 << 63),
                    Error::Invalid,
                );
                expect(
                    "mapping it twice at one address",
                    sys::device_map(free, ADDR),
                    Error::Invalid,
                );
                let into_device = sys::raw(Sys::DeviceList, ADDR, 1, 0, 0).0;
                expect(
                    "device_list into device registers",
                    sys::check_raw(into_device).map(|_| ()),
                    Error::Fault,
                );
                if let Err(e) = sys::device_irq(free, 1) {
                    println!("devcheck: device_irq of the device it holds: {e:?}");
                    fail();
                }
            }
            Err(e) => {
                println!("devcheck: the free device {free} could not be claimed: {e:?}");
                fail();
            }
        }
    }
    // Physical addresses only of the caller's own memory objects, only pages it has.
    match sys::memobj_create(2) {
        Ok(id) => {
            expect(
                "memobj_phys of page 2 of 2",
                sys::memobj_phys(id, 2).map(|_| ()),
                Error::Invalid,
            );
            expect(
                "memobj_phys of no object",
                sys::memobj_phys(1 << 40, 0).map(|_| ()),
                Error::NotFound,
            );
            match sys::memobj_phys(id, 1) {
                Ok(phys) if phys % 4096 == 0 && phys != 0 => {}
                other => {
                    println!("devcheck: memobj_phys of page 1: {other:?}");
                    fail();
                }
            }
            let _ = sys::memobj_map(id, ADDR + 0x10_0000, Prot::READ);
        }
        Err(e) => {
            println!("devcheck: memobj_create: {e:?}");
            fail();
        }
    }
    let failures = FAILURES.load(Ordering::Relaxed);
    if failures == 0 {
        println!("devcheck: all checks passed");
        0
    } else {
        println!("devcheck: {failures} checks FAILED");
        1
    }
}
