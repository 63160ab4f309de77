/* Times reads of a disk; the same static binary runs in the guest on /dev/vda (through the
 * Linux personality and the ring-3 driver blkd) and on the host on the image file behind it,
 * and benches/benches/disk.rs compares the two. Argument: the disk or file (default
 * /dev/vda), at least 4 MiB. Prints `metric <name> <value>` lines:
 *   disk_seq_read_us      1 MiB read in 64 KiB calls from offset 0, per MiB
 *   disk_rand_read_us     a 4 KiB read at a pseudo-random 4 KiB-aligned offset in the first
 *                         4 MiB, per read (RAND_READS of them)
 *   disk_cached_read_us   a 4 KiB read of one block read just before, per read
 * Before each timed pass it asks the device to drop its cached blocks (BLKFLSBUF; the guest's
 * driver then empties its block cache; a regular file on the host refuses it, and the host's
 * page cache stays warm), so the first two passes reach the device in the guest. Prints a
 * checksum of what it read, so the reads cannot be skipped. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define BLKFLSBUF 0x1261
#define SEQ_BYTES (1 << 20)
#define SEQ_CHUNK (64 << 10)
#define SPAN (4 << 20)
#define BLOCK 4096
#define RAND_READS 128
#define CACHED_READS 128

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static unsigned char buf[SEQ_CHUNK];
static uint64_t sum;

static int read_at(int fd, size_t len, off_t at) {
    if (pread(fd, buf, len, at) != (ssize_t)len) return -1;
    for (size_t i = 0; i < len; i += 512) sum = sum * 31 + buf[i];
    return 0;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/dev/vda";
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    ioctl(fd, BLKFLSBUF, 0);
    long long start = now_ns();
    for (off_t at = 0; at < SEQ_BYTES; at += SEQ_CHUNK)
        if (read_at(fd, SEQ_CHUNK, at)) return 2;
    long long seq = now_ns() - start;

    ioctl(fd, BLKFLSBUF, 0);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    start = now_ns();
    for (int i = 0; i < RAND_READS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (read_at(fd, BLOCK, (off_t)(x % (SPAN / BLOCK)) * BLOCK)) return 3;
    }
    long long rand = now_ns() - start;

    if (read_at(fd, BLOCK, 8 * BLOCK)) return 4;
    start = now_ns();
    for (int i = 0; i < CACHED_READS; i++)
        if (read_at(fd, BLOCK, 8 * BLOCK)) return 5;
    long long cached = now_ns() - start;
    close(fd);

    printf("metric disk_seq_read_us %.1f\n", seq / 1e3 * (1 << 20) / SEQ_BYTES);
    printf("metric disk_rand_read_us %.2f\n", rand / 1e3 / RAND_READS);
    printf("metric disk_cached_read_us %.2f\n", cached / 1e3 / CACHED_READS);
    printf("linux-diskbench: checksum %#llx\n", (unsigned long long)sum);
    return 0;
}
