/* Times the Linux getpid system call (issued with syscall(2), so no C library caching): the
 * same static binary runs in the guest through the Linux personality and on the host, and the
 * benchmark compares the two. Prints a `metric linux_getpid_ns <ns>` line. */
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 200000

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(void) {
    long sum = 0;
    for (int i = 0; i < 1000; i++) sum += syscall(SYS_getpid);
    long long best = -1;
    for (int run = 0; run < 5; run++) {
        long long start = now_ns();
        for (int i = 0; i < ROUNDS; i++) sum += syscall(SYS_getpid);
        long long ns = now_ns() - start;
        if (best < 0 || ns < best) best = ns;
    }
    printf("metric linux_getpid_ns %.1f\n", (double)best / ROUNDS);
    return sum == 0;
}
