//! ELF plans and initial stacks against real binaries: Debian's static busybox, a musl
//! static-PIE built here, a dynamically linked host program, and damaged files.

use std::path::Path;
use std::process::Command;

use k42_linux_abi::auxv::{self, build_initial_stack, ProgramInfo, StackError};
use k42_linux_abi::elf::{self, ElfError, Kind};

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("{path}: {e} (scripts/setup installs busybox-static and musl-tools)")
    })
}

#[test]
fn static_busybox_plan() {
    let file = read("/bin/busybox");
    let image = elf::parse(&file).unwrap();
    assert_eq!(image.kind, Kind::Static);
    assert!(image.segments.len() >= 2);
    let text = image
        .segments
        .iter()
        .find(|s| s.perms.exec)
        .expect("an executable segment");
    assert!(
        text.vaddr <= image.entry && image.entry < text.vaddr + text.mem_size,
        "entry inside text"
    );
    assert!(
        image.tls.is_some(),
        "glibc static binaries carry a TLS template"
    );
    assert!(
        image
            .segments
            .iter()
            .any(|s| s.perms.write && s.mem_size > s.file_size),
        ".bss present"
    );
    assert!(!image.exec_stack);
    let (lo, hi) = image.span();
    assert!(lo < hi && hi < elf::USER_LIMIT);
    assert!(
        image.phdr_vaddr >= lo && image.phdr_vaddr < hi,
        "program headers are mapped"
    );
}

#[test]
fn pie_without_interpreter_is_static_pie() {
    // Debian's `musl-gcc -static-pie` emits a PT_INTERP (and without it the result crashes), so
    // the static-PIE case is checked on a copy of busybox marked ET_DYN; real static-PIE programs
    // (Rust's musl target) arrive with the Linux personality.
    let mut file = read("/bin/busybox");
    file[16] = 3; // ET_DYN
    let image = elf::parse(&file).unwrap();
    assert_eq!(image.kind, Kind::StaticPie);
    let musl_dynamic = {
        let dir = std::env::temp_dir().join(format!("k42-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("hello.c");
        std::fs::write(&src, "int main(void) { return 42; }\n").unwrap();
        let out = dir.join("hello");
        let status = Command::new("musl-gcc")
            .args(["-static-pie", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .status();
        let status =
            status.unwrap_or_else(|e| panic!("musl-gcc: {e} (scripts/setup installs musl-tools)"));
        assert!(status.success(), "musl-gcc failed");
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        bytes
    };
    // Whatever the toolchain produced, the verdict is consistent with its headers.
    match elf::parse(&musl_dynamic) {
        Ok(image) => assert_eq!(image.kind, Kind::StaticPie),
        Err(e) => assert_eq!(e, ElfError::DynamicallyLinked),
    }
}

#[test]
fn dynamic_programs_are_refused() {
    let ls = ["/bin/ls", "/usr/bin/ls"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ls");
    assert_eq!(elf::parse(&read(ls)), Err(ElfError::DynamicallyLinked));
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let file = read("/bin/busybox");
    assert_eq!(elf::parse(b"#!/bin/sh\n"), Err(ElfError::NotElf));
    assert_eq!(elf::parse(&file[..63]), Err(ElfError::NotElf));
    assert_eq!(elf::parse(&file[..100]), Err(ElfError::BadProgramHeaders));
    let mut wrong = file[..4096].to_vec();
    wrong[18] = 40; // EM_ARM
    assert_eq!(elf::parse(&wrong), Err(ElfError::WrongArchitecture));
    // Truncated after the headers: segments point past the end.
    assert_eq!(elf::parse(&file[..4096]), Err(ElfError::BadSegment));
    // Pseudo-random corruption of the header area never panics.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut copy = file[..8192].to_vec();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state % 512) as usize;
            copy[at] = (state >> 32) as u8;
        }
        let _ = elf::parse(&copy);
    }
}

fn word(stack: &auxv::InitialStack, addr: u64) -> u64 {
    let off = (addr - stack.sp) as usize;
    u64::from_le_bytes(stack.bytes[off..off + 8].try_into().unwrap())
}

fn c_string(stack: &auxv::InitialStack, addr: u64) -> Vec<u8> {
    let off = (addr - stack.sp) as usize;
    let len = stack.bytes[off..].iter().position(|&b| b == 0).unwrap();
    stack.bytes[off..off + len].to_vec()
}

#[test]
fn initial_stack_matches_the_linux_layout() {
    let top = 0x7fff_ffff_f000u64;
    let info = ProgramInfo {
        phdr: 0x400040,
        phent: 56,
        phnum: 9,
        entry: 0x401000,
        hwcap: 0x178bfbff,
        random: [7; 16],
    };
    let args: [&[u8]; 4] = [b"busybox", b"sh", b"-c", b"echo hi"];
    let env: [&[u8]; 2] = [b"PATH=/bin", b"HOME=/"];
    let stack = build_initial_stack(top, 64 * 1024, b"/bin/busybox", &args, &env, &info).unwrap();
    assert_eq!(stack.sp % 16, 0);
    assert_eq!(stack.sp + stack.bytes.len() as u64, top);
    assert_eq!(word(&stack, stack.sp), 4, "argc");
    for (i, arg) in args.iter().enumerate() {
        assert_eq!(
            c_string(&stack, word(&stack, stack.sp + 8 + 8 * i as u64)),
            *arg
        );
    }
    let envp = stack.sp + 8 + 8 * 5;
    assert_eq!(word(&stack, envp - 8), 0, "argv ends with NULL");
    for (i, var) in env.iter().enumerate() {
        assert_eq!(c_string(&stack, word(&stack, envp + 8 * i as u64)), *var);
    }
    let mut at = envp + 8 * 3;
    let mut aux = std::collections::HashMap::new();
    loop {
        let (k, v) = (word(&stack, at), word(&stack, at + 8));
        if k == auxv::AT_NULL {
            break;
        }
        aux.insert(k, v);
        at += 16;
    }
    assert_eq!(aux[&auxv::AT_PHDR], 0x400040);
    assert_eq!(aux[&auxv::AT_PHNUM], 9);
    assert_eq!(aux[&auxv::AT_ENTRY], 0x401000);
    assert_eq!(aux[&auxv::AT_PAGESZ], 4096);
    assert_eq!(aux[&auxv::AT_CLKTCK], 100);
    assert_eq!(aux[&auxv::AT_SECURE], 0);
    let random = aux[&auxv::AT_RANDOM];
    let off = (random - stack.sp) as usize;
    assert_eq!(&stack.bytes[off..off + 16], &[7u8; 16]);
    assert_eq!(c_string(&stack, aux[&auxv::AT_PLATFORM]), b"x86_64");
    assert_eq!(c_string(&stack, aux[&auxv::AT_EXECFN]), b"/bin/busybox");
}

#[test]
fn initial_stack_limits() {
    let info = ProgramInfo {
        phdr: 0,
        phent: 56,
        phnum: 1,
        entry: 0,
        hwcap: 0,
        random: [0; 16],
    };
    let big = vec![b'x'; 10_000];
    assert_eq!(
        build_initial_stack(0x10_0000, 4096, b"p", &[&big], &[], &info),
        Err(StackError::TooBig)
    );
    assert_eq!(
        build_initial_stack(0x10_0000, 4096, b"p", &[b"a\0b"], &[], &info),
        Err(StackError::EmbeddedNul)
    );
    assert_eq!(
        build_initial_stack(16, 1 << 20, b"p", &[b"prog"], &[], &info),
        Err(StackError::TooBig)
    );
}
