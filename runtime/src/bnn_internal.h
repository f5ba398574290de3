/* bnn_internal.h -- what the runtime's files share and its API does not show. */
#ifndef BNN_INTERNAL_H
#define BNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bnn.h"

/* err = code with "<the code's message>: what" (err may be NULL); returns code. */
bnn_status bnn_fail(bnn_error *err, bnn_status code, const char *what);

/* err = BNN_OK with an empty message; returns BNN_OK. */
bnn_status bnn_ok(bnn_error *err);

/* CRC-32 (zlib's, PNG's: reflected, polynomial 0xEDB88320) of n bytes, continuing from crc (0 to start):
 * bnn_crc32(bnn_crc32(0, a, n), b, m) is the CRC of a then b, as zlib.crc32 chains. */
uint32_t bnn_crc32(uint32_t crc, const void *p, size_t n);

/* Little-endian loads and stores, whatever the host's byte order. */
static inline uint32_t bnn_rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t bnn_rd64(const unsigned char *p) { return (uint64_t)bnn_rd32(p) | (uint64_t)bnn_rd32(p + 4) << 32; }

static inline void bnn_wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8), p[2] = (unsigned char)(v >> 16), p[3] = (unsigned char)(v >> 24);
}

static inline void bnn_wr64(unsigned char *p, uint64_t v)
{
    bnn_wr32(p, (uint32_t)v);
    bnn_wr32(p + 4, (uint32_t)(v >> 32));
}

/* A model blob's shape, checked as bnn_arena_size checks it, without an arena. */
typedef struct {
    size_t arena_bytes, classes, features, image_bytes;
    int pool_then_head; /* the network ends in a global pool and a head */
    uint32_t payload_crc;  /* the container's payload CRC-32: the model's identity in a learner state */
} bnn_model_shape_info;
bnn_status bnn_model_shape(const void *blob, size_t blob_size, bnn_model_shape_info *shape, bnn_error *err);

/* The learner's view of a model (bnn_model.c): 1 and the head's shape and float32 weights (classes x features) when
 * the network ends in a global pool and a head, else 0. */
int bnn_model_head(const bnn_model *model, size_t *classes, size_t *features, const float **weight);

/* The head's input (the global pool's output, `features` float32) for one image; valid until the model runs again. */
const float *bnn_model_features(bnn_model *model, const uint8_t *image);

#endif /* BNN_INTERNAL_H */
