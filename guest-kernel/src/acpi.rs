//! CPU enumeration from the ACPI MADT (RSDP from `hvm_start_info`, or found in the BIOS area).

use crate::mm::phys_slice;

/// Most CPUs enumerated.
pub const MAX_ENUMERATED: usize = crate::percpu::MAX_CPUS;

/// The enabled CPUs' x2APIC IDs, in MADT order.
pub struct CpuList {
    ids: [u32; MAX_ENUMERATED],
    len: usize,
}

impl CpuList {
    /// The APIC IDs.
    pub fn apic_ids(&self) -> &[u32] {
        &self.ids[..self.len]
    }

    fn push(&mut self, id: u32) {
        if self.len < MAX_ENUMERATED && !self.apic_ids().contains(&id) {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from(read_u32(bytes, at)) | (u64::from(read_u32(bytes, at + 4)) << 32)
}

/// A whole ACPI table at `phys`, if its length and checksum are sane.
fn table(phys: u64) -> Option<&'static [u8]> {
    if phys == 0 || phys >= (4 << 30) {
        return None;
    }
    let header: &[u8] = phys_slice(phys, 36);
    let len = read_u32(header, 4) as usize;
    if !(36..=1 << 20).contains(&len) {
        return None;
    }
    let bytes: &'static [u8] = phys_slice(phys, len);
    checksum_ok(bytes).then_some(bytes)
}

/// Looks for the RSDP signature in the BIOS read-only area (for loaders that do not pass it).
fn scan_for_rsdp() -> u64 {
    let area: &[u8] = phys_slice(0xe_0000, 0x2_0000);
    (0..area.len() - 20)
        .step_by(16)
        .find(|&i| &area[i..i + 8] == b"RSD PTR " && checksum_ok(&area[i..i + 20]))
        .map_or(0, |i| 0xe_0000 + i as u64)
}

/// Enumerates CPUs from the MADT. `None` if there is no usable ACPI.
pub fn enumerate_cpus(rsdp_phys: u64) -> Option<CpuList> {
    let rsdp_phys = if rsdp_phys != 0 {
        rsdp_phys
    } else {
        scan_for_rsdp()
    };
    if rsdp_phys == 0 {
        return None;
    }
    let rsdp: &[u8] = phys_slice(rsdp_phys, 36);
    if &rsdp[0..8] != b"RSD PTR " || !checksum_ok(&rsdp[..20]) {
        return None;
    }
    let (root, entry_size) = if rsdp[15] >= 2 && read_u64(rsdp, 24) != 0 {
        (table(read_u64(rsdp, 24))?, 8)
    } else {
        (table(u64::from(read_u32(rsdp, 16)))?, 4)
    };
    let madt = (36..root.len()).step_by(entry_size).find_map(|at| {
        let phys = if entry_size == 8 {
            read_u64(root, at)
        } else {
            u64::from(read_u32(root, at))
        };
        table(phys).filter(|t| &t[0..4] == b"APIC")
    })?;
    let mut cpus = CpuList {
        ids: [0; MAX_ENUMERATED],
        len: 0,
    };
    let mut at = 44;
    while at + 2 <= madt.len() {
        let (kind, len) = (madt[at], madt[at + 1] as usize);
        if len < 2 || at + len > madt.len() {
            break;
        }
        match kind {
            // Processor local APIC: flags bit 0 = enabled.
            0 if len >= 8 && read_u32(madt, at + 4) & 1 != 0 => cpus.push(u32::from(madt[at + 3])),
            // Processor local x2APIC.
            9 if len >= 16 && read_u32(madt, at + 8) & 1 != 0 => cpus.push(read_u32(madt, at + 4)),
            _ => {}
        }
        at += len;
    }
    (cpus.len > 0).then_some(cpus)
}
