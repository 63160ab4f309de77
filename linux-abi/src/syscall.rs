//! x86_64 Linux system-call numbers, their names, and the decoded arguments of one call.
//!
//! The table covers every number of the x86_64 ABI, `0..=334` and `424..=462` (335..=423 are
//! unused on x86_64: the numbers shared with 32-bit ABIs start at 424). Arguments arrive in
//! `rdi, rsi, rdx, r10, r8, r9` with the number in `rax`; the result goes back in `rax`, an
//! error as `-errno` (see [`error_return`]).

/// Declares the numbers as `SYS_*` constants and the number-to-name table from one list.
macro_rules! syscalls {
    ($($konst:ident = $nr:literal => $name:ident;)*) => {
        $(
            #[doc = concat!("`", stringify!($name), "` (", stringify!($nr), ").")]
            pub const $konst: u64 = $nr;
        )*

        /// The name of system call `nr` (e.g. `"openat"`), `None` for numbers Linux leaves unused.
        pub fn name(nr: u64) -> Option<&'static str> {
            match nr {
                $($nr => Some(stringify!($name)),)*
                _ => None,
            }
        }

        /// Every defined number, ascending.
        pub const ALL: &[u64] = &[$($nr),*];
    };
}

syscalls! {
    SYS_READ = 0 => read;
    SYS_WRITE = 1 => write;
    SYS_OPEN = 2 => open;
    SYS_CLOSE = 3 => close;
    SYS_STAT = 4 => stat;
    SYS_FSTAT = 5 => fstat;
    SYS_LSTAT = 6 => lstat;
    SYS_POLL = 7 => poll;
    SYS_LSEEK = 8 => lseek;
    SYS_MMAP = 9 => mmap;
    SYS_MPROTECT = 10 => mprotect;
    SYS_MUNMAP = 11 => munmap;
    SYS_BRK = 12 => brk;
    SYS_RT_SIGACTION = 13 => rt_sigaction;
    SYS_RT_SIGPROCMASK = 14 => rt_sigprocmask;
    SYS_RT_SIGRETURN = 15 => rt_sigreturn;
    SYS_IOCTL = 16 => ioctl;
    SYS_PREAD64 = 17 => pread64;
    SYS_PWRITE64 = 18 => pwrite64;
    SYS_READV = 19 => readv;
    SYS_WRITEV = 20 => writev;
    SYS_ACCESS = 21 => access;
    SYS_PIPE = 22 => pipe;
    SYS_SELECT = 23 => select;
    SYS_SCHED_YIELD = 24 => sched_yield;
    SYS_MREMAP = 25 => mremap;
    SYS_MSYNC = 26 => msync;
    SYS_MINCORE = 27 => mincore;
    SYS_MADVISE = 28 => madvise;
    SYS_SHMGET = 29 => shmget;
    SYS_SHMAT = 30 => shmat;
    SYS_SHMCTL = 31 => shmctl;
    SYS_DUP = 32 => dup;
    SYS_DUP2 = 33 => dup2;
    SYS_PAUSE = 34 => pause;
    SYS_NANOSLEEP = 35 => nanosleep;
    SYS_GETITIMER = 36 => getitimer;
    SYS_ALARM = 37 => alarm;
    SYS_SETITIMER = 38 => setitimer;
    SYS_GETPID = 39 => getpid;
    SYS_SENDFILE = 40 => sendfile;
    SYS_SOCKET = 41 => socket;
    SYS_CONNECT = 42 => connect;
    SYS_ACCEPT = 43 => accept;
    SYS_SENDTO = 44 => sendto;
    SYS_RECVFROM = 45 => recvfrom;
    SYS_SENDMSG = 46 => sendmsg;
    SYS_RECVMSG = 47 => recvmsg;
    SYS_SHUTDOWN = 48 => shutdown;
    SYS_BIND = 49 => bind;
    SYS_LISTEN = 50 => listen;
    SYS_GETSOCKNAME = 51 => getsockname;
    SYS_GETPEERNAME = 52 => getpeername;
    SYS_SOCKETPAIR = 53 => socketpair;
    SYS_SETSOCKOPT = 54 => setsockopt;
    SYS_GETSOCKOPT = 55 => getsockopt;
    SYS_CLONE = 56 => clone;
    SYS_FORK = 57 => fork;
    SYS_VFORK = 58 => vfork;
    SYS_EXECVE = 59 => execve;
    SYS_EXIT = 60 => exit;
    SYS_WAIT4 = 61 => wait4;
    SYS_KILL = 62 => kill;
    SYS_UNAME = 63 => uname;
    SYS_SEMGET = 64 => semget;
    SYS_SEMOP = 65 => semop;
    SYS_SEMCTL = 66 => semctl;
    SYS_SHMDT = 67 => shmdt;
    SYS_MSGGET = 68 => msgget;
    SYS_MSGSND = 69 => msgsnd;
    SYS_MSGRCV = 70 => msgrcv;
    SYS_MSGCTL = 71 => msgctl;
    SYS_FCNTL = 72 => fcntl;
    SYS_FLOCK = 73 => flock;
    SYS_FSYNC = 74 => fsync;
    SYS_FDATASYNC = 75 => fdatasync;
    SYS_TRUNCATE = 76 => truncate;
    SYS_FTRUNCATE = 77 => ftruncate;
    SYS_GETDENTS = 78 => getdents;
    SYS_GETCWD = 79 => getcwd;
    SYS_CHDIR = 80 => chdir;
    SYS_FCHDIR = 81 => fchdir;
    SYS_RENAME = 82 => rename;
    SYS_MKDIR = 83 => mkdir;
    SYS_RMDIR = 84 => rmdir;
    SYS_CREAT = 85 => creat;
    SYS_LINK = 86 => link;
    SYS_UNLINK = 87 => unlink;
    SYS_SYMLINK = 88 => symlink;
    SYS_READLINK = 89 => readlink;
    SYS_CHMOD = 90 => chmod;
    SYS_FCHMOD = 91 => fchmod;
    SYS_CHOWN = 92 => chown;
    SYS_FCHOWN = 93 => fchown;
    SYS_LCHOWN = 94 => lchown;
    SYS_UMASK = 95 => umask;
    SYS_GETTIMEOFDAY = 96 => gettimeofday;
    SYS_GETRLIMIT = 97 => getrlimit;
    SYS_GETRUSAGE = 98 => getrusage;
    SYS_SYSINFO = 99 => sysinfo;
    SYS_TIMES = 100 => times;
    SYS_PTRACE = 101 => ptrace;
    SYS_GETUID = 102 => getuid;
    SYS_SYSLOG = 103 => syslog;
    SYS_GETGID = 104 => getgid;
    SYS_SETUID = 105 => setuid;
    SYS_SETGID = 106 => setgid;
    SYS_GETEUID = 107 => geteuid;
    SYS_GETEGID = 108 => getegid;
    SYS_SETPGID = 109 => setpgid;
    SYS_GETPPID = 110 => getppid;
    SYS_GETPGRP = 111 => getpgrp;
    SYS_SETSID = 112 => setsid;
    SYS_SETREUID = 113 => setreuid;
    SYS_SETREGID = 114 => setregid;
    SYS_GETGROUPS = 115 => getgroups;
    SYS_SETGROUPS = 116 => setgroups;
    SYS_SETRESUID = 117 => setresuid;
    SYS_GETRESUID = 118 => getresuid;
    SYS_SETRESGID = 119 => setresgid;
    SYS_GETRESGID = 120 => getresgid;
    SYS_GETPGID = 121 => getpgid;
    SYS_SETFSUID = 122 => setfsuid;
    SYS_SETFSGID = 123 => setfsgid;
    SYS_GETSID = 124 => getsid;
    SYS_CAPGET = 125 => capget;
    SYS_CAPSET = 126 => capset;
    SYS_RT_SIGPENDING = 127 => rt_sigpending;
    SYS_RT_SIGTIMEDWAIT = 128 => rt_sigtimedwait;
    SYS_RT_SIGQUEUEINFO = 129 => rt_sigqueueinfo;
    SYS_RT_SIGSUSPEND = 130 => rt_sigsuspend;
    SYS_SIGALTSTACK = 131 => sigaltstack;
    SYS_UTIME = 132 => utime;
    SYS_MKNOD = 133 => mknod;
    SYS_USELIB = 134 => uselib;
    SYS_PERSONALITY = 135 => personality;
    SYS_USTAT = 136 => ustat;
    SYS_STATFS = 137 => statfs;
    SYS_FSTATFS = 138 => fstatfs;
    SYS_SYSFS = 139 => sysfs;
    SYS_GETPRIORITY = 140 => getpriority;
    SYS_SETPRIORITY = 141 => setpriority;
    SYS_SCHED_SETPARAM = 142 => sched_setparam;
    SYS_SCHED_GETPARAM = 143 => sched_getparam;
    SYS_SCHED_SETSCHEDULER = 144 => sched_setscheduler;
    SYS_SCHED_GETSCHEDULER = 145 => sched_getscheduler;
    SYS_SCHED_GET_PRIORITY_MAX = 146 => sched_get_priority_max;
    SYS_SCHED_GET_PRIORITY_MIN = 147 => sched_get_priority_min;
    SYS_SCHED_RR_GET_INTERVAL = 148 => sched_rr_get_interval;
    SYS_MLOCK = 149 => mlock;
    SYS_MUNLOCK = 150 => munlock;
    SYS_MLOCKALL = 151 => mlockall;
    SYS_MUNLOCKALL = 152 => munlockall;
    SYS_VHANGUP = 153 => vhangup;
    SYS_MODIFY_LDT = 154 => modify_ldt;
    SYS_PIVOT_ROOT = 155 => pivot_root;
    SYS__SYSCTL = 156 => _sysctl;
    SYS_PRCTL = 157 => prctl;
    SYS_ARCH_PRCTL = 158 => arch_prctl;
    SYS_ADJTIMEX = 159 => adjtimex;
    SYS_SETRLIMIT = 160 => setrlimit;
    SYS_CHROOT = 161 => chroot;
    SYS_SYNC = 162 => sync;
    SYS_ACCT = 163 => acct;
    SYS_SETTIMEOFDAY = 164 => settimeofday;
    SYS_MOUNT = 165 => mount;
    SYS_UMOUNT2 = 166 => umount2;
    SYS_SWAPON = 167 => swapon;
    SYS_SWAPOFF = 168 => swapoff;
    SYS_REBOOT = 169 => reboot;
    SYS_SETHOSTNAME = 170 => sethostname;
    SYS_SETDOMAINNAME = 171 => setdomainname;
    SYS_IOPL = 172 => iopl;
    SYS_IOPERM = 173 => ioperm;
    SYS_CREATE_MODULE = 174 => create_module;
    SYS_INIT_MODULE = 175 => init_module;
    SYS_DELETE_MODULE = 176 => delete_module;
    SYS_GET_KERNEL_SYMS = 177 => get_kernel_syms;
    SYS_QUERY_MODULE = 178 => query_module;
    SYS_QUOTACTL = 179 => quotactl;
    SYS_NFSSERVCTL = 180 => nfsservctl;
    SYS_GETPMSG = 181 => getpmsg;
    SYS_PUTPMSG = 182 => putpmsg;
    SYS_AFS_SYSCALL = 183 => afs_syscall;
    SYS_TUXCALL = 184 => tuxcall;
    SYS_SECURITY = 185 => security;
    SYS_GETTID = 186 => gettid;
    SYS_READAHEAD = 187 => readahead;
    SYS_SETXATTR = 188 => setxattr;
    SYS_LSETXATTR = 189 => lsetxattr;
    SYS_FSETXATTR = 190 => fsetxattr;
    SYS_GETXATTR = 191 => getxattr;
    SYS_LGETXATTR = 192 => lgetxattr;
    SYS_FGETXATTR = 193 => fgetxattr;
    SYS_LISTXATTR = 194 => listxattr;
    SYS_LLISTXATTR = 195 => llistxattr;
    SYS_FLISTXATTR = 196 => flistxattr;
    SYS_REMOVEXATTR = 197 => removexattr;
    SYS_LREMOVEXATTR = 198 => lremovexattr;
    SYS_FREMOVEXATTR = 199 => fremovexattr;
    SYS_TKILL = 200 => tkill;
    SYS_TIME = 201 => time;
    SYS_FUTEX = 202 => futex;
    SYS_SCHED_SETAFFINITY = 203 => sched_setaffinity;
    SYS_SCHED_GETAFFINITY = 204 => sched_getaffinity;
    SYS_SET_THREAD_AREA = 205 => set_thread_area;
    SYS_IO_SETUP = 206 => io_setup;
    SYS_IO_DESTROY = 207 => io_destroy;
    SYS_IO_GETEVENTS = 208 => io_getevents;
    SYS_IO_SUBMIT = 209 => io_submit;
    SYS_IO_CANCEL = 210 => io_cancel;
    SYS_GET_THREAD_AREA = 211 => get_thread_area;
    SYS_LOOKUP_DCOOKIE = 212 => lookup_dcookie;
    SYS_EPOLL_CREATE = 213 => epoll_create;
    SYS_EPOLL_CTL_OLD = 214 => epoll_ctl_old;
    SYS_EPOLL_WAIT_OLD = 215 => epoll_wait_old;
    SYS_REMAP_FILE_PAGES = 216 => remap_file_pages;
    SYS_GETDENTS64 = 217 => getdents64;
    SYS_SET_TID_ADDRESS = 218 => set_tid_address;
    SYS_RESTART_SYSCALL = 219 => restart_syscall;
    SYS_SEMTIMEDOP = 220 => semtimedop;
    SYS_FADVISE64 = 221 => fadvise64;
    SYS_TIMER_CREATE = 222 => timer_create;
    SYS_TIMER_SETTIME = 223 => timer_settime;
    SYS_TIMER_GETTIME = 224 => timer_gettime;
    SYS_TIMER_GETOVERRUN = 225 => timer_getoverrun;
    SYS_TIMER_DELETE = 226 => timer_delete;
    SYS_CLOCK_SETTIME = 227 => clock_settime;
    SYS_CLOCK_GETTIME = 228 => clock_gettime;
    SYS_CLOCK_GETRES = 229 => clock_getres;
    SYS_CLOCK_NANOSLEEP = 230 => clock_nanosleep;
    SYS_EXIT_GROUP = 231 => exit_group;
    SYS_EPOLL_WAIT = 232 => epoll_wait;
    SYS_EPOLL_CTL = 233 => epoll_ctl;
    SYS_TGKILL = 234 => tgkill;
    SYS_UTIMES = 235 => utimes;
    SYS_VSERVER = 236 => vserver;
    SYS_MBIND = 237 => mbind;
    SYS_SET_MEMPOLICY = 238 => set_mempolicy;
    SYS_GET_MEMPOLICY = 239 => get_mempolicy;
    SYS_MQ_OPEN = 240 => mq_open;
    SYS_MQ_UNLINK = 241 => mq_unlink;
    SYS_MQ_TIMEDSEND = 242 => mq_timedsend;
    SYS_MQ_TIMEDRECEIVE = 243 => mq_timedreceive;
    SYS_MQ_NOTIFY = 244 => mq_notify;
    SYS_MQ_GETSETATTR = 245 => mq_getsetattr;
    SYS_KEXEC_LOAD = 246 => kexec_load;
    SYS_WAITID = 247 => waitid;
    SYS_ADD_KEY = 248 => add_key;
    SYS_REQUEST_KEY = 249 => request_key;
    SYS_KEYCTL = 250 => keyctl;
    SYS_IOPRIO_SET = 251 => ioprio_set;
    SYS_IOPRIO_GET = 252 => ioprio_get;
    SYS_INOTIFY_INIT = 253 => inotify_init;
    SYS_INOTIFY_ADD_WATCH = 254 => inotify_add_watch;
    SYS_INOTIFY_RM_WATCH = 255 => inotify_rm_watch;
    SYS_MIGRATE_PAGES = 256 => migrate_pages;
    SYS_OPENAT = 257 => openat;
    SYS_MKDIRAT = 258 => mkdirat;
    SYS_MKNODAT = 259 => mknodat;
    SYS_FCHOWNAT = 260 => fchownat;
    SYS_FUTIMESAT = 261 => futimesat;
    SYS_NEWFSTATAT = 262 => newfstatat;
    SYS_UNLINKAT = 263 => unlinkat;
    SYS_RENAMEAT = 264 => renameat;
    SYS_LINKAT = 265 => linkat;
    SYS_SYMLINKAT = 266 => symlinkat;
    SYS_READLINKAT = 267 => readlinkat;
    SYS_FCHMODAT = 268 => fchmodat;
    SYS_FACCESSAT = 269 => faccessat;
    SYS_PSELECT6 = 270 => pselect6;
    SYS_PPOLL = 271 => ppoll;
    SYS_UNSHARE = 272 => unshare;
    SYS_SET_ROBUST_LIST = 273 => set_robust_list;
    SYS_GET_ROBUST_LIST = 274 => get_robust_list;
    SYS_SPLICE = 275 => splice;
    SYS_TEE = 276 => tee;
    SYS_SYNC_FILE_RANGE = 277 => sync_file_range;
    SYS_VMSPLICE = 278 => vmsplice;
    SYS_MOVE_PAGES = 279 => move_pages;
    SYS_UTIMENSAT = 280 => utimensat;
    SYS_EPOLL_PWAIT = 281 => epoll_pwait;
    SYS_SIGNALFD = 282 => signalfd;
    SYS_TIMERFD_CREATE = 283 => timerfd_create;
    SYS_EVENTFD = 284 => eventfd;
    SYS_FALLOCATE = 285 => fallocate;
    SYS_TIMERFD_SETTIME = 286 => timerfd_settime;
    SYS_TIMERFD_GETTIME = 287 => timerfd_gettime;
    SYS_ACCEPT4 = 288 => accept4;
    SYS_SIGNALFD4 = 289 => signalfd4;
    SYS_EVENTFD2 = 290 => eventfd2;
    SYS_EPOLL_CREATE1 = 291 => epoll_create1;
    SYS_DUP3 = 292 => dup3;
    SYS_PIPE2 = 293 => pipe2;
    SYS_INOTIFY_INIT1 = 294 => inotify_init1;
    SYS_PREADV = 295 => preadv;
    SYS_PWRITEV = 296 => pwritev;
    SYS_RT_TGSIGQUEUEINFO = 297 => rt_tgsigqueueinfo;
    SYS_PERF_EVENT_OPEN = 298 => perf_event_open;
    SYS_RECVMMSG = 299 => recvmmsg;
    SYS_FANOTIFY_INIT = 300 => fanotify_init;
    SYS_FANOTIFY_MARK = 301 => fanotify_mark;
    SYS_PRLIMIT64 = 302 => prlimit64;
    SYS_NAME_TO_HANDLE_AT = 303 => name_to_handle_at;
    SYS_OPEN_BY_HANDLE_AT = 304 => open_by_handle_at;
    SYS_CLOCK_ADJTIME = 305 => clock_adjtime;
    SYS_SYNCFS = 306 => syncfs;
    SYS_SENDMMSG = 307 => sendmmsg;
    SYS_SETNS = 308 => setns;
    SYS_GETCPU = 309 => getcpu;
    SYS_PROCESS_VM_READV = 310 => process_vm_readv;
    SYS_PROCESS_VM_WRITEV = 311 => process_vm_writev;
    SYS_KCMP = 312 => kcmp;
    SYS_FINIT_MODULE = 313 => finit_module;
    SYS_SCHED_SETATTR = 314 => sched_setattr;
    SYS_SCHED_GETATTR = 315 => sched_getattr;
    SYS_RENAMEAT2 = 316 => renameat2;
    SYS_SECCOMP = 317 => seccomp;
    SYS_GETRANDOM = 318 => getrandom;
    SYS_MEMFD_CREATE = 319 => memfd_create;
    SYS_KEXEC_FILE_LOAD = 320 => kexec_file_load;
    SYS_BPF = 321 => bpf;
    SYS_EXECVEAT = 322 => execveat;
    SYS_USERFAULTFD = 323 => userfaultfd;
    SYS_MEMBARRIER = 324 => membarrier;
    SYS_MLOCK2 = 325 => mlock2;
    SYS_COPY_FILE_RANGE = 326 => copy_file_range;
    SYS_PREADV2 = 327 => preadv2;
    SYS_PWRITEV2 = 328 => pwritev2;
    SYS_PKEY_MPROTECT = 329 => pkey_mprotect;
    SYS_PKEY_ALLOC = 330 => pkey_alloc;
    SYS_PKEY_FREE = 331 => pkey_free;
    SYS_STATX = 332 => statx;
    SYS_IO_PGETEVENTS = 333 => io_pgetevents;
    SYS_RSEQ = 334 => rseq;
    SYS_PIDFD_SEND_SIGNAL = 424 => pidfd_send_signal;
    SYS_IO_URING_SETUP = 425 => io_uring_setup;
    SYS_IO_URING_ENTER = 426 => io_uring_enter;
    SYS_IO_URING_REGISTER = 427 => io_uring_register;
    SYS_OPEN_TREE = 428 => open_tree;
    SYS_MOVE_MOUNT = 429 => move_mount;
    SYS_FSOPEN = 430 => fsopen;
    SYS_FSCONFIG = 431 => fsconfig;
    SYS_FSMOUNT = 432 => fsmount;
    SYS_FSPICK = 433 => fspick;
    SYS_PIDFD_OPEN = 434 => pidfd_open;
    SYS_CLONE3 = 435 => clone3;
    SYS_CLOSE_RANGE = 436 => close_range;
    SYS_OPENAT2 = 437 => openat2;
    SYS_PIDFD_GETFD = 438 => pidfd_getfd;
    SYS_FACCESSAT2 = 439 => faccessat2;
    SYS_PROCESS_MADVISE = 440 => process_madvise;
    SYS_EPOLL_PWAIT2 = 441 => epoll_pwait2;
    SYS_MOUNT_SETATTR = 442 => mount_setattr;
    SYS_QUOTACTL_FD = 443 => quotactl_fd;
    SYS_LANDLOCK_CREATE_RULESET = 444 => landlock_create_ruleset;
    SYS_LANDLOCK_ADD_RULE = 445 => landlock_add_rule;
    SYS_LANDLOCK_RESTRICT_SELF = 446 => landlock_restrict_self;
    SYS_MEMFD_SECRET = 447 => memfd_secret;
    SYS_PROCESS_MRELEASE = 448 => process_mrelease;
    SYS_FUTEX_WAITV = 449 => futex_waitv;
    SYS_SET_MEMPOLICY_HOME_NODE = 450 => set_mempolicy_home_node;
    SYS_CACHESTAT = 451 => cachestat;
    SYS_FCHMODAT2 = 452 => fchmodat2;
    SYS_MAP_SHADOW_STACK = 453 => map_shadow_stack;
    SYS_FUTEX_WAKE = 454 => futex_wake;
    SYS_FUTEX_WAIT = 455 => futex_wait;
    SYS_FUTEX_REQUEUE = 456 => futex_requeue;
    SYS_STATMOUNT = 457 => statmount;
    SYS_LISTMOUNT = 458 => listmount;
    SYS_LSM_GET_SELF_ATTR = 459 => lsm_get_self_attr;
    SYS_LSM_SET_SELF_ATTR = 460 => lsm_set_self_attr;
    SYS_LSM_LIST_MODULES = 461 => lsm_list_modules;
    SYS_MSEAL = 462 => mseal;
}

/// One past the highest number in the table (sizes a per-number table, e.g. "logged once" bits).
pub const NR_LIMIT: u64 = SYS_MSEAL + 1;

/// The largest errno a system call returns: results in `-4095..=-1` are errors.
pub const MAX_ERRNO: u64 = 4095;

/// A system call as the kernel saw it: the number from `rax` and the six argument registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallArgs {
    /// The system-call number (`rax`).
    pub nr: u64,
    /// `rdi, rsi, rdx, r10, r8, r9`, in the order of the C prototype.
    pub args: [u64; 6],
}

impl SyscallArgs {
    /// A call from its registers, in the x86_64 syscall-ABI order.
    pub fn from_regs(rax: u64, rdi: u64, rsi: u64, rdx: u64, r10: u64, r8: u64, r9: u64) -> Self {
        SyscallArgs {
            nr: rax,
            args: [rdi, rsi, rdx, r10, r8, r9],
        }
    }

    /// The name of the call, `None` for an unused number.
    pub fn name(&self) -> Option<&'static str> {
        name(self.nr)
    }

    /// Argument `i` (0..6) as a C `int`: the low 32 bits, as the kernel reads `int` arguments.
    pub fn int(&self, i: usize) -> i32 {
        self.args[i] as u32 as i32
    }
}

/// The `rax` value reporting `errno` (a positive errno, e.g. [`crate::errno::ENOENT`]).
pub const fn error_return(errno: i32) -> u64 {
    (errno as i64).wrapping_neg() as u64
}

/// Splits a raw `rax` result into a value or the positive errno it reports.
pub fn decode_return(rax: u64) -> Result<u64, i32> {
    if rax > u64::MAX - MAX_ERRNO {
        Err(rax.wrapping_neg() as i32)
    } else {
        Ok(rax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_of_the_two_ranges_is_named_and_nothing_else() {
        for nr in 0..=NR_LIMIT + 10 {
            let defined = nr <= 334 || (424..=462).contains(&nr);
            assert_eq!(name(nr).is_some(), defined, "number {nr}");
        }
        assert_eq!(name(u64::MAX), None);
        assert_eq!(ALL.len(), 335 + 39);
        assert!(
            ALL.windows(2).all(|w| w[0] < w[1]),
            "ascending, no duplicates"
        );
        let mut names: alloc::vec::Vec<&str> = ALL.iter().map(|&nr| name(nr).unwrap()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "every name once");
    }

    #[test]
    fn a_few_well_known_numbers() {
        assert_eq!((SYS_READ, SYS_WRITE, SYS_OPEN, SYS_CLOSE), (0, 1, 2, 3));
        assert_eq!(name(SYS_RT_SIGRETURN), Some("rt_sigreturn"));
        assert_eq!((SYS_EXIT, SYS_EXIT_GROUP, SYS_CLONE3), (60, 231, 435));
        assert_eq!(name(156), Some("_sysctl"));
        assert_eq!(name(SYS_MSEAL), Some("mseal"));
    }

    #[test]
    fn arguments_and_returns() {
        let call = SyscallArgs::from_regs(SYS_OPENAT, (-100i64) as u64, 0x1000, 0o2000000, 0, 0, 0);
        assert_eq!(call.name(), Some("openat"));
        assert_eq!(call.int(0), -100);
        assert_eq!(call.args[2], 0o2000000);
        let sloppy = SyscallArgs::from_regs(SYS_CLOSE, 0xdead_beef_0000_0003, 0, 0, 0, 0, 0);
        assert_eq!(sloppy.int(0), 3, "int arguments use the low 32 bits");
        assert_eq!(error_return(2), (-2i64) as u64);
        assert_eq!(decode_return(error_return(2)), Err(2));
        assert_eq!(decode_return(error_return(4095)), Err(4095));
        assert_eq!(
            decode_return((-4096i64) as u64),
            Ok((-4096i64) as u64),
            "an address, not an error"
        );
        assert_eq!(decode_return(7), Ok(7));
    }
}
