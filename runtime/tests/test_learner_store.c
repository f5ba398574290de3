/*
 * test_learner_store.c -- a real learner's state (bnn_learner_save / bnn_learner_load) against a power cut at every
 * byte of a save.
 *
 *   test_learner_store MODEL
 *
 * MODEL is a model file whose network ends in a pool and a head (the tests' tiny one). A learner learns two small
 * experiences of synthetic images (AR1*, 1-bit replay), saving after the first into a storage of two memory slots;
 * then, for every N from 0 to the second save's bytes (its payload and header), the second save runs into a storage
 * that takes only N more bytes (a power cut: the rest is lost), the "device reboots", and a new learner loads: it must
 * load, and hold exactly the state after the first experience (N below the save's size) or after the second (N the
 * whole save), byte for byte; and it must go on to learn the second experience again to the state after the second.
 */
#include "bnn_learner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "read_file.h"

typedef struct {
    unsigned char *slot[2];
    size_t slot_bytes;
    long budget; /* bytes the storage still takes before the cut; < 0: no cut */
} stub;

static int stub_read(void *ctx, unsigned slot, size_t offset, void *dst, size_t len)
{
    stub *s = ctx;
    if (slot > 1 || offset + len > s->slot_bytes) return -1;
    memcpy(dst, s->slot[slot] + offset, len);
    return 0;
}

static int stub_write(void *ctx, unsigned slot, size_t offset, const void *src, size_t len)
{
    stub *s = ctx;
    if (slot > 1 || offset + len > s->slot_bytes) return -1;
    size_t n = s->budget < 0 || (size_t)s->budget >= len ? len : (size_t)s->budget;
    memcpy(s->slot[slot] + offset, src, n);
    if (s->budget >= 0) s->budget -= (long)n;
    return 0; /* after the cut the writes vanish: the device is already off */
}

typedef struct {
    size_t image_bytes, first;
} source;

static int read_synthetic(void *ctx, size_t index, uint8_t *image, uint32_t *label)
{
    const source *src = ctx;
    size_t k = src->first + index;
    if (image)
        for (size_t i = 0; i < src->image_bytes; i++) image[i] = (uint8_t)(k * 131u + i * 29u + (i * k >> 3));
    *label = (uint32_t)(k % 4);
    return 0;
}

static int failures;
#define CHECK(cond, ...)                                                                                           \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            failures++;                                                                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                            \
            printf(__VA_ARGS__);                                                                                   \
            printf("\n");                                                                                          \
        }                                                                                                          \
    } while (0)

static bnn_learner *new_learner(const uint64_t *model, size_t size, const bnn_learn_options *o, void *arena,
                                size_t arena_bytes)
{
    bnn_learner *L = NULL;
    bnn_error err;
    if (bnn_learner_init(model, size, o, arena, arena_bytes, &L, &err)) {
        printf("FAIL: bnn_learner_init: %s\n", err.message);
        exit(1);
    }
    return L;
}

static size_t blob_of(bnn_learner *L, unsigned char *out, size_t cap)
{
    size_t n = 0;
    bnn_error err;
    if (bnn_learner_serialize(L, NULL, 0, out, cap, &n, &err)) printf("FAIL: serialize: %s\n", err.message), exit(1);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_learner_store MODEL\n");
        return 2;
    }
    size_t size;
    unsigned char *file = read_file(argv[1], &size);
    if (!file) return fprintf(stderr, "test_learner_store: cannot read %s\n", argv[1]), 2;
    uint64_t *model = malloc(size + 8);
    memcpy(model, file, size);
    bnn_learn_options o;
    bnn_learn_defaults(&o);
    o.epochs = 1, o.batch_size = 8, o.replay_size = 20, o.replay_batch = 8, o.max_patterns = 64, o.lr = 0.05;
    bnn_learner_memory mem;
    bnn_error err;
    bnn_model *probe;
    if (bnn_learner_arena_size(model, size, &o, &mem, &err)) return printf("FAIL: %s\n", err.message), 1;
    size_t probe_bytes;
    bnn_arena_size(model, size, &probe_bytes, &err);
    void *probe_arena = malloc(probe_bytes);
    bnn_init(model, size, probe_arena, probe_bytes, &probe, &err);
    bnn_info info;
    bnn_get_info(probe, &info);
    source exp1 = {(size_t)info.height * info.width * info.channels, 0}, exp2 = {exp1.image_bytes, 1000};
    bnn_experience e1 = {&exp1, 24, read_synthetic}, e2 = {&exp2, 24, read_synthetic};

    void *arena = malloc(mem.total), *arena2 = malloc(mem.total);
    bnn_learner *L = new_learner(model, size, &o, arena, mem.total);
    size_t slot_bytes = BNN_SLOT_HEADER_BYTES + bnn_learner_state_bytes(L);
    stub st = {{calloc(1, slot_bytes), calloc(1, slot_bytes)}, slot_bytes, -1};
    bnn_storage storage = {&st, slot_bytes, stub_read, stub_write, NULL};
    unsigned char *blob1 = malloc(slot_bytes), *blob2 = malloc(slot_bytes), *got = malloc(slot_bytes);
    CHECK(bnn_learner_learn(L, &e1, NULL, &err) == BNN_OK, "learn 1: %s", err.message);
    CHECK(bnn_learner_save(L, &storage, NULL, 0, &err) == BNN_OK, "save 1: %s", err.message);
    size_t n1 = blob_of(L, blob1, slot_bytes);
    CHECK(bnn_learner_learn(L, &e2, NULL, &err) == BNN_OK, "learn 2: %s", err.message);
    size_t n2 = blob_of(L, blob2, slot_bytes);
    CHECK(n1 != n2 || memcmp(blob1, blob2, n1) != 0, "the second experience changed nothing");
    unsigned char *saved[2] = {malloc(slot_bytes), malloc(slot_bytes)};
    memcpy(saved[0], st.slot[0], slot_bytes), memcpy(saved[1], st.slot[1], slot_bytes);

    /* the second save's bytes: its payload and its header */
    long total = (long)(n2 + BNN_SLOT_HEADER_BYTES), old_state = 0, new_state = 0;
    for (long budget = 0; budget <= total; budget++) {
        memcpy(st.slot[0], saved[0], slot_bytes), memcpy(st.slot[1], saved[1], slot_bytes);
        st.budget = budget;
        bnn_learner_save(L, &storage, NULL, 0, &err); /* "succeeds": the cut is the device going off */
        st.budget = -1;
        bnn_learner *R = new_learner(model, size, &o, arena2, mem.total); /* the reboot */
        bnn_status s = bnn_learner_load(R, &storage, NULL, 0, NULL, &err);
        CHECK(s == BNN_OK, "cut after %ld of %ld bytes: no state loads (%s)", budget, total, err.message);
        if (s != BNN_OK) continue;
        size_t n = blob_of(R, got, slot_bytes);
        int is_old = n == n1 && memcmp(got, blob1, n1) == 0, is_new = n == n2 && memcmp(got, blob2, n2) == 0;
        CHECK(is_old || is_new, "cut after %ld bytes: the loaded state is neither the old nor the new one", budget);
        CHECK(is_new == (budget == total), "cut after %ld of %ld bytes: the %s state loaded", budget, total,
              is_new ? "new" : "old");
        old_state += is_old, new_state += is_new;
        if (is_old && budget % 97 == 0) { /* resumes: learning the second experience again gives the new state */
            CHECK(bnn_learner_learn(R, &e2, NULL, &err) == BNN_OK, "relearn: %s", err.message);
            size_t m = blob_of(R, got, slot_bytes);
            CHECK(m == n2 && memcmp(got, blob2, n2) == 0, "cut after %ld bytes: resuming did not end where the "
                                                          "uninterrupted run ends", budget);
        }
    }
    printf("test_learner_store: a cut after each of the %ld + 1 byte counts of a %zu-byte learner state's save: the "
           "old state loaded %ld times, the new one %ld (the whole save)%s\n",
           total, n2, old_state, new_state, failures ? "" : "; passed");
    free(file), free(model), free(probe_arena), free(arena), free(arena2), free(st.slot[0]), free(st.slot[1]);
    free(blob1), free(blob2), free(got), free(saved[0]), free(saved[1]);
    return failures ? 1 : 0;
}
