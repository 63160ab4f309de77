//! The default guest's init (`k42vm run` with no `--kernel`, `--initrd` or `--cmdline`): starts
//! the console and file servers, then runs Debian's busybox `sh` through the Linux
//! personality, waits for it and exits with its status (so the VM does).
//!
//! `k42.arg=0` (k42vm's choice when its standard input is not a terminal) runs the
//! demonstration script `/etc/k42/demo.sh`; `k42.arg=1` (a terminal) starts an interactive
//! shell reading the console.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use k42_rt::kabi;
use k42_rt::{println, sys};

k42_rt::entry!(main);

/// The demonstration script (packed from `images/linux/demo.sh`).
const DEMO_SCRIPT: &[u8] = b"/etc/k42/demo.sh";

fn main(arg: u64) -> i64 {
    if let Err(status) = k42_programs::start_console_and_file_servers("shell") {
        return status;
    }
    let argv: &[&[u8]] = match arg {
        0 => &[b"sh", DEMO_SCRIPT],
        1 => {
            println!("k42: busybox sh on the Linux personality; `exit` ends the shell and the VM");
            &[b"sh", b"-i"]
        }
        _ => {
            println!("shell: k42.arg={arg} is neither 0 (demonstration) nor 1 (interactive)");
            return 2;
        }
    };
    let mut scratch = Vec::new();
    match sys::spawn_linux("/bin/busybox", argv, &mut scratch).and_then(sys::wait) {
        Ok(status) if status & kabi::EXIT_SIGNALED != 0 => {
            println!(
                "shell: sh was ended by signal {}",
                status & !kabi::EXIT_SIGNALED
            );
            128 + (status & !kabi::EXIT_SIGNALED)
        }
        Ok(status) => status,
        Err(e) => {
            println!("shell: cannot run /bin/busybox sh: {e:?}");
            1
        }
    }
}
