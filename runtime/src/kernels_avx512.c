/*
 * kernels_avx512.c -- bnn_xnor_dot and bnn_pack_below with AVX-512F + VPOPCNTDQ (build with -DBNN_USE_AVX512 -mavx512f
 * -mavx512vpopcntdq -mpopcnt; Ice Lake and later, Zen 4 and later).
 *
 * Vectorized over output channels as in kernels_avx2.c, eight per 512-bit vector, and counted with vpopcntq, which
 * gives each 64-bit lane its own count directly: per eight words, one xor (with the weights from memory), one
 * popcount, one add. Four vectors (32 output channels) share each broadcast input word.
 */
#include "bnn_kernels.h"

#ifdef BNN_USE_AVX512

#if !defined(__AVX512F__) || !defined(__AVX512VPOPCNTDQ__)
#error "kernels_avx512.c needs -mavx512f -mavx512vpopcntdq"
#endif

#include <immintrin.h>

const char *bnn_kernels_path(void) { return "avx512"; }

/* out[i] = k - 2 * lane i of `sum`, for the 8 lanes (the counts are < 2^31, so the low halves suffice). */
static inline void store_dots(__m512i sum, int32_t k, int32_t *out)
{
    __m256i pop = _mm512_cvtepi64_epi32(sum);
    __m256i dot = _mm256_sub_epi32(_mm256_set1_epi32(k), _mm256_slli_epi32(pop, 1));
    _mm256_storeu_si256((__m256i *)out, dot);
}

static inline __m512i xor_popcount(__m512i xv, const uint64_t *w)
{
    return _mm512_popcnt_epi64(_mm512_xor_si512(xv, _mm512_loadu_si512((const void *)w)));
}

/* 32 output channels (four vectors), the column's runs `len` words long: inlined with the windows' common run
 * lengths as constants (3 and 6 words: a 3x3 window of 64 and of 128 input channels; 5: a paired window), the loop
 * over a run unrolls. */
static inline void dot32_runs(bnn_column col, size_t len, const uint64_t *w, size_t ldw, int32_t k, int32_t *out)
{
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    const uint64_t *row = w;
    for (size_t s = 0; s < col.nseg; s++) {
        const uint64_t *c = col.base + s * col.seg_stride;
        for (size_t l = 0; l < len; l++, row += ldw) {
            const __m512i xv = _mm512_set1_epi64((long long)c[l]);
            s0 = _mm512_add_epi64(s0, xor_popcount(xv, row));
            s1 = _mm512_add_epi64(s1, xor_popcount(xv, row + 8));
            s2 = _mm512_add_epi64(s2, xor_popcount(xv, row + 16));
            s3 = _mm512_add_epi64(s3, xor_popcount(xv, row + 24));
        }
    }
    store_dots(s0, k, out);
    store_dots(s1, k, out + 8);
    store_dots(s2, k, out + 16);
    store_dots(s3, k, out + 24);
}

static void dot32(bnn_column col, const uint64_t *w, size_t ldw, int32_t k, int32_t *out)
{
    if (col.seg_len == 3)
        dot32_runs(col, 3, w, ldw, k, out);
    else if (col.seg_len == 5) /* a paired window (bnn_bconv3x3_paired) */
        dot32_runs(col, 5, w, ldw, k, out);
    else if (col.seg_len == 6)
        dot32_runs(col, 6, w, ldw, k, out);
    else
        dot32_runs(col, col.seg_len, w, ldw, k, out);
}

/* 8 output channels (one vector). */
static void dot8(bnn_column col, const uint64_t *w, size_t ldw, int32_t k, int32_t *out)
{
    __m512i sum = _mm512_setzero_si512();
    const uint64_t *row = w;
    for (size_t s = 0; s < col.nseg; s++) {
        const uint64_t *c = col.base + s * col.seg_stride;
        for (size_t l = 0; l < col.seg_len; l++, row += ldw)
            sum = _mm512_add_epi64(sum, xor_popcount(_mm512_set1_epi64((long long)c[l]), row));
    }
    store_dots(sum, k, out);
}

/* One column against every output channel. */
static inline void xnor_dot_column(bnn_column col, const uint64_t *restrict w, size_t cout, int32_t k,
                                   int32_t *restrict out)
{
    size_t co = 0;
    for (; co + 32 <= cout; co += 32)
        dot32(col, w + co, cout, k, out + co);
    for (; co + 8 <= cout; co += 8)
        dot8(col, w + co, cout, k, out + co);
    if (co < cout)
        bnn_xnor_dot_portable(col, w + co, cout, cout - co, k, out + co);
}

void bnn_xnor_dot(const bnn_column *cols, size_t ncols, const uint64_t *restrict w, size_t cout, int32_t k,
                  int32_t *restrict out)
{
    for (size_t i = 0; i < ncols; i++)
        xnor_dot_column(cols[i], w, cout, k, out + i * cout);
}

/* The bits of one pixel of `groups` whole groups of 16 channels (groups a constant where inlined: the loop unrolls). */
static inline void pack_pixel16(const float *x, const float *threshold, size_t groups, uint64_t *out)
{
    for (size_t t = 0; t < (groups + 3) / 4; t++) {
        uint64_t word = 0;
        for (size_t g = 4 * t; g < groups && g < 4 * t + 4; g++) {
            __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + 16 * g), _mm512_loadu_ps(threshold + 16 * g),
                                             _CMP_LT_OQ);
            word |= (uint64_t)m << (16 * (g % 4));
        }
        out[t] = word;
    }
}

/* The threshold test, 16 channels per compare: the compare's mask register is the bits themselves. Channel counts
 * in whole groups of 16 take the unmasked form (the backbones' 32, 64 and 128 with the group count a constant); any
 * other ends in a masked compare of masked loads (the lanes beyond `channels` neither read nor set). */
void bnn_pack_below(const float *restrict x, size_t pixels, size_t channels, const float *restrict threshold,
                    uint64_t *restrict out)
{
    size_t words = bnn_words_for(channels), groups = (channels + 15) / 16;
    if (channels % 16 == 0) {
        for (size_t p = 0; p < pixels; p++, x += channels, out += words) {
            if (groups == 2)
                pack_pixel16(x, threshold, 2, out);
            else if (groups == 4)
                pack_pixel16(x, threshold, 4, out);
            else if (groups == 8)
                pack_pixel16(x, threshold, 8, out);
            else
                pack_pixel16(x, threshold, groups, out);
        }
        return;
    }
    const __mmask16 all = (__mmask16)0xffff, last = (__mmask16)((1u << (channels % 16)) - 1);
    for (size_t p = 0; p < pixels; p++, x += channels, out += words) {
        for (size_t t = 0; t < words; t++) {
            uint64_t word = 0;
            size_t g1 = 4 * t + 4 < groups ? 4 * t + 4 : groups;
            for (size_t g = 4 * t; g < g1; g++) {
                __mmask16 lanes = g + 1 == groups ? last : all;
                __m512 v = _mm512_maskz_loadu_ps(lanes, x + 16 * g);
                __m512 th = _mm512_maskz_loadu_ps(lanes, threshold + 16 * g);
                word |= (uint64_t)_mm512_mask_cmp_ps_mask(lanes, v, th, _CMP_LT_OQ) << (16 * (g % 4));
            }
            out[t] = word;
        }
    }
}

#else
typedef int bnn_avx512_not_selected; /* ISO C wants a declaration in every translation unit */
#endif
