//! Fuzzes the virtio-mmio register interface (body shared with the seeded stable test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    k42_devices::fuzzing::mmio_registers(data);
});
