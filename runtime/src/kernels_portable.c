/*
 * kernels_portable.c -- every kernel of bnn_kernels.h in portable C11 (the contract and the layouts are there).
 *
 * Built on every target. The popcount-heavy inner loop, bnn_xnor_dot, comes from here unless a SIMD file was
 * selected (BNN_USE_AVX2 / BNN_USE_AVX512 / BNN_USE_NEON); bnn_xnor_dot_portable is always here.
 *
 * The float kernels write the reference's order of float32 operations out, one operation per statement where the
 * order matters. Compile with -ffp-contract=off and without -ffast-math: a fused multiply-add or a reassociated sum
 * would change the last bits. A compiler may still vectorize these loops across output channels (each lane keeps
 * its own order), which is allowed and exact.
 */
#include "bnn_kernels.h"

#include <float.h>

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "the float kernels need FLT_EVAL_METHOD == 0 (float arithmetic in float: SSE2 on x86, not the x87)"
#endif

#if defined(__FAST_MATH__)
#error "do not build the kernels with -ffast-math: the float kernels promise a fixed order of float32 operations"
#endif

/* No fused multiply-add. The standard pragma works for Clang and most other compilers; GCC ignores it and needs
 * -ffp-contract=off (its default only under -std=c11, not under the default -std=gnu11: on AArch64 the tests then
 * fail on the stem conv and the epilogue). */
#if defined(__clang__) || !defined(__GNUC__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ---- vectors ------------------------------------------------------------------------------------------------ */

/* Loops the compiler does not vectorize by itself (a select on a float compare, under GCC's default
 * -ftrapping-math; the stem's register blocking) are written with GNU C's vector extension, which GCC and Clang
 * lower to the target's vector instructions or to scalars. Lane by lane the operations are the plain loop's, in its
 * order: the results are the same bit for bit, with or without them. BNN_LANES floats are one vector of the target
 * (AVX-512: 16, AVX: 8, SSE2 and NEON: 4). Without a vector unit (a Cortex-M), with another compiler or with
 * BNN_PLAIN_C (the tests build that too), the plain loops alone. */
#if defined(__GNUC__) && !defined(BNN_PLAIN_C) && (defined(__SSE2__) || defined(__ARM_NEON))
#if defined(__AVX512F__)
#define BNN_LANES 16
#elif defined(__AVX__)
#define BNN_LANES 8
#else
#define BNN_LANES 4
#endif
typedef float bnn_f32v __attribute__((vector_size(4 * BNN_LANES)));
typedef int32_t bnn_i32v __attribute__((vector_size(4 * BNN_LANES)));
typedef uint32_t bnn_u32v __attribute__((vector_size(4 * BNN_LANES)));

static inline bnn_f32v loadv(const float *p)
{
    bnn_f32v v;
    __builtin_memcpy(&v, p, sizeof v); /* an unaligned vector load */
    return v;
}

static inline bnn_i32v loadiv(const int32_t *p)
{
    bnn_i32v v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void storev(float *p, bnn_f32v v) { __builtin_memcpy(p, &v, sizeof v); }

static inline bnn_f32v splatv(float x)
{
    bnn_f32v v;
    for (int i = 0; i < BNN_LANES; i++)
        v[i] = x;
    return v;
}

/* keep ? a : b, lane by lane (keep: all ones or all zeros per lane, as a vector compare gives) */
static inline bnn_f32v selectv(bnn_i32v keep, bnn_f32v a, bnn_f32v b)
{
    return (bnn_f32v)(((bnn_i32v)a & keep) | ((bnn_i32v)b & ~keep));
}
#endif

/* ---- the XNOR-popcount inner loop ------------------------------------------------------------------------- */

/* Four output channels at once: four independent sums in registers, and each input word loaded once for all four.
 * Their weights are adjacent in a row, so the loads stay sequential; on a cacheless microcontroller that is
 * simply four loads. */
static void xnor_dot4(bnn_column col, const uint64_t *restrict w, size_t ldw, int32_t k, int32_t *restrict out)
{
    uint32_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    const uint64_t *row = w;
    for (size_t s = 0; s < col.nseg; s++) {
        const uint64_t *c = col.base + s * col.seg_stride;
        for (size_t l = 0; l < col.seg_len; l++, row += ldw) {
            p0 += bnn_popcount64(c[l] ^ row[0]);
            p1 += bnn_popcount64(c[l] ^ row[1]);
            p2 += bnn_popcount64(c[l] ^ row[2]);
            p3 += bnn_popcount64(c[l] ^ row[3]);
        }
    }
    out[0] = k - 2 * (int32_t)p0;
    out[1] = k - 2 * (int32_t)p1;
    out[2] = k - 2 * (int32_t)p2;
    out[3] = k - 2 * (int32_t)p3;
}

static void xnor_dot1(bnn_column col, const uint64_t *restrict w, size_t ldw, int32_t k, int32_t *restrict out)
{
    uint32_t pop = 0;
    const uint64_t *row = w;
    for (size_t s = 0; s < col.nseg; s++) {
        const uint64_t *c = col.base + s * col.seg_stride;
        for (size_t l = 0; l < col.seg_len; l++, row += ldw)
            pop += bnn_popcount64(c[l] ^ row[0]);
    }
    *out = k - 2 * (int32_t)pop;
}

void bnn_xnor_dot_portable(bnn_column col, const uint64_t *restrict w, size_t ldw, size_t ncols, int32_t k,
                           int32_t *restrict out)
{
    size_t j = 0;
    for (; j + 4 <= ncols; j += 4)
        xnor_dot4(col, w + j, ldw, k, out + j);
    for (; j < ncols; j++)
        xnor_dot1(col, w + j, ldw, k, out + j);
}

#if !defined(BNN_USE_AVX2) && !defined(BNN_USE_AVX512) && !defined(BNN_USE_NEON)
void bnn_xnor_dot(const bnn_column *cols, size_t ncols, const uint64_t *restrict w, size_t cout, int32_t k,
                  int32_t *restrict out)
{
    for (size_t i = 0; i < ncols; i++)
        bnn_xnor_dot_portable(cols[i], w, cout, cout, k, out + i * cout);
}

void bnn_pack_below(const float *restrict x, size_t pixels, size_t channels, const float *restrict threshold,
                    uint64_t *restrict out)
{
    bnn_pack_below_portable(x, pixels, channels, threshold, out);
}

const char *bnn_kernels_path(void) { return "portable"; }
#endif

/* ---- binary kernels --------------------------------------------------------------------------------------- */

void bnn_bgemm(const uint64_t *restrict a, size_t m, size_t words, const uint64_t *restrict wt, size_t n, int32_t k,
               int32_t *restrict out)
{
    bnn_column cols[BNN_COLUMNS];
    for (size_t i0 = 0; i0 < m; i0 += BNN_COLUMNS) {
        size_t count = m - i0 < BNN_COLUMNS ? m - i0 : BNN_COLUMNS;
        for (size_t j = 0; j < count; j++)
            cols[j] = bnn_column_contiguous(a + (i0 + j) * words, words);
        bnn_xnor_dot(cols, count, wt, n, k, out + i0 * n);
    }
}

/* The 3x3 window at (y0, x0) (its top-left tap; y0 or x0 may be -1) of image b, copied to col tap by tap, row by
 * row: col[(dy * 3 + dx) * words + t]. A tap outside the image is a zero word: a pixel of +1s, the +1 padding.
 * Written as one masking per word rather than copy and fill loops (or a select, which GCC -O3 unswitches into
 * them), which compilers turn into memcpy and memset calls: for a few words each, nine calls cost more than the
 * window's xor-popcounts. */
static void gather_window3x3(const uint64_t *restrict x, bnn_dims in, size_t words, size_t b, ptrdiff_t y0,
                             ptrdiff_t x0, uint64_t *restrict col)
{
    for (ptrdiff_t dy = 0; dy < 3; dy++) {
        for (ptrdiff_t dx = 0; dx < 3; dx++) {
            ptrdiff_t iy = y0 + dy, ix = x0 + dx;
            int inside = iy >= 0 && iy < (ptrdiff_t)in.h && ix >= 0 && ix < (ptrdiff_t)in.w;
            /* outside, src is any valid address, its words masked to 0 */
            const uint64_t *src = inside ? x + ((b * in.h + (size_t)iy) * in.w + (size_t)ix) * words : x;
            const uint64_t keep = (uint64_t)0 - (uint64_t)inside; /* all ones inside, else 0 */
            uint64_t *dst = col + (size_t)(dy * 3 + dx) * words;
            for (size_t t = 0; t < words; t++)
                dst[t] = src[t] & keep;
        }
    }
}

/* The window of output pixel (oy, ox): read in place when it lies inside the image (three runs of 3 * words
 * words, one input row apart), else gathered with its padding into the scratch. */
static bnn_column window3x3(const uint64_t *restrict x, bnn_dims in, size_t words, size_t b, ptrdiff_t y0,
                            ptrdiff_t x0, uint64_t *restrict scratch)
{
    if (y0 >= 0 && x0 >= 0 && y0 + 3 <= (ptrdiff_t)in.h && x0 + 3 <= (ptrdiff_t)in.w) {
        bnn_column inside = {x + ((b * in.h + (size_t)y0) * in.w + (size_t)x0) * words, 3, 3 * words, in.w * words};
        return inside;
    }
    gather_window3x3(x, in, words, b, y0, x0, scratch);
    return bnn_column_contiguous(scratch, 9 * words);
}

/* The column of the output pixel whose window starts at (y0, x0) of image b (the scratch: its own place, if it needs
 * one). */
typedef bnn_column (*column_fn)(const uint64_t *restrict x, bnn_dims in, size_t words, size_t b, ptrdiff_t y0,
                                ptrdiff_t x0, uint64_t *restrict scratch);

/* Every binary conv: per output row, the columns of up to BNN_COLUMNS of its pixels (each given `per_column` words of
 * the scratch) to one call of the inner loop; the output pixel (oy, ox) is a binary GEMM row of its window.
 * Inlined with `column` a constant, so each conv gets its own loop. */
static inline void conv_by_rows(const uint64_t *restrict x, bnn_dims in, size_t kernel, size_t pad, size_t stride,
                                const uint64_t *restrict w, size_t cout, int32_t k, column_fn column,
                                uint64_t *restrict scratch, size_t per_column, size_t oy0, size_t oy1,
                                int32_t *restrict out)
{
    size_t words = bnn_words_for(in.c);
    size_t wo = bnn_conv_out_size(in.w, kernel, stride, pad), rows = oy1 - oy0;
    bnn_column cols[BNN_COLUMNS];
    for (size_t b = 0; b < in.n; b++) {
        for (size_t oy = oy0; oy < oy1; oy++) {
            for (size_t ox0 = 0; ox0 < wo; ox0 += BNN_COLUMNS) {
                size_t count = wo - ox0 < BNN_COLUMNS ? wo - ox0 : BNN_COLUMNS;
                for (size_t j = 0; j < count; j++)
                    cols[j] = column(x, in, words, b, (ptrdiff_t)(oy * stride) - (ptrdiff_t)pad,
                                     (ptrdiff_t)((ox0 + j) * stride) - (ptrdiff_t)pad,
                                     scratch ? scratch + j * per_column : NULL);
                bnn_xnor_dot(cols, count, w, cout, k, out + ((b * rows + oy - oy0) * wo + ox0) * cout);
            }
        }
    }
}

void bnn_bconv3x3_rows(const uint64_t *restrict x, bnn_dims in, const uint64_t *restrict w, size_t cout,
                       size_t stride, uint64_t *restrict scratch, size_t oy0, size_t oy1, int32_t *restrict out)
{
    /* Per output pixel its window as one column of 9 * words words (tap-major, as the weight rows); only border
     * windows are copied (on a 7x7 map 24 of 49), each to its own place in the scratch. */
    conv_by_rows(x, in, 3, 1, stride, w, cout, (int32_t)(9 * in.c), window3x3, scratch, 9 * bnn_words_for(in.c),
                 oy0, oy1, out);
}

void bnn_bconv3x3(const uint64_t *restrict x, bnn_dims in, const uint64_t *restrict w, size_t cout, size_t stride,
                  uint64_t *restrict scratch, int32_t *restrict out)
{
    bnn_bconv3x3_rows(x, in, w, cout, stride, scratch, 0, bnn_conv_out_size(in.h, 3, stride, 1), out);
}

/* The paired window of output pixel (y0 + 1, x0 + 1) of image b: tap t (row by row) in half t % 2 of word t / 2, a
 * tap in the padding 0. */
static void gather_paired3x3(const uint64_t *restrict x, bnn_dims in, size_t b, ptrdiff_t y0, ptrdiff_t x0,
                             uint64_t *restrict col)
{
    const uint64_t *img = x + b * in.h * in.w;
    uint64_t v[9];
    if (y0 >= 0 && x0 >= 0 && y0 + 3 <= (ptrdiff_t)in.h && x0 + 3 <= (ptrdiff_t)in.w) { /* inside: no tests */
        const uint64_t *row = img + (size_t)y0 * in.w + (size_t)x0;
        for (size_t dy = 0; dy < 3; dy++, row += in.w)
            v[3 * dy] = row[0], v[3 * dy + 1] = row[1], v[3 * dy + 2] = row[2];
    } else {
        for (ptrdiff_t dy = 0; dy < 3; dy++) {
            for (ptrdiff_t dx = 0; dx < 3; dx++) {
                ptrdiff_t iy = y0 + dy, ix = x0 + dx;
                int inside = iy >= 0 && iy < (ptrdiff_t)in.h && ix >= 0 && ix < (ptrdiff_t)in.w;
                const uint64_t *src = inside ? img + (size_t)iy * in.w + (size_t)ix : img;
                v[dy * 3 + dx] = *src & ((uint64_t)0 - (uint64_t)inside);
            }
        }
    }
    for (size_t j = 0; j < 4; j++)
        col[j] = v[2 * j] | v[2 * j + 1] << 32;
    col[4] = v[8];
}

/* The paired window as a column: gathered into its five words of the scratch. */
static bnn_column paired_window3x3(const uint64_t *restrict x, bnn_dims in, size_t words, size_t b, ptrdiff_t y0,
                                   ptrdiff_t x0, uint64_t *restrict scratch)
{
    (void)words; /* one word per pixel */
    gather_paired3x3(x, in, b, y0, x0, scratch);
    return bnn_column_contiguous(scratch, 5);
}

void bnn_bconv3x3_paired_rows(const uint64_t *restrict x, bnn_dims in, const uint64_t *restrict wp, size_t cout,
                              size_t stride, uint64_t *restrict scratch, size_t oy0, size_t oy1,
                              int32_t *restrict out)
{
    conv_by_rows(x, in, 3, 1, stride, wp, cout, (int32_t)(9 * in.c), paired_window3x3, scratch, 5, oy0, oy1, out);
}

void bnn_bconv3x3_paired(const uint64_t *restrict x, bnn_dims in, const uint64_t *restrict wp, size_t cout,
                         size_t stride, uint64_t *restrict scratch, int32_t *restrict out)
{
    bnn_bconv3x3_paired_rows(x, in, wp, cout, stride, scratch, 0, bnn_conv_out_size(in.h, 3, stride, 1), out);
}

void bnn_pair_taps3x3(const uint64_t *restrict w, size_t cout, uint64_t *restrict wp)
{
    for (size_t j = 0; j < 5; j++)
        for (size_t co = 0; co < cout; co++)
            wp[j * cout + co] = w[2 * j * cout + co] | (j < 4 ? w[(2 * j + 1) * cout + co] << 32 : 0);
}

/* A pixel's words: already one contiguous column (no padding: no gather, no scratch). */
static bnn_column pixel_column(const uint64_t *restrict x, bnn_dims in, size_t words, size_t b, ptrdiff_t y0,
                               ptrdiff_t x0, uint64_t *restrict scratch)
{
    (void)scratch;
    return bnn_column_contiguous(x + ((b * in.h + (size_t)y0) * in.w + (size_t)x0) * words, words);
}

void bnn_bconv1x1(const uint64_t *restrict x, bnn_dims in, const uint64_t *restrict w, size_t cout, size_t stride,
                  int32_t *restrict out)
{
    conv_by_rows(x, in, 1, 0, stride, w, cout, (int32_t)in.c, pixel_column, NULL, 0, 0,
                 bnn_conv_out_size(in.h, 1, stride, 0), out);
}

/* One pixel's channels (channels) -> its packed words: bit (c % 64) of word (c / 64) set where v[c] < threshold[c];
 * the tail bits of the last word stay 0. */
static void pack_row(const float *restrict v, const float *restrict threshold, size_t channels,
                     uint64_t *restrict out)
{
    for (size_t t = 0; t * BNN_WORD_BITS < channels; t++) {
        size_t end = channels - t * BNN_WORD_BITS < BNN_WORD_BITS ? channels : (t + 1) * BNN_WORD_BITS;
        uint64_t word = 0;
        for (size_t c = t * BNN_WORD_BITS; c < end; c++)
            word |= (uint64_t)(v[c] < threshold[c]) << (c % BNN_WORD_BITS);
        out[t] = word;
    }
}

void bnn_pack_below_portable(const float *restrict x, size_t pixels, size_t channels,
                             const float *restrict threshold, uint64_t *restrict out)
{
    size_t words = bnn_words_for(channels);
    for (size_t p = 0; p < pixels; p++)
        pack_row(x + p * channels, threshold, channels, out + p * words);
}

void bnn_unpack_scaled(const uint64_t *restrict bits, size_t pixels, size_t channels, const float *restrict scale,
                       float *restrict out)
{
    size_t words = bnn_words_for(channels);
    for (size_t p = 0; p < pixels; p++) {
        const uint64_t *row = bits + p * words;
        size_t c = 0;
#ifdef BNN_LANES
        /* BNN_LANES channels at a time: each lane tests its own bit of the (32-bit half of the) word it lies in */
        bnn_u32v lane, ones;
        for (int i = 0; i < BNN_LANES; i++)
            lane[i] = (uint32_t)i, ones[i] = 1;
        const bnn_f32v minus = splatv(-1.0f), plus = splatv(1.0f);
        for (size_t whole = channels / BNN_LANES * BNN_LANES; c < whole; c += BNN_LANES) {
            uint32_t word = (uint32_t)(row[c / BNN_WORD_BITS] >> (c % BNN_WORD_BITS)); /* its next BNN_LANES bits */
            bnn_u32v bit = ((ones * word) >> lane) & ones;
            storev(out + p * channels + c, selectv(bit != 0, minus, plus) * loadv(scale + c));
        }
#endif
        for (; c < channels; c++) {
            /* the reference multiplies the +-1.0f value (not a negation: the same for every finite scale) */
            float sign = (row[c / BNN_WORD_BITS] >> (c % BNN_WORD_BITS)) & 1 ? -1.0f : 1.0f;
            out[p * channels + c] = sign * scale[c];
        }
    }
}

/* ---- float kernels ---------------------------------------------------------------------------------------- */

/* x at (b, iy, ix, ci), or 0 outside the image (zero padding). */
static float tap_or_zero(const float *restrict x, bnn_dims in, size_t b, ptrdiff_t iy, ptrdiff_t ix, size_t ci)
{
    if (iy < 0 || iy >= (ptrdiff_t)in.h || ix < 0 || ix >= (ptrdiff_t)in.w)
        return 0.0f;
    return x[((b * in.h + (size_t)iy) * in.w + (size_t)ix) * in.c + ci];
}

/* The nine inputs of channel ci under the 3x3 window at (y0, x0), row by row, 0 outside the image. */
static inline void taps3x3(const float *restrict x, bnn_dims in, size_t b, ptrdiff_t y0, ptrdiff_t x0,
                           size_t ci, float a[9])
{
    if (y0 >= 0 && x0 >= 0 && y0 + 3 <= (ptrdiff_t)in.h && x0 + 3 <= (ptrdiff_t)in.w) { /* inside: no tests */
        const float *row = x + ((b * in.h + (size_t)y0) * in.w + (size_t)x0) * in.c + ci;
        for (size_t dy = 0; dy < 3; dy++, row += in.w * in.c)
            for (size_t dx = 0; dx < 3; dx++)
                a[dy * 3 + dx] = row[dx * in.c];
        return;
    }
    for (ptrdiff_t dy = 0; dy < 3; dy++)
        for (ptrdiff_t dx = 0; dx < 3; dx++)
            a[dy * 3 + dx] = tap_or_zero(x, in, b, y0 + dy, x0 + dx, ci);
}

/* One output pixel of a 3x3 conv, any channel counts: per input channel its nine inputs gathered once, then one
 * pass over the output channels, each adding its nine products in the reference's order. */
static void conv3x3_pixel(const float *restrict x, bnn_dims in, const float *restrict w, size_t cout,
                          const float *restrict bias, size_t b, ptrdiff_t y0, ptrdiff_t x0, float *restrict o)
{
    size_t tap = in.c * cout; /* distance between two taps' weight rows */
    for (size_t co = 0; co < cout; co++) /* acc = bias: the sum starts there (0 without one), as the reference's */
        o[co] = bias ? bias[co] : 0.0f;
    for (size_t ci = 0; ci < in.c; ci++) {
        float a[9];
        taps3x3(x, in, b, y0, x0, ci, a);
        const float *wc = w + ci * cout;
        for (size_t co = 0; co < cout; co++) {
            float p = a[0] * wc[co];
            for (size_t t = 1; t < 9; t++)
                p = p + a[t] * wc[t * tap + co];
            o[co] = o[co] + p;
        }
    }
}

/* The stems' case, input channels <= STEM_CIN and output channels a multiple of BNN_LANES: the same values in the
 * same order, arranged for speed. Blocks of BNN_LANES output channels are one vector of GNU C's vector extension
 * (GCC and Clang lower it to the target's vector instructions, or to scalars: each lane's operations and their
 * order are the plain loop's), four output pixels at a time: every weight vector loaded once for all four, and four
 * independent chains of additions in flight (each value's own nine additions are a chain that must not be
 * reordered). BNN_LANES is the target's vector width: wider blocks would spill the four pixels' sums out of the
 * registers. */
#define STEM_CIN 4

#ifdef BNN_LANES
/* Where a pixel's taps are: tap (ci, dy, dx) of pixel i at t[i * px + ci * ch + dy * row + dx * col]. Read in place
 * from the image for windows inside it, from a gathered copy with the zero padding for the others. */
typedef struct {
    size_t px, ch, row, col;
} taps_layout;

/* One block of output channels of four output pixels (o: the first pixel's, the others cout apart); wv: the block's
 * 9 * cin weight vectors, tap k of input channel ci at wv[ci * 9 + k]. */
static inline void conv3x3_block_x4(const float *restrict t, taps_layout l, size_t cin, const bnn_f32v *wv,
                                    bnn_f32v b, size_t cout, float *restrict o)
{
    bnn_f32v acc0 = b, acc1 = b, acc2 = b, acc3 = b;
    for (size_t ci = 0; ci < cin; ci++) {
        const float *restrict tc = t + ci * l.ch;
        const bnn_f32v *wc = wv + 9 * ci;
        bnn_f32v p0 = tc[0] * wc[0], p1 = tc[l.px] * wc[0], p2 = tc[2 * l.px] * wc[0], p3 = tc[3 * l.px] * wc[0];
        for (size_t k = 1; k < 9; k++) {
            const float *tk = tc + (k / 3) * l.row + (k % 3) * l.col;
            p0 = p0 + tk[0] * wc[k], p1 = p1 + tk[l.px] * wc[k];
            p2 = p2 + tk[2 * l.px] * wc[k], p3 = p3 + tk[3 * l.px] * wc[k];
        }
        acc0 = acc0 + p0, acc1 = acc1 + p1, acc2 = acc2 + p2, acc3 = acc3 + p3;
    }
    storev(o, acc0);
    storev(o + cout, acc1);
    storev(o + 2 * cout, acc2);
    storev(o + 3 * cout, acc3);
}

/* The same for one output pixel. */
static inline void conv3x3_block_x1(const float *restrict t, taps_layout l, size_t cin, const bnn_f32v *wv,
                                    bnn_f32v b, float *restrict o)
{
    bnn_f32v acc = b;
    for (size_t ci = 0; ci < cin; ci++) {
        const float *restrict tc = t + ci * l.ch;
        const bnn_f32v *wc = wv + 9 * ci;
        bnn_f32v p = tc[0] * wc[0];
        for (size_t k = 1; k < 9; k++)
            p = p + tc[(k / 3) * l.row + (k % 3) * l.col] * wc[k];
        acc = acc + p;
    }
    storev(o, acc);
}

/* One output row (windows from row y0), all its pixels, block by block of output channels: the block's weights
 * loaded once into vectors (registers, as far as they go), then its pixels four at a time. cin is a constant where
 * the caller inlines it, so that the loops over taps and input channels unroll. */
static inline void conv3x3_row(const float *restrict x, bnn_dims in, size_t cin, const float *restrict w,
                               size_t cout, const float *restrict bias, size_t b, ptrdiff_t y0, size_t stride,
                               size_t pad, size_t wo, float *restrict row)
{
    bnn_f32v wv[9 * STEM_CIN];
    float taps[4 * 9 * STEM_CIN];
    for (size_t co = 0; co < cout; co += BNN_LANES) {
        for (size_t ci = 0; ci < cin; ci++)
            for (size_t k = 0; k < 9; k++)
                wv[9 * ci + k] = loadv(w + (k * cin + ci) * cout + co);
        bnn_f32v bv = bias ? loadv(bias + co) : (bnn_f32v){0};
        for (size_t ox = 0; ox < wo; ox += 4) {
            size_t n = wo - ox < 4 ? wo - ox : 4;
            ptrdiff_t x0 = (ptrdiff_t)(ox * stride) - (ptrdiff_t)pad;
            ptrdiff_t x_last = x0 + (ptrdiff_t)((n - 1) * stride); /* the last window's left column */
            const float *t = taps;
            taps_layout l = {9 * cin, 9, 3, 1};
            if (y0 >= 0 && x0 >= 0 && y0 + 3 <= (ptrdiff_t)in.h && x_last + 3 <= (ptrdiff_t)in.w) { /* inside */
                t = x + ((b * in.h + (size_t)y0) * in.w + (size_t)x0) * cin;
                taps_layout inside = {stride * cin, 1, in.w * cin, cin};
                l = inside;
            } else {
                for (size_t i = 0; i < n; i++)
                    for (size_t ci = 0; ci < cin; ci++)
                        taps3x3(x, in, b, y0, x0 + (ptrdiff_t)(i * stride), ci, taps + 9 * (i * cin + ci));
            }
            float *o = row + ox * cout + co;
            if (n == 4)
                conv3x3_block_x4(t, l, cin, wv, bv, cout, o);
            else
                for (size_t i = 0; i < n; i++)
                    conv3x3_block_x1(t + i * l.px, l, cin, wv, bv, o + i * cout);
        }
    }
}
#endif

/* One output pixel of a kh x kw conv, any size: the same order, the taps read where they are. */
static void conv_pixel(const float *restrict x, bnn_dims in, const float *restrict w, size_t kh, size_t kw,
                       size_t cout, const float *restrict bias, size_t b, ptrdiff_t y0, ptrdiff_t x0,
                       float *restrict o)
{
    for (size_t ci = 0; ci < in.c; ci++) {
        for (size_t co = 0; co < cout; co++) {
            float p = 0.0f;
            for (size_t dy = 0; dy < kh; dy++) {
                for (size_t dx = 0; dx < kw; dx++) {
                    float term = tap_or_zero(x, in, b, y0 + (ptrdiff_t)dy, x0 + (ptrdiff_t)dx, ci)
                                 * w[((dy * kw + dx) * in.c + ci) * cout + co];
                    p = (dy == 0 && dx == 0) ? term : p + term; /* the first tap starts the partial sum */
                }
            }
            float acc = ci == 0 ? (bias ? bias[co] : 0.0f) : o[co];
            o[co] = acc + p;
        }
    }
}

void bnn_conv2d_f32_rows(const float *restrict x, bnn_dims in, const float *restrict w, size_t kh, size_t kw,
                         size_t cout, const float *restrict bias, size_t stride, size_t pad, size_t oy0, size_t oy1,
                         float *restrict out)
{
    size_t wo = bnn_conv_out_size(in.w, kw, stride, pad), rows = oy1 - oy0;
    for (size_t b = 0; b < in.n; b++) {
        for (size_t oy = oy0; oy < oy1; oy++) {
            ptrdiff_t y0 = (ptrdiff_t)(oy * stride) - (ptrdiff_t)pad;
            float *row = out + (b * rows + oy - oy0) * wo * cout;
#ifdef BNN_LANES
            if (kh == 3 && kw == 3 && in.c <= STEM_CIN && cout % BNN_LANES == 0) {
                if (in.c == 1) /* grey images; RGB: the channel count a constant too */
                    conv3x3_row(x, in, 1, w, cout, bias, b, y0, stride, pad, wo, row);
                else if (in.c == 3)
                    conv3x3_row(x, in, 3, w, cout, bias, b, y0, stride, pad, wo, row);
                else
                    conv3x3_row(x, in, in.c, w, cout, bias, b, y0, stride, pad, wo, row);
                continue;
            }
#endif
            for (size_t ox = 0; ox < wo; ox++) {
                ptrdiff_t x0 = (ptrdiff_t)(ox * stride) - (ptrdiff_t)pad;
                if (kh == 3 && kw == 3)
                    conv3x3_pixel(x, in, w, cout, bias, b, y0, x0, row + ox * cout);
                else
                    conv_pixel(x, in, w, kh, kw, cout, bias, b, y0, x0, row + ox * cout);
            }
        }
    }
}

void bnn_conv2d_f32(const float *restrict x, bnn_dims in, const float *restrict w, size_t kh, size_t kw,
                    size_t cout, const float *restrict bias, size_t stride, size_t pad, float *restrict out)
{
    bnn_conv2d_f32_rows(x, in, w, kh, kw, cout, bias, stride, pad, 0, bnn_conv_out_size(in.h, kh, stride, pad), out);
}

/* o[ch] = o[ch] / (float)count for ch < c. A power of two divides as a multiplication by its inverse, which is the
 * same operation bit for bit (both round the exact quotient once; 1 / 2^k is exact) and several times faster. */
static inline void divide_by_count(float *restrict o, size_t c, size_t count)
{
    if ((count & (count - 1)) == 0 && count <= (size_t)1 << 24) {
        float inverse = 1.0f / (float)count;
        for (size_t ch = 0; ch < c; ch++)
            o[ch] = o[ch] * inverse;
        return;
    }
    float divisor = (float)count;
    for (size_t ch = 0; ch < c; ch++)
        o[ch] = o[ch] / divisor;
}

/* One output pixel of the pool: the window [y0, y1) x [x0, x1) of image row pointer img (w pixels of c channels). */
static inline void avgpool_pixel(const float *restrict img, size_t w, size_t c, size_t y0, size_t y1, size_t x0,
                                 size_t x1, float *restrict o)
{
    size_t count = (y1 - y0) * (x1 - x0);
    for (size_t ch = 0; ch < c; ch++)
        o[ch] = 0.0f;
    for (size_t iy = y0; iy < y1; iy++) {
        for (size_t ix = x0; ix < x1; ix++) {
            const float *px = img + (iy * w + ix) * c;
            for (size_t ch = 0; ch < c; ch++)
                o[ch] = o[ch] + px[ch];
        }
    }
    divide_by_count(o, c, count);
}

void bnn_avgpool_f32(const float *restrict x, bnn_dims in, size_t s, float *restrict out)
{
    /* The output pixel is the accumulator: each channel's sum runs in its own element, in the window's order. */
    size_t ho = bnn_pool_out_size(in.h, s), wo = bnn_pool_out_size(in.w, s), c = in.c;
    for (size_t b = 0; b < in.n; b++) {
        const float *img = x + b * in.h * in.w * c;
        for (size_t oy = 0; oy < ho; oy++) {
            size_t y1 = (oy + 1) * s < in.h ? (oy + 1) * s : in.h;
            for (size_t ox = 0; ox < wo; ox++) {
                size_t x1 = (ox + 1) * s < in.w ? (ox + 1) * s : in.w;
                float *o = out + ((b * ho + oy) * wo + ox) * c;
                if (c == 32) /* the backbones' channel counts as constants: loops of whole vectors */
                    avgpool_pixel(img, in.w, 32, oy * s, y1, ox * s, x1, o);
                else if (c == 64)
                    avgpool_pixel(img, in.w, 64, oy * s, y1, ox * s, x1, o);
                else
                    avgpool_pixel(img, in.w, c, oy * s, y1, ox * s, x1, o);
            }
        }
    }
}

void bnn_global_avgpool_f32(const float *restrict x, bnn_dims in, float *restrict out)
{
    size_t hw = in.h * in.w, c = in.c;
    for (size_t b = 0; b < in.n; b++) {
        const float *img = x + b * hw * c;
        float *o = out + b * c;
        for (size_t ch = 0; ch < c; ch++)
            o[ch] = img[ch]; /* the sum starts at pixel 0, not at 0.0f (the reference copies it) */
        for (size_t p = 1; p < hw; p++)
            for (size_t ch = 0; ch < c; ch++)
                o[ch] = o[ch] + img[p * c + ch];
        divide_by_count(o, c, hw);
    }
}

/* The epilogue of n consecutive channels c0 .. c0 + n - 1 of one pixel, in the reference's order per value: d and sc
 * point at channel c0's dot and shortcut value, z at its output. A loop without branches or index arithmetic over
 * independent channels, which the compiler vectorizes (each lane keeps the order of its own value). */
static inline void epilogue_run(const bnn_epilogue_params *p, size_t c0, size_t n, const int32_t *restrict d,
                                const float *restrict sc, float *restrict z)
{
    const float *restrict mult = p->mult + c0, *restrict bias = p->bias + c0, *restrict shift_in = p->shift_in + c0;
    const float *restrict slope = p->slope + c0, *restrict shift_out = p->shift_out + c0;
    size_t k = 0;
#ifdef BNN_LANES
    const bnn_f32v zero = {0};
    for (size_t whole = n / BNN_LANES * BNN_LANES; k < whole; k += BNN_LANES) {
        bnn_f32v v = loadv(mult + k) * __builtin_convertvector(loadiv(d + k), bnn_f32v);
        v = v + loadv(bias + k);
        v = v + loadv(sc + k);
        v = v + loadv(shift_in + k);
        v = selectv(v >= zero, v, v * loadv(slope + k));
        storev(z + k, v + loadv(shift_out + k));
    }
#endif
    for (; k < n; k++) {
        float v = mult[k] * (float)d[k]; /* (float)dot is exact: |dot| <= 9 * cin < 2^24 */
        v = v + bias[k];
        v = v + sc[k];
        v = v + shift_in[k];
        float negative = v * slope[k]; /* made either way: a select, not a branch on the data */
        v = v >= 0.0f ? v : negative;
        z[k] = v + shift_out[k];
    }
}

/* The epilogue of one pixel's channels [c0, c0 + n) into z: runs of epilogue_run, the duplicate shortcut (output
 * channel co reads co % shortcut_channels) as runs over the shortcut's channels, not a division per value. */
static void epilogue_pixel(const bnn_epilogue_params *p, const int32_t *restrict d, const float *restrict sc,
                           size_t shortcut_channels, size_t c0, size_t n, float *restrict z)
{
    size_t s = c0 ? c0 % shortcut_channels : 0; /* the shortcut channel of c0; each later run starts at 0 */
    for (size_t k = 0; k < n; s = 0) {
        size_t co = c0 + k;
        size_t run = n - k < shortcut_channels - s ? n - k : shortcut_channels - s;
        epilogue_run(p, co, run, d + co, sc + s, z + k);
        k += run;
    }
}

/* Channels [c0, c0 + n) of every pixel, n <= shortcut_channels, all of them reading the shortcut from channel 0. */
static inline void epilogue_pixels(const bnn_epilogue_params *p, size_t c0, size_t n, size_t pixels, size_t channels,
                                   size_t shortcut_channels, const int32_t *restrict dot,
                                   const float *restrict shortcut, float *restrict real)
{
    for (size_t px = 0; px < pixels; px++)
        epilogue_run(p, c0, n, dot + px * channels + c0, shortcut + px * shortcut_channels,
                     real + px * channels + c0);
}

void bnn_block_epilogue(const int32_t *restrict dot, size_t pixels, size_t channels, const bnn_epilogue_params *p,
                        const float *restrict shortcut, size_t shortcut_channels, float *restrict real,
                        uint64_t *restrict bits)
{
    if (real) { /* every value into the real output, then the bits of all pixels in one threshold test */
        /* run by run of shortcut_channels output channels (one run unless the shortcut is duplicated), all pixels
         * of a run in one loop: the run's parameters stay in registers, its length a constant for the backbones' */
        for (size_t c0 = 0; c0 < channels; c0 += shortcut_channels) {
            if (shortcut_channels == 32)
                epilogue_pixels(p, c0, 32, pixels, channels, 32, dot, shortcut, real);
            else if (shortcut_channels == 64)
                epilogue_pixels(p, c0, 64, pixels, channels, 64, dot, shortcut, real);
            else
                epilogue_pixels(p, c0, shortcut_channels, pixels, channels, shortcut_channels, dot, shortcut, real);
        }
        if (bits)
            bnn_pack_below(real, pixels, channels, p->threshold, bits);
        return;
    }
    /* Bits only: the values of EPILOGUE_CHUNK channels at a time on the stack (a multiple of 64, so that a chunk's
     * bits are whole words), then their threshold test. */
    enum { EPILOGUE_CHUNK = 256 };
    size_t words = bnn_words_for(channels);
    float chunk[EPILOGUE_CHUNK];
    for (size_t px = 0; px < pixels; px++) {
        for (size_t c0 = 0; c0 < channels; c0 += EPILOGUE_CHUNK) {
            size_t n = channels - c0 < EPILOGUE_CHUNK ? channels - c0 : EPILOGUE_CHUNK;
            epilogue_pixel(p, dot + px * channels, shortcut + px * shortcut_channels, shortcut_channels, c0, n,
                           chunk);
            if (bits)
                bnn_pack_below(chunk, 1, n, p->threshold + c0, bits + px * words + c0 / BNN_WORD_BITS);
        }
    }
}

void bnn_shortcut_affine(const int32_t *restrict dot, size_t pixels, size_t channels, const float *restrict mult,
                         const float *restrict bias, float *restrict out)
{
    for (size_t px = 0; px < pixels; px++) {
        for (size_t c = 0; c < channels; c++) {
            /* bnncl.device.kernels.shortcut_affine: the dot to float32 (exact below 2^24), the product rounded,
             * then the sum, in float32 (the epilogue's order) */
            float v = (float)dot[px * channels + c] * mult[c];
            v = v + bias[c];
            out[px * channels + c] = v;
        }
    }
}

/* ---- the head --------------------------------------------------------------------------------------------- */

void bnn_head_f32(const float *restrict x, size_t n, size_t features, const float *restrict w, size_t classes,
                  float *restrict out)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < classes; c++) {
            const float *xi = x + i * features, *wc = w + c * features;
            float acc = 0.0f;
            for (size_t f = 0; f < features; f++)
                acc = acc + xi[f] * wc[f];
            out[i * classes + c] = acc;
        }
    }
}
