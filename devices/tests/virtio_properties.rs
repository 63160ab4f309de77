//! Property tests (random register traffic and random descriptor tables: no panics, invariants
//! hold) and the fuzz bodies of `devices/fuzz/` run over seeded random inputs, so the normal
//! test run exercises them without nightly or cargo-fuzz.

use k42_devices::fuzzing;
use k42_devices::testing::{reg, TestDriver, MEM_SIZE};
use k42_devices::virtio::block::{Block, MemDisk};
use k42_devices::virtio::chain::{parse_chain, range_in_memory, RawDescriptor, Segment};
use k42_devices::virtio::rng::Rng;
use k42_devices::virtio::STATUS_DEVICE_NEEDS_RESET;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// One register access: offset, width, value, read or write.
#[derive(Clone, Debug)]
struct Access {
    offset: u64,
    width: usize,
    value: u64,
    write: bool,
}

fn access() -> impl Strategy<Value = Access> {
    (
        prop_oneof![
            4 => (0u64..0x40).prop_map(|i| i * 4),
            1 => 0u64..0x1010,
            1 => any::<u64>(),
        ],
        prop_oneof![Just(4usize), Just(1), Just(2), Just(8)],
        prop_oneof![any::<u64>(), 0u64..16, Just(0xff)],
        any::<bool>(),
    )
        .prop_map(|(offset, width, value, write)| Access {
            offset,
            width,
            value,
            write,
        })
}

fn descriptor() -> impl Strategy<Value = RawDescriptor> {
    (
        prop_oneof![0u64..0x4000, any::<u64>()],
        prop_oneof![0u32..64, any::<u32>()],
        0u16..8,
        prop_oneof![0u16..16, any::<u16>()],
    )
        .prop_map(|(addr, len, flags, next)| RawDescriptor {
            addr,
            len,
            flags,
            next,
        })
}

proptest! {
    #![proptest_config(Config { cases: 300, ..Config::default() })]

    /// Random register traffic, optionally after a valid initialization, never panics and never
    /// breaks the transport's invariants (FEATURES_OK only with offered features, ready queues
    /// have valid sizes and rings, ...).
    #[test]
    fn random_register_traffic_keeps_invariants(
        init in any::<bool>(),
        blk in any::<bool>(),
        accesses in proptest::collection::vec(access(), 0..64),
    ) {
        let dev: Box<dyn k42_devices::virtio::VirtioDevice> = if blk {
            Box::new(Block::with_backend(Box::new(MemDisk::new(8192)), false, None).unwrap())
        } else {
            Box::new(Rng::new())
        };
        let mut d = TestDriver::new(dev);
        if init {
            prop_assert!(d.init(u64::MAX, 8));
        }
        for a in accesses {
            let bytes = a.value.to_le_bytes();
            if a.write {
                d.transport.write(a.offset, &bytes[..a.width]);
            } else {
                let mut buf = vec![0u8; a.width];
                d.transport.read(a.offset, &mut buf);
            }
            if let Err(e) = d.transport.check_invariants() {
                return Err(TestCaseError::fail(e));
            }
        }
        // Whatever happened, a reset brings the device back to a clean initial state.
        d.write32(reg::STATUS, 0);
        prop_assert_eq!(d.read32(reg::STATUS), 0);
        prop_assert_eq!(d.read32(reg::INTERRUPT_STATUS), 0);
        prop_assert!(d.init(u64::MAX, 8));
    }

    /// Random descriptor tables: the parser never panics, and what it accepts is sound.
    #[test]
    fn random_descriptor_tables_parse_soundly(
        table in proptest::collection::vec(descriptor(), 1..24),
        queue_size in prop_oneof![1u16..32, any::<u16>()],
        head in 0u16..32,
        indirect in any::<bool>(),
    ) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        for (i, d) in table.iter().enumerate() {
            mem.write_slice(&d.to_bytes(), GuestAddress(i as u64 * 16)).unwrap();
        }
        if let Ok(chain) = parse_chain(&mem, GuestAddress(0), queue_size, head, indirect) {
            prop_assert!(head < queue_size);
            let all: Vec<&Segment> = chain.readable.iter().chain(&chain.writable).collect();
            for s in all {
                prop_assert!(s.len > 0);
                prop_assert!(range_in_memory(&mem, s.addr, u64::from(s.len)));
            }
        }
    }

    /// Random descriptor tables behind a live block device: each request is completed or the
    /// device reports DEVICE_NEEDS_RESET; used-ring ids are always heads the driver published.
    #[test]
    fn random_chains_on_a_block_device(
        table in proptest::collection::vec(descriptor(), 1..16),
        heads in proptest::collection::vec(0u16..16, 1..4),
    ) {
        let disk = Block::with_backend(Box::new(MemDisk::new(16384)), false, None).unwrap();
        let mut d = TestDriver::new(Box::new(disk));
        prop_assert!(d.init(u64::MAX, 16));
        let relocated: Vec<RawDescriptor> = table
            .iter()
            .map(|x| RawDescriptor { addr: x.addr.wrapping_add(0x4_0000), ..*x })
            .collect();
        d.write_descriptors(0, 0, &relocated);
        for &h in &heads {
            d.publish(0, h);
        }
        d.transport.notify(0);
        let used = d.take_used(0);
        for (id, _) in &used {
            prop_assert!(heads.contains(&(*id as u16)));
        }
        let needs_reset = d.transport.status() & STATUS_DEVICE_NEEDS_RESET != 0;
        prop_assert!(needs_reset || used.len() == heads.len());
        prop_assert!(d.transport.check_invariants().is_ok());
    }
}

/// Runs a fuzz body over `cases` random inputs from a fixed seed.
fn run_fuzz_body(body: fn(&[u8]), cases: u32, max_len: usize, seed: u8) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let inputs = proptest::collection::vec(any::<u8>(), 0..max_len);
    runner
        .run(&inputs, |data| {
            body(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_mmio_registers_seeded() {
    run_fuzz_body(fuzzing::mmio_registers, 2000, 512, 1);
}

#[test]
fn fuzz_descriptor_chain_seeded() {
    run_fuzz_body(fuzzing::descriptor_chain, 3000, 400, 2);
}

#[test]
fn guest_memory_is_what_the_fuzz_bodies_assume() {
    assert_eq!(MEM_SIZE, 1 << 20);
}
