//! The auxiliary vector and the initial stack Linux gives a new program.
//!
//! Layout, from `sp` upward: `argc`, `argv[]`, NULL, `envp[]`, NULL, auxv pairs ending with
//! `AT_NULL`, then the strings and the 16 `AT_RANDOM` bytes near the top. `sp` is 16-byte aligned.

use alloc::vec::Vec;

/// End of the vector.
pub const AT_NULL: u64 = 0;
/// Address of the program headers.
pub const AT_PHDR: u64 = 3;
/// Size of one program header.
pub const AT_PHENT: u64 = 4;
/// Number of program headers.
pub const AT_PHNUM: u64 = 5;
/// Page size.
pub const AT_PAGESZ: u64 = 6;
/// Base of the interpreter (0 for static programs).
pub const AT_BASE: u64 = 7;
/// Flags.
pub const AT_FLAGS: u64 = 8;
/// Program entry point.
pub const AT_ENTRY: u64 = 9;
/// Real user id.
pub const AT_UID: u64 = 11;
/// Effective user id.
pub const AT_EUID: u64 = 12;
/// Real group id.
pub const AT_GID: u64 = 13;
/// Effective group id.
pub const AT_EGID: u64 = 14;
/// Address of the platform string.
pub const AT_PLATFORM: u64 = 15;
/// CPU capabilities (CPUID.1:EDX).
pub const AT_HWCAP: u64 = 16;
/// Clock ticks per second for `times()`.
pub const AT_CLKTCK: u64 = 17;
/// Whether the program runs with elevated rights.
pub const AT_SECURE: u64 = 23;
/// Address of 16 random bytes.
pub const AT_RANDOM: u64 = 25;
/// Address of the executable's file name.
pub const AT_EXECFN: u64 = 31;

/// What the stack builder needs beyond argv and envp.
#[derive(Clone, Copy, Debug)]
pub struct ProgramInfo {
    /// `AT_PHDR` (after the load bias).
    pub phdr: u64,
    /// `AT_PHENT`.
    pub phent: u64,
    /// `AT_PHNUM`.
    pub phnum: u64,
    /// `AT_ENTRY` (after the load bias).
    pub entry: u64,
    /// `AT_HWCAP`.
    pub hwcap: u64,
    /// 16 bytes for `AT_RANDOM` (stack-protector and pointer-guard seeds).
    pub random: [u8; 16],
}

/// An initial stack image: copy `bytes` to `[sp, sp + bytes.len())` and start with RSP = `sp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialStack {
    /// The stack pointer the program starts with (16-byte aligned, pointing at `argc`).
    pub sp: u64,
    /// The bytes from `sp` up to the stack top.
    pub bytes: Vec<u8>,
}

/// Why the stack cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// Arguments and environment exceed the space allowed (Linux's `E2BIG`).
    TooBig,
    /// An argument or variable contains a NUL byte.
    EmbeddedNul,
}

/// Builds the initial stack ending at `stack_top` for a program started as `execfn` (the path
/// given to `execve`, `AT_EXECFN`) with `args` and `env`, using at most `max_bytes` of stack.
pub fn build_initial_stack(
    stack_top: u64,
    max_bytes: usize,
    execfn: &[u8],
    args: &[&[u8]],
    env: &[&[u8]],
    info: &ProgramInfo,
) -> Result<InitialStack, StackError> {
    if args
        .iter()
        .chain(env)
        .chain([&execfn])
        .any(|s| s.contains(&0))
    {
        return Err(StackError::EmbeddedNul);
    }
    // Strings area (top of the stack): random bytes, platform, execfn, argv, envp.
    let mut strings: Vec<u8> = Vec::new();
    let mut place = |bytes: &[u8], nul: bool| -> usize {
        let offset = strings.len();
        strings.extend_from_slice(bytes);
        if nul {
            strings.push(0);
        }
        offset
    };
    let random_off = place(&info.random, false);
    let platform_off = place(b"x86_64", true);
    let execfn_off = place(execfn, true);
    let arg_offs: Vec<usize> = args.iter().map(|a| place(a, true)).collect();
    let env_offs: Vec<usize> = env.iter().map(|e| place(e, true)).collect();
    let strings_len = strings.len().next_multiple_of(16);
    let strings_base = stack_top
        .checked_sub(strings_len as u64)
        .ok_or(StackError::TooBig)?;

    let auxv: [(u64, u64); 17] = [
        (AT_PHDR, info.phdr),
        (AT_PHENT, info.phent),
        (AT_PHNUM, info.phnum),
        (AT_PAGESZ, 4096),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, info.entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_HWCAP, info.hwcap),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, strings_base + random_off as u64),
        (AT_PLATFORM, strings_base + platform_off as u64),
        (AT_EXECFN, strings_base + execfn_off as u64),
    ];
    let words = 1 + args.len() + 1 + env.len() + 1 + 2 * (auxv.len() + 1);
    let table_len = (words * 8).next_multiple_of(16);
    let total = table_len + strings_len;
    if total > max_bytes {
        return Err(StackError::TooBig);
    }
    let sp = strings_base - table_len as u64;
    let mut table: Vec<u64> = Vec::with_capacity(words);
    table.push(args.len() as u64);
    table.extend(arg_offs.iter().map(|&o| strings_base + o as u64));
    table.push(0);
    table.extend(env_offs.iter().map(|&o| strings_base + o as u64));
    table.push(0);
    for (key, value) in auxv {
        table.push(key);
        table.push(value);
    }
    table.push(AT_NULL);
    table.push(0);
    let mut bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.resize(table_len, 0);
    bytes.extend_from_slice(&strings);
    bytes.resize(total, 0);
    Ok(InitialStack { sp, bytes })
}
