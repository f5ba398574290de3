/*
 * bnn_rng.h -- the random generator every bnncl learner draws from: PCG32, the same numbers as bnncl.core.rng.
 *
 * The simulation, the Python device learner and the C learner take their shuffles, replayed patterns, memory updates
 * and stochastic roundings from it, so that given a seed they see the same minibatches. The specification is in
 * bnncl.core.rng's docstring (and docs/method.md, "Random numbers"); runtime/tests holds this file to the Python
 * implementation's outputs. C11, no library call, no allocation.
 */
#ifndef BNN_RNG_H
#define BNN_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* PCG32 (O'Neill's XSH-RR, as pcg-c-basic): a 64-bit LCG state and an odd increment. */
typedef struct {
    uint64_t state, inc;
} bnn_pcg32;

/* Seeded as pcg32_srandom_r: state 0, inc 2 initseq + 1, one step, state += initstate, one step. */
void bnn_pcg32_seed(bnn_pcg32 *g, uint64_t initstate, uint64_t initseq);

/* The next 32-bit output. */
uint32_t bnn_pcg32_next(bnn_pcg32 *g);

/* Uniform in [0, n) for 1 <= n <= 2^32 (Lemire's multiply-shift with rejection); n outside that range gives 0. */
uint32_t bnn_pcg32_below(bnn_pcg32 *g, uint64_t n);

/* a[0..n-1] = a permutation of 0..n-1: Fisher-Yates from the end (for i = n-1 down to 1: swap a[i], a[below(i+1)]). */
void bnn_pcg32_permutation(bnn_pcg32 *g, uint32_t *a, uint32_t n);

/* The same permutation into 16-bit entries, n <= 65,536 (half the bytes: an experience's shuffle on a device). */
void bnn_pcg32_permutation16(bnn_pcg32 *g, uint16_t *a, uint32_t n);

/* a[0..k-1] = k distinct values of 0..n-1 in the order drawn, k <= n: Fisher-Yates from the front over a[0..n-1]
 * (for i = 0 .. k-1: swap a[i], a[i + below(n - i)]); a holds n entries. */
void bnn_pcg32_choice(bnn_pcg32 *g, uint32_t *a, uint32_t n, uint32_t k);

/* The same k values, the same draws, without the n entries: out (k) holds positions 0..k-1 of the conceptual array,
 * moved (2 k uint32: position, value pairs) the positions at k or above a swap changed. For a k much smaller than n
 * (a memory update choosing among an experience's images): memory O(k), time O(k^2) at most. */
void bnn_pcg32_choice_sparse(bnn_pcg32 *g, uint32_t n, uint32_t k, uint32_t *out, uint32_t *moved);

/* Uniform floats in [0, 1): float32 (next >> 8) * 2^-24; double from two draws a, b: ((a >> 5) 2^26 + (b >> 6)) 2^-53. */
float bnn_pcg32_float32(bnn_pcg32 *g);
double bnn_pcg32_float64(bnn_pcg32 *g);

#ifdef __cplusplus
}
#endif

#endif /* BNN_RNG_H */
