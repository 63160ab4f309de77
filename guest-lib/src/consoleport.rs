//! The console-port object a console driver (`hvcd`) serves: a clustered object over the
//! driver's device ([`PortBackend`]), with one rep per CPU that calls it. The device is one
//! port under one lock, held only while a write is queued or input is taken, never while a
//! writer waits for the device to take its buffer; each rep counts the bytes its CPU moved.
//! Readers that find no input are remembered, and the driver wakes them when its interrupt
//! says input has come ([`ConsolePort::input_arrived`]).
//!
//! The object is reached through [`crate::cobj`] like any clustered object, so a later driver
//! may replace it (a restarted device) by hot-swapping.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::cobj::{PerCpuReps, Root};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::virtio::console::{ConsoleDevice, ConsoleError, WriteTicket};
use crate::virtio::{Dma, Regs};

/// The port under the object: what a driver implements (a [`ConsoleDevice`] does).
pub trait PortBackend: Send {
    /// Queues a first part of `bytes` for output; `None` while the device holds every buffer.
    fn start_write(&mut self, bytes: &[u8]) -> Result<Option<(usize, WriteTicket)>, ConsoleError>;
    /// Whether the device has taken the write of `ticket`.
    fn write_done(&mut self, ticket: WriteTicket) -> Result<bool, ConsoleError>;
    /// At most a line of input into `out` (an empty `out`: the bytes waiting); 0 if none.
    fn read_line(&mut self, out: &mut [u8]) -> Result<usize, ConsoleError>;
    /// After the device's interrupt: the bytes of input waiting.
    fn service(&mut self) -> Result<usize, ConsoleError>;
}

impl<R: Regs + Send, D: Dma + Send> PortBackend for ConsoleDevice<R, D> {
    fn start_write(&mut self, bytes: &[u8]) -> Result<Option<(usize, WriteTicket)>, ConsoleError> {
        ConsoleDevice::start_write(self, bytes)
    }
    fn write_done(&mut self, ticket: WriteTicket) -> Result<bool, ConsoleError> {
        ConsoleDevice::write_done(self, ticket)
    }
    fn read_line(&mut self, out: &mut [u8]) -> Result<usize, ConsoleError> {
        ConsoleDevice::read_line(self, out)
    }
    fn service(&mut self) -> Result<usize, ConsoleError> {
        ConsoleDevice::service(self)
    }
}

/// Bytes a CPU's rep has moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Bytes written to the port.
    pub written: u64,
    /// Bytes read from it.
    pub read: u64,
}

impl PortStats {
    /// The sum of two counts.
    pub fn plus(self, other: PortStats) -> PortStats {
        PortStats {
            written: self.written + other.written,
            read: self.read + other.read,
        }
    }
}

/// The console-port interface (one rep per CPU).
pub trait ConsolePort: Send + Sync {
    /// Writes all of `bytes`, calling `pause` while the device has not taken them yet; returns
    /// once it has (so what was written is out even if the system stops next).
    fn write(&self, bytes: &[u8], pause: &mut dyn FnMut()) -> Result<usize, ConsoleError>;
    /// At most a line of input into `out` (an empty `out`: counts the bytes waiting). `None`
    /// when there is none: `reader` is then remembered until input comes.
    fn read(&self, out: &mut [u8], reader: u64) -> Result<Option<usize>, ConsoleError>;
    /// After the device's interrupt: the readers to wake (each once), if input waits or the
    /// device failed (their next read reports it).
    fn input_arrived(&self) -> Vec<u64>;
    /// The bytes this CPU's rep has moved.
    fn stats(&self) -> PortStats;
}

/// State shared by the reps.
struct Shared<B> {
    backend: Mutex<B>,
    /// Readers that found no input, in the order they asked.
    readers: Mutex<Vec<u64>>,
}

/// CPU `cpu`'s rep, with its counts.
struct CpuRep<B> {
    shared: Arc<Shared<B>>,
    written: AtomicU64,
    read: AtomicU64,
}

fn make_rep<B: PortBackend + 'static>(
    shared: &Arc<Shared<B>>,
    _cpu: usize,
) -> Box<dyn ConsolePort> {
    Box::new(CpuRep {
        shared: Arc::clone(shared),
        written: AtomicU64::new(0),
        read: AtomicU64::new(0),
    })
}

/// The root of a console-port object over `backend` for `cpus` CPUs.
pub fn root<B: PortBackend + 'static>(backend: B, cpus: usize) -> Box<dyn Root<dyn ConsolePort>> {
    let shared = Shared {
        backend: Mutex::new(backend),
        readers: Mutex::new(Vec::new()),
    };
    Box::new(PerCpuReps::new(cpus.max(1), shared, make_rep::<B>))
}

impl<B: PortBackend> ConsolePort for CpuRep<B> {
    fn write(&self, bytes: &[u8], pause: &mut dyn FnMut()) -> Result<usize, ConsoleError> {
        let mut done = 0;
        while done < bytes.len() {
            let started = self.shared.backend.lock().start_write(&bytes[done..])?;
            let Some((n, ticket)) = started else {
                pause();
                continue;
            };
            while !self.shared.backend.lock().write_done(ticket)? {
                pause();
            }
            done += n;
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(done)
    }

    fn read(&self, out: &mut [u8], reader: u64) -> Result<Option<usize>, ConsoleError> {
        // The reader list is taken first and held across the device's answer, so an interrupt
        // handled meanwhile either finds this reader on the list or left the input for it.
        let mut readers = self.shared.readers.lock();
        let n = self.shared.backend.lock().read_line(out)?;
        if n == 0 {
            if !readers.contains(&reader) {
                readers.push(reader);
            }
            return Ok(None);
        }
        if !out.is_empty() {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(Some(n))
    }

    fn input_arrived(&self) -> Vec<u64> {
        let mut readers = self.shared.readers.lock();
        match self.shared.backend.lock().service() {
            Ok(0) => Vec::new(),
            _ => core::mem::take(&mut *readers),
        }
    }

    fn stats(&self) -> PortStats {
        PortStats {
            written: self.written.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use super::*;
    use crate::cobj::testing::{on, ThreadCpus};
    use crate::cobj::CoManager;
    use alloc::vec;
    use std::collections::VecDeque;

    /// A port that takes at most 5 bytes per write, keeps at most two writes in flight, and
    /// finishes a write on the second time it is asked about it.
    #[derive(Default)]
    struct FakePort {
        out: Vec<u8>,
        input: VecDeque<u8>,
        in_flight: Vec<(WriteTicket, u32)>,
        next: u64,
        broken: bool,
    }

    impl PortBackend for FakePort {
        fn start_write(
            &mut self,
            bytes: &[u8],
        ) -> Result<Option<(usize, WriteTicket)>, ConsoleError> {
            if self.broken {
                return Err(ConsoleError::Device);
            }
            if self.in_flight.len() == 2 {
                return Ok(None);
            }
            let n = bytes.len().min(5);
            self.out.extend_from_slice(&bytes[..n]);
            let ticket = WriteTicket(self.next);
            self.next += 1;
            self.in_flight.push((ticket, 2));
            Ok(Some((n, ticket)))
        }
        fn write_done(&mut self, ticket: WriteTicket) -> Result<bool, ConsoleError> {
            let Some(i) = self.in_flight.iter().position(|(t, _)| *t == ticket) else {
                return Ok(true);
            };
            self.in_flight[i].1 -= 1;
            if self.in_flight[i].1 == 0 {
                self.in_flight.remove(i);
                return Ok(true);
            }
            Ok(false)
        }
        fn read_line(&mut self, out: &mut [u8]) -> Result<usize, ConsoleError> {
            if out.is_empty() {
                return Ok(self.input.len());
            }
            Ok(crate::virtio::console::take_line(&mut self.input, out))
        }
        fn service(&mut self) -> Result<usize, ConsoleError> {
            if self.broken {
                return Err(ConsoleError::Device);
            }
            Ok(self.input.len())
        }
    }

    fn backend(
        cos: &CoManager<ThreadCpus>,
        port: crate::cobj::CoRef<dyn ConsolePort>,
        f: impl FnOnce(&mut FakePort),
    ) {
        cos.with_root(port, |root| {
            let root = root
                .as_any()
                .downcast_ref::<PerCpuReps<dyn ConsolePort, Shared<FakePort>>>()
                .expect("the port's root");
            f(&mut root.shared().backend.lock());
        });
    }

    #[test]
    fn writes_return_once_the_device_took_every_piece() {
        let cos = CoManager::new(ThreadCpus(2), 4);
        let port = cos
            .create("hvc0", root(FakePort::default(), 2))
            .expect("room");
        let mut pauses = 0;
        let wrote = on(0, || {
            cos.call(port, |p| p.write(b"hello, world", &mut || pauses += 1))
        });
        assert_eq!(wrote, Ok(12));
        // Three pieces (5, 5, 2), each waited for once.
        assert_eq!(pauses, 3);
        backend(&cos, port, |b| {
            assert_eq!(b.out, b"hello, world");
            assert!(
                b.in_flight.is_empty(),
                "a write returned before the device took it"
            );
            b.broken = true;
        });
        assert_eq!(
            on(1, || cos.call(port, |p| p.write(b"x", &mut || {}))),
            Err(ConsoleError::Device)
        );
        let mut per_cpu = [PortStats::default(); 2];
        cos.for_each_rep(port, |cpu, rep| per_cpu[cpu] = rep.stats());
        assert_eq!(
            per_cpu[0],
            PortStats {
                written: 12,
                read: 0
            }
        );
        assert_eq!(per_cpu[1], PortStats::default());
    }

    #[test]
    fn readers_without_input_are_woken_once_it_comes() {
        let cos = CoManager::new(ThreadCpus(2), 4);
        let port = cos
            .create("hvc0", root(FakePort::default(), 2))
            .expect("room");
        let mut out = [0u8; 16];
        assert_eq!(on(1, || cos.call(port, |p| p.read(&mut out, 7))), Ok(None));
        assert_eq!(on(1, || cos.call(port, |p| p.read(&mut out, 7))), Ok(None));
        assert_eq!(on(0, || cos.call(port, |p| p.read(&mut [], 8))), Ok(None));
        // An interrupt without input wakes nobody.
        assert_eq!(on(0, || cos.call(port, |p| p.input_arrived())), vec![]);
        backend(&cos, port, |b| b.input.extend(b"ab\ncd"));
        assert_eq!(on(0, || cos.call(port, |p| p.input_arrived())), vec![7, 8]);
        assert_eq!(on(0, || cos.call(port, |p| p.input_arrived())), vec![]);
        assert_eq!(
            on(1, || cos.call(port, |p| p.read(&mut [], 7))),
            Ok(Some(5))
        );
        assert_eq!(
            on(1, || cos.call(port, |p| p.read(&mut out, 7))),
            Ok(Some(3))
        );
        assert_eq!(&out[..3], b"ab\n");
        assert_eq!(
            on(1, || cos.call(port, |p| p.read(&mut out, 7))),
            Ok(Some(2))
        );
        let mut per_cpu = [PortStats::default(); 2];
        cos.for_each_rep(port, |cpu, rep| per_cpu[cpu] = rep.stats());
        assert_eq!(
            per_cpu[1],
            PortStats {
                written: 0,
                read: 5
            }
        );
        assert_eq!(per_cpu[0], PortStats::default(), "counting is not reading");
        // A device that fails wakes its readers, whose reads then say so.
        assert_eq!(on(1, || cos.call(port, |p| p.read(&mut out, 9))), Ok(None));
        backend(&cos, port, |b| b.broken = true);
        assert_eq!(on(0, || cos.call(port, |p| p.input_arrived())), vec![9]);
    }
}
