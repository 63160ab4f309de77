/* Times process work through the Linux personality; the same static binary runs on the host
 * and the benchmark compares the two. Prints `metric <name> <value>` lines:
 *   linux_pipe_roundtrip_ns   one byte to a forked child and back over two pipes
 *   linux_fork_exec_wait_us   fork, execve of this program (which exits at once), wait4
 *   linux_fault_ns_per_page   first touch of each page of a fresh 64 MiB anonymous mapping
 *   linux_file_rw_us          create a file, write 1 MiB in 4 KiB calls, read it back, close
 *                             (in the guest: through the file's window)
 *   linux_file_rw_shared_us   the same with a second descriptor open on the file, so the
 *                             guest's file server mediates every call
 *   linux_small_file_us       write 100 bytes to a file (open, write, close), read them back
 *                             (open, read, close): one round (in the guest: windows)
 *   linux_small_file_shared_us  the same with the file held open elsewhere (mediated)
 * Few rounds: in the guest each round costs milliseconds of emulated ring 0. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PIPE_ROUNDS 50
#define EXEC_ROUNDS 10
#define FAULT_BYTES (64L << 20)
#define FILE_BYTES (1 << 20)
#define FILE_CHUNK 4096

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int pipe_roundtrip(void) {
    int to_child[2], to_parent[2];
    if (pipe(to_child) || pipe(to_parent))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        close(to_child[1]);
        close(to_parent[0]);
        while (read(to_child[0], &c, 1) == 1 && write(to_parent[1], &c, 1) == 1) {
        }
        _exit(0);
    }
    if (pid < 0)
        return -1;
    close(to_child[0]);
    close(to_parent[1]);
    char c = 'x';
    long long start = now_ns();
    for (int i = 0; i < PIPE_ROUNDS; i++) {
        if (write(to_child[1], &c, 1) != 1 || read(to_parent[0], &c, 1) != 1)
            return -1;
    }
    long long ns = now_ns() - start;
    close(to_child[1]);
    close(to_parent[0]);
    waitpid(pid, NULL, 0);
    printf("metric linux_pipe_roundtrip_ns %.1f\n", (double)ns / PIPE_ROUNDS);
    return 0;
}

static int fork_exec_wait(const char *self) {
    long long start = now_ns();
    for (int i = 0; i < EXEC_ROUNDS; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            char *argv[] = {(char *)self, "exit", NULL};
            execv(self, argv);
            _exit(127);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            return -1;
    }
    printf("metric linux_fork_exec_wait_us %.1f\n", (double)(now_ns() - start) / EXEC_ROUNDS / 1000);
    return 0;
}

static int first_touch(void) {
    char *area = mmap(NULL, FAULT_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED)
        return -1;
    long long start = now_ns();
    for (long at = 0; at < FAULT_BYTES; at += 4096)
        area[at] = 1;
    long long ns = now_ns() - start;
    long sum = 0;
    for (long at = 0; at < FAULT_BYTES; at += 4096)
        sum += area[at];
    munmap(area, FAULT_BYTES);
    printf("metric linux_fault_ns_per_page %.1f\n", (double)ns / (FAULT_BYTES / 4096));
    return sum == FAULT_BYTES / 4096 ? 0 : -1;
}

/* Writes FILE_BYTES to a new file and reads them back, in FILE_CHUNK calls; with `shared`, a
 * second descriptor stays open on the file meanwhile. Returns microseconds, or -1. */
static double file_rw(int shared) {
    static char chunk[FILE_CHUNK], back[FILE_CHUNK];
    const char *path = "/tmp/procbench-file";
    unlink(path);
    long long start = now_ns();
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    int other = shared ? open(path, O_RDONLY) : -2;
    if (fd < 0 || other == -1)
        return -1;
    for (int at = 0; at < FILE_BYTES; at += FILE_CHUNK) {
        memset(chunk, at / FILE_CHUNK, sizeof chunk);
        if (write(fd, chunk, sizeof chunk) != sizeof chunk)
            return -1;
    }
    if (lseek(fd, 0, SEEK_SET) != 0)
        return -1;
    for (int at = 0; at < FILE_BYTES; at += FILE_CHUNK) {
        if (read(fd, back, sizeof back) != sizeof back || back[7] != (char)(at / FILE_CHUNK))
            return -1;
    }
    close(fd);
    if (shared)
        close(other);
    double us = (double)(now_ns() - start) / 1000;
    unlink(path);
    return us;
}

#define SMALL_ROUNDS 10

/* SMALL_ROUNDS rounds of writing a 100-byte file and reading it back; with `shared`, a
 * descriptor stays open on it throughout. Returns microseconds per round, or -1. */
static double small_file(int shared) {
    const char *path = "/tmp/procbench-small";
    char data[100], back[128];
    memset(data, 's', sizeof data);
    int other = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (other < 0)
        return -1;
    if (!shared)
        close(other);
    long long start = now_ns();
    for (int i = 0; i < SMALL_ROUNDS; i++) {
        int fd = open(path, O_WRONLY | O_TRUNC);
        if (fd < 0 || write(fd, data, sizeof data) != sizeof data || close(fd))
            return -1;
        fd = open(path, O_RDONLY);
        if (fd < 0 || read(fd, back, sizeof back) != sizeof data || close(fd))
            return -1;
    }
    double us = (double)(now_ns() - start) / 1000 / SMALL_ROUNDS;
    if (shared)
        close(other);
    unlink(path);
    return us;
}

static int file_io(void) {
    double alone = file_rw(0), shared = file_rw(1);
    double small = small_file(0), small_shared = small_file(1);
    if (alone < 0 || shared < 0 || small < 0 || small_shared < 0)
        return -1;
    printf("metric linux_file_rw_us %.1f\n", alone);
    printf("metric linux_file_rw_shared_us %.1f\n", shared);
    printf("metric linux_small_file_us %.1f\n", small);
    printf("metric linux_small_file_shared_us %.1f\n", small_shared);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "exit") == 0)
        return 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe_roundtrip() || fork_exec_wait(argv[0]) || first_touch() || file_io()) {
        printf("linux-procbench: FAILED\n");
        return 1;
    }
    return 0;
}
