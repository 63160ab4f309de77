//! The network-card object a network driver (`netd`) serves: a clustered object over the
//! driver's card ([`NetBackend`]), with one rep per CPU that calls it. The card itself is
//! one device under one lock (a frame goes out or comes in whole); each rep counts the frames
//! its CPU moved, so the counts take no shared cache line, and the MAC address is read without
//! the lock.
//!
//! The object is reached through [`crate::cobj`] like any clustered object, so a later driver
//! may replace it (a restarted card, a card with several queues) by hot-swapping.

use alloc::boxed::Box;
use alloc::sync::Arc;

use crate::cobj::{PerCpuReps, Root};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::virtio::net::NetError;

/// The card under the object: what a driver implements.
pub trait NetBackend: Send {
    /// The card's MAC address.
    fn mac(&self) -> [u8; 6];
    /// Sends one Ethernet frame, for a call on `cpu`.
    fn send(&mut self, frame: &[u8], cpu: usize) -> Result<(), NetError>;
    /// The next frame into `out`, waiting until `deadline_ns` (boot clock) at most; returns its
    /// length (0: none by the deadline), for a call on `cpu`.
    fn receive(&mut self, out: &mut [u8], deadline_ns: u64, cpu: usize) -> Result<usize, NetError>;
}

/// Frames a CPU's rep has moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames sent.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
}

impl NetStats {
    /// The sum of two counts.
    pub fn plus(self, other: NetStats) -> NetStats {
        NetStats {
            sent: self.sent + other.sent,
            received: self.received + other.received,
        }
    }
}

/// The network-card interface (one rep per CPU).
pub trait NetCard: Send + Sync {
    /// The card's MAC address.
    fn mac(&self) -> [u8; 6];
    /// Sends one Ethernet frame.
    fn send(&self, frame: &[u8]) -> Result<(), NetError>;
    /// The next frame into `out`, waiting until `deadline_ns` at most; returns its length (0:
    /// none by the deadline).
    fn receive(&self, out: &mut [u8], deadline_ns: u64) -> Result<usize, NetError>;
    /// The frames this CPU's rep has moved.
    fn stats(&self) -> NetStats;
}

/// State shared by the reps.
struct Shared<B> {
    backend: Mutex<B>,
    mac: [u8; 6],
}

/// CPU `cpu`'s rep, with its counts.
struct CpuRep<B> {
    shared: Arc<Shared<B>>,
    cpu: usize,
    sent: AtomicU64,
    received: AtomicU64,
}

fn make_rep<B: NetBackend + 'static>(shared: &Arc<Shared<B>>, cpu: usize) -> Box<dyn NetCard> {
    Box::new(CpuRep {
        shared: Arc::clone(shared),
        cpu,
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
    })
}

/// The root of a network-card object over `backend` for `cpus` CPUs.
pub fn root<B: NetBackend + 'static>(backend: B, cpus: usize) -> Box<dyn Root<dyn NetCard>> {
    let shared = Shared {
        mac: backend.mac(),
        backend: Mutex::new(backend),
    };
    Box::new(PerCpuReps::new(cpus.max(1), shared, make_rep::<B>))
}

impl<B: NetBackend> NetCard for CpuRep<B> {
    fn mac(&self) -> [u8; 6] {
        self.shared.mac
    }

    fn send(&self, frame: &[u8]) -> Result<(), NetError> {
        self.shared.backend.lock().send(frame, self.cpu)?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn receive(&self, out: &mut [u8], deadline_ns: u64) -> Result<usize, NetError> {
        let len = self
            .shared
            .backend
            .lock()
            .receive(out, deadline_ns, self.cpu)?;
        if len > 0 {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
        Ok(len)
    }

    fn stats(&self) -> NetStats {
        NetStats {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use super::*;
    use crate::cobj::testing::{on, ThreadCpus};
    use crate::cobj::CoManager;
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// A card that loops frames back, refusing runts as the virtio card does.
    struct Loopback {
        queue: VecDeque<Vec<u8>>,
        cpus_seen: Vec<usize>,
    }

    impl NetBackend for Loopback {
        fn mac(&self) -> [u8; 6] {
            [0x52, 0x54, 0, 0x12, 0x34, 0x56]
        }
        fn send(&mut self, frame: &[u8], cpu: usize) -> Result<(), NetError> {
            if frame.len() < 14 {
                return Err(NetError::BadFrame);
            }
            self.cpus_seen.push(cpu);
            self.queue.push_back(frame.to_vec());
            Ok(())
        }
        fn receive(&mut self, out: &mut [u8], _: u64, cpu: usize) -> Result<usize, NetError> {
            self.cpus_seen.push(cpu);
            Ok(self.queue.pop_front().map_or(0, |f| {
                out[..f.len()].copy_from_slice(&f);
                f.len()
            }))
        }
    }

    #[test]
    fn frames_pass_through_and_each_cpu_counts_its_own() {
        let card = Loopback {
            queue: VecDeque::new(),
            cpus_seen: Vec::new(),
        };
        let cos = CoManager::new(ThreadCpus(2), 4);
        let net = cos.create("net0", root(card, 2)).expect("room");
        let frame: Vec<u8> = (0..60).collect();
        assert_eq!(on(0, || cos.call(net, |c| c.send(&frame))), Ok(()));
        assert_eq!(on(0, || cos.call(net, |c| c.send(&frame[..40]))), Ok(()));
        assert_eq!(
            on(0, || cos.call(net, |c| c.send(&frame[..13]))),
            Err(NetError::BadFrame)
        );
        let mut out = [0u8; 1514];
        assert_eq!(on(1, || cos.call(net, |c| c.receive(&mut out, 0))), Ok(60));
        assert_eq!(out[..60], frame[..]);
        assert_eq!(on(1, || cos.call(net, |c| c.receive(&mut out, 0))), Ok(40));
        assert_eq!(on(1, || cos.call(net, |c| c.receive(&mut out, 0))), Ok(0));
        assert_eq!(on(1, || cos.call(net, |c| c.mac()))[0], 0x52);
        let mut per_cpu = [NetStats::default(); 2];
        cos.for_each_rep(net, |cpu, rep| per_cpu[cpu] = rep.stats());
        assert_eq!(
            per_cpu,
            [
                NetStats {
                    sent: 2,
                    received: 0
                },
                NetStats {
                    sent: 0,
                    received: 2
                }
            ]
        );
        cos.with_root(net, |root| {
            let root = root
                .as_any()
                .downcast_ref::<PerCpuReps<dyn NetCard, Shared<Loopback>>>()
                .expect("the card's root");
            let seen = &root.shared().backend.lock().cpus_seen;
            assert_eq!(seen[..], [0, 0, 1, 1, 1], "each call told the card its CPU");
        });
    }
}
