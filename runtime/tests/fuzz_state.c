/*
 * fuzz_state.c -- damaged learner state blobs through bnn_learner_deserialize (bnn_learner.h), under AddressSanitizer
 * + UBSan.
 *
 *   fuzz_state MODEL STATE ITERATIONS SEED
 *
 * MODEL is a model file, STATE a state blob a learner wrote for it (learn_stream --print-state, or the Python
 * wrapper's CLearner.state_blob()); the learner fuzzed is set up with the blob's own options
 * (bnn_learner_state_options) and max_patterns 64. Every iteration starts from the original blob and applies one mutation, or (one time in
 * four) two: truncate (a random length), flip (1-8 bits), field (a 4- or 8-byte word of the header, or of a random
 * place, set to an edge or random value: 0, 1, 2^31 - 1, 2^31, 2^32 - 1, the old value +- 1, 2^63, 2^64 - 1, the
 * blob's size, random), tail (1-64 bytes appended). In three iterations of four the trailing CRC-32 is recomputed
 * (and the header's size field set to the new length) so that the checks behind the checksum are reached.
 *
 * Then bnn_learner_deserialize from a buffer of exactly the mutated length (ASan reports any read past it) into a
 * learner that first loaded the original blob: a refusal must be one of bnn.h's codes with a one-line message and
 * leave the learner's state as it was (its serialized bytes are compared with the original); an acceptance must give
 * a learner that serializes back to exactly the mutated blob (everything it read is kept as read) and that can learn
 * one small experience and predict without any invalid access. Exit 0 when every check held.
 */
#include "bnn_learner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "read_file.h"

static uint64_t rng_state;

static uint64_t next64(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t below(size_t n) { return n ? (size_t)(next64() % n) : 0; }

static uint32_t crc32(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1u ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static void put(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* One mutation of buf (len bytes, room for cap); returns the new length. */
static size_t mutate(unsigned char *buf, size_t len, size_t cap)
{
    switch (below(4)) {
    case 0: /* truncate */
        return below(len);
    case 1: { /* flip */
        size_t flips = 1 + below(8);
        for (size_t i = 0; i < flips && len; i++) buf[below(len)] ^= (unsigned char)(1u << below(8));
        return len;
    }
    case 2: { /* field */
        int bytes = below(2) ? 4 : 8;
        if (len < (size_t)bytes) return len;
        size_t at = below(3) ? 4 * below(192 / 4) : 4 * below((len - (size_t)bytes) / 4 + 1);
        if (at + (size_t)bytes > len) return len;
        uint64_t old = get(buf + at, bytes);
        const uint64_t edges[] = {0, 1, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, old + 1, old - 1, 1ull << 63,
                                  ~0ull, len, next64()};
        put(buf + at, edges[below(sizeof edges / sizeof edges[0])], bytes);
        return len;
    }
    default: { /* tail */
        size_t extra = 1 + below(64);
        if (len + extra > cap) extra = cap - len;
        for (size_t i = 0; i < extra; i++) buf[len + i] = (unsigned char)next64();
        return len + extra;
    }
    }
}

static int read_zero(void *ctx, size_t index, uint8_t *image, uint32_t *label)
{
    size_t bytes = *(const size_t *)ctx;
    if (image) memset(image, (int)(index * 37 & 0xFF), bytes);
    *label = (uint32_t)(index % 3);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: fuzz_state MODEL STATE ITERATIONS SEED\n");
        return 2;
    }
    size_t model_size, state_size;
    unsigned char *model_file = read_file(argv[1], &model_size), *state = read_file(argv[2], &state_size);
    if (!model_file || !state) {
        fprintf(stderr, "fuzz_state: cannot read %s\n", model_file ? argv[2] : argv[1]);
        return 2;
    }
    uint64_t *model = malloc(model_size + 8); /* 8-byte aligned */
    memcpy(model, model_file, model_size);
    long iterations = atol(argv[3]);
    rng_state = strtoull(argv[4], NULL, 10);
    bnn_learn_options o;
    bnn_error err;
    if (bnn_learner_state_options(state, state_size, &o, &err)) {
        fprintf(stderr, "fuzz_state: %s: %s\n", argv[2], err.message);
        return 2;
    }
    o.max_patterns = 64;
    unsigned char *user_bytes = malloc(o.user_bytes + 1u);
    size_t user_len = 0, ulen = 0;
    bnn_learner_memory mem;
    if (bnn_learner_arena_size(model, model_size, &o, &mem, &err)) {
        fprintf(stderr, "fuzz_state: %s: %s\n", argv[1], err.message);
        return 2;
    }
    void *arena = malloc(mem.total);
    bnn_learner *L;
    if (bnn_learner_init(model, model_size, &o, arena, mem.total, &L, &err)
        || bnn_learner_deserialize(L, state, state_size, user_bytes, o.user_bytes, &user_len, &err)) {
        fprintf(stderr, "fuzz_state: the original blob: %s\n", err.message);
        return 2;
    }
    /* the image size, from the model (read_zero writes exactly one image into the learner's buffer) */
    size_t model_arena, image_bytes;
    bnn_model *m;
    bnn_info info;
    bnn_arena_size(model, model_size, &model_arena, &err);
    void *m_arena = malloc(model_arena);
    bnn_init(model, model_size, m_arena, model_arena, &m, &err);
    bnn_get_info(m, &info);
    image_bytes = (size_t)info.height * info.width * info.channels;
    size_t cap = bnn_learner_state_bytes(L) + 256, out_size;
    unsigned char *buf = malloc(cap), *before = malloc(cap), *after = malloc(cap);
    bnn_learner_serialize(L, user_bytes, user_len, before, cap, &out_size, &err);
    if (out_size != state_size || memcmp(before, state, state_size) != 0) {
        fprintf(stderr, "fuzz_state: the original blob does not serialize back to itself\n");
        return 1;
    }
    long refused = 0, accepted = 0, learned = 0;
    uint8_t *images = calloc(8, image_bytes);
    for (long it = 0; it < iterations; it++) {
        size_t len = state_size;
        memcpy(buf, state, state_size);
        int rounds = below(4) == 0 ? 2 : 1;
        for (int r = 0; r < rounds; r++) len = mutate(buf, len, cap - 64);
        if (below(4) != 0 && len >= 8) { /* restamped: the size field and the CRC made to hold */
            if (len >= 24) put(buf + 16, len, 8);
            put(buf + len - 4, crc32(buf, len - 4), 4);
        }
        unsigned char *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        unsigned char *user = malloc(o.user_bytes + 1u);
        bnn_status s = bnn_learner_deserialize(L, exact, len, user, o.user_bytes, &ulen, &err);
        if (s != BNN_OK) {
            refused++;
            if (s > BNN_ERR_NUMERIC || err.code != s || !err.message[0] || strchr(err.message, '\n')) {
                fprintf(stderr, "iteration %ld: a refusal without its code or message (%d)\n", it, (int)s);
                return 1;
            }
            bnn_learner_serialize(L, user_bytes, user_len, after, cap, &out_size, &err);
            if (out_size != state_size || memcmp(after, before, state_size) != 0) {
                fprintf(stderr, "iteration %ld: a refused blob changed the learner (%s)\n", it, err.message);
                return 1;
            }
        } else {
            accepted++;
            if (bnn_learner_serialize(L, user, ulen, after, cap, &out_size, &err) || out_size != len
                || memcmp(after, exact, len) != 0) {
                fprintf(stderr, "iteration %ld: an accepted blob does not serialize back to itself\n", it);
                return 1;
            }
            bnn_experience e = {&image_bytes, 8, read_zero};
            int32_t labels[8];
            bnn_status ls = bnn_learner_learn(L, &e, NULL, &err);
            learned += ls == BNN_OK;
            bnn_learner_predict(L, images, 1, labels, &err);
            /* back to the original for the next iteration */
            if (bnn_learner_deserialize(L, state, state_size, user_bytes, o.user_bytes, &user_len, &err)) {
                fprintf(stderr, "iteration %ld: the original no longer loads: %s\n", it, err.message);
                return 1;
            }
        }
        free(exact);
        free(user);
    }
    printf("fuzz_state %s: %ld iterations, %ld refused, %ld accepted (%ld of them learned an experience)\n", argv[2],
           iterations, refused, accepted, learned);
    free(images), free(buf), free(before), free(after), free(arena), free(m_arena), free(model), free(model_file);
    free(state), free(user_bytes);
    return 0;
}
