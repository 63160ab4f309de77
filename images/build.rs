//! Builds the guest kernel for `x86_64-unknown-none` (always optimized) into
//! `target/guest-kernel/`, so `k42vm` can embed it and tests can boot it; then the native
//! programs (`images/programs`) into `target/guest-programs/`, packed with a few data files
//! into the test initramfs (cpio newc).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The native programs packed into the initramfs as `bin/<name>`.
const PROGRAMS: [&str; 29] = [
    "init", "hello", "fault", "console", "kv", "kvclient", "threads", "bench", "fpu", "upcall",
    "fsd", "runlist", "fork", "drvinit", "blkd", "blktest", "devcheck", "rngd", "rngtest", "shell",
    "netd", "nettest", "tlb", "relay", "nested", "sched", "preempt", "pager", "hvcd",
];
/// The native programs of the default initramfs (embedded in `k42vm`): its init and the
/// servers busybox needs, and the drivers for `--disk`, `--rng` and `--virtio-console`.
const DEFAULT_PROGRAMS: [&str; 6] = ["shell", "console", "fsd", "blkd", "rngd", "hvcd"];
/// The Linux personality, packed at `kabi::LINUX_PERSONALITY` (built with the programs).
const LINUX_PERSONALITY: &str = "linux";
/// Static Linux programs in C (`images/linux/<name>.c`), packed as `bin/<name>`.
const LINUX_C_PROGRAMS: [&str; 10] = [
    "linux-hello",
    "linux-getpid",
    "linux-files",
    "linux-windows",
    "linux-random",
    "linux-procs",
    "linux-rewrite",
    "linux-procbench",
    "linux-disk",
    "linux-diskbench",
];

/// Static Linux programs in Rust with the standard library (`images/linux/rust/<name>.rs`),
/// built for `x86_64-unknown-linux-musl` and packed as `bin/<name>`.
const LINUX_RUST_PROGRAMS: [&str; 2] = ["linux-rust-threads", "linux-rust-sys"];

/// Where Debian's busybox-static installs busybox.
const BUSYBOX: &str = "/bin/busybox";
/// Data files of the busybox test commands (`images/linux/data/<name>`, packed as
/// `data/<name>`).
const BUSYBOX_DATA: [&str; 3] = ["words", "numbers", "passwd"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("images/ lives in the workspace root")
        .to_path_buf();
    let kernel_dir = root.join("guest-kernel");
    let target_dir = root.join("target").join("guest-kernel");
    for path in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "linker.ld",
        "build.rs",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", kernel_dir.join(path).display());
    }
    for dep in [
        "paravirt/src",
        "paravirt/Cargo.toml",
        "guest-lib/src",
        "guest-lib/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dep).display());
    }

    let elf = build_guest_crate(&kernel_dir, &target_dir, "the guest kernel").join("k42-kernel");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("k42-kernel.elf");
    std::fs::copy(&elf, &out).expect("copy the kernel ELF into OUT_DIR");
    println!("cargo:rustc-env=K42_KERNEL_ELF={}", out.display());

    let programs_dir = manifest_dir.join("programs");
    for path in [
        "src",
        "rt/src",
        "rt/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            programs_dir.join(path).display()
        );
    }
    let bin_dir = build_guest_crate(
        &programs_dir,
        &root.join("target").join("guest-programs"),
        "the native guest programs",
    );
    let mut archive = Vec::new();
    append_entry(&mut archive, "bin", 0o040755, &[]);
    append_entry(&mut archive, "etc", 0o040755, &[]);
    append_entry(
        &mut archive,
        "etc/motd",
        0o100644,
        b"k42: this file is not a program\n",
    );
    for name in PROGRAMS {
        let bytes = std::fs::read(bin_dir.join(name))
            .unwrap_or_else(|e| panic!("read the built program {name}: {e}"));
        append_entry(&mut archive, &format!("bin/{name}"), 0o100755, &bytes);
    }
    append_entry(&mut archive, "lib", 0o040755, &[]);
    append_entry(&mut archive, "lib/k42", 0o040755, &[]);
    let personality =
        std::fs::read(bin_dir.join(LINUX_PERSONALITY)).expect("read the built Linux personality");
    append_entry(&mut archive, "lib/k42/linux", 0o100755, &personality);
    let linux_programs = build_linux_programs(&manifest_dir.join("linux"), &out_dir)
        .into_iter()
        .chain(build_rust_programs(
            &manifest_dir.join("linux/rust"),
            &out_dir,
        ));
    for (name, bytes) in linux_programs {
        append_entry(&mut archive, &format!("bin/{name}"), 0o100755, &bytes);
    }
    // Debian's busybox-static (installed by scripts/setup), the data its test commands read,
    // and the list of those commands (run by /bin/runlist; tests/tests/busybox.rs runs the
    // same list on the host).
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("read {BUSYBOX} (Debian's busybox-static; run scripts/setup): {e}")
    });
    append_entry(&mut archive, "bin/busybox", 0o100755, &busybox);
    println!("cargo:rerun-if-changed={BUSYBOX}");
    let linux_dir = manifest_dir.join("linux");
    append_entry(&mut archive, "data", 0o040755, &[]);
    for name in BUSYBOX_DATA {
        let path = linux_dir.join("data").join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        append_entry(&mut archive, &format!("data/{name}"), 0o100644, &bytes);
    }
    // The shell scripts of the busybox tests (`images/linux/scripts/*.sh`, packed as
    // `scripts/<name>`).
    append_entry(&mut archive, "scripts", 0o040755, &[]);
    let scripts_dir = linux_dir.join("scripts");
    println!("cargo:rerun-if-changed={}", scripts_dir.display());
    let mut scripts: Vec<_> = std::fs::read_dir(&scripts_dir)
        .expect("read images/linux/scripts")
        .map(|entry| entry.expect("read images/linux/scripts").path())
        .filter(|path| path.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    for path in scripts {
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let name = path.file_name().expect("a script's name").to_string_lossy();
        append_entry(&mut archive, &format!("scripts/{name}"), 0o100755, &bytes);
    }
    // The shell benchmark's script (the host runs the same file).
    let sh_bench = sh_bench_script();
    append_entry(
        &mut archive,
        "scripts/sh-bench.sh",
        0o100755,
        sh_bench.as_bytes(),
    );
    let sh_bench_path = out_dir.join("sh-bench.sh");
    std::fs::write(&sh_bench_path, &sh_bench).expect("write sh-bench.sh");
    println!("cargo:rustc-env=K42_SH_BENCH={}", sh_bench_path.display());
    append_entry(&mut archive, "etc/k42", 0o040755, &[]);
    let commands = linux_dir.join("busybox-commands");
    println!("cargo:rerun-if-changed={}", commands.display());
    let bytes = std::fs::read(&commands).expect("read images/linux/busybox-commands");
    append_entry(&mut archive, "etc/k42/commands", 0o100644, &bytes);
    let disk_commands = linux_dir.join("disk-commands");
    println!("cargo:rerun-if-changed={}", disk_commands.display());
    let bytes = std::fs::read(&disk_commands).expect("read images/linux/disk-commands");
    append_entry(&mut archive, "etc/k42/disk-commands", 0o100644, &bytes);
    append_entry(
        &mut archive,
        "etc/k42/disk-bench",
        0o100644,
        b"# The disk bench (benches/benches/disk.rs): k42.arg=2 with a disk of 4 MiB or more.\nlinux-diskbench /dev/vda\n",
    );
    append_entry(&mut archive, "TRAILER!!!", 0, &[]);
    let initrd = out_dir.join("test-initramfs.cpio");
    std::fs::write(&initrd, &archive).expect("write the test initramfs");
    println!("cargo:rustc-env=K42_TEST_INITRD={}", initrd.display());

    let initrd = out_dir.join("default-initramfs.cpio");
    let default = default_initramfs(&bin_dir, &personality, &busybox, &linux_dir);
    std::fs::write(&initrd, default).expect("write the default initramfs");
    println!("cargo:rustc-env=K42_DEFAULT_INITRD={}", initrd.display());
    println!("cargo:rustc-env=K42_LINUX_PROGRAMS={}", out_dir.display());
    println!("cargo:rustc-env=K42_LINUX_SOURCES={}", linux_dir.display());
}

/// Lines of the shell benchmark's script.
const SH_BENCH_LINES: usize = 1000;

/// The shell benchmark: a 1000-line busybox `sh` script, mostly arithmetic, strings, `case`,
/// `test` and redirections (the shell's own work and its system calls), with a command
/// substitution every 100 lines and a pipeline every 250 (processes). Its last line prints a
/// summary, so a wrong run shows.
fn sh_bench_script() -> String {
    let mut lines = vec![
        "# Generated by images/build.rs (sh_bench_script): the shell benchmark.".to_string(),
        "n=0; c=0; t=0; s=".to_string(),
    ];
    let mut k = 0;
    while lines.len() < SH_BENCH_LINES - 1 {
        k += 1;
        let line = if k % 250 == 0 {
            format!("p=$(echo {k} | wc -c)")
        } else if k % 100 == 0 {
            format!("v=$(echo $n); [ \"$v\" = \"$n\" ] || echo mismatch at {k}")
        } else {
            match k % 5 {
                0 => format!("n=$((n + {k}))"),
                1 => "case $((n / 5)) in *7) c=$((c + 1));; *) ;; esac".to_string(),
                2 => "if [ $((n % 3)) -eq 0 ]; then t=$((t + 1)); fi".to_string(),
                3 => "s=\"${s}x\"; [ ${#s} -gt 40 ] && s=".to_string(),
                _ => "echo \"$n $c $t\" > /dev/null".to_string(),
            }
        };
        lines.push(line);
    }
    lines.push("echo \"sh-bench: n=$n c=$c t=$t\"".to_string());
    let mut script = lines.join("\n");
    script.push('\n');
    script
}

/// The default guest's initramfs: `/bin/shell` (its init), the console and file servers, the
/// Linux personality, busybox, the demonstration script `/etc/k42/demo.sh`, `/etc/motd` and an
/// empty `/tmp`.
fn default_initramfs(
    bin_dir: &std::path::Path,
    personality: &[u8],
    busybox: &[u8],
    linux_dir: &std::path::Path,
) -> Vec<u8> {
    let mut archive = Vec::new();
    for dir in ["bin", "etc", "etc/k42", "lib", "lib/k42", "tmp"] {
        append_entry(&mut archive, dir, 0o040755, &[]);
    }
    for name in DEFAULT_PROGRAMS {
        let bytes = std::fs::read(bin_dir.join(name))
            .unwrap_or_else(|e| panic!("read the built program {name}: {e}"));
        append_entry(&mut archive, &format!("bin/{name}"), 0o100755, &bytes);
    }
    append_entry(&mut archive, "lib/k42/linux", 0o100755, personality);
    append_entry(&mut archive, "bin/busybox", 0o100755, busybox);
    // `sh` by its usual path, for scripts' `#!/bin/sh` and for typing.
    append_entry(&mut archive, "bin/sh", 0o120777, b"busybox");
    let demo = linux_dir.join("demo.sh");
    println!("cargo:rerun-if-changed={}", demo.display());
    let bytes = std::fs::read(&demo).expect("read images/linux/demo.sh");
    append_entry(&mut archive, "etc/k42/demo.sh", 0o100755, &bytes);
    append_entry(
        &mut archive,
        "etc/motd",
        0o100644,
        b"Welcome to the k42 kernel: busybox is an unmodified Linux binary here.\n",
    );
    append_entry(&mut archive, "TRAILER!!!", 0, &[]);
    archive
}

/// The Linux test programs in C (`images/linux/*.c`), built static with musl-gcc (Debian's
/// musl-tools, installed by scripts/setup); returns (name, ELF bytes) pairs.
fn build_linux_programs(
    dir: &std::path::Path,
    out_dir: &std::path::Path,
) -> Vec<(String, Vec<u8>)> {
    let mut programs = Vec::new();
    // The header the programs share.
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("read-file.h").display()
    );
    for name in LINUX_C_PROGRAMS {
        let source = dir.join(format!("{name}.c"));
        println!("cargo:rerun-if-changed={}", source.display());
        let out = out_dir.join(name);
        let status = Command::new("musl-gcc")
            .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(&source)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run musl-gcc ({e}); run scripts/setup (it installs musl-tools)")
            });
        assert!(status.success(), "musl-gcc failed on {}", source.display());
        let bytes = std::fs::read(&out).expect("read the built Linux program");
        programs.push((name.to_string(), bytes));
    }
    programs
}

/// The Rust test programs (`images/linux/rust/*.rs`), built with the toolchain's `rustc` for
/// `x86_64-unknown-linux-musl` (static-PIE, the standard library included; the target is
/// added by scripts/setup); returns (name, ELF bytes) pairs.
fn build_rust_programs(dir: &std::path::Path, out_dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let mut programs = Vec::new();
    for name in LINUX_RUST_PROGRAMS {
        let source = dir.join(format!("{name}.rs"));
        println!("cargo:rerun-if-changed={}", source.display());
        let out = out_dir.join(name);
        let status = Command::new(&rustc)
            .args([
                "--edition",
                "2021",
                "-O",
                "--target",
                "x86_64-unknown-linux-musl",
                "-C",
                "target-feature=+crt-static",
                "-C",
                "strip=symbols",
                "-o",
            ])
            .arg(&out)
            .arg(&source)
            // A build script's environment would otherwise point the inner rustc at this
            // crate's own target settings.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .unwrap_or_else(|e| panic!("cannot run {rustc} ({e})"));
        assert!(
            status.success(),
            "rustc failed on {} (is the x86_64-unknown-linux-musl target added? scripts/setup adds it)",
            source.display()
        );
        let bytes = std::fs::read(&out).expect("read the built Rust program");
        programs.push((name.to_string(), bytes));
    }
    programs
}

/// Appends one cpio newc entry (header, name, data, each padded to 4 bytes).
fn append_entry(archive: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    static INODE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let ino = INODE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
    );
    archive.extend_from_slice(header.as_bytes());
    archive.extend_from_slice(name.as_bytes());
    archive.push(0);
    while !archive.len().is_multiple_of(4) {
        archive.push(0);
    }
    archive.extend_from_slice(data);
    while !archive.len().is_multiple_of(4) {
        archive.push(0);
    }
}

/// Builds the `no_std` crate (workspace) in `dir` for `x86_64-unknown-none`, release profile,
/// into `target_dir`; returns the directory holding the built binaries.
fn build_guest_crate(dir: &std::path::Path, target_dir: &std::path::Path, what: &str) -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-none",
            "--target-dir",
        ])
        .arg(target_dir);
    // The outer build's flags and wrappers are for host code, not for the kernel.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "RUSTDOCFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build {what}: {e}"));
    if !status.success() {
        panic!(
            "building {what} failed (see above). It needs the x86_64-unknown-none target: \
             run `rustup target add x86_64-unknown-none` (scripts/setup does this)."
        );
    }
    target_dir.join("x86_64-unknown-none").join("release")
}
