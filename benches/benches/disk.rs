//! Disk bench (issue 6): the static musl program `linux-diskbench` reads `/dev/vda` in the
//! guest (through the Linux personality and the ring-3 virtio-blk driver `blkd`, up to 16
//! blocks per PPC call and per device request) and, in the same run, the image file behind it on the host: 1 MiB
//! sequential in 64 KiB calls, 4 KiB reads at pseudo-random offsets, and 4 KiB reads of a block
//! just read. Before the first two passes the guest's driver drops its block cache, so they
//! reach the device (whose image the host's page cache holds, as the host peer's reads do).
//! Prints both figures, their ratio, and requests per second through the driver; checks that
//! both sides read the same bytes (the program prints a checksum).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use k42_benches::{k42vm_binary, parse_metric, ratio, require_kvm, run_timed, tail};

/// The image's size: linux-diskbench reads within its first 4 MiB.
const IMAGE_BYTES: usize = 4 << 20;

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("disk bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A scratch image of pseudo-random bytes, removed when dropped.
struct Image(PathBuf);

impl Image {
    fn new() -> Result<Image, String> {
        let path = std::env::temp_dir().join(format!("k42-diskbench-{}.img", std::process::id()));
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let bytes: Vec<u8> = (0..IMAGE_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(Image(path))
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// The checksum line's value.
fn checksum(output: &str) -> Option<&str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("linux-diskbench: checksum "))
}

fn guest_run(k42vm: &Path, image: &Path) -> Result<String, String> {
    let cmdline = "k42.quiet init=/bin/runlist k42.arg=2";
    println!(
        "disk: {} run --cpus 2 --initrd <test initramfs> --cmdline \"{cmdline}\" --disk {}",
        k42vm.display(),
        image.display()
    );
    let mut cmd = Command::new(k42vm);
    cmd.args([
        "run",
        "--cpus",
        "2",
        "--initrd",
        k42_images::TEST_INITRD_PATH,
    ]);
    cmd.args(["--cmdline", cmdline, "--timeout", "200s", "--disk"]);
    cmd.arg(image);
    let run = run_timed(&mut cmd, Duration::from_secs(230))?;
    if !run.status.success() || !run.stdout.contains("=== exit 0") {
        return Err(format!(
            "the guest run failed ({}):\n{}",
            run.status,
            tail(&run.stdout, 10)
        ));
    }
    Ok(run.stdout)
}

fn host_run(image: &Path) -> Result<String, String> {
    let program = Path::new(k42_images::LINUX_PROGRAMS_DIR).join("linux-diskbench");
    // One run to warm the host's page cache, then the measured one.
    let mut out = String::new();
    for _ in 0..2 {
        let run = Command::new(&program)
            .arg(image)
            .output()
            .map_err(|e| format!("run {}: {e}", program.display()))?;
        if !run.status.success() {
            return Err(format!("{} failed: {}", program.display(), run.status));
        }
        out = String::from_utf8_lossy(&run.stdout).into_owned();
    }
    Ok(out)
}

fn bench() -> Result<(), String> {
    require_kvm()?;
    let k42vm = k42vm_binary()?;
    let image = Image::new()?;
    let guest = guest_run(&k42vm, &image.0)?;
    let host = host_run(&image.0)?;
    let (ours, theirs) = (checksum(&guest), checksum(&host));
    if ours.is_none() || ours != theirs {
        return Err(format!(
            "the guest read other bytes than the host (checksums {ours:?} and {theirs:?})"
        ));
    }
    let metric = |output: &str, name: &str, side: &str| {
        parse_metric(output, name)
            .ok_or_else(|| format!("no `metric {name}` from the {side}:\n{}", tail(output, 10)))
    };
    println!();
    println!(
        "{:<52} {:>12} {:>12} {:>8}",
        "(us)", "guest", "host peer", "ratio"
    );
    let mut figures = Vec::new();
    for (name, what) in [
        (
            "disk_seq_read_us",
            "1 MiB sequential read, 64 KiB calls, per MiB",
        ),
        (
            "disk_rand_read_us",
            "4 KiB read at a random offset (device)",
        ),
        ("disk_cached_read_us", "4 KiB read of a cached block"),
    ] {
        let (g, h) = (metric(&guest, name, "guest")?, metric(&host, name, "host")?);
        let r = ratio(g, h).unwrap_or(f64::NAN);
        println!("{what:<52} {g:>12.1} {h:>12.1} {r:>8.0}");
        figures.push(g);
    }
    println!();
    println!(
        "guest requests per second through blkd: {:.0} from the device, {:.0} from its cache; \
         {:.2} MiB/s sequential",
        1e6 / figures[1],
        1e6 / figures[2],
        1e6 / figures[0]
    );
    println!(
        "(up to 16 blocks per PPC call through the transfer area and per device request; on an \
         emulating KVM such as kvm_pvm the ring-0 paths dominate every figure)"
    );
    Ok(())
}
