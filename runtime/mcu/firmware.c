/*
 * firmware.c -- bnncl on a Cortex-M: the model file linked in flash (model_blob.S), one static arena in SRAM, the
 * learner's state in a reserved flash region of two slots (bnn_store.h), images streamed in from the host through
 * semihosting (newlib's rdimon: stdio on the host's files). It runs a job the host wrote (JOB_FILE, whitespace-separated
 * commands):
 *
 *   options STRATEGY EPOCHS BATCH REPLAY_SIZE STORAGE UPDATE MIX REPLAY_BATCH Q_F Q_B ROUNDING LR_BITS SEED MAX_PATTERNS
 *                                  bnn_learn_options' fields (LR_BITS: the double's 64 bits in hex); first
 *   predict IMAGES.idx OUT         the class of every image (bnn_learner_predict), int32 little-endian into OUT
 *   learn IMAGES.idx LABELS.idx    one experience, each image read from the host when the learner asks for it
 *   save / load                    the state into / from the flash slots (load: none yet is not an error; it says
 *                                  so, and the learner goes on as it is: from the model file, before any learning)
 *   dump OUT                       the state's flash region (its two slots) into the host file OUT
 *
 * and prints what it used: the arena by buffer, the state's bytes, the heap's and the stack's peaks (startup.c: the
 * break's highest, the painted stack's deepest word). Exit status 0 when every command succeeded; otherwise one line
 * naming the command and the error (after a line saying so where the heap ran out), and status 1; status 1 too
 * where the stack used its whole reserve.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn_learner.h"
#include "mcu.h"

#ifndef ARENA_BYTES
#error "ARENA_BYTES: the arena, bnn_learner_arena_size() for the model and options the firmware is built for"
#endif
#ifndef STATE_FLASH_BYTES
#define STATE_FLASH_BYTES (64u * 1024u)
#endif
#ifndef JOB_FILE
#define JOB_FILE "job.txt"
#endif

extern const uint8_t bnn_model_blob[];
extern const uint32_t bnn_model_blob_size;

static uint8_t arena[ARENA_BYTES] __attribute__((aligned(64)));
/* the learner's state: two slots in flash (QEMU's code memory is writable: the writes stand for programming it) */
static uint8_t state_flash[STATE_FLASH_BYTES] __attribute__((section(".state_flash"), aligned(8)));

static int flash_read(void *ctx, unsigned slot, size_t offset, void *dst, size_t len)
{
    size_t slot_bytes = *(const size_t *)ctx;
    if (slot > 1 || offset + len > slot_bytes) return 1;
    memcpy(dst, state_flash + slot * slot_bytes + offset, len);
    return 0;
}

static int flash_write(void *ctx, unsigned slot, size_t offset, const void *src, size_t len)
{
    size_t slot_bytes = *(const size_t *)ctx;
    if (slot > 1 || offset + len > slot_bytes) return 1;
    memcpy(state_flash + slot * slot_bytes + offset, src, len);
    return 0;
}

/* ---- files on the host ------------------------------------------------------------------------------------ */

/* A host file, unbuffered: every read or write goes to the host as it is (one semihosting call), and the heap holds
 * no stdio buffer for it (the firmware reads whole images and labels at given offsets, and writes whole records). */
static FILE *host_open(const char *path, const char *mode)
{
    errno = 0;
    FILE *f = fopen(path, mode);
    if (f) setvbuf(f, NULL, _IONBF, 0);
    else if (errno == ENOMEM)
        printf("error: the heap is used up (HEAP_SIZE %lu B): %s\n", (unsigned long)mcu_heap_size(), path);
    return f;
}

/* ---- IDX files on the host ------------------------------------------------------------------------------- */

typedef struct {
    FILE *f;
    uint32_t count, item_bytes, header;
} idx_file;

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* dims: 1 for labels (magic 0x801), 3 or 4 for images (0x803, 0x804) */
static int idx_open(idx_file *x, const char *path, int labels)
{
    uint8_t h[20];
    x->f = host_open(path, "rb");
    if (!x->f || fread(h, 1, 8, x->f) != 8) return printf("error: %s: cannot read its header\n", path), 1;
    uint32_t magic = be32(h), dims = magic & 0xFF;
    if ((magic >> 8) != 0x08 || (labels ? dims != 1 : dims < 3 || dims > 4))
        return printf("error: %s: not an IDX file of %s\n", path, labels ? "labels" : "images"), 1;
    x->count = be32(h + 4);
    x->item_bytes = 1;
    if (!labels) {
        if (fread(h + 8, 1, 4 * (dims - 1), x->f) != 4 * (dims - 1)) return printf("error: %s: truncated\n", path), 1;
        for (uint32_t d = 1; d < dims; d++) x->item_bytes *= be32(h + 4 + 4 * d);
    }
    x->header = 4 + 4 * dims;
    return 0;
}

static int idx_read(idx_file *x, size_t index, void *out)
{
    if (index >= x->count || fseek(x->f, (long)(x->header + index * x->item_bytes), SEEK_SET) != 0) return 1;
    return fread(out, 1, x->item_bytes, x->f) != x->item_bytes;
}

typedef struct {
    idx_file images, labels;
} host_experience;

static int read_from_host(void *ctx, size_t index, uint8_t *image, uint32_t *label)
{
    host_experience *e = ctx;
    uint8_t y;
    if (idx_read(&e->labels, index, &y)) return 1;
    *label = y;
    return image ? idx_read(&e->images, index, image) : 0;
}

/* ---- the job ------------------------------------------------------------------------------------------- */

#ifndef JOB_BYTES
#define JOB_BYTES 2048
#endif
static char job[JOB_BYTES]; /* the job's text, tokenized in place (a longer job is refused, never cut) */
static char *cursor;

static const char *token(void)
{
    while (*cursor == ' ' || *cursor == '\n' || *cursor == '\t' || *cursor == '\r') cursor++;
    if (!*cursor) return NULL;
    char *start = cursor;
    while (*cursor && *cursor != ' ' && *cursor != '\n' && *cursor != '\t' && *cursor != '\r') cursor++;
    if (*cursor) *cursor++ = '\0';
    return start;
}

static uint64_t number(int base)
{
    const char *t = token();
    return t ? strtoull(t, NULL, base) : 0;
}

static int fail(const char *what, const bnn_error *err)
{
    printf("error: %s: %s\n", what, err->message);
    return 1;
}

static void print_memory(const bnn_learner_memory *m)
{
    printf("arena %lu B: model %lu, minibatch %lu, head_step %lu, replay %lu, state %lu, indices %lu (static %lu)\n",
           (unsigned long)m->total, (unsigned long)m->model, (unsigned long)m->minibatch, (unsigned long)m->head_step,
           (unsigned long)m->replay, (unsigned long)m->state, (unsigned long)m->indices, (unsigned long)ARENA_BYTES);
}

int main(void)
{
    FILE *f = host_open(JOB_FILE, "rb");
    size_t n = f ? fread(job, 1, sizeof job - 1, f) : 0;
    if (!f || n == 0) return printf("error: %s: cannot read the job\n", JOB_FILE), 1;
    if (n == sizeof job - 1 && fgetc(f) != EOF)
        return printf("error: %s: longer than the job buffer (JOB_BYTES %u)\n", JOB_FILE, (unsigned)sizeof job), 1;
    fclose(f);
    job[n] = '\0';
    cursor = job;
    bnn_error err;
    bnn_learner *L = NULL;
    static size_t slot_bytes;
    bnn_storage storage = {&slot_bytes, 0, flash_read, flash_write, NULL};
    for (const char *cmd; (cmd = token()) != NULL;) {
        if (!strcmp(cmd, "options")) {
            bnn_learn_options o;
            bnn_learn_defaults(&o);
            o.strategy = (uint32_t)number(10), o.epochs = (uint32_t)number(10), o.batch_size = (uint32_t)number(10);
            o.replay_size = (uint32_t)number(10), o.replay_storage = (uint32_t)number(10);
            o.replay_update = (uint32_t)number(10), o.replay_mix = (uint32_t)number(10);
            o.replay_batch = (uint32_t)number(10), o.q_f = (uint32_t)number(10), o.q_b = (uint32_t)number(10);
            o.rounding = (uint32_t)number(10);
            uint64_t lr_bits = number(16);
            memcpy(&o.lr, &lr_bits, sizeof o.lr);
            const char *seed = token();
            o.seed = seed ? strtoll(seed, NULL, 10) : 0;
            o.max_patterns = (uint32_t)number(10);
            bnn_learner_memory m;
            if (bnn_learner_arena_size(bnn_model_blob, bnn_model_blob_size, &o, &m, &err)) return fail(cmd, &err);
            print_memory(&m);
            if (bnn_learner_init(bnn_model_blob, bnn_model_blob_size, &o, arena, sizeof arena, &L, &err))
                return fail(cmd, &err);
            slot_bytes = BNN_SLOT_HEADER_BYTES + bnn_learner_state_bytes(L);
            storage.slot_bytes = slot_bytes;
            if (2 * slot_bytes > sizeof state_flash) {
                printf("error: the state's two slots need %lu B of flash, STATE_FLASH_BYTES is %lu\n",
                       (unsigned long)(2 * slot_bytes), (unsigned long)sizeof state_flash);
                return 1;
            }
            continue;
        }
        if (!L) return printf("error: %s before options\n", cmd), 1;
        if (!strcmp(cmd, "predict")) {
            const char *in = token(), *out = token();
            idx_file x;
            if (!in || !out || idx_open(&x, in, 0)) return printf("error: predict IMAGES OUT\n"), 1;
            FILE *o = host_open(out, "wb");
            if (!o) return printf("error: %s: cannot write\n", out), 1;
            uint8_t *image = malloc(x.item_bytes);
            if (!image)
                return printf("error: the heap is used up (HEAP_SIZE %lu B): no room for an image of %lu B\n",
                              (unsigned long)mcu_heap_size(), (unsigned long)x.item_bytes), 1;
            for (size_t i = 0; i < x.count; i++) {
                int32_t label;
                if (idx_read(&x, i, image)) return printf("error: %s: image %lu\n", in, (unsigned long)i), 1;
                if (bnn_learner_predict(L, image, 1, &label, &err)) return fail(cmd, &err);
                uint8_t le[4] = {(uint8_t)label, (uint8_t)(label >> 8), (uint8_t)(label >> 16), (uint8_t)(label >> 24)};
                fwrite(le, 1, 4, o);
            }
            free(image);
            fclose(o);
            fclose(x.f);
            printf("predicted %lu images\n", (unsigned long)x.count);
        } else if (!strcmp(cmd, "learn")) {
            const char *images = token(), *labels = token();
            host_experience e;
            if (!images || !labels || idx_open(&e.images, images, 0) || idx_open(&e.labels, labels, 1))
                return printf("error: learn IMAGES LABELS\n"), 1;
            if (e.images.count != e.labels.count) return printf("error: %s: not one label per image\n", labels), 1;
            bnn_experience exp = {&e, e.images.count, read_from_host};
            bnn_learn_report r;
            if (bnn_learner_learn(L, &exp, &r, &err)) return fail(cmd, &err);
            fclose(e.images.f);
            fclose(e.labels.f);
            printf("learned experience %lu: %lu patterns, %lu steps, %lu replayed per step\n",
                   (unsigned long)r.experience, (unsigned long)r.patterns, (unsigned long)r.steps,
                   (unsigned long)r.replayed_per_step);
        } else if (!strcmp(cmd, "save")) {
            if (bnn_learner_save(L, &storage, NULL, 0, &err)) return fail(cmd, &err);
            printf("saved the state to flash (slots of %lu B)\n", (unsigned long)slot_bytes);
        } else if (!strcmp(cmd, "load")) {
            bnn_status s = bnn_learner_load(L, &storage, NULL, 0, NULL, &err);
            unsigned long k = (unsigned long)bnn_learner_experiences(L);
            if (s == BNN_ERR_NO_STATE && k == 0)
                printf("load: no saved state in flash, starting from the model file\n");
            else if (s == BNN_ERR_NO_STATE)
                printf("load: no saved state in flash, the learner keeps its state (%lu experiences)\n", k);
            else if (s)
                return fail(cmd, &err);
            else
                printf("loaded the state from flash: %lu experiences\n", k);
        } else if (!strcmp(cmd, "dump")) { /* the flash region's two slots, as they are, into a host file */
            const char *out = token();
            FILE *o = out ? host_open(out, "wb") : NULL;
            if (!o || fwrite(state_flash, 1, 2 * slot_bytes, o) != 2 * slot_bytes || fclose(o))
                return printf("error: dump OUT: cannot write %s\n", out ? out : "(nothing)"), 1;
            printf("dumped the state's flash: 2 slots of %lu B\n", (unsigned long)slot_bytes);
        } else {
            return printf("error: unknown command %s\n", cmd), 1;
        }
    }
    printf("heap %lu of %lu B\n", (unsigned long)mcu_heap_peak(), (unsigned long)mcu_heap_size());
    size_t stack = mcu_stack_peak();
    printf("stack peak %lu of %lu B\n", (unsigned long)stack, (unsigned long)mcu_stack_size());
    if (stack >= mcu_stack_size())
        return printf("error: the stack used its whole reserve (STACK_SIZE): it may have overflowed\n"), 1;
    return 0;
}
