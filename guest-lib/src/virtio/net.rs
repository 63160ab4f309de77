//! A virtio-net driver (virtio 1.x, section 5.1) that moves raw Ethernet frames: no offloads,
//! no mergeable buffers, so every frame has the 12-byte `virtio_net_hdr` in front and fits one
//! 2 KiB buffer. Queue 0 receives (device-writable buffers kept posted), queue 1 transmits.
//!
//! DMA memory ([`DMA_PAGES`] pages): the receive queue's page, the transmit queue's page, then
//! [`RX_BUFFERS`] receive buffers and one transmit buffer of [`BUFFER_SIZE`] bytes each.

use super::queue::{Buffer, Dma, QueueError, SplitQueue};
use super::transport::{Regs, Transport, TransportError, STATUS_NEEDS_RESET};

/// Pages of DMA memory the driver needs.
pub const DMA_PAGES: usize = 5;
/// Receive buffers kept posted to the device.
pub const RX_BUFFERS: usize = 4;
/// Bytes of each frame buffer (header included).
pub const BUFFER_SIZE: usize = 2048;
/// The header in front of every frame (`virtio_net_hdr` with `num_buffers`).
pub const HEADER_LEN: usize = 12;
/// The longest frame: 1500 bytes of payload and the 14-byte Ethernet header.
pub const MAX_FRAME: usize = 1514;
/// Entries of each queue.
pub const QUEUE_SIZE: u16 = 8;
/// The device has a MAC address in its configuration space.
pub const F_MAC: u64 = 1 << 5;

const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
/// Offset of receive buffer `i`.
const fn rx_buffer(i: usize) -> usize {
    2 * 4096 + i * BUFFER_SIZE
}
/// Offset of the transmit buffer.
const TX_BUFFER: usize = rx_buffer(RX_BUFFERS);

/// Why the network device failed.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// Not a virtio-net device, or it could not be set up.
    Setup = 1,
    /// The device needs a reset or broke the queue protocol.
    Device = 2,
    /// A frame shorter than an Ethernet header or longer than [`MAX_FRAME`].
    BadFrame = 3,
    /// An operation code the server does not know.
    UnknownOp = 4,
    /// No server drives that card.
    NoServer = 5,
}

impl NetError {
    /// The error a non-zero `r0` stands for.
    pub fn from_code(code: u64) -> Option<NetError> {
        [
            NetError::Setup,
            NetError::Device,
            NetError::BadFrame,
            NetError::UnknownOp,
            NetError::NoServer,
        ]
        .into_iter()
        .find(|e| *e as u64 == code)
    }
}

impl From<TransportError> for NetError {
    fn from(_: TransportError) -> NetError {
        NetError::Setup
    }
}

impl From<QueueError> for NetError {
    fn from(_: QueueError) -> NetError {
        NetError::Device
    }
}

/// `netd`'s PPC protocol (`a0` the operation; frames travel in the caller's PPC buffer; `r0`
/// is 0 or a [`NetError`] code).
pub mod op {
    /// `mac() -> (0, the MAC address in the low 48 bits, first byte highest)`.
    pub const MAC: u64 = 1;
    /// `send(len = a1)`: the first `len` bytes of the caller's buffer as one frame.
    pub const SEND: u64 = 2;
    /// `receive(deadline = a1) -> (0, len)`: the next frame into the caller's buffer, waiting
    /// until the deadline ([`crate::sys::now_ns`] time; 0: do not wait); length 0 if none came.
    pub const RECEIVE: u64 = 3;
    /// `stats() -> (0, frames sent << 32 | frames received)`.
    pub const STATS: u64 = 4;
}

/// A virtio-net device with its two queues.
#[derive(Debug)]
pub struct NetDevice<R: Regs, D: Dma> {
    transport: Transport<R>,
    dma: D,
    rx: SplitQueue,
    tx: SplitQueue,
    /// The head descriptor of each posted receive buffer.
    rx_heads: [u16; RX_BUFFERS],
    mac: [u8; 6],
}

impl<R: Regs, D: Dma> NetDevice<R, D> {
    /// Brings the device in `regs` up with its queues and buffers in `dma` (zeroed,
    /// [`DMA_PAGES`] pages), and posts every receive buffer.
    pub fn new(regs: R, dma: D) -> Result<Self, NetError> {
        let found = Transport::probe(&regs)?;
        if found != super::DEVICE_ID_NET {
            return Err(TransportError::WrongDevice(found).into());
        }
        let transport = Transport::negotiate(regs, F_MAC)?;
        let rx = transport.queue_at::<NetError>(RX_QUEUE, QUEUE_SIZE, 0, &dma)?;
        let tx = transport.queue_at::<NetError>(TX_QUEUE, QUEUE_SIZE, 4096, &dma)?;
        let mut mac = [0u8; 6];
        if transport.features() & F_MAC != 0 {
            let word = transport.config_u64(0).to_le_bytes();
            mac.copy_from_slice(&word[..6]);
        }
        transport.driver_ok();
        let mut dev = NetDevice {
            transport,
            dma,
            rx,
            tx,
            rx_heads: [0; RX_BUFFERS],
            mac,
        };
        for i in 0..RX_BUFFERS {
            dev.post_rx(i)?;
        }
        dev.transport.notify(RX_QUEUE);
        Ok(dev)
    }

    /// The card's MAC address (zero when the device has none to tell).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Hands receive buffer `i` to the device.
    fn post_rx(&mut self, i: usize) -> Result<(), NetError> {
        let buffer = Buffer {
            phys: self.dma.phys(rx_buffer(i)),
            len: BUFFER_SIZE as u32,
            device_writes: true,
        };
        self.rx_heads[i] = self.rx.push(&self.dma, &[buffer])?;
        Ok(())
    }

    fn check_device(&self) -> Result<(), NetError> {
        if self.transport.status() & STATUS_NEEDS_RESET != 0 {
            return Err(NetError::Device);
        }
        Ok(())
    }

    /// Sends `frame` (an Ethernet frame without its CRC) and waits, calling `wait`, until the
    /// device has taken it.
    pub fn send(&mut self, frame: &[u8], wait: &mut dyn FnMut()) -> Result<(), NetError> {
        if frame.len() < 14 || frame.len() > MAX_FRAME {
            return Err(NetError::BadFrame);
        }
        self.dma.write_bytes(TX_BUFFER, &[0; HEADER_LEN]);
        self.dma.write_bytes(TX_BUFFER + HEADER_LEN, frame);
        let buffer = Buffer {
            phys: self.dma.phys(TX_BUFFER),
            len: (HEADER_LEN + frame.len()) as u32,
            device_writes: false,
        };
        self.tx.push(&self.dma, &[buffer])?;
        self.transport.notify(TX_QUEUE);
        loop {
            self.transport.ack_interrupt();
            if self.tx.pop_used(&self.dma)?.is_some() {
                return Ok(());
            }
            self.check_device()?;
            wait();
        }
    }

    /// Takes the next received frame, if one has come, into `out` (at least [`MAX_FRAME`]
    /// bytes); returns its length. The buffer goes straight back to the device.
    pub fn receive(&mut self, out: &mut [u8]) -> Result<Option<usize>, NetError> {
        self.transport.ack_interrupt();
        let Some((head, written)) = self.rx.pop_used(&self.dma)? else {
            self.check_device()?;
            return Ok(None);
        };
        let i = self
            .rx_heads
            .iter()
            .position(|&h| h == head)
            .ok_or(NetError::Device)?;
        let len = (written as usize)
            .saturating_sub(HEADER_LEN)
            .min(MAX_FRAME)
            .min(out.len());
        self.dma
            .read_bytes(rx_buffer(i) + HEADER_LEN, &mut out[..len]);
        self.post_rx(i)?;
        self.transport.notify(RX_QUEUE);
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    //! The driver against a model card: transmitted frames land on a "wire", and the test
    //! delivers frames into the posted receive buffers.
    use super::*;
    use crate::virtio::testing::StreamModel;
    use alloc::vec::Vec;

    type Model = StreamModel;

    /// A card with the MAC address 52:54:00:ab:cd:ef and its link up.
    fn card() -> Model {
        let config = [0x52, 0x54, 0, 0xab, 0xcd, 0xef, 1, 0];
        StreamModel::new(DMA_PAGES, 1, F_MAC as u32, config, HEADER_LEN)
    }

    fn never_wait() {
        panic!("the driver waited for a transmit the model had completed");
    }

    #[test]
    fn comes_up_with_its_mac_and_posted_buffers() {
        let model = card();
        let dev = NetDevice::new(&model, &model.mem).unwrap();
        assert_eq!(dev.mac(), [0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
        let queues = model.queues.borrow();
        assert_eq!((queues[0].size, queues[1].size), (8, 8));
        assert_ne!(queues[0].desc, queues[1].desc, "a page per queue");
        drop(queues);
        // Every receive buffer is posted: the model can fill four, not a fifth.
        for i in 0..RX_BUFFERS {
            assert!(model.deliver(&[i as u8; 60]), "buffer {i}");
        }
        assert!(!model.deliver(&[9; 60]));
        // Another driver refuses the card before touching its status.
        let other = card();
        assert!(crate::virtio::rng::RngDevice::new(&other, &other.mem).is_err());
        assert_eq!(*other.status.borrow(), 0);
    }

    #[test]
    fn frames_go_out_without_the_header_and_bad_lengths_are_refused() {
        let model = card();
        let mut dev = NetDevice::new(&model, &model.mem).unwrap();
        let frame: Vec<u8> = (0..100u8).collect();
        dev.send(&frame, &mut never_wait).unwrap();
        dev.send(&[7; MAX_FRAME], &mut never_wait).unwrap();
        assert_eq!(model.wire.borrow().len(), 2);
        assert_eq!(model.wire.borrow()[0], frame);
        assert_eq!(model.wire.borrow()[1].len(), MAX_FRAME);
        for bad in [&[0u8; 13][..], &[0u8; MAX_FRAME + 1][..]] {
            assert_eq!(dev.send(bad, &mut never_wait), Err(NetError::BadFrame));
        }
        // Many sends recycle the transmit queue's descriptors.
        for i in 0..40u8 {
            dev.send(&[i; 60], &mut never_wait).unwrap();
        }
        assert_eq!(model.wire.borrow().len(), 42);
    }

    #[test]
    fn received_frames_come_in_order_and_buffers_are_reposted() {
        let model = card();
        let mut dev = NetDevice::new(&model, &model.mem).unwrap();
        let mut out = [0u8; MAX_FRAME];
        assert_eq!(dev.receive(&mut out), Ok(None));
        // More frames than buffers, one at a time: each buffer goes back after its frame.
        for i in 0..20u8 {
            let frame = [i; 64];
            assert!(model.deliver(&frame), "frame {i}: no buffer posted");
            assert_eq!(dev.receive(&mut out), Ok(Some(64)));
            assert_eq!(out[..64], frame);
        }
        // A card that needs a reset is an error, not a silent wait.
        *model.status.borrow_mut() |= crate::virtio::transport::STATUS_NEEDS_RESET;
        assert_eq!(dev.receive(&mut out), Err(NetError::Device));
    }
}
