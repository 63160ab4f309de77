/* getrandom(2) from a static musl program: under k42 the Linux personality serves it from the
 * virtio-rng driver (rngd) when one runs. Prints 32 bytes in hex; fails if they are all zero. */
#include <stdio.h>
#include <sys/random.h>

int main(void) {
    unsigned char bytes[32];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
        perror("getrandom");
        return 1;
    }
    int zero = 1;
    printf("linux-random: getrandom ");
    for (unsigned i = 0; i < sizeof bytes; i++) {
        printf("%02x", bytes[i]);
        zero &= bytes[i] == 0;
    }
    printf("\n");
    return zero;
}
