/* System-call sites rewritten into calls (kernel switch k42.syscall_rewrite, on by default):
 * after the program's system calls have run, the `syscall` instructions it executed should
 * read `call rax` in its memory while its file (read back through /proc/self/exe) is
 * unchanged. Also checks that rewritten sites keep working: the same site with another
 * number, a number no system call has (ENOSYS through the second half of the sled), and a
 * forked child running the rewritten text. Prints how many sites it found rewritten; the
 * test knows which switch the kernel had. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            printf("linux-rewrite: FAILED: " __VA_ARGS__); \
            printf("\n");                                 \
            failures++;                                   \
        }                                                 \
    } while (0)

/* The whole file at `path`, or NULL. */
static unsigned char *read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) return NULL;
    unsigned char *buf = malloc(st.st_size);
    size_t done = 0;
    while (buf && done < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + done, st.st_size - done);
        if (n <= 0) break;
        done += n;
    }
    close(fd);
    *len = done;
    return done == (size_t)st.st_size ? buf : NULL;
}

int main(void) {
    pid_t pid = getpid();
    for (int i = 0; i < 3; i++) CHECK(syscall(SYS_getpid) == pid, "getpid through syscall()");
    /* syscall()'s one site is rewritten by now; other numbers still go through it. */
    CHECK(syscall(SYS_getppid) == getppid(), "getppid through syscall()");
    errno = 0;
    CHECK(syscall(600) == -1 && errno == ENOSYS, "an unknown number gives ENOSYS (errno %d)",
          errno);
    CHECK(syscall(SYS_getpid) == pid, "getpid after an unknown number");

    pid_t child = fork();
    if (child == 0) _exit(syscall(SYS_getpid) == getpid() && getppid() == pid ? 0 : 1);
    int status = -1;
    CHECK(child > 0 && waitpid(child, &status, 0) == child && status == 0,
          "a forked child runs the rewritten text (status %#x)", status);

    size_t len = 0;
    unsigned char *file = read_file("/proc/self/exe", &len);
    CHECK(file != NULL, "read /proc/self/exe");
    if (file == NULL) return 1;
    Elf64_Ehdr *eh = (Elf64_Ehdr *)file;
    CHECK(len >= sizeof *eh && memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0, "an ELF file");
    Elf64_Phdr *ph = (Elf64_Phdr *)(file + eh->e_phoff);
    unsigned long bias = 0;
    for (int i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_PHDR) bias = getauxval(AT_PHDR) - ph[i].p_vaddr;

    int rewritten = 0, other = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_X)) continue;
        const unsigned char *mem = (const unsigned char *)(ph[i].p_vaddr + bias);
        const unsigned char *disk = file + ph[i].p_offset;
        for (size_t at = 0; at < ph[i].p_filesz; at++) {
            if (mem[at] == disk[at]) continue;
            if (at + 1 < ph[i].p_filesz && disk[at] == 0x0f && disk[at + 1] == 0x05 &&
                mem[at] == 0xff && mem[at + 1] == 0xd0) {
                rewritten++;
                at++;
            } else {
                other++;
            }
        }
    }
    CHECK(other == 0, "%d text bytes differ from the file other than rewritten sites", other);
    if (failures) return 1;
    printf("linux-rewrite: ok (%d system-call sites rewritten, the file unchanged)\n", rewritten);
    return 0;
}
