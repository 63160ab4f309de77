/* A static musl C program for file windows (K42's exclusive file object): a file one process
 * alone has open is read and written in a window the file server maps into it (once it has
 * been read or written a few times through the server: the fourth call asks for the window);
 * a second open makes the server take the file back and serve it itself. Checks the file's bytes through
 * every path (the window, its growth, the copy back at close, the swap to the server, a
 * descriptor shared over fork, and one kept across execve) and, from
 * /proc/k42-file-windows, that the windows were really used. Exits 0 only if every check
 * holds; prints each failure. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures, checks;

static void check(int ok, const char *what) {
    checks++;
    if (!ok) {
        failures++;
        printf("linux-windows: FAILED: %s (errno %d)\n", what, errno);
    }
}

struct counts {
    long mapped_opens, swaps, grows, closes;
};

static struct counts counts(void) {
    struct counts c = {-1, -1, -1, -1};
    FILE *f = fopen("/proc/k42-file-windows", "r");
    if (!f) return c;
    if (fscanf(f, "mapped_opens %ld swaps %ld grows %ld closes %ld", &c.mapped_opens, &c.swaps,
               &c.grows, &c.closes) != 4)
        c.mapped_opens = -1;
    fclose(f);
    return c;
}

/* The whole file at `path`, read through a fresh descriptor, into `out` (NUL-terminated). */
static ssize_t slurp(const char *path, char *out, size_t max) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = 0, r;
    while ((size_t)n < max - 1 && (r = read(fd, out + n, max - 1 - n)) > 0) n += r;
    close(fd);
    out[n] = 0;
    return n;
}

/* Writes `text` in four calls (the fourth gets the file a window). */
static int write4(int fd, const char *text) {
    size_t len = strlen(text), part = len / 4, done = 0;
    for (int i = 0; i < 4; i++) {
        size_t n = i == 3 ? len - done : part;
        if (write(fd, text + done, n) != (ssize_t)n) return 0;
        done += n;
    }
    return 1;
}

/* A lone writer: writes that outgrow the window, reads, seeks, truncation, the copy back. */
static void lone_writer(void) {
    struct counts before = counts();
    check(before.mapped_opens >= 0, "/proc/k42-file-windows reads");
    int fd = open("/tmp/w1", O_CREAT | O_RDWR | O_TRUNC, 0644);
    check(fd >= 0, "create /tmp/w1");
    static char block[1000], back[100000];
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        memset(block, 'A' + i % 26, sizeof block);
        ok &= write(fd, block, sizeof block) == sizeof block;
    }
    check(ok, "100 writes of 1000 bytes");
    struct stat st;
    check(fstat(fd, &st) == 0 && st.st_size == 100000, "fstat sees the window's size");
    check(stat("/tmp/w1", &st) == 0 && st.st_size == 100000, "stat sees it too");
    check(lseek(fd, 0, SEEK_CUR) == 100000, "the offset is at the end");
    check(pread(fd, back, sizeof back, 0) == 100000, "pread it all");
    ok = 1;
    for (int i = 0; i < 100000; i++) ok &= back[i] == 'A' + (i / 1000) % 26;
    check(ok, "the bytes read back");
    check(pwrite(fd, "xyz", 3, 5) == 3 && pread(fd, back, 8, 3) == 8 &&
              memcmp(back, "AAxyzAAA", 8) == 0,
          "pwrite in place");
    check(lseek(fd, -10, SEEK_END) == 99990 && read(fd, back, 20) == 10, "lseek from the end");
    check(read(fd, back, 20) == 0, "read at the end");
    check(ftruncate(fd, 10) == 0 && ftruncate(fd, 20) == 0, "ftruncate shorter, then longer");
    check(pread(fd, back, 30, 0) == 20 && memcmp(back, "AAAAAxyzAA\0\0\0\0\0\0\0\0\0\0", 20) == 0,
          "what truncation cut reads as zeros");
    check(lseek(fd, 100, SEEK_SET) == 100 && write(fd, "end", 3) == 3, "a write past the end");
    check(close(fd) == 0, "close");
    struct counts after = counts();
    check(after.mapped_opens == before.mapped_opens + 1, "the open got a window");
    check(after.grows > before.grows, "the window grew");
    check(after.closes == before.closes + 1, "the close copied it back");
    check(after.swaps == before.swaps, "nothing swapped it out");
    ssize_t n = slurp("/tmp/w1", back, sizeof back);
    check(n == 103 && memcmp(back, "AAAAAxyzAA", 10) == 0 && back[15] == 0 &&
              memcmp(back + 100, "end", 3) == 0,
          "the file holds what the window held");
}

/* A second process opens a file one has in its window: the server takes it back. */
static void second_open(void) {
    struct counts before = counts();
    int fd = open("/tmp/w2", O_CREAT | O_RDWR | O_TRUNC, 0644);
    check(fd >= 0 && write4(fd, "parent-1"), "write parent-1");
    check(counts().mapped_opens == before.mapped_opens + 1, "the writer got a window");
    pid_t child = fork();
    if (child == 0) {
        char buf[32] = {0};
        int own = open("/tmp/w2", O_RDWR | O_APPEND);
        int ok = own >= 0 && read(own, buf, sizeof buf) == 8 && strcmp(buf, "parent-1") == 0 &&
                 write(own, "+child", 6) == 6;
        _exit(ok ? 0 : 1);
    }
    int status = -1;
    check(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a second open sees the window's bytes and appends");
    char buf[32] = {0};
    check(lseek(fd, 0, SEEK_END) == 14 && pread(fd, buf, sizeof buf, 0) == 14 &&
              strcmp(buf, "parent-1+child") == 0,
          "the first opener sees the other's write (through the server now)");
    check(write(fd, "!", 1) == 1, "and writes on");
    close(fd);
    struct counts after = counts();
    check(after.swaps == before.swaps + 1, "the window was swapped out once");
    check(slurp("/tmp/w2", buf, sizeof buf) == 15 && strcmp(buf, "parent-1+child!") == 0,
          "the file is whole");
}

/* A descriptor inherited over fork shares the window and its offset. */
static void shared_over_fork(void) {
    struct counts before = counts();
    int fd = open("/tmp/w3", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    check(fd >= 0 && write4(fd, "abcd") && lseek(fd, 2, SEEK_SET) == 2, "write ab(cd)");
    check(counts().mapped_opens == before.mapped_opens + 1, "the writer got a window");
    pid_t child = fork();
    if (child == 0) _exit(write(fd, "CD", 2) == 2 ? 0 : 1);
    int status = -1;
    check(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the child writes CD through the inherited descriptor");
    check(write(fd, "ef", 2) == 2 && lseek(fd, 0, SEEK_CUR) == 6, "the offset is shared");
    close(fd);
    char buf[16] = {0};
    check(slurp("/tmp/w3", buf, sizeof buf) == 6 && strcmp(buf, "abCDef") == 0,
          "the file holds abCDef");
    check(counts().swaps == before.swaps, "sharing the window needed no swap");
}

/* A descriptor kept across execve keeps its window (the exec'd copy checks it). */
static void across_exec(const char *self) {
    struct counts before = counts();
    int fd = open("/tmp/w4", O_CREAT | O_RDWR | O_TRUNC, 0644);
    check(fd >= 0 && write4(fd, "before-exec"), "write before exec");
    check(counts().mapped_opens == before.mapped_opens + 1, "the writer got a window");
    pid_t child = fork();
    if (child == 0) {
        char arg[16];
        snprintf(arg, sizeof arg, "%d", fd);
        execl(self, self, "--after-exec", arg, (char *)0);
        _exit(127);
    }
    int status = -1;
    check(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the exec'd program uses the descriptor");
    char buf[32] = {0};
    check(pread(fd, buf, sizeof buf, 0) == 17 && strcmp(buf, "before-exec+after") == 0,
          "its write is in the file");
    check(counts().swaps == before.swaps, "the window served both programs");
    close(fd);
}

static int after_exec(int fd) {
    char buf[32] = {0};
    int ok = lseek(fd, 0, SEEK_CUR) == 11 && write(fd, "+after", 6) == 6 &&
             pread(fd, buf, sizeof buf, 0) == 17 && strcmp(buf, "before-exec+after") == 0;
    return ok ? 0 : 1;
}

/* Windows are memory objects: closing the file must give their memory back. */
static void cycles(int n) {
    static char data[4000];
    memset(data, 'z', sizeof data);
    for (int i = 0; i < n; i++) {
        int fd = open("/tmp/w5", O_CREAT | O_RDWR | O_TRUNC, 0644);
        for (int j = 0; j < 5; j++)
            if (fd < 0 || write(fd, data, sizeof data) != sizeof data) check(0, "a cycle's write");
        close(fd);
        unlink("/tmp/w5");
    }
}

static long free_pages(void) {
    struct sysinfo si;
    return sysinfo(&si) == 0 ? (long)(si.freeram * si.mem_unit / 4096) : -1;
}

static void no_leaks(void) {
    cycles(10); /* the file server's heap settles */
    struct counts was = counts();
    long before = free_pages();
    cycles(40);
    long after = free_pages();
    check(counts().mapped_opens == was.mapped_opens + 40, "every cycle used a window");
    /* Each window is 9 pages or more: a leak of every one would be 360. */
    check(before > 0 && after > before - 64, "closed windows give their memory back");
    if (after <= before - 64) printf("linux-windows: free pages %ld -> %ld\n", before, after);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--after-exec") == 0) return after_exec(atoi(argv[2]));
    lone_writer();
    second_open();
    shared_over_fork();
    across_exec(argv[0]);
    no_leaks();
    if (failures) {
        printf("linux-windows: %d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("linux-windows: ok (%d checks)\n", checks);
    return 0;
}
