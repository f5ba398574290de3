/* parse_count.h -- the benchmark programs' count arguments, parsed in a fixed number of instructions per digit
 * (whatever its value), so that the instruction counts of runs that differ in a count differ only by their work. */
#ifndef BNN_BENCH_PARSE_COUNT_H
#define BNN_BENCH_PARSE_COUNT_H

#include <string.h>

/* Decimal digits only; -1 if not a number (or more than 9 digits). */
static long parse_count(const char *s)
{
    long n = 0;
    size_t len = strlen(s);
    if (len == 0 || len > 9) return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9) return -1;
        n = n * 10 + (long)d;
    }
    return n;
}

#endif /* BNN_BENCH_PARSE_COUNT_H */
