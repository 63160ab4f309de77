//! Guest-physical layout and what k42vm writes there before the first instruction: RAM regions
//! around the MMIO hole, the kernel, the initrd, the PVH start info, and the ACPI tables.
//!
//! ```text
//! 0x0000_0500  boot GDTs (32-bit PVH entry; 64-bit secondary-CPU start)
//! 0x0000_6000  hvm_start_info, module list
//! 0x0000_7000  memory map
//! 0x0000_8000  free (the guest's INIT/SIPI trampoline page)
//! 0x0002_0000  command line (4 KiB)
//! 0x000e_0000  ACPI: RSDP, XSDT, MADT
//! 0x0010_0000  kernel (PVH ELF, loaded at its physical addresses)
//! top of low RAM: initrd
//! 3 GiB - 4 GiB: MMIO hole: virtio-mmio windows from 0xd000_0000 (4 KiB each), IOAPIC, LAPIC
//! 4 GiB -      : the rest of RAM
//! ```

use std::io::Cursor;

use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{Result, VmmError};

/// Start of the MMIO hole below 4 GiB.
pub const MMIO_HOLE_START: u64 = 3 << 30;
/// End of the MMIO hole.
pub const MMIO_HOLE_END: u64 = 4 << 30;
/// Address of the 32-bit boot GDT (PVH entry).
pub const GDT32_ADDR: u64 = 0x500;
/// Address of the 64-bit GDT (secondary CPUs started in long mode).
pub const GDT64_ADDR: u64 = 0x540;
/// Address of `hvm_start_info`.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Address of the PVH module list.
pub const MODLIST_ADDR: u64 = 0x6100;
/// Address of the memory map.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Address of the kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line, NUL included.
pub const CMDLINE_MAX: usize = 4096;
/// Address of the ACPI RSDP (in the legacy BIOS area, where scanners look too).
pub const RSDP_ADDR: u64 = 0xe_0000;
const XSDT_ADDR: u64 = 0xe_0100;
const MADT_ADDR: u64 = 0xe_0200;
/// Lowest address the kernel may be loaded at.
pub const KERNEL_MIN_ADDR: u64 = 0x10_0000;
/// Guest-physical address of the IOAPIC.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Guest-physical address of the local APIC.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// First virtio-mmio window (devices get consecutive 4 KiB windows from here).
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// End of the area for virtio-mmio windows (well below the IOAPIC).
pub const VIRTIO_MMIO_END: u64 = 0xe000_0000;
/// First IOAPIC pin (GSI) for virtio devices: after COM1's 4.
pub const VIRTIO_IRQ_FIRST: u32 = 5;
/// Last IOAPIC pin (GSI) for virtio devices: KVM's in-kernel IOAPIC has 24 pins.
pub const VIRTIO_IRQ_LAST: u32 = 23;

// The virtio area lies in the MMIO hole, below the IOAPIC, in whole pages; its lines come after
// COM1's GSI 4.
const _: () = {
    assert!(VIRTIO_MMIO_START >= MMIO_HOLE_START && VIRTIO_MMIO_END <= IOAPIC_ADDR as u64);
    assert!(VIRTIO_MMIO_START & 0xfff == 0 && VIRTIO_MMIO_END & 0xfff == 0);
    assert!(VIRTIO_IRQ_FIRST > 4 && VIRTIO_IRQ_LAST < 24);
};

/// The command line the guest gets: the user's, then one `virtio_mmio.device=` word per device.
pub fn guest_cmdline(user: &str, announcements: &[String]) -> String {
    let mut words: Vec<&str> = Vec::new();
    if !user.trim().is_empty() {
        words.push(user.trim());
    }
    words.extend(announcements.iter().map(String::as_str));
    words.join(" ")
}

/// The RAM regions for `size` bytes of guest memory, skipping the MMIO hole.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_HOLE_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_HOLE_START as usize),
            (
                GuestAddress(MMIO_HOLE_END),
                (size - MMIO_HOLE_START) as usize,
            ),
        ]
    }
}

/// End of RAM below the hole.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_HOLE_START)
}

/// Where the loaded kernel starts executing.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// 32-bit PVH entry point.
    pub entry: u64,
    /// End of the highest segment.
    pub end: u64,
}

/// Highest physical end of the ELF's PT_LOAD segments, checking headers are inside the file.
fn elf_load_end(image: &[u8]) -> std::result::Result<u64, String> {
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        image
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if image.len() < 64 || &image[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if image[4] != 2 || image[5] != 1 || u16_at(18) != Some(62) {
        return Err("not a 64-bit little-endian x86_64 ELF".into());
    }
    let phoff = u64_at(32).ok_or("truncated ELF header")? as usize;
    let phentsize = u16_at(54).ok_or("truncated ELF header")? as usize;
    let phnum = u16_at(56).ok_or("truncated ELF header")? as usize;
    if phentsize < 56 {
        return Err("bad program header size".into());
    }
    let mut end = 0u64;
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or("bad program header offset")?;
        let kind = u32_at(at).ok_or("program headers run past the end of the file")?;
        if kind != 1 {
            continue;
        }
        let offset = u64_at(at + 8).ok_or("truncated program header")?;
        let paddr = u64_at(at + 24).ok_or("truncated program header")?;
        let filesz = u64_at(at + 32).ok_or("truncated program header")?;
        let memsz = u64_at(at + 40).ok_or("truncated program header")?;
        if offset
            .checked_add(filesz)
            .is_none_or(|e| e > image.len() as u64)
        {
            return Err("a segment runs past the end of the file (truncated image?)".into());
        }
        if filesz > 0 && paddr < KERNEL_MIN_ADDR {
            return Err(format!("a segment loads at {paddr:#x}, below 1 MiB"));
        }
        end = end.max(
            paddr
                .checked_add(memsz)
                .ok_or("segment address overflows")?,
        );
    }
    if end == 0 {
        return Err("no loadable segments".into());
    }
    Ok(end)
}

/// Loads a PVH ELF kernel into guest memory.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    image: &[u8],
    name: &str,
    mem_size: u64,
) -> Result<LoadedKernel> {
    let bad = |reason: String| VmmError::BadKernel {
        name: name.to_string(),
        reason,
    };
    let end = elf_load_end(image).map_err(bad)?;
    if end > low_ram_end(mem_size) {
        return Err(VmmError::MemoryTooSmall(format!(
            "{name} needs guest memory up to {:#x} ({} MiB) but --memory gives {} MiB; raise --memory",
            end,
            end.div_ceil(1 << 20),
            mem_size >> 20
        )));
    }
    let result = Elf::load(
        mem,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(KERNEL_MIN_ADDR)),
    )
    .map_err(|e| bad(e.to_string()))?;
    match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok(LoadedKernel {
            entry: entry.raw_value(),
            end,
        }),
        _ => Err(bad(
            "it has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note)".into(),
        )),
    }
}

/// Places the initrd at the top of low RAM, above the kernel. Returns its address.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &[u8],
    kernel_end: u64,
    mem_size: u64,
) -> Result<u64> {
    let top = low_ram_end(mem_size);
    let size = initrd.len() as u64;
    let start = top
        .checked_sub(size)
        .map(|s| s & !0xfff)
        .filter(|&s| s >= kernel_end.next_multiple_of(4096) + (8 << 20));
    let start = start.ok_or_else(|| {
        VmmError::MemoryTooSmall(format!(
            "the initrd ({} KiB) does not fit in guest memory below {} MiB beside the kernel and its heap; raise --memory",
            size.div_ceil(1024),
            top >> 20
        ))
    })?;
    mem.write_slice(initrd, GuestAddress(start))
        .map_err(|e| VmmError::Memory(e.to_string()))?;
    Ok(start)
}

/// Writes the command line, memory map, module list and `hvm_start_info`.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    cmdline: &str,
    initrd: Option<(u64, u64)>,
) -> Result<()> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(VmmError::Config(format!(
            "the kernel command line is {} bytes; the limit is {}",
            cmdline.len(),
            CMDLINE_MAX - 1
        )));
    }
    if cmdline.contains('\0') {
        return Err(VmmError::Config(
            "the kernel command line contains a NUL byte".into(),
        ));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| VmmError::Memory(e.to_string()))?;

    let entry = |addr: u64, size: u64, kind: u32| hvm_memmap_table_entry {
        addr,
        size,
        type_: kind,
        reserved: 0,
    };
    let mut memmap = vec![
        entry(0, 0x9_fc00, k42_paravirt::E820_RAM),
        entry(0x9_fc00, 0x10_0000 - 0x9_fc00, k42_paravirt::E820_RESERVED),
        entry(
            0x10_0000,
            low_ram_end(mem_size) - 0x10_0000,
            k42_paravirt::E820_RAM,
        ),
    ];
    if mem_size > MMIO_HOLE_START {
        memmap.push(entry(
            MMIO_HOLE_END,
            mem_size - MMIO_HOLE_START,
            k42_paravirt::E820_RAM,
        ));
    }
    let start_info = hvm_start_info {
        magic: k42_paravirt::HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: RSDP_ADDR,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if initrd.is_some() { MODLIST_ADDR } else { 0 },
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(START_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            cmdline_paddr: 0,
            reserved: 0,
        };
        params.set_modules(&[module], GuestAddress(MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|e| VmmError::Memory(format!("writing the PVH start info: {e}")))
}

/// Writes the boot GDTs the vCPUs start with.
pub fn write_gdts(mem: &GuestMemoryMmap) -> Result<()> {
    // null, 32-bit flat code (0x08), flat data (0x10)
    let gdt32: [u64; 3] = [0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    // null, 64-bit code (0x08), flat data (0x10)
    let gdt64: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    for (addr, gdt) in [(GDT32_ADDR, gdt32), (GDT64_ADDR, gdt64)] {
        for (i, d) in gdt.iter().enumerate() {
            mem.write_obj(*d, GuestAddress(addr + 8 * i as u64))
                .map_err(|e| VmmError::Memory(e.to_string()))?;
        }
    }
    Ok(())
}

/// Writes RSDP, XSDT and a MADT listing `cpus` local APICs (IDs 0..cpus) and the IOAPIC.
pub fn write_acpi(mem: &GuestMemoryMmap, cpus: u8) -> Result<()> {
    const OEM_ID: [u8; 6] = *b"K42VM ";
    const OEM_TABLE: [u8; 8] = *b"K42VMTBL";
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE,
        1,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for id in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(cpus, IOAPIC_ADDR, 0));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, 1);
    xsdt.add_entry(MADT_ADDR);
    let rsdp = Rsdp::new(OEM_ID, XSDT_ADDR);
    for (addr, table) in [
        (RSDP_ADDR, &rsdp as &dyn Aml),
        (XSDT_ADDR, &xsdt),
        (MADT_ADDR, &madt),
    ] {
        let mut bytes = Vec::new();
        table.to_aml_bytes(&mut bytes);
        mem.write_slice(&bytes, GuestAddress(addr))
            .map_err(|e| VmmError::Memory(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&ram_regions(size)).unwrap()
    }

    #[test]
    fn regions_skip_the_mmio_hole() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        let r = ram_regions(4 << 30);
        assert_eq!(
            r,
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
        assert_eq!(low_ram_end(4 << 30), 3 << 30);
    }

    #[test]
    fn embedded_kernel_loads_with_its_pvh_entry() {
        let mem = memory(64 << 20);
        let k = load_kernel(&mem, k42_images::DEFAULT_KERNEL, "kernel", 64 << 20).unwrap();
        assert!(k.entry >= KERNEL_MIN_ADDR && k.entry < k.end);
        let first: u8 = mem.read_obj(GuestAddress(k.entry)).unwrap();
        assert_ne!(first, 0, "code was copied to the entry point");
    }

    #[test]
    fn bad_images_are_rejected_with_a_reason() {
        let mem = memory(64 << 20);
        let err = load_kernel(&mem, b"hello world", "junk", 64 << 20).unwrap_err();
        assert!(err.to_string().contains("not an ELF"), "{err}");
        let truncated = &k42_images::DEFAULT_KERNEL[..2000];
        let err = load_kernel(&mem, truncated, "cut", 64 << 20).unwrap_err();
        assert!(
            err.to_string().contains("truncated") || err.to_string().contains("past the end"),
            "{err}"
        );
        // An ELF without the PVH note.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let err = load_kernel(&mem, &exe, "exe", 64 << 20).unwrap_err();
        assert!(matches!(err, VmmError::BadKernel { .. }), "{err}");
    }

    #[test]
    fn initrd_goes_high_and_must_fit() {
        let mem = memory(64 << 20);
        let at = load_initrd(&mem, &[7u8; 10000], 0x20_0000, 64 << 20).unwrap();
        assert_eq!(at % 4096, 0);
        assert!(at + 10000 <= 64 << 20);
        let b: u8 = mem.read_obj(GuestAddress(at + 9999)).unwrap();
        assert_eq!(b, 7);
        let err = load_initrd(&mem, &vec![0u8; 60 << 20], 0x20_0000, 64 << 20).unwrap_err();
        assert!(matches!(err, VmmError::MemoryTooSmall(_)));
    }

    #[test]
    fn start_info_describes_memory_and_modules() {
        let size = 4u64 << 30;
        let mem = memory(size);
        write_start_info(&mem, size, "k42.ktest", Some((0x100_0000, 4096))).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(START_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, k42_paravirt::HVM_START_MAGIC);
        assert_eq!(info.memmap_entries, 4);
        assert_eq!(info.nr_modules, 1);
        let high: hvm_memmap_table_entry =
            mem.read_obj(GuestAddress(MEMMAP_ADDR + 3 * 24)).unwrap();
        assert_eq!((high.addr, high.size), (4 << 30, 1 << 30));
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(MODLIST_ADDR)).unwrap();
        assert_eq!((module.paddr, module.size), (0x100_0000, 4096));
        let mut cmd = [0u8; 10];
        mem.read_slice(&mut cmd, GuestAddress(CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&cmd, b"k42.ktest\0");
        assert!(write_start_info(&mem, size, &"x".repeat(5000), None).is_err());
    }

    #[test]
    fn guest_cmdline_appends_device_announcements() {
        let devices = vec![
            "virtio_mmio.device=4K@0xd0000000:5".to_string(),
            "virtio_mmio.device=4K@0xd0001000:6".to_string(),
        ];
        assert_eq!(guest_cmdline("", &[]), "");
        assert_eq!(guest_cmdline("k42.ktest", &[]), "k42.ktest");
        assert_eq!(
            guest_cmdline(" k42.quiet k42.exit=3 ", &devices),
            "k42.quiet k42.exit=3 virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6"
        );
        assert_eq!(
            guest_cmdline("", &devices[..1]),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
        // What the guest reads back from memory is that line.
        let mem = memory(64 << 20);
        write_start_info(&mem, 64 << 20, &guest_cmdline("k42.quiet", &devices), None).unwrap();
        let mut cmd = vec![0u8; 200];
        mem.read_slice(&mut cmd, GuestAddress(CMDLINE_ADDR))
            .unwrap();
        let end = cmd.iter().position(|&b| b == 0).unwrap();
        assert_eq!(
            std::str::from_utf8(&cmd[..end]).unwrap(),
            "k42.quiet virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
    }

    #[test]
    fn linux_loader_start_info_matches_paravirt_layout() {
        assert_eq!(
            std::mem::size_of::<hvm_start_info>(),
            std::mem::size_of::<k42_paravirt::HvmStartInfo>()
        );
        assert_eq!(
            std::mem::size_of::<hvm_memmap_table_entry>(),
            std::mem::size_of::<k42_paravirt::HvmMemmapEntry>()
        );
        assert_eq!(
            std::mem::size_of::<hvm_modlist_entry>(),
            std::mem::size_of::<k42_paravirt::HvmModlistEntry>()
        );
    }

    #[test]
    fn acpi_tables_have_valid_checksums_and_list_every_cpu() {
        let mem = memory(64 << 20);
        write_acpi(&mem, 8).unwrap();
        let sum = |addr: u64, len: usize| {
            let mut b = vec![0u8; len];
            mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
            b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
        };
        assert_eq!(sum(RSDP_ADDR, 20), 0);
        let madt_len: u32 = mem.read_obj(GuestAddress(MADT_ADDR + 4)).unwrap();
        assert_eq!(madt_len, 44 + 8 * 8 + 12);
        assert_eq!(sum(MADT_ADDR, madt_len as usize), 0);
        let xsdt_entry: u64 = mem.read_obj(GuestAddress(XSDT_ADDR + 36)).unwrap();
        assert_eq!(xsdt_entry, MADT_ADDR);
    }
}
