/* bnn_rng.c -- PCG32 and the draws on it (the specification: bnn_rng.h and bnncl.core.rng). */
#include "bnn_rng.h"

#define PCG32_MULTIPLIER UINT64_C(6364136223846793005)

uint32_t bnn_pcg32_next(bnn_pcg32 *g)
{
    uint64_t old = g->state;
    g->state = old * PCG32_MULTIPLIER + g->inc;
    uint32_t x = (uint32_t)(((old >> 18) ^ old) >> 27);
    uint32_t rot = (uint32_t)(old >> 59);
    return (x >> rot) | (x << ((32u - rot) & 31u));
}

void bnn_pcg32_seed(bnn_pcg32 *g, uint64_t initstate, uint64_t initseq)
{
    g->state = 0;
    g->inc = (initseq << 1) | 1u;
    bnn_pcg32_next(g);
    g->state += initstate;
    bnn_pcg32_next(g);
}

uint32_t bnn_pcg32_below(bnn_pcg32 *g, uint64_t n)
{
    if (n == 0 || n > (UINT64_C(1) << 32))
        return 0;
    uint64_t m = (uint64_t)bnn_pcg32_next(g) * n;
    if ((uint32_t)m < n) {
        uint64_t t = ((UINT64_C(1) << 32) - n) % n; /* (2^32 - n) mod n: the draws to reject */
        while ((uint32_t)m < t)
            m = (uint64_t)bnn_pcg32_next(g) * n;
    }
    return (uint32_t)(m >> 32);
}

void bnn_pcg32_permutation(bnn_pcg32 *g, uint32_t *a, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        a[i] = i;
    for (uint32_t i = n; i-- > 1;) {
        uint32_t j = bnn_pcg32_below(g, (uint64_t)i + 1), v = a[i];
        a[i] = a[j], a[j] = v;
    }
}

void bnn_pcg32_permutation16(bnn_pcg32 *g, uint16_t *a, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        a[i] = (uint16_t)i;
    for (uint32_t i = n; i-- > 1;) {
        uint32_t j = bnn_pcg32_below(g, (uint64_t)i + 1);
        uint16_t v = a[i];
        a[i] = a[j], a[j] = v;
    }
}

void bnn_pcg32_choice(bnn_pcg32 *g, uint32_t *a, uint32_t n, uint32_t k)
{
    for (uint32_t i = 0; i < n; i++)
        a[i] = i;
    for (uint32_t i = 0; i < k && i < n; i++) {
        uint32_t j = i + bnn_pcg32_below(g, (uint64_t)(n - i)), v = a[i];
        a[i] = a[j], a[j] = v;
    }
}

void bnn_pcg32_choice_sparse(bnn_pcg32 *g, uint32_t n, uint32_t k, uint32_t *out, uint32_t *moved)
{
    uint32_t n_moved = 0;
    if (k > n)
        k = n;
    for (uint32_t i = 0; i < k; i++)
        out[i] = i;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = i + bnn_pcg32_below(g, (uint64_t)(n - i)), vi = out[i], vj;
        if (j < k) {
            vj = out[j];
            out[j] = vi;
        } else { /* a position at k or above: its value is j until a swap moved another there */
            uint32_t t = 0;
            while (t < n_moved && moved[2 * t] != j)
                t++;
            if (t == n_moved)
                moved[2 * t] = j, moved[2 * t + 1] = j, n_moved++;
            vj = moved[2 * t + 1];
            moved[2 * t + 1] = vi;
        }
        out[i] = vj;
    }
}

float bnn_pcg32_float32(bnn_pcg32 *g) { return (float)(bnn_pcg32_next(g) >> 8) * 0x1p-24f; }

double bnn_pcg32_float64(bnn_pcg32 *g)
{
    uint64_t a = bnn_pcg32_next(g) >> 5, b = bnn_pcg32_next(g) >> 6;
    return (double)(a * (UINT64_C(1) << 26) + b) * 0x1p-53;
}
