//! Fuzz bodies, shared by the cargo-fuzz targets in `devices/fuzz/` and by the normal test run
//! (which feeds them seeded random inputs). Each interprets its bytes as guest actions and panics
//! only when a device invariant breaks.

use std::io;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::testing::{TestDriver, BUFFERS_BASE, MEM_SIZE};
use crate::virtio::block::{Block, MemDisk};
use crate::virtio::chain::{parse_chain, range_in_memory, RawDescriptor};
use crate::virtio::console::{Console, ConsoleInput};
use crate::virtio::net::{MemNet, Net};
use crate::virtio::rng::Rng;
use crate::virtio::{VirtioDevice, STATUS_DEVICE_NEEDS_RESET};

/// Reads fuzz input as a stream of integers; exhausted input reads as zeroes.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// An address that is usually inside guest memory, sometimes anywhere.
    fn addr(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            1 => MEM_SIZE - u64::from(self.u8()),
            _ => BUFFERS_BASE + u64::from(self.u16()) * 8,
        }
    }

    /// A length that is usually small, sometimes anything.
    fn len(&mut self) -> u32 {
        match self.u8() % 4 {
            0 => self.u32(),
            1 => 0,
            _ => u32::from(self.u16() % 2048),
        }
    }
}

fn device(kind: u8) -> (Box<dyn VirtioDevice>, Option<ConsoleInput>) {
    let dev: Box<dyn VirtioDevice> = match kind % 5 {
        0 => Box::new(
            Block::with_backend(Box::new(MemDisk::new(64 * 1024)), false, Some("fuzz"))
                .expect("in-memory disk"),
        ),
        1 => Box::new(
            Block::with_backend(Box::new(MemDisk::new(8 * 1024)), true, None)
                .expect("in-memory disk"),
        ),
        2 => Box::new(Rng::new()),
        3 => {
            let net = MemNet::default();
            net.lock()
                .inbound
                .extend([vec![1u8; 60], vec![2u8; 1514], Vec::new()]);
            Box::new(Net::new(Box::new(net), None))
        }
        _ => {
            let console = Console::new(Box::new(io::sink()));
            let input = console.input();
            return (Box::new(console), Some(input));
        }
    };
    (dev, None)
}

fn check(driver: &TestDriver) {
    if let Err(e) = driver.transport.check_invariants() {
        panic!("transport invariant broken: {e}");
    }
}

/// Fuzz body for the MMIO register interface: register reads and writes of any width and
/// offset, status writes, queue setups, notifications, raw chains, memory scribbles.
pub fn mmio_registers(data: &[u8]) {
    let mut input = Input { data };
    let kind = input.u8();
    let (dev, console_input) = device(kind);
    let mut driver = TestDriver::new(dev);
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        match input.u8() % 10 {
            0 | 1 => {
                let offset = if input.u8().is_multiple_of(8) {
                    u64::from(input.u16())
                } else {
                    u64::from(input.u16() % 0x140)
                };
                let width = [1usize, 2, 4, 8, 4, 4][usize::from(input.u8() % 6)];
                let bytes = input.bytes(width).to_vec();
                driver.transport.write(offset, &bytes);
            }
            2 => {
                let offset = u64::from(input.u16() % 0x1100);
                let width = [1usize, 2, 4, 8, 0, 4][usize::from(input.u8() % 6)];
                let mut buf = vec![0u8; width];
                driver.transport.read(offset, &mut buf);
            }
            3 => driver.transport.notify(u32::from(input.u8() % 4)),
            4 => {
                let accept = input.u64();
                let size = match input.u8() % 4 {
                    0 => input.u16(),
                    _ => 1 << (input.u8() % 10),
                };
                driver.init(accept, size);
            }
            5 => {
                let q = usize::from(input.u8() % 3);
                let index = input.u16() % 256;
                let n = 1 + input.u8() % 6;
                let descs: Vec<RawDescriptor> = (0..n)
                    .map(|_| RawDescriptor {
                        addr: input.addr(),
                        len: input.len(),
                        flags: u16::from(input.u8() % 8),
                        next: if input.u8().is_multiple_of(2) {
                            index.wrapping_add(1)
                        } else {
                            input.u16()
                        },
                    })
                    .collect();
                driver.write_descriptors(q, index, &descs);
                let head = if input.u8().is_multiple_of(4) {
                    input.u16()
                } else {
                    index
                };
                driver.publish(q, head);
                driver.transport.notify(q as u32);
                let _ = driver.take_used(q);
            }
            6 => {
                let addr = u64::from(input.u32()) % MEM_SIZE;
                let n = usize::from(input.u8());
                let bytes = input.bytes(n).to_vec();
                driver.write_mem(addr, &bytes);
            }
            7 => {
                let value = u32::from(input.u8());
                driver.write32(0x70, value);
            }
            8 => {
                if let Some(ci) = &console_input {
                    let n = usize::from(input.u8());
                    ci.push(input.bytes(n));
                }
                driver.transport.poll();
            }
            _ => {
                let q = usize::from(input.u8() % 3);
                let bufs: Vec<(u64, u32, bool)> = (0..1 + input.u8() % 4)
                    .map(|_| (input.addr(), input.len(), input.u8().is_multiple_of(2)))
                    .collect();
                driver.submit(q, &bufs);
                let _ = driver.take_used(q);
            }
        }
        check(&driver);
    }
}

/// Fuzz body for descriptor-chain parsing: the input becomes a descriptor table (and the memory
/// around it); the chain is parsed directly and checked, then run through a block device.
pub fn descriptor_chain(data: &[u8]) {
    let mut input = Input { data };
    let queue_size = match input.u8() % 4 {
        0 => input.u16(),
        _ => 1 << (input.u8() % 9),
    };
    let head = if input.u8().is_multiple_of(2) {
        input.u16()
    } else {
        input.u16() % queue_size.max(1)
    };
    let indirect = input.u8().is_multiple_of(2);
    let table: Vec<RawDescriptor> = (0..usize::from(input.u8() % 32))
        .map(|_| RawDescriptor {
            addr: match input.u8() % 3 {
                0 => input.u64(),
                // Point some buffers at the table itself, to make indirect tables of it.
                1 => u64::from(input.u16() % 0x200),
                _ => 0x1000 + u64::from(input.u16() % 0x1000),
            },
            len: input.len(),
            flags: u16::from(input.u8() % 8),
            next: if input.u8().is_multiple_of(2) {
                u16::from(input.u8() % 32)
            } else {
                input.u16()
            },
        })
        .collect();

    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).expect("fuzz memory");
    for (i, d) in table.iter().enumerate() {
        let _ = mem.write_slice(&d.to_bytes(), GuestAddress(i as u64 * 16));
    }
    if let Ok(chain) = parse_chain(&mem, GuestAddress(0), queue_size, head, indirect) {
        assert!(head < queue_size);
        for seg in chain.readable.iter().chain(&chain.writable) {
            assert!(seg.len > 0, "zero-length segment kept");
            assert!(range_in_memory(&mem, seg.addr, u64::from(seg.len)));
        }
        assert!(chain.readable_len() + chain.writable_len() <= u64::from(u32::MAX));
    }

    // The same table behind a live block device: whatever happens, the device survives,
    // completes the chain or asks for a reset.
    let disk = Block::with_backend(Box::new(MemDisk::new(16 * 1024)), false, Some("c"))
        .expect("in-memory disk");
    let mut driver = TestDriver::new(Box::new(disk));
    let size = if queue_size.is_power_of_two() && queue_size <= 256 {
        queue_size
    } else {
        256
    };
    let accept = if indirect { u64::MAX } else { !(1u64 << 28) };
    if !driver.init(accept, size) {
        return;
    }
    // Relocate buffer addresses into the driver's buffer area so requests reach the device.
    let relocated: Vec<RawDescriptor> = table
        .iter()
        .map(|d| RawDescriptor {
            addr: if d.addr < 0x2000 {
                BUFFERS_BASE + d.addr
            } else {
                d.addr
            },
            ..*d
        })
        .collect();
    driver.write_descriptors(0, 0, &relocated);
    // Indirect tables point at BUFFERS_BASE + x: put a copy of the table there too.
    for (i, d) in relocated.iter().enumerate() {
        driver.write_mem(BUFFERS_BASE + i as u64 * 16, &d.to_bytes());
    }
    let header_at = BUFFERS_BASE + 0x1000;
    let header: Vec<u8> = input.bytes(16).to_vec();
    driver.write_mem(header_at, &header);
    driver.publish(0, head);
    driver.transport.notify(0);
    check(&driver);
    let used = driver.take_used(0);
    let needs_reset = driver.transport.status() & STATUS_DEVICE_NEEDS_RESET != 0;
    assert!(used.len() <= 1);
    if let Some(&(id, _)) = used.first() {
        assert_eq!(id, u32::from(head), "used id is not the head");
    }
    assert!(
        needs_reset || used.len() == 1,
        "chain neither completed nor reported"
    );
}
