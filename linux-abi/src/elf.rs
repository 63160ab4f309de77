//! ELF loading plans for static and static-PIE x86_64 Linux executables.
//!
//! [`parse`] checks the headers and returns what to map where; it maps nothing itself, so the
//! kernel (or a host test) decides how. Dynamically linked programs (with `PT_INTERP`) are
//! refused with a clear error: the Linux personality runs static binaries.

use alloc::vec::Vec;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PT_TLS: u32 = 7;
const PT_GNU_STACK: u32 = 0x6474_e551;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
/// User addresses stay below the canonical hole.
pub const USER_LIMIT: u64 = 0x0000_8000_0000_0000;
/// Where a static-PIE program is loaded (its load bias), by the kernel and by `execve` alike.
pub const PIE_BASE: u64 = 0x0000_5555_5555_0000;
const PAGE: u64 = 4096;

/// Executable, writable, readable bits of a segment (`PF_X`, `PF_W`, `PF_R`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

/// One `PT_LOAD` (or `PT_TLS`) segment, addresses relative to the load bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address (before adding the load bias for PIE).
    pub vaddr: u64,
    /// Size in memory (the tail past `file_size` is zero).
    pub mem_size: u64,
    /// Offset of the contents in the file.
    pub file_offset: u64,
    /// Bytes taken from the file.
    pub file_size: u64,
    /// Access rights.
    pub perms: Perms,
}

impl Segment {
    /// Page-aligned `[start, end)` the segment occupies.
    pub fn page_span(&self) -> (u64, u64) {
        (
            self.vaddr & !(PAGE - 1),
            (self.vaddr + self.mem_size).div_ceil(PAGE) * PAGE,
        )
    }
}

/// How the executable is positioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ET_EXEC`: loaded at its link addresses.
    Static,
    /// `ET_DYN` without an interpreter: loaded at a chosen bias (static-PIE).
    StaticPie,
}

/// What to load and where to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    /// Static or static-PIE.
    pub kind: Kind,
    /// Entry point (before the load bias).
    pub entry: u64,
    /// Loadable segments in file order.
    pub segments: Vec<Segment>,
    /// The thread-local-storage template, if any.
    pub tls: Option<Segment>,
    /// Address of the program headers in memory (before the bias), for `AT_PHDR`.
    pub phdr_vaddr: u64,
    /// Size of one program header (`AT_PHENT`).
    pub phent: u16,
    /// Number of program headers (`AT_PHNUM`).
    pub phnum: u16,
    /// Whether `PT_GNU_STACK` asks for an executable stack.
    pub exec_stack: bool,
}

impl ElfImage {
    /// Lowest and highest page-aligned addresses of all segments (before the bias).
    pub fn span(&self) -> (u64, u64) {
        let lo = self
            .segments
            .iter()
            .map(|s| s.page_span().0)
            .min()
            .unwrap_or(0);
        let hi = self
            .segments
            .iter()
            .map(|s| s.page_span().1)
            .max()
            .unwrap_or(0);
        (lo, hi)
    }
}

/// Why a file cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// No ELF magic.
    NotElf,
    /// Not a 64-bit little-endian x86_64 file.
    WrongArchitecture,
    /// Neither an executable nor a position-independent executable.
    NotExecutable,
    /// Has a `PT_INTERP`: needs a dynamic loader.
    DynamicallyLinked,
    /// Program headers are malformed or outside the file.
    BadProgramHeaders,
    /// A segment's file contents lie outside the file, or `file_size > mem_size`.
    BadSegment,
    /// Segments overlap, wrap around, or reach kernel addresses.
    BadLayout,
    /// Nothing to load.
    NoLoadableSegments,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ElfError::NotElf => "not an ELF file",
            ElfError::WrongArchitecture => "not a 64-bit x86_64 ELF file",
            ElfError::NotExecutable => "not an executable (ET_EXEC or static-PIE ET_DYN)",
            ElfError::DynamicallyLinked => {
                "dynamically linked (has PT_INTERP); only static and static-PIE programs run"
            }
            ElfError::BadProgramHeaders => "malformed program headers",
            ElfError::BadSegment => "a segment's contents lie outside the file",
            ElfError::BadLayout => "segments overlap or leave the user address range",
            ElfError::NoLoadableSegments => "no loadable segments",
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses and checks an executable.
pub fn parse(file: &[u8]) -> Result<ElfImage, ElfError> {
    if file.len() < 64 || &file[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if file[4] != 2 || file[5] != 1 || u16_at(file, 18) != Some(EM_X86_64) {
        return Err(ElfError::WrongArchitecture);
    }
    let kind = match u16_at(file, 16) {
        Some(ET_EXEC) => Kind::Static,
        Some(ET_DYN) => Kind::StaticPie,
        _ => return Err(ElfError::NotExecutable),
    };
    let entry = u64_at(file, 24).ok_or(ElfError::NotElf)?;
    let phoff = u64_at(file, 32).ok_or(ElfError::NotElf)?;
    let phent = u16_at(file, 54).ok_or(ElfError::NotElf)?;
    let phnum = u16_at(file, 56).ok_or(ElfError::NotElf)?;
    if usize::from(phent) < 56 || phnum == 0 {
        return Err(ElfError::BadProgramHeaders);
    }
    let table_len = u64::from(phent) * u64::from(phnum);
    let table_end = phoff
        .checked_add(table_len)
        .ok_or(ElfError::BadProgramHeaders)?;
    if table_end > file.len() as u64 {
        return Err(ElfError::BadProgramHeaders);
    }
    let mut segments = Vec::new();
    let mut tls = None;
    let mut phdr_vaddr = None;
    let mut exec_stack = false;
    for i in 0..usize::from(phnum) {
        let at = phoff as usize + i * usize::from(phent);
        let kind = u32_at(file, at).ok_or(ElfError::BadProgramHeaders)?;
        let flags = u32_at(file, at + 4).ok_or(ElfError::BadProgramHeaders)?;
        let segment = Segment {
            file_offset: u64_at(file, at + 8).ok_or(ElfError::BadProgramHeaders)?,
            vaddr: u64_at(file, at + 16).ok_or(ElfError::BadProgramHeaders)?,
            file_size: u64_at(file, at + 32).ok_or(ElfError::BadProgramHeaders)?,
            mem_size: u64_at(file, at + 40).ok_or(ElfError::BadProgramHeaders)?,
            perms: Perms {
                exec: flags & 1 != 0,
                write: flags & 2 != 0,
                read: flags & 4 != 0,
            },
        };
        match kind {
            PT_INTERP => return Err(ElfError::DynamicallyLinked),
            PT_LOAD | PT_TLS => {
                let file_end = segment
                    .file_offset
                    .checked_add(segment.file_size)
                    .ok_or(ElfError::BadSegment)?;
                if file_end > file.len() as u64 || segment.file_size > segment.mem_size {
                    return Err(ElfError::BadSegment);
                }
                let mem_end = segment
                    .vaddr
                    .checked_add(segment.mem_size)
                    .ok_or(ElfError::BadLayout)?;
                if mem_end > USER_LIMIT {
                    return Err(ElfError::BadLayout);
                }
                if kind == PT_LOAD {
                    if segment.mem_size > 0 {
                        segments.push(segment);
                    }
                } else {
                    tls = Some(segment);
                }
            }
            PT_PHDR => phdr_vaddr = Some(segment.vaddr),
            PT_GNU_STACK => exec_stack = segment.perms.exec,
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegments);
    }
    // Segments must not overlap (page-granular overlaps of adjacent segments are allowed only
    // where they share a page boundary region, as linkers emit them in address order).
    let mut sorted: Vec<&Segment> = segments.iter().collect();
    sorted.sort_by_key(|s| s.vaddr);
    for pair in sorted.windows(2) {
        if pair[0].vaddr + pair[0].mem_size > pair[1].vaddr {
            return Err(ElfError::BadLayout);
        }
    }
    // Without PT_PHDR, the headers are found inside the segment that maps file offset phoff.
    let phdr_vaddr = match phdr_vaddr {
        Some(v) => v,
        None => segments
            .iter()
            .find(|s| s.file_offset <= phoff && table_end <= s.file_offset + s.file_size)
            .map_or(0, |s| s.vaddr + (phoff - s.file_offset)),
    };
    Ok(ElfImage {
        kind,
        entry,
        segments,
        tls,
        phdr_vaddr,
        phent,
        phnum,
        exec_stack,
    })
}
