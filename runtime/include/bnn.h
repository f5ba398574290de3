/*
 * bnn.h -- the bnncl C runtime: run an exported binary network on a device. C11 and the C standard library only.
 *
 * The model is the file `bnncl export` writes (docs/model-format.md), read in place: keep the bytes where they are
 * (flash, a mapped file, a static array) for as long as the model is used. Nothing is allocated: the caller gives
 * one memory arena, whose size bnn_arena_size() computes from the model before anything runs.
 *
 *     size_t need;
 *     bnn_error err;
 *     if (bnn_arena_size(blob, blob_size, &need, &err) != BNN_OK) { puts(err.message); return; }
 *     void *arena = my_static_buffer;                       // at least `need` bytes, any alignment
 *     bnn_model *m;
 *     if (bnn_init(blob, blob_size, arena, need, &m, &err) != BNN_OK) { puts(err.message); return; }
 *     int32_t label;
 *     bnn_predict(m, image, 1, &label, &err);               // image: uint8 H x W x C, as the model's input says
 *
 * A model blob that is truncated, damaged (CRC-32 of its header and of its payload) or inconsistent (a tensor
 * outside the file, a shape that does not fit the layer, a layer that does not follow from the previous one) is
 * refused by bnn_arena_size and bnn_init with an error code and a one-line message; nothing reads outside the blob.
 * One model is used by one thread at a time (its activations live in the arena).
 */
#ifndef BNN_H
#define BNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BNN_OK = 0,
    BNN_ERR_ARGUMENT,   /* a NULL pointer, a zero count, an arena too small */
    BNN_ERR_FORMAT,     /* not a bnncl model file, or truncated */
    BNN_ERR_VERSION,    /* written by a newer bnncl */
    BNN_ERR_CHECKSUM,   /* damaged or altered after it was written */
    BNN_ERR_MODEL,      /* readable, but not a network this runtime can run (inconsistent or unknown layers) */
    BNN_ERR_STORAGE,    /* the caller's storage failed to read or write (bnn_store.h) */
    BNN_ERR_NO_STATE,   /* no complete saved state in the storage (bnn_store.h): start afresh */
    BNN_ERR_STATE,      /* a saved learner state that is damaged, or another model's or other settings' (bnn_learner.h) */
    BNN_ERR_NUMERIC,    /* NaN or inf reached a quantizer of the learning step: the learning diverged (bnn_learner.h) */
} bnn_status;

typedef struct {
    bnn_status code;
    char message[120]; /* one line, NUL-terminated */
} bnn_error;

typedef struct bnn_model bnn_model; /* lives in the arena */

typedef struct {
    uint32_t height, width, channels; /* the input image, uint8 H x W x C */
    uint32_t classes;
    uint32_t layers;
    uint32_t lr_layer;       /* index of the first trainable layer (the latent-replay layer) */
    uint32_t latent_channels, latent_height, latent_width; /* the activation at the LR layer */
    uint32_t latent_binary;  /* 1: the latent is bits packed along channels (uint64 words), 0: float32 */
    size_t arena_bytes;      /* what bnn_arena_size() returned */
} bnn_info;

/* The arena bytes a model needs (for any number of images: they run one at a time). */
bnn_status bnn_arena_size(const void *blob, size_t blob_size, size_t *arena_bytes, bnn_error *err);

/* Check the model and set it up in `arena` (`arena_bytes` at least bnn_arena_size()'s). *model points into it. */
bnn_status bnn_init(const void *blob, size_t blob_size, void *arena, size_t arena_bytes, bnn_model **model,
                    bnn_error *err);

bnn_status bnn_get_info(const bnn_model *model, bnn_info *info);

/* Logits (n x classes float32) of n images (n x H x W x C uint8, contiguous). */
bnn_status bnn_logits(bnn_model *model, const uint8_t *images, size_t n, float *logits, bnn_error *err);

/* The most likely class of each of n images (ties: the lowest index, as NumPy's argmax). */
bnn_status bnn_predict(bnn_model *model, const uint8_t *images, size_t n, int32_t *labels, bnn_error *err);

/*
 * The activation at the LR layer of n images: with info.latent_binary, `bits` gets n x H x W x words uint64
 * (words = ceil(C / 64); bit j of word t is channel 64 t + j, 1 for a negative sign) and `real` may be NULL;
 * otherwise `real` gets n x H x W x C float32 and `bits` may be NULL.
 */
bnn_status bnn_latent(bnn_model *model, const uint8_t *images, size_t n, float *real, uint64_t *bits, bnn_error *err);

/* A one-line description of a status code. */
const char *bnn_status_message(bnn_status code);

/* The kernel path this library was built with: "portable", "avx2", "avx512" or "neon". */
const char *bnn_build_path(void);

#ifdef __cplusplus
}
#endif

#endif /* BNN_H */
