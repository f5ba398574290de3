/*
 * store_kill.c -- bnn_store.h on a file, for the SIGKILL test (tests/kill_store.py): POSIX file I/O with fsync as
 * the storage a Linux device gives the learner.
 *
 *   store_kill FILE save N   load the newest state (if any), then save N more, each the next sequence number's
 *                            payload; prints "saved SEQ" after each save returned (it is then on the disk)
 *   store_kill FILE check    load the newest state and check its payload is its sequence number's; prints
 *                            "state SEQ" or "no state" (status 0), or what is wrong (status 1)
 *
 * The payload of sequence k: 1000 + (k * 7919) % 5000 bytes, byte i = (k * 131 + i * 7) mod 256.
 */
#define _POSIX_C_SOURCE 200809L
#include "bnn_store.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOT 8192

static int file_read(void *ctx, unsigned slot, size_t offset, void *dst, size_t len)
{
    int fd = *(int *)ctx;
    ssize_t n = pread(fd, dst, len, (off_t)(slot * SLOT + offset));
    if (n >= 0 && (size_t)n < len) memset((char *)dst + n, 0, len - (size_t)n); /* beyond the end: never written */
    return n < 0;
}

static int file_write(void *ctx, unsigned slot, size_t offset, const void *src, size_t len)
{
    int fd = *(int *)ctx;
    return pwrite(fd, src, len, (off_t)(slot * SLOT + offset)) != (ssize_t)len;
}

static int file_flush(void *ctx, unsigned slot)
{
    (void)slot;
    return fsync(*(int *)ctx) != 0;
}

static size_t payload(uint64_t k, unsigned char *p)
{
    size_t n = 1000 + (size_t)((k * 7919) % 5000);
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(k * 131 + i * 7);
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: store_kill FILE save N | check\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        perror(argv[1]);
        return 2;
    }
    bnn_storage st = {&fd, SLOT, file_read, file_write, file_flush};
    static unsigned char buf[SLOT], want[SLOT];
    size_t size = 0;
    uint64_t seq = 0;
    bnn_error err;
    bnn_status s = bnn_state_load(&st, buf, sizeof buf, &size, &seq, &err);
    if (s != BNN_OK && s != BNN_ERR_NO_STATE) {
        printf("load failed: %s\n", err.message);
        return 1;
    }
    if (s == BNN_OK && (size != payload(seq, want) || memcmp(buf, want, size) != 0)) {
        printf("state %llu: its payload is not its own\n", (unsigned long long)seq);
        return 1;
    }
    if (strcmp(argv[2], "check") == 0) {
        if (s == BNN_OK)
            printf("state %llu\n", (unsigned long long)seq);
        else
            printf("no state\n");
        return 0;
    }
    long n = argc > 3 ? atol(argv[3]) : 1;
    for (long i = 0; i < n; i++) {
        size = payload(seq + 1, buf);
        if (bnn_state_save(&st, buf, size, &seq, &err) != BNN_OK) {
            printf("save failed: %s\n", err.message);
            return 1;
        }
        printf("saved %llu\n", (unsigned long long)seq);
        fflush(stdout);
    }
    close(fd);
    return 0;
}
