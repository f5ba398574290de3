/*
 * test_kernels.c -- holds the kernels of this build (portable, avx2, avx512 or neon inner loop) to the vectors
 * runtime/tests/make_vectors.py wrote from the NumPy references (the file format is in its docstring).
 *
 *   test_kernels VECTOR_DIR
 *
 * Every case runs its kernel twice, into outputs prefilled with 0x00 and with 0xff bytes and fenced by guard bytes,
 * so a value the kernel leaves unwritten or a write past either end fails too. Integer, bit and fixed-order float
 * results must equal the expected bytes (memcmp: -0.0 is not 0.0); the head must lie within gamma_F * sum|terms|
 * of the float64 product. Each comparison is also run once against a deliberately corrupted copy of the expected
 * output, which it must reject (the check can fail). The one-image cases of the 3x3 binary convs and the float conv
 * run band by band of output rows (bnn_bconv3x3_rows by two rows, the paired form row by row, bnn_conv2d_f32_rows by
 * three), as the model runs them: the bands must make the whole map. Then self-tests: bnn_popcount64 against a bit loop, and this
 * build's bnn_xnor_dot and bnn_xnor_dot_portable against the dot product counted bit by bit, on random operands of
 * many lengths, widths and column shapes (covering the SIMD paths' blocking and tails). Exit status 0 only if
 * everything passed.
 */
#include "bnn_kernels.h"
#include "bnn_rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NAME_BYTES 32
#define MAX_ARRAYS 16
#define MAX_DIMS 8
#define GUARD 64

enum { DT_U64 = 1, DT_I32 = 2, DT_F32 = 3, DT_F64 = 4 };

typedef struct {
    char name[NAME_BYTES + 1];
    uint32_t dtype, ndim, dims[MAX_DIMS];
    size_t count, bytes;
    void *data; /* its own allocation of exactly `bytes`, so the sanitizers see an overread */
} array_t;

typedef struct {
    char file[256];
    char kernel[NAME_BYTES + 1];
    size_t narrays;
    array_t arrays[MAX_ARRAYS];
} case_t;

static int failures;
static int negatives;          /* corrupted expectations rejected */
static double head_worst = 0;  /* the largest |error| / bound of the head seen */

static void fail(const case_t *c, const char *what)
{
    printf("FAIL %s (%s): %s\n", c->file, c->kernel, what);
    failures++;
}

/* ---- reading a case ------------------------------------------------------------------------------------------ */

static size_t dtype_size(uint32_t dt) { return dt == DT_U64 || dt == DT_F64 ? 8 : 4; }

static int read_exact(FILE *f, void *dst, size_t n) { return fread(dst, 1, n, f) == n; }

static uint32_t le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int read_u32(FILE *f, uint32_t *v)
{
    unsigned char b[4];
    if (!read_exact(f, b, 4))
        return 0;
    *v = le32(b);
    return 1;
}

/* The vectors are little-endian, as are all targets here; refuse to run elsewhere rather than misread. */
static int host_is_little_endian(void)
{
    uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static int load_case(const char *dir, const char *file, case_t *c)
{
    char path[1024];
    unsigned char head[8 + NAME_BYTES];
    uint32_t count;
    memset(c, 0, sizeof *c);
    snprintf(c->file, sizeof c->file, "%s", file);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    int ok = read_exact(f, head, sizeof head) && memcmp(head, "BNNVEC1", 8) == 0 && read_u32(f, &count)
             && count <= MAX_ARRAYS;
    if (ok) {
        memcpy(c->kernel, head + 8, NAME_BYTES);
        c->narrays = count;
    }
    for (size_t i = 0; ok && i < c->narrays; i++) {
        array_t *a = &c->arrays[i];
        ok = read_exact(f, a->name, NAME_BYTES) && read_u32(f, &a->dtype) && read_u32(f, &a->ndim)
             && a->dtype >= DT_U64 && a->dtype <= DT_F64 && a->ndim <= MAX_DIMS;
        a->count = 1;
        for (uint32_t d = 0; ok && d < a->ndim; d++) {
            ok = read_u32(f, &a->dims[d]);
            a->count *= a->dims[d];
        }
        if (!ok)
            break;
        a->bytes = a->count * dtype_size(a->dtype);
        a->data = malloc(a->bytes ? a->bytes : 1);
        ok = a->data && read_exact(f, a->data, a->bytes);
    }
    ok = ok && fgetc(f) == EOF; /* nothing after the last array */
    fclose(f);
    return ok;
}

static void free_case(case_t *c)
{
    for (size_t i = 0; i < c->narrays; i++)
        free(c->arrays[i].data);
}

/* The array `name` of any type, or NULL. */
static const array_t *lookup(const case_t *c, const char *name)
{
    for (size_t i = 0; i < c->narrays; i++)
        if (strcmp(c->arrays[i].name, name) == 0)
            return &c->arrays[i];
    return NULL;
}

/* The array `name`, or NULL; a present array of the wrong type fails the case. */
static const array_t *find(const case_t *c, const char *name, uint32_t dtype)
{
    const array_t *a = lookup(c, name);
    if (a && a->dtype != dtype) {
        fail(c, "an array of the wrong type");
        return NULL;
    }
    return a;
}

static const array_t *need(const case_t *c, const char *name, uint32_t dtype)
{
    const array_t *a = find(c, name, dtype);
    if (!a)
        fail(c, "missing array");
    return a;
}

static size_t scalar(const case_t *c, const char *name)
{
    const array_t *a = need(c, name, DT_I32);
    return a ? (size_t)*(const int32_t *)a->data : 0;
}

static bnn_dims dims4(const array_t *a)
{
    bnn_dims d = {a->dims[0], a->dims[1], a->dims[2], a->dims[3]};
    return d;
}

/* ---- outputs: prefilled, fenced ------------------------------------------------------------------------------ */

#include "fenced.h"

/* ---- comparisons ------------------------------------------------------------------------------------------- */

/* Equal bytes, else a message naming the first differing element. */
static int same_bytes(const case_t *c, const char *what, const void *got, const array_t *want, int verbose)
{
    if (memcmp(got, want->data, want->bytes) == 0)
        return 1;
    if (verbose) {
        size_t size = dtype_size(want->dtype), i = 0;
        while (memcmp((const char *)got + i * size, (const char *)want->data + i * size, size) == 0)
            i++;
        char msg[256];
        if (want->dtype == DT_F32) {
            float g, w;
            memcpy(&g, (const char *)got + i * 4, 4);
            memcpy(&w, (const char *)want->data + i * 4, 4);
            snprintf(msg, sizeof msg, "MISMATCH %s[%zu]: got %.9g, want %.9g", what, i, g, w);
        } else if (want->dtype == DT_I32) {
            snprintf(msg, sizeof msg, "MISMATCH %s[%zu]: got %d, want %d", what, i,
                     (int)((const int32_t *)got)[i], (int)((const int32_t *)want->data)[i]);
        } else {
            snprintf(msg, sizeof msg, "MISMATCH %s[%zu]: got %016llx, want %016llx", what, i,
                     (unsigned long long)((const uint64_t *)got)[i],
                     (unsigned long long)((const uint64_t *)want->data)[i]);
        }
        fail(c, msg);
    }
    return 0;
}

/* The comparison must reject an expectation with one bit flipped (a different bit per case). */
static void negative_bytes(const case_t *c, const void *got, const array_t *want, size_t salt)
{
    if (want->bytes == 0)
        return;
    array_t bad = *want;
    bad.data = malloc(want->bytes);
    memcpy(bad.data, want->data, want->bytes);
    ((unsigned char *)bad.data)[salt % want->bytes] ^= (unsigned char)(1u << (salt % 8));
    if (same_bytes(c, "corrupted", got, &bad, 0))
        fail(c, "a corrupted expectation was accepted");
    else
        negatives++;
    free(bad.data);
}

/* ---- one case per kernel: run(case, output buffers) fills the outputs; the driver compares ---------------- */

#define MAX_OUTPUTS 2

typedef struct {
    const array_t *want[MAX_OUTPUTS]; /* expected arrays (NULL: this output is not made) */
    void *got[MAX_OUTPUTS];
} io_t;

static void run_pack_below(const case_t *c, io_t *io)
{
    const array_t *x = need(c, "in.x", DT_F32), *t = need(c, "in.threshold", DT_F32);
    bnn_dims d = dims4(x);
    bnn_pack_below(x->data, d.n * d.h * d.w, d.c, t->data, io->got[0]);
}

static void run_bconv3x3(const case_t *c, io_t *io)
{
    const array_t *x = need(c, "in.x", DT_U64), *w = need(c, "in.w", DT_U64);
    bnn_dims d = dims4(x);
    d.c = scalar(c, "cin");
    uint64_t *scratch = malloc(bnn_bconv3x3_scratch_words(d.c) * sizeof *scratch);
    size_t cout = w->dims[3], stride = scalar(c, "stride");
    if (d.n == 1) { /* one image: by bands of two output rows (the model's way), which must give the whole map */
        size_t ho = bnn_conv_out_size(d.h, 3, stride, 1), wo = bnn_conv_out_size(d.w, 3, stride, 1);
        for (size_t oy = 0; oy < ho; oy += 2) {
            size_t end = oy + 2 < ho ? oy + 2 : ho;
            bnn_bconv3x3_rows(x->data, d, w->data, cout, stride, scratch, oy, end,
                              (int32_t *)io->got[0] + oy * wo * cout);
        }
    } else {
        bnn_bconv3x3(x->data, d, w->data, cout, stride, scratch, io->got[0]);
    }
    free(scratch);
}

/* The same cases (at most 32 input channels) through the paired form, its weights paired here. */
static void run_bconv3x3_paired(const case_t *c, io_t *io)
{
    const array_t *x = need(c, "in.x", DT_U64), *w = need(c, "in.w", DT_U64);
    bnn_dims d = dims4(x);
    d.c = scalar(c, "cin");
    size_t cout = w->dims[3];
    uint64_t *scratch = malloc(bnn_bconv3x3_paired_scratch_words() * sizeof *scratch);
    uint64_t *wp = malloc(5 * cout * sizeof *wp);
    bnn_pair_taps3x3(w->data, cout, wp);
    size_t stride = scalar(c, "stride");
    if (d.n == 1) { /* one image: row by row, which must give the whole map */
        size_t ho = bnn_conv_out_size(d.h, 3, stride, 1), wo = bnn_conv_out_size(d.w, 3, stride, 1);
        for (size_t oy = 0; oy < ho; oy++)
            bnn_bconv3x3_paired_rows(x->data, d, wp, cout, stride, scratch, oy, oy + 1,
                                     (int32_t *)io->got[0] + oy * wo * cout);
    } else {
        bnn_bconv3x3_paired(x->data, d, wp, cout, stride, scratch, io->got[0]);
    }
    free(wp);
    free(scratch);
}

static void run_bconv1x1(const case_t *c, io_t *io)
{
    const array_t *x = need(c, "in.x", DT_U64), *w = need(c, "in.w", DT_U64);
    bnn_dims d = dims4(x);
    d.c = scalar(c, "cin");
    bnn_bconv1x1(x->data, d, w->data, w->dims[3], scalar(c, "stride"), io->got[0]);
}

static void run_bgemm(const case_t *c, io_t *io)
{
    const array_t *a = need(c, "in.a", DT_U64), *wt = need(c, "in.wt", DT_U64);
    bnn_bgemm(a->data, a->dims[0], a->dims[1], wt->data, wt->dims[1], (int32_t)scalar(c, "k"), io->got[0]);
}

static void run_conv2d(const case_t *c, io_t *io)
{
    const array_t *x = need(c, "in.x", DT_F32), *w = need(c, "in.w", DT_F32), *b = find(c, "in.bias", DT_F32);
    bnn_dims d = dims4(x);
    size_t kh = w->dims[0], kw = w->dims[1], cout = w->dims[3], stride = scalar(c, "stride"), pad = scalar(c, "pad");
    if (d.n == 1) { /* one image: by bands of three output rows, which must give the whole map */
        size_t ho = bnn_conv_out_size(d.h, kh, stride, pad), wo = bnn_conv_out_size(d.w, kw, stride, pad);
        for (size_t oy = 0; oy < ho; oy += 3) {
            size_t end = oy + 3 < ho ? oy + 3 : ho;
            bnn_conv2d_f32_rows(x->data, d, w->data, kh, kw, cout, b ? b->data : NULL, stride, pad, oy, end,
                                (float *)io->got[0] + oy * wo * cout);
        }
    } else {
        bnn_conv2d_f32(x->data, d, w->data, kh, kw, cout, b ? b->data : NULL, stride, pad, io->got[0]);
    }
}

static void run_avgpool(const case_t *c, io_t *io)
{
    const array_t *x = need(c, "in.x", DT_F32);
    bnn_avgpool_f32(x->data, dims4(x), scalar(c, "s"), io->got[0]);
}

static void run_global_avgpool(const case_t *c, io_t *io)
{
    const array_t *x = need(c, "in.x", DT_F32);
    bnn_global_avgpool_f32(x->data, dims4(x), io->got[0]);
}

static void run_block_epilogue(const case_t *c, io_t *io)
{
    const array_t *dot = need(c, "in.dot", DT_I32), *sc = need(c, "in.shortcut", DT_F32);
    const array_t *thr = find(c, "in.threshold", DT_F32);
    bnn_epilogue_params p = {
        need(c, "in.mult", DT_F32)->data,     need(c, "in.bias", DT_F32)->data,
        need(c, "in.shift_in", DT_F32)->data, need(c, "in.slope", DT_F32)->data,
        need(c, "in.shift_out", DT_F32)->data, thr ? thr->data : NULL,
    };
    bnn_dims d = dims4(dot);
    bnn_block_epilogue(dot->data, d.n * d.h * d.w, d.c, &p, sc->data, sc->dims[3], io->got[0], io->got[1]);
}

static void run_shortcut_affine(const case_t *c, io_t *io)
{
    const array_t *dot = need(c, "in.dot", DT_I32);
    bnn_dims d = dims4(dot);
    bnn_shortcut_affine(dot->data, d.n * d.h * d.w, d.c, need(c, "in.mult", DT_F32)->data,
                        need(c, "in.bias", DT_F32)->data, io->got[0]);
}

static void run_unpack_scaled(const case_t *c, io_t *io)
{
    const array_t *bits = need(c, "in.bits", DT_U64), *scale = need(c, "in.scale", DT_F32);
    bnn_dims d = dims4(bits);
    bnn_unpack_scaled(bits->data, d.n * d.h * d.w, scale->count, scale->data, io->got[0]);
}

static void run_head(const case_t *c, io_t *io)
{
    const array_t *x = need(c, "in.x", DT_F32), *w = need(c, "in.w", DT_F32);
    bnn_head_f32(x->data, x->dims[0], x->dims[1], w->data, w->dims[0], io->got[0]);
}

/* ---- the random generator (bnn_rng.h): each output from a fresh generator of the case's seed --------------- */

static bnn_pcg32 seeded(const case_t *c)
{
    const array_t *seed = need(c, "in.seed", DT_U64);
    bnn_pcg32 g = {0, 1};
    if (seed && seed->dims[0] == 2)
        bnn_pcg32_seed(&g, ((const uint64_t *)seed->data)[0], ((const uint64_t *)seed->data)[1]);
    return g;
}

/* the expected array's element count (the output buffers are sized by it) */
static size_t expected_count(const io_t *io) { return io->want[0]->count; }

static void run_rng_u32(const case_t *c, io_t *io)
{
    bnn_pcg32 g = seeded(c);
    for (size_t i = 0; i < expected_count(io); i++)
        ((uint64_t *)io->got[0])[i] = bnn_pcg32_next(&g);
}

static void run_rng_below(const case_t *c, io_t *io)
{
    const array_t *b = need(c, "in.bounds", DT_U64);
    bnn_pcg32 g = seeded(c);
    for (size_t i = 0; b && i < expected_count(io); i++)
        ((uint64_t *)io->got[0])[i] = bnn_pcg32_below(&g, ((const uint64_t *)b->data)[i]);
}

static void run_rng_permutation(const case_t *c, io_t *io)
{
    bnn_pcg32 g = seeded(c);
    uint32_t n = (uint32_t)scalar(c, "n"), *a = malloc((n ? n : 1) * sizeof *a);
    bnn_pcg32_permutation(&g, a, n);
    /* the 16-bit form from the same seed must give the same permutation: where it does not, the output is spoiled */
    bnn_pcg32 g16 = seeded(c);
    uint16_t *a16 = malloc((n ? n : 1) * sizeof *a16);
    bnn_pcg32_permutation16(&g16, a16, n);
    int same = g16.state == g.state;
    for (uint32_t i = 0; i < n; i++)
        same &= a16[i] == a[i];
    for (uint32_t i = 0; i < n; i++)
        ((uint64_t *)io->got[0])[i] = same ? a[i] : ~(uint64_t)0;
    free(a16);
    free(a);
}

static void run_rng_choice(const case_t *c, io_t *io)
{
    bnn_pcg32 g = seeded(c);
    uint32_t n = (uint32_t)scalar(c, "n"), k = (uint32_t)scalar(c, "k"), *a = malloc((n ? n : 1) * sizeof *a);
    bnn_pcg32_choice(&g, a, n, k);
    /* the sparse form from the same seed must draw the same values: where it does not, the output is spoiled */
    bnn_pcg32 gs = seeded(c);
    uint32_t *out = malloc((k ? k : 1) * sizeof *out), *moved = malloc((2 * k + 1) * sizeof *moved);
    bnn_pcg32_choice_sparse(&gs, n, k, out, moved);
    int same = gs.state == g.state;
    for (uint32_t i = 0; i < k && i < n; i++)
        same &= out[i] == a[i];
    for (uint32_t i = 0; i < k; i++)
        ((uint64_t *)io->got[0])[i] = same ? a[i] : ~(uint64_t)0;
    free(out);
    free(moved);
    free(a);
}

static void run_rng_float32(const case_t *c, io_t *io)
{
    bnn_pcg32 g = seeded(c);
    for (size_t i = 0; i < expected_count(io); i++)
        ((float *)io->got[0])[i] = bnn_pcg32_float32(&g);
}

static void run_rng_float64(const case_t *c, io_t *io)
{
    bnn_pcg32 g = seeded(c);
    for (size_t i = 0; i < expected_count(io); i++)
        ((double *)io->got[0])[i] = bnn_pcg32_float64(&g);
}

typedef struct {
    const char *name;
    void (*run)(const case_t *, io_t *);
    const char *outputs[MAX_OUTPUTS]; /* expected arrays, in the order of io->got */
    int cases, passed;
    double seconds;
} kernel_t;

static kernel_t kernels[] = {
    {"pack_below", run_pack_below, {"out.bits"}, 0, 0, 0},
    {"bconv3x3", run_bconv3x3, {"out.dot"}, 0, 0, 0},
    {"bconv3x3_paired", run_bconv3x3_paired, {"out.dot"}, 0, 0, 0},
    {"bconv1x1", run_bconv1x1, {"out.dot"}, 0, 0, 0},
    {"bgemm", run_bgemm, {"out.dot"}, 0, 0, 0},
    {"conv2d", run_conv2d, {"out.y"}, 0, 0, 0},
    {"avgpool", run_avgpool, {"out.y"}, 0, 0, 0},
    {"global_avgpool", run_global_avgpool, {"out.y"}, 0, 0, 0},
    {"block_epilogue", run_block_epilogue, {"out.real", "out.bits"}, 0, 0, 0},
    {"shortcut_affine", run_shortcut_affine, {"out.y"}, 0, 0, 0},
    {"unpack_scaled", run_unpack_scaled, {"out.y"}, 0, 0, 0},
    {"head", run_head, {"out.exact"}, 0, 0, 0},
    {"rng_u32", run_rng_u32, {"out.u32"}, 0, 0, 0},
    {"rng_below", run_rng_below, {"out.below"}, 0, 0, 0},
    {"rng_permutation", run_rng_permutation, {"out.a"}, 0, 0, 0},
    {"rng_choice", run_rng_choice, {"out.a"}, 0, 0, 0},
    {"rng_float32", run_rng_float32, {"out.x"}, 0, 0, 0},
    {"rng_float64", run_rng_float64, {"out.x"}, 0, 0, 0},
};
#define NKERNELS (sizeof kernels / sizeof kernels[0])

/* gamma_F of a float32 sum of F products, plus that of the float64 oracle's own sum. */
static double head_gamma(const case_t *c)
{
    double features = (double)need(c, "in.x", DT_F32)->dims[1];
    double u32 = ldexp(1.0, -24), u64 = ldexp(1.0, -53);
    return features * u32 / (1 - features * u32) + features * u64 / (1 - features * u64);
}

/* The head against the float64 product: |got - exact| <= gamma * sum|terms|. */
static int head_within(const case_t *c, const float *got, const array_t *exact, const array_t *abs_terms,
                       int verbose)
{
    double gamma = head_gamma(c);
    for (size_t i = 0; i < exact->count; i++) {
        double want = ((const double *)exact->data)[i], bound = gamma * ((const double *)abs_terms->data)[i];
        double err = fabs((double)got[i] - want);
        if (verbose && bound > 0 && err / bound > head_worst)
            head_worst = err / bound;
        if (!(err <= bound)) {
            if (verbose) {
                char msg[160];
                snprintf(msg, sizeof msg, "head[%zu]: got %.9g, exact %.17g, bound %.3g", i, got[i], want, bound);
                fail(c, msg);
            }
            return 0;
        }
    }
    return 1;
}

static int check_head(const case_t *c, const float *got)
{
    const array_t *exact = need(c, "out.exact", DT_F64), *abs_terms = need(c, "out.abs", DT_F64);
    if (!exact || !abs_terms || !head_within(c, got, exact, abs_terms, 1))
        return 0;
    /* negative: move one exact value by twice its bound (plus a little, for a bound of zero) */
    array_t bad = *exact;
    bad.data = malloc(exact->bytes);
    memcpy(bad.data, exact->data, exact->bytes);
    double *v = bad.data, bound = head_gamma(c) * ((const double *)abs_terms->data)[0];
    v[0] += 2 * bound + fabs(v[0]) * 1e-6 + 1e-30;
    if (head_within(c, got, &bad, abs_terms, 0))
        fail(c, "a corrupted head expectation was accepted");
    else
        negatives++;
    free(bad.data);
    return 1;
}

/* Size in bytes of output `i` of this case: its expected array's (the head: float32 of out.exact's shape). */
static size_t output_bytes(const kernel_t *k, const array_t *want)
{
    return strcmp(k->name, "head") == 0 ? want->count * sizeof(float) : want->bytes;
}

static int run_case(kernel_t *k, const case_t *c, size_t salt)
{
    int ok = 1;
    io_t io = {{NULL}, {NULL}};
    size_t n = 0;
    for (; n < MAX_OUTPUTS && k->outputs[n]; n++)
        io.want[n] = lookup(c, k->outputs[n]);
    if (!io.want[0] && !(n > 1 && io.want[1])) {
        fail(c, "no expected output");
        return 0;
    }
    for (int fill = 0; fill < 2 && ok; fill++) {
        output_t out[MAX_OUTPUTS] = {{0}};
        for (size_t i = 0; i < n; i++) {
            if (io.want[i]) {
                out[i] = output_new(output_bytes(k, io.want[i]), fill ? 0xff : 0x00);
                io.got[i] = out[i].data;
            } else {
                io.got[i] = NULL;
            }
        }
        int before = failures;
        k->run(c, &io);
        ok = failures == before;
        for (size_t i = 0; i < n && ok; i++) {
            if (!io.want[i])
                continue;
            if (!guards_intact(&out[i])) {
                fail(c, "wrote outside its output");
                ok = 0;
            } else if (strcmp(k->name, "head") == 0) {
                ok = check_head(c, io.got[i]) && failures == before;
            } else {
                ok = same_bytes(c, k->outputs[i], io.got[i], io.want[i], 1);
                if (ok && fill == 0)
                    negative_bytes(c, io.got[i], io.want[i], salt * 7919 + i);
            }
        }
        for (size_t i = 0; i < n; i++)
            free(out[i].block);
    }
    return ok;
}

/* ---- self-tests ---------------------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t next_random(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static int selftest_popcount(void)
{
    for (int i = 0; i < 20000; i++) {
        uint64_t v = i < 64 ? UINT64_C(1) << i : i < 128 ? ~(UINT64_C(1) << (i - 64)) : next_random();
        if (i == 128)
            v = 0;
        if (i == 129)
            v = ~UINT64_C(0);
        unsigned want = 0;
        for (uint64_t t = v; t; t >>= 1)
            want += (unsigned)(t & 1);
        if (bnn_popcount64(v) != want) {
            printf("FAIL selftest: bnn_popcount64(%016llx) = %u, want %u\n", (unsigned long long)v,
                   bnn_popcount64(v), want);
            return 0;
        }
    }
    return 1;
}

/* This build's inner loop against the portable one: columns of one run and of three runs with gaps between them
 * (an inner pixel's window), lengths across the 31-word byte-count blocks of the AVX2 and NEON forms, widths across
 * every blocking (16/4, 32/8, 8/2) and tail. Every 5th width has weights that differ from the column in every bit. */
static int selftest_xnor_dot(int *checks)
{
    static const size_t runs[] = {1, 2, 3, 6, 9, 18, 24, 30, 31, 32, 45, 62, 63, 64, 72, 100};
    enum { MAX_RUN = 100, MAX_COUT = 75, GAP = 5 };
    static uint64_t buf[3 * (MAX_RUN + GAP)], w[3 * MAX_RUN * MAX_COUT];
    int32_t got[MAX_COUT], want[MAX_COUT];
    for (size_t nseg = 1; nseg <= 3; nseg += 2) {
        for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
            size_t run = runs[i], stride = nseg == 1 ? run : run + GAP, len = nseg * run;
            bnn_column col = {buf, nseg, run, stride};
            for (size_t j = 0; j < nseg * stride; j++)
                buf[j] = next_random();
            for (size_t cout = 1; cout <= MAX_COUT; cout++) {
                for (size_t l = 0; l < len; l++) {
                    uint64_t x = buf[(l / run) * stride + l % run];
                    for (size_t co = 0; co < cout; co++)
                        w[l * cout + co] = cout % 5 == 0 ? ~x : next_random();
                }
                int32_t k = (int32_t)(64 * len);
                for (size_t co = 0; co < cout; co++) { /* the definition, a bit at a time */
                    int32_t agree = 0;
                    for (size_t l = 0; l < len; l++)
                        for (int bit = 0; bit < 64; bit++)
                            agree += (int32_t)((~(buf[(l / run) * stride + l % run] ^ w[l * cout + co]) >> bit) & 1);
                    want[co] = 2 * agree - k; /* agreements minus disagreements */
                }
                bnn_xnor_dot(&col, 1, w, cout, k, got);
                int ok = memcmp(got, want, cout * sizeof *got) == 0 && (cout % 5 != 0 || want[0] == -k);
                bnn_xnor_dot_portable(col, w, cout, cout, k, got);
                if (!ok || memcmp(got, want, cout * sizeof *got) != 0) {
                    printf("FAIL selftest: bnn_xnor_dot (%s) or bnn_xnor_dot_portable, %zu runs of %zu words, "
                           "cout %zu: not the bitwise dot product\n", bnn_kernels_path(), nseg, run, cout);
                    return 0;
                }
                ++*checks;
            }
        }
    }
    return 1;
}

/* ---- driver -------------------------------------------------------------------------------------------------- */

static kernel_t *kernel_named(const char *name)
{
    for (size_t i = 0; i < NKERNELS; i++)
        if (strcmp(kernels[i].name, name) == 0)
            return &kernels[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s VECTOR_DIR\n", argv[0]);
        return 2;
    }
    if (!host_is_little_endian()) {
        fprintf(stderr, "the vectors are little-endian; this host is not\n");
        return 2;
    }
    char path[1024], line[256];
    snprintf(path, sizeof path, "%s/MANIFEST", argv[1]);
    FILE *manifest = fopen(path, "r");
    if (!manifest) {
        fprintf(stderr, "cannot open %s (run make_vectors.py first)\n", path);
        return 2;
    }
    clock_t start = clock();
    int cases = 0;
    for (size_t salt = 0; fgets(line, sizeof line, manifest); salt++) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0])
            continue;
        case_t c;
        if (!load_case(argv[1], line, &c)) {
            printf("FAIL %s: cannot read the case file\n", line);
            failures++;
            free_case(&c);
            continue;
        }
        kernel_t *k = kernel_named(c.kernel);
        cases++;
        if (!k) {
            fail(&c, "unknown kernel");
        } else {
            clock_t t0 = clock();
            k->cases++;
            k->passed += run_case(k, &c, salt);
            k->seconds += (double)(clock() - t0) / CLOCKS_PER_SEC;
        }
        free_case(&c);
    }
    fclose(manifest);

    printf("kernels built with the %s inner loop, vectors from %s\n", bnn_kernels_path(), argv[1]);
    printf("  %-16s %6s %6s %10s\n", "kernel", "cases", "passed", "ms");
    for (size_t i = 0; i < NKERNELS; i++) {
        printf("  %-16s %6d %6d %10.2f\n", kernels[i].name, kernels[i].cases, kernels[i].passed,
               1e3 * kernels[i].seconds);
        if (kernels[i].cases == 0) {
            printf("FAIL no vectors for %s\n", kernels[i].name);
            failures++;
        }
    }
    int xnor_checks = 0;
    if (!selftest_popcount())
        failures++;
    if (!selftest_xnor_dot(&xnor_checks))
        failures++;
    double seconds = (double)(clock() - start) / CLOCKS_PER_SEC;
    printf("  self-tests: bnn_popcount64; bnn_xnor_dot and bnn_xnor_dot_portable bit by bit (%d shapes)\n",
           xnor_checks);
    printf("  head: largest |error| / (gamma_F * sum|terms|) = %.4f\n", head_worst);
    printf("  corrupted expectations rejected: %d\n", negatives);
    printf("%s: %s path, %d cases, %d failures, %.2f s\n", failures ? "FAILED" : "PASSED", bnn_kernels_path(), cases,
           failures, seconds);
    return failures ? 1 : 0;
}
