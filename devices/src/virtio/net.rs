//! virtio-net (virtio 1.2 section 5.1): one receive and one transmit queue, no offloads, frames
//! to and from a [`NetBackend`]. The backend for real guests is a TAP device: its file descriptor
//! (opened non-blocking by the VMM, which owns the TUNSETIFF ioctl) reads and writes one frame per
//! call, so any `File` is a backend. The VMM calls `MmioTransport::poll` when the TAP fd is
//! readable.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use super::block::copy_config;
use super::chain::{read_at, write_at};
use super::{
    DeviceError, DeviceQueues, VirtioDevice, DEVICE_ID_NET, VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
};

/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Feature: the config space carries the MAC address.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// Feature: the config space carries the link status.
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// Length of `struct virtio_net_hdr` in virtio 1.x (with `num_buffers`).
pub const NET_HDR_LEN: usize = 12;
/// Largest frame accepted or delivered (no GSO is offered, so this is generous).
pub const MAX_FRAME_LEN: usize = 65_562;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = NetConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetConfigError::BadMac(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if mac[0] & 1 != 0 {
            return Err(NetConfigError::MulticastMac(s.to_string()));
        }
        Ok(MacAddr(mac))
    }
}

/// What the VMM parsed from `--net tap=NAME[,mac=MAC]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The TAP interface name.
    pub tap: String,
    /// The guest's MAC address, if given.
    pub mac: Option<MacAddr>,
}

/// A `--net` argument that could not be parsed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum NetConfigError {
    /// No `tap=NAME`.
    #[error("--net needs a TAP device: --net tap=NAME[,mac=MAC]")]
    MissingTap,
    /// A TAP name that Linux would not accept.
    #[error("--net tap name `{0}` must be 1 to 15 characters without '/', ':' or spaces")]
    BadTapName(String),
    /// A malformed MAC address.
    #[error("--net mac `{0}` is not a MAC address like 52:54:00:12:34:56")]
    BadMac(String),
    /// A multicast MAC address (the low bit of the first byte set).
    #[error("--net mac `{0}` is a multicast address; a NIC needs a unicast one")]
    MulticastMac(String),
    /// An option other than `tap=` or `mac=`.
    #[error("unknown --net option `{0}`: the options are `tap=NAME` and `mac=MAC`")]
    UnknownOption(String),
    /// The same option twice.
    #[error("--net option `{0}` given twice")]
    DuplicateOption(&'static str),
}

impl NetConfig {
    /// Parses `tap=NAME[,mac=MAC]` (options in any order).
    pub fn parse(spec: &str) -> Result<Self, NetConfigError> {
        let mut tap = None;
        let mut mac = None;
        for opt in spec.split(',').filter(|o| !o.is_empty()) {
            if let Some(name) = opt.strip_prefix("tap=") {
                if tap.is_some() {
                    return Err(NetConfigError::DuplicateOption("tap"));
                }
                let ok = !name.is_empty()
                    && name.len() <= 15
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
                if !ok {
                    return Err(NetConfigError::BadTapName(name.to_string()));
                }
                tap = Some(name.to_string());
            } else if let Some(m) = opt.strip_prefix("mac=") {
                if mac.is_some() {
                    return Err(NetConfigError::DuplicateOption("mac"));
                }
                mac = Some(m.parse()?);
            } else {
                return Err(NetConfigError::UnknownOption(opt.to_string()));
            }
        }
        Ok(NetConfig {
            tap: tap.ok_or(NetConfigError::MissingTap)?,
            mac,
        })
    }
}

impl FromStr for NetConfig {
    type Err = NetConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetConfig::parse(s)
    }
}

/// Where frames go and come from.
pub trait NetBackend: Send {
    /// Reads one frame into `buf`; `ErrorKind::WouldBlock` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
}

/// A TAP device's file descriptor (opened with IFF_TAP | IFF_NO_PI, non-blocking).
impl NetBackend for File {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let n = self.write(frame)?;
        if n != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short frame write",
            ));
        }
        Ok(())
    }
}

/// An in-memory backend: frames the guest sent, and frames queued for it (tests, loopback).
#[derive(Clone, Debug, Default)]
pub struct MemNet(Arc<Mutex<MemNetQueues>>);

/// The two frame queues of a [`MemNet`].
#[derive(Debug, Default)]
pub struct MemNetQueues {
    /// Frames the guest transmitted, oldest first.
    pub sent: VecDeque<Vec<u8>>,
    /// Frames waiting for the guest, oldest first.
    pub inbound: VecDeque<Vec<u8>>,
}

impl MemNet {
    /// Both queues, locked.
    pub fn lock(&self) -> MutexGuard<'_, MemNetQueues> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NetBackend for MemNet {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = self
            .lock()
            .inbound
            .pop_front()
            .ok_or(io::ErrorKind::WouldBlock)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.lock().sent.push_back(frame.to_vec());
        Ok(())
    }
}

/// A virtio network device.
pub struct Net {
    backend: Box<dyn NetBackend>,
    features: u64,
    config: [u8; 8],
    /// A frame read from the backend that is waiting for a receive buffer.
    pending: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl Net {
    /// A NIC over `backend`, announcing `mac` if given.
    pub fn new(backend: Box<dyn NetBackend>, mac: Option<MacAddr>) -> Self {
        let mut features = VIRTIO_F_INDIRECT_DESC | VIRTIO_F_EVENT_IDX | VIRTIO_NET_F_STATUS;
        let mut config = [0u8; 8];
        if let Some(mac) = mac {
            features |= VIRTIO_NET_F_MAC;
            config[..6].copy_from_slice(&mac.0);
        }
        config[6] = 1; // VIRTIO_NET_S_LINK_UP
        Net {
            backend,
            features,
            config,
            pending: None,
            buf: vec![0; MAX_FRAME_LEN],
        }
    }

    fn transmit(&mut self, queues: &mut DeviceQueues<'_>) -> Result<(), DeviceError> {
        let mem = queues.mem();
        while let Some(chain) = queues.pop(TX_QUEUE)? {
            if !chain.writable.is_empty() {
                queues.log(format_args!(
                    "transmit buffer with device-writable parts: they are ignored"
                ));
            }
            let total = chain.readable_len();
            let frame_len = total.saturating_sub(NET_HDR_LEN as u64);
            if total < NET_HDR_LEN as u64 || frame_len > MAX_FRAME_LEN as u64 {
                queues.log(format_args!(
                    "transmit buffer of {total} bytes dropped (header is {NET_HDR_LEN}, \
                     frames at most {MAX_FRAME_LEN})"
                ));
            } else {
                let frame = &mut self.buf[..frame_len as usize];
                if read_at(mem, &chain.readable, NET_HDR_LEN as u64, frame) {
                    if let Err(e) = self.backend.send(frame) {
                        queues.log(format_args!("frame not sent: {e}"));
                    }
                }
            }
            queues.add_used(TX_QUEUE, chain.head, 0)?;
        }
        Ok(())
    }

    fn receive(&mut self, queues: &mut DeviceQueues<'_>) -> Result<(), DeviceError> {
        if !queues.is_ready(RX_QUEUE) {
            return Ok(());
        }
        let mem = queues.mem();
        loop {
            if self.pending.is_none() {
                match self.backend.recv(&mut self.buf) {
                    Ok(n) => self.pending = Some(self.buf[..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        queues.log(format_args!("receiving from the backend failed: {e}"));
                        return Ok(());
                    }
                }
            }
            let Some(chain) = queues.pop(RX_QUEUE)? else {
                // No buffer: the frame waits; the driver's next notification delivers it.
                return Ok(());
            };
            let frame = self.pending.take().unwrap_or_default();
            let need = (NET_HDR_LEN + frame.len()) as u64;
            if !chain.readable.is_empty() || chain.writable_len() < need {
                queues.log(format_args!(
                    "receive buffer unusable (device-readable parts, or under {need} bytes): \
                     frame dropped"
                ));
                queues.add_used(RX_QUEUE, chain.head, 0)?;
                continue;
            }
            let mut hdr = [0u8; NET_HDR_LEN];
            hdr[10] = 1; // num_buffers
            let ok = write_at(mem, &chain.writable, 0, &hdr)
                && write_at(mem, &chain.writable, NET_HDR_LEN as u64, &frame);
            let len = if ok { need as u32 } else { 0 };
            queues.add_used(RX_QUEUE, chain.head, len)?;
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        DEVICE_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        copy_config(&self.config, offset, data);
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

    fn reset(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_net_specs() {
        assert_eq!(
            NetConfig::parse("tap=tap0").unwrap(),
            NetConfig {
                tap: "tap0".into(),
                mac: None
            }
        );
        let c = NetConfig::parse("mac=52:54:00:12:34:5a,tap=k42tap").unwrap();
        assert_eq!(c.tap, "k42tap");
        assert_eq!(c.mac.unwrap().to_string(), "52:54:00:12:34:5a");
        assert_eq!(NetConfig::parse(""), Err(NetConfigError::MissingTap));
        assert_eq!(
            NetConfig::parse("mac=52:54:00:12:34:56"),
            Err(NetConfigError::MissingTap)
        );
        assert!(matches!(
            NetConfig::parse("tap=a/b"),
            Err(NetConfigError::BadTapName(_))
        ));
        assert!(matches!(
            NetConfig::parse("tap=abcdefghijklmnop"),
            Err(NetConfigError::BadTapName(_))
        ));
        assert!(matches!(
            NetConfig::parse("tap=t,mac=52:54:00:12:34"),
            Err(NetConfigError::BadMac(_))
        ));
        assert!(matches!(
            NetConfig::parse("tap=t,mac=52:54:00:12:34:zz"),
            Err(NetConfigError::BadMac(_))
        ));
        assert!(matches!(
            NetConfig::parse("tap=t,mac=01:00:5e:00:00:01"),
            Err(NetConfigError::MulticastMac(_))
        ));
        assert_eq!(
            NetConfig::parse("tap=t,tap=u"),
            Err(NetConfigError::DuplicateOption("tap"))
        );
        assert_eq!(
            NetConfig::parse("tap=t,vhost=on"),
            Err(NetConfigError::UnknownOption("vhost=on".into()))
        );
    }
}
