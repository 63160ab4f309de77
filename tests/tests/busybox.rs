//! Debian's busybox-static, unmodified, through the Linux personality: every command of
//! `images/linux/busybox-commands` runs in the guest (`init=/bin/runlist`, one at a time) and on
//! the host with the same binary, and each one's output (stdout and stderr together) and exit
//! status must be identical. Twice: with the guest's `syscall` sites rewritten into calls (the
//! kernel's default) and with each `syscall` reflected (`k42.syscall_rewrite=off`); and both
//! ways again under QEMU TCG, where `syscall` enters the kernel as on real x86 (the whole list
//! takes seconds there).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k42_guest_lib::cmdlist;
use k42_tests::*;

/// One command's result: its output lines and exit status.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    output: String,
    status: String,
}

/// The command lines of the list, in order.
fn commands() -> Vec<(String, Vec<String>)> {
    let list =
        std::fs::read_to_string(Path::new(k42_images::LINUX_SOURCES_DIR).join("busybox-commands"))
            .expect("read images/linux/busybox-commands");
    list.lines()
        .filter_map(|line| match cmdlist::words(line) {
            Ok(Some(words)) => Some((line.trim().to_string(), words)),
            Ok(None) => None,
            Err(why) => panic!("bad line in busybox-commands ({why}): {line}"),
        })
        .collect()
}

/// Splits the guest's output into each command's outcome (lines between `=== $ <line>` and
/// `=== exit <status>`); the personality's notes about unimplemented calls are set aside.
fn guest_outcomes(stdout: &str) -> (Vec<(String, Outcome)>, Vec<String>) {
    let mut outcomes = Vec::new();
    let mut notes = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in stdout.lines() {
        if let Some(command) = line.strip_prefix("=== $ ") {
            current = Some((command.to_string(), String::new()));
        } else if let Some(status) = line.strip_prefix("=== exit ") {
            if let Some((command, output)) = current.take() {
                let status = status.to_string();
                outcomes.push((command, Outcome { output, status }));
            }
        } else if line.starts_with("linux: unimplemented system call") {
            notes.push(line.to_string());
        } else if let Some((_, output)) = current.as_mut() {
            output.push_str(line);
            output.push('\n');
        }
    }
    (outcomes, notes)
}

/// Runs `words` with the host's busybox in `dir`.
fn host_outcome(dir: &Path, words: &[String]) -> Outcome {
    assert_eq!(words[0], "busybox", "every command runs busybox");
    let output = Command::new("/bin/busybox")
        .args(["sh", "-c", "exec /bin/busybox \"$@\" 2>&1", "sh"])
        .args(&words[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run the host's busybox (installed by scripts/setup)");
    Outcome {
        output: String::from_utf8_lossy(&output.stdout).into_owned(),
        status: output
            .status
            .code()
            .map_or("signal".into(), |c| c.to_string()),
    }
}

/// A host directory laid out like the guest's `/` for the commands: `data/`, `scripts/` and
/// an empty `tmp/`; one per test (they run in parallel and the commands write to `tmp/`).
fn host_root() -> std::path::PathBuf {
    static ROOTS: AtomicUsize = AtomicUsize::new(0);
    let root = std::env::temp_dir().join(format!(
        "k42-busybox-{}-{}",
        std::process::id(),
        ROOTS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    for dir in ["data", "scripts"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        let from = Path::new(k42_images::LINUX_SOURCES_DIR).join(dir);
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), root.join(dir).join(entry.file_name())).unwrap();
        }
    }
    root
}

/// Where the guest runs.
#[derive(Clone, Copy)]
enum Machine {
    K42vm,
    QemuTcg,
}

/// Runs the list in the guest on `machine` with `switches` on the kernel command line and
/// compares every command's outcome with the host's.
fn commands_match_the_host(machine: Machine, switches: &str) {
    let commands = commands();
    let cmdline = format!("init=/bin/runlist {switches}");
    let (run, success) = match machine {
        Machine::K42vm => {
            require_kvm();
            let run = run_with_limit(
                &k42vm_binary(),
                &[
                    "run",
                    "--cpus",
                    "2",
                    "--initrd",
                    k42_images::TEST_INITRD_PATH,
                    "--cmdline",
                    &cmdline,
                    "--timeout",
                    "280s",
                ],
                Duration::from_secs(300),
            );
            (run, 0)
        }
        // isa-debug-exit: QEMU exits with (0 << 1) | 1 when the guest exits with 0.
        Machine::QemuTcg => (
            qemu_tcg_microvm(2, Some(k42_images::TEST_INITRD_PATH), &cmdline),
            1,
        ),
    };
    let context = run.all();
    assert_eq!(
        run.status,
        Some(success),
        "runlist did not finish\n{context}"
    );
    let (guest, notes) = guest_outcomes(&run.stdout);
    for note in &notes {
        eprintln!("guest: {note}");
    }
    assert_eq!(
        guest.len(),
        commands.len(),
        "every command ran in the guest\n{context}"
    );
    let root = host_root();
    let mut mismatches = Vec::new();
    for ((line, words), (ran, outcome)) in commands.iter().zip(&guest) {
        assert_eq!(line, ran, "the guest ran the list in order");
        let host = host_outcome(&root, words);
        if &host != outcome {
            mismatches.push(format!(
                "$ {line}\n--- host (exit {})\n{}--- guest (exit {})\n{}",
                host.status, host.output, outcome.status, outcome.output
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        mismatches.is_empty(),
        "{} of {} commands differ from the host:\n{}",
        mismatches.len(),
        commands.len(),
        mismatches.join("\n")
    );
}

#[test]
fn busybox_commands_match_the_host() {
    commands_match_the_host(Machine::K42vm, "");
}

#[test]
fn busybox_commands_match_the_host_with_syscalls_reflected() {
    commands_match_the_host(Machine::K42vm, "k42.syscall_rewrite=off");
}

#[test]
fn qemu_tcg_busybox_commands_match_the_host() {
    commands_match_the_host(Machine::QemuTcg, "");
}

#[test]
fn qemu_tcg_busybox_commands_match_the_host_with_syscalls_reflected() {
    commands_match_the_host(Machine::QemuTcg, "k42.syscall_rewrite=off");
}
