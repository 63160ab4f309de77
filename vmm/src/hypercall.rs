//! The hypercall handlers: every parameter block is read from guest memory field by field and
//! checked; a bad block gets an error status (or a warning), never a VMM failure.

use std::mem::offset_of;

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

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
        Hypercall::MemOps => {
            handle_mem_ops(mem, vcpu, block);
            None
        }
        Hypercall::WallClock => {
            if !write_wall_clock(mem, block) {
                warn_bad_block(vcpu, call, block);
            }
            None
        }
    }
}

/// Fills the [`pv::WallClock`] block at `block` with the host's time; false if the block is
/// not in guest memory.
fn write_wall_clock(mem: &GuestMemoryMmap, block: u64) -> bool {
    // A host clock before 1970 is reported as the epoch itself.
    let unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
    let at = GuestAddress(block + offset_of!(pv::WallClock, unix_ns) as u64);
    if mem.write_obj(unix_ns, at).is_err() {
        return false;
    }
    write_status(
        mem,
        block + offset_of!(pv::WallClock, status) as u64,
        status::OK,
    );
    true
}

/// Performs a [`pv::MemOps`] batch in order, stopping at the first invalid operation.
fn handle_mem_ops(mem: &GuestMemoryMmap, vcpu: usize, block: u64) {
    let field = |offset: usize| block + offset as u64;
    let status_at = field(offset_of!(pv::MemOps, status));
    let (Some(ops_gpa), Some(count)) = (
        read_u64(mem, field(offset_of!(pv::MemOps, ops_gpa))),
        read_u32(mem, field(offset_of!(pv::MemOps, count))),
    ) else {
        warn_bad_block(vcpu, Hypercall::MemOps, block);
        return;
    };
    let (done, status) = run_mem_ops(mem, ops_gpa, count);
    let _ = mem.write_obj(done, GuestAddress(field(offset_of!(pv::MemOps, done))));
    write_status(mem, status_at, status);
}

/// Runs `count` operations from the array at `ops_gpa`; returns (performed, status).
fn run_mem_ops(mem: &GuestMemoryMmap, ops_gpa: u64, count: u32) -> (u32, i32) {
    if count > pv::MEM_OPS_MAX {
        return (0, status::INVALID);
    }
    let op_size = std::mem::size_of::<pv::MemOp>() as u64;
    for i in 0..count {
        let at = ops_gpa.saturating_add(u64::from(i) * op_size);
        let (Some(dst), Some(src), Some(len)) = (
            read_u64(mem, at + offset_of!(pv::MemOp, dst) as u64),
            read_u64(mem, at + offset_of!(pv::MemOp, src) as u64),
            read_u64(mem, at + offset_of!(pv::MemOp, len) as u64),
        ) else {
            return (i, status::FAULT);
        };
        if len > pv::MEM_OP_LEN_MAX {
            return (i, status::INVALID);
        }
        let in_ram = |start: u64| {
            start.checked_add(len).is_some_and(|end| {
                len == 0
                    || mem.check_range(GuestAddress(start), len as usize, Permissions::ReadWrite)
                        && end > start
            })
        };
        if !in_ram(dst) || (src != pv::MEM_OP_ZERO && !in_ram(src)) {
            return (i, status::FAULT);
        }
        if src != pv::MEM_OP_ZERO && dst < src.saturating_add(len) && src < dst.saturating_add(len)
        {
            return (i, status::INVALID);
        }
        let result = if src == pv::MEM_OP_ZERO {
            zero_range(mem, dst, len)
        } else {
            copy_range(mem, dst, src, len)
        };
        if result.is_err() {
            return (i, status::FAULT);
        }
    }
    (count, status::OK)
}

const MEM_OP_CHUNK: usize = 64 * 1024;

fn zero_range(
    mem: &GuestMemoryMmap,
    dst: u64,
    len: u64,
) -> Result<(), vm_memory::GuestMemoryError> {
    let zeroes = [0u8; 4096];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeroes.len() as u64) as usize;
        mem.write_slice(&zeroes[..n], GuestAddress(dst + done))?;
        done += n as u64;
    }
    Ok(())
}

fn copy_range(
    mem: &GuestMemoryMmap,
    dst: u64,
    src: u64,
    len: u64,
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut buf = vec![0u8; MEM_OP_CHUNK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        mem.read_slice(&mut buf[..n], GuestAddress(src + done))?;
        mem.write_slice(&buf[..n], GuestAddress(dst + done))?;
        done += n as u64;
    }
    Ok(())
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

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn put_op(mem: &GuestMemoryMmap, at: u64, dst: u64, src: u64, len: u64) {
        for (i, v) in [dst, src, len].into_iter().enumerate() {
            mem.write_obj(v, GuestAddress(at + 8 * i as u64)).unwrap();
        }
    }

    #[test]
    fn wall_clock_is_the_host_time_and_a_bad_block_is_refused() {
        let mem = memory();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        mem.write_obj(-1i32, GuestAddress(0x1000 + 8)).unwrap();
        assert!(write_wall_clock(&mem, 0x1000));
        let got: u64 = mem.read_obj(GuestAddress(0x1000)).unwrap();
        let status: i32 = mem.read_obj(GuestAddress(0x1000 + 8)).unwrap();
        assert!(
            got >= before && got - before < 60_000_000_000,
            "{got} vs {before}"
        );
        assert_eq!(status, status::OK);
        assert!(!write_wall_clock(&mem, 1 << 40), "outside guest memory");
    }

    #[test]
    fn mem_ops_copy_and_zero_in_order() {
        let mem = memory();
        mem.write_slice(&[7u8; 100], GuestAddress(0x2000)).unwrap();
        mem.write_slice(&[9u8; 64], GuestAddress(0x4000)).unwrap();
        put_op(&mem, 0x100, 0x3000, 0x2000, 100);
        put_op(&mem, 0x118, 0x4000, pv::MEM_OP_ZERO, 32);
        assert_eq!(run_mem_ops(&mem, 0x100, 2), (2, status::OK));
        let mut out = [0u8; 100];
        mem.read_slice(&mut out, GuestAddress(0x3000)).unwrap();
        assert_eq!(out, [7u8; 100]);
        let mut zeroed = [1u8; 64];
        mem.read_slice(&mut zeroed, GuestAddress(0x4000)).unwrap();
        assert_eq!(&zeroed[..32], &[0u8; 32]);
        assert_eq!(&zeroed[32..], &[9u8; 32]);
    }

    #[test]
    fn mem_ops_stop_at_the_first_bad_operation() {
        let mem = memory();
        put_op(&mem, 0x100, 0x3000, pv::MEM_OP_ZERO, 16);
        put_op(&mem, 0x118, 0xfff0, pv::MEM_OP_ZERO, 0x100); // runs past RAM
        put_op(&mem, 0x130, 0x3000, pv::MEM_OP_ZERO, 16);
        assert_eq!(run_mem_ops(&mem, 0x100, 3), (1, status::FAULT));
        put_op(&mem, 0x118, 0x3000, 0x3008, 16); // overlapping copy
        assert_eq!(run_mem_ops(&mem, 0x100, 3), (1, status::INVALID));
        put_op(&mem, 0x118, u64::MAX - 4, pv::MEM_OP_ZERO, 16); // wraps
        assert_eq!(run_mem_ops(&mem, 0x100, 3), (1, status::FAULT));
        assert_eq!(
            run_mem_ops(&mem, 0x100, pv::MEM_OPS_MAX + 1),
            (0, status::INVALID)
        );
        assert_eq!(run_mem_ops(&mem, 0xfff0, 16), (0, status::FAULT)); // array runs out of RAM
    }

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
