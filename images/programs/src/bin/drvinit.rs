//! A first process for driver checks (`init=/bin/drvinit`): starts the console server, a
//! `blkd` for each of the first two virtio-blk disks (with the device right), then `devcheck`
//! and `blktest`, and with an entropy device `rngd` and `rngtest`; exits 0 if all passed.
//! With `k42.arg=1` it checks the network instead: `netd` for the first virtio-net card, then
//! `nettest`.
#![no_std]
#![no_main]

use k42_guest_lib::virtio::{DEVICE_ID_BLOCK, DEVICE_ID_RNG};
use k42_rt::kabi::{DeviceDesc, SpawnFlags, MAX_DEVICES};
use k42_rt::{println, sys};

k42_rt::entry!(main);

fn main(arg: u64) -> i64 {
    if let Err(e) = sys::spawn("/bin/console", 0, SpawnFlags::CONSOLE) {
        let _ = sys::console_write(b"drvinit: cannot start the console server\n");
        return e as i64;
    }
    if arg == 1 {
        return match sys::spawn("/bin/netd", 0, SpawnFlags::DEVICES) {
            Ok(_) => run("/bin/nettest"),
            Err(e) => {
                println!("drvinit: cannot start netd: {e:?}");
                1
            }
        };
    }
    let mut list = [DeviceDesc::default(); MAX_DEVICES];
    let count = sys::device_list(&mut list).unwrap_or(0).min(MAX_DEVICES);
    let disks = list[..count]
        .iter()
        .filter(|d| d.device_id == u64::from(DEVICE_ID_BLOCK))
        .count();
    let mut drivers = [0; 2];
    for (disk, pid) in drivers.iter_mut().enumerate() {
        match sys::spawn("/bin/blkd", disk as u64, SpawnFlags::DEVICES) {
            Ok(child) => *pid = child,
            Err(e) => {
                println!("drvinit: cannot start blkd {disk}: {e:?}");
                return 1;
            }
        }
    }
    if disks < 2 {
        // The drivers without a disk end at once, saying so.
        for pid in &drivers[disks..] {
            let _ = sys::wait(*pid);
        }
        println!(
            "drvinit: the block checks need two virtio-blk disks (k42vm --disk), found {disks}"
        );
        return 1;
    }
    // Once both drivers hold their disks: bad arguments to the device calls.
    let devcheck = k42_rt::lookup_retrying("blk0")
        .and_then(|_| k42_rt::lookup_retrying("blk1"))
        .and_then(|_| sys::spawn("/bin/devcheck", 0, SpawnFlags::DEVICES))
        .and_then(sys::wait);
    if devcheck != Ok(0) {
        println!("drvinit: devcheck: {devcheck:?}");
        return 1;
    }
    let mut status = run("/bin/blktest");
    // With an entropy device (k42vm --rng): its driver, once devcheck (which claimed the device
    // for a while) has exited and the kernel has released it.
    let rng = list[..count]
        .iter()
        .any(|d| d.device_id == u64::from(DEVICE_ID_RNG));
    if rng {
        match sys::spawn("/bin/rngd", 0, SpawnFlags::DEVICES) {
            Ok(_) => status |= run("/bin/rngtest"),
            Err(e) => {
                println!("drvinit: cannot start rngd: {e:?}");
                status = 1;
            }
        }
    }
    status
}

/// Runs a check program and returns its exit status (1 if it could not run).
fn run(path: &str) -> i64 {
    match sys::spawn(path, 0, 0).and_then(sys::wait) {
        Ok(status) => {
            println!("drvinit: {path} exited with {status}");
            status
        }
        Err(e) => {
            println!("drvinit: {path}: {e:?}");
            1
        }
    }
}
