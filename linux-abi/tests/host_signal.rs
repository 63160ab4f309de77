//! The signal structures against the host's Linux kernel and glibc: a real `SA_SIGINFO`
//! delivery on this thread is read back with this crate's `UContext`, `SigInfo` and frame
//! offsets, the kernel's `sigaction` is read into `KernelSigaction`, and this crate's
//! siginfos are read through glibc's `siginfo_t` accessors.
//!
//! The library forbids `unsafe`; this test needs it to install a handler and read the frame the
//! kernel built. Each block says why it is sound.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

use k42_linux_abi::signal::{self, KernelSigaction, SigInfo, Sigset, UContext};
use zerocopy::{FromBytes, IntoBytes};

const UC_WORDS: usize = core::mem::size_of::<UContext>() / 8;
const INFO_WORDS: usize = SigInfo::SIZE / 8;

static UC: [AtomicU64; UC_WORDS] = [const { AtomicU64::new(0) }; UC_WORDS];
static INFO: [AtomicU64; INFO_WORDS] = [const { AtomicU64::new(0) }; INFO_WORDS];
static RETURN_ADDRESS: AtomicU64 = AtomicU64::new(0);
static UC_ADDR: AtomicUsize = AtomicUsize::new(0);
static INFO_ADDR: AtomicUsize = AtomicUsize::new(0);
/// Both tests change process-wide signal state.
static SERIAL: Mutex<()> = Mutex::new(());

extern "C" fn handler(_sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let uc = uc as *const u64;
    let info = info as *const u64;
    // SAFETY: the kernel calls the handler with `uc` and `info` pointing into the frame it
    // just wrote on this thread's stack: the kernel's ucontext (UC_WORDS words, glibc's
    // ucontext_t is larger still) and the 128-byte siginfo, with the return address in the
    // word below the ucontext. All are readable and 8-byte aligned; the reads are unaligned
    // anyway.
    unsafe {
        for (i, word) in UC.iter().enumerate() {
            word.store(uc.add(i).read_unaligned(), SeqCst);
        }
        for (i, word) in INFO.iter().enumerate() {
            word.store(info.add(i).read_unaligned(), SeqCst);
        }
        RETURN_ADDRESS.store(uc.sub(1).read_unaligned(), SeqCst);
    }
    UC_ADDR.store(uc as usize, SeqCst);
    INFO_ADDR.store(info as usize, SeqCst);
}

fn words_to_bytes(words: &[AtomicU64]) -> Vec<u8> {
    words
        .iter()
        .flat_map(|w| w.load(SeqCst).to_ne_bytes())
        .collect()
}

#[test]
fn a_real_signal_frame_reads_back_with_these_layouts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: plain libc calls with valid pointers to local, initialized structures; the
    // handler only stores into atomics. SIGUSR1 is otherwise unused by this test binary, and
    // the previous action and mask are restored before returning.
    let (pid, tid, kact, altstack) = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaddset(&mut action.sa_mask, libc::SIGUSR2);
        let mut old_action: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGUSR1, &action, &mut old_action), 0);
        // The kernel's view of the action, through the raw call and this crate's layout.
        let mut kact = KernelSigaction::default();
        let r = libc::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGUSR1,
            std::ptr::null::<KernelSigaction>(),
            &mut kact as *mut KernelSigaction,
            8usize,
        );
        assert_eq!(r, 0);
        // Block SIGWINCH around the delivery, so the saved mask holds it.
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGWINCH);
        let mut old_mask: libc::sigset_t = std::mem::zeroed();
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old_mask),
            0
        );
        let pid = libc::getpid();
        let tid = libc::gettid();
        // Delivered on the way out of this very system call.
        let r = libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1);
        assert_eq!(r, 0);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()),
            0
        );
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &old_action, std::ptr::null_mut()),
            0
        );
        // Rust's runtime gives each thread an alternate signal stack (for stack overflow
        // reports); the frame records it.
        let mut altstack: libc::stack_t = std::mem::zeroed();
        assert_eq!(libc::sigaltstack(std::ptr::null(), &mut altstack), 0);
        (pid, tid, kact, altstack)
    };

    // The kernel's sigaction: handler, flags, restorer, mask.
    assert_eq!(kact.handler, handler as *const () as usize as u64);
    assert_eq!(
        kact.flags & (signal::SA_SIGINFO | signal::SA_RESTORER),
        signal::SA_SIGINFO | signal::SA_RESTORER
    );
    assert_ne!(kact.restorer, 0);
    assert_eq!(kact.mask, Sigset::of(signal::SIGUSR2));

    let uc_addr = UC_ADDR.load(SeqCst);
    let info_addr = INFO_ADDR.load(SeqCst);
    assert_ne!(uc_addr, 0, "the handler ran");
    // Frame placement: the ucontext sits 8 bytes above the 16-aligned-minus-8 frame start,
    // and the siginfo follows it.
    let frame = uc_addr as u64 - signal::RT_SIGFRAME_UC as u64;
    assert_eq!((frame + 8) % 16, 0);
    assert_eq!(
        info_addr - uc_addr,
        signal::RT_SIGFRAME_INFO - signal::RT_SIGFRAME_UC
    );
    assert_eq!(
        RETURN_ADDRESS.load(SeqCst),
        kact.restorer,
        "return address = restorer"
    );

    let uc_bytes = words_to_bytes(&UC);
    let info_bytes = words_to_bytes(&INFO);
    let uc = UContext::read_from_bytes(&uc_bytes).unwrap();
    let info = SigInfo::read_from_bytes(&info_bytes).unwrap();

    let both_ss = signal::UC_SIGCONTEXT_SS | signal::UC_STRICT_RESTORE_SS;
    assert_eq!(uc.uc_flags & both_ss, both_ss);
    assert_eq!(uc.uc_link, 0);
    assert_eq!(uc.uc_stack.ss_sp, altstack.ss_sp as u64);
    assert_eq!(uc.uc_stack.ss_flags, altstack.ss_flags);
    assert_eq!(uc.uc_stack.ss_size, altstack.ss_size as u64);
    assert!(
        uc.uc_sigmask.contains(signal::SIGWINCH),
        "{:?}",
        uc.uc_sigmask
    );
    assert!(!uc.uc_sigmask.contains(signal::SIGUSR1));
    assert!(
        !uc.uc_sigmask.contains(signal::SIGUSR2),
        "the handler's mask is not saved"
    );
    let m = &uc.uc_mcontext;
    // The registers of the interrupted `syscall` instruction: its arguments, its result,
    // and what the instruction itself put in rcx (the return rip) and r11 (rflags).
    assert_eq!(m.rax, 0, "tgkill's result");
    assert_eq!(m.rdi, pid as u64);
    assert_eq!(m.rsi, tid as u64);
    assert_eq!(m.rdx, libc::SIGUSR1 as u64);
    assert_eq!(m.rcx, m.rip, "syscall saves rip in rcx");
    assert_eq!(m.r11, m.eflags, "syscall saves rflags in r11");
    assert_eq!((m.cs, m.ss), (signal::LINUX_USER_CS, signal::LINUX_USER_SS));
    assert!(
        m.rsp > info_addr as u64 + SigInfo::SIZE as u64,
        "the frame is below the stack"
    );
    assert!(
        m.rsp - (frame) < 64 * 1024,
        "the frame is near the interrupted stack"
    );
    assert_ne!(m.fpstate, 0);
    assert_eq!(m.fpstate % signal::FPSTATE_ALIGN, 0);
    assert!(
        m.fpstate >= info_addr as u64 + SigInfo::SIZE as u64,
        "FPU state above the frame"
    );
    assert!(
        m.fpstate < m.rsp - signal::RED_ZONE,
        "and below the red zone"
    );

    assert_eq!(info.si_signo, signal::SIGUSR1);
    assert_eq!(info.si_code, signal::SI_TKILL);
    assert_eq!(info.pid(), pid);
    // SAFETY: getuid cannot fail.
    assert_eq!(info.uid(), unsafe { libc::getuid() });

    // Writing the same contents with this crate gives the kernel's bytes back.
    let mut buf = vec![0u8; signal::RT_SIGFRAME_SIZE];
    signal::write_rt_sigframe(&mut buf, kact.restorer, &uc, &info, m.fpstate).unwrap();
    assert_eq!(&buf[..8], &kact.restorer.to_ne_bytes());
    assert_eq!(
        &buf[signal::RT_SIGFRAME_UC..signal::RT_SIGFRAME_INFO],
        &uc_bytes[..]
    );
    assert_eq!(&buf[signal::RT_SIGFRAME_INFO..], &info_bytes[..]);
    // And where this crate would place a frame for the same stack is consistent with Linux's
    // rule: frame + 8 is 16-aligned and everything stays below the red zone.
    let placed = signal::place_rt_sigframe(m.rsp, 1024, None).unwrap();
    assert_eq!((placed.frame + 8) % 16, 0);
    assert!(placed.fpstate + 1024 <= m.rsp - signal::RED_ZONE);
}

/// Reads `info` as glibc's `siginfo_t`.
fn as_libc(info: &SigInfo) -> libc::siginfo_t {
    let bytes = info.as_bytes();
    assert_eq!(bytes.len(), core::mem::size_of::<libc::siginfo_t>());
    // SAFETY: siginfo_t is 128 bytes of integers, pointers and unions of them, so any bytes
    // are a valid value; the length was just checked and the read is unaligned.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<libc::siginfo_t>()) }
}

#[test]
fn our_siginfos_read_through_glibc() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chld = as_libc(&SigInfo::chld(signal::CLD_KILLED, 4321, 1000, 9, 11, 13));
    assert_eq!(
        (chld.si_signo, chld.si_errno, chld.si_code),
        (libc::SIGCHLD, 0, libc::CLD_KILLED)
    );
    // SAFETY: reading the union members a SIGCHLD siginfo defines.
    unsafe {
        assert_eq!(
            (chld.si_pid(), chld.si_uid(), chld.si_status()),
            (4321, 1000, 9)
        );
        assert_eq!((chld.si_utime(), chld.si_stime()), (11, 13));
    }
    let kill = as_libc(&SigInfo::kill(signal::SIGTERM, signal::SI_USER, 77, 5));
    // SAFETY: the members of a kill siginfo.
    unsafe {
        assert_eq!((kill.si_pid(), kill.si_uid()), (77, 5));
    }
    let fault = as_libc(&SigInfo::fault(
        signal::SIGSEGV,
        signal::SEGV_ACCERR,
        0x7fff_dead_b000,
    ));
    assert_eq!(fault.si_code, 2);
    // SAFETY: the member of a fault siginfo.
    unsafe {
        assert_eq!(fault.si_addr() as usize, 0x7fff_dead_b000);
    }
    let queued = as_libc(&SigInfo::queue(signal::SIGRTMIN + 2, 3, 4, 0xfeed));
    // SAFETY: the members of a queued siginfo.
    unsafe {
        assert_eq!((queued.si_pid(), queued.si_uid()), (3, 4));
        assert_eq!(queued.si_value().sival_ptr as usize, 0xfeed);
    }
}
