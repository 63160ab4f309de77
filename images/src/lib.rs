//! Guest images built with the project: the default kernel and the default initramfs, both
//! embedded in `k42vm`, and the test initramfs.
//!
//! `build.rs` builds `guest-kernel/` for `x86_64-unknown-none` (release profile, always
//! optimized) into `target/guest-kernel/` and copies the ELF into this crate's `OUT_DIR`; it
//! packs the initramfs images there too.

/// Path of the built kernel ELF (a PVH ELF that also boots on QEMU `-kernel`).
pub const KERNEL_ELF_PATH: &str = env!("K42_KERNEL_ELF");

/// Path of the test initramfs (cpio newc): the native programs and the Linux test programs
/// under `/bin` (with Debian's busybox), the Linux personality at `/lib/k42/linux`, the busybox
/// test data under `/data` and its command list at `/etc/k42/commands`, and `/etc/motd` (a
/// file that is not a program).
pub const TEST_INITRD_PATH: &str = env!("K42_TEST_INITRD");

/// Directory holding the static Linux test programs as built for the initramfs (`linux-hello`,
/// `linux-getpid`): the same binaries run on the host as the benchmarks' peers.
pub const LINUX_PROGRAMS_DIR: &str = env!("K42_LINUX_PROGRAMS");

/// Directory of the Linux test sources (`images/linux`): the busybox command list
/// (`busybox-commands`, packed as `etc/k42/commands`) and its `data/` (packed as `/data`).
pub const LINUX_SOURCES_DIR: &str = env!("K42_LINUX_SOURCES");

/// Path of the shell benchmark's script (1000 lines of busybox `sh`; packed in the test
/// initramfs as `/scripts/sh-bench.sh`).
pub const SH_BENCH_SCRIPT_PATH: &str = env!("K42_SH_BENCH");

/// The default guest kernel, embedded.
pub static DEFAULT_KERNEL: &[u8] = include_bytes!(env!("K42_KERNEL_ELF"));

/// Path of the default initramfs (cpio newc): `/bin/shell` (the init that runs busybox `sh`),
/// the console and file servers, the Linux personality, Debian's busybox (also as `/bin/sh`),
/// the demonstration script `/etc/k42/demo.sh`, `/etc/motd` and an empty `/tmp`.
pub const DEFAULT_INITRD_PATH: &str = env!("K42_DEFAULT_INITRD");

/// The default initramfs, embedded.
pub static DEFAULT_INITRD: &[u8] = include_bytes!(env!("K42_DEFAULT_INITRD"));

/// The kernel command line of the default guest: `/bin/shell` runs the demonstration script
/// (`interactive` false) or an interactive shell on the console.
pub fn default_cmdline(interactive: bool) -> String {
    format!("init=/bin/shell k42.arg={}", u8::from(interactive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_kernel_is_a_pvh_elf() {
        assert_eq!(&DEFAULT_KERNEL[..4], b"\x7fELF");
        assert_eq!(DEFAULT_KERNEL[4], 2, "64-bit ELF");
        assert_eq!(std::fs::read(KERNEL_ELF_PATH).unwrap(), DEFAULT_KERNEL);
        // The Xen PVH entry note's owner string is present.
        assert!(DEFAULT_KERNEL.windows(4).any(|w| w == b"Xen\0"));
    }

    #[test]
    fn default_initrd_holds_the_shell_and_its_servers() {
        assert_eq!(std::fs::read(DEFAULT_INITRD_PATH).unwrap(), DEFAULT_INITRD);
        for name in [
            "bin/shell",
            "bin/console",
            "bin/fsd",
            "bin/busybox",
            "lib/k42/linux",
            "etc/k42/demo.sh",
        ] {
            let mut header_name = name.as_bytes().to_vec();
            header_name.push(0);
            assert!(
                DEFAULT_INITRD
                    .windows(header_name.len())
                    .any(|w| w == header_name),
                "{name} missing from the default initramfs"
            );
        }
        assert_eq!(default_cmdline(false), "init=/bin/shell k42.arg=0");
    }
}
