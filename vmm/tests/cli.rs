//! The `k42vm` command line (no KVM needed). Being an integration test of this package, it also
//! makes `cargo test` build the `k42vm` binary that `tests/` boots guests with.

use std::process::Command;

fn k42vm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_k42vm"))
        .args(args)
        .output()
        .expect("run k42vm")
}

#[test]
fn help_explains_every_flag() {
    let out = k42vm(&["run", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kernel",
        "--initrd",
        "--cpus",
        "--memory",
        "--cmdline",
        "--timeout",
        "--timeline",
        "--disk",
        "--net",
        "--rng",
        "--virtio-console",
        "Exit status",
        "default guest",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let out = k42vm(&[]);
    assert_eq!(out.status.code(), Some(2));
}
