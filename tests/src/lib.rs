//! Helpers for the integration tests: find `k42vm`, require KVM, run guests with a hard limit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Panics with a clear message when `/dev/kvm` is missing: these tests must never pass silently.
pub fn require_kvm() {
    if !Path::new("/dev/kvm").exists() {
        panic!(
            "/dev/kvm is missing: the integration tests boot real guests and need KVM. \
             Run them on an x86_64 Linux host with the kvm module loaded."
        );
    }
}

/// Path of the `k42vm` binary built alongside these tests (target/<profile>/k42vm).
pub fn k42vm_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let binary = profile_dir.join("k42vm");
    assert!(
        binary.exists(),
        "{} does not exist; run the tests with `cargo test --workspace`, which builds k42vm",
        binary.display()
    );
    binary
}

/// Path of the kernel ELF (the one embedded in k42vm).
pub fn kernel_elf() -> &'static str {
    k42_images::KERNEL_ELF_PATH
}

/// Asserts k42vm refused to start with its usage/setup status (2), said `needle` on stderr, and
/// did not panic.
pub fn assert_usage_error(run: &Run, needle: &str) {
    let context = run.all();
    assert_eq!(run.status, Some(2), "expected exit status 2\n{context}");
    assert!(
        run.stderr.contains(needle),
        "stderr lacks '{needle}'\n{context}"
    );
    assert!(
        !run.stderr.contains("panicked"),
        "k42vm panicked\n{context}"
    );
}

/// Runs our kernel under `qemu-system-x86_64 -accel tcg -M microvm` (real x86 semantics) with
/// `cpus` CPUs, an optional initrd and command line `append` (at most 120 s). A guest exit
/// code `c` makes QEMU exit with `(c << 1) | 1` (isa-debug-exit).
pub fn qemu_tcg_microvm(cpus: u32, initrd: Option<&str>, append: &str) -> Run {
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    assert!(
        qemu.exists(),
        "qemu-system-x86_64 is missing; install Debian's qemu-system-x86 (scripts/setup does)"
    );
    let smp = cpus.to_string();
    // QEMU's UART cannot say that input has ended, and these runs have none: reads of the
    // console must end at once, as they do on k42vm with no standard input.
    let append = format!("{append} k42.console_input=off");
    let mut args = vec![
        "-accel",
        "tcg",
        "-M",
        "microvm",
        "-cpu",
        "max",
        "-m",
        "128",
        "-smp",
        &smp,
        "-nographic",
        "-nodefaults",
        "-no-reboot",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-kernel",
        kernel_elf(),
        "-append",
        &append,
    ];
    if let Some(initrd) = initrd {
        args.extend_from_slice(&["-initrd", initrd]);
    }
    run_with_limit(qemu, &args, Duration::from_secs(120))
}

/// What a finished run printed and returned.
#[derive(Debug)]
pub struct Run {
    /// Exit status (`None` if killed by a signal).
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Both streams, for assertion messages.
    pub fn all(&self) -> String {
        format!(
            "status {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `program args` with no stdin, killing it after `limit` (a test-harness safety net; the
/// tests pass `--timeout` to k42vm themselves).
pub fn run_with_limit(program: &Path, args: &[&str], limit: Duration) -> Run {
    run_fed(program, args, None, limit)
}

/// Runs `program args` with `input` on its stdin (a pipe, closed after it), killing it after
/// `limit`.
pub fn run_with_input(program: &Path, args: &[&str], input: &[u8], limit: Duration) -> Run {
    run_fed(program, args, Some(input), limit)
}

fn run_fed(program: &Path, args: &[&str], input: Option<&[u8]>, limit: Duration) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // Small enough for the pipe's buffer; the child reads it as it goes.
        stdin.write_all(bytes).expect("feed the child's stdin");
    }
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for child").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("collect output");
    Run {
        status: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `k42vm run ARGS` (with a 240 s safety limit; loaded CI machines are slow).
pub fn k42vm_run(args: &[&str]) -> Run {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    run_with_limit(&k42vm_binary(), &full, Duration::from_secs(240))
}

/// The ktest lines of an output: (plan, passed names, failed names).
pub fn ktest_results(output: &str) -> (Option<u64>, Vec<String>, Vec<String>) {
    let mut plan = None;
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for line in output.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("ktest"), Some("plan"), Some(n)) => plan = n.parse().ok(),
            (Some("ktest"), Some("pass"), Some(name)) => passed.push(name.to_string()),
            (Some("ktest"), Some("FAIL"), Some(name)) => failed.push(name.to_string()),
            _ => {}
        }
    }
    (plan, passed, failed)
}

/// Asserts that a ktest run reported its plan, every test passed and none is missing.
pub fn assert_all_ktests_passed(output: &str, context: &str) {
    let (plan, passed, failed) = ktest_results(output);
    let plan = plan.unwrap_or_else(|| panic!("no ktest plan reported\n{context}"));
    assert!(plan >= 10, "fewer ktests planned than exist\n{context}");
    assert!(failed.is_empty(), "ktests failed: {failed:?}\n{context}");
    assert_eq!(
        passed.len() as u64,
        plan,
        "missing ktest reports\n{context}"
    );
}

/// Asserts that k42vm's `--timeline` output (stderr) has each of `stages`.
pub fn assert_timeline_has(run: &Run, stages: &[&str], context: &str) {
    for stage in stages {
        assert!(
            run.stderr.contains(&format!(" {stage}\n")),
            "timeline lacks '{stage}'\n{context}"
        );
    }
}

/// The CPU count from the kernel's banner line.
pub fn banner_cpus(output: &str) -> Option<u32> {
    let line = output.lines().find(|l| l.starts_with("k42 kernel:"))?;
    let before = line.split(" CPU").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Writes `data` gzip-compressed (by gzip(1), as a user would make an initrd) to `path`.
pub fn write_gzip(path: &Path, data: &[u8]) {
    let mut child = Command::new("gzip")
        .args(["-c", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip(1) is needed for this test (Debian's gzip package)");
    let mut stdin = child.stdin.take().expect("gzip's stdin");
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("run gzip");
    feeder.join().unwrap().expect("feed gzip");
    assert!(output.status.success(), "gzip failed: {:?}", output.status);
    std::fs::write(path, output.stdout).expect("write the gzip file");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ktest_lines_and_banner() {
        let out = "k42 kernel: 0.1.0 on k42vm, 4 CPUs, 255 MiB RAM\nktest plan 2\nktest pass a\nktest FAIL b (0x3)\n";
        let (plan, passed, failed) = ktest_results(out);
        assert_eq!(
            (plan, passed, failed),
            (Some(2), vec!["a".into()], vec!["b".into()])
        );
        assert_eq!(banner_cpus(out), Some(4));
        assert_eq!(
            banner_cpus("k42 kernel: 0.1.0 on k42vm, 1 CPU, 64 MiB"),
            Some(1)
        );
    }
}
