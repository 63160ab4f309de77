//! An init (`init=/bin/runlist`) that runs a list of Linux commands one at a time and frames
//! each one's output, so a test can compare it with the same commands run on the host. It
//! starts the console server, the disks' drivers and the file server, reads the list from the
//! initramfs (`k42.arg=0`: `etc/k42/commands`, the busybox suite; `k42.arg=1`:
//! `etc/k42/disk-commands`, the disk checks, for a VM with disks; `k42.arg=2`:
//! `etc/k42/disk-bench`, the disk bench), and for each line prints `=== $ <line>`, runs it through the Linux personality, waits, and
//! prints `=== exit <status>`. Lines are argv words separated by spaces, `'single quotes'`
//! grouping; empty lines and lines starting with `#` are skipped; the program is
//! `/bin/<first word>`. Exits 0 once every command ran (whatever their statuses).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use k42_guest_lib::cmdlist;
use k42_guest_lib::cpio;
use k42_rt::kabi;
use k42_rt::{println, sys};

k42_rt::entry!(main);

/// The command lists in the initramfs, by `k42.arg`.
const COMMAND_LISTS: [&str; 3] = [
    "etc/k42/commands",
    "etc/k42/disk-commands",
    "etc/k42/disk-bench",
];
/// Where the archive is mapped to find the list.
const ARCHIVE_AT: u64 = 0x0000_3000_0000_0000;

fn command_list(path: &str) -> Result<String, &'static str> {
    let archive = sys::map_initrd(ARCHIVE_AT).map_err(|_| "cannot map the initramfs")?;
    let entries = cpio::parse(archive).map_err(|_| "the initramfs does not parse")?;
    let entry = entries
        .iter()
        .find(|e| e.name == path)
        .ok_or("the command list is not in the initramfs")?;
    core::str::from_utf8(entry.data)
        .map(String::from)
        .map_err(|_| "the command list is not UTF-8")
}

fn main(arg: u64) -> i64 {
    if let Err(status) = k42_programs::start_console_and_file_servers("runlist") {
        return status;
    }
    let Some(&path) = COMMAND_LISTS.get(arg as usize) else {
        println!("runlist: k42.arg={arg} names no command list (0: busybox suite, 1: disks, 2: disk bench)");
        return 2;
    };
    let list = match command_list(path) {
        Ok(list) => list,
        Err(why) => {
            println!("runlist: {path}: {why}");
            return 1;
        }
    };
    let mut scratch = Vec::new();
    let mut ran = 0;
    for line in list.lines() {
        let argv = match cmdlist::words(line) {
            Ok(Some(argv)) => argv,
            Ok(None) => continue,
            Err(why) => {
                println!("runlist: bad line ({why}): {line}");
                continue;
            }
        };
        let path = alloc::format!("/bin/{}", argv[0]);
        let args: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        println!("=== $ {}", line.trim());
        let status = sys::spawn_linux(&path, &args, &mut scratch).and_then(sys::wait);
        match status {
            // As the host test reports a process a signal ended.
            Ok(status) if status & kabi::EXIT_SIGNALED != 0 => println!("=== exit signal"),
            Ok(status) => println!("=== exit {status}"),
            Err(e) => println!("=== exit error {e:?}"),
        }
        ran += 1;
    }
    println!("runlist: {ran} commands ran");
    0
}
