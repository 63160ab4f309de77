//! The virtio-mmio transport against the rules of virtio 1.2 section 4.2.2, driven through its
//! registers by the crate's test driver.

use k42_devices::testing::{reg, TestDriver, BUFFERS_BASE};
use k42_devices::virtio::block::{Block, MemDisk};
use k42_devices::virtio::chain::{RawDescriptor, VIRTQ_DESC_F_NEXT};
use k42_devices::virtio::mmio::{cmdline_entry, MAGIC_VALUE};
use k42_devices::virtio::rng::Rng;
use k42_devices::virtio::*;

fn rng() -> TestDriver {
    TestDriver::new(Box::new(Rng::new()))
}

fn blk() -> TestDriver {
    let disk = Block::with_backend(Box::new(MemDisk::new(64 * 1024)), false, None).unwrap();
    TestDriver::new(Box::new(disk))
}

#[test]
fn identification_registers() {
    let mut d = rng();
    assert_eq!(d.read32(reg::MAGIC), MAGIC_VALUE);
    assert_eq!(d.read32(reg::VERSION), 2);
    assert_eq!(d.read32(reg::DEVICE_ID), DEVICE_ID_RNG);
    assert_eq!(d.read32(reg::QUEUE_NUM_MAX), 256);
    d.write32(reg::QUEUE_SEL, 1);
    assert_eq!(d.read32(reg::QUEUE_NUM_MAX), 0, "queue 1 does not exist");
    let f = d.device_features();
    assert_ne!(f & VIRTIO_F_VERSION_1, 0);
    d.write32(reg::DEVICE_FEATURES_SEL, 7);
    assert_eq!(d.read32(reg::DEVICE_FEATURES), 0);
    assert_eq!(
        cmdline_entry(0xd000_0000, 5),
        "virtio_mmio.device=4K@0xd0000000:5"
    );
}

#[test]
fn features_the_device_did_not_offer_are_refused() {
    let mut d = rng();
    d.write32(reg::STATUS, STATUS_ACKNOWLEDGE);
    d.write32(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    d.write32(reg::DRIVER_FEATURES_SEL, 0);
    d.write32(reg::DRIVER_FEATURES, 1 << 5); // not offered by rng
    d.write32(reg::DRIVER_FEATURES_SEL, 1);
    d.write32(reg::DRIVER_FEATURES, 1); // VERSION_1
    d.write32(
        reg::STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(d.read32(reg::STATUS) & STATUS_FEATURES_OK, 0);
    assert!(d.transport.log().total() > 0);

    // Without VERSION_1 (a legacy driver) FEATURES_OK is refused too.
    d.write32(reg::STATUS, 0);
    d.write32(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    d.write32(reg::DRIVER_FEATURES_SEL, 0);
    d.write32(reg::DRIVER_FEATURES, 0);
    d.write32(
        reg::STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(d.read32(reg::STATUS) & STATUS_FEATURES_OK, 0);

    assert!(d.negotiate(u64::MAX));
    // Feature writes after FEATURES_OK are ignored.
    d.write32(reg::DRIVER_FEATURES_SEL, 0);
    d.write32(reg::DRIVER_FEATURES, 0xffff_ffff);
    assert_eq!(
        d.transport.driver_features() & !d.transport.device_features(),
        0
    );
}

#[test]
fn status_must_follow_the_initialization_order() {
    let mut d = rng();
    d.write32(reg::STATUS, STATUS_DRIVER); // without ACKNOWLEDGE
    assert_eq!(d.read32(reg::STATUS), 0);
    d.write32(reg::STATUS, STATUS_ACKNOWLEDGE);
    d.write32(
        reg::STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    assert_eq!(
        d.read32(reg::STATUS),
        STATUS_ACKNOWLEDGE,
        "DRIVER_OK before FEATURES_OK"
    );
    d.write32(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    d.write32(reg::STATUS, STATUS_ACKNOWLEDGE); // clearing a bit without reset
    assert_eq!(d.read32(reg::STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    d.write32(
        reg::STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FAILED,
    );
    assert_ne!(d.read32(reg::STATUS) & STATUS_FAILED, 0);
    d.write32(reg::STATUS, 0);
    assert_eq!(d.read32(reg::STATUS), 0);
}

#[test]
fn queue_sizes_must_be_powers_of_two_within_max() {
    let mut d = rng();
    assert!(d.negotiate(u64::MAX));
    for bad in [0u16, 3, 100, 512] {
        assert!(!d.setup_queue(0, bad), "size {bad} accepted");
    }
    assert!(d.setup_queue(0, 1));
    d.write32(reg::QUEUE_READY, 0);
    assert!(d.setup_queue(0, 128));
    assert!(d.transport.check_invariants().is_ok());
}

#[test]
fn queue_addresses_must_be_aligned_and_in_memory() {
    let mut d = rng();
    assert!(d.negotiate(u64::MAX));
    let (desc, avail, used) = TestDriver::layout(0);
    let cases = [
        (desc + 8, avail, used),         // descriptor table not 16-aligned
        (desc, avail + 1, used),         // avail ring not 2-aligned
        (desc, avail, used + 2),         // used ring not 4-aligned
        (1 << 40, avail, used),          // outside guest memory
        (desc, avail, (1 << 20) - 0x10), // used ring runs off the end
    ];
    for (i, (a, b, c)) in cases.into_iter().enumerate() {
        d.write32(reg::QUEUE_SEL, 0);
        d.write32(reg::QUEUE_NUM, 16);
        for (lo, v) in [
            (reg::QUEUE_DESC_LOW, a),
            (reg::QUEUE_DRIVER_LOW, b),
            (reg::QUEUE_DEVICE_LOW, c),
        ] {
            d.write32(lo, v as u32);
            d.write32(lo + 4, (v >> 32) as u32);
        }
        d.write32(reg::QUEUE_READY, 1);
        assert_eq!(d.read32(reg::QUEUE_READY), 0, "case {i} made ready");
    }
}

#[test]
fn queue_registers_are_frozen_while_ready() {
    let mut d = rng();
    assert!(d.negotiate(u64::MAX));
    assert!(d.setup_queue(0, 16));
    let before = d.transport.log().total();
    d.write32(reg::QUEUE_NUM, 3);
    assert!(d.transport.log().total() > before);
    assert!(d.transport.check_invariants().is_ok());
}

#[test]
fn notifications_before_driver_ok_are_ignored() {
    let mut d = rng();
    assert!(d.negotiate(u64::MAX));
    assert!(d.setup_queue(0, 16));
    d.submit(0, &[(BUFFERS_BASE, 16, true)]);
    assert!(d.take_used(0).is_empty());
    assert!(d.transport.log().total() > 0);
    assert!(d.driver_ok());
    d.transport.notify(0);
    assert_eq!(d.take_used(0).len(), 1, "processed once DRIVER_OK is set");
    // Notifying a queue that does not exist is ignored.
    d.transport.notify(9);
    d.write32(reg::QUEUE_NOTIFY, 9);
    assert_eq!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
}

#[test]
fn unknown_and_odd_accesses_are_logged_not_fatal() {
    let mut d = rng();
    let before = d.transport.log().total();
    d.write32(0x0f0, 1); // unknown
    d.write32(reg::MAGIC, 1); // read-only
    assert_eq!(d.read32(0x0e8), 0); // unknown
    assert_eq!(d.read32(reg::QUEUE_NOTIFY), 0); // write-only
    let mut b = [0xffu8; 2];
    d.transport.read(reg::MAGIC, &mut b); // wrong width
    assert_eq!(b, [0, 0]);
    d.transport.write(reg::STATUS + 1, &[1]); // wrong width and alignment
    let mut big = [0u8; 8];
    d.transport.read(0xffc, &mut big); // straddles the end of the window
    d.transport.write(u64::MAX - 2, &[1, 2, 3, 4]);
    assert!(d.transport.log().total() >= before + 7);
    assert_eq!(d.read32(reg::STATUS), 0);
}

#[test]
fn interrupt_status_and_ack() {
    let mut d = rng();
    assert!(d.init(u64::MAX, 16));
    d.submit(0, &[(BUFFERS_BASE, 32, true)]);
    assert_eq!(d.read32(reg::INTERRUPT_STATUS), 1);
    assert_eq!(d.interrupts.used_buffer_count(), 1);
    d.write32(reg::INTERRUPT_ACK, 1);
    assert_eq!(d.read32(reg::INTERRUPT_STATUS), 0);
}

#[test]
fn malformed_chain_sets_needs_reset_and_reset_recovers() {
    let mut d = blk();
    assert!(d.init(u64::MAX, 16));
    // A two-descriptor loop.
    d.write_descriptors(
        0,
        0,
        &[
            RawDescriptor {
                addr: BUFFERS_BASE,
                len: 16,
                flags: VIRTQ_DESC_F_NEXT,
                next: 1,
            },
            RawDescriptor {
                addr: BUFFERS_BASE,
                len: 16,
                flags: VIRTQ_DESC_F_NEXT,
                next: 0,
            },
        ],
    );
    d.publish(0, 0);
    d.transport.notify(0);
    assert_ne!(d.read32(reg::STATUS) & STATUS_DEVICE_NEEDS_RESET, 0);
    assert_ne!(
        d.read32(reg::INTERRUPT_STATUS) & 2,
        0,
        "config-change interrupt"
    );
    assert_eq!(d.interrupts.config_change_count(), 1);
    // Further notifications are ignored until reset.
    d.transport.notify(0);
    let generation = d.read32(reg::CONFIG_GENERATION);
    d.write32(reg::STATUS, 0);
    assert_eq!(d.read32(reg::STATUS), 0);
    assert_eq!(d.read32(reg::INTERRUPT_STATUS), 0);
    assert_eq!(d.read32(reg::QUEUE_READY), 0);
    assert_ne!(d.read32(reg::CONFIG_GENERATION), generation);
    assert!(d.init(u64::MAX, 16));
    assert_eq!(d.read32(reg::STATUS) & STATUS_DEVICE_NEEDS_RESET, 0);
}

#[test]
fn avail_index_jumping_past_queue_size_needs_reset() {
    let mut d = rng();
    assert!(d.init(u64::MAX, 16));
    let (_, avail, _) = TestDriver::layout(0);
    d.write_mem(avail + 2, &100u16.to_le_bytes());
    d.transport.notify(0);
    assert_ne!(d.transport.status() & STATUS_DEVICE_NEEDS_RESET, 0);
    assert!(d.transport.check_invariants().is_ok());
}
