//! The command line: `k42vm run ...`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use k42_devices::virtio::block::BlockConfig;
use k42_devices::virtio::net::NetConfig;

/// Default guest memory.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Smallest guest memory accepted.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Largest guest memory accepted (the guest's direct map covers 512 GiB).
pub const MAX_MEMORY: u64 = 512 << 30;
/// Most vCPUs (the guest kernel's limit).
pub const MAX_CPUS: u8 = 64;

/// k42vm: a KVM virtual machine monitor for the K42-style paravirtual kernel.
#[derive(Debug, Parser)]
#[command(name = "k42vm", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest and run it until it shuts down; k42vm exits with the guest's exit code.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
}

const RUN_HELP: &str = "The default guest: `k42vm run` with none of --kernel, --initrd and --cmdline \
boots the default guest: the embedded k42 kernel runs Debian's busybox sh, an unmodified static \
Linux binary, from the embedded initramfs. On a terminal the shell is interactive (`exit` ends \
it and the VM); otherwise it runs a short demonstration script and the VM exits with its status.\n\n\
Exit status: the guest's exit code (0-255; larger codes become 255), or \
2 for a usage or setup error (bad flag, no /dev/kvm, bad kernel image, too little memory, a disk \
image or TAP device that cannot be opened), \
124 when --timeout stopped the guest, 125 when the VM failed (triple fault, KVM internal error, \
missing in-kernel test reports). The guest kernel itself uses 101 for a panic, 102 for an \
exception and 103 for failed in-kernel tests.";

/// Options of `k42vm run`.
#[derive(Debug, Parser)]
pub struct RunArgs {
    /// PVH ELF kernel to boot [default: the k42 kernel embedded in this binary].
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,

    /// Initial ramdisk, passed to the guest as PVH module 0 (e.g. a cpio archive; a gzip one
    /// is unpacked first) [default: the embedded busybox initramfs, when neither --kernel nor
    /// --cmdline is given either].
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// Number of vCPUs (1-64); more than the host's cores works, they share them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_CPUS)))]
    pub cpus: u8,

    /// Guest RAM: a number with an optional K, M or G suffix (powers of 1024; no suffix means
    /// MiB), from 16M to 512G. Above 3G the RAM continues above the 3-4 GiB MMIO hole.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_memory)]
    pub memory: u64,

    /// Kernel command line (k42 kernel switches: init=PATH, k42.ktest, k42.exit=N, k42.quiet,
    /// ...). `--cmdline ""` boots the bare kernel, which prints its banner and exits.
    /// [default: run busybox sh from the embedded initramfs, when neither --kernel nor --initrd
    /// is given either]
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,

    /// Stop the guest after this long, e.g. 500ms, 10s, 2m (exit status 124).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Print the boot timeline (milliseconds since k42vm started) to stderr at exit.
    #[arg(long)]
    pub timeline: bool,

    /// Add a virtio-blk disk backed by a raw image file (repeatable); `readonly` makes the guest
    /// unable to write it, `id=NAME` (at most 20 characters) is the name the guest reads.
    #[arg(long = "disk", value_name = "PATH[,readonly][,id=NAME]")]
    pub disks: Vec<BlockConfig>,

    /// Add a virtio-net card on a host TAP device (repeatable). k42vm creates the TAP (this
    /// needs CAP_NET_ADMIN) or attaches to an existing one made for your user
    /// (`ip tuntap add NAME mode tap user $USER`).
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]")]
    pub nets: Vec<NetConfig>,

    /// Add a virtio-rng entropy device fed by the host's getrandom.
    #[arg(long)]
    pub rng: bool,

    /// Add a virtio-console as a second console: its output goes to stdout, or to FILE with
    /// `--virtio-console=FILE` (created or truncated). Terminal input stays with the serial
    /// console.
    #[arg(long = "virtio-console", value_name = "FILE", num_args = 0..=1, require_equals = true)]
    pub virtio_console: Option<Option<PathBuf>>,

    /// The virtio-console's input: a regular FILE, read as the guest takes it, or a FIFO
    /// (`mkfifo`), whose bytes reach the guest as they are written to it. The guest sees no end
    /// of input after them, as on a terminal. Needs `--virtio-console`.
    #[arg(
        long = "virtio-console-input",
        value_name = "FILE",
        requires = "virtio_console"
    )]
    pub virtio_console_input: Option<PathBuf>,
}

impl RunArgs {
    /// Whether this run boots the default guest: none of `--kernel`, `--initrd` and
    /// `--cmdline` given, so the embedded kernel runs busybox `sh` from the embedded
    /// initramfs (interactive on a terminal, the demonstration script otherwise).
    pub fn default_guest(&self) -> bool {
        self.kernel.is_none() && self.initrd.is_none() && self.cmdline.is_none()
    }
}

/// Parses a memory size such as `256M`, `4G`, `65536K` or `512` (MiB).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size; use a number with K, M or G, e.g. 256M"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "K" | "KB" | "KIB" => 10,
        "" | "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => {
            return Err(format!(
                "unknown size suffix '{suffix}' in '{text}'; use K, M or G"
            ))
        }
    };
    let bytes = number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))?;
    if bytes < MIN_MEMORY {
        return Err(format!("{text} is too little memory; the minimum is 16M"));
    }
    if bytes > MAX_MEMORY {
        return Err(format!("{text} is too much memory; the maximum is 512G"));
    }
    if bytes % 4096 != 0 {
        return Err(format!("{text} is not a multiple of 4 KiB"));
    }
    Ok(bytes)
}

/// Parses a duration such as `500ms`, `10s` or `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration ({e}); use e.g. 500ms, 10s, 2m"))?;
    if d.is_zero() {
        return Err("the timeout must be longer than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256M"), Ok(256 << 20));
        assert_eq!(parse_memory("4G"), Ok(4 << 30));
        assert_eq!(parse_memory("4gib"), Ok(4 << 30));
        assert_eq!(parse_memory("512"), Ok(512 << 20));
        assert_eq!(parse_memory("65536K"), Ok(64 << 20));
        assert!(parse_memory("1M").unwrap_err().contains("minimum"));
        assert!(parse_memory("1T").unwrap_err().contains("suffix"));
        assert!(parse_memory("lots").unwrap_err().contains("not a size"));
        assert!(parse_memory("99999999999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_memory("1024G").unwrap_err().contains("maximum"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["k42vm", "run"]).unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(
            (args.cpus, args.memory, args.kernel, args.timeout),
            (1, DEFAULT_MEMORY, None, None)
        );
    }

    #[test]
    fn device_flags() {
        let args = |extra: &[&str]| {
            let mut all = vec!["k42vm", "run"];
            all.extend_from_slice(extra);
            Cli::try_parse_from(all).map(|cli| {
                let Command::Run(args) = cli.command;
                args
            })
        };
        let a = args(&[]).unwrap();
        assert!(a.disks.is_empty() && a.nets.is_empty() && !a.rng && a.virtio_console.is_none());
        let a = args(&[
            "--disk",
            "a.img",
            "--disk",
            "b.img,readonly,id=data",
            "--net",
            "tap=k42t0,mac=52:54:00:12:34:56",
            "--rng",
            "--virtio-console",
        ])
        .unwrap();
        assert_eq!(a.disks.len(), 2);
        assert_eq!(a.disks[0].path, PathBuf::from("a.img"));
        assert!(a.disks[1].readonly && a.disks[1].id.as_deref() == Some("data"));
        assert_eq!(a.nets[0].tap, "k42t0");
        assert!(a.rng);
        assert_eq!(a.virtio_console, Some(None));
        let a = args(&["--virtio-console=out.txt", "--rng"]).unwrap();
        assert_eq!(a.virtio_console, Some(Some(PathBuf::from("out.txt"))));
        // The optional value needs '=': a following word is not taken as the file.
        assert!(args(&["--virtio-console", "out.txt"]).is_err());
        let a = args(&["--virtio-console", "--virtio-console-input", "in.txt"]).unwrap();
        assert_eq!(a.virtio_console_input, Some(PathBuf::from("in.txt")));
        // Input for a console that is not there is a mistake.
        assert!(args(&["--virtio-console-input", "in.txt"]).is_err());
        let err = args(&["--disk", "a.img,rw"]).unwrap_err().to_string();
        assert!(err.contains("unknown --disk option `rw`"), "{err}");
        assert!(args(&["--disk", ",readonly"]).is_err());
        let err = args(&["--net", "tap=t0,mac=zz"]).unwrap_err().to_string();
        assert!(err.contains("is not a MAC address"), "{err}");
        assert!(args(&["--net", "mac=52:54:00:12:34:56"]).is_err());
    }

    #[test]
    fn cpu_range_is_enforced() {
        assert!(Cli::try_parse_from(["k42vm", "run", "--cpus", "0"]).is_err());
        assert!(Cli::try_parse_from(["k42vm", "run", "--cpus", "65"]).is_err());
        assert!(Cli::try_parse_from(["k42vm", "run", "--cpus", "8"]).is_ok());
    }
}
