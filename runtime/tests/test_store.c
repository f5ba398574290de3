/*
 * test_store.c -- bnn_store.h against a power cut at every byte of a save, damaged slots, failing storage and bad
 * arguments. The storage is two memory slots whose writes stop after a budget of bytes (a power cut: the rest of
 * the save is lost, what was written stays), then the "device reboots" and loads.
 */
#include "bnn_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOT 4096

typedef struct {
    unsigned char slot[2][SLOT];
    long budget;      /* bytes the storage still takes before the cut; < 0: no cut */
    int fail_reads;   /* read() fails from now on */
    long written;     /* bytes written in all */
} stub;

static int stub_read(void *ctx, unsigned slot, size_t offset, void *dst, size_t len)
{
    stub *s = ctx;
    if (s->fail_reads || slot > 1 || offset + len > SLOT) return -1;
    memcpy(dst, s->slot[slot] + offset, len);
    return 0;
}

static int stub_write(void *ctx, unsigned slot, size_t offset, const void *src, size_t len)
{
    stub *s = ctx;
    if (slot > 1 || offset + len > SLOT) return -1;
    size_t n = s->budget < 0 || (size_t)s->budget >= len ? len : (size_t)s->budget;
    memcpy(s->slot[slot] + offset, src, n);
    if (s->budget >= 0) s->budget -= (long)n;
    s->written += (long)n;
    return 0; /* after the cut the writes vanish: the device is already off */
}

static int stub_flush(void *ctx, unsigned slot)
{
    (void)ctx, (void)slot;
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

/* A payload that says which state it is: byte i of state k. */
static void fill(unsigned char *p, size_t n, unsigned k)
{
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(k * 131u + i * 7u + (i >> 8));
}

static bnn_storage storage_of(stub *s)
{
    bnn_storage st = {s, SLOT, stub_read, stub_write, stub_flush};
    return st;
}

/* The newest state loads as (size, k, sequence). */
static void expect_state(stub *s, size_t size, unsigned k, uint64_t sequence, const char *when)
{
    bnn_storage st = storage_of(s);
    unsigned char got[SLOT], want[SLOT];
    size_t n = 0;
    uint64_t seq = 0;
    bnn_error err;
    bnn_status status = bnn_state_load(&st, got, sizeof got, &n, &seq, &err);
    fill(want, size, k);
    CHECK(status == BNN_OK, "%s: load failed: %s", when, err.message);
    CHECK(status != BNN_OK || (n == size && seq == sequence && memcmp(got, want, size) == 0),
          "%s: loaded %zu bytes, sequence %llu; wanted state %u, %zu bytes, sequence %llu", when, n,
          (unsigned long long)seq, k, size, (unsigned long long)sequence);
}

static void save(stub *s, size_t size, unsigned k)
{
    bnn_storage st = storage_of(s);
    unsigned char p[SLOT];
    bnn_error err;
    fill(p, size, k);
    bnn_status status = bnn_state_save(&st, p, size, NULL, &err);
    CHECK(status == BNN_OK, "save of state %u failed: %s", k, err.message);
}

/* A cut after every possible number of bytes of one save: the previous state, or the new one once all of it is
 * written; never anything else, never an error. */
static void test_cut_at_every_byte(size_t a, size_t b, size_t c)
{
    long total = -1;
    for (long n = 0;; n++) {
        stub *s = malloc(sizeof *s);
        memset(s->slot, 0xff, sizeof s->slot); /* erased flash */
        s->budget = -1, s->fail_reads = 0, s->written = 0;
        save(s, a, 1);
        save(s, b, 2);
        long before = s->written;
        s->budget = n;
        save(s, c, 3);
        if (total < 0) total = (long)c + BNN_SLOT_HEADER_BYTES; /* what one save writes */
        CHECK(s->written - before == (n < total ? n : total), "a save of %zu bytes wrote %ld", c, s->written - before);
        s->budget = -1;
        char when[80];
        snprintf(when, sizeof when, "cut after %ld of %ld bytes", n, total);
        if (n < total)
            expect_state(s, b, 2, 2, when);
        else
            expect_state(s, c, 3, 3, when);
        /* and the next save after the reboot goes on from what loaded */
        save(s, 10, 4);
        expect_state(s, 10, 4, n < total ? 3 : 4, "the save after the reboot");
        free(s);
        if (n >= total) break;
    }
}

/* A cut during the very first save: nothing to load until it is complete. */
static void test_cut_in_the_first_save(void)
{
    for (long n = 0; n <= 100 + BNN_SLOT_HEADER_BYTES; n++) {
        stub s;
        memset(s.slot, 0xff, sizeof s.slot);
        s.budget = n, s.fail_reads = 0, s.written = 0;
        save(&s, 100, 1);
        s.budget = -1;
        bnn_storage st = storage_of(&s);
        unsigned char buf[SLOT];
        bnn_error err;
        bnn_status status = bnn_state_load(&st, buf, sizeof buf, NULL, NULL, &err);
        if (n < 100 + BNN_SLOT_HEADER_BYTES)
            CHECK(status == BNN_ERR_NO_STATE, "cut after %ld bytes of the first save: status %d", n, status);
        else
            expect_state(&s, 100, 1, 1, "the first save complete");
    }
}

static void test_damage_and_refusals(void)
{
    stub s;
    memset(s.slot, 0, sizeof s.slot);
    s.budget = -1, s.fail_reads = 0, s.written = 0;
    bnn_storage st = storage_of(&s);
    unsigned char buf[SLOT];
    bnn_error err;
    CHECK(bnn_state_load(&st, buf, sizeof buf, NULL, NULL, &err) == BNN_ERR_NO_STATE, "an empty storage loads");
    CHECK(err.code == BNN_ERR_NO_STATE && strstr(err.message, "no complete saved state"), "message: %s", err.message);
    for (unsigned k = 1; k <= 9; k++) save(&s, 50 * k, k); /* alternating: slot 0 holds 9, slot 1 holds 8 */
    expect_state(&s, 450, 9, 9, "nine saves");
    s.slot[0][BNN_SLOT_HEADER_BYTES + 17] ^= 4; /* the newest payload damaged: the one before it */
    expect_state(&s, 400, 8, 8, "the newest payload damaged");
    s.slot[1][9] ^= 1; /* and the other's header too: nothing */
    CHECK(bnn_state_load(&st, buf, sizeof buf, NULL, NULL, &err) == BNN_ERR_NO_STATE, "two damaged slots load");
    save(&s, 30, 10); /* a save still works, as the first */
    expect_state(&s, 30, 10, 1, "a save over two damaged slots");
    unsigned char big[SLOT] = {0};
    unsigned char copy[2][SLOT];
    memcpy(copy, s.slot, sizeof copy);
    CHECK(bnn_state_save(&st, big, SLOT - BNN_SLOT_HEADER_BYTES + 1, NULL, &err) == BNN_ERR_ARGUMENT,
          "a state larger than a slot is saved");
    CHECK(memcmp(copy, s.slot, sizeof copy) == 0, "a refused save changed the storage");
    CHECK(bnn_state_save(&st, big, SLOT - BNN_SLOT_HEADER_BYTES, NULL, &err) == BNN_OK, "a full slot: %s",
          err.message);
    CHECK(bnn_state_load(&st, buf, 100, NULL, NULL, &err) == BNN_ERR_ARGUMENT, "a buffer too small loads");
    s.fail_reads = 1;
    CHECK(bnn_state_load(&st, buf, sizeof buf, NULL, NULL, &err) == BNN_ERR_STORAGE, "a failing read loads");
    CHECK(bnn_state_save(&st, big, 10, NULL, &err) == BNN_ERR_STORAGE, "a save over a failing read");
    s.fail_reads = 0;
    CHECK(bnn_state_load(&st, buf, sizeof buf, NULL, NULL, &err) == BNN_OK, "the state is still there: %s",
          err.message);
    bnn_storage none = {&s, BNN_SLOT_HEADER_BYTES, stub_read, stub_write, NULL};
    CHECK(bnn_state_save(&none, big, 0, NULL, &err) == BNN_ERR_ARGUMENT, "a slot without room for a payload");
    CHECK(bnn_state_save(NULL, big, 1, NULL, &err) == BNN_ERR_ARGUMENT, "no storage");
}

int main(void)
{
    test_cut_at_every_byte(700, 1200, 900);
    test_cut_at_every_byte(1, 3000, 0);
    test_cut_at_every_byte(2000, 10, SLOT - BNN_SLOT_HEADER_BYTES);
    test_cut_in_the_first_save();
    test_damage_and_refusals();
    if (failures) {
        printf("test_store: %d failures\n", failures);
        return 1;
    }
    printf("test_store: passed (a power cut after every byte of saves of 900, 0 and %d bytes; damaged slots; "
           "failing storage; refusals)\n", SLOT - BNN_SLOT_HEADER_BYTES);
    return 0;
}
