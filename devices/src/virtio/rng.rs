//! virtio-rng (virtio 1.2 section 5.4): fills the driver's buffers from the host's getrandom.

use super::chain::write_at;
use super::{
    DeviceError, DeviceQueues, VirtioDevice, DEVICE_ID_RNG, VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
};

/// Maximum size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// At most this many bytes are returned per request (the spec allows returning fewer).
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// A virtio entropy device.
#[derive(Debug, Default)]
pub struct Rng {
    buf: Vec<u8>,
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Self {
        Rng::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        DEVICE_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_INDIRECT_DESC | VIRTIO_F_EVENT_IDX
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process_queue(
        &mut self,
        queue: usize,
        queues: &mut DeviceQueues<'_>,
    ) -> Result<(), DeviceError> {
        let mem = queues.mem();
        while let Some(chain) = queues.pop(queue)? {
            if !chain.readable.is_empty() {
                queues.log(format_args!(
                    "entropy request with device-readable buffers: they are ignored"
                ));
            }
            let want = usize::try_from(chain.writable_len())
                .unwrap_or(usize::MAX)
                .min(MAX_BYTES_PER_REQUEST);
            self.buf.resize(want, 0);
            let len = match getrandom::fill(&mut self.buf) {
                Ok(()) if write_at(mem, &chain.writable, 0, &self.buf) => want,
                Ok(()) => 0,
                Err(e) => {
                    queues.log(format_args!("host getrandom failed: {e}"));
                    0
                }
            };
            queues.add_used(queue, chain.head, len as u32)?;
        }
        Ok(())
    }

    fn reset(&mut self) {}
}
