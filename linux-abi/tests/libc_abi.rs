//! Every number and layout of the crate against the `libc` crate's x86_64-unknown-linux-gnu
//! definitions (and, where `libc` has none, against the host's kernel headers or by hand, as
//! each place says).

use core::mem::{offset_of, size_of};

use k42_linux_abi::{errno, file, futex, mm, process, signal, syscall, time, tty};

/// `assert_eq!` of each pair after casting both sides to `$ty` (bit patterns, whatever the
/// signedness each crate chose).
macro_rules! same {
    ($ty:ty: $($ours:expr => $theirs:expr),* $(,)?) => {
        $(assert_eq!($ours as $ty, $theirs as $ty, "{} vs {}", stringify!($ours), stringify!($theirs));)*
    };
}

/// Size equality and the offset of every listed field, which both structs name alike.
macro_rules! layout {
    ($ours:ty = $theirs:ty { $($field:ident),* $(,)? }) => {{
        assert_eq!(size_of::<$ours>(), size_of::<$theirs>(), "size of {}", stringify!($ours));
        $(assert_eq!(
            offset_of!($ours, $field),
            offset_of!($theirs, $field),
            "{}.{}", stringify!($ours), stringify!($field)
        );)*
    }};
}

#[test]
fn syscall_numbers_match_libc() {
    use syscall::*;
    macro_rules! numbers {
        ($($ours:ident = $theirs:ident,)*) => {{
            let mut checked = 0;
            $(
                assert_eq!($ours, libc::$theirs as u64, stringify!($ours));
                assert_eq!(name($ours), Some(&stringify!($theirs)[4..]), stringify!($ours));
                checked += 1;
            )*
            checked
        }};
    }
    let checked = numbers! {
        SYS_READ = SYS_read,
        SYS_WRITE = SYS_write,
        SYS_OPEN = SYS_open,
        SYS_CLOSE = SYS_close,
        SYS_STAT = SYS_stat,
        SYS_FSTAT = SYS_fstat,
        SYS_LSTAT = SYS_lstat,
        SYS_POLL = SYS_poll,
        SYS_LSEEK = SYS_lseek,
        SYS_MMAP = SYS_mmap,
        SYS_MPROTECT = SYS_mprotect,
        SYS_MUNMAP = SYS_munmap,
        SYS_BRK = SYS_brk,
        SYS_RT_SIGACTION = SYS_rt_sigaction,
        SYS_RT_SIGPROCMASK = SYS_rt_sigprocmask,
        SYS_RT_SIGRETURN = SYS_rt_sigreturn,
        SYS_IOCTL = SYS_ioctl,
        SYS_PREAD64 = SYS_pread64,
        SYS_PWRITE64 = SYS_pwrite64,
        SYS_READV = SYS_readv,
        SYS_WRITEV = SYS_writev,
        SYS_ACCESS = SYS_access,
        SYS_PIPE = SYS_pipe,
        SYS_SELECT = SYS_select,
        SYS_SCHED_YIELD = SYS_sched_yield,
        SYS_MREMAP = SYS_mremap,
        SYS_MSYNC = SYS_msync,
        SYS_MINCORE = SYS_mincore,
        SYS_MADVISE = SYS_madvise,
        SYS_SHMGET = SYS_shmget,
        SYS_SHMAT = SYS_shmat,
        SYS_SHMCTL = SYS_shmctl,
        SYS_DUP = SYS_dup,
        SYS_DUP2 = SYS_dup2,
        SYS_PAUSE = SYS_pause,
        SYS_NANOSLEEP = SYS_nanosleep,
        SYS_GETITIMER = SYS_getitimer,
        SYS_ALARM = SYS_alarm,
        SYS_SETITIMER = SYS_setitimer,
        SYS_GETPID = SYS_getpid,
        SYS_SENDFILE = SYS_sendfile,
        SYS_SOCKET = SYS_socket,
        SYS_CONNECT = SYS_connect,
        SYS_ACCEPT = SYS_accept,
        SYS_SENDTO = SYS_sendto,
        SYS_RECVFROM = SYS_recvfrom,
        SYS_SENDMSG = SYS_sendmsg,
        SYS_RECVMSG = SYS_recvmsg,
        SYS_SHUTDOWN = SYS_shutdown,
        SYS_BIND = SYS_bind,
        SYS_LISTEN = SYS_listen,
        SYS_GETSOCKNAME = SYS_getsockname,
        SYS_GETPEERNAME = SYS_getpeername,
        SYS_SOCKETPAIR = SYS_socketpair,
        SYS_SETSOCKOPT = SYS_setsockopt,
        SYS_GETSOCKOPT = SYS_getsockopt,
        SYS_CLONE = SYS_clone,
        SYS_FORK = SYS_fork,
        SYS_VFORK = SYS_vfork,
        SYS_EXECVE = SYS_execve,
        SYS_EXIT = SYS_exit,
        SYS_WAIT4 = SYS_wait4,
        SYS_KILL = SYS_kill,
        SYS_UNAME = SYS_uname,
        SYS_SEMGET = SYS_semget,
        SYS_SEMOP = SYS_semop,
        SYS_SEMCTL = SYS_semctl,
        SYS_SHMDT = SYS_shmdt,
        SYS_MSGGET = SYS_msgget,
        SYS_MSGSND = SYS_msgsnd,
        SYS_MSGRCV = SYS_msgrcv,
        SYS_MSGCTL = SYS_msgctl,
        SYS_FCNTL = SYS_fcntl,
        SYS_FLOCK = SYS_flock,
        SYS_FSYNC = SYS_fsync,
        SYS_FDATASYNC = SYS_fdatasync,
        SYS_TRUNCATE = SYS_truncate,
        SYS_FTRUNCATE = SYS_ftruncate,
        SYS_GETDENTS = SYS_getdents,
        SYS_GETCWD = SYS_getcwd,
        SYS_CHDIR = SYS_chdir,
        SYS_FCHDIR = SYS_fchdir,
        SYS_RENAME = SYS_rename,
        SYS_MKDIR = SYS_mkdir,
        SYS_RMDIR = SYS_rmdir,
        SYS_CREAT = SYS_creat,
        SYS_LINK = SYS_link,
        SYS_UNLINK = SYS_unlink,
        SYS_SYMLINK = SYS_symlink,
        SYS_READLINK = SYS_readlink,
        SYS_CHMOD = SYS_chmod,
        SYS_FCHMOD = SYS_fchmod,
        SYS_CHOWN = SYS_chown,
        SYS_FCHOWN = SYS_fchown,
        SYS_LCHOWN = SYS_lchown,
        SYS_UMASK = SYS_umask,
        SYS_GETTIMEOFDAY = SYS_gettimeofday,
        SYS_GETRLIMIT = SYS_getrlimit,
        SYS_GETRUSAGE = SYS_getrusage,
        SYS_SYSINFO = SYS_sysinfo,
        SYS_TIMES = SYS_times,
        SYS_PTRACE = SYS_ptrace,
        SYS_GETUID = SYS_getuid,
        SYS_SYSLOG = SYS_syslog,
        SYS_GETGID = SYS_getgid,
        SYS_SETUID = SYS_setuid,
        SYS_SETGID = SYS_setgid,
        SYS_GETEUID = SYS_geteuid,
        SYS_GETEGID = SYS_getegid,
        SYS_SETPGID = SYS_setpgid,
        SYS_GETPPID = SYS_getppid,
        SYS_GETPGRP = SYS_getpgrp,
        SYS_SETSID = SYS_setsid,
        SYS_SETREUID = SYS_setreuid,
        SYS_SETREGID = SYS_setregid,
        SYS_GETGROUPS = SYS_getgroups,
        SYS_SETGROUPS = SYS_setgroups,
        SYS_SETRESUID = SYS_setresuid,
        SYS_GETRESUID = SYS_getresuid,
        SYS_SETRESGID = SYS_setresgid,
        SYS_GETRESGID = SYS_getresgid,
        SYS_GETPGID = SYS_getpgid,
        SYS_SETFSUID = SYS_setfsuid,
        SYS_SETFSGID = SYS_setfsgid,
        SYS_GETSID = SYS_getsid,
        SYS_CAPGET = SYS_capget,
        SYS_CAPSET = SYS_capset,
        SYS_RT_SIGPENDING = SYS_rt_sigpending,
        SYS_RT_SIGTIMEDWAIT = SYS_rt_sigtimedwait,
        SYS_RT_SIGQUEUEINFO = SYS_rt_sigqueueinfo,
        SYS_RT_SIGSUSPEND = SYS_rt_sigsuspend,
        SYS_SIGALTSTACK = SYS_sigaltstack,
        SYS_UTIME = SYS_utime,
        SYS_MKNOD = SYS_mknod,
        SYS_USELIB = SYS_uselib,
        SYS_PERSONALITY = SYS_personality,
        SYS_USTAT = SYS_ustat,
        SYS_STATFS = SYS_statfs,
        SYS_FSTATFS = SYS_fstatfs,
        SYS_SYSFS = SYS_sysfs,
        SYS_GETPRIORITY = SYS_getpriority,
        SYS_SETPRIORITY = SYS_setpriority,
        SYS_SCHED_SETPARAM = SYS_sched_setparam,
        SYS_SCHED_GETPARAM = SYS_sched_getparam,
        SYS_SCHED_SETSCHEDULER = SYS_sched_setscheduler,
        SYS_SCHED_GETSCHEDULER = SYS_sched_getscheduler,
        SYS_SCHED_GET_PRIORITY_MAX = SYS_sched_get_priority_max,
        SYS_SCHED_GET_PRIORITY_MIN = SYS_sched_get_priority_min,
        SYS_SCHED_RR_GET_INTERVAL = SYS_sched_rr_get_interval,
        SYS_MLOCK = SYS_mlock,
        SYS_MUNLOCK = SYS_munlock,
        SYS_MLOCKALL = SYS_mlockall,
        SYS_MUNLOCKALL = SYS_munlockall,
        SYS_VHANGUP = SYS_vhangup,
        SYS_MODIFY_LDT = SYS_modify_ldt,
        SYS_PIVOT_ROOT = SYS_pivot_root,
        SYS__SYSCTL = SYS__sysctl,
        SYS_PRCTL = SYS_prctl,
        SYS_ARCH_PRCTL = SYS_arch_prctl,
        SYS_ADJTIMEX = SYS_adjtimex,
        SYS_SETRLIMIT = SYS_setrlimit,
        SYS_CHROOT = SYS_chroot,
        SYS_SYNC = SYS_sync,
        SYS_ACCT = SYS_acct,
        SYS_SETTIMEOFDAY = SYS_settimeofday,
        SYS_MOUNT = SYS_mount,
        SYS_UMOUNT2 = SYS_umount2,
        SYS_SWAPON = SYS_swapon,
        SYS_SWAPOFF = SYS_swapoff,
        SYS_REBOOT = SYS_reboot,
        SYS_SETHOSTNAME = SYS_sethostname,
        SYS_SETDOMAINNAME = SYS_setdomainname,
        SYS_IOPL = SYS_iopl,
        SYS_IOPERM = SYS_ioperm,
        SYS_INIT_MODULE = SYS_init_module,
        SYS_DELETE_MODULE = SYS_delete_module,
        SYS_QUOTACTL = SYS_quotactl,
        SYS_NFSSERVCTL = SYS_nfsservctl,
        SYS_GETPMSG = SYS_getpmsg,
        SYS_PUTPMSG = SYS_putpmsg,
        SYS_AFS_SYSCALL = SYS_afs_syscall,
        SYS_TUXCALL = SYS_tuxcall,
        SYS_SECURITY = SYS_security,
        SYS_GETTID = SYS_gettid,
        SYS_READAHEAD = SYS_readahead,
        SYS_SETXATTR = SYS_setxattr,
        SYS_LSETXATTR = SYS_lsetxattr,
        SYS_FSETXATTR = SYS_fsetxattr,
        SYS_GETXATTR = SYS_getxattr,
        SYS_LGETXATTR = SYS_lgetxattr,
        SYS_FGETXATTR = SYS_fgetxattr,
        SYS_LISTXATTR = SYS_listxattr,
        SYS_LLISTXATTR = SYS_llistxattr,
        SYS_FLISTXATTR = SYS_flistxattr,
        SYS_REMOVEXATTR = SYS_removexattr,
        SYS_LREMOVEXATTR = SYS_lremovexattr,
        SYS_FREMOVEXATTR = SYS_fremovexattr,
        SYS_TKILL = SYS_tkill,
        SYS_TIME = SYS_time,
        SYS_FUTEX = SYS_futex,
        SYS_SCHED_SETAFFINITY = SYS_sched_setaffinity,
        SYS_SCHED_GETAFFINITY = SYS_sched_getaffinity,
        SYS_SET_THREAD_AREA = SYS_set_thread_area,
        SYS_IO_SETUP = SYS_io_setup,
        SYS_IO_DESTROY = SYS_io_destroy,
        SYS_IO_GETEVENTS = SYS_io_getevents,
        SYS_IO_SUBMIT = SYS_io_submit,
        SYS_IO_CANCEL = SYS_io_cancel,
        SYS_GET_THREAD_AREA = SYS_get_thread_area,
        SYS_LOOKUP_DCOOKIE = SYS_lookup_dcookie,
        SYS_EPOLL_CREATE = SYS_epoll_create,
        SYS_EPOLL_CTL_OLD = SYS_epoll_ctl_old,
        SYS_EPOLL_WAIT_OLD = SYS_epoll_wait_old,
        SYS_REMAP_FILE_PAGES = SYS_remap_file_pages,
        SYS_GETDENTS64 = SYS_getdents64,
        SYS_SET_TID_ADDRESS = SYS_set_tid_address,
        SYS_RESTART_SYSCALL = SYS_restart_syscall,
        SYS_SEMTIMEDOP = SYS_semtimedop,
        SYS_FADVISE64 = SYS_fadvise64,
        SYS_TIMER_CREATE = SYS_timer_create,
        SYS_TIMER_SETTIME = SYS_timer_settime,
        SYS_TIMER_GETTIME = SYS_timer_gettime,
        SYS_TIMER_GETOVERRUN = SYS_timer_getoverrun,
        SYS_TIMER_DELETE = SYS_timer_delete,
        SYS_CLOCK_SETTIME = SYS_clock_settime,
        SYS_CLOCK_GETTIME = SYS_clock_gettime,
        SYS_CLOCK_GETRES = SYS_clock_getres,
        SYS_CLOCK_NANOSLEEP = SYS_clock_nanosleep,
        SYS_EXIT_GROUP = SYS_exit_group,
        SYS_EPOLL_WAIT = SYS_epoll_wait,
        SYS_EPOLL_CTL = SYS_epoll_ctl,
        SYS_TGKILL = SYS_tgkill,
        SYS_UTIMES = SYS_utimes,
        SYS_VSERVER = SYS_vserver,
        SYS_MBIND = SYS_mbind,
        SYS_SET_MEMPOLICY = SYS_set_mempolicy,
        SYS_GET_MEMPOLICY = SYS_get_mempolicy,
        SYS_MQ_OPEN = SYS_mq_open,
        SYS_MQ_UNLINK = SYS_mq_unlink,
        SYS_MQ_TIMEDSEND = SYS_mq_timedsend,
        SYS_MQ_TIMEDRECEIVE = SYS_mq_timedreceive,
        SYS_MQ_NOTIFY = SYS_mq_notify,
        SYS_MQ_GETSETATTR = SYS_mq_getsetattr,
        SYS_KEXEC_LOAD = SYS_kexec_load,
        SYS_WAITID = SYS_waitid,
        SYS_ADD_KEY = SYS_add_key,
        SYS_REQUEST_KEY = SYS_request_key,
        SYS_KEYCTL = SYS_keyctl,
        SYS_IOPRIO_SET = SYS_ioprio_set,
        SYS_IOPRIO_GET = SYS_ioprio_get,
        SYS_INOTIFY_INIT = SYS_inotify_init,
        SYS_INOTIFY_ADD_WATCH = SYS_inotify_add_watch,
        SYS_INOTIFY_RM_WATCH = SYS_inotify_rm_watch,
        SYS_MIGRATE_PAGES = SYS_migrate_pages,
        SYS_OPENAT = SYS_openat,
        SYS_MKDIRAT = SYS_mkdirat,
        SYS_MKNODAT = SYS_mknodat,
        SYS_FCHOWNAT = SYS_fchownat,
        SYS_FUTIMESAT = SYS_futimesat,
        SYS_NEWFSTATAT = SYS_newfstatat,
        SYS_UNLINKAT = SYS_unlinkat,
        SYS_RENAMEAT = SYS_renameat,
        SYS_LINKAT = SYS_linkat,
        SYS_SYMLINKAT = SYS_symlinkat,
        SYS_READLINKAT = SYS_readlinkat,
        SYS_FCHMODAT = SYS_fchmodat,
        SYS_FACCESSAT = SYS_faccessat,
        SYS_PSELECT6 = SYS_pselect6,
        SYS_PPOLL = SYS_ppoll,
        SYS_UNSHARE = SYS_unshare,
        SYS_SET_ROBUST_LIST = SYS_set_robust_list,
        SYS_GET_ROBUST_LIST = SYS_get_robust_list,
        SYS_SPLICE = SYS_splice,
        SYS_TEE = SYS_tee,
        SYS_SYNC_FILE_RANGE = SYS_sync_file_range,
        SYS_VMSPLICE = SYS_vmsplice,
        SYS_MOVE_PAGES = SYS_move_pages,
        SYS_UTIMENSAT = SYS_utimensat,
        SYS_EPOLL_PWAIT = SYS_epoll_pwait,
        SYS_SIGNALFD = SYS_signalfd,
        SYS_TIMERFD_CREATE = SYS_timerfd_create,
        SYS_EVENTFD = SYS_eventfd,
        SYS_FALLOCATE = SYS_fallocate,
        SYS_TIMERFD_SETTIME = SYS_timerfd_settime,
        SYS_TIMERFD_GETTIME = SYS_timerfd_gettime,
        SYS_ACCEPT4 = SYS_accept4,
        SYS_SIGNALFD4 = SYS_signalfd4,
        SYS_EVENTFD2 = SYS_eventfd2,
        SYS_EPOLL_CREATE1 = SYS_epoll_create1,
        SYS_DUP3 = SYS_dup3,
        SYS_PIPE2 = SYS_pipe2,
        SYS_INOTIFY_INIT1 = SYS_inotify_init1,
        SYS_PREADV = SYS_preadv,
        SYS_PWRITEV = SYS_pwritev,
        SYS_RT_TGSIGQUEUEINFO = SYS_rt_tgsigqueueinfo,
        SYS_PERF_EVENT_OPEN = SYS_perf_event_open,
        SYS_RECVMMSG = SYS_recvmmsg,
        SYS_FANOTIFY_INIT = SYS_fanotify_init,
        SYS_FANOTIFY_MARK = SYS_fanotify_mark,
        SYS_PRLIMIT64 = SYS_prlimit64,
        SYS_NAME_TO_HANDLE_AT = SYS_name_to_handle_at,
        SYS_OPEN_BY_HANDLE_AT = SYS_open_by_handle_at,
        SYS_CLOCK_ADJTIME = SYS_clock_adjtime,
        SYS_SYNCFS = SYS_syncfs,
        SYS_SENDMMSG = SYS_sendmmsg,
        SYS_SETNS = SYS_setns,
        SYS_GETCPU = SYS_getcpu,
        SYS_PROCESS_VM_READV = SYS_process_vm_readv,
        SYS_PROCESS_VM_WRITEV = SYS_process_vm_writev,
        SYS_KCMP = SYS_kcmp,
        SYS_FINIT_MODULE = SYS_finit_module,
        SYS_SCHED_SETATTR = SYS_sched_setattr,
        SYS_SCHED_GETATTR = SYS_sched_getattr,
        SYS_RENAMEAT2 = SYS_renameat2,
        SYS_SECCOMP = SYS_seccomp,
        SYS_GETRANDOM = SYS_getrandom,
        SYS_MEMFD_CREATE = SYS_memfd_create,
        SYS_KEXEC_FILE_LOAD = SYS_kexec_file_load,
        SYS_BPF = SYS_bpf,
        SYS_EXECVEAT = SYS_execveat,
        SYS_USERFAULTFD = SYS_userfaultfd,
        SYS_MEMBARRIER = SYS_membarrier,
        SYS_MLOCK2 = SYS_mlock2,
        SYS_COPY_FILE_RANGE = SYS_copy_file_range,
        SYS_PREADV2 = SYS_preadv2,
        SYS_PWRITEV2 = SYS_pwritev2,
        SYS_PKEY_MPROTECT = SYS_pkey_mprotect,
        SYS_PKEY_ALLOC = SYS_pkey_alloc,
        SYS_PKEY_FREE = SYS_pkey_free,
        SYS_STATX = SYS_statx,
        SYS_RSEQ = SYS_rseq,
        SYS_PIDFD_SEND_SIGNAL = SYS_pidfd_send_signal,
        SYS_IO_URING_SETUP = SYS_io_uring_setup,
        SYS_IO_URING_ENTER = SYS_io_uring_enter,
        SYS_IO_URING_REGISTER = SYS_io_uring_register,
        SYS_OPEN_TREE = SYS_open_tree,
        SYS_MOVE_MOUNT = SYS_move_mount,
        SYS_FSOPEN = SYS_fsopen,
        SYS_FSCONFIG = SYS_fsconfig,
        SYS_FSMOUNT = SYS_fsmount,
        SYS_FSPICK = SYS_fspick,
        SYS_PIDFD_OPEN = SYS_pidfd_open,
        SYS_CLONE3 = SYS_clone3,
        SYS_CLOSE_RANGE = SYS_close_range,
        SYS_OPENAT2 = SYS_openat2,
        SYS_PIDFD_GETFD = SYS_pidfd_getfd,
        SYS_FACCESSAT2 = SYS_faccessat2,
        SYS_PROCESS_MADVISE = SYS_process_madvise,
        SYS_EPOLL_PWAIT2 = SYS_epoll_pwait2,
        SYS_MOUNT_SETATTR = SYS_mount_setattr,
        SYS_QUOTACTL_FD = SYS_quotactl_fd,
        SYS_LANDLOCK_CREATE_RULESET = SYS_landlock_create_ruleset,
        SYS_LANDLOCK_ADD_RULE = SYS_landlock_add_rule,
        SYS_LANDLOCK_RESTRICT_SELF = SYS_landlock_restrict_self,
        SYS_MEMFD_SECRET = SYS_memfd_secret,
        SYS_PROCESS_MRELEASE = SYS_process_mrelease,
        SYS_FUTEX_WAITV = SYS_futex_waitv,
        SYS_SET_MEMPOLICY_HOME_NODE = SYS_set_mempolicy_home_node,
        SYS_FCHMODAT2 = SYS_fchmodat2,
        SYS_MSEAL = SYS_mseal,
    };
    assert_eq!(checked, 360);
}

/// The numbers `libc` lacks, against the host's `asm/unistd_64.h` where it has them and against
/// `arch/x86/entry/syscalls/syscall_64.tbl` of Linux 6.10+ by hand for the newest.
#[test]
fn syscall_numbers_libc_lacks() {
    use syscall::*;
    for (ours, nr, name_) in [
        (SYS_CREATE_MODULE, 174, "create_module"),
        (SYS_GET_KERNEL_SYMS, 177, "get_kernel_syms"),
        (SYS_QUERY_MODULE, 178, "query_module"),
        (SYS_IO_PGETEVENTS, 333, "io_pgetevents"),
        (SYS_CACHESTAT, 451, "cachestat"),
        (SYS_MAP_SHADOW_STACK, 453, "map_shadow_stack"),
        (SYS_FUTEX_WAKE, 454, "futex_wake"),
        (SYS_FUTEX_WAIT, 455, "futex_wait"),
        (SYS_FUTEX_REQUEUE, 456, "futex_requeue"),
        (SYS_STATMOUNT, 457, "statmount"),
        (SYS_LISTMOUNT, 458, "listmount"),
        (SYS_LSM_GET_SELF_ATTR, 459, "lsm_get_self_attr"),
        (SYS_LSM_SET_SELF_ATTR, 460, "lsm_set_self_attr"),
        (SYS_LSM_LIST_MODULES, 461, "lsm_list_modules"),
    ] {
        assert_eq!(ours, nr);
        assert_eq!(name(nr), Some(name_));
    }
}

/// Every `__NR_*` of the host's kernel headers (linux-libc-dev) is in the table with that name.
#[test]
fn syscall_numbers_match_the_host_headers() {
    let path = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (linux-libc-dev provides it)"));
    let mut seen = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#define"), Some(sym), Some(nr)) = (words.next(), words.next(), words.next()) {
            if let (Some(n), Ok(nr)) = (sym.strip_prefix("__NR_"), nr.parse::<u64>()) {
                assert_eq!(syscall::name(nr), Some(n), "number {nr}");
                seen += 1;
            }
        }
    }
    assert!(seen > 300, "only {seen} numbers in {path}");
}

#[test]
fn errno_values_match_libc() {
    use errno::*;
    macro_rules! errnos {
        ($($e:ident,)*) => {$(
            assert_eq!($e, libc::$e, stringify!($e));
            assert_eq!(name($e), Some(stringify!($e)));
        )*};
    }
    errnos! {
        EPERM,
        ENOENT,
        ESRCH,
        EINTR,
        EIO,
        ENXIO,
        E2BIG,
        ENOEXEC,
        EBADF,
        ECHILD,
        EAGAIN,
        ENOMEM,
        EACCES,
        EFAULT,
        ENOTBLK,
        EBUSY,
        EEXIST,
        EXDEV,
        ENODEV,
        ENOTDIR,
        EISDIR,
        EINVAL,
        ENFILE,
        EMFILE,
        ENOTTY,
        ETXTBSY,
        EFBIG,
        ENOSPC,
        ESPIPE,
        EROFS,
        EMLINK,
        EPIPE,
        EDOM,
        ERANGE,
        EDEADLK,
        ENAMETOOLONG,
        ENOLCK,
        ENOSYS,
        ENOTEMPTY,
        ELOOP,
        ENOMSG,
        EIDRM,
        ECHRNG,
        EL2NSYNC,
        EL3HLT,
        EL3RST,
        ELNRNG,
        EUNATCH,
        ENOCSI,
        EL2HLT,
        EBADE,
        EBADR,
        EXFULL,
        ENOANO,
        EBADRQC,
        EBADSLT,
        EBFONT,
        ENOSTR,
        ENODATA,
        ETIME,
        ENOSR,
        ENONET,
        ENOPKG,
        EREMOTE,
        ENOLINK,
        EADV,
        ESRMNT,
        ECOMM,
        EPROTO,
        EMULTIHOP,
        EDOTDOT,
        EBADMSG,
        EOVERFLOW,
        ENOTUNIQ,
        EBADFD,
        EREMCHG,
        ELIBACC,
        ELIBBAD,
        ELIBSCN,
        ELIBMAX,
        ELIBEXEC,
        EILSEQ,
        ERESTART,
        ESTRPIPE,
        EUSERS,
        ENOTSOCK,
        EDESTADDRREQ,
        EMSGSIZE,
        EPROTOTYPE,
        ENOPROTOOPT,
        EPROTONOSUPPORT,
        ESOCKTNOSUPPORT,
        EOPNOTSUPP,
        EPFNOSUPPORT,
        EAFNOSUPPORT,
        EADDRINUSE,
        EADDRNOTAVAIL,
        ENETDOWN,
        ENETUNREACH,
        ENETRESET,
        ECONNABORTED,
        ECONNRESET,
        ENOBUFS,
        EISCONN,
        ENOTCONN,
        ESHUTDOWN,
        ETOOMANYREFS,
        ETIMEDOUT,
        ECONNREFUSED,
        EHOSTDOWN,
        EHOSTUNREACH,
        EALREADY,
        EINPROGRESS,
        ESTALE,
        EUCLEAN,
        ENOTNAM,
        ENAVAIL,
        EISNAM,
        EREMOTEIO,
        EDQUOT,
        ENOMEDIUM,
        EMEDIUMTYPE,
        ECANCELED,
        ENOKEY,
        EKEYEXPIRED,
        EKEYREVOKED,
        EKEYREJECTED,
        EOWNERDEAD,
        ENOTRECOVERABLE,
        ERFKILL,
        EHWPOISON,
    }
    assert_eq!(EWOULDBLOCK, libc::EWOULDBLOCK);
    assert_eq!(EDEADLOCK, libc::EDEADLOCK);
    assert_eq!(ENOTSUP, libc::ENOTSUP);
    // Kernel-internal restart codes (include/linux/errno.h); C libraries never see them.
    assert_eq!(
        (
            ERESTARTSYS,
            ERESTARTNOINTR,
            ERESTARTNOHAND,
            ERESTART_RESTARTBLOCK
        ),
        (512, 513, 514, 516)
    );
}

#[test]
fn signal_numbers_and_flags_match_libc() {
    use signal::*;
    same!(i32:
        SIGHUP => libc::SIGHUP, SIGINT => libc::SIGINT, SIGQUIT => libc::SIGQUIT,
        SIGILL => libc::SIGILL, SIGTRAP => libc::SIGTRAP, SIGABRT => libc::SIGABRT,
        SIGIOT => libc::SIGIOT, SIGBUS => libc::SIGBUS, SIGFPE => libc::SIGFPE,
        SIGKILL => libc::SIGKILL, SIGUSR1 => libc::SIGUSR1, SIGSEGV => libc::SIGSEGV,
        SIGUSR2 => libc::SIGUSR2, SIGPIPE => libc::SIGPIPE, SIGALRM => libc::SIGALRM,
        SIGTERM => libc::SIGTERM, SIGSTKFLT => libc::SIGSTKFLT, SIGCHLD => libc::SIGCHLD,
        SIGCONT => libc::SIGCONT, SIGSTOP => libc::SIGSTOP, SIGTSTP => libc::SIGTSTP,
        SIGTTIN => libc::SIGTTIN, SIGTTOU => libc::SIGTTOU, SIGURG => libc::SIGURG,
        SIGXCPU => libc::SIGXCPU, SIGXFSZ => libc::SIGXFSZ, SIGVTALRM => libc::SIGVTALRM,
        SIGPROF => libc::SIGPROF, SIGWINCH => libc::SIGWINCH, SIGIO => libc::SIGIO,
        SIGPOLL => libc::SIGPOLL, SIGPWR => libc::SIGPWR, SIGSYS => libc::SIGSYS,
        SIG_BLOCK => libc::SIG_BLOCK, SIG_UNBLOCK => libc::SIG_UNBLOCK,
        SIG_SETMASK => libc::SIG_SETMASK,
        SS_ONSTACK => libc::SS_ONSTACK, SS_DISABLE => libc::SS_DISABLE,
        SI_USER => libc::SI_USER, SI_KERNEL => libc::SI_KERNEL, SI_QUEUE => libc::SI_QUEUE,
        SI_TIMER => libc::SI_TIMER, SI_MESGQ => libc::SI_MESGQ, SI_ASYNCIO => libc::SI_ASYNCIO,
        SI_SIGIO => libc::SI_SIGIO, SI_TKILL => libc::SI_TKILL,
        CLD_EXITED => libc::CLD_EXITED, CLD_KILLED => libc::CLD_KILLED,
        CLD_DUMPED => libc::CLD_DUMPED, CLD_TRAPPED => libc::CLD_TRAPPED,
        CLD_STOPPED => libc::CLD_STOPPED, CLD_CONTINUED => libc::CLD_CONTINUED,
        BUS_ADRALN => libc::BUS_ADRALN, BUS_ADRERR => libc::BUS_ADRERR,
        TRAP_BRKPT => libc::TRAP_BRKPT,
    );
    same!(u64:
        SIG_DFL => libc::SIG_DFL, SIG_IGN => libc::SIG_IGN,
        MINSIGSTKSZ => libc::MINSIGSTKSZ, SIGSTKSZ => libc::SIGSTKSZ,
    );
    // libc's SA_* are C ints (SA_RESETHAND is negative there): compare the 32 bits.
    for (ours, theirs) in [
        (SA_NOCLDSTOP, libc::SA_NOCLDSTOP),
        (SA_NOCLDWAIT, libc::SA_NOCLDWAIT),
        (SA_SIGINFO, libc::SA_SIGINFO),
        (SA_ONSTACK, libc::SA_ONSTACK),
        (SA_RESTART, libc::SA_RESTART),
        (SA_NODEFER, libc::SA_NODEFER),
        (SA_RESETHAND, libc::SA_RESETHAND),
    ] {
        assert_eq!(ours, theirs as u32 as u64);
    }
    // By hand, from include/uapi/asm-generic/signal-defs.h, arch/x86/include/uapi/asm/signal.h
    // and include/uapi/asm-generic/siginfo.h (libc has none of these for Linux).
    assert_eq!(
        (SA_RESTORER, SA_UNSUPPORTED, SA_EXPOSE_TAGBITS),
        (0x0400_0000, 0x400, 0x800)
    );
    assert_eq!(SS_AUTODISARM as u32, 0x8000_0000);
    assert_eq!(
        (SEGV_MAPERR, SEGV_ACCERR, ILL_ILLOPC, ILL_PRVOPC, FPE_INTDIV),
        (1, 2, 1, 5, 1)
    );
    // The kernel's first real-time signal; glibc's SIGRTMIN() is 34 (it keeps two for itself).
    assert_eq!((SIGRTMIN, SIGRTMAX, NSIG), (32, 64, 64));
}

#[test]
fn signal_layouts_match_libc() {
    use signal::*;
    layout!(
        StackT = libc::stack_t {
            ss_sp,
            ss_flags,
            ss_size
        }
    );
    // glibc's ucontext_t starts like the kernel's struct ucontext (then adds its own FPU area):
    // the prefix must match, and the mask is the kernel's 8 bytes at the same offset.
    assert_eq!(
        offset_of!(UContext, uc_flags),
        offset_of!(libc::ucontext_t, uc_flags)
    );
    assert_eq!(
        offset_of!(UContext, uc_link),
        offset_of!(libc::ucontext_t, uc_link)
    );
    assert_eq!(
        offset_of!(UContext, uc_stack),
        offset_of!(libc::ucontext_t, uc_stack)
    );
    assert_eq!(
        offset_of!(UContext, uc_mcontext),
        offset_of!(libc::ucontext_t, uc_mcontext)
    );
    assert_eq!(
        offset_of!(UContext, uc_sigmask),
        offset_of!(libc::ucontext_t, uc_sigmask)
    );
    assert_eq!(
        size_of::<UContext>(),
        offset_of!(libc::ucontext_t, uc_sigmask) + 8
    );
    // struct sigcontext is glibc's mcontext_t: gregs[REG_*], then the FPU pointer, reserved.
    assert_eq!(size_of::<Sigcontext>(), size_of::<libc::mcontext_t>());
    let greg = |reg: libc::c_int| reg as usize * 8;
    for (ours, reg) in [
        (offset_of!(Sigcontext, r8), libc::REG_R8),
        (offset_of!(Sigcontext, r9), libc::REG_R9),
        (offset_of!(Sigcontext, r10), libc::REG_R10),
        (offset_of!(Sigcontext, r11), libc::REG_R11),
        (offset_of!(Sigcontext, r12), libc::REG_R12),
        (offset_of!(Sigcontext, r13), libc::REG_R13),
        (offset_of!(Sigcontext, r14), libc::REG_R14),
        (offset_of!(Sigcontext, r15), libc::REG_R15),
        (offset_of!(Sigcontext, rdi), libc::REG_RDI),
        (offset_of!(Sigcontext, rsi), libc::REG_RSI),
        (offset_of!(Sigcontext, rbp), libc::REG_RBP),
        (offset_of!(Sigcontext, rbx), libc::REG_RBX),
        (offset_of!(Sigcontext, rdx), libc::REG_RDX),
        (offset_of!(Sigcontext, rax), libc::REG_RAX),
        (offset_of!(Sigcontext, rcx), libc::REG_RCX),
        (offset_of!(Sigcontext, rsp), libc::REG_RSP),
        (offset_of!(Sigcontext, rip), libc::REG_RIP),
        (offset_of!(Sigcontext, eflags), libc::REG_EFL),
        (offset_of!(Sigcontext, cs), libc::REG_CSGSFS),
        (offset_of!(Sigcontext, err), libc::REG_ERR),
        (offset_of!(Sigcontext, trapno), libc::REG_TRAPNO),
        (offset_of!(Sigcontext, oldmask), libc::REG_OLDMASK),
        (offset_of!(Sigcontext, cr2), libc::REG_CR2),
    ] {
        assert_eq!(ours, greg(reg), "register {reg}");
    }
    // cs, gs, fs, ss share the REG_CSGSFS word, 2 bytes each.
    assert_eq!(offset_of!(Sigcontext, gs), greg(libc::REG_CSGSFS) + 2);
    assert_eq!(offset_of!(Sigcontext, fs), greg(libc::REG_CSGSFS) + 4);
    assert_eq!(offset_of!(Sigcontext, ss), greg(libc::REG_CSGSFS) + 6);
    assert_eq!(
        offset_of!(Sigcontext, fpstate),
        offset_of!(libc::mcontext_t, fpregs)
    );
    layout!(
        SigInfo = libc::siginfo_t {
            si_signo,
            si_errno,
            si_code
        }
    );
}

#[test]
fn file_layouts_match_libc() {
    use file::*;
    layout!(
        Stat = libc::stat {
            st_dev,
            st_ino,
            st_nlink,
            st_mode,
            st_uid,
            st_gid,
            st_rdev,
            st_size,
            st_blksize,
            st_blocks,
            st_atime,
            st_atime_nsec,
            st_mtime,
            st_mtime_nsec,
            st_ctime,
            st_ctime_nsec,
        }
    );
    layout!(StatxTimestamp = libc::statx_timestamp { tv_sec, tv_nsec });
    layout!(
        Statx = libc::statx {
            stx_mask,
            stx_blksize,
            stx_attributes,
            stx_nlink,
            stx_uid,
            stx_gid,
            stx_mode,
            stx_ino,
            stx_size,
            stx_blocks,
            stx_attributes_mask,
            stx_atime,
            stx_btime,
            stx_ctime,
            stx_mtime,
            stx_rdev_major,
            stx_rdev_minor,
            stx_dev_major,
            stx_dev_minor,
            stx_mnt_id,
            stx_dio_mem_align,
            stx_dio_offset_align,
            stx_subvol,
            stx_atomic_write_unit_min,
            stx_atomic_write_unit_max,
            stx_atomic_write_segments_max,
            stx_dio_read_offset_align,
            stx_atomic_write_unit_max_opt,
        }
    );
    layout!(Iovec = libc::iovec { iov_base, iov_len });
    layout!(
        Pollfd = libc::pollfd {
            fd,
            events,
            revents
        }
    );
    layout!(
        Flock = libc::flock {
            l_type,
            l_whence,
            l_start,
            l_len,
            l_pid
        }
    );
    // glibc's dirent64 has a fixed 256-byte name; the header offsets are the kernel's.
    assert_eq!(DIRENT64_INO, offset_of!(libc::dirent64, d_ino));
    assert_eq!(DIRENT64_OFF, offset_of!(libc::dirent64, d_off));
    assert_eq!(DIRENT64_RECLEN, offset_of!(libc::dirent64, d_reclen));
    assert_eq!(DIRENT64_TYPE, offset_of!(libc::dirent64, d_type));
    assert_eq!(DIRENT64_NAME, offset_of!(libc::dirent64, d_name));
}

#[test]
fn file_constants_match_libc() {
    use file::*;
    same!(u32:
        O_RDONLY => libc::O_RDONLY, O_WRONLY => libc::O_WRONLY, O_RDWR => libc::O_RDWR,
        O_ACCMODE => libc::O_ACCMODE, O_CREAT => libc::O_CREAT, O_EXCL => libc::O_EXCL,
        O_NOCTTY => libc::O_NOCTTY, O_TRUNC => libc::O_TRUNC, O_APPEND => libc::O_APPEND,
        O_NONBLOCK => libc::O_NONBLOCK, O_DSYNC => libc::O_DSYNC, O_ASYNC => libc::O_ASYNC,
        O_DIRECT => libc::O_DIRECT, O_DIRECTORY => libc::O_DIRECTORY,
        O_NOFOLLOW => libc::O_NOFOLLOW, O_NOATIME => libc::O_NOATIME,
        O_CLOEXEC => libc::O_CLOEXEC, O_SYNC => libc::O_SYNC, O_PATH => libc::O_PATH,
        O_TMPFILE => libc::O_TMPFILE,
        AT_SYMLINK_NOFOLLOW => libc::AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR => libc::AT_REMOVEDIR,
        AT_EACCESS => libc::AT_EACCESS, AT_SYMLINK_FOLLOW => libc::AT_SYMLINK_FOLLOW,
        AT_NO_AUTOMOUNT => libc::AT_NO_AUTOMOUNT, AT_EMPTY_PATH => libc::AT_EMPTY_PATH,
        AT_STATX_SYNC_AS_STAT => libc::AT_STATX_SYNC_AS_STAT,
        AT_STATX_FORCE_SYNC => libc::AT_STATX_FORCE_SYNC,
        AT_STATX_DONT_SYNC => libc::AT_STATX_DONT_SYNC,
        S_IFMT => libc::S_IFMT, S_IFSOCK => libc::S_IFSOCK, S_IFLNK => libc::S_IFLNK,
        S_IFREG => libc::S_IFREG, S_IFBLK => libc::S_IFBLK, S_IFDIR => libc::S_IFDIR,
        S_IFCHR => libc::S_IFCHR, S_IFIFO => libc::S_IFIFO, S_ISUID => libc::S_ISUID,
        S_ISGID => libc::S_ISGID, S_ISVTX => libc::S_ISVTX, S_IRWXU => libc::S_IRWXU,
        S_IRUSR => libc::S_IRUSR, S_IWUSR => libc::S_IWUSR, S_IXUSR => libc::S_IXUSR,
        S_IRWXG => libc::S_IRWXG, S_IRGRP => libc::S_IRGRP, S_IWGRP => libc::S_IWGRP,
        S_IXGRP => libc::S_IXGRP, S_IRWXO => libc::S_IRWXO, S_IROTH => libc::S_IROTH,
        S_IWOTH => libc::S_IWOTH, S_IXOTH => libc::S_IXOTH,
        F_OK => libc::F_OK, X_OK => libc::X_OK, W_OK => libc::W_OK, R_OK => libc::R_OK,
        RENAME_NOREPLACE => libc::RENAME_NOREPLACE, RENAME_EXCHANGE => libc::RENAME_EXCHANGE,
        RENAME_WHITEOUT => libc::RENAME_WHITEOUT,
        STATX_TYPE => libc::STATX_TYPE, STATX_MODE => libc::STATX_MODE,
        STATX_NLINK => libc::STATX_NLINK, STATX_UID => libc::STATX_UID,
        STATX_GID => libc::STATX_GID, STATX_ATIME => libc::STATX_ATIME,
        STATX_MTIME => libc::STATX_MTIME, STATX_CTIME => libc::STATX_CTIME,
        STATX_INO => libc::STATX_INO, STATX_SIZE => libc::STATX_SIZE,
        STATX_BLOCKS => libc::STATX_BLOCKS, STATX_BASIC_STATS => libc::STATX_BASIC_STATS,
        STATX_BTIME => libc::STATX_BTIME,
    );
    // glibc defines O_LARGEFILE as 0 on 64-bit targets; the kernel's value (musl's too) is:
    assert_eq!(libc::O_LARGEFILE, 0);
    assert_eq!(O_LARGEFILE, 0o100000);
    same!(i32:
        AT_FDCWD => libc::AT_FDCWD,
        F_DUPFD => libc::F_DUPFD, F_GETFD => libc::F_GETFD, F_SETFD => libc::F_SETFD,
        F_GETFL => libc::F_GETFL, F_SETFL => libc::F_SETFL, F_GETLK => libc::F_GETLK,
        F_SETLK => libc::F_SETLK, F_SETLKW => libc::F_SETLKW, F_SETOWN => libc::F_SETOWN,
        F_GETOWN => libc::F_GETOWN,
        F_OFD_GETLK => libc::F_OFD_GETLK, F_OFD_SETLK => libc::F_OFD_SETLK,
        F_OFD_SETLKW => libc::F_OFD_SETLKW, F_DUPFD_CLOEXEC => libc::F_DUPFD_CLOEXEC,
        F_SETPIPE_SZ => libc::F_SETPIPE_SZ, F_GETPIPE_SZ => libc::F_GETPIPE_SZ,
        F_ADD_SEALS => libc::F_ADD_SEALS, F_GET_SEALS => libc::F_GET_SEALS,
        FD_CLOEXEC => libc::FD_CLOEXEC,
        F_RDLCK => libc::F_RDLCK, F_WRLCK => libc::F_WRLCK, F_UNLCK => libc::F_UNLCK,
        SEEK_SET => libc::SEEK_SET, SEEK_CUR => libc::SEEK_CUR, SEEK_END => libc::SEEK_END,
        SEEK_DATA => libc::SEEK_DATA, SEEK_HOLE => libc::SEEK_HOLE,
        POLLIN => libc::POLLIN, POLLPRI => libc::POLLPRI, POLLOUT => libc::POLLOUT,
        POLLERR => libc::POLLERR, POLLHUP => libc::POLLHUP, POLLNVAL => libc::POLLNVAL,
        POLLRDNORM => libc::POLLRDNORM, POLLRDBAND => libc::POLLRDBAND,
        POLLWRNORM => libc::POLLWRNORM, POLLWRBAND => libc::POLLWRBAND,
        POLLRDHUP => libc::POLLRDHUP,
        DT_UNKNOWN => libc::DT_UNKNOWN, DT_FIFO => libc::DT_FIFO, DT_CHR => libc::DT_CHR,
        DT_DIR => libc::DT_DIR, DT_BLK => libc::DT_BLK, DT_REG => libc::DT_REG,
        DT_LNK => libc::DT_LNK, DT_SOCK => libc::DT_SOCK,
    );
    same!(i64: UTIME_NOW => libc::UTIME_NOW, UTIME_OMIT => libc::UTIME_OMIT);
    same!(usize: NAME_MAX => libc::NAME_MAX, PATH_MAX => libc::PATH_MAX);
    // include/uapi/asm-generic/fcntl.h, by hand (libc lacks them for glibc).
    assert_eq!((F_SETSIG, F_GETSIG), (10, 11));
    for (ma, mi) in [
        (0, 0),
        (8, 1),
        (136, 7),
        (0xfff, 0xff),
        (0x1000, 0x100),
        (0xfffff, 0xfffff),
    ] {
        assert_eq!(makedev(ma, mi), libc::makedev(ma, mi));
        assert_eq!(major(makedev(ma, mi)), libc::major(libc::makedev(ma, mi)));
        assert_eq!(minor(makedev(ma, mi)), libc::minor(libc::makedev(ma, mi)));
    }
}

#[test]
fn time_layouts_and_constants_match_libc() {
    use time::*;
    layout!(Timespec = libc::timespec { tv_sec, tv_nsec });
    layout!(Timeval = libc::timeval { tv_sec, tv_usec });
    layout!(
        Itimerval = libc::itimerval {
            it_interval,
            it_value
        }
    );
    layout!(
        Itimerspec = libc::itimerspec {
            it_interval,
            it_value
        }
    );
    layout!(
        Tms = libc::tms {
            tms_utime,
            tms_stime,
            tms_cutime,
            tms_cstime
        }
    );
    // libc's timezone is opaque; include/uapi/linux/time.h: two ints.
    assert_eq!(size_of::<Timezone>(), 8);
    assert_eq!(offset_of!(Timezone, tz_dsttime), 4);
    same!(i32:
        CLOCK_REALTIME => libc::CLOCK_REALTIME, CLOCK_MONOTONIC => libc::CLOCK_MONOTONIC,
        CLOCK_PROCESS_CPUTIME_ID => libc::CLOCK_PROCESS_CPUTIME_ID,
        CLOCK_THREAD_CPUTIME_ID => libc::CLOCK_THREAD_CPUTIME_ID,
        CLOCK_MONOTONIC_RAW => libc::CLOCK_MONOTONIC_RAW,
        CLOCK_REALTIME_COARSE => libc::CLOCK_REALTIME_COARSE,
        CLOCK_MONOTONIC_COARSE => libc::CLOCK_MONOTONIC_COARSE,
        CLOCK_BOOTTIME => libc::CLOCK_BOOTTIME,
        CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME_ALARM,
        CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME_ALARM, CLOCK_TAI => libc::CLOCK_TAI,
        TIMER_ABSTIME => libc::TIMER_ABSTIME,
        ITIMER_REAL => libc::ITIMER_REAL, ITIMER_VIRTUAL => libc::ITIMER_VIRTUAL,
        ITIMER_PROF => libc::ITIMER_PROF,
    );
}

#[test]
fn memory_constants_match_libc() {
    use mm::*;
    same!(u32:
        PROT_NONE => libc::PROT_NONE, PROT_READ => libc::PROT_READ,
        PROT_WRITE => libc::PROT_WRITE, PROT_EXEC => libc::PROT_EXEC,
        PROT_GROWSDOWN => libc::PROT_GROWSDOWN, PROT_GROWSUP => libc::PROT_GROWSUP,
        MAP_SHARED => libc::MAP_SHARED, MAP_PRIVATE => libc::MAP_PRIVATE,
        MAP_SHARED_VALIDATE => libc::MAP_SHARED_VALIDATE, MAP_TYPE => libc::MAP_TYPE,
        MAP_FIXED => libc::MAP_FIXED, MAP_ANONYMOUS => libc::MAP_ANONYMOUS,
        MAP_32BIT => libc::MAP_32BIT, MAP_GROWSDOWN => libc::MAP_GROWSDOWN,
        MAP_DENYWRITE => libc::MAP_DENYWRITE, MAP_EXECUTABLE => libc::MAP_EXECUTABLE,
        MAP_LOCKED => libc::MAP_LOCKED, MAP_NORESERVE => libc::MAP_NORESERVE,
        MAP_POPULATE => libc::MAP_POPULATE, MAP_NONBLOCK => libc::MAP_NONBLOCK,
        MAP_STACK => libc::MAP_STACK, MAP_HUGETLB => libc::MAP_HUGETLB,
        MAP_SYNC => libc::MAP_SYNC, MAP_FIXED_NOREPLACE => libc::MAP_FIXED_NOREPLACE,
        MREMAP_MAYMOVE => libc::MREMAP_MAYMOVE, MREMAP_FIXED => libc::MREMAP_FIXED,
        MREMAP_DONTUNMAP => libc::MREMAP_DONTUNMAP,
        MS_ASYNC => libc::MS_ASYNC, MS_INVALIDATE => libc::MS_INVALIDATE,
        MS_SYNC => libc::MS_SYNC,
    );
    same!(i32:
        MADV_NORMAL => libc::MADV_NORMAL, MADV_RANDOM => libc::MADV_RANDOM,
        MADV_SEQUENTIAL => libc::MADV_SEQUENTIAL, MADV_WILLNEED => libc::MADV_WILLNEED,
        MADV_DONTNEED => libc::MADV_DONTNEED, MADV_FREE => libc::MADV_FREE,
        MADV_REMOVE => libc::MADV_REMOVE, MADV_DONTFORK => libc::MADV_DONTFORK,
        MADV_DOFORK => libc::MADV_DOFORK, MADV_HUGEPAGE => libc::MADV_HUGEPAGE,
        MADV_NOHUGEPAGE => libc::MADV_NOHUGEPAGE, MADV_DONTDUMP => libc::MADV_DONTDUMP,
    );
    assert_eq!(MAP_FAILED, libc::MAP_FAILED as u64);
}

#[test]
fn process_layouts_and_constants_match_libc() {
    use process::*;
    // libc's clone flags are C ints (CLONE_IO is negative there): compare the 32 bits.
    for (ours, theirs) in [
        (CSIGNAL, libc::CSIGNAL),
        (CLONE_VM, libc::CLONE_VM),
        (CLONE_FS, libc::CLONE_FS),
        (CLONE_FILES, libc::CLONE_FILES),
        (CLONE_SIGHAND, libc::CLONE_SIGHAND),
        (CLONE_PIDFD, libc::CLONE_PIDFD),
        (CLONE_PTRACE, libc::CLONE_PTRACE),
        (CLONE_VFORK, libc::CLONE_VFORK),
        (CLONE_PARENT, libc::CLONE_PARENT),
        (CLONE_THREAD, libc::CLONE_THREAD),
        (CLONE_NEWNS, libc::CLONE_NEWNS),
        (CLONE_SYSVSEM, libc::CLONE_SYSVSEM),
        (CLONE_SETTLS, libc::CLONE_SETTLS),
        (CLONE_PARENT_SETTID, libc::CLONE_PARENT_SETTID),
        (CLONE_CHILD_CLEARTID, libc::CLONE_CHILD_CLEARTID),
        (CLONE_DETACHED, libc::CLONE_DETACHED),
        (CLONE_UNTRACED, libc::CLONE_UNTRACED),
        (CLONE_CHILD_SETTID, libc::CLONE_CHILD_SETTID),
        (CLONE_NEWCGROUP, libc::CLONE_NEWCGROUP),
        (CLONE_NEWUTS, libc::CLONE_NEWUTS),
        (CLONE_NEWIPC, libc::CLONE_NEWIPC),
        (CLONE_NEWUSER, libc::CLONE_NEWUSER),
        (CLONE_NEWPID, libc::CLONE_NEWPID),
        (CLONE_NEWNET, libc::CLONE_NEWNET),
        (CLONE_IO, libc::CLONE_IO),
    ] {
        assert_eq!(ours, theirs as u32 as u64);
    }
    assert_eq!(RLIM_INFINITY, libc::RLIM_INFINITY);
    same!(u32:
        WNOHANG => libc::WNOHANG, WUNTRACED => libc::WUNTRACED, WSTOPPED => libc::WSTOPPED,
        WEXITED => libc::WEXITED, WCONTINUED => libc::WCONTINUED, WNOWAIT => libc::WNOWAIT,
        __WNOTHREAD => libc::__WNOTHREAD, __WALL => libc::__WALL, __WCLONE => libc::__WCLONE,
        GRND_NONBLOCK => libc::GRND_NONBLOCK, GRND_RANDOM => libc::GRND_RANDOM,
        GRND_INSECURE => libc::GRND_INSECURE,
    );
    same!(i32:
        P_ALL => libc::P_ALL, P_PID => libc::P_PID, P_PGID => libc::P_PGID,
        P_PIDFD => libc::P_PIDFD,
        RLIMIT_CPU => libc::RLIMIT_CPU, RLIMIT_FSIZE => libc::RLIMIT_FSIZE,
        RLIMIT_DATA => libc::RLIMIT_DATA, RLIMIT_STACK => libc::RLIMIT_STACK,
        RLIMIT_CORE => libc::RLIMIT_CORE, RLIMIT_RSS => libc::RLIMIT_RSS,
        RLIMIT_NPROC => libc::RLIMIT_NPROC, RLIMIT_NOFILE => libc::RLIMIT_NOFILE,
        RLIMIT_MEMLOCK => libc::RLIMIT_MEMLOCK, RLIMIT_AS => libc::RLIMIT_AS,
        RLIMIT_LOCKS => libc::RLIMIT_LOCKS, RLIMIT_SIGPENDING => libc::RLIMIT_SIGPENDING,
        RLIMIT_MSGQUEUE => libc::RLIMIT_MSGQUEUE, RLIMIT_NICE => libc::RLIMIT_NICE,
        RLIMIT_RTPRIO => libc::RLIMIT_RTPRIO, RLIMIT_RTTIME => libc::RLIMIT_RTTIME,
        RUSAGE_SELF => libc::RUSAGE_SELF, RUSAGE_CHILDREN => libc::RUSAGE_CHILDREN,
        RUSAGE_THREAD => libc::RUSAGE_THREAD,
        PR_SET_PDEATHSIG => libc::PR_SET_PDEATHSIG, PR_GET_PDEATHSIG => libc::PR_GET_PDEATHSIG,
        PR_GET_DUMPABLE => libc::PR_GET_DUMPABLE, PR_SET_DUMPABLE => libc::PR_SET_DUMPABLE,
        PR_GET_KEEPCAPS => libc::PR_GET_KEEPCAPS, PR_SET_KEEPCAPS => libc::PR_SET_KEEPCAPS,
        PR_SET_NAME => libc::PR_SET_NAME, PR_GET_NAME => libc::PR_GET_NAME,
        PR_GET_SECCOMP => libc::PR_GET_SECCOMP, PR_SET_SECCOMP => libc::PR_SET_SECCOMP,
        PR_CAPBSET_READ => libc::PR_CAPBSET_READ, PR_CAPBSET_DROP => libc::PR_CAPBSET_DROP,
        PR_SET_TIMERSLACK => libc::PR_SET_TIMERSLACK,
        PR_GET_TIMERSLACK => libc::PR_GET_TIMERSLACK,
        PR_SET_CHILD_SUBREAPER => libc::PR_SET_CHILD_SUBREAPER,
        PR_GET_CHILD_SUBREAPER => libc::PR_GET_CHILD_SUBREAPER,
        PR_SET_NO_NEW_PRIVS => libc::PR_SET_NO_NEW_PRIVS,
        PR_GET_NO_NEW_PRIVS => libc::PR_GET_NO_NEW_PRIVS,
        PR_SET_THP_DISABLE => libc::PR_SET_THP_DISABLE,
        PR_GET_THP_DISABLE => libc::PR_GET_THP_DISABLE,
        PR_SET_VMA => libc::PR_SET_VMA, PR_SET_VMA_ANON_NAME => libc::PR_SET_VMA_ANON_NAME,
    );
    // arch/x86/include/uapi/asm/prctl.h, by hand (libc has no ARCH_* for x86_64).
    assert_eq!(
        (
            ARCH_SET_GS,
            ARCH_SET_FS,
            ARCH_GET_FS,
            ARCH_GET_GS,
            ARCH_GET_CPUID,
            ARCH_SET_CPUID
        ),
        (0x1001, 0x1002, 0x1003, 0x1004, 0x1011, 0x1012)
    );
    assert_eq!(TASK_COMM_LEN, 16);
    // include/uapi/asm-generic/resource.h (libc deprecates its copy as unstable across versions).
    assert_eq!(RLIM_NLIMITS, 16);
    layout!(Rlimit = libc::rlimit { rlim_cur, rlim_max });
    layout!(
        Rusage = libc::rusage {
            ru_utime,
            ru_stime,
            ru_maxrss,
            ru_ixrss,
            ru_idrss,
            ru_isrss,
            ru_minflt,
            ru_majflt,
            ru_nswap,
            ru_inblock,
            ru_oublock,
            ru_msgsnd,
            ru_msgrcv,
            ru_nsignals,
            ru_nvcsw,
            ru_nivcsw,
        }
    );
    layout!(
        Utsname = libc::utsname {
            sysname,
            nodename,
            release,
            version,
            machine,
            domainname
        }
    );
    layout!(
        Sysinfo = libc::sysinfo {
            uptime,
            loads,
            totalram,
            freeram,
            sharedram,
            bufferram,
            totalswap,
            freeswap,
            procs,
            pad,
            totalhigh,
            freehigh,
            mem_unit,
        }
    );
}

#[test]
fn wait_statuses_decode_with_the_c_macros() {
    use process::wait_status::*;
    for code in [0, 1, 42, 255] {
        let s = exited(code);
        assert!(libc::WIFEXITED(s) && !libc::WIFSIGNALED(s) && !libc::WIFSTOPPED(s));
        assert_eq!(libc::WEXITSTATUS(s), code);
    }
    for sig in [1, 9, 11, 15, 31, 64] {
        for core in [false, true] {
            let s = signaled(sig, core);
            assert!(libc::WIFSIGNALED(s) && !libc::WIFEXITED(s) && !libc::WIFSTOPPED(s));
            assert_eq!(libc::WTERMSIG(s), sig);
            assert_eq!(libc::WCOREDUMP(s), core);
        }
        let s = stopped(sig);
        assert!(libc::WIFSTOPPED(s) && !libc::WIFEXITED(s) && !libc::WIFSIGNALED(s));
        assert_eq!(libc::WSTOPSIG(s), sig);
    }
    assert!(libc::WIFCONTINUED(continued()));
    assert!(!libc::WIFEXITED(continued()) && !libc::WIFSIGNALED(continued()));
}

#[test]
fn futex_constants_match_libc() {
    use futex::*;
    same!(i32:
        FUTEX_WAIT => libc::FUTEX_WAIT, FUTEX_WAKE => libc::FUTEX_WAKE,
        FUTEX_FD => libc::FUTEX_FD, FUTEX_REQUEUE => libc::FUTEX_REQUEUE,
        FUTEX_CMP_REQUEUE => libc::FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP => libc::FUTEX_WAKE_OP,
        FUTEX_LOCK_PI => libc::FUTEX_LOCK_PI, FUTEX_UNLOCK_PI => libc::FUTEX_UNLOCK_PI,
        FUTEX_TRYLOCK_PI => libc::FUTEX_TRYLOCK_PI,
        FUTEX_WAIT_BITSET => libc::FUTEX_WAIT_BITSET,
        FUTEX_WAKE_BITSET => libc::FUTEX_WAKE_BITSET,
        FUTEX_WAIT_REQUEUE_PI => libc::FUTEX_WAIT_REQUEUE_PI,
        FUTEX_CMP_REQUEUE_PI => libc::FUTEX_CMP_REQUEUE_PI,
        FUTEX_LOCK_PI2 => libc::FUTEX_LOCK_PI2,
        FUTEX_PRIVATE_FLAG => libc::FUTEX_PRIVATE_FLAG,
        FUTEX_CLOCK_REALTIME => libc::FUTEX_CLOCK_REALTIME,
        FUTEX_ROBUST_UNLOCK => libc::FUTEX_ROBUST_UNLOCK,
        FUTEX_ROBUST_LIST32 => libc::FUTEX_ROBUST_LIST32,
        FUTEX_CMD_MASK => libc::FUTEX_CMD_MASK,
    );
    same!(u32:
        FUTEX_BITSET_MATCH_ANY => libc::FUTEX_BITSET_MATCH_ANY,
        FUTEX_WAITERS => libc::FUTEX_WAITERS, FUTEX_OWNER_DIED => libc::FUTEX_OWNER_DIED,
        FUTEX_TID_MASK => libc::FUTEX_TID_MASK,
    );
}

#[test]
fn tty_layouts_and_constants_match_libc() {
    use tty::*;
    // libc::termios is glibc's user-space termios (with speeds and 32 control characters);
    // the kernel's TCGETS struct is the prefix of termios2 (asm-generic/termbits.h): four
    // flag words, c_line, c_cc[19], then termios2's c_ispeed, which is where ours ends.
    for (ours, theirs) in [
        (
            offset_of!(Termios, c_iflag),
            offset_of!(libc::termios2, c_iflag),
        ),
        (
            offset_of!(Termios, c_oflag),
            offset_of!(libc::termios2, c_oflag),
        ),
        (
            offset_of!(Termios, c_cflag),
            offset_of!(libc::termios2, c_cflag),
        ),
        (
            offset_of!(Termios, c_lflag),
            offset_of!(libc::termios2, c_lflag),
        ),
        (
            offset_of!(Termios, c_line),
            offset_of!(libc::termios2, c_line),
        ),
        (offset_of!(Termios, c_cc), offset_of!(libc::termios2, c_cc)),
        (size_of::<Termios>(), offset_of!(libc::termios2, c_ispeed)),
    ] {
        assert_eq!(ours, theirs);
    }
    let t = libc::termios2 {
        c_iflag: 0,
        c_oflag: 0,
        c_cflag: 0,
        c_lflag: 0,
        c_line: 0,
        c_cc: [0; NCCS],
        c_ispeed: 0,
        c_ospeed: 0,
    };
    assert_eq!(t.c_cc.len(), NCCS);
    layout!(
        Winsize = libc::winsize {
            ws_row,
            ws_col,
            ws_xpixel,
            ws_ypixel
        }
    );
    same!(u32:
        TCGETS => libc::TCGETS, TCSETS => libc::TCSETS, TCSETSW => libc::TCSETSW,
        TCSETSF => libc::TCSETSF, TCSBRK => libc::TCSBRK, TCXONC => libc::TCXONC,
        TCFLSH => libc::TCFLSH, TIOCSCTTY => libc::TIOCSCTTY, TIOCGPGRP => libc::TIOCGPGRP,
        TIOCSPGRP => libc::TIOCSPGRP, TIOCOUTQ => libc::TIOCOUTQ,
        TIOCGWINSZ => libc::TIOCGWINSZ, TIOCSWINSZ => libc::TIOCSWINSZ,
        FIONREAD => libc::FIONREAD, FIONBIO => libc::FIONBIO, TIOCNOTTY => libc::TIOCNOTTY,
        TIOCGSID => libc::TIOCGSID, FIONCLEX => libc::FIONCLEX, FIOCLEX => libc::FIOCLEX,
        FIOASYNC => libc::FIOASYNC, TIOCGPTN => libc::TIOCGPTN, TIOCSPTLCK => libc::TIOCSPTLCK,
        TCIFLUSH => libc::TCIFLUSH, TCOFLUSH => libc::TCOFLUSH, TCIOFLUSH => libc::TCIOFLUSH,
        IGNBRK => libc::IGNBRK, BRKINT => libc::BRKINT, IGNPAR => libc::IGNPAR,
        PARMRK => libc::PARMRK, INPCK => libc::INPCK, ISTRIP => libc::ISTRIP,
        INLCR => libc::INLCR, IGNCR => libc::IGNCR, ICRNL => libc::ICRNL, IXON => libc::IXON,
        IXANY => libc::IXANY, IXOFF => libc::IXOFF, IMAXBEL => libc::IMAXBEL,
        IUTF8 => libc::IUTF8, OPOST => libc::OPOST, ONLCR => libc::ONLCR, OCRNL => libc::OCRNL,
        CBAUD => libc::CBAUD, B38400 => libc::B38400, CSIZE => libc::CSIZE, CS8 => libc::CS8,
        CSTOPB => libc::CSTOPB, CREAD => libc::CREAD, PARENB => libc::PARENB,
        HUPCL => libc::HUPCL, CLOCAL => libc::CLOCAL,
        ISIG => libc::ISIG, ICANON => libc::ICANON, ECHO => libc::ECHO, ECHOE => libc::ECHOE,
        ECHOK => libc::ECHOK, ECHONL => libc::ECHONL, NOFLSH => libc::NOFLSH,
        TOSTOP => libc::TOSTOP, ECHOCTL => libc::ECHOCTL, ECHOKE => libc::ECHOKE,
        IEXTEN => libc::IEXTEN,
    );
    same!(usize:
        VINTR => libc::VINTR, VQUIT => libc::VQUIT, VERASE => libc::VERASE,
        VKILL => libc::VKILL, VEOF => libc::VEOF, VTIME => libc::VTIME, VMIN => libc::VMIN,
        VSWTC => libc::VSWTC, VSTART => libc::VSTART, VSTOP => libc::VSTOP,
        VSUSP => libc::VSUSP, VEOL => libc::VEOL, VREPRINT => libc::VREPRINT,
        VDISCARD => libc::VDISCARD, VWERASE => libc::VWERASE, VLNEXT => libc::VLNEXT,
        VEOL2 => libc::VEOL2,
    );
}

#[test]
fn block_ioctl_numbers_match_libc() {
    // libc names only the sector-size request; the others are checked against their
    // encoding in the module's own tests.
    same!(u64: k42_linux_abi::block::BLKSSZGET => libc::BLKSSZGET);
}
