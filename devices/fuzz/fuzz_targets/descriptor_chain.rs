//! Fuzzes descriptor-chain parsing and a block device behind it (body shared with the seeded
//! stable test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    k42_devices::fuzzing::descriptor_chain(data);
});
