//! Builds the guest kernel for `x86_64-unknown-none` (always optimized) into
//! `target/guest-kernel/`, so `k42vm` can embed it and tests can boot it.

use std::env;
use std::path::PathBuf;
use std::process::Command;

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

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&kernel_dir)
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir);
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
        .expect("could not run cargo to build the guest kernel");
    if !status.success() {
        panic!(
            "building the guest kernel failed (see above). It needs the x86_64-unknown-none target: \
             run `rustup target add x86_64-unknown-none` (scripts/setup does this)."
        );
    }
    let elf = target_dir
        .join("x86_64-unknown-none")
        .join("release")
        .join("k42-kernel");
    let out =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("k42-kernel.elf");
    std::fs::copy(&elf, &out).expect("copy the kernel ELF into OUT_DIR");
    println!("cargo:rustc-env=K42_KERNEL_ELF={}", out.display());
}
