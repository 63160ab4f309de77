//! The default guest (`k42vm run` with no --kernel, --initrd or --cmdline): Debian's busybox
//! sh from the embedded initramfs, running the demonstration script when k42vm's stdin is not a
//! terminal and reading commands from the console when it is (or when `k42.arg=1` asks).

use std::path::Path;
use std::time::Duration;

use k42_tests::*;

/// `k42vm run` with no guest options boots the default guest: busybox sh runs the embedded
/// demonstration script (stdin is not a terminal here) and the VM exits with its status.
#[test]
fn default_guest_runs_the_busybox_demonstration() {
    require_kvm();
    let run = k42vm_run(&["--timeline", "--timeout", "200s"]);
    let context = run.all();
    assert_eq!(run.status, Some(0), "{context}");
    assert!(
        run.stdout.contains("k42 kernel:") && run.stdout.contains("1 CPU,"),
        "{context}"
    );
    // What only a working busybox sh with pipes, files, jobs and $(...) prints.
    for line in [
        "== k42: busybox sh, a static Linux binary, on the k42 kernel\n",
        "Welcome to the k42 kernel: busybox is an unmodified Linux binary here.\n",
        "97 87 79 \n",
        "sum of 1..100: 5050\n",
        "b7751c7c7c138f149fc332ea5d5a7e46  /tmp/note\n",
        "b7751c7c7c138f149fc332ea5d5a7e46  /tmp/copy\n",
        "job 1 done\n",
        "job 2 done\n",
        "sh -c 'exit 7' gave 7\n",
        // busybox, the Linux personality, and the six native programs of the default
        // initramfs (`DEFAULT_PROGRAMS` in images/build.rs).
        "there are 8 files in /bin\n",
        "== done\n",
    ] {
        assert!(run.stdout.contains(line), "missing {line:?}\n{context}");
    }
    // busybox ps, from the kernel's process list through /proc: the servers init started
    // (parent 1, each leading its own group) and the shell running the script.
    let ps: Vec<Vec<&str>> = run
        .stdout
        .split("== the processes now")
        .nth(1)
        .and_then(|rest| rest.split("== done").next())
        .unwrap_or_else(|| panic!("no ps output\n{context}"))
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    for server in ["console", "fsd"] {
        let args = format!("/bin/{server}");
        assert!(
            ps.iter().any(|r| r.len() == 5
                && r[1] == "1"
                && r[0] == r[2]
                && r[3] == server
                && r[4] == args),
            "no ps line for {server}\n{context}"
        );
    }
    assert!(
        ps.iter().any(|r| r.ends_with(&["sh", "/etc/k42/demo.sh"])),
        "no ps line for the shell\n{context}"
    );
    assert_timeline_has(
        &run,
        &[
            "first guest instruction",
            "kernel init done",
            "guest shutdown",
        ],
        &context,
    );
}

/// Input piped into k42vm reaches an interactive shell through the UART, the kernel, the
/// console server and the personality, one line per read as from a terminal: the `read`
/// builtin gets the line after its own, not what the shell read before. `date` tells the
/// host's time.
#[test]
fn piped_input_reaches_an_interactive_shell() {
    require_kvm();
    let input = b"echo typed $((6*7))\nread a b; echo \"a=$a b=$b\"\nfirst second\nls /etc\n\
echo \"epoch $(date +%s)\"\nexit 3\n";
    let run = run_with_input(
        &k42vm_binary(),
        &[
            "run",
            "--initrd",
            k42_images::DEFAULT_INITRD_PATH,
            "--cmdline",
            "init=/bin/shell k42.arg=1",
            "--timeout",
            "200s",
        ],
        input,
        Duration::from_secs(240),
    );
    let context = run.all();
    assert_eq!(run.status, Some(3), "the shell's exit status\n{context}");
    for wanted in ["typed 42\n", "a=first b=second\n", "k42   motd\n"] {
        assert!(run.stdout.contains(wanted), "missing {wanted:?}\n{context}");
    }
    // The guest's wall clock is the host's (k42vm's WallClock hypercall at boot).
    let guest_epoch: u64 = run
        .stdout
        .split("epoch ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no epoch line\n{context}"));
    let host_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        guest_epoch <= host_epoch && host_epoch - guest_epoch < 300,
        "guest date +%s {guest_epoch}, host {host_epoch}\n{context}"
    );
}

/// On a terminal (`script` gives k42vm a pseudo-terminal), `k42vm run` alone starts the
/// interactive shell, and `exit N` ends the VM with N.
#[test]
fn default_guest_on_a_terminal_is_an_interactive_shell() {
    require_kvm();
    let script = Path::new("/usr/bin/script");
    assert!(
        script.exists(),
        "bsdutils' script (installed by scripts/setup) is needed"
    );
    let command = format!("{} run --timeout 200s", k42vm_binary().display());
    let run = run_with_input(
        script,
        &["-q", "-e", "-c", &command, "/dev/null"],
        b"echo on a terminal $((2+3))\nexit 4\n",
        Duration::from_secs(240),
    );
    let context = run.all();
    assert_eq!(run.status, Some(4), "{context}");
    assert!(
        run.stdout.contains("busybox sh on the Linux personality"),
        "{context}"
    );
    assert!(run.stdout.contains("on a terminal 5"), "{context}");
    assert!(
        !run.stdout.contains("== done"),
        "the demonstration ran\n{context}"
    );
}
