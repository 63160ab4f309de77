//! The hypercall handlers: every parameter block is read from guest memory field by field and
//! checked; a bad block gets an error status (or a warning), never a VMM failure.

use std::mem::offset_of;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use k42_paravirt::{self as pv, status, BootStage, Hypercall, ReportKind};

use crate::vm::{StartRequest, VmExit, VmShared};

/// What the guest reported through `TestReport`.
#[derive(Debug, Default)]
pub struct KtestLog {
    /// The announced number of tests, if a plan came.
    pub planned: Option<u64>,
    /// Names of passed tests.
    pub passed: Vec<String>,
    /// Names of failed tests.
    pub failed: Vec<String>,
}

impl KtestLog {
    /// `Ok(None)` when no tests ran, `Ok(Some(summary))` when every planned result arrived,
    /// `Err(problem)` when some are missing.
    pub fn verdict(&self) -> Result<Option<String>, String> {
        let Some(planned) = self.planned else {
            return Ok(None);
        };
        let reported = (self.passed.len() + self.failed.len()) as u64;
        if reported < planned {
            return Err(format!(
                "ktests: only {reported} of {planned} planned results were reported; the guest stopped before finishing its tests"
            ));
        }
        Ok(Some(format!(
            "ktests: {} of {planned} passed, {} failed",
            self.passed.len(),
            self.failed.len()
        )))
    }
}

fn read_u32(mem: &GuestMemoryMmap, gpa: u64) -> Option<u32> {
    mem.read_obj(GuestAddress(gpa)).ok()
}

fn read_u64(mem: &GuestMemoryMmap, gpa: u64) -> Option<u64> {
    mem.read_obj(GuestAddress(gpa)).ok()
}

fn write_status(mem: &GuestMemoryMmap, gpa: u64, value: i32) {
    // The block was readable, so this only fails if the guest raced us into unmapped memory.
    let _ = mem.write_obj(value, GuestAddress(gpa));
}

fn read_bytes(mem: &GuestMemoryMmap, gpa: u64, len: u32) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    mem.read_slice(&mut buf, GuestAddress(gpa)).ok()?;
    Some(buf)
}

/// Handles hypercall `call` with 32-bit argument `value` from vCPU `vcpu`; returns an exit
/// reason when the VM must stop.
pub fn handle(shared: &VmShared, vcpu: usize, call: Hypercall, value: u32) -> Option<VmExit> {
    let mem = &shared.mem;
    let block = u64::from(value);
    match call {
        Hypercall::Nop => None,
        Hypercall::BootStage => {
            match BootStage::from_raw(value) {
                Some(stage) => shared.timeline.mark(stage.name()),
                None => shared.timeline.mark(&format!("unknown boot stage {value}")),
            }
            None
        }
        Hypercall::Shutdown => {
            let code = read_u32(mem, block + offset_of!(pv::Shutdown, exit_code) as u64);
            match code {
                Some(code) => Some(VmExit::Shutdown(code)),
                None => Some(VmExit::Failed(format!(
                    "vCPU {vcpu} asked to shut down with a parameter block at {block:#x}, outside guest memory"
                ))),
            }
        }
        Hypercall::ConsoleWrite => {
            let status_at = block + offset_of!(pv::ConsoleWrite, status) as u64;
            let (Some(buf), Some(len)) = (
                read_u64(mem, block + offset_of!(pv::ConsoleWrite, buf_gpa) as u64),
                read_u32(mem, block + offset_of!(pv::ConsoleWrite, len) as u64),
            ) else {
                warn_bad_block(vcpu, call, block);
                return None;
            };
            if len > pv::CONSOLE_WRITE_MAX {
                write_status(mem, status_at, status::INVALID);
                return None;
            }
            match read_bytes(mem, buf, len) {
                Some(bytes) => {
                    shared.console_write(&bytes);
                    write_status(mem, status_at, status::OK);
                }
                None => write_status(mem, status_at, status::FAULT),
            }
            None
        }
        Hypercall::TestReport => {
            handle_report(shared, vcpu, block);
            None
        }
        Hypercall::CpuStart => {
            handle_cpu_start(shared, vcpu, block);
            None
        }
    }
}

fn warn_bad_block(vcpu: usize, call: Hypercall, block: u64) {
    eprintln!("k42vm: vCPU {vcpu} made hypercall {call:?} with a parameter block at {block:#x}, outside guest memory; ignored");
}

fn handle_report(shared: &VmShared, vcpu: usize, block: u64) {
    let mem = &shared.mem;
    let field = |offset: usize| block + offset as u64;
    let status_at = field(offset_of!(pv::TestReport, status));
    let (Some(kind), Some(name_gpa), Some(name_len), Some(value)) = (
        read_u32(mem, field(offset_of!(pv::TestReport, kind))),
        read_u64(mem, field(offset_of!(pv::TestReport, name_gpa))),
        read_u32(mem, field(offset_of!(pv::TestReport, name_len))),
        read_u64(mem, field(offset_of!(pv::TestReport, value))),
    ) else {
        warn_bad_block(vcpu, Hypercall::TestReport, block);
        return;
    };
    let Some(kind) = ReportKind::from_raw(kind) else {
        write_status(mem, status_at, status::INVALID);
        return;
    };
    if name_len > pv::TEST_NAME_MAX {
        write_status(mem, status_at, status::INVALID);
        return;
    }
    let Some(name) = read_bytes(mem, name_gpa, name_len) else {
        write_status(mem, status_at, status::FAULT);
        return;
    };
    let Ok(name) = String::from_utf8(name) else {
        write_status(mem, status_at, status::INVALID);
        return;
    };
    let line = {
        let mut log = shared.ktests.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            ReportKind::Plan => {
                log.planned = Some(value);
                format!("ktest plan {value}\n")
            }
            ReportKind::Pass => {
                log.passed.push(name.clone());
                format!("ktest pass {name}\n")
            }
            ReportKind::Fail => {
                log.failed.push(name.clone());
                format!("ktest FAIL {name} ({value:#x})\n")
            }
            ReportKind::Metric => format!("metric {name} {value}\n"),
        }
    };
    shared.console_write(line.as_bytes());
    write_status(mem, status_at, status::OK);
}

fn handle_cpu_start(shared: &VmShared, vcpu: usize, block: u64) {
    let mem = &shared.mem;
    let field = |offset: usize| block + offset as u64;
    let status_at = field(offset_of!(pv::CpuStart, status));
    let (Some(cpu), Some(rip), Some(rsp), Some(cr3), Some(arg)) = (
        read_u32(mem, field(offset_of!(pv::CpuStart, cpu))),
        read_u64(mem, field(offset_of!(pv::CpuStart, rip))),
        read_u64(mem, field(offset_of!(pv::CpuStart, rsp))),
        read_u64(mem, field(offset_of!(pv::CpuStart, cr3))),
        read_u64(mem, field(offset_of!(pv::CpuStart, arg))),
    ) else {
        warn_bad_block(vcpu, Hypercall::CpuStart, block);
        return;
    };
    let canonical = |a: u64| !(0x0000_8000_0000_0000..0xffff_8000_0000_0000).contains(&a);
    let valid = cpu != 0
        && (cpu as usize) < shared.ap_start.len()
        && canonical(rip)
        && canonical(rsp)
        && cr3 % 4096 == 0
        && cr3 < shared.mem_size.min(crate::layout::MMIO_HOLE_START);
    if !valid {
        write_status(mem, status_at, status::INVALID);
        return;
    }
    let sender = shared.ap_start[cpu as usize]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match sender {
        Some(tx) => {
            let ok = tx.send(StartRequest { rip, rsp, cr3, arg }).is_ok();
            write_status(
                mem,
                status_at,
                if ok { status::OK } else { status::INVALID },
            );
        }
        None => write_status(mem, status_at, status::BUSY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_requires_every_planned_result() {
        let mut log = KtestLog::default();
        assert_eq!(log.verdict(), Ok(None));
        log.planned = Some(3);
        log.passed = vec!["a".into(), "b".into()];
        assert!(log.verdict().unwrap_err().contains("only 2 of 3"));
        log.failed = vec!["c".into()];
        assert_eq!(
            log.verdict(),
            Ok(Some("ktests: 2 of 3 passed, 1 failed".into()))
        );
    }
}
