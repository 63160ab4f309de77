//! Kernel console output: `kprint!`/`kprintln!` format into a line buffer and write it in one
//! piece (one hypercall per line on k42vm).

use core::fmt::{self, Write};

use spin::Mutex;

static CONSOLE_LOCK: Mutex<()> = Mutex::new(());

/// A fixed buffer that flushes to the console when full.
struct LineBuffer {
    bytes: [u8; 256],
    len: usize,
}

impl LineBuffer {
    fn flush(&mut self) {
        crate::platform::console_write(&self.bytes[..self.len]);
        self.len = 0;
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.bytes.len() {
                self.flush();
            }
            self.bytes[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints formatted text as one unit (lines from different CPUs do not interleave).
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = CONSOLE_LOCK.lock();
    write_unlocked(args);
}

/// Prints without taking the console lock: for panics and exceptions, which may interrupt a
/// holder of the lock.
pub fn print_unlocked(args: fmt::Arguments<'_>) {
    write_unlocked(args);
}

fn write_unlocked(args: fmt::Arguments<'_>) {
    let mut buffer = LineBuffer {
        bytes: [0; 256],
        len: 0,
    };
    let _ = buffer.write_fmt(args);
    buffer.flush();
}

/// Prints to the kernel console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the kernel console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::console::print(format_args!("\n")) };
    ($fmt:expr) => { $crate::console::print(format_args!(concat!($fmt, "\n"))) };
    ($fmt:expr, $($arg:tt)*) => { $crate::console::print(format_args!(concat!($fmt, "\n"), $($arg)*)) };
}
