//! User-level bench (issue 4): the guest's `/bin/bench` (run as init) times an empty K42 system
//! call, a PPC round trip to a server process and a user-level thread switch; the same run
//! measures host peers: `getpid`, a pipe ping-pong between two processes, and a futex
//! ping-pong between two pthreads (std's Mutex + Condvar). Two static musl programs time
//! themselves in the guest (through the Linux personality) and on the host: `linux-getpid`
//! and `linux-procbench` (pipe round trip, fork+exec+wait, first-touch faults, 1 MiB of file
//! writes and reads, and a 100-byte file written and read back: each alone, through the
//! file's window, and with the file open twice, through the file server); Debian's
//! busybox `sh` runs the same generated 1000-line script in both (start to exit). The guest runs
//! twice, with its `syscall` sites rewritten into calls (the default) and with
//! `k42.syscall_rewrite=off` (each `syscall` reflected). Prints figures and ratios; on an
//! emulating KVM the guest's kernel paths cost about 0.6-1 µs per ring-0 instruction, so the
//! guest-side time divided by that gives the instruction count of the path.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use k42_benches::{k42vm_binary, parse_metric, ratio, require_kvm, run_timed, tail};

const ROUNDS: u32 = 20_000;
const CHILD_ENV: &str = "K42_BENCH_PIPE_ECHO";

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        echo_child();
        return ExitCode::SUCCESS;
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("user bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The pipe peer's other process: echoes every byte back.
fn echo_child() {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut byte = [0u8; 1];
    while input.read_exact(&mut byte).is_ok() {
        if output
            .write_all(&byte)
            .and_then(|_| output.flush())
            .is_err()
        {
            break;
        }
    }
}

fn pipe_ping_pong_ns() -> Result<f64, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(me)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn the echo process: {e}"))?;
    let mut to = child.stdin.take().ok_or("no child stdin")?;
    let mut from = child.stdout.take().ok_or("no child stdout")?;
    let mut byte = [7u8; 1];
    let mut once = |byte: &mut [u8; 1]| -> Result<(), String> {
        to.write_all(byte).map_err(|e| e.to_string())?;
        from.read_exact(byte).map_err(|e| e.to_string())
    };
    for _ in 0..100 {
        once(&mut byte)?;
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        once(&mut byte)?;
    }
    let ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(ROUNDS);
    drop(to);
    let _ = child.wait();
    Ok(ns)
}

/// Two threads handing a turn back and forth through a futex-backed mutex and condvar: one
/// round is two switches.
fn pthread_switch_ns() -> f64 {
    let turn = Arc::new((Mutex::new(0u32), Condvar::new()));
    let other = turn.clone();
    let side = move |pair: Arc<(Mutex<u32>, Condvar)>, me: u32| {
        let (lock, cv) = &*pair;
        for _ in 0..ROUNDS {
            let mut t = lock.lock().expect("no poisoning");
            while *t % 2 != me {
                t = cv.wait(t).expect("no poisoning");
            }
            *t += 1;
            cv.notify_one();
        }
    };
    let start = Instant::now();
    let peer = std::thread::spawn(move || side(other, 1));
    side(turn, 0);
    peer.join().expect("peer thread");
    start.elapsed().as_secs_f64() * 1e9 / f64::from(2 * ROUNDS)
}

fn getpid_ns() -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..ROUNDS {
        sum = sum.wrapping_add(u64::from(std::process::id()));
    }
    std::hint::black_box(sum);
    start.elapsed().as_secs_f64() * 1e9 / f64::from(ROUNDS)
}

/// The output of the guest's static Linux program `name`, run natively on the host.
fn host_linux_program(name: &str) -> Result<String, String> {
    let program = std::path::Path::new(k42_images::LINUX_PROGRAMS_DIR).join(name);
    let out = Command::new(&program)
        .output()
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host's busybox running the guest's shell benchmark script, start to exit, in
/// microseconds (the best of five runs).
fn host_sh_script_us() -> Result<f64, String> {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let out = Command::new("/bin/busybox")
            .args(["sh", k42_images::SH_BENCH_SCRIPT_PATH])
            .output()
            .map_err(|e| format!("run the host's busybox sh: {e}"))?;
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        if !out.status.success() {
            return Err(format!("the host's busybox sh failed: {}", out.status));
        }
        best = best.min(elapsed);
    }
    Ok(best)
}

/// `metric name` from `output`, or an error naming where it was missing.
fn metric_in(output: &str, name: &str, source: &str) -> Result<f64, String> {
    parse_metric(output, name).ok_or_else(|| {
        format!(
            "no `metric {name}` line from {source}:\n{}",
            tail(output, 10)
        )
    })
}

/// Runs the guest's `/bin/bench` with `extra` on the kernel command line; returns its output.
fn guest_bench(k42vm: &std::path::Path, extra: &str) -> Result<String, String> {
    let cmdline = format!("k42.quiet init=/bin/bench {extra}");
    println!(
        "user: {} run --initrd <test initramfs> --cmdline \"{cmdline}\"",
        k42vm.display()
    );
    let mut cmd = Command::new(k42vm);
    cmd.args([
        "run",
        "--initrd",
        k42_images::TEST_INITRD_PATH,
        "--cmdline",
        &cmdline,
        "--timeout",
        "120s",
    ]);
    let run = run_timed(&mut cmd, Duration::from_secs(150))?;
    if !run.status.success() {
        return Err(format!(
            "k42vm failed ({}):\n{}",
            run.status,
            tail(&run.stdout, 10)
        ));
    }
    Ok(run.stdout)
}

fn bench() -> Result<(), String> {
    require_kvm()?;
    let k42vm = k42vm_binary()?;
    let stdout = guest_bench(&k42vm, "")?;
    let reflected_stdout = guest_bench(&k42vm, "k42.syscall_rewrite=off")?;
    let metric = |name: &str| metric_in(&stdout, name, "the guest");
    let null = metric("null_syscall_ns")?;
    let ppc = metric("ppc_roundtrip_ns")?;
    let switch = metric("uthread_switch_ns")?;
    let linux_getpid = metric("linux_getpid_ns")?;
    let reflected_getpid = metric_in(
        &reflected_stdout,
        "linux_getpid_ns",
        "the guest without rewriting",
    )?;
    let host_getpid_program = host_linux_program("linux-getpid")?;
    let host_linux_getpid = metric_in(&host_getpid_program, "linux_getpid_ns", "the host")?;
    let host_procbench = host_linux_program("linux-procbench")?;
    let processes = [
        (
            "linux_pipe_roundtrip_ns",
            "Linux pipe round trip (fork, 2 pipes)",
        ),
        ("linux_fork_exec_wait_us", "Linux fork+exec+wait (us)"),
        (
            "linux_fault_ns_per_page",
            "Linux first touch of 64 MiB, per page",
        ),
        (
            "linux_file_rw_us",
            "Linux file 1 MiB write+read, 4 KiB calls (us)",
        ),
        (
            "linux_file_rw_shared_us",
            "the same, file open twice: server-mediated (us)",
        ),
        (
            "linux_small_file_us",
            "Linux 100-byte file written and read back (us)",
        ),
        (
            "linux_small_file_shared_us",
            "the same, file open elsewhere: server-mediated (us)",
        ),
    ]
    .map(|(name, what)| {
        Ok::<_, String>((
            what,
            metric(name)?,
            metric_in(&host_procbench, name, "the host")?,
        ))
    });
    let sh_script = metric("linux_sh_script_us")?;
    let host_sh_script = host_sh_script_us()?;
    let host_getpid = getpid_ns();
    let pipe = pipe_ping_pong_ns()?;
    let pthread = pthread_switch_ns();

    println!();
    println!(
        "{:<52} {:>12} {:>12} {:>8}",
        "(ns)", "guest", "host peer", "ratio"
    );
    let row = |what: &str, ours: f64, peer: f64| {
        let r = ratio(ours, peer).unwrap_or(f64::NAN);
        println!("{what:<52} {ours:>12.0} {peer:>12.0} {r:>8.2}");
    };
    row("empty K42 system call vs host getpid", null, host_getpid);
    row("PPC round trip vs pipe ping-pong (2 processes)", ppc, pipe);
    row(
        "user-level thread switch vs pthread futex switch",
        switch,
        pthread,
    );
    row(
        "Linux getpid, site rewritten, guest vs host",
        linux_getpid,
        host_linux_getpid,
    );
    row(
        "Linux getpid, syscall reflected, guest vs host",
        reflected_getpid,
        host_linux_getpid,
    );
    for process in processes {
        let (what, ours, peer) = process?;
        row(what, ours, peer);
    }
    row(
        "busybox sh, 1000-line script, start to exit (us)",
        sh_script,
        host_sh_script,
    );
    for (windowed, mediated, what) in [
        ("linux_file_rw_us", "linux_file_rw_shared_us", "1 MiB"),
        (
            "linux_small_file_us",
            "linux_small_file_shared_us",
            "100-byte file",
        ),
    ] {
        println!(
            "{what}: server-mediated / file window, same guest run: {:.2}",
            ratio(metric(mediated)?, metric(windowed)?).unwrap_or(f64::NAN)
        );
    }
    println!();
    println!(
        "kernel entry+exit of the empty call ~ {:.0}-{:.0} ring-0 instructions at 1.0-0.6 us each \
         (only meaningful on an emulating KVM such as kvm_pvm)",
        null / 1000.0,
        null / 600.0
    );
    Ok(())
}
