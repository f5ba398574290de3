/*
 * fenced.h -- outputs for the C tests: each buffer prefilled with a chosen byte and fenced by GUARD bytes of 0x5c on
 * both sides, so that a kernel that leaves a value unwritten or writes past its output is caught. The including
 * file defines GUARD (a size_t) first.
 */
#ifndef BNN_TESTS_FENCED_H
#define BNN_TESTS_FENCED_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned char *block;
    void *data;
    size_t bytes;
} output_t;

static output_t output_new(size_t bytes, int fill)
{
    output_t o = {malloc(bytes + 2 * GUARD), NULL, bytes};
    if (!o.block) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memset(o.block, 0x5c, GUARD);
    memset(o.block + GUARD, fill, bytes);
    memset(o.block + GUARD + bytes, 0x5c, GUARD);
    o.data = o.block + GUARD;
    return o;
}

static int guards_intact(const output_t *o)
{
    for (size_t i = 0; i < GUARD; i++)
        if (o->block[i] != 0x5c || o->block[GUARD + o->bytes + i] != 0x5c)
            return 0;
    return 1;
}

#endif /* BNN_TESTS_FENCED_H */
