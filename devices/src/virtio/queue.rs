//! Per-queue state behind the MMIO registers, and the view of the queues a device gets while it
//! processes them. Rings are handled by `virtio-queue`; chains by [`super::chain`].

use std::fmt;

use thiserror::Error;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::chain::{parse_chain, range_in_memory, Chain, ChainError};
use crate::ratelimit::RateLimitedLog;

/// A queue-protocol violation by the driver.
#[derive(Debug, Error)]
pub enum QueueError {
    /// The device asked for a queue it does not have.
    #[error("no queue {0}")]
    NoSuchQueue(usize),
    /// The queue is not ready (QueueReady is 0).
    #[error("queue {0} is not ready")]
    NotReady(usize),
    /// The available ring index moved more than the queue size past the last one seen.
    #[error("queue {queue}: available ring index jumped by more than the queue size")]
    AvailIndex {
        /// The queue.
        queue: usize,
    },
    /// A ring could not be accessed.
    #[error("queue {queue}: ring access failed: {source}")]
    Ring {
        /// The queue.
        queue: usize,
        /// What failed.
        #[source]
        source: virtio_queue::Error,
    },
    /// A malformed descriptor chain.
    #[error("queue {queue}: {source}")]
    Chain {
        /// The queue.
        queue: usize,
        /// What was wrong with it.
        #[source]
        source: ChainError,
    },
}

/// Why QueueReady=1 was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum QueueSetupError {
    /// QueueNum is zero, above QueueNumMax, or not a power of two.
    #[error("queue size {size} is not a power of two in 1..={max}")]
    BadSize {
        /// The size written.
        size: u32,
        /// QueueNumMax.
        max: u16,
    },
    /// A ring address is misaligned, zero, or not in guest memory.
    #[error("{area} area at {addr:#x} is misaligned or not in guest memory")]
    BadAddress {
        /// Which area.
        area: &'static str,
        /// Its address.
        addr: u64,
    },
}

/// One queue's registers and, once ready, its ring state.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    pub(crate) max_size: u16,
    pub(crate) num: u32,
    pub(crate) desc: u64,
    pub(crate) driver: u64,
    pub(crate) device: u64,
    pub(crate) queue: Option<Queue>,
    pub(crate) has_used: bool,
}

impl QueueSlot {
    pub(crate) fn new(max_size: u16) -> Self {
        QueueSlot {
            max_size,
            num: u32::from(max_size),
            desc: 0,
            driver: 0,
            device: 0,
            queue: None,
            has_used: false,
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = QueueSlot::new(self.max_size);
    }

    pub(crate) fn ready(&self) -> bool {
        self.queue.is_some()
    }

    /// Checks the registers and builds the ring state (QueueReady=1).
    pub(crate) fn enable(
        &mut self,
        mem: &GuestMemoryMmap,
        event_idx: bool,
    ) -> Result<(), QueueSetupError> {
        let n = self.num;
        if n == 0 || n > u32::from(self.max_size) || !n.is_power_of_two() {
            return Err(QueueSetupError::BadSize {
                size: n,
                max: self.max_size,
            });
        }
        let n64 = u64::from(n);
        let areas = [
            ("descriptor", self.desc, 16, 16 * n64),
            ("driver", self.driver, 2, 6 + 2 * n64),
            ("device", self.device, 4, 6 + 8 * n64),
        ];
        for (area, addr, align, len) in areas {
            // An avail ring at 0 is also refused: virtio-queue treats it as "not set up".
            if addr % align != 0 || addr == 0 || !range_in_memory(mem, GuestAddress(addr), len) {
                return Err(QueueSetupError::BadAddress { area, addr });
            }
        }
        let bad = |area, addr| QueueSetupError::BadAddress { area, addr };
        let mut q = Queue::new(self.max_size).map_err(|_| QueueSetupError::BadSize {
            size: n,
            max: self.max_size,
        })?;
        q.try_set_size(n as u16)
            .map_err(|_| QueueSetupError::BadSize {
                size: n,
                max: self.max_size,
            })?;
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(|_| bad("descriptor", self.desc))?;
        q.try_set_avail_ring_address(GuestAddress(self.driver))
            .map_err(|_| bad("driver", self.driver))?;
        q.try_set_used_ring_address(GuestAddress(self.device))
            .map_err(|_| bad("device", self.device))?;
        q.set_event_idx(event_idx);
        q.set_ready(true);
        self.queue = Some(q);
        Ok(())
    }
}

/// The queues of one device as it processes them: pops validated chains, returns used buffers,
/// and logs (rate-limited) what the driver did wrong.
pub struct DeviceQueues<'a> {
    pub(crate) mem: &'a GuestMemoryMmap,
    pub(crate) slots: &'a mut [QueueSlot],
    pub(crate) indirect: bool,
    pub(crate) log: &'a mut RateLimitedLog,
}

impl<'a> DeviceQueues<'a> {
    /// Guest memory.
    pub fn mem(&self) -> &'a GuestMemoryMmap {
        self.mem
    }

    /// Whether queue `queue` exists and is ready.
    pub fn is_ready(&self, queue: usize) -> bool {
        self.slots.get(queue).is_some_and(QueueSlot::ready)
    }

    /// Whether queue `queue` has a chain available, without taking it.
    pub fn has_available(&mut self, queue: usize) -> Result<bool, QueueError> {
        let mem = self.mem;
        let q = self.queue_mut(queue)?;
        let avail = q
            .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
            .map_err(|source| QueueError::Ring { queue, source })?;
        Ok(avail.0 != q.next_avail())
    }

    fn queue_mut(&mut self, queue: usize) -> Result<&mut Queue, QueueError> {
        self.slots
            .get_mut(queue)
            .ok_or(QueueError::NoSuchQueue(queue))?
            .queue
            .as_mut()
            .ok_or(QueueError::NotReady(queue))
    }

    /// Takes the next available chain of queue `queue`, validated; `Ok(None)` when the ring is
    /// empty (notifications are then re-enabled, with EVENT_IDX by publishing avail_event).
    pub fn pop(&mut self, queue: usize) -> Result<Option<Chain>, QueueError> {
        let mem = self.mem;
        let indirect = self.indirect;
        let q = self.queue_mut(queue)?;
        for _ in 0..2 {
            let head = match q.iter(mem) {
                Ok(mut it) => it.next().map(|c| c.head_index()),
                Err(virtio_queue::Error::InvalidAvailRingIndex) => {
                    return Err(QueueError::AvailIndex { queue })
                }
                Err(source) => return Err(QueueError::Ring { queue, source }),
            };
            if let Some(head) = head {
                let chain =
                    parse_chain(mem, GuestAddress(q.desc_table()), q.size(), head, indirect)
                        .map_err(|source| QueueError::Chain { queue, source })?;
                return Ok(Some(chain));
            }
            let more = q
                .enable_notification(mem)
                .map_err(|source| QueueError::Ring { queue, source })?;
            if !more {
                return Ok(None);
            }
        }
        // The ring said there was more but yielded nothing twice: memory changed under us.
        Err(QueueError::AvailIndex { queue })
    }

    /// Puts chain `head` in the used ring of queue `queue` with `len` bytes written.
    pub fn add_used(&mut self, queue: usize, head: u16, len: u32) -> Result<(), QueueError> {
        let mem = self.mem;
        let q = self.queue_mut(queue)?;
        q.add_used(mem, head, len)
            .map_err(|source| QueueError::Ring { queue, source })?;
        if let Some(slot) = self.slots.get_mut(queue) {
            slot.has_used = true;
        }
        Ok(())
    }

    /// Logs one line about something the driver did (rate-limited per device).
    pub fn log(&mut self, args: fmt::Arguments<'_>) {
        self.log.log(args);
    }
}
