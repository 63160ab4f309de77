/* Times process work through the Linux personality; the same static binary runs on the host
 * and the benchmark compares the two. Prints `metric <name> <value>` lines:
 *   linux_pipe_roundtrip_ns   one byte to a forked child and back over two pipes
 *   linux_fork_exec_wait_us   fork, execve of this program (which exits at once), wait4
 *   linux_fault_ns_per_page   first touch of each page of a fresh 64 MiB anonymous mapping
 * Few rounds: in the guest each round costs milliseconds of emulated ring 0. */
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

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "exit") == 0)
        return 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe_roundtrip() || fork_exec_wait(argv[0]) || first_touch()) {
        printf("linux-procbench: FAILED\n");
        return 1;
    }
    return 0;
}
