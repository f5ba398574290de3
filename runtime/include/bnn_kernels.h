/*
 * bnn_kernels.h -- the kernel contract of the bnncl C runtime (internal: the model-level API is built on it).
 *
 * C11, freestanding: the kernels include <stddef.h> and <stdint.h> only and call no library function (a Cortex-M
 * build needs libgcc's soft-float helpers at most). No kernel allocates memory, keeps state or can fail:
 * every output and every scratch buffer comes from the caller (a model-level predict carves them from one arena;
 * the *_scratch_words / size helpers below say how much). Kernels are single-threaded and reentrant.
 *
 * Each kernel computes what its NumPy reference in the Python package computes (named per function), bit for bit
 * where the contract says "exact": the tests (runtime/tests) hold every kernel of every build to vectors written by
 * those references.
 *
 * Layouts (all arrays dense, C order; the natural alignment of the element type is enough, 64 bytes is faster for
 * the binary weights, see bnn_xnor_dot):
 *   - Activations are NHWC. A real activation is float32 (n, h, w, c).
 *   - A binary activation is packed along channels (bnncl.device.bitpack): (n, h, w, words) uint64,
 *     words = bnn_words_for(c). Bit j of word t holds channel 64 t + j: 1 for -1 (a value below its threshold),
 *     0 for +1. Unused tail bits are 0 in every packed tensor, activations and weights alike, so they add nothing
 *     to popcount(x xor w); a zero word is a pixel of +1s, which is exactly the +1 padding of the binary convs.
 *   - Binary conv weights are packed the same way, in the layout the numba kernel uses
 *     (bnncl.device.kernels.conv_weights_for_kernel): (kh, kw, words, cout) uint64, i.e. row (dy*kw + dx)*words + t
 *     holds word t of tap (dy, dx) for every output channel. From the model file's (cout, kh, kw, words):
 *     np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0))).
 *   - Float conv weights (the stem, BN folded) are (kh, kw, cin, cout) float32, the numba kernel's layout. From the
 *     model file's (cout, kh, kw, cin): np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0))).
 *   - The head's weights are the model file's (classes, features) float32, unchanged.
 * Outputs never overlap inputs (the pointers are restrict-qualified).
 *
 * What is exact:
 *   - every integer and bit result (the binary convs, bgemm, pack_below, the bits of the epilogue);
 *   - the float kernels below the head (conv2d, avgpool, global_avgpool, the epilogue, unpack_scaled,
 *     shortcut_affine): each output is one fixed sequence of IEEE float32 (shortcut_affine: float64) operations,
 *     written out in C in the reference's order, so the result is the same bit for bit on every CPU, given
 *       * no -ffast-math (or -Ofast), and -ffp-contract=off (no fused multiply-add: GCC contracts unless -std=c11);
 *       * FLT_EVAL_METHOD == 0 (checked at compile time: SSE2 on x86, every ARM; not the x87);
 *       * denormals not flushed to zero (the default on x86-64 and AArch64; on a Cortex-M keep FPSCR.FZ = 0,
 *         on 32-bit ARM Linux do not run these kernels through AArch32 NEON, which flushes).
 *     For finite inputs. NaN payloads are not part of the contract (IEEE leaves them to the CPU).
 *   - the head: a float32 dot product in one fixed order (documented there), the same on every build; tested
 *     within gamma_F * sum|x_f w_f| of the exact value (the reference's BLAS picks its own order).
 *
 * Build-time selection of the two loops that need the instruction set's own operations, the popcount-heavy inner
 * loop (bnn_xnor_dot, under every binary conv and bgemm) and the threshold test (bnn_pack_below, under the stem and
 * every epilogue: C has no way to say "compare, then collect the lanes' signs into bits"): define at most one of
 * BNN_USE_AVX2, BNN_USE_AVX512 (AVX-512F + VPOPCNTDQ), BNN_USE_NEON and link the matching src/kernels_<path>.c
 * beside src/kernels_portable.c; with none defined the portable C loops are used. Everything else is portable C on
 * every build, and the *_portable forms are always linked.
 */
#ifndef BNN_KERNELS_H
#define BNN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#define BNN_RESTRICT
#else
#define BNN_RESTRICT restrict
#endif

#if (defined(BNN_USE_AVX2) + defined(BNN_USE_AVX512) + defined(BNN_USE_NEON)) > 1
#error "define at most one of BNN_USE_AVX2, BNN_USE_AVX512, BNN_USE_NEON"
#endif

#define BNN_WORD_BITS 64

/* ---- shapes and sizes ------------------------------------------------------------------------------------- */

/* An NHWC tensor's shape. c counts real channels, also for a packed tensor (which holds bnn_words_for(c) words). */
typedef struct {
    size_t n, h, w, c;
} bnn_dims;

/* uint64 words that hold `channels` packed signs. */
static inline size_t bnn_words_for(size_t channels) { return (channels + BNN_WORD_BITS - 1) / BNN_WORD_BITS; }

/* Output size of a convolution along one axis: (size + 2 pad - k) / stride + 1 (size + 2 pad >= k). */
static inline size_t bnn_conv_out_size(size_t size, size_t k, size_t stride, size_t pad)
{
    return (size + 2 * pad - k) / stride + 1;
}

/* Output size of an s x s average pool in ceil mode: ceil(size / s). */
static inline size_t bnn_pool_out_size(size_t size, size_t s) { return (size + s - 1) / s; }

/* Number of set bits. The compiler's instruction where the target has one, else a branch-free SWAR count. */
static inline unsigned bnn_popcount64(uint64_t v)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__POPCNT__) || defined(__aarch64__))
    return (unsigned)__builtin_popcountll(v);
#else
    v = v - ((v >> 1) & UINT64_C(0x5555555555555555));
    v = (v & UINT64_C(0x3333333333333333)) + ((v >> 2) & UINT64_C(0x3333333333333333));
    v = (v + (v >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
    return (unsigned)((v * UINT64_C(0x0101010101010101)) >> 56);
#endif
}

/* The inner-loop implementation this build selected: "portable", "avx2", "avx512" or "neon". */
const char *bnn_kernels_path(void);

/* ---- binary kernels (exact) ------------------------------------------------------------------------------- */

/*
 * A column of packed inputs, the operand of the inner loop: nseg runs of seg_len words each, run s starting at
 * base + s * seg_stride; its len = nseg * seg_len words, run by run, are the column's words in order. A row of a
 * matrix is one run; an inner pixel's 3x3 window is read where it lies, as three runs of 3 * words words (a window
 * row: three neighbouring pixels) one input row apart, so it needs no copy.
 */
typedef struct {
    const uint64_t *base;
    size_t nseg, seg_len, seg_stride;
} bnn_column;

static inline bnn_column bnn_column_contiguous(const uint64_t *base, size_t len)
{
    bnn_column c = {base, 1, len, len};
    return c;
}

/* The columns one call of the inner loop takes at most in the kernels below (an output row's pixels, in chunks). */
#define BNN_COLUMNS 8

/*
 * The XNOR-popcount inner loop every binary kernel runs on: columns of packed inputs against one matrix of packed
 * weights. w: (len, cout) uint64, row l holding word l of every output channel; for column i < ncols (each of the
 * same len):
 *   out[i * cout + co] = k - 2 * sum_l popcount(cols[i][l] xor w[l * cout + co]), co < cout (int32),
 * k the number of real inputs the len words hold (their tail bits 0), k <= 2^30.
 * Selected at build time (BNN_USE_*); the SIMD forms vectorize over output channels. Several columns per call (a
 * row of output pixels) keep the call and its setup out of the per-pixel cost.
 * Speed, not correctness: w 64-byte aligned with cout a multiple of 8 keeps every SIMD weight load inside one
 * cache line (a split 512-bit load costs about a third more on Zen 4); the model-level arena should align so.
 */
void bnn_xnor_dot(const bnn_column *cols, size_t ncols, const uint64_t *BNN_RESTRICT w, size_t cout, int32_t k,
                  int32_t *BNN_RESTRICT out);

/*
 * The portable form for one column, on a block of output channels of a wider weight matrix: w points at the first
 * of `ncols` output channels, rows are `ldw` words apart (ldw >= ncols); out[j] for j < ncols.
 * bnn_xnor_dot_portable(col, w, cout, cout, k, out) is the portable bnn_xnor_dot of one column. Always linked: the
 * SIMD forms finish their odd output channels with it.
 */
void bnn_xnor_dot_portable(bnn_column col, const uint64_t *BNN_RESTRICT w, size_t ldw, size_t ncols, int32_t k,
                           int32_t *BNN_RESTRICT out);

/*
 * Binary GEMM (bnncl.device.kernels.bgemm_reference): a (m, words) packed, wt (words, n) packed -- the transpose of
 * the reference's w (n, words), as numba's bgemm takes it -- k real inputs per row -> out (m, n) int32,
 * out[i, j] = k - 2 * popcount(a[i] xor w[j]).
 */
void bnn_bgemm(const uint64_t *BNN_RESTRICT a, size_t m, size_t words, const uint64_t *BNN_RESTRICT wt, size_t n,
               int32_t k, int32_t *BNN_RESTRICT out);

/* Scratch of bnn_bconv3x3, in uint64 words: the 3x3 windows of the border pixels (those reaching into the padding)
 * of one call of the inner loop, BNN_COLUMNS * 9 * words(cin). */
static inline size_t bnn_bconv3x3_scratch_words(size_t cin) { return BNN_COLUMNS * 9 * bnn_words_for(cin); }

/*
 * 3x3 binary convolution, +1 padding of 1 (bnncl.device.kernels.bconv_reference with pad = 1).
 *   x: (in.n, in.h, in.w, words(in.c)) packed; w: (3, 3, words(in.c), cout) packed (the kernel layout above);
 *   stride >= 1 (the backbones use 1 and 2); scratch: bnn_bconv3x3_scratch_words(in.c) words (any contents);
 *   out: (in.n, ho, wo, cout) int32, ho = bnn_conv_out_size(in.h, 3, stride, 1), wo likewise:
 *   the dot products K - 2 * popcount(window xor w), K = 9 * in.c (a padding pixel is a zero word).
 */
void bnn_bconv3x3(const uint64_t *BNN_RESTRICT x, bnn_dims in, const uint64_t *BNN_RESTRICT w, size_t cout,
                  size_t stride, uint64_t *BNN_RESTRICT scratch, int32_t *BNN_RESTRICT out);

/* Output rows [oy0, oy1) of bnn_bconv3x3 only (0 <= oy0 <= oy1 <= ho), into out (in.n, oy1 - oy0, wo, cout): the
 * same values as those rows of the whole conv (each output pixel is computed alone). So a network can run row band
 * by row band, its int32 products never a whole map (bnn_model.c). */
void bnn_bconv3x3_rows(const uint64_t *BNN_RESTRICT x, bnn_dims in, const uint64_t *BNN_RESTRICT w, size_t cout,
                       size_t stride, uint64_t *BNN_RESTRICT scratch, size_t oy0, size_t oy1,
                       int32_t *BNN_RESTRICT out);

/*
 * The same 3x3 conv for inputs of at most 32 channels, two taps per word: such a pixel is one word whose upper half is
 * 0, so a window's nine words fit in five (word j: tap 2j in the low half, tap 2j + 1 in the high half; word 4: tap
 * 8) and the inner loop counts five words, not nine (popcount(a xor b) adds over the disjoint halves). Same arguments
 * and result as bnn_bconv3x3 (in.c <= 32), but wp: the weights paired the same way, (5, cout) uint64, as
 * bnn_pair_taps3x3 makes them from bnn_bconv3x3's; scratch: bnn_bconv3x3_paired_scratch_words() words.
 */
static inline size_t bnn_bconv3x3_paired_scratch_words(void) { return BNN_COLUMNS * 5; }

void bnn_bconv3x3_paired(const uint64_t *BNN_RESTRICT x, bnn_dims in, const uint64_t *BNN_RESTRICT wp, size_t cout,
                         size_t stride, uint64_t *BNN_RESTRICT scratch, int32_t *BNN_RESTRICT out);

/* Output rows [oy0, oy1) of bnn_bconv3x3_paired, as bnn_bconv3x3_rows. */
void bnn_bconv3x3_paired_rows(const uint64_t *BNN_RESTRICT x, bnn_dims in, const uint64_t *BNN_RESTRICT wp,
                              size_t cout, size_t stride, uint64_t *BNN_RESTRICT scratch, size_t oy0, size_t oy1,
                              int32_t *BNN_RESTRICT out);

/* w: bnn_bconv3x3's weights (3, 3, 1, cout) of at most 32 input channels -> wp (5, cout), paired as above. */
void bnn_pair_taps3x3(const uint64_t *BNN_RESTRICT w, size_t cout, uint64_t *BNN_RESTRICT wp);

/*
 * 1x1 binary convolution, no padding (bconv_reference with kh = kw = 1, pad = 0): the conv of the binary shortcut
 * (Downsample: avgpool -> threshold -> this -> bnn_shortcut_affine; ops.py runs it with stride 1 on the pooled
 * input, stride 2 is the same conv without the pool).
 *   x: (in.n, in.h, in.w, words(in.c)) packed; w: (words(in.c), cout) packed (the kernel layout, kh = kw = 1);
 *   out: (in.n, ho, wo, cout) int32, ho = bnn_conv_out_size(in.h, 1, stride, 0) = ceil(in.h / stride), K = in.c.
 */
void bnn_bconv1x1(const uint64_t *BNN_RESTRICT x, bnn_dims in, const uint64_t *BNN_RESTRICT w, size_t cout,
                  size_t stride, int32_t *BNN_RESTRICT out);

/*
 * Threshold test and packing (bnncl.device.kernels.pack_below_reference): x (pixels, channels) float32,
 * threshold (channels) -> out (pixels, words(channels)) uint64, bit set where x < threshold (false for NaN).
 * sign(x + b) with sign(0) = +1 is exactly x < -b in IEEE arithmetic: the model file stores threshold = -b.
 * Selected at build time as bnn_xnor_dot (a vector compare whose lane mask becomes the bits); exact on every path.
 */
void bnn_pack_below(const float *BNN_RESTRICT x, size_t pixels, size_t channels, const float *BNN_RESTRICT threshold,
                    uint64_t *BNN_RESTRICT out);

/* The portable form of bnn_pack_below, always linked (the SIMD forms finish a pixel's last channels with it). */
void bnn_pack_below_portable(const float *BNN_RESTRICT x, size_t pixels, size_t channels,
                             const float *BNN_RESTRICT threshold, uint64_t *BNN_RESTRICT out);

/* bnn_pack_below as the SIMD forms write it, word by word: word(x, threshold, c, end) gives the bits of channels
 * [c, end) of one pixel, c = 64 t. The backbones' 32 channels, and whole words, with end - c a constant, so that
 * the inlined word's loop unrolls. */
typedef uint64_t (*bnn_pack_word_fn)(const float *x, const float *threshold, size_t c, size_t end);

static inline void bnn_pack_below_by_words(const float *BNN_RESTRICT x, size_t pixels, size_t channels,
                                           const float *BNN_RESTRICT threshold, uint64_t *BNN_RESTRICT out,
                                           bnn_pack_word_fn word)
{
    size_t words = bnn_words_for(channels);
    for (size_t p = 0; p < pixels; p++, x += channels, out += words) {
        if (channels == 32) {
            out[0] = word(x, threshold, 0, 32);
            continue;
        }
        for (size_t t = 0; t < words; t++)
            out[t] = channels - 64 * t >= 64 ? word(x, threshold, 64 * t, 64 * t + 64)
                                             : word(x, threshold, 64 * t, channels);
    }
}

/* ---- float kernels (exact: one fixed float32 order) -------------------------------------------------------- */

/*
 * Float convolution with zero padding: the stem, BN folded (bnncl.device.kernels.conv2d_reference).
 *   x: (in.n, in.h, in.w, in.c) float32; w: (kh, kw, in.c, cout) float32 (the kernel layout above);
 *   bias: (cout) or NULL (zeros); out: (in.n, ho, wo, cout), ho = bnn_conv_out_size(in.h, kh, stride, pad).
 * Order, per output value: acc = bias; for each input channel ci in turn: p = x(tap 0,0) * w; then p = p + x * w
 * for the other taps row by row (dy, then dx; a padding tap is 0 * w); acc = acc + p. One rounding per operation.
 */
void bnn_conv2d_f32(const float *BNN_RESTRICT x, bnn_dims in, const float *BNN_RESTRICT w, size_t kh, size_t kw,
                    size_t cout, const float *BNN_RESTRICT bias, size_t stride, size_t pad, float *BNN_RESTRICT out);

/* Output rows [oy0, oy1) of bnn_conv2d_f32 only, into out (in.n, oy1 - oy0, wo, cout): the same values, bit for bit
 * (the order is per output value). */
void bnn_conv2d_f32_rows(const float *BNN_RESTRICT x, bnn_dims in, const float *BNN_RESTRICT w, size_t kh,
                         size_t kw, size_t cout, const float *BNN_RESTRICT bias, size_t stride, size_t pad,
                         size_t oy0, size_t oy1, float *BNN_RESTRICT out);

/*
 * s x s average pool, ceil mode, averaging only the pixels inside the image (bnncl.core.functional.avgpool_reference):
 * x (in.n, in.h, in.w, in.c) -> out (in.n, ceil(h / s), ceil(w / s), in.c).
 * Order, per output value: acc = 0; acc = acc + x for the window's pixels inside the image, row by row;
 * out = acc / (float)count.
 */
void bnn_avgpool_f32(const float *BNN_RESTRICT x, bnn_dims in, size_t s, float *BNN_RESTRICT out);

/*
 * Global average pool (bnncl.device.kernels.global_avgpool): x (in.n, in.h, in.w, in.c) -> out (in.n, in.c).
 * Order, per output value: acc = x(pixel 0); acc = acc + x(pixel p) for p = 1 .. h*w-1 (row by row);
 * out = acc / (float)(h * w).
 */
void bnn_global_avgpool_f32(const float *BNN_RESTRICT x, bnn_dims in, float *BNN_RESTRICT out);

/* The per-channel vectors of a block's epilogue, each (channels) float32. threshold NULL: no bits are made. */
typedef struct {
    const float *mult;      /* folded BN multiplier: mean|W| * gamma / sqrt(var + eps) */
    const float *bias;      /* folded BN bias */
    const float *shift_in;  /* RPReLU */
    const float *slope;
    const float *shift_out;
    const float *threshold; /* the next binary op's threshold, or NULL */
} bnn_epilogue_params;

/*
 * Fused block epilogue (bnncl.device.kernels.block_epilogue_reference) over a binary conv's output.
 *   dot: (pixels, channels) int32; shortcut: (pixels, shortcut_channels) float32, channels a multiple of
 *   shortcut_channels (output channel co reads shortcut channel co % shortcut_channels: the channel repetition of
 *   the 'duplicate' shortcut);
 *   real: (pixels, channels) float32 or NULL; bits: (pixels, words(channels)) uint64 or NULL (then p->threshold is
 *   not read; with p->threshold NULL, bits must be NULL).
 * Order, per output value (float32): z = mult * (float)dot; z = z + bias; z = z + shortcut; z = z + shift_in;
 * z = (z >= 0) ? z : z * slope; z = z + shift_out. real = z; bit = z < threshold.
 */
void bnn_block_epilogue(const int32_t *BNN_RESTRICT dot, size_t pixels, size_t channels,
                        const bnn_epilogue_params *p, const float *BNN_RESTRICT shortcut, size_t shortcut_channels,
                        float *BNN_RESTRICT real, uint64_t *BNN_RESTRICT bits);

/*
 * The binary shortcut's folded BN (bnncl.device.kernels.shortcut_affine):
 *   dot: (pixels, channels) int32; mult, bias: (channels) float32; out: (pixels, channels) float32,
 *   out = (float)dot * mult, then + bias: float32 in the epilogue's order (the dot is exact in float32 below 2^24).
 */
void bnn_shortcut_affine(const int32_t *BNN_RESTRICT dot, size_t pixels, size_t channels,
                         const float *BNN_RESTRICT mult, const float *BNN_RESTRICT bias, float *BNN_RESTRICT out);

/*
 * The shortcut of a block with binary input (ops.py: act.signs() * input_scale): bits (pixels, words(channels))
 * packed, scale (channels) -> out (pixels, channels) float32, out = (bit ? -1.0f : 1.0f) * scale.
 */
void bnn_unpack_scaled(const uint64_t *BNN_RESTRICT bits, size_t pixels, size_t channels,
                       const float *BNN_RESTRICT scale, float *BNN_RESTRICT out);

/* ---- the head (within float32 rounding) --------------------------------------------------------------------- */

/*
 * Bias-free linear head, logits = x @ w^T: x (n, features) float32, w (classes, features) float32 ->
 * out (n, classes). Order, per output value: acc = 0; acc = acc + x[f] * w[f] for f = 0 .. features-1.
 * The same on every build; |out - exact| <= gamma_F * sum_f |x[f] w[f]|, gamma_F = F u / (1 - F u), u = 2^-24.
 */
void bnn_head_f32(const float *BNN_RESTRICT x, size_t n, size_t features, const float *BNN_RESTRICT w,
                  size_t classes, float *BNN_RESTRICT out);

#ifdef __cplusplus
}
#endif

#endif /* BNN_KERNELS_H */
