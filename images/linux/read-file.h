/* Shared by the Linux test programs in C: reads a whole (small) file. */
#ifndef K42_READ_FILE_H
#define K42_READ_FILE_H

#include <fcntl.h>
#include <unistd.h>

/* Reads `path` into `buf` (NUL-terminated, at most `size - 1` bytes); the length, or -1. */
static int read_file(const char *path, char *buf, int size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    int n = 0, got;
    while (n < size - 1 && (got = read(fd, buf + n, size - 1 - n)) > 0)
        n += got;
    close(fd);
    buf[n] = 0;
    return n;
}

#endif
