/* A static musl C program for disks (run by `init=/bin/runlist k42.arg=1` on a VM started with
 * two disks: a writable 1 MiB /dev/vda and a read-only /dev/vdb, both filled by the host).
 * Checks the device nodes, the size ioctls, reads and writes at offsets that are not
 * block-aligned, the end of the disk, a read-only disk, and an offset shared over fork; prints
 * FNV-1a checksums of host-written bytes for the host to compare, and leaves a pattern at
 * PATTERN_AT for the host to find in the image file. Exits 0 only if every check holds. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLKROGET 0x125e
#define BLKGETSIZE 0x1260
#define BLKSSZGET 0x1268
#define BLKGETSIZE64 0x80081272

/* Where the pattern goes on /dev/vda, and how long it is: it starts and ends inside blocks. */
#define PATTERN_AT (512 * 1024 + 100)
#define PATTERN_LEN 10000

static int failures, checks;

static void check(int ok, const char *what) {
    checks++;
    if (!ok) {
        failures++;
        printf("linux-disk: FAILED: %s (errno %d)\n", what, errno);
    }
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Byte i of the pattern (the host computes the same). */
static unsigned char pattern(size_t i) { return (unsigned char)(i * 31 + (i >> 7) + 5); }

/* The FNV-1a of the first `len` bytes of fd, read in `chunk`-byte reads (not block-sized). */
static uint64_t checksum(int fd, size_t len, size_t chunk) {
    static unsigned char buf[5000];
    uint64_t h = 0xcbf29ce484222325ull;
    size_t done = 0;
    while (done < len) {
        size_t want = len - done < chunk ? len - done : chunk;
        ssize_t n = read(fd, buf, want);
        if (n <= 0) return 0;
        h = fnv1a(h, buf, (size_t)n);
        done += (size_t)n;
    }
    return h;
}

static void nodes(void) {
    struct stat st;
    check(stat("/dev/vda", &st) == 0 && S_ISBLK(st.st_mode), "/dev/vda is a block device");
    check(major(st.st_rdev) == 254 && minor(st.st_rdev) == 0, "/dev/vda is 254:0");
    check(stat("/dev/vdb", &st) == 0 && S_ISBLK(st.st_mode) && minor(st.st_rdev) == 16,
          "/dev/vdb is block device 254:16");
    check(stat("/dev/vdc", &st) < 0 && errno == ENOENT, "no /dev/vdc with two disks");
}

static void writable(void) {
    int fd = open("/dev/vda", O_RDWR);
    check(fd >= 0, "open /dev/vda read-write");
    if (fd < 0) return;
    uint64_t bytes = 0;
    unsigned long sectors = 0;
    int ssz = 0, ro = -1;
    check(ioctl(fd, BLKGETSIZE64, &bytes) == 0 && bytes == 1 << 20, "BLKGETSIZE64 is 1 MiB");
    check(ioctl(fd, BLKGETSIZE, &sectors) == 0 && sectors == 2048, "BLKGETSIZE is 2048");
    check(ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz == 512, "BLKSSZGET is 512");
    check(ioctl(fd, BLKROGET, &ro) == 0 && ro == 0, "BLKROGET is 0");
    check(ioctl(fd, 0x5401 /* TCGETS */, &ro) < 0 && errno == ENOTTY, "a disk is no terminal");
    check(lseek(fd, 0, SEEK_END) == 1 << 20, "SEEK_END is the size");
    check(lseek(fd, 0, SEEK_SET) == 0, "back to 0");
    printf("linux-disk: vda first 64 KiB fnv1a %#018llx\n",
           (unsigned long long)checksum(fd, 65536, 1000));
    check(lseek(fd, 0, SEEK_CUR) == 65536, "reads moved the offset");

    static unsigned char out[PATTERN_LEN], back[PATTERN_LEN];
    for (size_t i = 0; i < PATTERN_LEN; i++) out[i] = pattern(i);
    check(pwrite(fd, out, PATTERN_LEN, PATTERN_AT) == PATTERN_LEN, "pwrite across blocks");
    check(lseek(fd, 0, SEEK_CUR) == 65536, "pwrite keeps the offset");
    check(pread(fd, back, PATTERN_LEN, PATTERN_AT) == PATTERN_LEN &&
              memcmp(out, back, PATTERN_LEN) == 0,
          "pread gives the pattern back");
    check(fsync(fd) == 0, "fsync");

    /* The end of the disk. */
    char c = 'x';
    check(pread(fd, back, 10, 1 << 20) == 0, "a read at the end gives 0");
    check(pwrite(fd, &c, 1, 1 << 20) < 0 && errno == ENOSPC, "a write at the end: ENOSPC");
    check(lseek(fd, -3, SEEK_END) == (1 << 20) - 3, "seek near the end");
    check(read(fd, back, 10) == 3, "a read across the end is cut short");
    check(lseek(fd, -1, SEEK_SET) < 0 && errno == EINVAL, "a negative offset: EINVAL");

    /* A descriptor shared over fork shares its offset. */
    check(lseek(fd, 4096, SEEK_SET) == 4096, "seek to 4096");
    pid_t child = fork();
    if (child == 0) {
        char buf[100];
        _exit(read(fd, buf, 100) == 100 ? 0 : 1);
    }
    int status = -1;
    check(child > 0 && waitpid(child, &status, 0) == child && status == 0, "the child read");
    check(lseek(fd, 0, SEEK_CUR) == 4196, "the child's read moved the shared offset");
    close(fd);
    check(write(fd, &c, 1) < 0 && errno == EBADF, "a closed disk: EBADF");
}

static void readonly(void) {
    check(open("/dev/vdb", O_RDWR) < 0 && errno == EROFS, "a read-only disk opened to write: EROFS");
    int fd = open("/dev/vdb", O_RDONLY);
    check(fd >= 0, "open /dev/vdb read-only");
    if (fd < 0) return;
    int ro = 0;
    check(ioctl(fd, BLKROGET, &ro) == 0 && ro == 1, "BLKROGET is 1");
    char c = 'x';
    check(write(fd, &c, 1) < 0 && errno == EBADF, "a write to a read-only descriptor: EBADF");
    printf("linux-disk: vdb first 16 KiB fnv1a %#018llx\n",
           (unsigned long long)checksum(fd, 16384, 4096));
    close(fd);
}

int main(void) {
    nodes();
    writable();
    readonly();
    if (failures) {
        printf("linux-disk: %d of %d checks FAILED\n", failures, checks);
        return 1;
    }
    printf("linux-disk: ok (%d checks)\n", checks);
    return 0;
}
