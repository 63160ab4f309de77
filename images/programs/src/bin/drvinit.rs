//! A first process for driver checks (`init=/bin/drvinit`): starts the console server, a
//! `blkd` for each of the first two virtio-blk disks (with the device right), then `devcheck`
//! and `blktest`, and exits with blktest's status.
#![no_std]
#![no_main]

use k42_guest_lib::virtio::DEVICE_ID_BLOCK;
use k42_rt::kabi::{DeviceDesc, SpawnFlags, MAX_DEVICES};
use k42_rt::{println, sys};

k42_rt::entry!(main);

fn main(_arg: u64) -> i64 {
    if let Err(e) = sys::spawn("/bin/console", 0, SpawnFlags::CONSOLE) {
        let _ = sys::console_write(b"drvinit: cannot start the console server\n");
        return e as i64;
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
    match sys::spawn("/bin/blktest", 0, 0).and_then(sys::wait) {
        Ok(status) => {
            println!("drvinit: blktest exited with {status}");
            status
        }
        Err(e) => {
            println!("drvinit: blktest: {e:?}");
            1
        }
    }
}
