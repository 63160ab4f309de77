//! The 8250/16550 UART at COM1 (ports 0x3f8..0x3ff), a thin port-I/O front on `vm-superio`.

use std::collections::VecDeque;
use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// Number of I/O ports the UART decodes.
pub const SERIAL_PORT_COUNT: u16 = 8;

/// Raises the UART's interrupt by writing an eventfd (registered as an irqfd by the VMM).
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `fd`.
    pub fn new(fd: EventFd) -> Self {
        EventFdTrigger(fd)
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Offset of the receive/transmit data register.
const DATA: u16 = 0;
/// Offset of the modem-status register.
const MSR: u16 = 6;
/// The modem-status bit of the carrier (DCD).
const MSR_CARRIER: u8 = 0x80;
/// The interrupt-enable bit of received data.
const IER_RECEIVED_DATA: u8 = 0x01;
/// Bytes the UART's receive FIFO holds (`vm-superio`'s size).
const FIFO_BYTES: usize = 64;

/// An 8250 UART whose output goes to `W`. Host input beyond the UART's 64-byte FIFO waits in a
/// backlog and moves into the FIFO as the guest reads, so none of it is lost. When the host
/// input ends ([`SerialConsole::end_input`]) and the guest has read everything, the carrier
/// (DCD) drops, as when a modem hangs up: the guest's way to know no more input will come.
pub struct SerialConsole<W: Write> {
    base: u16,
    uart: Serial<EventFdTrigger, NoEvents, W>,
    backlog: VecDeque<u8>,
    input_ended: bool,
    /// The interrupt line, to announce the hang-up.
    interrupt: Option<EventFd>,
}

impl<W: Write> SerialConsole<W> {
    /// A UART at I/O port `base`, raising its interrupt through `interrupt`, writing to `out`.
    pub fn new(base: u16, interrupt: EventFd, out: W) -> Self {
        let hang_up = interrupt.try_clone().ok();
        SerialConsole {
            base,
            uart: Serial::new(EventFdTrigger::new(interrupt), out),
            backlog: VecDeque::new(),
            input_ended: false,
            interrupt: hang_up,
        }
    }

    /// Whether `port` belongs to this UART.
    pub fn claims(&self, port: u16) -> bool {
        port.wrapping_sub(self.base) < SERIAL_PORT_COUNT
    }

    /// Handles a guest read of `port` (a port this UART claims); a read of the data register
    /// refills the FIFO from the backlog.
    pub fn read(&mut self, port: u16) -> u8 {
        let offset = port.wrapping_sub(self.base);
        let value = self.uart.read(offset as u8);
        if offset == DATA && !self.backlog.is_empty() {
            // A failure to raise the interrupt leaves the bytes readable (the guest polls the
            // line status too); nothing to do about it here.
            let _ = self.refill();
        }
        if offset == MSR && self.all_input_read() {
            return value & !MSR_CARRIER;
        }
        value
    }

    /// Whether the host input has ended and the guest has read all of it.
    fn all_input_read(&self) -> bool {
        self.input_ended && self.backlog.is_empty() && self.uart.fifo_capacity() == FIFO_BYTES
    }

    /// Records that the host input has ended: once the guest has read what is queued, the
    /// carrier drops. Raises the interrupt, if the guest enabled the receive interrupt, so a
    /// guest waiting for input notices (a guest that did not is not interrupted).
    pub fn end_input(&mut self) {
        self.input_ended = true;
        if self.uart.state().interrupt_enable & IER_RECEIVED_DATA == 0 {
            return;
        }
        if let Some(line) = &self.interrupt {
            // Without the interrupt the guest notices at its next read; nothing else to do.
            let _ = line.write(1);
        }
    }

    /// Handles a guest write of `value` to `port`. A full host output is reported, not fatal.
    pub fn write(&mut self, port: u16, value: u8) -> Result<(), String> {
        self.uart
            .write(port.wrapping_sub(self.base) as u8, value)
            .map_err(|e| format!("{e:?}"))
    }

    /// Queues host input for the guest to read: what fits goes into the FIFO now, the rest
    /// into the backlog. An error only means the interrupt could not be raised.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.backlog.extend(bytes);
        self.refill()
    }

    /// Host input not yet in the FIFO.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Moves backlog bytes into the FIFO while it has room.
    fn refill(&mut self) -> Result<(), String> {
        let room = self.uart.fifo_capacity().min(self.backlog.len());
        if room == 0 {
            return Ok(());
        }
        let chunk: Vec<u8> = self.backlog.drain(..room).collect();
        self.uart
            .enqueue_raw_bytes(&chunk)
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }

    /// The output sink.
    pub fn output_mut(&mut self) -> &mut W {
        self.uart.writer_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> SerialConsole<Vec<u8>> {
        SerialConsole::new(0x3f8, EventFd::new(0).unwrap(), Vec::new())
    }

    #[test]
    fn claims_exactly_its_eight_ports() {
        let c = console();
        assert!(c.claims(0x3f8) && c.claims(0x3ff));
        assert!(!c.claims(0x3f7) && !c.claims(0x400) && !c.claims(0));
    }

    #[test]
    fn transmit_register_writes_reach_the_output() {
        let mut c = console();
        for &b in b"hi\n" {
            c.write(0x3f8, b).unwrap();
        }
        assert_eq!(c.output_mut().as_slice(), b"hi\n");
    }

    #[test]
    fn line_status_reports_transmitter_empty() {
        let mut c = console();
        assert_ne!(
            c.read(0x3fd) & 0x20,
            0,
            "THR empty so guests never spin forever"
        );
    }

    #[test]
    fn input_is_readable_by_the_guest() {
        let mut c = console();
        // Enable the receive interrupt so queued data raises the line.
        c.write(0x3f9, 1).unwrap();
        c.enqueue_input(b"x").unwrap();
        assert_ne!(c.read(0x3fd) & 1, 0, "data ready");
        assert_eq!(c.read(0x3f8), b'x');
        assert_eq!(c.read(0x3fd) & 1, 0, "nothing more");
    }

    #[test]
    fn input_larger_than_the_fifo_is_not_lost() {
        let mut c = console();
        c.write(0x3f9, 1).unwrap();
        let input: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        c.enqueue_input(&input[..300]).unwrap();
        c.enqueue_input(&input[300..]).unwrap();
        assert!(c.backlog_len() > 0, "the FIFO holds only 64 bytes");
        let mut got = Vec::new();
        while c.read(0x3fd) & 1 != 0 {
            got.push(c.read(0x3f8));
        }
        assert_eq!(got, input);
        assert_eq!(c.backlog_len(), 0);
    }

    #[test]
    fn ending_input_interrupts_only_a_guest_that_asked() {
        let line = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut c = SerialConsole::new(0x3f8, line.try_clone().unwrap(), Vec::new());
        c.end_input();
        assert!(
            line.read().is_err(),
            "no interrupt with the receive interrupt off"
        );
        c.write(0x3f9, 1).unwrap();
        c.end_input();
        assert_eq!(line.read().unwrap(), 1);
    }

    #[test]
    fn the_carrier_drops_once_ended_input_is_read() {
        let mut c = console();
        assert_ne!(c.read(0x3fe) & 0x80, 0, "carrier up at start");
        c.enqueue_input(b"ab").unwrap();
        c.end_input();
        assert_ne!(c.read(0x3fe) & 0x80, 0, "still up while input waits");
        assert_eq!((c.read(0x3f8), c.read(0x3f8)), (b'a', b'b'));
        assert_eq!(c.read(0x3fe) & 0x80, 0, "down once everything is read");
    }
}
