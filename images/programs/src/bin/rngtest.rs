//! Random bytes from `rngd` (the virtio-rng driver): 32 bytes by PPC, printed in hex (the host
//! compares them between boots), which must not be all zero; then `/bin/linux-random`, whose
//! getrandom(2) the Linux personality serves from the same server.
#![no_std]
#![no_main]

use core::fmt::Write;

use k42_guest_lib::virtio::rng::op;
use k42_programs::devmem::own_ppc_buffer;
use k42_rt::kabi::SpawnFlags;
use k42_rt::{println, sys};

k42_rt::entry!(main);

fn main(_arg: u64) -> i64 {
    let server = match k42_rt::lookup_retrying("random") {
        Ok(pid) => pid,
        Err(e) => {
            println!("rngtest: no random server: {e:?}");
            return 1;
        }
    };
    let mut bytes = [0u8; 32];
    let mut got = 0;
    while got < bytes.len() {
        match sys::ppc_call(server, [op::GET, (bytes.len() - got) as u64, 0, 0]) {
            Ok((0, n)) if n > 0 => {
                let n = (n as usize).min(bytes.len() - got);
                bytes[got..got + n].copy_from_slice(&own_ppc_buffer()[..n]);
                got += n;
            }
            other => {
                println!("rngtest: get: {other:?}");
                return 1;
            }
        }
    }
    let mut hex = alloc::string::String::new();
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    println!("rngtest: 32 random bytes {hex}");
    if bytes.iter().all(|&b| b == 0) {
        println!("rngtest: the bytes are all zero");
        return 1;
    }
    match sys::spawn("/bin/linux-random", 0, SpawnFlags::LINUX).and_then(sys::wait) {
        Ok(0) => {
            println!("rngtest: all checks passed");
            0
        }
        other => {
            println!("rngtest: linux-random: {other:?}");
            1
        }
    }
}

extern crate alloc;
