/* A static musl C program for the Linux personality: prints, allocates (brk and mmap), reads
 * its arguments, environment and auxiliary vector, and checks what it gets back. Exits 0 only
 * if every check holds; prints each failure. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what) {
    if (!ok) {
        failures++;
        printf("linux-hello: FAILED: %s\n", what);
    }
}

int main(int argc, char **argv) {
    printf("hello from a static musl program: argv[0]=%s, pid %d\n", argv[0], (int)getpid());
    check(argc == 1 && strcmp(argv[0], "/bin/linux-hello") == 0, "argv");
    check(getenv("HOME") && strcmp(getenv("HOME"), "/") == 0, "environment");
    check(getauxval(AT_PAGESZ) == 4096, "AT_PAGESZ");
    const unsigned char *random = (const unsigned char *)getauxval(AT_RANDOM);
    int nonzero = 0;
    for (int i = 0; random && i < 16; i++) nonzero |= random[i];
    check(nonzero, "AT_RANDOM");

    /* malloc: small blocks come from brk, large ones from mmap. */
    size_t total = 0;
    for (int i = 1; i <= 64; i++) {
        unsigned char *p = malloc(i * 1000);
        check(p != NULL, "malloc");
        if (!p) break;
        memset(p, i, i * 1000);
        for (int j = 0; j < i * 1000; j += 997) check(p[j] == (unsigned char)i, "heap contents");
        total += i * 1000;
        if (i % 2) free(p);
    }
    unsigned char *big = malloc(8 << 20);
    check(big != NULL, "8 MiB malloc");
    if (big) {
        for (size_t i = 0; i < (8u << 20); i += 4096) big[i] = (unsigned char)(i >> 12);
        int good = 1;
        for (size_t i = 0; i < (8u << 20); i += 4096) good &= big[i] == (unsigned char)(i >> 12);
        check(good, "8 MiB contents");
        free(big);
    }
    void *area = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(area != MAP_FAILED && ((char *)area)[4096] == 0, "anonymous mmap is zero");
    if (area != MAP_FAILED) {
        memset(area, 0x5a, 1 << 20);
        check(munmap(area, 1 << 20) == 0, "munmap");
    }
    check(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3, 0) == MAP_FAILED, "file mmap refused");

    struct utsname u;
    check(uname(&u) == 0 && strcmp(u.sysname, "Linux") == 0 && strcmp(u.machine, "x86_64") == 0,
          "uname");
    struct timespec a, b, pause = {0, 2000000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    check(nanosleep(&pause, NULL) == 0, "nanosleep");
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long slept = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    check(slept >= 2000000, "monotonic clock advances across nanosleep");

    /* An unimplemented call is ENOSYS; a bad pointer is EFAULT. */
    errno = 0;
    check(syscall(400) == -1 && errno == ENOSYS, "unimplemented call is ENOSYS");
    errno = 0;
    check(write(1, (void *)0x8, 4) == -1 && errno == EFAULT, "bad pointer is EFAULT");
    errno = 0;
    check(write(7, "x", 1) == -1 && errno == EBADF, "bad descriptor is EBADF");
    fprintf(stderr, "linux-hello: stderr works, %zu bytes allocated\n", total);

    if (failures == 0) printf("linux-hello: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
