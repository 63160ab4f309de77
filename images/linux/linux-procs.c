/* A static musl C program for the Linux personality's processes: fork and wait4 with exit
 * statuses, a child ended by SIGSEGV from a fault and one ended by kill, execve of itself
 * (arguments arrive), of a file that is not a program and of a missing one, a pipe between
 * parent and child, signal handlers (raised by the process itself and SIGCHLD from a child's
 * exit), signals that end blocking calls (a pipe read ended by a handled signal with EINTR or
 * by SIGTERM's default action, a wait4 ended with EINTR by a signal from another thread or, in a
 * process with one thread, from another process), a
 * SIGSEGV handler that catches faults (with their address and code, in a forked child too) and a
 * fork bomb that ends at the process limit with EAGAIN, after which fork works again; and
 * /proc/self (stat, status, cmdline, comm, also as /proc/<pid>) agreeing with what the system
 * calls say, in a forked child too; another process's /proc/<pid> (listed in /proc, its stat,
 * cmdline and comm), process groups set by parent and child, a signal to a group, setsid, and
 * sigaltstack (handlers for a signal and for a fault on the alternate stack).
 * Exits 0 only if every check holds; prints each failure. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "read-file.h"

static int failures, checks;

static void check(int ok, const char *what) {
    checks++;
    if (!ok) {
        failures++;
        printf("linux-procs: FAILED: %s (errno %d)\n", what, errno);
    }
}

/* The status a child left (waiting again after a handled signal), or -1 if waiting failed. */
static int reap(pid_t pid) {
    int status = 0, got;
    while ((got = waitpid(pid, &status, 0)) == -1 && errno == EINTR) {
    }
    return got == pid ? status : -1;
}

static void exit_statuses(void) {
    pid_t pid = fork();
    if (pid == 0)
        _exit(7);
    check(pid > 0, "fork");
    int status = reap(pid);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 7, "exit status 7");
    check(waitpid(-1, &status, WNOHANG) == -1 && errno == ECHILD, "no children left: ECHILD");
}

/* Writes to `address`, which nothing maps, hidden from the compiler's bounds checks. */
static void poke(uintptr_t address) {
    volatile uintptr_t at = address;
    *(volatile int *)at = 1;
}

static void fault_is_sigsegv(void) {
    pid_t pid = fork();
    if (pid == 0) {
        poke(16);
        _exit(0);
    }
    int status = reap(pid);
    check(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
          "a faulting child ends by SIGSEGV");
}

/* A child that dies holding a pipe's write end, by a fault or by SIGKILL while it spins
 * without system calls: the reader still comes to the end of the data. */
static void dying_writer(int by_fault) {
    int fds[2];
    check(pipe(fds) == 0, "pipe for a dying writer");
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        check(write(fds[1], "x", 1) == 1, "the dying writer writes");
        if (by_fault)
            poke(0xbad00000000);
        for (volatile unsigned long spin = 0;; spin++) {
        }
    }
    close(fds[1]);
    char c;
    check(read(fds[0], &c, 1) == 1 && c == 'x', "the dying writer's byte arrives");
    if (!by_fault)
        check(kill(pid, SIGKILL) == 0, "SIGKILL a spinning child");
    int status = reap(pid);
    int sig = by_fault ? SIGSEGV : SIGKILL;
    check(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == sig,
          by_fault ? "the writer ends by SIGSEGV" : "the spinning writer ends by SIGKILL");
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    check(poll(&p, 1, 5000) == 1 && read(fds[0], &c, 1) == 0,
          by_fault ? "end of file after the writer faulted" : "end of file after the writer was killed");
    close(fds[0]);
}

static volatile sig_atomic_t usr1_seen;
static void note_usr1(int sig) { usr1_seen = sig; }

/* A handler runs in a child that spins without system calls when a signal comes. */
static void signal_to_spinning_child(void) {
    int fds[2];
    check(pipe(fds) == 0, "pipe for a spinning child");
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGUSR1, note_usr1);
        write(fds[1], "r", 1);
        while (!usr1_seen) {
        }
        _exit(usr1_seen == SIGUSR1 ? 5 : 6);
    }
    char c;
    check(read(fds[0], &c, 1) == 1, "the spinning child is ready");
    check(kill(pid, SIGUSR1) == 0, "SIGUSR1 to a spinning child");
    int status = reap(pid);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 5,
          "the spinning child ran its handler");
    close(fds[0]);
    close(fds[1]);
}

static void kill_child(void) {
    pid_t pid = fork();
    if (pid == 0) {
        for (;;)
            pause();
    }
    check(kill(pid, SIGTERM) == 0, "kill a child");
    int status = reap(pid);
    check(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
          "a killed child ends by SIGTERM");
}

static void exec_checks(const char *self) {
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {(char *)self, "exec-child", "42", NULL};
        char *envp[] = {"K42_PROCS=exec", NULL};
        execve(self, argv, envp);
        _exit(99);
    }
    int status = reap(pid);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 42,
          "execve of itself passes arguments and environment");

    static const char text[] = "this is not a program\n";
    int fd = open("/tmp/not-a-program", O_CREAT | O_WRONLY | O_TRUNC, 0755);
    check(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1),
          "write /tmp/not-a-program");
    close(fd);
    char *argv[] = {"not-a-program", NULL};
    char *envp[] = {NULL};
    errno = 0;
    check(execve("/tmp/not-a-program", argv, envp) == -1 && errno == ENOEXEC,
          "execve of a text file: ENOEXEC");
    errno = 0;
    check(execve("/tmp/no-such-program", argv, envp) == -1 && errno == ENOENT,
          "execve of a missing file: ENOENT");
    errno = 0;
    check(execve("/tmp", argv, envp) == -1 && errno == EACCES, "execve of a directory: EACCES");
    unlink("/tmp/not-a-program");
}

static void pipe_to_child(void) {
    int fds[2];
    check(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        static const char hello[] = "hello from the child";
        _exit(write(fds[1], hello, sizeof hello) == sizeof hello ? 0 : 1);
    }
    close(fds[1]);
    char buf[64] = {0};
    ssize_t n = 0, got;
    while ((got = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += got;
    close(fds[0]);
    check(strcmp(buf, "hello from the child") == 0, "the child's bytes arrive through a pipe");
    int status = reap(pid);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "pipe writer exit");
}

static volatile sig_atomic_t usr1, chld;

static void on_usr1(int sig) { usr1 += sig == SIGUSR1; }
static void on_chld(int sig) { chld += sig == SIGCHLD; }

static void signal_handlers(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    check(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction SIGUSR1");
    check(kill(getpid(), SIGUSR1) == 0 && usr1 == 1, "a handler runs for a signal to itself");

    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    check(sigprocmask(SIG_BLOCK, &block, &old) == 0, "block SIGUSR1");
    raise(SIGUSR1);
    sigset_t pending;
    check(usr1 == 1 && sigpending(&pending) == 0 && sigismember(&pending, SIGUSR1),
          "a blocked signal waits");
    sigprocmask(SIG_SETMASK, &old, NULL);
    check(usr1 == 2, "unblocking delivers it");

    sa.sa_handler = on_chld;
    check(sigaction(SIGCHLD, &sa, NULL) == 0, "sigaction SIGCHLD");
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    reap(pid);
    getpid(); /* signals are delivered as system calls return */
    check(chld >= 1, "SIGCHLD from a child's exit");
    signal(SIGCHLD, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
}

static volatile sig_atomic_t usr2;

static void on_usr2(int sig) { usr2 += sig == SIGUSR2; }

/* Sends `sig` to `pid` every 20 ms until it has exited (at most 2 s); returns its status. */
static int signal_until_reaped(pid_t pid, int sig) {
    for (int i = 0; i < 100; i++) {
        kill(pid, sig);
        usleep(20000);
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
    }
    return -1;
}

/* A child reading an empty pipe whose writer stays open; it exits 42 if its read ended with
 * EINTR after its SIGUSR2 handler ran. */
static pid_t blocked_reader(int fds[2]) {
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        ssize_t n = read(fds[0], &c, 1);
        _exit(n == -1 && errno == EINTR && usr2 >= 1 ? 42 : 1);
    }
    return pid;
}

/* Sends SIGUSR2 to the thread `arg` points at, after 50 ms. */
static void *signal_thread_later(void *arg) {
    usleep(50000);
    pthread_kill(*(pthread_t *)arg, SIGUSR2);
    return NULL;
}

static void interrupted_calls(void) {
    int fds[2];
    check(pipe(fds) == 0, "pipe for the blocked readers");
    /* The handler (without SA_RESTART) is inherited, so it is there before any signal. */
    struct sigaction sa = {0};
    sa.sa_handler = on_usr2;
    check(sigaction(SIGUSR2, &sa, NULL) == 0, "sigaction SIGUSR2");
    int status = signal_until_reaped(blocked_reader(fds), SIGUSR2);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 42,
          "a handled signal ends a blocked pipe read with EINTR");
    status = signal_until_reaped(blocked_reader(fds), SIGTERM);
    check(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
          "SIGTERM ends a process blocked in a pipe read");

    /* wait4 in a process with one thread, ended by a signal from another process: a child
     * sends SIGUSR2 every 50 ms until this process stops it, so one arrives during the wait. */
    usr2 = 0;
    int gate[2], stop[2];
    check(pipe(gate) == 0 && pipe(stop) == 0, "pipes for a sleeping child and a signaller");
    pid_t sleeper = fork();
    if (sleeper == 0) {
        char c;
        close(gate[1]);
        close(stop[0]);
        close(stop[1]);
        _exit(read(gate[0], &c, 1) == 0 ? 6 : 1);
    }
    close(gate[0]);
    pid_t parent = getpid(), signaller = fork();
    if (signaller == 0) {
        struct pollfd p = {.fd = stop[0], .events = POLLIN};
        close(stop[1]);
        close(gate[1]);
        while (poll(&p, 1, 50) == 0)
            kill(parent, SIGUSR2);
        _exit(0);
    }
    close(stop[0]);
    int got = waitpid(sleeper, &status, 0);
    check(got == -1 && errno == EINTR && usr2 >= 1,
          "a signal ends waitpid in a process with one thread with EINTR");
    close(stop[1]);
    close(gate[1]);
    status = reap(sleeper);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 6,
          "the sleeping child is reaped after the interrupted wait");
    status = reap(signaller);
    check(status != -1 && WIFEXITED(status), "the signaller is reaped");

    /* wait4 ended by a signal from another thread of this process, then reaping works. */
    usr2 = 0;
    pid_t child = fork();
    if (child == 0) {
        char c;
        close(fds[1]);
        _exit(read(fds[0], &c, 1) == 0 ? 5 : 1);
    }
    pthread_t thread, self = pthread_self();
    check(pthread_create(&thread, NULL, signal_thread_later, &self) == 0, "pthread_create");
    got = waitpid(child, &status, 0);
    check(got == -1 && errno == EINTR && usr2 == 1, "a signal from another thread ends waitpid with EINTR");
    pthread_join(thread, NULL);
    close(fds[1]);
    got = waitpid(child, &status, 0);
    check(got == child && WIFEXITED(status) && WEXITSTATUS(status) == 5,
          "the child is reaped after the interrupted wait");
    close(fds[0]);
    signal(SIGUSR2, SIG_DFL);
}

static void fork_bomb(void) {
    pid_t pids[4096];
    int n = 0;
    int last_errno = 0;
    while (n < 4096) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;)
                pause();
        }
        if (pid < 0) {
            last_errno = errno;
            break;
        }
        pids[n++] = pid;
    }
    check(n > 0 && n < 4096 && last_errno == EAGAIN, "a fork bomb ends with EAGAIN");
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    int reaped = 0;
    for (int i = 0; i < n; i++)
        reaped += reap(pids[i]) != -1;
    check(reaped == n, "every bomb process is reaped");
    pid_t pid = fork();
    if (pid == 0)
        _exit(3);
    int status = reap(pid);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 3, "fork works again");
    printf("linux-procs: fork bomb of %d processes ended with EAGAIN\n", n);
}

static sigjmp_buf fault_jump;
static volatile int fault_signal, fault_code;
static void *volatile fault_address;

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)context;
    fault_signal = sig;
    fault_code = info->si_code;
    fault_address = info->si_addr;
    siglongjmp(fault_jump, 1);
}

/* A SIGSEGV handler catches bad accesses (with the address and code Linux gives), in a forked
 * child too; without one a fault ends the process with SIGSEGV. */
static void fault_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    check(sigaction(SIGSEGV, &sa, 0) == 0, "install a SIGSEGV handler");
    fault_signal = 0;
    /* Far from everything (with system calls rewritten, page 0 holds the sled). */
    const uintptr_t unmapped = 0xbad00000000;
    if (sigsetjmp(fault_jump, 1) == 0) {
        poke(unmapped);
        check(0, "a write to an unmapped address went on");
    }
    check(fault_signal == SIGSEGV && fault_address == (void *)unmapped &&
              fault_code == SEGV_MAPERR,
          "the SIGSEGV handler sees the address and SEGV_MAPERR");
    volatile char *ro = mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(ro != MAP_FAILED && ro[5] == 0, "a read-only page reads");
    fault_signal = 0;
    if (sigsetjmp(fault_jump, 1) == 0) {
        ro[5] = 1;
        check(0, "a write to a read-only page went on");
    }
    check(fault_signal == SIGSEGV && fault_address == (void *)(ro + 5) &&
              fault_code == SEGV_ACCERR,
          "a second fault is caught too, with SEGV_ACCERR");
    int status = -1;
    pid_t pid = fork();
    if (pid == 0) {
        fault_signal = 0;
        if (sigsetjmp(fault_jump, 1) == 0)
            poke(0x20);
        _exit(fault_signal == SIGSEGV && fault_address == (void *)0x20 ? 42 : 3);
    }
    waitpid(pid, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 42, "a forked child keeps the handler");
    signal(SIGSEGV, SIG_DFL);
    pid = fork();
    if (pid == 0) {
        poke(0x30);
        _exit(0);
    }
    waitpid(pid, &status, 0);
    check(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
          "with the default action again, a fault ends the process");
}

/* Whether /proc/self/stat (read as `path`) names this process with the system calls' pid,
 * parent, group, session and one thread, in at least 52 fields. */
static int stat_agrees(const char *path, const char *what) {
    char buf[2048], comm[64] = {0}, state = 0;
    int pid = 0, ppid = 0, pgrp = 0, session = 0, n = read_file(path, buf, sizeof buf);
    check(n > 0, what);
    char *open_paren = strchr(buf, '('), *close_paren = strrchr(buf, ')');
    if (n <= 0 || !open_paren || !close_paren || close_paren - open_paren > 17)
        return 0;
    memcpy(comm, open_paren + 1, close_paren - open_paren - 1);
    int fields = 2;
    for (char *c = close_paren + 1; *c; c++)
        fields += *c == ' ' && c[1] && c[1] != '\n';
    const char *rest = close_paren + 2;
    long threads = 0;
    for (int f = 3; f < 20 && rest; f++)
        rest = strchr(rest, ' ') ? strchr(rest, ' ') + 1 : 0;
    if (rest)
        threads = strtol(rest, 0, 10);
    return sscanf(buf, "%d", &pid) == 1 && pid == getpid() && strcmp(comm, "linux-procs") == 0 &&
           sscanf(close_paren + 2, "%c %d %d %d", &state, &ppid, &pgrp, &session) == 4 &&
           state == 'R' && ppid == getppid() && pgrp == getpgrp() && session == getsid(0) &&
           threads == 1 && fields >= 52;
}

static void proc_self(int argc, char **argv) {
    char path[64], buf[4096], want[4096];
    check(stat_agrees("/proc/self/stat", "read /proc/self/stat"), "/proc/self/stat agrees");
    snprintf(path, sizeof path, "/proc/%d/stat", getpid());
    check(stat_agrees(path, "read /proc/<pid>/stat"), "/proc/<pid>/stat agrees");
    int len = 0;
    for (int i = 0; i < argc; i++) {
        strcpy(want + len, argv[i]);
        len += strlen(argv[i]) + 1;
    }
    int n = read_file("/proc/self/cmdline", buf, sizeof buf);
    check(n == len && memcmp(buf, want, len) == 0, "/proc/self/cmdline is argv");
    n = read_file("/proc/self/status", buf, sizeof buf);
    snprintf(want, sizeof want, "\nPid:\t%d\n", getpid());
    int pid_line = n > 0 && strstr(buf, want) != 0;
    snprintf(want, sizeof want, "\nPPid:\t%d\n", getppid());
    check(pid_line && strstr(buf, want) && strncmp(buf, "Name:\tlinux-procs\n", 18) == 0,
          "/proc/self/status: Name, Pid and PPid");
    n = read_file("/proc/self/comm", buf, sizeof buf);
    check(n > 0 && strcmp(buf, "linux-procs\n") == 0, "/proc/self/comm");
    check(open("/proc/999999/stat", O_RDONLY) == -1 && errno == ENOENT,
          "a missing pid's /proc directory is not there");
    pid_t parent = getpid(), pid = fork();
    if (pid == 0)
        _exit(stat_agrees("/proc/self/stat", "read /proc/self/stat in a child") &&
                      getppid() == parent
                  ? 0
                  : 1);
    int status = reap(pid);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a forked child's /proc/self/stat is its own");
}

static char *alt_base;
static size_t alt_size = 64 * 1024;
static volatile uintptr_t handler_sp;
static volatile int handler_ss_flags;
static sigjmp_buf alt_jump;

static int on_alt_stack(uintptr_t sp) {
    return sp > (uintptr_t)alt_base && sp <= (uintptr_t)alt_base + alt_size;
}

/* Notes where the handler runs and what sigaltstack says there. */
static void note_stack(int sig) {
    char here;
    stack_t now;
    handler_sp = (uintptr_t)&here;
    handler_ss_flags = sigaltstack(NULL, &now) == 0 ? now.ss_flags : -1;
    (void)sig;
}

static void fault_on_alt_stack(int sig, siginfo_t *info, void *context) {
    note_stack(sig);
    (void)info, (void)context;
    siglongjmp(alt_jump, 1);
}

/* sigaltstack: its checks, SA_ONSTACK handlers on it (for a signal and for a fault), others
 * not, SS_ONSTACK seen from a handler on it, and SS_DISABLE. */
static void alternate_stack(void) {
    stack_t ss = {0}, old;
    struct sigaction sa = {0}, usr2_before, segv_before;
    check(sigaltstack(NULL, &old) == 0 && old.ss_flags == SS_DISABLE, "no alternate stack at first");
    alt_base = malloc(alt_size);
    ss.ss_sp = alt_base;
    ss.ss_size = 1000;
    check(sigaltstack(&ss, NULL) == -1 && errno == ENOMEM, "sigaltstack of a tiny stack: ENOMEM");
    ss.ss_size = alt_size;
    ss.ss_flags = 5;
    check(sigaltstack(&ss, NULL) == -1 && errno == EINVAL, "sigaltstack with bad flags: EINVAL");
    ss.ss_flags = 0;
    check(sigaltstack(&ss, NULL) == 0 && sigaltstack(NULL, &old) == 0 && old.ss_sp == alt_base &&
              old.ss_size == alt_size && old.ss_flags == 0,
          "sigaltstack sets and reports the stack");
    sa.sa_handler = note_stack;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR2, &sa, &usr2_before);
    raise(SIGUSR2);
    check(on_alt_stack(handler_sp) && handler_ss_flags == SS_ONSTACK,
          "an SA_ONSTACK handler runs on the alternate stack, which says SS_ONSTACK");
    sa.sa_flags = 0;
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);
    check(handler_sp != 0 && !on_alt_stack(handler_sp) && handler_ss_flags == 0,
          "a handler without SA_ONSTACK runs on the thread's stack");
    sigaction(SIGUSR2, &usr2_before, NULL);
    sa.sa_handler = NULL;
    sa.sa_sigaction = fault_on_alt_stack;
    sa.sa_flags = SA_ONSTACK | SA_SIGINFO;
    sigaction(SIGSEGV, &sa, &segv_before);
    handler_sp = 0;
    if (sigsetjmp(alt_jump, 1) == 0)
        poke(0x40);
    check(on_alt_stack(handler_sp), "a fault's SA_ONSTACK handler runs on the alternate stack");
    sigaction(SIGSEGV, &segv_before, NULL);
    ss.ss_flags = SS_DISABLE;
    check(sigaltstack(&ss, NULL) == 0 && sigaltstack(NULL, &old) == 0 && old.ss_flags == SS_DISABLE,
          "SS_DISABLE removes the alternate stack");
}

/* Whether /proc lists `pid`. */
static int proc_lists(pid_t pid) {
    DIR *dir = opendir("/proc");
    if (!dir)
        return 0;
    char want[32];
    snprintf(want, sizeof want, "%d", pid);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(dir)))
        found |= strcmp(e->d_name, want) == 0 && e->d_type == DT_DIR;
    closedir(dir);
    return found;
}

/* Another process seen through /proc/<pid>, process groups and a signal to one. */
static void other_processes(const char *self) {
    int ready[2];
    check(pipe(ready) == 0, "pipe for a sleeper");
    pid_t pid = fork();
    if (pid == 0) {
        /* A new group, set by the child as by the parent below (shells do both). */
        setpgid(0, 0);
        close(ready[0]);
        dup2(ready[1], 3);
        char *argv[] = {(char *)self, "sleeper", NULL};
        execv(self, argv);
        _exit(99);
    }
    close(ready[1]);
    check(setpgid(pid, pid) == 0, "setpgid of a child");
    char c, path[64], buf[4096];
    check(read(ready[0], &c, 1) == 1, "the sleeper runs its new program");
    close(ready[0]);
    check(getpgid(pid) == pid && getsid(pid) == getsid(0), "a child's group and session");
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int n = read_file(path, buf, sizeof buf);
    int cpid = 0, ppid = 0, pgrp = 0, session = 0;
    char comm[32] = {0}, state = 0;
    check(n > 0 && sscanf(buf, "%d (%31[^)]) %c %d %d %d", &cpid, comm, &state, &ppid, &pgrp,
                          &session) == 6 &&
              cpid == pid && strcmp(comm, "linux-procs") == 0 && ppid == getpid() &&
              pgrp == pid && session == getsid(0),
          "another process's /proc/<pid>/stat");
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    n = read_file(path, buf, sizeof buf);
    int self_len = strlen(self);
    check(n == self_len + 9 && strcmp(buf, self) == 0 && strcmp(buf + self_len + 1, "sleeper") == 0,
          "another process's /proc/<pid>/cmdline");
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    check(read_file(path, buf, sizeof buf) > 0 && strcmp(buf, "linux-procs\n") == 0,
          "another process's /proc/<pid>/comm");
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d", pid);
    check(stat(path, &st) == 0 && S_ISDIR(st.st_mode), "/proc/<pid> is a directory");
    check(proc_lists(pid) && proc_lists(getpid()), "/proc lists this process and another");
    check(setpgid(1, getpgrp()) == -1 && errno == ESRCH, "setpgid of a process not a child: ESRCH");
    check(kill(0, 0) == 0 && kill(-pid, 0) == 0, "signal 0 to this group and the child's");
    check(kill(-pid, SIGTERM) == 0, "SIGTERM to the child's group");
    int status = reap(pid);
    check(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
          "a group's signal ends the process in it");
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    check(open(path, O_RDONLY) == -1 && errno == ENOENT && !proc_lists(pid),
          "a reaped process's /proc directory is gone");
    check(kill(-999999, SIGTERM) == -1 && errno == ESRCH, "a signal to no group: ESRCH");
    pid = fork();
    if (pid == 0) {
        pid_t me = getpid();
        int ok = setsid() == me && getsid(0) == me && getpgrp() == me;
        _exit(ok && setsid() == -1 && errno == EPERM ? 0 : 1);
    }
    status = reap(pid);
    check(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "setsid makes a session and group; a second one is EPERM");
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "sleeper") == 0) {
        /* Tells the parent it runs (fd 3), then waits for its group's signal. */
        if (write(3, "r", 1) != 1)
            return 2;
        for (;;)
            pause();
    }
    if (argc == 3 && strcmp(argv[1], "exec-child") == 0) {
        const char *env = getenv("K42_PROCS");
        return env && strcmp(env, "exec") == 0 ? atoi(argv[2]) : 1;
    }
    proc_self(argc, argv);
    other_processes(argv[0]);
    exit_statuses();
    fault_is_sigsegv();
    kill_child();
    dying_writer(1);
    dying_writer(0);
    signal_to_spinning_child();
    exec_checks(argv[0]);
    pipe_to_child();
    signal_handlers();
    interrupted_calls();
    fault_handlers();
    alternate_stack();
    fork_bomb();
    if (failures == 0) {
        printf("linux-procs: ok (%d checks)\n", checks);
        return 0;
    }
    printf("linux-procs: %d of %d checks FAILED\n", failures, checks);
    return 1;
}
