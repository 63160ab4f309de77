//! Bad input: each gets one clear sentence and its documented exit status.

use std::path::Path;
use std::time::Duration;

use k42_tests::*;

#[test]
fn missing_kernel_file() {
    assert_usage_error(
        &k42vm_run(&["--kernel", "/nonexistent/kernel"]),
        "cannot read kernel image /nonexistent/kernel",
    );
}

#[test]
fn kernel_that_is_not_elf() {
    let dir = std::env::temp_dir().join(format!("k42-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk");
    std::fs::write(&junk, b"this is not a kernel").unwrap();
    assert_usage_error(
        &k42vm_run(&["--kernel", junk.to_str().unwrap()]),
        "is not a usable kernel: not an ELF file",
    );
    // A truncated copy of the real kernel.
    let kernel = std::fs::read(kernel_elf()).unwrap();
    let cut = dir.join("cut");
    std::fs::write(&cut, &kernel[..kernel.len() / 3]).unwrap();
    assert_usage_error(
        &k42vm_run(&["--kernel", cut.to_str().unwrap()]),
        "is not a usable kernel",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn elf_without_pvh_entry() {
    require_kvm();
    // A host program is an ELF, but not a PVH kernel.
    let run = k42vm_run(&["--kernel", "/bin/sh"]);
    assert_usage_error(&run, "is not a usable kernel");
}

#[test]
fn memory_too_small_for_the_initrd() {
    require_kvm();
    let dir = std::env::temp_dir().join(format!("k42-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.img");
    std::fs::write(&big, vec![0u8; 20 << 20]).unwrap();
    let run = k42vm_run(&["--memory", "16M", "--initrd", big.to_str().unwrap()]);
    assert_usage_error(&run, "does not fit in guest memory");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_flags() {
    assert_usage_error(&k42vm_run(&["--memory", "1M"]), "minimum is 16M");
    assert_usage_error(&k42vm_run(&["--memory", "lots"]), "is not a size");
    assert_usage_error(&k42vm_run(&["--cpus", "0"]), "--cpus");
    assert_usage_error(&k42vm_run(&["--cpus", "65"]), "--cpus");
    assert_usage_error(&k42vm_run(&["--timeout", "soon"]), "is not a duration");
    assert_usage_error(&k42vm_run(&["--no-such-flag"]), "unexpected argument");
    assert_usage_error(
        &k42vm_run(&["--cmdline", &"x".repeat(5000)]),
        "command line is 5000 bytes",
    );
}

#[test]
fn missing_kvm_is_reported() {
    // Hide /dev/kvm in a private mount namespace (needs root, which CI has).
    if !Path::new("/usr/bin/unshare").exists() {
        panic!("unshare(1) is needed to test a missing /dev/kvm (util-linux)");
    }
    let binary = k42vm_binary();
    // No /dev/kvm at all: an empty /dev.
    let script = format!("mount -t tmpfs none /dev && exec {} run", binary.display());
    let run = run_with_limit(
        Path::new("/usr/bin/unshare"),
        &["-m", "sh", "-c", &script],
        Duration::from_secs(30),
    );
    assert_usage_error(&run, "cannot open /dev/kvm: No such file or directory");
    assert!(run.stderr.contains("k42vm needs KVM"), "{}", run.all());
    // A /dev/kvm that is not KVM.
    let script = format!(
        "mount --bind /dev/null /dev/kvm && exec {} run",
        binary.display()
    );
    let run = run_with_limit(
        Path::new("/usr/bin/unshare"),
        &["-m", "sh", "-c", &script],
        Duration::from_secs(30),
    );
    assert_usage_error(&run, "is not a usable KVM device");
}
