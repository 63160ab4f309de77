//! A Rust program with the standard library (x86_64-unknown-linux-musl, static) that checks
//! its own results: threads (std::thread), Mutex, Condvar, channels, thread-locals, sleeps and
//! joins; then files, the environment and child processes (std::process::Command). Prints
//! `linux-rust-threads: all checks passed` and exits 0, or says what failed and exits 1.

use std::cell::Cell;
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
    let out = std::process::Command::new("/bin/linux-hello")
        .output()
        .expect("run /bin/linux-hello");
    check(out.status.success(), "the child's exit status");
    check(
        String::from_utf8_lossy(&out.stdout).contains("hello from a static musl program"),
        "the child's output through a pipe",
    );
    let missing = std::process::Command::new("/bin/no-such-program").spawn();
    check(
        matches!(&missing, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
        "spawning a missing program fails with NotFound",
    );
    let status = std::process::Command::new("/bin/busybox")
        .args(["sh", "-c", "exit 3"])
        .status()
        .expect("run busybox sh");
    check(status.code() == Some(3), "a child's exit code");
    println!("linux-rust-threads: all checks passed");
}
