//! Ring-3 device drivers: `/bin/drvinit` starts a `blkd` (the virtio-blk driver server) per
//! disk and runs `/bin/devcheck` (bad arguments to the device calls) and `/bin/blktest`
//! against them, then `rngd` (the virtio-rng driver) and `/bin/rngtest`; Linux programs use the
//! disks as `/dev/vd*`, the entropy device through `/dev/urandom` and the virtio-console (`hvcd`)
//! as `/dev/hvc0`; `netd` moves frames to and from a TAP device. The host then checks what
//! reached the image and console files and the checksums the guest printed, with its own FNV-1a
//! and pattern (not the guest's code).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k42_tests::*;

const BLOCK: usize = 4096;

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("k42-drv-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// An image of `size` pseudo-random bytes (xorshift from `seed`).
    fn image(&self, name: &str, size: usize, seed: u64) -> (PathBuf, Vec<u8>) {
        let mut x = seed;
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let path = self.0.join(name);
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Byte `i` of block `block` as blktest writes it.
fn pattern(block: usize, i: usize) -> u8 {
    ((block * 131) ^ (i * 7) ^ (i >> 8)) as u8
}

/// The hexadecimal checksum on the output line starting with `prefix`.
fn printed_checksum(output: &str, prefix: &str, context: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}...`\n{context}"));
    let hex = line.rsplit("0x").next().unwrap();
    u64::from_str_radix(hex.trim(), 16).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Boots the test initramfs on 2 vCPUs with `cmdline`, the writable image `disk`, the
/// read-only image `ro_disk` and `more` arguments.
fn run_with_two_disks(cmdline: &str, disk: &Path, ro_disk: &Path, more: &[&str]) -> Run {
    let ro_arg = format!("{},readonly", ro_disk.display());
    let mut args = vec![
        "--cpus",
        "2",
        "--initrd",
        k42_images::TEST_INITRD_PATH,
        "--cmdline",
        cmdline,
        "--disk",
        disk.to_str().unwrap(),
        "--disk",
        &ro_arg,
    ];
    args.extend_from_slice(more);
    k42vm_run(&args)
}

#[test]
fn blkd_serves_disks_writes_reach_the_image_and_readonly_is_enforced() {
    require_kvm();
    let dir = Scratch::new("blk");
    let (disk, before) = dir.image("disk.img", 256 * BLOCK, 0x9e37_79b9_7f4a_7c15);
    let (ro_disk, ro_before) = dir.image("ro.img", 64 * BLOCK, 0x1234_5678_9abc_def1);
    let run = run_with_two_disks("init=/bin/drvinit", &disk, &ro_disk, &["--timeout", "50s"]);
    let context = run.all();
    let out = &run.stdout;
    assert_eq!(
        run.status,
        Some(0),
        "drvinit did not exit with 0\n{context}"
    );
    assert!(out.contains("devcheck: all checks passed"), "{context}");
    assert!(
        out.contains("blktest: device calls without the device right: [Some(NotPermitted), \
                      Some(NotPermitted), Some(NotPermitted), Some(NotPermitted), Some(NotPermitted)]"),
        "a process without SpawnFlags::DEVICES used a device call\n{context}"
    );
    assert!(
        out.contains("blkd 0: virtio-blk at 0xd0000000 line 5: 256 blocks of 4 KiB; serving blk0")
            && out.contains("blkd 1: virtio-blk at 0xd0001000 line 6: 64 blocks of 4 KiB, read-only; serving blk1"),
        "{context}"
    );

    // The guest read the host's data.
    let host_sum = fnv1a(&before[..16 * BLOCK]);
    let guest_sum = printed_checksum(out, "blktest: blk0 blocks 0..16 checksum", &context);
    assert_eq!(
        guest_sum, host_sum,
        "checksum of blk0 blocks 0..16\n{context}"
    );
    let ro_sum = printed_checksum(out, "blktest: blk1 blocks 0..4 checksum", &context);
    assert_eq!(
        ro_sum,
        fnv1a(&ro_before[..4 * BLOCK]),
        "checksum of blk1\n{context}"
    );

    // The guest's writes are on the image file, and nothing else changed.
    assert!(
        out.contains("wrong blocks read back: 0 from the cache, 0 from the device"),
        "{context}"
    );
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(after.len(), before.len());
    for block in 0..256 {
        let range = block * BLOCK..(block + 1) * BLOCK;
        if (32..48).contains(&block) {
            let want: Vec<u8> = (0..BLOCK).map(|i| pattern(block, i)).collect();
            assert!(
                after[range] == want[..],
                "block {block} of the image lacks the pattern"
            );
        } else {
            assert!(
                after[range.clone()] == before[range],
                "block {block} changed"
            );
        }
    }
    assert!(
        out.contains("blktest: blk0 read past the end refused: OutOfRange"),
        "{context}"
    );
    assert!(
        out.contains("blktest: blk0 transfer area: refusals right, blocks 32..48 read 4 per call with 0 wrong in 4 device requests, 4 blocks from the second-last: Ok(2)"),
        "multi-block requests through a transfer area failed\n{context}"
    );
    assert!(
        out.contains("blktest: blk0 detach, read, detach: [Ok(1), Err(NoTransferArea), Ok(0)]"),
        "a detached transfer area stayed with the driver\n{context}"
    );
    // The disk object's rep on the second CPU found the blocks in the first CPU's part.
    let other_cpu = out
        .lines()
        .find(|l| l.starts_with("blktest: blk0 blocks 32..48 read on cpu "))
        .unwrap_or_else(|| panic!("no read from another CPU\n{context}"));
    assert!(
        other_cpu.ends_with(
            ": 0 wrong, 0 device requests, 16 reads from another CPU's cache part, 2 CPUs with a part"
        ),
        "the block cache's parts on two CPUs did not share blocks\n{context}"
    );

    // The read-only disk refused the write, and its file is untouched.
    assert!(
        out.contains("blktest: write to read-only blk1 refused: ReadOnly"),
        "{context}"
    );
    assert_eq!(
        std::fs::read(&ro_disk).unwrap(),
        ro_before,
        "the read-only image changed"
    );
    assert!(out.contains("blktest: all checks passed"), "{context}");
}

/// The hex bytes after `prefix` on its output line.
fn printed_bytes(output: &str, prefix: &str, context: &str) -> Vec<u8> {
    let line = output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}...`\n{context}"));
    let hex = line[prefix.len()..].trim();
    assert_eq!(hex.len(), 64, "{line}");
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn random_bytes_from_virtio_rng_are_not_zero_and_differ_between_boots() {
    require_kvm();
    let dir = Scratch::new("rng");
    let (disk, _) = dir.image("disk.img", 64 * BLOCK, 3);
    let (ro_disk, _) = dir.image("ro.img", 16 * BLOCK, 5);
    let ro_arg = format!("{},readonly", ro_disk.display());
    let mut boots = Vec::new();
    for _ in 0..2 {
        let run = k42vm_run(&[
            "--initrd",
            k42_images::TEST_INITRD_PATH,
            "--cmdline",
            "init=/bin/drvinit",
            "--disk",
            disk.to_str().unwrap(),
            "--disk",
            &ro_arg,
            "--rng",
            "--timeout",
            "50s",
        ]);
        let context = run.all();
        assert_eq!(run.status, Some(0), "{context}");
        assert!(
            run.stdout.contains(
                "linux: getrandom and /dev/urandom are served by the virtio-rng driver (random)"
            ),
            "the Linux personality's getrandom did not use rngd\n{context}"
        );
        let native = printed_bytes(&run.stdout, "rngtest: 32 random bytes ", &context);
        let linux = printed_bytes(&run.stdout, "linux-random: getrandom ", &context);
        assert!(
            native.iter().any(|&b| b != 0) && linux.iter().any(|&b| b != 0),
            "{context}"
        );
        assert_ne!(native, linux, "two requests gave the same bytes\n{context}");
        boots.push((native, linux));
    }
    assert_ne!(
        boots[0].0, boots[1].0,
        "rngd gave the same bytes in two boots"
    );
    assert_ne!(
        boots[0].1, boots[1].1,
        "getrandom gave the same bytes in two boots"
    );
}

#[test]
fn blkd_without_its_disk_says_so() {
    require_kvm();
    // One disk only: blkd 1 finds no second virtio-blk device and exits with a clear message,
    // and drvinit fails saying what the checks need.
    let dir = Scratch::new("one");
    let (disk, _) = dir.image("disk.img", 64 * BLOCK, 7);
    let run = k42vm_run(&[
        "--initrd",
        k42_images::TEST_INITRD_PATH,
        "--cmdline",
        "init=/bin/drvinit",
        "--disk",
        disk.to_str().unwrap(),
        "--timeout",
        "50s",
    ]);
    let context = run.all();
    assert!(
        run.stdout
            .contains("blkd 1: there is no virtio-blk device number 1 (1 devices in all)"),
        "{context}"
    );
    assert!(
        run.stdout
            .contains("drvinit: the block checks need two virtio-blk disks"),
        "{context}"
    );
    assert_eq!(run.status, Some(1), "{context}");
}

/// Byte `i` of the pattern `linux-disk` writes (as its `pattern()`).
fn linux_disk_pattern(i: usize) -> u8 {
    (i * 31 + (i >> 7) + 5) as u8
}

/// The `md5sum` of `bytes` by the host's coreutils.
fn host_md5(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run md5sum (coreutils)");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

/// Writes `input` into the console FIFO `fifo` once k42vm has it open, then, once the guest has
/// written "waiting for input" to its console (`out`, a second after it started a reader), a last
/// line; gives up after 90 s (the
/// test then fails on what the guest printed).
fn feed_console(
    fifo: PathBuf,
    out: PathBuf,
    input: Vec<u8>,
) -> std::thread::JoinHandle<Result<(), String>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let wait = |what: &str| {
            if std::time::Instant::now() > deadline {
                return Err(format!("gave up waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(20));
            Ok(())
        };
        // Without blocking, opening for writing fails until a reader (k42vm) has the FIFO.
        let mut writer = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
            {
                Ok(f) => break f,
                Err(_) => wait("k42vm to open the FIFO")?,
            }
        };
        let mut done = 0;
        while done < input.len() {
            match writer.write(&input[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait("room in the FIFO")?,
                Err(e) => return Err(format!("writing the FIFO: {e}")),
            }
        }
        while !std::fs::read_to_string(&out).is_ok_and(|s| s.contains("waiting for input\n")) {
            wait("the guest to wait for input")?;
        }
        // The reader started a second before the guest said so: it found nothing and sleeps,
        // and this line must wake it.
        writer
            .write_all(b"a line written late\n")
            .map_err(|e| format!("writing the FIFO: {e}"))
    })
}

/// The virtio-console input of the device checks: numbered lines of many lengths, one longer
/// than a receive buffer, 40000 bytes in all.
fn console_input() -> Vec<u8> {
    let mut text = Vec::new();
    for i in 0.. {
        let line = if i == 3 {
            format!("{i:05} {}\n", "x".repeat(3000))
        } else {
            format!("{i:05} {}\n", "k42 ".repeat(i % 200))
        };
        text.extend_from_slice(line.as_bytes());
        if text.len() >= 40_000 {
            break;
        }
    }
    text.truncate(40_000);
    text
}

#[test]
fn linux_programs_read_and_write_disks_as_dev_vda() {
    require_kvm();
    let dir = Scratch::new("linux");
    let (disk, before) = dir.image("vda.img", 256 * BLOCK, 0x2545_f491_4f6c_dd1d);
    let (ro_disk, ro_before) = dir.image("vdb.img", 16 * BLOCK, 0x0bad_cafe_f00d_1234);
    let console_out = dir.0.join("hvc0-out.txt");
    let console_in = dir.0.join("hvc0-in.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&console_in)
        .status();
    assert!(made.as_ref().is_ok_and(|s| s.success()), "mkfifo: {made:?}");
    let input = console_input();
    let feeder = feed_console(console_in.clone(), console_out.clone(), input.clone());
    let out_flag = format!("--virtio-console={}", console_out.display());
    let in_flag = format!("--virtio-console-input={}", console_in.display());
    let run = run_with_two_disks(
        "init=/bin/runlist k42.arg=1",
        &disk,
        &ro_disk,
        &["--rng", &out_flag, &in_flag, "--timeout", "100s"],
    );
    let fed = feeder.join().unwrap();
    let context = run.all();
    let out = &run.stdout;
    assert_eq!(run.status, Some(0), "{context}");
    // `images/linux/disk-commands`: linux-disk, then busybox.
    let statuses: Vec<&str> = out.lines().filter(|l| l.starts_with("=== exit")).collect();
    assert_eq!(
        statuses,
        [
            "=== exit 0",
            "=== exit 0",
            "=== exit 0",
            "=== exit 0",
            "=== exit 0",
            "=== exit 0",
            "=== exit 1",
            "=== exit 0",
            "=== exit 0",
            "=== exit 0",
            "=== exit 0",
            "=== exit 0"
        ],
        "{context}"
    );
    assert!(out.contains("linux-disk: ok ("), "{context}");
    assert!(
        !out.contains("no transfer area with a disk driver"),
        "the disk calls did not get their multi-block transfer area\n{context}"
    );

    // What the guest read is what the host wrote.
    let vda_sum = printed_checksum(out, "linux-disk: vda first 64 KiB fnv1a", &context);
    assert_eq!(vda_sum, fnv1a(&before[..65536]), "{context}");
    let vdb_sum = printed_checksum(out, "linux-disk: vdb first 16 KiB fnv1a", &context);
    assert_eq!(vdb_sum, fnv1a(&ro_before[..16384]), "{context}");
    let md5 = format!("{}  -", host_md5(&before[..16 * BLOCK]));
    assert!(
        out.lines().any(|l| l == md5),
        "busybox md5sum of dd from /dev/vda is not the host's {md5}\n{context}"
    );
    assert!(out.contains("\nk42 was here\n13+0 records in"), "{context}");
    assert!(
        out.contains("brw-rw---- 254,   0\nbrw-rw---- 254,  16\n"),
        "ls -l /dev/vd*\n{context}"
    );
    assert!(
        out.contains("dd: can't open '/dev/vdb': Read-only file system"),
        "{context}"
    );

    // /dev/urandom's bytes come from the virtio-rng driver (which the init started because
    // the VM has the device): 4096 of them, as 256 lines of od, are 256 different lines.
    assert!(
        out.contains(
            "linux: getrandom and /dev/urandom are served by the virtio-rng driver (random)"
        ),
        "{context}"
    );
    let urandom = out.split("/dev/urandom |").nth(1).unwrap_or_default();
    assert!(
        urandom.contains("\n256\n=== exit 0"),
        "/dev/urandom gave repeating bytes\n{context}"
    );

    // /dev/hvc0, the virtio-console port served by hvcd: lines written reached the host file;
    // the host's 40000 bytes of input (more than the driver holds at once, so it took them in
    // turns, waiting for the device) arrived intact; a line written to the FIFO only once the
    // guest waited for it woke the reader.
    assert_eq!(fed, Ok(()), "feeding the console FIFO\n{context}");
    assert!(
        out.contains("crw--w---- 229,   0\n"),
        "ls -l /dev/hvc0\n{context}"
    );
    assert_eq!(
        std::fs::read_to_string(&console_out).unwrap(),
        "hello from the guest on hvc0\nwaiting for input\n",
        "{context}"
    );
    let md5 = format!("{}  -", host_md5(&input));
    assert!(
        out.lines().any(|l| l == md5),
        "busybox md5sum of head -c 40000 /dev/hvc0 is not the host's {md5}\n{context}"
    );
    assert!(
        out.contains("\na line written late\n=== exit 0"),
        "the reader waiting on /dev/hvc0 did not get the late line\n{context}"
    );

    // What the guest wrote is on the image file, and nothing else changed.
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(after.len(), before.len());
    let pattern_at = 512 * 1024 + 100;
    let mut want = before.clone();
    for i in 0..10000 {
        want[pattern_at + i] = linux_disk_pattern(i);
    }
    want[300_000..300_013].copy_from_slice(b"k42 was here\n");
    want[200 * BLOCK..202 * BLOCK].fill(0);
    if let Some(first) = (0..after.len()).find(|&i| after[i] != want[i]) {
        panic!(
            "vda.img differs from what the guest wrote from byte {first}: {:#04x}, expected \
             {:#04x} (was {:#04x})\n{context}",
            after[first], want[first], before[first]
        );
    }
    assert_eq!(
        std::fs::read(&ro_disk).unwrap(),
        ro_before,
        "the read-only image changed"
    );
}

#[test]
fn netd_frames_reach_the_host_tap_and_come_back() {
    require_kvm();
    if !std::path::Path::new("/usr/bin/unshare").exists() {
        panic!("unshare(1) is needed for a private network namespace (util-linux)");
    }
    // In a fresh network namespace: k42vm creates the TAP device; once it exists the host
    // side gets 10.0.2.1 and comes up. The guest's nettest sends ARP requests for 10.0.2.1
    // through netd; the host's kernel answers them (the responder) and records the guest in
    // its neighbour table, which is read while the VM runs (the TAP goes with k42vm).
    let script = format!(
        r#"{k42vm} run --cpus 2 --initrd {initrd} --cmdline "init=/bin/drvinit k42.arg=1" \
             --net tap=k42t0,mac=52:54:00:12:34:56 --timeout 60s &
        pid=$!
        i=0
        until grep -q 'k42t0:' /proc/net/dev; do
            i=$((i+1)); [ $i -gt 400 ] && break; sleep 0.05
        done
        ip addr add 10.0.2.1/24 dev k42t0 && ip link set k42t0 up
        echo "host tap $(ip -o link show k42t0 | grep -o 'link/ether [0-9a-f:]*')"
        i=0
        until ip neigh show 10.0.2.15 dev k42t0 | grep -q lladdr; do
            i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.05
        done
        echo "host neighbour $(ip neigh show 10.0.2.15 dev k42t0)"
        wait $pid
        echo "k42vm exit $?""#,
        k42vm = k42vm_binary().display(),
        initrd = k42_images::TEST_INITRD_PATH,
    );
    let run = run_with_limit(
        std::path::Path::new("/usr/bin/unshare"),
        &["-n", "sh", "-c", &script],
        std::time::Duration::from_secs(90),
    );
    let context = run.all();
    let out = &run.stdout;
    assert!(out.contains("\nk42vm exit 0\n"), "{context}");
    assert!(out.contains("nettest: all checks passed"), "{context}");
    // Guest to host: the host learnt the guest's address from its request.
    assert!(
        out.contains("host neighbour 10.0.2.15 lladdr 52:54:00:12:34:56"),
        "the host never saw the guest's ARP request\n{context}"
    );
    // Host to guest: the reply the guest printed carries the host TAP's address.
    let tap_mac = out
        .lines()
        .find_map(|l| l.strip_prefix("host tap link/ether "))
        .unwrap_or_else(|| panic!("no TAP address\n{context}"));
    assert!(
        out.contains(&format!("nettest: ARP reply: 10.0.2.1 is at {tap_mac} ")),
        "the guest did not get the host's ARP reply (TAP {tap_mac})\n{context}"
    );
    assert!(!run.stderr.contains("panicked"), "{context}");
}
