//! Touches an address in no region: the kernel ends this process (status 139), nothing else.
#![no_std]
#![no_main]

k42_rt::entry!(main);

fn main(arg: u64) -> i64 {
    k42_rt::println!("fault: about to touch {:#x}", 0x10u64 + arg);
    // SAFETY-free on purpose: the read faults and the process ends.
    let value = unsafe { core::ptr::read_volatile((0x10 + arg) as *const u64) };
    k42_rt::println!("fault: read {value} and survived, which is wrong");
    0
}
