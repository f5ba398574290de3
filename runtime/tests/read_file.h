/* read_file.h -- a whole file in memory, for the test and benchmark programs (the runtime itself reads nothing). */
#ifndef BNN_TESTS_READ_FILE_H
#define BNN_TESTS_READ_FILE_H

#include <stdio.h>
#include <stdlib.h>

/* The whole file in a malloc'd buffer of exactly its size (at least 1 byte allocated); NULL if unreadable. */
static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc(n ? (size_t)n : 1);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    *size = n > 0 ? (size_t)n : 0;
    return buf;
}

#endif /* BNN_TESTS_READ_FILE_H */
