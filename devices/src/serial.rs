//! The 8250/16550 UART at COM1 (ports 0x3f8..0x3ff), a thin port-I/O front on `vm-superio`.

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

/// An 8250 UART whose output goes to `W`.
pub struct SerialConsole<W: Write> {
    base: u16,
    uart: Serial<EventFdTrigger, NoEvents, W>,
}

impl<W: Write> SerialConsole<W> {
    /// A UART at I/O port `base`, raising its interrupt through `interrupt`, writing to `out`.
    pub fn new(base: u16, interrupt: EventFd, out: W) -> Self {
        SerialConsole {
            base,
            uart: Serial::new(EventFdTrigger::new(interrupt), out),
        }
    }

    /// Whether `port` belongs to this UART.
    pub fn claims(&self, port: u16) -> bool {
        port.wrapping_sub(self.base) < SERIAL_PORT_COUNT
    }

    /// Handles a guest read of `port` (a port this UART claims).
    pub fn read(&mut self, port: u16) -> u8 {
        self.uart.read(port.wrapping_sub(self.base) as u8)
    }

    /// Handles a guest write of `value` to `port`. A full host output is reported, not fatal.
    pub fn write(&mut self, port: u16, value: u8) -> Result<(), String> {
        self.uart
            .write(port.wrapping_sub(self.base) as u8, value)
            .map_err(|e| format!("{e:?}"))
    }

    /// Queues host input for the guest to read; returns how many bytes fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, String> {
        self.uart
            .enqueue_raw_bytes(bytes)
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
        assert_eq!(c.enqueue_input(b"x").unwrap(), 1);
        assert_ne!(c.read(0x3fd) & 1, 0, "data ready");
        assert_eq!(c.read(0x3f8), b'x');
    }
}
