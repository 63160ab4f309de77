//! Virtio devices in k42vm (`--disk`, `--net`, `--rng`, `--virtio-console`): the k42 kernel
//! boots with them (without `init=` it leaves them alone; `drivers.rs` runs its drivers), a
//! tiny PVH guest drives one through MMIO exits, an ioeventfd and an irqfd, and bad flags or
//! backends get exit status 2 and one clear sentence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k42_tests::*;

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("k42-dev-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A file of `size` bytes filled with a pattern.
    fn image(&self, name: &str, size: usize) -> PathBuf {
        let path = self.0.join(name);
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, data).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn k42_kernel_boots_with_every_kind_of_device() {
    require_kvm();
    let dir = Scratch::new("boot");
    let a = dir.image("a.img", 1 << 20);
    let b = dir.image("b.img", 64 << 10);
    let before = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let b_ro = format!("{},readonly,id=ro-disk", b.display());
    let run = k42vm_run(&[
        "--cmdline",
        "",
        "--disk",
        s(&a),
        "--disk",
        &b_ro,
        "--rng",
        "--virtio-console",
        "--cpus",
        "2",
        "--timeout",
        "30s",
    ]);
    let context = run.all();
    assert_eq!(run.status, Some(0), "{context}");
    assert!(run.stdout.contains("k42 kernel:"), "no banner\n{context}");
    assert!(!run.stderr.contains("panicked"), "{context}");
    // The kernel leaves the devices alone: nothing logged, the images untouched.
    assert!(!run.stderr.contains("mmio"), "{context}");
    assert_eq!(
        (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()),
        before
    );
}

/// The probe guest's code, loaded at 1 MiB and entered in 32-bit protected mode (PVH). Devices:
/// `--disk` (a 1 MiB image) at 0xd000_0000 and `--rng` at 0xd000_1000 on GSI 6. It exits through
/// the shutdown hypercall with 0, or with the number of the check that failed:
///  1-5  magic, device ID and capacity of the disk; magic and device ID of the entropy device
///  6    a write and a read where no device is: the read gives zero
///  7-8  feature negotiation (VERSION_1) and DRIVER_OK accepted
///  9-10 after one 16-byte request on queue 0 and a QueueNotify write (KVM signals the ioeventfd;
///       k42vm's event loop answers), the used ring has it, with 16 bytes not all zero
///  11   InterruptStatus says "used buffer"; then the guest waits until the irqfd's edge on GSI 6
///       shows in the master PIC's IRR (interrupts stay disabled, so it stays there)
///  12   InterruptACK clears InterruptStatus
/// Rings: descriptors at 0x200000, available ring at 0x201000, used ring at 0x202000, buffer at
/// 0x203000; the shutdown parameter block at 0x204000.
#[rustfmt::skip]
const PROBE_CODE: &[u8] = &[
    0xbb, 0x00, 0x00, 0x00, 0xd0, // 000: mov $0xd0000000,%ebx
    0xbe, 0x00, 0x10, 0x00, 0xd0, // 005: mov $0xd0001000,%esi
    0xbf, 0x01, 0x00, 0x00, 0x00, // 00a: mov $0x1,%edi
    0x81, 0x3b, 0x76, 0x69, 0x72, 0x74, // 00f: cmpl $0x74726976,(%ebx)
    0x0f, 0x85, 0x71, 0x01, 0x00, 0x00, // 015: jne 18c
    0xbf, 0x02, 0x00, 0x00, 0x00, // 01b: mov $0x2,%edi
    0x83, 0x7b, 0x08, 0x02, // 020: cmpl $0x2,0x8(%ebx)
    0x0f, 0x85, 0x62, 0x01, 0x00, 0x00, // 024: jne 18c
    0xbf, 0x03, 0x00, 0x00, 0x00, // 02a: mov $0x3,%edi
    0x81, 0xbb, 0x00, 0x01, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, // 02f: cmpl $0x800,0x100(%ebx)
    0x0f, 0x85, 0x4d, 0x01, 0x00, 0x00, // 039: jne 18c
    0xbf, 0x04, 0x00, 0x00, 0x00, // 03f: mov $0x4,%edi
    0x81, 0x3e, 0x76, 0x69, 0x72, 0x74, // 044: cmpl $0x74726976,(%esi)
    0x0f, 0x85, 0x3c, 0x01, 0x00, 0x00, // 04a: jne 18c
    0xbf, 0x05, 0x00, 0x00, 0x00, // 050: mov $0x5,%edi
    0x83, 0x7e, 0x08, 0x04, // 055: cmpl $0x4,0x8(%esi)
    0x0f, 0x85, 0x2d, 0x01, 0x00, 0x00, // 059: jne 18c
    0xbf, 0x06, 0x00, 0x00, 0x00, // 05f: mov $0x6,%edi
    0xc7, 0x05, 0x00, 0x00, 0x10, 0xd0, 0x5a, 0x5a, 0x5a, 0x5a, // 064: movl $0x5a5a5a5a,0xd0100000
    0x83, 0x3d, 0x00, 0x00, 0x10, 0xd0, 0x00, // 06e: cmpl $0x0,0xd0100000
    0x0f, 0x85, 0x11, 0x01, 0x00, 0x00, // 075: jne 18c
    0xc7, 0x46, 0x70, 0x01, 0x00, 0x00, 0x00, // 07b: movl $0x1,0x70(%esi)
    0xc7, 0x46, 0x70, 0x03, 0x00, 0x00, 0x00, // 082: movl $0x3,0x70(%esi)
    0xc7, 0x46, 0x24, 0x01, 0x00, 0x00, 0x00, // 089: movl $0x1,0x24(%esi)
    0xc7, 0x46, 0x20, 0x01, 0x00, 0x00, 0x00, // 090: movl $0x1,0x20(%esi)
    0xc7, 0x46, 0x70, 0x0b, 0x00, 0x00, 0x00, // 097: movl $0xb,0x70(%esi)
    0xbf, 0x07, 0x00, 0x00, 0x00, // 09e: mov $0x7,%edi
    0x83, 0x7e, 0x70, 0x0b, // 0a3: cmpl $0xb,0x70(%esi)
    0x0f, 0x85, 0xdf, 0x00, 0x00, 0x00, // 0a7: jne 18c
    0xc7, 0x46, 0x30, 0x00, 0x00, 0x00, 0x00, // 0ad: movl $0x0,0x30(%esi)
    0xc7, 0x46, 0x38, 0x04, 0x00, 0x00, 0x00, // 0b4: movl $0x4,0x38(%esi)
    0xc7, 0x86, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, // 0bb: movl $0x200000,0x80(%esi)
    0xc7, 0x86, 0x90, 0x00, 0x00, 0x00, 0x00, 0x10, 0x20, 0x00, // 0c5: movl $0x201000,0x90(%esi)
    0xc7, 0x86, 0xa0, 0x00, 0x00, 0x00, 0x00, 0x20, 0x20, 0x00, // 0cf: movl $0x202000,0xa0(%esi)
    0xc7, 0x46, 0x44, 0x01, 0x00, 0x00, 0x00, // 0d9: movl $0x1,0x44(%esi)
    0xc7, 0x46, 0x70, 0x0f, 0x00, 0x00, 0x00, // 0e0: movl $0xf,0x70(%esi)
    0xbf, 0x08, 0x00, 0x00, 0x00, // 0e7: mov $0x8,%edi
    0x83, 0x7e, 0x70, 0x0f, // 0ec: cmpl $0xf,0x70(%esi)
    0x0f, 0x85, 0x96, 0x00, 0x00, 0x00, // 0f0: jne 18c
    0xc7, 0x05, 0x00, 0x00, 0x20, 0x00, 0x00, 0x30, 0x20, 0x00, // 0f6: movl $0x203000,0x200000
    0xc7, 0x05, 0x08, 0x00, 0x20, 0x00, 0x10, 0x00, 0x00, 0x00, // 100: movl $0x10,0x200008
    0x66, 0xc7, 0x05, 0x0c, 0x00, 0x20, 0x00, 0x02, 0x00, // 10a: movw $0x2,0x20000c
    0x66, 0xc7, 0x05, 0x02, 0x10, 0x20, 0x00, 0x01, 0x00, // 113: movw $0x1,0x201002
    0xc7, 0x46, 0x50, 0x00, 0x00, 0x00, 0x00, // 11c: movl $0x0,0x50(%esi)
    0xf3, 0x90, // 123: pause
    0x66, 0x83, 0x3d, 0x02, 0x20, 0x20, 0x00, 0x01, // 125: cmpw $0x1,0x202002
    0x75, 0xf4, // 12d: jne 123
    0xbf, 0x09, 0x00, 0x00, 0x00, // 12f: mov $0x9,%edi
    0x83, 0x3d, 0x08, 0x20, 0x20, 0x00, 0x10, // 134: cmpl $0x10,0x202008
    0x75, 0x4f, // 13b: jne 18c
    0xbf, 0x0a, 0x00, 0x00, 0x00, // 13d: mov $0xa,%edi
    0xa1, 0x00, 0x30, 0x20, 0x00, // 142: mov 0x203000,%eax
    0x0b, 0x05, 0x04, 0x30, 0x20, 0x00, // 147: or 0x203004,%eax
    0x0b, 0x05, 0x08, 0x30, 0x20, 0x00, // 14d: or 0x203008,%eax
    0x0b, 0x05, 0x0c, 0x30, 0x20, 0x00, // 153: or 0x20300c,%eax
    0x74, 0x31, // 159: je 18c
    0xbf, 0x0b, 0x00, 0x00, 0x00, // 15b: mov $0xb,%edi
    0xf7, 0x46, 0x60, 0x01, 0x00, 0x00, 0x00, // 160: testl $0x1,0x60(%esi)
    0x74, 0x23, // 167: je 18c
    0xf3, 0x90, // 169: pause
    0xb0, 0x0a, // 16b: mov $0xa,%al
    0xe6, 0x20, // 16d: out %al,$0x20
    0xe4, 0x20, // 16f: in $0x20,%al
    0xa8, 0x40, // 171: test $0x40,%al
    0x74, 0xf4, // 173: je 169
    0xc7, 0x46, 0x64, 0x01, 0x00, 0x00, 0x00, // 175: movl $0x1,0x64(%esi)
    0xbf, 0x0c, 0x00, 0x00, 0x00, // 17c: mov $0xc,%edi
    0xf7, 0x46, 0x60, 0x01, 0x00, 0x00, 0x00, // 181: testl $0x1,0x60(%esi)
    0x75, 0x02, // 188: jne 18c
    0x31, 0xff, // 18a: xor %edi,%edi
    // fail:
    0x89, 0x3d, 0x00, 0x40, 0x20, 0x00, // 18c: mov %edi,0x204000
    0xb8, 0x00, 0x40, 0x20, 0x00, // 192: mov $0x204000,%eax
    0x66, 0xba, 0x11, 0x05, // 197: mov $0x511,%dx
    0xef, // 19b: out %eax,(%dx)
    0xf4, // 19c: hlt
    0xeb, 0xfd, // 19d: jmp 19c
];

/// Where the probe is loaded and entered.
const PROBE_LOAD: u64 = 0x10_0000;

/// A minimal PVH ELF: one PT_LOAD with `code` at 1 MiB and the XEN_ELFNOTE_PHYS32_ENTRY note.
fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const CODE_OFFSET: usize = 0x100;
    let note_offset = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    for word in [4u32, 4, 18] {
        note.extend_from_slice(&word.to_le_bytes()); // namesz, descsz, type
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(PROBE_LOAD as u32).to_le_bytes());

    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&PROBE_LOAD.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR as u16, PHDR as u16, 2, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize...
    }
    let phdr = |elf: &mut Vec<u8>, kind: u32, flags: u32, offset: usize, addr: u64, len: usize| {
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        for v in [offset as u64, addr, addr, len as u64, len as u64, 0x1000] {
            elf.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(&mut elf, 1, 5, CODE_OFFSET, PROBE_LOAD, code.len()); // PT_LOAD, R+X
    phdr(&mut elf, 4, 4, note_offset, 0, note.len()); // PT_NOTE
    elf.extend_from_slice(&note);
    elf.resize(CODE_OFFSET, 0);
    elf.extend_from_slice(code);
    elf
}

#[test]
fn a_guest_drives_virtio_rng_through_mmio_exits_ioeventfd_and_irqfd() {
    require_kvm();
    let dir = Scratch::new("probe");
    let kernel = dir.0.join("probe.elf");
    std::fs::write(&kernel, pvh_elf(PROBE_CODE)).unwrap();
    let disk = dir.image("disk.img", 1 << 20);
    let console = dir.0.join("console.txt");
    let console_flag = format!("--virtio-console={}", console.display());
    let run = k42vm_run(&[
        "--kernel",
        s(&kernel),
        "--disk",
        s(&disk),
        "--rng",
        &console_flag,
        "--memory",
        "32M",
        "--timeout",
        "30s",
    ]);
    let context = run.all();
    assert_eq!(
        run.status,
        Some(0),
        "the probe guest failed its check number {:?} (see PROBE_CODE; 124 = it waited forever \
         for the answer or the interrupt)\n{context}",
        run.status
    );
    // The accesses where no device is were logged, and answered with zero (check 6).
    assert!(
        run.stderr
            .contains("wrote 4 bytes at 0xd0100000, where there is no device"),
        "{context}"
    );
    assert!(
        run.stderr
            .contains("read 4 bytes at 0xd0100000, where there is no device; read as zero"),
        "{context}"
    );
    assert!(!run.stderr.contains("panicked"), "{context}");
    // --virtio-console=FILE created its file (the probe writes nothing to it).
    assert_eq!(std::fs::read(&console).unwrap(), b"");
}

#[test]
fn missing_disk_file() {
    assert_usage_error(
        &k42vm_run(&["--disk", "/nonexistent/disk.img"]),
        "cannot open disk image /nonexistent/disk.img: No such file or directory",
    );
    // Also when it is not the first device.
    assert_usage_error(
        &k42vm_run(&["--rng", "--disk", "/nonexistent/b.img,readonly"]),
        "cannot open disk image /nonexistent/b.img",
    );
}

#[test]
fn bad_device_flags() {
    assert_usage_error(
        &k42vm_run(&["--disk", "a.img,rw"]),
        "unknown --disk option `rw`",
    );
    assert_usage_error(&k42vm_run(&["--disk", ",readonly"]), "needs an image path");
    assert_usage_error(&k42vm_run(&["--disk", "a.img,id="]), "id= needs a name");
    assert_usage_error(
        &k42vm_run(&["--disk", "a.img,id=a-name-longer-than-twenty"]),
        "longer than 20 bytes",
    );
    assert_usage_error(&k42vm_run(&["--net", "tap="]), "--net tap name");
    assert_usage_error(
        &k42vm_run(&["--net", "tap=t0,mac=01:00:5e:00:00:01"]),
        "multicast",
    );
    assert_usage_error(&k42vm_run(&["--net", "vhost=on"]), "unknown --net option");
    assert_usage_error(
        &k42vm_run(&["--virtio-console", "out.txt"]),
        "unexpected argument 'out.txt'",
    );
    assert_usage_error(
        &k42vm_run(&["--virtio-console=/nonexistent/dir/out.txt"]),
        "cannot create /nonexistent/dir/out.txt",
    );
    let dir = Scratch::new("twice");
    let img = dir.image("a.img", 4096);
    assert_usage_error(
        &k42vm_run(&["--disk", s(&img), "--disk", s(&img)]),
        "is given twice",
    );
}

#[test]
fn tap_that_cannot_be_opened() {
    // `lo` exists in every network namespace and is not a TAP device.
    assert_usage_error(
        &k42vm_run(&["--net", "tap=lo"]),
        "cannot create or attach TAP device lo",
    );
    // No /dev/net/tun at all (a private mount namespace; needs root, which CI has).
    if !Path::new("/usr/bin/unshare").exists() {
        panic!("unshare(1) is needed to hide /dev/net/tun (util-linux)");
    }
    let script = format!(
        "mount -t tmpfs none /dev/net && exec {} run --net tap=k42t9",
        k42vm_binary().display()
    );
    let run = run_with_limit(
        Path::new("/usr/bin/unshare"),
        &["-m", "sh", "-c", &script],
        Duration::from_secs(30),
    );
    assert_usage_error(&run, "cannot open /dev/net/tun for TAP device k42t9");
    assert!(run.stderr.contains("modprobe tun"), "{}", run.all());
}

#[test]
fn net_creates_its_tap_in_a_private_network_namespace() {
    require_kvm();
    if !Path::new("/usr/bin/unshare").exists() {
        panic!("unshare(1) is needed for a private network namespace (util-linux)");
    }
    // In a fresh network namespace (gone with the test), k42vm creates the TAP device, which
    // exists while the guest runs and disappears with k42vm. The guest idles until killed.
    let script = format!(
        r#"{k42vm} run --net tap=k42t0,mac=52:54:00:12:34:56 --net tap=k42t1 \
             --cmdline k42.test_hang --timeout 20s &
        pid=$!
        i=0
        until grep -q 'k42t1:' /proc/net/dev; do
            i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.05
        done
        grep -o 'k42t[01]:' /proc/net/dev | tr '\n' ' '; echo
        kill $pid; wait $pid
        echo "exit $?"
        grep -c 'k42t' /proc/net/dev || true"#,
        k42vm = k42vm_binary().display()
    );
    let run = run_with_limit(
        Path::new("/usr/bin/unshare"),
        &["-n", "sh", "-c", &script],
        Duration::from_secs(30),
    );
    let context = run.all();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines.contains(&"k42t0: k42t1: "),
        "the TAP devices did not appear while k42vm ran\n{context}"
    );
    assert!(
        lines.contains(&"exit 143"),
        "k42vm did not run until killed (SIGTERM)\n{context}"
    );
    assert_eq!(
        lines.last(),
        Some(&"0"),
        "the TAP devices outlived k42vm\n{context}"
    );
    assert!(!run.stderr.contains("panicked"), "{context}");
}
