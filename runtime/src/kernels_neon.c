/*
 * kernels_neon.c -- bnn_xnor_dot and bnn_pack_below with NEON / Advanced SIMD (build with -DBNN_USE_NEON; AArch64, where NEON is
 * always present, or 32-bit ARM with -mfpu=neon).
 *
 * Vectorized over output channels as in kernels_avx2.c, two per 128-bit vector. vcntq_u8 counts each byte; the byte
 * counts of up to 31 words are summed in bytes (31 * 8 = 248 < 256), then widened pairwise into the two 64-bit lanes
 * (vpaddlq_u8, vpaddlq_u16, and vpadalq_u32 accumulating into the 64-bit sums). Four vectors (eight output
 * channels) share each broadcast input word.
 */
#include "bnn_kernels.h"

#ifdef BNN_USE_NEON

#if !defined(__ARM_NEON) && !defined(__ARM_NEON__)
#error "kernels_neon.c needs NEON (AArch64, or -mfpu=neon on 32-bit ARM)"
#endif

#include <arm_neon.h>

const char *bnn_kernels_path(void) { return "neon"; }

#define MAX_BYTE_STEPS 31 /* words whose byte counts fit in a byte: 31 * 8 = 248 */

static inline uint8x16_t xor_popcount_bytes(uint64x2_t xv, const uint64_t *w)
{
    return vcntq_u8(vreinterpretq_u8_u64(veorq_u64(xv, vld1q_u64(w))));
}

/* Add the byte counts of each 64-bit lane of `bytes` to that lane of `sum`. */
static inline uint64x2_t fold_bytes(uint64x2_t sum, uint8x16_t bytes)
{
    return vpadalq_u32(sum, vpaddlq_u16(vpaddlq_u8(bytes)));
}

/* out[i] = k - 2 * lane i of `sum`, i < 2. */
static inline void store_dots(uint64x2_t sum, int32_t k, int32_t *out)
{
    out[0] = k - 2 * (int32_t)vgetq_lane_u64(sum, 0);
    out[1] = k - 2 * (int32_t)vgetq_lane_u64(sum, 1);
}

/* The byte counts of up to MAX_BYTE_STEPS words of one run of the column, for 8 output channels (four vectors). */
static inline void steps8(const uint64_t *c, size_t n, const uint64_t *w, size_t ldw, uint8x16_t b[4])
{
    uint8x16_t b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
    for (size_t l = 0; l < n; l++, w += ldw) {
        const uint64x2_t xv = vdupq_n_u64(c[l]);
        b0 = vaddq_u8(b0, xor_popcount_bytes(xv, w));
        b1 = vaddq_u8(b1, xor_popcount_bytes(xv, w + 2));
        b2 = vaddq_u8(b2, xor_popcount_bytes(xv, w + 4));
        b3 = vaddq_u8(b3, xor_popcount_bytes(xv, w + 6));
    }
    b[0] = b0, b[1] = b1, b[2] = b2, b[3] = b3;
}

static void dot8(bnn_column col, const uint64_t *w, size_t ldw, int32_t k, int32_t *out)
{
    uint64x2_t sum[4] = {vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0)};
    for (size_t s = 0; s < col.nseg; s++) {
        const uint64_t *c = col.base + s * col.seg_stride;
        for (size_t l0 = 0; l0 < col.seg_len; l0 += MAX_BYTE_STEPS) {
            size_t n = col.seg_len - l0 < MAX_BYTE_STEPS ? col.seg_len - l0 : MAX_BYTE_STEPS;
            uint8x16_t bytes[4] = {vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0)};
            steps8(c + l0, n, w + (s * col.seg_len + l0) * ldw, ldw, bytes);
            for (int j = 0; j < 4; j++)
                sum[j] = fold_bytes(sum[j], bytes[j]);
        }
    }
    for (int j = 0; j < 4; j++)
        store_dots(sum[j], k, out + 2 * j);
}

/* 2 output channels (one vector). */
static void dot2(bnn_column col, const uint64_t *w, size_t ldw, int32_t k, int32_t *out)
{
    uint64x2_t sum = vdupq_n_u64(0);
    for (size_t s = 0; s < col.nseg; s++) {
        const uint64_t *c = col.base + s * col.seg_stride;
        for (size_t l0 = 0; l0 < col.seg_len; l0 += MAX_BYTE_STEPS) {
            size_t l1 = col.seg_len - l0 < MAX_BYTE_STEPS ? col.seg_len : l0 + MAX_BYTE_STEPS;
            uint8x16_t bytes = vdupq_n_u8(0);
            for (size_t l = l0; l < l1; l++)
                bytes = vaddq_u8(bytes, xor_popcount_bytes(vdupq_n_u64(c[l]), w + (s * col.seg_len + l) * ldw));
            sum = fold_bytes(sum, bytes);
        }
    }
    store_dots(sum, k, out);
}

/* One column against every output channel. */
static inline void xnor_dot_column(bnn_column col, const uint64_t *restrict w, size_t cout, int32_t k,
                                   int32_t *restrict out)
{
    size_t co = 0;
    for (; co + 8 <= cout; co += 8)
        dot8(col, w + co, cout, k, out + co);
    for (; co + 2 <= cout; co += 2)
        dot2(col, w + co, cout, k, out + co);
    if (co < cout)
        bnn_xnor_dot_portable(col, w + co, cout, cout - co, k, out + co);
}

void bnn_xnor_dot(const bnn_column *cols, size_t ncols, const uint64_t *restrict w, size_t cout, int32_t k,
                  int32_t *restrict out)
{
    for (size_t i = 0; i < ncols; i++)
        xnor_dot_column(cols[i], w, cout, k, out + i * cout);
}

/* The bits of 16 channels: four compares (all-ones lanes where x < threshold), narrowed to 16 bytes of 0xff or 0,
 * each kept as its bit's weight within its byte (1, 2, .., 128, twice), and the two halves summed pairwise into two
 * bytes of mask. Plain NEON, so that 32-bit ARM builds it too (AArch64's vaddv is not there). */
static inline unsigned mask16(const float *x, const float *th)
{
    static const uint8_t weights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint16x8_t lo = vcombine_u16(vmovn_u32(vcltq_f32(vld1q_f32(x), vld1q_f32(th))),
                                 vmovn_u32(vcltq_f32(vld1q_f32(x + 4), vld1q_f32(th + 4))));
    uint16x8_t hi = vcombine_u16(vmovn_u32(vcltq_f32(vld1q_f32(x + 8), vld1q_f32(th + 8))),
                                 vmovn_u32(vcltq_f32(vld1q_f32(x + 12), vld1q_f32(th + 12))));
    uint8x16_t bits = vandq_u8(vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)), vld1q_u8(weights));
    uint64x2_t sums = vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(bits)));
    return (unsigned)vgetq_lane_u64(sums, 0) | (unsigned)vgetq_lane_u64(sums, 1) << 8;
}

/* The bits of one pixel's channels [c, end) of word t (c = 64 t), 16 at a time, the channels after the last whole
 * 16 one by one. */
static inline uint64_t pack_word(const float *x, const float *threshold, size_t c, size_t end)
{
    uint64_t word = 0;
    size_t whole = c + (end - c) / 16 * 16;
    for (; c < whole; c += 16) {
        word |= (uint64_t)mask16(x + c, threshold + c) << (c % 64);
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
typedef int bnn_neon_not_selected; /* ISO C wants a declaration in every translation unit */
#endif
