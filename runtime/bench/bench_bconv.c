/*
 * bench_bconv.c -- times the binary 3x3 convs of the demo backbone (its six blocks at their sizes, and its two
 * large shapes on a 7x7 / 14x14 map) with this build's inner loop, beside the best popcount loop this path's
 * instruction set allows (the "peak"), so each conv's share of it shows. Blocks of at most 32 input channels run as
 * the model runs them, bnn_bconv3x3_paired (two taps per word: five words per window, the work counted as run).
 *
 *   bench_bconv [--label NAME] [--header]
 *
 * --header prints the CPU model and its popcount-related flags first (the Makefile's `bench` runs one binary per
 * path and passes it to the first). Work is counted in words of xor-popcount: one 64-bit xor and its popcount.
 * A conv does ho * wo * cout * 9 * words(cin) of them (paired: ho * wo * cout * 5). One thread. Each figure is the best of 3 rounds (peak and
 * convs in turn) of the best of 301 runs of at least 0.2 ms: on a machine other processes load, the least disturbed.
 *
 * Peak loops over 8 KB buffers (in L1), popcount(a xor b) and popcount(a xor key), the faster of the two:
 *   portable: the scalar bnn_popcount64 (SWAR, or the popcnt instruction when built with -mpopcnt), 4 sums;
 *   avx2:     Harley-Seal: carry-save adders over 16 vectors, one vpshufb nibble popcount per 16 vectors;
 *   avx512:   vpopcntq, 4 accumulators;
 *   neon:     vcntq_u8, byte sums folded with vpadalq every 31 vectors.
 */
#include "bnn_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(BNN_USE_AVX2) || defined(BNN_USE_AVX512)
#include <immintrin.h>
#elif defined(BNN_USE_NEON)
#include <arm_neon.h>
#endif

#define RUNS 301
#define ROUNDS 3
#define PEAK_WORDS 1024 /* per buffer: 2 x 8 KB; the peak loops take a multiple of 64 words */

static double now(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_state = 0x243f6a8885a308d3u;

static uint64_t next_random(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

/* ---- popcount peak ------------------------------------------------------------------------------------------ */
/*
 * Two forms, as benchmarks/popcount_peak.py on the Python side: popcount(a[i] xor b[i]) (two loads per word) and
 * popcount(a[i] xor key) with the key in a register (one load per word: the conv's mix). The peak is the faster.
 * Each form is one static function with b == NULL selecting the key; it is inlined into its two callers with b
 * constant, so each caller gets its own loop without the test.
 */

#if defined(BNN_USE_AVX2)
static inline __m256i popcount_bytes(__m256i v)
{
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
}

static inline __m256i popcount_lanes(__m256i v) { return _mm256_sad_epu8(popcount_bytes(v), _mm256_setzero_si256()); }

/* carry-save adder: a + b + c = 2 * high + low, bitwise */
#define CSA(high, low, a, b, c)                                                                                    \
    do {                                                                                                           \
        __m256i u_ = _mm256_xor_si256(a, b);                                                                       \
        high = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u_, c));                                   \
        low = _mm256_xor_si256(u_, c);                                                                             \
    } while (0)

/* Harley-Seal (Mula, Kurz, Lemire: "Faster population counts using AVX2 instructions") on a xor (b or key). */
static inline uint64_t harley_seal(const uint64_t *a, const uint64_t *b, uint64_t key, size_t n)
{
    const __m256i *va = (const __m256i *)a, *vb = (const __m256i *)b, kv = _mm256_set1_epi64x((long long)key);
    __m256i total = _mm256_setzero_si256(), ones = total, twos = total, fours = total, eights = total;
    __m256i sixteens, twos_a, twos_b, fours_a, fours_b, eights_a, eights_b;
#define V(j) _mm256_xor_si256(_mm256_loadu_si256(va + i + (j)), vb ? _mm256_loadu_si256(vb + i + (j)) : kv)
    for (size_t i = 0; i < n / 4; i += 16) {
        CSA(twos_a, ones, ones, V(0), V(1));
        CSA(twos_b, ones, ones, V(2), V(3));
        CSA(fours_a, twos, twos, twos_a, twos_b);
        CSA(twos_a, ones, ones, V(4), V(5));
        CSA(twos_b, ones, ones, V(6), V(7));
        CSA(fours_b, twos, twos, twos_a, twos_b);
        CSA(eights_a, fours, fours, fours_a, fours_b);
        CSA(twos_a, ones, ones, V(8), V(9));
        CSA(twos_b, ones, ones, V(10), V(11));
        CSA(fours_a, twos, twos, twos_a, twos_b);
        CSA(twos_a, ones, ones, V(12), V(13));
        CSA(twos_b, ones, ones, V(14), V(15));
        CSA(fours_b, twos, twos, twos_a, twos_b);
        CSA(eights_b, fours, fours, fours_a, fours_b);
        CSA(sixteens, eights, eights, eights_a, eights_b);
        total = _mm256_add_epi64(total, popcount_lanes(sixteens));
    }
#undef V
    total = _mm256_slli_epi64(total, 4);
    total = _mm256_add_epi64(total, _mm256_slli_epi64(popcount_lanes(eights), 3));
    total = _mm256_add_epi64(total, _mm256_slli_epi64(popcount_lanes(fours), 2));
    total = _mm256_add_epi64(total, _mm256_slli_epi64(popcount_lanes(twos), 1));
    total = _mm256_add_epi64(total, popcount_lanes(ones));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, total);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#define PEAK_LOOP harley_seal
#define PEAK_NAME "Harley-Seal, 256-bit"

#elif defined(BNN_USE_AVX512)
static inline uint64_t vpopcntq_loop(const uint64_t *a, const uint64_t *b, uint64_t key, size_t n)
{
    const __m512i kv = _mm512_set1_epi64((long long)key);
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
#define P(j) _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + i + (j)),                               \
                                                  b ? _mm512_loadu_si512(b + i + (j)) : kv))
    for (size_t i = 0; i < n; i += 32) {
        s0 = _mm512_add_epi64(s0, P(0));
        s1 = _mm512_add_epi64(s1, P(8));
        s2 = _mm512_add_epi64(s2, P(16));
        s3 = _mm512_add_epi64(s3, P(24));
    }
#undef P
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}
#define PEAK_LOOP vpopcntq_loop
#define PEAK_NAME "vpopcntq, 4 accumulators"

#elif defined(BNN_USE_NEON)
static inline uint64_t vcnt_loop(const uint64_t *a, const uint64_t *b, uint64_t key, size_t n)
{
    const uint64x2_t kv = vdupq_n_u64(key);
    uint64x2_t total = vdupq_n_u64(0);
#define C(j) vcntq_u8(vreinterpretq_u8_u64(veorq_u64(vld1q_u64(a + i + (j)), b ? vld1q_u64(b + i + (j)) : kv)))
    for (size_t i = 0; i < n;) {
        uint8x16_t b0 = vdupq_n_u8(0), b1 = b0, b2 = b0, b3 = b0;
        for (int step = 0; step < 31 && i < n; step++, i += 8) { /* byte sums: 31 * 8 < 256 */
            b0 = vaddq_u8(b0, C(0));
            b1 = vaddq_u8(b1, C(2));
            b2 = vaddq_u8(b2, C(4));
            b3 = vaddq_u8(b3, C(6));
        }
        uint16x8_t h = vaddq_u16(vaddq_u16(vpaddlq_u8(b0), vpaddlq_u8(b1)), vaddq_u16(vpaddlq_u8(b2), vpaddlq_u8(b3)));
        total = vpadalq_u32(total, vpaddlq_u16(h));
    }
#undef C
    return vgetq_lane_u64(total, 0) + vgetq_lane_u64(total, 1);
}
#define PEAK_LOOP vcnt_loop
#define PEAK_NAME "vcntq_u8 + vpadalq"

#else
static inline uint64_t scalar_loop(const uint64_t *a, const uint64_t *b, uint64_t key, size_t n)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < n; i += 4) {
        s0 += bnn_popcount64(a[i] ^ (b ? b[i] : key));
        s1 += bnn_popcount64(a[i + 1] ^ (b ? b[i + 1] : key));
        s2 += bnn_popcount64(a[i + 2] ^ (b ? b[i + 2] : key));
        s3 += bnn_popcount64(a[i + 3] ^ (b ? b[i + 3] : key));
    }
    return s0 + s1 + s2 + s3;
}
#define PEAK_LOOP scalar_loop
#if defined(__POPCNT__)
#define PEAK_NAME "scalar popcnt, 4 sums"
#else
#define PEAK_NAME "scalar SWAR popcount, 4 sums"
#endif
#endif

static uint64_t peak_two_arrays(const uint64_t *a, const uint64_t *b, size_t n) { return PEAK_LOOP(a, b, 0, n); }

static uint64_t peak_against_key(const uint64_t *a, uint64_t key, size_t n) { return PEAK_LOOP(a, NULL, key, n); }

/* ---- timing ------------------------------------------------------------------------------------------------- */

typedef void (*work_fn)(void *ctx);

/* Best seconds per call of fn over RUNS runs of >= 0.2 ms each: the minimum, a run no other process disturbed
 * (short runs fit between the scheduler's time slices on a loaded machine). */
static double best_seconds(work_fn fn, void *ctx)
{
    size_t reps = 1;
    for (;;) { /* calibrate: enough calls for 0.2 ms */
        double t0 = now();
        for (size_t r = 0; r < reps; r++)
            fn(ctx);
        if (now() - t0 >= 0.0002)
            break;
        reps *= 2;
    }
    double best = 1e30;
    for (int run = 0; run < RUNS; run++) {
        double t0 = now();
        for (size_t r = 0; r < reps; r++)
            fn(ctx);
        double t = (now() - t0) / (double)reps;
        best = t < best ? t : best;
    }
    return best;
}

typedef struct {
    uint64_t *a, *b;
    uint64_t key;
    volatile uint64_t sink;
} peak_ctx;

/* The buffers are read through volatile pointers: the compiler cannot hoist the loop out of the repetitions. */
static void run_peak_two_arrays(void *p)
{
    peak_ctx *c = p;
    uint64_t *volatile a = c->a, *volatile b = c->b;
    c->sink += peak_two_arrays(a, b, PEAK_WORDS);
}

static void run_peak_against_key(void *p)
{
    peak_ctx *c = p;
    uint64_t *volatile a = c->a;
    c->sink += peak_against_key(a, c->key++, PEAK_WORDS);
}

typedef struct {
    const char *name;
    size_t cin, cout, h, w, stride;
    uint64_t *x, *weights, *scratch;
    int32_t *out;
    bnn_dims in;
    int paired; /* cin <= 32: bnn_bconv3x3_paired on weights paired by bnn_pair_taps3x3 */
} conv_ctx;

static void run_conv(void *p)
{
    conv_ctx *c = p;
    if (c->paired)
        bnn_bconv3x3_paired(c->x, c->in, c->weights, c->cout, c->stride, c->scratch, c->out);
    else
        bnn_bconv3x3(c->x, c->in, c->weights, c->cout, c->stride, c->scratch, c->out);
}

/* Buffers 64-byte aligned, as the model-level arena lays them out: a 512-bit load of a weight row that straddles
 * two cache lines costs about a third more (measured on Zen 4). */
static void *alloc64(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }

static uint64_t *random_words(size_t n, size_t channels_per_row)
{
    /* packed rows of `channels_per_row` signs, tail bits 0 */
    size_t words = bnn_words_for(channels_per_row);
    uint64_t *v = alloc64(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i] = next_random();
        size_t tail = channels_per_row - (i % words) * 64;
        if (tail < 64)
            v[i] &= (UINT64_C(1) << tail) - 1;
    }
    return v;
}

/* Random packed input and weights of the conv's shape (tail bits 0), 64-byte aligned buffers. */
static void conv_setup(conv_ctx *c)
{
    size_t words = bnn_words_for(c->cin);
    size_t ho = bnn_conv_out_size(c->h, 3, c->stride, 1), wo = bnn_conv_out_size(c->w, 3, c->stride, 1);
    bnn_dims in = {1, c->h, c->w, c->cin};
    c->in = in;
    c->x = random_words(c->h * c->w * words, c->cin);
    c->weights = alloc64(9 * words * c->cout * sizeof *c->weights);
    for (size_t r = 0; r < 9 * words; r++) { /* row r holds word r % words of every output channel */
        uint64_t *row = random_words(c->cout * words, c->cin);
        for (size_t co = 0; co < c->cout; co++)
            c->weights[r * c->cout + co] = row[co * words + r % words];
        free(row);
    }
    c->scratch = alloc64(bnn_bconv3x3_scratch_words(c->cin) * sizeof *c->scratch);
    c->out = alloc64(ho * wo * c->cout * sizeof *c->out);
    c->paired = c->cin <= 32;
    if (c->paired) { /* the weights two taps per word, as bnn_init pairs them */
        uint64_t *paired = alloc64(5 * c->cout * sizeof *paired);
        bnn_pair_taps3x3(c->weights, c->cout, paired);
        free(c->weights);
        c->weights = paired;
    }
}

static void print_cpu(void)
{
    static const char *wanted[] = {"popcnt", "avx2", "avx512f", "avx512bw", "avx512_vpopcntdq", "asimd", NULL};
    char line[8192], model[256] = "unknown", flags[512] = "";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':'))
            snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
        if ((strncmp(line, "flags", 5) == 0 || strncmp(line, "Features", 8) == 0) && !flags[0]) {
            for (int i = 0; wanted[i]; i++) {
                char key[64];
                snprintf(key, sizeof key, " %s", wanted[i]);
                char *hit = strstr(line, key);
                if (hit && (hit[strlen(key)] == ' ' || hit[strlen(key)] == '\n')) {
                    strncat(flags, wanted[i], sizeof flags - strlen(flags) - 2);
                    strcat(flags, " ");
                }
            }
        }
    }
    if (f)
        fclose(f);
    model[strcspn(model, "\n")] = 0;
    printf("CPU: %s\nflags (popcount-related): %s\n\n", model, flags[0] ? flags : "none found");
    printf("%-16s %-38s %10s %9s %9s %6s %10s\n", "path", "conv", "ns/conv", "Gwords/s", "peak", "share",
           "checksum");
}

int main(int argc, char **argv)
{
    const char *label = bnn_kernels_path();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--header") == 0)
            print_cpu();
        else if (strcmp(argv[i], "--label") == 0 && i + 1 < argc)
            label = argv[++i];
    }

    peak_ctx peak = {random_words(PEAK_WORDS, 64), random_words(PEAK_WORDS, 64), 1, 0};
    conv_ctx convs[] = {
        {"128->128 7x7 s1", 128, 128, 7, 7, 1, NULL, NULL, NULL, NULL, {0, 0, 0, 0}, 0},
        {"64->128 14x14 s2", 64, 128, 14, 14, 2, NULL, NULL, NULL, NULL, {0, 0, 0, 0}, 0},
        {"block1 32->32 28x28 s2", 32, 32, 28, 28, 2, NULL, NULL, NULL, NULL, {0, 0, 0, 0}, 0},
        {"block2 32->32 14x14 s1", 32, 32, 14, 14, 1, NULL, NULL, NULL, NULL, {0, 0, 0, 0}, 0},
        {"block3 32->64 14x14 s2", 32, 64, 14, 14, 2, NULL, NULL, NULL, NULL, {0, 0, 0, 0}, 0},
        {"block4 64->64 7x7 s1", 64, 64, 7, 7, 1, NULL, NULL, NULL, NULL, {0, 0, 0, 0}, 0},
        {"block5 64->128 7x7 s2", 64, 128, 7, 7, 2, NULL, NULL, NULL, NULL, {0, 0, 0, 0}, 0},
        {"block6 128->128 4x4 s1", 128, 128, 4, 4, 1, NULL, NULL, NULL, NULL, {0, 0, 0, 0}, 0},
    };
    enum { NCONVS = sizeof convs / sizeof convs[0] };
    for (size_t i = 0; i < NCONVS; i++)
        conv_setup(&convs[i]);

    /* Rounds of everything in turn, the best of each kept: the peak and the convs see the same conditions. */
    double two_arrays = 0, against_key = 0, conv_seconds[NCONVS];
    for (size_t i = 0; i < NCONVS; i++)
        conv_seconds[i] = 1e30;
    for (int round = 0; round < ROUNDS; round++) {
        double r = PEAK_WORDS / best_seconds(run_peak_two_arrays, &peak) * 1e-9;
        two_arrays = r > two_arrays ? r : two_arrays;
        r = PEAK_WORDS / best_seconds(run_peak_against_key, &peak) * 1e-9;
        against_key = r > against_key ? r : against_key;
        for (size_t i = 0; i < NCONVS; i++) {
            double t = best_seconds(run_conv, &convs[i]);
            conv_seconds[i] = t < conv_seconds[i] ? t : conv_seconds[i];
        }
    }
    double peak_rate = two_arrays > against_key ? two_arrays : against_key;

    for (size_t i = 0; i < NCONVS; i++) {
        conv_ctx *c = &convs[i];
        size_t ho = bnn_conv_out_size(c->h, 3, c->stride, 1), wo = bnn_conv_out_size(c->w, 3, c->stride, 1);
        double t = conv_seconds[i];
        double work = (double)(ho * wo * c->cout * (c->paired ? 5 : 9 * bnn_words_for(c->cin)));
        long long checksum = 0; /* the same on every path: the same dot products */
        for (size_t j = 0; j < ho * wo * c->cout; j++)
            checksum += c->out[j] * (long long)(j % 97 + 1);
        char conv[96];
        snprintf(conv, sizeof conv, "%s (%.0f kw%s)", c->name, work / 1e3, c->paired ? ", paired" : "");
        printf("%-16s %-38s %10.0f %9.2f %9.2f %5.0f%% %10lld\n", label, conv, t * 1e9, work / t * 1e-9, peak_rate,
               100 * (work / t * 1e-9) / peak_rate, checksum);
        free(c->x);
        free(c->weights);
        free(c->scratch);
        free(c->out);
    }
    printf("%-16s peak loop: %s: %.2f Gwords/s on two arrays, %.2f against a key\n", label, PEAK_NAME,
           two_arrays, against_key);
    free(peak.a);
    free(peak.b);
    return 0;
}
