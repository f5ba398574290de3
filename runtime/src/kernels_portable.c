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
void bnn_xnor_dot(bnn_column col, const uint64_t *restrict w, size_t cout, int32_t k, int32_t *restrict out)
{
    bnn_xnor_dot_portable(col, w, cout, cout, k, out);
}

const char *bnn_kernels_path(void) { return "portable"; }
#endif

/* ---- binary kernels --------------------------------------------------------------------------------------- */

void bnn_bgemm(const uint64_t *restrict a, size_t m, size_t words, const uint64_t *restrict wt, size_t n, int32_t k,
               int32_t *restrict out)
{
    for (size_t i = 0; i < m; i++)
        bnn_xnor_dot(bnn_column_contiguous(a + i * words, words), wt, n, k, out + i * n);
}

/* The 3x3 window at (y0, x0) (its top-left tap; y0 or x0 may be -1) of image b, copied to col tap by tap, row by
 * row: col[(dy * 3 + dx) * words + t]. A tap outside the image is a zero word: a pixel of +1s, the +1 padding.
 * Written as one select per word rather than copy and fill loops, which compilers turn into memcpy and memset
 * calls: for a few words each, nine calls cost more than the window's xor-popcounts. */
static void gather_window3x3(const uint64_t *restrict x, bnn_dims in, size_t words, size_t b, ptrdiff_t y0,
                             ptrdiff_t x0, uint64_t *restrict col)
{
    for (ptrdiff_t dy = 0; dy < 3; dy++) {
        for (ptrdiff_t dx = 0; dx < 3; dx++) {
            ptrdiff_t iy = y0 + dy, ix = x0 + dx;
            int inside = iy >= 0 && iy < (ptrdiff_t)in.h && ix >= 0 && ix < (ptrdiff_t)in.w;
            /* outside, src is any valid address (never used): the select may then load it, harmlessly */
            const uint64_t *src = inside ? x + ((b * in.h + (size_t)iy) * in.w + (size_t)ix) * words : x;
            uint64_t *dst = col + (size_t)(dy * 3 + dx) * words;
            for (size_t t = 0; t < words; t++)
                dst[t] = inside ? src[t] : 0;
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

void bnn_bconv3x3(const uint64_t *restrict x, bnn_dims in, const uint64_t *restrict w, size_t cout, size_t stride,
                  uint64_t *restrict scratch, int32_t *restrict out)
{
    /* Per output pixel: its window as one column of 9 * words words (tap-major, as the weight rows), then one
     * inner loop over all output channels: the conv is a binary GEMM row per pixel. Only border pixels are copied;
     * on a 7x7 map that is 24 of 49. */
    size_t words = bnn_words_for(in.c);
    size_t ho = bnn_conv_out_size(in.h, 3, stride, 1), wo = bnn_conv_out_size(in.w, 3, stride, 1);
    int32_t k = (int32_t)(9 * in.c);
    for (size_t b = 0; b < in.n; b++) {
        for (size_t oy = 0; oy < ho; oy++) {
            for (size_t ox = 0; ox < wo; ox++) {
                bnn_column col = window3x3(x, in, words, b, (ptrdiff_t)(oy * stride) - 1,
                                           (ptrdiff_t)(ox * stride) - 1, scratch);
                bnn_xnor_dot(col, w, cout, k, out + ((b * ho + oy) * wo + ox) * cout);
            }
        }
    }
}

void bnn_bconv1x1(const uint64_t *restrict x, bnn_dims in, const uint64_t *restrict w, size_t cout, size_t stride,
                  int32_t *restrict out)
{
    /* Without padding a pixel's words are already one contiguous column: no gather, no scratch. */
    size_t words = bnn_words_for(in.c);
    size_t ho = bnn_conv_out_size(in.h, 1, stride, 0), wo = bnn_conv_out_size(in.w, 1, stride, 0);
    for (size_t b = 0; b < in.n; b++) {
        for (size_t oy = 0; oy < ho; oy++) {
            for (size_t ox = 0; ox < wo; ox++) {
                const uint64_t *pixel = x + ((b * in.h + oy * stride) * in.w + ox * stride) * words;
                bnn_xnor_dot(bnn_column_contiguous(pixel, words), w, cout, (int32_t)in.c,
                             out + ((b * ho + oy) * wo + ox) * cout);
            }
        }
    }
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

void bnn_pack_below(const float *restrict x, size_t pixels, size_t channels, const float *restrict threshold,
                    uint64_t *restrict out)
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
        for (size_t c = 0; c < channels; c++) {
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

/* One output pixel of a 3x3 conv (the stem's shape): per input channel its nine inputs loaded once, then one pass
 * over the output channels, each adding its nine products in the reference's order. */
static void conv3x3_pixel(const float *restrict x, bnn_dims in, const float *restrict w, size_t cout,
                          const float *restrict bias, size_t b, ptrdiff_t y0, ptrdiff_t x0, float *restrict o)
{
    size_t tap = in.c * cout; /* distance between two taps' weight rows */
    for (size_t co = 0; co < cout; co++) /* acc = bias: the sum starts there (0 without one), as the reference's */
        o[co] = bias ? bias[co] : 0.0f;
    for (size_t ci = 0; ci < in.c; ci++) {
        float a0 = tap_or_zero(x, in, b, y0, x0, ci), a1 = tap_or_zero(x, in, b, y0, x0 + 1, ci);
        float a2 = tap_or_zero(x, in, b, y0, x0 + 2, ci), a3 = tap_or_zero(x, in, b, y0 + 1, x0, ci);
        float a4 = tap_or_zero(x, in, b, y0 + 1, x0 + 1, ci), a5 = tap_or_zero(x, in, b, y0 + 1, x0 + 2, ci);
        float a6 = tap_or_zero(x, in, b, y0 + 2, x0, ci), a7 = tap_or_zero(x, in, b, y0 + 2, x0 + 1, ci);
        float a8 = tap_or_zero(x, in, b, y0 + 2, x0 + 2, ci);
        const float *wc = w + ci * cout;
        for (size_t co = 0; co < cout; co++) {
            float p = a0 * wc[co];
            p = p + a1 * wc[tap + co];
            p = p + a2 * wc[2 * tap + co];
            p = p + a3 * wc[3 * tap + co];
            p = p + a4 * wc[4 * tap + co];
            p = p + a5 * wc[5 * tap + co];
            p = p + a6 * wc[6 * tap + co];
            p = p + a7 * wc[7 * tap + co];
            p = p + a8 * wc[8 * tap + co];
            o[co] = o[co] + p; /* a loop over independent output channels: the compiler may vectorize it */
        }
    }
}

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

void bnn_conv2d_f32(const float *restrict x, bnn_dims in, const float *restrict w, size_t kh, size_t kw,
                    size_t cout, const float *restrict bias, size_t stride, size_t pad, float *restrict out)
{
    size_t ho = bnn_conv_out_size(in.h, kh, stride, pad), wo = bnn_conv_out_size(in.w, kw, stride, pad);
    for (size_t b = 0; b < in.n; b++) {
        for (size_t oy = 0; oy < ho; oy++) {
            for (size_t ox = 0; ox < wo; ox++) {
                ptrdiff_t y0 = (ptrdiff_t)(oy * stride) - (ptrdiff_t)pad;
                ptrdiff_t x0 = (ptrdiff_t)(ox * stride) - (ptrdiff_t)pad;
                float *o = out + ((b * ho + oy) * wo + ox) * cout;
                if (kh == 3 && kw == 3)
                    conv3x3_pixel(x, in, w, cout, bias, b, y0, x0, o);
                else
                    conv_pixel(x, in, w, kh, kw, cout, bias, b, y0, x0, o);
            }
        }
    }
}

void bnn_avgpool_f32(const float *restrict x, bnn_dims in, size_t s, float *restrict out)
{
    /* The output pixel is the accumulator: each channel's sum runs in its own element, in the window's order. */
    size_t ho = bnn_pool_out_size(in.h, s), wo = bnn_pool_out_size(in.w, s), c = in.c;
    for (size_t b = 0; b < in.n; b++) {
        for (size_t oy = 0; oy < ho; oy++) {
            size_t y1 = (oy + 1) * s < in.h ? (oy + 1) * s : in.h;
            for (size_t ox = 0; ox < wo; ox++) {
                size_t x1 = (ox + 1) * s < in.w ? (ox + 1) * s : in.w;
                float *o = out + ((b * ho + oy) * wo + ox) * c;
                for (size_t ch = 0; ch < c; ch++)
                    o[ch] = 0.0f;
                for (size_t iy = oy * s; iy < y1; iy++) {
                    for (size_t ix = ox * s; ix < x1; ix++) {
                        const float *px = x + ((b * in.h + iy) * in.w + ix) * c;
                        for (size_t ch = 0; ch < c; ch++)
                            o[ch] = o[ch] + px[ch];
                    }
                }
                float count = (float)((y1 - oy * s) * (x1 - ox * s));
                for (size_t ch = 0; ch < c; ch++)
                    o[ch] = o[ch] / count;
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
        float count = (float)hw;
        for (size_t ch = 0; ch < c; ch++)
            o[ch] = o[ch] / count;
    }
}

/* The epilogue of one value, in the reference's order. */
static float epilogue_value(const bnn_epilogue_params *p, size_t co, int32_t dot, float shortcut)
{
    float z = p->mult[co] * (float)dot; /* (float)dot is exact: |dot| <= 9 * cin < 2^24 */
    z = z + p->bias[co];
    z = z + shortcut;
    z = z + p->shift_in[co];
    float negative = z * p->slope[co]; /* made either way: a select, not a branch on the data */
    z = z >= 0.0f ? z : negative;
    return z + p->shift_out[co];
}

/* The epilogue of channels [c0, c0 + n) of one pixel into z (n <= EPILOGUE_CHUNK), in the reference's order per
 * value; a loop without branches over independent channels (the compiler may vectorize it). */
enum { EPILOGUE_CHUNK = 256 };

static void epilogue_chunk(const bnn_epilogue_params *p, const int32_t *restrict d, const float *restrict sc,
                           size_t shortcut_channels, size_t c0, size_t n, float *restrict z)
{
    if (shortcut_channels >= c0 + n) { /* the shortcut has these channels itself (identity, binary) */
        for (size_t k = 0; k < n; k++)
            z[k] = epilogue_value(p, c0 + k, d[c0 + k], sc[c0 + k]);
        return;
    }
    for (size_t k = 0; k < n; k++) /* the duplicate shortcut: output channel co reads co % shortcut_channels */
        z[k] = epilogue_value(p, c0 + k, d[c0 + k], sc[(c0 + k) % shortcut_channels]);
}

void bnn_block_epilogue(const int32_t *restrict dot, size_t pixels, size_t channels, const bnn_epilogue_params *p,
                        const float *restrict shortcut, size_t shortcut_channels, float *restrict real,
                        uint64_t *restrict bits)
{
    /* Each value is made once and goes to the real output, the next op's bits, or both; channels in chunks of
     * EPILOGUE_CHUNK (a multiple of 64), so that a chunk's bits are whole words. */
    size_t words = bnn_words_for(channels);
    float z[EPILOGUE_CHUNK];
    for (size_t px = 0; px < pixels; px++) {
        const int32_t *d = dot + px * channels;
        const float *sc = shortcut + px * shortcut_channels;
        for (size_t c0 = 0; c0 < channels; c0 += EPILOGUE_CHUNK) {
            size_t n = channels - c0 < EPILOGUE_CHUNK ? channels - c0 : EPILOGUE_CHUNK;
            epilogue_chunk(p, d, sc, shortcut_channels, c0, n, z);
            if (real)
                for (size_t k = 0; k < n; k++)
                    real[px * channels + c0 + k] = z[k];
            if (bits) {
                for (size_t t = 0; t * BNN_WORD_BITS < n; t++) {
                    uint64_t word = 0;
                    size_t end = n - t * BNN_WORD_BITS < BNN_WORD_BITS ? n - t * BNN_WORD_BITS : BNN_WORD_BITS;
                    for (size_t j = 0; j < end; j++)
                        word |= (uint64_t)(z[t * BNN_WORD_BITS + j] < p->threshold[c0 + t * BNN_WORD_BITS + j]) << j;
                    bits[px * words + (c0 / BNN_WORD_BITS) + t] = word;
                }
            }
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
