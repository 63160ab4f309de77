/* A static musl C program for the Linux personality's files: reads a file of the initramfs,
 * creates, writes, renames, links and removes files and directories under /tmp, lists a
 * directory, maps files, uses pipes, the device files and the working directory, and checks
 * the errors Linux gives for bad requests. Exits 0 only if every check holds; prints each failure. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "read-file.h"

static int failures, checks;

static void check(int ok, const char *what) {
    checks++;
    if (!ok) {
        failures++;
        printf("linux-files: FAILED: %s (errno %d)\n", what, errno);
    }
}

static const char motd[] = "k42: this file is not a program\n";

static void archive_file(void) {
    char buf[128] = {0};
    int fd = open("/etc/motd", O_RDONLY);
    check(fd >= 3, "open /etc/motd");
    check(read(fd, buf, sizeof buf) == (ssize_t)strlen(motd) && strcmp(buf, motd) == 0,
          "read /etc/motd");
    check(read(fd, buf, sizeof buf) == 0, "read at the end");
    check(lseek(fd, 5, SEEK_SET) == 5 && read(fd, buf, 4) == 4 && memcmp(buf, "this", 4) == 0,
          "lseek + read");
    check(pread(fd, buf, 3, 0) == 3 && memcmp(buf, "k42", 3) == 0, "pread");
    struct stat st;
    check(fstat(fd, &st) == 0 && st.st_size == (off_t)strlen(motd) && S_ISREG(st.st_mode),
          "fstat");
    check(write(fd, "x", 1) == -1 && errno == EBADF, "write to a read-only descriptor");
    check(close(fd) == 0, "close");
    check(close(fd) == -1 && errno == EBADF, "close twice");
    check(read(fd, buf, 1) == -1 && errno == EBADF, "read a closed descriptor");
    check(open("/etc/nothing", O_RDONLY) == -1 && errno == ENOENT, "ENOENT");
    check(open("/etc/motd/x", O_RDONLY) == -1 && errno == ENOTDIR, "ENOTDIR");
    check(stat("/bin", &st) == 0 && S_ISDIR(st.st_mode), "stat a directory");
    check(read(0, buf, 1) == 0, "standard input is empty");
}

static void new_files(void) {
    check(mkdir("/tmp/t", 0755) == 0, "mkdir");
    check(mkdir("/tmp/t", 0755) == -1 && errno == EEXIST, "mkdir twice");
    int fd = open("/tmp/t/a", O_CREAT | O_RDWR | O_TRUNC, 0644);
    check(fd >= 0, "create");
    static char big[10000], back[10000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 7 + 1);
    check(write(fd, big, sizeof big) == sizeof big, "write 10000 bytes");
    check(lseek(fd, 0, SEEK_CUR) == sizeof big, "offset after write");
    check(pread(fd, back, sizeof back, 0) == sizeof back && memcmp(big, back, sizeof big) == 0,
          "read back");
    check(ftruncate(fd, 100) == 0, "ftruncate");
    struct stat st;
    check(fstat(fd, &st) == 0 && st.st_size == 100, "size after ftruncate");
    int copy = dup(fd);
    check(copy > fd, "dup");
    check(lseek(fd, 10, SEEK_SET) == 10 && lseek(copy, 0, SEEK_CUR) == 10, "dup shares the offset");
    check(close(copy) == 0 && close(fd) == 0, "close both");

    fd = open("/tmp/t/a", O_WRONLY | O_APPEND);
    check(write(fd, "tail", 4) == 4 && close(fd) == 0, "append");
    check(stat("/tmp/t/a", &st) == 0 && st.st_size == 104, "size after append");
    check(rename("/tmp/t/a", "/tmp/t/b") == 0, "rename");
    check(link("/tmp/t/b", "/tmp/t/c") == 0, "link");
    check(symlink("b", "/tmp/t/s") == 0, "symlink");
    char target[16] = {0};
    check(readlink("/tmp/t/s", target, sizeof target) == 1 && target[0] == 'b', "readlink");
    check(stat("/tmp/t/s", &st) == 0 && st.st_size == 104 && st.st_nlink == 2, "stat via link");
    check(lstat("/tmp/t/s", &st) == 0 && S_ISLNK(st.st_mode), "lstat");

    DIR *d = opendir("/tmp/t");
    int seen = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, "b")) seen |= 1;
        if (!strcmp(e->d_name, "c")) seen |= 2;
        if (!strcmp(e->d_name, "s")) seen |= 4;
        if (!strcmp(e->d_name, "a")) seen |= 8;
    }
    check(d && seen == 7, "readdir lists b, c and s");
    if (d) closedir(d);

    check(chdir("/tmp/t") == 0, "chdir");
    char cwd[64];
    check(getcwd(cwd, sizeof cwd) && strcmp(cwd, "/tmp/t") == 0, "getcwd");
    check(access("c", R_OK) == 0, "relative access");
    check(chdir("..") == 0 && getcwd(cwd, sizeof cwd) && strcmp(cwd, "/tmp") == 0, "chdir ..");
    int dir = open("t", O_RDONLY | O_DIRECTORY);
    check(dir >= 0 && openat(dir, "b", O_RDONLY) >= 0, "openat relative to a directory");
    check(unlinkat(dir, "s", 0) == 0, "unlinkat");
    check(rmdir("/tmp/t") == -1 && errno == ENOTEMPTY, "rmdir of a full directory");
    check(unlink("t/b") == 0 && unlink("/tmp/t/c") == 0, "unlink");
    check(rmdir("/tmp/t") == 0, "rmdir");
    check(stat("/tmp/t", &st) == -1 && errno == ENOENT, "gone");
    check(chdir("/") == 0, "chdir /");
}

static void pipes_and_devices(void) {
    int p[2];
    check(pipe(p) == 0, "pipe");
    check(write(p[1], "through", 7) == 7, "write to a pipe");
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    check(poll(&pf, 1, 0) == 1 && (pf.revents & POLLIN), "poll a pipe with data");
    char buf[16] = {0};
    check(read(p[0], buf, sizeof buf) == 7 && memcmp(buf, "through", 7) == 0, "read from a pipe");
    check(poll(&pf, 1, 0) == 0, "poll an empty pipe");
    check(lseek(p[0], 0, SEEK_SET) == -1 && errno == ESPIPE, "lseek on a pipe");
    check(close(p[1]) == 0 && read(p[0], buf, 1) == 0, "end of file once the writer closes");
    close(p[0]);
    check(pipe2(p, O_NONBLOCK) == 0 && read(p[0], buf, 1) == -1 && errno == EAGAIN,
          "non-blocking empty pipe");
    signal(SIGPIPE, SIG_IGN);
    close(p[0]);
    check(write(p[1], "x", 1) == -1 && errno == EPIPE, "EPIPE without a reader");
    close(p[1]);

    int null = open("/dev/null", O_RDWR);
    check(null >= 0 && write(null, "abc", 3) == 3 && read(null, buf, 3) == 0, "/dev/null");
    int zero = open("/dev/zero", O_RDONLY);
    memset(buf, 1, sizeof buf);
    check(zero >= 0 && read(zero, buf, 8) == 8 && buf[0] == 0 && buf[7] == 0, "/dev/zero");
    int full = open("/dev/full", O_WRONLY);
    check(full >= 0 && write(full, "x", 1) == -1 && errno == ENOSPC, "/dev/full");
    check(isatty(1) && !isatty(null), "isatty");
    check(dup2(null, 9) == 9 && fcntl(9, F_GETFD) == 0, "dup2");
    check(fcntl(9, F_SETFD, FD_CLOEXEC) == 0 && fcntl(9, F_GETFD) == FD_CLOEXEC, "FD_CLOEXEC");
    close(9);
    close(null);
    close(zero);
    close(full);
}

static void bad_requests(void) {
    check(read(12345, NULL, 1) == -1 && errno == EBADF, "EBADF");
    int fd = open("/etc/motd", O_RDONLY);
    check(syscall(SYS_read, fd, (void *)8, 10) == -1 && errno == EFAULT, "EFAULT for a bad buffer");
    check(syscall(SYS_open, (void *)8, O_RDONLY) == -1 && errno == EFAULT, "EFAULT for a bad path");
    close(fd);
    check(open("/bin", O_WRONLY) == -1 && errno == EISDIR, "EISDIR");
    check(open("", O_RDONLY) == -1 && errno == ENOENT, "empty path");
}

/* File mappings: private copies of a file's bytes (read-only MAP_SHARED too), zeros past the
 * end, the errors Linux gives. */
static void mapped_files(void) {
    int fd = open("/etc/motd", O_RDONLY);
    char *p = mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    check(p != MAP_FAILED && memcmp(p, motd, strlen(motd)) == 0 && p[strlen(motd)] == 0,
          "mmap an initramfs file");
    check(p == MAP_FAILED || munmap(p, 4096) == 0, "munmap a file mapping");
    close(fd);

    static char data[3 * 4096 + 100];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)(i * 13 + 5);
    fd = open("/tmp/mapped", O_CREAT | O_RDWR | O_TRUNC, 0644);
    check(fd >= 0 && write(fd, data, sizeof data) == sizeof data, "write a file to map");
    size_t tail = sizeof data - 4096;
    char *q = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 4096);
    check(q != MAP_FAILED && memcmp(q, data + 4096, tail) == 0, "mmap from an offset");
    if (q != MAP_FAILED) {
        check(q[tail] == 0 && q[3 * 4096 - 1] == 0, "a mapping reads zeros past the file's end");
        q[0] = 'X';
        char c = 0;
        check(pread(fd, &c, 1, 4096) == 1 && c == data[4096], "private stores stay private");
        munmap(q, 3 * 4096);
    }
    char *r = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
    check(r != MAP_FAILED && memcmp(r, data, 4096) == 0, "MAP_SHARED read-only mapping");
    if (r != MAP_FAILED)
        munmap(r, 4096);
    check(mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 100) == MAP_FAILED && errno == EINVAL,
          "mmap at an unaligned offset");
    check(mmap(0, 4096, PROT_READ, MAP_PRIVATE, 12345, 0) == MAP_FAILED && errno == EBADF,
          "mmap of a closed descriptor");
    int wo = open("/tmp/mapped", O_WRONLY);
    check(mmap(0, 4096, PROT_READ, MAP_PRIVATE, wo, 0) == MAP_FAILED && errno == EACCES,
          "mmap of a write-only descriptor");
    close(wo);
    int fds[2];
    check(pipe(fds) == 0 && mmap(0, 4096, PROT_READ, MAP_PRIVATE, fds[0], 0) == MAP_FAILED &&
              errno == ENODEV,
          "mmap of a pipe");
    close(fds[0]);
    close(fds[1]);
    int zero = open("/dev/zero", O_RDWR);
    unsigned char *z = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, zero, 0);
    check(z != MAP_FAILED && z[0] == 0 && z[8191] == 0, "mmap of /dev/zero");
    if (z != MAP_FAILED) {
        z[100] = 7;
        check(z[100] == 7, "a /dev/zero mapping is writable");
        munmap(z, 8192);
    }
    close(zero);
    close(fd);
    check(unlink("/tmp/mapped") == 0, "unlink the mapped file");
}

static void proc_files(void) {
    static char buf[16384];
    check(read_file("/proc/cpuinfo", buf, sizeof buf) > 0 && strstr(buf, "processor\t: 0\n") &&
              strstr(buf, "\nflags\t\t: fpu "),
          "/proc/cpuinfo");
    long total = 0, free_kb = -1;
    if (read_file("/proc/meminfo", buf, sizeof buf) > 0) {
        char *t = strstr(buf, "MemTotal:"), *f = strstr(buf, "MemFree:");
        if (t && f) {
            total = strtol(t + 9, 0, 10);
            free_kb = strtol(f + 8, 0, 10);
        }
    }
    check(total > 0 && free_kb > 0 && free_kb <= total, "/proc/meminfo");
    check(read_file("/proc/uptime", buf, sizeof buf) > 0 && strtod(buf, 0) > 0, "/proc/uptime");
    check(read_file("/proc/mounts", buf, sizeof buf) > 0 && strncmp(buf, "rootfs / ", 9) == 0,
          "/proc/mounts");
    check(read_file("/proc/self/mounts", buf, sizeof buf) > 0 && strncmp(buf, "rootfs / ", 9) == 0,
          "/proc/self/mounts");
    check(read_file("/proc/version", buf, sizeof buf) > 0 && strncmp(buf, "Linux version ", 14) == 0,
          "/proc/version");
    char link[32] = {0}, pid[32];
    snprintf(pid, sizeof pid, "%d", getpid());
    check(readlink("/proc/self", link, sizeof link - 1) == (ssize_t)strlen(pid) &&
              strcmp(link, pid) == 0,
          "/proc/self names this process");
    check(open("/proc/uptime", O_WRONLY) == -1 && errno == EACCES, "/proc files are read-only");
    struct stat st;
    check(stat("/proc/cpuinfo", &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0,
          "/proc files stat as on Linux (size 0)");
    DIR *d = opendir("/proc");
    int listed = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        listed += strcmp(e->d_name, "meminfo") == 0;
    if (d)
        closedir(d);
    check(listed == 1, "/proc lists its files");
    struct sysinfo info;
    check(sysinfo(&info) == 0 && info.mem_unit == 4096 && info.totalram > 0 &&
              info.freeram <= info.totalram &&
              (long)(info.totalram * info.mem_unit / 1024) == total,
          "sysinfo agrees with /proc/meminfo");
}

int main(void) {
    archive_file();
    proc_files();
    new_files();
    mapped_files();
    pipes_and_devices();
    bad_requests();
    if (failures) {
        printf("linux-files: %d of %d checks FAILED\n", failures, checks);
        return 1;
    }
    printf("linux-files: ok (%d checks)\n", checks);
    return 0;
}
