/*
 * bnn_learner.h -- the on-device learner: an exported model whose head keeps learning new classes and new instances
 * (CWR* on the head, work A; AR1* with a latent replay memory of the pooled features stored at 1 bit), its learning
 * step in integer arithmetic at q_f / q_b bits. C11 and the C standard library only; nothing is allocated: the
 * caller gives one arena (bnn_learner_arena_size), the model's bytes stay where they are (as for bnn.h).
 *
 * The same learner as the Python device learner (bnncl.device.Learner with lr_layer "head"), bit for bit: the same
 * random generator (bnn_rng.h) draws the same minibatches, replayed patterns and memory updates; every product is
 * on integers; the few float steps (the softmax, the rescalings, CWR*'s consolidation) are the same operations in
 * the same order (docs/method.md §5-§6). tests/device/test_clearner.py holds the two equal over a stream.
 *
 *     bnn_learn_options o;
 *     bnn_learn_defaults(&o);                                  // AR1*, 8/16 bits, 1,500 1-bit replay slots
 *     bnn_learner_memory mem;
 *     bnn_learner_arena_size(blob, blob_size, &o, &mem, &err); // mem.total bytes, and what they are for
 *     bnn_learner *L;
 *     bnn_learner_init(blob, blob_size, &o, arena, mem.total, &L, &err);
 *     bnn_learner_load(L, &storage, NULL, 0, NULL, &err);      // resume; BNN_ERR_NO_STATE: start afresh
 *     bnn_learner_learn(L, &experience, &report, &err);        // one experience (images read through a callback)
 *     bnn_learner_save(L, &storage, NULL, 0, &err);            // two slots, power-cut safe (bnn_store.h)
 *     bnn_learner_predict(L, images, n, labels, &err);
 *
 * Errors: bad input (a label outside the model's classes, too many images, a state of another model or other
 * settings) is refused with a code and a one-line message before anything changes. A learning that diverges
 * (BNN_ERR_NUMERIC) or an image source that fails leaves the learner as it was before the experience.
 */
#ifndef BNN_LEARNER_H
#define BNN_LEARNER_H

#include <stddef.h>
#include <stdint.h>

#include "bnn.h"
#include "bnn_store.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { BNN_STRATEGY_CWR = 0, BNN_STRATEGY_AR1 = 1 };           /* CWR* alone; AR1* (CWR* + latent replay) */
enum { BNN_REPLAY_BITS = 0, BNN_REPLAY_FLOAT32 = 1 };          /* a stored pattern: its signs, or float32 */
enum { BNN_UPDATE_BALANCED = 0, BNN_UPDATE_AR1 = 1 };          /* the memory's update rule (docs/method.md §4) */
enum { BNN_MIX_FIXED = 0, BNN_MIX_PROPORTIONAL = 1 };          /* replayed patterns per step */
enum { BNN_ROUND_NEAREST = 0, BNN_ROUND_STOCHASTIC = 1 };      /* the quantizers' rounding */

/* The learning options: bnncl's LearnOptions (docs/method.md), the head as the trainable part. */
typedef struct {
    uint32_t strategy;       /* BNN_STRATEGY_* */
    uint32_t epochs;         /* passes over each experience */
    uint32_t batch_size;     /* new patterns per step (mix fixed), all patterns per step (mix proportional) */
    uint32_t replay_size;    /* replay memory slots (AR1*) */
    uint32_t replay_storage; /* BNN_REPLAY_* */
    uint32_t replay_update;  /* BNN_UPDATE_* */
    uint32_t replay_mix;     /* BNN_MIX_* */
    uint32_t replay_batch;   /* replayed patterns per step with mix fixed */
    uint32_t q_f, q_b;       /* forward and backward bits, 1 <= q_f <= q_b <= 16 */
    uint32_t rounding;       /* BNN_ROUND_* */
    double lr;               /* SGD learning rate */
    int64_t seed;            /* the learner's generators are PCG32 seeded (seed + offset, offset) */
    uint32_t max_patterns;   /* the most images one experience may have: sizes the arena's index buffers */
    uint32_t user_bytes;     /* room for the caller's own bytes in a saved state (0: none) */
} bnn_learn_options;

/* LearnOptions' defaults for a device (strategy ar1, 4 epochs, lr 0.01, 50 new + 128 replayed per step, 1,500 1-bit
 * slots with the class-balanced update, q_f 8, q_b 16, nearest rounding, seed 0), max_patterns 12,000, no user bytes. */
void bnn_learn_defaults(bnn_learn_options *options);

/* The arena by buffer (bytes, each rounded up to 64). */
typedef struct {
    size_t model;      /* the frozen part's inference: bnn_arena_size() */
    size_t minibatch;  /* bytes of three uses never at once, the largest of them: a step's minibatch (the new rows'
                        * features, the levels, logits and softmax); at an experience's end the memory update's lists
                        * and staging; in a save or load the serialized state (bnn_learner_state_bytes) */
    size_t head_step;  /* the trainable head's levels and the step's other tensors */
    size_t replay;     /* the replay memory: patterns, labels, the decode scale's sums */
    size_t state;      /* the consolidated rows and counts, the learner itself */
    size_t indices;    /* the experience's shuffle, the draws, per-class tables, one image */
    size_t total;      /* all of the above: the arena to give bnn_learner_init */
} bnn_learner_memory;

typedef struct bnn_learner bnn_learner; /* lives in the arena */

/* One experience: `count` images read through `read` (return 0 on success): image index -> the H x W x C uint8
 * image into `image` (NULL: only the label is wanted) and its class into *label. */
typedef struct {
    void *ctx;
    size_t count;
    int (*read)(void *ctx, size_t index, uint8_t *image, uint32_t *label);
} bnn_experience;

/* An experience of images and labels in memory (images n x H x W x C contiguous, labels n int32). */
typedef struct {
    const uint8_t *images;
    const int32_t *labels;
    size_t image_bytes;
} bnn_arrays;
int bnn_arrays_read(void *ctx, size_t index, uint8_t *image, uint32_t *label);
#define BNN_EXPERIENCE_OF_ARRAYS(arrays_ptr, n) ((bnn_experience){(arrays_ptr), (n), bnn_arrays_read})

typedef struct {
    uint32_t experience;        /* its index (experiences consumed before it) */
    uint32_t patterns;          /* new images */
    uint32_t replayed_per_step; /* replayed patterns per step */
    uint32_t steps;             /* SGD steps (all epochs) */
    double mean_loss;           /* mean cross-entropy of the steps (in double: not part of the bit-equal state) */
} bnn_learn_report;

bnn_status bnn_learner_arena_size(const void *blob, size_t blob_size, const bnn_learn_options *options,
                                  bnn_learner_memory *memory, bnn_error *err);

bnn_status bnn_learner_init(const void *blob, size_t blob_size, const bnn_learn_options *options, void *arena,
                            size_t arena_bytes, bnn_learner **learner, bnn_error *err);

/* Learn one experience; *report (may be NULL) says what it did. */
bnn_status bnn_learner_learn(bnn_learner *learner, const bnn_experience *experience, bnn_learn_report *report,
                             bnn_error *err);

/* Predict with the consolidated head (the model's own head before the first experience); ties: the lowest class. */
bnn_status bnn_learner_predict(bnn_learner *learner, const uint8_t *images, size_t n, int32_t *labels, bnn_error *err);
bnn_status bnn_learner_logits(bnn_learner *learner, const uint8_t *images, size_t n, float *logits, bnn_error *err);

/* Experiences consumed. */
uint32_t bnn_learner_experiences(const bnn_learner *learner);

/* ---- state ------------------------------------------------------------------------------------------------- */
/*
 * The state is one flat little-endian blob (docs/learner-state.md): a header (magic "BNNLSTA1", version, the model's
 * size and payload CRC-32, the options, counters, the three generators), then the consolidated rows (float32),
 * their counts (int32), the replay memory (its stored patterns and int16 labels, the decode scale's float64 sums,
 * the float32 offsets), the caller's bytes, and a CRC-32 of everything before it.
 */

/* The largest blob this learner writes (user bytes included): the storage's slot must hold it plus its header. */
size_t bnn_learner_state_bytes(const bnn_learner *learner);

bnn_status bnn_learner_serialize(bnn_learner *learner, const void *user, size_t user_len, void *out, size_t capacity,
                                 size_t *size, bnn_error *err);

/* Check the whole blob (CRC, version, the model, the options, every count and label) before anything changes, then
 * take it; the caller's bytes into user (user_capacity; *user_len may be NULL). */
bnn_status bnn_learner_deserialize(bnn_learner *learner, const void *blob, size_t size, void *user,
                                   size_t user_capacity, size_t *user_len, bnn_error *err);

/* The options a blob was saved with (its header checked), without a learner: to open one with them. */
bnn_status bnn_learner_state_options(const void *blob, size_t size, bnn_learn_options *options, bnn_error *err);

/* Serialize into the arena's buffer and bnn_state_save it (the slot not holding the newest state). */
bnn_status bnn_learner_save(bnn_learner *learner, const bnn_storage *storage, const void *user, size_t user_len,
                            bnn_error *err);

/* bnn_state_load the newest complete state into the arena's buffer and deserialize it; BNN_ERR_NO_STATE: none. */
bnn_status bnn_learner_load(bnn_learner *learner, const bnn_storage *storage, void *user, size_t user_capacity,
                            size_t *user_len, bnn_error *err);

#ifdef __cplusplus
}
#endif

#endif /* BNN_LEARNER_H */
