//! A Rust program with the standard library (x86_64-unknown-linux-musl, static) checking the
//! rest of what the Linux personality gives Rust programs: directories, pipes between
//! processes, signals with a handler, mmap/munmap/mprotect, clocks and sleeps, getrandom,
//! uname, the terminal ioctls and poll. System calls std does not wrap are reached through
//! the C library (musl), as the `libc` crate would. Prints `linux-rust-sys: all checks passed`
//! and exits 0, or says what failed and exits 1.

use std::ffi::{c_int, c_long, c_void};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

extern "C" {
    fn signal(sig: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn raise(sig: c_int) -> c_int;
    fn getpid() -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: c_long)
        -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int;
    fn getrandom(buf: *mut c_void, len: usize, flags: u32) -> isize;
    fn uname(buf: *mut Utsname) -> c_int;
    fn ioctl(fd: c_int, request: c_long, ...) -> c_int;
    fn poll(fds: *mut PollFd, n: u64, timeout: c_int) -> c_int;
}

#[repr(C)]
struct Utsname {
    fields: [[u8; 65]; 6],
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

const SIGUSR1: c_int = 10;
const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const MAP_PRIVATE: c_int = 2;
const MAP_ANONYMOUS: c_int = 0x20;
const TCGETS: c_long = 0x5401;
const TIOCGWINSZ: c_long = 0x5413;
const POLLIN: i16 = 1;

static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
}

fn check(ok: bool, what: &str) {
    if !ok {
        println!("linux-rust-sys: FAILED: {what}");
        std::process::exit(1);
    }
}

fn main() {
    // Directories.
    let dir = std::env::temp_dir().join("linux-rust-sys");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/one.txt"), "1").unwrap();
    std::fs::write(dir.join("a/two.txt"), "22").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    check(names == ["b", "one.txt", "two.txt"], "read_dir lists what was made");
    check(
        std::fs::metadata(dir.join("a/two.txt")).unwrap().len() == 2,
        "metadata gives the size",
    );
    std::fs::rename(dir.join("a/one.txt"), dir.join("a/b/one.txt")).unwrap();
    check(dir.join("a/b/one.txt").exists(), "rename into a subdirectory");
    std::fs::remove_dir_all(&dir).unwrap();
    check(!dir.exists(), "remove_dir_all");

    // A pipe to and from a child process (busybox tr).
    let mut child = std::process::Command::new("/bin/busybox")
        .args(["tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn busybox tr");
    child.stdin.take().unwrap().write_all(b"through a pipe\n").unwrap();
    let mut upper = String::new();
    child.stdout.take().unwrap().read_to_string(&mut upper).unwrap();
    check(child.wait().unwrap().success(), "tr's exit status");
    check(upper == "THROUGH A PIPE\n", "a child's stdin and stdout pipes");

    // Signals: a handler run by raise() and by kill() of ourselves.
    unsafe { signal(SIGUSR1, on_signal) };
    unsafe { raise(SIGUSR1) };
    check(CAUGHT.swap(0, Ordering::SeqCst) == SIGUSR1, "raise runs the handler");
    unsafe { kill(getpid(), SIGUSR1) };
    check(CAUGHT.load(Ordering::SeqCst) == SIGUSR1, "kill of ourselves runs the handler");

    // Anonymous memory: map, write, protect read-only, unmap.
    let len = 64 * 1024;
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    check(p as isize != -1, "mmap");
    let bytes = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
    check(bytes.iter().all(|&b| b == 0), "fresh memory is zero");
    bytes[len - 1] = 42;
    check(unsafe { mprotect(p, len, PROT_READ) } == 0, "mprotect");
    check(bytes[len - 1] == 42, "readable after mprotect");
    check(unsafe { munmap(p, len) } == 0, "munmap");
    let big: Vec<u64> = (0..1 << 20).collect();
    check(big.iter().sum::<u64>() == (1u64 << 20) * ((1 << 20) - 1) / 2, "8 MiB from the heap");

    // Clocks and sleeps.
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    check(start.elapsed() >= Duration::from_millis(20), "a sleep lasts");
    check(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok(),
        "the system time is after the epoch",
    );

    // Random bytes, uname, terminal ioctls, poll.
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    let got = unsafe { getrandom(a.as_mut_ptr().cast(), a.len(), 0) }
        + unsafe { getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    check(got == 64 && a != b && a != [0; 32], "getrandom");
    let mut u = Utsname { fields: [[0; 65]; 6] };
    check(unsafe { uname(&mut u) } == 0, "uname");
    check(&u.fields[0][..6] == b"Linux\0", "uname says Linux");
    check(&u.fields[4][..7] == b"x86_64\0", "uname's machine");
    let mut termios = [0u8; 60];
    check(
        unsafe { ioctl(1, TCGETS, termios.as_mut_ptr()) } == 0,
        "TCGETS on the console",
    );
    let mut winsize = [0u16; 4];
    check(
        unsafe { ioctl(1, TIOCGWINSZ, winsize.as_mut_ptr()) } == 0 && winsize[0] > 0,
        "TIOCGWINSZ on the console",
    );
    let file = std::fs::File::open("/etc/motd").unwrap();
    use std::os::fd::AsRawFd;
    let mut fds = [PollFd {
        fd: file.as_raw_fd(),
        events: POLLIN,
        revents: 0,
    }];
    check(
        unsafe { poll(fds.as_mut_ptr(), 1, 0) } == 1 && fds[0].revents & POLLIN != 0,
        "poll says a file is readable",
    );
    println!("linux-rust-sys: all checks passed");
}
