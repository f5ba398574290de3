/*
 * fuzz_model.c -- damaged model blobs through the model-level runtime (bnn.h), under AddressSanitizer + UBSan.
 *
 *   fuzz_model BLOB ITERATIONS SEED          fuzz; prints the counts; exit 0 if every check held
 *   fuzz_model BLOB --dump ITERATION SEED OUT  write the blob iteration ITERATION of that run fed in, and stop
 *
 * The first iterations are fixed cases ("fixed", restamped): the input tensor's height and width set to extremes
 * (65536 x 65536, 65536 x W, 1 x 1, 4096 x 4096, ...: the same weights make a network of any size, whose arena must
 * grow with it, also where size_t is 32 bits), and the latent-replay flag moved to each layer in turn. Every other
 * iteration starts from the original blob (a valid model file, docs/model-format.md) and applies one mutation,
 * or (one time in four) two in a row:
 *   truncate  cut at a random length below the size;
 *   flip      1-8 random bit flips anywhere;
 *   field     one 4- or 8-byte field of the header or of a random tensor-table entry set to a random or edge value
 *             (0, 1, 2, 63, 64, 65, 2^31 - 1, 2^31, 2^32 - 1, the file size, size + 1, size - 1, the tensor count,
 *             the old value + 1 / - 1 / * 2, 2^32, 2^40, 2^63, 2^64 - 1, random);
 *   tail      1-256 random bytes appended;
 *   graph     one int32 of the `graph` tensor (or, one time in ten, of `input`) set to a random or edge value
 *             (-1, 0..8, 64, 65536, 65537, +-2^31, the old value +- 1 and * 2, a tensor index, random).
 * In half of the iterations both CRC-32s are then recomputed (and, after truncate or tail, the header's file size
 * set to the new length), so the structural checks behind the checksums are reached: "restamped".
 *
 * Then bnn_arena_size on a buffer of exactly the mutated length (ASan reports any read past it); bnn_init must
 * agree with it (the same refusal; or, when it accepted and the size is under 256 MiB, success in an arena of
 * exactly that size, which must hold at least the input image as float32: a lower bound computed in double, which a
 * wrapped size_t computation misses); an accepted model whose arena is at most 4 times the original's (so the work per image is
 * bounded: the network is about the original's size) runs bnn_predict, bnn_logits and bnn_latent on one zero image
 * into outputs of exactly the size bnn_get_info gives. Every refusal must be one of the codes of bnn.h, in
 * err.code too, with a non-empty one-line NUL-terminated message. Any invalid read or write, or undefined
 * behaviour, aborts the run (-fno-sanitize-recover=all): that is the test. An iteration that takes more than
 * ITERATION_SECONDS is a hang: reported, exit 3. On an abort the iteration, its mutations and the way to write its
 * blob (--dump) are printed first.
 */
#define _POSIX_C_SOURCE 200809L

#include "bnn.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#define ITERATION_SECONDS 30
#define MAX_ARENA (256u << 20)
#define RUN_FACTOR 4
#define MAX_TAIL 256
#define N_CODES 6

enum { M_TRUNCATE, M_FLIP, M_FIELD, M_TAIL, M_GRAPH, M_FIXED, N_KINDS };
static const char *const KIND_NAMES[N_KINDS] = {"truncate", "flip", "field", "tail", "graph", "fixed"};
static const char *const CODE_NAMES[N_CODES] = {"ok", "argument", "format", "version", "checksum", "model"};

/* ---- the random source: splitmix64, one stream per (seed, iteration), so any iteration can be replayed ------- */

static uint64_t rng_state;

static uint64_t next64(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t below(size_t n) { return n ? (size_t)(next64() % n) : 0; }

/* ---- the blob ---------------------------------------------------------------------------------------------- */

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void wr64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t crc32(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static unsigned char *original;
static size_t original_size;
static uint32_t tensor_count;
static size_t graph_at, graph_words, input_at; /* byte offsets of the graph's and input's data, graph's int32s */

/* The data offset and size of the tensor named `name` in the (valid) original, or 0. */
static size_t tensor_data(const char *name, size_t *nbytes)
{
    size_t len = strlen(name);
    for (uint32_t i = 0; i < tensor_count; i++) {
        const unsigned char *e = original + 64 + 64 * (size_t)i;
        size_t at = rd32(e), n = rd32(e + 4);
        if (n == len && at + n < original_size && memcmp(original + at, name, len) == 0) {
            *nbytes = (size_t)rd64(e + 48);
            return (size_t)rd64(e + 40);
        }
    }
    return 0;
}

/* ---- one mutation ------------------------------------------------------------------------------------------ */

static unsigned char *mutated; /* capacity original_size + 2 * MAX_TAIL */
static size_t mutated_size;
static char description[512];
static long current_iteration = -1;
static int size_field_set;

__attribute__((format(printf, 1, 2))) static void describe(const char *fmt, ...)
{
    char part[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(part, sizeof part, fmt, ap);
    va_end(ap);
    size_t n = strlen(description);
    snprintf(description + n, sizeof description - n, "%s%s", n ? "; " : "", part);
}

static uint64_t edge_value(uint64_t old, int bytes)
{
    const uint64_t size = mutated_size;
    const uint64_t edges[] = {0, 1, 2, 63, 64, 65, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, size, size + 1, size - 1,
                              tensor_count, old + 1, old - 1, old * 2, 1ull << 32, 1ull << 40, 1ull << 63, UINT64_MAX};
    size_t k = below(sizeof edges / sizeof *edges + 3);
    uint64_t v = k < sizeof edges / sizeof *edges ? edges[k] : k % 2 ? below(size + 1) : next64();
    return bytes == 4 ? (uint32_t)v : v;
}

static int32_t edge_int(int32_t old)
{
    const int32_t edges[] = {-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 64, 65536, 65537, INT32_MIN, INT32_MAX,
                             (int32_t)((uint32_t)old + 1u), (int32_t)((uint32_t)old - 1u),
                             (int32_t)((uint32_t)old * 2u), (int32_t)tensor_count, (int32_t)tensor_count - 1};
    size_t k = below(sizeof edges / sizeof *edges + 3);
    if (k < sizeof edges / sizeof *edges) return edges[k];
    return k % 2 ? (int32_t)below(tensor_count) : (int32_t)(uint32_t)next64();
}

static void mutate(int kind)
{
    switch (kind) {
    case M_TRUNCATE:
        mutated_size = below(mutated_size);
        describe("truncate to %zu bytes", mutated_size);
        break;
    case M_FLIP: {
        size_t flips = 1 + below(8);
        for (size_t i = 0; i < flips && mutated_size; i++) {
            size_t at = below(mutated_size);
            int bit = (int)below(8);
            mutated[at] ^= (unsigned char)(1u << bit);
            describe("flip bit %d of byte %zu", bit, at);
        }
        break;
    }
    case M_FIELD: {
        static const size_t header4[] = {8, 12, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60};
        static const size_t entry4[] = {0, 4, 8, 12, 16, 20, 24, 28, 32, 36};
        static const size_t entry8[] = {40, 48, 56};
        size_t at, bytes;
        if (below(10) < 4) { /* the header */
            size_t k = below(sizeof header4 / sizeof *header4 + 1);
            at = k < sizeof header4 / sizeof *header4 ? header4[k] : 16;
            bytes = at == 16 ? 8 : 4;
        } else {
            size_t entry = 64 + 64 * below(tensor_count), k = below(13);
            at = entry + (k < 10 ? entry4[k] : entry8[k - 10]);
            bytes = k < 10 ? 4 : 8;
        }
        if (at + bytes > mutated_size) break;
        uint64_t old = bytes == 4 ? rd32(mutated + at) : rd64(mutated + at);
        uint64_t v = edge_value(old, (int)bytes);
        if (bytes == 4) wr32(mutated + at, (uint32_t)v);
        else wr64(mutated + at, v);
        if (at == 16) size_field_set = 1;
        describe("field at byte %zu (%zu bytes) = 0x%llx", at, bytes, (unsigned long long)v);
        break;
    }
    case M_TAIL: {
        size_t n = 1 + below(MAX_TAIL);
        for (size_t i = 0; i < n; i++) mutated[mutated_size + i] = (unsigned char)next64();
        mutated_size += n;
        describe("%zu bytes of tail garbage", n);
        break;
    }
    case M_GRAPH: {
        int input = below(10) == 0;
        size_t at = input ? input_at + 4 * below(4) : graph_at + 4 * below(graph_words);
        if (at + 4 > mutated_size) break;
        int32_t v = edge_int((int32_t)rd32(mutated + at));
        wr32(mutated + at, (uint32_t)v);
        if (input) describe("input entry %zu = %ld", (at - input_at) / 4, (long)v);
        else describe("graph row %zu column %zu = %ld", (at - graph_at) / 80, (at - graph_at) / 4 % 20, (long)v);
        break;
    }
    }
}

static void restamp_crcs(void)
{
    wr32(mutated + 44, crc32(mutated + 64, mutated_size - 64));
    wr32(mutated + 60, crc32(mutated, 60));
}

/* The fixed cases, the first iterations of every run (restamped, no randomness): the input's height and width at
 * their extremes (a network of any size follows from the same weights: the arena must grow with it, on 32-bit
 * size_t too), and the latent-replay flag moved to each layer in turn. */
static const uint32_t FIXED_HW[][2] = {{65536, 65536}, {65536, 0}, {0, 65536}, {1, 1}, {2, 3}, {4096, 4096},
                                       {65535, 65535}, {32768, 32768}};
#define N_FIXED_HW (sizeof FIXED_HW / sizeof *FIXED_HW)

static size_t fixed_cases(void) { return N_FIXED_HW + graph_words / 20; }

static void fixed_case(size_t k)
{
    if (k < N_FIXED_HW) {
        for (int d = 0; d < 2; d++)
            if (FIXED_HW[k][d]) wr32(mutated + input_at + 4 * d, FIXED_HW[k][d]);
        describe("fixed: input %u x %u", (unsigned)rd32(mutated + input_at), (unsigned)rd32(mutated + input_at + 4));
    } else {
        size_t lr = k - N_FIXED_HW;
        for (size_t row = 0; row < graph_words / 20; row++) wr32(mutated + graph_at + 80 * row + 4 * 7, row == lr);
        describe("fixed: the latent-replay flag on layer %zu only", lr);
    }
    restamp_crcs();
    describe("restamped (CRCs)");
}

/* Iteration `it`'s blob in mutated[0, mutated_size); returns whether it was restamped. */
static int make_blob(uint64_t seed, long it, int *kinds)
{
    rng_state = seed * 0x2545F4914F6CDD1Dull ^ (uint64_t)it * 0x9E3779B97F4A7C15ull;
    next64();
    memcpy(mutated, original, original_size);
    mutated_size = original_size;
    description[0] = '\0';
    size_field_set = 0;
    kinds[0] = kinds[1] = -1;
    if ((size_t)it < fixed_cases()) {
        fixed_case((size_t)it);
        kinds[0] = M_FIXED;
        return 1;
    }
    int count = below(4) == 0 ? 2 : 1, resized = 0;
    for (int i = 0; i < count; i++) {
        kinds[i] = (int)below(M_FIXED); /* a random kind: not the fixed cases */
        mutate(kinds[i]);
        resized |= kinds[i] == M_TRUNCATE || kinds[i] == M_TAIL;
    }
    int restamp = (int)below(2);
    if (restamp && mutated_size >= 64) {
        if (resized && !size_field_set) wr64(mutated + 16, mutated_size);
        restamp_crcs();
        describe("restamped (CRCs%s)", resized && !size_field_set ? ", file size" : "");
    } else {
        restamp = 0;
    }
    return restamp;
}

/* ---- reporting an abort or a hang -------------------------------------------------------------------------- */

static const char *blob_path;
static uint64_t run_seed;

static void report_iteration(const char *what)
{
    char line[1024];
    int n = snprintf(line, sizeof line,
                     "\n%s in iteration %ld (seed %llu): %s\n  reproduce: fuzz_model %s --dump %ld %llu OUT.bnn\n",
                     what, current_iteration, (unsigned long long)run_seed, description, blob_path,
                     current_iteration, (unsigned long long)run_seed);
    if (n > 0 && write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0) return;
}

#if defined(__SANITIZE_ADDRESS__)
static void on_death(void) { report_iteration("ABORT (sanitizer)"); }
#endif

static void on_alarm(int sig)
{
    (void)sig;
    report_iteration("HANG (no result within ITERATION_SECONDS)");
    _exit(3);
}

/* ---- the checks -------------------------------------------------------------------------------------------- */

static long failures;
static long refused[2][N_CODES];          /* [0] by bnn_arena_size, [1] by bnn_init after arena_size accepted */
static long by_kind[N_KINDS][N_CODES + 1]; /* per mutation kind: refusals by code, [0] = accepted */
static long accepted, too_large, not_run, ran, restamped_count, restamped_accepted;

#define MAX_MESSAGES 48
static struct {
    char text[120];
    long count;
} messages[MAX_MESSAGES];
static long other_messages;

static void fail(const char *what)
{
    printf("FAIL iteration %ld: %s (%s)\n", current_iteration, what, description);
    failures++;
}

/* The message with digits folded to '#', counted. */
static void count_message(const char *msg)
{
    char key[120];
    size_t i = 0;
    for (; msg[i] && i + 1 < sizeof key; i++) key[i] = msg[i] >= '0' && msg[i] <= '9' ? '#' : msg[i];
    key[i] = '\0';
    for (int k = 0; k < MAX_MESSAGES; k++) {
        if (messages[k].count && strcmp(messages[k].text, key) == 0) {
            messages[k].count++;
            return;
        }
        if (!messages[k].count) {
            memcpy(messages[k].text, key, sizeof key);
            messages[k].count = 1;
            return;
        }
    }
    other_messages++;
}

/* A refusal: a known code, the same in err, with a non-empty one-line message. */
static void check_error(bnn_status s, const bnn_error *err, const char *call)
{
    char what[200];
    const char *nul = memchr(err->message, '\0', sizeof err->message);
    if ((int)s <= 0 || (int)s >= N_CODES) {
        snprintf(what, sizeof what, "%s returned the unknown status %d", call, (int)s);
        fail(what);
    } else if (err->code != s) {
        snprintf(what, sizeof what, "%s returned %d but err.code is %d", call, (int)s, (int)err->code);
        fail(what);
    } else if (!nul || nul == err->message || strchr(err->message, '\n')) {
        snprintf(what, sizeof what, "%s: the error message is empty, not NUL-terminated or not one line", call);
        fail(what);
    }
}

static void run_model(bnn_model *m)
{
    bnn_info info;
    bnn_error err;
    if (bnn_get_info(m, &info) != BNN_OK) {
        fail("bnn_get_info refused an initialized model");
        return;
    }
    size_t image_bytes = (size_t)info.height * info.width * info.channels;
    size_t words = (info.latent_channels + 63) / 64;
    size_t latent = (size_t)info.latent_height * info.latent_width * (info.latent_binary ? words : info.latent_channels);
    uint8_t *image = calloc(image_bytes ? image_bytes : 1, 1);
    float *logits = malloc(info.classes ? info.classes * sizeof(float) : 1);
    int32_t label = -1;
    void *lat = malloc(latent ? latent * (info.latent_binary ? 8 : 4) : 1);
    if (!image || !logits || !lat) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memset(&err, 0xaa, sizeof err);
    if (bnn_predict(m, image, 1, &label, &err) != BNN_OK) fail("bnn_predict refused an initialized model");
    else if (label < 0 || (uint32_t)label >= info.classes) fail("bnn_predict gave a label outside the classes");
    if (bnn_logits(m, image, 1, logits, &err) != BNN_OK) fail("bnn_logits refused an initialized model");
    if (bnn_latent(m, image, 1, info.latent_binary ? NULL : lat, info.latent_binary ? lat : NULL, &err) != BNN_OK)
        fail("bnn_latent refused an initialized model");
    free(image), free(logits), free(lat);
    ran++;
}

/* The arena holds at least the image as float32 and the logits: a lower bound computed without size_t (in double),
 * which a wrapped size computation would not reach. */
static int arena_covers_input(const bnn_model *m, size_t need)
{
    bnn_info info;
    if (bnn_get_info(m, &info) != BNN_OK) return 0;
    double least = 4.0 * info.height * info.width * info.channels + 4.0 * info.classes;
    return (double)need >= least && info.arena_bytes == need;
}

/* One blob through the API; returns the status of bnn_arena_size (BNN_OK: accepted). */
static bnn_status try_blob(const unsigned char *blob, size_t size, size_t run_limit)
{
    bnn_error err;
    size_t need = 0;
    memset(&err, 0xaa, sizeof err);
    bnn_status s = bnn_arena_size(blob, size, &need, &err);
    if (s != BNN_OK) {
        check_error(s, &err, "bnn_arena_size");
        if ((int)s > 0 && (int)s < N_CODES) refused[0][s]++;
        count_message(err.message);
        /* bnn_init refuses it the same way */
        static unsigned char small[64];
        bnn_model *m = (bnn_model *)(void *)small;
        bnn_error err2;
        memset(&err2, 0xaa, sizeof err2);
        bnn_status s2 = bnn_init(blob, size, small, sizeof small, &m, &err2);
        if (s2 != s || m != NULL) fail("bnn_init does not refuse what bnn_arena_size refused, in the same way");
        else check_error(s2, &err2, "bnn_init");
        return s;
    }
    if (err.code != BNN_OK) fail("bnn_arena_size succeeded but err.code is not BNN_OK");
    accepted++;
    if (need >= MAX_ARENA) {
        too_large++;
        return s;
    }
    unsigned char *arena = malloc(need ? need : 1);
    if (!arena) {
        fprintf(stderr, "out of memory (%zu bytes)\n", need);
        exit(2);
    }
    bnn_model *m = NULL;
    memset(&err, 0xaa, sizeof err);
    bnn_status s2 = bnn_init(blob, size, arena, need, &m, &err);
    if (s2 != BNN_OK) {
        check_error(s2, &err, "bnn_init");
        if ((int)s2 > 0 && (int)s2 < N_CODES) refused[1][s2]++;
        fail("bnn_init refused what bnn_arena_size accepted");
    } else if (!arena_covers_input(m, need)) {
        fail("the arena is smaller than the input image as float32 (a size computation overflowed?): not run");
    } else if (need <= run_limit) {
        run_model(m);
    } else {
        not_run++;
    }
    free(arena);
    return s;
}

/* ---- main -------------------------------------------------------------------------------------------------- */

#include "read_file.h"

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s BLOB ITERATIONS SEED\n       %s BLOB --dump ITERATION SEED OUT\n", argv0, argv0);
    return 2;
}

int main(int argc, char **argv)
{
    int dump = argc == 6 && strcmp(argv[2], "--dump") == 0;
    if (argc != 4 && !dump) return usage(argv[0]);
    blob_path = argv[1];
    char *end;
    long iterations = strtol(argv[dump ? 3 : 2], &end, 10);
    if (*end || iterations < 0) return usage(argv[0]);
    run_seed = strtoull(argv[dump ? 4 : 3], &end, 10);
    if (*end) return usage(argv[0]);
    original = read_file(blob_path, &original_size);
    if (!original || original_size < 128) {
        fprintf(stderr, "cannot read a model blob from %s\n", blob_path);
        return 2;
    }
    tensor_count = rd32(original + 24);
    size_t gbytes = 0, ibytes = 0;
    graph_at = tensor_data("graph", &gbytes);
    input_at = tensor_data("input", &ibytes);
    graph_words = gbytes / 4;
    if (64 + 64 * (size_t)tensor_count > original_size || !graph_at || !input_at || ibytes != 16
        || graph_at + gbytes > original_size) {
        fprintf(stderr, "%s: not a model file with a graph and an input tensor\n", blob_path);
        return 2;
    }
    mutated = malloc(original_size + 2 * MAX_TAIL);
    if (!mutated) return 2;
    int kinds[2];

    if (dump) {
        current_iteration = iterations;
        int restamp = make_blob(run_seed, iterations, kinds);
        FILE *f = fopen(argv[5], "wb");
        if (!f || fwrite(mutated, 1, mutated_size, f) != mutated_size || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", argv[5]);
            return 2;
        }
        printf("iteration %ld: %s -> %s (%zu bytes%s)\n", iterations, description, argv[5], mutated_size,
               restamp ? "" : ", not restamped");
        return 0;
    }

#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_set_death_callback(on_death);
#endif
    snprintf(description, sizeof description, "the original blob, unchanged");

    /* the original: accepted, and its arena bounds how large a mutated network may run */
    size_t original_need = 0;
    bnn_error err;
    {
        unsigned char *copy = malloc(original_size);
        memcpy(copy, original, original_size);
        if (bnn_arena_size(copy, original_size, &original_need, &err) != BNN_OK) {
            fprintf(stderr, "%s: the original blob is refused: %s\n", blob_path, err.message);
            return 1;
        }
        try_blob(copy, original_size, original_need);
        free(copy);
        accepted = ran = 0;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long it = 0; it < iterations; it++) {
        current_iteration = it;
        int restamp = make_blob(run_seed, it, kinds);
        restamped_count += restamp;
        /* its own allocation of exactly its length: a read past the end is reported */
        unsigned char *blob = malloc(mutated_size ? mutated_size : 1);
        memcpy(blob, mutated, mutated_size);
        alarm(ITERATION_SECONDS);
        bnn_status s = try_blob(blob, mutated_size, RUN_FACTOR * original_need);
        alarm(0);
        free(blob);
        if (s == BNN_OK) restamped_accepted += restamp;
        for (int k = 0; k < 2; k++)
            if (kinds[k] >= 0) by_kind[kinds[k]][(int)s > 0 && (int)s < N_CODES ? (int)s : 0]++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    current_iteration = -1;
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);

    printf("fuzz %s: %ld iterations (seed %llu), %ld restamped, %.1f s, %s inner loop, original arena %zu B\n",
           blob_path, iterations, (unsigned long long)run_seed, restamped_count, secs, bnn_build_path(),
           original_need);
    printf("  refused by bnn_arena_size:");
    for (int c = 1; c < N_CODES; c++) printf(" %s %ld", CODE_NAMES[c], refused[0][c]);
    printf("\n  accepted %ld (%ld of them restamped): ran %ld, arena over %dx the original's not run %ld, "
           "arena over 256 MiB %ld\n",
           accepted, restamped_accepted, ran, RUN_FACTOR, not_run, too_large);
    printf("  %-9s %9s", "mutation", "accepted");
    for (int c = 1; c < N_CODES; c++) printf(" %9s", CODE_NAMES[c]);
    printf("\n");
    for (int k = 0; k < N_KINDS; k++) {
        printf("  %-9s %9ld", KIND_NAMES[k], by_kind[k][0]);
        for (int c = 1; c < N_CODES; c++) printf(" %9ld", by_kind[k][c]);
        printf("\n");
    }
    printf("  refusal messages (digits as #):\n");
    for (int k = 0; k < MAX_MESSAGES && messages[k].count; k++)
        printf("    %7ld  %s\n", messages[k].count, messages[k].text);
    if (other_messages) printf("    %7ld  (other messages)\n", other_messages);
    printf("TOTAL iterations=%ld restamped=%ld accepted=%ld ran=%ld", iterations, restamped_count, accepted, ran);
    for (int c = 1; c < N_CODES; c++) printf(" %s=%ld", CODE_NAMES[c], refused[0][c]);
    printf(" failures=%ld\n", failures);
    printf("%s: %ld failures\n", failures ? "FAIL" : "ok", failures);
    free(mutated);
    free(original);
    return failures ? 1 : 0;
}
