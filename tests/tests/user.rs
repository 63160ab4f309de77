//! User level: native programs from the test initramfs (`images/programs`) run as processes
//! with dispatchers on every CPU, call servers by PPC, and fail safely. Under k42vm (where
//! user code enters the kernel by `int3`) and under QEMU TCG (real x86: `syscall`).

use k42_tests::*;

fn initrd() -> &'static str {
    k42_images::TEST_INITRD_PATH
}

/// The live-process limit the user-level runs boot with: low, so `/bin/fork`'s fork bomb
/// reaches it in a few dozen processes (each fork costs milliseconds of emulated ring 0 here).
const MAX_PROCESSES: u32 = 24;

/// Whether the kernel rewrites Linux system-call sites into calls (its default) or leaves
/// every `syscall` to be reflected (`k42.syscall_rewrite=off`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rewrite {
    On,
    Off,
}

impl Rewrite {
    /// The kernel command line of a `/bin/init` run.
    fn cmdline(self) -> String {
        let base = format!("init=/bin/init k42.arg=50 k42.max_processes={MAX_PROCESSES}");
        match self {
            Rewrite::On => base,
            Rewrite::Off => format!("{base} k42.syscall_rewrite=off"),
        }
    }
}

/// How many rewritten system-call sites `/bin/linux-rewrite` found in its own text.
fn rewritten_sites(output: &str, context: &str) -> u32 {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("linux-rewrite: ok ("))
        .unwrap_or_else(|| panic!("linux-rewrite did not pass\n{context}"));
    line.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no site count in `{line}`\n{context}"))
}

/// Rewritten sites as the switch says: several of them (getpid, open, read, fork, ...), or none.
fn assert_rewriting(output: &str, rewrite: Rewrite, context: &str) {
    let sites = rewritten_sites(output, context);
    match rewrite {
        Rewrite::On => assert!(
            sites >= 5,
            "only {sites} system-call sites were rewritten\n{context}"
        ),
        Rewrite::Off => assert_eq!(
            sites, 0,
            "sites were rewritten with k42.syscall_rewrite=off\n{context}"
        ),
    }
}

/// What every successful run of `/bin/init` prints, in some order.
fn assert_user_checks_passed(output: &str, cpus: u32, context: &str) {
    assert!(
        output.contains("hello: all checks passed"),
        "bad-argument and memory checks failed\n{context}"
    );
    assert!(
        output.contains("process 4 (/bin/fault): page fault at 0x10 (read)"),
        "the faulting program was not reported and ended\n{context}"
    );
    for seed in [1, 2] {
        assert!(
            output.contains(&format!("fpu {seed}: registers intact over 200 turns")),
            "x87/SSE registers of process {seed} survive dispatcher switches\n{context}"
        );
    }
    assert!(
        output.contains("hello from a static musl program: argv[0]=/bin/linux-hello")
            && output.contains("linux-hello: all checks passed"),
        "a static musl C program runs through the Linux personality\n{context}"
    );
    assert!(
        output.contains("fsd: ready (") && output.contains("linux-files: ok ("),
        "files, directories, pipes and devices work through the file server\n{context}"
    );
    assert!(
        output.contains("linux-windows: ok ("),
        "file windows (reads and writes in place, growth, copy back, the swap to the server \
         on a second open, sharing over fork and exec) failed\n{context}"
    );
    assert!(
        output.contains("linux-procs: ok (")
            && output.lines().any(|l| {
                l.contains("(the program): signal 11 (vector 14, error code 0x")
                    && l.contains(") at 0x10, rip ")
            }),
        "Linux fork/exec/wait4, signals, SIGSEGV from a fault or the fork bomb failed\n{context}"
    );
    assert!(
        output.contains("sched: all checks passed"),
        "dispatcher classes or tickets had no effect\n{context}"
    );
    assert!(
        output.contains("preempt: all checks passed"),
        "user-level threads of one dispatcher did not preempt each other\n{context}"
    );
    assert!(
        output.contains("pager: all checks passed"),
        "paged memory objects or page-fault upcalls failed\n{context}"
    );
    assert!(
        output.contains("nested: all checks passed")
            && output.contains(
                "nested: the relay calling itself: Some(Busy); calling a missing server: Some(NotFound)"
            ),
        "nested PPC (a server's handler calling kv) failed\n{context}"
    );
    assert!(
        output.contains("tlb: a fork kept the child's copy while another dispatcher wrote")
            && output.contains("tlb: an unmap ended the reader on another dispatcher"),
        "a fork or an unmap did not reach the process's other dispatchers (TLB shoot-down)\n{context}"
    );
    assert!(
        output.contains("linux-rust-threads: all checks passed"),
        "a std Rust program's threads, locks, condition variables and channels failed\n{context}"
    );
    assert!(
        output.contains("linux-rust-sys: all checks passed"),
        "a std Rust program's directories, pipes, signals, memory, clocks or ioctls failed\n\
         {context}"
    );
    assert!(
        output.contains("linux: unimplemented system call unknown (400) returns ENOSYS"),
        "unimplemented Linux calls are logged by name (or number)\n{context}"
    );
    assert!(
        output.contains("upcall: all checks passed"),
        "a PPC call that found the server busy was parked by upcall while its dispatcher ran \
         other threads\n{context}"
    );
    assert!(
        output.contains(
            "fork: ok (copy on write, wait-any, no-hang, no stale translations, fork bomb of "
        ) && output.contains(&format!(
            "processes ended by the limit of {MAX_PROCESSES}, all frames returned;"
        )),
        "copy-on-write fork, wait for any child, no-hang wait, fresh processes' memory, the \
         process limit or the return of every frame failed\n{context}"
    );
    assert!(
        output.contains(&format!("threads: {cpus} dispatchers,"))
            && output.contains("threads: all checks passed"),
        "user-level threads failed\n{context}"
    );
    let clients: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("kvclient ") && l.contains("calls made"))
        .collect();
    assert_eq!(clients.len(), 2, "both key-value clients report\n{context}");
    for line in clients {
        assert!(
            line.contains(&format!(": {cpus} dispatchers,")) && line.ends_with(", 0 errors"),
            "a client did not use every CPU or saw errors: {line}\n{context}"
        );
    }
    assert!(
        output.contains("init: all user-level checks passed"),
        "{context}"
    );
    assert!(
        output.contains("init (/bin/init) exited with status 0"),
        "{context}"
    );
}

fn k42vm_user(cpus: u32, rewrite: Rewrite) {
    let cpus_arg = cpus.to_string();
    let cmdline = rewrite.cmdline();
    let run = k42vm_run(&[
        "--cpus",
        &cpus_arg,
        "--initrd",
        initrd(),
        "--cmdline",
        &cmdline,
        "--timeout",
        "200s",
    ]);
    let context = run.all();
    assert_eq!(run.status, Some(0), "init did not exit with 0\n{context}");
    assert!(run.stdout.contains("user entry: Int3"), "{context}");
    assert_user_checks_passed(&run.stdout, cpus, &context);
    assert_rewriting(&run.stdout, rewrite, &context);
}

#[test]
fn k42vm_user_level_1_cpu() {
    k42vm_user(1, Rewrite::On);
}

#[test]
fn k42vm_user_level_2_cpus() {
    k42vm_user(2, Rewrite::On);
}

#[test]
fn k42vm_user_level_2_cpus_syscalls_reflected() {
    k42vm_user(2, Rewrite::Off);
}

#[test]
fn k42vm_user_level_4_cpus() {
    k42vm_user(4, Rewrite::On);
}

#[test]
fn init_exit_status_is_the_vm_exit_status() {
    let run = k42vm_run(&[
        "--initrd",
        initrd(),
        "--cmdline",
        "init=/bin/fault",
        "--timeout",
        "60s",
    ]);
    let context = run.all();
    assert_eq!(
        run.status,
        Some(139),
        "a faulting init ends the VM with 139\n{context}"
    );
    assert!(
        run.stdout
            .contains("init (/bin/fault) exited with status 139"),
        "{context}"
    );
}

#[test]
fn missing_or_bad_init_is_a_clear_error() {
    for (init, message) in [
        ("/bin/nonexistent", "cannot start it: NotFound"),
        ("/etc/motd", "cannot start it: NotExecutable"),
    ] {
        let cmdline = format!("init={init}");
        let run = k42vm_run(&[
            "--initrd",
            initrd(),
            "--cmdline",
            &cmdline,
            "--timeout",
            "60s",
        ]);
        let context = run.all();
        assert_eq!(run.status, Some(104), "{context}");
        assert!(run.stdout.contains(message), "{context}");
    }
    let run = k42vm_run(&["--cmdline", "init=/bin/init", "--timeout", "60s"]);
    let context = run.all();
    assert_eq!(run.status, Some(104), "{context}");
    assert!(run.stdout.contains("no initramfs was given"), "{context}");
}

/// A gzip-compressed initramfs: k42vm unpacks it on the host and the programs in it start; under
/// QEMU, which passes it as it is, the kernel says what to do instead of unpacking in ring 0.
#[test]
fn gzip_initramfs_programs_start() {
    let dir = std::env::temp_dir().join(format!("k42-gz-initramfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let packed = dir.join("initramfs.cpio.gz");
    write_gzip(&packed, &std::fs::read(initrd()).unwrap());
    let packed = packed.to_str().unwrap();
    let run = k42vm_run(&[
        "--initrd",
        packed,
        "--cmdline",
        "init=/bin/fault",
        "--timeout",
        "60s",
    ]);
    let context = run.all();
    assert_eq!(run.status, Some(139), "{context}");
    assert!(
        run.stdout
            .contains("init (/bin/fault) exited with status 139"),
        "{context}"
    );
    let run = qemu_tcg_microvm(1, Some(packed), "init=/bin/fault");
    let context = run.all();
    assert_eq!(run.status, Some((104 << 1) | 1), "no init: 104\n{context}");
    assert!(
        run.stdout.contains("the initramfs is gzip-compressed") && run.stdout.contains("gunzip it"),
        "{context}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn qemu_user(cpus: u32, rewrite: Rewrite) {
    let run = qemu_tcg_microvm(cpus, Some(initrd()), &rewrite.cmdline());
    let context = run.all();
    assert_eq!(
        run.status,
        Some(1),
        "guest did not exit with code 0\n{context}"
    );
    assert!(
        run.stdout.contains("user entry: Syscall"),
        "real x86 takes the syscall path\n{context}"
    );
    assert_user_checks_passed(&run.stdout, cpus, &context);
    assert_rewriting(&run.stdout, rewrite, &context);
}

#[test]
fn qemu_tcg_user_level_1_cpu() {
    qemu_user(1, Rewrite::On);
}

#[test]
fn qemu_tcg_user_level_1_cpu_syscalls_reflected() {
    qemu_user(1, Rewrite::Off);
}

#[test]
fn qemu_tcg_user_level_2_cpus() {
    qemu_user(2, Rewrite::On);
}
