//! A Rust program with the standard library (x86_64-unknown-linux-musl, static) that checks
//! its own results: threads (std::thread), Mutex, Condvar, channels, thread-locals, sleeps and
//! joins, threads blocked in pipes and in waits for children while the others run, threads
//! preempted while they spin; then files,
//! the environment and child processes (std::process::Command). Prints
//! `linux-rust-threads: all checks passed` and exits 0, or says what failed and exits 1.

use std::cell::Cell;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WORKERS: u64 = 4;
const ROUNDS: u64 = 1000;

thread_local! {
    static MINE: Cell<u64> = const { Cell::new(0) };
}

fn check(ok: bool, what: &str) {
    if !ok {
        println!("linux-rust-threads: FAILED: {what}");
        std::process::exit(1);
    }
}

fn main() {
    // Threads sharing a Mutex; each also keeps a thread-local sum (its own TLS block).
    let total = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let total = Arc::clone(&total);
            thread::spawn(move || {
                for i in 0..ROUNDS {
                    *total.lock().unwrap() += i;
                    MINE.with(|m| m.set(m.get() + w));
                    if i % 100 == 0 {
                        thread::yield_now();
                    }
                }
                MINE.with(|m| m.get())
            })
        })
        .collect();
    let locals: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    check(
        *total.lock().unwrap() == WORKERS * ROUNDS * (ROUNDS - 1) / 2,
        "the mutex-protected total",
    );
    check(
        locals == (0..WORKERS).map(|w| w * ROUNDS).collect::<Vec<_>>(),
        "thread-local sums",
    );
    MINE.with(|m| check(m.get() == 0, "the main thread's thread-local"));

    // A channel: producers send, the main thread receives everything.
    let (tx, rx) = mpsc::channel();
    for p in 0..3u64 {
        let tx = tx.clone();
        thread::spawn(move || {
            for i in 0..50 {
                tx.send(p * 1000 + i).unwrap();
            }
        });
    }
    drop(tx);
    let mut got: Vec<u64> = rx.iter().collect();
    got.sort_unstable();
    let mut want: Vec<u64> = (0..3).flat_map(|p| (0..50).map(move |i| p * 1000 + i)).collect();
    want.sort_unstable();
    check(got == want, "every message arrives once");

    // A Condvar hand-off with a sleeping thread, and a timed wait that times out.
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let pair2 = Arc::clone(&pair);
    let start = Instant::now();
    let sleeper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        let (lock, cvar) = &*pair2;
        *lock.lock().unwrap() = true;
        cvar.notify_one();
    });
    {
        let (lock, cvar) = &*pair;
        let mut ready = lock.lock().unwrap();
        while !*ready {
            ready = cvar.wait(ready).unwrap();
        }
    }
    sleeper.join().unwrap();
    check(start.elapsed() >= Duration::from_millis(30), "the sleep lasted");
    let (lock, cvar) = &*pair;
    let (_guard, timeout) = cvar
        .wait_timeout(lock.lock().unwrap(), Duration::from_millis(20))
        .unwrap();
    check(timeout.timed_out(), "an unnotified timed wait times out");

    // Scoped threads and a counter.
    let counter = AtomicU64::new(0);
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..100 {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    check(counter.load(Ordering::Relaxed) == 300, "scoped threads");

    // A thread blocked in a call other than a futex (reading an empty pipe, writing a full
    // one, waiting for a child) lets the others run: each of these hangs if it holds them up.
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let blocked_reader = thread::spawn(move || {
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        got
    });
    thread::sleep(Duration::from_millis(20));
    writer.write_all(b"through the pipe").unwrap();
    drop(writer);
    check(
        blocked_reader.join().unwrap() == "through the pipe",
        "a thread reading an empty pipe lets the writer run",
    );
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let sent: Vec<u8> = (0..160 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = sent.clone();
    let blocked_writer = thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut received = Vec::new();
    reader.read_to_end(&mut received).unwrap();
    blocked_writer.join().unwrap();
    check(
        received == expected,
        "a thread writing a full pipe lets the reader run",
    );
    let mut cat = Command::new("/bin/busybox")
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run busybox cat");
    let mut feed = cat.stdin.take().unwrap();
    let waiter = thread::spawn(move || cat.wait().unwrap());
    thread::sleep(Duration::from_millis(20));
    feed.write_all(b"to a child\n").unwrap();
    drop(feed);
    check(
        waiter.join().unwrap().success(),
        "a thread waiting for a child lets the others feed it",
    );

    // Files and the environment through std.
    let path = std::env::temp_dir().join("linux-rust-threads.txt");
    std::fs::write(&path, b"written by std\n").unwrap();
    check(
        std::fs::read_to_string(&path).unwrap() == "written by std\n",
        "a file reads back",
    );
    std::fs::remove_file(&path).unwrap();
    check(std::env::args().count() >= 1, "argv");

    // Child processes: Command (musl's posix_spawn: clone with CLONE_VM | CLONE_VFORK), its
    // output through a pipe, its exit status, and a program that does not exist.
    let out = Command::new("/bin/linux-hello")
        .output()
        .expect("run /bin/linux-hello");
    check(out.status.success(), "the child's exit status");
    check(
        String::from_utf8_lossy(&out.stdout).contains("hello from a static musl program"),
        "the child's output through a pipe",
    );
    let missing = Command::new("/bin/no-such-program").spawn();
    check(
        matches!(&missing, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
        "spawning a missing program fails with NotFound",
    );
    let status = Command::new("/bin/busybox")
        .args(["sh", "-c", "exit 3"])
        .status()
        .expect("run busybox sh");
    check(status.code() == Some(3), "a child's exit code");
    preemption();
    println!("linux-rust-threads: all checks passed");
}

/// A thread spinning on a flag that only another thread sets: the setter must get a turn
/// although the spinner never waits. First in plain code (the tick lands in the program),
/// then with a system call in the loop (the tick mostly lands in the personality and is taken
/// as the call returns). Each spin is bounded, so a missing preemption fails instead of hanging.
fn preemption() {
    use std::sync::atomic::AtomicBool;
    for with_calls in [false, true] {
        let flag = Arc::new(AtomicBool::new(false));
        let spinner = {
            let flag = Arc::clone(&flag);
            thread::spawn(move || {
                let give_up = Instant::now() + Duration::from_secs(10);
                let mut spins = 0u64;
                while !flag.load(Ordering::Acquire) {
                    spins += 1;
                    std::hint::spin_loop();
                    let look_at_clock = with_calls || spins.is_multiple_of(1 << 20);
                    if look_at_clock && Instant::now() > give_up {
                        return false;
                    }
                }
                true
            })
        };
        // Gives the spinner the CPU; it keeps it until a tick.
        thread::yield_now();
        flag.store(true, Ordering::Release);
        let what = if with_calls {
            "a spinning thread that makes system calls was preempted"
        } else {
            "a spinning thread was preempted"
        };
        check(spinner.join().unwrap(), what);
    }
}
