//! Console input: the bytes typed (or piped) into k42vm arrive on the UART at COM1. The
//! kernel's part is the privileged minimum: its interrupt moves them from the UART into a
//! small buffer and posts one soft interrupt to the waiting reader (the console server);
//! `console_read` hands them out. Line editing, echo and who reads next belong to ring 3.
//!
//! When the buffer is full the rest stays in the UART, whose host side keeps a backlog, so a
//! burst of input is delayed, never dropped. When k42vm's standard input ends it drops the
//! UART's carrier (DCD), as a modem hanging up does, and raises the interrupt: once the
//! buffer is empty, reads then say `Ended`. `k42.console_input=off` gives that from the start
//! (for machines whose UART cannot say input ended, such as QEMU with no input).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use k42_guest_lib::kabi::{Error, SpawnFlags};
use k42_paravirt as pv;
use spin::Mutex;

use crate::arch::{self, idt, ioapic};
use crate::proc::Dispatcher;
use crate::{percpu, sched};

/// The UART's interrupt line (ISA IRQ 4, I/O APIC pin 4 on k42vm and QEMU).
pub const LINE: u32 = 4;
/// Bytes the kernel holds before leaving input in the UART.
const CAPACITY: usize = 4096;
/// Interrupt-enable register: bit 0 enables the received-data interrupt.
const IER: u16 = 1;
/// Interrupt-identification register (reading it acknowledges the interrupt).
const IIR: u16 = 2;
/// Modem-control register: DTR, RTS and OUT2 (OUT2 gates the interrupt on real 16550s).
const MCR: u16 = 4;
const MCR_DTR_RTS_OUT2: u8 = 0x0b;
/// Line-status register: bit 0 says a byte is waiting.
const LSR: u16 = 5;
const LSR_DATA_READY: u8 = 0x01;
/// Modem-status register: bit 7 is the carrier (DCD), which k42vm drops when input ends.
const MSR: u16 = 6;
const MSR_CARRIER: u8 = 0x80;

/// Whether the console has input at all (`k42.console_input=off` says not).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether no more input will come (the buffer's contents aside).
fn input_ended() -> bool {
    !ENABLED.load(Ordering::Relaxed) || arch::inb(pv::COM1_PORT + MSR) & MSR_CARRIER == 0
}

/// Input waiting to be read, and who to tell when more comes.
struct Input {
    bytes: [u8; CAPACITY],
    /// Index of the oldest byte.
    head: usize,
    len: usize,
    /// The dispatcher to post the bits to when input arrives (taken when posted).
    waiter: Option<(Arc<Dispatcher>, u64)>,
}

impl Input {
    /// Moves bytes from the UART while there is room; returns how many.
    fn drain_uart(&mut self) -> usize {
        let mut moved = 0;
        while self.len < CAPACITY && arch::inb(pv::COM1_PORT + LSR) & LSR_DATA_READY != 0 {
            let byte = arch::inb(pv::COM1_PORT);
            self.bytes[(self.head + self.len) % CAPACITY] = byte;
            self.len += 1;
            moved += 1;
        }
        moved
    }

    /// Copies up to `out.len()` of the oldest bytes into `out` without taking them.
    fn peek(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        // Two slice copies (the buffer wraps once at most), not a byte loop: ring-0
        // instructions are what costs here.
        let first = n.min(CAPACITY - self.head);
        out[..first].copy_from_slice(&self.bytes[self.head..self.head + first]);
        out[first..n].copy_from_slice(&self.bytes[..n - first]);
        n
    }

    fn consume(&mut self, n: usize) {
        self.head = (self.head + n) % CAPACITY;
        self.len -= n;
    }
}

static INPUT: Mutex<Input> = Mutex::new(Input {
    bytes: [0; CAPACITY],
    head: 0,
    len: 0,
    waiter: None,
});

/// Turns on the UART's received-data interrupt, routed to the boot CPU, and takes whatever
/// was typed before; with `enabled` false the console has no input. Called once, before the
/// first program starts.
pub fn init(enabled: bool) {
    if !enabled {
        ENABLED.store(false, Ordering::Relaxed);
        return;
    }
    let port = pv::COM1_PORT;
    arch::outb(port + MCR, MCR_DTR_RTS_OUT2);
    arch::outb(port + IER, 0x01);
    let _ = arch::inb(port + IIR);
    INPUT.lock().drain_uart();
    if let Some(boot_cpu) = percpu::cpu(0) {
        ioapic::route(LINE, idt::DEVICE_VECTOR_BASE + LINE as u8, boot_cpu.apic_id);
    }
}

/// The UART's interrupt: takes the input and wakes the waiter (also when input has ended).
/// Like every device interrupt it arrives only while the CPU runs user code or idles, so
/// `INPUT` is never held here already.
pub fn interrupt() {
    let _ = arch::inb(pv::COM1_PORT + IIR);
    let mut input = INPUT.lock();
    input.drain_uart();
    if input.len > 0 || input_ended() {
        if let Some((d, bits)) = input.waiter.take() {
            sched::post_soft_interrupt(&d, bits);
        }
    }
}

/// `console_read(ptr, len, bits)` for `me` (see `kabi::Sys::ConsoleRead`).
pub fn read(me: &Arc<Dispatcher>, ptr: u64, len: u64, bits: u64) -> Result<u64, Error> {
    if me.process.flags & SpawnFlags::CONSOLE == 0 {
        return Err(Error::NotPermitted);
    }
    let mut input = INPUT.lock();
    input.drain_uart();
    if input.len == 0 {
        if input_ended() {
            return Err(Error::Ended);
        }
        if bits != 0 {
            let first = me.process.dispatchers.lock().first().cloned();
            input.waiter = first.map(|d| (d, bits));
        }
        return Ok(0);
    }
    if len == 0 {
        return Ok(input.len as u64);
    }
    let mut chunk = [0u8; 256];
    let want = usize::try_from(len).unwrap_or(usize::MAX).min(chunk.len());
    let n = input.peek(&mut chunk[..want]);
    // Written before the bytes are taken: a bad buffer loses no input.
    me.process
        .aspace
        .lock()
        .as_mut()
        .ok_or(Error::Fault)?
        .write_user(ptr, &chunk[..n])?;
    input.consume(n);
    Ok(n as u64)
}
