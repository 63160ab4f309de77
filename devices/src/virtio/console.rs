//! virtio-console (virtio 1.2 section 5.3), one port, no multiport: what the guest transmits goes
//! to a `Write` sink; what the VMM pushes into a [`ConsoleInput`] is delivered on the receive
//! queue (the VMM calls `MmioTransport::poll` after pushing). An input source
//! ([`Console::with_source`], a file or a non-blocking FIFO) is read into the input whenever it
//! has room, on each receive notification and poll, so a source of any size goes in turns.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use super::block::copy_config;
use super::chain::{read_at, write_at};
use super::{
    DeviceError, DeviceQueues, VirtioDevice, DEVICE_ID_CONSOLE, VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
};

/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue (host to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (guest to host).
pub const TX_QUEUE: usize = 1;
/// Feature: the emergency-write config field.
pub const VIRTIO_CONSOLE_F_EMERG_WRITE: u64 = 1 << 2;
/// Bytes of input held for the guest at most; pushes beyond it are cut short.
pub const INPUT_CAPACITY: usize = 64 * 1024;

const EMERG_WR_OFFSET: u64 = 8;
const CONFIG_LEN: usize = 12;
const TX_CHUNK: usize = 4096;

/// Where the VMM pushes console input; cloneable, shared with the device.
#[derive(Clone, Debug, Default)]
pub struct ConsoleInput(Arc<Mutex<VecDeque<u8>>>);

impl ConsoleInput {
    fn lock(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `bytes` for the guest; returns how many fit (at most `INPUT_CAPACITY` are held).
    pub fn push(&self, bytes: &[u8]) -> usize {
        let mut q = self.lock();
        let n = bytes.len().min(INPUT_CAPACITY.saturating_sub(q.len()));
        q.extend(&bytes[..n]);
        n
    }

    /// Bytes waiting for the guest.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }
}

/// A single-port virtio console.
pub struct Console {
    out: Box<dyn Write + Send>,
    input: ConsoleInput,
    /// Where more input comes from, until it ends or fails.
    source: Option<Box<dyn Read + Send>>,
    config: [u8; CONFIG_LEN],
}

impl Console {
    /// A console writing the guest's output to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Console {
            out,
            input: ConsoleInput::default(),
            source: None,
            config: [0; CONFIG_LEN],
        }
    }

    /// The same console, taking its input from `source` as the guest takes it (a FIFO must be
    /// non-blocking: "would block" means "nothing yet"; the end of a file ends the input).
    pub fn with_source(mut self, source: Box<dyn Read + Send>) -> Self {
        self.source = Some(source);
        self
    }

    /// Reads the source into the input while it has room.
    fn fill_from_source(&mut self, queues: &mut DeviceQueues<'_>) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        let mut chunk = [0u8; TX_CHUNK];
        loop {
            let room = INPUT_CAPACITY.saturating_sub(self.input.pending());
            if room == 0 {
                return;
            }
            match source.read(&mut chunk[..room.min(TX_CHUNK)]) {
                Ok(0) => break,
                Ok(n) => {
                    self.input.push(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    queues.log(format_args!("console input failed: {e}; no more input"));
                    break;
                }
            }
        }
        self.source = None;
    }

    /// The handle through which the VMM pushes input.
    pub fn input(&self) -> ConsoleInput {
        self.input.clone()
    }

    fn receive(&mut self, queues: &mut DeviceQueues<'_>) -> Result<(), DeviceError> {
        if !queues.is_ready(RX_QUEUE) {
            return Ok(());
        }
        let mem = queues.mem();
        loop {
            self.fill_from_source(queues);
            if self.input.pending() == 0 {
                break;
            }
            let Some(chain) = queues.pop(RX_QUEUE)? else {
                break;
            };
            if !chain.readable.is_empty() {
                queues.log(format_args!(
                    "receive buffer with device-readable parts: returned unused"
                ));
                queues.add_used(RX_QUEUE, chain.head, 0)?;
                continue;
            }
            let room = usize::try_from(chain.writable_len()).unwrap_or(usize::MAX);
            let bytes: Vec<u8> = {
                let mut q = self.input.lock();
                let n = room.min(q.len());
                q.drain(..n).collect()
            };
            let len = if write_at(mem, &chain.writable, 0, &bytes) {
                bytes.len()
            } else {
                0
            };
            queues.add_used(RX_QUEUE, chain.head, len as u32)?;
        }
        Ok(())
    }

    fn transmit(&mut self, queues: &mut DeviceQueues<'_>) -> Result<(), DeviceError> {
        let mem = queues.mem();
        let mut buf = [0u8; TX_CHUNK];
        while let Some(chain) = queues.pop(TX_QUEUE)? {
            if !chain.writable.is_empty() {
                queues.log(format_args!(
                    "transmit buffer with device-writable parts: they are ignored"
                ));
            }
            let total = chain.readable_len();
            let mut done = 0u64;
            while done < total {
                let n = (total - done).min(TX_CHUNK as u64) as usize;
                if !read_at(mem, &chain.readable, done, &mut buf[..n]) {
                    break;
                }
                if let Err(e) = self.out.write_all(&buf[..n]) {
                    queues.log(format_args!("console output failed: {e}"));
                    break;
                }
                done += n as u64;
            }
            queues.add_used(TX_QUEUE, chain.head, 0)?;
        }
        if let Err(e) = self.out.flush() {
            queues.log(format_args!("console output failed: {e}"));
        }
        Ok(())
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        DEVICE_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_INDIRECT_DESC | VIRTIO_F_EVENT_IDX | VIRTIO_CONSOLE_F_EMERG_WRITE
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        copy_config(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // emerg_wr: the low byte is a character to print, available even before DRIVER_OK.
        if offset == EMERG_WR_OFFSET && !data.is_empty() {
            let _ = self.out.write_all(&data[..1]);
            let _ = self.out.flush();
        }
    }

    fn process_queue(
        &mut self,
        queue: usize,
        queues: &mut DeviceQueues<'_>,
    ) -> Result<(), DeviceError> {
        match queue {
            RX_QUEUE => self.receive(queues),
            _ => self.transmit(queues),
        }
    }

    fn poll(&mut self, queues: &mut DeviceQueues<'_>) -> Result<(), DeviceError> {
        self.receive(queues)
    }

    fn reset(&mut self) {}
}
