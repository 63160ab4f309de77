//! Boots the k42 kernel under k42vm (KVM) and checks what it prints and returns.

use k42_tests::*;

fn boot_ktests(cpus: u32, memory: &str) {
    require_kvm();
    let cpus_arg = cpus.to_string();
    let run = k42vm_run(&[
        "--cpus",
        &cpus_arg,
        "--memory",
        memory,
        "--cmdline",
        "k42.ktest",
        "--timeout",
        "45s",
    ]);
    let context = run.all();
    assert_eq!(run.status, Some(0), "ktest boot failed\n{context}");
    assert_eq!(
        banner_cpus(&run.stdout),
        Some(cpus),
        "not every CPU reported in\n{context}"
    );
    assert_all_ktests_passed(&run.stdout, &context);
    assert!(
        run.stderr.contains("ktests: "),
        "k42vm printed no ktest summary\n{context}"
    );
}

#[test]
fn smp_1_cpu() {
    boot_ktests(1, "256M");
}

#[test]
fn smp_2_cpus() {
    boot_ktests(2, "256M");
}

#[test]
fn smp_4_cpus() {
    boot_ktests(4, "256M");
}

#[test]
fn smp_8_cpus_on_fewer_host_cores() {
    boot_ktests(8, "256M");
}

#[test]
fn memory_64m() {
    boot_ktests(2, "64M");
}

#[test]
fn memory_4g_crosses_the_mmio_hole() {
    require_kvm();
    let run = k42vm_run(&[
        "--memory",
        "4G",
        "--cpus",
        "2",
        "--cmdline",
        "k42.ktest",
        "--timeout",
        "45s",
    ]);
    let context = run.all();
    assert_eq!(run.status, Some(0), "{context}");
    assert!(
        run.stdout.contains("4095 MiB RAM"),
        "the guest did not see RAM above the hole\n{context}"
    );
    assert_all_ktests_passed(&run.stdout, &context);
}

/// `--cmdline ""` boots the bare embedded kernel: banner, boot timeline, exit 0, no init.
#[test]
fn bare_kernel_prints_banner_and_exits_zero() {
    require_kvm();
    let run = k42vm_run(&["--cmdline", "", "--timeline"]);
    let context = run.all();
    assert_eq!(run.status, Some(0), "{context}");
    assert!(
        run.stdout.contains("k42 kernel:") && run.stdout.contains("1 CPU,"),
        "{context}"
    );
    assert!(
        run.stdout.contains("256 MiB RAM") || run.stdout.contains("255 MiB RAM"),
        "{context}"
    );
    assert!(!run.stdout.contains("initramfs:"), "{context}");
    assert_timeline_has(
        &run,
        &[
            "first guest instruction",
            "memory ready",
            "all CPUs up",
            "kernel init done",
            "guest shutdown",
        ],
        &context,
    );
}

/// `len` pseudo-random bytes from `seed`; every second byte is `b'k'` when `compressible`.
fn pseudo_random_bytes(seed: u64, len: usize, compressible: bool) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if compressible && i % 2 == 0 {
                b'k'
            } else {
                state as u8
            }
        })
        .collect()
}

/// Boots with `initrd` and asserts the guest reports the length and checksum of `bytes`.
fn assert_guest_sees_initrd(initrd: &std::path::Path, bytes: &[u8]) {
    let run = k42vm_run(&[
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        "k42.initrd_checksum k42.quiet",
        "--timeout",
        "30s",
    ]);
    let context = run.all();
    assert_eq!(run.status, Some(0), "{context}");
    let expected = format!(
        "initrd: {} bytes, checksum {:#018x}",
        bytes.len(),
        k42_paravirt::checksum64(bytes)
    );
    assert!(
        run.stdout.contains(&expected),
        "expected '{expected}'\n{context}"
    );
}

#[test]
fn initrd_arrives_intact() {
    require_kvm();
    let dir = std::env::temp_dir().join(format!("k42-initrd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("initrd.bin");
    // 64 KiB + 3 bytes of pseudo-random data (odd length exercises the checksum's tail).
    let bytes = pseudo_random_bytes(0x1234_5678_9abc_def0, 65_539, false);
    std::fs::write(&path, &bytes).unwrap();
    assert_guest_sees_initrd(&path, &bytes);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gzip_initrd_is_unpacked_on_the_host() {
    require_kvm();
    let dir = std::env::temp_dir().join(format!("k42-initrd-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = pseudo_random_bytes(0x0bad_cafe_dead_beef, 100_001, true);
    let packed = dir.join("initrd.gz");
    write_gzip(&packed, &bytes);
    // The guest sees the unpacked bytes.
    assert_guest_sees_initrd(&packed, &bytes);
    // A damaged one is refused before the guest starts.
    let mut damaged = std::fs::read(&packed).unwrap();
    damaged.truncate(damaged.len() / 2);
    let broken = dir.join("broken.gz");
    std::fs::write(&broken, &damaged).unwrap();
    let run = k42vm_run(&["--initrd", broken.to_str().unwrap(), "--timeout", "30s"]);
    assert_usage_error(&run, "is gzip-compressed but cannot be unpacked");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn guest_exit_code_is_propagated() {
    require_kvm();
    for code in [0, 7, 42] {
        let cmdline = format!("k42.quiet k42.exit={code}");
        let run = k42vm_run(&["--cmdline", &cmdline, "--timeout", "30s"]);
        assert_eq!(run.status, Some(code), "{}", run.all());
    }
}

#[test]
fn guest_panic_gives_failure_and_message() {
    require_kvm();
    let run = k42vm_run(&["--cmdline", "k42.quiet k42.test_panic", "--timeout", "30s"]);
    let context = run.all();
    assert_eq!(
        run.status,
        Some(k42_paravirt::exit_code::PANIC as i32),
        "{context}"
    );
    assert!(
        run.stdout.contains("KERNEL PANIC") && run.stdout.contains("k42.test_panic"),
        "{context}"
    );
    assert!(
        run.stdout.contains("src/main.rs:"),
        "panic location missing\n{context}"
    );
}

#[test]
fn guest_exception_reports_vector_and_registers() {
    require_kvm();
    let run = k42vm_run(&["--cmdline", "k42.quiet k42.test_fault", "--timeout", "30s"]);
    let context = run.all();
    assert_eq!(
        run.status,
        Some(k42_paravirt::exit_code::EXCEPTION as i32),
        "{context}"
    );
    assert!(run.stdout.contains("vector 14 (page fault)"), "{context}");
    assert!(run.stdout.contains("cr2 0x00007ffffffff000"), "{context}");
    assert!(run.stdout.contains("rip 0xffffffff8"), "{context}");
}

#[test]
fn hung_guest_is_stopped_by_timeout() {
    require_kvm();
    let start = std::time::Instant::now();
    let run = k42vm_run(&["--cmdline", "k42.quiet k42.test_hang", "--timeout", "500ms"]);
    let context = run.all();
    assert_eq!(run.status, Some(124), "{context}");
    assert!(
        run.stderr
            .contains("did not shut down within --timeout 500ms"),
        "{context}"
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "timeout not honoured\n{context}"
    );
}

#[test]
fn explicit_kernel_file_boots() {
    require_kvm();
    let run = k42vm_run(&[
        "--kernel",
        kernel_elf(),
        "--cmdline",
        "k42.exit=3 k42.quiet",
        "--timeout",
        "30s",
    ]);
    assert_eq!(run.status, Some(3), "{}", run.all());
}

#[test]
fn triple_fault_reports_registers() {
    require_kvm();
    let run = k42vm_run(&[
        "--cmdline",
        "k42.quiet k42.test_triple_fault",
        "--timeout",
        "30s",
    ]);
    let context = run.all();
    assert_eq!(run.status, Some(125), "{context}");
    assert!(run.stderr.contains("triple-faulted on vCPU 0"), "{context}");
    assert!(
        run.stderr.contains("rip=0xffffffff8") && run.stderr.contains("cr3="),
        "{context}"
    );
}

#[test]
fn clustered_objects_are_listed_and_hot_swapped_under_load() {
    require_kvm();
    let run = k42vm_run(&[
        "--cpus",
        "4",
        "--cmdline",
        "k42.ktest k42.cobj_list k42.quiet",
        "--timeout",
        "45s",
    ]);
    let context = run.all();
    assert_eq!(run.status, Some(0), "{context}");
    assert_all_ktests_passed(&run.stdout, &context);
    // The page-frame manager has one rep per CPU, each created by that CPU's miss.
    let frames = run
        .stdout
        .lines()
        .find(|l| l.contains(" frame-manager "))
        .unwrap_or_else(|| panic!("{context}"));
    assert!(
        frames.contains("root=per-cpu-reps")
            && frames.contains("cpus=[RRRR]")
            && frames.contains("misses=4"),
        "{frames}"
    );
    // The swapped object went through all its swaps, and calls were forwarded by mediators.
    let swapped = run
        .stdout
        .lines()
        .find(|l| l.contains(" ktest.swapped "))
        .unwrap_or_else(|| panic!("{context}"));
    assert!(swapped.contains("swaps=8"), "{swapped}");
    let adaptive = run
        .stdout
        .lines()
        .find(|l| l.contains(" counter.adaptive "))
        .unwrap_or_else(|| panic!("{context}"));
    assert!(
        adaptive.contains("root=per-cpu-reps") && adaptive.contains("swaps=1"),
        "contended counter not swapped: {adaptive}"
    );
}
