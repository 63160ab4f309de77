//! `execve` in ring 3: the personality replaces the program it runs with another one and stays
//! itself, with its descriptor table, working directory and the rest of the process's state
//! (what Linux keeps across an exec). The kernel only maps and unmaps memory for it.
//!
//! Everything that can fail is checked first (the file, its ELF headers and layout, the new
//! initial stack); only then is the old program's memory dropped, the new segments mapped and
//! filled from the file, the stack written, and the new program entered. A `#!` script runs its
//! interpreter, as on Linux.

use alloc::vec::Vec;

use k42_linux_abi::auxv::{self, ProgramInfo};
use k42_linux_abi::elf::{self, ElfImage, Kind};
use k42_linux_abi::errno;
use k42_rt::kabi::{self, Prot};
use k42_rt::sys;
use spin::Mutex;

use crate::files::{self, Contents};
use crate::{err, get, Ret};

/// Most bytes of arguments and environment together (Linux's `ARG_MAX` for an 8 MiB stack is
/// larger; this is what the new stack may spend on them).
const ARGS_MAX: usize = 128 * 1024;
/// Most `#!` interpreters in a row.
const INTERPRETER_DEPTH: usize = 4;
/// Longest `#!` line read.
const SHEBANG_MAX: usize = 256;

/// The path of the program running now (what `/proc/self/exe` names).
static EXE: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The path of the running program.
pub fn current_exe() -> Vec<u8> {
    EXE.lock().clone()
}

/// Records the path of the program the kernel started (`AT_EXECFN`).
pub fn set_current_exe(path: &[u8]) {
    *EXE.lock() = path.to_vec();
}

/// Where the running program's argument strings are (`[start, end)` on its initial stack, as
/// Linux's `arg_start` and `arg_end`).
static ARGS: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Records where the argument strings of the program entered with initial stack `sp` are
/// (`argc` at `sp`, then the `argv` pointers); none if the stack does not read as one.
pub fn record_args(sp: u64) {
    let range = (|| {
        let argc: u64 = crate::get(sp).ok()?;
        if argc == 0 {
            return None;
        }
        let first: u64 = crate::get(sp + 8).ok()?;
        let last: u64 = crate::get(sp + 8 * argc).ok()?;
        let last_len = crate::user_cstring(last, ARGS_MAX, errno::E2BIG)
            .ok()?
            .len() as u64;
        Some((first, last + last_len + 1))
    })();
    *ARGS.lock() = range.unwrap_or((0, 0));
}

/// The running program's argument strings, each ending in NUL (`/proc/self/cmdline`): what is
/// in its memory there now, as Linux shows it.
pub fn current_cmdline() -> Vec<u8> {
    let (start, end) = *ARGS.lock();
    if end <= start {
        return Vec::new();
    }
    crate::user_bytes(start, end - start).map_or_else(|_| Vec::new(), <[u8]>::to_vec)
}

/// A NULL-terminated array of strings (`argv`, `envp`); `used` counts bytes against
/// [`ARGS_MAX`].
fn user_strings(ptr: u64, used: &mut usize) -> Result<Vec<Vec<u8>>, Ret> {
    let mut out = Vec::new();
    if ptr == 0 {
        return Ok(out);
    }
    loop {
        let at = ptr
            .checked_add(8 * out.len() as u64)
            .ok_or(err(errno::EFAULT))?;
        let s: u64 = get(at)?;
        if s == 0 {
            return Ok(out);
        }
        let string = crate::user_cstring(s, ARGS_MAX.saturating_sub(*used), errno::E2BIG)?;
        *used += string.len() + 1 + 8;
        if *used > ARGS_MAX {
            return Err(err(errno::E2BIG));
        }
        out.push(string);
    }
}

/// A program checked and ready to replace the running one.
struct Prepared {
    contents: Contents,
    image: ElfImage,
    bias: u64,
    exe: Vec<u8>,
    stack: auxv::InitialStack,
}

/// `execve(path, argv, envp)`: returns only on failure.
pub fn execve(path: u64, argv: u64, envp: u64) -> Ret {
    let mut used = 0;
    let loaded = files::user_path(path).and_then(|path| {
        let args = user_strings(argv, &mut used)?;
        let env = user_strings(envp, &mut used)?;
        prepare(path, args, env, 0)
    });
    match loaded {
        Ok(prepared) => {
            // The old program's memory, stack included, is about to go: continue on a stack
            // of the personality's own.
            let prepared = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(prepared));
            let top = exec_stack_top();
            // SAFETY: switches to `EXEC_STACK` (used only here; the program's threads are
            // cooperative and exec never switches between them, so one thread at a time) and
            // calls `commit`, which never returns, with the prepared program it now owns.
            unsafe {
                core::arch::asm!(
                    "mov rsp, {top}",
                    "call {commit}",
                    "ud2",
                    top = in(reg) top,
                    commit = sym commit,
                    in("rdi") prepared,
                    options(noreturn)
                )
            }
        }
        Err(e) => e,
    }
}

/// Finds, reads and checks the program at `path` (following `#!` lines) and builds its stack.
fn prepare(
    path: Vec<u8>,
    mut args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    depth: usize,
) -> Result<Prepared, Ret> {
    let exe = files::absolute_path(&path)?;
    let contents = files::read_executable(&exe)?;
    let bytes = contents.bytes();
    if bytes.starts_with(b"#!") {
        if depth >= INTERPRETER_DEPTH {
            return Err(err(errno::ELOOP));
        }
        let line = &bytes[2..bytes.len().min(SHEBANG_MAX)];
        let line = line.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let mut words = line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|w| !w.is_empty());
        let interpreter = words.next().ok_or(err(errno::ENOEXEC))?.to_vec();
        // Linux passes the rest of the line as one argument.
        let rest = line
            .trim_ascii()
            .get(interpreter.len()..)
            .map(<[u8]>::trim_ascii)
            .filter(|r| !r.is_empty());
        let mut new_args = alloc::vec![interpreter.clone()];
        new_args.extend(rest.map(<[u8]>::to_vec));
        new_args.push(path);
        new_args.extend(args.drain(..).skip(1));
        return prepare(interpreter, new_args, env, depth + 1);
    }
    let image = elf::parse(bytes).map_err(|_| err(errno::ENOEXEC))?;
    let bias = match image.kind {
        Kind::Static => 0,
        Kind::StaticPie => elf::PIE_BASE,
    };
    let (lo, hi) = image.span();
    let (lo, hi) = (lo + bias, hi + bias);
    if crate::ours(lo, hi - lo) || hi > crate::MMAP_TOP || lo < kabi::USER_START {
        return Err(err(errno::ENOEXEC));
    }
    // Each segment gets pages of its own (as the kernel's loader requires too).
    let mut spans: Vec<(u64, u64)> = image.segments.iter().map(|s| s.page_span()).collect();
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(err(errno::ENOEXEC));
    }
    let mut random = [0u8; 16];
    crate::fill_random(&mut random);
    let info = ProgramInfo {
        phdr: image.phdr_vaddr + bias,
        phent: u64::from(image.phent),
        phnum: u64::from(image.phnum),
        entry: image.entry + bias,
        hwcap: crate::hwcap(),
        random,
    };
    let arg_refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let env_refs: Vec<&[u8]> = env.iter().map(Vec::as_slice).collect();
    let stack = auxv::build_initial_stack(
        kabi::MAIN_STACK_TOP,
        ARGS_MAX + 4096,
        &path,
        &arg_refs,
        &env_refs,
        &info,
    )
    .map_err(|e| match e {
        auxv::StackError::TooBig => err(errno::E2BIG),
        auxv::StackError::EmbeddedNul => err(errno::EINVAL),
    })?;
    Ok(Prepared {
        contents,
        image,
        bias,
        exe,
        stack,
    })
}

/// The stack `commit` runs on.
#[repr(C, align(16))]
struct ExecStack([u8; EXEC_STACK_SIZE]);

const EXEC_STACK_SIZE: usize = 64 * 1024;

static mut EXEC_STACK: ExecStack = ExecStack([0; EXEC_STACK_SIZE]);

/// The top of [`EXEC_STACK`].
fn exec_stack_top() -> u64 {
    (&raw mut EXEC_STACK) as u64 + EXEC_STACK_SIZE as u64
}

/// Past the point of no return: any failure ends the process (Linux kills it too).
fn fatal(what: &str, e: kabi::Error) -> ! {
    k42_rt::println!("linux: execve: cannot {what}: {e:?}; the process ends");
    crate::exit(127)
}

/// Replaces the program: drops its memory, loads the new one and enters it.
extern "C" fn commit(prepared: *mut Prepared) -> ! {
    // SAFETY: `execve` leaked this box for us and never touches it again.
    let p = unsafe { alloc::boxed::Box::from_raw(prepared) };
    // Everything the program could map: below the personality, between it and the
    // personality's heap, and from the heap's end to the kernel's areas, except the file
    // windows (open files stay open). The main stack is one of those (the kernel made it):
    // it stays, and the new stack image replaces its top.
    let heap_end = k42_rt::HEAP_START + k42_rt::HEAP_SIZE;
    for (start, end) in [
        (kabi::USER_START, crate::PERSONALITY.start),
        (crate::PERSONALITY.end, k42_rt::HEAP_START),
        (heap_end, crate::FILE_WINDOWS.start),
        (crate::FILE_WINDOWS.end, kabi::USER_END),
    ] {
        if let Err(e) = sys::unmap(start, end - start) {
            fatal("drop the old program", e);
        }
    }
    let bytes = p.contents.bytes();
    for seg in &p.image.segments {
        let (first, end) = seg.page_span();
        let (first, end) = (first + p.bias, end + p.bias);
        if let Err(e) = sys::map(first, end - first, Prot::READ | Prot::WRITE) {
            fatal("map a segment", e);
        }
        let data = &bytes[seg.file_offset as usize..(seg.file_offset + seg.file_size) as usize];
        // SAFETY: the segment's pages were just mapped read-write for the new program and
        // the data lies inside them (`page_span` covers `vaddr..vaddr + mem_size`).
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (seg.vaddr + p.bias) as *mut u8,
                data.len(),
            )
        };
        let mut prot = 0;
        if seg.perms.read {
            prot |= Prot::READ;
        }
        if seg.perms.write {
            prot |= Prot::WRITE | Prot::READ;
        }
        if seg.perms.exec {
            prot |= Prot::EXEC | Prot::READ;
        }
        if let Err(e) = sys::protect(first, end - first, prot) {
            fatal("protect a segment", e);
        }
    }
    // SAFETY: the main stack is mapped read-write by the kernel for the process's life and
    // the image ends at its top; nothing of the old program runs on it any more.
    unsafe {
        core::ptr::copy_nonoverlapping(
            p.stack.bytes.as_ptr(),
            p.stack.sp as *mut u8,
            p.stack.bytes.len(),
        )
    };
    let (_, hi) = p.image.span();
    crate::reset_memory(hi + p.bias);
    crate::rewrite::reset();
    crate::signals::reset_for_exec();
    crate::threads::reset();
    files::close_on_exec();
    set_current_exe(&p.exe);
    record_args(p.stack.sp);
    crate::procfs::publish_command();
    let (entry, sp) = (p.image.entry + p.bias, p.stack.sp);
    drop(p);
    // SAFETY: enters the new program as Linux does: rsp = its initial stack, rdx = 0 (no exit
    // handler), FS base 0, at its entry point; nothing of the old program is used again.
    unsafe {
        core::arch::asm!(
            "wrfsbase {zero}",
            "mov rsp, {sp}",
            "xor ebp, ebp",
            "jmp {entry}",
            zero = in(reg) 0u64,
            sp = in(reg) sp,
            entry = in(reg) entry,
            in("rdx") 0,
            options(noreturn)
        )
    }
}
