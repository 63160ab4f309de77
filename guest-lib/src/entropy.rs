//! The entropy-source object an entropy driver (`rngd`) serves: a clustered object whose reps
//! are the CPUs' pools of random bytes, in front of the driver's device ([`EntropyBackend`]).
//!
//! Each CPU's rep hands out bytes from its own pool, so a request served from the pool takes
//! no lock another CPU contends for. An empty pool is refilled from the device (under the
//! device's lock) with up to [`POOL_BYTES`] bytes. Every byte is handed out at most once, to
//! one caller, and is wiped from the pool as it goes.
//!
//! The object is reached through [`crate::cobj`] like any clustered object, so a later driver
//! may replace it (a restarted device, say) by hot-swapping.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::cobj::{PerCpuReps, Root};
use crate::sync::{counters, AtomicU64, Mutex, Ordering};
use crate::virtio::rng::RngError;

/// Bytes a CPU's pool holds (one device request's worth).
pub const POOL_BYTES: usize = crate::virtio::rng::MAX_REQUEST;

/// The device under the pools: what a driver implements.
pub trait EntropyBackend: Send {
    /// Fills the start of `out` with random bytes, for a call on `cpu`; returns how many (at
    /// least one).
    fn fill(&mut self, out: &mut [u8], cpu: usize) -> Result<usize, RngError>;
}

/// How a CPU's rep has served requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntropyStats {
    /// Bytes handed out.
    pub bytes: u64,
    /// Device requests made to refill the pool.
    pub refills: u64,
}

impl EntropyStats {
    /// The sum of two counts.
    pub fn plus(self, other: EntropyStats) -> EntropyStats {
        EntropyStats {
            bytes: self.bytes + other.bytes,
            refills: self.refills + other.refills,
        }
    }
}

/// The entropy-source interface (one rep per CPU).
pub trait EntropySource: Send + Sync {
    /// Fills the start of `out` with random bytes nobody else was given; returns how many
    /// (at least one unless `out` is empty; at most [`POOL_BYTES`]).
    fn get(&self, out: &mut [u8]) -> Result<usize, RngError>;
    /// How this CPU's rep has served requests.
    fn stats(&self) -> EntropyStats;
}

/// A CPU's pool: the bytes not yet handed out are `bytes[next..filled]`.
struct Pool {
    bytes: Box<[u8; POOL_BYTES]>,
    next: usize,
    filled: usize,
}

/// State shared by the reps: the device and every CPU's pool.
struct Shared<B> {
    backend: Mutex<B>,
    pools: Box<[Mutex<Pool>]>,
    bytes: Box<[AtomicU64]>,
    refills: Box<[AtomicU64]>,
}

/// CPU `cpu`'s rep.
struct CpuRep<B> {
    shared: Arc<Shared<B>>,
    cpu: usize,
}

fn make_rep<B: EntropyBackend + 'static>(
    shared: &Arc<Shared<B>>,
    cpu: usize,
) -> Box<dyn EntropySource> {
    Box::new(CpuRep {
        shared: Arc::clone(shared),
        cpu,
    })
}

/// The root of an entropy-source object over `backend` for `cpus` CPUs.
pub fn root<B: EntropyBackend + 'static>(
    backend: B,
    cpus: usize,
) -> Box<dyn Root<dyn EntropySource>> {
    let cpus = cpus.max(1);
    let shared = Shared {
        backend: Mutex::new(backend),
        pools: (0..cpus)
            .map(|_| {
                Mutex::new(Pool {
                    bytes: Box::new([0; POOL_BYTES]),
                    next: 0,
                    filled: 0,
                })
            })
            .collect::<Vec<_>>()
            .into_boxed_slice(),
        bytes: counters(cpus),
        refills: counters(cpus),
    };
    Box::new(PerCpuReps::new(cpus, shared, make_rep::<B>))
}

impl<B: EntropyBackend> EntropySource for CpuRep<B> {
    fn get(&self, out: &mut [u8]) -> Result<usize, RngError> {
        if out.is_empty() {
            return Ok(0);
        }
        let shared = &*self.shared;
        let mut pool = shared.pools[self.cpu].lock();
        if pool.next == pool.filled {
            let got = shared.backend.lock().fill(&mut pool.bytes[..], self.cpu)?;
            if got == 0 || got > POOL_BYTES {
                return Err(RngError::Device);
            }
            (pool.next, pool.filled) = (0, got);
            shared.refills[self.cpu].fetch_add(1, Ordering::Relaxed);
        }
        let Pool {
            bytes,
            next,
            filled,
        } = &mut *pool;
        let n = out.len().min(*filled - *next);
        let taken = &mut bytes[*next..*next + n];
        out[..n].copy_from_slice(taken);
        taken.fill(0);
        *next += n;
        shared.bytes[self.cpu].fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn stats(&self) -> EntropyStats {
        EntropyStats {
            bytes: self.shared.bytes[self.cpu].load(Ordering::Relaxed),
            refills: self.shared.refills[self.cpu].load(Ordering::Relaxed),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use super::*;
    use crate::cobj::testing::{on, ThreadCpus};
    use crate::cobj::{CoManager, CoRef};
    use std::collections::BTreeSet;
    use std::thread;
    use std::vec;

    /// A device whose bytes are a counter's (as u16 pairs, so each pair is unique), giving
    /// `chunk` bytes per request, failing while `failing` is set.
    struct CountingDevice {
        next: u16,
        chunk: usize,
        failing: Arc<AtomicU64>,
    }

    impl EntropyBackend for CountingDevice {
        fn fill(&mut self, out: &mut [u8], _: usize) -> Result<usize, RngError> {
            if self.failing.load(Ordering::SeqCst) != 0 {
                return Err(RngError::Device);
            }
            let n = self.chunk.min(out.len()) & !1;
            for pair in out[..n].chunks_mut(2) {
                pair.copy_from_slice(&self.next.to_le_bytes());
                self.next = self.next.wrapping_add(1);
            }
            Ok(n)
        }
    }

    fn setup(
        cpus: usize,
        chunk: usize,
    ) -> (
        CoManager<ThreadCpus>,
        CoRef<dyn EntropySource>,
        Arc<AtomicU64>,
    ) {
        let failing = Arc::new(AtomicU64::new(0));
        let device = CountingDevice {
            next: 0,
            chunk,
            failing: Arc::clone(&failing),
        };
        let cos = CoManager::new(ThreadCpus(cpus), 4);
        let source = cos.create("random", root(device, cpus)).expect("room");
        (cos, source, failing)
    }

    fn total(cos: &CoManager<ThreadCpus>, source: CoRef<dyn EntropySource>) -> EntropyStats {
        let mut sum = EntropyStats::default();
        cos.for_each_rep(source, |_, rep| sum = sum.plus(rep.stats()));
        sum
    }

    #[test]
    fn each_cpu_serves_from_its_own_pool_and_refills_it_when_empty() {
        let (cos, source, failing) = setup(2, 64);
        let mut out = [0u8; 40];
        assert_eq!(on(0, || cos.call(source, |s| s.get(&mut out))), Ok(40));
        assert_eq!(out[..4], [0, 0, 1, 0], "the device's first bytes");
        // The rest of the pool's 64 bytes, then a refill.
        assert_eq!(on(0, || cos.call(source, |s| s.get(&mut out))), Ok(24));
        assert_eq!(out[..2], [20, 0]);
        // CPU 1 has its own pool: a refill of its own, not CPU 0's bytes.
        assert_eq!(on(1, || cos.call(source, |s| s.get(&mut out[..8]))), Ok(8));
        assert_eq!(out[..2], [32, 0]);
        assert_eq!(
            total(&cos, source),
            EntropyStats {
                bytes: 72,
                refills: 2
            }
        );
        assert_eq!(on(1, || cos.call(source, |s| s.get(&mut []))), Ok(0));
        // A device failure is reported once the pool is empty, not before.
        failing.store(1, Ordering::SeqCst);
        assert_eq!(on(1, || cos.call(source, |s| s.get(&mut out))), Ok(40));
        assert_eq!(on(1, || cos.call(source, |s| s.get(&mut out))), Ok(16));
        assert_eq!(
            on(1, || cos.call(source, |s| s.get(&mut out))),
            Err(RngError::Device)
        );
        failing.store(0, Ordering::SeqCst);
        assert_eq!(on(1, || cos.call(source, |s| s.get(&mut out))), Ok(40));
    }

    #[test]
    fn no_byte_is_handed_out_twice_across_cpus() {
        const CPUS: usize = 4;
        let (cos, source, _) = setup(CPUS, POOL_BYTES);
        let cos = Arc::new(cos);
        let threads: Vec<_> = (0..CPUS)
            .map(|cpu| {
                let cos = Arc::clone(&cos);
                thread::spawn(move || {
                    let mut pairs = Vec::new();
                    for round in 0..200 {
                        let mut out = vec![0u8; 2 + 2 * (round % 50)];
                        let n = on(cpu, || cos.call(source, |s| s.get(&mut out))).unwrap();
                        assert!(n % 2 == 0 && n > 0, "whole pairs: {n}");
                        pairs.extend(out[..n].chunks(2).map(|p| u16::from_le_bytes([p[0], p[1]])));
                    }
                    pairs
                })
            })
            .collect();
        let mut seen = BTreeSet::new();
        let mut handed = 0;
        for t in threads {
            for pair in t.join().unwrap() {
                handed += 1;
                assert!(seen.insert(pair), "pair {pair} handed out twice");
            }
        }
        assert_eq!(total(&cos, source).bytes, 2 * handed);
    }
}
