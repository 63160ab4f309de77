//! The start-up glue of a native k42 program: its entry point, a heap in demand-zero memory,
//! console output (directly for processes with the console right, through the console server
//! by PPC otherwise) and a panic handler that ends the process.
#![no_std]

extern crate alloc;

use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub use k42_guest_lib::{kabi, sys};

use kabi::{Error, Prot};

/// Where the heap lives (demand-zero: pages cost frames only once touched).
pub const HEAP_START: u64 = 0x0000_1000_0000_0000;
/// Heap size.
pub const HEAP_SIZE: u64 = 256 << 20;
/// Exit status of a panicking program.
pub const PANIC_STATUS: i64 = 101;

#[global_allocator]
static HEAP: Heap = Heap(linked_list_allocator::LockedHeap::empty());

/// The program's heap: one spin-locked free list, held by no thread across a preemption (the
/// thread runtime's schedulers allocate too, and would spin on it forever).
struct Heap(linked_list_allocator::LockedHeap);

// SAFETY: every method forwards to the locked heap, which upholds `GlobalAlloc`'s contract; the
// preemption section around it changes nothing about the memory handed out.
unsafe impl core::alloc::GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let _section = k42_guest_lib::uthread::NoPreempt::enter();
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        let _section = k42_guest_lib::uthread::NoPreempt::enter();
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// Defines the program's entry point: `main(arg) -> exit status`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        pub extern "C" fn _start(arg: u64, _dispatcher_page: u64) -> ! {
            $crate::start(arg, $main)
        }
    };
}

/// Sets up the heap, runs `main`, exits with its status.
pub fn start(arg: u64, main: fn(u64) -> i64) -> ! {
    init_heap();
    sys::exit(main(arg))
}

/// Maps and initialises the heap (for programs with their own start-up code); exits if it
/// cannot be mapped.
pub fn init_heap() {
    if sys::map(HEAP_START, HEAP_SIZE, Prot::READ | Prot::WRITE).is_err() {
        let _ = sys::console_write(b"k42-rt: cannot map the heap\n");
        sys::exit(PANIC_STATUS);
    }
    // SAFETY: the range was just mapped (demand-zero, read-write) for this heap alone, and
    // this runs once, before anything allocates.
    unsafe {
        HEAP.0
            .lock()
            .init(HEAP_START as *mut u8, HEAP_SIZE as usize)
    };
}

static CURRENT_DISPATCHER: AtomicUsize = AtomicUsize::new(0);

/// Tells the runtime how to find the calling code's dispatcher index (default: always 0, right
/// for single-dispatcher programs; a thread library installs its own).
pub fn set_dispatcher_lookup(lookup: fn() -> usize) {
    CURRENT_DISPATCHER.store(lookup as usize, Ordering::Release);
}

/// The dispatcher the caller runs on.
pub fn current_dispatcher() -> usize {
    let lookup = CURRENT_DISPATCHER.load(Ordering::Acquire);
    if lookup == 0 {
        return 0;
    }
    // SAFETY: only `fn() -> usize` values are stored (by `set_dispatcher_lookup`).
    let f: fn() -> usize = unsafe { core::mem::transmute::<usize, fn() -> usize>(lookup) };
    f()
}

pub use sys::{dispatcher_page, now_ns};

/// The CPU the caller runs on (from its dispatcher's page, no system call).
pub fn current_cpu() -> usize {
    dispatcher_page(current_dispatcher()).cpu as usize
}

/// This process's id.
pub fn pid() -> u64 {
    dispatcher_page(0).pid
}

/// 0: not known yet; 1: may write the console directly; 2: must use the console server.
static CONSOLE_MODE: AtomicU64 = AtomicU64::new(0);
static CONSOLE_SERVER: AtomicU64 = AtomicU64::new(0);

/// Console server operation: write `a0` bytes from the caller's PPC buffer.
pub const CONSOLE_OP_WRITE: u64 = 1;
/// Console server operation: move up to `a0` bytes (at most a page, at most one line) of
/// console input into the caller's PPC buffer. Replies `(0, n)` with n bytes; `(0, 0)` when
/// there are none yet, and the server then posts [`CONSOLE_WAKE_SOFT_INTERRUPT`] to the
/// caller's dispatcher 0 when input arrives; [`CONSOLE_INPUT_ENDED`] when none will come. With
/// `a0` = 0 it counts the bytes waiting instead of taking them.
pub const CONSOLE_OP_READ: u64 = 2;
/// `r0` of a console read: the input has ended (k42vm's standard input closed).
pub const CONSOLE_INPUT_ENDED: u64 = 3;
/// The soft-interrupt bit the console server posts to a reader waiting for input (the same
/// bit the file server posts for pipes: "what you wait for may be ready").
pub const CONSOLE_WAKE_SOFT_INTERRUPT: u64 = k42_guest_lib::fs::server::WAKE_SOFT_INTERRUPT;

/// What a console read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleInput {
    /// This many bytes (taken, or waiting when only counted).
    Bytes(usize),
    /// None yet; [`CONSOLE_WAKE_SOFT_INTERRUPT`] comes when there are.
    NoneYet,
    /// None, and none will come.
    Ended,
}

fn console_server() -> Result<u64, Error> {
    let mut server = CONSOLE_SERVER.load(Ordering::Relaxed);
    if server == 0 {
        server = lookup_retrying("console")?;
        CONSOLE_SERVER.store(server, Ordering::Relaxed);
    }
    Ok(server)
}

/// Asks the console server (or a console port's driver, which speaks its protocol) for up to
/// `want` bytes (0: only count them).
fn console_read_call(server: u64, want: usize) -> Result<ConsoleInput, Error> {
    match sys::ppc_call(server, [CONSOLE_OP_READ, want as u64, 0, 0])? {
        (0, 0) => Ok(ConsoleInput::NoneYet),
        (0, n) if want == 0 || n as usize <= want => Ok(ConsoleInput::Bytes(n as usize)),
        (CONSOLE_INPUT_ENDED, _) => Ok(ConsoleInput::Ended),
        _ => Err(Error::Invalid),
    }
}

/// Takes console input through the console server into `buf` (at most a page, at most one
/// line).
pub fn read_console(buf: &mut [u8]) -> Result<ConsoleInput, Error> {
    read_console_port(console_server()?, buf)
}

/// Takes input from the console server or console port driver `server` into `buf` (at most a
/// page, at most one line); a reader finding none is woken with
/// [`CONSOLE_WAKE_SOFT_INTERRUPT`] when some comes.
pub fn read_console_port(server: u64, buf: &mut [u8]) -> Result<ConsoleInput, Error> {
    let want = buf.len().min(kabi::PAGE_SIZE as usize);
    if want == 0 {
        return Ok(ConsoleInput::Bytes(0));
    }
    let dispatcher = current_dispatcher();
    let got = console_read_call(server, want)?;
    if let ConsoleInput::Bytes(n) = got {
        // SAFETY: the kernel maps each dispatcher's PPC buffer (a page) when it creates the
        // dispatcher; the server wrote `n` <= `want` <= a page bytes into it during the call.
        unsafe { core::ptr::copy_nonoverlapping(sys::ppc_buffer(dispatcher), buf.as_mut_ptr(), n) };
    }
    Ok(got)
}

/// Whether console input waits (`Bytes(n)`), may come (`NoneYet`, and a wake-up follows when
/// it does) or has ended.
pub fn console_input_state() -> Result<ConsoleInput, Error> {
    console_read_call(console_server()?, 0)
}

/// [`console_input_state`] of the console server or console port driver `server`.
pub fn console_port_input_state(server: u64) -> Result<ConsoleInput, Error> {
    console_read_call(server, 0)
}

/// Writes bytes to the console, directly or through the console server.
pub fn write(bytes: &[u8]) -> Result<(), Error> {
    if CONSOLE_MODE.load(Ordering::Relaxed) != 2 {
        match sys::console_write(bytes) {
            Ok(_) => {
                CONSOLE_MODE.store(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(Error::NotPermitted) => CONSOLE_MODE.store(2, Ordering::Relaxed),
            Err(e) => return Err(e),
        }
    }
    write_console_port(console_server()?, bytes)
}

/// Writes bytes through the console server or console port driver `server`; returns once it
/// has taken them all (`Invalid` if it refused some).
pub fn write_console_port(server: u64, bytes: &[u8]) -> Result<(), Error> {
    let dispatcher = current_dispatcher();
    for chunk in bytes.chunks(kabi::PAGE_SIZE as usize) {
        let buffer = sys::ppc_buffer(dispatcher);
        // SAFETY: the kernel maps each dispatcher's PPC buffer, writable, when it creates the
        // dispatcher; a dispatcher's threads do not run concurrently, and one whose call is
        // parked by an upcall keeps a copy of the buffer, so nothing else changes it now.
        unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), buffer, chunk.len()) };
        match sys::ppc_call(server, [CONSOLE_OP_WRITE, chunk.len() as u64, 0, 0])? {
            (0, _) => {}
            _ => return Err(Error::Invalid),
        }
    }
    Ok(())
}

/// Looks a server up, yielding while it has not exported itself yet (about a second at most).
pub fn lookup_retrying(name: &str) -> Result<u64, Error> {
    for _ in 0..10_000 {
        match sys::ppc_lookup(name) {
            Ok(pid) => return Ok(pid),
            Err(Error::NotFound) => sys::block(now_ns() + 100_000),
            Err(e) => return Err(e),
        };
    }
    Err(Error::NotFound)
}

/// Formats and writes a line (used by [`println!`]).
pub fn print_fmt(args: core::fmt::Arguments<'_>) {
    let mut line = String::new();
    let _ = line.write_fmt(args);
    let _ = write(line.as_bytes());
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::print_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    print_fmt(format_args!("panic in process {}: {}\n", pid(), info));
    sys::exit(PANIC_STATUS)
}
