/*
 * kernels_avx2.c -- bnn_xnor_dot and bnn_pack_below with AVX2 (build with -DBNN_USE_AVX2 -mavx2 -mpopcnt).
 *
 * Vectorized over output channels: the weight matrix is (len, cout), so one 256-bit load holds word l of four
 * consecutive output channels, each in its own 64-bit lane, and the input word is broadcast to all four. The count
 * is per lane, so the popcount must be too. AVX2 has no vector popcount: each byte is counted with two 16-entry
 * table lookups (vpshufb on the low and the high nibble, Mula's method), the byte counts of up to 31 words of one
 * run of the column are summed in bytes (at most 8 per word: 31 * 8 = 248 < 256), then folded into the 64-bit
 * lanes with one vpsadbw.
 *
 * Why not Harley-Seal here: its carry-save adders pay off only over a long stream of vectors summed into one count.
 * In a conv the stream per output channel is one window, 9 * words vectors (18 for 128 channels), and the adders'
 * state would have to be popcounted at the end of every window, which costs what it saves. The benchmark's
 * popcount-peak loop (bench/bench_bconv.c) is Harley-Seal, to show what is left: on Zen 4 the conv runs at 70-90 %
 * of it.
 */
#include "bnn_kernels.h"

#ifdef BNN_USE_AVX2

#ifndef __AVX2__
#error "kernels_avx2.c needs -mavx2"
#endif

#include <immintrin.h>

const char *bnn_kernels_path(void) { return "avx2"; }

#define MAX_BYTE_STEPS 31 /* words whose byte counts fit in a byte: 31 * 8 = 248 */

/* Per-byte popcount of v (each byte 0..8). */
static inline __m256i popcount_bytes(__m256i v)
{
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(v, low4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
}

/* out[i] = k - 2 * lane i of the 64-bit counts `sum`, for the `count` lanes. */
static inline void store_dots(__m256i sum, int32_t k, size_t count, int32_t *out)
{
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, sum);
    for (size_t i = 0; i < count; i++)
        out[i] = k - 2 * (int32_t)lanes[i];
}

/* The byte counts of up to MAX_BYTE_STEPS words of one run of the column, for 16 output channels (four vectors): each
 * broadcast input word is used four times. b[j] += the per-byte popcounts of (c[l] xor row l, vector j). */
static inline void steps16(const uint64_t *c, size_t n, const uint64_t *w, size_t ldw, __m256i b[4])
{
    __m256i b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
    for (size_t l = 0; l < n; l++, w += ldw) {
        const __m256i xv = _mm256_set1_epi64x((long long)c[l]);
        const __m256i *row = (const __m256i *)w;
        b0 = _mm256_add_epi8(b0, popcount_bytes(_mm256_xor_si256(xv, _mm256_loadu_si256(row))));
        b1 = _mm256_add_epi8(b1, popcount_bytes(_mm256_xor_si256(xv, _mm256_loadu_si256(row + 1))));
        b2 = _mm256_add_epi8(b2, popcount_bytes(_mm256_xor_si256(xv, _mm256_loadu_si256(row + 2))));
        b3 = _mm256_add_epi8(b3, popcount_bytes(_mm256_xor_si256(xv, _mm256_loadu_si256(row + 3))));
    }
    b[0] = b0, b[1] = b1, b[2] = b2, b[3] = b3;
}

static void dot16(bnn_column col, const uint64_t *w, size_t ldw, int32_t k, int32_t *out)
{
    /* The byte counts run on across the column's runs (a window's three) until MAX_BYTE_STEPS words are in them,
     * then fold into the 64-bit sums: one fold per 31 words, not one per run. */
    const __m256i zero = _mm256_setzero_si256();
    __m256i sum[4] = {zero, zero, zero, zero}, bytes[4] = {zero, zero, zero, zero};
    size_t counted = 0; /* words in `bytes` */
    for (size_t s = 0; s < col.nseg; s++) {
        const uint64_t *c = col.base + s * col.seg_stride;
        for (size_t l0 = 0; l0 < col.seg_len;) {
            size_t n = col.seg_len - l0 < MAX_BYTE_STEPS - counted ? col.seg_len - l0 : MAX_BYTE_STEPS - counted;
            steps16(c + l0, n, w + (s * col.seg_len + l0) * ldw, ldw, bytes);
            l0 += n, counted += n;
            if (counted == MAX_BYTE_STEPS) {
                for (int j = 0; j < 4; j++) /* the 8 byte counts of each 64-bit lane, summed into the lane */
                    sum[j] = _mm256_add_epi64(sum[j], _mm256_sad_epu8(bytes[j], zero)), bytes[j] = zero;
                counted = 0;
            }
        }
    }
    for (int j = 0; j < 4; j++) {
        sum[j] = _mm256_add_epi64(sum[j], _mm256_sad_epu8(bytes[j], zero));
        store_dots(sum[j], k, 4, out + 4 * j);
    }
}

/* 4 output channels (one vector). */
static void dot4(bnn_column col, const uint64_t *w, size_t ldw, int32_t k, int32_t *out)
{
    const __m256i zero = _mm256_setzero_si256();
    __m256i sum = zero;
    for (size_t s = 0; s < col.nseg; s++) {
        const uint64_t *c = col.base + s * col.seg_stride;
        for (size_t l0 = 0; l0 < col.seg_len; l0 += MAX_BYTE_STEPS) {
            size_t l1 = col.seg_len - l0 < MAX_BYTE_STEPS ? col.seg_len : l0 + MAX_BYTE_STEPS;
            __m256i bytes = zero;
            for (size_t l = l0; l < l1; l++) {
                const __m256i xv = _mm256_set1_epi64x((long long)c[l]);
                __m256i wv = _mm256_loadu_si256((const __m256i *)(w + (s * col.seg_len + l) * ldw));
                bytes = _mm256_add_epi8(bytes, popcount_bytes(_mm256_xor_si256(xv, wv)));
            }
            sum = _mm256_add_epi64(sum, _mm256_sad_epu8(bytes, zero));
        }
    }
    store_dots(sum, k, 4, out);
}

/* One column against every output channel. */
static inline void xnor_dot_column(bnn_column col, const uint64_t *restrict w, size_t cout, int32_t k,
                                   int32_t *restrict out)
{
    size_t co = 0;
    for (; co + 16 <= cout; co += 16)
        dot16(col, w + co, cout, k, out + co);
    for (; co + 4 <= cout; co += 4)
        dot4(col, w + co, cout, k, out + co);
    if (co < cout)
        bnn_xnor_dot_portable(col, w + co, cout, cout - co, k, out + co);
}

void bnn_xnor_dot(const bnn_column *cols, size_t ncols, const uint64_t *restrict w, size_t cout, int32_t k,
                  int32_t *restrict out)
{
    for (size_t i = 0; i < ncols; i++)
        xnor_dot_column(cols[i], w, cout, k, out + i * cout);
}

/* The bits of one pixel's channels [c, end) of word t (c = 64 t), 8 per compare (vcmpps, its lanes' signs collected
 * by vmovmskps), the channels after the last whole 8 one by one. */
static inline uint64_t pack_word(const float *x, const float *threshold, size_t c, size_t end)
{
    uint64_t word = 0;
    size_t whole = c + (end - c) / 8 * 8;
    for (; c < whole; c += 8) {
        __m256 lt = _mm256_cmp_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(threshold + c), _CMP_LT_OQ);
        word |= (uint64_t)(unsigned)_mm256_movemask_ps(lt) << (c % 64);
    }
    for (; c < end; c++)
        word |= (uint64_t)(x[c] < threshold[c]) << (c % 64);
    return word;
}

/* The threshold test. */
void bnn_pack_below(const float *restrict x, size_t pixels, size_t channels, const float *restrict threshold,
                    uint64_t *restrict out)
{
    bnn_pack_below_by_words(x, pixels, channels, threshold, out, pack_word);
}

#else
typedef int bnn_avx2_not_selected; /* ISO C wants a declaration in every translation unit */
#endif
