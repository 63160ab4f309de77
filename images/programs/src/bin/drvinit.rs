//! A first process for driver checks (`init=/bin/drvinit`): starts the console server, a
//! `blkd` for each of the first two virtio-blk disks (with the device right), then `blktest`,
//! and exits with its status.
#![no_std]
#![no_main]

use k42_rt::kabi::SpawnFlags;
use k42_rt::{println, sys};

k42_rt::entry!(main);

fn main(_arg: u64) -> i64 {
    if let Err(e) = sys::spawn("/bin/console", 0, SpawnFlags::CONSOLE) {
        let _ = sys::console_write(b"drvinit: cannot start the console server\n");
        return e as i64;
    }
    for disk in 0..2 {
        if let Err(e) = sys::spawn("/bin/blkd", disk, SpawnFlags::DEVICES) {
            println!("drvinit: cannot start blkd {disk}: {e:?}");
            return 1;
        }
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
