//! Hypercall bench: k42vm's no-op hypercall round trip, measured by the guest
//! (`k42.bench=hypercall`), against a bare KVM I/O-port exit measured in the same run by a
//! minimal VMM and guest written here on the rust-vmm crates. Goal (DESIGN.md): ours/bare <= 1.2.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use k42_benches::{
    k42vm_binary, parse_metric, ratio, require_kvm, run_timed, summarize, tail, verdict, Summary,
};

/// k42vm runs (the guest itself times 2000 hypercalls per run).
const RUNS: usize = 5;
/// Port exits per bare-KVM run: ~10 µs each on an emulating KVM, ~0.2 s a run.
const BARE_EXITS: u32 = 20_000;
const GOAL: f64 = 1.2;
const METRIC: &str = "hypercall_roundtrip_ns";

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hypercall bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    require_kvm()?;
    let k42vm = k42vm_binary()?;
    let mut bare_vm = bare::BareVm::new().map_err(|e| format!("bare KVM guest: {e}"))?;

    println!("hypercall: {RUNS} runs each, interleaved");
    println!(
        "  ours: {} run --cmdline \"k42.quiet k42.bench=hypercall\" (guest times 2000 no-op hypercalls)",
        k42vm.display()
    );
    println!(
        "  peer: bare KVM, real-mode guest doing {BARE_EXITS} `out` to port {:#x}, host re-enters at once",
        bare::PORT
    );

    // Warm-up (unmeasured): one short bare run.
    bare_vm
        .run(1000)
        .map_err(|e| format!("bare KVM guest: {e}"))?;

    let mut ours = Vec::with_capacity(RUNS);
    let mut peer = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        ours.push(k42vm_once(&k42vm)?);
        let elapsed = bare_vm
            .run(BARE_EXITS)
            .map_err(|e| format!("bare KVM guest: {e}"))?;
        peer.push(elapsed.as_secs_f64() * 1e9 / f64::from(BARE_EXITS));
    }
    let ours = summarize(&ours).ok_or("no k42vm samples")?;
    let peer = summarize(&peer).ok_or("no bare KVM samples")?;

    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>10}",
        "(ns per round trip)", "median", "min", "max"
    );
    row("k42vm no-op hypercall (guest-timed)", &ours);
    row("bare KVM I/O-port exit (host-timed)", &peer);
    let r = ratio(ours.median, peer.median).ok_or("bare KVM median is zero")?;
    println!();
    println!("ratio k42vm/bare: {r:.2} (medians)");
    println!(
        "goal (DESIGN.md): k42vm/bare <= {GOAL}: {}",
        verdict(r <= GOAL)
    );
    Ok(())
}

fn row(what: &str, s: &Summary) {
    println!(
        "{what:<40} {:>10.0} {:>10.0} {:>10.0}",
        s.median, s.min, s.max
    );
}

fn k42vm_once(k42vm: &Path) -> Result<f64, String> {
    let mut cmd = Command::new(k42vm);
    cmd.args(["run", "--cmdline", "k42.quiet k42.bench=hypercall"]);
    let run = run_timed(&mut cmd, Duration::from_secs(60))?;
    if !run.status.success() {
        return Err(format!(
            "k42vm run failed ({}); stderr:\n{}",
            run.status,
            tail(&run.stderr, 10)
        ));
    }
    parse_metric(&run.stdout, METRIC).ok_or_else(|| {
        format!(
            "k42vm printed no `metric {METRIC} <ns>` line; stdout:\n{}",
            tail(&run.stdout, 10)
        )
    })
}

/// A minimal VMM: one vCPU in real mode running `out` in a loop, the host re-entering at once.
mod bare {
    use std::time::{Duration, Instant};

    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    /// The port the guest writes: k42's no-op hypercall port, so both sides exit on the same port.
    pub const PORT: u16 = k42_paravirt::Hypercall::Nop.port();
    const MEM_SIZE: usize = 0x10000;
    const CODE_ADDR: u64 = 0x1000;
    /// Offset of the 32-bit loop count inside [`code`].
    const COUNT_OFFSET: usize = 2;
    /// Linux errno values KVM_RUN may return that just mean "call again".
    const EINTR: i32 = 4;
    const EAGAIN: i32 = 11;

    /// The 16-bit guest: `mov ecx, N; mov dx, PORT; xor eax, eax; 1: out dx, eax; dec ecx;
    /// jnz 1b; hlt`.
    fn code(count: u32) -> Vec<u8> {
        let mut c = vec![0x66, 0xb9, 0, 0, 0, 0]; // mov ecx, imm32
        c[COUNT_OFFSET..COUNT_OFFSET + 4].copy_from_slice(&count.to_le_bytes());
        c.push(0xba); // mov dx, imm16
        c.extend_from_slice(&PORT.to_le_bytes());
        c.extend_from_slice(&[0x66, 0x31, 0xc0]); // xor eax, eax
        c.extend_from_slice(&[0x66, 0xef]); // out dx, eax
        c.extend_from_slice(&[0x66, 0x49]); // dec ecx
        c.extend_from_slice(&[0x75, 0xfa]); // jnz -6 (back to out)
        c.push(0xf4); // hlt
        c
    }

    /// The VM, its memory and its one vCPU. Fields drop in order: the vCPU and VM file
    /// descriptors are closed before the guest memory is unmapped.
    pub struct BareVm {
        vcpu: VcpuFd,
        _vm: VmFd,
        _kvm: Kvm,
        mem: GuestMemoryMmap,
    }

    impl BareVm {
        /// Creates the VM with 64 KiB of RAM at guest address 0 and one vCPU.
        pub fn new() -> Result<BareVm, String> {
            let kvm = Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
            let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
            // Needed for real mode on Intel VT-x; harmless (or refused) elsewhere.
            let _ = vm.set_tss_address(0xfffb_d000);
            let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
                .map_err(|e| format!("guest memory: {e}"))?;
            let host = mem
                .get_host_address(GuestAddress(0))
                .map_err(|e| format!("guest memory: {e}"))?;
            let region = kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: MEM_SIZE as u64,
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of the MEM_SIZE-byte mapping owned by `mem`; `mem` moves
            // into the returned BareVm, whose field order closes the vCPU and VM fds before the
            // mapping is dropped, so KVM never uses the slot after it is unmapped. No other slot
            // exists, so nothing overlaps it.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
            let vcpu = vm
                .create_vcpu(0)
                .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
            Ok(BareVm {
                vcpu,
                _vm: vm,
                _kvm: kvm,
                mem,
            })
        }

        /// Runs the guest for `count` port exits from a fresh real-mode state; returns the host
        /// wall time from the first KVM_RUN to the final `hlt`.
        pub fn run(&mut self, count: u32) -> Result<Duration, String> {
            self.mem
                .write_slice(&code(count), GuestAddress(CODE_ADDR))
                .map_err(|e| format!("writing guest code: {e}"))?;
            let mut sregs = self
                .vcpu
                .get_sregs()
                .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            self.vcpu
                .set_sregs(&sregs)
                .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
            let mut regs = self
                .vcpu
                .get_regs()
                .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
            regs.rip = CODE_ADDR;
            regs.rflags = 2;
            self.vcpu
                .set_regs(&regs)
                .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

            let mut exits = 0u32;
            let start = Instant::now();
            loop {
                match self.vcpu.run() {
                    Ok(VcpuExit::IoOut(port, _)) if port == PORT => exits += 1,
                    Ok(VcpuExit::Hlt) => break,
                    Ok(other) => return Err(format!("unexpected exit {other:?}")),
                    Err(e) if e.errno() == EINTR || e.errno() == EAGAIN => {}
                    Err(e) => return Err(format!("KVM_RUN: {e}")),
                }
            }
            let elapsed = start.elapsed();
            if exits != count {
                return Err(format!("expected {count} port exits, saw {exits}"));
            }
            Ok(elapsed)
        }
    }
}
