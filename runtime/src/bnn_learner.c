/*
 * bnn_learner.c -- the on-device learner (bnn_learner.h): CWR* / AR1* on the head, the integer learning step at
 * q_f / q_b, the latent replay memory, the state blob.
 *
 * Every line mirrors the Python device learner (bnncl.device.learner with lr_layer "head"): the experience protocol
 * of bnncl.core.protocol, IntegerHeadStep of bnncl.device.integer_step, CWRStar of bnncl.core.cwr, LatentMemory of
 * bnncl.core.memory. Where they compute in float, this file does the same operations in the same order (the build
 * has -ffp-contract=off: no fused multiply-add), so the two learners' states are bit for bit equal.
 */
#include "bnn_learner.h"
#include "bnn_internal.h"
#include "bnn_kernels.h"
#include "bnn_rng.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define ALIGN 64u
#define STATE_MAGIC "BNNLSTA1"
#define STATE_VERSION 1u
#define STATE_HEADER 192u
#define MAX_BITS 16u

/* bnncl.core.protocol.SEED_OFFSETS */
#define SEED_SHUFFLE 0u
#define SEED_REPLAY 7919u
#define SEED_QUANTIZER 104729u

/* ---- exp and softmax in a fixed order (bnncl.core.functional.exp_fixed, softmax_fixed) ------------------------ */

static const double EXP_TERMS[12] = {
    0x1.0000000000000p+0,  0x1.0000000000000p+0,  0x1.0000000000000p-1,  0x1.5555555555555p-3,
    0x1.5555555555555p-5,  0x1.1111111111111p-7,  0x1.6c16c16c16c17p-10, 0x1.a01a01a01a01ap-13,
    0x1.a01a01a01a01ap-16, 0x1.71de3a556c734p-19, 0x1.27e4fb7789f5cp-22, 0x1.ae64567f544e4p-26,
}; /* 1/k!, k = 0..11 */
static const double LOG2E = 0x1.71547652b82fep+0, LN2_HI = 0x1.62e42fee00000p-1, LN2_LO = 0x1.a39ef35793c76p-33;
static const double EXP_LOWEST = -160.0;

static float exp_fixed(float x)
{
    double v = x < EXP_LOWEST ? EXP_LOWEST : (double)x;
    double k = rint(v * LOG2E);
    double r = (v - k * LN2_HI) - k * LN2_LO;
    double p = EXP_TERMS[11];
    for (int j = 10; j >= 0; j--) {
        p *= r;
        p += EXP_TERMS[j];
    }
    return (float)ldexp(p, (int)k);
}

/* p (n x classes) = softmax of z, row by row: t = z - max, e = exp_fixed(t), the sum from the first class on. */
static void softmax_fixed(const float *z, size_t n, size_t classes, float *p)
{
    for (size_t i = 0; i < n; i++) {
        const float *zi = z + i * classes;
        float *pi = p + i * classes;
        float m = zi[0];
        for (size_t c = 1; c < classes; c++)
            if (zi[c] > m) m = zi[c];
        for (size_t c = 0; c < classes; c++) pi[c] = exp_fixed(zi[c] - m);
        float total = pi[0];
        for (size_t c = 1; c < classes; c++) total += pi[c];
        for (size_t c = 0; c < classes; c++) pi[c] /= total;
    }
}

/* ---- the affine quantizer's integer form (bnncl.core.affine.QParams, bnncl.device.integer_step.IntTensor) ----- */

typedef struct {
    double scale;
    int32_t zero;
    uint32_t qmax;
} qparams;

static qparams qparams_for(double lo, double hi, unsigned bits)
{
    qparams p;
    if (lo > 0.0) lo = 0.0; /* the grid holds 0 exactly */
    if (hi < 0.0) hi = 0.0;
    p.qmax = (1u << bits) - 1u;
    p.scale = hi > lo ? (hi - lo) / (double)p.qmax : 1.0;
    double z = rint(-lo / p.scale);
    p.zero = z < 0.0 ? 0 : z > (double)p.qmax ? (int32_t)p.qmax : (int32_t)z;
    return p;
}

/* The level of x: x / S rounded (to nearest even, or floor(v + u) with u a float64 uniform), + Z, clipped. */
static uint16_t level_of(double x, const qparams *p, bnn_pcg32 *stochastic)
{
    double v = x / p->scale;
    v = stochastic ? floor(v + bnn_pcg32_float64(stochastic)) : rint(v);
    v += (double)p->zero;
    if (v < 0.0) v = 0.0;
    if (v > (double)p->qmax) v = (double)p->qmax;
    return (uint16_t)v;
}

static float value_of(uint16_t q, const qparams *p) { return (float)((double)((int32_t)q - p->zero) * p->scale); }

typedef struct {
    unsigned bits;
    bnn_pcg32 *stochastic; /* NULL: round to nearest */
} quantizer;

/* float32 x[n] onto its own range (clip01: onto [0, 1], values clipped first). 0, or -1 on a NaN or inf. */
/* lo, hi widened to x[0 .. n); -1 on a NaN or inf */
static int widen_range(const float *x, size_t n, float *lo, float *hi)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return -1;
        if (x[i] < *lo) *lo = x[i];
        if (x[i] > *hi) *hi = x[i];
    }
    return 0;
}

static int quantize_f32(const quantizer *qz, const float *x, size_t n, int clip01, uint16_t *q, qparams *p)
{
    float lo = x[0], hi = x[0];
    if (widen_range(x, n, &lo, &hi)) return -1;
    *p = clip01 ? qparams_for(0.0, 1.0, qz->bits) : qparams_for(lo, hi, qz->bits);
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (clip01) v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        q[i] = level_of(v, p, qz->stochastic);
    }
    return 0;
}

/* The float64 values sum[j] * s of n integer sums (int32 or int64: one of the two is NULL) onto their range, each
 * value made where it is read (never stored: a float64 tensor the size of the head). 0, or -1 on a NaN or inf. */
static double sum_value(const int32_t *s32, const int64_t *s64, size_t j, double s)
{
    return (s32 ? (double)s32[j] : (double)s64[j]) * s;
}

static int quantize_sums(const quantizer *qz, const int32_t *s32, const int64_t *s64, size_t n, double s, uint16_t *q,
                         qparams *p)
{
    double lo = sum_value(s32, s64, 0, s), hi = lo;
    for (size_t i = 0; i < n; i++) {
        double v = sum_value(s32, s64, i, s);
        if (!isfinite(v)) return -1;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    *p = qparams_for(lo, hi, qz->bits);
    for (size_t i = 0; i < n; i++) q[i] = level_of(sum_value(s32, s64, i, s), p, qz->stochastic);
    return 0;
}

static void values_of(const uint16_t *q, size_t n, const qparams *p, float *out)
{
    for (size_t i = 0; i < n; i++) out[i] = value_of(q[i], p);
}

/* ---- the learner ------------------------------------------------------------------------------------------- */

struct bnn_learner {
    bnn_learn_options o;
    bnn_model *model;
    const float *file_head; /* the model's head: the rows predicted with before the first experience */
    size_t classes, features, image_bytes, row_bytes, batch;
    int wide_gradient;
    int derived_levels; /* nearest rounding of 1-bit patterns: a replayed row's levels from a table (dims) */
    uint64_t model_size;
    uint32_t model_crc;
    uint32_t experiences;
    bnn_pcg32 shuffle, replay, quant;
    /* CWR* */
    float *cw;
    int32_t *past;
    /* the replay memory */
    uint8_t *mem;
    int16_t *mem_labels;
    /* abs_work, in two phases of an experience: through its steps the decode scale per channel (float32 values, held
     * exactly in doubles); at its end the scale's sums the memory's update accumulates, taken when it ends well */
    double *abs_sum, *abs_work;
    float *offset;
    uint32_t mem_size, mem_updates;
    uint64_t abs_count;
    /* the head step: the trained head's levels, its forward copy, the gradient, the updated values */
    uint16_t *w, *wq, *gq;
    qparams pw;
    float *wv, *wn;
    float *hrow;              /* one replayed pattern, decoded */
    uint16_t *qrow, *qtable;  /* derived levels: one replayed row's, and each channel's two (sign -, sign +) */
    int32_t *gacc32; /* the weight gradient's integer sums: int32 where they provably fit, else int64 (one of them) */
    int64_t *gacc64;
    /* one minibatch: the new rows' features (the replayed ones are read from the memory where they are used), the
     * levels (all rows', or the new rows' only with derived levels), logits and softmax; dv: the logits' bytes */
    float *h, *logits, *p, *dv;
    uint16_t *hq, *pq, *dq;
    uint32_t *y;
    uint8_t *image;
    /* an experience's indices: the shuffle, the draws, the memory update's lists, per-class tables, staging */
    uint32_t *perm32, *pick, *grouped_old, *keep_old, *keep_new, *moved, *table;
    uint16_t *perm16; /* the shuffle in 16 bits when max_patterns <= 65,536 (perm_at), else perm32 */
    uint8_t *staging;
    int16_t *staging_labels;
    unsigned char *save;
    size_t save_bytes;
};

static size_t smul(size_t a, size_t b) { return a && b > SIZE_MAX / a ? SIZE_MAX : a * b; }

/* a + b, or SIZE_MAX when it does not fit: a size that overflows stays SIZE_MAX (then refused: a 32-bit target) */
static size_t sadd(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

static size_t up(size_t n) { return n > SIZE_MAX - ALIGN ? SIZE_MAX : (n + ALIGN - 1) / ALIGN * ALIGN; }

typedef struct {
    size_t classes, features, image_bytes, row_bytes, batch, cap, maxp;
    size_t new_rows;   /* a step's new patterns at most (batch_size) */
    int wide_gradient; /* batch 2^(2 q_f) >= 2^31: the weight gradient's sums need int64 */
    /* 1-bit patterns and nearest rounding: a replayed value is one of two per channel, so are its levels; the step
     * keeps the levels of its new rows only (stochastic rounding draws per value: then every row's are kept) */
    int derived_levels;
} dims;

/* The blob's largest size for these dimensions: header, rows, counts, a full memory, user bytes, CRC. */
static size_t state_bytes(const dims *d, const bnn_learn_options *o)
{
    size_t cf = smul(d->classes, d->features);
    size_t n = sadd(sadd(sadd(STATE_HEADER, smul(4, cf)), sadd(smul(4, d->classes), smul(d->cap, d->row_bytes))),
                    sadd(sadd(smul(2, d->cap), smul(12, d->features)), o->user_bytes));
    return n > SIZE_MAX - 8 ? SIZE_MAX : (n + 3) / 4 * 4 + 4;
}

/* Carve every buffer (m: the arena's learner, or NULL to count); fills mem by buffer. */
static size_t layout(const dims *d, const bnn_learn_options *o, size_t model_bytes, unsigned char *base,
                     struct bnn_learner *m, bnn_learner_memory *mem)
{
    size_t at = 0, mark;
    size_t cf = smul(d->classes, d->features), bc = smul(d->batch, d->classes);
#define CARVE(field, type, n)                                       \
    do {                                                            \
        if (m) m->field = (type *)(void *)(base + at);              \
        at = sadd(at, up(smul((n), sizeof(type))));                 \
    } while (0)
    mark = at;
    at = sadd(at, up(sizeof(struct bnn_learner)));
    CARVE(cw, float, cf);
    CARVE(past, int32_t, d->classes);
    mem->state = at - mark;
    mark = at;
    if (m) m->model = (bnn_model *)(void *)(base + at);
    at = sadd(at, up(model_bytes));
    mem->model = at - mark;
    mark = at;
    CARVE(mem, uint8_t, smul(d->cap, d->row_bytes));
    CARVE(mem_labels, int16_t, d->cap);
    CARVE(abs_sum, double, d->features);
    CARVE(offset, float, d->features);
    CARVE(abs_work, double, d->features);
    mem->replay = at - mark;
    mark = at;
    CARVE(w, uint16_t, cf);
    CARVE(wq, uint16_t, cf);
    CARVE(gq, uint16_t, cf);
    CARVE(wv, float, cf);
    CARVE(wn, float, cf);
    if (d->wide_gradient) /* one of the two: which one the largest minibatch needs */
        CARVE(gacc64, int64_t, cf);
    else
        CARVE(gacc32, int32_t, cf);
    CARVE(hrow, float, d->features);
    CARVE(qrow, uint16_t, d->features);
    CARVE(qtable, uint16_t, smul(2, d->features));
    mem->head_step = at - mark;
    mark = at;
    if (d->maxp <= 65536)
        CARVE(perm16, uint16_t, d->maxp);
    else
        CARVE(perm32, uint32_t, d->maxp);
    CARVE(pick, uint32_t, d->cap); /* a step's draw among the memory's slots; a class's quota in the update */
    CARVE(table, uint32_t, 8 * d->classes);
    CARVE(image, uint8_t, d->image_bytes);
    mem->indices = at - mark;
    /* Three uses of the same bytes, never at once: a step's minibatch; at an experience's end (the steps are done)
     * the memory update's lists and staging; between experiences the serialized state, made and written (save) or
     * read and taken (load). */
    mark = at;
    CARVE(h, float, smul(d->new_rows, d->features));
    CARVE(hq, uint16_t, smul(d->derived_levels ? d->new_rows : d->batch, d->features));
    CARVE(logits, float, bc);
    CARVE(p, float, bc);
    CARVE(pq, uint16_t, bc);
    CARVE(dq, uint16_t, bc);
    CARVE(y, uint32_t, d->batch);
    if (m) m->dv = m->logits; /* the logits are spent once the softmax is made */
    size_t step_end = at;
    at = mark;
    CARVE(grouped_old, uint32_t, d->cap);
    CARVE(keep_old, uint32_t, d->cap);
    CARVE(keep_new, uint32_t, d->cap);
    /* the staging's bytes also hold bnn_pcg32_choice_sparse's pairs: the choices are all made before a row is staged */
    size_t staging = smul(d->cap, d->row_bytes), moved = smul(8, d->cap);
    if (m) m->moved = (uint32_t *)(void *)(base + at);
    CARVE(staging, uint8_t, staging > moved ? staging : moved);
    CARVE(staging_labels, int16_t, d->cap);
    size_t update_end = at;
    at = mark;
    size_t save = state_bytes(d, o);
    if (m) m->save = base + at, m->save_bytes = save;
    at = sadd(at, up(save));
    if (at < step_end) at = step_end;
    if (at < update_end) at = update_end;
    mem->minibatch = at - mark;
#undef CARVE
    mem->total = sadd(at, ALIGN); /* any alignment of the caller's arena */
    return at;
}

void bnn_learn_defaults(bnn_learn_options *o)
{
    memset(o, 0, sizeof *o);
    o->strategy = BNN_STRATEGY_AR1;
    o->epochs = 4;
    o->batch_size = 50;
    o->replay_size = 1500;
    o->replay_storage = BNN_REPLAY_BITS;
    o->replay_update = BNN_UPDATE_BALANCED;
    o->replay_mix = BNN_MIX_FIXED;
    o->replay_batch = 128;
    o->q_f = 8;
    o->q_b = 16;
    o->rounding = BNN_ROUND_NEAREST;
    o->lr = 0.01;
    o->seed = 0;
    o->max_patterns = 12000;
    o->user_bytes = 0;
}

static bnn_status check_options(const bnn_learn_options *o, bnn_error *err)
{
    char what[100];
    if (!o) return bnn_fail(err, BNN_ERR_ARGUMENT, "no options");
    if (o->strategy > BNN_STRATEGY_AR1) return bnn_fail(err, BNN_ERR_ARGUMENT, "strategy: cwr or ar1");
    if (o->epochs < 1 || o->batch_size < 1) return bnn_fail(err, BNN_ERR_ARGUMENT, "epochs and batch_size >= 1");
    if (o->replay_storage > BNN_REPLAY_FLOAT32 || o->replay_update > BNN_UPDATE_AR1 || o->replay_mix > BNN_MIX_PROPORTIONAL
        || o->rounding > BNN_ROUND_STOCHASTIC)
        return bnn_fail(err, BNN_ERR_ARGUMENT, "an unknown replay storage, update, mix or rounding");
    if (o->strategy == BNN_STRATEGY_AR1 && o->replay_size < 1)
        return bnn_fail(err, BNN_ERR_ARGUMENT, "ar1 needs a replay memory: replay_size must be at least 1");
    if (o->q_f < 1 || o->q_b < o->q_f || o->q_b > MAX_BITS) {
        snprintf(what, sizeof what, "q_f %u / q_b %u: the C learner takes 1 <= q_f <= q_b <= %u", (unsigned)o->q_f,
                 (unsigned)o->q_b, MAX_BITS);
        return bnn_fail(err, BNN_ERR_ARGUMENT, what);
    }
    if (!(o->lr > 0.0) || !isfinite(o->lr)) return bnn_fail(err, BNN_ERR_ARGUMENT, "lr must be a positive number");
    if (o->max_patterns < 1) return bnn_fail(err, BNN_ERR_ARGUMENT, "max_patterns must be at least 1");
    if (o->batch_size > UINT32_MAX / 2 || o->replay_batch > UINT32_MAX / 2)
        return bnn_fail(err, BNN_ERR_ARGUMENT, "batch_size or replay_batch too large");
    return BNN_OK;
}

/* The learner's dimensions from the model blob and the options, everything checked. */
static bnn_status learner_dims(const void *blob, size_t blob_size, const bnn_learn_options *o, dims *d,
                               bnn_model_shape_info *shape, bnn_error *err)
{
    bnn_status s = check_options(o, err);
    if (s || (s = bnn_model_shape(blob, blob_size, shape, err))) return s;
    if (!shape->pool_then_head)
        return bnn_fail(err, BNN_ERR_MODEL, "the learner trains the head: the network must end in a global pool and a "
                                            "head");
    if (shape->classes > 32767) return bnn_fail(err, BNN_ERR_MODEL, "more than 32,767 classes (int16 replay labels)");
    d->classes = shape->classes, d->features = shape->features, d->image_bytes = shape->image_bytes;
    d->row_bytes = o->replay_storage == BNN_REPLAY_BITS ? (d->features + 7) / 8 : smul(4, d->features);
    int ar1 = o->strategy == BNN_STRATEGY_AR1;
    d->cap = ar1 ? o->replay_size : 0;
    d->maxp = o->max_patterns;
    d->batch = (size_t)o->batch_size + (ar1 && o->replay_mix == BNN_MIX_FIXED ? o->replay_batch : 0);
    d->new_rows = o->batch_size;
    d->derived_levels = o->replay_storage == BNN_REPLAY_BITS && o->rounding == BNN_ROUND_NEAREST;
    d->wide_gradient = (double)d->batch * ldexp(1.0, 2 * (int)o->q_f) >= ldexp(1.0, 31);
    /* the products' int64 sums stay exact: K 2^(2 q_f) < 2^62, K the features (logits) or the batch (gradient) */
    size_t k = d->features > d->batch ? d->features : d->batch;
    if ((double)k * ldexp(1.0, 2 * (int)o->q_f) >= ldexp(1.0, 62))
        return bnn_fail(err, BNN_ERR_ARGUMENT, "q_f too wide for exact int64 sums over this head or batch");
    return BNN_OK;
}

bnn_status bnn_learner_arena_size(const void *blob, size_t blob_size, const bnn_learn_options *o,
                                  bnn_learner_memory *mem, bnn_error *err)
{
    dims d;
    bnn_model_shape_info shape;
    if (!mem) return bnn_fail(err, BNN_ERR_ARGUMENT, "no memory report to fill");
    bnn_status s = learner_dims(blob, blob_size, o, &d, &shape, err);
    if (s) return s;
    layout(&d, o, shape.arena_bytes, NULL, NULL, mem);
    if (mem->total >= SIZE_MAX / 2) return bnn_fail(err, BNN_ERR_ARGUMENT, "the arena would not fit in memory");
    return bnn_ok(err);
}

static void seed_generators(struct bnn_learner *L)
{
    uint64_t seed = (uint64_t)L->o.seed; /* seed + offset mod 2^64, as Python's int masks it */
    bnn_pcg32_seed(&L->shuffle, seed + SEED_SHUFFLE, SEED_SHUFFLE);
    bnn_pcg32_seed(&L->replay, seed + SEED_REPLAY, SEED_REPLAY);
    bnn_pcg32_seed(&L->quant, seed + SEED_QUANTIZER, SEED_QUANTIZER);
}

bnn_status bnn_learner_init(const void *blob, size_t blob_size, const bnn_learn_options *o, void *arena,
                            size_t arena_bytes, bnn_learner **learner, bnn_error *err)
{
    dims d;
    bnn_model_shape_info shape;
    bnn_learner_memory mem;
    if (!arena || !learner) return bnn_fail(err, BNN_ERR_ARGUMENT, "no arena or no place for the learner");
    bnn_status s = learner_dims(blob, blob_size, o, &d, &shape, err);
    if (s) return s;
    layout(&d, o, shape.arena_bytes, NULL, NULL, &mem);
    if (mem.total >= SIZE_MAX / 2) return bnn_fail(err, BNN_ERR_ARGUMENT, "the arena would not fit in memory");
    if (arena_bytes < mem.total) return bnn_fail(err, BNN_ERR_ARGUMENT, "the arena is smaller than bnn_learner_arena_size()");
    unsigned char *base = (unsigned char *)arena + (ALIGN - (uintptr_t)arena % ALIGN) % ALIGN;
    struct bnn_learner *L = (struct bnn_learner *)(void *)base;
    memset(L, 0, sizeof *L);
    layout(&d, o, shape.arena_bytes, base, L, &mem);
    bnn_model *model;
    if ((s = bnn_init(blob, blob_size, L->model, shape.arena_bytes, &model, err))) return s;
    L->model = model;
    L->o = *o;
    L->classes = d.classes, L->features = d.features, L->image_bytes = d.image_bytes, L->row_bytes = d.row_bytes;
    L->batch = d.batch, L->wide_gradient = d.wide_gradient, L->derived_levels = d.derived_levels;
    L->model_size = blob_size, L->model_crc = shape.payload_crc;
    size_t c_, f_;
    bnn_model_head(model, &c_, &f_, &L->file_head);
    memset(L->cw, 0, smul(d.classes, d.features) * sizeof(float));
    memset(L->past, 0, d.classes * sizeof(int32_t));
    memset(L->abs_sum, 0, d.features * sizeof(double));
    memset(L->offset, 0, d.features * sizeof(float)); /* the head's input has no threshold: sign(x + 0) */
    seed_generators(L);
    *learner = L;
    return bnn_ok(err);
}

uint32_t bnn_learner_experiences(const bnn_learner *L) { return L ? L->experiences : 0; }

int bnn_arrays_read(void *ctx, size_t index, uint8_t *image, uint32_t *label)
{
    const bnn_arrays *a = ctx;
    if (a->labels[index] < 0) return 1;
    *label = (uint32_t)a->labels[index];
    if (image) memcpy(image, a->images + index * a->image_bytes, a->image_bytes);
    return 0;
}

/* An experience's index list (the shuffle, the update's grouping of new images): 16-bit entries where they fit. */
static uint32_t perm_at(const struct bnn_learner *L, size_t i) { return L->perm16 ? L->perm16[i] : L->perm32[i]; }

static void perm_set(struct bnn_learner *L, size_t i, uint32_t v)
{
    if (L->perm16)
        L->perm16[i] = (uint16_t)v;
    else
        L->perm32[i] = v;
}

/* ---- the replay memory (bnncl.core.memory.LatentMemory) -------------------------------------------------------- */

/* The generators and the memory's running sums an experience works on; taken into the learner when it ends well. */
typedef struct {
    bnn_pcg32 shuffle, replay, quant;
} draws;

static void encode(const struct bnn_learner *L, const float *x, uint8_t *row)
{
    if (L->o.replay_storage == BNN_REPLAY_FLOAT32) {
        memcpy(row, x, L->features * sizeof(float));
        return;
    }
    memset(row, 0, L->row_bytes);
    for (size_t c = 0; c < L->features; c++) /* np.packbits: the first value in the high bit; sign(0) = +1 */
        if (x[c] + L->offset[c] >= 0.0f) row[c >> 3] |= (uint8_t)(0x80u >> (c & 7));
}

/* abs_sum[c] += |x[c] + offset[c]| (float32, then float64): one pattern of one pixel */
static void account(const struct bnn_learner *L, const float *x, double *abs_sum)
{
    for (size_t c = 0; c < L->features; c++) abs_sum[c] += (double)fabsf(x[c] + L->offset[c]);
}

static unsigned stored_bit(const uint8_t *row, size_t c) { return (row[c >> 3] >> (7 - (c & 7))) & 1u; }

/* Channel c of a 1-bit pattern whose bit is `bit`: +-scale - offset (float32) */
static float decoded_value(const struct bnn_learner *L, size_t c, unsigned bit)
{
    float sign = bit ? 1.0f : -1.0f;
    return sign * (float)L->abs_work[c] - L->offset[c];
}

static void decode(const struct bnn_learner *L, uint32_t slot, float *out)
{
    const uint8_t *row = L->mem + (size_t)slot * L->row_bytes;
    if (L->o.replay_storage == BNN_REPLAY_FLOAT32) {
        memcpy(out, row, L->features * sizeof(float));
        return;
    }
    for (size_t c = 0; c < L->features; c++) out[c] = decoded_value(L, c, stored_bit(row, c));
}

/* The decode scale per channel (LatentMemory.channel_scale): mean |x + offset| of everything stored so far, 1 before
 * anything was; fixed through an experience's steps (the sums change only when it ends). */
static void set_decode_scale(struct bnn_learner *L)
{
    for (size_t c = 0; c < L->features; c++)
        L->abs_work[c] = L->abs_count ? (float)(L->abs_sum[c] / (double)L->abs_count) : 1.0f;
}

/* ---- one experience ---------------------------------------------------------------------------------------- */

static bnn_status read_image(struct bnn_learner *L, const bnn_experience *e, size_t index, uint32_t *label,
                             bnn_error *err)
{
    char what[100];
    if (e->read(e->ctx, index, L->image, label) != 0) {
        snprintf(what, sizeof what, "the image source failed to read image %zu", index);
        return bnn_fail(err, BNN_ERR_STORAGE, what);
    }
    if (*label >= L->classes) {
        snprintf(what, sizeof what, "image %zu: label %u is not a class of the model (%zu classes)", index,
                 (unsigned)*label, L->classes);
        return bnn_fail(err, BNN_ERR_ARGUMENT, what);
    }
    return BNN_OK;
}

/* The step's input as one tensor onto its range (its quantizer): the n_new rows of L->h, then the k replayed slots
 * L->pick[0 .. k) as decoded (the values the Python step stacks); the levels in that order (so a stochastic
 * rounding draws as there). With derived levels only the new rows' levels are kept, and each channel's two. 0, or
 * -1 on a NaN or inf. */
static int quantize_inputs(struct bnn_learner *L, const quantizer *qz, size_t n_new, size_t k, qparams *p)
{
    const size_t F = L->features;
    float lo = L->h[0], hi = L->h[0];
    if (widen_range(L->h, n_new * F, &lo, &hi)) return -1;
    for (size_t j = 0; j < k; j++) {
        decode(L, L->pick[j], L->hrow);
        if (widen_range(L->hrow, F, &lo, &hi)) return -1;
    }
    *p = qparams_for(lo, hi, qz->bits);
    for (size_t i = 0; i < n_new * F; i++) L->hq[i] = level_of(L->h[i], p, qz->stochastic);
    if (L->derived_levels) {
        for (size_t c = 0; c < F; c++)
            for (unsigned bit = 0; bit < 2; bit++) L->qtable[2 * c + bit] = level_of(decoded_value(L, c, bit), p, NULL);
        return 0;
    }
    for (size_t j = 0; j < k; j++) {
        decode(L, L->pick[j], L->hrow);
        for (size_t c = 0; c < F; c++) L->hq[(n_new + j) * F + c] = level_of(L->hrow[c], p, qz->stochastic);
    }
    return 0;
}

/* The levels of row i of the step (new rows first): kept, or a replayed row's made from its bits. */
static const uint16_t *input_levels(struct bnn_learner *L, size_t n_new, size_t i)
{
    if (i < n_new || !L->derived_levels) return L->hq + i * L->features;
    const uint8_t *row = L->mem + (size_t)L->pick[i - n_new] * L->row_bytes;
    for (size_t c = 0; c < L->features; c++) L->qrow[c] = L->qtable[2 * c + stored_bit(row, c)];
    return L->qrow;
}

/* One SGD step on the n_new rows of L->h and the k replayed slots L->pick[0 .. k), labels L->y
 * (IntegerHeadStep.__call__); *loss: its cross-entropy. */
static bnn_status head_step(struct bnn_learner *L, size_t n_new, size_t k, bnn_pcg32 *quant, double *loss,
                            bnn_error *err)
{
    const size_t C = L->classes, F = L->features, CF = C * F, n = n_new + k;
    quantizer qf = {L->o.q_f, L->o.rounding == BNN_ROUND_STOCHASTIC ? quant : NULL}, qb = {L->o.q_b, qf.stochastic};
    qparams ph, pwq, pp, pd, pg;
    static const char *const where[] = {"head input", "head weights (forward)", "softmax output", "logit gradient",
                                        "head weight gradient", "head weights (stored)"};
    int bad = -1;
    if (quantize_inputs(L, &qf, n_new, k, &ph)) bad = 0;
    if (bad < 0) {
        values_of(L->w, CF, &L->pw, L->wv);
        if (quantize_f32(&qf, L->wv, CF, 0, L->wq, &pwq)) bad = 1;
    }
    if (bad < 0) {
        double s = ph.scale * pwq.scale;
        int fits32 = (double)F * ldexp(1.0, 2 * (int)L->o.q_f) < ldexp(1.0, 31); /* the same exact sums, in int32 */
        for (size_t i = 0; i < n; i++) {
            const uint16_t *a = input_levels(L, n_new, i);
            for (size_t c = 0; c < C; c++) {
                const uint16_t *b = L->wq + c * F;
                int64_t acc = 0;
                if (fits32) {
                    int32_t acc32 = 0;
                    for (size_t k = 0; k < F; k++) acc32 += ((int32_t)a[k] - ph.zero) * ((int32_t)b[k] - pwq.zero);
                    acc = acc32;
                } else {
                    for (size_t k = 0; k < F; k++)
                        acc += (int64_t)((int32_t)a[k] - ph.zero) * ((int32_t)b[k] - pwq.zero);
                }
                L->logits[i * C + c] = (float)((double)acc * s);
            }
        }
        softmax_fixed(L->logits, n, C, L->p);
        if (quantize_f32(&qf, L->p, n * C, 1, L->pq, &pp)) bad = 2;
    }
    if (bad < 0) {
        double total = 0.0;
        for (size_t i = 0; i < n; i++) {
            for (size_t c = 0; c < C; c++) {
                float v = value_of(L->pq[i * C + c], &pp);
                if (c == L->y[i]) {
                    total += -log(v > 1e-30f ? (double)v : 1e-30);
                    v -= 1.0f;
                }
                L->dv[i * C + c] = v / (float)n;
            }
        }
        *loss = total / (double)n;
        if (quantize_f32(&qf, L->dv, n * C, 0, L->dq, &pd)) bad = 3;
    }
    if (bad < 0) {
        /* g = d^T h, row by row of the minibatch (the inner loop over F contiguous values vectorizes); integer sums
         * are exact in any order: int32 where (the largest minibatch) 2^(2 q_f) < 2^31 shows they fit, else int64 */
        double s = pd.scale * ph.scale;
        if (!L->wide_gradient) {
            memset(L->gacc32, 0, CF * sizeof(int32_t));
            for (size_t i = 0; i < n; i++) {
                const uint16_t *h = input_levels(L, n_new, i);
                for (size_t c = 0; c < C; c++) {
                    int32_t d = (int32_t)L->dq[i * C + c] - pd.zero, *row = L->gacc32 + c * F;
                    if (d)
                        for (size_t f = 0; f < F; f++) row[f] += d * ((int32_t)h[f] - ph.zero);
                }
            }
        } else {
            memset(L->gacc64, 0, CF * sizeof(int64_t));
            for (size_t i = 0; i < n; i++) {
                const uint16_t *h = input_levels(L, n_new, i);
                for (size_t c = 0; c < C; c++) {
                    int64_t d = (int64_t)L->dq[i * C + c] - pd.zero, *row = L->gacc64 + c * F;
                    if (d)
                        for (size_t f = 0; f < F; f++) row[f] += d * ((int64_t)h[f] - ph.zero);
                }
            }
        }
        /* the float64 gradient sum * s, value by value where the quantizer reads it */
        if (quantize_sums(&qb, L->wide_gradient ? NULL : L->gacc32, L->wide_gradient ? L->gacc64 : NULL, CF, s, L->gq,
                          &pg))
            bad = 4;
    }
    if (bad < 0) {
        float lr = (float)L->o.lr;
        for (size_t j = 0; j < CF; j++) L->wn[j] = L->wv[j] - lr * value_of(L->gq[j], &pg);
        if (quantize_f32(&qb, L->wn, CF, 0, L->w, &L->pw)) bad = 5;
    }
    if (bad >= 0) {
        char what[80];
        snprintf(what, sizeof what, "at the %s", where[bad]);
        return bnn_fail(err, BNN_ERR_NUMERIC, what);
    }
    return BNN_OK;
}

/* The class-balanced quota (bnncl.core.memory._balanced_quota): counts[c] > 0 for the classes taking part. */
static void balanced_quota(size_t classes, const uint32_t *counts, uint32_t capacity, uint32_t *quota, uint32_t *open)
{
    size_t n_open = 0;
    for (size_t c = 0; c < classes; c++) {
        quota[c] = 0;
        if (counts[c]) open[n_open++] = (uint32_t)c;
    }
    uint32_t left = capacity;
    while (left > 0 && n_open > 0) {
        uint32_t share = left / (uint32_t)n_open;
        if (share < 1) share = 1;
        size_t next = 0;
        for (size_t i = 0; i < n_open; i++) {
            uint32_t c = open[i];
            if (left == 0) break;
            uint32_t give = counts[c] - quota[c];
            if (share < give) give = share;
            if (left < give) give = left;
            quota[c] += give;
            left -= give;
            if (quota[c] < counts[c]) open[next++] = c;
        }
        n_open = next;
    }
}

/* The end of class c's range in a table grouped by class (the counts' prefix sum up to and including c). */
static uint32_t n_sum_end(const uint32_t *counts, uint32_t c, size_t classes)
{
    uint32_t end = 0;
    for (uint32_t k = 0; k <= c && k < classes; k++) end += counts[k];
    return end;
}

/* The memory's update at the end of an experience of n images (LatentMemory.update), staged: nothing of the memory
 * changes until every new pattern is read; then *commit copies the staging in. */
typedef struct {
    uint32_t size;     /* the memory's size after the update */
    uint32_t n_slots;  /* staged rows */
    int compact;       /* balanced: staging holds the whole new memory; ar1: rows for keep_old[j] slots */
} staged;

static bnn_status stage_update(struct bnn_learner *L, const bnn_experience *e, size_t n, bnn_pcg32 *rng,
                               double *abs_sum, uint64_t *abs_count, staged *out, bnn_error *err)
{
    const size_t C = L->classes, F = L->features;
    const uint32_t cap = L->o.replay_size, size = L->mem_size;
    uint32_t label;
    bnn_status s;
    out->size = size, out->n_slots = 0, out->compact = 0;
    if (L->o.replay_update == BNN_UPDATE_AR1) {
        uint32_t h = (uint32_t)(cap / ((uint64_t)L->mem_updates + 1)); /* 64-bit: a saved count of 2^32 - 1 too */
        if (h > n) h = (uint32_t)n;
        if (size < cap) { /* the memory fills first */
            if (h < cap - size) h = cap - size;
            if (h > n) h = (uint32_t)n;
        }
        bnn_pcg32_choice_sparse(rng, (uint32_t)n, h, L->keep_new, L->moved); /* chosen: h <= cap of n images */
        uint32_t free_end = size + h < cap ? size + h : cap, n_free = free_end - size;
        for (uint32_t j = 0; j < n_free; j++) L->keep_old[j] = size + j; /* the slots: free ones, then taken ones */
        if (h > n_free) {
            bnn_pcg32_choice_sparse(rng, size, h - n_free, L->keep_old + n_free, L->moved);
        }
        for (uint32_t j = 0; j < h; j++) {
            if ((s = read_image(L, e, L->keep_new[j], &label, err))) return s;
            const float *x = bnn_model_features(L->model, L->image);
            account(L, x, abs_sum);
            encode(L, x, L->staging + (size_t)j * L->row_bytes);
            L->staging_labels[j] = (int16_t)label;
        }
        *abs_count += h; /* per channel: one pixel per pattern */
        out->size = free_end, out->n_slots = h;
        return BNN_OK;
    }
    /* class-balanced: candidates are the stored patterns and the new ones, class by class */
    uint32_t *old_count = L->table, *new_count = L->table + C, *counts = L->table + 2 * C, *quota = L->table + 3 * C,
             *open = L->table + 4 * C, *old_at = L->table + 5 * C, *new_at = L->table + 6 * C;
    /* new_count: the experience's first pass over its labels (bnn_learner_learn); the tables after it start at 0 */
    memset(old_count, 0, C * sizeof(uint32_t));
    memset(counts, 0, 5 * C * sizeof(uint32_t));
    for (uint32_t i = 0; i < size; i++) old_count[L->mem_labels[i]]++;
    uint32_t o_sum = 0, n_sum = 0;
    for (size_t c = 0; c < C; c++) {
        counts[c] = old_count[c] + new_count[c];
        old_at[c] = o_sum, new_at[c] = n_sum;
        o_sum += old_count[c], n_sum += new_count[c];
    }
    /* the stored slots and the new indices grouped by class, ascending within each (np.flatnonzero) */
    for (uint32_t i = 0; i < size; i++) L->grouped_old[old_at[L->mem_labels[i]]++] = i;
    for (size_t i = 0; i < n; i++) { /* a source whose labels change between readings is refused, never trusted */
        if (e->read(e->ctx, i, NULL, &label) != 0 || label >= C || new_at[label] >= n_sum_end(new_count, label, C))
            return bnn_fail(err, BNN_ERR_STORAGE, "the image source gave another label on a second reading");
        perm_set(L, new_at[label]++, (uint32_t)i);
    }
    for (size_t c = 0; c < C; c++) old_at[c] -= old_count[c], new_at[c] -= new_count[c];
    balanced_quota(C, counts, cap, quota, open);
    uint32_t n_old = 0, n_new = 0;
    for (size_t c = 0; c < C; c++) {
        if (!counts[c]) continue;
        uint32_t m = counts[c];
        bnn_pcg32_choice_sparse(rng, m, quota[c], L->pick, L->moved); /* quota[c] <= cap of m <= cap + n */
        for (uint32_t j = 0; j < quota[c]; j++) {
            uint32_t p = L->pick[j];
            if (p < old_count[c]) L->keep_old[n_old++] = L->grouped_old[old_at[c] + p];
        }
        for (uint32_t j = 0; j < quota[c]; j++) {
            uint32_t p = L->pick[j];
            if (p >= old_count[c]) L->keep_new[n_new++] = perm_at(L, new_at[c] + p - old_count[c]);
        }
    }
    /* the new memory, built in the staging: the kept stored rows, then the new patterns */
    for (uint32_t j = 0; j < n_old; j++) {
        memcpy(L->staging + (size_t)j * L->row_bytes, L->mem + (size_t)L->keep_old[j] * L->row_bytes, L->row_bytes);
        L->staging_labels[j] = L->mem_labels[L->keep_old[j]];
    }
    for (uint32_t j = 0; j < n_new; j++) {
        if ((s = read_image(L, e, L->keep_new[j], &label, err))) return s;
        const float *x = bnn_model_features(L->model, L->image);
        account(L, x, abs_sum);
        encode(L, x, L->staging + (size_t)(n_old + j) * L->row_bytes);
        L->staging_labels[n_old + j] = (int16_t)label;
    }
    *abs_count += n_new;
    (void)F;
    out->size = n_old + n_new, out->n_slots = n_old + n_new, out->compact = 1;
    return BNN_OK;
}

static void commit_update(struct bnn_learner *L, const staged *st)
{
    if (st->compact) {
        memcpy(L->mem, L->staging, (size_t)st->n_slots * L->row_bytes);
        memcpy(L->mem_labels, L->staging_labels, st->n_slots * sizeof(int16_t));
    } else {
        for (uint32_t j = 0; j < st->n_slots; j++) {
            memcpy(L->mem + (size_t)L->keep_old[j] * L->row_bytes, L->staging + (size_t)j * L->row_bytes, L->row_bytes);
            L->mem_labels[L->keep_old[j]] = L->staging_labels[j];
        }
    }
    L->mem_size = st->size;
}

bnn_status bnn_learner_learn(bnn_learner *L, const bnn_experience *e, bnn_learn_report *report, bnn_error *err)
{
    char what[100];
    if (!L || !e || !e->read) return bnn_fail(err, BNN_ERR_ARGUMENT, "no learner or no experience");
    const size_t n = e->count, C = L->classes, F = L->features, CF = C * F;
    if (n == 0) return bnn_fail(err, BNN_ERR_ARGUMENT, "an empty experience (0 images): nothing to learn");
    if (n > L->o.max_patterns) {
        snprintf(what, sizeof what, "an experience of %zu images; the learner was set up for at most %u (max_patterns)",
                 n, (unsigned)L->o.max_patterns);
        return bnn_fail(err, BNN_ERR_ARGUMENT, what);
    }
    /* cur: patterns per class, the replayed ones included; every label checked before anything changes */
    /* new_count: the class counts the memory's update groups the new patterns by; cur beside the update's tables */
    uint32_t *new_count = L->table + C, *cur = L->table + 7 * C;
    memset(new_count, 0, C * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        uint32_t label;
        if (e->read(e->ctx, i, NULL, &label) != 0) {
            snprintf(what, sizeof what, "the image source failed to read the label of image %zu", i);
            return bnn_fail(err, BNN_ERR_STORAGE, what);
        }
        if (label >= C) {
            snprintf(what, sizeof what, "image %zu: label %u is not a class of the model (%zu classes)", i,
                     (unsigned)label, C);
            return bnn_fail(err, BNN_ERR_ARGUMENT, what);
        }
        new_count[label]++;
    }
    memcpy(cur, new_count, C * sizeof(uint32_t));
    uint32_t m = L->mem_size, b = L->o.batch_size, n_replay = 0, per_step = b;
    if (L->o.strategy == BNN_STRATEGY_AR1 && m) { /* bnncl.core.protocol.plan_experience */
        for (uint32_t i = 0; i < m; i++) cur[L->mem_labels[i]]++;
        if (L->o.replay_mix == BNN_MIX_PROPORTIONAL) {
            double r = rint((double)b * (double)m / ((double)n + (double)m));
            n_replay = r < (double)(b - 1) ? (uint32_t)r : b - 1;
            per_step = b - n_replay;
        } else {
            n_replay = L->o.replay_batch;
        }
    }
    size_t steps = (n + per_step - 1) / per_step;
    draws d = {L->shuffle, L->replay, L->quant};
    bnn_pcg32 *quant = L->o.rounding == BNN_ROUND_STOCHASTIC ? &d.quant : NULL;
    /* begin: the consolidated rows of the present classes seen before, the rest zero; stored at q_b */
    for (size_t c = 0; c < C; c++) {
        int keep = cur[c] > 0 && L->past[c] > 0;
        for (size_t k = 0; k < F; k++) L->wn[c * F + k] = keep ? L->cw[c * F + k] : 0.0f;
    }
    quantizer qb = {L->o.q_b, quant};
    if (quantize_f32(&qb, L->wn, CF, 0, L->w, &L->pw))
        return bnn_fail(err, BNN_ERR_NUMERIC, "at the head weights (stored)");
    double loss_sum = 0.0;
    bnn_status s;
    set_decode_scale(L);
    for (uint32_t epoch = 0; epoch < L->o.epochs; epoch++) {
        if (L->perm16)
            bnn_pcg32_permutation16(&d.shuffle, L->perm16, (uint32_t)n);
        else
            bnn_pcg32_permutation(&d.shuffle, L->perm32, (uint32_t)n);
        for (size_t step = 0; step < steps; step++) {
            size_t first = step * per_step, count = n - first < per_step ? n - first : per_step;
            for (size_t j = 0; j < count; j++) {
                if ((s = read_image(L, e, perm_at(L, first + j), &L->y[j], err))) return s;
                memcpy(L->h + j * F, bnn_model_features(L->model, L->image), F * sizeof(float));
            }
            uint32_t k = 0;
            if (n_replay) { /* LatentMemory.sample: min(n_replay, size) distinct slots, read where they are */
                k = n_replay < m ? n_replay : m;
                for (uint32_t i = 0; i < m; i++) L->pick[i] = i;
                bnn_pcg32_choice(&d.replay, L->pick, m, k);
                for (uint32_t j = 0; j < k; j++) L->y[count + j] = (uint32_t)L->mem_labels[L->pick[j]];
            }
            double loss = 0.0;
            if ((s = head_step(L, count, k, quant, &loss, err))) return s;
            loss_sum += loss;
        }
    }
    /* end: the memory's update staged first (it reads images, which can fail), then everything taken at once */
    double *abs_sum = L->abs_work;
    memcpy(abs_sum, L->abs_sum, F * sizeof(double));
    uint64_t abs_count = L->abs_count;
    staged st = {m, 0, 0};
    values_of(L->w, CF, &L->pw, L->wv); /* the trained rows (their float values) */
    /* CWR*'s consolidation (CWRStar.consolidate) into wn, so that it too is taken only at the commit */
    size_t present = 0;
    double total = 0.0;
    for (size_t c = 0; c < C; c++)
        if (cur[c])
            for (size_t k = 0; k < F; k++) total += (double)L->wv[c * F + k];
    for (size_t c = 0; c < C; c++) present += cur[c] > 0;
    float a = (float)(total / (double)(present * F));
    for (size_t c = 0; c < C; c++) {
        for (size_t k = 0; k < F; k++) {
            size_t j = c * F + k;
            if (!cur[c]) {
                L->wn[j] = L->cw[j];
                continue;
            }
            float w = L->wv[j] - a;
            if (L->past[c] > 0) {
                double wpast = sqrt((double)L->past[c] / (double)cur[c]);
                L->wn[j] = (float)(((double)L->cw[j] * wpast + (double)w) / (wpast + 1.0));
            } else {
                L->wn[j] = w;
            }
        }
    }
    if (L->o.strategy == BNN_STRATEGY_AR1 && (s = stage_update(L, e, n, &d.replay, abs_sum, &abs_count, &st, err)))
        return s;
    /* commit */
    memcpy(L->cw, L->wn, CF * sizeof(float));
    for (size_t c = 0; c < C; c++) L->past[c] = (int32_t)((uint32_t)L->past[c] + cur[c]); /* int32, as CWRStar's */
    if (L->o.strategy == BNN_STRATEGY_AR1) {
        commit_update(L, &st);
        memcpy(L->abs_sum, abs_sum, F * sizeof(double));
        L->abs_count = abs_count;
        L->mem_updates++;
    }
    L->shuffle = d.shuffle, L->replay = d.replay, L->quant = d.quant;
    if (report) {
        report->experience = L->experiences;
        report->patterns = (uint32_t)n;
        report->replayed_per_step = n_replay;
        report->steps = (uint32_t)(steps * L->o.epochs);
        report->mean_loss = loss_sum / (double)(steps * L->o.epochs);
    }
    L->experiences++;
    return bnn_ok(err);
}

/* ---- prediction ---------------------------------------------------------------------------------------------- */

bnn_status bnn_learner_logits(bnn_learner *L, const uint8_t *images, size_t n, float *logits, bnn_error *err)
{
    if (!L || !images || !logits || n == 0) return bnn_fail(err, BNN_ERR_ARGUMENT, "a NULL pointer or no images");
    const float *rows = L->experiences ? L->cw : L->file_head;
    for (size_t i = 0; i < n; i++)
        bnn_head_f32(bnn_model_features(L->model, images + i * L->image_bytes), 1, L->features, rows, L->classes,
                     logits + i * L->classes);
    return bnn_ok(err);
}

bnn_status bnn_learner_predict(bnn_learner *L, const uint8_t *images, size_t n, int32_t *labels, bnn_error *err)
{
    if (!L || !images || !labels || n == 0) return bnn_fail(err, BNN_ERR_ARGUMENT, "a NULL pointer or no images");
    for (size_t i = 0; i < n; i++) {
        float *z = L->logits; /* one row of the step's logits buffer */
        bnn_learner_logits(L, images + i * L->image_bytes, 1, z, NULL);
        uint32_t best = 0;
        for (uint32_t c = 1; c < L->classes; c++)
            if (z[c] > z[best]) best = c;
        labels[i] = (int32_t)best;
    }
    return bnn_ok(err);
}

/* ---- the state blob ------------------------------------------------------------------------------------------ */

static uint32_t f32_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

static uint64_t f64_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    return u;
}

static float bits_f32(uint32_t u)
{
    float v;
    memcpy(&v, &u, 4);
    return v;
}

static double bits_f64(uint64_t u)
{
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* The options' learning fields in the header, in this order (bytes 48..111). */
#define OPTION_FIELDS 11
static const char *const OPTION_NAMES[OPTION_FIELDS] = {"strategy", "epochs", "batch_size", "replay_size",
                                                         "replay_storage", "replay_update", "replay_mix",
                                                         "replay_batch", "q_f", "q_b", "q_rounding"};

static void option_values(const bnn_learn_options *o, uint32_t *v)
{
    uint32_t a[OPTION_FIELDS] = {o->strategy,      o->epochs,     o->batch_size,   o->replay_size,
                                 o->replay_storage, o->replay_update, o->replay_mix, o->replay_batch,
                                 o->q_f,           o->q_b,        o->rounding};
    memcpy(v, a, sizeof a);
}

size_t bnn_learner_state_bytes(const bnn_learner *L) { return L ? L->save_bytes : 0; }

/* The blob's bytes before its padding and CRC. */
static size_t data_bytes(const struct bnn_learner *L, uint32_t mem_size, size_t user_len)
{
    return sadd(STATE_HEADER + 4 * L->classes * L->features + 4 * L->classes + (size_t)mem_size * L->row_bytes
                    + 2 * (size_t)mem_size + 12 * L->features,
                user_len);
}

static size_t blob_size_for(const struct bnn_learner *L, uint32_t mem_size, size_t user_len)
{
    size_t n = data_bytes(L, mem_size, user_len);
    return n > SIZE_MAX - 8 ? SIZE_MAX : (n + 3) / 4 * 4 + 4;
}

bnn_status bnn_learner_serialize(bnn_learner *L, const void *user, size_t user_len, void *out, size_t capacity,
                                 size_t *size, bnn_error *err)
{
    if (!L || !out || (user_len && !user)) return bnn_fail(err, BNN_ERR_ARGUMENT, "a NULL pointer");
    if (user_len > L->o.user_bytes)
        return bnn_fail(err, BNN_ERR_ARGUMENT, "more user bytes than the options' user_bytes make room for");
    size_t total = blob_size_for(L, L->mem_size, user_len);
    if (capacity < total) return bnn_fail(err, BNN_ERR_ARGUMENT, "the output buffer is smaller than the state");
    unsigned char *b = out, *p;
    memset(b, 0, total);
    memcpy(b, STATE_MAGIC, 8);
    bnn_wr32(b + 8, STATE_VERSION);
    bnn_wr32(b + 12, STATE_HEADER);
    bnn_wr64(b + 16, total);
    bnn_wr64(b + 24, L->model_size);
    bnn_wr32(b + 32, L->model_crc);
    bnn_wr32(b + 36, (uint32_t)L->classes);
    bnn_wr32(b + 40, (uint32_t)L->features);
    bnn_wr32(b + 44, L->experiences);
    uint32_t v[OPTION_FIELDS];
    option_values(&L->o, v);
    for (int i = 0; i < OPTION_FIELDS; i++) bnn_wr32(b + 48 + 4 * i, v[i]);
    bnn_wr64(b + 96, f64_bits(L->o.lr));
    bnn_wr64(b + 104, (uint64_t)L->o.seed);
    bnn_wr32(b + 112, L->mem_size);
    bnn_wr32(b + 116, L->mem_updates);
    bnn_wr64(b + 120, L->abs_count);
    const bnn_pcg32 *g[3] = {&L->shuffle, &L->replay, &L->quant};
    for (int i = 0; i < 3; i++) {
        bnn_wr64(b + 128 + 16 * i, g[i]->state);
        bnn_wr64(b + 136 + 16 * i, g[i]->inc);
    }
    bnn_wr32(b + 176, (uint32_t)user_len);
    bnn_wr32(b + 180, (uint32_t)L->row_bytes);
    p = b + STATE_HEADER;
    for (size_t j = 0; j < L->classes * L->features; j++, p += 4) bnn_wr32(p, f32_bits(L->cw[j]));
    for (size_t c = 0; c < L->classes; c++, p += 4) bnn_wr32(p, (uint32_t)L->past[c]);
    memcpy(p, L->mem, (size_t)L->mem_size * L->row_bytes); /* bytes as stored (float32 storage: this CPU's order) */
    if (L->o.replay_storage == BNN_REPLAY_FLOAT32) /* ... made little-endian */
        for (size_t j = 0; j < (size_t)L->mem_size * L->features; j++) {
            float f;
            memcpy(&f, L->mem + 4 * j, 4);
            bnn_wr32(p + 4 * j, f32_bits(f));
        }
    p += (size_t)L->mem_size * L->row_bytes;
    for (uint32_t i = 0; i < L->mem_size; i++, p += 2) {
        uint16_t u = (uint16_t)L->mem_labels[i];
        p[0] = (unsigned char)u, p[1] = (unsigned char)(u >> 8);
    }
    for (size_t c = 0; c < L->features; c++, p += 8) bnn_wr64(p, f64_bits(L->abs_sum[c]));
    for (size_t c = 0; c < L->features; c++, p += 4) bnn_wr32(p, f32_bits(L->offset[c]));
    if (user_len) memcpy(p, user, user_len);
    bnn_wr32(b + total - 4, bnn_crc32(0, b, total - 4));
    if (size) *size = total;
    return bnn_ok(err);
}

/* The header's fixed part checked: magic, version, size, CRC. */
static bnn_status check_blob(const unsigned char *b, size_t size, bnn_error *err)
{
    if (!b || size < STATE_HEADER + 4 || memcmp(b, STATE_MAGIC, 8) != 0)
        return bnn_fail(err, BNN_ERR_STATE, "not a bnncl learner state (no header, or truncated)");
    if (bnn_rd32(b + 8) > STATE_VERSION) return bnn_fail(err, BNN_ERR_STATE, "written by a newer bnncl: upgrade");
    if (bnn_rd32(b + 8) < 1 || bnn_rd32(b + 92) != 0 || bnn_rd64(b + 184) != 0)
        return bnn_fail(err, BNN_ERR_STATE, "damaged: its version or reserved fields are not valid");
    if (bnn_rd32(b + 12) != STATE_HEADER || bnn_rd64(b + 16) != size)
        return bnn_fail(err, BNN_ERR_STATE, "truncated, or its size is not its header's");
    if (bnn_crc32(0, b, size - 4) != bnn_rd32(b + size - 4))
        return bnn_fail(err, BNN_ERR_STATE, "damaged: its CRC-32 does not match");
    return BNN_OK;
}

bnn_status bnn_learner_state_options(const void *blob, size_t size, bnn_learn_options *o, bnn_error *err)
{
    const unsigned char *b = blob;
    bnn_status s = check_blob(b, size, err);
    if (s) return s;
    if (!o) return bnn_fail(err, BNN_ERR_ARGUMENT, "no options to fill");
    bnn_learn_defaults(o);
    uint32_t v[OPTION_FIELDS];
    for (int i = 0; i < OPTION_FIELDS; i++) v[i] = bnn_rd32(b + 48 + 4 * i);
    o->strategy = v[0], o->epochs = v[1], o->batch_size = v[2], o->replay_size = v[3], o->replay_storage = v[4];
    o->replay_update = v[5], o->replay_mix = v[6], o->replay_batch = v[7], o->q_f = v[8], o->q_b = v[9];
    o->rounding = v[10];
    o->lr = bits_f64(bnn_rd64(b + 96));
    o->seed = (int64_t)bnn_rd64(b + 104);
    o->user_bytes = bnn_rd32(b + 176);
    return check_options(o, err) ? bnn_fail(err, BNN_ERR_STATE, "its options are out of range") : bnn_ok(err);
}

bnn_status bnn_learner_deserialize(bnn_learner *L, const void *blob, size_t size, void *user, size_t user_capacity,
                                   size_t *user_len, bnn_error *err)
{
    char what[110];
    const unsigned char *b = blob, *p;
    if (!L) return bnn_fail(err, BNN_ERR_ARGUMENT, "no learner");
    bnn_status s = check_blob(b, size, err);
    if (s) return s;
    if (bnn_rd64(b + 24) != L->model_size || bnn_rd32(b + 32) != L->model_crc)
        return bnn_fail(err, BNN_ERR_STATE, "it belongs to another model");
    if (bnn_rd32(b + 36) != L->classes || bnn_rd32(b + 40) != L->features || bnn_rd32(b + 180) != L->row_bytes)
        return bnn_fail(err, BNN_ERR_STATE, "its head or its replay rows are not this learner's");
    uint32_t v[OPTION_FIELDS];
    option_values(&L->o, v);
    for (int i = 0; i < OPTION_FIELDS; i++)
        if (bnn_rd32(b + 48 + 4 * i) != v[i]) {
            snprintf(what, sizeof what, "the saved learner has other settings: %s %u (state) vs %u", OPTION_NAMES[i],
                     (unsigned)bnn_rd32(b + 48 + 4 * i), (unsigned)v[i]);
            return bnn_fail(err, BNN_ERR_STATE, what);
        }
    if (bits_f64(bnn_rd64(b + 96)) != L->o.lr || (int64_t)bnn_rd64(b + 104) != L->o.seed)
        return bnn_fail(err, BNN_ERR_STATE, "the saved learner has other settings: lr or seed");
    uint32_t mem_size = bnn_rd32(b + 112), ulen = bnn_rd32(b + 176);
    if (mem_size > (L->o.strategy == BNN_STRATEGY_AR1 ? L->o.replay_size : 0))
        return bnn_fail(err, BNN_ERR_STATE, "more stored patterns than the memory has slots");
    if (blob_size_for(L, mem_size, ulen) != size) return bnn_fail(err, BNN_ERR_STATE, "its sections do not add up");
    if (ulen > user_capacity || (ulen && !user))
        return bnn_fail(err, BNN_ERR_ARGUMENT, "the state's user bytes do not fit the buffer given");
    for (int i = 0; i < 3; i++)
        if ((bnn_rd64(b + 136 + 16 * i) & 1u) == 0) return bnn_fail(err, BNN_ERR_STATE, "a generator's increment is even");
    const size_t CF = L->classes * L->features;
    p = b + STATE_HEADER + 4 * CF;
    for (size_t c = 0; c < L->classes; c++)
        if ((int32_t)bnn_rd32(p + 4 * c) < 0) return bnn_fail(err, BNN_ERR_STATE, "a negative pattern count");
    const unsigned char *labels = p + 4 * L->classes + (size_t)mem_size * L->row_bytes;
    for (uint32_t i = 0; i < mem_size; i++) {
        uint16_t u = (uint16_t)(labels[2 * i] | labels[2 * i + 1] << 8);
        if ((int16_t)u < 0 || (size_t)(int16_t)u >= L->classes)
            return bnn_fail(err, BNN_ERR_STATE, "a stored pattern's label is not a class of the model");
    }
    for (const unsigned char *pad = b + data_bytes(L, mem_size, ulen); pad < b + size - 4; pad++)
        if (*pad) return bnn_fail(err, BNN_ERR_STATE, "damaged: its padding is not zero");
    /* every check passed: take it */
    L->experiences = bnn_rd32(b + 44);
    L->mem_size = mem_size, L->mem_updates = bnn_rd32(b + 116), L->abs_count = bnn_rd64(b + 120);
    bnn_pcg32 *g[3] = {&L->shuffle, &L->replay, &L->quant};
    for (int i = 0; i < 3; i++) g[i]->state = bnn_rd64(b + 128 + 16 * i), g[i]->inc = bnn_rd64(b + 136 + 16 * i);
    p = b + STATE_HEADER;
    for (size_t j = 0; j < CF; j++, p += 4) L->cw[j] = bits_f32(bnn_rd32(p));
    for (size_t c = 0; c < L->classes; c++, p += 4) L->past[c] = (int32_t)bnn_rd32(p);
    if (L->o.replay_storage == BNN_REPLAY_FLOAT32)
        for (size_t j = 0; j < (size_t)mem_size * L->features; j++) {
            float f = bits_f32(bnn_rd32(p + 4 * j));
            memcpy(L->mem + 4 * j, &f, 4);
        }
    else
        memcpy(L->mem, p, (size_t)mem_size * L->row_bytes);
    p += (size_t)mem_size * L->row_bytes;
    for (uint32_t i = 0; i < mem_size; i++, p += 2) L->mem_labels[i] = (int16_t)(uint16_t)(p[0] | p[1] << 8);
    for (size_t c = 0; c < L->features; c++, p += 8) L->abs_sum[c] = bits_f64(bnn_rd64(p));
    for (size_t c = 0; c < L->features; c++, p += 4) L->offset[c] = bits_f32(bnn_rd32(p));
    if (ulen) memcpy(user, p, ulen);
    if (user_len) *user_len = ulen;
    return bnn_ok(err);
}

bnn_status bnn_learner_save(bnn_learner *L, const bnn_storage *storage, const void *user, size_t user_len,
                            bnn_error *err)
{
    size_t size;
    if (!L) return bnn_fail(err, BNN_ERR_ARGUMENT, "no learner");
    bnn_status s = bnn_learner_serialize(L, user, user_len, L->save, L->save_bytes, &size, err);
    return s ? s : bnn_state_save(storage, L->save, size, NULL, err);
}

bnn_status bnn_learner_load(bnn_learner *L, const bnn_storage *storage, void *user, size_t user_capacity,
                            size_t *user_len, bnn_error *err)
{
    size_t size;
    if (!L) return bnn_fail(err, BNN_ERR_ARGUMENT, "no learner");
    bnn_status s = bnn_state_load(storage, L->save, L->save_bytes, &size, NULL, err);
    if (s == BNN_ERR_ARGUMENT) return bnn_fail(err, BNN_ERR_STATE, "the saved state is larger than this learner's");
    return s ? s : bnn_learner_deserialize(L, L->save, size, user, user_capacity, user_len, err);
}
