/*
 * bnn_model.c -- the model-level runtime (bnn.h): read the flat container in place (docs/model-format.md), check
 * every field before it is used, plan one arena, and run the network image by image on the kernels (bnn_kernels.h).
 *
 * The order of operations is the Python runtime's (bnncl.device.ops, the packed backend): the stem's output is
 * thresholded for the next binary op in the same pass, a block's real output is kept only when the next layer reads
 * it, and so on. So the latents are bit for bit the Python runtime's; only the head's sum order differs (BLAS).
 */
#include "bnn.h"
#include "bnn_internal.h"

#include <stdio.h>
#include <string.h>

#include "bnn_kernels.h"

enum { KIND_STEM = 1, KIND_BLOCK = 2, KIND_BINARIZE = 3, KIND_POOL = 4, KIND_HEAD = 5 };
enum { SC_IDENTITY = 0, SC_DUPLICATE = 1, SC_BINARY = 2 };
enum { DT_F32 = 1, DT_I32 = 8, DT_U64 = 9 };
/* What a layer keeps of its real output, by what the next layer reads (out_mode_of): the whole map; only its s x s
 * average pool (the next block's shortcut pools it first, and nothing else reads it); nothing (the next layer reads
 * the bits only). A layer runs by bands of output rows (`band`: the pool's s rows, else one), so that its int32
 * products, its shortcut and a map it pools are never whole: the largest maps of a backbone (the stem's) are then
 * never held in float32. */
enum { OUT_FULL = 0, OUT_POOLED = 1, OUT_NONE = 2 };
enum { COL_KIND, COL_CIN, COL_COUT, COL_STRIDE, COL_BINARY_INPUT, COL_SHORTCUT, COL_REPEAT, COL_LR,
       COL_WEIGHT, COL_MULT, COL_BIAS, COL_THRESHOLD, COL_INPUT_SCALE, COL_SHIFT_IN, COL_SLOPE, COL_SHIFT_OUT,
       COL_SC_WEIGHT, COL_SC_MULT, COL_SC_BIAS, COL_SC_THRESHOLD, GRAPH_COLUMNS };
enum { COL_STEM_BIAS = COL_MULT }; /* the stem's bias sits in column 9 (docs/model-format.md) */

#define HEADER_SIZE 64u
#define ENTRY_SIZE 64u
#define MAX_DIMS 6u
#define MAX_LAYERS 64u
#define ALIGN 64u
#define CONTAINER_VERSION 1u
#define KIND_MODEL_FILE 1u

static const unsigned char MAGIC[8] = {0x89, 'B', 'N', 'N', 'C', 'L', '\r', '\n'};

/* One tensor of the container, as the table describes it (the data points into the blob). */
typedef struct {
    const void *data;
    uint32_t dtype, ndim;
    uint32_t dims[MAX_DIMS];
    size_t count; /* elements */
} tensor;

/* One layer, checked, with its shapes and the buffers it reads from the blob. */
typedef struct {
    int kind, shortcut, binary_input, keep_real, out_mode, input_pooled;
    size_t out_pool, band; /* OUT_POOLED: the pool's size; the output rows per band */
    size_t cin, cout, stride;
    size_t h_in, w_in, h_out, w_out;
    const float *weight_f, *mult, *bias, *threshold, *input_scale, *shift_in, *slope, *shift_out;
    const float *sc_mult, *sc_bias, *sc_threshold;
    const uint64_t *weight_b, *sc_weight;
    const float *out_threshold; /* the next layer's input threshold, fused into this one */
    uint64_t *weight_paired;    /* a block of at most 32 input channels: its weights two taps per word, in the arena */
} layer;

struct bnn_model {
    layer *layers; /* n_layers of them, in the arena */
    uint32_t n_layers, lr;
    uint32_t height, width, channels, classes;
    size_t arena_bytes;
    /* work buffers in the arena, per image: two maps (real and bits) a layer reads from and writes to; per band of
     * output rows the rest */
    float *real[2];
    uint64_t *bits[2];
    int32_t *dot, *sc_dot;
    float *band, *shortcut, *pooled, *unpacked, *logits;
    uint64_t *sc_bits, *scratch;
    uint64_t *paired; /* every such block's paired weights, one after the other */
    float *stem_weight; /* the stem's weights in the kernel's layout (kh, kw, cin, cout) */
};

/* ---- errors (bnn_common.c) ----------------------------------------------------------------------------------- */

static bnn_status fail(bnn_error *err, bnn_status code, const char *what) { return bnn_fail(err, code, what); }

static bnn_status ok(bnn_error *err) { return bnn_ok(err); }

const char *bnn_build_path(void) { return bnn_kernels_path(); }

/* ---- the container ----------------------------------------------------------------------------------------- */

static uint32_t rd32(const unsigned char *p) { return bnn_rd32(p); }

static uint64_t rd64(const unsigned char *p) { return bnn_rd64(p); }

static uint32_t crc32_bytes(const unsigned char *p, size_t n) { return bnn_crc32(0, p, n); }

static size_t dtype_size(uint32_t dtype)
{
    static const size_t sizes[11] = {0, 4, 8, 1, 1, 2, 2, 4, 4, 8, 8};
    return dtype >= 1 && dtype <= 10 ? sizes[dtype] : 0;
}

typedef struct {
    const unsigned char *blob;
    size_t size;
    uint32_t count, table;
} container;

/* The header checked (magic, CRCs, sizes, offsets): the table's entries can then be read. */
static bnn_status open_container(const void *blob, size_t size, container *c, bnn_error *err)
{
    const unsigned char *b = blob;
    if (!blob) return fail(err, BNN_ERR_ARGUMENT, "no model blob");
    if (((uintptr_t)blob & 7u) != 0) return fail(err, BNN_ERR_ARGUMENT, "the model blob must be 8-byte aligned");
    if (size < HEADER_SIZE || memcmp(b, MAGIC, sizeof MAGIC) != 0)
        return fail(err, BNN_ERR_FORMAT, "no bnncl header (another format, or truncated)");
    if (crc32_bytes(b, 60) != rd32(b + 60)) return fail(err, BNN_ERR_CHECKSUM, "the header is damaged");
    if (rd32(b + 8) > CONTAINER_VERSION) return fail(err, BNN_ERR_VERSION, "container version");
    if (rd32(b + 12) != KIND_MODEL_FILE) return fail(err, BNN_ERR_FORMAT, "a bnncl container, but not a model file");
    if (rd64(b + 16) != size) return fail(err, BNN_ERR_FORMAT, "truncated, or the size is not the header's");
    if (crc32_bytes(b + HEADER_SIZE, size - HEADER_SIZE) != rd32(b + 44))
        return fail(err, BNN_ERR_CHECKSUM, "the payload's CRC-32 does not match");
    c->blob = b;
    c->size = size;
    c->count = rd32(b + 24);
    c->table = rd32(b + 28);
    uint32_t meta_at = rd32(b + 32), meta_size = rd32(b + 36), data_at = rd32(b + 40);
    uint64_t end_table = (uint64_t)c->table + (uint64_t)c->count * ENTRY_SIZE;
    if (c->table != HEADER_SIZE || end_table > size || meta_at < end_table || (uint64_t)meta_at + meta_size > data_at
        || data_at > size)
        return fail(err, BNN_ERR_FORMAT, "inconsistent offsets in the header");
    return BNN_OK;
}

/* The tensor named `name` (NUL-terminated), every field of its entry checked; -1 when there is none. */
static int find_tensor(const container *c, const char *name)
{
    size_t len = strlen(name);
    for (uint32_t i = 0; i < c->count; i++) {
        const unsigned char *e = c->blob + c->table + (size_t)i * ENTRY_SIZE;
        uint64_t at = rd32(e), n = rd32(e + 4);
        if (n == len && at + n < c->size && memcmp(c->blob + at, name, len) == 0 && c->blob[at + n] == 0)
            return (int)i;
    }
    return -1;
}

static bnn_status get_tensor(const container *c, int64_t index, tensor *t, bnn_error *err)
{
    char what[80];
    if (index < 0 || index >= (int64_t)c->count) {
        snprintf(what, sizeof what, "tensor index %lld outside the table", (long long)index);
        return fail(err, BNN_ERR_MODEL, what);
    }
    const unsigned char *e = c->blob + c->table + (size_t)index * ENTRY_SIZE;
    t->dtype = rd32(e + 8);
    t->ndim = rd32(e + 12);
    uint64_t offset = rd64(e + 40), nbytes = rd64(e + 48);
    size_t item = dtype_size(t->dtype);
    if (!item || t->ndim > MAX_DIMS) {
        snprintf(what, sizeof what, "tensor %lld: unknown dtype or dimensions", (long long)index);
        return fail(err, BNN_ERR_FORMAT, what);
    }
    uint64_t count = 1;
    for (uint32_t d = 0; d < MAX_DIMS; d++) {
        t->dims[d] = rd32(e + 16 + 4 * d);
        if (d >= t->ndim && t->dims[d] != 0) return fail(err, BNN_ERR_FORMAT, "a tensor's unused dimension is set");
        if (d < t->ndim) {
            if (t->dims[d] && count > UINT64_MAX / t->dims[d]) return fail(err, BNN_ERR_FORMAT, "a tensor too large");
            count *= t->dims[d];
        }
    }
    if (count > SIZE_MAX / item || count * item != nbytes || offset % ALIGN != 0 || offset < rd32(c->blob + 40)
        || offset > c->size || nbytes > c->size - offset) {
        snprintf(what, sizeof what, "tensor %lld: its size or offset does not fit the file", (long long)index);
        return fail(err, BNN_ERR_FORMAT, what);
    }
    t->data = c->blob + offset;
    t->count = (size_t)count;
    return BNN_OK;
}

/* A tensor the layer needs, of `dtype` and exactly the dims given (0-terminated list, at most 4). */
static bnn_status need(const container *c, const int32_t *row, int col, uint32_t dtype, const size_t *dims,
                       const void **out, const char *layer_what, bnn_error *err)
{
    tensor t;
    char what[100];
    bnn_status s = get_tensor(c, row[col], &t, err);
    if (s != BNN_OK) return s;
    uint32_t nd = 0;
    while (nd < 4 && dims[nd]) nd++;
    int match = t.dtype == dtype && t.ndim == nd;
    for (uint32_t d = 0; match && d < nd; d++) match = t.dims[d] == dims[d];
    if (!match) {
        snprintf(what, sizeof what, "%s: tensor %d has the wrong type or shape", layer_what, (int)row[col]);
        return fail(err, BNN_ERR_MODEL, what);
    }
    *out = t.data;
    return BNN_OK;
}

/* ---- planning: every layer checked against the previous one, and the arena it needs ---------------------------- */

typedef struct {
    size_t layers, real, bits, band, dot, shortcut, pooled, unpacked, sc_bits, scratch, stem_weights, paired,
        features, classes;
} sizes;

/* A block whose input is at most 32 channels runs bnn_bconv3x3_paired: five words per window, not nine. */
#define PAIRED_MAX_CHANNELS 32

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* a * b, or SIZE_MAX when it does not fit (then plan() refuses the model: a 32-bit size_t is a target) */
static size_t smul(size_t a, size_t b) { return a && b > SIZE_MAX / a ? SIZE_MAX : a * b; }
static size_t smul3(size_t a, size_t b, size_t c) { return smul(smul(a, b), c); }

/* A block whose shortcut reads its input through an s x s average pool (Downsample): not identity, stride > 1. */
static int shortcut_pools(int shortcut, long stride) { return shortcut != SC_IDENTITY && stride > 1; }

/* What producer i (the stem or a block) keeps of its real output, by the layer after it (the layer's own checks
 * come when the plan reaches it); *pool: the pool's size when OUT_POOLED. The layer before the latent-replay split
 * keeps its whole map (bnn_latent copies it). */
static int out_mode_of(const int32_t *g, uint32_t n_layers, uint32_t i, size_t *pool)
{
    *pool = 1;
    if (i + 1 >= n_layers) return OUT_FULL;
    const int32_t *next = g + (size_t)(i + 1) * GRAPH_COLUMNS;
    if (next[COL_KIND] == KIND_BINARIZE || (next[COL_KIND] == KIND_BLOCK && next[COL_BINARY_INPUT])) return OUT_NONE;
    if (next[COL_KIND] == KIND_BLOCK && shortcut_pools(next[COL_SHORTCUT], next[COL_STRIDE]) && next[COL_STRIDE] <= 8
        && !next[COL_LR]) {
        *pool = (size_t)next[COL_STRIDE];
        return OUT_POOLED;
    }
    return OUT_FULL;
}

/* The real map a producer keeps (floats) and its band's (floats), by its mode. */
static void output_sizes(layer *L, const int32_t *g, uint32_t n_layers, uint32_t i, size_t ho, size_t wo, sizes *sz)
{
    L->out_mode = out_mode_of(g, n_layers, i, &L->out_pool);
    L->band = L->out_mode == OUT_POOLED ? L->out_pool : 1;
    if (L->out_mode == OUT_FULL)
        sz->real = max_sz(sz->real, smul3(ho, wo, L->cout));
    else
        sz->band = max_sz(sz->band, smul3(L->band, wo, L->cout));
    if (L->out_mode == OUT_POOLED)
        sz->real = max_sz(sz->real, smul3(bnn_pool_out_size(ho, L->out_pool), bnn_pool_out_size(wo, L->out_pool),
                                          L->cout));
}

/* Checks the graph and computes the buffer sizes; fills m's layers when m is not NULL (bnn_arena_size plans without
 * a model: nothing large on the stack). */
static bnn_status plan(const container *c, struct bnn_model *m, sizes *sz, bnn_error *err)
{
    struct bnn_model_dims {
        uint32_t n_layers, lr, height, width, channels, classes;
    } dims;
    int kinds[MAX_LAYERS], binary_inputs[MAX_LAYERS];
    layer scratch_layer;
    int prev_out_mode = OUT_FULL; /* what the layer before kept of its real output (the image: all of it) */
    tensor graph, input;
    int gi = find_tensor(c, "graph"), ii = find_tensor(c, "input");
    if (gi < 0 || ii < 0) return fail(err, BNN_ERR_MODEL, "no graph in the file (export it with bnncl 0.2 or later)");
    bnn_status s = get_tensor(c, gi, &graph, err);
    if (s == BNN_OK) s = get_tensor(c, ii, &input, err);
    if (s != BNN_OK) return s;
    if (graph.dtype != DT_I32 || graph.ndim != 2 || graph.dims[1] != GRAPH_COLUMNS || graph.dims[0] < 2
        || graph.dims[0] > MAX_LAYERS || input.dtype != DT_I32 || input.ndim != 1 || input.dims[0] != 4)
        return fail(err, BNN_ERR_MODEL, "the graph or input tensor has the wrong shape");
    const int32_t *g = graph.data, *in = input.data;
    for (int i = 0; i < 4; i++)
        if (in[i] < 1 || in[i] > 65536) return fail(err, BNN_ERR_MODEL, "the input tensor's sizes are out of range");
    memset(sz, 0, sizeof *sz);
    dims.n_layers = graph.dims[0];
    sz->layers = dims.n_layers;
    dims.lr = 0;
    dims.height = (uint32_t)in[0], dims.width = (uint32_t)in[1], dims.channels = (uint32_t)in[2];
    dims.classes = (uint32_t)in[3];
    size_t h = dims.height, w = dims.width, ch = dims.channels;
    int lr_count = 0;
    sz->real = smul3(h, w, ch);
    for (uint32_t i = 0; i < dims.n_layers; i++) {
        const int32_t *row = g + (size_t)i * GRAPH_COLUMNS;
        layer *L = m ? &m->layers[i] : &scratch_layer;
        char what[40];
        snprintf(what, sizeof what, "layer %u", (unsigned)i);
        memset(L, 0, sizeof *L);
        L->kind = row[COL_KIND];
        L->h_in = h, L->w_in = w, L->cin = ch;
        if (row[COL_LR]) {
            lr_count++;
            dims.lr = i;
        }
        if (row[COL_STRIDE] < 0 || row[COL_STRIDE] > 8 || row[COL_COUT] < 0 || row[COL_COUT] > 65536)
            return fail(err, BNN_ERR_MODEL, "a layer's stride or channels are out of range");
        L->stride = (size_t)row[COL_STRIDE];
        L->cout = (size_t)row[COL_COUT];
        if ((L->kind == KIND_STEM) != (i == 0) || (L->kind == KIND_HEAD) != (i + 1 == dims.n_layers))
            return fail(err, BNN_ERR_MODEL, "the network does not start with the stem and end with the head");
        const void *p;
        size_t words = bnn_words_for(ch);
        switch (L->kind) {
        case KIND_STEM: {
            if ((size_t)row[COL_CIN] != ch || L->stride < 1 || L->cout < 1)
                return fail(err, BNN_ERR_MODEL, "the stem does not take the input image");
            size_t dw[] = {L->cout, 3, 3, ch, 0}, db[] = {L->cout, 0};
            if ((s = need(c, row, COL_WEIGHT, DT_F32, dw, &p, what, err))) return s;
            L->weight_f = p;
            if ((s = need(c, row, COL_STEM_BIAS, DT_F32, db, &p, what, err))) return s;
            L->bias = p;
            sz->stem_weights = smul3(9, ch, L->cout);
            h = bnn_conv_out_size(h, 3, L->stride, 1), w = bnn_conv_out_size(w, 3, L->stride, 1), ch = L->cout;
            output_sizes(L, g, dims.n_layers, i, h, w, sz);
            break;
        }
        case KIND_BLOCK: {
            L->binary_input = row[COL_BINARY_INPUT] != 0;
            L->shortcut = row[COL_SHORTCUT];
            if ((size_t)row[COL_CIN] != ch || L->stride < 1 || L->cout < 1)
                return fail(err, BNN_ERR_MODEL, "a block does not take the channels of the layer before it");
            size_t dw[] = {3, 3, words, L->cout, 0}, dc[] = {L->cout, 0}, di[] = {ch, 0};
            if ((s = need(c, row, COL_WEIGHT, DT_U64, dw, &p, what, err))) return s;
            L->weight_b = p;
            const float **vec[] = {&L->mult, &L->bias, &L->shift_in, &L->slope, &L->shift_out};
            const int cols[] = {COL_MULT, COL_BIAS, COL_SHIFT_IN, COL_SLOPE, COL_SHIFT_OUT};
            for (int k = 0; k < 5; k++) {
                if ((s = need(c, row, cols[k], DT_F32, dc, &p, what, err))) return s;
                *vec[k] = p;
            }
            if (L->binary_input) {
                if ((s = need(c, row, COL_INPUT_SCALE, DT_F32, di, &p, what, err))) return s;
                L->input_scale = p;
            } else {
                if ((s = need(c, row, COL_THRESHOLD, DT_F32, di, &p, what, err))) return s;
                L->threshold = p;
            }
            size_t ho = bnn_conv_out_size(h, 3, L->stride, 1), wo = bnn_conv_out_size(w, 3, L->stride, 1);
            if (L->shortcut == SC_IDENTITY) {
                if (L->stride != 1 || L->cout != ch) return fail(err, BNN_ERR_MODEL, "an identity shortcut that cannot be");
            } else if (L->shortcut == SC_DUPLICATE) {
                if (L->cout % ch != 0) return fail(err, BNN_ERR_MODEL, "a duplicate shortcut that cannot be");
            } else if (L->shortcut == SC_BINARY) {
                size_t dsw[] = {1, 1, words, L->cout, 0};
                if ((s = need(c, row, COL_SC_WEIGHT, DT_U64, dsw, &p, what, err))) return s;
                L->sc_weight = p;
                if ((s = need(c, row, COL_SC_MULT, DT_F32, dc, &p, what, err))) return s;
                L->sc_mult = p;
                if ((s = need(c, row, COL_SC_BIAS, DT_F32, dc, &p, what, err))) return s;
                L->sc_bias = p;
                if ((s = need(c, row, COL_SC_THRESHOLD, DT_F32, di, &p, what, err))) return s;
                L->sc_threshold = p;
            } else {
                return fail(err, BNN_ERR_MODEL, "an unknown shortcut");
            }
            output_sizes(L, g, dims.n_layers, i, ho, wo, sz);
            size_t band = L->band, pools = shortcut_pools(L->shortcut, (long)L->stride);
            L->input_pooled = !L->binary_input && prev_out_mode == OUT_POOLED;
            sz->dot = max_sz(sz->dot, smul3(band, wo, L->cout));
            if (L->shortcut == SC_BINARY) {
                sz->sc_bits = max_sz(sz->sc_bits, smul3(band, wo, words));
                sz->shortcut = max_sz(sz->shortcut, smul3(band, wo, L->cout));
            }
            if (L->binary_input) { /* its shortcut's signs unpacked band by band, pooled when the block pools */
                size_t rows = pools ? smul(band, L->stride) : band;
                sz->unpacked = max_sz(sz->unpacked, smul3(rows < h ? rows : h, w, ch));
                if (pools) sz->pooled = max_sz(sz->pooled, smul3(band, wo, ch));
            } else if (pools && !L->input_pooled) { /* the layer before kept its whole map: pooled here by bands */
                sz->pooled = max_sz(sz->pooled, smul3(band, wo, ch));
            }
            sz->scratch = max_sz(sz->scratch, bnn_bconv3x3_scratch_words(ch));
            if (ch <= PAIRED_MAX_CHANNELS) { /* at most MAX_LAYERS * 5 * 65536 words in all: no overflow */
                sz->paired += 5 * L->cout;
                sz->scratch = max_sz(sz->scratch, bnn_bconv3x3_paired_scratch_words());
            }
            h = ho, w = wo, ch = L->cout;
            break;
        }
        case KIND_BINARIZE: {
            size_t di[] = {ch, 0};
            if ((s = need(c, row, COL_THRESHOLD, DT_F32, di, &p, what, err))) return s;
            L->threshold = p;
            L->cout = ch;
            break;
        }
        case KIND_POOL:
            L->cout = ch;
            h = 1, w = 1;
            sz->real = max_sz(sz->real, ch);
            break;
        case KIND_HEAD: {
            size_t dw[] = {dims.classes, ch, 0};
            if (h != 1 || w != 1) return fail(err, BNN_ERR_MODEL, "the head does not follow the pool");
            if ((s = need(c, row, COL_WEIGHT, DT_F32, dw, &p, what, err))) return s;
            L->weight_f = p;
            L->cout = dims.classes;
            sz->features = ch;
            sz->classes = dims.classes;
            break;
        }
        default:
            return fail(err, BNN_ERR_MODEL, "an unknown layer kind");
        }
        L->h_out = h, L->w_out = w;
        kinds[i] = L->kind, binary_inputs[i] = L->binary_input;
        if (L->kind == KIND_STEM || L->kind == KIND_BLOCK) prev_out_mode = L->out_mode;
        sz->bits = max_sz(sz->bits, smul3(h, w, bnn_words_for(ch)));
    }
    if (lr_count != 1 || dims.lr == 0)
        return fail(err, BNN_ERR_MODEL, "the graph does not mark one latent-replay layer");
    /* every buffer small enough that its bytes, aligned, and the arena's sum of them fit a size_t */
    const size_t all[] = {sz->real, sz->bits, sz->band, sz->dot, sz->shortcut, sz->pooled, sz->unpacked, sz->sc_bits,
                          sz->scratch, sz->stem_weights, sz->paired, sz->classes};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        if (all[k] > SIZE_MAX / 256) return fail(err, BNN_ERR_MODEL, "the network needs more memory than this "
                                                                     "machine can address");
    /* Which layer may follow which; and what each layer hands the next (ops.link): the next layer's input threshold
     * is fused into it, and its real output is kept only when the next layer reads it. */
    for (uint32_t i = 1; i < dims.n_layers; i++) {
        int prev = kinds[i - 1], kind = kinds[i], binary_input = binary_inputs[i];
        int real_producer = prev == KIND_STEM || prev == KIND_BLOCK;
        int fits = kind == KIND_BLOCK ? (binary_input ? prev == KIND_BINARIZE : real_producer)
                 : kind == KIND_BINARIZE || kind == KIND_POOL ? real_producer
                 : kind == KIND_HEAD ? prev == KIND_POOL : 0;
        if (!fits) return fail(err, BNN_ERR_MODEL, "a layer that cannot follow the one before it");
        if (m) {
            layer *P = &m->layers[i - 1], *L = &m->layers[i];
            if ((kind == KIND_BLOCK && !binary_input) || kind == KIND_BINARIZE) P->out_threshold = L->threshold;
            P->keep_real = !(kind == KIND_BINARIZE || (kind == KIND_BLOCK && binary_input));
        }
    }
    if (m) {
        m->layers[dims.n_layers - 1].keep_real = 1;
        m->n_layers = dims.n_layers, m->lr = dims.lr;
        m->height = dims.height, m->width = dims.width, m->channels = dims.channels, m->classes = dims.classes;
    }
    return BNN_OK;
}

/* ---- the arena ----------------------------------------------------------------------------------------------- */

static size_t up(size_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

/* Every buffer of the arena, in order, at 64-byte boundaries (SIMD loads never split a cache line). */
static size_t layout(const sizes *sz, unsigned char *base, struct bnn_model *m)
{
    size_t at = up(sizeof(struct bnn_model));
#define CARVE(field, type, n)                                        \
    do {                                                             \
        if (m) m->field = (type *)(void *)(base + at);               \
        at += up((n) * sizeof(type));                                \
    } while (0)
    CARVE(layers, layer, sz->layers);
    CARVE(real[0], float, sz->real);
    CARVE(real[1], float, sz->real);
    CARVE(bits[0], uint64_t, sz->bits);
    CARVE(bits[1], uint64_t, sz->bits);
    CARVE(band, float, sz->band);
    CARVE(dot, int32_t, sz->dot);
    CARVE(sc_dot, int32_t, sz->shortcut);
    CARVE(shortcut, float, sz->shortcut);
    CARVE(pooled, float, sz->pooled);
    CARVE(unpacked, float, sz->unpacked);
    CARVE(sc_bits, uint64_t, sz->sc_bits);
    CARVE(scratch, uint64_t, sz->scratch);
    CARVE(logits, float, sz->classes);
    CARVE(stem_weight, float, sz->stem_weights);
    CARVE(paired, uint64_t, sz->paired);
#undef CARVE
    return at;
}

/* The container opened (header and payload CRCs) and the graph planned without a model: the arena it needs. */
static bnn_status checked_size(const void *blob, size_t blob_size, container *c, sizes *sz, size_t *arena_bytes,
                               bnn_error *err)
{
    bnn_status s;
    if ((s = open_container(blob, blob_size, c, err)) || (s = plan(c, NULL, sz, err))) return s;
    *arena_bytes = layout(sz, NULL, NULL) + ALIGN; /* + ALIGN: the arena itself may start anywhere */
    return BNN_OK;
}

bnn_status bnn_arena_size(const void *blob, size_t blob_size, size_t *arena_bytes, bnn_error *err)
{
    container c;
    sizes sz;
    if (!arena_bytes) return fail(err, BNN_ERR_ARGUMENT, "no place for the arena size");
    bnn_status s = checked_size(blob, blob_size, &c, &sz, arena_bytes, err);
    return s ? s : ok(err);
}

bnn_status bnn_init(const void *blob, size_t blob_size, void *arena, size_t arena_bytes, bnn_model **model,
                    bnn_error *err)
{
    container c;
    sizes sz;
    size_t need;
    bnn_status s;
    if (!arena || !model) return fail(err, BNN_ERR_ARGUMENT, "no arena or no place for the model");
    *model = NULL;
    if ((s = checked_size(blob, blob_size, &c, &sz, &need, err))) return s;
    if (arena_bytes < need) return fail(err, BNN_ERR_ARGUMENT, "the arena is smaller than bnn_arena_size()");
    unsigned char *base = (unsigned char *)arena + (ALIGN - (uintptr_t)arena % ALIGN) % ALIGN;
    struct bnn_model *m = (struct bnn_model *)(void *)base;
    memset(m, 0, sizeof *m);
    layout(&sz, base, m);
    plan(&c, m, &sz, NULL); /* checked above: now into the model's layers, in the arena */
    m->arena_bytes = need;
    /* The stem's weights into the kernel's layout (kh, kw, cin, cout): 9 * cin * cout floats, the one copy made. */
    layer *stem = &m->layers[0];
    for (size_t co = 0; co < stem->cout; co++)
        for (size_t t = 0; t < 9; t++)
            for (size_t ci = 0; ci < stem->cin; ci++)
                m->stem_weight[(t * stem->cin + ci) * stem->cout + co] = stem->weight_f[(co * 9 + t) * stem->cin + ci];
    /* The paired weights of the blocks of at most 32 input channels (5 * cout words each). */
    uint64_t *paired = m->paired;
    for (uint32_t i = 0; i < m->n_layers; i++) {
        layer *L = &m->layers[i];
        if (L->kind == KIND_BLOCK && L->cin <= PAIRED_MAX_CHANNELS) {
            L->weight_paired = paired;
            bnn_pair_taps3x3(L->weight_b, L->cout, paired);
            paired += 5 * L->cout;
        }
    }
    *model = m;
    return ok(err);
}

/* ---- running ----------------------------------------------------------------------------------------------- */

/* Where band [r0, r1) of producer L's real output goes: into its whole map (OUT_FULL), else into the band buffer
 * (then pooled into the map, OUT_POOLED, or only thresholded, OUT_NONE). */
static float *band_out(const struct bnn_model *m, const layer *L, float *map, size_t r0)
{
    return L->out_mode == OUT_FULL ? map + r0 * L->w_out * L->cout : m->band;
}

/* After band [r0, r1) of producer L: OUT_POOLED pools it into its rows of the map. r0 is a multiple of the pool's
 * size (the band is), so the band's windows are the whole map's, pixels in the same order: the same bits. */
static void band_done(const struct bnn_model *m, const layer *L, float *map, size_t r0, size_t r1)
{
    if (L->out_mode != OUT_POOLED) return;
    size_t s = L->out_pool, wp = bnn_pool_out_size(L->w_out, s);
    bnn_dims band = {1, r1 - r0, L->w_out, L->cout};
    bnn_avgpool_f32(m->band, band, s, map + (r0 / s) * wp * L->cout);
}

static void run_stem(struct bnn_model *m, const layer *L, int cur, int nxt)
{
    bnn_dims in = {1, L->h_in, L->w_in, L->cin};
    size_t words = bnn_words_for(L->cout);
    for (size_t r0 = 0; r0 < L->h_out; r0 += L->band) {
        size_t r1 = r0 + L->band < L->h_out ? r0 + L->band : L->h_out, px = (r1 - r0) * L->w_out;
        float *out = band_out(m, L, m->real[nxt], r0);
        bnn_conv2d_f32_rows(m->real[cur], in, m->stem_weight, 3, 3, L->cout, L->bias, L->stride, 1, r0, r1, out);
        if (L->out_threshold) bnn_pack_below(out, px, L->cout, L->out_threshold, m->bits[nxt] + r0 * L->w_out * words);
        band_done(m, L, m->real[nxt], r0, r1);
    }
}

/* The input rows [*y0, *y1) that output rows [r0, r1) of block L read through its shortcut's pool (pools), else the
 * same rows (a stride-1 shortcut). */
static void band_input_rows(const layer *L, int pools, size_t r0, size_t r1, size_t *y0, size_t *y1)
{
    *y0 = pools ? r0 * L->stride : r0;
    *y1 = pools ? r1 * L->stride : r1;
    if (*y1 > L->h_in) *y1 = L->h_in;
}

/* One block, band by band of its output rows: the binary conv's rows, their shortcut (read from the input's map, or
 * unpacked from the input's signs, pooled where the block pools), the epilogue. */
static void run_block(struct bnn_model *m, const layer *L, int cur, int nxt)
{
    bnn_dims in = {1, L->h_in, L->w_in, L->cin};
    size_t wo = L->w_out, words_in = bnn_words_for(L->cin), words_out = bnn_words_for(L->cout);
    int pools = shortcut_pools(L->shortcut, (long)L->stride);
    bnn_epilogue_params ep = {L->mult, L->bias, L->shift_in, L->slope, L->shift_out, L->out_threshold};
    for (size_t r0 = 0; r0 < L->h_out; r0 += L->band) {
        size_t r1 = r0 + L->band < L->h_out ? r0 + L->band : L->h_out, px = (r1 - r0) * wo;
        if (L->weight_paired)
            bnn_bconv3x3_paired_rows(m->bits[cur], in, L->weight_paired, L->cout, L->stride, m->scratch, r0, r1,
                                     m->dot);
        else
            bnn_bconv3x3_rows(m->bits[cur], in, L->weight_b, L->cout, L->stride, m->scratch, r0, r1, m->dot);
        const float *src, *sc;
        size_t sc_channels = L->cin, y0, y1;
        band_input_rows(L, pools, r0, r1, &y0, &y1);
        if (L->binary_input) { /* the input is +-1 only: the shortcut scales the signs per channel */
            bnn_unpack_scaled(m->bits[cur] + y0 * L->w_in * words_in, (y1 - y0) * L->w_in, L->cin, L->input_scale,
                              m->unpacked);
            src = m->unpacked;
            if (pools) {
                bnn_dims rows = {1, y1 - y0, L->w_in, L->cin};
                bnn_avgpool_f32(m->unpacked, rows, L->stride, m->pooled);
                src = m->pooled;
            }
        } else if (pools && !L->input_pooled) { /* the whole map before the latent split: its band pooled here */
            bnn_dims rows = {1, y1 - y0, L->w_in, L->cin};
            bnn_avgpool_f32(m->real[cur] + y0 * L->w_in * L->cin, rows, L->stride, m->pooled);
            src = m->pooled;
        } else { /* the map the layer before kept: whole (w_in = wo), or pooled to the output's size already */
            src = m->real[cur] + r0 * wo * L->cin;
        }
        sc = src;
        if (L->shortcut == SC_BINARY) { /* pool -> threshold -> binary 1x1 conv -> folded BN */
            bnn_dims pooled = {1, r1 - r0, wo, L->cin};
            bnn_pack_below(src, px, L->cin, L->sc_threshold, m->sc_bits);
            bnn_bconv1x1(m->sc_bits, pooled, L->sc_weight, L->cout, 1, m->sc_dot);
            bnn_shortcut_affine(m->sc_dot, px, L->cout, L->sc_mult, L->sc_bias, m->shortcut);
            sc = m->shortcut;
            sc_channels = L->cout;
        }
        /* the real values always (the map or the band): the epilogue then tests all pixels' thresholds in one
         * pass */
        bnn_block_epilogue(m->dot, px, L->cout, &ep, sc, sc_channels, band_out(m, L, m->real[nxt], r0),
                           L->out_threshold ? m->bits[nxt] + r0 * wo * words_out : NULL);
        band_done(m, L, m->real[nxt], r0, r1);
    }
}

/* Layers [0, upto) on one image; returns the slot (0 or 1) that holds the last activation (real and/or bits). */
static int run_image(struct bnn_model *m, const uint8_t *image, uint32_t upto)
{
    size_t n = (size_t)m->height * m->width * m->channels;
    float *x = m->real[0];
    for (size_t i = 0; i < n; i++) x[i] = (float)image[i] / 127.5f - 1.0f; /* bnncl.core.functional.normalize_images */
    int cur = 0;
    for (uint32_t i = 0; i < upto; i++) {
        const layer *L = &m->layers[i];
        int nxt = cur ^ 1;
        bnn_dims in = {1, L->h_in, L->w_in, L->cin};
        switch (L->kind) {
        case KIND_STEM:
            run_stem(m, L, cur, nxt);
            cur = nxt;
            break;
        case KIND_BLOCK:
            run_block(m, L, cur, nxt);
            cur = nxt;
            break;
        case KIND_BINARIZE: /* its producer thresholded and packed the signs already (ops.link) */
            break;
        case KIND_POOL:
            bnn_global_avgpool_f32(m->real[cur], in, m->real[nxt]);
            cur = nxt;
            break;
        case KIND_HEAD:
            bnn_head_f32(m->real[cur], 1, L->cin, L->weight_f, L->cout, m->logits);
            break;
        }
    }
    return cur;
}

static bnn_status check_call(const bnn_model *m, const uint8_t *images, size_t n, const void *out, bnn_error *err)
{
    if (!m || !images || !out || n == 0) return fail(err, BNN_ERR_ARGUMENT, "a NULL pointer or no images");
    return BNN_OK;
}

bnn_status bnn_get_info(const bnn_model *m, bnn_info *info)
{
    if (!m || !info) return BNN_ERR_ARGUMENT;
    const layer *L = &m->layers[m->lr];
    info->height = m->height, info->width = m->width, info->channels = m->channels, info->classes = m->classes;
    info->layers = m->n_layers, info->lr_layer = m->lr;
    info->latent_channels = (uint32_t)L->cin, info->latent_height = (uint32_t)L->h_in;
    info->latent_width = (uint32_t)L->w_in;
    info->latent_binary = !m->layers[m->lr - 1].keep_real; /* only the signs cross the split (ops.link) */
    info->arena_bytes = m->arena_bytes;
    return BNN_OK;
}

bnn_status bnn_logits(bnn_model *m, const uint8_t *images, size_t n, float *logits, bnn_error *err)
{
    bnn_status s = check_call(m, images, n, logits, err);
    if (s) return s;
    size_t image_size = (size_t)m->height * m->width * m->channels;
    for (size_t i = 0; i < n; i++) {
        run_image(m, images + i * image_size, m->n_layers);
        memcpy(logits + i * m->classes, m->logits, m->classes * sizeof(float));
    }
    return ok(err);
}

bnn_status bnn_predict(bnn_model *m, const uint8_t *images, size_t n, int32_t *labels, bnn_error *err)
{
    bnn_status s = check_call(m, images, n, labels, err);
    if (s) return s;
    size_t image_size = (size_t)m->height * m->width * m->channels;
    for (size_t i = 0; i < n; i++) {
        run_image(m, images + i * image_size, m->n_layers);
        uint32_t best = 0;
        for (uint32_t c = 1; c < m->classes; c++)
            if (m->logits[c] > m->logits[best]) best = c; /* the first maximum, as NumPy's argmax */
        labels[i] = (int32_t)best;
    }
    return ok(err);
}

bnn_status bnn_latent(bnn_model *m, const uint8_t *images, size_t n, float *real, uint64_t *bits, bnn_error *err)
{
    bnn_info info;
    if (!m) return fail(err, BNN_ERR_ARGUMENT, "no model");
    bnn_get_info(m, &info);
    bnn_status s = check_call(m, images, n, info.latent_binary ? (const void *)bits : (const void *)real, err);
    if (s) return s;
    size_t image_size = (size_t)m->height * m->width * m->channels;
    size_t pixels = (size_t)info.latent_height * info.latent_width;
    size_t count = info.latent_binary ? pixels * bnn_words_for(info.latent_channels) : pixels * info.latent_channels;
    for (size_t i = 0; i < n; i++) {
        int slot = run_image(m, images + i * image_size, m->lr);
        if (info.latent_binary)
            memcpy(bits + i * count, m->bits[slot], count * sizeof(uint64_t));
        else
            memcpy(real + i * count, m->real[slot], count * sizeof(float));
    }
    return ok(err);
}

/* ---- for the learner (bnn_internal.h) ------------------------------------------------------------------------ */

int bnn_model_head(const bnn_model *m, size_t *classes, size_t *features, const float **weight)
{
    if (!m || m->n_layers < 2) return 0;
    const layer *head = &m->layers[m->n_layers - 1], *pool = &m->layers[m->n_layers - 2];
    if (head->kind != KIND_HEAD || pool->kind != KIND_POOL) return 0;
    *classes = head->cout, *features = head->cin, *weight = head->weight_f;
    return 1;
}

bnn_status bnn_model_shape(const void *blob, size_t blob_size, bnn_model_shape_info *shape, bnn_error *err)
{
    container c;
    sizes sz;
    tensor graph, input;
    bnn_status s = checked_size(blob, blob_size, &c, &sz, &shape->arena_bytes, err);
    if (s) return s;
    get_tensor(&c, find_tensor(&c, "graph"), &graph, NULL); /* checked by plan() */
    get_tensor(&c, find_tensor(&c, "input"), &input, NULL);
    const int32_t *g = graph.data, *in = input.data;
    size_t n = graph.dims[0];
    shape->pool_then_head = g[(n - 2) * GRAPH_COLUMNS + COL_KIND] == KIND_POOL && g[(n - 1) * GRAPH_COLUMNS] == KIND_HEAD;
    shape->classes = sz.classes, shape->features = sz.features;
    shape->image_bytes = (size_t)in[0] * (size_t)in[1] * (size_t)in[2];
    shape->payload_crc = bnn_rd32((const unsigned char *)blob + 44);
    return BNN_OK;
}

const float *bnn_model_features(bnn_model *m, const uint8_t *image)
{
    return m->real[run_image(m, image, m->n_layers - 1)];
}
