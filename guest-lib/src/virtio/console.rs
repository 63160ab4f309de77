//! A virtio-console driver (virtio 1.x, section 5.3) for a single port, without multiport:
//! queue 0 receives (device-writable buffers kept posted), queue 1 transmits. Writes are not
//! waited for here: [`ConsoleDevice::start_write`] queues one buffer and returns a ticket that
//! [`ConsoleDevice::write_done`] reports on, so several writers can each have a buffer in flight
//! while none holds the device meanwhile. Input is taken into a buffer of at most
//! [`INPUT_LIMIT`] bytes; a receive buffer goes back to the device only while that has room for
//! all it can hold, so the device waits rather than the driver dropping input.
//!
//! DMA memory ([`DMA_PAGES`] pages): the receive queue's page, the transmit queue's page, a page
//! of [`RX_BUFFERS`] receive buffers, then [`TX_BUFFERS`] transmit pages.

use alloc::collections::VecDeque;

use super::queue::{Buffer, Dma, QueueError, SplitQueue};
use super::transport::{Regs, Transport, TransportError, STATUS_NEEDS_RESET};

/// Pages of DMA memory the driver needs.
pub const DMA_PAGES: usize = 3 + TX_BUFFERS;
/// Receive buffers kept posted to the device.
pub const RX_BUFFERS: usize = 4;
/// Bytes of each receive buffer.
pub const RX_BUFFER_SIZE: usize = 1024;
/// Transmit buffers (a page each): how many writes may be in flight at once.
pub const TX_BUFFERS: usize = 2;
/// Bytes one transmit buffer carries: the most one [`ConsoleDevice::start_write`] takes.
pub const TX_BUFFER_SIZE: usize = 4096;
/// Most bytes of input held for readers.
pub const INPUT_LIMIT: usize = 16 * 1024;
/// Entries of each queue.
pub const QUEUE_SIZE: u16 = 8;

const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
/// Offset of receive buffer `i`.
const fn rx_buffer(i: usize) -> usize {
    2 * 4096 + i * RX_BUFFER_SIZE
}
/// Offset of transmit buffer `i`.
const fn tx_buffer(i: usize) -> usize {
    (3 + i) * 4096
}

/// Why the console device failed.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// An operation code or length the server does not take (an empty write).
    BadRequest = 1,
    /// The device needs a reset, broke the queue protocol, or did not take a write.
    Device = 2,
    /// Not a virtio-console device, or it could not be set up. (Code 3 is the console
    /// protocol's "input ended", which a device port never says.)
    Setup = 4,
}

impl From<TransportError> for ConsoleError {
    fn from(_: TransportError) -> ConsoleError {
        ConsoleError::Setup
    }
}

impl From<QueueError> for ConsoleError {
    fn from(_: QueueError) -> ConsoleError {
        ConsoleError::Device
    }
}

/// A transmit buffer handed to the device, for [`ConsoleDevice::write_done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteTicket(pub(crate) u64);

/// A virtio-console device with its two queues and the input taken from it.
#[derive(Debug)]
pub struct ConsoleDevice<R: Regs, D: Dma> {
    transport: Transport<R>,
    dma: D,
    rx: SplitQueue,
    tx: SplitQueue,
    /// The head descriptor of each posted receive buffer (`None`: not posted).
    rx_posted: [Option<u16>; RX_BUFFERS],
    /// The head descriptor and ticket of each transmit buffer in flight.
    tx_in_flight: [Option<(u16, WriteTicket)>; TX_BUFFERS],
    next_ticket: u64,
    input: VecDeque<u8>,
}

impl<R: Regs, D: Dma> ConsoleDevice<R, D> {
    /// Brings the device in `regs` up with its queues and buffers in `dma` (zeroed,
    /// [`DMA_PAGES`] pages), and posts every receive buffer.
    pub fn new(regs: R, dma: D) -> Result<Self, ConsoleError> {
        let found = Transport::probe(&regs)?;
        if found != super::DEVICE_ID_CONSOLE {
            return Err(TransportError::WrongDevice(found).into());
        }
        let transport = Transport::negotiate(regs, 0)?;
        let rx = transport.queue_at::<ConsoleError>(RX_QUEUE, QUEUE_SIZE, 0, &dma)?;
        let tx = transport.queue_at::<ConsoleError>(TX_QUEUE, QUEUE_SIZE, 4096, &dma)?;
        transport.driver_ok();
        let mut dev = ConsoleDevice {
            transport,
            dma,
            rx,
            tx,
            rx_posted: [None; RX_BUFFERS],
            tx_in_flight: [None; TX_BUFFERS],
            next_ticket: 0,
            input: VecDeque::new(),
        };
        dev.repost()?;
        Ok(dev)
    }

    /// Takes what the device has finished: transmit buffers become free, received bytes join
    /// the input, and receive buffers go back while the input has room.
    fn reclaim(&mut self) -> Result<(), ConsoleError> {
        while let Some((head, _)) = self.tx.pop_used(&self.dma)? {
            let slot = self
                .tx_in_flight
                .iter_mut()
                .find(|s| s.is_some_and(|(h, _)| h == head))
                .ok_or(ConsoleError::Device)?;
            *slot = None;
        }
        while let Some((head, written)) = self.rx.pop_used(&self.dma)? {
            let i = self
                .rx_posted
                .iter()
                .position(|&h| h == Some(head))
                .ok_or(ConsoleError::Device)?;
            self.rx_posted[i] = None;
            let mut bytes = [0u8; RX_BUFFER_SIZE];
            let n = (written as usize).min(RX_BUFFER_SIZE);
            self.dma.read_bytes(rx_buffer(i), &mut bytes[..n]);
            self.input.extend(&bytes[..n]);
        }
        self.repost()?;
        if self.transport.status() & STATUS_NEEDS_RESET != 0 {
            return Err(ConsoleError::Device);
        }
        Ok(())
    }

    /// Hands unposted receive buffers back to the device while the input can hold what they may
    /// bring.
    fn repost(&mut self) -> Result<(), ConsoleError> {
        let posted = self.rx_posted.iter().filter(|p| p.is_some()).count();
        let room = INPUT_LIMIT.saturating_sub(self.input.len()) / RX_BUFFER_SIZE;
        let mut more = room.saturating_sub(posted);
        let mut any = false;
        for i in 0..RX_BUFFERS {
            if more == 0 {
                break;
            }
            if self.rx_posted[i].is_none() {
                let buffer = Buffer {
                    phys: self.dma.phys(rx_buffer(i)),
                    len: RX_BUFFER_SIZE as u32,
                    device_writes: true,
                };
                self.rx_posted[i] = Some(self.rx.push(&self.dma, &[buffer])?);
                more -= 1;
                any = true;
            }
        }
        if any {
            self.transport.notify(RX_QUEUE);
        }
        Ok(())
    }

    /// After the device's interrupt: acknowledges it and takes what the device finished;
    /// returns the bytes of input waiting.
    pub fn service(&mut self) -> Result<usize, ConsoleError> {
        self.transport.ack_interrupt();
        self.reclaim()?;
        Ok(self.input.len())
    }

    /// Queues up to [`TX_BUFFER_SIZE`] bytes of `bytes` for output in a free transmit buffer;
    /// returns how many and the ticket to wait on, or `None` while every buffer is in flight.
    pub fn start_write(
        &mut self,
        bytes: &[u8],
    ) -> Result<Option<(usize, WriteTicket)>, ConsoleError> {
        self.reclaim()?;
        if bytes.is_empty() {
            return Err(ConsoleError::BadRequest);
        }
        let Some(i) = self.tx_in_flight.iter().position(Option::is_none) else {
            return Ok(None);
        };
        let n = bytes.len().min(TX_BUFFER_SIZE);
        self.dma.write_bytes(tx_buffer(i), &bytes[..n]);
        let buffer = Buffer {
            phys: self.dma.phys(tx_buffer(i)),
            len: n as u32,
            device_writes: false,
        };
        let head = self.tx.push(&self.dma, &[buffer])?;
        let ticket = WriteTicket(self.next_ticket);
        self.next_ticket += 1;
        self.tx_in_flight[i] = Some((head, ticket));
        self.transport.notify(TX_QUEUE);
        Ok(Some((n, ticket)))
    }

    /// Whether the device has taken the write of `ticket`.
    pub fn write_done(&mut self, ticket: WriteTicket) -> Result<bool, ConsoleError> {
        self.reclaim()?;
        Ok(!self
            .tx_in_flight
            .iter()
            .any(|s| s.is_some_and(|(_, t)| t == ticket)))
    }

    /// Moves input into `out`: at most one line (as a terminal in canonical mode gives it);
    /// returns the count, 0 when none waits. With an empty `out`, the bytes waiting.
    pub fn read_line(&mut self, out: &mut [u8]) -> Result<usize, ConsoleError> {
        self.reclaim()?;
        if out.is_empty() {
            return Ok(self.input.len());
        }
        let n = take_line(&mut self.input, out);
        // Room again: buffers held back may go to the device.
        self.repost()?;
        Ok(n)
    }
}

/// Moves the first line of `input` (through its newline, or all of it) into `out`, as much as
/// fits; returns the count.
pub(crate) fn take_line(input: &mut VecDeque<u8>, out: &mut [u8]) -> usize {
    let line = input
        .iter()
        .position(|&b| b == b'\n')
        .map_or(input.len(), |newline| newline + 1);
    let n = line.min(out.len());
    for (slot, byte) in out.iter_mut().zip(input.drain(..n)) {
        *slot = byte;
    }
    n
}

#[cfg(test)]
mod tests {
    //! The driver against a model console: what it transmits lands on the model's "wire", and
    //! the test delivers input into the posted receive buffers.
    use super::*;
    use crate::virtio::testing::StreamModel;
    use crate::virtio::transport::STATUS_DRIVER_OK;
    use alloc::vec;
    use alloc::vec::Vec;

    fn console() -> StreamModel {
        StreamModel::new(DMA_PAGES, 3, 0, [0; 8], 0)
    }

    /// Writes all of `bytes`, failing the test if the device keeps a buffer.
    fn write_all(
        dev: &mut ConsoleDevice<&StreamModel, &crate::virtio::testing::ModelMemory>,
        bytes: &[u8],
    ) {
        let mut done = 0;
        while done < bytes.len() {
            let (n, ticket) = dev
                .start_write(&bytes[done..])
                .unwrap()
                .expect("a free buffer");
            assert!(dev.write_done(ticket).unwrap());
            done += n;
        }
    }

    #[test]
    fn comes_up_with_both_queues_and_refuses_other_devices() {
        let model = console();
        let _dev = ConsoleDevice::new(&model, &model.mem).unwrap();
        assert_ne!(*model.status.borrow() & STATUS_DRIVER_OK, 0);
        let queues = model.queues.borrow();
        assert_eq!((queues[0].size, queues[1].size), (8, 8));
        drop(queues);
        for i in 0..RX_BUFFERS {
            assert!(model.deliver(&[b'a' + i as u8]), "buffer {i}");
        }
        assert!(!model.deliver(b"x"), "only RX_BUFFERS are posted");
        // A card is not a console, and is left alone.
        let card = StreamModel::new(DMA_PAGES, 1, 0, [0; 8], 0);
        assert_eq!(
            ConsoleDevice::new(&card, &card.mem).err(),
            Some(ConsoleError::Setup)
        );
        assert_eq!(*card.status.borrow(), 0);
    }

    #[test]
    fn writes_reach_the_device_in_order_in_page_sized_pieces() {
        let model = console();
        let mut dev = ConsoleDevice::new(&model, &model.mem).unwrap();
        write_all(&mut dev, b"hello, ");
        let long: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        write_all(&mut dev, &long);
        let wire = model.wire.borrow();
        let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
        assert_eq!(lens, [7, 4096, 4096, 1808]);
        assert_eq!(wire.concat(), [&b"hello, "[..], &long].concat());
        drop(wire);
        assert_eq!(dev.start_write(&[]).err(), Some(ConsoleError::BadRequest));
    }

    #[test]
    fn writers_wait_for_their_own_buffer_and_a_free_one() {
        let model = console();
        let mut dev = ConsoleDevice::new(&model, &model.mem).unwrap();
        model.hold_transmits.set(true);
        let (_, first) = dev.start_write(b"one").unwrap().unwrap();
        let (_, second) = dev.start_write(b"two").unwrap().unwrap();
        assert_ne!(first, second);
        // Both buffers are in flight: a third writer must wait.
        assert_eq!(dev.start_write(b"three").unwrap(), None);
        assert!(!dev.write_done(first).unwrap());
        model.complete_held();
        assert!(dev.write_done(first).unwrap() && dev.write_done(second).unwrap());
        let (_, third) = dev.start_write(b"three").unwrap().unwrap();
        assert!(!dev.write_done(third).unwrap());
        // A device that needs a reset fails the wait instead of keeping it for ever.
        *model.status.borrow_mut() |= STATUS_NEEDS_RESET;
        assert_eq!(dev.write_done(third), Err(ConsoleError::Device));
    }

    #[test]
    fn input_comes_a_line_at_a_time_and_buffers_are_reposted() {
        let model = console();
        let mut dev = ConsoleDevice::new(&model, &model.mem).unwrap();
        let mut out = [0u8; 64];
        assert_eq!(dev.read_line(&mut out), Ok(0));
        assert!(model.deliver(b"first line\nsecond "));
        assert!(model.deliver(b"line\nno newline yet"));
        assert_eq!(dev.service(), Ok(37));
        assert_eq!(dev.read_line(&mut []), Ok(37), "an empty read counts");
        assert_eq!(dev.read_line(&mut out), Ok(11));
        assert_eq!(&out[..11], b"first line\n");
        assert_eq!(dev.read_line(&mut out), Ok(12));
        assert_eq!(&out[..12], b"second line\n");
        // A short buffer takes part of a line; the rest stays.
        assert_eq!(dev.read_line(&mut out[..3]), Ok(3));
        assert_eq!(dev.read_line(&mut out), Ok(11));
        assert_eq!(&out[..11], b"newline yet");
        // Many deliveries, one at a time: each buffer goes back after it is read.
        for i in 0..50u8 {
            assert!(model.deliver(&[b'0' + i % 10, b'\n']), "delivery {i}");
            assert_eq!(dev.read_line(&mut out), Ok(2));
        }
    }

    #[test]
    fn input_beyond_the_limit_waits_in_the_device() {
        let model = console();
        let mut dev = ConsoleDevice::new(&model, &model.mem).unwrap();
        let chunk = vec![b'z'; RX_BUFFER_SIZE];
        let mut delivered = 0;
        // Nobody reads: the driver stops posting once the input could overflow its limit.
        for _ in 0..100 {
            if !model.deliver(&chunk) {
                break;
            }
            delivered += chunk.len();
            dev.service().unwrap();
        }
        assert_eq!(delivered, INPUT_LIMIT);
        assert_eq!(dev.service(), Ok(INPUT_LIMIT));
        // Reading makes room, and the device may bring more.
        let mut out = vec![0u8; 2 * RX_BUFFER_SIZE];
        assert_eq!(dev.read_line(&mut out), Ok(2 * RX_BUFFER_SIZE));
        assert!(model.deliver(&chunk) && model.deliver(&chunk));
        assert!(!model.deliver(&chunk));
        assert_eq!(dev.service(), Ok(INPUT_LIMIT));
    }
}
